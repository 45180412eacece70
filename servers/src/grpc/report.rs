//! The engine's answer to one command (its events, outcome first) as `ticker.v1` responses:
//! the decision, and what the command did to the order it concerned.

use super::convert::Refusal;
use ticker_engine::*;
use ticker_feeds::proto as wire;
use ticker_feeds::{Instruments, WireInstrument};
use ticker_proto::v1 as pb;
use tonic::Code;

/// The decision on a command, or the error status it maps to: a `not_owner` reject is
/// PERMISSION_DENIED and a `deadline_exceeded` one DEADLINE_EXCEEDED; every other reject is a
/// normal answer carrying its reason.
pub fn decision(events: &[Event]) -> Result<pb::CommandResult, Refusal> {
    let Some(first) = events.first() else {
        return Err(Refusal::new(
            Code::Unavailable,
            "the market is shutting down",
        ));
    };
    let mut result = pb::CommandResult {
        accepted: true,
        reject_reason: 0,
        engine_seq: first.seq,
        timestamp_ns: first.ts,
    };
    if let EventKind::Rejected {
        reason, order_id, ..
    } = first.kind
    {
        match reason {
            RejectReason::NotOwner => {
                return Err(Refusal::new(
                    Code::PermissionDenied,
                    format!("order {order_id} belongs to another account"),
                ))
            }
            RejectReason::DeadlineExceeded => return Err(Refusal::new(
                Code::DeadlineExceeded,
                "the request's deadline passed before it reached the engine; it was not executed",
            )),
            _ => {}
        }
        result.accepted = false;
        result.reject_reason = wire::reject_reason(reason) as i32;
    }
    Ok(result)
}

/// What the command's events did to `order`. `known` is what is known before them (the
/// accepted order of a place).
pub fn order_report(
    instruments: &Instruments,
    events: &[Event],
    order: OrderId,
    known: Option<&OrderInfo>,
) -> pb::OrderReport {
    let mut wire_of: Option<std::sync::Arc<WireInstrument>> = None;
    let mut r = pb::OrderReport {
        order_id: order.0,
        ..Default::default()
    };
    let mut filled: Lots = 0;
    let mut set_instrument = |r: &mut pb::OrderReport, id: InstrumentId| {
        if wire_of.is_none() {
            wire_of = instruments.get(id);
            if let Some(w) = &wire_of {
                r.instrument = w.symbol().to_string();
            }
        }
        wire_of.clone()
    };
    if let Some(info) = known {
        if let Some(w) = set_instrument(&mut r, info.instrument) {
            let accepted = wire::order(&w, info);
            r.client_order_id = info.client_id;
            r.side = accepted.side;
            r.price = accepted.price;
            r.trigger_price = accepted.trigger_price;
            r.size = accepted.size;
            r.remaining_size = wire::size(&w, info.size);
        }
    }
    for e in events {
        match e.kind {
            EventKind::Accepted {
                instrument: Some(i),
                ..
            } => {
                set_instrument(&mut r, i);
            }
            EventKind::Trade {
                trade_id,
                instrument,
                price,
                size,
                taker_order,
                maker_order,
                taker_remaining,
                maker_remaining,
                ..
            } if taker_order == order || maker_order == order => {
                let Some(w) = set_instrument(&mut r, instrument) else {
                    continue;
                };
                let (remaining, liquidity) = if taker_order == order {
                    (taker_remaining, pb::Liquidity::Taker)
                } else {
                    (maker_remaining, pb::Liquidity::Maker)
                };
                filled += size;
                r.remaining_size = wire::size(&w, remaining);
                r.fills.push(pb::Fill {
                    trade_id,
                    price: wire::price(&w, price),
                    size: wire::size(&w, size),
                    liquidity: liquidity as i32,
                    engine_seq: e.seq,
                });
            }
            EventKind::OrderRested {
                order_id,
                instrument,
                side,
                price,
                visible,
                remaining,
                ..
            } if order_id == order => {
                let Some(w) = set_instrument(&mut r, instrument) else {
                    continue;
                };
                r.status = pb::OrderStatus::Resting as i32;
                r.side = wire::side(side) as i32;
                r.price = wire::price(&w, price);
                r.visible_size = wire::size(&w, visible);
                r.remaining_size = wire::size(&w, remaining);
            }
            EventKind::StopArmed {
                order_id,
                instrument,
                side,
                trigger,
                ..
            } if order_id == order => {
                let Some(w) = set_instrument(&mut r, instrument) else {
                    continue;
                };
                r.status = pb::OrderStatus::Armed as i32;
                r.side = wire::side(side) as i32;
                r.trigger_price = wire::price(&w, trigger);
            }
            EventKind::OrderAmended {
                order_id,
                instrument,
                side,
                price,
                trigger,
                remaining,
                visible,
                ..
            } if order_id == order => {
                let Some(w) = set_instrument(&mut r, instrument) else {
                    continue;
                };
                r.side = wire::side(side) as i32;
                if price != 0 {
                    r.price = wire::price(&w, price);
                }
                if trigger != 0 {
                    r.trigger_price = wire::price(&w, trigger);
                }
                r.remaining_size = wire::size(&w, remaining);
                r.visible_size = wire::size(&w, visible);
            }
            EventKind::OrderDone {
                order_id,
                instrument,
                side,
                filled: lifetime,
                reason,
                ..
            } if order_id == order => {
                let Some(w) = set_instrument(&mut r, instrument) else {
                    continue;
                };
                r.status = pb::OrderStatus::Done as i32;
                r.side = wire::side(side) as i32;
                r.done_reason = wire::done_reason(reason) as i32;
                r.remaining_size = wire::size(&w, 0);
                r.visible_size = wire::size(&w, 0);
                filled = lifetime;
                r.filled_size = wire::size(&w, lifetime);
            }
            _ => {}
        }
    }
    // A new order's fills are all of its fills; for other commands the lifetime filled size is
    // known only once the order is done.
    if known.is_some() && r.filled_size.is_empty() {
        if let Some(w) = &wire_of {
            r.filled_size = wire::size(w, filled);
        }
    }
    r
}

/// A place's response.
pub fn placed(
    instruments: &Instruments,
    events: &[Event],
) -> Result<pb::PlaceOrderResponse, Refusal> {
    let result = decision(events)?;
    let order = match events.first().map(|e| &e.kind) {
        Some(EventKind::PlaceAccepted { order, .. }) => Some(order_report(
            instruments,
            events,
            order.order_id,
            Some(order),
        )),
        _ => None,
    };
    Ok(pb::PlaceOrderResponse {
        result: Some(result),
        order,
    })
}

/// The order a cancel or an amend concerned, when accepted.
pub fn touched(instruments: &Instruments, events: &[Event]) -> Option<pb::OrderReport> {
    match events.first().map(|e| &e.kind) {
        Some(EventKind::Accepted { order_id, .. }) if !order_id.is_none() => {
            Some(order_report(instruments, events, *order_id, None))
        }
        _ => None,
    }
}

/// The orders a mass cancel cancelled.
pub fn mass_cancelled(events: &[Event]) -> Vec<u64> {
    done_for(events, DoneReason::MassCancelled)
}

/// The orders the kill switch (`DisableAccount`) cancelled.
pub fn cancelled_by_kill_switch(events: &[Event]) -> Vec<u64> {
    done_for(events, DoneReason::AccountDisabled)
}

fn done_for(events: &[Event], why: DoneReason) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::OrderDone {
                order_id, reason, ..
            } if reason == why => Some(order_id.0),
            _ => None,
        })
        .collect()
}
