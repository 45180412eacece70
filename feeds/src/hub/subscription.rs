//! A subscriber's place in a topic: what it reads next, and what it is owed when it fell behind
//! (conflation, a resync snapshot, a gap) or resumed from a sequence number.

use super::{
    Delivery, Ended, HubStats, Message, SnapshotReason, Source, TopicState, Waiter, Window,
};
use crate::topic::{SlowPolicy, Topic};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The next delivery of a subscription reading a [`Window`]: live messages are borrowed from
/// the window; what the subscription holds itself (its snapshot, a replay, a gap) is owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next<'a> {
    Message(&'a Arc<Message>),
    /// Messages were skipped under the conflate policy; this is the latest one.
    Conflated {
        message: &'a Arc<Message>,
        skipped: u64,
    },
    Own(Delivery),
}

impl Next<'_> {
    pub fn into_delivery(self) -> Delivery {
        match self {
            Next::Message(m) => Delivery::Message(m.clone()),
            Next::Conflated { message, skipped } => Delivery::Conflated {
                message: message.clone(),
                skipped,
            },
            Next::Own(d) => d,
        }
    }

    pub fn message(&self) -> Option<&Arc<Message>> {
        match self {
            Next::Message(m) | Next::Conflated { message: m, .. } => Some(m),
            Next::Own(d) => d.message(),
        }
    }
}

/// What a subscription found at its position.
enum Found<'a> {
    Nothing,
    Message(&'a Arc<Message>),
    /// The subscriber is `behind` messages behind `end`, over its limit; `latest` is the
    /// newest message, at `end - 1`.
    Lagged {
        behind: u64,
        end: u64,
        latest: &'a Arc<Message>,
    },
}

/// What the policy did to a subscriber that lagged.
enum Lag {
    /// Skip to the latest message (it is delivered next), `skipped` messages dropped.
    Conflated {
        skipped: u64,
    },
    /// A fresh snapshot is pending.
    Resynced,
    Ended(Ended),
}

/// One subscriber's view of a topic. Dropping it unsubscribes.
pub struct Subscription {
    pub(super) topic: Topic,
    pub(super) state: Arc<TopicState>,
    /// Position of the next live message to deliver.
    pub(super) next: u64,
    pub(super) pending: VecDeque<Delivery>,
    /// `seq` of the last message delivered (or of the snapshot started from).
    pub(super) last_seq: u64,
    pub(super) limit: usize,
    pub(super) stats: Arc<HubStats>,
    /// For [`recv`](Self::recv), made on first wait.
    pub(super) waiter: Option<Arc<Waiter>>,
    /// Reads may catch up on the whole ring (see [`catch_up`](Self::catch_up)).
    pub(super) catch_up: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.state.subscribers.fetch_sub(1, Ordering::Relaxed);
        self.stats.subscribers[self.topic.kind_index()].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Subscription {
    pub fn topic(&self) -> Topic {
        self.topic
    }

    /// The topic this subscription reads.
    pub fn state(&self) -> &Arc<TopicState> {
        &self.state
    }

    /// For a front that reads only when its client has room for what it reads (a gRPC stream
    /// is polled only when HTTP/2 flow control lets it send): a lag is then the server's own
    /// delay in serving it, and [`try_recv`](Self::try_recv) and [`recv`](Self::recv) let it
    /// catch up on everything the topic's ring holds, as [`next_in`](Self::next_in) does for a
    /// subscriber that kept up. Only conflated topics' rings hold more than the queue limit.
    pub fn catch_up(mut self) -> Self {
        self.catch_up = true;
        self
    }

    /// `seq` of the last message delivered.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Queues a fresh snapshot (if the topic has a source, or the latest message for conflated
    /// topics) and skips live messages it already covers.
    pub(super) fn start_from_snapshot(&mut self, reason: SnapshotReason) {
        // Take the live position before reading the snapshot: every update the snapshot does
        // not reflect is then at or after it.
        self.next = self.state.end();
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

    /// The next live message at this subscription's position in `source`, unless it is more
    /// than `limit` behind (or behind what `source` still holds).
    fn find<'a>(&mut self, source: &'a impl Source, limit: usize) -> Found<'a> {
        loop {
            let end = source.end();
            if self.next >= end {
                return Found::Nothing;
            }
            if self.next < source.start() || end - self.next > limit as u64 {
                return Found::Lagged {
                    behind: end - self.next,
                    end,
                    latest: source.at(end - 1),
                };
            }
            let message = source.at(self.next);
            self.next += 1;
            if message.seq > self.last_seq {
                self.last_seq = message.seq;
                return Found::Message(message);
            }
        }
    }

    /// Applies the topic's policy to a subscriber `behind` messages behind `end`, over
    /// `limit`. Takes no lock of the ring: a resync reads the snapshot, which takes the view's
    /// lock.
    fn on_lag(&mut self, behind: u64, limit: usize, end: u64, latest_seq: u64) -> Lag {
        match self.topic.policy() {
            SlowPolicy::Conflate => {
                // Every message before the latest is superseded by it.
                let dropped = behind - 1;
                HubStats::add(&self.stats.conflations, self.topic, 1);
                HubStats::add(&self.stats.conflated_messages, self.topic, dropped);
                self.next = end;
                self.last_seq = latest_seq;
                Lag::Conflated { skipped: dropped }
            }
            SlowPolicy::Resync => {
                HubStats::add(&self.stats.resyncs, self.topic, 1);
                self.pending.clear();
                self.last_seq = 0;
                self.start_from_snapshot(SnapshotReason::Resync);
                Lag::Resynced
            }
            SlowPolicy::Disconnect => {
                HubStats::add(&self.stats.disconnects, self.topic, 1);
                Lag::Ended(Ended::TooSlow {
                    skipped: behind.saturating_sub(limit as u64),
                    limit: self.limit,
                })
            }
        }
    }

    /// The next delivery out of `window` (a copy of this subscription's topic, see [`Window`]),
    /// without waiting; `Ok(None)` when the window holds nothing more for it. After a resync the
    /// subscription may be ahead of the window until the window is refreshed.
    ///
    /// `kept_up`: the subscriber's connection took everything it was given since it was last
    /// served, so any lag is the server's own delay in serving it, not the client's: it may
    /// catch up on everything the topic's ring still holds. Otherwise the queue limit applies.
    pub fn next_in<'a>(
        &mut self,
        window: &'a Window,
        kept_up: bool,
    ) -> Result<Option<Next<'a>>, Ended> {
        debug_assert!(
            Arc::ptr_eq(&self.state, &window.state),
            "another topic's window"
        );
        if let Some(d) = self.next_pending() {
            return Ok(Some(Next::Own(d)));
        }
        let limit = if kept_up { window.capacity } else { self.limit };
        match self.find(window, limit) {
            Found::Nothing => Ok(None),
            Found::Message(m) => Ok(Some(Next::Message(m))),
            Found::Lagged {
                behind,
                end,
                latest,
            } => match self.on_lag(behind, limit, end, latest.seq) {
                Lag::Conflated { skipped } => Ok(Some(Next::Conflated {
                    message: latest,
                    skipped,
                })),
                Lag::Resynced => Ok(self.next_pending().map(Next::Own)),
                Lag::Ended(e) => Err(e),
            },
        }
    }

    /// The next delivery without waiting; `Ok(None)` when nothing is queued.
    pub fn try_recv(&mut self) -> Result<Option<Delivery>, Ended> {
        if let Some(d) = self.next_pending() {
            return Ok(Some(d));
        }
        if self.next >= self.state.end() {
            return Ok(None);
        }
        let state = self.state.clone();
        let ring = state.ring.read();
        let limit = if self.catch_up {
            ring.capacity
        } else {
            self.limit
        };
        let (behind, end, latest) = match self.find(&*ring, limit) {
            Found::Nothing => return Ok(None),
            Found::Message(m) => return Ok(Some(Delivery::Message(m.clone()))),
            Found::Lagged {
                behind,
                end,
                latest,
            } => (behind, end, latest.clone()),
        };
        drop(ring);
        match self.on_lag(behind, limit, end, latest.seq) {
            Lag::Conflated { skipped } => Ok(Some(Delivery::Conflated {
                message: latest,
                skipped,
            })),
            Lag::Resynced => Ok(self.next_pending()),
            Lag::Ended(e) => Err(e),
        }
    }

    /// The next delivery, waiting for one without ever making the publisher wait.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Delivery, Ended>> {
        if let Some(d) = self.try_recv()? {
            return Poll::Ready(Ok(d));
        }
        let waiter = self.waiter.get_or_insert_with(Waiter::new);
        self.state.wait(waiter, cx.waker(), self.next);
        Poll::Pending
    }

    /// The next delivery, waiting for one.
    pub async fn recv(&mut self) -> Result<Delivery, Ended> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }
}
