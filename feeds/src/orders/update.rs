//! What an order update says and how it is written: the change an engine event made to an
//! order ([`OrderChange`]), the message carrying it ([`OrderUpdate`]) in JSON and protobuf, and
//! the wire names of commands, order types and times in force.

use crate::hub::Encode;
use crate::instruments::WireInstrument;
use crate::l3::side_str;
use crate::proto;
use crate::wire::JsonObject;
use bytes::Bytes;
use std::sync::Arc;
use ticker_engine::*;
use ticker_proto::v1 as pb;
use ticker_proto::v1::order_update::Event as Update;

pub fn command_str(c: CommandTag) -> &'static str {
    match c {
        CommandTag::Place => "place",
        CommandTag::Cancel => "cancel",
        CommandTag::Amend => "amend",
        CommandTag::MassCancel => "mass_cancel",
        CommandTag::SessionClosed => "session_closed",
        CommandTag::AddInstrument => "add_instrument",
        CommandTag::Halt => "halt",
        CommandTag::Resume => "resume",
        CommandTag::Heartbeat => "heartbeat",
        CommandTag::Snapshot => "snapshot",
        CommandTag::SetLimits => "set_limits",
        CommandTag::DisableAccount => "disable_account",
        CommandTag::EnableAccount => "enable_account",
    }
}

pub fn order_type_str(t: OrderType) -> &'static str {
    match t {
        OrderType::Limit => "limit",
        OrderType::Market => "market",
        OrderType::StopMarket => "stop_market",
        OrderType::StopLimit => "stop_limit",
    }
}

pub fn tif_str(t: TimeInForce) -> &'static str {
    match t {
        TimeInForce::Gtc => "gtc",
        TimeInForce::Ioc => "ioc",
        TimeInForce::Fok => "fok",
        TimeInForce::Gtd => "gtd",
    }
}

fn id_str(id: OrderId) -> String {
    id.0.to_string()
}

pub(super) fn write_info(wire: &WireInstrument, i: &OrderInfo, o: &mut JsonObject<'_>) {
    o.str("order_id", &id_str(i.order_id))
        .u64("client_id", i.client_id)
        .str("instrument", wire.symbol())
        .str("side", side_str(i.side))
        .str("order_type", order_type_str(i.order_type));
    if i.order_type.has_limit_price() {
        o.decimal("price", wire.price, i.price);
    }
    if i.order_type.is_stop() {
        o.decimal("trigger", wire.price, i.trigger);
    }
    o.decimal("size", wire.size, i.size as i64)
        .str("tif", tif_str(i.tif));
    if i.tif == TimeInForce::Gtd {
        o.u64("expiry", i.expiry);
    }
    if i.post_only {
        o.bool("post_only", true);
    }
    if i.display > 0 {
        o.decimal("display", wire.size, i.display as i64);
    }
}

/// What one order update says, encoded when a subscriber first reads it.
#[derive(Clone)]
pub(super) enum OrderChange {
    Accepted {
        wire: Arc<WireInstrument>,
        corr: Correlation,
        order: OrderInfo,
    },
    Ack {
        corr: Correlation,
        command: CommandTag,
        order_id: OrderId,
        wire: Option<Arc<WireInstrument>>,
    },
    Rejected {
        corr: Correlation,
        command: CommandTag,
        client_id: ClientOrderId,
        order_id: OrderId,
        reason: RejectReason,
    },
    Rested {
        wire: Arc<WireInstrument>,
        order_id: OrderId,
        price: Ticks,
        visible: Lots,
        remaining: Lots,
    },
    /// A stop armed (`last_price` none) or triggered.
    Stop {
        wire: Arc<WireInstrument>,
        order_id: OrderId,
        trigger: Ticks,
        last_price: Option<Ticks>,
    },
    Fill {
        wire: Arc<WireInstrument>,
        order_id: OrderId,
        trade_id: u64,
        price: Ticks,
        size: Lots,
        remaining: Lots,
        maker: bool,
    },
    Amended {
        wire: Arc<WireInstrument>,
        order_id: OrderId,
        price: Ticks,
        trigger: Ticks,
        remaining: Lots,
        visible: Lots,
        priority_kept: bool,
    },
    Done {
        wire: Arc<WireInstrument>,
        order_id: OrderId,
        reason: DoneReason,
        filled: Lots,
        cancelled: Lots,
    },
}

/// An order update message: the change and the engine event it came from. On the drop copy
/// it names its account; on the account's own topic the topic does.
pub(crate) struct OrderUpdate {
    pub(super) engine_seq: u64,
    pub(super) ts: Timestamp,
    pub(super) account: Option<AccountId>,
    pub(super) change: OrderChange,
}

impl OrderChange {
    fn name(&self) -> &'static str {
        match self {
            OrderChange::Accepted { .. } => "accepted",
            OrderChange::Ack { .. } => "ack",
            OrderChange::Rejected { .. } => "rejected",
            OrderChange::Rested { .. } => "rested",
            OrderChange::Stop {
                last_price: None, ..
            } => "stop_armed",
            OrderChange::Stop { .. } => "stop_triggered",
            OrderChange::Fill { .. } => "fill",
            OrderChange::Amended { .. } => "amended",
            OrderChange::Done { .. } => "done",
        }
    }

    /// The event-specific JSON fields.
    fn write_json(&self, o: &mut JsonObject<'_>) {
        match self {
            OrderChange::Accepted { wire, corr, order } => {
                o.u64("corr", *corr);
                write_info(wire, order, o);
            }
            OrderChange::Ack {
                corr,
                command,
                order_id,
                wire,
            } => {
                o.u64("corr", *corr).str("command", command_str(*command));
                if !order_id.is_none() {
                    o.str("order_id", &id_str(*order_id));
                }
                if let Some(w) = wire {
                    o.str("instrument", w.symbol());
                }
            }
            OrderChange::Rejected {
                corr,
                command,
                client_id,
                order_id,
                reason,
            } => {
                o.u64("corr", *corr)
                    .str("command", command_str(*command))
                    .str("reason", reason.as_str());
                if *client_id != 0 {
                    o.u64("client_id", *client_id);
                }
                if !order_id.is_none() {
                    o.str("order_id", &id_str(*order_id));
                }
            }
            OrderChange::Rested {
                wire,
                order_id,
                price,
                visible,
                remaining,
            } => {
                o.str("order_id", &id_str(*order_id))
                    .str("instrument", wire.symbol())
                    .decimal("price", wire.price, *price)
                    .decimal("visible", wire.size, *visible as i64)
                    .decimal("remaining", wire.size, *remaining as i64);
            }
            OrderChange::Stop {
                wire,
                order_id,
                trigger,
                last_price,
            } => {
                o.str("order_id", &id_str(*order_id))
                    .str("instrument", wire.symbol())
                    .decimal("trigger", wire.price, *trigger);
                if let Some(last_price) = last_price {
                    o.decimal("last_price", wire.price, *last_price);
                }
            }
            OrderChange::Fill {
                wire,
                order_id,
                trade_id,
                price,
                size,
                remaining,
                maker,
            } => {
                o.str("order_id", &id_str(*order_id))
                    .str("instrument", wire.symbol())
                    .u64("trade_id", *trade_id)
                    .decimal("price", wire.price, *price)
                    .decimal("size", wire.size, *size as i64)
                    .decimal("remaining", wire.size, *remaining as i64)
                    .str("liquidity", if *maker { "maker" } else { "taker" });
            }
            OrderChange::Amended {
                wire,
                order_id,
                price,
                trigger,
                remaining,
                visible,
                priority_kept,
            } => {
                o.str("order_id", &id_str(*order_id))
                    .str("instrument", wire.symbol())
                    .decimal("price", wire.price, *price)
                    .decimal("remaining", wire.size, *remaining as i64)
                    .decimal("visible", wire.size, *visible as i64)
                    .bool("priority_kept", *priority_kept);
                if *trigger != 0 {
                    o.decimal("trigger", wire.price, *trigger);
                }
            }
            OrderChange::Done {
                wire,
                order_id,
                reason,
                filled,
                cancelled,
            } => {
                o.str("order_id", &id_str(*order_id))
                    .str("instrument", wire.symbol())
                    .str("reason", reason.as_str())
                    .decimal("filled", wire.size, *filled as i64)
                    .decimal("cancelled", wire.size, *cancelled as i64);
            }
        }
    }

    fn to_proto(&self) -> Update {
        match self {
            OrderChange::Accepted { wire, corr, order } => Update::Accepted(pb::OrderAccepted {
                correlation: *corr,
                order: Some(proto::order(wire, order)),
            }),
            OrderChange::Ack {
                corr,
                command,
                order_id,
                wire,
            } => Update::Ack(pb::CommandAck {
                correlation: *corr,
                command: proto::command_type(*command) as i32,
                order_id: order_id.0,
                instrument: wire
                    .as_ref()
                    .map_or_else(String::new, |w| w.symbol().to_string()),
            }),
            OrderChange::Rejected {
                corr,
                command,
                client_id,
                order_id,
                reason,
            } => Update::Rejected(pb::OrderRejected {
                correlation: *corr,
                command: proto::command_type(*command) as i32,
                reason: proto::reject_reason(*reason) as i32,
                client_order_id: *client_id,
                order_id: order_id.0,
            }),
            OrderChange::Rested {
                wire,
                order_id,
                price,
                visible,
                remaining,
            } => Update::Rested(pb::OrderRested {
                order_id: order_id.0,
                instrument: wire.symbol().to_string(),
                price: proto::price(wire, *price),
                visible_size: proto::size(wire, *visible),
                remaining_size: proto::size(wire, *remaining),
            }),
            OrderChange::Stop {
                wire,
                order_id,
                trigger,
                last_price: Some(last_price),
            } => Update::StopTriggered(pb::StopTriggered {
                order_id: order_id.0,
                instrument: wire.symbol().to_string(),
                trigger_price: proto::price(wire, *trigger),
                last_price: proto::price(wire, *last_price),
            }),
            OrderChange::Stop {
                wire,
                order_id,
                trigger,
                last_price: None,
            } => Update::StopArmed(pb::StopArmed {
                order_id: order_id.0,
                instrument: wire.symbol().to_string(),
                trigger_price: proto::price(wire, *trigger),
            }),
            OrderChange::Fill {
                wire,
                order_id,
                trade_id,
                price,
                size,
                remaining,
                maker,
            } => Update::Fill(pb::OrderFill {
                order_id: order_id.0,
                instrument: wire.symbol().to_string(),
                trade_id: *trade_id,
                price: proto::price(wire, *price),
                size: proto::size(wire, *size),
                remaining_size: proto::size(wire, *remaining),
                liquidity: if *maker {
                    pb::Liquidity::Maker
                } else {
                    pb::Liquidity::Taker
                } as i32,
            }),
            OrderChange::Amended {
                wire,
                order_id,
                price,
                trigger,
                remaining,
                visible,
                priority_kept,
            } => Update::Amended(pb::OrderAmended {
                order_id: order_id.0,
                instrument: wire.symbol().to_string(),
                price: proto::price(wire, *price),
                trigger_price: if *trigger != 0 {
                    proto::price(wire, *trigger)
                } else {
                    String::new()
                },
                remaining_size: proto::size(wire, *remaining),
                visible_size: proto::size(wire, *visible),
                priority_kept: *priority_kept,
            }),
            OrderChange::Done {
                wire,
                order_id,
                reason,
                filled,
                cancelled,
            } => Update::Done(pb::OrderDone {
                order_id: order_id.0,
                instrument: wire.symbol().to_string(),
                reason: proto::done_reason(*reason) as i32,
                filled_size: proto::size(wire, *filled),
                cancelled_size: proto::size(wire, *cancelled),
            }),
        }
    }
}

impl Encode for OrderUpdate {
    fn json(&self, seq: u64, prev_seq: u64) -> Bytes {
        let mut out = Vec::with_capacity(320);
        let mut o = JsonObject::new(&mut out);
        o.str("type", "order");
        if self.account.is_some() {
            o.str("channel", "drop_copy");
        }
        o.str("event", self.change.name())
            .u64("seq", seq)
            .u64("prev_seq", prev_seq)
            .u64("engine_seq", self.engine_seq)
            .u64("ts", self.ts);
        if let Some(account) = self.account {
            o.u64("account", account);
        }
        self.change.write_json(&mut o);
        o.finish();
        Bytes::from(out)
    }

    fn proto(&self, seq: u64, prev_seq: u64) -> Bytes {
        let event = self.change.to_proto();
        let account = self.account.unwrap_or(0);
        proto::order_update(seq, prev_seq, self.engine_seq, self.ts, account, event)
    }
}
