//! Matching and the bookkeeping around it, on [`State`] (everything but the books, so a book
//! and the rest can be borrowed at once): crossing a taker with resting orders, resting and
//! arming, triggered stops, amends that move an order, ends of orders, the account / session /
//! client-id indexes, and the `LevelChanged` events flushed at the end of each command.

use super::{protection_limit, State};
use crate::book::{Book, StopEntry};
use crate::command::*;
use crate::event::*;
use crate::order::*;
use crate::types::*;

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

    pub(super) fn flush_levels(&mut self, books: &[Book], ts: Timestamp, out: &mut Vec<Event>) {
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
    pub(super) fn index(&mut self, slot: u32) {
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

    pub(super) fn arm(&mut self, book: &mut Book, slot: u32, ts: Timestamp, out: &mut Vec<Event>) {
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
                trade_id: self.shard.trade_id(self.trade_seq),
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

    pub(super) fn amend(
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
