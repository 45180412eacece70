//! `ticker-servers`: the gRPC and WebSocket fronts of tickerd and the `tickerd` binary.
//!
//! So far it holds the embedded default configuration; the gRPC and WebSocket issues add the
//! fronts.

pub mod defaults;
