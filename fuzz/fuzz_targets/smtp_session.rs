//! The pure SMTP session on arbitrary bytes, fed in two chunks split at an arbitrary point, with
//! fixed backend answers, through the driver loop every synchronous driver shares
//! (`smtp::drive`): never panics, every 4xx/5xx reply is followed by exactly one audit
//! event, nothing comes out after Close, and output and delivered messages stay bounded.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use chrono::{TimeZone, Utc};
use gatekeeper::backend::{Decision, RcptOutcome, SessionInfo, Verdict};
use gatekeeper::config::Config;
use gatekeeper::reason::Reason;
use gatekeeper::smtp::drive::{self, Perform};
use gatekeeper::smtp::{Input, Output, Session, SessionSettings, TimeoutKind};
use libfuzzer_sys::fuzz_target;

const MAX_MESSAGE: usize = 4096;

fn base() -> &'static SessionSettings {
    static BASE: OnceLock<SessionSettings> = OnceLock::new();
    BASE.get_or_init(|| {
        let text = include_str!("../../conf/gatekeeper.toml");
        let mut config =
            Config::from_toml_str(text, "conf/gatekeeper.toml").expect("shipped config");
        config.smtp.max_message_bytes = MAX_MESSAGE;
        SessionSettings::from_config(&config, false)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&split, input)) = rest.split_first() else {
        return;
    };
    let settings = SessionSettings {
        tls_offered: flags & 1 != 0,
        tls_required: flags & 2 != 0,
        max_errors: u32::from(flags >> 4) + 1,
        max_transactions: u32::from((flags >> 2) & 3),
        ..base().clone()
    };
    let info = SessionInfo {
        session_id: "fuzz".into(),
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        client_port: 2525,
        helo: None,
        tls_version: None,
    };
    let mut session = Session::new(Arc::new(settings), info);
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let at = input.len() * usize::from(split) / 255;
    let (a, b) = input.split_at(at.min(input.len()));
    let mut driver = Driver {
        closed: false,
        reply_bytes: 0,
        needs_audit: false,
    };
    driver.run(&mut session, Input::Connected, now);
    driver.run(&mut session, Input::Bytes(a), now);
    driver.run(&mut session, Input::Bytes(b), now);
    let last = if flags & 0x80 != 0 {
        Input::Shutdown
    } else {
        Input::Timeout(TimeoutKind::Command)
    };
    driver.run(&mut session, last, now);
    // Each input octet can end at most one line, each line yields a bounded number of replies.
    assert!(driver.reply_bytes <= 1024 * (input.len() + 4));
});

/// The fuzz target's side of `smtp::drive`: fixed backend answers, and the checks on every
/// output.
struct Driver {
    closed: bool,
    reply_bytes: usize,
    /// A 4xx/5xx reply was just performed: the next output must be its audit event.
    needs_audit: bool,
}

impl Driver {
    fn run(&mut self, session: &mut Session, input: Input<'_>, now: chrono::DateTime<Utc>) {
        drive::run(session, input, now, self);
        assert!(!self.needs_audit, "refusal without audit at the end");
    }
}

impl Perform for Driver {
    fn perform(&mut self, output: Output) -> Option<Input<'static>> {
        assert!(!self.closed, "output after Close: {output:?}");
        if self.needs_audit {
            assert!(matches!(output, Output::Audit(_)), "refusal without audit");
            self.needs_audit = false;
            return None;
        }
        match output {
            Output::Reply(bytes) => {
                self.reply_bytes += bytes.len();
                assert!(bytes.ends_with(b"\r\n"));
                self.needs_audit = matches!(bytes.first(), Some(b'4' | b'5'));
                None
            }
            Output::Audit(_) => None,
            Output::CheckRecipient(rcpt) => {
                let answer = if rcpt.token.len() % 2 == 0 {
                    RcptOutcome::Accept {
                        challenge_id: "c".into(),
                    }
                } else {
                    RcptOutcome::Refuse(Reason::TokenUnknown)
                };
                Some(Input::RcptChecked(answer))
            }
            Output::Deliver(tx) => {
                assert!(tx.message.len() <= MAX_MESSAGE);
                let decision = if tx.message.len() % 2 == 0 {
                    Decision::Accept
                } else {
                    Decision::Refuse(Reason::DkimFail)
                };
                let verdict = Verdict {
                    decision,
                    ..Verdict::refuse(Reason::DkimFail)
                };
                Some(Input::Verdict(Box::new(verdict)))
            }
            Output::StartTls => Some(Input::TlsEstablished {
                version: "1.3".into(),
            }),
            Output::Close => {
                self.closed = true;
                None
            }
        }
    }
}
