//! The topic hub: fan-out of encoded updates to any number of subscribers without ever
//! waiting for one.
//!
//! Each topic keeps a bounded ring of shared, already-encoded messages: publishing is O(1)
//! whatever the number of subscribers, and each subscriber reads at its own position. A
//! subscriber that falls further behind than its queue limit is handled by its topic's
//! [`SlowPolicy`] — conflated to the latest message, resynced from a fresh snapshot, or
//! disconnected with a reason — and each action is counted in [`HubStats`]. The ring holds the
//! queue limit, and for conflated topics as much as the history: a front that can tell a
//! client that does not keep up (its socket refuses bytes) from its own delay in serving it
//! lets the latter catch up on everything the ring still holds ([`Subscription::next_in`]).
//!
//! Waking is per batch, not per message: a publish wakes the subscribers that are waiting for
//! the topic right then, once each, and a subscriber that finds several messages takes them all
//! before it waits again. A front that serves many subscribers from one task (the WebSocket
//! writers) copies the ring's new messages once into a [`Window`] and lets each subscription
//! step through it ([`Subscription::next_in`]), so it pays neither a lock nor a reference count
//! per message per subscriber.
//!
//! A short history per topic answers resume-from-seq. Publishing and subscribing take the
//! topic's history lock so a subscriber's replay and its live stream meet with no gap and no
//! duplicate; the lock is held for a push and a ring write only.

use crate::topic::{SlowPolicy, Topic};
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;

mod config;
mod message;
mod stats;
mod subscription;

pub use config::HubConfig;
pub use message::{Encode, Encoded, FrameCache, Message, MessageKind};
pub use stats::{HubStats, KINDS};
pub use subscription::{Next, Subscription};

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

/// Someone waiting for a topic's next message: woken once by the next publish, then off the
/// topic's list until it waits again. One per waiting task and topic.
#[derive(Debug, Default)]
pub struct Waiter {
    waker: Mutex<Option<Waker>>,
    /// On the topic's list now (so waiting again does not add it twice).
    listed: AtomicBool,
}

impl Waiter {
    pub fn new() -> Arc<Waiter> {
        Arc::new(Waiter::default())
    }

    fn wake(&self) {
        self.listed.store(false, Ordering::Release);
        if let Some(waker) = self.waker.lock().take() {
            waker.wake();
        }
    }
}

/// The live messages of a topic: the newest `capacity` of them, each at its position (how
/// many messages the topic published before it).
struct Ring {
    messages: VecDeque<Arc<Message>>,
    /// Position of `messages[0]`.
    start: u64,
    capacity: usize,
}

impl Ring {
    fn end(&self) -> u64 {
        self.start + self.messages.len() as u64
    }

    fn push(&mut self, message: Arc<Message>) {
        if self.messages.len() == self.capacity {
            self.messages.pop_front();
            self.start += 1;
        }
        self.messages.push_back(message);
    }

    /// Drops every message, keeping the positions: nobody is left to read them.
    fn forget(&mut self) {
        self.start += self.messages.len() as u64;
        self.messages.clear();
    }
}

/// Where a subscription reads: the topic's ring under its lock, or a reader's [`Window`].
trait Source {
    fn start(&self) -> u64;
    fn end(&self) -> u64;
    /// The message at `position`, which is in `start()..end()`.
    fn at(&self, position: u64) -> &Arc<Message>;
}

impl Source for Ring {
    fn start(&self) -> u64 {
        self.start
    }
    fn end(&self) -> u64 {
        Ring::end(self)
    }
    fn at(&self, position: u64) -> &Arc<Message> {
        &self.messages[(position - self.start) as usize]
    }
}

/// How many publishes ahead a full history starts fetching the message it will evict. A long
/// history (the drop copy keeps 100,000 messages) lets go of a message written long ago: its
/// cache lines are cold, and dropping it stalled on them — half of a catching-up gateway's
/// publishing time. A few publishes of the same topic later, they are in cache.
const EVICT_AHEAD: usize = 8;

/// Starts fetching the lines of a message (its reference counts and fields), which dropping
/// its last reference reads and writes.
fn prefetch_message(message: &Arc<Message>) {
    /// The most lines fetched: a message's own fields fit in four.
    const LINES: usize = 4;
    let data = Arc::as_ptr(message).cast::<u8>();
    // The strong and weak counts sit just before the value.
    let start = data.wrapping_sub(2 * std::mem::size_of::<usize>());
    let len =
        (std::mem::size_of_val(&**message) + 2 * std::mem::size_of::<usize>()).min(LINES * 64);
    ticker_engine::prefetch::prefetch_bytes(start, len);
}

/// One topic: its ring, history, snapshot source and waiting subscribers.
pub struct TopicState {
    topic: Topic,
    ring: RwLock<Ring>,
    /// `ring.end()`, readable without the lock: whether there is anything new.
    end: AtomicU64,
    history: Mutex<VecDeque<Arc<Message>>>,
    history_len: usize,
    snapshot: RwLock<Option<Arc<dyn SnapshotSource>>>,
    /// Woken by the next publish.
    waiting: Mutex<Vec<Arc<Waiter>>>,
    subscribers: AtomicUsize,
    /// Messages a subscriber may fall behind (the ring may hold more).
    limit: usize,
    stats: Arc<HubStats>,
}

impl TopicState {
    pub fn topic(&self) -> Topic {
        self.topic
    }

    /// Publishes one message to every subscriber. Never waits for a subscriber: it wakes the
    /// ones waiting for this topic, once each.
    pub fn publish(&self, message: Arc<Message>) {
        let mut history = self.history.lock();
        let evicted = if history.len() == self.history_len {
            if let Some(later) = history.get(EVICT_AHEAD) {
                prefetch_message(later);
            }
            history.pop_front()
        } else {
            None
        };
        history.push_back(message.clone());
        {
            let mut ring = self.ring.write();
            // A topic nobody follows keeps only its newest message in the ring (a subscriber
            // starts at the end; resumes come from the history): otherwise every account's
            // order topic held its last 8,192 updates for ever, about 1 GB for the simulated
            // accounts alone. Subscribers are counted under the ring's lock (`subscribe`), so
            // none can be between taking its place and being counted here.
            if self.subscribers.load(Ordering::Relaxed) == 0 {
                ring.forget();
            }
            ring.push(message);
            self.end.store(ring.end(), Ordering::Release);
        }
        drop(history);
        // Freed outside the lock: a resume reading the history does not wait for it.
        drop(evicted);
        HubStats::add(&self.stats.published, self.topic, 1);
        self.wake_waiting();
    }

    fn wake_waiting(&self) {
        let mut woken = std::mem::take(&mut *self.waiting.lock());
        if woken.is_empty() {
            return;
        }
        for waiter in woken.drain(..) {
            waiter.wake();
        }
        // Keep the list's allocation for the next publish.
        let mut waiting = self.waiting.lock();
        if waiting.is_empty() {
            *waiting = woken;
        }
    }

    /// Wakes `waker` once, at the next publish (or now, if a message was published since
    /// `seen_end`, the position the caller has read up to). A task that follows many topics
    /// waits on each with a [`Waiter`] of its own per topic.
    pub fn wait(&self, waiter: &Arc<Waiter>, waker: &Waker, seen_end: u64) {
        {
            let mut slot = waiter.waker.lock();
            match &*slot {
                Some(w) if w.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
        if !waiter.listed.swap(true, Ordering::AcqRel) {
            self.waiting.lock().push(waiter.clone());
        }
        // A publish between the caller's last read and the registration above has not seen
        // it: look again now that it is registered.
        if self.end() > seen_end {
            waker.wake_by_ref();
        }
    }

    /// Position after the newest message: how many messages the topic has published.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Messages the ring holds now (a test's view of what a topic retains).
    #[cfg(test)]
    fn ring_len(&self) -> usize {
        self.ring.read().messages.len()
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
        self.subscribers.load(Ordering::Relaxed)
    }
}

/// A topic's newest messages copied out of its ring by a reader that serves many subscribers
/// of it from one task: [`refresh`](Self::refresh) takes the ring's lock once for whatever was
/// published since, and each subscription then steps through the copy with
/// [`Subscription::next_in`], without locks or reference counts per message.
pub struct Window {
    state: Arc<TopicState>,
    messages: VecDeque<Arc<Message>>,
    /// Position of `messages[0]`.
    start: u64,
    /// The ring's.
    capacity: usize,
}

impl Source for Window {
    fn start(&self) -> u64 {
        self.start
    }
    fn end(&self) -> u64 {
        self.start + self.messages.len() as u64
    }
    fn at(&self, position: u64) -> &Arc<Message> {
        &self.messages[(position - self.start) as usize]
    }
}

impl Window {
    /// A window on `state`, holding what its ring holds now.
    pub fn new(state: Arc<TopicState>) -> Window {
        let (start, capacity) = {
            let ring = state.ring.read();
            (ring.start, ring.capacity)
        };
        let mut window = Window {
            messages: VecDeque::with_capacity(capacity),
            start,
            capacity,
            state,
        };
        window.refresh();
        window
    }

    pub fn topic(&self) -> &Arc<TopicState> {
        &self.state
    }

    /// Position after the newest message copied.
    pub fn end(&self) -> u64 {
        Source::end(self)
    }

    /// Copies what was published since the last refresh (at most the ring's capacity: what
    /// is older is gone for every subscriber); `false` when there was nothing new.
    pub fn refresh(&mut self) -> bool {
        let end = Source::end(self);
        if self.state.end() == end {
            return false;
        }
        let ring = self.state.ring.read();
        let from = end.max(ring.start);
        if from > end {
            self.messages.clear();
            self.start = from;
        }
        for position in from..ring.end() {
            if self.messages.len() == ring.capacity {
                self.messages.pop_front();
                self.start += 1;
            }
            self.messages.push_back(ring.at(position).clone());
        }
        true
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
                let limit = self.config.queue_limit(topic.policy());
                let capacity = self.config.ring_capacity(topic.policy());
                Arc::new(TopicState {
                    topic,
                    ring: RwLock::new(Ring {
                        messages: VecDeque::with_capacity(capacity),
                        start: 0,
                        capacity,
                    }),
                    end: AtomicU64::new(0),
                    history: Mutex::new(VecDeque::with_capacity(self.config.history_len(topic))),
                    history_len: self.config.history_len(topic),
                    snapshot: RwLock::new(None),
                    waiting: Mutex::new(Vec::new()),
                    subscribers: AtomicUsize::new(0),
                    limit,
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
        // Counted and placed under the ring's lock, which `publish` holds when it decides
        // whether anyone still reads the ring.
        let next = {
            let ring = state.ring.read();
            state.subscribers.fetch_add(1, Ordering::Relaxed);
            ring.end()
        };
        let mut sub = Subscription {
            topic,
            next,
            limit: state.limit,
            state,
            pending: VecDeque::new(),
            last_seq: 0,
            stats: self.stats.clone(),
            waiter: None,
            catch_up: false,
        };
        HubStats::add(&self.stats.subscribers, topic, 1);
        let Some(from) = from_seq else {
            sub.start_from_snapshot(SnapshotReason::Initial);
            return sub;
        };
        HubStats::add(&self.stats.resumes, topic, 1);
        let state = sub.state.clone();
        let history = state.history.lock();
        // Under the history lock the ring holds exactly what the history ends with.
        sub.next = state.end();
        let newest = history.back().map_or(0, |m| m.seq);
        let covered = from >= newest || history.front().is_some_and(|m| m.prev_seq <= from);
        if covered {
            // A `from_seq` past the newest message is a client that came from a server
            // further ahead on the same stream (a gateway that is catching up): it gets
            // nothing it has seen, and the chain goes on from its `from_seq`.
            sub.last_seq = from;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::Channel;
    use bytes::Bytes;
    use std::task::{Context, Poll, Wake};

    fn message(seq: u64) -> Arc<Message> {
        Message::encoded(
            seq,
            seq.saturating_sub(1),
            MessageKind::Update,
            Bytes::from(format!("{seq}")),
            Bytes::new(),
        )
    }

    fn topic(channel: Channel) -> Topic {
        Topic::Market {
            channel,
            instrument: 0,
        }
    }

    /// Counts its wakes.
    #[derive(Default)]
    struct Wakes(AtomicU64);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn hub(queue: usize) -> Hub {
        Hub::new(HubConfig {
            conflated_queue: queue,
            resync_queue: queue,
            lossless_queue: queue,
            history: 8,
            drop_copy_history: 8,
        })
    }

    #[test]
    fn a_waiting_subscriber_is_woken_once_however_many_messages_follow() {
        let hub = hub(16);
        let trades = topic(Channel::Trades);
        let mut sub = hub.subscribe(trades, None);
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(sub.poll_recv(&mut cx).is_pending());
        for seq in 1..=5 {
            hub.topic(trades).publish(message(seq));
        }
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "one wake for the batch");
        for seq in 1..=5 {
            let Poll::Ready(Ok(Delivery::Message(m))) = sub.poll_recv(&mut cx) else {
                panic!("message {seq} is ready");
            };
            assert_eq!(m.seq, seq);
        }
        assert!(sub.poll_recv(&mut cx).is_pending());
        hub.topic(trades).publish(message(6));
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_full_history_lets_go_of_its_oldest_message_and_keeps_the_newest_in_order() {
        // Longer than EVICT_AHEAD, so evictions fetch the message they will evict later.
        let len = 3 * EVICT_AHEAD;
        let hub = Hub::new(HubConfig {
            history: len,
            ..HubConfig::default()
        });
        let state = hub.topic(topic(Channel::Trades));
        let published: Vec<Arc<Message>> = (1..=200).map(message).collect();
        for m in &published {
            state.publish(m.clone());
        }
        let kept: Vec<u64> = state.history().iter().map(|m| m.seq).collect();
        assert_eq!(kept, (201 - len as u64..=200).collect::<Vec<_>>());
        // Evicted messages are held by nobody but this test; kept ones by the history too
        // (and the newest by the ring).
        assert!(published[..200 - len]
            .iter()
            .all(|m| Arc::strong_count(m) == 1));
        assert!(published[200 - len..199]
            .iter()
            .all(|m| Arc::strong_count(m) == 2));
        assert_eq!(Arc::strong_count(&published[199]), 3);
    }

    #[test]
    fn a_topic_nobody_follows_keeps_only_its_history_and_newest_message() {
        let hub = hub(64);
        let trades = topic(Channel::Trades);
        let state = hub.topic(trades);
        for seq in 1..=50 {
            state.publish(message(seq));
        }
        assert_eq!(
            state.ring_len(),
            1,
            "no subscriber: only the newest is kept"
        );
        // A subscriber resumes from the history (8 here) and then reads the ring as usual.
        let mut sub = hub.subscribe(trades, Some(45));
        for seq in 51..=60 {
            state.publish(message(seq));
        }
        assert_eq!(
            state.ring_len(),
            11,
            "a subscriber's messages stay in the ring"
        );
        let mut got = Vec::new();
        while let Some(d) = sub.try_recv().unwrap() {
            got.push(d.message().unwrap().seq);
        }
        assert_eq!(got, (46..=60).collect::<Vec<_>>());
        drop(sub);
        state.publish(message(61));
        assert_eq!(
            state.ring_len(),
            1,
            "the last subscriber gone, the ring lets go"
        );
        let mut late = hub.subscribe(trades, Some(58));
        state.publish(message(62));
        let mut got = Vec::new();
        while let Some(d) = late.try_recv().unwrap() {
            got.push(d.message().unwrap().seq);
        }
        assert_eq!(got, vec![59, 60, 61, 62]);
    }

    #[test]
    fn a_resume_ahead_of_the_topic_skips_what_the_client_has() {
        // A client moving from a gateway further ahead on the stream to one catching up.
        let hub = hub(16);
        let trades = topic(Channel::Trades);
        hub.topic(trades).publish(message(1));
        let mut sub = hub.subscribe(trades, Some(3));
        for seq in 2..=5 {
            hub.topic(trades).publish(message(seq));
        }
        let mut got = Vec::new();
        while let Some(d) = sub.try_recv().unwrap() {
            got.push(d.message().unwrap().seq);
        }
        assert_eq!(got, vec![4, 5], "nothing at or before from_seq 3");
    }

    #[test]
    fn waiting_after_a_missed_publish_wakes_at_once() {
        let hub = hub(16);
        let state = hub.topic(topic(Channel::Trades));
        let seen = state.end();
        state.publish(message(1));
        let wakes = Arc::new(Wakes::default());
        state.wait(&Waiter::new(), &Waker::from(wakes.clone()), seen);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_window_delivers_what_the_ring_does() {
        let hub = hub(16);
        let trades = topic(Channel::Trades);
        let state = hub.topic(trades);
        let mut from_ring = hub.subscribe(trades, None);
        let mut from_window = hub.subscribe(trades, None);
        let mut window = Window::new(state.clone());
        let mut got = Vec::new();
        for batch in [1..=3u64, 4..=10] {
            for seq in batch {
                state.publish(message(seq));
            }
            assert!(window.refresh());
            assert!(!window.refresh(), "nothing new the second time");
            while let Some(next) = from_window.next_in(&window, false).unwrap() {
                let expected = from_ring.try_recv().unwrap().unwrap();
                assert_eq!(next.clone().into_delivery(), expected);
                got.push(next.message().unwrap().seq);
            }
        }
        assert_eq!(got, (1..=10).collect::<Vec<_>>());
        assert_eq!(from_ring.try_recv(), Ok(None));
    }

    #[test]
    fn a_subscriber_behind_its_window_meets_its_policy() {
        let hub = hub(4);
        let (ticker, trades) = (topic(Channel::Ticker), topic(Channel::Trades));
        let mut conflated = hub.subscribe(ticker, None);
        let mut ended = hub.subscribe(trades, None);
        for seq in 1..=10 {
            hub.topic(ticker).publish(message(seq));
            hub.topic(trades).publish(message(seq));
        }
        let window = Window::new(hub.topic(ticker));
        // The ticker's ring holds as much as its history (8): 3..=10. Messages 1..=9 are
        // superseded by 10.
        assert_eq!(
            conflated.next_in(&window, true),
            Ok(Some(Next::Conflated {
                message: window.messages.back().unwrap(),
                skipped: 9
            }))
        );
        assert_eq!(conflated.next_in(&window, true), Ok(None));
        let window = Window::new(hub.topic(trades));
        assert_eq!(
            ended.next_in(&window, true),
            Err(Ended::TooSlow {
                skipped: 6,
                limit: 4
            })
        );
        assert_eq!(HubStats::get(&hub.stats().disconnects, trades), 1);
        assert_eq!(HubStats::get(&hub.stats().conflated_messages, ticker), 9);
    }

    #[test]
    fn a_resynced_subscriber_waits_for_the_window_to_catch_up() {
        struct Latest(Arc<TopicState>);
        impl SnapshotSource for Latest {
            fn snapshot(&self) -> Option<Arc<Message>> {
                let m = self.0.latest()?;
                Some(Message::encoded(
                    m.seq,
                    0,
                    MessageKind::Snapshot,
                    Bytes::new(),
                    Bytes::new(),
                ))
            }
        }
        let hub = hub(4);
        let depth = topic(Channel::Depth);
        let state = hub.topic(depth);
        state.set_snapshot_source(Arc::new(Latest(state.clone())));
        let mut sub = hub.subscribe(depth, None);
        let mut window = Window::new(state.clone());
        for seq in 1..=6 {
            state.publish(message(seq));
        }
        window.refresh();
        // Two more after the window's copy: the resync's snapshot reflects them.
        state.publish(message(7));
        state.publish(message(8));
        let Some(Next::Own(Delivery::Snapshot {
            message: snapshot,
            reason,
        })) = sub.next_in(&window, false).unwrap()
        else {
            panic!("a snapshot");
        };
        assert_eq!((snapshot.seq, reason), (8, SnapshotReason::Resync));
        assert_eq!(sub.next_in(&window, false), Ok(None), "ahead of the window");
        state.publish(message(9));
        window.refresh();
        assert_eq!(
            sub.next_in(&window, false)
                .unwrap()
                .unwrap()
                .message()
                .unwrap()
                .seq,
            9
        );
    }

    #[test]
    fn a_ticker_subscriber_served_late_catches_up_but_one_that_does_not_keep_up_is_conflated() {
        let hub = hub(4);
        let ticker = topic(Channel::Ticker);
        let state = hub.topic(ticker);
        let mut late = hub.subscribe(ticker, None);
        let mut slow = hub.subscribe(ticker, None);
        for seq in 1..=6 {
            state.publish(message(seq));
        }
        let window = Window::new(state.clone());
        // Six behind, over the queue limit of 4 but within the ring (as long as the history, 8).
        let mut caught_up = Vec::new();
        while let Some(next) = late.next_in(&window, true).unwrap() {
            assert!(matches!(next, Next::Message(_)), "{next:?}");
            caught_up.push(next.message().unwrap().seq);
        }
        assert_eq!(caught_up, [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            slow.next_in(&window, false),
            Ok(Some(Next::Conflated {
                message: window.messages.back().unwrap(),
                skipped: 5
            }))
        );
        // Receiving on its own, a subscriber has the queue limit.
        let mut own = hub.subscribe(ticker, None);
        assert!(matches!(
            own.try_recv(),
            Ok(Some(Delivery::Snapshot { .. }))
        ));
        for seq in 7..=12 {
            state.publish(message(seq));
        }
        assert!(matches!(
            own.try_recv(),
            Ok(Some(Delivery::Conflated { skipped: 5, .. }))
        ));
    }
}
