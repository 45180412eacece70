//! `ticker-feeds`: market-data views built from the engine's events, the topic hub that fans
//! them out, and the order-flow sources (market simulator, replay).
//!
//! Not built yet: this crate is filled by the feeds issue. It exists so the workspace has its
//! final shape.
