//! A throwaway PostgreSQL cluster for the tests: `initdb` in a temporary directory, `pg_ctl`
//! on a free loopback port with its socket in that directory, removed (stopped, then the
//! directory deleted) on drop.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: the cluster runs as `nobody`
//! (`setpriv`), the directory chowned to it. A machine without PostgreSQL makes the test
//! FAIL with what to install (`.ci/packages` has `postgresql`): a store test that skipped
//! silently would claim coverage it does not have.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gatekeeper::config::{PgTls, PostgresConfig};

/// Debian's PostgreSQL 15 binaries.
const BIN: &str = "/usr/lib/postgresql/15/bin";
const USER: &str = "nobody";
const GROUP: &str = "nogroup";

/// A running cluster; stopped and deleted on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    pub port: u16,
    /// `listen_addresses`.
    listen: String,
    /// The network namespace the server runs in (`None`: the test's own).
    netns: Option<String>,
}

impl Cluster {
    /// initdb, start, and create database `gk` owned by role `gk` (password `gk-secret`).
    pub fn start() -> Self {
        Self::start_in(None, "127.0.0.1")
    }

    /// As [`Cluster::start`], the server inside network namespace `netns` listening on
    /// `listen` (comma-separated addresses of that namespace). The tests' own `psql` reaches
    /// it through its Unix socket, which no namespace hides.
    pub fn start_in(netns: Option<&str>, listen: &str) -> Self {
        let initdb = Path::new(BIN).join("initdb");
        assert!(
            initdb.exists(),
            "PostgreSQL 15 is not installed ({} missing): apt-get install postgresql \
             (listed in .ci/packages); the PostgreSQL store tests cannot run without it",
            initdb.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("gk-pg-")
            .tempdir()
            .expect("temp dir");
        chown(dir.path());
        let data = dir.path().join("data");
        run_as_nobody(
            Command::new(&initdb).arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
            "initdb",
        );
        let cluster = Self {
            port: free_port(),
            dir,
            listen: listen.to_owned(),
            netns: netns.map(str::to_owned),
        };
        if netns.is_some() {
            // initdb's pg_hba.conf admits loopback only; the namespaces' links are
            // 10.231.0.0/16, and there the role's password is checked.
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("pg_hba.conf"))
                .and_then(|mut f| f.write_all(b"host all all 10.231.0.0/16 scram-sha-256\n"))
                .expect("pg_hba.conf");
        }
        cluster.pg_ctl_start();
        // Two calls: psql -c runs several statements in one transaction, and CREATE
        // DATABASE refuses to run in one.
        cluster.psql("CREATE ROLE gk LOGIN PASSWORD 'gk-secret'", "postgres");
        cluster.psql("CREATE DATABASE gk OWNER gk", "postgres");
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Start (again) on the same port.
    pub fn pg_ctl_start(&self) {
        self.pg_ctl_start_with("");
    }

    /// Restart with TLS on (`ssl=on`), a CA and a server certificate for `localhost` and
    /// 127.0.0.1 made here; returns the CA's PEM file.
    pub fn restart_with_tls(&self) -> PathBuf {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        self.stop();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
            .expect("ca cert");
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca).expect("server cert");
        let (ca_file, cert_file, key_file) = (
            self.dir.path().join("ca.pem"),
            self.dir.path().join("server.pem"),
            self.dir.path().join("server.key"),
        );
        std::fs::write(&ca_file, ca.pem()).expect("write ca");
        std::fs::write(&cert_file, cert.pem()).expect("write cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        // PostgreSQL refuses a key readable by others, or not owned by its user.
        for f in [&cert_file, &key_file] {
            chown(f);
        }
        let out = Command::new("chmod")
            .arg("600")
            .arg(&key_file)
            .output()
            .expect("chmod");
        assert!(out.status.success(), "chmod key");
        self.pg_ctl_start_with(&format!(
            " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert_file.display(),
            key_file.display()
        ));
        ca_file
    }

    fn pg_ctl_start_with(&self, extra: &str) {
        let opts = format!(
            "-c listen_addresses={} -c port={} -c unix_socket_directories={} -c fsync=off{extra}",
            self.listen,
            self.port,
            self.dir.path().display()
        );
        let mut pg_ctl = match &self.netns {
            None => Command::new(Path::new(BIN).join("pg_ctl")),
            Some(ns) => {
                // `ip netns exec` runs setpriv (below) in the namespace: the server too.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.as_str(), "setpriv"])
                    .args(nobody_args())
                    .arg(Path::new(BIN).join("pg_ctl"));
                c
            }
        };
        let run = |cmd: &mut Command, what: &str| match self.netns {
            None => run_as_nobody(cmd, what),
            Some(_) => run_as_is(cmd, what),
        };
        run(
            pg_ctl
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.path().join("log"))
                .args(["-w", "-t", "30", "-o", &opts, "start"]),
            "pg_ctl start",
        );
    }

    /// Stop at once (`-m immediate`: what a crash or a failover looks like to clients).
    pub fn stop(&self) {
        run_as_nobody(
            Command::new(Path::new(BIN).join("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .args(["-w", "-m", "immediate", "stop"]),
            "pg_ctl stop",
        );
    }

    /// Run SQL as the superuser on database `db`.
    pub fn psql(&self, sql: &str, db: &str) {
        run_as_nobody(
            Command::new(Path::new(BIN).join("psql"))
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(self.dir.path())
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    db,
                    "-c",
                    sql,
                ]),
            "psql",
        );
    }

    /// One value from SQL run as the superuser on database `gk` (`psql -At`).
    pub fn query(&self, sql: &str) -> String {
        let out = Command::new("setpriv")
            .args(nobody_args())
            .arg(Path::new(BIN).join("psql"))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "gk",
                "-c",
                sql,
            ])
            .current_dir("/")
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The store configuration for database `gk` over TCP on loopback, password from a file.
    pub fn config(&self) -> PostgresConfig {
        let pw = self.dir.path().join("password");
        std::fs::write(&pw, "gk-secret\n").expect("password file");
        PostgresConfig {
            url: self.url(),
            password_file: Some(pw),
            tls: PgTls::Disable,
            ca_file: None,
            pool_size: 8,
        }
    }

    pub fn url(&self) -> String {
        format!("postgresql://gk@127.0.0.1:{}/gk", self.port)
    }

    /// [`Cluster::config`] reaching the server at `host` (one of its `listen` addresses).
    pub fn config_at(&self, host: &str) -> PostgresConfig {
        let mut c = self.config();
        c.url = format!("postgresql://gk@{host}:{}/gk", self.port);
        c
    }

    /// A fresh empty database owned by `gk` (one per test of a shared cluster).
    pub fn fresh_database(&self, name: &str) -> PostgresConfig {
        self.psql(&format!("CREATE DATABASE {name} OWNER gk"), "postgres");
        let mut c = self.config();
        c.url = format!("postgresql://gk@127.0.0.1:{}/{name}", self.port);
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("setpriv")
            .args(nobody_args())
            .arg(Path::new(BIN).join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "immediate", "stop"])
            .output();
    }
}

fn nobody_args() -> [&'static str; 3] {
    ["--reuid=nobody", "--regid=nogroup", "--clear-groups"]
}

fn run_as_nobody(cmd: &mut Command, what: &str) {
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut wrapped = Command::new("setpriv");
    wrapped.args(nobody_args()).arg(program).args(args);
    run_as_is(&mut wrapped, what);
}

/// Run `cmd` (which drops to nobody itself) from `/` and check it succeeded.
fn run_as_is(cmd: &mut Command, what: &str) {
    // Keep nobody out of root's working directory (PostgreSQL tools chdir checks).
    let wrapped = cmd;
    wrapped.current_dir("/");
    let out = wrapped
        .output()
        .unwrap_or_else(|e| panic!("{what}: setpriv: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chown(path: &Path) {
    let out = Command::new("chown")
        .arg(format!("{USER}:{GROUP}"))
        .arg(path)
        .output()
        .expect("chown");
    assert!(out.status.success(), "chown {}", path.display());
}

/// A loopback port free right now (the cluster binds it a moment later).
fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    l.local_addr().expect("addr").port()
}

/// Wait until `f` holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}
