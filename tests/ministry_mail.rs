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
use common::mail::Sig;
use common::netns::{End, Namespace, veth};
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
        Bench::with_policy("").await
    }

    /// The daemon with `extra` appended to `[policy]` (per-domain overrides).
    async fn with_policy(extra: &str) -> Bench {
        let world = World::start().await;
        let settings = Settings {
            policy_extra: extra.to_string(),
            ..Settings::default()
        };
        let inst = Instance::start(world.dns.addr, &settings).await;
        Bench {
            world,
            inst,
            n: 1000,
        }
    }

    /// A fresh challenge for Alice: its id and the placeholders its reply takes.
    async fn claim(&mut self) -> (String, Vars) {
        self.claim_for(ALICE).await
    }

    /// A fresh challenge for `address`.
    async fn claim_for(&mut self, address: &str) -> (String, Vars) {
        self.n += 1;
        let (status, body) = self.inst.api.claim(address).await;
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

/// `MAIL FROM:<mail_from>` after EHLO from `ip`: the reply to MAIL, and the audit event of
/// the session when MAIL was refused.
async fn mail_from_only(b: &Bench, ip: &str, mail_from: &str) -> (Reply, Option<Value>) {
    let mut smtp = Smtp::connect(ip.parse().expect("ip"), b.inst.smtp)
        .await
        .expect("connect");
    smtp.read_reply().await.expect("greeting");
    smtp.cmd("EHLO smtp.example.gouv.fr").await.expect("ehlo");
    let r = smtp
        .cmd(&format!("MAIL FROM:<{mail_from}>"))
        .await
        .expect("reply to MAIL");
    smtp.quit().await;
    let event = if r.is_refusal() {
        Some(b.event(smtp.local).await)
    } else {
        None
    };
    (r, event)
}

/// The result of check `name` in an audit event's `gatekeeper.checks`.
fn check_of(event: &Value, name: &str) -> Option<String> {
    event["gatekeeper"]["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["result"].as_str())
        .map(str::to_string)
}

const BATV: &str = "prvs=4068eb2540=alice@interieur.gouv.fr";

/// A BATV-tagged envelope (SPEC §3 "Envelope tags") confirms with the override: both the raw
/// and the untagged sender are in the event and the evidence. Without the override, with the
/// other tag, or for a neighbour domain, MAIL is refused (`envelope.syntax`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_tag_on_off_and_neighbour() {
    let mut b =
        Bench::with_policy("[policy.domains.\"interieur.gouv.fr\"]\nenvelope_tag = \"batv\"\n")
            .await;

    let (id, vars) = b.claim().await;
    let (reply, local) = b.send(&Mail::alice().envelope(BATV), &vars).await;
    assert_eq!(reply.code, 250, "{reply}");
    let event = b.event(local).await;
    assert_eq!(event["email"]["sender"]["address"], ALICE, "{event}");
    assert_eq!(event["gatekeeper"]["mail_from_tagged"], BATV, "{event}");
    assert_eq!(
        check_of(&event, "envelope.mismatch").as_deref(),
        Some("ok"),
        "{event}"
    );
    let shown = b.inst.api.show(&id).await;
    assert_eq!(shown["status"], "confirmed", "{shown}");
    assert_eq!(shown["evidence"]["mail_from"], ALICE, "{shown}");
    assert_eq!(shown["evidence"]["mail_from_tagged"], BATV, "{shown}");

    // An untagged reply of the same domain still confirms, with no tagged sender.
    let (id, vars) = b.claim().await;
    let (reply, local) = b.send(&Mail::alice(), &vars).await;
    assert_eq!(reply.code, 250, "{reply}");
    assert!(b.event(local).await["gatekeeper"]["mail_from_tagged"].is_null());
    assert!(b.inst.api.show(&id).await["evidence"]["mail_from_tagged"].is_null());

    // The override names one shape: Barracuda's, a broken tag, and the reversed form stay
    // refused; so does the same tag for a neighbour domain without the override.
    // The event names the shape check that refused it.
    for (ip, sender, detail) in [
        (
            "127.0.0.25",
            "btv1==1086afe1179==alice@interieur.gouv.fr",
            "bad_char",
        ),
        (
            "127.0.0.25",
            "prvs=4068eb25=alice@interieur.gouv.fr",
            "batv_tag",
        ),
        (
            "127.0.0.25",
            "prvs=alice=4068eb2540@interieur.gouv.fr",
            "batv_reversed",
        ),
        (
            "127.0.0.50",
            "prvs=4068eb2540=mallory@ville.gouv.fr",
            "bad_char",
        ),
    ] {
        let (r, event) = mail_from_only(&b, ip, sender).await;
        assert_eq!(r.code, 553, "{sender}: {r}");
        let event = event.expect("event");
        assert_eq!(reason_of(&event), "envelope.syntax", "{sender}");
        assert_eq!(event["message"], format!("address: {detail}"), "{event}");
    }

    // Off: the same daemon without the override refuses the tagged sender at MAIL.
    let off = Bench::start().await;
    let (r, event) = mail_from_only(&off, "127.0.0.25", BATV).await;
    assert_eq!(r.code, 553, "{r}");
    assert_eq!(reason_of(&event.expect("event")), "envelope.syntax");
    drop(off.world);
    drop(b.world);
}

/// Barracuda's `btv1==…==` tag with its own override.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barracuda_tag_confirms_with_its_override() {
    let mut b =
        Bench::with_policy("[policy.domains.\"interieur.gouv.fr\"]\nenvelope_tag = \"btv1\"\n")
            .await;
    let tagged = "btv1==1086afe1179==alice@interieur.gouv.fr";
    let (id, vars) = b.claim().await;
    let (reply, local) = b.send(&Mail::alice().envelope(tagged), &vars).await;
    assert_eq!(reply.code, 250, "{reply}");
    assert_eq!(
        b.event(local).await["gatekeeper"]["mail_from_tagged"],
        tagged
    );
    assert_eq!(b.inst.api.show(&id).await["status"], "confirmed");
    let (r, _) = mail_from_only(&b, "127.0.0.25", BATV).await;
    assert_eq!(r.code, 553, "{r}");
    drop(b.world);
}

const TENANT: &str = "interieur.onmicrosoft.com";

/// The ministry's signature made by its Microsoft 365 tenant: `d=interieur.onmicrosoft.com`
/// (the corpus key of the ministry, published under the tenant's selector).
fn tenant_signed(b: &Bench, mail: Mail) -> Mail {
    let key = common::corpus::zone_records()
        .into_iter()
        .find(|r| r.name == "s2024._domainkey.interieur.gouv.fr" && r.rtype == "TXT")
        .expect("the ministry's key record");
    b.world
        .dns
        .add(&format!("selector1._domainkey.{TENANT}"), "TXT", &key.value);
    mail.sigs(vec![Sig::with(
        "gov-rsa2048",
        TENANT,
        "selector1",
        "rsa-sha256",
    )])
}

/// `dkim_domains` (SPEC §4 "Microsoft 365 tenants"): the tenant's signature confirms for the
/// ministry that lists it, and the event says `aligned_by_override`; without the override it
/// is `dkim.unaligned`, and a neighbour domain never gets the override.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_dkim_domain_on_off_and_neighbour() {
    let mut b = Bench::with_policy(&format!(
        "[policy.domains.\"interieur.gouv.fr\"]\ndkim_domains = [\"{TENANT}\"]\n"
    ))
    .await;

    let (id, vars) = b.claim().await;
    let (reply, local) = b.send(&tenant_signed(&b, Mail::alice()), &vars).await;
    assert_eq!(reply.code, 250, "{reply}");
    let event = b.event(local).await;
    assert_eq!(
        check_of(&event, "dkim").as_deref(),
        Some("aligned_by_override"),
        "{event}"
    );
    let shown = b.inst.api.show(&id).await;
    assert_eq!(shown["status"], "confirmed", "{shown}");
    assert_eq!(shown["evidence"]["dkim_domain"], TENANT, "{shown}");

    // The ministry's own signature is still a plain pass.
    let (_, vars) = b.claim().await;
    let (reply, local) = b.send(&Mail::alice(), &vars).await;
    assert_eq!(reply.code, 250, "{reply}");
    assert_eq!(
        check_of(&b.event(local).await, "dkim").as_deref(),
        Some("pass")
    );

    // Neighbour: ville.gouv.fr has no override; the tenant's signature is not its own.
    let (id, vars) = b.claim_for("mallory@ville.gouv.fr").await;
    let mallory = Mail::alice()
        .via("127.0.0.50", "smtp.ville.gouv.fr")
        .envelope("mallory@ville.gouv.fr")
        .set("From", "From: Mallory <mallory@ville.gouv.fr>")
        .set("Message-ID", "Message-ID: <{MSGID}@ville.gouv.fr>");
    let (reply, local) = b.send(&tenant_signed(&b, mallory), &vars).await;
    assert_eq!(reply.code, 550, "{reply}");
    let event = b.event(local).await;
    assert_eq!(
        check_of(&event, "dkim").as_deref(),
        Some("unaligned"),
        "{event}"
    );
    assert_eq!(reason_of(&event), "dkim.unaligned", "{event}");
    assert_eq!(b.inst.api.show(&id).await["status"], "pending");
    drop(b.world);

    // Off: without the override the same mail is unaligned.
    let mut off = Bench::start().await;
    let (id, vars) = off.claim().await;
    let (reply, local) = off.send(&tenant_signed(&off, Mail::alice()), &vars).await;
    assert_eq!(reply.code, 550, "{reply}");
    assert_eq!(reason_of(&off.event(local).await), "dkim.unaligned");
    assert_eq!(off.inst.api.show(&id).await["status"], "pending");
    drop(off.world);
}

/// `MAIL FROM: <addr>` (one SP after the colon) is tolerated; any other whitespace there is
/// `smtp.syntax` (501), never `envelope.syntax`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_after_mail_from_colon() {
    let b = Bench::start().await;
    let rows = [
        ("MAIL FROM: <alice@interieur.gouv.fr>", 250, None),
        (
            "MAIL FROM:  <alice@interieur.gouv.fr>",
            501,
            Some("smtp.syntax"),
        ),
        (
            "MAIL FROM:\t<alice@interieur.gouv.fr>",
            501,
            Some("smtp.syntax"),
        ),
        (
            "MAIL FROM: <alice @interieur.gouv.fr>",
            553,
            Some("envelope.syntax"),
        ),
    ];
    for (line, code, reason) in rows {
        let mut smtp = Smtp::connect("127.0.0.25".parse().unwrap(), b.inst.smtp)
            .await
            .expect("connect");
        smtp.read_reply().await.expect("greeting");
        smtp.cmd("EHLO smtp.interieur.gouv.fr").await.expect("ehlo");
        let r = smtp.cmd(line).await.expect("reply");
        smtp.quit().await;
        assert_eq!(r.code, code, "{line}: {r}");
        if let Some(reason) = reason {
            assert_eq!(reason_of(&b.event(smtp.local).await), reason, "{line}");
        }
    }
    drop(b.world);
}

/// The audit event lists `skipped` for checks that could not run: with an unreadable From
/// nothing can be aligned or bound; without a signature nothing binds the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_says_skipped_for_checks_that_could_not_run() {
    let mut b = Bench::start().await;
    // (mail, primary reason, checks skipped, other checks and their result)
    type Row = (
        Mail,
        &'static str,
        Vec<&'static str>,
        Vec<(&'static str, &'static str)>,
    );
    let rows: Vec<Row> = vec![
        (
            Mail::alice().set("From", "From: Alice <alice@evil.example@interieur.gouv.fr>"),
            "header.from_syntax",
            vec![
                "envelope.mismatch",
                "domain.not_allowed",
                "dkim",
                "binding.mismatch",
                "binding.token_unsigned",
                "binding.session_code",
                "date.stale",
            ],
            vec![("header.from_syntax", "fail"), ("spf", "pass")],
        ),
        (
            Mail::alice().sigs(vec![]),
            "dkim.none",
            vec![
                "binding.token_unsigned",
                "binding.session_code",
                "date.stale",
            ],
            vec![
                ("dkim", "none"),
                ("envelope.mismatch", "ok"),
                ("binding.mismatch", "ok"),
            ],
        ),
    ];
    for (mail, reason, skipped, others) in rows {
        let (_, vars) = b.claim().await;
        let (reply, local) = b.send(&mail, &vars).await;
        assert_eq!(reply.code, 550, "{reason}: {reply}");
        let event = b.event(local).await;
        assert_eq!(reason_of(&event), reason, "{event}");
        for name in &skipped {
            assert_eq!(
                check_of(&event, name).as_deref(),
                Some("skipped"),
                "{name}: {event}"
            );
        }
        for (name, result) in &others {
            assert_eq!(
                check_of(&event, name).as_deref(),
                Some(*result),
                "{name}: {event}"
            );
        }
    }
    drop(b.world);
}

/// Display names French administrations' clients write confirm over SMTP; an unquoted
/// comment or comma stays refused (`header.from_syntax`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_display_names() {
    let mut b = Bench::start().await;
    let rows = [
        (
            "From: \"MARTIN Alice (DGSI/SDSI)\" <alice@interieur.gouv.fr>",
            250,
        ),
        ("From: \"Martin, Alice\" <alice@interieur.gouv.fr>", 250),
        ("From: Alice M. Martin <alice@interieur.gouv.fr>", 250),
        (
            "From: MARTIN Alice (DGSI/SDSI) <alice@interieur.gouv.fr>",
            550,
        ),
        ("From: Martin, Alice <alice@interieur.gouv.fr>", 550),
        ("From: .Alice Martin <alice@interieur.gouv.fr>", 550),
    ];
    for (from, code) in rows {
        let (id, vars) = b.claim().await;
        let (reply, local) = b.send(&Mail::alice().set("From", from), &vars).await;
        assert_eq!(reply.code, code, "{from}: {reply}");
        let event = b.event(local).await;
        if code == 250 {
            assert_eq!(b.inst.api.show(&id).await["status"], "confirmed", "{from}");
        } else {
            assert_eq!(reason_of(&event), "header.from_syntax", "{from}: {event}");
        }
    }
    drop(b.world);
}

/// A network namespace joined to ours by one veth pair, as a ministry's MTA on its own
/// network: the host end `10.232.<t>.1/29` here, the client addresses `10.232.<t>.2`–`.6`
/// inside. Everything it created is removed on drop, also when the test fails
/// (`common::netns`).
struct Netns {
    ns: Namespace,
    t: u8,
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let id = std::process::id();
        let ns = Netns {
            ns: Namespace::create(&format!("gk-iprev-{id}"))?,
            t: u8::try_from(id % 250).unwrap_or(0) + 1,
        };
        // From here `ns` is dropped on any error, which removes what exists.
        let (host_if, peer_if) = (
            format!("gkh{}", id % 1_000_000),
            format!("gkp{}", id % 1_000_000),
        );
        let (host, first) = (format!("{}/29", ns.host()), format!("{}/29", ns.client(2)));
        veth(
            &End {
                ns: None,
                name: &host_if,
                addr: &host,
            },
            &End {
                ns: Some(&ns.ns),
                name: &peer_if,
                addr: &first,
            },
        )?;
        for n in 3..=6u8 {
            ns.ns.ip(&[
                "addr",
                "add",
                &format!("{}/29", ns.client(n)),
                "dev",
                &peer_if,
            ])?;
        }
        Ok(ns)
    }

    fn host(&self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, 232, self.t, 1)
    }

    fn client(&self, n: u8) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, 232, self.t, n)
    }

    /// Send `message` from `client(n)` inside the namespace (Python's smtplib under
    /// `ip netns exec`): the last reply and the client's port.
    async fn send(
        &self,
        n: u8,
        server: SocketAddr,
        mail: &Mail,
        rcpt: &str,
        message: Vec<u8>,
        dir: &std::path::Path,
    ) -> (Reply, u16) {
        let file = dir.join(format!("netns-message-{n}.eml"));
        std::fs::write(&file, message).expect("message file");
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/smtp_send.py");
        let args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            self.ns.name.clone(),
            "python3".into(),
            script.display().to_string(),
            server.ip().to_string(),
            server.port().to_string(),
            mail.helo.clone(),
            mail.mail_from.clone(),
            rcpt.to_string(),
            file.display().to_string(),
            self.client(n).to_string(),
        ];
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("ip").args(&args).output()
        })
        .await
        .expect("join")
        .expect("ip netns exec python3");
        assert!(
            out.status.success(),
            "smtp_send.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("smtp_send.py JSON");
        let reply = Reply {
            code: u16::try_from(v["code"].as_u64().unwrap_or(0)).unwrap_or(0),
            text: v["text"].as_str().unwrap_or_default().to_string(),
        };
        let port = u16::try_from(v["local_port"].as_u64().unwrap_or(0)).unwrap_or(0);
        (reply, port)
    }
}

/// `require_iprev` end to end (hickory answers `127.in-addr.arpa` itself, so loopback
/// clients never exercised it): the ministry's MTA sends from an address of a network
/// namespace whose PTR and A records are in the test DNS. Pass, PTR naming a host whose A
/// is another address (mismatch), no PTR, and a PTR lookup that fails (451).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iprev_for_real_from_a_network_namespace() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIPPED iprev_for_real_from_a_network_namespace: no ip netns ({why})");
            return;
        }
    };
    let world = World::start().await;
    let settings = Settings {
        smtp_host: ns.host().to_string(),
        policy_extra: "require_iprev = true\n".into(),
        ..Settings::default()
    };
    let inst = Instance::start(world.dns.addr, &settings).await;
    let mut b = Bench {
        world,
        inst,
        n: 1000,
    };
    let t = ns.t;
    let ptr = |n: u8| format!("{n}.{t}.232.10.in-addr.arpa");
    let dns = &b.world.dns;
    dns.replace(
        "interieur.gouv.fr",
        "TXT",
        &format!("v=spf1 ip4:10.232.{t}.0/29 -all"),
    );
    // .2: forward-confirmed. .3: its PTR names a host whose A is .2. .4: no PTR.
    // .5: the PTR lookup fails.
    dns.add(&ptr(2), "PTR", "mx-a.interieur.gouv.fr");
    dns.add("mx-a.interieur.gouv.fr", "A", &ns.client(2).to_string());
    dns.add(&ptr(3), "PTR", "mx-b.interieur.gouv.fr");
    dns.add("mx-b.interieur.gouv.fr", "A", &ns.client(2).to_string());
    dns.servfail(&ptr(5));

    let rows: [(u8, u16, &str, &str); 4] = [
        (2, 250, "", "pass"),
        (3, 550, "iprev.fail", "fail"),
        (4, 550, "iprev.fail", "fail"),
        (5, 451, "dns.temperror", "temperror"),
    ];
    for (n, code, reason, iprev) in rows {
        let (id, vars) = b.claim().await;
        let mail = Mail::alice();
        let rcpt = format!("confirm+{}@verify.example.gouv.fr", vars.token);
        let (reply, port) = ns
            .send(
                n,
                b.inst.smtp,
                &mail,
                &rcpt,
                mail.build(&vars),
                b.inst.tmp.path(),
            )
            .await;
        assert_eq!(reply.code, code, "client .{n}: {reply}");
        let client: std::net::IpAddr = ns.client(n).into();
        let evs = b
            .inst
            .events
            .wait_client(client, port, Duration::from_secs(3), |e| !e.is_empty())
            .await;
        let event = evs.last().cloned().unwrap_or_default();
        assert_eq!(
            check_of(&event, "iprev").as_deref(),
            Some(iprev),
            "client .{n}: {event}"
        );
        assert_eq!(
            check_of(&event, "spf").as_deref(),
            Some("pass"),
            "client .{n}: {event}"
        );
        if code == 250 {
            assert_eq!(b.inst.api.show(&id).await["status"], "confirmed");
        } else {
            assert_eq!(reason_of(&event), reason, "client .{n}: {event}");
            assert_eq!(b.inst.api.show(&id).await["status"], "pending");
        }
    }
    drop(b);
    drop(ns);
}
