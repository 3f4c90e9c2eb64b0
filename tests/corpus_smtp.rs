//! Every case of the public corpus (`tests/data/corpus/mails.json`) against the real daemon,
//! in-process (`gatekeeper::daemon::start`), over real SMTP and HTTP on loopback, exactly as
//! `/work/shared/corpus/README.md` describes: claim through the API, read the challenge mail
//! from the outbox, sign the reply with the test signer, send it from the case's host address,
//! and judge by the SMTP replies, the SIEM file and `GET /v1/challenges/{id}`.
//!
//! Besides the case's verdict, for every session: each 4xx/5xx reply the client saw has
//! exactly one audit event, in the same order, with the same reply code, and that code is the
//! one `src/reason.rs` gives the event's reason (SPEC I4, and one reply table).
//!
//! Run: `cargo test --test corpus_smtp -- --nocapture` (one `PASS id` / `FAIL id: why` line per
//! case).

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chrono::Utc;
use gatekeeper::reason::Reason;
use serde_json::Value;

use common::corpus::{self, Case};
use common::e2e::{
    self, Api, Events, Instance, Layout, Reply, Settings, Smtp, data_payload, raw_payload,
    reason_of,
};
use common::{Vars, World};

/// How long an audit event may take to reach the file (SPEC §6: within a second).
const EVENT_WAIT: Duration = Duration::from_secs(2);

/// The running test world: DNS, daemon, API, files.
struct Harness {
    world: World,
    layout: Layout,
    api: Api,
    events: Events,
    smtp: SocketAddr,
}

/// One SMTP session the case ran: the client's socket and its replies, for the final audit
/// recount.
struct Session {
    case: String,
    ip: IpAddr,
    port: u16,
    refusals: Vec<u16>,
    /// Reply codes and event reasons, for the PASS line.
    summary: String,
}

/// The three outcomes of the README.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Verdict {
    Accept,
    Reject,
    Tempfail,
    /// No decision reached (the session ended without a final reply and without a refusal).
    None,
}

fn verdict_of(replies: &[Reply], final_reply: Option<&Reply>) -> Verdict {
    if replies.iter().any(|r| r.code >= 500) {
        Verdict::Reject
    } else if replies.iter().any(|r| r.is_refusal()) {
        Verdict::Tempfail
    } else if final_reply.is_some_and(|r| (200..300).contains(&r.code)) {
        Verdict::Accept
    } else {
        Verdict::None
    }
}

fn str_field<'a>(raw: &'a Value, k: &str) -> Option<&'a str> {
    raw.get(k).and_then(Value::as_str)
}

impl Harness {
    /// Claim `address`; for a 201, read the challenge mail: `(id, session_code, mail)`.
    async fn claim_ok(
        &self,
        address: &str,
    ) -> Result<(String, String, e2e::ChallengeMail), String> {
        let (status, body) = self.api.claim(address).await;
        if status != 201 {
            return Err(format!(
                "claim {address:?}: expected 201, got {status} {body}"
            ));
        }
        let id = body["id"].as_str().ok_or("201 without id")?.to_string();
        let code = body["session_code"]
            .as_str()
            .ok_or("201 without session_code")?
            .to_string();
        if body.to_string().contains("token") {
            return Err(format!("the API answer names a token: {body}"));
        }
        let mail = self.layout.challenge_mail(&id);
        if body.to_string().contains(&mail.token) {
            return Err("the API answer carries the token".into());
        }
        Ok((id, code, mail))
    }

    async fn status(&self, id: &str) -> Value {
        self.api.show(id).await
    }

    /// Wait until the events of one client socket cover its refusals (and its acceptance).
    async fn session_events(&self, smtp: &Smtp, accepted: bool) -> Vec<Value> {
        let want = smtp.refusals();
        self.events
            .wait_client(smtp.local.ip(), smtp.local.port(), EVENT_WAIT, |evs| {
                let refused = evs.iter().filter(|e| e2e::is_refusal(e)).count();
                let acc = evs
                    .iter()
                    .any(|e| e["event"]["action"] == "confirmation-accepted");
                refused >= want && (!accepted || acc)
            })
            .await
    }
}

/// SPEC I4 and the reply table, for one session: the refusal events are exactly the client's
/// 4xx/5xx replies, in order, each with its reply code, each code the table's code for the
/// event's reason.
fn check_audit(smtp: &Smtp, events: &[Value]) -> Result<(), String> {
    let refusal_codes: Vec<u16> = smtp
        .replies
        .iter()
        .filter(|r| r.is_refusal())
        .map(|r| r.code)
        .collect();
    let refusal_events: Vec<&Value> = events.iter().filter(|e| e2e::is_refusal(e)).collect();
    let sessions: std::collections::BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["gatekeeper"]["session_id"].as_str())
        .collect();
    if sessions.len() > 1 || sessions.iter().any(|s| s.is_empty()) {
        return Err(format!("one client socket, session ids {sessions:?}"));
    }
    if refusal_events.len() != refusal_codes.len() {
        return Err(format!(
            "I4: {} refusal replies {:?}, {} refusal events {:?}",
            refusal_codes.len(),
            refusal_codes,
            refusal_events.len(),
            refusal_events
                .iter()
                .map(|e| reason_of(e))
                .collect::<Vec<_>>()
        ));
    }
    for (code, ev) in refusal_codes.iter().zip(&refusal_events) {
        let reason_text = reason_of(ev);
        let reason: Reason = reason_text
            .parse()
            .map_err(|_| format!("event with an unknown reason {reason_text:?}: {ev}"))?;
        if reason.reply().code != *code {
            return Err(format!(
                "reply {code} for reason {reason_text}, whose table code is {}",
                reason.reply().code
            ));
        }
        if reason.class() != e2e_class(*code) {
            return Err(format!("reply class of {code} differs from {reason_text}"));
        }
        let ev_code = ev["event"]["code"].as_str().unwrap_or_default();
        if ev_code != code.to_string() {
            return Err(format!(
                "event {reason_text} says code {ev_code:?}, the client got {code}"
            ));
        }
    }
    // The reply's enhanced code is the table's too.
    for (r, ev) in smtp
        .replies
        .iter()
        .filter(|r| r.is_refusal())
        .zip(&refusal_events)
    {
        if let Ok(reason) = reason_of(ev).parse::<Reason>()
            && let Some(enh) = r.enhanced()
            && enh != reason.reply().enhanced
        {
            return Err(format!(
                "reply {r} has enhanced code {enh}, the table says {} for {}",
                reason.reply().enhanced,
                reason.as_str()
            ));
        }
    }
    Ok(())
}

fn e2e_class(code: u16) -> gatekeeper::reason::Class {
    if (400..500).contains(&code) {
        gatekeeper::reason::Class::Temporary
    } else {
        gatekeeper::reason::Class::Permanent
    }
}

/// Run the normal dialogue (or the case's `smtp_script`) on one session; returns the session
/// and the reply after the end of DATA, if the dialogue got there.
async fn dialogue(
    h: &Harness,
    case: &Case,
    raw: &Value,
    vars: &Vars,
    message: &[u8],
) -> Result<(Smtp, Option<Reply>), String> {
    let ip: IpAddr = case
        .client_address
        .as_deref()
        .unwrap_or("127.0.0.66")
        .parse()
        .map_err(|e| format!("client_address: {e}"))?;
    let mut smtp = Smtp::connect(ip, h.smtp)
        .await
        .map_err(|e| format!("connect from {ip}: {e}"))?;
    let greeting = smtp.read_reply().await.ok_or("no greeting")?;
    if greeting.code != 220 {
        return Err(format!("greeting {greeting}"));
    }
    if let Some(script) = raw.get("smtp_script").and_then(Value::as_array) {
        for step in script {
            let text = vars.fill(step.as_str().unwrap_or_default());
            if smtp.write(text.as_bytes()).await.is_err() {
                break;
            }
            // One reply per CRLF-terminated line written (a bare LF does not end a line).
            let lines = text.matches("\r\n").count().max(1);
            for _ in 0..lines {
                if smtp
                    .read_reply_within(Duration::from_secs(3))
                    .await
                    .is_none()
                {
                    break;
                }
            }
            if smtp.closed {
                break;
            }
        }
        smtp.quit().await;
        return Ok((smtp, None));
    }

    let helo = case.helo.as_deref().unwrap_or("unknown");
    let mail_from = vars.fill(case.mail_from.as_deref().unwrap_or_default());
    let rcpts: Vec<String> = case.rcpt_to.iter().map(|r| vars.fill(r)).collect();
    let ehlo = smtp
        .cmd(&format!("EHLO {helo}"))
        .await
        .ok_or("no EHLO reply")?;
    if !ehlo.is_positive() {
        smtp.quit().await;
        return Ok((smtp, None));
    }
    let payload = if case.raw_data {
        raw_payload(message)
    } else {
        data_payload(message)
    };
    let pipelining = raw.get("pipelining").and_then(Value::as_bool) == Some(true);
    let mut final_reply = None;
    if pipelining {
        let mut batch = format!("MAIL FROM:{mail_from}\r\n");
        for r in &rcpts {
            batch.push_str(&format!("RCPT TO:{r}\r\n"));
        }
        batch.push_str("DATA\r\n");
        smtp.write(batch.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut last = None;
        for _ in 0..rcpts.len() + 2 {
            last = smtp.read_reply().await;
            if last.is_none() {
                break;
            }
        }
        if last.as_ref().map(|r| r.code) == Some(354) {
            smtp.write(&payload).await.map_err(|e| e.to_string())?;
            final_reply = smtp.read_reply().await;
        }
    } else {
        let r = smtp
            .cmd(&format!("MAIL FROM:{mail_from}"))
            .await
            .ok_or("no MAIL reply")?;
        if r.is_positive() {
            let mut any_rcpt = false;
            for rcpt in &rcpts {
                match smtp.cmd(&format!("RCPT TO:{rcpt}")).await {
                    Some(r) if r.is_positive() => any_rcpt = true,
                    Some(_) => {}
                    None => break,
                }
            }
            if any_rcpt && !smtp.closed {
                let r = smtp.cmd("DATA").await.ok_or("no DATA reply")?;
                if r.code == 354 {
                    smtp.write(&payload).await.map_err(|e| e.to_string())?;
                    final_reply = smtp.read_reply().await;
                }
            }
        }
    }
    smtp.quit().await;
    Ok((smtp, final_reply))
}

fn summary(smtp: &Smtp, events: &[Value]) -> String {
    let reasons: Vec<String> = events.iter().map(reason_of).collect();
    format!("replies {}; events {:?}", transcript(smtp), reasons)
}

fn transcript(smtp: &Smtp) -> String {
    smtp.replies
        .iter()
        .map(|r| r.code.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn outbox_len(layout: &Layout) -> usize {
    std::fs::read_dir(&layout.outbox)
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One case; `Ok(sessions)` when it passes.
async fn run_case(h: &Harness, case: &Case, raw: &Value, n: u32) -> Result<Vec<Session>, String> {
    let registration = str_field(raw, "claim_registration_expected").unwrap_or("accept");
    if registration == "refuse" {
        let outbox_before = outbox_len(&h.layout);
        let (status, body) = h.api.claim(&case.claimed_address).await;
        if outbox_len(&h.layout) != outbox_before {
            return Err("a refused claim wrote a challenge mail".into());
        }
        let error = body["error"].as_str().unwrap_or_default();
        if status != 422 {
            return Err(format!("claim: expected 422, got {status} {body}"));
        }
        if !case.spec_reasons.iter().any(|r| r == error) {
            return Err(format!(
                "claim refused with {error:?}, expected one of {:?}",
                case.spec_reasons
            ));
        }
        return Ok(Vec::new());
    }
    let (id, session_code, mail) = h.claim_ok(&case.claimed_address).await?;
    let second = match str_field(raw, "second_claim") {
        Some(addr) => Some(h.claim_ok(addr).await?),
        None => None,
    };

    let mut vars = Vars::new(Utc::now(), n);
    vars.token = mail.token.clone();
    vars.challenge_msgid = mail.message_id.clone();
    vars.session_code = session_code;
    if let Some((_, _, m)) = &second {
        vars.token_b = m.token.clone();
    }

    h.world.reset_dns();
    if let Some(o) = &case.dns_overrides {
        h.world.apply_overrides(o);
    }
    let message = corpus::message(case, &vars);
    let result = match case.id.as_str() {
        "TOKEN-12" => token_12(h, case, raw, &vars, &message, &id).await,
        _ => one_session(h, case, raw, &vars, &message, &id, second.as_ref()).await,
    };
    h.world.reset_dns();
    result
}

/// The usual case: one session, judged by its replies, its events and the challenge state.
async fn one_session(
    h: &Harness,
    case: &Case,
    raw: &Value,
    vars: &Vars,
    message: &[u8],
    id: &str,
    second: Option<&(String, String, e2e::ChallengeMail)>,
) -> Result<Vec<Session>, String> {
    let (smtp, final_reply) = dialogue(h, case, raw, vars, message).await?;
    let verdict = verdict_of(&smtp.replies, final_reply.as_ref());
    let accepted_data = final_reply
        .as_ref()
        .is_some_and(|r| (200..300).contains(&r.code));
    let events = h.session_events(&smtp, accepted_data).await;
    let session = Session {
        case: case.id.clone(),
        ip: smtp.local.ip(),
        port: smtp.local.port(),
        refusals: smtp
            .replies
            .iter()
            .filter(|r| r.is_refusal())
            .map(|r| r.code)
            .collect(),
        summary: summary(&smtp, &events),
    };
    check_audit(&smtp, &events).map_err(|e| format!("{e} (replies {})", transcript(&smtp)))?;
    let first_refusal_reason = events
        .iter()
        .find(|e| e2e::is_refusal(e))
        .map(reason_of)
        .unwrap_or_default();
    let state = h.status(id).await;
    let status = state["status"].as_str().unwrap_or_default().to_string();

    if case.id == "TOKEN-06" {
        // rcpt.too_many concerns TOKEN_B (bob's): the second RCPT gets 452, the mail is
        // evaluated for the first token only (and here accepted); TOKEN_B stays pending.
        let (id_b, _, _) = second.ok_or("TOKEN-06 without second_claim")?;
        let rcpt_replies: Vec<u16> = smtp.replies.iter().map(|r| r.code).collect();
        if first_refusal_reason != "rcpt.too_many" || !smtp.replies.iter().any(|r| r.code == 452) {
            return Err(format!(
                "second RCPT: expected 452 rcpt.too_many, replies {rcpt_replies:?}, event {first_refusal_reason:?}"
            ));
        }
        if !accepted_data || status != "confirmed" {
            return Err(format!(
                "the first token must be accepted: final {final_reply:?}, status {status}"
            ));
        }
        let b = h.status(id_b).await;
        if b["status"] != "pending" {
            return Err(format!("TOKEN_B must stay pending: {b}"));
        }
        return Ok(vec![session]);
    }

    let expected = match case.expected.as_str() {
        "accept" => Verdict::Accept,
        "reject" => Verdict::Reject,
        "tempfail" => Verdict::Tempfail,
        other => return Err(format!("unknown expected {other}")),
    };
    if verdict != expected {
        return Err(format!(
            "expected {expected:?}, got {verdict:?} (replies {}; first event reason {:?}; expected reasons {:?})",
            transcript(&smtp),
            first_refusal_reason,
            case.spec_reasons
        ));
    }
    match verdict {
        Verdict::Accept => {
            if status != "confirmed" {
                return Err(format!("250 but the challenge is {status}: {state}"));
            }
            let ev = &state["evidence"];
            for k in ["client_ip", "mail_from", "from", "message_id"] {
                if ev.get(k).is_none_or(Value::is_null) {
                    return Err(format!("evidence without {k}: {ev}"));
                }
            }
            if ev.to_string().contains(&vars.token) {
                return Err("the evidence carries the token".into());
            }
            if !events
                .iter()
                .any(|e| e["event"]["action"] == "confirmation-accepted")
            {
                return Err("accepted without a confirmation-accepted event".into());
            }
        }
        Verdict::Reject | Verdict::Tempfail => {
            if status == "confirmed" {
                return Err(format!("refused but the challenge is confirmed: {state}"));
            }
            if !case.spec_reasons.contains(&first_refusal_reason) {
                return Err(format!(
                    "primary reason {first_refusal_reason:?} not in {:?} (replies {})",
                    case.spec_reasons,
                    transcript(&smtp)
                ));
            }
        }
        Verdict::None => unreachable!(),
    }
    Ok(vec![session])
}

/// TOKEN-12: the same genuine message on two simultaneous sessions (both in DATA at once,
/// both open until both have their answer): exactly one `250`, the other `token.used`.
async fn token_12(
    h: &Harness,
    case: &Case,
    _raw: &Value,
    _vars: &Vars,
    message: &[u8],
    id: &str,
) -> Result<Vec<Session>, String> {
    let ip: IpAddr = case
        .client_address
        .as_deref()
        .unwrap_or_default()
        .parse()
        .unwrap();
    let helo = case.helo.as_deref().unwrap_or_default();
    let mail_from = case.mail_from.as_deref().unwrap_or_default();
    let rcpt = _vars.fill(&case.rcpt_to[0]);
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let mut s = Smtp::connect(ip, h.smtp).await.map_err(|e| e.to_string())?;
        s.read_reply().await.ok_or("no greeting")?;
        for cmd in [
            format!("EHLO {helo}"),
            format!("MAIL FROM:{mail_from}"),
            format!("RCPT TO:{rcpt}"),
        ] {
            let r = s.cmd(&cmd).await.ok_or("no reply")?;
            if !r.is_positive() {
                return Err(format!("{cmd}: {r}"));
            }
        }
        let r = s.cmd("DATA").await.ok_or("no DATA reply")?;
        if r.code != 354 {
            return Err(format!("DATA: {r}"));
        }
        sessions.push(s);
    }
    let payload = data_payload(message);
    let (mut a, mut b) = {
        let mut it = sessions.into_iter();
        (it.next().unwrap(), it.next().unwrap())
    };
    let (ra, rb) = tokio::join!(
        async {
            a.write(&payload).await.ok()?;
            a.read_reply().await
        },
        async {
            b.write(&payload).await.ok()?;
            b.read_reply().await
        }
    );
    let codes = [ra.map(|r| r.code), rb.map(|r| r.code)];
    a.quit().await;
    b.quit().await;
    let accepted = codes.iter().filter(|c| **c == Some(250)).count();
    let (winner, loser) = match codes {
        [Some(250), _] => (&a, &b),
        _ => (&b, &a),
    };
    if accepted != 1 {
        return Err(format!("expected exactly one 250, got {codes:?}"));
    }
    let loser_events = h.session_events(loser, false).await;
    let winner_events = h.session_events(winner, true).await;
    check_audit(loser, &loser_events)?;
    check_audit(winner, &winner_events)?;
    let reason = loser_events
        .iter()
        .find(|e| e2e::is_refusal(e))
        .map(reason_of)
        .unwrap_or_default();
    if reason != "token.used" || loser.replies.last().map(|r| r.code) == Some(250) {
        return Err(format!(
            "the other session: expected token.used, got {reason:?} (replies {})",
            transcript(loser)
        ));
    }
    let state = h.status(id).await;
    if state["status"] != "confirmed" {
        return Err(format!(
            "one 250 but the challenge is not confirmed: {state}"
        ));
    }
    Ok([winner, loser]
        .iter()
        .map(|s| Session {
            case: case.id.clone(),
            ip: s.local.ip(),
            port: s.local.port(),
            refusals: s
                .replies
                .iter()
                .filter(|r| r.is_refusal())
                .map(|r| r.code)
                .collect(),
            summary: transcript(s),
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_case_over_smtp() {
    corpus_over_smtp(Settings::default()).await;
}

/// The same corpus once on the PostgreSQL store (issue 14): same replies, same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_case_over_smtp_on_postgresql() {
    let cluster = common::postgres::Cluster::start();
    corpus_over_smtp(Settings {
        postgres: Some(cluster.config()),
        ..Settings::default()
    })
    .await;
}

async fn corpus_over_smtp(settings: Settings) {
    let world = World::start().await;
    let Instance {
        tmp: _tmp,
        layout,
        running,
        api,
        events,
        smtp,
    } = Instance::start(world.dns.addr, &settings).await;
    let h = Harness {
        world,
        api,
        events,
        smtp,
        layout,
    };

    let cases = corpus::cases();
    let raws: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(corpus::data_dir().join("mails.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cases.len(), raws.len());
    let mut failures = Vec::new();
    let mut sessions = Vec::new();
    let mut passed = 0;
    for (n, (case, raw)) in cases.iter().zip(&raws).enumerate() {
        match run_case(&h, case, raw, n as u32).await {
            Ok(s) => {
                let what: Vec<&str> = s.iter().map(|s| s.summary.as_str()).collect();
                println!("PASS {} {}", case.id, what.join(" / "));
                passed += 1;
                sessions.extend(s);
            }
            Err(why) => {
                println!("FAIL {}: {why}", case.id);
                failures.push(format!("{}: {why}", case.id));
            }
        }
    }

    // I4 once more over the whole file, after the SIEM had time to write everything: no
    // session got a late or duplicate event.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let all = h.events.all();
    let mut by_client: BTreeMap<(String, u64), Vec<&Value>> = BTreeMap::new();
    for e in &all {
        let ip = e["source"]["ip"].as_str().unwrap_or_default().to_string();
        let port = e["source"]["port"].as_u64().unwrap_or_default();
        by_client.entry((ip, port)).or_default().push(e);
    }
    for s in &sessions {
        let evs = by_client
            .get(&(s.ip.to_string(), u64::from(s.port)))
            .cloned()
            .unwrap_or_default();
        let codes: Vec<u16> = evs
            .iter()
            .filter(|e| e2e::is_refusal(e))
            .filter_map(|e| e["event"]["code"].as_str()?.parse().ok())
            .collect();
        if codes != s.refusals {
            failures.push(format!(
                "{}: I4 recount: replies {:?}, events {:?}",
                s.case, s.refusals, codes
            ));
        }
    }
    running.stop().await;
    println!("{passed}/{} corpus cases over SMTP", cases.len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
