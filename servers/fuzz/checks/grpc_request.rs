//! The gRPC order requests (`ticker.v1` protobuf bytes) read into engine commands by
//! `grpc::convert`: on any bytes that decode as a request, never a panic; a refusal is a typed
//! INVALID_ARGUMENT whose status (message and details) stays under 4 KB however long the
//! values, naming every field it faults; an accepted command holds exactly the request's money
//! (the ticks and lots times the instrument's grid give back the request's decimals).
//!
//! Byte 0 picks the request (place, cancel, amend, mass cancel); the rest is its encoding.

use prost::Message;
use rust_decimal::Decimal;
use std::str::FromStr;
use std::sync::Arc;
use ticker_feeds::orders::Accounts;
use ticker_feeds::Instruments;
use ticker_proto::v1 as pb;
use ticker_servers::grpc::convert::{self, Refusal};

/// What a refusal may weigh on the wire: standard clients refuse trailers over 16 KiB.
const MAX_STATUS: usize = 4096;

fn instruments() -> Instruments {
    ticker_servers::defaults::wire_instruments()
}

fn refused(r: Refusal) {
    assert_eq!(r.code, tonic::Code::InvalidArgument, "{r:?}");
    assert!(!r.message.is_empty(), "{r:?}");
    assert!(
        !r.violations.is_empty(),
        "a refusal names its fields: {r:?}"
    );
    for (field, why) in &r.violations {
        assert!(!field.is_empty() && !why.is_empty(), "{r:?}");
    }
    let status = tonic::Status::from(r);
    let size = status.message().len() + status.details().len();
    assert!(size < MAX_STATUS, "a {size}-byte status");
}

/// The decimal `text` the request carried equals `units` of the instrument's `unit`.
fn exact(text: &str, units: impl Into<Decimal>, unit: Decimal) {
    let sent = Decimal::from_str(text).expect("an accepted decimal parses");
    let units = units.into();
    assert_eq!(units * unit, sent, "{text} became {units} × {unit}");
}

/// One input; panics on a property that does not hold.
pub fn run(data: &[u8]) {
    let [kind, bytes @ ..] = data else {
        return;
    };
    let instruments = instruments();
    let spec = |id: u32| {
        instruments
            .get(id)
            .expect("a command names a known instrument")
            .instrument
            .spec
            .clone()
    };
    match kind % 4 {
        0 => {
            let Ok(req) = pb::PlaceOrderRequest::decode(bytes) else {
                return;
            };
            match convert::place(&req, &instruments, 7, 0) {
                Err(r) => refused(r),
                Ok(p) => {
                    let s = spec(p.instrument);
                    if p.order_type.has_limit_price() {
                        exact(&req.price, p.price, s.tick_size);
                    }
                    if p.order_type.is_stop() {
                        exact(&req.trigger_price, p.trigger, s.tick_size);
                    }
                    exact(&req.size, p.size, s.lot_size);
                    assert!(p.size > 0);
                    if !req.display_size.is_empty() {
                        exact(&req.display_size, p.display, s.lot_size);
                    }
                }
            }
        }
        1 => {
            let Ok(req) = pb::CancelOrderRequest::decode(bytes) else {
                return;
            };
            if let Err(r) = convert::cancel(&req, 7) {
                refused(r);
            }
        }
        2 => {
            let Ok(req) = pb::AmendOrderRequest::decode(bytes) else {
                return;
            };
            let instruments = Arc::new(self::instruments());
            let accounts = Accounts::new(Default::default(), instruments.clone());
            match convert::amend(&req, 7, &instruments, &accounts) {
                Err(r) => refused(r),
                Ok(a) => {
                    let wire = instruments
                        .by_symbol(&req.instrument)
                        .expect("an accepted amend names a known instrument");
                    let s = &wire.instrument.spec;
                    if let (Some(text), Some(t)) = (&req.price, a.price) {
                        exact(text, t, s.tick_size);
                    }
                    if let (Some(text), Some(t)) = (&req.trigger_price, a.trigger) {
                        exact(text, t, s.tick_size);
                    }
                    if let (Some(text), Some(l)) = (&req.size, a.size) {
                        exact(text, l, s.lot_size);
                    }
                }
            }
        }
        _ => {
            let Ok(req) = pb::MassCancelRequest::decode(bytes) else {
                return;
            };
            if let Err(r) = convert::mass_cancel(&req, 7, &instruments) {
                refused(r);
            }
        }
    }
}
