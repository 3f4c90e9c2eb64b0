//! A real rsyslogd for the tests, run unprivileged-style in a temp dir: its own config, pid
//! file and work directory, loopback high ports, `-n` in the foreground, stopped by PID.
//!
//! Inputs: imtcp (plain, octet counting), imtcp with the gtls driver (RFC 5425; certificate
//! made here with rcgen), imudp. Each writes the bare MSG (`%msg%`) of every message, one per
//! line, to its own file: `tcp.log`, `tls.log`, `udp.log`. No systemd needed.
//!
//! Needs the Debian packages `rsyslog` and `rsyslog-gnutls` (listed in `.ci/packages`). A
//! missing rsyslogd fails the test: CI installs it, so absence is a broken setup, not a skip.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

pub struct Rsyslog {
    pub dir: tempfile::TempDir,
    pub tcp: SocketAddr,
    pub tls: SocketAddr,
    pub udp: SocketAddr,
    /// The CA that signed the collector's certificate (for `ca_file`).
    pub ca_file: PathBuf,
    child: Option<Child>,
}

/// The DNS name in the collector's certificate (`server_name`).
pub const SERVER_NAME: &str = "collector.test";

impl Rsyslog {
    /// Writes certificates and config; does not start.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (tcp, tls, udp) = (free_tcp(), free_tcp(), free_udp());
        let ca_file = dir.path().join("ca.pem");
        let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        write_certs(&ca_file, &cert_file, &key_file);
        let work = dir.path().join("work");
        std::fs::create_dir(&work).expect("work dir");
        let d = dir.path().display();
        let conf = format!(
            r#"global(workDirectory="{work}"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" maxSessions="200")
module(load="imudp")
template(name="raw" type="string" string="%msg%\n")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}" ruleset="plain")
input(type="imtcp" address="127.0.0.1" port="{tls_port}" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imudp" address="127.0.0.1" port="{udp_port}" ruleset="udp")
ruleset(name="plain") {{ action(type="omfile" file="{d}/tcp.log" template="raw") }}
ruleset(name="tls") {{ action(type="omfile" file="{d}/tls.log" template="raw") }}
ruleset(name="udp") {{ action(type="omfile" file="{d}/udp.log" template="raw") }}
"#,
            work = work.display(),
            ca = ca_file.display(),
            cert = cert_file.display(),
            key = key_file.display(),
            tcp_port = tcp.port(),
            tls_port = tls.port(),
            udp_port = udp.port(),
        );
        std::fs::write(dir.path().join("rsyslog.conf"), conf).expect("write config");
        Self {
            dir,
            tcp,
            tls,
            udp,
            ca_file,
            child: None,
        }
    }

    /// Starts rsyslogd and waits (bounded) until both TCP inputs accept connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let bin = rsyslogd();
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("rsyslogd.out"))
            .expect("log file");
        let child = Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn rsyslogd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        for addr in [self.tcp, self.tls] {
            loop {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                if let Some(c) = self.child.as_mut()
                    && let Ok(Some(status)) = c.try_wait()
                {
                    panic!("rsyslogd exited ({status}): {}", self.output());
                }
                assert!(
                    Instant::now() < deadline,
                    "rsyslogd did not listen on {addr}: {}",
                    self.output()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// SIGTERM and wait (bounded) for the exit: rsyslog closes its connections and flushes
    /// its queues, the way an operator's restart does. SIGKILL if it does not exit.
    pub fn stop(&mut self) {
        self.signal("-TERM");
    }

    /// SIGKILL: a collector crash.
    pub fn kill(&mut self) {
        self.signal("-KILL");
    }

    /// SIGSTOP: the collector stops reading; the kernel still accepts and buffers our bytes.
    pub fn pause(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg("-STOP")
                .arg(child.id().to_string())
                .status();
        }
    }

    fn signal(&mut self, sig: &str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        let _ = Command::new("kill").arg(sig).arg(&pid).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn lines(&self, which: &str) -> Vec<String> {
        super::common::siem::read_lines(&self.dir.path().join(format!("{which}.log")))
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.out")).unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn rsyslogd() -> PathBuf {
    for p in [
        "/usr/sbin/rsyslogd",
        "/sbin/rsyslogd",
        "/usr/local/sbin/rsyslogd",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("rsyslogd"))
        .find(|p| p.exists());
    found.unwrap_or_else(|| panic!("rsyslogd not found: install the Debian packages rsyslog and rsyslog-gnutls (.ci/packages)"))
}

fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
}

/// A CA and a server certificate for `collector.test` and 127.0.0.1, signed by it.
fn write_certs(ca_file: &Path, cert_file: &Path, key_file: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "gatekeeper test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
        .expect("ca cert");
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned(), "127.0.0.1".to_owned()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, SERVER_NAME);
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &ca).expect("server cert");
    std::fs::write(ca_file, ca.pem()).expect("write ca");
    std::fs::write(cert_file, cert.pem()).expect("write cert");
    std::fs::write(key_file, key.serialize_pem()).expect("write key");
}
