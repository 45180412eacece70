//! The gRPC front against a real market (no simulator, but for the candles test of a simulated
//! past): every RPC through a tonic client on loopback, the error statuses, resume,
//! cancel-on-disconnect, health, reflection and a hand-framed gRPC-Web call over HTTP/1.1.

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use ticker_proto::v1 as pb;
use ticker_proto::v1::market_data_service_client::MarketDataServiceClient;
use ticker_servers::grpc::{AuthConfig, GrpcConfig, GrpcServer, TlsFiles};
use ticker_servers::market::{Market, MarketConfig};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Streaming};
use tonic_types::StatusExt;

mod grpc_rig;

use grpc_rig::{authed, bad_fields, limit, place, Rig};

const ALICE: &str = "alice-token";
const BOB: &str = "bob-token";

/// A rig on `config` with the test's traders.
async fn start_rig_with(config: GrpcConfig) -> Rig {
    Rig::start_with(with_traders(config)).await
}

/// A rig on `market` and `config` with the test's traders.
async fn start_rig_on(market: MarketConfig, config: GrpcConfig) -> Rig {
    Rig::start_on(market, with_traders(config)).await
}

fn with_traders(config: GrpcConfig) -> GrpcConfig {
    GrpcConfig {
        auth: AuthConfig::traders([(ALICE, 1), (BOB, 2)]),
        ..config
    }
}

async fn start_rig() -> Rig {
    start_rig_with(GrpcConfig::default()).await
}

/// The next order update that is not a snapshot.
async fn next_update(stream: &mut Streaming<pb::OrderUpdate>) -> pb::OrderUpdate {
    loop {
        let u = stream.message().await.unwrap().expect("stream open");
        if !matches!(u.event, Some(pb::order_update::Event::Snapshot(_))) {
            return u;
        }
    }
}

#[tokio::test]
async fn a_resting_order_is_filled_by_a_crossing_one() {
    let rig = start_rig().await;
    let ask = place(
        &rig,
        ALICE,
        limit("BTC-USD", pb::Side::Sell, "65000.00", "0.5"),
    )
    .await;
    let result = ask.result.unwrap();
    assert!(result.accepted);
    let ask = ask.order.unwrap();
    assert_eq!(ask.status(), pb::OrderStatus::Resting);
    assert_eq!(ask.visible_size, "0.50000");
    assert_eq!(ask.price, "65000.00");

    let bid = place(
        &rig,
        BOB,
        limit("BTC-USD", pb::Side::Buy, "65000.00", "0.2"),
    )
    .await;
    let bid = bid.order.unwrap();
    assert_eq!(bid.status(), pb::OrderStatus::Done);
    assert_eq!(bid.done_reason(), pb::DoneReason::Filled);
    assert_eq!(bid.filled_size, "0.20000");
    assert_eq!(bid.fills.len(), 1);
    assert_eq!(bid.fills[0].price, "65000.00");
    assert_eq!(bid.fills[0].size, "0.20000");
    assert_eq!(bid.fills[0].liquidity(), pb::Liquidity::Taker);
    rig.stop().await;
}

#[tokio::test]
async fn order_rpcs_need_a_known_bearer_token() {
    let rig = start_rig().await;
    let req = limit("BTC-USD", pb::Side::Buy, "65000.00", "1");
    let none = rig.orders().place_order(req.clone()).await.unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated);
    let wrong = rig
        .orders()
        .place_order(authed(req, "mallory"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let updates = rig
        .orders()
        .subscribe_order_updates(pb::SubscribeOrderUpdatesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(updates.code(), Code::Unauthenticated);
    let bulk = rig
        .orders()
        .bulk_place_orders(tokio_stream::iter(Vec::<pb::PlaceOrderRequest>::new()))
        .await
        .unwrap_err();
    assert_eq!(bulk.code(), Code::Unauthenticated);
    // Market data is public by default.
    let list = rig
        .market_data()
        .list_instruments(pb::ListInstrumentsRequest {})
        .await
        .unwrap();
    assert_eq!(list.into_inner().instruments.len(), 4);
    rig.stop().await;
}

#[tokio::test]
async fn an_account_cannot_touch_another_accounts_order() {
    let rig = start_rig().await;
    let ask = place(
        &rig,
        ALICE,
        limit("ETH-USD", pb::Side::Sell, "3300.00", "1"),
    )
    .await;
    let id = ask.order.unwrap().order_id;
    let cancel = pb::CancelOrderRequest {
        order: Some(pb::cancel_order_request::Order::OrderId(id)),
    };
    let err = rig
        .orders()
        .cancel_order(authed(cancel, BOB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let amend = pb::AmendOrderRequest {
        order: Some(pb::amend_order_request::Order::OrderId(id)),
        size: Some("0.5".into()),
        instrument: "ETH-USD".into(),
        ..Default::default()
    };
    let err = rig
        .orders()
        .amend_order(authed(amend, BOB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Bob's order updates never show Alice's order: his first update is his own.
    let mut bob_updates = rig
        .orders()
        .subscribe_order_updates(authed(pb::SubscribeOrderUpdatesRequest::default(), BOB))
        .await
        .unwrap()
        .into_inner();
    let bobs = place(&rig, BOB, limit("ETH-USD", pb::Side::Buy, "3100.00", "1")).await;
    let first = next_update(&mut bob_updates).await;
    let Some(pb::order_update::Event::Accepted(accepted)) = first.event else {
        panic!("Bob's own accepted order: {first:?}");
    };
    assert_eq!(
        accepted.order.unwrap().order_id,
        bobs.order.unwrap().order_id
    );

    let own = rig
        .orders()
        .cancel_order(authed(cancel, ALICE))
        .await
        .unwrap()
        .into_inner();
    assert!(own.result.unwrap().accepted);
    let order = own.order.unwrap();
    assert_eq!(order.status(), pb::OrderStatus::Done);
    assert_eq!(order.done_reason(), pb::DoneReason::Cancelled);
    rig.stop().await;
}

#[tokio::test]
async fn a_malformed_order_is_invalid_argument_and_an_engine_reject_is_an_answer() {
    let rig = start_rig().await;
    let err = rig
        .orders()
        .place_order(authed(
            limit("BTC-USD", pb::Side::Buy, "65000.001", "0.000001"),
            ALICE,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&err), ["price", "size"]);
    let bad = err.get_details_bad_request().expect("BadRequest detail");
    assert!(bad.field_violations[0]
        .description
        .contains("tick size 0.01"));

    let err = rig
        .orders()
        .place_order(authed(limit("DOGE-USD", pb::Side::Buy, "1", "1"), ALICE))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err)[0], "instrument");

    // One decimal form on the wire: "65000." and ".5" are refused, each field named.
    let err = rig
        .orders()
        .place_order(authed(
            limit("BTC-USD", pb::Side::Buy, "65000.", ".5"),
            ALICE,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["price", "size"]);
    let bad = err.get_details_bad_request().expect("BadRequest detail");
    assert!(bad.field_violations[1]
        .description
        .contains("not a decimal number"));

    // On the grid but outside the price band: the engine's typed reject, not an error.
    let far = place(&rig, ALICE, limit("BTC-USD", pb::Side::Buy, "1.00", "1")).await;
    let result = far.result.unwrap();
    assert!(!result.accepted);
    assert_eq!(result.reject_reason(), pb::RejectReason::OutsideBand);
    assert!(far.order.is_none());
    rig.stop().await;
}

#[tokio::test]
async fn amend_reprices_and_mass_cancel_cancels_the_rest() {
    let rig = start_rig().await;
    let mut a = limit("SOL-USD", pb::Side::Buy, "150.000", "2");
    a.client_order_id = 77;
    place(&rig, ALICE, a).await;
    place(&rig, ALICE, limit("SOL-USD", pb::Side::Buy, "149.000", "3")).await;
    let amend = pb::AmendOrderRequest {
        order: Some(pb::amend_order_request::Order::ClientOrderId(77)),
        price: Some("151.500".into()),
        instrument: "SOL-USD".into(),
        ..Default::default()
    };
    let amended = rig
        .orders()
        .amend_order(authed(amend.clone(), ALICE))
        .await
        .unwrap()
        .into_inner();
    assert!(amended.result.unwrap().accepted);
    let order = amended.order.unwrap();
    assert_eq!(
        (order.price.as_str(), order.status()),
        ("151.500", pb::OrderStatus::Resting)
    );

    // The instrument must be the order's: decimals are read on its grid.
    let wrong = pb::AmendOrderRequest {
        instrument: "BTC-USD".into(),
        price: Some("65000.00".into()),
        ..amend
    };
    let err = rig
        .orders()
        .amend_order(authed(wrong, ALICE))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let mass = rig
        .orders()
        .mass_cancel(authed(
            pb::MassCancelRequest {
                instrument: "SOL-USD".into(),
                side: pb::Side::Unspecified as i32,
            },
            ALICE,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(mass.result.unwrap().accepted);
    assert_eq!(mass.cancelled_order_ids.len(), 2);
    rig.stop().await;
}

#[tokio::test]
async fn bulk_place_answers_each_order_in_its_slot() {
    let rig = start_rig().await;
    let orders = vec![
        limit("ETH-USD", pb::Side::Buy, "3100.00", "1"),
        limit("ETH-USD", pb::Side::Buy, "3100.00", "0.00001"),
        limit("ETH-USD", pb::Side::Buy, "1.00", "1"),
    ];
    let summary = rig
        .orders()
        .bulk_place_orders(authed(tokio_stream::iter(orders), ALICE))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (summary.accepted, summary.rejected, summary.errors),
        (1, 1, 1)
    );
    use pb::bulk_place_result::Outcome;
    let outcomes: Vec<_> = summary
        .results
        .iter()
        .map(|r| (r.index, r.outcome.clone().unwrap()))
        .collect();
    assert!(matches!(&outcomes[0], (0, Outcome::Placed(p)) if p.result.unwrap().accepted));
    let (1, Outcome::Error(e)) = &outcomes[1] else {
        panic!("slot 1 is a request error: {outcomes:?}");
    };
    assert_eq!(e.code, Code::InvalidArgument as i32);
    assert_eq!(e.field_violations[0].field, "size");
    assert!(matches!(&outcomes[2], (2, Outcome::Placed(p))
        if p.result.unwrap().reject_reason() == pb::RejectReason::OutsideBand));
    rig.stop().await;
}

#[tokio::test]
async fn bulk_place_submits_each_order_as_it_arrives_and_answers_in_order() {
    let rig = start_rig().await;
    // More orders than the engine answers one round trip at a time in the test's guard.
    let orders: Vec<_> = (0..500)
        .map(|i| {
            limit(
                "ETH-USD",
                pb::Side::Buy,
                &format!("{}.00", 3000 - i % 50),
                "0.01",
            )
        })
        .collect();
    let summary = rig
        .orders()
        .bulk_place_orders(authed(tokio_stream::iter(orders), ALICE))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((summary.accepted, summary.errors), (500, 0));
    let mut last_seq = 0;
    for (i, r) in summary.results.iter().enumerate() {
        assert_eq!(r.index, i as u32);
        let Some(pb::bulk_place_result::Outcome::Placed(p)) = &r.outcome else {
            panic!("slot {i}: {r:?}");
        };
        // The engine decided them in the order they were sent.
        let seq = p.result.as_ref().unwrap().engine_seq;
        assert!(
            seq > last_seq,
            "slot {i}: engine_seq {seq} after {last_seq}"
        );
        last_seq = seq;
    }
    rig.stop().await;
}

#[tokio::test]
async fn order_updates_start_from_a_snapshot_and_resume_from_a_sequence_number() {
    let rig = start_rig().await;
    let mut updates = rig
        .orders()
        .subscribe_order_updates(authed(pb::SubscribeOrderUpdatesRequest::default(), ALICE))
        .await
        .unwrap()
        .into_inner();
    let snapshot = updates.message().await.unwrap().unwrap();
    assert_eq!(snapshot.delivery(), pb::Delivery::Snapshot);
    assert!(matches!(
        snapshot.event,
        Some(pb::order_update::Event::Snapshot(_))
    ));

    let placed = place(
        &rig,
        ALICE,
        limit("BTC-USD", pb::Side::Buy, "64000.00", "1"),
    )
    .await;
    let id = placed.order.unwrap().order_id;
    let accepted = next_update(&mut updates).await;
    let rested = next_update(&mut updates).await;
    assert_eq!((accepted.seq, accepted.prev_seq), (1, 0));
    assert_eq!((rested.seq, rested.prev_seq), (2, 1));
    let Some(pb::order_update::Event::Rested(r)) = &rested.event else {
        panic!("rested: {rested:?}");
    };
    assert_eq!(
        (r.order_id, r.price.as_str(), r.visible_size.as_str()),
        (id, "64000.00", "1.00000")
    );

    // A client that saw seq 1 resumes after it: the next message is seq 2, live.
    let mut resumed = rig
        .orders()
        .subscribe_order_updates(authed(
            pb::SubscribeOrderUpdatesRequest { from_seq: Some(1) },
            ALICE,
        ))
        .await
        .unwrap()
        .into_inner();
    let again = resumed.message().await.unwrap().unwrap();
    assert_eq!(again.delivery(), pb::Delivery::Update);
    assert_eq!(again, rested);
    rig.stop().await;
}

async fn session_request(
    tx: &tokio::sync::mpsc::Sender<pb::SessionRequest>,
    request_id: u64,
    action: pb::session_request::Action,
) {
    tx.send(pb::SessionRequest {
        request_id,
        action: Some(action),
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_order_session_pipelines_requests_and_keeps_their_order() {
    use pb::session_request::Action;
    use pb::session_response::Event;
    let rig = start_rig().await;
    const PAIRS: u64 = 200;
    // Every request is sent before any answer is read: place then cancel of the same client
    // order id, so a cancel that overtook its place would be refused as unknown.
    let (tx, rx) = tokio::sync::mpsc::channel(2 * PAIRS as usize + 1);
    session_request(&tx, 0, Action::Start(pb::SessionStart::default())).await;
    for k in 1..=PAIRS {
        let mut bid = limit("BTC-USD", pb::Side::Buy, "64000.00", "0.001");
        bid.client_order_id = k;
        session_request(&tx, 2 * k - 1, Action::Place(bid)).await;
        let cancel = pb::CancelOrderRequest {
            order: Some(pb::cancel_order_request::Order::ClientOrderId(k)),
        };
        session_request(&tx, 2 * k, Action::Cancel(cancel)).await;
    }
    drop(tx);
    let mut responses = rig
        .orders()
        .order_session(authed(ReceiverStream::new(rx), ALICE))
        .await
        .unwrap()
        .into_inner();
    let mut expected = 0;
    while let Some(r) = responses.message().await.unwrap() {
        assert_eq!(r.request_id, expected, "answers come in request order");
        let accepted = match r.event {
            Some(Event::Started(_)) => true,
            Some(Event::Placed(p)) => p.result.unwrap().accepted,
            Some(Event::Cancelled(c)) => c.result.unwrap().accepted,
            other => panic!("request {expected}: {other:?}"),
        };
        assert!(accepted, "request {expected} was refused");
        expected += 1;
    }
    assert_eq!(expected, 2 * PAIRS + 1);
}

#[tokio::test]
async fn an_order_session_answers_each_request_and_cancels_on_disconnect() {
    use pb::session_request::Action;
    use pb::session_response::Event;
    let rig = start_rig().await;
    let mut watch = rig
        .orders()
        .subscribe_order_updates(authed(pb::SubscribeOrderUpdatesRequest::default(), ALICE))
        .await
        .unwrap()
        .into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut responses = rig
        .orders()
        .order_session(authed(ReceiverStream::new(rx), ALICE))
        .await
        .unwrap()
        .into_inner();
    let start = pb::SessionStart {
        cancel_on_disconnect: true,
        order_updates: true,
        order_updates_from_seq: None,
    };
    session_request(&tx, 1, Action::Start(start)).await;
    let started = responses.message().await.unwrap().unwrap();
    assert!(matches!(started.event, Some(Event::Started(s)) if s.cancel_on_disconnect));

    let ask = limit("BTC-USD", pb::Side::Sell, "65100.00", "1");
    session_request(&tx, 2, Action::Place(ask)).await;
    // The session also streams the account's updates; find the answer to request 2.
    let mut order_id = 0;
    while order_id == 0 {
        let r = responses.message().await.unwrap().unwrap();
        if let (2, Some(Event::Placed(p))) = (r.request_id, &r.event) {
            order_id = p.order.as_ref().unwrap().order_id;
        }
    }
    // A fill of the resting order arrives as an order update in the session.
    place(
        &rig,
        BOB,
        limit("BTC-USD", pb::Side::Buy, "65100.00", "0.25"),
    )
    .await;
    loop {
        let r = responses.message().await.unwrap().unwrap();
        if let Some(Event::Update(pb::OrderUpdate {
            event: Some(pb::order_update::Event::Fill(f)),
            ..
        })) = r.event
        {
            assert_eq!((f.order_id, f.size.as_str()), (order_id, "0.25000"));
            assert_eq!(f.liquidity(), pb::Liquidity::Maker);
            break;
        }
    }
    let bad = limit("BTC-USD", pb::Side::Sell, "65100.005", "1");
    session_request(&tx, 3, Action::Place(bad)).await;
    loop {
        let r = responses.message().await.unwrap().unwrap();
        if r.request_id == 3 {
            let Some(Event::Error(e)) = r.event else {
                panic!("an error answer: {r:?}");
            };
            assert_eq!(e.field_violations[0].field, "price");
            break;
        }
    }

    // The client goes away: the session's live order is cancelled.
    drop(tx);
    drop(responses);
    loop {
        let u = next_update(&mut watch).await;
        if let Some(pb::order_update::Event::Done(d)) = u.event {
            assert_eq!(d.order_id, order_id);
            assert_eq!(d.reason(), pb::DoneReason::SessionClosed);
            assert_eq!(d.cancelled_size, "0.75000");
            break;
        }
    }
    rig.stop().await;
}

#[tokio::test]
async fn a_request_past_its_deadline_is_not_executed() {
    let rig = start_rig().await;
    let mut updates = rig
        .orders()
        .subscribe_order_updates(authed(pb::SubscribeOrderUpdatesRequest::default(), ALICE))
        .await
        .unwrap()
        .into_inner();
    // One nanosecond: past before the command is stamped at the engine's ingress. Sent by
    // hand, because tonic's client enforces the deadline itself (as CANCELLED) before the
    // server can answer.
    let place = limit("BTC-USD", pb::Side::Buy, "64000.00", "1");
    let answer = grpc_web_call(
        &rig,
        "/ticker.v1.OrderService/PlaceOrder",
        &place.encode_to_vec(),
        &[
            ("authorization", "Bearer alice-token"),
            ("grpc-timeout", "1n"),
        ],
    )
    .await;
    assert!(answer.message.is_none());
    assert!(
        answer.trailers.contains("grpc-status:4"),
        "DEADLINE_EXCEEDED: {}",
        answer.trailers
    );
    let u = next_update(&mut updates).await;
    let Some(pb::order_update::Event::Rejected(r)) = u.event else {
        panic!("the engine refused it: {u:?}");
    };
    assert_eq!(r.reason(), pb::RejectReason::DeadlineExceeded);
    rig.stop().await;
}

#[tokio::test]
async fn market_data_streams_snapshots_updates_trades_and_resumes() {
    use pb::market_data_message::Payload;
    let rig = start_rig().await;
    let subscribe = pb::SubscribeRequest {
        instruments: vec!["BTC-USD".into()],
        channels: vec![pb::Channel::Depth as i32, pb::Channel::Trades as i32],
        ..Default::default()
    };
    let mut stream = rig
        .market_data()
        .subscribe(subscribe.clone())
        .await
        .unwrap()
        .into_inner();
    let snapshot = stream.message().await.unwrap().unwrap();
    assert_eq!(snapshot.delivery(), pb::Delivery::Snapshot);
    assert!(
        matches!(snapshot.payload, Some(Payload::Depth(ref d)) if d.snapshot && d.bids.is_empty())
    );

    place(
        &rig,
        ALICE,
        limit("BTC-USD", pb::Side::Sell, "65000.50", "0.25"),
    )
    .await;
    let update = stream.message().await.unwrap().unwrap();
    let Some(Payload::Depth(depth)) = &update.payload else {
        panic!("a depth update: {update:?}");
    };
    assert_eq!(update.prev_seq, snapshot.seq);
    assert_eq!(
        depth.asks,
        vec![pb::Level {
            price: "65000.50".into(),
            size: "0.25000".into()
        }]
    );
    // Checksum: "6500050" "25000" (no bids), as docs/feeds.md describes.
    assert_eq!(depth.checksum, crc32(b"650005025000"));

    place(
        &rig,
        BOB,
        limit("BTC-USD", pb::Side::Buy, "65000.50", "0.1"),
    )
    .await;
    place(
        &rig,
        BOB,
        limit("BTC-USD", pb::Side::Buy, "65000.50", "0.05"),
    )
    .await;
    let mut trades = Vec::new();
    while trades.len() < 2 {
        let m = stream.message().await.unwrap().unwrap();
        if let Some(Payload::Trade(t)) = &m.payload {
            trades.push((m.seq, m.prev_seq, t.clone()));
        }
    }
    assert_eq!(trades[0].2.price, "65000.50");
    assert_eq!(trades[0].2.side(), pb::Side::Buy);
    assert_eq!(trades[1].1, trades[0].0, "prev_seq chains the topic");

    // Resume trades after the first one: only the second is replayed.
    let resume = pb::SubscribeRequest {
        channels: vec![pb::Channel::Trades as i32],
        resume: vec![pb::ResumePoint {
            instrument: "BTC-USD".into(),
            channel: pb::Channel::Trades as i32,
            from_seq: trades[0].0,
        }],
        ..subscribe
    };
    let mut resumed = rig
        .market_data()
        .subscribe(resume)
        .await
        .unwrap()
        .into_inner();
    let replayed = resumed.message().await.unwrap().unwrap();
    assert_eq!(replayed.seq, trades[1].0);
    assert_eq!(replayed.payload, Some(Payload::Trade(trades[1].2.clone())));

    let err = rig
        .market_data()
        .subscribe(pb::SubscribeRequest {
            instruments: vec!["BTC-USD".into()],
            channels: vec![0],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err)[0], "channels[0]");
    rig.stop().await;
}

fn crc32(bytes: &[u8]) -> u32 {
    // Bitwise CRC-32 (IEEE): the test's own, so it does not share the server's code.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[tokio::test]
async fn depth_snapshot_and_instruments_are_unary() {
    use pb::market_data_message::Payload;
    let rig = start_rig().await;
    place(
        &rig,
        ALICE,
        limit("EUR-USD", pb::Side::Buy, "1.07990", "5000"),
    )
    .await;
    let snap = rig
        .market_data()
        .get_depth_snapshot(pb::GetDepthSnapshotRequest {
            instrument: "EUR-USD".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Payload::Depth(d)) = snap.payload else {
        panic!("depth: {snap:?}");
    };
    assert!(d.snapshot);
    assert_eq!(
        d.bids,
        vec![pb::Level {
            price: "1.07990".into(),
            size: "5000".into()
        }]
    );
    let list = rig
        .market_data()
        .list_instruments(pb::ListInstrumentsRequest {})
        .await
        .unwrap()
        .into_inner();
    let btc = list
        .instruments
        .iter()
        .find(|i| i.symbol == "BTC-USD")
        .unwrap();
    assert_eq!(
        (btc.tick_size.as_str(), btc.lot_size.as_str()),
        ("0.01", "0.00001")
    );
    assert_eq!(
        (btc.band_low.as_str(), btc.band_high.as_str()),
        ("58500.00", "71500.00")
    );
    rig.stop().await;
}

#[tokio::test]
async fn health_and_both_reflection_versions_list_the_services() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let rig = start_rig().await;
    let mut health = HealthClient::new(rig.channel.clone());
    for service in [
        "",
        "ticker.v1.OrderService",
        "ticker.v1.MarketDataService",
        "ticker.v1.RiskService",
        "ticker.v1.AdminService",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, 1, "{service:?} is SERVING");
    }

    let expected = [
        "grpc.health.v1.Health",
        "ticker.v1.MarketDataService",
        "ticker.v1.OrderService",
        "ticker.v1.RiskService",
        "ticker.v1.AdminService",
    ];
    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let mut client = ServerReflectionClient::new(rig.channel.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut out = client
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            out.message().await.unwrap().unwrap().message_response
        else {
            panic!("a service list");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for name in expected {
            assert!(
                names.iter().any(|n| n == name),
                "v1 lists {name}: {names:?}"
            );
        }
    }
    {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        let mut client = ServerReflectionClient::new(rig.channel.clone());
        let list = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let health_file = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "grpc.health.v1.Health".into(),
            )),
        };
        let mut out = client
            .server_reflection_info(tokio_stream::iter(vec![list, health_file]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            out.message().await.unwrap().unwrap().message_response
        else {
            panic!("a service list");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for name in expected {
            assert!(
                names.iter().any(|n| n == name),
                "v1alpha lists {name}: {names:?}"
            );
        }
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            out.message().await.unwrap().unwrap().message_response
        else {
            panic!("the health service's descriptor");
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }
    rig.stop().await;
}

struct WebAnswer {
    message: Option<Bytes>,
    trailers: String,
}

/// One unary gRPC-Web call over HTTP/1.1, framed by hand: each frame is a flag byte (0 for a
/// message, 0x80 for trailers), a big-endian length and the payload.
async fn grpc_web_call(
    rig: &Rig,
    path: &str,
    message: &[u8],
    headers: &[(&str, &str)],
) -> WebAnswer {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, http_body_util::Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let uri = format!("http://{}{path}", rig.server.local_addr());
    let resp = client
        .request(grpc_web_request(&uri, message, headers))
        .await
        .unwrap();
    grpc_web_answer(resp).await
}

fn grpc_web_request(
    uri: &str,
    message: &[u8],
    headers: &[(&str, &str)],
) -> http::Request<http_body_util::Full<Bytes>> {
    let mut body = Vec::new();
    body.put_u8(0);
    body.put_u32(message.len() as u32);
    body.extend_from_slice(message);
    let mut req = http::Request::post(uri)
        .version(http::Version::HTTP_11)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap()
}

async fn grpc_web_answer(resp: http::Response<hyper::body::Incoming>) -> WebAnswer {
    use http_body_util::BodyExt;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    assert_eq!(resp.headers()["content-type"], "application/grpc-web+proto");
    // A call that fails before any message is "trailers-only": its status is in the headers.
    let header_status = resp
        .headers()
        .get("grpc-status")
        .map(|v| format!("grpc-status:{}", v.to_str().unwrap()));
    let mut bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let mut answer = WebAnswer {
        message: None,
        trailers: header_status.unwrap_or_default(),
    };
    while bytes.has_remaining() {
        let flag = bytes.get_u8();
        let len = bytes.get_u32() as usize;
        let payload = bytes.split_to(len);
        match flag {
            0 => answer.message = Some(payload),
            0x80 => answer.trailers = String::from_utf8(payload.to_vec()).unwrap(),
            other => panic!("unexpected frame flag {other:#x}"),
        }
    }
    answer
}

#[tokio::test]
async fn a_grpc_web_call_over_http1_gets_a_correct_answer() {
    let rig = start_rig().await;
    let request = pb::GetDepthSnapshotRequest {
        instrument: "BTC-USD".into(),
    };
    let answer = grpc_web_call(
        &rig,
        "/ticker.v1.MarketDataService/GetDepthSnapshot",
        &request.encode_to_vec(),
        &[],
    )
    .await;
    let snapshot = pb::MarketDataMessage::decode(answer.message.unwrap()).unwrap();
    assert_eq!(snapshot.instrument, "BTC-USD");
    assert_eq!(snapshot.channel(), pb::Channel::Depth);
    assert_eq!(snapshot.delivery(), pb::Delivery::Snapshot);
    assert!(
        answer.trailers.contains("grpc-status:0"),
        "{}",
        answer.trailers
    );
    rig.stop().await;
}

/// gRPC-Web from a page on another origin: with `cors_origins` the server answers the
/// browser's preflight and marks its answers readable by that origin's pages (status trailers
/// exposed); other origins, and every origin by default, get no CORS headers, so the browser
/// keeps the answer from the page.
#[tokio::test]
async fn grpc_web_answers_pages_of_the_configured_origins_only() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, http_body_util::Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    const DESK: &str = "https://desk.example.com";
    let path = "/ticker.v1.MarketDataService/GetDepthSnapshot";
    let request = pb::GetDepthSnapshotRequest {
        instrument: "BTC-USD".into(),
    }
    .encode_to_vec();
    let preflight = |addr: std::net::SocketAddr, origin: &str| {
        http::Request::builder()
            .method(http::Method::OPTIONS)
            .uri(format!("http://{addr}{path}"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-grpc-web,authorization,grpc-timeout",
            )
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap()
    };
    let call_from_desk = |addr: std::net::SocketAddr| {
        grpc_web_request(
            &format!("http://{addr}{path}"),
            &request,
            &[("origin", DESK)],
        )
    };
    let allowed_origin = |r: &http::Response<hyper::body::Incoming>| {
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };

    let rig = start_rig_with(GrpcConfig {
        cors_origins: vec![DESK.into()],
        ..GrpcConfig::default()
    })
    .await;
    let addr = rig.server.local_addr();
    let pre = client.request(preflight(addr, DESK)).await.unwrap();
    assert_eq!(pre.status(), 200);
    assert_eq!(allowed_origin(&pre).as_deref(), Some(DESK));
    let allowed_headers = pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_string();
    for h in [
        "content-type",
        "x-grpc-web",
        "authorization",
        "grpc-timeout",
    ] {
        assert!(allowed_headers.contains(h), "{h} in {allowed_headers}");
    }
    let call = client.request(call_from_desk(addr)).await.unwrap();
    assert_eq!(allowed_origin(&call).as_deref(), Some(DESK));
    let exposed = call.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(exposed.contains("grpc-status") && exposed.contains("grpc-message"));
    let answer = grpc_web_answer(call).await;
    assert!(answer.message.is_some() && answer.trailers.contains("grpc-status:0"));
    let other = client
        .request(preflight(addr, "https://elsewhere.example.com"))
        .await
        .unwrap();
    assert_eq!(allowed_origin(&other), None);
    rig.stop().await;

    // By default no origin but the page's own.
    let rig = start_rig().await;
    let addr = rig.server.local_addr();
    let call = client.request(call_from_desk(addr)).await.unwrap();
    assert_eq!(allowed_origin(&call), None);
    rig.stop().await;
}

#[tokio::test]
async fn gzip_is_used_when_the_client_asks_for_it() {
    use tonic::codec::CompressionEncoding;
    let rig = start_rig().await;
    let mut client = MarketDataServiceClient::new(rig.channel.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let r = client
        .list_instruments(pb::ListInstrumentsRequest {})
        .await
        .unwrap();
    assert_eq!(r.metadata().get("grpc-encoding").unwrap(), "gzip");
    assert_eq!(r.into_inner().instruments.len(), 4);
    let plain = rig
        .market_data()
        .list_instruments(pb::ListInstrumentsRequest {})
        .await
        .unwrap();
    assert!(plain.metadata().get("grpc-encoding").is_none());
    rig.stop().await;
}

#[tokio::test]
async fn tls_serves_the_configured_certificate() {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    // A certificate for localhost and the CA that signed it, made with openssl for this test
    // only (the CA's key was thrown away).
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let market = Market::start(MarketConfig {
        simulator: None,
        ..MarketConfig::default()
    })
    .unwrap();
    let config = GrpcConfig {
        tls: Some(TlsFiles {
            cert_chain: data.join("localhost.cert.pem"),
            private_key: data.join("localhost.key.pem"),
        }),
        ..GrpcConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = GrpcServer::start_on(listener, market.clone(), config)
        .await
        .unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(data.join("ca.cert.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the handshake verifies the configured certificate");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let uri = "https://localhost/ticker.v1.MarketDataService/ListInstruments";
    let resp = sender
        .send_request(grpc_web_request(uri, &[], &[]))
        .await
        .unwrap();
    let answer = grpc_web_answer(resp).await;
    let list = pb::ListInstrumentsResponse::decode(answer.message.unwrap()).unwrap();
    assert_eq!(list.instruments.len(), 4);
    server.shutdown(Duration::from_secs(1)).await;
    tokio::task::spawn_blocking(move || market.shutdown())
        .await
        .unwrap();
}

/// Request metadata past `grpc.max_header_bytes` (16 KiB by default) is RESOURCE_EXHAUSTED with
/// both sizes, however it is made up, rather than HTTP/2's bare 431 that clients report as
/// UNKNOWN; metadata within the limit is served.
#[tokio::test]
async fn oversized_request_metadata_is_resource_exhausted_with_its_size() {
    let rig = start_rig().await;
    let depth = || pb::GetDepthSnapshotRequest {
        instrument: "BTC-USD".into(),
    };
    type Shape = fn(&mut tonic::metadata::MetadataMap);
    let shapes: [(&str, Shape); 4] = [
        ("a 20 KB bearer token", |m| {
            let token = format!("Bearer {}", "t".repeat(20_000));
            m.insert("authorization", token.parse().unwrap());
        }),
        ("one 40 KB custom header", |m| {
            m.insert("x-blob", "b".repeat(40_000).parse().unwrap());
        }),
        ("600 small headers", |m| {
            for i in 0..600 {
                let name: tonic::metadata::MetadataKey<_> = format!("x-small-{i}").parse().unwrap();
                m.insert(name, "v".repeat(40).parse().unwrap());
            }
        }),
        ("one 64 KB custom header", |m| {
            m.insert("x-blob", "b".repeat(64 << 10).parse().unwrap());
        }),
    ];
    for (what, shape) in shapes {
        let mut req = Request::new(depth());
        shape(req.metadata_mut());
        let e = rig
            .market_data()
            .get_depth_snapshot(req)
            .await
            .expect_err(what);
        assert_eq!(e.code(), Code::ResourceExhausted, "{what}: {e:?}");
        assert!(
            e.message().starts_with("request metadata too large: ")
                && e.message()
                    .ends_with(" bytes, limit 16384 (grpc.max_header_bytes)"),
            "{what}: {}",
            e.message()
        );
        let size: usize = e.message()["request metadata too large: ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(size > 16384, "{what}: {size}");
    }
    // 12 KB of metadata is within the limit, and the connection still serves.
    let mut req = Request::new(depth());
    req.metadata_mut()
        .insert("x-blob", "b".repeat(12_000).parse().unwrap());
    rig.market_data()
        .get_depth_snapshot(req)
        .await
        .expect("12 KB of metadata is served");
    rig.stop().await;
}

/// A candles snapshot holds the newest `candles_kept` candles of its interval, the simulated
/// past of a fresh start included: a chart has its history at once.
#[tokio::test]
async fn a_candles_snapshot_carries_the_simulated_past() {
    use pb::market_data_message::Payload;
    let mut market = MarketConfig::default();
    market.simulator.as_mut().unwrap().history_secs = 300;
    market.feeds.candles_kept = 100;
    let opened = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let rig = start_rig_on(market, GrpcConfig::default()).await;
    let snapshot = |interval: pb::CandleInterval| {
        let mut client = rig.market_data();
        async move {
            let mut stream = client
                .subscribe(pb::SubscribeRequest {
                    instruments: vec!["BTC-USD".into()],
                    channels: vec![pb::Channel::Candles as i32],
                    candle_interval: interval as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let m = stream.message().await.unwrap().unwrap();
            assert_eq!(m.delivery(), pb::Delivery::Snapshot);
            match m.payload {
                Some(Payload::Candles(c)) => c.candles,
                other => panic!("a candles snapshot, not {other:?}"),
            }
        }
    };
    // Trades in most of the 300 seconds: capped at 100, the newest.
    let seconds = snapshot(pb::CandleInterval::CandleInterval1s).await;
    assert_eq!(seconds.len(), 100);
    assert!(seconds.windows(2).all(|w| w[0].start_ns < w[1].start_ns));
    // Five minutes: five or six one-minute candles, the first from the past.
    let minutes = snapshot(pb::CandleInterval::CandleInterval1m).await;
    assert!(
        (5..=7).contains(&minutes.len()),
        "{} candles",
        minutes.len()
    );
    assert!(minutes[0].start_ns <= opened - 240_000_000_000);
    assert!(minutes.iter().all(|c| c.trades > 0 && !c.volume.is_empty()));
    rig.stop().await;
}
