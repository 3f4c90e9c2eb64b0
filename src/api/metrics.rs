//! Prometheus metrics (`GET /metrics`), in the OpenMetrics text format that
//! `prometheus-client` writes (Prometheus reads it).
//!
//! One [`Metrics`] is built at start and shared (`Arc`) by every module: each records what it
//! sees through the methods below (the SMTP server: sessions and verdicts; the DNS layer:
//! latency; the SIEM: queue depths). Label values are fixed strings (reason codes, queue
//! names), never peer bytes, so the label space is bounded.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::reason::Reason;
use crate::store::StoreHealth;

type Label = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// The product's metrics.
pub struct Metrics {
    registry: Registry,
    sessions: Counter,
    sessions_active: Gauge,
    verdicts: Family<Label, Counter>,
    dns_latency: Histogram,
    queue_depth: Family<Label, Gauge>,
    challenges: Family<Label, Counter>,
    oidc: Family<Labels2, Counter>,
    webhooks: Family<Labels2, Counter>,
    store_up: Gauge,
    auth_failures: Family<Label, Counter>,
    throttled_peers: Gauge,
    store_failures: Counter,
    store_reconnects: Counter,
    /// Serialises [`Metrics::store_health`]'s read-then-add on the two counters above, so
    /// two scrapes at once do not both add the same difference.
    store_sync: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let sessions = Counter::default();
        let sessions_active = Gauge::default();
        let verdicts = Family::<Label, Counter>::default();
        // 1 ms .. ~16 s
        let dns_latency = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let queue_depth = Family::<Label, Gauge>::default();
        let challenges = Family::<Label, Counter>::default();
        let oidc = Family::<Labels2, Counter>::default();
        let webhooks = Family::<Labels2, Counter>::default();
        registry.register(
            "gatekeeper_webhook_attempts",
            "Webhook delivery attempts by event and outcome (delivered, failed, given_up)",
            webhooks.clone(),
        );
        let auth_failures = Family::<Label, Counter>::default();
        let throttled_peers = Gauge::default();
        registry.register(
            "gatekeeper_api_auth_failures",
            "API requests without a valid bearer token, by outcome (unauthorized: 401, throttled: 429)",
            auth_failures.clone(),
        );
        registry.register(
            "gatekeeper_api_throttled_peers",
            "Peers answered 429 now for too many requests without a valid token",
            throttled_peers.clone(),
        );
        let store_up = Gauge::default();
        let store_failures = Counter::default();
        let store_reconnects = Counter::default();
        registry.register(
            "gatekeeper_store_up",
            "1 if the store answered the last call (a ping at each scrape), 0 if it failed",
            store_up.clone(),
        );
        registry.register(
            "gatekeeper_store_failures",
            "Store calls that failed (store.unavailable: SMTP 451, API 503)",
            store_failures.clone(),
        );
        registry.register(
            "gatekeeper_store_reconnects",
            "Times the store answered again after failing (a reconnection after an outage)",
            store_reconnects.clone(),
        );
        registry.register(
            "gatekeeper_oidc_requests",
            "OpenID Provider answers by endpoint and outcome (ok, or the OAuth error code)",
            oidc.clone(),
        );
        registry.register(
            "gatekeeper_smtp_sessions",
            "SMTP sessions opened",
            sessions.clone(),
        );
        registry.register(
            "gatekeeper_smtp_sessions_active",
            "SMTP sessions currently open",
            sessions_active.clone(),
        );
        registry.register(
            "gatekeeper_verdicts",
            "Final answers by reason code (reason=\"accepted\" for a confirmation)",
            verdicts.clone(),
        );
        registry.register(
            "gatekeeper_dns_lookup_seconds",
            "Latency of each DNS-bound check (SPF, DKIM key lookups, iprev)",
            dns_latency.clone(),
        );
        registry.register(
            "gatekeeper_queue_depth",
            "Items waiting in internal queues",
            queue_depth.clone(),
        );
        registry.register(
            "gatekeeper_challenges",
            "Challenge requests by result (created or the refusal reason)",
            challenges.clone(),
        );
        Self {
            registry,
            sessions,
            sessions_active,
            verdicts,
            dns_latency,
            queue_depth,
            challenges,
            oidc,
            webhooks,
            store_up,
            auth_failures,
            throttled_peers,
            store_failures,
            store_reconnects,
            store_sync: Mutex::new(()),
        }
    }

    /// The store's health as the store keeps it (counts since start): the counters catch up
    /// with it, so they never go down.
    pub fn store_health(&self, health: StoreHealth) {
        let _guard = self.store_sync.lock().unwrap_or_else(|p| p.into_inner());
        self.store_up.set(i64::from(health.up));
        for (counter, total) in [
            (&self.store_failures, health.failures),
            (&self.store_reconnects, health.reconnects),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// A webhook attempt: `event` (`challenge.confirmed`, ...; `other` for a name this
    /// program does not know) and `outcome` (`delivered`, `failed`, `given_up`).
    pub fn webhook(&self, event: &str, outcome: &'static str) {
        let event = crate::config::WEBHOOK_EVENTS
            .iter()
            .find(|e| **e == event)
            .copied()
            .unwrap_or("other");
        self.webhooks
            .get_or_create(&[("event", event), ("outcome", outcome)])
            .inc();
    }

    /// An OpenID Provider answer: `endpoint` (`authorize`, `page`, `token`, `userinfo`)
    /// and `outcome` (`ok` or an OAuth error code: fixed strings).
    pub fn oidc(&self, endpoint: &'static str, outcome: &'static str) {
        self.oidc
            .get_or_create(&[("endpoint", endpoint), ("outcome", outcome)])
            .inc();
    }

    /// A request without a valid token and what it got.
    pub fn auth_failure(&self, refusal: super::abuse::Refusal) {
        let outcome = match refusal {
            super::abuse::Refusal::Unauthorized => "unauthorized",
            super::abuse::Refusal::Throttled { .. } => "throttled",
        };
        self.auth_failures
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    /// Peers over the failed-authentication limit now (set at each scrape).
    pub fn throttled_peers(&self, n: usize) {
        self.throttled_peers
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// An SMTP session started.
    pub fn session_opened(&self) {
        self.sessions.inc();
        self.sessions_active.inc();
    }

    /// An SMTP session ended.
    pub fn session_closed(&self) {
        self.sessions_active.dec();
    }

    /// A final answer: `None` = accepted, `Some(reason)` = refused or deferred.
    pub fn verdict(&self, reason: Option<Reason>) {
        let label = reason.map(Reason::as_str).unwrap_or("accepted");
        self.verdicts.get_or_create(&[("reason", label)]).inc();
    }

    /// One DNS lookup took `elapsed`.
    pub fn dns_lookup(&self, elapsed: Duration) {
        self.dns_latency.observe(elapsed.as_secs_f64());
    }

    /// The current depth of a named queue (`"siem"`, `"store"`, ...).
    pub fn queue_depth(&self, queue: &'static str, depth: usize) {
        let depth = i64::try_from(depth).unwrap_or(i64::MAX);
        self.queue_depth
            .get_or_create(&[("queue", queue)])
            .set(depth);
    }

    /// A challenge request ended: `None` = created, `Some(reason)` = refused.
    pub fn challenge(&self, reason: Option<Reason>) {
        let label = reason.map(Reason::as_str).unwrap_or("created");
        self.challenges.get_or_create(&[("result", label)]).inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
