//! End-to-end support: the daemon's configuration for the test world, an HTTP API client, the
//! challenge mail in the outbox, the SIEM file, and a small SMTP client that sends from a
//! chosen loopback source address.
//!
//! Everything here talks to the real daemon over real loopback sockets and files: the only
//! thing the tests control is the DNS server of the test world (`super::TestDns`).

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Bound on one SMTP reply: nothing the daemon does in a test takes longer (DNS answers at
/// once; a dropped name times out after the configured DNS timeout).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The knobs a test may turn in the configuration; the rest is the corpus world.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `smtp.listen` / `api.listen` ports (0: any).
    pub smtp_port: u16,
    pub api_port: u16,
    pub challenge_ttl: String,
    pub session_timeout: String,
    /// `smtp.command_timeout`: the idle bound between commands.
    pub command_timeout: String,
    pub dns_timeout: String,
    /// `dns.check_timeout`.
    pub dns_check_timeout: String,
    pub max_pending: u32,
    pub max_per_hour: u32,
    /// `[store] url` and `password_file` (plaintext, loopback): a shared PostgreSQL database
    /// instead of the instance's own SQLite file (`super::postgres::Cluster::config`).
    pub postgres: Option<gatekeeper::config::PostgresConfig>,
    /// TOML appended to `[policy]` (its own keys, then `[policy.domains."…"]` tables).
    pub policy_extra: String,
    /// `smtp.listen` host (default `127.0.0.1`): the host end of a test's veth pair.
    pub smtp_host: String,
    /// `api.listen` host (default `127.0.0.1`): an address of a daemon run in a network
    /// namespace (`tests/hosts.rs`).
    pub api_host: String,
    /// TOML appended to `[smtp]` (limits a test sizes down, e.g. `max_buffered_bytes`).
    pub smtp_extra: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            smtp_port: 0,
            api_port: 0,
            challenge_ttl: "24h".into(),
            session_timeout: "30m".into(),
            command_timeout: "30s".into(),
            dns_timeout: "2s".into(),
            // The bound the checks had before `dns.check_timeout` existed (`dns.timeout`).
            dns_check_timeout: "2s".into(),
            // The corpus claims ~90 challenges for alice in one run.
            max_pending: 100,
            max_per_hour: 1000,
            postgres: None,
            policy_extra: String::new(),
            smtp_host: "127.0.0.1".into(),
            api_host: "127.0.0.1".into(),
            smtp_extra: String::new(),
        }
    }
}

/// A daemon started in-process (`daemon::start`) on a fresh layout under a temporary
/// directory, with its API client, its SIEM file and its SMTP address. Keep `tmp` as long as
/// the daemon runs.
pub struct Instance {
    pub tmp: tempfile::TempDir,
    pub layout: Layout,
    pub running: gatekeeper::daemon::Running,
    pub api: Api,
    pub events: Events,
    pub smtp: SocketAddr,
}

impl Instance {
    /// Write the configuration (DNS at `dns`, `settings`) and start the daemon on it.
    pub async fn start(dns: SocketAddr, settings: &Settings) -> Instance {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(tmp.path());
        let config = layout.write_config(dns, settings);
        let running = gatekeeper::daemon::start(gatekeeper::daemon::ConfigSource::File(config))
            .await
            .expect("daemon starts");
        Instance {
            api: Api::new(running.api_addr, &layout.token_file),
            events: Events::new(&layout.events),
            smtp: running.smtp_addrs[0],
            tmp,
            layout,
            running,
        }
    }
}

/// The files of one daemon instance under a temporary directory.
pub struct Layout {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub events: PathBuf,
    pub outbox: PathBuf,
    pub store: PathBuf,
    pub token_file: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        Layout {
            dir: dir.to_path_buf(),
            config: dir.join("gatekeeper.toml"),
            events: dir.join("var/events.jsonl"),
            outbox: dir.join("var/outbox"),
            store: dir.join("var/gatekeeper.db"),
            token_file: dir.join("var/api-token"),
        }
    }

    /// Write the configuration: the corpus world (SPEC §6 keys), DNS at `dns`, every file
    /// under the directory, audit events to a file.
    pub fn write_config(&self, dns: SocketAddr, s: &Settings) -> PathBuf {
        let d = self.dir.display();
        let text = format!(
            r#"
[smtp]
listen = ["{smtp_host}:{smtp_port}"]
hostname = "verify.example.gouv.fr"
session_timeout = "{session_timeout}"
command_timeout = "{command_timeout}"
data_timeout = "30s"
max_connections_per_ip = 50
shutdown_grace = "1s"
{smtp_extra}

[confirm]
domain = "verify.example.gouv.fr"
local_prefix = "confirm"
challenge_ttl = "{ttl}"
max_message_age = "48h"
require_reply = true
require_session_code = true
max_pending_per_address = {max_pending}
max_challenges_per_address_per_hour = {max_per_hour}
service_name = "Test"

[policy]
allowed_domains = ["gouv.fr"]
alignment = "strict"
{policy_extra}

[dns]
nameservers = ["{dns}"]
timeout = "{dns_timeout}"
check_timeout = "{dns_check_timeout}"

[store]
{store}

[api]
listen = "{api_host}:{api_port}"
token_file = "{d}/var/api-token"

[outbound]
from = "Inscription <noreply@verify.example.gouv.fr>"
directory = "{d}/var/outbox"

[siem]
format = "ecs"
spool_path = "{d}/var/siem-spool.db"
[[siem.sink]]
type = "file"
path = "{d}/var/events.jsonl"
"#,
            smtp_port = s.smtp_port,
            smtp_host = s.smtp_host,
            smtp_extra = s.smtp_extra,
            api_port = s.api_port,
            api_host = s.api_host,
            session_timeout = s.session_timeout,
            command_timeout = s.command_timeout,
            ttl = s.challenge_ttl,
            max_pending = s.max_pending,
            max_per_hour = s.max_per_hour,
            dns_timeout = s.dns_timeout,
            policy_extra = s.policy_extra,
            dns_check_timeout = s.dns_check_timeout,
            store = match &s.postgres {
                None => format!("path = \"{d}/var/gatekeeper.db\""),
                Some(pg) => format!(
                    "url = \"{}\"\ntls = \"disable\"\npool_size = {}{}",
                    pg.url,
                    pg.pool_size,
                    pg.password_file
                        .as_ref()
                        .map(|p| format!("\npassword_file = \"{}\"", p.display()))
                        .unwrap_or_default()
                ),
            },
        );
        std::fs::create_dir_all(&self.dir).expect("config dir");
        std::fs::write(&self.config, text).expect("write config");
        self.config.clone()
    }

    /// The challenge mail of challenge `id` as the daemon wrote it.
    pub fn challenge_mail(&self, id: &str) -> ChallengeMail {
        let path = self.outbox.join(format!("{id}.eml"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        ChallengeMail::parse(&bytes)
    }
}

/// What a test needs from a challenge mail: the token of its Reply-To and its Message-ID.
#[derive(Clone, Debug)]
pub struct ChallengeMail {
    pub token: String,
    /// Without angle brackets.
    pub message_id: String,
    pub text: String,
}

impl ChallengeMail {
    pub fn parse(bytes: &[u8]) -> ChallengeMail {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let header_block = text.split("\r\n\r\n").next().unwrap_or_default();
        // Unfold, then read the two fields.
        let unfolded = header_block.replace("\r\n ", " ").replace("\r\n\t", " ");
        let field = |name: &str| -> String {
            unfolded
                .split("\r\n")
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_else(|| panic!("challenge mail without {name}:\n{header_block}"))
        };
        let reply_to = field("Reply-To");
        let inner = reply_to
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string();
        let token = inner
            .strip_prefix("confirm+")
            .and_then(|r| r.strip_suffix("@verify.example.gouv.fr"))
            .unwrap_or_else(|| panic!("Reply-To not a confirmation address: {reply_to}"))
            .to_string();
        let message_id = field("Message-ID")
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string();
        ChallengeMail {
            token,
            message_id,
            text,
        }
    }
}

/// The HTTP API, authenticated with the token the daemon keeps in its token file.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(addr: SocketAddr, token_file: &Path) -> Api {
        let token = std::fs::read_to_string(token_file)
            .expect("API token file")
            .trim()
            .to_string();
        Api {
            base: format!("http://{addr}"),
            token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        }
    }

    /// `POST /v1/challenges`: the status and the JSON answer.
    pub async fn claim(&self, address: &str) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/v1/challenges", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "address": address }))
            .send()
            .await
            .expect("POST /v1/challenges");
        let status = r.status().as_u16();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// `POST /v1/probes`: the status and the JSON answer.
    pub async fn probe(&self) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/v1/probes", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("POST /v1/probes");
        let status = r.status().as_u16();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// `GET /v1/probes/{id}`.
    pub async fn show_probe(&self, id: &str) -> Value {
        self.client
            .get(format!("{}/v1/probes/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET /v1/probes/{id}")
            .json::<Value>()
            .await
            .expect("probe JSON")
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// `GET /v1/challenges/{id}`.
    pub async fn show(&self, id: &str) -> Value {
        self.try_show(id).await.expect("GET /v1/challenges/{id}")
    }

    pub async fn try_show(&self, id: &str) -> Result<Value, reqwest::Error> {
        let r = self
            .client
            .get(format!("{}/v1/challenges/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        r.json::<Value>().await
    }
}

/// The SIEM file: JSON lines. Read incrementally: each call parses only the lines appended
/// since the last one (a suite that waits for thousands of sessions' events would otherwise
/// parse the whole file again at every poll).
pub struct Events {
    pub path: PathBuf,
    seen: std::sync::Mutex<Seen>,
}

/// What has been read of the file so far.
#[derive(Default)]
struct Seen {
    /// Bytes of complete lines consumed.
    offset: u64,
    events: Vec<Value>,
}

impl Events {
    pub fn new(path: &Path) -> Events {
        Events {
            path: path.to_path_buf(),
            seen: std::sync::Mutex::new(Seen::default()),
        }
    }

    /// Complete lines so far, parsed (a line still being written is left for later).
    pub fn all(&self) -> Vec<Value> {
        self.matching(|_| true)
    }

    /// The events so far for which `keep` holds.
    fn matching(&self, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        use std::io::{Read, Seek, SeekFrom};
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut new = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < seen.offset {
                // Replaced or truncated: read it again from the start.
                *seen = Seen::default();
            }
            if f.seek(SeekFrom::Start(seen.offset)).is_ok() {
                let _ = f.read_to_end(&mut new);
            }
        }
        let complete = new.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for line in new[..complete].split(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(line);
            if line.trim().is_empty() {
                continue;
            }
            let v = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("event line not JSON ({e}): {line}"));
            seen.events.push(v);
        }
        seen.offset += complete as u64;
        seen.events.iter().filter(|e| keep(e)).cloned().collect()
    }

    /// Events of one client socket (source ip and port).
    pub fn of_client(&self, ip: IpAddr, port: u16) -> Vec<Value> {
        self.matching(|e| is_from(e, ip, port))
    }

    /// Wait (bounded) until `pred` holds on the events of one client; return them.
    pub async fn wait_client(
        &self,
        ip: IpAddr,
        port: u16,
        within: Duration,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let evs = self.of_client(ip, port);
            if pred(&evs) || start.elapsed() > within {
                return evs;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn is_from(e: &Value, ip: IpAddr, port: u16) -> bool {
    e["source"]["ip"].as_str() == Some(&ip.to_string())
        && e["source"]["port"].as_u64() == Some(u64::from(port))
}

/// An event that reports a refusal (5xx or 4xx): SPEC I4 counts these.
pub fn is_refusal(e: &Value) -> bool {
    matches!(
        e["event"]["action"].as_str(),
        Some("confirmation-rejected" | "confirmation-deferred" | "connection-refused")
    )
}

pub fn reason_of(e: &Value) -> String {
    e["event"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// One SMTP reply: the code and every line's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
    pub fn is_refusal(&self) -> bool {
        (400..600).contains(&self.code)
    }
    /// The RFC 3463 enhanced code at the start of the (last) line, if any.
    pub fn enhanced(&self) -> Option<&str> {
        let last = self.text.lines().last()?;
        let first = last.split_whitespace().next()?;
        let ok = first.split('.').count() == 3
            && first
                .split('.')
                .all(|p| p.chars().all(|c| c.is_ascii_digit()));
        ok.then_some(first)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text.replace('\n', " | "))
    }
}

/// A plain SMTP client that sends from a chosen loopback address and records every reply.
/// Next client source port (see [`Smtp::connect`]).
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

pub struct Smtp {
    stream: TcpStream,
    buf: Vec<u8>,
    pub local: SocketAddr,
    /// Every reply read, in order.
    pub replies: Vec<Reply>,
    pub closed: bool,
}

impl Smtp {
    /// Connect from `source` (port chosen by the kernel) to `server`, and read the greeting.
    pub async fn connect(source: IpAddr, server: SocketAddr) -> std::io::Result<Smtp> {
        let socket = match source {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // Audit events are matched to their session by source address and port: a port the
        // kernel hands out again to a later session of the same test would mix two sessions.
        // Ports come from a per-process counter instead, skipping any in use.
        let mut bound = None;
        for _ in 0..2000 {
            let port = 20000 + (NEXT_PORT.fetch_add(1, Ordering::Relaxed) % 30000) as u16;
            match socket.bind(SocketAddr::new(source, port)) {
                Ok(()) => {
                    bound = Some(port);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
        if bound.is_none() {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let stream = tokio::time::timeout(REPLY_TIMEOUT, socket.connect(server))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        let local = stream.local_addr()?;
        Ok(Smtp {
            stream,
            buf: Vec::new(),
            local,
            replies: Vec::new(),
            closed: false,
        })
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Read one (possibly multi-line) reply; `None` when the server closed the connection or
    /// nothing came within `within`.
    pub async fn read_reply_within(&mut self, within: Duration) -> Option<Reply> {
        let deadline = Instant::now() + within;
        let mut text = String::new();
        loop {
            let line = loop {
                if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                    break String::from_utf8_lossy(&line[..pos]).into_owned();
                }
                if self.closed {
                    return None;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let mut chunk = [0u8; 4096];
                match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        self.closed = true;
                        return None;
                    }
                    Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(_) => return None,
                }
            };
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok())?;
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(line.get(4..).unwrap_or_default());
            if line.as_bytes().get(3) != Some(&b'-') {
                let reply = Reply { code, text };
                self.replies.push(reply.clone());
                return Some(reply);
            }
        }
    }

    pub async fn read_reply(&mut self) -> Option<Reply> {
        self.read_reply_within(REPLY_TIMEOUT).await
    }

    /// Write one command line (CRLF added) and read its reply.
    pub async fn cmd(&mut self, line: &str) -> Option<Reply> {
        let mut bytes = line.as_bytes().to_vec();
        bytes.extend_from_slice(b"\r\n");
        if self.write(&bytes).await.is_err() {
            self.closed = true;
            return None;
        }
        self.read_reply().await
    }

    /// QUIT, then read until the server closes: the session is over on the server's side
    /// (its events are emitted, its confirmations marked as delivered).
    pub async fn quit(&mut self) {
        if !self.closed && self.write(b"QUIT\r\n").await.is_ok() {
            let _ = self.read_reply_within(Duration::from_secs(5)).await;
        }
        self.wait_closed(Duration::from_secs(5)).await;
    }

    /// Read (and keep as replies) until the server closes the connection, bounded.
    pub async fn wait_closed(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.closed && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.read_reply_within(left).await.is_none() && !self.closed {
                break;
            }
        }
    }

    /// The client's count of 4xx/5xx replies (SPEC I4: one audit event each).
    pub fn refusals(&self) -> usize {
        self.replies.iter().filter(|r| r.is_refusal()).count()
    }
}

/// The DATA payload: dot-stuffed (RFC 5321 §4.5.2), CRLF-terminated, then the end marker.
pub fn data_payload(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The DATA payload of a `raw_data` case: verbatim, then `.` CRLF.
pub fn raw_payload(message: &[u8]) -> Vec<u8> {
    let mut out = message.to_vec();
    out.extend_from_slice(b".\r\n");
    out
}

/// A whole normal transaction: EHLO, MAIL, one RCPT, DATA with `message`; returns the final
/// reply (or the first refusal before it). The session stays open (QUIT is the caller's).
pub async fn send_mail(
    smtp: &mut Smtp,
    helo: &str,
    mail_from: &str,
    rcpt: &str,
    message: &[u8],
) -> Option<Reply> {
    smtp.read_reply().await.filter(|r| r.code == 220)?;
    let r = smtp.cmd(&format!("EHLO {helo}")).await?;
    if !r.is_positive() {
        return Some(r);
    }
    let r = smtp.cmd(&format!("MAIL FROM:<{mail_from}>")).await?;
    if !r.is_positive() {
        return Some(r);
    }
    let r = smtp.cmd(&format!("RCPT TO:<{rcpt}>")).await?;
    if !r.is_positive() {
        return Some(r);
    }
    let r = smtp.cmd("DATA").await?;
    if r.code != 354 {
        return Some(r);
    }
    if smtp.write(&data_payload(message)).await.is_err() {
        return None;
    }
    smtp.read_reply().await
}
