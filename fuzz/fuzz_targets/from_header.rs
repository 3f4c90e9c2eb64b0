//! `Mailbox::parse_header` on arbitrary bytes: never panic; an accepted From value yields a
//! mailbox that the envelope parser accepts unchanged (one parse, one canonical form).
#![no_main]

use gatekeeper::address::{Mailbox, ParseOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = ParseOptions::default();
    if let Ok(m) = Mailbox::parse_header(data, &opts) {
        let canonical = m.to_string();
        assert_eq!(Mailbox::parse(canonical.as_bytes(), &opts).as_ref(), Ok(&m));
        // The bare canonical address and its bracketed form are From values too.
        assert_eq!(
            Mailbox::parse_header(canonical.as_bytes(), &opts).as_ref(),
            Ok(&m)
        );
        let bracketed = format!("<{canonical}>");
        assert_eq!(
            Mailbox::parse_header(bracketed.as_bytes(), &opts).as_ref(),
            Ok(&m)
        );
    }
});
