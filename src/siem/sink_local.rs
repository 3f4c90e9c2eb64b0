//! The sinks the writer thread serves directly, without the spool: stdout, files of JSON (or
//! CEF) lines, and syslog over UDP. Each is one type behind [`LocalSink`]; the writer holds
//! them as `Vec<Box<dyn LocalSink>>` and knows none of them by name, so a new local sink is
//! one new type here plus its arm in [`open`] (where `SiemSink` config meets the sinks).
//!
//! - stdout: one line per event, flushed per batch; under systemd each line is one journal
//!   entry.
//! - file: opened in append mode (mode 0640: events name people), flushed after every batch
//!   (a batch is what was queued when the writer woke, so an event is in the file well within
//!   a second of its SMTP reply). [`FileSink::reopen`] opens the path again: after logrotate
//!   renamed the file, new events go to a new file, and nothing is lost across the switch
//!   because the old handle is flushed first.
//! - UDP: one RFC 5424 message per datagram, at most [`UDP_MAX_OCTETS`]. UDP is best effort
//!   by nature (no acknowledgement, no flow control): it is not spooled, and a send error
//!   (e.g. ICMP port unreachable) is counted, not retried. An event that does not fit is
//!   rendered again with tighter per-field bounds (`FormatOptions::render_within`), so it
//!   stays one parseable event. A burst larger than the collector's socket buffer is lost by
//!   the kernel: the tests see rsyslog's imudp keep about half of a 200-event burst.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::SiemError;
use super::format::{FormatOptions, syslog_severity};
use super::syslog::{Header, UDP_MAX_OCTETS};
use crate::audit::AuditEvent;
use crate::config::{SiemSink, SyslogTransport};

/// Which `/metrics` counter a sink's failures go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCounter {
    /// `local_errors`: stdout and files.
    Local,
    /// `udp_errors`: best-effort datagrams.
    Udp,
}

/// A failed write: how many writes it counts for, and why.
#[derive(Debug)]
pub struct SinkFailure {
    pub count: u64,
    pub error: io::Error,
}

impl SinkFailure {
    fn one(error: io::Error) -> Self {
        Self { count: 1, error }
    }
}

/// One batch as the writer hands it to every local sink: the events and their lines, rendered
/// once (`lines[i]` is `events[i]` in the configured format, within `LINE_MAX_OCTETS`).
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub events: &'a [AuditEvent],
    pub lines: &'a [String],
}

/// A sink the writer thread writes directly (no spool, no retry). Implementations must not
/// block for long: the writer serves every sink and the spool in turn.
pub trait LocalSink: Send {
    /// Names the sink in log lines (`stdout`, the file's path, the collector's address).
    fn name(&self) -> String;

    /// The counter its failures go to.
    fn counter(&self) -> ErrorCounter {
        ErrorCounter::Local
    }

    /// Whether the writer logs each failure. A sink whose failures are routine (UDP to a
    /// collector that is down) or whose failure means nobody is reading (stdout) is only
    /// counted.
    fn logs_failures(&self) -> bool {
        true
    }

    /// Writes (and flushes) one batch.
    fn write_batch(&mut self, batch: Batch<'_>) -> Result<(), SinkFailure>;

    /// Opens its target again (SIGHUP after logrotate); nothing to do for most sinks.
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The local sink `sink` configures, or `None` for a network sink (spooled, see
/// [`super::sink_net`]).
pub fn open(
    sink: &SiemSink,
    header: &Header,
    opts: &FormatOptions,
) -> Result<Option<Box<dyn LocalSink>>, SiemError> {
    Ok(match sink {
        SiemSink::Stdout => Some(Box::new(StdoutSink)),
        SiemSink::File { path } => Some(Box::new(
            FileSink::open(path).map_err(|e| SiemError::File(path.clone(), e))?,
        )),
        SiemSink::Syslog {
            address,
            transport: SyslogTransport::Udp,
            ..
        } => Some(Box::new(
            UdpSink::connect(*address, header.clone(), opts.clone())
                .map_err(|e| SiemError::Udp(*address, e))?,
        )),
        SiemSink::Syslog { .. } => None,
    })
}

/// Writes each line and its terminator, then flushes.
fn write_lines(out: &mut impl Write, lines: &[String]) -> io::Result<()> {
    for line in lines {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// stdout, one line per event.
pub struct StdoutSink;

impl LocalSink for StdoutSink {
    fn name(&self) -> String {
        "stdout".to_owned()
    }

    fn logs_failures(&self) -> bool {
        false
    }

    fn write_batch(&mut self, batch: Batch<'_>) -> Result<(), SinkFailure> {
        write_lines(&mut io::stdout().lock(), batch.lines).map_err(SinkFailure::one)
    }
}

/// A file of event lines.
pub struct FileSink {
    path: PathBuf,
    out: BufWriter<File>,
}

impl FileSink {
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            out: BufWriter::new(open_append(path)?),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl LocalSink for FileSink {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// Appends the lines and flushes them to the file.
    fn write_batch(&mut self, batch: Batch<'_>) -> Result<(), SinkFailure> {
        write_lines(&mut self.out, batch.lines).map_err(SinkFailure::one)
    }

    /// Flushes the current file and opens the path again (SIGHUP after logrotate). On error
    /// the old handle stays in use, so events keep going somewhere.
    fn reopen(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let file = open_append(&self.path)?;
        self.out = BufWriter::new(file);
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Syslog over UDP. It renders each event itself (not the writer's line): a datagram has
/// less room than a line, so the event may need tighter field bounds.
pub struct UdpSink {
    socket: UdpSocket,
    target: SocketAddr,
    header: Header,
    opts: FormatOptions,
}

impl UdpSink {
    pub fn connect(target: SocketAddr, header: Header, opts: FormatOptions) -> io::Result<Self> {
        let bind: SocketAddr = if target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(target)?;
        // Sending must never stall the writer.
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            target,
            header,
            opts,
        })
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Sends one event, rendered to fit one datagram.
    pub fn send(&self, event: &AuditEvent) -> io::Result<()> {
        let datagram = udp_message(&self.header, &self.opts, event);
        self.socket.send(datagram.as_bytes()).map(|_| ())
    }
}

impl LocalSink for UdpSink {
    fn name(&self) -> String {
        format!("udp://{}", self.target)
    }

    fn counter(&self) -> ErrorCounter {
        ErrorCounter::Udp
    }

    fn logs_failures(&self) -> bool {
        false
    }

    /// One datagram per event; every failed send counts (the last error is kept).
    fn write_batch(&mut self, batch: Batch<'_>) -> Result<(), SinkFailure> {
        let mut failure: Option<SinkFailure> = None;
        for ev in batch.events {
            if let Err(error) = self.send(ev) {
                let count = failure.as_ref().map_or(0, |f| f.count) + 1;
                failure = Some(SinkFailure { count, error });
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

/// The syslog message for one datagram: the event rendered within what the datagram has
/// left after the header; as a last resort (an event whose fixed part alone is too large,
/// which the product does not produce) cut at a character boundary.
pub fn udp_message(header: &Header, opts: &FormatOptions, event: &AuditEvent) -> String {
    let build = |body: &str| {
        header.message(
            syslog_severity(event),
            event.timestamp,
            event.action.as_str(),
            body,
        )
    };
    let room = UDP_MAX_OCTETS.saturating_sub(build("").len());
    let mut msg = build(&opts.render_within(event, room));
    if msg.len() > UDP_MAX_OCTETS {
        let mut cut = UDP_MAX_OCTETS;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
    }
    msg
}
