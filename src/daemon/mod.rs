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
use crate::backend::{
    Backend, ChallengeBinding, RcptOutcome, Recipient, SessionInfo, Transaction, Verdict, Verify,
};
use crate::config::{Config, ConfigError};
use crate::server::{self, ServerSettings};
use crate::siem::Siem;
use crate::verify::Verifier;

use self::systemd::Notifier;

/// How often the status line and gauges are refreshed when there is no watchdog.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

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
    #[error("{0}")]
    Oidc(#[from] crate::oidc::StartError),
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

fn metered_verifier(config: &Config, metrics: &Arc<Metrics>) -> Result<Verifier, DaemonError> {
    let metrics = Arc::clone(metrics);
    Ok(Verifier::new(config)?.with_dns_observer(Arc::new(move |d| metrics.dns_lookup(d))))
}

/// The production backend with session counts for `/metrics`.
pub struct Metered<B> {
    inner: B,
    metrics: Arc<Metrics>,
}

impl<B: Backend> Backend for Metered<B> {
    async fn check_recipient(
        &self,
        session: &SessionInfo,
        rcpt: &Recipient,
        now: DateTime<Utc>,
    ) -> RcptOutcome {
        self.inner.check_recipient(session, rcpt, now).await
    }

    async fn deliver(&self, tx: Transaction) -> Verdict {
        self.inner.deliver(tx).await
    }

    fn session_opened(&self, session: &SessionInfo) {
        self.metrics.session_opened();
        self.inner.session_opened(session);
    }

    fn session_closed(&self, session_id: &str) {
        self.metrics.session_closed();
        self.inner.session_closed(session_id);
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
    /// The OpenID Provider's listener, when `[oidc]` is configured.
    pub oidc_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    /// Ends every session now, grace or not.
    abort: CancellationToken,
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
        self.abort.cancel();
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Graceful stop that turns fast if `hurry` resolves before the drain ends (SIGINT
    /// during a SIGTERM drain).
    pub async fn stop_unless(self, hurry: impl std::future::Future<Output = ()>) {
        self.shutdown.cancel();
        let mut task = self.task;
        tokio::select! {
            _ = &mut task => return,
            () = hurry => {}
        }
        tracing::info!("stopping now: sessions get 421 without their grace");
        self.abort.cancel();
        let _ = task.await;
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
    // Sessions of an earlier run died with it: their confirmations count as delivered, so a
    // redelivery after a crash gets its 250 again at once (SPEC §4).
    match parts.store.end_open_sessions().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            confirmations = n,
            "sessions of the previous run marked ended"
        ),
        Err(e) => tracing::warn!(error = %e, "could not mark the previous run's sessions ended"),
    }
    let verifier = SwapVerifier::new(metered_verifier(&config, &parts.metrics)?);
    let backend = Arc::new(Metered {
        inner: App::new(&config, Arc::clone(&parts.store), verifier.clone()),
        metrics: Arc::clone(&parts.metrics),
    });
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
    let abort = CancellationToken::new();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);

    let smtp_task = tokio::spawn(server::run_until(
        smtp_listeners,
        settings_rx,
        Arc::clone(&backend),
        Arc::clone(&sink) as Arc<dyn AuditSink>,
        shutdown.clone(),
        abort.clone(),
    ));
    let api_shutdown = shutdown.clone();
    let api_task = tokio::spawn(crate::api::serve(
        api_listener,
        parts.router.clone(),
        async move { api_shutdown.cancelled().await },
    ));
    let oidc = match &config.oidc {
        Some(oidc) => {
            let stop = shutdown.clone();
            Some(
                crate::oidc::start(
                    &config,
                    oidc,
                    Arc::clone(&parts.challenges),
                    Arc::clone(&sink) as Arc<dyn AuditSink>,
                    Arc::clone(&parts.metrics),
                    async move { stop.cancelled().await },
                )
                .await?,
            )
        }
        None => None,
    };
    let oidc_addr = oidc.as_ref().map(|o| o.addr);
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
    let last_store = Arc::clone(&parts.store);
    let task = tokio::spawn(async move {
        control.run(main_shutdown.clone(), reload_rx).await;
        let _ = smtp_task.await;
        // Rejection counts still gathering (not awaited by the sessions) are written now.
        last_store.flush_rejections().await;
        purge_task.abort();
        let _ = api_task.await;
        if let Some(oidc) = oidc {
            oidc.purge.abort();
            let _ = oidc.server.await;
        }
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
        oidc_addr,
        shutdown,
        abort,
        task,
        reload: reload_tx,
    })
}

/// `gatekeeper serve`: start, then wait for signals until stopped.
pub async fn serve(source: ConfigSource) -> Result<(), DaemonError> {
    // Handlers before READY: until they exist SIGHUP and SIGTERM keep their default action,
    // which kills the process (a `systemctl reload` right after start would restart it).
    let mut signals = Signals::install();
    let running = start(source).await?;
    match signals.wait(&running).await {
        StopKind::Graceful => running.stop_unless(signals.interrupt()).await,
        StopKind::Fast => running.stop_now().await,
    }
    Ok(())
}

enum StopKind {
    Graceful,
    Fast,
}

/// SIGHUP → reload; SIGTERM → graceful; SIGINT → fast (also during a graceful drain).
/// Falls back to Ctrl-C only when the handlers cannot be installed.
struct Signals {
    installed: Option<[tokio::signal::unix::Signal; 3]>,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let installed = match (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(hup), Ok(term), Ok(int)) => Some([hup, term, int]),
            _ => {
                tracing::warn!("cannot install signal handlers; Ctrl-C only");
                None
            }
        };
        Self { installed }
    }

    async fn wait(&mut self, running: &Running) -> StopKind {
        let stopped = running.cancel_token();
        let Some([hup, term, int]) = &mut self.installed else {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return StopKind::Fast,
                _ = stopped.cancelled() => return StopKind::Graceful,
            }
        };
        loop {
            tokio::select! {
                Some(()) = hup.recv() => running.reload().await,
                Some(()) = term.recv() => return StopKind::Graceful,
                Some(()) = int.recv() => return StopKind::Fast,
                _ = stopped.cancelled() => return StopKind::Graceful,
            }
        }
    }

    /// Resolves on the next SIGINT; never without handlers.
    async fn interrupt(&mut self) {
        match &mut self.installed {
            Some([_, _, int]) => {
                if int.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            None => {
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
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
    async fn run(&self, shutdown: CancellationToken, mut reloads: tokio::sync::mpsc::Receiver<()>) {
        // The watchdog pings come from this loop, so a wedged runtime or a reload that hangs
        // stops them and systemd restarts the service. The status line and the gauges ride
        // on the same tick.
        let watchdog = self.notifier.watchdog_interval();
        let mut tick = tokio::time::interval(watchdog.unwrap_or(STATUS_INTERVAL));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(()) = reloads.recv() => self.reload(),
                _ = tick.tick() => {
                    if watchdog.is_some() {
                        self.notifier.watchdog();
                    }
                    self.notifier.status(&self.sink.status_line());
                    self.metrics.queue_depth("store_writes", crate::store::Store::queue_depth(&*self.store));
                    self.metrics.queue_depth("siem_lost", usize::try_from(self.siem.dropped()).unwrap_or(usize::MAX));
                }
            }
        }
        self.notifier.stopping();
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
        let verifier = metered_verifier(&config, &self.metrics)?;
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
