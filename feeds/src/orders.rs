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

use crate::drop_copy::DropCopy;
use crate::hub::{Encode, Hub, Message, MessageKind, SnapshotSource, Subscription, TopicState};
use crate::id_hash::IdMap;
use crate::instruments::{Instruments, WireInstrument};
use crate::l3::side_str;
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

pub fn command_str(c: CommandTag) -> &'static str {
    match c {
        CommandTag::Place => "place",
        CommandTag::Cancel => "cancel",
        CommandTag::Amend => "amend",
        CommandTag::MassCancel => "mass_cancel",
        CommandTag::SessionClosed => "session_closed",
        CommandTag::AddInstrument => "add_instrument",
        CommandTag::Halt => "halt",
        CommandTag::Resume => "resume",
        CommandTag::Heartbeat => "heartbeat",
        CommandTag::Snapshot => "snapshot",
        CommandTag::SetLimits => "set_limits",
        CommandTag::DisableAccount => "disable_account",
        CommandTag::EnableAccount => "enable_account",
    }
}

pub fn order_type_str(t: OrderType) -> &'static str {
    match t {
        OrderType::Limit => "limit",
        OrderType::Market => "market",
        OrderType::StopMarket => "stop_market",
        OrderType::StopLimit => "stop_limit",
    }
}

pub fn tif_str(t: TimeInForce) -> &'static str {
    match t {
        TimeInForce::Gtc => "gtc",
        TimeInForce::Ioc => "ioc",
        TimeInForce::Fok => "fok",
        TimeInForce::Gtd => "gtd",
    }
}

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

fn id_str(id: OrderId) -> String {
    id.0.to_string()
}

fn write_info(wire: &WireInstrument, i: &OrderInfo, o: &mut JsonObject<'_>) {
    o.str("order_id", &id_str(i.order_id))
        .u64("client_id", i.client_id)
        .str("instrument", wire.symbol())
        .str("side", side_str(i.side))
        .str("order_type", order_type_str(i.order_type));
    if i.order_type.has_limit_price() {
        o.decimal("price", wire.price, i.price);
    }
    if i.order_type.is_stop() {
        o.decimal("trigger", wire.price, i.trigger);
    }
    o.decimal("size", wire.size, i.size as i64)
        .str("tif", tif_str(i.tif));
    if i.tif == TimeInForce::Gtd {
        o.u64("expiry", i.expiry);
    }
    if i.post_only {
        o.bool("post_only", true);
    }
    if i.display > 0 {
        o.decimal("display", wire.size, i.display as i64);
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

/// What one order update says, encoded when a subscriber first reads it.
#[derive(Clone)]
enum OrderChange {
    Accepted {
        wire: Arc<WireInstrument>,
        corr: Correlation,
        order: OrderInfo,
    },
    Ack {
        corr: Correlation,
        command: CommandTag,
        order_id: OrderId,
        wire: Option<Arc<WireInstrument>>,
    },
    Rejected {
        corr: Correlation,
        command: CommandTag,
        client_id: ClientOrderId,
        order_id: OrderId,
        reason: RejectReason,
    },
    Rested {
        wire: Arc<WireInstrument>,
        order_id: OrderId,
        price: Ticks,
        visible: Lots,
        remaining: Lots,
    },
    /// A stop armed (`last_price` none) or triggered.
    Stop {
        wire: Arc<WireInstrument>,
        order_id: OrderId,
        trigger: Ticks,
        last_price: Option<Ticks>,
    },
    Fill {
        wire: Arc<WireInstrument>,
        order_id: OrderId,
        trade_id: u64,
        price: Ticks,
        size: Lots,
        remaining: Lots,
        maker: bool,
    },
    Amended {
        wire: Arc<WireInstrument>,
        order_id: OrderId,
        price: Ticks,
        trigger: Ticks,
        remaining: Lots,
        visible: Lots,
        priority_kept: bool,
    },
    Done {
        wire: Arc<WireInstrument>,
        order_id: OrderId,
        reason: DoneReason,
        filled: Lots,
        cancelled: Lots,
    },
}

/// An order update message: the change and the engine event it came from. On the drop copy
/// it names its account; on the account's own topic the topic does.
pub(crate) struct OrderUpdate {
    engine_seq: u64,
    ts: Timestamp,
    account: Option<AccountId>,
    change: OrderChange,
}

impl OrderChange {
    fn name(&self) -> &'static str {
        match self {
            OrderChange::Accepted { .. } => "accepted",
            OrderChange::Ack { .. } => "ack",
            OrderChange::Rejected { .. } => "rejected",
            OrderChange::Rested { .. } => "rested",
            OrderChange::Stop {
                last_price: None, ..
            } => "stop_armed",
            OrderChange::Stop { .. } => "stop_triggered",
            OrderChange::Fill { .. } => "fill",
            OrderChange::Amended { .. } => "amended",
            OrderChange::Done { .. } => "done",
        }
    }

    /// The event-specific JSON fields.
    fn write_json(&self, o: &mut JsonObject<'_>) {
        match self {
            OrderChange::Accepted { wire, corr, order } => {
                o.u64("corr", *corr);
                write_info(wire, order, o);
            }
            OrderChange::Ack {
                corr,
                command,
                order_id,
                wire,
            } => {
                o.u64("corr", *corr).str("command", command_str(*command));
                if !order_id.is_none() {
                    o.str("order_id", &id_str(*order_id));
                }
                if let Some(w) = wire {
                    o.str("instrument", w.symbol());
                }
            }
            OrderChange::Rejected {
                corr,
                command,
                client_id,
                order_id,
                reason,
            } => {
                o.u64("corr", *corr)
                    .str("command", command_str(*command))
                    .str("reason", reason.as_str());
                if *client_id != 0 {
                    o.u64("client_id", *client_id);
                }
                if !order_id.is_none() {
                    o.str("order_id", &id_str(*order_id));
                }
            }
            OrderChange::Rested {
                wire,
                order_id,
                price,
                visible,
                remaining,
            } => {
                o.str("order_id", &id_str(*order_id))
                    .str("instrument", wire.symbol())
                    .decimal("price", wire.price, *price)
                    .decimal("visible", wire.size, *visible as i64)
                    .decimal("remaining", wire.size, *remaining as i64);
            }
            OrderChange::Stop {
                wire,
                order_id,
                trigger,
                last_price,
            } => {
                o.str("order_id", &id_str(*order_id))
                    .str("instrument", wire.symbol())
                    .decimal("trigger", wire.price, *trigger);
                if let Some(last_price) = last_price {
                    o.decimal("last_price", wire.price, *last_price);
                }
            }
            OrderChange::Fill {
                wire,
                order_id,
                trade_id,
                price,
                size,
                remaining,
                maker,
            } => {
                o.str("order_id", &id_str(*order_id))
                    .str("instrument", wire.symbol())
                    .u64("trade_id", *trade_id)
                    .decimal("price", wire.price, *price)
                    .decimal("size", wire.size, *size as i64)
                    .decimal("remaining", wire.size, *remaining as i64)
                    .str("liquidity", if *maker { "maker" } else { "taker" });
            }
            OrderChange::Amended {
                wire,
                order_id,
                price,
                trigger,
                remaining,
                visible,
                priority_kept,
            } => {
                o.str("order_id", &id_str(*order_id))
                    .str("instrument", wire.symbol())
                    .decimal("price", wire.price, *price)
                    .decimal("remaining", wire.size, *remaining as i64)
                    .decimal("visible", wire.size, *visible as i64)
                    .bool("priority_kept", *priority_kept);
                if *trigger != 0 {
                    o.decimal("trigger", wire.price, *trigger);
                }
            }
            OrderChange::Done {
                wire,
                order_id,
                reason,
                filled,
                cancelled,
            } => {
                o.str("order_id", &id_str(*order_id))
                    .str("instrument", wire.symbol())
                    .str("reason", reason.as_str())
                    .decimal("filled", wire.size, *filled as i64)
                    .decimal("cancelled", wire.size, *cancelled as i64);
            }
        }
    }

    fn to_proto(&self) -> Update {
        match self {
            OrderChange::Accepted { wire, corr, order } => Update::Accepted(pb::OrderAccepted {
                correlation: *corr,
                order: Some(proto::order(wire, order)),
            }),
            OrderChange::Ack {
                corr,
                command,
                order_id,
                wire,
            } => Update::Ack(pb::CommandAck {
                correlation: *corr,
                command: proto::command_type(*command) as i32,
                order_id: order_id.0,
                instrument: wire
                    .as_ref()
                    .map_or_else(String::new, |w| w.symbol().to_string()),
            }),
            OrderChange::Rejected {
                corr,
                command,
                client_id,
                order_id,
                reason,
            } => Update::Rejected(pb::OrderRejected {
                correlation: *corr,
                command: proto::command_type(*command) as i32,
                reason: proto::reject_reason(*reason) as i32,
                client_order_id: *client_id,
                order_id: order_id.0,
            }),
            OrderChange::Rested {
                wire,
                order_id,
                price,
                visible,
                remaining,
            } => Update::Rested(pb::OrderRested {
                order_id: order_id.0,
                instrument: wire.symbol().to_string(),
                price: proto::price(wire, *price),
                visible_size: proto::size(wire, *visible),
                remaining_size: proto::size(wire, *remaining),
            }),
            OrderChange::Stop {
                wire,
                order_id,
                trigger,
                last_price: Some(last_price),
            } => Update::StopTriggered(pb::StopTriggered {
                order_id: order_id.0,
                instrument: wire.symbol().to_string(),
                trigger_price: proto::price(wire, *trigger),
                last_price: proto::price(wire, *last_price),
            }),
            OrderChange::Stop {
                wire,
                order_id,
                trigger,
                last_price: None,
            } => Update::StopArmed(pb::StopArmed {
                order_id: order_id.0,
                instrument: wire.symbol().to_string(),
                trigger_price: proto::price(wire, *trigger),
            }),
            OrderChange::Fill {
                wire,
                order_id,
                trade_id,
                price,
                size,
                remaining,
                maker,
            } => Update::Fill(pb::OrderFill {
                order_id: order_id.0,
                instrument: wire.symbol().to_string(),
                trade_id: *trade_id,
                price: proto::price(wire, *price),
                size: proto::size(wire, *size),
                remaining_size: proto::size(wire, *remaining),
                liquidity: if *maker {
                    pb::Liquidity::Maker
                } else {
                    pb::Liquidity::Taker
                } as i32,
            }),
            OrderChange::Amended {
                wire,
                order_id,
                price,
                trigger,
                remaining,
                visible,
                priority_kept,
            } => Update::Amended(pb::OrderAmended {
                order_id: order_id.0,
                instrument: wire.symbol().to_string(),
                price: proto::price(wire, *price),
                trigger_price: if *trigger != 0 {
                    proto::price(wire, *trigger)
                } else {
                    String::new()
                },
                remaining_size: proto::size(wire, *remaining),
                visible_size: proto::size(wire, *visible),
                priority_kept: *priority_kept,
            }),
            OrderChange::Done {
                wire,
                order_id,
                reason,
                filled,
                cancelled,
            } => Update::Done(pb::OrderDone {
                order_id: order_id.0,
                instrument: wire.symbol().to_string(),
                reason: proto::done_reason(*reason) as i32,
                filled_size: proto::size(wire, *filled),
                cancelled_size: proto::size(wire, *cancelled),
            }),
        }
    }
}

impl Encode for OrderUpdate {
    fn json(&self, seq: u64, prev_seq: u64) -> Bytes {
        let mut out = Vec::with_capacity(320);
        let mut o = JsonObject::new(&mut out);
        o.str("type", "order");
        if self.account.is_some() {
            o.str("channel", "drop_copy");
        }
        o.str("event", self.change.name())
            .u64("seq", seq)
            .u64("prev_seq", prev_seq)
            .u64("engine_seq", self.engine_seq)
            .u64("ts", self.ts);
        if let Some(account) = self.account {
            o.u64("account", account);
        }
        self.change.write_json(&mut o);
        o.finish();
        Bytes::from(out)
    }

    fn proto(&self, seq: u64, prev_seq: u64) -> Bytes {
        let event = self.change.to_proto();
        let account = self.account.unwrap_or(0);
        proto::order_update(seq, prev_seq, self.engine_seq, self.ts, account, event)
    }
}

/// Routes engine events to per-account order-update topics.
pub struct OrderRouter {
    accounts: Arc<Accounts>,
    /// The router's own handles, so routing an event takes no shared lock.
    cache: IdMap<AccountId, Arc<AccountStream>>,
    /// Instruments by id, copied from the shared registry on first use for the same reason.
    wires: Vec<Option<Arc<WireInstrument>>>,
}

impl OrderRouter {
    pub fn new(accounts: Arc<Accounts>) -> Self {
        OrderRouter {
            accounts,
            cache: IdMap::default(),
            wires: Vec::new(),
        }
    }

    fn wire(&mut self, instrument: InstrumentId) -> Option<Arc<WireInstrument>> {
        let idx = instrument as usize;
        if let Some(Some(w)) = self.wires.get(idx) {
            return Some(w.clone());
        }
        let wire = self.accounts.instruments.get(instrument)?;
        if self.wires.len() <= idx {
            self.wires.resize(idx + 1, None);
        }
        self.wires[idx] = Some(wire.clone());
        Some(wire)
    }

    /// Publishes one update to `account` and to the drop copy; `update` changes the
    /// open-order state under the same locks (the drop copy's, then the account's: the order
    /// the drop copy's snapshot takes them in).
    fn publish(
        &mut self,
        account: AccountId,
        event: &Event,
        update: impl FnOnce(&mut BTreeMap<OrderId, OpenOrder>),
        change: OrderChange,
    ) {
        let accounts = &self.accounts;
        let stream = self
            .cache
            .entry(account)
            .or_insert_with(|| accounts.stream(account));
        let drop_copy = accounts.drop_copy.lock();
        let mut st = stream.state.lock();
        update(&mut st.open);
        st.seq += 1;
        let seq = st.seq;
        stream.topic.publish(Message::lazy(
            seq,
            seq - 1,
            MessageKind::Update,
            OrderUpdate {
                engine_seq: event.seq,
                ts: event.ts,
                account: None,
                change: change.clone(),
            },
        ));
        drop(st);
        drop_copy.publish(OrderUpdate {
            engine_seq: event.seq,
            ts: event.ts,
            account: Some(account),
            change,
        });
    }

    pub fn apply(&mut self, e: &Event) {
        match e.kind {
            EventKind::PlaceAccepted { corr, ref order } => {
                let Some(wire) = self.wire(order.instrument) else {
                    return;
                };
                let open = OpenOrder {
                    info: *order,
                    remaining: order.size,
                    visible: 0,
                    filled: 0,
                    status: NEW,
                };
                self.publish(
                    order.account,
                    e,
                    |m| {
                        m.insert(order.order_id, open);
                    },
                    OrderChange::Accepted {
                        wire,
                        corr,
                        order: *order,
                    },
                );
            }
            EventKind::Accepted {
                corr,
                command,
                account,
                order_id,
                instrument,
            } if account != 0 => {
                let wire = instrument.and_then(|i| self.wire(i));
                let change = OrderChange::Ack {
                    corr,
                    command,
                    order_id,
                    wire,
                };
                self.publish(account, e, |_| {}, change);
            }
            EventKind::Rejected {
                corr,
                command,
                account,
                client_id,
                order_id,
                reason,
            } if account != 0 => {
                let change = OrderChange::Rejected {
                    corr,
                    command,
                    client_id,
                    order_id,
                    reason,
                };
                self.publish(account, e, |_| {}, change);
            }
            EventKind::OrderRested {
                order_id,
                account,
                instrument,
                price,
                visible,
                remaining,
                ..
            } => {
                let Some(wire) = self.wire(instrument) else {
                    return;
                };
                self.publish(
                    account,
                    e,
                    |m| {
                        if let Some(o) = m.get_mut(&order_id) {
                            o.status = RESTING;
                            o.visible = visible;
                            o.remaining = remaining;
                            o.info.price = price;
                        }
                    },
                    OrderChange::Rested {
                        wire,
                        order_id,
                        price,
                        visible,
                        remaining,
                    },
                );
            }
            EventKind::StopArmed {
                order_id,
                account,
                instrument,
                trigger,
                ..
            }
            | EventKind::StopTriggered {
                order_id,
                account,
                instrument,
                trigger,
                ..
            } => {
                let Some(wire) = self.wire(instrument) else {
                    return;
                };
                let last_price = match e.kind {
                    EventKind::StopTriggered { last_price, .. } => Some(last_price),
                    _ => None,
                };
                let status = if last_price.is_none() {
                    ARMED
                } else {
                    TRIGGERED
                };
                self.publish(
                    account,
                    e,
                    |m| {
                        if let Some(o) = m.get_mut(&order_id) {
                            o.status = status;
                        }
                    },
                    OrderChange::Stop {
                        wire,
                        order_id,
                        trigger,
                        last_price,
                    },
                );
            }
            EventKind::Trade {
                trade_id,
                instrument,
                price,
                size,
                taker_order,
                taker_account,
                maker_order,
                maker_account,
                taker_remaining,
                maker_remaining,
                ..
            } => {
                let Some(wire) = self.wire(instrument) else {
                    return;
                };
                for (account, order_id, remaining, maker) in [
                    (taker_account, taker_order, taker_remaining, false),
                    (maker_account, maker_order, maker_remaining, true),
                ] {
                    self.publish(
                        account,
                        e,
                        |m| {
                            if let Some(o) = m.get_mut(&order_id) {
                                o.filled += size;
                                o.remaining = remaining;
                                o.visible = o.visible.saturating_sub(size);
                            }
                        },
                        OrderChange::Fill {
                            wire: wire.clone(),
                            order_id,
                            trade_id,
                            price,
                            size,
                            remaining,
                            maker,
                        },
                    );
                }
            }
            EventKind::OrderAmended {
                order_id,
                account,
                instrument,
                price,
                trigger,
                remaining,
                visible,
                priority_kept,
                ..
            } => {
                let Some(wire) = self.wire(instrument) else {
                    return;
                };
                self.publish(
                    account,
                    e,
                    |m| {
                        if let Some(o) = m.get_mut(&order_id) {
                            o.info.price = price;
                            o.info.trigger = trigger;
                            o.remaining = remaining;
                            o.visible = visible;
                        }
                    },
                    OrderChange::Amended {
                        wire,
                        order_id,
                        price,
                        trigger,
                        remaining,
                        visible,
                        priority_kept,
                    },
                );
            }
            EventKind::OrderDone {
                order_id,
                account,
                instrument,
                filled,
                cancelled,
                reason,
                ..
            } => {
                let Some(wire) = self.wire(instrument) else {
                    return;
                };
                self.publish(
                    account,
                    e,
                    |m| {
                        m.remove(&order_id);
                    },
                    OrderChange::Done {
                        wire,
                        order_id,
                        reason,
                        filled,
                        cancelled,
                    },
                );
            }
            _ => {}
        }
    }
}
