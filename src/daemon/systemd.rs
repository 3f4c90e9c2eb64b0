//! systemd integration: the notify protocol (READY, STATUS, WATCHDOG, RELOADING, STOPPING) and
//! socket activation (listeners inherited through `LISTEN_FDS`).
//!
//! Everything here is a no-op outside systemd: without `NOTIFY_SOCKET` nothing is sent, and
//! without `LISTEN_FDS` the daemon binds `smtp.listen` itself.

use std::io;
use std::net::TcpListener;
use std::time::Duration;

use sd_notify::NotifyState;

/// Sends state changes to the service manager when there is one.
#[derive(Clone, Copy, Debug)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` once.
    pub fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }

    /// The daemon serves: listeners bound, store open.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Live counters for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// Keep-alive ping; sent from the main loop so a wedged runtime stops pinging.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// A SIGHUP reload starts; `ready` ends it.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// SIGTERM received: draining.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    }

    /// How often to ping: half the watchdog timeout the manager asked for (`WATCHDOG_USEC`,
    /// for this process when `WATCHDOG_PID` is set), as sd_watchdog_enabled(3) advises.
    /// `None` without a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        ping_interval(sd_notify::watchdog_enabled())
    }
}

/// Shortest ping period: a timeout below 2 ms cannot be honoured by a loop that also serves,
/// and a zero period would make the timer spin (tokio refuses it outright).
const MIN_PING: Duration = Duration::from_millis(1);

/// Half the timeout, at least [`MIN_PING`]; a zero timeout means no watchdog (systemd never
/// sends one, but the variable is an input).
fn ping_interval(timeout: Option<Duration>) -> Option<Duration> {
    let timeout = timeout.filter(|t| !t.is_zero())?;
    Some((timeout / 2).max(MIN_PING))
}

/// The TCP listeners systemd passed (`LISTEN_FDS`, `LISTEN_PID` checked by `listenfd`), in
/// order. Empty when the daemon was not socket-activated.
pub fn inherited_listeners() -> io::Result<Vec<TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut listeners = Vec::with_capacity(fds.len());
    for idx in 0..fds.len() {
        match fds.take_tcp_listener(idx)? {
            Some(l) => {
                l.set_nonblocking(true)?;
                listeners.push(l);
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("inherited fd {} is not a TCP listener", idx + 3),
                ));
            }
        }
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_interval_is_half_the_timeout() {
        let table: &[(Option<Duration>, Option<Duration>)] = &[
            (None, None),
            (Some(Duration::ZERO), None),
            (Some(Duration::from_secs(30)), Some(Duration::from_secs(15))),
            (Some(Duration::from_micros(1)), Some(MIN_PING)),
            (
                Some(Duration::from_millis(3)),
                Some(Duration::from_micros(1500)),
            ),
        ];
        for (timeout, want) in table {
            assert_eq!(ping_interval(*timeout), *want, "{timeout:?}");
        }
    }
}
