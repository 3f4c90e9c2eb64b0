//! The OpenID Provider's benchmark (`bash bench/oidc.sh`; README, "Performance").
//!
//! One process plays the world around a real `gatekeeper serve` child on loopback: the
//! ministry's DNS (in-process, `tests/common/dns.rs`), the ministry's MTA (RSA-2048 DKIM,
//! `tests/common/dkim.rs`, from 127.0.0.25), the browsers and the relying party. N complete
//! sign-ins, in phases so that each is measured alone:
//!
//! 1. `page`: `GET /authorize` (303 + cookie), the address page, `POST` the address (the
//!    challenge and its mail), the session-code page;
//! 2. `reply`: the signed replies over SMTP (the verification, measured by bench/run.sh too;
//!    reported, not part of the sign-in figure);
//! 3. `poll`: one `/authorize/status` poll and the page that issues the code (303);
//! 4. `token`: `POST /token` for every code, C at a time: exchanges per second.
//!
//! Server CPU is read from `/proc/<pid>/stat` around each phase; "CPU per sign-in" is
//! page + poll + token, divided by N.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/dkim.rs"]
mod dkim;
#[path = "../tests/common/dns.rs"]
mod dns;
#[path = "../tests/common/keys.rs"]
mod keys;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use dkim::{SignSpec, sign};
use dns::{Rec, TestDns};
use keys::Key;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

const CONFIRM_DOMAIN: &str = "verify.example.gouv.fr";
const MINISTRY: &str = "interieur.gouv.fr";
const SELECTOR: &str = "bench2026";
const SECRET: &str = "bench-client-secret";
const REDIRECT: &str = "http://127.0.0.1:9/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const IO_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value = "target/release/gatekeeper")]
    gatekeeper: PathBuf,
    #[arg(long, default_value = "127.0.0.53:5355")]
    dns: SocketAddr,
    #[arg(long, default_value = "127.0.0.21:2525")]
    smtp: SocketAddr,
    #[arg(long, default_value = "127.0.0.21:8025")]
    api: SocketAddr,
    #[arg(long, default_value = "127.0.0.21:8443")]
    oidc: SocketAddr,
    /// Sign-ins.
    #[arg(long, default_value_t = 500)]
    n: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 20)]
    concurrency: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// One sign-in in progress.
#[derive(Clone, Default)]
struct SignIn {
    address: String,
    cookie: String,
    flow_url: String,
    session_code: String,
    token: String,
    message_id: String,
    code: String,
}

async fn run(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let key = Arc::new(Key::generate("rsa 2048"));
    let dns = TestDns::start_on(args.dns, zone(&key)).await?;
    dns.set_ttl(3600);
    std::fs::write(args.dir.join("client.secret"), SECRET)?;
    let config = args.dir.join("gatekeeper.toml");
    std::fs::write(&config, gatekeeper_config(&args))?;
    let mut daemon = Daemon::spawn(&args.gatekeeper, &config, &args.dir)?;
    wait_ready(&[args.smtp, args.api, args.oidc]).await?;
    let pid = daemon.pid;
    let issuer = format!("http://{}", args.oidc);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(IO_TIMEOUT)
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let sem = Arc::new(Semaphore::new(args.concurrency));
    let n = args.n;

    // 1. page
    let started = Instant::now();
    let cpu0 = cpu_ticks(pid)?;
    let mut tasks = Vec::new();
    for i in 0..n {
        let (http, issuer, sem) = (http.clone(), issuer.clone(), Arc::clone(&sem));
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await?;
            page_phase(&http, &issuer, i).await
        }));
    }
    let mut signins = Vec::with_capacity(n);
    for t in tasks {
        signins.push(t.await??);
    }
    let page_cpu = ticks_to_ms(cpu_ticks(pid)? - cpu0);
    let page_secs = started.elapsed().as_secs_f64();

    // The mails, by address (outside the timing).
    let mails = outbox(&args.dir.join("outbox"))?;
    for s in &mut signins {
        let (token, mid) = mails
            .get(&s.address)
            .ok_or_else(|| format!("no challenge mail for {}", s.address))?;
        s.token = token.clone();
        s.message_id = mid.clone();
    }
    let signed: Vec<Vec<u8>> = signins
        .iter()
        .enumerate()
        .map(|(i, s)| reply(&key, s, i))
        .collect();

    // 2. reply
    let cpu0 = cpu_ticks(pid)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (s, msg) in signins.iter().cloned().zip(signed) {
        let (sem, smtp) = (Arc::clone(&sem), args.smtp);
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await?;
            confirm_one(Ipv4Addr::new(127, 0, 0, 25), smtp, &s, &msg).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let reply_cpu = ticks_to_ms(cpu_ticks(pid)? - cpu0);
    let reply_secs = started.elapsed().as_secs_f64();

    // 3. poll
    let cpu0 = cpu_ticks(pid)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in signins {
        let (http, issuer, sem) = (http.clone(), issuer.clone(), Arc::clone(&sem));
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await?;
            poll_phase(&http, &issuer, s).await
        }));
    }
    let mut signins = Vec::with_capacity(n);
    for t in tasks {
        signins.push(t.await??);
    }
    let poll_cpu = ticks_to_ms(cpu_ticks(pid)? - cpu0);
    let poll_secs = started.elapsed().as_secs_f64();

    // 4. token
    let cpu0 = cpu_ticks(pid)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in signins {
        let (http, issuer, sem) = (http.clone(), issuer.clone(), Arc::clone(&sem));
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await?;
            token_phase(&http, &issuer, &s).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let token_cpu = ticks_to_ms(cpu_ticks(pid)? - cpu0);
    let token_secs = started.elapsed().as_secs_f64();
    daemon.stop();

    let per = |ms: f64| ms / n as f64;
    println!(
        "phase page:  {n} sign-ins in {page_secs:.2} s ({:.0}/s), server CPU {:.2} ms each",
        n as f64 / page_secs,
        per(page_cpu)
    );
    println!(
        "phase reply: {n} replies in {reply_secs:.2} s ({:.0}/s), server CPU {:.2} ms each (SMTP verification)",
        n as f64 / reply_secs,
        per(reply_cpu)
    );
    println!(
        "phase poll:  {n} polls + code redirects in {poll_secs:.2} s, server CPU {:.2} ms each",
        per(poll_cpu)
    );
    println!(
        "phase token: {n} exchanges in {token_secs:.2} s = {:.0} /token per second, server CPU {:.2} ms each",
        n as f64 / token_secs,
        per(token_cpu)
    );
    println!(
        "summary: n={n} concurrency={} token_per_s={:.0} cpu_ms_per_signin={:.2} (page {:.2} + poll {:.2} + token {:.2}; reply {:.2} not included) cores={}",
        args.concurrency,
        n as f64 / token_secs,
        per(page_cpu + poll_cpu + token_cpu),
        per(page_cpu),
        per(poll_cpu),
        per(token_cpu),
        per(reply_cpu),
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(1)
    );
    Ok(())
}

fn between<'a>(text: &'a str, start: &str, end: char) -> Result<&'a str> {
    let i = text.find(start).ok_or_else(|| format!("no {start:?}"))? + start.len();
    let rest = text.get(i..).unwrap_or_default();
    Ok(rest.split(end).next().unwrap_or_default())
}

async fn page_phase(http: &reqwest::Client, issuer: &str, i: usize) -> Result<SignIn> {
    let address = format!("agent{i}@{MINISTRY}");
    let url = format!(
        "{issuer}/authorize?response_type=code&scope=openid%20email&client_id=bench&redirect_uri={}&state=s{i}&nonce=n{i}&code_challenge={CHALLENGE}&code_challenge_method=S256",
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
    );
    let r = http.get(&url).send().await?;
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or("no cookie")?
        .to_owned();
    let loc = r.headers().get("location").ok_or("no redirect")?.to_str()?;
    let flow_url = format!("{issuer}{loc}");
    let page = http
        .get(&flow_url)
        .header("cookie", &cookie)
        .send()
        .await?
        .text()
        .await?;
    let csrf = between(&page, "name=\"csrf\" value=\"", '"')?.to_owned();
    let flow = between(&page, "name=\"flow\" value=\"", '"')?.to_owned();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("flow", &flow)
        .append_pair("csrf", &csrf)
        .append_pair("address", &address)
        .finish();
    let r = http
        .post(format!("{issuer}/authorize"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    if r.status() != 303 {
        return Err(format!("POST address: {}", r.status()).into());
    }
    let pending = http
        .get(&flow_url)
        .header("cookie", &cookie)
        .send()
        .await?
        .text()
        .await?;
    let session_code = between(&pending, "id=\"session-code\">", '<')?.to_owned();
    Ok(SignIn {
        address,
        cookie,
        flow_url,
        session_code,
        ..SignIn::default()
    })
}

async fn poll_phase(http: &reqwest::Client, issuer: &str, mut s: SignIn) -> Result<SignIn> {
    let flow = s.flow_url.rsplit('=').next().unwrap_or_default();
    let status = http
        .get(format!("{issuer}/authorize/status?flow={flow}"))
        .header("cookie", &s.cookie)
        .send()
        .await?
        .text()
        .await?;
    if !status.contains("confirmed") {
        return Err(format!("status {status} for {}", s.address).into());
    }
    let r = http
        .get(&s.flow_url)
        .header("cookie", &s.cookie)
        .send()
        .await?;
    let loc = r
        .headers()
        .get("location")
        .ok_or("no code redirect")?
        .to_str()?;
    let url = url::Url::parse(loc)?;
    s.code = url
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or("no code")?;
    Ok(s)
}

async fn token_phase(http: &reqwest::Client, issuer: &str, s: &SignIn) -> Result<()> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", &s.code)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("code_verifier", VERIFIER)
        .finish();
    let r = http
        .post(format!("{issuer}/token"))
        .basic_auth("bench", Some(SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    if r.status() != 200 {
        return Err(format!("/token: {} {}", r.status(), r.text().await?).into());
    }
    Ok(())
}

/// Challenge mails in the outbox: To address → (token, Message-ID).
fn outbox(dir: &Path) -> Result<HashMap<String, (String, String)>> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir)? {
        let text = std::fs::read_to_string(e?.path())?;
        let head = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .replace("\r\n ", " ");
        let field = |name: &str| {
            head.split("\r\n").find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let to = field("To").unwrap_or_default();
        let to = to
            .rsplit('<')
            .next()
            .unwrap_or(&to)
            .trim_end_matches('>')
            .to_owned();
        let reply_to = field("Reply-To").unwrap_or_default();
        let token = between(&reply_to, "confirm+", '@')?.to_owned();
        let mid = field("Message-ID").unwrap_or_default();
        out.insert(to, (token, mid.trim_matches(['<', '>']).to_owned()));
    }
    Ok(out)
}

fn zone(key: &Key) -> Vec<Rec> {
    vec![
        Rec::new(MINISTRY, "TXT", "v=spf1 ip4:127.0.0.25 -all"),
        Rec::new(
            &format!("{SELECTOR}._domainkey.{MINISTRY}"),
            "TXT",
            &format!("v=DKIM1; k=rsa; p={}", key.public_b64()),
        ),
    ]
}

const STD_H: &[&str] = &[
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
];

fn reply(key: &Key, s: &SignIn, n: usize) -> Vec<u8> {
    let date = chrono::Utc::now().to_rfc2822();
    let headers: Vec<String> = vec![
        format!("From: Agent {n} <{}>", s.address),
        format!("To: <confirm+{}@{CONFIRM_DOMAIN}>", s.token),
        "Subject: RE: Confirmation de votre adresse".into(),
        format!("Date: {date}"),
        format!("Message-ID: <oidc.{n}.{}@{MINISTRY}>", s.token),
        format!("In-Reply-To: <{}>", s.message_id),
        format!("References: <{}>", s.message_id),
    ];
    let body = format!("Code : {}\r\n\r\nC'est bien moi.\r\n", s.session_code);
    let spec = SignSpec::new(MINISTRY, SELECTOR, "rsa-sha256", STD_H);
    let signature = sign(key, &spec, &headers, body.as_bytes());
    let mut out = format!("{signature}\r\n");
    for h in &headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

async fn confirm_one(src: Ipv4Addr, target: SocketAddr, s: &SignIn, msg: &[u8]) -> Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    let mut stream = tokio::time::timeout(IO_TIMEOUT, socket.connect(target)).await??;
    let mut buf = Vec::new();
    expect(&mut stream, &mut buf, 220).await?;
    for (line, want) in [
        ("EHLO smtp.interieur.gouv.fr".to_owned(), 250),
        (format!("MAIL FROM:<{}>", s.address), 250),
        (
            format!("RCPT TO:<confirm+{}@{CONFIRM_DOMAIN}>", s.token),
            250,
        ),
        ("DATA".to_owned(), 354),
    ] {
        stream.write_all(format!("{line}\r\n").as_bytes()).await?;
        expect(&mut stream, &mut buf, want).await?;
    }
    let mut data = Vec::with_capacity(msg.len() + 8);
    let mut at_start = true;
    for &b in msg {
        if at_start && b == b'.' {
            data.push(b'.');
        }
        data.push(b);
        at_start = b == b'\n';
    }
    data.extend_from_slice(b".\r\n");
    stream.write_all(&data).await?;
    expect(&mut stream, &mut buf, 250).await?;
    stream.write_all(b"QUIT\r\n").await?;
    Ok(())
}

/// Read one SMTP reply (possibly multi-line); error unless its code is `want`.
async fn expect(stream: &mut TcpStream, buf: &mut Vec<u8>, want: u16) -> Result<()> {
    loop {
        while let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = buf.drain(..i + 2).take(i).collect();
            if line.get(3) != Some(&b'-') {
                let code: u16 = std::str::from_utf8(line.get(..3).unwrap_or_default())?.parse()?;
                if code != want {
                    return Err(
                        format!("expected {want}: {}", String::from_utf8_lossy(&line)).into(),
                    );
                }
                return Ok(());
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(IO_TIMEOUT, stream.read(&mut chunk)).await??;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

struct Daemon {
    child: Child,
    pid: u32,
}

impl Daemon {
    fn spawn(bin: &Path, config: &Path, dir: &Path) -> Result<Daemon> {
        let child = Command::new(bin)
            .arg("serve")
            .arg("-c")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("gatekeeper.out"))?)
            .stderr(std::fs::File::create(dir.join("gatekeeper.err"))?)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let pid = child.id();
        Ok(Daemon { child, pid })
    }

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

async fn wait_ready(addrs: &[SocketAddr]) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let mut up = true;
        for a in addrs {
            up &= TcpStream::connect(a).await.is_ok();
        }
        if up {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(
                "gatekeeper did not start listening within 60 s (see gatekeeper.err)".into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn gatekeeper_config(args: &Args) -> String {
    let d = args.dir.display();
    format!(
        r#"# Written by examples/oidc_load.rs for bench/oidc.sh.
[smtp]
listen = ["{smtp}"]
hostname = "{CONFIRM_DOMAIN}"
max_connections = 20000
max_connections_per_ip = 2000
shutdown_grace = "1s"

[confirm]
domain = "{CONFIRM_DOMAIN}"
service_name = "bench"

[policy]
allowed_domains = ["gouv.fr"]

[dns]
nameservers = ["{dns}"]
timeout = "5s"

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

[oidc]
listen = "{oidc}"
issuer = "http://{oidc}"
signing_key = "{d}/oidc-key.pem"
subject_key = "{d}/oidc-subject"
code_ttl = "10m"
flow_ttl = "1h"

[[oidc.client]]
id = "bench"
secret_file = "{d}/client.secret"
redirect_uris = ["{REDIRECT}"]
name = "Bench"
"#,
        smtp = args.smtp,
        dns = args.dns,
        api = args.api,
        oidc = args.oidc,
    )
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').ok_or("bad stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("no stime")?.parse()?;
    Ok(utime + stime)
}

fn ticks_to_ms(ticks: u64) -> f64 {
    let hz: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    ticks as f64 * 1000.0 / hz
}
