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
    let fail = |error: OAuthError, description: &'static str| {
        Authorize::Redirect(Redirected {
            redirect_uri: redirect_uri.to_owned(),
            error,
            description,
            state: state.filter(|s| s.len() <= MAX_ECHO_LEN).map(str::to_owned),
            client_id: client.id.clone(),
        })
    };
    // RFC 6749 §3.1: parameters MUST NOT be included more than once.
    let mut keys: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    if keys.windows(2).any(|w| w.first() == w.get(1)) {
        return fail(OAuthError::InvalidRequest, "a parameter is repeated");
    }
    let get = |k: &str| single(params, k).ok().flatten();
    if get("request").is_some() {
        return fail(
            OAuthError::RequestNotSupported,
            "request objects are not supported",
        );
    }
    if get("request_uri").is_some() {
        return fail(
            OAuthError::RequestUriNotSupported,
            "request_uri is not supported",
        );
    }
    if get("registration").is_some() {
        return fail(
            OAuthError::RegistrationNotSupported,
            "registration is not supported",
        );
    }
    match get("response_type") {
        None => return fail(OAuthError::InvalidRequest, "response_type is missing"),
        Some("code") => {}
        Some(_) => {
            return fail(
                OAuthError::UnsupportedResponseType,
                "only response_type=code is supported",
            );
        }
    }
    if get("response_mode").is_some_and(|m| m != "query") {
        return fail(
            OAuthError::InvalidRequest,
            "only response_mode=query is supported",
        );
    }
    let scopes: Vec<&str> = get("scope").unwrap_or("").split(' ').collect();
    if !scopes.contains(&"openid") {
        return fail(OAuthError::InvalidScope, "the scope must include openid");
    }
    let granted = if scopes.contains(&"email") {
        "openid email"
    } else {
        "openid"
    };
    if get("prompt").is_some_and(|p| p.split(' ').any(|v| v == "none")) {
        return fail(
            OAuthError::LoginRequired,
            "signing in always needs a reply by mail",
        );
    }
    let nonce = get("nonce");
    if state.is_some_and(|s| s.len() > MAX_ECHO_LEN)
        || nonce.is_some_and(|n| n.len() > MAX_ECHO_LEN)
    {
        return fail(OAuthError::InvalidRequest, "state or nonce is too long");
    }
    let challenge = get("code_challenge");
    match (challenge, get("code_challenge_method")) {
        (None, Some(_)) => {
            return fail(
                OAuthError::InvalidRequest,
                "code_challenge_method without code_challenge",
            );
        }
        (Some(_), Some(m)) if m != "S256" => {
            return fail(
                OAuthError::InvalidRequest,
                "only code_challenge_method=S256 is supported",
            );
        }
        // RFC 7636 §4.3: an absent method means `plain`, which we do not accept.
        (Some(_), None) => {
            return fail(
                OAuthError::InvalidRequest,
                "code_challenge_method=S256 is required",
            );
        }
        (Some(c), Some(_)) if !is_pkce_value(c) => {
            return fail(OAuthError::InvalidRequest, "malformed code_challenge");
        }
        _ => {}
    }
    if client.secret.is_none() && challenge.is_none() {
        return fail(
            OAuthError::InvalidRequest,
            "PKCE (code_challenge, S256) is required for this client",
        );
    }
    Authorize::Accept(AuthRequest {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        scope: granted.to_owned(),
        state: state.map(str::to_owned),
        nonce: nonce.map(str::to_owned),
        code_challenge: challenge.map(str::to_owned),
    })
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
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{ClientSecret, SigningAlg};

    fn config() -> OidcConfig {
        OidcConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            issuer: "http://127.0.0.1:1".into(),
            signing_key: "k".into(),
            signing_alg: SigningAlg::Rs256,
            previous_keys: vec![],
            subject_key: "s".into(),
            code_ttl: Duration::from_secs(60),
            id_token_ttl: Duration::from_secs(300),
            flow_ttl: Duration::from_secs(1800),
            cookie_secure: false,
            clients: vec![
                OidcClient {
                    id: "conf".into(),
                    secret: Some(ClientSecret::new(b"s3cret".to_vec())),
                    redirect_uris: vec!["https://rp.example/cb".into()],
                    name: "RP".into(),
                    allowed_domains: vec![],
                },
                OidcClient {
                    id: "pub".into(),
                    secret: None,
                    redirect_uris: vec!["http://127.0.0.1:9/cb".into()],
                    name: "Public".into(),
                    allowed_domains: vec![],
                },
            ],
        }
    }

    const CH: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn q(s: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(s.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn authorize_table() {
        let base = "client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=code&scope=openid&state=xyz";
        let rows: Vec<(String, Result<&str, Option<OAuthError>>)> = vec![
            (base.to_owned(), Ok("openid")),
            (format!("{base}&nonce=n"), Ok("openid")),
            (
                "client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=code&scope=openid+email+profile".to_owned(),
                Ok("openid email"),
            ),
            ("redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=code&scope=openid".to_owned(), Err(None)),
            ("client_id=nobody&redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=code&scope=openid".to_owned(), Err(None)),
            ("client_id=conf&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&response_type=code&scope=openid".to_owned(), Err(None)),
            ("client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb%2F&response_type=code&scope=openid".to_owned(), Err(None)),
            ("client_id=conf&client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=code&scope=openid".to_owned(), Err(None)),
            (format!("{base}&scope=openid"), Err(Some(OAuthError::InvalidRequest))),
            ("client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb&scope=openid".to_owned(), Err(Some(OAuthError::InvalidRequest))),
            ("client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=token&scope=openid".to_owned(), Err(Some(OAuthError::UnsupportedResponseType))),
            ("client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=code&scope=email".to_owned(), Err(Some(OAuthError::InvalidScope))),
            (format!("{base}x&prompt=none"), Err(Some(OAuthError::LoginRequired))),
            (format!("{base}&request=eyJ"), Err(Some(OAuthError::RequestNotSupported))),
            (format!("{base}&request_uri=https%3A%2F%2Fx"), Err(Some(OAuthError::RequestUriNotSupported))),
            (format!("{base}&response_mode=fragment"), Err(Some(OAuthError::InvalidRequest))),
            (format!("{base}&code_challenge={CH}&code_challenge_method=plain"), Err(Some(OAuthError::InvalidRequest))),
            (format!("{base}&code_challenge={CH}"), Err(Some(OAuthError::InvalidRequest))),
            (format!("{base}&code_challenge=short&code_challenge_method=S256"), Err(Some(OAuthError::InvalidRequest))),
            (format!("{base}&code_challenge_method=S256"), Err(Some(OAuthError::InvalidRequest))),
            (format!("{base}&code_challenge={CH}&code_challenge_method=S256"), Ok("openid")),
            ("client_id=pub&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&response_type=code&scope=openid".to_owned(), Err(Some(OAuthError::InvalidRequest))),
            (format!("client_id=pub&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&response_type=code&scope=openid&code_challenge={CH}&code_challenge_method=S256"), Ok("openid")),
        ];
        let c = config();
        for (query, want) in &rows {
            let got = authorize(&q(query), &c);
            match (want, &got) {
                (Ok(scope), Authorize::Accept(r)) => assert_eq!(r.scope, *scope, "{query}"),
                (Err(None), Authorize::Page(_)) => {}
                (Err(Some(e)), Authorize::Redirect(r)) => {
                    assert_eq!(r.error, *e, "{query}");
                }
                _ => panic!("{query}: {got:?}"),
            }
        }
    }

    #[test]
    fn redirected_errors_keep_state() {
        let got = authorize(
            &q(
                "client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=token&scope=openid&state=s1",
            ),
            &config(),
        );
        let Authorize::Redirect(r) = got else {
            panic!("{got:?}")
        };
        assert_eq!(r.state.as_deref(), Some("s1"));
        assert_eq!(r.redirect_uri, "https://rp.example/cb");
    }

    #[test]
    fn token_request_and_client_authentication_table() {
        let basic = |id: &str, secret: &str| {
            format!(
                "Basic {}",
                data_encoding::BASE64.encode(format!("{id}:{secret}").as_bytes())
            )
        };
        let form =
            "grant_type=authorization_code&code=c&redirect_uri=https%3A%2F%2Frp.example%2Fcb";
        // (form, Authorization, expected error or the authenticated client)
        let rows: Vec<(String, Option<String>, Result<&str, OAuthError>)> = vec![
            (form.into(), Some(basic("conf", "s3cret")), Ok("conf")),
            (
                format!("{form}&client_id=conf&client_secret=s3cret"),
                None,
                Ok("conf"),
            ),
            (
                format!("{form}&client_id=conf&client_secret=wrong"),
                None,
                Err(OAuthError::InvalidClient),
            ),
            (
                form.into(),
                Some(basic("conf", "wrong")),
                Err(OAuthError::InvalidClient),
            ),
            (
                format!("{form}&client_id=conf"),
                None,
                Err(OAuthError::InvalidClient),
            ),
            (form.into(), None, Err(OAuthError::InvalidClient)),
            (
                format!("{form}&client_id=nobody&client_secret=x"),
                None,
                Err(OAuthError::InvalidClient),
            ),
            (format!("{form}&client_id=pub"), None, Ok("pub")),
            (
                format!("{form}&client_id=pub&client_secret=x"),
                None,
                Err(OAuthError::InvalidClient),
            ),
            (
                format!("{form}&client_secret=s3cret"),
                Some(basic("conf", "s3cret")),
                Err(OAuthError::InvalidRequest),
            ),
            (
                format!("{form}&client_id=pub"),
                Some(basic("conf", "s3cret")),
                Err(OAuthError::InvalidRequest),
            ),
            (
                format!("{form}&code=d&client_id=pub"),
                None,
                Err(OAuthError::InvalidRequest),
            ),
            (
                "grant_type=refresh_token&code=c&client_id=pub".into(),
                None,
                Err(OAuthError::UnsupportedGrantType),
            ),
            (
                "code=c&client_id=pub".into(),
                None,
                Err(OAuthError::InvalidRequest),
            ),
            (
                "grant_type=authorization_code&client_id=pub".into(),
                None,
                Err(OAuthError::InvalidRequest),
            ),
            (
                form.into(),
                Some("Basic !!!".into()),
                Err(OAuthError::InvalidClient),
            ),
            (form.into(), Some(basic("c%6Fnf", "s3cret")), Ok("conf")),
        ];
        let c = config();
        for (body, auth, want) in rows {
            let got = token_request(&q(&body), auth.as_deref().map(str::as_bytes))
                .and_then(|r| authenticate(&r, &c).map(|cl| cl.id.clone()));
            match (want, got) {
                (Ok(id), Ok(got)) => assert_eq!(got, id, "{body}"),
                (Err(e), Err(got)) => assert_eq!(got.error, e, "{body} {auth:?}"),
                (w, g) => panic!("{body} {auth:?}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn code_checks_table() {
        let now = Utc::now();
        let code = CodeRecord {
            code_hash: [0; 32],
            client_id: "conf".into(),
            redirect_uri: "https://rp.example/cb".into(),
            // RFC 7636 appendix B.
            code_challenge: Some(CH.into()),
            nonce: None,
            scope: "openid".into(),
            challenge_id: "c".into(),
            expires_at: now + chrono::Duration::seconds(30),
        };
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let c = config();
        let conf = &c.clients[0];
        let public = &c.clients[1];
        let req = |redirect: Option<&str>, v: Option<&str>| TokenRequest {
            code: "x".into(),
            redirect_uri: redirect.map(str::to_owned),
            code_verifier: v.map(str::to_owned),
            client_id: "conf".into(),
            secret: None,
            basic: false,
        };
        let rp = Some("https://rp.example/cb");
        let no_pkce = CodeRecord {
            code_challenge: None,
            ..code.clone()
        };
        let expired = CodeRecord {
            expires_at: now,
            ..code.clone()
        };
        let rows: Vec<(&CodeRecord, &OidcClient, TokenRequest, bool)> = vec![
            (&code, conf, req(rp, Some(verifier)), true),
            (
                &code,
                conf,
                req(rp, Some(&verifier.replace('d', "e"))),
                false,
            ),
            (&code, conf, req(rp, None), false),
            (&code, conf, req(None, Some(verifier)), false),
            (
                &code,
                conf,
                req(Some("https://rp.example/other"), Some(verifier)),
                false,
            ),
            (&code, public, req(rp, Some(verifier)), false),
            (&expired, conf, req(rp, Some(verifier)), false),
            (&no_pkce, conf, req(rp, None), true),
            (&no_pkce, conf, req(rp, Some(verifier)), false),
        ];
        for (i, (code, client, r, ok)) in rows.into_iter().enumerate() {
            let got = check_code(code, client, &r, now);
            assert_eq!(got.is_ok(), ok, "row {i}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.error, OAuthError::InvalidGrant, "row {i}");
            }
        }
    }
}
