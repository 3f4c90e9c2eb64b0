//! What a probe's analysis tells the operator (SPEC §10): the reason a confirmation from the
//! same mail system would get, and the per-domain override that would fix it where one
//! exists. Pure: the report is built from a verdict's checks and serialised by the caller.
//!
//! Decisions where the SPEC is silent:
//! - An override is offered only where one exists in `[policy.domains."…"]` and the SPEC
//!   allows it: `require_spf = false` when DKIM passed, `require_dkim = false` when SPF
//!   passed (then SPF pass and iprev become mandatory, so iprev must pass too). Never both:
//!   an override can never remove DKIM and SPF together (SPEC §4).
//! - Every other reason (headers, binding, auto-replies, a domain outside the allowed list)
//!   has no override: the fix is in the mail system or in `policy.allowed_domains`, and the
//!   report says so in words.
//! - A DNSSEC refusal (`dns.temperror` with a `dnssec.*` check `bogus` or
//!   `insecure_refused`) is temporary for the sender, but sending again does not help until
//!   the domain's DNS changes: the advice says what to fix instead of "send it again". No
//!   override is offered for a bogus answer (it must never be used).

use serde::Serialize;

use crate::audit::Check;
use crate::reason::{Class, Reason};

/// The override that would make a confirmation pass, as a config snippet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// What the override gives up, in plain words.
    pub explanation: String,
    /// The `[policy.domains."<domain>"]` table to add.
    pub snippet: String,
}

/// The result of one check, for the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckRow {
    pub name: &'static str,
    pub result: String,
}

/// What the operator reads at `GET /v1/probes/{id}` (`analysis`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Analysis {
    /// `confirmed` when a confirmation from this mail system would pass, else the reason.
    pub would_get: String,
    /// The SMTP reply a confirmation would get.
    pub reply: String,
    pub checks: Vec<CheckRow>,
    /// The override that would fix it, where one exists.
    pub fix: Option<Fix>,
    /// What to do when no override exists (or why none is offered).
    pub advice: Option<String>,
}

fn result_of<'a>(checks: &'a [Check], name: &str) -> Option<&'a str> {
    checks
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.result.as_str())
}

/// The override for `reason`, judged on the other checks (`domain`: the From domain).
pub fn fix_for(reason: Reason, checks: &[Check], domain: &str) -> Option<Fix> {
    // `aligned_by_override` is a DKIM pass (SPEC §4 "Microsoft 365 tenants").
    let passed = |name: &str| {
        matches!(
            result_of(checks, name),
            Some("pass" | "aligned_by_override")
        )
    };
    let table = format!("[policy.domains.\"{domain}\"]");
    match reason {
        Reason::SpfFail
        | Reason::SpfSoftfail
        | Reason::SpfNeutral
        | Reason::SpfNone
        | Reason::SpfPermerror
            if passed("dkim") =>
        {
            Some(Fix {
                explanation: "accept without SPF pass: the aligned DKIM signature alone proves the sender".into(),
                snippet: format!("{table}\nrequire_spf = false\n"),
            })
        }
        Reason::DkimNone
        | Reason::DkimFail
        | Reason::DkimWeak
        | Reason::DkimTesting
        | Reason::DkimPartial
        | Reason::DkimFromUnsigned
        | Reason::DkimUnaligned
            if passed("spf") && passed("iprev") =>
        {
            Some(Fix {
                explanation: "accept unsigned mail: SPF pass and forward-confirmed reverse DNS become mandatory, and the token and code are looked for in the whole mail".into(),
                snippet: format!("{table}\nrequire_dkim = false\nrequire_iprev = true\n"),
            })
        }
        _ => None,
    }
}

/// Advice when there is no override.
fn advice_for(reason: Reason, checks: &[Check], fix: bool) -> Option<String> {
    if fix {
        return None;
    }
    let dnssec = |wanted: &str| {
        ["dnssec.spf", "dnssec.dkim"]
            .iter()
            .any(|name| result_of(checks, name) == Some(wanted))
    };
    if reason == Reason::DnsTemperror && dnssec("bogus") {
        return Some(
            "a DNSSEC validation failure (see dnssec.spf / dnssec.dkim): the domain's DNS operator must fix its signatures or the DS at its parent; sending again does not help until then"
                .into(),
        );
    }
    if reason == Reason::DnsTemperror && dnssec("insecure_refused") {
        return Some(
            "require_dnssec is set for this domain but its answers are not signed: sign the zone and publish its DS, or remove require_dnssec from the override"
                .into(),
        );
    }
    let text = match reason.class() {
        Class::Temporary => "a temporary failure (DNS or store): send the probe again",
        Class::Permanent => match reason {
            Reason::DomainNotAllowed => "the domain is outside policy.allowed_domains",
            r if r.as_str().starts_with("spf.") || r.as_str().starts_with("dkim.") => {
                "no single override fixes this: SPF and DKIM cannot both be waived; fix the mail system's SPF record or DKIM signing"
            }
            _ => "no override: the mail itself must change (see the failing check)",
        },
    };
    Some(text.into())
}

/// The analysis of one probe mail: `reason` is the decision's (`None`: it would confirm).
pub fn analyse(reason: Option<Reason>, checks: &[Check], domain: &str) -> Analysis {
    let rows = checks
        .iter()
        .map(|c| CheckRow {
            name: c.name,
            result: c.result.clone(),
        })
        .collect();
    match reason {
        None => Analysis {
            would_get: "confirmed".into(),
            reply: "250 2.0.0 confirmed".into(),
            checks: rows,
            fix: None,
            advice: None,
        },
        Some(r) => {
            let fix = fix_for(r, checks, domain);
            let reply = r.reply();
            Analysis {
                would_get: r.as_str().into(),
                reply: format!("{} {} {}", reply.code, reply.enhanced, reply.text),
                checks: rows,
                advice: advice_for(r, checks, fix.is_some()),
                fix,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(spf: &str, dkim: &str, iprev: &str) -> Vec<Check> {
        [("spf", spf), ("dkim", dkim), ("iprev", iprev)]
            .into_iter()
            .map(|(name, result)| Check {
                name,
                result: result.into(),
            })
            .collect()
    }

    #[test]
    fn fixes_table() {
        // (reason, spf, dkim, iprev, snippet line expected)
        let rows: &[(Reason, &str, &str, &str, Option<&str>)] = &[
            (
                Reason::SpfSoftfail,
                "softfail",
                "pass",
                "fail",
                Some("require_spf = false"),
            ),
            (
                Reason::SpfNone,
                "none",
                "pass",
                "pass",
                Some("require_spf = false"),
            ),
            (Reason::SpfFail, "fail", "fail", "pass", None),
            (
                Reason::DkimNone,
                "pass",
                "none",
                "pass",
                Some("require_dkim = false"),
            ),
            (
                Reason::DkimTesting,
                "pass",
                "testing",
                "pass",
                Some("require_dkim = false"),
            ),
            (Reason::DkimNone, "pass", "none", "fail", None),
            (Reason::DkimNone, "fail", "none", "pass", None),
            (Reason::HeaderFromCount, "pass", "pass", "pass", None),
            (Reason::DnsTemperror, "temperror", "pass", "pass", None),
        ];
        for (reason, spf, dkim, iprev, want) in rows {
            let fix = fix_for(*reason, &checks(spf, dkim, iprev), "culture.gouv.fr");
            assert_eq!(
                fix.as_ref()
                    .map(|f| f.snippet.lines().nth(1).unwrap_or_default()),
                *want,
                "{reason:?}"
            );
            if let Some(f) = fix {
                assert!(
                    f.snippet
                        .starts_with("[policy.domains.\"culture.gouv.fr\"]\n")
                );
            }
        }
    }

    #[test]
    fn analysis_says_what_a_confirmation_would_get() {
        let a = analyse(None, &checks("pass", "pass", "pass"), "x.gouv.fr");
        assert_eq!(a.would_get, "confirmed");
        assert!(a.fix.is_none() && a.advice.is_none());
        let a = analyse(
            Some(Reason::SpfFail),
            &checks("fail", "fail", "pass"),
            "x.gouv.fr",
        );
        assert_eq!(a.would_get, "spf.fail");
        assert!(a.reply.starts_with("550 5.7.23"));
        assert!(a.fix.is_none());
        assert!(
            a.advice
                .is_some_and(|t| t.contains("cannot both be waived"))
        );
        let a = analyse(Some(Reason::DnsTemperror), &[], "x.gouv.fr");
        assert!(a.advice.is_some_and(|t| t.contains("again")));
    }

    #[test]
    fn dnssec_refusals_get_their_own_advice() {
        let with = |spf: &str, dkim: &str| {
            let mut c = checks("pass", "pass", "pass");
            c.push(Check {
                name: "dnssec.spf",
                result: spf.into(),
            });
            c.push(Check {
                name: "dnssec.dkim",
                result: dkim.into(),
            });
            c
        };
        let rows = [
            ("secure", "bogus", "DNSSEC validation failure"),
            ("bogus", "secure", "DNSSEC validation failure"),
            ("insecure_refused", "insecure_refused", "sign the zone"),
            ("secure", "insecure_refused", "sign the zone"),
            ("secure", "secure", "send the probe again"),
        ];
        for (spf, dkim, want) in rows {
            let a = analyse(Some(Reason::DnsTemperror), &with(spf, dkim), "x.gouv.fr");
            assert!(a.fix.is_none(), "{spf} {dkim}");
            let advice = a.advice.unwrap_or_default();
            assert!(advice.contains(want), "{spf} {dkim}: {advice}");
        }
    }
}
