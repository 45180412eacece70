//! Candles (OHLCV) per interval, with updates of the open candle.
//!
//! A trade belongs to the candle whose interval contains its timestamp (`start = ts - ts %
//! interval`). The open candle is published after each command that traded; it is published
//! once more with `closed: true` when the first event of a later interval arrives. Intervals
//! without trades have no candle. The last closed candles are kept for snapshots (charts).

use crate::hub::Encode;
use crate::instruments::WireInstrument;
use crate::proto;
use crate::topic::{Channel, Interval};
use crate::wire::JsonObject;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use ticker_engine::{Lots, Ticks, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candle {
    pub start: Timestamp,
    pub open: Ticks,
    pub high: Ticks,
    pub low: Ticks,
    pub close: Ticks,
    pub volume: Lots,
    pub trades: u64,
    pub closed: bool,
}

/// The candles of one instrument and interval.
#[derive(Debug, Clone)]
pub struct CandleSeries {
    pub interval: Interval,
    open: Option<Candle>,
    closed: VecDeque<Candle>,
    keep: usize,
}

impl CandleSeries {
    pub fn new(interval: Interval, keep: usize) -> Self {
        CandleSeries {
            interval,
            open: None,
            closed: VecDeque::with_capacity(keep),
            keep,
        }
    }

    /// A series as a snapshot left it, keeping the newest `keep` of `closed` (oldest first).
    pub(crate) fn restored(
        interval: Interval,
        keep: usize,
        open: Option<Candle>,
        closed: Vec<Candle>,
    ) -> Self {
        let mut series = CandleSeries::new(interval, keep);
        let skip = closed.len().saturating_sub(keep);
        series.closed.extend(closed.into_iter().skip(skip));
        series.open = open;
        series
    }

    /// The closed candles kept, oldest first.
    pub(crate) fn closed_candles(&self) -> Vec<Candle> {
        self.closed.iter().copied().collect()
    }

    /// Closes the open candle if `now` is past its interval; returns it closed.
    pub fn roll(&mut self, now: Timestamp) -> Option<Candle> {
        let open = self.open?;
        if now < open.start.saturating_add(self.interval.nanos()) {
            return None;
        }
        let mut c = open;
        c.closed = true;
        self.open = None;
        if self.closed.len() == self.keep {
            self.closed.pop_front();
        }
        if self.keep > 0 {
            self.closed.push_back(c);
        }
        Some(c)
    }

    /// Adds a trade to its candle. Call [`roll`](Self::roll) first with the trade's timestamp.
    pub fn record(&mut self, ts: Timestamp, price: Ticks, size: Lots) {
        let start = ts - ts % self.interval.nanos();
        match &mut self.open {
            Some(c) => {
                c.high = c.high.max(price);
                c.low = c.low.min(price);
                c.close = price;
                c.volume += size;
                c.trades += 1;
            }
            None => {
                self.open = Some(Candle {
                    start,
                    open: price,
                    high: price,
                    low: price,
                    close: price,
                    volume: size,
                    trades: 1,
                    closed: false,
                })
            }
        }
    }

    pub fn open_candle(&self) -> Option<Candle> {
        self.open
    }

    /// When the open candle's interval ends (the first timestamp of the next).
    pub fn open_end(&self) -> Option<Timestamp> {
        self.open
            .map(|c| c.start.saturating_add(self.interval.nanos()))
    }

    /// The newest `keep` candles, oldest first: closed ones followed by the open one.
    pub fn recent(&self) -> impl Iterator<Item = Candle> + '_ {
        let total = self.closed.len() + usize::from(self.open.is_some());
        let skip = total.saturating_sub(self.keep);
        self.closed.iter().copied().chain(self.open).skip(skip)
    }
}

fn write_candle(wire: &WireInstrument, c: &Candle, o: &mut JsonObject<'_>) {
    o.u64("start", c.start)
        .decimal("open", wire.price, c.open)
        .decimal("high", wire.price, c.high)
        .decimal("low", wire.price, c.low)
        .decimal("close", wire.price, c.close)
        .decimal("volume", wire.size, c.volume as i64)
        .u64("trades", c.trades)
        .bool("closed", c.closed);
}

/// A candle message (the open candle, or one just closed), encoded when first read.
pub struct CandleUpdate {
    pub wire: Arc<WireInstrument>,
    pub interval: Interval,
    pub ts: Timestamp,
    pub candle: Candle,
}

impl Encode for CandleUpdate {
    fn json(&self, seq: u64, prev_seq: u64) -> Bytes {
        encode(&self.wire, self.interval, seq, prev_seq, &self.candle)
    }

    fn proto(&self, seq: u64, prev_seq: u64) -> Bytes {
        let payload = proto::candle(&self.wire, &self.candle);
        let channel = Channel::Candles(self.interval);
        proto::market(&self.wire, channel, seq, prev_seq, self.ts, payload)
    }
}

pub fn encode(
    wire: &WireInstrument,
    interval: Interval,
    seq: u64,
    prev_seq: u64,
    c: &Candle,
) -> Bytes {
    let mut out = Vec::with_capacity(256);
    let mut o = JsonObject::new(&mut out);
    o.str("type", "candle")
        .str("channel", "candles")
        .str("interval", interval.as_str())
        .str("instrument", wire.symbol())
        .u64("seq", seq)
        .u64("prev_seq", prev_seq);
    write_candle(wire, c, &mut o);
    o.finish();
    Bytes::from(out)
}

pub fn encode_snapshot(wire: &WireInstrument, series: &CandleSeries, seq: u64) -> Bytes {
    let mut out = Vec::with_capacity(128 + 160 * (series.closed.len() + 1));
    JsonObject::new(&mut out)
        .str("type", "snapshot")
        .str("channel", "candles")
        .str("interval", series.interval.as_str())
        .str("instrument", wire.symbol())
        .u64("seq", seq)
        .u64("prev_seq", 0)
        .raw_with("candles", |o| {
            o.push(b'[');
            for (i, c) in series.recent().enumerate() {
                if i > 0 {
                    o.push(b',');
                }
                let mut obj = JsonObject::new(o);
                write_candle(wire, &c, &mut obj);
                obj.finish();
            }
            o.push(b']');
        })
        .finish();
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A snapshot holds the newest `keep` candles, the open one last, whether or not one is
    /// open.
    #[test]
    fn recent_holds_the_newest_keep_candles() {
        let interval = Interval::ALL[0];
        let mut series = CandleSeries::new(interval, 3);
        for i in 0..5 {
            let ts = i * interval.nanos();
            series.roll(ts);
            series.record(ts, 100 + i as i64, 1);
        }
        let starts = |s: &CandleSeries| s.recent().map(|c| c.start).collect::<Vec<_>>();
        let n = interval.nanos();
        assert_eq!(starts(&series), [2 * n, 3 * n, 4 * n]);
        assert!(!series.recent().last().unwrap().closed);
        series.roll(5 * n);
        assert_eq!(starts(&series), [2 * n, 3 * n, 4 * n]);
        assert!(series.recent().all(|c| c.closed));
    }

    proptest! {
        /// Against a slow reference that groups all trades by interval start.
        #[test]
        fn candles_match_grouping_by_interval(steps in proptest::collection::vec((0u64..90, 1i64..500, 1u64..20), 1..200)) {
            for interval in Interval::ALL {
                let mut series = CandleSeries::new(interval, 10_000);
                let mut trades = Vec::new();
                let mut ts = 1_000;
                for &(gap, price, size) in &steps {
                    ts += gap * interval.nanos() / 30;
                    series.roll(ts);
                    series.record(ts, price, size);
                    trades.push((ts, price, size));
                }
                let mut expect: BTreeMap<u64, Candle> = BTreeMap::new();
                for &(ts, price, size) in &trades {
                    let start = ts - ts % interval.nanos();
                    let c = expect.entry(start).or_insert(Candle { start, open: price, high: price, low: price, close: price, volume: 0, trades: 0, closed: true });
                    c.high = c.high.max(price);
                    c.low = c.low.min(price);
                    c.close = price;
                    c.volume += size;
                    c.trades += 1;
                }
                let mut expect: Vec<Candle> = expect.into_values().collect();
                if let Some(last) = expect.last_mut() {
                    last.closed = false;
                }
                let got: Vec<Candle> = series.recent().collect();
                prop_assert_eq!(got, expect);
            }
        }
    }
}
