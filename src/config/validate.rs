//! From [`RawConfig`] to [`Config`], one section at a time: every value parsed, every limit
//! checked against its range, every problem collected (an operator fixes them all in one go,
//! not one per run). The checkers of single values live in `check.rs`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::check::{Check, check_override, is_selector, to_u32, to_usize};
use super::error::KeyPath;
use super::raw::{
    RawAlignment, RawConfig, RawConfirm, RawDns, RawEnvelopeTag, RawOutbound, RawPolicy, RawSmtp,
};
use super::{
    Alignment, ApiConfig, Config, ConfirmConfig, DnsConfig, DomainOverride, OutboundConfig,
    OutboundDkim, OutboundTarget, PolicyConfig, SmtpConfig, StoreConfig, TlsConfig, TrustAnchor,
};
use crate::address::{EnvelopeTag, Mailbox, ParseOptions};

mod siem;
mod store;

/// Characters `policy.local_part_extra_chars` may add: RFC 5322 §3.2.3 atext minus what the
/// strict parser refuses on purpose — `%` and `!` (old source routing), `'` and `` ` ``
/// (quote-like), `{` `}` (bracket-like). `@`, quotes, brackets and specials are not atext.
pub const ALLOWED_EXTRA_CHARS: &str = "#$&*/=?^|~";

/// Inclusive range of `smtp.max_message_bytes`: 1 KiB .. 64 MiB.
const MESSAGE_BYTES: (u64, u64) = (1024, 64 * 1024 * 1024);
/// Upper end of `smtp.max_buffered_bytes` (1 TiB): a bound on a typo, not on a machine. The
/// lower end is `smtp.max_message_bytes`: a smaller budget could never hold one full message.
const MAX_BUFFERED_BYTES: u64 = 1 << 40;
/// RFC 8301 §3.2: verifiers MUST NOT accept RSA keys under 1024 bits; 8192 bounds CPU.
const RSA_BITS: (u64, u64) = (1024, 8192);
/// Longest `confirm.local_prefix`: the token and `+` must still fit in 64 octets.
const MAX_PREFIX_LEN: usize = 16;
/// Longest `confirm.service_name`, written into a Subject line.
const MAX_SERVICE_NAME_LEN: usize = 100;

/// Validate the raw file. `Err` carries every problem found, each with its key.
pub fn validate(raw: RawConfig) -> Result<Config, Vec<(KeyPath, String)>> {
    let mut c = Check::default();
    let (policy, opts) = c.policy(&raw.policy);
    let confirm = c.confirm(&raw.confirm, &opts);
    if let (Some(p), Some(conf)) = (&policy, &confirm) {
        // gatekeeper's own domain signs the challenge mails: trusting it for a ministry
        // would make gatekeeper's signature count as the ministry's.
        for o in &p.domains {
            for (i, d) in o.dkim_domains.iter().enumerate() {
                if d.is_within(&conf.domain) {
                    c.fail(
                        &KeyPath::of(&["policy", "domains", o.domain.as_str(), "dkim_domains"])
                            .index(i),
                        format!(
                            "{:?} is under confirm.domain (gatekeeper's own)",
                            d.as_str()
                        ),
                    );
                }
            }
        }
    }
    let smtp = c.smtp(&raw.smtp, confirm.as_ref(), &opts);
    let dns = c.dns(&raw.dns);
    c.require_dnssec(policy.as_ref(), &dns);
    let store = StoreConfig {
        path: c.path(
            &KeyPath::of(&["store", "path"]),
            raw.store
                .path
                .as_deref()
                .unwrap_or(super::raw::DEFAULT_STORE_PATH),
        ),
        purge_interval: c.duration(
            &KeyPath::of(&["store", "purge_interval"]),
            &raw.store.purge_interval,
            Duration::from_secs(60),
            Duration::from_secs(7 * 86_400),
        ),
        postgres: c.postgres(&raw.store),
    };
    let api_listen = c.socket(&KeyPath::of(&["api", "listen"]), &raw.api.listen);
    let api_token = c.path(&KeyPath::of(&["api", "token_file"]), &raw.api.token_file);
    let outbound = c.outbound(&raw.outbound, &opts);
    let siem = c.siem(&raw.siem);
    let oidc = raw.oidc.as_ref().and_then(|o| c.oidc(o, &opts));
    let webhooks = c.webhooks(&raw.webhook);

    let (Some(smtp), Some(confirm), Some(policy), Some(listen), Some(outbound), Some(siem), true) = (
        smtp,
        confirm,
        policy,
        api_listen,
        outbound,
        siem,
        c.problems.is_empty(),
    ) else {
        return Err(c.problems);
    };
    Ok(Config {
        smtp,
        confirm,
        policy,
        dns,
        store,
        api: ApiConfig {
            listen,
            token_file: api_token,
        },
        outbound,
        siem,
        oidc,
        webhooks,
    })
}

impl Check {
    fn smtp(
        &mut self,
        raw: &RawSmtp,
        confirm: Option<&ConfirmConfig>,
        opts: &ParseOptions,
    ) -> Option<SmtpConfig> {
        let at = KeyPath::of(&["smtp"]);
        let listen = self.sockets(&at.key("listen"), &raw.listen, true);
        // The banner name is checked like a domain: no CR/LF can reach a reply line.
        let hostname = match &raw.hostname {
            Some(name) => self.domain(&at.key("hostname"), name, opts),
            None => confirm.map(|c| c.domain.clone()),
        };
        let max_connections = self.range(
            &at.key("max_connections"),
            raw.max_connections,
            1,
            1_000_000,
        );
        let per_ip = self.range(
            &at.key("max_connections_per_ip"),
            raw.max_connections_per_ip,
            1,
            max_connections.max(1),
        );
        let secs = Duration::from_secs;
        let tls = raw.tls.as_ref().map(|t| TlsConfig {
            certificate: self.path(&at.key("tls").key("certificate"), &t.certificate),
            private_key: self.path(&at.key("tls").key("private_key"), &t.private_key),
            required: t.required,
        });
        let max_message_bytes = self.range(
            &at.key("max_message_bytes"),
            raw.max_message_bytes,
            MESSAGE_BYTES.0,
            MESSAGE_BYTES.1,
        );
        let max_buffered_bytes = self.range(
            &at.key("max_buffered_bytes"),
            raw.max_buffered_bytes,
            max_message_bytes,
            MAX_BUFFERED_BYTES,
        );
        Some(SmtpConfig {
            listen,
            hostname: hostname?.as_str().to_owned(),
            max_message_bytes: to_usize(max_message_bytes),
            max_buffered_bytes: to_usize(max_buffered_bytes),
            max_connections: to_usize(max_connections),
            max_connections_per_ip: to_usize(per_ip),
            command_timeout: self.duration(
                &at.key("command_timeout"),
                &raw.command_timeout,
                secs(1),
                secs(3600),
            ),
            data_timeout: self.duration(
                &at.key("data_timeout"),
                &raw.data_timeout,
                secs(1),
                secs(3600),
            ),
            session_timeout: self.duration(
                &at.key("session_timeout"),
                &raw.session_timeout,
                secs(1),
                secs(86_400),
            ),
            max_errors: to_u32(self.range(&at.key("max_errors"), raw.max_errors, 1, 1000)),
            max_transactions: to_u32(self.range(
                &at.key("max_transactions"),
                raw.max_transactions,
                1,
                1000,
            )),
            shutdown_grace: self.duration(
                &at.key("shutdown_grace"),
                &raw.shutdown_grace,
                Duration::ZERO,
                secs(600),
            ),
            tls,
        })
    }

    fn confirm(&mut self, raw: &RawConfirm, opts: &ParseOptions) -> Option<ConfirmConfig> {
        let at = KeyPath::of(&["confirm"]);
        let domain = self.domain(&at.key("domain"), &raw.domain, opts);
        let prefix = &raw.local_prefix;
        // The prefix is compared with canonical (lower-case) local parts and must not contain
        // the `+` that separates it from the token.
        let prefix_ok = (1..=MAX_PREFIX_LEN).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !prefix_ok {
            self.fail(
                &at.key("local_prefix"),
                format!("{prefix:?}: use 1 to {MAX_PREFIX_LEN} of a-z 0-9 - _"),
            );
        } else if prefix == super::PROBE_PREFIX {
            // Probe addresses (SPEC §10) own that prefix: a confirmation address must never
            // be mistaken for one, nor the reverse.
            self.fail(
                &at.key("local_prefix"),
                format!("{prefix:?} is reserved for probe addresses"),
            );
        }
        let name = &raw.service_name;
        if name.trim().is_empty()
            || name.chars().count() > MAX_SERVICE_NAME_LEN
            || name.chars().any(char::is_control)
        {
            self.fail(
                &at.key("service_name"),
                format!(
                    "must be 1 to {MAX_SERVICE_NAME_LEN} characters without control characters"
                ),
            );
        }
        let minute = Duration::from_secs(60);
        let month = Duration::from_secs(30 * 86_400);
        Some(ConfirmConfig {
            domain: domain?,
            local_prefix: prefix.clone(),
            challenge_ttl: self.duration(
                &at.key("challenge_ttl"),
                &raw.challenge_ttl,
                minute,
                month,
            ),
            max_message_age: self.duration(
                &at.key("max_message_age"),
                &raw.max_message_age,
                minute,
                month,
            ),
            require_reply: raw.require_reply,
            require_session_code: raw.require_session_code,
            max_pending_per_address: to_u32(self.range(
                &at.key("max_pending_per_address"),
                raw.max_pending_per_address,
                1,
                100,
            )),
            max_challenges_per_address_per_hour: to_u32(self.range(
                &at.key("max_challenges_per_address_per_hour"),
                raw.max_challenges_per_address_per_hour,
                1,
                1000,
            )),
            service_name: name.clone(),
        })
    }

    fn policy(&mut self, raw: &RawPolicy) -> (Option<PolicyConfig>, ParseOptions) {
        let at = KeyPath::of(&["policy"]);
        let bad: BTreeSet<char> = raw
            .local_part_extra_chars
            .chars()
            .filter(|ch| !ALLOWED_EXTRA_CHARS.contains(*ch))
            .collect();
        if !bad.is_empty() {
            let bad: String = bad.into_iter().collect();
            self.fail(
                &at.key("local_part_extra_chars"),
                format!(
                    "{bad:?} not allowed: only RFC 5322 atext from {ALLOWED_EXTRA_CHARS:?} \
                     (never % ! @, quotes or brackets)"
                ),
            );
        }
        let opts = super::parse_options(&raw.local_part_extra_chars, raw.allow_idna);
        let allowed = self.domains(&at.key("allowed_domains"), &raw.allowed_domains, &opts);
        if raw.allowed_domains.is_empty() {
            self.fail(
                &at.key("allowed_domains"),
                "must list at least one domain (nobody could confirm)",
            );
        }
        let denied = self.domains(&at.key("denied_domains"), &raw.denied_domains, &opts);
        let networks = self.networks(&at.key("allowed_networks"), &raw.allowed_networks);
        let mut overrides = Vec::new();
        for (name, o) in &raw.domains {
            let here = at.key("domains").key(name);
            let Some(domain) = self.domain(&here, name, &opts) else {
                continue;
            };
            if !allowed.iter().any(|a| domain.is_within(a)) {
                self.fail(
                    &here,
                    "override for a domain outside policy.allowed_domains",
                );
            }
            let lists = (
                o.dkim_domains.as_slice(),
                o.dkim_domains_cross_allowed.as_slice(),
            );
            let (dkim_domains, cross) = self.dkim_domains(&here, &domain, lists, &allowed, &opts);
            let over = DomainOverride {
                domain,
                require_dkim: o.require_dkim,
                require_spf: o.require_spf,
                require_iprev: o.require_iprev.unwrap_or(raw.require_iprev),
                require_dnssec: o.require_dnssec,
                envelope_tag: o.envelope_tag.map(|t| match t {
                    RawEnvelopeTag::Batv => EnvelopeTag::Batv,
                    RawEnvelopeTag::Btv1 => EnvelopeTag::Btv1,
                }),
                dkim_domains,
            };
            if let Err(message) = check_override(&over) {
                self.fail(&here, message);
            }
            overrides.push((here, over, cross));
        }
        // One tenant trusted by two domains: whoever runs it can confirm for both. Allowed
        // only when both overrides state it twice.
        for (i, (here, a, a_cross)) in overrides.iter().enumerate() {
            for (_, b, b_cross) in overrides.iter().skip(i + 1) {
                for d in a.dkim_domains.iter().filter(|d| b.dkim_domains.contains(d)) {
                    if !(a_cross.contains(d) && b_cross.contains(d)) {
                        self.fail(
                            &here.key("dkim_domains"),
                            format!(
                                "{d:?} is also listed for {:?}: state it in \
                                 dkim_domains_cross_allowed of both to trust it for both",
                                b.domain.as_str()
                            ),
                        );
                    }
                }
            }
        }
        let overrides: Vec<DomainOverride> = overrides.into_iter().map(|(_, o, _)| o).collect();
        let bits = self.range(
            &at.key("dkim_min_rsa_bits"),
            raw.dkim_min_rsa_bits,
            RSA_BITS.0,
            RSA_BITS.1,
        );
        let policy = PolicyConfig {
            allowed_domains: allowed,
            denied_domains: denied,
            alignment: match raw.alignment {
                RawAlignment::Strict => Alignment::Strict,
                RawAlignment::Relaxed => Alignment::Relaxed,
            },
            require_iprev: raw.require_iprev,
            dkim_min_rsa_bits: to_u32(bits),
            allowed_networks: networks,
            local_part_extra_chars: raw.local_part_extra_chars.clone(),
            allow_idna: raw.allow_idna,
            domains: overrides,
        };
        (Some(policy), opts)
    }

    fn dns(&mut self, raw: &RawDns) -> DnsConfig {
        let at = KeyPath::of(&["dns"]);
        let mut nameservers = Vec::new();
        for (i, text) in raw.nameservers.iter().enumerate() {
            // An IPv4 address alone means port 53. A bare IPv6 address is refused: `::1:53`
            // is itself a valid IPv6 address, so the reader cannot tell a port from a group.
            let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
                text.parse::<Ipv4Addr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip.into(), 53))
            });
            match parsed {
                Some(addr) => nameservers.push(addr),
                None if text.parse::<IpAddr>().is_ok() => self.fail(
                    &at.key("nameservers").index(i),
                    format!(
                        "{text:?}: write an IPv6 nameserver with brackets and a port, \"[{text}]:53\""
                    ),
                ),
                None => self.fail(
                    &at.key("nameservers").index(i),
                    format!("{text:?} is not \"ip\" or \"ip:port\""),
                ),
            }
        }
        let timeout = self.duration(
            &at.key("timeout"),
            &raw.timeout,
            Duration::from_millis(100),
            Duration::from_secs(60),
        );
        let check_timeout = self.duration(
            &at.key("check_timeout"),
            &raw.check_timeout,
            Duration::from_millis(100),
            Duration::from_secs(300),
        );
        if check_timeout < timeout {
            // A check bound below one query's would cut off an answer arriving in time.
            self.fail(
                &at.key("check_timeout"),
                format!(
                    "{:?} is shorter than dns.timeout ({:?}): a check takes at least one query",
                    raw.check_timeout, raw.timeout
                ),
            );
        }
        DnsConfig {
            nameservers,
            timeout,
            check_timeout,
            dnssec: raw.dnssec,
            trust_anchor: self.trust_anchor(&at.key("trust_anchor"), raw),
            cache_size: to_usize(self.range(&at.key("cache_size"), raw.cache_size, 1, 10_000_000)),
        }
    }

    /// `require_dnssec` in an override means nothing without validation: refused, so that an
    /// operator who asked for signed answers is not silently given unsigned ones.
    fn require_dnssec(&mut self, policy: Option<&PolicyConfig>, dns: &DnsConfig) {
        if dns.dnssec {
            return;
        }
        for o in policy.iter().flat_map(|p| &p.domains) {
            if o.require_dnssec {
                let at = KeyPath::of(&["policy", "domains", o.domain.as_str(), "require_dnssec"]);
                self.fail(
                    &at,
                    "needs dns.dnssec = true (nothing is validated otherwise)",
                );
            }
        }
    }

    /// `dns.trust_anchor`: read now, every bad line reported as `file:line` (see `anchor`).
    fn trust_anchor(&mut self, at: &KeyPath, raw: &RawDns) -> Option<TrustAnchor> {
        let path = raw.trust_anchor.as_deref()?;
        if !raw.dnssec {
            self.fail(
                at,
                "set dns.dnssec = true: a trust anchor without validation would be ignored",
            );
        }
        let path = self.path(at, path);
        match super::anchor::load(&path) {
            Ok(anchor) => Some(anchor),
            Err(problems) => {
                for problem in problems {
                    self.fail(at, problem);
                }
                None
            }
        }
    }

    fn outbound(&mut self, raw: &RawOutbound, opts: &ParseOptions) -> Option<OutboundConfig> {
        let at = KeyPath::of(&["outbound"]);
        let from = if raw.from.chars().any(char::is_control) {
            self.fail(&at.key("from"), "control characters are not allowed");
            None
        } else {
            match Mailbox::parse_header(raw.from.as_bytes(), opts) {
                Ok(mailbox) => Some(mailbox),
                Err(e) => {
                    self.fail(&at.key("from"), format!("not one strict mailbox ({e})"));
                    None
                }
            }
        };
        let target = match (&raw.directory, &raw.relay) {
            (Some(dir), None) => Some(OutboundTarget::Directory(
                self.path(&at.key("directory"), dir),
            )),
            (None, Some(url)) => self.relay(&at.key("relay"), url).map(OutboundTarget::Relay),
            (Some(_), Some(_)) => {
                self.fail(
                    &at.key("relay"),
                    "set exactly one of outbound.directory and outbound.relay, not both",
                );
                None
            }
            (None, None) => {
                self.fail(
                    &at,
                    "set exactly one of outbound.directory and outbound.relay",
                );
                None
            }
        };
        let dkim = match &raw.dkim {
            None => None,
            Some(d) => {
                let here = at.key("dkim");
                let domain = self.domain(&here.key("domain"), &d.domain, opts);
                if !is_selector(&d.selector) {
                    self.fail(
                        &here.key("selector"),
                        format!("{:?} is not a DNS selector", d.selector),
                    );
                }
                if let (Some(domain), Some(from)) = (&domain, &from)
                    && !from.domain().is_within(domain)
                {
                    self.fail(
                        &here.key("domain"),
                        "must be the domain of outbound.from or a parent of it (alignment)",
                    );
                }
                Some(OutboundDkim {
                    domain: domain?,
                    selector: d.selector.clone(),
                    private_key: self.path(&here.key("private_key"), &d.private_key),
                })
            }
        };
        from?;
        Some(OutboundConfig {
            from: raw.from.clone(),
            target: target?,
            dkim,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_chars_never_include_routing_or_quoting() {
        for ch in [
            '%', '!', '@', '"', '\'', '`', '(', ')', '<', '>', '[', ']', '{', '}', '\\',
        ] {
            assert!(!ALLOWED_EXTRA_CHARS.contains(ch), "{ch}");
        }
    }
}
