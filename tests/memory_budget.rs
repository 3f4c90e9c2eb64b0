//! `smtp.max_buffered_bytes`, the bytes of DATA all sessions hold together (SPEC §5, issue 17).
//!
//! - The pure session against a small budget: what it reserves at DATA, that a complete
//!   message keeps its reservation until the verdict, and that every way out of DATA (verdict,
//!   refusal at the end, timeout, shutdown, the session dropped as on a disconnect) gives it
//!   back; a DATA past the budget gets `452 4.3.1 smtp.busy` and keeps its transaction.
//! - The real daemon over loopback sockets with a budget of three 64 KiB messages: four
//!   sessions in the middle of DATA, the fourth refused with the reason and its SIEM event, the
//!   challenge untouched in the store; a new DATA accepted once one message ends, and once a
//!   client goes away mid-DATA.
//!
//! Run: `cargo test --test memory_budget`.

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatekeeper::backend::RcptOutcome;
use gatekeeper::reason::Reason;
use gatekeeper::smtp::budget::MemoryBudget;
use gatekeeper::smtp::{Input, Output, Session, SessionSettings, TimeoutKind};

use common::World;
use common::e2e::{Instance, Settings, Smtp, reason_of};
use common::transcript::{GOOD, MAX_MESSAGE, info, now, settings, verdict};

// ---------------------------------------------------------------------------------------------
// The pure session: reserve and release on each path.

/// A session whose settings count DATA in `budget`.
fn session_in(budget: &MemoryBudget) -> Session {
    let settings = SessionSettings {
        budget: budget.clone(),
        ..settings()
    };
    Session::new(Arc::new(settings), info())
}

/// Feed `input`; answer a recipient check at once (token `good` is live); keep a delivery
/// pending (returned) so a test can look at the budget before the verdict.
fn feed(s: &mut Session, input: Input<'_>) -> (Vec<String>, Vec<Reason>, Option<Output>) {
    let mut replies = Vec::new();
    let mut reasons = Vec::new();
    let mut delivery = None;
    let mut queue: Vec<Output> = s.handle(input, now());
    while !queue.is_empty() {
        let mut next = Vec::new();
        for output in queue {
            match output {
                Output::Reply(r) => replies.push(String::from_utf8_lossy(&r).into_owned()),
                Output::Audit(e) => reasons.extend(e.reason),
                Output::CheckRecipient(_) => next.extend(s.handle(
                    Input::RcptChecked(RcptOutcome::Accept {
                        challenge_id: "ch-good".into(),
                    }),
                    now(),
                )),
                deliver @ Output::Deliver(_) => delivery = Some(deliver),
                Output::StartTls | Output::Close => {}
            }
        }
        queue = next;
    }
    (replies, reasons, delivery)
}

fn bytes(s: &mut Session, text: &str) -> (Vec<String>, Vec<Reason>, Option<Output>) {
    feed(s, Input::Bytes(text.as_bytes()))
}

/// EHLO, MAIL, RCPT accepted; then DATA's reply code.
fn open_data(s: &mut Session) -> u16 {
    feed(s, Input::Connected);
    bytes(
        s,
        &format!("EHLO mx.gouv.fr\r\nMAIL FROM:<alice@interieur.gouv.fr>\r\nRCPT TO:<{GOOD}>\r\n"),
    );
    let (replies, _, _) = bytes(s, "DATA\r\n");
    code(&replies)
}

fn code(replies: &[String]) -> u16 {
    replies
        .last()
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Octets reserved at DATA in these settings (the whole message: it is under a chunk).
const FIRST: usize = MAX_MESSAGE;

#[test]
fn every_way_out_of_data_gives_the_reservation_back() {
    let body = "From: alice@interieur.gouv.fr\r\n\r\nhello\r\n";
    let long = "x".repeat(900) + "\r\n";
    // (name, what ends the DATA, held just after it, held after the verdict if one is due)
    type End = fn(&mut Session, &str, &str) -> Option<Output>;
    let cases: &[(&str, End, usize)] = &[
        (
            "end of data: held until the verdict",
            |s, body, _| bytes(s, &format!("{body}.\r\n")).2,
            FIRST,
        ),
        (
            "too large: refused at the end",
            |s, _, long| {
                let (replies, reasons, d) = bytes(s, &format!("{}.\r\n", long.repeat(5)));
                assert_eq!(
                    (code(&replies), reasons),
                    (552, vec![Reason::MessageTooLarge])
                );
                d
            },
            0,
        ),
        (
            "smuggling: refused at the end",
            |s, _, _| bytes(s, "a\n.\nMAIL FROM:<x@y.gouv.fr>\r\n.\r\n").2,
            0,
        ),
        (
            "timeout mid-DATA",
            |s, body, _| {
                bytes(s, body);
                feed(s, Input::Timeout(TimeoutKind::Data)).2
            },
            0,
        ),
        (
            "shutdown mid-DATA",
            |s, body, _| {
                bytes(s, body);
                feed(s, Input::Shutdown).2
            },
            0,
        ),
    ];
    for (name, end, held) in cases {
        let budget = MemoryBudget::new(10 * FIRST);
        let mut s = session_in(&budget);
        assert_eq!(open_data(&mut s), 354, "{name}");
        assert_eq!(budget.used(), FIRST, "{name}: reserved at DATA");
        let delivery = end(&mut s, body, &long);
        assert_eq!(budget.used(), *held, "{name}: after the end of DATA");
        if let Some(Output::Deliver(tx)) = delivery {
            let v = verdict(&tx);
            drop(tx);
            let (replies, _, _) = feed(&mut s, Input::Verdict(Box::new(v)));
            assert_eq!(code(&replies), 250, "{name}");
        }
        assert_eq!(budget.used(), 0, "{name}: after the verdict");
    }

    // The peer going away mid-DATA: the driver drops the session with its state.
    let budget = MemoryBudget::new(10 * FIRST);
    let mut s = session_in(&budget);
    assert_eq!(open_data(&mut s), 354);
    bytes(&mut s, body);
    drop(s);
    assert_eq!(budget.used(), 0, "disconnect mid-DATA");
}

#[test]
fn a_data_past_the_budget_gets_452_and_keeps_its_transaction() {
    let budget = MemoryBudget::new(2 * FIRST);
    let mut first = session_in(&budget);
    let mut second = session_in(&budget);
    let mut third = session_in(&budget);
    assert_eq!(open_data(&mut first), 354);
    assert_eq!(open_data(&mut second), 354);
    feed(&mut third, Input::Connected);
    bytes(
        &mut third,
        &format!("EHLO mx.gouv.fr\r\nMAIL FROM:<alice@interieur.gouv.fr>\r\nRCPT TO:<{GOOD}>\r\n"),
    );
    let (replies, reasons, _) = bytes(&mut third, "DATA\r\n");
    assert_eq!(
        reasons,
        vec![Reason::SmtpBusy],
        "one audit event, its reason"
    );
    let text = replies.concat();
    assert!(
        text.starts_with("452-4.3.1 too many messages in progress"),
        "{text}"
    );
    assert!(text.contains("EN: The service is receiving too many messages at once"));
    assert_eq!(budget.used(), 2 * FIRST, "the refused DATA holds nothing");
    // A temporary refusal is not a client error: no count toward smtp.max_errors.
    for _ in 0..10 {
        let (_, reasons, _) = bytes(&mut third, "DATA\r\n");
        assert_eq!(reasons, vec![Reason::SmtpBusy]);
    }
    assert!(!third.is_closed());
    drop(first);
    let (replies, reasons, _) = bytes(&mut third, "DATA\r\n");
    assert_eq!(
        (code(&replies), reasons),
        (354, vec![]),
        "room again: same transaction"
    );
    assert_eq!(budget.used(), 2 * FIRST);
    drop((second, third));
    assert_eq!(budget.used(), 0);
}

// ---------------------------------------------------------------------------------------------
// The daemon over loopback sockets.

const K64: usize = 64 * 1024;
const WAIT: Duration = Duration::from_secs(10);

/// One client mid-transaction with its challenge.
struct Client {
    smtp: Smtp,
    id: String,
}

async fn client(inst: &Instance, n: usize) -> Client {
    let address = format!("agent{n}@interieur.gouv.fr");
    let (status, body) = inst.api.claim(&address).await;
    assert_eq!(status, 201, "POST /v1/challenges: {body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let token = inst.layout.challenge_mail(&id).token;
    let source: IpAddr = "127.0.0.25".parse().unwrap();
    let mut smtp = Smtp::connect(source, inst.smtp).await.unwrap();
    assert_eq!(smtp.read_reply().await.map(|r| r.code), Some(220));
    for (line, want) in [
        ("EHLO mx.interieur.gouv.fr".to_owned(), 250),
        (format!("MAIL FROM:<{address}>"), 250),
        (
            format!("RCPT TO:<confirm+{token}@verify.example.gouv.fr>"),
            250,
        ),
    ] {
        let reply = smtp.cmd(&line).await;
        assert_eq!(
            reply.as_ref().map(|r| r.code),
            Some(want),
            "{line}: {reply:?}"
        );
    }
    Client { smtp, id }
}

/// 30 KiB of body: well inside DATA, under the 64 KiB every DATA reserves.
fn part_of_a_message() -> Vec<u8> {
    let mut body = b"From: x@interieur.gouv.fr\r\nSubject: large\r\n\r\n".to_vec();
    let line = format!("{}\r\n", "y".repeat(998));
    for _ in 0..30 {
        body.extend_from_slice(line.as_bytes());
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_sessions_mid_data_under_a_budget_of_three() {
    let world = World::start().await;
    let settings = Settings {
        smtp_extra: format!(
            "max_message_bytes = {K64}\nmax_buffered_bytes = {}\n",
            3 * K64
        ),
        ..Settings::default()
    };
    let inst = Instance::start(world.dns.addr, &settings).await;
    let mut clients = Vec::new();
    for n in 0..4 {
        clients.push(client(&inst, n).await);
    }
    for c in clients.iter_mut().take(3) {
        assert_eq!(c.smtp.cmd("DATA").await.map(|r| r.code), Some(354));
        c.smtp.write(&part_of_a_message()).await.unwrap();
    }

    let fourth = clients.get_mut(3).unwrap();
    let before = inst.api.show(&fourth.id).await;
    let refused = fourth.smtp.cmd("DATA").await.expect("a reply to DATA");
    assert_eq!(
        (refused.code, refused.enhanced()),
        (452, Some("4.3.1")),
        "{refused}"
    );
    assert!(
        refused.text.contains("too many messages in progress"),
        "{refused}"
    );
    let port = fourth.smtp.local.port();
    let source = fourth.smtp.local.ip();
    let events = inst
        .events
        .wait_client(source, port, WAIT, |evs| {
            evs.iter().any(|e| reason_of(e) == "smtp.busy")
        })
        .await;
    let busy: Vec<_> = events
        .iter()
        .filter(|e| reason_of(e) == "smtp.busy")
        .collect();
    assert_eq!(busy.len(), 1, "one event for the refusal: {events:?}");
    assert_eq!(
        busy[0]["event"]["action"], "confirmation-deferred",
        "{:?}",
        busy[0]
    );
    let after = inst.api.show(&fourth.id).await;
    assert_eq!(
        before, after,
        "the refused DATA left its challenge as it was"
    );
    assert_eq!(after["status"], "pending", "{after}");

    // One message ends (its verdict, whatever it is, is not the point): room for the fourth.
    let first = clients.get_mut(0).unwrap();
    first.smtp.write(b"\r\n.\r\n").await.unwrap();
    let verdict = first.smtp.read_reply().await.expect("a verdict");
    assert!(verdict.code >= 250, "{verdict}");
    let fourth = clients.get_mut(3).unwrap();
    assert_eq!(fourth.smtp.cmd("DATA").await.map(|r| r.code), Some(354));
    fourth.smtp.write(&part_of_a_message()).await.unwrap();

    // Full again (second, third, fourth). A fifth session waits; the second goes away
    // mid-DATA and its share comes back: the fifth's DATA is accepted. The server learns of
    // the close asynchronously, so the fifth retries DATA (its transaction stays) for a while.
    let mut fifth = client(&inst, 4).await;
    let refused = fifth.smtp.cmd("DATA").await.map(|r| r.code);
    assert_eq!(refused, Some(452), "full again");
    drop(clients.remove(1));
    let deadline = Instant::now() + WAIT;
    let accepted = loop {
        match fifth.smtp.cmd("DATA").await.map(|r| r.code) {
            Some(354) => break true,
            Some(452) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => break false,
        }
    };
    assert!(accepted, "a DATA is accepted once a client left mid-DATA");
    fifth.smtp.write(b"\r\n.\r\n").await.unwrap();
    assert!(fifth.smtp.read_reply().await.is_some());

    for mut c in clients {
        c.smtp.quit().await;
    }
    fifth.smtp.quit().await;
    inst.running.stop().await;
}
