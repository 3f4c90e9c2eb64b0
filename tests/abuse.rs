//! API abuse (issue 19): a flood of requests without a valid token against the in-process
//! daemon while genuine confirmations go through it. A short run here (10,000 a second for
//! 1.5 s from one loopback peer); the 10 s run is `bench/api_flood.sh`.
//!
//! Checks: every flood request is answered, `401` for the first 20 of the minute and `429`
//! with `Retry-After` after (`api::abuse`), quickly (p99 bounded); the confirmations meanwhile
//! all get `250` (p99 bounded, generously: 2 cores are shared); `/metrics` counts exactly what
//! was answered; a valid token from the throttled peer still passes; the log has no line per
//! refused request, one warning, and summary lines whose counts add up to the flood.
//!
//! Run: `cargo test --locked --test abuse -- --nocapture`.

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::World;
use common::e2e::{Instance, Settings};
use common::flood::{Flood, confirmations, quantile};

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

/// Every log line of this test binary at INFO and above (what a production daemon logs).
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    })
}

fn log_lines() -> Vec<String> {
    String::from_utf8_lossy(&logs().0.lock().unwrap())
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The value of `name{labels}` in an OpenMetrics text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `key=<n>` in a log line.
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!(" {key}="))?;
    line[at + key.len() + 2..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_flood_is_answered_counted_throttled_and_summarised() {
    logs();
    let world = World::start().await;
    let instance = Instance::start(world.dns.addr, &Settings::default()).await;
    let api_addr = instance.running.api_addr;
    let attacker: IpAddr = "127.0.0.2".parse().unwrap();
    let flood = Flood {
        target: api_addr,
        source: attacker,
        rate: 10_000,
        duration: Duration::from_millis(1500),
        connections: 32,
        path: "/metrics".into(),
        authorization: Some("Bearer not-the-token".into()),
    };
    let started = Instant::now();
    let (out, confirmed) = tokio::join!(
        flood.run(),
        confirmations(&instance, 5, Duration::from_millis(150))
    );
    let mut took: Vec<Duration> = confirmed.iter().map(|c| c.took).collect();
    took.sort_unstable();
    println!(
        "flood: {} sent, {} answered in {:.2} s ({:.0}/s), statuses {:?}, {} errors, p50 {:?} p99 {:?}; \
         confirmations: {:?}, p99 {:?}",
        out.sent,
        out.answered(),
        out.elapsed.as_secs_f64(),
        out.rate(),
        out.statuses,
        out.errors,
        out.quantile(0.5),
        out.quantile(0.99),
        confirmed.iter().map(|c| c.code).collect::<Vec<_>>(),
        quantile(&took, 0.99),
    );

    // Every request answered, 401 for the first 20 of the minute, 429 + Retry-After after.
    assert_eq!(out.errors, 0, "{out:?}");
    assert_eq!(out.answered(), out.sent);
    assert!(out.sent >= 1000, "a flood worth the name: {}", out.sent);
    let unauthorized = out.statuses.get(&401).copied().unwrap_or(0);
    let throttled = out.statuses.get(&429).copied().unwrap_or(0);
    assert_eq!(
        unauthorized,
        u64::from(gatekeeper::api::abuse::FAILURE_LIMIT)
    );
    assert_eq!(
        unauthorized + throttled,
        out.answered(),
        "{:?}",
        out.statuses
    );
    assert_eq!(out.retry_after, throttled, "every 429 says when to retry");
    assert!(
        out.quantile(0.99) < Duration::from_secs(1),
        "answered quickly"
    );

    // The confirmations meanwhile all went through, in a bounded time.
    for c in &confirmed {
        assert_eq!(c.code, Some(250), "{c:?}");
        assert_eq!(instance.api.show(&c.id).await["status"], "confirmed");
    }
    assert!(quantile(&took, 0.99) < Duration::from_secs(5), "{took:?}");

    // A valid token passes from the throttled peer too; /metrics counted every refusal.
    let token = std::fs::read_to_string(&instance.layout.token_file).unwrap();
    let client = reqwest::Client::builder()
        .local_address(attacker)
        .no_proxy()
        .build()
        .unwrap();
    let r = client
        .get(format!("http://{api_addr}/metrics"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "a valid token is never throttled");
    let text = r.text().await.unwrap();
    assert_eq!(
        metric(
            &text,
            r#"gatekeeper_api_auth_failures_total{outcome="unauthorized"}"#
        ),
        Some(unauthorized as f64)
    );
    assert_eq!(
        metric(
            &text,
            r#"gatekeeper_api_auth_failures_total{outcome="throttled"}"#
        ),
        Some(throttled as f64)
    );
    assert_eq!(metric(&text, "gatekeeper_api_throttled_peers"), Some(1.0));

    // The log: no line per refused request; one warning; summaries adding up to the flood
    // (the first is due 10 s after the first refusal: wait for it, bounded).
    let deadline = Instant::now() + Duration::from_secs(15);
    let summaries = loop {
        let lines = log_lines();
        let summaries: Vec<String> = lines
            .iter()
            .filter(|l| l.contains("requests without a valid token (summary)"))
            .cloned()
            .collect();
        let counted: u64 = summaries.iter().filter_map(|l| field(l, "requests")).sum();
        if counted >= out.answered() || Instant::now() > deadline {
            break summaries;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lines = log_lines();
    let per_request = lines
        .iter()
        .filter(|l| {
            l.contains("api request") && (l.contains("status=401") || l.contains("status=429"))
        })
        .count();
    assert_eq!(per_request, 0, "no log line per refused request");
    let warnings = lines
        .iter()
        .filter(|l| l.contains("peer over the limit"))
        .count();
    assert_eq!(warnings, 1, "one warning for the one peer");
    let counted: u64 = summaries
        .iter()
        .filter_map(|l| field(l, "unauthorized"))
        .sum::<u64>()
        + summaries
            .iter()
            .filter_map(|l| field(l, "throttled"))
            .sum::<u64>();
    assert_eq!(counted, out.answered(), "{summaries:#?}");
    assert!(summaries.len() <= 3, "{} summary lines", summaries.len());
    assert!(
        summaries
            .iter()
            .all(|l| l.contains("busiest_peer=127.0.0.2")),
        "{summaries:#?}"
    );
    println!(
        "log: {} lines in all, {} summaries, {warnings} warning; {:.1} s",
        lines.len(),
        summaries.len(),
        started.elapsed().as_secs_f64()
    );
}
