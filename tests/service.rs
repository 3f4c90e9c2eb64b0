//! The daemon as systemd runs it: the real binary in its own process, the notify protocol on a
//! real unix datagram socket, socket activation through `systemd-socket-activate`, signals
//! sent with `kill`, SMTP and STARTTLS over loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::{CertificateDer, ServerName};

const BIN: &str = env!("CARGO_BIN_EXE_gatekeeper");
/// Upper bound of every wait: generous, a loaded 2-core CI machine must never hit it.
const WAIT: Duration = Duration::from_secs(30);

/// The configuration of one test daemon; every path is relative to its working directory.
#[derive(Clone)]
struct Conf {
    listen: String,
    hostname: String,
    max_message_bytes: u32,
    shutdown_grace: &'static str,
    tls: bool,
}

impl Conf {
    fn new(hostname: &str) -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            hostname: hostname.into(),
            max_message_bytes: 1_048_576,
            shutdown_grace: "5s",
            tls: false,
        }
    }

    fn text(&self) -> String {
        let tls = if self.tls {
            "[smtp.tls]\ncertificate = \"tls/cert.pem\"\nprivate_key = \"tls/key.pem\"\n"
        } else {
            ""
        };
        format!(
            r#"[smtp]
listen = ["{listen}"]
hostname = "{hostname}"
max_message_bytes = {size}
shutdown_grace = "{grace}"
command_timeout = "5m"
{tls}
[confirm]
domain = "verify.example.gouv.fr"

[policy]
allowed_domains = ["gouv.fr"]

[dns]
nameservers = ["127.0.0.1:9"]
timeout = "1s"

[store]
path = "state/gatekeeper.db"

[api]
listen = "127.0.0.1:0"
token_file = "state/api-token"

[outbound]
from = "Inscription <noreply@verify.example.gouv.fr>"
directory = "state/outbox"

[siem]
spool_path = "state/siem-spool.db"

[[siem.sink]]
type = "file"
path = "state/events.jsonl"
"#,
            listen = self.listen,
            hostname = self.hostname,
            size = self.max_message_bytes,
            grace = self.shutdown_grace,
        )
    }
}

/// A working directory with the configuration at `gatekeeper.toml`.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(conf: &Conf) -> Self {
        let site = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        site.write_config(&conf.text());
        site
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config(&self) -> PathBuf {
        self.path("gatekeeper.toml")
    }

    /// Replace the configuration the way an editor or a deployment tool does: a whole new
    /// file renamed over the old one.
    fn write_config(&self, text: &str) {
        let tmp = self.path("gatekeeper.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.config()).unwrap();
    }

    /// Write a fresh self-signed certificate for `localhost` where `[smtp.tls]` points.
    fn write_certificate(&self) -> CertificateDer<'static> {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::create_dir_all(self.path("tls")).unwrap();
        std::fs::write(self.path("tls/cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(self.path("tls/key.pem"), ck.signing_key.serialize_pem()).unwrap();
        ck.cert.der().clone()
    }

    /// The notify socket the daemon will report to.
    fn notify_socket(&self) -> Notify {
        let path = self.path("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Notify {
            sock,
            path,
            seen: Vec::new(),
        }
    }
}

/// The service manager's end of `NOTIFY_SOCKET`.
struct Notify {
    sock: UnixDatagram,
    path: PathBuf,
    /// Every datagram received so far, in order.
    seen: Vec<String>,
}

impl Notify {
    /// Receive until a datagram has the line `line`; returns that datagram.
    fn wait_for(&mut self, line: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.seen.push(msg.clone());
                    if msg.lines().any(|l| l == line) {
                        return msg;
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("notify socket: {e}"),
            }
        }
        panic!("no {line:?} within {WAIT:?}; received {:?}", self.seen);
    }
}

/// Standard error of a daemon, collected line by line by a thread.
#[derive(Clone, Default)]
struct Log {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Log {
    fn collect(stream: impl Read + Send + 'static) -> Self {
        let log = Log::default();
        let lines = Arc::clone(&log.lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        log
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first line (counting from `from`) containing `needle`, waiting for it.
    fn wait_for(&self, from: usize, needle: &str) -> (usize, String) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let lines = self.snapshot();
            if let Some((i, l)) = lines
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, l)| l.contains(needle))
            {
                return (i, l.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no log line with {needle:?}; log: {:#?}", self.snapshot());
    }

    /// The SMTP address from the start line `gatekeeper serving smtp=[127.0.0.1:N] ...`.
    fn smtp_addr(&self) -> SocketAddr {
        let (_, line) = self.wait_for(0, "gatekeeper serving");
        let start = line.find("smtp=[").unwrap() + "smtp=[".len();
        let end = start + line[start..].find(']').unwrap();
        line[start..end]
            .split(", ")
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// The daemon process; killed if a test fails before stopping it.
struct Daemon {
    child: Child,
    log: Log,
}

impl Daemon {
    /// `gatekeeper serve -c gatekeeper.toml` in the site's directory. `wrap` runs it through
    /// another program (a shell, systemd-socket-activate) that ends by exec'ing it, so the pid
    /// stays the daemon's.
    fn spawn(site: &Site, env: &[(&str, String)], wrap: &[&str]) -> Self {
        let (program, args): (&str, Vec<String>) = match wrap.split_first() {
            None => (BIN, vec![]),
            Some((p, rest)) => (p, rest.iter().map(|s| s.to_string()).collect()),
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(site.dir.path())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("JOURNAL_STREAM")
            .env_remove("RUST_LOG")
            .env_remove("GATEKEEPER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if wrap.is_empty() {
            cmd.args(["serve", "-c", "gatekeeper.toml"]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{program}: {e}"));
        let log = Log::collect(child.stderr.take().unwrap());
        Daemon { child, log }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}: {status}");
    }

    /// Wait for the process to exit; panics after [`WAIT`].
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon still running; log: {:#?}", self.log.snapshot());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line-oriented SMTP client with bounded reads.
struct Smtp {
    reader: BufReader<TcpStream>,
}

impl Smtp {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Smtp {
            reader: BufReader::new(stream),
        }
    }

    /// One reply, all its lines: (code, text).
    fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap();
            assert!(n > 0, "connection closed after {text:?}");
            text.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return (line[..3].parse().unwrap(), text);
            }
        }
    }

    fn cmd(&mut self, line: &str) -> (u16, String) {
        self.reader
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }

    /// EHLO, STARTTLS, the TLS handshake trusting `roots`; the certificate the server showed.
    fn starttls_peer(mut self, roots: &[CertificateDer<'static>]) -> CertificateDer<'static> {
        let (code, ehlo) = self.cmd("EHLO client.example");
        assert_eq!(code, 250, "{ehlo}");
        assert!(ehlo.contains("STARTTLS"), "{ehlo}");
        assert_eq!(self.cmd("STARTTLS").0, 220);
        assert!(self.reader.buffer().is_empty());
        let mut tcp = self.reader.into_inner();
        let mut store = rustls::RootCertStore::empty();
        for root in roots {
            store.add(root.clone()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
        let mut conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).unwrap();
        }
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(b"EHLO client.example\r\n").unwrap();
        let mut reader = BufReader::new(&mut tls);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("250"), "{line}");
        drop(reader);
        tls.conn.peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    }
}

/// Whether something accepts TCP connections at `addr`.
fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok()
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn socket_activate() -> &'static str {
    [
        "/usr/bin/systemd-socket-activate",
        "/lib/systemd/systemd-socket-activate",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("systemd-socket-activate (Debian package systemd) is required")
}

/// `Type=notify` as systemd speaks it: READY with a status line, watchdog pings for this pid,
/// RELOADING then READY around SIGHUP, STOPPING on SIGTERM, exit 0.
#[test]
fn notify_protocol() {
    let site = Site::new(&Conf::new("mx.old.example"));
    let mut notify = site.notify_socket();
    // WATCHDOG_PID must be the daemon's own pid: the shell sets it to its pid, then becomes
    // the daemon.
    let mut daemon = Daemon::spawn(
        &site,
        &[
            ("NOTIFY_SOCKET", notify.path.display().to_string()),
            ("WATCHDOG_USEC", "400000".into()),
            ("GK", BIN.into()),
        ],
        &[
            "sh",
            "-c",
            "export WATCHDOG_PID=$$; exec \"$GK\" serve -c gatekeeper.toml",
        ],
    );
    let ready = notify.wait_for("READY=1");
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=confirmed 0")),
        "{ready:?}"
    );
    // 400 ms timeout → a ping every 200 ms; wait for several.
    for _ in 0..3 {
        notify.wait_for("WATCHDOG=1");
    }
    let pings_before = notify.seen.len();

    daemon.signal("HUP");
    let reloading = notify.wait_for("RELOADING=1");
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    notify.wait_for("READY=1");
    daemon.log.wait_for(0, "configuration reloaded");
    notify.wait_for("WATCHDOG=1");
    assert!(notify.seen.len() > pings_before);

    daemon.signal("TERM");
    notify.wait_for("STOPPING=1");
    let status = daemon.wait_exit();
    assert!(status.success(), "{status}");
}

/// A pid other than ours in WATCHDOG_PID: the timeout is for another process, no pings.
#[test]
fn watchdog_for_another_pid_is_not_ours() {
    let site = Site::new(&Conf::new("mx.example"));
    let mut notify = site.notify_socket();
    let mut daemon = Daemon::spawn(
        &site,
        &[
            ("NOTIFY_SOCKET", notify.path.display().to_string()),
            ("WATCHDOG_USEC", "200000".into()),
            ("WATCHDOG_PID", "1".into()),
        ],
        &[],
    );
    notify.wait_for("READY=1");
    daemon.signal("TERM");
    notify.wait_for("STOPPING=1");
    assert!(daemon.wait_exit().success());
    // Without a watchdog the status tick is 10 s: nothing but READY and STOPPING in between.
    assert!(
        notify.seen.iter().all(|m| !m.contains("WATCHDOG=1")),
        "{:?}",
        notify.seen
    );
}

/// Socket activation: systemd-socket-activate holds the port and execs the daemon on the first
/// connection; the daemon serves on the inherited socket and does not bind `smtp.listen`.
#[test]
fn socket_activation() {
    let own_port = free_port();
    let mut conf = Conf::new("mx.activated.example");
    conf.listen = format!("127.0.0.1:{own_port}");
    let site = Site::new(&conf);
    let port = free_port();
    let daemon = Daemon::spawn(
        &site,
        &[],
        &[
            socket_activate(),
            "-l",
            &format!("127.0.0.1:{port}"),
            BIN,
            "serve",
            "-c",
            "gatekeeper.toml",
        ],
    );
    daemon
        .log
        .wait_for(0, &format!("Listening on 127.0.0.1:{port}"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // This connection waits in the inherited socket's backlog while the daemon starts.
    let mut smtp = Smtp::connect(addr);
    let (code, greeting) = smtp.reply();
    assert_eq!(code, 220, "{greeting}");
    assert!(greeting.contains("mx.activated.example"), "{greeting}");
    let (code, ehlo) = smtp.cmd("EHLO client.example");
    assert_eq!(code, 250, "{ehlo}");
    daemon.log.wait_for(0, "using listeners passed by systemd");
    let own: SocketAddr = format!("127.0.0.1:{own_port}").parse().unwrap();
    assert!(!accepts(own), "smtp.listen {own} was bound too");
    assert_eq!(smtp.cmd("QUIT").0, 221);
}

/// SIGHUP with a valid new configuration: new connections get it, a session in progress keeps
/// going. With an invalid one: refused with the error logged, the last good one serves.
#[test]
fn reload_valid_then_invalid() {
    let mut conf = Conf::new("mx.old.example");
    let site = Site::new(&conf);
    let mut notify = site.notify_socket();
    let mut daemon = Daemon::spawn(
        &site,
        &[("NOTIFY_SOCKET", notify.path.display().to_string())],
        &[],
    );
    notify.wait_for("READY=1");
    let addr = daemon.log.smtp_addr();

    let mut old = Smtp::connect(addr);
    let (_, greeting) = old.reply();
    assert!(greeting.contains("mx.old.example"), "{greeting}");
    let (_, ehlo) = old.cmd("EHLO client.example");
    assert!(ehlo.contains("SIZE 1048576"), "{ehlo}");

    conf.hostname = "mx.new.example".into();
    conf.max_message_bytes = 2_000_000;
    site.write_config(&conf.text());
    daemon.signal("HUP");
    notify.wait_for("RELOADING=1");
    notify.wait_for("READY=1");
    let (mark, _) = daemon.log.wait_for(0, "configuration reloaded");

    let mut new = Smtp::connect(addr);
    let (_, greeting) = new.reply();
    assert!(greeting.contains("mx.new.example"), "{greeting}");
    let (_, ehlo) = new.cmd("EHLO client.example");
    assert!(ehlo.contains("SIZE 2000000"), "{ehlo}");
    // The session opened before the reload was not dropped and keeps its settings.
    assert_eq!(old.cmd("NOOP").0, 250);
    let (code, ehlo) = old.cmd("EHLO client.example");
    assert_eq!(code, 250, "{ehlo}");
    assert!(ehlo.contains("SIZE 1048576"), "{ehlo}");

    // An invalid file: a limit out of its range.
    site.write_config(
        &conf
            .text()
            .replace("max_message_bytes = 2000000", "max_message_bytes = 1"),
    );
    daemon.signal("HUP");
    notify.wait_for("RELOADING=1");
    notify.wait_for("READY=1");
    let (_, refused) = daemon.log.wait_for(mark, "reload refused");
    // The error names the file, the line and the key, as check-config does.
    assert!(
        refused.contains("gatekeeper.toml:4: smtp.max_message_bytes"),
        "{refused}"
    );
    let mut after = Smtp::connect(addr);
    let (code, greeting) = after.reply();
    assert_eq!(code, 220);
    assert!(greeting.contains("mx.new.example"), "{greeting}");
    let (_, ehlo) = after.cmd("EHLO client.example");
    assert!(ehlo.contains("SIZE 2000000"), "{ehlo}");
    for s in [&mut old, &mut new, &mut after] {
        assert_eq!(s.cmd("QUIT").0, 221);
    }
    daemon.signal("TERM");
    assert!(daemon.wait_exit().success());
}

/// Certificate renewal: new files + SIGHUP → the next STARTTLS shows the new certificate; a
/// half-written renewal (key of another certificate) is refused and the current one stays.
#[test]
fn reload_renewed_certificate() {
    let mut conf = Conf::new("mx.tls.example");
    conf.tls = true;
    let site = Site::new(&conf);
    let first = site.write_certificate();
    let mut notify = site.notify_socket();
    let mut daemon = Daemon::spawn(
        &site,
        &[("NOTIFY_SOCKET", notify.path.display().to_string())],
        &[],
    );
    notify.wait_for("READY=1");
    let addr = daemon.log.smtp_addr();

    let mut c = Smtp::connect(addr);
    c.reply();
    let roots_first = [first.clone()];
    assert_eq!(c.starttls_peer(&roots_first), first);

    let second = site.write_certificate();
    assert_ne!(first, second);
    daemon.signal("HUP");
    notify.wait_for("RELOADING=1");
    notify.wait_for("READY=1");
    let (mark, _) = daemon.log.wait_for(0, "configuration reloaded");
    let both = [first.clone(), second.clone()];
    let mut c = Smtp::connect(addr);
    c.reply();
    assert_eq!(c.starttls_peer(&both), second);

    // A renewal caught half-way: the certificate of a new key, the key still the old one.
    let key = std::fs::read(site.path("tls/key.pem")).unwrap();
    site.write_certificate();
    std::fs::write(site.path("tls/key.pem"), key).unwrap();
    daemon.signal("HUP");
    notify.wait_for("RELOADING=1");
    notify.wait_for("READY=1");
    daemon.log.wait_for(mark + 1, "reload refused");
    let mut c = Smtp::connect(addr);
    c.reply();
    assert_eq!(c.starttls_peer(&both), second);

    daemon.signal("TERM");
    assert!(daemon.wait_exit().success());
}

/// SIGTERM: the listener closes at once, an idle session gets 421 at once, a session in a
/// transaction keeps being served until the grace ends, then gets 421; exit 0.
#[test]
fn sigterm_drains() {
    let mut conf = Conf::new("mx.drain.example");
    // Long enough for the checks below on a loaded machine; the test waits it out.
    conf.shutdown_grace = "10s";
    let site = Site::new(&conf);
    let mut notify = site.notify_socket();
    let mut daemon = Daemon::spawn(
        &site,
        &[("NOTIFY_SOCKET", notify.path.display().to_string())],
        &[],
    );
    notify.wait_for("READY=1");
    let addr = daemon.log.smtp_addr();
    let mut idle = Smtp::connect(addr);
    idle.reply();
    assert_eq!(idle.cmd("EHLO client.example").0, 250);
    let mut busy = Smtp::connect(addr);
    busy.reply();
    assert_eq!(busy.cmd("EHLO client.example").0, 250);
    assert_eq!(busy.cmd("MAIL FROM:<alice@interieur.gouv.fr>").0, 250);

    daemon.signal("TERM");
    notify.wait_for("STOPPING=1");
    let (code, text) = idle.reply();
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("4.3.0"), "{text}");
    // Within the grace: no new connection, the transaction in progress still served.
    // The accept loops stop on the same signal as the sessions, concurrently: poll, bounded.
    let deadline = Instant::now() + WAIT;
    while accepts(addr) {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(busy.cmd("NOOP").0, 250);
    assert!(daemon.child.try_wait().unwrap().is_none());
    let (code, text) = busy.reply();
    assert_eq!(code, 421, "{text}");
    let status = daemon.wait_exit();
    assert!(status.success(), "{status}");
    daemon.log.wait_for(0, "gatekeeper stopped");
}

/// A daemon with a 10-minute grace and one session in a transaction (not idle, so a graceful
/// stop would wait for it).
fn busy_daemon() -> (Site, Notify, Daemon, Smtp) {
    let mut conf = Conf::new("mx.fast.example");
    conf.shutdown_grace = "10m";
    let site = Site::new(&conf);
    let mut notify = site.notify_socket();
    let daemon = Daemon::spawn(
        &site,
        &[("NOTIFY_SOCKET", notify.path.display().to_string())],
        &[],
    );
    notify.wait_for("READY=1");
    let addr = daemon.log.smtp_addr();
    let mut busy = Smtp::connect(addr);
    busy.reply();
    assert_eq!(busy.cmd("EHLO client.example").0, 250);
    assert_eq!(busy.cmd("MAIL FROM:<alice@interieur.gouv.fr>").0, 250);
    (site, notify, daemon, busy)
}

/// SIGINT: no grace. The session in a transaction gets 421 and the daemon exits 0 (the wait
/// is bounded by WAIT, far below the 10-minute grace).
#[test]
fn sigint_is_fast() {
    let (_site, mut notify, mut daemon, mut busy) = busy_daemon();
    daemon.signal("INT");
    notify.wait_for("STOPPING=1");
    let (code, text) = busy.reply();
    assert_eq!(code, 421, "{text}");
    let status = daemon.wait_exit();
    assert!(status.success(), "{status}");
}

/// SIGINT during a SIGTERM drain (a second Ctrl-C, an impatient operator): stop at once.
#[test]
fn sigint_cuts_a_drain_short() {
    let (_site, mut notify, mut daemon, mut busy) = busy_daemon();
    daemon.signal("TERM");
    notify.wait_for("STOPPING=1");
    daemon.log.wait_for(0, "draining SMTP sessions");
    assert_eq!(busy.cmd("NOOP").0, 250);
    daemon.signal("INT");
    let (code, text) = busy.reply();
    assert_eq!(code, 421, "{text}");
    let status = daemon.wait_exit();
    assert!(status.success(), "{status}");
}

/// Under journald (stderr is the stream `JOURNAL_STREAM` names): no timestamp, no escape
/// sequence, a `<priority>` prefix. Elsewhere (a pipe): timestamps, still no escapes.
#[test]
fn logging_under_journald_and_elsewhere() {
    use std::os::unix::fs::MetadataExt;

    // A pipe, not a terminal: timestamps, no colour.
    let site = Site::new(&Conf::new("mx.log.example"));
    let mut daemon = Daemon::spawn(&site, &[], &[]);
    let (_, line) = daemon.log.wait_for(0, "gatekeeper serving");
    assert!(line.starts_with("20"), "no timestamp: {line:?}");
    assert!(!line.contains('\u{1b}'), "escape sequence in {line:?}");
    daemon.signal("TERM");
    assert!(daemon.wait_exit().success());

    // journald: stderr is a unix stream socket and JOURNAL_STREAM its device:inode.
    let (ours, theirs) = UnixStream::pair().unwrap();
    let meta = std::fs::File::from(std::os::fd::OwnedFd::from(theirs.try_clone().unwrap()))
        .metadata()
        .unwrap();
    let mut conf = Conf::new("mx.log.example");
    conf.tls = true; // files absent: the reload below fails, an error line
    let site = Site::new(&Conf::new("mx.log.example"));
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "-c", "gatekeeper.toml"])
        .current_dir(site.dir.path())
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
    let child = cmd.spawn().unwrap();
    let mut daemon = Daemon {
        child,
        log: Log::collect(ours.try_clone().unwrap()),
    };
    ours.set_read_timeout(Some(WAIT)).unwrap();
    let (_, serving) = daemon.log.wait_for(0, "gatekeeper serving");
    site.write_config(&conf.text());
    daemon.signal("HUP");
    let (_, refused) = daemon.log.wait_for(0, "reload refused");
    daemon.signal("TERM");
    assert!(daemon.wait_exit().success());
    daemon.log.wait_for(0, "gatekeeper stopped");
    assert!(serving.starts_with("<6>"), "{serving:?}");
    assert!(refused.starts_with("<3>"), "{refused:?}");
    for line in daemon.log.snapshot() {
        assert!(line.starts_with('<'), "no priority prefix: {line:?}");
        assert!(!line.contains('\u{1b}'), "escape sequence in {line:?}");
        let after = line.split_once('>').map(|(_, r)| r).unwrap_or("");
        assert!(
            !after.trim_start().starts_with("20"),
            "timestamp in {line:?}"
        );
    }

    // JOURNAL_STREAM inherited but stderr redirected since (a pipe): not journald.
    let site = Site::new(&Conf::new("mx.log.example"));
    let mut daemon = Daemon::spawn(
        &site,
        &[("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))],
        &[],
    );
    let (_, line) = daemon.log.wait_for(0, "gatekeeper serving");
    assert!(line.starts_with("20"), "{line:?}");
    daemon.signal("TERM");
    assert!(daemon.wait_exit().success());
}
