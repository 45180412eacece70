//! permessage-deflate (RFC 7692) for the WebSocket server, which tungstenite does not
//! implement.
//!
//! Pure pieces, tested on bytes, and the glue the socket adapter needs:
//! - [`extensions`]: the `Sec-WebSocket-Extensions` grammar (RFC 6455 §9.1).
//! - [`negotiate`]: offers to [`Negotiated`] parameters and the server's answer.
//! - [`config`]: [`DeflateConfig`] and [`DeflateMode`] (shared or per-connection compression).
//! - [`inbound`]: the peer's frames in, tungstenite-readable frames out, compressed messages
//!   inflated; violations recorded with their close code.
//! - [`message`]: whole-message compression and capped inflation, the shared payload cache.

pub mod config;
pub mod extensions;
pub mod inbound;
pub mod message;
pub mod negotiate;

pub use config::{DeflateConfig, DeflateConfigError, DeflateMode, DEFAULT_LEVEL, SHARED_LEVEL};
pub use inbound::{InboundInflater, Violation};
pub use message::{
    compressed_binary_message, compressed_message, deflate_shared, Compressor, InflateError,
    MessageDeflater, MessageInflater, DEFLATE_TAIL,
};
pub use negotiate::{accept_offer, negotiate, AnswerError, Decline, Negotiated, OfferError};
