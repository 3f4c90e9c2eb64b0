//! The 10 s API flood behind `bench/api_flood.sh` (issue 19, README "Performance"): the
//! in-process daemon on loopback (the test world's DNS, `tests/common`), 10,000 requests a
//! second without a valid token from 127.0.0.2 for `--secs`, genuine confirmations through the
//! API and SMTP meanwhile; prints what the flood got (statuses, latency quantiles, rate), the
//! confirmations' latencies, `/metrics` and the count of log lines. Loopback only, bounded in
//! count (rate × time) and time.

// The test helpers it includes panic on setup failures, as tests do: this is a bench tool.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
use common::World;
use common::e2e::{Instance, Settings};
use common::flood::{Flood, confirmations, quantile};

#[derive(Parser)]
struct Args {
    /// Requests per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of flood.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Confirmations during the flood (one every 300 ms).
    #[arg(long, default_value_t = 20)]
    confirmations: u32,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let world = World::start().await;
    let instance = Instance::start(world.dns.addr, &Settings::default()).await;
    let flood = Flood {
        target: instance.running.api_addr,
        source: "127.0.0.2".parse::<IpAddr>().unwrap(),
        rate: args.rate,
        duration: Duration::from_secs(args.secs),
        connections: args.connections,
        path: "/metrics".into(),
        authorization: Some("Bearer not-the-token".into()),
    };
    let (out, confirmed) = tokio::join!(
        flood.run(),
        confirmations(&instance, args.confirmations, Duration::from_millis(300))
    );
    let mut took: Vec<Duration> = confirmed.iter().map(|c| c.took).collect();
    took.sort_unstable();
    let ok = confirmed.iter().filter(|c| c.code == Some(250)).count();
    println!(
        "flood: {} sent, {} answered in {:.2} s = {:.0}/s; statuses {:?}; {} with Retry-After; \
         {} errors; latency p50 {:?} p99 {:?} max {:?}",
        out.sent,
        out.answered(),
        out.elapsed.as_secs_f64(),
        out.rate(),
        out.statuses,
        out.retry_after,
        out.errors,
        out.quantile(0.5),
        out.quantile(0.99),
        out.quantile(1.0),
    );
    println!(
        "confirmations during the flood: {ok}/{} got 250; p50 {:?} p99 {:?} max {:?}",
        confirmed.len(),
        quantile(&took, 0.5),
        quantile(&took, 0.99),
        quantile(&took, 1.0),
    );
    let metrics = instance.api.metrics().await;
    for l in metrics.lines().filter(|l| l.starts_with("gatekeeper_api_")) {
        println!("metrics: {l}");
    }
}
