//! Helpers of the challenge tests (`tests/store.rs`, `tests/api.rs`, `tests/app.rs`): a
//! complete `Config` for the corpus test world, a challenge row, and a store that is down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use chrono::{DateTime, Utc};
use gatekeeper::config::Config;
use gatekeeper::store::{
    ChallengeRecord, ConfirmOutcome, ConfirmRequest, CreateOutcome, NewChallenge, RateLimits,
    Store, StoreError, TokenHash,
};

/// The corpus world: confirm domain `verify.example.gouv.fr`, allowed `gouv.fr` (with
/// `denied.gouv.fr` denied), service `Tchap`, store, API token and outbox under `dir`.
pub fn config(dir: &Path) -> Config {
    let d = dir.display();
    let text = format!(
        r#"
[smtp]
listen = ["127.0.0.1:2525"]
hostname = "verify.example.gouv.fr"
session_timeout = "10m"

[confirm]
domain = "verify.example.gouv.fr"
local_prefix = "confirm"
challenge_ttl = "24h"
max_pending_per_address = 5
max_challenges_per_address_per_hour = 10
service_name = "Tchap"

[policy]
allowed_domains = ["gouv.fr"]
denied_domains = ["denied.gouv.fr"]

[store]
path = "{d}/var/gatekeeper.db"
purge_interval = "1h"

[api]
listen = "127.0.0.1:8025"
token_file = "{d}/var/api-token"

[outbound]
from = "Inscription <noreply@verify.example.gouv.fr>"
directory = "{d}/var/outbox"

[siem]
format = "ecs"
spool_path = "{d}/var/siem-spool.db"
[[siem.sink]]
type = "stdout"
"#
    );
    Config::from_toml_str(&text, "<challenge tests>").expect("test config is valid")
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
        token_hash: TokenHash::of(token),
        session_code: "123456".into(),
        message_id_tail: "x@verify.example.gouv.fr".into(),
        created_at: now,
        expires_at: now + chrono::Duration::seconds(ttl_secs),
    }
}

/// A store that cannot be read at all (test double: every call fails).
pub struct DownStore;

fn down<T>() -> Result<T, StoreError> {
    Err(StoreError::io(
        "disk",
        std::io::Error::other("disk I/O error"),
    ))
}

impl Store for DownStore {
    async fn create(
        &self,
        _: NewChallenge,
        _: RateLimits,
        _: DateTime<Utc>,
    ) -> Result<CreateOutcome, StoreError> {
        down()
    }
    async fn get(&self, _: &str) -> Result<Option<ChallengeRecord>, StoreError> {
        down()
    }
    async fn find_by_token_hash(
        &self,
        _: &TokenHash,
    ) -> Result<Option<ChallengeRecord>, StoreError> {
        down()
    }
    async fn delete(&self, _: &str) -> Result<bool, StoreError> {
        down()
    }
    async fn confirm(&self, _: ConfirmRequest) -> Result<ConfirmOutcome, StoreError> {
        down()
    }
    async fn record_rejection(
        &self,
        _: &str,
        _: gatekeeper::store::Rejection,
    ) -> Result<(), StoreError> {
        down()
    }
    fn count_rejection(&self, _: &str, _: gatekeeper::store::Rejection) {}
    async fn session_ended(&self, _: &str) -> Result<u64, StoreError> {
        down()
    }
    async fn purge(&self, _: DateTime<Utc>) -> Result<u64, StoreError> {
        down()
    }
    async fn pending_count(&self, _: &str, _: DateTime<Utc>) -> Result<u32, StoreError> {
        down()
    }
    async fn confirmed_signers(
        &self,
        _: &str,
    ) -> Result<Vec<gatekeeper::store::Signer>, StoreError> {
        down()
    }
    async fn created_since(&self, _: &str, _: DateTime<Utc>) -> Result<u32, StoreError> {
        down()
    }
    async fn end_open_sessions(&self) -> Result<u64, StoreError> {
        down()
    }
    async fn create_probe(
        &self,
        _: gatekeeper::store::NewProbe,
        _: RateLimits,
        _: DateTime<Utc>,
    ) -> Result<CreateOutcome, StoreError> {
        down()
    }
    async fn get_probe(
        &self,
        _: &str,
    ) -> Result<Option<gatekeeper::store::ProbeRecord>, StoreError> {
        down()
    }
    async fn find_probe_by_token_hash(
        &self,
        _: &TokenHash,
    ) -> Result<Option<gatekeeper::store::ProbeRecord>, StoreError> {
        down()
    }
    async fn record_probe_analysis(
        &self,
        _: &str,
        _: String,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        down()
    }
}
