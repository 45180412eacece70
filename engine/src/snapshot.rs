//! Snapshots of the matching engine: its whole state between two commands, and an engine
//! rebuilt from one that goes on exactly as the original would have, event for event.
//!
//! A snapshot is *logical*: it says what the engine holds and in which order, never how it is
//! laid out. Books list their price levels best first and each level its orders front of the
//! queue first; armed stops come in the order they will trigger; accounts and sessions list their
//! orders newest first. The ladder and its bitmap, the far-price maps, the intrusive links and
//! the client-id index are rebuilt on restore, so a build with another ladder width, pool
//! capacity or hash map restores a snapshot of an older one.
//!
//! What future events depend on, and so what is kept:
//! - the event sequence number and the last trade id;
//! - where the next orders go: an [`OrderId`] is a slot and that slot's generation, so the pool's
//!   high-water mark and its free list, in order and with each freed slot's generation, are kept
//!   ([`SlotsSnapshot`]), and the restored engine hands out the ids the original would have;
//! - every live order with all its fields, in the order of each list it is in: its level's queue
//!   (priority), the armed stops (trigger order, ties by the arrival kept with each), its account's
//!   and its session's lists (mass cancel and cancel-on-disconnect go through them in order);
//! - the GTD expiry heap, stale entries included (see [`Expiry`]);
//! - instruments (spec; the id is the position), halted flags and last trade prices.
//!
//! What is not: the per-command buffers (levels touched, stops triggered) are empty between
//! commands, and the client-id index and level totals are derived.
//!
//! [`Engine::restore`] trusts nothing it reads. Whatever the input, it returns an engine or a
//! [`RestoreError`] naming the first inconsistency, never panics, and accepts only states the
//! engine can reach by itself, so `apply` keeps its invariants afterwards.

use crate::book::{Book, StopEntry};
use crate::engine::{Engine, EngineConfig};
use crate::instrument::{Instrument, InstrumentSpec, SpecError};
use crate::order::*;
use crate::risk::{AccountRisk, Limits, Risk};
use crate::shard::Shard;
use crate::types::*;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The engine's whole state between two commands, in logical form: stable across changes of
/// the in-memory layout (ladder width, pool capacity, hash maps), so a newer build can restore
/// it. Encode it with `postcard`; [`EngineSnapshot::FORMAT`] changes whenever its shape does.
///
/// Deserializing reads format 1 too (written before risk existed: it has no `risk` field and
/// restores with risk off). The format decides whether `risk` follows, so the impl reads a
/// sequence (postcard's, bincode's struct encoding), not a map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EngineSnapshot {
    /// [`EngineSnapshot::FORMAT`] of the build that took it. First, so a reader can decode it
    /// alone before deciding to decode the rest.
    pub format: u32,
    /// Sequence number of the last event emitted.
    pub last_seq: u64,
    /// Id of the last trade (trade ids count from 1).
    pub last_trade_id: u64,
    /// Every instrument with its book, in id order.
    pub books: Vec<BookSnapshot>,
    pub slots: SlotsSnapshot,
    /// Accounts with live orders, ascending, each listing its orders newest first.
    pub accounts: Vec<OrderList>,
    /// Sessions with live orders, ascending, each listing its orders newest first.
    pub sessions: Vec<OrderList>,
    /// The GTD expiry entries, in the order they come due.
    pub expiries: Vec<Expiry>,
    /// Limits, kill switches, order-rate windows and net positions (format 2 on).
    pub risk: RiskSnapshot,
}

/// The risk state that is not derived from the live orders (open orders and open sizes are
/// recounted from them on restore).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskSnapshot {
    /// Whether risk is on (a risk command was accepted); when off, the rest is empty.
    pub active: bool,
    /// The default limits (`SetLimits` for account 0).
    pub default_limits: Option<Limits>,
    /// Accounts the engine keeps risk state for, ascending.
    pub accounts: Vec<AccountRiskSnapshot>,
    /// Non-zero net positions, ascending by (account, instrument).
    pub positions: Vec<PositionSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRiskSnapshot {
    pub account: AccountId,
    /// The account's own limits.
    pub limits: Option<Limits>,
    pub disabled: bool,
    /// Calendar second (`ts / 10⁹`) of the order-rate window and the places accepted in it.
    pub window_sec: u64,
    pub window_orders: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionSnapshot {
    pub account: AccountId,
    pub instrument: InstrumentId,
    /// Lots, long positive.
    pub net: i128,
}

impl<'de> Deserialize<'de> for EngineSnapshot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const FIELDS: &[&str] = &[
            "format",
            "last_seq",
            "last_trade_id",
            "books",
            "slots",
            "accounts",
            "sessions",
            "expiries",
            "risk",
        ];
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EngineSnapshot;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an engine snapshot of format 1 or 2")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<EngineSnapshot, A::Error> {
                use serde::de::Error;
                macro_rules! field {
                    ($index:expr) => {
                        seq.next_element()?
                            .ok_or_else(|| A::Error::invalid_length($index, &self))?
                    };
                }
                let format: u32 = field!(0);
                let mut snapshot = EngineSnapshot {
                    format,
                    last_seq: field!(1),
                    last_trade_id: field!(2),
                    books: field!(3),
                    slots: field!(4),
                    accounts: field!(5),
                    sessions: field!(6),
                    expiries: field!(7),
                    risk: RiskSnapshot::default(),
                };
                if format >= 2 {
                    snapshot.risk = field!(8);
                }
                Ok(snapshot)
            }
        }
        d.deserialize_struct("EngineSnapshot", FIELDS, Visitor)
    }
}

/// One instrument and its book.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookSnapshot {
    pub spec: InstrumentSpec,
    pub halted: bool,
    pub last_price: Option<Ticks>,
    /// Highest price first.
    pub bids: Vec<LevelSnapshot>,
    /// Lowest price first.
    pub asks: Vec<LevelSnapshot>,
    /// Next to trigger first: trigger ascending, then arrival.
    pub buy_stops: Vec<StopSnapshot>,
    /// Next to trigger first: trigger descending, then arrival.
    pub sell_stops: Vec<StopSnapshot>,
}

/// A price level and its queue, front first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelSnapshot {
    pub price: Ticks,
    pub orders: Vec<OrderSnapshot>,
}

/// An armed stop order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopSnapshot {
    /// Sequence number of the event that armed it (or re-armed it after an amend): among
    /// stops with the same trigger, the earlier triggers first.
    pub arrival: u64,
    pub order: OrderSnapshot,
}

/// A live order. Its instrument and side are those of the book and list it is in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSnapshot {
    pub id: OrderId,
    pub account: AccountId,
    pub session: SessionId,
    pub client_id: ClientOrderId,
    pub order_type: OrderType,
    /// Limit price; 0 for stop-market orders.
    pub price: Ticks,
    /// Trigger price of stop orders (kept once triggered); 0 for others.
    pub trigger: Ticks,
    pub remaining: Lots,
    /// Size shown in the book; 0 for an armed stop.
    pub visible: Lots,
    pub filled: Lots,
    /// Iceberg slice size; 0 shows the whole remainder.
    pub display: Lots,
    pub tif: TimeInForce,
    /// GTD expiry; 0 for other times in force.
    pub expiry: Timestamp,
    pub post_only: bool,
    pub stp: SelfTradePrevention,
}

/// The order pool, logically: which slots were ever used and which of them are free.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotsSnapshot {
    /// Slots ever used, `0..high_water`: each holds a live order or is listed in `freed`.
    /// The pool hands out higher slots, ascending, only once `freed` is used up.
    pub high_water: u32,
    /// Freed slots in the order the pool will reuse them (most recently freed first), each
    /// with the generation its last order had; the next order in it gets the next one.
    pub freed: Vec<FreedSlot>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreedSlot {
    pub slot: u32,
    pub generation: u32,
}

/// An account's or a session's live orders, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderList {
    /// The account or session.
    pub owner: u64,
    pub orders: Vec<OrderId>,
}

/// An entry of the GTD expiry heap.
///
/// The engine drops entries lazily: an order that ends before its expiry leaves its entry,
/// skipped when it comes due. Such stale entries are kept too, because dropping them is exact
/// only while order ids are never reused, and a slot's 32-bit generation wraps after 2³²−1
/// orders in it: a stale entry would then expire the order that got its id again, and the
/// restored engine must do the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Expiry {
    pub expiry: Timestamp,
    /// Sequence number of the order's `PlaceAccepted`: same-time expiries go in that order.
    pub accepted_seq: u64,
    pub order_id: OrderId,
}

/// Which kind of list a [`RestoreError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    Account,
    Session,
}

impl std::fmt::Display for ListKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ListKind::Account => "account",
            ListKind::Session => "session",
        })
    }
}

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

impl EngineSnapshot {
    /// Version of the snapshot's shape this build writes. It reads this one and 1 (before
    /// `risk`).
    pub const FORMAT: u32 = 2;
    /// Oldest format this build reads.
    pub const OLDEST_FORMAT: u32 = 1;

    /// Number of live orders (resting and armed stops) in the snapshot.
    pub fn live_order_count(&self) -> usize {
        self.books
            .iter()
            .map(|b| {
                let resting: usize = b.bids.iter().chain(&b.asks).map(|l| l.orders.len()).sum();
                resting + b.buy_stops.len() + b.sell_stops.len()
            })
            .sum()
    }
}

impl BookSnapshot {
    fn levels(&self, side: Side) -> &[LevelSnapshot] {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn stops(&self, side: Side) -> &[StopSnapshot] {
        match side {
            Side::Buy => &self.buy_stops,
            Side::Sell => &self.sell_stops,
        }
    }
}

impl OrderSnapshot {
    fn of(o: &Order) -> Self {
        OrderSnapshot {
            id: o.id,
            account: o.account,
            session: o.session,
            client_id: o.client_id,
            order_type: o.order_type,
            price: o.price,
            trigger: o.trigger,
            remaining: o.remaining,
            visible: o.visible,
            filled: o.filled,
            display: o.display,
            tif: o.tif,
            expiry: o.expiry,
            post_only: o.is(FLAG_POST_ONLY),
            stp: o.stp,
        }
    }

    /// The pool's order, unlinked, with `place` (resting or armed) among its flags.
    fn to_order(&self, instrument: InstrumentId, side: Side, place: u8) -> Order {
        let mut o = Order::vacant(self.id.generation());
        o.id = self.id;
        o.account = self.account;
        o.price = self.price;
        o.remaining = self.remaining;
        o.visible = self.visible;
        o.display = self.display;
        o.filled = self.filled;
        o.client_id = self.client_id;
        o.session = self.session;
        o.expiry = self.expiry;
        o.trigger = self.trigger;
        o.instrument = instrument;
        o.side = side;
        o.order_type = self.order_type;
        o.tif = self.tif;
        o.stp = self.stp;
        o.flags = FLAG_LIVE | place;
        if self.post_only {
            o.flags |= FLAG_POST_ONLY;
        }
        o
    }
}

impl Engine {
    /// The engine's whole state, to restore with [`Engine::restore`]. Call it between commands
    /// (it cannot be called during one).
    pub fn snapshot(&self) -> EngineSnapshot {
        let st = &self.st;
        debug_assert!(
            st.dirty.is_empty() && st.triggered.is_empty(),
            "per-command buffers are drained before apply returns"
        );
        let pool = &st.pool;
        // Every list is walked through a copy of the links: through the pool itself each step
        // waits for the last one's cache miss (on the ~170,000 orders of the engine workload,
        // a snapshot took 85 ms that way and 30 ms this way, on a loaded 2-core machine).
        let links = pool.links();
        let order = |slot: u32| OrderSnapshot::of(pool.get(slot));
        let mut queue = Vec::new();
        let mut levels = |book: &Book, side: Side| {
            book.side(side)
                .iter()
                .map(|(price, level)| {
                    queue.clear();
                    queue.extend(links.queue(level.head));
                    let orders = queue.iter().map(|&s| order(s)).collect();
                    LevelSnapshot { price, orders }
                })
                .collect()
        };
        // The book keeps the next stop to trigger at the end of its list.
        let stops = |entries: &[StopEntry]| {
            entries
                .iter()
                .rev()
                .map(|e| StopSnapshot {
                    arrival: e.arrival,
                    order: order(e.slot),
                })
                .collect()
        };
        let books = self
            .books
            .iter()
            .map(|book| BookSnapshot {
                spec: book.instrument.spec.clone(),
                halted: book.halted,
                last_price: book.last_price,
                bids: levels(book, Side::Buy),
                asks: levels(book, Side::Sell),
                buy_stops: stops(&book.buy_stops),
                sell_stops: stops(&book.sell_stops),
            })
            .collect();
        let lists = |heads: &FxHashMap<u64, u32>, kind: ListKind| {
            let mut lists: Vec<OrderList> = heads
                .iter()
                .map(|(&owner, &head)| {
                    let slots: Vec<u32> = match kind {
                        ListKind::Account => links.account(head).collect(),
                        ListKind::Session => links.session(head).collect(),
                    };
                    let orders = slots.iter().map(|&s| pool.get(s).id).collect();
                    OrderList { owner, orders }
                })
                .collect();
            lists.sort_unstable_by_key(|l| l.owner);
            lists
        };
        let mut expiries: Vec<Expiry> = st
            .expiries
            .iter()
            .map(|&Reverse((expiry, accepted_seq, order_id))| Expiry {
                expiry,
                accepted_seq,
                order_id,
            })
            .collect();
        expiries.sort_unstable();
        EngineSnapshot {
            format: EngineSnapshot::FORMAT,
            last_seq: st.seq,
            last_trade_id: st.trade_seq,
            books,
            slots: SlotsSnapshot {
                high_water: pool.high_water(),
                freed: links
                    .freed()
                    .map(|slot| FreedSlot {
                        slot,
                        generation: pool.get(slot).generation,
                    })
                    .collect(),
            },
            accounts: lists(&st.accounts, ListKind::Account),
            sessions: lists(&st.sessions, ListKind::Session),
            expiries,
            risk: risk_snapshot(&st.risk),
        }
    }

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

fn risk_snapshot(risk: &Risk) -> RiskSnapshot {
    let mut accounts: Vec<AccountRiskSnapshot> = risk
        .accounts
        .iter()
        .map(|(&account, a)| AccountRiskSnapshot {
            account,
            limits: a.limits.clone(),
            disabled: a.disabled,
            window_sec: a.window_sec,
            window_orders: a.window_orders,
        })
        .collect();
    accounts.sort_unstable_by_key(|a| a.account);
    let mut positions: Vec<PositionSnapshot> = risk
        .accounts
        .iter()
        .flat_map(|(&account, a)| {
            let exposures = a.exposures.iter().enumerate();
            exposures
                .filter(|(_, e)| e.net != 0)
                .map(move |(instrument, e)| PositionSnapshot {
                    account,
                    instrument: instrument as InstrumentId,
                    net: e.net,
                })
        })
        .collect();
    positions.sort_unstable_by_key(|p| (p.account, p.instrument));
    RiskSnapshot {
        active: risk.active,
        default_limits: risk.default_limits.clone(),
        accounts,
        positions,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::*;
    use crate::instrument::whole_units as spec;

    /// An engine with two instruments and a bit of everything: queues of several orders,
    /// icebergs, armed stops on both sides, sessions, client ids, GTD orders (one of which
    /// ended early, leaving a stale expiry entry), a trade and freed slots.
    fn busy_engine(config: EngineConfig) -> Engine {
        let mut engine = Engine::new(config);
        let mut ts = 0;
        let mut send = |engine: &mut Engine, kind| {
            ts += 1;
            engine.apply_collect(&Command::new(ts, ts, kind))
        };
        send(&mut engine, CommandKind::AddInstrument(Box::new(spec("A"))));
        send(&mut engine, CommandKind::AddInstrument(Box::new(spec("B"))));
        let place = |account, session, client_id, instrument, side, price, size| Place {
            session,
            client_id,
            ..Place::limit(account, instrument, side, price, size)
        };
        for (k, price) in [98, 99, 99, 99, 97].into_iter().enumerate() {
            let k = k as u64;
            let p = place(1 + k % 3, k % 2, k + 1, 0, Side::Buy, price, 5 + k);
            send(&mut engine, CommandKind::Place(p));
        }
        for price in [101, 101, 104] {
            let p = Place {
                display: 2,
                ..place(2, 1, 0, 0, Side::Sell, price, 9)
            };
            send(&mut engine, CommandKind::Place(p));
        }
        let gtd = Place {
            tif: TimeInForce::Gtd,
            expiry: 1_000,
            ..place(3, 0, 0, 1, Side::Sell, 100, 4)
        };
        send(&mut engine, CommandKind::Place(gtd));
        send(&mut engine, CommandKind::Place(gtd));
        // Takes the first GTD order out: its expiry entry stays behind.
        send(
            &mut engine,
            CommandKind::Place(Place::market(4, 1, Side::Buy, 4)),
        );
        // A trade at 101 on instrument 0 gives stops a last price to wait for.
        send(
            &mut engine,
            CommandKind::Place(Place::market(4, 0, Side::Buy, 1)),
        );
        for (side, trigger, price) in [(Side::Buy, 103, 104), (Side::Sell, 98, 97)] {
            let stop = Place {
                order_type: OrderType::StopLimit,
                trigger,
                ..place(4, 2, 0, 0, side, price, 3)
            };
            send(&mut engine, CommandKind::Place(stop));
            send(&mut engine, CommandKind::Place(stop));
        }
        let cancel = Cancel {
            account: 1,
            order: OrderRef::Client(4),
        };
        send(&mut engine, CommandKind::Cancel(cancel));
        send(&mut engine, CommandKind::Halt { instrument: 1 });
        engine
    }

    /// Every piece of internal state `apply` reads, as text, from the order pool's live slots to
    /// the indexes (hash maps in a fixed order).
    fn internals(engine: &Engine) -> String {
        let st = &engine.st;
        let mut out = String::new();
        for slot in st.pool.live_slots() {
            out += &format!("{slot}: {:?}\n", st.pool.get(slot));
        }
        let sorted = |m: &FxHashMap<u64, u32>| {
            let mut v: Vec<_> = m.iter().map(|(&k, &v)| (k, v)).collect();
            v.sort_unstable();
            v
        };
        out += &format!("accounts {:?}\n", sorted(&st.accounts));
        out += &format!("sessions {:?}\n", sorted(&st.sessions));
        let mut client_ids: Vec<_> = st
            .client_ids
            .slots()
            .map(|s| ((st.pool.get(s).account, st.pool.get(s).client_id), s))
            .collect();
        client_ids.sort_unstable();
        out += &format!("client ids {client_ids:?}\n");
        let mut expiries = st.expiries.clone().into_sorted_vec();
        expiries.reverse();
        out += &format!("expiries {expiries:?}\n");
        out += &format!(
            "seq {} trades {} live {} high water {} freed {:?}\n",
            st.seq,
            st.trade_seq,
            st.pool.live(),
            st.pool.high_water(),
            st.pool.links().freed().collect::<Vec<_>>()
        );
        for book in &engine.books {
            out += &format!(
                "{:?} halted {} last {:?} stops {:?} {:?}\n",
                book.instrument, book.halted, book.last_price, book.buy_stops, book.sell_stops
            );
            for side in [Side::Buy, Side::Sell] {
                out += &format!("{side:?} {:?}\n", book.depth(side).collect::<Vec<_>>());
            }
        }
        out
    }

    #[test]
    fn restore_rebuilds_every_link_index_and_level_total_as_the_engine_had_them() {
        let original = busy_engine(EngineConfig {
            order_capacity: 64,
            ..EngineConfig::default()
        });
        let snapshot = original.snapshot();
        assert!(!snapshot.slots.freed.is_empty() && snapshot.expiries.len() == 2);
        // Another layout: a ladder too narrow for most prices (they go to the far maps), a
        // prefaulted pool and tiny indexes.
        let layout = EngineConfig {
            order_capacity: 64,
            ladder_ticks: 2,
            index_capacity: 1,
            prefault: true,
            ..EngineConfig::default()
        };
        let restored = Engine::restore(layout, &snapshot).unwrap();
        assert_eq!(internals(&restored), internals(&original));
        assert_eq!(restored.snapshot(), snapshot);
    }

    #[test]
    fn a_restored_engine_has_indexes_sized_by_its_config_like_a_new_one() {
        let snapshot = busy_engine(EngineConfig::default()).snapshot();
        let config = EngineConfig {
            index_capacity: 4096,
            ..EngineConfig::default()
        };
        let st = Engine::restore(config, &snapshot).unwrap().st;
        assert!(st.accounts.capacity() >= 4096 && st.sessions.capacity() >= 4096);
        assert!(st.client_ids.capacity() >= 4096 && st.expiries.capacity() >= 4096);
    }

    #[test]
    fn the_per_command_buffers_are_empty_between_commands() {
        let engine = busy_engine(EngineConfig::default());
        assert!(engine.st.dirty.is_empty());
        assert!(engine.st.triggered.is_empty());
    }

    #[test]
    fn a_snapshot_lists_armed_stops_next_to_trigger_first() {
        let snapshot = busy_engine(EngineConfig::default()).snapshot();
        let book = &snapshot.books[0];
        let arrivals = |stops: &[StopSnapshot]| stops.iter().map(|s| s.arrival).collect::<Vec<_>>();
        let (buy, sell) = (arrivals(&book.buy_stops), arrivals(&book.sell_stops));
        assert_eq!(buy.len(), 2);
        assert!(
            buy[0] < buy[1] && sell[0] < sell[1],
            "same trigger: earlier first"
        );
    }
}
