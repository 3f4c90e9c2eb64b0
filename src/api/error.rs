//! The API's error answers: ONE table from each error to its HTTP status, its code and its
//! message, the HTTP twin of [`crate::reason`]'s `reasons!` table. Every error is
//! `{"error": "<code>", "message": "..."}`. Product refusals answer with their reason code
//! (`envelope.syntax`, `domain.not_allowed`, `challenge.rate_limited`, ...), so the backend
//! sees the same code as the SIEM and `check-address`; HTTP-level faults have `api.*` codes.
//! A test checks that the README names every code, so the backend integrators' reference
//! cannot drift from the code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::challenge::CreateError;
use crate::reason::Reason;

/// Every error the API answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// No or wrong bearer token.
    Unauthorized,
    /// Too many requests without a valid token from this peer (`super::abuse`).
    AuthThrottled,
    /// No route for this path.
    EndpointNotFound,
    /// The path exists, not with this method.
    MethodNotAllowed,
    /// Body over [`super::MAX_BODY_BYTES`].
    BodyTooLarge,
    /// Not exactly `{"address": "<string>"}`.
    BadRequest,
    /// No challenge with this id (or an id that cannot be one).
    ChallengeNotFound,
    /// The claimed address is refused; the code is its reason (`envelope.syntax`,
    /// `domain.not_allowed`).
    Refused(Reason),
    /// Too many challenges for this address.
    RateLimited,
    /// The relay did not take the challenge mail.
    OutboundUnavailable,
    /// The store (or the random source) failed: retry later.
    StoreUnavailable,
}

impl ApiErrorKind {
    /// Every kind, with the reasons a claim can be refused for: what the README must list.
    pub const ALL: &'static [ApiErrorKind] = &[
        ApiErrorKind::Unauthorized,
        ApiErrorKind::AuthThrottled,
        ApiErrorKind::EndpointNotFound,
        ApiErrorKind::MethodNotAllowed,
        ApiErrorKind::BodyTooLarge,
        ApiErrorKind::BadRequest,
        ApiErrorKind::ChallengeNotFound,
        ApiErrorKind::Refused(Reason::EnvelopeSyntax),
        ApiErrorKind::Refused(Reason::DomainNotAllowed),
        ApiErrorKind::RateLimited,
        ApiErrorKind::OutboundUnavailable,
        ApiErrorKind::StoreUnavailable,
    ];

    /// The table: status, code, message.
    pub fn entry(self) -> (StatusCode, &'static str, &'static str) {
        use ApiErrorKind as K;
        match self {
            K::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "api.unauthorized",
                "missing or wrong bearer token",
            ),
            K::AuthThrottled => (
                StatusCode::TOO_MANY_REQUESTS,
                "api.rate_limited",
                "too many requests without a valid token: retry after the Retry-After seconds",
            ),
            K::EndpointNotFound => (StatusCode::NOT_FOUND, "api.not_found", "no such endpoint"),
            K::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "api.method_not_allowed",
                "method not allowed",
            ),
            K::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "api.body_too_large",
                "request body too large",
            ),
            K::BadRequest => (
                StatusCode::BAD_REQUEST,
                "api.bad_request",
                "expected a JSON object {\"address\": \"...\"}",
            ),
            K::ChallengeNotFound => (
                StatusCode::NOT_FOUND,
                "challenge.not_found",
                "no such challenge",
            ),
            K::Refused(reason) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                reason.as_str(),
                "domain not allowed",
            ),
            K::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                Reason::ChallengeRateLimited.as_str(),
                "too many challenges for this address",
            ),
            K::OutboundUnavailable => (
                StatusCode::BAD_GATEWAY,
                Reason::OutboundUnavailable.as_str(),
                "the challenge mail could not be sent",
            ),
            K::StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                Reason::StoreUnavailable.as_str(),
                "temporary failure, try again later",
            ),
        }
    }
}

/// A JSON error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<ApiErrorKind> for ApiError {
    fn from(kind: ApiErrorKind) -> Self {
        let (status, code, message) = kind.entry();
        Self {
            status,
            code,
            message: message.to_owned(),
        }
    }
}

impl From<&CreateError> for ApiError {
    /// A refusal with the parser's detail says which rule the address broke.
    fn from(e: &CreateError) -> Self {
        let kind = match e {
            CreateError::Refused { reason, .. } => ApiErrorKind::Refused(*reason),
            CreateError::RateLimited => ApiErrorKind::RateLimited,
            CreateError::Outbound(_) => ApiErrorKind::OutboundUnavailable,
            CreateError::Store(_) | CreateError::Rng(_) => ApiErrorKind::StoreUnavailable,
        };
        let mut error = ApiError::from(kind);
        if let CreateError::Refused {
            detail: Some(d), ..
        } = e
        {
            error.message = format!("address refused ({d})");
        }
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    /// Product errors answer with their reason code; everything is a 4xx or a 5xx.
    #[test]
    fn table_is_total_and_reason_codes_match() {
        for kind in ApiErrorKind::ALL {
            let (status, code, message) = kind.entry();
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{kind:?}"
            );
            assert!(!message.is_empty(), "{kind:?}");
            let is_reason = code.parse::<Reason>().is_ok();
            let is_http = code.starts_with("api.") || code == "challenge.not_found";
            assert!(is_reason != is_http, "{kind:?}: {code}");
        }
        let codes: Vec<&str> = ApiErrorKind::ALL.iter().map(|k| k.entry().1).collect();
        let mut unique = codes.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), codes.len(), "codes are distinct: {codes:?}");
    }

    /// Each CreateError answers with the code of its reason (what the SIEM and the metrics
    /// record) and the status the README documents.
    #[test]
    fn create_errors() {
        let rows: Vec<(CreateError, u16, &str, &str)> = vec![
            (
                CreateError::Refused {
                    reason: Reason::EnvelopeSyntax,
                    detail: Some("local part"),
                },
                422,
                "envelope.syntax",
                "address refused (local part)",
            ),
            (
                CreateError::Refused {
                    reason: Reason::DomainNotAllowed,
                    detail: None,
                },
                422,
                "domain.not_allowed",
                "domain not allowed",
            ),
            (
                CreateError::RateLimited,
                429,
                "challenge.rate_limited",
                "too many challenges for this address",
            ),
            (
                CreateError::Outbound("relay said no".into()),
                502,
                "outbound.unavailable",
                "the challenge mail could not be sent",
            ),
            (
                CreateError::Store(StoreError::Closed),
                503,
                "store.unavailable",
                "temporary failure, try again later",
            ),
        ];
        for (e, status, code, message) in rows {
            let got = ApiError::from(&e);
            assert_eq!(got.status().as_u16(), status, "{e}");
            assert_eq!(got.code(), code, "{e}");
            assert_eq!(got.code(), e.reason().as_str(), "{e}");
            assert_eq!(got.message, message, "{e}");
        }
    }

    /// The README's "Interfaces" section is the backend integrators' reference: it must name
    /// every error code.
    #[test]
    fn readme_lists_every_api_error_code() {
        let readme = include_str!("../../README.md");
        for kind in ApiErrorKind::ALL {
            let code = format!("`{}`", kind.entry().1);
            assert!(readme.contains(&code), "README lacks {code} ({kind:?})");
        }
    }
}
