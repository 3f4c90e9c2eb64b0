//! The ID token, the access token and the userinfo answer (SPEC §9; OIDC Core §2, §5.1).
//!
//! - ID token: `iss`, `sub`, `aud` (the client), `azp`, `exp`, `iat`, `auth_time` (when the
//!   reply was accepted: that is when the person proved the mailbox), `nonce` when the
//!   request had one, `email` (canonical), `email_verified: true`, `amr: ["mail-reply"]` and
//!   `gatekeeper_evidence` (DKIM `d=`/`s=`, SPF result, the replying server's IP, SHA-256 of
//!   the reply's Message-ID, `confirmed_at`). The Message-ID is hashed: it identifies a mail
//!   in the person's mailbox and a relying party needs only to match it with our audit
//!   trail, not to read it.
//! - Access token: a JWT (RFC 9068, `typ: at+jwt`) for `/userinfo` only: audience
//!   `<issuer>/userinfo`, same lifetime as the ID token, the same claims. Self-contained, so
//!   `/userinfo` needs no store read; there are no refresh tokens.
//! - The challenge token never appears here: nothing on this side ever sees it (the
//!   challenge service returns no token, the store keeps its hash).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::Evidence;
use crate::challenge::format_time;

/// `amr` of every sign-in.
pub const AMR: &str = "mail-reply";

/// `gatekeeper_evidence`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceClaim {
    pub dkim_domain: String,
    pub dkim_selector: String,
    pub spf: String,
    pub client_ip: String,
    /// SHA-256 (lower-case hex) of the reply's Message-ID, when it had one.
    pub message_id_sha256: Option<String>,
    pub confirmed_at: String,
}

impl EvidenceClaim {
    pub fn new(e: &Evidence, confirmed_at: DateTime<Utc>) -> Self {
        Self {
            dkim_domain: e.dkim_domain.clone(),
            dkim_selector: e.dkim_selector.clone(),
            spf: e.spf.clone(),
            client_ip: e.client_ip.clone(),
            message_id_sha256: e.message_id.as_ref().map(|m| {
                let d = ring::digest::digest(&ring::digest::SHA256, m.as_bytes());
                data_encoding::HEXLOWER.encode(d.as_ref())
            }),
            confirmed_at: format_time(&confirmed_at),
        }
    }
}

/// The ID token's claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdToken {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub azp: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nonce: Option<String>,
    pub email: String,
    pub email_verified: bool,
    pub amr: Vec<String>,
    pub gatekeeper_evidence: EvidenceClaim,
}

/// The access token's claims (RFC 9068 §2.2 plus what `/userinfo` answers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessToken {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub scope: String,
    pub email: String,
    pub gatekeeper_evidence: EvidenceClaim,
}

/// The `/userinfo` answer (OIDC Core §5.3.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
    pub gatekeeper_evidence: EvidenceClaim,
}

impl From<AccessToken> for UserInfo {
    fn from(a: AccessToken) -> Self {
        Self {
            sub: a.sub,
            email: a.email,
            email_verified: true,
            gatekeeper_evidence: a.gatekeeper_evidence,
        }
    }
}

/// The userinfo audience for an issuer.
pub fn userinfo_audience(issuer: &str) -> String {
    format!("{issuer}/userinfo")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn evidence_hashes_the_message_id() {
        let e = Evidence {
            client_ip: "192.0.2.1".into(),
            dkim_domain: "interieur.gouv.fr".into(),
            dkim_selector: "s1".into(),
            spf: "pass".into(),
            message_id: Some("abc@x".into()),
            ..Evidence::default()
        };
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let c = EvidenceClaim::new(&e, now);
        assert_eq!(c.confirmed_at, "2027-01-15T08:00:00Z");
        let h = c.message_id_sha256.unwrap();
        assert_eq!(h.len(), 64);
        assert!(!h.contains("abc"));
        let none = EvidenceClaim::new(
            &Evidence {
                message_id: None,
                ..e
            },
            now,
        );
        assert_eq!(none.message_id_sha256, None);
    }
}
