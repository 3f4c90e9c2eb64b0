//! The sinks the writer thread serves directly, without the spool: stdout, files of JSON (or
//! CEF) lines, and syslog over UDP.
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

use super::format::{FormatOptions, syslog_severity};
use super::syslog::{Header, UDP_MAX_OCTETS};
use crate::audit::AuditEvent;

/// stdout, one line per event.
pub struct StdoutSink;

impl StdoutSink {
    pub fn write_batch(&self, lines: &[String]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        for line in lines {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.flush()
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

    /// Appends the lines and flushes them to the file.
    pub fn write_batch(&mut self, lines: &[String]) -> io::Result<()> {
        for line in lines {
            self.out.write_all(line.as_bytes())?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }

    /// Flushes the current file and opens the path again (SIGHUP after logrotate). On error
    /// the old handle stays in use, so events keep going somewhere.
    pub fn reopen(&mut self) -> io::Result<()> {
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

/// Syslog over UDP.
pub struct UdpSink {
    socket: UdpSocket,
    target: SocketAddr,
}

impl UdpSink {
    pub fn connect(target: SocketAddr) -> io::Result<Self> {
        let bind: SocketAddr = if target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(target)?;
        // Sending must never stall the writer.
        socket.set_nonblocking(true)?;
        Ok(Self { socket, target })
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Sends one event, rendered to fit one datagram.
    pub fn send(
        &self,
        header: &Header,
        opts: &FormatOptions,
        event: &AuditEvent,
    ) -> io::Result<()> {
        let datagram = udp_message(header, opts, event);
        self.socket.send(datagram.as_bytes()).map(|_| ())
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
