//! Verification of a confirmation mail: header structure, SPF, DKIM, alignment, iprev and
//! the binding to the challenge (SPEC I1, §4 DATA rows). [`policy::decide`] turns the
//! results into the verdict.
//!
//! Every check that can run runs on every message, so the audit event lists every result:
//! the three DNS checks (SPF, DKIM, iprev) run concurrently, each bounded as a whole by
//! `dns.timeout` (a lookup that does not finish in time is a temporary error, never "none").
//! iprev always runs and is reported, but decides only where required.
//!
//! Only the top-level header block is read; Authentication-Results, Received-SPF and ARC-*
//! fields are never evidence (nothing here looks at them).
//!
//! Decisions where the SPEC is silent:
//! - When several aligned signatures pass, the binding is judged against the first one that
//!   proves all of it (token, session code, freshness), else against the first whose signed
//!   content carries the token (its gaps are then the reason), else the first. Any passing
//!   aligned signature proves its content; two signatures' halves are never combined.
//! - When no passing aligned signature proves the whole binding and another aligned signature
//!   could not be judged (its key lookup failed temporarily), that one might have proved it:
//!   the DKIM result is `temperror` and the signature-dependent checks are `skipped` (4xx,
//!   SPEC I5), unless a certain refusal exists elsewhere.
//! - For a domain whose override does not require DKIM and that has no passing aligned
//!   signature, nothing is signed: the token, code and Date are looked for in the whole mail
//!   (SPF pass and iprev are then mandatory, see `domains`).
//! - `date.stale` with neither a signed Date nor `t=` is `skipped`, not a refusal (a signed
//!   fresh token cannot predate its challenge); an unreadable signed Date is stale.
//! - `gatekeeper verify` without a challenge reports the `binding.*` checks as `skipped` and
//!   decides without them.
//! - Only the first [`dkim::MAX_SIGNATURES`] DKIM-Signature fields are considered, and an
//!   `h=` of more than [`dkim::MAX_SIGNED_NAMES`] names fails (bounded work per message).
//! - Several DKIM key records at one selector are refused (which key verified would be
//!   undefined); a signature that mail-auth and our own parse read differently fails.
//! - A From domain outside `policy.allowed_domains` (or denied since the challenge was
//!   issued) is refused as `domain.not_allowed`.
//!
//! Time: `now` is the only clock of every rule here (`t=`, `x=`, Date). mail-auth's
//! `verify_dkim` additionally compares `x=` with the system clock (its variant taking the
//! time is private); a signature it finds expired fails, which can only refuse, never accept.
//!
//! [`policy::decide`]: crate::policy::decide

pub mod binding;
pub mod dkim;
pub mod headers;

use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mail_auth::common::crypto::Algorithm;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, DkimResult, IprevResult, MessageAuthenticator, SpfResult};

use crate::address::{Domain, Mailbox, ParseOptions};
use crate::backend::{ChallengeBinding, Decision, Evidence, Transaction, Verdict, Verify};
use crate::config::{Config, ConfirmConfig, PolicyConfig};
use crate::dns::{self, DnsSetupError, LookupError};
use crate::domains::DomainPolicy;
pub use crate::policy::Outcome;
use crate::policy::{self, CheckResults, Dkim, Iprev, Requirements, Spf};

use self::binding::Content;
use self::dkim::{Crypto, KeyLookup, SigInfo, SigStatus};
use self::headers::HeaderBlock;

/// The production verifier.
pub struct Verifier {
    auth: MessageAuthenticator,
    confirm: ConfirmConfig,
    policy: PolicyConfig,
    domains: DomainPolicy,
    dns_timeout: Duration,
    opts: ParseOptions,
    /// Told how long each DNS-bound check (SPF, DKIM, iprev) took, for `/metrics`.
    dns_observer: Option<DnsObserver>,
}

/// Receives the duration of each DNS-bound check.
pub type DnsObserver = std::sync::Arc<dyn Fn(Duration) + Send + Sync>;

/// A signature that passed every rule, with what it covers.
struct Selected {
    info: SigInfo,
    signed: HashSet<usize>,
}

struct DkimReport {
    result: Dkim,
    good: Vec<Selected>,
    /// An aligned signature could not be judged for a temporary reason (its key lookup or
    /// its verification failed temporarily): it might have proved what the good ones do not.
    temp: bool,
}

impl Verifier {
    /// Build from the whole configuration (resolver from `[dns]`).
    pub fn new(config: &Config) -> Result<Self, DnsSetupError> {
        let auth = dns::build(&config.dns)?;
        Ok(Self::with_authenticator(
            auth,
            config.confirm.clone(),
            config.policy.clone(),
            config.dns.timeout,
        ))
    }

    /// Build around an existing resolver.
    pub fn with_authenticator(
        auth: MessageAuthenticator,
        confirm: ConfirmConfig,
        policy: PolicyConfig,
        dns_timeout: Duration,
    ) -> Self {
        let opts = policy.parse_options();
        Self {
            auth,
            domains: DomainPolicy::new(&policy),
            confirm,
            policy,
            dns_timeout,
            opts,
            dns_observer: None,
        }
    }

    /// Report the latency of every DNS-bound check to `observer`.
    pub fn with_dns_observer(mut self, observer: DnsObserver) -> Self {
        self.dns_observer = Some(observer);
        self
    }

    /// Run a DNS-bound check and report how long it took.
    async fn timed<F: Future>(&self, check: F) -> F::Output {
        let started = std::time::Instant::now();
        let out = check.await;
        if let Some(observe) = &self.dns_observer {
            observe(started.elapsed());
        }
        out
    }

    /// The whole decision on one transaction. `challenge = None` (the CLI without a recipient)
    /// reports the binding checks as `skipped` and decides without them. `now` is the only
    /// clock.
    pub async fn verify_message(
        &self,
        tx: &Transaction,
        challenge: Option<&ChallengeBinding>,
        now: DateTime<Utc>,
    ) -> Verdict {
        let message = tx.message.as_slice();
        let block = HeaderBlock::parse(message);
        let parsed = mail_parser::MessageParser::default().parse(message);
        let hdr = headers::check(&block, parsed.as_ref(), &self.opts);
        let from = hdr.from.clone();

        let envelope_mismatch = match &from {
            Some(f) => Outcome::from_ok(*f == tx.mail_from),
            None => Outcome::Skipped,
        };
        let binding_mismatch = match (&from, challenge) {
            (Some(f), Some(c)) => Outcome::from_ok(*f == c.address),
            _ => Outcome::Skipped,
        };

        let domain_allowed = match &from {
            Some(f) => Outcome::from_ok(self.domains.check(f.domain()).is_ok()),
            None => Outcome::Skipped,
        };
        let domain_req = match &from {
            Some(f) => self.domains.requirements(f.domain()),
            None => self.domains.requirements(tx.mail_from.domain()),
        };
        let req = Requirements {
            dkim: domain_req.dkim,
            spf: domain_req.spf,
            iprev: domain_req.iprev,
            reply: self.confirm.require_reply,
            session_code: self.confirm.require_session_code,
            binding: challenge.is_some(),
        };

        let from_field = block
            .named("from")
            .map(|(i, _)| i)
            .next()
            .filter(|_| block.count("from") == 1);
        let (spf, dkim_report, iprev) = tokio::join!(
            self.timed(self.spf(tx)),
            self.timed(self.dkim(message, &block, from.as_ref(), from_field, now)),
            self.timed(self.iprev(tx.session.client_ip)),
        );

        // Binding: against a passing aligned signature, or against the whole mail for a
        // domain that does not require DKIM.
        let mut token_unsigned = Outcome::Skipped;
        let mut session_code = Outcome::Skipped;
        let mut date = Outcome::Skipped;
        let mut chosen: Option<&Selected> = None;
        let mut dkim_result = dkim_report.result;
        let unsigned_fallback = !req.dkim && dkim_report.result != Dkim::Pass;
        if dkim_report.result == Dkim::Pass || unsigned_fallback {
            let candidates: Vec<Option<&Selected>> = if unsigned_fallback {
                vec![None]
            } else {
                dkim_report.good.iter().map(Some).collect()
            };
            let judge = |sel: Option<&Selected>| {
                let content = Content {
                    block: &block,
                    parsed: parsed.as_ref(),
                    signed: sel.map(|s| &s.signed),
                };
                let token = challenge.map(|c| binding::token_signed(&content, &c.token));
                let code = challenge.map(|c| binding::session_code(&content, &c.session_code));
                let time = binding::message_time(&content, sel.and_then(|s| s.info.t));
                (
                    token,
                    code,
                    binding::freshness(time, now, self.confirm.max_message_age),
                )
            };
            // The signature that proves the whole binding decides; failing that, the first
            // that proves the token (its other gaps are then the reason), else the first.
            let code_counts = self.confirm.require_session_code;
            let proves_all =
                |(token, code, fresh): &(Option<Outcome>, Option<Outcome>, Outcome)| {
                    token.is_none_or(|t| t == Outcome::Ok)
                        && (!code_counts || code.is_none_or(|c| c == Outcome::Ok))
                        && *fresh != Outcome::Fail
                };
            let results: Vec<_> = candidates.iter().map(|s| (*s, judge(*s))).collect();
            let pick = results
                .iter()
                .find(|(_, r)| proves_all(r))
                .or_else(|| {
                    results
                        .iter()
                        .find(|(_, (t, _, _))| *t == Some(Outcome::Ok))
                })
                .or_else(|| results.first());
            if let Some((sel, (token, code, fresh))) = pick {
                chosen = *sel;
                token_unsigned = token.unwrap_or(Outcome::Skipped);
                session_code = code.unwrap_or(Outcome::Skipped);
                date = *fresh;
                // An aligned signature whose key could not be fetched might prove what the
                // good ones do not: the answer is not certain, so it is temporary (SPEC I5),
                // and the checks that depend on the signature could not be judged.
                if dkim_report.temp && !unsigned_fallback && !proves_all(&(*token, *code, *fresh)) {
                    dkim_result = Dkim::TempError;
                    chosen = None;
                    token_unsigned = Outcome::Skipped;
                    session_code = Outcome::Skipped;
                    date = Outcome::Skipped;
                }
            }
        }
        if !self.confirm.require_session_code {
            session_code = Outcome::NotRequired;
        }
        let not_a_reply = match challenge {
            _ if !self.confirm.require_reply => Outcome::NotRequired,
            Some(c) => binding::is_reply(&block, &c.message_id),
            None => Outcome::Skipped,
        };

        let results = CheckResults {
            header_malformed: hdr.malformed,
            from_count: hdr.from_count,
            from_syntax: hdr.from_syntax,
            duplicate: hdr.duplicate,
            sender_mismatch: hdr.sender_mismatch,
            resent: hdr.resent,
            auto_submitted: hdr.auto_submitted,
            report: hdr.report,
            envelope_mismatch,
            domain_allowed,
            spf,
            dkim: dkim_result,
            iprev,
            date,
            binding_mismatch,
            token_unsigned,
            not_a_reply,
            session_code,
        };
        let (decision, checks) = policy::decide(&results, &req);

        let message_id = block.named("message-id").next().map(|(_, f)| f.unfolded());
        let evidence = match (&decision, &from) {
            (Decision::Accept, Some(f)) => Some(Evidence {
                client_ip: tx.session.client_ip.to_string(),
                helo: tx.session.helo.clone(),
                tls_version: tx.session.tls_version.clone(),
                mail_from: tx.mail_from.to_string(),
                from: f.to_string(),
                dkim_domain: chosen
                    .and_then(|s| s.info.domain.as_ref())
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
                dkim_selector: chosen.map(|s| s.info.selector.clone()).unwrap_or_default(),
                dkim_algorithm: chosen.map(|s| s.info.algorithm.clone()).unwrap_or_default(),
                spf: spf.as_str().to_string(),
                message_id: message_id.clone(),
                date: block.named("date").next().map(|(_, f)| f.unfolded()),
                headers: String::from_utf8_lossy(block.raw).into_owned(),
            }),
            _ => None,
        };
        Verdict {
            decision,
            checks,
            from: from.map(|f| f.to_string()).or(hdr.from_raw),
            message_id,
            challenge_id: challenge
                .map(|c| c.id.clone())
                .or_else(|| Some(tx.challenge_id.clone())),
            evidence,
        }
    }

    /// SPF for MAIL FROM (RFC 7208), bounded by `dns.timeout`.
    ///
    /// mail-auth evaluates the first `v=spf1` record it finds where RFC 7208 §4.5 makes two
    /// records a `permerror` (so its answer would depend on the order the DNS server lists
    /// them in), and reads a control character as a term separator where §4.6.1 allows
    /// spaces only. Both are checked here on the MAIL FROM domain's own record, through the
    /// same cache; records reached by `include`/`redirect` remain mail-auth's reading.
    async fn spf(&self, tx: &Transaction) -> Spf {
        let helo = tx.session.helo.as_deref().unwrap_or("unknown");
        let sender = tx.mail_from.to_string();
        let host = self.confirm.domain.as_str();
        let params = SpfParameters::verify_mail_from(tx.session.client_ip, helo, host, &sender);
        let check = async {
            let result = match self.auth.verify_spf(params).await.result() {
                SpfResult::Pass => Spf::Pass,
                SpfResult::Fail => Spf::Fail,
                SpfResult::SoftFail => Spf::SoftFail,
                SpfResult::Neutral => Spf::Neutral,
                SpfResult::None => Spf::None,
                SpfResult::PermError => Spf::PermError,
                SpfResult::TempError => Spf::TempError,
            };
            if matches!(result, Spf::TempError | Spf::None) {
                return result;
            }
            match dns::txt_lookup(&self.auth, tx.mail_from.domain().as_str()).await {
                Ok(records) => {
                    let spf: Vec<&Vec<u8>> = records.iter().filter(|r| is_spf_record(r)).collect();
                    let malformed = spf.iter().any(|r| r.iter().any(u8::is_ascii_control));
                    if spf.len() > 1 || malformed {
                        Spf::PermError
                    } else {
                        result
                    }
                }
                // The pass cannot be confirmed now; a refusal stands whatever the record.
                Err(LookupError::Temporary) if result == Spf::Pass => Spf::TempError,
                Err(_) => result,
            }
        };
        tokio::time::timeout(self.dns_timeout, check)
            .await
            .unwrap_or(Spf::TempError)
    }

    /// Forward-confirmed reverse DNS, bounded by `dns.timeout`.
    async fn iprev(&self, ip: IpAddr) -> Iprev {
        let Ok(out) = tokio::time::timeout(self.dns_timeout, self.auth.verify_iprev(ip)).await
        else {
            return Iprev::TempError;
        };
        match out.result() {
            IprevResult::Pass => Iprev::Pass,
            IprevResult::TempError(_) => Iprev::TempError,
            IprevResult::Fail(_) | IprevResult::PermError(_) | IprevResult::None => Iprev::Fail,
        }
    }

    /// DKIM over every signature, in two phases each bounded by `dns.timeout`:
    ///
    /// 1. the signatures aligned with From (by our strict reading of `d=`): only these can
    ///    confirm, so a timeout here is a temporary error;
    /// 2. only when none is aligned, the others, to tell `dkim.unaligned` (one verifies) from
    ///    `dkim.fail`. A timeout here is `dkim.fail`: nothing aligned exists, so the answer is
    ///    certain whatever those lookups return (and an attacker's slow DNS buys nothing).
    async fn dkim(
        &self,
        message: &[u8],
        block: &HeaderBlock<'_>,
        from: Option<&Mailbox>,
        from_field: Option<usize>,
        now: DateTime<Utc>,
    ) -> DkimReport {
        let sigs: Vec<SigInfo> = block
            .named("dkim-signature")
            .take(dkim::MAX_SIGNATURES)
            .map(|(i, f)| SigInfo::parse(i, f.value, &self.opts))
            .collect();
        // mail-auth verifies only what we consider: the first fields, with a bounded `h=`.
        let considered: Vec<Vec<u8>> = sigs
            .iter()
            .filter(|s| !s.invalid)
            .filter_map(|s| data_encoding::BASE64.decode(s.b.as_bytes()).ok())
            .collect();
        if sigs.is_empty() {
            return DkimReport {
                result: Dkim::None,
                good: Vec::new(),
                temp: false,
            };
        }
        let is_aligned = |d: &str| -> bool {
            match (Domain::parse(d.as_bytes(), &self.opts), from) {
                (Ok(d), Some(f)) => dkim::aligned(&d, f.domain(), &self.policy.alignment),
                _ => false,
            }
        };
        let aligned: Vec<&SigInfo> = sigs.iter().filter(|s| is_aligned(&s.d_raw)).collect();
        if aligned.is_empty() {
            let work = self.crypto(message, &considered, |d| !is_aligned(d));
            let any_pass = match tokio::time::timeout(self.dns_timeout, work).await {
                Ok(results) => sigs.iter().any(|s| crypto_of(&results, s) == Crypto::Pass),
                Err(_) => false,
            };
            return DkimReport {
                result: dkim::aggregate(sigs.len(), &[], any_pass),
                good: Vec::new(),
                temp: false,
            };
        }
        let work = async {
            let results = self.crypto(message, &considered, |d| is_aligned(d)).await;
            let mut statuses = Vec::new();
            let mut good = Vec::new();
            let min_bits = self.policy.dkim_min_rsa_bits;
            let secs = u64::try_from(now.timestamp()).unwrap_or(0);
            for sig in &aligned {
                let key = self.key(sig).await;
                let signed = sig.signed_fields(block);
                let status = match from {
                    Some(f) if !dkim::identity_agrees(sig, f, &self.opts) => SigStatus::Fail,
                    _ => dkim::judge(
                        sig,
                        crypto_of(&results, sig),
                        &key,
                        &signed,
                        from_field,
                        min_bits,
                        secs,
                    ),
                };
                if status == SigStatus::Good {
                    good.push(Selected {
                        info: (*sig).clone(),
                        signed,
                    });
                }
                statuses.push(status);
            }
            DkimReport {
                result: dkim::aggregate(sigs.len(), &statuses, false),
                good,
                temp: statuses.contains(&SigStatus::TempError),
            }
        };
        match tokio::time::timeout(self.dns_timeout, work).await {
            Ok(report) => report,
            Err(_) => DkimReport {
                result: Dkim::TempError,
                good: Vec::new(),
                temp: true,
            },
        }
    }

    /// mail-auth's cryptographic verification of the signatures we consider (by `b=`) whose
    /// `d=` (as mail-auth reads it) satisfies `keep`.
    async fn crypto(
        &self,
        message: &[u8],
        considered: &[Vec<u8>],
        keep: impl Fn(&str) -> bool,
    ) -> Vec<CryptoResult> {
        let Some(mut am) = AuthenticatedMessage::parse(message) else {
            return Vec::new();
        };
        am.dkim_headers.retain(|h| {
            considered.contains(&h.header.b)
                && h.header.h.len() <= dkim::MAX_SIGNED_NAMES
                && keep(&h.header.d)
        });
        am.errors.clear();
        self.auth
            .verify_dkim(&am)
            .await
            .iter()
            .filter_map(|out| {
                let sig = out.signature()?;
                let crypto = match out.result() {
                    DkimResult::Pass => Crypto::Pass,
                    DkimResult::TempError(_) => Crypto::TempError,
                    _ => Crypto::Fail,
                };
                Some(CryptoResult {
                    b: sig.b.clone(),
                    d: sig.d.to_ascii_lowercase(),
                    s: sig.s.to_ascii_lowercase(),
                    h: sig
                        .h
                        .iter()
                        .map(|h| h.trim().to_ascii_lowercase())
                        .collect(),
                    algorithm: match sig.a {
                        Algorithm::RsaSha1 => "rsa-sha1",
                        Algorithm::RsaSha256 => "rsa-sha256",
                        Algorithm::Ed25519Sha256 => "ed25519-sha256",
                    },
                    t: sig.t,
                    x: sig.x,
                    crypto,
                })
            })
            .collect()
    }

    /// The key record of a signature, through the shared resolver cache.
    fn key(&self, sig: &SigInfo) -> impl Future<Output = KeyLookup> + Send + '_ {
        let name = match &sig.domain {
            Some(d) => format!("{}._domainkey.{}", sig.selector, d.as_str()),
            None => String::new(),
        };
        async move {
            if name.is_empty() || sig_selector_invalid(&name) {
                return KeyLookup::Missing;
            }
            match dns::txt_lookup(&self.auth, &name).await {
                // Several key records at one selector (RFC 6376 §3.6.2.2 leaves the result
                // undefined): which one mail-auth used and which one we measure could differ,
                // e.g. a factorable 512-bit key next to a 2048-bit one. Refused.
                Ok(records) => {
                    let mut keys = records.iter().filter_map(|r| dkim::KeyRecord::parse(r));
                    match (keys.next(), keys.next()) {
                        (Some(key), None) => KeyLookup::Found(key),
                        _ => KeyLookup::Missing,
                    }
                }
                Err(LookupError::NotFound) => KeyLookup::Missing,
                Err(LookupError::Temporary) => KeyLookup::TempError,
            }
        }
    }
}

/// What mail-auth read in a signature and what it concluded.
struct CryptoResult {
    b: Vec<u8>,
    d: String,
    s: String,
    h: Vec<String>,
    algorithm: &'static str,
    t: u64,
    x: u64,
    crypto: Crypto,
}

/// The cryptographic result for our reading of a signature: found by its `b=`, and only if
/// mail-auth read `d=`, `s=`, `a=`, `h=`, `t=`, `x=` exactly as we did — a field two parsers
/// read differently is a failed signature (what is signed must not depend on who reads it).
/// Several fields with the same `b=` (a copied signature): the worst result.
fn crypto_of(results: &[CryptoResult], sig: &SigInfo) -> Crypto {
    let Ok(b) = data_encoding::BASE64.decode(sig.b.as_bytes()) else {
        return Crypto::Fail;
    };
    let mut found: Option<Crypto> = None;
    for r in results.iter().filter(|r| r.b == b) {
        let agrees = r.d == sig.d_raw.to_ascii_lowercase()
            && r.s == sig.selector.to_ascii_lowercase()
            && r.algorithm == sig.algorithm
            && r.h == sig.h
            && r.t == sig.t.unwrap_or(0)
            && r.x == sig.x.unwrap_or(0);
        let c = if agrees { r.crypto } else { Crypto::Fail };
        found = Some(match (found, c) {
            (Some(Crypto::Fail), _) | (_, Crypto::Fail) => Crypto::Fail,
            (Some(Crypto::TempError), _) | (_, Crypto::TempError) => Crypto::TempError,
            _ => Crypto::Pass,
        });
    }
    found.unwrap_or(Crypto::Fail)
}

/// A record that is, or that some reader could take for, an SPF record: `v=spf1`
/// (case-insensitive) alone or followed by anything but a letter or digit. RFC 7208 §4.5
/// wants a space there; a TAB or CR is counted too, since mail-auth reads those as
/// separators (such a record then also fails the control-character check).
fn is_spf_record(txt: &[u8]) -> bool {
    txt.get(..6)
        .is_some_and(|v| v.eq_ignore_ascii_case(b"v=spf1"))
        && txt.get(6).is_none_or(|b| !b.is_ascii_alphanumeric())
}

/// A selector must be a plain DNS label sequence: no way to make the key name leave `d=`.
fn sig_selector_invalid(name: &str) -> bool {
    !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

impl Verify for Verifier {
    fn verify(
        &self,
        tx: &Transaction,
        challenge: &ChallengeBinding,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Verdict> + Send {
        self.verify_message(tx, Some(challenge), now)
    }
}
