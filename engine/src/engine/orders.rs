//! The commands that act on orders: place (validated in the order documented on
//! [`Engine::apply`]), cancel, amend, mass cancel, a closed session's orders, and the
//! expiry of GTD orders that runs before every command.

use super::{accepted, protection_limit, rejected, Engine};
use crate::command::*;
use crate::event::*;
use crate::order::*;
use crate::risk::Ask;
use crate::types::*;
use std::cmp::Reverse;

impl Engine {
    pub(super) fn expire(&mut self, ts: Timestamp, out: &mut Vec<Event>) {
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
        // Another shard's instrument is not one this engine trades (routing never sends it).
        if !self.config.shard.owns(p.instrument) {
            return Err(UnknownInstrument);
        }
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

    pub(super) fn place(
        &mut self,
        corr: Correlation,
        ts: Timestamp,
        p: &Place,
        out: &mut Vec<Event>,
    ) {
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
        if p.order_type == OrderType::Limit {
            // Where it would rest: fetched while the command does everything else.
            self.books[p.instrument as usize]
                .side(p.side)
                .prefetch(p.price);
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

    pub(super) fn cancel(
        &mut self,
        corr: Correlation,
        ts: Timestamp,
        c: &Cancel,
        out: &mut Vec<Event>,
    ) {
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

    pub(super) fn amend(
        &mut self,
        corr: Correlation,
        ts: Timestamp,
        a: &Amend,
        out: &mut Vec<Event>,
    ) {
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
    pub(super) fn mass_cancel(
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
    pub(super) fn session_closed(
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
}
