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
//! # Schema
//!
//! `schema_version` holds one row; [`MIGRATIONS`] are applied in order at open, each in its
//! own transaction. A database written by a newer program (higher version) is refused.
//! Times are stored as Unix milliseconds (UTC).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use tokio::sync::{mpsc, oneshot};

use super::{
    ChallengeRecord, ConfirmOutcome, ConfirmRequest, Confirmation, CreateOutcome, NewChallenge,
    RateLimits, Store, StoreError, TokenHash,
};
use crate::backend::Evidence;
use crate::lock;

mod oidc;

/// At most this many jobs share one transaction (bounds the latency of the first one).
pub const MAX_BATCH: usize = 256;
/// Queued write jobs before callers wait (back-pressure, bounded memory).
const QUEUE_DEPTH: usize = 4096;
/// Idle read connections kept open. Every RCPT and every DATA reads once; with four kept, 20
/// concurrent sessions opened (and parsed the schema of) a new connection for most reads and
/// closed it again (bench/run.sh profile). 32 covers the concurrency the blocking pool sees.
const MAX_IDLE_READERS: usize = 32;
/// How long rejection counts gather before one job writes them (module docs).
pub const REJECTION_FLUSH: Duration = Duration::from_secs(1);

/// Schema migrations, in order; index + 1 is the version they produce.
const MIGRATIONS: &[&str] = &[
    // 1: challenges and their confirmation.
    "CREATE TABLE challenges (
        id TEXT PRIMARY KEY NOT NULL,
        address TEXT NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        session_code TEXT NOT NULL,
        message_id_tail TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed')),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        rejections INTEGER NOT NULL DEFAULT 0,
        confirmed_at INTEGER,
        evidence TEXT,
        confirm_message_id TEXT,
        confirm_from TEXT,
        confirm_session TEXT,
        confirm_session_ended INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX challenges_by_address ON challenges (address, created_at);
    CREATE INDEX challenges_by_expiry ON challenges (expires_at);
    CREATE INDEX challenges_by_session ON challenges (confirm_session) WHERE confirm_session IS NOT NULL;",
    // 2: the OpenID Provider's sign-in flows and codes.
    oidc::MIGRATION,
];

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
    counts: HashMap<String, u32>,
    /// A flush is scheduled and has not yet been handed to the writer.
    scheduled: bool,
}

type Done = Box<dyn FnOnce(Option<StoreError>) + Send>;
/// A write job: run on the writer's connection (or told it cannot run) and give back whether
/// it succeeded plus the answer to send once the commit outcome is known.
type Job = Box<dyn FnOnce(Result<&Connection, StoreError>) -> (bool, Done) + Send>;

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
                .map_err(|e| StoreError::Io(format!("{}: {e}", parent.display())))?;
        }
        let conn = open_connection(path, &options, true)?;
        if options.read_only {
            check_version(&conn)?;
        } else {
            migrate(&conn)?;
        }
        let commits = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let thread_commits = Arc::clone(&commits);
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, rx, thread_commits))
            .map_err(|e| StoreError::Io(format!("writer thread: {e}")))?;
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
            }),
            writer: tx,
        })
    }

    /// Successful commits so far (each may have carried many jobs).
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// Mark every confirming session as ended. The daemon calls it once at start: no SMTP
    /// session of an earlier run is alive any more (a crash or SIGKILL never reached
    /// `session_ended`), and without this mark the same message delivered again after its
    /// lost `250` would get `token.used` (a permanent 5xx) until `smtp.session_timeout`
    /// passed, instead of `250` (SPEC §4). With several instances on one store this also
    /// marks another instance's live sessions; the only effect is that a simultaneous
    /// duplicate of that very message (same Message-ID, From and token) is accepted again
    /// rather than refused, which is the idempotent answer anyway. Returns how many rows.
    pub fn end_open_sessions(
        &self,
    ) -> impl std::future::Future<Output = Result<u64, StoreError>> + Send + 'static {
        self.write(|conn| {
            let n = conn
                .execute(
                    "UPDATE challenges SET confirm_session_ended = 1 \
                     WHERE confirm_session IS NOT NULL AND confirm_session_ended = 0",
                    [],
                )
                .map_err(db)?;
            Ok(n as u64)
        })
    }

    /// Jobs waiting for the writer (for `/metrics`).
    pub fn queue_depth(&self) -> usize {
        QUEUE_DEPTH.saturating_sub(self.writer.capacity())
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Hand the gathered rejection counts to the writer (one job for all of them) and wait
    /// for their commit. If the write transaction cannot begin (a lock held past the busy
    /// timeout) the job never takes them: they stay gathered for the next flush. If it fails
    /// after taking them (the commit fails: a full disk), they are lost, and logged.
    pub fn flush_rejections(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
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
            for (id, n) in &pending {
                exec(
                    conn,
                    "UPDATE challenges SET rejections = rejections + ?1 WHERE id = ?2 AND status = 'pending'",
                    params![n, id],
                )
                .map_err(db)?;
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

    /// Run `f` inside the next group commit; resolves after COMMIT.
    fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<R, StoreError>> + Send + 'static {
        let (tx, rx) = oneshot::channel::<Result<R, StoreError>>();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => f(conn),
                Err(e) => Err(e),
            };
            let ok = result.is_ok();
            let done: Done = Box::new(move |commit_error| {
                let _ = tx.send(match commit_error {
                    Some(e) => Err(e),
                    None => result,
                });
            });
            (ok, done)
        });
        let sender = self.writer.clone();
        async move {
            sender.send(job).await.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
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
            .map_err(|e| StoreError::Io(format!("read task: {e}")))?
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
        None => open_connection(path, options, false)?,
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
    fn queue_depth(&self) -> usize {
        SqliteStore::queue_depth(self)
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
        self.write(move |conn| {
            let now_ms = now.timestamp_millis();
            let hour_ago = now_ms.saturating_sub(3_600_000);
            let pending = count(
                conn,
                "SELECT COUNT(*) FROM challenges WHERE address = ?1 AND status = 'pending' AND expires_at > ?2",
                &c.address,
                now_ms,
            )?;
            let last_hour = count(
                conn,
                "SELECT COUNT(*) FROM challenges WHERE address = ?1 AND created_at >= ?2",
                &c.address,
                hour_ago,
            )?;
            if pending >= limits.max_pending || last_hour >= limits.max_per_hour {
                return Ok(CreateOutcome::RateLimited { pending, last_hour });
            }
            exec(
                conn,
                "INSERT INTO challenges (id, address, token_hash, session_code, message_id_tail, status, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)",
                params![
                    c.id,
                    c.address,
                    &c.token_hash[..],
                    c.session_code,
                    c.message_id_tail,
                    c.created_at.timestamp_millis(),
                    c.expires_at.timestamp_millis()
                ],
            )
            .map_err(db)?;
            Ok(CreateOutcome::Created)
        })
    }

    fn get(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Option<ChallengeRecord>, StoreError>> + Send {
        let id = id.to_owned();
        // Read-your-writes: the gathered counts and what was queued before this call are
        // committed first. A failed barrier (read-only store, writer gone) is not an error
        // for a read.
        let barrier = (!self.inner.options.read_only).then(|| self.flush_rejections());
        let read = self
            .read_point(move |conn| select_one(conn, "WHERE id = ?1", &id as &dyn rusqlite::ToSql));
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
        let hash = hash.to_vec();
        self.read_point(move |conn| {
            select_one(conn, "WHERE token_hash = ?1", &hash as &dyn rusqlite::ToSql)
        })
    }

    fn delete(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<bool, StoreError>> + Send {
        let id = id.to_owned();
        self.write(move |conn| {
            let n = exec(conn, "DELETE FROM challenges WHERE id = ?1", params![id]).map_err(db)?;
            Ok(n > 0)
        })
    }

    fn confirm(
        &self,
        req: ConfirmRequest,
    ) -> impl std::future::Future<Output = Result<ConfirmOutcome, StoreError>> + Send {
        self.write(move |conn| {
            let c = &req.confirmation;
            let evidence = serde_json::to_string(&c.evidence).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let changed = exec(
                conn,
                "UPDATE challenges SET status = 'confirmed', confirmed_at = ?1, evidence = ?2,
                        confirm_message_id = ?3, confirm_from = ?4, confirm_session = ?5, confirm_session_ended = 0
                     WHERE id = ?6 AND status = 'pending' AND expires_at > ?7",
                    params![
                        c.confirmed_at.timestamp_millis(),
                        evidence,
                        c.message_id,
                        c.from,
                        c.session_id,
                        req.id,
                        req.now.timestamp_millis()
                    ],
                )
                .map_err(db)?;
            if changed == 1 {
                return Ok(ConfirmOutcome::Confirmed);
            }
            // Lost the race, or not confirmable: the single writer serialises this read with
            // every other write, so what it sees is what beat us.
            Ok(match select_one(conn, "WHERE id = ?1", &req.id as &dyn rusqlite::ToSql)? {
                None => ConfirmOutcome::NotFound,
                Some(ChallengeRecord {
                    confirmation: Some(existing),
                    ..
                }) => ConfirmOutcome::AlreadyConfirmed(Box::new(existing)),
                Some(_) => ConfirmOutcome::Expired,
            })
        })
    }

    fn record_rejection(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        let id = id.to_owned();
        self.write(move |conn| {
            exec(
                conn,
                "UPDATE challenges SET rejections = rejections + 1 WHERE id = ?1 AND status = 'pending'",
                params![id],
            )
            .map_err(db)?;
            Ok(())
        })
    }

    fn count_rejection(&self, id: &str) {
        let handle = {
            let mut gathered = lock(&self.inner.rejections);
            *gathered.counts.entry(id.to_owned()).or_insert(0) += 1;
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
            store.flush_rejections().await;
        });
    }

    fn session_ended(
        &self,
        session_id: &str,
    ) -> impl std::future::Future<Output = Result<u64, StoreError>> + Send {
        let sid = session_id.to_owned();
        self.write(move |conn| {
            let n = exec(
                conn,
                "UPDATE challenges SET confirm_session_ended = 1 WHERE confirm_session = ?1",
                params![sid],
            )
            .map_err(db)?;
            Ok(n as u64)
        })
    }

    fn purge(
        &self,
        cutoff: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<u64, StoreError>> + Send {
        self.write(move |conn| {
            let n = exec(
                conn,
                "DELETE FROM challenges WHERE expires_at < ?1",
                params![cutoff.timestamp_millis()],
            )
            .map_err(db)?;
            Ok(n as u64)
        })
    }

    fn pending_count(
        &self,
        address: &str,
        now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<u32, StoreError>> + Send {
        let address = address.to_owned();
        self.read(move |conn| {
            count(
                conn,
                "SELECT COUNT(*) FROM challenges WHERE address = ?1 AND status = 'pending' AND expires_at > ?2",
                &address,
                now.timestamp_millis(),
            )
        })
    }

    fn created_since(
        &self,
        address: &str,
        since: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<u32, StoreError>> + Send {
        let address = address.to_owned();
        self.read(move |conn| {
            count(
                conn,
                "SELECT COUNT(*) FROM challenges WHERE address = ?1 AND created_at >= ?2",
                &address,
                since.timestamp_millis(),
            )
        })
    }
}

/// The writer thread: group commit (see the module docs).
fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Job>, commits: Arc<AtomicU64>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = exec(&conn, "BEGIN IMMEDIATE", []) {
            let err = db(e);
            tracing::warn!(error = %err, jobs = batch.len(), "store: cannot begin a write transaction");
            for job in batch {
                fail_unrun(job, err.clone());
            }
            continue;
        }
        let mut done = Vec::with_capacity(batch.len());
        for job in batch {
            if let Err(e) = exec(&conn, "SAVEPOINT job", []) {
                fail_unrun(job, db(e));
                continue;
            }
            done.push(run_in_savepoint(job, &conn));
        }
        let commit_error = match exec(&conn, "COMMIT", []) {
            Ok(_) => {
                commits.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                let err = db(e);
                tracing::warn!(error = %err, jobs = done.len(), "store: commit failed, batch rolled back");
                let _ = conn.execute_batch("ROLLBACK");
                Some(err)
            }
        };
        for d in done {
            d(commit_error.clone());
        }
    }
}

/// Run one job inside `SAVEPOINT job`; roll the savepoint back if the job failed, so the
/// rest of the batch still commits without its partial changes.
fn run_in_savepoint(job: Job, conn: &Connection) -> Done {
    let (ok, done) = job(Ok(conn));
    let end = if ok {
        "RELEASE job"
    } else {
        "ROLLBACK TO job; RELEASE job"
    };
    let ended = if ok {
        exec(conn, end, []).map(|_| ())
    } else {
        conn.execute_batch(end)
    };
    match ended {
        Ok(()) => done,
        Err(e) => {
            let err = db(e);
            Box::new(move |_| done(Some(err)))
        }
    }
}

/// Answer a job that could not run with `err`.
fn fail_unrun(job: Job, err: StoreError) {
    let (_, done) = job(Err(err));
    done(None);
}

fn open_connection(
    path: &Path,
    options: &SqliteOptions,
    writer: bool,
) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    if options.read_only {
        flags |= OpenFlags::SQLITE_OPEN_READ_ONLY;
    } else {
        flags |= OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(db)?;
    conn.busy_timeout(options.busy_timeout).map_err(db)?;
    // Room for every statement of this module (see `exec`).
    conn.set_prepared_statement_cache_capacity(32);
    if writer && !options.read_only {
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "journal_mode is {mode}, WAL required"
            )));
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db)?;
    if !writer {
        conn.pragma_update(None, "query_only", true).map_err(db)?;
    }
    Ok(conn)
}

fn current_version(conn: &Connection) -> Result<i64, StoreError> {
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    if !has_table {
        return Ok(0);
    }
    conn.query_row("SELECT version FROM schema_version", [], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
    .map_err(db)
    .map(|v| v.unwrap_or(0))
}

fn known_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

fn check_version(conn: &Connection) -> Result<(), StoreError> {
    let found = current_version(conn)?;
    let known = known_version();
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    if found < known {
        return Err(StoreError::Database(format!(
            "schema version {found}, this program needs {known}: open the store read-write once to migrate it"
        )));
    }
    Ok(())
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(db)?;
    let found = current_version(conn)?;
    if found > known_version() {
        return Err(StoreError::SchemaTooNew {
            found,
            known: known_version(),
        });
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        conn.execute_batch("BEGIN IMMEDIATE").map_err(db)?;
        let step = conn
            .execute_batch(sql)
            .and_then(|()| conn.execute("DELETE FROM schema_version", []))
            .and_then(|_| {
                conn.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    params![version],
                )
            });
        match step {
            Ok(_) => conn.execute_batch("COMMIT").map_err(db)?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(db(e));
            }
        }
        tracing::info!(version, "store: schema migrated");
    }
    Ok(())
}

/// Run one statement through the connection's prepared-statement cache: the same few
/// statements run for every message, and parsing them again each time cost more CPU than
/// executing them (profiled under bench/run.sh).
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

fn count(conn: &Connection, sql: &str, address: &str, at_ms: i64) -> Result<u32, StoreError> {
    let n: i64 = conn
        .prepare_cached(sql)
        .and_then(|mut st| st.query_row(params![address, at_ms], |r| r.get(0)))
        .map_err(db)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

const COLUMNS: &str = "id, address, token_hash, session_code, message_id_tail, status, created_at, expires_at,
    rejections, confirmed_at, evidence, confirm_message_id, confirm_from, confirm_session, confirm_session_ended";

fn select_one(
    conn: &Connection,
    clause: &str,
    key: &dyn rusqlite::ToSql,
) -> Result<Option<ChallengeRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM challenges {clause}");
    let raw = conn
        .prepare_cached(&sql)
        .and_then(|mut st| st.query_row([key], RawRow::from_row).optional())
        .map_err(db)?;
    raw.map(RawRow::into_record).transpose()
}

/// A row as SQLite returns it, converted outside the rusqlite closure so that corrupt data
/// becomes a [`StoreError`] rather than a panic.
struct RawRow {
    id: String,
    address: String,
    token_hash: Vec<u8>,
    session_code: String,
    message_id_tail: String,
    status: String,
    created_at: i64,
    expires_at: i64,
    rejections: i64,
    confirmed_at: Option<i64>,
    evidence: Option<String>,
    confirm_message_id: Option<String>,
    confirm_from: Option<String>,
    confirm_session: Option<String>,
    confirm_session_ended: i64,
}

impl RawRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            address: r.get(1)?,
            token_hash: r.get(2)?,
            session_code: r.get(3)?,
            message_id_tail: r.get(4)?,
            status: r.get(5)?,
            created_at: r.get(6)?,
            expires_at: r.get(7)?,
            rejections: r.get(8)?,
            confirmed_at: r.get(9)?,
            evidence: r.get(10)?,
            confirm_message_id: r.get(11)?,
            confirm_from: r.get(12)?,
            confirm_session: r.get(13)?,
            confirm_session_ended: r.get(14)?,
        })
    }

    fn into_record(self) -> Result<ChallengeRecord, StoreError> {
        let token_hash: TokenHash = self
            .token_hash
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt("token_hash length".into()))?;
        let confirmation = match self.status.as_str() {
            "pending" => None,
            "confirmed" => {
                let evidence: Evidence =
                    serde_json::from_str(self.evidence.as_deref().unwrap_or(""))
                        .map_err(|e| StoreError::Corrupt(format!("evidence: {e}")))?;
                Some(Confirmation {
                    confirmed_at: millis(self.confirmed_at.unwrap_or_default())?,
                    evidence,
                    message_id: self.confirm_message_id,
                    from: self.confirm_from.unwrap_or_default(),
                    session_id: self.confirm_session.unwrap_or_default(),
                    session_ended: self.confirm_session_ended != 0,
                })
            }
            other => return Err(StoreError::Corrupt(format!("status {other}"))),
        };
        Ok(ChallengeRecord {
            id: self.id,
            address: self.address,
            token_hash,
            session_code: self.session_code,
            message_id_tail: self.message_id_tail,
            created_at: millis(self.created_at)?,
            expires_at: millis(self.expires_at)?,
            rejections: u32::try_from(self.rejections).unwrap_or(u32::MAX),
            confirmation,
        })
    }
}

fn millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms}")))
}

fn db(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Busy(e.to_string())
        }
        _ => StoreError::Database(e.to_string()),
    }
}
