//! The embedded SQLite store (`store.path`).
//!
//! # Durability and throughput
//!
//! The database runs in WAL mode with `synchronous=FULL`: a transaction is on disk when
//! `COMMIT` returns (I3). An fsync per confirmation would cap throughput at the disk's fsync
//! rate, so every write goes through **one writer thread that group-commits**: it takes the
//! first queued job, then every job already waiting (up to [`MAX_BATCH`]), runs each inside its
//! own `SAVEPOINT` (a failing job does not spoil its neighbours) within one `BEGIN IMMEDIATE`
//! transaction, commits once, and only then answers each caller. While one commit is syncing,
//! the next batch queues up, so the batch size grows with the load. [`SqliteStore::commits`]
//! counts the commits (tests prove that N concurrent confirmations take fewer than N).
//!
//! If `BEGIN` or `COMMIT` fails (read-only file, full disk, a lock held by another process
//! past the busy timeout), the transaction is rolled back and every job of the batch gets the
//! error: nobody is told "confirmed" unless the commit succeeded.
//!
//! Reads use a small pool of connections marked `query_only`; WAL lets them proceed while
//! the writer commits. The two point reads of the SMTP path ([`Store::get`] by primary key,
//! [`Store::find_by_token_hash`] by a unique index) run **on the calling task**: from
//! SQLite's page cache they take about 5 µs (`cargo run --release --example
//! store_throughput` prints the mean and the slowest), less than the two thread hand-offs
//! of the blocking pool, which were the largest item of the reject path's profile (README,
//! "Performance"). They never wait for a lock: in WAL mode a reader is not blocked by a
//! writer, not even another process's `BEGIN EXCLUSIVE` (tested); the rare cases that do
//! lock readers out (another process recovering the WAL after a crash, or in exclusive
//! locking mode) meet connections without a busy timeout and fail at once as
//! `store.unavailable` (a `4xx` the sender retries; `503` on the API) rather than hold a
//! runtime thread. The other reads (counts for the rate limits) run on the blocking pool
//! with the configured busy timeout.
//!
//! Rejection counts ([`Store::count_rejection`]) are not awaited by the SMTP path and are
//! gathered in memory: the first count after a flush schedules one flush job
//! [`REJECTION_FLUSH`] later, which adds up every count gathered by then in one write. So a
//! flood of refused replies costs a commit every [`REJECTION_FLUSH`], not one per reply (the
//! reject path's profile, README "Performance"); a crash loses at most that much of an
//! informational counter (the audit events are the record, I4).
//!
//! Read-your-writes: [`Store::get`] first queues the gathered counts and waits for every
//! write queued before it (an empty job through the writer), so a count shows in the next
//! `get`.
//!
//! # Files
//!
//! - `writer`: the writer thread and its group commit.
//! - `sql`: every statement on the `challenges` table, each a function of a connection.
//! - `schema`: migrations and the pragmas of a connection (times are Unix milliseconds,
//!   UTC).
//! - `rows`: a row as SQLite returns it, converted with checks into a record.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use tokio::sync::mpsc;

use super::outbox::{Attempt, Delivery, Subscriptions};
use super::{
    ChallengeRecord, ConfirmOutcome, ConfirmRequest, CreateOutcome, NewChallenge, NewProbe,
    ProbeRecord, RateLimits, Rejection, Signer, Store, StoreError, TokenHash,
};
use crate::lock;

mod oidc;
mod outbox;
mod probes;
mod rows;
mod schema;
mod sql;
mod writer;

pub use writer::MAX_BATCH;
use writer::{Job, QUEUE_DEPTH};

/// The schema version this program writes (its number of migrations), for a tool that reads
/// a store file without opening it as a store (`gatekeeper store migrate`, which must not
/// migrate the file it copies from).
pub fn schema_version() -> i64 {
    schema::known_version()
}

/// Idle read connections kept open. Every RCPT and every DATA reads once; with four kept, 20
/// concurrent sessions opened (and parsed the schema of) a new connection for most reads and
/// closed it again (bench/run.sh profile). 32 covers the concurrency the blocking pool sees.
const MAX_IDLE_READERS: usize = 32;
/// How long rejection counts gather before one job writes them (module docs).
pub const REJECTION_FLUSH: Duration = Duration::from_secs(1);

/// Opening options.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// How long a statement waits for a lock held by another connection or process before
    /// failing (then `store.unavailable`).
    pub busy_timeout: Duration,
    /// Open without write access: every write fails. For `gatekeeper challenge show` and for
    /// tests of the "cannot commit" path (root ignores file permissions, so a read-only
    /// open is the reliable way to get a real SQLite write failure).
    pub read_only: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            read_only: false,
        }
    }
}

/// Rejection counts gathering for the next flush.
#[derive(Default)]
struct Gathered {
    /// By challenge id: how many refusals, and the latest.
    counts: HashMap<String, (u32, Rejection)>,
    /// A flush is scheduled and has not yet been handed to the writer.
    scheduled: bool,
}

struct Inner {
    path: PathBuf,
    options: SqliteOptions,
    /// Read connections for the blocking pool (busy timeout as configured).
    readers: Mutex<Vec<Connection>>,
    /// Read connections for point reads on the calling task, and the options they are
    /// opened with (`options` without a busy timeout).
    inline_readers: Mutex<Vec<Connection>>,
    inline_options: SqliteOptions,
    /// Rejection counts not yet handed to the writer, by challenge id.
    rejections: Mutex<Gathered>,
    commits: Arc<AtomicU64>,
    /// The `[[webhook]]` subscriptions (see [`Store::set_webhooks`]).
    webhooks: Mutex<Subscriptions>,
}

/// The SQLite [`Store`]. Cheap to clone; the writer thread stops when the last clone is
/// dropped.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    writer: mpsc::Sender<Job>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl SqliteStore {
    /// Open (creating the file and its parent directory) and migrate. Blocking: call at
    /// start-up or from `spawn_blocking`.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        if !options.read_only
            && let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::io(parent.display().to_string(), e))?;
        }
        let conn = schema::open_connection(path, &options, true)?;
        if options.read_only {
            schema::check_version(&conn)?;
        } else {
            schema::migrate(&conn, options.busy_timeout)?;
        }
        let commits = Arc::new(AtomicU64::new(0));
        let writer = writer::spawn(conn, Arc::clone(&commits))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                inline_options: SqliteOptions {
                    busy_timeout: Duration::ZERO,
                    ..options.clone()
                },
                options,
                readers: Mutex::new(Vec::new()),
                inline_readers: Mutex::new(Vec::new()),
                rejections: Mutex::new(Gathered::default()),
                commits,
                webhooks: Mutex::new(Arc::from(Vec::new())),
            }),
            writer,
        })
    }

    fn subscriptions(&self) -> Subscriptions {
        lock(&self.inner.webhooks).clone()
    }

    /// Successful commits so far (each may have carried many jobs).
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Run `f` inside the next group commit; resolves after COMMIT.
    fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<R, StoreError>> + Send + 'static {
        writer::submit(&self.writer, f)
    }

    /// A point read on the calling task, never waiting for a lock (see the module docs).
    fn read_point<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<R, StoreError>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        async move { with_pooled(&inner.inline_readers, &inner.path, &inner.inline_options, f) }
    }

    /// Run `f` on a pooled read connection on the blocking pool.
    fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<R, StoreError>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        async move {
            tokio::task::spawn_blocking(move || {
                with_pooled(&inner.readers, &inner.path, &inner.options, f)
            })
            .await
            .map_err(|e| StoreError::ReadTask(Arc::new(e)))?
        }
    }

    /// Hand the gathered rejection counts to the writer (one job for all of them) and wait
    /// for their commit. If the write transaction cannot begin (a lock held past the busy
    /// timeout) the job never takes them: they stay gathered for the next flush. If it fails
    /// after taking them (the commit fails: a full disk), they are lost, and logged.
    fn flush_gathered(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        // From here, a new count schedules a new flush; what this job does not take (it
        // could not run) waits for that one or for the next `get`.
        let counted = {
            let mut gathered = lock(&self.inner.rejections);
            gathered.scheduled = false;
            !gathered.counts.is_empty()
        };
        let inner = Arc::clone(&self.inner);
        let write = self.write(move |conn| {
            let pending = std::mem::take(&mut lock(&inner.rejections).counts);
            let subs = lock(&inner.webhooks).clone();
            for (id, (n, last)) in &pending {
                outbox::add_rejections(conn, id, *n, last, &subs)?;
            }
            Ok(pending.len())
        });
        async move {
            // With nothing counted this was only a barrier: its failure (a read-only store)
            // is not worth a warning.
            if let Err(e) = write.await
                && counted
            {
                tracing::warn!(error = %e, "could not count rejections");
            }
        }
    }
}

/// Run `f` on a read connection from `pool` (a new one opened with `options` when the pool
/// is empty), then give it back.
fn with_pooled<R>(
    pool: &Mutex<Vec<Connection>>,
    path: &Path,
    options: &SqliteOptions,
    f: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    let conn = match pop(pool) {
        Some(c) => c,
        None => schema::open_connection(path, options, false)?,
    };
    let result = f(&conn);
    push(pool, conn);
    result
}

/// An idle read connection from `pool`, if any.
fn pop(pool: &Mutex<Vec<Connection>>) -> Option<Connection> {
    lock(pool).pop()
}

/// Give a read connection back to `pool` (closed when the pool is full).
fn push(pool: &Mutex<Vec<Connection>>, conn: Connection) {
    let mut pool = lock(pool);
    if pool.len() < MAX_IDLE_READERS {
        pool.push(conn);
    }
}

impl Store for SqliteStore {
    /// Jobs waiting for the writer.
    fn queue_depth(&self) -> usize {
        QUEUE_DEPTH.saturating_sub(self.writer.capacity())
    }

    fn save_flow(
        &self,
        flow: super::oidc::FlowRecord,
    ) -> impl std::future::Future<Output = Result<bool, StoreError>> + Send {
        self.oidc_save_flow(flow)
    }

    fn get_flow(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Option<super::oidc::FlowRecord>, StoreError>> + Send
    {
        self.oidc_get_flow(id)
    }

    fn insert_code(
        &self,
        code: super::oidc::CodeRecord,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        self.oidc_insert_code(code)
    }

    fn take_code(
        &self,
        hash: [u8; 32],
    ) -> impl std::future::Future<Output = Result<super::oidc::CodeTake, StoreError>> + Send {
        self.oidc_take_code(hash)
    }

    fn purge_oidc(
        &self,
        cutoff: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<u64, StoreError>> + Send {
        self.oidc_purge(cutoff)
    }

    fn create(
        &self,
        c: NewChallenge,
        limits: RateLimits,
        now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<CreateOutcome, StoreError>> + Send {
        self.write(move |conn| sql::create(conn, &c, limits, now))
    }

    fn get(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Option<ChallengeRecord>, StoreError>> + Send {
        let id = id.to_owned();
        // Read-your-writes: the gathered counts and what was queued before this call are
        // committed first. A failed barrier (read-only store, writer gone) is not an error
        // for a read.
        let barrier = (!self.inner.options.read_only).then(|| self.flush_gathered());
        let read = self.read_point(move |conn| sql::by_id(conn, &id));
        async move {
            if let Some(barrier) = barrier {
                barrier.await;
            }
            read.await
        }
    }

    fn find_by_token_hash(
        &self,
        hash: &TokenHash,
    ) -> impl std::future::Future<Output = Result<Option<ChallengeRecord>, StoreError>> + Send {
        let hash = *hash;
        self.read_point(move |conn| sql::by_token_hash(conn, &hash))
    }

    fn delete(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<bool, StoreError>> + Send {
        let id = id.to_owned();
        self.write(move |conn| sql::delete(conn, &id))
    }

    fn confirm(
        &self,
        req: ConfirmRequest,
    ) -> impl std::future::Future<Output = Result<ConfirmOutcome, StoreError>> + Send {
        let subs = self.subscriptions();
        let inner = Arc::clone(&self.inner);
        self.write(move |conn| {
            // This challenge's refusals still gathering are written first, in the same
            // transaction: their count and their `challenge.rejected` come before the
            // confirmation (a pending-only update after it would drop them).
            let gathered = lock(&inner.rejections).counts.remove(&req.id);
            if let Some((n, last)) = gathered {
                outbox::add_rejections(conn, &req.id, n, &last, &subs)?;
            }
            outbox::confirm(conn, &req, &subs)
        })
    }

    fn record_rejection(
        &self,
        id: &str,
        rejection: Rejection,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        let id = id.to_owned();
        let subs = self.subscriptions();
        self.write(move |conn| outbox::add_rejections(conn, &id, 1, &rejection, &subs))
    }

    fn count_rejection(&self, id: &str, rejection: Rejection) {
        let handle = {
            let mut gathered = lock(&self.inner.rejections);
            let entry = gathered
                .counts
                .entry(id.to_owned())
                .or_insert((0, rejection));
            entry.0 = entry.0.saturating_add(1);
            // Refusals of one challenge arrive in time order; keep the latest.
            if rejection.at >= entry.1.at {
                entry.1 = rejection;
            }
            if gathered.scheduled {
                return;
            }
            // Outside a runtime no timer can run: the next `get` or flush writes the count.
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                return;
            };
            gathered.scheduled = true;
            handle
        };
        let store = self.clone();
        handle.spawn(async move {
            tokio::time::sleep(REJECTION_FLUSH).await;
            store.flush_gathered().await;
        });
    }

    fn session_ended(
        &self,
        session_id: &str,
    ) -> impl std::future::Future<Output = Result<u64, StoreError>> + Send {
        let sid = session_id.to_owned();
        self.write(move |conn| sql::session_ended(conn, &sid))
    }

    fn purge(
        &self,
        cutoff: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<u64, StoreError>> + Send {
        // Probes expire with the challenges, in the same write (module docs of `probes`).
        self.write(move |conn| {
            probes::purge(conn, cutoff)?;
            outbox::purge(conn, cutoff)?;
            sql::purge(conn, cutoff)
        })
    }

    fn pending_count(
        &self,
        address: &str,
        now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<u32, StoreError>> + Send {
        let address = address.to_owned();
        self.read(move |conn| sql::pending_count(conn, &address, now.timestamp_millis()))
    }

    fn confirmed_signers(
        &self,
        domain: &str,
    ) -> impl std::future::Future<Output = Result<Vec<Signer>, StoreError>> + Send {
        let at = format!("@{domain}");
        self.read(move |conn| sql::confirmed_signers(conn, &at))
    }

    fn created_since(
        &self,
        address: &str,
        since: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<u32, StoreError>> + Send {
        let address = address.to_owned();
        self.read(move |conn| sql::created_since(conn, &address, since.timestamp_millis()))
    }

    fn end_open_sessions(
        &self,
    ) -> impl std::future::Future<Output = Result<u64, StoreError>> + Send {
        self.write(sql::end_open_sessions)
    }

    fn flush_rejections(&self) -> impl std::future::Future<Output = ()> + Send {
        self.flush_gathered()
    }

    fn create_probe(
        &self,
        probe: NewProbe,
        limits: RateLimits,
        now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<CreateOutcome, StoreError>> + Send {
        self.write(move |conn| probes::create(conn, &probe, limits, now))
    }

    fn get_probe(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Option<ProbeRecord>, StoreError>> + Send {
        let id = id.to_owned();
        self.read_point(move |conn| probes::by_id(conn, &id))
    }

    fn find_probe_by_token_hash(
        &self,
        hash: &TokenHash,
    ) -> impl std::future::Future<Output = Result<Option<ProbeRecord>, StoreError>> + Send {
        let hash = *hash;
        self.read_point(move |conn| probes::by_token_hash(conn, &hash))
    }

    fn record_probe_analysis(
        &self,
        id: &str,
        report: String,
        at: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<bool, StoreError>> + Send {
        let id = id.to_owned();
        self.write(move |conn| probes::record_analysis(conn, &id, &report, at))
    }

    fn set_webhooks(&self, subscriptions: Subscriptions) {
        *lock(&self.inner.webhooks) = subscriptions;
    }

    fn enqueue_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> impl std::future::Future<Output = Result<u64, StoreError>> + Send {
        let subs = self.subscriptions();
        self.write(move |conn| outbox::enqueue_expired(conn, &subs, now, limit))
    }

    fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> impl std::future::Future<Output = Result<Vec<Delivery>, StoreError>> + Send {
        self.write(move |conn| outbox::claim(conn, now, lease_until, limit))
    }

    fn finish_delivery(
        &self,
        seq: i64,
        attempt: Attempt,
        now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        self.write(move |conn| outbox::finish(conn, seq, &attempt, now))
    }

    fn outbox_backlog(&self) -> impl std::future::Future<Output = Result<u64, StoreError>> + Send {
        self.read(outbox::backlog)
    }
}
