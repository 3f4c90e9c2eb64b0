//! The provider's keys: the signing key (RS256 or EdDSA), the keys of earlier rotations
//! still published, the JWKS, and the subject secret.
//!
//! # Decisions
//!
//! - **Files.** `oidc.signing_key` is a PEM private key: PKCS#8 (`PRIVATE KEY`, RSA or
//!   Ed25519) or PKCS#1 (`RSA PRIVATE KEY`). When missing it is created at first start, mode
//!   0600, RSA 2048 (every relying party verifies RS256) or Ed25519 with `signing_alg =
//!   "EdDSA"`. A key of the other kind than `signing_alg` is refused at start: the discovery
//!   document would lie about the algorithm. RSA keys under 2048 bits are refused (ring
//!   signs only from 2048).
//! - **No hand-written crypto.** `rsa` generates and parses RSA keys, ring generates
//!   Ed25519 keys and computes the subject HMAC, jsonwebtoken (on ring) signs and verifies.
//! - **`kid`** is the RFC 7638 JWK thumbprint (SHA-256, base64url): stable for a key, new
//!   for a new key, computable by anyone from the JWKS.
//! - **Rotation.** Every key listed in `oidc.previous_keys` is published in the JWKS (and
//!   accepted for the provider's own access tokens) but never signs. Rotating: move the
//!   current key file to a new name, add that name to `previous_keys`, restart (a new key is
//!   created); after `id_token_ttl` plus the relying parties' JWKS cache time, drop it from
//!   the list and restart again (README).
//! - **`sub`** is `HMAC-SHA256(subject_key, canonical address)`, base64url: stable for an
//!   address across sign-ins and clients, opaque (the address cannot be read back from it),
//!   and independent of the signing key, so a rotation does not change anybody's `sub`.

use std::io::Write;
use std::path::Path;

use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, RSAKeyParameters, RSAKeyType,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::KeyPair;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::traits::PublicKeyParts;

use crate::config::SigningAlg;

/// Bits of a created RSA key (SPEC §9).
pub const RSA_BITS: usize = 2048;
/// Bytes of the subject secret.
const SUBJECT_KEY_BYTES: usize = 32;

/// Why the keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: &Path, message: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn io(path: &Path, source: std::io::Error) -> KeyError {
    KeyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One private key, ready to sign, with its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The signing key, the published ones and the subject secret.
pub struct Keys {
    pub current: SigningKey,
    pub previous: Vec<SigningKey>,
    subject: ring::hmac::Key,
}

impl Keys {
    /// Load (creating the signing key and the subject secret when missing). Blocking.
    pub fn load(
        signing_key: &Path,
        alg: SigningAlg,
        previous: &[std::path::PathBuf],
        subject_key: &Path,
    ) -> Result<Self, KeyError> {
        let current = load_or_create(signing_key, alg)?;
        let previous = previous
            .iter()
            .map(|p| load_pem(p, &read(p)?))
            .collect::<Result<Vec<_>, _>>()?;
        let subject = load_or_create_subject(subject_key)?;
        Ok(Self {
            current,
            previous,
            subject: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &subject),
        })
    }

    /// The JWKS document (current key first).
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: std::iter::once(&self.current)
                .chain(&self.previous)
                .map(|k| k.jwk.clone())
                .collect(),
        }
    }

    pub fn encoding(&self) -> &EncodingKey {
        &self.current.encoding
    }

    /// The key a token names by `kid`, if it is ours.
    pub fn verifier(&self, kid: &str) -> Option<(&DecodingKey, Algorithm)> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.kid == kid)
            .map(|k| (&k.decoding, k.alg))
    }

    /// `sub` for a canonical address.
    pub fn subject(&self, address: &str) -> String {
        let tag = ring::hmac::sign(&self.subject, address.as_bytes());
        data_encoding::BASE64URL_NOPAD.encode(tag.as_ref())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| io(path, e))
}

fn load_or_create(path: &Path, alg: SigningAlg) -> Result<SigningKey, KeyError> {
    let pem_text = match std::fs::read(path) {
        Ok(text) => {
            warn_if_readable(path);
            text
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let der = generate(alg).map_err(|m| invalid(path, m))?;
            let text = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
            write_new_secret(path, text.as_bytes())?;
            tracing::info!(path = %path.display(), alg = alg.as_str(), "created the OpenID Provider signing key");
            text.into_bytes()
        }
        Err(e) => return Err(io(path, e)),
    };
    let key = load_pem(path, &pem_text)?;
    let want = match alg {
        SigningAlg::Rs256 => Algorithm::RS256,
        SigningAlg::EdDsa => Algorithm::EdDSA,
    };
    if key.alg != want {
        return Err(invalid(
            path,
            format!(
                "holds a {:?} key but oidc.signing_alg is {}",
                key.alg,
                alg.as_str()
            ),
        ));
    }
    Ok(key)
}

/// PKCS#8 DER of a new key.
fn generate(alg: SigningAlg) -> Result<Vec<u8>, String> {
    match alg {
        SigningAlg::Rs256 => {
            let key = rsa::PrivateKey::new(&mut RingRng(SystemRandom::new()), RSA_BITS)
                .map_err(|e| format!("RSA key generation failed: {e}"))?;
            let doc = key
                .to_pkcs8_der()
                .map_err(|e| format!("RSA key encoding failed: {e}"))?;
            Ok(doc.as_bytes().to_vec())
        }
        SigningAlg::EdDsa => ring::signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| "Ed25519 key generation failed".to_owned()),
    }
}

fn load_pem(path: &Path, text: &[u8]) -> Result<SigningKey, KeyError> {
    let parsed = pem::parse(text).map_err(|e| invalid(path, format!("not PEM: {e}")))?;
    let der = parsed.contents();
    match parsed.tag() {
        "RSA PRIVATE KEY" => {
            let key = rsa::PrivateKey::from_pkcs1_der(der)
                .map_err(|e| invalid(path, format!("not an RSA key: {e}")))?;
            rsa_key(path, &key)
        }
        "PRIVATE KEY" => {
            if let Ok(key) = rsa::PrivateKey::from_pkcs8_der(der) {
                return rsa_key(path, &key);
            }
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map_err(|_| invalid(path, "neither an RSA nor an Ed25519 PKCS#8 key"))?;
            let x = data_encoding::BASE64URL_NOPAD.encode(pair.public_key().as_ref());
            let params = AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: x.clone(),
            });
            let kid = thumbprint(&format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#));
            let decoding = DecodingKey::from_ed_components(&x)
                .map_err(|e| invalid(path, format!("Ed25519 public key: {e}")))?;
            Ok(SigningKey {
                jwk: jwk(&kid, KeyAlgorithm::EdDSA, params),
                kid,
                alg: Algorithm::EdDSA,
                encoding: EncodingKey::from_ed_der(der),
                decoding,
            })
        }
        other => Err(invalid(
            path,
            format!("PEM block {other:?}: expected PRIVATE KEY or RSA PRIVATE KEY"),
        )),
    }
}

fn rsa_key(path: &Path, key: &rsa::PrivateKey) -> Result<SigningKey, KeyError> {
    let bits = key.n().bit_width();
    if bits < 2048 {
        return Err(invalid(
            path,
            format!("RSA key of {bits} bits: at least 2048 required"),
        ));
    }
    let pkcs1 = key
        .to_pkcs1_der()
        .map_err(|e| invalid(path, format!("RSA key encoding failed: {e}")))?;
    // JWK integers are unsigned big-endian without leading zero octets (RFC 7518 §6.3.1.1).
    let n_bytes = key.n().to_be_bytes();
    let e_bytes = key.e().to_be_bytes();
    let n = data_encoding::BASE64URL_NOPAD.encode(strip_zeros(&n_bytes));
    let e = data_encoding::BASE64URL_NOPAD.encode(strip_zeros(&e_bytes));
    let kid = thumbprint(&format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#));
    let decoding = DecodingKey::from_rsa_components(&n, &e)
        .map_err(|err| invalid(path, format!("RSA public key: {err}")))?;
    let params = AlgorithmParameters::RSA(RSAKeyParameters {
        key_type: RSAKeyType::RSA,
        n,
        e,
    });
    Ok(SigningKey {
        jwk: jwk(&kid, KeyAlgorithm::RS256, params),
        kid,
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(pkcs1.as_bytes()),
        decoding,
    })
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes.get(first..).unwrap_or(bytes)
}

fn jwk(kid: &str, alg: KeyAlgorithm, algorithm: AlgorithmParameters) -> Jwk {
    Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(alg),
            key_id: Some(kid.to_owned()),
            ..CommonParameters::default()
        },
        algorithm,
    }
}

/// RFC 7638: SHA-256 of the required members in lexicographic order, no whitespace.
fn thumbprint(canonical: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    data_encoding::BASE64URL_NOPAD.encode(digest.as_ref())
}

fn load_or_create_subject(path: &Path) -> Result<Vec<u8>, KeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            warn_if_readable(path);
            let bytes = data_encoding::HEXLOWER_PERMISSIVE
                .decode(text.trim().as_bytes())
                .map_err(|_| invalid(path, "expected hexadecimal"))?;
            if bytes.len() < 16 {
                return Err(invalid(path, "at least 128 bits required"));
            }
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = vec![0u8; SUBJECT_KEY_BYTES];
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| invalid(path, "the system random number generator failed"))?;
            let mut text = data_encoding::HEXLOWER.encode(&bytes);
            text.push('\n');
            write_new_secret(path, text.as_bytes())?;
            tracing::info!(path = %path.display(), "created the OpenID Provider subject key");
            Ok(bytes)
        }
        Err(e) => Err(io(path, e)),
    }
}

/// Create `path` (and its directory), mode 0600, refusing to overwrite.
fn write_new_secret(path: &Path, content: &[u8]) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(path, e))?;
    file.write_all(content).map_err(|e| io(path, e))?;
    file.sync_all().map_err(|e| io(path, e))
}

fn warn_if_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "an OpenID Provider key file is readable by other users (chmod 600)");
    }
}

/// ring's system RNG as the `rand_core` RNG that `rsa` asks for.
struct RingRng(SystemRandom);

#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
struct RingRngError;

impl rsa::rand_core::TryRng for RingRng {
    type Error = RingRngError;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill(dst).map_err(|_| RingRngError)
    }
}

impl rsa::rand_core::TryCryptoRng for RingRng {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strip_zeros_table() {
        let rows: &[(&[u8], &[u8])] = &[
            (&[0, 0, 1, 2], &[1, 2]),
            (&[1, 0], &[1, 0]),
            (&[0], &[0]),
            (&[], &[]),
        ];
        for (input, want) in rows {
            assert_eq!(strip_zeros(input), *want);
        }
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1: the example RSA key's thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let canonical = format!(r#"{{"e":"AQAB","kty":"RSA","n":"{n}"}}"#);
        assert_eq!(
            thumbprint(&canonical),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn rotation_publishes_the_previous_key_and_signs_with_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.pem");
        let new = dir.path().join("new.pem");
        let sub = dir.path().join("s");
        let before = Keys::load(&old, SigningAlg::EdDsa, &[], &sub).unwrap();
        let after = Keys::load(&new, SigningAlg::EdDsa, std::slice::from_ref(&old), &sub).unwrap();
        let kids: Vec<String> = after
            .jwks()
            .keys
            .iter()
            .filter_map(|k| k.common.key_id.clone())
            .collect();
        assert_eq!(
            kids,
            vec![after.current.kid.clone(), before.current.kid.clone()]
        );
        assert_ne!(after.current.kid, before.current.kid);
        // Tokens of the old key still verify; the subject does not change.
        assert!(after.verifier(&before.current.kid).is_some());
        assert_eq!(after.subject("a@x.gouv.fr"), before.subject("a@x.gouv.fr"));
    }

    #[test]
    fn ed25519_key_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        let sub = dir.path().join("s");
        let a = Keys::load(&key, SigningAlg::EdDsa, &[], &sub).unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(&sub).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Keys::load(&key, SigningAlg::EdDsa, &[], &sub).unwrap();
        assert_eq!(a.current.kid, b.current.kid);
        assert_eq!(a.subject("a@x.gouv.fr"), b.subject("a@x.gouv.fr"));
        assert_ne!(a.subject("a@x.gouv.fr"), a.subject("b@x.gouv.fr"));
        // A key of the other kind than signing_alg is refused.
        assert!(Keys::load(&key, SigningAlg::Rs256, &[], &sub).is_err());
    }
}
