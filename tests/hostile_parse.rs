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
use gatekeeper::daemon::{self, ConfigSource, Running};
use gatekeeper::domains::DomainPolicy;
use serde_json::Value;

use common::e2e::{self, Api, Events, Layout, Settings, Smtp};

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
    '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{00AD}', '\u{034F}',
    '\u{180E}', '\u{200E}', '\u{200F}', '\u{061C}', '\u{202A}', '\u{202B}', '\u{202C}',
    '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{00A0}',
    '\u{2000}', '\u{3000}', '\u{0085}', '\u{2028}', '\u{2029}',
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
        add("label_length", format!("alice@{}.gouv.fr", label(n)).into_bytes());
    }
    for n in [64, 65] {
        add("local_length", format!("{}@interieur.gouv.fr", label(n)).into_bytes());
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
        Ok(m) if m.domain().is_within(&common::domain("verify.example.gouv.fr")) => {
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
    format!("{:?} ({} octets)", String::from_utf8_lossy(cut), input.len())
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
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(tmp.path());
    let settings = Settings {
        max_pending: 100,
        max_per_hour: 1000,
        ..Settings::default()
    };
    let config_path = layout.write_config(dns.addr, &settings);
    let running = daemon::start(ConfigSource::File(config_path.clone()))
        .await
        .expect("daemon starts");
    let config = Config::load(&config_path).expect("config loads");
    World {
        api: Api::new(running.api_addr, &layout.token_file),
        events: Events::new(&layout.events),
        smtp: running.smtp_addrs[0],
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

        // 1. The CLI, through stdin (raw bytes; one trailing LF is the line end).
        let mut stdin = input.clone();
        stdin.push(b'\n');
        let got = cli(&w.layout.config, OsString::from("-"), &stdin);
        assert_eq!(got, want, "check-address - <<< {} ({class})", show(input));
        // ... and through argv (no NUL possible there; an empty argument is not an address).
        if !input.contains(&0) && !input.is_empty() && input.len() < 4096 {
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
