//! `/token` (client authentication, the code taken once, the ID token and access token
//! signed) and `/userinfo` (the access token verified, its claims answered).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use chrono::Utc;
use jsonwebtoken::{Header, Validation};

use super::{Record, Shared, pairs, peer_of};
use crate::oidc::Provider;
use crate::oidc::claims::{AccessToken, EvidenceClaim, IdToken, UserInfo, userinfo_audience};
use crate::oidc::error::OAuthError;
use crate::oidc::flow;
use crate::oidc::request::{self, TokenError};
use crate::store::oidc::CodeTake;
use crate::store::{Status, Store};

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

pub(super) async fn token<S: Store>(
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
    if !super::signin::is_form(headers) {
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
    let body = sign_tokens(p, client, &code, &challenge, confirmation, now)?;
    tracing::info!(client_id = %client.id, challenge_id = %challenge.id, "oidc sign-in");
    Ok((
        Json(body).into_response(),
        client.id.clone(),
        challenge.address.clone(),
        challenge.id.clone(),
    ))
}

/// The ID token and the access token for a confirmed challenge, signed with the current key,
/// as the `/token` answer's JSON (OIDC Core §3.1.3.3).
fn sign_tokens<S: Store>(
    p: &Provider<S>,
    client: &crate::config::OidcClient,
    code: &crate::store::oidc::CodeRecord,
    challenge: &crate::store::ChallengeRecord,
    confirmation: &crate::store::Confirmation,
    now: chrono::DateTime<Utc>,
) -> Result<serde_json::Value, TokenError> {
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
        amr: vec![crate::oidc::claims::AMR.to_owned()],
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
    Ok(body)
}

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

pub(super) async fn userinfo<S: Store>(
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
