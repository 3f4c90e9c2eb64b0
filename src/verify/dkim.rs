//! DKIM (RFC 6376, RFC 8463 ed25519, RFC 8301 weak algorithms) from the point of view of the
//! From domain.
//!
//! mail-auth does the cryptography (strict signature parse, body hash, header hash, key
//! lookup). Everything the product's rules add is here, on our own parse of the same
//! `DKIM-Signature` fields and of the key record, fetched through the same resolver cache:
//!
//! - alignment of `d=` with the From domain (`strict`: canonical equality through
//!   `Domain::parse`; `relaxed`: same organisational domain by the Public Suffix List);
//! - `l=` present → `dkim.partial` (even `l=0`, which mail-auth reads as "no l=");
//! - `a=rsa-sha1`, or an RSA key under `policy.dkim_min_rsa_bits` → `dkim.weak` (judged
//!   before the cryptographic result: ring refuses keys under 1024 bits, and a weak key is a
//!   refusal whether or not the signature verifies);
//! - key record `t=y` → `dkim.testing`; key `h=` not listing the signature's hash, key `s=`
//!   not `*`/`email`, duplicate tags, `x=` expired or not after `t=`, `t=` in the future
//!   beyond [`CLOCK_SKEW`] → the signature fails;
//! - `h=` not covering the one From field → `dkim.from_unsigned`.
//! - `i=` naming another address than From, or a domain outside `d=` → the signature fails
//!   ([`identity_agrees`]).
//!
//! The signed header *instances* are computed here from our strict header split, bottom-up as
//! RFC 6376 §5.4.2 says (a name listed more often than present signs "absent"). Our split and
//! mail-auth's agree on every block that is not `header.malformed`, and a malformed block is
//! refused before any signature matters.

use std::collections::HashSet;

use crate::address::{Domain, Mailbox, ParseOptions};
use crate::config::Alignment;
use crate::policy::Dkim;
use crate::verify::headers::HeaderBlock;

/// How far in the future a signature's `t=` may be (clock skew between MTAs): the hour SPEC §4
/// allows for "the Date or `t=`" (`date.stale`), so that a ministry MTA whose clock runs a
/// few minutes fast is not refused by one rule while the other accepts it.
pub const CLOCK_SKEW: u64 = crate::verify::binding::MAX_FUTURE_SECS.unsigned_abs();

/// Only the first (top-most) signatures are considered: a real mail carries two or three
/// (ministry, provider); hundreds of fields would each cost a header hash over the whole
/// block. Fields below this count are ignored, which can only hurt the one who added them.
pub const MAX_SIGNATURES: usize = 8;

/// An `h=` longer than this is refused (the signature fails): hashing cost grows with
/// `h=` × header fields, and no MTA signs more than a few dozen names.
pub const MAX_SIGNED_NAMES: usize = 64;

/// A `DKIM-Signature` field as we read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigInfo {
    /// Index of the field in the header block.
    pub field: usize,
    /// `d=` as written (lossy), and its strict canonical form when it parses.
    pub d_raw: String,
    pub domain: Option<Domain>,
    pub selector: String,
    /// `a=` lower-case.
    pub algorithm: String,
    /// `h=` names, lower-case, in order.
    pub h: Vec<String>,
    pub has_l: bool,
    /// `i=` (the agent or user identifier) as written, whitespace removed.
    pub i: Option<String>,
    pub t: Option<u64>,
    pub x: Option<u64>,
    /// `b=` with whitespace removed, to match mail-auth's output to this field.
    pub b: String,
    /// Duplicate tags, a missing required tag or an unparsable number: the tag-list is invalid.
    pub invalid: bool,
}

/// Parse a DKIM tag-list (RFC 6376 §3.2). `None` when a tag name repeats (the whole list is
/// then invalid) or a tag has no `=`.
pub fn tag_list(value: &[u8]) -> Option<Vec<(String, String)>> {
    let text = String::from_utf8_lossy(value);
    let mut out: Vec<(String, String)> = Vec::new();
    let mut seen = HashSet::new();
    for spec in text.split(';') {
        if spec.trim().is_empty() {
            continue;
        }
        let (name, val) = spec.split_once('=')?;
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || !seen.insert(name.clone()) {
            return None;
        }
        out.push((name, val.trim().to_string()));
    }
    Some(out)
}

/// RFC 6376 §3.2: tag names are case-sensitive, so `D=` is not `d=`. mail-auth (and our
/// `tag_list`) read them case-insensitively; a signature whose meaning depends on which
/// reading is right is ambiguous, and refused.
fn upper_case_tag_name(value: &[u8]) -> bool {
    value.split(|b| *b == b';').any(|spec| {
        spec.contains(&b'=')
            && spec
                .iter()
                .take_while(|b| **b != b'=')
                .any(u8::is_ascii_uppercase)
    })
}

fn strip_ws(s: &str) -> String {
    s.chars().filter(|c| !c.is_ascii_whitespace()).collect()
}

impl SigInfo {
    pub fn parse(field: usize, value: &[u8], opts: &ParseOptions) -> Self {
        let tags = tag_list(value);
        let invalid_list = tags.is_none();
        let tags = tags.unwrap_or_default();
        let get = |n: &str| tags.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        let num = |n: &str| get(n).map(|v| strip_ws(v).parse::<u64>().ok());
        let d_raw = get("d").map(strip_ws).unwrap_or_default();
        let t = num("t");
        let x = num("x");
        let h_len = get("h").map_or(0, |h| h.split(':').count());
        let invalid = invalid_list
            || upper_case_tag_name(value)
            || h_len > MAX_SIGNED_NAMES
            || ["v", "a", "b", "bh", "d", "h", "s"]
                .iter()
                .any(|n| get(n).is_none())
            || get("v").map(strip_ws).as_deref() != Some("1")
            || matches!(t, Some(None))
            || matches!(x, Some(None));
        SigInfo {
            field,
            domain: Domain::parse(d_raw.as_bytes(), opts).ok(),
            d_raw,
            selector: get("s").map(strip_ws).unwrap_or_default(),
            algorithm: get("a")
                .map(strip_ws)
                .unwrap_or_default()
                .to_ascii_lowercase(),
            h: get("h")
                .map(|h| {
                    h.split(':')
                        .map(|n| strip_ws(n).to_ascii_lowercase())
                        .filter(|n| !n.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            has_l: get("l").is_some(),
            i: get("i").map(strip_ws),
            t: t.flatten(),
            x: x.flatten(),
            b: get("b").map(strip_ws).unwrap_or_default(),
            invalid,
        }
    }

    /// The header field indices this signature covers: for each `h=` name, the bottom-most
    /// instance not yet taken; a name listed once more than present signs "absent".
    pub fn signed_fields(&self, block: &HeaderBlock<'_>) -> HashSet<usize> {
        let mut taken = HashSet::new();
        for name in &self.h {
            let pick = block
                .fields
                .iter()
                .enumerate()
                .rev()
                .find(|(i, f)| f.is(name) && !taken.contains(i) && *i != self.field);
            if let Some((i, _)) = pick {
                taken.insert(i);
            }
        }
        taken
    }
}

/// The `i=` identity agrees with the From address: absent; `@domain` (no user) with the
/// domain `d=` or below it (RFC 6376 §3.5); or a whole address equal to From. A signer that
/// names another user than From (the MTA authenticated bob, the From says alice) is an
/// insider writing as someone else (SPEC §1: every identity names the same address). An
/// `i=` that does not read as one of these is refused. `=XX` (dkim-quoted-printable) is
/// decoded first.
pub fn identity_agrees(sig: &SigInfo, from: &Mailbox, opts: &ParseOptions) -> bool {
    let Some(raw) = &sig.i else {
        return true;
    };
    let Some(auid) = qp_decode(raw.as_bytes()) else {
        return false;
    };
    match auid.split_first() {
        // The domain-only form: the leading `@` is the whole local part (empty).
        Some((b'@', domain)) => match (Domain::parse(domain, opts), &sig.domain) {
            (Ok(i), Some(d)) => i.is_within(d),
            _ => false,
        },
        _ => Mailbox::parse(&auid, opts).is_ok_and(|m| &m == from),
    }
}

/// dkim-quoted-printable (RFC 6376 §2.11): `=XX` is the octet XX. `None` when malformed.
fn qp_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'=' {
            let hex = tail.get(..2)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            rest = tail.get(2..)?;
        } else {
            out.push(b);
            rest = tail;
        }
    }
    Some(out)
}

/// Is `d` aligned with the From domain?
pub fn aligned(d: &Domain, from: &Domain, mode: &Alignment) -> bool {
    match mode {
        Alignment::Strict => d == from,
        Alignment::Relaxed => match (psl::domain_str(d.as_str()), psl::domain_str(from.as_str())) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
    }
}

/// The parts of a DKIM key record (RFC 6376 §3.6.1) the rules need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub testing: bool,
    /// `h=`: acceptable hash algorithms; `None` = all.
    pub hashes: Option<Vec<String>>,
    /// `s=`: service types; `None` = all.
    pub services: Option<Vec<String>>,
    /// `k=`, default `rsa`.
    pub key_type: String,
    /// Modulus size of an RSA key; `None` when the key is not RSA or does not parse.
    pub rsa_bits: Option<usize>,
    /// `p=` empty: revoked.
    pub revoked: bool,
}

impl KeyRecord {
    /// `None` when the record is not a DKIM key record.
    pub fn parse(txt: &[u8]) -> Option<Self> {
        let tags = tag_list(txt)?;
        let get = |n: &str| tags.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        if let Some(v) = get("v")
            && v != "DKIM1"
        {
            return None;
        }
        let p = strip_ws(get("p")?);
        let list = |v: &str| -> Vec<String> {
            v.split(':')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect()
        };
        let key_type = get("k")
            .map(|k| k.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "rsa".into());
        let der = data_encoding::BASE64.decode(p.as_bytes()).ok();
        let rsa_bits = if key_type == "rsa" {
            der.as_deref().and_then(rsa_modulus_bits)
        } else {
            None
        };
        Some(KeyRecord {
            testing: get("t").is_some_and(|t| list(t).iter().any(|f| f == "y")),
            hashes: get("h").map(list),
            services: get("s").map(list),
            key_type,
            rsa_bits,
            revoked: p.is_empty(),
        })
    }
}

/// One DER element: (tag, content, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 & 0x80 == 0 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = rest.get(..n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest.get(n..)?)
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

/// Bits of the modulus of an RSA key given as SubjectPublicKeyInfo or bare RSAPublicKey DER.
pub fn rsa_modulus_bits(key: &[u8]) -> Option<usize> {
    let (tag, seq, _) = der(key)?;
    if tag != 0x30 {
        return None;
    }
    let (first_tag, first, rest) = der(seq)?;
    let rsa_public_key = match first_tag {
        // SubjectPublicKeyInfo: SEQUENCE { AlgorithmIdentifier, BIT STRING }
        0x30 => {
            let _ = first;
            let (bt, bits, _) = der(rest)?;
            if bt != 0x03 {
                return None;
            }
            let (_unused, inner) = bits.split_first()?;
            let (t, s, _) = der(inner)?;
            if t != 0x30 {
                return None;
            }
            s
        }
        // RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }
        0x02 => seq,
        _ => return None,
    };
    let (t, n, _) = der(rsa_public_key)?;
    if t != 0x02 {
        return None;
    }
    let start = n.iter().position(|b| *b != 0)?;
    let n = n.get(start..)?;
    let lead = n.first()?;
    Some((n.len() - 1) * 8 + (8 - lead.leading_zeros() as usize))
}

/// The cryptographic result mail-auth gave for one signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crypto {
    Pass,
    Fail,
    TempError,
}

/// What the key lookup gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyLookup {
    Found(KeyRecord),
    /// No record, no record that is a DKIM key, or several key records (ambiguous).
    Missing,
    TempError,
}

/// One signature's standing under the product's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigStatus {
    Good,
    Partial,
    Weak,
    Testing,
    FromUnsigned,
    Fail,
    TempError,
}

/// Judge one signature (pure). `from_field` is the index of the one From field.
pub fn judge(
    sig: &SigInfo,
    crypto: Crypto,
    key: &KeyLookup,
    signed: &HashSet<usize>,
    from_field: Option<usize>,
    min_rsa_bits: u32,
    now: u64,
) -> SigStatus {
    if sig.invalid {
        return SigStatus::Fail;
    }
    if sig.has_l {
        return SigStatus::Partial;
    }
    let hash = match sig.algorithm.as_str() {
        "rsa-sha1" => return SigStatus::Weak,
        "rsa-sha256" | "ed25519-sha256" => "sha256",
        _ => return SigStatus::Fail,
    };
    let record = match key {
        KeyLookup::TempError => return SigStatus::TempError,
        KeyLookup::Missing => return SigStatus::Fail,
        KeyLookup::Found(r) => r,
    };
    if record.revoked {
        return SigStatus::Fail;
    }
    let alg_type = if sig.algorithm.starts_with("rsa") {
        "rsa"
    } else {
        "ed25519"
    };
    if record.key_type != alg_type {
        return SigStatus::Fail;
    }
    if alg_type == "rsa" {
        match record.rsa_bits {
            Some(bits) if bits >= usize::try_from(min_rsa_bits).unwrap_or(usize::MAX) => {}
            Some(_) => return SigStatus::Weak,
            None => return SigStatus::Fail,
        }
    }
    if record
        .hashes
        .as_ref()
        .is_some_and(|h| !h.iter().any(|x| x == hash))
    {
        return SigStatus::Fail;
    }
    if record
        .services
        .as_ref()
        .is_some_and(|s| !s.iter().any(|x| x == "*" || x == "email"))
    {
        return SigStatus::Fail;
    }
    match crypto {
        Crypto::TempError => return SigStatus::TempError,
        Crypto::Fail => return SigStatus::Fail,
        Crypto::Pass => {}
    }
    if record.testing {
        return SigStatus::Testing;
    }
    if !from_field.is_some_and(|f| signed.contains(&f)) {
        return SigStatus::FromUnsigned;
    }
    if let Some(x) = sig.x
        && (x < now || sig.t.is_some_and(|t| x <= t))
    {
        return SigStatus::Fail;
    }
    if sig.t.is_some_and(|t| t > now.saturating_add(CLOCK_SKEW)) {
        return SigStatus::Fail;
    }
    SigStatus::Good
}

/// The aggregate over every signature (see the module documentation of `policy`).
/// `judged` holds the aligned signatures' statuses; `any_crypto_pass` whether any signature
/// at all (aligned or not) verified.
pub fn aggregate(total: usize, judged: &[SigStatus], any_crypto_pass: bool) -> Dkim {
    if total == 0 {
        return Dkim::None;
    }
    if judged.contains(&SigStatus::Good) {
        return Dkim::Pass;
    }
    if judged.contains(&SigStatus::TempError) {
        return Dkim::TempError;
    }
    for (status, result) in [
        (SigStatus::Partial, Dkim::Partial),
        (SigStatus::Weak, Dkim::Weak),
        (SigStatus::Testing, Dkim::Testing),
        (SigStatus::FromUnsigned, Dkim::FromUnsigned),
        (SigStatus::Fail, Dkim::Fail),
    ] {
        if judged.contains(&status) {
            return result;
        }
    }
    if any_crypto_pass {
        Dkim::Unaligned
    } else {
        Dkim::Fail
    }
}

#[cfg(test)]
mod tests;
