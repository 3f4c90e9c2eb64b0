//! Shared test support, one harness for every integration test: an in-process DNS server for
//! the test world ([`dns`]), DKIM keys ([`keys`]), an independent DKIM signer ([`dkim`]), the
//! public corpus ([`corpus`]), the in-process daemon and its clients ([`e2e`]), the SMTP
//! transcript helper over the pure session ([`transcript`]), the SMTP server with a fake
//! backend ([`server`]), the challenge tests' config and store doubles ([`challenge`]), the
//! SIEM tests' builders and decoders ([`siem`]), and the glue to build the configuration, a
//! verifier, a transaction and a challenge ([`World`]).
//!
//! A throwaway PostgreSQL cluster for the store tests is [`postgres`]; network namespaces
//! and veth pairs for tests that need hosts of their own, [`netns`]; small tmpfs mounts to
//! fill up, [`tmpfs`]; zones signed by a real signer and served by NSD for the DNSSEC tests,
//! [`signed`].
//!
//! Use from an integration test with `mod common;`.

#![allow(dead_code)]

pub mod challenge;
pub mod corpus;
pub mod daemon;
pub mod dkim;
pub mod dns;
pub mod e2e;
pub mod flood;
pub mod keys;
pub mod mail;
pub mod netns;
pub mod postgres;
pub mod server;
pub mod siem;
pub mod signed;
pub mod tmpfs;
pub mod transcript;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chrono::{DateTime, Utc};
use gatekeeper::address::{Domain, Mailbox, ParseOptions};
use gatekeeper::backend::{ChallengeBinding, Recipient, SessionInfo, Transaction};
use gatekeeper::config::{Alignment, ConfirmConfig, DnsConfig, PolicyConfig};
use gatekeeper::verify::Verifier;

pub use self::corpus::Vars;
pub use self::dns::TestDns;

pub fn domain(s: &str) -> Domain {
    Domain::parse(s.as_bytes(), &ParseOptions::default())
        .unwrap_or_else(|e| panic!("domain {s}: {e}"))
}

pub fn mailbox(s: &str) -> Mailbox {
    Mailbox::parse(s.as_bytes(), &ParseOptions::default())
        .unwrap_or_else(|e| panic!("mailbox {s}: {e}"))
}

/// `[confirm]` of the corpus world.
pub fn confirm_config() -> ConfirmConfig {
    ConfirmConfig {
        domain: domain("verify.example.gouv.fr"),
        local_prefix: "confirm".into(),
        challenge_ttl: Duration::from_secs(24 * 3600),
        max_message_age: Duration::from_secs(48 * 3600),
        require_reply: true,
        require_session_code: true,
        max_pending_per_address: 5,
        max_challenges_per_address_per_hour: 10,
        service_name: "Test".into(),
    }
}

/// `[policy]` of the corpus world: `gouv.fr`, strict alignment, default limits.
pub fn policy_config() -> PolicyConfig {
    PolicyConfig {
        allowed_domains: vec![domain("gouv.fr")],
        denied_domains: vec![],
        alignment: Alignment::Strict,
        require_iprev: false,
        dkim_min_rsa_bits: 1024,
        allowed_networks: vec![],
        local_part_extra_chars: String::new(),
        allow_idna: false,
        domains: vec![],
    }
}

pub fn dns_config(addr: SocketAddr, timeout: Duration) -> DnsConfig {
    DnsConfig {
        nameservers: vec![addr],
        timeout,
        // The verifiers of these tests get their check bound from `World::timeout`.
        check_timeout: timeout,
        dnssec: false,
        trust_anchor: None,
        cache_size: 1024,
    }
}

/// The DNS server of the corpus world plus the configuration pieces a verifier needs.
pub struct World {
    pub dns: TestDns,
    pub confirm: ConfirmConfig,
    pub policy: PolicyConfig,
    pub timeout: Duration,
}

impl World {
    /// Start the DNS server with the corpus zone (keys generated once per test binary).
    pub async fn start() -> World {
        let dns = TestDns::start(corpus::zone_records()).await;
        World {
            dns,
            confirm: confirm_config(),
            policy: policy_config(),
            timeout: Duration::from_secs(3),
        }
    }

    /// Back to the corpus zone, no faults.
    pub fn reset_dns(&self) {
        self.dns.reset(corpus::zone_records());
    }

    /// A verifier with the world's current configuration.
    pub fn verifier(&self) -> Verifier {
        let auth =
            gatekeeper::dns::build(&dns_config(self.dns.addr, self.timeout)).expect("resolver");
        Verifier::with_authenticator(
            auth,
            self.confirm.clone(),
            self.policy.clone(),
            self.timeout,
        )
    }

    /// Apply a corpus case's `dns_overrides` (`replace`/`add`/`remove`/`servfail`/`drop`).
    pub fn apply_overrides(&self, overrides: &serde_json::Value) {
        let list = |k: &str| -> Vec<Vec<String>> {
            overrides
                .get(k)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .map(|row| match row {
                            serde_json::Value::Array(items) => items
                                .iter()
                                .filter_map(|x| x.as_str())
                                .map(corpus::fill_pubkeys)
                                .collect(),
                            serde_json::Value::String(s) => vec![s.clone()],
                            _ => vec![],
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        for r in list("replace") {
            if let [n, t, v] = r.as_slice() {
                self.dns.replace(n, t, v);
            }
        }
        for r in list("add") {
            if let [n, t, v] = r.as_slice() {
                self.dns.add(n, t, v);
            }
        }
        for r in list("remove") {
            if let [n, t, ..] = r.as_slice() {
                self.dns.remove(n, t);
            }
        }
        for r in list("servfail") {
            if let Some(n) = r.first() {
                self.dns.servfail(n);
            }
        }
        for r in list("drop") {
            if let Some(n) = r.first() {
                self.dns.drop_name(n);
            }
        }
    }
}

/// A transaction as the SMTP engine hands it over.
pub fn transaction(
    client_ip: &str,
    helo: &str,
    mail_from: &str,
    vars: &Vars,
    message: Vec<u8>,
    now: DateTime<Utc>,
) -> Transaction {
    let rcpt = format!("confirm+{}@verify.example.gouv.fr", vars.token);
    Transaction {
        session: SessionInfo {
            session_id: "test-session".into(),
            client_ip: client_ip.parse::<IpAddr>().expect("client ip"),
            client_port: 40000,
            helo: Some(helo.into()),
            tls_version: None,
        },
        mail_from: mailbox(mail_from),
        mail_from_tagged: None,
        rcpt: Recipient {
            token: vars.token.clone(),
            address: mailbox(&rcpt),
        },
        challenge_id: "ch-test".into(),
        message,
        received_at: now,
    }
}

/// The challenge the transaction answers.
pub fn challenge(address: &str, vars: &Vars) -> ChallengeBinding {
    ChallengeBinding {
        id: "ch-test".into(),
        address: mailbox(address),
        token: vars.token.clone(),
        session_code: vars.session_code.clone(),
        message_id: vars.challenge_msgid.clone(),
    }
}

/// A verdict in one line for assertion messages: the decision and every check that did not
/// pass.
pub fn show_verdict(v: &gatekeeper::backend::Verdict) -> String {
    format!(
        "{:?} [{}]",
        v.decision,
        v.checks
            .iter()
            .filter(|c| c.result != "ok" && c.result != "pass")
            .map(|c| format!("{}={}", c.name, c.result))
            .collect::<Vec<_>>()
            .join(" ")
    )
}
