//! The server's own messages (docs/websocket.md): replies to commands, `hello`, `gap` and
//! `error`. Market data and order updates are not here: they are the feeds' JSON, forwarded as
//! they are.
//!
//! An order command's `result` is read from its events by the same [`crate::grpc::report`]
//! code the gRPC front answers with, so both fronts describe an order the same way.

use super::limits::WsLimits;
use super::protocol::{ChannelSpec, RequestError};
use crate::grpc::report;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use ticker_engine::{Event, EventKind, RejectReason};
use ticker_feeds::Instruments;
use ticker_proto::v1 as pb;

fn encode(value: Value) -> Bytes {
    Bytes::from(value.to_string())
}

/// The first message of every connection.
pub fn hello(limits: &WsLimits) -> Bytes {
    encode(json!({
        "type": "hello",
        "server": "tickerd",
        "protocol": 1,
        "limits": {
            "max_message_size": limits.max_message_size,
            "max_subscriptions": limits.max_subscriptions,
            "messages_per_second": limits.messages_per_second,
            "burst": limits.burst,
            "ping_interval_ms": limits.ping_interval.as_millis() as u64,
            "idle_timeout_ms": limits.idle_timeout.as_millis() as u64,
        }
    }))
}

/// `subscribed` or `unsubscribed`.
pub fn channels(kind: &str, id: Option<u64>, channels: &[ChannelSpec]) -> Bytes {
    let list: Vec<Value> = channels.iter().map(ChannelSpec::to_json).collect();
    encode(json!({"type": kind, "id": id, "channels": list}))
}

pub fn pong(id: Option<u64>, ts: u64) -> Bytes {
    encode(json!({"type": "pong", "id": id, "ts": ts}))
}

pub fn authenticated(id: Option<u64>, account: u64) -> Bytes {
    encode(json!({"type": "authenticated", "id": id, "account": account}))
}

pub fn instruments(id: Option<u64>, instruments: &Instruments) -> Bytes {
    let list: Vec<Value> = instruments
        .all()
        .iter()
        .map(|w| {
            let i = crate::grpc::convert::instrument_info(w);
            json!({
                "symbol": i.symbol, "id": i.id, "tick_size": i.tick_size, "lot_size": i.lot_size,
                "min_size": i.min_size, "max_size": i.max_size,
                "reference_price": i.reference_price, "band_low": i.band_low, "band_high": i.band_high,
            })
        })
        .collect();
    encode(json!({"type": "instruments", "id": id, "instruments": list}))
}

pub fn error(e: &RequestError) -> Bytes {
    let mut o = Map::new();
    o.insert("type".into(), "error".into());
    o.insert("id".into(), e.id.into());
    o.insert("op".into(), e.op.into());
    o.insert("code".into(), e.code.as_str().into());
    o.insert("message".into(), e.message.clone().into());
    if !e.fields.is_empty() {
        let fields: Vec<Value> = e
            .fields
            .iter()
            .map(|(field, description)| json!({"field": field, "description": description}))
            .collect();
        o.insert("fields".into(), fields.into());
    }
    encode(Value::Object(o))
}

/// A trades subscription resumed beyond the history: what was lost.
pub fn gap(spec: &ChannelSpec, from_seq: u64, resumed_after: u64) -> Bytes {
    let mut o = match spec.to_json() {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    o.remove("from_seq");
    o.insert("type".into(), "gap".into());
    o.insert(
        "channel".into(),
        o.get("name").cloned().unwrap_or(Value::Null),
    );
    o.remove("name");
    o.insert("from_seq".into(), from_seq.into());
    o.insert("resumed_after".into(), resumed_after.into());
    encode(Value::Object(o))
}

/// `"SIDE_BUY"` → `"buy"`: protobuf enum names as the JSON protocol writes them.
fn enum_str(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

fn order_json(r: &pb::OrderReport) -> Value {
    let mut o = Map::new();
    o.insert("order_id".into(), r.order_id.to_string().into());
    if r.client_order_id != 0 {
        o.insert("client_order_id".into(), r.client_order_id.into());
    }
    let mut text = |key: &str, value: &str| {
        if !value.is_empty() {
            o.insert(key.into(), value.into());
        }
    };
    text("instrument", &r.instrument);
    if let Ok(side) = pb::Side::try_from(r.side) {
        if side != pb::Side::Unspecified {
            text("side", &enum_str(side.as_str_name(), "SIDE_"));
        }
    }
    if let Ok(status) = pb::OrderStatus::try_from(r.status) {
        if status != pb::OrderStatus::Unspecified {
            text("status", &enum_str(status.as_str_name(), "ORDER_STATUS_"));
        }
    }
    text("price", &r.price);
    text("trigger_price", &r.trigger_price);
    text("size", &r.size);
    text("remaining_size", &r.remaining_size);
    text("visible_size", &r.visible_size);
    text("filled_size", &r.filled_size);
    if let Ok(reason) = pb::DoneReason::try_from(r.done_reason) {
        if reason != pb::DoneReason::Unspecified {
            text(
                "done_reason",
                &enum_str(reason.as_str_name(), "DONE_REASON_"),
            );
        }
    }
    let fills: Vec<Value> = r
        .fills
        .iter()
        .map(|f| {
            let liquidity = pb::Liquidity::try_from(f.liquidity)
                .map(|l| enum_str(l.as_str_name(), "LIQUIDITY_"))
                .unwrap_or_default();
            json!({"trade_id": f.trade_id, "price": f.price, "size": f.size,
                   "liquidity": liquidity, "engine_seq": f.engine_seq})
        })
        .collect();
    o.insert("fills".into(), fills.into());
    Value::Object(o)
}

/// The `result` of an order command from its events (outcome first), or the `error` it maps
/// to: another account's order is `permission_denied`, an empty answer (the market stopped)
/// `unavailable`. Every other engine reject is a normal result with its reason.
pub fn result(
    op: &'static str,
    id: Option<u64>,
    events: &[Event],
    instruments: &Instruments,
) -> Result<Bytes, RequestError> {
    use super::protocol::ErrorCode;
    let Some(first) = events.first() else {
        return Err(
            RequestError::new(ErrorCode::Unavailable, "the market is shutting down")
                .about(Some(op), id),
        );
    };
    let mut o = Map::new();
    o.insert("type".into(), "result".into());
    o.insert("op".into(), op.into());
    o.insert("id".into(), id.into());
    if let EventKind::Rejected {
        reason, order_id, ..
    } = first.kind
    {
        if reason == RejectReason::NotOwner {
            return Err(RequestError::new(
                ErrorCode::PermissionDenied,
                format!("order {order_id} belongs to another account"),
            )
            .about(Some(op), id));
        }
        o.insert("accepted".into(), false.into());
        o.insert("reason".into(), reason.as_str().into());
        o.insert("engine_seq".into(), first.seq.into());
        o.insert("ts".into(), first.ts.into());
        return Ok(encode(Value::Object(o)));
    }
    o.insert("accepted".into(), true.into());
    o.insert("engine_seq".into(), first.seq.into());
    o.insert("ts".into(), first.ts.into());
    let order = match &first.kind {
        EventKind::PlaceAccepted { order, .. } => Some(report::order_report(
            instruments,
            events,
            order.order_id,
            Some(order),
        )),
        _ => report::touched(instruments, events),
    };
    if op == "mass_cancel" {
        let ids: Vec<Value> = report::mass_cancelled(events)
            .into_iter()
            .map(|id| id.to_string().into())
            .collect();
        o.insert("cancelled".into(), ids.into());
    } else if let Some(order) = order {
        o.insert("order".into(), order_json(&order));
    }
    Ok(encode(Value::Object(o)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::protocol::{ChannelTarget, ErrorCode};
    use ticker_feeds::{Channel, WireInstrument};

    #[test]
    fn an_error_names_its_fields() {
        let e = RequestError::invalid(
            "invalid request: bad price".into(),
            vec![("price".into(), "off the grid".into())],
        )
        .about(Some("place"), Some(7));
        let v: Value = serde_json::from_slice(&error(&e)).unwrap();
        assert_eq!(
            v,
            json!({"type":"error","id":7,"op":"place","code":"invalid_request",
                   "message":"invalid request: bad price",
                   "fields":[{"field":"price","description":"off the grid"}]})
        );
        let rate = RequestError::new(ErrorCode::RateLimited, "slow down");
        let v: Value = serde_json::from_slice(&error(&rate)).unwrap();
        assert!(v["id"].is_null() && v["op"].is_null() && v.get("fields").is_none());
    }

    #[test]
    fn a_gap_names_its_channel() {
        let spec = ChannelSpec {
            target: ChannelTarget::Market {
                channel: Channel::Trades,
                instrument: std::sync::Arc::new(
                    WireInstrument::new(0, crate::defaults::instruments().remove(0)).unwrap(),
                ),
            },
            from_seq: Some(3),
        };
        let v: Value = serde_json::from_slice(&gap(&spec, 3, 90)).unwrap();
        assert_eq!(
            v,
            json!({"type":"gap","channel":"trades","instrument":"BTC-USD","from_seq":3,"resumed_after":90})
        );
    }

    #[test]
    fn protobuf_enum_names_become_wire_strings() {
        assert_eq!(enum_str("SIDE_BUY", "SIDE_"), "buy");
        assert_eq!(
            enum_str("DONE_REASON_IMMEDIATE_OR_CANCEL", "DONE_REASON_"),
            "immediate_or_cancel"
        );
    }
}
