//! `gatekeeper domain-check` through the real binary, against loopback zones that each show
//! one pattern (SPEC §10): the verdict, the exit status, the snippet, and the facts behind
//! them, in JSON and in the terminal form.
//!
//! One test DNS server serves every zone; each domain is one pattern:
//!
//! | domain               | pattern                                      | verdict        |
//! |----------------------|----------------------------------------------|----------------|
//! | ready.gouv.fr        | SPF -all, DMARC reject, ed25519 key          | ready          |
//! | nospf.gouv.fr        | no SPF, a key                                | needs override |
//! | softfail.gouv.fr     | SPF ~all                                     | ready (note)   |
//! | lookups.gouv.fr      | SPF over 10 DNS lookups                      | needs override |
//! | nodmarc.gouv.fr      | no DMARC                                     | ready (note)   |
//! | voids.gouv.fr        | SPF with 3 void lookups (names without A/MX) | ready (note)   |
//! | m365.gouv.fr         | DKIM only at selector1, a CNAME (M365)       | ready          |
//! | weak.gouv.fr         | a 1024-bit RSA key                           | ready (note)   |
//! | testing.gouv.fr      | the only key has t=y                         | needs override |
//! | tenant.gouv.fr       | no own key; earlier confirmations signed by  | needs override |
//! |                      | tenant.onmicrosoft.com (from the store)      | (dkim_domains) |
//! | nothing.gouv.fr      | no SPF, no DKIM                              | cannot confirm |
//! | nullmx.gouv.fr       | null MX (RFC 7505)                           | cannot confirm |
//! | flaky.gouv.fr        | SERVFAIL at selector1, no key elsewhere      | cannot confirm |
//! | outside.example.org  | outside policy.allowed_domains               | cannot confirm |
//!
//! DNSSEC on real signed zones (`common::signed`: ldns-signzone, NSD, the DS of `gouv.fr.`
//! as the trust anchor), in [`dnssec_on_signed_zones`]:
//!
//! | domain               | pattern                                      | verdict        |
//! |----------------------|----------------------------------------------|----------------|
//! | signed.gouv.fr       | signed, DS in the parent                     | ready, secure  |
//! | bogus.gouv.fr        | the key's RRSIG tampered                     | cannot confirm |
//! | plain.gouv.fr        | unsigned delegation (insecure)               | ready          |
//! | strict.gouv.fr       | unsigned, `require_dnssec = true`            | cannot confirm |
//!
//! Run: `cargo test --test domain_check`.

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use chrono::Utc;
use serde_json::Value;

use common::dns::{Rec, TestDns};
use common::e2e::{Layout, Settings};
use common::keys::Key;
use common::signed::{Kind, SignedWorld, Zone, key_record, missing_tools};

const BIN: &str = env!("CARGO_BIN_EXE_gatekeeper");

/// The records of every pattern zone (see the table above).
pub fn zones(ed25519: &str, rsa1024: &str) -> Vec<Rec> {
    let key = format!("v=DKIM1; k=ed25519; p={ed25519}");
    let mut r = Vec::new();
    let mut zone = |d: &str, spf: Option<&str>, dmarc: Option<&str>, keys: &[(&str, &str)]| {
        if let Some(spf) = spf {
            r.push(Rec::new(d, "TXT", spf));
        }
        if let Some(dmarc) = dmarc {
            r.push(Rec::new(&format!("_dmarc.{d}"), "TXT", dmarc));
        }
        for (sel, txt) in keys {
            r.push(Rec::new(&format!("{sel}._domainkey.{d}"), "TXT", txt));
        }
        r.push(Rec::new(d, "MX", &format!("10 mx.{d}")));
        r.push(Rec::new(&format!("mx.{d}"), "A", "127.0.0.25"));
    };
    let dmarc = Some("v=DMARC1; p=reject; adkim=s; aspf=s");
    let spf = Some("v=spf1 ip4:127.0.0.25 -all");
    zone("ready.gouv.fr", spf, dmarc, &[("google", &key)]);
    zone("nospf.gouv.fr", None, dmarc, &[("default", &key)]);
    zone(
        "softfail.gouv.fr",
        Some("v=spf1 ip4:127.0.0.25 ~all"),
        dmarc,
        &[("mail", &key)],
    );
    // 4 includes, each with `a` and `mx`: 4 + 8 = 12 lookups (RFC 7208 §4.6.4 allows 10).
    zone(
        "lookups.gouv.fr",
        Some(
            "v=spf1 include:i1.lookups.gouv.fr include:i2.lookups.gouv.fr \
             include:i3.lookups.gouv.fr include:i4.lookups.gouv.fr -all",
        ),
        dmarc,
        &[("dkim", &key)],
    );
    zone("nodmarc.gouv.fr", spf, None, &[("s1", &key)]);
    zone(
        "voids.gouv.fr",
        Some(
            "v=spf1 a:none1.voids.gouv.fr a:none2.voids.gouv.fr mx:none3.voids.gouv.fr \
             ip4:127.0.0.25 -all",
        ),
        dmarc,
        &[("key1", &key)],
    );
    zone(
        "m365.gouv.fr",
        Some("v=spf1 include:spf.protection.outlook.test -all"),
        Some("v=DMARC1; p=quarantine"),
        &[],
    );
    zone(
        "weak.gouv.fr",
        spf,
        dmarc,
        &[("default", &format!("v=DKIM1; k=rsa; p={rsa1024}"))],
    );
    zone(
        "testing.gouv.fr",
        spf,
        dmarc,
        &[("selector1", &format!("{key}; t=y"))],
    );
    zone("tenant.gouv.fr", spf, dmarc, &[]);
    zone("flaky.gouv.fr", spf, dmarc, &[]);
    zone("nothing.gouv.fr", None, dmarc, &[]);
    zone("outside.example.org", spf, dmarc, &[("google", &key)]);
    r.push(Rec::new("nullmx.gouv.fr", "TXT", "v=spf1 -all"));
    r.push(Rec::new("nullmx.gouv.fr", "MX", "0 ."));
    r.push(Rec::new(
        "_dmarc.nullmx.gouv.fr",
        "TXT",
        "v=DMARC1; p=reject",
    ));
    r.push(Rec::new("google._domainkey.nullmx.gouv.fr", "TXT", &key));
    for i in 1..=4 {
        r.push(Rec::new(
            &format!("i{i}.lookups.gouv.fr"),
            "TXT",
            "v=spf1 a mx -all",
        ));
    }
    // Microsoft 365: the selector is a CNAME into the tenant's onmicrosoft.com zone.
    r.push(Rec::new(
        "selector1._domainkey.m365.gouv.fr",
        "CNAME",
        "selector1-m365-gouv-fr._domainkey.m365gouv.onmicrosoft.test",
    ));
    r.push(Rec::new(
        "selector1-m365-gouv-fr._domainkey.m365gouv.onmicrosoft.test",
        "TXT",
        &key,
    ));
    r.push(Rec::new(
        "spf.protection.outlook.test",
        "TXT",
        "v=spf1 ip4:127.0.0.25 -all",
    ));
    // The tenant whose mail is signed by its onmicrosoft.com domain only.
    r.push(Rec::new(
        "selector1-tenant-gouv-fr._domainkey.tenant.onmicrosoft.test",
        "TXT",
        &key,
    ));
    r
}

/// A domain-check run: its exit status, JSON and terminal output.
struct Run {
    code: Option<i32>,
    json: Value,
    text: String,
}

fn domain_check(config: &Path, domain: &str) -> Run {
    let run = |json: bool| -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(["domain-check", domain, "-c"]).arg(config);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap_or_else(|e| panic!("{BIN}: {e}"))
    };
    let json = run(true);
    let text = run(false);
    assert_eq!(
        json.status.code(),
        text.status.code(),
        "{domain}: same exit either way"
    );
    let parsed: Value = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| {
        panic!(
            "{domain}: JSON: {e}\n{}\n{}",
            String::from_utf8_lossy(&json.stdout),
            String::from_utf8_lossy(&json.stderr)
        )
    });
    Run {
        code: json.status.code(),
        json: parsed,
        text: String::from_utf8_lossy(&text.stdout).into_owned(),
    }
}

/// The DKIM key report of `selector` at `domain`.
fn key<'a>(run: &'a Run, selector: &str, domain: &str) -> &'a Value {
    run.json["dkim"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["selector"] == selector && k["domain"] == domain)
        .unwrap_or_else(|| panic!("no key {selector} at {domain}: {}", run.json))
}

fn notes(run: &Run) -> String {
    run.json["notes"].to_string()
}

/// Record one confirmation of `address` signed by `d=`/`s=` in the store at `path`, as the
/// daemon would after a confirmed reply.
async fn confirmed(path: &Path, address: &str, d: &str, s: &str) {
    use gatekeeper::backend::Evidence;
    use gatekeeper::store::{
        ConfirmOutcome, ConfirmRequest, Confirmation, RateLimits, SqliteOptions, SqliteStore, Store,
    };
    let store = SqliteStore::open(path, SqliteOptions::default()).unwrap();
    let now = Utc::now();
    let c = common::challenge::new_challenge("seen1", address, "tok-seen1", now, 3600);
    let limits = RateLimits {
        max_pending: 10,
        max_per_hour: 10,
    };
    store.create(c, limits, now).await.unwrap();
    let outcome = store
        .confirm(ConfirmRequest {
            id: "seen1".into(),
            confirmation: Confirmation {
                confirmed_at: now,
                evidence: Evidence {
                    from: address.into(),
                    dkim_domain: d.into(),
                    dkim_selector: s.into(),
                    ..Evidence::default()
                },
                message_id: Some("m1@tenant.gouv.fr".into()),
                from: address.into(),
                session_id: "sess1".into(),
                session_ended: true,
            },
            now,
        })
        .await
        .unwrap();
    assert!(matches!(outcome, ConfirmOutcome::Confirmed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pattern_per_zone() {
    let ed = Key::generate("ed25519").public_b64();
    let rsa = Key::generate("rsa 1024").public_b64();
    let dns = TestDns::start(zones(&ed, &rsa)).await;
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(tmp.path());
    let config = layout.write_config(dns.addr, &Settings::default());
    std::fs::create_dir_all(layout.store.parent().unwrap()).unwrap();
    confirmed(
        &layout.store,
        "alice@tenant.gouv.fr",
        "tenant.onmicrosoft.test",
        "selector1-tenant-gouv-fr",
    )
    .await;

    // Ready: every part in place; nothing to add.
    let r = domain_check(&config, "ready.gouv.fr");
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert_eq!(r.json["verdict"], "ready");
    assert_eq!(r.json["snippet"], Value::Null);
    assert_eq!(r.json["spf"]["valid"], true);
    assert_eq!(r.json["spf"]["all"], "-all");
    assert_eq!(r.json["spf"]["lookups"], 0);
    assert_eq!(r.json["dmarc"]["p"], "reject");
    assert_eq!(r.json["dmarc"]["adkim"], "strict");
    assert_eq!(r.json["mx"]["hosts"][0], "10 mx.ready.gouv.fr");
    assert_eq!(r.json["dnssec"], "not validated");
    let k = key(&r, "google", "ready.gouv.fr");
    assert_eq!(
        (k["key_type"].as_str(), k["usable"].as_bool()),
        (Some("ed25519"), Some(true))
    );
    assert!(r.text.contains("verdict: ready"), "{}", r.text);
    assert!(
        r.text
            .contains("google._domainkey.ready.gouv.fr (usual): ed25519"),
        "{}",
        r.text
    );

    // No SPF: DKIM alone may confirm with the override.
    let r = domain_check(&config, "nospf.gouv.fr");
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert_eq!(r.json["verdict"], "needs override");
    assert_eq!(r.json["spf"]["status"], "none");
    assert_eq!(
        r.json["snippet"],
        "[policy.domains.\"nospf.gouv.fr\"]\nrequire_spf = false\n"
    );
    assert!(
        r.text.contains(
            "add to the configuration:\n[policy.domains.\"nospf.gouv.fr\"]\nrequire_spf = false\n"
        ),
        "{}",
        r.text
    );

    // ~all: still ready (SPF pass is needed either way), said in a note.
    let r = domain_check(&config, "softfail.gouv.fr");
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert_eq!(r.json["spf"]["all"], "~all");
    assert!(notes(&r).contains("~all"), "{}", r.json);

    // Too many lookups: a permerror for every mail.
    let r = domain_check(&config, "lookups.gouv.fr");
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert_eq!(r.json["spf"]["valid"], false);
    assert_eq!(
        r.json["spf"]["lookups"], 12,
        "4 includes, each with a and mx: {}",
        r.json
    );
    assert!(
        r.json["spf"]["error"]
            .as_str()
            .unwrap()
            .contains("more than 10"),
        "{}",
        r.json
    );
    assert_eq!(
        r.json["snippet"],
        "[policy.domains.\"lookups.gouv.fr\"]\nrequire_spf = false\n"
    );

    // No DMARC: gatekeeper does not need one; a note says what it means.
    let r = domain_check(&config, "nodmarc.gouv.fr");
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert_eq!(r.json["dmarc"]["status"], "none");
    assert!(notes(&r).contains("no DMARC record"), "{}", r.json);

    // Three void lookups: gatekeeper's SPF still evaluates the record; other receivers may
    // not (RFC 7208 §4.6.4), which a note says.
    let r = domain_check(&config, "voids.gouv.fr");
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert_eq!(
        (
            r.json["spf"]["lookups"].as_u64(),
            r.json["spf"]["void_lookups"].as_u64()
        ),
        (Some(3), Some(3)),
        "{}",
        r.json
    );
    assert!(notes(&r).contains("3 void lookups"), "{}", r.json);

    // Microsoft 365: the key is only at selector1, through a CNAME; SPF through an include.
    let r = domain_check(&config, "m365.gouv.fr");
    assert_eq!(r.code, Some(0), "{}", r.text);
    let k = key(&r, "selector1", "m365.gouv.fr");
    assert_eq!(
        k["cname"],
        "selector1-m365-gouv-fr._domainkey.m365gouv.onmicrosoft.test"
    );
    assert_eq!(k["usable"], true);
    assert_eq!(key(&r, "selector2", "m365.gouv.fr")["status"], "none");
    assert_eq!(r.json["spf"]["lookups"], 1);
    assert_eq!(r.json["dmarc"]["p"], "quarantine");
    assert!(
        r.text
            .contains("-> selector1-m365-gouv-fr._domainkey.m365gouv.onmicrosoft.test"),
        "{}",
        r.text
    );

    // A 1024-bit key: accepted at the default policy.dkim_min_rsa_bits, noted.
    let r = domain_check(&config, "weak.gouv.fr");
    assert_eq!(r.code, Some(0), "{}", r.text);
    let k = key(&r, "default", "weak.gouv.fr");
    assert_eq!(
        (k["key_type"].as_str(), k["bits"].as_u64()),
        (Some("rsa"), Some(1024))
    );
    assert!(notes(&r).contains("1024 bits"), "{}", r.json);

    // t=y: signatures are refused as dkim.testing; without DKIM, SPF and iprev.
    let r = domain_check(&config, "testing.gouv.fr");
    assert_eq!(r.code, Some(1), "{}", r.text);
    let k = key(&r, "selector1", "testing.gouv.fr");
    assert_eq!(
        (k["testing"].as_bool(), k["usable"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(
        r.json["snippet"],
        "[policy.domains.\"testing.gouv.fr\"]\nrequire_dkim = false\nrequire_iprev = true\n"
    );

    // Signed only by the tenant's onmicrosoft domain, as earlier confirmations show.
    let r = domain_check(&config, "tenant.gouv.fr");
    assert_eq!(r.code, Some(1), "{}", r.text);
    let k = key(&r, "selector1-tenant-gouv-fr", "tenant.onmicrosoft.test");
    assert_eq!(
        (k["source"].as_str(), k["usable"].as_bool()),
        (Some("seen"), Some(true))
    );
    assert_eq!(
        r.json["snippet"],
        "[policy.domains.\"tenant.gouv.fr\"]\ndkim_domains = [\"tenant.onmicrosoft.test\"]\n"
    );

    // Neither SPF nor DKIM: no override can waive both.
    let r = domain_check(&config, "nothing.gouv.fr");
    assert_eq!(r.code, Some(2), "{}", r.text);
    assert_eq!(r.json["verdict"], "cannot confirm");
    assert_eq!(r.json["snippet"], Value::Null);
    assert!(
        r.json["why"].to_string().contains("never waive both"),
        "{}",
        r.json
    );

    // Null MX: the challenge mail cannot be delivered.
    let r = domain_check(&config, "nullmx.gouv.fr");
    assert_eq!(r.code, Some(2), "{}", r.text);
    assert_eq!(r.json["mx"]["status"], "null");

    // A selector that fails for now may hold the key: unknown, not "no key" (exit 2, try
    // again), never a require_dkim = false snippet on a guess.
    dns.servfail("selector1._domainkey.flaky.gouv.fr");
    let r = domain_check(&config, "flaky.gouv.fr");
    assert_eq!(r.code, Some(2), "{}", r.text);
    assert_eq!(key(&r, "selector1", "flaky.gouv.fr")["status"], "temperror");
    assert_eq!(r.json["snippet"], Value::Null);
    assert!(
        r.json["why"]
            .to_string()
            .contains("DKIM key lookups failed for now"),
        "{}",
        r.json
    );

    // Outside the allowed domains.
    let r = domain_check(&config, "outside.example.org");
    assert_eq!(r.code, Some(2), "{}", r.text);
    assert!(
        r.json["why"].to_string().contains("allowed_domains"),
        "{}",
        r.json
    );
}

#[test]
fn bad_domain_or_config_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.toml");
    for (args, config) in [
        (vec!["domain-check", "not a domain"], None),
        (vec!["domain-check", "ready.gouv.fr", "-c"], Some(&missing)),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(&args).env_remove("GATEKEEPER_CONFIG");
        if let Some(c) = config {
            cmd.arg(c);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

/// checkdmarc's own `check_domains` and `results_to_json`, pointed at the test DNS server:
/// its command line takes plain nameservers on port 53 only, its API takes a dnspython
/// nameserver with a port, so the zones stay on an ephemeral port and no privilege is needed.
const CHECKDMARC_DRIVER: &str = r#"
import sys, dns.nameserver, checkdmarc
ip, port, domains = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
ns = dns.nameserver.Do53Nameserver(ip, port=port)
print(checkdmarc.results_to_json(checkdmarc.check_domains(domains, nameservers=[ns], timeout=2.0)))
"#;

/// checkdmarc from PyPI in a virtualenv under target/, created once and reused (as
/// tests/interop/oidc.sh caches Synapse's); the first run needs the package index.
fn checkdmarc_python() -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop-cache");
    let venv = root.join("checkdmarc-venv");
    let python = venv.join("bin/python");
    let ready = |p: &Path| {
        Command::new(p)
            .args(["-c", "import checkdmarc"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready(&python) {
        return python;
    }
    std::fs::create_dir_all(&root).unwrap();
    let _ = std::fs::remove_dir_all(&venv);
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "-q",
                "--disable-pip-version-check",
                CHECKDMARC_SPEC,
            ])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok && ready(&python),
        "cannot install {CHECKDMARC_SPEC} in {}",
        venv.display()
    );
    python
}

const CHECKDMARC_SPEC: &str = "checkdmarc==6.0.4";

/// The same zones through checkdmarc (an independent SPF/DMARC checker, dnspython): both must
/// agree on SPF validity, the DNS-lookup count and the DMARC policy and alignment tags.
///
/// Differences, and why they are not asserted:
/// - Void lookups (RFC 7208 §4.6.4: `a`/`mx`/`exists` names without records): both count
///   them (compared where the record is within the 10 lookups: past it checkdmarc stops
///   early). checkdmarc makes more than two a permerror; gatekeeper's SPF evaluation
///   (mail-auth) does not apply that limit, so domain-check keeps `voids.gouv.fr` valid and
///   says so in a note: the one asserted disagreement.
/// - checkdmarc reports DMARC's defaults (`adkim=r`, `sp` = `p`) with `explicit: false`;
///   domain-check gives the same values as mail-auth's parse resolves them, so they compare
///   equal.
/// - checkdmarc knows nothing of DKIM selectors, MX reachability for gatekeeper, or the
///   verdict: those are checked by `one_pattern_per_zone` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agrees_with_checkdmarc() {
    let python = checkdmarc_python();
    let ed = Key::generate("ed25519").public_b64();
    let rsa = Key::generate("rsa 1024").public_b64();
    let dns = TestDns::start(zones(&ed, &rsa)).await;
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(tmp.path());
    let config = layout.write_config(dns.addr, &Settings::default());
    let domains = [
        "ready.gouv.fr",
        "nospf.gouv.fr",
        "softfail.gouv.fr",
        "lookups.gouv.fr",
        "nodmarc.gouv.fr",
        "m365.gouv.fr",
        "voids.gouv.fr",
    ];
    let addr = dns.addr;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["-c", CHECKDMARC_DRIVER])
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .args(domains)
            .env("PYTHONWARNINGS", "ignore")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let theirs: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkdmarc JSON: {e}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let letter = |v: &Value| match v.as_str() {
        Some("strict") => Value::from("s"),
        Some("relaxed") => Value::from("r"),
        _ => Value::Null,
    };
    for d in domains {
        let t = theirs
            .as_array()
            .and_then(|a| a.iter().find(|r| r["domain"] == d))
            .unwrap_or_else(|| panic!("checkdmarc has no {d}: {theirs}"));
        let ours = tokio::task::spawn_blocking({
            let config = config.clone();
            move || domain_check(&config, d)
        })
        .await
        .unwrap();
        let (o, t_spf, t_dmarc) = (&ours.json, &t["spf"], &t["dmarc"]);
        if d == "voids.gouv.fr" {
            // The one expected disagreement: checkdmarc applies the void-lookup limit,
            // gatekeeper's SPF (mail-auth) does not, so domain-check calls the record valid
            // and notes the voids. Both count the same voids.
            assert_eq!(
                (o["spf"]["valid"].as_bool(), t_spf["valid"].as_bool()),
                (Some(true), Some(false)),
                "{d}\n{o}\n{t_spf}"
            );
        } else {
            assert_eq!(
                o["spf"]["valid"], t_spf["valid"],
                "{d}: SPF valid\n{o}\n{t_spf}"
            );
        }
        if let Some(n) = t_spf["void_dns_lookups"].as_u64()
            && o["spf"]["lookups"].as_u64().is_some_and(|l| l <= 10)
        {
            assert_eq!(
                o["spf"]["void_lookups"], n,
                "{d}: void lookups\n{o}\n{t_spf}"
            );
        }
        if let Some(n) = t_spf["dns_lookups"].as_u64() {
            assert_eq!(o["spf"]["lookups"], n, "{d}: SPF lookups\n{o}\n{t_spf}");
        }
        let t_p = &t_dmarc["tags"]["p"]["value"];
        if t_p.is_null() {
            assert_eq!(
                o["dmarc"]["status"], "none",
                "{d}: no DMARC\n{o}\n{t_dmarc}"
            );
        } else {
            assert_eq!(o["dmarc"]["p"], *t_p, "{d}: DMARC p\n{o}\n{t_dmarc}");
            assert_eq!(o["dmarc"]["sp"], t_dmarc["tags"]["sp"]["value"], "{d}: sp");
            assert_eq!(
                letter(&o["dmarc"]["adkim"]),
                t_dmarc["tags"]["adkim"]["value"],
                "{d}"
            );
            assert_eq!(
                letter(&o["dmarc"]["aspf"]),
                t_dmarc["tags"]["aspf"]["value"],
                "{d}"
            );
        }
    }
}

/// `dns.dnssec = true` against the test server, which signs nothing and has no chain of trust
/// from the root: every answer is bogus, so a temporary failure (`src/dns.rs`), and
/// domain-check says `cannot confirm` naming the validation failure, never `ready` on answers
/// it could not validate. (Signed zones: [`dnssec_on_signed_zones`].)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnssec_without_a_chain_of_trust_cannot_confirm() {
    let ed = Key::generate("ed25519").public_b64();
    let dns = TestDns::start(zones(&ed, &ed)).await;
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(tmp.path());
    let config = layout.write_config(dns.addr, &Settings::default());
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("[dns]\n"));
    std::fs::write(
        &config,
        text.replacen("[dns]\n", "[dns]\ndnssec = true\n", 1),
    )
    .unwrap();
    let r = tokio::task::spawn_blocking(move || domain_check(&config, "ready.gouv.fr"))
        .await
        .unwrap();
    assert_eq!(r.code, Some(2), "{}", r.text);
    assert_eq!(r.json["dnssec"], "validated");
    assert_eq!(r.json["spf"]["status"], "temperror", "{}", r.json);
    assert_eq!(r.json["spf"]["dnssec"], "bogus", "{}", r.json);
    assert_eq!(r.json["mx"]["dnssec"], "bogus", "{}", r.json);
    let why = r.json["why"].to_string();
    assert!(
        why.contains("DNSSEC validation failed")
            && why.contains("the DKIM keys of ready.gouv.fr at selectors selector1, selector2"),
        "{why}"
    );
}

/// The DNSSEC state of each answer on zones signed by a real signer, through the real binary
/// (JSON and terminal form): secure answers are `secure` and the verdict is as usual; a
/// tampered key RRSIG makes that answer `bogus` and the verdict `cannot confirm` naming the
/// validation failure (exit 2); an insecure delegation is `ready` unless the domain's
/// override says `require_dnssec = true`. The anchor is the parent's DS, so domain-check
/// also matches a DS to the zone's keys before it looks anything up.
#[test]
fn dnssec_on_signed_zones() {
    if missing_tools("domain_check::dnssec_on_signed_zones").is_some() {
        return;
    }
    let record = key_record();
    let zone = |name, kind| Zone {
        name,
        kind,
        spf: true,
        extra: vec![
            format!("selector1._domainkey IN TXT {record}"),
            "_dmarc IN TXT \"v=DMARC1; p=reject\"".to_string(),
            format!("@ IN MX 10 mx.{name}."),
            "mx IN A 127.0.0.25".to_string(),
        ],
    };
    let tmp = tempfile::tempdir().unwrap();
    let dns = SignedWorld::start(
        tmp.path(),
        vec![
            zone("signed.gouv.fr", Kind::Signed),
            zone("bogus.gouv.fr", Kind::Tampered),
            zone("plain.gouv.fr", Kind::Unsigned),
            zone("strict.gouv.fr", Kind::Unsigned),
        ],
    );
    let layout = Layout::new(&tmp.path().join("gk"));
    let config = layout.write_config(dns.addr, &Settings::default());
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replacen(
            "[dns]\n",
            &format!(
                "[dns]\ndnssec = true\ntrust_anchor = \"{}\"\n",
                dns.ds_anchor.display()
            ),
            1,
        )
        .replacen(
            "alignment = \"strict\"\n",
            "alignment = \"strict\"\n[policy.domains.\"strict.gouv.fr\"]\nrequire_dnssec = true\n",
            1,
        );
    assert!(text.contains("trust_anchor") && text.contains("require_dnssec"));
    std::fs::write(&config, text).unwrap();

    // Signed: every answer secure, ready.
    let r = domain_check(&config, "signed.gouv.fr");
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert_eq!(r.json["verdict"], "ready", "{}", r.json);
    assert_eq!(r.json["dnssec"], "validated");
    for block in ["spf", "dmarc", "mx"] {
        assert_eq!(r.json[block]["dnssec"], "secure", "{block}: {}", r.json);
    }
    let k = key(&r, "selector1", "signed.gouv.fr");
    assert_eq!(
        (
            k["status"].as_str(),
            k["bits"].as_u64(),
            k["dnssec"].as_str()
        ),
        (Some("found"), Some(2048), Some("secure")),
        "{k}"
    );
    for line in [
        "spf: found\n",
        "  dnssec: secure\n",
        "selector1._domainkey.signed.gouv.fr (usual): rsa 2048 bits usable (dnssec: secure)\n",
        "verdict: ready\n",
    ] {
        assert!(r.text.contains(line), "want {line:?} in:\n{}", r.text);
    }
    assert!(
        !r.text.contains("insecure") && !r.text.contains("bogus"),
        "{}",
        r.text
    );

    // Bogus: the key answer is not used, and the verdict says why.
    let r = domain_check(&config, "bogus.gouv.fr");
    assert_eq!(r.code, Some(2), "{}", r.text);
    assert_eq!(r.json["verdict"], "cannot confirm", "{}", r.json);
    assert_eq!(r.json["spf"]["dnssec"], "secure", "{}", r.json);
    let k = key(&r, "selector1", "bogus.gouv.fr");
    assert_eq!(
        (
            k["status"].as_str(),
            k["dnssec"].as_str(),
            k["usable"].as_bool()
        ),
        (Some("temperror"), Some("bogus"), Some(false)),
        "{k}"
    );
    let why = r.json["why"].to_string();
    assert!(
        why.contains("DNSSEC validation failed")
            && why.contains("the DKIM key at selector1._domainkey.bogus.gouv.fr"),
        "{why}"
    );
    assert!(r.json["snippet"].is_null(), "{}", r.json);
    for line in [
        "selector1._domainkey.bogus.gouv.fr (usual): DNSSEC bogus, not used\n",
        "verdict: cannot confirm\n  why: DNSSEC validation failed",
    ] {
        assert!(r.text.contains(line), "want {line:?} in:\n{}", r.text);
    }

    // Insecure (unsigned delegation, proven by the parent's NSEC): used, ready.
    let r = domain_check(&config, "plain.gouv.fr");
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert_eq!(r.json["verdict"], "ready", "{}", r.json);
    assert_eq!(r.json["spf"]["dnssec"], "insecure", "{}", r.json);
    assert_eq!(key(&r, "selector1", "plain.gouv.fr")["dnssec"], "insecure");
    assert!(r.text.contains("  dnssec: insecure\n"), "{}", r.text);

    // The same, with require_dnssec = true: cannot confirm.
    let r = domain_check(&config, "strict.gouv.fr");
    assert_eq!(r.code, Some(2), "{}", r.text);
    assert_eq!(r.json["verdict"], "cannot confirm", "{}", r.json);
    assert_eq!(r.json["spf"]["dnssec"], "insecure", "{}", r.json);
    let why = r.json["why"].to_string();
    assert!(
        why.contains("the SPF record is, the usable DKIM keys are unsigned")
            && why.contains("require_dnssec = true"),
        "{why}"
    );
    assert!(
        r.text
            .contains("verdict: cannot confirm\n  why: the SPF record is"),
        "{}",
        r.text
    );
}
