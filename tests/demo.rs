//! The demo ministry end to end (README, "Try it: a demo ministry"): the real `gatekeeper
//! serve` binary on `conf/examples/demo.toml` (ports moved to free ones, state in a temporary
//! directory), and the code of `examples/demo_ministry.rs` playing the ministry: its DNS, the
//! backend's `POST /v1/challenges`, the challenge mail read from the outbox, the signed reply
//! over SMTP, and `confirmed` at `GET /v1/challenges/{id}`. Then `gatekeeper domain-check`
//! on the same zone says `ready`.
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

/// `conf/examples/demo.toml` with its three ports replaced.
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
    let ministry = demo::Ministry::start(&config).await.unwrap();
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
    // The demo reads var/demo/... relative to the daemon's directory.
    std::env::set_current_dir(tmp.path()).unwrap();

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
        move || {
            Command::new(BIN)
                .args(["domain-check", demo::MINISTRY, "--json", "-c"])
                .arg(&config)
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
