//! A demo ministry on loopback (README, "Try it: a demo ministry"): everything a real ministry
//! brings to a confirmation, so anyone can watch one happen on one machine.
//!
//! Started next to `gatekeeper serve -c conf/examples/demo.toml`, it reads the same
//! configuration and plays `culture.gouv.fr`:
//!
//! - its DNS, on the address the configuration's `dns.nameservers` names: an SPF record that
//!   authorises 127.0.0.1, a DKIM key generated at start (RSA 2048, selector `demo`), a
//!   DMARC record and an MX;
//! - the backend: `POST /v1/challenges` for an agent's address through the HTTP API (token
//!   from `api.token_file`), as a sign-up page would;
//! - the person: reads the challenge mail in the outbox (`outbound.directory`), replies to it
//!   with the session code the site showed them;
//! - the ministry's mail server: signs the reply (DKIM, `relaxed/relaxed`, by the test
//!   signer of `tests/common/dkim.rs`, independent of gatekeeper's verifier) and sends it
//!   from 127.0.0.1 to gatekeeper's SMTP listener;
//! - and then shows `GET /v1/challenges/{id}`: `confirmed`, with the evidence.
//!
//! `--watch` keeps the DNS up and answers every new challenge mail in the outbox instead,
//! asking for the session code on the terminal, like a person copying it from the page:
//! for trying the API by hand or the OpenID sign-in page. With `[oidc]` in the configuration
//! and a public client whose redirect URI is on loopback (the demo configuration's `demo`),
//! it also prints a sign-in URL (PKCE S256) and plays that relying party's redirect: it
//! exchanges the code at `/token` and prints the ID token's claims.
//!
//! Run: `cargo run --example demo_ministry [-- -c conf/examples/demo.toml] [--address A]
//! [--watch]`. Every socket is on loopback.

// The test helpers it includes panic on setup failures, as tests do: this is a demo tool,
// never the daemon.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The end-to-end test (tests/demo.rs) includes this file and drives `Ministry` itself.
#![allow(dead_code)]

#[path = "../tests/common/dkim.rs"]
pub mod dkim;
#[path = "../tests/common/dns.rs"]
pub mod dns;
#[path = "../tests/common/e2e.rs"]
pub mod e2e;
#[path = "../tests/common/keys.rs"]
pub mod keys;

use std::collections::HashSet;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gatekeeper::config::{Config, OutboundTarget};
use serde_json::Value;

use dkim::{SignSpec, sign};
use dns::{Rec, TestDns};
use e2e::{Api, Reply, Smtp, send_mail};
use keys::Key;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// The ministry the demo plays (inside the demo configuration's `policy.allowed_domains`).
pub const MINISTRY: &str = "culture.gouv.fr";
pub const SELECTOR: &str = "demo";
/// Where its mail server sends from (and what its SPF record authorises).
pub const MTA_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// The agent whose address is confirmed unless `--address` says otherwise.
pub const DEFAULT_ADDRESS: &str = "agent@culture.gouv.fr";
/// How long the demo waits for gatekeeper (its API to answer, a mail, a confirmation).
pub const WAIT: Duration = Duration::from_secs(30);
/// The `h=` the ministry's MTA signs (as `tests/common/mail.rs`).
const SIGNED: &[&str] = &[
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "in-reply-to",
    "references",
];

/// The running ministry: its DNS and its key, and what it read of gatekeeper's configuration.
pub struct Ministry {
    pub dns: TestDns,
    key: Key,
    pub outbox: PathBuf,
    pub smtp: SocketAddr,
    api_addr: SocketAddr,
    token_file: PathBuf,
    confirm_domain: String,
    local_prefix: String,
}

/// What the person needs from a challenge mail.
#[derive(Clone, Debug)]
pub struct ChallengeMail {
    /// The address the mail was sent to (the agent's).
    pub to: String,
    /// The reply address: `<prefix>+<token>@<confirm.domain>`.
    pub reply_to: String,
    /// Without angle brackets.
    pub message_id: String,
    pub subject: String,
}

impl Ministry {
    /// Read gatekeeper's configuration and start the ministry's DNS where it points.
    pub async fn start(config: &Path) -> Result<Ministry> {
        Self::start_in(config, Path::new(".")).await
    }

    /// [`Ministry::start`] for a gatekeeper whose working directory is `dir` (its relative
    /// paths, outbox and token file, are relative to it).
    pub async fn start_in(config: &Path, dir: &Path) -> Result<Ministry> {
        let c = Config::load(config).map_err(|e| format!("{}: {e}", config.display()))?;
        let dns_addr = *c
            .dns
            .nameservers
            .first()
            .ok_or("dns.nameservers is empty: the demo serves the ministry's DNS there")?;
        let OutboundTarget::Directory(outbox) = &c.outbound.target else {
            return Err(
                "outbound.directory is needed: the demo reads challenge mails there".into(),
            );
        };
        let smtp = *c.smtp.listen.first().ok_or("smtp.listen is empty")?;
        let key = Key::generate("rsa 2048");
        let dns = TestDns::start_on(dns_addr, zone(&key))
            .await
            .map_err(|e| format!("DNS on {dns_addr}: {e}"))?;
        Ok(Ministry {
            dns,
            key,
            outbox: dir.join(outbox),
            smtp,
            api_addr: c.api.listen,
            token_file: dir.join(&c.api.token_file),
            confirm_domain: c.confirm.domain.as_str().to_owned(),
            local_prefix: c.confirm.local_prefix.clone(),
        })
    }

    /// The API client, once gatekeeper has written its token file and answers.
    pub async fn api(&self) -> Result<Api> {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.token_file.is_file() {
                let api = Api::new(self.api_addr, &self.token_file);
                if api.try_show("0").await.is_ok() {
                    return Ok(api);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "gatekeeper's API at {} did not answer in {WAIT:?}: is `gatekeeper serve -c \
                     conf/examples/demo.toml` running?",
                    self.api_addr
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The whole flow once for `address`; returns the challenge as the API shows it at the
    /// end. Prints each step.
    pub async fn confirm_once(&self, address: &str) -> Result<Value> {
        let api = self.api().await?;
        let (status, created) = api.claim(address).await;
        if status != 201 {
            return Err(format!("POST /v1/challenges: {status} {created}").into());
        }
        let id = created["id"].as_str().ok_or("no id")?.to_owned();
        let code = created["session_code"]
            .as_str()
            .ok_or("no session_code")?
            .to_owned();
        say(&format!(
            "1. the backend asked for a challenge: POST /v1/challenges {{\"address\": \
             \"{address}\"}} -> 201, id {id}; the site shows the person the session code {code}"
        ));
        let path = self.outbox.join(format!("{id}.eml"));
        let mail = wait_for(|| std::fs::read(&path).ok()).await?;
        let mail = parse_challenge(&mail)?;
        say(&format!(
            "2. the challenge mail is in the outbox: {} (Reply-To: {})",
            path.display(),
            redact(&mail.reply_to)
        ));
        let reply = self.reply(&mail, &code).await?;
        say(&format!(
            "3. the person replied with the code; the ministry signed it (DKIM d={MINISTRY} \
             s={SELECTOR}) and sent it from {MTA_IP}: {reply}"
        ));
        let shown = wait_for_status(&api, &id).await?;
        say(&format!(
            "4. GET /v1/challenges/{id} -> status {} (evidence: DKIM d={}, SPF {})",
            shown["status"], shown["evidence"]["dkim_domain"], shown["evidence"]["spf"]
        ));
        Ok(shown)
    }

    /// Reply to `mail` with `code`, signed, over SMTP; the final reply of the transaction.
    pub async fn reply(&self, mail: &ChallengeMail, code: &str) -> Result<Reply> {
        let message = self.signed_reply(mail, code);
        let mut smtp = Smtp::connect(IpAddr::V4(MTA_IP), self.smtp).await?;
        let reply = send_mail(
            &mut smtp,
            &format!("smtp.{MINISTRY}"),
            &mail.to,
            &mail.reply_to,
            &message,
        )
        .await
        .ok_or("gatekeeper closed the connection without a reply")?;
        smtp.quit().await;
        Ok(reply)
    }

    /// The person's reply, as their mail client writes it and their ministry signs it.
    fn signed_reply(&self, mail: &ChallengeMail, code: &str) -> Vec<u8> {
        let date = chrono::Utc::now().to_rfc2822();
        let unique = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let headers: Vec<String> = vec![
            format!("From: Agent <{}>", mail.to),
            format!("To: <{}>", mail.reply_to),
            format!("Subject: RE: {}", mail.subject),
            format!("Date: {date}"),
            format!("Message-ID: <demo.{unique}@{MINISTRY}>"),
            "MIME-Version: 1.0".into(),
            "Content-Type: text/plain; charset=utf-8".into(),
            format!("In-Reply-To: <{}>", mail.message_id),
            format!("References: <{}>", mail.message_id),
        ];
        let body = format!(
            "Code : {code}\r\n\r\nBonjour,\r\n\r\nJe confirme que cette adresse est bien la \
             mienne.\r\n\r\nMinistere de la Culture\r\n"
        );
        let spec = SignSpec::new(MINISTRY, SELECTOR, "rsa-sha256", SIGNED);
        let signature = sign(&self.key, &spec, &headers, body.as_bytes());
        let mut out = format!("{signature}\r\n");
        for h in &headers {
            out.push_str(h);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&body);
        out.into_bytes()
    }

    /// `--watch`: answer every challenge mail that appears in the outbox from now on, with
    /// the session code typed on the terminal. Runs until interrupted.
    pub async fn watch(&self) -> Result<()> {
        let mut seen: HashSet<PathBuf> = mails(&self.outbox).into_iter().collect();
        say(&format!(
            "watching {} for challenge mails to {MINISTRY} addresses (Ctrl-C stops)",
            self.outbox.display()
        ));
        loop {
            for path in mails(&self.outbox) {
                if !seen.insert(path.clone()) {
                    continue;
                }
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                let Ok(mail) = parse_challenge(&bytes) else {
                    continue;
                };
                if !mail.to.ends_with(&format!("@{MINISTRY}"))
                    || !self.is_reply_address(&mail.reply_to)
                {
                    continue;
                }
                say(&format!(
                    "challenge mail for {} ({}): type the session code the page shows",
                    mail.to,
                    path.display()
                ));
                let code = tokio::task::spawn_blocking(|| {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line).map(|_| line)
                })
                .await??;
                let reply = self.reply(&mail, code.trim()).await?;
                say(&format!("reply sent: {reply}"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `--watch` with a sign-in: catch the redirect in the background; the URL to open
    /// (`None` without a suitable `[oidc]` client).
    pub async fn sign_in(config: &Path) -> Result<Option<String>> {
        let c = Config::load(config).map_err(|e| format!("{}: {e}", config.display()))?;
        let Some(s) = SignIn::new(&c)? else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(s.callback).await?;
        let url = s.authorize_url.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if let Err(e) = s.callback(stream).await {
                    say(&format!("sign-in redirect: {e}"));
                }
            }
        });
        Ok(Some(url))
    }

    fn is_reply_address(&self, addr: &str) -> bool {
        addr.strip_suffix(&format!("@{}", self.confirm_domain))
            .and_then(|l| l.strip_prefix(&format!("{}+", self.local_prefix)))
            .is_some_and(|t| !t.is_empty())
    }
}

/// The relying party `--watch` plays for the OpenID page: a public client of the
/// configuration whose redirect URI is plain http on loopback.
struct SignIn {
    authorize_url: String,
    token_url: String,
    client_id: String,
    redirect_uri: String,
    verifier: String,
    state: String,
    callback: SocketAddr,
}

impl SignIn {
    fn new(c: &Config) -> Result<Option<SignIn>> {
        let Some(oidc) = &c.oidc else {
            return Ok(None);
        };
        let found = oidc
            .clients
            .iter()
            .filter(|cl| cl.secret.is_none())
            .find_map(|cl| {
                cl.redirect_uris.iter().find_map(|u| {
                    let url = url::Url::parse(u).ok()?;
                    let ip: IpAddr = url.host_str()?.parse().ok()?;
                    (url.scheme() == "http" && ip.is_loopback())
                        .then(|| (cl, u.clone(), SocketAddr::new(ip, url.port().unwrap_or(80))))
                })
            });
        let Some((client, redirect_uri, callback)) = found else {
            return Ok(None);
        };
        let random = |n: usize| -> Result<String> {
            let mut bytes = vec![0u8; n];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                .map_err(|_| "no random")?;
            Ok(data_encoding::BASE64URL_NOPAD.encode(&bytes))
        };
        let verifier = random(32)?;
        let state = random(12)?;
        let challenge = data_encoding::BASE64URL_NOPAD
            .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
        let q = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        let authorize_url = format!(
            "{}/authorize?response_type=code&client_id={}&redirect_uri={}&scope=openid%20email\
             &state={state}&nonce={}&code_challenge={challenge}&code_challenge_method=S256",
            oidc.issuer,
            q(&client.id),
            q(&redirect_uri),
            random(12)?
        );
        Ok(Some(SignIn {
            authorize_url,
            token_url: format!("{}/token", oidc.issuer),
            client_id: client.id.clone(),
            redirect_uri,
            verifier,
            state,
            callback,
        }))
    }

    /// One request to the redirect URI: exchange its code, print the claims, answer the
    /// browser.
    async fn callback(&self, mut stream: tokio::net::TcpStream) -> Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = Vec::new();
        let mut chunk = [0u8; 2048];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await??;
            if n == 0 {
                break;
            }
            head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
        let head = String::from_utf8_lossy(&head);
        let target = head.split_whitespace().nth(1).unwrap_or_default();
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let param = |name: &str| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let page = match (param("code"), param("state")) {
            (Some(code), Some(state)) if state == self.state => {
                let claims = self.exchange(&code).await?;
                say(&format!(
                    "the relying party got an ID token: email {}, email_verified {}, evidence {}",
                    claims["email"], claims["email_verified"], claims["gatekeeper_evidence"]
                ));
                format!("Signed in as {}. See the demo's terminal.", claims["email"])
            }
            _ => format!("No code in {target}"),
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \
             {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        );
        stream.write_all(answer.as_bytes()).await?;
        Ok(())
    }

    /// `POST /token` with the PKCE verifier; the ID token's claims. The demo prints them
    /// without checking the signature: a real relying party verifies it against
    /// `/jwks.json` (as `tests/oidc.rs` does).
    async fn exchange(&self, code: &str) -> Result<Value> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("client_id", &self.client_id),
            ("code_verifier", &self.verifier),
        ];
        let body: Value = reqwest::Client::new()
            .post(&self.token_url)
            .form(&form)
            .send()
            .await?
            .json()
            .await?;
        let payload = body["id_token"]
            .as_str()
            .and_then(|t| t.split('.').nth(1))
            .ok_or_else(|| format!("no ID token: {body}"))?;
        let json = data_encoding::BASE64URL_NOPAD.decode(payload.as_bytes())?;
        Ok(serde_json::from_slice(&json)?)
    }
}

/// The ministry's zone: SPF for its MTA, the DKIM key, DMARC, MX.
fn zone(key: &Key) -> Vec<Rec> {
    vec![
        Rec::new(MINISTRY, "TXT", &format!("v=spf1 ip4:{MTA_IP} -all")),
        Rec::new(
            &format!("{SELECTOR}._domainkey.{MINISTRY}"),
            "TXT",
            &format!("v=DKIM1; k=rsa; p={}", key.public_b64()),
        ),
        Rec::new(
            &format!("_dmarc.{MINISTRY}"),
            "TXT",
            "v=DMARC1; p=reject; adkim=s; aspf=s",
        ),
        Rec::new(MINISTRY, "MX", &format!("10 smtp.{MINISTRY}")),
        Rec::new(&format!("smtp.{MINISTRY}"), "A", &MTA_IP.to_string()),
    ]
}

/// The `.eml` files of the outbox.
fn mails(outbox: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(outbox)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default()
}

/// The fields a person's mail client uses to reply: To, Reply-To, Message-ID, Subject.
pub fn parse_challenge(bytes: &[u8]) -> Result<ChallengeMail> {
    let text = String::from_utf8_lossy(bytes);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let field = |name: &str| -> Result<String> {
        unfolded
            .split("\r\n")
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .ok_or_else(|| format!("challenge mail without {name}").into())
    };
    let bare = |v: String| {
        let v = v.rsplit('<').next().unwrap_or(&v).to_owned();
        v.trim_end_matches('>').trim().to_owned()
    };
    Ok(ChallengeMail {
        to: bare(field("To")?),
        reply_to: bare(field("Reply-To")?),
        message_id: bare(field("Message-ID")?),
        subject: field("Subject")?,
    })
}

/// The reply address with its token hidden (the token is a secret of the mailbox owner).
fn redact(addr: &str) -> String {
    match (addr.split_once('+'), addr.split_once('@')) {
        (Some((prefix, _)), Some((_, domain))) => format!("{prefix}+…@{domain}"),
        _ => addr.to_owned(),
    }
}

async fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("nothing after {WAIT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The challenge once it is no longer pending (the reply is decided before the SMTP answer,
/// so this is at once in practice; bounded anyway).
async fn wait_for_status(api: &Api, id: &str) -> Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let shown = api.try_show(id).await?;
        if shown["status"] != "pending" || Instant::now() > deadline {
            return Ok(shown);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn say(line: &str) {
    println!("demo: {line}");
}

struct Args {
    config: PathBuf,
    address: String,
    watch: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        config: PathBuf::from("conf/examples/demo.toml"),
        address: DEFAULT_ADDRESS.to_owned(),
        watch: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-c" | "--config" => a.config = it.next().ok_or("-c needs a path")?.into(),
            "--address" => a.address = it.next().ok_or("--address needs an address")?,
            "--watch" => a.watch = true,
            "-h" | "--help" => {
                println!(
                    "usage: demo_ministry [-c CONFIG] [--address ADDR] [--watch]\n\
                     Plays {MINISTRY} next to `gatekeeper serve -c CONFIG` (default \
                     conf/examples/demo.toml)."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (see --help)").into()),
        }
    }
    Ok(a)
}

fn main() -> std::process::ExitCode {
    let run = async {
        let args = args()?;
        let ministry = Ministry::start(&args.config).await?;
        say(&format!(
            "{MINISTRY}'s DNS on {} (SPF for {MTA_IP}, a new DKIM key at \
             {SELECTOR}._domainkey.{MINISTRY}, DMARC, MX)",
            ministry.dns.addr
        ));
        if args.watch {
            if let Some(url) = Ministry::sign_in(&args.config).await? {
                say(&format!(
                    "OpenID sign-in: open {url} , type an address at {MINISTRY}, then the \
                     session code here"
                ));
            }
            return ministry.watch().await;
        }
        let shown = ministry.confirm_once(&args.address).await?;
        if shown["status"] == "confirmed" {
            Ok(())
        } else {
            Err(format!("not confirmed: {shown}").into())
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
