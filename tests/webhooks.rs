//! Webhooks and assertions end to end (SPEC §11), with real parts only: the real binary
//! (`gatekeeper serve`, SIGKILLed in the middle), real signed mail over SMTP, and a real HTTP
//! receiver in Python (`tests/webhook_receiver.py`) that checks every delivery with the
//! Standard Webhooks reference library (PyPI `standardwebhooks`) and every assertion with
//! PyJWT against the daemon's `/jwks.json`.
//!
//! The receiver goes down, answers 500, answers too slowly, and comes back; the daemon is
//! SIGKILLed while deliveries are owed. Every confirmation must still arrive, verified, with
//! one `webhook-id` across its retries, and an assertion PyJWT accepts and refuses once one
//! byte of its payload changes. A receiver holding the wrong secret must fail verification
//! (so the test can fail), and what is never acknowledged is given up after `max_age` with
//! a SIEM event and a metric.
//!
//! The virtualenv (standardwebhooks, PyJWT with cryptography) is created once under
//! `target/interop-cache/webhook-venv` (`$INTEROP_CACHE` overrides the cache directory).
//! Without python3-venv the tests say so loudly and skip.
//!
//! Run: `cargo test --test webhooks -- --nocapture`.

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;

use common::e2e::{Api, Layout, Settings, Smtp, send_mail};
use common::mail::Mail;
use common::{Vars, World};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WRONG_SECRET: &str = "whsec_dGhpcyBpcyBub3QgdGhlIHJpZ2h0IHNlY3JldA==";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The virtualenv's python, created (bounded) when missing; `None` without python3-venv.
fn venv_python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = std::env::var_os("INTEROP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/interop-cache"));
    let venv = cache.join("webhook-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".ready");
    if ready.exists() {
        return Some(python);
    }
    let has_venv = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_venv {
        eprintln!(
            "\n*** SKIPPED: python3-venv is missing (apt-get install python3-venv): the webhook \
             receiver cannot be built ***\n"
        );
        return None;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .unwrap()
        .success()
        && Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "-q",
                "--disable-pip-version-check",
                "standardwebhooks",
                "pyjwt[crypto]",
            ])
            .status()
            .unwrap()
            .success();
    assert!(ok, "pip install standardwebhooks pyjwt[crypto] failed");
    std::fs::write(&ready, b"").unwrap();
    Some(python)
}

/// The Python receiver on `port`, recording into `log`, behaving as `mode_file` says.
struct Receiver {
    child: Child,
}

impl Receiver {
    fn start(
        python: &Path,
        port: u16,
        secret: &str,
        log: &Path,
        mode_file: &Path,
        jwks: &str,
    ) -> Receiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook_receiver.py");
        let child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .arg(secret)
            .arg(log)
            .arg(mode_file)
            .arg(jwks)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the receiver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the receiver did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Receiver { child }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn records(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    async fn start(layout: &Layout, api_addr: SocketAddr, smtp_addr: SocketAddr) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(layout.dir.join("daemon.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .args(["serve", "-c"])
            .arg(&layout.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn gatekeeper serve");
        let mut daemon = Daemon { child: Some(child) };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                let log =
                    std::fs::read_to_string(layout.dir.join("daemon.log")).unwrap_or_default();
                panic!("gatekeeper exited at start ({status}):\n{log}");
            }
            let api_up = client
                .get(format!("http://{api_addr}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let smtp_up = tokio::net::TcpStream::connect(smtp_addr).await.is_ok();
            if api_up && smtp_up {
                return daemon;
            }
            assert!(Instant::now() < deadline, "gatekeeper did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, then reap.
    fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A test world: DNS, a layout with `[[webhook]]` and `[oidc]`, the ports.
struct Setup {
    world: World,
    _tmp: tempfile::TempDir,
    layout: Layout,
    api_addr: SocketAddr,
    smtp_addr: SocketAddr,
    oidc_port: u16,
    hook_port: u16,
    n: u32,
}

impl Setup {
    async fn new(max_age: &str) -> Setup {
        Setup::with(World::start().await, max_age, None, None, None).await
    }

    /// A setup on `world`; with `postgres`, on that database; `hook_port` and `key` shared
    /// with another instance (one receiver, one signing key for every instance).
    async fn with(
        world: World,
        max_age: &str,
        postgres: Option<gatekeeper::config::PostgresConfig>,
        hook_port: Option<u16>,
        key: Option<&Path>,
    ) -> Setup {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(tmp.path());
        let (smtp_port, api_port, oidc_port) = (free_port(), free_port(), free_port());
        let hook_port = hook_port.unwrap_or_else(free_port);
        let settings = Settings {
            smtp_port,
            api_port,
            postgres,
            ..Settings::default()
        };
        let key = key
            .map(Path::to_path_buf)
            .unwrap_or_else(|| layout.dir.join("var/oidc-key.pem"));
        let config = layout.write_config(world.dns.addr, &settings);
        let d = layout.dir.display();
        std::fs::write(layout.dir.join("hook.secret"), format!("{SECRET}\n")).unwrap();
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&format!(
            r#"
[[webhook]]
url = "http://127.0.0.1:{hook_port}/hook?src=gatekeeper"
secret_file = "{d}/hook.secret"
events = ["challenge.confirmed", "challenge.rejected", "challenge.expired"]
timeout = "1s"
retry_max = "2s"
max_age = "{max_age}"

[oidc]
listen = "127.0.0.1:{oidc_port}"
issuer = "http://127.0.0.1:{oidc_port}"
signing_key = "{key}"
subject_key = "{d}/var/oidc-subject"

[[oidc.client]]
id = "rp"
redirect_uris = ["http://127.0.0.1:9/cb"]
name = "RP"
"#,
            key = key.display()
        ));
        std::fs::write(&config, text).unwrap();
        Setup {
            world,
            _tmp: tmp,
            layout,
            api_addr: format!("127.0.0.1:{api_port}").parse().unwrap(),
            smtp_addr: format!("127.0.0.1:{smtp_port}").parse().unwrap(),
            oidc_port,
            hook_port,
            n: 0,
        }
    }

    fn jwks_url(&self) -> String {
        format!("http://127.0.0.1:{}/jwks.json", self.oidc_port)
    }

    /// Claim a challenge for alice and confirm it with her signed reply; its id.
    async fn confirm_one(&mut self, api: &Api) -> String {
        self.confirm_after_refusals(api, 0).await
    }

    /// As [`Setup::confirm_one`], after `refusals` replies with a wrong session code (each
    /// refused with a 5xx, each a `challenge.rejected`).
    async fn confirm_after_refusals(&mut self, api: &Api, refusals: u32) -> String {
        self.n += 1;
        let (status, body) = api.claim("alice@interieur.gouv.fr").await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap().to_string();
        let mail = self.layout.challenge_mail(&id);
        let mut vars = Vars::new(Utc::now(), self.n);
        vars.token = mail.token;
        vars.challenge_msgid = mail.message_id;
        let code = body["session_code"].as_str().unwrap().to_string();
        let alice = Mail::alice();
        let ip: IpAddr = alice.client_ip.parse().unwrap();
        let rcpt = format!("confirm+{}@verify.example.gouv.fr", vars.token);
        for i in 0..=refusals {
            let last = i == refusals;
            vars.session_code = if last {
                code.clone()
            } else {
                // Another six digits: `binding.session_code`, a permanent refusal.
                format!("{:06}", (code.parse::<u32>().unwrap() + 1 + i) % 1_000_000)
            };
            // A distinct Message-ID per attempt.
            vars.msgid = format!("m{}.{i}.{}", self.n, Utc::now().timestamp_millis());
            let message = alice.build(&vars);
            let mut smtp = Smtp::connect(ip, self.smtp_addr).await.unwrap();
            let reply = send_mail(&mut smtp, &alice.helo, &alice.mail_from, &rcpt, &message).await;
            smtp.quit().await;
            let got = reply.map(|r| r.code);
            if last {
                assert_eq!(got, Some(250), "confirmation of {id}");
            } else {
                assert!(
                    got.is_some_and(|c| c >= 500),
                    "refusal {i} of {id}: {got:?}"
                );
            }
        }
        let _ = &self.world;
        id
    }
}

/// Wait (bounded) until `done` holds on the receiver's records.
async fn wait_for(log: &Path, within: Duration, what: &str, done: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if done(&records(log)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; receiver saw:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn acknowledged(r: &Value) -> bool {
    r["verified"] == true && r["mode"] == "ok"
}

fn challenge_of(r: &Value) -> Option<&str> {
    r["payload"]["data"]["challenge_id"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_survive_outages_slowness_errors_and_a_sigkill() {
    let Some(python) = venv_python() else { return };
    let mut s = Setup::new("10m").await;
    let log = s.layout.dir.join("received.jsonl");
    let mode = s.layout.dir.join("mode");
    std::fs::write(&mode, "ok").unwrap();
    let jwks = s.jwks_url();

    let daemon = Daemon::start(&s.layout, s.api_addr, s.smtp_addr).await;
    let api = Api::new(s.api_addr, &s.layout.token_file);
    let mut ids = Vec::new();

    // 1. Up: delivered at once.
    let receiver = Receiver::start(&python, s.hook_port, SECRET, &log, &mode, &jwks);
    ids.push(s.confirm_one(&api).await);
    let first = ids[0].clone();
    wait_for(&log, Duration::from_secs(20), "first delivery", |rs| {
        rs.iter()
            .any(|r| acknowledged(r) && challenge_of(r) == Some(&first))
    })
    .await;

    // 2. Down: two confirmations owed while nothing listens.
    receiver.stop();
    ids.push(s.confirm_one(&api).await);
    ids.push(s.confirm_one(&api).await);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 3. Back, answering 500; one more confirmation.
    std::fs::write(&mode, "500").unwrap();
    let _receiver = Receiver::start(&python, s.hook_port, SECRET, &log, &mode, &jwks);
    ids.push(s.confirm_one(&api).await);
    wait_for(&log, Duration::from_secs(20), "500 answers", |rs| {
        rs.iter().filter(|r| r["mode"] == "500").count() >= 3
    })
    .await;

    // 4. Too slow (3 s against a 1 s timeout); one more; then SIGKILL while owed.
    std::fs::write(&mode, "slow").unwrap();
    ids.push(s.confirm_one(&api).await);
    wait_for(&log, Duration::from_secs(20), "slow answers", |rs| {
        rs.iter().any(|r| r["mode"] == "slow")
    })
    .await;
    let owed = records(&log).iter().filter(|r| acknowledged(r)).count();
    assert_eq!(owed, 1, "only the first was acknowledged before the kill");
    daemon.kill();

    // 5. Back to normal, daemon restarted on the same store: everything arrives.
    std::fs::write(&mode, "ok").unwrap();
    let daemon = Daemon::start(&s.layout, s.api_addr, s.smtp_addr).await;
    let want = ids.clone();
    wait_for(&log, Duration::from_secs(60), "every confirmation", |rs| {
        want.iter().all(|id| {
            rs.iter()
                .any(|r| acknowledged(r) && challenge_of(r) == Some(id.as_str()))
        })
    })
    .await;

    let rs = records(&log);
    for id in &ids {
        let mine: Vec<&Value> = rs
            .iter()
            .filter(|r| challenge_of(r) == Some(id.as_str()))
            .collect();
        // Every attempt of a challenge verified under the reference library.
        assert!(mine.iter().all(|r| r["verified"] == true), "{id}: {mine:?}");
        // One webhook-id across every retry (the idempotency key), the query kept.
        let wid = mine[0]["id"].as_str().unwrap();
        assert!(wid.starts_with("msg_"), "{wid}");
        assert!(mine.iter().all(|r| r["id"] == wid), "{id}: ids differ");
        assert!(mine.iter().all(|r| r["path"] == "/hook?src=gatekeeper"));
        let ok = mine.iter().find(|r| acknowledged(r)).unwrap();
        assert_eq!(ok["payload"]["type"], "challenge.confirmed");
        // The assertion: PyJWT accepts it against /jwks.json, and refuses it forged.
        assert_eq!(ok["assertion_ok"], true, "{id}: {ok}");
        assert_eq!(ok["tampered_refused"], true, "{id}: {ok}");
        let state = api.show(id).await;
        assert_eq!(state["status"], "confirmed");
        assert_eq!(ok["assertion_claims"]["address"], state["address"]);
        assert_eq!(ok["assertion_claims"]["challenge_id"], id.as_str());
        // The API shows the same assertion (deterministic signature).
        assert_eq!(ok["payload"]["data"]["assertion"], state["assertion"]);
    }
    let retried = ids
        .iter()
        .filter(|id| {
            rs.iter()
                .filter(|r| challenge_of(r) == Some(id.as_str()))
                .count()
                > 1
        })
        .count();
    let count = |m: &str| rs.iter().filter(|r| r["mode"] == m).count();
    println!(
        "{} confirmations, {} requests: {} answered 500, {} too slow, {} acknowledged; {retried} \
         challenges retried",
        ids.len(),
        rs.len(),
        count("500"),
        count("slow"),
        count("ok")
    );
    assert!(retried >= 3, "the 500 and slow phases caused retries");
    let metrics = api.metrics().await;
    assert!(
        metrics.contains(
            r#"gatekeeper_webhook_attempts_total{event="challenge.confirmed",outcome="delivered"}"#
        ),
        "{metrics}"
    );

    // `gatekeeper assertion verify`, on a good and a tampered file, with a saved JWKS and
    // with the configuration's keys.
    let token = api.show(&ids[0]).await["assertion"]
        .as_str()
        .unwrap()
        .to_string();
    let jwks_text = reqwest::get(&jwks).await.unwrap().text().await.unwrap();
    let dir = &s.layout.dir;
    std::fs::write(dir.join("jwks.json"), &jwks_text).unwrap();
    std::fs::write(dir.join("good.jws"), &token).unwrap();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut payload = data_encoding::BASE64URL_NOPAD
        .decode(parts[1].as_bytes())
        .unwrap();
    let at = payload.iter().position(|b| *b == b'@').unwrap();
    payload[at] = b'A';
    parts[1] = data_encoding::BASE64URL_NOPAD.encode(&payload);
    std::fs::write(dir.join("bad.jws"), parts.join(".")).unwrap();
    let verify = |file: &str, keys: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .args(["assertion", "verify"])
            .arg(dir.join(file))
            .args(keys)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let jwks_path = dir.join("jwks.json").display().to_string();
    let config_path = s.layout.config.display().to_string();
    let table: &[(&str, &[&str], Option<i32>)] = &[
        ("good.jws", &["--jwks", &jwks_path], Some(0)),
        ("good.jws", &["-c", &config_path], Some(0)),
        ("bad.jws", &["--jwks", &jwks_path], Some(1)),
        ("bad.jws", &["-c", &config_path], Some(1)),
    ];
    for (file, keys, code) in table {
        let (got, out) = verify(file, keys);
        assert_eq!(got, *code, "{file} {keys:?}: {out}");
        if *code == Some(0) {
            assert!(
                out.contains(r#""address": "alice@interieur.gouv.fr""#),
                "{out}"
            );
        }
    }
    daemon.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_fails_and_what_is_never_acknowledged_is_given_up() {
    let Some(python) = venv_python() else { return };
    let mut s = Setup::new("10s").await;
    let log = s.layout.dir.join("received.jsonl");
    let mode = s.layout.dir.join("mode");
    std::fs::write(&mode, "ok").unwrap();
    let _receiver = Receiver::start(
        &python,
        s.hook_port,
        WRONG_SECRET,
        &log,
        &mode,
        &s.jwks_url(),
    );
    let daemon = Daemon::start(&s.layout, s.api_addr, s.smtp_addr).await;
    let api = Api::new(s.api_addr, &s.layout.token_file);
    let id = s.confirm_one(&api).await;

    // The receiver's reference library refuses every attempt (it answers 400): retried.
    wait_for(&log, Duration::from_secs(20), "refused attempts", |rs| {
        rs.iter()
            .filter(|r| challenge_of(r) == Some(id.as_str()))
            .count()
            >= 2
    })
    .await;
    let rs = records(&log);
    assert!(rs.iter().all(|r| r["verified"] == false), "{rs:?}");
    assert!(
        rs.iter()
            .all(|r| r["error"].as_str().is_some_and(|e| !e.is_empty())),
        "{rs:?}"
    );

    // Past max_age (10 s): given up, with a SIEM event and a metric.
    let deadline = Instant::now() + Duration::from_secs(40);
    let event = loop {
        let events = std::fs::read_to_string(&s.layout.events).unwrap_or_default();
        if let Some(e) = events
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["event"]["action"] == "webhook-given-up")
        {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no webhook-given-up event:\n{events}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(event.to_string().contains(&id), "{event}");
    let metrics = api.metrics().await;
    assert!(
        metrics.contains(
            r#"gatekeeper_webhook_attempts_total{event="challenge.confirmed",outcome="given_up"} 1"#
        ),
        "{metrics}"
    );
    // Given up means not sent again.
    let before = records(&log).len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        records(&log).len(),
        before,
        "a given-up delivery was sent again"
    );
    daemon.kill();
}

/// Two instances on one PostgreSQL, one receiver: each challenge gets one refusal, then its
/// confirmation, through either instance. Every event arrives verified, the refusal before
/// the confirmation, each `webhook-id` acknowledged once (one instance sends each row), and
/// both instances' assertions verify against the one shared key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_send_each_event_once_in_order() {
    let Some(python) = venv_python() else { return };
    let cluster = common::postgres::Cluster::start();
    let first = Setup::with(
        World::start().await,
        "10m",
        Some(cluster.config()),
        None,
        None,
    )
    .await;
    let key = first.layout.dir.join("var/oidc-key.pem");
    let mut a = first;
    let mut b = Setup::with(
        World::start().await,
        "10m",
        Some(cluster.config()),
        Some(a.hook_port),
        Some(&key),
    )
    .await;
    let log = a.layout.dir.join("received.jsonl");
    let mode = a.layout.dir.join("mode");
    std::fs::write(&mode, "ok").unwrap();
    let _receiver = Receiver::start(&python, a.hook_port, SECRET, &log, &mode, &a.jwks_url());
    let da = Daemon::start(&a.layout, a.api_addr, a.smtp_addr).await;
    let db = Daemon::start(&b.layout, b.api_addr, b.smtp_addr).await;
    let api_a = Api::new(a.api_addr, &a.layout.token_file);
    let api_b = Api::new(b.api_addr, &b.layout.token_file);
    let mut ids = Vec::new();
    for i in 0..6 {
        let (s, api) = if i % 2 == 0 {
            (&mut a, &api_a)
        } else {
            (&mut b, &api_b)
        };
        ids.push(s.confirm_after_refusals(api, 1).await);
    }
    let want = ids.clone();
    wait_for(&log, Duration::from_secs(60), "every event", |rs| {
        want.iter().all(|id| {
            ["challenge.rejected", "challenge.confirmed"]
                .iter()
                .all(|t| {
                    rs.iter().any(|r| {
                        acknowledged(r)
                            && challenge_of(r) == Some(id.as_str())
                            && r["payload"]["type"] == *t
                    })
                })
        })
    })
    .await;
    // A moment more: a duplicate sent by the other instance would show now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rs = records(&log);
    let mut seen = std::collections::HashSet::new();
    for r in &rs {
        assert_eq!(r["verified"], true, "{r}");
        assert!(
            seen.insert(r["id"].as_str().unwrap().to_owned()),
            "sent twice: {r}"
        );
    }
    for id in &ids {
        let types: Vec<&str> = rs
            .iter()
            .filter(|r| challenge_of(r) == Some(id.as_str()))
            .map(|r| r["payload"]["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["challenge.rejected", "challenge.confirmed"], "{id}");
        let rejected = rs
            .iter()
            .find(|r| challenge_of(r) == Some(id.as_str()))
            .unwrap();
        assert_eq!(
            rejected["payload"]["data"]["reason"],
            "binding.session_code"
        );
        let confirmed = rs
            .iter()
            .find(|r| {
                challenge_of(r) == Some(id.as_str())
                    && r["payload"]["type"] == "challenge.confirmed"
            })
            .unwrap();
        assert_eq!(confirmed["assertion_ok"], true, "{confirmed}");
        assert_eq!(confirmed["tampered_refused"], true, "{confirmed}");
    }
    println!("{} deliveries from two instances, none twice", rs.len());
    da.kill();
    db.kill();
}
