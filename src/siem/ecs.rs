//! Elastic Common Schema (ECS 8.x) JSON: one object per line, nested objects the way ECS
//! documents are shaped (`{"event":{"action":...}}`). No I/O here.
//!
//! Injection: every value goes through serde_json, which escapes `"`, `\` and every C0 control
//! character (CR, LF, NUL, ...) inside the string, so no peer byte can end the string, add a
//! key or split the line. Values are cut to the field bound first (`format::truncate`). Fields
//! ECS types as arrays (`email.from.address`, `email.to.address`) are written as one-element
//! arrays; `event.code` is the SMTP reply code as a string (ECS `keyword`).

use std::borrow::Cow;

use serde::Serialize;

use super::format::{FormatOptions, reason_code, truncate};
use crate::audit::{AuditEvent, Check};

/// The ECS version the documents follow (`ecs.version`).
pub const ECS_VERSION: &str = "8.11.0";

/// The event as one JSON line (no terminator).
pub fn to_line(event: &AuditEvent, opts: &FormatOptions) -> String {
    let max = opts.field_max_chars;
    let doc = Document {
        timestamp: event.timestamp.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        ecs: Ecs {
            version: ECS_VERSION,
        },
        event: Event {
            kind: "event",
            category: ["email", "authentication"],
            action: event.action.as_str(),
            outcome: event.outcome.as_str(),
            reason: reason_code(event),
            code: event.reply_code.map(|c| c.to_string()),
        },
        source: (event.source_ip.is_some() || event.source_port.is_some()).then(|| Source {
            ip: event.source_ip.map(|ip| ip.to_string()),
            port: event.source_port,
        }),
        email: email(event, max),
        tls: cut(max, &event.tls_version).map(|version| Tls {
            version,
            version_protocol: "tls",
        }),
        observer: (!opts.hostname.is_empty()).then(|| Observer {
            hostname: truncate(&opts.hostname, max),
            product: "gatekeeper",
        }),
        gatekeeper: Gatekeeper {
            session_id: truncate(&event.session_id, max),
            challenge_id: cut(max, &event.challenge_id),
            helo: cut(max, &event.helo),
            mail_from_tagged: cut(max, &event.mail_from_tagged),
            checks: event.checks.iter().map(|c| CheckOut::new(c, max)).collect(),
            siem: event.lost.map(|l| SiemLoss { dropped: l.count }),
        },
        message: cut(max, &event.message),
    };
    // Serialising plain structs of strings and integers cannot fail; the fallback still keeps
    // the promise of one parseable line rather than panicking.
    serde_json::to_string(&doc).unwrap_or_else(|_| {
        format!(
            r#"{{"event":{{"kind":"event","action":"{}","reason":"siem.serialise_failed"}}}}"#,
            event.action.as_str()
        )
    })
}

fn cut(max: usize, v: &Option<String>) -> Option<Cow<'_, str>> {
    v.as_deref().map(|s| truncate(s, max))
}

fn email(event: &AuditEvent, max: usize) -> Option<Email<'_>> {
    let email = Email {
        from: cut(max, &event.from).map(|a| Addresses { address: [a] }),
        sender: cut(max, &event.mail_from).map(|address| Address { address }),
        to: cut(max, &event.to).map(|a| Addresses { address: [a] }),
        message_id: cut(max, &event.message_id),
    };
    let empty = email.from.is_none()
        && email.sender.is_none()
        && email.to.is_none()
        && email.message_id.is_none();
    (!empty).then_some(email)
}

#[derive(Serialize)]
struct Document<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    ecs: Ecs,
    event: Event,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<Source>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<Email<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<Tls<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    observer: Option<Observer<'a>>,
    gatekeeper: Gatekeeper<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct Ecs {
    version: &'static str,
}

#[derive(Serialize)]
struct Event {
    kind: &'static str,
    category: [&'static str; 2],
    action: &'static str,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
}

#[derive(Serialize)]
struct Source {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

#[derive(Serialize)]
struct Email<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<Addresses<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender: Option<Address<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<Addresses<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct Addresses<'a> {
    address: [Cow<'a, str>; 1],
}

#[derive(Serialize)]
struct Address<'a> {
    address: Cow<'a, str>,
}

#[derive(Serialize)]
struct Tls<'a> {
    version: Cow<'a, str>,
    version_protocol: &'static str,
}

#[derive(Serialize)]
struct Observer<'a> {
    hostname: Cow<'a, str>,
    product: &'static str,
}

#[derive(Serialize)]
struct Gatekeeper<'a> {
    session_id: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    challenge_id: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    helo: Option<Cow<'a, str>>,
    /// MAIL FROM as sent, when an envelope tag was removed (`email.sender.address` is the
    /// untagged address).
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_from_tagged: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checks: Vec<CheckOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    siem: Option<SiemLoss>,
}

#[derive(Serialize)]
struct CheckOut<'a> {
    name: Cow<'a, str>,
    result: Cow<'a, str>,
}

impl<'a> CheckOut<'a> {
    fn new(check: &'a Check, max: usize) -> Self {
        Self {
            name: truncate(check.name, max),
            result: truncate(&check.result, max),
        }
    }
}

#[derive(Serialize)]
struct SiemLoss {
    dropped: u64,
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::audit::Action;
    use crate::config::SiemFormat;
    use crate::reason::Reason;

    #[test]
    fn shape_of_a_rejection() {
        let ts = Utc
            .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
            .single()
            .map(|t| t + chrono::Duration::nanoseconds(123_456_789));
        let Some(ts) = ts else { panic!("valid time") };
        let mut ev = AuditEvent::new(
            ts,
            Action::ConfirmationRejected,
            Some(Reason::SpfFail),
            "s-1",
        );
        ev.source_ip = "192.0.2.7".parse().ok();
        ev.source_port = Some(40000);
        ev.mail_from = Some("alice@example.gouv.fr".into());
        ev.checks.push(Check {
            name: "spf",
            result: "fail".into(),
        });
        let line = to_line(&ev, &FormatOptions::new(SiemFormat::Ecs, "mx1"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(v["@timestamp"], "2026-01-02T03:04:05.123456Z");
        assert_eq!(v["event"]["kind"], "event");
        assert_eq!(
            v["event"]["category"],
            serde_json::json!(["email", "authentication"])
        );
        assert_eq!(v["event"]["action"], "confirmation-rejected");
        assert_eq!(v["event"]["outcome"], "failure");
        assert_eq!(v["event"]["reason"], "spf.fail");
        assert_eq!(v["event"]["code"], "550");
        assert_eq!(v["source"]["ip"], "192.0.2.7");
        assert_eq!(v["source"]["port"], 40000);
        assert_eq!(v["email"]["sender"]["address"], "alice@example.gouv.fr");
        assert_eq!(v["gatekeeper"]["session_id"], "s-1");
        assert_eq!(v["gatekeeper"]["checks"][0]["result"], "fail");
        assert_eq!(v["observer"]["hostname"], "mx1");
        assert!(v.get("tls").is_none());
        assert!(v["gatekeeper"].get("mail_from_tagged").is_none());

        // A tagged envelope sender (SPEC §3): the untagged one is `email.sender`.
        ev.mail_from_tagged = Some("prvs=4068eb2540=alice@example.gouv.fr".into());
        let line = to_line(&ev, &FormatOptions::new(SiemFormat::Ecs, "mx1"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(v["email"]["sender"]["address"], "alice@example.gouv.fr");
        assert_eq!(
            v["gatekeeper"]["mail_from_tagged"],
            "prvs=4068eb2540=alice@example.gouv.fr"
        );
    }
}
