//! Checkers of single configuration values: each records a problem under the value's key
//! and returns what it could parse, so that validation goes on and reports everything.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::DomainOverride;
use super::duration::{format_duration, parse_duration};
use super::error::KeyPath;
use crate::address::{Domain, ParseOptions};

/// The problems found so far, and small checkers that record one when a value is bad.
#[derive(Default)]
pub(super) struct Check {
    pub(super) problems: Vec<(KeyPath, String)>,
}

impl Check {
    pub(super) fn fail(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.problems.push((path.clone(), message.into()));
    }

    pub(super) fn relay(&mut self, at: &KeyPath, url: &str) -> Option<String> {
        let rest = url
            .strip_prefix("smtp://")
            .or_else(|| url.strip_prefix("smtps://"));
        let ok = rest.is_some_and(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'@' && b != b'/')
        });
        if ok {
            Some(url.to_owned())
        } else {
            self.fail(
                at,
                format!("{url:?} is not smtp://host[:port] or smtps://host[:port]"),
            );
            None
        }
    }

    pub(super) fn networks(&mut self, at: &KeyPath, raw: &[String]) -> Vec<IpNet> {
        let mut out = Vec::new();
        for (i, text) in raw.iter().enumerate() {
            match text.parse::<IpNet>() {
                // Host bits set (`10.0.0.1/8`) is most likely a typo for another network.
                Ok(net) if net.trunc() != net => self.fail(
                    &at.index(i),
                    format!(
                        "{text:?} has host bits set; did you mean \"{}\"?",
                        net.trunc()
                    ),
                ),
                Ok(net) => out.push(net),
                Err(_) => self.fail(&at.index(i), format!("{text:?} is not a CIDR network")),
            }
        }
        out
    }

    pub(super) fn domains(
        &mut self,
        at: &KeyPath,
        raw: &[String],
        opts: &ParseOptions,
    ) -> Vec<Domain> {
        raw.iter()
            .enumerate()
            .filter_map(|(i, d)| self.domain(&at.index(i), d, opts))
            .collect()
    }

    pub(super) fn domain(
        &mut self,
        at: &KeyPath,
        text: &str,
        opts: &ParseOptions,
    ) -> Option<Domain> {
        match Domain::parse(text.as_bytes(), opts) {
            Ok(d) => Some(d),
            Err(e) => {
                self.fail(at, format!("{text:?} is not a valid domain ({e})"));
                None
            }
        }
    }

    /// `[policy.domains."<domain>"] dkim_domains` (SPEC §4 "Microsoft 365 tenants"): strict
    /// domains, each naming one tenant. Refused, because each would widen trust far beyond
    /// what the operator means: a wildcard; a public suffix or a bare TLD (`gouv.fr`, `fr`);
    /// a shared multi-tenant parent (`onmicrosoft.com` itself: every tenant's signatures);
    /// the domain itself (already aligned); a duplicate; and, unless stated again in
    /// `dkim_domains_cross_allowed`, a `d=` under another allowed domain (one ministry's
    /// signatures confirming for another). Returns the entries and the cross-allowed set.
    pub(super) fn dkim_domains(
        &mut self,
        here: &KeyPath,
        domain: &Domain,
        (listed, cross_listed): (&[String], &[String]),
        allowed: &[Domain],
        opts: &ParseOptions,
    ) -> (Vec<Domain>, Vec<Domain>) {
        let at = here.key("dkim_domains");
        let mut out: Vec<Domain> = Vec::new();
        for (i, text) in listed.iter().enumerate() {
            let at = at.index(i);
            if text.contains('*') {
                self.fail(
                    &at,
                    format!("{text:?}: wildcards are not accepted, name the tenant"),
                );
                continue;
            }
            let Some(d) = self.domain(&at, text, opts) else {
                continue;
            };
            if is_public_suffix(&d) {
                self.fail(
                    &at,
                    format!("{text:?} is a public suffix: every domain under it would align"),
                );
            } else if SHARED_SIGNING_PARENTS.contains(&d.as_str()) {
                self.fail(
                    &at,
                    format!("{text:?} is shared by every tenant: name yours (<tenant>.{text})"),
                );
            } else if &d == domain {
                self.fail(
                    &at,
                    format!("{text:?} is the domain itself (already aligned)"),
                );
            } else if out.contains(&d) {
                self.fail(&at, format!("{text:?} is listed twice"));
            } else {
                out.push(d);
            }
        }
        let at = here.key("dkim_domains_cross_allowed");
        let mut cross = Vec::new();
        for (i, text) in cross_listed.iter().enumerate() {
            let Some(d) = self.domain(&at.index(i), text, opts) else {
                continue;
            };
            if !out.contains(&d) {
                self.fail(&at.index(i), format!("{text:?} is not in dkim_domains"));
            } else if cross.contains(&d) {
                self.fail(&at.index(i), format!("{text:?} is listed twice"));
            } else {
                cross.push(d);
            }
        }
        for (i, d) in out.iter().enumerate() {
            let under_other = !d.is_within(domain) && allowed.iter().any(|a| d.is_within(a));
            if under_other && !cross.contains(d) {
                self.fail(
                    &here.key("dkim_domains").index(i),
                    format!(
                        "{:?} is under another allowed domain: its signatures would confirm for {:?}; \
                         if that is meant, state it again in dkim_domains_cross_allowed",
                        d.as_str(),
                        domain.as_str()
                    ),
                );
            }
        }
        (out, cross)
    }

    pub(super) fn sockets(
        &mut self,
        at: &KeyPath,
        raw: &[String],
        non_empty: bool,
    ) -> Vec<SocketAddr> {
        if non_empty && raw.is_empty() {
            self.fail(at, "must list at least one \"ip:port\"");
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (i, text) in raw.iter().enumerate() {
            if let Some(addr) = self.socket(&at.index(i), text) {
                if seen.insert(addr) {
                    out.push(addr);
                } else {
                    self.fail(&at.index(i), format!("{text:?} is listed twice"));
                }
            }
        }
        out
    }

    pub(super) fn socket(&mut self, at: &KeyPath, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.fail(at, format!("{text:?} is not a socket address \"ip:port\""));
                None
            }
        }
    }

    pub(super) fn path(&mut self, at: &KeyPath, text: &str) -> PathBuf {
        if text.is_empty() || text.contains('\0') {
            self.fail(at, "must be a non-empty path");
        }
        PathBuf::from(text)
    }

    pub(super) fn range(&mut self, at: &KeyPath, value: u64, min: u64, max: u64) -> u64 {
        if (min..=max).contains(&value) {
            value
        } else {
            self.fail(at, format!("{value} is out of range {min}..={max}"));
            value.clamp(min, max)
        }
    }

    pub(super) fn duration(
        &mut self,
        at: &KeyPath,
        text: &str,
        min: Duration,
        max: Duration,
    ) -> Duration {
        match parse_duration(text) {
            Ok(d) if (min..=max).contains(&d) => d,
            Ok(d) => {
                self.fail(
                    at,
                    format!(
                        "{text:?} is out of range {}..={}",
                        format_duration(min),
                        format_duration(max)
                    ),
                );
                d.clamp(min, max)
            }
            Err(message) => {
                self.fail(at, message);
                min
            }
        }
    }
}

/// SPEC §4: an override may relax DKIM or SPF for a domain that cannot meet it, never both,
/// and a domain without DKIM must prove itself by SPF and reverse DNS. The domain policy
/// (`DomainPolicy::requirements`) forces SPF and iprev on without DKIM whatever an override says, so a
/// hand-built override cannot weaken it either; here the loader refuses such a table.
pub(super) fn check_override(o: &DomainOverride) -> Result<(), &'static str> {
    if !o.require_dkim && !o.require_spf {
        return Err(
            "an override cannot remove both DKIM and SPF (require_dkim and require_spf both false)",
        );
    }
    if !o.require_dkim && !o.require_iprev {
        return Err(
            "require_dkim = false needs require_iprev = true (SPF pass and reverse DNS carry the proof)",
        );
    }
    Ok(())
}

/// Parents under which anyone can get a signing domain of their own: naming one would trust
/// every tenant. Not all are public suffixes (`onmicrosoft.com` is not in the list psl ships).
const SHARED_SIGNING_PARENTS: &[&str] = &[
    "onmicrosoft.com",
    "onmicrosoft.de",
    "onmicrosoft.us",
    "partner.onmschina.cn",
    "mail.onmicrosoft.com",
];

/// A public suffix (`fr`, `gouv.fr`, `co.uk`) by the Public Suffix List. The pure core (no
/// `daemon` feature, the fuzz build) has no list: a single label is all it can tell.
fn is_public_suffix(d: &Domain) -> bool {
    #[cfg(feature = "daemon")]
    {
        psl::suffix_str(d.as_str()) == Some(d.as_str())
    }
    #[cfg(not(feature = "daemon"))]
    {
        !d.as_str().contains('.')
    }
}

/// A DKIM selector: dot-separated labels of letters, digits and hyphens (RFC 6376 §3.1).
pub(super) fn is_selector(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Ranges above keep every value far below `u32::MAX`.
pub(super) fn to_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Ranges above keep every value far below `usize::MAX` on 32- and 64-bit targets.
pub(super) fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_rules() {
        let opts = ParseOptions::default();
        let Ok(domain) = Domain::parse(b"culture.gouv.fr", &opts) else {
            panic!("test domain refused");
        };
        // (dkim, spf, iprev, accepted)
        let table = [
            (true, true, true, true),
            (true, true, false, true),
            (true, false, false, true),
            (false, true, true, true),
            (false, true, false, false),
            (false, false, true, false),
            (false, false, false, false),
        ];
        for (dkim, spf, iprev, ok) in table {
            let o = DomainOverride {
                domain: domain.clone(),
                require_dkim: dkim,
                require_spf: spf,
                require_iprev: iprev,
                require_dnssec: false,
                envelope_tag: None,
                dkim_domains: Vec::new(),
            };
            assert_eq!(check_override(&o).is_ok(), ok, "{dkim} {spf} {iprev}");
        }
    }

    #[test]
    fn selectors() {
        for s in ["gk2026", "a.b-c", "s1024"] {
            assert!(is_selector(s), "{s}");
        }
        for s in ["", "-a", "a-", "a..b", "a_b", "a b", "a;b"] {
            assert!(!is_selector(s), "{s}");
        }
    }
}
