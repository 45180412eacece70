//! The multi-producer claim cursor: which position the next producer gets, and whether the
//! ring is closed.
//!
//! Producers race for the tail position with a compare-and-swap, after checking (through the
//! slot's sequence number, see [`super::slots`]) that the slot at that position is free. The
//! top bit of the tail is the "closed" mark: setting it with one `fetch_or` makes every later
//! claim fail, while claims that won before it still publish — so closing loses nothing and
//! costs the hot path no extra atomic.

use super::slots::Slots;
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const CLOSED: u64 = 1 << 63;

/// Why a claim failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimError {
    Full,
    Closed,
}

#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    /// Next position to claim, plus the `CLOSED` mark. Padded: every producer hammers it.
    tail: CachePadded<AtomicU64>,
    /// Set right after the mark, on a line nobody writes in steady state, so a consumer
    /// polling an empty ring can rule out "closed" without reading the producers' hot line.
    closed: CachePadded<AtomicBool>,
}

impl Sequencer {
    /// Claims the next position whose slot is free. On `Ok(pos)` the caller owns the slot
    /// until it publishes (`seq = pos + 1`).
    pub(crate) fn claim<T>(&self, slots: &Slots<T>) -> Result<u64, ClaimError> {
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            if tail & CLOSED != 0 {
                return Err(ClaimError::Closed);
            }
            // Acquire pairs with the consumer's Release when it freed the slot: its read of
            // the previous item happens before our write of the next one.
            let seq = self.slot_seq(slots, tail);
            let lap = seq.wrapping_sub(tail) as i64;
            if lap == 0 {
                // Relaxed is enough: the CAS only arbitrates between producers; the data
                // itself is ordered by the slot's sequence number.
                match self.tail.compare_exchange_weak(
                    tail,
                    tail + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Ok(tail),
                    Err(now) => tail = now,
                }
            } else if lap < 0 {
                // The slot still holds the item from one lap ago: the ring is full.
                return Err(ClaimError::Full);
            } else {
                // Another producer claimed this position since we read the tail.
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    fn slot_seq<T>(&self, slots: &Slots<T>, pos: u64) -> u64 {
        slots.at(pos).seq.load(Ordering::Acquire)
    }

    /// Marks the ring closed; claims after this fail. Returns whether it was open.
    pub(crate) fn close(&self) -> bool {
        let was_open = self.tail.fetch_or(CLOSED, Ordering::AcqRel) & CLOSED == 0;
        // Release: a consumer that sees the flag also sees the mark.
        self.closed.store(true, Ordering::Release);
        was_open
    }

    /// Positions claimed so far (the tail without the closed mark).
    pub(crate) fn claimed(&self) -> u64 {
        self.tail.load(Ordering::Relaxed) & !CLOSED
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.tail.load(Ordering::Relaxed) & CLOSED != 0
    }

    /// Whether the ring is closed and every position claimed before closing is below `head`
    /// (i.e. already consumed): nothing will ever arrive again.
    pub(crate) fn is_drained(&self, head: u64) -> bool {
        // Not closed yet (or the flag is not visible yet, in which case the next poll sees
        // it): nothing more to check.
        if !self.closed.load(Ordering::Acquire) {
            return false;
        }
        // Acquire: pairs with the close's AcqRel, so claims ordered before it are counted.
        let tail = self.tail.load(Ordering::Acquire);
        tail & CLOSED != 0 && tail & !CLOSED == head
    }
}
