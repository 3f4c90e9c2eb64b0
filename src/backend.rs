//! The seams between the SMTP engine, the verifier and the store.
//!
//! The engine (`smtp`, pure) and its driver (`server`) know nothing of challenges or DNS: the
//! driver asks a [`Backend`] whether a recipient is a live confirmation address and what to
//! answer at the end of DATA. The production backend (`app`) looks the token up in the store,
//! runs a [`Verify`] implementation and commits the confirmation before it answers (I3).

use std::future::Future;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::address::Mailbox;
use crate::audit::Check;
use crate::reason::Reason;

/// What the session knows about its client.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// Unique per connection; appears in every audit event of the session.
    pub session_id: String,
    pub client_ip: IpAddr,
    pub client_port: u16,
    /// The EHLO/HELO argument as sent (raw, lossy UTF-8).
    pub helo: Option<String>,
    /// `1.2` / `1.3` once STARTTLS completed.
    pub tls_version: Option<String>,
}

/// A confirmation recipient, already parsed: `<local_prefix>+<token>@<confirm.domain>`.
#[derive(Clone, Debug)]
pub struct Recipient {
    /// The token, lower-case (the canonical form of the address).
    pub token: String,
    /// The canonical recipient address.
    pub address: Mailbox,
}

/// The local-part prefix of a probe address (defined with the configuration, which refuses
/// it as `confirm.local_prefix`).
pub use crate::config::PROBE_PREFIX;

impl Recipient {
    /// A probe address (analysed, never confirming) rather than a confirmation address.
    pub fn is_probe(&self) -> bool {
        self.address
            .local()
            .get(..PROBE_PREFIX.len() + 1)
            .is_some_and(|head| head.eq_ignore_ascii_case("probe+"))
    }
}

/// Answer to a RCPT for a confirmation address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptOutcome {
    /// The token names a challenge; the session may proceed to DATA.
    Accept { challenge_id: String },
    /// `token.unknown`, `token.expired`, `token.used`, or a temporary `store.unavailable`.
    Refuse(Reason),
}

/// One complete transaction at the end of DATA.
#[derive(Clone, Debug)]
pub struct Transaction {
    pub session: SessionInfo,
    /// The untagged envelope sender: what every check compares.
    pub mail_from: Mailbox,
    /// MAIL FROM as sent when a configured envelope tag was removed (SPEC §3); SPF is
    /// evaluated on it, as RFC 7208 §2.4 says of the MAIL FROM identity.
    pub mail_from_tagged: Option<String>,
    pub rcpt: Recipient,
    pub challenge_id: String,
    /// The message as received: dot-unstuffed, CRLF line endings, without the final `.`.
    pub message: Vec<u8>,
    pub received_at: DateTime<Utc>,
}

/// The challenge a transaction claims to answer, as the verifier needs it.
#[derive(Clone, Debug)]
pub struct ChallengeBinding {
    pub id: String,
    /// The address the challenge was issued for.
    pub address: Mailbox,
    /// The token (from the RCPT address; the store keeps only its hash).
    pub token: String,
    /// The code shown on the requester's screen.
    pub session_code: String,
    /// The challenge mail's Message-ID, without angle brackets.
    pub message_id: String,
}

/// The final decision on a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Accept,
    /// The primary reason; its class decides 4xx or 5xx.
    Refuse(Reason),
}

/// What a confirmation keeps as proof (SPEC §6 `evidence`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub client_ip: String,
    pub helo: Option<String>,
    pub tls_version: Option<String>,
    pub mail_from: String,
    /// MAIL FROM as sent, when an envelope tag was removed to give `mail_from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_from_tagged: Option<String>,
    pub from: String,
    pub dkim_domain: String,
    pub dkim_selector: String,
    pub dkim_algorithm: String,
    pub spf: String,
    /// DNSSEC proof of the MAIL FROM domain's SPF answer: `secure`, `insecure`, `off`
    /// (`dns.dnssec = false`), `unknown` (no answer); empty in evidence older than DNSSEC.
    #[serde(default)]
    pub spf_dnssec: String,
    /// DNSSEC proof of the confirming signature's key record (through any CNAME), same
    /// values; `skipped` for a domain confirmed unsigned.
    #[serde(default)]
    pub dkim_key_dnssec: String,
    pub message_id: Option<String>,
    pub date: Option<String>,
    /// The raw top-level header block of the confirming mail (lossy UTF-8).
    pub headers: String,
}

/// The verifier's answer: the decision, every check's result, and the facts the audit event
/// and the store need.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub decision: Decision,
    pub checks: Vec<Check>,
    /// The From address, canonical when it parsed (raw otherwise).
    pub from: Option<String>,
    pub message_id: Option<String>,
    pub challenge_id: Option<String>,
    /// Set when `decision` is `Accept`.
    pub evidence: Option<Evidence>,
}

impl Verdict {
    /// A verdict with no checks run (e.g. the store failed before verification).
    pub fn refuse(reason: Reason) -> Self {
        Self {
            decision: Decision::Refuse(reason),
            checks: Vec::new(),
            from: None,
            message_id: None,
            challenge_id: None,
            evidence: None,
        }
    }
}

/// The message verification (SPF, DKIM, headers, binding). Implemented by `verify::Verifier`.
pub trait Verify: Send + Sync + 'static {
    fn verify(
        &self,
        tx: &Transaction,
        challenge: &ChallengeBinding,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Verdict> + Send;

    /// A probe mail (SPEC §10): every check, the binding checks reported but not required;
    /// the decision is the one a confirmation would get.
    fn analyse(
        &self,
        tx: &Transaction,
        probe_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Verdict> + Send;
}

/// What the SMTP driver needs from the rest of the product.
pub trait Backend: Send + Sync + 'static {
    /// Is this a live confirmation address?
    fn check_recipient(
        &self,
        session: &SessionInfo,
        rcpt: &Recipient,
        now: DateTime<Utc>,
    ) -> impl Future<Output = RcptOutcome> + Send;

    /// Decide on a complete transaction. Returns only after an accepted confirmation is
    /// durably stored (I3); a store failure is `Refuse(StoreUnavailable)`.
    fn deliver(&self, tx: Transaction) -> impl Future<Output = Verdict> + Send;

    /// A session started (after the connection limits admitted it).
    fn session_opened(&self, _session: &SessionInfo) {}

    /// The session ended (connection closed).
    fn session_closed(&self, _session_id: &str) {}
}
