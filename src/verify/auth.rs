//! The adapter to mail-auth: the one file that knows its API. SPF evaluation, forward-confirmed
//! reverse DNS, DKIM cryptography and the DKIM key record lookup go through here, and come
//! back as the product's own types ([`Spf`], [`Iprev`], [`Crypto`], [`KeyLookup`]), so the
//! orchestration (`verify/mod.rs`) and the rules (`dkim`, `binding`, `policy`) never see a
//! mail-auth type. The resolver itself is built in `dns`.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use mail_auth::common::crypto::Algorithm;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, DkimResult, IprevResult, SpfResult};

use crate::backend::Transaction;
use crate::dns::{self, Dnssec, LookupError};
use crate::policy::{Iprev, Spf};
use crate::verify::dkim::{self, Crypto, KeyLookup, SigInfo};

/// The resolver the checks run on (mail-auth's, over hickory; see `dns`).
pub type Resolver = mail_auth::MessageAuthenticator;

/// The checks mail-auth performs, each SPF and iprev call bounded by `dns.check_timeout`.
pub struct Auth {
    resolver: Resolver,
    timeout: Duration,
}

impl Auth {
    pub fn new(resolver: Resolver, timeout: Duration) -> Self {
        Self { resolver, timeout }
    }

    /// SPF for MAIL FROM (RFC 7208), bounded by `dns.check_timeout`, with the DNSSEC proof of the
    /// MAIL FROM domain's TXT answer (the record the evaluation starts from; what `include`
    /// and `redirect` reach is mail-auth's, and a bogus answer there is its TempError).
    ///
    /// mail-auth evaluates the first `v=spf1` record it finds where RFC 7208 §4.5 makes two
    /// records a `permerror` (so its answer would depend on the order the DNS server lists
    /// them in), and reads a control character as a term separator where §4.6.1 allows
    /// spaces only. Both are checked here on the MAIL FROM domain's own record, through the
    /// same cache; records reached by `include`/`redirect` remain mail-auth's reading.
    pub async fn spf(&self, tx: &Transaction, host: &str) -> (Spf, Dnssec) {
        let helo = tx.session.helo.as_deref().unwrap_or("unknown");
        // The MAIL FROM identity as sent (RFC 7208 §2.4): with its envelope tag, if one was
        // removed; the domain, the only part most records use, is the same either way.
        let sender = tx
            .mail_from_tagged
            .clone()
            .unwrap_or_else(|| tx.mail_from.to_string());
        let params = SpfParameters::verify_mail_from(tx.session.client_ip, helo, host, &sender);
        let check = async {
            let result = match self.resolver.verify_spf(params).await.result() {
                SpfResult::Pass => Spf::Pass,
                SpfResult::Fail => Spf::Fail,
                SpfResult::SoftFail => Spf::SoftFail,
                SpfResult::Neutral => Spf::Neutral,
                SpfResult::None => Spf::None,
                SpfResult::PermError => Spf::PermError,
                SpfResult::TempError => Spf::TempError,
            };
            // Looked up whatever mail-auth said (the cache answers): a TempError may be a
            // bogus answer, which only the proof tells apart.
            let own = dns::txt_lookup_proved(&self.resolver, tx.mail_from.domain().as_str()).await;
            // "none" needs a definite "no record": mail-auth reads a CNAME loop as none,
            // our own lookup as the fault it is (`dns::txt_lookup_proved`).
            if result == Spf::None && own.records == Err(LookupError::Temporary) {
                return (Spf::TempError, own.dnssec);
            }
            if matches!(result, Spf::TempError | Spf::None) {
                return (result, own.dnssec);
            }
            let spf = match own.records {
                Ok(records) => {
                    let spf: Vec<&Vec<u8>> = records.iter().filter(|r| is_spf_record(r)).collect();
                    let malformed = spf.iter().any(|r| r.iter().any(u8::is_ascii_control));
                    if spf.len() > 1 || malformed {
                        Spf::PermError
                    } else {
                        result
                    }
                }
                // The pass cannot be confirmed now; a refusal stands whatever the record.
                Err(LookupError::Temporary) if result == Spf::Pass => Spf::TempError,
                Err(_) => result,
            };
            (spf, own.dnssec)
        };
        tokio::time::timeout(self.timeout, check)
            .await
            .unwrap_or((Spf::TempError, Dnssec::Unknown))
    }

    /// Forward-confirmed reverse DNS, bounded by `dns.check_timeout`.
    pub async fn iprev(&self, ip: IpAddr) -> Iprev {
        let Ok(out) = tokio::time::timeout(self.timeout, self.resolver.verify_iprev(ip)).await
        else {
            return Iprev::TempError;
        };
        match out.result() {
            IprevResult::Pass => Iprev::Pass,
            IprevResult::TempError(_) => Iprev::TempError,
            IprevResult::Fail(_) | IprevResult::PermError(_) | IprevResult::None => Iprev::Fail,
        }
    }

    /// mail-auth's cryptographic verification of the signatures we consider (by `b=`) whose
    /// `d=` (as mail-auth reads it) satisfies `keep`.
    pub async fn crypto(
        &self,
        message: &[u8],
        considered: &[Vec<u8>],
        keep: impl Fn(&str) -> bool,
    ) -> Vec<CryptoResult> {
        let Some(mut am) = AuthenticatedMessage::parse(message) else {
            return Vec::new();
        };
        am.dkim_headers.retain(|h| {
            considered.contains(&h.header.b)
                && h.header.h.len() <= dkim::MAX_SIGNED_NAMES
                && keep(&h.header.d)
        });
        am.errors.clear();
        self.resolver
            .verify_dkim(&am)
            .await
            .iter()
            .filter_map(|out| {
                let sig = out.signature()?;
                let crypto = match out.result() {
                    DkimResult::Pass => Crypto::Pass,
                    DkimResult::TempError(_) => Crypto::TempError,
                    _ => Crypto::Fail,
                };
                Some(CryptoResult {
                    b: sig.b.clone(),
                    d: sig.d.to_ascii_lowercase(),
                    s: sig.s.to_ascii_lowercase(),
                    h: sig
                        .h
                        .iter()
                        .map(|h| h.trim().to_ascii_lowercase())
                        .collect(),
                    algorithm: match sig.a {
                        Algorithm::RsaSha1 => "rsa-sha1",
                        Algorithm::RsaSha256 => "rsa-sha256",
                        Algorithm::Ed25519Sha256 => "ed25519-sha256",
                    },
                    t: sig.t,
                    x: sig.x,
                    crypto,
                })
            })
            .collect()
    }

    /// The key record of a signature, through the shared resolver cache, with the DNSSEC
    /// proof of its answer (a CNAME to another zone counts at the weakest link of the chain).
    pub fn key(&self, sig: &SigInfo) -> impl Future<Output = (KeyLookup, Dnssec)> + Send + '_ {
        let name = match &sig.domain {
            Some(d) => format!("{}._domainkey.{}", sig.selector, d.as_str()),
            None => String::new(),
        };
        async move {
            if name.is_empty() || sig_selector_invalid(&name) {
                return (KeyLookup::Missing, Dnssec::Skipped);
            }
            let proved = dns::txt_lookup_proved(&self.resolver, &name).await;
            let key = match proved.records {
                // Several key records at one selector (RFC 6376 §3.6.2.2 leaves the result
                // undefined): which one mail-auth used and which one we measure could differ,
                // e.g. a factorable 512-bit key next to a 2048-bit one. Refused.
                Ok(records) => {
                    let mut keys = records.iter().filter_map(|r| dkim::KeyRecord::parse(r));
                    match (keys.next(), keys.next()) {
                        (Some(key), None) => KeyLookup::Found(key),
                        _ => KeyLookup::Missing,
                    }
                }
                Err(LookupError::NotFound) => KeyLookup::Missing,
                Err(LookupError::Temporary) => KeyLookup::TempError,
            };
            (key, proved.dnssec)
        }
    }
}

/// What mail-auth read in a signature and what it concluded (compared field by field with
/// our own reading in [`crypto_of`]).
pub struct CryptoResult {
    b: Vec<u8>,
    d: String,
    s: String,
    h: Vec<String>,
    algorithm: &'static str,
    t: u64,
    x: u64,
    crypto: Crypto,
}

/// The cryptographic result for our reading of a signature: found by its `b=`, and only if
/// mail-auth read `d=`, `s=`, `a=`, `h=`, `t=`, `x=` exactly as we did — a field two parsers
/// read differently is a failed signature (what is signed must not depend on who reads it).
/// Several fields with the same `b=` (a copied signature): the worst result.
pub fn crypto_of(results: &[CryptoResult], sig: &SigInfo) -> Crypto {
    let Ok(b) = data_encoding::BASE64.decode(sig.b.as_bytes()) else {
        return Crypto::Fail;
    };
    let mut found: Option<Crypto> = None;
    for r in results.iter().filter(|r| r.b == b) {
        // mail-auth writes an absent `t=` / `x=` as 0.
        let agrees = r.d == sig.d_raw.to_ascii_lowercase()
            && r.s == sig.selector.to_ascii_lowercase()
            && r.algorithm == sig.algorithm
            && r.h == sig.h
            && r.t == sig.t.unwrap_or(0)
            && r.x == sig.x.unwrap_or(0);
        let c = if agrees { r.crypto } else { Crypto::Fail };
        found = Some(match (found, c) {
            (Some(Crypto::Fail), _) | (_, Crypto::Fail) => Crypto::Fail,
            (Some(Crypto::TempError), _) | (_, Crypto::TempError) => Crypto::TempError,
            _ => Crypto::Pass,
        });
    }
    found.unwrap_or(Crypto::Fail)
}

/// A record that is, or that some reader could take for, an SPF record: `v=spf1`
/// (case-insensitive) alone or followed by anything but a letter or digit. RFC 7208 §4.5
/// wants a space there; a TAB or CR is counted too, since mail-auth reads those as
/// separators (such a record then also fails the control-character check).
fn is_spf_record(txt: &[u8]) -> bool {
    txt.get(..6)
        .is_some_and(|v| v.eq_ignore_ascii_case(b"v=spf1"))
        && txt.get(6).is_none_or(|b| !b.is_ascii_alphanumeric())
}

/// A selector must be a plain DNS label sequence: no way to make the key name leave `d=`.
fn sig_selector_invalid(name: &str) -> bool {
    !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}
