//! gatekeeper as an OpenID Provider (SPEC §9): a relying party (a Matrix homeserver,
//! Keycloak, any OIDC library) sends the person to `/authorize`; the person types their
//! address on our page, replies to the challenge mail exactly as with `POST /v1/challenges`,
//! and comes back to the relying party with a code that `/token` exchanges for an ID token
//! saying "this person owns this address", with the evidence.
//!
//! # Shape
//!
//! The protocol rules are pure functions (`request/`: `/authorize` and `/token`;
//! `flow.rs`: what the page shows), the HTTP side (`http/`) reads and writes the store and
//! renders; keys (`keys.rs`), claims (`claims.rs`), error codes (`error.rs`), the FR/EN
//! explanations (`explain.rs`), the pages (`page.rs`) and the static assets (`assets.rs`)
//! are each one file.
//!
//! # Endpoints (paths under the issuer's path)
//!
//! | path | what |
//! |---|---|
//! | `GET /.well-known/openid-configuration` | discovery (RFC 8414, OIDC Discovery 1.0) |
//! | `GET /jwks.json` | the signing key and the keys of earlier rotations, with `kid` |
//! | `GET /authorize?client_id=..` | checks the request, starts a flow, redirects (303) to the page |
//! | `GET /authorize?flow=..` | the page: address form, session code, or the redirect to the client |
//! | `POST /authorize` | takes the address (CSRF token), creates the challenge |
//! | `GET /authorize/status?flow=..` | `{"status": ...}` for the page's script |
//! | `POST /token` | code → ID token + access token |
//! | `GET`/`POST /userinfo` | the claims, for the access token |
//! | `GET /static/..` | the DSFR stylesheet, our CSS and script |
//!
//! # Decisions where SPEC §9 is silent
//!
//! - **Paths.** Routes are served under the issuer's path (issuer `https://h/oidc` → the
//!   listener answers `/oidc/authorize`): the reverse proxy forwards paths unchanged.
//! - **The flow** lives in the store (`store/oidc.rs`), bound to the browser by a random
//!   cookie (`gatekeeper_browser`: HttpOnly, SameSite=Lax so the first cross-site
//!   navigation from the relying party carries it, Secure per `oidc.cookie_secure`, path
//!   the issuer's) whose SHA-256 the flow keeps. `GET /authorize` redirects to
//!   `?flow=<id>` (post/redirect/get): a reload shows the same flow, never a new one.
//! - **The code** is issued when the page (or its reload, or the script's reload) sees the
//!   challenge confirmed: 256 random bits, kept as SHA-256, bound to client, redirect URI,
//!   PKCE challenge and nonce, single use, `oidc.code_ttl`. The flow is then finished: a
//!   second tab cannot get a second code (compare-and-swap on the flow's version).
//! - **Tokens** are self-contained JWTs living `oidc.id_token_ttl` (5 min by default); there
//!   are no refresh tokens. A replayed code is refused (`invalid_grant`), but the tokens its
//!   first exchange produced are not revoked (RFC 6749 §4.1.2 says SHOULD): nothing on the
//!   store side records them, and they expire within minutes.
//! - **Challenges** are created through the same [`ChallengeService`] as the API, so the
//!   limits (`confirm.max_*`) and the mail are the same, and the challenge metrics count
//!   them. A client's `allowed_domains` narrows the policy before that.
//! - **Audit**: every refusal at `/authorize` (unknown client, bad redirect URI, redirected
//!   errors), on the page (other browser, CSRF, refused address) and at `/token` (bad
//!   client, bad code, PKCE), and every sign-in (ID token issued), is an `oidc-signin`
//!   event; `/metrics` counts `gatekeeper_oidc_requests{endpoint, outcome}`.

use std::net::SocketAddr;
use std::sync::Arc;

use ring::rand::SystemRandom;

use crate::address::ParseOptions;
use crate::api::Metrics;
use crate::audit::AuditSink;
use crate::challenge::ChallengeService;
use crate::config::{Config, OidcConfig};
use crate::store::Store;

pub mod assets;
pub mod claims;
pub mod error;
pub mod explain;
pub mod flow;
mod http;
pub mod keys;
pub mod page;
pub mod request;

pub use error::OAuthError;
pub use keys::{KeyError, Keys};

/// The browser cookie's name.
pub const COOKIE: &str = "gatekeeper_browser";

/// Everything the handlers share.
pub struct Provider<S: Store> {
    config: OidcConfig,
    /// The issuer's path, `""` or `/oidc` (no trailing slash).
    base: String,
    service: String,
    https: bool,
    challenges: Arc<ChallengeService<S>>,
    keys: Keys,
    parse: ParseOptions,
    audit: Arc<dyn AuditSink>,
    metrics: Arc<Metrics>,
    rng: SystemRandom,
}

impl<S: Store> Provider<S> {
    /// Build the provider: loads (or creates) the keys. Blocking: call at start-up.
    pub fn new(
        config: &Config,
        oidc: &OidcConfig,
        challenges: Arc<ChallengeService<S>>,
        audit: Arc<dyn AuditSink>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KeyError> {
        let keys = Keys::load(
            &oidc.signing_key,
            oidc.signing_alg,
            &oidc.previous_keys,
            &oidc.subject_key,
        )?;
        let url = url::Url::parse(&oidc.issuer).ok();
        let base = url
            .as_ref()
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        Ok(Self {
            config: oidc.clone(),
            base,
            service: config.confirm.service_name.clone(),
            https: url.is_some_and(|u| u.scheme() == "https"),
            challenges,
            keys,
            parse: config.parse_options(),
            audit,
            metrics,
            rng: SystemRandom::new(),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }
}

/// The provider's router (serve it with [`serve`]).
pub fn router<S: Store>(provider: Arc<Provider<S>>) -> axum::Router {
    http::router(provider)
}

/// Why the provider could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("OpenID Provider key: {0}")]
    Keys(#[from] KeyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started provider: its bound address and its tasks (the listener and the purge).
pub struct Started {
    pub addr: SocketAddr,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
    pub purge: tokio::task::JoinHandle<()>,
}

/// Load the keys, bind `oidc.listen`, and serve until `shutdown` resolves. The daemon calls
/// this once at start when `[oidc]` is configured.
pub async fn start<S: Store>(
    config: &Config,
    oidc: &OidcConfig,
    challenges: Arc<ChallengeService<S>>,
    audit: Arc<dyn AuditSink>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Started, StartError> {
    let store = Arc::clone(challenges.store());
    let provider = Arc::new(Provider::new(config, oidc, challenges, audit, metrics)?);
    let listener = tokio::net::TcpListener::bind(oidc.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: oidc.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: oidc.listen,
        source,
    })?;
    tracing::info!(%addr, issuer = %oidc.issuer, kid = %provider.keys.current.kid, "OpenID Provider serving");
    let server = tokio::spawn(serve(listener, router(provider), shutdown));
    let purge = tokio::spawn(purge_loop(store, config.store.purge_interval));
    Ok(Started {
        addr,
        server,
        purge,
    })
}

/// Delete flows and codes that expired a day ago, every `interval` (`store.purge_interval`).
pub async fn purge_loop<S: Store>(store: Arc<S>, interval: std::time::Duration) {
    let mut ticker = tokio::time::interval(interval.max(std::time::Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let cutoff = chrono::Utc::now() - chrono::Duration::days(1);
        match store.purge_oidc(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "store: old sign-in flows and codes purged"),
            Err(e) => tracing::warn!(error = %e, "store: sign-in purge failed"),
        }
    }
}

/// Serve on the already bound `oidc.listen` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
