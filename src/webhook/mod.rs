//! The webhook sender (SPEC §11): sends what the store's outbox holds
//! ([`crate::store::outbox`]) to each `[[webhook]]`, the Standard Webhooks way.
//!
//! # How it works
//!
//! - Every [`POLL`] it asks the store for expiries to report ([`Store::enqueue_expired`]),
//!   then leases the due deliveries ([`Store::claim_deliveries`]: at most one per challenge
//!   and endpoint, the oldest first, so events of a challenge arrive in order) and sends them
//!   all at once. The lease ([`lease`]) outlives the attempt's timeout, so a row is never
//!   sent twice at the same time; a killed instance's rows come back when their lease ends.
//! - Each attempt POSTs the stored body with `webhook-id` (the row's id, the same on every
//!   retry: the receiver's idempotency key), `webhook-timestamp` (this attempt, Unix seconds)
//!   and `webhook-signature` ([`sign::signature`]).
//! - A 2xx marks the row delivered. Anything else (no answer, a timeout, 3xx/4xx/5xx) is
//!   retried after 1 s, 2 s, 4 s … capped at `retry_max`, plus up to 25 % random jitter so
//!   that many rows failing together do not retry together.
//! - A row older than its webhook's `max_age` at claim time, or whose `[[webhook]]` was
//!   removed from the configuration, is given up: a `webhook-given-up` SIEM event and
//!   `gatekeeper_webhook_attempts{outcome="given_up"}`, never a silent drop.
//! - `challenge.confirmed` carries `data.assertion` ([`crate::assertion`]) when the OpenID
//!   Provider's key is configured; it is signed at send time from the stored data, and
//!   deterministic, so every retry sends the same body.
//!
//! Delivery is at least once: an instance killed after the receiver's 2xx and before the
//! row is marked sends it again after the lease. Receivers deduplicate on `webhook-id`.

pub mod http;
pub mod sign;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::Metrics;
use crate::assertion::{Claims, Signer};
use crate::audit::{Action, AuditEvent, AuditSink};
use crate::config::WebhookConfig;
use crate::store::Store;
use crate::store::outbox::{Attempt, CONFIRMED, Delivery, Subscription, Subscriptions};

/// How often the sender looks for due deliveries.
pub const POLL: Duration = Duration::from_millis(500);
/// Rows leased at once.
const BATCH: u32 = 64;
/// Expiries reported per sweep (the next sweep takes the rest).
const EXPIRY_BATCH: u32 = 500;
/// The first retry's delay; each failure doubles it up to `retry_max`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The subscriptions the store writes rows for, from the configuration.
pub fn subscriptions(hooks: &[WebhookConfig]) -> Subscriptions {
    hooks
        .iter()
        .map(|h| Subscription {
            endpoint: h.url.to_string(),
            events: h.events.clone(),
        })
        .collect::<Vec<_>>()
        .into()
}

/// The lease of a claim: longer than any attempt's timeout, so a row being sent is not
/// claimed again, short enough that a killed instance's rows are soon retaken.
pub fn lease(hooks: &[WebhookConfig]) -> Duration {
    hooks
        .iter()
        .map(|h| h.timeout)
        .max()
        .unwrap_or(Duration::ZERO)
        + Duration::from_secs(5)
}

/// The delay before attempt `attempts + 1`: 1 s · 2^(attempts-1), capped at `cap`, plus
/// `jitter` (0..=1) times a quarter of it.
pub fn backoff(attempts: u32, cap: Duration, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let base = FIRST_RETRY.checked_mul(1u32 << exp).unwrap_or(cap).min(cap);
    base + base.mul_f64(jitter.clamp(0.0, 1.0) / 4.0)
}

fn jitter() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 2];
    // Without randomness the retry is only not spread: still correct.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.0;
    }
    f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
}

/// The sender: its webhooks by URL, the assertion signer, where to report.
pub struct Sender<S: Store> {
    store: Arc<S>,
    hooks: HashMap<String, WebhookConfig>,
    lease: Duration,
    signer: Option<Arc<Signer>>,
    metrics: Arc<Metrics>,
    audit: Arc<dyn AuditSink>,
    tls: Arc<rustls::ClientConfig>,
}

impl<S: Store> Sender<S> {
    pub fn new(
        store: Arc<S>,
        hooks: &[WebhookConfig],
        signer: Option<Arc<Signer>>,
        metrics: Arc<Metrics>,
        audit: Arc<dyn AuditSink>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        Self {
            store,
            lease: lease(hooks),
            hooks: hooks
                .iter()
                .map(|h| (h.url.to_string(), h.clone()))
                .collect(),
            signer,
            metrics,
            audit,
            tls,
        }
    }

    /// Send until the future is dropped.
    pub async fn run(self) {
        let this = Arc::new(self);
        let mut ticker = tokio::time::interval(POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            this.round(Utc::now()).await;
        }
    }

    /// One round: report expiries, lease what is due, send it all, record the outcomes.
    pub async fn round(self: &Arc<Self>, now: DateTime<Utc>) {
        if let Err(e) = self.store.enqueue_expired(now, EXPIRY_BATCH).await {
            tracing::warn!(error = %e, "webhooks: expiry sweep failed");
        }
        let lease_until = now + chrono::Duration::from_std(self.lease).unwrap_or_default();
        let due = match self.store.claim_deliveries(now, lease_until, BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot claim deliveries");
                return;
            }
        };
        match self.store.outbox_backlog().await {
            Ok(n) => self
                .metrics
                .queue_depth("webhook_outbox", usize::try_from(n).unwrap_or(usize::MAX)),
            Err(e) => tracing::debug!(error = %e, "webhooks: backlog not counted"),
        }
        let mut tasks = tokio::task::JoinSet::new();
        for d in due {
            let this = Arc::clone(self);
            tasks.spawn(async move { this.deliver(d).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn deliver(&self, d: Delivery) {
        let now = Utc::now();
        let attempt = match self.hooks.get(&d.endpoint) {
            None => self.give_up(&d, "its [[webhook]] is no longer configured".into()),
            Some(hook)
                if now - d.created_at
                    > chrono::Duration::from_std(hook.max_age).unwrap_or_default() =>
            {
                self.give_up(
                    &d,
                    format!("older than max_age ({} s)", hook.max_age.as_secs()),
                )
            }
            Some(hook) => self.attempt(hook, &d).await,
        };
        if let Err(e) = self.store.finish_delivery(d.seq, attempt, Utc::now()).await {
            // The lease ends and the row is sent again: at least once.
            tracing::warn!(error = %e, id = %d.id, "webhooks: outcome not recorded");
        }
    }

    async fn attempt(&self, hook: &WebhookConfig, d: &Delivery) -> Attempt {
        let body = self.body(d);
        let timestamp = Utc::now().timestamp();
        let headers = [
            ("webhook-id", d.id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            (
                "webhook-signature",
                sign::signature(&hook.secret, &d.id, timestamp, &body),
            ),
        ];
        let result = http::post(&hook.url, &headers, body, hook.timeout, &self.tls).await;
        match result {
            Ok(status) if (200..300).contains(&status) => {
                self.metrics.webhook(&d.event, "delivered");
                tracing::debug!(id = %d.id, event = %d.event, status, "webhook delivered");
                Attempt::Delivered
            }
            other => {
                let error = match other {
                    Ok(status) => format!("HTTP {status}"),
                    Err(e) => e,
                };
                self.metrics.webhook(&d.event, "failed");
                let delay = backoff(d.attempts, hook.retry_max, jitter());
                tracing::info!(id = %d.id, event = %d.event, attempts = d.attempts, %error,
                    retry_in_ms = delay.as_millis() as u64, "webhook attempt failed");
                Attempt::Retry {
                    at: Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                    error,
                }
            }
        }
    }

    /// The stored body, with `data.assertion` added to a confirmation when there is a key.
    fn body(&self, d: &Delivery) -> String {
        let Some(signer) = &self.signer else {
            return d.payload.clone();
        };
        if d.event != CONFIRMED {
            return d.payload.clone();
        }
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&d.payload) else {
            return d.payload.clone();
        };
        let assertion = v
            .get("data")
            .cloned()
            .and_then(|data| serde_json::from_value::<Claims>(data).ok())
            .and_then(|claims| signer.sign_claims(&claims).ok());
        match (assertion, v.get_mut("data").and_then(|d| d.as_object_mut())) {
            (Some(a), Some(data)) => {
                data.insert("assertion".into(), serde_json::Value::String(a));
                v.to_string()
            }
            _ => {
                tracing::warn!(id = %d.id, "webhooks: no assertion could be made for this body");
                d.payload.clone()
            }
        }
    }

    fn give_up(&self, d: &Delivery, why: String) -> Attempt {
        self.metrics.webhook(&d.event, "given_up");
        let mut ev = AuditEvent::new(Utc::now(), Action::WebhookGivenUp, None, "webhook");
        ev.challenge_id = Some(d.challenge_id.clone());
        ev.message = Some(format!(
            "{} {} to {} given up after {} attempts: {why}",
            d.event,
            d.id,
            d.endpoint,
            d.attempts.saturating_sub(1)
        ));
        self.audit.emit(ev);
        tracing::warn!(id = %d.id, event = %d.event, endpoint = %d.endpoint, %why, "webhook given up");
        Attempt::GivenUp { error: why }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let cap = Duration::from_secs(60);
        let table: &[(u32, f64, u64)] = &[
            (1, 0.0, 1_000),
            (2, 0.0, 2_000),
            (3, 0.0, 4_000),
            (6, 0.0, 32_000),
            (7, 0.0, 60_000),
            (40, 0.0, 60_000),
            (1, 1.0, 1_250),
            (40, 1.0, 75_000),
            (0, 0.0, 1_000),
        ];
        for (attempts, j, ms) in table {
            assert_eq!(
                backoff(*attempts, cap, *j).as_millis() as u64,
                *ms,
                "{attempts} {j}"
            );
        }
    }
}
