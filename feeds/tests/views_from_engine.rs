//! The feeds against the real engine: replica depth equals the engine's book, a client that
//! applies the JSON messages ends with the same book and checksums, and each slow-subscriber
//! policy does what it promises.

use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use ticker_engine::*;
use ticker_feeds::*;

fn spec() -> InstrumentSpec {
    let d = |s| Decimal::from_str(s).unwrap();
    InstrumentSpec {
        symbol: "ETH-USD".into(),
        tick_size: d("0.01"),
        lot_size: d("0.001"),
        min_size: d("0.001"),
        max_size: d("1000"),
        reference_price: d("3000"),
        band: d("0.5"),
    }
}

struct Rig {
    engine: Engine,
    md: MarketData,
    ts: u64,
    events: Vec<Event>,
}

impl Rig {
    fn new(config: FeedsConfig) -> Rig {
        let hub = Arc::new(Hub::new(config.hub.clone()));
        let mut rig = Rig {
            engine: Engine::default(),
            md: MarketData::new(config, hub, Arc::new(Instruments::default())),
            ts: 1_000_000_000,
            events: Vec::new(),
        };
        rig.run(CommandKind::AddInstrument(Box::new(spec())));
        rig
    }

    fn run(&mut self, kind: CommandKind) {
        self.ts += 1_000_000;
        self.events.clear();
        let cmd = Command {
            deadline: 0,
            ts: self.ts,
            corr: self.ts,
            kind,
        };
        self.engine.apply(&cmd, &mut self.events);
        self.md.apply(&self.events);
    }

    fn hub(&self) -> Arc<Hub> {
        self.md.hub().clone()
    }
}

fn depth_topic() -> Topic {
    Topic::Market {
        channel: Channel::Depth,
        instrument: 0,
    }
}

/// A client's depth book, keyed by decimal price string, applied from JSON messages.
#[derive(Default)]
struct ClientBook {
    bids: BTreeMap<Decimal, String>,
    asks: BTreeMap<Decimal, String>,
    price_text: BTreeMap<Decimal, String>,
    seq: u64,
}

impl ClientBook {
    fn apply(&mut self, v: &Value) {
        if v["type"] == "snapshot" {
            self.bids.clear();
            self.asks.clear();
        } else {
            assert_eq!(v["prev_seq"].as_u64().unwrap(), self.seq, "no gap in depth");
        }
        self.seq = v["seq"].as_u64().unwrap();
        for (key, book) in [("bids", &mut self.bids), ("asks", &mut self.asks)] {
            for level in v[key].as_array().unwrap() {
                let price_s = level[0].as_str().unwrap();
                let price = Decimal::from_str(price_s).unwrap();
                let size = level[1].as_str().unwrap();
                self.price_text.insert(price, price_s.to_string());
                if Decimal::from_str(size).unwrap().is_zero() {
                    book.remove(&price);
                } else {
                    book.insert(price, size.to_string());
                }
            }
        }
        assert_eq!(
            self.checksum(),
            v["checksum"].as_u64().unwrap() as u32,
            "client checksum matches message"
        );
    }

    /// The documented checksum, computed from the wire strings only.
    fn checksum(&self) -> u32 {
        let strip = |s: &str| {
            let digits: String = s.chars().filter(|c| *c != '.').collect();
            digits.trim_start_matches('0').to_string()
        };
        let mut text = String::new();
        for (p, s) in self.asks.iter().take(10) {
            text += &strip(&self.price_text[p]);
            text += &strip(s);
        }
        for (p, s) in self.bids.iter().rev().take(10) {
            text += &strip(&self.price_text[p]);
            text += &strip(s);
        }
        crc32fast::hash(text.as_bytes())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Limit(bool, i64, u64),
    Market(bool, u64),
    Cancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (any::<bool>(), -30i64..30, 1u64..50).prop_map(|(b, d, s)| Op::Limit(b, d, s)),
        1 => (any::<bool>(), 1u64..120).prop_map(|(b, s)| Op::Market(b, s)),
        3 => any::<usize>().prop_map(Op::Cancel),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn depth_after_any_deltas_equals_the_engine_book(ops in proptest::collection::vec(op(), 1..300), levels in 1usize..12) {
        let mut rig = Rig::new(FeedsConfig { depth_levels: levels, ..FeedsConfig::default() });
        let mut sub = rig.hub().subscribe(depth_topic(), None);
        let mut client = ClientBook::default();
        let mut live: Vec<OrderId> = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            let account = 1 + (i as u64 % 5);
            let side = |buy: bool| if buy { Side::Buy } else { Side::Sell };
            let kind = match op {
                Op::Limit(buy, d, size) => {
                    // Bids below 300000 ticks and asks above, with overlap so orders cross.
                    let price = 300_000 + d + if buy { -5 } else { 5 };
                    CommandKind::Place(Place::limit(account, 0, side(buy), price, size))
                }
                Op::Market(buy, size) => CommandKind::Place(Place::market(account, 0, side(buy), size)),
                Op::Cancel(k) if !live.is_empty() => {
                    let id = live[k % live.len()];
                    let owner = rig.engine.order(id).map_or(account, |o| o.account);
                    CommandKind::Cancel(Cancel { account: owner, order: OrderRef::Id(id) })
                }
                Op::Cancel(_) => CommandKind::Heartbeat,
            };
            rig.run(kind);
            for e in &rig.events {
                if let EventKind::PlaceAccepted { order, .. } = &e.kind { live.push(order.order_id); }
            }
            live.retain(|id| rig.engine.order(*id).is_some());
            while let Some(d) = sub.try_recv().unwrap() {
                let m = d.message().unwrap();
                client.apply(&serde_json::from_slice(m.json()).unwrap());
            }
            let book = rig.engine.book(0).unwrap();
            let replica = rig.md.depth_book(0).unwrap();
            for side in [Side::Buy, Side::Sell] {
                let engine_levels: Vec<(Ticks, Lots)> = book.depth(side).map(|(p, l)| (p, l.visible)).collect();
                let replica_levels: Vec<(Ticks, Lots)> = replica.levels(side).collect();
                prop_assert_eq!(&replica_levels, &engine_levels, "replica is the whole book");
                let client_side = if side == Side::Buy { &client.bids } else { &client.asks };
                let wire = rig.md.instruments().get(0).unwrap();
                let expect: Vec<(String, String)> = engine_levels.iter().take(levels)
                    .map(|&(p, s)| (wire.price.to_string(p), wire.size.to_string(s as i64))).collect();
                let mut got: Vec<(String, String)> = client_side.iter().map(|(p, s)| (client.price_text[p].clone(), s.clone())).collect();
                if side == Side::Buy { got.reverse(); }
                prop_assert_eq!(got, expect, "client holds exactly the top N");
            }
        }
    }
}

#[test]
fn a_ticker_subscriber_that_stops_reading_is_conflated_to_the_latest() {
    let mut rig = Rig::new(FeedsConfig::default());
    let hub = rig.hub();
    let topic = Topic::Market {
        channel: Channel::Ticker,
        instrument: 0,
    };
    let mut sub = hub.subscribe(topic, None);
    for i in 0..100 {
        rig.run(CommandKind::Place(Place::limit(
            1,
            0,
            Side::Buy,
            290_000 + i,
            1,
        )));
    }
    let latest = hub.topic(topic).latest().unwrap();
    match sub.try_recv().unwrap().unwrap() {
        Delivery::Conflated { message, skipped } => {
            assert_eq!(*message, *latest);
            assert!(skipped >= 80, "skipped {skipped}");
        }
        other => panic!("expected conflation, got {other:?}"),
    }
    assert_eq!(sub.try_recv().unwrap(), None);
    assert_eq!(HubStats::get(&hub.stats().conflations, topic), 1);
    let v: Value = serde_json::from_slice(latest.json()).unwrap();
    assert_eq!(v["bid"], "2900.99");
}

#[test]
fn a_depth_subscriber_that_falls_behind_resyncs_from_a_fresh_snapshot() {
    let config = FeedsConfig {
        hub: HubConfig {
            resync_queue: 8,
            ..HubConfig::default()
        },
        ..FeedsConfig::default()
    };
    let mut rig = Rig::new(config);
    let hub = rig.hub();
    let mut sub = hub.subscribe(depth_topic(), None);
    assert!(matches!(
        sub.try_recv().unwrap(),
        Some(Delivery::Snapshot {
            reason: SnapshotReason::Initial,
            ..
        })
    ));
    for i in 0..50 {
        rig.run(CommandKind::Place(Place::limit(
            1,
            0,
            Side::Sell,
            310_000 + i,
            1,
        )));
    }
    let mut client = ClientBook::default();
    match sub.try_recv().unwrap().unwrap() {
        Delivery::Snapshot {
            message,
            reason: SnapshotReason::Resync,
        } => client.apply(&serde_json::from_slice(message.json()).unwrap()),
        other => panic!("expected resync, got {other:?}"),
    }
    assert_eq!(client.asks.len(), 50);
    rig.run(CommandKind::Place(Place::limit(
        1,
        0,
        Side::Sell,
        309_000,
        2,
    )));
    let next = sub.try_recv().unwrap().unwrap();
    client.apply(&serde_json::from_slice(next.message().unwrap().json()).unwrap());
    assert_eq!(client.asks.len(), 50, "window stays at N = 50");
    assert_eq!(HubStats::get(&hub.stats().resyncs, depth_topic()), 1);
}

#[test]
fn order_update_and_trade_subscribers_that_fall_behind_are_disconnected_not_skipped() {
    let config = FeedsConfig {
        hub: HubConfig {
            lossless_queue: 16,
            ..HubConfig::default()
        },
        ..FeedsConfig::default()
    };
    let mut rig = Rig::new(config);
    let hub = rig.hub();
    let orders = Topic::Orders(7);
    let trades = Topic::Market {
        channel: Channel::Trades,
        instrument: 0,
    };
    let mut order_sub = rig.md.accounts().subscribe(7, None);
    let mut trade_sub = hub.subscribe(trades, None);
    assert!(matches!(
        order_sub.try_recv().unwrap(),
        Some(Delivery::Snapshot { .. })
    ));
    for _ in 0..20 {
        rig.run(CommandKind::Place(Place::limit(
            7,
            0,
            Side::Sell,
            300_000,
            1,
        )));
        rig.run(CommandKind::Place(Place::market(8, 0, Side::Buy, 1)));
    }
    assert!(matches!(
        order_sub.try_recv(),
        Err(Ended::TooSlow { limit: 16, .. })
    ));
    assert!(matches!(trade_sub.try_recv(), Err(Ended::TooSlow { .. })));
    assert_eq!(HubStats::get(&hub.stats().disconnects, orders), 1);
    assert_eq!(HubStats::get(&hub.stats().disconnects, trades), 1);
}

#[test]
fn resume_from_seq_replays_history_or_flags_what_it_cannot() {
    let config = FeedsConfig {
        hub: HubConfig {
            history: 10,
            ..HubConfig::default()
        },
        ..FeedsConfig::default()
    };
    let mut rig = Rig::new(config);
    let hub = rig.hub();
    let trades = Topic::Market {
        channel: Channel::Trades,
        instrument: 0,
    };
    let mut seqs = Vec::new();
    for _ in 0..15 {
        rig.run(CommandKind::Place(Place::limit(
            1,
            0,
            Side::Sell,
            300_000,
            1,
        )));
        rig.run(CommandKind::Place(Place::market(2, 0, Side::Buy, 1)));
        seqs.push(hub.topic(trades).latest().unwrap().seq);
    }
    // Within history: exactly the messages after the resume point.
    let mut sub = hub.subscribe(trades, Some(seqs[9]));
    let mut got = Vec::new();
    while let Some(d) = sub.try_recv().unwrap() {
        got.push(d.message().unwrap().seq);
    }
    assert_eq!(got, seqs[10..].to_vec());
    // Older than history: a flagged gap, then what history holds.
    let mut sub = hub.subscribe(trades, Some(seqs[1]));
    assert_eq!(
        sub.try_recv().unwrap(),
        Some(Delivery::Gap {
            from_seq: seqs[1],
            resumed_after: seqs[4]
        })
    );
    // Depth resumed too far back gets a snapshot flagged as such.
    let mut sub = hub.subscribe(depth_topic(), Some(1));
    assert!(matches!(
        sub.try_recv().unwrap(),
        Some(Delivery::Snapshot {
            reason: SnapshotReason::ResumeTooOld,
            ..
        })
    ));
}

#[test]
fn order_updates_carry_a_gap_free_account_sequence() {
    let mut rig = Rig::new(FeedsConfig::default());

    let mut sub = rig.md.accounts().subscribe(1, None);
    rig.run(CommandKind::Place(Place {
        client_id: 42,
        ..Place::limit(1, 0, Side::Sell, 300_000, 5)
    }));
    rig.run(CommandKind::Place(Place::market(2, 0, Side::Buy, 2)));
    rig.run(CommandKind::Cancel(Cancel {
        account: 1,
        order: OrderRef::Client(42),
    }));
    rig.run(CommandKind::Cancel(Cancel {
        account: 1,
        order: OrderRef::Client(42),
    }));
    let mut events = Vec::new();
    let mut seq = 0;
    while let Some(d) = sub.try_recv().unwrap() {
        let v: Value = serde_json::from_slice(d.message().unwrap().json()).unwrap();
        if v["type"] == "snapshot" {
            continue;
        }
        assert_eq!(v["prev_seq"].as_u64().unwrap(), seq);
        seq = v["seq"].as_u64().unwrap();
        events.push(v["event"].as_str().unwrap().to_string());
        if v["event"] == "fill" {
            assert_eq!(v["price"], "3000.00");
            assert_eq!(v["size"], "0.002");
            assert_eq!(v["liquidity"], "maker");
        }
        if v["event"] == "rejected" {
            assert_eq!(v["reason"], "unknown_order");
        }
    }
    assert_eq!(
        events,
        ["accepted", "rested", "fill", "ack", "done", "rejected"]
    );
}
