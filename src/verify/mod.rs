//! Verification of a confirmation mail: header structure, SPF, DKIM, alignment, iprev and
//! the binding to the challenge (SPEC I1, §4 DATA rows). [`policy::decide`] turns the
//! results into the verdict.
//!
//! Every check that can run runs on every message, so the audit event lists every result:
//! the three DNS checks (SPF, DKIM, iprev) run concurrently, each bounded as a whole by
//! `dns.check_timeout` (a check that does not finish in time is a temporary error, never "none";
//! `dns.timeout` bounds each single query inside it).
//! iprev always runs and is reported, but decides only where required.
//!
//! This file is orchestration only: mail-auth is reached through [`auth`] alone, the rules
//! live in [`headers`], [`dkim`], [`binding`] and [`policy`].
//!
//! Only the top-level header block is read; Authentication-Results, Received-SPF and ARC-*
//! fields are never evidence (nothing here looks at them).
//!
//! Decisions where the SPEC is silent:
//! - When several aligned signatures pass, the binding is judged against the first one that
//!   proves all of it (token, session code, freshness), else against the first whose signed
//!   content carries the token (its gaps are then the reason), else the first. Any passing
//!   aligned signature proves its content; two signatures' halves are never combined
//!   ([`binding::choose`], a table-tested pure function).
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

pub mod auth;
pub mod binding;
pub mod dkim;
pub mod headers;

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::address::{Domain, Mailbox, ParseOptions};
use crate::backend::{ChallengeBinding, Decision, Evidence, Transaction, Verdict, Verify};
use crate::config::{Config, ConfirmConfig, PolicyConfig};
use crate::dns::{self, DnsSetupError};
use crate::domains::DomainPolicy;
pub use crate::policy::Outcome;
use crate::policy::{self, CheckResults, Dkim, Dnssec, DnssecChecks, Requirements};

use self::auth::{Auth, Resolver, crypto_of};
use self::binding::{Choice, Content, Proof};
use self::dkim::{Crypto, SigInfo, SigStatus};
use self::headers::HeaderBlock;

/// The production verifier.
pub struct Verifier {
    auth: Auth,
    confirm: ConfirmConfig,
    policy: PolicyConfig,
    domains: DomainPolicy,
    check_timeout: Duration,
    opts: ParseOptions,
    /// Told how long each DNS-bound check (SPF, DKIM, iprev) took, for `/metrics`.
    dns_observer: Option<DnsObserver>,
}

/// Receives the duration of each DNS-bound check.
pub type DnsObserver = std::sync::Arc<dyn Fn(Duration) + Send + Sync>;

/// A signature that passed every rule, with what it covers and how its key was proven.
struct Selected {
    info: SigInfo,
    signed: HashSet<usize>,
    key_dnssec: Dnssec,
}

/// The proof kept with an accepted confirmation (SPEC §6 `evidence`).
fn evidence(
    tx: &Transaction,
    from: &Mailbox,
    block: &HeaderBlock<'_>,
    chosen: Option<&Selected>,
    spf: policy::Spf,
    spf_dnssec: Dnssec,
    message_id: Option<String>,
) -> Evidence {
    Evidence {
        client_ip: tx.session.client_ip.to_string(),
        helo: tx.session.helo.clone(),
        tls_version: tx.session.tls_version.clone(),
        mail_from: tx.mail_from.to_string(),
        mail_from_tagged: tx.mail_from_tagged.clone(),
        from: from.to_string(),
        // No chosen signature: a domain that does not require DKIM, confirmed unsigned.
        dkim_domain: chosen
            .and_then(|s| s.info.domain.as_ref())
            .map(|d| d.to_string())
            .unwrap_or_default(),
        dkim_selector: chosen.map(|s| s.info.selector.clone()).unwrap_or_default(),
        dkim_algorithm: chosen.map(|s| s.info.algorithm.clone()).unwrap_or_default(),
        spf: spf.as_str().to_string(),
        spf_dnssec: spf_dnssec.as_str().to_string(),
        dkim_key_dnssec: chosen
            .map_or(Dnssec::Skipped, |s| s.key_dnssec)
            .as_str()
            .to_string(),
        message_id,
        date: block.named("date").next().map(|(_, f)| f.unfolded()),
        headers: String::from_utf8_lossy(block.raw).into_owned(),
    }
}

/// The signature-bound checks and the DKIM result they leave.
struct Bound<'r> {
    dkim: Dkim,
    /// The signature that proves the binding; `None` when none does or none was needed.
    chosen: Option<&'r Selected>,
    token_unsigned: Outcome,
    session_code: Outcome,
    date: Outcome,
}

/// `binding.mismatch` / `envelope.mismatch`: the From address is `other`; `Skipped` when
/// either is unknown.
fn compare(from: Option<&Mailbox>, other: Option<&Mailbox>) -> Outcome {
    match (from, other) {
        (Some(f), Some(o)) => Outcome::from_ok(f == o),
        _ => Outcome::Skipped,
    }
}

struct DkimReport {
    result: Dkim,
    good: Vec<Selected>,
    /// An aligned signature could not be judged for a temporary reason (its key lookup or
    /// its verification failed temporarily): it might have proved what the good ones do not.
    temp: bool,
    /// The weakest DNSSEC proof of the aligned signatures' key records.
    dnssec: Dnssec,
}

impl DkimReport {
    /// A result with no passing aligned signature.
    fn without_good(result: Dkim, temp: bool, dnssec: Dnssec) -> Self {
        Self {
            result,
            good: Vec::new(),
            temp,
            dnssec,
        }
    }
}

impl Verifier {
    /// Build from the whole configuration (resolver from `[dns]`).
    pub fn new(config: &Config) -> Result<Self, DnsSetupError> {
        let auth = dns::build(&config.dns)?;
        Ok(Self::with_authenticator(
            auth,
            config.confirm.clone(),
            config.policy.clone(),
            config.dns.check_timeout,
        ))
    }

    /// Build around an existing resolver.
    pub fn with_authenticator(
        auth: Resolver,
        confirm: ConfirmConfig,
        policy: PolicyConfig,
        check_timeout: Duration,
    ) -> Self {
        let opts = policy.parse_options();
        Self {
            auth: Auth::new(auth, check_timeout),
            domains: DomainPolicy::new(&policy),
            confirm,
            policy,
            check_timeout,
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
        self.run(tx, challenge, false, now).await
    }

    /// A probe's analysis (SPEC §10): every check a confirmation runs, with the binding
    /// checks reported but not required. There is no claimed address, challenge mail or
    /// session code, so `binding.mismatch`, `binding.not_a_reply` and `binding.session_code`
    /// are `not_required`; `binding.token_unsigned` says whether the probe token sits in a
    /// signed part, as a reply's token would have to.
    pub async fn analyse_probe(
        &self,
        tx: &Transaction,
        probe_id: &str,
        now: DateTime<Utc>,
    ) -> Verdict {
        let binding = ChallengeBinding {
            id: probe_id.to_owned(),
            address: tx.mail_from.clone(),
            token: tx.rcpt.token.clone(),
            session_code: String::new(),
            message_id: String::new(),
        };
        self.run(tx, Some(&binding), true, now).await
    }

    async fn run(
        &self,
        tx: &Transaction,
        challenge: Option<&ChallengeBinding>,
        probe: bool,
        now: DateTime<Utc>,
    ) -> Verdict {
        let message = tx.message.as_slice();
        let block = HeaderBlock::parse(message);
        let parsed = mail_parser::MessageParser::default().parse(message);
        let hdr = headers::check(&block, parsed.as_ref(), &self.opts);
        let from = hdr.from.clone();
        let mut req = self.requirements(tx, from.as_ref(), challenge);
        req.binding &= !probe;

        let from_field = block
            .named("from")
            .map(|(i, _)| i)
            .next()
            .filter(|_| block.count("from") == 1);
        let host = self.confirm.domain.as_str();
        let ((spf, spf_dnssec), dkim_report, iprev) = tokio::join!(
            self.timed(self.auth.spf(tx, host)),
            self.timed(self.dkim(message, &block, from.as_ref(), from_field, now)),
            self.timed(self.auth.iprev(tx.session.client_ip)),
        );
        let content = Content {
            block: &block,
            parsed: parsed.as_ref(),
            signed: None,
        };
        let bound = self.bind(&content, &dkim_report, &req, challenge, now);
        let not_a_reply = match challenge {
            _ if !self.confirm.require_reply || probe => Outcome::NotRequired,
            Some(c) => binding::is_reply(&block, &c.message_id),
            None => Outcome::Skipped,
        };

        let results = CheckResults {
            header: hdr.checks,
            envelope_mismatch: compare(from.as_ref(), Some(&tx.mail_from)),
            domain_allowed: match &from {
                Some(f) => Outcome::from_ok(self.domains.check(f.domain()).is_ok()),
                None => Outcome::Skipped,
            },
            spf,
            dkim: bound.dkim,
            iprev,
            date: bound.date,
            binding_mismatch: if probe {
                Outcome::NotRequired
            } else {
                compare(from.as_ref(), challenge.map(|c| &c.address))
            },
            token_unsigned: bound.token_unsigned,
            not_a_reply,
            session_code: if probe {
                Outcome::NotRequired
            } else {
                bound.session_code
            },
            dnssec: DnssecChecks {
                spf: if req.spf { spf_dnssec } else { Dnssec::Skipped },
                dkim: if req.dkim {
                    dkim_report.dnssec
                } else {
                    Dnssec::Skipped
                },
                required: self.requires_dnssec(tx, from.as_ref()),
            },
        };
        let (decision, checks) = policy::decide(&results, &req);

        let message_id = block.named("message-id").next().map(|(_, f)| f.unfolded());
        let evidence = match (&decision, &from) {
            (Decision::Accept, Some(f)) => Some(evidence(
                tx,
                f,
                &block,
                bound.chosen,
                spf,
                spf_dnssec,
                message_id.clone(),
            )),
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

    /// What the message must prove: the From domain's requirements (the envelope's when From
    /// did not parse), `[confirm]`, and whether a challenge is known.
    fn requirements(
        &self,
        tx: &Transaction,
        from: Option<&Mailbox>,
        challenge: Option<&ChallengeBinding>,
    ) -> Requirements {
        let domain = from.map_or(tx.mail_from.domain(), Mailbox::domain);
        Requirements {
            reply: self.confirm.require_reply,
            session_code: self.confirm.require_session_code,
            binding: challenge.is_some(),
            ..self.domains.requirements(domain)
        }
    }

    /// `require_dnssec` for the From domain (the envelope's when From did not parse), as
    /// [`requirements`](Self::requirements) picks its domain.
    fn requires_dnssec(&self, tx: &Transaction, from: Option<&Mailbox>) -> bool {
        let domain = from.map_or(tx.mail_from.domain(), Mailbox::domain);
        self.domains.requires_dnssec(domain)
    }

    /// The signature-bound checks: against a passing aligned signature (the one
    /// [`binding::choose`] picks), or against the whole mail for a domain that does not
    /// require DKIM and has no passing aligned signature.
    fn bind<'r>(
        &self,
        mail: &Content<'_, '_>,
        report: &'r DkimReport,
        req: &Requirements,
        challenge: Option<&ChallengeBinding>,
        now: DateTime<Utc>,
    ) -> Bound<'r> {
        let mut bound = Bound {
            dkim: report.result,
            chosen: None,
            token_unsigned: Outcome::Skipped,
            session_code: Outcome::Skipped,
            date: Outcome::Skipped,
        };
        let unsigned_fallback = !req.dkim && !report.result.passed();
        if report.result.passed() || unsigned_fallback {
            let candidates: Vec<Option<&Selected>> = if unsigned_fallback {
                vec![None]
            } else {
                report.good.iter().map(Some).collect()
            };
            let judge = |sel: Option<&Selected>| {
                let content = Content {
                    signed: sel.map(|s| &s.signed),
                    ..*mail
                };
                let time = binding::message_time(&content, sel.and_then(|s| s.info.t));
                Proof {
                    token: challenge.map(|c| binding::token_signed(&content, &c.token)),
                    code: challenge.map(|c| binding::session_code(&content, &c.session_code)),
                    fresh: binding::freshness(time, now, self.confirm.max_message_age),
                }
            };
            let judged = candidates.into_iter().map(|s| (s, judge(s))).collect();
            let code_counts = self.confirm.require_session_code;
            // An aligned signature whose key could not be fetched might prove what the good
            // ones do not: then the answer is not certain, so it is temporary (SPEC I5).
            let unjudged = report.temp && !unsigned_fallback;
            match binding::choose(judged, code_counts, unjudged) {
                Choice::Chosen(sel, proof) => {
                    bound.chosen = sel;
                    // `None`: no challenge to compare with (the CLI without a recipient).
                    bound.token_unsigned = proof.token.unwrap_or(Outcome::Skipped);
                    bound.session_code = proof.code.unwrap_or(Outcome::Skipped);
                    bound.date = proof.fresh;
                }
                Choice::Nothing => {}
                Choice::Unsure => bound.dkim = Dkim::TempError,
            }
        }
        if !self.confirm.require_session_code {
            bound.session_code = Outcome::NotRequired;
        }
        bound
    }

    /// DKIM over every signature, in two phases each bounded by `dns.check_timeout`:
    ///
    /// No signature is `none`; no From to align with is `skipped` (nothing is verified).
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
            return DkimReport::without_good(Dkim::None, false, Dnssec::Skipped);
        }
        // Without one From address there is nothing to align with: the check could not run
        // (`skipped`, not `unaligned` or `fail`); `header.from_*` names the refusal.
        if from.is_none() {
            return DkimReport::without_good(Dkim::Skipped, false, Dnssec::Skipped);
        }
        // `d=` the From domain's override trusts besides ordinary alignment (SPEC §4
        // "Microsoft 365 tenants"): exact names, for that domain only.
        let by_override: &[Domain] = from.map_or(&[], |f| self.domains.dkim_domains(f.domain()));
        let natively = |d: &Domain| -> bool {
            from.is_some_and(|f| dkim::aligned(d, f.domain(), &self.policy.alignment))
        };
        let is_aligned = |d: &str| -> bool {
            match (Domain::parse(d.as_bytes(), &self.opts), from) {
                (Ok(d), Some(_)) => natively(&d) || by_override.contains(&d),
                _ => false,
            }
        };
        let aligned: Vec<&SigInfo> = sigs.iter().filter(|s| is_aligned(&s.d_raw)).collect();
        if aligned.is_empty() {
            let work = self.auth.crypto(message, &considered, |d| !is_aligned(d));
            let any_pass = match tokio::time::timeout(self.check_timeout, work).await {
                Ok(results) => sigs.iter().any(|s| crypto_of(&results, s) == Crypto::Pass),
                Err(_) => false,
            };
            // No aligned key decides anything: the outcome is a refusal whatever DNSSEC says.
            return DkimReport::without_good(
                dkim::aggregate(sigs.len(), &[], any_pass),
                false,
                Dnssec::Skipped,
            );
        }
        let work = async {
            let results = self
                .auth
                .crypto(message, &considered, |d| is_aligned(d))
                .await;
            let mut statuses = Vec::new();
            let mut good = Vec::new();
            let mut dnssec = Dnssec::Skipped;
            for sig in &aligned {
                let signed = sig.signed_fields(block);
                let crypto = crypto_of(&results, sig);
                let (status, key_dnssec) = self
                    .judge(sig, crypto, &signed, from, from_field, now)
                    .await;
                dnssec = dnssec.weakest(key_dnssec);
                if status == SigStatus::Good {
                    good.push(Selected {
                        info: (*sig).clone(),
                        signed,
                        key_dnssec,
                    });
                }
                statuses.push(status);
            }
            let mut result = dkim::aggregate(sigs.len(), &statuses, false);
            let native_good = good
                .iter()
                .any(|g| g.info.domain.as_ref().is_some_and(natively));
            if result == Dkim::Pass && !native_good {
                result = Dkim::AlignedByOverride;
            }
            DkimReport {
                result,
                good,
                temp: statuses.contains(&SigStatus::TempError),
                dnssec,
            }
        };
        match tokio::time::timeout(self.check_timeout, work).await {
            Ok(report) => report,
            Err(_) => DkimReport::without_good(Dkim::TempError, true, Dnssec::Unknown),
        }
    }

    /// One aligned signature under the product's rules: its `i=` against From, then
    /// [`dkim::judge`] with its key record; with the DNSSEC proof of that record.
    async fn judge(
        &self,
        sig: &SigInfo,
        crypto: Crypto,
        signed: &HashSet<usize>,
        from: Option<&Mailbox>,
        from_field: Option<usize>,
        now: DateTime<Utc>,
    ) -> (SigStatus, Dnssec) {
        let (key, dnssec) = self.auth.key(sig).await;
        if let Some(f) = from
            && !dkim::identity_agrees(sig, f, &self.opts)
        {
            return (SigStatus::Fail, dnssec);
        }
        let min_bits = self.policy.dkim_min_rsa_bits;
        // Before 1970 cannot happen on a running MX; 0 only makes every `x=` look unexpired.
        let secs = u64::try_from(now.timestamp()).unwrap_or(0);
        let status = dkim::judge(sig, crypto, &key, signed, from_field, min_bits, secs);
        (status, dnssec)
    }
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

    fn analyse(
        &self,
        tx: &Transaction,
        probe_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Verdict> + Send {
        self.analyse_probe(tx, probe_id, now)
    }
}
