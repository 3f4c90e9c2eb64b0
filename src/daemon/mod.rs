//! The daemon: assembles the configuration, the SIEM, the store, the verifier, the HTTP API
//! and the SMTP server, and runs them until a signal says stop.
//!
//! Signals (SPEC §7): SIGHUP re-reads and validates the configuration — an invalid one is
//! refused, logged, and the running one keeps serving — then swaps the SMTP settings (limits,
//! policy, TLS certificate and key, for new connections) and the verifier (policy, DNS), and
//! reopens the SIEM files. Listener addresses, the API address, the store path and the SIEM
//! sinks are read at start only (a change there needs a restart; the reload says so).
//! SIGTERM drains: stop accepting, let sessions finish for `smtp.shutdown_grace`, then 421.
//! SIGINT is fast: no grace.
//!
//! Under systemd: `Type=notify` (READY, STATUS with live counters, WATCHDOG, RELOADING,
//! STOPPING) and socket activation (inherited listeners replace `smtp.listen`).

pub mod cli;
pub mod logging;
pub mod systemd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::Metrics;
use crate::app::{self, App};
use crate::audit::{Action, AuditEvent, AuditSink};
use crate::backend::{ChallengeBinding, Transaction, Verdict, Verify};
use crate::config::{Config, ConfigError};
use crate::server::{self, ServerSettings};
use crate::siem::Siem;
use crate::verify::Verifier;

use self::systemd::Notifier;

/// How long the SIEM may keep delivering queued events at exit.
const SIEM_FLUSH_BOUND: Duration = Duration::from_secs(5);

/// Where the configuration comes from; kept so that SIGHUP re-reads the same source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    /// A text compiled into the binary (the embedded default), with its name for errors.
    Text {
        text: &'static str,
        origin: &'static str,
    },
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(path) => Config::load(path),
            ConfigSource::Text { text, origin } => Config::from_toml_str(text, origin),
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("SIEM: {0}")]
    Siem(#[from] crate::siem::SiemError),
    #[error("{0}")]
    Build(#[from] app::BuildError),
    #[error("DNS: {0}")]
    Dns(#[from] crate::dns::DnsSetupError),
    #[error("SMTP: {0}")]
    Server(#[from] server::ServerError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot create directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("inherited listeners: {0}")]
    Inherited(std::io::Error),
}

/// The verifier behind a lock so that SIGHUP can swap it while sessions run: each
/// verification takes the current one and keeps it until it is done.
#[derive(Clone)]
pub struct SwapVerifier {
    current: Arc<RwLock<Arc<Verifier>>>,
}

impl SwapVerifier {
    pub fn new(verifier: Verifier) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(verifier))),
        }
    }

    fn current(&self) -> Arc<Verifier> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    fn replace(&self, verifier: Verifier) {
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(verifier),
            Err(p) => *p.into_inner() = Arc::new(verifier),
        }
    }
}

impl Verify for SwapVerifier {
    async fn verify(
        &self,
        tx: &Transaction,
        challenge: &ChallengeBinding,
        now: DateTime<Utc>,
    ) -> Verdict {
        let verifier = self.current();
        verifier.verify(tx, challenge, now).await
    }
}

/// The audit sink the server writes to: counts outcomes for `/metrics` and the systemd
/// status line, then hands the event to the SIEM.
pub struct MeteredSink {
    siem: Siem,
    metrics: Arc<Metrics>,
    accepted: AtomicU64,
    refused: AtomicU64,
    deferred: AtomicU64,
}

impl MeteredSink {
    fn status_line(&self) -> String {
        format!(
            "confirmed {}, refused {}, deferred {}, SIEM lost {}",
            self.accepted.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.deferred.load(Ordering::Relaxed),
            self.siem.dropped(),
        )
    }
}

impl AuditSink for MeteredSink {
    fn emit(&self, event: AuditEvent) {
        let counter = match event.action {
            Action::ConfirmationAccepted => Some(&self.accepted),
            Action::ConfirmationRejected | Action::ConnectionRefused => Some(&self.refused),
            Action::ConfirmationDeferred => Some(&self.deferred),
            _ => None,
        };
        if let Some(c) = counter {
            c.fetch_add(1, Ordering::Relaxed);
            self.metrics.verdict(event.reason);
        }
        self.siem.emit(event);
    }
}

/// A running daemon (in-process): its bound addresses and how to stop it.
pub struct Running {
    pub smtp_addrs: Vec<SocketAddr>,
    pub api_addr: SocketAddr,
    shutdown: CancellationToken,
    fast: watch::Sender<bool>,
    task: JoinHandle<()>,
    reload: tokio::sync::mpsc::Sender<()>,
}

impl Running {
    /// Graceful stop (SIGTERM): drain within `smtp.shutdown_grace`, then return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Fast stop (SIGINT): no grace.
    pub async fn stop_now(self) {
        let _ = self.fast.send(true);
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Ask for a reload (what SIGHUP does).
    pub async fn reload(&self) {
        let _ = self.reload.send(()).await;
    }

    /// A handle that resolves when the daemon has stopped.
    pub fn cancel_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Start every part of the daemon and return once the listeners are bound and the store is
/// open. Listeners: inherited from systemd when `LISTEN_FDS` says so, else `smtp.listen`.
pub async fn start(source: ConfigSource) -> Result<Running, DaemonError> {
    let config = source.load()?;
    let notifier = Notifier::from_env();

    prepare_dirs(&config)?;
    let (siem, siem_handle) = Siem::start(&config.siem, &config.smtp.hostname)?;
    let parts = app::build(&config)?;
    let verifier = SwapVerifier::new(Verifier::new(&config)?);
    let backend = Arc::new(App::new(
        &config,
        Arc::clone(&parts.store),
        verifier.clone(),
    ));
    let sink = Arc::new(MeteredSink {
        siem: siem.clone(),
        metrics: Arc::clone(&parts.metrics),
        accepted: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        deferred: AtomicU64::new(0),
    });

    let smtp_listeners = smtp_listeners(&config).await?;
    let smtp_addrs = smtp_listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect::<Vec<_>>();
    let api_listener = TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.api.listen.to_string(),
            source,
        })?;
    let api_addr = api_listener
        .local_addr()
        .map_err(|source| DaemonError::Bind {
            addr: config.api.listen.to_string(),
            source,
        })?;

    let settings = ServerSettings::from_config(&config)?;
    let (settings_tx, settings_rx) = watch::channel(Arc::new(settings));
    let shutdown = CancellationToken::new();
    let (fast_tx, fast_rx) = watch::channel(false);
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);

    let smtp_task = tokio::spawn(server::run(
        smtp_listeners,
        settings_rx,
        Arc::clone(&backend),
        Arc::clone(&sink) as Arc<dyn AuditSink>,
        shutdown.clone(),
    ));
    let api_shutdown = shutdown.clone();
    let api_task = tokio::spawn(crate::api::serve(
        api_listener,
        parts.router.clone(),
        async move { api_shutdown.cancelled().await },
    ));
    let purge_task = tokio::spawn(app::purge_loop(
        Arc::clone(&parts.store),
        config.store.purge_interval,
    ));

    tracing::info!(
        smtp = ?smtp_addrs,
        api = %api_addr,
        store = %config.store.path.display(),
        "gatekeeper serving"
    );
    notifier.ready(&sink.status_line());

    let control = Control {
        source,
        notifier,
        settings_tx,
        verifier,
        siem,
        sink: Arc::clone(&sink),
        metrics: Arc::clone(&parts.metrics),
        store: Arc::clone(&parts.store),
    };
    let main_shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        control.run(main_shutdown.clone(), reload_rx, fast_rx).await;
        let _ = smtp_task.await;
        purge_task.abort();
        let _ = api_task.await;
        // The SIEM's last flush blocks (files, SQLite, sockets): off the runtime threads.
        let stats =
            tokio::task::spawn_blocking(move || siem_handle.shutdown(SIEM_FLUSH_BOUND)).await;
        if let Ok(stats) = stats {
            tracing::info!(?stats, "SIEM flushed");
        }
        tracing::info!("gatekeeper stopped");
    });

    Ok(Running {
        smtp_addrs,
        api_addr,
        shutdown,
        fast: fast_tx,
        task,
        reload: reload_tx,
    })
}

/// `gatekeeper serve`: start, then wait for signals until stopped.
pub async fn serve(source: ConfigSource) -> Result<(), DaemonError> {
    let running = start(source).await?;
    let signals = wait_signals(&running).await;
    match signals {
        StopKind::Graceful => running.stop().await,
        StopKind::Fast => running.stop_now().await,
    }
    Ok(())
}

enum StopKind {
    Graceful,
    Fast,
}

/// SIGHUP → reload; SIGTERM → graceful; SIGINT → fast. Falls back to Ctrl-C only when the
/// signal handlers cannot be installed.
async fn wait_signals(running: &Running) -> StopKind {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; Ctrl-C only");
        let _ = tokio::signal::ctrl_c().await;
        return StopKind::Fast;
    };
    let stopped = running.cancel_token();
    loop {
        tokio::select! {
            _ = hup.recv() => running.reload().await,
            _ = term.recv() => return StopKind::Graceful,
            _ = int.recv() => return StopKind::Fast,
            _ = stopped.cancelled() => return StopKind::Graceful,
        }
    }
}

/// The control loop: reloads, watchdog pings and status, and the shutdown sequence.
struct Control {
    source: ConfigSource,
    notifier: Notifier,
    settings_tx: watch::Sender<Arc<ServerSettings>>,
    verifier: SwapVerifier,
    siem: Siem,
    sink: Arc<MeteredSink>,
    metrics: Arc<Metrics>,
    store: Arc<crate::store::SqliteStore>,
}

impl Control {
    async fn run(
        &self,
        shutdown: CancellationToken,
        mut reloads: tokio::sync::mpsc::Receiver<()>,
        mut fast: watch::Receiver<bool>,
    ) {
        let interval = self
            .notifier
            .watchdog_interval()
            .unwrap_or(Duration::from_secs(10));
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(()) = reloads.recv() => self.reload(),
                _ = tick.tick() => {
                    self.notifier.watchdog();
                    self.notifier.status(&self.sink.status_line());
                    self.metrics.queue_depth("store_writes", crate::store::Store::queue_depth(&*self.store));
                    self.metrics.queue_depth("siem_lost", usize::try_from(self.siem.dropped()).unwrap_or(usize::MAX));
                }
            }
        }
        self.notifier.stopping();
        if *fast.borrow_and_update() {
            self.settings_tx.send_modify(|s| {
                let mut next = (**s).clone();
                next.shutdown_grace = Duration::ZERO;
                *s = Arc::new(next);
            });
        }
        tracing::info!("draining SMTP sessions");
    }

    /// SIGHUP: validate first; only a valid configuration replaces the running one.
    fn reload(&self) {
        self.notifier.reloading();
        match self.try_reload() {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the running configuration stays")
            }
        }
        self.siem.reopen();
        self.notifier.ready(&self.sink.status_line());
    }

    fn try_reload(&self) -> Result<(), DaemonError> {
        let config = self.source.load()?;
        let settings = ServerSettings::from_config(&config)?;
        let verifier = Verifier::new(&config)?;
        self.settings_tx.send_replace(Arc::new(settings));
        self.verifier.replace(verifier);
        Ok(())
    }
}

/// Listeners inherited from systemd, else bound from `smtp.listen`.
async fn smtp_listeners(config: &Config) -> Result<Vec<TcpListener>, DaemonError> {
    let inherited = systemd::inherited_listeners().map_err(DaemonError::Inherited)?;
    if !inherited.is_empty() {
        tracing::info!(count = inherited.len(), "using listeners passed by systemd");
        return inherited
            .into_iter()
            .map(TcpListener::from_std)
            .collect::<Result<Vec<_>, _>>()
            .map_err(DaemonError::Inherited);
    }
    let mut listeners = Vec::with_capacity(config.smtp.listen.len());
    for addr in &config.smtp.listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        listeners.push(l);
    }
    Ok(listeners)
}

/// Create the parent directories of every file the daemon writes (SIEM files and spool, the
/// store, the outbox), so the embedded default runs from an empty working directory.
fn prepare_dirs(config: &Config) -> Result<(), DaemonError> {
    use crate::config::{OutboundTarget, SiemSink};
    let mut dirs: Vec<&std::path::Path> = Vec::new();
    for sink in &config.siem.sinks {
        if let SiemSink::File { path } = sink {
            dirs.extend(path.parent());
        }
    }
    dirs.extend(config.siem.spool_path.parent());
    dirs.extend(config.store.path.parent());
    dirs.extend(config.api.token_file.parent());
    if let OutboundTarget::Directory(dir) = &config.outbound.target {
        dirs.push(dir);
    }
    for dir in dirs {
        if dir.as_os_str().is_empty() {
            continue;
        }
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(())
}
