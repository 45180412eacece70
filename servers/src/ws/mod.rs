//! The WebSocket front's transport: permessage-deflate ([`deflate`]).

pub mod deflate;
