//! The writer thread and its group commit (module docs of [`super`]): every write job of the
//! store runs here, many to a transaction, each in its own savepoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::sql::{db, exec};
use crate::store::StoreError;

/// At most this many jobs share one transaction (bounds the latency of the first one).
pub const MAX_BATCH: usize = 256;
/// Queued write jobs before callers wait (back-pressure, bounded memory).
pub(super) const QUEUE_DEPTH: usize = 4096;

type Done = Box<dyn FnOnce(Option<StoreError>) + Send>;
/// A write job: run on the writer's connection (or told it cannot run) and give back whether
/// it succeeded plus the answer to send once the commit outcome is known.
pub(super) type Job = Box<dyn FnOnce(Result<&Connection, StoreError>) -> (bool, Done) + Send>;

/// Start the writer thread on `conn`; it stops when every sender is dropped.
pub(super) fn spawn(
    conn: Connection,
    commits: Arc<AtomicU64>,
) -> Result<mpsc::Sender<Job>, StoreError> {
    let (tx, rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || writer_loop(conn, rx, commits))
        .map_err(|e| StoreError::io("writer thread", e))?;
    Ok(tx)
}

/// Queue `f` for the next group commit; the future resolves after COMMIT.
pub(super) fn submit<R: Send + 'static>(
    sender: &mpsc::Sender<Job>,
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
    let sender = sender.clone();
    async move {
        sender.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// The writer thread: group commit (module docs of [`super`]).
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
