//! Benchmark: the time of a point read (the SMTP path's, run on the calling task), then
//! confirmations per second of the SQLite store, one at a time versus many concurrent
//! callers sharing group commits (`synchronous=FULL`: every commit is an fsync).
//!
//! `cargo run --release --example store_throughput -- [N] [CONCURRENCY] [DIR]`
//! (DIR: where the database goes, default a temporary directory; put it on the disk you
//! want to measure).

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use gatekeeper::backend::Evidence;
use gatekeeper::store::{
    ConfirmOutcome, ConfirmRequest, Confirmation, NewChallenge, RateLimits, SqliteOptions,
    SqliteStore, Store,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let tmp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_owned());
    let store = Arc::new(SqliteStore::open(
        &dir.join("bench.db"),
        SqliteOptions::default(),
    )?);
    let now = Utc::now();
    let limits = RateLimits {
        max_pending: u32::MAX,
        max_per_hour: u32::MAX,
    };

    let mut creations = Vec::new();
    for i in 0..2 * n {
        let s = Arc::clone(&store);
        creations.push(tokio::spawn(async move {
            s.create(
                NewChallenge {
                    id: format!("c{i}"),
                    address: format!("user{i}@interieur.gouv.fr"),
                    token_hash: gatekeeper::store::TokenHash::of(&format!("token{i}")),
                    session_code: "123456".into(),
                    message_id_tail: "x@verify.example.gouv.fr".into(),
                    created_at: now,
                    expires_at: now + chrono::Duration::hours(1),
                },
                limits,
                now,
            )
            .await
        }));
    }
    for c in creations {
        c.await??;
    }

    // Point reads as the SMTP path does them (by token hash, on the calling task): the time
    // one takes is the time it holds a runtime thread. Then the same through `DynStore`, the
    // boxed-future wrapper the daemon holds (`store::open`): the difference is its cost.
    let reads = 2 * n;
    point_reads("point reads", &*store, reads).await?;
    let erased = gatekeeper::store::DynStore::new((*store).clone());
    point_reads("point reads via DynStore", &erased, reads).await?;

    let request = move |i: usize| ConfirmRequest {
        id: format!("c{i}"),
        confirmation: Confirmation {
            confirmed_at: now,
            evidence: Evidence {
                headers: "From: a\r\nSubject: b\r\n".repeat(20),
                ..Evidence::default()
            },
            message_id: Some(format!("m{i}@interieur.gouv.fr")),
            from: format!("user{i}@interieur.gouv.fr"),
            session_id: format!("s{i}"),
            session_ended: false,
        },
        now,
    };

    // One at a time: one commit (fsync) per confirmation.
    let sequential = n / 10;
    let before = store.commits();
    let start = Instant::now();
    for i in 0..sequential {
        expect_confirmed(store.confirm(request(i)).await?)?;
    }
    let elapsed = start.elapsed();
    println!(
        "sequential: {sequential} confirmations, {} commits, {:.0}/s",
        store.commits() - before,
        sequential as f64 / elapsed.as_secs_f64()
    );

    // Concurrent callers: batches share a commit.
    let before = store.commits();
    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(n));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let s = Arc::clone(&store);
        let next = Arc::clone(&next);
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= 2 * n {
                    return Ok::<(), Error>(());
                }
                expect_confirmed(s.confirm(request(i)).await?)?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let elapsed = start.elapsed();
    println!(
        "concurrent ({concurrency} callers): {n} confirmations, {} commits, {:.0}/s",
        store.commits() - before,
        n as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

fn expect_confirmed(outcome: ConfirmOutcome) -> Result<(), Error> {
    match outcome {
        ConfirmOutcome::Confirmed => Ok(()),
        other => Err(format!("unexpected {other:?}").into()),
    }
}

/// `reads` point reads by token hash; prints the mean and the slowest.
async fn point_reads(label: &str, store: &impl Store, reads: usize) -> Result<(), Error> {
    let mut slowest = std::time::Duration::ZERO;
    let start = Instant::now();
    for i in 0..reads {
        let hash = gatekeeper::store::TokenHash::of(&format!("token{i}"));
        let one = Instant::now();
        let found = store.find_by_token_hash(&hash).await?;
        slowest = slowest.max(one.elapsed());
        if found.is_none() {
            return Err(format!("challenge c{i} not found").into());
        }
    }
    let elapsed = start.elapsed();
    println!(
        "{label}: {reads}, {:.2} µs each on average, slowest {:.1} µs",
        elapsed.as_secs_f64() * 1e6 / reads as f64,
        slowest.as_secs_f64() * 1e6
    );
    Ok(())
}
