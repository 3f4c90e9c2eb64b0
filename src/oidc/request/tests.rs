//! The protocol rules of `request/mod.rs` as tables.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::time::Duration;

use super::*;
use crate::config::{ClientSecret, SigningAlg};

fn config() -> OidcConfig {
    OidcConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        issuer: "http://127.0.0.1:1".into(),
        signing_key: "k".into(),
        signing_alg: SigningAlg::Rs256,
        previous_keys: vec![],
        subject_key: "s".into(),
        code_ttl: Duration::from_secs(60),
        id_token_ttl: Duration::from_secs(300),
        flow_ttl: Duration::from_secs(1800),
        cookie_secure: false,
        clients: vec![
            OidcClient {
                id: "conf".into(),
                secret: Some(ClientSecret::new(b"s3cret".to_vec())),
                redirect_uris: vec!["https://rp.example/cb".into()],
                name: "RP".into(),
                allowed_domains: vec![],
            },
            OidcClient {
                id: "pub".into(),
                secret: None,
                redirect_uris: vec!["http://127.0.0.1:9/cb".into()],
                name: "Public".into(),
                allowed_domains: vec![],
            },
        ],
    }
}

const CH: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn q(s: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(s.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[test]
fn authorize_table() {
    let base = "client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=code&scope=openid&state=xyz";
    let rows: Vec<(String, Result<&str, Option<OAuthError>>)> = vec![
        (base.to_owned(), Ok("openid")),
        (format!("{base}&nonce=n"), Ok("openid")),
        (
            "client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=code&scope=openid+email+profile".to_owned(),
            Ok("openid email"),
        ),
        ("redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=code&scope=openid".to_owned(), Err(None)),
        ("client_id=nobody&redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=code&scope=openid".to_owned(), Err(None)),
        ("client_id=conf&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&response_type=code&scope=openid".to_owned(), Err(None)),
        ("client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb%2F&response_type=code&scope=openid".to_owned(), Err(None)),
        ("client_id=conf&client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=code&scope=openid".to_owned(), Err(None)),
        (format!("{base}&scope=openid"), Err(Some(OAuthError::InvalidRequest))),
        ("client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb&scope=openid".to_owned(), Err(Some(OAuthError::InvalidRequest))),
        ("client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=token&scope=openid".to_owned(), Err(Some(OAuthError::UnsupportedResponseType))),
        ("client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=code&scope=email".to_owned(), Err(Some(OAuthError::InvalidScope))),
        (format!("{base}x&prompt=none"), Err(Some(OAuthError::LoginRequired))),
        (format!("{base}&request=eyJ"), Err(Some(OAuthError::RequestNotSupported))),
        (format!("{base}&request_uri=https%3A%2F%2Fx"), Err(Some(OAuthError::RequestUriNotSupported))),
        (format!("{base}&response_mode=fragment"), Err(Some(OAuthError::InvalidRequest))),
        (format!("{base}&code_challenge={CH}&code_challenge_method=plain"), Err(Some(OAuthError::InvalidRequest))),
        (format!("{base}&code_challenge={CH}"), Err(Some(OAuthError::InvalidRequest))),
        (format!("{base}&code_challenge=short&code_challenge_method=S256"), Err(Some(OAuthError::InvalidRequest))),
        (format!("{base}&code_challenge_method=S256"), Err(Some(OAuthError::InvalidRequest))),
        (format!("{base}&code_challenge={CH}&code_challenge_method=S256"), Ok("openid")),
        ("client_id=pub&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&response_type=code&scope=openid".to_owned(), Err(Some(OAuthError::InvalidRequest))),
        (format!("client_id=pub&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&response_type=code&scope=openid&code_challenge={CH}&code_challenge_method=S256"), Ok("openid")),
    ];
    let c = config();
    for (query, want) in &rows {
        let got = authorize(&q(query), &c);
        match (want, &got) {
            (Ok(scope), Authorize::Accept(r)) => assert_eq!(r.scope, *scope, "{query}"),
            (Err(None), Authorize::Page(_)) => {}
            (Err(Some(e)), Authorize::Redirect(r)) => {
                assert_eq!(r.error, *e, "{query}");
            }
            _ => panic!("{query}: {got:?}"),
        }
    }
}

#[test]
fn redirected_errors_keep_state() {
    let got = authorize(
        &q(
            "client_id=conf&redirect_uri=https%3A%2F%2Frp.example%2Fcb&response_type=token&scope=openid&state=s1",
        ),
        &config(),
    );
    let Authorize::Redirect(r) = got else {
        panic!("{got:?}")
    };
    assert_eq!(r.state.as_deref(), Some("s1"));
    assert_eq!(r.redirect_uri, "https://rp.example/cb");
}

#[test]
fn token_request_and_client_authentication_table() {
    let basic = |id: &str, secret: &str| {
        format!(
            "Basic {}",
            data_encoding::BASE64.encode(format!("{id}:{secret}").as_bytes())
        )
    };
    let form = "grant_type=authorization_code&code=c&redirect_uri=https%3A%2F%2Frp.example%2Fcb";
    // (form, Authorization, expected error or the authenticated client)
    let rows: Vec<(String, Option<String>, Result<&str, OAuthError>)> = vec![
        (form.into(), Some(basic("conf", "s3cret")), Ok("conf")),
        (
            format!("{form}&client_id=conf&client_secret=s3cret"),
            None,
            Ok("conf"),
        ),
        (
            format!("{form}&client_id=conf&client_secret=wrong"),
            None,
            Err(OAuthError::InvalidClient),
        ),
        (
            form.into(),
            Some(basic("conf", "wrong")),
            Err(OAuthError::InvalidClient),
        ),
        (
            format!("{form}&client_id=conf"),
            None,
            Err(OAuthError::InvalidClient),
        ),
        (form.into(), None, Err(OAuthError::InvalidClient)),
        (
            format!("{form}&client_id=nobody&client_secret=x"),
            None,
            Err(OAuthError::InvalidClient),
        ),
        (format!("{form}&client_id=pub"), None, Ok("pub")),
        (
            format!("{form}&client_id=pub&client_secret=x"),
            None,
            Err(OAuthError::InvalidClient),
        ),
        (
            format!("{form}&client_secret=s3cret"),
            Some(basic("conf", "s3cret")),
            Err(OAuthError::InvalidRequest),
        ),
        (
            format!("{form}&client_id=pub"),
            Some(basic("conf", "s3cret")),
            Err(OAuthError::InvalidRequest),
        ),
        (
            format!("{form}&code=d&client_id=pub"),
            None,
            Err(OAuthError::InvalidRequest),
        ),
        (
            "grant_type=refresh_token&code=c&client_id=pub".into(),
            None,
            Err(OAuthError::UnsupportedGrantType),
        ),
        (
            "code=c&client_id=pub".into(),
            None,
            Err(OAuthError::InvalidRequest),
        ),
        (
            "grant_type=authorization_code&client_id=pub".into(),
            None,
            Err(OAuthError::InvalidRequest),
        ),
        (
            form.into(),
            Some("Basic !!!".into()),
            Err(OAuthError::InvalidClient),
        ),
        (form.into(), Some(basic("c%6Fnf", "s3cret")), Ok("conf")),
    ];
    let c = config();
    for (body, auth, want) in rows {
        let got = token_request(&q(&body), auth.as_deref().map(str::as_bytes))
            .and_then(|r| authenticate(&r, &c).map(|cl| cl.id.clone()));
        match (want, got) {
            (Ok(id), Ok(got)) => assert_eq!(got, id, "{body}"),
            (Err(e), Err(got)) => assert_eq!(got.error, e, "{body} {auth:?}"),
            (w, g) => panic!("{body} {auth:?}: want {w:?}, got {g:?}"),
        }
    }
}

#[test]
fn code_checks_table() {
    let now = Utc::now();
    let code = CodeRecord {
        code_hash: [0; 32],
        client_id: "conf".into(),
        redirect_uri: "https://rp.example/cb".into(),
        // RFC 7636 appendix B.
        code_challenge: Some(CH.into()),
        nonce: None,
        scope: "openid".into(),
        challenge_id: "c".into(),
        expires_at: now + chrono::Duration::seconds(30),
    };
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let c = config();
    let conf = &c.clients[0];
    let public = &c.clients[1];
    let req = |redirect: Option<&str>, v: Option<&str>| TokenRequest {
        code: "x".into(),
        redirect_uri: redirect.map(str::to_owned),
        code_verifier: v.map(str::to_owned),
        client_id: "conf".into(),
        secret: None,
        basic: false,
    };
    let rp = Some("https://rp.example/cb");
    let no_pkce = CodeRecord {
        code_challenge: None,
        ..code.clone()
    };
    let expired = CodeRecord {
        expires_at: now,
        ..code.clone()
    };
    let rows: Vec<(&CodeRecord, &OidcClient, TokenRequest, bool)> = vec![
        (&code, conf, req(rp, Some(verifier)), true),
        (
            &code,
            conf,
            req(rp, Some(&verifier.replace('d', "e"))),
            false,
        ),
        (&code, conf, req(rp, None), false),
        (&code, conf, req(None, Some(verifier)), false),
        (
            &code,
            conf,
            req(Some("https://rp.example/other"), Some(verifier)),
            false,
        ),
        (&code, public, req(rp, Some(verifier)), false),
        (&expired, conf, req(rp, Some(verifier)), false),
        (&no_pkce, conf, req(rp, None), true),
        (&no_pkce, conf, req(rp, Some(verifier)), false),
    ];
    for (i, (code, client, r, ok)) in rows.into_iter().enumerate() {
        let got = check_code(code, client, &r, now);
        assert_eq!(got.is_ok(), ok, "row {i}: {got:?}");
        if let Err(e) = got {
            assert_eq!(e.error, OAuthError::InvalidGrant, "row {i}");
        }
    }
}
