//! Order updates routed per account, in engine order, each with the account's own gap-free
//! sequence number (`seq`, `prev_seq = seq - 1`) so a client can resume. Nothing here is ever
//! dropped: the hub disconnects a subscriber that falls behind instead.
//!
//! Each account topic also answers snapshots with the account's open orders, so a client
//! starting (or resuming too late) sees its book of orders, then the updates after it.
//!
//! Every update is published twice, each copy with its own sequence: on the account's topic,
//! and on the [drop copy](crate::drop_copy), which merges every account's updates into one
//! stream. Both copies say the same thing in the same encoding (the drop copy's adds the
//! account); the router updates the account's open orders and publishes both under the drop
//! copy's lock, so the drop copy's snapshot of every open order matches its `seq`.
//!
//! Here: the accounts' streams and their open orders (what a snapshot shows). The router that
//! turns engine events into updates is in `router`, what an update says and its encodings in
//! `update`.

use crate::drop_copy::DropCopy;
use crate::hub::{Hub, Message, MessageKind, SnapshotSource, Subscription, TopicState};
use crate::instruments::Instruments;
use crate::proto;
use crate::snapshot::{AccountSnapshot, History, OpenOrderSnapshot};
use crate::topic::Topic;
use crate::wire::JsonObject;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use ticker_engine::*;
use ticker_proto::v1 as pb;
use ticker_proto::v1::order_update::Event as Update;

mod router;
mod update;

pub use router::OrderRouter;
use update::write_info;
pub(crate) use update::OrderUpdate;
pub use update::{command_str, order_type_str, tif_str};

const NEW: &str = "new";
const RESTING: &str = "resting";
const ARMED: &str = "armed";
const TRIGGERED: &str = "triggered";
/// Every status an open order can have; a feeds snapshot stores an order's status as its
/// index here.
pub(crate) const OPEN_STATUSES: [&str; 4] = [NEW, RESTING, ARMED, TRIGGERED];

/// An open order as the account's snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOrder {
    pub info: OrderInfo,
    pub remaining: Lots,
    pub visible: Lots,
    pub filled: Lots,
    pub status: &'static str,
}

struct AccountState {
    seq: u64,
    open: BTreeMap<OrderId, OpenOrder>,
}

pub(crate) struct AccountStream {
    topic: Arc<TopicState>,
    state: Arc<Mutex<AccountState>>,
}

/// Every account's stream by account id, shared with the drop copy's snapshot source.
pub(crate) type Streams = Arc<Mutex<HashMap<AccountId, Arc<AccountStream>>>>;

/// Every open order of every account, by account then order id (for the drop copy's
/// snapshot). Copied out account by account so no lock is held while encoding.
pub(crate) fn all_open_orders(streams: &Streams) -> Vec<(AccountId, OpenOrder)> {
    let streams: Vec<_> = streams
        .lock()
        .iter()
        .map(|(account, stream)| (*account, stream.clone()))
        .collect();
    let mut orders = Vec::new();
    for (account, stream) in streams {
        let st = stream.state.lock();
        orders.extend(st.open.values().map(|o| (account, o.clone())));
    }
    orders.sort_unstable_by_key(|(account, o)| (*account, o.info.order_id));
    orders
}

/// A snapshot message of open orders on `channel`: an account's own (`None` accounts: the
/// account is the topic's) or every account's (each order with its account: the drop copy).
/// Orders of instruments the registry does not know are left out.
pub(crate) fn open_orders_message<'a, I>(
    instruments: &Instruments,
    channel: &str,
    seq: u64,
    orders: I,
) -> Arc<Message>
where
    I: Iterator<Item = (Option<AccountId>, &'a OpenOrder)> + Clone,
{
    let mut out = Vec::with_capacity(128 + 256 * orders.size_hint().0);
    JsonObject::new(&mut out)
        .str("type", "snapshot")
        .str("channel", channel)
        .u64("seq", seq)
        .u64("prev_seq", 0)
        .raw_with("orders", |o| {
            o.push(b'[');
            let mut first = true;
            for (account, order) in orders.clone() {
                let Some(wire) = instruments.get(order.info.instrument) else {
                    continue;
                };
                if !first {
                    o.push(b',');
                }
                first = false;
                let mut obj = JsonObject::new(o);
                if let Some(account) = account {
                    obj.u64("account", account);
                }
                write_info(&wire, &order.info, &mut obj);
                obj.decimal("remaining", wire.size, order.remaining as i64)
                    .decimal("visible", wire.size, order.visible as i64)
                    .decimal("filled", wire.size, order.filled as i64)
                    .str("status", order.status)
                    .finish();
            }
            o.push(b']');
        })
        .finish();
    let orders = orders
        .filter_map(|(account, order)| {
            let wire = instruments.get(order.info.instrument)?;
            Some(pb::OpenOrder {
                order: Some(proto::order(&wire, &order.info)),
                remaining_size: proto::size(&wire, order.remaining),
                visible_size: proto::size(&wire, order.visible),
                filled_size: proto::size(&wire, order.filled),
                status: order.status.to_string(),
                account: account.unwrap_or(0),
            })
        })
        .collect();
    let snapshot = Update::Snapshot(pb::OpenOrders { orders });
    Message::encoded(
        seq,
        0,
        MessageKind::Snapshot,
        Bytes::from(out),
        proto::order_update(seq, 0, 0, 0, 0, snapshot),
    )
}

struct AccountSnapshotter {
    instruments: Arc<Instruments>,
    state: Arc<Mutex<AccountState>>,
}

impl SnapshotSource for AccountSnapshotter {
    fn snapshot(&self) -> Option<Arc<Message>> {
        let st = self.state.lock();
        let orders = st.open.values().map(|o| (None, o));
        Some(open_orders_message(
            &self.instruments,
            "orders",
            st.seq,
            orders,
        ))
    }
}

/// The per-account order streams, shared by the router (their only writer) and the fronts,
/// which open a stream before subscribing so that even a new account's subscriber starts from
/// its (empty) open-orders snapshot.
pub struct Accounts {
    hub: Arc<Hub>,
    instruments: Arc<Instruments>,
    streams: Streams,
    drop_copy: Arc<DropCopy>,
}

impl Accounts {
    pub fn new(hub: Arc<Hub>, instruments: Arc<Instruments>) -> Self {
        let streams = Streams::default();
        let drop_copy = Arc::new(DropCopy::new(&hub, instruments.clone(), streams.clone()));
        Accounts {
            hub,
            instruments,
            streams,
            drop_copy,
        }
    }

    /// Every account's updates in one stream (see [`crate::drop_copy`]).
    pub fn drop_copy(&self) -> &Arc<DropCopy> {
        &self.drop_copy
    }

    fn stream(&self, account: AccountId) -> Arc<AccountStream> {
        self.streams
            .lock()
            .entry(account)
            .or_insert_with(|| {
                let topic = self.hub.topic(Topic::Orders(account));
                let state = Arc::new(Mutex::new(AccountState {
                    seq: 0,
                    open: BTreeMap::new(),
                }));
                topic.set_snapshot_source(Arc::new(AccountSnapshotter {
                    instruments: self.instruments.clone(),
                    state: state.clone(),
                }));
                Arc::new(AccountStream { topic, state })
            })
            .clone()
    }

    /// Subscribes to an account's order updates (see [`Hub::subscribe`]).
    pub fn subscribe(&self, account: AccountId, from_seq: Option<u64>) -> Subscription {
        self.stream(account);
        self.hub.subscribe(Topic::Orders(account), from_seq)
    }

    /// One of the account's open orders as the feeds last saw it, by engine or client id.
    /// The fronts use it to learn an order's instrument (an amend's decimals are converted on
    /// that instrument's grid).
    pub fn open_order(&self, account: AccountId, order: OrderRef) -> Option<OpenOrder> {
        let stream = self.streams.lock().get(&account)?.clone();
        let st = stream.state.lock();
        match order {
            OrderRef::Id(id) => st.open.get(&id).cloned(),
            OrderRef::Client(client) => st
                .open
                .values()
                .find(|o| client != 0 && o.info.client_id == client)
                .cloned(),
        }
    }

    /// Every account that has had an update: its counter, open orders and history, by
    /// account id (for a snapshot).
    pub(crate) fn snapshot(&self) -> Vec<AccountSnapshot> {
        let streams: Vec<_> = self
            .streams
            .lock()
            .iter()
            .map(|(account, stream)| (*account, stream.clone()))
            .collect();
        let mut accounts: Vec<AccountSnapshot> = streams
            .into_iter()
            .filter_map(|(account, stream)| {
                let st = stream.state.lock();
                // A stream a front opened for a subscriber has nothing to restore yet.
                (st.seq > 0).then(|| AccountSnapshot {
                    account,
                    seq: st.seq,
                    open: st.open.values().map(OpenOrderSnapshot::from).collect(),
                    history: History(stream.topic.history()),
                })
            })
            .collect();
        accounts.sort_unstable_by_key(|a| a.account);
        accounts
    }

    /// Takes up an account's state from a snapshot (checked: every status code is known),
    /// before anyone subscribes.
    pub(crate) fn restore(&self, snapshot: AccountSnapshot) {
        let stream = self.stream(snapshot.account);
        let mut st = stream.state.lock();
        st.seq = snapshot.seq;
        st.open = snapshot
            .open
            .into_iter()
            .map(|o| {
                let status = OPEN_STATUSES.get(o.status as usize).copied();
                let open = OpenOrder {
                    info: o.info,
                    remaining: o.remaining,
                    visible: o.visible,
                    filled: o.filled,
                    status: status.unwrap_or(OPEN_STATUSES[0]),
                };
                (o.info.order_id, open)
            })
            .collect();
        drop(st);
        stream.topic.replace_history(snapshot.history.0);
    }

    /// Number of accounts with a stream.
    pub fn len(&self) -> usize {
        self.streams.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
