//! Handing the challenge mail over (`[outbound]`).
//!
//! - `Directory`: `<dir>/<id>.eml`, written atomically: a hidden temporary file in the same
//!   directory, `fsync`, `rename`, then `fsync` of the directory, so a reader (or a crash)
//!   never sees half a mail.
//! - `Relay(url)`: lettre's `AsyncSmtpTransport`, one connection per mail (no pool: the rate
//!   is low, and a broken pooled connection would cost a retry). URL forms:
//!   - `smtp://host[:port]` (default port 25): STARTTLS **opportunistic** (used when the
//!     relay offers it; a relay on the same network may not). This is the SPEC default.
//!   - `smtp://host[:port]?tls=required`: STARTTLS required (certificate verified against
//!     the system roots); the mail is not sent in clear.
//!   - `smtp://host[:port]?tls=none`: never TLS (a local relay on loopback).
//!   - `smtps://host[:port]` (default port 465): implicit TLS.
//!
//!   Every SMTP command has [`COMMAND_TIMEOUT`], the whole hand-over [`SEND_TIMEOUT`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor, address::Envelope};

use super::ChallengeMail;
use crate::config::OutboundTarget;

/// Per SMTP command to the relay.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// For the whole hand-over (the API request waits for it).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Where challenge mails go.
#[derive(Clone)]
pub enum Outbound {
    Directory(PathBuf),
    Relay {
        url: String,
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// Bound on the whole hand-over.
        send_timeout: Duration,
    },
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outbound::Directory(p) => f.debug_tuple("Directory").field(p).finish(),
            Outbound::Relay { url, .. } => f.debug_tuple("Relay").field(url).finish(),
        }
    }
}

/// The mail could not be handed over.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("outbox {path}: {message}")]
    Directory { path: String, message: String },
    #[error(
        "relay URL {0:?} not understood (smtp://host[:port][?tls=required|none] or smtps://host[:port])"
    )]
    Url(String),
    #[error("relay: {0}")]
    Relay(String),
    #[error("relay: timed out")]
    Timeout,
}

impl Outbound {
    /// Prepare the target: create the outbox directory, or parse the relay URL.
    pub fn from_target(target: &OutboundTarget) -> Result<Self, OutboundError> {
        match target {
            OutboundTarget::Directory(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| OutboundError::Directory {
                    path: dir.display().to_string(),
                    message: e.to_string(),
                })?;
                Ok(Outbound::Directory(dir.clone()))
            }
            OutboundTarget::Relay(url) => Self::relay(url, COMMAND_TIMEOUT, SEND_TIMEOUT),
        }
    }

    /// A relay target with explicit timeouts (per SMTP command, whole hand-over).
    pub fn relay(
        url: &str,
        command_timeout: Duration,
        send_timeout: Duration,
    ) -> Result<Self, OutboundError> {
        Ok(Outbound::Relay {
            url: url.to_owned(),
            transport: relay_transport(url, command_timeout)?,
            send_timeout,
        })
    }

    /// Hand the mail over; `Ok` only once the relay accepted it or the file is durable.
    pub async fn send(&self, id: &str, mail: &ChallengeMail) -> Result<(), OutboundError> {
        match self {
            Outbound::Directory(dir) => {
                let dir = dir.clone();
                let name = format!("{id}.eml");
                let bytes = mail.bytes.clone();
                tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &bytes))
                    .await
                    .map_err(|e| OutboundError::Directory {
                        path: String::new(),
                        message: e.to_string(),
                    })?
            }
            Outbound::Relay {
                transport,
                send_timeout,
                ..
            } => {
                let envelope = Envelope::new(
                    Some(mail.envelope_from.clone()),
                    vec![mail.envelope_to.clone()],
                )
                .map_err(|e| OutboundError::Relay(e.to_string()))?;
                match tokio::time::timeout(
                    *send_timeout,
                    transport.send_raw(&envelope, &mail.bytes),
                )
                .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(OutboundError::Relay(e.to_string())),
                    Err(_) => Err(OutboundError::Timeout),
                }
            }
        }
    }
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), OutboundError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = write_then_rename(dir, &tmp, &dir.join(name), bytes);
    if result.is_err() {
        // A full or failing filesystem must not collect one empty temporary file per
        // attempt: whatever step failed, the temporary file goes (it may not exist, or the
        // rename may already have moved it; both are fine to ignore).
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|message| OutboundError::Directory {
        path: dir.display().to_string(),
        message: message.to_string(),
    })
}

/// Write `tmp`, `fsync` it, rename it to `target`, `fsync` the directory.
fn write_then_rename(dir: &Path, tmp: &Path, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(tmp, target)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Build the transport from the URL forms in the module docs.
fn relay_transport(
    url: &str,
    command_timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, OutboundError> {
    let bad = || OutboundError::Url(url.to_owned());
    let (implicit_tls, rest) = if let Some(rest) = url.strip_prefix("smtp://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("smtps://") {
        (true, rest)
    } else {
        return Err(bad());
    };
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = authority.trim_end_matches('/');
    let tls_mode = match query {
        None => None,
        Some("tls=required") => Some("required"),
        Some("tls=opportunistic") => Some("opportunistic"),
        Some("tls=none") => Some("none"),
        Some(_) => return Err(bad()),
    };
    // host, [v6], host:port, [v6]:port
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().map_err(|_| bad())?),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad())?)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(['@', '/', ' ']) {
        return Err(bad());
    }
    let params =
        || TlsParameters::new(host.to_owned()).map_err(|e| OutboundError::Relay(e.to_string()));
    let (tls, default_port) = if implicit_tls {
        if tls_mode.is_some() {
            return Err(bad());
        }
        (Tls::Wrapper(params()?), 465)
    } else {
        let tls = match tls_mode {
            None | Some("opportunistic") => Tls::Opportunistic(params()?),
            Some("required") => Tls::Required(params()?),
            _ => Tls::None,
        };
        (tls, 25)
    };
    Ok(
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port.unwrap_or(default_port))
            .tls(tls)
            .timeout(Some(command_timeout))
            .build(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls() {
        for ok in [
            "smtp://127.0.0.1:2526",
            "smtp://relay.example.gouv.fr",
            "smtp://relay.example.gouv.fr:25?tls=required",
            "smtp://[::1]:25?tls=none",
            "smtps://relay.example.gouv.fr",
        ] {
            assert!(relay_transport(ok, COMMAND_TIMEOUT).is_ok(), "{ok}");
        }
        for bad in [
            "http://x",
            "smtp://",
            "smtp://host:notaport",
            "smtp://host?tls=maybe",
            "smtps://host?tls=none",
            "smtp://user@host",
            "smtp://[::1",
        ] {
            assert!(relay_transport(bad, COMMAND_TIMEOUT).is_err(), "{bad}");
        }
    }
}
