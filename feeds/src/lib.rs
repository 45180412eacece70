//! `ticker-feeds`: everything a subscriber sees, built from the engine's event stream.
//!
//! - [`market_data`] applies engine events to the views — [`depth`] (L2 with checksums),
//!   [`ticker`] (L1 and rolling 24h statistics), [`candles`], trades and [`l3`] — and
//!   [`orders`] routes order updates per account and onto the [`drop_copy`] (every account's
//!   updates in one stream); [`positions`] keeps each account's position per instrument. Views
//!   keep replica state built from events only; they never read the engine's book.
//! - [`hub`] fans each update, encoded once, out to every subscriber without waiting for any,
//!   with per-topic slow-consumer policies and a short history for resume-from-seq.
//! - [`wire`] writes exact decimal strings and JSON; [`proto`] encodes the same messages as
//!   protobuf (`ticker.v1`). Each view publishes what an update says and a message encodes
//!   itself once per format when a subscriber first reads it, so unread topics cost no
//!   encoding.
//! - [`snapshot`] cuts the whole of it at a batch boundary and restores it after a restart, so
//!   every topic continues its sequence and history as if nothing had happened.

pub mod candles;
pub mod depth;
pub mod drop_copy;
pub mod hub;
pub mod id_hash;
pub mod instruments;
pub mod l3;
pub mod market_data;
pub mod orders;
pub mod positions;
pub mod proto;
pub mod replay;
pub mod sim;
pub mod snapshot;
pub mod ticker;
pub mod topic;
pub mod trades;
pub mod wire;

pub use drop_copy::DropCopy;
pub use hub::{
    Delivery, Encode, Encoded, Ended, Hub, HubConfig, HubStats, Message, MessageKind, Next,
    SnapshotReason, Subscription, Window,
};
pub use instruments::{Instruments, WireInstrument};
pub use market_data::{FeedsConfig, MarketData};
pub use positions::{Position, Positions};
pub use snapshot::{FeedsSnapshot, FeedsSnapshotError};
pub use topic::{Channel, Interval, SlowPolicy, Topic};
