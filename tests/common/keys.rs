//! DKIM test keys: RSA of any size (2048, 1024 and the factorable 512 the corpus needs) and
//! Ed25519.
//!
//! ring signs only with RSA keys of 2048 bits or more and generates none, so RSA is done here
//! with num-bigint: Miller-Rabin primes from ring's system random source, PKCS#1 v1.5
//! signatures (RFC 8017 §8.2) with SHA-256 or SHA-1. Test code only.

#![allow(dead_code)]

use num_bigint::BigUint;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};

/// A private signing key.
pub enum Key {
    Rsa(RsaKey),
    Ed25519(Ed25519KeyPair),
}

pub struct RsaKey {
    pub n: BigUint,
    pub e: BigUint,
    d: BigUint,
    p: BigUint,
    q: BigUint,
    dp: BigUint,
    dq: BigUint,
    qinv: BigUint,
    pub bits: usize,
}

impl Key {
    /// Generate from a zone.json type string: `rsa 2048`, `rsa 1024`, `rsa 512`, `ed25519`.
    pub fn generate(kind: &str) -> Key {
        let kind = kind.trim().to_ascii_lowercase();
        if kind == "ed25519" {
            let rng = SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("ed25519 keygen");
            return Key::Ed25519(
                Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ed25519 pkcs8"),
            );
        }
        let bits: usize = kind
            .strip_prefix("rsa")
            .map(str::trim)
            .and_then(|b| b.parse().ok())
            .unwrap_or_else(|| panic!("unknown key type {kind}"));
        Key::Rsa(RsaKey::generate(bits))
    }

    /// The `p=` value: base64 of the DER SubjectPublicKeyInfo (RSA) or of the raw 32-octet
    /// key (Ed25519, RFC 8463).
    pub fn public_b64(&self) -> String {
        let raw = match self {
            Key::Rsa(k) => k.spki_der(),
            Key::Ed25519(k) => k.public_key().as_ref().to_vec(),
        };
        data_encoding::BASE64.encode(&raw)
    }

    /// Sign `data` for the DKIM algorithm `alg` (`rsa-sha256`, `rsa-sha1`, `ed25519-sha256`).
    /// For ed25519-sha256 the input is hashed first (RFC 8463 §3).
    pub fn sign(&self, alg: &str, data: &[u8]) -> Vec<u8> {
        match self {
            Key::Rsa(k) => {
                let sha1 = alg.eq_ignore_ascii_case("rsa-sha1");
                k.sign_pkcs1(sha1, data)
            }
            Key::Ed25519(k) => {
                let digest = ring::digest::digest(&ring::digest::SHA256, data);
                k.sign(digest.as_ref()).as_ref().to_vec()
            }
        }
    }
}

const SMALL_PRIMES_LIMIT: u32 = 2000;

fn small_primes() -> Vec<u32> {
    let mut out = Vec::new();
    for n in 3..SMALL_PRIMES_LIMIT {
        if out
            .iter()
            .take_while(|p| **p * **p <= n)
            .all(|p| n % p != 0)
        {
            out.push(n);
        }
    }
    out
}

fn random_odd(bits: usize, rng: &SystemRandom) -> BigUint {
    let mut bytes = vec![0u8; bits.div_ceil(8)];
    rng.fill(&mut bytes).expect("random");
    let excess = bytes.len() * 8 - bits;
    bytes[0] &= 0xffu8 >> excess;
    // Top two bits set so that p*q has exactly 2*bits bits.
    bytes[0] |= 0xc0u8 >> excess;
    if excess == 7 {
        bytes[1] |= 0x80;
    }
    let last = bytes.len() - 1;
    bytes[last] |= 1;
    BigUint::from_bytes_be(&bytes)
}

fn is_probable_prime(n: &BigUint, rng: &SystemRandom, rounds: usize) -> bool {
    let one = BigUint::from(1u32);
    let two = BigUint::from(2u32);
    let n_minus_1 = n - &one;
    let s = n_minus_1.trailing_zeros().unwrap_or(0);
    let d = &n_minus_1 >> s;
    let len = n.to_bytes_be().len();
    'outer: for _ in 0..rounds {
        let mut buf = vec![0u8; len];
        rng.fill(&mut buf).expect("random");
        let a = BigUint::from_bytes_be(&buf) % (n - &two - &one) + &two;
        let mut x = a.modpow(&d, n);
        if x == one || x == n_minus_1 {
            continue;
        }
        for _ in 1..s {
            x = x.modpow(&two, n);
            if x == n_minus_1 {
                continue 'outer;
            }
        }
        return false;
    }
    true
}

fn random_prime(bits: usize, e: &BigUint, rng: &SystemRandom, sieve: &[u32]) -> BigUint {
    loop {
        let candidate = random_odd(bits, rng);
        if sieve.iter().any(|p| (&candidate % *p) == BigUint::ZERO) {
            continue;
        }
        if ((&candidate - 1u32) % e) == BigUint::ZERO {
            continue;
        }
        if is_probable_prime(&candidate, rng, 24) {
            return candidate;
        }
    }
}

/// Modular inverse by the extended Euclidean algorithm (a and m coprime).
fn mod_inverse(a: &BigUint, m: &BigUint) -> BigUint {
    use num_bigint::BigInt;
    let (mut old_r, mut r) = (BigInt::from(a.clone()), BigInt::from(m.clone()));
    let (mut old_s, mut s) = (BigInt::from(1), BigInt::from(0));
    while r != BigInt::from(0) {
        let q = &old_r / &r;
        let tmp = &old_r - &q * &r;
        old_r = std::mem::replace(&mut r, tmp);
        let tmp = &old_s - &q * &s;
        old_s = std::mem::replace(&mut s, tmp);
    }
    let m = BigInt::from(m.clone());
    let v = ((old_s % &m) + &m) % &m;
    v.to_biguint().expect("non-negative")
}

impl RsaKey {
    pub fn generate(bits: usize) -> RsaKey {
        let rng = SystemRandom::new();
        let sieve = small_primes();
        let e = BigUint::from(65537u32);
        loop {
            let p = random_prime(bits / 2, &e, &rng, &sieve);
            let q = random_prime(bits - bits / 2, &e, &rng, &sieve);
            if p == q {
                continue;
            }
            let n = &p * &q;
            if n.bits() as usize != bits {
                continue;
            }
            let phi = (&p - 1u32) * (&q - 1u32);
            let d = mod_inverse(&e, &phi);
            let dp = &d % (&p - 1u32);
            let dq = &d % (&q - 1u32);
            let qinv = mod_inverse(&q, &p);
            return RsaKey {
                n,
                e,
                d,
                p,
                q,
                dp,
                dq,
                qinv,
                bits,
            };
        }
    }

    /// RSASSA-PKCS1-v1_5 (RFC 8017 §8.2.1) with SHA-256 or SHA-1.
    pub fn sign_pkcs1(&self, sha1: bool, data: &[u8]) -> Vec<u8> {
        const SHA256_PREFIX: &[u8] = &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ];
        const SHA1_PREFIX: &[u8] = &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ];
        let (prefix, digest) = if sha1 {
            (
                SHA1_PREFIX,
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data),
            )
        } else {
            (
                SHA256_PREFIX,
                ring::digest::digest(&ring::digest::SHA256, data),
            )
        };
        let k = self.bits.div_ceil(8);
        let t_len = prefix.len() + digest.as_ref().len();
        assert!(k >= t_len + 11, "key too small for this digest");
        let mut em = vec![0x00, 0x01];
        em.extend(std::iter::repeat_n(0xffu8, k - t_len - 3));
        em.push(0x00);
        em.extend_from_slice(prefix);
        em.extend_from_slice(digest.as_ref());
        let m = BigUint::from_bytes_be(&em);
        // CRT.
        let m1 = m.modpow(&self.dp, &self.p);
        let m2 = m.modpow(&self.dq, &self.q);
        let diff = if m1 >= m2 {
            &m1 - &m2
        } else {
            &m1 + &self.p - (&m2 % &self.p)
        };
        let h = (&self.qinv * diff) % &self.p;
        let s = m2 + h * &self.q;
        debug_assert_eq!(s.modpow(&self.e, &self.n), m);
        let _ = &self.d;
        let mut out = s.to_bytes_be();
        while out.len() < k {
            out.insert(0, 0);
        }
        out
    }

    /// DER SubjectPublicKeyInfo (RFC 5280) of the public key.
    pub fn spki_der(&self) -> Vec<u8> {
        let rsa_public_key = der_seq(&[der_uint(&self.n), der_uint(&self.e)].concat());
        let alg = der_seq(
            &[
                &[
                    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
                ][..],
                &[0x05, 0x00],
            ]
            .concat(),
        );
        let mut bits = vec![0u8];
        bits.extend_from_slice(&rsa_public_key);
        der_seq(&[alg, der(0x03, &bits)].concat())
    }
}

fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        vec![len as u8]
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        let mut out = vec![0x80 | bytes.len() as u8];
        out.extend(bytes);
        out
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

fn der_seq(content: &[u8]) -> Vec<u8> {
    der(0x30, content)
}

fn der_uint(n: &BigUint) -> Vec<u8> {
    let mut bytes = n.to_bytes_be();
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    der(0x02, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_signature_verifies_with_ring() {
        let key = RsaKey::generate(2048);
        let sig = key.sign_pkcs1(false, b"hello");
        let spki = key.spki_der();
        // ring wants the bare RSAPublicKey.
        let rsa_pub = der_seq(&[der_uint(&key.n), der_uint(&key.e)].concat());
        let pk = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            rsa_pub,
        );
        assert!(pk.verify(b"hello", &sig).is_ok());
        assert!(pk.verify(b"hellO", &sig).is_err());
        assert!(spki.len() > 290);
    }
}
