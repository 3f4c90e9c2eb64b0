//! The OpenID Provider's rows in PostgreSQL (see `store/oidc.rs`): the same compare-and-swap
//! save and single-use take as SQLite, each one statement, so two instances behind one load
//! balancer cannot both move a flow on or both use a code.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{PostgresStore, millis, pg};
use crate::store::StoreError;
use crate::store::oidc::{CodeRecord, CodeTake, FlowRecord};

const FLOW_COLUMNS: &str =
    "id, version, browser_hash, csrf, client_id, redirect_uri, scope, state, nonce,
    code_challenge, challenge_id, finished, created_at, expires_at";
const CODE_COLUMNS: &str =
    "code_hash, client_id, redirect_uri, code_challenge, nonce, scope, challenge_id, expires_at";

impl PostgresStore {
    pub(super) async fn oidc_save_flow(&self, f: FlowRecord) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let version = i64::from(f.version);
        let values: [&(dyn tokio_postgres::types::ToSql + Sync); 14] = [
            &f.id,
            &version,
            &f.browser_hash.as_slice(),
            &f.csrf,
            &f.client_id,
            &f.redirect_uri,
            &f.scope,
            &f.state,
            &f.nonce,
            &f.code_challenge,
            &f.challenge_id,
            &f.finished,
            &f.created_at.timestamp_millis(),
            &f.expires_at.timestamp_millis(),
        ];
        let n = if f.version <= 1 {
            client
                .execute(
                    &format!(
                        "INSERT INTO oidc_flows ({FLOW_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                         ON CONFLICT (id) DO NOTHING"
                    ),
                    &values,
                )
                .await
        } else {
            // Compare-and-swap: only the version this one was read as is replaced.
            client
                .execute(
                    "UPDATE oidc_flows SET version = $2, browser_hash = $3, csrf = $4, client_id = $5,
                        redirect_uri = $6, scope = $7, state = $8, nonce = $9, code_challenge = $10,
                        challenge_id = $11, finished = $12, created_at = $13, expires_at = $14
                     WHERE id = $1 AND version = $2 - 1",
                    &values,
                )
                .await
        }
        .map_err(pg)?;
        Ok(n == 1)
    }

    pub(super) async fn oidc_get_flow(&self, id: &str) -> Result<Option<FlowRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {FLOW_COLUMNS} FROM oidc_flows WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg)?;
        row.map(|r| flow_row(&r)).transpose()
    }

    pub(super) async fn oidc_insert_code(&self, c: CodeRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "INSERT INTO oidc_codes ({CODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ),
                &[
                    &c.code_hash.as_slice(),
                    &c.client_id,
                    &c.redirect_uri,
                    &c.code_challenge,
                    &c.nonce,
                    &c.scope,
                    &c.challenge_id,
                    &c.expires_at.timestamp_millis(),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    pub(super) async fn oidc_take_code(&self, hash: [u8; 32]) -> Result<CodeTake, StoreError> {
        let client = self.client().await?;
        // One statement marks and returns: of two concurrent exchanges one gets the row.
        let taken = client
            .query_opt(
                &format!(
                    "UPDATE oidc_codes SET used = TRUE WHERE code_hash = $1 AND NOT used RETURNING {CODE_COLUMNS}"
                ),
                &[&hash.as_slice()],
            )
            .await
            .map_err(pg)?;
        if let Some(row) = taken {
            return Ok(CodeTake::Taken(code_row(&row)?));
        }
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM oidc_codes WHERE code_hash = $1)",
                &[&hash.as_slice()],
            )
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        Ok(if exists {
            CodeTake::AlreadyUsed
        } else {
            CodeTake::NotFound
        })
    }

    pub(super) async fn oidc_purge(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let ms = cutoff.timestamp_millis();
        let flows = client
            .execute("DELETE FROM oidc_flows WHERE expires_at < $1", &[&ms])
            .await
            .map_err(pg)?;
        let codes = client
            .execute("DELETE FROM oidc_codes WHERE expires_at < $1", &[&ms])
            .await
            .map_err(pg)?;
        Ok(flows + codes)
    }
}

fn hash32(bytes: &[u8], what: &str) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} length")))
}

fn flow_row(r: &Row) -> Result<FlowRecord, StoreError> {
    let browser: Vec<u8> = r.try_get(2).map_err(pg)?;
    let version: i64 = r.try_get(1).map_err(pg)?;
    Ok(FlowRecord {
        id: r.try_get(0).map_err(pg)?,
        version: u32::try_from(version).unwrap_or(u32::MAX),
        browser_hash: hash32(&browser, "browser_hash")?,
        csrf: r.try_get(3).map_err(pg)?,
        client_id: r.try_get(4).map_err(pg)?,
        redirect_uri: r.try_get(5).map_err(pg)?,
        scope: r.try_get(6).map_err(pg)?,
        state: r.try_get(7).map_err(pg)?,
        nonce: r.try_get(8).map_err(pg)?,
        code_challenge: r.try_get(9).map_err(pg)?,
        challenge_id: r.try_get(10).map_err(pg)?,
        finished: r.try_get(11).map_err(pg)?,
        created_at: millis(r.try_get(12).map_err(pg)?)?,
        expires_at: millis(r.try_get(13).map_err(pg)?)?,
    })
}

fn code_row(r: &Row) -> Result<CodeRecord, StoreError> {
    let hash: Vec<u8> = r.try_get(0).map_err(pg)?;
    Ok(CodeRecord {
        code_hash: hash32(&hash, "code_hash")?,
        client_id: r.try_get(1).map_err(pg)?,
        redirect_uri: r.try_get(2).map_err(pg)?,
        code_challenge: r.try_get(3).map_err(pg)?,
        nonce: r.try_get(4).map_err(pg)?,
        scope: r.try_get(5).map_err(pg)?,
        challenge_id: r.try_get(6).map_err(pg)?,
        expires_at: millis(r.try_get(7).map_err(pg)?)?,
    })
}
