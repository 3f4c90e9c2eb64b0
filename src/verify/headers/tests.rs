//! Table tests of the header split and of every header check.

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
        // Alone it is what Exchange writes on mail people send: not a marker (SPEC §4).
        ("X-Auto-Response-Suppress: All\r\n", Outcome::Ok),
        (
            "X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply\r\n",
            Outcome::Ok,
        ),
        ("x-auto-response-suppress: OOF\r\n", Outcome::Ok),
        // An Exchange OOF: the suppress header and Auto-Submitted together stay refused.
        (
            "X-Auto-Response-Suppress: All\r\nAuto-Submitted: auto-replied\r\n",
            Outcome::Fail,
        ),
        (
            "Auto-Submitted: auto-generated\r\nX-Auto-Response-Suppress: All\r\n",
            Outcome::Fail,
        ),
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
    let req =
        "From: a@b.fr\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\n";
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
