//! The provider's HTTP side (axum 0.8): read the rows, ask the pure rules (`request/`,
//! `flow.rs`), write the rows, render or redirect, and record the audit event and metric of
//! every answer. See `oidc/mod.rs` for the endpoints and decisions.
//!
//! - this file: the router, the security headers, what every handler shares (the audit
//!   record, the cookie, parameters), discovery, JWKS and the static assets;
//! - `signin.rs`: `/authorize` and the page (start a flow, show it, take the address,
//!   issue the code); `/authorize/status` is here;
//! - `token.rs`: `/token` and `/userinfo`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use chrono::Utc;

use super::flow;
use super::page::{self, Frame, Message};
use super::{COOKIE, Provider};
use crate::audit::{Action, AuditEvent, Check, Outcome};
use crate::challenge::random_base32;
use crate::store::Store;

/// Largest form or query accepted (a request carries a few short parameters).
const MAX_BODY_BYTES: usize = 16 * 1024;

type Shared<S> = State<Arc<Provider<S>>>;

mod signin;
mod token;

use signin::{authorize_get, authorize_post, challenge_of, owned_flow};
use token::{token, userinfo};

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

/// `redirect_uri` with `params` added to its query (RFC 6749 §4.1.2: retain its own query).
pub(super) fn with_query(redirect_uri: &str, params: &[(&str, &str)]) -> Option<String> {
    let mut url = url::Url::parse(redirect_uri).ok()?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    Some(url.into())
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

/// `GET /authorize/status?flow=..`: `{"status": ...}` for the page's script (the same
/// browser binding as the page; no code, no address in the answer).
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
