//! The session's states. Each variant owns the data of its stage, so "DATA before RCPT" has
//! no representation rather than being a flag to check.

use crate::address::Mailbox;
use crate::backend::Recipient;
use crate::smtp::budget::Reservation;
use crate::smtp::data::DataReceiver;

/// The session state; each variant owns the data of its stage.
#[derive(Debug)]
pub(super) enum State {
    /// Greeting sent (or TLS just established): waiting for EHLO / HELO.
    Fresh,
    /// EHLO / HELO done, no transaction.
    Greeted,
    /// MAIL accepted.
    Mail {
        from: Mailbox,
    },
    /// A RCPT is with the backend.
    CheckingRcpt {
        from: Mailbox,
        rcpt: Recipient,
    },
    /// One confirmation recipient accepted.
    Rcpt {
        from: Mailbox,
        rcpt: Recipient,
        challenge_id: String,
    },
    /// Receiving the message.
    Data {
        from: Mailbox,
        rcpt: Recipient,
        challenge_id: String,
        receiver: DataReceiver,
    },
    /// The transaction is with the backend; `probe` when its recipient is a probe address
    /// (the verdict is then an analysis, answered `250 2.0.0 analysed`). `_held` covers the
    /// message buffer the backend owns until it answers: never read, given back when the
    /// state changes.
    Delivering {
        probe: bool,
        _held: Reservation,
    },
    /// `220` to STARTTLS sent, waiting for the handshake.
    TlsPending,
    Closed,
}

/// Facts about the current transaction for its audit events (canonical when parsed, raw
/// otherwise; the recipient already redacted).
#[derive(Debug, Default)]
pub(super) struct TxFacts {
    pub(super) mail_from: Option<String>,
    /// MAIL FROM as sent, when a configured envelope tag was removed from it.
    pub(super) mail_from_tagged: Option<String>,
    /// The strict parser's detail of the refusal being reported (`address: two_at`).
    pub(super) detail: Option<&'static str>,
    pub(super) to: Option<String>,
    pub(super) challenge_id: Option<String>,
    /// The last MAIL or RCPT of this transaction was refused: the 503s a pipelining client
    /// gets for what it sent after it do not count as further errors.
    pub(super) refused: bool,
}
