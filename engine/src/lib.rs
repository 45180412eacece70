//! `ticker-engine`: the order-matching core of tickerd.
//!
//! Commands flow in, a single writer matches them against price-time priority limit order
//! books, and sequenced events flow out; everything else in tickerd is a view built from those
//! events (see `ARCHITECTURE.md`).
//!
//! - [`Engine`] is the core as a plain library: `apply(command, &mut events)`, no threads, no
//!   clock, deterministic. Quants embed and benchmark it directly.
//! - [`instrument`] converts decimals at the edge into integer ticks and lots, rejecting values
//!   off the grid.
//! - [`command`] and [`event`] are the engine's whole input and output vocabulary.
//! - [`risk`] holds pre-trade limits and the kill switch, enforced inside the engine.
//! - [`snapshot`] captures an engine's whole state between two commands and restores an engine
//!   that goes on exactly as the original would have.
//!
//! ```
//! use ticker_engine::*;
//! use rust_decimal::Decimal;
//!
//! let mut engine = Engine::default();
//! let spec = InstrumentSpec {
//!     symbol: "BTC-USD".into(),
//!     tick_size: Decimal::new(1, 2),       // 0.01
//!     lot_size: Decimal::new(1, 4),        // 0.0001
//!     min_size: Decimal::new(1, 4),
//!     max_size: Decimal::new(100, 0),
//!     reference_price: Decimal::new(50_000, 0),
//!     band: Decimal::new(1, 1),            // ±10%
//! };
//! let mut events = Vec::new();
//! engine.apply(&Command::new(1, 1, CommandKind::AddInstrument(Box::new(spec))), &mut events);
//! let ask = Place::limit(7, 0, Side::Sell, 5_000_000, 10_000); // 50000.00 x 1.0000
//! engine.apply(&Command::new(2, 2, CommandKind::Place(ask)), &mut events);
//! let bid = Place::limit(8, 0, Side::Buy, 5_000_000, 4_000);
//! engine.apply(&Command::new(3, 3, CommandKind::Place(bid)), &mut events);
//! assert!(events.iter().any(|e| matches!(e.kind, EventKind::Trade { size: 4_000, .. })));
//! assert_eq!(engine.book(0).unwrap().best_ask(), Some(5_000_000));
//! ```

mod bitmap;
pub mod book;
mod client_index;
pub mod codec;
pub mod command;
pub mod engine;
pub mod event;
pub mod instrument;
pub mod journal;
mod levels;
mod order;
pub mod pipeline;
pub mod prefetch;
pub mod ring;
pub mod risk;
pub mod shard;
pub mod snapshot;
pub mod types;

pub use book::Book;
pub use command::*;
pub use engine::{Engine, EngineConfig, OrderView};
pub use event::*;
pub use instrument::{Instrument, InstrumentSpec, SpecError};
pub use levels::Level;
pub use pipeline::{Batch, Clock, Egress, Ingress, Pipeline, PipelineConfig, SubmitError};
pub use risk::{InstrumentLimits, Limits, Position};
pub use shard::{FanIn, Offered, Route, Shard};
pub use snapshot::{EngineSnapshot, RestoreError};
pub use types::*;
