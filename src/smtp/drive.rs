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

/// Scripts run through [`run`] with a performer that answers like a backend would: the
/// answers reach the session (the replies after them show it) and nothing is left unperformed.
#[cfg(test)]
#[allow(clippy::expect_used)] // tests: a failed expect is a failed test
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;
    use crate::backend::{Decision, RcptOutcome, SessionInfo, Verdict};
    use crate::config::Config;
    use crate::reason::Reason;
    use crate::smtp::SessionSettings;

    /// Records reply codes; token `good` is live, a message is accepted, TLS always succeeds.
    #[derive(Default)]
    struct Recorder {
        codes: Vec<u16>,
        closed: bool,
    }

    impl Perform for Recorder {
        fn perform(&mut self, output: Output) -> Option<Input<'static>> {
            match output {
                Output::Reply(bytes) => {
                    let code = std::str::from_utf8(bytes.get(..3).unwrap_or_default());
                    self.codes
                        .push(code.ok().and_then(|c| c.parse().ok()).unwrap_or(0));
                    None
                }
                Output::Audit(_) => None,
                Output::CheckRecipient(rcpt) => Some(Input::RcptChecked(if rcpt.token == "good" {
                    RcptOutcome::Accept {
                        challenge_id: "c".into(),
                    }
                } else {
                    RcptOutcome::Refuse(Reason::TokenUnknown)
                })),
                Output::Deliver(_) => Some(Input::Verdict(Box::new(Verdict {
                    decision: Decision::Accept,
                    ..Verdict::refuse(Reason::DkimFail)
                }))),
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

    #[test]
    fn answers_are_fed_back_in_order() {
        let text = include_str!("../../conf/gatekeeper.toml");
        let config = Config::from_toml_str(text, "conf").expect("shipped config");
        let rcpt = format!(
            "RCPT TO:<{}+good@{}>\r\n",
            config.confirm.local_prefix, config.confirm.domain
        );
        let mail = "MAIL FROM:<alice@example.gouv.fr>\r\n";
        let data = "DATA\r\nFrom: alice@example.gouv.fr\r\n\r\nhi\r\n.\r\n";
        let table: &[(&str, String, &[u16], bool)] = &[
            ("greeting only", String::new(), &[220], false),
            ("quit", "QUIT\r\n".into(), &[220, 221], true),
            (
                "rcpt answered by the performer",
                format!("EHLO x\r\n{mail}{rcpt}"),
                &[220, 250, 250, 250],
                false,
            ),
            (
                "verdict answered, then more pipelined commands",
                format!("EHLO x\r\n{mail}{rcpt}{data}NOOP\r\nQUIT\r\n"),
                &[220, 250, 250, 250, 354, 250, 250, 221],
                true,
            ),
        ];
        for (name, script, want, closed) in table {
            let settings = SessionSettings::from_config(&config, false);
            let info = SessionInfo {
                session_id: "t".into(),
                client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                client_port: 1,
                helo: None,
                tls_version: None,
            };
            let mut session = Session::new(Arc::new(settings), info);
            let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single();
            let now = now.unwrap_or_default();
            let mut io = Recorder::default();
            run(&mut session, Input::Connected, now, &mut io);
            run(&mut session, Input::Bytes(script.as_bytes()), now, &mut io);
            assert_eq!(&io.codes, want, "{name}");
            assert_eq!(io.closed, *closed, "{name}");
        }
    }
}
