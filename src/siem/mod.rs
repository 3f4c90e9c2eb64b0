//! The SIEM audit trail (SPEC I4, §6): turns [`AuditEvent`]s into ECS JSON or CEF lines and
//! delivers them to every configured sink. The operators of gatekeeper learn about attacks
//! only from this trail, so a lost or forged event is a security failure.
//!
//! ```text
//!  emit() ──try_send──▶ bounded queue ──▶ writer thread ──▶ stdout, files, UDP (direct)
//!   (never blocks)        (full: counted,       │
//!                          reported)            └──▶ SQLite spool ──▶ one thread per TCP/TLS
//!                                                    (durable)         sink, cursor per sink
//! ```
//!
//! - Where things are: [`mod@format`] holds what the serialisers share and [`encode`] picks one;
//!   `writer` is the writer thread; every local sink is one type behind
//!   [`sink_local::LocalSink`] (a new one is that type plus its arm in [`sink_local::open`]);
//!   network sinks are [`sink_net`] threads reading the [`spool`].
//! - Formats: [`ecs`] and [`cef`] are the only serialisers; attacker-controlled values are
//!   cut to [`format::FIELD_MAX_CHARS`] (512) characters with a `…[truncated]` marker and
//!   escaped so that no byte can add a field or split a line or frame. A whole event stays
//!   within [`format::LINE_MAX_OCTETS`] (tighter field bounds when needed), so its syslog
//!   message fits the 8 KiB collectors accept by default.
//! - Syslog ([`syslog`]): RFC 5424, facility `authpriv`, severity by outcome, APP-NAME
//!   `gatekeeper`, MSGID the action, MSG the event line; octet counting over TCP/TLS.
//! - Delivery: stdout and files are written by the writer thread and flushed per batch (an
//!   event is in the file within milliseconds of `emit`). UDP is best effort (not spooled, no
//!   retry; see [`sink_local`]). TCP and TLS are at-least-once across collector outages and
//!   daemon restarts: every event is committed to the spool before any send, and each sink
//!   resumes from its cursor with exponential backoff (see [`sink_net`] for what
//!   "delivered" means on a protocol without acknowledgements).
//! - Bounds and losses: the queue holds [`QUEUE_CAPACITY`] events, the spool
//!   `siem.spool_max_events`. Whatever a bound drops is counted ([`Siem::dropped`], for
//!   `/metrics`) and reported by an event of its own: action `siem-overflow`, reason
//!   `siem.spool_overflow` or `siem.queue_overflow`, the count in `gatekeeper.siem.dropped`
//!   (CEF `cnt`).
//! - A spool that cannot be written (filesystem full, I/O error) loses each batch to the
//!   network sinks only (the local sinks have it); counted in [`Stats::spool_failed`], logged
//!   once per burst, and reported by one `siem.spool_overflow` event with the burst's count
//!   once the spool takes writes again (`writer`).
//!
//! Choices where the SPEC is silent:
//!
//! - Facility `authpriv` (10), severities 6/5/4/3 for accepted/deferred/refused/trail loss
//!   ([`syslog`]); CEF severities 2/4/6/8 and the CEF key mapping are in [`cef`].
//! - Per-field bound 512 characters, whole line ≤ 7680 octets ([`mod@format`]).
//! - UDP is best effort: not spooled, not retried, one datagram ≤ 2048 octets.
//! - An event counts as delivered to a TCP/TLS collector once written and followed by
//!   [`sink_net::CONFIRM_WINDOW`] (1 s) of live connection; reconnect backoff 100 ms → 30 s.
//! - A network sink configured for the first time starts at the end of the spool; a sink
//!   removed from the config releases its backlog. TLS requires `ca_file` (no implicit system
//!   trust store); `server_name` defaults to the collector's IP address.
//! - One spool file per gatekeeper instance: two daemons must not share `spool_path`.
//! - [`SiemHandle::shutdown`] takes up to its bound (at least a confirmation window when
//!   events were just sent); what is not confirmed stays spooled for the next start.
//! - Stdout carries events only: the daemon's own logs (tracing) belong on stderr/journald.
//!
//! Threads, not tokio tasks: the work is blocking (SQLite, files, fsync), there is little of
//! it, and it must keep draining while the runtime shuts down.

pub mod cef;
pub mod ecs;
pub mod encode;
pub mod format;
pub mod sink_local;
pub mod sink_net;
pub mod spool;
pub mod syslog;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::format::FormatOptions;
use self::sink_net::{NetSink, TlsCaError};
use self::spool::{Cursor, Spool, SpoolError};
use self::syslog::Header;
use self::writer::Writer;
use crate::audit::{AuditEvent, AuditSink};
use crate::config::{SiemConfig, SiemSink};

/// Events the in-memory queue between `emit` and the writer holds. At a few hundred bytes an
/// event this bounds the queue to a few MiB; the writer empties it in batches of 512.
pub const QUEUE_CAPACITY: usize = 8192;
/// Events the writer handles per batch (one spool transaction, one flush per file).
const BATCH: usize = 512;
/// How often the idle writer looks at reopen and stop requests.
const WRITER_TICK: Duration = Duration::from_millis(100);
/// How long the writer lets a batch gather after its first event. Under load the writer then
/// wakes once per batch instead of once per event (a thread wake-up per event was a
/// measurable share of the CPU per message, README "Performance"); an event reaches the
/// sinks at most this much later. At [`QUEUE_CAPACITY`] the queue holds more than a
/// linger's worth of events at over a million events per second.
const LINGER: Duration = Duration::from_millis(2);

/// A SIEM setup failure (at start only; once running, failures are counted and retried).
#[derive(Debug, thiserror::Error)]
pub enum SiemError {
    #[error("siem file sink {0}: {1}")]
    File(PathBuf, #[source] std::io::Error),
    #[error("siem UDP sink {0}: {1}")]
    Udp(std::net::SocketAddr, #[source] std::io::Error),
    #[error("siem spool {0}: {1}")]
    Spool(PathBuf, #[source] SpoolError),
    #[error("siem TLS sink {0}: a CA file (ca_file) is required")]
    TlsCaMissing(std::net::SocketAddr),
    #[error("siem TLS CA file {0}: {1}")]
    TlsCa(PathBuf, #[source] TlsCaError),
    #[error("siem TLS server_name {0:?} is not a valid DNS name or IP address")]
    TlsServerName(String),
    #[error("siem thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events `emit` could not queue (queue full or trail stopped).
    pub queue_dropped: u64,
    /// Undelivered events deleted from the spool at `siem.spool_max_events`.
    pub spool_dropped: u64,
    /// Events that could not be written to the spool (disk full, I/O error): lost to the
    /// network sinks.
    pub spool_failed: u64,
    /// Failed writes to stdout or a file.
    pub local_errors: u64,
    /// Failed UDP sends.
    pub udp_errors: u64,
}

/// The emitting side: cheap to clone, shared by every session. Implements [`AuditSink`].
#[derive(Clone)]
pub struct Siem {
    tx: SyncSender<AuditEvent>,
    shared: Arc<Shared>,
}

/// Owns the threads; [`SiemHandle::shutdown`] drains them.
pub struct SiemHandle {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    senders: Vec<JoinHandle<()>>,
}

impl Siem {
    /// Opens every sink of `config` and starts the writer and one thread per TCP/TLS sink.
    /// `hostname` names this gatekeeper in syslog headers and `observer.hostname`.
    pub fn start(config: &SiemConfig, hostname: &str) -> Result<(Siem, SiemHandle), SiemError> {
        let opts = FormatOptions::new(config.format.clone(), hostname);
        let header = Header::new(hostname, std::process::id());
        let mut locals = Vec::new();
        let mut nets = Vec::new();
        for sink in &config.sinks {
            if let Some(local) = sink_local::open(sink, &header, &opts)? {
                locals.push(local);
            } else if let SiemSink::Syslog {
                address,
                transport,
                ca_file,
                server_name,
            } = sink
            {
                nets.push(NetSink::new(
                    *address,
                    transport,
                    ca_file.as_deref(),
                    server_name.as_deref(),
                )?);
            }
        }
        let shared = Arc::new(Shared::default());
        let spool = if nets.is_empty() {
            None
        } else {
            let path = &config.spool_path;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| SiemError::Spool(path.clone(), SpoolError::Io(e)))?;
            }
            let keys: Vec<String> = nets.iter().map(|n| n.key.clone()).collect();
            Some(
                Spool::open(path, config.spool_max_events, &keys)
                    .map_err(|e| SiemError::Spool(path.clone(), e))?,
            )
        };
        let mut senders = Vec::new();
        for net in nets {
            let cursor = Cursor::open(&config.spool_path, &net.key)
                .map_err(|e| SiemError::Spool(config.spool_path.clone(), e))?;
            let (shared, header) = (Arc::clone(&shared), header.clone());
            let thread = std::thread::Builder::new()
                .name(format!("siem-{}", net.key))
                .spawn(move || net.run(cursor, shared, header))
                .map_err(SiemError::Thread)?;
            senders.push(thread);
        }
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let writer = Writer {
            rx,
            shared: Arc::clone(&shared),
            opts,
            locals,
            spool,
            queue_reported: 0,
            spool_burst: writer::Burst::default(),
        };
        let writer = std::thread::Builder::new()
            .name("siem-writer".into())
            .spawn(move || writer.run())
            .map_err(SiemError::Thread)?;
        let handle = SiemHandle {
            shared: Arc::clone(&shared),
            writer: Some(writer),
            senders,
        };
        Ok((Siem { tx, shared }, handle))
    }

    /// Asks the file sinks to reopen their paths (SIGHUP after logrotate). Events queued
    /// after this call go to the new files.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::SeqCst);
    }

    /// Every event lost to at least one sink because a bound was reached or the spool failed.
    pub fn dropped(&self) -> u64 {
        let s = self.stats();
        s.queue_dropped + s.spool_dropped + s.spool_failed
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }
}

impl AuditSink for Siem {
    /// Queues the event; never blocks. A full queue drops the event and counts it; the writer
    /// then reports the loss with a `siem-overflow` event.
    fn emit(&self, event: AuditEvent) {
        if self.shared.closing.load(Ordering::SeqCst) {
            self.shared.queue_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.queue_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl SiemHandle {
    /// Stops the trail: the writer writes everything queued (to the local sinks and the
    /// spool), then the network sinks keep delivering for at most `bound`; what they could
    /// not confirm stays in the spool for the next start. Returns the final counters.
    pub fn shutdown(mut self, bound: Duration) -> Stats {
        self.shared.closing.store(true, Ordering::SeqCst);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        self.shared.stop(Instant::now() + bound);
        for s in self.senders.drain(..) {
            let _ = s.join();
        }
        self.shared.stats()
    }
}

impl Drop for SiemHandle {
    /// Without an explicit shutdown, the threads are told to stop at once (the writer still
    /// drains its queue into the spool) and left to finish on their own.
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.stop(Instant::now());
    }
}

/// State shared by the emitters, the writer and the network sinks.
#[derive(Default)]
pub struct Shared {
    queue_dropped: AtomicU64,
    spool_dropped: AtomicU64,
    spool_failed: AtomicU64,
    local_errors: AtomicU64,
    udp_errors: AtomicU64,
    /// A file reopen was requested.
    reopen: AtomicBool,
    /// The writer must drain its queue and stop.
    closing: AtomicBool,
    /// When the network sinks must stop at the latest.
    stop_deadline: Mutex<Option<Instant>>,
    /// Rung when rows are appended to the spool or a stop is requested.
    spooled: Signal,
}

impl Shared {
    fn stats(&self) -> Stats {
        Stats {
            queue_dropped: self.queue_dropped.load(Ordering::Relaxed),
            spool_dropped: self.spool_dropped.load(Ordering::Relaxed),
            spool_failed: self.spool_failed.load(Ordering::Relaxed),
            local_errors: self.local_errors.load(Ordering::Relaxed),
            udp_errors: self.udp_errors.load(Ordering::Relaxed),
        }
    }

    fn stop(&self, deadline: Instant) {
        let mut d = crate::lock(&self.stop_deadline);
        *d = Some(d.map_or(deadline, |old| old.min(deadline)));
        drop(d);
        self.spooled.notify();
    }

    fn stop_deadline(&self) -> Option<Instant> {
        *crate::lock(&self.stop_deadline)
    }
}

/// A sequence number with a condition variable: wakes waiters without losing a notification
/// that arrives between their check and their wait.
#[derive(Default)]
pub struct Signal {
    seq: Mutex<u64>,
    cv: Condvar,
}

impl Signal {
    fn notify(&self) {
        let mut seq = crate::lock(&self.seq);
        *seq = seq.wrapping_add(1);
        drop(seq);
        self.cv.notify_all();
    }

    /// Waits until the sequence differs from `seen` or `timeout` passes; returns the current
    /// sequence.
    fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let seq = crate::lock(&self.seq);
        if *seq != seen {
            return *seq;
        }
        match self.cv.wait_timeout_while(seq, timeout, |s| *s == seen) {
            Ok((s, _)) => *s,
            Err(p) => *p.into_inner().0,
        }
    }
}
