//! The production [`Backend`]: store lookup → verification → durable commit → answer.
//!
//! # Decisions (SPEC §4 "On accept", I3)
//!
//! - **RCPT**: the token is hashed and looked up. Unknown → `token.unknown`, expired
//!   ([`ChallengeRecord::status`] at the wall clock) → `token.expired`, which is also
//!   counted as the challenge's `last_rejection` so that it stays expired when the wall
//!   clock steps back (README "Clocks"); store error → `store.unavailable` (4xx).
//!   A *confirmed* challenge is accepted at RCPT: only at the end of DATA can we see whether
//!   this is the same message again after a lost `250` (same Message-ID, same From, same
//!   token).
//! - **DATA**: the verifier always runs when the challenge exists (every check runs, SPEC
//!   §4). Then:
//!   - pending and the verifier accepts → conditional confirm (group commit); `Accept` is
//!     returned only after COMMIT (I3). A store failure → `store.unavailable`.
//!   - the verifier refuses → its verdict is returned; a *permanent* refusal of a pending
//!     challenge counts one rejection (`rejections`), a temporary one (DNS, store) does not:
//!     it says nothing about the reply. The token is not used up. The count is queued, not
//!     awaited ([`Store::count_rejection`]): the `550` does not wait for a counter, and the
//!     next `GET` sees it.
//!   - the challenge is already confirmed: if the stored confirmation has the same
//!     Message-ID and the same From (the token is the same by construction: it names the
//!     challenge) **and** its delivering session has ended → `Accept` again (idempotent
//!     redelivery); otherwise → `token.used`. So two simultaneous deliveries of one message
//!     give exactly one `250` (corpus TOKEN-12), whichever instance they reach.
//!   - expired between RCPT and DATA → `token.expired`.
//! - **One read per message**: the record read at RCPT is kept for the session's DATA (by
//!   session; used up by DATA, replaced by the next RCPT, dropped at close), so DATA does
//!   not read it again. What could change in between is decided where it must be: expiry
//!   from `expires_at` and the DATA time, "already confirmed" by the conditional commit
//!   itself. The one effect of a confirmation by another session in between is which reason
//!   a refused reply gets (its own rather than `token.used`). Without a kept record (a
//!   backend driven without RCPT) DATA reads the store.
//! - **"Session ended"** is stored with the confirmation so that several instances sharing
//!   one store agree: [`Backend::session_closed`] marks the confirmations of a session that
//!   confirmed something. A confirmation older than `smtp.session_timeout` also counts as
//!   ended (no session lives longer), and the daemon marks every session ended when it
//!   starts ([`Store::end_open_sessions`]: none of an earlier run is alive), so a crash
//!   between commit and close cannot make a redelivery fail.
//! - Evidence: the verifier's; if an accepting verifier gave none, the transaction's own
//!   facts are kept (never an empty proof). The token is replaced by `[redacted]` in the
//!   stored header block (it is quoted in To, Subject, In-Reply-To): the token is never in an
//!   API answer, and the store never holds it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::address::{Mailbox, ParseOptions};
use crate::backend::{
    Backend, ChallengeBinding, Decision, Evidence, RcptOutcome, Recipient, SessionInfo,
    Transaction, Verdict, Verify,
};
use crate::challenge::parse_options;
use crate::config::Config;
use crate::lock;
use crate::policy::challenge::{self, Committed, Step};
use crate::reason::Reason;
use crate::store::{
    ChallengeRecord, ConfirmRequest, Confirmation, Status, Store, StoreError, TokenHash,
};

/// The production backend.
pub struct App<S: Store, V: Verify> {
    store: Arc<S>,
    verifier: V,
    parse: ParseOptions,
    session_timeout: Duration,
    /// Open sessions that committed a confirmation: `session_closed` marks them in the store.
    confirming: Mutex<HashSet<String>>,
    /// The record each open session's accepted RCPT read, for its DATA (at most one per
    /// session: bounded by the connection cap).
    at_rcpt: Mutex<HashMap<String, ChallengeRecord>>,
}

impl<S: Store, V: Verify> App<S, V> {
    pub fn new(config: &Config, store: Arc<S>, verifier: V) -> Self {
        Self {
            store,
            verifier,
            parse: parse_options(config),
            session_timeout: config.smtp.session_timeout,
            confirming: Mutex::new(HashSet::new()),
            at_rcpt: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// A `token.expired` answer is kept as the challenge's `last_rejection` (queued, not
    /// awaited), which [`ChallengeRecord::status`] reads as "expired for good": a wall clock
    /// stepped back after this answer does not revive the challenge (README "Clocks").
    fn pin_expired(&self, id: &str, reason: Reason, now: DateTime<Utc>) {
        if reason == Reason::TokenExpired {
            self.store
                .count_rejection(id, crate::store::Rejection { reason, at: now });
        }
    }

    async fn decide(&self, tx: &Transaction, record: ChallengeRecord) -> Verdict {
        let now = tx.received_at;
        let id = record.id.clone();
        let Ok(address) = Mailbox::parse(record.address.as_bytes(), &self.parse) else {
            // Stored under a policy that no longer parses it: it cannot be answered now.
            tracing::warn!(challenge_id = %id, "stored address no longer parses under the current policy");
            return with_id(Verdict::refuse(Reason::TokenUnknown), &id);
        };
        let binding = ChallengeBinding {
            id: id.clone(),
            address,
            token: tx.rcpt.token.clone(),
            session_code: record.session_code.clone(),
            message_id: crate::store::message_id(&tx.rcpt.token, &record.message_id_tail),
        };
        let mut verdict = self.verifier.verify(tx, &binding, now).await;
        if verdict.challenge_id.is_none() {
            verdict.challenge_id = Some(id.clone());
        }
        // The challenge's half of the verdict is decided in `policy::challenge` (pure); this
        // body only reads and writes the store around its two steps.
        match challenge::before_commit(record.status(now), &verdict.decision) {
            Step::Keep => return verdict,
            Step::KeepAndCount => {
                if let Decision::Refuse(reason) = verdict.decision {
                    self.store
                        .count_rejection(&id, crate::store::Rejection { reason, at: now });
                }
                return verdict;
            }
            Step::Refuse(reason) => {
                self.pin_expired(&id, reason, now);
                return refuse(verdict, reason);
            }
            Step::Commit => {}
        }

        let mut evidence = verdict
            .evidence
            .clone()
            .unwrap_or_else(|| fallback_evidence(tx));
        // The header block quotes the token (To, Subject, In-Reply-To); it must never be in
        // an API answer (SPEC §6), so it is not stored either.
        evidence.headers = redact_token(&evidence.headers, &tx.rcpt.token);
        verdict.evidence = Some(evidence.clone());
        let confirmation = Confirmation {
            confirmed_at: now,
            evidence,
            message_id: verdict.message_id.clone(),
            from: verdict.from.clone().unwrap_or_default(),
            session_id: tx.session.session_id.clone(),
            session_ended: false,
        };
        let request = ConfirmRequest {
            id: id.clone(),
            confirmation: confirmation.clone(),
            now,
        };
        let outcome = self.store.confirm(request).await;
        if let Err(e) = &outcome {
            tracing::warn!(challenge_id = %id, error = %e, "confirmation not committed");
        }
        let outcome = outcome.as_ref().map_err(StoreError::reason);
        match challenge::after_commit(outcome, &confirmation, self.session_timeout, now) {
            Committed::Confirmed => {
                lock(&self.confirming).insert(tx.session.session_id.clone());
                verdict
            }
            Committed::Redelivered => {
                tracing::info!(challenge_id = %id, "same confirmation delivered again: accepted again");
                verdict
            }
            Committed::Refuse(reason) => refuse(verdict, reason),
        }
    }
}

/// The probe path (SPEC §10): a probe is looked up in its own table, so a probe token can
/// never name a challenge, and nothing here writes a confirmation.
impl<S: Store, V: Verify> App<S, V> {
    async fn check_probe(&self, hash: &TokenHash, now: DateTime<Utc>) -> RcptOutcome {
        match self.store.find_probe_by_token_hash(hash).await {
            Err(e) => {
                tracing::warn!(error = %e, "store lookup failed at RCPT (probe)");
                RcptOutcome::Refuse(e.reason())
            }
            Ok(Some(p)) if p.token_hash == *hash && !p.is_expired(now) => {
                RcptOutcome::Accept { challenge_id: p.id }
            }
            Ok(Some(p)) if p.token_hash == *hash => RcptOutcome::Refuse(Reason::TokenExpired),
            Ok(_) => RcptOutcome::Refuse(Reason::TokenUnknown),
        }
    }

    /// Verify, store the analysis (durably, before the `250 analysed`), answer with the
    /// decision a confirmation would get. The session turns it into the probe's reply.
    async fn analyse_probe(&self, tx: &Transaction) -> Verdict {
        let id = tx.challenge_id.clone();
        let now = tx.received_at;
        let probe = match self.store.get_probe(&id).await {
            Err(e) => return with_id(Verdict::refuse(e.reason()), &id),
            Ok(Some(p)) if p.token_hash == TokenHash::of(&tx.rcpt.token) => p,
            Ok(_) => return with_id(Verdict::refuse(Reason::TokenUnknown), &id),
        };
        if probe.is_expired(now) {
            return with_id(Verdict::refuse(Reason::TokenExpired), &id);
        }
        let mut verdict = self.verifier.analyse(tx, &id, now).await;
        verdict.challenge_id = Some(id.clone());
        // A probe keeps no evidence: it proves nothing about anyone.
        verdict.evidence = None;
        let reason = match verdict.decision {
            Decision::Accept => None,
            Decision::Refuse(r) => Some(r),
        };
        let domain = verdict
            .from
            .as_deref()
            .and_then(|f| f.rsplit_once('@'))
            .map_or_else(|| tx.mail_from.domain().to_string(), |(_, d)| d.to_owned());
        let analysis = crate::policy::probe::analyse(reason, &verdict.checks, &domain);
        let report = serde_json::json!({
            "analysed_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "client_ip": tx.session.client_ip.to_string(),
            "helo": tx.session.helo,
            "tls_version": tx.session.tls_version,
            "mail_from": tx.mail_from.to_string(),
            "mail_from_tagged": tx.mail_from_tagged,
            "from": verdict.from,
            "message_id": verdict.message_id,
            "domain": domain,
            "analysis": analysis,
        });
        match self
            .store
            .record_probe_analysis(&id, report.to_string(), now)
            .await
        {
            Ok(true) => verdict,
            Ok(false) => refuse(verdict, Reason::TokenUnknown),
            Err(e) => {
                tracing::warn!(probe_id = %id, error = %e, "probe analysis not stored");
                refuse(verdict, e.reason())
            }
        }
    }
}

impl<S: Store, V: Verify> Backend for App<S, V> {
    async fn check_recipient(
        &self,
        session: &SessionInfo,
        rcpt: &Recipient,
        now: DateTime<Utc>,
    ) -> RcptOutcome {
        let hash = TokenHash::of(&rcpt.token);
        if rcpt.is_probe() {
            return self.check_probe(&hash, now).await;
        }
        match self.store.find_by_token_hash(&hash).await {
            Err(e) => {
                tracing::warn!(error = %e, "store lookup failed at RCPT");
                RcptOutcome::Refuse(e.reason())
            }
            Ok(None) => RcptOutcome::Refuse(Reason::TokenUnknown),
            Ok(Some(record)) if record.token_hash != hash => {
                RcptOutcome::Refuse(Reason::TokenUnknown)
            }
            Ok(Some(record)) => match record.status(now) {
                Status::Expired => {
                    self.pin_expired(&record.id, Reason::TokenExpired, now);
                    RcptOutcome::Refuse(Reason::TokenExpired)
                }
                Status::Pending | Status::Confirmed => {
                    let challenge_id = record.id.clone();
                    lock(&self.at_rcpt).insert(session.session_id.clone(), record);
                    RcptOutcome::Accept { challenge_id }
                }
            },
        }
    }

    async fn deliver(&self, tx: Transaction) -> Verdict {
        if tx.rcpt.is_probe() {
            return self.analyse_probe(&tx).await;
        }
        let id = tx.challenge_id.clone();
        let kept = lock(&self.at_rcpt)
            .remove(&tx.session.session_id)
            .filter(|r| r.id == id);
        let record = match kept {
            Some(r) => r,
            None => match self.store.get(&id).await {
                Err(e) => {
                    tracing::warn!(challenge_id = %id, error = %e, "store lookup failed at DATA");
                    return with_id(Verdict::refuse(e.reason()), &id);
                }
                Ok(None) => return with_id(Verdict::refuse(Reason::TokenUnknown), &id),
                Ok(Some(r)) => r,
            },
        };
        // Defence in depth: the challenge must be the one the RCPT token names.
        if record.token_hash != TokenHash::of(&tx.rcpt.token) {
            return with_id(Verdict::refuse(Reason::TokenUnknown), &id);
        }
        self.decide(&tx, record).await
    }

    fn session_closed(&self, session_id: &str) {
        lock(&self.at_rcpt).remove(session_id);
        let confirmed_here = lock(&self.confirming).remove(session_id);
        if !confirmed_here {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = Arc::clone(&self.store);
        let sid = session_id.to_owned();
        handle.spawn(async move {
            if let Err(e) = store.session_ended(&sid).await {
                tracing::warn!(error = %e, "could not mark a confirming session as ended");
            }
        });
    }
}

fn with_id(mut v: Verdict, id: &str) -> Verdict {
    v.challenge_id = Some(id.to_owned());
    v
}

/// Keep the verifier's checks and facts, change the decision, drop the evidence.
fn refuse(mut v: Verdict, reason: Reason) -> Verdict {
    v.decision = Decision::Refuse(reason);
    v.evidence = None;
    v
}

/// `text` with every occurrence of `token` (ASCII case-insensitive) replaced by
/// `[redacted]`. The token is ASCII, so byte matches never split a UTF-8 sequence.
pub fn redact_token(text: &str, token: &str) -> String {
    let needle = token.as_bytes();
    if needle.is_empty() {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let matches = bytes
            .get(i..i + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle));
        if matches {
            out.extend_from_slice(b"[redacted]");
            i += needle.len();
        } else {
            if let Some(b) = bytes.get(i) {
                out.push(*b);
            }
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn fallback_evidence(tx: &Transaction) -> Evidence {
    Evidence {
        client_ip: tx.session.client_ip.to_string(),
        helo: tx.session.helo.clone(),
        tls_version: tx.session.tls_version.clone(),
        mail_from: tx.mail_from.to_string(),
        mail_from_tagged: tx.mail_from_tagged.clone(),
        ..Evidence::default()
    }
}

#[cfg(test)]
mod tests {
    use super::redact_token;

    #[test]
    fn redaction_table() {
        let t = "abcdef234";
        let rows: &[(&str, &str)] = &[
            ("", ""),
            ("no token here", "no token here"),
            (
                "To: <confirm+abcdef234@v.example>",
                "To: <confirm+[redacted]@v.example>",
            ),
            ("ABCDEF234 and abcdef234", "[redacted] and [redacted]"),
            ("abcdef23", "abcdef23"),
            ("éabcdef234é", "é[redacted]é"),
            ("abcdef234abcdef234", "[redacted][redacted]"),
        ];
        for (input, want) in rows {
            assert_eq!(redact_token(input, t), *want, "{input}");
        }
        assert_eq!(redact_token("x", ""), "x");
    }
}
