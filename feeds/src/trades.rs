//! Trades: one message per engine trade, in engine order, with the aggressor's side.

use crate::hub::Encode;
use crate::instruments::WireInstrument;
use crate::l3::side_str;
use crate::proto;
use crate::topic::Channel;
use crate::wire::JsonObject;
use bytes::Bytes;
use std::sync::Arc;
use ticker_engine::{Lots, Side, Ticks, Timestamp};

/// A trade message, encoded when first read.
pub struct TradeUpdate {
    pub wire: Arc<WireInstrument>,
    pub ts: Timestamp,
    pub trade_id: u64,
    pub price: Ticks,
    pub size: Lots,
    pub aggressor: Side,
}

impl Encode for TradeUpdate {
    fn json(&self, seq: u64, prev_seq: u64) -> Bytes {
        let mut out = Vec::with_capacity(200);
        JsonObject::new(&mut out)
            .str("type", "trade")
            .str("channel", "trades")
            .str("instrument", self.wire.symbol())
            .u64("seq", seq)
            .u64("prev_seq", prev_seq)
            .u64("ts", self.ts)
            .u64("trade_id", self.trade_id)
            .decimal("price", self.wire.price, self.price)
            .decimal("size", self.wire.size, self.size as i64)
            .str("side", side_str(self.aggressor))
            .finish();
        Bytes::from(out)
    }

    fn proto(&self, seq: u64, prev_seq: u64) -> Bytes {
        let payload = proto::trade(
            &self.wire,
            self.trade_id,
            self.price,
            self.size,
            self.aggressor,
        );
        proto::market(&self.wire, Channel::Trades, seq, prev_seq, self.ts, payload)
    }
}
