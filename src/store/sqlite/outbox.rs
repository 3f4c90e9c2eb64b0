//! The SQL of the webhook outbox (schema 5, module docs of [`crate::store::outbox`]): rows
//! inserted inside the writer's group commit by the confirm, the rejection counts and the
//! expiry sweep; leases and outcomes written by the sender.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::sql::{self, db, exec};
use crate::store::outbox::{
    self, Attempt, CONFIRMED, Delivery, EXPIRED, NewDelivery, Payload, REJECTED, Subscription,
};
use crate::store::{ConfirmOutcome, ConfirmRequest, Rejection, StoreError, postgres::millis};

pub(super) const MIGRATION: &str = "CREATE TABLE webhook_outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        endpoint TEXT NOT NULL,
        event TEXT NOT NULL,
        challenge_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        lease_until INTEGER,
        last_error TEXT,
        done_at INTEGER,
        outcome TEXT CHECK (outcome IN ('delivered', 'given_up'))
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE done_at IS NULL;
    CREATE INDEX webhook_outbox_order ON webhook_outbox (endpoint, challenge_id, seq) WHERE done_at IS NULL;
    CREATE UNIQUE INDEX webhook_outbox_expired_once ON webhook_outbox (endpoint, challenge_id)
        WHERE event = 'challenge.expired';
    CREATE INDEX webhook_outbox_done ON webhook_outbox (done_at) WHERE done_at IS NOT NULL;";

/// Insert `rows` (in this transaction). An expiry already recorded is skipped.
pub(super) fn insert(conn: &Connection, rows: &[NewDelivery]) -> Result<(), StoreError> {
    for r in rows {
        let at = r.created_at.timestamp_millis();
        exec(
            conn,
            "INSERT OR IGNORE INTO webhook_outbox (id, endpoint, event, challenge_id, payload, created_at, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![r.id, r.endpoint, r.event, r.challenge_id, r.payload, at],
        )
        .map_err(db)?;
    }
    Ok(())
}

/// The conditional confirmation ([`sql::confirm`]) and, when it wins, its deliveries: they
/// commit with the confirmation, or neither does (SPEC §11).
pub(super) fn confirm(
    conn: &Connection,
    req: &ConfirmRequest,
    subs: &[Subscription],
) -> Result<ConfirmOutcome, StoreError> {
    let outcome = sql::confirm(conn, req)?;
    if outcome == ConfirmOutcome::Confirmed
        && outbox::wanted(subs, CONFIRMED)
        && let Some(address) = address(conn, &req.id)?
    {
        let c = &req.confirmation;
        let body = Payload::confirmed(&req.id, &address, c)?;
        insert(
            conn,
            &outbox::rows(subs, CONFIRMED, &req.id, &body, c.confirmed_at)?,
        )?;
    }
    Ok(outcome)
}

/// The rejection count ([`sql::add_rejections`]) and, when it counted, its
/// `challenge.rejected`, in the same transaction (module docs of `store::outbox`).
pub(super) fn add_rejections(
    conn: &Connection,
    id: &str,
    n: u32,
    last: &Rejection,
    subs: &[Subscription],
) -> Result<(), StoreError> {
    if sql::add_rejections(conn, id, n, last)?
        && outbox::wanted(subs, REJECTED)
        && let Some(address) = address(conn, id)?
    {
        let body = Payload::rejected(id, &address, last, n);
        insert(conn, &outbox::rows(subs, REJECTED, id, &body, last.at)?)?;
    }
    Ok(())
}

/// The address of a challenge (for a body), if it exists.
pub(super) fn address(conn: &Connection, id: &str) -> Result<Option<String>, StoreError> {
    conn.prepare_cached("SELECT address FROM challenges WHERE id = ?1")
        .and_then(|mut st| st.query_row(params![id], |r| r.get(0)).optional())
        .map_err(db)
}

/// `challenge.expired` rows for challenges past `expires_at` and still pending.
pub(super) fn enqueue_expired(
    conn: &Connection,
    subs: &[Subscription],
    now: DateTime<Utc>,
    limit: u32,
) -> Result<u64, StoreError> {
    let mut n = 0u64;
    for s in subs.iter().filter(|s| s.events.contains(&EXPIRED)) {
        let found: Vec<(String, String, i64)> = conn
            .prepare_cached(
                "SELECT c.id, c.address, c.expires_at FROM challenges c
                 WHERE c.status = 'pending' AND c.expires_at <= ?1
                   AND NOT EXISTS (SELECT 1 FROM webhook_outbox o
                       WHERE o.endpoint = ?2 AND o.challenge_id = c.id AND o.event = 'challenge.expired')
                 ORDER BY c.expires_at LIMIT ?3",
            )
            .and_then(|mut st| {
                st.query_map(params![now.timestamp_millis(), s.endpoint, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect()
            })
            .map_err(db)?;
        for (id, address, expires_ms) in found {
            let body = Payload::expired(&id, &address, millis(expires_ms)?);
            let rows = outbox::rows(std::slice::from_ref(s), EXPIRED, &id, &body, now)?;
            insert(conn, &rows)?;
            n += 1;
        }
    }
    Ok(n)
}

/// A leased row as SQLite returns it: seq, id, endpoint, event, challenge, body, created, attempts.
type ClaimedRow = (i64, String, String, String, String, String, i64, i64);

/// Lease the due rows (module docs of [`crate::store::outbox`]).
pub(super) fn claim(
    conn: &Connection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<Delivery>, StoreError> {
    let raw: Vec<ClaimedRow> = conn
        .prepare_cached(
            "UPDATE webhook_outbox SET lease_until = ?2, attempts = attempts + 1
             WHERE seq IN (
                 SELECT o.seq FROM webhook_outbox o
                 WHERE o.done_at IS NULL AND o.next_attempt_at <= ?1
                   AND (o.lease_until IS NULL OR o.lease_until <= ?1)
                   AND NOT EXISTS (SELECT 1 FROM webhook_outbox p
                       WHERE p.endpoint = o.endpoint AND p.challenge_id = o.challenge_id
                         AND p.done_at IS NULL AND p.seq < o.seq)
                 ORDER BY o.seq LIMIT ?3)
             RETURNING seq, id, endpoint, event, challenge_id, payload, created_at, attempts",
        )
        .and_then(|mut st| {
            st.query_map(
                params![
                    now.timestamp_millis(),
                    lease_until.timestamp_millis(),
                    limit
                ],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                },
            )?
            .collect()
        })
        .map_err(db)?;
    let mut out = raw
        .into_iter()
        .map(
            |(seq, id, endpoint, event, challenge_id, payload, created, attempts)| {
                Ok(Delivery {
                    seq,
                    id,
                    endpoint,
                    event,
                    challenge_id,
                    payload,
                    created_at: millis(created)?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                })
            },
        )
        .collect::<Result<Vec<_>, StoreError>>()?;
    // RETURNING does not promise an order.
    out.sort_by_key(|d| d.seq);
    Ok(out)
}

pub(super) fn finish(
    conn: &Connection,
    seq: i64,
    attempt: &Attempt,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let now_ms = now.timestamp_millis();
    match attempt {
        Attempt::Delivered => exec(
            conn,
            "UPDATE webhook_outbox SET done_at = ?2, outcome = 'delivered', lease_until = NULL WHERE seq = ?1",
            params![seq, now_ms],
        ),
        Attempt::Retry { at, error } => exec(
            conn,
            "UPDATE webhook_outbox SET next_attempt_at = ?2, lease_until = NULL, last_error = ?3 WHERE seq = ?1",
            params![seq, at.timestamp_millis(), error],
        ),
        Attempt::GivenUp { error } => exec(
            conn,
            "UPDATE webhook_outbox SET done_at = ?2, outcome = 'given_up', lease_until = NULL, last_error = ?3 WHERE seq = ?1",
            params![seq, now_ms, error],
        ),
    }
    .map_err(db)?;
    Ok(())
}

/// Rows finished before `cutoff` (kept until then for inspection).
pub(super) fn purge(conn: &Connection, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    let n = exec(
        conn,
        "DELETE FROM webhook_outbox WHERE done_at IS NOT NULL AND done_at < ?1",
        params![cutoff.timestamp_millis()],
    )
    .map_err(db)?;
    Ok(n as u64)
}

pub(super) fn backlog(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM webhook_outbox WHERE done_at IS NULL")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .map_err(db)?;
    Ok(u64::try_from(n).unwrap_or(0))
}
