//! The edge between the wire and the engine: `ticker.v1` requests to engine commands, with
//! every decimal checked against the instrument's grid, and the refusals a request can meet
//! before it reaches the engine.
//!
//! Prices and sizes arrive as decimal strings and become ticks and lots here, exactly or not at
//! all: `"65000.001"` on a 0.01 tick is refused with a field violation naming `price`, never
//! rounded. Every bad field of a request is reported at once, so a client fixes them in one go.

use rust_decimal::Decimal;
use std::str::FromStr;
use std::sync::Arc;
use ticker_engine::*;
use ticker_feeds::orders::Accounts;
use ticker_feeds::{Instruments, WireInstrument};
use ticker_proto::v1 as pb;
use tonic::Code;
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Why a request was not sent to the engine (or the engine's answer is an error status):
/// becomes a [`tonic::Status`] in unary calls and a `RequestError` inside streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: Code,
    pub message: String,
    /// `(field, description)`, sent as a `google.rpc.BadRequest` detail.
    pub violations: Vec<(String, String)>,
}

impl Refusal {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
            violations: Vec::new(),
        }
    }

    pub fn to_proto(&self) -> pb::RequestError {
        pb::RequestError {
            code: self.code as i32,
            message: self.message.clone(),
            field_violations: self
                .violations
                .iter()
                .map(|(field, description)| pb::FieldViolation {
                    field: field.clone(),
                    description: description.clone(),
                })
                .collect(),
        }
    }
}

impl From<Refusal> for tonic::Status {
    fn from(r: Refusal) -> Self {
        if r.violations.is_empty() {
            return tonic::Status::new(r.code, r.message);
        }
        let violations: Vec<FieldViolation> = r
            .violations
            .into_iter()
            .map(|(field, description)| FieldViolation::new(field, description))
            .collect();
        tonic::Status::with_error_details(
            r.code,
            r.message,
            ErrorDetails::with_bad_request(violations),
        )
    }
}

/// The bad fields of one request, collected so all are reported together.
#[derive(Debug, Default)]
pub struct Violations(Vec<(String, String)>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push((field.into(), description.into()));
    }

    /// `Ok(value)` when no field was bad.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Refusal> {
        if self.0.is_empty() {
            return Ok(value());
        }
        let fields: Vec<&str> = self.0.iter().map(|(f, _)| f.as_str()).collect();
        Err(Refusal {
            code: Code::InvalidArgument,
            message: format!("invalid request: bad {}", fields.join(", ")),
            violations: self.0,
        })
    }
}

/// Digits a decimal on the wire may have: what `rust_decimal` holds exactly.
const MAX_DIGITS: usize = 28;

/// Parses a decimal string; `None` (with a violation) when it is not one.
fn decimal(field: &str, text: &str, v: &mut Violations) -> Option<Decimal> {
    // rust_decimal accepts a leading '+' and '_' separators; the wire does not. It also rounds
    // digits beyond its 28 significant ones, which would turn an off-grid value into an
    // on-grid one: longer numbers are refused instead.
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    if digits > MAX_DIGITS {
        v.add(field, format!("{text:?} has more than {MAX_DIGITS} digits"));
        return None;
    }
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
    match Decimal::from_str(text) {
        Ok(d) if plain => Some(d),
        _ => {
            v.add(field, format!("{text:?} is not a decimal number"));
            None
        }
    }
}

/// A price in ticks of `wire`'s tick size.
pub fn price(wire: &WireInstrument, field: &str, text: &str, v: &mut Violations) -> Option<Ticks> {
    let d = decimal(field, text, v)?;
    let tick = wire.instrument.spec.tick_size;
    match wire.instrument.price_to_ticks(d) {
        Ok(t) => Some(t),
        Err(RejectReason::OffTick) => {
            v.add(
                field,
                format!(
                    "{text} is not a multiple of the tick size {tick} of {}",
                    wire.symbol()
                ),
            );
            None
        }
        Err(RejectReason::InvalidPrice) => {
            v.add(field, format!("{text} must be positive"));
            None
        }
        Err(_) => {
            v.add(field, format!("{text} is out of range"));
            None
        }
    }
}

/// A size in lots of `wire`'s lot size.
pub fn size(wire: &WireInstrument, field: &str, text: &str, v: &mut Violations) -> Option<Lots> {
    let d = decimal(field, text, v)?;
    let lot = wire.instrument.spec.lot_size;
    match wire.instrument.size_to_lots(d) {
        Ok(l) => Some(l),
        Err(RejectReason::OffLot) => {
            v.add(
                field,
                format!(
                    "{text} is not a multiple of the lot size {lot} of {}",
                    wire.symbol()
                ),
            );
            None
        }
        Err(RejectReason::InvalidSize) => {
            v.add(field, format!("{text} must be positive"));
            None
        }
        Err(_) => {
            v.add(field, format!("{text} is out of range"));
            None
        }
    }
}

/// An instrument by symbol.
pub fn instrument(
    instruments: &Instruments,
    field: &str,
    symbol: &str,
    v: &mut Violations,
) -> Option<Arc<WireInstrument>> {
    if symbol.is_empty() {
        v.add(field, "required: an instrument symbol such as \"BTC-USD\"");
        return None;
    }
    let found = instruments.by_symbol(symbol);
    if found.is_none() {
        v.add(field, format!("unknown instrument {symbol:?}"));
    }
    found
}

pub fn side(field: &str, value: i32, v: &mut Violations) -> Option<Side> {
    match pb::Side::try_from(value) {
        Ok(pb::Side::Buy) => Some(Side::Buy),
        Ok(pb::Side::Sell) => Some(Side::Sell),
        _ => {
            v.add(field, "must be SIDE_BUY or SIDE_SELL");
            None
        }
    }
}

/// An order of an account: by engine id or by client id (one of them, not zero).
pub fn order_ref(
    cancel: Option<&pb::cancel_order_request::Order>,
    amend: Option<&pb::amend_order_request::Order>,
    v: &mut Violations,
) -> Option<OrderRef> {
    use pb::amend_order_request::Order as A;
    use pb::cancel_order_request::Order as C;
    let r = match (cancel, amend) {
        (Some(C::OrderId(id)), _) | (_, Some(A::OrderId(id))) => OrderRef::Id(OrderId(*id)),
        (Some(C::ClientOrderId(id)), _) | (_, Some(A::ClientOrderId(id))) => OrderRef::Client(*id),
        (None, None) => {
            v.add("order", "required: order_id or client_order_id");
            return None;
        }
    };
    match r {
        OrderRef::Id(OrderId(0)) => v.add("order_id", "must not be 0"),
        OrderRef::Client(0) => v.add("client_order_id", "must not be 0"),
        _ => return Some(r),
    }
    None
}

/// A place command from a request.
pub fn place(
    req: &pb::PlaceOrderRequest,
    instruments: &Instruments,
    account: AccountId,
    session: SessionId,
) -> Result<Place, Refusal> {
    let mut v = Violations::default();
    let wire = instrument(instruments, "instrument", &req.instrument, &mut v);
    let side = side("side", req.side, &mut v);
    let order_type = match pb::OrderType::try_from(req.order_type) {
        Ok(pb::OrderType::Unspecified | pb::OrderType::Limit) => Some(OrderType::Limit),
        Ok(pb::OrderType::Market) => Some(OrderType::Market),
        Ok(pb::OrderType::StopMarket) => Some(OrderType::StopMarket),
        Ok(pb::OrderType::StopLimit) => Some(OrderType::StopLimit),
        Err(_) => {
            v.add(
                "order_type",
                format!("unknown order type {}", req.order_type),
            );
            None
        }
    };
    let (mut price, mut trigger, mut size, mut display) = (0, 0, 0, 0);
    if let (Some(wire), Some(t)) = (&wire, order_type) {
        if t.has_limit_price() {
            price = self::price(wire, "price", &req.price, &mut v).unwrap_or(0);
        } else if !req.price.is_empty() {
            v.add("price", "only limit and stop-limit orders have a price");
        }
        if t.is_stop() {
            trigger = self::price(wire, "trigger_price", &req.trigger_price, &mut v).unwrap_or(0);
        } else if !req.trigger_price.is_empty() {
            v.add("trigger_price", "only stop orders have a trigger price");
        }
        size = self::size(wire, "size", &req.size, &mut v).unwrap_or(0);
        if !req.display_size.is_empty() {
            display = self::size(wire, "display_size", &req.display_size, &mut v).unwrap_or(0);
        }
    }
    let market_like = matches!(order_type, Some(OrderType::Market | OrderType::StopMarket));
    let tif = match pb::TimeInForce::try_from(req.time_in_force) {
        Ok(pb::TimeInForce::Unspecified) if market_like => TimeInForce::Ioc,
        Ok(pb::TimeInForce::Unspecified | pb::TimeInForce::Gtc) => TimeInForce::Gtc,
        Ok(pb::TimeInForce::Ioc) => TimeInForce::Ioc,
        Ok(pb::TimeInForce::Fok) => TimeInForce::Fok,
        Ok(pb::TimeInForce::Gtd) => TimeInForce::Gtd,
        Err(_) => {
            v.add(
                "time_in_force",
                format!("unknown time in force {}", req.time_in_force),
            );
            TimeInForce::Gtc
        }
    };
    if tif == TimeInForce::Gtd && req.expiry_ns == 0 {
        v.add("expiry_ns", "required with TIME_IN_FORCE_GTD");
    } else if tif != TimeInForce::Gtd && req.expiry_ns != 0 {
        v.add("expiry_ns", "only GTD orders have an expiry");
    }
    let stp = match pb::SelfTradePrevention::try_from(req.self_trade_prevention) {
        Ok(pb::SelfTradePrevention::Unspecified | pb::SelfTradePrevention::CancelTaker) => {
            SelfTradePrevention::CancelTaker
        }
        Ok(pb::SelfTradePrevention::CancelMaker) => SelfTradePrevention::CancelMaker,
        Ok(pb::SelfTradePrevention::CancelBoth) => SelfTradePrevention::CancelBoth,
        Ok(pb::SelfTradePrevention::DecrementAndCancel) => SelfTradePrevention::DecrementAndCancel,
        Err(_) => {
            v.add(
                "self_trade_prevention",
                format!("unknown mode {}", req.self_trade_prevention),
            );
            SelfTradePrevention::CancelTaker
        }
    };
    v.finish(|| Place {
        account,
        session,
        client_id: req.client_order_id,
        instrument: wire.as_ref().map_or(0, |w| w.id()),
        side: side.unwrap_or(Side::Buy),
        order_type: order_type.unwrap_or(OrderType::Limit),
        price,
        trigger,
        size,
        tif,
        expiry: req.expiry_ns,
        post_only: req.post_only,
        display,
        stp,
    })
}

pub fn cancel(req: &pb::CancelOrderRequest, account: AccountId) -> Result<Cancel, Refusal> {
    let mut v = Violations::default();
    let order = order_ref(req.order.as_ref(), None, &mut v);
    v.finish(|| Cancel {
        account,
        order: order.unwrap_or(OrderRef::Client(0)),
    })
}

/// An amend command. Its decimals are converted on the grid of the order's instrument, which
/// the request names and which is checked against the account's open order when the feeds
/// know it (an amend of an order the feeds do not know goes to the engine, which answers
/// `unknown_order` or `not_owner`).
pub fn amend(
    req: &pb::AmendOrderRequest,
    account: AccountId,
    instruments: &Instruments,
    accounts: &Accounts,
) -> Result<Amend, Refusal> {
    let mut v = Violations::default();
    let order = order_ref(None, req.order.as_ref(), &mut v);
    let changes = req.price.is_some() || req.size.is_some() || req.trigger_price.is_some();
    if !changes {
        v.add(
            "price",
            "an amend changes at least one of price, size and trigger_price",
        );
    }
    let wire = if changes {
        instrument(instruments, "instrument", &req.instrument, &mut v)
    } else {
        None
    };
    if let (Some(order), Some(wire)) = (order, &wire) {
        if let Some(open) = accounts.open_order(account, order) {
            if open.info.instrument != wire.id() {
                let actual = instruments
                    .get(open.info.instrument)
                    .map_or_else(String::new, |w| w.symbol().to_string());
                v.add(
                    "instrument",
                    format!("the order is on {actual}, not {}", wire.symbol()),
                );
            }
        }
    }
    let (mut price, mut size, mut trigger) = (None, None, None);
    if let Some(wire) = &wire {
        price = req
            .price
            .as_deref()
            .and_then(|p| self::price(wire, "price", p, &mut v));
        size = req
            .size
            .as_deref()
            .and_then(|s| self::size(wire, "size", s, &mut v));
        trigger = req
            .trigger_price
            .as_deref()
            .and_then(|t| self::price(wire, "trigger_price", t, &mut v));
    }
    v.finish(|| Amend {
        account,
        order: order.unwrap_or(OrderRef::Client(0)),
        price,
        size,
        trigger,
    })
}

pub fn mass_cancel(
    req: &pb::MassCancelRequest,
    account: AccountId,
    instruments: &Instruments,
) -> Result<MassCancel, Refusal> {
    let mut v = Violations::default();
    let instrument = if req.instrument.is_empty() {
        None
    } else {
        self::instrument(instruments, "instrument", &req.instrument, &mut v).map(|w| w.id())
    };
    let side = if req.side == pb::Side::Unspecified as i32 {
        None
    } else {
        self::side("side", req.side, &mut v)
    };
    v.finish(|| MassCancel {
        account,
        instrument,
        side,
    })
}

/// An instrument as `ListInstruments` shows it.
pub fn instrument_info(wire: &WireInstrument) -> pb::Instrument {
    let i = &wire.instrument;
    pb::Instrument {
        symbol: wire.symbol().to_string(),
        tick_size: i.spec.tick_size.to_string(),
        lot_size: i.spec.lot_size.to_string(),
        min_size: wire.size.to_string(i.min_lots as i64),
        max_size: wire.size.to_string(i.max_lots as i64),
        reference_price: wire.price.to_string(i.reference_ticks),
        band_low: wire.price.to_string(i.band_low),
        band_high: wire.price.to_string(i.band_high),
        id: wire.id(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instruments() -> Instruments {
        let all = Instruments::default();
        for (i, spec) in crate::defaults::instruments().into_iter().enumerate() {
            all.insert(WireInstrument::new(i as u32, spec).unwrap());
        }
        all
    }

    fn btc_limit(price: &str, size: &str) -> pb::PlaceOrderRequest {
        pb::PlaceOrderRequest {
            instrument: "BTC-USD".into(),
            side: pb::Side::Buy as i32,
            price: price.into(),
            size: size.into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_on_grid_limit_order_converts_exactly() {
        let place = place(&btc_limit("65000.10", "0.25"), &instruments(), 7, 0).unwrap();
        assert_eq!(place.price, 6_500_010);
        assert_eq!(place.size, 25_000);
        assert_eq!((place.account, place.tif), (7, TimeInForce::Gtc));
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let mut req = btc_limit("65000.001", "0.000001");
        req.side = 0;
        let refusal = place(&req, &instruments(), 7, 0).unwrap_err();
        assert_eq!(refusal.code, Code::InvalidArgument);
        let fields: Vec<&str> = refusal.violations.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["side", "price", "size"]);
        assert!(
            refusal.violations[1].1.contains("tick size 0.01"),
            "{refusal:?}"
        );
    }

    #[test]
    fn numbers_in_other_notations_are_not_decimals() {
        for bad in ["", "1e3", "+5", "1_000", " 5", "0x10", "5.0.0"] {
            let refusal = place(&btc_limit(bad, "1"), &instruments(), 7, 0).unwrap_err();
            assert_eq!(refusal.violations[0].0, "price", "{bad:?}");
        }
        // 65000.01 followed by a 1 in the 29th digit: rounding would put it on the grid.
        let long = "65000.010000000000000000000001";
        let refusal = place(&btc_limit(long, "1"), &instruments(), 7, 0).unwrap_err();
        assert!(refusal.violations[0].1.contains("more than 28 digits"));
        let refusal = place(&btc_limit("-5", "1"), &instruments(), 7, 0).unwrap_err();
        assert!(refusal.violations[0].1.contains("positive"));
    }

    #[test]
    fn market_orders_default_to_ioc_and_take_no_price() {
        let mut req = btc_limit("", "1");
        req.order_type = pb::OrderType::Market as i32;
        assert_eq!(
            place(&req, &instruments(), 7, 0).unwrap().tif,
            TimeInForce::Ioc
        );
        req.price = "65000".into();
        let refusal = place(&req, &instruments(), 7, 0).unwrap_err();
        assert_eq!(refusal.violations[0].0, "price");
    }

    #[test]
    fn a_refusal_with_violations_carries_a_bad_request_detail() {
        let refusal = place(&btc_limit("1.001", "1"), &instruments(), 7, 0).unwrap_err();
        let status = tonic::Status::from(refusal);
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().expect("BadRequest detail");
        assert_eq!(bad.field_violations[0].field, "price");
    }
}
