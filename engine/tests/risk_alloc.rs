//! With pre-trade limits on, the engine still allocates nothing per order in steady state:
//! checks, position tracking and the kill switch use only the per-account entries made when an
//! account first trades an instrument.
//!
//! Its own test binary (one test) because it counts every allocation of the process.

use instrument::spec;
use std::collections::VecDeque;
use ticker_engine::*;

mod counting_alloc;
mod instrument;

/// Command `i` of a steady flow on two instruments from four accounts: resting buys and sells
/// a few ticks apart, market orders that fill against them, and cancels of the oldest live
/// order (`oldest`).
fn flow(i: u64, oldest: Option<(OrderId, AccountId)>) -> CommandKind {
    let account = 1 + i % 4;
    let instrument = (i / 4 % 2) as InstrumentId;
    let offset = (i % 5) as Ticks;
    match (i % 4, oldest) {
        (3, Some((id, owner))) => CommandKind::Cancel(Cancel {
            account: owner,
            order: OrderRef::Id(id),
        }),
        (0, _) => CommandKind::Place(Place::limit(account, instrument, Side::Buy, 95 + offset, 3)),
        (1, _) => CommandKind::Place(Place::limit(
            account,
            instrument,
            Side::Sell,
            101 + offset,
            3,
        )),
        _ => {
            let side = if i % 16 < 8 { Side::Buy } else { Side::Sell };
            CommandKind::Place(Place::market(account, instrument, side, 6))
        }
    }
}

#[test]
fn limits_on_allocate_nothing_per_order_in_steady_state() {
    const WARM_UP: u64 = 20_000;
    const MEASURED: u64 = 50_000;
    let mut engine = Engine::new(EngineConfig {
        order_capacity: 4096,
        max_instruments: 2,
        ladder_ticks: 64,
        index_capacity: 64,
        ..EngineConfig::default()
    });
    let mut events: Vec<Event> = Vec::with_capacity(1024);
    let mut ts = 0;
    let mut send = |engine: &mut Engine, kind, events: &mut Vec<Event>| {
        ts += 1;
        events.clear();
        engine.apply(&Command::new(ts, ts, kind), events);
    };
    for symbol in ["A", "B"] {
        send(
            &mut engine,
            CommandKind::AddInstrument(Box::new(spec(symbol))),
            &mut events,
        );
    }
    let generous = InstrumentLimits {
        max_order_lots: Some(100),
        max_order_notional: Some(1 << 40),
        max_long_lots: Some(1 << 40),
        max_short_lots: Some(1 << 40),
    };
    let limits = Limits {
        max_open_orders: Some(10_000),
        max_orders_per_sec: Some(u32::MAX),
        instruments: vec![(0, generous), (1, generous)],
    };
    send(
        &mut engine,
        CommandKind::SetLimits {
            account: 0,
            limits: Some(Box::new(limits)),
        },
        &mut events,
    );
    send(
        &mut engine,
        CommandKind::DisableAccount { account: 9 },
        &mut events,
    );
    let mut live: VecDeque<(OrderId, AccountId)> = VecDeque::with_capacity(4096);
    let (mut trades, mut before) = (0, 0);
    for i in 0..WARM_UP + MEASURED {
        if i == WARM_UP {
            before = counting_alloc::allocations();
        }
        let oldest = if live.len() > 200 {
            live.pop_front()
        } else {
            None
        };
        send(&mut engine, flow(i, oldest), &mut events);
        for e in &events {
            match e.kind {
                EventKind::OrderRested {
                    order_id, account, ..
                } => live.push_back((order_id, account)),
                EventKind::Trade { .. } => trades += 1,
                EventKind::Rejected { reason, .. } if reason != RejectReason::UnknownOrder => {
                    panic!("command {i} rejected: {reason}")
                }
                _ => {}
            }
        }
    }
    let allocations = counting_alloc::allocations() - before;
    assert!(trades > 10_000, "the flow trades ({trades} trades)");
    assert!(engine.net_position(1, 0) != 0 || engine.net_position(2, 1) != 0);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations while {MEASURED} commands went through with limits on"
    );
}
