//! The whole product flow of issue 5, nothing faked: the in-process daemon with its real store,
//! outbox, SIEM file, HTTP API and SMTP listener; only the DNS of the test world is the test's.
//!
//! POST a challenge → read the challenge mail from the outbox → reply signed as the ministry
//! (from 127.0.0.25), quoting the challenge's Message-ID, the session code, the token address
//! in the signed To → `250` → `GET` shows `confirmed` with its evidence. Then the rules around
//! it: a used token, an idempotent redelivery, an expired challenge, a reply without the
//! session code, a DNS outage (451, still pending, then success), and `gatekeeper verify` on
//! the accepted reply and on an attacker's mail.
//!
//! Run: `cargo test --test flow`.

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use gatekeeper::daemon::Running;
use serde_json::Value;

use common::e2e::{
    self, Api, Events, Instance, Layout, Reply, Settings, Smtp, reason_of, send_mail,
};
use common::mail::{Mail, Sig};
use common::{Vars, World};

struct Flow {
    world: World,
    layout: Layout,
    api: Api,
    events: Events,
    smtp: SocketAddr,
    running: Running,
    _tmp: tempfile::TempDir,
}

impl Flow {
    async fn start() -> Flow {
        let world = World::start().await;
        let Instance {
            tmp,
            layout,
            running,
            api,
            events,
            smtp,
        } = Instance::start(world.dns.addr, &Settings::default()).await;
        Flow {
            api,
            events,
            smtp,
            world,
            layout,
            running,
            _tmp: tmp,
        }
    }

    /// A challenge for `address`, and the placeholders of a reply to it, from the API answer
    /// and the challenge mail in the outbox (the only place the token goes).
    async fn challenge(&self, address: &str, n: u32) -> (String, Vars) {
        let (status, body) = self.api.claim(address).await;
        assert_eq!(status, 201, "POST /v1/challenges: {body}");
        assert_eq!(body["status"], "pending", "{body}");
        assert_eq!(body["address"], address, "{body}");
        let id = body["id"].as_str().unwrap().to_string();
        let mail = self.layout.challenge_mail(&id);
        assert!(
            !body.to_string().contains(&mail.token),
            "the API answer carries the token"
        );
        assert!(
            mail.text.contains(&format!("\r\nTo: {address}"))
                || mail.text.contains(&format!("<{address}>")),
            "the challenge mail goes to {address}:\n{}",
            mail.text
        );
        let mut vars = Vars::new(Utc::now(), n);
        vars.token = mail.token;
        vars.challenge_msgid = mail.message_id;
        vars.session_code = body["session_code"].as_str().unwrap().to_string();
        (id, vars)
    }

    /// Deliver `mail` on a new session from its host; QUIT; the session is closed on return.
    async fn deliver(&self, mail: &Mail, vars: &Vars) -> (Smtp, Option<Reply>) {
        self.deliver_bytes(mail, vars, &mail.build(vars)).await
    }

    async fn deliver_bytes(&self, mail: &Mail, vars: &Vars, bytes: &[u8]) -> (Smtp, Option<Reply>) {
        let ip: IpAddr = mail.client_ip.parse().unwrap();
        let mut smtp = Smtp::connect(ip, self.smtp).await.expect("connect");
        let rcpt = format!("confirm+{}@verify.example.gouv.fr", vars.token);
        let reply = send_mail(&mut smtp, &mail.helo, &mail.mail_from, &rcpt, bytes).await;
        smtp.quit().await;
        (smtp, reply)
    }

    /// The refusal events of a session, once they cover its refusal replies (bounded wait).
    async fn refusal_events(&self, smtp: &Smtp) -> Vec<Value> {
        let want = smtp.refusals();
        let evs = self
            .events
            .wait_client(
                smtp.local.ip(),
                smtp.local.port(),
                Duration::from_secs(2),
                |evs| evs.iter().filter(|e| e2e::is_refusal(e)).count() >= want,
            )
            .await;
        evs.into_iter().filter(e2e::is_refusal).collect()
    }

    /// The session was refused exactly once, for `reason`, with the table's reply code.
    async fn assert_refused(&self, smtp: &Smtp, reply: Option<&Reply>, reason: &str) {
        let r = reason.parse::<gatekeeper::reason::Reason>().unwrap();
        let reply = reply.unwrap_or_else(|| panic!("no reply; expected {reason}"));
        assert_eq!(reply.code, r.reply().code, "{reply}; expected {reason}");
        let evs = self.refusal_events(smtp).await;
        let reasons: Vec<String> = evs.iter().map(reason_of).collect();
        assert_eq!(reasons, vec![reason.to_string()], "events of the session");
    }

    fn config_path(&self) -> &Path {
        &self.layout.config
    }
}

/// Run `gatekeeper verify` (the real binary) on a message file.
async fn run_verify(
    config: &Path,
    client_ip: &str,
    helo: &str,
    mail_from: &str,
    rcpt: &str,
    eml: &Path,
) -> (i32, Value) {
    let args: Vec<String> = vec![
        "verify".into(),
        "-c".into(),
        config.display().to_string(),
        "--client-ip".into(),
        client_ip.into(),
        "--helo".into(),
        helo.into(),
        "--mail-from".into(),
        mail_from.into(),
        "--rcpt".into(),
        rcpt.into(),
        eml.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .args(&args)
            .output()
            .expect("run gatekeeper verify")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmation_flow() {
    let f = Flow::start().await;

    // 1. The genuine reply confirms, with its evidence.
    let (id, vars) = f.challenge("alice@interieur.gouv.fr", 1).await;
    let alice = Mail::alice();
    let message = alice.build(&vars);
    let (smtp, reply) = f.deliver_bytes(&alice, &vars, &message).await;
    let reply = reply.expect("a reply after DATA");
    assert_eq!(reply.code, 250, "{reply}");
    assert!(reply.text.contains("2.0.0"), "{reply}");
    let shown = f.api.show(&id).await;
    assert_eq!(shown["status"], "confirmed", "{shown}");
    assert!(shown["confirmed_at"].is_string(), "{shown}");
    let ev = &shown["evidence"];
    assert_eq!(ev["client_ip"], "127.0.0.25", "{ev}");
    assert_eq!(ev["helo"], "smtp.interieur.gouv.fr", "{ev}");
    assert_eq!(ev["mail_from"], "alice@interieur.gouv.fr", "{ev}");
    assert_eq!(ev["from"], "alice@interieur.gouv.fr", "{ev}");
    assert_eq!(ev["dkim_domain"], "interieur.gouv.fr", "{ev}");
    assert_eq!(ev["dkim_selector"], "s2024", "{ev}");
    assert_eq!(ev["dkim_algorithm"], "rsa-sha256", "{ev}");
    assert_eq!(ev["spf"], "pass", "{ev}");
    let msgid = ev["message_id"].as_str().unwrap_or_default();
    assert!(msgid.contains(&vars.msgid), "{ev}");
    assert!(ev["date"].is_string(), "{ev}");
    assert!(
        !shown.to_string().contains(&vars.token),
        "token in the API answer"
    );
    let accepted = f
        .events
        .wait_client(
            smtp.local.ip(),
            smtp.local.port(),
            Duration::from_secs(2),
            |e| {
                e.iter()
                    .any(|e| e["event"]["action"] == "confirmation-accepted")
            },
        )
        .await;
    assert_eq!(
        accepted.len(),
        1,
        "one accepted event, no refusal: {accepted:?}"
    );
    assert_eq!(accepted[0]["gatekeeper"]["challenge_id"], id.as_str());

    // 2. The same token with another message: used.
    let mut other_vars = vars.clone();
    other_vars.msgid = format!("{}.other", vars.msgid);
    let (smtp, reply) = f.deliver(&alice, &other_vars).await;
    f.assert_refused(&smtp, reply.as_ref(), "token.used").await;

    // 3. The first message again, its session long closed: 250 again (a lost 250, SPEC §4).
    let (_, reply) = f.deliver_bytes(&alice, &vars, &message).await;
    assert_eq!(reply.map(|r| r.code), Some(250), "idempotent redelivery");
    assert_eq!(f.api.show(&id).await["status"], "confirmed");

    // 4. `gatekeeper verify` on the accepted reply (exit 0), and on an attacker's mail (1).
    let dir = f.layout.dir.clone();
    let eml = dir.join("accepted.eml");
    std::fs::write(&eml, &message).unwrap();
    let rcpt = format!("confirm+{}@verify.example.gouv.fr", vars.token);
    let (code, json) = run_verify(
        f.config_path(),
        "127.0.0.25",
        "smtp.interieur.gouv.fr",
        "alice@interieur.gouv.fr",
        &rcpt,
        &eml,
    )
    .await;
    assert_eq!(
        (code, json["decision"].as_str()),
        (0, Some("accept")),
        "{json}"
    );
    // The attacker writes Alice's reply and signs it with their own key, from their server.
    let attacker = Mail::alice()
        .via("127.0.0.66", "mail.evil.example")
        .sigs(vec![Sig::with(
            "evil-rsa2048",
            "evil.example",
            "sel",
            "rsa-sha256",
        )]);
    let evil = dir.join("attacker.eml");
    std::fs::write(&evil, attacker.build(&vars)).unwrap();
    let (code, json) = run_verify(
        f.config_path(),
        "127.0.0.66",
        "mail.evil.example",
        "alice@interieur.gouv.fr",
        &rcpt,
        &evil,
    )
    .await;
    assert_eq!(
        (code, json["decision"].as_str()),
        (1, Some("reject")),
        "{json}"
    );
    assert_eq!(json["reason"], "spf.fail", "{json}");

    // 5. A reply without the session code: refused, still pending, one rejection counted.
    let (id2, vars2) = f.challenge("alice@interieur.gouv.fr", 2).await;
    let no_code = Mail::alice().body("Je confirme que cette adresse est bien la mienne.\r\n");
    let (smtp, reply) = f.deliver(&no_code, &vars2).await;
    f.assert_refused(&smtp, reply.as_ref(), "binding.session_code")
        .await;
    let shown = f.api.show(&id2).await;
    assert_eq!(shown["status"], "pending", "{shown}");
    assert_eq!(shown["rejections"], 1, "{shown}");

    // 6. DNS SERVFAIL for the ministry's domain: 451, nothing counted, still pending; once
    //    the DNS is back, the same reply confirms.
    f.world.dns.servfail("interieur.gouv.fr");
    let mut vars2b = vars2.clone();
    vars2b.msgid = format!("{}.b", vars2.msgid);
    let retry = Mail::alice().build(&vars2b);
    let (smtp, reply) = f.deliver_bytes(&Mail::alice(), &vars2b, &retry).await;
    let reply = reply.expect("a reply");
    assert_eq!(reply.code, 451, "{reply}");
    let evs = f.refusal_events(&smtp).await;
    assert_eq!(evs.len(), 1, "{evs:?}");
    let reason = reason_of(&evs[0]);
    assert!(
        ["spf.temperror", "dkim.temperror", "dns.temperror"].contains(&reason.as_str()),
        "{reason}"
    );
    let spf_check = evs[0]["gatekeeper"]["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "spf"))
        .cloned()
        .unwrap_or(Value::Null);
    assert!(spf_check.to_string().contains("temperror"), "{spf_check}");
    let shown = f.api.show(&id2).await;
    assert_eq!(shown["status"], "pending", "{shown}");
    assert_eq!(shown["rejections"], 1, "a 451 counts no rejection: {shown}");
    f.world.reset_dns();
    let (_, reply) = f.deliver_bytes(&Mail::alice(), &vars2b, &retry).await;
    assert_eq!(reply.map(|r| r.code), Some(250), "after the DNS recovered");
    assert_eq!(f.api.show(&id2).await["status"], "confirmed");

    // 7. Expiry: the challenge's expiry moved into the past in the store file itself.
    let (id3, vars3) = f.challenge("alice@interieur.gouv.fr", 3).await;
    {
        let db = rusqlite::Connection::open(&f.layout.store).unwrap();
        db.busy_timeout(Duration::from_secs(5)).unwrap();
        let past = Utc::now().timestamp_millis() - 1000;
        let n = db
            .execute(
                "UPDATE challenges SET expires_at = ?1 WHERE id = ?2",
                rusqlite::params![past, id3],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let (smtp, reply) = f.deliver(&Mail::alice(), &vars3).await;
    f.assert_refused(&smtp, reply.as_ref(), "token.expired")
        .await;
    let shown = f.api.show(&id3).await;
    assert_eq!(shown["status"], "expired", "{shown}");

    // 8. What the run did shows in /metrics: sessions, verdicts, DNS-bound check latency.
    let metrics = f.api.metrics().await;
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{metrics}"))
    };
    assert!(value("gatekeeper_smtp_sessions_total ") >= 5.0, "{metrics}");
    assert!(
        value("gatekeeper_verdicts_total{reason=\"accepted\"}") >= 3.0,
        "{metrics}"
    );
    assert!(
        value("gatekeeper_verdicts_total{reason=\"token.used\"}") >= 1.0,
        "{metrics}"
    );
    assert!(
        value("gatekeeper_dns_lookup_seconds_count ") >= 15.0,
        "{metrics}"
    );

    // 9. A refusal counted just before a stop: the count is not awaited by the session, the
    //    stop writes it (read from the file, not through the API's read-your-writes).
    let (id4, vars4) = f.challenge("alice@interieur.gouv.fr", 4).await;
    let (smtp, reply) = f.deliver(&no_code, &vars4).await;
    f.assert_refused(&smtp, reply.as_ref(), "binding.session_code")
        .await;
    f.running.stop().await;
    let db = rusqlite::Connection::open(&f.layout.store).unwrap();
    let counted: i64 = db
        .query_row(
            "SELECT rejections FROM challenges WHERE id = ?1",
            [&id4],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(counted, 1, "the stop wrote the gathered count");
}
