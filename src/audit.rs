//! Audit events: the closed set of typed records every refusal, temporary failure and
//! confirmation produces (SPEC I4, §6). Built by the engine and the verifier; serialised only
//! in `siem` (ECS JSON or CEF). Field values here are raw (possibly attacker-controlled)
//! strings: escaping and truncation are the serialiser's job, never the producer's.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use crate::reason::Reason;

/// What happened (`event.action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `confirmation-accepted`: 250 after DATA, the confirmation is stored.
    ConfirmationAccepted,
    /// `confirmation-rejected`: a 5xx at any stage of a session.
    ConfirmationRejected,
    /// `confirmation-deferred`: a 4xx (DNS, store, limits the client may retry).
    ConfirmationDeferred,
    /// `connection-refused`: refused before the greeting (limits, client network).
    ConnectionRefused,
    /// `oidc-signin`: the OpenID Provider signed someone in (`success`: an ID token was
    /// issued) or refused a step of a sign-in at `/authorize`, on the page or at `/token`
    /// (`failure`); `gatekeeper.checks` carries `oidc.stage`, `oidc.client_id` and
    /// `oidc.error` (SPEC §9).
    OidcSignin,
    /// `probe-analysed`: a mail to a probe address was verified and its analysis stored
    /// (SPEC §10); `reason` is the one a confirmation would get (`None`: it would confirm).
    ProbeAnalysed,
    /// `webhook-given-up`: a webhook delivery was abandoned (older than its `max_age`, or its
    /// `[[webhook]]` is no longer configured); `challenge_id`, `message` (event, webhook-id,
    /// endpoint, attempts, last error) say which (SPEC §11: never dropped silently).
    WebhookGivenUp,
    /// `siem-overflow`: the audit trail itself lost events (a bounded queue or the spool was
    /// full); `lost` carries the count. Built only by `siem`.
    SiemOverflow,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ConfirmationAccepted => "confirmation-accepted",
            Action::ConfirmationRejected => "confirmation-rejected",
            Action::ConfirmationDeferred => "confirmation-deferred",
            Action::ConnectionRefused => "connection-refused",
            Action::OidcSignin => "oidc-signin",
            Action::ProbeAnalysed => "probe-analysed",
            Action::WebhookGivenUp => "webhook-given-up",
            Action::SiemOverflow => "siem-overflow",
        }
    }
}

/// ECS `event.outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Unknown => "unknown",
        }
    }
}

/// One check and its result, e.g. `("spf", "pass")`, `("dkim", "fail")`,
/// `("binding.session_code", "ok")`. Names and results are fixed strings chosen by the
/// verifier, never peer bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub result: String,
}

/// One audit event. `None` fields are omitted from the output.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub timestamp: DateTime<Utc>,
    pub action: Action,
    pub outcome: Outcome,
    /// The primary reason code; `None` only for an accepted confirmation.
    pub reason: Option<Reason>,
    /// The SMTP reply code sent (or the HTTP status for API events).
    pub reply_code: Option<u16>,
    pub session_id: String,
    pub source_ip: Option<IpAddr>,
    pub source_port: Option<u16>,
    /// `gatekeeper.helo`, raw.
    pub helo: Option<String>,
    /// `email.sender.address`: MAIL FROM, canonical when it parsed, raw otherwise.
    pub mail_from: Option<String>,
    /// `gatekeeper.mail_from_tagged`: MAIL FROM as sent, when a configured envelope tag
    /// (SPEC §3) was removed to give `mail_from`.
    pub mail_from_tagged: Option<String>,
    /// `email.from.address`: the From header address, canonical when it parsed.
    pub from: Option<String>,
    /// `email.to.address`, already redacted: `confirm+[redacted]@<domain>`.
    pub to: Option<String>,
    /// The challenge's id; on `probe-analysed` events, the probe's.
    pub challenge_id: Option<String>,
    pub message_id: Option<String>,
    /// `tls.version`, e.g. `1.3`.
    pub tls_version: Option<String>,
    /// `gatekeeper.checks`: every check's result.
    pub checks: Vec<Check>,
    /// Free text for operators (fixed strings or numbers, never peer bytes).
    pub message: Option<String>,
    /// How many events the audit trail lost and where (only on [`Action::SiemOverflow`]).
    pub lost: Option<Loss>,
}

/// Events the audit trail itself dropped because a bound was reached (`gatekeeper.siem.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loss {
    pub count: u64,
    pub stage: LossStage,
}

/// Which bound dropped them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossStage {
    /// The in-memory queue between `emit` and the writer was full (`siem.queue_overflow`).
    Queue,
    /// The durable spool reached `siem.spool_max_events`; the oldest undelivered events were
    /// deleted (`siem.spool_overflow`).
    Spool,
}

impl AuditEvent {
    /// A new event with the given action and reason; every other field empty.
    pub fn new(
        timestamp: DateTime<Utc>,
        action: Action,
        reason: Option<Reason>,
        session_id: impl Into<String>,
    ) -> Self {
        let outcome = match action {
            Action::ConfirmationAccepted | Action::ProbeAnalysed => Outcome::Success,
            Action::ConfirmationDeferred => Outcome::Unknown,
            Action::ConfirmationRejected
            | Action::ConnectionRefused
            | Action::SiemOverflow
            | Action::WebhookGivenUp
            | Action::OidcSignin => Outcome::Failure,
        };
        Self {
            timestamp,
            action,
            outcome,
            reason,
            reply_code: reason.map(|r| r.reply().code),
            session_id: session_id.into(),
            source_ip: None,
            source_port: None,
            helo: None,
            mail_from: None,
            mail_from_tagged: None,
            from: None,
            to: None,
            challenge_id: None,
            message_id: None,
            tls_version: None,
            checks: Vec::new(),
            message: None,
            lost: None,
        }
    }
}

/// Where events go. `emit` must never block an SMTP session: implementations queue and count
/// what they drop.
pub trait AuditSink: Send + Sync + 'static {
    fn emit(&self, event: AuditEvent);
}

/// Collects events in memory (tests, and `gatekeeper verify`).
#[derive(Default)]
pub struct MemorySink {
    events: std::sync::Mutex<Vec<AuditEvent>>,
}

impl MemorySink {
    pub fn take(&self) -> Vec<AuditEvent> {
        match self.events.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }
}

impl AuditSink for MemorySink {
    fn emit(&self, event: AuditEvent) {
        match self.events.lock() {
            Ok(mut g) => g.push(event),
            Err(p) => p.into_inner().push(event),
        }
    }
}
