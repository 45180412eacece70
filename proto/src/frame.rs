//! Stream frames: a message encoded once and shared by every subscriber, plus the few fields
//! that differ per subscriber.
//!
//! A protobuf message's encoding is the concatenation of its fields' encodings, and a decoder
//! merges fields in whatever order they come. So `shared ++ tail` decodes as the shared message
//! with the tail's fields set: the server writes the same `Bytes` to every subscriber and adds
//! at most a dozen bytes of its own (none at all for a live update, whose tail holds only
//! default values, which proto3 does not encode).

use crate::v1::Delivery;
use bytes::{BufMut, Bytes};
use prost::encoding::{encode_varint, encoded_len_varint, key_len, WireType};

/// Field number of `delivery` in `MarketDataMessage`, `OrderUpdate` and `PositionUpdate`.
pub const DELIVERY_FIELD: u32 = 30;
/// Field number of `skipped` in `MarketDataMessage`.
pub const SKIPPED_FIELD: u32 = 31;

/// The per-subscriber fields of a stream message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tail {
    pub delivery: Delivery,
    /// Messages skipped by conflation (`MarketDataMessage` only).
    pub skipped: u64,
}

impl Tail {
    fn fields(&self) -> [(u32, u64); 2] {
        [
            (DELIVERY_FIELD, self.delivery as i32 as u64),
            (SKIPPED_FIELD, self.skipped),
        ]
    }

    pub fn encoded_len(&self) -> usize {
        self.fields()
            .iter()
            .filter(|(_, v)| *v != 0)
            .map(|&(tag, v)| key_len(tag) + encoded_len_varint(v))
            .sum()
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        for (tag, v) in self.fields() {
            if v != 0 {
                encode_varint(((tag << 3) | WireType::Varint as u32) as u64, buf);
                encode_varint(v, buf);
            }
        }
    }
}

/// One stream message as sent: the shared encoding and this subscriber's tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub shared: Bytes,
    pub tail: Tail,
}

impl Frame {
    pub fn encoded_len(&self) -> usize {
        self.shared.len() + self.tail.encoded_len()
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.shared);
        self.tail.encode(buf);
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::*;
    use prost::Message;

    fn trade() -> MarketDataMessage {
        MarketDataMessage {
            instrument: "BTC-USD".into(),
            channel: Channel::Trades as i32,
            seq: 42,
            prev_seq: 40,
            timestamp_ns: 1_764_430_000_000_000_000,
            payload: Some(market_data_message::Payload::Trade(Trade {
                trade_id: 7,
                price: "65000.10".into(),
                size: "0.25000".into(),
                side: Side::Buy as i32,
            })),
            ..Default::default()
        }
    }

    #[test]
    fn shared_bytes_plus_tail_decode_as_the_message_with_the_tail_set() {
        let shared = Bytes::from(trade().encode_to_vec());
        let frame = Frame {
            shared,
            tail: Tail {
                delivery: Delivery::Conflated,
                skipped: 300,
            },
        };
        let bytes = frame.to_vec();
        assert_eq!(bytes.len(), frame.encoded_len());
        let decoded = MarketDataMessage::decode(bytes.as_slice()).unwrap();
        let mut expect = trade();
        expect.delivery = Delivery::Conflated as i32;
        expect.skipped = 300;
        assert_eq!(decoded, expect);
    }

    #[test]
    fn a_live_update_adds_no_bytes() {
        let shared = Bytes::from(trade().encode_to_vec());
        let frame = Frame {
            shared: shared.clone(),
            tail: Tail::default(),
        };
        assert_eq!(frame.to_vec(), shared.to_vec());
    }

    #[test]
    fn the_order_update_tail_sets_its_delivery() {
        let update = OrderUpdate {
            seq: 3,
            prev_seq: 2,
            event: Some(order_update::Event::Snapshot(OpenOrders::default())),
            ..Default::default()
        };
        let frame = Frame {
            shared: Bytes::from(update.encode_to_vec()),
            tail: Tail {
                delivery: Delivery::Snapshot,
                skipped: 0,
            },
        };
        let decoded = OrderUpdate::decode(frame.to_vec().as_slice()).unwrap();
        assert_eq!(decoded.delivery(), Delivery::Snapshot);
        assert_eq!(decoded.seq, 3);
    }

    #[test]
    fn the_descriptor_set_names_both_services() {
        // Names are stored as plain strings inside the encoded descriptors.
        let text = String::from_utf8_lossy(crate::FILE_DESCRIPTOR_SET);
        assert!(text.contains("OrderService") && text.contains("MarketDataService"));
    }
}
