//! The HTTP API (SPEC §6), axum 0.8.
//!
//! | route | auth | answer |
//! |---|---|---|
//! | `POST /v1/challenges` `{"address"}` | bearer | 201 `{id, address, session_code, expires_at, status}` |
//! | `GET /v1/challenges/{id}` | bearer | 200 `{id, address, status, created_at, expires_at, confirmed_at, rejections, evidence}` |
//! | `POST /v1/probes` | bearer | 201 `{id, address: "probe+<token>@<confirm.domain>", expires_at}` (SPEC §10) |
//! | `GET /v1/probes/{id}` | bearer | 200 `{id, status: waiting\|analysed\|expired, created_at, expires_at, analyses, report}` |
//! | `GET /metrics` | bearer | Prometheus/OpenMetrics text |
//! | `GET /healthz` | open | 200 `{"status":"ok"}`; 503 `{"status":"degraded","store":"unavailable"}` while the store does not answer |
//!
//! # Decisions
//!
//! - **Auth**: `Authorization: Bearer <token>`, the token read from `api.token_file` (created
//!   with a fresh random token, mode 0600, when missing; its path is logged, never its
//!   content). Compared in constant time over SHA-256 digests (no length leak). `/healthz`
//!   is open (a liveness probe carries no data); `/metrics` needs the token, since refusal
//!   rates by reason are useful to an attacker probing the policy.
//! - **Layout**: this file is the router; [`auth`] the bearer token, [`error`] the one
//!   table of error answers, `v1` the `/v1` handlers, [`metrics`] `/metrics`. A new front
//!   door (OpenID Provider, probes) is a module beside `v1` with its own `routes`.
//! - **Errors are JSON everywhere** (the table is [`ApiErrorKind::entry`]):
//!   `{"error": "<code>", "message": "..."}`. Product refusals
//!   use their reason code (`envelope.syntax`, `domain.not_allowed`,
//!   `challenge.rate_limited` 429, `outbound.unavailable` 502, `store.unavailable` 503); the
//!   HTTP-level ones use codes of their own: `api.unauthorized` 401, `api.not_found` 404
//!   (also `challenge.not_found` for an unknown id), `api.method_not_allowed` 405,
//!   `api.body_too_large` 413, `api.bad_request` 400 (bad JSON, missing/unknown field).
//! - **Abuse**: requests without a valid token are counted in `/metrics`, answered `429
//!   api.rate_limited` with `Retry-After` past [`abuse::FAILURE_LIMIT`] a minute from one
//!   peer (a valid token still passes), and summarised in one log line per interval instead
//!   of one each ([`abuse`]).
//! - **Bodies** are bounded by [`MAX_BODY_BYTES`].
//! - The challenge token never appears in an answer or a log line (it is not even known
//!   here: [`crate::challenge::Created`] has no token field).
//! - Times are RFC 3339 UTC with whole seconds.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::challenge::ChallengeService;
use crate::store::Store;

pub mod abuse;
pub mod auth;
pub mod error;
pub mod metrics;
mod probes;
mod v1;

pub use auth::{ApiToken, load_or_create_token};
pub use error::{ApiError, ApiErrorKind};
pub use metrics::Metrics;
pub use v1::read_claim;

/// Upper bound on a request body (a claim is one address of at most 254 octets).
pub const MAX_BODY_BYTES: usize = 4096;
/// How long a `/metrics` scrape waits for the store's ping before showing it down.
const METRICS_PING: std::time::Duration = std::time::Duration::from_secs(2);

/// What the handlers share.
pub struct ApiState<S: Store> {
    challenges: Arc<ChallengeService<S>>,
    metrics: Arc<Metrics>,
    token: ApiToken,
    /// Requests without a valid token: counted, throttled per peer, summarised ([`abuse`]).
    guard: Arc<abuse::Guard>,
    /// Signs `assertion` of a confirmed challenge (SPEC §11); `None` without `[oidc]`.
    signer: Option<Arc<crate::assertion::Signer>>,
}

impl<S: Store> Clone for ApiState<S> {
    fn clone(&self) -> Self {
        Self {
            challenges: Arc::clone(&self.challenges),
            metrics: Arc::clone(&self.metrics),
            token: self.token.clone(),
            guard: Arc::clone(&self.guard),
            signer: self.signer.clone(),
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
            guard: Arc::new(abuse::Guard::new()),
            signer: None,
        }
    }

    /// Sign `assertion` in `GET /v1/challenges/{id}` with this key.
    pub fn with_signer(mut self, signer: Option<Arc<crate::assertion::Signer>>) -> Self {
        self.signer = signer;
        self
    }
}

/// Serve the API on an already bound listener (`api.listen`) until `shutdown` resolves;
/// requests in flight are finished first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The peer's address is what the throttle of requests without a valid token counts by.
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The API router (serve with [`serve`]).
pub fn router<S: Store>(state: ApiState<S>) -> Router {
    let protected = v1::routes::<S>()
        .merge(probes::routes::<S>())
        .route("/metrics", get(metrics_text::<S>))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize::<S>,
        ));
    Router::new()
        .route("/healthz", get(healthz::<S>))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            log_request::<S>,
        ))
        .with_state(state)
}

async fn metrics_text<S: Store>(State(state): State<ApiState<S>>) -> Response {
    let store = state.challenges.store();
    state.metrics.queue_depth("store", store.queue_depth());
    // Ask the store now, so `gatekeeper_store_up` is true of this scrape even on an idle
    // instance; bounded, so a partitioned database does not hold the scrape (the outcome
    // is counted by the store's tracker either way; a timeout shows as down).
    let answered = tokio::time::timeout(METRICS_PING, store.ping()).await;
    let mut health = store.health();
    if answered.is_err() {
        health.up = false;
    }
    state.metrics.store_health(health);
    state
        .metrics
        .throttled_peers(state.guard.throttled_peers(tokio::time::Instant::now()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// `ok`, or `503` `degraded` while the store does not answer (a PostgreSQL outage): a load
/// balancer then sends the API's traffic to an instance that can serve it, and the SMTP
/// side answers `451` meanwhile. The daemon itself stays up and reconnects by itself.
async fn healthz<S: Store>(State(state): State<ApiState<S>>) -> Response {
    match state.challenges.store().ping().await {
        Ok(()) => Json(serde_json::json!({ "status": "ok" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "healthz: store unavailable");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "status": "degraded", "store": "unavailable" })),
            )
                .into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiErrorKind::EndpointNotFound.into()
}

async fn method_not_allowed() -> ApiError {
    ApiErrorKind::MethodNotAllowed.into()
}

/// One log line per request that passed the token check: method, path, status, never
/// headers or bodies. Every other answer is counted into [`abuse::Guard`]'s summary line
/// instead, so a flood of them does not flood the log.
async fn log_request<S: Store>(
    State(state): State<ApiState<S>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    match response.extensions().get::<auth::Verdict>() {
        Some(auth::Verdict::Authorized) => {
            tracing::info!(%method, %path, status = response.status().as_u16(), "api request");
        }
        // Counted by the auth middleware already.
        Some(auth::Verdict::Refused) => {}
        None => {
            state.guard.other();
            state.guard.ensure_ticker();
        }
    }
    response
}
