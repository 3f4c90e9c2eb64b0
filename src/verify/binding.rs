//! Binding of the mail to the challenge (SPEC I1): identity, token in signed content, reply,
//! session code, freshness. Pure.
//!
//! Comparisons of the token, the session code and the challenge Message-ID are on the
//! ASCII-lower-cased forms (the token is canonical lower-case; a person may retype the code
//! in any case). "Signed" means the field instance is in the aligned signature's signed set
//! (see `dkim`); the body counts as signed because a signature with `l=` is never selected.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use mail_parser::Message;

use crate::verify::Outcome;
use crate::verify::headers::HeaderBlock;

/// The furthest a Date or `t=` may be ahead of our clock (SPEC §4 `date.stale`).
pub const MAX_FUTURE_SECS: i64 = 3600;

/// What the binding checks read from the message.
pub struct Content<'m, 'a> {
    pub block: &'m HeaderBlock<'a>,
    pub parsed: Option<&'m Message<'a>>,
    /// Field indices covered by the selected signature; `None` = everything (a domain whose
    /// override does not require DKIM, see `verify`).
    pub signed: Option<&'m HashSet<usize>>,
}

impl Content<'_, '_> {
    fn is_signed(&self, index: usize) -> bool {
        self.signed.is_none_or(|s| s.contains(&index))
    }

    /// Lower-cased values of the signed instances of `name` (raw unfolded).
    fn signed_values(&self, name: &str) -> Vec<String> {
        self.block
            .named(name)
            .filter(|(i, _)| self.is_signed(*i))
            .map(|(_, f)| f.unfolded().to_ascii_lowercase())
            .collect()
    }

    /// The signed Subject: raw and RFC 2047-decoded, lower-case.
    fn signed_subject(&self) -> Vec<String> {
        let mut out = self.signed_values("subject");
        if !out.is_empty()
            && let Some(s) = self.parsed.and_then(|m| m.subject())
        {
            out.push(s.to_lowercase());
        }
        out
    }

    /// The body: raw (lossy) and every decoded text part, lower-case.
    fn body_texts(&self) -> Vec<String> {
        let mut out = vec![String::from_utf8_lossy(self.block.body).to_lowercase()];
        if let Some(m) = self.parsed {
            for i in 0..m.text_body_count().min(16) {
                if let Some(t) = m.body_text(i) {
                    out.push(t.to_lowercase());
                }
            }
        }
        out
    }
}

/// `binding.token_unsigned`: the token appears in a signed To, Cc, Subject, In-Reply-To or
/// References instance, or in the body.
pub fn token_signed(c: &Content<'_, '_>, token: &str) -> Outcome {
    let token = token.to_ascii_lowercase();
    if token.is_empty() {
        return Outcome::Fail;
    }
    let mut haystacks = Vec::new();
    for name in ["to", "cc", "in-reply-to", "references"] {
        haystacks.extend(c.signed_values(name));
    }
    haystacks.extend(c.signed_subject());
    haystacks.extend(c.body_texts());
    Outcome::from_ok(haystacks.iter().any(|h| h.contains(&token)))
}

/// `binding.session_code`: the code is in the signed Subject or the (decoded) body, as a
/// whole word: not touching a letter or digit on either side, so a six-digit code does not
/// match inside a longer number (a phone number, a timestamp).
pub fn session_code(c: &Content<'_, '_>, code: &str) -> Outcome {
    let code = code.trim().to_lowercase();
    if code.is_empty() {
        return Outcome::Fail;
    }
    let mut haystacks = c.signed_subject();
    haystacks.extend(c.body_texts());
    Outcome::from_ok(haystacks.iter().any(|h| contains_word(h, &code)))
}

/// `needle` occurs in `haystack` with no alphanumeric character right before or after it.
fn contains_word(haystack: &str, needle: &str) -> bool {
    haystack.match_indices(needle).any(|(at, m)| {
        let before = haystack.get(..at).and_then(|s| s.chars().next_back());
        let after = haystack.get(at + m.len()..).and_then(|s| s.chars().next());
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// `binding.not_a_reply`: In-Reply-To or References (signed or not) names `<message_id>`.
pub fn is_reply(block: &HeaderBlock<'_>, message_id: &str) -> Outcome {
    let wanted = format!(
        "<{}>",
        message_id
            .trim_matches(|c| c == '<' || c == '>')
            .to_ascii_lowercase()
    );
    if wanted == "<>" {
        return Outcome::Fail;
    }
    let found = block
        .fields
        .iter()
        .filter(|f| f.is("in-reply-to") || f.is("references"))
        .any(|f| {
            let v: String = f
                .unfolded()
                .to_ascii_lowercase()
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            v.contains(&wanted)
        });
    Outcome::from_ok(found)
}

/// A signed Date that does not parse as an RFC 5322 date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnreadableDate;

/// The timestamp `date.stale` judges: the signed Date, else the signature's `t=`.
/// `Err` when a signed Date is present but unreadable (refused as stale).
pub fn message_time(
    c: &Content<'_, '_>,
    sig_t: Option<u64>,
) -> Result<Option<i64>, UnreadableDate> {
    let signed_date = c.block.named("date").find(|(i, _)| c.is_signed(*i));
    if let Some((_, f)) = signed_date {
        let text = f.unfolded();
        return match mail_parser::DateTime::parse_rfc822(&text) {
            Some(dt) if dt.is_valid() => Ok(Some(dt.to_timestamp())),
            _ => Err(UnreadableDate),
        };
    }
    Ok(sig_t.and_then(|t| i64::try_from(t).ok()))
}

/// `date.stale`: older than `max_age` or more than an hour ahead of `now`. `Skipped` when
/// neither a signed Date nor `t=` exists.
pub fn freshness(
    time: Result<Option<i64>, UnreadableDate>,
    now: DateTime<Utc>,
    max_age: std::time::Duration,
) -> Outcome {
    let ts = match time {
        Err(UnreadableDate) => return Outcome::Fail,
        Ok(None) => return Outcome::Skipped,
        Ok(Some(ts)) => ts,
    };
    let now = now.timestamp();
    let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
    Outcome::from_ok(ts >= now.saturating_sub(max_age) && ts <= now.saturating_add(MAX_FUTURE_SECS))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MSG: &str = "From: a@b.fr\r\nTo: <confirm+TOKENX@v.fr>\r\nSubject: =?utf-8?q?Code_ABC-123?=\r\nDate: Thu, 26 Nov 2026 06:00:00 +0000\r\nIn-Reply-To: <Chal-1@v.fr>\r\nCc: x@y.fr\r\n\r\nhello\r\n";

    fn with<R>(msg: &str, signed: Option<&[usize]>, f: impl FnOnce(&Content<'_, '_>) -> R) -> R {
        let block = HeaderBlock::parse(msg.as_bytes());
        let parsed = mail_parser::MessageParser::default().parse(msg.as_bytes());
        let set: Option<HashSet<usize>> = signed.map(|s| s.iter().copied().collect());
        let c = Content {
            block: &block,
            parsed: parsed.as_ref(),
            signed: set.as_ref(),
        };
        f(&c)
    }

    #[test]
    fn token_only_counts_when_signed() {
        assert_eq!(
            with(MSG, Some(&[0, 1]), |c| token_signed(c, "tokenx")),
            Outcome::Ok
        );
        assert_eq!(
            with(MSG, Some(&[0, 2]), |c| token_signed(c, "tokenx")),
            Outcome::Fail
        );
        assert_eq!(with(MSG, None, |c| token_signed(c, "TOKENX")), Outcome::Ok);
        assert_eq!(
            with(MSG, Some(&[0]), |c| token_signed(c, "hello")),
            Outcome::Ok,
            "body is signed"
        );
        assert_eq!(
            with(MSG, Some(&[0]), |c| token_signed(c, "")),
            Outcome::Fail
        );
    }

    #[test]
    fn session_code_in_signed_subject_or_body() {
        assert_eq!(
            with(MSG, Some(&[2]), |c| session_code(c, "abc-123")),
            Outcome::Ok
        );
        assert_eq!(
            with(MSG, Some(&[0]), |c| session_code(c, "abc-123")),
            Outcome::Fail
        );
        let qp = "From: a@b.fr\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCode : AB=\r\nC-123\r\n";
        assert_eq!(
            with(qp, Some(&[0]), |c| session_code(c, "ABC-123")),
            Outcome::Ok
        );
        let b64 = "From: a@b.fr\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nQ29kZSA6IEFCQy0xMjM=\r\n";
        assert_eq!(
            with(b64, Some(&[0]), |c| session_code(c, "abc-123")),
            Outcome::Ok
        );
    }

    #[test]
    fn session_code_is_a_whole_word() {
        let msg = |body: &str| format!("From: a@b.fr\r\n\r\n{body}\r\n");
        let rows: &[(&str, Outcome)] = &[
            ("Code : 482913", Outcome::Ok),
            ("code:482913.", Outcome::Ok),
            ("(482913)", Outcome::Ok),
            ("482913", Outcome::Ok),
            ("tel 0148291377", Outcome::Fail),
            ("1482913", Outcome::Fail),
            ("4829130", Outcome::Fail),
            ("x482913", Outcome::Fail),
            ("48291", Outcome::Fail),
            ("1482913 and 482913", Outcome::Ok),
        ];
        for (body, want) in rows {
            assert_eq!(
                with(&msg(body), Some(&[0]), |c| session_code(c, "482913")),
                *want,
                "{body}"
            );
        }
        assert_eq!(
            with(&msg("x"), Some(&[0]), |c| session_code(c, "  ")),
            Outcome::Fail
        );
    }

    #[test]
    fn reply_detection() {
        let block = HeaderBlock::parse(MSG.as_bytes());
        assert_eq!(is_reply(&block, "chal-1@v.fr"), Outcome::Ok);
        assert_eq!(is_reply(&block, "<Chal-1@v.fr>"), Outcome::Ok);
        assert_eq!(is_reply(&block, "chal-2@v.fr"), Outcome::Fail);
        assert_eq!(is_reply(&block, "hal-1@v.fr"), Outcome::Fail);
        assert_eq!(is_reply(&block, ""), Outcome::Fail);
    }

    #[test]
    fn freshness_window() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T06:10:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default();
        let age = Duration::from_secs(48 * 3600);
        let t = with(MSG, Some(&[3]), |c| message_time(c, None));
        assert_eq!(t, Ok(Some(now.timestamp() - 600)));
        assert_eq!(freshness(t, now, age), Outcome::Ok);
        assert_eq!(freshness(t, now, Duration::from_secs(60)), Outcome::Fail);
        // Unsigned Date: t= is used instead; neither: skipped.
        assert_eq!(
            with(MSG, Some(&[0]), |c| message_time(c, Some(5))),
            Ok(Some(5))
        );
        assert_eq!(freshness(Ok(Some(5)), now, age), Outcome::Fail);
        assert_eq!(freshness(Ok(None), now, age), Outcome::Skipped);
        assert_eq!(
            freshness(Ok(Some(now.timestamp() + 3601)), now, age),
            Outcome::Fail
        );
        assert_eq!(
            freshness(Ok(Some(now.timestamp() + 3500)), now, age),
            Outcome::Ok
        );
        let bad = "From: a@b.fr\r\nDate: yesterday\r\n\r\n";
        assert_eq!(
            with(bad, Some(&[1]), |c| message_time(c, None)),
            Err(UnreadableDate)
        );
        assert_eq!(freshness(Err(UnreadableDate), now, age), Outcome::Fail);
    }
}
