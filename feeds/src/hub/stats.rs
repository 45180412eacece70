//! The hub's counters, by kind of topic.

use crate::topic::{Channel, Topic};
use std::sync::atomic::{AtomicU64, Ordering};

/// Kinds of topic the counters are kept by: each market-data channel, then order updates, the
/// drop copy and positions.
pub const KINDS: usize = Channel::ALL.len() + 3;

/// Counters of the hub, by kind of topic ([`Topic::kind_index`]).
#[derive(Debug, Default)]
pub struct HubStats {
    pub published: [AtomicU64; KINDS],
    pub subscribers: [AtomicU64; KINDS],
    pub conflations: [AtomicU64; KINDS],
    pub conflated_messages: [AtomicU64; KINDS],
    pub resyncs: [AtomicU64; KINDS],
    pub disconnects: [AtomicU64; KINDS],
    pub resumes: [AtomicU64; KINDS],
    pub resumes_too_old: [AtomicU64; KINDS],
}

impl HubStats {
    pub fn get(counter: &[AtomicU64; KINDS], topic: Topic) -> u64 {
        counter[topic.kind_index()].load(Ordering::Relaxed)
    }

    pub(super) fn add(counter: &[AtomicU64; KINDS], topic: Topic, n: u64) {
        counter[topic.kind_index()].fetch_add(n, Ordering::Relaxed);
    }
}
