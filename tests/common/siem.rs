//! Shared by the SIEM tests (`tests/siem.rs`, `tests/siem_rsyslog.rs`): event builders, the hostile payload table, the expected value of
//! a field after truncation, and decoders for syslog frames (written from the RFCs, not
//! from the code under test).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use gatekeeper::audit::{Action, AuditEvent, Check};
use gatekeeper::config::{SiemConfig, SiemFormat, SiemSink};
use gatekeeper::reason::Reason;
use gatekeeper::siem::format::{FIELD_BOUNDS, FIELD_MAX_CHARS, TRUNCATION_MARKER};

/// A typical refusal with every field set; `session_id` identifies it at the collector.
pub fn event(session_id: &str) -> AuditEvent {
    let mut ev = AuditEvent::new(
        Utc::now(),
        Action::ConfirmationRejected,
        Some(Reason::DkimFail),
        session_id,
    );
    ev.source_ip = "127.0.0.9".parse().ok();
    ev.source_port = Some(40123);
    ev.helo = Some("mail.example.gouv.fr".into());
    ev.mail_from = Some("alice@example.gouv.fr".into());
    ev.from = Some("alice@example.gouv.fr".into());
    ev.to = Some("confirm+[redacted]@verify.example.gouv.fr".into());
    ev.challenge_id = Some("ch-123".into());
    ev.message_id = Some("<abc@example.gouv.fr>".into());
    ev.tls_version = Some("1.3".into());
    ev.checks = vec![
        Check {
            name: "spf",
            result: "pass".into(),
        },
        Check {
            name: "dkim",
            result: "fail".into(),
        },
    ];
    ev.message = Some("DKIM signature did not verify".into());
    ev
}

/// Every kind of byte an attacker may put in a field.
pub fn hostile_payloads() -> Vec<(&'static str, String)> {
    vec![
        ("crlf + forged CEF", "x\r\nCEF:0|gatekeeper|gatekeeper|1|ok|confirmation-accepted|1|act=confirmation-accepted".into()),
        ("lf + forged JSON", "x\n{\"event\":{\"action\":\"confirmation-accepted\",\"outcome\":\"success\"}}".into()),
        ("lone cr", "a\rb".into()),
        ("nul", "a\0b\0".into()),
        ("json break-out", "\",\"event\":{\"outcome\":\"success\"},\"x\":\"".into()),
        ("quotes and backslashes", "\\\"\\\\\"'\\".into()),
        ("trailing backslash", "end\\".into()),
        ("cef metachars", "a|b|c=d\\e suser=root act=confirmation-accepted".into()),
        ("space before key", " outcome=success".into()),
        ("octet-count forge", "12 <13>1 - - - - - - x".into()),
        ("other controls", "\u{1b}[31mred\u{7}\u{8}\u{b}\u{c}\u{7f}".into()),
        ("unicode separators", "nel\u{85}ls\u{2028}ps\u{2029}end".into()),
        ("replacement char", "bad\u{FFFD}utf8".into()),
        ("100 KB ascii", "A".repeat(100 * 1024)),
        ("100 KB newlines", "\n".repeat(100 * 1024)),
        ("100 KB two-byte chars", "é".repeat(50 * 1024)),
        ("100 KB equals", "=".repeat(100 * 1024)),
        ("100 KB NUL", "\0".repeat(100 * 1024)),
        ("100 KB quotes", "\"".repeat(100 * 1024)),
        ("100 KB four-byte chars", "\u{1F608}".repeat(25 * 1024)),
        ("empty", String::new()),
    ]
}

/// `event(..)` with `payload` in every attacker-controlled field.
pub fn hostile_event(session_id: &str, payload: &str) -> AuditEvent {
    let mut ev = event(session_id);
    ev.helo = Some(payload.into());
    ev.mail_from = Some(payload.into());
    ev.from = Some(payload.into());
    ev.to = Some(payload.into());
    ev.message_id = Some(payload.into());
    ev.challenge_id = Some(payload.into());
    ev.tls_version = Some(payload.into());
    ev.checks = vec![Check {
        name: "spf",
        result: payload.into(),
    }];
    ev
}

/// What a field must read after the serialiser bounded it to `max` characters.
pub fn bounded_at(value: &str, max: usize) -> String {
    if value.chars().count() > max {
        let mut s: String = value.chars().take(max).collect();
        s.push_str(TRUNCATION_MARKER);
        s
    } else {
        value.to_owned()
    }
}

/// The field at the normal bound.
pub fn bounded(value: &str) -> String {
    bounded_at(value, FIELD_MAX_CHARS)
}

/// What a CEF extension value must read after unescaping: bounded, and the characters CEF
/// cannot escape (controls other than CR/LF, U+2028, U+2029) replaced by U+FFFD.
pub fn cef_value_at(value: &str, max: usize) -> String {
    bounded_at(value, max)
        .chars()
        .map(|c| {
            if (c.is_control() && c != '\r' && c != '\n') || c == '\u{2028}' || c == '\u{2029}' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

pub fn cef_value(value: &str) -> String {
    cef_value_at(value, FIELD_MAX_CHARS)
}

/// Which of the documented per-field bounds `got` is `value` cut to (`expect` maps value and
/// bound to the expected reading), if any.
pub fn bound_used(got: &str, value: &str, expect: fn(&str, usize) -> String) -> Option<usize> {
    FIELD_BOUNDS.into_iter().find(|n| got == expect(value, *n))
}

/// One RFC 5424 message split into its header fields and MSG.
#[derive(Debug)]
pub struct SyslogMsg {
    pub pri: u16,
    pub timestamp: String,
    pub hostname: String,
    pub app: String,
    pub procid: String,
    pub msgid: String,
    pub sd: String,
    pub msg: String,
}

pub fn parse_5424(m: &str) -> Result<SyslogMsg, String> {
    let rest = m.strip_prefix('<').ok_or("no <")?;
    let (pri, rest) = rest.split_once(">1 ").ok_or("no >1")?;
    let mut parts = rest.splitn(7, ' ');
    let mut next = || parts.next().map(str::to_owned).ok_or("short header");
    Ok(SyslogMsg {
        pri: pri.parse().map_err(|_| "bad pri")?,
        timestamp: next()?,
        hostname: next()?,
        app: next()?,
        procid: next()?,
        msgid: next()?,
        sd: next()?,
        msg: next()?,
    })
}

/// Splits an octet-counted stream (RFC 6587 §3.4.1) into messages; errors on any byte that
/// does not fit the framing.
pub fn split_octet_counted(mut stream: &[u8]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    while !stream.is_empty() {
        let sp = stream
            .iter()
            .position(|b| *b == b' ')
            .ok_or("no space after length")?;
        let len: usize = std::str::from_utf8(&stream[..sp])
            .map_err(|_| "length not ascii")?
            .parse()
            .map_err(|_| "length not a number")?;
        let body = stream
            .get(sp + 1..sp + 1 + len)
            .ok_or("frame shorter than its length")?;
        out.push(String::from_utf8(body.to_vec()).map_err(|_| "frame not UTF-8")?);
        stream = &stream[sp + 1 + len..];
    }
    Ok(out)
}

pub fn config(format: SiemFormat, sinks: Vec<SiemSink>, spool: &Path, max: usize) -> SiemConfig {
    SiemConfig {
        format,
        sinks,
        spool_max_events: max,
        spool_path: spool.to_owned(),
    }
}

/// The complete lines of a file another process is appending to: a last line without its
/// newline is still being written (a read can land between two `write`s) and is left for the
/// next poll. A line split or forged by the writer still shows as complete lines that fail to
/// parse.
pub fn read_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete.lines().map(str::to_owned).collect()
}

/// Polls `f` until it returns true or `timeout` passes; returns its last answer.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn tmp_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}
