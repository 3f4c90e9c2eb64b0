//! Real ministry mail over SMTP on loopback (issue 15): the shapes Exchange and Outlook
//! write on replies people send must confirm, Exchange's automatic replies must not, and a
//! refusal must carry a French and an English explanation and the session reference.
//!
//! Each test starts the whole daemon (`e2e::Instance`) on the corpus DNS world, claims a
//! challenge for Alice through the API, and sends her reply through a real SMTP session.
//!
//! Run: `cargo test --test ministry_mail`.

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use common::e2e::{Instance, Reply, Settings, Smtp, reason_of, send_mail};
use common::mail::Mail;
use common::{Vars, World};

const ALICE: &str = "alice@interieur.gouv.fr";

/// The world, the daemon, and a counter for message numbers.
struct Bench {
    world: World,
    inst: Instance,
    n: u32,
}

impl Bench {
    async fn start() -> Bench {
        let world = World::start().await;
        let inst = Instance::start(world.dns.addr, &Settings::default()).await;
        Bench {
            world,
            inst,
            n: 1000,
        }
    }

    /// A fresh challenge for Alice: its id and the placeholders its reply takes.
    async fn claim(&mut self) -> (String, Vars) {
        self.n += 1;
        let (status, body) = self.inst.api.claim(ALICE).await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().expect("id").to_string();
        let challenge = self.inst.layout.challenge_mail(&id);
        let mut vars = Vars::new(Utc::now(), self.n);
        vars.token = challenge.token.clone();
        vars.challenge_msgid = challenge.message_id.clone();
        vars.session_code = body["session_code"].as_str().expect("code").to_string();
        (id, vars)
    }

    /// Send `mail` as the reply to the challenge of `vars`; the final reply and the client's
    /// address (to find its audit event).
    async fn send(&self, mail: &Mail, vars: &Vars) -> (Reply, SocketAddr) {
        let message = mail.build(vars);
        let ip: std::net::IpAddr = mail.client_ip.parse().expect("ip");
        let mut smtp = Smtp::connect(ip, self.inst.smtp).await.expect("connect");
        let rcpt = format!("confirm+{}@verify.example.gouv.fr", vars.token);
        let reply = send_mail(&mut smtp, &mail.helo, &mail.mail_from, &rcpt, &message)
            .await
            .expect("a final reply");
        smtp.quit().await;
        (reply, smtp.local)
    }

    /// The last audit event of the session from `local`.
    async fn event(&self, local: SocketAddr) -> Value {
        let evs = self
            .inst
            .events
            .wait_client(local.ip(), local.port(), Duration::from_secs(3), |evs| {
                !evs.is_empty()
            })
            .await;
        evs.last().cloned().unwrap_or_default()
    }
}

/// The fields Exchange / Outlook add to a reply a person writes ([MS-OXCMAIL] §2.2.3.2 for
/// Thread-Index, Thread-Topic, X-MS-Has-Attach, X-MS-TNEF-Correlator; Content-Language is
/// RFC 3282; X-Auto-Response-Suppress is [MS-OXCMAIL] §2.2.3.2.20), as they appear in
/// Exchange-relayed mail.
fn exchange(mail: Mail) -> Mail {
    mail.push("Thread-Topic: Confirmation de votre adresse")
        .push("Thread-Index: AQHbSGx1c2VyLWV4YW1wbGUtdGhyZWFkLWluZGV4")
        .push("X-MS-Has-Attach:")
        .push("X-MS-TNEF-Correlator:")
        .push("Content-Language: fr-FR")
        .push("X-Auto-Response-Suppress: All")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_reply_confirms_and_oof_does_not() {
    let mut b = Bench::start().await;

    // A reply a person wrote in Outlook: X-Auto-Response-Suppress alone is no marker.
    let (id, vars) = b.claim().await;
    let (reply, _) = b.send(&exchange(Mail::alice()), &vars).await;
    assert_eq!(reply.code, 250, "{reply}");
    assert_eq!(b.inst.api.show(&id).await["status"], "confirmed");

    // Exchange's automatic reply carries Auto-Submitted as well: refused, still pending.
    let (id, vars) = b.claim().await;
    let oof = exchange(Mail::alice()).push("Auto-Submitted: auto-replied");
    let (reply, local) = b.send(&oof, &vars).await;
    assert_eq!(reply.code, 550, "{reply}");
    assert_eq!(reason_of(&b.event(local).await), "message.auto_submitted");
    assert_eq!(b.inst.api.show(&id).await["status"], "pending");

    // Every other legacy marker stays one, with or without the suppress header.
    for marker in ["X-Autoreply: yes", "Precedence: auto_reply"] {
        let (id, vars) = b.claim().await;
        let (reply, local) = b.send(&exchange(Mail::alice()).push(marker), &vars).await;
        assert_eq!(reply.code, 550, "{marker}: {reply}");
        assert_eq!(reason_of(&b.event(local).await), "message.auto_submitted");
        assert_eq!(b.inst.api.show(&id).await["status"], "pending");
    }
    drop(b.world);
}

/// A refusal after MAIL is a multi-line reply: short text, French, English, `ref <session
/// id>` of the audit event; the challenge shows the same reason and explanation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_explanations_and_a_reference() {
    use gatekeeper::reason::Reason;
    let mut b = Bench::start().await;

    // Permanent (the session code left out) and temporary (DKIM key unreachable).
    let no_code = Mail::alice().body("Je confirme.\r\n");
    let rows: Vec<(Mail, Reason, u16, bool)> = vec![
        (no_code, Reason::BindingSessionCode, 550, false),
        (Mail::alice(), Reason::DkimTemperror, 451, true),
    ];
    for (mail, reason, code, servfail) in rows {
        let (id, vars) = b.claim().await;
        if servfail {
            b.world.dns.servfail("s2024._domainkey.interieur.gouv.fr");
        }
        let (reply, local) = b.send(&mail, &vars).await;
        b.world.reset_dns();
        assert_eq!(reply.code, code, "{reason}: {reply}");
        let event = b.event(local).await;
        assert_eq!(reason_of(&event), reason.as_str());
        let session = event["gatekeeper"]["session_id"]
            .as_str()
            .expect("session id");

        let e = reason.explanation();
        let enh = reason.reply().enhanced;
        let lines: Vec<&str> = reply.text.lines().collect();
        assert_eq!(
            lines,
            vec![
                format!("{enh} {}", reason.reply().text),
                format!("{enh} FR: {}", e.fr),
                format!("{enh} EN: {}", e.en),
                format!("{enh} ref {session}"),
            ],
            "{reply}"
        );
        // Nothing of the challenge's secrets in what the bounce will quote.
        assert!(!reply.text.contains(&vars.token), "{reply}");
        assert!(!reply.text.contains(&vars.session_code), "{reply}");

        let shown = b.inst.api.show(&id).await;
        assert_eq!(shown["status"], "pending");
        if code >= 500 {
            let last = &shown["last_rejection"];
            assert_eq!(last["reason"], reason.as_str(), "{shown}");
            assert_eq!(last["explanation"]["fr"], e.fr);
            assert_eq!(last["explanation"]["en"], e.en);
            assert!(last["at"].is_string(), "{shown}");
        } else {
            // A 4xx is retried by the sender's server: not a refused reply of the person.
            assert!(shown["last_rejection"].is_null(), "{shown}");
        }
    }

    // Before MAIL nobody's bounce quotes the reply: it stays the one-line table reply.
    let mut smtp = Smtp::connect("127.0.0.25".parse().unwrap(), b.inst.smtp)
        .await
        .expect("connect");
    smtp.read_reply().await.expect("greeting");
    let r = smtp
        .cmd("RCPT TO:<x@verify.example.gouv.fr>")
        .await
        .expect("reply");
    assert_eq!(r.code, 503, "{r}");
    assert_eq!(r.text.lines().count(), 1, "{r}");
    smtp.quit().await;
}
