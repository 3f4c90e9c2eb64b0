//! Bounded command-line framer (RFC 5321 §2.3.8, §4.5.3.1.4). Pure: bytes in, lines out.
//!
//! A command line ends at CRLF and nowhere else. A bare LF, a bare CR or a NUL inside a line
//! does not end it: the whole line, up to the next CRLF, is refused with the reason
//! (`smtp.bare_lf`, `smtp.bare_cr`, `smtp.nul`). So `MAIL FROM:<a@b>\nRCPT TO:<c@d>\r\n` is
//! one refused line, never a MAIL followed by a RCPT (SMTP smuggling, and the ambiguity of
//! lenient servers that end lines at LF).
//!
//! A line longer than [`MAX_COMMAND_LINE`] is drained to its CRLF and then refused
//! (`smtp.line_too_long`), so the client and the server stay in step: exactly one reply per
//! line the client sent. Only the first [`MAX_COMMAND_LINE`] octets are kept in memory.

use crate::reason::Reason;

/// RFC 5321 §4.5.3.1.4: "The maximum total length of a command line including the command
/// word and the <CRLF> is 512 octets."
pub const MAX_COMMAND_LINE: usize = 512;

/// Incremental framer. Keeps the partial line between calls to [`LineFramer::push`].
#[derive(Debug, Default)]
pub struct LineFramer {
    /// The line so far, without CRLF; never longer than [`MAX_COMMAND_LINE`].
    line: Vec<u8>,
    /// Octets of the current line seen so far, CRLF included (keeps counting while draining).
    len: usize,
    /// The previous octet was a CR whose meaning depends on the next octet.
    pending_cr: bool,
    /// The first reason to refuse the current line, once known.
    fault: Option<Reason>,
}

/// What one call to [`LineFramer::push`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// Every input octet was consumed and no line is complete yet: a normal outcome.
    NeedMore,
    /// A complete, clean line (CRLF removed).
    Line(Vec<u8>),
    /// A complete line that must be refused with this reason; it has been drained.
    Refused(Reason),
}

impl LineFramer {
    /// Consume octets from `input` up to the end of the first complete line. Returns how many
    /// octets were consumed and what was framed. Octets after a complete line are left for the
    /// next call, so the caller can stop (e.g. while a backend answer is pending).
    pub fn push(&mut self, input: &[u8]) -> (usize, Framed) {
        for (i, &b) in input.iter().enumerate() {
            self.len = self.len.saturating_add(1);
            if self.len > MAX_COMMAND_LINE {
                note(&mut self.fault, Reason::SmtpLineTooLong);
            }
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    return (i + 1, self.finish());
                }
                note(&mut self.fault, Reason::SmtpBareCr);
                self.keep(b'\r');
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => note(&mut self.fault, Reason::SmtpBareLf),
                0 => note(&mut self.fault, Reason::SmtpNul),
                _ => self.keep(b),
            }
        }
        (input.len(), Framed::NeedMore)
    }

    /// True when part of a line is buffered (the client is mid-command).
    pub fn is_mid_line(&self) -> bool {
        self.len > 0
    }

    fn keep(&mut self, b: u8) {
        if self.line.len() < MAX_COMMAND_LINE {
            self.line.push(b);
        }
    }

    fn finish(&mut self) -> Framed {
        let line = std::mem::take(&mut self.line);
        self.len = 0;
        match self.fault.take() {
            Some(reason) => Framed::Refused(reason),
            None => Framed::Line(line),
        }
    }
}

/// Record `reason` as the fault of a line or message. The first fault wins, except that a
/// smuggling fault (bare LF, bare CR, NUL) replaces a size fault or the memory budget's
/// refusal: it is the one the SIEM must see, and an attacker must not hide it behind an
/// overlong line or a crowd of large messages.
pub(crate) fn note(fault: &mut Option<Reason>, reason: Reason) {
    match fault {
        None => *fault = Some(reason),
        Some(Reason::SmtpLineTooLong | Reason::MessageTooLarge | Reason::SmtpBusy)
            if is_smuggling(reason) =>
        {
            *fault = Some(reason)
        }
        Some(_) => {}
    }
}

fn is_smuggling(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::SmtpBareLf | Reason::SmtpBareCr | Reason::SmtpNul
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(input: &[u8]) -> Vec<Framed> {
        let mut f = LineFramer::default();
        let mut out = Vec::new();
        let mut rest = input;
        loop {
            let (n, framed) = f.push(rest);
            rest = rest.get(n..).unwrap_or_default();
            if framed == Framed::NeedMore {
                break;
            }
            out.push(framed);
        }
        out
    }

    #[test]
    fn table() {
        let line = |s: &str| Framed::Line(s.as_bytes().to_vec());
        let cases: &[(&[u8], Vec<Framed>)] = &[
            (b"NOOP\r\n", vec![line("NOOP")]),
            (b"NOOP\r\nQUIT\r\n", vec![line("NOOP"), line("QUIT")]),
            (b"NOOP", vec![]),
            (b"NOOP\r", vec![]),
            (b"\r\n", vec![line("")]),
            (b"MAIL\nRCPT\r\n", vec![Framed::Refused(Reason::SmtpBareLf)]),
            (b"MAIL\rRCPT\r\n", vec![Framed::Refused(Reason::SmtpBareCr)]),
            (b"MA\0IL\r\n", vec![Framed::Refused(Reason::SmtpNul)]),
            (b"A\r\r\n", vec![Framed::Refused(Reason::SmtpBareCr)]),
            (
                b"A\n\r\nNOOP\r\n",
                vec![Framed::Refused(Reason::SmtpBareLf), line("NOOP")],
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                &frame_all(input),
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn length_limit_counts_crlf_and_drains() {
        let ok = [vec![b'a'; MAX_COMMAND_LINE - 2], b"\r\n".to_vec()].concat();
        assert_eq!(
            frame_all(&ok),
            vec![Framed::Line(vec![b'a'; MAX_COMMAND_LINE - 2])]
        );
        let long = [vec![b'a'; MAX_COMMAND_LINE - 1], b"\r\nNOOP\r\n".to_vec()].concat();
        assert_eq!(
            frame_all(&long),
            vec![
                Framed::Refused(Reason::SmtpLineTooLong),
                Framed::Line(b"NOOP".to_vec())
            ]
        );
        // Smuggling beats length.
        let both = [vec![b'a'; 600], b"\n\r\n".to_vec()].concat();
        assert_eq!(frame_all(&both), vec![Framed::Refused(Reason::SmtpBareLf)]);
    }
}
