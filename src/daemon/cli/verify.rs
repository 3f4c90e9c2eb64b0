//! `gatekeeper verify`: the whole decision on a message file, without SMTP (SPEC §6), for
//! operators investigating a refusal. Live DNS per the configuration; the challenge, when
//! `--rcpt` names one, is read from the store (read-only).

use std::net::IpAddr;
use std::path::Path;

use chrono::Utc;
use serde_json::{Map, Value, json};

use super::load_config;
use crate::address::{Envelope, Mailbox};
use crate::backend::{ChallengeBinding, Decision, Recipient, SessionInfo, Transaction, Verdict};
use crate::config::Config;
use crate::daemon::assemble::open_store;
use crate::reason::{Class, Reason};
use crate::smtp::command::{ConfirmAddress, parse_rcpt_to};
use crate::smtp::reply;
use crate::store::{Access, Store, TokenHash};
use crate::verify::Verifier;

/// `gatekeeper verify --config CONFIG FILE`: read both, decide, print the verdict as JSON;
/// returns the exit status ([`exit_code`], or 2 when a file cannot be read).
pub(super) async fn verify_file(config: &Path, file: &Path, mut args: VerifyArgs) -> u8 {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    args.message = match std::fs::read(file) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return 2;
        }
    };
    let verdict = verify(&config, args).await;
    println!("{:#}", verdict_json(&verdict));
    exit_code(&verdict)
}

/// The inputs of `gatekeeper verify` (`message` is read from the file by `run`).
pub struct VerifyArgs {
    pub client_ip: IpAddr,
    pub helo: String,
    pub mail_from: Vec<u8>,
    pub rcpt: Option<Vec<u8>>,
    pub message: Vec<u8>,
}

/// Exit status of `gatekeeper verify`: 0 accept, 1 reject, 2 temporary.
pub fn exit_code(verdict: &Verdict) -> u8 {
    match verdict.decision {
        Decision::Accept => 0,
        Decision::Refuse(r) if r.class() == Class::Temporary => 2,
        Decision::Refuse(_) => 1,
    }
}

/// Run the decision. Errors that are not verdicts (the store cannot be opened) come back as a
/// temporary `store.unavailable` verdict, as SMTP would answer.
pub async fn verify(config: &Config, args: VerifyArgs) -> Verdict {
    let opts = config.parse_options();
    let bare = strip_brackets(&args.mail_from);
    // The same tag rule as MAIL FROM over SMTP (SPEC §3 "Envelope tags").
    let domains = crate::domains::DomainPolicy::new(&config.policy);
    let (mail_from, mail_from_tagged) =
        match Envelope::parse(bare, &opts, |d| domains.envelope_tag(d)) {
            Ok(e) => (e.mailbox, e.tagged),
            Err(e) => return Verdict::refuse(e.reason()),
        };
    let confirm = ConfirmAddress {
        domain: config.confirm.domain.clone(),
        local_prefix: config.confirm.local_prefix.clone(),
    };
    let (rcpt, challenge) = match &args.rcpt {
        Some(raw) => {
            let bracketed = bracket(raw);
            let rcpt = match parse_rcpt_to(&bracketed, &opts, &confirm) {
                Ok(r) => r,
                Err(reason) => return Verdict::refuse(reason),
            };
            match find_challenge(config, &rcpt).await {
                Ok(c) => (rcpt, c),
                Err(reason) => return Verdict::refuse(reason),
            }
        }
        None => {
            // No recipient: the binding checks are reported as skipped. A placeholder
            // recipient built from the configured prefix and domain stands in the transaction.
            let text = format!("{}@{}", confirm.local_prefix, confirm.domain);
            let address = match Mailbox::parse(text.as_bytes(), &opts) {
                Ok(a) => a,
                Err(e) => return Verdict::refuse(e.reason()),
            };
            (
                Recipient {
                    token: String::new(),
                    address,
                },
                None,
            )
        }
    };
    // DS trust anchors are matched to the zone's keys first, as the daemon does at start.
    let mut anchored = config.clone();
    if let Err(e) = crate::dns::resolve_ds_anchors(&mut anchored.dns).await {
        tracing::error!(error = %e, "DNS resolver setup failed");
        return Verdict::refuse(Reason::DnsTemperror);
    }
    let verifier = match Verifier::new(&anchored) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "DNS resolver setup failed");
            return Verdict::refuse(Reason::DnsTemperror);
        }
    };
    let now = Utc::now();
    let tx = Transaction {
        session: SessionInfo {
            session_id: "cli-verify".to_owned(),
            client_ip: args.client_ip,
            client_port: 0,
            helo: Some(args.helo),
            tls_version: None,
        },
        mail_from,
        mail_from_tagged,
        challenge_id: challenge.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
        rcpt,
        message: args.message,
        received_at: now,
    };
    verifier.verify_message(&tx, challenge.as_ref(), now).await
}

async fn find_challenge(
    config: &Config,
    rcpt: &Recipient,
) -> Result<Option<ChallengeBinding>, Reason> {
    let store = open_store(config, Access::ReadOnly).map_err(|_| Reason::StoreUnavailable)?;
    let hash = TokenHash::of(&rcpt.token);
    let record = store
        .find_by_token_hash(&hash)
        .await
        .map_err(|e| e.reason())?
        .ok_or(Reason::TokenUnknown)?;
    let address = Mailbox::parse(record.address.as_bytes(), &config.parse_options())
        .map_err(|_| Reason::TokenUnknown)?;
    Ok(Some(ChallengeBinding {
        id: record.id.clone(),
        address,
        token: rcpt.token.clone(),
        session_code: record.session_code.clone(),
        message_id: crate::store::message_id(&rcpt.token, &record.message_id_tail),
    }))
}

/// The JSON verdict printed by `gatekeeper verify`.
pub fn verdict_json(verdict: &Verdict) -> Value {
    let (decision, reason) = match verdict.decision {
        Decision::Accept => ("accept", None),
        Decision::Refuse(r) if r.class() == Class::Temporary => ("tempfail", Some(r)),
        Decision::Refuse(r) => ("reject", Some(r)),
    };
    // The very line SMTP would send, without its CRLF.
    let line = match reason {
        Some(r) => reply::render(r.reply()),
        None => reply::CONFIRMED.to_vec(),
    };
    let reply = String::from_utf8_lossy(&line).trim_end().to_owned();
    let mut checks = Map::new();
    for c in &verdict.checks {
        checks.insert(c.name.to_owned(), Value::String(c.result.clone()));
    }
    json!({
        "decision": decision,
        "reason": reason.map(Reason::as_str),
        "reply": reply,
        "from": verdict.from,
        "message_id": verdict.message_id,
        "challenge_id": verdict.challenge_id,
        "checks": checks,
        "evidence": verdict.evidence,
    })
}

fn strip_brackets(raw: &[u8]) -> &[u8] {
    raw.strip_prefix(b"<")
        .and_then(|r| r.strip_suffix(b">"))
        .unwrap_or(raw)
}

fn bracket(raw: &[u8]) -> Vec<u8> {
    if raw.starts_with(b"<") {
        raw.to_vec()
    } else {
        let mut v = Vec::with_capacity(raw.len() + 2);
        v.push(b'<');
        v.extend_from_slice(raw);
        v.push(b'>');
        v
    }
}
