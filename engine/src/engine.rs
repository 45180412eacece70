//! The matching engine as a plain library: [`Engine::apply`] takes one command and appends its
//! events to a caller-owned buffer. No threads, no clock, no I/O, no allocation per order in
//! steady state; the threaded pipeline in [`crate::pipeline`] wraps exactly this.
//!
//! Validation runs before anything changes, in the order documented on [`Engine::apply`], so a
//! rejected command leaves the engine as it was.

use crate::book::{Book, StopEntry};
use crate::client_index::ClientIndex;
use crate::command::*;
use crate::event::*;
use crate::instrument::Instrument;
use crate::order::*;
use crate::risk::{Ask, Limits, Position, Risk};
use crate::types::*;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            order_capacity: 1 << 20,
            max_instruments: 1024,
            ladder_ticks: 1 << 18,
            index_capacity: 1 << 16,
            prefault: false,
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
                pool: pool(&config),
                accounts: FxHashMap::with_capacity_and_hasher(cap, hasher),
                sessions: FxHashMap::with_capacity_and_hasher(cap, hasher),
                client_ids: ClientIndex::with_capacity(cap, config.prefault),
                expiries: BinaryHeap::with_capacity(cap),
                dirty: Vec::with_capacity(256),
                triggered: VecDeque::with_capacity(64),
                risk: Risk::new(cap),
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

    fn expire(&mut self, ts: Timestamp, out: &mut Vec<Event>) {
        while let Some(&Reverse((expiry, _, id))) = self.st.expiries.peek() {
            if expiry > ts {
                break;
            }
            self.st.expiries.pop();
            if let Some(slot) = self.st.pool.find(id) {
                let book = &mut self.books[self.st.pool.get(slot).instrument as usize];
                self.st.finish(book, slot, DoneReason::Expired, ts, out);
            }
        }
    }

    fn validate_place(&self, p: &Place, ts: Timestamp) -> Result<(), RejectReason> {
        use RejectReason::*;
        if p.account == 0 {
            return Err(InvalidAccount);
        }
        let book = self
            .books
            .get(p.instrument as usize)
            .ok_or(UnknownInstrument)?;
        let ins = &book.instrument;
        if book.halted {
            return Err(Halted);
        }
        if p.size == 0 {
            return Err(InvalidSize);
        }
        if p.size < ins.min_lots {
            return Err(TooSmall);
        }
        if p.size > ins.max_lots {
            return Err(TooLarge);
        }
        if p.order_type.has_limit_price() {
            if p.price <= 0 {
                return Err(InvalidPrice);
            }
            if !ins.in_band(p.price) {
                return Err(OutsideBand);
            }
        }
        if p.order_type.is_stop() {
            if p.trigger <= 0 {
                return Err(InvalidPrice);
            }
            if !ins.in_band(p.trigger) {
                return Err(OutsideBand);
            }
        }
        let immediate = matches!(p.tif, TimeInForce::Ioc | TimeInForce::Fok);
        let market = matches!(p.order_type, OrderType::Market | OrderType::StopMarket);
        if (market && !immediate)
            || (p.post_only && (immediate || p.order_type != OrderType::Limit))
        {
            return Err(InvalidTimeInForce);
        }
        if p.tif == TimeInForce::Gtd && p.expiry <= ts {
            return Err(ExpiryInPast);
        }
        if p.display > 0 && (immediate || market || p.display > p.size || p.display < ins.min_lots)
        {
            return Err(InvalidDisplaySize);
        }
        if p.client_id != 0
            && self
                .st
                .client_ids
                .get(p.account, p.client_id, &self.st.pool)
                .is_some()
        {
            return Err(DuplicateClientOrderId);
        }
        if p.order_type.is_stop() {
            if let Some(last) = book.last_price {
                let reached = match p.side {
                    Side::Buy => p.trigger <= last,
                    Side::Sell => p.trigger >= last,
                };
                if reached {
                    return Err(StopWouldTriggerImmediately);
                }
            }
        }
        if p.post_only && book.side(p.side.opposite()).best_is_within(p.price) {
            return Err(PostOnlyWouldCross);
        }
        if p.tif == TimeInForce::Fok && !p.order_type.is_stop() {
            let limit = protection_limit(ins, p.side, p.order_type, p.price);
            if !self
                .st
                .fok_fillable(book, p.account, p.side, p.stp, p.size, limit)
            {
                return Err(FokNotFillable);
            }
        }
        Ok(())
    }

    fn place(&mut self, corr: Correlation, ts: Timestamp, p: &Place, out: &mut Vec<Event>) {
        let reject = |reason| {
            rejected(
                corr,
                CommandTag::Place,
                p.account,
                p.client_id,
                OrderId::NONE,
                reason,
            )
        };
        if let Err(reason) = self.validate_place(p, ts) {
            return self.st.emit(out, ts, reject(reason));
        }
        if self.st.risk.active {
            let ins = &self.books[p.instrument as usize].instrument;
            let ask = Ask {
                account: p.account,
                instrument: p.instrument,
                side: p.side,
                size: p.size,
                worst_price: protection_limit(ins, p.side, p.order_type, p.price),
                added: p.size,
            };
            // Checked and counted in one lookup when the order will get a slot; checked only
            // when it will not (the limits' reason comes before `capacity_exhausted`).
            let room = self.st.pool.has_room();
            if let Err(reason) = self.st.risk.admit_place(&ask, ts, room) {
                return self.st.emit(out, ts, reject(reason));
            }
        }
        let Some(slot) = self.st.pool.alloc() else {
            return self
                .st
                .emit(out, ts, reject(RejectReason::CapacityExhausted));
        };
        let st = &mut self.st;
        let o = st.pool.get_mut(slot);
        o.account = p.account;
        o.session = p.session;
        o.client_id = p.client_id;
        o.instrument = p.instrument;
        o.side = p.side;
        o.order_type = p.order_type;
        o.price = if p.order_type.has_limit_price() {
            p.price
        } else {
            0
        };
        o.trigger = if p.order_type.is_stop() { p.trigger } else { 0 };
        o.remaining = p.size;
        o.tif = p.tif;
        o.expiry = if p.tif == TimeInForce::Gtd {
            p.expiry
        } else {
            0
        };
        o.display = p.display;
        o.stp = p.stp;
        if p.post_only {
            o.flags |= FLAG_POST_ONLY;
        }
        let order_id = o.id;
        st.index(slot);
        let info = OrderInfo {
            order_id,
            account: p.account,
            client_id: p.client_id,
            session: p.session,
            instrument: p.instrument,
            side: p.side,
            order_type: p.order_type,
            price: st.pool.get(slot).price,
            trigger: st.pool.get(slot).trigger,
            size: p.size,
            tif: p.tif,
            expiry: st.pool.get(slot).expiry,
            post_only: p.post_only,
            display: p.display,
            stp: p.stp,
        };
        st.emit(out, ts, EventKind::PlaceAccepted { corr, order: info });
        if p.tif == TimeInForce::Gtd {
            st.expiries.push(Reverse((p.expiry, st.seq, order_id)));
        }
        let book = &mut self.books[p.instrument as usize];
        if p.order_type.is_stop() {
            st.arm(book, slot, ts, out);
        } else {
            st.execute(book, slot, ts, out);
            st.run_triggered_stops(book, ts, out);
        }
    }

    /// The slot of the order a command names, checking that `account` owns it.
    fn resolve(&self, account: AccountId, order: OrderRef) -> Result<u32, RejectReason> {
        let slot = match order {
            OrderRef::Id(id) => self.st.pool.find(id),
            OrderRef::Client(cid) => self.st.client_ids.get(account, cid, &self.st.pool),
        }
        .ok_or(RejectReason::UnknownOrder)?;
        if self.st.pool.get(slot).account != account {
            return Err(RejectReason::NotOwner);
        }
        Ok(slot)
    }

    fn order_ref_ids(order: OrderRef) -> (ClientOrderId, OrderId) {
        match order {
            OrderRef::Id(id) => (0, id),
            OrderRef::Client(cid) => (cid, OrderId::NONE),
        }
    }

    fn cancel(&mut self, corr: Correlation, ts: Timestamp, c: &Cancel, out: &mut Vec<Event>) {
        let slot = match self.resolve(c.account, c.order) {
            Ok(slot) => slot,
            Err(reason) => {
                let (cid, oid) = Self::order_ref_ids(c.order);
                return self.st.emit(
                    out,
                    ts,
                    rejected(corr, CommandTag::Cancel, c.account, cid, oid, reason),
                );
            }
        };
        let (id, instrument) = {
            let o = self.st.pool.get(slot);
            (o.id, o.instrument)
        };
        self.st.emit(
            out,
            ts,
            accepted(corr, CommandTag::Cancel, c.account, id, Some(instrument)),
        );
        let book = &mut self.books[instrument as usize];
        self.st.finish(book, slot, DoneReason::Cancelled, ts, out);
    }

    fn validate_amend(&self, slot: u32, a: &Amend) -> Result<(), RejectReason> {
        use RejectReason::*;
        let o = self.st.pool.get(slot);
        let book = &self.books[o.instrument as usize];
        let ins = &book.instrument;
        let armed = o.is(FLAG_STOP_ARMED);
        if book.halted {
            return Err(Halted);
        }
        if (a.price.is_some() && !o.order_type.has_limit_price()) || (a.trigger.is_some() && !armed)
        {
            return Err(InvalidAmend);
        }
        let size = a.size.unwrap_or(o.remaining);
        let price = a.price.unwrap_or(o.price);
        let trigger = a.trigger.unwrap_or(o.trigger);
        if size == 0 {
            return Err(InvalidSize);
        }
        // A new size is held to the instrument's minimum like a new order's; a remainder
        // below it that fills left behind stands as long as the amend does not set the size.
        if a.size.is_some() && size < ins.min_lots {
            return Err(TooSmall);
        }
        if size > ins.max_lots {
            return Err(TooLarge);
        }
        if a.price.is_some() {
            if price <= 0 {
                return Err(InvalidPrice);
            }
            if !ins.in_band(price) {
                return Err(OutsideBand);
            }
        }
        if a.trigger.is_some() {
            if trigger <= 0 {
                return Err(InvalidPrice);
            }
            if !ins.in_band(trigger) {
                return Err(OutsideBand);
            }
        }
        if size == o.remaining && price == o.price && trigger == o.trigger {
            return Err(InvalidAmend);
        }
        if armed && trigger != o.trigger {
            if let Some(last) = book.last_price {
                let reached = match o.side {
                    Side::Buy => trigger <= last,
                    Side::Sell => trigger >= last,
                };
                if reached {
                    return Err(StopWouldTriggerImmediately);
                }
            }
        }
        if !armed
            && o.is(FLAG_POST_ONLY)
            && price != o.price
            && book.side(o.side.opposite()).best_is_within(price)
        {
            return Err(PostOnlyWouldCross);
        }
        if self.st.risk.active {
            let ask = Ask {
                account: o.account,
                instrument: o.instrument,
                side: o.side,
                size,
                worst_price: protection_limit(ins, o.side, o.order_type, price),
                added: size.saturating_sub(o.remaining),
            };
            self.st.risk.check_amend(&ask, price != o.price)?;
        }
        Ok(())
    }

    fn amend(&mut self, corr: Correlation, ts: Timestamp, a: &Amend, out: &mut Vec<Event>) {
        let checked = self
            .resolve(a.account, a.order)
            .and_then(|slot| self.validate_amend(slot, a).map(|()| slot));
        let slot = match checked {
            Ok(slot) => slot,
            Err(reason) => {
                let (cid, oid) = Self::order_ref_ids(a.order);
                return self.st.emit(
                    out,
                    ts,
                    rejected(corr, CommandTag::Amend, a.account, cid, oid, reason),
                );
            }
        };
        let (id, instrument) = {
            let o = self.st.pool.get(slot);
            (o.id, o.instrument)
        };
        self.st.emit(
            out,
            ts,
            accepted(corr, CommandTag::Amend, a.account, id, Some(instrument)),
        );
        let book = &mut self.books[instrument as usize];
        self.st.amend(book, slot, a, ts, out);
    }

    /// Cancels the account's live orders (resting and armed) that match the filters, newest
    /// first: the account's list is kept newest first.
    fn mass_cancel(
        &mut self,
        corr: Correlation,
        ts: Timestamp,
        m: &MassCancel,
        out: &mut Vec<Event>,
    ) {
        let invalid = if m.account == 0 {
            Some(RejectReason::InvalidAccount)
        } else if m.instrument.is_some_and(|i| i as usize >= self.books.len()) {
            Some(RejectReason::UnknownInstrument)
        } else {
            None
        };
        if let Some(reason) = invalid {
            return self.st.emit(
                out,
                ts,
                rejected(
                    corr,
                    CommandTag::MassCancel,
                    m.account,
                    0,
                    OrderId::NONE,
                    reason,
                ),
            );
        }
        self.st.emit(
            out,
            ts,
            accepted(
                corr,
                CommandTag::MassCancel,
                m.account,
                OrderId::NONE,
                m.instrument,
            ),
        );
        let mut s = self.st.accounts.get(&m.account).copied().unwrap_or(NIL);
        while s != NIL {
            let o = self.st.pool.get(s);
            let next = o.acct_next;
            if m.instrument.is_none_or(|i| i == o.instrument)
                && m.side.is_none_or(|sd| sd == o.side)
            {
                let book = &mut self.books[o.instrument as usize];
                self.st.finish(book, s, DoneReason::MassCancelled, ts, out);
            }
            s = next;
        }
    }

    /// Cancels every live order tagged with `session`, newest first like a mass cancel.
    fn session_closed(
        &mut self,
        corr: Correlation,
        ts: Timestamp,
        session: SessionId,
        out: &mut Vec<Event>,
    ) {
        self.st.emit(
            out,
            ts,
            accepted(corr, CommandTag::SessionClosed, 0, OrderId::NONE, None),
        );
        if session == 0 {
            return;
        }
        let mut s = self.st.sessions.get(&session).copied().unwrap_or(NIL);
        while s != NIL {
            let o = self.st.pool.get(s);
            let next = o.sess_next;
            let book = &mut self.books[o.instrument as usize];
            self.st.finish(book, s, DoneReason::SessionClosed, ts, out);
            s = next;
        }
    }

    fn add_instrument(
        &mut self,
        corr: Correlation,
        ts: Timestamp,
        spec: &crate::instrument::InstrumentSpec,
        out: &mut Vec<Event>,
    ) {
        let id = self.books.len() as InstrumentId;
        let result = if self.books.len() >= self.config.max_instruments {
            Err(RejectReason::TooManyInstruments)
        } else if self.instrument_by_symbol(&spec.symbol).is_some() {
            Err(RejectReason::InstrumentExists)
        } else {
            Instrument::new(id, spec.clone()).map_err(|_| RejectReason::InvalidInstrumentSpec)
        };
        match result {
            Err(reason) => self.st.emit(
                out,
                ts,
                rejected(corr, CommandTag::AddInstrument, 0, 0, OrderId::NONE, reason),
            ),
            Ok(instrument) => {
                self.books
                    .push(Book::new(instrument, self.config.ladder_ticks));
                self.st.emit(
                    out,
                    ts,
                    accepted(corr, CommandTag::AddInstrument, 0, OrderId::NONE, Some(id)),
                );
                self.st.emit(
                    out,
                    ts,
                    EventKind::InstrumentAdded {
                        instrument: id,
                        spec: Arc::new(spec.clone()),
                    },
                );
            }
        }
    }

    /// Switches risk tracking on at the first risk command: from here on every live order
    /// counts toward its account's open orders and open size (net positions start at zero).
    fn activate_risk(&mut self) {
        let st = &mut self.st;
        if st.risk.active {
            return;
        }
        st.risk.active = true;
        // Through the accounts' lists: the live orders only, not every slot of the pool.
        for &head in st.accounts.values() {
            let mut slot = head;
            while slot != NIL {
                let o = st.pool.get(slot);
                st.risk
                    .opened(o.account, o.instrument, o.side, o.remaining, None);
                slot = o.acct_next;
            }
        }
    }

    fn set_limits(
        &mut self,
        corr: Correlation,
        ts: Timestamp,
        account: AccountId,
        limits: Option<&Limits>,
        out: &mut Vec<Event>,
    ) {
        let tag = CommandTag::SetLimits;
        if let Some(Err(reason)) = limits.map(|l| l.validate(self.books.len())) {
            return self
                .st
                .emit(out, ts, rejected(corr, tag, 0, 0, OrderId::NONE, reason));
        }
        self.activate_risk();
        let risk = &mut self.st.risk;
        let limits = limits.cloned();
        if account == 0 {
            risk.default_limits = limits;
        } else {
            risk.accounts.entry(account).or_default().limits = limits;
        }
        self.st
            .emit(out, ts, accepted(corr, tag, 0, OrderId::NONE, None));
    }

    /// The kill switch. Disabling cancels every live order of the account, newest first (its
    /// list's order), each with an `OrderDone` of reason `AccountDisabled`.
    fn set_disabled(
        &mut self,
        corr: Correlation,
        ts: Timestamp,
        account: AccountId,
        disabled: bool,
        out: &mut Vec<Event>,
    ) {
        let tag = if disabled {
            CommandTag::DisableAccount
        } else {
            CommandTag::EnableAccount
        };
        if account == 0 {
            let reason = RejectReason::InvalidAccount;
            return self
                .st
                .emit(out, ts, rejected(corr, tag, 0, 0, OrderId::NONE, reason));
        }
        self.activate_risk();
        self.st.risk.accounts.entry(account).or_default().disabled = disabled;
        self.st
            .emit(out, ts, accepted(corr, tag, 0, OrderId::NONE, None));
        self.st
            .emit(out, ts, EventKind::AccountStatus { account, disabled });
        if !disabled {
            return;
        }
        let mut s = self.st.accounts.get(&account).copied().unwrap_or(NIL);
        while s != NIL {
            let o = self.st.pool.get(s);
            let next = o.acct_next;
            let book = &mut self.books[o.instrument as usize];
            self.st
                .finish(book, s, DoneReason::AccountDisabled, ts, out);
            s = next;
        }
    }

    fn set_halted(
        &mut self,
        corr: Correlation,
        ts: Timestamp,
        instrument: InstrumentId,
        halted: bool,
        out: &mut Vec<Event>,
    ) {
        let tag = if halted {
            CommandTag::Halt
        } else {
            CommandTag::Resume
        };
        let Some(book) = self.books.get_mut(instrument as usize) else {
            return self.st.emit(
                out,
                ts,
                rejected(
                    corr,
                    tag,
                    0,
                    0,
                    OrderId::NONE,
                    RejectReason::UnknownInstrument,
                ),
            );
        };
        book.halted = halted;
        self.st.emit(
            out,
            ts,
            accepted(corr, tag, 0, OrderId::NONE, Some(instrument)),
        );
        self.st
            .emit(out, ts, EventKind::TradingStatus { instrument, halted });
    }
}

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

impl State {
    #[inline]
    pub(crate) fn emit(&mut self, out: &mut Vec<Event>, ts: Timestamp, kind: EventKind) {
        self.seq += 1;
        out.push(Event {
            seq: self.seq,
            ts,
            kind,
        });
    }

    pub(crate) fn mark_dirty(&mut self, instrument: InstrumentId, side: Side, price: Ticks) {
        let entry = (instrument, side, price);
        if self.dirty.last() != Some(&entry) {
            self.dirty.push(entry);
        }
    }

    fn flush_levels(&mut self, books: &[Book], ts: Timestamp, out: &mut Vec<Event>) {
        match self.dirty[..] {
            [] => return,
            // Most commands touch one level: nothing to sort or merge.
            [(instrument, side, price)] => {
                self.dirty.clear();
                return self.emit_level(books, instrument, side, price, ts, out);
            }
            _ => {}
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable_by_key(|&(i, s, p)| (i, s as u8, p));
        dirty.dedup();
        for &(instrument, side, price) in &dirty {
            self.emit_level(books, instrument, side, price, ts, out);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// One `LevelChanged` with the level's size and order count now.
    #[inline]
    fn emit_level(
        &mut self,
        books: &[Book],
        instrument: InstrumentId,
        side: Side,
        price: Ticks,
        ts: Timestamp,
        out: &mut Vec<Event>,
    ) {
        let level = books[instrument as usize].side(side).level(price);
        let (size, orders) = level.map_or((0, 0), |l| (l.visible, l.orders));
        self.emit(
            out,
            ts,
            EventKind::LevelChanged {
                instrument,
                side,
                price,
                size,
                orders,
            },
        );
    }

    /// Links a new order into its account's and session's lists and the client id index.
    fn index(&mut self, slot: u32) {
        let (account, session, client_id) = {
            let o = self.pool.get(slot);
            (o.account, o.session, o.client_id)
        };
        let head = self.accounts.insert(account, slot).unwrap_or(NIL);
        self.pool.get_mut(slot).acct_next = head;
        if head != NIL {
            self.pool.get_mut(head).acct_prev = slot;
        }
        if session != 0 {
            let head = self.sessions.insert(session, slot).unwrap_or(NIL);
            self.pool.get_mut(slot).sess_next = head;
            if head != NIL {
                self.pool.get_mut(head).sess_prev = slot;
            }
        }
        if client_id != 0 {
            self.client_ids.insert(slot, &self.pool);
        }
    }

    fn deindex(&mut self, slot: u32) {
        let o = self.pool.get(slot);
        let (account, session, client_id) = (o.account, o.session, o.client_id);
        let (ap, an, sp, sn) = (o.acct_prev, o.acct_next, o.sess_prev, o.sess_next);
        if ap != NIL {
            self.pool.get_mut(ap).acct_next = an;
        } else if an == NIL {
            self.accounts.remove(&account);
        } else {
            self.accounts.insert(account, an);
        }
        if an != NIL {
            self.pool.get_mut(an).acct_prev = ap;
        }
        if session != 0 {
            if sp != NIL {
                self.pool.get_mut(sp).sess_next = sn;
            } else if sn == NIL {
                self.sessions.remove(&session);
            } else {
                self.sessions.insert(session, sn);
            }
            if sn != NIL {
                self.pool.get_mut(sn).sess_prev = sp;
            }
        }
        if client_id != 0 {
            self.client_ids.remove(account, client_id, &self.pool);
        }
    }

    /// Ends an order's life: out of the book (or the stop list), out of the indexes, one
    /// `OrderDone`, slot freed.
    pub(crate) fn finish(
        &mut self,
        book: &mut Book,
        slot: u32,
        reason: DoneReason,
        ts: Timestamp,
        out: &mut Vec<Event>,
    ) {
        let o = self.pool.get(slot);
        let (side, price, instrument) = (o.side, o.price, o.instrument);
        // The neighbours in the account's list are written last (`deindex`), after the event:
        // start loading their lines now so the misses overlap those of the queue neighbours.
        let (ap, an) = (o.acct_prev, o.acct_next);
        self.pool.prefetch(ap, true);
        self.pool.prefetch(an, true);
        if o.is(FLAG_RESTING) {
            book.side_mut(side).unlink(&mut self.pool, slot);
            self.mark_dirty(instrument, side, price);
        } else if o.is(FLAG_STOP_ARMED) {
            book.disarm_stop(side, slot);
        }
        let o = self.pool.get(slot);
        // A filled order was closed by the fill that filled it (`Risk::filled`).
        if self.risk.active && reason != DoneReason::Filled {
            self.risk.closed(o.account, instrument, side, o.remaining);
        }
        let kind = EventKind::OrderDone {
            order_id: o.id,
            account: o.account,
            instrument,
            side,
            price,
            filled: o.filled,
            cancelled: if reason == DoneReason::Filled {
                0
            } else {
                o.remaining
            },
            reason,
        };
        self.emit(out, ts, kind);
        self.deindex(slot);
        self.pool.free(slot);
    }

    fn arm(&mut self, book: &mut Book, slot: u32, ts: Timestamp, out: &mut Vec<Event>) {
        let o = self.pool.get_mut(slot);
        o.flags |= FLAG_STOP_ARMED;
        let (id, account, side, trigger) = (o.id, o.account, o.side, o.trigger);
        let kind = EventKind::StopArmed {
            order_id: id,
            account,
            instrument: book.instrument.id,
            side,
            trigger,
        };
        self.emit(out, ts, kind);
        book.arm_stop(
            side,
            StopEntry {
                trigger,
                arrival: self.seq,
                slot,
            },
        );
    }

    /// Matches an active order against the book, then rests its remainder or ends it.
    pub(crate) fn execute(
        &mut self,
        book: &mut Book,
        slot: u32,
        ts: Timestamp,
        out: &mut Vec<Event>,
    ) {
        let (side, order_type, price) = {
            let o = self.pool.get(slot);
            (o.side, o.order_type, o.price)
        };
        let limit = protection_limit(&book.instrument, side, order_type, price);
        if !self.sweep(book, slot, limit, ts, out) {
            return;
        }
        let o = self.pool.get(slot);
        let reason = if o.remaining == 0 {
            DoneReason::Filled
        } else if matches!(order_type, OrderType::Market | OrderType::StopMarket) {
            DoneReason::MarketProtection
        } else if matches!(o.tif, TimeInForce::Ioc | TimeInForce::Fok) {
            DoneReason::ImmediateOrCancel
        } else {
            self.rest(book, slot, ts, out);
            return;
        };
        self.finish(book, slot, reason, ts, out);
    }

    fn rest(&mut self, book: &mut Book, slot: u32, ts: Timestamp, out: &mut Vec<Event>) {
        let o = self.pool.get_mut(slot);
        o.visible = o.slice();
        o.flags |= FLAG_RESTING;
        let kind = EventKind::OrderRested {
            order_id: o.id,
            account: o.account,
            instrument: o.instrument,
            side: o.side,
            price: o.price,
            visible: o.visible,
            remaining: o.remaining,
        };
        let (instrument, side, price) = (o.instrument, o.side, o.price);
        book.side_mut(side).push_back(&mut self.pool, slot);
        self.mark_dirty(instrument, side, price);
        self.emit(out, ts, kind);
    }

    /// Crosses the taker in `slot` with resting orders up to `limit`. Returns `false` when
    /// self-trade prevention ended the taker (its `OrderDone` is emitted already).
    fn sweep(
        &mut self,
        book: &mut Book,
        taker: u32,
        limit: Ticks,
        ts: Timestamp,
        out: &mut Vec<Event>,
    ) -> bool {
        let (t_side, t_account, t_stp, t_id) = {
            let t = self.pool.get(taker);
            (t.side, t.account, t.stp, t.id)
        };
        let m_side = t_side.opposite();
        let instrument = book.instrument.id;
        // The taker's fills reach risk once per sweep rather than once per trade (nothing
        // reads them in between); counted only while risk is on.
        let mut t_filled: Lots = 0;
        let went_on = loop {
            let t_remaining = self.pool.get(taker).remaining;
            if t_remaining == 0 {
                break true;
            }
            let makers = book.side(m_side);
            if !makers.best_is_within(limit) {
                break true;
            }
            let Some(maker) = makers.best_head() else {
                break true;
            };
            let m = self.pool.get(maker);
            let (price, m_account, m_visible, m_remaining, m_id) =
                (m.price, m.account, m.visible, m.remaining, m.id);
            if m_account == t_account {
                match t_stp {
                    SelfTradePrevention::CancelTaker => {
                        self.finish(book, taker, DoneReason::SelfTrade, ts, out);
                        break false;
                    }
                    SelfTradePrevention::CancelMaker => {
                        self.finish(book, maker, DoneReason::SelfTrade, ts, out);
                    }
                    SelfTradePrevention::CancelBoth => {
                        self.finish(book, maker, DoneReason::SelfTrade, ts, out);
                        self.finish(book, taker, DoneReason::SelfTrade, ts, out);
                        break false;
                    }
                    SelfTradePrevention::DecrementAndCancel => {
                        let q = t_remaining.min(m_remaining);
                        if q == m_remaining {
                            self.finish(book, maker, DoneReason::SelfTrade, ts, out);
                        } else {
                            self.decrement_resting(book, maker, q, ts, out);
                        }
                        if q == t_remaining {
                            self.finish(book, taker, DoneReason::SelfTrade, ts, out);
                            break false;
                        }
                        // The taker shrinks without trading: say so, so its size adds up.
                        self.pool.get_mut(taker).remaining -= q;
                        if self.risk.active {
                            let left = t_remaining - q;
                            self.risk
                                .resized(t_account, instrument, t_side, t_remaining, left);
                        }
                        self.emit_amended(taker, true, ts, out);
                    }
                }
                continue;
            }
            let q = t_remaining.min(m_visible);
            let t_left = {
                let t = self.pool.get_mut(taker);
                t.remaining -= q;
                t.filled += q;
                t.remaining
            };
            let m_left = {
                let m = self.pool.get_mut(maker);
                m.remaining -= q;
                m.filled += q;
                m.remaining
            };
            book.side_mut(m_side)
                .set_visible(&mut self.pool, maker, m_visible - q);
            if self.risk.active {
                t_filled += q;
                self.risk
                    .filled(m_account, instrument, m_side, q, m_left == 0);
            }
            self.trade_seq += 1;
            let kind = EventKind::Trade {
                trade_id: self.trade_seq,
                instrument,
                price,
                size: q,
                aggressor: t_side,
                taker_order: t_id,
                taker_account: t_account,
                maker_order: m_id,
                maker_account: m_account,
                taker_remaining: t_left,
                maker_remaining: m_left,
            };
            self.emit(out, ts, kind);
            book.last_price = Some(price);
            self.mark_dirty(instrument, m_side, price);
            if m_left == 0 {
                self.finish(book, maker, DoneReason::Filled, ts, out);
            } else if m_visible == q {
                // An iceberg's slice is used up: show the next slice at the back of the queue.
                let levels = book.side_mut(m_side);
                let slice = self.pool.get(maker).slice();
                levels.set_visible(&mut self.pool, maker, slice);
                levels.requeue(&mut self.pool, maker);
                let m = self.pool.get(maker);
                let kind = EventKind::OrderRested {
                    order_id: m_id,
                    account: m_account,
                    instrument,
                    side: m_side,
                    price,
                    visible: m.visible,
                    remaining: m.remaining,
                };
                self.emit(out, ts, kind);
            }
        };
        if t_filled > 0 {
            // An order filled completely is finished `Filled` by `execute` right after.
            let done = went_on && self.pool.get(taker).remaining == 0;
            self.risk
                .filled(t_account, instrument, t_side, t_filled, done);
        }
        went_on
    }

    /// Reduces a resting order's open size in place, keeping its queue position.
    fn decrement_resting(
        &mut self,
        book: &mut Book,
        slot: u32,
        by: Lots,
        ts: Timestamp,
        out: &mut Vec<Event>,
    ) {
        let o = self.pool.get_mut(slot);
        o.remaining -= by;
        let visible = o.visible.min(o.remaining);
        let (side, price, instrument) = (o.side, o.price, o.instrument);
        if self.risk.active {
            let (account, left) = (o.account, o.remaining);
            self.risk
                .resized(account, instrument, side, left + by, left);
        }
        book.side_mut(side)
            .set_visible(&mut self.pool, slot, visible);
        self.mark_dirty(instrument, side, price);
        self.emit_amended(slot, true, ts, out);
    }

    fn emit_amended(
        &mut self,
        slot: u32,
        priority_kept: bool,
        ts: Timestamp,
        out: &mut Vec<Event>,
    ) {
        let o = self.pool.get(slot);
        let kind = EventKind::OrderAmended {
            order_id: o.id,
            account: o.account,
            instrument: o.instrument,
            side: o.side,
            price: o.price,
            trigger: o.trigger,
            remaining: o.remaining,
            visible: o.visible,
            priority_kept,
        };
        self.emit(out, ts, kind);
    }

    /// Whether a FOK order of `size` up to `limit` would fill completely, self-trade
    /// prevention included. Walks orders without changing anything: within a level, an order
    /// of the same account stops the fill (unless STP cancels makers), and only the visible
    /// slices queued ahead of it can trade before it is reached.
    pub(crate) fn fok_fillable(
        &self,
        book: &Book,
        account: AccountId,
        side: Side,
        stp: SelfTradePrevention,
        size: Lots,
        limit: Ticks,
    ) -> bool {
        let makers = book.side(side.opposite());
        let within = |p: Ticks| match side {
            Side::Buy => p <= limit,
            Side::Sell => p >= limit,
        };
        let mut got: Lots = 0;
        let mut price = makers.best_price();
        while let Some(p) = price {
            if !within(p) {
                return false;
            }
            let level = makers.level(p).expect("listed level exists");
            let (mut ahead, mut total) = (0, 0);
            let mut s = level.head;
            while s != NIL {
                let m = self.pool.get(s);
                if m.account == account {
                    if stp != SelfTradePrevention::CancelMaker {
                        return got + ahead >= size;
                    }
                } else {
                    ahead += m.visible;
                    total += m.remaining;
                }
                s = m.next;
            }
            got += total;
            if got >= size {
                return true;
            }
            price = makers.next_price(p);
        }
        false
    }

    /// Executes every stop the last trade price has reached, and those their trades reach, in
    /// order: buy stops by trigger ascending, sell stops by trigger descending, ties by arrival.
    /// A stop once triggered executes even if later trades move the price back; its
    /// `StopTriggered` reports the last trade price that triggered it, not the price when its
    /// turn to execute comes.
    pub(crate) fn run_triggered_stops(
        &mut self,
        book: &mut Book,
        ts: Timestamp,
        out: &mut Vec<Event>,
    ) {
        loop {
            while let Some(e) = book.pop_triggered() {
                let last_price = book.last_price.unwrap_or_default();
                self.triggered.push_back((e.slot, last_price));
            }
            let Some((slot, last_price)) = self.triggered.pop_front() else {
                return;
            };
            let o = self.pool.get_mut(slot);
            o.flags &= !FLAG_STOP_ARMED;
            let (side, account, stp, remaining, order_type, price, tif) = (
                o.side,
                o.account,
                o.stp,
                o.remaining,
                o.order_type,
                o.price,
                o.tif,
            );
            let kind = EventKind::StopTriggered {
                order_id: o.id,
                account,
                instrument: o.instrument,
                side,
                trigger: o.trigger,
                last_price,
            };
            self.emit(out, ts, kind);
            if tif == TimeInForce::Fok {
                let limit = protection_limit(&book.instrument, side, order_type, price);
                if !self.fok_fillable(book, account, side, stp, remaining, limit) {
                    self.finish(book, slot, DoneReason::FillOrKill, ts, out);
                    continue;
                }
            }
            self.execute(book, slot, ts, out);
        }
    }

    fn amend(
        &mut self,
        book: &mut Book,
        slot: u32,
        a: &Amend,
        ts: Timestamp,
        out: &mut Vec<Event>,
    ) {
        let o = self.pool.get(slot);
        let new_size = a.size.unwrap_or(o.remaining);
        let new_price = a.price.unwrap_or(o.price);
        let new_trigger = a.trigger.unwrap_or(o.trigger);
        let (side, old_price, old_size, old_trigger, instrument) =
            (o.side, o.price, o.remaining, o.trigger, o.instrument);
        // Every path below but the in-place decrease (which accounts for itself) sets the
        // open size to `new_size` here.
        let in_place_decrease =
            !o.is(FLAG_STOP_ARMED) && new_price == old_price && new_size < old_size;
        if self.risk.active && !in_place_decrease {
            self.risk
                .resized(o.account, instrument, side, old_size, new_size);
        }
        if o.is(FLAG_STOP_ARMED) {
            let requeue = new_trigger != old_trigger || new_size > old_size;
            if requeue {
                book.disarm_stop(side, slot);
            }
            let o = self.pool.get_mut(slot);
            o.price = new_price;
            o.remaining = new_size;
            o.trigger = new_trigger;
            self.emit_amended(slot, !requeue, ts, out);
            if requeue {
                book.arm_stop(
                    side,
                    StopEntry {
                        trigger: new_trigger,
                        arrival: self.seq,
                        slot,
                    },
                );
            }
            return;
        }
        if new_price == old_price && new_size < old_size {
            self.decrement_resting(book, slot, old_size - new_size, ts, out);
            return;
        }
        book.side_mut(side).unlink(&mut self.pool, slot);
        self.mark_dirty(instrument, side, old_price);
        let o = self.pool.get_mut(slot);
        o.flags &= !FLAG_RESTING;
        o.price = new_price;
        o.remaining = new_size;
        o.visible = 0;
        self.emit_amended(slot, false, ts, out);
        self.execute(book, slot, ts, out);
        self.run_triggered_stops(book, ts, out);
    }
}
