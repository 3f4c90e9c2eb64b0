//! The DATA path's structural reading of a message on arbitrary bytes: `HeaderBlock::parse`
//! (our strict header split), mail-parser's MIME reading, `headers::check` (SPEC §4
//! `header.*`, `message.report`), the DKIM-Signature fields through `SigInfo::parse` and
//! their signed instances, and the binding checks that search the message (token, session
//! code, reply, Date). Never panics, and:
//! - a block without a fault is exactly its fields: `name ":" value CRLF` for each, in
//!   order, rebuilds the raw block, and the message is that block, the empty line, the body;
//! - every field name is printable ASCII without a colon, and a value never holds a bare CR
//!   or LF outside a fold (CRLF followed by a space or tab);
//! - the From the checks return is there exactly when there is one From field and it
//!   parsed, and it parses again to itself;
//! - a signed set only names fields of the block, never the signature's own field.
#![no_main]

use chrono::{TimeZone, Utc};
use gatekeeper::address::{Mailbox, ParseOptions};
use gatekeeper::policy::Outcome;
use gatekeeper::verify::binding::{self, Content};
use gatekeeper::verify::dkim::{self, SigInfo};
use gatekeeper::verify::headers::{self, HeaderBlock};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = ParseOptions::default();
    let block = HeaderBlock::parse(data);
    assert!(data.starts_with(block.raw));
    assert!(data.ends_with(block.body));
    assert!(block.raw.len() + block.body.len() <= data.len());
    for f in &block.fields {
        assert!(!f.name.is_empty());
        assert!(f.name.iter().all(|b| (33..=126).contains(b) && *b != b':'));
    }
    if block.malformed.is_none() {
        let mut rebuilt = Vec::with_capacity(block.raw.len() + 2);
        for f in &block.fields {
            rebuilt.extend_from_slice(f.name);
            rebuilt.push(b':');
            rebuilt.extend_from_slice(f.value);
            rebuilt.extend_from_slice(b"\r\n");
            // Inside a good value, CR and LF come only as CRLF folds before white space.
            let mut rest = f.value;
            while let Some(at) = rest.iter().position(|b| *b == b'\r' || *b == b'\n') {
                let fold = rest.get(at..at + 3);
                assert!(
                    matches!(fold, Some([b'\r', b'\n', b' ' | b'\t'])),
                    "bare CR/LF in a good field: {:?}",
                    f.value
                );
                rest = rest.get(at + 3..).unwrap_or_default();
            }
        }
        // An unterminated last line is a field without its CRLF.
        let terminated = block.raw.ends_with(b"\r\n");
        if !terminated {
            rebuilt.truncate(rebuilt.len().saturating_sub(2));
        }
        assert_eq!(
            rebuilt.as_slice(),
            block.raw,
            "fields do not rebuild the block"
        );
        if block.raw.len() < data.len() {
            let mut whole = block.raw.to_vec();
            whole.extend_from_slice(b"\r\n");
            whole.extend_from_slice(block.body);
            assert_eq!(whole.as_slice(), data, "block, empty line and body");
        } else {
            assert!(block.body.is_empty());
        }
    }

    let parsed = mail_parser::MessageParser::default().parse(data);
    let results = headers::check(&block, parsed.as_ref(), &opts);
    let from_fields = block.count("from");
    assert_eq!(
        results.from.is_some(),
        from_fields == 1 && results.checks.from_syntax == Outcome::Ok
    );
    if let Some(from) = &results.from {
        let again = Mailbox::parse(from.to_string().as_bytes(), &opts);
        assert_eq!(again.as_ref(), Ok(from));
    }
    assert_eq!(
        results.checks.malformed == Outcome::Ok,
        block.malformed.is_none()
    );

    // The signatures as the DKIM rules read them, and what each signs.
    let sigs: Vec<SigInfo> = block
        .named("dkim-signature")
        .take(dkim::MAX_SIGNATURES)
        .map(|(i, f)| SigInfo::parse(i, f.value, &opts))
        .collect();
    let signed = sigs.first().map(|s| {
        let set = s.signed_fields(&block);
        assert!(set.iter().all(|i| *i < block.fields.len() && *i != s.field));
        assert!(set.len() <= s.h.len());
        set
    });
    if let (Some(sig), Some(from)) = (sigs.first(), &results.from) {
        let _ = dkim::identity_agrees(sig, from, &opts);
    }

    let content = Content {
        block: &block,
        parsed: parsed.as_ref(),
        signed: signed.as_ref(),
    };
    let _ = binding::token_signed(&content, "k7qzt3m2xw");
    let _ = binding::session_code(&content, "483-912");
    let _ = binding::is_reply(&block, "<c1.k7qzt3m2xw@confirm.example.org>");
    let time = binding::message_time(&content, sigs.first().and_then(|s| s.t));
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let _ = binding::freshness(time, now, std::time::Duration::from_secs(86_400));
});
