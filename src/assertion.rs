//! The signed confirmation a backend can keep (SPEC §11): a compact JWS over
//! `{address, challenge_id, confirmed_at, evidence}`, signed with the OpenID Provider's
//! signing key (`kid` in the header), so anyone holding `/jwks.json` can check it later
//! without trusting the backend's database.
//!
//! # Decisions where SPEC §11 is silent
//!
//! - **One key source**: the key is `[oidc] signing_key` (and its JWKS); there is no second
//!   key file. Without `[oidc]` there is no key, so `GET /v1/challenges/{id}` and the
//!   `challenge.confirmed` webhook carry no `assertion` (the daemon says so at start).
//! - **Exactly the four claims**, `confirmed_at` as in the API (RFC 3339, milliseconds, `Z`):
//!   no `exp` (a proof of a past event does not expire), no `iss` (the JWKS names the signer).
//! - **Deterministic**: RS256 (PKCS#1 v1.5) and Ed25519 signatures of the same bytes are the
//!   same, so the API and every retry of a webhook show the same assertion for one key.
//! - The algorithm is the key's (`RS256` by default, `EdDSA` when `[oidc] signing_alg` says so).

use chrono::{DateTime, SecondsFormat, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::backend::Evidence;

/// The claims of an assertion, in this order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub address: String,
    pub challenge_id: String,
    /// RFC 3339 (UTC, milliseconds), as `confirmed_at` in the API.
    pub confirmed_at: String,
    pub evidence: serde_json::Value,
}

/// Why an assertion could not be made or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("cannot sign: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("evidence does not serialise: {0}")]
    Evidence(#[source] serde_json::Error),
    #[error("not a JWS: {0}")]
    Malformed(#[source] jsonwebtoken::errors::Error),
    #[error("no kid in the header")]
    NoKid,
    #[error("no key {0:?} in the JWKS")]
    UnknownKid(String),
    #[error("key {0:?} is not usable: {1}")]
    BadKey(String, #[source] jsonwebtoken::errors::Error),
    #[error("signature or claims refused: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

/// Signs assertions with one key.
#[derive(Clone)]
pub struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(kid: String, alg: Algorithm, key: EncodingKey) -> Self {
        Self { kid, alg, key }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The compact JWS for one confirmation.
    pub fn sign(
        &self,
        challenge_id: &str,
        address: &str,
        confirmed_at: DateTime<Utc>,
        evidence: &Evidence,
    ) -> Result<String, AssertionError> {
        let claims = Claims {
            address: address.to_owned(),
            challenge_id: challenge_id.to_owned(),
            confirmed_at: confirmed_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            evidence: serde_json::to_value(evidence).map_err(AssertionError::Evidence)?,
        };
        self.sign_claims(&claims)
    }

    /// The compact JWS over `claims` as they stand (the webhook sender has them as JSON).
    pub fn sign_claims(&self, claims: &Claims) -> Result<String, AssertionError> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(AssertionError::Sign)
    }
}

/// Check `token` against the keys of `jwks` (by `kid`) and return its claims.
pub fn verify(token: &str, jwks: &JwkSet) -> Result<Claims, AssertionError> {
    let header = jsonwebtoken::decode_header(token.trim()).map_err(AssertionError::Malformed)?;
    let kid = header.kid.ok_or(AssertionError::NoKid)?;
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| AssertionError::UnknownKid(kid.clone()))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| AssertionError::BadKey(kid.clone(), e))?;
    // The algorithm is the one the header names, and it must be the key's kind: the decoder
    // refuses a key of another family (no RS256/HS256 confusion).
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<Claims>(token.trim(), &key, &validation)
        .map(|d| d.claims)
        .map_err(AssertionError::Invalid)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A fresh Ed25519 key (ring generates it; RSA keys come from `[oidc]`) and its JWKS.
    fn signer_and_jwks() -> (Signer, JwkSet) {
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = data_encoding::BASE64URL_NOPAD.encode(pair.public_key().as_ref());
        let jwks: JwkSet = serde_json::from_value(serde_json::json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "kid": "k1", "alg": "EdDSA", "use": "sig", "x": x
        }]}))
        .unwrap();
        let key = EncodingKey::from_ed_der(pkcs8.as_ref());
        (Signer::new("k1".into(), Algorithm::EdDSA, key), jwks)
    }

    #[test]
    fn signed_assertions_verify_and_tampered_ones_do_not() {
        let (signer, jwks) = signer_and_jwks();
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let token = signer
            .sign("c1", "jean@interieur.gouv.fr", at, &Evidence::default())
            .unwrap();
        // Deterministic: the API and every webhook retry show the same bytes.
        assert_eq!(
            token,
            signer
                .sign("c1", "jean@interieur.gouv.fr", at, &Evidence::default())
                .unwrap()
        );
        let claims = verify(&token, &jwks).unwrap();
        assert_eq!(claims.address, "jean@interieur.gouv.fr");
        assert_eq!(claims.confirmed_at, "2023-11-14T22:13:20.123Z");

        let parts: Vec<&str> = token.split('.').collect();
        let mut payload = data_encoding::BASE64URL_NOPAD
            .decode(parts[1].as_bytes())
            .unwrap();
        let i = payload.iter().position(|b| *b == b'j').unwrap();
        payload[i] = b'J';
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            data_encoding::BASE64URL_NOPAD.encode(&payload),
            parts[2]
        );
        let table: &[(&str, bool)] = &[
            (&token, true),
            (&forged, false),
            ("not.a.jws", false),
            ("", false),
        ];
        for (t, ok) in table {
            assert_eq!(verify(t, &jwks).is_ok(), *ok, "{t}");
        }
        let empty = JwkSet { keys: vec![] };
        assert!(matches!(
            verify(&token, &empty),
            Err(AssertionError::UnknownKid(_))
        ));
    }
}
