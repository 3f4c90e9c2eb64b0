//! The mixed soak behind `bench/soak.sh` (issue 19): one real `gatekeeper serve` child on
//! loopback for `--secs` (600 by default) taking, all at once, genuine replies (claim through
//! the API, DKIM-signed answer over SMTP), attacks (unsigned replies to live challenges,
//! replies to unknown tokens), API calls (reads with the token, bursts without one) and
//! signals at random moments: SIGHUP often, SIGTERM or SIGKILL now and then, the daemon started
//! again on the same store after each stop.
//!
//! At the end it checks and prints:
//! - every `250` seen is `confirmed` in the store; every reply cut by a stop (no answer, or a
//!   4xx) gets `250` when delivered again (SPEC I3, §4);
//! - every refusal a client saw (4xx/5xx) has its event in the SIEM file, matched by the
//!   session's source address and port (I4);
//! - RSS (`VmRSS`) and open file descriptors (`/proc/PID/fd`) sampled every 5 s, per daemon
//!   process: the growth between the first sample after that process's first minute and
//!   its last one (I5: flat), and fds back near their baseline.
//!
//! Exit status 1 if an invariant fails. Loopback only; every loop is bounded by the run's time;
//! the daemon is ours and stopped by PID.

// The test helpers it includes panic on setup failures, as tests do: this is a bench tool.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use common::daemon::{Daemon, free_port};
use common::e2e::{Api, Events, Layout, Settings, Smtp, is_refusal, send_mail};
use common::flood::Flood;
use common::mail::Mail;
use common::{Vars, World};

#[derive(Parser)]
struct Args {
    /// Length of the run in seconds.
    #[arg(long, default_value_t = 600)]
    secs: u64,
    /// The gatekeeper binary.
    #[arg(long, default_value = "target/release/gatekeeper")]
    bin: PathBuf,
    /// Concurrent genuine repliers.
    #[arg(long, default_value_t = 3)]
    repliers: usize,
    /// Seed of the signal schedule (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
}

/// xorshift64: the signal schedule (printed seed, so a run can be replayed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// What the workers saw.
#[derive(Default)]
struct Seen {
    /// Challenges whose reply got `250`.
    confirmed: Vec<String>,
    /// Replies with no final answer or a 4xx (cut by a stop): delivered again at the end.
    unsettled: Vec<(String, Mail, Vec<u8>)>,
    /// Genuine replies refused permanently: never expected.
    wrong: Vec<String>,
    /// Sessions (source ip, port) and the refusals their client saw.
    refusals: Vec<(IpAddr, u16, usize)>,
    genuine: u64,
    attacks: u64,
    api_calls: u64,
    api_bad: u64,
    api_errors: u64,
    signals: Vec<String>,
}

/// One sample of the daemon process.
#[derive(Clone, Copy, Debug)]
struct Sample {
    pid: u32,
    age: Duration,
    rss_kb: u64,
    fds: u64,
}

/// The run the workers share: where the daemon is, when to stop, what they saw.
struct Run {
    layout: Layout,
    api: Api,
    smtp: SocketAddr,
    end: Instant,
    seen: Mutex<Seen>,
    n: AtomicU32,
    stop: AtomicBool,
}

impl Run {
    fn over(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.end
    }

    fn next_n(&self) -> u32 {
        self.n.fetch_add(1, Ordering::Relaxed)
    }

    /// Claim the next address of alice's ministry (64 in turn, so that the per-address rate
    /// limits are not what refuses a claim): the id, the token, the placeholders and the
    /// reply as its owner sends it.
    async fn claim(&self) -> Option<(String, String, Vars, Mail)> {
        let n = self.next_n();
        let address = format!("agent{}@interieur.gouv.fr", n % 64);
        let mail = Mail::alice()
            .envelope(&address)
            .set("From", &format!("From: <{address}>"));
        let (status, body) = tokio::time::timeout(Duration::from_secs(10), async {
            // The daemon may be down between a stop and its restart: a failed request is
            // retried by the caller, not a panic.
            let r = reqwest::Client::new()
                .post(format!("{}/v1/challenges", self.api.base))
                .bearer_auth(token(&self.layout))
                .json(&serde_json::json!({ "address": address }))
                .send()
                .await
                .ok()?;
            let status = r.status().as_u16();
            Some((status, r.json::<serde_json::Value>().await.ok()?))
        })
        .await
        .ok()
        .flatten()?;
        if status != 201 {
            return None;
        }
        let id = body["id"].as_str()?.to_string();
        let path = self.layout.outbox.join(format!("{id}.eml"));
        let challenge = common::e2e::ChallengeMail::parse(&std::fs::read(path).ok()?);
        let mut vars = Vars::new(Utc::now(), n);
        vars.token = challenge.token.clone();
        vars.challenge_msgid = challenge.message_id;
        vars.session_code = body["session_code"].as_str()?.to_string();
        Some((id, challenge.token, vars, mail))
    }

    /// Deliver `message` to `confirm+token@`: the final code (`None`: no answer) and the
    /// session's source, with the refusals its client saw recorded.
    async fn deliver(&self, mail: &Mail, token: &str, message: &[u8]) -> Option<u16> {
        let ip: IpAddr = mail.client_ip.parse().unwrap();
        let mut smtp = Smtp::connect(ip, self.smtp).await.ok()?;
        let rcpt = format!("confirm+{token}@verify.example.gouv.fr");
        let reply = send_mail(&mut smtp, &mail.helo, &mail.mail_from, &rcpt, message).await;
        smtp.quit().await;
        let refused = smtp.refusals();
        if refused > 0 {
            lock(&self.seen)
                .refusals
                .push((ip, smtp.local.port(), refused));
        }
        reply.map(|r| r.code)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn token(layout: &Layout) -> String {
    std::fs::read_to_string(&layout.token_file)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Genuine replies, one after another.
async fn replier(w: Arc<Run>) {
    while !w.over() {
        let Some((id, token, vars, mail)) = w.claim().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let message = mail.build(&vars);
        let code = w.deliver(&mail, &token, &message).await;
        let mut seen = lock(&w.seen);
        seen.genuine += 1;
        match code {
            Some(250) => seen.confirmed.push(id),
            Some(c) if c >= 500 => seen.wrong.push(format!("genuine reply to {id} got {c}")),
            // No answer or a 4xx: cut by a stop (a drain answers 421); delivered again at
            // the end.
            _ => seen.unsettled.push((id, mail, message)),
        }
    }
}

/// Attacks: an unsigned reply to a live challenge, a reply to an unknown token.
async fn attacker(w: Arc<Run>) {
    let alice = Mail::alice();
    let mut k = 0u64;
    while !w.over() {
        k += 1;
        if k.is_multiple_of(2) {
            if let Some((_, token, vars, mail)) = w.claim().await {
                let unsigned = mail.sigs(vec![]);
                let _ = w.deliver(&unsigned, &token, &unsigned.build(&vars)).await;
            }
        } else {
            let vars = Vars::new(Utc::now(), w.next_n());
            let bogus = format!("zz{k:06}q7x2m9c4v8b1n6z3a5s0d");
            let _ = w.deliver(&alice, &bogus, &alice.build(&vars)).await;
        }
        lock(&w.seen).attacks += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// API calls with the token, and bursts without one from another loopback peer.
async fn api_user(w: Arc<Run>) {
    let mut k = 0u64;
    while !w.over() {
        k += 1;
        let show = tokio::time::timeout(Duration::from_secs(5), w.api.try_show("nosuchid"))
            .await
            .is_ok_and(|r| r.is_ok());
        let metrics = reqwest::Client::new()
            .get(format!("{}/metrics", w.api.base))
            .bearer_auth(token(&w.layout))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        {
            let mut seen = lock(&w.seen);
            seen.api_calls += 2;
            seen.api_errors += u64::from(metrics.is_err()) + u64::from(!show);
        }
        if k.is_multiple_of(10) {
            let burst = Flood {
                target: w.api.base.trim_start_matches("http://").parse().unwrap(),
                source: "127.0.0.3".parse().unwrap(),
                rate: 2000,
                duration: Duration::from_millis(250),
                connections: 8,
                path: "/v1/challenges/x".into(),
                authorization: None,
            }
            .run()
            .await;
            lock(&w.seen).api_bad += burst.answered();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn sample(pid: u32, started: Instant) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample {
        pid,
        age: started.elapsed(),
        rss_kb,
        fds,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64)
            | 1
    });
    println!(
        "soak: {} s, seed {seed}, binary {}",
        args.secs,
        args.bin.display()
    );
    let world = World::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(tmp.path());
    let settings = Settings {
        smtp_port: free_port(),
        api_port: free_port(),
        max_pending: 100,
        max_per_hour: 1000,
        ..Settings::default()
    };
    layout.write_config(world.dns.addr, &settings);
    let smtp: SocketAddr = format!("127.0.0.1:{}", settings.smtp_port).parse().unwrap();
    let api_addr: SocketAddr = format!("127.0.0.1:{}", settings.api_port).parse().unwrap();
    let log = tmp.path().join("daemon.log");
    let start = |bin: PathBuf, config: PathBuf, log: PathBuf| async move {
        Daemon::start(&bin, &config, &log, &[], api_addr, smtp).await
    };
    let mut daemon = start(args.bin.clone(), layout.config.clone(), log.clone()).await;
    let w = Arc::new(Run {
        api: Api::new(api_addr, &layout.token_file),
        layout,
        smtp,
        end: Instant::now() + Duration::from_secs(args.secs),
        seen: Mutex::new(Seen::default()),
        n: AtomicU32::new(1),
        stop: AtomicBool::new(false),
    });
    let mut workers = Vec::new();
    for _ in 0..args.repliers {
        workers.push(tokio::spawn(replier(Arc::clone(&w))));
    }
    workers.push(tokio::spawn(attacker(Arc::clone(&w))));
    workers.push(tokio::spawn(api_user(Arc::clone(&w))));

    // The signal schedule and the sampler, here.
    let mut rng = Rng(seed);
    let mut samples: Vec<Sample> = Vec::new();
    let mut born = Instant::now();
    let mut next_signal = Instant::now() + Duration::from_secs(10 + rng.below(20));
    // A stop only after the process has lived 90-180 s, so that each life has samples after
    // its first minute.
    let mut stop_after = Duration::from_secs(90 + rng.below(90));
    let mut next_sample = Instant::now();
    while !w.over() {
        let now = Instant::now();
        if now >= next_sample {
            if let Some(s) = sample(daemon.pid(), born) {
                samples.push(s);
            }
            next_sample = now + Duration::from_secs(5);
        }
        if now >= next_signal {
            let stop = born.elapsed() >= stop_after;
            let what = if !stop {
                "HUP"
            } else if rng.below(2) == 0 {
                "TERM"
            } else {
                "KILL"
            };
            let at = Duration::from_secs(args.secs).saturating_sub(w.end - now);
            lock(&w.seen)
                .signals
                .push(format!("{what}@{:.0}s", at.as_secs_f64()));
            match what {
                "HUP" => daemon.signal("HUP"),
                "TERM" => {
                    daemon.signal("TERM");
                    assert!(
                        daemon.wait_exit(Duration::from_secs(15)),
                        "no exit after TERM"
                    );
                }
                _ => daemon.signal("KILL"),
            }
            if what != "HUP" {
                daemon.wait_exit(Duration::from_secs(5));
                daemon = start(args.bin.clone(), w.layout.config.clone(), log.clone()).await;
                born = Instant::now();
                stop_after = Duration::from_secs(90 + rng.below(90));
            }
            next_signal = Instant::now() + Duration::from_secs(10 + rng.below(20));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.stop.store(true, Ordering::Relaxed);
    for t in workers {
        if let Err(e) = t.await {
            println!("soak: a worker failed: {e}");
            std::process::exit(1);
        }
    }
    if let Some(s) = sample(daemon.pid(), born) {
        samples.push(s);
    }

    // Checks.
    let mut failures = Vec::new();
    let seen = std::mem::take(&mut *lock(&w.seen));
    let mut not_confirmed = 0;
    for id in &seen.confirmed {
        let state = w.api.show(id).await;
        if state["status"] != "confirmed" {
            not_confirmed += 1;
            failures.push(format!("250 seen but {id} is {}", state["status"]));
        }
    }
    let mut redelivered = 0;
    failures.extend(seen.wrong.iter().cloned());
    for (id, mail, message) in &seen.unsettled {
        let token = common::e2e::ChallengeMail::parse(
            &std::fs::read(w.layout.outbox.join(format!("{id}.eml"))).unwrap(),
        )
        .token;
        match w.deliver(mail, &token, message).await {
            Some(250) => redelivered += 1,
            other => failures.push(format!("redelivery of {id} got {other:?}")),
        }
    }
    // Events: give the SIEM a moment to write what it has, then match every refusal.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = Events::new(&w.layout.events);
    let all = events.all();
    let mut by_client: HashMap<(String, u64), usize> = HashMap::new();
    for e in all.iter().filter(|e| is_refusal(e)) {
        let key = (
            e["source"]["ip"].as_str().unwrap_or_default().to_string(),
            e["source"]["port"].as_u64().unwrap_or(0),
        );
        *by_client.entry(key).or_insert(0) += 1;
    }
    let mut missing = 0;
    let refusals_seen: usize = seen.refusals.iter().map(|r| r.2).sum();
    for (ip, port, n) in &seen.refusals {
        let got = by_client
            .get(&(ip.to_string(), u64::from(*port)))
            .copied()
            .unwrap_or(0);
        if got < *n {
            missing += n - got;
        }
    }
    if missing > 0 {
        failures.push(format!("{missing} refusals without their event"));
    }

    // RSS and fds per process life, after its first minute.
    let mut lives: Vec<(u32, Vec<Sample>)> = Vec::new();
    for s in &samples {
        match lives.last_mut() {
            Some((pid, v)) if *pid == s.pid => v.push(*s),
            _ => lives.push((s.pid, vec![*s])),
        }
    }
    println!(
        "soak: genuine {} ({} x 250, all {} confirmed: {}; {} cut by a stop, {redelivered} got 250 when delivered again); \
         attacks {}; refusals seen by clients {refusals_seen}, refusal events {}, refusals without their event {missing}; \
         API calls {} ({} failed, during restarts), {} answered without a token",
        seen.genuine,
        seen.confirmed.len(),
        seen.confirmed.len() - not_confirmed,
        not_confirmed == 0,
        seen.unsettled.len(),
        seen.attacks,
        by_client.values().sum::<usize>(),
        seen.api_calls,
        seen.api_errors,
        seen.api_bad,
    );
    println!("soak: signals {}", seen.signals.join(" "));
    for (pid, v) in &lives {
        let settled: Vec<&Sample> = v
            .iter()
            .filter(|s| s.age >= Duration::from_secs(60))
            .collect();
        let first = v.first().unwrap();
        let last = v.last().unwrap();
        let (rss_growth, fd_line) = match (settled.first(), settled.last()) {
            (Some(a), Some(b)) => {
                let g = (b.rss_kb as f64 - a.rss_kb as f64) / a.rss_kb.max(1) as f64 * 100.0;
                let fd_max = settled.iter().map(|s| s.fds).max().unwrap_or(0);
                let fd_min = settled.iter().map(|s| s.fds).min().unwrap_or(0);
                if g > 20.0 {
                    failures.push(format!(
                        "pid {pid}: RSS grew {g:.1} % after its first minute"
                    ));
                }
                if fd_max > fd_min + 64 {
                    failures.push(format!(
                        "pid {pid}: fds {fd_min}..{fd_max} after its first minute"
                    ));
                }
                (
                    format!(
                        "RSS after 1 min {} -> {} KiB ({g:+.1} %) over {:.0} s",
                        a.rss_kb,
                        b.rss_kb,
                        (b.age - a.age).as_secs_f64()
                    ),
                    format!("fds after 1 min {fd_min}..{fd_max}"),
                )
            }
            _ => ("lived under a minute".to_string(), String::new()),
        };
        println!(
            "soak: pid {pid}: {} samples over {:.0} s; RSS {} -> {} KiB, fds {} -> {}; {rss_growth}; {fd_line}",
            v.len(),
            last.age.as_secs_f64(),
            first.rss_kb,
            last.rss_kb,
            first.fds,
            last.fds,
        );
    }
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(15));
    if failures.is_empty() {
        println!("soak: OK");
    } else {
        for f in &failures {
            println!("soak: FAILED: {f}");
        }
        std::process::exit(1);
    }
}
