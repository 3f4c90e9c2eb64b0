//! The provider's HTTP side (axum 0.8): read the rows, ask the pure rules (`request.rs`,
//! `flow.rs`), write the rows, render or redirect, and record the audit event and metric of
//! every answer. See `mod.rs` for the endpoints and decisions.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Redirect, Response};
use axum::routing::get;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Header, Validation};

use super::claims::{AccessToken, EvidenceClaim, IdToken, UserInfo, userinfo_audience};
use super::error::OAuthError;
use super::explain::{self, Explanation};
use super::flow::{self, View};
use super::page::{self, AddressPage, Frame, Message, PendingPage};
use super::request::{self, Authorize, Redirected, TokenError};
use super::{COOKIE, Provider};
use crate::address::Mailbox;
use crate::audit::{Action, AuditEvent, Check, Outcome};
use crate::challenge::{CreateError, random_base32, secrets_equal};
use crate::reason::Reason;
use crate::store::oidc::{CodeRecord, CodeTake, FlowRecord};
use crate::store::{ChallengeRecord, Status, Store};

/// Largest form or query accepted (a request carries a few short parameters).
const MAX_BODY_BYTES: usize = 16 * 1024;

type Shared<S> = State<Arc<Provider<S>>>;

pub(super) fn router<S: Store>(p: Arc<Provider<S>>) -> axum::Router {
    let base = p.base.clone();
    let https = p.https;
    let at = |path: &str| format!("{base}{path}");
    axum::Router::new()
        .route(
            &at("/.well-known/openid-configuration"),
            get(discovery::<S>),
        )
        .route(&at("/jwks.json"), get(jwks::<S>))
        .route(
            &at("/authorize"),
            get(authorize_get::<S>).post(authorize_post::<S>),
        )
        .route(&at("/authorize/status"), get(status::<S>))
        .route(&at("/token"), axum::routing::post(token::<S>))
        .route(&at("/userinfo"), get(userinfo::<S>).post(userinfo::<S>))
        .route(&at("/static/{*name}"), get(asset))
        .fallback(not_found::<S>)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            secured(req, next, https)
        }))
        .with_state(p)
}

async fn secured(req: Request, next: Next, https: bool) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut response = next.run(req).await;
    page::secure_headers(response.headers_mut(), https);
    // Never the query: it carries codes, flow ids and state.
    tracing::info!(%method, %path, status = response.status().as_u16(), "oidc request");
    response
}

impl<S: Store> Provider<S> {
    fn frame(&self) -> Frame<'_> {
        Frame {
            base: &self.base,
            service: &self.service,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.issuer)
    }

    fn random(&self, bytes: usize) -> Option<String> {
        random_base32(&self.rng, bytes).ok()
    }

    /// One audit event and one metric for an answer.
    fn record(&self, r: Record<'_>) {
        let mut ev = AuditEvent::new(Utc::now(), Action::OidcSignin, None, r.flow.unwrap_or("-"));
        ev.outcome = if r.error.is_none() {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        ev.reply_code = Some(r.status);
        ev.source_ip = r.peer.map(|p| p.ip());
        ev.source_port = r.peer.map(|p| p.port());
        ev.from = r.address.map(str::to_owned);
        ev.challenge_id = r.challenge_id.map(str::to_owned);
        ev.message = r.description.map(str::to_owned);
        let error = r.error.unwrap_or("ok");
        ev.checks = vec![
            Check {
                name: "oidc.stage",
                result: r.stage.to_owned(),
            },
            Check {
                name: "oidc.client_id",
                result: r.client_id.unwrap_or("-").to_owned(),
            },
            Check {
                name: "oidc.error",
                result: error.to_owned(),
            },
        ];
        self.metrics.oidc(r.stage, error);
        self.audit.emit(ev);
    }

    fn cookie(&self, value: String) -> Cookie<'static> {
        let path = if self.base.is_empty() {
            "/".to_owned()
        } else {
            self.base.clone()
        };
        Cookie::build((COOKIE, value))
            .http_only(true)
            .secure(self.config.cookie_secure)
            .same_site(SameSite::Lax)
            .path(path)
            .build()
    }
}

/// What one audit event says (fields as in [`AuditEvent`]).
#[derive(Default)]
struct Record<'a> {
    stage: &'static str,
    status: u16,
    client_id: Option<&'a str>,
    error: Option<&'static str>,
    description: Option<&'static str>,
    peer: Option<SocketAddr>,
    flow: Option<&'a str>,
    address: Option<&'a str>,
    challenge_id: Option<&'a str>,
}

fn pairs(raw: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(raw)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn peer_of(peer: SocketAddr) -> Option<SocketAddr> {
    Some(peer)
}

// ---- discovery and keys ----------------------------------------------------------------

async fn discovery<S: Store>(State(p): Shared<S>) -> Response {
    let doc = serde_json::json!({
        "issuer": p.config.issuer,
        "authorization_endpoint": p.url("/authorize"),
        "token_endpoint": p.url("/token"),
        "userinfo_endpoint": p.url("/userinfo"),
        "jwks_uri": p.url("/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [p.config.signing_alg.as_str()],
        "scopes_supported": ["openid", "email"],
        "claims_supported": ["iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "nonce",
            "email", "email_verified", "amr", "gatekeeper_evidence"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "ui_locales_supported": ["fr", "en"],
    });
    cacheable(Json(doc).into_response())
}

async fn jwks<S: Store>(State(p): Shared<S>) -> Response {
    cacheable(Json(p.keys.jwks()).into_response())
}

/// Public documents may be cached briefly (relying parties fetch them often).
fn cacheable(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

async fn asset(UrlPath(name): UrlPath<String>) -> Response {
    match super::assets::get(&name) {
        Some((content_type, bytes)) => {
            let mut r = (
                [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
                bytes,
            )
                .into_response();
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            r
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn not_found<S: Store>(State(p): Shared<S>) -> Response {
    Message::NotFound.render(&p.frame())
}

// ---- /authorize ------------------------------------------------------------------------

async fn authorize_get<S: Store>(
    State(p): Shared<S>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: CookieJar,
    RawQuery(query): RawQuery,
) -> Response {
    let peer = peer_of(peer);
    let params = pairs(query.as_deref().unwrap_or("").as_bytes());
    if params.len() == 1
        && let Some(id) = param(&params, "flow")
    {
        let cookie = jar.get(COOKIE).map(|c| c.value().to_owned());
        return show_flow(&p, id, cookie.as_deref(), peer).await;
    }
    match request::authorize(&params, &p.config) {
        Authorize::Page(e) => {
            let client = param(&params, "client_id").filter(|c| p.config.client(c).is_some());
            p.record(Record {
                stage: "authorize",
                status: 400,
                client_id: client,
                error: Some(e.code()),
                peer,
                ..Record::default()
            });
            let m = match e {
                request::PageError::UnknownClient => Message::UnknownClient,
                request::PageError::BadRedirectUri => Message::BadRedirectUri,
            };
            m.render(&p.frame())
        }
        Authorize::Redirect(r) => {
            p.record(Record {
                stage: "authorize",
                status: 303,
                client_id: Some(&r.client_id),
                error: Some(r.error.as_str()),
                description: Some(r.description),
                peer,
                ..Record::default()
            });
            redirect_error(&p, &r)
        }
        Authorize::Accept(req) => {
            let (jar, browser) = match jar.get(COOKIE) {
                Some(c) if !c.value().is_empty() => (jar.clone(), c.value().to_owned()),
                _ => {
                    let Some(value) = p.random(20) else {
                        return Message::Unavailable.render(&p.frame());
                    };
                    (jar.add(p.cookie(value.clone())), value)
                }
            };
            let (Some(id), Some(csrf)) = (p.random(20), p.random(20)) else {
                return Message::Unavailable.render(&p.frame());
            };
            let now = Utc::now();
            let ttl = chrono::Duration::from_std(p.config.flow_ttl)
                .unwrap_or(chrono::Duration::minutes(30));
            let flow = FlowRecord {
                id: id.clone(),
                version: 1,
                browser_hash: flow::browser_hash(&browser),
                csrf,
                client_id: req.client_id,
                redirect_uri: req.redirect_uri,
                scope: req.scope,
                state: req.state,
                nonce: req.nonce,
                code_challenge: req.code_challenge,
                challenge_id: None,
                finished: false,
                created_at: now,
                expires_at: now + ttl,
            };
            match p.challenges.store().save_flow(flow).await {
                Ok(true) => {
                    p.metrics.oidc("authorize", "ok");
                    let to = format!("{}/authorize?flow={id}", p.base);
                    (jar, Redirect::to(&to)).into_response()
                }
                Ok(false) | Err(_) => {
                    tracing::warn!("could not store a sign-in flow");
                    Message::Unavailable.render(&p.frame())
                }
            }
        }
    }
}

/// `redirect_uri` with `params` added to its query (RFC 6749 §4.1.2: retain its own query).
fn with_query(redirect_uri: &str, params: &[(&str, &str)]) -> Option<String> {
    let mut url = url::Url::parse(redirect_uri).ok()?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    Some(url.into())
}

fn redirect_error<S: Store>(p: &Provider<S>, r: &Redirected) -> Response {
    let mut params = vec![
        ("error", r.error.as_str()),
        ("error_description", r.description),
    ];
    if let Some(s) = &r.state {
        params.push(("state", s));
    }
    params.push(("iss", &p.config.issuer));
    match with_query(&r.redirect_uri, &params) {
        Some(to) => Redirect::to(&to).into_response(),
        None => Message::BadRedirectUri.render(&p.frame()),
    }
}

/// The flow, if it exists and this browser owns it; otherwise the page to show.
async fn owned_flow<S: Store>(
    p: &Provider<S>,
    id: &str,
    cookie: Option<&str>,
    peer: Option<SocketAddr>,
    stage: &'static str,
) -> Result<FlowRecord, Message> {
    let flow = match p.challenges.store().get_flow(id).await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(Message::UnknownFlow),
        Err(e) => {
            tracing::warn!(error = %e, "sign-in flow lookup failed");
            return Err(Message::Unavailable);
        }
    };
    if !flow::same_browser(&flow, cookie) {
        p.record(Record {
            stage,
            status: 403,
            client_id: Some(&flow.client_id),
            error: Some("other_browser"),
            description: Some("the flow is bound to another browser"),
            peer,
            flow: Some(&flow.id),
            ..Record::default()
        });
        return Err(Message::OtherBrowser);
    }
    Ok(flow)
}

async fn challenge_of<S: Store>(
    p: &Provider<S>,
    flow: &FlowRecord,
) -> Result<Option<ChallengeRecord>, Message> {
    let Some(cid) = &flow.challenge_id else {
        return Ok(None);
    };
    p.challenges.store().get(cid).await.map_err(|e| {
        tracing::warn!(error = %e, "challenge lookup failed");
        Message::Unavailable
    })
}

async fn show_flow<S: Store>(
    p: &Provider<S>,
    id: &str,
    cookie: Option<&str>,
    peer: Option<SocketAddr>,
) -> Response {
    let flow = match owned_flow(p, id, cookie, peer, "page").await {
        Ok(f) => f,
        Err(m) => return m.render(&p.frame()),
    };
    let challenge = match challenge_of(p, &flow).await {
        Ok(c) => c,
        Err(m) => return m.render(&p.frame()),
    };
    let now = Utc::now();
    match flow::view(&flow, challenge.as_ref(), now) {
        View::Confirmed { challenge_id } => finish(p, flow, &challenge_id, now).await,
        v => render_view(p, &flow, &v, "", None),
    }
}

fn render_view<S: Store>(
    p: &Provider<S>,
    flow: &FlowRecord,
    v: &View,
    typed: &str,
    error: Option<(StatusCode, Explanation)>,
) -> Response {
    let client_name = p
        .config
        .client(&flow.client_id)
        .map(|c| c.name.as_str())
        .unwrap_or(flow.client_id.as_str());
    match v {
        View::Address | View::ChallengeExpired => page::html(
            error.map(|(s, _)| s).unwrap_or(StatusCode::OK),
            askama::Template::render(&AddressPage {
                base: &p.base,
                service: &p.service,
                title_fr: "Connexion",
                client_name,
                flow: &flow.id,
                csrf: &flow.csrf,
                typed,
                error: error.map(|(_, e)| e),
                expired: *v == View::ChallengeExpired,
            }),
        ),
        View::AwaitReply {
            address,
            session_code,
            expires_at,
        } => page::html(
            StatusCode::OK,
            askama::Template::render(&PendingPage {
                base: &p.base,
                service: &p.service,
                title_fr: "Répondez au courriel",
                flow: &flow.id,
                csrf: &flow.csrf,
                address,
                code: session_code,
                expires: expires_at.format("%d/%m/%Y %H:%M").to_string(),
            }),
        ),
        View::Finished => Message::Finished.render(&p.frame()),
        View::FlowExpired => Message::FlowExpired.render(&p.frame()),
        // Handled by the caller (it writes); here only when a race made it so.
        View::Confirmed { .. } => Message::Finished.render(&p.frame()),
    }
}

/// The challenge is confirmed: issue the code, finish the flow, redirect to the client.
async fn finish<S: Store>(
    p: &Provider<S>,
    flow: FlowRecord,
    challenge_id: &str,
    now: DateTime<Utc>,
) -> Response {
    let Some(code) = p.random(32) else {
        return Message::Unavailable.render(&p.frame());
    };
    let ttl =
        chrono::Duration::from_std(p.config.code_ttl).unwrap_or(chrono::Duration::seconds(60));
    let record = CodeRecord {
        code_hash: flow::sha256(&code),
        client_id: flow.client_id.clone(),
        redirect_uri: flow.redirect_uri.clone(),
        code_challenge: flow.code_challenge.clone(),
        nonce: flow.nonce.clone(),
        scope: flow.scope.clone(),
        challenge_id: challenge_id.to_owned(),
        expires_at: now + ttl,
    };
    // The code first: if finishing the flow then fails, an unusable code expires unseen;
    // the other order could finish a flow whose code was never stored.
    if let Err(e) = p.challenges.store().insert_code(record).await {
        tracing::warn!(error = %e, "could not store an authorization code");
        return Message::Unavailable.render(&p.frame());
    }
    let finished = FlowRecord {
        finished: true,
        version: flow.version.saturating_add(1),
        ..flow.clone()
    };
    match p.challenges.store().save_flow(finished).await {
        Ok(true) => {}
        // Another tab or instance finished it first: that one redirected.
        Ok(false) => return Message::Finished.render(&p.frame()),
        Err(e) => {
            tracing::warn!(error = %e, "could not finish a sign-in flow");
            return Message::Unavailable.render(&p.frame());
        }
    }
    p.metrics.oidc("page", "ok");
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = &flow.state {
        params.push(("state", s));
    }
    params.push(("iss", &p.config.issuer));
    match with_query(&flow.redirect_uri, &params) {
        Some(to) => Redirect::to(&to).into_response(),
        None => Message::BadRedirectUri.render(&p.frame()),
    }
}

async fn authorize_post<S: Store>(
    State(p): Shared<S>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: CookieJar,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer_of(peer);
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let params = if form_type { pairs(&body) } else { Vec::new() };
    let Some(id) = param(&params, "flow") else {
        return Message::UnknownFlow.render(&p.frame());
    };
    let cookie = jar.get(COOKIE).map(|c| c.value().to_owned());
    let flow = match owned_flow(&p, id, cookie.as_deref(), peer, "page").await {
        Ok(f) => f,
        Err(m) => return m.render(&p.frame()),
    };
    let csrf_ok =
        param(&params, "csrf").is_some_and(|c| secrets_equal(c.as_bytes(), flow.csrf.as_bytes()));
    if !csrf_ok {
        p.record(Record {
            stage: "page",
            status: 403,
            client_id: Some(&flow.client_id),
            error: Some("csrf"),
            description: Some("the form's CSRF token is missing or wrong"),
            peer,
            flow: Some(&flow.id),
            ..Record::default()
        });
        return Message::Csrf.render(&p.frame());
    }
    let challenge = match challenge_of(&p, &flow).await {
        Ok(c) => c,
        Err(m) => return m.render(&p.frame()),
    };
    let now = Utc::now();
    let current = flow::view(&flow, challenge.as_ref(), now);
    if !flow::accepts_address(&current) {
        return show_flow(&p, id, cookie.as_deref(), peer).await;
    }
    let back = || Redirect::to(&format!("{}/authorize?flow={}", p.base, flow.id)).into_response();
    if param(&params, "restart").is_some() {
        let restarted = FlowRecord {
            challenge_id: None,
            version: flow.version.saturating_add(1),
            ..flow.clone()
        };
        return match p.challenges.store().save_flow(restarted).await {
            Ok(_) => back(),
            Err(_) => Message::Unavailable.render(&p.frame()),
        };
    }
    let typed = param(&params, "address").unwrap_or("");
    let refused = |e: &CreateError| {
        let status = match e {
            CreateError::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            CreateError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        p.record(Record {
            stage: "page",
            status: status.as_u16(),
            client_id: Some(&flow.client_id),
            error: Some(e.reason().as_str()),
            description: match e {
                CreateError::Refused {
                    detail: Some(d), ..
                } => Some(d),
                _ => None,
            },
            peer,
            flow: Some(&flow.id),
            ..Record::default()
        });
        // Shown again as typed (escaped by the template), but never a control character.
        let shown: String = typed
            .chars()
            .filter(|c| !c.is_control())
            .take(254)
            .collect();
        render_view(
            &p,
            &flow,
            &View::Address,
            &shown,
            Some((status, explain::create_error(e))),
        )
    };
    // The client's narrower domains, before any mail is sent.
    if let Some(client) = p.config.client(&flow.client_id)
        && !client.allowed_domains.is_empty()
        && let Ok(mailbox) = Mailbox::parse(typed.as_bytes(), &p.parse)
        && !client
            .allowed_domains
            .iter()
            .any(|d| mailbox.domain().is_within(d))
    {
        let e = CreateError::Refused {
            reason: Reason::DomainNotAllowed,
            detail: None,
        };
        p.metrics.challenge(Some(e.reason()));
        return refused(&e);
    }
    match p.challenges.create(typed.as_bytes(), now).await {
        Ok(created) => {
            p.metrics.challenge(None);
            let moved = FlowRecord {
                challenge_id: Some(created.id),
                version: flow.version.saturating_add(1),
                ..flow.clone()
            };
            match p.challenges.store().save_flow(moved).await {
                // Lost to another tab: its state wins, and this page shows it.
                Ok(_) => back(),
                Err(_) => Message::Unavailable.render(&p.frame()),
            }
        }
        Err(e) => {
            p.metrics.challenge(Some(e.reason()));
            refused(&e)
        }
    }
}

async fn status<S: Store>(
    State(p): Shared<S>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: CookieJar,
    RawQuery(query): RawQuery,
) -> Response {
    let params = pairs(query.as_deref().unwrap_or("").as_bytes());
    let Some(id) = param(&params, "flow") else {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"status": "unknown"})),
        )
            .into_response();
    };
    let cookie = jar.get(COOKIE).map(|c| c.value().to_owned());
    let flow = match owned_flow(&p, id, cookie.as_deref(), peer_of(peer), "page").await {
        Ok(f) => f,
        Err(Message::OtherBrowser) => {
            return (
                StatusCode::FORBIDDEN,
                Json(serde_json::json!({"status": "forbidden"})),
            )
                .into_response();
        }
        Err(Message::UnknownFlow) => {
            return (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({"status": "unknown"})),
            )
                .into_response();
        }
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "unavailable"})),
            )
                .into_response();
        }
    };
    let Ok(challenge) = challenge_of(&p, &flow).await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable"})),
        )
            .into_response();
    };
    let v = flow::view(&flow, challenge.as_ref(), Utc::now());
    Json(serde_json::json!({ "status": v.status() })).into_response()
}

// ---- /token ----------------------------------------------------------------------------

fn token_error_response(e: &TokenError) -> Response {
    let body = serde_json::json!({ "error": e.error.as_str(), "error_description": e.description });
    let mut r = (e.error.status(), Json(body)).into_response();
    if e.error == OAuthError::InvalidClient && e.basic {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"gatekeeper\""),
        );
    }
    r
}

async fn token<S: Store>(
    State(p): Shared<S>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer_of(peer);
    let result = exchange(&p, &headers, &body).await;
    match result {
        Ok((response, client_id, address, challenge_id)) => {
            p.record(Record {
                stage: "token",
                status: 200,
                client_id: Some(&client_id),
                peer,
                address: Some(&address),
                challenge_id: Some(&challenge_id),
                ..Record::default()
            });
            response
        }
        Err(e) => {
            p.record(Record {
                stage: "token",
                status: e.error.status().as_u16(),
                client_id: e.client_id.as_deref(),
                error: Some(e.error.as_str()),
                description: Some(e.description),
                peer,
                ..Record::default()
            });
            token_error_response(&e)
        }
    }
}

fn grant_error(client: &str, description: &'static str) -> TokenError {
    TokenError {
        error: OAuthError::InvalidGrant,
        description,
        basic: false,
        client_id: Some(client.to_owned()),
    }
}

fn server_error(client: &str) -> TokenError {
    TokenError {
        error: OAuthError::TemporarilyUnavailable,
        description: "temporary failure, try again later",
        basic: false,
        client_id: Some(client.to_owned()),
    }
}

/// The token exchange: `Ok((answer, client id, address, challenge id))`.
async fn exchange<S: Store>(
    p: &Provider<S>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Response, String, String, String), TokenError> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(TokenError {
            error: OAuthError::InvalidRequest,
            description: "the body must be application/x-www-form-urlencoded",
            basic: false,
            client_id: None,
        });
    }
    let params = pairs(body);
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let req = request::token_request(&params, auth)?;
    let client = request::authenticate(&req, &p.config)?;
    let now = Utc::now();
    let code = match p
        .challenges
        .store()
        .take_code(flow::sha256(&req.code))
        .await
    {
        Ok(CodeTake::Taken(c)) => c,
        Ok(CodeTake::AlreadyUsed) => {
            return Err(grant_error(&client.id, "the code was already used"));
        }
        Ok(CodeTake::NotFound) => return Err(grant_error(&client.id, "unknown code")),
        Err(e) => {
            tracing::warn!(error = %e, "code lookup failed");
            return Err(server_error(&client.id));
        }
    };
    request::check_code(&code, client, &req, now)?;
    let challenge = match p.challenges.store().get(&code.challenge_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(grant_error(&client.id, "the sign-in no longer exists")),
        Err(e) => {
            tracing::warn!(error = %e, "challenge lookup failed");
            return Err(server_error(&client.id));
        }
    };
    let Some(confirmation) = challenge.confirmation.as_ref() else {
        return Err(grant_error(&client.id, "the address is not confirmed"));
    };
    if challenge.status(now) != Status::Confirmed {
        return Err(grant_error(&client.id, "the address is not confirmed"));
    }
    let ttl =
        chrono::Duration::from_std(p.config.id_token_ttl).unwrap_or(chrono::Duration::minutes(5));
    let sub = p.keys.subject(&challenge.address);
    let evidence = EvidenceClaim::new(&confirmation.evidence, confirmation.confirmed_at);
    let id_token = IdToken {
        iss: p.config.issuer.clone(),
        sub: sub.clone(),
        aud: client.id.clone(),
        azp: client.id.clone(),
        exp: (now + ttl).timestamp(),
        iat: now.timestamp(),
        auth_time: confirmation.confirmed_at.timestamp(),
        nonce: code.nonce.clone(),
        email: challenge.address.clone(),
        email_verified: true,
        amr: vec![super::claims::AMR.to_owned()],
        gatekeeper_evidence: evidence.clone(),
    };
    let access = AccessToken {
        iss: p.config.issuer.clone(),
        sub,
        aud: userinfo_audience(&p.config.issuer),
        client_id: client.id.clone(),
        exp: (now + ttl).timestamp(),
        iat: now.timestamp(),
        jti: p.random(16).ok_or_else(|| server_error(&client.id))?,
        scope: code.scope.clone(),
        email: challenge.address.clone(),
        gatekeeper_evidence: evidence,
    };
    let key = &p.keys.current;
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    let id_jwt = jsonwebtoken::encode(&header, &id_token, p.keys.encoding()).map_err(|e| {
        tracing::error!(error = %e, "ID token signing failed");
        server_error(&client.id)
    })?;
    let mut at_header = header.clone();
    at_header.typ = Some("at+jwt".to_owned());
    let at_jwt = jsonwebtoken::encode(&at_header, &access, p.keys.encoding()).map_err(|e| {
        tracing::error!(error = %e, "access token signing failed");
        server_error(&client.id)
    })?;
    let body = serde_json::json!({
        "access_token": at_jwt,
        "token_type": "Bearer",
        "expires_in": ttl.num_seconds(),
        "id_token": id_jwt,
        "scope": code.scope,
    });
    tracing::info!(client_id = %client.id, challenge_id = %challenge.id, "oidc sign-in");
    Ok((
        Json(body).into_response(),
        client.id.clone(),
        challenge.address.clone(),
        challenge.id.clone(),
    ))
}

// ---- /userinfo -------------------------------------------------------------------------

fn bearer_error(error: Option<&'static str>) -> Response {
    let value = match error {
        Some(e) => format!("Bearer error=\"{e}\""),
        None => "Bearer".to_owned(),
    };
    let body = serde_json::json!({ "error": error.unwrap_or("invalid_request") });
    let mut r = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

async fn userinfo<S: Store>(
    State(p): Shared<S>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.get(..7)
                .filter(|s| s.eq_ignore_ascii_case("bearer "))
                .and_then(|_| v.get(7..))
        })
        .map(str::trim);
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        p.metrics.oidc("userinfo", "invalid_request");
        return bearer_error(None);
    };
    match verify_access(&p, token) {
        Some(claims) => {
            p.metrics.oidc("userinfo", "ok");
            Json(UserInfo::from(claims)).into_response()
        }
        None => {
            p.record(Record {
                stage: "userinfo",
                status: 401,
                error: Some(OAuthError::InvalidToken.as_str()),
                peer: peer_of(peer),
                ..Record::default()
            });
            bearer_error(Some(OAuthError::InvalidToken.as_str()))
        }
    }
}

fn verify_access<S: Store>(p: &Provider<S>, token: &str) -> Option<AccessToken> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.typ.as_deref() != Some("at+jwt") {
        return None;
    }
    let (key, alg) = p.keys.verifier(header.kid.as_deref()?)?;
    if header.alg != alg {
        return None;
    }
    let mut v = Validation::new(alg);
    v.set_issuer(&[&p.config.issuer]);
    v.set_audience(&[userinfo_audience(&p.config.issuer)]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.leeway = 0;
    jsonwebtoken::decode::<AccessToken>(token, key, &v)
        .ok()
        .map(|d| d.claims)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::with_query;

    type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

    #[test]
    fn redirect_query_table() {
        let rows: &[Row<'_>] = &[
            (
                "https://rp.example/cb",
                &[("code", "c")],
                "https://rp.example/cb?code=c",
            ),
            (
                "https://rp.example/cb?x=1",
                &[("code", "c"), ("state", "a b&c")],
                "https://rp.example/cb?x=1&code=c&state=a+b%26c",
            ),
            (
                "http://127.0.0.1:9/cb",
                &[("iss", "http://127.0.0.1:8")],
                "http://127.0.0.1:9/cb?iss=http%3A%2F%2F127.0.0.1%3A8",
            ),
        ];
        for (uri, params, want) in rows {
            assert_eq!(with_query(uri, params).unwrap(), *want);
        }
    }
}
