//! The SMTP transcript helper: a pure [`Session`] driven through `smtp::drive` with a fake
//! backend (token `good` live, `REFUSE-ME` in a message fails DKIM), recording every reply,
//! audit event and delivery, and checking SPEC I4 (every refusal has its one audit event) on
//! every output. `T::same_when_split` replays a transcript split at every byte boundary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use gatekeeper::audit::{Action, AuditEvent, Check};
use gatekeeper::backend::{Decision, RcptOutcome, SessionInfo, Transaction, Verdict};
use gatekeeper::config::Config;
use gatekeeper::reason::Reason;
use gatekeeper::smtp::drive::{self, Perform};
use gatekeeper::smtp::{Input, Output, Session, SessionSettings};

use super::domain;

pub const GOOD: &str = "confirm+good@verify.example.gouv.fr";
pub const MAX_MESSAGE: usize = 4000;

/// The shipped configuration, with small limits for the tests.
pub fn settings() -> SessionSettings {
    let mut config =
        Config::from_toml_str(include_str!("../../conf/gatekeeper.toml"), "conf").unwrap();
    config.smtp.hostname = "mx.verify.example.gouv.fr".into();
    config.smtp.max_message_bytes = MAX_MESSAGE;
    config.smtp.max_errors = 6;
    config.smtp.max_transactions = 3;
    config.policy.allowed_domains = vec![domain("gouv.fr")];
    config.policy.denied_domains = vec![domain("denied.gouv.fr")];
    let settings = SessionSettings::from_config(&config, false);
    assert_eq!(settings.confirm.domain.as_str(), "verify.example.gouv.fr");
    assert_eq!(settings.confirm.local_prefix, "confirm");
    settings
}

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).unwrap()
}

/// What the transcript saw: every reply (raw), every audit event, every delivered message.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    pub replies: Vec<String>,
    pub audits: Vec<(Action, Option<Reason>, Option<u16>)>,
    pub delivered: Vec<Vec<u8>>,
    pub closed: bool,
    pub starttls: bool,
}

/// The fake backend's answers: token `good` is live, `used` is used, anything else unknown; a
/// message containing `REFUSE-ME` fails DKIM, anything else is accepted.
pub fn rcpt_answer(token: &str) -> RcptOutcome {
    match token {
        "good" | "other" => RcptOutcome::Accept {
            challenge_id: format!("ch-{token}"),
        },
        "used" => RcptOutcome::Refuse(Reason::TokenUsed),
        "down" => RcptOutcome::Refuse(Reason::StoreUnavailable),
        _ => RcptOutcome::Refuse(Reason::TokenUnknown),
    }
}

pub fn verdict(tx: &Transaction) -> Verdict {
    let refuse = tx.message.windows(9).any(|w| w == b"REFUSE-ME");
    Verdict {
        decision: if refuse {
            Decision::Refuse(Reason::DkimFail)
        } else {
            Decision::Accept
        },
        checks: vec![Check {
            name: "dkim",
            result: if refuse { "fail" } else { "pass" }.into(),
        }],
        from: Some(tx.mail_from.to_string()),
        message_id: Some("m1@interieur.gouv.fr".into()),
        challenge_id: Some(tx.challenge_id.clone()),
        evidence: None,
    }
}

pub struct T {
    pub session: Session,
    pub sent: Vec<Vec<u8>>,
    pub record: Record,
    /// Replies produced by the last `send`.
    pub last: Vec<String>,
    pub settings: Arc<SessionSettings>,
    /// The full audit events, for field checks.
    pub events: Vec<AuditEvent>,
}

pub fn info() -> SessionInfo {
    SessionInfo {
        session_id: "s-1".into(),
        client_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 25)),
        client_port: 40000,
        helo: None,
        tls_version: None,
    }
}

impl T {
    pub fn new() -> Self {
        Self::with(settings())
    }

    pub fn with(settings: SessionSettings) -> Self {
        let settings = Arc::new(settings);
        let mut t = Self {
            session: Session::new(settings.clone(), info()),
            sent: Vec::new(),
            record: Record::default(),
            last: Vec::new(),
            settings,
            events: Vec::new(),
        };
        t.feed(Input::Connected);
        t.expect(220);
        t
    }

    /// Feed one input and perform its outputs like a driver with the fake backend would.
    pub fn feed(&mut self, input: Input<'_>) {
        self.last.clear();
        let mut io = Fake {
            record: &mut self.record,
            last: &mut self.last,
            events: &mut self.events,
            pending_reply: None,
        };
        drive::run(&mut self.session, input, now(), &mut io);
        assert_eq!(
            io.pending_reply, None,
            "a refusal reply without its audit event"
        );
    }

    pub fn send(&mut self, s: impl AsRef<[u8]>) -> &mut Self {
        self.sent.push(s.as_ref().to_vec());
        self.feed(Input::Bytes(s.as_ref()));
        self
    }

    /// The reply codes of the last send, in order.
    pub fn codes(&self) -> Vec<u16> {
        self.last
            .iter()
            .map(|r| r.get(..3).unwrap().parse().unwrap())
            .collect()
    }

    /// The last send produced exactly one reply, with this code.
    pub fn expect(&mut self, code: u16) -> &mut Self {
        assert_eq!(self.codes(), vec![code], "replies: {:?}", self.last);
        self
    }

    pub fn expect_all(&mut self, codes: &[u16]) -> &mut Self {
        assert_eq!(self.codes(), codes, "replies: {:?}", self.last);
        self
    }

    /// The last send produced exactly one refusal, with this reason and its reply code.
    pub fn refused(&mut self, reason: Reason) -> &mut Self {
        self.expect(reason.reply().code);
        let reasons: Vec<_> = self.events.iter().rev().take(1).map(|e| e.reason).collect();
        assert_eq!(reasons, vec![Some(reason)]);
        let enhanced = format!(" {} ", reason.reply().enhanced);
        assert!(
            self.last.iter().any(|r| r.contains(&enhanced)),
            "{:?}",
            self.last
        );
        self
    }

    pub fn reasons(&self) -> Vec<Reason> {
        self.record.audits.iter().filter_map(|a| a.1).collect()
    }

    /// Replay everything sent so far as one stream split at every byte boundary (and one byte
    /// at a time): replies, audit events and deliveries must be identical.
    pub fn same_when_split(&self) {
        let all: Vec<u8> = self.sent.concat();
        let run = |chunks: Vec<&[u8]>| {
            let mut t = T::with((*self.settings).clone());
            for c in chunks {
                t.feed(Input::Bytes(c));
            }
            t.record
        };
        let whole = run(vec![&all]);
        assert_eq!(whole, self.record, "one write differs from the transcript");
        for k in 0..=all.len() {
            let (a, b) = all.split_at(k);
            assert_eq!(run(vec![a, b]), self.record, "split at {k}");
        }
        assert_eq!(
            run(all.chunks(1).collect()),
            self.record,
            "one byte at a time"
        );
    }
}

pub fn greeted() -> T {
    let mut t = T::new();
    t.send("EHLO smtp.interieur.gouv.fr\r\n").expect(250);
    t
}

pub fn message(body: &str) -> String {
    format!("From: alice@interieur.gouv.fr\r\nSubject: re\r\n\r\n{body}\r\n.\r\n")
}

/// The transcript's side of `smtp::drive`: records every output, answers with the fake
/// backend ([`rcpt_answer`], [`verdict`]), and checks SPEC I4 on the way.
struct Fake<'a> {
    record: &'a mut Record,
    last: &'a mut Vec<String>,
    events: &'a mut Vec<AuditEvent>,
    /// A 4xx/5xx (or the confirmation) reply whose audit event must come next.
    pending_reply: Option<u16>,
}

impl Perform for Fake<'_> {
    fn perform(&mut self, output: Output) -> Option<Input<'static>> {
        // SPEC I4: a 4xx/5xx reply is immediately followed by its one audit event.
        if let Some(code) = self.pending_reply.take() {
            match &output {
                Output::Audit(e) => assert_eq!(e.reply_code, Some(code), "audit of {code}"),
                other => panic!("reply {code} without its audit event, got {other:?}"),
            }
        }
        match output {
            Output::Reply(bytes) => {
                let text = String::from_utf8(bytes).unwrap();
                let code: u16 = text.get(..3).unwrap().parse().unwrap();
                if code >= 400 || text == "250 2.0.0 confirmed\r\n" {
                    self.pending_reply = Some(code);
                }
                self.record.replies.push(text.clone());
                self.last.push(text);
                None
            }
            Output::Audit(e) => {
                self.record.audits.push((e.action, e.reason, e.reply_code));
                self.events.push(*e);
                None
            }
            Output::CheckRecipient(r) => Some(Input::RcptChecked(rcpt_answer(&r.token))),
            Output::Deliver(tx) => {
                self.record.delivered.push(tx.message.clone());
                Some(Input::Verdict(Box::new(verdict(&tx))))
            }
            // No handshake here: the test feeds `TlsEstablished` itself when it wants one.
            Output::StartTls => {
                self.record.starttls = true;
                None
            }
            Output::Close => {
                self.record.closed = true;
                None
            }
        }
    }
}
