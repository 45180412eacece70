//! Queue limits and history lengths of the hub, per kind of topic.

use crate::topic::{SlowPolicy, Topic};

/// Queue limits and history lengths, per kind of topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Messages a ticker or candle subscriber may fall behind before conflation. Default 16.
    pub conflated_queue: usize,
    /// Messages a depth or L3 subscriber may fall behind before a resync. Default 1,024.
    pub resync_queue: usize,
    /// Messages a trades or order-update subscriber may fall behind before it is
    /// disconnected. Default 8,192.
    pub lossless_queue: usize,
    /// Messages kept per topic for resume-from-seq. Default 1,024.
    pub history: usize,
    /// Messages the drop copy keeps for resume-from-seq: one topic carries every account's
    /// order flow, and a risk system that reconnects should find its place in it rather than
    /// restart from a snapshot. Default 100,000.
    pub drop_copy_history: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            conflated_queue: 16,
            resync_queue: 1024,
            lossless_queue: 8192,
            history: 1024,
            drop_copy_history: 100_000,
        }
    }
}

impl HubConfig {
    pub fn queue_limit(&self, policy: SlowPolicy) -> usize {
        match policy {
            SlowPolicy::Conflate => self.conflated_queue,
            SlowPolicy::Resync => self.resync_queue,
            SlowPolicy::Disconnect => self.lossless_queue,
        }
        .max(1)
    }

    /// Messages kept for resume-from-seq on `topic`.
    pub fn history_len(&self, topic: Topic) -> usize {
        match topic {
            Topic::DropCopy => self.drop_copy_history,
            _ => self.history,
        }
        .max(1)
    }

    /// Messages a topic's ring keeps: its queue limit, and for conflated topics as many as the
    /// history keeps anyway (the same messages: the ring only points at them), which a
    /// subscriber that the server itself served late may still catch up on.
    pub fn ring_capacity(&self, policy: SlowPolicy) -> usize {
        let limit = self.queue_limit(policy);
        match policy {
            SlowPolicy::Conflate => limit.max(self.history),
            SlowPolicy::Resync | SlowPolicy::Disconnect => limit,
        }
    }
}
