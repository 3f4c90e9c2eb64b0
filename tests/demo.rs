//! The demo ministry end to end (README, "Try it: a demo ministry"): the real `gatekeeper
//! serve` binary on `conf/examples/demo.toml` (ports moved to free ones, state in a temporary
//! directory), and the code of `examples/demo_ministry.rs` playing the ministry: its DNS, the
//! backend's `POST /v1/challenges`, the challenge mail read from the outbox, the signed reply
//! over SMTP, and `confirmed` at `GET /v1/challenges/{id}`. Then `gatekeeper domain-check`
//! on the same zone says `ready`. And the `--watch` sign-in: the OpenID page driven as a
//! browser would (its cookie, its form), the ministry's reply with the code the page shows,
//! and the demo's relying party exchanging the code for an ID token.
//!
//! Run: `cargo test --test demo`.

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../examples/demo_ministry.rs"]
mod demo;

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_gatekeeper");

/// The daemon child, stopped when the test ends (pass or fail).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free for TCP (and, for `udp_too`, for UDP) right now.
fn free_port(udp_too: bool) -> u16 {
    for _ in 0..50 {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if !udp_too || UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}

/// `conf/examples/demo.toml` with its fixed ports replaced by free ones.
fn demo_config(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/examples/demo.toml"),
    )
    .unwrap();
    let mut out = text.clone();
    for (fixed, udp) in [
        ("127.0.0.1:2525", false),
        ("127.0.0.1:8025", false),
        ("127.0.0.1:5300", true),
        // The OpenID listener and its issuer URL, both.
        ("127.0.0.1:8443", false),
    ] {
        assert!(out.contains(fixed), "demo.toml names {fixed}");
        out = out.replace(fixed, &format!("127.0.0.1:{}", free_port(udp)));
    }
    let path = dir.join("demo.toml");
    std::fs::write(&path, out).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_ministry_confirms_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let config = demo_config(tmp.path());
    // The ministry's DNS first, as the README's order does not matter: the demo waits for
    // the API, and gatekeeper asks DNS only when the reply arrives.
    let ministry = demo::Ministry::start_in(&config, tmp.path()).await.unwrap();
    let _daemon = Daemon(
        Command::new(BIN)
            .args(["serve", "-c"])
            .arg(&config)
            .current_dir(tmp.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );

    let shown = ministry.confirm_once(demo::DEFAULT_ADDRESS).await.unwrap();
    assert_eq!(shown["status"], "confirmed", "{shown}");
    assert_eq!(shown["address"], demo::DEFAULT_ADDRESS, "{shown}");
    assert_eq!(shown["evidence"]["dkim_domain"], demo::MINISTRY, "{shown}");
    assert_eq!(
        shown["evidence"]["dkim_selector"],
        demo::SELECTOR,
        "{shown}"
    );
    assert_eq!(shown["evidence"]["spf"], "pass", "{shown}");

    // The audit trail has the confirmation, once (the SIEM file is written behind the
    // reply: bounded wait).
    let path = tmp.path().join("var/demo/events.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (events, accepted) = loop {
        let events = std::fs::read_to_string(&path).unwrap_or_default();
        let accepted = events
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"]["action"] == "confirmation-accepted")
            .count();
        if accepted > 0 || std::time::Instant::now() > deadline {
            break (events, accepted);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(accepted, 1, "{events}");

    // domain-check on the demo's zone, with the demo's configuration: ready, and the
    // selector seen in the confirmation is tried.
    let out = tokio::task::spawn_blocking({
        let config = config.clone();
        let dir = tmp.path().to_path_buf();
        move || {
            Command::new(BIN)
                .args(["domain-check", demo::MINISTRY, "--json", "-c"])
                .arg(&config)
                .current_dir(&dir)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["verdict"], "ready", "{report}");
    let seen = report["dkim"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["selector"] == demo::SELECTOR)
        .unwrap_or_else(|| panic!("the demo selector: {report}"));
    assert_eq!(
        (seen["source"].as_str(), seen["usable"].as_bool()),
        (Some("seen"), Some(true))
    );
}

/// The value of the first `name="NAME"` field's `value` attribute in `page`.
fn form_field(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("no field {name} in\n{page}"));
    let rest = &page[at..];
    let v = rest.find("value=\"").expect("a value") + "value=\"".len();
    rest[v..].split('"').next().unwrap().to_string()
}

/// The `gatekeeper_browser=...` pair of a response's Set-Cookie.
fn browser_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("gatekeeper_browser="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_sign_in_through_the_openid_page() {
    let tmp = tempfile::tempdir().unwrap();
    let config = demo_config(tmp.path());
    // The demo's relying party listens on the redirect URI's port: give it a free one.
    let text = std::fs::read_to_string(&config).unwrap();
    let callback = format!("127.0.0.1:{}", free_port(false));
    std::fs::write(&config, text.replace("127.0.0.1:9999", &callback)).unwrap();
    let ministry = demo::Ministry::start_in(&config, tmp.path()).await.unwrap();
    let _daemon = Daemon(
        Command::new(BIN)
            .args(["serve", "-c"])
            .arg(&config)
            .current_dir(tmp.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    ministry.api().await.unwrap(); // the daemon is up
    let url = demo::Ministry::sign_in(&config)
        .await
        .unwrap()
        .expect("the demo configuration has a sign-in client");
    let issuer = url.split("/authorize").next().unwrap().to_string();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The OpenID listener may come up after the API (its signing key is created at the first
    // start): wait for its discovery document, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no OpenID listener at {issuer}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let location = |r: &reqwest::Response| {
        r.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no Location: {r:?}"))
    };
    let absolute = |l: &str| {
        if l.starts_with("http") {
            l.to_string()
        } else {
            format!("{issuer}{l}")
        }
    };

    // The sign-in URL the demo prints: a flow, tied to this browser by its cookie.
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303, "{r:?}");
    let cookie = browser_cookie(&r).expect("the browser cookie");
    let flow_url = absolute(&location(&r));
    let page = http
        .get(&flow_url)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The person types the address.
    let r = http
        .post(format!("{issuer}/authorize"))
        .header("cookie", &cookie)
        .form(&[
            ("flow", form_field(&page, "flow")),
            ("csrf", form_field(&page, "csrf")),
            ("address", demo::DEFAULT_ADDRESS.to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "{r:?}");
    let pending = http
        .get(absolute(&location(&r)))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "id=\"session-code\">";
    let at = pending.find(marker).expect("the session code on the page") + marker.len();
    let code: String = pending[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(code.len(), 6, "{pending}");

    // The ministry's reply, with the code the page showed.
    let outbox = tmp.path().join("var/demo/outbox");
    let newest = std::fs::read_dir(&outbox)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("a challenge mail");
    let mail = demo::parse_challenge(&std::fs::read(newest).unwrap()).unwrap();
    assert_eq!(mail.to, demo::DEFAULT_ADDRESS);
    let reply = ministry.reply(&mail, &code).await.unwrap();
    assert_eq!(reply.code, 250, "{reply}");

    // The page sends the browser to the relying party, which exchanges the code.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let redirect = loop {
        let r = http
            .get(&flow_url)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 303 {
            break location(&r);
        }
        assert!(std::time::Instant::now() < deadline, "no redirect: {r:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        redirect.starts_with(&format!("http://{callback}/callback?code=")),
        "{redirect}"
    );
    let done = http
        .get(&redirect)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        done,
        format!(
            "Signed in as \"{}\". See the demo's terminal.",
            demo::DEFAULT_ADDRESS
        )
    );
}
