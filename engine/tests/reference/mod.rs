//! A deliberately naive reference engine: the test oracle for `ticker_engine::Engine`.
//!
//! exchange-core keeps a naive order book beside its fast ones and checks one against the
//! other; this is ours. It implements the semantics documented on `Engine::apply`, the command
//! and event types and `docs/engine.md` as plainly as possible: each side of a book is a `Vec` of
//! orders kept in priority order (best price first, then arrival), armed stops are a `Vec` in
//! arrival order, every lookup is a linear scan and a fill-or-kill check simply runs the order
//! on a copy of the book. Nothing here is fast and nothing needs to be.
//!
//! It speaks the engine's own vocabulary: [`Command`] in, [`Event`] out, with the same sequence
//! numbers and the same `LevelChanged` events. Only order ids differ: the reference numbers
//! orders 1, 2, 3, ... in order of acceptance, and a command naming an order by id uses those
//! numbers. A test harness maps the engine's ids onto them by pairing `PlaceAccepted` events.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use ticker_engine::*;

/// A live order. `price` is 0 for orders without a limit price, `trigger` 0 for non-stops and
/// `expiry` 0 for non-GTD orders, as the engine reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefOrder {
    pub id: u64,
    pub account: AccountId,
    pub session: SessionId,
    pub client_id: ClientOrderId,
    pub instrument: InstrumentId,
    pub side: Side,
    pub order_type: OrderType,
    pub price: Ticks,
    pub trigger: Ticks,
    pub remaining: Lots,
    /// Size shown in the book (an iceberg's current slice); 0 while not resting.
    pub visible: Lots,
    pub display: Lots,
    pub filled: Lots,
    pub tif: TimeInForce,
    pub expiry: Timestamp,
    pub post_only: bool,
    pub stp: SelfTradePrevention,
}

impl RefOrder {
    fn is_market(&self) -> bool {
        matches!(self.order_type, OrderType::Market | OrderType::StopMarket)
    }

    /// The next slice an iceberg shows, or the whole remainder.
    fn slice(&self) -> Lots {
        if self.display == 0 {
            self.remaining
        } else {
            self.display.min(self.remaining)
        }
    }
}

/// A resting order as its level's queue shows it: `(order id, visible, remaining)`.
pub type Queued = (u64, Lots, Lots);

/// Where a live order is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spot {
    Bids,
    Asks,
    Stops,
}

#[derive(Clone, Debug)]
pub struct RefBook {
    pub instrument: Instrument,
    pub halted: bool,
    pub last_price: Option<Ticks>,
    /// Resting buy orders: highest price first, then oldest first.
    pub bids: Vec<RefOrder>,
    /// Resting sell orders: lowest price first, then oldest first.
    pub asks: Vec<RefOrder>,
    /// Armed stops of both sides in arrival order (a re-armed stop moves to the end).
    pub stops: Vec<RefOrder>,
}

impl RefBook {
    fn side(&self, side: Side) -> &Vec<RefOrder> {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut Vec<RefOrder> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    fn spot_mut(&mut self, spot: Spot) -> &mut Vec<RefOrder> {
        match spot {
            Spot::Bids => &mut self.bids,
            Spot::Asks => &mut self.asks,
            Spot::Stops => &mut self.stops,
        }
    }

    /// Puts an order at the back of its price level.
    fn enqueue(&mut self, order: RefOrder) {
        let side = order.side;
        let orders = self.side_mut(side);
        let pos = orders
            .iter()
            .position(|o| is_better(side, order.price, o.price))
            .unwrap_or(orders.len());
        orders.insert(pos, order);
    }

    /// Levels of one side, best first: price and the queue of `(id, visible, remaining)`.
    pub fn levels(&self, side: Side) -> Vec<(Ticks, Vec<Queued>)> {
        let mut levels: Vec<(Ticks, Vec<Queued>)> = Vec::new();
        for o in self.side(side) {
            match levels.last_mut() {
                Some((price, queue)) if *price == o.price => {
                    queue.push((o.id, o.visible, o.remaining))
                }
                _ => levels.push((o.price, vec![(o.id, o.visible, o.remaining)])),
            }
        }
        levels
    }
}

/// Whether `price` is strictly better than `than` for an order on `side`.
fn is_better(side: Side, price: Ticks, than: Ticks) -> bool {
    match side {
        Side::Buy => price > than,
        Side::Sell => price < than,
    }
}

/// Whether an order on `side` with limit `limit` may trade at `price`.
fn within(side: Side, price: Ticks, limit: Ticks) -> bool {
    match side {
        Side::Buy => price <= limit,
        Side::Sell => price >= limit,
    }
}

/// Whether a stop on `side` with `trigger` is reached by the last trade price `last`.
fn reached(side: Side, trigger: Ticks, last: Ticks) -> bool {
    match side {
        Side::Buy => last >= trigger,
        Side::Sell => last <= trigger,
    }
}

#[derive(Clone, Debug)]
pub struct Reference {
    pub books: Vec<RefBook>,
    order_capacity: usize,
    max_instruments: usize,
    seq: u64,
    trade_seq: u64,
    last_id: u64,
    /// The current command's timestamp, events and touched levels.
    ts: Timestamp,
    out: Vec<Event>,
    touched: Vec<(InstrumentId, Side, Ticks)>,
    pub risk: RefRisk,
}

/// Risk as `docs/engine.md` states it, counted the slow way: open orders and open sizes by
/// scanning the live orders, the order rate from a list of every accepted place.
#[derive(Clone, Debug, Default)]
pub struct RefRisk {
    pub active: bool,
    pub default_limits: Option<Limits>,
    pub own: HashMap<AccountId, Limits>,
    pub disabled: HashSet<AccountId>,
    /// Net positions from fills since risk was switched on.
    pub net: HashMap<(AccountId, InstrumentId), i128>,
    /// Every place accepted while risk was on: account and timestamp.
    pub placed: Vec<(AccountId, Timestamp)>,
}

impl RefRisk {
    pub fn limits_of(&self, account: AccountId) -> Option<&Limits> {
        self.own.get(&account).or(self.default_limits.as_ref())
    }

    pub fn instrument_limits(
        &self,
        account: AccountId,
        instrument: InstrumentId,
    ) -> Option<InstrumentLimits> {
        let limits = self.limits_of(account)?;
        let found = limits.instruments.iter().find(|(i, _)| *i == instrument);
        found.map(|&(_, l)| l)
    }
}

impl Reference {
    pub fn new(config: &EngineConfig) -> Self {
        Reference {
            books: Vec::new(),
            order_capacity: config.order_capacity,
            max_instruments: config.max_instruments,
            seq: 0,
            trade_seq: 0,
            last_id: 0,
            ts: 0,
            out: Vec::new(),
            touched: Vec::new(),
            risk: RefRisk::default(),
        }
    }

    /// Every live order: resting and armed, in id order.
    pub fn live_orders(&self) -> Vec<&RefOrder> {
        let mut all: Vec<&RefOrder> = self
            .books
            .iter()
            .flat_map(|b| b.bids.iter().chain(&b.asks).chain(&b.stops))
            .collect();
        all.sort_by_key(|o| o.id);
        all
    }

    pub fn order(&self, id: u64) -> Option<&RefOrder> {
        self.live_orders().into_iter().find(|o| o.id == id)
    }

    /// Whether the order is an armed stop.
    pub fn is_armed(&self, id: u64) -> bool {
        self.books
            .iter()
            .any(|b| b.stops.iter().any(|s| s.id == id))
    }

    /// Applies one command and returns its events.
    pub fn apply(&mut self, cmd: &Command) -> Vec<Event> {
        self.ts = cmd.ts;
        self.expire();
        let corr = cmd.corr;
        if cmd.deadline != 0 && cmd.ts > cmd.deadline && !cmd.kind.tag().is_time_only() {
            let client_id = match &cmd.kind {
                CommandKind::Place(p) => p.client_id,
                _ => 0,
            };
            self.emit(EventKind::Rejected {
                corr,
                command: cmd.kind.tag(),
                account: cmd.kind.account(),
                client_id,
                order_id: OrderId::NONE,
                reason: RejectReason::DeadlineExceeded,
            });
            self.level_changes();
            return std::mem::take(&mut self.out);
        }
        match &cmd.kind {
            CommandKind::Place(p) => self.place(corr, p),
            CommandKind::Cancel(c) => self.cancel(corr, c),
            CommandKind::Amend(a) => self.amend(corr, a),
            CommandKind::MassCancel(m) => self.mass_cancel(corr, m),
            CommandKind::SessionClosed { session } => self.session_closed(corr, *session),
            CommandKind::AddInstrument(spec) => self.add_instrument(corr, spec),
            CommandKind::Halt { instrument } => self.set_halted(corr, *instrument, true),
            CommandKind::Resume { instrument } => self.set_halted(corr, *instrument, false),
            CommandKind::SetLimits { account, limits } => {
                self.set_limits(corr, *account, limits.as_deref())
            }
            CommandKind::DisableAccount { account } => self.set_disabled(corr, *account, true),
            CommandKind::EnableAccount { account } => self.set_disabled(corr, *account, false),
            CommandKind::Heartbeat | CommandKind::Snapshot => {}
        }
        self.level_changes();
        std::mem::take(&mut self.out)
    }

    // ---- events ----

    fn emit(&mut self, kind: EventKind) {
        self.seq += 1;
        self.out.push(Event {
            seq: self.seq,
            ts: self.ts,
            kind,
        });
    }

    fn touch(&mut self, o: &RefOrder) {
        self.touched.push((o.instrument, o.side, o.price));
    }

    /// One `LevelChanged` per touched level, sorted by instrument, side, price.
    fn level_changes(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_by_key(|&(i, s, p)| (i, s as u8, p));
        touched.dedup();
        for (instrument, side, price) in touched {
            let at_price: Vec<&RefOrder> = self.books[instrument as usize]
                .side(side)
                .iter()
                .filter(|o| o.price == price)
                .collect();
            let size = at_price.iter().map(|o| o.visible).sum();
            let orders = at_price.len() as u32;
            self.emit(EventKind::LevelChanged {
                instrument,
                side,
                price,
                size,
                orders,
            });
        }
    }

    fn reject(
        &mut self,
        corr: Correlation,
        command: CommandTag,
        account: AccountId,
        order: OrderRef,
        reason: RejectReason,
    ) {
        let (client_id, order_id) = match order {
            OrderRef::Id(id) => (0, id),
            OrderRef::Client(cid) => (cid, OrderId::NONE),
        };
        self.emit(EventKind::Rejected {
            corr,
            command,
            account,
            client_id,
            order_id,
            reason,
        });
    }

    fn accept(
        &mut self,
        corr: Correlation,
        command: CommandTag,
        account: AccountId,
        order_id: u64,
        instrument: Option<InstrumentId>,
    ) {
        self.emit(EventKind::Accepted {
            corr,
            command,
            account,
            order_id: OrderId(order_id),
            instrument,
        });
    }

    /// The order's life ends: one `OrderDone`. The order must already be out of the book.
    fn done(&mut self, o: &RefOrder, reason: DoneReason) {
        self.emit(EventKind::OrderDone {
            order_id: OrderId(o.id),
            account: o.account,
            instrument: o.instrument,
            side: o.side,
            price: o.price,
            filled: o.filled,
            cancelled: if reason == DoneReason::Filled {
                0
            } else {
                o.remaining
            },
            reason,
        });
    }

    fn rested(&mut self, o: &RefOrder) {
        self.emit(EventKind::OrderRested {
            order_id: OrderId(o.id),
            account: o.account,
            instrument: o.instrument,
            side: o.side,
            price: o.price,
            visible: o.visible,
            remaining: o.remaining,
        });
    }

    fn amended(&mut self, o: &RefOrder, priority_kept: bool) {
        self.emit(EventKind::OrderAmended {
            order_id: OrderId(o.id),
            account: o.account,
            instrument: o.instrument,
            side: o.side,
            price: o.price,
            trigger: o.trigger,
            remaining: o.remaining,
            visible: o.visible,
            priority_kept,
        });
    }

    // ---- finding and removing live orders ----

    fn locate(&self, id: u64) -> Option<(usize, Spot, usize)> {
        for (b, book) in self.books.iter().enumerate() {
            for (spot, orders) in [
                (Spot::Bids, &book.bids),
                (Spot::Asks, &book.asks),
                (Spot::Stops, &book.stops),
            ] {
                if let Some(i) = orders.iter().position(|o| o.id == id) {
                    return Some((b, spot, i));
                }
            }
        }
        None
    }

    /// Takes a live order out of its book (touching its level if it rested).
    fn take(&mut self, id: u64) -> RefOrder {
        let (b, spot, i) = self.locate(id).expect("live order");
        let o = self.books[b].spot_mut(spot).remove(i);
        if spot != Spot::Stops {
            self.touch(&o);
        }
        o
    }

    fn cancel_all(&mut self, mut ids: Vec<u64>, reason: DoneReason) {
        // Newest first, as documented for mass cancel (and done alike for session close).
        ids.sort_unstable_by(|a, b| b.cmp(a));
        for id in ids {
            let o = self.take(id);
            self.done(&o, reason);
        }
    }

    fn expire(&mut self) {
        let ts = self.ts;
        let mut due: Vec<(Timestamp, u64)> = self
            .live_orders()
            .into_iter()
            .filter(|o| o.tif == TimeInForce::Gtd && o.expiry <= ts)
            .map(|o| (o.expiry, o.id))
            .collect();
        due.sort_unstable();
        for (_, id) in due {
            let o = self.take(id);
            self.done(&o, DoneReason::Expired);
        }
    }

    // ---- place ----

    fn validate_place(&self, p: &Place) -> Result<(), RejectReason> {
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
        let has_price = matches!(p.order_type, OrderType::Limit | OrderType::StopLimit);
        let is_stop = matches!(p.order_type, OrderType::StopMarket | OrderType::StopLimit);
        let is_market = matches!(p.order_type, OrderType::Market | OrderType::StopMarket);
        let immediate = matches!(p.tif, TimeInForce::Ioc | TimeInForce::Fok);
        if has_price && p.price <= 0 {
            return Err(InvalidPrice);
        }
        if has_price && !ins.in_band(p.price) {
            return Err(OutsideBand);
        }
        if is_stop && p.trigger <= 0 {
            return Err(InvalidPrice);
        }
        if is_stop && !ins.in_band(p.trigger) {
            return Err(OutsideBand);
        }
        if is_market && !immediate {
            return Err(InvalidTimeInForce);
        }
        if p.post_only && (immediate || p.order_type != OrderType::Limit) {
            return Err(InvalidTimeInForce);
        }
        if p.tif == TimeInForce::Gtd && p.expiry <= self.ts {
            return Err(ExpiryInPast);
        }
        if p.display > 0
            && (immediate || is_market || p.display > p.size || p.display < ins.min_lots)
        {
            return Err(InvalidDisplaySize);
        }
        if p.client_id != 0
            && self
                .live_orders()
                .iter()
                .any(|o| o.account == p.account && o.client_id == p.client_id)
        {
            return Err(DuplicateClientOrderId);
        }
        if is_stop
            && book
                .last_price
                .is_some_and(|l| reached(p.side, p.trigger, l))
        {
            return Err(StopWouldTriggerImmediately);
        }
        if p.post_only
            && book
                .side(p.side.opposite())
                .first()
                .is_some_and(|best| within(p.side, best.price, p.price))
        {
            return Err(PostOnlyWouldCross);
        }
        if p.tif == TimeInForce::Fok && !is_stop {
            let order = self.new_order(0, p);
            if !self.fills_completely(&order) {
                return Err(FokNotFillable);
            }
        }
        if self.risk.active {
            let worst = self.limit_of(&self.new_order(0, p));
            self.check_risk(p.account, p.instrument, p.side, p.size, worst, p.size, true)?;
            let limits = self.risk.limits_of(p.account);
            let open = self
                .live_orders()
                .iter()
                .filter(|o| o.account == p.account)
                .count();
            if limits
                .and_then(|l| l.max_open_orders)
                .is_some_and(|max| open >= max as usize)
            {
                return Err(MaxOpenOrders);
            }
            let second = self.ts / 1_000_000_000;
            let used = self
                .risk
                .placed
                .iter()
                .filter(|&&(a, ts)| a == p.account && ts / 1_000_000_000 == second)
                .count();
            if limits
                .and_then(|l| l.max_orders_per_sec)
                .is_some_and(|max| used >= max as usize)
            {
                return Err(MaxOrderRate);
            }
        }
        if self.live_orders().len() >= self.order_capacity {
            return Err(CapacityExhausted);
        }
        Ok(())
    }

    /// Disabled, then the per-instrument limits of an order of `size` at the worst price
    /// `worst` adding `added` lots to the account's open size on `side`: order size (if
    /// `size_check`), notional, long or short position in the worst case.
    #[allow(clippy::too_many_arguments)]
    fn check_risk(
        &self,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        size: Lots,
        worst: Ticks,
        added: Lots,
        size_check: bool,
    ) -> Result<(), RejectReason> {
        use RejectReason::*;
        if self.risk.disabled.contains(&account) {
            return Err(AccountDisabled);
        }
        let Some(l) = self.risk.instrument_limits(account, instrument) else {
            return Ok(());
        };
        if size_check && l.max_order_lots.is_some_and(|max| size > max) {
            return Err(MaxOrderSize);
        }
        if l.max_order_notional
            .is_some_and(|max| worst as u128 * size as u128 > max)
        {
            return Err(MaxOrderNotional);
        }
        if added == 0 {
            return Ok(());
        }
        let net = self
            .risk
            .net
            .get(&(account, instrument))
            .copied()
            .unwrap_or(0);
        let open: i128 = self
            .live_orders()
            .iter()
            .filter(|o| o.account == account && o.instrument == instrument && o.side == side)
            .map(|o| o.remaining as i128)
            .sum();
        let added = added as i128;
        match side {
            Side::Buy
                if l.max_long_lots
                    .is_some_and(|max| net + open + added > max as i128) =>
            {
                Err(MaxPositionLong)
            }
            Side::Sell
                if l.max_short_lots
                    .is_some_and(|max| net - open - added < -(max as i128)) =>
            {
                Err(MaxPositionShort)
            }
            _ => Ok(()),
        }
    }

    fn new_order(&self, id: u64, p: &Place) -> RefOrder {
        let has_price = matches!(p.order_type, OrderType::Limit | OrderType::StopLimit);
        let is_stop = matches!(p.order_type, OrderType::StopMarket | OrderType::StopLimit);
        RefOrder {
            id,
            account: p.account,
            session: p.session,
            client_id: p.client_id,
            instrument: p.instrument,
            side: p.side,
            order_type: p.order_type,
            price: if has_price { p.price } else { 0 },
            trigger: if is_stop { p.trigger } else { 0 },
            remaining: p.size,
            visible: 0,
            display: p.display,
            filled: 0,
            tif: p.tif,
            expiry: if p.tif == TimeInForce::Gtd {
                p.expiry
            } else {
                0
            },
            post_only: p.post_only,
            stp: p.stp,
        }
    }

    fn place(&mut self, corr: Correlation, p: &Place) {
        if let Err(reason) = self.validate_place(p) {
            return self.reject(
                corr,
                CommandTag::Place,
                p.account,
                OrderRef::Client(p.client_id),
                reason,
            );
        }
        self.last_id += 1;
        if self.risk.active {
            self.risk.placed.push((p.account, self.ts));
        }
        let order = self.new_order(self.last_id, p);
        self.emit(EventKind::PlaceAccepted {
            corr,
            order: OrderInfo {
                order_id: OrderId(order.id),
                account: order.account,
                client_id: order.client_id,
                session: order.session,
                instrument: order.instrument,
                side: order.side,
                order_type: order.order_type,
                price: order.price,
                trigger: order.trigger,
                size: p.size,
                tif: order.tif,
                expiry: order.expiry,
                post_only: order.post_only,
                display: order.display,
                stp: order.stp,
            },
        });
        if p.order_type.is_stop() {
            self.arm(order);
        } else {
            self.execute(order);
            self.run_triggered_stops(p.instrument as usize);
        }
    }

    fn arm(&mut self, stop: RefOrder) {
        self.emit(EventKind::StopArmed {
            order_id: OrderId(stop.id),
            account: stop.account,
            instrument: stop.instrument,
            side: stop.side,
            trigger: stop.trigger,
        });
        self.books[stop.instrument as usize].stops.push(stop);
    }

    /// The worst price `o` may trade at: its limit, or the band's edge for market orders.
    fn limit_of(&self, o: &RefOrder) -> Ticks {
        let ins = &self.books[o.instrument as usize].instrument;
        match (o.is_market(), o.side) {
            (false, _) => o.price,
            (true, Side::Buy) => ins.band_high,
            (true, Side::Sell) => ins.band_low,
        }
    }

    /// Fill-or-kill: run the order on a copy of everything and see whether it fills completely.
    fn fills_completely(&self, o: &RefOrder) -> bool {
        let mut trial = self.clone();
        let mut taker = o.clone();
        let wanted = taker.remaining;
        let before = taker.filled;
        let limit = self.limit_of(o);
        trial.sweep(&mut taker, limit);
        taker.filled - before == wanted
    }

    /// Matches an active order, then rests what is left or ends it.
    fn execute(&mut self, mut taker: RefOrder) {
        let limit = self.limit_of(&taker);
        if !self.sweep(&mut taker, limit) {
            return;
        }
        if taker.remaining == 0 {
            self.done(&taker, DoneReason::Filled);
        } else if taker.is_market() {
            self.done(&taker, DoneReason::MarketProtection);
        } else if matches!(taker.tif, TimeInForce::Ioc | TimeInForce::Fok) {
            self.done(&taker, DoneReason::ImmediateOrCancel);
        } else {
            taker.visible = taker.slice();
            self.touch(&taker);
            self.books[taker.instrument as usize].enqueue(taker.clone());
            self.rested(&taker);
        }
    }

    /// Trades `taker` against the opposite side up to `limit`. Returns `false` when self-trade
    /// prevention ended the taker.
    fn sweep(&mut self, taker: &mut RefOrder, limit: Ticks) -> bool {
        let b = taker.instrument as usize;
        let maker_side = taker.side.opposite();
        loop {
            if taker.remaining == 0 {
                return true;
            }
            let Some(maker) = self.books[b].side(maker_side).first().cloned() else {
                return true;
            };
            if !within(taker.side, maker.price, limit) {
                return true;
            }
            if maker.account == taker.account {
                match taker.stp {
                    SelfTradePrevention::CancelTaker => {
                        self.done(taker, DoneReason::SelfTrade);
                        return false;
                    }
                    SelfTradePrevention::CancelMaker => {
                        let maker = self.take(maker.id);
                        self.done(&maker, DoneReason::SelfTrade);
                    }
                    SelfTradePrevention::CancelBoth => {
                        let maker = self.take(maker.id);
                        self.done(&maker, DoneReason::SelfTrade);
                        self.done(taker, DoneReason::SelfTrade);
                        return false;
                    }
                    SelfTradePrevention::DecrementAndCancel => {
                        let q = taker.remaining.min(maker.remaining);
                        if q == maker.remaining {
                            let maker = self.take(maker.id);
                            self.done(&maker, DoneReason::SelfTrade);
                        } else {
                            let m = &mut self.books[b].side_mut(maker_side)[0];
                            m.remaining -= q;
                            m.visible = m.visible.min(m.remaining);
                            let m = m.clone();
                            self.touch(&m);
                            self.amended(&m, true);
                        }
                        if q == taker.remaining {
                            self.done(taker, DoneReason::SelfTrade);
                            return false;
                        }
                        taker.remaining -= q;
                        self.amended(taker, true);
                    }
                }
                continue;
            }
            let q = taker.remaining.min(maker.visible);
            taker.remaining -= q;
            taker.filled += q;
            let m = &mut self.books[b].side_mut(maker_side)[0];
            m.remaining -= q;
            m.filled += q;
            m.visible -= q;
            let m = m.clone();
            self.trade_seq += 1;
            self.emit(EventKind::Trade {
                trade_id: self.trade_seq,
                instrument: taker.instrument,
                price: m.price,
                size: q,
                aggressor: taker.side,
                taker_order: OrderId(taker.id),
                taker_account: taker.account,
                maker_order: OrderId(m.id),
                maker_account: m.account,
                taker_remaining: taker.remaining,
                maker_remaining: m.remaining,
            });
            self.books[b].last_price = Some(m.price);
            if self.risk.active {
                let signed = |side: Side| match side {
                    Side::Buy => q as i128,
                    Side::Sell => -(q as i128),
                };
                *self.risk.net.entry((taker.account, b as u32)).or_default() += signed(taker.side);
                *self.risk.net.entry((m.account, b as u32)).or_default() += signed(m.side);
            }
            self.touch(&m);
            if m.remaining == 0 {
                let m = self.take(m.id);
                self.done(&m, DoneReason::Filled);
            } else if m.visible == 0 {
                // The iceberg's slice is gone: show the next one at the back of the level.
                let mut m = self.take(m.id);
                m.visible = m.slice();
                self.books[b].enqueue(m.clone());
                self.rested(&m);
            }
        }
    }

    /// Runs every stop the last price reaches, and those their trades reach, in trigger order.
    fn run_triggered_stops(&mut self, b: usize) {
        let mut queue: VecDeque<(RefOrder, Ticks)> = VecDeque::new();
        loop {
            queue.extend(self.take_triggered(b));
            let Some((stop, last_price)) = queue.pop_front() else {
                return;
            };
            self.emit(EventKind::StopTriggered {
                order_id: OrderId(stop.id),
                account: stop.account,
                instrument: stop.instrument,
                side: stop.side,
                trigger: stop.trigger,
                last_price,
            });
            if stop.tif == TimeInForce::Fok && !self.fills_completely(&stop) {
                self.done(&stop, DoneReason::FillOrKill);
                continue;
            }
            self.execute(stop);
        }
    }

    /// Disarms the stops the last price has reached: buy stops by trigger ascending, then sell
    /// stops by trigger descending, ties by arrival; each with the price that triggered it.
    fn take_triggered(&mut self, b: usize) -> Vec<(RefOrder, Ticks)> {
        let Some(last) = self.books[b].last_price else {
            return Vec::new();
        };
        let stops = std::mem::take(&mut self.books[b].stops);
        let (mut hit, armed): (Vec<RefOrder>, Vec<RefOrder>) = stops
            .into_iter()
            .partition(|s| reached(s.side, s.trigger, last));
        self.books[b].stops = armed;
        // Stable sorts keep arrival order among equal triggers.
        hit.sort_by_key(|s| match s.side {
            Side::Buy => (0, s.trigger),
            Side::Sell => (1, -s.trigger),
        });
        hit.into_iter().map(|s| (s, last)).collect()
    }

    // ---- cancel and amend ----

    /// The live order a command names, if `account` owns it.
    fn resolve(&self, account: AccountId, order: OrderRef) -> Result<RefOrder, RejectReason> {
        let live = self.live_orders();
        let found = match order {
            OrderRef::Id(id) => live.into_iter().find(|o| o.id == id.0),
            OrderRef::Client(cid) => live
                .into_iter()
                .find(|o| o.account == account && o.client_id == cid && cid != 0),
        };
        let o = found.ok_or(RejectReason::UnknownOrder)?;
        if o.account != account {
            return Err(RejectReason::NotOwner);
        }
        Ok(o.clone())
    }

    fn cancel(&mut self, corr: Correlation, c: &Cancel) {
        match self.resolve(c.account, c.order) {
            Err(reason) => self.reject(corr, CommandTag::Cancel, c.account, c.order, reason),
            Ok(o) => {
                self.accept(
                    corr,
                    CommandTag::Cancel,
                    c.account,
                    o.id,
                    Some(o.instrument),
                );
                let o = self.take(o.id);
                self.done(&o, DoneReason::Cancelled);
            }
        }
    }

    fn validate_amend(&self, o: &RefOrder, a: &Amend) -> Result<(), RejectReason> {
        use RejectReason::*;
        let book = &self.books[o.instrument as usize];
        let ins = &book.instrument;
        let armed = book.stops.iter().any(|s| s.id == o.id);
        if book.halted {
            return Err(Halted);
        }
        let has_price = matches!(o.order_type, OrderType::Limit | OrderType::StopLimit);
        if (a.price.is_some() && !has_price) || (a.trigger.is_some() && !armed) {
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
        if a.price.is_some() && price <= 0 {
            return Err(InvalidPrice);
        }
        if a.price.is_some() && !ins.in_band(price) {
            return Err(OutsideBand);
        }
        if a.trigger.is_some() && trigger <= 0 {
            return Err(InvalidPrice);
        }
        if a.trigger.is_some() && !ins.in_band(trigger) {
            return Err(OutsideBand);
        }
        if size == o.remaining && price == o.price && trigger == o.trigger {
            return Err(InvalidAmend);
        }
        if armed
            && trigger != o.trigger
            && book.last_price.is_some_and(|l| reached(o.side, trigger, l))
        {
            return Err(StopWouldTriggerImmediately);
        }
        if !armed
            && o.post_only
            && price != o.price
            && book
                .side(o.side.opposite())
                .first()
                .is_some_and(|best| within(o.side, best.price, price))
        {
            return Err(PostOnlyWouldCross);
        }
        if self.risk.active {
            let added = size.saturating_sub(o.remaining);
            let price_changed = price != o.price;
            let mut changed = o.clone();
            changed.price = price;
            let worst = self.limit_of(&changed);
            if added == 0 && !price_changed {
                if self.risk.disabled.contains(&o.account) {
                    return Err(AccountDisabled);
                }
            } else {
                self.check_risk(
                    o.account,
                    o.instrument,
                    o.side,
                    size,
                    worst,
                    added,
                    added > 0,
                )?;
            }
        }
        Ok(())
    }

    fn amend(&mut self, corr: Correlation, a: &Amend) {
        let checked = self
            .resolve(a.account, a.order)
            .and_then(|o| self.validate_amend(&o, a).map(|()| o));
        let o = match checked {
            Ok(o) => o,
            Err(reason) => return self.reject(corr, CommandTag::Amend, a.account, a.order, reason),
        };
        self.accept(corr, CommandTag::Amend, a.account, o.id, Some(o.instrument));
        let new_size = a.size.unwrap_or(o.remaining);
        let new_price = a.price.unwrap_or(o.price);
        let new_trigger = a.trigger.unwrap_or(o.trigger);
        let b = o.instrument as usize;
        let (_, spot, i) = self.locate(o.id).expect("resolved order is live");
        if spot == Spot::Stops {
            // An armed stop: a new trigger or a larger size re-arms it behind its peers.
            let requeue = new_trigger != o.trigger || new_size > o.remaining;
            let mut stop = self.books[b].stops.remove(i);
            stop.price = new_price;
            stop.remaining = new_size;
            stop.trigger = new_trigger;
            self.amended(&stop, !requeue);
            if requeue {
                self.books[b].stops.push(stop);
            } else {
                self.books[b].stops.insert(i, stop);
            }
        } else if new_price == o.price && new_size < o.remaining {
            // A pure size decrease keeps the order's place in the queue.
            let r = &mut self.books[b].spot_mut(spot)[i];
            r.remaining = new_size;
            r.visible = r.visible.min(new_size);
            let r = r.clone();
            self.touch(&r);
            self.amended(&r, true);
        } else {
            // Anything else re-enters the book as a new order would.
            let mut r = self.take(o.id);
            r.price = new_price;
            r.remaining = new_size;
            r.visible = 0;
            self.amended(&r, false);
            self.execute(r);
            self.run_triggered_stops(b);
        }
    }

    fn mass_cancel(&mut self, corr: Correlation, m: &MassCancel) {
        if m.account == 0 {
            return self.reject(
                corr,
                CommandTag::MassCancel,
                m.account,
                OrderRef::Client(0),
                RejectReason::InvalidAccount,
            );
        }
        if m.instrument.is_some_and(|i| i as usize >= self.books.len()) {
            return self.reject(
                corr,
                CommandTag::MassCancel,
                m.account,
                OrderRef::Client(0),
                RejectReason::UnknownInstrument,
            );
        }
        self.accept(corr, CommandTag::MassCancel, m.account, 0, m.instrument);
        let ids = self
            .live_orders()
            .into_iter()
            .filter(|o| {
                o.account == m.account
                    && m.instrument.is_none_or(|i| i == o.instrument)
                    && m.side.is_none_or(|s| s == o.side)
            })
            .map(|o| o.id)
            .collect();
        self.cancel_all(ids, DoneReason::MassCancelled);
    }

    fn session_closed(&mut self, corr: Correlation, session: SessionId) {
        self.accept(corr, CommandTag::SessionClosed, 0, 0, None);
        let ids = self
            .live_orders()
            .into_iter()
            .filter(|o| session != 0 && o.session == session)
            .map(|o| o.id)
            .collect();
        self.cancel_all(ids, DoneReason::SessionClosed);
    }

    // ---- admin ----

    fn add_instrument(&mut self, corr: Correlation, spec: &InstrumentSpec) {
        let id = self.books.len() as InstrumentId;
        let instrument = if self.books.len() >= self.max_instruments {
            Err(RejectReason::TooManyInstruments)
        } else if self
            .books
            .iter()
            .any(|b| b.instrument.spec.symbol == spec.symbol)
        {
            Err(RejectReason::InstrumentExists)
        } else {
            Instrument::new(id, spec.clone()).map_err(|_| RejectReason::InvalidInstrumentSpec)
        };
        match instrument {
            Err(reason) => self.reject(
                corr,
                CommandTag::AddInstrument,
                0,
                OrderRef::Client(0),
                reason,
            ),
            Ok(instrument) => {
                self.books.push(RefBook {
                    instrument,
                    halted: false,
                    last_price: None,
                    bids: Vec::new(),
                    asks: Vec::new(),
                    stops: Vec::new(),
                });
                self.accept(corr, CommandTag::AddInstrument, 0, 0, Some(id));
                self.emit(EventKind::InstrumentAdded {
                    instrument: id,
                    spec: Arc::new(spec.clone()),
                });
            }
        }
    }

    fn set_limits(&mut self, corr: Correlation, account: AccountId, limits: Option<&Limits>) {
        let tag = CommandTag::SetLimits;
        if let Some(l) = limits {
            let ids: Vec<InstrumentId> = l.instruments.iter().map(|(i, _)| *i).collect();
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            sorted.dedup();
            let reason = if sorted != ids {
                Some(RejectReason::InvalidLimits)
            } else if ids.iter().any(|&i| i as usize >= self.books.len()) {
                Some(RejectReason::UnknownInstrument)
            } else {
                None
            };
            if let Some(reason) = reason {
                return self.reject(corr, tag, 0, OrderRef::Client(0), reason);
            }
        }
        self.risk.active = true;
        match (account, limits) {
            (0, l) => self.risk.default_limits = l.cloned(),
            (a, Some(l)) => {
                self.risk.own.insert(a, l.clone());
            }
            (a, None) => {
                self.risk.own.remove(&a);
            }
        }
        self.accept(corr, tag, 0, 0, None);
    }

    fn set_disabled(&mut self, corr: Correlation, account: AccountId, disabled: bool) {
        let tag = if disabled {
            CommandTag::DisableAccount
        } else {
            CommandTag::EnableAccount
        };
        if account == 0 {
            let reason = RejectReason::InvalidAccount;
            return self.reject(corr, tag, 0, OrderRef::Client(0), reason);
        }
        self.risk.active = true;
        if disabled {
            self.risk.disabled.insert(account);
        } else {
            self.risk.disabled.remove(&account);
        }
        self.accept(corr, tag, 0, 0, None);
        self.emit(EventKind::AccountStatus { account, disabled });
        if disabled {
            let ids = self
                .live_orders()
                .into_iter()
                .filter(|o| o.account == account)
                .map(|o| o.id)
                .collect();
            self.cancel_all(ids, DoneReason::AccountDisabled);
        }
    }

    fn set_halted(&mut self, corr: Correlation, instrument: InstrumentId, halted: bool) {
        let tag = if halted {
            CommandTag::Halt
        } else {
            CommandTag::Resume
        };
        let Some(book) = self.books.get_mut(instrument as usize) else {
            return self.reject(
                corr,
                tag,
                0,
                OrderRef::Client(0),
                RejectReason::UnknownInstrument,
            );
        };
        book.halted = halted;
        self.accept(corr, tag, 0, 0, Some(instrument));
        self.emit(EventKind::TradingStatus { instrument, halted });
    }
}
