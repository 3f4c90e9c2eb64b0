//! The body of `POST /v1/challenges` on arbitrary bytes, as the API reads it: the JSON
//! reader (`api::read_claim`, what the handler's `Json` extractor runs) and then the claim's
//! validation (`Mailbox::parse` with the configured options, then the domain policy with
//! `confirm.domain` excluded, as `ChallengeService::create` does). Never panics, and:
//! - an accepted body is a JSON object whose one key is `address` with a string value, and
//!   `{"address": <that string>}` written back by serde_json is accepted to the same string;
//! - an address the validation accepts is canonical: it parses again to itself, and is
//!   allowed again.
#![no_main]

use std::sync::OnceLock;

use gatekeeper::address::Mailbox;
use gatekeeper::config::Config;
use gatekeeper::domains::DomainPolicy;
use libfuzzer_sys::fuzz_target;

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let text = include_str!("../../conf/gatekeeper.toml");
        Config::from_toml_str(text, "conf/gatekeeper.toml").expect("shipped config")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(address) = gatekeeper::api::read_claim(data) else {
        return;
    };
    let value: serde_json::Value = serde_json::from_slice(data).expect("an accepted claim is JSON");
    let object = value.as_object().expect("an accepted claim is an object");
    assert_eq!(object.len(), 1);
    assert_eq!(
        object.get("address").and_then(|v| v.as_str()),
        Some(address.as_str())
    );
    let written = serde_json::json!({ "address": address }).to_string();
    assert_eq!(
        gatekeeper::api::read_claim(written.as_bytes())
            .ok()
            .as_deref(),
        Some(address.as_str())
    );

    let config = config();
    let opts = config.parse_options();
    let policy = DomainPolicy::new(&config.policy);
    let Ok(mailbox) = Mailbox::parse(address.as_bytes(), &opts) else {
        return;
    };
    let canonical = mailbox.to_string();
    assert_eq!(
        Mailbox::parse(canonical.as_bytes(), &opts).as_ref(),
        Ok(&mailbox)
    );
    let allowed = policy.check_claim(mailbox.domain(), &config.confirm.domain);
    if allowed.is_ok() {
        let again = Mailbox::parse(canonical.as_bytes(), &opts).expect("canonical parses");
        assert!(
            policy
                .check_claim(again.domain(), &config.confirm.domain)
                .is_ok()
        );
        assert!(!mailbox.domain().is_within(&config.confirm.domain));
    }
});
