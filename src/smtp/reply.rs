//! Rendering of SMTP replies (RFC 5321 §4.2, RFC 2034 enhanced status codes). Pure.
//!
//! Every refusal is rendered from [`crate::reason::Reason::reply`]: the reason table is the
//! only place a refusal code is written. This module holds only the fixed positive replies and
//! the two fixed non-refusal replies RFC 5321 names for commands we do not serve (VRFY 252,
//! EXPN 502). Reply texts are fixed strings: no peer byte is ever echoed back.

use crate::reason::{Reason, Reply};

/// `220 <hostname> ESMTP`: the greeting (RFC 5321 §4.2: no enhanced code in the greeting).
pub fn greeting(hostname: &str) -> Vec<u8> {
    format!("220 {hostname} ESMTP gatekeeper\r\n").into_bytes()
}

/// The reply to HELO (RFC 5321 §4.1.1.1).
pub fn helo(hostname: &str) -> Vec<u8> {
    format!("250 {hostname}\r\n").into_bytes()
}

/// The multi-line reply to EHLO: exactly these keywords, in this order (SPEC §5).
pub fn ehlo(hostname: &str, max_message_bytes: usize, starttls: bool) -> Vec<u8> {
    let size = format!("SIZE {max_message_bytes}");
    let mut lines: Vec<&str> = vec![
        hostname,
        "PIPELINING",
        &size,
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
    ];
    if starttls {
        lines.push("STARTTLS");
    }
    let mut out = String::new();
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        let sep = if i == last { ' ' } else { '-' };
        out.push_str(&format!("250{sep}{line}\r\n"));
    }
    out.into_bytes()
}

/// Render a refusal (or any [`Reply`]) as `550 5.7.1 text\r\n`.
pub fn render(reply: Reply) -> Vec<u8> {
    format!("{} {} {}\r\n", reply.code, reply.enhanced, reply.text).into_bytes()
}

/// A refusal after MAIL (SPEC §4 "Explanations"): the short text of the reason table, then
/// the French and the English explanation, then `ref <session id>` so a helpdesk finds the
/// audit event. RFC 5321 §4.2.1 multi-line form; every line carries the enhanced code (RFC
/// 2034 §4). Nothing here comes from the peer: the session id is ours.
pub fn render_explained(reason: Reason, session_id: &str) -> Vec<u8> {
    let reply = reason.reply();
    let e = reason.explanation();
    let (code, enh) = (reply.code, reply.enhanced);
    format!(
        "{code}-{enh} {}\r\n{code}-{enh} FR: {}\r\n{code}-{enh} EN: {}\r\n{code} {enh} ref {session_id}\r\n",
        reply.text, e.fr, e.en
    )
    .into_bytes()
}

/// Fixed positive replies.
pub const OK: &[u8] = b"250 2.0.0 OK\r\n";
pub const SENDER_OK: &[u8] = b"250 2.1.0 sender OK\r\n";
pub const RECIPIENT_OK: &[u8] = b"250 2.1.5 recipient OK\r\n";
pub const START_DATA: &[u8] = b"354 end data with <CR><LF>.<CR><LF>\r\n";
pub const CONFIRMED: &[u8] = b"250 2.0.0 confirmed\r\n";
/// A probe mail was verified and its analysis stored (SPEC §10).
pub const ANALYSED: &[u8] = b"250 2.0.0 analysed\r\n";
pub const BYE: &[u8] = b"221 2.0.0 closing connection\r\n";
pub const START_TLS: &[u8] = b"220 2.0.0 ready to start TLS\r\n";
/// RFC 5321 §3.5.3: 252 when the server will not verify but will accept mail.
pub const VRFY: &[u8] = b"252 2.5.0 cannot verify, send a message\r\n";
/// RFC 5321 §3.5.3 / §7.3: list expansion is not offered.
pub const EXPN: &[u8] = b"502 5.5.1 EXPN not supported\r\n";
/// The SMTP reply code of [`EXPN`], for its audit event.
pub const EXPN_CODE: u16 = 502;
pub const HELP: &[u8] =
    b"214 2.0.0 commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY STARTTLS HELP\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        assert_eq!(
            render(Reason::TlsRequired.reply()),
            b"530 5.7.0 must issue a STARTTLS command first\r\n"
        );
        assert_eq!(
            ehlo("mx.example.fr", 10, true),
            b"250-mx.example.fr\r\n250-PIPELINING\r\n250-SIZE 10\r\n250-8BITMIME\r\n\
              250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n"
        );
        assert!(ehlo("h.fr", 10, false).ends_with(b"250 ENHANCEDSTATUSCODES\r\n"));
    }

    #[test]
    fn explained_refusals() {
        let rows: &[(Reason, &str, &str)] = &[
            (
                Reason::DkimNone,
                "550-5.7.20 no DKIM signature\r\n550-5.7.20 FR: ",
                "550 5.7.20 ref s-1\r\n",
            ),
            (
                Reason::DnsTemperror,
                "451-4.4.3 DNS temporary failure",
                "451 4.4.3 ref s-1\r\n",
            ),
            (
                Reason::EnvelopeSyntax,
                "553-5.1.7 sender address",
                "553 5.1.7 ref s-1\r\n",
            ),
        ];
        for (r, head, tail) in rows {
            let text = String::from_utf8(render_explained(*r, "s-1")).unwrap_or_default();
            assert!(text.starts_with(head), "{text}");
            assert!(text.ends_with(tail), "{text}");
            let lines: Vec<&str> = text.split_terminator("\r\n").collect();
            assert_eq!(lines.len(), 4, "{text}");
            assert!(lines.iter().all(|l| l.len() + 2 <= 512), "{text}");
            assert!(lines.get(1).is_some_and(|l| l.contains(r.explanation().fr)));
            assert!(lines.get(2).is_some_and(|l| l.contains(r.explanation().en)));
        }
    }
}
