//! The gRPC front of tickerd: `ticker.v1` `OrderService`, `MarketDataService`, `RiskService` and
//! `AdminService`
//! (`proto/ticker/v1`), with health, reflection and gRPC-Web on the same port.
//!
//! - [`server`] — [`GrpcConfig`] and [`GrpcServer`]: transport, TLS, compression, limits.
//! - [`auth`] — bearer tokens to roles and accounts; PERMISSION_DENIED for a missing role.
//! - [`convert`] — requests to engine commands: decimal strings to ticks and lots, exactly,
//!   with every bad field named (INVALID_ARGUMENT with a `google.rpc.BadRequest` detail).
//! - [`report`] — a command's events to responses; engine rejects are normal answers except
//!   `not_owner` (PERMISSION_DENIED) and `deadline_exceeded` (DEADLINE_EXCEEDED).
//! - [`orders`], [`market_data`] — the services; [`risk`] — drop copy, positions, limits and
//!   the kill switch for `risk` tokens; [`admin`] — instruments and halts at run time, for
//!   `admin` tokens.
//! - [`frames`] — streams of the feeds' pre-encoded protobuf, written as they are to every
//!   subscriber.
//! - [`metering`] — the layer that counts every call by method and status and times it to its
//!   first response (`tickerd_grpc_*` on `/metrics`).

pub mod admin;
pub mod auth;
pub mod convert;
pub mod frames;
pub mod market_data;
pub mod metadata_limit;
pub mod metering;
pub mod orders;
pub mod report;
pub mod risk;
pub mod server;

pub use auth::AuthConfig;
pub use server::{GrpcConfig, GrpcError, GrpcServer, TlsFiles};
