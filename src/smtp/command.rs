//! SMTP commands and their parser (RFC 5321 §4.1). Pure.
//!
//! Parsing is in two steps so that the session can answer in the order RFC 5321 expects
//! (sequence first, then argument syntax): [`Command::parse`] recognises the verb and the
//! shape of the line; [`parse_mail_from`] and [`parse_rcpt_to`] parse a MAIL / RCPT argument
//! once the session knows the command is in sequence. The inside of `<...>` always goes to
//! [`Mailbox::parse`], the one strict parser (SPEC I2): nothing here splits an address.
//!
//! Decisions the SPEC leaves open:
//! - Verbs are case-insensitive; the separator is exactly one SP. `MAIL FROM:` / `RCPT TO:`
//!   may be followed by one SP before the path (RFC 5321 forbids it; Postfix tolerates it by
//!   default); any other whitespace there is `smtp.syntax` (the command's shape is wrong, not
//!   the address).
//! - Every refusal of a MAIL argument (path *or* parameters, including an unknown or
//!   unadvertised parameter such as `SMTPUTF8`, or a second path) is `envelope.syntax`
//!   (553 5.1.7): one stable reason for "not a strict MAIL FROM", rather than 555.
//! - Every RCPT argument that is not exactly `<prefix+token@confirm.domain>` (parameters
//!   included: none is offered) is `rcpt.unknown` (550 5.1.1): we never relay.
//! - AUTH and BDAT are not offered: `smtp.unknown_command` (500), as SPEC §4 says of
//!   "unoffered" commands.

use crate::address::{Domain, Envelope, EnvelopeTag, Mailbox, ParseOptions};
use crate::backend::Recipient;
use crate::reason::Reason;

/// One parsed command line.
///
/// ```text
/// ehlo = "EHLO" SP ( Domain / address-literal ) CRLF      ; RFC 5321 §4.1.1.1
/// helo = "HELO" SP Domain CRLF
/// mail = "MAIL FROM:" Reverse-path [SP Mail-parameters] CRLF   ; §4.1.1.2
/// rcpt = "RCPT TO:" Forward-path [SP Rcpt-parameters] CRLF      ; §4.1.1.3
/// data = "DATA" CRLF    rset = "RSET" CRLF    quit = "QUIT" CRLF
/// vrfy = "VRFY" SP String CRLF    expn = "EXPN" SP String CRLF
/// help = "HELP" [ SP String ] CRLF    noop = "NOOP" [ SP String ] CRLF
/// starttls = "STARTTLS" CRLF                                ; RFC 3207 §4
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// EHLO with its argument (printable ASCII, no space), kept raw for the audit trail.
    Ehlo(String),
    Helo(String),
    /// The raw text after `MAIL FROM:`; parse it with [`parse_mail_from`].
    Mail(Vec<u8>),
    /// The raw text after `RCPT TO:`; parse it with [`parse_rcpt_to`].
    Rcpt(Vec<u8>),
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
}

/// The longest EHLO/HELO argument kept (a domain name is at most 255 octets).
const MAX_HELO: usize = 255;

impl Command {
    /// Parse one command line (without its CRLF).
    pub fn parse(line: &[u8]) -> Result<Self, Reason> {
        let (verb, arg) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (line.get(..i).unwrap_or_default(), line.get(i + 1..)),
            None => (line, None),
        };
        let is = |name: &str| verb.eq_ignore_ascii_case(name.as_bytes());
        if is("EHLO") || is("HELO") {
            let name = helo_argument(arg)?;
            return Ok(if is("EHLO") {
                Self::Ehlo(name)
            } else {
                Self::Helo(name)
            });
        }
        if is("MAIL") {
            return prefixed(arg, b"FROM:").map(Self::Mail);
        }
        if is("RCPT") {
            return prefixed(arg, b"TO:").map(Self::Rcpt);
        }
        let bare = [
            ("DATA", Self::Data),
            ("RSET", Self::Rset),
            ("QUIT", Self::Quit),
            ("STARTTLS", Self::StartTls),
        ];
        for (name, command) in bare {
            if is(name) {
                return match arg {
                    None => Ok(command),
                    Some(_) => Err(Reason::SmtpSyntax),
                };
            }
        }
        if is("NOOP") || is("HELP") {
            return Ok(if is("NOOP") { Self::Noop } else { Self::Help });
        }
        if is("VRFY") || is("EXPN") {
            return match arg {
                Some(a) if !a.is_empty() => Ok(if is("VRFY") { Self::Vrfy } else { Self::Expn }),
                _ => Err(Reason::SmtpSyntax),
            };
        }
        // Everything else, AUTH and BDAT included (not offered).
        Err(Reason::SmtpUnknownCommand)
    }
}

fn helo_argument(arg: Option<&[u8]>) -> Result<String, Reason> {
    match arg {
        Some(a)
            if !a.is_empty()
                && a.len() <= MAX_HELO
                && a.iter().all(|b| (0x21..=0x7e).contains(b)) =>
        {
            Ok(String::from_utf8_lossy(a).into_owned())
        }
        _ => Err(Reason::SmtpSyntax),
    }
}

/// `FROM:` / `TO:` (case-insensitive) followed by the argument. One SP after the colon is
/// tolerated (`MAIL FROM: <a@b.fr>`): RFC 5321 forbids it, Postfix accepts it by default
/// (`strict_rfc821_envelopes = no`) and some clients send it; it cannot change which address
/// is meant. Any other whitespace there (a second SP, a tab) is a malformed command,
/// `smtp.syntax`, never `envelope.syntax`: the address inside the brackets is not at fault.
fn prefixed(arg: Option<&[u8]>, prefix: &[u8]) -> Result<Vec<u8>, Reason> {
    let arg = arg.ok_or(Reason::SmtpSyntax)?;
    match (arg.get(..prefix.len()), arg.get(prefix.len()..)) {
        (Some(p), Some(rest)) if p.eq_ignore_ascii_case(prefix) => {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            match rest.first() {
                Some(b' ' | b'\t') => Err(Reason::SmtpSyntax),
                _ => Ok(rest.to_vec()),
            }
        }
        _ => Err(Reason::SmtpSyntax),
    }
}

/// `BODY=` values (RFC 6152).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

/// A valid MAIL FROM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailFrom {
    /// The untagged sender: what every check compares.
    pub from: Mailbox,
    /// The address as sent when a configured envelope tag was removed ([`EnvelopeTag`]).
    pub tagged: Option<String>,
    /// `SIZE=` (RFC 1870), already checked against the limit.
    pub size: Option<u64>,
    pub body: Option<Body>,
}

/// Parse the text after `MAIL FROM:`.
///
/// ```text
/// Reverse-path    = Path / "<>"
/// Path            = "<" [ A-d-l ":" ] Mailbox ">"      ; source routes refused
/// Mail-parameters = esmtp-param *(SP esmtp-param)
/// esmtp-param     = esmtp-keyword ["=" esmtp-value]    ; only SIZE=n and BODY=7BIT|8BITMIME
/// ```
///
/// `<>` is `envelope.null_sender`; a SIZE over `max_message_bytes` is `message.too_large`
/// (RFC 1870 §6.1: 552 at MAIL); every other refusal is `envelope.syntax`. `tag_for` names
/// the envelope tag a domain's override accepts (SPEC §3 "Envelope tags"); the path goes
/// through [`Envelope::parse`], the strict parser.
pub fn parse_mail_from(
    arg: &[u8],
    opts: &ParseOptions,
    max_message_bytes: usize,
    tag_for: impl Fn(&Domain) -> Option<EnvelopeTag>,
) -> Result<MailFrom, Reason> {
    let (inside, params) = split_path(arg).ok_or(Reason::EnvelopeSyntax)?;
    if inside.is_empty() {
        return Err(Reason::EnvelopeNullSender);
    }
    let envelope = Envelope::parse(inside, opts, tag_for).map_err(|e| e.reason())?;
    let mut size = None;
    let mut body = None;
    for param in params {
        let (key, value) = match param.iter().position(|&b| b == b'=') {
            Some(i) => (param.get(..i).unwrap_or_default(), param.get(i + 1..)),
            None => (param, None),
        };
        if key.eq_ignore_ascii_case(b"SIZE") && size.is_none() {
            let value = value.ok_or(Reason::EnvelopeSyntax)?;
            size = Some(parse_size(value)?);
        } else if key.eq_ignore_ascii_case(b"BODY") && body.is_none() {
            body = Some(match value {
                Some(v) if v.eq_ignore_ascii_case(b"7BIT") => Body::SevenBit,
                Some(v) if v.eq_ignore_ascii_case(b"8BITMIME") => Body::EightBitMime,
                _ => return Err(Reason::EnvelopeSyntax),
            });
        } else {
            return Err(Reason::EnvelopeSyntax);
        }
    }
    if let Some(n) = size
        && n > max_message_bytes as u64
    {
        return Err(Reason::MessageTooLarge);
    }
    Ok(MailFrom {
        from: envelope.mailbox,
        tagged: envelope.tagged,
        size,
        body,
    })
}

/// The strict parser's detail (`two_at`, `batv_tag`, ...) for a MAIL argument that
/// [`parse_mail_from`] refused as `envelope.syntax` because of its address; `None` when the
/// path itself was malformed or the address parses. A fixed string: the audit event may
/// carry it so that an operator sees which shape check refused a tagged sender.
pub fn mail_from_detail(
    arg: &[u8],
    opts: &ParseOptions,
    tag_for: impl Fn(&Domain) -> Option<EnvelopeTag>,
) -> Option<&'static str> {
    let (inside, _) = split_path(arg)?;
    if inside.is_empty() {
        return None;
    }
    Envelope::parse(inside, opts, tag_for)
        .err()
        .map(|e| e.detail)
}

/// `size-value = 1*20DIGIT` (RFC 1870 §3). A value too large for u64 is over any limit.
fn parse_size(value: &[u8]) -> Result<u64, Reason> {
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return Err(Reason::EnvelopeSyntax);
    }
    Ok(value
        .iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .unwrap_or(u64::MAX))
}

/// Split `<inside>[ SP param *(SP param)]`. `None` when there are no brackets, a bracket
/// inside the path, or an empty parameter (double space, trailing space).
fn split_path(arg: &[u8]) -> Option<(&[u8], Vec<&[u8]>)> {
    let rest = arg.strip_prefix(b"<")?;
    let close = rest.iter().position(|&b| b == b'>')?;
    let inside = rest.get(..close)?;
    if inside.contains(&b'<') {
        return None;
    }
    let after = rest.get(close + 1..)?;
    let params = match after {
        [] => Vec::new(),
        [b' ', params @ ..] => params.split(|&b| b == b' ').collect(),
        _ => return None,
    };
    if params.iter().any(|p| p.is_empty()) {
        return None;
    }
    Some((inside, params))
}

/// What a confirmation address looks like: `<local_prefix>+<token>@<domain>`.
#[derive(Clone, Debug)]
pub struct ConfirmAddress {
    pub domain: Domain,
    pub local_prefix: String,
}

/// Parse the text after `RCPT TO:`: exactly `<prefix+token@confirm.domain>` (or
/// `<probe+token@confirm.domain>`, [`Recipient::is_probe`]) with a token of
/// `[a-z2-7]` (lower-case base32, after canonicalisation), no parameters. Anything else is
/// `rcpt.unknown`: gatekeeper never relays.
pub fn parse_rcpt_to(
    arg: &[u8],
    opts: &ParseOptions,
    confirm: &ConfirmAddress,
) -> Result<Recipient, Reason> {
    let (inside, params) = split_path(arg).ok_or(Reason::RcptUnknown)?;
    if !params.is_empty() {
        return Err(Reason::RcptUnknown);
    }
    let address = Mailbox::parse(inside, opts).map_err(|_| Reason::RcptUnknown)?;
    if address.domain() != &confirm.domain {
        return Err(Reason::RcptUnknown);
    }
    // A probe address (SPEC §10) has the same shape under its own fixed prefix.
    let token = token_of(address.local(), &confirm.local_prefix)
        .or_else(|| token_of(address.local(), crate::backend::PROBE_PREFIX))
        .ok_or(Reason::RcptUnknown)?;
    Ok(Recipient {
        token: token.to_owned(),
        address,
    })
}

/// The token of a canonical local part `prefix+token`, compared on the parsed local part only.
fn token_of<'a>(local: &'a str, prefix: &str) -> Option<&'a str> {
    let head = local.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let token = local.get(prefix.len()..)?.strip_prefix('+')?;
    let base32 = |c: char| c.is_ascii_lowercase() || ('2'..='7').contains(&c);
    (!token.is_empty() && token.chars().all(base32)).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs() {
        let cases: &[(&str, Result<Command, Reason>)] = &[
            ("EHLO mx.gouv.fr", Ok(Command::Ehlo("mx.gouv.fr".into()))),
            ("ehlo [127.0.0.1]", Ok(Command::Ehlo("[127.0.0.1]".into()))),
            ("HELO mx", Ok(Command::Helo("mx".into()))),
            ("EHLO", Err(Reason::SmtpSyntax)),
            ("EHLO a b", Err(Reason::SmtpSyntax)),
            ("EHLO \u{e9}", Err(Reason::SmtpSyntax)),
            (
                "mail from:<a@b.fr>",
                Ok(Command::Mail(b"<a@b.fr>".to_vec())),
            ),
            ("MAIL TO:<a@b.fr>", Err(Reason::SmtpSyntax)),
            // One SP after the colon is tolerated; any other whitespace is the command's fault.
            (
                "MAIL FROM: <a@b.fr>",
                Ok(Command::Mail(b"<a@b.fr>".to_vec())),
            ),
            (
                "MAIL FROM: <a@b.fr> SIZE=10",
                Ok(Command::Mail(b"<a@b.fr> SIZE=10".to_vec())),
            ),
            ("RCPT TO: <x>", Ok(Command::Rcpt(b"<x>".to_vec()))),
            ("MAIL FROM:  <a@b.fr>", Err(Reason::SmtpSyntax)),
            ("MAIL FROM:\t<a@b.fr>", Err(Reason::SmtpSyntax)),
            ("MAIL FROM: \t<a@b.fr>", Err(Reason::SmtpSyntax)),
            ("MAIL FROM :<a@b.fr>", Err(Reason::SmtpSyntax)),
            ("MAIL  FROM:<a@b.fr>", Err(Reason::SmtpSyntax)),
            ("RCPT TO:  <x>", Err(Reason::SmtpSyntax)),
            ("MAIL FROM: ", Ok(Command::Mail(Vec::new()))),
            ("MAIL", Err(Reason::SmtpSyntax)),
            ("RCPT To:<x>", Ok(Command::Rcpt(b"<x>".to_vec()))),
            ("DATA", Ok(Command::Data)),
            ("DATA x", Err(Reason::SmtpSyntax)),
            ("Rset", Ok(Command::Rset)),
            ("NOOP whatever", Ok(Command::Noop)),
            ("QUIT", Ok(Command::Quit)),
            ("VRFY alice", Ok(Command::Vrfy)),
            ("VRFY", Err(Reason::SmtpSyntax)),
            ("EXPN list", Ok(Command::Expn)),
            ("HELP", Ok(Command::Help)),
            ("STARTTLS", Ok(Command::StartTls)),
            ("BDAT 10 LAST", Err(Reason::SmtpUnknownCommand)),
            ("AUTH PLAIN AAAA", Err(Reason::SmtpUnknownCommand)),
            ("", Err(Reason::SmtpUnknownCommand)),
            ("XYZZY", Err(Reason::SmtpUnknownCommand)),
        ];
        for (line, expected) in cases {
            assert_eq!(&Command::parse(line.as_bytes()), expected, "{line}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(split_path(b"<>"), Some((&b""[..], vec![])));
        assert_eq!(
            split_path(b"<a@b.fr> SIZE=1 BODY=8BITMIME"),
            Some((&b"a@b.fr"[..], vec![&b"SIZE=1"[..], &b"BODY=8BITMIME"[..]]))
        );
        for bad in [
            &b"a@b.fr"[..],
            b"<a@b.fr",
            b"<a@b.fr>x",
            b"<<a@b.fr>>",
            b"<a@b.fr> ",
            b"<a@b.fr>  X=1",
        ] {
            assert_eq!(split_path(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_size(b"00012"), Ok(12));
        assert_eq!(parse_size(b"99999999999999999999"), Ok(u64::MAX));
        assert_eq!(parse_size(b"1x"), Err(Reason::EnvelopeSyntax));
        assert_eq!(parse_size(b""), Err(Reason::EnvelopeSyntax));
    }

    #[test]
    fn mail_from_with_tags() {
        let opts = ParseOptions::default();
        let interieur = Domain::parse(b"interieur.gouv.fr", &opts);
        let tag_for = |d: &Domain| (Ok(d) == interieur.as_ref()).then_some(EnvelopeTag::Batv);
        type Want = Result<(&'static str, Option<&'static str>), Reason>;
        let rows: &[(&str, Want)] = &[
            (
                "<prvs=4068eb2540=alice@interieur.gouv.fr> SIZE=10",
                Ok((
                    "alice@interieur.gouv.fr",
                    Some("prvs=4068eb2540=alice@interieur.gouv.fr"),
                )),
            ),
            (
                "<alice@interieur.gouv.fr>",
                Ok(("alice@interieur.gouv.fr", None)),
            ),
            (
                "<prvs=4068eb2540=alice@culture.gouv.fr>",
                Err(Reason::EnvelopeSyntax),
            ),
            (
                "<prvs=4068eb25=alice@interieur.gouv.fr>",
                Err(Reason::EnvelopeSyntax),
            ),
            (
                "<btv1==1086afe1179==alice@interieur.gouv.fr>",
                Err(Reason::EnvelopeSyntax),
            ),
        ];
        for (arg, want) in rows {
            let got = parse_mail_from(arg.as_bytes(), &opts, 1000, tag_for);
            let got = got
                .as_ref()
                .map(|m| (m.from.to_string(), m.tagged.as_deref()));
            let want = want.map(|(f, t)| (f.to_string(), t));
            assert_eq!(got.map_err(|r| *r), want, "{arg}");
        }
        let details: &[(&str, Option<&str>)] = &[
            ("<prvs=4068eb25=alice@interieur.gouv.fr>", Some("batv_tag")),
            (
                "<prvs=alice=4068eb2540@interieur.gouv.fr>",
                Some("batv_reversed"),
            ),
            ("<prvs=4068eb2540=alice@culture.gouv.fr>", Some("bad_char")),
            ("<a@b@interieur.gouv.fr>", Some("two_at")),
            ("<prvs=4068eb2540=alice@interieur.gouv.fr>", None),
            ("alice@interieur.gouv.fr", None),
            ("<>", None),
        ];
        for (arg, want) in details {
            assert_eq!(
                mail_from_detail(arg.as_bytes(), &opts, tag_for),
                *want,
                "{arg}"
            );
        }
    }

    #[test]
    fn tokens() {
        assert_eq!(token_of("confirm+abc27", "confirm"), Some("abc27"));
        assert_eq!(token_of("confirm+abc27", "Confirm"), Some("abc27"));
        for bad in [
            "confirm+",
            "confirm",
            "confirmx+abc",
            "confirm+ab1",
            "confirm+a+b",
            "other+abc",
            "conf",
        ] {
            assert_eq!(token_of(bad, "confirm"), None, "{bad}");
        }
    }
}
