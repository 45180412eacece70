//! Pre-trade risk: per-account limits and the kill switch, checked inside the engine so they
//! are sequenced, journaled, snapshotted and replayed like everything else.
//!
//! Limits are in engine units: sizes in lots and notionals in ticks × lots of one instrument,
//! so per-instrument limits are kept per (account, instrument); the edge converts its decimal
//! configuration for each instrument. An account uses its own [`Limits`] if it has them, else
//! the default set (`SetLimits` for account 0), else none. Every limit is optional.
//!
//! Risk stays off — nothing tracked, one branch per order — until the first `SetLimits`,
//! `DisableAccount` or `EnableAccount` is accepted. From then on the engine keeps, per account,
//! its live-order count and its orders in the current second, and per (account, instrument)
//! the net position from fills and the open buy and sell size of its live orders. Net
//! positions count from that moment: the edge sends its configured limits before order flow.
//!
//! The rules (docs/engine.md, "Risk limits"):
//! - Position limits use the worst case: a buy is refused if net + open buys + its size would
//!   exceed `max_long_lots`, a sell if net − open sells − its size would go below
//!   −`max_short_lots`, so no fill can ever breach a limit. Armed stops count as open from the
//!   moment they are placed.
//! - An order's notional is its size times the worst price it can trade at: its limit price, or
//!   for market and stop-market orders the price band's edge on its side.
//! - The order rate is counted per calendar second of the command timestamp (`ts / 10⁹`): an
//!   account may have `max_orders_per_sec` places accepted in one second. Only accepted places
//!   count; amends do not.
//! - An amend that raises the size is checked against the size, notional and position limits;
//!   one that changes the price against the notional limit.

use crate::event::RejectReason;
use crate::types::*;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// Nanoseconds in the order-rate window.
pub const RATE_WINDOW_NANOS: Timestamp = 1_000_000_000;

/// An account's limits on one instrument, in that instrument's ticks and lots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstrumentLimits {
    /// Largest open size of one order.
    pub max_order_lots: Option<Lots>,
    /// Largest notional of one order, in ticks × lots (a `u128`: the product of any `i64`
    /// price and `u64` size fits, so it never overflows).
    pub max_order_notional: Option<u128>,
    /// Largest long position, worst case (net position plus every open buy).
    pub max_long_lots: Option<Lots>,
    /// Largest short position, worst case (net position minus every open sell).
    pub max_short_lots: Option<Lots>,
}

/// An account's limits (or the default set). `None` everywhere means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limits {
    /// Most live orders (resting and armed stops) of the account across all instruments.
    pub max_open_orders: Option<u32>,
    /// Most places accepted in one calendar second of the command timestamp.
    pub max_orders_per_sec: Option<u32>,
    /// Per-instrument limits, ascending by instrument, each instrument at most once. An
    /// instrument not listed has no per-instrument limits.
    pub instruments: Vec<(InstrumentId, InstrumentLimits)>,
}

impl Limits {
    /// The limits on `instrument`, if any.
    pub fn instrument(&self, instrument: InstrumentId) -> Option<&InstrumentLimits> {
        self.instruments
            .binary_search_by_key(&instrument, |&(id, _)| id)
            .ok()
            .map(|i| &self.instruments[i].1)
    }

    /// Checks the shape: instruments ascending without repeats, each one of the engine's.
    pub(crate) fn validate(&self, instruments: usize) -> Result<(), RejectReason> {
        let ascending = self.instruments.windows(2).all(|w| w[0].0 < w[1].0);
        if !ascending {
            return Err(RejectReason::InvalidLimits);
        }
        if self
            .instruments
            .iter()
            .any(|&(id, _)| id as usize >= instruments)
        {
            return Err(RejectReason::UnknownInstrument);
        }
        Ok(())
    }
}

/// What the engine keeps per account once risk is on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AccountRisk {
    /// The account's own limits; `None` falls back to the default set.
    pub limits: Option<Limits>,
    /// Kill switch: every place and amend is refused with `AccountDisabled`.
    pub disabled: bool,
    /// Live orders (resting and armed stops).
    pub open_orders: u32,
    /// Calendar second (`ts / 10⁹`) of `window_orders`.
    pub window_sec: u64,
    /// Places accepted in `window_sec`.
    pub window_orders: u32,
}

impl AccountRisk {
    fn orders_in(&self, sec: u64) -> u32 {
        if self.window_sec == sec {
            self.window_orders
        } else {
            0
        }
    }
}

/// An account's position on one instrument: net from fills, and the open size of its live
/// orders on each side. Wide integers so that no sum of `u64` sizes can overflow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Exposure {
    pub net: i128,
    pub open_buy: i128,
    pub open_sell: i128,
}

impl Exposure {
    fn open_mut(&mut self, side: Side) -> &mut i128 {
        match side {
            Side::Buy => &mut self.open_buy,
            Side::Sell => &mut self.open_sell,
        }
    }
}

/// The engine's risk state. Every method but the checks is a no-op while `active` is off, and
/// the engine tests `active` before calling them, so an engine without risk pays one branch.
#[derive(Debug)]
pub(crate) struct Risk {
    pub active: bool,
    pub default_limits: Option<Limits>,
    pub accounts: FxHashMap<AccountId, AccountRisk>,
    pub exposures: FxHashMap<(AccountId, InstrumentId), Exposure>,
}

/// What a place or an amend asks of the risk check.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ask {
    pub account: AccountId,
    pub instrument: InstrumentId,
    pub side: Side,
    /// Open size the order would have.
    pub size: Lots,
    /// The worst price it can trade at (its limit, or the band's edge).
    pub worst_price: Ticks,
    /// Size it adds to the account's open size on its side (the whole size for a place).
    pub added: Lots,
}

impl Risk {
    pub(crate) fn new(capacity: usize) -> Self {
        let hasher = rustc_hash::FxBuildHasher;
        Risk {
            active: false,
            default_limits: None,
            accounts: FxHashMap::with_capacity_and_hasher(capacity, hasher),
            exposures: FxHashMap::with_capacity_and_hasher(capacity, hasher),
        }
    }

    fn limits_of<'a>(&'a self, account: Option<&'a AccountRisk>) -> Option<&'a Limits> {
        account
            .and_then(|a| a.limits.as_ref())
            .or(self.default_limits.as_ref())
    }

    /// Checks a place, in this order: disabled, order size, notional, long, short, open
    /// orders, order rate. Changes nothing.
    pub(crate) fn check_place(&self, ask: &Ask, ts: Timestamp) -> Result<(), RejectReason> {
        let account = self.accounts.get(&ask.account);
        self.check_order(account, ask, true)?;
        let Some(limits) = self.limits_of(account) else {
            return Ok(());
        };
        let (open, used) = account.map_or((0, 0), |a| {
            (a.open_orders, a.orders_in(ts / RATE_WINDOW_NANOS))
        });
        if limits.max_open_orders.is_some_and(|max| open >= max) {
            return Err(RejectReason::MaxOpenOrders);
        }
        if limits.max_orders_per_sec.is_some_and(|max| used >= max) {
            return Err(RejectReason::MaxOrderRate);
        }
        Ok(())
    }

    /// Checks an amend to `ask.size` (from an open size `ask.size - ask.added` when it grows):
    /// size and position limits only when the size grows, notional when it grows or the price
    /// changed (`price_changed`).
    pub(crate) fn check_amend(&self, ask: &Ask, price_changed: bool) -> Result<(), RejectReason> {
        let account = self.accounts.get(&ask.account);
        if ask.added == 0 && !price_changed {
            return match account.is_some_and(|a| a.disabled) {
                true => Err(RejectReason::AccountDisabled),
                false => Ok(()),
            };
        }
        self.check_order(account, ask, ask.added > 0)
    }

    /// Disabled, then the per-instrument limits: size (if `size_check`), notional, position.
    fn check_order(
        &self,
        account: Option<&AccountRisk>,
        ask: &Ask,
        size_check: bool,
    ) -> Result<(), RejectReason> {
        use RejectReason::*;
        if account.is_some_and(|a| a.disabled) {
            return Err(AccountDisabled);
        }
        let Some(limits) = self
            .limits_of(account)
            .and_then(|l| l.instrument(ask.instrument))
        else {
            return Ok(());
        };
        if size_check && limits.max_order_lots.is_some_and(|max| ask.size > max) {
            return Err(MaxOrderSize);
        }
        if let Some(max) = limits.max_order_notional {
            // Prices are positive (the band's low edge is at least 1 tick); i64 × u64 fits u128.
            let notional = ask.worst_price.unsigned_abs() as u128 * ask.size as u128;
            if notional > max {
                return Err(MaxOrderNotional);
            }
        }
        if ask.added == 0 {
            return Ok(());
        }
        let e = self
            .exposures
            .get(&(ask.account, ask.instrument))
            .copied()
            .unwrap_or_default();
        let added = ask.added as i128;
        match ask.side {
            Side::Buy => {
                if let Some(max) = limits.max_long_lots {
                    if e.net + e.open_buy + added > max as i128 {
                        return Err(MaxPositionLong);
                    }
                }
            }
            Side::Sell => {
                if let Some(max) = limits.max_short_lots {
                    if e.net - e.open_sell - added < -(max as i128) {
                        return Err(MaxPositionShort);
                    }
                }
            }
        }
        Ok(())
    }

    /// A new live order: one more open order, its size open on its side, and (for a place,
    /// `ts` given) one more order in the rate window.
    pub(crate) fn opened(
        &mut self,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        size: Lots,
        ts: Option<Timestamp>,
    ) {
        let a = self.accounts.entry(account).or_default();
        a.open_orders += 1;
        if let Some(ts) = ts {
            let sec = ts / RATE_WINDOW_NANOS;
            a.window_orders = a.orders_in(sec) + 1;
            a.window_sec = sec;
        }
        let e = self.exposures.entry((account, instrument)).or_default();
        *e.open_mut(side) += size as i128;
    }

    /// An order's open size changed without a trade (amend, self-trade decrement).
    pub(crate) fn resized(
        &mut self,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        from: Lots,
        to: Lots,
    ) {
        if let Some(e) = self.exposures.get_mut(&(account, instrument)) {
            *e.open_mut(side) += to as i128 - from as i128;
        }
    }

    /// A fill of `size` lots on `side`: open size becomes position.
    pub(crate) fn filled(
        &mut self,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        size: Lots,
    ) {
        if let Some(e) = self.exposures.get_mut(&(account, instrument)) {
            let size = size as i128;
            *e.open_mut(side) -= size;
            e.net += match side {
                Side::Buy => size,
                Side::Sell => -size,
            };
        }
    }

    /// An order ended with `remaining` lots unfilled.
    pub(crate) fn closed(
        &mut self,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        remaining: Lots,
    ) {
        if let Some(e) = self.exposures.get_mut(&(account, instrument)) {
            *e.open_mut(side) -= remaining as i128;
        }
        if let Some(a) = self.accounts.get_mut(&account) {
            a.open_orders -= 1;
        }
    }

    /// Net position of `account` on `instrument` (0 while risk is off).
    pub(crate) fn net(&self, account: AccountId, instrument: InstrumentId) -> i128 {
        self.exposures
            .get(&(account, instrument))
            .map_or(0, |e| e.net)
    }

    pub(crate) fn is_disabled(&self, account: AccountId) -> bool {
        self.accounts.get(&account).is_some_and(|a| a.disabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(side: Side, size: Lots, worst_price: Ticks) -> Ask {
        Ask {
            account: 1,
            instrument: 0,
            side,
            size,
            worst_price,
            added: size,
        }
    }

    fn risk_with(limits: InstrumentLimits) -> Risk {
        let mut risk = Risk::new(16);
        risk.active = true;
        risk.default_limits = Some(Limits {
            instruments: vec![(0, limits)],
            ..Limits::default()
        });
        risk
    }

    #[test]
    fn limits_on_an_instrument_are_found_by_binary_search() {
        let l = |n| InstrumentLimits {
            max_order_lots: Some(n),
            ..InstrumentLimits::default()
        };
        let limits = Limits {
            instruments: vec![(1, l(1)), (4, l(4)), (9, l(9))],
            ..Limits::default()
        };
        assert_eq!(limits.instrument(4), Some(&l(4)));
        assert_eq!(limits.instrument(5), None);
        assert_eq!(limits.validate(10), Ok(()));
        assert_eq!(limits.validate(9), Err(RejectReason::UnknownInstrument));
        let unsorted = Limits {
            instruments: vec![(4, l(4)), (4, l(4))],
            ..Limits::default()
        };
        assert_eq!(unsorted.validate(10), Err(RejectReason::InvalidLimits));
    }

    #[test]
    fn the_notional_of_the_largest_price_and_size_does_not_overflow() {
        let risk = risk_with(InstrumentLimits {
            max_order_notional: Some(u128::MAX - 1),
            ..InstrumentLimits::default()
        });
        assert_eq!(
            risk.check_place(&ask(Side::Buy, u64::MAX, i64::MAX), 0),
            Ok(())
        );
    }

    #[test]
    fn open_buys_count_against_the_long_limit_until_they_fill_or_close() {
        let mut risk = risk_with(InstrumentLimits {
            max_long_lots: Some(10),
            ..InstrumentLimits::default()
        });
        risk.opened(1, 0, Side::Buy, 6, Some(0));
        assert_eq!(
            risk.check_place(&ask(Side::Buy, 5, 100), 0),
            Err(RejectReason::MaxPositionLong)
        );
        assert_eq!(risk.check_place(&ask(Side::Buy, 4, 100), 0), Ok(()));
        // Filled: the position is the same worst case.
        risk.filled(1, 0, Side::Buy, 6);
        assert_eq!(risk.net(1, 0), 6);
        assert_eq!(
            risk.check_place(&ask(Side::Buy, 5, 100), 0),
            Err(RejectReason::MaxPositionLong)
        );
        // Sells never count against the long limit.
        assert_eq!(risk.check_place(&ask(Side::Sell, 50, 100), 0), Ok(()));
    }

    #[test]
    fn the_rate_window_is_the_calendar_second_of_the_timestamp() {
        let mut risk = Risk::new(16);
        risk.active = true;
        risk.default_limits = Some(Limits {
            max_orders_per_sec: Some(2),
            ..Limits::default()
        });
        let last_ns_of_second_1 = 2 * RATE_WINDOW_NANOS - 1;
        for ts in [RATE_WINDOW_NANOS, last_ns_of_second_1] {
            assert_eq!(risk.check_place(&ask(Side::Buy, 1, 1), ts), Ok(()));
            risk.opened(1, 0, Side::Buy, 1, Some(ts));
        }
        assert_eq!(
            risk.check_place(&ask(Side::Buy, 1, 1), last_ns_of_second_1),
            Err(RejectReason::MaxOrderRate)
        );
        assert_eq!(
            risk.check_place(&ask(Side::Buy, 1, 1), 2 * RATE_WINDOW_NANOS),
            Ok(())
        );
    }
}
