//! The decision: every check's result in, one verdict and the full check list out.
//!
//! [`decide`] is pure (no I/O, no clock): the verifier runs every check that can run
//! (SPEC §4, last paragraph) and hands the results here; the same results always give the
//! same decision, which the table tests (`policy/tests.rs`) pin down.
//!
//! The other half of every verdict, what the challenge's state (expired, used, redelivered)
//! does to this decision, is [`challenge`], just as pure; the backend only reads and writes
//! the store around it.
//!
//! # Precedence
//!
//! A refusal names one primary reason. The rule that orders them: **a permanent reason is
//! given only when it is certain whatever a temporarily failed lookup would have returned**;
//! otherwise the answer is temporary (SPEC I5: never a wrong 5xx, never a wrong 250).
//!
//! The verifier guarantees that every `Fail` it reports is certain: checks that depend on
//! the DKIM signature chosen (`binding.token_unsigned`, the signed-Subject part of
//! `binding.session_code`, `date.stale` from `t=`) are `Skipped` when DKIM could not be
//! resolved, and the DKIM aggregate is `TempError` whenever a temporarily failed aligned
//! signature might still have passed — or might have proved the binding that the passing
//! ones do not (then those checks are `Skipped` too). So the order is:
//!
//! 1. Structure of the message, independent of DNS, in this order: `header.malformed`,
//!    `header.from_count`, `header.from_syntax`, `header.duplicate`, `header.resent`,
//!    `header.sender_mismatch`, `message.report`, `message.auto_submitted`.
//! 2. Identity, independent of DNS: `binding.mismatch` (From is not the claimed address),
//!    then `envelope.mismatch`, then `domain.not_allowed` (the From domain under the current
//!    `[policy]`; MAIL already checked the envelope, this holds for `gatekeeper verify` and
//!    for a domain denied after its challenge was issued).
//! 3. Authentication, each only when required for the From domain: SPF (`spf.fail`,
//!    `spf.softfail`, `spf.neutral`, `spf.none`, `spf.permerror`), then DKIM (`dkim.none`,
//!    `dkim.fail`, `dkim.unaligned`, `dkim.weak`, `dkim.testing`, `dkim.partial`,
//!    `dkim.from_unsigned`), then `iprev.fail`.
//! 4. Content bound to the signature: `date.stale`, `binding.token_unsigned`,
//!    `binding.not_a_reply`, `binding.session_code`.
//! 5. Only when nothing above failed for certain: temporary errors of required checks,
//!    first `dns.temperror` for an answer DNSSEC refuses (bogus; or not secure where the
//!    domain has `require_dnssec`), then `spf.temperror`, then `dkim.temperror`, then
//!    `dns.temperror` (iprev). A bogus answer never reaches steps 3 and 4: hickory returns
//!    an error instead of its records, so the check that asked is a temporary error.
//! 6. Otherwise accept — and only when every required check positively passed: a check
//!    that is required but `Skipped` (it could not run) is never taken as a pass; it
//!    refuses with the reason of the check (fail closed).

// The challenge half reads the store's types: daemon only (the fuzz crate builds the pure core).
#[cfg(feature = "daemon")]
pub mod challenge;
pub mod probe;

use crate::audit::Check;
use crate::backend::Decision;
use crate::reason::Reason;

/// The result of a yes/no check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    /// Could not run (its input is missing: no challenge, From did not parse, DKIM unresolved).
    Skipped,
    /// Turned off by configuration.
    NotRequired,
}

impl Outcome {
    pub fn from_ok(ok: bool) -> Self {
        if ok { Outcome::Ok } else { Outcome::Fail }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Skipped => "skipped",
            Outcome::NotRequired => "not_required",
        }
    }
}

/// SPF (RFC 7208) result for MAIL FROM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spf {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    PermError,
    TempError,
    Skipped,
}

impl Spf {
    pub fn as_str(self) -> &'static str {
        match self {
            Spf::Pass => "pass",
            Spf::Fail => "fail",
            Spf::SoftFail => "softfail",
            Spf::Neutral => "neutral",
            Spf::None => "none",
            Spf::PermError => "permerror",
            Spf::TempError => "temperror",
            Spf::Skipped => "skipped",
        }
    }
}

/// The DKIM aggregate over every signature, from the point of view of the From domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dkim {
    /// An aligned signature verified and passed every rule.
    Pass,
    /// As `Pass`, but every passing signature's `d=` is aligned only through the domain's
    /// `dkim_domains` override (a Microsoft 365 tenant, SPEC §4): visible in the event.
    AlignedByOverride,
    None,
    Fail,
    Unaligned,
    Weak,
    Testing,
    Partial,
    FromUnsigned,
    TempError,
    Skipped,
}

impl Dkim {
    pub fn as_str(self) -> &'static str {
        match self {
            Dkim::Pass => "pass",
            Dkim::AlignedByOverride => "aligned_by_override",
            Dkim::None => "none",
            Dkim::Fail => "fail",
            Dkim::Unaligned => "unaligned",
            Dkim::Weak => "weak",
            Dkim::Testing => "testing",
            Dkim::Partial => "partial",
            Dkim::FromUnsigned => "from_unsigned",
            Dkim::TempError => "temperror",
            Dkim::Skipped => "skipped",
        }
    }

    /// A passing aligned signature, by ordinary alignment or by the override.
    pub fn passed(self) -> bool {
        matches!(self, Dkim::Pass | Dkim::AlignedByOverride)
    }

    fn reason(self) -> Option<Reason> {
        Some(match self {
            Dkim::None => Reason::DkimNone,
            Dkim::Fail => Reason::DkimFail,
            Dkim::Unaligned => Reason::DkimUnaligned,
            Dkim::Weak => Reason::DkimWeak,
            Dkim::Testing => Reason::DkimTesting,
            Dkim::Partial => Reason::DkimPartial,
            Dkim::FromUnsigned => Reason::DkimFromUnsigned,
            Dkim::Pass | Dkim::AlignedByOverride | Dkim::TempError | Dkim::Skipped => {
                return None;
            }
        })
    }
}

/// Forward-confirmed reverse DNS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Iprev {
    Pass,
    Fail,
    TempError,
    Skipped,
}

impl Iprev {
    pub fn as_str(self) -> &'static str {
        match self {
            Iprev::Pass => "pass",
            Iprev::Fail => "fail",
            Iprev::TempError => "temperror",
            Iprev::Skipped => "skipped",
        }
    }
}

/// The header checks (SPEC §4 `header.*`, `message.*`): what the verifier's header pass
/// reports (`verify::headers::HeaderResults` carries these plus the From it read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderChecks {
    pub malformed: Outcome,
    pub from_count: Outcome,
    pub from_syntax: Outcome,
    pub duplicate: Outcome,
    pub sender_mismatch: Outcome,
    pub resent: Outcome,
    pub auto_submitted: Outcome,
    pub report: Outcome,
}

impl HeaderChecks {
    /// Every header check passed.
    pub fn all_pass() -> Self {
        Self {
            malformed: Outcome::Ok,
            from_count: Outcome::Ok,
            from_syntax: Outcome::Ok,
            duplicate: Outcome::Ok,
            sender_mismatch: Outcome::Ok,
            resent: Outcome::Ok,
            auto_submitted: Outcome::Ok,
            report: Outcome::Ok,
        }
    }
}

/// What DNSSEC validation said about an answer a check used (`dns.dnssec`; `dns` reads it
/// from hickory's proofs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dnssec {
    /// `dns.dnssec = false`: nothing was validated.
    Off,
    /// The chain from a trust anchor checks out.
    Secure,
    /// Provably unsigned (no DS at the delegation), or not provable either way.
    Insecure,
    /// Validation failed (bad or expired signature, missing RRSIG, broken chain): the answer
    /// must not be used.
    Bogus,
    /// The lookup got no answer to judge (timeout, SERVFAIL, refused).
    Unknown,
    /// No answer of this kind was used (no aligned signature; a domain that does not require
    /// the check).
    Skipped,
}

impl Dnssec {
    /// The name in check results, events and evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            Dnssec::Off => "off",
            Dnssec::Secure => "secure",
            Dnssec::Insecure => "insecure",
            Dnssec::Bogus => "bogus",
            Dnssec::Unknown => "unknown",
            Dnssec::Skipped => "skipped",
        }
    }

    /// The weaker of two proofs, for a decision that rests on both: bogus, unknown, insecure,
    /// off, secure; `Skipped` (nothing used) is neutral.
    pub fn weakest(self, other: Dnssec) -> Dnssec {
        let rank = |d: Dnssec| match d {
            Dnssec::Bogus => 0,
            Dnssec::Unknown => 1,
            Dnssec::Insecure => 2,
            Dnssec::Off => 3,
            Dnssec::Secure => 4,
            Dnssec::Skipped => 5,
        };
        if rank(other) < rank(self) {
            other
        } else {
            self
        }
    }

    /// This answer may not be used: bogus always; with `require_dnssec`, anything but secure
    /// (fail closed: "off" or "unknown" prove nothing either).
    pub fn refused(self, required: bool) -> bool {
        match self {
            Dnssec::Bogus => true,
            Dnssec::Secure | Dnssec::Skipped => false,
            Dnssec::Insecure | Dnssec::Off | Dnssec::Unknown => required,
        }
    }

    /// The result string of a `dnssec.*` check: the proof, or `insecure_refused` when
    /// `require_dnssec` refuses an answer that is not secure.
    fn result(self, required: bool) -> &'static str {
        if required && self.refused(true) && self != Dnssec::Bogus {
            "insecure_refused"
        } else {
            self.as_str()
        }
    }
}

/// DNSSEC over the answers the decision rests on (SPEC §6 `[dns]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnssecChecks {
    /// The MAIL FROM domain's SPF record.
    pub spf: Dnssec,
    /// The key records of the signatures aligned with From: the weakest of their proofs (a
    /// CNAME'd key counts at the weakest link of its chain).
    pub dkim: Dnssec,
    /// `require_dnssec` for the From domain (`[policy.domains."…"]`).
    pub required: bool,
}

impl DnssecChecks {
    /// Validation off: nothing to say.
    pub fn off() -> Self {
        Self {
            spf: Dnssec::Off,
            dkim: Dnssec::Off,
            required: false,
        }
    }
}

/// Every check's result for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResults {
    pub header: HeaderChecks,
    pub envelope_mismatch: Outcome,
    /// The From domain is (still) allowed by `policy.allowed_domains`/`denied_domains`.
    pub domain_allowed: Outcome,
    pub spf: Spf,
    pub dkim: Dkim,
    pub iprev: Iprev,
    pub date: Outcome,
    pub binding_mismatch: Outcome,
    pub token_unsigned: Outcome,
    pub not_a_reply: Outcome,
    pub session_code: Outcome,
    pub dnssec: DnssecChecks,
}

impl CheckResults {
    /// Every check passed (the base row of the tables).
    pub fn all_pass() -> Self {
        Self {
            header: HeaderChecks::all_pass(),
            envelope_mismatch: Outcome::Ok,
            domain_allowed: Outcome::Ok,
            spf: Spf::Pass,
            dkim: Dkim::Pass,
            iprev: Iprev::Pass,
            date: Outcome::Ok,
            binding_mismatch: Outcome::Ok,
            token_unsigned: Outcome::Ok,
            not_a_reply: Outcome::Ok,
            session_code: Outcome::Ok,
            dnssec: DnssecChecks::off(),
        }
    }

    /// The audit list: every check, in a fixed order, with fixed result strings.
    pub fn checks(&self) -> Vec<Check> {
        let c = |name: &'static str, result: &'static str| Check {
            name,
            result: result.to_string(),
        };
        vec![
            c("header.malformed", self.header.malformed.as_str()),
            c("header.from_count", self.header.from_count.as_str()),
            c("header.from_syntax", self.header.from_syntax.as_str()),
            c("header.duplicate", self.header.duplicate.as_str()),
            c(
                "header.sender_mismatch",
                self.header.sender_mismatch.as_str(),
            ),
            c("header.resent", self.header.resent.as_str()),
            c(
                "message.auto_submitted",
                self.header.auto_submitted.as_str(),
            ),
            c("message.report", self.header.report.as_str()),
            c("envelope.mismatch", self.envelope_mismatch.as_str()),
            c("domain.not_allowed", self.domain_allowed.as_str()),
            c("spf", self.spf.as_str()),
            c("dkim", self.dkim.as_str()),
            c("iprev", self.iprev.as_str()),
            c("date.stale", self.date.as_str()),
            c("binding.mismatch", self.binding_mismatch.as_str()),
            c("binding.token_unsigned", self.token_unsigned.as_str()),
            c("binding.not_a_reply", self.not_a_reply.as_str()),
            c("binding.session_code", self.session_code.as_str()),
            c("dnssec.spf", self.dnssec.spf.result(self.dnssec.required)),
            c("dnssec.dkim", self.dnssec.dkim.result(self.dnssec.required)),
        ]
    }
}

/// What a message must prove: the three authentication checks come from the From domain
/// ([`DomainPolicy::requirements`](crate::domains::DomainPolicy::requirements)), the rest from
/// `[confirm]` and whether a challenge is known. The one requirements type of the crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requirements {
    pub dkim: bool,
    pub spf: bool,
    pub iprev: bool,
    /// `confirm.require_reply`.
    pub reply: bool,
    /// `confirm.require_session_code`.
    pub session_code: bool,
    /// A challenge is known (false only for `gatekeeper verify` without a recipient): the
    /// binding checks (`binding.*`) count.
    pub binding: bool,
}

impl Requirements {
    /// The defaults: DKIM and SPF, reply and session code; no iprev.
    pub fn strict() -> Self {
        Self {
            dkim: true,
            spf: true,
            iprev: false,
            reply: true,
            session_code: true,
            binding: true,
        }
    }
}

/// A yes/no check that must be `Ok`: `Fail` and (fail closed) `Skipped` refuse.
fn must_pass(o: Outcome) -> bool {
    matches!(o, Outcome::Fail | Outcome::Skipped)
}

/// The decision and the full check list (see the module documentation for the order).
pub fn decide(r: &CheckResults, req: &Requirements) -> (Decision, Vec<Check>) {
    (Decision::from(primary(r, req)), r.checks())
}

impl From<Option<Reason>> for Decision {
    fn from(reason: Option<Reason>) -> Self {
        match reason {
            Some(r) => Decision::Refuse(r),
            None => Decision::Accept,
        }
    }
}

/// The one primary reason, step by step in the order of the module documentation.
fn primary(r: &CheckResults, req: &Requirements) -> Option<Reason> {
    let content = content(r, req);
    structure(r, req)
        .or_else(|| authentication(r, req))
        // 4. Content bound to the signature: the certain failures.
        .or_else(|| {
            content
                .iter()
                .find(|(outcome, _, required)| *required && *outcome == Outcome::Fail)
                .map(|(_, reason, _)| *reason)
        })
        .or_else(|| temporary(r, req))
        .or_else(|| fail_closed(r, req, &content))
}

/// 1. Structure, then 2. identity.
fn structure(r: &CheckResults, req: &Requirements) -> Option<Reason> {
    // A structural check is never `NotRequired`; `Skipped` only where an earlier structural
    // check already failed (e.g. from_syntax when from_count failed).
    let structural = [
        (r.header.malformed, Reason::HeaderMalformed),
        (r.header.from_count, Reason::HeaderFromCount),
        (r.header.from_syntax, Reason::HeaderFromSyntax),
        (r.header.duplicate, Reason::HeaderDuplicate),
        (r.header.resent, Reason::HeaderResent),
        (r.header.sender_mismatch, Reason::HeaderSenderMismatch),
        (r.header.report, Reason::MessageReport),
        (r.header.auto_submitted, Reason::MessageAutoSubmitted),
        // 2. Identity.
        (r.binding_mismatch, Reason::BindingMismatch),
        (r.envelope_mismatch, Reason::EnvelopeMismatch),
        (r.domain_allowed, Reason::DomainNotAllowed),
    ];
    let counts = |reason: Reason| req.binding || reason != Reason::BindingMismatch;
    let first = |wanted: Outcome| {
        structural
            .iter()
            .find(|(outcome, reason)| *outcome == wanted && counts(*reason))
            .map(|(_, reason)| *reason)
    };
    // A structural check that could not run is a refusal (fail closed), after the certain ones.
    first(Outcome::Fail).or_else(|| first(Outcome::Skipped))
}

/// 3. Authentication: the certain failures of the required checks.
fn authentication(r: &CheckResults, req: &Requirements) -> Option<Reason> {
    if req.spf {
        let spf = match r.spf {
            Spf::Fail => Some(Reason::SpfFail),
            Spf::SoftFail => Some(Reason::SpfSoftfail),
            Spf::Neutral => Some(Reason::SpfNeutral),
            Spf::None => Some(Reason::SpfNone),
            Spf::PermError => Some(Reason::SpfPermerror),
            Spf::Pass | Spf::TempError | Spf::Skipped => None,
        };
        if spf.is_some() {
            return spf;
        }
    }
    if req.dkim
        && let Some(reason) = r.dkim.reason()
    {
        return Some(reason);
    }
    if req.iprev && r.iprev == Iprev::Fail {
        return Some(Reason::IprevFail);
    }
    None
}

/// 4. The content checks: (result, reason, required).
fn content(r: &CheckResults, req: &Requirements) -> [(Outcome, Reason, bool); 4] {
    [
        (r.date, Reason::DateStale, true),
        (r.token_unsigned, Reason::BindingTokenUnsigned, req.binding),
        (
            r.not_a_reply,
            Reason::BindingNotAReply,
            req.binding && req.reply,
        ),
        (
            r.session_code,
            Reason::BindingSessionCode,
            req.binding && req.session_code,
        ),
    ]
}

/// Step 5, temporary errors of required checks, DNSSEC refusals first: a check built on
/// a refused answer cannot be trusted whatever it says.
fn temporary(r: &CheckResults, req: &Requirements) -> Option<Reason> {
    let d = &r.dnssec;
    if (req.spf && d.spf.refused(d.required)) || (req.dkim && d.dkim.refused(d.required)) {
        return Some(Reason::DnsTemperror);
    }
    if req.spf && r.spf == Spf::TempError {
        return Some(Reason::SpfTemperror);
    }
    if req.dkim && r.dkim == Dkim::TempError {
        return Some(Reason::DkimTemperror);
    }
    if req.iprev && r.iprev == Iprev::TempError {
        return Some(Reason::DnsTemperror);
    }
    None
}

/// 6. Fail closed on anything required that did not positively pass.
fn fail_closed(
    r: &CheckResults,
    req: &Requirements,
    content: &[(Outcome, Reason, bool)],
) -> Option<Reason> {
    if req.spf && r.spf != Spf::Pass {
        return Some(Reason::SpfNone);
    }
    if req.dkim && !r.dkim.passed() {
        return Some(Reason::DkimNone);
    }
    if req.iprev && r.iprev != Iprev::Pass {
        return Some(Reason::IprevFail);
    }
    // `date.stale` Skipped means "no signed Date and no t=": freshness cannot be measured,
    // which the token binding already covers (a signed fresh token cannot be older than its
    // challenge). Every other content check must have run.
    content
        .iter()
        .find(|(outcome, reason, required)| {
            *required && *reason != Reason::DateStale && must_pass(*outcome)
        })
        .map(|(_, reason, _)| *reason)
}

#[cfg(test)]
mod tests;
