//! Channels: what a `channels` entry subscribes to, the key a connection knows it by, and the
//! reading of a `channels` array, each bad entry named by its path (`channels[2].interval`).

use super::fields::Fields;
use crate::order_entry::Violations;
use serde_json::{Map, Value};
use std::sync::Arc;
use ticker_feeds::{Channel, Instruments, Interval, WireInstrument};

/// What a channel subscribes to.
#[derive(Debug, Clone)]
pub enum ChannelTarget {
    Market {
        channel: Channel,
        instrument: Arc<WireInstrument>,
    },
    /// The authenticated account's order updates.
    Orders,
    /// Every account's order updates (a `risk` token's).
    DropCopy,
    /// Every account's positions (a `risk` token's).
    Positions,
}

impl ChannelTarget {
    /// Whether the channel needs a token with the `risk` role.
    pub fn needs_risk_role(&self) -> bool {
        matches!(self, ChannelTarget::DropCopy | ChannelTarget::Positions)
    }
}

/// Identifies a subscription on a connection: subscribing again to the same key restarts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKey {
    Market {
        channel: Channel,
        instrument: ticker_engine::InstrumentId,
    },
    Orders,
    DropCopy,
    Positions,
}

/// One entry of a `channels` array.
#[derive(Debug, Clone)]
pub struct ChannelSpec {
    pub target: ChannelTarget,
    pub from_seq: Option<u64>,
}

impl ChannelSpec {
    pub fn key(&self) -> ChannelKey {
        match &self.target {
            ChannelTarget::Market {
                channel,
                instrument,
            } => ChannelKey::Market {
                channel: *channel,
                instrument: instrument.id(),
            },
            ChannelTarget::Orders => ChannelKey::Orders,
            ChannelTarget::DropCopy => ChannelKey::DropCopy,
            ChannelTarget::Positions => ChannelKey::Positions,
        }
    }

    /// The channel as replies echo it.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        match &self.target {
            ChannelTarget::Market {
                channel,
                instrument,
            } => {
                o.insert("name".into(), channel.name().into());
                o.insert("instrument".into(), instrument.symbol().into());
                if let Channel::Candles(i) = channel {
                    o.insert("interval".into(), i.as_str().into());
                }
            }
            ChannelTarget::Orders | ChannelTarget::DropCopy | ChannelTarget::Positions => {
                o.insert("name".into(), self.label().into());
            }
        }
        if let Some(seq) = self.from_seq {
            o.insert("from_seq".into(), seq.into());
        }
        Value::Object(o)
    }

    /// `trades BTC-USD`, `candles 1m ETH-USD`, `orders`: for close reasons.
    pub fn label(&self) -> String {
        match &self.target {
            ChannelTarget::Market {
                channel: Channel::Candles(i),
                instrument,
            } => format!("candles {} {}", i.as_str(), instrument.symbol()),
            ChannelTarget::Market {
                channel,
                instrument,
            } => format!("{} {}", channel.name(), instrument.symbol()),
            ChannelTarget::Orders => "orders".into(),
            ChannelTarget::DropCopy => "drop_copy".into(),
            ChannelTarget::Positions => "positions".into(),
        }
    }
}

const CHANNEL_FIELDS: [&str; 4] = ["name", "instrument", "interval", "from_seq"];

pub(super) fn channels(
    f: &Fields<'_>,
    instruments: &Instruments,
    max: usize,
    v: &mut Violations,
) -> Vec<ChannelSpec> {
    let items = match f.obj.get("channels") {
        Some(Value::Array(items)) => items,
        Some(_) => {
            v.add("channels", "must be an array of channels");
            return Vec::new();
        }
        None => {
            v.add(
                "channels",
                "required: an array such as [{\"name\":\"depth\",\"instrument\":\"BTC-USD\"}]",
            );
            return Vec::new();
        }
    };
    if items.is_empty() {
        v.add("channels", "must list at least one channel");
        return Vec::new();
    }
    if items.len() > max {
        v.add(
            "channels",
            format!("at most {max} channels per request, got {}", items.len()),
        );
        return Vec::new();
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("channels[{i}]");
        let Value::Object(obj) = item else {
            v.add(prefix, "must be an object with a \"name\"");
            continue;
        };
        for key in obj.keys() {
            if !CHANNEL_FIELDS.contains(&key.as_str()) {
                v.add(format!("{prefix}.{key}"), "unknown field of a channel");
            }
        }
        let f = Fields {
            obj,
            prefix: format!("{prefix}."),
        };
        let from_seq = f.integer("from_seq", v);
        let Some(name) = f.string("name", true, v) else {
            continue;
        };
        let account_wide = match name.as_str() {
            "orders" => Some(ChannelTarget::Orders),
            "drop_copy" => Some(ChannelTarget::DropCopy),
            "positions" => Some(ChannelTarget::Positions),
            _ => None,
        };
        if let Some(target) = account_wide {
            for field in ["instrument", "interval"] {
                if obj.contains_key(field) {
                    v.add(
                        f.path(field),
                        format!("the {name} channel is on every instrument"),
                    );
                }
            }
            out.push(ChannelSpec { target, from_seq });
            continue;
        }
        let interval = f.string("interval", name == "candles", v);
        let channel = match name.as_str() {
            "ticker" => Channel::Ticker,
            "depth" => Channel::Depth,
            "trades" => Channel::Trades,
            "l3" => Channel::L3,
            "candles" => match interval.as_deref().map(Interval::parse) {
                Some(Some(i)) => Channel::Candles(i),
                Some(None) => {
                    v.add(f.path("interval"), "must be \"1s\", \"1m\" or \"1h\"");
                    continue;
                }
                None => continue,
            },
            other => {
                v.add(
                    f.path("name"),
                    format!(
                        "unknown channel {other:?}; one of ticker, depth, trades, candles, l3, orders, drop_copy, positions"
                    ),
                );
                continue;
            }
        };
        if interval.is_some() && name != "candles" {
            v.add(f.path("interval"), "only candles have an interval");
        }
        let symbol = f.string("instrument", true, v);
        let Some(symbol) = symbol else { continue };
        let Some(instrument) =
            crate::order_entry::instrument(instruments, &f.path("instrument"), &symbol, v)
        else {
            continue;
        };
        out.push(ChannelSpec {
            target: ChannelTarget::Market {
                channel,
                instrument,
            },
            from_seq,
        });
    }
    out
}
