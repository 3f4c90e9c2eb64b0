//! The SMTP engine (RFC 5321 receive side), without I/O: it must not import tokio, read a
//! clock or touch a socket. Bytes, backend answers, timer events and `now` go in; replies,
//! backend requests and audit events come out. `crate::server` drives it over sockets.
//!
//! - [`line`]: bounded CRLF command-line framer (bare LF / CR / NUL, 512-octet limit).
//! - [`command`]: verbs and MAIL / RCPT argument parsing (through `crate::address`).
//! - [`budget`]: the bytes of DATA all sessions hold together (`smtp.max_buffered_bytes`).
//! - [`data`]: DATA receiver (dot-unstuffing, the one true end, size and line limits, smuggling).
//! - [`reply`]: reply rendering; refusals come from `crate::reason` only.
//! - [`session`]: the state machine tying them together; [`settings`]: its plain-data settings.
//! - [`drive`]: the driver loop (feed, perform, feed the answer) for synchronous drivers.

pub mod budget;
pub mod command;
pub mod data;
pub mod drive;
pub mod line;
pub mod reply;
pub mod session;
pub mod settings;

pub use session::{Input, Output, Phase, Session, TimeoutKind};
pub use settings::SessionSettings;
