//! The SQLite store on a real file: lifecycle, rate limits, conditional confirm under
//! concurrency, group commit, and the failures that must become `store.unavailable`
//! (read-only open, a lock held past the busy timeout, a full disk). The tests listed in
//! `on_both_stores!` run on SQLite and on a throwaway PostgreSQL cluster
//! (`common::postgres`), each as `NAME::sqlite` and `NAME::postgres`.
//!
//! Tests run as root, which ignores file permissions, so "cannot write" is produced by
//! means root cannot bypass: SQLite's own read-only open, another connection holding the
//! write lock, and a tiny tmpfs filled up (needs `mount`, i.e. root: CI runs as root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gatekeeper::backend::Evidence;
use gatekeeper::reason::Reason;
use gatekeeper::store::{
    ConfirmOutcome, ConfirmRequest, Confirmation, CreateOutcome, DynStore, NewProbe, PostgresStore,
    RateLimits, Rejection, Signer, SqliteOptions, SqliteStore, Status, Store, StoreError,
    TokenHash,
};

use common::challenge::new_challenge;

const LIMITS: RateLimits = RateLimits {
    max_pending: 100,
    max_per_hour: 100,
};

/// A refusal of `reason` at `t0`.
fn rejected(reason: Reason) -> Rejection {
    Rejection { reason, at: t0() }
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Where a test of the shared suite keeps its store: one suite, run on both backends (the
/// `on_both_stores!` list below), so the two cannot drift apart in semantics.
enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(common::postgres::Cluster),
}

impl Place {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        assert!(
            dir.path().join("sub/dir/gk.db").exists(),
            "parent directories are created"
        );
        Place::Sqlite(dir)
    }

    fn postgres() -> Self {
        Place::Postgres(common::postgres::Cluster::start())
    }

    /// One more handle on the same store (a second instance, for the concurrency tests).
    fn open(&self) -> Arc<DynStore> {
        Arc::new(match self {
            Place::Sqlite(dir) => DynStore::new(open(dir.path())),
            Place::Postgres(cluster) => {
                DynStore::new(PostgresStore::open(&cluster.config(), false).unwrap())
            }
        })
    }
}

/// Each suite function becomes `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_stores {
    ($($suite:ident),* $(,)?) => {$(
        mod $suite {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$suite(super::Place::sqlite()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$suite(super::Place::postgres()).await
            }
        }
    )*};
}

on_both_stores!(
    lifecycle_create_lookup_confirm_expire_purge,
    rate_limit_counts_are_atomic_with_the_insert,
    concurrent_confirmations_of_one_challenge_exactly_one_wins,
    purge_loop_removes_long_expired_challenges,
    end_open_sessions_marks_every_confirming_session,
    probes_lifecycle_limits_and_purge,
    confirmed_signers_of_one_domain,
    outbox_rows_commit_with_their_state_change_in_order,
    outbox_claims_are_exclusive_leases_retaken_after_a_crash,
);

fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(&dir.join("sub/dir/gk.db"), SqliteOptions::default()).unwrap()
}

/// A writable store whose statements wait `busy_timeout` for a lock.
fn open_waiting(path: &std::path::Path, busy_timeout: Duration) -> SqliteStore {
    SqliteStore::open(
        path,
        SqliteOptions {
            busy_timeout,
            read_only: false,
        },
    )
    .unwrap()
}

fn confirmation(session: &str, msgid: &str, at: DateTime<Utc>) -> Confirmation {
    Confirmation {
        confirmed_at: at,
        evidence: Evidence {
            client_ip: "127.0.0.25".into(),
            helo: Some("smtp.interieur.gouv.fr".into()),
            mail_from: "alice@interieur.gouv.fr".into(),
            from: "alice@interieur.gouv.fr".into(),
            dkim_domain: "interieur.gouv.fr".into(),
            dkim_selector: "s2024".into(),
            dkim_algorithm: "rsa-sha256".into(),
            spf: "pass".into(),
            message_id: Some(msgid.into()),
            headers: "From: Alice <alice@interieur.gouv.fr>\r\nSubject: RE: x\r\n".into(),
            ..Evidence::default()
        },
        message_id: Some(msgid.into()),
        from: "alice@interieur.gouv.fr".into(),
        session_id: session.into(),
        session_ended: false,
    }
}

fn confirm_req(id: &str, session: &str, now: DateTime<Utc>) -> ConfirmRequest {
    ConfirmRequest {
        id: id.into(),
        confirmation: confirmation(session, "m1@interieur.gouv.fr", now),
        now,
    }
}

async fn lifecycle_create_lookup_confirm_expire_purge(place: Place) {
    let store = place.open();
    let now = t0();

    let c = new_challenge("aaaa", "alice@interieur.gouv.fr", "tok1", now, 3600);
    assert_eq!(
        store.create(c.clone(), LIMITS, now).await.unwrap(),
        CreateOutcome::Created
    );

    let by_id = store.get("aaaa").await.unwrap().unwrap();
    assert_eq!(by_id.address, "alice@interieur.gouv.fr");
    assert_eq!(by_id.token_hash, c.token_hash);
    assert_eq!(by_id.status(now), Status::Pending);
    assert_eq!(
        by_id.status(now + chrono::Duration::seconds(3600)),
        Status::Expired
    );
    let by_hash = store
        .find_by_token_hash(&c.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_hash, by_id);
    assert!(
        store
            .find_by_token_hash(&gatekeeper::store::TokenHash::of("no such token"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.get("nope").await.unwrap().is_none());

    // Rejections count while pending; the latest is kept.
    assert_eq!(
        store.get("aaaa").await.unwrap().unwrap().last_rejection,
        None
    );
    store
        .record_rejection("aaaa", rejected(Reason::DkimNone))
        .await
        .unwrap();
    let later = Rejection {
        reason: Reason::SpfFail,
        at: t0() + chrono::Duration::seconds(5),
    };
    store.record_rejection("aaaa", later).await.unwrap();
    let got = store.get("aaaa").await.unwrap().unwrap();
    assert_eq!(got.rejections, 2);
    assert_eq!(got.last_rejection, Some(later));

    // Confirm: stored with its evidence.
    let at = now + chrono::Duration::seconds(10);
    assert_eq!(
        store.confirm(confirm_req("aaaa", "s1", at)).await.unwrap(),
        ConfirmOutcome::Confirmed
    );
    let done = store.get("aaaa").await.unwrap().unwrap();
    assert_eq!(
        done.status(at + chrono::Duration::days(30)),
        Status::Confirmed,
        "confirmed never expires"
    );
    let conf = done.confirmation.clone().unwrap();
    assert_eq!(conf, confirmation("s1", "m1@interieur.gouv.fr", at));
    // A second confirmation learns what the first stored.
    match store.confirm(confirm_req("aaaa", "s2", at)).await.unwrap() {
        ConfirmOutcome::AlreadyConfirmed(prev) => assert_eq!(prev.session_id, "s1"),
        other => panic!("{other:?}"),
    }
    // Rejections no longer count once confirmed.
    store
        .record_rejection("aaaa", rejected(Reason::DkimNone))
        .await
        .unwrap();
    assert_eq!(store.get("aaaa").await.unwrap().unwrap().rejections, 2);
    // Session end is recorded.
    assert_eq!(store.session_ended("s1").await.unwrap(), 1);
    assert!(
        store
            .get("aaaa")
            .await
            .unwrap()
            .unwrap()
            .confirmation
            .unwrap()
            .session_ended
    );

    // Expired and unknown challenges cannot be confirmed.
    store
        .create(
            new_challenge("bbbb", "bob@interieur.gouv.fr", "tok2", now, 60),
            LIMITS,
            now,
        )
        .await
        .unwrap();
    let late = now + chrono::Duration::seconds(60);
    assert_eq!(
        store
            .confirm(confirm_req("bbbb", "s3", late))
            .await
            .unwrap(),
        ConfirmOutcome::Expired
    );
    assert_eq!(
        store
            .confirm(confirm_req("zzzz", "s3", late))
            .await
            .unwrap(),
        ConfirmOutcome::NotFound
    );
    assert_eq!(
        store.get("bbbb").await.unwrap().unwrap().status(late),
        Status::Expired
    );

    // Purge: only what expired before the cutoff.
    assert_eq!(
        store
            .purge(now + chrono::Duration::seconds(61))
            .await
            .unwrap(),
        1
    );
    assert!(store.get("bbbb").await.unwrap().is_none());
    assert!(store.get("aaaa").await.unwrap().is_some());
    assert_eq!(
        store
            .purge(now + chrono::Duration::seconds(3601))
            .await
            .unwrap(),
        1
    );
    assert!(store.get("aaaa").await.unwrap().is_none());

    // Delete.
    store
        .create(
            new_challenge("cccc", "bob@interieur.gouv.fr", "tok3", now, 60),
            LIMITS,
            now,
        )
        .await
        .unwrap();
    assert!(store.delete("cccc").await.unwrap());
    assert!(!store.delete("cccc").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopen_and_schema_is_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/gk.db");
    {
        let store = open(dir.path());
        store
            .create(
                new_challenge("keep", "alice@interieur.gouv.fr", "t", t0(), 3600),
                LIMITS,
                t0(),
            )
            .await
            .unwrap();
        store.confirm(confirm_req("keep", "s", t0())).await.unwrap();
    }
    let store = open(dir.path());
    assert!(
        store
            .get("keep")
            .await
            .unwrap()
            .unwrap()
            .confirmation
            .is_some()
    );
    drop(store);

    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 5);
    assert_eq!(mode, "wal", "WAL is persistent in the file");
    // A database from a newer program is refused, not misread.
    raw.execute("UPDATE schema_version SET version = 99", [])
        .unwrap();
    drop(raw);
    let err = SqliteStore::open(&path, SqliteOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                known: 5
            }
        ),
        "{err:?}"
    );
}

async fn rate_limit_counts_are_atomic_with_the_insert(place: Place) {
    let store = place.open();
    let now = t0();
    let limits = RateLimits {
        max_pending: 2,
        max_per_hour: 3,
    };
    let addr = "alice@interieur.gouv.fr";
    for i in 0..2 {
        let c = new_challenge(&format!("p{i}"), addr, &format!("t{i}"), now, 600);
        assert_eq!(
            store.create(c, limits, now).await.unwrap(),
            CreateOutcome::Created
        );
    }
    // Third pending: refused by max_pending.
    let c = new_challenge("p2", addr, "t2", now, 600);
    assert_eq!(
        store.create(c, limits, now).await.unwrap(),
        CreateOutcome::RateLimited {
            pending: 2,
            last_hour: 2
        }
    );
    assert_eq!(store.pending_count(addr, now).await.unwrap(), 2);
    // Another address is independent.
    let c = new_challenge("q0", "bob@interieur.gouv.fr", "u0", now, 600);
    assert_eq!(
        store.create(c, limits, now).await.unwrap(),
        CreateOutcome::Created
    );

    // Once those expire, pending is free but the hourly count still holds.
    let later = now + chrono::Duration::seconds(700);
    assert_eq!(store.pending_count(addr, later).await.unwrap(), 0);
    let c = new_challenge("p3", addr, "t3", later, 600);
    assert_eq!(
        store.create(c, limits, later).await.unwrap(),
        CreateOutcome::Created
    );
    let c = new_challenge("p4", addr, "t4", later, 600);
    assert_eq!(
        store.create(c, limits, later).await.unwrap(),
        CreateOutcome::RateLimited {
            pending: 1,
            last_hour: 3
        }
    );
    assert_eq!(
        store
            .created_since(addr, later - chrono::Duration::hours(1))
            .await
            .unwrap(),
        3
    );
    // An hour later the window has moved.
    let next_hour = now + chrono::Duration::seconds(3601);
    assert_eq!(
        store
            .created_since(addr, next_hour - chrono::Duration::hours(1))
            .await
            .unwrap(),
        1
    );

    // Concurrent creations cannot overshoot the limit.
    let store2 = place.open();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = store2.clone();
        tasks.push(tokio::spawn(async move {
            let c = new_challenge(
                &format!("r{i}"),
                "carol@interieur.gouv.fr",
                &format!("v{i}"),
                now,
                600,
            );
            s.create(c, limits, now).await.unwrap()
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap() == CreateOutcome::Created {
            created += 1;
        }
    }
    assert_eq!(created, 2);
}

async fn concurrent_confirmations_of_one_challenge_exactly_one_wins(place: Place) {
    let store = place.open();
    let now = t0();
    store
        .create(
            new_challenge("one", "alice@interieur.gouv.fr", "t", now, 3600),
            LIMITS,
            now,
        )
        .await
        .unwrap();
    // Two store handles on one file too (two instances sharing a store).
    let other = place.open();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            s.confirm(confirm_req("one", &format!("s{i}"), now))
                .await
                .unwrap()
        }));
    }
    let mut winners = Vec::new();
    let mut losers = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            ConfirmOutcome::Confirmed => winners.push(format!("s{i}")),
            ConfirmOutcome::AlreadyConfirmed(_) => losers += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one confirmation wins");
    assert_eq!(losers, 39);
    let stored = store
        .get("one")
        .await
        .unwrap()
        .unwrap()
        .confirmation
        .unwrap();
    assert_eq!(stored.session_id, winners[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_confirmations_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let now = t0();
    const N: usize = 64;
    for i in 0..N {
        store
            .create(
                new_challenge(
                    &format!("c{i}"),
                    "alice@interieur.gouv.fr",
                    &format!("t{i}"),
                    now,
                    3600,
                ),
                LIMITS,
                now,
            )
            .await
            .unwrap();
    }
    let before = store.commits();
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for i in 0..N {
        let s = store.clone();
        let b = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            s.confirm(confirm_req(&format!("c{i}"), &format!("s{i}"), now))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), ConfirmOutcome::Confirmed);
    }
    let commits = store.commits() - before;
    println!("{N} concurrent confirmations took {commits} commits");
    assert!(commits >= 1);
    assert!(
        commits < N as u64,
        "group commit: {commits} commits for {N} confirmations"
    );
    // And every one of them is really stored.
    for i in 0..N {
        assert!(
            store
                .get(&format!("c{i}"))
                .await
                .unwrap()
                .unwrap()
                .confirmation
                .is_some()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_store_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/gk.db");
    let rw = open(dir.path());
    rw.create(
        new_challenge("ro", "alice@interieur.gouv.fr", "t", t0(), 3600),
        LIMITS,
        t0(),
    )
    .await
    .unwrap();
    let ro = SqliteStore::open(
        &path,
        SqliteOptions {
            read_only: true,
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    assert!(ro.get("ro").await.unwrap().is_some(), "reads work");
    let err = ro.confirm(confirm_req("ro", "s", t0())).await.unwrap_err();
    assert_eq!(err.reason(), Reason::StoreUnavailable);
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    // Nothing was confirmed.
    assert!(rw.get("ro").await.unwrap().unwrap().confirmation.is_none());

    // Read-only cannot create or migrate: a missing file, an unmigrated file.
    let ro = SqliteOptions {
        read_only: true,
        ..SqliteOptions::default()
    };
    assert!(SqliteStore::open(&dir.path().join("missing.db"), ro.clone()).is_err());
    let empty = dir.path().join("empty.db");
    rusqlite::Connection::open(&empty)
        .unwrap()
        .execute_batch("CREATE TABLE t (x INTEGER)")
        .unwrap();
    match SqliteStore::open(&empty, ro) {
        Err(e @ StoreError::SchemaTooOld { found: 0, known: 5 }) => {
            assert!(e.to_string().contains("schema version 0"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_held_past_busy_timeout_fails_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gk.db");
    let store = open_waiting(&path, Duration::from_millis(200));
    store
        .create(
            new_challenge("lk", "alice@interieur.gouv.fr", "t", t0(), 3600),
            LIMITS,
            t0(),
        )
        .await
        .unwrap();
    let before = store.commits();

    // Another process (here: another connection) holds the write lock.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let err = store
        .confirm(confirm_req("lk", "s", t0()))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Reason::StoreUnavailable);
    assert_eq!(store.commits(), before, "nothing committed");
    other.execute_batch("ROLLBACK").unwrap();

    // The store works again once the lock is gone.
    assert_eq!(
        store.confirm(confirm_req("lk", "s", t0())).await.unwrap(),
        ConfirmOutcome::Confirmed
    );
}

/// A real full disk: a 512 KiB tmpfs, filled with a filler file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("mount runs");
    assert!(
        status.success(),
        "mounting a tmpfs needs root (tests and CI run as root)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());

    let store = SqliteStore::open(&mnt.join("gk.db"), SqliteOptions::default()).unwrap();
    store
        .create(
            new_challenge("fd", "alice@interieur.gouv.fr", "t", t0(), 3600),
            LIMITS,
            t0(),
        )
        .await
        .unwrap();
    // Fill the file system.
    let filler_path = mnt.join("filler");
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(&filler_path).unwrap();
        let chunk = vec![0u8; 4096];
        let mut written = 0usize;
        while filler.write_all(&chunk).is_ok() && written < 1024 * 1024 {
            written += chunk.len();
        }
        let _ = filler.sync_all();
    }
    // A confirmation with a large header block cannot be written.
    let mut req = confirm_req("fd", "s", t0());
    req.confirmation.evidence.headers = "X-Pad: ".to_string() + &"a".repeat(200_000);
    let err = store.confirm(req.clone()).await.unwrap_err();
    assert_eq!(err.reason(), Reason::StoreUnavailable);
    assert!(
        store
            .get("fd")
            .await
            .unwrap()
            .unwrap()
            .confirmation
            .is_none()
    );

    std::fs::remove_file(&filler_path).unwrap();
    assert_eq!(store.confirm(req).await.unwrap(), ConfirmOutcome::Confirmed);
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_job_does_not_spoil_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let now = t0();
    // 32 concurrent creations, half of them reusing one id (primary key conflict).
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = store.clone();
        let b = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let id = if i % 2 == 0 {
                "dup".to_owned()
            } else {
                format!("u{i}")
            };
            b.wait().await;
            s.create(
                new_challenge(
                    &id,
                    &format!("p{i}@interieur.gouv.fr"),
                    &format!("t{i}"),
                    now,
                    600,
                ),
                LIMITS,
                now,
            )
            .await
        }));
    }
    let mut ok = 0;
    let mut failed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(CreateOutcome::Created) => ok += 1,
            Err(e) => {
                assert_eq!(e.reason(), Reason::StoreUnavailable);
                failed += 1
            }
            Ok(other) => panic!("{other:?}"),
        }
    }
    assert_eq!((ok, failed), (17, 15), "one 'dup' and the 16 unique ids");
    for i in (1..32).step_by(2) {
        assert!(store.get(&format!("u{i}")).await.unwrap().is_some());
    }
}

async fn purge_loop_removes_long_expired_challenges(place: Place) {
    let store = place.open();
    let now = Utc::now();
    let old = new_challenge(
        "old",
        "alice@interieur.gouv.fr",
        "t1",
        now - chrono::Duration::days(9),
        3600,
    );
    let fresh = new_challenge(
        "fresh",
        "alice@interieur.gouv.fr",
        "t2",
        now - chrono::Duration::days(2),
        3600,
    );
    store.create(old, LIMITS, now).await.unwrap();
    store.create(fresh, LIMITS, now).await.unwrap();
    assert_eq!(
        gatekeeper::daemon::jobs::purge_cutoff(now),
        now - chrono::Duration::days(7)
    );
    let task = tokio::spawn(gatekeeper::daemon::jobs::purge_loop(
        Arc::clone(&store),
        Duration::from_secs(1),
    ));
    let mut gone = false;
    for _ in 0..100 {
        if store.get("old").await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    assert!(gone, "purged on the first tick");
    assert!(
        store.get("fresh").await.unwrap().is_some(),
        "expired 2 days ago: kept (retention 7 days)"
    );
}

/// At daemon start every confirming session of an earlier run is marked ended (none is
/// alive), so a redelivery after a crash is accepted again at once; pending challenges and
/// sessions already marked are untouched.
async fn end_open_sessions_marks_every_confirming_session(place: Place) {
    let store = place.open();
    let now = t0();
    for (id, tok) in [("c1", "t1"), ("c2", "t2"), ("c3", "t3")] {
        store
            .create(
                new_challenge(id, "alice@interieur.gouv.fr", tok, now, 3600),
                LIMITS,
                now,
            )
            .await
            .unwrap();
    }
    store.confirm(confirm_req("c1", "s1", now)).await.unwrap();
    store.confirm(confirm_req("c2", "s2", now)).await.unwrap();
    assert_eq!(store.session_ended("s2").await.unwrap(), 1);
    // c1's session never closed (the daemon died): one row to mark.
    assert_eq!(store.end_open_sessions().await.unwrap(), 1);
    assert_eq!(store.end_open_sessions().await.unwrap(), 0);
    for id in ["c1", "c2"] {
        let conf = store.get(id).await.unwrap().unwrap().confirmation.unwrap();
        assert!(conf.session_ended, "{id}");
    }
    let pending = store.get("c3").await.unwrap().unwrap();
    assert!(pending.confirmation.is_none());
    assert_eq!(pending.status(now), Status::Pending);
}

/// Rejections counted without waiting: gathered, written by one job a little later, and seen
/// by the very next `get` (read-your-writes) whatever the timer; a flood costs a handful of
/// commits, not one per count; a confirmed challenge counts none; the counts are on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counted_rejections_are_gathered_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for (id, tok) in [("r1", "tokr1"), ("r2", "tokr2")] {
        let c = new_challenge(id, "alice@interieur.gouv.fr", tok, t0(), 3600);
        store.create(c, LIMITS, t0()).await.unwrap();
    }
    let before = store.commits();
    for _ in 0..500 {
        store.count_rejection("r1", rejected(Reason::DkimNone));
    }
    let last = Rejection {
        reason: Reason::BindingSessionCode,
        at: t0() + chrono::Duration::seconds(1),
    };
    store.count_rejection("r1", last);
    store.count_rejection("r2", rejected(Reason::DkimNone));
    store.count_rejection("nope", rejected(Reason::DkimNone));
    // Read at once: the timer has not fired, the read still sees every count and the
    // latest refusal.
    let r1 = store.get("r1").await.unwrap().unwrap();
    assert_eq!(r1.rejections, 501);
    assert_eq!(r1.last_rejection, Some(last));
    assert_eq!(store.get("r2").await.unwrap().unwrap().rejections, 1);
    let commits = store.commits() - before;
    assert!(
        (1..=3).contains(&commits),
        "501 counts in {commits} commits"
    );

    // Without a read, the timer writes them.
    store.count_rejection("r2", rejected(Reason::DkimNone));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let on_disk = |path: &std::path::Path| -> i64 {
        let c = rusqlite::Connection::open(path).unwrap();
        c.query_row(
            "SELECT rejections FROM challenges WHERE id = 'r2'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let path = dir.path().join("sub/dir/gk.db");
    while on_disk(&path) != 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(on_disk(&path), 2, "written by the flush timer");

    // Confirmed: no longer counted.
    store.confirm(confirm_req("r1", "s", t0())).await.unwrap();
    store.count_rejection("r1", rejected(Reason::DkimNone));
    assert_eq!(store.get("r1").await.unwrap().unwrap().rejections, 501);
}

/// A count made outside any runtime (no flush timer can run) is kept for the next read.
#[test]
fn a_count_outside_a_runtime_waits_for_the_next_read() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let c = new_challenge("nr", "alice@interieur.gouv.fr", "toknr", t0(), 3600);
    rt.block_on(store.create(c, LIMITS, t0())).unwrap();
    store.count_rejection("nr", rejected(Reason::DkimNone));
    let record = rt.block_on(store.get("nr")).unwrap().unwrap();
    assert_eq!(record.rejections, 1);
}

/// A flush that cannot begin (another process holds the write lock past the busy timeout)
/// leaves the gathered counts for the next one: nothing is lost to a passing lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gathered_rejections_survive_a_locked_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gk.db");
    let store = open_waiting(&path, Duration::from_millis(200));
    let c = new_challenge("lf", "alice@interieur.gouv.fr", "toklf", t0(), 3600);
    store.create(c, LIMITS, t0()).await.unwrap();
    for _ in 0..3 {
        store.count_rejection("lf", rejected(Reason::DkimNone));
    }
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let before = store.commits();
    store.flush_rejections().await;
    assert_eq!(
        store.commits(),
        before,
        "the locked flush committed nothing"
    );
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(store.get("lf").await.unwrap().unwrap().rejections, 3);
}

/// The SMTP path's point reads run on the calling task and do not wait for a writer: another
/// process holding the write lock (`BEGIN EXCLUSIVE`, WAL mode) past the busy timeout does
/// not delay them, while a write meanwhile fails as `store.unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_reads_are_not_blocked_by_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gk.db");
    let store = open_waiting(&path, Duration::from_millis(1500));
    let c = new_challenge("pr", "alice@interieur.gouv.fr", "tokpr", t0(), 3600);
    store.create(c.clone(), LIMITS, t0()).await.unwrap();

    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch(
            "BEGIN EXCLUSIVE; UPDATE challenges SET address = 'bob@interieur.gouv.fr' WHERE id = 'pr';",
        )
        .unwrap();
    let address_now = || async {
        let found = store.find_by_token_hash(&c.token_hash).await.unwrap();
        found.unwrap().address
    };
    let started = std::time::Instant::now();
    assert_eq!(
        address_now().await,
        "alice@interieur.gouv.fr",
        "the committed row"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "read without waiting ({:?})",
        started.elapsed()
    );
    let err = store
        .confirm(confirm_req("pr", "s", t0()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Busy(_)), "{err:?}");
    assert_eq!(err.reason(), Reason::StoreUnavailable);
    other.execute_batch("COMMIT").unwrap();
    assert_eq!(
        address_now().await,
        "bob@interieur.gouv.fr",
        "the new commit is seen"
    );
}

/// Instances starting together on an empty database migrate once (advisory lock) and all
/// come up; a schema newer than this program is refused at open, naming both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrations_run_once_under_concurrent_starts_and_newer_is_refused() {
    let cluster = common::postgres::Cluster::start();
    for trial in 0..5 {
        let config = cluster.fresh_database(&format!("trial{trial}"));
        let starts: Vec<_> = (0..6)
            .map(|_| {
                let c = config.clone();
                std::thread::spawn(move || PostgresStore::open(&c, false).map(drop))
            })
            .collect();
        for s in starts {
            s.join()
                .unwrap()
                .unwrap_or_else(|e| panic!("trial {trial}: {e}"));
        }
    }
    let config = cluster.config();
    drop(PostgresStore::open(&config, false).unwrap());
    // Read-only opens check the version and write nothing.
    drop(PostgresStore::open(&config, true).unwrap());
    cluster.psql("UPDATE schema_version SET version = 99", "gk");
    match PostgresStore::open(&config, false) {
        Err(StoreError::SchemaTooNew { found: 99, known }) => assert!(known < 99),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a newer schema must be refused"),
    }
    // A read-only open on an empty database refuses too (nothing to read).
    let empty = cluster.fresh_database("empty");
    assert!(matches!(
        PostgresStore::open(&empty, true),
        Err(StoreError::SchemaTooOld { found: 0, .. })
    ));
}

/// The database stopped (as a crash or a failover looks to a client): every call fails as
/// `store.unavailable` within the connect timeout, none pretends to succeed; once it is
/// back the same store handle works again without being reopened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_fails_then_reconnects_by_itself() {
    let cluster = common::postgres::Cluster::start();
    let store = Arc::new(DynStore::new(
        PostgresStore::open(&cluster.config(), false).unwrap(),
    ));
    let now = t0();
    let c = new_challenge("out", "alice@interieur.gouv.fr", "tok-out", now, 3600);
    store.create(c, LIMITS, now).await.unwrap();
    assert!(store.get("out").await.unwrap().is_some());

    cluster.stop();
    let started = std::time::Instant::now();
    let err = store.get("out").await.unwrap_err();
    assert_eq!(err.reason(), Reason::StoreUnavailable);
    let err = store
        .confirm(confirm_req("out", "s1", now))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Reason::StoreUnavailable);
    let c = new_challenge("out2", "alice@interieur.gouv.fr", "tok-out2", now, 3600);
    assert!(store.create(c, LIMITS, now).await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "failures are bounded by the connect timeout, took {:?}",
        started.elapsed()
    );

    cluster.pg_ctl_start();
    let mut back = false;
    for _ in 0..100 {
        if store.get("out").await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the store reconnects by itself");
    assert_eq!(
        store.confirm(confirm_req("out", "s1", now)).await.unwrap(),
        ConfirmOutcome::Confirmed,
        "nothing was confirmed during the outage"
    );
}

/// Transactions committed in database `gk` so far, read once every gatekeeper connection has
/// closed: a backend reports its counts when it exits (or only every few seconds while idle),
/// so this is the only moment the figure is exact.
fn pg_xacts(cluster: &common::postgres::Cluster, column: &str) -> i64 {
    let closed = common::postgres::wait_until(Duration::from_secs(20), || {
        cluster.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gatekeeper'")
            == "0"
    });
    assert!(closed, "gatekeeper's connections closed");
    cluster
        .query(&format!(
            "SELECT {column} FROM pg_stat_database WHERE datname = 'gk'"
        ))
        .parse()
        .unwrap()
}

/// Group commit on PostgreSQL: 200 concurrent confirmations, released together, commit in
/// fewer transactions than confirmations (counted twice: the store's batch counter and the
/// server's own `xact_commit`), and every one is read back from another connection. In the
/// same burst, replies that conflict (a challenge already confirmed, one expired, one that
/// does not exist, a second copy of one reply) and one whose UPDATE the database refuses (a
/// trigger the test installs) each get their own outcome; none spoils its neighbours.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_confirmations_share_transactions() {
    let cluster = common::postgres::Cluster::start();
    let now = t0();
    const N: usize = 200;
    {
        let setup = PostgresStore::open(&cluster.config(), false).unwrap();
        let mut ids: Vec<String> = (0..N).map(|i| format!("c{i:03}")).collect();
        ids.extend(["done", "old", "poison"].map(String::from));
        for (i, id) in ids.iter().enumerate() {
            let ttl = if id == "old" { 1 } else { 3600 };
            let c = new_challenge(id, &format!("a{i}@interieur.gouv.fr"), id, now, ttl);
            assert_eq!(
                setup.create(c, LIMITS, now).await.unwrap(),
                CreateOutcome::Created
            );
        }
        let first = confirm_req("done", "s-first", now);
        assert_eq!(
            setup.confirm(first).await.unwrap(),
            ConfirmOutcome::Confirmed
        );
    }
    cluster.psql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.id = 'poison' THEN RAISE EXCEPTION 'refused by the test'; END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_poison BEFORE UPDATE ON challenges
           FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
        "gk",
    );
    let before = pg_xacts(&cluster, "xact_commit");
    let store = Arc::new(PostgresStore::open(&cluster.config(), false).unwrap());
    let batches_before = store.batches();
    // The N confirmations, then the odd ones; "c007" a second time (another session).
    let mut requests: Vec<(String, String)> = (0..N)
        .map(|i| (format!("c{i:03}"), format!("s{i}")))
        .collect();
    for (id, session) in [
        ("done", "s-late"),
        ("old", "s-old"),
        ("nowhere", "s-none"),
        ("c007", "s-copy"),
        ("poison", "s-poison"),
    ] {
        requests.push((id.into(), session.into()));
    }
    let later = now + chrono::Duration::seconds(10);
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let mut tasks = Vec::new();
    for (id, session) in requests.clone() {
        let (s, b) = (Arc::clone(&store), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            s.confirm(confirm_req(&id, &session, later)).await
        }));
    }
    let mut outcomes = std::collections::HashMap::new();
    for ((id, session), t) in requests.iter().zip(tasks) {
        outcomes.insert((id.clone(), session.clone()), t.await.unwrap());
    }
    let batches = store.batches() - batches_before;
    let confirmations = requests.len() as u64;
    println!("{confirmations} concurrent confirmations took {batches} batches");
    assert!(batches >= 1);
    assert!(
        batches < N as u64,
        "group commit: {batches} batches for {confirmations} confirmations"
    );

    let take = |id: &str, session: &str| outcomes[&(id.to_owned(), session.to_owned())].clone();
    // The two copies of "c007": exactly one wins, the other learns what the winner stored.
    let copies = [take("c007", "s7"), take("c007", "s-copy")];
    let won: Vec<_> = copies
        .iter()
        .filter(|o| matches!(o, Ok(ConfirmOutcome::Confirmed)))
        .collect();
    assert_eq!(won.len(), 1, "{copies:?}");
    assert!(
        copies
            .iter()
            .any(|o| matches!(o, Ok(ConfirmOutcome::AlreadyConfirmed(_)))),
        "{copies:?}"
    );
    for i in (0..N).filter(|&i| i != 7) {
        assert_eq!(
            take(&format!("c{i:03}"), &format!("s{i}")).unwrap(),
            ConfirmOutcome::Confirmed,
            "c{i:03}"
        );
    }
    match take("done", "s-late").unwrap() {
        ConfirmOutcome::AlreadyConfirmed(c) => assert_eq!(c.session_id, "s-first"),
        other => panic!("done: {other:?}"),
    }
    assert_eq!(take("old", "s-old").unwrap(), ConfirmOutcome::Expired);
    assert_eq!(take("nowhere", "s-none").unwrap(), ConfirmOutcome::NotFound);
    let refused = take("poison", "s-poison").unwrap_err();
    assert_eq!(refused.reason(), Reason::StoreUnavailable);
    drop(store);
    let xacts = pg_xacts(&cluster, "xact_commit") - before;
    println!("the server counted {xacts} transactions (the batches, the losers' reads, the open)");
    assert!(
        xacts < N as i64 / 4,
        "{xacts} transactions for {confirmations} confirmations"
    );

    // Every confirmation is durable and read back by a new connection; the refused one is not.
    let stored: i64 = cluster
        .query("SELECT count(*) FROM challenges WHERE status = 'confirmed'")
        .parse()
        .unwrap();
    assert_eq!(stored, N as i64 + 1, "the N, and \"done\" from before");
    assert_eq!(
        cluster.query("SELECT status FROM challenges WHERE id = 'poison'"),
        "pending"
    );
    let reader = PostgresStore::open(&cluster.config(), true).unwrap();
    for i in 0..N {
        let id = format!("c{i:03}");
        let c = reader.get(&id).await.unwrap().unwrap().confirmation;
        let expected = if i == 7 {
            // Whichever copy won is the one stored.
            match &copies[0] {
                Ok(ConfirmOutcome::Confirmed) => "s7",
                _ => "s-copy",
            }
        } else {
            &format!("s{i}")
        };
        assert_eq!(c.unwrap().session_id, expected, "{id}");
    }
}

/// A batch whose transaction fails (a deferred constraint trigger the test installs raises at
/// COMMIT) fails every caller in it with `store.unavailable` and stores nothing of it; the
/// server's `xact_rollback` shows the callers shared transactions. The same confirmations
/// succeed once the trigger is gone (nothing half-done was left behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_failed_batch_fails_every_caller_and_stores_nothing() {
    let cluster = common::postgres::Cluster::start();
    let now = t0();
    const N: usize = 100;
    {
        let setup = PostgresStore::open(&cluster.config(), false).unwrap();
        for i in 0..N {
            let c = new_challenge(
                &format!("f{i:02}"),
                &format!("b{i}@interieur.gouv.fr"),
                &format!("tf{i}"),
                now,
                3600,
            );
            setup.create(c, LIMITS, now).await.unwrap();
        }
    }
    cluster.psql(
        "CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'refused at commit by the test'; END $$;
         CREATE CONSTRAINT TRIGGER refuse_commit AFTER UPDATE ON challenges
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_commit();",
        "gk",
    );
    let confirm_all = |store: &Arc<PostgresStore>| {
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        (0..N)
            .map(|i| {
                let (s, b) = (Arc::clone(store), Arc::clone(&barrier));
                tokio::spawn(async move {
                    b.wait().await;
                    s.confirm(confirm_req(&format!("f{i:02}"), &format!("s{i}"), now))
                        .await
                })
            })
            .collect::<Vec<_>>()
    };
    let rollbacks_before = pg_xacts(&cluster, "xact_rollback");
    let store = Arc::new(PostgresStore::open(&cluster.config(), false).unwrap());
    for t in confirm_all(&store) {
        let err = t.await.unwrap().unwrap_err();
        assert_eq!(err.reason(), Reason::StoreUnavailable, "{err}");
    }
    assert_eq!(store.batches(), 0, "no batch committed");
    drop(store);
    let rollbacks = pg_xacts(&cluster, "xact_rollback") - rollbacks_before;
    println!("{N} failed confirmations were {rollbacks} failed transactions");
    assert!(
        (1..N as i64).contains(&rollbacks),
        "{rollbacks} failed transactions for {N} confirmations"
    );
    assert_eq!(
        cluster.query("SELECT count(*) FROM challenges WHERE status <> 'pending'"),
        "0",
        "nothing of a failed batch is stored"
    );

    cluster.psql("DROP TRIGGER refuse_commit ON challenges", "gk");
    let store = Arc::new(PostgresStore::open(&cluster.config(), false).unwrap());
    for t in confirm_all(&store) {
        assert_eq!(t.await.unwrap().unwrap(), ConfirmOutcome::Confirmed);
    }
    assert_eq!(
        cluster.query("SELECT count(*) FROM challenges WHERE status = 'confirmed'"),
        N.to_string()
    );
}

/// Two processes starting on the same empty file at the same moment both come up: the
/// migration is one `BEGIN IMMEDIATE` transaction that reads the version inside it, so the
/// second waits for the first and then finds nothing to do. 20 trials, two opens released
/// together by a barrier each time.
#[test]
fn sqlite_concurrent_first_opens_both_come_up() {
    for trial in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gk.db");
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let opens: Vec<_> = (0..2)
            .map(|_| {
                let (path, barrier) = (path.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    SqliteStore::open(&path, SqliteOptions::default()).map(drop)
                })
            })
            .collect();
        for o in opens {
            o.join()
                .unwrap()
                .unwrap_or_else(|e| panic!("trial {trial}: {e}"));
        }
    }
}

/// `tls = "require"`: rustls (ring) to a cluster with TLS on, the server certificate checked
/// against `ca_file`; a CA that did not sign it, or a server without TLS, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_require_verifies_the_server() {
    let cluster = common::postgres::Cluster::start();
    let mut config = cluster.config();
    config.tls = gatekeeper::config::PgTls::Require;
    // TLS required, the server has none: refused, not downgraded.
    let other_ca = tempfile::NamedTempFile::new().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(other_ca.path(), ck.cert.pem()).unwrap();
    config.ca_file = Some(other_ca.path().to_path_buf());
    assert!(
        PostgresStore::open(&config, false).is_err(),
        "no TLS on the server"
    );

    let ca = cluster.restart_with_tls();
    // The wrong CA: refused.
    assert!(
        PostgresStore::open(&config, false).is_err(),
        "a certificate the CA did not sign"
    );
    // The right CA: connected over TLS, and the session says so.
    config.ca_file = Some(ca);
    let mut open = Vec::new();
    for host in ["localhost", "127.0.0.1"] {
        config.url = format!("postgresql://gk@{host}:{}/gk", cluster.port);
        let store = PostgresStore::open(&config, false).unwrap_or_else(|e| panic!("{host}: {e}"));
        let now = t0();
        let c = new_challenge(host, "alice@interieur.gouv.fr", host, now, 3600);
        assert_eq!(
            store.create(c, LIMITS, now).await.unwrap(),
            CreateOutcome::Created
        );
        open.push(store);
    }
    assert_eq!(
        cluster
            .query(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE s.ssl AND a.usename = 'gk'"
            )
            .parse::<u32>()
            .map(|n| n > 0),
        Ok(true),
        "the store's connections use TLS"
    );
}

/// Probes (SPEC §10): created under the probes' shared limits (counted in the insert's
/// transaction, over all probes), found by id and by token hash, each analysis replacing the
/// report and counted, purged once long expired; a challenge lookup never sees a probe.
async fn probes_lifecycle_limits_and_purge(place: Place) {
    let store = place.open();
    let now = t0();
    let probe = |id: &str, token: &str, at: DateTime<Utc>| NewProbe {
        id: id.into(),
        token_hash: TokenHash::of(token),
        created_at: at,
        expires_at: at + chrono::Duration::seconds(3600),
    };
    let limits = RateLimits {
        max_pending: 2,
        max_per_hour: 10,
    };
    for (id, token) in [("p1", "ptok1"), ("p2", "ptok2")] {
        assert_eq!(
            store
                .create_probe(probe(id, token, now), limits, now)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
    }
    assert_eq!(
        store
            .create_probe(probe("p3", "ptok3", now), limits, now)
            .await
            .unwrap(),
        CreateOutcome::RateLimited {
            pending: 2,
            last_hour: 2
        }
    );
    assert!(store.get_probe("p3").await.unwrap().is_none());

    let p1 = store.get_probe("p1").await.unwrap().unwrap();
    assert_eq!(p1.token_hash, TokenHash::of("ptok1"));
    assert_eq!(
        (p1.analyses, p1.analysed_at, p1.report.clone()),
        (0, None, None)
    );
    let by_hash = store
        .find_probe_by_token_hash(&TokenHash::of("ptok1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_hash, p1);
    assert!(
        store
            .find_by_token_hash(&TokenHash::of("ptok1"))
            .await
            .unwrap()
            .is_none(),
        "a probe is never a challenge"
    );

    let later = now + chrono::Duration::seconds(60);
    for report in ["{\"n\":1}", "{\"n\":2}"] {
        assert!(
            store
                .record_probe_analysis("p1", report.into(), later)
                .await
                .unwrap()
        );
    }
    assert!(
        !store
            .record_probe_analysis("nope", "{}".into(), later)
            .await
            .unwrap()
    );
    let p1 = store.get_probe("p1").await.unwrap().unwrap();
    assert_eq!(p1.analyses, 2);
    assert_eq!(p1.analysed_at, Some(later));
    assert_eq!(p1.report.as_deref(), Some("{\"n\":2}"));

    // Expired probes no longer count against the pending limit, and the purge removes them.
    let after = now + chrono::Duration::seconds(7200);
    assert_eq!(
        store
            .create_probe(probe("p4", "ptok4", after), limits, after)
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    store
        .purge(now + chrono::Duration::seconds(3601))
        .await
        .unwrap();
    assert!(store.get_probe("p1").await.unwrap().is_none());
    assert!(store.get_probe("p4").await.unwrap().is_some());
}

/// `confirmed_signers` (for `gatekeeper domain-check`): the distinct `(d=, s=)` of confirmed
/// challenges at exactly the domain, newest first; not a pending one, not a subdomain, not a
/// domain that merely ends with the same letters.
async fn confirmed_signers_of_one_domain(place: Place) {
    let store = place.open();
    let now = t0();
    // (id, address, the signer of its confirmation: d=, s=; None = still pending)
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>);
    let cases: &[Case<'_>] = &[
        (
            "sig1",
            "alice@interieur.gouv.fr",
            Some(("interieur.gouv.fr", "s2024")),
        ),
        (
            "sig2",
            "bob@interieur.gouv.fr",
            Some(("interieur.onmicrosoft.com", "selector1-interieur-gouv-fr")),
        ),
        // The same signer again: listed once.
        (
            "sig3",
            "carol@interieur.gouv.fr",
            Some(("interieur.gouv.fr", "s2024")),
        ),
        (
            "sig4",
            "dan@sub.interieur.gouv.fr",
            Some(("sub.interieur.gouv.fr", "s1")),
        ),
        (
            "sig5",
            "eve@xinterieur.gouv.fr",
            Some(("xinterieur.gouv.fr", "s9")),
        ),
        // Pending: no evidence yet.
        ("sig6", "fay@interieur.gouv.fr", None),
    ];
    for (i, (id, address, signer)) in cases.iter().enumerate() {
        let created = now + chrono::Duration::seconds(i as i64);
        let c = new_challenge(id, address, &format!("tok-{id}"), created, 3600);
        assert_eq!(
            store.create(c, LIMITS, created).await.unwrap(),
            CreateOutcome::Created
        );
        if let Some((d, s)) = signer {
            let mut req = confirm_req(id, &format!("sess-{id}"), created);
            req.confirmation.evidence.dkim_domain = (*d).into();
            req.confirmation.evidence.dkim_selector = (*s).into();
            req.confirmation.message_id = Some(format!("{id}@interieur.gouv.fr"));
            assert!(
                matches!(store.confirm(req).await.unwrap(), ConfirmOutcome::Confirmed),
                "{id}"
            );
        }
    }
    let signer = |d: &str, s: &str| Signer {
        domain: d.into(),
        selector: s.into(),
    };
    assert_eq!(
        store.confirmed_signers("interieur.gouv.fr").await.unwrap(),
        vec![
            signer("interieur.gouv.fr", "s2024"),
            signer("interieur.onmicrosoft.com", "selector1-interieur-gouv-fr"),
        ],
        "newest first, distinct, only the domain itself"
    );
    assert_eq!(
        store
            .confirmed_signers("sub.interieur.gouv.fr")
            .await
            .unwrap(),
        vec![signer("sub.interieur.gouv.fr", "s1")]
    );
    assert!(
        store
            .confirmed_signers("culture.gouv.fr")
            .await
            .unwrap()
            .is_empty()
    );
}

/// Two endpoints: `a` wants everything, `b` only confirmations.
fn subscriptions() -> gatekeeper::store::outbox::Subscriptions {
    use gatekeeper::store::outbox::{CONFIRMED, EXPIRED, REJECTED, Subscription};
    vec![
        Subscription {
            endpoint: "http://127.0.0.1:1/a".into(),
            events: vec![CONFIRMED, REJECTED, EXPIRED],
        },
        Subscription {
            endpoint: "http://127.0.0.1:1/b".into(),
            events: vec![CONFIRMED],
        },
    ]
    .into()
}

/// The outbox (SPEC §11): a confirmation writes its deliveries in its own transaction (a
/// losing or late confirm writes none), a rejection before it is delivered first, an expiry
/// is reported once, and finished rows are never claimed again.
async fn outbox_rows_commit_with_their_state_change_in_order(place: Place) {
    use gatekeeper::store::outbox::Attempt;
    let store = place.open();
    store.set_webhooks(subscriptions());
    let now = t0();
    let lease = now + chrono::Duration::seconds(30);
    for (id, token, ttl) in [("ob1", "tok-ob1", 3600), ("ob2", "tok-ob2", 60)] {
        store
            .create(
                new_challenge(id, "alice@interieur.gouv.fr", token, now, ttl),
                LIMITS,
                now,
            )
            .await
            .unwrap();
    }
    store
        .record_rejection("ob1", rejected(Reason::DkimNone))
        .await
        .unwrap();
    let at = now + chrono::Duration::seconds(10);
    assert_eq!(
        store.confirm(confirm_req("ob1", "s1", at)).await.unwrap(),
        ConfirmOutcome::Confirmed
    );
    // The loser of a second confirm writes nothing; nor does a refused one after it.
    assert!(matches!(
        store.confirm(confirm_req("ob1", "s2", at)).await.unwrap(),
        ConfirmOutcome::AlreadyConfirmed(_)
    ));
    store
        .record_rejection("ob1", rejected(Reason::SpfFail))
        .await
        .unwrap();
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        3,
        "rejection to a, confirmation to a and b"
    );

    // Per challenge and endpoint, the oldest first: `a` gets the rejection, `b` the
    // confirmation; `a`'s confirmation waits for its rejection.
    let first = store.claim_deliveries(at, lease, 10).await.unwrap();
    let got: Vec<(&str, &str)> = first
        .iter()
        .map(|d| (d.endpoint.as_str(), d.event.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("http://127.0.0.1:1/a", "challenge.rejected"),
            ("http://127.0.0.1:1/b", "challenge.confirmed")
        ]
    );
    let body: serde_json::Value = serde_json::from_str(&first[1].payload).unwrap();
    assert_eq!(body["type"], "challenge.confirmed");
    assert_eq!(body["data"]["address"], "alice@interieur.gouv.fr");
    assert_eq!(body["data"]["evidence"]["dkim_domain"], "interieur.gouv.fr");
    assert!(
        first
            .iter()
            .all(|d| d.attempts == 1 && d.challenge_id == "ob1")
    );
    // Leased: nothing more is due, even the confirmation of `a`.
    assert!(
        store
            .claim_deliveries(at, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    for d in &first {
        store
            .finish_delivery(d.seq, Attempt::Delivered, at)
            .await
            .unwrap();
    }
    let second = store.claim_deliveries(at, lease, 10).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(
        (second[0].endpoint.as_str(), second[0].event.as_str()),
        ("http://127.0.0.1:1/a", "challenge.confirmed")
    );
    // A retry keeps its id and comes back at its time, with one more attempt.
    let retry_at = at + chrono::Duration::seconds(5);
    store
        .finish_delivery(
            second[0].seq,
            Attempt::Retry {
                at: retry_at,
                error: "HTTP 500".into(),
            },
            at,
        )
        .await
        .unwrap();
    assert!(
        store
            .claim_deliveries(at, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store.claim_deliveries(retry_at, lease, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].id, second[0].id,
        "webhook-id is stable across retries"
    );
    assert_eq!(again[0].attempts, 2);
    store
        .finish_delivery(
            again[0].seq,
            Attempt::GivenUp {
                error: "old".into(),
            },
            retry_at,
        )
        .await
        .unwrap();
    assert_eq!(store.outbox_backlog().await.unwrap(), 0);

    // Expiry: `ob2` (60 s) is reported once, to `a` only; `ob1` is confirmed, never expired.
    let late = now + chrono::Duration::seconds(120);
    assert_eq!(
        store.enqueue_expired(now, 100).await.unwrap(),
        0,
        "not yet expired"
    );
    assert_eq!(store.enqueue_expired(late, 100).await.unwrap(), 1);
    assert_eq!(store.enqueue_expired(late, 100).await.unwrap(), 0, "once");
    let expired = store
        .claim_deliveries(late, late + chrono::Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].event, "challenge.expired");
    assert_eq!(expired[0].challenge_id, "ob2");
    assert_eq!(expired[0].endpoint, "http://127.0.0.1:1/a");
}

/// Several instances claiming at once never take one row twice; a claim whose holder died
/// (never finished) comes back when its lease ends.
async fn outbox_claims_are_exclusive_leases_retaken_after_a_crash(place: Place) {
    let store = place.open();
    store.set_webhooks(subscriptions());
    let now = t0();
    for i in 0..20 {
        let id = format!("cl{i}");
        store
            .create(
                new_challenge(
                    &id,
                    "alice@interieur.gouv.fr",
                    &format!("tok-{id}"),
                    now,
                    3600,
                ),
                LIMITS,
                now,
            )
            .await
            .unwrap();
        store.confirm(confirm_req(&id, "s", now)).await.unwrap();
    }
    let lease = now + chrono::Duration::seconds(30);
    let instances: Vec<_> = (0..4).map(|_| place.open()).collect();
    let claims: Vec<_> = instances
        .iter()
        .map(|s| {
            let s = Arc::clone(s);
            tokio::spawn(async move { s.claim_deliveries(now, lease, 7).await.unwrap() })
        })
        .collect();
    let mut seqs = Vec::new();
    for c in claims {
        seqs.extend(c.await.unwrap().into_iter().map(|d| d.seq));
    }
    let total = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), total, "a row was claimed twice");
    assert_eq!(total, 28, "4 × 7 of the 40 rows");
    // The holders "die": before the lease ends nothing of theirs is due, after it all is.
    let rest = store.claim_deliveries(now, lease, 100).await.unwrap();
    assert_eq!(rest.len(), 40 - total);
    let after = store
        .claim_deliveries(lease, lease + chrono::Duration::seconds(30), 100)
        .await
        .unwrap();
    assert_eq!(after.len(), 40, "every lease ended, every row retaken");
    assert!(after.iter().all(|d| d.attempts == 2));
}
