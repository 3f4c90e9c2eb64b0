//! The OpenID Provider over real HTTP (SPEC §9, issue 13): the in-process daemon with its
//! store, outbox, SIEM file, SMTP listener and OIDC listener; the test plays the browser
//! (cookies by hand, no redirect following), the relying party (`/token`, `/userinfo`,
//! JWKS) and the ministry's mail server (a DKIM-signed reply from 127.0.0.25 through the
//! test world's DNS).
//!
//! Every rule of the issue has its test: the whole sign-in and its claims, code reuse,
//! expired code, PKCE missing or wrong, wrong client secret (401), a code presented by
//! another client, redirect URI mismatch (page, no redirect), CSRF token missing, a second
//! browser, an address with two `@`, an address outside the policy or the client's domains,
//! a restart in the middle of a sign-in, and the challenge token absent from every page,
//! URL, token and claim.
//!
//! Run: `cargo test --test oidc`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use gatekeeper::daemon::{ConfigSource, Running};
use serde_json::Value;

use common::e2e::{Events, Layout, Settings, Smtp, send_mail};
use common::mail::Mail;
use common::{Vars, World};

const ALICE: &str = "alice@interieur.gouv.fr";
const RP_CB: &str = "http://127.0.0.1:9/cb";
const RP2_CB: &str = "http://127.0.0.1:9/other";
const SPA_CB: &str = "http://localhost:9/spa";
const SECRET: &str = "rp-secret-0123456789";
const SECRET2: &str = "rp2-secret-9876543210";
/// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// A free loopback port (the issuer URL must name it before the daemon starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The daemon with `[oidc]`: three clients — `rp` (secret), `rp2` (secret, another
/// redirect URI), `spa` (public, PKCE required) — and `narrow`, allowed `justice.gouv.fr`
/// only.
struct Op {
    world: World,
    _tmp: tempfile::TempDir,
    layout: Layout,
    running: Option<Running>,
    issuer: String,
    events: Events,
    smtp: SocketAddr,
    http: reqwest::Client,
    n: u32,
}

impl Op {
    async fn start(code_ttl: &str) -> Op {
        let world = World::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        let config = layout.write_config(world.dns.addr, &Settings::default());
        let d = tmp.path();
        std::fs::write(d.join("rp.secret"), format!("{SECRET}\n")).unwrap();
        std::fs::write(d.join("rp2.secret"), SECRET2).unwrap();
        let port = free_port();
        let issuer = format!("http://127.0.0.1:{port}");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&format!(
            r#"
[oidc]
listen = "127.0.0.1:{port}"
issuer = "{issuer}"
signing_key = "{d}/var/oidc-key.pem"
subject_key = "{d}/var/oidc-subject"
code_ttl = "{code_ttl}"

[[oidc.client]]
id = "rp"
secret_file = "{d}/rp.secret"
redirect_uris = ["{RP_CB}"]
name = "Messagerie de test"

[[oidc.client]]
id = "rp2"
secret_file = "{d}/rp2.secret"
redirect_uris = ["{RP2_CB}"]
name = "Autre service"

[[oidc.client]]
id = "spa"
redirect_uris = ["{SPA_CB}"]
name = "Application publique"

[[oidc.client]]
id = "narrow"
secret_file = "{d}/rp.secret"
redirect_uris = ["{RP_CB}"]
name = "Justice seulement"
allowed_domains = ["justice.gouv.fr"]
"#,
            d = d.display()
        ));
        std::fs::write(&config, text).unwrap();
        let running = gatekeeper::daemon::start(ConfigSource::File(config))
            .await
            .expect("daemon starts");
        assert_eq!(running.oidc_addr.map(|a| a.port()), Some(port));
        Op {
            events: Events::new(&layout.events),
            smtp: running.smtp_addrs[0],
            world,
            _tmp: tmp,
            layout,
            running: Some(running),
            issuer,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            n: 0,
        }
    }

    /// Stop and start again on the same files (same store, keys and OIDC port).
    async fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop_now().await;
        }
        let running = gatekeeper::daemon::start(ConfigSource::File(self.layout.config.clone()))
            .await
            .expect("daemon restarts");
        self.smtp = running.smtp_addrs[0];
        self.running = Some(running);
    }

    fn browser(&self) -> Browser {
        Browser {
            http: self.http.clone(),
            cookie: None,
            seen: Vec::new(),
        }
    }

    fn authorize_url(&self, client: &str, redirect: &str, extra: &str) -> String {
        format!(
            "{}/authorize?response_type=code&scope=openid%20email&client_id={client}&redirect_uri={}&state=st-1&nonce=n-1{extra}",
            self.issuer,
            enc(redirect)
        )
    }

    /// The newest challenge mail in the outbox (name = challenge id).
    fn newest_challenge(&self) -> (String, common::e2e::ChallengeMail) {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> =
            std::fs::read_dir(&self.layout.outbox)
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| (e.metadata().unwrap().modified().unwrap(), e.path()))
                .collect();
        files.sort();
        let path = &files.last().expect("a challenge mail").1;
        let id = path.file_stem().unwrap().to_str().unwrap().to_string();
        let mail = self.layout.challenge_mail(&id);
        (id, mail)
    }

    fn outbox_count(&self) -> usize {
        std::fs::read_dir(&self.layout.outbox)
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Play the ministry's mail server: Alice's signed reply with the session code.
    async fn reply(&mut self, mail: &common::e2e::ChallengeMail, session_code: &str) {
        self.n += 1;
        let mut vars = Vars::new(Utc::now(), self.n);
        vars.token = mail.token.clone();
        vars.challenge_msgid = mail.message_id.clone();
        vars.session_code = session_code.to_string();
        let m = Mail::alice();
        let ip: IpAddr = m.client_ip.parse().unwrap();
        let mut smtp = Smtp::connect(ip, self.smtp).await.unwrap();
        let rcpt = format!("confirm+{}@verify.example.gouv.fr", vars.token);
        let reply = send_mail(&mut smtp, &m.helo, &m.mail_from, &rcpt, &m.build(&vars)).await;
        smtp.quit().await;
        let reply = reply.expect("a reply to DATA");
        assert_eq!(reply.code, 250, "{reply}");
    }

    /// A whole sign-in in `b` up to the redirect to the client: the code, the redirect URL
    /// and the challenge mail (to look for its token afterwards).
    async fn sign_in(
        &mut self,
        b: &mut Browser,
        client: &str,
        redirect: &str,
        extra: &str,
    ) -> (String, url::Url, common::e2e::ChallengeMail) {
        let flow_url = b.start(&self.authorize_url(client, redirect, extra)).await;
        let page = b.get_ok(&flow_url).await;
        let csrf = field(&page, "csrf");
        let flow = field(&page, "flow");
        let (status, loc, _) = b
            .post(
                &format!("{}/authorize", self.issuer),
                &[("flow", &flow), ("csrf", &csrf), ("address", ALICE)],
            )
            .await;
        assert_eq!(status, 303, "POST address");
        let pending = b.get_ok(&absolute(&self.issuer, &loc.unwrap())).await;
        let code = session_code(&pending);
        assert!(pending.contains(ALICE), "the page names the address");
        let (_, mail) = self.newest_challenge();
        assert!(
            !mail.text.contains(&code),
            "the session code is not in the mail"
        );
        self.reply(&mail, &code).await;
        let (status, loc, _) = b.get(&flow_url).await;
        assert_eq!(status, 303, "the confirmed page redirects to the client");
        let to = url::Url::parse(&loc.unwrap()).unwrap();
        let q: Vec<(String, String)> = to.query_pairs().into_owned().collect();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("state").as_deref(), Some("st-1"));
        assert_eq!(
            get("iss").as_deref(),
            Some(self.issuer.as_str()),
            "RFC 9207 iss"
        );
        let code = get("code").expect("a code");
        (code, to, mail)
    }

    async fn token(
        &self,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self
            .http
            .post(format!("{}/token", self.issuer))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode_form(form));
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, r.json().await.unwrap_or(Value::Null), headers)
    }

    async fn exchange(
        &self,
        code: &str,
        redirect: &str,
        extra: &[(&str, &str)],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
        ];
        form.extend_from_slice(extra);
        self.token(&form, Some(("rp", SECRET))).await
    }

    async fn json(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The OIDC audit events once `enough` holds on them (the SIEM writes asynchronously;
    /// bounded wait).
    async fn oidc_events_until(&self, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = std::time::Instant::now();
        loop {
            let evs: Vec<Value> = self
                .events
                .all()
                .into_iter()
                .filter(|e| e["event"]["action"] == "oidc-signin")
                .collect();
            if enough(&evs) || start.elapsed() > Duration::from_secs(5) {
                return evs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn metrics(&self) -> String {
        let r = self.running.as_ref().unwrap();
        common::e2e::Api::new(r.api_addr, &self.layout.token_file)
            .metrics()
            .await
    }
}

/// A browser: one cookie jar (the provider's cookie only), no redirect following, and a
/// record of every URL and body it saw.
struct Browser {
    http: reqwest::Client,
    cookie: Option<String>,
    seen: Vec<String>,
}

impl Browser {
    async fn get(&mut self, url: &str) -> (u16, Option<String>, String) {
        let mut req = self.http.get(url);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("gatekeeper_browser={c}"));
        }
        let r = req.send().await.unwrap();
        self.take(url, r).await
    }

    async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> (u16, Option<String>, String) {
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode_form(form));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("gatekeeper_browser={c}"));
        }
        let r = req.send().await.unwrap();
        self.take(url, r).await
    }

    async fn take(&mut self, url: &str, r: reqwest::Response) -> (u16, Option<String>, String) {
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            if let Some(rest) = v.strip_prefix("gatekeeper_browser=") {
                self.cookie = Some(rest.split(';').next().unwrap().to_string());
                assert!(v.contains("HttpOnly"), "{v}");
                assert!(v.contains("SameSite=Lax"), "{v}");
            }
        }
        let status = r.status().as_u16();
        let loc = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        let body = r.text().await.unwrap();
        self.seen.push(url.to_string());
        self.seen.extend(loc.clone());
        self.seen.push(body.clone());
        (status, loc, body)
    }

    async fn get_ok(&mut self, url: &str) -> String {
        let (status, loc, body) = self.get(url).await;
        assert_eq!(status, 200, "GET {url} → {loc:?}\n{body}");
        body
    }

    /// `GET /authorize?...` → 303 to the flow's page; its absolute URL.
    async fn start(&mut self, url: &str) -> String {
        let (status, loc, body) = self.get(url).await;
        assert_eq!(status, 303, "GET {url}: {body}");
        let loc = loc.unwrap();
        assert!(loc.contains("/authorize?flow="), "{loc}");
        absolute(url, &loc)
    }
}

fn absolute(base: &str, loc: &str) -> String {
    url::Url::parse(base)
        .unwrap()
        .join(loc)
        .unwrap()
        .to_string()
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn encode_form(form: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in form {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The value of the hidden input `name` in a page.
fn field(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in\n{page}"))
        + marker.len();
    page[start..].split('"').next().unwrap().to_string()
}

fn session_code(page: &str) -> String {
    let marker = "id=\"session-code\">";
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("no session code in\n{page}"))
        + marker.len();
    let code: String = page[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(code.len(), 6, "{page}");
    code
}

/// The JSON payload of a JWT (no verification; see `verify_id_token` for that).
fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(part.as_bytes())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Verify an ID token as a relying party does: the JWKS key of its `kid`, RS256, `iss`,
/// `aud`, `exp`.
async fn verify_id_token(op: &Op, jwt: &str, client: &str) -> Value {
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(op.json("/jwks.json").await).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_issuer(&[&op.issuer]);
    v.set_audience(&[client]);
    jsonwebtoken::decode::<Value>(jwt, &key, &v).unwrap().claims
}

#[tokio::test]
async fn sign_in_end_to_end_with_claims_userinfo_and_audit() {
    let mut op = Op::start("60s").await;

    // Discovery and keys.
    let disc = op.json("/.well-known/openid-configuration").await;
    assert_eq!(disc["issuer"], op.issuer.as_str());
    assert_eq!(disc["token_endpoint"], format!("{}/token", op.issuer));
    assert_eq!(disc["code_challenge_methods_supported"][0], "S256");
    assert_eq!(disc["authorization_response_iss_parameter_supported"], true);
    assert_eq!(disc["id_token_signing_alg_values_supported"][0], "RS256");
    let key_file = op.layout.dir.join("var/oidc-key.pem");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file created 0600");
    }

    let mut b = op.browser();
    let (code, redirect, mail) = op
        .sign_in(
            &mut b,
            "rp",
            RP_CB,
            &format!("&code_challenge={CHALLENGE}&code_challenge_method=S256"),
        )
        .await;
    let (status, body, headers) = op
        .exchange(&code, RP_CB, &[("code_verifier", VERIFIER)])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers.get("cache-control").unwrap(), "no-store");
    assert_eq!(body["token_type"], "Bearer");
    let id_token = body["id_token"].as_str().unwrap().to_string();
    let access = body["access_token"].as_str().unwrap().to_string();
    let claims = verify_id_token(&op, &id_token, "rp").await;
    assert_eq!(claims["email"], ALICE);
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["amr"], serde_json::json!(["mail-reply"]));
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["azp"], "rp");
    assert!(claims["auth_time"].as_i64().unwrap() <= Utc::now().timestamp());
    let ev = &claims["gatekeeper_evidence"];
    assert_eq!(ev["dkim_domain"], "interieur.gouv.fr");
    assert_eq!(ev["spf"], "pass");
    assert_eq!(ev["client_ip"], "127.0.0.25");
    assert_eq!(ev["message_id_sha256"].as_str().unwrap().len(), 64);
    assert!(ev["confirmed_at"].as_str().unwrap().ends_with('Z'));
    let sub = claims["sub"].as_str().unwrap().to_string();
    assert!(!sub.contains("alice"), "sub is opaque");

    // Userinfo with the access token; a tampered token is refused.
    let r = op
        .http
        .get(format!("{}/userinfo", op.issuer))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["sub"], sub.as_str());
    assert_eq!(info["email"], ALICE);
    assert_eq!(info["email_verified"], true);
    let r = op
        .http
        .get(format!("{}/userinfo", op.issuer))
        .bearer_auth(&id_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an ID token is not an access token");
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    // Code reuse: invalid_grant.
    let (status, body, _) = op
        .exchange(&code, RP_CB, &[("code_verifier", VERIFIER)])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // The same person signs in again (another client): the same sub.
    let mut b2 = op.browser();
    let (code2, _, mail2) = op.sign_in(&mut b2, "rp2", RP2_CB, "").await;
    let (status, body, _) = op
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code2),
                ("redirect_uri", RP2_CB),
                ("client_id", "rp2"),
                ("client_secret", SECRET2),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "client_secret_post: {body}");
    let id2 = body["id_token"].as_str().unwrap().to_string();
    let claims2 = verify_id_token(&op, &id2, "rp2").await;
    assert_eq!(claims2["sub"], sub.as_str(), "stable sub");
    assert!(claims2.get("nonce").is_some());

    // The challenge token never reached the browser, a URL, a token or a claim.
    let mut everything = b.seen.clone();
    everything.extend(b2.seen.clone());
    everything.push(redirect.to_string());
    for jwt in [&id_token, &access, &id2] {
        everything.push(jwt.clone());
        everything.push(payload(jwt).to_string());
    }
    everything.push(info.to_string());
    for token in [&mail.token, &mail2.token] {
        for s in &everything {
            assert!(
                !s.to_ascii_lowercase().contains(token.as_str()),
                "the token leaked into: {s}"
            );
        }
    }

    // Audit: each sign-in is an oidc-signin success with its client; the replay a failure.
    let evs = op
        .oidc_events_until(|evs| {
            evs.iter()
                .filter(|e| e["event"]["outcome"] == "success")
                .count()
                >= 2
                && evs.iter().any(|e| e.to_string().contains("invalid_grant"))
        })
        .await;
    let ok: Vec<&Value> = evs
        .iter()
        .filter(|e| e["event"]["outcome"] == "success")
        .collect();
    assert_eq!(ok.len(), 2, "{evs:?}");
    let checks = ok[0]["gatekeeper"]["checks"].to_string();
    assert!(checks.contains("\"rp\""), "{checks}");
    assert!(evs.iter().any(|e| {
        e["event"]["outcome"] == "failure"
            && e["gatekeeper"]["checks"]
                .to_string()
                .contains("invalid_grant")
    }));
    let m = op.metrics().await;
    assert!(
        m.contains("gatekeeper_oidc_requests_total{endpoint=\"token\",outcome=\"ok\"} 2"),
        "{m}"
    );
    assert!(m.contains("outcome=\"invalid_grant\""), "{m}");
}

#[tokio::test]
async fn token_endpoint_refuses_every_bad_exchange() {
    let mut op = Op::start("2s").await;
    let pkce = format!("&code_challenge={CHALLENGE}&code_challenge_method=S256");

    // PKCE missing, then (a new code) PKCE wrong: invalid_grant, and the code is used up.
    let mut b = op.browser();
    let (code, _, _) = op.sign_in(&mut b, "rp", RP_CB, &pkce).await;
    let (status, body, _) = op.exchange(&code, RP_CB, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "PKCE missing"
    );
    let (status, _, _) = op
        .exchange(&code, RP_CB, &[("code_verifier", VERIFIER)])
        .await;
    assert_eq!(status, 400, "a refused code is used up");

    let (code, _, _) = op.sign_in(&mut b, "rp", RP_CB, &pkce).await;
    let wrong = VERIFIER.replace('d', "e");
    let (status, body, _) = op
        .exchange(&code, RP_CB, &[("code_verifier", &wrong)])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "PKCE wrong"
    );

    // A verifier for a code issued without a challenge (downgrade).
    let (code, _, _) = op.sign_in(&mut b, "rp", RP_CB, "").await;
    let (status, body, _) = op
        .exchange(&code, RP_CB, &[("code_verifier", VERIFIER)])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "downgrade"
    );

    // Wrong secret: 401 invalid_client with WWW-Authenticate (Basic), and the code survives.
    let (code, _, _) = op.sign_in(&mut b, "rp", RP_CB, "").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", RP_CB),
    ];
    let (status, body, headers) = op.token(&form, Some(("rp", "not-the-secret"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    // Presented by another client with its own valid secret: invalid_grant.
    let (status, body, _) = op.token(&form, Some(("rp2", SECRET2))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "another client's code"
    );

    // Redirect URI differing from the authorization request's.
    let (code, _, _) = op.sign_in(&mut b, "rp", RP_CB, "").await;
    let (status, body, _) = op.exchange(&code, "http://127.0.0.1:9/cb/", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "redirect_uri"
    );

    // Expired code (code_ttl 2s).
    let (code, _, _) = op.sign_in(&mut b, "rp", RP_CB, "").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body, _) = op.exchange(&code, RP_CB, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "expired"
    );

    // Request-level errors.
    let (status, body, _) = op
        .token(
            &[("grant_type", "password"), ("code", "x")],
            Some(("rp", SECRET)),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (status, body, _) = op
        .token(
            &[("grant_type", "authorization_code")],
            Some(("rp", SECRET)),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body, _) = op
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", "unknown"),
                ("redirect_uri", RP_CB),
            ],
            Some(("rp", SECRET)),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // A public client: no secret, PKCE required at /authorize and checked at /token.
    let (status, loc, _) = b.get(&op.authorize_url("spa", SPA_CB, "")).await;
    assert_eq!(status, 303);
    let loc = loc.unwrap();
    assert!(
        loc.starts_with(SPA_CB)
            && loc.contains("error=invalid_request")
            && loc.contains("state=st-1")
            && loc.contains("iss="),
        "{loc}"
    );
    let (code, _, _) = op.sign_in(&mut b, "spa", SPA_CB, &pkce).await;
    let (status, body, _) = op
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", SPA_CB),
                ("client_id", "spa"),
                ("code_verifier", VERIFIER),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "public client with PKCE: {body}");

    // Every refusal above is an audit event.
    let evs = op
        .oidc_events_until(|evs| {
            evs.iter()
                .filter(|e| e["event"]["outcome"] == "failure")
                .count()
                >= 10
        })
        .await;
    let failures = evs
        .iter()
        .filter(|e| e["event"]["outcome"] == "failure")
        .count();
    assert!(failures >= 10, "{failures} failures: {evs:?}");
}

#[tokio::test]
async fn authorize_shows_bad_clients_and_redirects_other_errors() {
    let op = Op::start("60s").await;
    let mut b = op.browser();

    // Unknown client and redirect URI mismatch: the page, never a redirect.
    for url in [
        op.authorize_url("nobody", RP_CB, ""),
        op.authorize_url("rp", "http://127.0.0.1:9/evil", ""),
        op.authorize_url("rp", "http://127.0.0.1:9/cb?x=1", ""),
        format!(
            "{}/authorize?client_id=rp&response_type=code&scope=openid",
            op.issuer
        ),
    ] {
        let (status, loc, body) = b.get(&url).await;
        assert_eq!(status, 400, "{url}");
        assert_eq!(loc, None, "no redirect for {url}");
        assert!(body.contains("<h1>"), "a page: {body}");
        assert!(body.contains("lang=\"en\""), "in English too");
    }

    // Redirected errors carry error, state and iss, exactly as the RFCs spell them.
    let rows = [
        ("&response_type=token", "invalid_request"), // repeated response_type
        ("&prompt=none", "login_required"),
        ("&request=eyJhbGciOiJub25lIn0", "request_not_supported"),
        (
            "&code_challenge=abc&code_challenge_method=S256",
            "invalid_request",
        ),
        (
            &format!("&code_challenge={CHALLENGE}&code_challenge_method=plain") as &str,
            "invalid_request",
        ),
    ];
    for (extra, error) in rows {
        let (status, loc, _) = b.get(&op.authorize_url("rp", RP_CB, extra)).await;
        assert_eq!(status, 303, "{extra}");
        let loc = url::Url::parse(&loc.unwrap()).unwrap();
        let q: std::collections::HashMap<String, String> = loc.query_pairs().into_owned().collect();
        assert_eq!(q.get("error").map(String::as_str), Some(error), "{extra}");
        assert_eq!(q.get("state").map(String::as_str), Some("st-1"));
        assert_eq!(q.get("iss"), Some(&op.issuer));
    }
    let url = format!(
        "{}/authorize?response_type=id_token&scope=openid&client_id=rp&redirect_uri={}",
        op.issuer,
        enc(RP_CB)
    );
    let (_, loc, _) = b.get(&url).await;
    assert!(loc.unwrap().contains("error=unsupported_response_type"));
    let url = format!(
        "{}/authorize?response_type=code&scope=email&client_id=rp&redirect_uri={}",
        op.issuer,
        enc(RP_CB)
    );
    let (_, loc, _) = b.get(&url).await;
    assert!(loc.unwrap().contains("error=invalid_scope"));

    // Each refusal is audited.
    let evs = op
        .oidc_events_until(|evs| {
            let all = serde_json::to_string(evs).unwrap();
            all.contains("unknown_client") && all.contains("invalid_redirect_uri")
        })
        .await;
    assert!(evs.iter().any(|e| {
        e["gatekeeper"]["checks"]
            .to_string()
            .contains("unknown_client")
    }));
    assert!(evs.iter().any(|e| {
        e["gatekeeper"]["checks"]
            .to_string()
            .contains("invalid_redirect_uri")
    }));
}

#[tokio::test]
async fn the_page_guards_csrf_browser_and_address() {
    let mut op = Op::start("60s").await;
    let mut b = op.browser();
    let flow_url = b.start(&op.authorize_url("rp", RP_CB, "")).await;
    let page = b.get_ok(&flow_url).await;
    let csrf = field(&page, "csrf");
    let flow = field(&page, "flow");
    let post = format!("{}/authorize", op.issuer);

    // Security headers on the page.
    let r = op
        .http
        .get(&flow_url)
        .header(
            "cookie",
            format!("gatekeeper_browser={}", b.cookie.clone().unwrap()),
        )
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(!page.contains("<script>"), "no inline script");
    assert!(!page.contains("http-equiv=\"refresh\""), "no timed refresh");

    // CSRF token missing or wrong: 403, no mail.
    let before = op.outbox_count();
    let (status, _, body) = b.post(&post, &[("flow", &flow), ("address", ALICE)]).await;
    assert_eq!(status, 403, "{body}");
    let (status, _, _) = b
        .post(
            &post,
            &[("flow", &flow), ("csrf", "forged"), ("address", ALICE)],
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(op.outbox_count(), before);

    // A second browser (no cookie, or its own) cannot see or use the first one's flow.
    let mut other = op.browser();
    let (status, _, body) = other.get(&flow_url).await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains(&csrf));
    other.cookie = Some("another-browser".into());
    let (status, _, _) = other
        .post(
            &post,
            &[("flow", &flow), ("csrf", &csrf), ("address", ALICE)],
        )
        .await;
    assert_eq!(status, 403);
    let (status, _, _) = other
        .get(&format!("{}/authorize/status?flow={flow}", op.issuer))
        .await;
    assert_eq!(status, 403);
    assert_eq!(op.outbox_count(), before);

    // Two @, outside the policy, outside the client's domains: explained in both
    // languages, no mail sent.
    let rows = [
        (
            "attacker@evil.example@interieur.gouv.fr",
            "un seul « @ »",
            "exactly one",
        ),
        (
            "alice@example.com",
            "domaine accepté",
            "domain this service accepts",
        ),
        ("alice", "Il manque le « @ »", "are missing"),
    ];
    for (address, fr, en) in rows {
        let (status, _, body) = b
            .post(
                &post,
                &[("flow", &flow), ("csrf", &csrf), ("address", address)],
            )
            .await;
        assert_eq!(status, 422, "{address}");
        let text = body.replace("&#34;", "\"").replace("&quot;", "\"");
        assert!(text.contains(fr) && text.contains(en), "{address}:\n{body}");
        assert!(body.contains("fr-input-group--error"));
    }
    assert_eq!(op.outbox_count(), before, "no mail for a refused address");
    let mut nb = op.browser();
    let narrow = nb.start(&op.authorize_url("narrow", RP_CB, "")).await;
    let page = nb.get_ok(&narrow).await;
    let (status, _, body) = nb
        .post(
            &post,
            &[
                ("flow", &field(&page, "flow")),
                ("csrf", &field(&page, "csrf")),
                ("address", ALICE),
            ],
        )
        .await;
    assert_eq!(status, 422, "the client's narrower domains: {body}");
    assert_eq!(op.outbox_count(), before);

    // The flow survives a daemon restart: the same page, the same session code.
    let (status, _, _) = b
        .post(
            &post,
            &[("flow", &flow), ("csrf", &csrf), ("address", ALICE)],
        )
        .await;
    assert_eq!(status, 303);
    let code = session_code(&b.get_ok(&flow_url).await);
    let (status, _, body) = b
        .get(&format!("{}/authorize/status?flow={flow}", op.issuer))
        .await;
    assert_eq!((status, body.as_str()), (200, "{\"status\":\"pending\"}"));
    op.restart().await;
    let again = b.get_ok(&flow_url).await;
    assert_eq!(session_code(&again), code, "same flow after restart");
    let (_, mail) = op.newest_challenge();
    op.reply(&mail, &code).await;
    let (status, body, _) = {
        let (s, _, body) = b
            .get(&format!("{}/authorize/status?flow={flow}", op.issuer))
            .await;
        (s, body, ())
    };
    assert_eq!((status, body.as_str()), (200, "{\"status\":\"confirmed\"}"));
    let (status, loc, _) = b.get(&flow_url).await;
    assert_eq!(status, 303);
    assert!(loc.unwrap().starts_with(RP_CB));
    // Finished: a reload does not issue a second code.
    let (status, loc, body) = b.get(&flow_url).await;
    assert_eq!((status, loc), (200, None));
    assert!(body.contains("Connexion terminée"));

    let whats = [
        "csrf",
        "other_browser",
        "domain.not_allowed",
        "envelope.syntax",
    ];
    let evs = op
        .oidc_events_until(|evs| {
            let all = serde_json::to_string(evs).unwrap();
            whats.iter().all(|w| all.contains(w))
        })
        .await;
    for what in [
        "csrf",
        "other_browser",
        "domain.not_allowed",
        "envelope.syntax",
    ] {
        assert!(
            evs.iter()
                .any(|e| e["gatekeeper"]["checks"].to_string().contains(what)),
            "{what}: {evs:?}"
        );
    }
    let _ = op.world.dns.queries();
}

#[test]
fn oidc_configuration_is_validated_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s");
    let empty = dir.path().join("empty");
    std::fs::write(&secret, "x").unwrap();
    std::fs::write(&empty, "\n").unwrap();
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/gatekeeper.toml"))
            .unwrap();
    let client = |extra: &str| {
        format!(
            "\n[oidc]\nlisten = \"127.0.0.1:8443\"\nissuer = \"https://id.example.gouv.fr\"\n\n[[oidc.client]]\nid = \"rp\"\nsecret_file = \"{}\"\nredirect_uris = [\"https://rp.example.gouv.fr/cb\"]\nname = \"RP\"\n{extra}",
            secret.display()
        )
    };
    let ok = format!("{base}{}", client(""));
    let config = gatekeeper::config::Config::from_toml_str(&ok, "t.toml").expect("valid");
    let oidc = config.oidc.unwrap();
    assert!(oidc.cookie_secure, "https issuer: Secure cookie");
    assert_eq!(oidc.code_ttl, Duration::from_secs(60));
    assert_eq!(oidc.id_token_ttl, Duration::from_secs(300));

    let rows: Vec<(String, &str)> = vec![
        (format!("{base}{}", client("colour = \"blue\"\n")), "colour"),
        (
            ok.replace(
                "https://id.example.gouv.fr\"",
                "https://id.example.gouv.fr/\"",
            ),
            "oidc.issuer",
        ),
        (
            ok.replace(
                "https://rp.example.gouv.fr/cb",
                "http://rp.example.gouv.fr/cb",
            ),
            "oidc.client[0].redirect_uris[0]",
        ),
        (
            ok.replace("https://rp.example.gouv.fr/cb", "/cb"),
            "oidc.client[0].redirect_uris[0]",
        ),
        (
            ok.replace(&secret.display().to_string(), &empty.display().to_string()),
            "oidc.client[0].secret_file",
        ),
        (
            ok.replace(&secret.display().to_string(), "/nonexistent/secret"),
            "oidc.client[0].secret_file",
        ),
        (
            format!(
                "{base}{}",
                client("").replace("[[oidc.client]]", "code_ttl = \"1h\"\n\n[[oidc.client]]")
            ),
            "oidc.code_ttl",
        ),
        (
            format!(
                "{base}{}",
                client("").replace(
                    "[[oidc.client]]",
                    "signing_alg = \"HS256\"\n\n[[oidc.client]]"
                )
            ),
            "oidc.signing_alg",
        ),
    ];
    for (text, key) in rows {
        let err = gatekeeper::config::Config::from_toml_str(&text, "t.toml").expect_err(key);
        let msg = err.to_string();
        assert!(msg.contains(key), "{key}: {msg}");
        assert!(msg.contains("t.toml:"), "file:line in {msg}");
    }
}
