//! DNSSEC proven on real signed zones (issue 16): zones signed by ldns-signzone (Debian's
//! `ldnsutils`), served by NSD on loopback, validated by the daemon's resolver anchored on the
//! key this test generated for the parent zone `gouv.fr.` (`dns.trust_anchor`). NSD is the
//! daemon's only nameserver; it answers for the parent and for every child zone, and answers
//! DS queries from the parent, as a real delegation would.
//!
//! Each case is a real confirmation over SMTP: the reply class, the challenge's stored state
//! (`GET /v1/challenges/{id}`) and the SIEM event with its `dnssec.*` check results.
//!
//! | zone | what is wrong | outcome |
//! |---|---|---|
//! | `secure.gouv.fr` | nothing: signed, DS in the parent | 250, evidence `secure` |
//! | `tampered.gouv.fr` | one byte of the key TXT's RRSIG changed | 451 `dns.temperror`, `dnssec.dkim` bogus |
//! | `expired.gouv.fr` | signatures expired in 2020 | 451 `dns.temperror`, both bogus |
//! | `nosig.gouv.fr` | the key TXT's RRSIG removed | 451 `dns.temperror`, `dnssec.dkim` bogus |
//! | `brokenchain.gouv.fr` | signed, the parent's DS is of another key | 451 `dns.temperror`, both bogus |
//! | `plain.gouv.fr` | unsigned, no DS (insecure) | 250, evidence `insecure` |
//! | `strict.gouv.fr` | unsigned, `require_dnssec = true` | 451 `dns.temperror`, `insecure_refused` |
//! | `nospf.gouv.fr` | signed, no SPF record (a proven NODATA) | 550 `spf.none`, not a 4xx |
//! | `nokey.gouv.fr` | signed, no key at the selector (proven NXDOMAIN) | 550 `dkim.fail` |
//! | `m365.gouv.fr` `selector1` | signed CNAME into the unsigned `tenant.gouv.fr` | 250, key `insecure` |
//! | `m365.gouv.fr` `selector2` | signed CNAME into the signed `secure.gouv.fr` | 250, key `secure` |
//! | `m365.gouv.fr` `selector3` | signed CNAME into the tampered key of `tampered.gouv.fr` | 451, key `bogus` |
//! | `m365strict.gouv.fr` | the `selector1` CNAME, `require_dnssec = true` | 451, key `insecure_refused` |
//!
//! Needs `ldns-keygen`, `ldns-signzone`, `ldns-key2ds` and `nsd` (tests/run.sh installs them
//! from .ci/packages); without them the test says so loudly on stderr and does nothing else,
//! except under `CI` (set by CI, which installs them), where a missing tool fails it.
//!
//! Run: `cargo test --test dnssec`.

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use common::Vars;
use common::e2e::{Api, Events, Layout, Settings, Smtp, reason_of, send_mail};
use common::mail::{Mail, Sig};
use common::signed::{Kind, SELECTOR, SignedWorld, Zone, key_record, missing_tools};

fn zones() -> Vec<Zone> {
    let key = key_record();
    let with_key = |name, kind| Zone {
        name,
        kind,
        spf: true,
        extra: vec![format!("{SELECTOR}._domainkey IN TXT {key}")],
    };
    vec![
        with_key("secure.gouv.fr", Kind::Signed),
        with_key("tampered.gouv.fr", Kind::Tampered),
        with_key("expired.gouv.fr", Kind::Expired),
        with_key("nosig.gouv.fr", Kind::NoKeySig),
        with_key("brokenchain.gouv.fr", Kind::WrongDs),
        with_key("plain.gouv.fr", Kind::Unsigned),
        with_key("strict.gouv.fr", Kind::Unsigned),
        // Microsoft 365's pattern: the selector is a CNAME into the tenant's zone.
        with_key("tenant.gouv.fr", Kind::Unsigned),
        // Proven absences: no SPF record; no key at the selector.
        Zone {
            spf: false,
            ..with_key("nospf.gouv.fr", Kind::Signed)
        },
        Zone {
            extra: Vec::new(),
            ..with_key("nokey.gouv.fr", Kind::Signed)
        },
        Zone {
            name: "m365.gouv.fr",
            kind: Kind::Signed,
            spf: true,
            extra: vec![
                format!("selector1._domainkey IN CNAME {SELECTOR}._domainkey.tenant.gouv.fr."),
                format!("selector2._domainkey IN CNAME {SELECTOR}._domainkey.secure.gouv.fr."),
                format!("selector3._domainkey IN CNAME {SELECTOR}._domainkey.tampered.gouv.fr."),
            ],
        },
        Zone {
            name: "m365strict.gouv.fr",
            kind: Kind::Signed,
            spf: true,
            extra: vec![format!(
                "selector1._domainkey IN CNAME {SELECTOR}._domainkey.tenant.gouv.fr."
            )],
        },
    ]
}

/// The daemon on the world's configuration plus DNSSEC: validation on, the generated anchor,
/// `require_dnssec` for two domains.
struct Daemon {
    layout: Layout,
    api: Api,
    events: Events,
    smtp: SocketAddr,
    _running: gatekeeper::daemon::Running,
}

async fn start_daemon(tmp: &Path, dns: &SignedWorld, anchor: &Path) -> Daemon {
    let layout = Layout::new(&tmp.join("gk"));
    let path = write_config(&layout, dns, anchor);
    let running = gatekeeper::daemon::start(gatekeeper::daemon::ConfigSource::File(path))
        .await
        .expect("daemon starts");
    Daemon {
        api: Api::new(running.api_addr, &layout.token_file),
        events: Events::new(&layout.events),
        smtp: running.smtp_addrs[0],
        layout,
        _running: running,
    }
}

/// The world's configuration with validation on, `anchor` as `dns.trust_anchor`, and
/// `require_dnssec` for two domains.
fn write_config(layout: &Layout, dns: &SignedWorld, anchor: &Path) -> std::path::PathBuf {
    let path = layout.write_config(dns.addr, &Settings::default());
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replacen(
            "[dns]\n",
            &format!(
                "[dns]\ndnssec = true\ntrust_anchor = \"{}\"\n",
                anchor.display()
            ),
            1,
        )
        .replacen(
            "alignment = \"strict\"\n",
            "alignment = \"strict\"\n\
             [policy.domains.\"strict.gouv.fr\"]\nrequire_dnssec = true\n\
             [policy.domains.\"m365strict.gouv.fr\"]\nrequire_dnssec = true\n",
            1,
        );
    assert!(text.contains("trust_anchor") && text.contains("require_dnssec"));
    std::fs::write(&path, text).unwrap();
    path
}

/// One row: who confirms, with which selector, and what must happen.
struct Case {
    address: &'static str,
    selector: &'static str,
    /// 250, 451 (`dns.temperror`) or a 550 with `reason`.
    code: u16,
    /// The refusal's reason (empty when accepted).
    reason: &'static str,
    /// `dnssec.spf` and `dnssec.dkim` in the event.
    spf: &'static str,
    dkim: &'static str,
}

fn reply_mail(address: &str, selector: &str) -> Mail {
    let domain = address.split_once('@').unwrap().1;
    Mail::alice()
        .envelope(address)
        .set("From", &format!("From: Agent <{address}>"))
        .set("Message-ID", &format!("Message-ID: <{{MSGID}}@{domain}>"))
        .sigs(vec![Sig::with(
            "gov-rsa2048",
            domain,
            selector,
            "rsa-sha256",
        )])
}

fn check_of<'a>(event: &'a Value, name: &str) -> &'a str {
    event["gatekeeper"]["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .and_then(|c| c["result"].as_str())
        .unwrap_or("missing")
}

async fn confirm(d: &Daemon, case: &Case, n: u32) {
    let row = format!("{} ({})", case.address, case.selector);
    let (status, body) = d.api.claim(case.address).await;
    assert_eq!(status, 201, "{row}: POST /v1/challenges: {body}");
    let id = body["id"].as_str().unwrap().to_string();
    let challenge = d.layout.challenge_mail(&id);
    let mut vars = Vars::new(Utc::now(), n);
    vars.token = challenge.token;
    vars.challenge_msgid = challenge.message_id;
    vars.session_code = body["session_code"].as_str().unwrap().to_string();

    let mail = reply_mail(case.address, case.selector);
    let ip: IpAddr = mail.client_ip.parse().unwrap();
    let mut smtp = Smtp::connect(ip, d.smtp).await.expect("connect");
    let rcpt = format!("confirm+{}@verify.example.gouv.fr", vars.token);
    let reply = send_mail(
        &mut smtp,
        &mail.helo,
        &mail.mail_from,
        &rcpt,
        &mail.build(&vars),
    )
    .await
    .unwrap_or_else(|| panic!("{row}: no reply after DATA"));
    smtp.quit().await;
    assert_eq!(reply.code, case.code, "{row}: {reply}");

    // The event of the session: accepted, or deferred with dns.temperror.
    let events = d
        .events
        .wait_client(
            smtp.local.ip(),
            smtp.local.port(),
            Duration::from_secs(3),
            |evs| {
                evs.iter().any(|e| {
                    e["event"]["action"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("confirmation-"))
                })
            },
        )
        .await;
    let event = events
        .iter()
        .find(|e| {
            e["event"]["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("confirmation-"))
        })
        .unwrap_or_else(|| panic!("{row}: no confirmation event: {events:?}"));
    assert_eq!(check_of(event, "dnssec.spf"), case.spf, "{row}: {event}");
    assert_eq!(check_of(event, "dnssec.dkim"), case.dkim, "{row}: {event}");

    let shown = d.api.show(&id).await;
    if case.code == 250 {
        assert_eq!(event["event"]["action"], "confirmation-accepted", "{row}");
        assert_eq!(shown["status"], "confirmed", "{row}: {shown}");
        let ev = &shown["evidence"];
        assert_eq!(ev["spf_dnssec"], case.spf, "{row}: {ev}");
        assert_eq!(ev["dkim_key_dnssec"], case.dkim, "{row}: {ev}");
        assert_eq!(ev["dkim_selector"], case.selector, "{row}: {ev}");
    } else if case.code == 550 {
        // A proven absence is a definite answer: the permanent refusal, not a 4xx.
        assert_eq!(reason_of(event), case.reason, "{row}: {event}");
        assert_eq!(shown["status"], "pending", "{row}: {shown}");
        assert_eq!(shown["rejections"], 1, "{row}: {shown}");
    } else {
        assert_eq!(reason_of(event), case.reason, "{row}: {event}");
        assert!(reply.text.contains("4.4.3"), "{row}: {reply}");
        // Temporary: the challenge stays pending, and (like every 4xx) the refusal is not
        // counted against the person, who did nothing wrong.
        assert_eq!(shown["status"], "pending", "{row}: {shown}");
        assert!(shown["confirmed_at"].is_null(), "{row}: {shown}");
        assert_eq!(shown["rejections"], 0, "{row}: {shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmations_on_signed_zones() {
    if missing_tools("dnssec::confirmations_on_signed_zones").is_some() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dns = SignedWorld::start(tmp.path(), zones());
    let d = start_daemon(tmp.path(), &dns, &dns.anchor).await;
    let rows = [
        Case {
            address: "alice@secure.gouv.fr",
            selector: SELECTOR,
            code: 250,
            reason: "",
            spf: "secure",
            dkim: "secure",
        },
        Case {
            address: "alice@tampered.gouv.fr",
            selector: SELECTOR,
            code: 451,
            reason: "dns.temperror",
            spf: "secure",
            dkim: "bogus",
        },
        Case {
            address: "alice@expired.gouv.fr",
            selector: SELECTOR,
            code: 451,
            reason: "dns.temperror",
            spf: "bogus",
            dkim: "bogus",
        },
        Case {
            address: "alice@nosig.gouv.fr",
            selector: SELECTOR,
            code: 451,
            reason: "dns.temperror",
            spf: "secure",
            dkim: "bogus",
        },
        Case {
            address: "alice@brokenchain.gouv.fr",
            selector: SELECTOR,
            code: 451,
            reason: "dns.temperror",
            spf: "bogus",
            dkim: "bogus",
        },
        Case {
            address: "alice@plain.gouv.fr",
            selector: SELECTOR,
            code: 250,
            reason: "",
            spf: "insecure",
            dkim: "insecure",
        },
        Case {
            address: "alice@strict.gouv.fr",
            selector: SELECTOR,
            code: 451,
            reason: "dns.temperror",
            spf: "insecure_refused",
            dkim: "insecure_refused",
        },
        Case {
            address: "alice@nospf.gouv.fr",
            selector: SELECTOR,
            code: 550,
            reason: "spf.none",
            spf: "secure",
            dkim: "secure",
        },
        Case {
            address: "alice@nokey.gouv.fr",
            selector: SELECTOR,
            code: 550,
            reason: "dkim.fail",
            spf: "secure",
            dkim: "secure",
        },
        Case {
            address: "alice@m365.gouv.fr",
            selector: "selector1",
            code: 250,
            reason: "",
            spf: "secure",
            dkim: "insecure",
        },
        Case {
            address: "bob@m365.gouv.fr",
            selector: "selector2",
            code: 250,
            reason: "",
            spf: "secure",
            dkim: "secure",
        },
        Case {
            address: "carol@m365.gouv.fr",
            selector: "selector3",
            code: 451,
            reason: "dns.temperror",
            spf: "secure",
            dkim: "bogus",
        },
        Case {
            address: "alice@m365strict.gouv.fr",
            selector: "selector1",
            code: 451,
            reason: "dns.temperror",
            spf: "secure",
            dkim: "insecure_refused",
        },
    ];
    for (n, case) in rows.iter().enumerate() {
        confirm(&d, case, u32::try_from(n).unwrap() + 1).await;
    }

    // The anchor decides: the same kind of secure reply through `gatekeeper verify` (the
    // real binary), with the configured anchor, then with a key the zone never published.
    let address = "carol@secure.gouv.fr";
    let eml = tmp.path().join("secure.eml");
    let vars = Vars::new(Utc::now(), 99);
    std::fs::write(&eml, reply_mail(address, SELECTOR).build(&vars)).unwrap();
    let (code, json) = verify_cli(&d.layout.config, &eml, address);
    assert_eq!(
        (code, json["decision"].as_str()),
        (0, Some("accept")),
        "{json}"
    );
    assert_eq!(json["checks"]["dnssec.spf"], "secure", "{json}");
    assert_eq!(json["checks"]["dnssec.dkim"], "secure", "{json}");
    let wrong = tmp.path().join("wrong.toml");
    let text = std::fs::read_to_string(&d.layout.config).unwrap().replace(
        &dns.anchor.display().to_string(),
        &dns.wrong_anchor.display().to_string(),
    );
    std::fs::write(&wrong, text).unwrap();
    let (code, json) = verify_cli(&wrong, &eml, address);
    assert_eq!(
        (code, json["decision"].as_str()),
        (2, Some("tempfail")),
        "{json}"
    );
    assert_eq!(json["reason"], "dns.temperror", "{json}");
    assert_eq!(json["checks"]["dnssec.spf"], "bogus", "{json}");
    assert_eq!(json["checks"]["dnssec.dkim"], "bogus", "{json}");
}

/// `dns.trust_anchor` as a DS record (issue 16: "a file of DS or DNSKEY records"): at start
/// the daemon fetches the DNSKEYs of `gouv.fr.` through NSD, keeps the one the DS digest
/// names once it has checked the set's signature, and validates as with the DNSKEY file.
/// A DS whose digest matches no published key refuses the start, naming the file's line;
/// so does a resolver that does not answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ds_trust_anchor() {
    if missing_tools("dnssec::ds_trust_anchor").is_some() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wanted = ["secure.gouv.fr", "tampered.gouv.fr", "plain.gouv.fr"];
    let world = zones()
        .into_iter()
        .filter(|z| wanted.contains(&z.name))
        .collect();
    let dns = SignedWorld::start(tmp.path(), world);
    let text = std::fs::read_to_string(&dns.ds_anchor).unwrap();
    assert!(
        text.contains("\tDS\t") && !text.contains("DNSKEY"),
        "a DS-only anchor: {text}"
    );
    let d = start_daemon(tmp.path(), &dns, &dns.ds_anchor).await;
    let rows = [
        Case {
            address: "alice@secure.gouv.fr",
            selector: SELECTOR,
            code: 250,
            reason: "",
            spf: "secure",
            dkim: "secure",
        },
        Case {
            address: "alice@tampered.gouv.fr",
            selector: SELECTOR,
            code: 451,
            reason: "dns.temperror",
            spf: "secure",
            dkim: "bogus",
        },
        Case {
            address: "alice@plain.gouv.fr",
            selector: SELECTOR,
            code: 250,
            reason: "",
            spf: "insecure",
            dkim: "insecure",
        },
    ];
    for (n, case) in rows.iter().enumerate() {
        confirm(&d, case, u32::try_from(n).unwrap() + 1).await;
    }
    // `gatekeeper verify` (the real binary) matches the DS to the keys the same way.
    let address = "carol@secure.gouv.fr";
    let eml = tmp.path().join("secure.eml");
    let vars = Vars::new(Utc::now(), 99);
    std::fs::write(&eml, reply_mail(address, SELECTOR).build(&vars)).unwrap();
    let (code, json) = verify_cli(&d.layout.config, &eml, address);
    assert_eq!(
        (code, json["decision"].as_str()),
        (0, Some("accept")),
        "{json}"
    );
    assert_eq!(json["checks"]["dnssec.dkim"], "secure", "{json}");

    // A DS of no published key: the start is refused, at the DS line (line 2: a comment
    // comes first).
    let layout = Layout::new(&tmp.path().join("gk-wrong"));
    let path = write_config(&layout, &dns, &dns.wrong_ds_anchor);
    let Err(e) = gatekeeper::daemon::start(gatekeeper::daemon::ConfigSource::File(path)).await
    else {
        panic!("started with a DS that matches no key");
    };
    let want = format!(
        "{}:2: DS for gouv.fr.: matches none of the 1 DNSKEY records gouv.fr. publishes",
        dns.wrong_ds_anchor.display()
    );
    assert!(e.to_string().contains(&want), "want {want:?} in: {e}");

    // No resolver answering (nothing listens on the port): refused too, saying so.
    let layout = Layout::new(&tmp.path().join("gk-down"));
    let path = write_config(&layout, &dns, &dns.ds_anchor);
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&dns.addr.to_string(), &format!("127.0.0.1:{port}"));
    std::fs::write(&path, text).unwrap();
    let Err(e) = gatekeeper::daemon::start(gatekeeper::daemon::ConfigSource::File(path)).await
    else {
        panic!("started without the keys the DS names");
    };
    let want = format!("{}:2: DS for gouv.fr.: ", dns.ds_anchor.display());
    assert!(e.to_string().contains(&want), "want {want:?} in: {e}");
}

/// `gatekeeper verify` without a recipient (the binding checks are skipped): exit code and
/// JSON verdict.
fn verify_cli(config: &Path, eml: &Path, mail_from: &str) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args(["verify", "-c"])
        .arg(config)
        .args([
            "--client-ip",
            "127.0.0.25",
            "--helo",
            "smtp.interieur.gouv.fr",
        ])
        .args(["--mail-from", mail_from])
        .arg(eml)
        .output()
        .expect("run gatekeeper verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

/// DNSSEC settings an operator can get wrong are refused at load by `gatekeeper check-config`
/// (exit 1), each error naming its line: the anchor file's own line for a bad record.
#[test]
fn check_config_refuses_dnssec_mistakes() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(tmp.path());
    let path = layout.write_config("127.0.0.1:53".parse().unwrap(), &Settings::default());
    let base = std::fs::read_to_string(&path).unwrap();
    let anchor = tmp.path().join("anchor");
    std::fs::write(
        &anchor,
        "; the parent's key\ngouv.fr. IN DS 7746 13 2 95d492676bc76d52dde875596b5994d6fb4e6a83\n\
         gouv.fr. IN DS 7746 13 1 95d492676bc76d52dde875596b5994d6fb4e6a83\n",
    )
    .unwrap();
    let a = anchor.display();
    // (what is added under [dns], under [policy], what the error must say)
    let rows = [
        (
            format!("dnssec = true\ntrust_anchor = \"{a}\"\n"),
            String::new(),
            format!("dns.trust_anchor: {a}:2: the digest has 20 bytes; digest type 2 has 32"),
        ),
        (
            format!("dnssec = true\ntrust_anchor = \"{a}\"\n"),
            String::new(),
            format!("dns.trust_anchor: {a}:3: digest type 1 (SHA-1) is too weak"),
        ),
        (
            format!("trust_anchor = \"{a}.missing\"\n"),
            String::new(),
            "dns.trust_anchor: set dns.dnssec = true".to_string(),
        ),
        (
            String::new(),
            "[policy.domains.\"culture.gouv.fr\"]\nrequire_dnssec = true\n".to_string(),
            "require_dnssec: needs dns.dnssec = true".to_string(),
        ),
    ];
    for (dns, policy, want) in rows {
        let text = base
            .replacen("[dns]\n", &format!("[dns]\n{dns}"), 1)
            .replacen(
                "alignment = \"strict\"\n",
                &format!("alignment = \"strict\"\n{policy}"),
                1,
            );
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .args(["check-config", "-c", &path.display().to_string()])
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{want}: {said}");
        assert!(said.contains(&want), "want {want:?} in: {said}");
        // Every error names the configuration file and a line.
        assert!(
            said.contains(&format!("{}:", path.display())),
            "{want}: {said}"
        );
    }
    // A well-formed DS file passes check-config, which asks no DNS server: whether the DS
    // matches a published key is known at start (tested in `ds_trust_anchor`).
    std::fs::write(
        &anchor,
        ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n",
    )
    .unwrap();
    let text = base.replacen(
        "[dns]\n",
        &format!("[dns]\ndnssec = true\ntrust_anchor = \"{a}\"\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args(["check-config", "-c", &path.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
