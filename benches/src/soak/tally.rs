//! What the load tasks count while the soak runs. Each task adds to one shared [`Tally`]; the
//! run loop takes the counts and the ack-latency histogram once per interval, which resets
//! them, so a row shows that interval alone.

use crate::load::latency::histogram;
use hdrhistogram::Histogram;
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Failure descriptions kept for the verdict; the count goes on past it.
const NOTES_KEPT: usize = 40;

#[derive(Debug)]
pub struct Tally {
    /// Order commands answered (accepted or rejected by the engine).
    pub commands: AtomicU64,
    /// Engine rejects the flow expects (post-only would cross, unknown order: the simulated
    /// market moved onto or through the flow's price).
    pub engine_rejects: AtomicU64,
    /// Post-only orders of the touch flow the engine rejected as crossing the book.
    pub touch_crossed: AtomicU64,
    /// Orders of the touch flow the market filled before their cancel (`unknown_order`).
    pub touch_filled: AtomicU64,
    /// WebSocket connections opened (churners, slow and stalled readers, bad inputs).
    pub ws_connects: AtomicU64,
    /// gRPC market-data and order-update streams opened.
    pub grpc_streams: AtomicU64,
    /// Resumes (`from_seq`) whose first message chained to the seq asked for.
    pub resumes_verified: AtomicU64,
    /// Connections the server closed 1013 (or ended RESOURCE_EXHAUSTED) for being too slow.
    pub too_slow_closes: AtomicU64,
    /// Stalled readers that were conflated or resynced and then caught up, still open.
    pub stalls_survived: AtomicU64,
    /// Stalled readers dropped without a close frame after a stall past `write_timeout`.
    pub stalls_dropped: AtomicU64,
    /// Bad inputs answered with the documented typed error.
    pub bad_inputs: AtomicU64,
    /// Messages a lossless sequence skipped, gap notices on resumes within the history.
    pub lost: AtomicU64,
    /// Unexpected answers, streams the server ended, clients that failed.
    pub failures: AtomicU64,
    notes: Mutex<Vec<String>>,
    acks: Mutex<Histogram<u64>>,
}

/// One interval's counts, taken with [`Tally::take`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub commands: u64,
    pub engine_rejects: u64,
    pub touch_crossed: u64,
    pub touch_filled: u64,
    pub ws_connects: u64,
    pub grpc_streams: u64,
    pub resumes_verified: u64,
    pub too_slow_closes: u64,
    pub stalls_survived: u64,
    pub stalls_dropped: u64,
    pub bad_inputs: u64,
    pub lost: u64,
    pub failures: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            commands: AtomicU64::new(0),
            engine_rejects: AtomicU64::new(0),
            touch_crossed: AtomicU64::new(0),
            touch_filled: AtomicU64::new(0),
            ws_connects: AtomicU64::new(0),
            grpc_streams: AtomicU64::new(0),
            resumes_verified: AtomicU64::new(0),
            too_slow_closes: AtomicU64::new(0),
            stalls_survived: AtomicU64::new(0),
            stalls_dropped: AtomicU64::new(0),
            bad_inputs: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            notes: Mutex::new(Vec::new()),
            acks: Mutex::new(histogram()),
        }
    }
}

/// Adds `n` to one of a [`Tally`]'s counters.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Tally {
    /// Something went wrong that should not: counted, and described in the verdict.
    pub fn fail(&self, what: impl Display) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.note(format!("failure: {what}"));
    }

    /// `n` messages of a sequence that must not skip were lost.
    pub fn lose(&self, n: u64, what: impl Display) {
        self.lost.fetch_add(n, Ordering::Relaxed);
        self.note(format!("lost sequence: {what}"));
    }

    fn note(&self, line: String) {
        let mut notes = self.notes.lock().expect("notes lock");
        if notes.len() < NOTES_KEPT {
            notes.push(line);
        }
    }

    /// The descriptions so far (the first ones).
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().expect("notes lock").clone()
    }

    /// An order's submission → ack time.
    pub fn record_ack(&self, ns: u64) {
        self.acks
            .lock()
            .expect("acks lock")
            .saturating_record(ns.max(1));
    }

    /// This interval's counts and ack latencies; both start again from zero.
    pub fn take(&self) -> (Counts, Histogram<u64>) {
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        let counts = Counts {
            commands: take(&self.commands),
            engine_rejects: take(&self.engine_rejects),
            touch_crossed: take(&self.touch_crossed),
            touch_filled: take(&self.touch_filled),
            ws_connects: take(&self.ws_connects),
            grpc_streams: take(&self.grpc_streams),
            resumes_verified: take(&self.resumes_verified),
            too_slow_closes: take(&self.too_slow_closes),
            stalls_survived: take(&self.stalls_survived),
            stalls_dropped: take(&self.stalls_dropped),
            bad_inputs: take(&self.bad_inputs),
            lost: take(&self.lost),
            failures: take(&self.failures),
        };
        let acks = std::mem::replace(&mut *self.acks.lock().expect("acks lock"), histogram());
        (counts, acks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taking_an_interval_resets_counts_and_latencies_but_keeps_notes() {
        let t = Tally::default();
        add(&t.commands, 3);
        t.record_ack(2_000);
        t.fail("an unexpected answer");
        let (counts, acks) = t.take();
        assert_eq!((counts.commands, counts.failures, acks.len()), (3, 1, 1));
        let (counts, acks) = t.take();
        assert_eq!(counts, Counts::default());
        assert!(acks.is_empty());
        assert_eq!(t.notes(), vec!["failure: an unexpected answer".to_string()]);
    }
}
