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
//!
//! # Files
//!
//! - [`source`]: the one [`ConfigSource`] (where the configuration comes from).
//! - [`assemble`]: builds every part from the configuration and starts them ([`start`]).
//! - [`decorators`]: the swappable verifier and the metered backend and sink.
//! - [`jobs`]: the store's background jobs (start-up mark, purge loop).
//! - `control`: reloads, watchdog and status while running.
//! - `signals`: SIGHUP, SIGTERM, SIGINT.
//! - [`cli`]: the bodies of the CLI commands; `main.rs` only parses and dispatches.

pub mod assemble;
pub mod cli;
mod control;
pub mod decorators;
pub mod jobs;
pub mod logging;
mod signals;
pub mod source;
pub mod systemd;

use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigError;
use crate::server;

pub use assemble::start;
pub use source::ConfigSource;

use self::signals::{Signals, StopKind};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("SIEM: {0}")]
    Siem(#[from] crate::siem::SiemError),
    #[error("{0}")]
    Build(#[from] assemble::BuildError),
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
