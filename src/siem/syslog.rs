//! RFC 5424 syslog messages and their transport framing. No I/O here.
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME gatekeeper PROCID MSGID - MSG
//! ```
//!
//! - Facility: `authpriv` (10). The events are security/authorisation records that name
//!   people's addresses and client IPs; `authpriv` is the facility collectors route to
//!   restricted files, where `mail` would mix them into the MTA's delivery log.
//! - Severity by outcome (`format::syslog_severity`): 6 accepted, 5 deferred, 4 refused,
//!   3 the trail lost events. PRI = facility × 8 + severity.
//! - TIMESTAMP: the event's time, UTC, exactly 6 fractional digits (RFC 5424 §6.2.3 allows
//!   at most 6).
//! - MSGID: the action (`confirmation-rejected`, ...), ≤ 32 printable ASCII characters.
//! - STRUCTURED-DATA: `-`. MSG: the event line (JSON or CEF), UTF-8 without BOM: it is one
//!   line with no control characters by construction of the serialisers.
//!
//! Framing: over TCP and TLS, octet counting (RFC 6587 §3.4.1, RFC 5425 §4.3):
//! `MSG-LEN SP SYSLOG-MSG`, which no byte inside the message can split. Over UDP, one message
//! per datagram (RFC 5426), at most [`UDP_MAX_OCTETS`].

use chrono::{DateTime, Utc};

/// `authpriv` (RFC 5424 §6.2.1, numerical code 10).
pub const FACILITY_AUTHPRIV: u8 = 10;

/// The APP-NAME of every message.
pub const APP_NAME: &str = "gatekeeper";

/// The largest UDP datagram the UDP sink sends. RFC 5426 §3.2: receivers SHOULD accept 2048
/// octets; larger datagrams risk IP fragmentation and silent loss.
pub const UDP_MAX_OCTETS: usize = 2048;

/// The header values that do not change between messages of one daemon.
#[derive(Clone, Debug)]
pub struct Header {
    hostname: String,
    procid: String,
}

impl Header {
    /// `hostname` is reduced to what RFC 5424 allows (1-255 printable US-ASCII); an empty
    /// result becomes the NILVALUE `-`.
    pub fn new(hostname: &str, procid: u32) -> Self {
        let hostname: String = hostname
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect();
        Self {
            hostname: if hostname.is_empty() {
                "-".into()
            } else {
                hostname
            },
            procid: procid.to_string(),
        }
    }

    /// One RFC 5424 message (no framing, no terminator).
    pub fn message(
        &self,
        severity: u8,
        timestamp: DateTime<Utc>,
        msgid: &str,
        msg: &str,
    ) -> String {
        let pri = u16::from(FACILITY_AUTHPRIV) * 8 + u16::from(severity.min(7));
        let msgid: String = msgid
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(32)
            .collect();
        let msgid = if msgid.is_empty() {
            "-".to_owned()
        } else {
            msgid
        };
        format!(
            "<{pri}>1 {} {} {APP_NAME} {} {msgid} - {msg}",
            timestamp.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
            self.hostname,
            self.procid,
        )
    }
}

/// Octet-counting frame (RFC 6587 §3.4.1): the length in octets, a space, the message.
pub fn octet_frame(message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(message.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(message.as_bytes());
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn message_layout() {
        let Some(ts) = Utc.with_ymd_and_hms(2026, 11, 26, 6, 0, 1).single() else {
            panic!("time")
        };
        let h = Header::new("mx 1.example\n", 42);
        let m = h.message(4, ts, "confirmation-rejected", "{}");
        assert_eq!(
            m,
            "<84>1 2026-11-26T06:00:01.000000Z mx1.example gatekeeper 42 confirmation-rejected - {}"
        );
        let nil = Header::new(" ", 1).message(9, ts, "", "x");
        assert!(
            nil.starts_with("<87>1 2026-11-26T06:00:01.000000Z - gatekeeper 1 - - x"),
            "{nil}"
        );
    }

    #[test]
    fn octet_counting_counts_octets_not_chars() {
        let mut out = Vec::new();
        octet_frame("é\n", &mut out);
        assert_eq!(out, "3 é\n".as_bytes());
    }
}
