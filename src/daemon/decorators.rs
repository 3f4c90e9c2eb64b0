//! The decorators the assembly wraps around the parts: the verifier SIGHUP can swap, and
//! the backend and audit sink that count for `/metrics` and the systemd status line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use crate::api::Metrics;
use crate::audit::{Action, AuditEvent, AuditSink};
use crate::backend::{
    Backend, ChallengeBinding, RcptOutcome, Recipient, SessionInfo, Transaction, Verdict, Verify,
};
use crate::config::Config;
use crate::siem::Siem;
use crate::verify::Verifier;

use super::DaemonError;

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

    pub(super) fn replace(&self, verifier: Verifier) {
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

    async fn analyse(&self, tx: &Transaction, probe_id: &str, now: DateTime<Utc>) -> Verdict {
        let verifier = self.current();
        verifier.analyse_probe(tx, probe_id, now).await
    }
}

/// The verifier of `config`, its DNS lookups counted in `metrics`.
pub(super) fn metered_verifier(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Verifier, DaemonError> {
    let metrics = Arc::clone(metrics);
    Ok(Verifier::new(config)?.with_dns_observer(Arc::new(move |d| metrics.dns_lookup(d))))
}

/// The production backend with session counts for `/metrics`.
pub struct Metered<B> {
    inner: B,
    metrics: Arc<Metrics>,
}

impl<B> Metered<B> {
    pub fn new(inner: B, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
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
    pub fn new(siem: Siem, metrics: Arc<Metrics>) -> Self {
        Self {
            siem,
            metrics,
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
        }
    }

    /// The systemd status line: outcomes so far and SIEM events lost.
    pub(super) fn status_line(&self) -> String {
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
