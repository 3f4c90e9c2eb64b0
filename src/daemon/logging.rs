//! Operator logging (tracing) on standard error. Under systemd (`JOURNAL_STREAM` set) lines
//! carry no timestamp and no colour: journald stamps them itself. Audit events do not go
//! through here: they are the SIEM's (`crate::siem`), on their own sinks.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber once. `RUST_LOG` overrides the default `info` level.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = if under_journald {
        builder.without_time().with_ansi(false).try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests calling serve twice) keeps the first subscriber.
    drop(result);
}
