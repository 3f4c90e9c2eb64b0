//! Several instances, one PostgreSQL (issue 14, SPEC §7): two in-process daemons on their own
//! loopback ports share one throwaway database (`common::postgres`). A challenge created on
//! one is confirmed through the other; the same reply delivered to both at the same moment
//! confirms once; the pending limit counts both instances' challenges.
//!
//! Run: `cargo test --test instances` (needs PostgreSQL 15, `.ci/packages`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::IpAddr;

use chrono::Utc;

use common::e2e::{Instance, Reply, Settings, Smtp, send_mail};
use common::mail::Mail;
use common::postgres::Cluster;
use common::{Vars, World};

/// A challenge claimed on `on`, and the reply's placeholders from its outbox.
async fn challenge(on: &Instance, address: &str, n: u32) -> (String, Vars) {
    let (status, body) = on.api.claim(address).await;
    assert_eq!(status, 201, "POST /v1/challenges: {body}");
    let id = body["id"].as_str().unwrap().to_string();
    let mail = on.layout.challenge_mail(&id);
    let mut vars = Vars::new(Utc::now(), n);
    vars.token = mail.token;
    vars.challenge_msgid = mail.message_id;
    vars.session_code = body["session_code"].as_str().unwrap().to_string();
    (id, vars)
}

/// Deliver `bytes` to `to` on a new session from the mail's host; QUIT.
async fn deliver(to: &Instance, mail: &Mail, vars: &Vars, bytes: &[u8]) -> Option<Reply> {
    let ip: IpAddr = mail.client_ip.parse().unwrap();
    let mut smtp = Smtp::connect(ip, to.smtp).await.expect("connect");
    let rcpt = format!("confirm+{}@verify.example.gouv.fr", vars.token);
    let reply = send_mail(&mut smtp, &mail.helo, &mail.mail_from, &rcpt, bytes).await;
    smtp.quit().await;
    reply
}

async fn two_instances(world: &World, cluster: &Cluster, max_pending: u32) -> (Instance, Instance) {
    let settings = Settings {
        postgres: Some(cluster.config()),
        max_pending,
        ..Settings::default()
    };
    let a = Instance::start(world.dns.addr, &settings).await;
    let b = Instance::start(world.dns.addr, &settings).await;
    assert_ne!(a.smtp, b.smtp);
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn created_on_one_confirmed_on_the_other_and_simultaneous_replies_confirm_once() {
    let world = World::start().await;
    let cluster = Cluster::start();
    let (a, b) = two_instances(&world, &cluster, 100).await;
    let alice = Mail::alice();

    // Claimed on A, confirmed through B, seen confirmed on both.
    let (id, vars) = challenge(&a, "alice@interieur.gouv.fr", 1).await;
    let message = alice.build(&vars);
    let reply = deliver(&b, &alice, &vars, &message).await.expect("reply");
    assert_eq!(reply.code, 250, "{reply}");
    assert_eq!(a.api.show(&id).await["status"], "confirmed");
    assert_eq!(b.api.show(&id).await["status"], "confirmed");
    // Another message with the used token, on A: token.used (a permanent refusal).
    let mut other = vars.clone();
    other.msgid = format!("{}.other", vars.msgid);
    let used = "token.used".parse::<gatekeeper::reason::Reason>().unwrap();
    let reply = deliver(&a, &alice, &other, &alice.build(&other))
        .await
        .expect("reply");
    assert_eq!(reply.code, used.reply().code, "{reply}");

    // The same reply to both instances at the same moment, N times: one confirmation each.
    const N: u32 = 20;
    for n in 0..N {
        let (id, vars) = challenge(
            if n % 2 == 0 { &a } else { &b },
            "alice@interieur.gouv.fr",
            100 + n,
        )
        .await;
        let message = alice.build(&vars);
        let (ra, rb) = tokio::join!(
            deliver(&a, &alice, &vars, &message),
            deliver(&b, &alice, &vars, &message)
        );
        let codes = [
            ra.expect("reply from A").code,
            rb.expect("reply from B").code,
        ];
        // The loser sees the winner's confirmation: the same message again is 250 (an
        // idempotent redelivery) or, while the winner's session is still open, token.used.
        assert!(codes.contains(&250), "challenge {n}: {codes:?}");
        assert!(
            codes.iter().all(|&c| c == 250 || c == used.reply().code),
            "challenge {n}: {codes:?}"
        );
        let rows = cluster.query(&format!(
            "SELECT count(*) FILTER (WHERE status = 'confirmed') || '/' || count(*) \
             FROM challenges WHERE id = '{id}'"
        ));
        assert_eq!(rows, "1/1", "challenge {n}: one row, confirmed");
        let shown = a.api.show(&id).await;
        assert_eq!(shown["status"], "confirmed", "{shown}");
        assert!(
            shown["evidence"]["message_id"]
                .as_str()
                .unwrap_or_default()
                .contains(&vars.msgid),
            "the stored confirmation is this reply's: {shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pending_limit_counts_every_instance() {
    let world = World::start().await;
    let cluster = Cluster::start();
    let (a, b) = two_instances(&world, &cluster, 2).await;
    let carol = "carol@interieur.gouv.fr";
    assert_eq!(a.api.claim(carol).await.0, 201);
    assert_eq!(b.api.claim(carol).await.0, 201);
    let (status, body) = a.api.claim(carol).await;
    assert_eq!(status, 429, "{body}");
    let (status, body) = b.api.claim(carol).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "challenge.rate_limited", "{body}");
}

/// `GET /healthz`: status and body.
async fn healthz(on: &Instance) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("{}/healthz", on.api.base))
        .await
        .expect("healthz");
    let status = r.status().as_u16();
    (status, r.json().await.expect("healthz JSON"))
}

/// The database stopped under a running daemon: the reply gets `451 store.unavailable`
/// (never `250`, never `5xx`), the API `503`, `/healthz` `degraded`; once the database is
/// back the same daemon (not restarted) confirms the same reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_outage_is_451_and_503_then_recovers_without_restart() {
    let world = World::start().await;
    let cluster = Cluster::start();
    let settings = Settings {
        postgres: Some(cluster.config()),
        ..Settings::default()
    };
    let a = Instance::start(world.dns.addr, &settings).await;
    assert_eq!(
        healthz(&a).await,
        (200, serde_json::json!({"status": "ok"}))
    );
    let alice = Mail::alice();
    let (id, vars) = challenge(&a, "alice@interieur.gouv.fr", 7).await;
    let message = alice.build(&vars);

    cluster.stop();
    let reply = deliver(&a, &alice, &vars, &message).await.expect("reply");
    assert_eq!(reply.code, 451, "{reply}");
    assert!(
        reply.text.contains("4.3.0"),
        "store.unavailable's 4.3.0: {reply}"
    );
    let (status, body) = a.api.claim("bob@interieur.gouv.fr").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "store.unavailable", "{body}");
    let (status, body) = healthz(&a).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");

    cluster.pg_ctl_start();
    let mut back = false;
    for _ in 0..100 {
        if healthz(&a).await.0 == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(back, "healthz ok again without a restart");
    let reply = deliver(&a, &alice, &vars, &message).await.expect("reply");
    assert_eq!(reply.code, 250, "{reply}");
    assert_eq!(a.api.show(&id).await["status"], "confirmed");
}

/// The database stopped for 10 s while replies keep arriving at two instances: meanwhile
/// every reply gets `451` (never `5xx`, never a `250` that is not stored); the senders retry
/// and, once the database is back, every challenge is confirmed, each by a `250` that the
/// database holds. Neither daemon is restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_restart_during_deliveries_gives_only_4xx_then_recovers() {
    let world = World::start().await;
    let cluster = Cluster::start();
    let (a, b) = two_instances(&world, &cluster, 100).await;
    let alice = Mail::alice();
    const N: u32 = 30;
    let mut pending = Vec::new();
    for n in 0..N {
        let (id, vars) = challenge(
            if n % 2 == 0 { &a } else { &b },
            "alice@interieur.gouv.fr",
            300 + n,
        )
        .await;
        let message = alice.build(&vars);
        pending.push((id, vars, message));
    }

    let outage = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&outage);
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        cluster.stop();
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_secs(10));
        cluster.pg_ctl_start();
        flag.store(false, std::sync::atomic::Ordering::SeqCst);
        cluster
    });

    let mut confirmed = Vec::new();
    let mut refused_4xx = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut round = 0usize;
    while !pending.is_empty() && std::time::Instant::now() < deadline {
        // A few before the outage, the rest once the database is down.
        if round == 5 {
            while !outage.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        let (id, vars, message) = pending.remove(0);
        let to = if round.is_multiple_of(2) { &a } else { &b };
        round += 1;
        let reply = deliver(to, &alice, &vars, &message).await.expect("reply");
        match reply.code {
            250 => confirmed.push((id, vars)),
            451 => {
                refused_4xx += 1;
                pending.push((id, vars, message));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => panic!("only 250 or 451 may answer a genuine reply, got {other}: {reply}"),
        }
    }
    let cluster = stopper.join().unwrap();
    assert!(
        pending.is_empty(),
        "{} replies never accepted",
        pending.len()
    );
    assert!(refused_4xx > 0, "the outage was seen (451s)");
    assert!(!outage.load(std::sync::atomic::Ordering::SeqCst));
    for (id, vars) in &confirmed {
        let row = cluster.query(&format!(
            "SELECT status || ' ' || (position('{}' in confirm_message_id) > 0) FROM challenges WHERE id = '{id}'",
            vars.msgid
        ));
        assert_eq!(row, "confirmed true", "challenge {id}: every 250 is stored");
    }
    assert_eq!(confirmed.len(), N as usize);
}

/// One sample's value from `/metrics` text (`name value`, no labels).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .find_map(|rest| rest.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// `(up, failures, reconnects)` as `/metrics` shows them.
async fn store_metrics(on: &Instance) -> (f64, f64, f64) {
    let text = on.api.metrics().await;
    let get = |name| sample(&text, name).unwrap_or_else(|| panic!("{name} missing:\n{text}"));
    (
        get("gatekeeper_store_up"),
        get("gatekeeper_store_failures_total"),
        get("gatekeeper_store_reconnects_total"),
    )
}

/// The store's state in `/metrics`: up with no failure on a healthy database, down with the
/// failures counted while it is stopped (the scrape itself asks it), up again with one
/// reconnection once it is back, the daemon not restarted. SQLite reports the same series.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_show_the_store_down_then_reconnected() {
    let world = World::start().await;
    let cluster = Cluster::start();
    let settings = Settings {
        postgres: Some(cluster.config()),
        ..Settings::default()
    };
    let a = Instance::start(world.dns.addr, &settings).await;
    assert_eq!(store_metrics(&a).await, (1.0, 0.0, 0.0));

    cluster.stop();
    let (status, body) = a.api.claim("bob@interieur.gouv.fr").await;
    assert_eq!(status, 503, "{body}");
    let (up, failures, reconnects) = store_metrics(&a).await;
    assert_eq!(up, 0.0, "store down while the database is stopped");
    // The refused claim and this scrape's ping, at least.
    assert!(failures >= 2.0, "failures counted: {failures}");
    assert_eq!(reconnects, 0.0);

    cluster.pg_ctl_start();
    let mut seen = None;
    for _ in 0..100 {
        let m = store_metrics(&a).await;
        if m.0 == 1.0 {
            seen = Some(m);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, after, reconnects) = seen.expect("store up again without a restart");
    assert!(
        after >= failures,
        "a counter never goes down: {after} < {failures}"
    );
    assert_eq!(reconnects, 1.0, "one outage, one reconnection");
    let (status, body) = a.api.claim("bob@interieur.gouv.fr").await;
    assert_eq!(status, 201, "{body}");

    // The same series on SQLite (no database to stop: up, nothing failed).
    let sqlite = Instance::start(world.dns.addr, &Settings::default()).await;
    assert_eq!(store_metrics(&sqlite).await, (1.0, 0.0, 0.0));
}
