//! DNS faults: SERVFAIL and a server that never answers must end in a temporary refusal
//! (4xx: `dns|spf|dkim.temperror`), never in "none"/"fail", and within `dns.timeout` plus a
//! margin (the outcome is asserted; the elapsed time only bounds the test, with a wide
//! margin, so a slow machine cannot make it flaky).
//!
//! Run: `cargo test --test verify_dns`.

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chrono::Utc;
use gatekeeper::backend::{Decision, Verdict, Verify};
use gatekeeper::reason::{Class, Reason};

use common::mail::{Mail, alice_challenge};
use common::{Vars, World};

const TEMP: [Reason; 3] = [
    Reason::DnsTemperror,
    Reason::SpfTemperror,
    Reason::DkimTemperror,
];

async fn run(world: &World, mail: &Mail, n: u32) -> Verdict {
    let now = Utc::now();
    let vars = Vars::new(now, n);
    let tx = mail.transaction(&vars, now);
    let verifier = world.verifier();
    // Bounded: the verifier must finish well within this; if it does not, the test fails
    // instead of hanging.
    let bound = world.timeout * 4 + Duration::from_secs(5);
    tokio::time::timeout(bound, verifier.verify(&tx, &alice_challenge(&vars), now))
        .await
        .expect("verification finished within dns.timeout plus a margin")
}

fn check(row: &str, v: &Verdict, want: &[Reason]) {
    match v.decision {
        Decision::Refuse(r) => {
            assert_eq!(r.class(), Class::Temporary, "{row}: {r} is not temporary");
            assert!(want.contains(&r), "{row}: got {r}, want one of {want:?}");
        }
        Decision::Accept => panic!("{row}: accepted during a DNS fault"),
    }
}

fn result_of<'a>(v: &'a Verdict, name: &str) -> &'a str {
    v.checks
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.result.as_str())
        .unwrap_or("missing")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_gives_temporary_errors() {
    let mut world = World::start().await;
    world.timeout = Duration::from_secs(2);

    // The whole ministry domain: SPF and the DKIM key both SERVFAIL.
    world.reset_dns();
    world.dns.servfail("interieur.gouv.fr");
    let v = run(&world, &Mail::alice(), 1).await;
    check("servfail domain", &v, &TEMP);
    assert_eq!(v.decision, Decision::Refuse(Reason::SpfTemperror));
    assert_eq!(result_of(&v, "spf"), "temperror");
    assert_eq!(result_of(&v, "dkim"), "temperror");

    // Only the key: SPF passes, DKIM is temporary.
    world.reset_dns();
    world.dns.servfail("s2024._domainkey.interieur.gouv.fr");
    let v = run(&world, &Mail::alice(), 2).await;
    check("servfail key", &v, &[Reason::DkimTemperror]);
    assert_eq!(result_of(&v, "spf"), "pass");
    // The binding could not be judged without a signature: reported skipped, not failed.
    assert_eq!(result_of(&v, "binding.token_unsigned"), "skipped");

    // An SPF include: temporary, not "fail" (127.0.0.77 is only listed through it).
    world.reset_dns();
    world.dns.servfail("_spf.shared.example");
    let shared = Mail::alice().via("127.0.0.77", "relay.shared.example");
    let v = run(&world, &shared, 3).await;
    check("servfail include", &v, &[Reason::SpfTemperror]);

    // A structural fault is certain whatever the DNS says: 5xx even now.
    world.reset_dns();
    world.dns.servfail("interieur.gouv.fr");
    let two_from = Mail::alice().push("From: <bob@interieur.gouv.fr>");
    let v = run(&world, &two_from, 4).await;
    assert_eq!(v.decision, Decision::Refuse(Reason::HeaderFromCount));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_gives_temporary_errors() {
    let mut world = World::start().await;
    world.timeout = Duration::from_millis(1500);

    // Nothing under the ministry's domain is ever answered.
    world.reset_dns();
    world.dns.drop_name("interieur.gouv.fr");
    let started = std::time::Instant::now();
    let v = run(&world, &Mail::alice(), 1).await;
    check("drop domain", &v, &TEMP);
    assert_eq!(result_of(&v, "spf"), "temperror");
    assert_eq!(result_of(&v, "dkim"), "temperror");
    eprintln!("drop domain: decided in {:?}", started.elapsed());

    // Only the DKIM key is never answered.
    world.reset_dns();
    world.dns.drop_name("_domainkey.interieur.gouv.fr");
    let v = run(&world, &Mail::alice(), 2).await;
    check("drop key", &v, &[Reason::DkimTemperror]);
    assert_eq!(result_of(&v, "spf"), "pass");

    // The whole DNS is silent.
    world.reset_dns();
    world.dns.drop_name("");
    let v = run(&world, &Mail::alice(), 3).await;
    check("drop everything", &v, &TEMP);

    // iprev required and the reverse zone silent (documentation address, data only).
    world.reset_dns();
    world.policy.require_iprev = true;
    world
        .dns
        .replace("interieur.gouv.fr", "TXT", "v=spf1 ip4:192.0.2.25 -all");
    world.dns.drop_name("2.0.192.in-addr.arpa");
    let v = run(
        &world,
        &Mail::alice().via("192.0.2.25", "out.interieur.gouv.fr"),
        4,
    )
    .await;
    check("drop reverse", &v, &[Reason::DnsTemperror]);

    // An attacker's slow DNS for an unaligned signature cannot turn a refusal into a 4xx.
    world.reset_dns();
    world.policy.require_iprev = false;
    world.dns.drop_name("evil.example");
    let attacker = Mail::alice()
        .via("127.0.0.77", "relay.shared.example")
        .sigs(vec![common::mail::Sig::with(
            "evil-rsa2048",
            "evil.example",
            "sel",
            "rsa-sha256",
        )]);
    let v = run(&world, &attacker, 5).await;
    assert_eq!(
        v.decision,
        Decision::Refuse(Reason::DkimFail),
        "{:?}",
        v.checks
    );
}

/// The resolver adapter (`gatekeeper::dns::txt_lookup`) against the test server: long TXT
/// records come back whole, odd octets in names are served, NXDOMAIN is "not found",
/// SERVFAIL and silence are temporary.
#[tokio::test]
async fn resolver_adapter_against_the_test_server() {
    use gatekeeper::dns::{LookupError, txt_lookup};
    let world = World::start().await;
    let auth = gatekeeper::dns::build(&common::dns_config(
        world.dns.addr,
        Duration::from_millis(800),
    ))
    .expect("resolver");

    let key = txt_lookup(&auth, "s2024._domainkey.interieur.gouv.fr")
        .await
        .expect("key record");
    assert_eq!(key.len(), 1);
    let text = String::from_utf8_lossy(&key[0]).into_owned();
    assert!(text.starts_with("v=DKIM1; k=rsa; p=MII"), "{text}");
    assert!(
        text.len() > 255,
        "a 2048-bit key spans several strings, joined: {}",
        text.len()
    );
    assert!(!text.contains('{'), "public key filled");

    // Odd octets in a label: hickory's text parser refuses such names (so the product never
    // asks for them: `txt_lookup` reports "not found"), but the server serves them to a query
    // built from raw labels.
    use mail_auth::hickory_resolver::proto::rr::Name;
    for odd in [
        "sel._domainkey.interieur.gouv.fr(.evil.example",
        "sel._domainkey.interieur.gouv.fr\"=(.evil.example",
    ] {
        let labels: Vec<&[u8]> = odd.split('.').map(str::as_bytes).collect();
        let mut name = Name::from_labels(labels).expect("raw labels");
        name.set_fqdn(true);
        let lookup = auth.resolver().txt_lookup(name).await;
        assert!(
            matches!(&lookup, Ok(l) if l.answers().len() == 1),
            "{odd}: {lookup:?}"
        );
    }
    assert_eq!(
        txt_lookup(&auth, "sel._domainkey.interieur.gouv.fr(.evil.example").await,
        Err(LookupError::NotFound)
    );

    // An answer larger than a UDP payload comes back truncated, then whole over TCP.
    for i in 0..8 {
        world
            .dns
            .add("big.example", "TXT", &format!("{i}{}", "x".repeat(400)));
    }
    let big = txt_lookup(&auth, "big.example")
        .await
        .expect("big answer over TCP");
    assert_eq!(big.len(), 8);
    assert!(big.iter().all(|r| r.len() == 401));
    assert!(world.dns.tcp_queries() > 0, "the retry went over TCP");

    assert_eq!(
        txt_lookup(&auth, "nosuch.interieur.gouv.fr").await,
        Err(LookupError::NotFound)
    );
    assert_eq!(
        txt_lookup(&auth, "smtp.interieur.gouv.fr.")
            .await
            .map(|v| v.len()),
        Ok(1)
    );
    world.dns.servfail("bad.example");
    assert_eq!(
        txt_lookup(&auth, "x.bad.example").await,
        Err(LookupError::Temporary)
    );
    world.dns.drop_name("silent.example");
    assert_eq!(
        txt_lookup(&auth, "silent.example").await,
        Err(LookupError::Temporary)
    );
    assert!(world.dns.queries() > 0);
}

/// `dns.dnssec = true`: an answer hickory cannot validate is a temporary error, never a pass
/// and never a "none"/"fail" (SPEC I5). The test server holds no chain of trust from the
/// root (no signed root, no DS or its denial), so nothing it serves can be proven secure or
/// insecure: the genuine mail that the same world accepts with validation off gets a 451,
/// `dns.temperror` with both DNSSEC checks `bogus` (hickory cannot find the DS it expects on
/// the way to the root). Real signed zones: `tests/dnssec.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnssec_answers_without_a_chain_of_trust_are_temporary() {
    let world = World::start().await;
    let now = Utc::now();
    let vars = Vars::new(now, 1);
    let tx = Mail::alice().transaction(&vars, now);

    let plain = world.verifier();
    let v = plain.verify(&tx, &alice_challenge(&vars), now).await;
    assert_eq!(v.decision, Decision::Accept, "control: validation off");

    let mut cfg = common::dns_config(world.dns.addr, world.timeout);
    cfg.dnssec = true;
    let validating = gatekeeper::verify::Verifier::with_authenticator(
        gatekeeper::dns::build(&cfg).expect("resolver"),
        world.confirm.clone(),
        world.policy.clone(),
        world.timeout,
    );
    let bound = world.timeout * 4 + Duration::from_secs(5);
    let v = tokio::time::timeout(bound, validating.verify(&tx, &alice_challenge(&vars), now))
        .await
        .expect("verification finished within dns.timeout plus a margin");
    check("dnssec, no chain of trust", &v, &TEMP);
    assert_eq!(result_of(&v, "spf"), "temperror");
    assert_eq!(result_of(&v, "dkim"), "temperror");
    assert_eq!(result_of(&v, "dnssec.spf"), "bogus");
    assert_eq!(result_of(&v, "dnssec.dkim"), "bogus");
    assert_eq!(v.decision, Decision::Refuse(Reason::DnsTemperror));
}
