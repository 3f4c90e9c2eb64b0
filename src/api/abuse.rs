//! Requests without a valid bearer token: counted, throttled per peer, and summarised in the
//! log instead of one line each, so that a flood of them (10,000 a second) costs neither the
//! log nor the SIEM anything in proportion.
//!
//! # Decisions
//!
//! - **Per peer, a fixed window**: more than [`FAILURE_LIMIT`] failed authentications from
//!   one peer (an IPv4 address, or an IPv6 /64: one host's worth of addresses) within
//!   [`WINDOW`] get `429 api.rate_limited` with `Retry-After` (the seconds left in the
//!   window) instead of `401`, what a client of an identity provider expects (RFC 6585 §4).
//! - **A valid token always passes**, throttled peer or not: the generated token has 160
//!   random bits, which no rate of guesses reaches, so the throttle is a signal and a cheap
//!   refusal, not the defence; and the backend behind the same NAT as an attacker (or on the
//!   same host) must keep working. The token is still compared in constant time first.
//! - **Bounded memory**: at most [`MAX_PEERS`] peers are tracked; when the table is full,
//!   windows that are over are dropped, and a peer that still finds no room is answered
//!   `401` and counted, not throttled (an attacker with more addresses than that is counted
//!   and alerted on, not slowed).
//! - **Counted in `/metrics`**: `gatekeeper_api_auth_failures_total{outcome}` (`unauthorized`,
//!   `throttled`) and `gatekeeper_api_throttled_peers` (peers over the limit now): alert on
//!   their rate.
//! - **The log**: a request that passed the token check gets its own line (`api request`);
//!   every other answer (401, 429, and the open or unknown paths: `/healthz`, 404, 405) is
//!   counted and reported in one line per [`SUMMARY_INTERVAL`] at most, with the busiest
//!   peer, and one warning when a peer first goes over the limit in a window, at most
//!   [`MAX_WARNINGS`] per interval.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::lock;

/// Failed authentications one peer may make in a [`WINDOW`] before it gets `429`.
pub const FAILURE_LIMIT: u32 = 20;
/// The window of [`FAILURE_LIMIT`].
pub const WINDOW: Duration = Duration::from_secs(60);
/// Peers tracked at most.
pub const MAX_PEERS: usize = 4096;
/// At most one summary line per interval.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// "Peer over the limit" warnings per summary interval at most.
pub const MAX_WARNINGS: u32 = 5;

/// What a request without a valid token gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `401`.
    Unauthorized,
    /// `429` with `Retry-After` in whole seconds (at least 1).
    Throttled { retry_after: u64 },
}

/// A peer as the throttle counts it: an IPv4 address, or the /64 of an IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PeerKey {
    V4(u32),
    V6Net(u64),
    /// No peer address known (a router driven without `ConnectInfo`).
    Unknown,
}

impl PeerKey {
    fn of(peer: Option<SocketAddr>) -> Self {
        match peer.map(|p| p.ip()) {
            Some(IpAddr::V4(a)) => PeerKey::V4(u32::from(a)),
            Some(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(v4) => PeerKey::V4(u32::from(v4)),
                None => PeerKey::V6Net((u128::from(a) >> 64) as u64),
            },
            None => PeerKey::Unknown,
        }
    }
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerKey::V4(a) => write!(f, "{}", std::net::Ipv4Addr::from(*a)),
            PeerKey::V6Net(n) => {
                write!(f, "{}/64", std::net::Ipv6Addr::from(u128::from(*n) << 64))
            }
            PeerKey::Unknown => f.write_str("unknown"),
        }
    }
}

/// One peer's window.
#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    failures: u32,
}

/// What the next summary line reports.
#[derive(Debug, Default)]
struct Summary {
    unauthorized: u64,
    throttled: u64,
    other: u64,
    per_peer: HashMap<PeerKey, u64>,
    warnings: u32,
}

/// The counts and the throttle (one per API router).
#[derive(Debug)]
pub struct Guard {
    peers: Mutex<HashMap<PeerKey, Window>>,
    summary: Mutex<Summary>,
    ticker: AtomicBool,
}

impl Default for Guard {
    fn default() -> Self {
        Self::new()
    }
}

impl Guard {
    pub fn new() -> Self {
        Self {
            peers: Mutex::new(HashMap::new()),
            summary: Mutex::new(Summary::default()),
            ticker: AtomicBool::new(false),
        }
    }

    /// A request from `peer` without a valid token, at `now`: what it gets.
    pub fn failure(&self, peer: Option<SocketAddr>, now: Instant) -> Refusal {
        let key = PeerKey::of(peer);
        let (refusal, crossed) = {
            let mut peers = lock(&self.peers);
            if peers.len() >= MAX_PEERS && !peers.contains_key(&key) {
                peers.retain(|_, w| now.saturating_duration_since(w.started) < WINDOW);
            }
            if peers.len() >= MAX_PEERS && !peers.contains_key(&key) {
                (Refusal::Unauthorized, false)
            } else {
                let w = peers.entry(key).or_insert(Window {
                    started: now,
                    failures: 0,
                });
                if now.saturating_duration_since(w.started) >= WINDOW {
                    *w = Window {
                        started: now,
                        failures: 0,
                    };
                }
                w.failures = w.failures.saturating_add(1);
                if w.failures > FAILURE_LIMIT {
                    let left = WINDOW.saturating_sub(now.saturating_duration_since(w.started));
                    let retry_after = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                    (
                        Refusal::Throttled {
                            retry_after: retry_after.max(1),
                        },
                        w.failures == FAILURE_LIMIT + 1,
                    )
                } else {
                    (Refusal::Unauthorized, false)
                }
            }
        };
        let mut s = lock(&self.summary);
        match refusal {
            Refusal::Unauthorized => s.unauthorized += 1,
            Refusal::Throttled { .. } => s.throttled += 1,
        }
        // The per-peer tally is bounded like the throttle's table.
        if s.per_peer.len() < MAX_PEERS || s.per_peer.contains_key(&key) {
            *s.per_peer.entry(key).or_insert(0) += 1;
        }
        if crossed && s.warnings < MAX_WARNINGS {
            s.warnings += 1;
            tracing::warn!(
                peer = %key,
                limit = FAILURE_LIMIT,
                window_secs = WINDOW.as_secs(),
                "api: peer over the limit of failed authentications: answering 429 until its window ends"
            );
        }
        refusal
    }

    /// Another answer without a valid token (an open or unknown path): only counted.
    pub fn other(&self) {
        lock(&self.summary).other += 1;
    }

    /// Peers over the limit now.
    pub fn throttled_peers(&self, now: Instant) -> usize {
        lock(&self.peers)
            .values()
            .filter(|w| {
                w.failures > FAILURE_LIMIT && now.saturating_duration_since(w.started) < WINDOW
            })
            .count()
    }

    /// Write the summary line of what was counted since the last one (nothing if nothing).
    /// Returns whether a line was written.
    pub fn flush(&self) -> bool {
        let s = std::mem::take(&mut *lock(&self.summary));
        let total = s.unauthorized + s.throttled + s.other;
        if total == 0 {
            return false;
        }
        let busiest = s.per_peer.iter().max_by_key(|(_, n)| **n);
        tracing::info!(
            requests = total,
            unauthorized = s.unauthorized,
            throttled = s.throttled,
            other = s.other,
            peers = s.per_peer.len(),
            busiest_peer = %busiest.map_or_else(|| "-".to_owned(), |(k, _)| k.to_string()),
            busiest_requests = busiest.map_or(0, |(_, n)| *n),
            interval_secs = SUMMARY_INTERVAL.as_secs(),
            "api: requests without a valid token (summary)"
        );
        true
    }

    /// Start the summary ticker once (on the first uncounted answer, so a router that never
    /// sees one never runs a task); it ends when the guard is dropped.
    pub fn ensure_ticker(self: &Arc<Self>) {
        if self.ticker.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SUMMARY_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(guard) = weak.upgrade() else { return };
                guard.flush();
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    /// Row: failures sent from one peer, seconds after the first at which the last is sent,
    /// what the last one gets.
    #[test]
    fn throttle_table() {
        let rows: &[(u32, u64, Refusal)] = &[
            (1, 0, Refusal::Unauthorized),
            (FAILURE_LIMIT, 0, Refusal::Unauthorized),
            (FAILURE_LIMIT + 1, 0, Refusal::Throttled { retry_after: 60 }),
            (
                FAILURE_LIMIT + 1,
                45,
                Refusal::Throttled { retry_after: 15 },
            ),
            // The window is over: the count starts again.
            (FAILURE_LIMIT + 1, 60, Refusal::Unauthorized),
        ];
        for (i, (n, last_at, want)) in rows.iter().enumerate() {
            let g = Guard::new();
            let t0 = Instant::now();
            let mut got = Refusal::Unauthorized;
            for k in 0..*n {
                let at = if k + 1 == *n {
                    t0 + Duration::from_secs(*last_at)
                } else {
                    t0
                };
                got = g.failure(peer("192.0.2.7:4000"), at);
            }
            assert_eq!(got, *want, "row {i}");
        }
    }

    /// Peers are counted apart (an IPv6 /64 as one), and a full table counts without
    /// throttling a newcomer.
    #[test]
    fn peers_and_bounds() {
        let g = Guard::new();
        let t0 = Instant::now();
        for k in 0..=FAILURE_LIMIT {
            // Different hosts of one /64, different ports: one peer.
            let p = format!("[2001:db8:1:2::{k:x}]:{}", 1000 + k);
            g.failure(peer(&p), t0);
        }
        assert!(matches!(
            g.failure(peer("[2001:db8:1:2::ffff]:1"), t0),
            Refusal::Throttled { .. }
        ));
        assert_eq!(
            g.failure(peer("[2001:db8:1:3::1]:1"), t0),
            Refusal::Unauthorized
        );
        assert_eq!(g.failure(peer("192.0.2.1:1"), t0), Refusal::Unauthorized);
        assert_eq!(g.throttled_peers(t0), 1);
        assert_eq!(g.throttled_peers(t0 + WINDOW), 0);

        let g = Guard::new();
        for k in 0..MAX_PEERS as u32 {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + k);
            g.failure(Some(SocketAddr::new(a.into(), 1)), t0);
        }
        for _ in 0..=FAILURE_LIMIT {
            assert_eq!(
                g.failure(peer("192.0.2.9:1"), t0),
                Refusal::Unauthorized,
                "no room: counted, not throttled"
            );
        }
        assert_eq!(lock(&g.peers).len(), MAX_PEERS);
        // Once the windows are over, room is made again.
        for _ in 0..=FAILURE_LIMIT {
            g.failure(peer("192.0.2.9:1"), t0 + WINDOW);
        }
        assert_eq!(g.throttled_peers(t0 + WINDOW), 1);
    }

    /// The summary reports what was counted, once.
    #[test]
    fn summary_is_taken_once() {
        let g = Guard::new();
        assert!(!g.flush(), "nothing to report");
        let t0 = Instant::now();
        g.failure(peer("192.0.2.1:1"), t0);
        g.other();
        {
            let s = lock(&g.summary);
            assert_eq!((s.unauthorized, s.throttled, s.other), (1, 0, 1));
        }
        assert!(g.flush());
        assert!(!g.flush(), "reported once");
    }
}
