//! One SMTP connection: feeds socket bytes, timer events and backend answers to the pure
//! [`Session`], and performs what it asks (write, call the backend, start TLS, audit, close).
//!
//! Every read runs under a timeout: `smtp.command_timeout` between commands,
//! `smtp.data_timeout` inside DATA, both capped by what is left of `smtp.session_timeout`.
//! Writes and the TLS handshake run under `smtp.command_timeout`. Backend calls are not cut
//! short: the backend bounds its own DNS and store work, and cancelling a commit half-way would
//! risk a lost confirmation (I3). While a backend call runs nothing is read: the TCP window is
//! the back-pressure on a pipelining client.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

use super::{ServerSettings, Shared, new_session_id};
use crate::backend::{Backend, SessionInfo};
use crate::smtp::{Input, Output, Phase, Session, TimeoutKind};

/// Octets read per call once a session is moving data; the session's own buffers are bounded
/// independently.
const READ_CHUNK: usize = 16 * 1024;
/// The read buffer a session starts with: a command line (512 octets) and its neighbours
/// fit. It grows to [`READ_CHUNK`] the first time a read fills it (DATA, pipelining), so
/// thousands of idle sessions do not each hold 16 KiB (bench/run.sh, 10,000 idle sessions).
const FIRST_READ_CHUNK: usize = 1024;

/// Serve one accepted connection to its end.
pub(super) async fn serve<B: Backend>(
    stream: TcpStream,
    ip: IpAddr,
    port: u16,
    settings: Arc<ServerSettings>,
    shared: &Shared<B>,
) {
    let info = SessionInfo {
        session_id: new_session_id(),
        client_ip: ip,
        client_port: port,
        helo: None,
        tls_version: None,
    };
    let session_id = info.session_id.clone();
    shared.backend.session_opened(&info);
    let session = Session::new(settings.session.clone(), info);
    let _ = stream.set_nodelay(true);
    Driver::new(Either::Left(stream), session, &settings, shared)
        .run()
        .await;
    shared.backend.session_closed(&session_id);
}

/// The connection before (`Left`) and after (`Right`) STARTTLS.
type Conn = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// Why [`Driver::step`] returns early.
enum Break {
    /// The session closed, the peer went away or I/O failed: the connection ends. The session
    /// has already audited whatever it refused; there is nothing more to report.
    End,
    /// The session asked for STARTTLS: the stream moves into the handshake, which takes the
    /// driver by value ([`Driver::start_tls`]).
    StartTls,
}

/// One connection's session and the I/O state around it. [`Driver::run`] repeats three steps:
/// perform the session's outputs ([`Driver::perform`]), get the next input from the socket
/// or the clock ([`Driver::next_input`]), feed it to the session.
struct Driver<'a, B> {
    conn: Conn,
    session: Session,
    /// Outputs the session asked for and the driver has not performed yet, in order.
    pending: VecDeque<Output>,
    /// Replies gathered since the last write: pipelined answers leave in one write.
    out: Vec<u8>,
    /// The read buffer: [`FIRST_READ_CHUNK`], grown to [`READ_CHUNK`] once a read fills it.
    buf: Vec<u8>,
    /// End of `smtp.session_timeout`.
    deadline: Instant,
    /// End of `smtp.shutdown_grace`, once a shutdown has begun.
    grace_end: Option<Instant>,
    settings: &'a ServerSettings,
    shared: &'a Shared<B>,
}

/// What the driver got while waiting for the client.
enum Event {
    /// `n` octets read into the buffer.
    Read(usize),
    /// A timer or shutdown input for the session.
    Input(Input<'static>),
    /// Nothing for the session (a shutdown began): wait again.
    Nothing,
}

impl<'a, B: Backend> Driver<'a, B> {
    fn new(
        conn: Conn,
        session: Session,
        settings: &'a ServerSettings,
        shared: &'a Shared<B>,
    ) -> Self {
        Self {
            conn,
            session,
            pending: VecDeque::new(),
            out: Vec::new(),
            buf: vec![0u8; FIRST_READ_CHUNK],
            deadline: Instant::now() + settings.session_timeout,
            grace_end: None,
            settings,
            shared,
        }
    }

    /// The session loop. Returns when the session closes, the peer goes away or I/O fails.
    async fn run(mut self) {
        self.feed(Input::Connected);
        loop {
            match self.step().await {
                Ok(()) => {}
                Err(Break::End) => return,
                Err(Break::StartTls) => match Box::pin(self.start_tls()).await {
                    Some((upgraded, version)) => {
                        self = upgraded;
                        self.feed(Input::TlsEstablished { version });
                    }
                    None => return,
                },
            }
        }
    }

    /// Perform what is pending, then wait for the next input and feed it.
    async fn step(&mut self) -> Result<(), Break> {
        while let Some(output) = self.pending.pop_front() {
            if let Some(answer) = self.perform(output).await? {
                self.feed(answer);
            }
        }
        self.flush().await?;
        if self.session.is_closed() {
            return Err(Break::End);
        }
        match self.next_input().await? {
            Event::Read(n) => {
                let bytes = self.buf.get(..n).unwrap_or_default();
                let outputs = self.session.handle(Input::Bytes(bytes), Utc::now());
                self.pending.extend(outputs);
                if n == self.buf.len() && self.buf.len() < READ_CHUNK {
                    self.buf.resize(READ_CHUNK, 0);
                }
            }
            Event::Input(input) => self.feed(input),
            Event::Nothing => {}
        }
        Ok(())
    }

    fn feed(&mut self, input: Input<'_>) {
        let outputs = self.session.handle(input, Utc::now());
        self.pending.extend(outputs);
    }

    /// Perform one output; the answer it calls for, if any, is the session's next input.
    async fn perform(&mut self, output: Output) -> Result<Option<Input<'static>>, Break> {
        let shared = self.shared;
        // The backend and TLS futures are boxed: inline, the largest of them (the whole
        // verification) sized every session's task, idle or not — about 9 KiB each
        // (bench/run.sh, 10,000 idle sessions). One allocation per call instead.
        Ok(match output {
            Output::Reply(bytes) => {
                self.out.extend_from_slice(&bytes);
                None
            }
            Output::Audit(event) => {
                shared.audit.emit(*event);
                None
            }
            Output::CheckRecipient(rcpt) => {
                self.flush().await?;
                let info = self.session.info();
                let check = shared.backend.check_recipient(info, &rcpt, Utc::now());
                Some(Input::RcptChecked(Box::pin(check).await))
            }
            Output::Deliver(tx) => {
                self.flush().await?;
                let verdict = Box::pin(shared.backend.deliver(*tx)).await;
                Some(Input::Verdict(Box::new(verdict)))
            }
            Output::StartTls => {
                self.flush().await?;
                return Err(Break::StartTls);
            }
            Output::Close => {
                let _ = self.flush().await;
                let _ = timeout(self.settings.command_timeout, self.conn.shutdown()).await;
                return Err(Break::End);
            }
        })
    }

    /// Wait for octets, a timeout or a shutdown, whichever comes first.
    async fn next_input(&mut self) -> Result<Event, Break> {
        // Draining: an idle session gets its 421 now rather than at the end of the grace.
        if self.grace_end.is_some() && self.session.is_idle() {
            return Ok(Event::Input(Input::Shutdown));
        }
        let settings = self.settings;
        let (phase_timeout, kind) = match self.session.phase() {
            Phase::Command => (settings.command_timeout, TimeoutKind::Command),
            Phase::Data => (settings.data_timeout, TimeoutKind::Data),
        };
        let read_end = Instant::now() + phase_timeout;
        let (read_end, kind) = if read_end >= self.deadline {
            (self.deadline, TimeoutKind::Session)
        } else {
            (read_end, kind)
        };
        let grace_sleep = tokio::time::sleep_until(self.grace_end.unwrap_or(self.deadline));
        let shared = self.shared;
        Ok(tokio::select! {
            _ = shared.shutdown.cancelled(), if self.grace_end.is_none() => {
                self.grace_end = Some(Instant::now() + settings.shutdown_grace);
                Event::Nothing
            }
            _ = grace_sleep, if self.grace_end.is_some() => Event::Input(Input::Shutdown),
            _ = shared.abort.cancelled() => Event::Input(Input::Shutdown),
            read = timeout_at(read_end, self.conn.read(&mut self.buf)) => match read {
                Err(_elapsed) => Event::Input(Input::Timeout(kind)),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Break::End),
                Ok(Ok(n)) => Event::Read(n),
            },
        })
    }

    /// Write what the session answered, under `smtp.command_timeout`.
    async fn flush(&mut self) -> Result<(), Break> {
        if self.out.is_empty() {
            return Ok(());
        }
        let (conn, out) = (&mut self.conn, &self.out);
        let result = timeout(self.settings.command_timeout, async {
            conn.write_all(out).await?;
            conn.flush().await
        })
        .await;
        self.out.clear();
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(Break::End),
        }
    }

    /// The TLS handshake (RFC 3207) under `smtp.command_timeout`: the upgraded driver and the
    /// negotiated version, or `None` when it fails or TLS is unavailable.
    async fn start_tls(self) -> Option<(Self, String)> {
        let (Either::Left(tcp), Some(acceptor)) = (self.conn, self.settings.tls.as_ref()) else {
            return None;
        };
        match timeout(self.settings.command_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                let version = match tls.get_ref().1.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
                    Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
                    _ => "unknown",
                };
                let conn = Either::Right(Box::new(tls));
                Some((Self { conn, ..self }, version.to_owned()))
            }
            Ok(Err(error)) => {
                tracing::info!(%error, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::info!("TLS handshake timed out");
                None
            }
        }
    }
}
