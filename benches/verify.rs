//! Verification cost of one genuine confirmation: Alice's ~2 KB reply (RSA-2048,
//! relaxed/relaxed, the corpus LEGIT-01 shape, body padded with the quoted challenge) through
//! `Verify::verify` — header checks, SPF, DKIM (mail-auth's crypto plus our signature parse and
//! key-size lookup), iprev, alignment and binding — against the in-process test DNS server on
//! 127.0.0.1.
//!
//! Everything runs on one thread: a current-thread tokio runtime drives both the verifier and
//! the test DNS server, so wall time ≈ CPU time of that thread (the DNS server's share
//! included when a lookup goes over the socket). After criterion, a fixed loop reads the
//! thread's on-CPU time from `/proc/thread-self/schedstat` to report CPU per message directly.
//!
//! Two cases:
//! - `warm`: the resolver keeps answers for at least an hour (`positive_min_ttl`/
//!   `negative_min_ttl` on top of the product's `dns::options`), as with real zones whose
//!   records carry TTLs; the first (unmeasured) verification fills the cache. The test server
//!   itself serves TTL 0.
//! - `cold`: the product's options unchanged (TTL 0 from the test server): every lookup goes
//!   over loopback UDP to the test server each time.
//!
//! Run: `cargo bench --bench verify`.

// A bench is built without cfg(test): the shared test helpers' panics on broken fixtures
// (`expect`) are as wanted here as in the tests.
#![allow(clippy::expect_used, clippy::unwrap_used)]

// The helpers' own unit tests (`use super::*` inside `mod tests`) are not built in a bench.
#[allow(unused_imports)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use gatekeeper::backend::{ChallengeBinding, Decision, Transaction, Verify};
use gatekeeper::verify::Verifier;
use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig};

use common::mail::{Mail, alice_challenge};
use common::{Vars, World};

/// A reply of about 2 KB: Alice's answer above the quoted challenge.
fn alice_2k() -> Mail {
    let mut body = String::from(
        "Code : {SESSION_CODE}\r\n\r\nJe confirme que cette adresse est bien la mienne.\r\n\r\n",
    );
    body.push_str("-----Message d'origine-----\r\n");
    let mut n = 0;
    while body.len() < 1400 {
        n += 1;
        body.push_str(&format!(
            "> Ligne {n} du message de confirmation : veuillez repondre a ce message.\r\n"
        ));
    }
    Mail::alice().body(&body)
}

/// The world's verifier, with a resolver that keeps answers at least `min_ttl`.
fn verifier(world: &World, min_ttl: Option<Duration>) -> Verifier {
    let cfg = common::dns_config(world.dns.addr, world.timeout);
    let mut opts = gatekeeper::dns::options(&cfg);
    opts.positive_min_ttl = min_ttl;
    opts.negative_min_ttl = min_ttl;
    let mut ns = NameServerConfig::udp_and_tcp(world.dns.addr.ip());
    for conn in &mut ns.connections {
        conn.port = world.dns.addr.port();
    }
    let auth =
        MessageAuthenticator::new(ResolverConfig::from_name_servers(vec![ns]), opts).expect("dns");
    Verifier::with_authenticator(
        auth,
        world.confirm.clone(),
        world.policy.clone(),
        world.timeout,
    )
}

/// On-CPU nanoseconds so far, from a `schedstat` file (first field).
fn schedstat_ns(path: &std::path::Path) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// On-CPU nanoseconds of the calling thread so far.
fn thread_cpu_ns() -> Option<u64> {
    schedstat_ns(std::path::Path::new("/proc/thread-self/schedstat"))
}

/// On-CPU nanoseconds of every thread of the process so far (shows whether work happens
/// off the runtime thread, e.g. in a blocking pool).
fn process_cpu_ns() -> Option<u64> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .filter_map(Result::ok)
            .filter_map(|t| schedstat_ns(&t.path().join("schedstat")))
            .sum(),
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let now = Utc::now();
    let vars = Vars::new(now, 1);
    let (world, tx, challenge): (World, Transaction, ChallengeBinding) = rt.block_on(async {
        let world = World::start().await;
        let mail = alice_2k();
        let tx = mail.transaction(&vars, now);
        (world, tx, alice_challenge(&vars))
    });
    println!("message: {} bytes", tx.message.len());

    for (name, min_ttl) in [("warm", Some(Duration::from_secs(3600))), ("cold", None)] {
        let v = rt.block_on(async { verifier(&world, min_ttl) });
        // First verification: must accept (else the bench measures a refusal) and fills the
        // cache in the warm case.
        let verdict = rt.block_on(v.verify(&tx, &challenge, now));
        assert_eq!(verdict.decision, Decision::Accept, "{:?}", verdict.checks);

        c.bench_function(&format!("verify_alice_rsa2048_{name}"), |b| {
            b.iter(|| black_box(rt.block_on(v.verify(&tx, &challenge, now))))
        });

        // CPU per message over a fixed count (bounded: 2000 messages).
        const N: u32 = 2000;
        let queries = world.dns.queries();
        let (cpu0, all0, t0) = (thread_cpu_ns(), process_cpu_ns(), Instant::now());
        for _ in 0..N {
            black_box(rt.block_on(v.verify(&tx, &challenge, now)));
        }
        let wall = t0.elapsed();
        let cpu = thread_cpu_ns().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
        let all = process_cpu_ns().zip(all0).map(|(b, a)| b.saturating_sub(a));
        let per_msg = |ns: Option<u64>| {
            ns.map_or("n/a".to_string(), |ns| {
                format!("{:.1}", ns as f64 / 1e3 / f64::from(N))
            })
        };
        println!(
            "{name}: {N} messages, wall {:.1} µs/msg, CPU runtime thread {} µs/msg, \
             all threads {} µs/msg, DNS queries {:.1}/msg",
            wall.as_secs_f64() * 1e6 / f64::from(N),
            per_msg(cpu),
            per_msg(all),
            (world.dns.queries() - queries) as f64 / f64::from(N),
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
