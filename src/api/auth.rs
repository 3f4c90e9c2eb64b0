//! Bearer-token authentication of the API: the token file (created 0600 with 160 random bits
//! when missing; its path is logged, never its content) and the middleware that compares the
//! presented token in constant time (over SHA-256 digests, so not even its length leaks),
//! and hands every failure to [`super::abuse`] (counted, throttled per peer: `429`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ring::rand::SystemRandom;

use super::ApiState;
use super::abuse::Refusal;
use super::error::{ApiError, ApiErrorKind};
use crate::challenge::{random_base32, secrets_equal};
use crate::store::Store;

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
            let token = random_base32(&SystemRandom::new(), 20).map_err(std::io::Error::other)?;
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

/// What the token check decided, left on the response for the log middleware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Authorized,
    Refused,
}

pub(super) async fn authorize<S: Store>(
    State(state): State<ApiState<S>>,
    request: Request,
    next: Next,
) -> Response {
    // The token is compared first, in constant time, whatever the peer's count: a valid
    // token always passes (`abuse` module docs).
    if bearer(request.headers()).is_some_and(|t| state.token.matches(t)) {
        let mut response = next.run(request).await;
        response.extensions_mut().insert(Verdict::Authorized);
        return response;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let refusal = state.guard.failure(peer, tokio::time::Instant::now());
    state.guard.ensure_ticker();
    state.metrics.auth_failure(refusal);
    let mut response = match refusal {
        Refusal::Unauthorized => {
            let mut r = ApiError::from(ApiErrorKind::Unauthorized).into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
        Refusal::Throttled { retry_after } => {
            let mut r = ApiError::from(ApiErrorKind::AuthThrottled).into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
            r
        }
    };
    response.extensions_mut().insert(Verdict::Refused);
    response
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
