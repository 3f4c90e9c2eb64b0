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
