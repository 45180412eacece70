//! Restoring an engine from a snapshot: every check that makes [`Engine::restore`] accept only
//! states the engine can reach by itself, and the rebuilding of what a snapshot leaves out (the
//! links, the client-id index, the level totals).

use super::{
    BookSnapshot, EngineSnapshot, Expiry, ListKind, OrderList, OrderSnapshot, RiskSnapshot,
    SlotsSnapshot,
};
use crate::book::{Book, StopEntry};
use crate::engine::{Engine, EngineConfig};
use crate::instrument::{Instrument, SpecError};
use crate::order::*;
use crate::risk::AccountRisk;
use crate::shard::Shard;
use crate::types::*;
use rustc_hash::{FxHashMap, FxHashSet};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Why a snapshot cannot be restored: the first inconsistency found, with the values involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("snapshot format {found} is not the supported format {supported}")]
    UnsupportedFormat { found: u32, supported: u32 },
    #[error("snapshot holds {instruments} instruments, max_instruments is {max}")]
    TooManyInstruments { instruments: usize, max: usize },
    #[error("instrument {instrument}: {source}")]
    InvalidInstrument {
        instrument: InstrumentId,
        source: SpecError,
    },
    #[error("instrument {instrument} has the symbol {symbol:?} of instrument {first}")]
    DuplicateSymbol {
        instrument: InstrumentId,
        symbol: String,
        first: InstrumentId,
    },
    #[error("snapshot used {high_water} order slots, order_capacity allows {capacity}")]
    CapacityExceeded { high_water: u32, capacity: u32 },
    #[error("order id {id} is not one the engine assigns (generation 0)")]
    InvalidOrderId { id: OrderId },
    #[error(
        "order {id} on instrument {instrument} is not one shard {shard} of {count} holds: the \
         snapshot is another shard's"
    )]
    WrongShard {
        id: OrderId,
        instrument: InstrumentId,
        shard: usize,
        count: usize,
    },
    #[error("slot {slot} is beyond the {high_water} slots the snapshot used")]
    SlotBeyondHighWater { slot: u32, high_water: u32 },
    #[error("slot {slot} is listed twice among live orders and freed slots")]
    SlotListedTwice { slot: u32 },
    #[error("freed slot {slot} has generation 0, which only never-used slots have")]
    FreedSlotNeverUsed { slot: u32 },
    #[error("slot {slot} is below the high-water mark but neither live nor freed")]
    SlotUnaccounted { slot: u32 },
    #[error("instrument {instrument}: last price {price} is outside the price band")]
    LastPriceOutsideBand {
        instrument: InstrumentId,
        price: Ticks,
    },
    #[error("instrument {instrument} {side:?} level {price}: {problem}")]
    BadLevel {
        instrument: InstrumentId,
        side: Side,
        price: Ticks,
        problem: &'static str,
    },
    #[error("order {id}: {problem}")]
    BadOrder { id: OrderId, problem: &'static str },
    #[error("instrument {instrument} {side:?} stops are out of trigger order at order {id}")]
    StopsOutOfOrder {
        instrument: InstrumentId,
        side: Side,
        id: OrderId,
    },
    #[error(
        "stop {id} is armed but its trigger {trigger} was reached by the last price {last_price}"
    )]
    StopAlreadyReached {
        id: OrderId,
        trigger: Ticks,
        last_price: Ticks,
    },
    #[error("instrument {instrument} is crossed: best bid {bid} is not below best ask {ask}")]
    Crossed {
        instrument: InstrumentId,
        bid: Ticks,
        ask: Ticks,
    },
    #[error(
        "{list} lists must be non-empty and ascending by owner, without repeats: {list} {owner}"
    )]
    BadList { list: ListKind, owner: u64 },
    #[error("{list} {owner} lists order {id}, which is not a live order")]
    UnknownOrder {
        list: ListKind,
        owner: u64,
        id: OrderId,
    },
    #[error("{list} {owner} lists order {id}, which belongs to {list} {actual}")]
    WrongOwner {
        list: ListKind,
        owner: u64,
        id: OrderId,
        actual: u64,
    },
    #[error("order {id} is linked twice into {list} lists")]
    LinkedTwice { list: ListKind, id: OrderId },
    #[error("live order {id} is in no {list} list")]
    NotLinked { list: ListKind, id: OrderId },
    #[error("account {account} has two live orders with client order id {client_id}")]
    DuplicateClientOrderId {
        account: AccountId,
        client_id: ClientOrderId,
    },
    #[error("GTD order {id} has no expiry entry at its expiry {expiry}")]
    MissingExpiry { id: OrderId, expiry: Timestamp },
    #[error("expiry entries are not strictly ascending at the entry of order {id}")]
    ExpiriesOutOfOrder { id: OrderId },
    #[error("order {id} refers to event {seq}, after the snapshot's last event {last_seq}")]
    SeqAfterLast {
        id: OrderId,
        seq: u64,
        last_seq: u64,
    },
    #[error("risk state of account {account}: {problem}")]
    BadRisk {
        account: AccountId,
        problem: &'static str,
    },
}

impl Engine {
    /// An engine in the state `snapshot` describes, sized by `config`. Given the same commands
    /// it emits the same events as the engine the snapshot was taken of, provided `config`
    /// keeps its `order_capacity` and `max_instruments` (they decide rejects); the layout
    /// settings (`ladder_ticks`, `index_capacity`, `prefault`) may change freely.
    pub fn restore(
        config: EngineConfig,
        snapshot: &EngineSnapshot,
    ) -> Result<Engine, RestoreError> {
        // Restore fills the engine's hash maps and heap through other entry points than
        // `apply` uses (`entry`, a heapify): with fat LTO, one more caller of `HashMap::insert`
        // or `BinaryHeap::push` made LLVM stop inlining them into `apply` (cachegrind: ~10
        // instructions more per command in `ticker-bench engine`).
        if !(EngineSnapshot::OLDEST_FORMAT..=EngineSnapshot::FORMAT).contains(&snapshot.format) {
            return Err(RestoreError::UnsupportedFormat {
                found: snapshot.format,
                supported: EngineSnapshot::FORMAT,
            });
        }
        if snapshot.books.len() > config.max_instruments {
            return Err(RestoreError::TooManyInstruments {
                instruments: snapshot.books.len(),
                max: config.max_instruments,
            });
        }
        let high_water = snapshot.slots.high_water;
        let capacity = OrderPool::clamped_capacity(config.order_capacity);
        if high_water > capacity {
            return Err(RestoreError::CapacityExceeded {
                high_water,
                capacity,
            });
        }
        let config_shard = config.shard;
        let mut engine = Engine::with_pool(config, |c| {
            OrderPool::restored(c.order_capacity, c.prefault, high_water)
        });
        let mut slots = SlotUse::new(high_water, config_shard);
        let mut symbols: FxHashMap<&str, InstrumentId> = FxHashMap::default();
        for (id, b) in snapshot.books.iter().enumerate() {
            let id = id as InstrumentId;
            if let Some(&first) = symbols.get(b.spec.symbol.as_str()) {
                return Err(RestoreError::DuplicateSymbol {
                    instrument: id,
                    symbol: b.spec.symbol.clone(),
                    first,
                });
            }
            symbols.insert(&b.spec.symbol, id);
            let instrument = Instrument::new(id, b.spec.clone()).map_err(|source| {
                RestoreError::InvalidInstrument {
                    instrument: id,
                    source,
                }
            })?;
            let book = restore_book(&mut engine, &mut slots, b, instrument, snapshot.last_seq)?;
            engine.books.push(book);
        }
        restore_free_list(&mut engine.st.pool, &mut slots, &snapshot.slots)?;
        let st = &mut engine.st;
        // Into the maps `with_pool` sized by `index_capacity`, so they rehash no sooner than a
        // new engine's would.
        let lists = [
            (&mut st.accounts, &snapshot.accounts, ListKind::Account),
            (&mut st.sessions, &snapshot.sessions, ListKind::Session),
        ];
        for (heads, lists, kind) in lists {
            link(&mut st.pool, &mut slots, heads, lists, kind)?;
        }
        let mut gtd: FxHashSet<(OrderId, Timestamp)> = FxHashSet::default();
        let mut previous: Option<&Expiry> = None;
        for e in &snapshot.expiries {
            if previous.is_some_and(|p| p >= e) {
                return Err(RestoreError::ExpiriesOutOfOrder { id: e.order_id });
            }
            previous = Some(e);
            emitted_already(e.order_id, e.accepted_seq, snapshot.last_seq)?;
            gtd.insert((e.order_id, e.expiry));
        }
        for slot in slots.live() {
            let o = st.pool.get(slot);
            if o.client_id != 0 {
                if st
                    .client_ids
                    .get(o.account, o.client_id, &st.pool)
                    .is_some()
                {
                    return Err(RestoreError::DuplicateClientOrderId {
                        account: o.account,
                        client_id: o.client_id,
                    });
                }
                st.client_ids.insert(slot, &st.pool);
            }
            if o.tif == TimeInForce::Gtd && !gtd.contains(&(o.id, o.expiry)) {
                return Err(RestoreError::MissingExpiry {
                    id: o.id,
                    expiry: o.expiry,
                });
            }
        }
        // Sized like a new engine's heap, and heapified at once rather than pushed into.
        let mut expiries = Vec::with_capacity(st.expiries.capacity().max(snapshot.expiries.len()));
        expiries.extend(
            snapshot
                .expiries
                .iter()
                .map(|e| Reverse((e.expiry, e.accepted_seq, e.order_id))),
        );
        st.expiries = BinaryHeap::from(expiries);
        st.seq = snapshot.last_seq;
        st.trade_seq = snapshot.last_trade_id;
        restore_risk(&mut engine, &snapshot.risk)?;
        Ok(engine)
    }
}

/// Restores the risk state, then recounts open orders and open sizes from the live orders
/// (already restored) as the engine counted them.
fn restore_risk(engine: &mut Engine, r: &RiskSnapshot) -> Result<(), RestoreError> {
    let bad = |account, problem| Err(RestoreError::BadRisk { account, problem });
    let instruments = engine.books.len();
    let st = &mut engine.st;
    if !r.active {
        if r.default_limits.is_some() || !r.accounts.is_empty() || !r.positions.is_empty() {
            return bad(0, "risk state while risk is off");
        }
        return Ok(());
    }
    if r.default_limits
        .as_ref()
        .is_some_and(|l| l.validate(instruments).is_err())
    {
        return bad(0, "invalid default limits");
    }
    let mut previous = None;
    for a in &r.accounts {
        if a.account == 0 || previous.is_some_and(|p| p >= a.account) {
            return bad(a.account, "accounts not ascending and non-zero");
        }
        previous = Some(a.account);
        if a.limits
            .as_ref()
            .is_some_and(|l| l.validate(instruments).is_err())
        {
            return bad(a.account, "invalid limits");
        }
        if a.disabled && st.accounts.contains_key(&a.account) {
            return bad(a.account, "disabled with live orders");
        }
        st.risk.accounts.insert(
            a.account,
            AccountRisk {
                limits: a.limits.clone(),
                disabled: a.disabled,
                open_orders: 0,
                window_sec: a.window_sec,
                window_orders: a.window_orders,
                exposures: Vec::new(),
            },
        );
    }
    let mut previous = None;
    for p in &r.positions {
        let key = (p.account, p.instrument);
        if p.account == 0 || p.net == 0 || previous.is_some_and(|q| q >= key) {
            return bad(
                p.account,
                "positions not ascending, non-zero and of an account",
            );
        }
        if p.instrument as usize >= instruments {
            return bad(p.account, "position on an unknown instrument");
        }
        previous = Some(key);
        // The engine has an account entry for every account it ever saw an order of.
        let Some(a) = st.risk.accounts.get_mut(&p.account) else {
            return bad(p.account, "a position of an account without risk state");
        };
        a.exposure_mut(p.instrument).net = p.net;
    }
    // The engine makes an account's entry at its first order once risk is on (or at switching
    // on, for the orders then live), so every account with live orders has one.
    let mut with_orders: Vec<AccountId> = st.accounts.keys().copied().collect();
    with_orders.sort_unstable();
    if let Some(&account) = with_orders
        .iter()
        .find(|a| !st.risk.accounts.contains_key(a))
    {
        return bad(account, "live orders but no risk state");
    }
    st.risk.default_limits = r.default_limits.clone();
    st.risk.active = true;
    for slot in st.pool.live_slots() {
        let o = st.pool.get(slot);
        st.risk
            .opened(o.account, o.instrument, o.side, o.remaining, None);
    }
    Ok(())
}

/// What restoring has seen of each slot below the high-water mark.
struct SlotUse {
    state: Vec<u8>,
    high_water: u32,
    /// The shard being restored: its live orders carry its ids and trade its instruments.
    shard: Shard,
}

const SLOT_LIVE: u8 = 1;
const SLOT_FREED: u8 = 2;
const SLOT_IN_ACCOUNT: u8 = 4;
const SLOT_IN_SESSION: u8 = 8;

impl SlotUse {
    fn new(high_water: u32, shard: Shard) -> Self {
        SlotUse {
            state: vec![0; high_water as usize],
            high_water,
            shard,
        }
    }

    /// Claims the slot of a live order's id, on `instrument`.
    fn claim_live(&mut self, id: OrderId, instrument: InstrumentId) -> Result<u32, RestoreError> {
        if id.generation() == 0 {
            return Err(RestoreError::InvalidOrderId { id });
        }
        let (shard, count) = (self.shard.index(), self.shard.count());
        if !self.shard.owns(instrument) || !self.shard.assigned(id) {
            return Err(RestoreError::WrongShard {
                id,
                instrument,
                shard,
                count,
            });
        }
        self.claim(id.slot(), SLOT_LIVE)?;
        Ok(id.slot())
    }

    fn claim(&mut self, slot: u32, how: u8) -> Result<(), RestoreError> {
        let state = self
            .state
            .get_mut(slot as usize)
            .ok_or(RestoreError::SlotBeyondHighWater {
                slot,
                high_water: self.high_water,
            })?;
        if *state != 0 {
            return Err(RestoreError::SlotListedTwice { slot });
        }
        *state = how;
        Ok(())
    }

    fn live(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.high_water).filter(|&s| self.state[s as usize] & SLOT_LIVE != 0)
    }
}

/// Rebuilds one book: its levels (queues in order), its armed stops, its status.
fn restore_book(
    engine: &mut Engine,
    slots: &mut SlotUse,
    b: &BookSnapshot,
    instrument: Instrument,
    last_seq: u64,
) -> Result<Book, RestoreError> {
    let id = instrument.id;
    if let Some(price) = b.last_price.filter(|&p| !instrument.in_band(p)) {
        return Err(RestoreError::LastPriceOutsideBand {
            instrument: id,
            price,
        });
    }
    let mut book = Book::new(instrument, engine.config.ladder_ticks);
    book.halted = b.halted;
    book.last_price = b.last_price;
    let pool = &mut engine.st.pool;
    for side in [Side::Buy, Side::Sell] {
        let mut previous: Option<Ticks> = None;
        for level in b.levels(side) {
            let bad = |problem| RestoreError::BadLevel {
                instrument: id,
                side,
                price: level.price,
                problem,
            };
            if !book.instrument.in_band(level.price) {
                return Err(bad("price outside the band"));
            }
            let better = |a: Ticks, b: Ticks| match side {
                Side::Buy => a > b,
                Side::Sell => a < b,
            };
            if previous.is_some_and(|p| !better(p, level.price)) {
                return Err(bad("levels not strictly best first"));
            }
            previous = Some(level.price);
            if level.orders.is_empty() {
                return Err(bad("no orders"));
            }
            let mut total: Lots = 0;
            for o in &level.orders {
                check_order(o, &book.instrument)?;
                check_resting(o, level.price)?;
                total = total
                    .checked_add(o.visible)
                    .ok_or_else(|| bad("visible size overflows"))?;
                let slot = slots.claim_live(o.id, id)?;
                pool.occupy(slot, o.to_order(id, side, FLAG_RESTING));
                book.side_mut(side).push_back(pool, slot);
            }
        }
        let mut entries = Vec::with_capacity(b.stops(side).len());
        let mut previous: Option<(Ticks, u64)> = None;
        for stop in b.stops(side) {
            let o = &stop.order;
            check_order(o, &book.instrument)?;
            check_armed(o, side, book.last_price)?;
            emitted_already(o.id, stop.arrival, last_seq)?;
            let key = (o.trigger, stop.arrival);
            let in_order = previous.is_none_or(|(t, a)| match side {
                Side::Buy => (t, a) < key,
                Side::Sell => t > key.0 || (t == key.0 && a < key.1),
            });
            if !in_order {
                return Err(RestoreError::StopsOutOfOrder {
                    instrument: id,
                    side,
                    id: o.id,
                });
            }
            previous = Some(key);
            let slot = slots.claim_live(o.id, id)?;
            pool.occupy(slot, o.to_order(id, side, FLAG_STOP_ARMED));
            entries.push(StopEntry {
                trigger: o.trigger,
                arrival: stop.arrival,
                slot,
            });
        }
        // The book keeps the next to trigger last (and its list's reserved capacity).
        book.stops_mut(side).extend(entries.iter().rev());
    }
    if let (Some(bid), Some(ask)) = (book.best_bid(), book.best_ask()) {
        if bid >= ask {
            return Err(RestoreError::Crossed {
                instrument: id,
                bid,
                ask,
            });
        }
    }
    Ok(book)
}

/// What every live order satisfies, wherever it is.
fn check_order(o: &OrderSnapshot, ins: &Instrument) -> Result<(), RestoreError> {
    let problem = if o.account == 0 {
        "account 0"
    } else if o.remaining == 0 {
        "no remaining size"
    } else if o.remaining > ins.max_lots {
        "remaining size above the instrument's maximum"
    } else if o.post_only && o.order_type != OrderType::Limit {
        "post-only on an order that is not a plain limit order"
    } else if (o.tif == TimeInForce::Gtd) != (o.expiry != 0) {
        "an expiry without GTD, or GTD without an expiry"
    } else if o.order_type.is_stop() && !ins.in_band(o.trigger) {
        "trigger outside the band"
    } else if !o.order_type.is_stop() && o.trigger != 0 {
        "a trigger on an order that is not a stop"
    } else if o.order_type.has_limit_price() && !ins.in_band(o.price) {
        "limit price outside the band"
    } else if !o.order_type.has_limit_price() && o.price != 0 {
        "a limit price on a market order"
    } else {
        return Ok(());
    };
    Err(RestoreError::BadOrder { id: o.id, problem })
}

/// What an order resting in a level satisfies.
fn check_resting(o: &OrderSnapshot, level_price: Ticks) -> Result<(), RestoreError> {
    let problem = if !o.order_type.has_limit_price() {
        "a market order resting"
    } else if !matches!(o.tif, TimeInForce::Gtc | TimeInForce::Gtd) {
        "an immediate-or-cancel order resting"
    } else if o.price != level_price {
        "price differs from its level's"
    } else if o.visible == 0 || o.visible > o.remaining {
        "visible size not within 1..=remaining"
    } else if o.display == 0 && o.visible != o.remaining {
        "visible size differs from remaining without a display size"
    } else if o.display != 0 && o.visible > o.display {
        "visible size above the display size"
    } else {
        return Ok(());
    };
    Err(RestoreError::BadOrder { id: o.id, problem })
}

/// What an armed stop satisfies: a stop, showing nothing, its trigger not yet reached.
fn check_armed(o: &OrderSnapshot, side: Side, last: Option<Ticks>) -> Result<(), RestoreError> {
    let problem = if !o.order_type.is_stop() {
        "armed but not a stop order"
    } else if o.visible != 0 {
        "armed stop showing a visible size"
    } else {
        return match last {
            Some(last_price) if reached(side, o.trigger, last_price) => {
                Err(RestoreError::StopAlreadyReached {
                    id: o.id,
                    trigger: o.trigger,
                    last_price,
                })
            }
            _ => Ok(()),
        };
    };
    Err(RestoreError::BadOrder { id: o.id, problem })
}

/// Whether a stop of `side` triggers at `last`: the engine never leaves one armed that does.
fn reached(side: Side, trigger: Ticks, last: Ticks) -> bool {
    match side {
        Side::Buy => trigger <= last,
        Side::Sell => trigger >= last,
    }
}

/// Checks that an event an order refers to (its arming, its acceptance) was emitted already.
fn emitted_already(id: OrderId, seq: u64, last_seq: u64) -> Result<(), RestoreError> {
    if seq > last_seq {
        return Err(RestoreError::SeqAfterLast { id, seq, last_seq });
    }
    Ok(())
}

/// Chains the freed slots into the pool's free list in the snapshot's order, and checks that
/// every slot below the high-water mark is now accounted for.
fn restore_free_list(
    pool: &mut OrderPool,
    slots: &mut SlotUse,
    s: &SlotsSnapshot,
) -> Result<(), RestoreError> {
    for f in &s.freed {
        slots.claim(f.slot, SLOT_FREED)?;
        if f.generation == 0 {
            return Err(RestoreError::FreedSlotNeverUsed { slot: f.slot });
        }
    }
    if let Some(slot) = slots.state.iter().position(|&s| s == 0) {
        return Err(RestoreError::SlotUnaccounted { slot: slot as u32 });
    }
    // The pool pushes freed slots on the front of its list: push the last one first.
    for f in s.freed.iter().rev() {
        pool.push_freed(f.slot, f.generation);
    }
    Ok(())
}

/// Links the live orders into their account's or session's list in the listed order and
/// records each list's head; every order (every order with a session) must be in exactly one.
fn link(
    pool: &mut OrderPool,
    slots: &mut SlotUse,
    heads: &mut FxHashMap<u64, u32>,
    lists: &[OrderList],
    kind: ListKind,
) -> Result<(), RestoreError> {
    let linked_bit = match kind {
        ListKind::Account => SLOT_IN_ACCOUNT,
        ListKind::Session => SLOT_IN_SESSION,
    };
    let owner_of = |o: &Order| match kind {
        ListKind::Account => o.account,
        ListKind::Session => o.session,
    };
    let mut previous_owner: Option<u64> = None;
    for list in lists {
        let owner = list.owner;
        // Session 0 means "untagged": no list may claim it.
        let no_session = kind == ListKind::Session && owner == 0;
        if list.orders.is_empty() || no_session || previous_owner.is_some_and(|p| p >= owner) {
            return Err(RestoreError::BadList { list: kind, owner });
        }
        previous_owner = Some(owner);
        let mut previous = NIL;
        let mut head = NIL;
        for &id in &list.orders {
            let slot = pool.find(id).ok_or(RestoreError::UnknownOrder {
                list: kind,
                owner,
                id,
            })?;
            let actual = owner_of(pool.get(slot));
            if actual != owner {
                return Err(RestoreError::WrongOwner {
                    list: kind,
                    owner,
                    id,
                    actual,
                });
            }
            let state = &mut slots.state[slot as usize];
            if *state & linked_bit != 0 {
                return Err(RestoreError::LinkedTwice { list: kind, id });
            }
            *state |= linked_bit;
            let o = pool.get_mut(slot);
            match kind {
                ListKind::Account => o.acct_prev = previous,
                ListKind::Session => o.sess_prev = previous,
            }
            if previous != NIL {
                let p = pool.get_mut(previous);
                match kind {
                    ListKind::Account => p.acct_next = slot,
                    ListKind::Session => p.sess_next = slot,
                }
            }
            if head == NIL {
                head = slot;
            }
            previous = slot;
        }
        heads.entry(owner).or_insert(head);
    }
    for slot in slots.live() {
        let o = pool.get(slot);
        let listed = slots.state[slot as usize] & linked_bit != 0;
        if !listed && (kind == ListKind::Account || o.session != 0) {
            return Err(RestoreError::NotLinked {
                list: kind,
                id: o.id,
            });
        }
    }
    Ok(())
}
