//! The verdict of `gatekeeper domain-check` (SPEC §10), from the facts DNS gave: pure, so the
//! table at the bottom covers every pattern without a network.
//!
//! What a confirmation needs (SPEC §4): an aligned DKIM signature that verifies with a usable
//! key, and SPF pass, and iprev where required; a per-domain override may waive DKIM *or* SPF,
//! never both (without DKIM, SPF pass and iprev become mandatory). From DNS alone:
//!
//! - SPF **can pass** when the domain has exactly one SPF record that parses and stays within
//!   the 10 DNS lookups of RFC 7208 §4.6.4; whether it passes for the ministry's outbound
//!   hosts is unknowable here (a probe tells). `~all`, `?all` and `+all` do not change that:
//!   gatekeeper needs `pass`, whatever the other hosts get, so they are notes, not blockers.
//! - DKIM **can pass** when a key at one of the tried selectors of the domain itself is usable
//!   as the verifier judges it: it loads, is not revoked, has no `t=y`, and an RSA key has at
//!   least `policy.dkim_min_rsa_bits`. Keys seen in earlier confirmations under another
//!   signing domain (`*.onmicrosoft.com` before a tenant enables DKIM for its own domain)
//!   lead to a `dkim_domains` snippet.
//! - DMARC does not decide anything in gatekeeper (its own alignment rule applies); a missing
//!   or `p=none` record is a note.
//! - The domain must be able to receive the challenge mail: an MX (or, without one, an
//!   address record: the implicit MX of RFC 5321 §5.1), and not a null MX (RFC 7505).
//!
//! Decisions where the SPEC is silent:
//! - No usable key found at any tried selector while SPF can pass: `needs override` with
//!   `require_dkim = false` (and `require_iprev = true`), flagged as uncertain: the domain may
//!   sign with a selector the list does not have; a probe settles it.
//! - An existing override in the configuration is taken into account: a domain whose
//!   override already waives what is missing is `ready`.
//! - A temporary DNS failure on SPF, DKIM or MX is `cannot confirm` (exit 2): the answer is
//!   not known, and guessing "ready" would be worse than asking again.
//! - **DNSSEC.** A bogus answer (validation failed: a bad or expired signature, a missing
//!   RRSIG, a broken chain) is `cannot confirm`, why naming each bogus answer: every
//!   confirmation from the domain would get `451 dns.temperror` until the zone's operator
//!   fixes it, and no override helps. An insecure answer (the zone provably unsigned) that
//!   the verifier needs (the SPF record, or every usable key) when the domain's override has
//!   `require_dnssec = true` is `cannot confirm` too: that override refuses it (451); the fix
//!   is to sign the zone or drop `require_dnssec`, which is the operator's call, not a snippet.

use serde::Serialize;

/// What DNS said about the domain's SPF, reduced to what the verdict needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpfState {
    /// One record, valid, within the lookup limit.
    CanPass,
    /// No SPF record at all (`spf.none` for every mail).
    Missing,
    /// A record that can never pass: syntax, several records, too many lookups
    /// (`spf.permerror`).
    Broken,
    /// The lookup failed for now.
    Temporary,
}

/// The best DKIM key found for the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DkimState {
    /// A usable key of the domain itself.
    Usable,
    /// Keys exist but none usable (testing, weak, revoked, unloadable).
    Unusable,
    /// No key at any tried selector.
    NotFound,
    /// A lookup failed for now, and no usable key was found elsewhere.
    Temporary,
}

/// Where the challenge mail would go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MxState {
    /// MX records, or an address record standing in for one.
    Deliverable,
    /// Null MX (RFC 7505), or neither MX nor address.
    Undeliverable,
    Temporary,
}

/// Everything the verdict is judged on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub domain: String,
    /// `policy.allowed_domains` / `denied_domains` / `confirm.domain` accept the domain.
    pub allowed: bool,
    pub spf: SpfState,
    pub dkim: DkimState,
    /// Signing domains (other than the domain) with a usable key, seen in earlier
    /// confirmations from the domain.
    pub foreign_signers: Vec<String>,
    pub mx: MxState,
    /// The requirements in force today for the domain (its override, if any).
    pub require_dkim: bool,
    pub require_spf: bool,
    pub require_iprev: bool,
    /// The answers (`SPF`, `DKIM key at NAME`, ...) whose DNSSEC validation failed.
    pub bogus: Vec<String>,
    /// The answers the verifier needs that DNSSEC proved unsigned, when the domain's
    /// override says `require_dnssec = true` (empty otherwise).
    pub insecure_refused: Vec<String>,
}

/// `ready`, `needs override` or `cannot confirm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    #[serde(rename = "ready")]
    Ready,
    #[serde(rename = "needs override")]
    NeedsOverride,
    #[serde(rename = "cannot confirm")]
    CannotConfirm,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ready => "ready",
            Outcome::NeedsOverride => "needs override",
            Outcome::CannotConfirm => "cannot confirm",
        }
    }

    /// The exit status: 0 ready, 1 needs override, 2 cannot confirm (as `verify`'s 0/1/2).
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Ready => 0,
            Outcome::NeedsOverride => 1,
            Outcome::CannotConfirm => 2,
        }
    }
}

/// The verdict with its reasons and, for `needs override`, the snippet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub verdict: Outcome,
    /// Why, in words a person can act on (empty for a plain `ready`).
    pub why: Vec<String>,
    /// The `[policy.domains."…"]` table to add (only with `needs override`).
    pub snippet: Option<String>,
}

impl Verdict {
    fn new(verdict: Outcome, why: Vec<String>, snippet: Option<String>) -> Self {
        Self {
            verdict,
            why,
            snippet,
        }
    }
}

/// Judge the facts (see the module documentation).
pub fn judge(f: &Facts) -> Verdict {
    use Outcome::{CannotConfirm, NeedsOverride, Ready};
    let table = format!("[policy.domains.\"{}\"]\n", f.domain);
    if !f.allowed {
        return Verdict::new(
            CannotConfirm,
            vec![format!(
                "{} is outside policy.allowed_domains (or denied, or gatekeeper's own domain): \
                 add it to policy.allowed_domains first",
                f.domain
            )],
            None,
        );
    }
    if !f.bogus.is_empty() {
        return Verdict::new(
            CannotConfirm,
            vec![format!(
                "DNSSEC validation failed (bogus: a bad or expired signature, a missing RRSIG \
                 or a broken chain of trust) for {}: every confirmation from {} gets 451 \
                 dns.temperror until the zone's DNS operator fixes it; no override helps",
                f.bogus.join(", "),
                f.domain
            )],
            None,
        );
    }
    if !f.insecure_refused.is_empty() {
        return Verdict::new(
            CannotConfirm,
            vec![format!(
                "{} unsigned (DNSSEC insecure: no DS at the parent) and the domain's override \
                 says require_dnssec = true: confirmations get 451 dns.temperror; sign the \
                 zone, or remove require_dnssec from [policy.domains.\"{}\"]",
                f.insecure_refused.join(", "),
                f.domain
            )],
            None,
        );
    }
    let mut temporary = Vec::new();
    if f.spf == SpfState::Temporary {
        temporary.push("the SPF lookup failed for now");
    }
    if f.dkim == DkimState::Temporary {
        temporary.push("the DKIM key lookups failed for now");
    }
    if f.mx == MxState::Temporary {
        temporary.push("the MX lookup failed for now");
    }
    if !temporary.is_empty() {
        return Verdict::new(
            CannotConfirm,
            vec![format!(
                "{}: the answer is unknown, try again later",
                temporary.join(", ")
            )],
            None,
        );
    }
    if f.mx == MxState::Undeliverable {
        return Verdict::new(
            CannotConfirm,
            vec![format!(
                "{} receives no mail (null MX, or neither MX nor address record): the \
                 challenge mail cannot reach anyone there",
                f.domain
            )],
            None,
        );
    }
    let spf_ok = f.spf == SpfState::CanPass;
    let dkim_ok = f.dkim == DkimState::Usable;
    // (what is wrong, what the ministry could fix instead of an override)
    let (spf_why, spf_fix) = match f.spf {
        SpfState::Missing => (
            "no SPF record, so SPF never passes (spf.none)",
            "publish one",
        ),
        _ => (
            "the SPF record can never pass (spf.permerror)",
            "fix the record",
        ),
    };
    let (dkim_why, dkim_fix) = match f.dkim {
        DkimState::Unusable => (
            "no usable DKIM key: every key found is in testing (t=y), too weak, revoked or \
             unreadable (dkim.testing / dkim.weak / dkim.fail)",
            "fix the key",
        ),
        _ => (
            "no DKIM key at any usual selector nor at one seen in earlier confirmations \
             (dkim.none)",
            "the domain may sign with another selector: send a probe to be sure",
        ),
    };
    match (spf_ok, dkim_ok) {
        (true, true) if f.require_iprev => Verdict::new(
            Ready,
            vec![
                "the policy also requires iprev for this domain: the ministry's outbound hosts \
                 need forward-confirmed reverse DNS, which DNS alone cannot show for hosts it \
                 does not name (a probe tells)"
                    .into(),
            ],
            None,
        ),
        (true, true) => Verdict::new(Ready, Vec::new(), None),
        (false, true) if !f.require_spf => Verdict::new(
            Ready,
            vec!["SPF cannot pass, and the domain's override already waives it".into()],
            None,
        ),
        (false, true) => Verdict::new(
            NeedsOverride,
            vec![format!(
                "{spf_why}: {spf_fix}, or accept on the aligned DKIM signature alone"
            )],
            Some(format!("{table}require_spf = false\n")),
        ),
        (true, false) if !f.foreign_signers.is_empty() => {
            let list = f
                .foreign_signers
                .iter()
                .map(|d| format!("\"{d}\""))
                .collect::<Vec<_>>()
                .join(", ");
            Verdict::new(
                NeedsOverride,
                vec![format!(
                    "earlier confirmations were signed by {list}, not by {}: accept that \
                     signer for this domain (or have the ministry sign with its own domain)",
                    f.domain
                )],
                Some(format!("{table}dkim_domains = [{list}]\n")),
            )
        }
        (true, false) if !f.require_dkim => Verdict::new(
            Ready,
            vec![
                "DKIM cannot pass, and the domain's override already waives it (SPF pass and \
                 iprev are required)"
                    .into(),
            ],
            None,
        ),
        (true, false) => Verdict::new(
            NeedsOverride,
            vec![format!(
                "{dkim_why}: {dkim_fix}, or accept on SPF pass with forward-confirmed reverse \
                 DNS (iprev) of the ministry's outbound hosts"
            )],
            Some(format!(
                "{table}require_dkim = false\nrequire_iprev = true\n"
            )),
        ),
        (false, false) => Verdict::new(
            CannotConfirm,
            vec![
                spf_why.to_owned(),
                dkim_why.to_owned(),
                "an override can never waive both DKIM and SPF: the ministry must publish a \
                 DKIM key or an SPF record first"
                    .into(),
            ],
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(spf: SpfState, dkim: DkimState) -> Facts {
        Facts {
            domain: "culture.gouv.fr".into(),
            allowed: true,
            spf,
            dkim,
            foreign_signers: Vec::new(),
            mx: MxState::Deliverable,
            require_dkim: true,
            require_spf: true,
            require_iprev: false,
            bogus: Vec::new(),
            insecure_refused: Vec::new(),
        }
    }

    #[test]
    fn verdict_table() {
        use DkimState as D;
        use Outcome::*;
        use SpfState as S;
        let t = "[policy.domains.\"culture.gouv.fr\"]\n";
        let no_spf = format!("{t}require_spf = false\n");
        let no_dkim = format!("{t}require_dkim = false\nrequire_iprev = true\n");
        let foreign = format!("{t}dkim_domains = [\"culture.onmicrosoft.com\"]\n");
        let mut waived_spf = facts(S::Missing, D::Usable);
        waived_spf.require_spf = false;
        let mut waived_dkim = facts(S::CanPass, D::NotFound);
        waived_dkim.require_dkim = false;
        let mut m365 = facts(S::CanPass, D::NotFound);
        m365.foreign_signers = vec!["culture.onmicrosoft.com".into()];
        let mut outside = facts(S::CanPass, D::Usable);
        outside.allowed = false;
        let mut null_mx = facts(S::CanPass, D::Usable);
        null_mx.mx = MxState::Undeliverable;
        let mut iprev = facts(S::CanPass, D::Usable);
        iprev.require_iprev = true;
        let mut mx_temp = facts(S::CanPass, D::Usable);
        mx_temp.mx = MxState::Temporary;
        // Bogus answers fail the lookups (temporary), and the why is the validation.
        let mut bogus = facts(S::CanPass, D::Temporary);
        bogus.bogus = vec!["the DKIM key at s2024._domainkey.culture.gouv.fr".into()];
        let mut insecure = facts(S::CanPass, D::Usable);
        insecure.insecure_refused = vec!["the SPF record".into()];
        let cases: Vec<(Facts, Outcome, Option<&str>)> = vec![
            (facts(S::CanPass, D::Usable), Ready, None),
            (iprev, Ready, None),
            (facts(S::Missing, D::Usable), NeedsOverride, Some(&no_spf)),
            (facts(S::Broken, D::Usable), NeedsOverride, Some(&no_spf)),
            (waived_spf, Ready, None),
            (
                facts(S::CanPass, D::NotFound),
                NeedsOverride,
                Some(&no_dkim),
            ),
            (
                facts(S::CanPass, D::Unusable),
                NeedsOverride,
                Some(&no_dkim),
            ),
            (waived_dkim, Ready, None),
            (m365, NeedsOverride, Some(&foreign)),
            (facts(S::Missing, D::NotFound), CannotConfirm, None),
            (facts(S::Broken, D::Unusable), CannotConfirm, None),
            (facts(S::Temporary, D::Usable), CannotConfirm, None),
            (facts(S::CanPass, D::Temporary), CannotConfirm, None),
            (outside, CannotConfirm, None),
            (null_mx, CannotConfirm, None),
            (mx_temp, CannotConfirm, None),
            (bogus, CannotConfirm, None),
            (insecure, CannotConfirm, None),
        ];
        for (f, want, snippet) in cases {
            let v = judge(&f);
            assert_eq!(v.verdict, want, "{f:?}: {v:?}");
            assert_eq!(v.snippet.as_deref(), snippet, "{f:?}");
            if want != Ready {
                assert!(
                    !v.why.is_empty(),
                    "a verdict other than ready says why: {f:?}"
                );
            }
            // A DNSSEC failure is named as such, not as "failed for now".
            let why = v.why.join(" ");
            if !f.bogus.is_empty() {
                assert!(
                    why.contains("DNSSEC validation failed") && why.contains(&f.bogus[0]),
                    "{why}"
                );
            }
            if !f.insecure_refused.is_empty() {
                assert!(why.contains("require_dnssec = true"), "{why}");
            }
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Outcome::Ready.exit_code(), 0);
        assert_eq!(Outcome::NeedsOverride.exit_code(), 1);
        assert_eq!(Outcome::CannotConfirm.exit_code(), 2);
    }
}
