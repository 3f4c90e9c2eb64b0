//! The PostgreSQL schema and its versioned migrations, applied at open under a session
//! advisory lock so that instances starting together migrate once, one after the other.
//!
//! Times are Unix milliseconds (UTC) in `BIGINT`, as in SQLite, so a row moves between the
//! two stores unchanged. A database written by a newer program is refused at start.

use tokio_postgres::Client;

use super::{LOCK_CLASS, pg};
use crate::store::StoreError;

/// Key of the migration lock within [`LOCK_CLASS`].
const MIGRATION_LOCK: i32 = 1;

/// Migrations in order; index + 1 is the version each produces.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: challenges and their confirmation.
    "CREATE TABLE challenges (
        id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        token_hash BYTEA NOT NULL UNIQUE,
        session_code TEXT NOT NULL,
        message_id_tail TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed')),
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        rejections BIGINT NOT NULL DEFAULT 0,
        confirmed_at BIGINT,
        evidence TEXT,
        confirm_message_id TEXT,
        confirm_from TEXT,
        confirm_session TEXT,
        confirm_session_ended BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX challenges_by_address ON challenges (address, created_at);
    CREATE INDEX challenges_by_expiry ON challenges (expires_at);
    CREATE INDEX challenges_by_session ON challenges (confirm_session) WHERE confirm_session IS NOT NULL;",
    // 2: the OpenID Provider's sign-in flows and codes.
    "CREATE TABLE oidc_flows (
        id TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        browser_hash BYTEA NOT NULL,
        csrf TEXT NOT NULL,
        client_id TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        scope TEXT NOT NULL,
        state TEXT,
        nonce TEXT,
        code_challenge TEXT,
        challenge_id TEXT,
        finished BOOLEAN NOT NULL DEFAULT FALSE,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX oidc_flows_by_expiry ON oidc_flows (expires_at);
    CREATE TABLE oidc_codes (
        code_hash BYTEA PRIMARY KEY,
        client_id TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        code_challenge TEXT,
        nonce TEXT,
        scope TEXT NOT NULL,
        challenge_id TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        used BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX oidc_codes_by_expiry ON oidc_codes (expires_at);",
    // 3: probes (SPEC §10), apart from challenges: no challenge query can ever see one.
    "CREATE TABLE probes (
        id TEXT PRIMARY KEY,
        token_hash BYTEA NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        analyses BIGINT NOT NULL DEFAULT 0,
        analysed_at BIGINT,
        report TEXT
    );
    CREATE INDEX probes_by_creation ON probes (created_at);
    CREATE INDEX probes_by_expiry ON probes (expires_at);",
    // 4: the latest refused reply of a challenge (SPEC §4 "Explanations").
    "ALTER TABLE challenges ADD COLUMN last_rejection TEXT;",
    // 5: the webhook outbox (SPEC §11).
    super::outbox::MIGRATION,
];

pub(super) fn known_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Bring the schema to [`known_version`], or refuse a newer one. Holds the session advisory
/// lock for the whole run; each migration is its own transaction with the version bump.
pub(super) async fn migrate(client: &mut Client, read_only: bool) -> Result<(), StoreError> {
    client
        .execute(
            "SELECT pg_advisory_lock($1, $2)",
            &[&LOCK_CLASS, &MIGRATION_LOCK],
        )
        .await
        .map_err(pg)?;
    let result = migrate_locked(client, read_only).await;
    // A failed unlock only matters until the session ends, which the caller does next.
    let _ = client
        .execute(
            "SELECT pg_advisory_unlock($1, $2)",
            &[&LOCK_CLASS, &MIGRATION_LOCK],
        )
        .await;
    result
}

async fn migrate_locked(client: &mut Client, read_only: bool) -> Result<(), StoreError> {
    let known = known_version();
    if !read_only {
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .await
            .map_err(pg)?;
    }
    let found = current_version(client).await?;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    if read_only {
        return if found < known {
            Err(StoreError::SchemaTooOld { found, known })
        } else {
            Ok(())
        };
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        let tx = client.transaction().await.map_err(pg)?;
        tx.batch_execute(sql).await.map_err(pg)?;
        tx.execute("DELETE FROM schema_version", &[])
            .await
            .map_err(pg)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        tracing::info!(version, "store: PostgreSQL schema migrated");
    }
    Ok(())
}

async fn current_version(client: &Client) -> Result<i64, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_opt("SELECT version FROM schema_version", &[])
        .await
        .map_err(pg)?;
    match row {
        Some(r) => r.try_get(0).map_err(pg),
        None => Ok(0),
    }
}
