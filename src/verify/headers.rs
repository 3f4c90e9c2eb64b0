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

/// The detail given when the splitter's own offsets do not fit the bytes (a bug, never a
/// property of the input): the block is refused as malformed rather than read with pieces
/// silently missing.
const INTERNAL: &str = "internal";

impl<'a> HeaderBlock<'a> {
    /// Split `message` (CRLF line endings, dot-unstuffed) at the first empty line.
    pub fn parse(message: &'a [u8]) -> Self {
        let mut s = Splitter {
            message,
            fields: Vec::new(),
            malformed: None,
            current: None,
            field_end: 0,
        };
        let mut pos = 0usize;
        let mut header_end = message.len();
        let mut body_start = message.len();
        while pos < message.len() {
            let Some(rest) = message.get(pos..) else {
                s.flag(INTERNAL);
                break;
            };
            let (line, next, terminated) = match find_crlf(rest) {
                Some(i) => (rest.get(..i), pos + i + 2, true),
                None => (Some(rest), message.len(), false),
            };
            let Some(line) = line else {
                s.flag(INTERNAL);
                break;
            };
            if line.is_empty() && terminated {
                header_end = pos;
                body_start = next;
                break;
            }
            s.line(pos, line);
            pos = next;
        }
        s.finish_field();
        if s.fields.is_empty() {
            s.flag("empty");
        }
        let (raw, body) = match (message.get(..header_end), message.get(body_start..)) {
            (Some(raw), Some(body)) => (raw, body),
            _ => {
                s.flag(INTERNAL);
                (message, &[][..])
            }
        };
        HeaderBlock {
            fields: s.fields,
            raw,
            body,
            malformed: s.malformed,
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

/// The state of [`HeaderBlock::parse`] between lines.
struct Splitter<'a> {
    message: &'a [u8],
    fields: Vec<Field<'a>>,
    malformed: Option<&'static str>,
    /// Current field: start offset of the name line, offset of the colon.
    current: Option<(usize, usize)>,
    /// Where the current field's last line ends (before its CRLF).
    field_end: usize,
}

impl<'a> Splitter<'a> {
    /// Keep the first fault found.
    fn flag(&mut self, why: &'static str) {
        if self.malformed.is_none() {
            self.malformed = Some(why);
        }
    }

    /// One line of the block (without its CRLF) starting at offset `pos`.
    fn line(&mut self, pos: usize, line: &[u8]) {
        if line.len() > MAX_LINE {
            self.flag("line_too_long");
        }
        if line.contains(&0) {
            self.flag("nul");
        }
        if line.iter().any(|b| *b >= 0x80) {
            self.flag("8bit");
        }
        if line.iter().any(|b| *b == b'\r' || *b == b'\n') {
            self.flag("bare_cr_lf");
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            // Continuation line.
            if line.iter().all(|b| *b == b' ' || *b == b'\t') {
                self.flag("whitespace_line");
            }
            if self.current.is_none() {
                self.flag("leading_continuation");
            }
        } else {
            self.finish_field();
            match line.iter().position(|b| *b == b':') {
                None => self.flag("no_colon"),
                Some(0) => self.flag("empty_name"),
                Some(c) => match line.get(..c) {
                    None => self.flag(INTERNAL),
                    Some(name) if name.iter().any(|b| *b == b' ' || *b == b'\t') => {
                        self.flag("space_before_colon")
                    }
                    Some(name) if !name.iter().all(|b| (33..=126).contains(b)) => {
                        self.flag("bad_name")
                    }
                    Some(_) => self.current = Some((pos, pos + c)),
                },
            }
        }
        self.field_end = pos + line.len();
    }

    /// Close the current field, if any: its name and its value up to `field_end`.
    fn finish_field(&mut self) {
        let Some((start, colon)) = self.current.take() else {
            return;
        };
        let name = self.message.get(start..colon);
        let value = self.message.get(colon + 1..self.field_end);
        match (name, value) {
            (Some(name), Some(value)) => self.fields.push(Field { name, value }),
            _ => self.flag(INTERNAL),
        }
    }
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
///
/// `X-Auto-Response-Suppress` is deliberately not among them: it asks *other* systems not to
/// answer automatically, and Exchange / Outlook set it on mail people write (to distribution
/// lists, on meeting replies, on mail sent through some add-ins), so refusing it refuses real
/// ministry replies. Exchange's own automatic replies (OOF) carry `Auto-Submitted:
/// auto-replied` as well ([MS-OXCMAIL] §2.2.3.2.14), which stays a marker.
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
            f.is("x-autoreply") || f.is("x-autorespond")
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
mod tests;
