//! The `probes` table in PostgreSQL (SPEC §10), the twin of `store/sqlite/probes.rs`: insert
//! under the probes' shared limits (one advisory transaction lock for all probes, so two
//! instances cannot both pass them), point reads, the latest analysis, and the purge.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{LOCK_CLASS, PostgresStore, millis, pg};
use crate::store::{CreateOutcome, NewProbe, ProbeRecord, RateLimits, StoreError, TokenHash};

/// Key of the probes' creation lock within [`LOCK_CLASS`] (1 is the migration lock, 2 the
/// purge lock; addresses use `hashtext(address)` under the same class, which may collide with
/// 3 only at the cost of one address waiting for a probe creation).
const PROBE_LOCK: i32 = 3;

const COLUMNS: &str = "id, token_hash, created_at, expires_at, analyses, analysed_at, report";

impl PostgresStore {
    pub(super) async fn probe_create(
        &self,
        p: NewProbe,
        limits: RateLimits,
        now: DateTime<Utc>,
    ) -> Result<CreateOutcome, StoreError> {
        let now_ms = now.timestamp_millis();
        let hour_ago = now_ms.saturating_sub(3_600_000);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&LOCK_CLASS, &PROBE_LOCK],
        )
        .await
        .map_err(pg)?;
        let count = |row: Row| -> Result<u32, StoreError> {
            let n: i64 = row.try_get(0).map_err(pg)?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        };
        let pending = count(
            tx.query_one(
                "SELECT COUNT(*) FROM probes WHERE expires_at > $1",
                &[&now_ms],
            )
            .await
            .map_err(pg)?,
        )?;
        let last_hour = count(
            tx.query_one(
                "SELECT COUNT(*) FROM probes WHERE created_at >= $1",
                &[&hour_ago],
            )
            .await
            .map_err(pg)?,
        )?;
        if pending >= limits.max_pending || last_hour >= limits.max_per_hour {
            tx.rollback().await.map_err(pg)?;
            return Ok(CreateOutcome::RateLimited { pending, last_hour });
        }
        tx.execute(
            "INSERT INTO probes (id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            &[
                &p.id,
                &p.token_hash.as_bytes().as_slice(),
                &p.created_at.timestamp_millis(),
                &p.expires_at.timestamp_millis(),
            ],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(CreateOutcome::Created)
    }

    pub(super) async fn probe_by_id(&self, id: &str) -> Result<Option<ProbeRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM probes WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg)?;
        row.map(|r| probe_row(&r)).transpose()
    }

    pub(super) async fn probe_by_token_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<ProbeRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM probes WHERE token_hash = $1"),
                &[&hash.as_bytes().as_slice()],
            )
            .await
            .map_err(pg)?;
        row.map(|r| probe_row(&r)).transpose()
    }

    pub(super) async fn probe_record_analysis(
        &self,
        id: &str,
        report: String,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE probes SET report = $2, analysed_at = $3, analyses = analyses + 1
                 WHERE id = $1",
                &[&id, &report, &at.timestamp_millis()],
            )
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    /// Inside the purge's transaction, under its lock (one instance at a time).
    pub(super) async fn probe_purge(
        tx: &tokio_postgres::Transaction<'_>,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        tx.execute(
            "DELETE FROM probes WHERE expires_at < $1",
            &[&cutoff.timestamp_millis()],
        )
        .await
        .map_err(pg)
    }
}

/// Checked conversion: corrupt data is a [`StoreError`], never a panic.
fn probe_row(r: &Row) -> Result<ProbeRecord, StoreError> {
    let id: String = r.try_get(0).map_err(pg)?;
    let hash: Vec<u8> = r.try_get(1).map_err(pg)?;
    let analyses: i64 = r.try_get(4).map_err(pg)?;
    let analysed: Option<i64> = r.try_get(5).map_err(pg)?;
    Ok(ProbeRecord {
        token_hash: TokenHash::from_stored(&hash)
            .ok_or_else(|| StoreError::Corrupt(format!("probe {id}: token hash")))?,
        created_at: millis(r.try_get(2).map_err(pg)?)?,
        expires_at: millis(r.try_get(3).map_err(pg)?)?,
        analyses: u32::try_from(analyses).unwrap_or(u32::MAX),
        analysed_at: analysed.map(millis).transpose()?,
        report: r.try_get(6).map_err(pg)?,
        id,
    })
}
