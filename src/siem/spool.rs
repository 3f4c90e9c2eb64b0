//! The durable spool in front of the network sinks (TCP, TLS): an SQLite outbox in its own
//! file (`siem.spool_path`, WAL, `synchronous=FULL`), so an event survives a collector outage
//! and a daemon restart until every network sink has confirmed it.
//!
//! - `outbox(id INTEGER PRIMARY KEY AUTOINCREMENT, ...)`: AUTOINCREMENT so an id is never
//!   reused after deletions; a cursor is compared with ids, a reused id would be skipped.
//! - `cursors(sink, delivered)`: per network sink, the highest id it confirmed. A sink seen
//!   for the first time starts at the current end (a new collector does not get the backlog
//!   of another); a sink no longer configured loses its cursor so it does not pin the outbox.
//! - Rows every sink confirmed are deleted (`gc`). When more than `spool_max_events` rows are
//!   left, the oldest are deleted and counted; one slot is kept free for the overflow event
//!   that reports them (built by the writer), so reporting a loss never causes another.
//!
//! One writer ([`Spool`], the writer thread) and one reader per sink ([`Cursor`], each sink's
//! thread), each with its own connection: WAL lets them run concurrently, `busy_timeout`
//! covers the short write locks.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

/// Why the spool could not be opened or written: its file (creating it or its directory) or
/// SQLite. Both keep their cause.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

/// How long a connection waits for another's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One event as spooled: what a network sink needs to build its syslog message.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub timestamp: DateTime<Utc>,
    pub severity: u8,
    /// The syslog MSGID (the action).
    pub msgid: String,
    /// The rendered event (JSON or CEF line).
    pub body: String,
}

/// A record with its outbox id.
#[derive(Clone, Debug, PartialEq)]
pub struct Spooled {
    pub id: i64,
    pub record: Record,
}

/// The writer side: appends, enforces the bound, deletes what every sink confirmed.
pub struct Spool {
    conn: Connection,
    max_events: u64,
    len: u64,
}

impl Spool {
    /// Opens (creating if needed) the spool and aligns the cursor table with `sinks`.
    pub fn open(path: &Path, max_events: usize, sinks: &[String]) -> Result<Self, SpoolError> {
        let conn = open_conn(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS outbox (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 ts_us INTEGER NOT NULL,
                 severity INTEGER NOT NULL,
                 msgid TEXT NOT NULL,
                 body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS cursors (
                 sink TEXT PRIMARY KEY,
                 delivered INTEGER NOT NULL);",
        )?;
        let existing: Vec<String> = {
            let mut stmt = conn.prepare("SELECT sink FROM cursors")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        for gone in existing.iter().filter(|s| !sinks.contains(s)) {
            conn.execute("DELETE FROM cursors WHERE sink = ?1", [gone])?;
        }
        for sink in sinks {
            conn.execute(
                "INSERT OR IGNORE INTO cursors (sink, delivered) VALUES
                 (?1, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0))",
                [sink],
            )?;
        }
        let mut spool = Self {
            conn,
            max_events: u64::try_from(max_events.max(1)).unwrap_or(u64::MAX),
            len: 0,
        };
        spool.gc()?;
        spool.len = spool
            .conn
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get::<_, i64>(0))?
            .unsigned_abs();
        Ok(spool)
    }

    /// Appends `records` in one transaction. Returns how many of the oldest undelivered rows
    /// were deleted to stay within the bound (0 normally); when non-zero, one slot is free
    /// for the overflow event the caller appends next.
    pub fn append(&mut self, records: &[Record]) -> rusqlite::Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO outbox (ts_us, severity, msgid, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for r in records {
                stmt.execute(params![
                    r.timestamp.timestamp_micros(),
                    r.severity,
                    r.msgid,
                    r.body
                ])?;
            }
        }
        let mut len = self.len + records.len() as u64;
        let mut dropped = 0;
        if len > self.max_events {
            let excess = len - (self.max_events - 1);
            let limit = i64::try_from(excess).unwrap_or(i64::MAX);
            dropped = tx.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?1)",
                [limit],
            )? as u64;
            len -= dropped;
        }
        tx.commit()?;
        self.len = len;
        Ok(dropped)
    }

    /// Deletes the rows every sink has confirmed.
    pub fn gc(&mut self) -> rusqlite::Result<()> {
        let deleted = self.conn.execute(
            "DELETE FROM outbox WHERE id <= (SELECT MIN(delivered) FROM cursors)",
            [],
        )?;
        self.len = self.len.saturating_sub(deleted as u64);
        Ok(())
    }

    /// Rows not yet confirmed by every sink (as of the last append/gc).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One sink's reader: fetches after its cursor, commits what the sink confirmed.
pub struct Cursor {
    conn: Connection,
    sink: String,
}

impl Cursor {
    /// Opens a reader for `sink`. [`Spool::open`] must have created the schema and cursor.
    pub fn open(path: &Path, sink: &str) -> Result<Self, SpoolError> {
        Ok(Self {
            conn: open_conn(path)?,
            sink: sink.to_owned(),
        })
    }

    /// The highest id this sink confirmed.
    pub fn delivered(&self) -> rusqlite::Result<i64> {
        let v: Option<i64> = self
            .conn
            .query_row(
                "SELECT delivered FROM cursors WHERE sink = ?1",
                [&self.sink],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.unwrap_or(0))
    }

    /// Up to `limit` records after `after`, oldest first.
    pub fn fetch(&self, after: i64, limit: usize) -> rusqlite::Result<Vec<Spooled>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, ts_us, severity, msgid, body FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![after, limit], |r| {
            let ts_us: i64 = r.get(1)?;
            Ok(Spooled {
                id: r.get(0)?,
                record: Record {
                    timestamp: DateTime::from_timestamp_micros(ts_us).unwrap_or_default(),
                    severity: r.get(2)?,
                    msgid: r.get(3)?,
                    body: r.get(4)?,
                },
            })
        })?;
        rows.collect()
    }

    /// Records that this sink confirmed everything up to `id`. Never moves backwards.
    pub fn commit(&self, id: i64) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE cursors SET delivered = MAX(delivered, ?2) WHERE sink = ?1",
            params![self.sink, id],
        )?;
        Ok(())
    }

    /// The highest id ever appended (the target a draining sink tries to reach).
    pub fn last_id(&self) -> rusqlite::Result<i64> {
        let v: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.unwrap_or(0))
    }
}

fn open_conn(path: &Path) -> Result<Connection, SpoolError> {
    // The spool holds addresses and client IPs: create it readable by the daemon only (SQLite
    // gives its -wal and -shm files the database file's permissions).
    if !path.exists() {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)?;
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    // FULL: a commit is on disk before the writer moves on, so "spooled" survives a power
    // loss too, not only a process crash. Batching keeps the fsync count low.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u32) -> Record {
        Record {
            timestamp: DateTime::from_timestamp_micros(1_700_000_000_000_000 + i64::from(n))
                .unwrap_or_default(),
            severity: 4,
            msgid: "confirmation-rejected".into(),
            body: format!("event {n}"),
        }
    }

    #[test]
    fn append_fetch_commit_gc_and_resume() -> Result<(), SpoolError> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("spool.db");
        let sinks = vec!["tcp://a".to_owned(), "tls://b".to_owned()];
        let mut spool = Spool::open(&path, 100, &sinks)?;
        assert_eq!(spool.append(&(0..5).map(rec).collect::<Vec<_>>())?, 0);
        let a = Cursor::open(&path, "tcp://a")?;
        let b = Cursor::open(&path, "tls://b")?;
        let got = a.fetch(a.delivered()?, 3)?;
        assert_eq!(
            got.iter()
                .map(|s| s.record.body.as_str())
                .collect::<Vec<_>>(),
            ["event 0", "event 1", "event 2"]
        );
        assert_eq!(got.first().map(|s| s.record.clone()), Some(rec(0)));
        a.commit(got.last().map_or(0, |s| s.id))?;
        spool.gc()?;
        assert_eq!(spool.len(), 5, "b has confirmed nothing: nothing may go");
        b.commit(a.delivered()?)?;
        spool.gc()?;
        assert_eq!(spool.len(), 2);
        let mode = std::fs::metadata(&path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
        assert_eq!(mode.map(|m| m & 0o777).ok(), Some(0o600));
        drop((spool, a, b));
        // Restart: the cursor is where it was.
        let _spool = Spool::open(&path, 100, &sinks)?;
        let a = Cursor::open(&path, "tcp://a")?;
        let rest = a.fetch(a.delivered()?, 10)?;
        assert_eq!(
            rest.iter()
                .map(|s| s.record.body.as_str())
                .collect::<Vec<_>>(),
            ["event 3", "event 4"]
        );
        Ok(())
    }

    #[test]
    fn overflow_drops_oldest_and_leaves_one_slot() -> Result<(), SpoolError> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("spool.db");
        let mut spool = Spool::open(&path, 4, &["tcp://a".to_owned()])?;
        assert_eq!(spool.append(&(0..3).map(rec).collect::<Vec<_>>())?, 0);
        // 3 + 3 = 6 > 4: drop 6 - 3 = 3, leaving 3 and one free slot.
        assert_eq!(spool.append(&(3..6).map(rec).collect::<Vec<_>>())?, 3);
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.append(&[rec(99)])?, 0);
        let a = Cursor::open(&path, "tcp://a")?;
        let got = a.fetch(a.delivered()?, 10)?;
        assert_eq!(
            got.iter()
                .map(|s| s.record.body.as_str())
                .collect::<Vec<_>>(),
            ["event 3", "event 4", "event 5", "event 99"]
        );
        Ok(())
    }

    #[test]
    fn new_sink_starts_at_the_end_and_removed_sink_releases_rows() -> Result<(), SpoolError> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("spool.db");
        let mut spool = Spool::open(&path, 100, &["tcp://old".to_owned()])?;
        spool.append(&(0..3).map(rec).collect::<Vec<_>>())?;
        drop(spool);
        let spool = Spool::open(&path, 100, &["tcp://new".to_owned()])?;
        assert_eq!(spool.len(), 0, "the removed sink's backlog is released");
        let c = Cursor::open(&path, "tcp://new")?;
        assert_eq!(c.fetch(c.delivered()?, 10)?.len(), 0);
        assert_eq!(c.last_id()?, 3);
        Ok(())
    }
}
