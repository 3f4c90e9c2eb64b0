//! The protocol rules of `/authorize` and `/token`, as pure functions of the request's
//! parameters, the configuration and `now` (no I/O, tested as tables below and over HTTP in
//! tests/oidc.rs).
//!
//! # `/authorize` (RFC 6749 §4.1.1, §4.1.2.1; OIDC Core §3.1.2)
//!
//! In this order, because the order decides whether an error may be redirected:
//!
//! 1. `client_id` and `redirect_uri` must each appear once, name a configured client and one
//!    of its redirect URIs exactly (string equality). Otherwise the page shows the error and
//!    nothing is redirected (§4.1.2.1: a bad client or redirect URI MUST NOT redirect, or
//!    the provider becomes an open redirector).
//! 2. Every other error goes back to the client's redirect URI with `error`,
//!    `error_description`, `state` and `iss` (RFC 9207): a repeated parameter or a bad
//!    `response_mode` is `invalid_request`, `request` / `request_uri` / `registration` their
//!    OIDC `*_not_supported`, a `response_type` other than `code`
//!    `unsupported_response_type`, a scope without `openid` `invalid_scope`, `prompt=none`
//!    `login_required` (a reply by mail is always an interaction), a PKCE method other than
//!    `S256` or a malformed challenge `invalid_request`, and a public client without PKCE
//!    `invalid_request`.
//! 3. Granted scope: `openid`, plus `email` when asked (the claims are the same: the
//!    address is the identity). Other scopes (`profile`, ...) are ignored, as §3.3 allows.
//!
//! # `/token` (RFC 6749 §4.1.3, §5.2; RFC 7636 §4.6)
//!
//! Client authentication first (`client_secret_basic` or `client_secret_post`, never both;
//! a public client sends only `client_id`), then the code. Every code failure is
//! `invalid_grant` — unknown, used, expired, issued to another client, another redirect URI,
//! PKCE verifier missing or wrong, or a verifier for a code issued without a challenge (the
//! PKCE downgrade, RFC 9700 §2.1.1).

use chrono::{DateTime, Utc};

use super::error::OAuthError;
use crate::config::{OidcClient, OidcConfig};
use crate::store::oidc::CodeRecord;

/// Longest `state` / `nonce` accepted (they are stored and sent back).
pub const MAX_ECHO_LEN: usize = 512;

/// A validated authorization request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    /// The granted scope, space-separated.
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
}

/// Shown on the page, never redirected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageError {
    /// `client_id` missing, repeated or unknown.
    UnknownClient,
    /// `redirect_uri` missing, repeated or not one of the client's.
    BadRedirectUri,
}

impl PageError {
    /// The `error` value the audit event records.
    pub fn code(self) -> &'static str {
        match self {
            PageError::UnknownClient => "unknown_client",
            PageError::BadRedirectUri => "invalid_redirect_uri",
        }
    }
}

/// An error sent back to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirected {
    pub redirect_uri: String,
    pub error: OAuthError,
    pub description: &'static str,
    pub state: Option<String>,
    pub client_id: String,
}

/// The decision on an authorization request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authorize {
    Accept(AuthRequest),
    Page(PageError),
    Redirect(Redirected),
}

/// The single value of `key`, `Err(())` when repeated.
fn single<'a>(params: &'a [(String, String)], key: &str) -> Result<Option<&'a str>, ()> {
    let mut found = None;
    for (k, v) in params {
        if k == key {
            if found.is_some() {
                return Err(());
            }
            found = Some(v.as_str());
        }
    }
    Ok(found)
}

/// RFC 7636 §4.2: S256 challenge = BASE64URL(SHA256(verifier)), 43 characters; we accept
/// the unreserved alphabet at 43..=128 as §4.1 bounds verifiers.
fn is_pkce_value(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Decide on the query of `GET /authorize`.
pub fn authorize(params: &[(String, String)], config: &OidcConfig) -> Authorize {
    let Ok(Some(client_id)) = single(params, "client_id") else {
        return Authorize::Page(PageError::UnknownClient);
    };
    let Some(client) = config.client(client_id) else {
        return Authorize::Page(PageError::UnknownClient);
    };
    let Ok(Some(redirect_uri)) = single(params, "redirect_uri") else {
        return Authorize::Page(PageError::BadRedirectUri);
    };
    if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return Authorize::Page(PageError::BadRedirectUri);
    }
    // From here errors are redirected; `state` goes back with them when it is readable.
    let state = single(params, "state").ok().flatten();
    match check_params(params, client.secret.is_none()) {
        Ok(granted) => Authorize::Accept(AuthRequest {
            client_id: client.id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            scope: granted.scope.to_owned(),
            state: state.map(str::to_owned),
            nonce: granted.nonce.map(str::to_owned),
            code_challenge: granted.code_challenge.map(str::to_owned),
        }),
        Err((error, description)) => Authorize::Redirect(Redirected {
            redirect_uri: redirect_uri.to_owned(),
            error,
            description,
            state: state.filter(|s| s.len() <= MAX_ECHO_LEN).map(str::to_owned),
            client_id: client.id.clone(),
        }),
    }
}

/// What [`check_params`] grants.
struct Granted<'a> {
    scope: &'static str,
    nonce: Option<&'a str>,
    code_challenge: Option<&'a str>,
}

/// Step 2 of the module docs: every rule whose failure is redirected to the client.
fn check_params(
    params: &[(String, String)],
    public_client: bool,
) -> Result<Granted<'_>, (OAuthError, &'static str)> {
    use OAuthError as E;
    // RFC 6749 §3.1: parameters MUST NOT be included more than once.
    let mut keys: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    if keys.windows(2).any(|w| w.first() == w.get(1)) {
        return Err((E::InvalidRequest, "a parameter is repeated"));
    }
    let get = |k: &str| single(params, k).ok().flatten();
    let unsupported = [
        (
            "request",
            E::RequestNotSupported,
            "request objects are not supported",
        ),
        (
            "request_uri",
            E::RequestUriNotSupported,
            "request_uri is not supported",
        ),
        (
            "registration",
            E::RegistrationNotSupported,
            "registration is not supported",
        ),
    ];
    if let Some((_, e, d)) = unsupported.iter().find(|(k, _, _)| get(k).is_some()) {
        return Err((*e, d));
    }
    match get("response_type") {
        None => return Err((E::InvalidRequest, "response_type is missing")),
        Some("code") => {}
        Some(_) => {
            return Err((
                E::UnsupportedResponseType,
                "only response_type=code is supported",
            ));
        }
    }
    if get("response_mode").is_some_and(|m| m != "query") {
        return Err((E::InvalidRequest, "only response_mode=query is supported"));
    }
    let scopes: Vec<&str> = get("scope").unwrap_or("").split(' ').collect();
    if !scopes.contains(&"openid") {
        return Err((E::InvalidScope, "the scope must include openid"));
    }
    if get("prompt").is_some_and(|p| p.split(' ').any(|v| v == "none")) {
        return Err((E::LoginRequired, "signing in always needs a reply by mail"));
    }
    let nonce = get("nonce");
    if get("state").is_some_and(|s| s.len() > MAX_ECHO_LEN)
        || nonce.is_some_and(|n| n.len() > MAX_ECHO_LEN)
    {
        return Err((E::InvalidRequest, "state or nonce is too long"));
    }
    let code_challenge = get("code_challenge");
    check_pkce(code_challenge, get("code_challenge_method"), public_client)?;
    Ok(Granted {
        scope: if scopes.contains(&"email") {
            "openid email"
        } else {
            "openid"
        },
        nonce,
        code_challenge,
    })
}

/// RFC 7636 at `/authorize`: S256 only (an absent method means `plain`, §4.3), a well-formed
/// challenge, and PKCE required from a public client.
fn check_pkce(
    challenge: Option<&str>,
    method: Option<&str>,
    public_client: bool,
) -> Result<(), (OAuthError, &'static str)> {
    use OAuthError as E;
    match (challenge, method) {
        (None, Some(_)) => Err((
            E::InvalidRequest,
            "code_challenge_method without code_challenge",
        )),
        (Some(_), Some(m)) if m != "S256" => Err((
            E::InvalidRequest,
            "only code_challenge_method=S256 is supported",
        )),
        (Some(_), None) => Err((E::InvalidRequest, "code_challenge_method=S256 is required")),
        (Some(c), Some(_)) if !is_pkce_value(c) => {
            Err((E::InvalidRequest, "malformed code_challenge"))
        }
        (None, None) if public_client => Err((
            E::InvalidRequest,
            "PKCE (code_challenge, S256) is required for this client",
        )),
        _ => Ok(()),
    }
}

/// A `/token` failure: the error and whether it answers a `client_secret_basic` attempt
/// (then 401 carries `WWW-Authenticate: Basic`, RFC 6749 §5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenError {
    pub error: OAuthError,
    pub description: &'static str,
    pub basic: bool,
    /// The client, once authenticated (for the audit event).
    pub client_id: Option<String>,
}

fn token_error(error: OAuthError, description: &'static str) -> TokenError {
    TokenError {
        error,
        description,
        basic: false,
        client_id: None,
    }
}

/// The parameters of `POST /token` once parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenRequest {
    pub code: String,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    /// From `client_secret_basic` or the body.
    pub client_id: String,
    pub secret: Option<Vec<u8>>,
    pub basic: bool,
}

/// Parse the form and the `Authorization` header (its value, if any).
pub fn token_request(
    params: &[(String, String)],
    authorization: Option<&[u8]>,
) -> Result<TokenRequest, TokenError> {
    let mut keys: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    if keys.windows(2).any(|w| w.first() == w.get(1)) {
        return Err(token_error(
            OAuthError::InvalidRequest,
            "a parameter is repeated",
        ));
    }
    let get = |k: &str| single(params, k).ok().flatten();
    let basic = match authorization {
        None => None,
        Some(value) => Some(parse_basic(value).ok_or(TokenError {
            basic: true,
            ..token_error(OAuthError::InvalidClient, "malformed Basic credentials")
        })?),
    };
    match get("grant_type") {
        None => {
            return Err(token_error(
                OAuthError::InvalidRequest,
                "grant_type is missing",
            ));
        }
        Some("authorization_code") => {}
        Some(_) => {
            return Err(token_error(
                OAuthError::UnsupportedGrantType,
                "only authorization_code is supported",
            ));
        }
    }
    let Some(code) = get("code") else {
        return Err(token_error(OAuthError::InvalidRequest, "code is missing"));
    };
    let (client_id, secret, is_basic) = match basic {
        Some((id, secret)) => {
            // RFC 6749 §2.3: one authentication method per request.
            if get("client_secret").is_some() {
                return Err(token_error(
                    OAuthError::InvalidRequest,
                    "use one client authentication method",
                ));
            }
            if get("client_id").is_some_and(|b| b != id) {
                return Err(token_error(
                    OAuthError::InvalidRequest,
                    "client_id differs from the Basic credentials",
                ));
            }
            (id, Some(secret), true)
        }
        None => {
            let Some(id) = get("client_id") else {
                return Err(token_error(
                    OAuthError::InvalidClient,
                    "no client authentication",
                ));
            };
            (
                id.to_owned(),
                get("client_secret").map(|s| s.as_bytes().to_vec()),
                false,
            )
        }
    };
    Ok(TokenRequest {
        code: code.to_owned(),
        redirect_uri: get("redirect_uri").map(str::to_owned),
        code_verifier: get("code_verifier").map(str::to_owned),
        client_id,
        secret,
        basic: is_basic,
    })
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn parse_basic(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = data_encoding::BASE64
        .decode(value.get(6..)?.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let id = decoded.get(..colon)?;
    let secret = decoded.get(colon + 1..)?;
    let id: String = form_urlencoded::parse(&[b"x=", id].concat())
        .next()
        .map(|(_, v)| v.into_owned())?;
    let secret: String = form_urlencoded::parse(&[b"x=", secret].concat())
        .next()
        .map(|(_, v)| v.into_owned())?;
    Some((id, secret.into_bytes()))
}

/// Authenticate the client of a token request (constant-time secret comparison).
pub fn authenticate<'a>(
    req: &TokenRequest,
    config: &'a OidcConfig,
) -> Result<&'a OidcClient, TokenError> {
    let refuse = |description| TokenError {
        basic: req.basic,
        ..token_error(OAuthError::InvalidClient, description)
    };
    let client = config
        .client(&req.client_id)
        .ok_or_else(|| refuse("unknown client"))?;
    match (&client.secret, &req.secret) {
        (Some(expected), Some(given)) => {
            if crate::challenge::secrets_equal(expected.expose(), given) {
                Ok(client)
            } else {
                Err(refuse("client authentication failed"))
            }
        }
        (Some(_), None) => Err(refuse("client authentication required")),
        (None, None) => Ok(client),
        // A public client has no secret to present: one that does is misconfigured.
        (None, Some(_)) => Err(refuse("this client has no secret")),
    }
}

/// Check a taken code against the request (the code is used up whatever the answer).
pub fn check_code(
    code: &CodeRecord,
    client: &OidcClient,
    req: &TokenRequest,
    now: DateTime<Utc>,
) -> Result<(), TokenError> {
    let refuse = |description| TokenError {
        client_id: Some(client.id.clone()),
        ..token_error(OAuthError::InvalidGrant, description)
    };
    if code.expires_at <= now {
        return Err(refuse("the code has expired"));
    }
    if code.client_id != client.id {
        return Err(refuse("the code was issued to another client"));
    }
    if req.redirect_uri.as_deref() != Some(code.redirect_uri.as_str()) {
        return Err(refuse(
            "redirect_uri does not match the authorization request",
        ));
    }
    match (&code.code_challenge, &req.code_verifier) {
        (Some(challenge), Some(verifier)) => {
            if !is_pkce_value(verifier) {
                return Err(refuse("malformed code_verifier"));
            }
            let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
            let computed = data_encoding::BASE64URL_NOPAD.encode(digest.as_ref());
            if !crate::challenge::secrets_equal(computed.as_bytes(), challenge.as_bytes()) {
                return Err(refuse("code_verifier does not match the code_challenge"));
            }
        }
        (Some(_), None) => return Err(refuse("code_verifier is missing")),
        (None, Some(_)) => {
            return Err(refuse(
                "code_verifier sent for a code issued without code_challenge",
            ));
        }
        (None, None) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
