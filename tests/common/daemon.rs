//! The real binary (`gatekeeper serve -c <config>`) as a child process on a fixed loopback
//! layout: start it (optionally under extra environment, e.g. `libfaketime`), wait until both
//! its API and its SMTP listener answer, signal it, kill it. Used by the tests that need a
//! process of their own (`tests/clock.rs`) and by the soak tool (`examples/soak.rs`).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound then released; the daemon binds it with SO_REUSEADDR).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `gatekeeper serve`.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Spawn `bin serve -c config` with `env` added, its stderr appended to `log`, and wait
    /// (bounded, 20 s) until `api` answers `/healthz` and `smtp` accepts a connection.
    pub async fn start(
        bin: &Path,
        config: &Path,
        log: &Path,
        env: &[(&str, String)],
        api: SocketAddr,
        smtp: SocketAddr,
    ) -> Daemon {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("daemon log");
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "-c"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn gatekeeper serve");
        let mut daemon = Daemon {
            child,
            log: log.to_path_buf(),
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = daemon.child.try_wait().expect("try_wait") {
                panic!(
                    "gatekeeper exited at start ({status}):\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            let api_up = client
                .get(format!("http://{api}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if api_up && tokio::net::TcpStream::connect(smtp).await.is_ok() {
                return daemon;
            }
            assert!(Instant::now() < deadline, "gatekeeper did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `signal` (`TERM`, `HUP`, `KILL`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {}", self.pid());
    }

    /// Wait (bounded) for the process to exit; `true` if it did.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failed assertion must not leave the child running: it is ours, killed by PID.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
