//! The commands that change the market's rules rather than an order: new instruments, halts
//! and resumes, risk limits and the per-account kill switch.

use super::{accepted, rejected, Engine};
use crate::book::Book;
use crate::command::*;
use crate::event::*;
use crate::instrument::Instrument;
use crate::order::*;
use crate::risk::Limits;
use crate::types::*;
use std::sync::Arc;

impl Engine {
    pub(super) fn add_instrument(
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
                // Every shard adds it (so ids stay dense and equal); its own shard tells.
                if self.config.shard.owns(id) {
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

    pub(super) fn set_limits(
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
    pub(super) fn set_disabled(
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
        // Every shard switches the account; one tells.
        if self.config.shard.publishes_global() {
            self.st
                .emit(out, ts, EventKind::AccountStatus { account, disabled });
        }
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

    pub(super) fn set_halted(
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
