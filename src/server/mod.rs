//! The SMTP listener: accepts connections on listeners it is handed (so systemd socket
//! activation can pass them in), enforces the connection limits and `policy.allowed_networks`,
//! and runs one [`conn`] driver per session over the pure engine in `crate::smtp`.
//!
//! - Settings arrive through a `watch` channel: a SIGHUP reload swaps the configuration and the
//!   TLS acceptor for new connections; running sessions keep the settings they started with.
//!   The DATA memory budget is the exception: one count across reloads
//!   ([`ServerSettings::keep_budget`]), only its bound changes.
//! - Over a limit (`smtp.max_connections`, `smtp.max_connections_per_ip`) or outside
//!   `policy.allowed_networks`, the connection is accepted, answered `421 conn.limit` /
//!   `550 client.network` with one non-blocking write, audited (`connection-refused`) and
//!   closed at once: a refused client costs no task and no timer.
//! - Accept errors (e.g. out of file descriptors) back off from 10 ms to 1 s.
//! - Shutdown: when the token is cancelled the listeners stop accepting; idle sessions get
//!   `421 smtp.shutdown` at once, busy ones may finish their transaction within
//!   `smtp.shutdown_grace`, then get the 421. [`run`] returns when every session has ended.
//!   [`run_until`] adds an `abort` token: every session gets the 421 at once, grace or not
//!   (SIGINT, or a second signal during a drain).

mod conn;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use ipnet::IpNet;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::{Action, AuditEvent, AuditSink};
use crate::backend::Backend;
use crate::config::Config;
use crate::reason::Reason;
use crate::smtp::{SessionSettings, reply};

/// Everything the server needs, built once per (re)load.
#[derive(Clone)]
pub struct ServerSettings {
    pub session: Arc<SessionSettings>,
    /// Present when a certificate is configured: STARTTLS is offered.
    pub tls: Option<TlsAcceptor>,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Empty: any client network.
    pub allowed_networks: Vec<IpNet>,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub session_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Why the server settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot read TLS certificate {path}: {source}")]
    Certificate {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("cannot read TLS private key {path}: {source}")]
    PrivateKey {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS certificate file {0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("TLS configuration refused: {0}")]
    Tls(#[from] rustls::Error),
}

impl ServerSettings {
    /// Build the settings from the validated configuration, loading the TLS certificate and
    /// key when `[smtp.tls]` is present.
    pub fn from_config(config: &Config) -> Result<Self, ServerError> {
        let tls = match &config.smtp.tls {
            Some(t) => Some(load_tls(&t.certificate, &t.private_key)?),
            None => None,
        };
        let smtp = &config.smtp;
        Ok(Self {
            session: Arc::new(SessionSettings::from_config(config, tls.is_some())),
            tls,
            max_connections: smtp.max_connections,
            max_connections_per_ip: smtp.max_connections_per_ip,
            allowed_networks: config.policy.allowed_networks.clone(),
            command_timeout: smtp.command_timeout,
            data_timeout: smtp.data_timeout,
            session_timeout: smtp.session_timeout,
            shutdown_grace: smtp.shutdown_grace,
        })
    }
}

impl ServerSettings {
    /// Go on counting in `running`'s memory budget (`smtp.max_buffered_bytes`) under this
    /// configuration's bound. A reload must not start a second, empty count beside the one
    /// the running sessions hold: the bound is on all of them together.
    pub fn keep_budget(&mut self, running: &ServerSettings) {
        let budget = running.session.budget.clone();
        budget.set_limit(self.session.budget.limit());
        Arc::make_mut(&mut self.session).budget = budget;
    }
}

/// Load a PEM certificate chain and private key from files into a TLS acceptor.
pub fn load_tls(certificate: &Path, private_key: &Path) -> Result<TlsAcceptor, ServerError> {
    let certs = CertificateDer::pem_file_iter(certificate)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| ServerError::Certificate {
            path: certificate.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ServerError::NoCertificate(certificate.to_owned()));
    }
    let key =
        PrivateKeyDer::from_pem_file(private_key).map_err(|source| ServerError::PrivateKey {
            path: private_key.to_owned(),
            source,
        })?;
    tls_acceptor(certs, key)
}

/// A TLS 1.2+ acceptor (rustls with ring) for this chain and key.
pub fn tls_acceptor(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serve SMTP on `listeners` until `shutdown` is cancelled and every session has ended.
pub async fn run<B: Backend>(
    listeners: Vec<TcpListener>,
    settings: watch::Receiver<Arc<ServerSettings>>,
    backend: Arc<B>,
    audit: Arc<dyn AuditSink>,
    shutdown: CancellationToken,
) {
    run_until(
        listeners,
        settings,
        backend,
        audit,
        shutdown,
        CancellationToken::new(),
    )
    .await;
}

/// [`run`], plus `abort`: once cancelled, every session ends now with `421 smtp.shutdown`
/// instead of finishing within its grace. Sessions capture their settings (the grace
/// included) when they start, so a fast stop cannot go through the settings channel. Cancel
/// `shutdown` too: `abort` alone does not stop the listeners.
pub async fn run_until<B: Backend>(
    listeners: Vec<TcpListener>,
    settings: watch::Receiver<Arc<ServerSettings>>,
    backend: Arc<B>,
    audit: Arc<dyn AuditSink>,
    shutdown: CancellationToken,
    abort: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let shared = Arc::new(Shared {
        settings,
        backend,
        audit,
        shutdown,
        abort,
        counts: Arc::new(ConnCounts::default()),
        tracker: tracker.clone(),
    });
    for listener in listeners {
        tracker.spawn(accept_loop(listener, shared.clone()));
    }
    tracker.close();
    tracker.wait().await;
}

/// What every accept loop and connection task shares.
struct Shared<B> {
    settings: watch::Receiver<Arc<ServerSettings>>,
    backend: Arc<B>,
    audit: Arc<dyn AuditSink>,
    shutdown: CancellationToken,
    /// Ends every session at once (see [`run_until`]).
    abort: CancellationToken,
    counts: Arc<ConnCounts>,
    /// Sessions are tracked so that `run` returns only after the last one.
    tracker: TaskTracker,
}

const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

async fn accept_loop<B: Backend>(listener: TcpListener, shared: Arc<Shared<B>>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = MIN_BACKOFF;
                admit(&shared, stream, peer);
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed; backing off");
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Apply the network and connection limits, then start the session.
fn admit<B: Backend>(shared: &Arc<Shared<B>>, stream: TcpStream, peer: SocketAddr) {
    let settings = shared.settings.borrow().clone();
    let ip = peer.ip().to_canonical();
    let networks = &settings.allowed_networks;
    if !networks.is_empty() && !networks.iter().any(|n| n.contains(&ip)) {
        return refuse_connection(shared, &stream, ip, peer.port(), Reason::ClientNetwork);
    }
    let limits = (settings.max_connections, settings.max_connections_per_ip);
    let Some(permit) = ConnCounts::acquire(&shared.counts, ip, limits) else {
        return refuse_connection(shared, &stream, ip, peer.port(), Reason::ConnLimit);
    };
    let shared = shared.clone();
    shared.tracker.clone().spawn(async move {
        conn::serve(stream, ip, peer.port(), settings, &shared).await;
        drop(permit);
    });
}

/// Audit a refused connection, answer it with one non-blocking write (a fresh socket's send
/// buffer is empty, so the short reply fits), and close it.
fn refuse_connection<B>(
    shared: &Shared<B>,
    stream: &TcpStream,
    ip: IpAddr,
    port: u16,
    reason: Reason,
) {
    let mut event = AuditEvent::new(
        Utc::now(),
        Action::ConnectionRefused,
        Some(reason),
        new_session_id(),
    );
    event.source_ip = Some(ip);
    event.source_port = Some(port);
    shared.audit.emit(event);
    let _ = stream.try_write(&reply::render(reason.reply()));
}

/// Open connections, globally and per client IP.
#[derive(Default)]
struct ConnCounts {
    inner: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One counted connection; dropping it gives the slot back.
struct ConnPermit {
    counts: Arc<ConnCounts>,
    ip: IpAddr,
}

impl ConnCounts {
    fn acquire(
        counts: &Arc<Self>,
        ip: IpAddr,
        (max_total, max_per_ip): (usize, usize),
    ) -> Option<ConnPermit> {
        let mut guard = crate::lock(&counts.inner);
        let (total, per_ip) = &mut *guard;
        let mine = per_ip.get(&ip).copied().unwrap_or(0);
        if *total >= max_total || mine >= max_per_ip {
            return None;
        }
        *total += 1;
        per_ip.insert(ip, mine + 1);
        Some(ConnPermit {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut guard = crate::lock(&self.counts.inner);
        let (total, per_ip) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// A unique, unguessable session id: 64 random bits in hex (a counter as fallback).
fn new_session_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let rng = ring::rand::SystemRandom::new();
    match ring::rand::generate::<[u8; 8]>(&rng) {
        Ok(bytes) => data_encoding::HEXLOWER.encode(&bytes.expose()),
        Err(_) => {
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("c{n:015x}")
        }
    }
}

/// Tests of I/O helpers that need no socket.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_limit_and_release() {
        let counts = Arc::new(ConnCounts::default());
        let a = IpAddr::from([127, 0, 0, 2]);
        let b: IpAddr = IpAddr::from([127, 0, 0, 3]);
        let p1 = ConnCounts::acquire(&counts, a, (3, 1));
        assert!(p1.is_some());
        assert!(ConnCounts::acquire(&counts, a, (3, 1)).is_none());
        let p2 = ConnCounts::acquire(&counts, b, (2, 1));
        assert!(p2.is_some());
        assert!(ConnCounts::acquire(&counts, IpAddr::from([127, 0, 0, 4]), (2, 1)).is_none());
        drop(p1);
        assert!(ConnCounts::acquire(&counts, a, (2, 1)).is_some());
        assert_ne!(new_session_id(), new_session_id());
    }

    /// A reload keeps one count of DATA memory: what running sessions hold stays counted
    /// under the new bound.
    #[test]
    fn a_reload_keeps_the_budget_count() {
        let text = include_str!("../../conf/gatekeeper.toml");
        let mut config = match Config::from_toml_str(text, "conf") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let running = ServerSettings::from_config(&config).ok();
        let held = running
            .as_ref()
            .and_then(|r| r.session.budget.reserve(1000));
        assert!(held.is_some());
        config.smtp.max_buffered_bytes = 4 * 1024 * 1024;
        let mut reloaded = ServerSettings::from_config(&config).ok();
        if let (Some(new), Some(old)) = (reloaded.as_mut(), running.as_ref()) {
            assert_eq!(new.session.budget.used(), 0, "a fresh count before");
            new.keep_budget(old);
            assert_eq!(new.session.budget.used(), 1000);
            assert_eq!(new.session.budget.limit(), 4 * 1024 * 1024);
            assert_eq!(old.session.budget.limit(), 4 * 1024 * 1024);
        } else {
            panic!("settings from the shipped configuration");
        }
        drop(held);
        assert_eq!(reloaded.map(|r| r.session.budget.used()), Some(0));
    }

    #[test]
    fn missing_certificate_names_the_file() {
        let missing = Path::new("/nonexistent/gatekeeper-cert.pem");
        match load_tls(missing, missing) {
            Err(ServerError::Certificate { path, .. }) => assert_eq!(path, missing),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a missing certificate loaded"),
        }
    }
}
