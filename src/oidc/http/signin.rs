//! `/authorize` and the sign-in page: check the request and start a flow, show the flow in
//! the state `flow::view` decides, take the address (CSRF, browser, the client's domains,
//! the challenge service), issue the code when the reply is confirmed.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use chrono::{DateTime, Utc};

use super::{Record, Shared, pairs, param, peer_of, with_query};
use crate::address::Mailbox;
use crate::challenge::{CreateError, secrets_equal};
use crate::oidc::explain::{self, Explanation};
use crate::oidc::flow::{self, View};
use crate::oidc::page::{self, AddressPage, Message, PendingPage};
use crate::oidc::request::{self, Authorize, Redirected};
use crate::oidc::{COOKIE, Provider};
use crate::reason::Reason;
use crate::store::oidc::{CodeRecord, FlowRecord};
use crate::store::{ChallengeRecord, Store};

pub(super) async fn authorize_get<S: Store>(
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
        Authorize::Accept(req) => start_flow(&p, jar, req).await,
    }
}

/// An accepted request: the browser's cookie (made if missing), a new flow in the store,
/// and a 303 to its page.
async fn start_flow<S: Store>(
    p: &Provider<S>,
    jar: CookieJar,
    req: request::AuthRequest,
) -> Response {
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
    let ttl =
        chrono::Duration::from_std(p.config.flow_ttl).unwrap_or(chrono::Duration::minutes(30));
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
pub(super) async fn owned_flow<S: Store>(
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

pub(super) async fn challenge_of<S: Store>(
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

pub(super) async fn authorize_post<S: Store>(
    State(p): Shared<S>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: CookieJar,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer_of(peer);
    let params = if is_form(&headers) {
        pairs(&body)
    } else {
        Vec::new()
    };
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
    if !flow::accepts_address(&flow::view(&flow, challenge.as_ref(), now)) {
        return show_flow(&p, id, cookie.as_deref(), peer).await;
    }
    if param(&params, "restart").is_some() {
        // "Change address": back to the form; the old challenge simply expires.
        let restarted = FlowRecord {
            challenge_id: None,
            version: flow.version.saturating_add(1),
            ..flow.clone()
        };
        return match p.challenges.store().save_flow(restarted).await {
            Ok(_) => back_to(&p, &flow),
            Err(_) => Message::Unavailable.render(&p.frame()),
        };
    }
    let typed = param(&params, "address").unwrap_or("");
    take_address(&p, flow, typed, peer, now).await
}

pub(super) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// 303 to the flow's page (post/redirect/get).
fn back_to<S: Store>(p: &Provider<S>, flow: &FlowRecord) -> Response {
    Redirect::to(&format!("{}/authorize?flow={}", p.base, flow.id)).into_response()
}

/// The address typed on the page: the client's narrower domains, then the challenge service
/// (strict parser, policy, limits, mail). A refusal shows the form again with its
/// explanation; a challenge moves the flow on.
async fn take_address<S: Store>(
    p: &Provider<S>,
    flow: FlowRecord,
    typed: &str,
    peer: Option<SocketAddr>,
    now: DateTime<Utc>,
) -> Response {
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
        return refuse_address(p, &flow, typed, peer, &e);
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
                Ok(_) => back_to(p, &flow),
                Err(_) => Message::Unavailable.render(&p.frame()),
            }
        }
        Err(e) => {
            p.metrics.challenge(Some(e.reason()));
            refuse_address(p, &flow, typed, peer, &e)
        }
    }
}

fn refuse_address<S: Store>(
    p: &Provider<S>,
    flow: &FlowRecord,
    typed: &str,
    peer: Option<SocketAddr>,
    e: &CreateError,
) -> Response {
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
        p,
        flow,
        &View::Address,
        &shown,
        Some((status, explain::create_error(e))),
    )
}
