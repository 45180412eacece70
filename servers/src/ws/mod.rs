//! The WebSocket front of tickerd: the JSON protocol of docs/websocket.md on `/ws`, and the
//! trader page on `/`, on one HTTP port (8080 by default).
//!
//! - [`server`] — [`WsConfig`] and [`WsServer`]: the listener and the connection count.
//! - [`http`] — routes: the embedded page, `/ws` upgrades, 404s and 503s.
//! - [`session`] — one connection: commands in, exactly one reply each, subscriptions
//!   forwarded from the feeds hub, pings and the idle timeout.
//! - [`protocol`] — client messages read strictly, every bad field named; [`replies`] — the
//!   server's own messages.
//! - [`writer`] — the writer tasks, each owning the sending side of many connections: market
//!   data read once per topic and written with one vectored write per connection;
//!   [`outgoing`] — what a session queues for its writer, and where each message's bytes are
//!   chosen: raw, deflated once for every client (shared) or per connection; [`frame`] — the
//!   frames as bytes, built once per message; [`socket`] — the socket as the session reads it.
//! - [`limits`] — [`WsLimits`] and the rate limiter.
//!
//! The transport below the session: permessage-deflate ([`deflate`], RFC 7692), the socket
//! adapter that inflates incoming compressed messages ([`stream`]), the server handshake
//! ([`handshake`]), a client on the same stack for tests and the load tool ([`client`]), and an
//! echo server on it ([`echo`]).

pub mod client;
pub mod deflate;
pub mod echo;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod limits;
pub mod outgoing;
pub mod protocol;
pub mod replies;
pub mod server;
pub mod session;
pub mod socket;
pub mod stream;
pub mod writer;

pub use limits::WsLimits;
pub use server::{WsConfig, WsError, WsServer};
