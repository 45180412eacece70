//! `ticker-servers`: the gRPC and WebSocket fronts of tickerd and the `tickerd` binary.
//!
//! [`market`] runs the engine thread, the feeds thread and the simulator, and gives the fronts
//! one order-entry API; [`grpc`] is the gRPC front on it; [`defaults`] is the embedded
//! configuration.

pub mod config;
pub mod defaults;
pub mod grpc;
pub mod logging;
pub mod market;
pub mod metrics;
