//! The schema and its migrations, and opening a connection with the pragmas durability needs.
//!
//! `schema_version` holds one row; [`MIGRATIONS`] are applied in order at open, all in one
//! `BEGIN IMMEDIATE` transaction (a second process waits for it). A database written by a
//! newer program (higher version) is refused. Times are stored as Unix milliseconds (UTC).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::SqliteOptions;
use super::sql::db;
use crate::store::StoreError;

/// Schema migrations, in order; index + 1 is the version they produce.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: challenges and their confirmation.
    "CREATE TABLE challenges (
        id TEXT PRIMARY KEY NOT NULL,
        address TEXT NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        session_code TEXT NOT NULL,
        message_id_tail TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed')),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        rejections INTEGER NOT NULL DEFAULT 0,
        confirmed_at INTEGER,
        evidence TEXT,
        confirm_message_id TEXT,
        confirm_from TEXT,
        confirm_session TEXT,
        confirm_session_ended INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX challenges_by_address ON challenges (address, created_at);
    CREATE INDEX challenges_by_expiry ON challenges (expires_at);
    CREATE INDEX challenges_by_session ON challenges (confirm_session) WHERE confirm_session IS NOT NULL;",
    // 2: the OpenID Provider's sign-in flows and codes.
    super::oidc::MIGRATION,
    // 3: probes (SPEC §10), apart from challenges: no challenge query can ever see one.
    "CREATE TABLE probes (
        id TEXT PRIMARY KEY NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        analyses INTEGER NOT NULL DEFAULT 0,
        analysed_at INTEGER,
        report TEXT
    );
    CREATE INDEX probes_by_creation ON probes (created_at);
    CREATE INDEX probes_by_expiry ON probes (expires_at);",
    // 4: the latest refused reply of a challenge (SPEC §4 "Explanations").
    "ALTER TABLE challenges ADD COLUMN last_rejection TEXT;",
    // 5: the webhook outbox (SPEC §11).
    super::outbox::MIGRATION,
];

pub(super) fn open_connection(
    path: &Path,
    options: &SqliteOptions,
    writer: bool,
) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    if options.read_only {
        flags |= OpenFlags::SQLITE_OPEN_READ_ONLY;
    } else {
        flags |= OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(db)?;
    conn.busy_timeout(options.busy_timeout).map_err(db)?;
    // Room for every statement of this module (see `exec`).
    conn.set_prepared_statement_cache_capacity(32);
    if writer && !options.read_only {
        let mode: String = retry_busy(options.busy_timeout, || {
            conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        })
        .map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal(mode));
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db)?;
    if !writer {
        conn.pragma_update(None, "query_only", true).map_err(db)?;
    }
    Ok(conn)
}

/// Run `step` again while SQLite answers "busy", up to `budget`. Two processes opening one
/// new file at once can get `SQLITE_BUSY` from the switch to WAL (it needs the exclusive
/// lock, and SQLite skips the busy handler where waiting could deadlock), so the busy
/// timeout alone does not cover it (tested: two opens at once, 20 trials).
fn retry_busy<T>(
    budget: Duration,
    mut step: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + budget;
    loop {
        match step() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn current_version(conn: &Connection) -> Result<i64, StoreError> {
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    if !has_table {
        return Ok(0);
    }
    conn.query_row("SELECT version FROM schema_version", [], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
    .map_err(db)
    .map(|v| v.unwrap_or(0))
}

pub(super) fn known_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

pub(super) fn check_version(conn: &Connection) -> Result<(), StoreError> {
    let found = current_version(conn)?;
    let known = known_version();
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    if found < known {
        return Err(StoreError::SchemaTooOld { found, known });
    }
    Ok(())
}

pub(super) fn migrate(conn: &Connection, busy_timeout: Duration) -> Result<(), StoreError> {
    // One `BEGIN IMMEDIATE` transaction for the whole migration, the version read inside
    // it: a second process opening the same empty file waits for the write lock (busy
    // timeout), then finds the schema current. Reading the version before taking the lock
    // let both see 0 and the second fail on `CREATE TABLE` (tested: two opens at once).
    retry_busy(busy_timeout, || conn.execute_batch("BEGIN IMMEDIATE")).map_err(db)?;
    match migrate_locked(conn) {
        Ok(()) => conn.execute_batch("COMMIT").map_err(db),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn migrate_locked(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(db)?;
    let found = current_version(conn)?;
    if found > known_version() {
        return Err(StoreError::SchemaTooNew {
            found,
            known: known_version(),
        });
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        conn.execute_batch(sql)
            .and_then(|()| conn.execute("DELETE FROM schema_version", []))
            .and_then(|_| {
                conn.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    params![version],
                )
            })
            .map_err(db)?;
        tracing::info!(version, "store: schema migrated");
    }
    Ok(())
}
