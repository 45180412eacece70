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
use crate::shard::Shard;
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
    #[inline]
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
    /// Position and open sizes per instrument, indexed by instrument id (grown when the
    /// account first trades an instrument, never per order). Kept in the account's entry so
    /// that each order event costs one hash lookup, not two.
    pub exposures: Vec<Position>,
}

impl AccountRisk {
    #[inline]
    fn orders_in(&self, sec: u64) -> u32 {
        if self.window_sec == sec {
            self.window_orders
        } else {
            0
        }
    }

    /// A new live order: one more open order, its size open on its side, and (for a place,
    /// `ts` given) one more order in the rate window.
    #[inline]
    fn open(&mut self, instrument: InstrumentId, side: Side, size: Lots, ts: Option<Timestamp>) {
        self.open_orders += 1;
        if let Some(ts) = ts {
            let sec = ts / RATE_WINDOW_NANOS;
            self.window_orders = self.orders_in(sec) + 1;
            self.window_sec = sec;
        }
        *self.exposure_mut(instrument).open_mut(side) += size as i128;
    }

    #[inline]
    pub(crate) fn exposure_mut(&mut self, instrument: InstrumentId) -> &mut Position {
        let i = instrument as usize;
        if i >= self.exposures.len() {
            self.exposures.resize(i + 1, Position::default());
        }
        &mut self.exposures[i]
    }
}

/// An account's position on one instrument, in lots: net from fills (long positive), and the
/// open size of its live orders on each side. Wide integers so that no sum of `u64` sizes can
/// overflow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub net: i128,
    pub open_buy: i128,
    pub open_sell: i128,
}

impl Position {
    #[inline]
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
    /// Account-wide limits count this shard's share ([`Shard::share`]).
    pub shard: Shard,
    pub default_limits: Option<Limits>,
    pub accounts: FxHashMap<AccountId, AccountRisk>,
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
    pub(crate) fn new(capacity: usize, shard: Shard) -> Self {
        let hasher = rustc_hash::FxBuildHasher;
        Risk {
            active: false,
            shard,
            default_limits: None,
            accounts: FxHashMap::with_capacity_and_hasher(capacity, hasher),
        }
    }

    /// Checks a place (in the order of [`check_place`]) and, if it passes and `commit`, counts
    /// it: one more open order, its size open on its side, one more order in the rate window.
    /// One hash lookup for an account seen before. Changes nothing when it fails.
    #[inline]
    pub(crate) fn admit_place(
        &mut self,
        ask: &Ask,
        ts: Timestamp,
        commit: bool,
    ) -> Result<(), RejectReason> {
        let default = self.default_limits.as_ref();
        if let Some(a) = self.accounts.get_mut(&ask.account) {
            check_place(self.shard, default, Some(a), ask, ts)?;
            if commit {
                a.open(ask.instrument, ask.side, ask.size, Some(ts));
            }
            return Ok(());
        }
        check_place(self.shard, default, None, ask, ts)?;
        if commit {
            // The account's first order since risk is on.
            let a = self.accounts.entry(ask.account).or_default();
            a.open(ask.instrument, ask.side, ask.size, Some(ts));
        }
        Ok(())
    }

    /// Checks an amend to `ask.size` (from an open size `ask.size - ask.added` when it grows):
    /// size and position limits only when the size grows, notional when it grows or the price
    /// changed (`price_changed`). Changes nothing.
    pub(crate) fn check_amend(&self, ask: &Ask, price_changed: bool) -> Result<(), RejectReason> {
        let account = self.accounts.get(&ask.account);
        if ask.added == 0 && !price_changed {
            return match account.is_some_and(|a| a.disabled) {
                true => Err(RejectReason::AccountDisabled),
                false => Ok(()),
            };
        }
        check_order(self.default_limits.as_ref(), account, ask, ask.added > 0)
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
        a.open(instrument, side, size, ts);
    }

    /// The account's exposure on `instrument`, if it has one.
    #[inline]
    fn exposure_mut(
        &mut self,
        account: AccountId,
        instrument: InstrumentId,
    ) -> Option<&mut Position> {
        let a = self.accounts.get_mut(&account)?;
        a.exposures.get_mut(instrument as usize)
    }

    /// An order's open size changed without a trade (amend, self-trade decrement).
    #[inline]
    pub(crate) fn resized(
        &mut self,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        from: Lots,
        to: Lots,
    ) {
        if let Some(e) = self.exposure_mut(account, instrument) {
            *e.open_mut(side) += to as i128 - from as i128;
        }
    }

    /// Fills of `size` lots on `side`: open size becomes position. `done`: they filled the
    /// order completely, so it is no longer open (its `OrderDone { filled }` leaves risk alone:
    /// one lookup for both).
    #[inline]
    pub(crate) fn filled(
        &mut self,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        size: Lots,
        done: bool,
    ) {
        let Some(a) = self.accounts.get_mut(&account) else {
            return;
        };
        a.open_orders -= done as u32;
        if let Some(e) = a.exposures.get_mut(instrument as usize) {
            let size = size as i128;
            *e.open_mut(side) -= size;
            e.net += match side {
                Side::Buy => size,
                Side::Sell => -size,
            };
        }
    }

    /// An order ended with `remaining` lots unfilled.
    #[inline]
    pub(crate) fn closed(
        &mut self,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        remaining: Lots,
    ) {
        if let Some(a) = self.accounts.get_mut(&account) {
            a.open_orders -= 1;
            if let Some(e) = a.exposures.get_mut(instrument as usize) {
                *e.open_mut(side) -= remaining as i128;
            }
        }
    }

    /// Position of `account` on `instrument` (all zero while risk is off).
    pub(crate) fn position(&self, account: AccountId, instrument: InstrumentId) -> Position {
        self.accounts
            .get(&account)
            .and_then(|a| a.exposures.get(instrument as usize))
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn net(&self, account: AccountId, instrument: InstrumentId) -> i128 {
        self.position(account, instrument).net
    }

    pub(crate) fn open_orders(&self, account: AccountId) -> u32 {
        self.accounts.get(&account).map_or(0, |a| a.open_orders)
    }

    pub(crate) fn is_disabled(&self, account: AccountId) -> bool {
        self.accounts.get(&account).is_some_and(|a| a.disabled)
    }
}

/// The limits that apply to an account: its own, else the default set.
#[inline]
fn limits_of<'a>(
    default: Option<&'a Limits>,
    account: Option<&'a AccountRisk>,
) -> Option<&'a Limits> {
    account.and_then(|a| a.limits.as_ref()).or(default)
}

/// Checks a place, in this order: disabled, order size, notional, long, short, open orders,
/// order rate.
#[inline]
fn check_place(
    shard: Shard,
    default: Option<&Limits>,
    account: Option<&AccountRisk>,
    ask: &Ask,
    ts: Timestamp,
) -> Result<(), RejectReason> {
    check_order(default, account, ask, true)?;
    let Some(limits) = limits_of(default, account) else {
        return Ok(());
    };
    let (open, used) = account.map_or((0, 0), |a| {
        (a.open_orders, a.orders_in(ts / RATE_WINDOW_NANOS))
    });
    if limits
        .max_open_orders
        .is_some_and(|max| open >= shard.share(max))
    {
        return Err(RejectReason::MaxOpenOrders);
    }
    if limits
        .max_orders_per_sec
        .is_some_and(|max| used >= shard.share(max))
    {
        return Err(RejectReason::MaxOrderRate);
    }
    Ok(())
}

/// Disabled, then the per-instrument limits: size (if `size_check`), notional, position.
#[inline]
fn check_order(
    default: Option<&Limits>,
    account: Option<&AccountRisk>,
    ask: &Ask,
    size_check: bool,
) -> Result<(), RejectReason> {
    use RejectReason::*;
    if account.is_some_and(|a| a.disabled) {
        return Err(AccountDisabled);
    }
    let Some(limits) = limits_of(default, account).and_then(|l| l.instrument(ask.instrument))
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
    let e = account
        .and_then(|a| a.exposures.get(ask.instrument as usize))
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
        let mut risk = Risk::new(16, Shard::SOLE);
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
        let mut risk = risk_with(InstrumentLimits {
            max_order_notional: Some(u128::MAX - 1),
            ..InstrumentLimits::default()
        });
        assert_eq!(
            risk.admit_place(&ask(Side::Buy, u64::MAX, i64::MAX), 0, false),
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
            risk.admit_place(&ask(Side::Buy, 5, 100), 0, false),
            Err(RejectReason::MaxPositionLong)
        );
        assert_eq!(risk.admit_place(&ask(Side::Buy, 4, 100), 0, false), Ok(()));
        // Filled: the position is the same worst case.
        risk.filled(1, 0, Side::Buy, 6, false);
        assert_eq!(risk.net(1, 0), 6);
        assert_eq!(
            risk.admit_place(&ask(Side::Buy, 5, 100), 0, false),
            Err(RejectReason::MaxPositionLong)
        );
        // Sells never count against the long limit.
        assert_eq!(
            risk.admit_place(&ask(Side::Sell, 50, 100), 0, false),
            Ok(())
        );
    }

    #[test]
    fn the_rate_window_is_the_calendar_second_of_the_timestamp() {
        let mut risk = Risk::new(16, Shard::SOLE);
        risk.active = true;
        risk.default_limits = Some(Limits {
            max_orders_per_sec: Some(2),
            ..Limits::default()
        });
        let last_ns_of_second_1 = 2 * RATE_WINDOW_NANOS - 1;
        for ts in [RATE_WINDOW_NANOS, last_ns_of_second_1] {
            assert_eq!(risk.admit_place(&ask(Side::Buy, 1, 1), ts, false), Ok(()));
            risk.opened(1, 0, Side::Buy, 1, Some(ts));
        }
        assert_eq!(
            risk.admit_place(&ask(Side::Buy, 1, 1), last_ns_of_second_1, false),
            Err(RejectReason::MaxOrderRate)
        );
        assert_eq!(
            risk.admit_place(&ask(Side::Buy, 1, 1), 2 * RATE_WINDOW_NANOS, false),
            Ok(())
        );
    }

    // ---- the engine with risk ----

    use crate::command::*;
    use crate::event::*;
    use crate::instrument::InstrumentSpec;
    use crate::Engine;

    /// Instrument `k`, "R{k}", of whole units ([`crate::instrument::whole_units`]).
    fn spec(k: usize) -> InstrumentSpec {
        crate::instrument::whole_units(&format!("R{k}"))
    }

    struct Venue {
        engine: Engine,
        ts: Timestamp,
    }

    impl Venue {
        fn new(instruments: usize) -> Self {
            let mut v = Venue {
                engine: Engine::default(),
                ts: 0,
            };
            for k in 0..instruments {
                v.send(CommandKind::AddInstrument(Box::new(spec(k))));
            }
            v
        }

        fn send_at(&mut self, ts: Timestamp, kind: CommandKind) -> Vec<Event> {
            self.ts = ts;
            self.engine.apply_collect(&Command::new(ts, ts, kind))
        }

        fn send(&mut self, kind: CommandKind) -> Vec<Event> {
            self.send_at(self.ts + 1, kind)
        }

        fn place(&mut self, p: Place) -> Result<OrderId, RejectReason> {
            outcome(&self.send(CommandKind::Place(p)))
        }

        fn amend(
            &mut self,
            account: AccountId,
            id: OrderId,
            price: Option<Ticks>,
            size: Option<Lots>,
        ) -> Result<OrderId, RejectReason> {
            let a = Amend {
                account,
                order: OrderRef::Id(id),
                price,
                size,
                trigger: None,
            };
            outcome(&self.send(CommandKind::Amend(a)))
        }

        fn set_limits(
            &mut self,
            account: AccountId,
            limits: Option<Limits>,
        ) -> Result<OrderId, RejectReason> {
            let kind = CommandKind::SetLimits {
                account,
                limits: limits.map(Box::new),
            };
            outcome(&self.send(kind))
        }

        fn on_instrument_0(&mut self, account: AccountId, l: InstrumentLimits) {
            let limits = Limits {
                instruments: vec![(0, l)],
                ..Limits::default()
            };
            self.set_limits(account, Some(limits)).unwrap();
        }
    }

    /// The outcome of a command: the placed order's id (or the amended order's), or the reason.
    fn outcome(events: &[Event]) -> Result<OrderId, RejectReason> {
        match &events.first().expect("an outcome").kind {
            EventKind::PlaceAccepted { order, .. } => Ok(order.order_id),
            EventKind::Accepted { order_id, .. } => Ok(*order_id),
            EventKind::Rejected { reason, .. } => Err(*reason),
            other => panic!("not an outcome: {other:?}"),
        }
    }

    fn stop(
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        trigger: Ticks,
        size: Lots,
    ) -> Place {
        Place {
            order_type: OrderType::StopMarket,
            tif: TimeInForce::Ioc,
            trigger,
            ..Place::market(account, instrument, side, size)
        }
    }

    #[test]
    fn an_order_above_max_order_lots_is_rejected_with_max_order_size() {
        let mut v = Venue::new(1);
        v.on_instrument_0(
            1,
            InstrumentLimits {
                max_order_lots: Some(10),
                ..Default::default()
            },
        );
        assert_eq!(
            v.place(Place::limit(1, 0, Side::Buy, 100, 11)),
            Err(RejectReason::MaxOrderSize)
        );
        assert!(v.place(Place::limit(1, 0, Side::Buy, 100, 10)).is_ok());
        // Another account has no limits.
        assert!(v.place(Place::limit(2, 0, Side::Buy, 100, 11)).is_ok());
    }

    #[test]
    fn notional_is_size_times_limit_price_or_the_band_edge_for_market_orders() {
        let mut v = Venue::new(1);
        v.on_instrument_0(
            1,
            InstrumentLimits {
                max_order_notional: Some(1_000),
                ..Default::default()
            },
        );
        assert!(v.place(Place::limit(1, 0, Side::Buy, 100, 10)).is_ok());
        assert_eq!(
            v.place(Place::limit(1, 0, Side::Buy, 101, 10)),
            Err(RejectReason::MaxOrderNotional)
        );
        // A market buy is valued at the band's high edge (110): 9 × 110 = 990, 10 × 110 > 1,000.
        assert!(v.place(Place::market(1, 0, Side::Buy, 9)).is_ok());
        assert_eq!(
            v.place(Place::market(1, 0, Side::Buy, 10)),
            Err(RejectReason::MaxOrderNotional)
        );
        // A market sell at the low edge (90): 11 × 90 = 990.
        assert!(v.place(Place::market(1, 0, Side::Sell, 11)).is_ok());
    }

    #[test]
    fn the_live_orders_of_every_instrument_count_toward_max_open_orders() {
        let mut v = Venue::new(2);
        let limits = Limits {
            max_open_orders: Some(2),
            ..Limits::default()
        };
        v.set_limits(1, Some(limits)).unwrap();
        let first = v.place(Place::limit(1, 0, Side::Buy, 99, 1)).unwrap();
        v.place(stop(1, 1, Side::Buy, 105, 1)).unwrap();
        assert_eq!(
            v.place(Place::limit(1, 1, Side::Buy, 99, 1)),
            Err(RejectReason::MaxOpenOrders)
        );
        v.send(CommandKind::Cancel(Cancel {
            account: 1,
            order: OrderRef::Id(first),
        }));
        assert!(v.place(Place::limit(1, 1, Side::Buy, 99, 1)).is_ok());
    }

    #[test]
    fn open_buys_and_armed_stops_count_toward_the_long_limit_in_the_worst_case() {
        let mut v = Venue::new(1);
        v.on_instrument_0(
            1,
            InstrumentLimits {
                max_long_lots: Some(10),
                ..Default::default()
            },
        );
        v.place(Place::limit(1, 0, Side::Buy, 95, 4)).unwrap();
        v.place(stop(1, 0, Side::Buy, 105, 4)).unwrap();
        assert_eq!(
            v.place(Place::limit(1, 0, Side::Buy, 95, 3)),
            Err(RejectReason::MaxPositionLong)
        );
        assert!(v.place(Place::limit(1, 0, Side::Buy, 95, 2)).is_ok());
        // Sells never count against the long limit, and do not free room until they fill.
        assert!(v.place(Place::limit(1, 0, Side::Sell, 105, 50)).is_ok());
        assert_eq!(
            v.place(Place::limit(1, 0, Side::Buy, 95, 1)),
            Err(RejectReason::MaxPositionLong)
        );
    }

    #[test]
    fn fills_turn_open_size_into_position_and_a_short_is_bounded_too() {
        let mut v = Venue::new(1);
        v.on_instrument_0(
            1,
            InstrumentLimits {
                max_long_lots: Some(10),
                max_short_lots: Some(3),
                ..Default::default()
            },
        );
        v.place(Place::limit(2, 0, Side::Sell, 100, 10)).unwrap();
        v.place(Place::limit(1, 0, Side::Buy, 100, 6)).unwrap();
        assert_eq!(v.engine.net_position(1, 0), 6);
        assert_eq!(v.engine.net_position(2, 0), -6);
        assert_eq!(
            v.place(Place::limit(1, 0, Side::Buy, 100, 5)),
            Err(RejectReason::MaxPositionLong)
        );
        assert!(v.place(Place::limit(1, 0, Side::Buy, 100, 4)).is_ok());
        assert_eq!(v.engine.net_position(1, 0), 10);
        // Long 10 may sell 13: down to short 3, not 14.
        assert_eq!(
            v.place(Place::limit(1, 0, Side::Sell, 105, 14)),
            Err(RejectReason::MaxPositionShort)
        );
        assert!(v.place(Place::limit(1, 0, Side::Sell, 105, 13)).is_ok());
    }

    #[test]
    fn an_amend_that_raises_the_size_or_the_price_is_checked_against_the_limits() {
        let mut v = Venue::new(1);
        v.on_instrument_0(
            1,
            InstrumentLimits {
                max_order_lots: Some(8),
                max_order_notional: Some(650),
                max_long_lots: Some(12),
                ..Default::default()
            },
        );
        let a = v.place(Place::limit(1, 0, Side::Buy, 90, 5)).unwrap();
        v.place(Place::limit(1, 0, Side::Buy, 95, 6)).unwrap();
        assert_eq!(
            v.amend(1, a, None, Some(9)),
            Err(RejectReason::MaxOrderSize)
        );
        assert_eq!(
            v.amend(1, a, None, Some(7)),
            Err(RejectReason::MaxPositionLong)
        );
        assert_eq!(
            v.amend(1, a, Some(101), Some(8)),
            Err(RejectReason::MaxOrderNotional)
        );
        assert!(v.amend(1, a, None, Some(6)).is_ok());
        assert_eq!(
            v.amend(1, a, Some(110), None),
            Err(RejectReason::MaxOrderNotional)
        );
        // Decreases always pass, even below limits that were lowered since.
        v.on_instrument_0(
            1,
            InstrumentLimits {
                max_order_lots: Some(1),
                ..Default::default()
            },
        );
        assert!(v.amend(1, a, None, Some(2)).is_ok());
    }

    #[test]
    fn the_order_rate_counts_accepted_places_per_second_of_the_command_timestamp() {
        let mut v = Venue::new(1);
        let limits = Limits {
            max_orders_per_sec: Some(2),
            ..Limits::default()
        };
        v.set_limits(1, Some(limits)).unwrap();
        let second = 5 * RATE_WINDOW_NANOS;
        let place = |price| CommandKind::Place(Place::limit(1, 0, Side::Buy, price, 1));
        assert!(outcome(&v.send_at(second, place(95))).is_ok());
        // A rejected place does not count.
        assert!(outcome(&v.send_at(second + 1, place(200))).is_err());
        assert!(outcome(&v.send_at(second + 2, place(95))).is_ok());
        let last_ns = second + RATE_WINDOW_NANOS - 1;
        assert_eq!(
            outcome(&v.send_at(last_ns, place(95))),
            Err(RejectReason::MaxOrderRate)
        );
        // Other accounts have their own window.
        let other = CommandKind::Place(Place::limit(2, 0, Side::Buy, 95, 1));
        assert!(outcome(&v.send_at(last_ns, other)).is_ok());
        assert!(outcome(&v.send_at(last_ns + 1, place(95))).is_ok());
    }

    #[test]
    fn own_limits_replace_the_default_set_and_removing_them_falls_back_to_it() {
        let mut v = Venue::new(1);
        let lots = |n| Limits {
            instruments: vec![(
                0,
                InstrumentLimits {
                    max_order_lots: Some(n),
                    ..Default::default()
                },
            )],
            ..Limits::default()
        };
        v.set_limits(0, Some(lots(5))).unwrap();
        assert_eq!(
            v.place(Place::limit(3, 0, Side::Buy, 95, 6)),
            Err(RejectReason::MaxOrderSize)
        );
        v.set_limits(3, Some(Limits::default())).unwrap();
        assert!(
            v.place(Place::limit(3, 0, Side::Buy, 95, 6)).is_ok(),
            "own limits: unlimited"
        );
        v.set_limits(3, Some(lots(2))).unwrap();
        assert_eq!(
            v.place(Place::limit(3, 0, Side::Buy, 95, 3)),
            Err(RejectReason::MaxOrderSize)
        );
        assert_eq!(v.engine.limits(3), Some(&lots(2)));
        v.set_limits(3, None).unwrap();
        assert_eq!(v.engine.limits(3), Some(&lots(5)));
        assert!(v.place(Place::limit(3, 0, Side::Buy, 95, 5)).is_ok());
        v.set_limits(0, None).unwrap();
        assert_eq!(v.engine.limits(3), None);
    }

    #[test]
    fn limits_must_name_known_instruments_in_ascending_order() {
        let mut v = Venue::new(2);
        let on = |ids: &[InstrumentId]| Limits {
            instruments: ids
                .iter()
                .map(|&i| (i, InstrumentLimits::default()))
                .collect(),
            ..Limits::default()
        };
        assert_eq!(
            v.set_limits(1, Some(on(&[1, 0]))),
            Err(RejectReason::InvalidLimits)
        );
        assert_eq!(
            v.set_limits(1, Some(on(&[1, 1]))),
            Err(RejectReason::InvalidLimits)
        );
        assert_eq!(
            v.set_limits(1, Some(on(&[0, 2]))),
            Err(RejectReason::UnknownInstrument)
        );
        assert!(v.set_limits(1, Some(on(&[0, 1]))).is_ok());
    }

    #[test]
    fn disable_cancels_every_live_order_of_the_account_on_every_instrument_then_enable_reopens() {
        let mut v = Venue::new(2);
        let resting = v.place(Place::limit(1, 0, Side::Buy, 95, 3)).unwrap();
        let armed = v.place(stop(1, 1, Side::Sell, 92, 2)).unwrap();
        let other = v.place(Place::limit(1, 1, Side::Sell, 105, 4)).unwrap();
        let someone_else = v.place(Place::limit(2, 0, Side::Buy, 95, 1)).unwrap();
        let events = v.send(CommandKind::DisableAccount { account: 1 });
        assert!(matches!(
            events[0].kind,
            EventKind::Accepted {
                command: CommandTag::DisableAccount,
                account: 0,
                ..
            }
        ));
        assert_eq!(
            events[1].kind,
            EventKind::AccountStatus {
                account: 1,
                disabled: true
            }
        );
        let cancelled: Vec<OrderId> = events
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::OrderDone {
                    order_id,
                    reason: DoneReason::AccountDisabled,
                    cancelled,
                    ..
                } => {
                    assert!(cancelled > 0);
                    Some(order_id)
                }
                _ => None,
            })
            .collect();
        assert_eq!(cancelled, vec![other, armed, resting], "newest first");
        assert!(events.iter().any(|e| matches!(
            e.kind,
            EventKind::LevelChanged {
                instrument: 1,
                size: 0,
                ..
            }
        )));
        assert_eq!(v.engine.live_order_count(), 1);
        assert!(v.engine.order(someone_else).is_some());
        assert!(v.engine.is_account_disabled(1));
        assert_eq!(
            v.place(Place::limit(1, 0, Side::Buy, 95, 1)),
            Err(RejectReason::AccountDisabled)
        );
        assert_eq!(
            v.place(stop(1, 1, Side::Buy, 105, 1)),
            Err(RejectReason::AccountDisabled)
        );
        let events = v.send(CommandKind::EnableAccount { account: 1 });
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1].kind,
            EventKind::AccountStatus {
                account: 1,
                disabled: false
            }
        );
        assert!(v.place(Place::limit(1, 0, Side::Buy, 95, 1)).is_ok());
    }

    #[test]
    fn the_kill_switch_needs_an_account() {
        let mut v = Venue::new(1);
        for kind in [
            CommandKind::DisableAccount { account: 0 },
            CommandKind::EnableAccount { account: 0 },
        ] {
            assert_eq!(outcome(&v.send(kind)), Err(RejectReason::InvalidAccount));
        }
        assert!(
            !v.engine.st.risk.active,
            "a rejected command changes nothing"
        );
    }

    #[test]
    fn risk_is_off_until_the_first_risk_command_which_counts_the_orders_already_live() {
        let mut v = Venue::new(1);
        v.place(Place::limit(2, 0, Side::Sell, 100, 5)).unwrap();
        v.place(Place::limit(1, 0, Side::Buy, 100, 2)).unwrap();
        v.place(Place::limit(1, 0, Side::Buy, 99, 3)).unwrap();
        assert!(!v.engine.st.risk.active);
        assert_eq!(v.engine.net_position(1, 0), 0, "nothing tracked while off");
        v.on_instrument_0(
            1,
            InstrumentLimits {
                max_long_lots: Some(5),
                ..Default::default()
            },
        );
        // The open buy of 3 counts; the position before switching on does not.
        assert_eq!(
            v.place(Place::limit(1, 0, Side::Buy, 98, 3)),
            Err(RejectReason::MaxPositionLong)
        );
        assert!(v.place(Place::limit(1, 0, Side::Buy, 98, 2)).is_ok());
    }
}
