//! The probe front door (SPEC §10): `POST /v1/probes` creates a probe address for a ministry
//! to write to; `GET /v1/probes/{id}` shows the latest mail's analysis. Behind the bearer
//! token like `/v1/challenges`. Errors reuse the challenge rows of [`super::error`]
//! (`challenge.rate_limited`, `challenge.not_found`, `store.unavailable`): a probe is a kind
//! of challenge to the API's clients, and the closed error table stays one table.

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;

use super::ApiState;
use super::error::{ApiError, ApiErrorKind};
use crate::challenge::CreateError;
use crate::store::Store;

pub(super) fn routes<S: Store>() -> Router<ApiState<S>> {
    Router::new()
        .route("/v1/probes", post(create_probe::<S>))
        .route("/v1/probes/{id}", get(show_probe::<S>))
}

/// The body is ignored: a probe needs nothing from the caller.
async fn create_probe<S: Store>(State(state): State<ApiState<S>>) -> Response {
    match state.challenges.create_probe(Utc::now()).await {
        Ok(created) => (StatusCode::CREATED, Json(created)).into_response(),
        Err(e) => {
            if matches!(e, CreateError::Store(_) | CreateError::Rng(_)) {
                tracing::warn!(error = %e, "probe not created");
            }
            ApiError::from(&e).into_response()
        }
    }
}

async fn show_probe<S: Store>(
    State(state): State<ApiState<S>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return ApiError::from(ApiErrorKind::ChallengeNotFound).into_response();
    }
    match state.challenges.show_probe(&id, Utc::now()).await {
        Ok(Some(view)) => Json(view).into_response(),
        Ok(None) => ApiError::from(ApiErrorKind::ChallengeNotFound).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "probe lookup failed");
            ApiError::from(ApiErrorKind::StoreUnavailable).into_response()
        }
    }
}
