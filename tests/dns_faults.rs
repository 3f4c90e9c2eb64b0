//! DNS faults (issue 19, SPEC I5) against the real daemon and the real loopback DNS server
//! (`common::dns`): one table, one row a fault. Each row claims a challenge, turns its
//! fault on, sends alice's genuine reply over SMTP and checks the reply's class, the time it
//! took, the challenge's stored state and the audit event of the session:
//!
//! - where the genuine answer arrives, the reply confirms (`250`, `confirmed`,
//!   `confirmation-accepted`), except behind a malformed answer that matches the query's ID
//!   (hickory ends the query: a 4xx, see `src/dns.rs`);
//! - where it does not, the reply is a `4xx` temperror within `dns.check_timeout` and a
//!   margin, and the challenge stays pending; never a `5xx` from a failed lookup;
//! - a record that is genuinely broken (two SPF records among 100 TXT) is a `5xx`
//!   permerror, as RFC 7208 §4.5 says.
//!
//! Faults: truncation (TC) for a 4096-bit DKIM key and a long SPF record (TCP queries are
//! counted); answers with a wrong ID, from another source port, malformed, or for another
//! name, ahead of the genuine answer or instead of it; 100 TXT records at the SPF name; a
//! CNAME loop at the DKIM key name and at the SPF name; every answer after 90 % of `dns.timeout`; a resolver
//! that never answers.
//!
//! Run: `cargo test --test dns_faults -- --nocapture` (prints each row's time).

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;

use common::dkim::{SignSpec, sign};
use common::dns::{Forgery, ForgeryKind};
use common::e2e::{Instance, REPLY_TIMEOUT, Settings, Smtp, reason_of, send_mail};
use common::keys::Key;
use common::mail::{Mail, STD_H};
use common::{Vars, World};

/// The ministry's SPF name and its DKIM key name (selector `s2024`).
const SPF_NAME: &str = "interieur.gouv.fr";
const KEY_NAME: &str = "s2024._domainkey.interieur.gouv.fr";
/// The corpus zone's SPF record for the ministry.
const SPF: &str = "v=spf1 ip4:127.0.0.25 include:_spf.shared.example -all";
/// RFC 1035's UDP limit, as a server or middlebox without EDNS applies it.
const CLASSIC_UDP: usize = 512;

/// What a row's reply must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// `250`, the challenge confirmed.
    Confirms,
    /// A `451` temperror, the challenge pending.
    Temporary,
    /// A `5xx` with this reason, the challenge pending.
    Permanent(&'static str),
}

/// Which reply alice sends.
#[derive(Clone, Copy, Debug)]
enum Signed {
    /// Signed by the ministry's corpus key (selector `s2024`, RSA 2048).
    Corpus,
    /// Signed by a 4096-bit RSA key published at `k4096._domainkey`.
    Rsa4096,
}

struct Row {
    name: &'static str,
    /// `dns.timeout` and `dns.check_timeout`.
    timeouts: (&'static str, &'static str),
    signed: Signed,
    /// Turns the fault on, after the challenge was claimed.
    fault: fn(&World),
    want: Want,
    /// The reply comes within this (generous: a loaded 2-core machine).
    within: Duration,
    /// Some queries went over TCP.
    tcp: bool,
    /// Forged answers were sent (the fault really happened).
    forged: bool,
}

fn row(name: &'static str, fault: fn(&World), want: Want) -> Row {
    Row {
        name,
        timeouts: ("2s", "10s"),
        signed: Signed::Corpus,
        fault,
        want,
        within: Duration::from_secs(10),
        tcp: false,
        forged: false,
    }
}

impl Row {
    fn timeouts(mut self, timeout: &'static str, check: &'static str, within: u64) -> Row {
        self.timeouts = (timeout, check);
        self.within = Duration::from_secs(within);
        self
    }
    fn signed(mut self, signed: Signed) -> Row {
        self.signed = signed;
        self
    }
    fn tcp(mut self) -> Row {
        self.tcp = true;
        self
    }
    fn forged(mut self) -> Row {
        self.forged = true;
        self
    }
}

/// The 4096-bit key, generated once per test binary.
fn rsa4096() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(|| Key::generate("rsa 4096"))
}

/// Forged answers first, the genuine one 200 ms later.
fn forge_ahead(world: &World, kind: ForgeryKind) {
    world.dns.set_delay(Duration::from_millis(200));
    world.dns.set_forgery(Some(Forgery { kind, only: false }));
}

/// Forged answers only.
fn forge_only(world: &World, kind: ForgeryKind) {
    world.dns.set_forgery(Some(Forgery { kind, only: true }));
}

/// `count` TXT records at the SPF name, `spf` of them SPF records (the corpus one).
fn many_txt(world: &World, count: usize, spf: usize) {
    world.dns.remove(SPF_NAME, "TXT");
    for i in 0..count - spf {
        world
            .dns
            .add(SPF_NAME, "TXT", &format!("site-verification=filler-{i:03}"));
    }
    for _ in 0..spf {
        world.dns.add(SPF_NAME, "TXT", SPF);
    }
}

fn rows() -> Vec<Row> {
    use ForgeryKind::*;
    vec![
        row(
            "4096-bit DKIM key over a 512-octet UDP limit: TCP",
            |w| w.dns.set_udp_limit(Some(CLASSIC_UDP)),
            Want::Confirms,
        )
        .signed(Signed::Rsa4096)
        .tcp(),
        row(
            "long SPF record over a 512-octet UDP limit: TCP",
            |w| {
                let mut spf = String::from("v=spf1");
                for i in 1..=60 {
                    spf.push_str(&format!(" ip4:10.0.{i}.0/24"));
                }
                spf.push_str(" ip4:127.0.0.25 include:_spf.shared.example -all");
                assert!(spf.len() > 2 * CLASSIC_UDP, "{}", spf.len());
                w.dns.replace(SPF_NAME, "TXT", &spf);
                w.dns.set_udp_limit(Some(CLASSIC_UDP));
            },
            Want::Confirms,
        )
        .tcp(),
        row(
            "wrong ID ahead of the answer: ignored",
            |w| forge_ahead(w, WrongId),
            Want::Confirms,
        )
        .forged(),
        row(
            "answer from another port ahead of the answer: ignored",
            |w| forge_ahead(w, OtherSource),
            Want::Confirms,
        )
        .forged(),
        row(
            "answer for another name ahead of the answer: ignored",
            |w| forge_ahead(w, OtherName),
            Want::Confirms,
        )
        .forged(),
        // hickory 0.26 ends the query on a datagram with the right ID that does not parse
        // (src/dns.rs, "Malformed answers"): the genuine answer comes too late, the verdict
        // is temporary, never permanent.
        row(
            "malformed answer ahead of the answer: temporary",
            |w| forge_ahead(w, Malformed),
            Want::Temporary,
        )
        .forged(),
        row(
            "only wrong IDs: temporary",
            |w| forge_only(w, WrongId),
            Want::Temporary,
        )
        .timeouts("1s", "3s", 6)
        .forged(),
        row(
            "only answers from another port: temporary",
            |w| forge_only(w, OtherSource),
            Want::Temporary,
        )
        .timeouts("1s", "3s", 6)
        .forged(),
        row(
            "only answers for another name: temporary",
            |w| forge_only(w, OtherName),
            Want::Temporary,
        )
        .timeouts("1s", "3s", 6)
        .forged(),
        row(
            "only malformed answers: temporary",
            |w| forge_only(w, Malformed),
            Want::Temporary,
        )
        .timeouts("1s", "3s", 6)
        .forged(),
        row(
            "100 TXT records, one of them SPF: pass (over TCP)",
            |w| many_txt(w, 100, 1),
            Want::Confirms,
        )
        .tcp(),
        row(
            "100 TXT records, two of them SPF: permerror (RFC 7208 4.5)",
            |w| many_txt(w, 100, 2),
            Want::Permanent("spf.permerror"),
        )
        .tcp(),
        row(
            "CNAME loop at the DKIM key name: temporary",
            |w| {
                w.dns.remove(KEY_NAME, "TXT");
                w.dns.add(KEY_NAME, "CNAME", "loop.interieur.gouv.fr");
                w.dns.add("loop.interieur.gouv.fr", "CNAME", KEY_NAME);
            },
            Want::Temporary,
        ),
        row(
            "CNAME loop at the SPF name: temporary",
            |w| {
                w.dns.remove(SPF_NAME, "TXT");
                w.dns.add(SPF_NAME, "CNAME", "loop.interieur.gouv.fr");
                w.dns.add("loop.interieur.gouv.fr", "CNAME", SPF_NAME);
            },
            Want::Temporary,
        ),
        row(
            "every answer after 90 % of dns.timeout: pass",
            |w| w.dns.set_delay(Duration::from_millis(900)),
            Want::Confirms,
        )
        .timeouts("1s", "30s", 30),
        row(
            "a resolver that never answers: 451 within dns.check_timeout",
            |w| w.dns.drop_name(""),
            Want::Temporary,
        )
        .timeouts("1s", "3s", 5),
    ]
}

/// Alice's reply, signed as the row says.
fn message(signed: Signed, vars: &Vars) -> Vec<u8> {
    match signed {
        Signed::Corpus => Mail::alice().build(vars),
        Signed::Rsa4096 => {
            let plain = Mail::alice().sigs(vec![]).build(vars);
            let text = String::from_utf8(plain).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let headers: Vec<String> = head.split("\r\n").map(str::to_owned).collect();
            let spec = SignSpec::new("interieur.gouv.fr", "k4096", "rsa-sha256", STD_H);
            let field = sign(rsa4096(), &spec, &headers, body.as_bytes());
            let mut all = vec![field];
            all.extend(headers);
            common::corpus::assemble(&all, body)
        }
    }
}

/// One row against a daemon of its own: the failures found (empty: the row holds).
async fn run(world: &World, row: &Row) -> Vec<String> {
    world.reset_dns();
    world.dns.set_delay(Duration::ZERO);
    world.dns.add(
        "k4096._domainkey.interieur.gouv.fr",
        "TXT",
        &format!("v=DKIM1; k=rsa; p={}", rsa4096().public_b64()),
    );
    let settings = Settings {
        dns_timeout: row.timeouts.0.into(),
        dns_check_timeout: row.timeouts.1.into(),
        ..Settings::default()
    };
    let d = Instance::start(world.dns.addr, &settings).await;
    let (status, body) = d.api.claim("alice@interieur.gouv.fr").await;
    assert_eq!(status, 201, "{}: POST /v1/challenges: {body}", row.name);
    let id = body["id"].as_str().unwrap().to_string();
    let mail = d.layout.challenge_mail(&id);
    let mut vars = Vars::new(Utc::now(), 1);
    vars.token = mail.token;
    vars.challenge_msgid = mail.message_id;
    vars.session_code = body["session_code"].as_str().unwrap().to_string();
    let message = message(row.signed, &vars);

    let (tcp_before, forged_before) = (world.dns.tcp_queries(), world.dns.forged());
    (row.fault)(world);
    let alice = Mail::alice();
    let ip: IpAddr = alice.client_ip.parse().unwrap();
    let mut smtp = Smtp::connect(ip, d.smtp).await.expect("connect");
    let port = smtp.local.port();
    let rcpt = format!("confirm+{}@verify.example.gouv.fr", vars.token);
    let t = Instant::now();
    let reply = send_mail(&mut smtp, &alice.helo, &alice.mail_from, &rcpt, &message).await;
    let took = t.elapsed();
    smtp.quit().await;
    let (tcp, forged) = (
        world.dns.tcp_queries() - tcp_before,
        world.dns.forged() - forged_before,
    );
    world.reset_dns();
    world.dns.set_delay(Duration::ZERO);

    let mut failures = Vec::new();
    let mut fail = |what: String| failures.push(format!("{}: {what}", row.name));
    let Some(reply) = reply else {
        fail(format!("no reply after {took:?}"));
        d.running.stop().await;
        return failures;
    };
    let _ = writeln!(
        std::io::stderr(),
        "{:<64} {} after {took:?} ({tcp} TCP queries, {forged} forged answers)",
        row.name,
        reply.code
    );
    let ok = match row.want {
        Want::Confirms => reply.code == 250,
        Want::Temporary => reply.code == 451,
        Want::Permanent(_) => (500..600).contains(&reply.code),
    };
    if !ok {
        fail(format!("got {reply}, want {:?}", row.want));
    }
    if took > row.within {
        fail(format!("{took:?}, more than {:?}", row.within));
    }
    if row.tcp && tcp == 0 {
        fail("no query went over TCP".into());
    }
    if row.forged && forged == 0 {
        fail("no forged answer was sent".into());
    }
    let status = d.api.show(&id).await["status"].clone();
    let want_status = if row.want == Want::Confirms {
        "confirmed"
    } else {
        "pending"
    };
    if status != want_status {
        fail(format!("challenge {status}, want {want_status}"));
    }
    // The session's last event, written shortly after the reply: a bounded wait.
    let events = d
        .events
        .wait_client(ip, port, REPLY_TIMEOUT, |evs| !evs.is_empty())
        .await;
    match events.last() {
        None => fail("no audit event".into()),
        Some(ev) => {
            if let Some(problem) = event_mismatch(ev, row.want) {
                fail(format!("{problem}: {ev}"));
            }
        }
    }
    d.running.stop().await;
    failures
}

/// What is wrong with the session's event for `want`, if anything.
fn event_mismatch(ev: &Value, want: Want) -> Option<String> {
    let action = ev["event"]["action"].as_str().unwrap_or_default();
    let reason = reason_of(ev);
    let ok = match want {
        Want::Confirms => action == "confirmation-accepted",
        Want::Temporary => action == "confirmation-deferred" && reason.ends_with("temperror"),
        Want::Permanent(r) => action == "confirmation-rejected" && reason == r,
    };
    (!ok).then(|| format!("event {action} {reason}, want {want:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_faults_table() {
    let started = Instant::now();
    let _ = rsa4096();
    let world = World::start().await;
    let mut failures = Vec::new();
    for row in rows() {
        failures.extend(run(&world, &row).await);
    }
    let _ = writeln!(
        std::io::stderr(),
        "dns faults: {:?} in all",
        started.elapsed()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
