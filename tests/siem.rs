//! SIEM trail without a collector: the injection table in both formats and through syslog
//! framing, the file sink (reopen, latency), the UDP sink over a real socket, and the
//! accounting of events the in-memory queue drops. The rsyslog tests are in
//! `tests/siem_rsyslog.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "siem/cef_parser.rs"]
mod cef_parser;
mod common;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::siem::*;
use gatekeeper::audit::{Action, AuditEvent, AuditSink};
use gatekeeper::config::{SiemFormat, SiemSink};
use gatekeeper::siem::Siem;
use gatekeeper::siem::format::{FIELD_MAX_CHARS, FormatOptions, LINE_MAX_OCTETS};
use gatekeeper::siem::syslog::{Header, UDP_MAX_OCTETS, octet_frame};
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn no_line_break(line: &str) {
    assert!(
        !line.contains(['\n', '\r', '\0']),
        "line break or NUL in {line:?}"
    );
}

/// ECS: one line; parses; every hostile field reads back as its bounded value; nothing else
/// changed (no key added, action and outcome intact).
#[test]
fn injection_table_ecs() {
    let opts = FormatOptions::new(SiemFormat::Ecs, "mx1");
    for (name, payload) in hostile_payloads() {
        let line = opts.render_within(&hostile_event("inj", &payload), LINE_MAX_OCTETS);
        no_line_break(&line);
        assert!(
            line.len() <= LINE_MAX_OCTETS,
            "{name}: {} octets",
            line.len()
        );
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
        let top: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let expect_top: BTreeSet<&str> = [
            "@timestamp",
            "ecs",
            "event",
            "source",
            "email",
            "tls",
            "observer",
            "gatekeeper",
            "message",
        ]
        .into();
        assert_eq!(top, expect_top, "{name}");
        let ev: BTreeSet<&str> = v["event"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            ev,
            ["action", "category", "code", "kind", "outcome", "reason"].into(),
            "{name}"
        );
        assert_eq!(v["event"]["action"], "confirmation-rejected", "{name}");
        assert_eq!(v["event"]["outcome"], "failure", "{name}");
        assert_eq!(v["event"]["reason"], "dkim.fail", "{name}");
        assert_eq!(v["event"]["code"], "550", "{name}");
        let mut bounds = Vec::new();
        for (path, got) in [
            ("gatekeeper.helo", &v["gatekeeper"]["helo"]),
            ("email.sender.address", &v["email"]["sender"]["address"]),
            ("email.from.address", &v["email"]["from"]["address"][0]),
            ("email.to.address", &v["email"]["to"]["address"][0]),
            ("email.message_id", &v["email"]["message_id"]),
            ("gatekeeper.challenge_id", &v["gatekeeper"]["challenge_id"]),
            ("tls.version", &v["tls"]["version"]),
            (
                "gatekeeper.checks[0].result",
                &v["gatekeeper"]["checks"][0]["result"],
            ),
        ] {
            let got = got
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {path} missing"));
            let n = bound_used(got, &payload, bounded_at)
                .unwrap_or_else(|| panic!("{name}: {path} is not the value at a documented bound"));
            bounds.push(n);
        }
        check_bounds(name, &payload, &bounds, line.len());
    }
}

/// Every hostile field of one event was cut at the same documented bound, and plain text
/// (no escape-heavy characters) keeps the normal bound.
fn check_bounds(name: &str, payload: &str, bounds: &[usize], octets: usize) {
    let n = bounds[0];
    assert!(
        bounds.iter().all(|b| *b == n),
        "{name}: fields at different bounds {bounds:?}"
    );
    println!("{name}: {octets} octets, fields at bound {n}");
    if payload.chars().all(|c| c.is_ascii_alphanumeric()) {
        assert_eq!(
            n, FIELD_MAX_CHARS,
            "{name}: plain text keeps the normal bound"
        );
    }
}

/// CEF: one line; the strict parser finds the same header and the same key set whatever the
/// payload, and each hostile value reads back (bounded; unescapable controls as U+FFFD).
#[test]
fn injection_table_cef() {
    let opts = FormatOptions::new(SiemFormat::Cef, "mx1");
    for (name, payload) in hostile_payloads() {
        let line = opts.render_within(&hostile_event("inj", &payload), LINE_MAX_OCTETS);
        no_line_break(&line);
        assert!(
            line.len() <= LINE_MAX_OCTETS,
            "{name}: {} octets",
            line.len()
        );
        let cef = cef_parser::parse(&line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
        assert_eq!(
            cef.header,
            [
                "gatekeeper",
                "gatekeeper",
                VERSION,
                "dkim.fail",
                "confirmation-rejected",
                "6"
            ],
            "{name}"
        );
        let hostile_keys = ["suser", "duser", "cs1", "cs2", "cs3", "cs5", "flexString1"];
        let labels = [
            "cs1Label",
            "cs2Label",
            "cs3Label",
            "cs5Label",
            "flexString1Label",
        ];
        let mut expect: BTreeSet<&str> = [
            "rt", "act", "outcome", "reason", "cn1", "cn1Label", "src", "spt", "cs4", "cs4Label",
            "cs6", "cs6Label", "dvchost", "msg",
        ]
        .into();
        if !payload.is_empty() {
            expect.extend(hostile_keys);
            expect.extend(labels);
        }
        let keys: BTreeSet<&str> = cef.ext.keys().map(String::as_str).collect();
        assert_eq!(keys, expect, "{name}");
        assert_eq!(cef.ext["act"], "confirmation-rejected", "{name}");
        assert_eq!(cef.ext["outcome"], "failure", "{name}");
        assert_eq!(cef.ext["reason"], "dkim.fail", "{name}");
        assert_eq!(cef.ext["src"], "127.0.0.9", "{name}");
        if !payload.is_empty() {
            let mut bounds = Vec::new();
            for key in hostile_keys {
                let n = bound_used(&cef.ext[key], &payload, cef_value_at).unwrap_or_else(|| {
                    panic!("{name}: {key} is not the value at a documented bound")
                });
                bounds.push(n);
            }
            check_bounds(name, &payload, &bounds, line.len());
            let n = bounds[0];
            let checks = format!("spf:{}", bounded_at(&payload, n));
            assert_eq!(cef.ext["cs6"], cef_value_at(&checks, n), "{name}: cs6");
        }
    }
}

/// Through RFC 5424 + octet counting: a stream of every hostile event in both formats splits
/// back into exactly those messages, each with an intact header and a MSG that parses.
#[test]
fn injection_table_through_syslog_tcp_framing() {
    let header = Header::new("mx1", 4242);
    for format in [SiemFormat::Ecs, SiemFormat::Cef] {
        let opts = FormatOptions::new(format.clone(), "mx1");
        let mut stream = Vec::new();
        let mut lines = Vec::new();
        for (_, payload) in hostile_payloads() {
            let ev = hostile_event("inj", &payload);
            let line = opts.render_within(&ev, LINE_MAX_OCTETS);
            octet_frame(
                &header.message(4, ev.timestamp, ev.action.as_str(), &line),
                &mut stream,
            );
            lines.push(line);
        }
        let msgs = split_octet_counted(&stream).unwrap();
        assert_eq!(msgs.len(), lines.len(), "{format:?}");
        for (m, line) in msgs.iter().zip(&lines) {
            assert!(m.len() <= 8192, "a syslog message fits 8 KiB: {}", m.len());
            let p = parse_5424(m).unwrap();
            assert_eq!(
                (p.pri, p.app.as_str(), p.procid.as_str()),
                (84, "gatekeeper", "4242")
            );
            assert_eq!(p.msgid, "confirmation-rejected");
            assert_eq!(p.sd, "-");
            assert_eq!(
                p.timestamp.len(),
                "2026-01-01T00:00:00.000000Z".len(),
                "{}",
                p.timestamp
            );
            assert_eq!(&p.msg, line);
            match format {
                SiemFormat::Ecs => assert!(serde_json::from_str::<Value>(&p.msg).is_ok()),
                SiemFormat::Cef => assert!(cef_parser::parse(&p.msg).is_ok()),
            }
        }
    }
}

/// Shapes other than a refusal: an accepted confirmation (no reason, success), an IPv6 client.
#[test]
fn accepted_event_and_ipv6_source() {
    let mut ev = AuditEvent::new(Utc::now(), Action::ConfirmationAccepted, None, "ok-1");
    ev.source_ip = "::1".parse().ok();
    let json: Value =
        serde_json::from_str(&FormatOptions::new(SiemFormat::Ecs, "mx1").render(&ev)).unwrap();
    assert_eq!(json["event"]["outcome"], "success");
    assert!(json["event"].get("reason").is_none());
    assert_eq!(json["source"]["ip"], "::1");
    let cef = cef_parser::parse(&FormatOptions::new(SiemFormat::Cef, "mx1").render(&ev)).unwrap();
    assert_eq!(cef.header[3], "confirmation-accepted");
    assert_eq!(cef.header[5], "2");
    assert_eq!(cef.ext["c6a2"], "::1");
    assert!(!cef.ext.contains_key("src"));
}

/// logrotate: rename the file, reopen, emit more → a new file; every event in exactly one
/// of the two files, the ones emitted after `reopen()` in the new one.
#[test]
fn file_sink_reopen_after_rename_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let rotated = dir.path().join("events.jsonl.1");
    let cfg = config(
        SiemFormat::Ecs,
        vec![SiemSink::File { path: path.clone() }],
        &dir.path().join("spool.db"),
        100,
    );
    let (siem, handle) = Siem::start(&cfg, "mx1").unwrap();
    for i in 0..50 {
        siem.emit(event(&format!("before-{i}")));
    }
    // Rename while events may still be in flight: those land in the renamed file.
    assert!(wait_until(Duration::from_secs(5), || read_lines(&path)
        .len()
        >= 20));
    std::fs::rename(&path, &rotated).unwrap();
    siem.reopen();
    for i in 0..50 {
        siem.emit(event(&format!("after-{i}")));
    }
    let stats = handle.shutdown(Duration::from_secs(5));
    assert_eq!(siem.dropped(), 0, "{stats:?}");
    let ids = |p: &std::path::Path| -> Vec<String> {
        read_lines(p)
            .iter()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["gatekeeper"]["session_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let (old, new) = (ids(&rotated), ids(&path));
    assert!(old.len() >= 20, "old file kept its lines: {}", old.len());
    assert_eq!(
        old.len() + new.len(),
        100,
        "old {} + new {}",
        old.len(),
        new.len()
    );
    let all: BTreeSet<&String> = old.iter().chain(&new).collect();
    assert_eq!(all.len(), 100, "no duplicate, no loss");
    for i in 0..50 {
        assert!(
            new.contains(&format!("after-{i}")),
            "after-{i} must be in the new file"
        );
    }
}

/// SPEC §6: an event is in the file within a second of its SMTP reply (the emit).
#[test]
fn file_sink_event_visible_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let cfg = config(
        SiemFormat::Ecs,
        vec![SiemSink::File { path: path.clone() }],
        &dir.path().join("spool.db"),
        100,
    );
    let (siem, handle) = Siem::start(&cfg, "mx1").unwrap();
    for i in 0..3 {
        let start = Instant::now();
        siem.emit(event(&format!("fast-{i}")));
        let seen = wait_until(Duration::from_secs(1), || read_lines(&path).len() > i);
        println!("event {i} visible after {:?}", start.elapsed());
        assert!(seen, "event {i} not in the file within 1 s");
    }
    handle.shutdown(Duration::from_secs(1));
}

/// UDP to a real socket: one datagram per event, each ≤ the safe size, a valid RFC 5424
/// message whose MSG parses, even for a 100 KB hostile event (re-rendered with tighter
/// field bounds rather than cut mid-JSON).
#[test]
fn udp_sink_real_socket() {
    for format in [SiemFormat::Ecs, SiemFormat::Cef] {
        let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
        collector
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sink = SiemSink::Syslog {
            address: collector.local_addr().unwrap(),
            transport: gatekeeper::config::SyslogTransport::Udp,
            ca_file: None,
            server_name: None,
        };
        let cfg = config(
            format.clone(),
            vec![sink],
            &dir.path().join("spool.db"),
            100,
        );
        let (siem, handle) = Siem::start(&cfg, "mx1").unwrap();
        siem.emit(event("udp-0"));
        siem.emit(hostile_event("udp-big", &"<\"|=\\\n".repeat(20_000)));
        siem.emit(event("udp-2"));
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        for _ in 0..3 {
            let n = collector.recv(&mut buf).unwrap();
            assert!(n <= UDP_MAX_OCTETS, "datagram of {n} octets");
            got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        handle.shutdown(Duration::from_secs(1));
        assert!(
            !dir.path().join("spool.db").exists(),
            "UDP alone needs no spool"
        );
        let mut sessions = Vec::new();
        for m in &got {
            let p = parse_5424(m).unwrap();
            assert_eq!(p.pri, 84);
            let sid = match format {
                SiemFormat::Ecs => {
                    let v: Value = serde_json::from_str(&p.msg).unwrap();
                    v["gatekeeper"]["session_id"].as_str().unwrap().to_owned()
                }
                SiemFormat::Cef => cef_parser::parse(&p.msg).unwrap().ext["cs4"].clone(),
            };
            sessions.push(sid);
        }
        assert_eq!(sessions, ["udp-0", "udp-big", "udp-2"], "{format:?}");
        assert!(got[1].contains("…[truncated]"));
    }
}

/// The in-memory queue is bounded: a burst far larger than it drops events, counts every
/// one (`dropped()`), and reports them with `siem-overflow` / `siem.queue_overflow` events
/// whose counts add up. Conservation: written + dropped = emitted.
#[test]
fn queue_overflow_is_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let cfg = config(
        SiemFormat::Ecs,
        vec![SiemSink::File { path: path.clone() }],
        &dir.path().join("spool.db"),
        100,
    );
    let (siem, handle) = Siem::start(&cfg, "mx1").unwrap();
    let total = 50_000u64;
    for i in 0..total {
        siem.emit(AuditEvent::new(
            Utc::now(),
            Action::ConfirmationRejected,
            None,
            format!("q-{i}"),
        ));
    }
    handle.shutdown(Duration::from_secs(5));
    let dropped = siem.stats().queue_dropped;
    assert!(
        dropped > 0,
        "a burst of {total} into a queue of {} must overflow",
        gatekeeper::siem::QUEUE_CAPACITY
    );
    assert_eq!(siem.dropped(), dropped);
    let (mut written, mut reported) = (0u64, 0u64);
    for line in read_lines(&path) {
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["event"]["action"] == "siem-overflow" {
            assert_eq!(v["event"]["reason"], "siem.queue_overflow");
            reported += v["gatekeeper"]["siem"]["dropped"].as_u64().unwrap();
        } else {
            written += 1;
        }
    }
    assert_eq!(written + dropped, total);
    assert_eq!(reported, dropped, "every drop reported");
}

/// stdout (journald): one line per event, each a whole event. Runs the child test below in a
/// separate process and reads its stdout.
#[test]
fn stdout_sink_one_line_per_event() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stdout_sink_child",
            "--include-ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("GATEKEEPER_SIEM_STDOUT_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    // libtest prints "test stdout_sink_child ... " without a newline before the first event.
    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|l| l.find("{\"@timestamp\"").map(|i| &l[i..]))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let ids: Vec<&str> = events
        .iter()
        .map(|v| v["gatekeeper"]["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["out-0", "out-hostile", "out-2"]);
}

/// The child half of `stdout_sink_one_line_per_event` (ignored unless run by it).
#[test]
#[ignore = "run by stdout_sink_one_line_per_event in a child process"]
fn stdout_sink_child() {
    // Run directly (`--include-ignored`) it has nothing to prove: the parent reads its stdout.
    if std::env::var_os("GATEKEEPER_SIEM_STDOUT_CHILD").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        SiemFormat::Ecs,
        vec![SiemSink::Stdout],
        &dir.path().join("spool.db"),
        100,
    );
    let (siem, handle) = Siem::start(&cfg, "mx1").unwrap();
    siem.emit(event("out-0"));
    siem.emit(hostile_event("out-hostile", "a\nb\r\n{\"x\":1}\n"));
    siem.emit(event("out-2"));
    handle.shutdown(Duration::from_secs(1));
}

/// A file reopen that fails (the path is now a directory) is counted; events keep going to
/// the old handle, none is lost.
#[test]
fn file_reopen_failure_keeps_the_old_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let rotated = dir.path().join("events.jsonl.1");
    let cfg = config(
        SiemFormat::Ecs,
        vec![SiemSink::File { path: path.clone() }],
        &dir.path().join("spool.db"),
        100,
    );
    let (siem, handle) = Siem::start(&cfg, "mx1").unwrap();
    siem.emit(event("r-0"));
    assert!(wait_until(Duration::from_secs(5), || read_lines(&path)
        .len()
        == 1));
    std::fs::rename(&path, &rotated).unwrap();
    std::fs::create_dir(&path).unwrap();
    siem.reopen();
    siem.emit(event("r-1"));
    let stats = handle.shutdown(Duration::from_secs(5));
    assert_eq!(stats.local_errors, 1, "{stats:?}");
    let ids: Vec<String> = read_lines(&rotated)
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["gatekeeper"]["session_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["r-0", "r-1"]);
}

/// Start refuses a configuration it cannot honour, naming the cause.
#[test]
fn start_errors() {
    use gatekeeper::config::SyslogTransport;
    use gatekeeper::siem::SiemError;
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "no certificate here").unwrap();
    let tls = |ca_file: Option<std::path::PathBuf>, server_name: Option<&str>| SiemSink::Syslog {
        address: "127.0.0.1:6514".parse().unwrap(),
        transport: SyslogTransport::Tls,
        ca_file,
        server_name: server_name.map(str::to_owned),
    };
    type IsExpected = fn(&SiemError) -> bool;
    let cases: Vec<(&str, SiemSink, IsExpected)> = vec![
        ("TLS without ca_file", tls(None, None), |e| {
            matches!(e, SiemError::TlsCaMissing(_))
        }),
        (
            "CA file without certificate",
            tls(Some(not_pem.clone()), None),
            |e| matches!(e, SiemError::TlsCa(..)),
        ),
        (
            "missing CA file",
            tls(Some(dir.path().join("absent.pem")), None),
            |e| matches!(e, SiemError::TlsCa(..)),
        ),
        (
            "bad server_name",
            tls(Some(not_pem.clone()), Some("bad name!")),
            |e| matches!(e, SiemError::TlsServerName(_)),
        ),
        (
            "file in a missing directory",
            SiemSink::File {
                path: dir.path().join("no/such/dir/e.jsonl"),
            },
            |e| matches!(e, SiemError::File(..)),
        ),
    ];
    for (name, sink, is_expected) in cases {
        let cfg = config(
            SiemFormat::Ecs,
            vec![sink],
            &dir.path().join("spool.db"),
            100,
        );
        match Siem::start(&cfg, "mx1") {
            Ok(_) => panic!("{name}: started"),
            Err(e) => assert!(is_expected(&e), "{name}: {e}"),
        }
    }
    // A network sink needs the spool: a path under a file or a directory cannot hold it.
    let tcp = SiemSink::Syslog {
        address: "127.0.0.1:1".parse().unwrap(),
        transport: SyslogTransport::Tcp,
        ca_file: None,
        server_name: None,
    };
    for (name, spool) in [
        ("spool under a file", not_pem.join("spool.db")),
        ("spool is a directory", dir.path().to_owned()),
    ] {
        let cfg = config(SiemFormat::Ecs, vec![tcp.clone()], &spool, 100);
        match Siem::start(&cfg, "mx1") {
            Ok(_) => panic!("{name}: started"),
            Err(e) => assert!(matches!(e, SiemError::Spool(..)), "{name}: {e}"),
        }
    }
}
