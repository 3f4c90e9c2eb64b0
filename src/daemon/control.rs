//! The control loop of a running daemon: reloads (SIGHUP), watchdog pings and the status
//! line, and the first step of the shutdown sequence.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::DaemonError;
use super::decorators::{MeteredSink, SwapVerifier, metered_verifier};
use super::source::ConfigSource;
use super::systemd::Notifier;
use crate::api::Metrics;
use crate::server::ServerSettings;
use crate::siem::Siem;
use crate::store::{DynStore, Store};

/// How often the status line and gauges are refreshed when there is no watchdog.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// The control loop: reloads, watchdog pings and status, and the shutdown sequence.
pub(super) struct Control {
    pub(super) source: ConfigSource,
    pub(super) notifier: Notifier,
    pub(super) settings_tx: watch::Sender<Arc<ServerSettings>>,
    pub(super) verifier: SwapVerifier,
    pub(super) siem: Siem,
    pub(super) sink: Arc<MeteredSink>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) store: Arc<DynStore>,
}

impl Control {
    pub(super) async fn run(
        &self,
        shutdown: CancellationToken,
        mut reloads: tokio::sync::mpsc::Receiver<()>,
    ) {
        // The watchdog pings come from this loop, so a wedged runtime or a reload that hangs
        // stops them and systemd restarts the service. The status line and the gauges ride
        // on the same tick.
        let watchdog = self.notifier.watchdog_interval();
        let mut tick = tokio::time::interval(watchdog.unwrap_or(STATUS_INTERVAL));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(()) = reloads.recv() => self.reload().await,
                _ = tick.tick() => {
                    if watchdog.is_some() {
                        self.notifier.watchdog();
                    }
                    self.notifier.status(&self.sink.status_line());
                    self.metrics.queue_depth("store_writes", self.store.queue_depth());
                    self.metrics.queue_depth("siem_lost", usize::try_from(self.siem.dropped()).unwrap_or(usize::MAX));
                }
            }
        }
        self.notifier.stopping();
        tracing::info!("draining SMTP sessions");
    }

    /// SIGHUP: validate first; only a valid configuration replaces the running one.
    async fn reload(&self) {
        self.notifier.reloading();
        match self.try_reload().await {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the running configuration stays")
            }
        }
        self.siem.reopen();
        self.notifier.ready(&self.sink.status_line());
    }

    /// DS trust anchors are matched to the zone's keys again (bounded by
    /// `dns::FETCH_LIMIT`, under the watchdog interval): a key rollover is picked up here.
    async fn try_reload(&self) -> Result<(), DaemonError> {
        let mut config = self.source.load()?;
        crate::dns::resolve_ds_anchors(&mut config.dns).await?;
        let mut settings = ServerSettings::from_config(&config)?;
        settings.keep_budget(&self.settings_tx.borrow());
        let verifier = metered_verifier(&config, &self.metrics)?;
        self.settings_tx.send_replace(Arc::new(settings));
        self.verifier.replace(verifier);
        Ok(())
    }
}
