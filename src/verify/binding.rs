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

/// What one candidate (a passing aligned signature, or the whole mail for a domain that does
/// not require DKIM) proves of the binding. `None` = no challenge to compare with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proof {
    pub token: Option<Outcome>,
    pub code: Option<Outcome>,
    pub fresh: Outcome,
}

impl Proof {
    /// Token, session code (when `code_counts`) and freshness all proved (or not judged for
    /// want of a challenge). An unmeasurable freshness (`Skipped`) does not disprove.
    pub fn proves_all(&self, code_counts: bool) -> bool {
        self.token.is_none_or(|t| t == Outcome::Ok)
            && (!code_counts || self.code.is_none_or(|c| c == Outcome::Ok))
            && self.fresh != Outcome::Fail
    }
}

/// Which candidate the binding checks are judged against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice<T> {
    /// This candidate decides; its proof gives the binding checks.
    Chosen(T, Proof),
    /// No candidate at all: the binding checks could not run (`skipped`).
    Nothing,
    /// No candidate proves the whole binding, and an aligned signature that could not be
    /// judged (temporary failure) might have: DKIM is `temperror`, the binding `skipped`.
    Unsure,
}

/// The signature that proves the binding (pure): the first candidate that proves all of
/// it; failing that, the first that proves the token (its other gaps are then the reason);
/// else the first. Two candidates' halves are never combined. `unjudged` = another aligned
/// signature could not be judged for a temporary reason.
pub fn choose<T>(candidates: Vec<(T, Proof)>, code_counts: bool, unjudged: bool) -> Choice<T> {
    let all = candidates
        .iter()
        .position(|(_, p)| p.proves_all(code_counts));
    let token = || {
        candidates
            .iter()
            .position(|(_, p)| p.token == Some(Outcome::Ok))
    };
    let pick = all.or_else(token).unwrap_or(0);
    let Some((item, proof)) = candidates.into_iter().nth(pick) else {
        return Choice::Nothing;
    };
    if unjudged && !proof.proves_all(code_counts) {
        return Choice::Unsure;
    }
    Choice::Chosen(item, proof)
}

#[cfg(test)]
mod tests;
