//! `Mailbox::parse` and `Domain::parse` on arbitrary bytes: never panic, and whatever is
//! accepted is canonical (lower-case of the input) and parses again to itself.
#![no_main]

use gatekeeper::address::{Domain, Mailbox, ParseOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the options, so option-dependent paths are reached too.
    let (opts, input) = match data.split_first() {
        Some((flags, rest)) => (
            ParseOptions {
                local_part_extra_chars: if flags & 1 != 0 {
                    "#$&'*/=?^`{|}~!%@\"".into()
                } else {
                    String::new()
                },
                allow_idna: flags & 2 != 0,
            },
            rest,
        ),
        None => (ParseOptions::default(), data),
    };
    if let Ok(m) = Mailbox::parse(input, &opts) {
        let canonical = m.to_string();
        assert_eq!(canonical.as_bytes(), input.to_ascii_lowercase().as_slice());
        let again = Mailbox::parse(canonical.as_bytes(), &opts);
        assert_eq!(again.as_ref(), Ok(&m));
        let upper = Mailbox::parse(canonical.to_ascii_uppercase().as_bytes(), &opts);
        assert_eq!(upper.as_ref(), Ok(&m));
        assert!(canonical.len() <= 254);
        assert_eq!(
            Domain::parse(m.domain().as_str().as_bytes(), &opts).as_ref(),
            Ok(m.domain())
        );
    }
    if let Ok(d) = Domain::parse(input, &opts) {
        assert_eq!(d.as_str().as_bytes(), input.to_ascii_lowercase().as_slice());
        assert_eq!(Domain::parse(d.as_str().as_bytes(), &opts).as_ref(), Ok(&d));
        assert!(d.is_within(&d));
    }
});
