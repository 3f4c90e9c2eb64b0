//! Signed DNS worlds for the DNSSEC tests (issue 16): child zones of `gouv.fr.` written to
//! disk, signed by ldns-signzone (Debian's `ldnsutils`) with keys ldns-keygen generated, the
//! parent holding their DS (ldns-key2ds), all served by NSD on a loopback port. The trust
//! anchor is the parent's key this world generated, as a DNSKEY file and as a DS file.
//!
//! Each zone shows one pattern ([`Kind`]): signed, tampered, expired, a missing RRSIG, an
//! unsigned (insecure) delegation, a broken chain. tests/dnssec.rs confirms over SMTP
//! against it; tests/domain_check.rs runs `gatekeeper domain-check` against it.
//!
//! Needs `ldns-keygen`, `ldns-signzone`, `ldns-key2ds` and `nsd` ([`TOOLS`]; tests/run.sh
//! installs them from .ci/packages): [`missing_tools`] says whether a test must skip.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::corpus;

pub const TOOLS: [&str; 4] = ["ldns-keygen", "ldns-signzone", "ldns-key2ds", "nsd"];

/// The DKIM selector every signed child publishes its key at.
pub const SELECTOR: &str = "s2024";

/// `None` when every tool is installed, else why the test `name` skips (said loudly on
/// stderr). Under `CI` (which installs .ci/packages) a missing tool fails the test instead.
pub fn missing_tools(name: &str) -> Option<String> {
    let missing: Vec<&str> = TOOLS.into_iter().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return None;
    }
    let message = format!(
        "SKIPPED {name}: {} not installed \
         (apt-get install ldnsutils nsd, or bash tests/run.sh --install-only)",
        missing.join(", ")
    );
    assert!(std::env::var_os("CI").is_none(), "{message}");
    // Straight to the process's stderr: the test harness captures `eprintln!` of a passing
    // test, and this skip must be seen.
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "\n*** {message} ***\n");
    Some(message)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn run(dir: &Path, program: &str, args: &[&str]) -> String {
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
pub fn txt(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a child zone is published.
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
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

pub struct Zone {
    pub name: &'static str,
    pub kind: Kind,
    /// Publishes `v=spf1 ip4:127.0.0.25 -all` at the apex.
    pub spf: bool,
    /// Records beyond SOA, NS and SPF, relative to the zone.
    pub extra: Vec<String>,
}

/// The zones on disk, signed, and NSD serving them.
pub struct SignedWorld {
    /// The parent's only DNSKEY, as ldns-keygen wrote it.
    pub anchor: PathBuf,
    /// The same key as a DS record (SHA-256), as ldns-key2ds wrote it.
    pub ds_anchor: PathBuf,
    /// That DS with one digest byte changed: it matches no key the parent publishes.
    pub wrong_ds_anchor: PathBuf,
    /// Another key generated for `gouv.fr.`, never published: an anchor that proves nothing.
    pub wrong_anchor: PathBuf,
    nsd: Child,
    pub addr: SocketAddr,
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

/// The RSA-2048 DKIM key of the corpus (`gov-rsa2048`) as a TXT record value.
pub fn key_record() -> String {
    let key = corpus::key("gov-rsa2048").public_b64();
    txt(&format!("v=DKIM1; k=rsa; p={key}"))
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

/// Is this signed-zone line the RRSIG over a DKIM key TXT (a zone to tamper with publishes
/// one key)?
fn is_key_rrsig(line: &str) -> bool {
    let f: Vec<&str> = line.split_whitespace().collect();
    f.first()
        .is_some_and(|owner| owner.contains("._domainkey."))
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
    /// Write, sign and serve `zones` (children of `gouv.fr.`) under `dir/dns`.
    pub fn start(dir: &Path, zones: Vec<Zone>) -> SignedWorld {
        let dir = dir.join("dns");
        std::fs::create_dir_all(&dir).unwrap();
        let mut parent = vec!["ns IN A 127.0.0.1".to_string()];
        let mut served = Vec::new();
        for z in zones {
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
        let ds = run(&dir, "ldns-key2ds", &["-n", "-2", &format!("{key}.key")]);
        let ds_anchor = dir.join("ds-anchor");
        std::fs::write(
            &ds_anchor,
            format!("; gouv.fr's key as its parent would list it\n{ds}\n"),
        )
        .unwrap();
        let wrong_ds_anchor = dir.join("wrong-ds-anchor");
        std::fs::write(
            &wrong_ds_anchor,
            format!("; a digest of no key\n{}\n", flip_last(&ds)),
        )
        .unwrap();
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
            ds_anchor,
            wrong_ds_anchor,
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

/// The line with its last character changed to another hex digit.
fn flip_last(line: &str) -> String {
    let mut out = line.trim_end().to_string();
    let last = out.pop().unwrap();
    out.push(if last == '0' { '1' } else { '0' });
    out
}
