//! What both serialisers share: the truncation bound for attacker-controlled values, the
//! severity scale and the options a rendering applies. No I/O here, and no serialiser:
//! choosing ECS or CEF is [`super::encode`]'s job (the serialisers import this module, so
//! this module must not import them).
//!
//! Every string of an [`AuditEvent`] may carry peer bytes (HELO, MAIL FROM, From, Message-ID,
//! ...). They arrive here as valid UTF-8 (invalid bytes were turned into U+FFFD upstream) of
//! any length. Each is cut to [`FIELD_MAX_CHARS`] characters (Unicode scalar values) and marked
//! with [`TRUNCATION_MARKER`], so one hostile session cannot inflate the trail or push a syslog
//! frame past what collectors accept. Escaping is the format's job (`ecs`, `cef`).

use std::borrow::Cow;

use crate::audit::{Action, AuditEvent, LossStage, Outcome};
use crate::config::SiemFormat;

/// The longest value (in characters) any single field keeps. 512 keeps a whole legitimate
/// Message-ID, address or HELO name (RFC 5321 caps a path at 256 octets, a domain at 255) and
/// keeps an event with every field at the bound under 8 KiB, rsyslog's default maximum.
pub const FIELD_MAX_CHARS: usize = 512;

/// The per-field bounds tried in turn until a rendered event fits its size limit: an event
/// with many long, escape-heavy values (100 KB of NUL bytes becomes `\u0000` × 512 per field
/// in JSON) is rendered again with tighter bounds rather than cut mid-line.
pub const FIELD_BOUNDS: [usize; 4] = [FIELD_MAX_CHARS, 128, 32, 8];

/// The largest rendered event line in octets. Leaves room for the longest RFC 5424 header
/// (about 350 octets with a 255-octet hostname) within 8192 octets, the size RFC 5425 §4.3.1
/// says receivers should accept and rsyslog's default `maxMessageSize`.
pub const LINE_MAX_OCTETS: usize = 7680;

/// Appended to a value that was cut, so an analyst sees that the attacker sent more.
pub const TRUNCATION_MARKER: &str = "…[truncated]";

/// The reason code of the events the trail emits about itself (spool or queue full).
pub const REASON_SPOOL_OVERFLOW: &str = "siem.spool_overflow";
/// An event was dropped because the in-memory queue in front of the writer was full.
pub const REASON_QUEUE_OVERFLOW: &str = "siem.queue_overflow";

/// How an event is rendered: the format and the bounds it applies (`render` and
/// `render_within` are in [`super::encode`]).
#[derive(Clone, Debug)]
pub struct FormatOptions {
    pub format: SiemFormat,
    /// `observer.hostname` / `dvchost`: which gatekeeper saw the event (empty: omitted).
    pub hostname: String,
    /// Per-field bound, normally [`FIELD_MAX_CHARS`]; the UDP sink lowers it to fit a datagram.
    pub field_max_chars: usize,
}

impl FormatOptions {
    pub fn new(format: SiemFormat, hostname: impl Into<String>) -> Self {
        Self {
            format,
            hostname: hostname.into(),
            field_max_chars: FIELD_MAX_CHARS,
        }
    }
}

/// `value` cut to `max` characters, with [`TRUNCATION_MARKER`] appended when anything was cut.
pub fn truncate(value: &str, max: usize) -> Cow<'_, str> {
    match value.char_indices().nth(max) {
        None => Cow::Borrowed(value),
        Some((byte, _)) => {
            let kept = value.get(..byte).unwrap_or_default();
            let mut out = String::with_capacity(byte + TRUNCATION_MARKER.len());
            out.push_str(kept);
            out.push_str(TRUNCATION_MARKER);
            Cow::Owned(out)
        }
    }
}

/// The reason code as written in `event.reason` / the CEF signature: the event's [`Reason`]
/// or, for the trail's own overflow events (which have no SMTP reply, hence no `Reason`),
/// [`REASON_SPOOL_OVERFLOW`] / [`REASON_QUEUE_OVERFLOW`] by [`LossStage`].
///
/// [`Reason`]: crate::reason::Reason
pub fn reason_code(event: &AuditEvent) -> Option<&'static str> {
    match (event.reason, event.lost) {
        (Some(r), _) => Some(r.as_str()),
        (None, Some(loss)) => Some(match loss.stage {
            LossStage::Queue => REASON_QUEUE_OVERFLOW,
            LossStage::Spool => REASON_SPOOL_OVERFLOW,
        }),
        (None, None) => None,
    }
}

/// Syslog severity (RFC 5424 §6.2.1) by outcome: an accepted confirmation is informational,
/// a deferral a notice, a refusal a warning (a refusal is routine under attack; alerting is
/// the SIEM's decision), and the trail losing events an error.
pub fn syslog_severity(event: &AuditEvent) -> u8 {
    match (event.action, event.outcome) {
        (Action::SiemOverflow | Action::WebhookGivenUp, _) => 3,
        (_, Outcome::Success) => 6,
        (_, Outcome::Unknown) => 5,
        (_, Outcome::Failure) => 4,
    }
}

/// CEF severity (0-10) on the same scale as [`syslog_severity`].
pub fn cef_severity(event: &AuditEvent) -> u8 {
    match (event.action, event.outcome) {
        (Action::SiemOverflow | Action::WebhookGivenUp, _) => 8,
        (_, Outcome::Success) => 2,
        (_, Outcome::Unknown) => 4,
        (_, Outcome::Failure) => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_table() {
        let long = "é".repeat(600);
        let rows: &[(&str, usize, &str)] = &[
            ("", 3, ""),
            ("abc", 3, "abc"),
            ("abcd", 3, "abc…[truncated]"),
            ("ééé", 2, "éé…[truncated]"),
        ];
        for (input, max, want) in rows {
            assert_eq!(truncate(input, *max), *want, "{input:?}");
        }
        let cut = truncate(&long, FIELD_MAX_CHARS);
        assert_eq!(
            cut.chars().count(),
            FIELD_MAX_CHARS + TRUNCATION_MARKER.chars().count()
        );
        assert!(cut.ends_with(TRUNCATION_MARKER));
    }
}
