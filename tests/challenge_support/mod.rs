//! Shared helpers of the challenge tests (`tests/store.rs`, `tests/api.rs`, `tests/app.rs`):
//! a complete `Config` for the corpus test world, built directly (every field explicit).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gatekeeper::address::{Domain, ParseOptions};
use gatekeeper::config::*;
use gatekeeper::store::NewChallenge;

pub fn domain(s: &str) -> Domain {
    Domain::parse(s.as_bytes(), &ParseOptions::default()).expect("test domain parses")
}

/// The corpus world: confirm domain `verify.example.gouv.fr`, allowed `gouv.fr`, outbox and
/// store under `dir`.
pub fn config(dir: &Path) -> Config {
    Config {
        smtp: SmtpConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            hostname: "verify.example.gouv.fr".into(),
            max_message_bytes: 2 * 1024 * 1024,
            max_connections: 100,
            max_connections_per_ip: 10,
            command_timeout: Duration::from_secs(60),
            data_timeout: Duration::from_secs(120),
            session_timeout: Duration::from_secs(600),
            max_errors: 10,
            max_transactions: 10,
            shutdown_grace: Duration::from_secs(5),
            tls: None,
        },
        confirm: ConfirmConfig {
            domain: domain("verify.example.gouv.fr"),
            local_prefix: "confirm".into(),
            challenge_ttl: Duration::from_secs(24 * 3600),
            max_message_age: Duration::from_secs(48 * 3600),
            require_reply: true,
            require_session_code: true,
            max_pending_per_address: 5,
            max_challenges_per_address_per_hour: 10,
            service_name: "Tchap".into(),
        },
        policy: PolicyConfig {
            allowed_domains: vec![domain("gouv.fr")],
            denied_domains: vec![domain("denied.gouv.fr")],
            alignment: Alignment::Strict,
            require_iprev: false,
            dkim_min_rsa_bits: 1024,
            allowed_networks: vec![],
            local_part_extra_chars: String::new(),
            allow_idna: false,
            domains: vec![],
        },
        dns: DnsConfig {
            nameservers: vec![],
            timeout: Duration::from_secs(5),
            dnssec: false,
            cache_size: 1000,
        },
        store: StoreConfig {
            path: dir.join("var/gatekeeper.db"),
            purge_interval: Duration::from_secs(3600),
        },
        api: ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token_file: dir.join("var/api-token"),
        },
        outbound: OutboundConfig {
            from: "Inscription <noreply@verify.example.gouv.fr>".into(),
            target: OutboundTarget::Directory(dir.join("var/outbox")),
            dkim: None,
        },
        siem: SiemConfig {
            format: SiemFormat::Ecs,
            sinks: vec![SiemSink::Stdout],
            spool_max_events: 1000,
            spool_path: dir.join("var/spool"),
        },
    }
}

/// A challenge row for store tests.
pub fn new_challenge(
    id: &str,
    address: &str,
    token: &str,
    now: DateTime<Utc>,
    ttl_secs: i64,
) -> NewChallenge {
    NewChallenge {
        id: id.into(),
        address: address.into(),
        token_hash: gatekeeper::challenge::hash_token(token),
        session_code: "123456".into(),
        message_id: format!("{token}.x@verify.example.gouv.fr"),
        created_at: now,
        expires_at: now + chrono::Duration::seconds(ttl_secs),
    }
}
