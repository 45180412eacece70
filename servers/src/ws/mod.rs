//! The WebSocket front's transport: permessage-deflate ([`deflate`]), the socket adapter that
//! inflates incoming compressed messages ([`stream`]), the server handshake ([`handshake`]) and a
//! client on the same stack for tests and the load tool ([`client`]), and an echo server on it ([`echo`]).

pub mod client;
pub mod deflate;
pub mod echo;
pub mod handshake;
pub mod stream;
