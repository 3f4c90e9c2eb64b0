//! Published DKIM examples verified through the product's path (`Verifier::verify_message`:
//! our signature parse, mail-auth's cryptography, key size, alignment), with the key records
//! served by the in-process test DNS server.
//!
//! - `rfc8463-football.txt`: RFC 8463 Appendix A, one message signed twice, ed25519-sha256
//!   (`brisbane`) and rsa-sha256 with a 1024-bit key (`test`), `d=football.example.com`.
//! - `rfc6376-newengland.txt`: the RFC 6376 Appendix A message (`joe@football.example.com`,
//!   `d=example.com`, selector `newengland`, the 1024-bit key of Appendix C), signed with the
//!   Appendix C key by mail-auth's test vectors (`t=1615825284`). The `b=` printed in RFC 6376
//!   itself was not used (see the README beside the files).
//!
//! Each file is: DNS records (`name value`, one a line), a blank line, the raw message (LF in
//! the file, CRLF on the wire as SMTP delivers it). `now` is set an hour after the signature's
//! `t=`; `policy.dkim_min_rsa_bits` is 1024. Each genuine message must give `dkim = pass`; a
//! one-byte change of the body or of a signed header must give `dkim = fail`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use gatekeeper::backend::{Recipient, SessionInfo, Transaction, Verdict};
use gatekeeper::config::Alignment;
use gatekeeper::verify::Verifier;

use common::TestDns;
use common::dns::Rec;

struct Vector {
    records: Vec<Rec>,
    message: Vec<u8>,
    from: &'static str,
    t: i64,
}

fn load(text: &str, from: &'static str, t: i64) -> Vector {
    let (dns, message) = text
        .split_once("\n\n")
        .expect("records, blank line, message");
    let records = dns
        .lines()
        .map(|l| {
            let (name, value) = l.split_once(' ').expect("name value");
            Rec::new(name, "TXT", value)
        })
        .collect();
    Vector {
        records,
        message: message.replace('\n', "\r\n").into_bytes(),
        from,
        t,
    }
}

fn rfc8463() -> Vector {
    load(
        include_str!("data/dkim/rfc8463-football.txt"),
        "joe@football.example.com",
        1_528_637_909,
    )
}

fn rfc6376() -> Vector {
    load(
        include_str!("data/dkim/rfc6376-newengland.txt"),
        "joe@football.example.com",
        1_615_825_284,
    )
}

fn verifier(dns: &TestDns, alignment: Alignment, min_bits: u32) -> Verifier {
    let timeout = Duration::from_secs(3);
    let auth = gatekeeper::dns::build(&common::dns_config(dns.addr, timeout)).expect("resolver");
    let mut policy = common::policy_config();
    policy.allowed_domains = vec![common::domain("example.com")];
    policy.alignment = alignment;
    policy.dkim_min_rsa_bits = min_bits;
    Verifier::with_authenticator(auth, common::confirm_config(), policy, timeout)
}

fn transaction(v: &Vector, message: Vec<u8>) -> Transaction {
    let now = DateTime::<Utc>::from_timestamp(v.t + 3600, 0).expect("time");
    Transaction {
        session: SessionInfo {
            session_id: "vectors".into(),
            client_ip: "127.0.0.1".parse().expect("ip"),
            client_port: 40000,
            helo: Some("client1.football.example.com".into()),
            tls_version: None,
        },
        mail_from: common::mailbox(v.from),
        mail_from_tagged: None,
        rcpt: Recipient {
            token: "t".into(),
            address: common::mailbox("confirm+t@verify.example.gouv.fr"),
        },
        challenge_id: "ch-vectors".into(),
        message,
        received_at: now,
    }
}

async fn run(v: &Vector, alignment: Alignment, min_bits: u32, message: Vec<u8>) -> Verdict {
    let dns = TestDns::start(v.records.clone()).await;
    let tx = transaction(v, message);
    verifier(&dns, alignment, min_bits)
        .verify_message(&tx, None, tx.received_at)
        .await
}

fn dkim(verdict: &Verdict) -> String {
    verdict
        .checks
        .iter()
        .find(|c| c.name == "dkim")
        .map(|c| c.result.clone())
        .expect("dkim check reported")
}

/// Replace the first occurrence of `from` by `to` (same length: one byte changed).
fn edit(message: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let text = String::from_utf8(message.to_vec()).expect("ascii");
    let at = text.find(from).expect("text to edit");
    let mut out = text.clone();
    out.replace_range(at..at + from.len(), to);
    assert_ne!(out, text);
    out.into_bytes()
}

#[tokio::test]
async fn rfc8463_dual_signature_passes() {
    let v = rfc8463();
    let verdict = run(&v, Alignment::Strict, 1024, v.message.clone()).await;
    assert_eq!(dkim(&verdict), "pass", "{:?}", verdict.checks);
}

#[tokio::test]
async fn rfc8463_ed25519_alone_passes() {
    // Only the ed25519 key published: the ed25519 signature alone must carry the pass.
    let mut v = rfc8463();
    v.records.retain(|r| r.name.starts_with("brisbane."));
    let verdict = run(&v, Alignment::Strict, 2048, v.message.clone()).await;
    assert_eq!(dkim(&verdict), "pass", "{:?}", verdict.checks);
}

#[tokio::test]
async fn rfc8463_rsa_alone_is_weak_above_1024_bits() {
    // Only the 1024-bit RSA key published: pass at 1024 bits, weak when 2048 are required.
    let mut v = rfc8463();
    v.records.retain(|r| r.name.starts_with("test."));
    let verdict = run(&v, Alignment::Strict, 1024, v.message.clone()).await;
    assert_eq!(dkim(&verdict), "pass", "{:?}", verdict.checks);
    let verdict = run(&v, Alignment::Strict, 2048, v.message.clone()).await;
    assert_eq!(dkim(&verdict), "weak", "{:?}", verdict.checks);
}

#[tokio::test]
async fn rfc8463_body_change_fails() {
    let v = rfc8463();
    let m = edit(&v.message, "We lost the game.", "We lust the game.");
    let verdict = run(&v, Alignment::Strict, 1024, m).await;
    assert_eq!(dkim(&verdict), "fail", "{:?}", verdict.checks);
}

#[tokio::test]
async fn rfc8463_signed_header_change_fails() {
    let v = rfc8463();
    let m = edit(
        &v.message,
        "Subject: Is dinner ready?",
        "Subject: Is dinner ready!",
    );
    let verdict = run(&v, Alignment::Strict, 1024, m).await;
    assert_eq!(dkim(&verdict), "fail", "{:?}", verdict.checks);
}

#[tokio::test]
async fn rfc6376_passes_with_relaxed_alignment() {
    // d=example.com signs for joe@football.example.com: aligned only under relaxed alignment.
    let v = rfc6376();
    let verdict = run(&v, Alignment::Relaxed, 1024, v.message.clone()).await;
    assert_eq!(dkim(&verdict), "pass", "{:?}", verdict.checks);
}

#[tokio::test]
async fn rfc6376_is_unaligned_under_strict_alignment() {
    let v = rfc6376();
    let verdict = run(&v, Alignment::Strict, 1024, v.message.clone()).await;
    assert_eq!(dkim(&verdict), "unaligned", "{:?}", verdict.checks);
}

#[tokio::test]
async fn rfc6376_key_is_weak_when_2048_bits_are_required() {
    let v = rfc6376();
    let verdict = run(&v, Alignment::Relaxed, 2048, v.message.clone()).await;
    assert_eq!(dkim(&verdict), "weak", "{:?}", verdict.checks);
}

#[tokio::test]
async fn rfc6376_body_change_fails() {
    let v = rfc6376();
    let m = edit(&v.message, "Are you hungry yet?", "Are you hungry yet!");
    let verdict = run(&v, Alignment::Relaxed, 1024, m).await;
    assert_eq!(dkim(&verdict), "fail", "{:?}", verdict.checks);
}

#[tokio::test]
async fn rfc6376_signed_header_change_fails() {
    let v = rfc6376();
    let m = edit(&v.message, "To: Suzie Q", "To: Suzie R");
    let verdict = run(&v, Alignment::Relaxed, 1024, m).await;
    assert_eq!(dkim(&verdict), "fail", "{:?}", verdict.checks);
}
