//! The protobuf encoding of every feed message says what its JSON says: same sequence
//! numbers, instrument and event, and the same decimal strings, over a simulated session of
//! the real engine.

use prost::Message as _;
use rust_decimal::Decimal;
use serde_json::Value;
use std::str::FromStr;
use std::sync::Arc;
use ticker_engine::*;
use ticker_feeds::sim::{SimConfig, Simulator};
use ticker_feeds::*;
use ticker_proto::v1 as pb;
use ticker_proto::v1::market_data_message::Payload;
use ticker_proto::v1::order_update::Event as Update;

fn spec() -> InstrumentSpec {
    let d = |s| Decimal::from_str(s).unwrap();
    InstrumentSpec {
        symbol: "ETH-USD".into(),
        tick_size: d("0.01"),
        lot_size: d("0.001"),
        min_size: d("0.001"),
        max_size: d("1000"),
        reference_price: d("3000"),
        band: d("0.1"),
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v[key].as_str().map(str::to_string)
}

fn levels(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| (l[0].as_str().unwrap().into(), l[1].as_str().unwrap().into()))
        .collect()
}

fn check_market(v: &Value, p: &pb::MarketDataMessage) {
    assert_eq!(Some(p.seq), v["seq"].as_u64(), "seq: {v}");
    assert_eq!(Some(p.prev_seq), v["prev_seq"].as_u64(), "prev_seq: {v}");
    assert_eq!(text(v, "instrument").unwrap(), p.instrument);
    match p.payload.as_ref().expect("a payload") {
        Payload::Ticker(t) => {
            for (key, got) in [
                ("bid", &t.bid),
                ("bid_size", &t.bid_size),
                ("ask", &t.ask),
                ("ask_size", &t.ask_size),
                ("last", &t.last),
                ("last_size", &t.last_size),
                ("open_24h", &t.open_24h),
                ("high_24h", &t.high_24h),
                ("low_24h", &t.low_24h),
                ("volume_24h", &t.volume_24h),
                ("change_24h", &t.change_24h),
            ] {
                assert_eq!(&text(v, key), got, "{key}: {v}");
            }
        }
        Payload::Depth(d) => {
            assert_eq!(d.snapshot, v["type"] == "snapshot");
            for (key, got) in [("bids", &d.bids), ("asks", &d.asks)] {
                let got: Vec<_> = got
                    .iter()
                    .map(|l| (l.price.clone(), l.size.clone()))
                    .collect();
                assert_eq!(levels(&v[key]), got, "{key}: {v}");
            }
            assert_eq!(Some(d.checksum as u64), v["checksum"].as_u64());
        }
        Payload::Trade(t) => {
            assert_eq!(Some(t.trade_id), v["trade_id"].as_u64());
            assert_eq!(
                (text(v, "price").unwrap(), text(v, "size").unwrap()),
                (t.price.clone(), t.size.clone())
            );
            assert_eq!(
                text(v, "side").unwrap(),
                if t.side() == pb::Side::Buy {
                    "buy"
                } else {
                    "sell"
                }
            );
        }
        Payload::Candle(c) => check_candle(v, c),
        Payload::Candles(cs) => {
            let json = v["candles"].as_array().unwrap();
            assert_eq!(json.len(), cs.candles.len());
            for (j, c) in json.iter().zip(&cs.candles) {
                check_candle(j, c);
            }
        }
        Payload::L3(e) => {
            assert_eq!(text(v, "order_id").unwrap(), e.order_id.to_string());
            let name = match e.event() {
                pb::L3EventType::Add => "add",
                pb::L3EventType::Amend => "amend",
                pb::L3EventType::Match => "match",
                pb::L3EventType::Delete => "delete",
                pb::L3EventType::Unspecified => "",
            };
            assert_eq!(text(v, "event").unwrap(), name);
            for (key, got) in [
                ("price", &e.price),
                ("size", &e.size),
                ("reason", &e.reason),
            ] {
                assert_eq!(text(v, key).unwrap_or_default(), *got, "{key}: {v}");
            }
        }
        Payload::L3Book(b) => {
            for (key, got) in [("bids", &b.bids), ("asks", &b.asks)] {
                let json: Vec<_> = v[key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| {
                        (
                            o[0].as_str().unwrap().to_string(),
                            o[1].as_str().unwrap().to_string(),
                            o[2].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                let got: Vec<_> = got
                    .iter()
                    .map(|o| (o.price.clone(), o.size.clone(), o.order_id.to_string()))
                    .collect();
                assert_eq!(json, got, "{key}");
            }
        }
        Payload::Gap(_) => panic!("feeds never encode a gap"),
    }
}

fn check_candle(v: &Value, c: &pb::Candle) {
    assert_eq!(Some(c.start_ns), v["start"].as_u64());
    for (key, got) in [
        ("open", &c.open),
        ("high", &c.high),
        ("low", &c.low),
        ("close", &c.close),
        ("volume", &c.volume),
    ] {
        assert_eq!(text(v, key).as_ref(), Some(got), "{key}: {v}");
    }
    assert_eq!(
        (Some(c.trades), v["closed"].as_bool()),
        (v["trades"].as_u64(), Some(c.closed))
    );
}

fn check_order(v: &Value, p: &pb::OrderUpdate) {
    assert_eq!(Some(p.seq), v["seq"].as_u64(), "seq: {v}");
    let event = p.event.as_ref().expect("an event");
    let (name, order_id, fields): (&str, u64, Vec<(&str, &str)>) = match event {
        Update::Snapshot(s) => {
            let json = v["orders"].as_array().unwrap();
            assert_eq!(json.len(), s.orders.len());
            for (j, o) in json.iter().zip(&s.orders) {
                let order = o.order.as_ref().unwrap();
                assert_eq!(text(j, "order_id").unwrap(), order.order_id.to_string());
                assert_eq!(text(j, "remaining").unwrap(), o.remaining_size);
                assert_eq!(text(j, "status").unwrap(), o.status);
            }
            return;
        }
        Update::Accepted(a) => {
            let o = a.order.as_ref().unwrap();
            (
                "accepted",
                o.order_id,
                vec![
                    ("size", o.size.as_str()),
                    ("instrument", o.instrument.as_str()),
                ],
            )
        }
        Update::Rejected(r) => ("rejected", r.order_id, vec![]),
        Update::Ack(a) => ("ack", a.order_id, vec![]),
        Update::Rested(r) => (
            "rested",
            r.order_id,
            vec![
                ("price", &r.price),
                ("visible", &r.visible_size),
                ("remaining", &r.remaining_size),
            ],
        ),
        Update::StopArmed(s) => (
            "stop_armed",
            s.order_id,
            vec![("trigger", &s.trigger_price)],
        ),
        Update::StopTriggered(s) => (
            "stop_triggered",
            s.order_id,
            vec![("trigger", &s.trigger_price), ("last_price", &s.last_price)],
        ),
        Update::Fill(f) => (
            "fill",
            f.order_id,
            vec![
                ("price", &f.price),
                ("size", &f.size),
                ("remaining", &f.remaining_size),
            ],
        ),
        Update::Amended(a) => (
            "amended",
            a.order_id,
            vec![
                ("price", &a.price),
                ("remaining", &a.remaining_size),
                ("visible", &a.visible_size),
            ],
        ),
        Update::Done(d) => (
            "done",
            d.order_id,
            vec![("filled", &d.filled_size), ("cancelled", &d.cancelled_size)],
        ),
    };
    assert_eq!(text(v, "event").unwrap(), name);
    if let Some(id) = text(v, "order_id") {
        assert_eq!(id, order_id.to_string());
    }
    for (key, got) in fields {
        assert_eq!(text(v, key).as_deref(), Some(got), "{key}: {v}");
    }
}

#[test]
fn every_protobuf_message_carries_what_its_json_carries() {
    let hub = Arc::new(Hub::default());
    let mut md = MarketData::new(
        FeedsConfig::default(),
        hub.clone(),
        Arc::new(Instruments::default()),
    );
    let mut engine = Engine::default();
    let mut events = Vec::new();
    let add = Command::new(1, 1, CommandKind::AddInstrument(Box::new(spec())));
    engine.apply(&add, &mut events);
    md.apply(&events);
    let instrument = Instrument::new(0, spec()).unwrap();
    let sim_config = SimConfig::default();
    let mut subs: Vec<_> = Channel::ALL
        .iter()
        .map(|&channel| {
            hub.subscribe(
                Topic::Market {
                    channel,
                    instrument: 0,
                },
                None,
            )
        })
        .collect();
    let accounts: Vec<_> = (0..100)
        .map(|i| md.accounts().subscribe(sim_config.first_account + i, None))
        .collect();
    let mut sim = Simulator::new(sim_config, &[instrument], 0);
    let (mut market_checked, mut orders_checked) = (0, 0);
    for _ in 0..3_000 {
        let cmd = sim.next_command();
        events.clear();
        engine.apply(&cmd, &mut events);
        md.apply(&events);
        for sub in &mut subs {
            while let Some(d) = sub.try_recv().unwrap() {
                let m = d.message().unwrap();
                let json: Value = serde_json::from_slice(m.json()).unwrap();
                check_market(
                    &json,
                    &pb::MarketDataMessage::decode(m.proto().clone()).unwrap(),
                );
                market_checked += 1;
            }
        }
    }
    for mut sub in accounts {
        while let Some(d) = sub.try_recv().unwrap() {
            let m = d.message().unwrap();
            let json: Value = serde_json::from_slice(m.json()).unwrap();
            check_order(&json, &pb::OrderUpdate::decode(m.proto().clone()).unwrap());
            orders_checked += 1;
        }
    }
    assert!(
        market_checked > 1_000,
        "{market_checked} market-data messages"
    );
    assert!(orders_checked > 1_000, "{orders_checked} order updates");
}
