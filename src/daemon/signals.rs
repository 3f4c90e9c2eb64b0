//! Signals (SPEC §7): SIGHUP → reload; SIGTERM → graceful stop; SIGINT → fast stop (also
//! during a graceful drain). Falls back to Ctrl-C only when the handlers cannot be installed.

use super::Running;

/// How the daemon is asked to stop.
pub(super) enum StopKind {
    Graceful,
    Fast,
}

/// The installed handlers: SIGHUP, SIGTERM, SIGINT.
pub(super) struct Signals {
    installed: Option<[tokio::signal::unix::Signal; 3]>,
}

impl Signals {
    pub(super) fn install() -> Self {
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

    pub(super) async fn wait(&mut self, running: &Running) -> StopKind {
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
    pub(super) async fn interrupt(&mut self) {
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
