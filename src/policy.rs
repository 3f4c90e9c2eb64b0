//! The decision: every check's result in, one verdict and the full check list out.
//!
//! [`decide`] is pure (no I/O, no clock): the verifier runs every check that can run
//! (SPEC §4, last paragraph) and hands the results here; the same results always give the
//! same decision, which the table tests below pin down.
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
//!    `spf.temperror`, then `dkim.temperror`, then `dns.temperror` (iprev).
//! 6. Otherwise accept — and only when every required check positively passed: a check
//!    that is required but `Skipped` (it could not run) is never taken as a pass; it
//!    refuses with the reason of the check (fail closed).

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

    fn reason(self) -> Option<Reason> {
        Some(match self {
            Dkim::None => Reason::DkimNone,
            Dkim::Fail => Reason::DkimFail,
            Dkim::Unaligned => Reason::DkimUnaligned,
            Dkim::Weak => Reason::DkimWeak,
            Dkim::Testing => Reason::DkimTesting,
            Dkim::Partial => Reason::DkimPartial,
            Dkim::FromUnsigned => Reason::DkimFromUnsigned,
            Dkim::Pass | Dkim::TempError | Dkim::Skipped => return None,
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

/// Every check's result for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResults {
    pub header_malformed: Outcome,
    pub from_count: Outcome,
    pub from_syntax: Outcome,
    pub duplicate: Outcome,
    pub sender_mismatch: Outcome,
    pub resent: Outcome,
    pub auto_submitted: Outcome,
    pub report: Outcome,
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
}

impl CheckResults {
    /// Every check passed (the base row of the tables).
    pub fn all_pass() -> Self {
        Self {
            header_malformed: Outcome::Ok,
            from_count: Outcome::Ok,
            from_syntax: Outcome::Ok,
            duplicate: Outcome::Ok,
            sender_mismatch: Outcome::Ok,
            resent: Outcome::Ok,
            auto_submitted: Outcome::Ok,
            report: Outcome::Ok,
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
        }
    }

    /// The audit list: every check, in a fixed order, with fixed result strings.
    pub fn checks(&self) -> Vec<Check> {
        let c = |name: &'static str, result: &'static str| Check {
            name,
            result: result.to_string(),
        };
        vec![
            c("header.malformed", self.header_malformed.as_str()),
            c("header.from_count", self.from_count.as_str()),
            c("header.from_syntax", self.from_syntax.as_str()),
            c("header.duplicate", self.duplicate.as_str()),
            c("header.sender_mismatch", self.sender_mismatch.as_str()),
            c("header.resent", self.resent.as_str()),
            c("message.auto_submitted", self.auto_submitted.as_str()),
            c("message.report", self.report.as_str()),
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
        ]
    }
}

/// What the From domain and the configuration require.
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

fn primary(r: &CheckResults, req: &Requirements) -> Option<Reason> {
    // 1. Structure. A structural check is never `NotRequired`; `Skipped` only where an
    // earlier structural check already failed (e.g. from_syntax when from_count failed).
    let structural = [
        (r.header_malformed, Reason::HeaderMalformed),
        (r.from_count, Reason::HeaderFromCount),
        (r.from_syntax, Reason::HeaderFromSyntax),
        (r.duplicate, Reason::HeaderDuplicate),
        (r.resent, Reason::HeaderResent),
        (r.sender_mismatch, Reason::HeaderSenderMismatch),
        (r.report, Reason::MessageReport),
        (r.auto_submitted, Reason::MessageAutoSubmitted),
        // 2. Identity.
        (r.binding_mismatch, Reason::BindingMismatch),
        (r.envelope_mismatch, Reason::EnvelopeMismatch),
        (r.domain_allowed, Reason::DomainNotAllowed),
    ];
    let counts = |reason: Reason| req.binding || reason != Reason::BindingMismatch;
    for (outcome, reason) in structural {
        if outcome == Outcome::Fail && counts(reason) {
            return Some(reason);
        }
    }
    // A structural check that could not run is a refusal (fail closed), after the certain ones.
    for (outcome, reason) in structural {
        if outcome == Outcome::Skipped && counts(reason) {
            return Some(reason);
        }
    }

    // 3. Authentication.
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

    // 4. Content bound to the signature.
    let content = [
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
    ];
    for (outcome, reason, required) in content {
        if required && outcome == Outcome::Fail {
            return Some(reason);
        }
    }

    // 5. Temporary errors.
    if req.spf && r.spf == Spf::TempError {
        return Some(Reason::SpfTemperror);
    }
    if req.dkim && r.dkim == Dkim::TempError {
        return Some(Reason::DkimTemperror);
    }
    if req.iprev && r.iprev == Iprev::TempError {
        return Some(Reason::DnsTemperror);
    }

    // 6. Fail closed on anything required that did not positively pass.
    if req.spf && r.spf != Spf::Pass {
        return Some(Reason::SpfNone);
    }
    if req.dkim && r.dkim != Dkim::Pass {
        return Some(Reason::DkimNone);
    }
    if req.iprev && r.iprev != Iprev::Pass {
        return Some(Reason::IprevFail);
    }
    for (outcome, reason, required) in content {
        // `date.stale` Skipped means "no signed Date and no t=": freshness cannot be
        // measured, which the token binding already covers (a signed fresh token cannot be
        // older than its challenge). Every other content check must have run.
        if required && reason != Reason::DateStale && must_pass(outcome) {
            return Some(reason);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuse(r: Reason) -> Decision {
        Decision::Refuse(r)
    }

    /// One row per reason code the verifier can produce, all else passing.
    #[test]
    fn one_row_per_reason() {
        type Edit = fn(&mut CheckResults);
        let rows: &[(Edit, Reason)] = &[
            (
                |r| r.header_malformed = Outcome::Fail,
                Reason::HeaderMalformed,
            ),
            (|r| r.from_count = Outcome::Fail, Reason::HeaderFromCount),
            (|r| r.from_syntax = Outcome::Fail, Reason::HeaderFromSyntax),
            (|r| r.duplicate = Outcome::Fail, Reason::HeaderDuplicate),
            (
                |r| r.sender_mismatch = Outcome::Fail,
                Reason::HeaderSenderMismatch,
            ),
            (|r| r.resent = Outcome::Fail, Reason::HeaderResent),
            (
                |r| r.auto_submitted = Outcome::Fail,
                Reason::MessageAutoSubmitted,
            ),
            (|r| r.report = Outcome::Fail, Reason::MessageReport),
            (
                |r| r.envelope_mismatch = Outcome::Fail,
                Reason::EnvelopeMismatch,
            ),
            (|r| r.spf = Spf::Fail, Reason::SpfFail),
            (|r| r.spf = Spf::SoftFail, Reason::SpfSoftfail),
            (|r| r.spf = Spf::Neutral, Reason::SpfNeutral),
            (|r| r.spf = Spf::None, Reason::SpfNone),
            (|r| r.spf = Spf::PermError, Reason::SpfPermerror),
            (|r| r.spf = Spf::TempError, Reason::SpfTemperror),
            (|r| r.dkim = Dkim::None, Reason::DkimNone),
            (|r| r.dkim = Dkim::Fail, Reason::DkimFail),
            (|r| r.dkim = Dkim::Unaligned, Reason::DkimUnaligned),
            (|r| r.dkim = Dkim::Weak, Reason::DkimWeak),
            (|r| r.dkim = Dkim::Testing, Reason::DkimTesting),
            (|r| r.dkim = Dkim::Partial, Reason::DkimPartial),
            (|r| r.dkim = Dkim::FromUnsigned, Reason::DkimFromUnsigned),
            (|r| r.dkim = Dkim::TempError, Reason::DkimTemperror),
            (|r| r.date = Outcome::Fail, Reason::DateStale),
            (
                |r| r.binding_mismatch = Outcome::Fail,
                Reason::BindingMismatch,
            ),
            (
                |r| r.token_unsigned = Outcome::Fail,
                Reason::BindingTokenUnsigned,
            ),
            (|r| r.not_a_reply = Outcome::Fail, Reason::BindingNotAReply),
            (
                |r| r.session_code = Outcome::Fail,
                Reason::BindingSessionCode,
            ),
        ];
        let req = Requirements::strict();
        assert_eq!(decide(&CheckResults::all_pass(), &req).0, Decision::Accept);
        for (edit, want) in rows {
            let mut r = CheckResults::all_pass();
            edit(&mut r);
            assert_eq!(decide(&r, &req).0, refuse(*want), "{want}");
        }
        // iprev only when required.
        let mut r = CheckResults::all_pass();
        r.iprev = Iprev::Fail;
        assert_eq!(decide(&r, &req).0, Decision::Accept);
        let with_iprev = Requirements { iprev: true, ..req };
        assert_eq!(decide(&r, &with_iprev).0, refuse(Reason::IprevFail));
        r.iprev = Iprev::TempError;
        assert_eq!(decide(&r, &req).0, Decision::Accept);
        assert_eq!(decide(&r, &with_iprev).0, refuse(Reason::DnsTemperror));
    }

    #[test]
    fn checks_list_every_result() {
        let (_, checks) = decide(&CheckResults::all_pass(), &Requirements::strict());
        let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), 18);
        for n in [
            "header.malformed",
            "spf",
            "dkim",
            "iprev",
            "date.stale",
            "binding.session_code",
        ] {
            assert!(names.contains(&n), "{n}");
        }
        let mut r = CheckResults::all_pass();
        r.spf = Spf::SoftFail;
        r.dkim = Dkim::TempError;
        let (_, checks) = decide(&r, &Requirements::strict());
        let get = |n: &str| {
            checks
                .iter()
                .find(|c| c.name == n)
                .map(|c| c.result.clone())
        };
        assert_eq!(get("spf").as_deref(), Some("softfail"));
        assert_eq!(get("dkim").as_deref(), Some("temperror"));
    }

    /// Several checks failing at once: the documented order decides.
    #[test]
    fn several_failures() {
        let req = Requirements::strict();
        let rows: &[(CheckResults, Reason)] = &[
            // Structure beats DNS trouble: a two-From mail is refused even when DNS is down.
            (
                CheckResults {
                    from_count: Outcome::Fail,
                    from_syntax: Outcome::Skipped,
                    spf: Spf::TempError,
                    dkim: Dkim::TempError,
                    ..CheckResults::all_pass()
                },
                Reason::HeaderFromCount,
            ),
            // Malformed first of all.
            (
                CheckResults {
                    header_malformed: Outcome::Fail,
                    from_count: Outcome::Fail,
                    ..CheckResults::all_pass()
                },
                Reason::HeaderMalformed,
            ),
            // A certain SPF fail beats a DKIM temporary error.
            (
                CheckResults {
                    spf: Spf::Fail,
                    dkim: Dkim::TempError,
                    ..CheckResults::all_pass()
                },
                Reason::SpfFail,
            ),
            // A certain DKIM failure beats an SPF temporary error.
            (
                CheckResults {
                    spf: Spf::TempError,
                    dkim: Dkim::Unaligned,
                    ..CheckResults::all_pass()
                },
                Reason::DkimUnaligned,
            ),
            // SPF before DKIM.
            (
                CheckResults {
                    spf: Spf::Fail,
                    dkim: Dkim::None,
                    ..CheckResults::all_pass()
                },
                Reason::SpfFail,
            ),
            // Both temporary: SPF named first.
            (
                CheckResults {
                    spf: Spf::TempError,
                    dkim: Dkim::TempError,
                    token_unsigned: Outcome::Skipped,
                    ..CheckResults::all_pass()
                },
                Reason::SpfTemperror,
            ),
            // Temporary DKIM with bindings that could not run: 4xx, not a binding 5xx.
            (
                CheckResults {
                    dkim: Dkim::TempError,
                    token_unsigned: Outcome::Skipped,
                    session_code: Outcome::Skipped,
                    date: Outcome::Skipped,
                    ..CheckResults::all_pass()
                },
                Reason::DkimTemperror,
            ),
            // ...but a binding that is certain (not a reply) is a 5xx even then.
            (
                CheckResults {
                    dkim: Dkim::TempError,
                    token_unsigned: Outcome::Skipped,
                    not_a_reply: Outcome::Fail,
                    ..CheckResults::all_pass()
                },
                Reason::BindingNotAReply,
            ),
            // Identity before authentication (the insider: envelope his, From Alice's).
            (
                CheckResults {
                    envelope_mismatch: Outcome::Fail,
                    binding_mismatch: Outcome::Fail,
                    spf: Spf::Pass,
                    ..CheckResults::all_pass()
                },
                Reason::BindingMismatch,
            ),
            // Authentication before content (a replay from an unlisted IP).
            (
                CheckResults {
                    spf: Spf::Fail,
                    token_unsigned: Outcome::Fail,
                    date: Outcome::Fail,
                    ..CheckResults::all_pass()
                },
                Reason::SpfFail,
            ),
            (
                CheckResults {
                    auto_submitted: Outcome::Fail,
                    report: Outcome::Fail,
                    ..CheckResults::all_pass()
                },
                Reason::MessageReport,
            ),
            (
                CheckResults {
                    date: Outcome::Fail,
                    token_unsigned: Outcome::Fail,
                    session_code: Outcome::Fail,
                    ..CheckResults::all_pass()
                },
                Reason::DateStale,
            ),
            (
                CheckResults {
                    not_a_reply: Outcome::Fail,
                    session_code: Outcome::Fail,
                    ..CheckResults::all_pass()
                },
                Reason::BindingNotAReply,
            ),
        ];
        for (r, want) in rows {
            assert_eq!(decide(r, &req).0, refuse(*want), "{r:?}");
        }
    }

    #[test]
    fn requirements_and_fail_closed() {
        // Reply and session code turned off: their failures do not count.
        let req = Requirements {
            reply: false,
            session_code: false,
            ..Requirements::strict()
        };
        let r = CheckResults {
            not_a_reply: Outcome::NotRequired,
            session_code: Outcome::NotRequired,
            ..CheckResults::all_pass()
        };
        assert_eq!(decide(&r, &req).0, Decision::Accept);
        // Required but skipped never accepts.
        let r = CheckResults {
            token_unsigned: Outcome::Skipped,
            ..CheckResults::all_pass()
        };
        assert_eq!(
            decide(&r, &Requirements::strict()).0,
            refuse(Reason::BindingTokenUnsigned)
        );
        let r = CheckResults {
            binding_mismatch: Outcome::Skipped,
            ..CheckResults::all_pass()
        };
        assert_eq!(
            decide(&r, &Requirements::strict()).0,
            refuse(Reason::BindingMismatch)
        );
        let r = CheckResults {
            spf: Spf::Skipped,
            ..CheckResults::all_pass()
        };
        assert_eq!(
            decide(&r, &Requirements::strict()).0,
            refuse(Reason::SpfNone)
        );
        let r = CheckResults {
            dkim: Dkim::Skipped,
            ..CheckResults::all_pass()
        };
        assert_eq!(
            decide(&r, &Requirements::strict()).0,
            refuse(Reason::DkimNone)
        );
        // Date not measurable: not a refusal by itself.
        let r = CheckResults {
            date: Outcome::Skipped,
            ..CheckResults::all_pass()
        };
        assert_eq!(decide(&r, &Requirements::strict()).0, Decision::Accept);
        // A domain override without DKIM: DKIM results ignored, SPF and iprev decide.
        let no_dkim = Requirements {
            dkim: false,
            iprev: true,
            ..Requirements::strict()
        };
        let r = CheckResults {
            dkim: Dkim::None,
            ..CheckResults::all_pass()
        };
        assert_eq!(decide(&r, &no_dkim).0, Decision::Accept);
        let r = CheckResults {
            dkim: Dkim::None,
            iprev: Iprev::Fail,
            ..CheckResults::all_pass()
        };
        assert_eq!(decide(&r, &no_dkim).0, refuse(Reason::IprevFail));
        let no_spf = Requirements {
            spf: false,
            ..Requirements::strict()
        };
        let r = CheckResults {
            spf: Spf::Fail,
            ..CheckResults::all_pass()
        };
        assert_eq!(decide(&r, &no_spf).0, Decision::Accept);
        // No challenge (`gatekeeper verify` without a recipient): bindings skipped, ignored.
        let no_binding = Requirements {
            binding: false,
            ..Requirements::strict()
        };
        let r = CheckResults {
            binding_mismatch: Outcome::Skipped,
            token_unsigned: Outcome::Skipped,
            not_a_reply: Outcome::Skipped,
            session_code: Outcome::Skipped,
            ..CheckResults::all_pass()
        };
        assert_eq!(decide(&r, &no_binding).0, Decision::Accept);
        assert_eq!(
            decide(&r, &Requirements::strict()).0,
            refuse(Reason::BindingMismatch)
        );
    }

    #[test]
    fn every_temporary_outcome_is_4xx() {
        use crate::reason::Class;
        for reason in [
            Reason::SpfTemperror,
            Reason::DkimTemperror,
            Reason::DnsTemperror,
        ] {
            assert_eq!(reason.class(), Class::Temporary);
        }
    }
}
