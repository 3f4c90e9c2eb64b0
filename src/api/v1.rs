//! The `/v1` handlers: `POST /v1/challenges` (issue a challenge for a claimed address) and
//! `GET /v1/challenges/{id}` (its state). Errors go through the one table in
//! [`super::error`]. The challenge token never appears here: [`crate::challenge::Created`]
//! has no token field.

use axum::extract::rejection::JsonRejection;
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

/// The `/v1` routes; the router puts them behind the bearer token.
pub(super) fn routes<S: Store>() -> Router<ApiState<S>> {
    Router::new()
        .route("/v1/challenges", post(create_challenge::<S>))
        .route("/v1/challenges/{id}", get(show_challenge::<S>))
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
            state.metrics.challenge(Some(e.reason()));
            if matches!(e, CreateError::Store(_) | CreateError::Rng(_)) {
                tracing::warn!(error = %e, "challenge not created");
            }
            ApiError::from(&e).into_response()
        }
    }
}

async fn show_challenge<S: Store>(
    State(state): State<ApiState<S>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return ApiError::from(ApiErrorKind::ChallengeNotFound).into_response();
    }
    match state.challenges.show(&id, Utc::now()).await {
        Ok(Some(mut view)) => {
            if let (Some(signer), Some(at), Some(evidence)) =
                (&state.signer, view.confirmed_at, &view.evidence)
            {
                match signer.sign(&view.id, &view.address, at, evidence) {
                    Ok(a) => view.assertion = Some(a),
                    // The state is still true without its proof: show it, and say why.
                    Err(e) => tracing::warn!(error = %e, "assertion not signed"),
                }
            }
            Json(view).into_response()
        }
        Ok(None) => ApiError::from(ApiErrorKind::ChallengeNotFound).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "challenge lookup failed");
            ApiError::from(ApiErrorKind::StoreUnavailable).into_response()
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::from(ApiErrorKind::BodyTooLarge)
    } else {
        // Never echo the parser's message: it may quote the body.
        ApiError::from(ApiErrorKind::BadRequest)
    }
}

/// The claimed address of a `POST /v1/challenges` body, read as the handler's `Json<Claim>`
/// extractor reads it (serde_json over the whole slice, trailing bytes refused), without
/// HTTP: the fuzz target `api_claim` and the tests call it. The address is not yet
/// validated (that is [`crate::challenge::ChallengeService::create`]'s).
pub fn read_claim(body: &[u8]) -> Result<String, serde_json::Error> {
    serde_json::from_slice::<Claim>(body).map(|Claim(address)| address)
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

#[cfg(test)]
mod tests {
    use super::read_claim;

    /// The claim body as the handler reads it: one key, `address`, a string; anything else
    /// refused (a repeated key included, whichever value a reader would keep).
    #[test]
    fn claim_bodies() {
        let table: &[(&str, Option<&str>)] = &[
            (
                r#"{"address":"alice@interieur.gouv.fr"}"#,
                Some("alice@interieur.gouv.fr"),
            ),
            (r#" { "address" : "A@B.fr" } "#, Some("A@B.fr")),
            (r#"{"address":"al\u0069ce@b.fr"}"#, Some("alice@b.fr")),
            (r#"{"address":""}"#, Some("")),
            (r#"{"address":"a@b.fr","address":"c@d.fr"}"#, None),
            (r#"{"address":"a@b.fr","other":1}"#, None),
            (r#"{"other":1}"#, None),
            (r#"{}"#, None),
            (r#"["alice@interieur.gouv.fr"]"#, None),
            (r#"{"address":null}"#, None),
            (r#"{"address":1}"#, None),
            (r#"{"address":"a@b.fr"} x"#, None),
            (r#""alice@interieur.gouv.fr""#, None),
            ("", None),
        ];
        for (body, want) in table {
            assert_eq!(read_claim(body.as_bytes()).ok().as_deref(), *want, "{body}");
        }
    }
}
