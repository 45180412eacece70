//! Events: the engine's only output. Each carries its engine's sequence number (no gaps; with
//! several shards each numbers its own, see [`crate::shard`]) and the ingress timestamp of the command that caused it. They are rich enough for the feeds to build
//! L1, L2 and L3 views and per-account order updates without ever reading the engine's book.
//!
//! For every command but [`crate::CommandKind::Heartbeat`] and [`crate::CommandKind::Snapshot`] the engine emits exactly one outcome
//! ([`EventKind::Accepted`], [`EventKind::PlaceAccepted`] or [`EventKind::Rejected`]) first, then
//! what the command caused. A placed order then ends the command either resting
//! ([`EventKind::OrderRested`] / [`EventKind::StopArmed`]) or done ([`EventKind::OrderDone`]).
//! [`EventKind::LevelChanged`] events close a command, one per price level it touched, carrying
//! the level's final visible size.

use crate::command::CommandTag;
use crate::instrument::InstrumentSpec;
use crate::types::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub ts: Timestamp,
    pub kind: EventKind,
}

/// Everything the engine knows about a newly accepted order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderInfo {
    pub order_id: OrderId,
    pub account: AccountId,
    pub client_id: ClientOrderId,
    pub session: SessionId,
    pub instrument: InstrumentId,
    pub side: Side,
    pub order_type: OrderType,
    pub price: Ticks,
    pub trigger: Ticks,
    pub size: Lots,
    pub tif: TimeInForce,
    pub expiry: Timestamp,
    pub post_only: bool,
    pub display: Lots,
    pub stp: SelfTradePrevention,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Outcome of a place command that passed validation.
    PlaceAccepted { corr: Correlation, order: OrderInfo },
    /// Outcome of any other command that passed validation. `order_id` is set for cancel and
    /// amend, `instrument` for commands that name one.
    Accepted {
        corr: Correlation,
        command: CommandTag,
        account: AccountId,
        order_id: OrderId,
        instrument: Option<InstrumentId>,
    },
    /// Outcome of a command that failed validation; it changed nothing.
    Rejected {
        corr: Correlation,
        command: CommandTag,
        account: AccountId,
        client_id: ClientOrderId,
        order_id: OrderId,
        reason: RejectReason,
    },
    /// The order now rests in the book at the back of its price level with `visible` lots
    /// shown (an iceberg shows a slice of `remaining`). Also sent when an order re-queues:
    /// amended to a new price or a larger size, or an iceberg showing its next slice.
    OrderRested {
        order_id: OrderId,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        price: Ticks,
        visible: Lots,
        remaining: Lots,
    },
    /// A stop order waits for the last trade price to reach `trigger`.
    StopArmed {
        order_id: OrderId,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        trigger: Ticks,
    },
    /// A stop order's trigger was reached; it now executes as a market or limit order.
    StopTriggered {
        order_id: OrderId,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        trigger: Ticks,
        last_price: Ticks,
    },
    Trade {
        trade_id: u64,
        instrument: InstrumentId,
        price: Ticks,
        size: Lots,
        aggressor: Side,
        taker_order: OrderId,
        taker_account: AccountId,
        maker_order: OrderId,
        maker_account: AccountId,
        /// Open size of the taker after this trade.
        taker_remaining: Lots,
        /// Open size of the maker after this trade (hidden iceberg size included).
        maker_remaining: Lots,
    },
    /// A resting order or untriggered stop was changed in place or re-queued.
    OrderAmended {
        order_id: OrderId,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        price: Ticks,
        trigger: Ticks,
        remaining: Lots,
        visible: Lots,
        /// `true` for a pure size decrease (the order keeps its place in the queue).
        priority_kept: bool,
    },
    /// The order left the book or never rested: filled, cancelled or expired.
    OrderDone {
        order_id: OrderId,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        price: Ticks,
        /// Size filled over the order's life.
        filled: Lots,
        /// Open size that was cancelled (0 when filled).
        cancelled: Lots,
        reason: DoneReason,
    },
    /// New total visible size and order count at a price level (`size == 0`: level gone).
    LevelChanged {
        instrument: InstrumentId,
        side: Side,
        price: Ticks,
        size: Lots,
        orders: u32,
    },
    InstrumentAdded {
        instrument: InstrumentId,
        spec: Arc<InstrumentSpec>,
    },
    TradingStatus {
        instrument: InstrumentId,
        halted: bool,
    },
    /// The account's kill switch changed: `disabled` accounts may only cancel. Follows the
    /// `Accepted` of `DisableAccount` / `EnableAccount`, before the cancels a disable causes.
    AccountStatus { account: AccountId, disabled: bool },
}

impl EventKind {
    /// The correlation id of an outcome (`Accepted`, `PlaceAccepted`, `Rejected`); `None` for
    /// every other event.
    pub fn outcome_corr(&self) -> Option<Correlation> {
        match self {
            EventKind::Accepted { corr, .. }
            | EventKind::PlaceAccepted { corr, .. }
            | EventKind::Rejected { corr, .. } => Some(*corr),
            _ => None,
        }
    }

    /// The instrument an event is about, if any (an outcome names one only when its command
    /// did; `Rejected` and `AccountStatus` never do).
    pub fn instrument(&self) -> Option<InstrumentId> {
        match self {
            EventKind::PlaceAccepted { order, .. } => Some(order.instrument),
            EventKind::Accepted { instrument, .. } => *instrument,
            EventKind::Rejected { .. } | EventKind::AccountStatus { .. } => None,
            EventKind::OrderRested { instrument, .. }
            | EventKind::StopArmed { instrument, .. }
            | EventKind::StopTriggered { instrument, .. }
            | EventKind::Trade { instrument, .. }
            | EventKind::OrderAmended { instrument, .. }
            | EventKind::OrderDone { instrument, .. }
            | EventKind::LevelChanged { instrument, .. }
            | EventKind::InstrumentAdded { instrument, .. }
            | EventKind::TradingStatus { instrument, .. } => Some(*instrument),
        }
    }
}

/// Why a command was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum RejectReason {
    UnknownInstrument = 1,
    /// Price not a multiple of the tick size.
    OffTick = 2,
    /// Size not a multiple of the lot size.
    OffLot = 3,
    TooSmall = 4,
    TooLarge = 5,
    /// Limit price or stop trigger outside the instrument's price band.
    OutsideBand = 6,
    PostOnlyWouldCross = 7,
    FokNotFillable = 8,
    DuplicateClientOrderId = 9,
    UnknownOrder = 10,
    NotOwner = 11,
    Halted = 12,
    /// Price zero or negative.
    InvalidPrice = 13,
    /// Size zero or negative.
    InvalidSize = 14,
    /// Iceberg display size zero-but-flagged, larger than the order, or on an order that
    /// cannot rest.
    InvalidDisplaySize = 15,
    /// A time in force that does not fit the order (e.g. post-only with IOC/FOK).
    InvalidTimeInForce = 16,
    /// GTD expiry at or before the command's timestamp.
    ExpiryInPast = 17,
    /// A stop whose trigger the last trade price has already reached.
    StopWouldTriggerImmediately = 18,
    /// An amend that changes nothing, or changes something the order does not have.
    InvalidAmend = 19,
    /// The engine's order pool is full (`EngineConfig::order_capacity`).
    CapacityExhausted = 20,
    /// An instrument with this symbol exists already.
    InstrumentExists = 21,
    InvalidInstrumentSpec = 22,
    /// An order needs a non-zero account.
    InvalidAccount = 23,
    /// Too many instruments for one engine (`EngineConfig::max_instruments`).
    TooManyInstruments = 24,
    /// The command reached the engine after its deadline; it was not executed.
    DeadlineExceeded = 25,
    /// The account is disabled (kill switch): it may only cancel.
    AccountDisabled = 26,
    /// The order's open size is above the account's `max_order_lots` on the instrument.
    MaxOrderSize = 27,
    /// The order's notional (size × worst price) is above `max_order_notional`.
    MaxOrderNotional = 28,
    /// The account has `max_open_orders` live orders already.
    MaxOpenOrders = 29,
    /// Net position plus open buys plus this order would exceed `max_long_lots`.
    MaxPositionLong = 30,
    /// Net position minus open sells minus this order would go below −`max_short_lots`.
    MaxPositionShort = 31,
    /// The account had `max_orders_per_sec` places accepted in this second already.
    MaxOrderRate = 32,
    /// Limits whose instruments are not ascending and unique.
    InvalidLimits = 33,
}

impl RejectReason {
    pub const ALL: [RejectReason; 33] = [
        RejectReason::UnknownInstrument,
        RejectReason::OffTick,
        RejectReason::OffLot,
        RejectReason::TooSmall,
        RejectReason::TooLarge,
        RejectReason::OutsideBand,
        RejectReason::PostOnlyWouldCross,
        RejectReason::FokNotFillable,
        RejectReason::DuplicateClientOrderId,
        RejectReason::UnknownOrder,
        RejectReason::NotOwner,
        RejectReason::Halted,
        RejectReason::InvalidPrice,
        RejectReason::InvalidSize,
        RejectReason::InvalidDisplaySize,
        RejectReason::InvalidTimeInForce,
        RejectReason::ExpiryInPast,
        RejectReason::StopWouldTriggerImmediately,
        RejectReason::InvalidAmend,
        RejectReason::CapacityExhausted,
        RejectReason::InstrumentExists,
        RejectReason::InvalidInstrumentSpec,
        RejectReason::InvalidAccount,
        RejectReason::TooManyInstruments,
        RejectReason::DeadlineExceeded,
        RejectReason::AccountDisabled,
        RejectReason::MaxOrderSize,
        RejectReason::MaxOrderNotional,
        RejectReason::MaxOpenOrders,
        RejectReason::MaxPositionLong,
        RejectReason::MaxPositionShort,
        RejectReason::MaxOrderRate,
        RejectReason::InvalidLimits,
    ];

    /// Stable snake_case name used on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownInstrument => "unknown_instrument",
            RejectReason::OffTick => "off_tick",
            RejectReason::OffLot => "off_lot",
            RejectReason::TooSmall => "too_small",
            RejectReason::TooLarge => "too_large",
            RejectReason::OutsideBand => "outside_band",
            RejectReason::PostOnlyWouldCross => "post_only_would_cross",
            RejectReason::FokNotFillable => "fok_not_fillable",
            RejectReason::DuplicateClientOrderId => "duplicate_client_order_id",
            RejectReason::UnknownOrder => "unknown_order",
            RejectReason::NotOwner => "not_owner",
            RejectReason::Halted => "halted",
            RejectReason::InvalidPrice => "invalid_price",
            RejectReason::InvalidSize => "invalid_size",
            RejectReason::InvalidDisplaySize => "invalid_display_size",
            RejectReason::InvalidTimeInForce => "invalid_time_in_force",
            RejectReason::ExpiryInPast => "expiry_in_past",
            RejectReason::StopWouldTriggerImmediately => "stop_would_trigger_immediately",
            RejectReason::InvalidAmend => "invalid_amend",
            RejectReason::CapacityExhausted => "capacity_exhausted",
            RejectReason::InstrumentExists => "instrument_exists",
            RejectReason::InvalidInstrumentSpec => "invalid_instrument_spec",
            RejectReason::InvalidAccount => "invalid_account",
            RejectReason::TooManyInstruments => "too_many_instruments",
            RejectReason::DeadlineExceeded => "deadline_exceeded",
            RejectReason::AccountDisabled => "account_disabled",
            RejectReason::MaxOrderSize => "max_order_size",
            RejectReason::MaxOrderNotional => "max_order_notional",
            RejectReason::MaxOpenOrders => "max_open_orders",
            RejectReason::MaxPositionLong => "max_position_long",
            RejectReason::MaxPositionShort => "max_position_short",
            RejectReason::MaxOrderRate => "max_order_rate",
            RejectReason::InvalidLimits => "invalid_limits",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an order ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum DoneReason {
    Filled = 0,
    /// Cancel command.
    Cancelled = 1,
    /// Mass-cancel command.
    MassCancelled = 2,
    /// Its session closed (cancel-on-disconnect).
    SessionClosed = 3,
    /// IOC remainder.
    ImmediateOrCancel = 4,
    /// Market order remainder: no liquidity left inside the price band.
    MarketProtection = 5,
    /// Self-trade prevention.
    SelfTrade = 6,
    /// GTD expiry reached.
    Expired = 7,
    /// A triggered FOK stop could not be filled completely.
    FillOrKill = 8,
    /// Its account was disabled (kill switch).
    AccountDisabled = 9,
}

impl DoneReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DoneReason::Filled => "filled",
            DoneReason::Cancelled => "cancelled",
            DoneReason::MassCancelled => "mass_cancelled",
            DoneReason::SessionClosed => "session_closed",
            DoneReason::ImmediateOrCancel => "immediate_or_cancel",
            DoneReason::MarketProtection => "market_protection",
            DoneReason::SelfTrade => "self_trade",
            DoneReason::Expired => "expired",
            DoneReason::FillOrKill => "fill_or_kill",
            DoneReason::AccountDisabled => "account_disabled",
        }
    }
}
