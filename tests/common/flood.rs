//! A bounded HTTP flood of requests without a valid token, on loopback: `connections`
//! keep-alive HTTP/1.1 connections from one source address share a target rate for a fixed
//! time; each answer's status and latency is recorded. Bounded in count (rate × time), in
//! time (the duration, then at most 5 s to finish what is in flight) and in memory (one
//! latency per answer). Used by `tests/abuse.rs` (a short run) and `examples/api_flood.rs`
//! (the 10 s one behind `bench/api_flood.sh`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// What to send.
#[derive(Clone, Debug)]
pub struct Flood {
    pub target: SocketAddr,
    pub source: IpAddr,
    /// Requests per second, all connections together.
    pub rate: u64,
    pub duration: Duration,
    pub connections: usize,
    /// The request line's path (`/metrics`, `/v1/challenges/x`).
    pub path: String,
    /// `Authorization` header value, if any (a wrong token).
    pub authorization: Option<String>,
}

/// What came back.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Requests written (or attempted on an open connection).
    pub sent: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Answers with a `Retry-After` header.
    pub retry_after: u64,
    /// Connections that failed (connect, read or write error, or a malformed answer).
    pub errors: u64,
    /// Per-answer latency, sorted.
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// The `q`-quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }

    pub fn rate(&self) -> f64 {
        self.answered() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The `q`-quantile of sorted `v` (zero when empty).
pub fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

/// One connection's share of the answers.
#[derive(Default)]
struct Part {
    sent: u64,
    statuses: BTreeMap<u16, u64>,
    retry_after: u64,
    errors: u64,
    latencies: Vec<Duration>,
}

impl Flood {
    pub async fn run(&self) -> Outcome {
        let total = self.rate.saturating_mul(self.duration.as_millis() as u64) / 1000;
        let issued = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..self.connections.max(1) {
            let flood = self.clone();
            let issued = Arc::clone(&issued);
            tasks.push(tokio::spawn(async move {
                flood.connection(&issued, total, start).await
            }));
        }
        let mut out = Outcome::default();
        for t in tasks {
            let Ok(part) = t.await else {
                out.errors += 1;
                continue;
            };
            for (k, n) in part.statuses {
                *out.statuses.entry(k).or_insert(0) += n;
            }
            out.sent += part.sent;
            out.retry_after += part.retry_after;
            out.errors += part.errors;
            out.latencies.extend(part.latencies);
        }
        out.elapsed = start.elapsed();
        out.latencies.sort_unstable();
        out
    }

    /// Take request slots (the `n`th is due at `start + n / rate`) until `total` are taken
    /// or time is up; reconnect after a closed connection.
    async fn connection(&self, issued: &AtomicU64, total: u64, start: Instant) -> Part {
        let mut part = Part::default();
        let request = self.request();
        let hard_end = start + self.duration + Duration::from_secs(5);
        let mut conn: Option<TcpStream> = None;
        loop {
            let n = issued.fetch_add(1, Ordering::Relaxed);
            if n >= total || Instant::now() >= hard_end {
                return part;
            }
            let due =
                start + Duration::from_nanos(n.saturating_mul(1_000_000_000) / self.rate.max(1));
            tokio::time::sleep_until(due.into()).await;
            if conn.is_none() {
                conn = self.connect().await.ok();
            }
            let Some(stream) = conn.as_mut() else {
                part.errors += 1;
                continue;
            };
            let sent_at = Instant::now();
            part.sent += 1;
            let answer = tokio::time::timeout(Duration::from_secs(5), async {
                stream.write_all(&request).await?;
                read_answer(stream).await
            })
            .await;
            match answer {
                Ok(Ok((status, retry_after))) => {
                    part.latencies.push(sent_at.elapsed());
                    *part.statuses.entry(status).or_insert(0) += 1;
                    part.retry_after += u64::from(retry_after);
                }
                _ => {
                    part.errors += 1;
                    conn = None;
                }
            }
        }
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let socket = match self.source {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(self.source, 0))?;
        let s = socket.connect(self.target).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    fn request(&self) -> Vec<u8> {
        let mut r = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: flood\r\n",
            self.path, self.target
        );
        if let Some(a) = &self.authorization {
            r.push_str(&format!("Authorization: {a}\r\n"));
        }
        r.push_str("\r\n");
        r.into_bytes()
    }
}

/// Read one HTTP/1.1 answer (headers, then `Content-Length` bytes): its status and whether it
/// carried `Retry-After`.
async fn read_answer(stream: &mut TcpStream) -> std::io::Result<(u16, bool)> {
    let bad = || std::io::Error::other("malformed answer");
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 16 * 1024 {
            return Err(bad());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let retry_after = head.lines().any(|l| l.starts_with("retry-after:"));
    let mut have = buf.len() - head_end;
    while have < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        have += n;
    }
    Ok((status, retry_after))
}

/// A confirmation measured end to end: claim through the API, the genuine reply over SMTP,
/// its `250`.
#[derive(Debug)]
pub struct Confirmed {
    pub code: Option<u16>,
    pub took: Duration,
    pub id: String,
}

/// `n` confirmations of alice's address one after another on `instance`, `gap` apart: what
/// each got and how long it took.
pub async fn confirmations(
    instance: &super::e2e::Instance,
    n: u32,
    gap: Duration,
) -> Vec<Confirmed> {
    let alice = super::mail::Mail::alice();
    let ip: IpAddr = alice.client_ip.parse().expect("alice's IP");
    let mut out = Vec::new();
    for k in 0..n {
        let t = Instant::now();
        let (status, body) = instance.api.claim("alice@interieur.gouv.fr").await;
        assert_eq!(status, 201, "claim during the flood: {body}");
        let id = body["id"].as_str().unwrap_or_default().to_string();
        let mail = instance.layout.challenge_mail(&id);
        let mut vars = super::Vars::new(chrono::Utc::now(), 9000 + k);
        vars.token = mail.token.clone();
        vars.challenge_msgid = mail.message_id;
        vars.session_code = body["session_code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let message = alice.build(&vars);
        let rcpt = format!("confirm+{}@verify.example.gouv.fr", mail.token);
        let code = match super::e2e::Smtp::connect(ip, instance.smtp).await {
            Ok(mut smtp) => {
                let r = super::e2e::send_mail(
                    &mut smtp,
                    &alice.helo,
                    &alice.mail_from,
                    &rcpt,
                    &message,
                )
                .await
                .map(|r| r.code);
                smtp.quit().await;
                r
            }
            Err(_) => None,
        };
        out.push(Confirmed {
            code,
            took: t.elapsed(),
            id,
        });
        tokio::time::sleep(gap).await;
    }
    out
}
