//! Challenges: tokens, session codes, ids, and issuing a challenge (store + mail).
//!
//! # Secrets
//!
//! - **Token**: 160 bits from the OS RNG (`ring::rand::SystemRandom`), lower-case base32
//!   without padding (32 characters of `a-z2-7`): it fits a local part, survives the case
//!   folding of the canonical address, and is never a word an MTA rewrites. It leaves the
//!   process only inside the challenge mail (I1); the store keeps its SHA-256. [`Token`]'s
//!   `Debug` is redacted so it cannot slip into a log line.
//! - **Session code**: 6 decimal digits, uniform (rejection sampling on a `u32`, no modulo
//!   bias). Shown only on the requester's screen (API answer), never in the mail.
//! - **Challenge id**: 128 random bits, lower-case base32 (26 characters). Not sequential,
//!   so knowing one id tells nothing about another.
//! - Secrets are compared with `subtle` in constant time ([`TokenHash`]'s `==`,
//!   [`secrets_equal`]).
//!
//! # Issuing ([`ChallengeService::create`])
//!
//! Parse the claim with the strict parser (I2), check the domain policy (and refuse the
//! confirmation domain itself, inside `gouv.fr` in the usual setup), insert the challenge
//! with the rate limits checked in the same transaction, write the mail, hand it to the
//! outbound target, and only then answer. If the mail cannot be handed over the challenge is
//! deleted (it must not stay pending: nobody can answer it), and the caller gets
//! `outbound.unavailable`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::address::{Mailbox, ParseOptions};
use crate::config::{Config, ConfirmConfig};
use crate::domains::DomainPolicy;
use crate::reason::Reason;
use crate::store::{
    ChallengeRecord, CreateOutcome, NewChallenge, NewProbe, ProbeRecord, RateLimits, Status, Store,
    StoreError, TokenHash,
};

pub mod mail;
pub mod outbound;

pub use mail::{ChallengeMail, MailBuilder, MailError};
pub use outbound::{Outbound, OutboundError};

/// Bytes of entropy in a token (160 bits, above the 128 the SPEC asks for).
pub const TOKEN_BYTES: usize = 20;
/// Bytes of entropy in a challenge id.
pub const ID_BYTES: usize = 16;

/// A confirmation token. Never logged, never in an API answer.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A fresh token from the OS RNG.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, RngError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        rng.fill(&mut bytes).map_err(|_| RngError)?;
        Ok(Self(base32_lower(&bytes)))
    }

    /// The token text (for the mail only).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([redacted])")
    }
}

/// The OS random source failed (should never happen on Linux; refuse rather than weaken).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RngError;

/// Constant-time equality of two secrets of any length: compares their SHA-256 so that
/// neither the content nor the length leaks through timing.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    let ha = ring::digest::digest(&ring::digest::SHA256, a);
    let hb = ring::digest::digest(&ring::digest::SHA256, b);
    bool::from(ha.as_ref().ct_eq(hb.as_ref()))
}

/// A uniform 6-digit session code.
pub fn new_session_code(rng: &dyn SecureRandom) -> Result<String, RngError> {
    // 4_294_000_000 is the largest multiple of 10^6 not above 2^32: values at or above it
    // are redrawn, so every code has the same probability. The loop ends with probability
    // 1 - (967296/2^32)^n; 64 draws make a failure astronomically unlikely and bound it.
    const LIMIT: u32 = 4_294_000_000;
    for _ in 0..64 {
        let mut b = [0u8; 4];
        rng.fill(&mut b).map_err(|_| RngError)?;
        let v = u32::from_le_bytes(b);
        if v < LIMIT {
            return Ok(format!("{:06}", v % 1_000_000));
        }
    }
    Err(RngError)
}

/// A random, unguessable challenge id.
pub fn new_challenge_id(rng: &dyn SecureRandom) -> Result<String, RngError> {
    let mut bytes = [0u8; ID_BYTES];
    rng.fill(&mut bytes).map_err(|_| RngError)?;
    Ok(base32_lower(&bytes))
}

/// Random lower-case base32 of `n` bytes (Message-ID uniqueness, API tokens).
pub fn random_base32(rng: &dyn SecureRandom, n: usize) -> Result<String, RngError> {
    let mut bytes = vec![0u8; n];
    rng.fill(&mut bytes).map_err(|_| RngError)?;
    Ok(base32_lower(&bytes))
}

fn base32_lower(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD
        .encode(bytes)
        .to_ascii_lowercase()
}

/// A challenge as the API and the CLI show it (never the token).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChallengeView {
    pub id: String,
    pub address: String,
    pub status: &'static str,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub confirmed_at: Option<DateTime<Utc>>,
    pub rejections: u32,
    /// The latest refused reply, with what it means for the person (SPEC §4
    /// "Explanations"); `null` when none was refused.
    pub last_rejection: Option<LastRejection>,
    pub evidence: Option<crate::backend::Evidence>,
    /// The signed confirmation (SPEC §11, [`crate::assertion`]): set by the API once
    /// confirmed when the OpenID Provider's key is configured, absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion: Option<String>,
}

/// `last_rejection` of [`ChallengeView`]: `{reason, at, explanation: {fr, en}}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LastRejection {
    pub reason: &'static str,
    #[serde(serialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
    pub explanation: ExplanationView,
}

/// The two lines of [`crate::reason::Explanation`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ExplanationView {
    pub fr: &'static str,
    pub en: &'static str,
}

impl LastRejection {
    fn of(r: &crate::store::Rejection) -> Self {
        let e = r.reason.explanation();
        Self {
            reason: r.reason.as_str(),
            at: r.at,
            explanation: ExplanationView { fr: e.fr, en: e.en },
        }
    }
}

impl ChallengeView {
    pub fn from_record(r: &ChallengeRecord, now: DateTime<Utc>) -> Self {
        Self {
            id: r.id.clone(),
            address: r.address.clone(),
            status: r.status(now).as_str(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            confirmed_at: r.confirmation.as_ref().map(|c| c.confirmed_at),
            rejections: r.rejections,
            last_rejection: r.last_rejection.as_ref().map(LastRejection::of),
            evidence: r.confirmation.as_ref().map(|c| c.evidence.clone()),
            assertion: None,
        }
    }
}

/// A newly issued challenge: what the requester gets (201). No token.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Created {
    pub id: String,
    pub address: String,
    pub session_code: String,
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
    pub status: &'static str,
}

/// Times in API answers: RFC 3339, UTC, whole seconds (`2026-11-26T06:30:00Z`).
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(t))
}

fn rfc3339_opt<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format_time(t)),
        None => s.serialize_none(),
    }
}

/// Why a challenge was not issued.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The claim was refused (`envelope.syntax`, `domain.not_allowed`); `detail` is the
    /// parser's stable detail when there is one.
    #[error("address refused: {reason}")]
    Refused {
        reason: Reason,
        detail: Option<&'static str>,
    },
    #[error("too many challenges for this address")]
    RateLimited,
    #[error("challenge mail could not be sent: {0}")]
    Outbound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Rng(#[from] RngError),
}

impl CreateError {
    pub fn reason(&self) -> Reason {
        match self {
            CreateError::Refused { reason, .. } => *reason,
            CreateError::RateLimited => Reason::ChallengeRateLimited,
            CreateError::Outbound(_) => Reason::OutboundUnavailable,
            CreateError::Store(_) | CreateError::Rng(_) => Reason::StoreUnavailable,
        }
    }
}

/// Issues challenges: shared by `POST /v1/challenges` and `gatekeeper challenge new`.
pub struct ChallengeService<S: Store> {
    store: Arc<S>,
    outbound: Outbound,
    mail: MailBuilder,
    confirm: ConfirmConfig,
    parse: ParseOptions,
    domains: DomainPolicy,
    rng: SystemRandom,
}

impl<S: Store> ChallengeService<S> {
    pub fn new(config: &Config, store: Arc<S>, outbound: Outbound, mail: MailBuilder) -> Self {
        Self {
            store,
            outbound,
            mail,
            confirm: config.confirm.clone(),
            parse: parse_options(config),
            domains: DomainPolicy::new(&config.policy),
            rng: SystemRandom::new(),
        }
    }

    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Issue a challenge for the raw claimed address (bytes: NUL and other controls reach
    /// the strict parser untouched). See the module docs for the steps.
    pub async fn create(&self, raw: &[u8], now: DateTime<Utc>) -> Result<Created, CreateError> {
        let mailbox = Mailbox::parse(raw, &self.parse).map_err(|e| CreateError::Refused {
            reason: e.reason(),
            detail: Some(e.detail),
        })?;
        self.domains
            .check_claim(mailbox.domain(), &self.confirm.domain)
            .map_err(|reason| CreateError::Refused {
                reason,
                detail: None,
            })?;

        let token = Token::generate(&self.rng)?;
        let id = new_challenge_id(&self.rng)?;
        let session_code = new_session_code(&self.rng)?;
        let unique = random_base32(&self.rng, 10)?;
        let message_id_tail = format!("{unique}@{}", self.confirm.domain);
        let message_id = crate::store::message_id(token.expose(), &message_id_tail);
        let ttl = chrono::Duration::from_std(self.confirm.challenge_ttl)
            .unwrap_or(chrono::Duration::hours(24));
        let expires_at = now + ttl;
        let address = mailbox.to_string();

        let outcome = self
            .store
            .create(
                NewChallenge {
                    id: id.clone(),
                    address: address.clone(),
                    token_hash: token.hash(),
                    session_code: session_code.clone(),
                    message_id_tail,
                    created_at: now,
                    expires_at,
                },
                RateLimits {
                    max_pending: self.confirm.max_pending_per_address,
                    max_per_hour: self.confirm.max_challenges_per_address_per_hour,
                },
                now,
            )
            .await?;
        if let CreateOutcome::RateLimited { .. } = outcome {
            return Err(CreateError::RateLimited);
        }

        let sent = match self.mail.build(&mailbox, &token, &message_id, now) {
            Ok(mail) => self
                .outbound
                .send(&id, &mail)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = sent {
            // Not left pending: nobody received a token that could answer it.
            if let Err(e) = self.store.delete(&id).await {
                tracing::error!(challenge_id = %id, error = %e, "could not delete a challenge whose mail failed");
            }
            tracing::warn!(challenge_id = %id, %error, "challenge mail not sent");
            return Err(CreateError::Outbound(error));
        }
        tracing::info!(challenge_id = %id, "challenge issued");
        Ok(Created {
            id,
            address,
            session_code,
            expires_at,
            status: Status::Pending.as_str(),
        })
    }

    /// The challenge as the API shows it, `None` if unknown.
    pub async fn show(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ChallengeView>, StoreError> {
        Ok(self
            .store
            .get(id)
            .await?
            .map(|r| ChallengeView::from_record(&r, now)))
    }
}

/// A newly created probe (SPEC §10): the address carries its token, which is what the
/// ministry writes to; a probe token can answer no challenge (probes have their own table).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProbeCreated {
    pub id: String,
    pub address: String,
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
}

/// A probe as the API and the CLI show it: `waiting` (no mail yet), `analysed`, `expired`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProbeView {
    pub id: String,
    pub status: &'static str,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
    pub analyses: u32,
    /// The latest mail's analysis (`None` before the first).
    pub report: Option<serde_json::Value>,
}

impl ProbeView {
    pub fn from_record(r: &ProbeRecord, now: DateTime<Utc>) -> Self {
        let status = match (&r.report, r.is_expired(now)) {
            (_, true) => "expired",
            (Some(_), false) => "analysed",
            (None, false) => "waiting",
        };
        Self {
            id: r.id.clone(),
            status,
            created_at: r.created_at,
            expires_at: r.expires_at,
            analyses: r.analyses,
            // Written by `app` as JSON; unreadable text is shown as a string rather than lost.
            report: r.report.as_ref().map(|t| {
                serde_json::from_str(t).unwrap_or_else(|_| serde_json::Value::String(t.clone()))
            }),
        }
    }
}

impl<S: Store> ChallengeService<S> {
    /// Create a probe: a random token under the `probe` prefix, valid for
    /// `confirm.challenge_ttl`, rate-limited with the `[confirm]` per-address limits applied
    /// to all probes together (a probe has no address to count by).
    pub async fn create_probe(&self, now: DateTime<Utc>) -> Result<ProbeCreated, CreateError> {
        let token = Token::generate(&self.rng)?;
        let id = new_challenge_id(&self.rng)?;
        let ttl = chrono::Duration::from_std(self.confirm.challenge_ttl)
            .unwrap_or(chrono::Duration::hours(24));
        let expires_at = now + ttl;
        let outcome = self
            .store
            .create_probe(
                NewProbe {
                    id: id.clone(),
                    token_hash: token.hash(),
                    created_at: now,
                    expires_at,
                },
                RateLimits {
                    max_pending: self.confirm.max_pending_per_address,
                    max_per_hour: self.confirm.max_challenges_per_address_per_hour,
                },
                now,
            )
            .await?;
        if let CreateOutcome::RateLimited { .. } = outcome {
            return Err(CreateError::RateLimited);
        }
        tracing::info!(probe_id = %id, "probe created");
        Ok(ProbeCreated {
            address: format!(
                "{}+{}@{}",
                crate::backend::PROBE_PREFIX,
                token.expose(),
                self.confirm.domain
            ),
            id,
            expires_at,
        })
    }

    /// The probe as the API shows it, `None` if unknown.
    pub async fn show_probe(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ProbeView>, StoreError> {
        Ok(self
            .store
            .get_probe(id)
            .await?
            .map(|r| ProbeView::from_record(&r, now)))
    }
}

/// The strict parser's options from `[policy]`.
pub fn parse_options(config: &Config) -> ParseOptions {
    config.parse_options()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn token_is_lower_base32_of_160_bits() {
        let rng = SystemRandom::new();
        let t = Token::generate(&rng).unwrap();
        assert_eq!(t.expose().len(), 32);
        assert!(
            t.expose()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        );
        assert_eq!(format!("{t:?}"), "Token([redacted])");
        let u = Token::generate(&rng).unwrap();
        assert_ne!(t, u);
        assert_eq!(t.hash(), TokenHash::of(t.expose()));
        assert_ne!(t.hash(), u.hash());
    }

    #[test]
    fn session_code_is_six_digits_and_spread() {
        let rng = SystemRandom::new();
        let mut first_digits = [0u32; 10];
        for _ in 0..2000 {
            let c = new_session_code(&rng).unwrap();
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
            let d = c.as_bytes()[0] - b'0';
            first_digits[usize::from(d)] += 1;
        }
        // Leading zeros occur (no lost range) and no digit is starved.
        assert!(first_digits.iter().all(|&n| n > 100), "{first_digits:?}");
    }

    #[test]
    fn ids_are_random_and_distinct() {
        let rng = SystemRandom::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = new_challenge_id(&rng).unwrap();
            assert_eq!(id.len(), 26);
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn secrets_compare() {
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert!(!secrets_equal(b"abc", b"abcd"));
        assert!(!secrets_equal(b"", b"a"));
    }
}
