//! Red team: the product where it parses. One table of hostile addresses, built by CLASS from
//! SPEC §3 (not from the public corpus), fed through every door an address comes in by, which
//! must all give the same verdict (SPEC I2):
//!
//! - `Mailbox::parse` (the oracle),
//! - the real binary `gatekeeper check-address -c CONFIG` (argv, and `-` with raw stdin bytes),
//! - `POST /v1/challenges` on the in-process daemon,
//! - `MAIL FROM:<...>` over SMTP on the same daemon (reply class and exactly one audit event),
//! - the From header (`Mailbox::parse_header`) as bare, bracketed and display-name forms.
//!
//! Then hostile From header values (display names, encoded words, folding, groups, comments)
//! compared with what Python's `email.utils` / `email.headerregistry` and mail-parser read, and
//! hostile SMTP dialogues (split segments, pipelining after the final dot, smuggled ends,
//! exact size limits with dot-stuffing, case and trailing-dot recipients, HELO/EHLO order).
//!
//! Run: `cargo test --test hostile_parse`.

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use gatekeeper::address::{Mailbox, ParseOptions};
use gatekeeper::config::Config;
use gatekeeper::daemon::Running;
use gatekeeper::domains::DomainPolicy;
use serde_json::Value;

use common::e2e::{self, Api, Events, Instance, Layout, Settings, Smtp};

const BASE: &str = "alice@interieur.gouv.fr";

// ------------------------------------------------------------------------------- the table

/// Unicode characters that look like `@` or `.` or that IDNA / NFKC maps to them.
const AT_LIKES: &[char] = &[
    '\u{FF20}', // FULLWIDTH COMMERCIAL AT
    '\u{FE6B}', // SMALL COMMERCIAL AT
    '\u{0040}', // (the real one, in a UTF-8 context below)
];
const DOT_LIKES: &[char] = &[
    '\u{FF0E}', // FULLWIDTH FULL STOP
    '\u{FE52}', // SMALL FULL STOP
    '\u{3002}', // IDEOGRAPHIC FULL STOP
    '\u{FF61}', // HALFWIDTH IDEOGRAPHIC FULL STOP
    '\u{2024}', // ONE DOT LEADER
    '\u{00B7}', // MIDDLE DOT
    '\u{2027}', // HYPHENATION POINT
    '\u{0701}', // SYRIAC SUPRALINEAR FULL STOP
    '\u{06D4}', // ARABIC FULL STOP
    '\u{2E3C}', // STENOGRAPHIC FULL STOP
    '\u{A4F8}', // LISU LETTER TONE MYA TI
    '\u{FE12}', // PRESENTATION FORM FOR VERTICAL IDEOGRAPHIC FULL STOP
];
/// Invisible or direction-changing code points.
const INVISIBLES: &[char] = &[
    '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{00AD}', '\u{034F}', '\u{180E}',
    '\u{200E}', '\u{200F}', '\u{061C}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}',
    '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{00A0}', '\u{2000}', '\u{3000}', '\u{0085}',
    '\u{2028}', '\u{2029}',
];
/// Invalid UTF-8 (overlong `@`, `.`, NUL, surrogates, lone bytes).
const BAD_UTF8: &[&[u8]] = &[
    b"\xc1\x80",         // overlong '@'
    b"\xc0\xae",         // overlong '.'
    b"\xc0\x80",         // overlong NUL
    b"\xe0\x81\x80",     // 3-byte overlong '@'
    b"\xf0\x80\x81\x80", // 4-byte overlong '@'
    b"\xed\xa0\x80",     // surrogate
    b"\x80",
    b"\xff",
    b"\xfe",
    b"\xc3",
];

/// Insertion points in `alice@interieur.gouv.fr`: start, inside the local part, before and
/// after `@`, inside a label, before the last dot, before the TLD, end.
const POINTS: &[usize] = &[0, 2, 5, 6, 10, 15, 20, 23];

fn insert(at: usize, what: &[u8]) -> Vec<u8> {
    let b = BASE.as_bytes();
    [&b[..at], what, &b[at..]].concat()
}

fn replace_at(with: &[u8]) -> Vec<u8> {
    let (l, d) = BASE.split_once('@').unwrap();
    [l.as_bytes(), with, d.as_bytes()].concat()
}

/// Every `.` of the base replaced, one at a time, by `with`.
fn replace_dots(with: &[u8]) -> Vec<Vec<u8>> {
    let b = BASE.as_bytes();
    b.iter()
        .enumerate()
        .filter(|(_, c)| **c == b'.')
        .map(|(i, _)| [&b[..i], with, &b[i + 1..]].concat())
        .collect()
}

fn label(n: usize) -> String {
    "a".repeat(n)
}

/// The hostile address table, by class. Each row is (class, raw bytes).
fn hostile_addresses() -> Vec<(&'static str, Vec<u8>)> {
    let mut rows: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let mut add = |class: &'static str, v: Vec<u8>| rows.push((class, v));
    for c in AT_LIKES.iter().chain(DOT_LIKES) {
        let mut buf = [0u8; 4];
        let enc = c.encode_utf8(&mut buf).as_bytes().to_vec();
        if *c != '@' {
            add("unicode_at_like", replace_at(&enc));
        }
        for v in replace_dots(&enc) {
            add("unicode_dot_like", v);
        }
        add("unicode_inserted", insert(5, &enc));
    }
    for c in INVISIBLES {
        let mut buf = [0u8; 4];
        let enc = c.encode_utf8(&mut buf).as_bytes().to_vec();
        for &p in POINTS {
            add("invisible_or_bidi", insert(p, &enc));
        }
    }
    for bad in BAD_UTF8 {
        for &p in POINTS {
            add("invalid_utf8", insert(p, bad));
        }
        add("invalid_utf8_as_at", replace_at(bad));
    }
    for c in (0u8..0x20).chain([0x7f]) {
        for &p in POINTS {
            add("ascii_control", insert(p, &[c]));
        }
        add("ascii_control_as_at", replace_at(&[c]));
    }
    for ws in [&b" "[..], b"\t", b"\r\n ", b"\r\n\t", b"  "] {
        for &p in POINTS {
            add("whitespace", insert(p, ws));
        }
    }
    let specials = b"%!:;,<>[]\"\\()'`{}#$&*/=?^|~@_+-";
    for &s in specials {
        for &p in POINTS {
            add("special_char", insert(p, &[s]));
        }
        for v in replace_dots(&[s]) {
            add("special_as_dot", v);
        }
        add("special_as_at", replace_at(&[s]));
    }
    let literal: &[&str] = &[
        "alice@[1.2.3.4]",
        "alice@[IPv6:::1]",
        "alice@[IPv6:2001:db8::1]",
        "alice@[interieur.gouv.fr]",
        "alice@1.2.3.4",
        "alice@127.0.0.1",
        "alice@0x7f.1",
        "alice@[127.0.0.1].gouv.fr",
        "alice@interieur.gouv.fr.",
        "alice@interieur.gouv.fr..",
        "alice.@interieur.gouv.fr",
        ".alice@interieur.gouv.fr",
        "al..ice@interieur.gouv.fr",
        "alice@.interieur.gouv.fr",
        "alice@interieur..gouv.fr",
        "alice@interieur.gouv..fr",
        "alice@",
        "@interieur.gouv.fr",
        "@",
        "",
        "alice",
        "alice@gouv",
        "alice@fr",
        "alice@interieur.gouv.123",
        "alice@interieur.gouv.f1",
        "alice@interieur.gouv.-fr",
        "alice@-interieur.gouv.fr",
        "alice@interieur-.gouv.fr",
        "alice@inter_ieur.gouv.fr",
        "alice@xn--intrieur-b1a.gouv.fr",
        "alice@XN--intrieur-b1a.gouv.fr",
        "alice@Xn--intrieur-b1a.gouv.fr",
        "alice@interieur.xn--gouv.fr",
        "alice@interieur.gouv.xn--fr",
        "alice@xn--.gouv.fr",
        "xn--alice@interieur.gouv.fr",
        "attacker@evil.example@interieur.gouv.fr",
        "attacker@evil.example",
        "attacker@evilgouv.fr",
        "attacker@gouv.fr.evil.example",
        "alice@interieur.gouv.fr@",
        "alice@@interieur.gouv.fr",
        "\"alice\"@interieur.gouv.fr",
        "\"a@evil.example\"@interieur.gouv.fr",
        "a\\@evil.example@interieur.gouv.fr",
        "alice(comment)@interieur.gouv.fr",
        "alice@interieur.gouv.fr(comment)",
        "alice@(comment)interieur.gouv.fr",
        "@relay.gouv.fr:alice@interieur.gouv.fr",
        "@a.gouv.fr,@b.gouv.fr:attacker@evil.example",
        "attacker%evil.example@interieur.gouv.fr",
        "evil.example!attacker@interieur.gouv.fr",
        "=?utf-8?q?alice=40evil.example?=@interieur.gouv.fr",
        "=?utf-8?b?YWxpY2VAZXZpbC5leGFtcGxl?=@interieur.gouv.fr",
        "=?utf-8?q?alice?=@interieur.gouv.fr",
        "alice@=?utf-8?q?interieur.gouv.fr?=",
        "=?utf-8?q?=3C?=alice@interieur.gouv.fr",
        "alice=?@interieur.gouv.fr",
        "<alice@interieur.gouv.fr>",
        "<>",
        "alice@interieur.gouv.fr,attacker@evil.example",
        "alice@interieur.gouv.fr;attacker@evil.example",
        "alice@interieur.gouv.fr attacker@evil.example",
        "x:;",
        "x:alice@interieur.gouv.fr;",
        "confirm+abc@verify.example.gouv.fr",
        "alice+tag@interieur.gouv.fr",
        "a-b_c.d+e@sub.interieur.gouv.fr",
        "ALICE@INTERIEUR.GOUV.FR",
        "aLiCe@InTeRiEuR.gOuV.fR",
        "alice@interieur.GOUV.fr",
        "-alice@interieur.gouv.fr",
        "alice-@interieur.gouv.fr",
        "+@interieur.gouv.fr",
        "alice@sub-.interieur.gouv.fr",
        "alice@a.gouv.fr",
        "alice@1a.gouv.fr",
        "alice@interieur.gouv.fr\n",
    ];
    for s in literal {
        add("literal", s.as_bytes().to_vec());
    }
    // Length boundaries: 63/64 labels, 64/65 local, 253/254 domain, 254/255 whole.
    for n in [63, 64] {
        add(
            "label_length",
            format!("alice@{}.gouv.fr", label(n)).into_bytes(),
        );
    }
    for n in [64, 65] {
        add(
            "local_length",
            format!("{}@interieur.gouv.fr", label(n)).into_bytes(),
        );
    }
    for total in [253usize, 254] {
        // labels of 63 + dots + "gouv.fr" tail
        let tail = ".gouv.fr";
        let mut d = String::new();
        while d.len() + tail.len() < total {
            let left = total - tail.len() - d.len();
            if !d.is_empty() {
                d.push('.');
            }
            let n = (left.saturating_sub(usize::from(!d.is_empty()))).clamp(1, 63);
            let n = n.min(total - tail.len() - d.len());
            d.push_str(&label(n.max(1)));
        }
        d.push_str(tail);
        add("domain_length", format!("a@{d}").into_bytes());
    }
    for total in [254usize, 255] {
        // local 64 + "@" + domain of total-65
        let dlen = total - 65;
        let tail = ".gouv.fr";
        let mut d = String::new();
        while d.len() + tail.len() < dlen {
            if !d.is_empty() {
                d.push('.');
            }
            let n = (dlen - tail.len() - d.len()).clamp(1, 63);
            d.push_str(&label(n));
        }
        d.push_str(tail);
        add("address_length", format!("{}@{d}", label(64)).into_bytes());
    }
    add("huge", vec![b'a'; 5000]);
    // Case variants of everything accepted so far that has letters: checked by the caller
    // (`case_variants`).
    rows
}

// ------------------------------------------------------------------------------- verdicts

#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    /// Accepted, in canonical form.
    Ok(String),
    /// Refused with this reason code (and, where the door shows one, this detail).
    No(String, Option<String>),
}

fn oracle(input: &[u8], policy: &DomainPolicy) -> Verdict {
    match Mailbox::parse(input, &ParseOptions::default()) {
        // Our own confirmation domain is never a sender nor a claim (a loop to ourselves).
        Ok(m)
            if m.domain()
                .is_within(&common::domain("verify.example.gouv.fr")) =>
        {
            Verdict::No("domain.not_allowed".into(), None)
        }
        Ok(m) => match policy.check(m.domain()) {
            Ok(()) => Verdict::Ok(m.to_string()),
            Err(r) => Verdict::No(r.to_string(), None),
        },
        Err(e) => Verdict::No(e.reason().to_string(), Some(e.detail.to_string())),
    }
}

fn show(input: &[u8]) -> String {
    let cut = input.get(..160).unwrap_or(input);
    format!(
        "{:?} ({} octets)",
        String::from_utf8_lossy(cut),
        input.len()
    )
}

/// `gatekeeper check-address -c CONFIG ARG` with `stdin`.
fn cli(config: &Path, arg: OsString, stdin: &[u8]) -> Verdict {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .arg("check-address")
        .arg("-c")
        .arg(config)
        .arg(arg)
        .env_remove("GATEKEEPER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gatekeeper");
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin);
    }
    let out = child.wait_with_output().expect("gatekeeper output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match (out.status.code(), stdout.strip_suffix('\n')) {
        (Some(0), Some(addr)) => Verdict::Ok(addr.to_string()),
        (Some(1), Some(line)) => {
            let reason = line
                .strip_prefix("rejected ")
                .unwrap_or_else(|| panic!("unexpected stdout {stdout:?}"));
            let detail = stderr
                .lines()
                .find_map(|l| l.strip_prefix("detail: "))
                .map(str::to_string);
            Verdict::No(reason.to_string(), detail)
        }
        other => panic!("check-address: {other:?} stdout {stdout:?} stderr {stderr:?}"),
    }
}

// ------------------------------------------------------------------------------- the daemon

struct World {
    _dns: common::TestDns,
    _tmp: tempfile::TempDir,
    layout: Layout,
    running: Running,
    api: Api,
    events: Events,
    smtp: SocketAddr,
    policy: DomainPolicy,
}

async fn world() -> World {
    let dns = common::TestDns::start(common::corpus::zone_records()).await;
    let Instance {
        tmp,
        layout,
        running,
        api,
        events,
        smtp,
    } = Instance::start(dns.addr, &Settings::default()).await;
    let config = Config::load(&layout.config).expect("config loads");
    World {
        api,
        events,
        smtp,
        policy: DomainPolicy::new(&config.policy),
        _dns: dns,
        _tmp: tmp,
        layout,
        running,
    }
}

/// The verdict of `POST /v1/challenges` (reason = the JSON `error`; detail from the message).
async fn api_verdict(api: &Api, address: &str) -> Verdict {
    let (status, body) = api.claim(address).await;
    match status {
        201 => Verdict::Ok(body["address"].as_str().unwrap_or_default().to_string()),
        422 => {
            let msg = body["message"].as_str().unwrap_or_default();
            let detail = msg
                .strip_prefix("address refused (")
                .and_then(|m| m.strip_suffix(')'))
                .map(str::to_string);
            Verdict::No(
                body["error"].as_str().unwrap_or_default().to_string(),
                detail,
            )
        }
        s => panic!("POST /v1/challenges {address:?}: {s} {body}"),
    }
}

/// MAIL FROM:<input> on a fresh session: the verdict from the reply code and the session's
/// audit events (exactly one per refusal, with the reply code of the reason table).
async fn smtp_verdict(w: &World, input: &[u8], src: IpAddr) -> (Verdict, SocketAddr, u16) {
    let mut s = Smtp::connect(src, w.smtp).await.expect("connect");
    let greet = s.read_reply().await.expect("greeting");
    assert_eq!(greet.code, 220, "{greet}");
    let ehlo = s.cmd("EHLO client.example").await.expect("EHLO reply");
    assert_eq!(ehlo.code, 250, "{ehlo}");
    let mut line = b"MAIL FROM:<".to_vec();
    line.extend_from_slice(input);
    line.extend_from_slice(b">\r\n");
    s.write(&line).await.expect("write MAIL");
    let reply = s.read_reply().await.expect("MAIL reply");
    s.quit().await;
    let code = reply.code;
    let local = s.local;
    if reply.code == 250 {
        return (Verdict::Ok(String::new()), local, code);
    }
    let evs = w
        .events
        .wait_client(local.ip(), local.port(), Duration::from_secs(5), |evs| {
            evs.iter().filter(|e| e2e::is_refusal(e)).count() >= 1
        })
        .await;
    let refusals: Vec<&Value> = evs.iter().filter(|e| e2e::is_refusal(e)).collect();
    assert_eq!(
        refusals.len(),
        1,
        "MAIL FROM:<{}>: one refusal event expected, got {refusals:?}",
        show(input)
    );
    let reason = e2e::reason_of(refusals[0]);
    let want_code = reason
        .parse::<gatekeeper::reason::Reason>()
        .unwrap()
        .reply()
        .code;
    assert_eq!(code, want_code, "reply {reply} for reason {reason}");
    assert_eq!(
        refusals[0]["event"]["code"].as_str(),
        Some(code.to_string().as_str()),
        "event code"
    );
    (Verdict::No(reason, None), local, code)
}

fn strip_detail(v: &Verdict) -> Verdict {
    match v {
        Verdict::No(r, _) => Verdict::No(r.clone(), None),
        ok => ok.clone(),
    }
}

/// The header forms of one address and what each must give.
fn header_forms(input: &[u8]) -> Vec<Vec<u8>> {
    vec![
        input.to_vec(),
        [b"<", input, b">"].concat(),
        [b"Alice <", input, b">"].concat(),
        [b"\"Alice Martin\" <", input, b">"].concat(),
        [b"=?utf-8?q?Am=C3=A9lie?= <", input, b">"].concat(),
        [b"Alice\r\n <", input, b">"].concat(),
        [b" ", input, b" "].concat(),
    ]
}

/// Every door agrees with the oracle on every hostile address (SPEC I2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_reads_every_hostile_address_the_same() {
    let w = world().await;
    let mut rows = hostile_addresses();
    // Case variants of the rows: upper and alternating case.
    let more: Vec<(&'static str, Vec<u8>)> = rows
        .iter()
        .filter(|(_, v)| v.len() < 300)
        .map(|(_, v)| ("case_variant", v.to_ascii_uppercase()))
        .collect();
    rows.extend(more);
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let opts = ParseOptions::default();
    let mut smtp_sessions = 0usize;
    for (i, (class, input)) in rows.iter().enumerate() {
        let want = oracle(input, &w.policy);
        let entry = counts.entry(class).or_default();
        entry.0 += 1;
        if matches!(want, Verdict::Ok(_)) {
            entry.1 += 1;
        }

        // 1. The CLI, through stdin (raw bytes; one trailing LF is the line end). The CLI is a
        //    process per call: the upper-case copies go through it one in eight (they go
        //    through every other door in full), to keep the suite's time bounded.
        let cli_door = *class != "case_variant" || i % 8 == 0;
        let mut stdin = input.clone();
        stdin.push(b'\n');
        if cli_door {
            let got = cli(&w.layout.config, OsString::from("-"), &stdin);
            assert_eq!(got, want, "check-address - <<< {} ({class})", show(input));
        }
        // ... and through argv (no NUL possible there; an empty argument is not an address).
        if cli_door && !input.contains(&0) && !input.is_empty() && input.len() < 4096 {
            let got = cli(&w.layout.config, OsString::from_vec(input.clone()), b"");
            assert_eq!(got, want, "check-address {} ({class})", show(input));
        }

        // 2. The API (JSON strings are UTF-8: invalid UTF-8 cannot be sent; bodies are
        //    bounded, 413 above that, tested in tests/api.rs).
        if let (Ok(text), true) = (std::str::from_utf8(input), input.len() < 1000) {
            let got = api_verdict(&w.api, text).await;
            assert_eq!(got, want, "POST /v1/challenges {} ({class})", show(input));
        }

        // 3. MAIL FROM over SMTP. CR, LF and NUL are the framer's (smtp.bare_*, smtp.nul; a
        //    CRLF splits the command), tested in the SMTP cases below.
        if !input.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) && input.len() < 400 {
            let src: IpAddr = format!("127.0.{}.{}", 60 + (i / 250) % 100, 1 + i % 250)
                .parse()
                .unwrap();
            let (got, _, _) = smtp_verdict(&w, input, src).await;
            smtp_sessions += 1;
            let want_smtp = match (&want, input.is_empty()) {
                (_, true) => Verdict::No("envelope.null_sender".into(), None),
                (Verdict::Ok(_), _) => Verdict::Ok(String::new()),
                (no, _) => strip_detail(no),
            };
            assert_eq!(got, want_smtp, "MAIL FROM:<{}> ({class})", show(input));
        }

        // 4. The From header: never accepts what the envelope refuses, never reads another
        //    address; accepts what the envelope accepts in every shape.
        for form in header_forms(input) {
            let got = Mailbox::parse_header(&form, &opts).map(|m| m.to_string());
            let envelope = Mailbox::parse(input, &opts).map(|m| m.to_string());
            match (&envelope, &got) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "From: {} ({class})", show(&form)),
                (Ok(a), Err(e)) => panic!("From: {} refused ({e}) but {a} accepted", show(&form)),
                (Err(_), Ok(b)) => {
                    // Only surrounding whitespace / folding (FWS) may differ.
                    let unfolded = String::from_utf8_lossy(input)
                        .replace("\r\n ", " ")
                        .replace("\r\n\t", "\t");
                    let trimmed = unfolded.trim_matches([' ', '\t']);
                    let trimmed = trimmed
                        .strip_prefix('<')
                        .and_then(|t| t.strip_suffix('>'))
                        .unwrap_or(trimmed);
                    let again = Mailbox::parse(trimmed.as_bytes(), &opts).map(|m| m.to_string());
                    assert!(
                        again.as_ref() == Ok(b),
                        "From: {} accepted as {b} but the envelope refuses {} ({class})",
                        show(&form),
                        show(input)
                    );
                }
                (Err(_), Err(_)) => {}
            }
        }
    }
    eprintln!(
        "hostile addresses: {} rows, {smtp_sessions} SMTP sessions; per class (rows, accepted): {counts:?}",
        rows.len()
    );
    assert!(rows.len() > 1000, "{} rows", rows.len());
    w.running.stop_now().await;
}

// ------------------------------------------------------------------------------- From header

/// Pieces of hostile From values: display-name words, separators, address shapes, trailers.
const DISPLAY: &[&str] = &[
    "",
    "Alice",
    "Alice Martin",
    "\"Alice\"",
    "\"Martin, Alice\"",
    "\"a\\\"b\"",
    "\"a\\\\\"",
    "\"\\\\\"",
    "\"\"",
    "\"<x>\"",
    "\"a;b\"",
    "\"a:b\"",
    "\"(x)\"",
    "\"=?x?=\"",
    "\"a\\",
    "\\\"a",
    "a.b",
    "O'Neil",
    "#$&",
    "{x}",
    "a|b",
    "~",
    "`",
    "=",
    "?",
    "/",
    "*",
    "a\\b",
    "=?utf-8?q?A?=",
    "=?utf-8?b?QQ==?=",
    "=?UTF-8?Q?Am=C3=A9lie?=",
    "=?utf-8?q?=3Cevil=3E?=",
    "=?utf-8?q?a=2Cb?=",
    "=?utf-8?q?=22?=",
    "=?utf-8?q?=5C?=",
    "=?utf-8?q?=3A=3B?=",
    "=?utf-8?q?a?=\"b\"",
    "\"a\"=?utf-8?q?b?=",
    "=?utf-8?q?a?==?utf-8?q?b?=",
    "=?utf-8?q?a?= =?utf-8?q?b?=",
    "=?utf-8?q?=E2=80=AE?=",
    "=?utf-8?q?=E2=80=8B?=",
    "=?utf-8?q?=EF=BC=A0?=",
    "=?utf-8?q?=EF=B9=AB?=",
    "=?utf-8?b?77yg?=",
    "=?iso-8859-1?q?=40?=",
    "=?utf-8?q?=C0=80?=",
    "=?utf-8?q?a?",
    "=?utf-8??a?=",
    "=??q?a?=",
    "=?utf-8*fr?q?a?=",
];
const SEPARATORS: &[&str] = &["", " ", "\t", "\r\n ", "\r\n\t", "  ", " \r\n "];
const SHAPES: &[&str] = &[
    "<alice@interieur.gouv.fr>",
    "alice@interieur.gouv.fr",
    "<Alice@Interieur.Gouv.Fr>",
    "<alice#x@interieur.gouv.fr>",
    "<a/b@interieur.gouv.fr>",
    "<a=b@interieur.gouv.fr>",
    "<a?b@interieur.gouv.fr>",
    "<a|b@interieur.gouv.fr>",
    "<a~b@interieur.gouv.fr>",
    "<a*b@interieur.gouv.fr>",
    "<a^b@interieur.gouv.fr>",
    "<a$b@interieur.gouv.fr>",
    "<a&b@interieur.gouv.fr>",
];
const TRAILERS: &[&str] = &[
    "",
    " ",
    "\r\n ",
    "\t",
    " (c)",
    ",",
    ";",
    ":",
    " <attacker@evil.example>",
    ", attacker@evil.example",
    ">",
    "\"",
    "\\",
];

/// The hostile From values: every display × separator × shape × trailer, plus a leading space
/// or fold.
fn hostile_from_values() -> Vec<String> {
    let mut out = Vec::new();
    for d in DISPLAY {
        for sep in SEPARATORS {
            for shape in SHAPES {
                for t in TRAILERS {
                    for lead in ["", " ", "\r\n "] {
                        if d.is_empty() && !sep.is_empty() {
                            continue;
                        }
                        out.push(format!("{lead}{d}{sep}{shape}{t}"));
                    }
                }
            }
        }
    }
    // Groups, routes, several addresses, quoted-pair `@`, comments in every place.
    for v in [
        "x:;",
        "x: alice@interieur.gouv.fr;",
        "x:<alice@interieur.gouv.fr>;",
        "undisclosed-recipients:;",
        "<>",
        "Alice <>",
        "<><alice@interieur.gouv.fr>",
        "<alice@interieur.gouv.fr><>",
        "<<>alice@interieur.gouv.fr>",
        "\"alice\\@interieur.gouv.fr\" <attacker@evil.example>",
        "alice\\@interieur.gouv.fr <attacker@evil.example>",
        "(alice@interieur.gouv.fr) <attacker@evil.example>",
        "<alice@interieur.gouv.fr> (attacker@evil.example)",
        "<attacker@evil.example> alice@interieur.gouv.fr",
        "alice@interieur.gouv.fr <attacker@evil.example>",
        "<@evil.example:alice@interieur.gouv.fr>",
        "<alice@interieur.gouv.fr>\r\n",
        "\r\n<alice@interieur.gouv.fr>",
        "Alice\r\n\r\n <alice@interieur.gouv.fr>",
        "Alice \r\n<alice@interieur.gouv.fr>",
        "Alice\r\n<alice@interieur.gouv.fr>",
        "<alice@interieur.gouv.fr\r\n >",
        "<alice\r\n @interieur.gouv.fr>",
        "<\r\n alice@interieur.gouv.fr>",
        "Alice <alice@interieur.gouv.fr>\r\n attacker@evil.example",
        "=?utf-8?q?alice=40interieur=2Egouv=2Efr?= <attacker@evil.example>",
        "=?utf-8?b?YWxpY2VAaW50ZXJpZXVyLmdvdXYuZnI=?= <attacker@evil.example>",
        "=?utf-8?q?=3Calice=40interieur.gouv.fr=3E?= <attacker@evil.example>",
        "=?utf-8?q?x=0D=0ABcc=3A_a?= <alice@interieur.gouv.fr>",
        "=?utf-8?q?=22?= <alice@interieur.gouv.fr>",
        "\"=?utf-8?q?alice=40x?=\" <alice@interieur.gouv.fr>",
        "=?utf-8?q?alice?=@interieur.gouv.fr",
        "<=?utf-8?q?alice?=@interieur.gouv.fr>",
    ] {
        out.push(v.to_string());
    }
    out
}

/// What Python's `email` package reads in each value: `parseaddr`, `getaddresses` and
/// `headerregistry` (policy.default), as lists of address specs. `None` when python3 is
/// absent (the Rust-side checks still run).
fn python_reads(values: &[String]) -> Option<Vec<[Vec<String>; 3]>> {
    const SCRIPT: &str = r#"
import sys, json, email, email.utils as u, email.policy as p
out = []
for v in json.load(sys.stdin):
    a = [u.parseaddr(v)[1]]
    b = [x[1] for x in u.getaddresses([v])]
    try:
        m = email.message_from_bytes(b"From: " + v.encode() + b"\r\n\r\n", policy=p.default)
        c = [x.addr_spec for x in m["From"].addresses]
    except Exception as e:
        c = ["<error %s>" % type(e).__name__]
    out.append([a, b, c])
json.dump(out, sys.stdout)
"#;
    let mut child = match Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("python3 not available ({e}): Python differential not run");
            return None;
        }
    };
    let input = serde_json::to_vec(values).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("python3 output");
    writer.join().unwrap().expect("write to python3");
    assert!(out.status.success(), "python3 failed");
    Some(serde_json::from_slice(&out.stdout).expect("python3 JSON"))
}

/// Every hostile From value we accept reads, to Python's three readers and to mail-parser, as
/// exactly one address: ours. Display names never carry an `@` (raw, quoted-pair or decoded,
/// look-alikes included).
#[test]
fn accepted_from_values_read_the_same_everywhere() {
    let opts = ParseOptions {
        local_part_extra_chars: gatekeeper::address::LOCAL_EXTRA_ALLOWED.into(),
        allow_idna: false,
    };
    let values = hostile_from_values();
    let accepted: Vec<(String, String)> = values
        .iter()
        .filter_map(|v| {
            Mailbox::parse_header(v.as_bytes(), &opts)
                .ok()
                .map(|m| (v.clone(), m.to_string()))
        })
        .collect();
    eprintln!(
        "hostile From values: {} tried, {} accepted",
        values.len(),
        accepted.len()
    );
    assert!(values.len() > 30_000 && !accepted.is_empty());
    for (v, ours) in &accepted {
        // mail-parser (the verifier's own MIME reader) reads the same single address.
        let raw = format!("From:{v}\r\n\r\n");
        let msg = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .expect("mail-parser parses");
        let theirs: Vec<String> = match msg.from() {
            Some(mail_parser::Address::List(l)) => l
                .iter()
                .map(|a| a.address.as_deref().unwrap_or("").to_ascii_lowercase())
                .collect(),
            other => panic!("mail-parser read {other:?} in {v:?}"),
        };
        assert_eq!(theirs, vec![ours.clone()], "mail-parser on From:{v:?}");
    }
    let just_values: Vec<String> = accepted.iter().map(|(v, _)| v.clone()).collect();
    if let Some(reads) = python_reads(&just_values) {
        for ((v, ours), read) in accepted.iter().zip(reads) {
            for (which, list) in ["parseaddr", "getaddresses", "headerregistry"]
                .iter()
                .zip(read)
            {
                let lower: Vec<String> = list.iter().map(|a| a.to_ascii_lowercase()).collect();
                assert_eq!(
                    lower,
                    vec![ours.clone()],
                    "Python {which} reads another address in From:{v:?}"
                );
            }
        }
    }
}

// ------------------------------------------------------------------------------- SMTP dialogue

/// One session's transcript: the reply codes in order and the refusal reasons of its events.
struct Dialogue {
    codes: Vec<u16>,
    reasons: Vec<String>,
    all_events: Vec<Value>,
}

/// Connect from `src`, write each chunk (a pause between chunks so the server reads them
/// separately), then read every reply until the server closes (bounded). SPEC I4 is checked
/// on every session: one audit event per 4xx/5xx reply, its reply code from the reason table,
/// in order.
async fn dialogue(w: &World, _src: IpAddr, chunks: &[Vec<u8>]) -> Dialogue {
    // Every dialogue from its own 127.x source: events are matched by source address and
    // port, and a port reused by a later session from one address would mix two sessions.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let src = IpAddr::from([127, 1, ((n / 250) % 250) as u8, (1 + n % 250) as u8]);
    let mut s = Smtp::connect(src, w.smtp).await.expect("connect");
    for (i, c) in chunks.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        if s.write(c).await.is_err() {
            break;
        }
    }
    s.wait_closed(Duration::from_secs(20)).await;
    assert!(s.closed, "the session did not end");
    let codes: Vec<u16> = s.replies.iter().map(|r| r.code).collect();
    let refusals = s.refusals();
    let evs = w
        .events
        .wait_client(
            s.local.ip(),
            s.local.port(),
            Duration::from_secs(5),
            |evs| evs.iter().filter(|e| e2e::is_refusal(e)).count() >= refusals,
        )
        .await;
    // Give a stray extra event the time to show up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // (An accepted event may land after the refusals were counted; only refusal events are
    // compared, so no extra or duplicate refusal event can hide.)
    let evs_now = w.events.of_client(s.local.ip(), s.local.port());
    let refusals_now = evs_now.iter().filter(|e| e2e::is_refusal(e)).count();
    assert_eq!(refusals_now, refusals, "late or duplicate refusal events");
    let refusal_events: Vec<&Value> = evs.iter().filter(|e| e2e::is_refusal(e)).collect();
    let reasons: Vec<String> = refusal_events.iter().map(|e| e2e::reason_of(e)).collect();
    let refusal_codes: Vec<u16> = s
        .replies
        .iter()
        .filter(|r| r.is_refusal())
        .map(|r| r.code)
        .collect();
    let event_codes: Vec<u16> = refusal_events
        .iter()
        .map(|e| e["event"]["code"].as_str().unwrap_or("0").parse().unwrap())
        .collect();
    assert_eq!(
        refusal_codes, event_codes,
        "one audit event per refusal, same code (reasons {reasons:?}, replies {codes:?})"
    );
    for r in &reasons {
        let code = r
            .parse::<gatekeeper::reason::Reason>()
            .unwrap()
            .reply()
            .code;
        assert!(
            event_codes.contains(&code),
            "{r} with codes {event_codes:?}"
        );
    }
    Dialogue {
        codes,
        reasons,
        all_events: evs,
    }
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// A challenge for alice, and its token (read from the challenge mail in the outbox).
async fn token(w: &World) -> String {
    let (status, body) = w.api.claim(BASE).await;
    assert_eq!(status, 201, "{body}");
    w.layout.challenge_mail(body["id"].as_str().unwrap()).token
}

const MESSAGE: &str = "From: Alice <alice@interieur.gouv.fr>\r\nTo: x@verify.example.gouv.fr\r\nSubject: hello\r\n\r\nbody\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_dialogues_over_the_real_daemon() {
    let w = world().await;
    let tok = token(&w).await;
    let rcpt = format!("confirm+{tok}@verify.example.gouv.fr");
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    let head = format!("EHLO client.example\r\nMAIL FROM:<{BASE}>\r\nRCPT TO:<{rcpt}>\r\n");
    let delivered = |d: &Dialogue| {
        d.all_events
            .iter()
            .filter(|e| {
                e["event"]["action"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("confirmation-"))
                    && e["email"]["from"].is_object()
            })
            .count()
    };
    let mut cases = 0;

    // 1. The token in upper case is the same recipient (canonical lower case); a trailing
    //    root dot, quotes, a route or a parameter are not.
    let upper = rcpt.to_ascii_uppercase();
    let d = dialogue(
        &w,
        src,
        &[b(&format!(
            "EHLO c.example\r\nMAIL FROM:<{BASE}>\r\nRCPT TO:<{upper}>\r\nQUIT\r\n"
        ))],
    )
    .await;
    assert_eq!(d.codes, [220, 250, 250, 250, 221], "upper-case token");
    cases += 1;
    for bad in [
        format!("<{rcpt}.>"),
        format!("<\"confirm+{tok}\"@verify.example.gouv.fr>"),
        format!("<@relay.gouv.fr:{rcpt}>"),
        format!("<{rcpt}> NOTIFY=NEVER"),
        // One SP after the colon is tolerated; what follows is still judged as the path.
        format!(" {rcpt}"),
        format!(" <{rcpt}.>"),
        format!("<{rcpt}"),
        rcpt.clone(),
        format!("<confirm+{tok}@VERIFY.example.gouv.fr.>"),
        format!("<confirm+{tok}@verify.example.gouv.fr@evil.example>"),
        format!("<confirm+{tok}%evil.example@verify.example.gouv.fr>"),
        format!("<confirm+{tok}\u{ff20}verify.example.gouv.fr>"),
        format!("<confirm+{}@verify.example.gouv.fr>", &tok[..tok.len() - 1]),
        format!("<Confirm+{tok}+x@verify.example.gouv.fr>"),
    ] {
        let d = dialogue(
            &w,
            src,
            &[b(&format!(
                "EHLO c.example\r\nMAIL FROM:<{BASE}>\r\nRCPT TO:{bad}\r\nQUIT\r\n"
            ))],
        )
        .await;
        assert_eq!(d.codes, [220, 250, 250, 550, 221], "RCPT TO:{bad}");
        assert!(
            d.reasons == ["rcpt.unknown"] || d.reasons == ["token.unknown"],
            "RCPT TO:{bad}: {:?}",
            d.reasons
        );
        cases += 1;
    }

    // 2. The end of data split across reads at every position; the whole transaction in one
    //    write with QUIT pipelined after the final dot (RFC 2920): exactly one verdict each.
    let payload = format!("{head}DATA\r\n{MESSAGE}.\r\nQUIT\r\n");
    let end = payload.find("\r\n.\r\n").unwrap();
    let mut verdict_code = None;
    for cut in end..=end + 5 {
        let d = dialogue(&w, src, &[b(&payload[..cut]), b(&payload[cut..])]).await;
        assert_eq!(d.codes.len(), 7, "cut at {cut}: {:?}", d.codes);
        assert_eq!(&d.codes[..5], &[220, 250, 250, 250, 354], "cut at {cut}");
        assert_eq!(d.codes[6], 221, "cut at {cut}");
        assert!(
            verdict_code.is_none_or(|c| c == d.codes[5]),
            "same verdict whatever the split"
        );
        verdict_code = Some(d.codes[5]);
        assert_eq!(delivered(&d), 1, "one verdict, cut at {cut}");
        cases += 1;
    }
    // The same bytes split at every byte of the command part (one write per octet).
    let commands = format!("{head}QUIT\r\n");
    let d = dialogue(
        &w,
        src,
        &commands.bytes().map(|c| vec![c]).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(d.codes, [220, 250, 250, 250, 221], "octet by octet");
    cases += 1;

    // 3. Smuggling: ends that are not the end, with a second transaction hidden behind them.
    //    Never a second transaction; one refusal for the whole message.
    let hidden = format!("MAIL FROM:<{BASE}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n{MESSAGE}");
    for (fake_end, reason) in [
        ("\n.\n", "smtp.bare_lf"),
        ("\n.\r\n", "smtp.bare_lf"),
        ("\r.\r\n", "smtp.bare_cr"),
        ("\r\n.\n", "smtp.bare_lf"),
        ("\r\n\0.\r\n", "smtp.nul"),
        ("\r\n.\r\r\n", "smtp.bare_cr"),
    ] {
        let raw = format!(
            "{head}DATA\r\n{}{fake_end}{hidden}.\r\nQUIT\r\n",
            MESSAGE.trim_end()
        );
        let d = dialogue(&w, src, &[b(&raw)]).await;
        let code = reason
            .parse::<gatekeeper::reason::Reason>()
            .unwrap()
            .reply()
            .code;
        assert_eq!(
            d.codes,
            [220, 250, 250, 250, 354, code, 221],
            "{fake_end:?}"
        );
        assert_eq!(d.reasons, [reason], "{fake_end:?}");
        assert_eq!(delivered(&d), 0, "{fake_end:?}");
        cases += 1;
    }
    // NUL in a header and NUL in the body: both smtp.nul.
    for msg in [
        "From: Alice <alice@interieur.gouv.fr>\r\nSubject: a\0b\r\n\r\nbody\r\n",
        "From: Alice <alice@interieur.gouv.fr>\r\nSubject: ab\r\n\r\nbo\0dy\r\n",
    ] {
        let d = dialogue(&w, src, &[b(&format!("{head}DATA\r\n{msg}.\r\nQUIT\r\n"))]).await;
        let code = gatekeeper::reason::Reason::SmtpNul.reply().code;
        assert_eq!(d.codes, [220, 250, 250, 250, 354, code, 221]);
        assert_eq!(d.reasons, ["smtp.nul"]);
        cases += 1;
    }
    // "QUIT" and "MAIL FROM" as text inside the data are data.
    let msg = format!("{MESSAGE}QUIT\r\nMAIL FROM:<attacker@evil.example>\r\n.QUIT\r\n");
    let d = dialogue(
        &w,
        src,
        &[b(&format!("{head}DATA\r\n{msg}.\r\nNOOP\r\nQUIT\r\n"))],
    )
    .await;
    assert_eq!(d.codes.len(), 8, "{:?}", d.codes);
    assert_eq!(&d.codes[..5], &[220, 250, 250, 250, 354]);
    assert_eq!(&d.codes[6..], &[250, 221]);
    assert_eq!(delivered(&d), 1);
    cases += 1;

    // 4. Size: exactly smtp.max_message_bytes (2 MiB by default) of unstuffed message, with
    //    dot-stuffed lines, passes the size check; one octet more is message.too_large.
    let max = 2 * 1024 * 1024;
    for extra in [0usize, 1] {
        let mut msg = MESSAGE.as_bytes().to_vec();
        // Lines of 100 octets starting with a dot (sent as ".." + 97 + CRLF).
        let line = format!(".{}\r\n", "d".repeat(97));
        while msg.len() + line.len() <= max {
            msg.extend_from_slice(line.as_bytes());
        }
        let fill = max - msg.len() + extra;
        if fill >= 3 {
            msg.extend_from_slice(format!("{}\r\n", "e".repeat(fill - 2)).as_bytes());
        } else {
            panic!("test arithmetic: fill {fill}");
        }
        assert_eq!(msg.len(), max + extra);
        let mut raw = b(&format!("{head}DATA\r\n"));
        raw.extend_from_slice(&e2e::data_payload(&msg));
        raw.extend_from_slice(b"QUIT\r\n");
        let d = dialogue(&w, src, &[raw]).await;
        assert_eq!(d.codes.len(), 7, "{:?}", d.codes);
        if extra == 0 {
            assert!(
                !d.reasons.iter().any(|r| r == "message.too_large"),
                "exactly max: {:?}",
                d.reasons
            );
            assert_eq!(delivered(&d), 1);
        } else {
            assert_eq!(d.reasons, ["message.too_large"]);
            assert_eq!(d.codes[5], 552);
        }
        cases += 1;
    }

    // 5. Command-level edge cases, each its own session: (input, reply codes, reasons).
    let long_helo = "h".repeat(600);
    let mid_helo = "h".repeat(300);
    let table: Vec<(Vec<u8>, Vec<u16>, Vec<&str>)> = vec![
        (
            b(&format!(
                "EHLO c\r\nMAIL FROM:<{BASE}> SIZE=999999999999999999999\r\nQUIT\r\n"
            )),
            vec![220, 250, 553, 221],
            vec!["envelope.syntax"],
        ),
        (
            b(&format!(
                "EHLO c\r\nMAIL FROM:<{BASE}> SIZE=99999999999999999999\r\nQUIT\r\n"
            )),
            vec![220, 250, 552, 221],
            vec!["message.too_large"],
        ),
        (
            b(&format!(
                "EHLO c\r\nMAIL FROM:<{BASE}> SIZE=1 SIZE=2\r\nQUIT\r\n"
            )),
            vec![220, 250, 553, 221],
            vec!["envelope.syntax"],
        ),
        (
            b(&format!(
                "EHLO c\r\nMAIL FROM:<{BASE}> BODY=BINARYMIME\r\nQUIT\r\n"
            )),
            vec![220, 250, 553, 221],
            vec!["envelope.syntax"],
        ),
        (
            b(&format!(
                "EHLO c\r\nMAIL FROM:<{BASE}> SMTPUTF8\r\nQUIT\r\n"
            )),
            vec![220, 250, 553, 221],
            vec!["envelope.syntax"],
        ),
        (
            b(&format!(
                "EHLO c\r\nMAIL FROM:<{BASE}>\r\nMAIL FROM:<{BASE}>\r\nQUIT\r\n"
            )),
            vec![220, 250, 250, 503, 221],
            vec!["smtp.bad_sequence"],
        ),
        (
            // One SP after the colon is tolerated (Postfix's default); two are the
            // command's fault, not the address's.
            b(&format!("EHLO c\r\nMAIL FROM: <{BASE}>\r\nQUIT\r\n")),
            vec![220, 250, 250, 221],
            vec![],
        ),
        (
            b(&format!("EHLO c\r\nMAIL FROM:  <{BASE}>\r\nQUIT\r\n")),
            vec![220, 250, 501, 221],
            vec!["smtp.syntax"],
        ),
        (
            b(&format!("EHLO c\r\nMAIL FROM:<{BASE}>\tSIZE=1\r\nQUIT\r\n")),
            vec![220, 250, 553, 221],
            vec!["envelope.syntax"],
        ),
        (
            b("EHLO c\r\nMAIL FROM:<>\r\nQUIT\r\n"),
            vec![220, 250, 550, 221],
            vec!["envelope.null_sender"],
        ),
        (
            b(&format!(
                "HELO c\r\nEHLO c\r\nMAIL FROM:<{BASE}>\r\nRCPT TO:<{rcpt}>\r\nRSET\r\nQUIT\r\n"
            )),
            vec![220, 250, 250, 250, 250, 250, 221],
            vec![],
        ),
        (
            b(&format!("MAIL FROM:<{BASE}>\r\nQUIT\r\n")),
            vec![220, 503, 221],
            vec!["smtp.bad_sequence"],
        ),
        (
            b(&format!("EHLO {long_helo}\r\nQUIT\r\n")),
            vec![220, 500, 221],
            vec!["smtp.line_too_long"],
        ),
        (
            b(&format!("EHLO {mid_helo}\r\nQUIT\r\n")),
            vec![220, 501, 221],
            vec!["smtp.syntax"],
        ),
        (
            [&b"EHLO c\xe9.example\r\n"[..], b"QUIT\r\n"].concat(),
            vec![220, 501, 221],
            vec!["smtp.syntax"],
        ),
        (
            [
                &b"EHLO c\r\nMAIL FROM:<al\xc3\xa9@interieur.gouv.fr>\r\n"[..],
                b"QUIT\r\n",
            ]
            .concat(),
            vec![220, 250, 553, 221],
            vec!["envelope.syntax"],
        ),
        (
            [&b"\xff\xfe\r\n"[..], b"QUIT\r\n"].concat(),
            vec![220, 500, 221],
            vec!["smtp.unknown_command"],
        ),
        (
            b("EHLO c\r\nSTARTTLS\r\nQUIT\r\n"),
            vec![220, 250, 500, 221],
            vec!["smtp.unknown_command"],
        ),
        (
            b("EHLO c\r\nBDAT 10 LAST\r\nQUIT\r\n"),
            vec![220, 250, 500, 221],
            vec!["smtp.unknown_command"],
        ),
        (
            b(&format!(
                "EHLO c\r\nMAIL FROM:<{BASE}>\nRCPT TO:<{rcpt}>\r\nQUIT\r\n"
            )),
            vec![220, 250, 554, 221],
            vec!["smtp.bare_lf"],
        ),
        (
            b("EHLO c\r\nQUIT \r\nQUIT\r\n"),
            vec![220, 250, 501, 221],
            vec!["smtp.syntax"],
        ),
    ];
    for (input, codes, reasons) in &table {
        // Early talker: every one of these is written before the greeting is read.
        let d = dialogue(&w, src, std::slice::from_ref(input)).await;
        assert_eq!(&d.codes, codes, "{}", show(input));
        assert_eq!(&d.reasons, reasons, "{}", show(input));
        cases += 1;
    }
    eprintln!("hostile dialogues: {cases} sessions");
    w.running.stop_now().await;
}

/// A claim body that JSON readers could read differently is refused, never interpreted:
/// repeated keys (serde_json keeps the last, others the first), escaped spellings of the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_claim_bodies_are_refused() {
    let w = world().await;
    let token = std::fs::read_to_string(&w.layout.token_file)
        .unwrap()
        .trim()
        .to_string();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap();
    let rows: &[(&str, u16, &str)] = &[
        (r#"{"address":"alice@interieur.gouv.fr"}"#, 201, ""),
        (r#"{"addr\u0065ss":"alice@interieur.gouv.fr"}"#, 201, ""),
        (
            r#"{"address":"alice@interieur.gouv.fr","address":"attacker@evil.example"}"#,
            400,
            "api.bad_request",
        ),
        (
            r#"{"address":"attacker@evil.example","address":"alice@interieur.gouv.fr"}"#,
            400,
            "api.bad_request",
        ),
        (
            r#"{"address":"alice@interieur.gouv.fr","addr\u0065ss":"bob@interieur.gouv.fr"}"#,
            400,
            "api.bad_request",
        ),
        (
            r#"{"address":"alice@interieur.gouv.fr","x":1}"#,
            400,
            "api.bad_request",
        ),
        (r#"["alice@interieur.gouv.fr"]"#, 400, "api.bad_request"),
        (
            r#"{"address":["alice@interieur.gouv.fr"]}"#,
            400,
            "api.bad_request",
        ),
        (r#"{"address":null}"#, 400, "api.bad_request"),
        (r#"{}"#, 400, "api.bad_request"),
        (
            r#"{"address":"alice@interieur.gouv.fr\ud800"}"#,
            400,
            "api.bad_request",
        ),
        (r#"{"address":"alice\u0040interieur.gouv.fr"}"#, 201, ""),
        (
            r#"{"address":"alice\uff20interieur.gouv.fr"}"#,
            422,
            "envelope.syntax",
        ),
    ];
    for (body, status, error) in rows {
        let r = client
            .post(format!("http://{}/v1/challenges", w.running.api_addr))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let got = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(got, *status, "{body}: {v}");
        if *status == 201 {
            assert_eq!(v["address"], BASE, "{body}: {v}");
        } else {
            assert_eq!(v["error"], *error, "{body}: {v}");
        }
    }
    w.running.stop_now().await;
}
