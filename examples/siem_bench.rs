//! Throughput of the SIEM trail through the durable spool to a real rsyslogd over TCP:
//! events/s from `emit` until the collector has written the line. Not a test; prints numbers.
//!
//! ```text
//! cargo run --release --example siem_bench -- [events] [ecs|cef]
//! ```
//!
//! Needs rsyslogd (Debian `rsyslog`, `rsyslog-gnutls`). The emitter is paced so that the
//! in-memory queue never overflows (a burst larger than the queue would be dropped and
//! counted, which is not what this measures).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // the SIEM tests' helpers; this bench uses two of them
#[path = "../tests/common/siem.rs"]
mod siem_support;
/// `tests/common/siem.rs` at the path the shared rsyslog harness expects it.
mod common {
    pub(crate) use super::siem_support as siem;
}
#[path = "../tests/siem/rsyslog.rs"]
mod rsyslog;

use std::time::{Duration, Instant};

use gatekeeper::audit::AuditSink;
use gatekeeper::config::{SiemFormat, SiemSink, SyslogTransport};
use gatekeeper::siem::{QUEUE_CAPACITY, Siem};

fn main() {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let format = match args.next().as_deref() {
        Some("cef") => SiemFormat::Cef,
        _ => SiemFormat::Ecs,
    };
    let mut r = rsyslog::Rsyslog::new();
    r.start();
    let sink = SiemSink::Syslog {
        address: r.tcp,
        transport: SyslogTransport::Tcp,
        ca_file: None,
        server_name: None,
    };
    let spool = r.dir.path().join("spool.db");
    let cfg = common::siem::config(format.clone(), vec![sink], &spool, 1_000_000);
    let (siem, handle) = Siem::start(&cfg, "bench").unwrap();
    let mut counter = LineCounter::new(r.dir.path().join("tcp.log"));
    let mut collected = || counter.count();

    let start = Instant::now();
    let chunk = QUEUE_CAPACITY / 4;
    let mut emitted = 0;
    while emitted < total {
        // Keep at most two chunks ahead of the collector: the queue never fills.
        while emitted > collected() + 2 * chunk {
            std::thread::sleep(Duration::from_millis(1));
        }
        for _ in 0..chunk.min(total - emitted) {
            siem.emit(common::siem::event(&format!("b-{emitted}")));
            emitted += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while collected() < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed();
    let got = collected();
    let stats = handle.shutdown(Duration::from_secs(5));
    r.stop();
    println!(
        "{total} events ({format:?}) via spool → rsyslog TCP: {got} lines in {:.2} s = {:.0} events/s; {stats:?}",
        elapsed.as_secs_f64(),
        got as f64 / elapsed.as_secs_f64()
    );
}

/// Counts the lines of the collector's file incrementally (newlines only; the tests check
/// content).
struct LineCounter {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    lines: usize,
    buf: Vec<u8>,
}

impl LineCounter {
    fn new(path: std::path::PathBuf) -> Self {
        Self {
            path,
            file: None,
            lines: 0,
            buf: vec![0; 1 << 16],
        }
    }

    fn count(&mut self) -> usize {
        use std::io::Read;
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        if let Some(f) = self.file.as_mut() {
            while let Ok(n) = f.read(&mut self.buf) {
                if n == 0 {
                    break;
                }
                self.lines += self.buf[..n].iter().filter(|&&c| c == b'\n').count();
            }
        }
        self.lines
    }
}
