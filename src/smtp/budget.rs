//! The DATA memory budget (`smtp.max_buffered_bytes`, SPEC §5): one count of the octets held in
//! message buffers by all sessions together, so that a burst of large messages cannot grow the
//! daemon past what the operator sized it for.
//!
//! # How a session uses it
//!
//! - At `DATA` the session reserves [`FIRST_CHUNK`] (or the whole `max_message_bytes` when that
//!   is smaller). When even that does not fit, `DATA` gets `452 4.3.1 smtp.busy` at once and the
//!   transaction stays where it was: the client may retry `DATA` or quit.
//! - As the message grows, the receiver reserves each new buffer capacity *before* allocating it
//!   (doubling, capped at `max_message_bytes`): the count is the memory the buffers really hold,
//!   not an estimate from the octets received. When a growth does not fit, the receiver frees
//!   its buffer and its whole reservation at once, reads on to the true end without storing, and
//!   the message gets `452 4.3.1 smtp.busy`. Freeing at once is what keeps a crowd of large
//!   messages from starving each other: a refused message never sits on half a buffer while
//!   others wait for it.
//! - A complete message keeps its reservation through the backend's verdict (the transaction
//!   owns the buffer until then).
//!
//! Reserving as the message grows rather than `max_message_bytes` up front: with the defaults
//! (2 MiB messages, 256 MiB budget) an up-front reservation would admit 128 DATA at once however
//! small the replies are, while reserving as they grow admits 4,096 replies of up to 64 KiB,
//! under the same bound on memory.
//!
//! # Release on every path
//!
//! A [`Reservation`] gives its octets back when it is dropped, so the release does not depend
//! on which path ends the message: end of data, the verdict, `RSET`-free aborts such as a
//! timeout, a shutdown, the peer going away (the session is dropped with its state) or a panic
//! unwinding the session's task. The count is atomic and never blocks.
//!
//! Not counted: the per-session buffers that do not depend on the message size (the 16 KiB read
//! buffer, the 64 KiB of pipelined input a session keeps at most); they are bounded by
//! `smtp.max_connections`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a DATA reserves before its first octet: a typical reply (a few KiB of text, a
/// signature, a quoted challenge) fits, so most messages make one reservation only.
pub const FIRST_CHUNK: usize = 64 * 1024;

/// The budget shared by every session of the server. Cloning shares the same count.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    inner: Arc<Counts>,
}

#[derive(Debug)]
struct Counts {
    limit: AtomicUsize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` octets, none used.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Counts {
                limit: AtomicUsize::new(limit),
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// The configured bound, in octets.
    pub fn limit(&self) -> usize {
        self.inner.limit.load(Ordering::Relaxed)
    }

    /// Octets reserved now by all sessions together.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    /// Change the bound (a reload). Reservations already made stay; new ones see the new
    /// bound, so a smaller bound takes effect as running messages end.
    pub fn set_limit(&self, limit: usize) {
        self.inner.limit.store(limit, Ordering::Relaxed);
    }

    /// Reserve `octets`, or `None` when they do not fit under the bound.
    pub fn reserve(&self, octets: usize) -> Option<Reservation> {
        let mut reservation = Reservation {
            budget: self.clone(),
            held: 0,
        };
        reservation.grow_to(octets).then_some(reservation)
    }

    /// Add `octets` to the count if the total stays within the bound.
    fn take(&self, octets: usize) -> bool {
        let limit = self.limit();
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(octets).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    fn give_back(&self, octets: usize) {
        // Never below zero: a reservation only gives back what it took.
        let _ = self
            .inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(octets))
            });
    }
}

/// Octets one message holds against the budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: MemoryBudget,
    held: usize,
}

impl Reservation {
    /// Octets held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Hold `total` octets in all (no change when already holding as much). False, and
    /// nothing changed, when the increase does not fit.
    pub fn grow_to(&mut self, total: usize) -> bool {
        let more = total.saturating_sub(self.held);
        if more == 0 {
            return true;
        }
        if !self.budget.take(more) {
            return false;
        }
        self.held = total;
        true
    }

    /// Give everything back now (the buffer it covered was freed).
    pub fn release(&mut self) {
        self.budget.give_back(std::mem::take(&mut self.held));
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step of a table: what is asked of which reservation, and what the budget counts
    /// afterwards.
    enum Step {
        /// Reserve for slot `i`; `ok` says whether it fits.
        Reserve(usize, usize, bool),
        Grow(usize, usize, bool),
        Release(usize),
        Drop(usize),
        Limit(usize),
    }

    #[test]
    fn accounting_table() {
        use Step::*;
        // (name, bound, steps each with the count expected after it)
        type Case<'a> = (&'a str, usize, &'a [(Step, usize)]);
        let cases: &[Case<'_>] = &[
            (
                "fills up, refuses, frees",
                300,
                &[
                    (Reserve(0, 100, true), 100),
                    (Reserve(1, 100, true), 200),
                    (Reserve(2, 100, true), 300),
                    (Reserve(3, 1, false), 300),
                    (Drop(1), 200),
                    (Reserve(3, 100, true), 300),
                ],
            ),
            (
                "growth within and past the bound",
                300,
                &[
                    (Reserve(0, 100, true), 100),
                    (Grow(0, 200, true), 200),
                    (Grow(0, 150, true), 200),
                    (Reserve(1, 100, true), 300),
                    (Grow(1, 101, false), 300),
                    (Release(0), 100),
                    (Grow(1, 300, true), 300),
                    (Drop(0), 300),
                    (Drop(1), 0),
                ],
            ),
            (
                "a smaller bound applies to new reservations only",
                300,
                &[
                    (Reserve(0, 250, true), 250),
                    (Limit(100), 250),
                    (Reserve(1, 1, false), 250),
                    (Drop(0), 0),
                    (Reserve(1, 100, true), 100),
                    (Grow(1, 101, false), 100),
                ],
            ),
            (
                "zero octets always fit",
                0,
                &[(Reserve(0, 0, true), 0), (Grow(0, 1, false), 0)],
            ),
            (
                "no overflow",
                usize::MAX,
                &[
                    (Reserve(0, usize::MAX, true), usize::MAX),
                    (Reserve(1, 1, false), usize::MAX),
                    (Drop(0), 0),
                ],
            ),
        ];
        for (name, limit, steps) in cases {
            let budget = MemoryBudget::new(*limit);
            let mut slots: Vec<Option<Reservation>> = (0..4).map(|_| None).collect();
            for (i, (step, used)) in steps.iter().enumerate() {
                match step {
                    Reserve(slot, n, ok) => {
                        let r = budget.reserve(*n);
                        assert_eq!(r.is_some(), *ok, "{name} step {i}");
                        if r.is_some() {
                            slots[*slot] = r;
                        }
                    }
                    Grow(slot, n, ok) => {
                        let grown = slots[*slot].as_mut().map(|r| r.grow_to(*n));
                        assert_eq!(grown, Some(*ok), "{name} step {i}");
                    }
                    Release(slot) => {
                        if let Some(r) = slots[*slot].as_mut() {
                            r.release();
                            assert_eq!(r.held(), 0, "{name} step {i}");
                        }
                    }
                    Drop(slot) => slots[*slot] = None,
                    Limit(n) => budget.set_limit(*n),
                }
                assert_eq!(budget.used(), *used, "{name} step {i}");
            }
            drop(slots);
            assert_eq!(budget.used(), 0, "{name}: everything given back");
        }
    }

    #[test]
    fn clones_share_one_count_across_threads() {
        let budget = MemoryBudget::new(1000);
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let b = budget.clone();
                std::thread::spawn(move || {
                    let mut fitted = 0usize;
                    for _ in 0..1000 {
                        if let Some(r) = b.reserve(10) {
                            fitted += 1;
                            assert!(b.used() <= 1000);
                            drop(r);
                        }
                    }
                    fitted
                })
            })
            .collect();
        let fitted: usize = workers.into_iter().filter_map(|w| w.join().ok()).sum();
        assert_eq!(
            fitted, 4000,
            "ten octets always fit under 1000 with four holders"
        );
        assert_eq!(budget.used(), 0);
    }
}
