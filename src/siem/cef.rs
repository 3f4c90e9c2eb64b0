//! ArcSight Common Event Format (CEF:0), one event per line. No I/O here.
//!
//! ```text
//! CEF:0|gatekeeper|gatekeeper|<version>|<reason code>|<action>|<severity>|<extension>
//! ```
//!
//! Signature ID is the reason code (the action for an accepted confirmation, which has none),
//! Name is the action, severity follows `format::cef_severity` (2 accepted, 4 deferred,
//! 6 refused, 8 the trail lost events).
//!
//! Escaping (CEF implementation standard): in header fields `\` → `\\` and `|` → `\|`; in
//! extension values `\` → `\\`, `=` → `\=`, CR → `\r`, LF → `\n`. CEF has no escape for
//! other control characters, so NUL, the rest of C0, DEL, C1 and U+2028/U+2029 are replaced
//! by U+FFFD: a raw NUL or line separator would cut the line in some collector's parser. With
//! `=` always escaped, a value can never open a new `key=`, and with CR/LF escaped it can never
//! open a new line.
//!
//! Extension keys (standard CEF dictionary; custom strings carry their label):
//!
//! | ECS field | CEF key |
//! |---|---|
//! | `@timestamp` | `rt` (milliseconds since the epoch) |
//! | `event.action` / `event.outcome` / `event.reason` | `act` / `outcome` / `reason` |
//! | `event.code` (SMTP reply) | `cn1`, `cn1Label=smtpReplyCode` |
//! | `source.ip` / `source.port` | `src` (IPv4) or `c6a2` (IPv6) / `spt` |
//! | `email.from.address` (header From) | `suser` |
//! | `email.to.address` (redacted) | `duser` |
//! | `email.sender.address` (MAIL FROM) | `cs1`, `cs1Label=envelopeSender` |
//! | `gatekeeper.helo` | `cs2`, `cs2Label=helo` |
//! | `email.message_id` | `cs3`, `cs3Label=messageId` |
//! | `gatekeeper.session_id` | `cs4`, `cs4Label=sessionId` |
//! | `gatekeeper.challenge_id` | `cs5`, `cs5Label=challengeId` |
//! | `gatekeeper.checks` | `cs6`, `cs6Label=checks`, as `name:result,name:result` |
//! | `tls.version` | `flexString1`, `flexString1Label=tlsVersion` |
//! | `gatekeeper.mail_from_tagged` | `flexString2`, `flexString2Label=envelopeSenderTagged` |
//! | `gatekeeper.siem.dropped` | `cnt` |
//! | `observer.hostname` | `dvchost` |
//! | `message` | `msg` |

use std::borrow::Cow;
use std::net::IpAddr;

use super::format::{FormatOptions, cef_severity, reason_code, truncate};
use crate::audit::AuditEvent;

/// Device vendor and product in the header.
pub const VENDOR: &str = "gatekeeper";
pub const PRODUCT: &str = "gatekeeper";

/// The event as one CEF line (no terminator).
pub fn to_line(event: &AuditEvent, opts: &FormatOptions) -> String {
    let max = opts.field_max_chars;
    let signature = reason_code(event).unwrap_or(event.action.as_str());
    let mut line = String::with_capacity(512);
    line.push_str("CEF:0|");
    for field in [
        VENDOR,
        PRODUCT,
        env!("CARGO_PKG_VERSION"),
        signature,
        event.action.as_str(),
        &cef_severity(event).to_string(),
    ] {
        push_header(&mut line, field);
        line.push('|');
    }
    let mut first = true;
    for (key, value) in extension(event, opts) {
        if value.is_empty() {
            continue;
        }
        if !first {
            line.push(' ');
        }
        first = false;
        line.push_str(key);
        line.push('=');
        push_value(&mut line, &truncate(&value, max));
    }
    line
}

/// The extension's key/value pairs, raw (escaped by the caller).
fn extension<'a>(
    event: &'a AuditEvent,
    opts: &'a FormatOptions,
) -> Vec<(&'static str, Cow<'a, str>)> {
    let mut ext: Vec<(&'static str, Cow<'a, str>)> = Vec::with_capacity(24);
    let mut put = |key: &'static str, value: Option<Cow<'a, str>>| {
        if let Some(v) = value {
            ext.push((key, v));
        }
    };
    // An empty value is omitted, and so is its label.
    let borrowed =
        |v: &'a Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(Cow::Borrowed);
    let label = |v: &'a Option<String>, l: &'static str| borrowed(v).map(|_| Cow::Borrowed(l));
    put(
        "rt",
        Some(Cow::Owned(event.timestamp.timestamp_millis().to_string())),
    );
    put("act", Some(Cow::Borrowed(event.action.as_str())));
    put("outcome", Some(Cow::Borrowed(event.outcome.as_str())));
    put("reason", reason_code(event).map(Cow::Borrowed));
    put("cn1", event.reply_code.map(|c| Cow::Owned(c.to_string())));
    put(
        "cn1Label",
        event.reply_code.map(|_| Cow::Borrowed("smtpReplyCode")),
    );
    match event.source_ip {
        Some(ip @ IpAddr::V4(_)) => put("src", Some(Cow::Owned(ip.to_string()))),
        Some(ip @ IpAddr::V6(_)) => {
            put("c6a2", Some(Cow::Owned(ip.to_string())));
            put("c6a2Label", Some(Cow::Borrowed("sourceIPv6Address")));
        }
        None => {}
    }
    put("spt", event.source_port.map(|p| Cow::Owned(p.to_string())));
    put("suser", borrowed(&event.from));
    put("duser", borrowed(&event.to));
    put("cs1", borrowed(&event.mail_from));
    put("cs1Label", label(&event.mail_from, "envelopeSender"));
    put("cs2", borrowed(&event.helo));
    put("cs2Label", label(&event.helo, "helo"));
    put("cs3", borrowed(&event.message_id));
    put("cs3Label", label(&event.message_id, "messageId"));
    let session = Some(event.session_id.as_str()).filter(|s| !s.is_empty());
    put("cs4", session.map(Cow::Borrowed));
    put("cs4Label", session.map(|_| Cow::Borrowed("sessionId")));
    put("cs5", borrowed(&event.challenge_id));
    put("cs5Label", label(&event.challenge_id, "challengeId"));
    if !event.checks.is_empty() {
        let joined = event
            .checks
            .iter()
            .map(|c| format!("{}:{}", c.name, truncate(&c.result, opts.field_max_chars)))
            .collect::<Vec<_>>()
            .join(",");
        put("cs6", Some(Cow::Owned(joined)));
        put("cs6Label", Some(Cow::Borrowed("checks")));
    }
    put("flexString1", borrowed(&event.tls_version));
    put("flexString1Label", label(&event.tls_version, "tlsVersion"));
    put("flexString2", borrowed(&event.mail_from_tagged));
    put(
        "flexString2Label",
        label(&event.mail_from_tagged, "envelopeSenderTagged"),
    );
    put("cnt", event.lost.map(|l| Cow::Owned(l.count.to_string())));
    put(
        "dvchost",
        (!opts.hostname.is_empty()).then_some(Cow::Borrowed(opts.hostname.as_str())),
    );
    put("msg", borrowed(&event.message));
    ext
}

/// Characters CEF cannot escape and some parser would treat as a break: replaced by U+FFFD.
fn unescapable(c: char) -> bool {
    (c.is_control() && c != '\r' && c != '\n') || c == '\u{2028}' || c == '\u{2029}'
}

/// A header field: `\` and `|` escaped; CR, LF and other controls replaced (a header field is
/// one of our fixed strings, but the rule must hold for any input).
fn push_header(out: &mut String, field: &str) {
    for c in field.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c if unescapable(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// An extension value: `\`, `=`, CR and LF escaped; other controls replaced.
fn push_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if unescapable(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tagged envelope sender is `flexString2`, its `=` escaped like any value's.
    #[test]
    fn tagged_sender() {
        use crate::audit::Action;
        use crate::config::SiemFormat;
        let mut ev = AuditEvent::new(
            chrono::Utc::now(),
            Action::ConfirmationAccepted,
            None,
            "s-1",
        );
        ev.mail_from = Some("alice@example.gouv.fr".into());
        let opts = FormatOptions::new(SiemFormat::Cef, "mx1");
        assert!(!to_line(&ev, &opts).contains("flexString2"));
        ev.mail_from_tagged = Some("btv1==1086afe1179==alice@example.gouv.fr".into());
        let line = to_line(&ev, &opts);
        assert!(line.contains("cs1=alice@example.gouv.fr"), "{line}");
        assert!(
            line.contains("flexString2=btv1\\=\\=1086afe1179\\=\\=alice@example.gouv.fr"),
            "{line}"
        );
        assert!(
            line.contains("flexString2Label=envelopeSenderTagged"),
            "{line}"
        );
    }

    #[test]
    fn value_escape_table() {
        let rows: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("a=b", "a\\=b"),
            ("back\\slash", "back\\\\slash"),
            ("cr\rlf\n", "cr\\rlf\\n"),
            ("pipe|ok", "pipe|ok"),
            ("nul\0", "nul\u{FFFD}"),
            ("ls\u{2028}", "ls\u{FFFD}"),
        ];
        for (raw, want) in rows {
            let mut out = String::new();
            push_value(&mut out, raw);
            assert_eq!(out, *want, "{raw:?}");
        }
    }

    #[test]
    fn header_escape_table() {
        let rows: &[(&str, &str)] = &[
            ("a|b", "a\\|b"),
            ("a\\b", "a\\\\b"),
            ("a\nb", "a b"),
            ("a=b", "a=b"),
        ];
        for (raw, want) in rows {
            let mut out = String::new();
            push_header(&mut out, raw);
            assert_eq!(out, *want, "{raw:?}");
        }
    }
}
