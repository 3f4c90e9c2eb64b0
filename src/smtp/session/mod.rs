//! The SMTP session: a state machine that takes bytes, backend answers, timer events and the
//! time, and returns replies, backend requests and audit events. Pure: no tokio, no clock, no
//! socket (style.md practice 1). The driver is `crate::server`.
//!
//! # Contract with the driver
//!
//! - Feed [`Input::Connected`] once, then [`Input::Bytes`] as they arrive.
//! - Perform every [`Output`] in order. `CheckRecipient` and `Deliver` must be answered with
//!   [`Input::RcptChecked`] / [`Input::Verdict`]; `StartTls` with [`Input::TlsEstablished`]
//!   (or by closing the connection when the handshake fails). While an answer is pending the
//!   session keeps later bytes buffered and processes nothing; the driver should not read
//!   meanwhile (the TCP window is the back-pressure). At most [`MAX_BUFFERED`] octets are kept;
//!   a driver that feeds more loses the excess.
//! - Every read runs under the timeout of [`Session::phase`]; on expiry feed
//!   [`Input::Timeout`]. At the end of the shutdown grace feed [`Input::Shutdown`].
//!
//! # Decisions the SPEC leaves open
//!
//! - `smtp.max_errors` counts the 5xx replies the session sends for the client's commands and
//!   data, token refusals at RCPT included (guessing tokens is an error). It does not count:
//!   4xx replies (temporary: `rcpt.too_many`, `store.unavailable`), the backend's verdict at the
//!   end of DATA (a complete message judged on its merits), EXPN (a valid command we do not
//!   serve), and the 503 a pipelining client gets for RCPT / DATA after its MAIL or RCPT was
//!   refused (one mistake, not three). When the count reaches the limit the refusal is followed
//!   by `421 smtp.too_many_errors` and the connection closes.
//! - `smtp.max_transactions` counts accepted MAIL commands; one more gets
//!   `421 smtp.too_many_transactions` and the connection closes.
//! - EXPN answers 502 (RFC 5321 §3.5.3); as every 5xx it is audited, with reason
//!   `smtp.unknown_command` (no reason code names it better) and reply code 502.
//! - STARTTLS needs a prior EHLO/HELO and no transaction in progress (503 otherwise); when it
//!   is not offered (no certificate, or TLS already on) it is an unknown command (500).
//! - HELO is accepted like EHLO; after STARTTLS the session forgets the EHLO (RFC 3207 §4.2).
//! - Audit events carry `email.to.address` only once a RCPT parsed as a confirmation address,
//!   and then redacted (`confirm+[redacted]@<domain>`): a refused RCPT's raw text could hold a
//!   token. `email.sender.address` is the canonical MAIL FROM, or its raw text when refused.

mod state;
mod verbs;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::audit::{Action, AuditEvent};
use crate::backend::{RcptOutcome, Recipient, SessionInfo, Transaction, Verdict};
use crate::reason::{Class, Reason};
use crate::smtp::SessionSettings;
use crate::smtp::command::Command;
use crate::smtp::data::DataProgress;
use crate::smtp::line::{Framed, LineFramer};
use crate::smtp::reply;
use state::{State, TxFacts};

/// Octets kept buffered while a backend answer is pending (pipelined commands).
pub const MAX_BUFFERED: usize = 64 * 1024;

/// What the driver feeds the session.
#[derive(Debug)]
pub enum Input<'a> {
    /// The connection is open: send the greeting.
    Connected,
    /// Octets read from the client.
    Bytes(&'a [u8]),
    /// The backend's answer to [`Output::CheckRecipient`].
    RcptChecked(RcptOutcome),
    /// The backend's answer to [`Output::Deliver`].
    Verdict(Box<Verdict>),
    /// The TLS handshake asked by [`Output::StartTls`] completed.
    TlsEstablished { version: String },
    /// A read timed out.
    Timeout(TimeoutKind),
    /// The shutdown grace is over: answer 421 and close.
    Shutdown,
}

/// Which timeout expired (for the audit message only: the reason is `smtp.timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutKind {
    Command,
    Data,
    Session,
}

/// Which read timeout applies now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Between commands (`smtp.command_timeout`).
    Command,
    /// Inside DATA (`smtp.data_timeout`).
    Data,
}

/// What the session asks the driver to do, in order.
#[derive(Debug)]
pub enum Output {
    /// Write these octets.
    Reply(Vec<u8>),
    /// Ask the backend whether this confirmation address is live.
    CheckRecipient(Recipient),
    /// Hand a complete transaction to the backend.
    Deliver(Box<Transaction>),
    /// Start the TLS handshake now (the 220 reply was written just before).
    StartTls,
    /// Emit this audit event.
    Audit(Box<AuditEvent>),
    /// Close the connection (after writing what came before).
    Close,
}

/// One SMTP session. See the module documentation.
#[derive(Debug)]
pub struct Session {
    settings: Arc<SessionSettings>,
    info: SessionInfo,
    state: State,
    framer: LineFramer,
    /// Received octets not processed yet.
    input: Vec<u8>,
    errors: u32,
    transactions: u32,
    in_tls: bool,
    tx: TxFacts,
    /// A MAIL command was seen: from then on a refusal carries its explanation (SPEC §4).
    mail_seen: bool,
}

impl Session {
    /// A new session for a connection described by `info`.
    pub fn new(settings: Arc<SessionSettings>, info: SessionInfo) -> Self {
        Self {
            settings,
            info,
            state: State::Fresh,
            framer: LineFramer::default(),
            input: Vec::new(),
            errors: 0,
            transactions: 0,
            in_tls: false,
            tx: TxFacts::default(),
            mail_seen: false,
        }
    }

    /// Advance the session by one input.
    pub fn handle(&mut self, input: Input<'_>, now: DateTime<Utc>) -> Vec<Output> {
        let mut out = Vec::new();
        if matches!(self.state, State::Closed) {
            return out;
        }
        match input {
            Input::Connected => out.push(Output::Reply(reply::greeting(&self.settings.hostname))),
            Input::Bytes(bytes) => {
                let room = MAX_BUFFERED.saturating_sub(self.input.len());
                self.input.extend(bytes.iter().take(room));
                if matches!(self.state, State::TlsPending) {
                    // RFC 3207 §4.2 / CVE-2011-0411: nothing may follow STARTTLS in clear.
                    self.refuse(&mut out, Reason::SmtpPipelinedStarttls, now);
                    self.close(&mut out);
                }
            }
            Input::RcptChecked(outcome) => self.on_rcpt_checked(&mut out, outcome, now),
            Input::Verdict(verdict) => self.on_verdict(&mut out, *verdict, now),
            Input::TlsEstablished { version } => {
                if matches!(self.state, State::TlsPending) {
                    self.in_tls = true;
                    self.info.tls_version = Some(version);
                    self.info.helo = None;
                    self.state = State::Fresh;
                }
            }
            Input::Timeout(kind) => {
                let mut event = self.event(Reason::SmtpTimeout, now);
                event.message = Some(format!("{kind:?} timeout").to_lowercase());
                out.push(Output::Reply(self.refusal_text(Reason::SmtpTimeout)));
                out.push(Output::Audit(Box::new(event)));
                self.close(&mut out);
            }
            Input::Shutdown => {
                self.refuse(&mut out, Reason::SmtpShutdown, now);
                self.close(&mut out);
            }
        }
        self.process(&mut out, now);
        out
    }

    /// The read timeout that applies now.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Data { .. } => Phase::Data,
            _ => Phase::Command,
        }
    }

    /// No transaction in progress and nothing buffered: a shutdown can answer 421 at once.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Fresh | State::Greeted)
            && self.input.is_empty()
            && !self.framer.is_mid_line()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// What the session knows about its client (HELO and TLS version included).
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// Process buffered input until it runs out or an answer is pending.
    fn process(&mut self, out: &mut Vec<Output>, now: DateTime<Utc>) {
        let mut used = 0;
        loop {
            let rest = self.input.get(used..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            match &mut self.state {
                State::Data { receiver, .. } => {
                    let (n, progress) = receiver.push(rest);
                    used += n;
                    if let DataProgress::Done(result) = progress {
                        self.on_data_end(out, result, now);
                    }
                }
                State::Fresh | State::Greeted | State::Mail { .. } | State::Rcpt { .. } => {
                    let (n, framed) = self.framer.push(rest);
                    used += n;
                    let pipelined = self.input.len() > used;
                    match framed {
                        Framed::NeedMore => {}
                        Framed::Line(line) => self.on_line(out, &line, pipelined, now),
                        Framed::Refused(reason) => self.refuse_counted(out, reason, now),
                    }
                }
                State::CheckingRcpt { .. } | State::Delivering { .. } | State::TlsPending => break,
                State::Closed => {
                    used = self.input.len();
                    break;
                }
            }
        }
        self.input.drain(..used.min(self.input.len()));
    }

    /// Dispatch one clean command line.
    fn on_line(&mut self, out: &mut Vec<Output>, line: &[u8], pipelined: bool, now: DateTime<Utc>) {
        let command = match Command::parse(line) {
            Ok(c) => c,
            Err(reason) => return self.refuse_counted(out, reason, now),
        };
        match command {
            Command::Ehlo(name) => self.on_hello(out, name, true),
            Command::Helo(name) => self.on_hello(out, name, false),
            Command::Mail(arg) => self.on_mail(out, &arg, now),
            Command::Rcpt(arg) => self.on_rcpt(out, &arg, now),
            Command::Data => self.on_data(out, now),
            Command::Rset => self.on_rset(out),
            Command::Noop => out.push(Output::Reply(reply::OK.to_vec())),
            Command::Help => out.push(Output::Reply(reply::HELP.to_vec())),
            Command::Vrfy => out.push(Output::Reply(reply::VRFY.to_vec())),
            Command::Expn => {
                let mut event = self.event(Reason::SmtpUnknownCommand, now);
                event.reply_code = Some(reply::EXPN_CODE);
                event.message = Some("EXPN not supported".to_owned());
                out.push(Output::Reply(reply::EXPN.to_vec()));
                out.push(Output::Audit(Box::new(event)));
            }
            Command::Quit => {
                out.push(Output::Reply(reply::BYE.to_vec()));
                self.close(out);
            }
            Command::StartTls => self.on_starttls(out, pipelined, now),
        }
    }
    /// 503; not counted when it follows a refused MAIL / RCPT of the same transaction.
    fn refuse_sequence(&mut self, out: &mut Vec<Output>, now: DateTime<Utc>) {
        if self.tx.refused {
            self.refuse(out, Reason::SmtpBadSequence, now);
        } else {
            self.refuse_counted(out, Reason::SmtpBadSequence, now);
        }
    }

    /// Refuse, and count the refusal toward `smtp.max_errors` when it is permanent.
    fn refuse_counted(&mut self, out: &mut Vec<Output>, reason: Reason, now: DateTime<Utc>) {
        self.refuse(out, reason, now);
        if reason.class() == Class::Permanent {
            self.errors = self.errors.saturating_add(1);
            if self.errors >= self.settings.max_errors {
                self.refuse(out, Reason::SmtpTooManyErrors, now);
                self.close(out);
            }
        }
    }

    /// One refusal: its reply from the reason table and exactly one audit event (SPEC I4).
    fn refuse(&mut self, out: &mut Vec<Output>, reason: Reason, now: DateTime<Utc>) {
        out.push(Output::Reply(self.refusal_text(reason)));
        out.push(Output::Audit(Box::new(self.event(reason, now))));
    }

    /// The reply for a refusal: the one-line table reply before any MAIL (nobody's bounce
    /// quotes it), the explained multi-line reply from MAIL on (SPEC §4 "Explanations").
    fn refusal_text(&self, reason: Reason) -> Vec<u8> {
        if self.mail_seen {
            reply::render_explained(reason, &self.info.session_id)
        } else {
            reply::render(reason.reply())
        }
    }

    fn close(&mut self, out: &mut Vec<Output>) {
        self.state = State::Closed;
        self.input.clear();
        out.push(Output::Close);
    }

    fn event(&self, reason: Reason, now: DateTime<Utc>) -> AuditEvent {
        self.event_with(action_of(reason), Some(reason), now)
    }

    fn event_with(&self, action: Action, reason: Option<Reason>, now: DateTime<Utc>) -> AuditEvent {
        let mut event = AuditEvent::new(now, action, reason, self.info.session_id.clone());
        event.source_ip = Some(self.info.client_ip);
        event.source_port = Some(self.info.client_port);
        event.helo = self.info.helo.clone();
        event.tls_version = self.info.tls_version.clone();
        event.mail_from = self.tx.mail_from.clone();
        event.mail_from_tagged = self.tx.mail_from_tagged.clone();
        event.message = self.tx.detail.map(|d| format!("address: {d}"));
        event.to = self.tx.to.clone();
        event.challenge_id = self.tx.challenge_id.clone();
        event
    }

    /// `confirm+[redacted]@<confirm.domain>`: the token never reaches the audit trail.
    fn redacted(&self, probe: bool) -> String {
        let c = &self.settings.confirm;
        let prefix = if probe {
            crate::backend::PROBE_PREFIX
        } else {
            c.local_prefix.as_str()
        };
        format!("{prefix}+[redacted]@{}", c.domain)
    }
}

/// A refusal's audit action by its class.
fn action_of(reason: Reason) -> Action {
    match reason.class() {
        Class::Temporary => Action::ConfirmationDeferred,
        Class::Permanent => Action::ConfirmationRejected,
    }
}
