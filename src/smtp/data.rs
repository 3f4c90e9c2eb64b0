//! DATA receiver (RFC 5321 §4.1.1.4, §4.5.2): finds the one true end of the message, removes
//! dot-stuffing, enforces the size and text-line limits, and refuses SMTP smuggling. Pure.
//!
//! # The one true end
//!
//! The message ends at `CRLF . CRLF`, where the first CRLF is a real CRLF (or the DATA
//! command's own line end) and nothing else. A line starts only after a real CRLF; a bare LF or
//! a bare CR never starts one. So `\n.\n`, `\n.\r\n`, `\r.\r`, `\r.\r\n`, `\n.\r`, `\r.\n` and
//! `\r\n\0.\r\n` never end the message: they are content, and their bare LF / bare CR / NUL
//! refuses the *whole* message once the true end arrives (`smtp.bare_lf`, `smtp.bare_cr`,
//! `smtp.nul`). Whatever an attacker hid behind them (a second `MAIL FROM` ...) stays inside the
//! refused message and never becomes a command: the receiver stays in step with a compliant
//! client and out of step with nobody.
//!
//! # Limits
//!
//! - Size: the unstuffed message (CRLF line ends, without the final `.` line) may hold up to
//!   `max_message_bytes` octets. Past that the receiver stops storing (its buffer is freed at
//!   once), keeps reading to the true end, then refuses with `message.too_large` (552).
//! - Text lines: RFC 5321 §4.5.3.1.6, at most 1000 octets including CRLF, not counting the
//!   dot added for transparency. A longer line is drained and the message refused with
//!   `smtp.line_too_long`.
//!
//! Memory is bounded by `max_message_bytes` whatever the client sends, and all receivers
//! together by the server's [`MemoryBudget`] (`smtp.max_buffered_bytes`): each new buffer
//! capacity is reserved before it is allocated. A growth that does not fit frees the buffer
//! and its reservation at once; the receiver reads on to the true end without storing and
//! refuses with `smtp.busy` (452).

use crate::reason::Reason;
use crate::smtp::budget::{FIRST_CHUNK, MemoryBudget, Reservation};
use crate::smtp::line::note;

/// RFC 5321 §4.5.3.1.6: "The maximum total length of a text line including the <CRLF> is
/// 1000 octets (not counting the leading dot duplicated for transparency)."
pub const MAX_TEXT_LINE: usize = 1000;

/// Where the receiver is within the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pos {
    /// Just after a real CRLF (or at the start of the data).
    LineStart,
    /// Inside a line.
    Mid,
    /// After a CR inside a line: CRLF ends the line, anything else makes it a bare CR.
    Cr,
    /// After a `.` at the start of a line.
    Dot,
    /// After `.` CR at the start of a line: LF ends the message.
    DotCr,
}

/// Incremental DATA receiver. Create one per transaction, after the 354 reply.
#[derive(Debug)]
pub struct DataReceiver {
    pos: Pos,
    /// Octets of the current line, CRLF included, stuffing dot excluded.
    line_len: usize,
    /// The unstuffed message, at most `max` octets; its capacity is covered by `reservation`.
    message: Vec<u8>,
    /// Octets of the unstuffed message so far, stored or not (for the size limit once the
    /// buffer was given up).
    size: usize,
    max: usize,
    reservation: Reservation,
    /// The message is refused already (the budget refused a growth, or it is too large): the
    /// buffer was freed and nothing more is stored.
    given_up: bool,
    fault: Option<Reason>,
}

/// What one call to [`DataReceiver::push`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum DataProgress {
    /// All input consumed, the end is not reached yet: a normal outcome.
    NeedMore,
    /// The true end was reached: the message, or the reason it is refused.
    Done(Result<Vec<u8>, Reason>),
}

impl DataReceiver {
    /// A receiver accepting messages of at most `max_message_bytes` octets, its buffer counted
    /// in `budget`. `None` when the budget cannot hold even its first chunk
    /// ([`FIRST_CHUNK`], or `max_message_bytes` when smaller): the DATA is refused with
    /// `smtp.busy` before it starts.
    pub fn new(max_message_bytes: usize, budget: &MemoryBudget) -> Option<Self> {
        let reservation = budget.reserve(FIRST_CHUNK.min(max_message_bytes))?;
        Some(Self {
            pos: Pos::LineStart,
            line_len: 0,
            message: Vec::new(),
            size: 0,
            max: max_message_bytes,
            reservation,
            given_up: false,
            fault: None,
        })
    }

    /// The reservation covering the message buffer handed out at the end: it stays with the
    /// transaction until the verdict.
    pub fn into_reservation(self) -> Reservation {
        self.reservation
    }

    /// Consume octets up to the true end of the message. Returns how many octets were consumed
    /// (octets after the end belong to the next command) and the progress.
    pub fn push(&mut self, input: &[u8]) -> (usize, DataProgress) {
        for (i, &b) in input.iter().enumerate() {
            if self.step(b) {
                let message = std::mem::take(&mut self.message);
                let result = match self.fault.take() {
                    Some(reason) => Err(reason),
                    None => Ok(message),
                };
                return (i + 1, DataProgress::Done(result));
            }
        }
        (input.len(), DataProgress::NeedMore)
    }

    /// Process one octet; true at the true end of the message.
    fn step(&mut self, b: u8) -> bool {
        match self.pos {
            Pos::LineStart if b == b'.' => self.pos = Pos::Dot,
            Pos::LineStart | Pos::Mid => self.mid(b),
            Pos::Cr => {
                if b == b'\n' {
                    self.store(b'\r');
                    self.store(b'\n');
                    self.pos = Pos::LineStart;
                    self.line_len = 0;
                } else {
                    note(&mut self.fault, Reason::SmtpBareCr);
                    self.store(b'\r');
                    self.mid(b);
                }
            }
            // The stuffing dot is removed (RFC 5321 §4.5.2) whatever follows.
            Pos::Dot if b == b'\r' => self.pos = Pos::DotCr,
            Pos::Dot => self.mid(b),
            Pos::DotCr if b == b'\n' => return true,
            Pos::DotCr => {
                note(&mut self.fault, Reason::SmtpBareCr);
                self.store(b'\r');
                self.mid(b);
            }
        }
        false
    }

    /// An octet inside a line.
    fn mid(&mut self, b: u8) {
        self.pos = Pos::Mid;
        match b {
            b'\r' => self.pos = Pos::Cr,
            b'\n' => {
                note(&mut self.fault, Reason::SmtpBareLf);
                self.store(b);
            }
            0 => {
                note(&mut self.fault, Reason::SmtpNul);
                self.store(b);
            }
            _ => self.store(b),
        }
    }

    fn store(&mut self, b: u8) {
        self.line_len = self.line_len.saturating_add(1);
        if self.line_len > MAX_TEXT_LINE {
            note(&mut self.fault, Reason::SmtpLineTooLong);
        }
        if self.size >= self.max {
            // Refused whatever follows: the buffer is of no more use.
            self.give_up();
            return note(&mut self.fault, Reason::MessageTooLarge);
        }
        self.size += 1;
        if self.given_up {
            return;
        }
        if self.message.len() == self.message.capacity() && !self.grow() {
            self.give_up();
            return note(&mut self.fault, Reason::SmtpBusy);
        }
        self.message.push(b);
    }

    /// Stop storing: free the buffer and give its reservation back now rather than at the
    /// end of the data, so other sessions can use it while this one drains.
    fn give_up(&mut self) {
        if !self.given_up {
            self.given_up = true;
            self.message = Vec::new();
            self.reservation.release();
        }
    }

    /// Reserve, then allocate, the buffer's next capacity: double (amortised linear copying),
    /// at least the first chunk, at most `max`. False when the budget refuses it.
    fn grow(&mut self) -> bool {
        let floor = FIRST_CHUNK.min(self.max);
        let want = self
            .message
            .capacity()
            .saturating_mul(2)
            .clamp(floor, self.max.max(floor));
        if !self.reservation.grow_to(want) {
            return false;
        }
        self.message
            .reserve_exact(want.saturating_sub(self.message.len()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(input: &[u8], max: usize) -> (usize, DataProgress) {
        match DataReceiver::new(max, &MemoryBudget::new(usize::MAX)) {
            Some(mut receiver) => receiver.push(input),
            None => (0, DataProgress::NeedMore),
        }
    }

    /// The receiver against a budget: what it refuses, what it holds while receiving, and that
    /// a refused message gives everything back at once (not at its end).
    #[test]
    fn budget_table() {
        const K: usize = 1024;
        let body = |n: usize| {
            let line = [vec![b'x'; 998], b"\r\n".to_vec()].concat();
            line.iter().copied().cycle().take(n).collect::<Vec<u8>>()
        };
        // (name, max message, budget, octets sent before the end, injected fault,
        //  held while receiving, result at the end)
        type Case<'a> = (
            &'a str,
            usize,
            usize,
            usize,
            &'a [u8],
            usize,
            Result<usize, Reason>,
        );
        let cases: &[Case<'_>] = &[
            (
                "small, first chunk",
                2048 * K,
                256 * K,
                10 * K,
                b"",
                64 * K,
                Ok(10 * K),
            ),
            (
                "grows by doubling",
                2048 * K,
                256 * K,
                100 * K,
                b"",
                128 * K,
                Ok(100 * K),
            ),
            (
                "capped at max",
                150 * K,
                1024 * K,
                149 * K,
                b"",
                150 * K,
                Ok(149 * K),
            ),
            ("max under a chunk", 2 * K, 64 * K, K, b"", 2 * K, Ok(K)),
            (
                "starved mid-message",
                2048 * K,
                100 * K,
                200 * K,
                b"",
                0,
                Err(Reason::SmtpBusy),
            ),
            (
                "too large frees at once",
                128 * K,
                128 * K,
                300 * K,
                b"",
                0,
                Err(Reason::MessageTooLarge),
            ),
            (
                "smuggling beats starved",
                2048 * K,
                100 * K,
                200 * K,
                b"\n.\n",
                0,
                Err(Reason::SmtpBareLf),
            ),
        ];
        for (name, max, limit, sent, fault, held, want) in cases {
            let budget = MemoryBudget::new(*limit);
            let Some(mut rx) = DataReceiver::new(*max, &budget) else {
                panic!("{name}: the first chunk fits");
            };
            let mut input = body(*sent);
            input.extend_from_slice(fault);
            assert_eq!(
                rx.push(&input),
                (input.len(), DataProgress::NeedMore),
                "{name}"
            );
            assert_eq!(budget.used(), *held, "{name}: held while receiving");
            let (_, progress) = rx.push(b"\r\n.\r\n");
            let got = match progress {
                DataProgress::Done(r) => r.map(|m| m.len()),
                DataProgress::NeedMore => panic!("{name}: no end"),
            };
            assert_eq!(got, want.map(|n| n + 2), "{name}");
            let kept = rx.into_reservation();
            assert_eq!(
                kept.held(),
                *held,
                "{name}: the transaction keeps what it held"
            );
            drop(kept);
            assert_eq!(budget.used(), 0, "{name}: all given back");
        }
        // A DATA that cannot have its first chunk is refused before it starts.
        let budget = MemoryBudget::new(100 * K);
        let first = DataReceiver::new(2048 * K, &budget);
        assert!(first.is_some());
        assert!(DataReceiver::new(2048 * K, &budget).is_none());
        drop(first);
        assert!(DataReceiver::new(2048 * K, &budget).is_some());
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn unstuffing_and_end() {
        let cases: &[(&[u8], &[u8], usize)] = &[
            (b".\r\n", b"", 3),
            (b"a\r\n.\r\nQUIT\r\n", b"a\r\n", 6),
            (b"..a\r\n.\r\n", b".a\r\n", 8),
            (b"..\r\n.\r\n", b".\r\n", 7),
            (b"a\r\n.b\r\n.\r\n", b"a\r\nb\r\n", 10),
        ];
        for (input, message, used) in cases {
            assert_eq!(
                receive(input, 100),
                (*used, DataProgress::Done(Ok(message.to_vec()))),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn smuggling_never_ends_the_message() {
        let variants: &[(&[u8], Reason)] = &[
            (b"\n.\n", Reason::SmtpBareLf),
            (b"\n.\r\n", Reason::SmtpBareLf),
            (b"\r.\r", Reason::SmtpBareCr),
            (b"\r.\r\n", Reason::SmtpBareCr),
            (b"\r\n\x00.\r\n", Reason::SmtpNul),
            (b"\n.\r", Reason::SmtpBareLf),
            (b"\r.\n", Reason::SmtpBareCr),
        ];
        for (seq, reason) in variants {
            let mut input = b"Subject: x\r\n\r\nhi".to_vec();
            input.extend_from_slice(seq);
            input.extend_from_slice(b"MAIL FROM:<a@b.fr>\r\n");
            let (used, progress) = receive(&input, 1000);
            assert_eq!(progress, DataProgress::NeedMore, "{seq:?}");
            assert_eq!(used, input.len());
            input.extend_from_slice(b"\r\n.\r\n");
            let (used, progress) = receive(&input, 1000);
            assert_eq!(
                (used, progress),
                (input.len(), DataProgress::Done(Err(*reason))),
                "{seq:?}"
            );
        }
    }

    #[test]
    fn size_and_line_limits() {
        let at = b"abc\r\n.\r\n";
        assert_eq!(
            receive(at, 5).1,
            DataProgress::Done(Ok(b"abc\r\n".to_vec()))
        );
        assert_eq!(
            receive(at, 4).1,
            DataProgress::Done(Err(Reason::MessageTooLarge))
        );
        let line = |n: usize| [vec![b'x'; n], b"\r\n.\r\n".to_vec()].concat();
        assert!(matches!(
            receive(&line(998), 5000).1,
            DataProgress::Done(Ok(_))
        ));
        assert_eq!(
            receive(&line(999), 5000).1,
            DataProgress::Done(Err(Reason::SmtpLineTooLong))
        );
        // The stuffing dot does not count.
        let stuffed = [b".".to_vec(), line(998)].concat();
        assert!(matches!(
            receive(&stuffed, 5000).1,
            DataProgress::Done(Ok(_))
        ));
    }
}
