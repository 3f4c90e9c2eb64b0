//! The pure per-message path, one stage at a time, for an instruction count under callgrind
//! (`bench/instructions.sh` runs it): instructions do not depend on what else the machine
//! runs, so a regression shows as a number instead of hiding in the noise of a load test.
//!
//! `instructions STAGES N [BODY_BYTES]` builds the fixed input once (Alice's genuine reply, the
//! corpus LEGIT-01 shape: RSA-2048, relaxed/relaxed; its body padded to about BODY_BYTES,
//! 2 KiB when absent), then for each stage of STAGES (comma-separated, or `all`) runs it a few
//! times to warm every cache (DNS answers, lazy statics, the allocator's free lists), then N
//! times inside the stage's own `measured_<stage>` function, the only code callgrind counts
//! (`--toggle-collect`); the script reads each function's inclusive count. One process for
//! all stages: the test keys are generated once, which under valgrind takes most of a run's
//! time. Stages, in the order a message meets them:
//!
//! - `smtp`: the sans-IO SMTP session from connect to QUIT (EHLO, MAIL, RCPT, DATA with the
//!   message, the verdict fed back, its reply and audit event), answers given in place.
//! - `headers`: the header block split, mail-parser's reading, every header check.
//! - `dkim`: mail-auth's DKIM verification (RSA-2048 with the key in the resolver cache), as
//!   `verify::auth::Auth::crypto` calls it.
//! - `verify_accept` / `verify_reject`: the whole `Verifier::verify` with every DNS answer
//!   cached (SPF, DKIM with key lookup, iprev, alignment, binding, policy); the reject case is
//!   the reply naming someone else's challenge (`binding.mismatch`, bench/run.sh's reject
//!   path).
//! - `policy`: `policy::decide` on the accepted message's results.
//! - `event_ecs` / `event_cef`: the accepted message's audit event serialised to one SIEM line.
//!
//! The DNS answers come from the test world's DNS server on 127.0.0.1 (tests/common), asked
//! once during the warm-up; the resolver keeps them for an hour, so the measured loop sends
//! nothing. Every stage checks its result once (a stage that silently refused would measure
//! the wrong path) and prints one line: `stage N result`.

// An example is built without cfg(test): the shared test helpers' panics on broken fixtures
// (`expect`) are as wanted here as in the tests.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[allow(unused_imports)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gatekeeper::audit::AuditEvent;
use gatekeeper::backend::{
    ChallengeBinding, Decision, RcptOutcome, SessionInfo, Transaction, Verdict, Verify,
};
use gatekeeper::config::{Config, SiemFormat};
use gatekeeper::domains::DomainPolicy;
use gatekeeper::policy::{self, CheckResults, Requirements};
use gatekeeper::siem::format::FormatOptions;
use gatekeeper::smtp::drive::{self, Perform};
use gatekeeper::smtp::{Input, Output, Session, SessionSettings};
use gatekeeper::verify::Verifier;
use gatekeeper::verify::auth::Auth;
use gatekeeper::verify::headers::{self, HeaderBlock};
use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig};

use common::mail::{Mail, alice_challenge};
use common::{Vars, World};

/// Runs before the measured loop, so first-use costs (a DNS query, a lazy static, the
/// allocator's first pages) stay out of the count.
const WARM_UP: u32 = 3;

/// The loop callgrind counts, inlined into one never-inlined function per stage
/// (`measured_<stage>`, see [`measured`]).
#[inline(always)]
fn counted<T>(n: u32, stage: &mut impl FnMut() -> T) {
    for _ in 0..n {
        black_box(stage());
    }
}

/// One function per stage, never inlined, so each has a symbol to toggle collection on
/// (`--toggle-collect=instructions::measured_*`) and its own inclusive count in the dump.
macro_rules! per_stage {
    ($($name:ident),*) => {
        $(
            #[inline(never)]
            fn $name<T>(n: u32, stage: &mut impl FnMut() -> T) {
                // Two stages may run the same closure type (verify_accept and
                // verify_reject): the distinct constant keeps the compiler from merging
                // their identical bodies into one symbol.
                black_box(stringify!($name));
                counted(n, stage)
            }
        )*
    };
}
per_stage!(
    measured_smtp,
    measured_headers,
    measured_dkim,
    measured_verify_accept,
    measured_verify_reject,
    measured_policy,
    measured_event_ecs,
    measured_event_cef
);

/// Run `stage` `n` times inside the counted function of `name`.
fn measured<T>(name: &str, n: u32, stage: &mut impl FnMut() -> T) {
    match name {
        "smtp" => measured_smtp(n, stage),
        "headers" => measured_headers(n, stage),
        "dkim" => measured_dkim(n, stage),
        "verify_accept" => measured_verify_accept(n, stage),
        "verify_reject" => measured_verify_reject(n, stage),
        "policy" => measured_policy(n, stage),
        "event_ecs" => measured_event_ecs(n, stage),
        _ => measured_event_cef(n, stage),
    }
}

/// Alice's reply with its body padded by quoted lines to about `body_bytes`.
fn alice(body_bytes: usize) -> Mail {
    let mut body = String::from(
        "Code : {SESSION_CODE}\r\n\r\nJe confirme que cette adresse est bien la mienne.\r\n\r\n",
    );
    body.push_str("-----Message d'origine-----\r\n");
    let mut n = 0;
    while body.len() < body_bytes.saturating_sub(600) {
        n += 1;
        body.push_str(&format!(
            "> Ligne {n} du message de confirmation : veuillez repondre a ce message.\r\n"
        ));
    }
    Mail::alice().body(&body)
}

/// A verifier on the world's DNS server whose resolver keeps answers for an hour.
fn verifier(world: &World) -> (Verifier, MessageAuthenticator) {
    let resolver = || {
        let cfg = common::dns_config(world.dns.addr, world.timeout);
        let mut opts = gatekeeper::dns::options(&cfg);
        opts.positive_min_ttl = Some(Duration::from_secs(3600));
        opts.negative_min_ttl = Some(Duration::from_secs(3600));
        let mut ns = NameServerConfig::udp_and_tcp(world.dns.addr.ip());
        for conn in &mut ns.connections {
            conn.port = world.dns.addr.port();
        }
        MessageAuthenticator::new(ResolverConfig::from_name_servers(vec![ns]), opts)
            .expect("resolver")
    };
    let v = Verifier::with_authenticator(
        resolver(),
        world.confirm.clone(),
        world.policy.clone(),
        world.timeout,
    );
    (v, resolver())
}

/// Answers the session's requests in place: the recipient is live and the verdict is the one
/// computed beforehand; replies and audit events are kept so the stage's work is not dead.
struct Answers {
    verdict: Verdict,
    replies: usize,
    last_code: Vec<u8>,
    events: Vec<AuditEvent>,
}

impl Perform for Answers {
    fn perform(&mut self, output: Output) -> Option<Input<'static>> {
        match output {
            Output::Reply(bytes) => {
                self.replies += 1;
                self.last_code = bytes.get(..3).unwrap_or_default().to_vec();
                None
            }
            Output::Audit(event) => {
                self.events.push(*event);
                None
            }
            Output::CheckRecipient(_) => Some(Input::RcptChecked(RcptOutcome::Accept {
                challenge_id: "ch-test".into(),
            })),
            Output::Deliver(_) => Some(Input::Verdict(Box::new(self.verdict.clone()))),
            Output::StartTls | Output::Close => None,
        }
    }
}

/// The SMTP dialogue of one message as a client sends it, pipelined after EHLO.
fn dialogue(tx: &Transaction) -> Vec<u8> {
    // The session checks only the token's shape (lower-case base32; the corpus tokens carry
    // other digits): the answer to RCPT is given in place whatever the token.
    let mut out = format!(
        "EHLO smtp.interieur.gouv.fr\r\nMAIL FROM:<{}>\r\n\
         RCPT TO:<confirm+abcdefghijklmnopqrstuvwxyz234567@{}>\r\nDATA\r\n",
        tx.mail_from,
        tx.rcpt.address.domain()
    )
    .into_bytes();
    // Dot-stuffing: the corpus mail has no line starting with a dot, checked here.
    assert!(
        !tx.message.windows(3).any(|w| w == b"\n.\r"),
        "message needs stuffing"
    );
    out.extend_from_slice(&tx.message);
    if !tx.message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\nQUIT\r\n");
    out
}

fn smtp_once(
    settings: &Arc<SessionSettings>,
    bytes: &[u8],
    answers: &mut Answers,
    now: DateTime<Utc>,
) {
    let info = SessionInfo {
        session_id: "bench-session".into(),
        client_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 25)),
        client_port: 40000,
        helo: None,
        tls_version: None,
    };
    let mut session = Session::new(Arc::clone(settings), info);
    drive::run(&mut session, Input::Connected, now, answers);
    drive::run(&mut session, Input::Bytes(bytes), now, answers);
}

/// What every stage reads: built once, before any stage runs.
struct Fixture {
    rt: tokio::runtime::Runtime,
    world: World,
    now: DateTime<Utc>,
    tx: Transaction,
    challenge: ChallengeBinding,
    someone_else: ChallengeBinding,
    verifier: Verifier,
    /// A second resolver on the same server for the `dkim` stage (its own warm cache).
    resolver: Option<MessageAuthenticator>,
    /// The accepted verdict, fed to the SMTP session and behind the audit event.
    verdict: Verdict,
    settings: Arc<SessionSettings>,
}

/// Every stage, in the order a message meets them.
const STAGES: &[&str] = &[
    "smtp",
    "headers",
    "dkim",
    "verify_accept",
    "verify_reject",
    "policy",
    "event_ecs",
    "event_cef",
];

impl Fixture {
    fn new(body_bytes: usize) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let now = Utc::now();
        let vars = Vars::new(now, 1);
        let world = rt.block_on(World::start());
        let tx = alice(body_bytes).transaction(&vars, now);
        let challenge = alice_challenge(&vars);
        let someone_else = common::challenge("bob@interieur.gouv.fr", &vars);
        let (verifier, resolver) = rt.block_on(async { verifier(&world) });
        // Computing the verdict once fills the DNS cache.
        let verdict = rt.block_on(verifier.verify(&tx, &challenge, now));
        assert_eq!(
            verdict.decision,
            Decision::Accept,
            "{}",
            common::show_verdict(&verdict)
        );
        let text = include_str!("../conf/gatekeeper.toml");
        let config = Config::from_toml_str(text, "conf").expect("shipped config");
        let settings = Arc::new(SessionSettings::from_config(&config, false));
        Fixture {
            rt,
            world,
            now,
            tx,
            challenge,
            someone_else,
            verifier,
            resolver: Some(resolver),
            verdict,
            settings,
        }
    }

    fn answers(&self) -> Answers {
        Answers {
            verdict: self.verdict.clone(),
            replies: 0,
            last_code: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The accepted message's audit event, as the session emits it.
    fn accepted_event(&self) -> AuditEvent {
        let mut answers = self.answers();
        smtp_once(&self.settings, &dialogue(&self.tx), &mut answers, self.now);
        answers
            .events
            .into_iter()
            .find(|e| e.reply_code == Some(250))
            .expect("the accepted event")
    }

    /// Warm `once` up, count it `n` times in the stage's `measured_*` function, return its
    /// last result.
    fn run<T>(name: &str, n: u32, mut once: impl FnMut() -> T) -> T {
        for _ in 0..WARM_UP {
            black_box(once());
        }
        measured(name, n, &mut once);
        once()
    }

    /// Run one stage; its one-line result (checked: a stage on the wrong path panics).
    fn stage(&mut self, stage: &str, n: u32) -> String {
        let message = self.tx.message.as_slice();
        let now = self.now;
        match stage {
            "smtp" => {
                let bytes = dialogue(&self.tx);
                let mut answers = self.answers();
                let settings = &self.settings;
                let (replies, events, accepted, last) = Self::run(stage, n, || {
                    answers.events.clear();
                    answers.replies = 0;
                    smtp_once(settings, &bytes, &mut answers, now);
                    let accepted = answers.events.iter().any(|e| e.reply_code == Some(250));
                    (
                        answers.replies,
                        answers.events.len(),
                        accepted,
                        answers.last_code.clone(),
                    )
                });
                assert!(accepted, "no 250 event: {:?}", answers.events);
                assert_eq!(last, b"221", "the session ends on QUIT");
                format!("{replies} replies, {events} events")
            }
            "headers" => {
                let opts = self.world.policy.parse_options();
                let from = Self::run(stage, n, || {
                    let block = HeaderBlock::parse(message);
                    let parsed = mail_parser::MessageParser::default().parse(message);
                    headers::check(&block, parsed.as_ref(), &opts).from
                });
                let from = from.map(|m| m.to_string());
                assert_eq!(from.as_deref(), Some("alice@interieur.gouv.fr"));
                format!("from {from:?}")
            }
            "dkim" => {
                let resolver = self.resolver.take().expect("dkim runs once");
                let auth = Auth::new(resolver, self.world.timeout);
                let considered: Vec<Vec<u8>> = mail_auth::AuthenticatedMessage::parse(message)
                    .expect("parses")
                    .dkim_headers
                    .iter()
                    .map(|h| h.header.b.clone())
                    .collect();
                let rt = &self.rt;
                let results = Self::run(stage, n, || {
                    rt.block_on(auth.crypto(message, &considered, |_| true))
                        .len()
                });
                assert_eq!(results, 1, "one signature verified");
                format!("{results} signature results")
            }
            "verify_accept" | "verify_reject" => {
                let (c, want) = if stage == "verify_accept" {
                    (&self.challenge, Decision::Accept)
                } else {
                    (
                        &self.someone_else,
                        Decision::Refuse(gatekeeper::reason::Reason::BindingMismatch),
                    )
                };
                let (rt, v, tx) = (&self.rt, &self.verifier, &self.tx);
                let queries = self.world.dns.queries();
                let got = Self::run(stage, n, || rt.block_on(v.verify(tx, c, now)));
                assert_eq!(
                    self.world.dns.queries(),
                    queries,
                    "the measured loop asked the DNS"
                );
                assert_eq!(got.decision, want, "{}", common::show_verdict(&got));
                format!("{:?}", got.decision)
            }
            "policy" => {
                let domains = DomainPolicy::new(&self.world.policy);
                let req = Requirements {
                    reply: true,
                    session_code: true,
                    binding: true,
                    ..domains.requirements(&common::domain("interieur.gouv.fr"))
                };
                let results = CheckResults::all_pass();
                let (decision, checks) = Self::run(stage, n, || policy::decide(&results, &req));
                assert_eq!(decision, Decision::Accept);
                format!("{decision:?}, {} checks", checks.len())
            }
            "event_ecs" | "event_cef" => {
                let format = if stage == "event_ecs" {
                    SiemFormat::Ecs
                } else {
                    SiemFormat::Cef
                };
                let opts = FormatOptions::new(format, "verify.example.gouv.fr");
                let event = self.accepted_event();
                let line = Self::run(stage, n, || opts.render(&event));
                assert!(line.contains("confirmation"), "{line}");
                format!("{} octets", line.len())
            }
            other => {
                eprintln!("unknown stage {other}; stages: {}", STAGES.join(", "));
                std::process::exit(2);
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let list = args.first().map(String::as_str).unwrap_or("all");
    let n: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let body_bytes: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2048);
    let stages: Vec<&str> = if list == "all" {
        STAGES.to_vec()
    } else {
        list.split(',').collect()
    };
    let mut fixture = Fixture::new(body_bytes);
    let size = fixture.tx.message.len();
    for stage in stages {
        let result = fixture.stage(stage, n);
        println!("{stage} {n} {size} {result}");
    }
}
