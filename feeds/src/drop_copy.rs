//! The drop copy: every account's order updates and executions in one stream, for risk and
//! back-office systems that watch the whole firm's order flow.
//!
//! It carries exactly what the per-account streams carry ([`crate::orders`]: accepted,
//! rejected, acks, rested, stop armed and triggered, fills of both sides of every trade,
//! amended, done with its reason), in engine order, each message naming its `account`, with
//! the drop copy's own gap-free sequence (`seq` 1, 2, 3, …, `prev_seq = seq - 1`). The
//! messages are the per-account ones, encoded by the same code with the account added: one
//! shape for a client to parse.
//!
//! The topic ([`Topic::DropCopy`]) keeps a long history ([`HubConfig::drop_copy_history`],
//! 100,000 messages by default) so a consumer that reconnects resumes from its last `seq` with
//! no gap and no duplicate; one that resumes from further back, or subscribes without
//! `from_seq`, starts from a snapshot of every account's open orders at a `seq`, then the
//! updates after it. It is lossless: a subscriber that falls behind its queue limit is
//! disconnected and resumes.
//!
//! Servers that offer a drop copy of a chosen set of accounts filter this one stream by each
//! message's account (and a snapshot's orders by theirs).
//!
//! [`HubConfig::drop_copy_history`]: crate::hub::HubConfig::drop_copy_history

use crate::hub::{Hub, Message, MessageKind, SnapshotSource, Subscription, TopicState};
use crate::instruments::Instruments;
use crate::orders::{all_open_orders, open_orders_message, OrderUpdate, Streams};
use crate::snapshot::{DropCopySnapshot, History};
use crate::topic::Topic;
use parking_lot::{Mutex, MutexGuard};
use std::sync::Arc;

/// The drop copy's topic and counter. The order router is its only publisher.
pub struct DropCopy {
    hub: Arc<Hub>,
    topic: Arc<TopicState>,
    state: Arc<Mutex<DropCopyState>>,
}

pub(crate) struct DropCopyState {
    /// `seq` of the last message published.
    seq: u64,
}

/// The drop copy locked for one publish: the router changes an account's open orders while
/// holding it, so the snapshot (which takes it first) sees open orders and `seq` agree.
pub(crate) struct DropCopyGuard<'a> {
    topic: &'a TopicState,
    state: MutexGuard<'a, DropCopyState>,
}

impl DropCopyGuard<'_> {
    pub(crate) fn publish(mut self, update: OrderUpdate) {
        self.state.seq += 1;
        let seq = self.state.seq;
        self.topic
            .publish(Message::lazy(seq, seq - 1, MessageKind::Update, update));
    }
}

/// Answers a subscription's snapshot with every account's open orders.
struct DropCopySnapshotter {
    instruments: Arc<Instruments>,
    state: Arc<Mutex<DropCopyState>>,
    streams: Streams,
}

impl SnapshotSource for DropCopySnapshotter {
    fn snapshot(&self) -> Option<Arc<Message>> {
        // Held while the open orders are copied (not while they are encoded): the router
        // waits for it before changing any account's orders.
        let st = self.state.lock();
        let orders = all_open_orders(&self.streams);
        let seq = st.seq;
        drop(st);
        let orders = orders.iter().map(|(account, o)| (Some(*account), o));
        Some(open_orders_message(
            &self.instruments,
            "drop_copy",
            seq,
            orders,
        ))
    }
}

impl DropCopy {
    pub(crate) fn new(hub: &Arc<Hub>, instruments: Arc<Instruments>, streams: Streams) -> Self {
        let topic = hub.topic(Topic::DropCopy);
        let state = Arc::new(Mutex::new(DropCopyState { seq: 0 }));
        topic.set_snapshot_source(Arc::new(DropCopySnapshotter {
            instruments,
            state: state.clone(),
            streams,
        }));
        DropCopy {
            hub: hub.clone(),
            topic,
            state,
        }
    }

    pub(crate) fn lock(&self) -> DropCopyGuard<'_> {
        DropCopyGuard {
            topic: &self.topic,
            state: self.state.lock(),
        }
    }

    /// Subscribes to the drop copy (see [`Hub::subscribe`]): without `from_seq`, a snapshot of
    /// every open order then the updates after it; with it, the messages after `from_seq`
    /// from the history, or the snapshot flagged `ResumeTooOld` when the history no longer
    /// reaches back that far.
    pub fn subscribe(&self, from_seq: Option<u64>) -> Subscription {
        self.hub.subscribe(Topic::DropCopy, from_seq)
    }

    /// `seq` of the last message published (0 before any).
    pub fn seq(&self) -> u64 {
        self.state.lock().seq
    }

    /// The counter and history, for a feeds snapshot (the open orders are the accounts').
    pub(crate) fn snapshot(&self) -> DropCopySnapshot {
        let st = self.state.lock();
        DropCopySnapshot {
            seq: st.seq,
            history: History(self.topic.history()),
        }
    }

    /// Takes up a checked snapshot's counter and history, before anyone subscribes.
    pub(crate) fn restore(&self, snapshot: DropCopySnapshot) {
        self.state.lock().seq = snapshot.seq;
        self.topic.replace_history(snapshot.history.0);
    }
}
