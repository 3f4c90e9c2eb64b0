//! The SQL statements of the store, each a function of a connection: the writer runs the
//! write statements inside its group commit, the readers the selects and counts.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{COLUMNS, RawRow};
use crate::store::{
    ChallengeRecord, ConfirmOutcome, ConfirmRequest, CreateOutcome, MAX_SIGNER_ROWS, NewChallenge,
    RateLimits, Rejection, Signer, StoreError, TokenHash, signers_of,
};

/// Run one statement through the connection's prepared-statement cache: the same few
/// statements run for every message, and parsing them again each time cost more CPU than
/// executing them (profiled under bench/run.sh).
pub(super) fn exec(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

fn count(conn: &Connection, sql: &str, address: &str, at_ms: i64) -> Result<u32, StoreError> {
    let n: i64 = conn
        .prepare_cached(sql)
        .and_then(|mut st| st.query_row(params![address, at_ms], |r| r.get(0)))
        .map_err(db)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

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

/// A SQLite failure as a [`StoreError`], cause kept; a lock is told apart (`Busy`).
pub(super) fn db(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Busy(Arc::new(e))
        }
        _ => StoreError::Database(Arc::new(e)),
    }
}

const COUNT_PENDING: &str =
    "SELECT COUNT(*) FROM challenges WHERE address = ?1 AND status = 'pending' AND expires_at > ?2";
const COUNT_CREATED: &str =
    "SELECT COUNT(*) FROM challenges WHERE address = ?1 AND created_at >= ?2";

/// Pending, unexpired challenges of `address` at `now_ms`.
pub(super) fn pending_count(
    conn: &Connection,
    address: &str,
    now_ms: i64,
) -> Result<u32, StoreError> {
    count(conn, COUNT_PENDING, address, now_ms)
}

/// [`crate::store::Store::confirmed_signers`]: `at` is `@domain`; the suffix is compared
/// exactly (not with LIKE, whose `_` would match any character).
pub(super) fn confirmed_signers(conn: &Connection, at: &str) -> Result<Vec<Signer>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT evidence FROM challenges
             WHERE status = 'confirmed' AND evidence IS NOT NULL
               AND substr(address, -length(?1)) = ?1
             ORDER BY confirmed_at DESC LIMIT ?2",
        )
        .map_err(db)?;
    let rows = st
        .query_map(params![at, MAX_SIGNER_ROWS], |r| r.get::<_, String>(0))
        .map_err(db)?;
    let texts: Vec<String> = rows.filter_map(Result::ok).collect();
    Ok(signers_of(texts))
}

/// Challenges of `address` created at or after `since_ms`.
pub(super) fn created_since(
    conn: &Connection,
    address: &str,
    since_ms: i64,
) -> Result<u32, StoreError> {
    count(conn, COUNT_CREATED, address, since_ms)
}

/// Insert `c` unless its address is past a limit, counted in the same transaction.
pub(super) fn create(
    conn: &Connection,
    c: &NewChallenge,
    limits: RateLimits,
    now: DateTime<Utc>,
) -> Result<CreateOutcome, StoreError> {
    let now_ms = now.timestamp_millis();
    let hour_ago = now_ms.saturating_sub(3_600_000);
    let pending = pending_count(conn, &c.address, now_ms)?;
    let last_hour = created_since(conn, &c.address, hour_ago)?;
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
            c.token_hash.as_bytes().as_slice(),
            c.session_code,
            c.message_id_tail,
            c.created_at.timestamp_millis(),
            c.expires_at.timestamp_millis()
        ],
    )
    .map_err(db)?;
    Ok(CreateOutcome::Created)
}

/// The challenge with this id.
pub(super) fn by_id(conn: &Connection, id: &str) -> Result<Option<ChallengeRecord>, StoreError> {
    select_one(conn, "WHERE id = ?1", &id as &dyn rusqlite::ToSql)
}

/// The challenge whose token hashes to `hash`.
pub(super) fn by_token_hash(
    conn: &Connection,
    hash: &TokenHash,
) -> Result<Option<ChallengeRecord>, StoreError> {
    let bytes = hash.as_bytes().as_slice();
    select_one(
        conn,
        "WHERE token_hash = ?1",
        &bytes as &dyn rusqlite::ToSql,
    )
}

pub(super) fn delete(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    let n = exec(conn, "DELETE FROM challenges WHERE id = ?1", params![id]).map_err(db)?;
    Ok(n > 0)
}

/// The conditional confirmation (pending and unexpired), and on a miss what beat it.
pub(super) fn confirm(
    conn: &Connection,
    req: &ConfirmRequest,
) -> Result<ConfirmOutcome, StoreError> {
    let c = &req.confirmation;
    let evidence =
        serde_json::to_string(&c.evidence).map_err(|e| StoreError::Evidence(Arc::new(e)))?;
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
    // Lost the race, or not confirmable: the single writer serialises this read with every
    // other write, so what it sees is what beat us.
    Ok(match by_id(conn, &req.id)? {
        None => ConfirmOutcome::NotFound,
        Some(ChallengeRecord {
            confirmation: Some(existing),
            ..
        }) => ConfirmOutcome::AlreadyConfirmed(Box::new(existing)),
        Some(_) => ConfirmOutcome::Expired,
    })
}

/// Add `n` refused replies to a pending challenge, `last` the latest of them. True when the
/// challenge was pending (counted).
pub(super) fn add_rejections(
    conn: &Connection,
    id: &str,
    n: u32,
    last: &Rejection,
) -> Result<bool, StoreError> {
    let changed = exec(
        conn,
        "UPDATE challenges SET rejections = rejections + ?1, last_rejection = ?3 WHERE id = ?2 AND status = 'pending'",
        params![n, id, last.to_stored()],
    )
    .map_err(db)?;
    Ok(changed == 1)
}

/// Mark one session's confirmations ended.
pub(super) fn session_ended(conn: &Connection, session_id: &str) -> Result<u64, StoreError> {
    let n = exec(
        conn,
        "UPDATE challenges SET confirm_session_ended = 1 WHERE confirm_session = ?1",
        params![session_id],
    )
    .map_err(db)?;
    Ok(n as u64)
}

/// Mark every confirming session ended (start-up, see [`crate::store::Store::end_open_sessions`]).
pub(super) fn end_open_sessions(conn: &Connection) -> Result<u64, StoreError> {
    let n = exec(
        conn,
        "UPDATE challenges SET confirm_session_ended = 1 \
         WHERE confirm_session IS NOT NULL AND confirm_session_ended = 0",
        [],
    )
    .map_err(db)?;
    Ok(n as u64)
}

pub(super) fn purge(conn: &Connection, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    let n = exec(
        conn,
        "DELETE FROM challenges WHERE expires_at < ?1",
        params![cutoff.timestamp_millis()],
    )
    .map_err(db)?;
    Ok(n as u64)
}
