//! The OpenID Provider's rows in SQLite (see `store/oidc.rs`): schema migration 2 and the
//! five operations, through the same writer thread (group commit) and read pool as the
//! challenges.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};

use super::SqliteStore;
use super::rows::millis;
use super::sql::{db, exec};
use crate::store::StoreError;
use crate::store::oidc::{CodeRecord, CodeTake, FlowRecord};

/// Migration 2: sign-in flows and authorization codes.
pub(super) const MIGRATION: &str = "CREATE TABLE oidc_flows (
        id TEXT PRIMARY KEY NOT NULL,
        version INTEGER NOT NULL,
        browser_hash BLOB NOT NULL,
        csrf TEXT NOT NULL,
        client_id TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        scope TEXT NOT NULL,
        state TEXT,
        nonce TEXT,
        code_challenge TEXT,
        challenge_id TEXT,
        finished INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX oidc_flows_by_expiry ON oidc_flows (expires_at);
    CREATE TABLE oidc_codes (
        code_hash BLOB PRIMARY KEY NOT NULL,
        client_id TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        code_challenge TEXT,
        nonce TEXT,
        scope TEXT NOT NULL,
        challenge_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        used INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX oidc_codes_by_expiry ON oidc_codes (expires_at);";

const FLOW_COLUMNS: &str =
    "id, version, browser_hash, csrf, client_id, redirect_uri, scope, state, nonce,
    code_challenge, challenge_id, finished, created_at, expires_at";
const CODE_COLUMNS: &str =
    "code_hash, client_id, redirect_uri, code_challenge, nonce, scope, challenge_id, expires_at";

impl SqliteStore {
    pub(super) fn oidc_save_flow(
        &self,
        f: FlowRecord,
    ) -> impl std::future::Future<Output = Result<bool, StoreError>> + Send + 'static {
        self.write(move |conn| {
            let values = params![
                f.id,
                f.version,
                &f.browser_hash[..],
                f.csrf,
                f.client_id,
                f.redirect_uri,
                f.scope,
                f.state,
                f.nonce,
                f.code_challenge,
                f.challenge_id,
                f.finished,
                f.created_at.timestamp_millis(),
                f.expires_at.timestamp_millis(),
            ];
            let n = if f.version <= 1 {
                exec(
                    conn,
                    &format!(
                        "INSERT OR IGNORE INTO oidc_flows ({FLOW_COLUMNS}) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                    ),
                    values,
                )
            } else {
                // Compare-and-swap: only the version this one was read as is replaced.
                exec(
                    conn,
                    "UPDATE oidc_flows SET version = ?2, browser_hash = ?3, csrf = ?4, client_id = ?5,
                        redirect_uri = ?6, scope = ?7, state = ?8, nonce = ?9, code_challenge = ?10,
                        challenge_id = ?11, finished = ?12, created_at = ?13, expires_at = ?14
                     WHERE id = ?1 AND version = ?2 - 1",
                    values,
                )
            }
            .map_err(db)?;
            Ok(n == 1)
        })
    }

    pub(super) fn oidc_get_flow(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Option<FlowRecord>, StoreError>> + Send + 'static
    {
        let id = id.to_owned();
        self.read_point(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {FLOW_COLUMNS} FROM oidc_flows WHERE id = ?1"
            ))
            .and_then(|mut st| st.query_row([&id], flow_row).optional())
            .map_err(db)?
            .transpose()
        })
    }

    pub(super) fn oidc_insert_code(
        &self,
        c: CodeRecord,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        self.write(move |conn| {
            exec(
                conn,
                &format!(
                    "INSERT INTO oidc_codes ({CODE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    &c.code_hash[..],
                    c.client_id,
                    c.redirect_uri,
                    c.code_challenge,
                    c.nonce,
                    c.scope,
                    c.challenge_id,
                    c.expires_at.timestamp_millis(),
                ],
            )
            .map_err(db)?;
            Ok(())
        })
    }

    pub(super) fn oidc_take_code(
        &self,
        hash: [u8; 32],
    ) -> impl std::future::Future<Output = Result<CodeTake, StoreError>> + Send + 'static {
        self.write(move |conn| {
            // One statement marks and returns: of two concurrent exchanges one gets the row.
            let taken = conn
                .prepare_cached(&format!(
                    "UPDATE oidc_codes SET used = 1 WHERE code_hash = ?1 AND used = 0 RETURNING {CODE_COLUMNS}"
                ))
                .and_then(|mut st| st.query_row([&hash[..]], code_row).optional())
                .map_err(db)?;
            if let Some(row) = taken {
                return Ok(CodeTake::Taken(row?));
            }
            let exists: bool = conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM oidc_codes WHERE code_hash = ?1)")
                .and_then(|mut st| st.query_row([&hash[..]], |r| r.get(0)))
                .map_err(db)?;
            Ok(if exists {
                CodeTake::AlreadyUsed
            } else {
                CodeTake::NotFound
            })
        })
    }

    pub(super) fn oidc_purge(
        &self,
        cutoff: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<u64, StoreError>> + Send + 'static {
        self.write(move |conn| {
            let ms = cutoff.timestamp_millis();
            let flows = exec(
                conn,
                "DELETE FROM oidc_flows WHERE expires_at < ?1",
                params![ms],
            )
            .map_err(db)?;
            let codes = exec(
                conn,
                "DELETE FROM oidc_codes WHERE expires_at < ?1",
                params![ms],
            )
            .map_err(db)?;
            Ok((flows + codes) as u64)
        })
    }
}

fn hash32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32], StoreError> {
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} length")))
}

fn count(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A flow row; conversion errors become [`StoreError::Corrupt`] (outer `Ok`) so that the
/// rusqlite closure itself never fails on data.
fn flow_row(r: &Row<'_>) -> rusqlite::Result<Result<FlowRecord, StoreError>> {
    let browser: Vec<u8> = r.get(2)?;
    let created: i64 = r.get(12)?;
    let expires: i64 = r.get(13)?;
    let version: i64 = r.get(1)?;
    let finished: bool = r.get(11)?;
    let (id, csrf, client_id, redirect_uri, scope) =
        (r.get(0)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?);
    let (state, nonce, code_challenge, challenge_id) =
        (r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?);
    Ok((|| {
        Ok(FlowRecord {
            id,
            version: count(version),
            browser_hash: hash32(browser, "browser_hash")?,
            csrf,
            client_id,
            redirect_uri,
            scope,
            state,
            nonce,
            code_challenge,
            challenge_id,
            finished,
            created_at: millis(created)?,
            expires_at: millis(expires)?,
        })
    })())
}

fn code_row(r: &Row<'_>) -> rusqlite::Result<Result<CodeRecord, StoreError>> {
    let hash: Vec<u8> = r.get(0)?;
    let expires: i64 = r.get(7)?;
    let (client_id, redirect_uri, code_challenge, nonce, scope, challenge_id) = (
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    );
    Ok((|| {
        Ok(CodeRecord {
            code_hash: hash32(hash, "code_hash")?,
            client_id,
            redirect_uri,
            code_challenge,
            nonce,
            scope,
            challenge_id,
            expires_at: millis(expires)?,
        })
    })())
}
