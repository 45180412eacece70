//! `ticker-proto`: the gRPC contract of tickerd, package `ticker.v1` (`proto/ticker/v1/*.proto`).
//!
//! The messages ([`v1`]) are always here: `ticker-feeds` encodes market data and order updates
//! with them once per update. The tonic services and clients (`v1::order_service_server`,
//! `v1::market_data_service_client`, ...) need the `grpc` feature; `ticker-servers` implements
//! them. Prices and sizes are decimal strings, never floats.
//!
//! [`frame`] appends the per-subscriber part of a stream message to the shared, pre-encoded
//! part, so a stream server never re-encodes a message per subscriber.

pub mod frame;

/// The generated `ticker.v1` messages (and, with `grpc`, services).
pub mod v1 {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/ticker.v1.rs"));
}

/// The encoded `FileDescriptorSet` of `ticker.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ticker_v1_descriptor.bin"));
