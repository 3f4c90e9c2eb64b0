//! Domain policy (SPEC §3, §4): which sender domains may confirm, and what each must prove.
//!
//! Matching is always on a label boundary through [`Domain::is_within`]: `gouv.fr` covers
//! `interieur.gouv.fr` but not `evilgouv.fr` nor `gouv.fr.evil.example`. A denied domain wins
//! over an allowed one. Per-domain overrides relax one requirement for a domain that cannot
//! meet it, and can never remove both DKIM and SPF: a domain without DKIM must pass SPF and
//! forward-confirmed reverse DNS, which `requirements` enforces even if a caller built an
//! override by hand.

use crate::address::{Domain, EnvelopeTag};
use crate::config::{DomainOverride, PolicyConfig};
use crate::reason::Reason;

/// What a sender domain must prove: the DKIM, SPF and iprev fields of the one requirements
/// type (the others keep their defaults; the verifier sets them from `[confirm]`).
pub use crate::policy::Requirements;

/// The allowed/denied lists and overrides of `[policy]`, ready to query.
#[derive(Clone, Debug)]
pub struct DomainPolicy {
    allowed: Vec<Domain>,
    denied: Vec<Domain>,
    require_iprev: bool,
    overrides: Vec<DomainOverride>,
}

impl DomainPolicy {
    pub fn new(policy: &PolicyConfig) -> Self {
        Self {
            allowed: policy.allowed_domains.clone(),
            denied: policy.denied_domains.clone(),
            require_iprev: policy.require_iprev,
            overrides: policy.domains.clone(),
        }
    }

    /// `Reason::DomainNotAllowed` when the domain is outside every allowed domain or inside a
    /// denied one (denied wins).
    pub fn check(&self, domain: &Domain) -> Result<(), Reason> {
        if self.denied.iter().any(|d| domain.is_within(d)) {
            return Err(Reason::DomainNotAllowed);
        }
        if self.allowed.iter().any(|d| domain.is_within(d)) {
            Ok(())
        } else {
            Err(Reason::DomainNotAllowed)
        }
    }

    /// [`check`](Self::check) for an address that claims to be a user's, as a claim (`POST
    /// /v1/challenges`, `gatekeeper check-address`) or as a sender (MAIL FROM): our own
    /// `confirmation` domain (`confirm.domain`, and its subdomains) is never one. Only
    /// gatekeeper could send from it (a loop of its own challenge mail, or a forgery), and a
    /// challenge to it would come back to gatekeeper itself; the API, MAIL and
    /// `check-address` all ask here so that they agree (SPEC I2).
    pub fn check_claim(&self, domain: &Domain, confirmation: &Domain) -> Result<(), Reason> {
        if domain.is_within(confirmation) {
            return Err(Reason::DomainNotAllowed);
        }
        self.check(domain)
    }

    /// The most specific override for `domain` says `require_dnssec = true`: answers DNSSEC
    /// proves unsigned do not count for it (kept apart from [`Requirements`], which is about
    /// which checks must pass, not about how their answers were obtained).
    pub fn requires_dnssec(&self, domain: &Domain) -> bool {
        self.best(domain).is_some_and(|o| o.require_dnssec)
    }

    /// The override with the longest domain that covers `domain`.
    fn best(&self, domain: &Domain) -> Option<&DomainOverride> {
        self.overrides
            .iter()
            .filter(|o| domain.is_within(&o.domain))
            .max_by_key(|o| o.domain.as_str().len())
    }

    /// The envelope tag the strict parser may remove from a MAIL FROM of `domain`: the most
    /// specific override's `envelope_tag`, so a more specific override without one turns it
    /// off for its subdomain, and a neighbour domain never gets it.
    pub fn envelope_tag(&self, domain: &Domain) -> Option<EnvelopeTag> {
        self.best(domain).and_then(|o| o.envelope_tag)
    }

    /// The `d=` that count as aligned for a From in `domain` besides the ordinary alignment
    /// (`aligned_by_override`), from the most specific override.
    pub fn dkim_domains(&self, domain: &Domain) -> &[Domain] {
        self.best(domain).map_or(&[], |o| o.dkim_domains.as_slice())
    }

    /// The requirements for `domain`: DKIM and SPF always, iprev from `policy.require_iprev`,
    /// unless the most specific override (longest matching domain) says otherwise. Without
    /// DKIM, SPF and iprev are forced on whatever the override says.
    pub fn requirements(&self, domain: &Domain) -> Requirements {
        let mut req = match self.best(domain) {
            Some(o) => Requirements {
                dkim: o.require_dkim,
                spf: o.require_spf,
                iprev: o.require_iprev,
                ..Requirements::strict()
            },
            None => Requirements {
                iprev: self.require_iprev,
                ..Requirements::strict()
            },
        };
        if !req.dkim {
            req.spf = true;
            req.iprev = true;
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::ParseOptions;
    use crate::config::Alignment;

    fn d(s: &str) -> Domain {
        match Domain::parse(s.as_bytes(), &ParseOptions::default()) {
            Ok(d) => d,
            Err(e) => panic!("test domain {s}: {e}"),
        }
    }

    fn ov(domain: &str, dkim: bool, spf: bool, iprev: bool) -> DomainOverride {
        DomainOverride {
            domain: d(domain),
            require_dkim: dkim,
            require_spf: spf,
            require_iprev: iprev,
            require_dnssec: false,
            envelope_tag: None,
            dkim_domains: Vec::new(),
        }
    }

    #[test]
    fn tags_and_dkim_domains_from_the_most_specific_override() {
        let mut interieur = ov("interieur.gouv.fr", true, true, false);
        interieur.envelope_tag = Some(EnvelopeTag::Batv);
        interieur.dkim_domains = vec![d("interieur.onmicrosoft.com")];
        // A more specific override without either turns both off for its subdomain.
        let dgsi = ov("dgsi.interieur.gouv.fr", true, true, false);
        let p = policy(&["gouv.fr"], &[], false, vec![interieur, dgsi]);
        let tenant = [d("interieur.onmicrosoft.com")];
        let rows: &[(&str, Option<EnvelopeTag>, &[Domain])] = &[
            ("interieur.gouv.fr", Some(EnvelopeTag::Batv), &tenant),
            ("sg.interieur.gouv.fr", Some(EnvelopeTag::Batv), &tenant),
            ("dgsi.interieur.gouv.fr", None, &[]),
            ("culture.gouv.fr", None, &[]),
            ("evilinterieur.gouv.fr", None, &[]),
            ("gouv.fr", None, &[]),
        ];
        for (domain, tag, dkim) in rows {
            assert_eq!(p.envelope_tag(&d(domain)), *tag, "{domain}");
            assert_eq!(p.dkim_domains(&d(domain)), *dkim, "{domain}");
        }
    }

    fn policy(
        allowed: &[&str],
        denied: &[&str],
        iprev: bool,
        o: Vec<DomainOverride>,
    ) -> DomainPolicy {
        DomainPolicy::new(&PolicyConfig {
            allowed_domains: allowed.iter().map(|s| d(s)).collect(),
            denied_domains: denied.iter().map(|s| d(s)).collect(),
            alignment: Alignment::Strict,
            require_iprev: iprev,
            dkim_min_rsa_bits: 1024,
            allowed_networks: Vec::new(),
            local_part_extra_chars: String::new(),
            allow_idna: false,
            domains: o,
        })
    }

    #[test]
    fn allowed_and_denied_on_label_boundary() {
        let p = policy(
            &["gouv.fr", "example.org"],
            &["bad.gouv.fr"],
            false,
            Vec::new(),
        );
        let rows: &[(&str, bool)] = &[
            ("gouv.fr", true),
            ("interieur.gouv.fr", true),
            ("a.b.interieur.gouv.fr", true),
            ("example.org", true),
            ("evilgouv.fr", false),
            ("gouv.fr.evil.example", false),
            ("ouv.fr", false),
            ("bad.gouv.fr", false),
            ("x.bad.gouv.fr", false),
            ("notbad.gouv.fr", true),
            ("evil.example", false),
        ];
        for (name, ok) in rows {
            let got = p.check(&d(name));
            if *ok {
                assert_eq!(got, Ok(()), "{name}");
            } else {
                assert_eq!(got, Err(Reason::DomainNotAllowed), "{name}");
            }
        }
    }

    /// The confirmation domain and its subdomains are refused even when allowed.
    #[test]
    fn confirmation_domain_is_never_a_claim() {
        let p = policy(&["gouv.fr"], &[], false, Vec::new());
        let confirm = d("confirm.gouv.fr");
        let rows: &[(&str, Result<(), Reason>)] = &[
            ("interieur.gouv.fr", Ok(())),
            ("confirm.gouv.fr", Err(Reason::DomainNotAllowed)),
            ("x.confirm.gouv.fr", Err(Reason::DomainNotAllowed)),
            ("notconfirm.gouv.fr", Ok(())),
            ("evil.example", Err(Reason::DomainNotAllowed)),
        ];
        for (name, want) in rows {
            assert_eq!(p.check_claim(&d(name), &confirm), *want, "{name}");
        }
    }

    #[test]
    fn denied_wins_over_allowed() {
        let p = policy(&["interieur.gouv.fr"], &["gouv.fr"], false, Vec::new());
        assert_eq!(
            p.check(&d("interieur.gouv.fr")),
            Err(Reason::DomainNotAllowed)
        );
    }

    #[test]
    fn empty_allowed_list_allows_nothing() {
        let p = policy(&[], &[], false, Vec::new());
        assert_eq!(p.check(&d("gouv.fr")), Err(Reason::DomainNotAllowed));
    }

    #[test]
    fn requirements_most_specific_override() {
        let p = policy(
            &["gouv.fr"],
            &[],
            false,
            vec![
                ov("culture.gouv.fr", false, true, true),
                ov("musees.culture.gouv.fr", true, true, false),
                ov("sport.gouv.fr", true, false, false),
            ],
        );
        let full = Requirements {
            dkim: true,
            spf: true,
            iprev: false,
            ..Requirements::strict()
        };
        let rows: &[(&str, Requirements)] = &[
            ("interieur.gouv.fr", full),
            (
                "culture.gouv.fr",
                Requirements {
                    dkim: false,
                    spf: true,
                    iprev: true,
                    ..Requirements::strict()
                },
            ),
            (
                "x.culture.gouv.fr",
                Requirements {
                    dkim: false,
                    spf: true,
                    iprev: true,
                    ..Requirements::strict()
                },
            ),
            ("musees.culture.gouv.fr", full),
            ("a.musees.culture.gouv.fr", full),
            (
                "sport.gouv.fr",
                Requirements {
                    dkim: true,
                    spf: false,
                    iprev: false,
                    ..Requirements::strict()
                },
            ),
            ("transport.gouv.fr", full),
            ("evilculture.gouv.fr", full),
        ];
        for (name, want) in rows {
            assert_eq!(p.requirements(&d(name)), *want, "{name}");
        }
    }

    #[test]
    fn global_iprev_applies_without_override() {
        let p = policy(&["gouv.fr"], &[], true, Vec::new());
        assert_eq!(
            p.requirements(&d("interieur.gouv.fr")),
            Requirements {
                dkim: true,
                spf: true,
                iprev: true,
                ..Requirements::strict()
            }
        );
    }

    #[test]
    fn no_dkim_forces_spf_and_iprev_even_if_override_is_unvalidated() {
        let p = policy(
            &["gouv.fr"],
            &[],
            false,
            vec![ov("culture.gouv.fr", false, false, false)],
        );
        assert_eq!(
            p.requirements(&d("culture.gouv.fr")),
            Requirements {
                dkim: false,
                spf: true,
                iprev: true,
                ..Requirements::strict()
            }
        );
    }

    #[test]
    fn requires_dnssec_follows_the_most_specific_override() {
        let strict = DomainOverride {
            require_dnssec: true,
            ..ov("culture.gouv.fr", true, true, false)
        };
        // A more specific override without the flag turns it off for its subtree.
        let lax = ov("musees.culture.gouv.fr", true, true, false);
        let p = policy(&["gouv.fr"], &[], false, vec![strict, lax]);
        let table = [
            ("culture.gouv.fr", true),
            ("archives.culture.gouv.fr", true),
            ("musees.culture.gouv.fr", false),
            ("louvre.musees.culture.gouv.fr", false),
            ("interieur.gouv.fr", false),
            ("agriculture.gouv.fr", false),
        ];
        for (domain, want) in table {
            assert_eq!(p.requires_dnssec(&d(domain)), want, "{domain}");
        }
    }
}
