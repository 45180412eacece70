//! Candles close on event time: at the first event stamped past their interval, whatever its
//! instrument, so that a replay of the same events closes them at the same messages.

mod common;

use common::{specs, START};
use std::sync::Arc;
use ticker_engine::*;
use ticker_feeds::*;

const MS: u64 = 1_000_000;

struct Rig {
    engine: Engine,
    md: MarketData,
}

impl Rig {
    fn new() -> Rig {
        let mut rig = Rig {
            engine: Engine::default(),
            md: MarketData::new(
                FeedsConfig::default(),
                Arc::new(Hub::default()),
                Arc::new(Instruments::default()),
            ),
        };
        for spec in specs() {
            rig.run(START, CommandKind::AddInstrument(Box::new(spec)));
        }
        rig
    }

    /// Applies one command at `ts`; returns the `seq` of its first event.
    fn run(&mut self, ts: Timestamp, kind: CommandKind) -> u64 {
        let events = self.engine.apply_collect(&Command::new(ts, ts, kind));
        self.md.apply(&events);
        events[0].seq
    }

    /// BTC-USD trades at `ts`.
    fn trade(&mut self, ts: Timestamp) {
        self.run(
            ts,
            CommandKind::Place(Place::limit(1, 0, Side::Sell, 6_500_000, 100)),
        );
        self.run(
            ts,
            CommandKind::Place(Place::limit(2, 0, Side::Buy, 6_500_000, 100)),
        );
    }

    /// An ETH-USD order that rests: an event, but no trade.
    fn quiet_event(&mut self, ts: Timestamp) -> u64 {
        self.run(
            ts,
            CommandKind::Place(Place::limit(3, 1, Side::Buy, 300_000, 10)),
        )
    }

    /// BTC-USD's one-second candle messages: (seq, prev_seq, closed).
    fn seconds(&self) -> Vec<(u64, u64, bool)> {
        let topic = Topic::Market {
            channel: Channel::Candles(Interval::S1),
            instrument: 0,
        };
        self.md
            .hub()
            .topic(topic)
            .history()
            .iter()
            .map(|m| {
                let v: serde_json::Value = serde_json::from_slice(m.json()).unwrap();
                (m.seq, m.prev_seq, v["closed"].as_bool().unwrap())
            })
            .collect()
    }
}

#[test]
fn a_candle_closes_at_the_first_event_past_its_interval_whatever_its_instrument() {
    let mut rig = Rig::new();
    rig.trade(START + 100 * MS);
    let open = rig.seconds();
    assert_eq!(open.len(), 1);
    assert!(!open[0].2);
    // Still inside the second: nothing closes.
    rig.quiet_event(START + 900 * MS);
    assert_eq!(rig.seconds(), open);
    // The first event of the next second, on another instrument, closes it with its seq.
    let seq = rig.quiet_event(START + 1_000 * MS);
    assert_eq!(rig.seconds(), [open[0], (seq, open[0].0, true)]);
}

#[test]
fn a_tick_closes_only_with_a_seq_past_the_candles_last_message() {
    let mut rig = Rig::new();
    rig.trade(START + 100 * MS);
    let open = rig.seconds();
    // The candle's last message carries the last event's seq: a tick with it would publish a
    // message no subscriber takes (its seq does not advance), so the candle waits.
    rig.md.tick(rig.md.last_seq(), START + 1_500 * MS);
    assert_eq!(rig.seconds(), open);
    // After a later event, a tick can close it.
    let seq = rig.quiet_event(START + 600 * MS);
    rig.md.tick(seq, START + 1_500 * MS);
    assert_eq!(rig.seconds(), [open[0], (seq, open[0].0, true)]);
}
