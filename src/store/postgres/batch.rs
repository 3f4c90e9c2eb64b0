//! Group commit of confirmations on PostgreSQL: the twin of SQLite's writer thread
//! (`store/sqlite/writer.rs`). Every [`Store::confirm`](crate::store::Store::confirm) of one
//! instance goes through one committer, which takes whatever has queued (up to
//! [`MAX_BATCH`]), runs each confirmation in a savepoint of one transaction, commits once, and
//! only then answers each caller. While one batch commits, the next one queues, so the batch
//! size grows with the load and `synchronous_commit`'s flush is paid once per batch, not once
//! per confirmation.
//!
//! # What each caller is told
//!
//! - **After the COMMIT that holds its row**, never before: a `250` is always durable.
//! - **A failed batch** (BEGIN, a savepoint or COMMIT failed: the database stopped, a
//!   deferred constraint raised, the connection broke) fails every caller in it with that
//!   error (`store.unavailable`), and stores nothing of it: no wrong `250`.
//! - **A conflicting row** (already confirmed, expired, unknown) is not an error: the
//!   conditional `UPDATE` matches nothing and that caller alone reads what is stored after the
//!   commit, exactly as an unbatched confirm did. A statement that *fails* for one item (a
//!   value the database refuses, a trigger) is rolled back to its savepoint: that caller gets
//!   the error, its neighbours commit.
//!
//! # Round trips
//!
//! Each item is one round trip: its `SAVEPOINT` (with the previous item's `RELEASE`, in one
//! simple query) and its prepared `UPDATE` are written to the connection together, in that
//! order (tokio-postgres pipelines requests issued before their answers arrive). Only an item
//! that won and has webhook subscribers adds one for its outbox rows.
//!
//! # Lock order
//!
//! A batch locks several challenge rows in one transaction; two instances locking the same
//! rows in different orders would deadlock. Items are sorted by challenge id (stable, so two
//! copies of one reply keep their arrival order), as are the rejection counts
//! (`add_rejections`), so every multi-row writer of this store locks in one order.
//!
//! # Why a thread of its own
//!
//! The committer runs on a current-thread runtime on a dedicated thread, like SQLite's
//! writer: it does not depend on the runtime of whoever opened the store (the CLI opens it
//! outside any runtime, the tests on one runtime each), and a caller that gives up (a session
//! dropped) cannot cancel a batch that carries other callers' rows. It stops when the store
//! and every copy of its sender are dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::outbox::insert as insert_outbox;
use super::{pg, pool_error};
use crate::store::outbox::{CONFIRMED, Payload, Subscription, Subscriptions, rows, wanted};
use crate::store::{Confirmation, StoreError};

/// At most this many confirmations share one transaction (bounds the first one's wait).
pub(super) const MAX_BATCH: usize = 256;
/// Queued confirmations before callers wait (back-pressure, bounded memory).
pub(super) const QUEUE_DEPTH: usize = 4096;

/// The conditional confirmation: only a pending, unexpired challenge changes.
const CONFIRM: &str =
    "UPDATE challenges SET status = 'confirmed', confirmed_at = $1, evidence = $2,
        confirm_message_id = $3, confirm_from = $4, confirm_session = $5,
        confirm_session_ended = FALSE
     WHERE id = $6 AND status = 'pending' AND expires_at > $7
     RETURNING address";

/// One confirmation waiting for a batch.
pub(super) struct Job {
    pub id: String,
    pub confirmation: Confirmation,
    /// `confirmation.evidence` as stored (serialised by the caller, whose error it is).
    pub evidence: String,
    /// The challenge must be unexpired at this instant (unix millis).
    pub now_ms: i64,
    /// True: this job confirmed the challenge, committed. False: the row did not change.
    pub answer: oneshot::Sender<Result<bool, StoreError>>,
}

/// The sending side, kept by the store.
#[derive(Clone)]
pub(super) struct Committer {
    jobs: mpsc::Sender<Job>,
    batches: Arc<AtomicU64>,
}

impl Committer {
    /// Start the committer thread on `pool`; `webhooks` is read once per batch.
    pub(super) fn spawn(
        pool: Pool,
        webhooks: Arc<Mutex<Subscriptions>>,
    ) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::io("committer runtime", e))?;
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        let batches = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&batches);
        std::thread::Builder::new()
            .name("gatekeeper-pg-commit".into())
            .spawn(move || rt.block_on(run(pool, rx, webhooks, counter)))
            .map_err(|e| StoreError::io("committer thread", e))?;
        Ok(Self { jobs, batches })
    }

    /// Queue `job`; its answer comes on its own channel after the batch's COMMIT.
    pub(super) async fn submit(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)
    }

    /// Batches committed so far (each may have carried many confirmations).
    pub(super) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Confirmations queued and not yet taken into a batch.
    pub(super) fn queued(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }
}

async fn run(
    pool: Pool,
    mut rx: mpsc::Receiver<Job>,
    webhooks: Arc<Mutex<Subscriptions>>,
    batches: Arc<AtomicU64>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // One lock order for every multi-row writer (module docs); stable for duplicates.
        batch.sort_by(|a, b| a.id.cmp(&b.id));
        let subs = crate::lock(&webhooks).clone();
        match commit(&pool, &batch, &subs).await {
            Ok(results) => {
                batches.fetch_add(1, Ordering::Relaxed);
                for (job, result) in batch.into_iter().zip(results) {
                    // A caller that gave up is no reason to stop: its row is committed anyway.
                    let _ = job.answer.send(result);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = batch.len(), "store: confirmation batch failed, nothing of it stored");
                for job in batch {
                    let _ = job.answer.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One transaction for `batch`: `Err` when the transaction as a whole failed (nothing of it
/// is stored), else one result per job, in order.
async fn commit(
    pool: &Pool,
    batch: &[Job],
    subs: &[Subscription],
) -> Result<Vec<Result<bool, StoreError>>, StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg)?;
    let st = tx.prepare_cached(CONFIRM).await.map_err(pg)?;
    let webhooks = wanted(subs, CONFIRMED);
    let mut results = Vec::with_capacity(batch.len());
    for (i, job) in batch.iter().enumerate() {
        let c = &job.confirmation;
        let confirmed_at = c.confirmed_at.timestamp_millis();
        let savepoint = if i == 0 {
            "SAVEPOINT item"
        } else {
            "RELEASE SAVEPOINT item; SAVEPOINT item"
        };
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
            &confirmed_at,
            &job.evidence,
            &c.message_id,
            &c.from,
            &c.session_id,
            &job.id,
            &job.now_ms,
        ];
        // Both written before either answer is read, in this order (`biased`): one round trip.
        let (taken, updated) = tokio::join!(
            biased;
            tx.batch_execute(savepoint),
            tx.query_opt(&st, &params),
        );
        // Without its savepoint the transaction is broken: the whole batch fails.
        taken.map_err(pg)?;
        let result = match updated {
            Ok(None) => Ok(false),
            Ok(Some(row)) if webhooks => outbox(&tx, job, &row, subs).await.map(|()| true),
            Ok(Some(_)) => Ok(true),
            Err(e) => Err(pg(e)),
        };
        if result.is_err() {
            // Undo this item only; if even that fails, nothing of the batch can commit.
            tx.batch_execute("ROLLBACK TO SAVEPOINT item")
                .await
                .map_err(pg)?;
        }
        results.push(result);
    }
    tx.commit().await.map_err(pg)?;
    Ok(results)
}

/// The `challenge.confirmed` deliveries of a job that won, in its savepoint (SPEC §11: they
/// commit with the confirmation or not at all).
async fn outbox(
    tx: &deadpool_postgres::Transaction<'_>,
    job: &Job,
    row: &tokio_postgres::Row,
    subs: &[Subscription],
) -> Result<(), StoreError> {
    let address: String = row.try_get(0).map_err(pg)?;
    let body = Payload::confirmed(&job.id, &address, &job.confirmation)?;
    let rows = rows(
        subs,
        CONFIRMED,
        &job.id,
        &body,
        job.confirmation.confirmed_at,
    )?;
    insert_outbox(tx, &rows).await
}
