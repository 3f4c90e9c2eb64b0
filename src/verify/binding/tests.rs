//! Table tests of the binding checks and of the choice of the signature that proves them.

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

/// Which signature proves the binding: (candidates' proofs, code counts, another aligned
/// signature unjudged) → choice (by the candidate's name).
#[test]
fn choose_table() {
    use Outcome::{Fail, Ok, Skipped};
    let p = |token: Option<Outcome>, code: Option<Outcome>, fresh: Outcome| Proof {
        token,
        code,
        fresh,
    };
    let all = p(Some(Ok), Some(Ok), Ok);
    let token_only = p(Some(Ok), Some(Fail), Ok);
    let stale = p(Some(Ok), Some(Ok), Fail);
    let none = p(Some(Fail), Some(Fail), Ok);
    let unmeasured = p(Some(Ok), Some(Ok), Skipped);
    let no_challenge = p(None, None, Ok);
    type Row = (Vec<(&'static str, Proof)>, bool, bool, Choice<&'static str>);
    let rows: Vec<Row> = vec![
        (vec![], true, false, Choice::Nothing),
        (vec![], true, true, Choice::Nothing),
        (vec![("a", all)], true, false, Choice::Chosen("a", all)),
        // The one that proves all wins over an earlier partial one.
        (
            vec![("a", token_only), ("b", all)],
            true,
            false,
            Choice::Chosen("b", all),
        ),
        (
            vec![("a", none), ("b", stale), ("c", all)],
            true,
            false,
            Choice::Chosen("c", all),
        ),
        // None proves all: the first that proves the token, else the first.
        (
            vec![("a", none), ("b", token_only)],
            true,
            false,
            Choice::Chosen("b", token_only),
        ),
        (
            vec![("a", none), ("b", stale), ("c", token_only)],
            true,
            false,
            Choice::Chosen("b", stale),
        ),
        (
            vec![("a", none), ("b", none)],
            true,
            false,
            Choice::Chosen("a", none),
        ),
        // The session code does not count when not required.
        (
            vec![("a", none), ("b", token_only)],
            false,
            false,
            Choice::Chosen("b", token_only),
        ),
        (
            vec![("a", stale), ("b", token_only)],
            false,
            false,
            Choice::Chosen("b", token_only),
        ),
        // Freshness not measurable does not disprove.
        (
            vec![("a", unmeasured)],
            true,
            false,
            Choice::Chosen("a", unmeasured),
        ),
        // No challenge (`gatekeeper verify`): nothing to disprove.
        (
            vec![("a", no_challenge)],
            true,
            true,
            Choice::Chosen("a", no_challenge),
        ),
        // An unjudged aligned signature: only a candidate that proves all is certain.
        (vec![("a", all)], true, true, Choice::Chosen("a", all)),
        (vec![("a", token_only)], true, true, Choice::Unsure),
        (vec![("a", none), ("b", stale)], true, true, Choice::Unsure),
        (
            vec![("a", token_only)],
            false,
            true,
            Choice::Chosen("a", token_only),
        ),
    ];
    for (candidates, code_counts, unjudged, want) in rows {
        let got = choose(candidates.clone(), code_counts, unjudged);
        assert_eq!(
            got, want,
            "{candidates:?} code={code_counts} unjudged={unjudged}"
        );
    }
}
