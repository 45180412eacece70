//! The engine's rules as named scenarios, each small enough to check by hand.
//!
//! Every scenario trades instrument 0 ("ABC": tick 1, lot 1, sizes 1..=1000, reference price
//! 100 ticks, band ±10% = 90..=110) unless it says otherwise. Accounts are small numbers.

use instrument::spec;
use rust_decimal::Decimal;
use ticker_engine::*;

mod instrument;

const BUY: Side = Side::Buy;
const SELL: Side = Side::Sell;

/// An engine with one instrument, a clock and the events of the last command.
struct Venue {
    engine: Engine,
    ts: Timestamp,
    corr: Correlation,
    events: Vec<Event>,
}

impl Venue {
    fn new() -> Self {
        Venue::with(EngineConfig::default())
    }

    fn with(config: EngineConfig) -> Self {
        let mut v = Venue {
            engine: Engine::new(config),
            ts: 1_000,
            corr: 0,
            events: Vec::new(),
        };
        v.send(CommandKind::AddInstrument(Box::new(spec("ABC"))));
        v
    }

    /// Sends a command one nanosecond after the previous one.
    fn send(&mut self, kind: CommandKind) -> &[Event] {
        let ts = self.ts + 1;
        self.send_at(ts, kind)
    }

    fn send_at(&mut self, ts: Timestamp, kind: CommandKind) -> &[Event] {
        self.ts = ts;
        self.corr += 1;
        let cmd = Command {
            deadline: 0,
            ts,
            corr: self.corr,
            kind,
        };
        self.events = self.engine.apply_collect(&cmd);
        &self.events
    }

    /// The last command's outcome: the accepted order's id (or `NONE`), or the reject reason.
    fn outcome(&self) -> Result<OrderId, RejectReason> {
        self.events
            .iter()
            .find_map(|e| match e.kind {
                EventKind::PlaceAccepted { order, .. } => Some(Ok(order.order_id)),
                EventKind::Accepted { order_id, .. } => Some(Ok(order_id)),
                EventKind::Rejected { reason, .. } => Some(Err(reason)),
                _ => None,
            })
            .expect("every command but a heartbeat has an outcome")
    }

    fn place(&mut self, p: Place) -> Result<OrderId, RejectReason> {
        self.send(CommandKind::Place(p));
        self.outcome()
    }

    /// A GTC limit order that must be accepted.
    fn limit(&mut self, account: AccountId, side: Side, price: Ticks, size: Lots) -> OrderId {
        self.place(Place::limit(account, 0, side, price, size))
            .expect("limit order accepted")
    }

    fn cancel(&mut self, account: AccountId, order: OrderRef) -> Result<OrderId, RejectReason> {
        self.send(CommandKind::Cancel(Cancel { account, order }));
        self.outcome()
    }

    fn amend(
        &mut self,
        account: AccountId,
        id: OrderId,
        price: Option<Ticks>,
        size: Option<Lots>,
    ) -> Result<OrderId, RejectReason> {
        self.send(CommandKind::Amend(Amend {
            account,
            order: OrderRef::Id(id),
            price,
            size,
            trigger: None,
        }));
        self.outcome()
    }

    /// A price level's queue: `(order, visible, remaining)` in time priority.
    fn queue(&self, side: Side, price: Ticks) -> Vec<(OrderId, Lots, Lots)> {
        self.engine
            .level_orders(0, side, price)
            .into_iter()
            .map(|id| {
                let o = self.engine.order(id).unwrap();
                (id, o.visible, o.remaining)
            })
            .collect()
    }

    /// One side of instrument 0: `(price, visible size, orders)` best first.
    fn depth(&self, side: Side) -> Vec<(Ticks, Lots, u32)> {
        self.engine
            .book(0)
            .unwrap()
            .depth(side)
            .map(|(p, l)| (p, l.visible, l.orders))
            .collect()
    }

    /// Trades of the last command: `(price, size, maker, taker)`.
    fn trades(&self) -> Vec<(Ticks, Lots, OrderId, OrderId)> {
        self.events
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::Trade {
                    price,
                    size,
                    maker_order,
                    taker_order,
                    ..
                } => Some((price, size, maker_order, taker_order)),
                _ => None,
            })
            .collect()
    }

    /// Orders the last command ended: `(order, reason, filled, cancelled)`.
    fn done(&self) -> Vec<(OrderId, DoneReason, Lots, Lots)> {
        self.events
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::OrderDone {
                    order_id,
                    reason,
                    filled,
                    cancelled,
                    ..
                } => Some((order_id, reason, filled, cancelled)),
                _ => None,
            })
            .collect()
    }

    fn is_live(&self, id: OrderId) -> bool {
        self.engine.order(id).is_some()
    }
}

fn stop(
    account: AccountId,
    side: Side,
    order_type: OrderType,
    trigger: Ticks,
    size: Lots,
) -> Place {
    Place {
        order_type,
        trigger,
        tif: TimeInForce::Ioc,
        ..Place::limit(account, 0, side, 0, size)
    }
}

fn with_stp(p: Place, stp: SelfTradePrevention) -> Place {
    Place { stp, ..p }
}

// ---- cancels ----

#[test]
fn cancel_of_filled_order_is_rejected_with_unknown_order() {
    let mut v = Venue::new();
    let ask = v
        .place(Place {
            client_id: 7,
            ..Place::limit(1, 0, SELL, 100, 5)
        })
        .unwrap();
    let bid = v.limit(2, BUY, 100, 5);
    assert_eq!(v.trades(), vec![(100, 5, ask, bid)]);

    assert_eq!(
        v.cancel(1, OrderRef::Id(ask)),
        Err(RejectReason::UnknownOrder)
    );
    assert_eq!(
        v.cancel(1, OrderRef::Client(7)),
        Err(RejectReason::UnknownOrder)
    );
    assert_eq!(v.events.len(), 1, "a rejected cancel changes nothing");
}

#[test]
fn only_the_owner_may_cancel_an_order() {
    let mut v = Venue::new();
    let ask = v.limit(1, SELL, 100, 5);
    assert_eq!(v.cancel(2, OrderRef::Id(ask)), Err(RejectReason::NotOwner));
    assert!(v.is_live(ask));
    assert_eq!(v.cancel(1, OrderRef::Id(ask)), Ok(ask));
    assert_eq!(v.done(), vec![(ask, DoneReason::Cancelled, 0, 5)]);
    assert!(v.depth(SELL).is_empty());
}

// ---- amends ----

#[test]
fn pure_size_decrease_keeps_time_priority() {
    let mut v = Venue::new();
    let a = v.limit(1, SELL, 100, 5);
    let b = v.limit(2, SELL, 100, 5);
    assert_eq!(v.amend(1, a, None, Some(2)), Ok(a));
    assert!(v.events.iter().any(|e| matches!(
        e.kind,
        EventKind::OrderAmended {
            remaining: 2,
            priority_kept: true,
            ..
        }
    )));
    assert_eq!(v.queue(SELL, 100), vec![(a, 2, 2), (b, 5, 5)]);

    let taker = v.limit(3, BUY, 100, 3);
    assert_eq!(v.trades(), vec![(100, 2, a, taker), (100, 1, b, taker)]);
}

#[test]
fn price_amend_requeues_behind_existing_orders() {
    let mut v = Venue::new();
    let a = v.limit(1, SELL, 101, 5);
    let b = v.limit(2, SELL, 100, 5);
    assert_eq!(v.amend(1, a, Some(100), None), Ok(a));
    assert!(v.events.iter().any(|e| matches!(
        e.kind,
        EventKind::OrderAmended {
            price: 100,
            priority_kept: false,
            ..
        }
    )));
    assert_eq!(v.queue(SELL, 100), vec![(b, 5, 5), (a, 5, 5)]);
    assert!(v.queue(SELL, 101).is_empty());

    let taker = v.limit(3, BUY, 100, 6);
    assert_eq!(v.trades(), vec![(100, 5, b, taker), (100, 1, a, taker)]);
}

#[test]
fn size_increase_loses_time_priority() {
    let mut v = Venue::new();
    let a = v.limit(1, SELL, 100, 5);
    let b = v.limit(2, SELL, 100, 5);
    assert_eq!(v.amend(1, a, None, Some(8)), Ok(a));
    assert_eq!(v.queue(SELL, 100), vec![(b, 5, 5), (a, 8, 8)]);
}

#[test]
fn amend_to_a_crossing_price_trades_like_a_new_order() {
    let mut v = Venue::new();
    let ask = v.limit(1, SELL, 102, 4);
    let bid = v.limit(2, BUY, 99, 10);
    assert_eq!(v.amend(2, bid, Some(102), None), Ok(bid));
    assert_eq!(v.trades(), vec![(102, 4, ask, bid)]);
    assert_eq!(v.queue(BUY, 102), vec![(bid, 6, 6)]);
    assert_eq!(v.engine.order(bid).unwrap().filled, 4);
}

#[test]
fn amend_that_changes_nothing_is_rejected() {
    let mut v = Venue::new();
    let a = v.limit(1, SELL, 100, 5);
    assert_eq!(
        v.amend(1, a, Some(100), Some(5)),
        Err(RejectReason::InvalidAmend)
    );
    let market_stop = v
        .place(stop(1, BUY, OrderType::StopMarket, 105, 1))
        .unwrap();
    assert_eq!(
        v.amend(1, market_stop, Some(104), None),
        Err(RejectReason::InvalidAmend),
        "a stop-market order has no limit price to change"
    );
}

#[test]
fn an_amend_below_the_minimum_size_is_too_small_like_a_new_order() {
    let mut v = Venue::new();
    // Instrument 1: sizes 5..=1000 lots.
    v.send(CommandKind::AddInstrument(Box::new(InstrumentSpec {
        min_size: Decimal::new(5, 0),
        ..spec("MIN5")
    })));
    assert_eq!(
        v.place(Place::limit(1, 1, SELL, 100, 4)),
        Err(RejectReason::TooSmall)
    );
    let ask = v.place(Place::limit(1, 1, SELL, 100, 10)).unwrap();
    assert_eq!(v.amend(1, ask, None, Some(4)), Err(RejectReason::TooSmall));
    assert_eq!(
        v.engine.order(ask).unwrap().remaining,
        10,
        "the order stands"
    );
    assert_eq!(v.amend(1, ask, None, Some(8)), Ok(ask));
    // A fill may leave less than the minimum; an amend of the price alone keeps that size.
    v.place(Place::limit(2, 1, BUY, 100, 5)).unwrap();
    assert_eq!(v.engine.order(ask).unwrap().remaining, 3);
    assert_eq!(v.amend(1, ask, Some(101), None), Ok(ask));
    assert_eq!(v.amend(1, ask, None, Some(1)), Err(RejectReason::TooSmall));
}

// ---- icebergs ----

#[test]
fn iceberg_shows_slice_and_requeues_after_it_is_consumed() {
    let mut v = Venue::new();
    let iceberg = v
        .place(Place {
            display: 3,
            ..Place::limit(1, 0, SELL, 100, 10)
        })
        .unwrap();
    let plain = v.limit(2, SELL, 100, 4);
    assert_eq!(v.depth(SELL), vec![(100, 7, 2)], "only the slice shows");

    let t1 = v.limit(3, BUY, 100, 3);
    assert_eq!(v.trades(), vec![(100, 3, iceberg, t1)]);
    assert!(v.events.iter().any(|e| e.kind
        == EventKind::OrderRested {
            order_id: iceberg,
            account: 1,
            instrument: 0,
            side: SELL,
            price: 100,
            visible: 3,
            remaining: 7,
        }));
    assert_eq!(
        v.queue(SELL, 100),
        vec![(plain, 4, 4), (iceberg, 3, 7)],
        "the next slice lost its priority"
    );

    // One taker meets the iceberg twice: its slice re-queues behind nothing and trades again.
    let t2 = v.limit(3, BUY, 100, 9);
    assert_eq!(
        v.trades(),
        vec![
            (100, 4, plain, t2),
            (100, 3, iceberg, t2),
            (100, 2, iceberg, t2)
        ]
    );
    assert_eq!(v.queue(SELL, 100), vec![(iceberg, 1, 2)]);
}

// ---- market orders ----

#[test]
fn market_order_stops_at_band_edge_and_cancels_rest() {
    let mut v = Venue::new();
    let near = v.limit(1, SELL, 100, 5);
    let edge = v.limit(1, SELL, 110, 5);
    assert_eq!(
        v.place(Place::limit(1, 0, SELL, 111, 5)),
        Err(RejectReason::OutsideBand),
        "nothing rests beyond the band's edge"
    );

    let market = v.place(Place::market(2, 0, BUY, 20)).unwrap();
    assert_eq!(
        v.trades(),
        vec![(100, 5, near, market), (110, 5, edge, market)]
    );
    assert_eq!(
        v.done().last(),
        Some(&(market, DoneReason::MarketProtection, 10, 10))
    );
    assert!(v.depth(SELL).is_empty() && v.depth(BUY).is_empty());
}

#[test]
fn market_order_must_be_immediate() {
    let mut v = Venue::new();
    let gtc_market = Place {
        tif: TimeInForce::Gtc,
        ..Place::market(2, 0, BUY, 1)
    };
    assert_eq!(v.place(gtc_market), Err(RejectReason::InvalidTimeInForce));
}

// ---- stops ----

#[test]
fn stop_orders_trigger_in_trigger_then_arrival_order_within_one_command() {
    let mut v = Venue::new();
    v.limit(9, SELL, 100, 1);
    v.limit(8, BUY, 100, 1); // last price 100
    for price in 102..=107 {
        v.limit(9, SELL, price, 1);
    }
    let s1 = v
        .place(stop(1, BUY, OrderType::StopMarket, 103, 1))
        .unwrap();
    let s2 = v
        .place(stop(2, BUY, OrderType::StopMarket, 102, 1))
        .unwrap();
    let s3 = v
        .place(stop(3, BUY, OrderType::StopMarket, 102, 1))
        .unwrap();
    let s4 = v
        .place(stop(4, BUY, OrderType::StopMarket, 105, 1))
        .unwrap();
    assert_eq!(v.engine.book(0).unwrap().armed_stops(), 4);

    // Trades at 102 and 103 reach s1, s2, s3; s3's trade at 105 then reaches s4.
    v.limit(5, BUY, 103, 2);
    let triggered: Vec<(OrderId, Ticks)> = v
        .events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::StopTriggered {
                order_id,
                last_price,
                ..
            } => Some((order_id, last_price)),
            _ => None,
        })
        .collect();
    assert_eq!(
        triggered,
        vec![(s2, 103), (s3, 103), (s1, 103), (s4, 105)],
        "lowest trigger first, ties by arrival; later triggers join the back"
    );
    let prices: Vec<Ticks> = v.trades().iter().map(|t| t.0).collect();
    assert_eq!(prices, vec![102, 103, 104, 105, 106, 107]);
    assert_eq!(v.engine.book(0).unwrap().armed_stops(), 0);
}

#[test]
fn stop_triggered_reports_the_last_price_that_triggered_it() {
    // Found by the reference model: with no trade yet, a buy stop and a sell stop at 100 both
    // arm; the first trade at 100 triggers both, the buy stop then lifts the price to 101, and
    // the sell stop used to report 101, a price that does not reach a sell trigger of 100.
    let mut v = Venue::new();
    let sell_stop = v
        .place(stop(1, SELL, OrderType::StopMarket, 100, 1))
        .unwrap();
    let buy_stop = v
        .place(stop(2, BUY, OrderType::StopMarket, 100, 1))
        .unwrap();
    v.limit(3, SELL, 100, 1);
    v.limit(3, SELL, 101, 1);
    v.limit(4, BUY, 100, 1);
    let triggered: Vec<(OrderId, Ticks, Ticks)> = v
        .events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::StopTriggered {
                order_id,
                trigger,
                last_price,
                ..
            } => Some((order_id, trigger, last_price)),
            _ => None,
        })
        .collect();
    assert_eq!(triggered, vec![(buy_stop, 100, 100), (sell_stop, 100, 100)]);
    assert_eq!(v.engine.book(0).unwrap().last_price(), Some(101));
}

#[test]
fn stop_whose_trigger_is_already_reached_is_rejected() {
    let mut v = Venue::new();
    v.limit(1, SELL, 100, 1);
    v.limit(2, BUY, 100, 1);
    assert_eq!(
        v.place(stop(3, BUY, OrderType::StopMarket, 100, 1)),
        Err(RejectReason::StopWouldTriggerImmediately)
    );
    assert_eq!(
        v.place(stop(3, SELL, OrderType::StopMarket, 101, 1)),
        Err(RejectReason::StopWouldTriggerImmediately)
    );
    assert!(v.place(stop(3, BUY, OrderType::StopMarket, 101, 1)).is_ok());
}

// ---- time in force ----

#[test]
fn gtd_order_expires_on_first_command_at_or_after_expiry() {
    let mut v = Venue::new();
    let gtd = v
        .place(Place {
            tif: TimeInForce::Gtd,
            expiry: 2_000,
            ..Place::limit(1, 0, SELL, 100, 5)
        })
        .unwrap();
    assert!(v.send_at(1_999, CommandKind::Heartbeat).is_empty());
    assert!(v.is_live(gtd));

    // The expiry happens before the command runs: this buy finds no ask to trade with.
    let bid = v
        .send_at(2_000, CommandKind::Place(Place::limit(2, 0, BUY, 100, 5)))
        .to_vec();
    assert!(matches!(
        bid[0].kind,
        EventKind::OrderDone {
            reason: DoneReason::Expired,
            cancelled: 5,
            ..
        }
    ));
    assert!(matches!(bid[1].kind, EventKind::PlaceAccepted { .. }));
    assert!(v.trades().is_empty());
    assert!(!v.is_live(gtd));
    assert_eq!(v.depth(SELL), vec![]);
    assert_eq!(v.depth(BUY), vec![(100, 5, 1)]);
}

#[test]
fn heartbeat_expires_gtd_orders_without_an_outcome() {
    let mut v = Venue::new();
    let gtd = v
        .place(Place {
            tif: TimeInForce::Gtd,
            expiry: 2_000,
            ..Place::limit(1, 0, SELL, 100, 5)
        })
        .unwrap();
    v.send_at(2_500, CommandKind::Heartbeat);
    assert_eq!(v.done(), vec![(gtd, DoneReason::Expired, 0, 5)]);
    assert!(matches!(
        v.events.last().unwrap().kind,
        EventKind::LevelChanged { size: 0, .. }
    ));
    assert_eq!(v.events.len(), 2);
}

#[test]
fn gtd_orders_with_the_same_expiry_expire_in_order_of_acceptance() {
    // Found by the reference model: ties used to go by order id, and ids follow pool slots,
    // not time. Here the first GTD order reuses a freed slot and so has the larger id.
    let mut v = Venue::new();
    let freed = v.limit(1, SELL, 105, 1);
    v.cancel(1, OrderRef::Id(freed)).unwrap();
    let gtd = |account| Place {
        tif: TimeInForce::Gtd,
        expiry: 2_000,
        ..Place::limit(account, 0, SELL, 100, 1)
    };
    let first = v.place(gtd(1)).unwrap();
    let second = v.place(gtd(2)).unwrap();
    assert!(first > second, "the first order's id is the larger one");

    v.send_at(2_000, CommandKind::Heartbeat);
    let expired: Vec<OrderId> = v.done().iter().map(|d| d.0).collect();
    assert_eq!(expired, vec![first, second]);
}

#[test]
fn gtd_expiry_in_the_past_is_rejected() {
    let mut v = Venue::new();
    let late = Place {
        tif: TimeInForce::Gtd,
        expiry: v.ts + 1,
        ..Place::limit(1, 0, SELL, 100, 5)
    };
    assert_eq!(v.place(late), Err(RejectReason::ExpiryInPast));
}

#[test]
fn ioc_remainder_is_cancelled() {
    let mut v = Venue::new();
    let ask = v.limit(1, SELL, 100, 3);
    let ioc = v
        .place(Place {
            tif: TimeInForce::Ioc,
            ..Place::limit(2, 0, BUY, 100, 5)
        })
        .unwrap();
    assert_eq!(v.trades(), vec![(100, 3, ask, ioc)]);
    assert_eq!(
        v.done(),
        vec![
            (ask, DoneReason::Filled, 3, 0),
            (ioc, DoneReason::ImmediateOrCancel, 3, 2)
        ]
    );
    assert!(v.depth(BUY).is_empty());
}

#[test]
fn fok_rejected_when_not_fully_fillable_and_book_unchanged() {
    let mut v = Venue::new();
    let a = v.limit(1, SELL, 100, 3);
    let b = v.limit(1, SELL, 101, 3);
    let before = (v.depth(SELL), v.engine.last_seq());
    let fok = |size| Place {
        tif: TimeInForce::Fok,
        ..Place::limit(2, 0, BUY, 101, size)
    };
    assert_eq!(v.place(fok(7)), Err(RejectReason::FokNotFillable));
    assert_eq!(v.engine.last_seq(), before.1 + 1, "only the reject");
    assert_eq!(v.depth(SELL), before.0);

    let filled = v.place(fok(6)).unwrap();
    assert_eq!(v.trades(), vec![(100, 3, a, filled), (101, 3, b, filled)]);
}

#[test]
fn fok_counts_only_liquidity_ahead_of_an_own_order_unless_it_cancels_makers() {
    let mut v = Venue::new();
    v.limit(1, SELL, 100, 3);
    v.limit(2, SELL, 100, 3); // the FOK buyer's own order
    v.limit(1, SELL, 100, 3);
    let fok = Place {
        tif: TimeInForce::Fok,
        ..Place::limit(2, 0, BUY, 100, 5)
    };
    assert_eq!(v.place(fok), Err(RejectReason::FokNotFillable));
    assert_eq!(
        v.place(with_stp(fok, SelfTradePrevention::DecrementAndCancel)),
        Err(RejectReason::FokNotFillable)
    );
    assert!(v
        .place(with_stp(fok, SelfTradePrevention::CancelMaker))
        .is_ok());
    assert_eq!(v.trades().iter().map(|t| t.1).sum::<Lots>(), 5);
}

#[test]
fn post_only_that_would_cross_is_rejected() {
    let mut v = Venue::new();
    v.limit(1, SELL, 100, 5);
    let post_only = |price| Place {
        post_only: true,
        ..Place::limit(2, 0, BUY, price, 5)
    };
    assert_eq!(
        v.place(post_only(100)),
        Err(RejectReason::PostOnlyWouldCross)
    );
    assert_eq!(v.depth(SELL), vec![(100, 5, 1)]);
    let maker = v.place(post_only(99)).unwrap();
    assert_eq!(v.queue(BUY, 99), vec![(maker, 5, 5)]);
    assert_eq!(
        v.amend(2, maker, Some(100), None),
        Err(RejectReason::PostOnlyWouldCross),
        "nor may it be amended to cross"
    );
}

// ---- self-trade prevention ----

#[test]
fn self_trade_cancel_taker_trades_ahead_then_cancels_the_incoming_order() {
    let mut v = Venue::new();
    let other = v.limit(2, SELL, 100, 2);
    let own = v.limit(1, SELL, 100, 5);
    let taker = v.place(Place::limit(1, 0, BUY, 100, 4)).unwrap();
    assert_eq!(v.trades(), vec![(100, 2, other, taker)]);
    assert_eq!(v.done().last(), Some(&(taker, DoneReason::SelfTrade, 2, 2)));
    assert_eq!(v.queue(SELL, 100), vec![(own, 5, 5)]);
}

#[test]
fn self_trade_cancel_maker_cancels_the_resting_order_and_keeps_matching() {
    let mut v = Venue::new();
    let own = v.limit(1, SELL, 100, 5);
    let other = v.limit(2, SELL, 101, 5);
    let taker = v
        .place(with_stp(
            Place::limit(1, 0, BUY, 101, 3),
            SelfTradePrevention::CancelMaker,
        ))
        .unwrap();
    assert_eq!(v.done()[0], (own, DoneReason::SelfTrade, 0, 5));
    assert_eq!(v.trades(), vec![(101, 3, other, taker)]);
    assert_eq!(v.depth(SELL), vec![(101, 2, 1)]);
}

#[test]
fn self_trade_cancel_both_cancels_resting_and_incoming_orders() {
    let mut v = Venue::new();
    let own = v.limit(1, SELL, 100, 5);
    let taker = v
        .place(with_stp(
            Place::limit(1, 0, BUY, 100, 3),
            SelfTradePrevention::CancelBoth,
        ))
        .unwrap();
    assert!(v.trades().is_empty());
    assert_eq!(
        v.done(),
        vec![
            (own, DoneReason::SelfTrade, 0, 5),
            (taker, DoneReason::SelfTrade, 0, 3)
        ]
    );
    assert!(v.depth(SELL).is_empty() && v.depth(BUY).is_empty());
}

#[test]
fn self_trade_decrement_and_cancel_shrinks_both_without_trading() {
    let mut v = Venue::new();
    let own = v.limit(1, SELL, 100, 5);
    let other = v.limit(2, SELL, 100, 4);
    let dc = |size| {
        with_stp(
            Place::limit(1, 0, BUY, 100, size),
            SelfTradePrevention::DecrementAndCancel,
        )
    };

    // The smaller incoming order is cancelled; the resting one shrinks and keeps its place.
    let small = v.place(dc(3)).unwrap();
    assert!(v.trades().is_empty());
    assert_eq!(v.done(), vec![(small, DoneReason::SelfTrade, 0, 3)]);
    assert_eq!(v.queue(SELL, 100), vec![(own, 2, 2), (other, 4, 4)]);

    // The smaller resting order is cancelled; the incoming one shrinks by it and goes on.
    let big = v.place(dc(8)).unwrap();
    assert_eq!(
        v.done(),
        vec![
            (own, DoneReason::SelfTrade, 0, 2),
            (other, DoneReason::Filled, 4, 0)
        ]
    );
    assert_eq!(v.trades(), vec![(100, 4, other, big)]);
    assert_eq!(
        v.queue(BUY, 100),
        vec![(big, 2, 2)],
        "8 - 2 decremented - 4 filled"
    );
}

// ---- cancel-on-disconnect and mass cancel ----

#[test]
fn session_closed_cancels_only_that_sessions_orders() {
    let mut v = Venue::new();
    let in_session = |account, price| Place {
        session: 7,
        ..Place::limit(account, 0, BUY, price, 1)
    };
    let a = v.place(in_session(1, 95)).unwrap();
    let b = v.place(in_session(2, 96)).unwrap();
    let armed = v
        .place(Place {
            session: 7,
            ..stop(1, BUY, OrderType::StopMarket, 105, 1)
        })
        .unwrap();
    let other_session = v
        .place(Place {
            session: 8,
            ..Place::limit(1, 0, BUY, 97, 1)
        })
        .unwrap();
    let untagged = v.limit(1, BUY, 98, 1);

    v.send(CommandKind::SessionClosed { session: 7 });
    let cancelled: Vec<(OrderId, DoneReason)> = v.done().iter().map(|d| (d.0, d.1)).collect();
    assert_eq!(
        cancelled,
        vec![
            (armed, DoneReason::SessionClosed),
            (b, DoneReason::SessionClosed),
            (a, DoneReason::SessionClosed)
        ],
        "newest first"
    );
    assert!(v.is_live(other_session) && v.is_live(untagged));

    v.send(CommandKind::SessionClosed { session: 0 });
    assert_eq!(v.outcome(), Ok(OrderId::NONE));
    assert!(v.done().is_empty(), "session 0 means untagged");
}

#[test]
fn mass_cancel_filters_by_instrument_and_side() {
    let mut v = Venue::new();
    v.send(CommandKind::AddInstrument(Box::new(spec("XYZ"))));
    let on = |instrument, side, price| Place::limit(1, instrument, side, price, 1);
    let bid0 = v.place(on(0, BUY, 99)).unwrap();
    let ask0 = v.place(on(0, SELL, 101)).unwrap();
    let bid1 = v.place(on(1, BUY, 99)).unwrap();
    let others = v.limit(2, BUY, 99, 1);

    v.send(CommandKind::MassCancel(MassCancel {
        account: 1,
        instrument: Some(0),
        side: Some(BUY),
    }));
    assert_eq!(v.done(), vec![(bid0, DoneReason::MassCancelled, 0, 1)]);

    v.send(CommandKind::MassCancel(MassCancel {
        account: 1,
        instrument: None,
        side: None,
    }));
    let cancelled: Vec<OrderId> = v.done().iter().map(|d| d.0).collect();
    assert_eq!(cancelled, vec![bid1, ask0], "newest first");
    assert!(v.is_live(others));
    assert_eq!(v.engine.live_order_count(), 1);
}

// ---- admin ----

#[test]
fn halted_instrument_rejects_places_but_accepts_cancels() {
    let mut v = Venue::new();
    let resting = v.limit(1, SELL, 100, 5);
    let second = v.limit(1, SELL, 101, 5);
    v.send(CommandKind::Halt { instrument: 0 });
    assert!(v.events.iter().any(|e| e.kind
        == EventKind::TradingStatus {
            instrument: 0,
            halted: true
        }));

    assert_eq!(
        v.place(Place::limit(2, 0, BUY, 100, 5)),
        Err(RejectReason::Halted)
    );
    assert_eq!(
        v.amend(1, resting, None, Some(1)),
        Err(RejectReason::Halted)
    );
    assert_eq!(v.cancel(1, OrderRef::Id(resting)), Ok(resting));
    v.send(CommandKind::MassCancel(MassCancel {
        account: 1,
        instrument: Some(0),
        side: None,
    }));
    assert_eq!(v.done(), vec![(second, DoneReason::MassCancelled, 0, 5)]);

    v.send(CommandKind::Resume { instrument: 0 });
    assert!(v.place(Place::limit(2, 0, BUY, 100, 5)).is_ok());
}

#[test]
fn duplicate_client_order_id_is_rejected_while_first_is_live() {
    let mut v = Venue::new();
    let with_cid = |account| Place {
        client_id: 42,
        ..Place::limit(account, 0, BUY, 99, 1)
    };
    let first = v.place(with_cid(1)).unwrap();
    assert_eq!(
        v.place(with_cid(1)),
        Err(RejectReason::DuplicateClientOrderId)
    );
    assert!(v.place(with_cid(2)).is_ok(), "client ids are per account");

    assert_eq!(v.cancel(1, OrderRef::Client(42)), Ok(first));
    assert!(
        v.place(with_cid(1)).is_ok(),
        "free again once the first is done"
    );
}

#[test]
fn off_band_price_is_rejected_with_outside_band() {
    let mut v = Venue::new();
    assert_eq!(
        v.place(Place::limit(1, 0, SELL, 111, 1)),
        Err(RejectReason::OutsideBand)
    );
    assert_eq!(
        v.place(Place::limit(1, 0, BUY, 89, 1)),
        Err(RejectReason::OutsideBand)
    );
    assert_eq!(
        v.place(stop(1, BUY, OrderType::StopMarket, 111, 1)),
        Err(RejectReason::OutsideBand)
    );
    assert_eq!(
        v.place(Place::limit(1, 0, BUY, 0, 1)),
        Err(RejectReason::InvalidPrice)
    );
    assert!(v.place(Place::limit(1, 0, SELL, 110, 1)).is_ok());
    assert!(v.place(Place::limit(1, 0, BUY, 90, 1)).is_ok());
    let resting = v.limit(1, BUY, 95, 1);
    assert_eq!(
        v.amend(1, resting, Some(89), None),
        Err(RejectReason::OutsideBand)
    );
}

#[test]
fn place_validation_reports_the_first_failure_in_documented_order() {
    let mut v = Venue::new();
    let bad = Place {
        account: 0,
        instrument: 9,
        size: 0,
        price: -1,
        ..Place::limit(1, 0, BUY, 100, 1)
    };
    assert_eq!(v.place(bad), Err(RejectReason::InvalidAccount));
    let bad = Place { account: 1, ..bad };
    assert_eq!(v.place(bad), Err(RejectReason::UnknownInstrument));
    let bad = Place {
        instrument: 0,
        ..bad
    };
    assert_eq!(v.place(bad), Err(RejectReason::InvalidSize));
    let bad = Place { size: 1001, ..bad };
    assert_eq!(v.place(bad), Err(RejectReason::TooLarge));
    let bad = Place { size: 5, ..bad };
    assert_eq!(v.place(bad), Err(RejectReason::InvalidPrice));
    let bad = Place {
        price: 100,
        display: 6,
        ..bad
    };
    assert_eq!(v.place(bad), Err(RejectReason::InvalidDisplaySize));
}

#[test]
fn capacity_exhausted_rejects_and_leaves_book_intact() {
    let mut v = Venue::with(EngineConfig {
        order_capacity: 3,
        ..EngineConfig::default()
    });
    let a = v.limit(1, SELL, 100, 5);
    v.limit(1, SELL, 101, 5);
    v.place(stop(1, BUY, OrderType::StopMarket, 105, 1))
        .unwrap();
    let before = (v.depth(SELL), v.depth(BUY));

    assert_eq!(
        v.place(Place::limit(2, 0, BUY, 99, 1)),
        Err(RejectReason::CapacityExhausted)
    );
    assert_eq!(
        v.place(Place::market(2, 0, BUY, 1)),
        Err(RejectReason::CapacityExhausted),
        "an order being matched needs a slot too"
    );
    assert_eq!((v.depth(SELL), v.depth(BUY)), before);
    assert_eq!(v.engine.live_order_count(), 3);

    v.cancel(1, OrderRef::Id(a)).unwrap();
    assert!(v.place(Place::limit(2, 0, BUY, 99, 1)).is_ok());
}

#[test]
fn command_reaching_the_engine_after_its_deadline_is_rejected_and_not_executed() {
    let mut v = Venue::new();
    let ts = v.ts + 10;
    v.ts = ts;
    v.corr += 1;
    let late = Command {
        ts,
        corr: v.corr,
        deadline: ts - 1,
        kind: CommandKind::Place(Place::limit(1, 0, SELL, 100, 5)),
    };
    v.events = v.engine.apply_collect(&late);
    assert_eq!(v.outcome(), Err(RejectReason::DeadlineExceeded));
    assert_eq!(v.engine.book(0).unwrap().best_ask(), None, "nothing rested");
    let on_time = Command {
        ts: ts + 1,
        corr: v.corr + 1,
        deadline: ts + 1,
        kind: CommandKind::Place(Place::limit(1, 0, SELL, 100, 5)),
    };
    v.events = v.engine.apply_collect(&on_time);
    assert!(
        v.outcome().is_ok(),
        "a deadline equal to ts is still in time"
    );
    assert_eq!(v.engine.book(0).unwrap().best_ask(), Some(100));
}
