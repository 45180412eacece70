//! L3: the order-by-order book of one instrument, for quants.
//!
//! Events on the wire: `add` (an order rests at the back of its level; an `add` for an id
//! already in the book moves it to the back with the new size — an iceberg showing its next
//! slice), `amend` (size changed in place, priority kept), `match` (a resting order traded
//! `size`), `delete` (the order left the book: filled, cancelled, expired, or re-queued by an
//! amend that an `add` follows). Sizes are visible sizes only: hidden iceberg size is never
//! shown.

use crate::hub::{Encode, Message, MessageKind, SnapshotSource};
use crate::id_hash::IdMap;
use crate::instruments::WireInstrument;
use crate::proto;
use crate::topic::Channel;
use crate::wire::JsonObject;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use ticker_engine::{Lots, OrderId, Side, Ticks, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct L3Order {
    side: Side,
    price: Ticks,
    size: Lots,
}

/// The replica order-by-order book.
#[derive(Debug, Default)]
pub struct L3Book {
    orders: IdMap<OrderId, L3Order>,
    bids: BTreeMap<std::cmp::Reverse<Ticks>, VecDeque<OrderId>>,
    asks: BTreeMap<Ticks, VecDeque<OrderId>>,
}

impl L3Book {
    fn queue(&mut self, side: Side, price: Ticks) -> &mut VecDeque<OrderId> {
        match side {
            Side::Buy => self.bids.entry(std::cmp::Reverse(price)).or_default(),
            Side::Sell => self.asks.entry(price).or_default(),
        }
    }

    fn unqueue(&mut self, id: OrderId, o: L3Order) {
        let q = self.queue(o.side, o.price);
        q.retain(|x| *x != id);
        if q.is_empty() {
            match o.side {
                Side::Buy => {
                    self.bids.remove(&std::cmp::Reverse(o.price));
                }
                Side::Sell => {
                    self.asks.remove(&o.price);
                }
            }
        }
    }

    pub fn contains(&self, id: OrderId) -> bool {
        self.orders.contains_key(&id)
    }

    pub fn add(&mut self, id: OrderId, side: Side, price: Ticks, size: Lots) {
        if let Some(old) = self.orders.remove(&id) {
            self.unqueue(id, old);
        }
        self.orders.insert(id, L3Order { side, price, size });
        self.queue(side, price).push_back(id);
    }

    pub fn set_size(&mut self, id: OrderId, size: Lots) -> bool {
        match self.orders.get_mut(&id) {
            Some(o) => {
                o.size = size;
                true
            }
            None => false,
        }
    }

    pub fn matched(&mut self, id: OrderId, size: Lots) -> bool {
        match self.orders.get_mut(&id) {
            Some(o) => {
                o.size = o.size.saturating_sub(size);
                true
            }
            None => false,
        }
    }

    pub fn delete(&mut self, id: OrderId) -> bool {
        match self.orders.remove(&id) {
            Some(o) => {
                self.unqueue(id, o);
                true
            }
            None => false,
        }
    }

    /// A book holding `bids` then `asks`, each in priority order as [`orders`](Self::orders)
    /// lists them.
    pub(crate) fn from_orders(
        bids: Vec<(OrderId, Ticks, Lots)>,
        asks: Vec<(OrderId, Ticks, Lots)>,
    ) -> L3Book {
        let mut book = L3Book::default();
        for (side, orders) in [(Side::Buy, bids), (Side::Sell, asks)] {
            for (id, price, size) in orders {
                book.add(id, side, price, size);
            }
        }
        book
    }

    /// Orders of one side in priority order: `(order id, price, visible size)`.
    pub fn orders(&self, side: Side) -> Vec<(OrderId, Ticks, Lots)> {
        let lookup = |id: &OrderId| {
            let o = self.orders[id];
            (*id, o.price, o.size)
        };
        match side {
            Side::Buy => self.bids.values().flatten().map(lookup).collect(),
            Side::Sell => self.asks.values().flatten().map(lookup).collect(),
        }
    }
}

/// One L3 change, as sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L3Event {
    Add {
        order_id: OrderId,
        side: Side,
        price: Ticks,
        size: Lots,
    },
    Amend {
        order_id: OrderId,
        size: Lots,
    },
    Match {
        order_id: OrderId,
        price: Ticks,
        size: Lots,
        trade_id: u64,
    },
    Delete {
        order_id: OrderId,
        reason: &'static str,
    },
}

pub(crate) struct L3State {
    pub book: L3Book,
    pub last_seq: u64,
}

pub(crate) fn new_state() -> Arc<Mutex<L3State>> {
    Arc::new(Mutex::new(L3State {
        book: L3Book::default(),
        last_seq: 0,
    }))
}

pub(crate) fn side_str(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

fn order_id_field(o: &mut JsonObject<'_>, id: OrderId) {
    // Order ids exceed 2^53, so they are strings for JavaScript's sake.
    o.str("order_id", itoa::Buffer::new().format(id.0));
}

/// An L3 message, encoded when first read.
pub struct L3Update {
    pub wire: Arc<WireInstrument>,
    pub ts: Timestamp,
    pub event: L3Event,
}

impl Encode for L3Update {
    fn json(&self, seq: u64, prev_seq: u64) -> Bytes {
        encode(&self.wire, seq, prev_seq, self.ts, &self.event)
    }

    fn proto(&self, seq: u64, prev_seq: u64) -> Bytes {
        let payload = proto::l3(&self.wire, &self.event);
        proto::market(&self.wire, Channel::L3, seq, prev_seq, self.ts, payload)
    }
}

pub fn encode(wire: &WireInstrument, seq: u64, prev_seq: u64, ts: Timestamp, e: &L3Event) -> Bytes {
    let mut out = Vec::with_capacity(200);
    let mut o = JsonObject::new(&mut out);
    o.str("type", "l3")
        .str("channel", "l3")
        .str("instrument", wire.symbol())
        .u64("seq", seq)
        .u64("prev_seq", prev_seq)
        .u64("ts", ts);
    match *e {
        L3Event::Add {
            order_id,
            side,
            price,
            size,
        } => {
            o.str("event", "add");
            order_id_field(&mut o, order_id);
            o.str("side", side_str(side))
                .decimal("price", wire.price, price)
                .decimal("size", wire.size, size as i64);
        }
        L3Event::Amend { order_id, size } => {
            o.str("event", "amend");
            order_id_field(&mut o, order_id);
            o.decimal("size", wire.size, size as i64);
        }
        L3Event::Match {
            order_id,
            price,
            size,
            trade_id,
        } => {
            o.str("event", "match");
            order_id_field(&mut o, order_id);
            o.decimal("price", wire.price, price)
                .decimal("size", wire.size, size as i64)
                .u64("trade_id", trade_id);
        }
        L3Event::Delete { order_id, reason } => {
            o.str("event", "delete");
            order_id_field(&mut o, order_id);
            o.str("reason", reason);
        }
    }
    o.finish();
    Bytes::from(out)
}

pub(crate) struct L3Snapshotter {
    pub wire: Arc<WireInstrument>,
    pub state: Arc<Mutex<L3State>>,
}

impl SnapshotSource for L3Snapshotter {
    fn snapshot(&self) -> Option<Arc<Message>> {
        let st = self.state.lock();
        let wire = &self.wire;
        let side_json = |side: Side, o: &mut Vec<u8>| {
            o.push(b'[');
            for (i, (id, price, size)) in st.book.orders(side).into_iter().enumerate() {
                if i > 0 {
                    o.push(b',');
                }
                o.extend_from_slice(b"[\"");
                wire.price.write(price, o);
                o.extend_from_slice(b"\",\"");
                wire.size.write(size as i64, o);
                o.extend_from_slice(b"\",\"");
                o.extend_from_slice(itoa::Buffer::new().format(id.0).as_bytes());
                o.extend_from_slice(b"\"]");
            }
            o.push(b']');
        };
        let mut out = Vec::with_capacity(256);
        JsonObject::new(&mut out)
            .str("type", "snapshot")
            .str("channel", "l3")
            .str("instrument", wire.symbol())
            .u64("seq", st.last_seq)
            .u64("prev_seq", 0)
            .raw_with("bids", |o| side_json(Side::Buy, o))
            .raw_with("asks", |o| side_json(Side::Sell, o))
            .finish();
        let payload = proto::l3_book(wire, &st.book);
        Some(Message::encoded(
            st.last_seq,
            0,
            MessageKind::Snapshot,
            Bytes::from(out),
            proto::market(wire, Channel::L3, st.last_seq, 0, 0, payload),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_of_a_known_order_moves_it_to_the_back() {
        let mut b = L3Book::default();
        b.add(OrderId(1), Side::Buy, 100, 5);
        b.add(OrderId(2), Side::Buy, 100, 5);
        b.add(OrderId(3), Side::Buy, 101, 1);
        b.add(OrderId(1), Side::Buy, 100, 4);
        let ids: Vec<_> = b.orders(Side::Buy).into_iter().map(|o| o.0 .0).collect();
        assert_eq!(ids, vec![3, 2, 1]);
        assert!(b.matched(OrderId(2), 2));
        assert_eq!(b.orders(Side::Buy)[1], (OrderId(2), 100, 3));
        assert!(b.delete(OrderId(3)));
        assert!(!b.delete(OrderId(3)));
        assert_eq!(b.orders(Side::Buy).len(), 2);
    }
}
