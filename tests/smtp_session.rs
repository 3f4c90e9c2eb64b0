//! Transcript tests over the pure SMTP session (no sockets, no clock): every command, limit and
//! reason code the engine emits, the smuggling table, and every transcript fed again split at
//! every byte boundary with identical replies and audit events.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::net::{IpAddr, Ipv4Addr};

use gatekeeper::audit::{Action, Check};
use gatekeeper::reason::Reason;
use gatekeeper::smtp::{Input, Phase, SessionSettings, TimeoutKind};

use common::transcript::{GOOD, MAX_MESSAGE, T, greeted, message, settings};

#[test]
fn happy_path_one_command_per_write() {
    let mut t = greeted();
    t.send("MAIL FROM:<Alice@Interieur.gouv.fr>\r\n")
        .expect(250);
    t.send(format!("RCPT TO:<{GOOD}>\r\n")).expect(250);
    t.send("DATA\r\n").expect(354);
    assert_eq!(t.session.phase(), Phase::Data);
    t.send(message("hello\r\n..dot")).expect(250);
    assert_eq!(t.last, vec!["250 2.0.0 confirmed\r\n"]);
    t.send("QUIT\r\n").expect(221);
    assert!(t.record.closed);
    assert_eq!(
        t.record.delivered,
        vec![b"From: alice@interieur.gouv.fr\r\nSubject: re\r\n\r\nhello\r\n.dot\r\n".to_vec()]
    );
    let accepted = t.events.last().unwrap();
    assert_eq!(accepted.action, Action::ConfirmationAccepted);
    assert_eq!(accepted.reason, None);
    assert_eq!(accepted.reply_code, Some(250));
    assert_eq!(
        accepted.mail_from.as_deref(),
        Some("alice@interieur.gouv.fr")
    );
    assert_eq!(
        accepted.to.as_deref(),
        Some("confirm+[redacted]@verify.example.gouv.fr")
    );
    assert_eq!(accepted.challenge_id.as_deref(), Some("ch-good"));
    assert_eq!(accepted.helo.as_deref(), Some("smtp.interieur.gouv.fr"));
    assert_eq!(accepted.checks.len(), 1);
    t.same_when_split();
}

#[test]
fn pipelined_mail_rcpt_data_in_one_write() {
    let mut t = greeted();
    t.send(format!(
        "MAIL FROM:<alice@interieur.gouv.fr> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<{GOOD}>\r\nDATA\r\n"
    ))
    .expect_all(&[250, 250, 354]);
    t.send(format!("{}QUIT\r\n", message("x")))
        .expect_all(&[250, 221]);
    t.same_when_split();
}

#[test]
fn verdict_refusal_and_second_transaction() {
    let mut t = greeted();
    t.send(format!(
        "MAIL FROM:<alice@interieur.gouv.fr>\r\nRCPT TO:<{GOOD}>\r\nDATA\r\n"
    ));
    t.send(message("REFUSE-ME")).refused(Reason::DkimFail);
    let e = t.events.last().unwrap();
    assert_eq!(e.action, Action::ConfirmationRejected);
    assert_eq!(
        e.checks,
        vec![Check {
            name: "dkim",
            result: "fail".into()
        }]
    );
    assert_eq!(e.message_id.as_deref(), Some("m1@interieur.gouv.fr"));
    // The session is back to Greeted: a new transaction works.
    t.send(format!(
        "MAIL FROM:<alice@interieur.gouv.fr>\r\nRCPT TO:<{GOOD}>\r\nDATA\r\n"
    ))
    .expect_all(&[250, 250, 354]);
    t.send(message("ok")).expect(250);
    t.same_when_split();
}

#[test]
fn ehlo_keywords_exact() {
    let mut t = T::new();
    t.send("EHLO a.example\r\n");
    assert_eq!(
        t.last.concat(),
        "250-mx.verify.example.gouv.fr\r\n250-PIPELINING\r\n250-SIZE 4000\r\n250-8BITMIME\r\n\
         250 ENHANCEDSTATUSCODES\r\n"
    );
    let mut tls = T::with(SessionSettings {
        tls_offered: true,
        ..settings()
    });
    tls.send("ehlo a.example\r\n");
    let text = tls.last.concat();
    assert!(
        text.ends_with("250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n"),
        "{text}"
    );
    for absent in ["AUTH", "SMTPUTF8", "CHUNKING"] {
        assert!(!text.contains(absent));
    }
}

#[test]
fn helo_vrfy_expn_help_noop_rset() {
    let mut t = T::new();
    t.send("HELO mx.gouv.fr\r\n");
    assert_eq!(t.last, vec!["250 mx.verify.example.gouv.fr\r\n"]);
    t.send("VRFY alice\r\n").expect(252);
    t.send("EXPN staff\r\n").expect(502);
    let e = t.events.last().unwrap();
    assert_eq!(
        (e.reason, e.reply_code),
        (Some(Reason::SmtpUnknownCommand), Some(502))
    );
    t.send("HELP\r\n").expect(214);
    t.send("NOOP\r\n").expect(250);
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n")
        .expect(250);
    t.send("RSET\r\n").expect(250);
    // RSET ended the transaction: RCPT is out of sequence.
    t.send(format!("RCPT TO:<{GOOD}>\r\n"))
        .refused(Reason::SmtpBadSequence);
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n")
        .expect(250);
    // A second EHLO resets the transaction too.
    t.send("EHLO again.gouv.fr\r\n").expect(250);
    t.send("DATA\r\n").refused(Reason::SmtpBadSequence);
    t.same_when_split();
}

#[test]
fn unknown_and_unoffered_commands() {
    let mut t = T::with(SessionSettings {
        max_errors: 10,
        ..settings()
    });
    t.send("EHLO x.gouv.fr\r\n");
    t.send("BDAT 10 LAST\r\n")
        .refused(Reason::SmtpUnknownCommand);
    t.send("AUTH PLAIN AGFsaWNlAHg=\r\n")
        .refused(Reason::SmtpUnknownCommand);
    t.send("XYZZY\r\n").refused(Reason::SmtpUnknownCommand);
    t.send("STARTTLS\r\n").refused(Reason::SmtpUnknownCommand);
    t.send("DATA now\r\n").refused(Reason::SmtpSyntax);
    t.send("EHLO\r\n").refused(Reason::SmtpSyntax);
    assert!(!t.record.closed);
    t.same_when_split();
}

#[test]
fn bad_sequences() {
    let mut t = T::new();
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n")
        .refused(Reason::SmtpBadSequence);
    t.send("EHLO x.gouv.fr\r\n");
    t.send(format!("RCPT TO:<{GOOD}>\r\n"))
        .refused(Reason::SmtpBadSequence);
    t.send("DATA\r\n").refused(Reason::SmtpBadSequence);
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n")
        .expect(250);
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n")
        .refused(Reason::SmtpBadSequence);
    t.send("DATA\r\n").refused(Reason::SmtpBadSequence);
    t.same_when_split();
}

#[test]
fn mail_from_refusals() {
    let cases: &[(&str, Reason)] = &[
        ("<>", Reason::EnvelopeNullSender),
        ("<> SIZE=10", Reason::EnvelopeNullSender),
        ("alice@interieur.gouv.fr", Reason::EnvelopeSyntax),
        ("<alice@interieur.gouv.fr.>", Reason::EnvelopeSyntax),
        (
            "<alice%interieur.gouv.fr@evil.example>",
            Reason::EnvelopeSyntax,
        ),
        (
            "<@relay.gouv.fr:alice@interieur.gouv.fr>",
            Reason::EnvelopeSyntax,
        ),
        (
            "<attacker@evil.example> <alice@interieur.gouv.fr>",
            Reason::EnvelopeSyntax,
        ),
        (
            "<alice@interieur.gouv.fr> <bob@interieur.gouv.fr>",
            Reason::EnvelopeSyntax,
        ),
        ("<alice@interieur.gouv.fr> SMTPUTF8", Reason::EnvelopeSyntax),
        (
            "<alice@interieur.gouv.fr> SIZE=1 SIZE=1",
            Reason::EnvelopeSyntax,
        ),
        (
            "<alice@interieur.gouv.fr> BODY=BINARYMIME",
            Reason::EnvelopeSyntax,
        ),
        ("<alice@interieur.gouv.fr> AUTH=<>", Reason::EnvelopeSyntax),
        // One SP after the colon is tolerated: what follows is judged as the path.
        (" <alice@interieur.gouv.fr.>", Reason::EnvelopeSyntax),
        (" alice@interieur.gouv.fr", Reason::EnvelopeSyntax),
        ("<alice @interieur.gouv.fr>", Reason::EnvelopeSyntax),
        ("<attacker@evil.example>", Reason::DomainNotAllowed),
        ("<alice@evilgouv.fr>", Reason::DomainNotAllowed),
        ("<alice@denied.gouv.fr>", Reason::DomainNotAllowed),
        ("<alice@x.denied.gouv.fr>", Reason::DomainNotAllowed),
        (
            "<alice@interieur.gouv.fr> SIZE=4001",
            Reason::MessageTooLarge,
        ),
        (
            "<alice@interieur.gouv.fr> SIZE=99999999999999999999",
            Reason::MessageTooLarge,
        ),
    ];
    for (arg, reason) in cases {
        let mut t = greeted();
        t.send(format!("MAIL FROM:{arg}\r\n")).refused(*reason);
        // The refused MAIL leaves no transaction: RCPT gets 503.
        t.send(format!("RCPT TO:<{GOOD}>\r\n"))
            .refused(Reason::SmtpBadSequence);
        assert_eq!(
            t.events.first().unwrap().mail_from.as_deref(),
            // The tolerated SP is not part of the path.
            Some(arg.strip_prefix(' ').unwrap_or(arg)),
            "{arg}"
        );
    }
    let mut t = greeted();
    t.send("MAIL FROM:<alice@interieur.gouv.fr> SIZE=4000 body=7bit\r\n")
        .expect(250);
    t.send("mail from:<alice@interieur.gouv.fr>\r\n")
        .refused(Reason::SmtpBadSequence);
    t.send("MAIL TO:<alice@interieur.gouv.fr>\r\n")
        .refused(Reason::SmtpSyntax);
}

/// `MAIL FROM: <addr>`: one SP after the colon is tolerated (Postfix's default); any other
/// whitespace there is the command's shape, `smtp.syntax` (501), and never
/// `envelope.syntax`; the address inside the brackets stays strict.
#[test]
fn mail_from_space_after_colon() {
    let rows: &[(&str, Result<u16, Reason>)] = &[
        ("MAIL FROM: <alice@interieur.gouv.fr>", Ok(250)),
        ("MAIL FROM: <alice@interieur.gouv.fr> SIZE=10", Ok(250)),
        ("mail from: <Alice@Interieur.Gouv.Fr>", Ok(250)),
        (
            "MAIL FROM:  <alice@interieur.gouv.fr>",
            Err(Reason::SmtpSyntax),
        ),
        (
            "MAIL FROM:\t<alice@interieur.gouv.fr>",
            Err(Reason::SmtpSyntax),
        ),
        (
            "MAIL FROM: \t<alice@interieur.gouv.fr>",
            Err(Reason::SmtpSyntax),
        ),
        (
            "MAIL FROM :<alice@interieur.gouv.fr>",
            Err(Reason::SmtpSyntax),
        ),
        (
            "MAIL FROM: <alice @interieur.gouv.fr>",
            Err(Reason::EnvelopeSyntax),
        ),
        (
            "MAIL FROM: <a@b@interieur.gouv.fr>",
            Err(Reason::EnvelopeSyntax),
        ),
        ("MAIL FROM: <>", Err(Reason::EnvelopeNullSender)),
    ];
    for (line, want) in rows {
        let mut t = greeted();
        match want {
            Ok(code) => {
                t.send(format!("{line}\r\n")).expect(*code);
            }
            Err(reason) => {
                t.send(format!("{line}\r\n")).refused(*reason);
            }
        }
    }
}

#[test]
fn rcpt_refusals_never_relay() {
    let cases = [
        "<alice@interieur.gouv.fr>",
        "<confirm+good@other.example.gouv.fr>",
        "<confirm+good@verify.example.gouv.fr.>",
        "<confirm@verify.example.gouv.fr>",
        "<confirm+@verify.example.gouv.fr>",
        "<confirm+go0d@verify.example.gouv.fr>",
        "<confirmgood@verify.example.gouv.fr>",
        "<other+good@verify.example.gouv.fr>",
        "<confirm+good@verify.example.gouv.fr> NOTIFY=NEVER",
        "confirm+good@verify.example.gouv.fr",
        "<@a.gouv.fr:confirm+good@verify.example.gouv.fr>",
        "<\"confirm+good\"@verify.example.gouv.fr>",
    ];
    for arg in cases {
        let mut t = greeted();
        t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n")
            .expect(250);
        t.send(format!("RCPT TO:{arg}\r\n"))
            .refused(Reason::RcptUnknown);
        assert_eq!(t.record.delivered.len(), 0);
    }
    // Canonicalisation: upper-case token and domain are the same address.
    let mut t = greeted();
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n");
    t.send("RCPT TO:<Confirm+GOOD@Verify.Example.Gouv.Fr>\r\n")
        .expect(250);
}

#[test]
fn token_refusals_from_backend() {
    let mut t = greeted();
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n");
    t.send("RCPT TO:<confirm+nosuch@verify.example.gouv.fr>\r\n")
        .refused(Reason::TokenUnknown);
    t.send("RCPT TO:<confirm+used@verify.example.gouv.fr>\r\n")
        .refused(Reason::TokenUsed);
    t.send("RCPT TO:<confirm+down@verify.example.gouv.fr>\r\n")
        .refused(Reason::StoreUnavailable);
    assert_eq!(
        t.events.last().unwrap().action,
        Action::ConfirmationDeferred
    );
    t.send("DATA\r\n").refused(Reason::SmtpBadSequence);
    t.send(format!("RCPT TO:<{GOOD}>\r\n")).expect(250);
    t.send("DATA\r\n").expect(354);
    t.same_when_split();
}

#[test]
fn second_confirmation_recipient_is_452() {
    let mut t = greeted();
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n");
    t.send(format!("RCPT TO:<{GOOD}>\r\n")).expect(250);
    t.send("RCPT TO:<confirm+other@verify.example.gouv.fr>\r\n")
        .refused(Reason::RcptTooMany);
    t.send("RCPT TO:<alice@interieur.gouv.fr>\r\n")
        .refused(Reason::RcptUnknown);
    t.send("DATA\r\n").expect(354);
    t.send(message("only the first")).expect(250);
    assert_eq!(
        t.events.last().unwrap().challenge_id.as_deref(),
        Some("ch-good")
    );
    t.same_when_split();
}

#[test]
fn commands_after_refused_mail_get_503_and_one_error() {
    // SMTP-08 of the corpus, pipelined.
    let mut t = T::with(SessionSettings {
        max_errors: 2,
        ..settings()
    });
    t.send("EHLO mail.evil.example\r\n");
    t.send(format!(
        "MAIL FROM:<attacker@evil.example>\r\nRCPT TO:<{GOOD}>\r\nDATA\r\n"
    ))
    .expect_all(&[550, 503, 503]);
    assert!(!t.record.closed, "the cascade counts as one error");
    assert_eq!(
        t.reasons(),
        vec![
            Reason::DomainNotAllowed,
            Reason::SmtpBadSequence,
            Reason::SmtpBadSequence
        ]
    );
    t.same_when_split();
}

#[test]
fn command_line_limit_512() {
    let mut t = greeted();
    // "NOOP " + pad + CRLF = 512 octets exactly.
    let ok = format!("NOOP {}\r\n", "x".repeat(512 - 7));
    assert_eq!(ok.len(), 512);
    t.send(&ok).expect(250);
    let long = format!("NOOP {}\r\n", "x".repeat(512 - 6));
    t.send(&long).refused(Reason::SmtpLineTooLong);
    // Drained: the session is in step.
    t.send("NOOP\r\n").expect(250);
    // A very long line split over many writes is answered once, at its end.
    t.send("x".repeat(3000)).expect_all(&[]);
    t.send("yyy\r\nNOOP\r\n").expect_all(&[500, 250]);
    t.same_when_split();
}

#[test]
fn bare_lf_cr_nul_in_commands() {
    let mut t = greeted();
    // SMTP-05: never executed as MAIL then RCPT.
    t.send(format!(
        "MAIL FROM:<alice@interieur.gouv.fr>\nRCPT TO:<{GOOD}>\r\n"
    ))
    .refused(Reason::SmtpBareLf);
    t.send("DATA\r\n").refused(Reason::SmtpBadSequence);
    t.send("NOOP\rMAIL FROM:<alice@interieur.gouv.fr>\r\n")
        .refused(Reason::SmtpBareCr);
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\0\r\n")
        .refused(Reason::SmtpNul);
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n")
        .expect(250);
    t.same_when_split();
}

/// The smuggling table: each variant never ends DATA, the whole message is refused with its
/// reason after the true end, and the smuggled transaction never reaches Deliver.
#[test]
fn smuggling_table() {
    let variants: &[(&str, Reason)] = &[
        ("\n.\n", Reason::SmtpBareLf),
        ("\n.\r\n", Reason::SmtpBareLf),
        ("\r.\r", Reason::SmtpBareCr),
        ("\r.\r\n", Reason::SmtpBareCr),
        ("\r\n\0.\r\n", Reason::SmtpNul),
        ("\n.\r", Reason::SmtpBareLf),
        ("\r.\n", Reason::SmtpBareCr),
    ];
    for (seq, reason) in variants {
        let mut t = T::with(SessionSettings {
            max_errors: 10,
            ..settings()
        });
        t.send("EHLO mail.evil.example\r\n");
        t.send(format!(
            "MAIL FROM:<mallory@ville.gouv.fr>\r\nRCPT TO:<{GOOD}>\r\nDATA\r\n"
        ))
        .expect_all(&[250, 250, 354]);
        let smuggled = format!(
            "From: mallory@ville.gouv.fr\r\n\r\nhi{seq}MAIL FROM:<alice@interieur.gouv.fr>\r\n\
             RCPT TO:<{GOOD}>\r\nDATA\r\nFrom: alice@interieur.gouv.fr\r\n\r\nforged\r\n"
        );
        t.send(&smuggled).expect_all(&[]);
        assert_eq!(t.session.phase(), Phase::Data, "{seq:?} ended DATA");
        t.send(".\r\n").refused(*reason);
        assert!(
            t.record.delivered.is_empty(),
            "{seq:?}: something was delivered"
        );
        // In step: the next command is a command.
        t.send("NOOP\r\n").expect(250);
        t.same_when_split();
    }
}

#[test]
fn text_line_limit_1000() {
    let mut t = greeted();
    let start = format!("MAIL FROM:<alice@interieur.gouv.fr>\r\nRCPT TO:<{GOOD}>\r\nDATA\r\n");
    t.send(&start);
    t.send(format!("{}\r\n.\r\n", "a".repeat(998))).expect(250);
    t.send(&start);
    // The stuffing dot does not count.
    t.send(format!(".{}\r\n.\r\n", ".".repeat(998))).expect(250);
    t.send(&start);
    t.send(format!("{}\r\nmore\r\n.\r\n", "a".repeat(999)))
        .refused(Reason::SmtpLineTooLong);
    assert_eq!(t.record.delivered.len(), 2);
    t.send("NOOP\r\n").expect(250);
}

#[test]
fn message_size_at_and_over() {
    let mut t = greeted();
    let start = format!("MAIL FROM:<alice@interieur.gouv.fr>\r\nRCPT TO:<{GOOD}>\r\nDATA\r\n");
    // MAX_MESSAGE octets of lines of 100 (98 + CRLF).
    let at = format!("{}\r\n", "b".repeat(98)).repeat(MAX_MESSAGE / 100);
    t.send(&start);
    t.send(format!("{at}.\r\n")).expect(250);
    assert_eq!(t.record.delivered[0].len(), MAX_MESSAGE);
    t.send(&start);
    t.send(format!("{at}x\r\n.\r\n"))
        .refused(Reason::MessageTooLarge);
    t.send(&start);
    // Far over: drained to the true end, then refused, memory bounded.
    for _ in 0..20 {
        t.send(&at).expect_all(&[]);
    }
    t.send(".\r\nNOOP\r\n").expect_all(&[552, 250]);
    assert_eq!(t.record.delivered.len(), 1);
}

#[test]
fn max_errors_closes_with_421() {
    let mut t = T::with(SessionSettings {
        max_errors: 3,
        ..settings()
    });
    t.send("EHLO x.gouv.fr\r\n");
    t.send("FOO\r\n").refused(Reason::SmtpUnknownCommand);
    t.send("BAR\r\n").refused(Reason::SmtpUnknownCommand);
    t.send("BAZ\r\nNOOP\r\n").expect_all(&[500, 421]);
    assert_eq!(
        t.events.last().unwrap().reason,
        Some(Reason::SmtpTooManyErrors)
    );
    assert!(t.record.closed);
    t.send("NOOP\r\n").expect_all(&[]);
    t.same_when_split();
}

#[test]
fn max_transactions() {
    let mut t = greeted();
    let tx = format!(
        "MAIL FROM:<alice@interieur.gouv.fr>\r\nRCPT TO:<{GOOD}>\r\nDATA\r\n{}",
        message("m")
    );
    for _ in 0..3 {
        t.send(&tx).expect_all(&[250, 250, 354, 250]);
    }
    t.send(&tx).expect(421);
    assert_eq!(
        t.events.last().unwrap().reason,
        Some(Reason::SmtpTooManyTransactions)
    );
    assert!(t.record.closed);
    t.same_when_split();
}

#[test]
fn tls_required_before_mail() {
    let mut t = T::with(SessionSettings {
        tls_offered: true,
        tls_required: true,
        ..settings()
    });
    t.send("EHLO x.gouv.fr\r\n");
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n")
        .refused(Reason::TlsRequired);
    t.send("STARTTLS\r\n").expect(220);
    assert!(t.record.starttls);
    t.feed(Input::TlsEstablished {
        version: "1.3".into(),
    });
    // RFC 3207: the session starts over; MAIL before EHLO is out of sequence.
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n")
        .refused(Reason::SmtpBadSequence);
    t.send("EHLO x.gouv.fr\r\n");
    assert!(
        !t.last.concat().contains("STARTTLS"),
        "STARTTLS offered again inside TLS"
    );
    t.send("STARTTLS\r\n").refused(Reason::SmtpUnknownCommand);
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n")
        .expect(250);
    t.send(format!("RCPT TO:<{GOOD}>\r\nDATA\r\n{}", message("tls")))
        .expect_all(&[250, 354, 250]);
    assert_eq!(t.events.last().unwrap().tls_version.as_deref(), Some("1.3"));
}

#[test]
fn starttls_pipelining_injection() {
    // CVE-2011-0411 style: a command injected after STARTTLS in the same write.
    let mut t = T::with(SessionSettings {
        tls_offered: true,
        ..settings()
    });
    t.send("EHLO x.gouv.fr\r\n");
    t.send("STARTTLS\r\nMAIL FROM:<alice@interieur.gouv.fr>\r\n")
        .refused(Reason::SmtpPipelinedStarttls);
    assert!(t.record.closed);
    assert!(!t.record.starttls);
    // Bytes arriving after the 220 but before the handshake: refused too.
    let mut t = T::with(SessionSettings {
        tls_offered: true,
        ..settings()
    });
    t.send("EHLO x.gouv.fr\r\n");
    t.send("STARTTLS\r\n").expect(220);
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n")
        .refused(Reason::SmtpPipelinedStarttls);
    assert!(t.record.closed);
    // STARTTLS before EHLO and inside a transaction.
    let mut t = T::with(SessionSettings {
        tls_offered: true,
        ..settings()
    });
    t.send("STARTTLS\r\n").refused(Reason::SmtpBadSequence);
    t.send("EHLO x.gouv.fr\r\nMAIL FROM:<alice@interieur.gouv.fr>\r\n");
    t.send("STARTTLS\r\n").refused(Reason::SmtpBadSequence);
    t.send("STARTTLS x\r\n").refused(Reason::SmtpSyntax);
}

#[test]
fn timeouts_and_shutdown() {
    let mut t = greeted();
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n");
    t.feed(Input::Timeout(TimeoutKind::Command));
    t.refused(Reason::SmtpTimeout);
    assert!(t.record.closed);
    assert_eq!(
        t.events.last().unwrap().message.as_deref(),
        Some("command timeout")
    );

    let mut t = greeted();
    assert!(t.session.is_idle());
    t.send("NOOP");
    assert!(!t.session.is_idle(), "half a command is not idle");
    t.feed(Input::Shutdown);
    t.refused(Reason::SmtpShutdown);
    assert!(t.session.is_closed());
}

#[test]
fn audit_fields_of_a_refusal() {
    let mut t = greeted();
    t.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n");
    t.send("RCPT TO:<confirm+nosuch@verify.example.gouv.fr>\r\n")
        .refused(Reason::TokenUnknown);
    let e = t.events.last().unwrap();
    assert_eq!(e.session_id, "s-1");
    assert_eq!(e.source_ip, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 25))));
    assert_eq!(e.source_port, Some(40000));
    assert_eq!(e.mail_from.as_deref(), Some("alice@interieur.gouv.fr"));
    assert_eq!(
        e.to.as_deref(),
        Some("confirm+[redacted]@verify.example.gouv.fr")
    );
    assert_eq!(e.action, Action::ConfirmationRejected);
    for event in &t.events {
        for field in [&event.to, &event.mail_from, &event.message] {
            assert!(
                !field.as_deref().unwrap_or("").contains("nosuch"),
                "token leaked"
            );
        }
    }
}

/// Every reason code the engine can emit, triggered at least once.
#[test]
fn every_engine_reason_is_triggered() {
    let engine_reasons = [
        Reason::EnvelopeSyntax,
        Reason::EnvelopeNullSender,
        Reason::DomainNotAllowed,
        Reason::TlsRequired,
        Reason::RcptUnknown,
        Reason::RcptTooMany,
        Reason::SmtpBareLf,
        Reason::SmtpBareCr,
        Reason::SmtpNul,
        Reason::SmtpPipelinedStarttls,
        Reason::SmtpSyntax,
        Reason::SmtpUnknownCommand,
        Reason::SmtpBadSequence,
        Reason::SmtpLineTooLong,
        Reason::SmtpTooManyErrors,
        Reason::SmtpTooManyTransactions,
        Reason::SmtpTimeout,
        Reason::SmtpShutdown,
        Reason::MessageTooLarge,
    ];
    let mut seen = std::collections::HashSet::new();
    let mut run = |settings: SessionSettings, script: &[&str], extra: Option<Input<'static>>| {
        let mut t = T::with(settings);
        for s in script {
            t.send(s);
        }
        if let Some(input) = extra {
            t.feed(input);
        }
        seen.extend(t.reasons());
    };
    let tx = format!("MAIL FROM:<alice@interieur.gouv.fr>\r\nRCPT TO:<{GOOD}>\r\n");
    run(
        settings(),
        &[
            "EHLO a.fr\r\n",
            "MAIL FROM:a\r\n",
            "MAIL FROM:<>\r\n",
            "MAIL FROM:<a@evil.example>\r\n",
        ],
        None,
    );
    run(
        settings(),
        &[
            "EHLO a.fr\r\n",
            &tx,
            "RCPT TO:<x@y.fr>\r\n",
            &format!("RCPT TO:<{GOOD}>\r\n"),
        ],
        None,
    );
    run(
        settings(),
        &["EHLO a.fr\r\n", "MAIL FROM:<a@gouv.fr> SIZE=9999999\r\n"],
        None,
    );
    let big = format!("{tx}DATA\r\n{}\r\n.\r\n", "x".repeat(MAX_MESSAGE + 1));
    run(
        SessionSettings {
            max_errors: 100,
            ..settings()
        },
        &[
            "EHLO a.fr\r\n",
            &big,
            "a\nb\r\n",
            "a\rb\r\n",
            "\0\r\n",
            "EHLO\r\n",
            "FOO\r\n",
            "DATA\r\n",
            &"x".repeat(600),
            "\r\n",
        ],
        None,
    );
    run(
        SessionSettings {
            tls_offered: true,
            tls_required: true,
            ..settings()
        },
        &[
            "EHLO a.fr\r\n",
            "MAIL FROM:<a@gouv.fr>\r\n",
            "STARTTLS\r\nNOOP\r\n",
        ],
        None,
    );
    run(
        SessionSettings {
            max_errors: 1,
            ..settings()
        },
        &["FOO\r\n"],
        None,
    );
    run(
        SessionSettings {
            max_transactions: 0,
            ..settings()
        },
        &["EHLO a.fr\r\n", "MAIL FROM:<a@gouv.fr>\r\n"],
        None,
    );
    run(settings(), &[], Some(Input::Timeout(TimeoutKind::Data)));
    run(settings(), &[], Some(Input::Shutdown));
    for r in engine_reasons {
        assert!(seen.contains(&r), "{} never triggered", r.as_str());
    }
}

/// A deterministic random walk over SMTP-shaped fragments (the fuzz target's idea, bounded so
/// it runs in every test run): no panic, every refusal audited (checked by the helper), and
/// never a delivery of more than the size limit.
#[test]
fn random_fragments_never_panic() {
    const FRAGMENTS: &[&str] = &[
        "EHLO a.gouv.fr",
        "HELO x",
        "MAIL FROM:<alice@interieur.gouv.fr>",
        "MAIL FROM:<>",
        "RCPT TO:<confirm+good@verify.example.gouv.fr>",
        "RCPT TO:<confirm+x@verify.example.gouv.fr>",
        "DATA",
        "RSET",
        "NOOP",
        "STARTTLS",
        "VRFY a",
        "EXPN a",
        "BDAT 1",
        " SIZE=5000",
        "\r\n",
        "\n",
        "\r",
        ".",
        "\0",
        "..",
        "From: a@b.fr",
        "\r\n.\r\n",
        "\u{e9}",
        "<",
        ">",
        ":",
    ];
    let base = settings();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..1500 {
        let mut t = T::with(SessionSettings {
            tls_offered: next() % 2 == 0,
            tls_required: next() % 3 == 0,
            max_errors: (next() % 8 + 1) as u32,
            ..base.clone()
        });
        let len = next() % 40;
        let input: String = (0..len)
            .map(|_| FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize])
            .collect();
        let cut = (next() % (input.len() as u64 + 1)) as usize;
        let (a, b) = input.as_bytes().split_at(cut);
        t.send(a);
        t.send(b);
        t.feed(Input::Timeout(TimeoutKind::Data));
        assert!(t.record.closed);
        assert!(t.record.delivered.iter().all(|m| m.len() <= MAX_MESSAGE));
    }
}
