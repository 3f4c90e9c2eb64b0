//! Every corpus case whose decision is the verifier's, run through `Verifier::verify` against
//! the in-process DNS server of the test world.
//!
//! Run: `cargo test --test verify_corpus`.

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use chrono::Utc;
use gatekeeper::backend::{Decision, Verify};
use gatekeeper::reason::{Class, Reason};

use common::corpus::{self, Case};
use common::{Vars, World};

/// Cases of other stages, or whose decision is made before the verifier runs. `session`
/// cases run when their mail reaches DATA normally (LEGIT-25: pipelining changes only how the
/// commands are written; the decision on the mail is the verifier's).
fn skip_reason(case: &Case) -> Option<&'static str> {
    match case.stage.as_str() {
        // The API's strict parse and domain policy (address/domains engineers).
        "claim" => return Some("claim: refused by the API before any mail"),
        // MAIL and RCPT are decided by the SMTP engine and the store.
        "MAIL" | "RCPT" => return Some("decided at MAIL/RCPT by the SMTP engine"),
        _ => {}
    }
    // DATA-stage cases decided by the SMTP engine (smuggling, bare CR/LF) or the store
    // (a used token): the verifier never sees them. The lead runs them over SMTP.
    if case.raw_data
        || case
            .spec_reasons
            .iter()
            .any(|r| r.starts_with("smtp.") || r.starts_with("token."))
    {
        return Some("decided by the SMTP engine or the store");
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_cases() {
    let world = World::start().await;
    let verifier_checks = gatekeeper::policy::CheckResults::all_pass().checks().len();
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut skipped = Vec::new();
    for (n, case) in corpus::cases().iter().enumerate() {
        if let Some(why) = skip_reason(case) {
            skipped.push(format!("{} ({why})", case.id));
            continue;
        }
        ran += 1;
        world.reset_dns();
        if let Some(o) = &case.dns_overrides {
            world.apply_overrides(o);
        }
        let now = Utc::now();
        let vars = Vars::new(now, n as u32);
        let message = corpus::message(case, &vars);
        let mail_from =
            corpus::reverse_path(case.mail_from.as_deref().unwrap_or_default()).unwrap_or_default();
        let tx = common::transaction(
            case.client_address.as_deref().unwrap_or("127.0.0.66"),
            case.helo.as_deref().unwrap_or("unknown"),
            mail_from,
            &vars,
            message,
            now,
        );
        let challenge = common::challenge(&case.claimed_address, &vars);
        let verdict = world.verifier().verify(&tx, &challenge, now).await;

        eprintln!(
            "{:10} {:?} {}",
            case.id,
            verdict.decision,
            verdict
                .checks
                .iter()
                .filter(|c| c.result != "ok" && c.result != "pass")
                .map(|c| format!("{}={}", c.name, c.result))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let ok = match (case.expected.as_str(), &verdict.decision) {
            ("accept", Decision::Accept) => true,
            ("reject", Decision::Refuse(r)) => {
                r.class() == Class::Permanent && case.spec_reasons.iter().any(|s| s == r.as_str())
            }
            ("tempfail", Decision::Refuse(r)) => {
                r.class() == Class::Temporary && case.spec_reasons.iter().any(|s| s == r.as_str())
            }
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{} [{}] expected {} {:?}, got {:?}; checks: {}",
                case.id,
                case.title,
                case.expected,
                case.spec_reasons,
                verdict.decision,
                verdict
                    .checks
                    .iter()
                    .map(|c| format!("{}={}", c.name, c.result))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        if verdict.checks.len() != verifier_checks {
            failures.push(format!(
                "{}: {} checks listed",
                case.id,
                verdict.checks.len()
            ));
        }
        if matches!(verdict.decision, Decision::Accept) && verdict.evidence.is_none() {
            failures.push(format!("{}: accepted without evidence", case.id));
        }
        if let Decision::Refuse(r) = verdict.decision
            && r == Reason::StoreUnavailable
        {
            failures.push(format!("{}: store reason from the verifier", case.id));
        }
    }
    eprintln!(
        "ran {ran} cases; skipped {}:\n  {}",
        skipped.len(),
        skipped.join("\n  ")
    );
    assert!(ran >= 50, "only {ran} cases ran");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
