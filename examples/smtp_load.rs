//! The load tool behind `bench/run.sh` (see README, "Performance").
//!
//! One process plays the world around a real `gatekeeper serve` child on loopback:
//!
//! - the ministry's DNS (in-process, `tests/common/dns.rs`) on a fixed address, so that the
//!   peer's OpenDKIM, configured beforehand by the script, can use it too; records carry a
//!   TTL of one hour, as a real zone would, so both sides may cache;
//! - the ministry's MTA: RSA-2048 `relaxed/relaxed` DKIM signatures like corpus LEGIT-01
//!   (`tests/common/dkim.rs`, a signer independent of the verifier), sent from 127.0.0.25;
//! - the backend: challenges created through the HTTP API, tokens read from the outbox.
//!
//! Phases: accept (N distinct confirmations, 20 sessions, one message per connection),
//! reject (Postfix's `smtp-source` with a validly signed mail whose binding fails, against
//! gatekeeper, the Postfix+OpenDKIM peer and `smtp-sink`), 10,000 idle sessions, slow-loris.
//! Server CPU is read from `/proc/<pid>/stat`, memory from `/proc/<pid>/status`. Every loop
//! is bounded in count and time; every address is on loopback.

// The test helpers it includes panic on setup failures, as tests do: this is a bench tool,
// never the daemon.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/dkim.rs"]
mod dkim;
#[path = "../tests/common/dns.rs"]
mod dns;
#[path = "../tests/common/keys.rs"]
mod keys;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use dkim::{SignSpec, sign};
use dns::{Rec, TestDns};
use keys::Key;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

/// Load tool for bench/run.sh: drives a gatekeeper child and reports figures.
#[derive(Parser, Debug)]
struct Args {
    /// Work directory (config, store, outbox, events).
    #[arg(long)]
    dir: PathBuf,
    /// The gatekeeper binary.
    #[arg(long, default_value = "target/release/gatekeeper")]
    gatekeeper: PathBuf,
    /// Where the DNS server listens (UDP and TCP).
    #[arg(long, default_value = "127.0.0.53:53")]
    dns: SocketAddr,
    /// gatekeeper's SMTP listener.
    #[arg(long, default_value = "127.0.0.20:2525")]
    smtp: SocketAddr,
    /// gatekeeper's API listener.
    #[arg(long, default_value = "127.0.0.20:8025")]
    api: SocketAddr,
    /// The Postfix + OpenDKIM peer (skipped when absent).
    #[arg(long)]
    peer: Option<SocketAddr>,
    /// The peer's Postfix log: each message OpenDKIM verified logs `peer-dkim-pass` there
    /// (milter_header_checks), so a fast 4xx from a broken milter is not counted as work.
    #[arg(long)]
    peer_log: Option<PathBuf>,
    /// Postfix's smtp-sink (skipped when absent).
    #[arg(long)]
    sink: Option<SocketAddr>,
    /// smtp-sink's process, for its CPU per message.
    #[arg(long)]
    sink_pid: Option<u32>,
    /// Confirmations in the accept phase.
    #[arg(long, default_value_t = 2000)]
    accept: usize,
    /// Messages per smtp-source run in the reject phase (gatekeeper, peer, sink).
    #[arg(long, default_value_t = 5000)]
    reject: usize,
    /// Concurrent sessions (accept phase and smtp-source -s).
    #[arg(long, default_value_t = 20)]
    sessions: usize,
    /// Idle sessions held open.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Slow-loris sessions.
    #[arg(long, default_value_t = 1000)]
    loris: usize,
    /// How long the slow-loris phase lasts, seconds.
    #[arg(long, default_value_t = 20)]
    loris_secs: u64,
    /// Skip phases: any of accept, reject, peer, idle, loris (comma-separated).
    #[arg(long, default_value = "")]
    skip: String,
    /// A PostgreSQL store (`[store] url`) instead of SQLite in `--dir` (bench/store.sh).
    #[arg(long)]
    store_url: Option<String>,
    /// `[store] password_file` for `--store-url`.
    #[arg(long)]
    store_password_file: Option<PathBuf>,
    /// A second instance's SMTP listener, sharing the PostgreSQL store: the accept phase
    /// alternates its messages between the two and adds both servers' CPU.
    #[arg(long, requires = "store_url", requires = "api2")]
    smtp2: Option<SocketAddr>,
    /// The second instance's API listener.
    #[arg(long, requires = "smtp2")]
    api2: Option<SocketAddr>,
}

const CONFIRM_DOMAIN: &str = "verify.example.gouv.fr";
const MINISTRY: &str = "interieur.gouv.fr";
const SELECTOR: &str = "s2024";
/// The ministry MTA the accept path and the probes send from.
const GOV_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 25);
/// The `h=` a ministry MTA uses (as `tests/common/mail.rs`).
const STD_H: &[&str] = &[
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "in-reply-to",
    "references",
];
/// smtp-source runs against gatekeeper and against smtp-sink, alternated.
const REJECT_ROUNDS: usize = 3;
/// Bound on one SMTP read or write, and on one API call.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// One challenge as the backend and Alice know it.
#[derive(Clone, Debug)]
struct Challenge {
    address: String,
    token: String,
    session_code: String,
    message_id: String,
}

/// The figures of one run.
#[derive(Default, Debug)]
struct Figures {
    accept_rate: Option<f64>,
    accept_cpu_ms: Option<f64>,
    accept_p50: Option<f64>,
    accept_p99: Option<f64>,
    reject_rate: Option<f64>,
    reject_cpu_ms: Option<f64>,
    peer_rate: Option<f64>,
    sink_rate: Option<f64>,
    /// smtp-source's own CPU per message against gatekeeper and against smtp-sink (means).
    source_cpu_ms: Option<f64>,
    sink_source_cpu_ms: Option<f64>,
    /// smtp-sink's CPU per message (mean).
    sink_cpu_ms: Option<f64>,
    idle_rss_mib: Option<f64>,
    idle_p99: Option<f64>,
    loris: Option<String>,
    hwm_mib: Option<f64>,
}

async fn run(args: Args) -> Result<()> {
    let skip: Vec<&str> = args.skip.split(',').map(str::trim).collect();
    let dir = args.dir.clone();
    std::fs::create_dir_all(dir.join("outbox"))?;

    log("generating the ministry's RSA-2048 DKIM key");
    let key = Arc::new(Key::generate("rsa 2048"));
    let dns = TestDns::start_on(args.dns, zone(&key)).await?;
    dns.set_ttl(3600);
    log(&format!("DNS on {}", dns.addr));

    let api_token = "benchtoken0123456789abcdefghijklmnop";
    std::fs::write(dir.join("api-token"), format!("{api_token}\n"))?;
    let config = dir.join("gatekeeper.toml");
    std::fs::write(&config, gatekeeper_config(&args, args.smtp, args.api, ""))?;
    let mut daemon = Daemon::spawn(&args.gatekeeper, &config, &dir, "")?;
    std::fs::write(dir.join("gatekeeper.pid"), daemon.pid.to_string())?;
    wait_ready(args.smtp, args.api).await?;
    log(&format!("gatekeeper pid {} ready", daemon.pid));
    // The second instance (same store), started once the first has migrated the schema.
    let mut second = None;
    if let (Some(smtp2), Some(api2)) = (args.smtp2, args.api2) {
        std::fs::create_dir_all(dir.join("outbox2"))?;
        let config2 = dir.join("gatekeeper2.toml");
        std::fs::write(&config2, gatekeeper_config(&args, smtp2, api2, "2"))?;
        let d = Daemon::spawn(&args.gatekeeper, &config2, &dir, "2")?;
        std::fs::write(dir.join("gatekeeper2.pid"), d.pid.to_string())?;
        wait_ready(smtp2, api2).await?;
        log(&format!("second gatekeeper pid {} ready", d.pid));
        second = Some(d);
    }
    let servers = Servers {
        smtp: std::iter::once(args.smtp).chain(args.smtp2).collect(),
        pids: std::iter::once(daemon.pid)
            .chain(second.as_ref().map(|d| d.pid))
            .collect(),
    };

    let outcome = phases(&args, &skip, &key, &dns, &servers, api_token).await;
    if let Some(d) = second.as_mut() {
        d.stop();
    }
    daemon.stop();
    let figures = outcome?;
    print_summary(&figures);
    Ok(())
}

/// The instances under test: their SMTP listeners (the accept phase alternates between
/// them) and their processes (whose CPU it adds up).
struct Servers {
    smtp: Vec<SocketAddr>,
    pids: Vec<u32>,
}

impl Servers {
    fn cpu_ticks(&self) -> Result<u64> {
        self.pids.iter().map(|&p| cpu_ticks(p)).sum()
    }
}

async fn phases(
    args: &Args,
    skip: &[&str],
    key: &Arc<Key>,
    dns: &TestDns,
    servers: &Servers,
    api_token: &str,
) -> Result<Figures> {
    let pid = servers.pids.first().copied().ok_or("no server")?;
    let mut f = Figures::default();
    let api = Api::new(args.api, api_token)?;
    let probes_idle = 20;
    let probes_loris = 10;
    let warmup = 20;
    let wanted = warmup + args.accept + probes_idle + probes_loris;
    log(&format!("creating {wanted} challenges"));
    let t = Instant::now();
    let challenges = api
        .create_many(&args.dir.join("outbox"), "agent", wanted)
        .await?;
    log(&format!(
        "challenges ready in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let mut pool = challenges.into_iter();
    let mut take = |n: usize| -> Vec<Challenge> { pool.by_ref().take(n).collect() };
    let warm = sign_all(key, take(warmup));
    let accept = if skip.contains(&"accept") {
        Vec::new()
    } else {
        log(&format!("signing {} replies", args.accept));
        sign_all(key, take(args.accept))
    };
    let idle_probes = sign_all(key, take(probes_idle));
    let loris_probes = sign_all(key, take(probes_loris));

    // Warm-up: DNS cache, store, first connections.
    let (ok, _) = send_many(&servers.smtp, warm, args.sessions).await;
    log(&format!("warm-up: {ok}/{warmup} confirmed"));
    let queries_before = dns.queries();

    if !accept.is_empty() {
        let n = accept.len();
        let cpu0 = servers.cpu_ticks()?;
        let t = Instant::now();
        let (ok, mut lat) = send_many(&servers.smtp, accept, args.sessions).await;
        let secs = t.elapsed().as_secs_f64();
        let cpu = ticks_to_ms(servers.cpu_ticks()? - cpu0);
        if ok != n {
            return Err(format!("accept phase: only {ok}/{n} confirmations got 250").into());
        }
        f.accept_rate = Some(n as f64 / secs);
        f.accept_cpu_ms = Some(cpu / n as f64);
        f.accept_p50 = Some(percentile(&mut lat, 50.0));
        f.accept_p99 = Some(percentile(&mut lat, 99.0));
        log(&format!(
            "accept: {n} confirmations in {secs:.2} s = {:.0}/s; server CPU {:.3} ms/msg; latency p50 {:.1} ms p99 {:.1} ms; DNS queries during the phase: {}",
            n as f64 / secs,
            cpu / n as f64,
            f.accept_p50.unwrap_or_default(),
            f.accept_p99.unwrap_or_default(),
            dns.queries() - queries_before
        ));
    }

    if !skip.contains(&"reject") {
        reject_phase(args, key, pid, &api, skip.contains(&"peer"), &mut f).await?;
    }
    if !skip.contains(&"idle") {
        idle_phase(args, pid, idle_probes, &mut f).await?;
    }
    if !skip.contains(&"loris") {
        loris_phase(args, loris_probes, &mut f).await?;
    }
    f.hwm_mib = Some(status_kib(pid, "VmHWM")? as f64 / 1024.0);
    Ok(f)
}

// ---------------------------------------------------------------------------------------------
// Reject path: smtp-source with one validly signed mail whose binding fails.

async fn reject_phase(
    args: &Args,
    key: &Key,
    pid: u32,
    api: &Api,
    skip_peer: bool,
    f: &mut Figures,
) -> Result<()> {
    // A live token issued for someone else: the RCPT passes, DATA runs every check and
    // ends on binding.mismatch (Alice's genuine, signed mail names another person's token).
    let target = api
        .create_many(&args.dir.join("outbox"), "target", 1)
        .await?
        .pop()
        .ok_or("no target challenge")?;
    let alice = Challenge {
        address: format!("alice@{MINISTRY}"),
        ..target.clone()
    };
    let message = reply(key, &alice, 0);
    // smtp-source appends CRLF to each line it reads: the file has bare LF line ends.
    let text = String::from_utf8(message)?.replace("\r\n", "\n");
    let file = args.dir.join("reject.eml");
    std::fs::write(&file, text)?;
    let from = alice.address.clone();
    let rcpt = format!("confirm+{}@{CONFIRM_DOMAIN}", target.token);

    let events = args.dir.join("events.jsonl");
    let warm = smtp_source(args.smtp, &file, &from, &rcpt, args.sessions, 40)?.secs;
    log(&format!("reject warm-up: 40 in {warm:.2} s"));
    if let Some(sink) = args.sink {
        let _ = smtp_source(sink, &file, &from, &rcpt, args.sessions, 40)?;
    }
    // Rounds alternate gatekeeper and smtp-sink, so that neither is always measured on a
    // quieter (or busier) machine; each reports its best rate, CPU is the mean.
    let mut cpu_total = 0.0;
    let mut source_total = 0.0;
    let mut sink_total = 0.0;
    let mut sink_source_total = 0.0;
    let per_msg = |ms: f64| ms / args.reject as f64;
    for round in 1..=REJECT_ROUNDS {
        let offset = std::fs::metadata(&events).map(|m| m.len()).unwrap_or(0);
        let cpu0 = cpu_ticks(pid)?;
        let run = smtp_source(args.smtp, &file, &from, &rcpt, args.sessions, args.reject)?;
        let secs = run.secs;
        let cpu = ticks_to_ms(cpu_ticks(pid)? - cpu0);
        cpu_total += cpu;
        source_total += run.client_cpu_ms;
        let rate = args.reject as f64 / secs;
        f.reject_rate = Some(f.reject_rate.unwrap_or(0.0).max(rate));
        let reasons = wait_reasons(&events, offset, args.reject).await?;
        log(&format!(
            "reject round {round}: {} in {secs:.2} s = {rate:.0}/s; server CPU {:.3} ms/msg; smtp-source CPU {:.3} ms/msg; SIEM reasons {reasons:?}",
            args.reject,
            per_msg(cpu),
            per_msg(run.client_cpu_ms),
        ));
        let mismatch = reasons
            .iter()
            .find(|(r, _)| r == "binding.mismatch")
            .map(|(_, n)| *n)
            .unwrap_or(0);
        if mismatch != args.reject {
            return Err(format!(
                "reject phase: expected {} binding.mismatch events, saw {reasons:?}",
                args.reject
            )
            .into());
        }
        if let Some(sink) = args.sink {
            let sink0 = args.sink_pid.map(cpu_ticks).transpose()?;
            let run = smtp_source(sink, &file, &from, &rcpt, args.sessions, args.reject)?;
            let sink_cpu = match (args.sink_pid, sink0) {
                (Some(p), Some(t0)) => Some(ticks_to_ms(cpu_ticks(p)? - t0)),
                _ => None,
            };
            sink_total += sink_cpu.unwrap_or(0.0);
            sink_source_total += run.client_cpu_ms;
            let rate = args.reject as f64 / run.secs;
            f.sink_rate = Some(f.sink_rate.unwrap_or(0.0).max(rate));
            log(&format!(
                "smtp-sink round {round}: {} in {:.2} s = {rate:.0}/s; smtp-sink CPU {} ms/msg; smtp-source CPU {:.3} ms/msg",
                args.reject,
                run.secs,
                sink_cpu
                    .map(|c| format!("{:.3}", per_msg(c)))
                    .unwrap_or("-".into()),
                per_msg(run.client_cpu_ms),
            ));
        }
    }
    let all = (REJECT_ROUNDS * args.reject) as f64;
    f.reject_cpu_ms = Some(cpu_total / all);
    f.source_cpu_ms = Some(source_total / all);
    if args.sink.is_some() {
        f.sink_source_cpu_ms = Some(sink_source_total / all);
        f.sink_cpu_ms = args.sink_pid.map(|_| sink_total / all);
    }

    if let Some(peer) = args.peer.filter(|_| !skip_peer) {
        let warm = smtp_source(peer, &file, &from, &rcpt, args.sessions, 40)?.secs;
        log(&format!("peer warm-up: 40 in {warm:.2} s"));
        let verified0 = peer_verified(args.peer_log.as_deref());
        let secs = smtp_source(peer, &file, &from, &rcpt, args.sessions, args.reject)?.secs;
        let rate = args.reject as f64 / secs;
        if args.peer_log.is_some() {
            let end = Instant::now() + Duration::from_secs(15);
            let mut verified = peer_verified(args.peer_log.as_deref()) - verified0;
            while verified < args.reject && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(200)).await;
                verified = peer_verified(args.peer_log.as_deref()) - verified0;
            }
            log(&format!(
                "peer: OpenDKIM verified (dkim=pass) {verified}/{} messages",
                args.reject
            ));
            if verified < args.reject {
                return Err(format!(
                    "peer phase: only {verified}/{} messages verified by OpenDKIM (see the peer maillog)",
                    args.reject
                )
                .into());
            }
        }
        f.peer_rate = Some(rate);
        log(&format!(
            "peer postfix+opendkim: {} in {secs:.2} s = {rate:.0}/s",
            args.reject
        ));
    }
    Ok(())
}

/// Run `smtp-source -A -s S -m N -f FROM -t TO -F FILE HOST:PORT`; returns the wall time.
/// One smtp-source run: its wall time and its own CPU (user + system).
struct Run {
    secs: f64,
    client_cpu_ms: f64,
}

/// Run smtp-source under bash's `time` (its CPU is part of what the machine spends per
/// message: the README's reading of the smtp-sink ratio).
fn smtp_source(
    target: SocketAddr,
    file: &Path,
    from: &str,
    rcpt: &str,
    sessions: usize,
    count: usize,
) -> Result<Run> {
    let t = Instant::now();
    let out = Command::new("bash")
        .args([
            "-c",
            "TIMEFORMAT='%3U %3S'; time smtp-source \"$@\"",
            "smtp-source",
            "-A",
            "-M",
            "smtp.interieur.gouv.fr",
            "-s",
        ])
        .arg(sessions.to_string())
        .arg("-m")
        .arg(count.to_string())
        .args(["-f", from, "-t", rcpt, "-F"])
        .arg(file)
        .arg(target.to_string())
        .stdin(Stdio::null())
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "smtp-source against {target} failed: {}{stderr}",
            String::from_utf8_lossy(&out.stdout),
        )
        .into());
    }
    let times: Vec<f64> = stderr
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let [user, system] = times[..] else {
        return Err(format!("smtp-source: no CPU times in {stderr:?}").into());
    };
    Ok(Run {
        secs,
        client_cpu_ms: (user + system) * 1000.0,
    })
}

/// Lines of the peer's log that say OpenDKIM verified a message (0 without a log).
fn peer_verified(log: Option<&Path>) -> usize {
    log.and_then(|p| std::fs::read(p).ok())
        .map(|bytes| {
            bytes
                .split(|b| *b == b'\n')
                .filter(|l| l.windows(14).any(|w| w == b"peer-dkim-pass"))
                .count()
        })
        .unwrap_or(0)
}

/// Wait (bounded) until `want` events follow `offset` in the SIEM file; count their reasons.
async fn wait_reasons(path: &Path, offset: u64, want: usize) -> Result<Vec<(String, usize)>> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let bytes = std::fs::read(path)?;
        let tail = bytes
            .get(usize::try_from(offset).unwrap_or(usize::MAX)..)
            .unwrap_or_default();
        let mut counts: Vec<(String, usize)> = Vec::new();
        let mut total = 0;
        for line in tail.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            let reason = v["event"]["reason"].as_str().unwrap_or("-").to_owned();
            total += 1;
            match counts.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => *n += 1,
                None => counts.push((reason, 1)),
            }
        }
        if total >= want || Instant::now() > end {
            return Ok(counts);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Idle sessions and slow-loris.

async fn idle_phase(
    args: &Args,
    pid: u32,
    probes: Vec<(Challenge, Vec<u8>)>,
    f: &mut Figures,
) -> Result<()> {
    let rss0 = status_kib(pid, "VmRSS")?;
    let t = Instant::now();
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(args.idle);
    for i in 0..args.idle {
        // 1,000 connections per source address: the per-IP limit stays meaningful.
        let src = Ipv4Addr::new(127, 0, 2, u8::try_from(1 + i / 1000).unwrap_or(250));
        let gate = gate.clone();
        let target = args.smtp;
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.ok()?;
            let mut c = Client::connect(src, target).await.ok()?;
            c.expect(220).await.ok()?;
            c.command("EHLO idle.example", 250).await.ok()?;
            Some(c)
        }));
    }
    let mut held = Vec::with_capacity(args.idle);
    for task in tasks {
        if let Ok(Some(c)) = task.await {
            held.push(c);
        }
    }
    log(&format!(
        "idle: {}/{} sessions open after EHLO in {:.1} s",
        held.len(),
        args.idle,
        t.elapsed().as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = status_kib(pid, "VmRSS")?;
    let mut lat = Vec::new();
    let mut refused = 0;
    for (ch, msg) in probes {
        let t = Instant::now();
        match confirm_one(GOV_IP, args.smtp, &ch, &msg).await {
            Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
            Err(e) => {
                refused += 1;
                log(&format!("idle probe failed: {e}"));
            }
        }
    }
    let still_open = held.len();
    drop(held);
    let p99 = percentile(&mut lat, 99.0);
    f.idle_rss_mib = Some(rss as f64 / 1024.0);
    f.idle_p99 = Some(p99);
    log(&format!(
        "idle: RSS {:.1} MiB with {still_open} idle sessions (before: {:.1} MiB); confirmation meanwhile p50 {:.1} ms p99 {p99:.1} ms, {refused} failed",
        rss as f64 / 1024.0,
        rss0 as f64 / 1024.0,
        percentile(&mut lat, 50.0)
    ));
    if refused > 0 {
        return Err(format!("idle phase: {refused} confirmations failed").into());
    }
    // Let the server see the closes before the next phase counts connections.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

async fn loris_phase(
    args: &Args,
    probes: Vec<(Challenge, Vec<u8>)>,
    f: &mut Figures,
) -> Result<()> {
    let stop = Instant::now() + Duration::from_secs(args.loris_secs);
    let mut tasks = Vec::with_capacity(args.loris);
    for i in 0..args.loris {
        let src = Ipv4Addr::new(127, 0, 3, u8::try_from(1 + i / 250).unwrap_or(250));
        let target = args.smtp;
        tasks.push(tokio::spawn(async move {
            let Ok(mut c) = Client::connect(src, target).await else {
                return 0u64;
            };
            let script = b"EHLO loris.example\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n";
            let mut sent = 0u64;
            for b in script.iter().cycle() {
                if Instant::now() >= stop || c.stream.write_all(&[*b]).await.is_err() {
                    break;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gap = Duration::from_secs(args.loris_secs.saturating_sub(4).max(1)) / 10;
    let mut lat = Vec::new();
    let mut failed = 0;
    for (ch, msg) in probes {
        let t = Instant::now();
        match confirm_one(GOV_IP, args.smtp, &ch, &msg).await {
            Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
            Err(e) => {
                failed += 1;
                log(&format!("loris probe failed: {e}"));
            }
        }
        tokio::time::sleep(gap).await;
    }
    let mut bytes = 0;
    let mut connected = 0;
    for t in tasks {
        let sent = t.await.unwrap_or(0);
        bytes += sent;
        connected += usize::from(sent > 0);
    }
    let max = lat.iter().copied().fold(0.0, f64::max);
    let verdict = if failed == 0 {
        format!(
            "ok ({}/{} confirmed, max {max:.1} ms)",
            lat.len(),
            lat.len()
        )
    } else {
        format!("FAILED ({failed} refused)")
    };
    log(&format!(
        "loris: {connected} sessions trickled {bytes} bytes over {} s; confirmations {verdict}",
        args.loris_secs
    ));
    f.loris = Some(verdict);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The accept path: N signed replies over `sessions` concurrent connections.

/// Send every message, `sessions` at a time, one per connection, the sessions spread over
/// `targets` in turn; (250 count, latencies ms).
async fn send_many(
    targets: &[SocketAddr],
    messages: Vec<(Challenge, Vec<u8>)>,
    sessions: usize,
) -> (usize, Vec<f64>) {
    let queue = Arc::new(std::sync::Mutex::new(messages));
    let mut workers = Vec::new();
    for target in targets.iter().copied().cycle().take(sessions) {
        let queue = queue.clone();
        workers.push(tokio::spawn(async move {
            let mut ok = 0;
            let mut lat = Vec::new();
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some((ch, msg)) = next else { break };
                let t = Instant::now();
                match confirm_one(GOV_IP, target, &ch, &msg).await {
                    Ok(()) => {
                        ok += 1;
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    Err(e) => log(&format!("confirmation for {} failed: {e}", ch.address)),
                }
            }
            (ok, lat)
        }));
    }
    let mut ok = 0;
    let mut lat = Vec::new();
    for w in workers {
        if let Ok((n, l)) = w.await {
            ok += n;
            lat.extend(l);
        }
    }
    (ok, lat)
}

/// One whole confirmation: connect, EHLO, MAIL, RCPT, DATA → 250, QUIT.
async fn confirm_one(src: Ipv4Addr, target: SocketAddr, ch: &Challenge, msg: &[u8]) -> Result<()> {
    let mut c = Client::connect(src, target).await?;
    c.expect(220).await?;
    c.command("EHLO smtp.interieur.gouv.fr", 250).await?;
    c.command(&format!("MAIL FROM:<{}>", ch.address), 250)
        .await?;
    c.command(
        &format!("RCPT TO:<confirm+{}@{CONFIRM_DOMAIN}>", ch.token),
        250,
    )
    .await?;
    c.command("DATA", 354).await?;
    let mut data = dot_stuff(msg);
    data.extend_from_slice(b".\r\n");
    c.send(&data).await?;
    c.expect(250).await?;
    let _ = c.command("QUIT", 221).await;
    Ok(())
}

fn dot_stuff(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 16);
    let mut at_line_start = true;
    for &b in msg {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A minimal SMTP client: every read and write bounded by [`IO_TIMEOUT`].
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(src: Ipv4Addr, target: SocketAddr) -> Result<Client> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
        let stream = tokio::time::timeout(IO_TIMEOUT, socket.connect(target)).await??;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        tokio::time::timeout(IO_TIMEOUT, self.stream.write_all(bytes)).await??;
        Ok(())
    }

    async fn command(&mut self, line: &str, want: u16) -> Result<String> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.expect(want).await
    }

    /// Read one (possibly multi-line) reply; error unless its code is `want`.
    async fn expect(&mut self, want: u16) -> Result<String> {
        let mut reply = String::new();
        loop {
            let line = self.line().await?;
            reply.push_str(&line);
            reply.push('\n');
            if line.as_bytes().get(3) != Some(&b'-') {
                let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                if code != want {
                    return Err(format!("expected {want}, got {}", reply.trim_end()).into());
                }
                return Ok(reply);
            }
        }
    }

    async fn line(&mut self) -> Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).take(i).collect();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if self.buf.len() > 64 * 1024 {
                return Err("reply line too long".into());
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(IO_TIMEOUT, self.stream.read(&mut chunk)).await??;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Challenges through the API, tokens from the outbox.

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(addr: SocketAddr, token: &str) -> Result<Api> {
        Ok(Api {
            http: reqwest::Client::builder().timeout(IO_TIMEOUT).build()?,
            base: format!("http://{addr}"),
            token: token.to_owned(),
        })
    }

    async fn create(&self, outbox: &Path, address: String) -> Result<Challenge> {
        let resp = self
            .http
            .post(format!("{}/v1/challenges", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "address": address }))
            .send()
            .await?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await?;
        if status.as_u16() != 201 {
            return Err(format!("POST /v1/challenges {address}: {status} {body}").into());
        }
        let id = body["id"].as_str().ok_or("no id")?;
        let session_code = body["session_code"].as_str().ok_or("no session_code")?;
        let mail = std::fs::read_to_string(outbox.join(format!("{id}.eml")))?;
        let token = header(&mail, "Reply-To")
            .and_then(|v| {
                let start = v.find("confirm+")? + "confirm+".len();
                let rest = v.get(start..)?;
                let end = rest
                    .find(|c: char| !c.is_ascii_alphanumeric())
                    .unwrap_or(rest.len());
                rest.get(..end).map(str::to_owned)
            })
            .ok_or("no token in the challenge mail")?;
        let message_id = header(&mail, "Message-ID")
            .map(|v| {
                v.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
            .ok_or("no Message-ID in the challenge mail")?;
        Ok(Challenge {
            address,
            token,
            session_code: session_code.to_owned(),
            message_id,
        })
    }

    /// `n` challenges for `<prefix><i>@interieur.gouv.fr`, eight requests at a time.
    async fn create_many(&self, outbox: &Path, prefix: &str, n: usize) -> Result<Vec<Challenge>> {
        let mut out = Vec::with_capacity(n);
        let mut next = 0;
        while next < n {
            let batch: Vec<_> = (next..(next + 8).min(n))
                .map(|i| self.create(outbox, format!("{prefix}{i}@{MINISTRY}")))
                .collect();
            next += batch.len();
            for r in futures_join(batch).await {
                out.push(r?);
            }
        }
        Ok(out)
    }
}

/// Await a batch of futures concurrently (no extra crate: spawn-free polling via join_all
/// built from tokio's JoinSet is not possible for borrowed futures, so use a select loop).
async fn futures_join<F, T>(futs: Vec<F>) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if results.get(i).is_some_and(Option::is_some) {
                continue;
            }
            match f.as_mut().poll(cx) {
                std::task::Poll::Ready(v) => {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(v);
                    }
                }
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// The unfolded value of the first `name` field of the header block.
fn header(mail: &str, name: &str) -> Option<String> {
    let head = mail.split("\r\n\r\n").next()?;
    let mut value: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(v) = value.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push_str(line);
                continue;
            }
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_owned());
        }
    }
    value
}

// ---------------------------------------------------------------------------------------------
// The ministry's mail: zone, signed replies.

fn zone(key: &Key) -> Vec<Rec> {
    vec![
        Rec::new(MINISTRY, "TXT", "v=spf1 ip4:127.0.0.25 ip4:127.0.0.1 -all"),
        Rec::new(
            &format!("{SELECTOR}._domainkey.{MINISTRY}"),
            "TXT",
            &format!("v=DKIM1; k=rsa; p={}", key.public_b64()),
        ),
        Rec::new(&format!("smtp.{MINISTRY}"), "A", "127.0.0.25"),
        Rec::new(MINISTRY, "MX", &format!("10 smtp.{MINISTRY}")),
    ]
}

/// The person's reply to `ch`, signed by the ministry (corpus LEGIT-01's shape).
fn reply(key: &Key, ch: &Challenge, n: usize) -> Vec<u8> {
    let date = chrono::Utc::now().to_rfc2822();
    let headers: Vec<String> = vec![
        format!("From: Agent {n} <{}>", ch.address),
        format!("To: <confirm+{}@{CONFIRM_DOMAIN}>", ch.token),
        "Subject: RE: Confirmation de votre adresse".into(),
        format!("Date: {date}"),
        format!("Message-ID: <bench.{n}.{}@{MINISTRY}>", ch.token),
        "MIME-Version: 1.0".into(),
        "Content-Type: text/plain; charset=utf-8".into(),
        format!("In-Reply-To: <{}>", ch.message_id),
        format!("References: <{}>", ch.message_id),
    ];
    let body = format!(
        "Code : {}\r\n\r\nBonjour,\r\n\r\nJe confirme que cette adresse est bien la mienne.\r\n\r\nMinistere de l'Interieur\r\n",
        ch.session_code
    );
    let spec = SignSpec::new(MINISTRY, SELECTOR, "rsa-sha256", STD_H);
    let signature = sign(key, &spec, &headers, body.as_bytes());
    let mut out = format!(
        "Received: from [10.1.2.3] (poste.{MINISTRY} [10.1.2.3])\r\n\tby smtp.{MINISTRY} with ESMTPSA; {date}\r\n{signature}\r\n"
    );
    for h in &headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// Sign every reply, on two threads (the signer is slow, and this is outside the timing).
fn sign_all(key: &Arc<Key>, challenges: Vec<Challenge>) -> Vec<(Challenge, Vec<u8>)> {
    let half = challenges.len().div_ceil(2);
    let mut it = challenges.into_iter().enumerate();
    let a: Vec<(usize, Challenge)> = it.by_ref().take(half).collect();
    let b: Vec<(usize, Challenge)> = it.collect();
    std::thread::scope(|s| {
        let work = |part: Vec<(usize, Challenge)>| {
            part.into_iter()
                .map(|(i, ch)| {
                    let m = reply(key, &ch, i);
                    (ch, m)
                })
                .collect::<Vec<_>>()
        };
        let ha = s.spawn(move || work(a));
        let hb = s.spawn(move || work(b));
        let mut out = ha.join().unwrap_or_default();
        out.extend(hb.join().unwrap_or_default());
        out
    })
}

// ---------------------------------------------------------------------------------------------
// The daemon and its figures.

struct Daemon {
    child: Child,
    pid: u32,
}

impl Daemon {
    /// `suffix` names its output files (`gatekeeper<suffix>.err`), one set per instance.
    fn spawn(bin: &Path, config: &Path, dir: &Path, suffix: &str) -> Result<Daemon> {
        let child = Command::new(bin)
            .arg("serve")
            .arg("-c")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(
                dir.join(format!("gatekeeper{suffix}.out")),
            )?)
            .stderr(std::fs::File::create(
                dir.join(format!("gatekeeper{suffix}.err")),
            )?)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let pid = child.id();
        Ok(Daemon { child, pid })
    }

    /// SIGTERM (drain), then SIGKILL after 10 s.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

async fn wait_ready(smtp: SocketAddr, api: SocketAddr) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let smtp_up = TcpStream::connect(smtp).await.is_ok();
        let api_up = TcpStream::connect(api).await.is_ok();
        if smtp_up && api_up {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(
                "gatekeeper did not start listening within 30 s (see gatekeeper.err)".into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One instance's configuration; `n` ("" or "2") keeps the instances' files apart.
fn gatekeeper_config(args: &Args, smtp: SocketAddr, api: SocketAddr, n: &str) -> String {
    let d = args.dir.display();
    let store = match &args.store_url {
        Some(url) => {
            let pw = args
                .store_password_file
                .as_ref()
                .map(|p| format!("password_file = \"{}\"\n", p.display()))
                .unwrap_or_default();
            format!("url = \"{url}\"\n{pw}tls = \"disable\"")
        }
        None => format!("path = \"{d}/gatekeeper.db\""),
    };
    format!(
        r#"# Written by examples/smtp_load.rs for bench/run.sh.
[smtp]
listen = ["{smtp}"]
hostname = "{CONFIRM_DOMAIN}"
max_connections = 20000
max_connections_per_ip = 2000
command_timeout = "5m"
data_timeout = "60s"
session_timeout = "30m"
shutdown_grace = "1s"

[confirm]
domain = "{CONFIRM_DOMAIN}"
max_pending_per_address = 100
max_challenges_per_address_per_hour = 1000
service_name = "bench"

[policy]
allowed_domains = ["gouv.fr"]

[dns]
nameservers = ["{dns}"]
timeout = "5s"

[store]
{store}

[api]
listen = "{api}"
token_file = "{d}/api-token"

[outbound]
from = "Inscription <noreply@{CONFIRM_DOMAIN}>"
directory = "{d}/outbox{n}"

[siem]
format = "ecs"
spool_path = "{d}/siem-spool{n}.db"

[[siem.sink]]
type = "file"
path = "{d}/events{n}.jsonl"
"#,
        dns = args.dns,
    )
}

/// utime + stime of the process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').ok_or("bad stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ")": field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let utime: u64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("no stime")?.parse()?;
    Ok(utime + stime)
}

fn ticks_to_ms(ticks: u64) -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let hz = *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    });
    ticks as f64 * 1000.0 / hz
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .ok_or("no such field")?;
    Ok(line.split_whitespace().nth(1).ok_or("no value")?.parse()?)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values
        .get(rank.saturating_sub(1).min(values.len() - 1))
        .copied()
        .unwrap_or(f64::NAN)
}

fn log(msg: &str) {
    eprintln!("{} {msg}", chrono::Utc::now().format("%H:%M:%S"));
}

fn print_summary(f: &Figures) {
    let num = |v: Option<f64>, prec: usize| match v {
        Some(x) => format!("{x:.prec$}"),
        None => "-".into(),
    };
    let ratio = match (f.reject_rate, f.peer_rate) {
        (Some(g), Some(p)) if p > 0.0 => format!("{:.1}", g / p),
        _ => "-".into(),
    };
    let sink_share = match (f.reject_rate, f.sink_rate) {
        (Some(g), Some(s)) if s > 0.0 => format!(" ({:.0}% of sink)", 100.0 * g / s),
        _ => String::new(),
    };
    println!(
        "gatekeeper accept: {}/s ({} ms CPU/msg, p50 {} ms, p99 {} ms); reject: {}/s ({} ms CPU/msg; smtp-source {} ms/msg){sink_share}; peer postfix+opendkim: {}/s; ratio {ratio}; smtp-sink floor: {}/s (sink {} ms CPU/msg; smtp-source {} ms/msg); 10k idle: {} MiB (confirmation p99 {} ms); loris: {}; peak RSS {} MiB",
        num(f.accept_rate, 0),
        num(f.accept_cpu_ms, 3),
        num(f.accept_p50, 1),
        num(f.accept_p99, 1),
        num(f.reject_rate, 0),
        num(f.reject_cpu_ms, 3),
        num(f.source_cpu_ms, 3),
        num(f.peer_rate, 0),
        num(f.sink_rate, 0),
        num(f.sink_cpu_ms, 3),
        num(f.sink_source_cpu_ms, 3),
        num(f.idle_rss_mib, 1),
        num(f.idle_p99, 1),
        f.loris.as_deref().unwrap_or("-"),
        num(f.hwm_mib, 1),
    );
}
