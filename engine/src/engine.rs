//! The matching engine as a plain library: [`Engine::apply`] takes one command and appends its
//! events to a caller-owned buffer. No threads, no clock, no I/O, no allocation per order in
//! steady state; the threaded pipeline in [`crate::pipeline`] wraps exactly this.
//!
//! Validation runs before anything changes, in the order documented on [`Engine::apply`], so a
//! rejected command leaves the engine as it was.
//!
//! This file holds the engine's state, its queries and [`Engine::apply`], which dispatches each
//! command to where it is carried out: `orders` (place, cancel, amend, mass cancel, closed
//! sessions, GTD expiry), `admin` (instruments, halts, risk limits, the kill switch) and
//! `matching` (crossing, resting, stops, order ends and the indexes, on `State`).

use crate::book::Book;
use crate::client_index::ClientIndex;
use crate::command::*;
use crate::event::*;
use crate::instrument::Instrument;
use crate::order::*;
use crate::risk::{Limits, Position, Risk};
use crate::shard::Shard;
use crate::types::*;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

mod admin;
mod matching;
mod orders;

/// Sizes of the engine's pre-allocated structures. All are limits: none grows on the hot path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Live orders (resting, armed stops and the order being matched) the pool holds; a place
    /// beyond it is rejected with [`RejectReason::CapacityExhausted`]. Default 1,048,576
    /// (128 MiB of address space, touched only as used).
    pub order_capacity: usize,
    /// Instruments one engine (shard) holds. Default 1,024.
    pub max_instruments: usize,
    /// Width in ticks of each side's dense price ladder around the reference price; prices
    /// beyond it use an ordered map. Default 262,144.
    pub ladder_ticks: usize,
    /// Initial capacity of the account, session and client-order-id indexes. Default 65,536.
    /// Size it for the peak number of live orders with client ids: the client-id index that
    /// outgrows it moves its entries to a table twice the size a few at a time over the next
    /// inserts (no pause), but the new table's pages are first touched by commands.
    pub index_capacity: usize,
    /// Touch every page of the order pool and of the client-order-id index at start-up, so no
    /// command pays a page fault for a slot or an index entry it uses first. Costs
    /// `order_capacity × 128` bytes and about `index_capacity × 16` bytes of memory up front.
    /// Default off.
    pub prefault: bool,
    /// Which shard this engine is, of how many ([`crate::shard`]): decides the order ids and
    /// trade ids it gives, the instruments it matches and its part of account-wide limits.
    /// Default [`Shard::SOLE`]: one engine for every instrument.
    pub shard: Shard,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            order_capacity: 1 << 20,
            max_instruments: 1024,
            ladder_ticks: 1 << 18,
            index_capacity: 1 << 16,
            prefault: false,
            shard: Shard::SOLE,
        }
    }
}

/// A read-only view of a live order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderView {
    pub id: OrderId,
    pub account: AccountId,
    pub client_id: ClientOrderId,
    pub instrument: InstrumentId,
    pub side: Side,
    pub order_type: OrderType,
    pub price: Ticks,
    pub trigger: Ticks,
    pub remaining: Lots,
    pub visible: Lots,
    pub filled: Lots,
    /// `true` while an untriggered stop; `false` once resting in the book.
    pub armed_stop: bool,
}

impl OrderView {
    fn of(o: &Order) -> Self {
        OrderView {
            id: o.id,
            account: o.account,
            client_id: o.client_id,
            instrument: o.instrument,
            side: o.side,
            order_type: o.order_type,
            price: o.price,
            trigger: o.trigger,
            remaining: o.remaining,
            visible: o.visible,
            filled: o.filled,
            armed_stop: o.is(FLAG_STOP_ARMED),
        }
    }
}

pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) books: Vec<Book>,
    pub(crate) st: State,
}

/// Everything but the books, so matching code can borrow a book and the rest at once.
pub(crate) struct State {
    pub(crate) seq: u64,
    pub(crate) trade_seq: u64,
    /// From the config: trade ids interleave with the other shards'.
    pub(crate) shard: Shard,
    pub(crate) pool: OrderPool,
    /// Head slot of each account's list of live orders.
    pub(crate) accounts: FxHashMap<AccountId, u32>,
    /// Head slot of each session's list of live orders.
    pub(crate) sessions: FxHashMap<SessionId, u32>,
    /// `(account, client order id)` of each live order that has one → its slot.
    pub(crate) client_ids: ClientIndex,
    /// GTD orders by expiry, then by acceptance (the sequence number of their `PlaceAccepted`),
    /// so orders expiring at the same time leave in the order they arrived. An order that ends
    /// before its expiry leaves its entry behind, skipped when it comes up.
    pub(crate) expiries: BinaryHeap<Reverse<(Timestamp, u64, OrderId)>>,
    /// Levels the current command touched; flushed as `LevelChanged` at its end.
    pub(crate) dirty: Vec<(InstrumentId, Side, Ticks)>,
    /// Stops triggered and waiting to execute, in trigger order, with the last trade price
    /// that triggered each.
    pub(crate) triggered: VecDeque<(u32, Ticks)>,
    /// Limits, kill switch, positions and open exposure per account ([`crate::risk`]).
    pub(crate) risk: Risk,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new(EngineConfig::default())
    }
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Engine::with_pool(config, |c| OrderPool::new(c.order_capacity, c.prefault))
    }

    /// An engine with no instruments and nothing emitted yet around the order pool `pool`
    /// makes (a new one, or one a snapshot is being restored into). The pool is made between
    /// the other structures, in the order `new` always allocated them, so the large blocks
    /// keep their places relative to each other (`ticker-bench engine` latencies moved when
    /// the pool came first).
    pub(crate) fn with_pool(
        config: EngineConfig,
        pool: impl FnOnce(&EngineConfig) -> OrderPool,
    ) -> Self {
        let cap = config.index_capacity;
        let hasher = rustc_hash::FxBuildHasher;
        Engine {
            books: Vec::with_capacity(config.max_instruments),
            st: State {
                seq: 0,
                trade_seq: 0,
                shard: config.shard,
                pool: pool(&config).for_shard(config.shard),
                accounts: FxHashMap::with_capacity_and_hasher(cap, hasher),
                sessions: FxHashMap::with_capacity_and_hasher(cap, hasher),
                client_ids: ClientIndex::with_capacity(cap, config.prefault),
                expiries: BinaryHeap::with_capacity(cap),
                dirty: Vec::with_capacity(256),
                triggered: VecDeque::with_capacity(64),
                risk: Risk::new(cap, config.shard),
            },
            config,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Sequence number of the last event emitted (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.st.seq
    }

    pub fn books(&self) -> &[Book] {
        &self.books
    }

    pub fn book(&self, instrument: InstrumentId) -> Option<&Book> {
        self.books.get(instrument as usize)
    }

    pub fn instrument_by_symbol(&self, symbol: &str) -> Option<&Instrument> {
        self.books
            .iter()
            .map(|b| &b.instrument)
            .find(|i| i.spec.symbol == symbol)
    }

    /// Number of live orders (resting and armed stops).
    pub fn live_order_count(&self) -> usize {
        self.st.pool.live()
    }

    /// Every live order (resting and armed stops), in no meaningful order (by slot): for tools,
    /// and for an order source to take up its own orders again after a restore.
    pub fn live_orders(&self) -> impl Iterator<Item = OrderView> + '_ {
        let pool = &self.st.pool;
        pool.live_slots().map(|slot| OrderView::of(pool.get(slot)))
    }

    /// Sessions that have live orders, ascending. After a restart their connections are gone,
    /// so the server closes each (`SessionClosed`) to cancel what they left.
    pub fn sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        let mut sessions: Vec<SessionId> = self.st.sessions.keys().copied().collect();
        sessions.sort_unstable();
        sessions.into_iter()
    }

    /// Net position of `account` on `instrument` in lots, from fills since risk was switched on
    /// (the first `SetLimits`, `DisableAccount` or `EnableAccount`); 0 before.
    pub fn net_position(&self, account: AccountId, instrument: InstrumentId) -> i128 {
        self.st.risk.net(account, instrument)
    }

    /// Position of `account` on `instrument`: net from fills and open buy and sell size of
    /// its live orders, as the limits see it (all zero while risk is off).
    pub fn position(&self, account: AccountId, instrument: InstrumentId) -> Position {
        self.st.risk.position(account, instrument)
    }

    /// Live orders of `account` as `max_open_orders` counts them (0 while risk is off).
    pub fn open_orders(&self, account: AccountId) -> u32 {
        self.st.risk.open_orders(account)
    }

    /// Whether the account's kill switch is on.
    pub fn is_account_disabled(&self, account: AccountId) -> bool {
        self.st.risk.is_disabled(account)
    }

    /// Whether risk tracking is on (from the first accepted `SetLimits`, `DisableAccount` or
    /// `EnableAccount`): positions count only from then.
    pub fn risk_active(&self) -> bool {
        self.st.risk.active
    }

    /// The default set (what `SetLimits` for account 0 set).
    pub fn default_limits(&self) -> Option<&Limits> {
        self.st.risk.default_limits.as_ref()
    }

    /// Every account with limits of its own or a kill switch on: `(account, its own limits,
    /// disabled)`, in no particular order.
    pub fn risk_accounts(&self) -> impl Iterator<Item = (AccountId, Option<&Limits>, bool)> {
        self.st
            .risk
            .accounts
            .iter()
            .filter(|(_, a)| a.limits.is_some() || a.disabled)
            .map(|(id, a)| (*id, a.limits.as_ref(), a.disabled))
    }

    /// The limits that apply to `account`: its own, else the default set (account 0's).
    pub fn limits(&self, account: AccountId) -> Option<&Limits> {
        let risk = &self.st.risk;
        risk.accounts
            .get(&account)
            .and_then(|a| a.limits.as_ref())
            .or(risk.default_limits.as_ref())
    }

    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        let slot = self.st.pool.find(id)?;
        Some(OrderView::of(self.st.pool.get(slot)))
    }

    /// Resting orders of one price level in queue order.
    pub fn level_orders(&self, instrument: InstrumentId, side: Side, price: Ticks) -> Vec<OrderId> {
        let mut ids = Vec::new();
        let Some(book) = self.books.get(instrument as usize) else {
            return ids;
        };
        if let Some(level) = book.side(side).level(price) {
            let mut s = level.head;
            while s != NIL {
                let o = self.st.pool.get(s);
                ids.push(o.id);
                s = o.next;
            }
        }
        ids
    }

    /// Applies one command and appends its events to `out` (which is not cleared).
    ///
    /// First, GTD orders whose expiry is at or before `cmd.ts` expire (earliest expiry first,
    /// orders with the same expiry in order of acceptance). A command past its deadline is then
    /// rejected with [`RejectReason::DeadlineExceeded`]. Otherwise the command is
    /// validated; a place is checked in this order, the first failure being the reject reason:
    /// account, instrument, halted, size (invalid, too small, too large), limit price (invalid,
    /// band), trigger (invalid, band), time in force and post-only fit, expiry, display size,
    /// client order id, stop already triggered, post-only cross, FOK fillability, then the risk
    /// limits ([`crate::risk`]): account disabled, order size, notional, long, short, open
    /// orders, order rate.
    /// Applies a run of commands in order, exactly as [`Engine::apply`] one by one would,
    /// overlapping each command's first memory misses with the commands before it: while
    /// command `i` is applied, command `i + 8` itself is on its way (a long slice is not in
    /// cache), the index entry command `i + 2` looks up, and the order command `i + 1` names
    /// (a cancel or amend by client order id or by id).
    pub fn apply_all(&mut self, cmds: &[Command], out: &mut Vec<Event>) {
        for (i, cmd) in cmds.iter().enumerate() {
            if let Some(ahead) = cmds.get(i + COMMAND_AHEAD) {
                let at = (ahead as *const Command).cast::<u8>();
                crate::prefetch::prefetch_bytes(at, std::mem::size_of::<Command>());
            }
            if let Some(far) = cmds.get(i + 2) {
                self.prefetch_far(far);
            }
            if let Some(near) = cmds.get(i + 1) {
                self.prefetch_near(near);
            }
            self.apply(cmd, out);
        }
    }

    /// Lookahead, first stage: the client-order-id index entry `cmd` will read.
    #[inline]
    pub fn prefetch_far(&self, cmd: &Command) {
        match &cmd.kind {
            CommandKind::Place(p) if p.client_id != 0 => {
                self.st.client_ids.prefetch_entry(p.account, p.client_id)
            }
            CommandKind::Cancel(Cancel {
                account,
                order: OrderRef::Client(cid),
            })
            | CommandKind::Amend(Amend {
                account,
                order: OrderRef::Client(cid),
                ..
            }) => self.st.client_ids.prefetch_entry(*account, *cid),
            _ => {}
        }
    }

    /// Lookahead, second stage: the order `cmd` names.
    #[inline]
    pub fn prefetch_near(&self, cmd: &Command) {
        let (account, order) = match &cmd.kind {
            CommandKind::Cancel(c) => (c.account, c.order),
            CommandKind::Amend(a) => (a.account, a.order),
            _ => return,
        };
        match order {
            OrderRef::Client(cid) => self
                .st
                .client_ids
                .prefetch_order(account, cid, &self.st.pool),
            OrderRef::Id(id) => self.st.pool.prefetch_order(id.slot()),
        }
    }

    pub fn apply(&mut self, cmd: &Command, out: &mut Vec<Event>) {
        let ts = cmd.ts;
        let corr = cmd.corr;
        self.expire(ts, out);
        if cmd.deadline != 0 && ts > cmd.deadline && !cmd.kind.tag().is_time_only() {
            let kind = rejected(
                corr,
                cmd.kind.tag(),
                cmd.kind.account(),
                match &cmd.kind {
                    CommandKind::Place(p) => p.client_id,
                    _ => 0,
                },
                OrderId::NONE,
                RejectReason::DeadlineExceeded,
            );
            self.st.emit(out, ts, kind);
            // Expirations above may have changed levels.
            return self.st.flush_levels(&self.books, ts, out);
        }
        match &cmd.kind {
            CommandKind::Place(p) => self.place(corr, ts, p, out),
            CommandKind::Cancel(c) => self.cancel(corr, ts, c, out),
            CommandKind::Amend(a) => self.amend(corr, ts, a, out),
            CommandKind::MassCancel(m) => self.mass_cancel(corr, ts, m, out),
            CommandKind::SessionClosed { session } => self.session_closed(corr, ts, *session, out),
            CommandKind::AddInstrument(spec) => self.add_instrument(corr, ts, spec, out),
            CommandKind::Halt { instrument } => self.set_halted(corr, ts, *instrument, true, out),
            CommandKind::Resume { instrument } => {
                self.set_halted(corr, ts, *instrument, false, out)
            }
            CommandKind::SetLimits { account, limits } => {
                self.set_limits(corr, ts, *account, limits.as_deref(), out)
            }
            CommandKind::DisableAccount { account } => {
                self.set_disabled(corr, ts, *account, true, out)
            }
            CommandKind::EnableAccount { account } => {
                self.set_disabled(corr, ts, *account, false, out)
            }
            CommandKind::Heartbeat | CommandKind::Snapshot => {}
        }
        self.st.flush_levels(&self.books, ts, out);
    }

    /// Convenience for embedding and tests: applies one command and returns its events.
    pub fn apply_collect(&mut self, cmd: &Command) -> Vec<Event> {
        let mut out = Vec::new();
        self.apply(cmd, &mut out);
        out
    }
}

/// How far ahead in a run [`Engine::apply_all`] starts loading the commands themselves.
const COMMAND_AHEAD: usize = 8;

fn rejected(
    corr: Correlation,
    command: CommandTag,
    account: AccountId,
    client_id: ClientOrderId,
    order_id: OrderId,
    reason: RejectReason,
) -> EventKind {
    EventKind::Rejected {
        corr,
        command,
        account,
        client_id,
        order_id,
        reason,
    }
}

fn accepted(
    corr: Correlation,
    command: CommandTag,
    account: AccountId,
    order_id: OrderId,
    instrument: Option<InstrumentId>,
) -> EventKind {
    EventKind::Accepted {
        corr,
        command,
        account,
        order_id,
        instrument,
    }
}

/// The worst price an order may trade at: its limit, or for market orders the band's edge.
pub(crate) fn protection_limit(
    ins: &Instrument,
    side: Side,
    order_type: OrderType,
    price: Ticks,
) -> Ticks {
    if order_type.has_limit_price() {
        price
    } else {
        match side {
            Side::Buy => ins.band_high,
            Side::Sell => ins.band_low,
        }
    }
}
