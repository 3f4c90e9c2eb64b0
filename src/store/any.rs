//! The store the daemon runs on, whichever backend `[store]` names: [`open`] is the one place
//! that chooses it, [`DynStore`] is what everyone else holds.
//!
//! # Adding a backend
//!
//! One new module beside [`super::sqlite`] implementing [`Store`], one variant in
//! `StoreConfig` (`store.url` beside `store.path`), its arm in [`open`] (and in [`describe`]
//! and [`local_dir`], which say how to name it and whether it needs a directory). Nothing
//! else names a concrete store or reads `[store]`: the daemon, the CLI and the API take a
//! [`DynStore`].
//!
//! # Why boxed futures, and what they cost
//!
//! [`Store`]'s methods return `impl Future`, which keeps the trait cheap for generic code
//! (the tests' doubles, `App<S, V>`) but is not object-safe. `ErasedStore` is the same
//! trait with each future boxed, implemented for every `Store`; [`DynStore`] holds one in a
//! `Box` and implements `Store` again by forwarding. The price is one heap allocation and
//! one indirect call per store call: tens of nanoseconds, against the ~5 µs of the SMTP path's
//! cheapest call (a point read from SQLite's page cache, `examples/store_throughput.rs`) and
//! the milliseconds of a group commit. The alternative, an enum with one arm per backend,
//! would avoid the allocation but make every new backend touch every method.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use chrono::{DateTime, Utc};

use super::oidc::{CodeRecord, CodeTake, FlowRecord};
use super::outbox::{Attempt, Delivery, Subscriptions};
use super::{
    ChallengeRecord, ConfirmOutcome, ConfirmRequest, CreateOutcome, NewChallenge, NewProbe,
    PostgresStore, ProbeRecord, RateLimits, Rejection, Signer, SqliteOptions, SqliteStore, Store,
    StoreError, TokenHash,
};
use crate::config::StoreConfig;

/// A boxed store future.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How [`open`] opens the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The daemon and `challenge new`: migrates the schema if needed.
    ReadWrite,
    /// `challenge show`, `verify`: every write fails; the schema must be current.
    ReadOnly,
}

/// Open the store `[store]` names. Blocking (opens files, migrates): call at start-up or from
/// `spawn_blocking`.
pub fn open(config: &StoreConfig, access: Access) -> Result<DynStore, StoreError> {
    // The one match on the backend: `store.url` (PostgreSQL) or `store.path` (SQLite).
    if let Some(pg) = &config.postgres {
        return Ok(DynStore::new(PostgresStore::open(
            pg,
            access == Access::ReadOnly,
        )?));
    }
    let options = SqliteOptions {
        read_only: access == Access::ReadOnly,
        ..SqliteOptions::default()
    };
    Ok(DynStore::new(SqliteStore::open(&config.path, options)?))
}

/// How the store is named in logs and errors.
pub fn describe(config: &StoreConfig) -> String {
    match &config.postgres {
        Some(pg) => pg.url.clone(),
        None => config.path.display().to_string(),
    }
}

/// The directory a local store writes in, created at start (`None` for a network store).
pub fn local_dir(config: &StoreConfig) -> Option<&Path> {
    if config.postgres.is_some() {
        return None;
    }
    config.path.parent()
}

/// [`Store`] with boxed futures, so it can sit behind `dyn` (module docs).
trait ErasedStore: Send + Sync + 'static {
    fn create(
        &self,
        challenge: NewChallenge,
        limits: RateLimits,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<CreateOutcome, StoreError>>;
    fn get<'a>(&'a self, id: &'a str)
    -> BoxFuture<'a, Result<Option<ChallengeRecord>, StoreError>>;
    fn find_by_token_hash<'a>(
        &'a self,
        hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<ChallengeRecord>, StoreError>>;
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn confirm(&self, request: ConfirmRequest)
    -> BoxFuture<'_, Result<ConfirmOutcome, StoreError>>;
    fn record_rejection<'a>(
        &'a self,
        id: &'a str,
        rejection: Rejection,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn count_rejection(&self, id: &str, rejection: Rejection);
    fn session_ended<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<u64, StoreError>>;
    fn purge(&self, cutoff: DateTime<Utc>) -> BoxFuture<'_, Result<u64, StoreError>>;
    fn pending_count<'a>(
        &'a self,
        address: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<u32, StoreError>>;
    fn confirmed_signers<'a>(
        &'a self,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Signer>, StoreError>>;
    fn queue_depth(&self) -> usize;
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    fn created_since<'a>(
        &'a self,
        address: &'a str,
        since: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<u32, StoreError>>;
    fn end_open_sessions(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    fn flush_rejections(&self) -> BoxFuture<'_, ()>;
    fn save_flow(&self, flow: FlowRecord) -> BoxFuture<'_, Result<bool, StoreError>>;
    fn get_flow<'a>(&'a self, id: &'a str)
    -> BoxFuture<'a, Result<Option<FlowRecord>, StoreError>>;
    fn insert_code(&self, code: CodeRecord) -> BoxFuture<'_, Result<(), StoreError>>;
    fn take_code(&self, hash: [u8; 32]) -> BoxFuture<'_, Result<CodeTake, StoreError>>;
    fn purge_oidc(&self, cutoff: DateTime<Utc>) -> BoxFuture<'_, Result<u64, StoreError>>;
    fn set_webhooks(&self, subscriptions: Subscriptions);
    fn enqueue_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;
    fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>>;
    fn finish_delivery(
        &self,
        seq: i64,
        attempt: Attempt,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    fn outbox_backlog(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    fn create_probe(
        &self,
        probe: NewProbe,
        limits: RateLimits,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<CreateOutcome, StoreError>>;
    fn get_probe<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ProbeRecord>, StoreError>>;
    fn find_probe_by_token_hash<'a>(
        &'a self,
        hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<ProbeRecord>, StoreError>>;
    fn record_probe_analysis<'a>(
        &'a self,
        id: &'a str,
        report: String,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
}

impl<S: Store> ErasedStore for S {
    fn create(
        &self,
        challenge: NewChallenge,
        limits: RateLimits,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<CreateOutcome, StoreError>> {
        Box::pin(Store::create(self, challenge, limits, now))
    }
    fn get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ChallengeRecord>, StoreError>> {
        Box::pin(Store::get(self, id))
    }
    fn find_by_token_hash<'a>(
        &'a self,
        hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<ChallengeRecord>, StoreError>> {
        Box::pin(Store::find_by_token_hash(self, hash))
    }
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(Store::delete(self, id))
    }
    fn confirm(
        &self,
        request: ConfirmRequest,
    ) -> BoxFuture<'_, Result<ConfirmOutcome, StoreError>> {
        Box::pin(Store::confirm(self, request))
    }
    fn record_rejection<'a>(
        &'a self,
        id: &'a str,
        rejection: Rejection,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Store::record_rejection(self, id, rejection))
    }
    fn count_rejection(&self, id: &str, rejection: Rejection) {
        Store::count_rejection(self, id, rejection);
    }
    fn session_ended<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(Store::session_ended(self, session_id))
    }
    fn purge(&self, cutoff: DateTime<Utc>) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(Store::purge(self, cutoff))
    }
    fn pending_count<'a>(
        &'a self,
        address: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<u32, StoreError>> {
        Box::pin(Store::pending_count(self, address, now))
    }
    fn confirmed_signers<'a>(
        &'a self,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Signer>, StoreError>> {
        Box::pin(Store::confirmed_signers(self, domain))
    }
    fn queue_depth(&self) -> usize {
        Store::queue_depth(self)
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(Store::ping(self))
    }
    fn created_since<'a>(
        &'a self,
        address: &'a str,
        since: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<u32, StoreError>> {
        Box::pin(Store::created_since(self, address, since))
    }
    fn end_open_sessions(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(Store::end_open_sessions(self))
    }
    fn flush_rejections(&self) -> BoxFuture<'_, ()> {
        Box::pin(Store::flush_rejections(self))
    }
    fn save_flow(&self, flow: FlowRecord) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(Store::save_flow(self, flow))
    }
    fn get_flow<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<FlowRecord>, StoreError>> {
        Box::pin(Store::get_flow(self, id))
    }
    fn insert_code(&self, code: CodeRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(Store::insert_code(self, code))
    }
    fn take_code(&self, hash: [u8; 32]) -> BoxFuture<'_, Result<CodeTake, StoreError>> {
        Box::pin(Store::take_code(self, hash))
    }
    fn purge_oidc(&self, cutoff: DateTime<Utc>) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(Store::purge_oidc(self, cutoff))
    }
    fn set_webhooks(&self, subscriptions: Subscriptions) {
        Store::set_webhooks(self, subscriptions)
    }
    fn enqueue_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(Store::enqueue_expired(self, now, limit))
    }
    fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        Box::pin(Store::claim_deliveries(self, now, lease_until, limit))
    }
    fn finish_delivery(
        &self,
        seq: i64,
        attempt: Attempt,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(Store::finish_delivery(self, seq, attempt, now))
    }
    fn outbox_backlog(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(Store::outbox_backlog(self))
    }
    fn create_probe(
        &self,
        probe: NewProbe,
        limits: RateLimits,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<CreateOutcome, StoreError>> {
        Box::pin(Store::create_probe(self, probe, limits, now))
    }
    fn get_probe<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ProbeRecord>, StoreError>> {
        Box::pin(Store::get_probe(self, id))
    }
    fn find_probe_by_token_hash<'a>(
        &'a self,
        hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<ProbeRecord>, StoreError>> {
        Box::pin(Store::find_probe_by_token_hash(self, hash))
    }
    fn record_probe_analysis<'a>(
        &'a self,
        id: &'a str,
        report: String,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(Store::record_probe_analysis(self, id, report, at))
    }
}

/// Any [`Store`], chosen at open. Shared as `Arc<DynStore>`, like any other store.
pub struct DynStore(Box<dyn ErasedStore>);

impl DynStore {
    pub fn new(store: impl Store) -> Self {
        Self(Box::new(store))
    }
}

impl std::fmt::Debug for DynStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DynStore")
    }
}

// The methods with a borrowed argument forward through an `async` block: its type names both
// borrows, where the boxed future's one lifetime would be their intersection, which an
// `impl Future` in return position cannot name.
impl Store for DynStore {
    fn create(
        &self,
        challenge: NewChallenge,
        limits: RateLimits,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send {
        self.0.create(challenge, limits, now)
    }
    fn get(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ChallengeRecord>, StoreError>> + Send {
        let store = &self.0;
        async move { store.get(id).await }
    }
    fn find_by_token_hash(
        &self,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<Option<ChallengeRecord>, StoreError>> + Send {
        let store = &self.0;
        async move { store.find_by_token_hash(hash).await }
    }
    fn delete(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let store = &self.0;
        async move { store.delete(id).await }
    }
    fn confirm(
        &self,
        request: ConfirmRequest,
    ) -> impl Future<Output = Result<ConfirmOutcome, StoreError>> + Send {
        self.0.confirm(request)
    }
    fn record_rejection(
        &self,
        id: &str,
        rejection: Rejection,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let store = &self.0;
        async move { store.record_rejection(id, rejection).await }
    }
    fn count_rejection(&self, id: &str, rejection: Rejection) {
        self.0.count_rejection(id, rejection);
    }
    fn session_ended(
        &self,
        session_id: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let store = &self.0;
        async move { store.session_ended(session_id).await }
    }
    fn purge(&self, cutoff: DateTime<Utc>) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.0.purge(cutoff)
    }
    fn pending_count(
        &self,
        address: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send {
        let store = &self.0;
        async move { store.pending_count(address, now).await }
    }
    fn confirmed_signers(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<Vec<Signer>, StoreError>> + Send {
        let store = &self.0;
        async move { store.confirmed_signers(domain).await }
    }
    fn queue_depth(&self) -> usize {
        self.0.queue_depth()
    }
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.0.ping()
    }
    fn created_since(
        &self,
        address: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send {
        let store = &self.0;
        async move { store.created_since(address, since).await }
    }
    fn end_open_sessions(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.0.end_open_sessions()
    }
    fn flush_rejections(&self) -> impl Future<Output = ()> + Send {
        self.0.flush_rejections()
    }
    fn save_flow(&self, flow: FlowRecord) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.0.save_flow(flow)
    }
    fn get_flow(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<FlowRecord>, StoreError>> + Send {
        let store = &self.0;
        async move { store.get_flow(id).await }
    }
    fn insert_code(&self, code: CodeRecord) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.0.insert_code(code)
    }
    fn take_code(
        &self,
        hash: [u8; 32],
    ) -> impl Future<Output = Result<CodeTake, StoreError>> + Send {
        self.0.take_code(hash)
    }
    fn purge_oidc(
        &self,
        cutoff: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.0.purge_oidc(cutoff)
    }
    fn create_probe(
        &self,
        probe: NewProbe,
        limits: RateLimits,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send {
        self.0.create_probe(probe, limits, now)
    }
    fn get_probe(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ProbeRecord>, StoreError>> + Send {
        let store = &self.0;
        async move { store.get_probe(id).await }
    }
    fn find_probe_by_token_hash(
        &self,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<Option<ProbeRecord>, StoreError>> + Send {
        let store = &self.0;
        async move { store.find_probe_by_token_hash(hash).await }
    }
    fn record_probe_analysis(
        &self,
        id: &str,
        report: String,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let store = &self.0;
        async move { store.record_probe_analysis(id, report, at).await }
    }
    fn set_webhooks(&self, subscriptions: Subscriptions) {
        self.0.set_webhooks(subscriptions)
    }
    fn enqueue_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.0.enqueue_expired(now, limit)
    }
    fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send {
        self.0.claim_deliveries(now, lease_until, limit)
    }
    fn finish_delivery(
        &self,
        seq: i64,
        attempt: Attempt,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.0.finish_delivery(seq, attempt, now)
    }
    fn outbox_backlog(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.0.outbox_backlog()
    }
}
