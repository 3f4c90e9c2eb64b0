//! Reason codes: the closed set of stable names every refusal carries (SPEC §4), and the one
//! table that maps each to its SMTP reply. No reply code or enhanced status code is written
//! anywhere else in the crate.
//!
//! Enhanced status codes follow RFC 3463, with the authentication codes of RFC 7372
//! (X.7.20 DKIM, X.7.21 DKIM alignment, X.7.23 SPF, X.7.25 reverse DNS).

use std::fmt;
use std::str::FromStr;

mod explain;

pub use explain::Explanation;

/// Every stable reason code of the product. The string form (`as_str`) is public interface:
/// it appears in SMTP replies, audit events, API errors and the CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    // connect
    ConnLimit,
    ClientNetwork,
    // MAIL
    EnvelopeSyntax,
    EnvelopeNullSender,
    DomainNotAllowed,
    TlsRequired,
    // RCPT
    RcptUnknown,
    TokenUnknown,
    TokenExpired,
    TokenUsed,
    RcptTooMany,
    // any stage: protocol
    SmtpBareLf,
    SmtpBareCr,
    SmtpNul,
    SmtpPipelinedStarttls,
    SmtpSyntax,
    SmtpUnknownCommand,
    SmtpBadSequence,
    SmtpLineTooLong,
    SmtpTooManyErrors,
    /// `smtp.max_transactions` MAIL transactions already ran in this session.
    SmtpTooManyTransactions,
    SmtpTimeout,
    /// The daemon is shutting down and the session was not finished within the grace period.
    SmtpShutdown,
    /// `smtp.max_buffered_bytes`: the messages being received already hold the memory budget.
    SmtpBusy,
    // DATA: message and headers
    MessageTooLarge,
    HeaderMalformed,
    HeaderFromCount,
    HeaderFromSyntax,
    HeaderDuplicate,
    HeaderSenderMismatch,
    HeaderResent,
    EnvelopeMismatch,
    // DATA: SPF
    SpfFail,
    SpfSoftfail,
    SpfNeutral,
    SpfNone,
    SpfPermerror,
    // DATA: DKIM
    DkimNone,
    DkimFail,
    DkimUnaligned,
    DkimWeak,
    DkimTesting,
    DkimPartial,
    DkimFromUnsigned,
    // DATA: reverse DNS, freshness, binding
    IprevFail,
    DateStale,
    BindingMismatch,
    BindingTokenUnsigned,
    BindingNotAReply,
    BindingSessionCode,
    MessageAutoSubmitted,
    MessageReport,
    // temporary
    DnsTemperror,
    SpfTemperror,
    DkimTemperror,
    StoreUnavailable,
    // API-only
    ChallengeRateLimited,
    OutboundUnavailable,
}

/// Whether a refusal is final or the client should retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// 4xx: a fault on our side or the DNS; the sender retries.
    Temporary,
    /// 5xx: the message can never be accepted as it is.
    Permanent,
}

/// One SMTP reply line: basic code, RFC 3463 enhanced code and a short fixed text.
/// The text never carries peer bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: &'static str,
}

impl Reply {
    pub const fn new(code: u16, enhanced: &'static str, text: &'static str) -> Self {
        Self {
            code,
            enhanced,
            text,
        }
    }

    /// The class of the reply: 4xx temporary, everything else permanent.
    pub fn class(&self) -> Class {
        if (400..500).contains(&self.code) {
            Class::Temporary
        } else {
            Class::Permanent
        }
    }
}

macro_rules! reasons {
    ($( $variant:ident => $name:literal, $code:literal, $enh:literal, $text:literal; )*) => {
        impl Reason {
            /// Every reason code, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            /// The stable reason code, e.g. `envelope.syntax`.
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $name),* }
            }

            /// The SMTP reply sent for this reason (SPEC §4).
            pub fn reply(self) -> Reply {
                match self { $(Reason::$variant => Reply::new($code, $enh, $text)),* }
            }
        }

        impl FromStr for Reason {
            type Err = UnknownReason;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s { $($name => Ok(Reason::$variant),)* _ => Err(UnknownReason) }
            }
        }
    };
}

reasons! {
    ConnLimit => "conn.limit", 421, "4.7.0", "too many connections, try again later";
    ClientNetwork => "client.network", 550, "5.7.1", "client network not allowed";
    EnvelopeSyntax => "envelope.syntax", 553, "5.1.7", "sender address refused: not a strict address";
    EnvelopeNullSender => "envelope.null_sender", 550, "5.7.1", "null sender cannot confirm";
    DomainNotAllowed => "domain.not_allowed", 550, "5.7.1", "sender domain not allowed";
    TlsRequired => "tls.required", 530, "5.7.0", "must issue a STARTTLS command first";
    RcptUnknown => "rcpt.unknown", 550, "5.1.1", "no such recipient, relaying denied";
    TokenUnknown => "token.unknown", 550, "5.1.1", "unknown confirmation address";
    TokenExpired => "token.expired", 550, "5.7.1", "confirmation address expired";
    TokenUsed => "token.used", 550, "5.7.1", "confirmation address already used";
    RcptTooMany => "rcpt.too_many", 452, "4.5.3", "only one confirmation recipient per message";
    SmtpBareLf => "smtp.bare_lf", 554, "5.5.2", "bare LF not allowed, lines end with CRLF";
    SmtpBareCr => "smtp.bare_cr", 554, "5.5.2", "bare CR not allowed, lines end with CRLF";
    SmtpNul => "smtp.nul", 554, "5.5.2", "NUL octet not allowed";
    SmtpPipelinedStarttls => "smtp.pipelined_starttls", 554, "5.5.1", "data pipelined after STARTTLS";
    SmtpSyntax => "smtp.syntax", 501, "5.5.2", "syntax error";
    SmtpUnknownCommand => "smtp.unknown_command", 500, "5.5.1", "command not recognized";
    SmtpBadSequence => "smtp.bad_sequence", 503, "5.5.1", "bad sequence of commands";
    SmtpLineTooLong => "smtp.line_too_long", 500, "5.5.6", "line too long";
    SmtpTooManyErrors => "smtp.too_many_errors", 421, "4.7.0", "too many errors, closing connection";
    SmtpTooManyTransactions => "smtp.too_many_transactions", 421, "4.7.0", "too many transactions, closing connection";
    SmtpTimeout => "smtp.timeout", 421, "4.4.2", "timeout, closing connection";
    SmtpShutdown => "smtp.shutdown", 421, "4.3.0", "service shutting down, try again later";
    SmtpBusy => "smtp.busy", 452, "4.3.1", "too many messages in progress, try again later";
    MessageTooLarge => "message.too_large", 552, "5.3.4", "message too large";
    HeaderMalformed => "header.malformed", 550, "5.6.0", "malformed header block";
    HeaderFromCount => "header.from_count", 550, "5.7.1", "exactly one From header required";
    HeaderFromSyntax => "header.from_syntax", 550, "5.7.1", "From must be exactly one strict mailbox";
    HeaderDuplicate => "header.duplicate", 550, "5.7.1", "duplicate single-instance header";
    HeaderSenderMismatch => "header.sender_mismatch", 550, "5.7.1", "Sender differs from From";
    HeaderResent => "header.resent", 550, "5.7.1", "forwarded mail cannot confirm";
    EnvelopeMismatch => "envelope.mismatch", 550, "5.7.1", "envelope sender differs from From";
    SpfFail => "spf.fail", 550, "5.7.23", "SPF check failed";
    SpfSoftfail => "spf.softfail", 550, "5.7.23", "SPF check soft-failed";
    SpfNeutral => "spf.neutral", 550, "5.7.23", "SPF result neutral, pass required";
    SpfNone => "spf.none", 550, "5.7.23", "no SPF record, pass required";
    SpfPermerror => "spf.permerror", 550, "5.7.23", "SPF record error";
    DkimNone => "dkim.none", 550, "5.7.20", "no DKIM signature";
    DkimFail => "dkim.fail", 550, "5.7.20", "no valid DKIM signature";
    DkimUnaligned => "dkim.unaligned", 550, "5.7.21", "no DKIM signature aligned with From";
    DkimWeak => "dkim.weak", 550, "5.7.20", "DKIM signature too weak";
    DkimTesting => "dkim.testing", 550, "5.7.20", "DKIM key in testing mode";
    DkimPartial => "dkim.partial", 550, "5.7.20", "DKIM signature covers part of the body";
    DkimFromUnsigned => "dkim.from_unsigned", 550, "5.7.20", "DKIM signature does not cover From";
    IprevFail => "iprev.fail", 550, "5.7.25", "reverse DNS does not confirm the client";
    DateStale => "date.stale", 550, "5.7.1", "message date out of range";
    BindingMismatch => "binding.mismatch", 550, "5.7.1", "sender is not the address being confirmed";
    BindingTokenUnsigned => "binding.token_unsigned", 550, "5.7.1", "confirmation address not in signed content";
    BindingNotAReply => "binding.not_a_reply", 550, "5.7.1", "not a reply to the challenge";
    BindingSessionCode => "binding.session_code", 550, "5.7.1", "session code missing";
    MessageAutoSubmitted => "message.auto_submitted", 550, "5.7.1", "automatic replies cannot confirm";
    MessageReport => "message.report", 550, "5.7.1", "reports cannot confirm";
    DnsTemperror => "dns.temperror", 451, "4.4.3", "DNS temporary failure, try again later";
    SpfTemperror => "spf.temperror", 451, "4.4.3", "SPF temporary failure, try again later";
    DkimTemperror => "dkim.temperror", 451, "4.4.3", "DKIM temporary failure, try again later";
    StoreUnavailable => "store.unavailable", 451, "4.3.0", "temporary local failure, try again later";
    ChallengeRateLimited => "challenge.rate_limited", 450, "4.7.1", "too many challenges for this address";
    OutboundUnavailable => "outbound.unavailable", 451, "4.3.0", "challenge mail could not be sent";
}

impl Reason {
    /// Temporary (4xx) or permanent (5xx).
    pub fn class(self) -> Class {
        self.reply().class()
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a known reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown reason code")]
pub struct UnknownReason;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.as_str()), "duplicate {}", r.as_str());
            assert_eq!(r.as_str().parse::<Reason>(), Ok(*r));
        }
        assert_eq!("no.such".parse::<Reason>(), Err(UnknownReason));
    }

    #[test]
    fn enhanced_code_class_matches_basic_code() {
        for r in Reason::ALL {
            let reply = r.reply();
            let first = reply.enhanced.as_bytes().first().copied();
            let expected = if reply.code < 500 { b'4' } else { b'5' };
            assert_eq!(first, Some(expected), "{}", r.as_str());
            assert!((400..600).contains(&reply.code), "{}", r.as_str());
        }
    }

    /// The README's table of reason codes is the operators' reference: it must list every code
    /// with the reply this table sends.
    #[test]
    fn readme_lists_every_reason_with_its_reply() {
        let readme = include_str!("../README.md");
        for r in Reason::ALL {
            let reply = r.reply();
            let row = format!(
                "| `{}` | `{} {} {}` |",
                r.as_str(),
                reply.code,
                reply.enhanced,
                reply.text
            );
            assert!(readme.contains(&row), "README lacks: {row}");
        }
    }

    #[test]
    fn spec_table_rows() {
        let rows: &[(&str, u16, &str)] = &[
            ("conn.limit", 421, "4.7.0"),
            ("envelope.syntax", 553, "5.1.7"),
            ("tls.required", 530, "5.7.0"),
            ("rcpt.too_many", 452, "4.5.3"),
            ("smtp.too_many_errors", 421, "4.7.0"),
            ("smtp.timeout", 421, "4.4.2"),
            ("message.too_large", 552, "5.3.4"),
            ("header.malformed", 550, "5.6.0"),
            ("spf.softfail", 550, "5.7.23"),
            ("dkim.unaligned", 550, "5.7.21"),
            ("iprev.fail", 550, "5.7.25"),
            ("dns.temperror", 451, "4.4.3"),
            ("store.unavailable", 451, "4.3.0"),
            ("smtp.busy", 452, "4.3.1"),
        ];
        for (name, code, enh) in rows {
            let reply = name.parse::<Reason>().map(Reason::reply);
            assert_eq!(
                reply.map(|r| (r.code, r.enhanced)),
                Ok((*code, *enh)),
                "{name}"
            );
        }
    }
}
