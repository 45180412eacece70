//! The market's counters, read by `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use ticker_engine::{Event, EventKind, RejectReason, Timestamp};

/// Counters of the running market, read by `/metrics`.
#[derive(Debug)]
pub struct MarketStats {
    /// Commands stamped for the engine (from clients, the simulator and heartbeats).
    pub commands: AtomicU64,
    /// Of those, heartbeats and snapshot cuts (which have no outcome event).
    pub heartbeats: AtomicU64,
    pub events: AtomicU64,
    /// Commands submitted but refused by a full ingress ring (never stamped into the engine).
    pub busy_rejects: AtomicU64,
    /// Outcomes the feeds saw: accepted, and rejected in total and by reason.
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub rejects: [AtomicU64; RejectReason::ALL.len()],
    /// From the engine taking a command to the feeds having published its updates.
    pub engine_latency: crate::metrics::Histogram,
    /// Events stamped before this (ns) are the simulated past run at start: their age is not
    /// a latency [0].
    pub latency_from: AtomicU64,
    /// The gRPC front's calls against this market, by method and status.
    pub grpc: crate::metrics::grpc::GrpcStats,
}

// By hand: `Default` is derived for arrays of at most 32 elements, and there are more reasons.
impl Default for MarketStats {
    fn default() -> Self {
        MarketStats {
            commands: AtomicU64::default(),
            heartbeats: AtomicU64::default(),
            events: AtomicU64::default(),
            busy_rejects: AtomicU64::default(),
            accepted: AtomicU64::default(),
            rejected: AtomicU64::default(),
            rejects: std::array::from_fn(|_| AtomicU64::default()),
            engine_latency: crate::metrics::Histogram::default(),
            latency_from: AtomicU64::default(),
            grpc: crate::metrics::grpc::GrpcStats::default(),
        }
    }
}

impl MarketStats {
    /// Commands submitted whose outcome the feeds have not seen: what the ingress ring, the
    /// engine and the egress ring hold together.
    pub fn in_flight(&self) -> u64 {
        let submitted = self.commands.load(Ordering::Relaxed)
            - self.heartbeats.load(Ordering::Relaxed)
            - self.busy_rejects.load(Ordering::Relaxed);
        let decided = self.accepted.load(Ordering::Relaxed) + self.rejected.load(Ordering::Relaxed);
        submitted.saturating_sub(decided)
    }

    /// Counts the outcomes of a batch and how long its commands took to reach the feeds.
    pub(super) fn observe(&self, events: &[Event], now: Timestamp) {
        self.events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let latency_from = self.latency_from.load(Ordering::Relaxed);
        for e in events {
            match e.kind {
                EventKind::PlaceAccepted { .. } | EventKind::Accepted { .. } => {
                    self.accepted.fetch_add(1, Ordering::Relaxed);
                }
                EventKind::Rejected { reason, .. } => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    if let Some(i) = RejectReason::ALL.iter().position(|r| *r == reason) {
                        self.rejects[i].fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => continue,
            }
            if e.ts >= latency_from {
                self.engine_latency.record_ns(now.saturating_sub(e.ts));
            }
        }
    }
}
