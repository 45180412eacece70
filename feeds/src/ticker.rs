//! L1 ticker: best bid and ask with sizes, the last trade, and rolling 24-hour statistics
//! computed from the events' ingress timestamps.
//!
//! ## The 24-hour window
//! Trades are grouped by the minute of their timestamp (`ts / 60 s`). The window at time `now`
//! holds the trades of the 1,440 minutes ending with `now`'s minute. `open` is the first trade
//! price in the window, `high`/`low` the extremes, `volume` the summed size, `change` the last
//! trade price minus `open`. With no trade in the window every figure is `null`.

use crate::hub::Encode;
use crate::instruments::WireInstrument;
use crate::proto;
use crate::topic::Channel;
use crate::wire::JsonObject;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use ticker_engine::{Lots, Ticks, Timestamp};

const MINUTE: u64 = 60_000_000_000;
/// Minutes in the rolling window.
pub const WINDOW_MINUTES: u64 = 24 * 60;

/// One minute of the window: its trades' prices and volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Bucket {
    minute: u64,
    open: Ticks,
    high: Ticks,
    low: Ticks,
    close: Ticks,
    volume: Lots,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats24h {
    pub open: Ticks,
    pub high: Ticks,
    pub low: Ticks,
    pub last: Ticks,
    pub volume: Lots,
}

impl Stats24h {
    pub fn change(&self) -> Ticks {
        self.last - self.open
    }
}

/// Rolling 24h statistics in O(1) amortised per trade: one bucket per minute with trades,
/// running volume, and high/low rescanned only when the bucket holding them expires.
#[derive(Debug, Default, Clone)]
pub struct Rolling24h {
    buckets: VecDeque<Bucket>,
    volume: Lots,
    high: Ticks,
    low: Ticks,
}

impl Rolling24h {
    pub fn record(&mut self, ts: Timestamp, price: Ticks, size: Lots) {
        let minute = ts / MINUTE;
        self.expire(ts);
        match self.buckets.back_mut() {
            Some(b) if b.minute >= minute => {
                // Timestamps never go back; a trade stamped within the current minute joins it.
                b.high = b.high.max(price);
                b.low = b.low.min(price);
                b.close = price;
                b.volume += size;
            }
            _ => self.buckets.push_back(Bucket {
                minute,
                open: price,
                high: price,
                low: price,
                close: price,
                volume: size,
            }),
        }
        if self.buckets.len() == 1 && self.buckets[0].volume == size {
            self.high = price;
            self.low = price;
        } else {
            self.high = self.high.max(price);
            self.low = self.low.min(price);
        }
        self.volume += size;
    }

    /// Drops the minutes that left the window at `now`.
    pub fn expire(&mut self, now: Timestamp) {
        let minute = now / MINUTE;
        let mut rescan = false;
        while let Some(b) = self.buckets.front() {
            if b.minute + WINDOW_MINUTES > minute {
                break;
            }
            self.volume -= b.volume;
            rescan |= b.high == self.high || b.low == self.low;
            self.buckets.pop_front();
        }
        if rescan {
            self.high = self.buckets.iter().map(|b| b.high).max().unwrap_or(0);
            self.low = self.buckets.iter().map(|b| b.low).min().unwrap_or(0);
        }
    }

    /// The window's minutes, oldest first (for snapshots).
    pub(crate) fn buckets(&self) -> Vec<Bucket> {
        self.buckets.iter().copied().collect()
    }

    /// The window holding `buckets` (oldest first), its totals derived from them: what
    /// [`record`](Self::record) and [`expire`](Self::expire) keep them equal to. `None` when the
    /// minutes do not strictly increase, a minute lies beyond any timestamp, or the volume
    /// overflows.
    pub(crate) fn from_buckets(buckets: Vec<Bucket>) -> Option<Rolling24h> {
        let latest_minute = u64::MAX / MINUTE;
        let increasing = buckets.windows(2).all(|w| w[0].minute < w[1].minute);
        if !increasing || buckets.iter().any(|b| b.minute > latest_minute) {
            return None;
        }
        let volume = buckets
            .iter()
            .try_fold(0 as Lots, |v, b| v.checked_add(b.volume))?;
        Some(Rolling24h {
            high: buckets.iter().map(|b| b.high).max().unwrap_or(0),
            low: buckets.iter().map(|b| b.low).min().unwrap_or(0),
            buckets: buckets.into(),
            volume,
        })
    }

    pub fn stats(&self) -> Option<Stats24h> {
        let first = self.buckets.front()?;
        let last = self.buckets.back()?;
        Some(Stats24h {
            open: first.open,
            high: self.high,
            low: self.low,
            last: last.close,
            volume: self.volume,
        })
    }
}

/// What the ticker shows; a message is published when it changes.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickerState {
    pub bid: Option<(Ticks, Lots)>,
    pub ask: Option<(Ticks, Lots)>,
    pub last: Option<(Ticks, Lots)>,
    pub halted: bool,
    pub stats: Option<Stats24h>,
}

/// A ticker message: the state as of `ts`, encoded when a subscriber first reads it.
pub struct TickerUpdate {
    pub wire: Arc<WireInstrument>,
    pub ts: Timestamp,
    pub state: TickerState,
}

impl Encode for TickerUpdate {
    fn json(&self, seq: u64, prev_seq: u64) -> Bytes {
        encode(&self.wire, seq, prev_seq, self.ts, &self.state)
    }

    fn proto(&self, seq: u64, prev_seq: u64) -> Bytes {
        let payload = proto::ticker(&self.wire, &self.state);
        proto::market(&self.wire, Channel::Ticker, seq, prev_seq, self.ts, payload)
    }
}

pub fn encode(
    wire: &WireInstrument,
    seq: u64,
    prev_seq: u64,
    ts: Timestamp,
    t: &TickerState,
) -> Bytes {
    let mut out = Vec::with_capacity(384);
    let (p, s) = (wire.price, wire.size);
    let mut o = JsonObject::new(&mut out);
    o.str("type", "ticker")
        .str("channel", "ticker")
        .str("instrument", wire.symbol())
        .u64("seq", seq)
        .u64("prev_seq", prev_seq)
        .u64("ts", ts)
        .opt_decimal("bid", p, t.bid.map(|l| l.0))
        .opt_decimal("bid_size", s, t.bid.map(|l| l.1 as i64))
        .opt_decimal("ask", p, t.ask.map(|l| l.0))
        .opt_decimal("ask_size", s, t.ask.map(|l| l.1 as i64))
        .opt_decimal("last", p, t.last.map(|l| l.0))
        .opt_decimal("last_size", s, t.last.map(|l| l.1 as i64))
        .opt_decimal("open_24h", p, t.stats.map(|x| x.open))
        .opt_decimal("high_24h", p, t.stats.map(|x| x.high))
        .opt_decimal("low_24h", p, t.stats.map(|x| x.low))
        .opt_decimal("volume_24h", s, t.stats.map(|x| x.volume as i64))
        .opt_decimal("change_24h", p, t.stats.map(|x| x.change()))
        .str("status", if t.halted { "halted" } else { "trading" })
        .finish();
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The slow reference: every trade kept, the window recomputed from scratch.
    fn reference(trades: &[(Timestamp, Ticks, Lots)], now: Timestamp) -> Option<Stats24h> {
        let now_min = now / MINUTE;
        let window: Vec<_> = trades
            .iter()
            .filter(|t| t.0 / MINUTE + WINDOW_MINUTES > now_min)
            .collect();
        let first = window.first()?;
        Some(Stats24h {
            open: first.1,
            high: window.iter().map(|t| t.1).max()?,
            low: window.iter().map(|t| t.1).min()?,
            last: window.last()?.1,
            volume: window.iter().map(|t| t.2).sum(),
        })
    }

    proptest! {
        #[test]
        fn rolling_stats_match_the_reference(steps in proptest::collection::vec((0u64..4 * 3_600, 1i64..1000, 1u64..50), 1..300)) {
            let mut rolling = Rolling24h::default();
            let mut trades = Vec::new();
            let mut ts = 0;
            for (gap_s, price, size) in steps {
                // Gaps up to 4 h, so whole windows pass over a run.
                ts += gap_s * 1_000_000_000 * 6;
                rolling.record(ts, price, size);
                trades.push((ts, price, size));
                prop_assert_eq!(rolling.stats(), reference(&trades, ts));
                // A snapshot keeps the minutes only; the totals come back equal.
                let restored = Rolling24h::from_buckets(rolling.buckets()).unwrap();
                prop_assert_eq!(
                    (restored.high, restored.low, restored.volume),
                    (rolling.high, rolling.low, rolling.volume)
                );
                let later = ts + gap_s * 1_000_000_000 * 10;
                let mut copy = rolling.clone();
                copy.expire(later);
                prop_assert_eq!(copy.stats(), reference(&trades, later));
            }
        }
    }
}
