//! The challenge store: challenges, their confirmations and the rate-limit counts.
//!
//! # Design decisions
//!
//! - **An async trait** ([`Store`]): every method returns `impl Future + Send`, so a network
//!   backend (PostgreSQL, SPEC §7) can be added later without blocking the runtime. The SQLite
//!   implementation ([`SqliteStore`]) runs reads on `spawn_blocking` and all writes on one
//!   dedicated writer thread.
//! - **One place chooses the backend**: [`open`] reads `[store]` and returns a [`DynStore`],
//!   the store behind the trait (see [`any`] for why it is a boxed-future wrapper and what it
//!   costs). Nothing else in the daemon names a concrete store.
//! - **Only the SHA-256 of a token** is kept ([`TokenHash`], built only by hashing a token
//!   and compared in constant time): a copy of the database does not let anyone answer a
//!   pending challenge. The challenge mail's Message-ID starts with the
//!   token, so only its tail is stored and the full id is rebuilt from the RCPT token
//!   ([`message_id`]).
//! - **Time is an argument.** Every method that depends on the clock takes `now`; `expired`
//!   is not stored but derived at read time ([`ChallengeRecord::status`]).
//! - **Conditional confirm.** [`Store::confirm`] changes a challenge only if it is still
//!   pending and unexpired at `now`, in one statement, so two concurrent deliveries can never
//!   both confirm. The loser learns what the winner stored ([`ConfirmOutcome::AlreadyConfirmed`])
//!   so the caller can recognise the redelivery of the same message (SPEC §4).
//! - **Atomic rate limits.** [`Store::create`] counts and inserts in one transaction, so
//!   concurrent requests cannot pass the per-address limits together.
//! - **Probes** (SPEC §10) are a table of their own: a probe answers no challenge, so no
//!   challenge query can ever see one (a probe address never confirms anything).
//! - **Errors** are all [`StoreError`], which keeps its cause (the SQLite or I/O error) and
//!   which the callers map to `store.unavailable` (a 4xx: the sender retries, I5).

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;

use crate::backend::Evidence;
use crate::reason::Reason;

pub mod any;
pub mod oidc;
pub mod outbox;
pub mod postgres;
pub mod sqlite;

pub use any::{Access, DynStore, StoreHealth, describe, local_dir, open};
pub use postgres::PostgresStore;
pub use sqlite::{SqliteOptions, SqliteStore};

/// SHA-256 of a token (the store never sees the token itself). Built only by hashing
/// ([`TokenHash::of`]) or, inside the crate, from what a store kept; compared in constant
/// time, so `==` on two hashes leaks nothing through timing.
#[derive(Clone, Copy)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// SHA-256 of a token as it appears in a recipient address (already lower-case there).
    pub fn of(token: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }

    /// A hash as a store kept it; `None` unless it is 32 bytes (corrupt data).
    pub(crate) fn from_stored(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The 32 bytes, for a store to keep.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for TokenHash {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for TokenHash {}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// A challenge's state as the API shows it (SPEC §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pending,
    Confirmed,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Confirmed => "confirmed",
            Status::Expired => "expired",
        }
    }
}

/// A challenge to insert.
#[derive(Clone, Debug)]
pub struct NewChallenge {
    pub id: String,
    /// The claimed address, canonical.
    pub address: String,
    pub token_hash: TokenHash,
    pub session_code: String,
    /// The challenge mail's Message-ID after its `<token>.` prefix (see [`message_id`]):
    /// the full Message-ID carries the token, which the store must not hold.
    pub message_id_tail: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The challenge mail's Message-ID (without angle brackets) from the token and the stored
/// tail: `<token>.<tail>`.
pub fn message_id(token: &str, tail: &str) -> String {
    format!("{token}.{tail}")
}

/// What a confirmation keeps (SPEC §4 "On accept", §6 `evidence`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmation {
    pub confirmed_at: DateTime<Utc>,
    pub evidence: Evidence,
    /// Message-ID of the confirming mail (compared on redelivery).
    pub message_id: Option<String>,
    /// From address of the confirming mail, canonical (compared on redelivery).
    pub from: String,
    /// The SMTP session that delivered it.
    pub session_id: String,
    /// Whether that session is known to have ended (set by [`Store::session_ended`]).
    pub session_ended: bool,
}

/// The latest refused reply to a challenge (SPEC §4 "Explanations", `last_rejection` in
/// `GET /v1/challenges/{id}`). The explanation is derived from the reason
/// ([`Reason::explanation`]), so only these two are stored: one nullable text column
/// `last_rejection` holding [`Rejection::to_stored`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub at: DateTime<Utc>,
}

impl Rejection {
    /// The stored form: `{"reason":"dkim.none","at":<unix millis>}` (plain JSON, so any
    /// backend can keep it in one text column).
    pub fn to_stored(&self) -> String {
        serde_json::json!({"reason": self.reason.as_str(), "at": self.at.timestamp_millis()})
            .to_string()
    }

    /// Read [`Rejection::to_stored`] back; anything else is corrupt data.
    pub fn from_stored(text: &str) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt("last_rejection".into());
        let v: serde_json::Value = serde_json::from_str(text).map_err(|_| corrupt())?;
        let reason = v
            .get("reason")
            .and_then(|r| r.as_str())
            .and_then(|r| r.parse::<Reason>().ok())
            .ok_or_else(corrupt)?;
        let at = v
            .get("at")
            .and_then(|a| a.as_i64())
            .and_then(DateTime::from_timestamp_millis)
            .ok_or_else(corrupt)?;
        Ok(Self { reason, at })
    }
}

/// How far a challenge's `created_at` may be ahead of the wall clock before it counts as
/// expired ([`ChallengeRecord::status`]): more than the seconds by which instances sharing a
/// store disagree, far less than a clock step worth noticing.
pub const CLOCK_STEP_SLACK: std::time::Duration = std::time::Duration::from_secs(300);

/// One stored challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChallengeRecord {
    pub id: String,
    pub address: String,
    pub token_hash: TokenHash,
    pub session_code: String,
    /// See [`NewChallenge::message_id_tail`].
    pub message_id_tail: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Permanent refusals of replies to this challenge.
    pub rejections: u32,
    /// The latest of those refusals, if any.
    pub last_rejection: Option<Rejection>,
    pub confirmation: Option<Confirmation>,
}

impl ChallengeRecord {
    /// `confirmed` once confirmed (whatever the time), else `expired` when the wall clock
    /// `now` is at or past `expires_at`, when a reply was already refused as `token.expired`,
    /// or when `created_at` is more than [`CLOCK_STEP_SLACK`] after `now`.
    ///
    /// The last two hold a challenge to its documented life when the wall clock steps back
    /// (README "Clocks"): once the daemon has told a sender "expired", a clock stepped back
    /// does not revive the challenge (the refusal is stored as `last_rejection`, so this
    /// needs no column of its own), and a challenge "born in the future" of `now` (the clock
    /// went back past its creation) ends instead of living `ttl` plus the step. The slack
    /// keeps instances sharing one PostgreSQL store whose clocks differ by seconds apart.
    pub fn status(&self, now: DateTime<Utc>) -> Status {
        let slack = chrono::Duration::from_std(CLOCK_STEP_SLACK).unwrap_or_default();
        if self.confirmation.is_some() {
            Status::Confirmed
        } else if self.expires_at <= now
            || self.created_at > now + slack
            || self
                .last_rejection
                .is_some_and(|r| r.reason == Reason::TokenExpired)
        {
            Status::Expired
        } else {
            Status::Pending
        }
    }
}

/// Confirmed challenges [`Store::confirmed_signers`] reads at most: enough to see every
/// selector a ministry rotated through, bounded so one command never reads a whole table.
pub const MAX_SIGNER_ROWS: u32 = 500;

/// A DKIM signer seen in a confirmation's evidence: the signing domain and the selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    pub domain: String,
    pub selector: String,
}

/// The distinct signers of evidence texts (JSON of [`Evidence`]), in order; texts that do not
/// parse, or name no signer, are skipped (a row of an older shape is not an error for a
/// read that only informs).
pub(crate) fn signers_of(evidence: impl IntoIterator<Item = String>) -> Vec<Signer> {
    let mut out: Vec<Signer> = Vec::new();
    for text in evidence {
        let Ok(e) = serde_json::from_str::<Evidence>(&text) else {
            continue;
        };
        if e.dkim_domain.is_empty() || e.dkim_selector.is_empty() {
            continue;
        }
        let s = Signer {
            domain: e.dkim_domain.to_ascii_lowercase(),
            selector: e.dkim_selector,
        };
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// A probe to insert (SPEC §10): an address anyone at a ministry may write to, to learn what
/// a confirmation from their mail system would get. No claimed address, no session code.
#[derive(Clone, Debug)]
pub struct NewProbe {
    pub id: String,
    pub token_hash: TokenHash,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One stored probe and its latest analysis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRecord {
    pub id: String,
    pub token_hash: TokenHash,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// How many mails were analysed (each one replaces the report).
    pub analyses: u32,
    pub analysed_at: Option<DateTime<Utc>>,
    /// The latest report, JSON written by the caller (opaque to the store).
    pub report: Option<String>,
}

impl ProbeRecord {
    /// A probe takes mail until `expires_at`, however many it already analysed.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }
}

/// Per-address limits checked atomically with the insert (`[confirm]`).
#[derive(Clone, Copy, Debug)]
pub struct RateLimits {
    /// `confirm.max_pending_per_address`
    pub max_pending: u32,
    /// `confirm.max_challenges_per_address_per_hour`
    pub max_per_hour: u32,
}

/// The result of [`Store::create`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// Nothing inserted: a limit was reached. The counts are those seen in the transaction.
    RateLimited {
        pending: u32,
        last_hour: u32,
    },
}

/// A request to confirm a challenge.
#[derive(Clone, Debug)]
pub struct ConfirmRequest {
    pub id: String,
    /// `session_ended` is ignored (always stored as false).
    pub confirmation: Confirmation,
    /// The challenge must be unexpired at this instant.
    pub now: DateTime<Utc>,
}

/// The result of [`Store::confirm`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// This request confirmed the challenge; the confirmation is durable (committed).
    Confirmed,
    /// Someone confirmed it before: what they stored.
    AlreadyConfirmed(Box<Confirmation>),
    /// Still pending but expired at `now`.
    Expired,
    /// No such challenge (never existed, or purged).
    NotFound,
}

/// A store failure: the database cannot be read or cannot commit (read-only file, full disk,
/// lock held past the busy timeout, writer gone). Always `store.unavailable`. The causes are
/// behind `Arc` because one failed group commit answers every job of its batch.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Database(#[source] Arc<rusqlite::Error>),
    /// PostgreSQL refused a statement, or the connection broke (database down, failover).
    #[error("PostgreSQL: {}", pg_detail(.0))]
    Postgres(#[source] Arc<tokio_postgres::Error>),
    /// No PostgreSQL connection could be had in time (database unreachable, pool exhausted).
    #[error("PostgreSQL connection: {0}")]
    Pool(#[source] Arc<deadpool_postgres::PoolError>),
    /// The database was locked and the operation did not wait (or waited its busy timeout).
    #[error("database busy: {0}")]
    Busy(#[source] Arc<rusqlite::Error>),
    /// A file, directory or thread the store needs could not be made.
    #[error("I/O error: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A read on the blocking pool did not finish (the task panicked or was cancelled).
    #[error("read task: {0}")]
    ReadTask(#[source] Arc<tokio::task::JoinError>),
    #[error("schema version {found} is newer than this program (knows {known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error(
        "schema version {found}, this program needs {known}: open the store read-write once to migrate it"
    )]
    SchemaTooOld { found: i64, known: i64 },
    /// Durability needs WAL (module docs of [`sqlite`]); the file system refused it.
    #[error("journal_mode is {0}, WAL required")]
    NoWal(String),
    /// Stored evidence that does not parse, or cannot be written.
    #[error("stored evidence: {0}")]
    Evidence(#[source] Arc<serde_json::Error>),
    /// A stored value outside its domain (a hash of the wrong length, an unknown status).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the store writer has stopped")]
    Closed,
    /// The store does not implement this operation (a test double, or a backend without the
    /// OpenID Provider's rows).
    #[error("not supported: {0}")]
    Unsupported(&'static str),
}

impl StoreError {
    /// An I/O failure on `what` (a path, a thread).
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source: Arc::new(source),
        }
    }
}

/// A driver error with what the server said: the driver's own text is only "db error" for
/// every refusal (a wrong password, a missing database), which tells an operator nothing.
fn pg_detail(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!(
            "{e}: {}: {} ({})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

impl StoreError {
    /// The reason code every store failure maps to.
    pub fn reason(&self) -> Reason {
        Reason::StoreUnavailable
    }
}

/// The challenge store. Implementations must make [`Store::confirm`] durable before its
/// future resolves (I3) and conditional (pending and unexpired) so that exactly one of
/// several concurrent confirmations wins.
pub trait Store: Send + Sync + 'static {
    /// Insert a challenge unless the address is past a limit (counted in the same
    /// transaction: pending and unexpired at `now`; created in the hour before `now`).
    fn create(
        &self,
        challenge: NewChallenge,
        limits: RateLimits,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send;

    fn get(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ChallengeRecord>, StoreError>> + Send;

    fn find_by_token_hash(
        &self,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<Option<ChallengeRecord>, StoreError>> + Send;

    /// Remove a challenge (e.g. its mail could not be sent). True if it existed.
    fn delete(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Conditional, durable confirmation (see [`ConfirmOutcome`]).
    fn confirm(
        &self,
        request: ConfirmRequest,
    ) -> impl Future<Output = Result<ConfirmOutcome, StoreError>> + Send;

    /// Count one more refused reply for a pending challenge and keep it as the last one;
    /// resolves after COMMIT.
    fn record_rejection(
        &self,
        id: &str,
        rejection: Rejection,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Count one more refused reply for a pending challenge **without waiting**: queued now,
    /// committed with the next group commit, seen by every later [`Store::get`]. Used on the
    /// SMTP path, where the `550` need not wait for a counter: the count is informational (a
    /// crash may lose the last ones), the refusal's audit event is the record (I4). A failure
    /// is logged.
    fn count_rejection(&self, id: &str, rejection: Rejection);

    /// Mark the confirmations delivered by this SMTP session as "session ended". Returns the
    /// number of challenges marked.
    fn session_ended(
        &self,
        session_id: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Delete every challenge (and every probe) whose `expires_at` is before `cutoff`. Returns
    /// how many challenges.
    fn purge(&self, cutoff: DateTime<Utc>) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Pending, unexpired challenges for an address at `now`.
    fn pending_count(
        &self,
        address: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// The distinct DKIM signers (`d=`, `s=`) of the evidence of confirmed challenges whose
    /// address is at exactly `domain`, newest confirmation first, read from at most
    /// [`MAX_SIGNER_ROWS`] of them (`gatekeeper domain-check`, SPEC §10). Read-only.
    fn confirmed_signers(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<Vec<Signer>, StoreError>> + Send;

    /// Whether the store answers right now (`/healthz`): a network store asks its database,
    /// a local one has nothing to ask (its failures show on each call).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(Ok(()))
    }

    /// Insert a probe unless the probes as a whole are past `limits` (counted in the same
    /// transaction: unexpired at `now`; created in the hour before `now`). Probes have no
    /// address, so the per-address limits of `[confirm]` apply to all probes together.
    fn create_probe(
        &self,
        probe: NewProbe,
        limits: RateLimits,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send;

    fn get_probe(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ProbeRecord>, StoreError>> + Send;

    fn find_probe_by_token_hash(
        &self,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<Option<ProbeRecord>, StoreError>> + Send;

    /// Replace the probe's report with `report` (JSON), set `analysed_at`, count one more
    /// analysis; durable when it resolves. False when there is no such probe.
    fn record_probe_analysis(
        &self,
        id: &str,
        report: String,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Write requests waiting to be committed (exposed in `/metrics`); 0 when not applicable.
    fn queue_depth(&self) -> usize {
        0
    }

    /// How the store's calls have gone so far (exposed in `/metrics`). Kept by [`DynStore`]
    /// around every call, so both backends report it the same way; a store used directly
    /// (the tests' doubles) reports no failure.
    fn health(&self) -> StoreHealth {
        StoreHealth::default()
    }

    /// Challenges created for an address at or after `since`.
    fn created_since(
        &self,
        address: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Mark every confirming session as ended. The daemon calls it once at start: no SMTP
    /// session of an earlier run is alive any more (a crash or SIGKILL never reached
    /// [`Store::session_ended`]), and without this mark the same message delivered again
    /// after its lost `250` would get `token.used` (a permanent 5xx) until
    /// `smtp.session_timeout` passed, instead of `250` (SPEC §4). With several instances on
    /// one store this also marks another instance's live sessions; the only effect is that a
    /// simultaneous duplicate of that very message (same Message-ID, From and token) is
    /// accepted again rather than refused, which is the idempotent answer anyway. Returns
    /// how many challenges were marked.
    fn end_open_sessions(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Write the rejection counts gathered by [`Store::count_rejection`] and wait for their
    /// commit (the daemon calls it at exit). A failure is logged. A store that writes each
    /// count at once has nothing to flush: the default does nothing.
    fn flush_rejections(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    // The OpenID Provider's rows (`store/oidc.rs`). A store without them refuses every call
    // (the defaults), so the provider answers `temporarily_unavailable` rather than lose a
    // flow: a store meant for `[oidc]` implements all five.

    /// Insert a flow (`version` 1) or replace version `n - 1` by version `n`; false when
    /// the row is not at that version (another save won) or a version 1 already exists.
    fn save_flow(
        &self,
        _flow: oidc::FlowRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async { Err(no_oidc()) }
    }

    fn get_flow(
        &self,
        _id: &str,
    ) -> impl Future<Output = Result<Option<oidc::FlowRecord>, StoreError>> + Send {
        async { Err(no_oidc()) }
    }

    fn insert_code(
        &self,
        _code: oidc::CodeRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Err(no_oidc()) }
    }

    /// Mark the code used and return it, at most once (see [`oidc::CodeTake`]).
    fn take_code(
        &self,
        _code_hash: [u8; 32],
    ) -> impl Future<Output = Result<oidc::CodeTake, StoreError>> + Send {
        async { Err(no_oidc()) }
    }

    /// Delete flows and codes whose `expires_at` is before `cutoff`. Returns how many.
    fn purge_oidc(
        &self,
        _cutoff: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        async { Ok(0) }
    }

    // The webhook outbox (`store/outbox.rs`, SPEC §11). A store without it writes no
    // deliveries (the defaults): a test double, or a store built before `[[webhook]]`.

    /// The `[[webhook]]` subscriptions whose rows every later confirm, rejection count and
    /// expiry sweep writes in its own transaction. Called once at start, before any write.
    fn set_webhooks(&self, _subscriptions: outbox::Subscriptions) {}

    /// Insert `challenge.expired` rows for up to `limit` challenges still pending and past
    /// `expires_at` at `now` that have none yet. Returns how many rows.
    fn enqueue_expired(
        &self,
        _now: DateTime<Utc>,
        _limit: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        async { Ok(0) }
    }

    /// Lease up to `limit` deliveries due at `now` until `lease_until` (module docs of
    /// [`outbox`]: the oldest undelivered row per challenge and endpoint, never one leased
    /// by someone else), counting one more attempt on each.
    fn claim_deliveries(
        &self,
        _now: DateTime<Utc>,
        _lease_until: DateTime<Utc>,
        _limit: u32,
    ) -> impl Future<Output = Result<Vec<outbox::Delivery>, StoreError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Record what became of a claimed delivery (by `seq`) at `now`; durable when it resolves.
    fn finish_delivery(
        &self,
        _seq: i64,
        _attempt: outbox::Attempt,
        _now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }

    /// Deliveries not yet delivered nor given up (exposed in `/metrics`).
    fn outbox_backlog(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        async { Ok(0) }
    }
}

fn no_oidc() -> StoreError {
    StoreError::Unsupported("this store does not keep OpenID Provider flows")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(created: i64, expires: i64, last: Option<Reason>) -> ChallengeRecord {
        let at = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default();
        ChallengeRecord {
            id: "c".into(),
            address: "a@b.gouv.fr".into(),
            token_hash: TokenHash::of("t"),
            session_code: "123456".into(),
            message_id_tail: "x".into(),
            created_at: at(created),
            expires_at: at(expires),
            rejections: u32::from(last.is_some()),
            last_rejection: last.map(|reason| Rejection { reason, at: at(0) }),
            confirmation: None,
        }
    }

    /// Row: created_at, expires_at, last refusal, `now` (seconds from one origin), status.
    /// README "Clocks": expiry by the wall clock, pinned by a `token.expired` answer, and a
    /// challenge "born in the future" (the clock went back past it) over.
    #[test]
    fn status_table() {
        let slack = CLOCK_STEP_SLACK.as_secs() as i64;
        let rows: &[(i64, i64, Option<Reason>, i64, Status)] = &[
            (0, 3600, None, 10, Status::Pending),
            (0, 3600, None, 3600, Status::Expired),
            (0, 3600, None, 7200, Status::Expired),
            // A refusal for another reason keeps it pending; token.expired pins it.
            (0, 3600, Some(Reason::DkimNone), 10, Status::Pending),
            (0, 3600, Some(Reason::TokenExpired), 10, Status::Expired),
            // The clock went back: within the slack it is still pending, past it over.
            (0, 3600, None, -slack, Status::Pending),
            (0, 3600, None, -slack - 1, Status::Expired),
            (0, 3600, None, -7200, Status::Expired),
        ];
        for (i, (created, expires, last, now, want)) in rows.iter().enumerate() {
            let r = record(*created, *expires, *last);
            let now = DateTime::from_timestamp(1_800_000_000 + now, 0).unwrap_or_default();
            assert_eq!(r.status(now), *want, "row {i}");
        }
    }
}
