//! The edge between the wire and the engine: `ticker.v1` requests read into the shared
//! [`crate::order_entry`] tickets (which check every decimal against the instrument's grid),
//! and the refusals a request can meet before it reaches the engine, as gRPC statuses.

use crate::market::ExecuteError;
use crate::order_entry::{self, AmendTicket, Invalid, PlaceTicket};
pub use crate::order_entry::{instrument, price, size, Violations};
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

impl From<ExecuteError> for Refusal {
    fn from(e: ExecuteError) -> Self {
        match e {
            ExecuteError::Busy => Refusal::new(Code::ResourceExhausted, e.to_string()),
            ExecuteError::ShuttingDown | ExecuteError::Unavailable(_) => {
                Refusal::new(Code::Unavailable, e.to_string())
            }
        }
    }
}

impl From<Invalid> for Refusal {
    fn from(i: Invalid) -> Self {
        Refusal {
            code: Code::InvalidArgument,
            message: i.message,
            violations: i.violations,
        }
    }
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

/// A place command from a request.
pub fn place(
    req: &pb::PlaceOrderRequest,
    instruments: &Instruments,
    account: AccountId,
    session: SessionId,
) -> Result<Place, Refusal> {
    let mut v = Violations::default();
    let side = side("side", req.side, &mut v);
    let order_type = match pb::OrderType::try_from(req.order_type) {
        Ok(pb::OrderType::Unspecified) => None,
        Ok(pb::OrderType::Limit) => Some(OrderType::Limit),
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
    let time_in_force = match pb::TimeInForce::try_from(req.time_in_force) {
        Ok(pb::TimeInForce::Unspecified) => None,
        Ok(pb::TimeInForce::Gtc) => Some(TimeInForce::Gtc),
        Ok(pb::TimeInForce::Ioc) => Some(TimeInForce::Ioc),
        Ok(pb::TimeInForce::Fok) => Some(TimeInForce::Fok),
        Ok(pb::TimeInForce::Gtd) => Some(TimeInForce::Gtd),
        Err(_) => {
            v.add(
                "time_in_force",
                format!("unknown time in force {}", req.time_in_force),
            );
            None
        }
    };
    let self_trade_prevention = match pb::SelfTradePrevention::try_from(req.self_trade_prevention) {
        Ok(pb::SelfTradePrevention::Unspecified) => None,
        Ok(pb::SelfTradePrevention::CancelTaker) => Some(SelfTradePrevention::CancelTaker),
        Ok(pb::SelfTradePrevention::CancelMaker) => Some(SelfTradePrevention::CancelMaker),
        Ok(pb::SelfTradePrevention::CancelBoth) => Some(SelfTradePrevention::CancelBoth),
        Ok(pb::SelfTradePrevention::DecrementAndCancel) => {
            Some(SelfTradePrevention::DecrementAndCancel)
        }
        Err(_) => {
            v.add(
                "self_trade_prevention",
                format!("unknown mode {}", req.self_trade_prevention),
            );
            None
        }
    };
    let ticket = PlaceTicket {
        instrument: &req.instrument,
        side,
        order_type,
        price: &req.price,
        trigger_price: &req.trigger_price,
        size: &req.size,
        display_size: &req.display_size,
        time_in_force,
        expiry_ns: req.expiry_ns,
        post_only: req.post_only,
        self_trade_prevention,
        client_order_id: req.client_order_id,
    };
    Ok(order_entry::place(
        &ticket,
        v,
        instruments,
        account,
        session,
    )?)
}

fn cancel_ref(order: Option<&pb::cancel_order_request::Order>) -> Option<OrderRef> {
    use pb::cancel_order_request::Order as C;
    order.map(|o| match o {
        C::OrderId(id) => OrderRef::Id(OrderId(*id)),
        C::ClientOrderId(id) => OrderRef::Client(*id),
    })
}

fn amend_ref(order: Option<&pb::amend_order_request::Order>) -> Option<OrderRef> {
    use pb::amend_order_request::Order as A;
    order.map(|o| match o {
        A::OrderId(id) => OrderRef::Id(OrderId(*id)),
        A::ClientOrderId(id) => OrderRef::Client(*id),
    })
}

pub fn cancel(req: &pb::CancelOrderRequest, account: AccountId) -> Result<Cancel, Refusal> {
    Ok(order_entry::cancel(
        cancel_ref(req.order.as_ref()),
        Violations::default(),
        account,
    )?)
}

/// An amend command (see [`order_entry::amend`]).
pub fn amend(
    req: &pb::AmendOrderRequest,
    account: AccountId,
    instruments: &Instruments,
    accounts: &Accounts,
) -> Result<Amend, Refusal> {
    let ticket = AmendTicket {
        order: amend_ref(req.order.as_ref()),
        instrument: &req.instrument,
        price: req.price.as_deref(),
        size: req.size.as_deref(),
        trigger_price: req.trigger_price.as_deref(),
    };
    Ok(order_entry::amend(
        &ticket,
        Violations::default(),
        account,
        instruments,
        accounts,
    )?)
}

pub fn mass_cancel(
    req: &pb::MassCancelRequest,
    account: AccountId,
    instruments: &Instruments,
) -> Result<MassCancel, Refusal> {
    let mut v = Violations::default();
    let side = if req.side == pb::Side::Unspecified as i32 {
        None
    } else {
        self::side("side", req.side, &mut v)
    };
    Ok(order_entry::mass_cancel(
        &req.instrument,
        side,
        v,
        account,
        instruments,
    )?)
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
        crate::defaults::wire_instruments()
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
