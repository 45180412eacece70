//! Roles, the risk desk's service and run-time operations over gRPC against a real market (no
//! simulator): every RPC checked against every role; the drop copy followed while two traders
//! trade, dropped and resumed by sequence; positions; limits set by an admin and enforced; the
//! kill switch stopping a trader mid-flow; `AdminService` adding an instrument that order
//! entry, `ListInstruments` and market-data subscriptions know at once, halting and resuming
//! one.

use std::time::Duration;
use ticker_proto::v1 as pb;
use ticker_servers::auth::{Principal, Role};
use ticker_servers::grpc::AuthConfig;
use ticker_servers::market::{Market, MarketConfig};
use tonic::{Code, Request};

mod grpc_rig;

use grpc_rig::{bad_fields, limit, place, Rig};

const TRADER: &str = "trader-token";
const RISK: &str = "risk-token";
const ADMIN: &str = "admin-token";
const ADMIN_TRADING: &str = "admin-trading-token";
const BOB: &str = "bob-token";

async fn start_rig() -> Rig {
    start_rig_on(1).await
}

/// The rig on a market of `shards` engine threads.
async fn start_rig_on(shards: usize) -> Rig {
    let mut auth = AuthConfig::traders([(TRADER, 1), (BOB, 3)]);
    let role = |role, account| Principal { role, account };
    auth.tokens.insert(RISK.into(), role(Role::Risk, None));
    auth.tokens.insert(ADMIN.into(), role(Role::Admin, None));
    auth.tokens
        .insert(ADMIN_TRADING.into(), role(Role::Admin, Some(2)));
    Rig::start_sharded(auth, shards).await
}

/// `message` with `token` as its bearer token, or with none.
fn authed<T>(message: T, token: Option<&str>) -> Request<T> {
    match token {
        Some(token) => grpc_rig::authed(message, token),
        None => Request::new(message),
    }
}

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.map_or_else(|s| s.code(), |_| Code::Ok)
}

/// The status code of every RPC called with `token` (a well-formed request each).
async fn codes(rig: &Rig, token: Option<&str>) -> Vec<(&'static str, Code)> {
    let btc = || limit("BTC-USD", pb::Side::Buy, "64000.00", "0.001");
    let resting = pb::PlaceOrderRequest {
        client_order_id: 77,
        ..btc()
    };
    // Placed, amended and cancelled in that order, so each finds the order.
    let mut out = vec![
        (
            "OrderService/PlaceOrder",
            code(rig.orders().place_order(authed(resting, token)).await),
        ),
        (
            "OrderService/AmendOrder",
            code(
                rig.orders()
                    .amend_order(authed(
                        pb::AmendOrderRequest {
                            order: Some(pb::amend_order_request::Order::ClientOrderId(77)),
                            instrument: "BTC-USD".into(),
                            size: Some("0.002".into()),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "OrderService/CancelOrder",
            code(
                rig.orders()
                    .cancel_order(authed(
                        pb::CancelOrderRequest {
                            order: Some(pb::cancel_order_request::Order::ClientOrderId(77)),
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "OrderService/MassCancel",
            code(
                rig.orders()
                    .mass_cancel(authed(pb::MassCancelRequest::default(), token))
                    .await,
            ),
        ),
        (
            "OrderService/BulkPlaceOrders",
            code(
                rig.orders()
                    .bulk_place_orders(authed(tokio_stream::iter(vec![btc()]), token))
                    .await,
            ),
        ),
        (
            "OrderService/OrderSession",
            code(
                rig.orders()
                    .order_session(authed(tokio_stream::iter(Vec::new()), token))
                    .await,
            ),
        ),
        (
            "OrderService/SubscribeOrderUpdates",
            code(
                rig.orders()
                    .subscribe_order_updates(authed(
                        pb::SubscribeOrderUpdatesRequest::default(),
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "MarketDataService/Subscribe",
            code(
                rig.market_data()
                    .subscribe(authed(
                        pb::SubscribeRequest {
                            instruments: vec!["BTC-USD".into()],
                            channels: vec![pb::Channel::Ticker as i32],
                            ..Default::default()
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "MarketDataService/GetDepthSnapshot",
            code(
                rig.market_data()
                    .get_depth_snapshot(authed(
                        pb::GetDepthSnapshotRequest {
                            instrument: "BTC-USD".into(),
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "MarketDataService/ListInstruments",
            code(
                rig.market_data()
                    .list_instruments(authed(pb::ListInstrumentsRequest {}, token))
                    .await,
            ),
        ),
    ];
    let risk = rig.risk();
    out.push((
        "RiskService/StreamDropCopy",
        code(
            risk.clone()
                .stream_drop_copy(authed(pb::StreamDropCopyRequest::default(), token))
                .await,
        ),
    ));
    out.push((
        "RiskService/GetPositions",
        code(
            risk.clone()
                .get_positions(authed(pb::GetPositionsRequest::default(), token))
                .await,
        ),
    ));
    out.push((
        "RiskService/StreamPositions",
        code(
            risk.clone()
                .stream_positions(authed(pb::StreamPositionsRequest::default(), token))
                .await,
        ),
    ));
    out.push((
        "RiskService/GetLimits",
        code(
            risk.clone()
                .get_limits(authed(pb::GetLimitsRequest { account: 1 }, token))
                .await,
        ),
    ));
    // The default set, unchanged: none.
    out.push((
        "RiskService/SetLimits",
        code(
            risk.clone()
                .set_limits(authed(pb::SetLimitsRequest::default(), token))
                .await,
        ),
    ));
    // An account nobody trades for, disabled and enabled again.
    let idle = pb::AccountRequest { account: 99 };
    out.push((
        "RiskService/DisableAccount",
        code(risk.clone().disable_account(authed(idle, token)).await),
    ));
    out.push((
        "RiskService/EnableAccount",
        code(risk.clone().enable_account(authed(idle, token)).await),
    ));
    // Halting and resuming an unknown symbol reaches the check of the symbol only once the
    // role is granted: INVALID_ARGUMENT then, never a change to the market.
    out.push((
        "AdminService/AddInstrument",
        code(
            rig.admin()
                .add_instrument(authed(pb::AddInstrumentRequest::default(), token))
                .await,
        ),
    ));
    out.push((
        "AdminService/HaltInstrument",
        code(
            rig.admin()
                .halt_instrument(authed(
                    pb::HaltInstrumentRequest {
                        symbol: "NOPE-USD".into(),
                    },
                    token,
                ))
                .await,
        ),
    ));
    out.push((
        "AdminService/ResumeInstrument",
        code(
            rig.admin()
                .resume_instrument(authed(
                    pb::ResumeInstrumentRequest {
                        symbol: "NOPE-USD".into(),
                    },
                    token,
                ))
                .await,
        ),
    ));
    out
}

#[tokio::test]
async fn every_rpc_checks_the_callers_role() {
    let rig = start_rig().await;
    let trading = |name: &str| name.starts_with("OrderService/");
    let admin = |name: &str| name.starts_with("AdminService/") || name == "RiskService/SetLimits";
    let risk = |name: &str| name.starts_with("RiskService/") && !admin(name);
    // What an admin gets from the admin RPCs here: the halts name an unknown symbol and the
    // empty AddInstrument request has no fields.
    let admin_answer = |name: &str| {
        if name.starts_with("AdminService/") {
            Code::InvalidArgument
        } else {
            Code::Ok
        }
    };
    // No token: order entry, risk and admin are UNAUTHENTICATED, market data is public.
    for (name, c) in codes(&rig, None).await {
        let expected = if trading(name) || admin(name) || risk(name) {
            Code::Unauthenticated
        } else {
            Code::Ok
        };
        assert_eq!(c, expected, "{name} without a token");
    }
    // A trader trades and reads market data; risk and admin RPCs are refused.
    for (name, c) in codes(&rig, Some(TRADER)).await {
        let expected = if admin(name) || risk(name) {
            Code::PermissionDenied
        } else {
            Code::Ok
        };
        assert_eq!(c, expected, "{name} as a trader");
    }
    // Risk without an account: reads everything, the kill switch; no order entry, no admin.
    for (name, c) in codes(&rig, Some(RISK)).await {
        let expected = if trading(name) || admin(name) {
            Code::PermissionDenied
        } else {
            Code::Ok
        };
        assert_eq!(c, expected, "{name} as risk");
    }
    // Admin without an account: everything but order entry.
    for (name, c) in codes(&rig, Some(ADMIN)).await {
        let expected = if trading(name) {
            Code::PermissionDenied
        } else {
            admin_answer(name)
        };
        assert_eq!(c, expected, "{name} as admin");
    }
    // Admin with an account trades too.
    for (name, c) in codes(&rig, Some(ADMIN_TRADING)).await {
        assert_eq!(c, admin_answer(name), "{name} as a trading admin");
    }
    let denied = rig
        .admin()
        .halt_instrument(authed(
            pb::HaltInstrumentRequest {
                symbol: "BTC-USD".into(),
            },
            Some(TRADER),
        ))
        .await
        .unwrap_err();
    assert!(
        denied.message().contains("needs the admin role"),
        "{}",
        denied.message()
    );
    rig.stop().await;
}

fn doge() -> pb::AddInstrumentRequest {
    pb::AddInstrumentRequest {
        symbol: "DOGE-USD".into(),
        tick_size: "0.0001".into(),
        lot_size: "1".into(),
        min_size: "1".into(),
        max_size: "1000000".into(),
        reference_price: "0.1500".into(),
        band: "0.5".into(),
    }
}

#[tokio::test]
async fn an_added_instrument_trades_and_streams_at_once() {
    added_instrument_trades(1).await;
}

/// Every shard adds it; the shard its id names (4 % 2 = 0) trades it.
#[tokio::test]
async fn an_added_instrument_trades_and_streams_at_once_on_two_shards() {
    added_instrument_trades(2).await;
}

async fn added_instrument_trades(shards: usize) {
    let rig = start_rig_on(shards).await;
    let added = rig
        .admin()
        .add_instrument(authed(doge(), Some(ADMIN)))
        .await
        .unwrap()
        .into_inner();
    let result = added.result.unwrap();
    assert!(result.accepted, "{result:?}");
    assert!(result.engine_seq > 0);
    let info = added.instrument.unwrap();
    assert_eq!(info.symbol, "DOGE-USD");
    assert_eq!(info.band_low, "0.0750");
    assert_eq!(info.band_high, "0.2250");

    let listed = rig
        .market_data()
        .list_instruments(pb::ListInstrumentsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.instruments.iter().any(|i| i.symbol == "DOGE-USD"));

    // A subscriber of the new instrument sees a trade made on it.
    let mut trades = rig
        .market_data()
        .subscribe(pb::SubscribeRequest {
            instruments: vec!["DOGE-USD".into()],
            channels: vec![pb::Channel::Trades as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let sell = limit("DOGE-USD", pb::Side::Sell, "0.1501", "100");
    let sold = rig
        .orders()
        .place_order(authed(sell, Some(TRADER)))
        .await
        .unwrap()
        .into_inner();
    assert!(sold.result.unwrap().accepted);
    let buy = limit("DOGE-USD", pb::Side::Buy, "0.1501", "40");
    let bought = rig
        .orders()
        .place_order(authed(buy, Some(ADMIN_TRADING)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bought.order.unwrap().filled_size, "40");
    loop {
        let m = trades.message().await.unwrap().expect("stream open");
        if let Some(pb::market_data_message::Payload::Trade(t)) = m.payload {
            assert_eq!((t.price.as_str(), t.size.as_str()), ("0.1501", "40"));
            break;
        }
    }

    // The same symbol again is a typed reject; a bad spec names its field.
    let again = rig
        .admin()
        .add_instrument(authed(doge(), Some(ADMIN)))
        .await
        .unwrap()
        .into_inner();
    let result = again.result.unwrap();
    assert!(!result.accepted);
    assert_eq!(result.reject_reason(), pb::RejectReason::InstrumentExists);
    assert!(again.instrument.is_none());
    let bad = pb::AddInstrumentRequest {
        symbol: "XRP-USD".into(),
        reference_price: "0.50005".into(),
        ..doge()
    };
    let status = rig
        .admin()
        .add_instrument(authed(bad, Some(ADMIN)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["reference_price"]);
    rig.stop().await;
}

#[tokio::test]
async fn a_halted_instrument_rejects_orders_until_resumed() {
    let rig = start_rig().await;
    let halt = rig
        .admin()
        .halt_instrument(authed(
            pb::HaltInstrumentRequest {
                symbol: "ETH-USD".into(),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(halt.result.unwrap().accepted);
    let order = || limit("ETH-USD", pb::Side::Buy, "3000.00", "0.01");
    let refused = rig
        .orders()
        .place_order(authed(order(), Some(TRADER)))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert!(!refused.accepted);
    assert_eq!(refused.reject_reason(), pb::RejectReason::Halted);
    // Other instruments trade on.
    let btc = limit("BTC-USD", pb::Side::Buy, "64000.00", "0.001");
    let other = rig
        .orders()
        .place_order(authed(btc, Some(TRADER)))
        .await
        .unwrap()
        .into_inner();
    assert!(other.result.unwrap().accepted);
    let resume = rig
        .admin()
        .resume_instrument(authed(
            pb::ResumeInstrumentRequest {
                symbol: "ETH-USD".into(),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(resume.result.unwrap().accepted);
    let accepted = rig
        .orders()
        .place_order(authed(order(), Some(TRADER)))
        .await
        .unwrap()
        .into_inner();
    assert!(accepted.result.unwrap().accepted);
    rig.stop().await;
}

/// The next message of a stream, bounded: a missing message fails the test, never hangs it.
async fn next<T>(stream: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message within 10 s")
        .unwrap()
        .expect("stream open")
}

fn is_snapshot(u: &pb::OrderUpdate) -> bool {
    matches!(u.event, Some(pb::order_update::Event::Snapshot(_)))
}

#[tokio::test]
async fn the_drop_copy_follows_two_traders_and_resumes_by_sequence() {
    let rig = start_rig().await;
    // Alice rests before the risk client connects: its first message is her open order.
    let resting = place(
        &rig,
        TRADER,
        limit("BTC-USD", pb::Side::Sell, "64000.00", "0.5"),
    )
    .await;
    let resting_id = resting.order.unwrap().order_id;
    let mut copy = rig
        .risk()
        .stream_drop_copy(authed(pb::StreamDropCopyRequest::default(), Some(RISK)))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut copy).await;
    assert_eq!(first.delivery(), pb::Delivery::Snapshot);
    let Some(pb::order_update::Event::Snapshot(open)) = &first.event else {
        panic!("a snapshot first: {first:?}");
    };
    assert_eq!(open.orders.len(), 1);
    assert_eq!(open.orders[0].account, 1);
    assert_eq!(open.orders[0].order.as_ref().unwrap().order_id, resting_id);
    let mut last = first.seq;

    // Bob's buy fills against Alice: both accounts' updates arrive in one gap-free sequence.
    let bought = place(
        &rig,
        BOB,
        limit("BTC-USD", pb::Side::Buy, "64000.00", "0.2"),
    )
    .await;
    assert_eq!(bought.order.unwrap().filled_size, "0.20000");
    let mut fills = Vec::new();
    while fills.len() < 2 {
        let u = next(&mut copy).await;
        assert_eq!(u.prev_seq, last, "no gap: {u:?}");
        last = u.seq;
        if let Some(pb::order_update::Event::Fill(f)) = &u.event {
            fills.push((u.account, f.size.clone()));
        }
    }
    fills.sort();
    assert_eq!(fills, [(1, "0.20000".into()), (3, "0.20000".into())]);

    // The risk client goes away; trading goes on; it comes back with the last seq it saw.
    drop(copy);
    let mut placed = Vec::new();
    for price in ["63000.00", "63001.00", "63002.00"] {
        let p = place(&rig, BOB, limit("BTC-USD", pb::Side::Buy, price, "0.01")).await;
        placed.push(p.order.unwrap().order_id);
    }
    let mut resumed = rig
        .risk()
        .stream_drop_copy(authed(
            pb::StreamDropCopyRequest {
                from_seq: Some(last),
                accounts: vec![],
            },
            Some(RISK),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < placed.len() {
        let u = next(&mut resumed).await;
        assert!(!is_snapshot(&u), "resumed within the history: no snapshot");
        assert_eq!(u.prev_seq, last, "no gap, no duplicate: {u:?}");
        last = u.seq;
        if let Some(pb::order_update::Event::Accepted(a)) = &u.event {
            assert_eq!(u.account, 3);
            seen.push(a.order.as_ref().unwrap().order_id);
        }
    }
    assert_eq!(seen, placed);

    // Filtered to Alice: her snapshot only, and only her updates after it.
    let mut alice = rig
        .risk()
        .stream_drop_copy(authed(
            pb::StreamDropCopyRequest {
                from_seq: None,
                accounts: vec![1],
            },
            Some(RISK),
        ))
        .await
        .unwrap()
        .into_inner();
    let snap = next(&mut alice).await;
    let Some(pb::order_update::Event::Snapshot(open)) = &snap.event else {
        panic!("a snapshot first");
    };
    assert!(open.orders.iter().all(|o| o.account == 1));
    assert_eq!(open.orders.len(), 1, "Alice's partly filled sell");
    place(
        &rig,
        BOB,
        limit("BTC-USD", pb::Side::Buy, "62000.00", "0.01"),
    )
    .await;
    let mine = place(
        &rig,
        TRADER,
        limit("BTC-USD", pb::Side::Sell, "65000.00", "0.01"),
    )
    .await;
    let u = next(&mut alice).await;
    assert_eq!(u.account, 1, "Bob's order is not in Alice's drop copy");
    let Some(pb::order_update::Event::Accepted(a)) = &u.event else {
        panic!("Alice's acceptance: {u:?}");
    };
    assert_eq!(
        a.order.as_ref().unwrap().order_id,
        mine.order.unwrap().order_id
    );
    rig.stop().await;
}

#[tokio::test]
async fn positions_follow_the_fills() {
    let rig = start_rig().await;
    place(
        &rig,
        TRADER,
        limit("BTC-USD", pb::Side::Sell, "64000.00", "0.5"),
    )
    .await;
    let mut stream = rig
        .risk()
        .stream_positions(authed(
            pb::StreamPositionsRequest {
                from_seq: None,
                accounts: vec![3],
            },
            Some(RISK),
        ))
        .await
        .unwrap()
        .into_inner();
    let snapshot = next(&mut stream).await;
    let Some(pb::position_update::Event::Snapshot(s)) = &snapshot.event else {
        panic!("a snapshot first");
    };
    assert!(s.positions.is_empty(), "Bob has no position yet: {s:?}");
    place(
        &rig,
        BOB,
        limit("BTC-USD", pb::Side::Buy, "64000.00", "0.2"),
    )
    .await;
    place(
        &rig,
        BOB,
        limit("BTC-USD", pb::Side::Sell, "64100.00", "0.05"),
    )
    .await;
    // Bob's buy: an acceptance, then the fill; then his resting sell. Only Bob's arrive.
    let mut bob = None;
    while bob
        .as_ref()
        .is_none_or(|p: &pb::Position| p.open_sell != "0.05000")
    {
        let u = next(&mut stream).await;
        let Some(pb::position_update::Event::Position(p)) = u.event else {
            panic!("a position change: {u:?}");
        };
        assert_eq!(p.account, 3);
        bob = Some(p);
    }
    let bob = bob.unwrap();
    assert_eq!(bob.net, "0.20000");
    assert_eq!(bob.bought, "0.20000");
    assert_eq!(bob.bought_notional, "12800.0000000");
    assert_eq!(bob.average_price, "64000.00");

    let all = rig
        .risk()
        .get_positions(authed(pb::GetPositionsRequest { account: 0 }, Some(RISK)))
        .await
        .unwrap()
        .into_inner();
    let alice = all.positions.iter().find(|p| p.account == 1).unwrap();
    assert_eq!(alice.net, "-0.20000");
    assert_eq!(alice.open_sell, "0.30000");
    let one = rig
        .risk()
        .get_positions(authed(pb::GetPositionsRequest { account: 3 }, Some(RISK)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.positions, vec![bob]);
    rig.stop().await;
}

#[tokio::test]
async fn limits_set_by_an_admin_are_enforced_with_typed_rejects() {
    let rig = start_rig().await;
    let limits = pb::AccountLimits {
        max_open_orders: Some(2),
        max_orders_per_sec: None,
        instruments: vec![pb::InstrumentLimits {
            instrument: "BTC-USD".into(),
            max_order_size: Some("0.1".into()),
            max_order_notional: None,
            max_long: Some("0.15".into()),
            max_short: None,
        }],
    };
    let set = |token| {
        authed(
            pb::SetLimitsRequest {
                account: 1,
                limits: Some(limits.clone()),
            },
            Some(token),
        )
    };
    let denied = rig.risk().set_limits(set(RISK)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let done = rig
        .risk()
        .set_limits(set(ADMIN))
        .await
        .unwrap()
        .into_inner();
    assert!(done.result.unwrap().accepted);

    let got = rig
        .risk()
        .get_limits(authed(pb::GetLimitsRequest { account: 1 }, Some(RISK)))
        .await
        .unwrap()
        .into_inner();
    let own = got.limits.unwrap();
    assert_eq!(own.max_open_orders, Some(2));
    assert_eq!(
        own.instruments[0].max_order_size.as_deref(),
        Some("0.10000")
    );
    assert!(got.default_limits.is_none());
    assert!(!got.disabled);

    let reject = |r: pb::PlaceOrderResponse| r.result.unwrap().reject_reason();
    let big = limit("BTC-USD", pb::Side::Buy, "64000.00", "0.2");
    assert_eq!(
        reject(place(&rig, TRADER, big).await),
        pb::RejectReason::MaxOrderSize
    );
    let buy = || limit("BTC-USD", pb::Side::Buy, "64000.00", "0.1");
    assert_eq!(
        reject(place(&rig, TRADER, buy()).await),
        pb::RejectReason::Unspecified
    );
    // 0.1 open + 0.1 more would be long 0.2 if both filled: beyond 0.15.
    assert_eq!(
        reject(place(&rig, TRADER, buy()).await),
        pb::RejectReason::MaxPositionLong
    );
    let sell = || limit("BTC-USD", pb::Side::Sell, "66000.00", "0.01");
    assert_eq!(
        reject(place(&rig, TRADER, sell()).await),
        pb::RejectReason::Unspecified
    );
    assert_eq!(
        reject(place(&rig, TRADER, sell()).await),
        pb::RejectReason::MaxOpenOrders
    );
    // Bob has no limits of his own and there is no default set.
    let bob = place(&rig, BOB, limit("BTC-USD", pb::Side::Buy, "64000.00", "1")).await;
    assert!(bob.result.unwrap().accepted);

    // A bad limit names its field and changes nothing.
    let bad = pb::SetLimitsRequest {
        account: 1,
        limits: Some(pb::AccountLimits {
            instruments: vec![pb::InstrumentLimits {
                instrument: "BTC-USD".into(),
                max_order_size: Some("0.000001".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    let status = rig
        .risk()
        .set_limits(authed(bad, Some(ADMIN)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        bad_fields(&status),
        ["limits.instruments[BTC-USD].max_order_size"]
    );
    rig.stop().await;
}

#[tokio::test]
async fn the_kill_switch_stops_a_trader_mid_flow_and_cancels_its_orders() {
    kill_switch_mid_flow(1).await;
}

/// On two shards (the flow on BTC-USD's, the resting orders on both) the switch is one command
/// per shard with one reply.
#[tokio::test]
async fn the_kill_switch_stops_a_trader_mid_flow_and_cancels_its_orders_on_two_shards() {
    kill_switch_mid_flow(2).await;
}

async fn kill_switch_mid_flow(shards: usize) {
    let rig = start_rig_on(shards).await;
    let mut resting = Vec::new();
    for (instrument, price, size) in [
        ("BTC-USD", "63000.00", "0.01"),
        ("ETH-USD", "3100.00", "0.1"),
    ] {
        let p = place(&rig, TRADER, limit(instrument, pb::Side::Buy, price, size)).await;
        resting.push(p.order.unwrap().order_id);
    }
    // Alice keeps placing while the risk desk pulls the switch.
    let orders = rig.orders();
    let flow = tokio::spawn(async move {
        let mut results = Vec::new();
        for i in 0..200 {
            let price = format!("{}.00", 62000 + i);
            let req = limit("BTC-USD", pb::Side::Buy, &price, "0.001");
            let r = orders
                .clone()
                .place_order(authed(req, Some(TRADER)))
                .await
                .unwrap()
                .into_inner();
            let result = r.result.unwrap();
            results.push((
                result.engine_seq,
                result.reject_reason(),
                r.order.map(|o| o.order_id),
            ));
        }
        results
    });
    let killed = rig
        .risk()
        .disable_account(authed(pb::AccountRequest { account: 1 }, Some(RISK)))
        .await
        .unwrap()
        .into_inner();
    let decision = killed.result.unwrap();
    assert!(decision.accepted);
    let results = flow.await.unwrap();
    // Every order the engine took before the switch is cancelled by it; every one after is
    // refused by name. With one engine "before" is by `seq`; shards' events have no order
    // between them (the reply's `seq` is where the last shard's outcome merged), so there the
    // orders taken are those not refused.
    let mut accepted: Vec<u64> = resting.clone();
    for (seq, reason, id) in &results {
        let taken = if shards == 1 {
            *seq < decision.engine_seq
        } else {
            *reason != pb::RejectReason::AccountDisabled
        };
        if taken {
            assert_eq!(*reason, pb::RejectReason::Unspecified);
            accepted.push(id.unwrap());
        } else {
            assert_eq!(*reason, pb::RejectReason::AccountDisabled);
        }
    }
    let mut cancelled = killed.cancelled_order_ids.clone();
    cancelled.sort();
    accepted.sort();
    assert_eq!(cancelled, accepted);
    let positions = rig
        .risk()
        .get_positions(authed(pb::GetPositionsRequest { account: 1 }, Some(RISK)))
        .await
        .unwrap()
        .into_inner();
    assert!(positions
        .positions
        .iter()
        .all(|p| p.open_buy.chars().all(|c| c == '0' || c == '.')));
    let view = rig
        .risk()
        .get_limits(authed(pb::GetLimitsRequest { account: 1 }, Some(RISK)))
        .await
        .unwrap()
        .into_inner();
    assert!(view.disabled);
    // A trader cannot pull it; enabled again, Alice trades.
    let denied = rig
        .risk()
        .enable_account(authed(pb::AccountRequest { account: 1 }, Some(TRADER)))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let enabled = rig
        .risk()
        .enable_account(authed(pb::AccountRequest { account: 1 }, Some(RISK)))
        .await
        .unwrap()
        .into_inner();
    assert!(enabled.result.unwrap().accepted);
    let again = place(
        &rig,
        TRADER,
        limit("BTC-USD", pb::Side::Buy, "63000.00", "0.01"),
    )
    .await;
    assert!(again.result.unwrap().accepted);
    rig.stop().await;
}

#[test]
fn configured_limits_apply_at_start_and_bad_ones_stop_it() {
    use std::collections::BTreeMap;
    use ticker_engine::{CommandKind, EventKind, Place, RejectReason, Side};
    use ticker_servers::limits::{InstrumentLimitsSpec, LimitsSpec, RiskLimits};
    let spec = |size: &str| LimitsSpec {
        instruments: BTreeMap::from([(
            "BTC-USD".to_string(),
            InstrumentLimitsSpec {
                max_order_size: Some(size.into()),
                ..InstrumentLimitsSpec::default()
            },
        )]),
        ..LimitsSpec::default()
    };
    let config = |size: &str| MarketConfig {
        simulator: None,
        risk: RiskLimits {
            default: None,
            accounts: BTreeMap::from([(1, spec(size))]),
        },
        ..MarketConfig::default()
    };
    let market = Market::start(config("0.5")).unwrap();
    let own = market.limits().get(1).own.unwrap();
    assert_eq!(own.instrument(0).unwrap().max_order_lots, Some(50_000));
    // 0.6 BTC at 64,000.00: beyond the configured 0.5.
    let events = market.execute_blocking(CommandKind::Place(Place::limit(
        1,
        0,
        Side::Buy,
        6_400_000,
        60_000,
    )));
    assert!(matches!(
        events[0].kind,
        EventKind::Rejected {
            reason: RejectReason::MaxOrderSize,
            ..
        }
    ));
    market.shutdown();
    let Err(e) = Market::start(config("half")) else {
        panic!("a bad limit starts nothing");
    };
    assert!(
        e.to_string()
            .contains("risk.accounts.1.instruments[BTC-USD].max_order_size"),
        "{e}"
    );
}

/// The longest values a request can carry (every string field filled to share the 4 MiB message
/// limit, hundreds of thousands of accounts) on every RPC of the four services: each answer
/// — status message and details, or a per-request error — stays under 4 KB, quoting at most
/// a short prefix of any value, so no client refuses it as oversized metadata.
#[tokio::test]
async fn the_longest_inputs_on_every_rpc_get_short_answers() {
    use prost::Message;
    const SHORT: usize = 4096;
    const LIMIT: usize = 4 << 20;
    // Each of `fields` long strings, so that together they fill the message limit.
    let long = |fields: usize, fill: char| fill.to_string().repeat(LIMIT / fields - 1024);
    let checked = |rpc: &str, answer: Result<usize, tonic::Status>| match answer {
        Ok(len) => assert!(len < SHORT, "{rpc}: a {len}-byte answer"),
        Err(s) => {
            let len = s.message().len() + s.details().len();
            assert!(len < SHORT, "{rpc}: a {len}-byte status: {:?}", s.code());
            // A typed refusal of the request, never a transport failure (a trailer too large
            // for the client surfaces as RESOURCE_EXHAUSTED "h2 protocol error").
            assert!(
                matches!(
                    s.code(),
                    Code::InvalidArgument | Code::Unauthenticated | Code::NotFound
                ),
                "{rpc}: {:?} {}",
                s.code(),
                s.message()
            );
        }
    };
    let rig = start_rig().await;
    let place = pb::PlaceOrderRequest {
        instrument: long(5, 'X'),
        side: pb::Side::Buy as i32,
        order_type: pb::OrderType::StopLimit as i32,
        price: long(5, '9'),
        trigger_price: long(5, '8'),
        size: long(5, '7'),
        display_size: long(5, '6'),
        ..Default::default()
    };
    let amend = pb::AmendOrderRequest {
        order: Some(pb::amend_order_request::Order::ClientOrderId(u64::MAX)),
        price: Some(long(4, '9')),
        size: Some(long(4, '7')),
        trigger_price: Some(long(4, '8')),
        instrument: long(4, 'X'),
    };
    let mass_cancel = pb::MassCancelRequest {
        instrument: long(1, 'X'),
        side: pb::Side::Sell as i32,
    };
    let len = |r: Result<tonic::Response<_>, tonic::Status>| {
        r.map(|r: tonic::Response<pb::PlaceOrderResponse>| r.get_ref().encoded_len())
    };
    checked(
        "PlaceOrder",
        len(rig
            .orders()
            .place_order(authed(place.clone(), Some(TRADER)))
            .await),
    );
    checked(
        "CancelOrder",
        rig.orders()
            .cancel_order(authed(
                pb::CancelOrderRequest {
                    order: Some(pb::cancel_order_request::Order::OrderId(u64::MAX)),
                },
                Some(TRADER),
            ))
            .await
            .map(|r| r.get_ref().encoded_len()),
    );
    checked(
        "AmendOrder",
        rig.orders()
            .amend_order(authed(amend.clone(), Some(TRADER)))
            .await
            .map(|r| r.get_ref().encoded_len()),
    );
    checked(
        "MassCancel",
        rig.orders()
            .mass_cancel(authed(mass_cancel.clone(), Some(TRADER)))
            .await
            .map(|r| r.get_ref().encoded_len()),
    );
    // Streams of one long request each: the per-request answers are short too.
    checked(
        "BulkPlaceOrders",
        rig.orders()
            .bulk_place_orders(authed(
                tokio_stream::iter(vec![place.clone()]),
                Some(TRADER),
            ))
            .await
            .map(|r| r.get_ref().encoded_len()),
    );
    let session = vec![
        pb::SessionRequest {
            request_id: 1,
            action: Some(pb::session_request::Action::Place(place.clone())),
        },
        pb::SessionRequest {
            request_id: 2,
            action: Some(pb::session_request::Action::Amend(amend)),
        },
        pb::SessionRequest {
            request_id: 3,
            action: Some(pb::session_request::Action::MassCancel(mass_cancel)),
        },
    ];
    match rig
        .orders()
        .order_session(authed(tokio_stream::iter(session), Some(TRADER)))
        .await
    {
        Ok(r) => {
            let mut answers = r.into_inner();
            for id in 1..=3 {
                let answer = answers.message().await.unwrap().expect("an answer");
                assert_eq!(answer.request_id, id);
                checked("OrderSession", Ok(answer.encoded_len()));
            }
        }
        Err(s) => checked("OrderSession", Err(s)),
    }
    checked(
        "SubscribeOrderUpdates",
        rig.orders()
            .subscribe_order_updates(authed(
                pb::SubscribeOrderUpdatesRequest {
                    from_seq: Some(u64::MAX),
                },
                Some(TRADER),
            ))
            .await
            .map(|_| 0),
    );
    // Market data.
    checked(
        "Subscribe",
        rig.market_data()
            .subscribe(pb::SubscribeRequest {
                instruments: vec![long(2, 'X')],
                channels: vec![pb::Channel::Trades as i32],
                resume: vec![pb::ResumePoint {
                    instrument: long(2, 'Y'),
                    channel: pb::Channel::Trades as i32,
                    from_seq: u64::MAX,
                }],
                ..Default::default()
            })
            .await
            .map(|_| 0),
    );
    checked(
        "GetDepthSnapshot",
        rig.market_data()
            .get_depth_snapshot(pb::GetDepthSnapshotRequest {
                instrument: long(1, 'X'),
            })
            .await
            .map(|r| r.get_ref().encoded_len()),
    );
    // Risk: as many accounts as the limit holds, and limits with long decimals.
    let accounts: Vec<u64> = (0..(LIMIT / 11) as u64).map(|a| a | 1 << 62).collect();
    checked(
        "StreamDropCopy",
        rig.risk()
            .stream_drop_copy(authed(
                pb::StreamDropCopyRequest {
                    from_seq: Some(u64::MAX),
                    accounts: accounts.clone(),
                },
                Some(RISK),
            ))
            .await
            .map(|_| 0),
    );
    checked(
        "StreamPositions",
        rig.risk()
            .stream_positions(authed(
                pb::StreamPositionsRequest {
                    from_seq: Some(u64::MAX),
                    accounts,
                },
                Some(RISK),
            ))
            .await
            .map(|_| 0),
    );
    for (rpc, answer) in [
        (
            "GetPositions",
            rig.risk()
                .get_positions(authed(
                    pb::GetPositionsRequest { account: u64::MAX },
                    Some(RISK),
                ))
                .await
                .map(|r| r.get_ref().encoded_len()),
        ),
        (
            "GetLimits",
            rig.risk()
                .get_limits(authed(
                    pb::GetLimitsRequest { account: u64::MAX },
                    Some(RISK),
                ))
                .await
                .map(|r| r.get_ref().encoded_len()),
        ),
        (
            "DisableAccount",
            rig.risk()
                .disable_account(authed(pb::AccountRequest { account: u64::MAX }, Some(RISK)))
                .await
                .map(|r| r.get_ref().encoded_len()),
        ),
        (
            "EnableAccount",
            rig.risk()
                .enable_account(authed(pb::AccountRequest { account: u64::MAX }, Some(RISK)))
                .await
                .map(|r| r.get_ref().encoded_len()),
        ),
    ] {
        checked(rpc, answer);
    }
    checked(
        "SetLimits",
        rig.risk()
            .set_limits(authed(
                pb::SetLimitsRequest {
                    account: 1,
                    limits: Some(pb::AccountLimits {
                        instruments: vec![pb::InstrumentLimits {
                            instrument: long(5, 'X'),
                            max_order_size: Some(long(5, '9')),
                            max_order_notional: Some(long(5, '8')),
                            max_long: Some(long(5, '7')),
                            max_short: Some(long(5, '6')),
                        }],
                        ..Default::default()
                    }),
                },
                Some(ADMIN),
            ))
            .await
            .map(|r| r.get_ref().encoded_len()),
    );
    // Admin.
    checked(
        "AddInstrument",
        rig.admin()
            .add_instrument(authed(
                pb::AddInstrumentRequest {
                    symbol: long(7, 'X'),
                    tick_size: long(7, '1'),
                    lot_size: long(7, '2'),
                    min_size: long(7, '3'),
                    max_size: long(7, '4'),
                    reference_price: long(7, '5'),
                    band: long(7, '6'),
                },
                Some(ADMIN),
            ))
            .await
            .map(|r| r.get_ref().encoded_len()),
    );
    checked(
        "HaltInstrument",
        rig.admin()
            .halt_instrument(authed(
                pb::HaltInstrumentRequest {
                    symbol: long(1, 'X'),
                },
                Some(ADMIN),
            ))
            .await
            .map(|r| r.get_ref().encoded_len()),
    );
    checked(
        "ResumeInstrument",
        rig.admin()
            .resume_instrument(authed(
                pb::ResumeInstrumentRequest {
                    symbol: long(1, 'X'),
                },
                Some(ADMIN),
            ))
            .await
            .map(|r| r.get_ref().encoded_len()),
    );
    // A bearer token as long as the metadata limit allows is refused briefly as well.
    let e = rig
        .orders()
        .place_order(authed(place, Some(&"t".repeat(15_000))))
        .await
        .expect_err("an unknown token");
    assert_eq!(e.code(), Code::Unauthenticated);
    checked("PlaceOrder (long token)", Err(e));
    rig.stop().await;
}
