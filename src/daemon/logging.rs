//! Operator logging (tracing) on standard error. Audit events do not go through here: they
//! are the SIEM's (`crate::siem`), on their own sinks.
//!
//! Under systemd, standard error is a stream to journald (`JOURNAL_STREAM` names it): lines
//! carry no timestamp (journald stamps them), no colour, and start with the `<N>` syslog
//! priority prefix of sd-daemon(3) so that `journalctl -p err` finds errors. Elsewhere lines
//! carry a timestamp and colour only on a terminal, so a log file or a pipe never receives
//! escape sequences.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Install the global subscriber once. `RUST_LOG` overrides the default `info` level.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = if stderr_is_journal() {
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_level(false)
            .with_target(false)
            .with_ansi(false);
        builder
            .with_ansi(false)
            .event_format(JournalPrefix(format))
            .try_init()
    } else {
        let colour = std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        builder.with_ansi(colour).try_init()
    };
    // A second init (tests calling serve twice) keeps the first subscriber.
    drop(result);
}

/// Whether standard error is the journald stream systemd connected: `JOURNAL_STREAM` is
/// `<device>:<inode>` of that stream (systemd.exec(5)), and it is inherited by children whose
/// stderr may have been redirected since, so the identity is compared, not just the presence.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(parse_journal_stream) else {
        return false;
    };
    // stat() follows the /proc magic link to the open file itself: a socket, a pipe, a tty.
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(meta) => {
            use std::os::unix::fs::MetadataExt;
            meta.dev() == dev && meta.ino() == ino
        }
        // No /proc (unusual): trust the variable rather than stamp lines twice.
        Err(_) => true,
    }
}

/// `"<dev>:<ino>"`, both decimal.
fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The sd-daemon(3) priority of a tracing level.
fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Prefixes each line with `<priority>` for journald, then formats as the inner format does.
struct JournalPrefix<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", syslog_priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_values() {
        let table: &[(&str, Option<(u64, u64)>)] = &[
            ("8:1234", Some((8, 1234))),
            ("0:0", Some((0, 0))),
            ("", None),
            ("8", None),
            ("8:", None),
            (":9", None),
            ("a:9", None),
            ("8:9:10", None),
            ("-1:9", None),
        ];
        for (value, want) in table {
            assert_eq!(parse_journal_stream(value), *want, "{value:?}");
        }
    }

    #[test]
    fn priorities() {
        assert_eq!(syslog_priority(&Level::ERROR), 3);
        assert_eq!(syslog_priority(&Level::WARN), 4);
        assert_eq!(syslog_priority(&Level::INFO), 6);
        assert_eq!(syslog_priority(&Level::DEBUG), 7);
        assert_eq!(syslog_priority(&Level::TRACE), 7);
    }
}
