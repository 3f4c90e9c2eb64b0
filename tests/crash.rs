//! Crash safety (SPEC I3, §4 "the same message delivered again after its 250 was lost"): the
//! real binary (`gatekeeper serve`) is SIGKILLed at a random moment while 20 clients deliver
//! genuine confirmations at once, then restarted on the same store.
//!
//! After each round:
//! - every challenge whose transaction got `250` is `confirmed` (a `250` is on disk);
//! - every other challenge, confirmed or not, gets `250` when the same message is delivered
//!   again: a confirmation committed whose `250` was lost is accepted again (idempotent
//!   redelivery), and a transaction cut before its commit left the challenge pending and
//!   answerable. Nothing is left half-done.
//!
//! Bounded: 8 rounds × 20 challenges, client starts spread over 40 ms, the kill 5–80 ms after
//! the first start.
//! A SIGKILL loses no page cache (the kernel survives), so this proves the ordering — `250`
//! only after COMMIT — not the fsync; `synchronous=FULL` covers the rest.
//!
//! On PostgreSQL (issue 14, SPEC §7), the same with two instances on one database: the real
//! binary is one of them and is SIGKILLed while replies go to both; no `250` of either is
//! lost, the other instance (in-process) keeps answering `250` throughout, and afterwards it
//! confirms what the dead one left: a challenge still pending, or confirmed with its `250`
//! lost (the same message again is accepted once `smtp.session_timeout` has passed, since
//! nobody is left to mark the dead instance's sessions ended).
//!
//! Run: `cargo test --test crash -- --nocapture` (the PostgreSQL test needs PostgreSQL 15,
//! `.ci/packages`).

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;

use common::e2e::{Api, Instance, Layout, Settings, Smtp, send_mail};
use common::mail::Mail;
use common::postgres::Cluster;
use common::{Vars, World};

const ROUNDS: usize = 8;
const PER_ROUND: usize = 20;

/// A free loopback port (bound then released; the daemon binds it with SO_REUSEADDR).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// xorshift64, seeded from the clock: the kill moments (printed, so a run can be read back).
struct Rng(u64);

impl Rng {
    fn from_clock() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Rng((nanos as u64) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

struct Daemon {
    child: Child,
}

impl Daemon {
    /// Start `gatekeeper serve -c <config>` and wait (bounded) until its API answers.
    async fn start(layout: &Layout, api_addr: SocketAddr, smtp_addr: SocketAddr) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(layout.dir.join("daemon.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .args(["serve", "-c"])
            .arg(&layout.config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn gatekeeper serve");
        let mut daemon = Daemon { child };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = daemon.child.try_wait().unwrap() {
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

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

/// One challenge of a round: its id, placeholders, and the exact message sent for it.
struct Item {
    id: String,
    vars: Vars,
    message: Vec<u8>,
}

/// Deliver one message on a new session from the ministry's host: the final reply's code
/// (`None`: the connection died first).
async fn deliver(smtp_addr: SocketAddr, item: &Item) -> Option<u16> {
    let alice = Mail::alice();
    let ip: IpAddr = alice.client_ip.parse().unwrap();
    let mut smtp = Smtp::connect(ip, smtp_addr).await.ok()?;
    let rcpt = format!("confirm+{}@verify.example.gouv.fr", item.vars.token);
    let reply = send_mail(
        &mut smtp,
        &alice.helo,
        &alice.mail_from,
        &rcpt,
        &item.message,
    )
    .await;
    smtp.quit().await;
    reply.map(|r| r.code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_deliveries_loses_no_confirmation() {
    let started = Instant::now();
    let world = World::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(tmp.path());
    let (smtp_port, api_port) = (free_port(), free_port());
    let settings = Settings {
        smtp_port,
        api_port,
        ..Settings::default()
    };
    layout.write_config(world.dns.addr, &settings);
    let smtp_addr: SocketAddr = format!("127.0.0.1:{smtp_port}").parse().unwrap();
    let api_addr: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();

    let mut daemon = Daemon::start(&layout, api_addr, smtp_addr).await;
    let api = Api::new(api_addr, &layout.token_file);
    let mut kills = 0;
    let (mut seen_250, mut lost_250, mut cut_before_commit) = (0, 0, 0);
    let mut n = 0u32;
    let mut rng = Rng::from_clock();

    for round in 0..ROUNDS {
        // Challenges and their signed replies, prepared before the clock starts.
        let mut items = Vec::with_capacity(PER_ROUND);
        for _ in 0..PER_ROUND {
            n += 1;
            let (status, body) = api.claim("alice@interieur.gouv.fr").await;
            assert_eq!(status, 201, "round {round}: {body}");
            let id = body["id"].as_str().unwrap().to_string();
            let mail = layout.challenge_mail(&id);
            let mut vars = Vars::new(Utc::now(), n);
            vars.token = mail.token;
            vars.challenge_msgid = mail.message_id;
            vars.session_code = body["session_code"].as_str().unwrap().to_string();
            let message = Mail::alice().build(&vars);
            items.push(std::sync::Arc::new(Item { id, vars, message }));
        }

        // 20 concurrent deliveries, their starts spread over 40 ms (so that commits do not
        // all fall in one group commit); SIGKILL at a random moment 5-80 ms after the first.
        let clients: Vec<_> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let item = std::sync::Arc::clone(item);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(2 * i as u64)).await;
                    deliver(smtp_addr, &item).await
                })
            })
            .collect();
        let delay = 5 + rng.below(76);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        daemon.kill();
        kills += 1;
        let mut codes = Vec::with_capacity(PER_ROUND);
        for c in clients {
            codes.push(c.await.unwrap());
        }

        daemon = Daemon::start(&layout, api_addr, smtp_addr).await;
        // No wait: the sessions of the killed daemon are over, so a confirmation whose `250`
        // was lost is accepted again at once (not only after `smtp.session_timeout`, 30 min
        // here: a real MTA retries well before that).

        let mut round_250 = 0;
        for (item, code) in items.iter().zip(&codes) {
            let state = api.show(&item.id).await;
            let status = state["status"].as_str().unwrap_or_default().to_string();
            if *code == Some(250) {
                round_250 += 1;
                assert_eq!(
                    status, "confirmed",
                    "round {round}: 250 seen but the challenge is {status} after the crash"
                );
                continue;
            }
            // No 250 seen: the same message again must now be accepted.
            match status.as_str() {
                "confirmed" => lost_250 += 1,
                "pending" => cut_before_commit += 1,
                other => panic!("round {round}: challenge {other}: {state}"),
            }
            let again = deliver(smtp_addr, item).await;
            assert_eq!(
                again,
                Some(250),
                "round {round}: redelivery of a message whose 250 was not seen (was {status})"
            );
            let state = api.show(&item.id).await;
            assert_eq!(state["status"], "confirmed", "round {round}: {state}");
        }
        seen_250 += round_250;
        println!(
            "round {round}: SIGKILL after {delay} ms; {round_250}/{PER_ROUND} got 250 before the kill"
        );
    }
    daemon.kill();
    println!(
        "{ROUNDS} rounds, {kills} kills, {} deliveries: {seen_250} 250 seen (all confirmed), \
         {lost_250} confirmed with the 250 lost (accepted again), {cut_before_commit} cut before \
         commit (pending, then accepted); {:.1} s",
        ROUNDS * PER_ROUND,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(seen_250 + lost_250 + cut_before_commit, ROUNDS * PER_ROUND);
}

/// `smtp.session_timeout` of both PostgreSQL instances: after it, a confirmation delivered
/// by the killed instance counts as from an ended session (`policy::challenge`), so its
/// sender's retry to the other instance is accepted.
const PG_SESSION_TIMEOUT: Duration = Duration::from_secs(3);
const PG_ROUNDS: usize = 5;

/// A challenge claimed through `api` and its reply, from the mail in `layout`'s outbox.
async fn claimed(api: &Api, layout: &Layout, n: u32) -> std::sync::Arc<Item> {
    let (status, body) = api.claim("alice@interieur.gouv.fr").await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let mail = layout.challenge_mail(&id);
    let mut vars = Vars::new(Utc::now(), n);
    vars.token = mail.token;
    vars.challenge_msgid = mail.message_id;
    vars.session_code = body["session_code"].as_str().unwrap().to_string();
    let message = Mail::alice().build(&vars);
    std::sync::Arc::new(Item { id, vars, message })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_one_postgres_instance_loses_nothing_and_the_other_keeps_serving() {
    let world = World::start().await;
    let cluster = Cluster::start();
    let timeout = format!("{}s", PG_SESSION_TIMEOUT.as_secs());
    // B: in-process, never killed; challenges are claimed through it.
    let b = Instance::start(
        world.dns.addr,
        &Settings {
            postgres: Some(cluster.config()),
            session_timeout: timeout.clone(),
            ..Settings::default()
        },
    )
    .await;
    // A: the real binary, killed once a round.
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(tmp.path());
    let (smtp_port, api_port) = (free_port(), free_port());
    layout.write_config(
        world.dns.addr,
        &Settings {
            smtp_port,
            api_port,
            postgres: Some(cluster.config()),
            session_timeout: timeout,
            ..Settings::default()
        },
    );
    let a_smtp: SocketAddr = format!("127.0.0.1:{smtp_port}").parse().unwrap();
    let a_api: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
    let mut rng = Rng::from_clock();
    let mut n = 0u32;
    let (mut seen_250, mut left_pending, mut lost_250) = (0, 0, 0);

    for round in 0..PG_ROUNDS {
        let a = Daemon::start(&layout, a_api, a_smtp).await;
        let mut items = Vec::with_capacity(PER_ROUND);
        for _ in 0..PER_ROUND {
            n += 1;
            items.push(claimed(&b.api, &b.layout, n).await);
        }
        // Even items to A, odd to B, starts spread over 200 ms; A killed 50-350 ms in. Wider
        // than on SQLite: A's first replies each open a pooled connection (SCRAM
        // authentication), so its first 250s come later.
        let clients: Vec<_> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let item = std::sync::Arc::clone(item);
                let to = if i % 2 == 0 { a_smtp } else { b.smtp };
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(10 * i as u64)).await;
                    deliver(to, &item).await
                })
            })
            .collect();
        let delay = 50 + rng.below(301);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        a.kill();
        let mut codes = Vec::with_capacity(PER_ROUND);
        for c in clients {
            codes.push(c.await.unwrap());
        }

        // A is dead from here to the end of the round: only B answers.
        let mut retry = Vec::new();
        let a_250 = codes.iter().step_by(2).filter(|c| **c == Some(250)).count();
        for (i, (item, code)) in items.iter().zip(&codes).enumerate() {
            let status = cluster.query(&format!(
                "SELECT status FROM challenges WHERE id = '{}'",
                item.id
            ));
            if i % 2 == 1 {
                assert_eq!(
                    *code,
                    Some(250),
                    "round {round}: B must keep serving while A dies"
                );
            }
            if *code == Some(250) {
                seen_250 += 1;
                assert_eq!(status, "confirmed", "round {round}: a 250 not stored");
                continue;
            }
            match status.as_str() {
                "pending" => left_pending += 1,
                "confirmed" => lost_250 += 1,
                other => panic!("round {round}: challenge {}: {other}", item.id),
            }
            retry.push(item);
        }
        // The senders of A's unanswered replies retry on B (the next MX), after the dead
        // instance's sessions are over by age.
        tokio::time::sleep(PG_SESSION_TIMEOUT + Duration::from_millis(500)).await;
        for item in retry {
            assert_eq!(
                deliver(b.smtp, item).await,
                Some(250),
                "round {round}: B accepts the retry of {}",
                item.id
            );
            let state = b.api.show(&item.id).await;
            assert_eq!(state["status"], "confirmed", "round {round}: {state}");
        }
        // And B confirms a challenge that only it ever saw.
        n += 1;
        let fresh = claimed(&b.api, &b.layout, n).await;
        assert_eq!(deliver(b.smtp, &fresh).await, Some(250), "round {round}");
        println!(
            "round {round}: SIGKILL of A after {delay} ms; A answered 250 to {a_250}/{}",
            PER_ROUND / 2
        );
    }
    let confirmed = cluster.query("SELECT count(*) FROM challenges WHERE status = 'confirmed'");
    assert_eq!(confirmed, (PG_ROUNDS * (PER_ROUND + 1)).to_string());
    println!(
        "{PG_ROUNDS} rounds: {seen_250} 250 seen (all stored), {lost_250} confirmed by A with \
         the 250 lost and {left_pending} left pending, all accepted by B afterwards"
    );
}
