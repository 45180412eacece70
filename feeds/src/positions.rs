//! Positions: each account's position in each instrument, built from the engine's trades and
//! order events, for risk desks.
//!
//! A [`Position`] holds the signed net size, the quantities and notionals bought and sold,
//! the remaining size of the account's open orders on each side, the open position's cost
//! basis and the P&L realized at average cost, with the engine `seq` of its last change.
//! Everything is an integer: sizes in lots, notionals, cost basis and P&L in units of
//! tick × lot (`i128`/`u128`: no sum of `i64` ticks times `u64` lots overflows them in
//! practice); decimal strings are made only on the wire.
//!
//! ## Average cost
//! A fill that opens or adds to the position adds `price × size` to the cost basis (negative
//! for a short). A fill that reduces it releases the reduced share of the cost basis,
//! `cost_basis × reduced / |net|`, **rounded half away from zero to one unit of tick × lot**,
//! and realizes `exit notional − released cost` (with the sign of the position); a fill that
//! flips it closes the whole position first (releasing the whole cost basis, exactly) and
//! opens the rest at the fill's price. So:
//! - the realized P&L of a reduction is within half a unit of tick × lot of
//!   `(exit price − average entry price) × reduced` computed with exact fractions, and the
//!   rounding is never lost: it stays in the cost basis, which goes to exactly 0 when the
//!   position is flat;
//! - at all times `realized = sold_notional − bought_notional + cost_basis`, so when flat the
//!   realized P&L is exactly the cash the position made.
//!
//! (Exact fractions would need unbounded precision: each add after a partial reduction can
//! multiply the average's denominator.)
//!
//! ## Stream
//! Every change publishes the position's whole state on the one [`Topic::Positions`] topic
//! for all accounts, with its own gap-free sequence (`seq` 1, 2, 3, …, `prev_seq = seq - 1`;
//! `engine_seq` is the event's) and the account in the message, so a server filters by
//! account. A trade changes two positions (taker's and maker's): two messages. A subscriber
//! starts from (or, falling behind, resyncs to) a snapshot of every position.

use crate::hub::{Encode, Hub, Message, MessageKind, SnapshotSource, Subscription, TopicState};
use crate::id_hash::IdMap;
use crate::instruments::{Instruments, WireInstrument};
use crate::snapshot::{History, PositionsSnapshot};
use crate::topic::Topic;
use crate::wire::JsonObject;
use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message as _;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use ticker_engine::*;
use ticker_proto::v1 as pb;

/// Decimal places the average entry price has beyond the tick size's.
pub const AVERAGE_PRICE_EXTRA_DIGITS: u32 = 6;

/// One account's position in one instrument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub account: AccountId,
    pub instrument: InstrumentId,
    /// Lots, positive long, negative short.
    pub net: i128,
    /// Lots bought and sold over the position's life.
    pub bought: u128,
    pub sold: u128,
    /// Σ price × size of the buys and of the sells, in ticks × lots.
    pub bought_notional: u128,
    pub sold_notional: u128,
    /// Remaining lots of the account's open orders on each side.
    pub open_buy: u128,
    pub open_sell: u128,
    /// Cost of the open position in ticks × lots, with its sign (0 when flat).
    pub cost_basis: i128,
    /// P&L realized at average cost, in ticks × lots.
    pub realized: i128,
    /// `seq` and `ts` of the engine event that changed it last.
    pub engine_seq: u64,
    pub ts: Timestamp,
}

impl Position {
    pub fn new(account: AccountId, instrument: InstrumentId) -> Self {
        Position {
            account,
            instrument,
            ..Position::default()
        }
    }

    /// Applies a fill of `size` lots at `price` on `side` (see the module docs).
    pub fn fill(&mut self, side: Side, price: Ticks, size: Lots) {
        let q = size as i128;
        let notional = price as i128 * q;
        let sign = match side {
            Side::Buy => {
                self.bought = self.bought.saturating_add(size as u128);
                self.bought_notional = self.bought_notional.saturating_add(notional as u128);
                1
            }
            Side::Sell => {
                self.sold = self.sold.saturating_add(size as u128);
                self.sold_notional = self.sold_notional.saturating_add(notional as u128);
                -1
            }
        };
        if self.net == 0 || self.net.signum() == sign {
            self.cost_basis = self.cost_basis.saturating_add(sign * notional);
            self.net = self.net.saturating_add(sign * q);
            return;
        }
        let held = self.net.unsigned_abs();
        let reduced = (size as u128).min(held);
        let released = if reduced == held {
            self.cost_basis
        } else {
            let share = mul_div_round(self.cost_basis.unsigned_abs(), reduced, held) as i128;
            share * self.cost_basis.signum()
        };
        let exit = price as i128 * reduced as i128;
        // A sell (sign −1) of a long receives `exit` for cost `released` (> 0); a buy back of
        // a short pays `exit` against a cost basis `released` (< 0).
        self.realized = self
            .realized
            .saturating_add(-sign * exit)
            .saturating_sub(released);
        self.cost_basis -= released;
        self.net += sign * reduced as i128;
        let rest = q - reduced as i128;
        if rest > 0 {
            self.cost_basis = sign * price as i128 * rest;
            self.net = sign * rest;
        }
    }

    /// Adds `delta` lots (negative: removes) to the open size of `side`.
    fn open(&mut self, side: Side, delta: i128) {
        let open = match side {
            Side::Buy => &mut self.open_buy,
            Side::Sell => &mut self.open_sell,
        };
        *open = open.saturating_add_signed(delta);
    }

    /// Average entry price as a decimal, rounded half away from zero to
    /// [`AVERAGE_PRICE_EXTRA_DIGITS`] beyond the tick size's; `None` when flat (or beyond
    /// `Decimal`'s 28 digits).
    pub fn average_price(&self, wire: &WireInstrument) -> Option<Decimal> {
        if self.net == 0 {
            return None;
        }
        let cost = wire
            .notional
            .decimal(self.cost_basis.unsigned_abs() as i128)?;
        let size = wire.size.decimal(self.net.unsigned_abs() as i128)?;
        let digits = wire.price.scale() + AVERAGE_PRICE_EXTRA_DIGITS;
        let average = cost.checked_div(size)?;
        Some(average.round_dp_with_strategy(digits, RoundingStrategy::MidpointAwayFromZero))
    }
}

/// `a × b / c` rounded half away from zero (halves up: all are unsigned), for `b ≤ c`:
/// exact whatever the sizes (the product is formed in 256 bits when 128 do not hold it).
fn mul_div_round(a: u128, b: u128, c: u128) -> u128 {
    debug_assert!(b <= c && c > 0);
    // a × b / c = (a / c) × b + (a % c) × b / c; the first term is at most a.
    let whole = (a / c) * b;
    let r = a % c;
    let (q, rem) = match r.checked_mul(b) {
        Some(p) => (p / c, p % c),
        None => mul_div_wide(r, b, c),
    };
    // rem ≥ c / 2, without overflowing 2 × rem.
    whole + q + u128::from(rem >= c - rem)
}

/// Quotient and remainder of `a × b / c` for `a < c`, the product in 256 bits.
fn mul_div_wide(a: u128, b: u128, c: u128) -> (u128, u128) {
    const LOW: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & LOW);
    let (b1, b0) = (b >> 64, b & LOW);
    let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
    let mid = (p00 >> 64) + (p01 & LOW) + (p10 & LOW);
    let lo = (p00 & LOW) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    // Long division bit by bit; the quotient fits 128 bits because a < c.
    let (mut q, mut rem) = (0u128, 0u128);
    for i in (0..256).rev() {
        let bit = if i >= 128 {
            (hi >> (i - 128)) & 1
        } else {
            (lo >> i) & 1
        };
        let carry = rem >> 127;
        rem = (rem << 1) | bit;
        if carry == 1 || rem >= c {
            rem = rem.wrapping_sub(c);
            if i < 128 {
                q |= 1 << i;
            }
        }
    }
    (q, rem)
}

/// The position's fields as JSON (`account` and `instrument` included), shared by the stream's
/// updates and snapshots and by servers answering a query.
pub fn write_json(wire: &WireInstrument, p: &Position, o: &mut JsonObject<'_>) {
    o.u64("account", p.account)
        .str("instrument", wire.symbol())
        .decimal_wide("net", wire.size, p.net)
        .decimal_wide("bought", wire.size, p.bought as i128)
        .decimal_wide("sold", wire.size, p.sold as i128)
        .decimal_wide("bought_notional", wire.notional, p.bought_notional as i128)
        .decimal_wide("sold_notional", wire.notional, p.sold_notional as i128)
        .decimal_wide("open_buy", wire.size, p.open_buy as i128)
        .decimal_wide("open_sell", wire.size, p.open_sell as i128)
        .decimal_wide("cost_basis", wire.notional, p.cost_basis);
    match p.average_price(wire) {
        Some(average) => o.str("average_price", &average.to_string()),
        None => o.null("average_price"),
    };
    o.decimal_wide("realized_pnl", wire.notional, p.realized)
        .u64("engine_seq", p.engine_seq)
        .u64("ts", p.ts);
}

/// The position as protobuf (`ticker.v1.Position`).
pub fn to_proto(wire: &WireInstrument, p: &Position) -> pb::Position {
    let size = |lots: i128| wire.size.to_string_wide(lots);
    let notional = |units: i128| wire.notional.to_string_wide(units);
    pb::Position {
        account: p.account,
        instrument: wire.symbol().to_string(),
        net: size(p.net),
        bought: size(p.bought as i128),
        sold: size(p.sold as i128),
        bought_notional: notional(p.bought_notional as i128),
        sold_notional: notional(p.sold_notional as i128),
        open_buy: size(p.open_buy as i128),
        open_sell: size(p.open_sell as i128),
        cost_basis: notional(p.cost_basis),
        average_price: p
            .average_price(wire)
            .map_or_else(String::new, |a| a.to_string()),
        realized_pnl: notional(p.realized),
        engine_seq: p.engine_seq,
        timestamp_ns: p.ts,
    }
}

fn update_proto(seq: u64, prev_seq: u64, p: &Position, event: pb::position_update::Event) -> Bytes {
    Bytes::from(
        pb::PositionUpdate {
            seq,
            prev_seq,
            engine_seq: p.engine_seq,
            timestamp_ns: p.ts,
            event: Some(event),
            delivery: 0,
        }
        .encode_to_vec(),
    )
}

/// A position change message, encoded when first read.
struct PositionUpdate {
    wire: Arc<WireInstrument>,
    position: Position,
}

impl Encode for PositionUpdate {
    fn json(&self, seq: u64, prev_seq: u64) -> Bytes {
        let mut out = Vec::with_capacity(480);
        let mut o = JsonObject::new(&mut out);
        o.str("type", "position")
            .str("channel", "positions")
            .u64("seq", seq)
            .u64("prev_seq", prev_seq);
        write_json(&self.wire, &self.position, &mut o);
        o.finish();
        Bytes::from(out)
    }

    fn proto(&self, seq: u64, prev_seq: u64) -> Bytes {
        let event = pb::position_update::Event::Position(to_proto(&self.wire, &self.position));
        update_proto(seq, prev_seq, &self.position, event)
    }
}

struct PositionsState {
    /// `seq` of the last message published.
    seq: u64,
    /// Each account's positions, by instrument id. Keyed by account so that one account's
    /// query reads only its own; an account holds few instruments, so the inner search is a
    /// binary search over a short vector.
    by_account: IdMap<AccountId, Vec<Position>>,
}

impl PositionsState {
    fn all(&self) -> Vec<Position> {
        let mut all: Vec<Position> = self.by_account.values().flatten().copied().collect();
        all.sort_unstable_by_key(|p| (p.account, p.instrument));
        all
    }
}

/// Answers a subscription's snapshot with every position.
struct PositionsSnapshotter {
    instruments: Arc<Instruments>,
    state: Arc<Mutex<PositionsState>>,
}

impl SnapshotSource for PositionsSnapshotter {
    fn snapshot(&self) -> Option<Arc<Message>> {
        let st = self.state.lock();
        let (seq, all) = (st.seq, st.all());
        drop(st);
        let positions: Vec<_> = all
            .iter()
            .filter_map(|p| Some((self.instruments.get(p.instrument)?, p)))
            .collect();
        let mut out = Vec::with_capacity(128 + 480 * positions.len());
        JsonObject::new(&mut out)
            .str("type", "snapshot")
            .str("channel", "positions")
            .u64("seq", seq)
            .u64("prev_seq", 0)
            .raw_with("positions", |o| {
                o.push(b'[');
                for (i, (wire, p)) in positions.iter().enumerate() {
                    if i > 0 {
                        o.push(b',');
                    }
                    let mut obj = JsonObject::new(o);
                    write_json(wire, p, &mut obj);
                    obj.finish();
                }
                o.push(b']');
            })
            .finish();
        let snapshot = pb::Positions {
            positions: positions.iter().map(|(w, p)| to_proto(w, p)).collect(),
        };
        let proto = Bytes::from(
            pb::PositionUpdate {
                seq,
                event: Some(pb::position_update::Event::Snapshot(snapshot)),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        Some(Message::encoded(
            seq,
            0,
            MessageKind::Snapshot,
            Bytes::from(out),
            proto,
        ))
    }
}

/// Every position, shared by the feeds thread (the only writer, through [`PositionKeeper`])
/// and the servers (queries and subscriptions).
pub struct Positions {
    hub: Arc<Hub>,
    instruments: Arc<Instruments>,
    topic: Arc<TopicState>,
    state: Arc<Mutex<PositionsState>>,
}

impl Positions {
    pub fn new(hub: Arc<Hub>, instruments: Arc<Instruments>) -> Self {
        let topic = hub.topic(Topic::Positions);
        let state = Arc::new(Mutex::new(PositionsState {
            seq: 0,
            by_account: IdMap::default(),
        }));
        topic.set_snapshot_source(Arc::new(PositionsSnapshotter {
            instruments: instruments.clone(),
            state: state.clone(),
        }));
        Positions {
            hub,
            instruments,
            topic,
            state,
        }
    }

    /// An account's positions, by instrument id (flat ones included: they keep their totals
    /// and realized P&L).
    pub fn account(&self, account: AccountId) -> Vec<Position> {
        let st = self.state.lock();
        st.by_account.get(&account).cloned().unwrap_or_default()
    }

    /// Every account's positions, by account then instrument.
    pub fn all(&self) -> Vec<Position> {
        self.state.lock().all()
    }

    pub fn get(&self, account: AccountId, instrument: InstrumentId) -> Option<Position> {
        let st = self.state.lock();
        let positions = st.by_account.get(&account)?;
        let i = positions
            .binary_search_by_key(&instrument, |p| p.instrument)
            .ok()?;
        Some(positions[i])
    }

    /// An account's positions as protobuf, for a unary query.
    pub fn account_proto(&self, account: AccountId) -> Vec<pb::Position> {
        self.proto(self.account(account))
    }

    /// Every position as protobuf, for a unary query.
    pub fn all_proto(&self) -> Vec<pb::Position> {
        self.proto(self.all())
    }

    fn proto(&self, positions: Vec<Position>) -> Vec<pb::Position> {
        positions
            .iter()
            .filter_map(|p| Some(to_proto(&*self.instruments.get(p.instrument)?, p)))
            .collect()
    }

    /// `seq` of the last message on the positions topic (0 before any).
    pub fn seq(&self) -> u64 {
        self.state.lock().seq
    }

    /// Subscribes to every position change (see [`Hub::subscribe`]): a snapshot of every
    /// position first (or, with `from_seq`, the changes after it), then each change.
    pub fn subscribe(&self, from_seq: Option<u64>) -> Subscription {
        self.hub.subscribe(Topic::Positions, from_seq)
    }

    pub(crate) fn snapshot(&self) -> PositionsSnapshot {
        let st = self.state.lock();
        PositionsSnapshot {
            seq: st.seq,
            positions: st.all(),
            history: History(self.topic.history()),
        }
    }

    /// Takes up a checked snapshot, before anyone subscribes.
    pub(crate) fn restore(&self, snapshot: PositionsSnapshot) {
        let mut st = self.state.lock();
        st.seq = snapshot.seq;
        st.by_account.clear();
        // Sorted by account then instrument (checked), so each account's vector is too.
        for p in snapshot.positions {
            st.by_account.entry(p.account).or_default().push(p);
        }
        drop(st);
        self.topic.replace_history(snapshot.history.0);
    }
}

/// An open order as far as positions care: whose it is and how much of it is left.
#[derive(Clone, Copy, Debug)]
struct LiveOrder {
    account: AccountId,
    instrument: InstrumentId,
    side: Side,
    remaining: Lots,
}

/// One side of a trade: whose order, and what is left of it.
#[derive(Clone, Copy)]
struct TradeSide {
    account: AccountId,
    instrument: InstrumentId,
    side: Side,
    order: OrderId,
    remaining: Lots,
}

/// Applies engine events to [`Positions`] on the feeds thread.
pub struct PositionKeeper {
    positions: Arc<Positions>,
    /// Every open order's remaining size, for the open quantities (events say what is left,
    /// so a change is the difference from what was).
    live: IdMap<OrderId, LiveOrder>,
    /// Instruments by id, copied from the shared registry on first use.
    wires: Vec<Option<Arc<WireInstrument>>>,
}

impl PositionKeeper {
    pub fn new(positions: Arc<Positions>) -> Self {
        PositionKeeper {
            positions,
            live: IdMap::default(),
            wires: Vec::new(),
        }
    }

    pub fn positions(&self) -> &Arc<Positions> {
        &self.positions
    }

    fn wire(&mut self, instrument: InstrumentId) -> Option<Arc<WireInstrument>> {
        let idx = instrument as usize;
        if let Some(Some(w)) = self.wires.get(idx) {
            return Some(w.clone());
        }
        let wire = self.positions.instruments.get(instrument)?;
        if self.wires.len() <= idx {
            self.wires.resize(idx + 1, None);
        }
        self.wires[idx] = Some(wire.clone());
        Some(wire)
    }

    /// Changes one position with `change` and publishes it.
    fn change(
        &mut self,
        account: AccountId,
        instrument: InstrumentId,
        e: &Event,
        change: impl FnOnce(&mut Position),
    ) {
        let Some(wire) = self.wire(instrument) else {
            return;
        };
        let mut st = self.positions.state.lock();
        let positions = st.by_account.entry(account).or_default();
        let i = match positions.binary_search_by_key(&instrument, |p| p.instrument) {
            Ok(i) => i,
            Err(i) => {
                positions.insert(i, Position::new(account, instrument));
                i
            }
        };
        let p = &mut positions[i];
        change(p);
        p.engine_seq = e.seq;
        p.ts = e.ts;
        let position = *p;
        st.seq += 1;
        let seq = st.seq;
        self.positions.topic.publish(Message::lazy(
            seq,
            seq - 1,
            MessageKind::Update,
            PositionUpdate { wire, position },
        ));
    }

    /// Sets an open order's remaining size and adds the difference to its position's open
    /// size.
    fn remaining(&mut self, e: &Event, order: OrderId, remaining: Lots) {
        let Some(o) = self.live.get_mut(&order) else {
            return;
        };
        let delta = remaining as i128 - o.remaining as i128;
        o.remaining = remaining;
        let o = *o;
        if delta != 0 {
            self.change(o.account, o.instrument, e, |p| p.open(o.side, delta));
        }
    }

    /// One side of a trade: the fill, and the order's open size, in one change.
    fn fill(&mut self, e: &Event, side: TradeSide, price: Ticks, size: Lots) {
        let delta = match self.live.get_mut(&side.order) {
            Some(o) => {
                let delta = side.remaining as i128 - o.remaining as i128;
                o.remaining = side.remaining;
                delta
            }
            None => 0,
        };
        self.change(side.account, side.instrument, e, |p| {
            p.fill(side.side, price, size);
            p.open(side.side, delta);
        });
    }

    pub fn apply(&mut self, e: &Event) {
        match e.kind {
            EventKind::PlaceAccepted { ref order, .. } => {
                self.live.insert(
                    order.order_id,
                    LiveOrder {
                        account: order.account,
                        instrument: order.instrument,
                        side: order.side,
                        remaining: order.size,
                    },
                );
                let (side, size) = (order.side, order.size as i128);
                self.change(order.account, order.instrument, e, |p| p.open(side, size));
            }
            EventKind::OrderRested {
                order_id,
                remaining,
                ..
            }
            | EventKind::OrderAmended {
                order_id,
                remaining,
                ..
            } => self.remaining(e, order_id, remaining),
            EventKind::Trade {
                instrument,
                price,
                size,
                aggressor,
                taker_order,
                taker_account,
                maker_order,
                maker_account,
                taker_remaining,
                maker_remaining,
                ..
            } => {
                let taker = TradeSide {
                    account: taker_account,
                    instrument,
                    side: aggressor,
                    order: taker_order,
                    remaining: taker_remaining,
                };
                let maker = TradeSide {
                    account: maker_account,
                    side: aggressor.opposite(),
                    order: maker_order,
                    remaining: maker_remaining,
                    ..taker
                };
                self.fill(e, taker, price, size);
                self.fill(e, maker, price, size);
            }
            EventKind::OrderDone { order_id, .. } => {
                // Whatever was left is no longer open (0 when it filled).
                self.remaining(e, order_id, 0);
                self.live.remove(&order_id);
            }
            // Outcomes of commands, stops waiting or triggered (their size stays open), book
            // levels, instruments, halts and an account's kill switch (its cancels are
            // `OrderDone`s of their own) change no position. Listed rather than left to a
            // wildcard: a new event kind must be looked at for what it does to open orders.
            EventKind::Accepted { .. }
            | EventKind::Rejected { .. }
            | EventKind::StopArmed { .. }
            | EventKind::StopTriggered { .. }
            | EventKind::LevelChanged { .. }
            | EventKind::InstrumentAdded { .. }
            | EventKind::TradingStatus { .. }
            | EventKind::AccountStatus { .. } => {}
        }
    }

    /// Takes up the open orders of a snapshot's accounts (the positions themselves are
    /// restored by [`Positions::restore`]).
    pub(crate) fn restore_open_orders<'a>(
        &mut self,
        open: impl Iterator<Item = (AccountId, &'a OrderInfo, Lots)>,
    ) {
        self.live = open
            .map(|(account, info, remaining)| {
                let order = LiveOrder {
                    account,
                    instrument: info.instrument,
                    side: info.side,
                    remaining,
                };
                (info.order_id, order)
            })
            .collect();
    }
}

/// Sums of open orders' remaining sizes by (account, instrument): (buy, sell). For checking a
/// snapshot's positions against its accounts' open orders.
pub(crate) fn open_sums<'a>(
    open: impl Iterator<Item = (AccountId, &'a OrderInfo, Lots)>,
) -> std::collections::BTreeMap<(AccountId, InstrumentId), (u128, u128)> {
    let mut sums = std::collections::BTreeMap::new();
    for (account, info, remaining) in open {
        let sum: &mut (u128, u128) = sums.entry((account, info.instrument)).or_default();
        match info.side {
            Side::Buy => sum.0 += remaining as u128,
            Side::Sell => sum.1 += remaining as u128,
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(fills: &[(Side, Ticks, Lots)]) -> Position {
        let mut p = Position::new(1, 0);
        for &(side, price, size) in fills {
            p.fill(side, price, size);
        }
        p
    }

    /// The identity the rounding rule keeps: nothing realized is ever lost or made up.
    fn assert_cash_identity(p: &Position) {
        assert_eq!(
            p.realized,
            p.sold_notional as i128 - p.bought_notional as i128 + p.cost_basis,
            "{p:?}"
        );
    }

    #[test]
    fn a_reduction_realizes_exit_minus_average_entry_times_the_size() {
        // Long 10 at 100 and 10 at 110: average 105. Sell 5 at 120: +75.
        let p = filled(&[
            (Side::Buy, 100, 10),
            (Side::Buy, 110, 10),
            (Side::Sell, 120, 5),
        ]);
        assert_eq!((p.net, p.cost_basis, p.realized), (15, 1575, 75));
        assert_eq!((p.bought, p.sold), (20, 5));
        assert_eq!((p.bought_notional, p.sold_notional), (2100, 600));
        assert_cash_identity(&p);
    }

    #[test]
    fn a_short_covered_lower_realizes_a_gain() {
        // Short 10 at 100, buy 4 back at 90: +40; the rest keeps its average of 100.
        let p = filled(&[(Side::Sell, 100, 10), (Side::Buy, 90, 4)]);
        assert_eq!((p.net, p.cost_basis, p.realized), (-6, -600, 40));
        assert_cash_identity(&p);
    }

    #[test]
    fn a_flip_closes_the_whole_position_then_opens_the_rest_at_the_fill_price() {
        // Long 3 at 100; sell 5 at 90: −30 realized, short 2 at 90.
        let p = filled(&[(Side::Buy, 100, 3), (Side::Sell, 90, 5)]);
        assert_eq!((p.net, p.cost_basis, p.realized), (-2, -180, -30));
        assert_cash_identity(&p);
    }

    #[test]
    fn the_rounding_of_a_released_cost_stays_in_the_basis_and_flat_is_exact() {
        // Long 3 for 100 (average 33⅓); selling 1 releases 33 (33.33 rounded), then 1 more
        // releases 34 (67 × 1/2 = 33.5, rounded away from zero), the last the remaining 33.
        let mut p = filled(&[(Side::Buy, 25, 2), (Side::Buy, 50, 1), (Side::Sell, 40, 1)]);
        assert_eq!((p.cost_basis, p.realized), (67, 7));
        p.fill(Side::Sell, 40, 1);
        assert_eq!((p.cost_basis, p.realized), (33, 13));
        p.fill(Side::Sell, 40, 1);
        assert_eq!((p.net, p.cost_basis, p.realized), (0, 0, 20));
        assert_eq!(p.realized, 120 - 100, "flat: exactly the cash made");
        assert_cash_identity(&p);
    }

    #[test]
    fn mul_div_rounds_half_away_from_zero_and_survives_products_past_128_bits() {
        assert_eq!(mul_div_round(100, 1, 3), 33);
        assert_eq!(mul_div_round(67, 1, 2), 34);
        assert_eq!(mul_div_round(200, 2, 3), 133);
        assert_eq!(mul_div_round(5, 1, 10), 1);
        assert_eq!(mul_div_round(4, 1, 10), 0);
        // a × (c − 2) / c with a = 2^127 − 1, c = 2^100 + 3: the product needs 227 bits.
        // Checked the long way round: it is a − 2a / c, and 2a fits 128 bits. With
        // 2a = x × c + r (0 < r < c), a − 2a / c = (a − x − 1) + (c − r) / c.
        let a = i128::MAX as u128;
        let c = (1u128 << 100) + 3;
        let (x, r) = (2 * a / c, 2 * a % c);
        assert!(r > 0);
        let expected = a - x - 1 + u128::from(2 * (c - r) >= c);
        assert_eq!(mul_div_round(a, c - 2, c), expected);
        // The wide path agrees with the narrow one where both work.
        for (a, b, c) in [(12345u128, 678, 910), (u64::MAX as u128, 77, 99), (7, 7, 7)] {
            let (q, r) = mul_div_wide(a % c, b, c);
            assert_eq!((q, r), ((a % c) * b / c, (a % c) * b % c));
        }
    }

    #[test]
    fn the_average_price_rounds_to_six_digits_past_the_tick() {
        use rust_decimal::Decimal;
        use std::str::FromStr;
        let spec = InstrumentSpec {
            symbol: "ETH-USD".into(),
            tick_size: Decimal::from_str("0.01").unwrap(),
            lot_size: Decimal::from_str("0.001").unwrap(),
            min_size: Decimal::from_str("0.001").unwrap(),
            max_size: Decimal::from(1000),
            reference_price: Decimal::from(3000),
            band: Decimal::from_str("0.5").unwrap(),
        };
        let wire = WireInstrument::new(0, spec).unwrap();
        // 3 lots for 100,000 ticks × lots: 33,333.33… ticks = 333.3333333… per unit.
        let p = filled(&[(Side::Buy, 25_000, 2), (Side::Buy, 50_000, 1)]);
        assert_eq!(p.average_price(&wire).unwrap().to_string(), "333.33333333");
        assert_eq!(filled(&[]).average_price(&wire), None);
        let mut out = Vec::new();
        let mut o = JsonObject::new(&mut out);
        write_json(&wire, &p, &mut o);
        o.finish();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["net"], "0.003");
        assert_eq!(v["bought_notional"], "1.00000", "100,000 × 0.01 × 0.001");
        assert_eq!(v["cost_basis"], "1.00000");
        assert_eq!(v["realized_pnl"], "0.00000");
        assert_eq!(v["open_buy"], "0.000");
    }
}
