//! Topics a subscriber can follow: a market-data channel of one instrument, one account's
//! order updates, or one of the risk topics over every account (the drop copy and positions).
//! Each has a fixed slow-consumer policy.

use serde::{Deserialize, Serialize};
use ticker_engine::{AccountId, InstrumentId};

/// Candle interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Interval {
    S1,
    M1,
    H1,
}

impl Interval {
    pub const ALL: [Interval; 3] = [Interval::S1, Interval::M1, Interval::H1];

    pub fn nanos(self) -> u64 {
        match self {
            Interval::S1 => 1_000_000_000,
            Interval::M1 => 60_000_000_000,
            Interval::H1 => 3_600_000_000_000,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::S1 => "1s",
            Interval::M1 => "1m",
            Interval::H1 => "1h",
        }
    }

    pub fn parse(s: &str) -> Option<Interval> {
        Interval::ALL.into_iter().find(|i| i.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// L1: best bid/ask, last trade, rolling 24h statistics.
    Ticker,
    /// L2: price levels with snapshots, deltas and checksums.
    Depth,
    Trades,
    Candles(Interval),
    /// L3: order by order.
    L3,
}

impl Channel {
    pub const ALL: [Channel; 7] = [
        Channel::Ticker,
        Channel::Depth,
        Channel::Trades,
        Channel::Candles(Interval::S1),
        Channel::Candles(Interval::M1),
        Channel::Candles(Interval::H1),
        Channel::L3,
    ];

    /// Wire name (`candles` channels are told apart by their interval).
    pub fn name(self) -> &'static str {
        match self {
            Channel::Ticker => "ticker",
            Channel::Depth => "depth",
            Channel::Trades => "trades",
            Channel::Candles(_) => "candles",
            Channel::L3 => "l3",
        }
    }

    /// Parses a wire name; `candles` needs an interval (`1s`, `1m`, `1h`).
    pub fn parse(name: &str, interval: Option<&str>) -> Option<Channel> {
        Some(match name {
            "ticker" => Channel::Ticker,
            "depth" => Channel::Depth,
            "trades" => Channel::Trades,
            "l3" => Channel::L3,
            "candles" => Channel::Candles(Interval::parse(interval.unwrap_or("1m"))?),
            _ => return None,
        })
    }

    pub fn policy(self) -> SlowPolicy {
        match self {
            Channel::Ticker | Channel::Candles(_) => SlowPolicy::Conflate,
            Channel::Depth | Channel::L3 => SlowPolicy::Resync,
            Channel::Trades => SlowPolicy::Disconnect,
        }
    }
}

/// What happens to a subscriber whose queue overflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlowPolicy {
    /// Skip to the latest message (it supersedes the older ones).
    Conflate,
    /// Drop the queue and start again from a fresh snapshot with a new base `seq`.
    Resync,
    /// End the subscription with a reason: the stream must not have holes.
    Disconnect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Market {
        channel: Channel,
        instrument: InstrumentId,
    },
    /// One account's order updates: never dropped, so a subscriber that falls behind its
    /// queue limit is disconnected.
    Orders(AccountId),
    /// Every account's order updates and executions merged into one stream with its own
    /// gap-free sequence (see [`crate::drop_copy`]): lossless like an account's.
    DropCopy,
    /// Every change to any account's position in any instrument (see [`crate::positions`]).
    /// Each message is the position's whole state, so a subscriber that falls behind starts
    /// again from a snapshot of all positions.
    Positions,
}

impl Topic {
    pub fn policy(self) -> SlowPolicy {
        match self {
            Topic::Market { channel, .. } => channel.policy(),
            Topic::Orders(_) | Topic::DropCopy => SlowPolicy::Disconnect,
            Topic::Positions => SlowPolicy::Resync,
        }
    }

    /// Index for per-kind counters: the channel's position in [`Channel::ALL`], then order
    /// updates, the drop copy and positions (see [`crate::hub::KINDS`]).
    pub fn kind_index(self) -> usize {
        match self {
            Topic::Market { channel, .. } => Channel::ALL
                .iter()
                .position(|c| *c == channel)
                .expect("every channel is listed"),
            Topic::Orders(_) => Channel::ALL.len(),
            Topic::DropCopy => Channel::ALL.len() + 1,
            Topic::Positions => Channel::ALL.len() + 2,
        }
    }
}
