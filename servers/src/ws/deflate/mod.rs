//! permessage-deflate (RFC 7692) for the WebSocket server, which tungstenite does not
//! implement.
//!
//! Pure pieces, tested on bytes, and the glue the socket adapter needs:
//! - [`extensions`]: the `Sec-WebSocket-Extensions` grammar (RFC 6455 §9.1).
//! - [`negotiate`]: offers to [`Negotiated`] parameters and the server's answer.
//! - [`config`]: [`DeflateConfig`] and [`DeflateMode`] (shared or per-connection compression).

pub mod config;
pub mod extensions;
pub mod negotiate;

pub use config::{DeflateConfig, DeflateConfigError, DeflateMode, DEFAULT_LEVEL};
