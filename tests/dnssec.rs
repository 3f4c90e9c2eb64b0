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

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;

use common::Vars;
use common::corpus;
use common::e2e::{Api, Events, Layout, Settings, Smtp, reason_of, send_mail};
use common::mail::{Mail, Sig};

const TOOLS: [&str; 4] = ["ldns-keygen", "ldns-signzone", "ldns-key2ds", "nsd"];

/// The DKIM selector every signed child publishes its key at.
const SELECTOR: &str = "s2024";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A TXT record's strings on one line, each at most 255 octets (RFC 1035 §3.3.14).
fn txt(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a child zone is published.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Signed,
    /// Signed, then one byte of the RRSIG over the key TXT changed.
    Tampered,
    /// Signed with signatures that expired in 2020.
    Expired,
    /// Signed, then the RRSIG over the key TXT removed.
    NoKeySig,
    /// Not signed; the parent has no DS for it (a provably insecure delegation).
    Unsigned,
    /// Signed, but the parent's DS is of another key (a broken chain of trust).
    WrongDs,
}

struct Zone {
    name: &'static str,
    kind: Kind,
    /// Publishes `v=spf1 ip4:127.0.0.25 -all` at the apex.
    spf: bool,
    /// Records beyond SOA, NS and SPF, relative to the zone.
    extra: Vec<String>,
}

/// The zones on disk, signed, and NSD serving them.
struct SignedWorld {
    anchor: PathBuf,
    /// Another key generated for `gouv.fr.`, never published: an anchor that proves nothing.
    wrong_anchor: PathBuf,
    nsd: Child,
    addr: SocketAddr,
}

impl Drop for SignedWorld {
    fn drop(&mut self) {
        // SIGTERM lets NSD stop its server and xfrd children too.
        let _ = Command::new("kill").arg(self.nsd.id().to_string()).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.nsd.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.nsd.kill();
        let _ = self.nsd.wait();
    }
}

fn key_record() -> String {
    let key = corpus::key("gov-rsa2048").public_b64();
    txt(&format!("v=DKIM1; k=rsa; p={key}"))
}

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

fn zone_text(origin: &str, spf: bool, extra: &[String]) -> String {
    let mut text = format!(
        "$ORIGIN {origin}.\n$TTL 300\n\
         @ IN SOA ns.gouv.fr. hostmaster.gouv.fr. 1 3600 600 86400 300\n\
         @ IN NS ns.gouv.fr.\n"
    );
    if spf {
        text.push_str("@ IN TXT \"v=spf1 ip4:127.0.0.25 -all\"\n");
    }
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Generate a key for `zone` (one combined signing key, flags 257); its file base name.
fn keygen(dir: &Path, zone: &str) -> String {
    run(dir, "ldns-keygen", &["-a", "ECDSAP256SHA256", "-k", zone])
}

/// Sign `file` with `key`; the signed file's name. `expired` signs for January 2020.
fn sign(dir: &Path, file: &str, key: &str, expired: bool) -> String {
    let signed = format!("{file}.signed");
    let mut args = vec!["-f", signed.as_str()];
    if expired {
        args.extend(["-i", "20200101", "-e", "20200201"]);
    }
    args.extend([file, key]);
    run(dir, "ldns-signzone", &args);
    signed
}

/// Is this signed-zone line the RRSIG over the DKIM key TXT?
fn is_key_rrsig(line: &str) -> bool {
    let f: Vec<&str> = line.split_whitespace().collect();
    f.first()
        .is_some_and(|owner| owner.starts_with(&format!("{SELECTOR}._domainkey.")))
        && f.get(3) == Some(&"RRSIG")
        && f.get(4) == Some(&"TXT")
}

fn tamper(path: &Path, kind: Kind) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut touched = 0;
    let lines: Vec<String> = text
        .lines()
        .filter_map(|line| {
            if !is_key_rrsig(line) {
                return Some(line.to_string());
            }
            touched += 1;
            match kind {
                Kind::NoKeySig => None,
                // The first character of the signature (the last field): still base64, no
                // longer the signature.
                _ => {
                    let at = line.rfind(char::is_whitespace).unwrap() + 1;
                    let mut l = line.to_string();
                    let c = if l[at..].starts_with('A') { "B" } else { "A" };
                    l.replace_range(at..at + 1, c);
                    Some(l)
                }
            }
        })
        .collect();
    assert_eq!(
        touched,
        1,
        "one RRSIG over the key TXT in {}",
        path.display()
    );
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// A free loopback port for both UDP and TCP (NSD binds both).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One SOA query for `gouv.fr.` over UDP: has NSD started answering?
fn answers(addr: SocketAddr) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut q = vec![0x12, 0x34, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    for label in ["gouv", "fr"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0x00, 0x06, 0x00, 0x01]);
    if sock.send_to(&q, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    // A NOERROR answer to our id.
    matches!(sock.recv_from(&mut buf), Ok((n, _)) if n > 12 && buf[..2] == [0x12, 0x34] && buf[3] & 0x0f == 0)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl SignedWorld {
    fn start(dir: &Path) -> SignedWorld {
        let dir = dir.join("dns");
        std::fs::create_dir_all(&dir).unwrap();
        let mut parent = vec!["ns IN A 127.0.0.1".to_string()];
        let mut served = Vec::new();
        for z in zones() {
            let file = format!("{}.zone", z.name);
            std::fs::write(dir.join(&file), zone_text(z.name, z.spf, &z.extra)).unwrap();
            let child = z.name.strip_suffix(".gouv.fr").unwrap();
            parent.push(format!("{child} IN NS ns.gouv.fr."));
            if z.kind == Kind::Unsigned {
                served.push((z.name.to_string(), file));
                continue;
            }
            let key = keygen(&dir, z.name);
            let delegated = if z.kind == Kind::WrongDs {
                keygen(&dir, z.name)
            } else {
                key.clone()
            };
            parent.push(run(
                &dir,
                "ldns-key2ds",
                &["-n", "-2", &format!("{delegated}.key")],
            ));
            let signed = sign(&dir, &file, &key, z.kind == Kind::Expired);
            if matches!(z.kind, Kind::Tampered | Kind::NoKeySig) {
                tamper(&dir.join(&signed), z.kind);
            }
            served.push((z.name.to_string(), signed));
        }
        std::fs::write(
            dir.join("gouv.fr.zone"),
            zone_text("gouv.fr", false, &parent),
        )
        .unwrap();
        let key = keygen(&dir, "gouv.fr");
        let signed = sign(&dir, "gouv.fr.zone", &key, false);
        served.push(("gouv.fr".to_string(), signed));
        // The anchor: the parent's only DNSKEY, as ldns-keygen wrote it.
        let anchor = dir.join("trust-anchor");
        std::fs::copy(dir.join(format!("{key}.key")), &anchor).unwrap();
        let spare = keygen(&dir, "gouv.fr");
        let wrong_anchor = dir.join("wrong-anchor");
        std::fs::copy(dir.join(format!("{spare}.key")), &wrong_anchor).unwrap();

        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let d = dir.display();
        let mut conf = format!(
            "server:\n    ip-address: 127.0.0.1@{port}\n    port: {port}\n    do-ip6: no\n    \
             username: \"\"\n    chroot: \"\"\n    zonesdir: \"{d}\"\n    database: \"\"\n    \
             zonelistfile: \"{d}/zone.list\"\n    xfrdfile: \"{d}/xfrd.state\"\n    \
             xfrdir: \"{d}\"\n    pidfile: \"{d}/nsd.pid\"\n    logfile: \"{d}/nsd.log\"\n    \
             server-count: 1\n    verbosity: 1\nremote-control:\n    control-enable: no\n"
        );
        for (name, file) in &served {
            conf.push_str(&format!(
                "zone:\n    name: \"{name}\"\n    zonefile: \"{file}\"\n"
            ));
        }
        std::fs::write(dir.join("nsd.conf"), conf).unwrap();
        let conf = dir.join("nsd.conf").display().to_string();
        // As root, NSD runs as nobody (it refuses nothing, but a test server needs no root).
        let mut cmd = if is_root() {
            let tree = dir.parent().unwrap().display().to_string();
            run(&dir, "chown", &["-R", "nobody:nogroup", &tree]);
            run(&dir, "chmod", &["0755", &tree]);
            let mut c = Command::new("setpriv");
            c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "nsd"]);
            c
        } else {
            Command::new("nsd")
        };
        let nsd = cmd
            .args(["-d", "-c", &conf])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nsd");
        let world = SignedWorld {
            anchor,
            wrong_anchor,
            nsd,
            addr,
        };
        let started = Instant::now();
        while !answers(addr) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "NSD did not answer: {}",
                std::fs::read_to_string(dir.join("nsd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        world
    }
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

async fn start_daemon(tmp: &Path, dns: &SignedWorld) -> Daemon {
    let layout = Layout::new(&tmp.join("gk"));
    let path = layout.write_config(dns.addr, &Settings::default());
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replacen(
            "[dns]\n",
            &format!(
                "[dns]\ndnssec = true\ntrust_anchor = \"{}\"\n",
                dns.anchor.display()
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
    let missing: Vec<&str> = TOOLS.into_iter().filter(|t| !have(t)).collect();
    if !missing.is_empty() {
        let message = format!(
            "SKIPPED dnssec::confirmations_on_signed_zones: {} not installed \
             (apt-get install ldnsutils nsd, or bash tests/run.sh --install-only)",
            missing.join(", ")
        );
        // CI installs .ci/packages: there a missing signer is a broken CI, not a skip.
        assert!(std::env::var_os("CI").is_none(), "{message}");
        // Straight to the process's stderr: the test harness captures `eprintln!` of a
        // passing test, and this skip must be seen.
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "\n*** {message} ***\n");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dns = SignedWorld::start(tmp.path());
    let d = start_daemon(tmp.path(), &dns).await;
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
        "; the parent's key\ngouv.fr. IN DS 7746 13 2 95d492676bc76d52dde875596b5994d6fb4e6a83\n",
    )
    .unwrap();
    let a = anchor.display();
    // (what is added under [dns], under [policy], what the error must say)
    let rows = [
        (
            format!("dnssec = true\ntrust_anchor = \"{a}\"\n"),
            String::new(),
            format!("dns.trust_anchor: {a}:2: DS records cannot anchor"),
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
}
