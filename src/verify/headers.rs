//! Structural checks on the raw top-level header block (SPEC §4 `header.*`, `message.*`).
//!
//! The block is split here, on the raw bytes, by rules stricter than any mail parser: a
//! lenient parser that reads a malformed block one way while the DKIM verifier or a mail
//! client reads it another is exactly the ambiguity an attacker needs. Anything that is not
//! plain RFC 5322 structure is `header.malformed`.
//!
//! Pure: bytes in, results out.

use mail_parser::{Message, MimeHeaders};

use crate::address::{Mailbox, ParseOptions};
use crate::policy::{HeaderChecks, Outcome};

/// RFC 5322 §2.1.1: a line is at most 998 octets without its CRLF.
pub const MAX_LINE: usize = 998;

/// One header field as it appears in the block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name as written (no surrounding whitespace: that is malformed).
    pub name: &'a [u8],
    /// Everything after the colon up to (not including) the final CRLF; folds kept.
    pub value: &'a [u8],
}

impl Field<'_> {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value unfolded (CRLF removed), lossy UTF-8, trimmed. Only for searching.
    pub fn unfolded(&self) -> String {
        let bytes: Vec<u8> = self
            .value
            .iter()
            .copied()
            .filter(|b| *b != b'\r' && *b != b'\n')
            .collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

/// The header block split into fields, the body, and the first structural fault found.
#[derive(Clone, Debug)]
pub struct HeaderBlock<'a> {
    /// Fields top to bottom, in wire order.
    pub fields: Vec<Field<'a>>,
    /// The raw header block: every field with its CRLF, without the empty separator line.
    pub raw: &'a [u8],
    /// Everything after the empty line (empty when there is none).
    pub body: &'a [u8],
    /// Why the block is malformed (a fixed detail string), if it is.
    pub malformed: Option<&'static str>,
}

impl<'a> HeaderBlock<'a> {
    /// Split `message` (CRLF line endings, dot-unstuffed) at the first empty line.
    pub fn parse(message: &'a [u8]) -> Self {
        let mut fields: Vec<Field<'a>> = Vec::new();
        let mut malformed: Option<&'static str> = None;
        let flag = |m: &mut Option<&'static str>, why: &'static str| {
            if m.is_none() {
                *m = Some(why);
            }
        };
        // Current field: start offset of the name line, offset of the colon.
        let mut current: Option<(usize, usize)> = None;
        let mut pos = 0usize;
        let mut header_end = message.len();
        let mut body_start = message.len();
        let mut field_end = 0usize;
        while pos < message.len() {
            let rest = message.get(pos..).unwrap_or_default();
            let (line, next, terminated) = match find_crlf(rest) {
                Some(i) => (rest.get(..i).unwrap_or_default(), pos + i + 2, true),
                None => (rest, message.len(), false),
            };
            if line.is_empty() && terminated {
                header_end = pos;
                body_start = next;
                break;
            }
            if line.len() > MAX_LINE {
                flag(&mut malformed, "line_too_long");
            }
            if line.contains(&0) {
                flag(&mut malformed, "nul");
            }
            if line.iter().any(|b| *b >= 0x80) {
                flag(&mut malformed, "8bit");
            }
            if line.iter().any(|b| *b == b'\r' || *b == b'\n') {
                flag(&mut malformed, "bare_cr_lf");
            }
            let first = line.first().copied();
            if matches!(first, Some(b' ') | Some(b'\t')) {
                // Continuation line.
                if line.iter().all(|b| *b == b' ' || *b == b'\t') {
                    flag(&mut malformed, "whitespace_line");
                }
                if current.is_none() {
                    flag(&mut malformed, "leading_continuation");
                }
                field_end = pos + line.len();
            } else {
                if let Some((start, colon)) = current.take() {
                    push_field(&mut fields, message, start, colon, field_end);
                }
                match line.iter().position(|b| *b == b':') {
                    None => flag(&mut malformed, "no_colon"),
                    Some(0) => flag(&mut malformed, "empty_name"),
                    Some(c) => {
                        let name = line.get(..c).unwrap_or_default();
                        if name.iter().any(|b| *b == b' ' || *b == b'\t') {
                            flag(&mut malformed, "space_before_colon");
                        } else if !name.iter().all(|b| (33..=126).contains(b)) {
                            flag(&mut malformed, "bad_name");
                        } else {
                            current = Some((pos, pos + c));
                        }
                    }
                }
                field_end = pos + line.len();
            }
            pos = next;
        }
        if let Some((start, colon)) = current.take() {
            push_field(&mut fields, message, start, colon, field_end);
        }
        if fields.is_empty() {
            flag(&mut malformed, "empty");
        }
        HeaderBlock {
            fields,
            raw: message.get(..header_end).unwrap_or_default(),
            body: message.get(body_start..).unwrap_or_default(),
            malformed,
        }
    }

    /// Fields with this name (case-insensitive), top to bottom, with their indices.
    pub fn named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = (usize, &'s Field<'a>)> + 's {
        self.fields
            .iter()
            .enumerate()
            .filter(move |(_, f)| f.is(name))
    }

    pub fn count(&self, name: &str) -> usize {
        self.named(name).count()
    }
}

fn push_field<'a>(
    fields: &mut Vec<Field<'a>>,
    message: &'a [u8],
    start: usize,
    colon: usize,
    end: usize,
) {
    fields.push(Field {
        name: message.get(start..colon).unwrap_or_default(),
        value: message.get(colon + 1..end).unwrap_or_default(),
    });
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

/// Fields of which a message may carry at most one (SPEC §4 `header.duplicate`).
pub const SINGLE: &[&str] = &[
    "date",
    "subject",
    "message-id",
    "to",
    "cc",
    "sender",
    "reply-to",
    "in-reply-to",
    "references",
];

/// The results of the header checks, and the From address when it parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderResults {
    /// The outcomes, as [`CheckResults`](crate::policy::CheckResults) embeds them.
    pub checks: HeaderChecks,
    /// The one From address, canonical, when there is exactly one and it parsed.
    pub from: Option<Mailbox>,
    /// The raw From value (lossy) for the audit event when it did not parse.
    pub from_raw: Option<String>,
}

/// Run every header check. `parsed` is mail-parser's reading of the same bytes, used only
/// for MIME structure (`message.report`); it is `None` when mail-parser gave up.
pub fn check(
    block: &HeaderBlock<'_>,
    parsed: Option<&Message<'_>>,
    opts: &ParseOptions,
) -> HeaderResults {
    let malformed = Outcome::from_ok(block.malformed.is_none());

    let froms: Vec<&Field<'_>> = block.named("from").map(|(_, f)| f).collect();
    let from_count = Outcome::from_ok(froms.len() == 1);
    let (from_syntax, from, from_raw) = match froms.as_slice() {
        [one] => match Mailbox::parse_header(one.value, opts) {
            Ok(m) => (Outcome::Ok, Some(m), None),
            Err(_) => (Outcome::Fail, None, Some(one.unfolded())),
        },
        _ => (Outcome::Skipped, None, froms.first().map(|f| f.unfolded())),
    };

    let duplicate = Outcome::from_ok(SINGLE.iter().all(|name| block.count(name) <= 1));

    let senders: Vec<&Field<'_>> = block.named("sender").map(|(_, f)| f).collect();
    let sender_mismatch = match (senders.as_slice(), &from) {
        ([], _) => Outcome::Ok,
        ([one], Some(from)) => match Mailbox::parse_header(one.value, opts) {
            Ok(s) if &s == from => Outcome::Ok,
            _ => Outcome::Fail,
        },
        // Several Sender fields can never all equal From; a Sender without a From to compare
        // with cannot be proved equal.
        ([_, _, ..], _) => Outcome::Fail,
        ([_], None) => Outcome::Skipped,
    };

    let resent = Outcome::from_ok(
        !block
            .fields
            .iter()
            .any(|f| starts_with_ci(f.name, b"resent-")),
    );

    let auto_submitted = Outcome::from_ok(!is_automatic(block));
    let report = Outcome::from_ok(!is_report(parsed) && !top_level_report(block));

    HeaderResults {
        checks: HeaderChecks {
            malformed,
            from_count,
            from_syntax,
            duplicate,
            sender_mismatch,
            resent,
            auto_submitted,
            report,
        },
        from,
        from_raw,
    }
}

fn starts_with_ci(name: &[u8], prefix: &[u8]) -> bool {
    name.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// RFC 3834 `Auto-Submitted` other than `no`, and the legacy markers of auto-responders.
fn is_automatic(block: &HeaderBlock<'_>) -> bool {
    block.fields.iter().any(|f| {
        if f.is("auto-submitted") {
            let v = f.unfolded().to_ascii_lowercase();
            let keyword = v.split([';', '(']).next().unwrap_or("").trim().to_string();
            keyword != "no"
        } else if f.is("precedence") {
            let v = f.unfolded().to_ascii_lowercase();
            let keyword = v.split([';', '(']).next().unwrap_or("").trim().to_string();
            matches!(keyword.as_str(), "auto_reply" | "bulk" | "junk" | "list")
        } else {
            f.is("x-autoreply") || f.is("x-autorespond") || f.is("x-auto-response-suppress")
        }
    })
}

/// The top-level Content-Type read on the raw field, so a report is recognised even when
/// mail-parser gives up on the MIME structure.
fn top_level_report(block: &HeaderBlock<'_>) -> bool {
    block.named("content-type").any(|(_, f)| {
        let v = f.unfolded().to_ascii_lowercase();
        let mime = v
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .replace([' ', '\t'], "");
        mime == "multipart/report"
    })
}

/// Content types of machine-made reports (SPEC §4 `message.report`): DSN (RFC 3464, RFC 6533)
/// and MDN (RFC 8098, RFC 6533), their container, and calendar replies.
const REPORT_TYPES: &[(&str, &str)] = &[
    ("multipart", "report"),
    ("message", "disposition-notification"),
    ("message", "global-disposition-notification"),
    ("message", "delivery-status"),
    ("message", "global-delivery-status"),
];

/// A report part anywhere in this message's own MIME tree (not inside an encapsulated
/// `message/rfc822`, which is a person forwarding a mail): `multipart/report` and the report
/// bodies above, and `text/calendar; method=REPLY`. A report nested in a `multipart/mixed`
/// is no more a person's reply than one at the top level.
fn is_report(parsed: Option<&Message<'_>>) -> bool {
    let Some(msg) = parsed else {
        return false;
    };
    msg.parts.iter().any(|part| {
        let Some(ct) = part.content_type() else {
            return false;
        };
        let ctype = ct.ctype().trim();
        let sub = ct.subtype().unwrap_or("").trim();
        REPORT_TYPES
            .iter()
            .any(|(t, s)| ctype.eq_ignore_ascii_case(t) && sub.eq_ignore_ascii_case(s))
            || (ctype.eq_ignore_ascii_case("text")
                && sub.eq_ignore_ascii_case("calendar")
                && ct
                    .attribute("method")
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("reply")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(text: &str) -> HeaderBlock<'_> {
        HeaderBlock::parse(text.as_bytes())
    }

    #[test]
    fn splits_fields_and_body() {
        let b = block("From: a@b.fr\r\nSubject: x\r\n y\r\n\r\nbody\r\n");
        assert_eq!(b.malformed, None);
        assert_eq!(b.fields.len(), 2);
        assert_eq!(b.fields[1].name, b"Subject");
        assert_eq!(b.fields[1].value, b" x\r\n y");
        assert_eq!(b.body, b"body\r\n");
        assert_eq!(b.raw, b"From: a@b.fr\r\nSubject: x\r\n y\r\n");
    }

    #[test]
    fn malformed_table() {
        let long = format!("Subject: {}\r\n\r\n", "a".repeat(990));
        let rows: &[(&str, Option<&str>)] = &[
            ("From: a\r\n\r\n", None),
            ("From : a\r\n\r\n", Some("space_before_colon")),
            ("From\t: a\r\n\r\n", Some("space_before_colon")),
            ("From\r\n : a\r\n\r\n", Some("no_colon")),
            ("From: a\r\n \r\nTo: b\r\n\r\n", Some("whitespace_line")),
            ("From: a\r\n\t\t\r\n\r\n", Some("whitespace_line")),
            (" From: a\r\n\r\n", Some("leading_continuation")),
            ("From: a\0b\r\n\r\n", Some("nul")),
            ("From: \u{e9}\r\n\r\n", Some("8bit")),
            ("From: a\nTo: b\r\n\r\n", Some("bare_cr_lf")),
            ("From: a\rTo: b\r\n\r\n", Some("bare_cr_lf")),
            ("NoColonHere\r\n\r\n", Some("no_colon")),
            (": value\r\n\r\n", Some("empty_name")),
            ("\r\nbody", Some("empty")),
            (long.as_str(), Some("line_too_long")),
        ];
        for (text, want) in rows {
            assert_eq!(block(text).malformed, *want, "{text:?}");
        }
        // 998 octets exactly is allowed.
        let ok = format!("Subject: {}\r\n\r\n", "a".repeat(998 - 9));
        assert_eq!(block(&ok).malformed, None);
    }

    #[test]
    fn body_nul_is_not_a_header_fault() {
        assert_eq!(block("From: a\r\n\r\n\0\u{e9}").malformed, None);
    }

    fn results(text: &str) -> HeaderChecks {
        let b = HeaderBlock::parse(text.as_bytes());
        let parsed = mail_parser::MessageParser::default().parse(text.as_bytes());
        check(&b, parsed.as_ref(), &ParseOptions::default()).checks
    }

    #[test]
    fn automatic_markers() {
        let rows: &[(&str, Outcome)] = &[
            ("Auto-Submitted: no\r\n", Outcome::Ok),
            ("Auto-Submitted: No (manual)\r\n", Outcome::Ok),
            ("Auto-Submitted: auto-replied\r\n", Outcome::Fail),
            ("auto-submitted: auto-generated\r\n", Outcome::Fail),
            ("X-Autoreply: yes\r\n", Outcome::Fail),
            ("X-Autorespond: x\r\n", Outcome::Fail),
            ("X-Auto-Response-Suppress: All\r\n", Outcome::Fail),
            ("Precedence: bulk\r\n", Outcome::Fail),
            ("Precedence: junk\r\n", Outcome::Fail),
            ("Precedence: list\r\n", Outcome::Fail),
            ("Precedence: auto_reply\r\n", Outcome::Fail),
            ("Precedence: first-class\r\n", Outcome::Ok),
        ];
        for (h, want) in rows {
            let r = results(&format!("From: a@b.fr\r\n{h}\r\nx\r\n"));
            assert_eq!(r.auto_submitted, *want, "{h}");
        }
    }

    #[test]
    fn report_markers() {
        let rep = "From: a@b.fr\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n";
        assert_eq!(results(rep).report, Outcome::Fail);
        let mdn = "From: a@b.fr\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b\r\nContent-Type: message/disposition-notification\r\n\r\nReporting-UA: x\r\n--b--\r\n";
        assert_eq!(results(mdn).report, Outcome::Fail);
        let cal =
            "From: a@b.fr\r\nContent-Type: text/calendar; method=REPLY\r\n\r\nBEGIN:VCALENDAR\r\n";
        assert_eq!(results(cal).report, Outcome::Fail);
        let req = "From: a@b.fr\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\n";
        assert_eq!(results(req).report, Outcome::Ok);
        assert_eq!(results("From: a@b.fr\r\n\r\nx").report, Outcome::Ok);
        // Recognised on the raw field whatever the MIME parser makes of the body.
        let b = HeaderBlock::parse(b"From: a@b.fr\r\nContent-Type: Multipart/Report ; x=y\r\n\r\n");
        let r = check(&b, None, &ParseOptions::default());
        assert_eq!(r.checks.report, Outcome::Fail);
    }

    #[test]
    fn duplicates_and_resent() {
        for name in SINGLE {
            let r = results(&format!(
                "From: a@b.fr\r\n{name}: 1\r\n{}: 2\r\n\r\n",
                name.to_ascii_uppercase()
            ));
            assert_eq!(r.duplicate, Outcome::Fail, "{name}");
        }
        assert_eq!(
            results("From: a@b.fr\r\nReceived: a\r\nReceived: b\r\n\r\n").duplicate,
            Outcome::Ok
        );
        assert_eq!(
            results("From: a@b.fr\r\nResent-From: c@d.fr\r\n\r\n").resent,
            Outcome::Fail
        );
        assert_eq!(
            results("From: a@b.fr\r\nRESENT-date: x\r\n\r\n").resent,
            Outcome::Fail
        );
        assert_eq!(results("From: a@b.fr\r\n\r\n").resent, Outcome::Ok);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any bytes: no panic, and every field found lies inside the header block.
        #[test]
        fn any_bytes_split_safely(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let b = HeaderBlock::parse(&bytes);
            for f in &b.fields {
                proptest::prop_assert!(!f.name.is_empty());
                proptest::prop_assert!(f.name.len() + f.value.len() < bytes.len());
            }
            let parsed = mail_parser::MessageParser::default().parse(&bytes);
            let _ = check(&b, parsed.as_ref(), &ParseOptions::default());
        }

        /// Header-like soups: the split agrees with the wire (name, colon, value, CRLF).
        #[test]
        fn soups_split_safely(lines in proptest::collection::vec("[A-Za-z-]{0,6}[: \t]{0,2}[ -~]{0,20}", 0..12)) {
            let text = format!("{}\r\n\r\nbody", lines.join("\r\n"));
            let b = HeaderBlock::parse(text.as_bytes());
            if b.malformed.is_none() {
                for f in &b.fields {
                    let rebuilt = format!("{}:{}", String::from_utf8_lossy(f.name), String::from_utf8_lossy(f.value));
                    proptest::prop_assert!(text.contains(&rebuilt));
                }
                // An empty generated line ends the block early: the rest is body.
                if !lines.iter().any(String::is_empty) {
                    proptest::prop_assert_eq!(b.body, b"body");
                } else {
                    proptest::prop_assert!(b.body.ends_with(b"body"));
                }
            }
        }
    }

    #[test]
    fn from_count_is_case_insensitive() {
        assert_eq!(
            results("From: a@b.fr\r\nFROM: c@d.fr\r\n\r\n").from_count,
            Outcome::Fail
        );
        assert_eq!(results("Subject: x\r\n\r\n").from_count, Outcome::Fail);
        assert_eq!(results("fRoM: a@b.fr\r\n\r\n").from_count, Outcome::Ok);
    }
}
