//! `[oidc]` and `[[oidc.client]]` (SPEC §9): the OpenID Provider, through the same two
//! stages as every other table — raw serde structs that refuse unknown keys, then one
//! validation that collects every problem under its key (so `file:line` errors).
//!
//! # Decisions where SPEC §9 is silent
//!
//! - `signing_alg` (`"RS256"` default, or `"EdDSA"`) says which key `signing_key` holds, or
//!   which to create when the file is missing; a file of the other kind is refused at start.
//! - `previous_keys`: PEM files published in the JWKS but never used to sign, for rotation
//!   (README "Rotating the OpenID Provider key").
//! - `subject_key`: the secret of `sub = HMAC-SHA256(subject_key, canonical address)`,
//!   created (0600, 256 random bits) at first start. Kept apart from the signing key so a
//!   key rotation does not change anybody's `sub`.
//! - `flow_ttl` (`"30m"`): how long a sign-in page lives from `/authorize` to the redirect.
//! - Client secrets are read here (a missing or empty `secret_file` is a configuration
//!   error with its line, not a failure at the first sign-in); [`ClientSecret`]'s `Debug` is
//!   redacted. A client without `secret_file` is public: PKCE is then required.
//! - URLs: `issuer` and every redirect URI must be absolute `https` URLs, or `http` on a
//!   loopback host (`localhost`, `127.0.0.0/8`, `[::1]`); no fragment; the issuer has no
//!   query and no trailing slash (RFC 8414 §2), a redirect URI no user info.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::check::Check;
use super::error::KeyPath;
use crate::address::{Domain, ParseOptions};

/// `[oidc]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    /// The provider's own listener, `"ip:port"` (usually behind an HTTPS reverse proxy).
    pub listen: String,
    /// The public base URL: the `iss` claim, and every endpoint URL derives from it.
    pub issuer: String,
    /// PEM private key that signs ID tokens; created at first start when missing.
    #[serde(default = "default_signing_key")]
    pub signing_key: String,
    /// `RS256` (RSA 2048 when created) or `EdDSA` (Ed25519).
    #[serde(default = "default_signing_alg")]
    pub signing_alg: String,
    /// Keys of earlier rotations, still published in the JWKS (never used to sign).
    #[serde(default)]
    pub previous_keys: Vec<String>,
    /// Secret of the `sub` HMAC; created at first start when missing.
    #[serde(default = "default_subject_key")]
    pub subject_key: String,
    /// Lifetime of an authorization code.
    #[serde(default = "default_code_ttl")]
    pub code_ttl: String,
    /// Lifetime of an ID token (and of the access token for `/userinfo`).
    #[serde(default = "default_id_token_ttl")]
    pub id_token_ttl: String,
    /// Lifetime of a sign-in page, from `/authorize` to the redirect.
    #[serde(default = "default_flow_ttl")]
    pub flow_ttl: String,
    /// `Secure` on the browser cookie; default true unless the issuer is http on loopback.
    #[serde(default)]
    pub cookie_secure: Option<bool>,
    /// `[[oidc.client]]`: the relying parties.
    #[serde(default)]
    pub client: Vec<RawOidcClient>,
}

/// One `[[oidc.client]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidcClient {
    /// `client_id`.
    pub id: String,
    /// File holding the client secret; absent = a public client (PKCE required).
    #[serde(default)]
    pub secret_file: Option<String>,
    /// Redirect URIs, compared as exact strings.
    pub redirect_uris: Vec<String>,
    /// Shown on the sign-in page.
    pub name: String,
    /// Narrower than `policy.allowed_domains`: only these (and their subdomains) may sign in.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
}

pub fn default_signing_key() -> String {
    "var/oidc-signing-key.pem".to_owned()
}
pub fn default_signing_alg() -> String {
    "RS256".to_owned()
}
pub fn default_subject_key() -> String {
    "var/oidc-subject-key".to_owned()
}
pub fn default_code_ttl() -> String {
    "60s".to_owned()
}
pub fn default_id_token_ttl() -> String {
    "5m".to_owned()
}
pub fn default_flow_ttl() -> String {
    "30m".to_owned()
}

/// The validated `[oidc]`.
#[derive(Clone, Debug)]
pub struct OidcConfig {
    pub listen: SocketAddr,
    /// Without trailing slash.
    pub issuer: String,
    pub signing_key: PathBuf,
    pub signing_alg: SigningAlg,
    pub previous_keys: Vec<PathBuf>,
    pub subject_key: PathBuf,
    pub code_ttl: Duration,
    pub id_token_ttl: Duration,
    pub flow_ttl: Duration,
    pub cookie_secure: bool,
    pub clients: Vec<OidcClient>,
}

impl OidcConfig {
    pub fn client(&self, id: &str) -> Option<&OidcClient> {
        self.clients.iter().find(|c| c.id == id)
    }
}

/// The JWS algorithm of ID tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningAlg {
    Rs256,
    EdDsa,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::Rs256 => "RS256",
            SigningAlg::EdDsa => "EdDSA",
        }
    }
}

/// One relying party.
#[derive(Clone, Debug)]
pub struct OidcClient {
    pub id: String,
    /// `None`: a public client.
    pub secret: Option<ClientSecret>,
    pub redirect_uris: Vec<String>,
    pub name: String,
    /// Empty: the policy's domains.
    pub allowed_domains: Vec<Domain>,
}

/// A client secret as read from its file (surrounding whitespace removed). `Debug` redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(Vec<u8>);

impl ClientSecret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// Longest client id, name and redirect URI accepted (they travel in URLs and pages).
const MAX_ID_LEN: usize = 128;
const MAX_NAME_LEN: usize = 100;
const MAX_URI_LEN: usize = 2000;

/// Whether a URL host is a loopback name or address (plain http is allowed there only).
pub fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

impl Check {
    pub(super) fn oidc(&mut self, raw: &RawOidc, opts: &ParseOptions) -> Option<OidcConfig> {
        let at = KeyPath::of(&["oidc"]);
        let listen = self.socket(&at.key("listen"), &raw.listen);
        let issuer = self.issuer(&at.key("issuer"), &raw.issuer);
        let signing_alg = match raw.signing_alg.as_str() {
            "RS256" => Some(SigningAlg::Rs256),
            "EdDSA" => Some(SigningAlg::EdDsa),
            other => {
                self.fail(
                    &at.key("signing_alg"),
                    format!("{other:?}: use \"RS256\" or \"EdDSA\""),
                );
                None
            }
        };
        let secs = Duration::from_secs;
        let code_ttl = self.duration(&at.key("code_ttl"), &raw.code_ttl, secs(1), secs(600));
        let id_token_ttl = self.duration(
            &at.key("id_token_ttl"),
            &raw.id_token_ttl,
            secs(10),
            secs(86_400),
        );
        let flow_ttl = self.duration(&at.key("flow_ttl"), &raw.flow_ttl, secs(60), secs(86_400));
        let previous_keys = raw
            .previous_keys
            .iter()
            .enumerate()
            .map(|(i, p)| self.path(&at.key("previous_keys").index(i), p))
            .collect();
        let plain_loopback = issuer
            .as_ref()
            .is_some_and(|u| u.scheme() == "http" && is_loopback_host(u));
        if raw.cookie_secure == Some(false) && !plain_loopback {
            self.fail(
                &at.key("cookie_secure"),
                "may be false only for a plain-http loopback issuer",
            );
        }
        let mut clients = Vec::new();
        let mut ids = std::collections::BTreeSet::new();
        for (i, rc) in raw.client.iter().enumerate() {
            let cat = at.key("client").index(i);
            if !ids.insert(rc.id.as_str()) {
                self.fail(&cat.key("id"), format!("{:?} is listed twice", rc.id));
            }
            if let Some(c) = self.oidc_client(&cat, rc, opts) {
                clients.push(c);
            }
        }
        Some(OidcConfig {
            listen: listen?,
            issuer: issuer?.as_str().trim_end_matches('/').to_owned(),
            signing_key: self.path(&at.key("signing_key"), &raw.signing_key),
            signing_alg: signing_alg?,
            previous_keys,
            subject_key: self.path(&at.key("subject_key"), &raw.subject_key),
            code_ttl,
            id_token_ttl,
            flow_ttl,
            cookie_secure: raw.cookie_secure.unwrap_or(!plain_loopback),
            clients,
        })
    }

    fn oidc_client(
        &mut self,
        at: &KeyPath,
        raw: &RawOidcClient,
        opts: &ParseOptions,
    ) -> Option<OidcClient> {
        // RFC 6749 §A.1: client_id = *VSCHAR; we keep to a URL- and log-safe subset.
        let id_ok = (1..=MAX_ID_LEN).contains(&raw.id.len())
            && raw
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if !id_ok {
            self.fail(
                &at.key("id"),
                format!("{:?}: use 1 to {MAX_ID_LEN} of A-Z a-z 0-9 - _ . :", raw.id),
            );
        }
        if raw.name.trim().is_empty()
            || raw.name.chars().count() > MAX_NAME_LEN
            || raw.name.chars().any(char::is_control)
        {
            self.fail(
                &at.key("name"),
                format!("must be 1 to {MAX_NAME_LEN} characters without control characters"),
            );
        }
        if raw.redirect_uris.is_empty() {
            self.fail(&at.key("redirect_uris"), "must list at least one URI");
        }
        let mut uris = Vec::new();
        for (i, u) in raw.redirect_uris.iter().enumerate() {
            if self.redirect_uri(&at.key("redirect_uris").index(i), u) {
                uris.push(u.clone());
            }
        }
        let secret = match &raw.secret_file {
            None => None,
            Some(path) => self.secret(&at.key("secret_file"), path),
        };
        let allowed_domains = self.domains(&at.key("allowed_domains"), &raw.allowed_domains, opts);
        if !id_ok || (raw.secret_file.is_some() && secret.is_none()) {
            return None;
        }
        Some(OidcClient {
            id: raw.id.clone(),
            secret,
            redirect_uris: uris,
            name: raw.name.clone(),
            allowed_domains,
        })
    }

    fn secret(&mut self, at: &KeyPath, path: &str) -> Option<ClientSecret> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = bytes.trim_ascii();
                if text.is_empty() {
                    self.fail(at, format!("{path:?} is empty"));
                    None
                } else {
                    Some(ClientSecret::new(text.to_vec()))
                }
            }
            Err(e) => {
                self.fail(at, format!("{path:?} cannot be read: {e}"));
                None
            }
        }
    }

    /// An absolute URL, https unless the host is loopback, no fragment.
    fn web_url(&mut self, at: &KeyPath, text: &str) -> Option<url::Url> {
        if text.len() > MAX_URI_LEN {
            self.fail(at, format!("longer than {MAX_URI_LEN} characters"));
            return None;
        }
        let url = match url::Url::parse(text) {
            Ok(u) => u,
            Err(e) => {
                self.fail(at, format!("{text:?} is not an absolute URL ({e})"));
                return None;
            }
        };
        let ok = match url.scheme() {
            "https" => url.host().is_some(),
            "http" => is_loopback_host(&url),
            _ => false,
        };
        if !ok {
            self.fail(
                at,
                format!("{text:?} must be https (http only on a loopback host)"),
            );
            return None;
        }
        if url.fragment().is_some() {
            self.fail(at, format!("{text:?} must not have a fragment"));
            return None;
        }
        Some(url)
    }

    fn issuer(&mut self, at: &KeyPath, text: &str) -> Option<url::Url> {
        let url = self.web_url(at, text)?;
        if text.ends_with('/') {
            self.fail(at, format!("{text:?} must not end with '/'"));
            return None;
        }
        if url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
            self.fail(at, format!("{text:?} must have no query and no user info"));
            return None;
        }
        Some(url)
    }

    fn redirect_uri(&mut self, at: &KeyPath, text: &str) -> bool {
        let Some(url) = self.web_url(at, text) else {
            return false;
        };
        if !url.username().is_empty() || url.password().is_some() {
            self.fail(at, format!("{text:?} must have no user info"));
            return false;
        }
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn url_rules() {
        // (url, ok as issuer, ok as redirect URI)
        let rows: &[(&str, bool, bool)] = &[
            ("https://id.example.gouv.fr", true, true),
            ("https://id.example.gouv.fr/oidc", true, true),
            ("https://id.example.gouv.fr/", false, true),
            ("http://127.0.0.1:8080", true, true),
            ("http://localhost:8080/cb", true, true),
            ("http://[::1]:9000/cb", true, true),
            ("http://id.example.gouv.fr", false, false),
            ("https://rp.example/cb?x=1", false, true),
            ("https://rp.example/cb#frag", false, false),
            ("https://user:pw@rp.example/cb", false, false),
            ("/relative/cb", false, false),
            ("ftp://rp.example/cb", false, false),
            ("javascript:alert(1)", false, false),
        ];
        for (text, issuer, redirect) in rows {
            let mut c = Check::default();
            assert_eq!(
                c.issuer(&KeyPath::of(&["oidc", "issuer"]), text).is_some(),
                *issuer,
                "issuer {text}"
            );
            let mut c = Check::default();
            assert_eq!(
                c.redirect_uri(&KeyPath::of(&["oidc", "redirect_uris"]), text),
                *redirect,
                "redirect {text}"
            );
        }
    }

    #[test]
    fn secret_redacted() {
        let s = ClientSecret::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "ClientSecret([redacted])");
    }
}
