//! One handler per SMTP verb and per backend answer. The dispatcher (`Session::on_line`) only
//! dispatches; each handler checks the sequence, then the argument, then acts.

use chrono::{DateTime, Utc};

use super::state::{State, TxFacts};
use super::{Output, Session, action_of};
use crate::audit::Action;
use crate::backend::{Decision, RcptOutcome, Transaction, Verdict};
use crate::reason::{Class, Reason};
use crate::smtp::command;
use crate::smtp::data::DataReceiver;
use crate::smtp::reply;

impl Session {
    /// EHLO / HELO (RFC 5321 §4.1.4: also resets any transaction).
    pub(super) fn on_hello(&mut self, out: &mut Vec<Output>, name: String, extended: bool) {
        self.info.helo = Some(name);
        self.reset_transaction();
        let s = &self.settings;
        let text = if extended {
            reply::ehlo(
                &s.hostname,
                s.max_message_bytes,
                s.tls_offered && !self.in_tls,
            )
        } else {
            reply::helo(&s.hostname)
        };
        out.push(Output::Reply(text));
    }

    pub(super) fn on_mail(&mut self, out: &mut Vec<Output>, arg: &[u8], now: DateTime<Utc>) {
        self.mail_seen = true;
        if !matches!(self.state, State::Greeted) {
            return self.refuse_counted(out, Reason::SmtpBadSequence, now);
        }
        self.tx = TxFacts {
            mail_from: Some(String::from_utf8_lossy(arg).into_owned()),
            ..TxFacts::default()
        };
        if self.settings.tls_required && !self.in_tls {
            self.tx.refused = true;
            return self.refuse_counted(out, Reason::TlsRequired, now);
        }
        if self.transactions >= self.settings.max_transactions {
            self.refuse(out, Reason::SmtpTooManyTransactions, now);
            return self.close(out);
        }
        let s = &self.settings;
        let tag_for = |d: &crate::address::Domain| s.domains.envelope_tag(d);
        let mail =
            command::parse_mail_from(arg, &s.parse, s.max_message_bytes, tag_for).and_then(|m| {
                s.domains
                    .check_claim(m.from.domain(), &s.confirm.domain)
                    .map(|()| m)
            });
        match mail {
            Ok(mail) => {
                self.tx.mail_from = Some(mail.from.to_string());
                self.tx.mail_from_tagged = mail.tagged;
                self.transactions += 1;
                self.state = State::Mail { from: mail.from };
                out.push(Output::Reply(reply::SENDER_OK.to_vec()));
            }
            Err(reason) => {
                self.tx.refused = true;
                if reason == Reason::EnvelopeSyntax {
                    self.tx.detail = command::mail_from_detail(arg, &s.parse, tag_for);
                }
                self.refuse_counted(out, reason, now);
                self.tx.detail = None;
            }
        }
    }

    pub(super) fn on_rcpt(&mut self, out: &mut Vec<Output>, arg: &[u8], now: DateTime<Utc>) {
        let state = std::mem::replace(&mut self.state, State::Closed);
        let parsed = command::parse_rcpt_to(arg, &self.settings.parse, &self.settings.confirm);
        match (state, parsed) {
            (State::Mail { from }, Ok(rcpt)) => {
                self.tx.to = Some(self.redacted(rcpt.is_probe()));
                self.state = State::CheckingRcpt {
                    from,
                    rcpt: rcpt.clone(),
                };
                out.push(Output::CheckRecipient(rcpt));
            }
            (state @ (State::Mail { .. } | State::Rcpt { .. }), Err(reason)) => {
                let first = matches!(state, State::Mail { .. });
                self.state = state;
                self.tx.refused |= first;
                self.refuse_counted(out, reason, now);
            }
            (state @ State::Rcpt { .. }, Ok(_)) => {
                self.state = state;
                self.refuse_counted(out, Reason::RcptTooMany, now);
            }
            (state, _) => {
                self.state = state;
                self.refuse_sequence(out, now);
            }
        }
    }

    pub(super) fn on_rcpt_checked(
        &mut self,
        out: &mut Vec<Output>,
        outcome: RcptOutcome,
        now: DateTime<Utc>,
    ) {
        let state = std::mem::replace(&mut self.state, State::Closed);
        let State::CheckingRcpt { from, rcpt } = state else {
            // Not waiting for one: a driver mistake; ignore it.
            self.state = state;
            return;
        };
        match outcome {
            RcptOutcome::Accept { challenge_id } => {
                self.tx.challenge_id = Some(challenge_id.clone());
                self.tx.refused = false;
                self.state = State::Rcpt {
                    from,
                    rcpt,
                    challenge_id,
                };
                out.push(Output::Reply(reply::RECIPIENT_OK.to_vec()));
            }
            RcptOutcome::Refuse(reason) => {
                self.state = State::Mail { from };
                self.tx.refused = true;
                self.refuse_counted(out, reason, now);
                self.tx.to = None;
            }
        }
    }

    pub(super) fn on_data(&mut self, out: &mut Vec<Output>, now: DateTime<Utc>) {
        let state = std::mem::replace(&mut self.state, State::Closed);
        match state {
            State::Rcpt {
                from,
                rcpt,
                challenge_id,
            } => {
                let s = &self.settings;
                match DataReceiver::new(s.max_message_bytes, &s.budget) {
                    Some(receiver) => {
                        self.state = State::Data {
                            from,
                            rcpt,
                            challenge_id,
                            receiver,
                        };
                        out.push(Output::Reply(reply::START_DATA.to_vec()));
                    }
                    None => {
                        // The transaction stays: the client may try DATA again later.
                        self.state = State::Rcpt {
                            from,
                            rcpt,
                            challenge_id,
                        };
                        self.refuse(out, Reason::SmtpBusy, now);
                    }
                }
            }
            state => {
                self.state = state;
                self.refuse_sequence(out, now);
            }
        }
    }

    pub(super) fn on_data_end(
        &mut self,
        out: &mut Vec<Output>,
        result: Result<Vec<u8>, Reason>,
        now: DateTime<Utc>,
    ) {
        let state = std::mem::replace(&mut self.state, State::Greeted);
        let State::Data {
            from,
            rcpt,
            challenge_id,
            receiver,
        } = state
        else {
            self.state = state;
            return;
        };
        match result {
            Ok(message) => {
                self.state = State::Delivering {
                    probe: rcpt.is_probe(),
                    _held: receiver.into_reservation(),
                };
                out.push(Output::Deliver(Box::new(Transaction {
                    session: self.info.clone(),
                    mail_from: from,
                    mail_from_tagged: self.tx.mail_from_tagged.clone(),
                    rcpt,
                    challenge_id,
                    message,
                    received_at: now,
                })));
            }
            Err(reason) => {
                self.refuse_counted(out, reason, now);
                self.reset_transaction();
            }
        }
    }

    pub(super) fn on_verdict(
        &mut self,
        out: &mut Vec<Output>,
        verdict: Verdict,
        now: DateTime<Utc>,
    ) {
        let State::Delivering { probe, .. } = self.state else {
            return;
        };
        // Drops the message's reservation: the backend has given the buffer up.
        self.state = State::Greeted;
        let (reason, action, text) = match verdict.decision {
            // A probe's verdict is the one a confirmation would get (SPEC §10): analysed and
            // stored, answered 250 whatever it says, except a temporary reason (DNS, store):
            // the analysis is incomplete or not kept, so the sender is asked to retry.
            Decision::Refuse(r) if probe && r.class() == Class::Temporary => {
                (Some(r), Action::ProbeAnalysed, reply::render(r.reply()))
            }
            Decision::Accept | Decision::Refuse(_) if probe => (
                verdict_reason(&verdict.decision),
                Action::ProbeAnalysed,
                reply::ANALYSED.to_vec(),
            ),
            Decision::Accept => (
                None,
                Action::ConfirmationAccepted,
                reply::CONFIRMED.to_vec(),
            ),
            Decision::Refuse(r) => (Some(r), action_of(r), self.refusal_text(r)),
        };
        let mut event = self.event_with(action, reason, now);
        if reason.is_none() || text.starts_with(b"250") {
            event.reply_code = Some(250);
        }
        event.from = verdict.from;
        event.message_id = verdict.message_id;
        event.challenge_id = verdict.challenge_id.or(event.challenge_id);
        event.checks = verdict.checks;
        out.push(Output::Reply(text));
        out.push(Output::Audit(Box::new(event)));
        self.reset_transaction();
    }

    pub(super) fn on_rset(&mut self, out: &mut Vec<Output>) {
        self.reset_transaction();
        out.push(Output::Reply(reply::OK.to_vec()));
    }

    pub(super) fn on_starttls(
        &mut self,
        out: &mut Vec<Output>,
        pipelined: bool,
        now: DateTime<Utc>,
    ) {
        if !self.settings.tls_offered || self.in_tls {
            return self.refuse_counted(out, Reason::SmtpUnknownCommand, now);
        }
        if !matches!(self.state, State::Greeted) {
            return self.refuse_counted(out, Reason::SmtpBadSequence, now);
        }
        if pipelined {
            self.refuse(out, Reason::SmtpPipelinedStarttls, now);
            return self.close(out);
        }
        self.state = State::TlsPending;
        out.push(Output::Reply(reply::START_TLS.to_vec()));
        out.push(Output::StartTls);
    }

    /// Forget the transaction; back to Greeted (or stay Fresh before EHLO).
    pub(super) fn reset_transaction(&mut self) {
        self.tx = TxFacts::default();
        if self.info.helo.is_some() && !matches!(self.state, State::Closed | State::TlsPending) {
            self.state = State::Greeted;
        }
    }
}

/// The reason a decision carries, if any.
fn verdict_reason(decision: &Decision) -> Option<Reason> {
    match decision {
        Decision::Accept => None,
        Decision::Refuse(r) => Some(*r),
    }
}
