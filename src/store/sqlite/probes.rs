//! The SQL of the `probes` table (SPEC §10): insert under the probes' shared limits, point
//! reads, the latest analysis, and the purge of expired probes.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::sql::{db, exec};
use crate::store::{CreateOutcome, NewProbe, ProbeRecord, RateLimits, StoreError, TokenHash};

const COLUMNS: &str = "id, token_hash, created_at, expires_at, analyses, analysed_at, report";

fn count(conn: &Connection, sql: &str, at_ms: i64) -> Result<u32, StoreError> {
    let n: i64 = conn
        .prepare_cached(sql)
        .and_then(|mut st| st.query_row(params![at_ms], |r| r.get(0)))
        .map_err(db)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Insert `p` unless the probes as a whole are past a limit, counted in this transaction.
pub(super) fn create(
    conn: &Connection,
    p: &NewProbe,
    limits: RateLimits,
    now: DateTime<Utc>,
) -> Result<CreateOutcome, StoreError> {
    let now_ms = now.timestamp_millis();
    let pending = count(
        conn,
        "SELECT COUNT(*) FROM probes WHERE expires_at > ?1",
        now_ms,
    )?;
    let last_hour = count(
        conn,
        "SELECT COUNT(*) FROM probes WHERE created_at >= ?1",
        now_ms.saturating_sub(3_600_000),
    )?;
    if pending >= limits.max_pending || last_hour >= limits.max_per_hour {
        return Ok(CreateOutcome::RateLimited { pending, last_hour });
    }
    exec(
        conn,
        "INSERT INTO probes (id, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            p.id,
            p.token_hash.as_bytes().as_slice(),
            p.created_at.timestamp_millis(),
            p.expires_at.timestamp_millis()
        ],
    )
    .map_err(db)?;
    Ok(CreateOutcome::Created)
}

type Raw = (String, Vec<u8>, i64, i64, i64, Option<i64>, Option<String>);

fn select(
    conn: &Connection,
    clause: &str,
    key: &dyn rusqlite::ToSql,
) -> Result<Option<ProbeRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM probes {clause}");
    let raw: Option<Raw> = conn
        .prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_row([key], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .optional()
        })
        .map_err(db)?;
    raw.map(into_record).transpose()
}

/// Checked conversion: corrupt data is a [`StoreError`], never a panic.
fn into_record(raw: Raw) -> Result<ProbeRecord, StoreError> {
    let (id, hash, created, expires, analyses, analysed, report) = raw;
    let time = |ms: i64| {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .ok_or_else(|| StoreError::Corrupt(format!("probe {id}: time {ms}")))
    };
    Ok(ProbeRecord {
        token_hash: TokenHash::from_stored(&hash)
            .ok_or_else(|| StoreError::Corrupt(format!("probe {id}: token hash")))?,
        created_at: time(created)?,
        expires_at: time(expires)?,
        analyses: u32::try_from(analyses).unwrap_or(u32::MAX),
        analysed_at: analysed.map(time).transpose()?,
        report,
        id,
    })
}

pub(super) fn by_id(conn: &Connection, id: &str) -> Result<Option<ProbeRecord>, StoreError> {
    select(conn, "WHERE id = ?1", &id as &dyn rusqlite::ToSql)
}

pub(super) fn by_token_hash(
    conn: &Connection,
    hash: &TokenHash,
) -> Result<Option<ProbeRecord>, StoreError> {
    let bytes = hash.as_bytes().as_slice();
    select(
        conn,
        "WHERE token_hash = ?1",
        &bytes as &dyn rusqlite::ToSql,
    )
}

/// The latest analysis replaces the report; the count says how many mails were analysed.
pub(super) fn record_analysis(
    conn: &Connection,
    id: &str,
    report: &str,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = exec(
        conn,
        "UPDATE probes SET report = ?2, analysed_at = ?3, analyses = analyses + 1 WHERE id = ?1",
        params![id, report, at.timestamp_millis()],
    )
    .map_err(db)?;
    Ok(n > 0)
}

pub(super) fn purge(conn: &Connection, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    let n = exec(
        conn,
        "DELETE FROM probes WHERE expires_at < ?1",
        params![cutoff.timestamp_millis()],
    )
    .map_err(db)?;
    Ok(n as u64)
}
