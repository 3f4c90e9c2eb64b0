//! Syslog over TCP (RFC 6587 octet counting) and TLS (RFC 5425), fed from the spool with
//! at-least-once delivery. One thread per sink, blocking sockets with timeouts.
//!
//! # When is an event "delivered"?
//!
//! Syslog over TCP has no acknowledgement: a successful `write` only means the bytes reached
//! our kernel. If the collector stops, what it had not read yet is lost while our writes kept
//! succeeding. So an event counts as delivered (its id committed to the sink's cursor) only
//! when it was written and the connection was still up [`CONFIRM_WINDOW`] later: a collector
//! that goes away closes the connection (FIN, RST, TLS close_notify), which the liveness
//! check sees, and everything written since the last confirmation is sent again on the next
//! connection (duplicates, never losses). What this cannot cover is a collector that read an
//! event and then crashed before storing it; that needs an acknowledging protocol (RELP),
//! which this sink does not speak.
//!
//! Reconnection backs off exponentially from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]; the delay is
//! reset once a connection has stayed up for a confirmation window.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::Shared;
use super::spool::Cursor;
use super::syslog::{Header, octet_frame};
use super::writer::Burst;
use crate::config::SyslogTransport;

/// How long a written event must be followed by a live connection before it is committed.
pub const CONFIRM_WINDOW: Duration = Duration::from_millis(1000);
/// First reconnection delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Largest reconnection delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Connect and TLS handshake timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A collector that accepts no bytes for this long is treated as down.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Events fetched from the spool and written per round.
const BATCH: usize = 256;
/// Idle wake-up period when nothing is pending.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// A TCP or TLS syslog destination.
pub struct NetSink {
    /// The cursor name in the spool, e.g. `tls://127.0.0.1:6514`.
    pub key: String,
    pub address: SocketAddr,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl NetSink {
    /// A sink for `transport` (TCP or TLS; UDP is served by the writer). TLS trusts only the
    /// CAs in `ca_file` and checks the certificate against `server_name`, or against the IP
    /// address of `address` when no name is given.
    pub fn new(
        address: SocketAddr,
        transport: &SyslogTransport,
        ca_file: Option<&Path>,
        server_name: Option<&str>,
    ) -> Result<Self, super::SiemError> {
        let (scheme, tls) = match transport {
            SyslogTransport::Tls => {
                let ca = ca_file.ok_or(super::SiemError::TlsCaMissing(address))?;
                let name = match server_name {
                    Some(n) => ServerName::try_from(n.to_owned())
                        .map_err(|_| super::SiemError::TlsServerName(n.to_owned()))?,
                    None => ServerName::IpAddress(address.ip().into()),
                };
                ("tls", Some((tls_config(ca)?, name)))
            }
            SyslogTransport::Tcp | SyslogTransport::Udp => ("tcp", None),
        };
        Ok(Self {
            key: format!("{scheme}://{address}"),
            address,
            tls,
        })
    }

    /// The delivery loop; returns when `shared` asks the sinks to stop and either everything
    /// spooled so far is confirmed or the stop deadline has passed.
    pub fn run(self, cursor: Cursor, shared: Arc<Shared>, header: Header) {
        let mut state = Delivery {
            sink: self,
            cursor,
            shared,
            header,
            conn: None,
            committed: 0,
            sent_upto: 0,
            inflight: VecDeque::new(),
            backoff: Backoff::default(),
            next_attempt: Instant::now(),
            connected_at: Instant::now(),
            seen: 0,
            commit_failures: Burst::default(),
        };
        state.run();
    }
}

struct Delivery {
    sink: NetSink,
    cursor: Cursor,
    shared: Arc<Shared>,
    header: Header,
    conn: Option<Conn>,
    /// The highest id committed to the cursor.
    committed: i64,
    /// The highest id written on the current connection.
    sent_upto: i64,
    /// (highest id of a write, when it was written), oldest first, not yet confirmed.
    inflight: VecDeque<(i64, Instant)>,
    backoff: Backoff,
    next_attempt: Instant,
    connected_at: Instant,
    /// The last spool notification seen.
    seen: u64,
    /// Failed cursor commits of the current burst (a full disk fails every one): logged once.
    commit_failures: Burst,
}

impl Delivery {
    fn run(&mut self) {
        self.committed = loop {
            match self.cursor.delivered() {
                Ok(c) => break c,
                Err(e) => {
                    tracing::error!(sink = %self.sink.key, error = %e, "siem spool unreadable");
                    if self.stopped_waiting(BACKOFF_MAX) {
                        return;
                    }
                }
            }
        };
        self.sent_upto = self.committed;
        let mut target = None;
        loop {
            if let Some(deadline) = self.shared.stop_deadline() {
                let t = *target.get_or_insert_with(|| self.cursor.last_id().unwrap_or(0));
                if self.committed >= t || Instant::now() >= deadline {
                    break;
                }
            }
            self.confirm();
            let rows = match self.cursor.fetch(self.sent_upto, BATCH) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(sink = %self.sink.key, error = %e, "siem spool read failed");
                    self.wait(IDLE_WAIT);
                    continue;
                }
            };
            let Some(last) = rows.last().map(|r| r.id) else {
                let until_confirm = self
                    .inflight
                    .front()
                    .map(|(_, t)| (*t + CONFIRM_WINDOW).saturating_duration_since(Instant::now()));
                self.wait(until_confirm.map_or(IDLE_WAIT, |d| d.max(Duration::from_millis(10))));
                continue;
            };
            if self.conn.is_none() && !self.connect() {
                continue;
            }
            let mut buf = Vec::with_capacity(rows.len() * 600);
            for row in &rows {
                let r = &row.record;
                octet_frame(
                    &self
                        .header
                        .message(r.severity, r.timestamp, &r.msgid, &r.body),
                    &mut buf,
                );
            }
            let written = match self.conn.as_mut() {
                Some(conn) => conn.write_all(&buf),
                None => Err(io::ErrorKind::NotConnected.into()),
            };
            match written {
                Ok(()) => {
                    self.sent_upto = last;
                    self.inflight.push_back((last, Instant::now()));
                }
                Err(e) => self.lost_connection(&e),
            }
        }
        if let Some(conn) = self.conn.as_mut() {
            conn.close();
        }
    }

    /// Checks the connection; commits every write older than the confirmation window.
    fn confirm(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Err(e) = conn.check_alive() {
            self.lost_connection(&e);
            return;
        }
        let now = Instant::now();
        let mut upto = None;
        while let Some(&(id, at)) = self.inflight.front() {
            if now.duration_since(at) < CONFIRM_WINDOW {
                break;
            }
            upto = Some(id);
            self.inflight.pop_front();
        }
        if let Some(id) = upto {
            match self.cursor.commit(id) {
                Ok(()) => {
                    self.committed = id;
                    if let Some(failures) = self.commit_failures.recovered() {
                        tracing::warn!(sink = %self.sink.key, failures, "siem cursor commits work again");
                    }
                }
                // Not committing only means sending again later: at-least-once holds.
                Err(e) => {
                    if self.commit_failures.fail(1, now) {
                        tracing::error!(sink = %self.sink.key, error = %e, "siem cursor commit failed (logged once per burst)");
                    }
                }
            }
        }
        if now.duration_since(self.connected_at) >= CONFIRM_WINDOW {
            self.backoff.reset();
        }
    }

    /// Connects when the backoff allows; false when not connected (yet).
    fn connect(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next_attempt {
            self.wait(self.next_attempt - now);
            return false;
        }
        let timeout = match self.shared.stop_deadline() {
            Some(d) => d.saturating_duration_since(now).min(CONNECT_TIMEOUT),
            None => CONNECT_TIMEOUT,
        };
        if timeout.is_zero() {
            return false;
        }
        match Conn::open(self.sink.address, self.sink.tls.as_ref(), timeout) {
            Ok(conn) => {
                tracing::info!(sink = %self.sink.key, "siem collector connected");
                self.conn = Some(conn);
                self.connected_at = Instant::now();
                true
            }
            Err(e) => {
                tracing::warn!(sink = %self.sink.key, error = %e, retry_in = ?self.backoff.current(), "siem collector unreachable");
                self.schedule_retry();
                false
            }
        }
    }

    /// Drops the connection; everything not confirmed will be sent again.
    fn lost_connection(&mut self, e: &io::Error) {
        tracing::warn!(sink = %self.sink.key, error = %e, "siem collector connection lost");
        self.conn = None;
        self.sent_upto = self.committed;
        self.inflight.clear();
        self.schedule_retry();
    }

    fn schedule_retry(&mut self) {
        self.next_attempt = Instant::now() + self.backoff.next_delay();
    }

    /// Waits for new spool rows, a stop request or `timeout`.
    fn wait(&mut self, timeout: Duration) {
        let timeout = match self.shared.stop_deadline() {
            Some(d) => d.saturating_duration_since(Instant::now()).min(timeout),
            None => timeout,
        };
        self.seen = self.shared.spooled.wait(self.seen, timeout);
    }

    /// Waits `timeout`; true when the sink was asked to stop meanwhile.
    fn stopped_waiting(&mut self, timeout: Duration) -> bool {
        self.wait(timeout);
        self.shared.stop_deadline().is_some()
    }
}

/// Exponential reconnection delay: [`BACKOFF_MIN`], doubling, capped at [`BACKOFF_MAX`].
#[derive(Debug)]
pub struct Backoff {
    current: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            current: BACKOFF_MIN,
        }
    }
}

impl Backoff {
    /// The delay to wait now; the next one doubles (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(BACKOFF_MAX);
        delay
    }

    /// The delay the next failure will wait.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Back to the minimum (after a connection proved stable).
    pub fn reset(&mut self) {
        self.current = BACKOFF_MIN;
    }
}

/// A connection to a collector.
enum Conn {
    Tcp(TcpStream),
    Tls(Box<ClientConnection>, TcpStream),
}

impl Conn {
    fn open(
        address: SocketAddr,
        tls: Option<&(Arc<ClientConfig>, ServerName<'static>)>,
        timeout: Duration,
    ) -> io::Result<Self> {
        let mut sock = TcpStream::connect_timeout(&address, timeout)?;
        sock.set_nodelay(true)?;
        sock.set_write_timeout(Some(WRITE_TIMEOUT))?;
        sock.set_read_timeout(Some(timeout))?;
        let Some((config, name)) = tls else {
            return Ok(Conn::Tcp(sock));
        };
        let mut conn =
            ClientConnection::new(Arc::clone(config), name.clone()).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        while conn.wants_write() {
            conn.write_tls(&mut sock)?;
        }
        Ok(Conn::Tls(Box::new(conn), sock))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Conn::Tcp(sock) => sock.write_all(buf),
            Conn::Tls(conn, sock) => {
                // Bounded chunks: rustls buffers at most its buffer limit of unsent records.
                for chunk in buf.chunks(16 * 1024) {
                    conn.writer().write_all(chunk)?;
                    while conn.wants_write() {
                        conn.write_tls(sock)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Err when the collector closed the connection or it failed. Reads (and discards)
    /// whatever the collector sent without blocking; a syslog collector sends nothing but
    /// TLS session tickets, alerts and FIN.
    fn check_alive(&mut self) -> io::Result<()> {
        let sock = match self {
            Conn::Tcp(s) | Conn::Tls(_, s) => s,
        };
        sock.set_nonblocking(true)?;
        let result = self.poll_peer();
        let sock = match self {
            Conn::Tcp(s) | Conn::Tls(_, s) => s,
        };
        sock.set_nonblocking(false)?;
        result
    }

    fn poll_peer(&mut self) -> io::Result<()> {
        let closed = || {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "collector closed the connection",
            )
        };
        let mut scratch = [0u8; 4096];
        // Bounded: a collector streaming bytes at us cannot keep this thread here.
        for _ in 0..16 {
            let step = match self {
                Conn::Tcp(sock) => match sock.read(&mut scratch) {
                    Ok(0) => return Err(closed()),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                },
                Conn::Tls(conn, sock) => match conn.read_tls(sock) {
                    Ok(0) => return Err(closed()),
                    Ok(_) => {
                        let state = conn.process_new_packets().map_err(io::Error::other)?;
                        if state.peer_has_closed() {
                            return Err(closed());
                        }
                        while let Ok(n) = conn.reader().read(&mut scratch) {
                            if n == 0 {
                                break;
                            }
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
            };
            match step {
                Ok(()) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Best-effort orderly close (TLS close_notify).
    fn close(&mut self) {
        if let Conn::Tls(conn, sock) = self {
            conn.send_close_notify();
            while conn.wants_write() {
                if conn.write_tls(sock).is_err() {
                    break;
                }
            }
        }
    }
}

/// What is wrong with a TLS sink's `ca_file`; each keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum TlsCaError {
    /// Unreadable, or not PEM.
    #[error(transparent)]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// A certificate rustls refuses, or no protocol version the provider supports.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error("no certificate in file")]
    Empty,
}

/// A rustls client config (ring provider) trusting only the CAs in `ca_file`.
fn tls_config(ca_file: &Path) -> Result<Arc<ClientConfig>, super::SiemError> {
    let ca_err = |e: TlsCaError| super::SiemError::TlsCa(ca_file.to_owned(), e);
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| ca_err(e.into()))? {
        let cert = cert.map_err(|e| ca_err(e.into()))?;
        roots.add(cert).map_err(|e| ca_err(e.into()))?;
    }
    if roots.is_empty() {
        return Err(ca_err(TlsCaError::Empty));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ca_err(e.into()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100ms_caps_at_30s_and_resets() {
        let mut b = Backoff::default();
        let ms: Vec<u128> = (0..12).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(
            ms,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000
            ]
        );
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_MIN);
    }
}
