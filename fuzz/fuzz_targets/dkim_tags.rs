//! Our own DKIM readers on arbitrary bytes (mail-auth does the cryptography; these decide
//! the product's rules, `src/verify/dkim.rs`): the tag-list reader, `SigInfo::parse` (a
//! `DKIM-Signature` value), `KeyRecord::parse` (a `v=DKIM1; k=...; p=...` TXT record) and
//! the DER reader that measures an RSA modulus. The first byte picks the reader. Never
//! panics, and:
//! - a tag-list read once is read again to the same list from its own `name=value;` form
//!   (names lower-case, unique, non-empty; values trimmed);
//! - a signature with no fault has every required tag, `v=1` and at most
//!   `MAX_SIGNED_NAMES` names in `h=`; its domain, when it parses, is `d=` lower-cased;
//! - a key record is a tag-list, revoked exactly when `p=` is empty, and has a modulus size
//!   only for `k=rsa`;
//! - the modulus size of arbitrary bytes wrapped as an RSAPublicKey and as a
//!   SubjectPublicKeyInfo is the bit length of those bytes (leading zero octets ignored).
#![no_main]

use gatekeeper::address::ParseOptions;
use gatekeeper::verify::dkim::{self, KeyRecord, SigInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => tag_list(input),
        1 => sig_info(input),
        2 => key_record(input),
        _ => modulus(input),
    }
});

fn tag_list(input: &[u8]) {
    let Some(tags) = dkim::tag_list(input) else {
        return;
    };
    let mut names: Vec<&str> = Vec::new();
    for (name, value) in &tags {
        assert!(!name.is_empty() && !name.contains(['=', ';']));
        assert_eq!(name, &name.to_ascii_lowercase());
        assert_eq!(name.trim(), name);
        assert_eq!(value.trim(), value);
        assert!(!value.contains(';'));
        assert!(!names.contains(&name.as_str()), "repeated tag {name}");
        names.push(name);
    }
    let text: String = tags.iter().map(|(n, v)| format!("{n}={v};")).collect();
    assert_eq!(dkim::tag_list(text.as_bytes()).as_ref(), Some(&tags));
}

fn sig_info(input: &[u8]) {
    let opts = ParseOptions::default();
    let sig = SigInfo::parse(3, input, &opts);
    assert_eq!(sig.field, 3);
    assert_eq!(SigInfo::parse(3, input, &opts), sig, "not deterministic");
    if !sig.invalid {
        assert!(dkim::tag_list(input).is_some());
        assert!(sig.h.len() <= dkim::MAX_SIGNED_NAMES);
    }
    if let Some(d) = &sig.domain {
        assert_eq!(d.as_str(), sig.d_raw.to_ascii_lowercase());
    }
    assert!(
        sig.h
            .iter()
            .all(|n| !n.is_empty() && *n == n.to_ascii_lowercase())
    );
}

fn key_record(input: &[u8]) {
    let Some(key) = KeyRecord::parse(input) else {
        return;
    };
    let tags = dkim::tag_list(input).unwrap_or_else(|| panic!("a key record is a tag-list"));
    let p = tags.iter().find(|(n, _)| n == "p").map(|(_, v)| {
        v.chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect::<String>()
    });
    assert_eq!(key.revoked, p.as_deref() == Some(""));
    if key.rsa_bits.is_some() {
        assert_eq!(key.key_type, "rsa");
    }
    assert_eq!(KeyRecord::parse(input).as_ref(), Some(&key));
}

/// DER length octets for `len`.
fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

fn modulus(input: &[u8]) {
    // Arbitrary bytes as DER: no panic, and no more bits than the input has.
    if let Some(bits) = dkim::rsa_modulus_bits(input) {
        assert!(bits <= input.len() * 8);
    }
    // The same bytes as the modulus of a well-formed key: the size is their bit length.
    let expected = input.iter().position(|b| *b != 0).and_then(|at| {
        let lead = input.get(at)?;
        Some((input.len() - at) * 8 - lead.leading_zeros() as usize)
    });
    let mut ints = der(0x02, input);
    ints.extend(der(0x02, &[1, 0, 1]));
    let rsa_public_key = der(0x30, &ints);
    assert_eq!(dkim::rsa_modulus_bits(&rsa_public_key), expected);
    let algorithm = der(
        0x30,
        &[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
        ],
    );
    let mut bit_string = vec![0u8];
    bit_string.extend_from_slice(&rsa_public_key);
    let mut spki = algorithm;
    spki.extend(der(0x03, &bit_string));
    let spki = der(0x30, &spki);
    assert_eq!(dkim::rsa_modulus_bits(&spki), expected);
}
