//! Probes end to end over SMTP (SPEC §10), nothing faked but the test world's DNS: the
//! in-process daemon, its store, API, SIEM file and SMTP listener.
//!
//! `POST /v1/probes` → a mail to `probe+<token>@…` → `250 2.0.0 analysed` → `GET
//! /v1/probes/{id}` shows every check, what a confirmation would get and the override that
//! would fix it; a `probe-analysed` event. A probe never confirms anything: not a challenge
//! of the same person, even with that challenge's whole reply sent to the probe address, and
//! neither token works under the other's prefix. Probes are rate-limited.
//!
//! Run: `cargo test --test probes`.

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use common::e2e::{Instance, Reply, Settings, Smtp, send_mail};
use common::mail::Mail;
use common::{Vars, World};

const DOMAIN: &str = "verify.example.gouv.fr";

/// A new probe: its id and its token (from the address the API gives).
async fn probe(i: &Instance) -> (String, String) {
    let (status, body) = i.api.probe().await;
    assert_eq!(status, 201, "POST /v1/probes: {body}");
    let address = body["address"].as_str().unwrap();
    let token = address
        .strip_prefix("probe+")
        .and_then(|t| t.strip_suffix(&format!("@{DOMAIN}")))
        .unwrap_or_else(|| panic!("probe address shape: {address}"))
        .to_string();
    assert!(body["expires_at"].is_string(), "{body}");
    (body["id"].as_str().unwrap().to_string(), token)
}

/// Deliver `mail` to `rcpt` on its own session; QUIT; returns the session and final reply.
async fn deliver(i: &Instance, mail: &Mail, vars: &Vars, rcpt: &str) -> (Smtp, Option<Reply>) {
    let ip: IpAddr = mail.client_ip.parse().unwrap();
    let mut smtp = Smtp::connect(ip, i.smtp).await.expect("connect");
    let reply = send_mail(
        &mut smtp,
        &mail.helo,
        &mail.mail_from,
        rcpt,
        &mail.build(vars),
    )
    .await;
    smtp.quit().await;
    (smtp, reply)
}

/// Alice's mail addressed to the probe (signed To carries the probe address).
fn to_probe(mail: Mail) -> Mail {
    mail.set("To", &format!("To: <probe+{{TOKEN}}@{DOMAIN}>"))
}

fn check<'a>(report: &'a Value, name: &str) -> &'a str {
    report["analysis"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["result"].as_str())
        .unwrap_or_else(|| panic!("no check {name}: {report}"))
}

/// The probe-analysed event of a session (bounded wait).
async fn probe_event(i: &Instance, smtp: &Smtp) -> Value {
    let evs = i
        .events
        .wait_client(
            smtp.local.ip(),
            smtp.local.port(),
            Duration::from_secs(2),
            |evs| evs.iter().any(|e| e["event"]["action"] == "probe-analysed"),
        )
        .await;
    evs.into_iter()
        .find(|e| e["event"]["action"] == "probe-analysed")
        .unwrap_or_else(|| panic!("no probe-analysed event"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_analyses_and_never_confirms() {
    let world = World::start().await;
    let i = Instance::start(world.dns.addr, &Settings::default()).await;

    // 1. A genuine mail from the ministry's MTA: would confirm. Binding checks reported.
    let (id, token) = probe(&i).await;
    let shown = i.api.show_probe(&id).await;
    assert_eq!(shown["status"], "waiting", "{shown}");
    let mut vars = Vars::new(Utc::now(), 1);
    vars.token = token.clone();
    let rcpt = format!("probe+{token}@{DOMAIN}");
    let (smtp, reply) = deliver(&i, &to_probe(Mail::alice()), &vars, &rcpt).await;
    let reply = reply.expect("a reply after DATA");
    assert_eq!(reply.code, 250, "{reply}");
    assert!(reply.text.contains("2.0.0 analysed"), "{reply}");
    let shown = i.api.show_probe(&id).await;
    assert_eq!(shown["status"], "analysed", "{shown}");
    assert_eq!(shown["analyses"], 1, "{shown}");
    let report = &shown["report"];
    assert_eq!(report["analysis"]["would_get"], "confirmed", "{report}");
    assert_eq!(check(report, "spf"), "pass");
    assert_eq!(check(report, "dkim"), "pass");
    assert_eq!(check(report, "binding.mismatch"), "not_required");
    assert_eq!(check(report, "binding.session_code"), "not_required");
    assert_eq!(check(report, "binding.not_a_reply"), "not_required");
    assert_eq!(
        check(report, "binding.token_unsigned"),
        "ok",
        "the probe token is in the signed To"
    );
    assert!(
        !shown.to_string().contains("\"evidence\""),
        "a probe keeps no evidence"
    );
    let ev = probe_event(&i, &smtp).await;
    assert_eq!(ev["event"]["outcome"], "success", "{ev}");
    let to = ev["email"]["to"]["address"].to_string();
    assert!(
        to.contains("probe+[redacted]@"),
        "token redacted in the event: {ev}"
    );
    assert!(
        !ev.to_string().contains(&token),
        "the token is never in an event"
    );

    // 2. The same mail from a host outside the SPF record: analysed (250), would get
    //    spf.fail, and the override that fixes it (DKIM passes, so SPF may be waived).
    let mut vars2 = Vars::new(Utc::now(), 2);
    vars2.token = token.clone();
    let stray = to_probe(Mail::alice()).via("127.0.0.99", "stray.example");
    let (smtp, reply) = deliver(&i, &stray, &vars2, &rcpt).await;
    assert_eq!(reply.expect("reply").code, 250);
    let shown = i.api.show_probe(&id).await;
    assert_eq!(shown["analyses"], 2, "{shown}");
    let a = &shown["report"]["analysis"];
    assert_eq!(a["would_get"], "spf.fail", "{a}");
    assert!(
        a["reply"].as_str().unwrap().starts_with("550 5.7.23"),
        "{a}"
    );
    let snippet = a["fix"]["snippet"]
        .as_str()
        .unwrap_or_else(|| panic!("a fix: {a}"));
    assert_eq!(
        snippet,
        "[policy.domains.\"interieur.gouv.fr\"]\nrequire_spf = false\n"
    );
    let ev = probe_event(&i, &smtp).await;
    assert_eq!(ev["event"]["reason"], "spf.fail", "{ev}");

    // 3. Alice's pending challenge: her whole genuine reply (token, code, In-Reply-To) sent
    //    to the probe address is analysed, and the challenge stays pending.
    let (status, body) = i.api.claim("alice@interieur.gouv.fr").await;
    assert_eq!(status, 201, "{body}");
    let cid = body["id"].as_str().unwrap().to_string();
    let mail = i.layout.challenge_mail(&cid);
    let mut cv = Vars::new(Utc::now(), 3);
    cv.token = mail.token.clone();
    cv.challenge_msgid = mail.message_id.clone();
    cv.session_code = body["session_code"].as_str().unwrap().to_string();
    let (_, reply) = deliver(&i, &Mail::alice(), &cv, &rcpt).await;
    assert_eq!(reply.expect("reply").code, 250);
    assert_eq!(i.api.show(&cid).await["status"], "pending");
    // The probe token under the confirmation prefix names no challenge…
    let (_, reply) = deliver(
        &i,
        &Mail::alice(),
        &vars,
        &format!("confirm+{token}@{DOMAIN}"),
    )
    .await;
    let reply = reply.expect("reply");
    assert_eq!(reply.code, 550, "{reply}");
    // …and the challenge token under the probe prefix names no probe.
    let (_, reply) = deliver(
        &i,
        &Mail::alice(),
        &cv,
        &format!("probe+{}@{DOMAIN}", mail.token),
    )
    .await;
    assert_eq!(reply.expect("reply").code, 550);
    assert_eq!(i.api.show(&cid).await["status"], "pending");
    // The challenge still confirms with its own reply.
    let (_, reply) = deliver(
        &i,
        &Mail::alice(),
        &cv,
        &format!("confirm+{}@{DOMAIN}", mail.token),
    )
    .await;
    assert_eq!(reply.expect("reply").code, 250);
    assert_eq!(i.api.show(&cid).await["status"], "confirmed");

    // 4. Unknown probe id.
    let missing = i.api.show_probe("nosuchprobe").await;
    assert_eq!(missing["error"], "challenge.not_found", "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_rate_limited() {
    let world = World::start().await;
    let settings = Settings {
        max_pending: 2,
        ..Settings::default()
    };
    let i = Instance::start(world.dns.addr, &settings).await;
    probe(&i).await;
    probe(&i).await;
    let (status, body) = i.api.probe().await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "challenge.rate_limited", "{body}");
}

/// `gatekeeper probe new|show` (the real binary, on the running daemon's store): the same
/// probe and report as the API, as lines or as the API's JSON; the CLI's probes count against
/// the same rate limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_cli_new_and_show() {
    let world = World::start().await;
    let settings = Settings {
        max_pending: 2,
        ..Settings::default()
    };
    let i = Instance::start(world.dns.addr, &settings).await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .args(args)
            .arg("-c")
            .arg(&i.layout.config)
            .output()
            .expect("run gatekeeper");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // new --json: the API's body.
    let (code, out, err) = cli(&["probe", "new", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let created: Value = serde_json::from_str(&out).expect("JSON");
    let id = created["id"].as_str().unwrap().to_string();
    let address = created["address"].as_str().unwrap().to_string();
    let token = address
        .strip_prefix("probe+")
        .and_then(|t| t.strip_suffix(&format!("@{DOMAIN}")))
        .unwrap_or_else(|| panic!("probe address shape: {address}"))
        .to_string();
    assert!(created["expires_at"].is_string(), "{created}");
    assert_eq!(i.api.show_probe(&id).await["status"], "waiting");

    // new as lines.
    let (code, out, _) = cli(&["probe", "new"]);
    assert_eq!(code, Some(0), "{out}");
    for key in ["id: ", "address: probe+", "expires_at: "] {
        assert!(out.lines().any(|l| l.starts_with(key)), "{key} in {out}");
    }
    // A third is past max_pending = 2, counted with the API's.
    let (code, out, _) = cli(&["probe", "new"]);
    assert_eq!(code, Some(1));
    assert_eq!(out, "rejected challenge.rate_limited\n");

    // show before any mail.
    let (code, out, _) = cli(&["probe", "show", &id]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("id: {id}\nstatus: waiting\n")),
        "{out}"
    );
    assert!(out.contains("analyses: 0\n"), "{out}");

    // A mail to the probe; show gives the analysis.
    let mut vars = Vars::new(Utc::now(), 1);
    vars.token = token.clone();
    let (_, reply) = deliver(&i, &to_probe(Mail::alice()), &vars, &address).await;
    assert_eq!(reply.expect("a reply").code, 250);
    let (code, out, _) = cli(&["probe", "show", &id]);
    assert_eq!(code, Some(0), "{out}");
    for want in [
        "status: analysed\n",
        "analyses: 1\n",
        "would_get: confirmed\n",
        "reply: 250 2.0.0",
        "checks:\n",
        "  spf: pass\n",
        "  dkim: pass\n",
    ] {
        assert!(out.contains(want), "{want:?} in {out}");
    }
    assert!(!out.contains(&token), "the token is not shown by show");
    let (code, out, _) = cli(&["probe", "show", &id, "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let shown: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(shown, i.api.show_probe(&id).await, "the API's body");

    // An unknown id.
    let (code, out, err) = cli(&["probe", "show", "nosuchprobe"]);
    assert_eq!(code, Some(1));
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("no probe nosuchprobe"), "{err}");
}
