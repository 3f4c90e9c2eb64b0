//! The configuration loader on arbitrary text: `Config::from_toml_str` (TOML syntax, then
//! every semantic check of `src/config`), from a string, no configuration file read. Never
//! panics, and:
//! - loading is deterministic (the same text, the same verdict and the same `Config`);
//! - a refusal names its problems, each with the given origin and a line of the text;
//! - the verdict does not depend on how the TOML is written: the document re-written by
//!   the toml crate from its own parse (another quoting, order of tables, whitespace) is
//!   accepted or refused the same, and an accepted one gives the same `Config`.
#![no_main]

use gatekeeper::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = Config::from_toml_str(text, "fuzz.toml");
    let second = Config::from_toml_str(text, "fuzz.toml");
    assert_eq!(
        first.as_ref().map(|c| format!("{c:?}")).ok(),
        second.as_ref().map(|c| format!("{c:?}")).ok()
    );
    assert_eq!(first.is_ok(), second.is_ok());
    // A refusal names at least one problem, each with the origin it was given and a line
    // that exists in the text.
    if let Err(e) = &first {
        assert!(!e.problems().is_empty());
        let lines = text.split('\n').count();
        for p in e.problems() {
            assert_eq!(p.origin, "fuzz.toml");
            assert!(
                p.line.is_none_or(|l| (1..=lines).contains(&l)),
                "{p:?} of {lines}"
            );
            assert!(!p.message.is_empty());
        }
    }

    let Ok(table) = text.parse::<toml::Table>() else {
        assert!(first.is_err(), "text that is not TOML was accepted");
        return;
    };
    let Ok(rewritten) = toml::to_string(&table) else {
        return;
    };
    let again = Config::from_toml_str(&rewritten, "fuzz.toml");
    assert_eq!(
        first.as_ref().map(|c| format!("{c:?}")).ok(),
        again.as_ref().map(|c| format!("{c:?}")).ok(),
        "the verdict depends on the TOML's spelling:\n{text}\n---\n{rewritten}"
    );
});
