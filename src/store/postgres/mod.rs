//! The PostgreSQL store (`store.url`, SPEC §7): several instances share one database.
//!
//! # How the invariants hold across instances
//!
//! - **One confirmation.** [`Store::confirm`] is one `UPDATE … WHERE status = 'pending' AND
//!   expires_at > now`, committed before the future resolves. Under READ COMMITTED a second
//!   concurrent `UPDATE` of the row waits for the first to commit, re-reads the row and
//!   matches nothing; the loser then reads what the winner stored (redelivery detection).
//! - **Group commit.** The confirmations of one instance are committed by one committer
//!   (module `batch`), many to a transaction, each in its own savepoint, as SQLite's writer
//!   does: each caller is answered after the COMMIT that holds its row, a failed transaction
//!   fails every caller in it (`451`), a conflicting or refused row fails only its own.
//!   Rows are locked in id order in every multi-row write, so instances do not deadlock.
//!   [`PostgresStore::batches`] counts the batches. The gathered rejection counts are
//!   written the same way, all of them in one transaction per flush.
//! - **Global rate limits.** [`Store::create`] takes `pg_advisory_xact_lock` on the address
//!   (class [`LOCK_CLASS`], key `hashtext(address)`) before counting and inserting, so two
//!   instances cannot both pass the limit for one address; other addresses do not wait.
//! - **Rejections** are counted in the row, by every instance (`rejections + n`).
//! - **Purge** runs under `pg_try_advisory_xact_lock`: one instance at a time purges, the
//!   others skip that round (they return 0).
//! - **Outage.** Every call takes a connection from a [`deadpool_postgres`] pool with a
//!   bounded wait; a database that is down or restarting makes the call fail with
//!   [`StoreError`] (`store.unavailable`: SMTP `451`, API `503`), never a wrong answer. A
//!   dead connection is dropped at its next recycle and a new one is opened on demand, so
//!   the store recovers by itself when the database is back.
//!
//! Other writes are each their own transaction on a pooled connection. Challenge creation
//! stays so on purpose: its per-address advisory lock is held from the count to the COMMIT,
//! and in a shared batch it would be held for the whole batch, making creations for one
//! address (the global limit) wait on unrelated ones. The SMTP path's writes are the
//! confirmations and the rejection counts, and both are batched.
//!
//! # Files
//!
//! - `batch`: the confirmations' group commit.
//! - `schema`: versioned migrations under a session advisory lock.
//! - `oidc`: the OpenID Provider's flows and codes.
//! - `tls`: rustls (ring) for `tls = "require"`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Row;

use super::outbox::{
    Attempt, Delivery, Payload, REJECTED, Subscription, Subscriptions, rows, wanted,
};
use super::{
    ChallengeRecord, ConfirmOutcome, ConfirmRequest, Confirmation, CreateOutcome, MAX_SIGNER_ROWS,
    NewChallenge, NewProbe, ProbeRecord, RateLimits, Rejection, Signer, Store, StoreError,
    TokenHash, signers_of,
};
use crate::backend::Evidence;
use crate::config::{PgTls, PostgresConfig};

mod batch;
mod oidc;
mod outbox;
mod probes;
mod schema;
mod tls;

/// First key of every advisory lock this store takes (`gk` in ASCII), so they do not collide
/// with another application's locks in the same database.
pub(super) const LOCK_CLASS: i32 = 0x676b;
/// Second key of the purge lock (addresses use `hashtext`, which may collide with it; a
/// collision only makes a create wait for a purge).
const PURGE_LOCK: i32 = 2;
/// How long a call waits for a pooled connection or a new one before failing (`451`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long rejection counts gather before one write adds them up (as in SQLite).
const REJECTION_FLUSH: Duration = Duration::from_millis(200);

const COLUMNS: &str = "id, address, token_hash, session_code, message_id_tail, status, created_at, expires_at,
    rejections, confirmed_at, evidence, confirm_message_id, confirm_from, confirm_session, confirm_session_ended,
    last_rejection";

/// The PostgreSQL store; cheap to share (`Arc` inside the pool).
pub struct PostgresStore {
    pool: Pool,
    /// Rejection counts not yet written (see [`Store::count_rejection`]).
    /// Each with the latest refusal among them (`last_rejection`).
    rejections: Arc<Mutex<HashMap<String, (u32, Rejection)>>>,
    /// The `[[webhook]]` subscriptions (see [`Store::set_webhooks`]).
    webhooks: Arc<Mutex<Subscriptions>>,
    /// Where [`Store::confirm`] queues its row for the next group commit (module `batch`).
    committer: batch::Committer,
}

/// A driver error as a [`StoreError`].
pub(super) fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::Postgres(Arc::new(e))
}

pub(super) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Pool(Arc::new(e))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

impl PostgresStore {
    /// Connect, migrate (or, read-only, check the version) and build the pool. Blocking: the
    /// migration runs on a runtime of its own on a thread of its own, so this works from a
    /// runtime's thread as well as outside one.
    pub fn open(config: &PostgresConfig, read_only: bool) -> Result<Self, StoreError> {
        let pg_config = pg_config(config)?;
        let connector = tls::connector(config)?;
        let migrate_config = pg_config.clone();
        let migrate_connector = connector.clone();
        let migrated = std::thread::Builder::new()
            .name("gatekeeper-pg-migrate".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| StoreError::io("migration runtime", e))?;
                rt.block_on(async move {
                    let (mut client, connection) = match migrate_connector {
                        tls::Connector::Plain => {
                            let (c, conn) = migrate_config
                                .connect(tokio_postgres::NoTls)
                                .await
                                .map_err(pg)?;
                            (c, tokio::spawn(conn))
                        }
                        tls::Connector::Rustls(t) => {
                            let (c, conn) = migrate_config.connect(t).await.map_err(pg)?;
                            (c, tokio::spawn(conn))
                        }
                    };
                    let result = schema::migrate(&mut client, read_only).await;
                    drop(client);
                    let _ = connection.await;
                    result
                })
            })
            .map_err(|e| StoreError::io("migration thread", e))?;
        migrated
            .join()
            .map_err(|_| StoreError::Corrupt("migration thread panicked".into()))??;

        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match connector {
            tls::Connector::Plain => {
                Manager::from_config(pg_config, tokio_postgres::NoTls, manager_config)
            }
            tls::Connector::Rustls(t) => Manager::from_config(pg_config, t, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Corrupt(format!("pool: {e}")))?;
        let webhooks = Arc::new(Mutex::new(Arc::from(Vec::new())));
        let committer = batch::Committer::spawn(pool.clone(), Arc::clone(&webhooks))?;
        Ok(Self {
            pool,
            rejections: Arc::default(),
            webhooks,
            committer,
        })
    }

    /// Confirmation batches committed so far, each holding one or more confirmations
    /// (module `batch`; the tests prove that N concurrent confirmations take fewer than N).
    pub fn batches(&self) -> u64 {
        self.committer.batches()
    }

    fn subscriptions(&self) -> Subscriptions {
        crate::lock(&self.webhooks).clone()
    }

    /// A pooled connection (also for `gatekeeper store migrate`, which copies rows in one
    /// transaction of its own).
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn select_one(
        &self,
        clause: &str,
        key: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<Option<ChallengeRecord>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM challenges {clause}");
        let st = client.prepare_cached(&sql).await.map_err(pg)?;
        let row = client.query_opt(&st, &[key]).await.map_err(pg)?;
        row.map(|r| record(&r)).transpose()
    }

    async fn count(&self, sql: &str, address: &str, at: i64) -> Result<u32, StoreError> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one(sql, &[&address, &at])
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Write the gathered counts of `only` (one id) or of every id.
    async fn write_rejections(&self, only: Option<&str>) -> Result<(), StoreError> {
        let batch: Vec<(String, (u32, Rejection))> = {
            let mut map = self.rejections.lock().unwrap_or_else(|p| p.into_inner());
            match only {
                Some(id) => map
                    .remove(id)
                    .map(|n| (id.to_owned(), n))
                    .into_iter()
                    .collect(),
                None => map.drain().collect(),
            }
        };
        if batch.is_empty() {
            return Ok(());
        }
        // Rows locked in id order, as the confirmation batches lock theirs (module `batch`):
        // two multi-row writers never wait for each other in a cycle.
        let mut batch = batch;
        batch.sort_by(|a, b| a.0.cmp(&b.0));
        let result = add_rejections(&self.pool, &batch, &self.subscriptions()).await;
        if result.is_err() {
            // Put them back: the next flush tries again.
            let mut map = self.rejections.lock().unwrap_or_else(|p| p.into_inner());
            for (id, (n, last)) in batch {
                let entry = map.entry(id).or_insert((0, last));
                entry.0 = entry.0.saturating_add(n);
                if last.at >= entry.1.at {
                    entry.1 = last;
                }
            }
        }
        result
    }
}

async fn add_rejections(
    pool: &Pool,
    batch: &[(String, (u32, Rejection))],
    subs: &[Subscription],
) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg)?;
    for (id, (n, last)) in batch {
        // Several instances write refusals of one challenge, each after its own delay: the
        // latest refusal wins by its time, not by the order of the writes.
        let updated = tx
            .query_opt(
                "UPDATE challenges SET rejections = rejections + $1,
                last_rejection = CASE
                    WHEN last_rejection IS NULL
                      OR (last_rejection::json->>'at')::bigint <= $3 THEN $4
                    ELSE last_rejection END
             WHERE id = $2 AND status = 'pending' RETURNING address",
                &[
                    &i64::from(*n),
                    id,
                    &last.at.timestamp_millis(),
                    &last.to_stored(),
                ],
            )
            .await
            .map_err(pg)?;
        // Reported in the same transaction as the count (module docs of `store::outbox`).
        if let Some(row) = updated
            && wanted(subs, REJECTED)
        {
            let address: String = row.try_get(0).map_err(pg)?;
            let body = Payload::rejected(id, &address, last, *n);
            let rows = rows(subs, REJECTED, id, &body, last.at)?;
            self::outbox::insert(&tx, &rows).await?;
        }
    }
    tx.commit().await.map_err(pg)
}

/// The driver's configuration from `[store]`: the URL, the password file, TLS mode.
fn pg_config(config: &PostgresConfig) -> Result<tokio_postgres::Config, StoreError> {
    let mut c: tokio_postgres::Config = config
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| StoreError::Corrupt(format!("store.url: {e}")))?;
    if let Some(path) = &config.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StoreError::io(path.display().to_string(), e))?;
        c.password(text.lines().next().unwrap_or_default());
    }
    c.ssl_mode(match config.tls {
        PgTls::Require => tokio_postgres::config::SslMode::Require,
        PgTls::Disable => tokio_postgres::config::SslMode::Disable,
    });
    c.connect_timeout(CONNECT_TIMEOUT);
    // A link cut without a reset (a cable, a firewall, a host gone) leaves a pooled
    // connection open with nothing answering: a statement on it would wait for TCP's own
    // retransmission timeout (about 15 min). Data unacknowledged this long drops the
    // connection, so the call fails as `store.unavailable` and the pool opens a new one
    // (tested: tests/hosts.rs cuts one instance's link to the database).
    c.tcp_user_timeout(CONNECT_TIMEOUT);
    c.application_name("gatekeeper");
    Ok(c)
}

fn record(r: &Row) -> Result<ChallengeRecord, StoreError> {
    let get = |e: tokio_postgres::Error| pg(e);
    let token_hash: Vec<u8> = r.try_get(2).map_err(get)?;
    let status: String = r.try_get(5).map_err(get)?;
    let confirmation = match status.as_str() {
        "pending" => None,
        "confirmed" => {
            let evidence: Option<String> = r.try_get(10).map_err(get)?;
            let evidence: Evidence =
                serde_json::from_str(evidence.as_deref().ok_or_else(|| corrupt("no evidence"))?)
                    .map_err(|e| StoreError::Evidence(Arc::new(e)))?;
            let confirmed_at: Option<i64> = r.try_get(9).map_err(get)?;
            let from: Option<String> = r.try_get(12).map_err(get)?;
            let session: Option<String> = r.try_get(13).map_err(get)?;
            Some(Confirmation {
                confirmed_at: millis(confirmed_at.ok_or_else(|| corrupt("no confirmed_at"))?)?,
                evidence,
                message_id: r.try_get(11).map_err(get)?,
                from: from.ok_or_else(|| corrupt("no confirm_from"))?,
                session_id: session.ok_or_else(|| corrupt("no confirm_session"))?,
                session_ended: r.try_get(14).map_err(get)?,
            })
        }
        other => return Err(StoreError::Corrupt(format!("status {other}"))),
    };
    let rejections: i64 = r.try_get(8).map_err(get)?;
    let last_rejection: Option<String> = r.try_get(15).map_err(get)?;
    Ok(ChallengeRecord {
        last_rejection: last_rejection
            .as_deref()
            .map(Rejection::from_stored)
            .transpose()?,
        id: r.try_get(0).map_err(get)?,
        address: r.try_get(1).map_err(get)?,
        token_hash: TokenHash::from_stored(&token_hash)
            .ok_or_else(|| corrupt("token_hash length"))?,
        session_code: r.try_get(3).map_err(get)?,
        message_id_tail: r.try_get(4).map_err(get)?,
        created_at: millis(r.try_get(6).map_err(get)?)?,
        expires_at: millis(r.try_get(7).map_err(get)?)?,
        rejections: u32::try_from(rejections).unwrap_or(u32::MAX),
        confirmation,
    })
}

pub(super) fn millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms}")))
}

const COUNT_PENDING: &str =
    "SELECT COUNT(*) FROM challenges WHERE address = $1 AND status = 'pending' AND expires_at > $2";
const COUNT_CREATED: &str =
    "SELECT COUNT(*) FROM challenges WHERE address = $1 AND created_at >= $2";

impl Store for PostgresStore {
    async fn create(
        &self,
        c: NewChallenge,
        limits: RateLimits,
        now: DateTime<Utc>,
    ) -> Result<CreateOutcome, StoreError> {
        let now_ms = now.timestamp_millis();
        let hour_ago = now_ms.saturating_sub(3_600_000);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Every instance creating for this address queues here until this one commits.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&LOCK_CLASS, &c.address],
        )
        .await
        .map_err(pg)?;
        let count = |row: Row| -> Result<u32, StoreError> {
            let n: i64 = row.try_get(0).map_err(pg)?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        };
        let pending = count(
            tx.query_one(COUNT_PENDING, &[&c.address, &now_ms])
                .await
                .map_err(pg)?,
        )?;
        let last_hour = count(
            tx.query_one(COUNT_CREATED, &[&c.address, &hour_ago])
                .await
                .map_err(pg)?,
        )?;
        if pending >= limits.max_pending || last_hour >= limits.max_per_hour {
            tx.rollback().await.map_err(pg)?;
            return Ok(CreateOutcome::RateLimited { pending, last_hour });
        }
        tx.execute(
            "INSERT INTO challenges (id, address, token_hash, session_code, message_id_tail, status, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)",
            &[
                &c.id,
                &c.address,
                &c.token_hash.as_bytes().as_slice(),
                &c.session_code,
                &c.message_id_tail,
                &c.created_at.timestamp_millis(),
                &c.expires_at.timestamp_millis(),
            ],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(CreateOutcome::Created)
    }

    async fn get(&self, id: &str) -> Result<Option<ChallengeRecord>, StoreError> {
        // Read-your-writes for the gathered rejection counts (as SQLite's `get`).
        self.write_rejections(Some(id)).await?;
        self.select_one("WHERE id = $1", &id).await
    }

    async fn find_by_token_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<ChallengeRecord>, StoreError> {
        let bytes = hash.as_bytes().as_slice();
        self.select_one("WHERE token_hash = $1", &bytes).await
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM challenges WHERE id = $1", &[&id])
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn confirm(&self, req: ConfirmRequest) -> Result<ConfirmOutcome, StoreError> {
        let evidence = serde_json::to_string(&req.confirmation.evidence)
            .map_err(|e| StoreError::Evidence(Arc::new(e)))?;
        // This challenge's refusals still gathering are written first (as `get` does), so
        // their count and their `challenge.rejected` come before the confirmation.
        self.write_rejections(Some(&req.id)).await?;
        // One batch of the committer (module `batch`): the confirmation and its deliveries
        // commit together (SPEC §11), durable (synchronous_commit) when the answer comes.
        let (answer, won) = tokio::sync::oneshot::channel();
        self.committer
            .submit(batch::Job {
                id: req.id.clone(),
                confirmation: req.confirmation,
                evidence,
                now_ms: req.now.timestamp_millis(),
                answer,
            })
            .await?;
        if won.await.map_err(|_| StoreError::Closed)?? {
            return Ok(ConfirmOutcome::Confirmed);
        }
        // Lost, or not confirmable: a concurrent winner has committed (our UPDATE waited for
        // its row lock, or ran after it in the same batch), so this later read sees what it
        // stored.
        Ok(
            match self.select_one("WHERE id = $1", &req.id.as_str()).await? {
                None => ConfirmOutcome::NotFound,
                Some(ChallengeRecord {
                    confirmation: Some(existing),
                    ..
                }) => ConfirmOutcome::AlreadyConfirmed(Box::new(existing)),
                Some(_) => ConfirmOutcome::Expired,
            },
        )
    }

    async fn record_rejection(&self, id: &str, rejection: Rejection) -> Result<(), StoreError> {
        add_rejections(
            &self.pool,
            &[(id.to_owned(), (1, rejection))],
            &self.subscriptions(),
        )
        .await
    }

    fn count_rejection(&self, id: &str, rejection: Rejection) {
        let first = {
            let mut map = self.rejections.lock().unwrap_or_else(|p| p.into_inner());
            let first = map.is_empty();
            let entry = map.entry(id.to_owned()).or_insert((0, rejection));
            entry.0 = entry.0.saturating_add(1);
            if rejection.at >= entry.1.at {
                entry.1 = rejection;
            }
            first
        };
        if !first {
            return;
        }
        // The first count since a flush schedules one flush; without a runtime (not on the
        // SMTP path) the counts wait for the next `get` or `flush_rejections`.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        let map = Arc::clone(&self.rejections);
        let webhooks = Arc::clone(&self.webhooks);
        let committer = self.committer.clone();
        handle.spawn(async move {
            tokio::time::sleep(REJECTION_FLUSH).await;
            let store = PostgresStore {
                pool,
                rejections: map,
                webhooks,
                committer,
            };
            if let Err(e) = store.write_rejections(None).await {
                tracing::warn!(error = %e, "store: rejection counts not written yet");
            }
        });
    }

    fn queue_depth(&self) -> usize {
        self.committer.queued()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(pg)?;
        Ok(())
    }

    async fn session_ended(&self, session_id: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE challenges SET confirm_session_ended = TRUE WHERE confirm_session = $1",
                &[&session_id],
            )
            .await
            .map_err(pg)
    }

    async fn purge(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let mine: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1, $2)",
                &[&LOCK_CLASS, &PURGE_LOCK],
            )
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        if !mine {
            // Another instance is purging right now.
            return Ok(0);
        }
        let n = tx
            .execute(
                "DELETE FROM challenges WHERE expires_at < $1",
                &[&cutoff.timestamp_millis()],
            )
            .await
            .map_err(pg)?;
        Self::probe_purge(&tx, cutoff).await?;
        tx.execute(
            "DELETE FROM webhook_outbox WHERE done_at IS NOT NULL AND done_at < $1",
            &[&cutoff.timestamp_millis()],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(n)
    }

    async fn pending_count(&self, address: &str, now: DateTime<Utc>) -> Result<u32, StoreError> {
        self.count(COUNT_PENDING, address, now.timestamp_millis())
            .await
    }

    async fn confirmed_signers(&self, domain: &str) -> Result<Vec<Signer>, StoreError> {
        let at = format!("@{domain}");
        let limit = i64::from(MAX_SIGNER_ROWS);
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT evidence FROM challenges
                 WHERE status = 'confirmed' AND evidence IS NOT NULL
                   AND right(address, length($1)) = $1
                 ORDER BY confirmed_at DESC LIMIT $2",
                &[&at, &limit],
            )
            .await
            .map_err(pg)?;
        Ok(signers_of(rows.iter().filter_map(|r| {
            r.try_get::<_, Option<String>>(0).ok().flatten()
        })))
    }

    async fn created_since(&self, address: &str, since: DateTime<Utc>) -> Result<u32, StoreError> {
        self.count(COUNT_CREATED, address, since.timestamp_millis())
            .await
    }

    async fn end_open_sessions(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE challenges SET confirm_session_ended = TRUE
                 WHERE confirm_session IS NOT NULL AND NOT confirm_session_ended",
                &[],
            )
            .await
            .map_err(pg)
    }

    async fn flush_rejections(&self) {
        if let Err(e) = self.write_rejections(None).await {
            tracing::warn!(error = %e, "store: rejection counts lost at exit");
        }
    }

    async fn save_flow(&self, flow: super::oidc::FlowRecord) -> Result<bool, StoreError> {
        self.oidc_save_flow(flow).await
    }

    async fn get_flow(&self, id: &str) -> Result<Option<super::oidc::FlowRecord>, StoreError> {
        self.oidc_get_flow(id).await
    }

    async fn insert_code(&self, code: super::oidc::CodeRecord) -> Result<(), StoreError> {
        self.oidc_insert_code(code).await
    }

    async fn take_code(&self, hash: [u8; 32]) -> Result<super::oidc::CodeTake, StoreError> {
        self.oidc_take_code(hash).await
    }

    async fn purge_oidc(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        self.oidc_purge(cutoff).await
    }

    fn set_webhooks(&self, subscriptions: Subscriptions) {
        *crate::lock(&self.webhooks) = subscriptions;
    }

    async fn enqueue_expired(&self, now: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        self.outbox_enqueue_expired(now, limit).await
    }

    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.outbox_claim(now, lease_until, limit).await
    }

    async fn finish_delivery(
        &self,
        seq: i64,
        attempt: Attempt,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.outbox_finish(seq, attempt, now).await
    }

    async fn outbox_backlog(&self) -> Result<u64, StoreError> {
        self.outbox_backlog_count().await
    }

    async fn create_probe(
        &self,
        probe: NewProbe,
        limits: RateLimits,
        now: DateTime<Utc>,
    ) -> Result<CreateOutcome, StoreError> {
        self.probe_create(probe, limits, now).await
    }

    async fn get_probe(&self, id: &str) -> Result<Option<ProbeRecord>, StoreError> {
        self.probe_by_id(id).await
    }

    async fn find_probe_by_token_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<ProbeRecord>, StoreError> {
        self.probe_by_token_hash(hash).await
    }

    async fn record_probe_analysis(
        &self,
        id: &str,
        report: String,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.probe_record_analysis(id, report, at).await
    }
}
