//! The topic hub: fan-out of encoded updates to any number of subscribers without ever
//! waiting for one.
//!
//! Each topic is a bounded broadcast ring of shared, already-encoded messages: publishing is
//! O(1) whatever the number of subscribers, and each subscriber reads at its own cursor. The
//! ring's capacity is every subscriber's queue limit: a subscriber that falls further behind is
//! handled by its topic's [`SlowPolicy`] — conflated to the latest message, resynced from a fresh
//! snapshot, or disconnected with a reason — and each action is counted in [`HubStats`].
//!
//! A short history per topic answers resume-from-seq. Publishing and subscribing take the
//! topic's history lock so a subscriber's replay and its live stream meet with no gap and no
//! duplicate; the lock is held for a push and a ring write only.

use crate::topic::{Channel, SlowPolicy, Topic};
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;

/// One update, shared by every subscriber of its topic, and encoded at most once per wire
/// format: the publisher hands over what the update says (`body`) and the first subscriber
/// that needs JSON or protobuf encodes it, for everyone. A topic nobody reads (most of them,
/// most of the time) then costs the feeds thread no encoding at all.
///
/// `Arc<Message>` is `Arc<Message<dyn Encode>>`: each view publishes its own `Sized` body
/// type and the `Arc` coerces, so a message is still one allocation.
pub struct Message<B: ?Sized + Encode = dyn Encode> {
    /// Sequence number of the last engine event this message reflects.
    pub seq: u64,
    /// `seq` of the previous message on the same topic (0 for the first): a subscriber that
    /// sees `prev_seq` differ from the last `seq` it got has a gap.
    pub prev_seq: u64,
    pub kind: MessageKind,
    /// `json()` compressed once for every WebSocket connection in shared-deflate mode, filled
    /// by the first connection that needs it (the compressor lives in `servers`).
    pub deflated: DeflatedCache,
    json: OnceLock<Bytes>,
    proto: OnceLock<Bytes>,
    body: B,
}

/// What a message says, able to write itself in both wire formats. Implemented by each view's
/// update type; [`Encoded`] holds bytes encoded up front (snapshots, tests).
pub trait Encode: Send + Sync + 'static {
    /// The message as JSON text.
    fn json(&self, seq: u64, prev_seq: u64) -> Bytes;
    /// The message as protobuf: a `ticker.v1.MarketDataMessage` (market data) or
    /// `ticker.v1.OrderUpdate` (order updates) without its per-subscriber fields.
    fn proto(&self, seq: u64, prev_seq: u64) -> Bytes;
}

/// A body already encoded.
pub struct Encoded {
    pub json: Bytes,
    pub proto: Bytes,
}

impl Encode for Encoded {
    fn json(&self, _: u64, _: u64) -> Bytes {
        self.json.clone()
    }

    fn proto(&self, _: u64, _: u64) -> Bytes {
        self.proto.clone()
    }
}

impl Message {
    /// A message whose encodings are made by `body` when first asked for.
    pub fn lazy<B: Encode>(seq: u64, prev_seq: u64, kind: MessageKind, body: B) -> Arc<Message> {
        Arc::new(Message {
            seq,
            prev_seq,
            kind,
            deflated: DeflatedCache::default(),
            json: OnceLock::new(),
            proto: OnceLock::new(),
            body,
        })
    }

    /// A message encoded up front.
    pub fn encoded(
        seq: u64,
        prev_seq: u64,
        kind: MessageKind,
        json: Bytes,
        proto: Bytes,
    ) -> Arc<Message> {
        Arc::new(Message {
            seq,
            prev_seq,
            kind,
            deflated: DeflatedCache::default(),
            json: OnceLock::from(json.clone()),
            proto: OnceLock::from(proto.clone()),
            body: Encoded { json, proto },
        })
    }

    /// The message as JSON text, encoded on first use.
    pub fn json(&self) -> &Bytes {
        self.json
            .get_or_init(|| self.body.json(self.seq, self.prev_seq))
    }

    /// The message as protobuf, encoded on first use: a `ticker.v1.MarketDataMessage` (market
    /// data) or `ticker.v1.OrderUpdate` (order updates) without its per-subscriber fields.
    pub fn proto(&self) -> &Bytes {
        self.proto
            .get_or_init(|| self.body.proto(self.seq, self.prev_seq))
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("seq", &self.seq)
            .field("prev_seq", &self.prev_seq)
            .field("kind", &self.kind)
            .field("json", &self.json.get())
            .finish_non_exhaustive()
    }
}

/// Messages are equal when they say the same thing in both formats (encoding them if needed);
/// the deflate cache takes no part.
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
            && self.prev_seq == other.prev_seq
            && self.kind == other.kind
            && self.json() == other.json()
            && self.proto() == other.proto()
    }
}

impl Eq for Message {}

/// A lazily filled cache of a message's compressed form. It is derived from the message, so
/// it takes no part in equality: a message compares equal whether or not it was compressed.
#[derive(Debug, Clone, Default)]
pub struct DeflatedCache(OnceLock<Bytes>);

impl DeflatedCache {
    /// The cached bytes, computing them with `deflate` the first time; concurrent callers
    /// wait for that one computation.
    pub fn get_or_init(&self, deflate: impl FnOnce() -> Bytes) -> &Bytes {
        self.0.get_or_init(deflate)
    }

    pub fn get(&self) -> Option<&Bytes> {
        self.0.get()
    }
}

impl PartialEq for DeflatedCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for DeflatedCache {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Update,
    /// A full state (depth book, L3 book, latest ticker) a subscriber can start from.
    Snapshot,
}

/// Builds a snapshot of a topic's current state on demand (depth and L3 books, latest values).
pub trait SnapshotSource: Send + Sync {
    fn snapshot(&self) -> Option<Arc<Message>>;
}

/// Why a subscriber got a snapshot instead of (or before) updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotReason {
    /// First message of a new subscription.
    Initial,
    /// The subscriber fell behind its queue limit and starts again from here.
    Resync,
    /// The requested `from_seq` is older than the topic's history.
    ResumeTooOld,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Message(Arc<Message>),
    Snapshot {
        message: Arc<Message>,
        reason: SnapshotReason,
    },
    /// Messages were skipped under the conflate policy; this is the latest one.
    Conflated {
        message: Arc<Message>,
        skipped: u64,
    },
    /// A resume request reached back beyond the history of a topic with no snapshot: the
    /// messages after `from_seq` up to `resumed_after` are gone. Replay continues after it.
    Gap {
        from_seq: u64,
        resumed_after: u64,
    },
}

impl Delivery {
    pub fn message(&self) -> Option<&Arc<Message>> {
        match self {
            Delivery::Message(m)
            | Delivery::Snapshot { message: m, .. }
            | Delivery::Conflated { message: m, .. } => Some(m),
            Delivery::Gap { .. } => None,
        }
    }
}

/// Why a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    #[error("subscriber fell {skipped} messages behind its queue limit of {limit} on a stream that cannot skip")]
    TooSlow { skipped: u64, limit: usize },
    #[error("the topic was closed")]
    Closed,
}

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
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            conflated_queue: 16,
            resync_queue: 1024,
            lossless_queue: 8192,
            history: 1024,
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
}

/// Kinds of topic the counters are kept by: each market-data channel, then order updates.
pub const KINDS: usize = Channel::ALL.len() + 1;

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

    fn add(counter: &[AtomicU64; KINDS], topic: Topic, n: u64) {
        counter[topic.kind_index()].fetch_add(n, Ordering::Relaxed);
    }
}

/// One topic: its broadcast ring, history and snapshot source.
pub struct TopicState {
    topic: Topic,
    tx: broadcast::Sender<Arc<Message>>,
    history: Mutex<VecDeque<Arc<Message>>>,
    history_len: usize,
    snapshot: RwLock<Option<Arc<dyn SnapshotSource>>>,
    stats: Arc<HubStats>,
}

impl TopicState {
    pub fn topic(&self) -> Topic {
        self.topic
    }

    /// Publishes one message to every subscriber. Never waits for a subscriber.
    pub fn publish(&self, message: Arc<Message>) {
        let mut history = self.history.lock();
        if history.len() == self.history_len {
            history.pop_front();
        }
        history.push_back(message.clone());
        // An error only means nobody subscribes right now.
        let _ = self.tx.send(message);
        drop(history);
        HubStats::add(&self.stats.published, self.topic, 1);
    }

    /// The most recent message, if any.
    pub fn latest(&self) -> Option<Arc<Message>> {
        self.history.lock().back().cloned()
    }

    /// The messages kept for resume-from-seq, oldest first (shared, not copied: for snapshots).
    pub fn history(&self) -> Vec<Arc<Message>> {
        self.history.lock().iter().cloned().collect()
    }

    /// Replaces the history with `messages` (oldest first; the newest that fit are kept). For
    /// restoring from a snapshot before anyone subscribes: live subscribers are not told.
    pub fn replace_history(&self, messages: Vec<Arc<Message>>) {
        let skip = messages.len().saturating_sub(self.history_len);
        let mut history = self.history.lock();
        history.clear();
        history.extend(messages.into_iter().skip(skip));
    }

    pub fn set_snapshot_source(&self, source: Arc<dyn SnapshotSource>) {
        *self.snapshot.write() = Some(source);
    }

    fn snapshot(&self) -> Option<Arc<Message>> {
        let source = self.snapshot.read().clone();
        match source {
            Some(s) => s.snapshot(),
            None => None,
        }
    }

    pub fn subscriber_count(&self) -> usize {
        self.tx.receiver_count()
    }
}

pub struct Hub {
    config: HubConfig,
    topics: RwLock<HashMap<Topic, Arc<TopicState>>>,
    stats: Arc<HubStats>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(HubConfig::default())
    }
}

impl Hub {
    pub fn new(config: HubConfig) -> Self {
        Hub {
            config,
            topics: RwLock::new(HashMap::new()),
            stats: Arc::new(HubStats::default()),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Live subscribers by kind of topic ([`Topic::kind_index`]), over all topics. Takes the
    /// topic map's read lock: for scrapes, not for hot paths.
    pub fn live_subscribers(&self) -> [u64; KINDS] {
        let mut live = [0; KINDS];
        for (topic, state) in self.topics.read().iter() {
            live[topic.kind_index()] += state.subscriber_count() as u64;
        }
        live
    }

    pub fn stats(&self) -> &Arc<HubStats> {
        &self.stats
    }

    /// The topic's state, created on first use. Publishers keep the returned handle.
    pub fn topic(&self, topic: Topic) -> Arc<TopicState> {
        if let Some(t) = self.topics.read().get(&topic) {
            return t.clone();
        }
        self.topics
            .write()
            .entry(topic)
            .or_insert_with(|| {
                let (tx, _) = broadcast::channel(self.config.queue_limit(topic.policy()));
                Arc::new(TopicState {
                    topic,
                    tx,
                    history: Mutex::new(VecDeque::with_capacity(self.config.history)),
                    history_len: self.config.history.max(1),
                    snapshot: RwLock::new(None),
                    stats: self.stats.clone(),
                })
            })
            .clone()
    }

    /// Subscribes to a topic. Without `from_seq` the subscriber starts with the topic's
    /// snapshot (if it has one; for conflated topics the latest message); with it, the
    /// messages after `from_seq` are replayed from history first, or, when the history no
    /// longer reaches back that far, a fresh snapshot flagged [`SnapshotReason::ResumeTooOld`]
    /// (or a [`Delivery::Gap`] for topics without snapshots).
    pub fn subscribe(&self, topic: Topic, from_seq: Option<u64>) -> Subscription {
        let state = self.topic(topic);
        let rx = state.tx.subscribe();
        let mut sub = Subscription {
            topic,
            state,
            rx,
            pending: VecDeque::new(),
            last_seq: 0,
            limit: self.config.queue_limit(topic.policy()),
            stats: self.stats.clone(),
        };
        HubStats::add(&self.stats.subscribers, topic, 1);
        let Some(from) = from_seq else {
            sub.start_from_snapshot(SnapshotReason::Initial);
            return sub;
        };
        HubStats::add(&self.stats.resumes, topic, 1);
        let state = sub.state.clone();
        let history = state.history.lock();
        sub.rx = state.tx.subscribe();
        let newest = history.back().map_or(0, |m| m.seq);
        let covered = from >= newest || history.front().is_some_and(|m| m.prev_seq <= from);
        if covered {
            sub.last_seq = from.min(newest);
            sub.pending.extend(
                history
                    .iter()
                    .filter(|m| m.seq > from)
                    .cloned()
                    .map(Delivery::Message),
            );
            return sub;
        }
        HubStats::add(&self.stats.resumes_too_old, topic, 1);
        let has_snapshot =
            state.snapshot.read().is_some() || topic.policy() == SlowPolicy::Conflate;
        if !has_snapshot {
            let resumed_after = history.front().map_or(from, |m| m.prev_seq);
            sub.pending.push_back(Delivery::Gap {
                from_seq: from,
                resumed_after,
            });
            sub.pending
                .extend(history.iter().cloned().map(Delivery::Message));
            sub.last_seq = newest;
            return sub;
        }
        drop(history);
        sub.start_from_snapshot(SnapshotReason::ResumeTooOld);
        sub
    }
}

/// One subscriber's view of a topic. Dropping it unsubscribes.
pub struct Subscription {
    topic: Topic,
    state: Arc<TopicState>,
    rx: broadcast::Receiver<Arc<Message>>,
    pending: VecDeque<Delivery>,
    /// `seq` of the last message delivered (or of the snapshot started from).
    last_seq: u64,
    limit: usize,
    stats: Arc<HubStats>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stats.subscribers[self.topic.kind_index()].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Subscription {
    pub fn topic(&self) -> Topic {
        self.topic
    }

    /// `seq` of the last message delivered.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Queues a fresh snapshot (if the topic has a source, or the latest message for conflated
    /// topics) and skips live messages it already covers.
    fn start_from_snapshot(&mut self, reason: SnapshotReason) {
        // Subscribe to the live ring before reading the snapshot: every update the snapshot
        // does not reflect is then in the ring.
        self.rx = self.state.tx.subscribe();
        let snapshot = self.state.snapshot().or_else(|| {
            (self.topic.policy() == SlowPolicy::Conflate)
                .then(|| self.state.latest())
                .flatten()
        });
        if let Some(message) = snapshot {
            self.last_seq = message.seq;
            self.pending
                .push_back(Delivery::Snapshot { message, reason });
        }
    }

    fn next_pending(&mut self) -> Option<Delivery> {
        let d = self.pending.pop_front()?;
        if let Delivery::Message(m) = &d {
            self.last_seq = self.last_seq.max(m.seq);
        }
        Some(d)
    }

    fn accept(&mut self, message: Arc<Message>) -> Option<Delivery> {
        if message.seq <= self.last_seq {
            return None;
        }
        self.last_seq = message.seq;
        Some(Delivery::Message(message))
    }

    fn on_lag(&mut self, skipped: u64) -> Result<Option<Delivery>, Ended> {
        match self.topic.policy() {
            SlowPolicy::Conflate => {
                let mut latest = None;
                let mut dropped = skipped;
                loop {
                    match self.rx.try_recv() {
                        Ok(m) => {
                            if latest.is_some() {
                                dropped += 1;
                            }
                            latest = Some(m);
                        }
                        Err(broadcast::error::TryRecvError::Lagged(n)) => dropped += n,
                        Err(_) => break,
                    }
                }
                HubStats::add(&self.stats.conflations, self.topic, 1);
                HubStats::add(&self.stats.conflated_messages, self.topic, dropped);
                Ok(latest.map(|message| {
                    self.last_seq = message.seq;
                    Delivery::Conflated {
                        message,
                        skipped: dropped,
                    }
                }))
            }
            SlowPolicy::Resync => {
                HubStats::add(&self.stats.resyncs, self.topic, 1);
                self.pending.clear();
                self.last_seq = 0;
                self.start_from_snapshot(SnapshotReason::Resync);
                Ok(self.next_pending())
            }
            SlowPolicy::Disconnect => {
                HubStats::add(&self.stats.disconnects, self.topic, 1);
                Err(Ended::TooSlow {
                    skipped,
                    limit: self.limit,
                })
            }
        }
    }

    /// The next delivery without waiting; `Ok(None)` when nothing is queued.
    pub fn try_recv(&mut self) -> Result<Option<Delivery>, Ended> {
        if let Some(d) = self.next_pending() {
            return Ok(Some(d));
        }
        loop {
            match self.rx.try_recv() {
                Ok(m) => {
                    if let Some(d) = self.accept(m) {
                        return Ok(Some(d));
                    }
                }
                Err(broadcast::error::TryRecvError::Empty) => return Ok(None),
                Err(broadcast::error::TryRecvError::Lagged(n)) => return self.on_lag(n),
                Err(broadcast::error::TryRecvError::Closed) => return Err(Ended::Closed),
            }
        }
    }

    /// The next delivery, waiting for one.
    pub async fn recv(&mut self) -> Result<Delivery, Ended> {
        if let Some(d) = self.next_pending() {
            return Ok(d);
        }
        loop {
            match self.rx.recv().await {
                Ok(m) => {
                    if let Some(d) = self.accept(m) {
                        return Ok(d);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    if let Some(d) = self.on_lag(n)? {
                        return Ok(d);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return Err(Ended::Closed),
            }
        }
    }
}
