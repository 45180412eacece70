//! From what the clients logged to latency histograms: the order-entry ack latency of each
//! command, and for each subscriber the time from a command's submission to the first
//! market-data message that reflects it.
//!
//! "Reflects it" is decided by sequence number, after the run: the engine gives each accepted
//! command a sequence number (`engine_seq`, on its ack), and every market-data message carries
//! the `seq` of the last engine event it reflects. The first message a subscriber received
//! with `seq ≥ engine_seq` is therefore the first that includes the command. Joining offline
//! means a subscriber may see the update before the order-entry client sees its ack (they are
//! different connections) without any coordination between them while measuring.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// One accepted command as its order-entry client saw it; times are nanoseconds since the
/// start of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub engine_seq: u64,
    /// When it was due to be sent (latency mode: its slot in the fixed-rate schedule, so a
    /// stalled sender counts against the server — no coordinated omission), or sent.
    pub sent_ns: u64,
    pub acked_ns: u64,
}

/// One market-data message as a subscriber received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub seq: u64,
    pub at_ns: u64,
}

pub use crate::report::latency_histogram as histogram;

/// Adds each command's submission → ack time.
pub fn record_acks(sent: &[Sent], into: &mut Histogram<u64>) {
    for s in sent {
        into.saturating_record(s.acked_ns.saturating_sub(s.sent_ns).max(1));
    }
}

/// Adds, for each command (sorted by `engine_seq`), the time from its submission to the first
/// message in `received` (in arrival order) with `seq ≥ engine_seq`. Returns how many commands
/// no message reflected (the run ended first).
pub fn record_market_data(sent: &[Sent], received: &[Received], into: &mut Histogram<u64>) -> u64 {
    debug_assert!(sent.windows(2).all(|w| w[0].engine_seq <= w[1].engine_seq));
    let mut unmatched = 0;
    let mut i = 0;
    // The highest seq seen so far only grows, so one pass over both lists finds, for every
    // command, the first arrival whose seq reaches it — even if a resync made seqs jump.
    let mut highest = 0;
    for s in sent {
        while highest < s.engine_seq && i < received.len() {
            highest = highest.max(received[i].seq);
            i += 1;
        }
        if highest < s.engine_seq {
            unmatched += 1;
            continue;
        }
        let at = received[i - 1].at_ns;
        into.saturating_record(at.saturating_sub(s.sent_ns).max(1));
    }
    unmatched
}

/// The figures of one histogram, in microseconds with three decimals (nanosecond resolution).
pub fn summary(h: &Histogram<u64>) -> Value {
    let us = |ns: u64| ns as f64 / 1000.0;
    json!({
        "count": h.len(),
        "min_us": us(if h.is_empty() { 0 } else { h.min() }),
        "p50_us": us(h.value_at_quantile(0.50)),
        "p90_us": us(h.value_at_quantile(0.90)),
        "p99_us": us(h.value_at_quantile(0.99)),
        "p99_9_us": us(h.value_at_quantile(0.999)),
        "max_us": us(h.max()),
        "mean_us": us(h.mean().round() as u64),
    })
}

/// The percentile curve for plotting: (percentile, latency in ns) at percentiles 0, 90, 99,
/// 99.9, ... spaced evenly on a "nines" scale, up to what the sample count supports.
pub fn curve(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let max_nines = (h.len() as f64).log10().clamp(1.0, 6.0);
    let steps = (max_nines * 20.0) as usize;
    let mut points: Vec<(f64, u64)> = (0..=steps)
        .map(|k| {
            let nines = k as f64 / 20.0;
            let q = 1.0 - 10f64.powf(-nines);
            (q * 100.0, h.value_at_quantile(q))
        })
        .collect();
    points.push((100.0, h.max()));
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(engine_seq: u64, sent_ns: u64) -> Sent {
        Sent {
            engine_seq,
            sent_ns,
            acked_ns: sent_ns + 10,
        }
    }

    fn rx(seq: u64, at_ns: u64) -> Received {
        Received { seq, at_ns }
    }

    #[test]
    fn each_command_is_joined_to_the_first_message_that_reaches_its_seq() {
        let sent = [sent(10, 100), sent(11, 105), sent(20, 200)];
        // 10 arrives alone, 11 is folded into a later message, 20 into one after a resync jump.
        let received = [
            rx(5, 90),
            rx(10, 150),
            rx(12, 180),
            rx(25, 400),
            rx(21, 500),
        ];
        let mut h = histogram();
        assert_eq!(record_market_data(&sent, &received, &mut h), 0);
        assert_eq!(h.len(), 3);
        assert_eq!(h.min(), 50); // 10: 150 - 100
        assert!(h.equivalent(h.max(), 200)); // 20: 400 - 200
        assert!(h.count_at(75) == 1); // 11: 180 - 105
    }

    #[test]
    fn commands_after_the_last_message_are_unmatched() {
        let sent = [sent(1, 0), sent(9, 10)];
        let mut h = histogram();
        assert_eq!(record_market_data(&sent, &[rx(3, 50)], &mut h), 1);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn ack_latency_is_ack_minus_send() {
        let mut h = histogram();
        record_acks(&[sent(1, 1_000), sent(2, 2_000)], &mut h);
        assert_eq!(h.len(), 2);
        assert_eq!(h.max(), 10);
    }

    #[test]
    fn the_curve_is_monotonic_and_ends_at_the_max() {
        let mut h = histogram();
        for v in 1..=10_000u64 {
            h.record(v * 100).unwrap();
        }
        let c = curve(&h);
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(c.last().unwrap().1, h.max());
        let s = summary(&h);
        assert_eq!(s["count"], 10_000);
        assert!(s["p50_us"].as_f64().unwrap() > 490.0 && s["p50_us"].as_f64().unwrap() < 510.0);
    }
}
