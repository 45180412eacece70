//! Identifiers and small enums shared by commands, events and the book.
//!
//! Prices are `i64` ticks and sizes `u64` lots everywhere inside the engine; the conversion from
//! and to decimals lives in [`crate::instrument`].

use serde::{Deserialize, Serialize};
/// Price in ticks of the instrument's tick size.
pub type Ticks = i64;
/// Size in lots of the instrument's lot size.
pub type Lots = u64;
/// Dense index of an instrument inside one engine (the order it was added in).
pub type InstrumentId = u32;
/// Trading account. `0` is reserved for "no account" (admin commands).
pub type AccountId = u64;
/// Order-entry session an order is tagged with for cancel-on-disconnect; `0` means untagged.
pub type SessionId = u64;
/// Caller-chosen order id, unique among an account's live orders; `0` means none.
pub type ClientOrderId = u64;
/// Caller-chosen correlation id echoed on the command's outcome event.
pub type Correlation = u64;
/// Nanoseconds since the Unix epoch, stamped by the ingress (never read by the engine).
pub type Timestamp = u64;

/// Engine-assigned order id: unique for the engine's lifetime, never `0`.
///
/// The low 32 bits are the order's slot in the engine's pool and the high 32 bits the slot's
/// generation, so a lookup by id is one array access plus a comparison (no hash map). Ids are
/// therefore unique but not ordered by time.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct OrderId(pub u64);

impl OrderId {
    pub const NONE: OrderId = OrderId(0);

    pub(crate) fn new(slot: u32, generation: u32) -> Self {
        OrderId(((generation as u64) << 32) | slot as u64)
    }

    pub(crate) fn slot(self) -> u32 {
        self.0 as u32
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl std::fmt::Display for OrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Side {
    Buy = 0,
    Sell = 1,
}

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum TimeInForce {
    /// Good till cancelled.
    Gtc = 0,
    /// Immediate or cancel: match what can be matched now, cancel the rest.
    Ioc = 1,
    /// Fill or kill: fill the whole size now or reject without trading.
    Fok = 2,
    /// Good till date: rests until the first command whose ingress timestamp reaches `expiry`.
    Gtd = 3,
}

/// Self-trade prevention: what happens when an order would match one of its own account's
/// resting orders. The incoming (taker) order's mode decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[repr(u8)]
pub enum SelfTradePrevention {
    /// Cancel the rest of the incoming order; the resting order stays.
    #[default]
    CancelTaker = 0,
    /// Cancel the resting order and keep matching.
    CancelMaker = 1,
    /// Cancel both.
    CancelBoth = 2,
    /// Reduce both by the smaller size without trading; cancel whichever reaches zero.
    DecrementAndCancel = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum OrderType {
    Limit = 0,
    Market = 1,
    StopMarket = 2,
    StopLimit = 3,
}

impl OrderType {
    pub fn is_stop(self) -> bool {
        matches!(self, OrderType::StopMarket | OrderType::StopLimit)
    }

    /// Whether the order carries a limit price (the others execute up to the price band).
    pub fn has_limit_price(self) -> bool {
        matches!(self, OrderType::Limit | OrderType::StopLimit)
    }
}
