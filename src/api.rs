//! The HTTP API (SPEC §6), axum 0.8.
//!
//! | route | auth | answer |
//! |---|---|---|
//! | `POST /v1/challenges` `{"address"}` | bearer | 201 `{id, address, session_code, expires_at, status}` |
//! | `GET /v1/challenges/{id}` | bearer | 200 `{id, address, status, created_at, expires_at, confirmed_at, rejections, evidence}` |
//! | `GET /metrics` | bearer | Prometheus/OpenMetrics text |
//! | `GET /healthz` | open | 200 `{"status":"ok"}` |
//!
//! # Decisions
//!
//! - **Auth**: `Authorization: Bearer <token>`, the token read from `api.token_file` (created
//!   with a fresh random token, mode 0600, when missing; its path is logged, never its
//!   content). Compared in constant time over SHA-256 digests (no length leak). `/healthz`
//!   is open (a liveness probe carries no data); `/metrics` needs the token, since refusal
//!   rates by reason are useful to an attacker probing the policy.
//! - **Errors are JSON everywhere**: `{"error": "<code>", "message": "..."}`. Product refusals
//!   use their reason code (`envelope.syntax`, `domain.not_allowed`,
//!   `challenge.rate_limited` 429, `outbound.unavailable` 502, `store.unavailable` 503); the
//!   HTTP-level ones use codes of their own: `api.unauthorized` 401, `api.not_found` 404
//!   (also `challenge.not_found` for an unknown id), `api.method_not_allowed` 405,
//!   `api.body_too_large` 413, `api.bad_request` 400 (bad JSON, missing/unknown field).
//! - **Bodies** are bounded by [`MAX_BODY_BYTES`].
//! - The challenge token never appears in an answer or a log line (it is not even known
//!   here: [`crate::challenge::Created`] has no token field).
//! - Times are RFC 3339 UTC with whole seconds.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use ring::rand::SystemRandom;

use crate::challenge::{ChallengeService, CreateError, random_base32, secrets_equal};
use crate::reason::Reason;
use crate::store::Store;

mod metrics;

pub use metrics::Metrics;

/// Upper bound on a request body (a claim is one address of at most 254 octets).
pub const MAX_BODY_BYTES: usize = 4096;

/// The bearer token. `Debug` is redacted.
#[derive(Clone)]
pub struct ApiToken(Arc<Vec<u8>>);

impl ApiToken {
    pub fn new(token: impl Into<Vec<u8>>) -> Self {
        Self(Arc::new(token.into()))
    }

    fn matches(&self, presented: &[u8]) -> bool {
        secrets_equal(&self.0, presented)
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken([redacted])")
    }
}

/// Read the API token from `path`, or create the file (mode 0600, 160 random bits) when it
/// does not exist. Surrounding whitespace is ignored; an empty token is an error.
pub fn load_or_create_token(path: &Path) -> std::io::Result<ApiToken> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %path.display(), "the API token file is readable by other users (chmod 600)");
            }
            let token = text.trim();
            if token.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the API token file is empty",
                ));
            }
            Ok(ApiToken::new(token.as_bytes().to_vec()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::OpenOptionsExt;
            let token = random_base32(&SystemRandom::new(), 20)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if let Some(parent) = path.parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            file.write_all(token.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "created a new API token file");
            Ok(ApiToken::new(token.into_bytes()))
        }
        Err(e) => Err(e),
    }
}

/// What the handlers share.
pub struct ApiState<S: Store> {
    challenges: Arc<ChallengeService<S>>,
    metrics: Arc<Metrics>,
    token: ApiToken,
}

impl<S: Store> Clone for ApiState<S> {
    fn clone(&self) -> Self {
        Self {
            challenges: Arc::clone(&self.challenges),
            metrics: Arc::clone(&self.metrics),
            token: self.token.clone(),
        }
    }
}

impl<S: Store> ApiState<S> {
    pub fn new(
        challenges: Arc<ChallengeService<S>>,
        metrics: Arc<Metrics>,
        token: ApiToken,
    ) -> Self {
        Self {
            challenges,
            metrics,
            token,
        }
    }
}

/// Serve the API on an already bound listener (`api.listen`) until `shutdown` resolves;
/// requests in flight are finished first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The API router (serve with [`serve`]).
pub fn router<S: Store>(state: ApiState<S>) -> Router {
    let protected = Router::new()
        .route("/v1/challenges", post(create_challenge::<S>))
        .route("/v1/challenges/{id}", get(show_challenge::<S>))
        .route("/metrics", get(metrics_text::<S>))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            authorize::<S>,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// A JSON error answer.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn reason(status: StatusCode, reason: Reason, message: impl Into<String>) -> Self {
        Self::new(status, reason.as_str(), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

async fn create_challenge<S: Store>(
    State(state): State<ApiState<S>>,
    body: Result<Json<Claim>, JsonRejection>,
) -> Response {
    let address = match &body {
        Ok(Json(Claim(address))) => address.as_str(),
        Err(rejection) => return json_rejection(rejection).into_response(),
    };
    match state
        .challenges
        .create(address.as_bytes(), Utc::now())
        .await
    {
        Ok(created) => {
            state.metrics.challenge(None);
            (StatusCode::CREATED, Json(created)).into_response()
        }
        Err(e) => {
            let reason = e.reason();
            state.metrics.challenge(Some(reason));
            let (status, message) = match &e {
                CreateError::Refused {
                    detail: Some(d), ..
                } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("address refused ({d})"),
                ),
                CreateError::Refused { .. } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "domain not allowed".to_owned(),
                ),
                CreateError::RateLimited => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many challenges for this address".to_owned(),
                ),
                CreateError::Outbound(_) => (
                    StatusCode::BAD_GATEWAY,
                    "the challenge mail could not be sent".to_owned(),
                ),
                CreateError::Store(_) | CreateError::Rng(_) => {
                    tracing::warn!(error = %e, "challenge not created");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporary failure, try again later".to_owned(),
                    )
                }
            };
            ApiError::reason(status, reason, message).into_response()
        }
    }
}

async fn show_challenge<S: Store>(
    State(state): State<ApiState<S>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "challenge.not_found",
            "no such challenge",
        )
        .into_response();
    }
    match state.challenges.show(&id, Utc::now()).await {
        Ok(Some(view)) => Json(view).into_response(),
        Ok(None) => ApiError::new(
            StatusCode::NOT_FOUND,
            "challenge.not_found",
            "no such challenge",
        )
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "challenge lookup failed");
            ApiError::reason(
                StatusCode::SERVICE_UNAVAILABLE,
                e.reason(),
                "temporary failure, try again later",
            )
            .into_response()
        }
    }
}

async fn metrics_text<S: Store>(State(state): State<ApiState<S>>) -> Response {
    state
        .metrics
        .queue_depth("store", state.challenges.store().queue_depth());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "api.not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "api.method_not_allowed",
        "method not allowed",
    )
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "api.body_too_large",
            "request body too large",
        )
    } else {
        // Never echo the parser's message: it may quote the body.
        bad_request()
    }
}

/// The body of `POST /v1/challenges`: exactly `{"address": "<string>"}`, an object (not an
/// array, which serde would map onto a struct), one key, a string value. A repeated key is
/// refused: JSON readers disagree on which of `{"address": A, "address": B}` counts (serde_json
/// keeps the last, others the first), and the claimed address must be read one way (SPEC I2).
struct Claim(String);

impl<'de> serde::Deserialize<'de> for Claim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Claim;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object {\"address\": \"...\"}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Claim, A::Error> {
                use serde::de::Error;
                let mut address: Option<String> = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key != "address" || address.is_some() {
                        return Err(A::Error::custom("unexpected or repeated key"));
                    }
                    address = Some(map.next_value::<String>()?);
                }
                address
                    .map(Claim)
                    .ok_or_else(|| A::Error::custom("no address"))
            }
        }
        d.deserialize_map(Visitor)
    }
}

fn bad_request() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "api.bad_request",
        "expected a JSON object {\"address\": \"...\"}",
    )
}

async fn authorize<S: Store>(
    State(state): State<ApiState<S>>,
    request: Request,
    next: Next,
) -> Response {
    if bearer(request.headers()).is_some_and(|t| state.token.matches(t)) {
        next.run(request).await
    } else {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "api.unauthorized",
            "missing or wrong bearer token",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        response
    }
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    if scheme.eq_ignore_ascii_case(b"bearer ") {
        value.get(7..)
    } else {
        None
    }
}

/// One log line per request: method, path, status. Never headers or bodies.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::info!(%method, %path, status = response.status().as_u16(), "api request");
    response
}
