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
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

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
    drive(Conn::Plain(stream), session, &settings, shared).await;
    shared.backend.session_closed(&session_id);
}

/// The session loop. Returns when the session closes, the peer goes away or I/O fails.
async fn drive<B: Backend>(
    mut conn: Conn,
    mut session: Session,
    settings: &ServerSettings,
    shared: &Shared<B>,
) {
    let deadline = Instant::now() + settings.session_timeout;
    let write_timeout = settings.command_timeout;
    let mut queue: VecDeque<Output> = session.handle(Input::Connected, Utc::now()).into();
    let mut out: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; FIRST_READ_CHUNK];
    let mut grace_end: Option<Instant> = None;
    loop {
        while let Some(output) = queue.pop_front() {
            match output {
                Output::Reply(bytes) => out.extend_from_slice(&bytes),
                Output::Audit(event) => shared.audit.emit(*event),
                // The backend and TLS futures are boxed: inline, the largest of them (the
                // whole verification) sized every session's task, idle or not — about 9 KiB
                // each (bench/run.sh, 10,000 idle sessions). One allocation per call instead.
                Output::CheckRecipient(rcpt) => {
                    if flush(&mut conn, &mut out, write_timeout).await.is_err() {
                        return;
                    }
                    let answer = Box::pin(shared.backend.check_recipient(
                        session.info(),
                        &rcpt,
                        Utc::now(),
                    ))
                    .await;
                    queue.extend(session.handle(Input::RcptChecked(answer), Utc::now()));
                }
                Output::Deliver(tx) => {
                    if flush(&mut conn, &mut out, write_timeout).await.is_err() {
                        return;
                    }
                    let verdict = Box::pin(shared.backend.deliver(*tx)).await;
                    queue.extend(session.handle(Input::Verdict(Box::new(verdict)), Utc::now()));
                }
                Output::StartTls => {
                    if flush(&mut conn, &mut out, write_timeout).await.is_err() {
                        return;
                    }
                    let Some((upgraded, version)) =
                        Box::pin(start_tls(conn, settings, write_timeout)).await
                    else {
                        return;
                    };
                    conn = upgraded;
                    queue.extend(session.handle(Input::TlsEstablished { version }, Utc::now()));
                }
                Output::Close => {
                    let _ = flush(&mut conn, &mut out, write_timeout).await;
                    let _ = timeout(write_timeout, conn.shutdown()).await;
                    return;
                }
            }
        }
        if flush(&mut conn, &mut out, write_timeout).await.is_err() || session.is_closed() {
            return;
        }
        // Draining: an idle session gets its 421 now rather than at the end of the grace.
        if grace_end.is_some() && session.is_idle() {
            queue.extend(session.handle(Input::Shutdown, Utc::now()));
            continue;
        }
        let (phase_timeout, kind) = match session.phase() {
            Phase::Command => (settings.command_timeout, TimeoutKind::Command),
            Phase::Data => (settings.data_timeout, TimeoutKind::Data),
        };
        let read_end = Instant::now() + phase_timeout;
        let (read_end, kind) = if read_end >= deadline {
            (deadline, TimeoutKind::Session)
        } else {
            (read_end, kind)
        };
        let grace_sleep = tokio::time::sleep_until(grace_end.unwrap_or(deadline));
        tokio::select! {
            _ = shared.shutdown.cancelled(), if grace_end.is_none() => {
                grace_end = Some(Instant::now() + settings.shutdown_grace);
            }
            _ = grace_sleep, if grace_end.is_some() => {
                queue.extend(session.handle(Input::Shutdown, Utc::now()));
            }
            _ = shared.abort.cancelled() => {
                queue.extend(session.handle(Input::Shutdown, Utc::now()));
            }
            read = timeout_at(read_end, conn.read(&mut buf)) => match read {
                Err(_elapsed) => queue.extend(session.handle(Input::Timeout(kind), Utc::now())),
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => {
                    let bytes = buf.get(..n).unwrap_or_default();
                    queue.extend(session.handle(Input::Bytes(bytes), Utc::now()));
                    if n == buf.len() && buf.len() < READ_CHUNK {
                        buf.resize(READ_CHUNK, 0);
                    }
                }
            },
        }
    }
}

/// Write what the session answered, under the write timeout.
async fn flush(conn: &mut Conn, out: &mut Vec<u8>, limit: Duration) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let result = timeout(limit, async {
        conn.write_all(out).await?;
        conn.flush().await
    })
    .await;
    out.clear();
    match result {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// The TLS handshake (RFC 3207) under a timeout; `None` when it fails or TLS is unavailable.
async fn start_tls(
    conn: Conn,
    settings: &ServerSettings,
    limit: Duration,
) -> Option<(Conn, String)> {
    let (Conn::Plain(tcp), Some(acceptor)) = (conn, settings.tls.as_ref()) else {
        return None;
    };
    match timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            let version = match tls.get_ref().1.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
                _ => "unknown",
            };
            Some((Conn::Tls(Box::new(tls)), version.to_owned()))
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

/// The connection before and after STARTTLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
