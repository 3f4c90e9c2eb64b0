//! `gatekeeper store migrate --from PATH --to URL`: copy an SQLite store into an empty
//! PostgreSQL database (README "Several instances on one PostgreSQL", SPEC §7).
//!
//! # What is copied, and why
//!
//! [`TABLES`] lists every table of the schema (one entry a table: a new table is a few
//! lines there, and a unit test fails while a table of the SQLite schema is missing from it).
//!
//! - `challenges`: every row and every column, whatever its state (pending, confirmed with
//!   its evidence, expired, with its rejection count and `last_rejection`). Expired rows are
//!   copied too: the purge of the new store removes them on its own schedule, as the old one
//!   would have.
//! - `probes`: every row.
//! - `webhook_outbox`: the rows still owed (`done_at IS NULL`), with their `seq` (the order
//!   of a challenge's events) and attempt counts; the sequence is moved past them so new rows
//!   come after. Rows delivered or given up are history the purge would delete: skipped.
//! - `oidc_flows`, `oidc_codes`: skipped. They live for minutes (`oidc.code_ttl`, a sign-in
//!   page): a sign-in in progress during the move starts again; nothing durable is lost.
//!
//! # Safety
//!
//! - The source is opened read-only and read in one transaction (one snapshot); it is never
//!   migrated or written. A source whose schema is newer than this program is refused; an
//!   older one is copied with the columns it has (a column added later is NULL, as its
//!   migration would leave it).
//! - The target's schema is created (or checked) exactly as `gatekeeper serve` does at start,
//!   then every row goes in through one transaction that first locks every table
//!   (`EXCLUSIVE`: an instance already running on it, or a second migration, waits) and
//!   refuses a database holding any row. There is no `--force`: merging two stores could
//!   put two challenges under one address past its limits, or one Message-ID under two
//!   outbox rows; a new empty database is the only target whose result is known.
//! - Nothing is committed unless every table copied with the row count it read.
//!
//! # Exit status
//!
//! 0 copied (counts printed per table); 1 refused (source schema newer than this program,
//! source not a gatekeeper store, target not empty, target schema newer); 2 could not run
//! (bad arguments, unreadable source, database unreachable, a statement failed: nothing was
//! committed).

use std::path::{Path, PathBuf};
use std::pin::pin;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::config::{PgTls, PostgresConfig};
use crate::store::{PostgresStore, StoreError, sqlite};

/// What `store migrate` was given.
#[derive(Clone, Debug)]
pub struct MigrateArgs {
    /// The SQLite store file (`[store] path` of the instance being moved).
    pub from: PathBuf,
    /// `postgresql://user@host[:port]/database`, without password or `sslmode`.
    pub to: String,
    pub password_file: Option<PathBuf>,
    pub tls: PgTls,
    pub ca_file: Option<PathBuf>,
}

/// How a column is read from SQLite and written to PostgreSQL (the two schemas use these
/// four shapes: `TEXT`, `BLOB`/`BYTEA`, `INTEGER`/`BIGINT`, `INTEGER` 0/1/`BOOLEAN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Blob,
    Int,
    Bool,
}

impl Kind {
    fn pg_type(self) -> Type {
        match self {
            Kind::Text => Type::TEXT,
            Kind::Blob => Type::BYTEA,
            Kind::Int => Type::INT8,
            Kind::Bool => Type::BOOL,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Column {
    name: &'static str,
    kind: Kind,
    /// The schema version whose migration added the column; an older source has none (the
    /// value is NULL, as that migration leaves it: only nullable columns were ever added).
    since: i64,
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        since: 1,
    }
}

/// What becomes of a table's rows.
#[derive(Clone, Copy, Debug)]
enum Rows {
    /// Every row.
    All,
    /// The rows matching this SQL condition; the others are counted as skipped, for `why`.
    Where {
        condition: &'static str,
        why: &'static str,
    },
    /// None (counted as skipped, for `why`).
    Skip { why: &'static str },
}

#[derive(Clone, Copy, Debug)]
struct Table {
    name: &'static str,
    /// The schema version that created it.
    since: i64,
    rows: Rows,
    columns: &'static [Column],
    /// SQL run on the target after the copy (sequences past the copied keys).
    after: Option<&'static str>,
}

/// Every table of the schema, in the order they are copied. The column lists are those of
/// `store/sqlite/schema.rs` and `store/postgres/schema.rs` (the two have the same columns).
const TABLES: &[Table] = &[
    Table {
        name: "challenges",
        since: 1,
        rows: Rows::All,
        columns: &[
            col("id", Kind::Text),
            col("address", Kind::Text),
            col("token_hash", Kind::Blob),
            col("session_code", Kind::Text),
            col("message_id_tail", Kind::Text),
            col("status", Kind::Text),
            col("created_at", Kind::Int),
            col("expires_at", Kind::Int),
            col("rejections", Kind::Int),
            col("confirmed_at", Kind::Int),
            col("evidence", Kind::Text),
            col("confirm_message_id", Kind::Text),
            col("confirm_from", Kind::Text),
            col("confirm_session", Kind::Text),
            col("confirm_session_ended", Kind::Bool),
            Column {
                name: "last_rejection",
                kind: Kind::Text,
                since: 4,
            },
        ],
        after: None,
    },
    Table {
        name: "probes",
        since: 3,
        rows: Rows::All,
        columns: &[
            col("id", Kind::Text),
            col("token_hash", Kind::Blob),
            col("created_at", Kind::Int),
            col("expires_at", Kind::Int),
            col("analyses", Kind::Int),
            col("analysed_at", Kind::Int),
            col("report", Kind::Text),
        ],
        after: None,
    },
    Table {
        name: "webhook_outbox",
        since: 5,
        rows: Rows::Where {
            condition: "done_at IS NULL",
            why: "delivered or given up",
        },
        columns: &[
            col("seq", Kind::Int),
            col("id", Kind::Text),
            col("endpoint", Kind::Text),
            col("event", Kind::Text),
            col("challenge_id", Kind::Text),
            col("payload", Kind::Text),
            col("created_at", Kind::Int),
            col("attempts", Kind::Int),
            col("next_attempt_at", Kind::Int),
            col("lease_until", Kind::Int),
            col("last_error", Kind::Text),
            col("done_at", Kind::Int),
            col("outcome", Kind::Text),
        ],
        // setval is strict: with no row (MAX is NULL) the sequence is left alone.
        after: Some(
            "SELECT setval(pg_get_serial_sequence('webhook_outbox', 'seq'), MAX(seq)) \
             FROM webhook_outbox",
        ),
    },
    Table {
        name: "oidc_flows",
        since: 2,
        rows: Rows::Skip {
            why: "short-lived sign-in flows: those in progress start again",
        },
        columns: &[],
        after: None,
    },
    Table {
        name: "oidc_codes",
        since: 2,
        rows: Rows::Skip {
            why: "short-lived authorization codes: those in progress start again",
        },
        columns: &[],
        after: None,
    },
];

/// What happened to one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableCount {
    pub table: &'static str,
    pub copied: u64,
    pub skipped: u64,
    /// Why rows were skipped (empty when none could be).
    pub why: &'static str,
}

/// The result of a migration that committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub source_version: i64,
    pub tables: Vec<TableCount>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for t in &self.tables {
            write!(f, "{}: {} copied", t.table, t.copied)?;
            if t.skipped > 0 {
                write!(f, ", {} skipped ({})", t.skipped, t.why)?;
            }
            writeln!(f)?;
        }
        let total: u64 = self.tables.iter().map(|t| t.copied).sum();
        writeln!(
            f,
            "committed: {total} rows from a schema {} store",
            self.source_version
        )
    }
}

/// Why a migration did not commit.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("--to: {0}")]
    BadTarget(String),
    #[error("{path}: {source}")]
    Source {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0}: not a gatekeeper store (no schema version)")]
    NotAStore(PathBuf),
    #[error(
        "{path}: schema version {found} is newer than this program (knows {known}): \
         migrate with the gatekeeper that wrote it"
    )]
    SourceTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("{table}.{column} of row {row} is not a {kind:?}: {source}")]
    Value {
        table: &'static str,
        column: &'static str,
        row: u64,
        kind: Kind,
        #[source]
        source: rusqlite::Error,
    },
    #[error("target database: {0}")]
    Target(#[source] StoreError),
    #[error(
        "target database is not empty ({0} has rows): migrate into a new empty database \
         (there is no --force: two stores cannot be merged safely)"
    )]
    TargetNotEmpty(&'static str),
    #[error("target database, {table}: {source}")]
    Write {
        table: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{table}: {read} rows read but {written} written")]
    Mismatch {
        table: &'static str,
        read: u64,
        written: u64,
    },
}

impl MigrateError {
    /// The exit status (module docs): 1 refused, 2 could not run.
    pub fn exit_code(&self) -> u8 {
        match self {
            MigrateError::NotAStore(_)
            | MigrateError::SourceTooNew { .. }
            | MigrateError::TargetNotEmpty(_)
            | MigrateError::Target(StoreError::SchemaTooNew { .. }) => 1,
            _ => 2,
        }
    }
}

/// Run the command: the report on stdout and 0, or the error on stderr and its status.
pub async fn run(args: MigrateArgs) -> u8 {
    match migrate(&args).await {
        Ok(report) => {
            print!("{report}");
            0
        }
        Err(e) => {
            eprintln!("gatekeeper store migrate: {e}");
            if matches!(
                e,
                MigrateError::Write { .. } | MigrateError::Mismatch { .. }
            ) {
                eprintln!("nothing was committed");
            }
            e.exit_code()
        }
    }
}

/// Copy the store at `args.from` into the database at `args.to` (module docs).
pub async fn migrate(args: &MigrateArgs) -> Result<Report, MigrateError> {
    let config = target_config(args)?;
    let source = open_source(&args.from)?;
    let source_version = source_version(&source, &args.from)?;

    // The schema as `serve` creates it (its own transactions, under the migration lock); on
    // a thread where blocking is allowed, since the store's open waits for its migration.
    let store = tokio::task::spawn_blocking(move || PostgresStore::open(&config, false))
        .await
        .map_err(|e| MigrateError::Target(StoreError::ReadTask(std::sync::Arc::new(e))))?
        .map_err(MigrateError::Target)?;
    let mut client = store.client().await.map_err(MigrateError::Target)?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| write_error("BEGIN", e))?;
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        names.join(", ")
    ))
    .await
    .map_err(|e| write_error("LOCK", e))?;
    for t in TABLES {
        let any: bool = tx
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {})", t.name), &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| write_error(t.name, e))?;
        if any {
            return Err(MigrateError::TargetNotEmpty(t.name));
        }
    }

    // One read transaction on the source: every table from the same snapshot.
    source
        .execute_batch("BEGIN DEFERRED")
        .map_err(|e| source_error(&args.from, e))?;
    let mut tables = Vec::with_capacity(TABLES.len());
    for t in TABLES {
        tables.push(copy_table(&source, &args.from, source_version, &tx, t).await?);
    }
    // The source was only read: ending its transaction either way changes nothing.
    let _ = source.execute_batch("COMMIT");
    tx.commit().await.map_err(|e| write_error("COMMIT", e))?;
    Ok(Report {
        source_version,
        tables,
    })
}

/// The PostgreSQL settings from the arguments, with the checks `[store] url` has: a
/// password or `sslmode` in the URL is refused (a password on a command line is visible to
/// every user of the machine; two TLS settings could disagree).
fn target_config(args: &MigrateArgs) -> Result<PostgresConfig, MigrateError> {
    let bad = |m: String| Err(MigrateError::BadTarget(m));
    let url = match url::Url::parse(&args.to) {
        Ok(u) => u,
        Err(e) => return bad(format!("{:?} is not a URL: {e}", args.to)),
    };
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return bad("scheme must be postgresql:// (or postgres://)".into());
    }
    if url.password().is_some() {
        return bad("holds a password: use --password-file".into());
    }
    if url
        .query_pairs()
        .any(|(k, _)| k == "sslmode" || k == "password")
    {
        return bad("sslmode and password have their own options: --tls, --password-file".into());
    }
    if url.path().trim_start_matches('/').is_empty() {
        return bad("names no database (postgresql://user@host/DATABASE)".into());
    }
    if args.tls == PgTls::Disable && args.ca_file.is_some() {
        return bad("--ca-file given with --tls disable".into());
    }
    Ok(PostgresConfig {
        url: args.to.clone(),
        password_file: args.password_file.clone(),
        tls: args.tls,
        ca_file: args.ca_file.clone(),
        pool_size: 1,
    })
}

/// The source, read-only: opening it never creates, migrates or writes it.
fn open_source(path: &Path) -> Result<Connection, MigrateError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| source_error(path, e))?;
    // A running daemon may hold the write lock for a moment (stop it first: README).
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| source_error(path, e))?;
    Ok(conn)
}

fn source_version(conn: &Connection, path: &Path) -> Result<i64, MigrateError> {
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| source_error(path, e))?;
    let found: Option<i64> = if has_table {
        conn.query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .optional()
            .map_err(|e| source_error(path, e))?
    } else {
        None
    };
    let known = sqlite::schema_version();
    match found {
        None | Some(..=0) => Err(MigrateError::NotAStore(path.to_path_buf())),
        Some(found) if found > known => Err(MigrateError::SourceTooNew {
            path: path.to_path_buf(),
            found,
            known,
        }),
        Some(found) => Ok(found),
    }
}

/// One value read from SQLite, typed for PostgreSQL.
enum Value {
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
    Int(Option<i64>),
    Bool(Option<bool>),
}

impl Value {
    fn read(row: &rusqlite::Row<'_>, index: usize, kind: Kind) -> rusqlite::Result<Self> {
        Ok(match kind {
            Kind::Text => Value::Text(row.get(index)?),
            Kind::Blob => Value::Blob(row.get(index)?),
            Kind::Int => Value::Int(row.get(index)?),
            // The SQLite store writes 0 or 1 (rows.rs reads any non-zero as true).
            Kind::Bool => Value::Bool(row.get::<_, Option<i64>>(index)?.map(|v| v != 0)),
        })
    }

    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Value::Text(v) => v,
            Value::Blob(v) => v,
            Value::Int(v) => v,
            Value::Bool(v) => v,
        }
    }
}

/// Copy one table's rows through `COPY … FROM STDIN BINARY` in `tx`; streams (one row in
/// memory at a time), so a large store costs no memory.
async fn copy_table(
    source: &Connection,
    path: &Path,
    version: i64,
    tx: &tokio_postgres::Transaction<'_>,
    t: &Table,
) -> Result<TableCount, MigrateError> {
    let mut count = TableCount {
        table: t.name,
        copied: 0,
        skipped: 0,
        why: "",
    };
    if t.since > version {
        // Not in a store this old.
        return Ok(count);
    }
    let all = count_rows(source, path, t.name, None)?;
    let condition = match t.rows {
        Rows::All => None,
        Rows::Where { condition, why } => {
            count.why = why;
            Some(condition)
        }
        Rows::Skip { why } => {
            count.why = why;
            count.skipped = all;
            return Ok(count);
        }
    };
    let wanted = match condition {
        None => all,
        Some(c) => count_rows(source, path, t.name, Some(c))?,
    };
    count.skipped = all.saturating_sub(wanted);

    // The columns this source has (a later nullable column is sent as NULL).
    let present: Vec<&Column> = t.columns.iter().filter(|c| c.since <= version).collect();
    let select = format!(
        "SELECT {} FROM {}{}",
        present
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", "),
        t.name,
        condition.map(|c| format!(" WHERE {c}")).unwrap_or_default()
    );
    let names: Vec<&str> = t.columns.iter().map(|c| c.name).collect();
    let types: Vec<Type> = t.columns.iter().map(|c| c.kind.pg_type()).collect();
    let sink = tx
        .copy_in(&format!(
            "COPY {} ({}) FROM STDIN BINARY",
            t.name,
            names.join(", ")
        ))
        .await
        .map_err(|e| write_error(t.name, e))?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));

    let mut statement = source.prepare(&select).map_err(|e| source_error(path, e))?;
    let mut rows = statement.query([]).map_err(|e| source_error(path, e))?;
    let mut read = 0u64;
    while let Some(row) = rows.next().map_err(|e| source_error(path, e))? {
        let mut values = Vec::with_capacity(t.columns.len());
        let mut from = 0usize;
        for c in t.columns {
            if c.since > version {
                values.push(null_of(c.kind));
                continue;
            }
            values.push(
                Value::read(row, from, c.kind).map_err(|source| MigrateError::Value {
                    table: t.name,
                    column: c.name,
                    row: read,
                    kind: c.kind,
                    source,
                })?,
            );
            from += 1;
        }
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(Value::as_sql).collect();
        writer
            .as_mut()
            .write(&refs)
            .await
            .map_err(|e| write_error(t.name, e))?;
        read += 1;
    }
    let written = writer
        .as_mut()
        .finish()
        .await
        .map_err(|e| write_error(t.name, e))?;
    // A row added to the source between the count and the copy cannot happen (one read
    // transaction), so a difference is a bug worth refusing to commit.
    if written != read || read != wanted {
        return Err(MigrateError::Mismatch {
            table: t.name,
            read: wanted,
            written,
        });
    }
    if let Some(sql) = t.after {
        tx.batch_execute(sql)
            .await
            .map_err(|e| write_error(t.name, e))?;
    }
    count.copied = written;
    Ok(count)
}

fn null_of(kind: Kind) -> Value {
    match kind {
        Kind::Text => Value::Text(None),
        Kind::Blob => Value::Blob(None),
        Kind::Int => Value::Int(None),
        Kind::Bool => Value::Bool(None),
    }
}

fn count_rows(
    conn: &Connection,
    path: &Path,
    table: &str,
    condition: Option<&str>,
) -> Result<u64, MigrateError> {
    let sql = format!(
        "SELECT COUNT(*) FROM {table}{}",
        condition.map(|c| format!(" WHERE {c}")).unwrap_or_default()
    );
    let n: i64 = conn
        .query_row(&sql, [], |r| r.get(0))
        .map_err(|e| source_error(path, e))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn source_error(path: &Path, source: rusqlite::Error) -> MigrateError {
    MigrateError::Source {
        path: path.to_path_buf(),
        source,
    }
}

fn write_error(table: &'static str, source: tokio_postgres::Error) -> MigrateError {
    MigrateError::Write { table, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables of a fresh SQLite store, as `serve` creates it.
    fn sqlite_tables() -> Vec<String> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("gk.db");
        drop(
            crate::store::SqliteStore::open(&path, crate::store::SqliteOptions::default())
                .unwrap_or_else(|e| panic!("open: {e}")),
        );
        let conn = Connection::open(&path).unwrap_or_else(|e| panic!("reopen: {e}"));
        let mut st = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name <> 'schema_version' ORDER BY name",
            )
            .unwrap_or_else(|e| panic!("prepare: {e}"));
        st.query_map([], |r| r.get::<_, String>(0))
            .unwrap_or_else(|e| panic!("query: {e}"))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("rows: {e}"))
    }

    /// The column names of `table` in a fresh SQLite store.
    fn sqlite_columns(table: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("gk.db");
        drop(
            crate::store::SqliteStore::open(&path, crate::store::SqliteOptions::default())
                .unwrap_or_else(|e| panic!("open: {e}")),
        );
        let conn = Connection::open(&path).unwrap_or_else(|e| panic!("reopen: {e}"));
        let mut st = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap_or_else(|e| panic!("prepare: {e}"));
        st.query_map([], |r| r.get::<_, String>(0))
            .unwrap_or_else(|e| panic!("query: {e}"))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("rows: {e}"))
    }

    /// A table added to the schema without an entry in [`TABLES`] would be left behind by
    /// every migration: this fails first. Likewise a column missing from a copied table.
    #[test]
    fn every_table_and_column_of_the_schema_is_listed() {
        let mut listed: Vec<String> = TABLES.iter().map(|t| t.name.to_owned()).collect();
        listed.sort();
        assert_eq!(sqlite_tables(), listed);
        for t in TABLES {
            if matches!(t.rows, Rows::Skip { .. }) {
                continue;
            }
            let names: Vec<String> = t.columns.iter().map(|c| c.name.to_owned()).collect();
            assert_eq!(sqlite_columns(t.name), names, "columns of {}", t.name);
            assert!(
                t.columns
                    .iter()
                    .all(|c| c.since <= sqlite::schema_version()),
                "{}: a column newer than the schema",
                t.name
            );
        }
        assert!(
            TABLES
                .iter()
                .all(|t| t.since <= sqlite::schema_version() && t.since >= 1)
        );
    }

    #[test]
    fn target_arguments_table() {
        let base = MigrateArgs {
            from: PathBuf::from("gk.db"),
            to: String::new(),
            password_file: None,
            tls: PgTls::Require,
            ca_file: None,
        };
        let cases: &[(&str, PgTls, bool, Option<&str>)] = &[
            (
                "postgresql://gk@127.0.0.1:5432/gk",
                PgTls::Require,
                false,
                None,
            ),
            ("postgres://gk@db.example/gk", PgTls::Disable, false, None),
            (
                "postgresql://gk:secret@db/gk",
                PgTls::Require,
                false,
                Some("password"),
            ),
            (
                "postgresql://gk@db/gk?sslmode=disable",
                PgTls::Require,
                false,
                Some("sslmode"),
            ),
            (
                "postgresql://gk@db/",
                PgTls::Require,
                false,
                Some("no database"),
            ),
            ("mysql://gk@db/gk", PgTls::Require, false, Some("scheme")),
            ("not a url", PgTls::Require, false, Some("not a URL")),
            (
                "postgresql://gk@db/gk",
                PgTls::Disable,
                true,
                Some("--ca-file"),
            ),
        ];
        for (to, tls, ca, problem) in cases {
            let args = MigrateArgs {
                to: (*to).to_owned(),
                tls: *tls,
                ca_file: ca.then(|| PathBuf::from("ca.pem")),
                ..base.clone()
            };
            match (target_config(&args), problem) {
                (Ok(c), None) => {
                    assert_eq!(c.url, *to);
                    assert_eq!(c.tls, *tls);
                }
                (Err(e), Some(p)) => {
                    assert!(e.to_string().contains(p), "{to}: {e}");
                    assert_eq!(e.exit_code(), 2, "{to}");
                }
                (other, _) => panic!("{to}: {other:?}"),
            }
        }
    }

    #[test]
    fn source_refusals_table() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        // (what the file holds, the expected outcome: Ok(version) or the exit status).
        let cases: &[(&str, Result<i64, u8>)] = &[
            ("CREATE TABLE other (x INTEGER)", Err(1)),
            (
                "CREATE TABLE schema_version (version INTEGER NOT NULL)",
                Err(1),
            ),
            (
                "CREATE TABLE schema_version (version INTEGER NOT NULL); \
                 INSERT INTO schema_version VALUES (3)",
                Ok(3),
            ),
            (
                "CREATE TABLE schema_version (version INTEGER NOT NULL); \
                 INSERT INTO schema_version VALUES (99)",
                Err(1),
            ),
        ];
        for (i, (sql, expected)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("case{i}.db"));
            let conn = Connection::open(&path).unwrap_or_else(|e| panic!("create: {e}"));
            conn.execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            drop(conn);
            let source = open_source(&path).unwrap_or_else(|e| panic!("open: {e}"));
            let got = source_version(&source, &path).map_err(|e| e.exit_code());
            assert_eq!(&got, expected, "{sql}");
        }
        // A missing file is not created: it cannot be read (2).
        let missing = dir.path().join("missing.db");
        let e = open_source(&missing).map(drop).err();
        assert_eq!(e.map(|e| e.exit_code()), Some(2));
        assert!(!missing.exists(), "a read-only open creates nothing");
    }
}
