//! Benchmark behind `bench/store.sh`: the store's operations per second and its point-read
//! latency with 10^4, 10^5 and 10^6 challenges in the table, on SQLite and on PostgreSQL.
//!
//! The table is filled through SQL directly, with rows shaped as the store writes them
//! (`Store::create`'s columns, a SHA-256 token hash, millisecond times): `generate_series`
//! on PostgreSQL, one transaction of prepared inserts on SQLite, so filling 10^6 rows takes
//! seconds, not the hour a million API calls would. Then, at each size, through the store
//! itself: point reads by token hash (the SMTP path's lookup) one at a time, p50 and p99;
//! creations and confirmations by 64 concurrent callers, per second (durable: SQLite
//! `synchronous=FULL`, PostgreSQL as the cluster is configured).
//!
//! `store_scale sqlite DIR [SIZES]` or `store_scale postgres URL PASSWORD_FILE [SIZES]`
//! (SIZES: comma-separated, ascending, default `10000,100000,1000000`). Every count is
//! bounded; the only connection is to the given store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use gatekeeper::backend::Evidence;
use gatekeeper::config::{PgTls, PostgresConfig};
use gatekeeper::store::{
    ConfirmOutcome, ConfirmRequest, Confirmation, CreateOutcome, DynStore, NewChallenge,
    PostgresStore, RateLimits, SqliteOptions, SqliteStore, Store, TokenHash,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Point reads per size (their latencies give p50 and p99).
const READS: usize = 5000;
/// Creations and confirmations per size.
const WRITES: usize = 2000;
/// Concurrent callers of the write phases (the SMTP path has one per session).
const CALLERS: usize = 64;
const TAIL: &str = "x@verify.example.gouv.fr";

enum Backend {
    Sqlite(std::path::PathBuf),
    Postgres(PostgresConfig),
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (backend, sizes) = match args.first().map(String::as_str) {
        Some("sqlite") => (
            Backend::Sqlite(args.get(1).ok_or("DIR")?.into()),
            args.get(2),
        ),
        Some("postgres") => (
            Backend::Postgres(PostgresConfig {
                url: args.get(1).ok_or("URL")?.clone(),
                password_file: Some(args.get(2).ok_or("PASSWORD_FILE")?.into()),
                tls: PgTls::Disable,
                ca_file: None,
                pool_size: 16,
            }),
            args.get(3),
        ),
        _ => return Err("usage: store_scale sqlite DIR [SIZES] | postgres URL PW [SIZES]".into()),
    };
    let sizes: Vec<usize> = sizes
        .map(String::as_str)
        .unwrap_or("10000,100000,1000000")
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let name = match &backend {
        Backend::Sqlite(_) => "sqlite",
        Backend::Postgres(_) => "postgres",
    };
    let now = Utc::now();
    let store = Arc::new(open(&backend)?);
    let mut filled = 0;
    let mut extra = 0; // rows the write phases added (ids `w…`), not counted in `filled`
    for size in sizes {
        let t = Instant::now();
        fill(&backend, filled, size, now).await?;
        let fill_secs = t.elapsed().as_secs_f64();
        filled = size;

        let (p50, p99, reads_per_s) = point_reads(&store, size).await?;
        let creates_per_s = creations(&store, extra, now).await?;
        let confirms_per_s = confirmations(&store, extra, now).await?;
        extra += WRITES;
        println!(
            "{name} {size} rows (filled in {fill_secs:.1} s): point read p50 {p50:.1} µs p99 {p99:.1} µs ({reads_per_s:.0}/s one at a time); create {creates_per_s:.0}/s, confirm {confirms_per_s:.0}/s ({CALLERS} callers)"
        );
    }
    Ok(())
}

fn open(backend: &Backend) -> Result<DynStore, Error> {
    Ok(match backend {
        Backend::Sqlite(dir) => DynStore::new(SqliteStore::open(
            &dir.join("scale.db"),
            SqliteOptions::default(),
        )?),
        Backend::Postgres(c) => DynStore::new(PostgresStore::open(c, false)?),
    })
}

/// Rows `from..to` (ids `f<i>`, token `token<i>`), pending, expiring in a day.
async fn fill(backend: &Backend, from: usize, to: usize, now: DateTime<Utc>) -> Result<(), Error> {
    let created = now.timestamp_millis();
    let expires = (now + chrono::Duration::days(1)).timestamp_millis();
    match backend {
        Backend::Sqlite(dir) => {
            let mut conn = rusqlite::Connection::open(dir.join("scale.db"))?;
            conn.busy_timeout(Duration::from_secs(30))?;
            let tx = conn.transaction()?;
            {
                let mut st = tx.prepare(
                    "INSERT INTO challenges (id, address, token_hash, session_code, message_id_tail, status, created_at, expires_at)
                     VALUES (?1, ?2, ?3, '123456', ?4, 'pending', ?5, ?6)",
                )?;
                for i in from..to {
                    let hash = TokenHash::of(&format!("token{i}"));
                    st.execute(rusqlite::params![
                        format!("f{i:08}"),
                        format!("user{i}@interieur.gouv.fr"),
                        hash.as_bytes().as_slice(),
                        TAIL,
                        created,
                        expires
                    ])?;
                }
            }
            tx.commit()?;
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;")?;
        }
        Backend::Postgres(c) => {
            let mut config: tokio_postgres::Config = c.url.parse()?;
            if let Some(pw) = &c.password_file {
                let text = std::fs::read_to_string(pw)?;
                config.password(text.lines().next().unwrap_or_default());
            }
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            let driver = tokio::spawn(connection);
            let (from, to) = (i64::try_from(from)?, i64::try_from(to)? - 1);
            // sha256('token<i>') is TokenHash::of's digest of the same text.
            client
                .execute(
                    "INSERT INTO challenges (id, address, token_hash, session_code, message_id_tail, status, created_at, expires_at)
                     SELECT 'f' || lpad(i::text, 8, '0'), 'user' || i || '@interieur.gouv.fr',
                            sha256(convert_to('token' || i, 'UTF8')), '123456', $3, 'pending', $4, $5
                     FROM generate_series($1::bigint, $2::bigint) AS i",
                    &[&from, &to, &TAIL, &created, &expires],
                )
                .await?;
            client.batch_execute("VACUUM ANALYZE challenges").await?;
            drop(client);
            let _ = driver.await;
        }
    }
    Ok(())
}

/// `READS` lookups by token hash of rows spread over the table, one at a time: (p50 µs, p99
/// µs, reads per second).
async fn point_reads(store: &DynStore, size: usize) -> Result<(f64, f64, f64), Error> {
    let step = (size / READS).max(1);
    let mut lat = Vec::with_capacity(READS);
    let start = Instant::now();
    for k in 0..READS {
        let i = (k * step + k % step) % size;
        let hash = TokenHash::of(&format!("token{i}"));
        let t = Instant::now();
        let found = store.find_by_token_hash(&hash).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        if found.is_none() {
            return Err(format!("row {i} not found").into());
        }
    }
    let rate = READS as f64 / start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let at = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Ok((at(0.50), at(0.99), rate))
}

/// Run `f(i)` for i in `0..WRITES` on `CALLERS` tasks; operations per second.
async fn concurrently<F, Fut>(f: F) -> Result<f64, Error>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Error>> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (f, next) = (Arc::clone(&f), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= WRITES {
                        return Ok::<(), Error>(());
                    }
                    f(i).await?;
                }
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    Ok(WRITES as f64 / start.elapsed().as_secs_f64())
}

/// `WRITES` challenge creations (ids `w<base + i>`), each with its rate-limit counts.
async fn creations(store: &Arc<DynStore>, base: usize, now: DateTime<Utc>) -> Result<f64, Error> {
    let store = Arc::clone(store);
    let limits = RateLimits {
        max_pending: 100,
        max_per_hour: 1000,
    };
    concurrently(move |i| {
        let store = Arc::clone(&store);
        async move {
            let n = base + i;
            let c = NewChallenge {
                id: format!("w{n:08}"),
                address: format!("writer{n}@interieur.gouv.fr"),
                token_hash: TokenHash::of(&format!("wtoken{n}")),
                session_code: "123456".into(),
                message_id_tail: TAIL.into(),
                created_at: now,
                expires_at: now + chrono::Duration::days(1),
            };
            match store.create(c, limits, now).await? {
                CreateOutcome::Created => Ok(()),
                other => Err(format!("create: {other:?}").into()),
            }
        }
    })
    .await
}

/// `WRITES` confirmations of the challenges [`creations`] just made.
async fn confirmations(
    store: &Arc<DynStore>,
    base: usize,
    now: DateTime<Utc>,
) -> Result<f64, Error> {
    let store = Arc::clone(store);
    concurrently(move |i| {
        let store = Arc::clone(&store);
        async move {
            let n = base + i;
            let req = ConfirmRequest {
                id: format!("w{n:08}"),
                confirmation: Confirmation {
                    confirmed_at: now,
                    evidence: Evidence {
                        headers: "From: a\r\nSubject: b\r\n".repeat(20),
                        ..Evidence::default()
                    },
                    message_id: Some(format!("m{n}@interieur.gouv.fr")),
                    from: format!("writer{n}@interieur.gouv.fr"),
                    session_id: format!("s{n}"),
                    session_ended: false,
                },
                now,
            };
            match store.confirm(req).await? {
                ConfirmOutcome::Confirmed => Ok(()),
                other => Err(format!("confirm: {other:?}").into()),
            }
        }
    })
    .await
}
