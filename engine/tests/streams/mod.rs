//! Random command streams for the property tests: proptest strategies for scenarios of every
//! kind of command (one to three instruments, a few accounts, sessions and client ids, prices
//! clustered around the reference price so orders cross often, occasional invalid values,
//! stops, icebergs, GTD orders with advancing timestamps, heartbeats, halts, instruments added
//! mid-stream, small order pools), and the input types they generate.
//!
//! A cancel or an amend names its order through a [`Target`], resolved against the live state
//! when the step runs, so a harness decides what "a live order" means (the reference's list, or
//! the engine's own).

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::sample::Index;
use rust_decimal::Decimal;
use ticker_engine::*;

/// Every generated instrument has its reference price at this many ticks.
pub const CENTRE: Ticks = 100;
/// An order id no engine and no reference ever assigns.
pub const NO_SUCH_ORDER: OrderId = OrderId(u64::MAX);

#[derive(Clone, Debug)]
pub struct Scenario {
    pub config: EngineConfig,
    pub instruments: usize,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug)]
pub struct Step {
    /// Time advanced before the command.
    pub dt: u64,
    pub action: Action,
}

/// Which order a cancel or amend names; resolved against the live state when it runs.
#[derive(Clone, Debug)]
pub enum Target {
    /// One of the live orders.
    Live(Index),
    /// Any order ever accepted (most are finished by then).
    Any(Index),
    Client(ClientOrderId),
    /// An id nobody ever had.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct OrderCommand {
    pub target: Target,
    /// The account sending the command when the order's owner is not used.
    pub account: AccountId,
    /// Send it from `account` even when the owner is known (usually `not_owner`).
    pub foreign: bool,
}

#[derive(Clone, Debug)]
pub enum Action {
    /// A place whose GTD expiry is `expiry_in` after the command's timestamp.
    Place(Place, i64),
    Cancel(OrderCommand),
    Amend {
        order: OrderCommand,
        price: Option<Ticks>,
        size: Option<Lots>,
        trigger: Option<Ticks>,
        /// Drop the changes the named order cannot take (a price of a market order, a trigger
        /// of an order that is not an armed stop), so most amends get past validation.
        fit: bool,
    },
    MassCancel(MassCancel),
    SessionClosed(SessionId),
    Halt(InstrumentId),
    Resume(InstrumentId),
    AddInstrument(InstrumentSpec),
    Heartbeat,
    /// Risk: an account's limits (account 0: the default set).
    SetLimits(AccountId, Option<Limits>),
    DisableAccount(AccountId),
    EnableAccount(AccountId),
}

pub fn dec(units: i64, scale: u32) -> Decimal {
    Decimal::new(units, scale)
}

/// Instrument `k` of a scenario: different grids, sizes and bands, all centred on `CENTRE` ticks.
pub fn instrument_spec(k: usize) -> InstrumentSpec {
    match k % 3 {
        // ticks 0.01, lots 1, sizes 1..=60, band ±10% = ticks 90..=110
        0 => InstrumentSpec {
            symbol: format!("I{k}"),
            tick_size: dec(1, 2),
            lot_size: dec(1, 0),
            min_size: dec(1, 0),
            max_size: dec(60, 0),
            reference_price: dec(100, 2),
            band: dec(10, 2),
        },
        // ticks 0.5, lots 0.1, sizes 2..=50 lots, band ±5% = ticks 95..=105
        1 => InstrumentSpec {
            symbol: format!("I{k}"),
            tick_size: dec(5, 1),
            lot_size: dec(1, 1),
            min_size: dec(2, 1),
            max_size: dec(5, 0),
            reference_price: dec(50, 0),
            band: dec(5, 2),
        },
        // ticks 1, lots 1, sizes 1..=100, band ±20% = ticks 80..=120
        _ => InstrumentSpec {
            symbol: format!("I{k}"),
            tick_size: dec(1, 0),
            lot_size: dec(1, 0),
            min_size: dec(1, 0),
            max_size: dec(100, 0),
            reference_price: dec(100, 0),
            band: dec(20, 2),
        },
    }
}

pub fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}

pub fn account() -> impl Strategy<Value = AccountId> {
    prop_oneof![60 => 1u64..=4, 1 => Just(0)]
}

pub fn instrument(n: u32) -> impl Strategy<Value = InstrumentId> {
    prop_oneof![60 => 0..n, 1 => Just(n)]
}

/// Mostly near the centre so orders cross; sometimes outside the bands; rarely not positive.
pub fn price() -> impl Strategy<Value = Ticks> {
    prop_oneof![
        40 => CENTRE - 4..=CENTRE + 4,
        3 => CENTRE - 25..=CENTRE + 25,
        1 => -2..=0i64,
    ]
}

pub fn size() -> impl Strategy<Value = Lots> {
    prop_oneof![50 => 1u64..=12, 4 => 13u64..=45, 1 => Just(0), 1 => 46u64..=150]
}

pub fn stp() -> impl Strategy<Value = SelfTradePrevention> {
    prop_oneof![
        Just(SelfTradePrevention::CancelTaker),
        Just(SelfTradePrevention::CancelMaker),
        Just(SelfTradePrevention::CancelBoth),
        Just(SelfTradePrevention::DecrementAndCancel),
    ]
}

pub fn place(n: u32) -> impl Strategy<Value = Action> {
    let who = (
        account(),
        0u64..=3,
        prop_oneof![3 => Just(0u64), 2 => 1u64..=6],
    );
    let order_type = prop_oneof![
        12 => Just(OrderType::Limit),
        2 => Just(OrderType::Market),
        2 => Just(OrderType::StopMarket),
        3 => Just(OrderType::StopLimit),
    ];
    let tif = prop_oneof![
        14 => Just(TimeInForce::Gtc),
        3 => Just(TimeInForce::Ioc),
        2 => Just(TimeInForce::Fok),
        3 => Just(TimeInForce::Gtd),
    ];
    // Stop triggers on the far side of the centre, where they are more likely to arm.
    let trigger_offset = prop_oneof![20 => -1i64..=6, 2 => -20i64..=20, 1 => Just(-200i64)];
    let what = (
        instrument(n),
        side(),
        order_type,
        price(),
        trigger_offset,
        size(),
    );
    let how = (
        tif,
        prop_oneof![10 => 1i64..=60, 1 => -5i64..=0],
        prop::bool::weighted(0.12),
        prop_oneof![8 => Just(0u64), 3 => 1u64..=5, 1 => 0u64..=30],
        stp(),
        prop::bool::weighted(0.08),
    );
    (who, what, how).prop_map(
        |(
            (account, session, client_id),
            (instrument, side, order_type, price, trigger_offset, size),
            (mut tif, expiry_in, post_only, display, stp, keep_invalid),
        )| {
            // Mostly orders that make sense, so most of them reach the book.
            let market = matches!(order_type, OrderType::Market | OrderType::StopMarket);
            if market && !keep_invalid && matches!(tif, TimeInForce::Gtc | TimeInForce::Gtd) {
                tif = TimeInForce::Ioc;
            }
            let immediate = matches!(tif, TimeInForce::Ioc | TimeInForce::Fok);
            let display = match keep_invalid {
                true => display,
                false if market || immediate => 0,
                false => display.min(size),
            };
            let trigger = match side {
                Side::Buy => CENTRE + trigger_offset,
                Side::Sell => CENTRE - trigger_offset,
            };
            let place = Place {
                account,
                session,
                client_id,
                instrument,
                side,
                order_type,
                price,
                trigger,
                size,
                tif,
                expiry: 0,
                post_only: post_only && (keep_invalid || order_type == OrderType::Limit),
                display,
                stp,
            };
            Action::Place(place, expiry_in)
        },
    )
}

pub fn order_command() -> impl Strategy<Value = OrderCommand> {
    let target = prop_oneof![
        14 => any::<Index>().prop_map(Target::Live),
        2 => any::<Index>().prop_map(Target::Any),
        2 => (0u64..=6).prop_map(Target::Client),
        1 => Just(Target::Unknown),
    ];
    (target, 1u64..=4, prop::bool::weighted(0.08)).prop_map(|(target, account, foreign)| {
        OrderCommand {
            target,
            account,
            foreign,
        }
    })
}

pub fn amend() -> impl Strategy<Value = Action> {
    (
        order_command(),
        prop::option::weighted(0.5, price()),
        prop::option::weighted(
            0.6,
            prop_oneof![20 => 1u64..=12, 1 => Just(0), 1 => 13u64..=80],
        ),
        prop::option::weighted(0.3, CENTRE - 8..=CENTRE + 8),
        prop::bool::weighted(0.85),
    )
        .prop_map(|(order, price, size, trigger, fit)| Action::Amend {
            order,
            price,
            size,
            trigger,
            fit,
        })
}

/// Limits small enough for the generated orders to hit (sizes 1-12 lots around 100 ticks),
/// on instruments `0..=n` (`n` itself unknown unless added mid-stream), sometimes out of order.
pub fn limits(n: u32) -> impl Strategy<Value = Limits> {
    let per_instrument = (
        prop::option::weighted(0.4, 1u64..=15),
        prop::option::weighted(0.3, 100u128..=1500),
        prop::option::weighted(0.5, 0u64..=40),
        prop::option::weighted(0.5, 0u64..=40),
    )
        .prop_map(|(lots, notional, long, short)| InstrumentLimits {
            max_order_lots: lots,
            max_order_notional: notional,
            max_long_lots: long,
            max_short_lots: short,
        });
    (
        prop::option::weighted(0.3, 1u32..=8),
        prop::option::weighted(0.3, 2u32..=30),
        prop::collection::vec((0..=n, per_instrument), 0..=3),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(open, rate, mut instruments, tidy)| {
            if tidy {
                instruments.sort_by_key(|&(i, _)| i);
                instruments.dedup_by_key(|&mut (i, _)| i);
            }
            Limits {
                max_open_orders: open,
                max_orders_per_sec: rate,
                instruments,
            }
        })
}

/// Risk commands: limits for an account or the default set, the kill switch on and off.
pub fn risk_action(n: u32) -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (prop_oneof![3 => 1u64..=4, 1 => Just(0)], prop::option::weighted(0.9, limits(n)))
            .prop_map(|(account, limits)| Action::SetLimits(account, limits)),
        1 => account().prop_map(Action::DisableAccount),
        2 => account().prop_map(Action::EnableAccount),
    ]
}

pub fn action(n: u32) -> impl Strategy<Value = Action> {
    let new_instrument = n as usize;
    prop_oneof![
        45 => place(n),
        5 => order_command().prop_map(Action::Cancel),
        10 => amend(),
        2 => (account(), prop::option::of(0..=n), prop::option::of(side())).prop_map(
            |(account, instrument, side)| Action::MassCancel(MassCancel { account, instrument, side })
        ),
        2 => (0u64..=3).prop_map(Action::SessionClosed),
        3 => Just(Action::Heartbeat),
        1 => (0..=n).prop_map(Action::Halt),
        8 => (0..=n).prop_map(Action::Resume),
        1 => prop_oneof![
            Just(instrument_spec(0)), // a symbol in use
            Just(instrument_spec(new_instrument)),
            Just(InstrumentSpec { band: Decimal::ZERO, ..instrument_spec(7) }),
        ]
        .prop_map(Action::AddInstrument),
        2 => risk_action(n),
    ]
}

/// Scenarios whose order pool mostly has room (4,096 orders) and sometimes holds a handful.
pub fn scenario() -> impl Strategy<Value = Scenario> {
    scenario_with(prop_oneof![4 => Just(4096usize), 1 => 3usize..=12])
}

/// Scenarios with an order pool of `order_capacity` orders: small ones reject places with
/// `capacity_exhausted` and recycle slots all the time.
pub fn scenario_with(
    order_capacity: impl Strategy<Value = usize> + Clone,
) -> impl Strategy<Value = Scenario> {
    (1usize..=3).prop_flat_map(move |instruments| {
        let n = instruments as u32;
        let config = (
            order_capacity.clone(),
            prop_oneof![2 => Just(1usize << 18), 1 => Just(5usize), 1 => Just(16usize)],
            prop_oneof![Just(instruments), Just(8)],
            any::<bool>(),
        )
            .prop_map(
                |(order_capacity, ladder_ticks, max_instruments, prefault)| EngineConfig {
                    order_capacity,
                    max_instruments,
                    ladder_ticks,
                    index_capacity: 16,
                    prefault,
                    shard: Shard::SOLE,
                },
            );
        // Now and then a second passes (an order-rate window; every GTD order expires).
        let dt = prop_oneof![30 => 0u64..3, 10 => 3u64..40, 1 => Just(1_000_000_000u64)];
        let step = (dt, action(n)).prop_map(|(dt, action)| Step { dt, action });
        (config, prop::collection::vec(step, 1..200)).prop_map(move |(config, steps)| Scenario {
            config,
            instruments,
            steps,
        })
    })
}

/// Calls `f` on every order id an event names (the order's own, a trade's two).
pub fn each_order_id(kind: &mut EventKind, mut f: impl FnMut(&mut OrderId)) {
    match kind {
        EventKind::PlaceAccepted { order, .. } => f(&mut order.order_id),
        EventKind::Accepted { order_id, .. }
        | EventKind::Rejected { order_id, .. }
        | EventKind::OrderRested { order_id, .. }
        | EventKind::StopArmed { order_id, .. }
        | EventKind::StopTriggered { order_id, .. }
        | EventKind::OrderAmended { order_id, .. }
        | EventKind::OrderDone { order_id, .. } => f(order_id),
        EventKind::Trade {
            taker_order,
            maker_order,
            ..
        } => {
            f(taker_order);
            f(maker_order);
        }
        EventKind::LevelChanged { .. }
        | EventKind::InstrumentAdded { .. }
        | EventKind::TradingStatus { .. }
        | EventKind::AccountStatus { .. } => {}
    }
}
