//! The driver loop every driver of a [`Session`] runs, in its synchronous form: feed one input,
//! perform the outputs in order, and feed each answer an output calls for back before going
//! on. The fuzz target and the transcript tests drive the session through it; the socket
//! driver (`crate::server`) runs the same three steps with `.await` between them.
//!
//! Pure like the rest of `crate::smtp`: no tokio, no clock (the caller passes `now`).

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use super::{Input, Output, Session};

/// The I/O side of a synchronous driver.
pub trait Perform {
    /// Perform one output. `CheckRecipient`, `Deliver` and `StartTls` return their answer (the
    /// session's next input); every other output returns `None`. A driver that does not answer
    /// an output leaves the session waiting, as a failed TLS handshake would.
    fn perform(&mut self, output: Output) -> Option<Input<'static>>;
}

/// Feed `input` at `now` and perform everything it leads to, answers included, until the
/// session has nothing more to say.
pub fn run(session: &mut Session, input: Input<'_>, now: DateTime<Utc>, io: &mut impl Perform) {
    let mut pending: VecDeque<Output> = session.handle(input, now).into();
    while let Some(output) = pending.pop_front() {
        if let Some(next) = io.perform(output) {
            pending.extend(session.handle(next, now));
        }
    }
}
