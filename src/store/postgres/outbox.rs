//! The webhook outbox on PostgreSQL (schema 5, module docs of [`crate::store::outbox`]). Rows
//! are inserted in the transaction of the state change; several instances share the table,
//! and each due row is sent by one of them: the claim is one `UPDATE … WHERE seq IN (SELECT
//! … FOR UPDATE SKIP LOCKED)` that sets a lease, so two instances claiming at once take
//! different rows, and a killed instance's rows come back when their lease ends.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::{PostgresStore, millis, pg};
use crate::store::StoreError;
use crate::store::outbox::{self, Attempt, Delivery, EXPIRED, NewDelivery, Payload};

pub(super) const MIGRATION: &str = "CREATE TABLE webhook_outbox (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        endpoint TEXT NOT NULL,
        event TEXT NOT NULL,
        challenge_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        lease_until BIGINT,
        last_error TEXT,
        done_at BIGINT,
        outcome TEXT CHECK (outcome IN ('delivered', 'given_up'))
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE done_at IS NULL;
    CREATE INDEX webhook_outbox_order ON webhook_outbox (endpoint, challenge_id, seq) WHERE done_at IS NULL;
    CREATE UNIQUE INDEX webhook_outbox_expired_once ON webhook_outbox (endpoint, challenge_id)
        WHERE event = 'challenge.expired';
    CREATE INDEX webhook_outbox_done ON webhook_outbox (done_at) WHERE done_at IS NOT NULL;";

/// Insert `rows` through `client` (the caller's transaction). An expiry already recorded is
/// skipped.
pub(super) async fn insert(
    client: &impl GenericClient,
    rows: &[NewDelivery],
) -> Result<(), StoreError> {
    for r in rows {
        let at = r.created_at.timestamp_millis();
        client
            .execute(
                "INSERT INTO webhook_outbox (id, endpoint, event, challenge_id, payload, created_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT DO NOTHING",
                &[&r.id, &r.endpoint, &r.event, &r.challenge_id, &r.payload, &at],
            )
            .await
            .map_err(pg)?;
    }
    Ok(())
}

impl PostgresStore {
    pub(super) async fn outbox_enqueue_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let subs = self.subscriptions();
        let mut n = 0u64;
        for s in subs.iter().filter(|s| s.events.contains(&EXPIRED)) {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let found = tx
                .query(
                    "SELECT c.id, c.address, c.expires_at FROM challenges c
                     WHERE c.status = 'pending' AND c.expires_at <= $1
                       AND NOT EXISTS (SELECT 1 FROM webhook_outbox o
                           WHERE o.endpoint = $2 AND o.challenge_id = c.id AND o.event = 'challenge.expired')
                     ORDER BY c.expires_at LIMIT $3",
                    &[&now.timestamp_millis(), &s.endpoint, &i64::from(limit)],
                )
                .await
                .map_err(pg)?;
            for row in found {
                let id: String = row.try_get(0).map_err(pg)?;
                let address: String = row.try_get(1).map_err(pg)?;
                let expires: i64 = row.try_get(2).map_err(pg)?;
                let body = Payload::expired(&id, &address, millis(expires)?);
                let rows = outbox::rows(std::slice::from_ref(s), EXPIRED, &id, &body, now)?;
                // Two instances sweeping together: the unique index keeps one row.
                insert(&tx, &rows).await?;
                n += 1;
            }
            tx.commit().await.map_err(pg)?;
        }
        Ok(n)
    }

    pub(super) async fn outbox_claim(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "UPDATE webhook_outbox SET lease_until = $2, attempts = attempts + 1
                 WHERE seq IN (
                     SELECT o.seq FROM webhook_outbox o
                     WHERE o.done_at IS NULL AND o.next_attempt_at <= $1
                       AND (o.lease_until IS NULL OR o.lease_until <= $1)
                       AND NOT EXISTS (SELECT 1 FROM webhook_outbox p
                           WHERE p.endpoint = o.endpoint AND p.challenge_id = o.challenge_id
                             AND p.done_at IS NULL AND p.seq < o.seq)
                     ORDER BY o.seq LIMIT $3
                     FOR UPDATE SKIP LOCKED)
                 RETURNING seq, id, endpoint, event, challenge_id, payload, created_at, attempts",
                &[
                    &now.timestamp_millis(),
                    &lease_until.timestamp_millis(),
                    &i64::from(limit),
                ],
            )
            .await
            .map_err(pg)?;
        let mut out = rows
            .iter()
            .map(|r| {
                let created: i64 = r.try_get(6).map_err(pg)?;
                let attempts: i64 = r.try_get(7).map_err(pg)?;
                Ok(Delivery {
                    seq: r.try_get(0).map_err(pg)?,
                    id: r.try_get(1).map_err(pg)?,
                    endpoint: r.try_get(2).map_err(pg)?,
                    event: r.try_get(3).map_err(pg)?,
                    challenge_id: r.try_get(4).map_err(pg)?,
                    payload: r.try_get(5).map_err(pg)?,
                    created_at: millis(created)?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort_by_key(|d| d.seq);
        Ok(out)
    }

    pub(super) async fn outbox_finish(
        &self,
        seq: i64,
        attempt: Attempt,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let now_ms = now.timestamp_millis();
        match &attempt {
            Attempt::Delivered => client
                .execute(
                    "UPDATE webhook_outbox SET done_at = $2, outcome = 'delivered', lease_until = NULL WHERE seq = $1",
                    &[&seq, &now_ms],
                )
                .await,
            Attempt::Retry { at, error } => client
                .execute(
                    "UPDATE webhook_outbox SET next_attempt_at = $2, lease_until = NULL, last_error = $3 WHERE seq = $1",
                    &[&seq, &at.timestamp_millis(), error],
                )
                .await,
            Attempt::GivenUp { error } => client
                .execute(
                    "UPDATE webhook_outbox SET done_at = $2, outcome = 'given_up', lease_until = NULL, last_error = $3 WHERE seq = $1",
                    &[&seq, &now_ms, error],
                )
                .await,
        }
        .map_err(pg)?;
        Ok(())
    }

    pub(super) async fn outbox_backlog_count(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM webhook_outbox WHERE done_at IS NULL",
                &[],
            )
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
