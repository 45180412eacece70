//! [`DeflateConfig`]: whether and how the WebSocket server compresses (RFC 7692).

/// How outgoing market data is compressed once permessage-deflate is negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeflateMode {
    /// Each update is deflated once, with no context takeover and a 15-bit window, and the
    /// very same compressed payload is written to every subscriber that negotiated
    /// permessage-deflate with a 15-bit server window. The server announces
    /// `server_no_context_takeover`. Cheapest in CPU and memory.
    #[default]
    Shared,
    /// Each connection keeps its own sliding window across messages (context takeover, unless
    /// the client asks otherwise): about 5x fewer bytes on market data, for about 320 KiB of
    /// zlib-rs state per connection and one compression per message per connection.
    PerConnection,
}

/// The permessage-deflate configuration of a WebSocket server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Accept permessage-deflate offers at all. Default `true`.
    pub enabled: bool,
    /// Default [`DeflateMode::Shared`].
    pub mode: DeflateMode,
    /// zlib compression level 0..=9 of per-connection compressors. Default [`DEFAULT_LEVEL`].
    /// The shared compressor always uses [`SHARED_LEVEL`], so that one compressed payload
    /// serves every connection.
    pub level: u32,
    /// The largest LZ77 window (base-2 log, 9..=15) the server compresses with. Below 15 it is
    /// announced in every answer. Default 15.
    pub server_max_window_bits: u8,
    /// Cap on the inflated size of one incoming compressed message; a message that inflates
    /// past it closes the connection with 1009. Default 1 MiB, the server's message-size limit.
    pub max_inflated_message: usize,
}

/// The default level of per-connection compressors. Measured on the simulator's BTC-USD
/// market data (`servers/examples/deflate_sizes.rs`): level 1 costs about 1 µs of CPU per
/// message for 13% of the raw size, level 6 about 7 µs for 10%; per-connection cost is paid
/// per connection, so the cheap level wins.
pub const DEFAULT_LEVEL: u32 = 1;

/// The level of the shared compressor ([`super::deflate_shared`]): its cost is paid once per
/// message for all connections, so it compresses harder (61% of a ticker's raw size against
/// 72% at level 1).
pub const SHARED_LEVEL: u32 = 6;

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: DeflateMode::Shared,
            level: DEFAULT_LEVEL,
            server_max_window_bits: 15,
            max_inflated_message: 1 << 20,
        }
    }
}

/// A [`DeflateConfig`] field out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeflateConfigError {
    #[error("deflate level {0} is out of range 0..=9")]
    Level(u32),
    /// zlib's raw deflate has no 8-bit window, so 8 cannot be configured (a client may still
    /// ask for 8: see `negotiate`).
    #[error("server_max_window_bits {0} is out of range 9..=15")]
    ServerMaxWindowBits(u8),
    #[error("max_inflated_message must be at least 1 byte")]
    MaxInflatedMessage,
}

impl DeflateConfig {
    /// Checks every field's range; the server calls this once when it loads its config.
    pub fn validate(&self) -> Result<(), DeflateConfigError> {
        if self.level > 9 {
            return Err(DeflateConfigError::Level(self.level));
        }
        if !(9..=15).contains(&self.server_max_window_bits) {
            return Err(DeflateConfigError::ServerMaxWindowBits(
                self.server_max_window_bits,
            ));
        }
        if self.max_inflated_message == 0 {
            return Err(DeflateConfigError::MaxInflatedMessage);
        }
        Ok(())
    }
}
