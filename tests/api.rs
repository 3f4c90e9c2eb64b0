//! The HTTP API served on 127.0.0.1:0 and driven with reqwest: challenge creation and the
//! mail it writes, auth, refused claims (the whole `addresses.tsv` corpus), rate limits,
//! JSON errors, `/metrics`, relay delivery to an in-test SMTP sink, the relay-down path,
//! the CLI functions, and that no answer and no log line carries a challenge token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use gatekeeper::config::{Config, OutboundTarget};
use gatekeeper::daemon::assemble::{self, Parts};
use gatekeeper::daemon::cli;
use gatekeeper::store::Store;
use mail_parser::MessageParser;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use common::challenge::config;

// ---------------------------------------------------------------- log capture

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test binary (all levels), through a global subscriber.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------- server

struct Server {
    _dir: tempfile::TempDir,
    cfg: Config,
    parts_store: Arc<gatekeeper::store::DynStore>,
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Server {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        logs();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        tweak(&mut cfg);
        let Parts { store, router, .. } = assemble::build(&cfg).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(gatekeeper::api::serve(
            listener,
            router,
            std::future::pending(),
        ));
        let token = std::fs::read_to_string(&cfg.api.token_file)
            .unwrap()
            .trim()
            .to_owned();
        Self {
            _dir: dir,
            cfg,
            parts_store: store,
            base: format!("http://{addr}"),
            token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .no_proxy()
                .build()
                .unwrap(),
        }
    }

    fn outbox(&self) -> PathBuf {
        match &self.cfg.outbound.target {
            OutboundTarget::Directory(d) => d.clone(),
            OutboundTarget::Relay(_) => panic!("relay mode"),
        }
    }

    async fn post_raw(&self, body: &str, auth: Option<&str>) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}/v1/challenges", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn create(&self, address: &str) -> (u16, Value) {
        let body = json!({ "address": address }).to_string();
        self.post_raw(&body, Some(&format!("Bearer {}", self.token)))
            .await
    }

    async fn get(&self, path: &str, auth: bool) -> (u16, String) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if auth {
            req = req.bearer_auth(&self.token);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

fn eml(outbox: &Path, id: &str) -> Vec<u8> {
    std::fs::read(outbox.join(format!("{id}.eml"))).unwrap()
}

/// The token, read back the way a recipient would: from the Reply-To address.
fn token_of(mail: &[u8]) -> String {
    let msg = MessageParser::default().parse(mail).unwrap();
    let reply_to = msg
        .reply_to()
        .unwrap()
        .first()
        .unwrap()
        .address()
        .unwrap()
        .to_owned();
    let local = reply_to.strip_suffix("@verify.example.gouv.fr").unwrap();
    local.strip_prefix("confirm+").unwrap().to_owned()
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], want_code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_writes_the_challenge_mail_and_never_returns_the_token() {
    let s = Server::start(|_| {}).await;
    let (status, body) = s.create("Alice@INTERIEUR.gouv.fr").await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let code = body["session_code"].as_str().unwrap().to_owned();
    assert_eq!(
        body["address"], "alice@interieur.gouv.fr",
        "canonical address"
    );
    assert_eq!(body["status"], "pending");
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        body.as_object().unwrap().len(),
        5,
        "exactly the documented fields: {body}"
    );

    let raw = eml(&s.outbox(), &id);
    let token = token_of(&raw);
    assert_eq!(token.len(), 32);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    );

    let msg = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(
        msg.from().unwrap().first().unwrap().address(),
        Some("noreply@verify.example.gouv.fr")
    );
    assert_eq!(
        msg.to().unwrap().first().unwrap().address(),
        Some("alice@interieur.gouv.fr")
    );
    let message_id = msg.message_id().unwrap();
    assert!(message_id.starts_with(&format!("{token}.")), "{message_id}");
    assert!(message_id.ends_with("@verify.example.gouv.fr"));
    assert!(msg.subject().unwrap().contains(&token));
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated")
    );
    let text = msg.body_text(0).unwrap().into_owned();
    assert!(text.contains(&token), "token in the body");
    assert!(
        text.contains("Quelqu'un a demandé à inscrire cette adresse sur Tchap"),
        "{text}"
    );
    assert!(
        text.contains("Someone asked to register this address at Tchap"),
        "{text}"
    );
    assert!(text.contains("code shown on your screen"));
    assert!(text.contains("ignore this message"));
    // The session code is on the requester's screen only.
    assert!(!text.contains(&code), "session code in the mail body");
    assert!(
        !String::from_utf8_lossy(&raw).contains(&code),
        "session code in the raw mail"
    );
    assert!(
        String::from_utf8_lossy(&raw).contains("\r\n"),
        "CRLF line endings"
    );

    // Not in the API answer, not in GET, not in any log line.
    assert!(!body.to_string().contains(&token));
    let (st, shown) = s.get(&format!("/v1/challenges/{id}"), true).await;
    assert_eq!(st, 200);
    assert!(!shown.contains(&token));
    assert!(
        !shown.contains(&code),
        "GET does not repeat the session code"
    );
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["address"], "alice@interieur.gouv.fr");
    assert_eq!(shown["status"], "pending");
    assert_eq!(shown["rejections"], 0);
    assert!(shown["confirmed_at"].is_null());
    assert!(shown["evidence"].is_null());
    assert!(shown["created_at"].is_string());
    assert!(shown["expires_at"].is_string());
    assert!(s.parts_store.get(&id).await.unwrap().is_some());
    // The store keeps only the token's hash: the token is in none of its files.
    let db = &s.cfg.store.path;
    for file in [db.clone(), PathBuf::from(format!("{}-wal", db.display()))] {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "token in {}",
            file.display()
        );
    }
    let wal = std::fs::read(format!("{}-wal", db.display())).unwrap();
    assert!(
        wal.windows(id.len()).any(|w| w == id.as_bytes()),
        "the check above looks at the file the challenge is in"
    );

    // Log lines are written as they happen; poll (bounded) rather than guess a delay.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !log_text().contains(&id) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let logs = log_text();
    assert!(
        logs.contains(&id),
        "the challenge id is logged (so logs are captured)"
    );
    assert!(!logs.contains(&token), "challenge token in a log line");
    assert!(!logs.contains(&s.token), "API token in a log line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_shows_rejections_confirmation_and_evidence() {
    use gatekeeper::store::{ConfirmOutcome, ConfirmRequest, Confirmation};
    let s = Server::start(|_| {}).await;
    let (_, body) = s.create("alice@interieur.gouv.fr").await;
    let id = body["id"].as_str().unwrap().to_owned();
    s.parts_store
        .record_rejection(
            &id,
            gatekeeper::store::Rejection {
                reason: gatekeeper::reason::Reason::DkimNone,
                at: chrono::Utc::now(),
            },
        )
        .await
        .unwrap();
    let at = chrono::Utc::now();
    let evidence = gatekeeper::backend::Evidence {
        client_ip: "127.0.0.25".into(),
        helo: Some("smtp.interieur.gouv.fr".into()),
        tls_version: Some("1.3".into()),
        mail_from: "alice@interieur.gouv.fr".into(),
        mail_from_tagged: None,
        from: "alice@interieur.gouv.fr".into(),
        dkim_domain: "interieur.gouv.fr".into(),
        dkim_selector: "s2024".into(),
        dkim_algorithm: "rsa-sha256".into(),
        spf: "pass".into(),
        spf_dnssec: "secure".into(),
        dkim_key_dnssec: "secure".into(),
        message_id: Some("m1@interieur.gouv.fr".into()),
        date: Some("Thu, 26 Nov 2026 08:00:00 +0100".into()),
        headers: "From: Alice <alice@interieur.gouv.fr>\r\n".into(),
    };
    let outcome = s
        .parts_store
        .confirm(ConfirmRequest {
            id: id.clone(),
            confirmation: Confirmation {
                confirmed_at: at,
                evidence: evidence.clone(),
                message_id: Some("m1@interieur.gouv.fr".into()),
                from: "alice@interieur.gouv.fr".into(),
                session_id: "s1".into(),
                session_ended: false,
            },
            now: at,
        })
        .await
        .unwrap();
    assert_eq!(outcome, ConfirmOutcome::Confirmed);
    let (st, text) = s.get(&format!("/v1/challenges/{id}"), true).await;
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "confirmed");
    assert_eq!(v["rejections"], 1);
    // The refusal stays readable with what it means for the person (SPEC §4).
    let last = &v["last_rejection"];
    assert_eq!(last["reason"], "dkim.none");
    assert_eq!(
        last["explanation"]["en"],
        gatekeeper::reason::Reason::DkimNone.explanation().en
    );
    assert_eq!(
        last["explanation"]["fr"],
        gatekeeper::reason::Reason::DkimNone.explanation().fr
    );
    assert!(
        last["at"].as_str().is_some_and(|a| a.ends_with('Z')),
        "{last}"
    );
    assert_eq!(
        v["confirmed_at"],
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let ev = &v["evidence"];
    assert_eq!(ev["client_ip"], "127.0.0.25");
    assert_eq!(ev["helo"], "smtp.interieur.gouv.fr");
    assert_eq!(ev["tls_version"], "1.3");
    assert_eq!(ev["mail_from"], "alice@interieur.gouv.fr");
    assert_eq!(ev["from"], "alice@interieur.gouv.fr");
    assert_eq!(ev["dkim_domain"], "interieur.gouv.fr");
    assert_eq!(ev["dkim_selector"], "s2024");
    assert_eq!(ev["dkim_algorithm"], "rsa-sha256");
    assert_eq!(ev["spf"], "pass");
    assert_eq!(ev["message_id"], "m1@interieur.gouv.fr");
    assert_eq!(ev["date"], "Thu, 26 Nov 2026 08:00:00 +0100");
    assert_eq!(ev["headers"], "From: Alice <alice@interieur.gouv.fr>\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_file_is_created_private_and_required() {
    let s = Server::start(|_| {}).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&s.cfg.api.token_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(s.token.len() >= 32);
    assert!(
        log_text().contains(&s.cfg.api.token_file.display().to_string()),
        "path logged"
    );

    let body = json!({"address": "alice@interieur.gouv.fr"}).to_string();
    let (st, v) = s.post_raw(&body, None).await;
    assert_error(st, &v, 401, "api.unauthorized");
    let (st, v) = s.post_raw(&body, Some("Bearer wrong-token")).await;
    assert_error(st, &v, 401, "api.unauthorized");
    let (st, v) = s
        .post_raw(&body, Some(&format!("Bearer {}x", s.token)))
        .await;
    assert_error(st, &v, 401, "api.unauthorized");
    let (st, v) = s.post_raw(&body, Some(&format!("Basic {}", s.token))).await;
    assert_error(st, &v, 401, "api.unauthorized");
    let (st, _) = s.get("/v1/challenges/abc", false).await;
    assert_eq!(st, 401);
    let (st, _) = s.get("/metrics", false).await;
    assert_eq!(st, 401);
    // Nothing was created by the refused requests.
    assert_eq!(
        s.parts_store
            .pending_count("alice@interieur.gouv.fr", chrono::Utc::now())
            .await
            .unwrap(),
        0
    );
    // The liveness probe is open.
    let (st, h) = s.get("/healthz", false).await;
    assert_eq!((st, h.as_str()), (200, r#"{"status":"ok"}"#));
    // With the right token (case-insensitive scheme).
    let (st, _) = s
        .post_raw(&body, Some(&format!("bearer {}", s.token)))
        .await;
    assert_eq!(st, 201);

    // An existing token file is used as is.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tok");
    std::fs::write(&path, "  my-token\n").unwrap();
    let mut cfg = config(dir.path());
    cfg.api.token_file = path.clone();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let Parts { router, .. } = assemble::build(&cfg).unwrap();
    assert!(
        log_text().lines().any(
            |l| l.contains("the API token file is readable by other users")
                && l.contains(&path.display().to_string())
        ),
        "a world-readable token file is reported"
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{addr}/metrics"))
        .bearer_auth("my-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

/// Decode the address column of `addresses.tsv` (see the corpus README).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(char::from(u8::from_str_radix(&hex, 16).unwrap()));
            }
            other => panic!("bad escape {other:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_claim_gets_its_answer() {
    let s = Server::start(|_| {}).await;
    let tsv = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/addresses.tsv"
    ))
    .unwrap();
    let mut rows = 0;
    for line in tsv.lines().skip(1).filter(|l| !l.is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (address, expected, reason) = (unescape(cols[0]), cols[1], cols[2]);
        let (status, body) = s.create(&address).await;
        match expected {
            "accept" => assert_eq!(status, 201, "{address:?}: {body}"),
            "reject" => assert_error(status, &body, 422, reason),
            other => panic!("{other}"),
        }
        rows += 1;
    }
    assert!(rows >= 20, "{rows} rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_address_classes() {
    let s = Server::start(|_| {}).await;
    let cases = [
        ("attacker@evil.example@interieur.gouv.fr", "envelope.syntax"),
        ("alice\u{0}@interieur.gouv.fr", "envelope.syntax"),
        (
            "alice@interieur.gouv.fr\r\nBcc: attacker@evil.example",
            "envelope.syntax",
        ),
        ("evil.example!attacker@interieur.gouv.fr", "envelope.syntax"),
        ("attacker@evil.example", "domain.not_allowed"),
        ("attacker@evilgouv.fr", "domain.not_allowed"),
        ("someone@denied.gouv.fr", "domain.not_allowed"),
        ("someone@sub.denied.gouv.fr", "domain.not_allowed"),
        ("confirm+abc@verify.example.gouv.fr", "domain.not_allowed"),
        ("x@sub.verify.example.gouv.fr", "domain.not_allowed"),
        ("", "envelope.syntax"),
    ];
    for (address, reason) in cases {
        let (status, body) = s.create(address).await;
        assert_error(status, &body, 422, reason);
    }
    // NUL written as the JSON escape on the wire.
    let (status, body) = s
        .post_raw(
            r#"{"address": "alice\u0000@interieur.gouv.fr"}"#,
            Some(&format!("Bearer {}", s.token)),
        )
        .await;
    assert_error(status, &body, 422, "envelope.syntax");
    // Nothing was written to the outbox.
    assert_eq!(std::fs::read_dir(s.outbox()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_pending_and_hourly() {
    // Pending: the default of the test config is 5.
    let s = Server::start(|_| {}).await;
    for _ in 0..5 {
        assert_eq!(s.create("alice@interieur.gouv.fr").await.0, 201);
    }
    let (st, v) = s.create("ALICE@interieur.gouv.fr").await;
    assert_error(st, &v, 429, "challenge.rate_limited");
    assert_eq!(
        s.create("bob@interieur.gouv.fr").await.0,
        201,
        "per address"
    );
    assert_eq!(
        std::fs::read_dir(s.outbox()).unwrap().count(),
        6,
        "no mail for a refused request"
    );

    // Hourly: pending high, 3 per hour.
    let s = Server::start(|c| {
        c.confirm.max_pending_per_address = 100;
        c.confirm.max_challenges_per_address_per_hour = 3;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(s.create("alice@interieur.gouv.fr").await.0, 201);
    }
    let (st, v) = s.create("alice@interieur.gouv.fr").await;
    assert_error(st, &v, 429, "challenge.rate_limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_errors_everywhere() {
    let s = Server::start(|_| {}).await;
    let auth = format!("Bearer {}", s.token);
    let (st, v) = s.get("/v1/challenges/doesnotexist", true).await;
    assert_error(
        st,
        &serde_json::from_str(&v).unwrap(),
        404,
        "challenge.not_found",
    );
    let (st, v) = s.get("/v1/challenges/has%20space", true).await;
    assert_error(
        st,
        &serde_json::from_str(&v).unwrap(),
        404,
        "challenge.not_found",
    );
    let (st, v) = s.get("/no/such/path", true).await;
    assert_error(st, &serde_json::from_str(&v).unwrap(), 404, "api.not_found");
    let (st, v) = s.get("/no/such/path", false).await;
    assert_error(st, &serde_json::from_str(&v).unwrap(), 404, "api.not_found");

    let resp = s
        .client
        .delete(format!("{}/v1/challenges", s.base))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "api.method_not_allowed");

    for bad in [
        "not json",
        "{}",
        r#"{"address": 42}"#,
        r#"{"address": "alice@interieur.gouv.fr", "extra": 1}"#,
        r#"["alice@interieur.gouv.fr"]"#,
    ] {
        let (st, v) = s.post_raw(bad, Some(&auth)).await;
        assert_error(st, &v, 400, "api.bad_request");
    }
    let big = json!({ "address": "a".repeat(10_000) }).to_string();
    let (st, v) = s.post_raw(&big, Some(&auth)).await;
    assert_error(st, &v, 413, "api.body_too_large");
}

/// Minimal text-format parse: every sample line is `name[{labels}] value`.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "{line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "{line}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        samples.push((series.to_owned(), value));
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let parts = assemble::build(&cfg).unwrap();
    let metrics = Arc::clone(&parts.metrics);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, parts.router).await.unwrap() });
    let token = std::fs::read_to_string(&cfg.api.token_file)
        .unwrap()
        .trim()
        .to_owned();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    for address in ["alice@interieur.gouv.fr", "attacker@evil.example"] {
        let r = client
            .post(format!("http://{addr}/v1/challenges"))
            .bearer_auth(&token)
            .json(&json!({ "address": address }))
            .send()
            .await
            .unwrap();
        assert!(r.status().as_u16() == 201 || r.status().as_u16() == 422);
    }
    // What other modules record.
    metrics.session_opened();
    metrics.session_opened();
    metrics.session_closed();
    metrics.verdict(None);
    metrics.verdict(Some(gatekeeper::reason::Reason::SpfFail));
    metrics.verdict(Some(gatekeeper::reason::Reason::SpfFail));
    metrics.dns_lookup(Duration::from_millis(3));
    metrics.queue_depth("siem", 7);

    let resp = client
        .get(format!("http://{addr}/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    let samples = parse_metrics(&text);
    let get = |series: &str| samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v);
    assert_eq!(
        get(r#"gatekeeper_challenges_total{result="created"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        get(r#"gatekeeper_challenges_total{result="domain.not_allowed"}"#),
        Some(1.0)
    );
    assert_eq!(get("gatekeeper_smtp_sessions_total"), Some(2.0));
    assert_eq!(get("gatekeeper_smtp_sessions_active"), Some(1.0));
    assert_eq!(
        get(r#"gatekeeper_verdicts_total{reason="accepted"}"#),
        Some(1.0)
    );
    assert_eq!(
        get(r#"gatekeeper_verdicts_total{reason="spf.fail"}"#),
        Some(2.0)
    );
    assert_eq!(get("gatekeeper_dns_lookup_seconds_count"), Some(1.0));
    assert_eq!(get(r#"gatekeeper_queue_depth{queue="siem"}"#), Some(7.0));
    assert_eq!(
        get(r#"gatekeeper_queue_depth{queue="store"}"#),
        Some(0.0),
        "store queue at scrape"
    );
}

// ---------------------------------------------------------------- relay

/// What the sink received in one transaction.
#[derive(Debug, Default, Clone)]
struct Received {
    mail_from: String,
    rcpt_to: Vec<String>,
    data: Vec<u8>,
}

/// A minimal SMTP server on loopback: answers 250 to everything, records transactions.
async fn smtp_sink() -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::clone(&got);
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(20), sink_session(sock, store)).await;
            });
        }
    });
    (addr, got)
}

async fn sink_session(
    sock: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<Received>>>,
) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut cur = Received::default();
    let mut line = String::new();
    for _ in 0..64 {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            w.write_all(b"250-sink.test\r\n250 8BITMIME\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            cur.mail_from = line[10..].trim().to_owned();
            w.write_all(b"250 ok\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            cur.rcpt_to.push(line[8..].trim().to_owned());
            w.write_all(b"250 ok\r\n").await?;
        } else if upper.starts_with("DATA") {
            w.write_all(b"354 go\r\n").await?;
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l).await? == 0 || data.len() > 1_000_000 {
                    return Ok(());
                }
                if l == b".\r\n" {
                    break;
                }
                data.extend_from_slice(&l);
            }
            cur.data = data;
            store.lock().unwrap().push(std::mem::take(&mut cur));
            w.write_all(b"250 queued\r\n").await?;
        } else if upper.starts_with("QUIT") {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            w.write_all(b"250 ok\r\n").await?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_mode_hands_the_mail_to_the_smarthost() {
    let (sink, got) = smtp_sink().await;
    let s = Server::start(|c| c.outbound.target = OutboundTarget::Relay(format!("smtp://{sink}")))
        .await;
    let (status, body) = s.create("alice@interieur.gouv.fr").await;
    assert_eq!(status, 201, "{body}");
    let received = got.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "handed over before the answer");
    let r = &received[0];
    assert_eq!(r.mail_from, "<noreply@verify.example.gouv.fr>");
    assert_eq!(r.rcpt_to, vec!["<alice@interieur.gouv.fr>".to_owned()]);
    let token = token_of(&r.data);
    let msg = MessageParser::default().parse(&r.data).unwrap();
    assert!(msg.subject().unwrap().contains(&token));
    assert!(!String::from_utf8_lossy(&r.data).contains(body["session_code"].as_str().unwrap()));
    assert!(!log_text().contains(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_down_is_502_and_leaves_no_pending_challenge() {
    // A port with nothing listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s =
        Server::start(|c| c.outbound.target = OutboundTarget::Relay(format!("smtp://{closed}")))
            .await;
    let (status, body) = s.create("alice@interieur.gouv.fr").await;
    assert_error(status, &body, 502, "outbound.unavailable");
    let now = chrono::Utc::now();
    assert_eq!(
        s.parts_store
            .pending_count("alice@interieur.gouv.fr", now)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.parts_store
            .created_since("alice@interieur.gouv.fr", now - chrono::Duration::hours(1))
            .await
            .unwrap(),
        0,
        "the challenge was deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_outbox_is_502_and_leaves_no_pending_challenge() {
    let s = Server::start(|_| {}).await;
    // Root ignores permissions: replace the outbox directory by a plain file.
    std::fs::remove_dir(s.outbox()).unwrap();
    std::fs::write(s.outbox(), b"not a directory").unwrap();
    let (status, body) = s.create("alice@interieur.gouv.fr").await;
    assert_error(status, &body, 502, "outbound.unavailable");
    let now = chrono::Utc::now();
    assert_eq!(
        s.parts_store
            .created_since("alice@interieur.gouv.fr", now - chrono::Duration::hours(1))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_without_starttls_is_refused_when_tls_is_required() {
    let (sink, got) = smtp_sink().await;
    let s = Server::start(|c| {
        c.outbound.target = OutboundTarget::Relay(format!("smtp://{sink}?tls=required"))
    })
    .await;
    let (status, body) = s.create("alice@interieur.gouv.fr").await;
    assert_error(status, &body, 502, "outbound.unavailable");
    assert!(got.lock().unwrap().is_empty(), "nothing sent in clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_is_503_store_unavailable() {
    use gatekeeper::api::{ApiState, ApiToken, Metrics, router};
    use gatekeeper::challenge::{ChallengeService, MailBuilder, Outbound};
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let service = ChallengeService::new(
        &cfg,
        Arc::new(common::challenge::DownStore),
        Outbound::from_target(&cfg.outbound.target).unwrap(),
        MailBuilder::new(&cfg).unwrap(),
    );
    let state = ApiState::new(
        Arc::new(service),
        Arc::new(Metrics::new()),
        ApiToken::new("t0k"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .post(format!("http://{addr}/v1/challenges"))
        .bearer_auth("t0k")
        .json(&json!({"address": "alice@interieur.gouv.fr"}))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    assert_error(st, &r.json().await.unwrap(), 503, "store.unavailable");
    let r = client
        .get(format!("http://{addr}/v1/challenges/abc"))
        .bearer_auth("t0k")
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    assert_error(st, &r.json().await.unwrap(), 503, "store.unavailable");
    // No mail for a challenge that was not stored.
    let OutboundTarget::Directory(outbox) = &cfg.outbound.target else {
        unreachable!()
    };
    assert_eq!(std::fs::read_dir(outbox).unwrap().count(), 0);
}

/// A relay that accepts the connection and never says a word: the hand-over times out,
/// the answer is 502 and the challenge is not left pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_relay_times_out() {
    use gatekeeper::api::{ApiState, ApiToken, Metrics, router};
    use gatekeeper::challenge::{ChallengeService, MailBuilder, Outbound};
    logs();
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = silent.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((sock, _)) = silent.accept().await else {
                return;
            };
            keep.lock().unwrap().push(sock);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = Arc::new(
        gatekeeper::store::SqliteStore::open(&cfg.store.path, Default::default()).unwrap(),
    );
    let outbound = Outbound::relay(
        &format!("smtp://{relay}"),
        Duration::from_millis(300),
        Duration::from_secs(2),
    )
    .unwrap();
    let service = ChallengeService::new(
        &cfg,
        Arc::clone(&store),
        outbound,
        MailBuilder::new(&cfg).unwrap(),
    );
    let state = ApiState::new(
        Arc::new(service),
        Arc::new(Metrics::new()),
        ApiToken::new("t0k"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let r = client
        .post(format!("http://{addr}/v1/challenges"))
        .bearer_auth("t0k")
        .json(&json!({"address": "alice@interieur.gouv.fr"}))
        .send()
        .await
        .expect("answered before the client gives up");
    let st = r.status().as_u16();
    assert_error(st, &r.json().await.unwrap(), 502, "outbound.unavailable");
    assert!(!held.lock().unwrap().is_empty(), "the relay was contacted");
    let now = chrono::Utc::now();
    assert_eq!(
        store
            .created_since("alice@interieur.gouv.fr", now - chrono::Duration::hours(1))
            .await
            .unwrap(),
        0
    );
}

// ---------------------------------------------------------------- CLI

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_new_and_show_print_the_code_never_the_token() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let out = cli::cli_new(&cfg, b"alice@interieur.gouv.fr")
        .await
        .unwrap();
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap()
            .to_owned()
    };
    let id = field(&out, "id");
    let code = field(&out, "session_code");
    assert_eq!(field(&out, "address"), "alice@interieur.gouv.fr");
    assert_eq!(code.len(), 6);
    assert!(field(&out, "expires_at").ends_with('Z'));
    let OutboundTarget::Directory(outbox) = &cfg.outbound.target else {
        unreachable!()
    };
    let token = token_of(&eml(outbox, &id));
    assert!(!out.contains(&token));

    let shown = cli::cli_show(&cfg, &id).await.unwrap();
    assert_eq!(field(&shown, "status"), "pending");
    assert_eq!(field(&shown, "rejections"), "0");
    assert!(!shown.contains(&token));
    assert!(!shown.contains(&code));

    let err = cli::cli_new(&cfg, b"attacker@evil.example@interieur.gouv.fr")
        .await
        .unwrap_err();
    assert_eq!(err.reason, Some(gatekeeper::reason::Reason::EnvelopeSyntax));
    assert!(err.to_string().starts_with("rejected envelope.syntax"));
    let err = cli::cli_show(&cfg, "nosuchid").await.unwrap_err();
    assert!(err.reason.is_none());
}

// ---------------------------------------------------------------- DKIM

/// A TXT cache holding one DKIM key record (no DNS is queried).
struct OneKey(Mutex<std::collections::HashMap<Box<str>, mail_auth::Txt>>);

impl mail_auth::ResolverCache<Box<str>, mail_auth::Txt> for OneKey {
    fn get<Q>(&self, name: &Q) -> Option<mail_auth::Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<mail_auth::Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }
    fn insert(&self, key: Box<str>, value: mail_auth::Txt, _: std::time::Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

async fn dkim_results(mail: &[u8], cache: &OneKey) -> Vec<mail_auth::DkimResult> {
    use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
    let auth = mail_auth::MessageAuthenticator::new(
        ResolverConfig::from_name_servers(vec![]),
        ResolverOpts::default(),
    )
    .unwrap();
    let msg = mail_auth::AuthenticatedMessage::parse(mail).unwrap();
    let out = auth
        .verify_dkim(mail_auth::Parameters::new(&msg).with_txt_cache(cache))
        .await;
    out.iter().map(|o| o.result().clone()).collect()
}

/// Issue a challenge with `outbound.dkim` set to this key; return the raw mail.
async fn signed_challenge_mail(key_path: &Path, selector: &str) -> Vec<u8> {
    let key_path = key_path.to_owned();
    let selector = selector.to_owned();
    let s = Server::start(move |c| {
        c.outbound.dkim = Some(gatekeeper::config::OutboundDkim {
            domain: common::domain("verify.example.gouv.fr"),
            selector,
            private_key: key_path,
        })
    })
    .await;
    let (status, body) = s.create("alice@interieur.gouv.fr").await;
    assert_eq!(status, 201, "{body}");
    eml(&s.outbox(), body["id"].as_str().unwrap())
}

fn key_cache(selector: &str, record: &str) -> OneKey {
    use mail_auth::common::parse::TxtRecordParser;
    let key = mail_auth::common::verify::DomainKey::parse(record.as_bytes()).unwrap();
    let cache = OneKey(Mutex::new(std::collections::HashMap::new()));
    mail_auth::ResolverCache::insert(
        &cache,
        format!("{selector}._domainkey.verify.example.gouv.fr.").into(),
        mail_auth::Txt::from(key),
        std::time::Instant::now() + Duration::from_secs(60),
    );
    cache
}

async fn assert_signed_and_verifies(raw: &[u8], selector: &str, algorithm: &str, cache: &OneKey) {
    let text = String::from_utf8_lossy(raw).into_owned();
    assert!(text.starts_with("DKIM-Signature:"), "{text}");
    assert!(text.contains("d=verify.example.gouv.fr"));
    assert!(text.contains(&format!("s={selector}")));
    assert!(text.contains(&format!("a={algorithm}")));
    assert_eq!(
        dkim_results(raw, cache).await,
        vec![mail_auth::DkimResult::Pass]
    );
    // Tampering with a signed header breaks it (the check can fail).
    let tampered = text.replacen("Subject: Confirmation", "Subject: Confirmaxion", 1);
    assert_ne!(tampered, text);
    let results = dkim_results(tampered.as_bytes(), cache).await;
    assert!(
        !results.contains(&mail_auth::DkimResult::Pass),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_dkim_ed25519_signature_verifies() {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let public = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let keydir = tempfile::tempdir().unwrap();
    let key_path = keydir.path().join("dkim.pem");
    let b64 = data_encoding::BASE64.encode(pkcs8.as_ref());
    std::fs::write(
        &key_path,
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();

    let raw = signed_challenge_mail(&key_path, "gk2026").await;
    let cache = key_cache(
        "gk2026",
        &format!(
            "v=DKIM1; k=ed25519; p={}",
            data_encoding::BASE64.encode(&public)
        ),
    );
    assert_signed_and_verifies(&raw, "gk2026", "ed25519-sha256", &cache).await;

    // A key file that is not a key refuses to start.
    std::fs::write(
        &key_path,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.outbound.dkim = Some(gatekeeper::config::OutboundDkim {
        domain: common::domain("verify.example.gouv.fr"),
        selector: "gk2026".into(),
        private_key: key_path.clone(),
    });
    assert!(assemble::build(&cfg).is_err());
}

/// RSA keys (PKCS#8 and PKCS#1 PEM): fixed test keys made with
/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048` (ring cannot generate RSA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_dkim_rsa_signature_verifies() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let public = std::fs::read_to_string(data.join("challenge-dkim-rsa.pub.b64")).unwrap();
    let cache = key_cache("rsa1", &format!("v=DKIM1; k=rsa; p={}", public.trim()));
    for file in [
        "challenge-dkim-rsa-pkcs8.pem",
        "challenge-dkim-rsa-pkcs1.pem",
    ] {
        let raw = signed_challenge_mail(&data.join(file), "rsa1").await;
        assert_signed_and_verifies(&raw, "rsa1", "rsa-sha256", &cache).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let parts = assemble::build(&cfg).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gatekeeper::api::serve(listener, parts.router, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    drop(client);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

// ---------------------------------------------------------------- end to end

/// Accepts every message; its evidence quotes the whole header block, as the real
/// verifier's does.
struct AcceptAll;

impl gatekeeper::backend::Verify for AcceptAll {
    /// Every probe would confirm.
    async fn analyse(
        &self,
        tx: &gatekeeper::backend::Transaction,
        probe_id: &str,
        _now: chrono::DateTime<chrono::Utc>,
    ) -> gatekeeper::backend::Verdict {
        gatekeeper::backend::Verdict {
            decision: gatekeeper::backend::Decision::Accept,
            checks: vec![],
            from: Some(tx.mail_from.to_string()),
            message_id: None,
            challenge_id: Some(probe_id.to_owned()),
            evidence: None,
        }
    }

    async fn verify(
        &self,
        tx: &gatekeeper::backend::Transaction,
        challenge: &gatekeeper::backend::ChallengeBinding,
        _now: chrono::DateTime<chrono::Utc>,
    ) -> gatekeeper::backend::Verdict {
        let text = String::from_utf8_lossy(&tx.message).into_owned();
        gatekeeper::backend::Verdict {
            decision: gatekeeper::backend::Decision::Accept,
            checks: vec![],
            from: Some(tx.mail_from.to_string()),
            message_id: Some("reply-1@interieur.gouv.fr".into()),
            challenge_id: Some(challenge.id.clone()),
            evidence: Some(gatekeeper::backend::Evidence {
                client_ip: tx.session.client_ip.to_string(),
                mail_from: tx.mail_from.to_string(),
                from: tx.mail_from.to_string(),
                spf: "pass".into(),
                headers: text.split("\r\n\r\n").next().unwrap_or_default().to_owned(),
                ..Default::default()
            }),
        }
    }
}

/// API → challenge mail → the token from Reply-To → the backend accepts a reply → GET shows
/// it confirmed, and the token is in no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_challenge_confirmed_through_the_backend() {
    use gatekeeper::address::{Mailbox, ParseOptions};
    use gatekeeper::backend::{Backend, RcptOutcome, Recipient, SessionInfo, Transaction};

    let s = Server::start(|_| {}).await;
    let (_, body) = s.create("alice@interieur.gouv.fr").await;
    let id = body["id"].as_str().unwrap().to_owned();
    let raw = eml(&s.outbox(), &id);
    let token = token_of(&raw);
    let challenge_msgid = MessageParser::default()
        .parse(&raw)
        .unwrap()
        .message_id()
        .unwrap()
        .to_owned();

    let backend = gatekeeper::app::App::new(&s.cfg, Arc::clone(&s.parts_store), AcceptAll);
    let parse = |a: &str| Mailbox::parse(a.as_bytes(), &ParseOptions::default()).unwrap();
    let session = SessionInfo {
        session_id: "e2e".into(),
        client_ip: "127.0.0.25".parse().unwrap(),
        client_port: 40000,
        helo: Some("smtp.interieur.gouv.fr".into()),
        tls_version: None,
    };
    let rcpt = Recipient {
        token: token.clone(),
        address: parse(&format!("confirm+{token}@verify.example.gouv.fr")),
    };
    let now = chrono::Utc::now();
    let RcptOutcome::Accept { challenge_id } = backend.check_recipient(&session, &rcpt, now).await
    else {
        panic!("token from the mail accepted at RCPT")
    };
    assert_eq!(challenge_id, id);
    let message = format!(
        "From: Alice <alice@interieur.gouv.fr>\r\nTo: <confirm+{token}@verify.example.gouv.fr>\r\n\
         Subject: RE: Confirm your address [{token}]\r\nIn-Reply-To: <{challenge_msgid}>\r\n\r\nCode : {}\r\n",
        body["session_code"].as_str().unwrap()
    );
    let verdict = backend
        .deliver(Transaction {
            session,
            mail_from: parse("alice@interieur.gouv.fr"),
            mail_from_tagged: None,
            rcpt,
            challenge_id,
            message: message.into_bytes(),
            received_at: now,
        })
        .await;
    assert_eq!(verdict.decision, gatekeeper::backend::Decision::Accept);

    let (st, text) = s.get(&format!("/v1/challenges/{id}"), true).await;
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "confirmed");
    assert_eq!(v["evidence"]["client_ip"], "127.0.0.25");
    assert!(
        v["evidence"]["headers"]
            .as_str()
            .unwrap()
            .contains("In-Reply-To: <[redacted].")
    );
    assert!(
        !text.contains(&token),
        "token in GET after confirmation: {text}"
    );
}
