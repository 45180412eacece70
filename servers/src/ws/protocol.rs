//! The client's side of the WebSocket protocol (docs/websocket.md): one JSON text message read
//! into one [`Request`], or into a [`RequestError`] that names what is wrong.
//!
//! Parsing is strict and never fails silently: unknown ops, unknown fields, missing fields and
//! fields of the wrong type are each reported with the field's path (`channels[2].interval`).
//! Decimal prices and sizes stay text here: they are checked on the instrument's grid by
//! [`crate::order_entry`], which adds its findings to the same violations.
//!
//! Here: the requests and [`parse`]. The error a refusal carries is in `error`
//! ([`RequestError`]), channels and the reading of a `channels` array in `channels`
//! ([`ChannelSpec`]), and the typed field reads both use in `fields`.

use crate::order_entry::Violations;
use serde_json::Value;
use ticker_engine::{OrderId, OrderRef, OrderType, SelfTradePrevention, Side, TimeInForce};
use ticker_feeds::Instruments;

mod channels;
mod error;
mod fields;

use channels::channels;
pub use channels::{ChannelKey, ChannelSpec, ChannelTarget};
pub use error::{ErrorCode, RequestError};
use fields::Fields;

/// A new order as sent, decimals still text (empty when absent).
#[derive(Debug, Clone, Default)]
pub struct PlaceRequest {
    pub instrument: String,
    pub side: Option<Side>,
    pub order_type: Option<OrderType>,
    pub price: String,
    pub trigger_price: String,
    pub size: String,
    pub display_size: String,
    pub time_in_force: Option<TimeInForce>,
    pub expiry_ns: u64,
    pub post_only: bool,
    pub self_trade_prevention: Option<SelfTradePrevention>,
    pub client_order_id: u64,
}

#[derive(Debug, Clone, Default)]
pub struct AmendRequest {
    pub order: Option<OrderRef>,
    pub instrument: String,
    pub price: Option<String>,
    pub size: Option<String>,
    pub trigger_price: Option<String>,
}

/// A client command. Order commands carry the violations found while reading them, to be
/// reported together with the grid checks of [`crate::order_entry`].
#[derive(Debug)]
pub enum Op {
    Subscribe(Vec<ChannelSpec>),
    Unsubscribe(Vec<ChannelSpec>),
    Ping,
    Auth {
        token: String,
        /// Orders this connection places from now on are cancelled when it ends.
        cancel_on_disconnect: bool,
    },
    Instruments,
    Place(PlaceRequest, Violations),
    Cancel(Option<OrderRef>, Violations),
    Amend(AmendRequest, Violations),
    MassCancel {
        instrument: String,
        side: Option<Side>,
        violations: Violations,
    },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Subscribe(_) => "subscribe",
            Op::Unsubscribe(_) => "unsubscribe",
            Op::Ping => "ping",
            Op::Auth { .. } => "auth",
            Op::Instruments => "instruments",
            Op::Place(..) => "place",
            Op::Cancel(..) => "cancel",
            Op::Amend(..) => "amend",
            Op::MassCancel { .. } => "mass_cancel",
        }
    }
}

#[derive(Debug)]
pub struct Request {
    pub id: Option<u64>,
    pub op: Op,
}

/// The ops, with the fields each allows besides `op` and `id`.
const OPS: [(&str, &[&str]); 9] = [
    ("subscribe", &["channels"]),
    ("unsubscribe", &["channels"]),
    ("ping", &[]),
    ("auth", &["token", "cancel_on_disconnect"]),
    ("instruments", &[]),
    (
        "place",
        &[
            "instrument",
            "side",
            "order_type",
            "price",
            "trigger_price",
            "size",
            "time_in_force",
            "expiry_ns",
            "post_only",
            "display_size",
            "self_trade_prevention",
            "client_order_id",
        ],
    ),
    ("cancel", &["order_id", "client_order_id"]),
    (
        "amend",
        &[
            "order_id",
            "client_order_id",
            "instrument",
            "price",
            "size",
            "trigger_price",
        ],
    ),
    ("mass_cancel", &["instrument", "side"]),
];

/// Reads one client message. `max_channels` bounds a `channels` array.
pub fn parse(
    text: &str,
    instruments: &Instruments,
    max_channels: usize,
) -> Result<Request, RequestError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| RequestError::new(ErrorCode::BadJson, format!("not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(RequestError::new(
            ErrorCode::BadJson,
            "a message is one JSON object with an \"op\"",
        ));
    };
    let mut v = Violations::default();
    // The id first, so that every later error can carry it.
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(_) => {
            v.add("id", "must be a non-negative integer");
            None
        }
    };
    let op_name = match obj.get("op") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            v.add("op", "must be a string such as \"subscribe\"");
            return Err(invalid(v, None, id));
        }
        None => {
            v.add("op", "required: one of subscribe, unsubscribe, ping, auth, instruments, place, cancel, amend, mass_cancel");
            return Err(invalid(v, None, id));
        }
    };
    let Some((op, allowed)) = OPS.iter().find(|(name, _)| *name == op_name) else {
        let known: Vec<&str> = OPS.iter().map(|(n, _)| *n).collect();
        return Err(RequestError::new(
            ErrorCode::UnknownOp,
            format!("unknown op {op_name:?}; one of {}", known.join(", ")),
        )
        .about(None, id));
    };
    let op: &'static str = op;
    for key in obj.keys() {
        if key != "op" && key != "id" && !allowed.contains(&key.as_str()) {
            v.add(key.clone(), format!("unknown field of {op}"));
        }
    }
    let f = Fields {
        obj: &obj,
        prefix: String::new(),
    };
    let parsed = match op {
        "subscribe" | "unsubscribe" => {
            let channels = channels(&f, instruments, max_channels, &mut v);
            if !v.is_empty() {
                return Err(invalid(v, Some(op), id));
            }
            if op == "subscribe" {
                Op::Subscribe(channels)
            } else {
                Op::Unsubscribe(channels)
            }
        }
        "ping" => Op::Ping,
        "instruments" => Op::Instruments,
        "auth" => {
            let token = f.string("token", true, &mut v).unwrap_or_default();
            let cancel_on_disconnect = f.boolean("cancel_on_disconnect", &mut v).unwrap_or(false);
            Op::Auth {
                token,
                cancel_on_disconnect,
            }
        }
        "place" => Op::Place(place(&f, &mut v), Violations::default()),
        "cancel" => Op::Cancel(order_ref(&f, &mut v), Violations::default()),
        "amend" => Op::Amend(
            AmendRequest {
                order: order_ref(&f, &mut v),
                instrument: f.string("instrument", false, &mut v).unwrap_or_default(),
                price: f.string("price", false, &mut v),
                size: f.string("size", false, &mut v),
                trigger_price: f.string("trigger_price", false, &mut v),
            },
            Violations::default(),
        ),
        _ => Op::MassCancel {
            instrument: f.string("instrument", false, &mut v).unwrap_or_default(),
            side: f.choice("side", &SIDES, false, &mut v),
            violations: Violations::default(),
        },
    };
    // Order commands carry their violations on to the grid checks; the rest end here.
    let op_value = match parsed {
        Op::Place(p, _) => Op::Place(p, v),
        Op::Cancel(c, _) => Op::Cancel(c, v),
        Op::Amend(a, _) => Op::Amend(a, v),
        Op::MassCancel {
            instrument, side, ..
        } => Op::MassCancel {
            instrument,
            side,
            violations: v,
        },
        other if v.is_empty() => other,
        _ => return Err(invalid(v, Some(op), id)),
    };
    Ok(Request { id, op: op_value })
}

/// The op and id of a message that will not be parsed further (a rate-limited one), for the
/// reply; `None` for what cannot be read.
pub fn peek(text: &str) -> (Option<&'static str>, Option<u64>) {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
        return (None, None);
    };
    let op = obj
        .get("op")
        .and_then(Value::as_str)
        .and_then(|name| OPS.iter().find(|(n, _)| *n == name))
        .map(|(n, _)| *n);
    (op, obj.get("id").and_then(Value::as_u64))
}

fn invalid(v: Violations, op: Option<&'static str>, id: Option<u64>) -> RequestError {
    match v.finish(|| ()) {
        Err(i) => RequestError::from(i).about(op, id),
        Ok(()) => RequestError::new(ErrorCode::InvalidRequest, "invalid request").about(op, id),
    }
}

const SIDES: [(&str, Side); 2] = [("buy", Side::Buy), ("sell", Side::Sell)];
const ORDER_TYPES: [(&str, OrderType); 4] = [
    ("limit", OrderType::Limit),
    ("market", OrderType::Market),
    ("stop_market", OrderType::StopMarket),
    ("stop_limit", OrderType::StopLimit),
];
const TIFS: [(&str, TimeInForce); 4] = [
    ("gtc", TimeInForce::Gtc),
    ("ioc", TimeInForce::Ioc),
    ("fok", TimeInForce::Fok),
    ("gtd", TimeInForce::Gtd),
];
const STPS: [(&str, SelfTradePrevention); 4] = [
    ("cancel_taker", SelfTradePrevention::CancelTaker),
    ("cancel_maker", SelfTradePrevention::CancelMaker),
    ("cancel_both", SelfTradePrevention::CancelBoth),
    (
        "decrement_and_cancel",
        SelfTradePrevention::DecrementAndCancel,
    ),
];

fn place(f: &Fields<'_>, v: &mut Violations) -> PlaceRequest {
    PlaceRequest {
        instrument: f.string("instrument", true, v).unwrap_or_default(),
        side: f.choice("side", &SIDES, true, v),
        order_type: f.choice("order_type", &ORDER_TYPES, false, v),
        price: f.string("price", false, v).unwrap_or_default(),
        trigger_price: f.string("trigger_price", false, v).unwrap_or_default(),
        size: f.string("size", true, v).unwrap_or_default(),
        display_size: f.string("display_size", false, v).unwrap_or_default(),
        time_in_force: f.choice("time_in_force", &TIFS, false, v),
        expiry_ns: f.integer("expiry_ns", v).unwrap_or(0),
        post_only: f.boolean("post_only", v).unwrap_or(false),
        self_trade_prevention: f.choice("self_trade_prevention", &STPS, false, v),
        client_order_id: f.integer("client_order_id", v).unwrap_or(0),
    }
}

/// `order_id` or `client_order_id`, not both. `None` when neither is given: order entry
/// reports that (as `order`), unless a bad one was already named here.
fn order_ref(f: &Fields<'_>, v: &mut Violations) -> Option<OrderRef> {
    let id = f.integer("order_id", v);
    let client = f.integer("client_order_id", v);
    match (id, client) {
        (Some(id), Some(_)) => {
            v.add("order_id", "give order_id or client_order_id, not both");
            Some(OrderRef::Id(OrderId(id)))
        }
        (Some(id), None) => Some(OrderRef::Id(OrderId(id))),
        (None, Some(client)) => Some(OrderRef::Client(client)),
        // A bad value was named already: do not also report the reference as missing.
        (None, None) if v.has("order_id") || v.has("client_order_id") => Some(OrderRef::Client(1)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ticker_feeds::{Channel, Interval};

    fn instruments() -> Instruments {
        crate::defaults::wire_instruments()
    }

    fn parse(text: &str) -> Result<Request, RequestError> {
        super::parse(text, &instruments(), 4)
    }

    fn fields(e: &RequestError) -> Vec<&str> {
        e.fields.iter().map(|(f, _)| f.as_str()).collect()
    }

    #[test]
    fn a_subscribe_reads_every_channel_kind() {
        let r = parse(
            r#"{"op":"subscribe","id":1,"channels":[{"name":"depth","instrument":"BTC-USD","from_seq":123},
              {"name":"candles","instrument":"ETH-USD","interval":"1h"},{"name":"orders"}]}"#,
        )
        .unwrap();
        assert_eq!(r.id, Some(1));
        let Op::Subscribe(channels) = r.op else {
            panic!("a subscribe: {r:?}")
        };
        assert_eq!(channels[0].from_seq, Some(123));
        assert_eq!(
            channels[1].key(),
            ChannelKey::Market {
                channel: Channel::Candles(Interval::H1),
                instrument: 1
            }
        );
        assert_eq!(channels[2].key(), ChannelKey::Orders);
        assert_eq!(
            channels[1].to_json(),
            serde_json::json!({"name":"candles","instrument":"ETH-USD","interval":"1h"})
        );
    }

    #[test]
    fn bad_channels_are_named_by_their_path() {
        let e = parse(
            r#"{"op":"subscribe","id":2,"channels":[{"name":"depth","instrument":"NOPE"},
              {"name":"candles","instrument":"BTC-USD"},{"name":"trades","instrument":"BTC-USD","from_seq":-1},
              {"name":"bogus","instrument":"BTC-USD","extra":1}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            (e.code, e.id, e.op),
            (ErrorCode::InvalidRequest, Some(2), Some("subscribe"))
        );
        assert_eq!(
            fields(&e),
            [
                "channels[0].instrument",
                "channels[1].interval",
                "channels[2].from_seq",
                "channels[3].extra",
                "channels[3].name"
            ]
        );
    }

    #[test]
    fn an_oversize_channels_array_is_refused_whole() {
        let one = r#"{"name":"ticker","instrument":"BTC-USD"}"#;
        let text = format!(
            r#"{{"op":"subscribe","channels":[{}]}}"#,
            [one; 5].join(",")
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(fields(&e), ["channels"]);
        assert!(e.message.contains("channels"), "{e:?}");
    }

    #[test]
    fn malformed_messages_get_their_own_codes() {
        assert_eq!(parse("{nope").unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(parse("[1,2]").unwrap_err().code, ErrorCode::BadJson);
        let e = parse(r#"{"op":"fly","id":9}"#).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::UnknownOp, Some(9)));
        let e = parse(r#"{"id":9}"#).unwrap_err();
        assert_eq!(
            (e.code, fields(&e)),
            (ErrorCode::InvalidRequest, vec!["op"])
        );
        let e = parse(r#"{"op":"ping","id":-4}"#).unwrap_err();
        assert_eq!((e.id, fields(&e)), (None, vec!["id"]));
        let e = parse(r#"{"op":"ping","id":4,"extra":true}"#).unwrap_err();
        assert_eq!(fields(&e), ["extra"]);
    }

    #[test]
    fn a_place_reads_enums_and_keeps_decimals_as_text() {
        let r = parse(
            r#"{"op":"place","id":7,"instrument":"BTC-USD","side":"sell","order_type":"stop_limit",
               "price":"64000.00","trigger_price":"64100","size":"0.5","time_in_force":"gtd","expiry_ns":99,
               "post_only":true,"self_trade_prevention":"cancel_both","client_order_id":"18446744073709551615"}"#,
        )
        .unwrap();
        let Op::Place(p, v) = r.op else { panic!() };
        assert!(v.is_empty());
        assert_eq!(p.side, Some(Side::Sell));
        assert_eq!(p.order_type, Some(OrderType::StopLimit));
        assert_eq!(p.time_in_force, Some(TimeInForce::Gtd));
        assert_eq!(
            p.self_trade_prevention,
            Some(SelfTradePrevention::CancelBoth)
        );
        assert_eq!((p.price.as_str(), p.size.as_str()), ("64000.00", "0.5"));
        assert_eq!(p.client_order_id, u64::MAX);
    }

    #[test]
    fn a_place_with_bad_fields_carries_every_violation() {
        let r = parse(
            r#"{"op":"place","side":"up","price":65000,"size":"1","post_onyl":true,"time_in_force":"day"}"#,
        )
        .unwrap();
        let Op::Place(_, v) = r.op else { panic!() };
        let invalid = v.finish(|| ()).unwrap_err();
        let fields: Vec<&str> = invalid.violations.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["post_onyl", "instrument", "side", "price", "time_in_force"]
        );
    }

    #[test]
    fn cancel_takes_one_order_reference() {
        let r = parse(r#"{"op":"cancel","order_id":"4294967297"}"#).unwrap();
        assert!(matches!(
            r.op,
            Op::Cancel(Some(OrderRef::Id(OrderId(4294967297))), _)
        ));
        let r = parse(r#"{"op":"cancel","order_id":1,"client_order_id":2}"#).unwrap();
        let Op::Cancel(_, v) = r.op else { panic!() };
        assert!(v.has("order_id"));
        // Neither: order entry names the missing reference.
        let r = parse(r#"{"op":"cancel"}"#).unwrap();
        let Op::Cancel(None, v) = r.op else { panic!() };
        assert!(v.is_empty());
    }
}
