//! A market of several shards (`market.shards`) through the gRPC front: instruments on
//! different engine threads trade side by side, an account's order updates from every shard
//! come as one gap-free stream, and a kill switch or a mass cancel over every instrument is one
//! command per shard with one reply to the caller.

mod grpc_rig;

use std::collections::HashSet;
use std::time::Duration;
use ticker_engine::shard::Shard;
use ticker_proto::v1 as pb;
use ticker_proto::v1::market_data_message::Payload;
use ticker_servers::auth::{Principal, Role};
use ticker_servers::grpc::{AuthConfig, GrpcConfig};
use ticker_servers::market::MarketConfig;
use tokio_stream::StreamExt;

use grpc_rig::{authed, limit, place, Rig};

const ALICE: &str = "alice-token";
const BOB: &str = "bob-token";
const RISK: &str = "risk-token";
const GUARD: Duration = Duration::from_secs(20);

async fn start(shards: usize) -> Rig {
    let mut auth = AuthConfig::traders([(ALICE, 1), (BOB, 2)]);
    auth.tokens.insert(
        RISK.into(),
        Principal {
            role: Role::Risk,
            account: None,
        },
    );
    Rig::start_sharded(auth, shards).await
}

/// The trades channel of `symbol`.
async fn trades(rig: &Rig, symbol: &str) -> tonic::Streaming<pb::MarketDataMessage> {
    let request = pb::SubscribeRequest {
        instruments: vec![symbol.into()],
        channels: vec![pb::Channel::Trades as i32],
        ..Default::default()
    };
    rig.market_data()
        .subscribe(request)
        .await
        .unwrap()
        .into_inner()
}

/// The default instruments, with the shard of two holding each (ids in listing order).
async fn instruments(rig: &Rig) -> Vec<(String, usize)> {
    let list = rig
        .market_data()
        .list_instruments(pb::ListInstrumentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    list.instruments
        .iter()
        .enumerate()
        .map(|(id, i)| (i.symbol.clone(), Shard::of_instrument(2, id as u32)))
        .collect()
}

/// A resting buy a bit below the default instruments' reference prices, and a sell that
/// crosses it.
fn prices(symbol: &str) -> (&'static str, &'static str, &'static str) {
    match symbol {
        "BTC-USD" => ("63000.00", "62000.00", "0.01"),
        "ETH-USD" => ("3100.00", "3000.00", "0.1"),
        other => panic!("no test prices for {other}"),
    }
}

#[tokio::test]
async fn two_shards_trade_side_by_side_and_an_account_sees_one_sequence() {
    let rig = start(2).await;
    let listed = instruments(&rig).await;
    let on = |s: &str| listed.iter().find(|(n, _)| n == s).unwrap().1;
    assert_ne!(on("BTC-USD"), on("ETH-USD"), "the test needs both shards");
    let mut updates = rig
        .orders()
        .subscribe_order_updates(authed(pb::SubscribeOrderUpdatesRequest::default(), ALICE))
        .await
        .unwrap()
        .into_inner();
    let mut streams = Vec::new();
    for symbol in ["BTC-USD", "ETH-USD"] {
        streams.push(trades(&rig, symbol).await);
    }
    let mut placed = Vec::new();
    for symbol in ["BTC-USD", "ETH-USD"] {
        let (bid, _, size) = prices(symbol);
        let buy = place(&rig, ALICE, limit(symbol, pb::Side::Buy, bid, size)).await;
        assert!(buy.result.as_ref().unwrap().accepted, "{buy:?}");
        placed.push(buy.order.unwrap().order_id);
        let sell = place(&rig, BOB, limit(symbol, pb::Side::Sell, bid, size)).await;
        assert!(sell.result.unwrap().accepted);
    }
    // Each shard gives its order ids its own tag.
    assert_ne!(placed[0] >> 58, placed[1] >> 58, "{placed:x?}");
    // A trade on each instrument's channel.
    for stream in &mut streams {
        tokio::time::timeout(GUARD, async {
            while let Some(m) = stream.next().await {
                if let Some(Payload::Trade(_)) = m.unwrap().payload {
                    return;
                }
            }
            panic!("the trades stream ended");
        })
        .await
        .expect("a trade");
    }
    // Alice's updates from both shards: one chain of seqs, each after the one before, and
    // both orders filled.
    let mut filled = HashSet::new();
    let mut last = None;
    tokio::time::timeout(GUARD, async {
        while filled.len() < 2 {
            let u = updates.next().await.expect("updates go on").unwrap();
            if let Some(last) = last {
                assert_eq!(u.prev_seq, last, "no gap, no duplicate: {u:?}");
                assert_eq!(u.seq, last + 1);
            }
            last = Some(u.seq);
            if let Some(pb::order_update::Event::Done(done)) = &u.event {
                filled.insert(done.order_id);
            }
        }
    })
    .await
    .expect("both orders done");
    assert_eq!(filled, placed.iter().copied().collect());
    rig.stop().await;
}

#[tokio::test]
async fn the_kill_switch_and_a_mass_cancel_reach_every_shard_and_answer_once() {
    let rig = start(2).await;
    let rest = |symbol: &'static str| {
        let (_, low, size) = prices(symbol);
        limit(symbol, pb::Side::Buy, low, size)
    };
    // Rests an order on each symbol and returns their ids, sorted.
    let rest_on = |symbols: &'static [&'static str]| {
        let rig = &rig;
        async move {
            let mut ids = Vec::new();
            for &symbol in symbols {
                ids.push(
                    place(rig, ALICE, rest(symbol))
                        .await
                        .order
                        .unwrap()
                        .order_id,
                );
            }
            ids.sort();
            ids
        }
    };
    let sorted = |mut ids: Vec<u64>| {
        ids.sort();
        ids
    };
    let resting = rest_on(&["BTC-USD", "ETH-USD", "BTC-USD", "ETH-USD"]).await;
    let mass = rig
        .orders()
        .mass_cancel(authed(pb::MassCancelRequest::default(), ALICE))
        .await
        .unwrap()
        .into_inner();
    assert!(mass.result.unwrap().accepted);
    assert_eq!(
        sorted(mass.cancelled_order_ids),
        resting,
        "one reply names the orders of both shards"
    );

    let resting = rest_on(&["BTC-USD", "ETH-USD"]).await;
    let killed = rig
        .risk()
        .disable_account(authed(pb::AccountRequest { account: 1 }, RISK))
        .await
        .unwrap()
        .into_inner();
    assert!(killed.result.unwrap().accepted);
    assert_eq!(sorted(killed.cancelled_order_ids), resting);
    for symbol in ["BTC-USD", "ETH-USD"] {
        let refused = place(&rig, ALICE, rest(symbol)).await.result.unwrap();
        assert_eq!(
            refused.reject_reason(),
            pb::RejectReason::AccountDisabled,
            "{symbol}"
        );
    }
    let enabled = rig
        .risk()
        .enable_account(authed(pb::AccountRequest { account: 1 }, RISK))
        .await
        .unwrap()
        .into_inner();
    assert!(enabled.result.unwrap().accepted);
    for symbol in ["BTC-USD", "ETH-USD"] {
        assert!(
            place(&rig, ALICE, rest(symbol))
                .await
                .result
                .unwrap()
                .accepted
        );
    }
    // Every shard's rings are named by shard.
    let rings = rig.market.rings();
    let shards: HashSet<_> = rings.iter().map(|r| r.shard).collect();
    assert_eq!(shards, HashSet::from([Some(0), Some(1)]));
    rig.stop().await;
}

/// A cancel by client order id goes to every shard and one of them holds the order: the
/// caller, the account's stream, the drop copy and the reject counters see one accept, never
/// the other shards' `unknown_order`.
#[tokio::test]
async fn a_cancel_by_client_id_shows_once_as_the_holding_shards_accept() {
    let rig = start(2).await;
    let mut updates = rig
        .orders()
        .subscribe_order_updates(authed(pb::SubscribeOrderUpdatesRequest::default(), ALICE))
        .await
        .unwrap()
        .into_inner();
    let mut drop_copy = rig
        .risk()
        .stream_drop_copy(authed(pb::StreamDropCopyRequest::default(), RISK))
        .await
        .unwrap()
        .into_inner();
    let rejects = |rig: &Rig| -> u64 {
        let stats = rig.market.stats();
        stats
            .rejects
            .iter()
            .map(|r| r.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    };
    let rejects_before = rejects(&rig);
    for symbol in ["ETH-USD", "BTC-USD"] {
        let (_, low, size) = prices(symbol);
        let req = pb::PlaceOrderRequest {
            client_order_id: 77,
            ..limit(symbol, pb::Side::Buy, low, size)
        };
        assert!(place(&rig, ALICE, req).await.result.unwrap().accepted);
        let cancelled = rig
            .orders()
            .cancel_order(authed(
                pb::CancelOrderRequest {
                    order: Some(pb::cancel_order_request::Order::ClientOrderId(77)),
                },
                ALICE,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(cancelled.result.unwrap().accepted, "{symbol}");
    }
    assert_eq!(rejects(&rig), rejects_before, "no reject counted");
    // Per order: accepted, rested, the cancel's ack, done; nothing rejected.
    for stream in [&mut updates, &mut drop_copy] {
        let mut seen = Vec::new();
        tokio::time::timeout(GUARD, async {
            while seen.iter().filter(|e| **e == "done").count() < 2 {
                let u = stream.next().await.expect("updates go on").unwrap();
                let name = match u.event {
                    Some(pb::order_update::Event::Snapshot(_)) => continue,
                    Some(pb::order_update::Event::Accepted(_)) => "accepted",
                    Some(pb::order_update::Event::Rested(_)) => "rested",
                    Some(pb::order_update::Event::Ack(_)) => "ack",
                    Some(pb::order_update::Event::Done(_)) => "done",
                    Some(pb::order_update::Event::Rejected(r)) => panic!("rejected: {r:?}"),
                    other => panic!("unexpected {other:?}"),
                };
                seen.push(name);
            }
        })
        .await
        .expect("both orders done");
        assert_eq!(
            seen,
            ["accepted", "rested", "ack", "done", "accepted", "rested", "ack", "done"]
        );
    }
    rig.stop().await;
}

#[tokio::test]
async fn the_simulator_trades_every_shard() {
    let market = MarketConfig {
        shards: 2,
        ..MarketConfig::default()
    };
    let mut market = market;
    if let Some(sim) = &mut market.simulator {
        sim.history_secs = 0;
    }
    let rig = Rig::start_on(market, GrpcConfig::default()).await;
    let mut streams = Vec::new();
    for symbol in ["BTC-USD", "ETH-USD"] {
        streams.push(trades(&rig, symbol).await);
    }
    for stream in &mut streams {
        tokio::time::timeout(GUARD, async {
            let mut last_seq = 0;
            let mut trades = 0;
            while trades < 3 {
                let m = stream.next().await.expect("the stream goes on").unwrap();
                assert!(m.seq > last_seq, "seqs go up: {} after {last_seq}", m.seq);
                last_seq = m.seq;
                if let Some(Payload::Trade(_)) = &m.payload {
                    trades += 1;
                }
            }
        })
        .await
        .expect("the simulator trades on both shards");
    }
    rig.stop().await;
}
