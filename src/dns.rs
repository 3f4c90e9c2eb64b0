//! The DNS resolver every verification uses: mail-auth's `MessageAuthenticator` over hickory,
//! built from `[dns]`.
//!
//! Decisions:
//! - **Cache.** hickory's own response cache is the one cache: bounded by `dns.cache_size`
//!   responses, each kept for its TTL (negative answers for the SOA minimum). mail-auth's
//!   optional `ResolverCache` layer is not used, so SPF, DKIM, iprev and the key-size lookup
//!   ([`txt_lookup`]) all read the same cache and never keep a record past its TTL.
//! - **No hosts file.** `/etc/hosts` must never answer for a sender domain.
//! - **Timeouts.** `dns.timeout` bounds ONE query: each try waits that long for its answer,
//!   and a query that got none is tried once more ([`QUERY_RETRIES`]), so one lost UDP
//!   datagram does not fail a check. `dns.check_timeout` bounds each whole check (SPF with
//!   its includes, the DKIM key lookups, iprev), however many queries it makes in a row: a
//!   slow resolver that answers each query within `dns.timeout` confirms as long as the
//!   check fits `dns.check_timeout`; a server that never answers costs at most
//!   `dns.check_timeout` per check, and ends in a temporary error (4xx), never in "none".
//! - **Errors.** A timeout, SERVFAIL, REFUSED or a DNSSEC-bogus answer is temporary
//!   ([`LookupError::Temporary`]; mail-auth reports it as TempError); only NXDOMAIN / NODATA
//!   mean "no record". A CNAME chain that comes back to a name it passed (RFC 1034 §3.6.2:
//!   "CNAME loops should be signalled as an error") is temporary too, as the SERVFAIL a
//!   recursive resolver gives for it: the key or record was never reached, so "none" would
//!   be a wrong permanent refusal.
//! - **Malformed answers.** hickory 0.26 drops a UDP answer from the wrong address or with
//!   the wrong ID, or for another question, and keeps waiting; but a datagram with the right
//!   address and ID that does not parse ends the query with an error
//!   (`udp_client_stream.rs`, `DnsResponse::from_buffer(..)?`; upstream's choice in
//!   hickory-dns PR #3499, "yield them to the caller"), before the genuine answer can
//!   arrive. That error is temporary here, so the verdict is a 4xx, never a 5xx; a
//!   spoofer able to match the ID and port can delay a confirmation, not refuse it. A temporary fault must end in a 4xx, never in "none"/"fail" (SPEC I5).
//! - **DNSSEC.** `dns.dnssec = true` turns on hickory's validation (`ResolverOpts::validate`)
//!   anchored on `dns.trust_anchor` (its DNSKEYs, given to the resolver builder as
//!   `TrustAnchors`) or, without one, on the root keys built into hickory. Every answer then
//!   carries a proof, which [`txt_lookup_proved`] reports as a [`Dnssec`]:
//!   - secure: the chain from an anchor checks out;
//!   - insecure: a validated "no DS" proves the zone unsigned; the answer is used (the
//!     verifier refuses it only for a domain with `require_dnssec`);
//!   - bogus: a bad or expired signature, a missing RRSIG in a signed zone, a broken chain;
//!     hickory answers `DnssecBogus` instead of records, so the lookup is an error, and
//!     temporary: mail-auth's SPF and DKIM see the same error and report TempError.
//!
//!   A CNAME (a Microsoft 365 DKIM selector points into the tenant's zone) is validated link
//!   by link: the answer holds the CNAME and the target's records, each with its own proof,
//!   and the weakest proof is the answer's.
//! - **Trust anchor file format**: DNSKEY or DS records (`config::anchor`). hickory 0.26
//!   anchors on DNSKEYs only, so DS lines are turned into the keys they vouch for before the
//!   resolver is built ([`resolve_ds_anchors`], at start and on reload; `ds_anchor`).
//!   `ResolverOpts::trust_anchor` (a path) only switches validation on in 0.26: the builder
//!   never reads that file, so the keys go through `with_trust_anchor`. The anchor replaces
//!   the built-in root keys; a non-root DNSKEY anchor must list every DNSKEY of its zone
//!   (else hickory asks the zone's parent for a DS, which fails past the anchor).
//! - **Default anchor**: with `dns.dnssec = true` and no `dns.trust_anchor`, hickory's
//!   bundled root keys (`TrustAnchors::default()`): KSK-2017 (key tag 20326) and KSK-2024
//!   (key tag 38696), both RSASHA256; pinned by a unit test below.
//! - hickory answers `localhost.` and `*.127.in-addr.arpa` itself without asking the server;
//!   this matters only for tests on loopback (the reverse of 127.0.0.x is always `localhost.`).

use std::net::SocketAddr;
use std::sync::Arc;

use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::config::{
    NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
use mail_auth::hickory_resolver::net::{DnsError, NetError};
use mail_auth::hickory_resolver::proto::dnssec::{
    Algorithm, DnssecSummary, Proof, PublicKeyBuf, TrustAnchors,
};
use mail_auth::hickory_resolver::proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::config::{DnsConfig, TrustAnchor};

mod ds_anchor;
pub use ds_anchor::{FETCH_LIMIT, resolve as resolve_ds_anchors};

/// The resolver could not be built (system configuration unreadable, bad options).
#[derive(Debug, thiserror::Error)]
#[error("DNS resolver setup failed: {0}")]
pub struct DnsSetupError(String);

/// Build the authenticator from `[dns]`. Empty `nameservers` = the system resolver
/// (`/etc/resolv.conf`), with our options on top of it.
pub fn build(cfg: &DnsConfig) -> Result<MessageAuthenticator, DnsSetupError> {
    let config = if cfg.nameservers.is_empty() {
        let (config, _opts) = mail_auth::hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| DnsSetupError(e.to_string()))?;
        config
    } else {
        ResolverConfig::from_name_servers(cfg.nameservers.iter().map(name_server).collect())
    };
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options(cfg));
    if cfg.dnssec
        && let Some(anchor) = &cfg.trust_anchor
    {
        builder = builder.with_trust_anchor(Arc::new(trust_anchors(anchor)?));
    }
    let resolver = builder.build().map_err(|e| DnsSetupError(e.to_string()))?;
    Ok(MessageAuthenticator(resolver))
}

/// hickory's anchor set from the checked file: each key under its own zone name.
fn trust_anchors(anchor: &TrustAnchor) -> Result<TrustAnchors, DnsSetupError> {
    if let Some(ds) = anchor.ds.first() {
        // A caller that skipped `resolve_ds_anchors` would otherwise validate against
        // fewer anchors than the file names.
        return Err(DnsSetupError(format!(
            "dns.trust_anchor: {}: DS for {} not yet matched to the zone's keys",
            ds.at, ds.zone
        )));
    }
    let mut set = TrustAnchors::empty();
    for key in &anchor.keys {
        let name = Name::from_ascii(&key.zone)
            .map_err(|e| DnsSetupError(format!("trust anchor {}: {e}", key.zone)))?;
        let public = PublicKeyBuf::new(key.public_key.clone(), Algorithm::from_u8(key.algorithm));
        set.insert_with_name(&public, LowerName::from(name));
    }
    Ok(set)
}

/// How often a query that got no answer within `dns.timeout` is sent again.
pub const QUERY_RETRIES: usize = 1;

/// The resolver options derived from `[dns]` (see the module documentation).
pub fn options(cfg: &DnsConfig) -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.timeout = cfg.timeout;
    // hickory's `attempts` counts the tries after the first.
    opts.attempts = QUERY_RETRIES;
    opts.cache_size = u64::try_from(cfg.cache_size).unwrap_or(u64::MAX);
    opts.use_hosts_file = ResolveHosts::Never;
    opts.validate = cfg.dnssec;
    // Search domains must never turn `example` into `example.<local domain>`.
    opts.ndots = 0;
    opts
}

/// One configured server, UDP and TCP on the configured port.
fn name_server(addr: &SocketAddr) -> NameServerConfig {
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    for conn in &mut ns.connections {
        conn.port = addr.port();
    }
    ns
}

/// Why a lookup gave no records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// NXDOMAIN or no record of the type: a definite answer.
    NotFound,
    /// Timeout, SERVFAIL, refused, bogus, malformed name: ask again later.
    Temporary,
}

pub use crate::policy::Dnssec;

/// A TXT lookup and what DNSSEC said about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proved {
    pub records: Result<Vec<Vec<u8>>, LookupError>,
    pub dnssec: Dnssec,
}

/// TXT lookup through the shared cache; each record's strings concatenated (RFC 7208 §3.3,
/// RFC 6376 §3.6.2.2).
pub async fn txt_lookup(
    auth: &MessageAuthenticator,
    name: &str,
) -> Result<Vec<Vec<u8>>, LookupError> {
    txt_lookup_proved(auth, name).await.records
}

/// [`txt_lookup`] with the DNSSEC proof of the answer (of the negative answer for NXDOMAIN /
/// NODATA). A bogus answer is a temporary error with `Dnssec::Bogus`.
pub async fn txt_lookup_proved(auth: &MessageAuthenticator, name: &str) -> Proved {
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let Ok(name) = Name::from_str_relaxed(fqdn.as_str()) else {
        return Proved {
            records: Err(LookupError::NotFound),
            dnssec: Dnssec::Unknown,
        };
    };
    let validating = auth.resolver().options().validate;
    match auth.resolver().txt_lookup(name.clone()).await {
        Ok(lookup) => {
            let records: Vec<Vec<u8>> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .flat_map(|s| s.iter().copied())
                            .collect(),
                    ),
                    _ => None,
                })
                .collect();
            Proved {
                records: Ok(records),
                dnssec: proof_of(validating, lookup.answers()),
            }
        }
        Err(err) => {
            let dnssec = error_proof(validating, &err);
            if dnssec == Dnssec::Bogus {
                // The operator's first clue; hickory logs why in its debug and trace logs
                // (`RUST_LOG=info,hickory_net::dnssec=trace`).
                tracing::warn!(name = %fqdn, "DNSSEC validation failed: bogus TXT answer not used");
            }
            let mut records = Err(classify(&err));
            // hickory drops the CNAMEs of an answer that has no record of the type, so a
            // "no record" may be a loop: follow the chain to tell.
            if nodata(&err) && cname_loop_at(auth, &name).await {
                tracing::warn!(name = %fqdn, "CNAME loop: lookup treated as a temporary failure");
                records = Err(LookupError::Temporary);
            }
            Proved { records, dnssec }
        }
    }
}

/// CNAME links [`cname_loop_at`] follows at most (hickory's own chase depth).
const MAX_CNAME_LINKS: usize = 8;

/// A NOERROR answer with no record of the type asked (NODATA): what a CNAME loop looks like
/// once hickory has dropped the CNAMEs.
fn nodata(err: &NetError) -> bool {
    matches!(err, NetError::Dns(DnsError::NoRecordsFound(no))
        if no.response_code == mail_auth::hickory_resolver::proto::op::ResponseCode::NoError)
}

/// Follows the CNAME chain from `name`, one CNAME query per link (at most
/// [`MAX_CNAME_LINKS`]); true when it comes back to a name it passed. Asked only after a
/// NODATA, so a normal lookup costs no extra query; a chain that ends, or a lookup that
/// fails, is no loop.
async fn cname_loop_at(auth: &MessageAuthenticator, name: &Name) -> bool {
    let mut links: Vec<Record> = Vec::new();
    let mut at = name.clone();
    for _ in 0..MAX_CNAME_LINKS {
        let Ok(lookup) = auth.resolver().lookup(at.clone(), RecordType::CNAME).await else {
            return false;
        };
        let Some(link) = lookup
            .answers()
            .iter()
            .find(|r| r.name == at && matches!(r.data, RData::CNAME(_)))
            .cloned()
        else {
            return false;
        };
        if let RData::CNAME(target) = &link.data {
            at = target.0.clone();
        }
        links.push(link);
        if cname_loops(name, &links) {
            return true;
        }
    }
    false
}

/// True when the CNAMEs among `answers`, followed from `name`, come back to a name already
/// passed: a loop, not an answer.
fn cname_loops(name: &Name, answers: &[Record]) -> bool {
    let mut passed = vec![name.clone()];
    // One step per record at most: a longer walk would already have revisited a name.
    for _ in 0..answers.len() {
        let Some(next) = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if passed.last() == Some(&r.name) => Some(target.0.clone()),
            _ => None,
        }) else {
            return false;
        };
        if passed.contains(&next) {
            return true;
        }
        passed.push(next);
    }
    false
}

/// The proof of a set of records (the answer, or the authority section of a negative answer):
/// hickory's own summary, so that a CNAME chain counts at its weakest link.
fn proof_of(validating: bool, records: &[Record]) -> Dnssec {
    if !validating {
        return Dnssec::Off;
    }
    match DnssecSummary::from_records(records.iter()) {
        DnssecSummary::Secure => Dnssec::Secure,
        DnssecSummary::Insecure => Dnssec::Insecure,
        DnssecSummary::Bogus => Dnssec::Bogus,
    }
}

/// The proof carried by a failed lookup.
fn error_proof(validating: bool, err: &NetError) -> Dnssec {
    if !validating {
        return Dnssec::Off;
    }
    match err {
        NetError::Dns(DnsError::DnssecBogus) => Dnssec::Bogus,
        NetError::Dns(DnsError::Nsec { proof, .. }) => match proof {
            Proof::Secure => Dnssec::Secure,
            Proof::Bogus => Dnssec::Bogus,
            _ => Dnssec::Insecure,
        },
        NetError::Dns(DnsError::NoRecordsFound(no)) if classify(err) == LookupError::NotFound => no
            .authorities
            .as_deref()
            .map_or(Dnssec::Insecure, |auth| proof_of(true, auth)),
        _ => Dnssec::Unknown,
    }
}

/// Did DNSSEC validation fail for this lookup (bogus), rather than the network or the server?
pub fn is_bogus(err: &NetError) -> bool {
    error_proof(true, err) == Dnssec::Bogus
}

/// NXDOMAIN/NODATA (except a SERVFAIL carried as "no records"), also when DNSSEC proved it
/// (hickory's `Nsec` error, unless bogus), is definite; all else temporary.
pub fn classify(err: &NetError) -> LookupError {
    match err {
        NetError::Dns(DnsError::Nsec { proof, .. }) if *proof != Proof::Bogus => {
            LookupError::NotFound
        }
        NetError::Dns(DnsError::NoRecordsFound(no)) => {
            if no.response_code == mail_auth::hickory_resolver::proto::op::ResponseCode::ServFail {
                LookupError::Temporary
            } else {
                LookupError::NotFound
            }
        }
        _ => LookupError::Temporary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(nameservers: Vec<SocketAddr>) -> DnsConfig {
        DnsConfig {
            nameservers,
            timeout: Duration::from_millis(700),
            check_timeout: Duration::from_secs(7),
            dnssec: false,
            trust_anchor: None,
            cache_size: 123,
        }
    }

    #[test]
    fn options_follow_config() {
        let opts = options(&cfg(vec![]));
        assert_eq!(opts.timeout, Duration::from_millis(700));
        assert_eq!(opts.attempts, 1);
        assert_eq!(opts.cache_size, 123);
        assert_eq!(opts.use_hosts_file, ResolveHosts::Never);
        assert!(!opts.validate);
        let mut c = cfg(vec![]);
        c.dnssec = true;
        assert!(options(&c).validate);
    }

    #[test]
    fn name_server_keeps_its_port() {
        let addr: SocketAddr = "127.0.0.1:5300".parse().unwrap_or_else(|_| unreachable!());
        let ns = name_server(&addr);
        assert_eq!(ns.ip, addr.ip());
        assert_eq!(ns.connections.len(), 2);
        assert!(ns.connections.iter().all(|c| c.port == 5300));
    }

    #[test]
    fn anchors_are_kept_under_their_zone() {
        let text = "gouv.fr.\tIN\tDNSKEY\t257 3 13 slIT4ZvhSKCmb6tFpwRDNtsSpp0oOBATyh/Yd84DMgnaHMFlMqrsBfotgkVk0U/onbQ/sS7KaBmsRaiGPfVWLQ==";
        let anchor = crate::config::TrustAnchor::parse(text).unwrap_or_else(|e| panic!("{e:?}"));
        let set = trust_anchors(&anchor).unwrap_or_else(|e| panic!("{e}"));
        let key = &anchor.keys[0];
        let public = PublicKeyBuf::new(key.public_key.clone(), Algorithm::ECDSAP256SHA256);
        let zone = |z: &str| LowerName::from(Name::from_ascii(z).unwrap_or_else(|e| panic!("{e}")));
        assert!(set.contains_with_name(&public, &zone("gouv.fr.")));
        // Not a root key, and not trusted for another zone.
        assert!(set.is_empty());
        assert!(!set.contains_with_name(&public, &zone("culture.gouv.fr.")));
    }

    #[test]
    fn default_anchors_are_the_root_ksks() {
        use mail_auth::hickory_resolver::proto::dnssec::PublicKey;
        use mail_auth::hickory_resolver::proto::dnssec::rdata::DNSKEY;
        let set = TrustAnchors::default();
        let tags: Vec<(u16, Algorithm)> = (0..set.len())
            .filter_map(|i| set.get(i))
            .map(|k| {
                let key = DNSKEY::with_flags(257, k.clone());
                (key.calculate_key_tag().unwrap_or_default(), k.algorithm())
            })
            .collect();
        assert_eq!(
            tags,
            [(20326, Algorithm::RSASHA256), (38696, Algorithm::RSASHA256)]
        );
    }

    #[test]
    fn unresolved_ds_lines_refuse_to_build() {
        let text =
            ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D";
        let anchor = crate::config::TrustAnchor::parse(text).unwrap_or_else(|e| panic!("{e:?}"));
        let Err(e) = trust_anchors(&anchor) else {
            panic!("built with a DS not matched to keys");
        };
        assert!(e.to_string().contains("line 1: DS for ."), "{e}");
    }

    #[tokio::test]
    async fn builds_with_a_trust_anchor() {
        let addr: SocketAddr = "127.0.0.1:5300".parse().unwrap_or_else(|_| unreachable!());
        let text = "gouv.fr. IN DNSKEY 257 3 13 slIT4ZvhSKCmb6tFpwRDNtsSpp0oOBATyh/Yd84DMgnaHMFlMqrsBfotgkVk0U/onbQ/sS7KaBmsRaiGPfVWLQ==";
        let mut c = cfg(vec![addr]);
        c.dnssec = true;
        c.trust_anchor = crate::config::TrustAnchor::parse(text).ok();
        let auth = build(&c).unwrap_or_else(|e| panic!("{e}"));
        assert!(auth.resolver().options().validate);
    }

    /// CNAME chains: (query name, answer as (owner, target) links, loops?).
    #[test]
    fn cname_loops_are_told_from_chains() {
        type Links = &'static [(&'static str, &'static str)];
        let rows: &[(&str, Links, bool)] = &[
            ("k.example.", &[], false),
            ("k.example.", &[("k.example.", "a.example.")], false),
            (
                "k.example.",
                &[("k.example.", "a.example."), ("a.example.", "b.example.")],
                false,
            ),
            ("k.example.", &[("k.example.", "k.example.")], true),
            (
                "k.example.",
                &[("k.example.", "a.example."), ("a.example.", "K.Example.")],
                true,
            ),
            (
                "k.example.",
                &[
                    ("k.example.", "a.example."),
                    ("a.example.", "b.example."),
                    ("b.example.", "a.example."),
                ],
                true,
            ),
            // A loop elsewhere in the answer, not on the chain from the query name.
            (
                "k.example.",
                &[("x.example.", "y.example."), ("y.example.", "x.example.")],
                false,
            ),
        ];
        let name = |s: &str| Name::from_ascii(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        for (query, links, want) in rows {
            let answers: Vec<Record> = links
                .iter()
                .map(|(owner, target)| {
                    Record::from_rdata(
                        name(owner),
                        0,
                        RData::CNAME(mail_auth::hickory_resolver::proto::rr::rdata::CNAME(name(
                            target,
                        ))),
                    )
                })
                .collect();
            assert_eq!(
                cname_loops(&name(query), &answers),
                *want,
                "{query} {links:?}"
            );
        }
    }

    #[tokio::test]
    async fn builds_with_explicit_servers() {
        let addr: SocketAddr = "127.0.0.1:5300".parse().unwrap_or_else(|_| unreachable!());
        let auth = build(&cfg(vec![addr]));
        assert!(auth.is_ok());
    }
}
