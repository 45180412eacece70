//! The server's own messages (docs/websocket.md): replies to commands, `hello`, `gap` and
//! `error`. Market data and order updates are not here: they are the feeds' JSON, forwarded as
//! they are.
//!
//! An order command's `result` is read from its events by the same [`crate::grpc::report`]
//! code the gRPC front answers with, so both fronts describe an order the same way.

use super::limits::WsLimits;
use super::protocol::{ChannelSpec, RequestError};
use crate::auth::{Principal, Role};
use crate::grpc::report;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use ticker_engine::{Event, EventKind, RejectReason};
use ticker_feeds::wire::{write_json_string, JsonObject};
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
    let mut out = Vec::with_capacity(64);
    let mut o = JsonObject::new(&mut out);
    o.str("type", "pong");
    match id {
        Some(id) => o.u64("id", id),
        None => o.null("id"),
    };
    o.u64("ts", ts).finish();
    Bytes::from(out)
}

/// `authenticated`; `"cancel_on_disconnect": true` only when it is on and `"role"` only when it
/// is not `trader` (the reply of a plain trader `auth` stays as it always was).
pub fn authenticated(id: Option<u64>, who: Principal, cancel_on_disconnect: bool) -> Bytes {
    let mut reply = json!({"type": "authenticated", "id": id});
    if let Some(account) = who.account {
        reply["account"] = account.into();
    }
    if who.role != Role::Trader {
        reply["role"] = who.role.as_str().into();
    }
    if cancel_on_disconnect {
        reply["cancel_on_disconnect"] = true.into();
    }
    encode(reply)
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

/// An order report as the JSON protocol writes it: decimals as strings, absent fields left out.
fn order_json(r: &pb::OrderReport, out: &mut Vec<u8>) {
    let mut o = JsonObject::new(out);
    o.str("order_id", &r.order_id.to_string());
    if r.client_order_id != 0 {
        o.u64("client_order_id", r.client_order_id);
    }
    let text = |o: &mut JsonObject<'_>, key: &str, value: &str| {
        if !value.is_empty() {
            o.str(key, value);
        }
    };
    text(&mut o, "instrument", &r.instrument);
    if let Ok(side) = pb::Side::try_from(r.side) {
        if side != pb::Side::Unspecified {
            text(&mut o, "side", &enum_str(side.as_str_name(), "SIDE_"));
        }
    }
    if let Ok(status) = pb::OrderStatus::try_from(r.status) {
        if status != pb::OrderStatus::Unspecified {
            text(
                &mut o,
                "status",
                &enum_str(status.as_str_name(), "ORDER_STATUS_"),
            );
        }
    }
    text(&mut o, "price", &r.price);
    text(&mut o, "trigger_price", &r.trigger_price);
    text(&mut o, "size", &r.size);
    text(&mut o, "remaining_size", &r.remaining_size);
    text(&mut o, "visible_size", &r.visible_size);
    text(&mut o, "filled_size", &r.filled_size);
    if let Ok(reason) = pb::DoneReason::try_from(r.done_reason) {
        if reason != pb::DoneReason::Unspecified {
            text(
                &mut o,
                "done_reason",
                &enum_str(reason.as_str_name(), "DONE_REASON_"),
            );
        }
    }
    o.raw_with("fills", |out| {
        out.push(b'[');
        for (i, f) in r.fills.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let liquidity = pb::Liquidity::try_from(f.liquidity)
                .map(|l| enum_str(l.as_str_name(), "LIQUIDITY_"))
                .unwrap_or_default();
            JsonObject::new(out)
                .u64("trade_id", f.trade_id)
                .str("price", &f.price)
                .str("size", &f.size)
                .str("liquidity", &liquidity)
                .u64("engine_seq", f.engine_seq)
                .finish();
        }
        out.push(b']');
    });
    o.finish();
}

/// The `result` of an order command from its events (outcome first), or the `error` it maps
/// to: another account's order is `permission_denied`, an empty answer (the market stopped)
/// `unavailable`. Every other engine reject is a normal result with its reason. Written
/// directly (no intermediate JSON tree): one of these goes out per order command.
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
    if let EventKind::Rejected {
        reason: RejectReason::NotOwner,
        order_id,
        ..
    } = first.kind
    {
        return Err(RequestError::new(
            ErrorCode::PermissionDenied,
            format!("order {order_id} belongs to another account"),
        )
        .about(Some(op), id));
    }
    let mut out = Vec::with_capacity(320);
    let mut o = JsonObject::new(&mut out);
    o.str("type", "result").str("op", op);
    match id {
        Some(id) => o.u64("id", id),
        None => o.null("id"),
    };
    if let EventKind::Rejected { reason, .. } = first.kind {
        o.bool("accepted", false)
            .str("reason", reason.as_str())
            .u64("engine_seq", first.seq)
            .u64("ts", first.ts)
            .finish();
        return Ok(Bytes::from(out));
    }
    o.bool("accepted", true)
        .u64("engine_seq", first.seq)
        .u64("ts", first.ts);
    if op == "mass_cancel" {
        o.raw_with("cancelled", |out| {
            out.push(b'[');
            for (i, id) in report::mass_cancelled(events).into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_string(&id.to_string(), out);
            }
            out.push(b']');
        });
    } else {
        let order = match &first.kind {
            EventKind::PlaceAccepted { order, .. } => Some(report::order_report(
                instruments,
                events,
                order.order_id,
                Some(order),
            )),
            _ => report::touched(instruments, events),
        };
        if let Some(order) = order {
            o.raw_with("order", |out| order_json(&order, out));
        }
    }
    o.finish();
    Ok(Bytes::from(out))
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
    fn an_order_is_written_with_decimals_as_strings_and_absent_fields_left_out() {
        let report = pb::OrderReport {
            order_id: 4294967297,
            client_order_id: 7,
            instrument: "BTC-USD".into(),
            side: pb::Side::Buy as i32,
            status: pb::OrderStatus::Resting as i32,
            price: "65000.00".into(),
            size: "0.02000".into(),
            remaining_size: "0.01000".into(),
            filled_size: "0.01000".into(),
            fills: vec![pb::Fill {
                trade_id: 3,
                price: "64999.50".into(),
                size: "0.01000".into(),
                liquidity: pb::Liquidity::Taker as i32,
                engine_seq: 90,
            }],
            ..Default::default()
        };
        let mut out = Vec::new();
        order_json(&report, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"order_id":"4294967297","client_order_id":7,"instrument":"BTC-USD","side":"buy",
                   "status":"resting","price":"65000.00","size":"0.02000",
                   "remaining_size":"0.01000","filled_size":"0.01000",
                   "fills":[{"trade_id":3,"price":"64999.50","size":"0.01000","liquidity":"taker","engine_seq":90}]})
        );
        let v: Value = serde_json::from_slice(&pong(None, 5)).unwrap();
        assert_eq!(v, json!({"type":"pong","id":null,"ts":5}));
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
