//! The load tool behind `bench/memory.sh` (see README, "Performance"): what a burst of large
//! messages does to the daemon's memory, and whether it comes back.
//!
//! One process drives a real `gatekeeper serve` child on loopback: challenges created through
//! the HTTP API (tokens read from the outbox), then `--sessions` sessions that each pass RCPT
//! with a live token, start DATA and send `--bytes` of message without ending it, all held open
//! together; then all of them close. Memory is read from `/proc/<pid>/status`: `VmRSS` idle
//! before the burst, with every session mid-DATA, after the closes and after `--settle-secs`;
//! `VmHWM` (the peak) at the end. Every loop is bounded in count and time; every address is on
//! loopback. No DNS is needed: nothing reaches the end of DATA.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench tool, never the daemon

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

/// Memory burst for bench/memory.sh: drives a gatekeeper child and prints its RSS figures.
#[derive(Parser, Debug)]
struct Args {
    /// Work directory (config, store, outbox, events).
    #[arg(long)]
    dir: PathBuf,
    /// The gatekeeper binary.
    #[arg(long, default_value = "target/release/gatekeeper")]
    gatekeeper: PathBuf,
    /// gatekeeper's SMTP listener.
    #[arg(long, default_value = "127.0.0.21:2525")]
    smtp: SocketAddr,
    /// gatekeeper's API listener.
    #[arg(long, default_value = "127.0.0.21:8025")]
    api: SocketAddr,
    /// Sessions in the middle of DATA at once.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Octets of message each session sends before holding.
    #[arg(long, default_value_t = 2_000_000)]
    bytes: usize,
    /// `smtp.max_buffered_bytes` (absent: the default).
    #[arg(long)]
    budget: Option<u64>,
    /// Seconds to wait after the closes before the last RSS reading.
    #[arg(long, default_value_t = 10)]
    settle_secs: u64,
    /// Environment for the daemon, `NAME=VALUE` (allocator tuning); repeatable.
    #[arg(long = "env")]
    envs: Vec<String>,
    /// A name for this run in the summary line.
    #[arg(long, default_value = "system")]
    label: String,
}

const CONFIRM_DOMAIN: &str = "verify.example.gouv.fr";
const MINISTRY: &str = "interieur.gouv.fr";
/// Bound on one SMTP read or write, and on one API call.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    std::fs::create_dir_all(args.dir.join("outbox"))?;
    let api_token = "benchtoken0123456789abcdefghijklmnop";
    std::fs::write(args.dir.join("api-token"), format!("{api_token}\n"))?;
    let config = args.dir.join("gatekeeper.toml");
    std::fs::write(&config, gatekeeper_config(&args))?;
    let mut daemon = Daemon::spawn(&args, &config)?;
    std::fs::write(args.dir.join("gatekeeper.pid"), daemon.pid.to_string())?;
    wait_ready(&args).await?;
    let outcome = burst(&args, daemon.pid, api_token).await;
    daemon.stop();
    let line = outcome?;
    println!("{line}");
    Ok(())
}

async fn burst(args: &Args, pid: u32, api_token: &str) -> Result<String> {
    let api = Api::new(args.api, api_token)?;
    let t = Instant::now();
    let tokens = api
        .create_many(&args.dir.join("outbox"), args.sessions)
        .await?;
    log(&format!(
        "{} challenges in {:.1} s",
        tokens.len(),
        t.elapsed().as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_mib(pid, "VmRSS")?;

    let t = Instant::now();
    let gate = Arc::new(Semaphore::new(200));
    let body = Arc::new(body(args.bytes));
    let mut tasks = Vec::with_capacity(tokens.len());
    for (i, (address, token)) in tokens.into_iter().enumerate() {
        // 500 sessions per source address, under the configured per-IP limit.
        let src = Ipv4Addr::new(127, 0, 4, u8::try_from(1 + i / 500).unwrap_or(250));
        let (gate, body, target) = (gate.clone(), body.clone(), args.smtp);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.ok()?;
            mid_data(src, target, &address, &token, &body).await.ok()
        }));
    }
    let mut held = Vec::with_capacity(tasks.len());
    let (mut started, mut busy) = (0, 0);
    for task in tasks {
        match task.await {
            Ok(Some((client, 354))) => {
                started += 1;
                held.push(client);
            }
            Ok(Some((client, 452))) => {
                busy += 1;
                held.push(client);
            }
            _ => {}
        }
    }
    let failed = args.sessions - started - busy;
    log(&format!(
        "burst: {started} sessions mid-DATA, {busy} DATA refused with 452, {failed} failed, in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    // Let the server read what is still in the socket buffers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = rss_mib(pid, "VmRSS")?;
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let closed = rss_mib(pid, "VmRSS")?;
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let settled = rss_mib(pid, "VmRSS")?;
    let peak = rss_mib(pid, "VmHWM")?;
    let budget = args
        .budget
        .map_or_else(|| "default".to_owned(), |b| b.to_string());
    Ok(format!(
        "memory {label}: budget {budget}, {n} sessions x {bytes} octets: {started} mid-DATA, {busy} got 452, {failed} failed; \
         RSS idle {idle:.1} MiB, all mid-DATA {during:.1} MiB, peak (VmHWM) {peak:.1} MiB, \
         2 s after closing {closed:.1} MiB, {settle} s later {settled:.1} MiB",
        label = args.label,
        n = args.sessions,
        bytes = args.bytes,
        settle = args.settle_secs,
    ))
}

/// Lines of 998 octets: the message body, without its end.
fn body(octets: usize) -> Vec<u8> {
    let mut out = format!("From: <a@{MINISTRY}>\r\nSubject: burst\r\n\r\n").into_bytes();
    let line = format!("{}\r\n", "z".repeat(998));
    while out.len() < octets {
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(octets.max(1));
    out
}

/// One session up to DATA, then `body` if DATA was accepted: the client and DATA's code.
async fn mid_data(
    src: Ipv4Addr,
    target: SocketAddr,
    address: &str,
    token: &str,
    body: &[u8],
) -> Result<(Client, u16)> {
    let mut c = Client::connect(src, target).await?;
    c.reply().await?;
    c.command("EHLO mx.interieur.gouv.fr").await?;
    c.command(&format!("MAIL FROM:<{address}>")).await?;
    let rcpt = c
        .command(&format!("RCPT TO:<confirm+{token}@{CONFIRM_DOMAIN}>"))
        .await?;
    if rcpt != 250 {
        return Err(format!("RCPT got {rcpt}").into());
    }
    let data = c.command("DATA").await?;
    if data == 354 {
        for chunk in body.chunks(64 * 1024) {
            tokio::time::timeout(IO_TIMEOUT, c.stream.write_all(chunk)).await??;
        }
    }
    Ok((c, data))
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(src: Ipv4Addr, target: SocketAddr) -> Result<Client> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
        let stream = tokio::time::timeout(IO_TIMEOUT, socket.connect(target)).await??;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    /// Send one command line; the code of its reply.
    async fn command(&mut self, line: &str) -> Result<u16> {
        let bytes = format!("{line}\r\n");
        tokio::time::timeout(IO_TIMEOUT, self.stream.write_all(bytes.as_bytes())).await??;
        self.reply().await
    }

    /// Read one (possibly multi-line) reply: its code.
    async fn reply(&mut self) -> Result<u16> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                if line.get(3) != Some(&b'-') {
                    let code = line.get(..3).and_then(|c| std::str::from_utf8(c).ok());
                    return Ok(code.and_then(|c| c.parse().ok()).unwrap_or(0));
                }
                continue;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(IO_TIMEOUT, self.stream.read(&mut chunk)).await??;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }
}

/// Challenges through the API; each token from its challenge mail in the outbox.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(addr: SocketAddr, token: &str) -> Result<Api> {
        Ok(Api {
            http: reqwest::Client::builder().timeout(IO_TIMEOUT).build()?,
            base: format!("http://{addr}"),
            token: token.to_owned(),
        })
    }

    /// `n` challenges for `burst<i>@interieur.gouv.fr`: (address, token).
    async fn create_many(&self, outbox: &Path, n: usize) -> Result<Vec<(String, String)>> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let address = format!("burst{i}@{MINISTRY}");
            let resp = self
                .http
                .post(format!("{}/v1/challenges", self.base))
                .bearer_auth(&self.token)
                .json(&serde_json::json!({ "address": address }))
                .send()
                .await?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await?;
            if status.as_u16() != 201 {
                return Err(format!("POST /v1/challenges {address}: {status} {body}").into());
            }
            let id = body["id"].as_str().ok_or("no id")?;
            let mail = std::fs::read_to_string(outbox.join(format!("{id}.eml")))?;
            let token = mail
                .split("confirm+")
                .nth(1)
                .and_then(|rest| {
                    let end = rest.find(|c: char| !c.is_ascii_alphanumeric())?;
                    rest.get(..end)
                })
                .ok_or("no token in the challenge mail")?;
            out.push((address, token.to_owned()));
        }
        Ok(out)
    }
}

struct Daemon {
    child: Child,
    pid: u32,
}

impl Daemon {
    fn spawn(args: &Args, config: &Path) -> Result<Daemon> {
        let mut cmd = Command::new(&args.gatekeeper);
        cmd.arg("serve")
            .arg("-c")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(args.dir.join("gatekeeper.out"))?)
            .stderr(std::fs::File::create(args.dir.join("gatekeeper.err"))?);
        for kv in &args.envs {
            let (k, v) = kv.split_once('=').ok_or("--env wants NAME=VALUE")?;
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", args.gatekeeper.display()))?;
        let pid = child.id();
        Ok(Daemon { child, pid })
    }

    /// SIGTERM (drain), then SIGKILL after 10 s.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

async fn wait_ready(args: &Args) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let smtp_up = TcpStream::connect(args.smtp).await.is_ok();
        let api_up = TcpStream::connect(args.api).await.is_ok();
        if smtp_up && api_up {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(
                "gatekeeper did not start listening within 30 s (see gatekeeper.err)".into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn gatekeeper_config(args: &Args) -> String {
    let d = args.dir.display();
    let budget = args
        .budget
        .map(|b| format!("max_buffered_bytes = {b}\n"))
        .unwrap_or_default();
    format!(
        r#"# Written by examples/memory_burst.rs for bench/memory.sh.
[smtp]
listen = ["{smtp}"]
hostname = "{CONFIRM_DOMAIN}"
max_connections = 5000
max_connections_per_ip = 1000
data_timeout = "5m"
shutdown_grace = "1s"
{budget}
[confirm]
domain = "{CONFIRM_DOMAIN}"
service_name = "bench"

[policy]
allowed_domains = ["gouv.fr"]

[dns]
# Never asked: no message reaches the end of DATA.
nameservers = ["127.0.0.1:9"]

[store]
path = "{d}/gatekeeper.db"

[api]
listen = "{api}"
token_file = "{d}/api-token"

[outbound]
from = "Inscription <noreply@{CONFIRM_DOMAIN}>"
directory = "{d}/outbox"

[siem]
format = "ecs"
spool_path = "{d}/siem-spool.db"

[[siem.sink]]
type = "file"
path = "{d}/events.jsonl"
"#,
        smtp = args.smtp,
        api = args.api,
    )
}

/// A `/proc/<pid>/status` field (`VmRSS`, `VmHWM`) in MiB.
fn rss_mib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .ok_or("no such field")?;
    let kib: u64 = line.split_whitespace().nth(1).ok_or("no value")?.parse()?;
    Ok(kib as f64 / 1024.0)
}

fn log(msg: &str) {
    eprintln!("memory_burst: {msg}");
}
