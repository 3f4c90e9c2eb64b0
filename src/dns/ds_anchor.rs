//! DS lines of `dns.trust_anchor` turned into the DNSKEYs they vouch for, because
//! hickory-resolver 0.26 anchors on DNSKEYs only (`TrustAnchors` has no DS form).
//!
//! For each zone named by a DS line, at start and on every reload:
//! 1. its DNSKEY RRset is fetched with its RRSIGs (DO bit) through the configured servers
//!    (or the system resolver), without validation: the anchor is what validation rests on;
//! 2. the keys a DS line matches are kept: same algorithm and key tag, and the DS digest of
//!    the key (hickory's `DS::covers`, ring's SHA-256/384) equal to the line's; a revoked key
//!    or one without the zone-key flag never matches;
//! 3. the RRset must be signed by one of those keys: an RRSIG over DNSKEY by the zone, of the
//!    key's tag and algorithm, inside its validity period (RFC 4034 §3.1.5, serial
//!    arithmetic), verified by hickory's `Verifier::verify_rrsig`. No crypto is written here.
//!
//! Decisions where the issue is silent:
//! - **What becomes an anchor.** For the root, the matched keys only: hickory never asks a
//!   parent about the root, and a root ZSK rollover then needs nothing from us. For any
//!   other zone, every key of the authenticated RRset: hickory trusts a non-root DNSKEY set
//!   only when all its keys are anchors (else it asks the parent for a DS, which cannot be
//!   validated past the anchor). The cost: when such a zone adds a key, answers turn bogus
//!   (451, never a pass) until the next reload (SIGHUP) fetches the new set.
//! - **Resolver down, or no key matches: the start (or the reload) is refused**, with the
//!   DS line's `file:line`. A daemon that starts anyway would answer every confirmation with
//!   a 451; refusing says why at once, and systemd's `Restart=on-failure` tries again. A
//!   refused reload keeps the running configuration and its anchors.
//! - **Bounded.** The fetch of one zone's keys gets at most [`FETCH_LIMIT`] (or
//!   `dns.check_timeout` if shorter), well under the unit's `WatchdogSec=30s`, since a reload
//!   runs in the loop that pings the watchdog.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mail_auth::hickory_resolver::config::ResolverConfig;
use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
use mail_auth::hickory_resolver::net::xfer::{DnsHandle, FirstAnswer};
use mail_auth::hickory_resolver::proto::dnssec::rdata::{DNSKEY, DNSSECRData, DS, RRSIG};
use mail_auth::hickory_resolver::proto::dnssec::{Algorithm, DigestType, PublicKey, Verifier};
use mail_auth::hickory_resolver::proto::op::{DnsRequestOptions, Query, ResponseCode};
use mail_auth::hickory_resolver::proto::rr::{
    DNSClass, LowerName, Name, RData, Record, RecordType, SerialNumber,
};
use mail_auth::hickory_resolver::{NameServerPool, PoolContext, TlsConfig};

use super::{DnsSetupError, name_server, options};
use crate::config::{AnchorDs, AnchorKey, DnsConfig};

/// The longest wait for one zone's DNSKEY RRset.
pub const FETCH_LIMIT: Duration = Duration::from_secs(10);

/// The EDNS payload asked for: the DNS flag day 2020 size; a larger answer (the root's
/// DNSKEY RRset with its RRSIG) comes over TCP, which the pool falls back to on truncation.
const PAYLOAD: u16 = 1232;

/// Replace the DS lines of `cfg.trust_anchor` by the keys they vouch for (see the module
/// documentation). Nothing to do without validation, without a file or without DS lines.
pub async fn resolve(cfg: &mut DnsConfig) -> Result<(), DnsSetupError> {
    let pending = match &cfg.trust_anchor {
        Some(anchor) if cfg.dnssec && !anchor.ds.is_empty() => anchor.ds.clone(),
        _ => return Ok(()),
    };
    let pool = pool(cfg)?;
    let limit = FETCH_LIMIT.min(cfg.check_timeout);
    let mut zones: BTreeMap<String, Vec<AnchorDs>> = BTreeMap::new();
    for ds in pending {
        zones.entry(ds.zone.clone()).or_default().push(ds);
    }
    let mut keys = Vec::new();
    for (zone, lines) in &zones {
        let at = lines.first().map(|d| d.at.as_str()).unwrap_or_default();
        let fail =
            |why: String| DnsSetupError(format!("dns.trust_anchor: {at}: DS for {zone}: {why}"));
        let name = Name::from_ascii(zone).map_err(|e| fail(e.to_string()))?;
        let records = tokio::time::timeout(limit, fetch(&pool, &name))
            .await
            .map_err(|_| fail(format!("no answer for its DNSKEY records within {limit:?}")))?
            .map_err(fail)?;
        keys.extend(vouched(&name, zone, lines, &records, unix_now()).map_err(fail)?);
        tracing::info!(zone = %zone, keys = keys.len(), "DS trust anchor matched the zone's DNSKEYs");
    }
    if let Some(anchor) = &mut cfg.trust_anchor {
        anchor.keys.extend(keys);
        anchor.ds.clear();
    }
    Ok(())
}

/// A pool over the configured servers (or the system's), with the daemon's options but no
/// validation: it fetches what validation will rest on.
fn pool(cfg: &DnsConfig) -> Result<NameServerPool<TokioRuntimeProvider>, DnsSetupError> {
    let config = if cfg.nameservers.is_empty() {
        let (config, _opts) = mail_auth::hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| DnsSetupError(e.to_string()))?;
        config
    } else {
        ResolverConfig::from_name_servers(cfg.nameservers.iter().map(name_server).collect())
    };
    let mut opts = options(cfg);
    opts.validate = false;
    let tls = TlsConfig::new().map_err(|e| DnsSetupError(e.to_string()))?;
    Ok(NameServerPool::from_config(
        config.name_servers().iter().cloned(),
        Arc::new(PoolContext::new(opts, tls)),
        TokioRuntimeProvider::default(),
    ))
}

/// The answer records to `zone DNSKEY`, RRSIGs included.
async fn fetch(
    pool: &NameServerPool<TokioRuntimeProvider>,
    zone: &Name,
) -> Result<Vec<Record>, String> {
    let mut request = DnsRequestOptions::default();
    request.use_edns = true;
    request.edns_set_dnssec_ok = true;
    request.edns_payload_len = PAYLOAD;
    request.recursion_desired = true;
    let query = Query::query(zone.clone(), RecordType::DNSKEY);
    let response = pool
        .lookup(query, request)
        .first_answer()
        .await
        .map_err(|e| format!("its DNSKEY records could not be fetched ({e})"))?;
    let code = response.metadata.response_code;
    if code != ResponseCode::NoError {
        return Err(format!("its DNSKEY query was answered {code}"));
    }
    Ok(response.answers.clone())
}

/// The anchors `lines` (the DS lines of `zone`) make of the fetched `records`, or why none.
fn vouched(
    name: &Name,
    zone: &str,
    lines: &[AnchorDs],
    records: &[Record],
    now: u32,
) -> Result<Vec<AnchorKey>, String> {
    let owner = LowerName::from(name);
    let at_zone = |r: &&Record| LowerName::from(&r.name) == owner;
    let key_records: Vec<&Record> = records
        .iter()
        .filter(at_zone)
        .filter(|r| matches!(r.data, RData::DNSSEC(DNSSECRData::DNSKEY(_))))
        .collect();
    let keys: Vec<(&DNSKEY, u16)> = key_records
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(k)) => Some((k, k.calculate_key_tag().ok()?)),
            _ => None,
        })
        .collect();
    if keys.is_empty() {
        return Err(
            "the zone publishes no DNSKEY record (is it signed, and is this its apex?)".into(),
        );
    }
    let matched: Vec<(&DNSKEY, u16)> = keys
        .iter()
        .copied()
        .filter(|(key, tag)| lines.iter().any(|ds| covers(name, ds, key, *tag)))
        .collect();
    if matched.is_empty() {
        let tags: Vec<String> = keys.iter().map(|(_, t)| t.to_string()).collect();
        let want: Vec<String> = lines.iter().map(|d| d.key_tag.to_string()).collect();
        return Err(format!(
            "matches none of the {} DNSKEY records {zone} publishes (key tags {}; the DS names {}): \
             a wrong digest, or the zone changed its keys",
            keys.len(),
            tags.join(", "),
            want.join(", ")
        ));
    }
    let sigs: Vec<&RRSIG> = records
        .iter()
        .filter(at_zone)
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::RRSIG(s))
                if s.input().type_covered == RecordType::DNSKEY =>
            {
                Some(s)
            }
            _ => None,
        })
        .collect();
    let signed = matched.iter().any(|(key, tag)| {
        sigs.iter().any(|sig| {
            let input = sig.input();
            input.key_tag == *tag
                && input.algorithm == key.algorithm()
                && LowerName::from(&input.signer_name) == owner
                && within(input.sig_inception, input.sig_expiration, now)
                && key
                    .verify_rrsig(name, DNSClass::IN, sig, key_records.iter().copied())
                    .is_ok()
        })
    });
    if !signed {
        return Err(format!(
            "the DNSKEY records of {zone} carry no valid, unexpired signature by the key the DS \
             names ({} RRSIG over them): the chain cannot start there",
            sigs.len()
        ));
    }
    let trusted = if name.is_root() { matched } else { keys };
    Ok(trusted
        .into_iter()
        .map(|(key, _)| AnchorKey {
            zone: zone.to_owned(),
            flags: key.flags(),
            algorithm: u8::from(key.algorithm()),
            public_key: key.public_key().public_bytes().to_vec(),
        })
        .collect())
}

/// Does the DS line vouch for this key? Revoked keys and non-zone keys never match.
fn covers(name: &Name, line: &AnchorDs, key: &DNSKEY, tag: u16) -> bool {
    let algorithm = Algorithm::from_u8(line.algorithm);
    if key.revoke() || line.key_tag != tag || key.algorithm() != algorithm {
        return false;
    }
    let ds = DS::new(
        line.key_tag,
        algorithm,
        DigestType::from(line.digest_type),
        line.digest.clone(),
    );
    ds.covers(name, key).unwrap_or(false)
}

/// RFC 4034 §3.1.5: inception ≤ now ≤ expiration, in serial number arithmetic (RFC 1982).
fn within(inception: SerialNumber, expiration: SerialNumber, now: u32) -> bool {
    let now = SerialNumber::new(now);
    inception <= now && now <= expiration
}

/// Seconds since 1970 modulo 2³², as RRSIG times are (RFC 4034 §3.1.5).
fn unix_now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs % (1 << 32)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_window_in_serial_arithmetic() {
        // (inception, expiration, now, inside)
        let table: &[(u32, u32, u32, bool)] = &[
            (100, 200, 150, true),
            (100, 200, 100, true),
            (100, 200, 200, true),
            (100, 200, 99, false),
            (100, 200, 201, false),
            // Across the 2³² wrap (year 2106): still inside.
            (u32::MAX - 10, 20, 5, true),
            (u32::MAX - 10, 20, 30, false),
        ];
        for &(inception, expiration, now, inside) in table {
            assert_eq!(
                within(
                    SerialNumber::new(inception),
                    SerialNumber::new(expiration),
                    now
                ),
                inside,
                "{inception}..{expiration} at {now}"
            );
        }
    }
}
