//! What a connection sends, in the order its session decides: the [`Outbound`] items a session
//! queues for its connection's writer ([`super::writer`]), the [`Encoder`] that chooses each
//! message's bytes — the one place where compression plugs in — and the [`WireStats`] of what
//! was written.
//!
//! Market data does not pass through a session: the session hands its subscriptions to the
//! writer ([`Outbound::Subscribe`]), which reads them where the feeds publish and frames each
//! message once for every connection.

use super::deflate::{deflate_shared, Compressor, Negotiated};
use super::frame::{self, COMPRESSED_TEXT, TEXT};
use super::protocol::{ChannelKey, ChannelSpec};
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use ticker_feeds::{Message, Subscription};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;

/// One item for a connection's writer, written in queue order.
#[derive(Debug)]
pub enum Outbound {
    /// One of the server's own JSON messages (replies, `hello`, `error`).
    Reply(Bytes),
    Ping(Bytes),
    /// Starts delivering `feeds`, after stopping any feed with the same key and writing
    /// `reply` (`subscribed`): a restarted channel's old messages all precede the reply, and
    /// every new one follows it.
    Subscribe {
        feeds: Vec<Feed>,
        reply: Bytes,
    },
    /// Stops the feeds with these keys, then writes `reply` (`unsubscribed`): nothing of them
    /// follows it.
    Unsubscribe {
        keys: Vec<ChannelKey>,
        reply: Bytes,
    },
    /// The last item: every feed stops, the close frame is written and nothing after it.
    Close(CloseFrame),
}

/// A subscription handed to the writer, with the channel it was asked as (for close reasons
/// and `gap` messages).
pub struct Feed {
    pub spec: ChannelSpec,
    pub sub: Subscription,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("channel", &self.spec.label())
            .finish_non_exhaustive()
    }
}

impl Feed {
    pub fn key(&self) -> ChannelKey {
        self.spec.key()
    }
}

/// How a connection's stream ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Send a close frame with this code and reason, then wait for the client's.
    Close(CloseCode, String),
    /// The client is gone or cannot be written to: nothing more to send.
    Gone,
}

/// Bytes one writer wrote, for `/metrics`: payloads before and after compression. Each
/// writer keeps its own (one batch, one add), and the scrape sums them.
#[derive(Debug, Default)]
pub struct WireStats {
    pub messages: AtomicU64,
    /// JSON payload bytes before compression.
    pub raw_bytes: AtomicU64,
    /// Payload bytes as written (compressed where negotiated); frame headers excluded.
    pub wire_bytes: AtomicU64,
    /// Messages sent compressed.
    pub compressed_messages: AtomicU64,
    /// Vectored writes to sockets: messages per write is how well writes are batched.
    pub writes: AtomicU64,
}

/// Counts of one batch, added to a [`WireStats`] at once.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WireCounts {
    pub messages: u64,
    pub raw_bytes: u64,
    pub wire_bytes: u64,
    pub compressed_messages: u64,
    pub writes: u64,
}

impl WireCounts {
    /// One data frame carrying `raw` JSON bytes as `frame_len` bytes on the wire.
    fn count(&mut self, raw: usize, frame: &[u8]) {
        let payload = frame.len() - frame::header_len_of(frame);
        self.messages += 1;
        self.raw_bytes += raw as u64;
        self.wire_bytes += payload as u64;
        if frame[0] == COMPRESSED_TEXT {
            self.compressed_messages += 1;
        }
    }

    pub fn add(&mut self, other: WireCounts) {
        self.messages += other.messages;
        self.raw_bytes += other.raw_bytes;
        self.wire_bytes += other.wire_bytes;
        self.compressed_messages += other.compressed_messages;
        self.writes += other.writes;
    }
}

impl WireStats {
    pub fn add(&self, c: WireCounts) {
        if c.writes == 0 && c.messages == 0 {
            return;
        }
        self.writes.fetch_add(c.writes, Ordering::Relaxed);
        self.messages.fetch_add(c.messages, Ordering::Relaxed);
        self.raw_bytes.fetch_add(c.raw_bytes, Ordering::Relaxed);
        self.wire_bytes.fetch_add(c.wire_bytes, Ordering::Relaxed);
        self.compressed_messages
            .fetch_add(c.compressed_messages, Ordering::Relaxed);
    }

    pub fn get(&self) -> WireCounts {
        WireCounts {
            messages: self.messages.load(Ordering::Relaxed),
            raw_bytes: self.raw_bytes.load(Ordering::Relaxed),
            wire_bytes: self.wire_bytes.load(Ordering::Relaxed),
            compressed_messages: self.compressed_messages.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }
}

/// A feeds message's frame for one connection: shared with every connection, or its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedFrame<'m> {
    Shared(&'m Bytes),
    Own(Bytes),
}

impl FeedFrame<'_> {
    pub fn bytes(&self) -> &Bytes {
        match self {
            FeedFrame::Shared(b) => b,
            FeedFrame::Own(b) => b,
        }
    }
}

/// Turns outgoing JSON into WebSocket frames for one connection: an uncompressed text frame, or
/// a compressed one — deflated once for every connection in shared mode, or with this
/// connection's own window. A feeds message's frame is built once for every connection that
/// shares it (see [`frame`]).
pub struct Encoder {
    compressor: Compressor,
}

impl Encoder {
    pub fn new(negotiated: Option<&Negotiated>) -> Self {
        Encoder {
            compressor: Compressor::new(negotiated),
        }
    }

    /// A feeds message's frame; counted in `counts`.
    pub fn feed<'m>(&mut self, message: &'m Message, counts: &mut WireCounts) -> FeedFrame<'m> {
        let frame = match &mut self.compressor {
            Compressor::Plain => FeedFrame::Shared(frame::text(message)),
            Compressor::Shared => FeedFrame::Shared(frame::shared_deflated(message)),
            Compressor::Own(deflater) => FeedFrame::Own(frame::frame(
                COMPRESSED_TEXT,
                &deflater.compress(message.json()),
            )),
        };
        counts.count(message.json().len(), frame.bytes());
        frame
    }

    /// One of the server's own messages as a frame; counted in `counts`.
    pub fn reply(&mut self, json: &[u8], counts: &mut WireCounts) -> Bytes {
        let frame = match &mut self.compressor {
            Compressor::Plain => frame::frame(TEXT, json),
            Compressor::Shared => frame::frame(COMPRESSED_TEXT, &deflate_shared(json)),
            Compressor::Own(deflater) => frame::frame(COMPRESSED_TEXT, &deflater.compress(json)),
        };
        counts.count(json.len(), &frame);
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::deflate::{DeflateMode, MessageInflater, DEFAULT_LEVEL};
    use ticker_feeds::MessageKind;

    fn ticker() -> std::sync::Arc<Message> {
        Message::encoded(
            1,
            0,
            MessageKind::Update,
            Bytes::from_static(br#"{"type":"ticker","bid":"100.00","ask":"100.01"}"#),
            Bytes::new(),
        )
    }

    fn negotiated(mode: DeflateMode) -> Negotiated {
        Negotiated {
            server_no_context_takeover: mode == DeflateMode::Shared,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: None,
            mode,
            level: DEFAULT_LEVEL,
            max_inflated_message: 1 << 20,
        }
    }

    #[test]
    fn a_feed_message_is_one_frame_shared_by_every_plain_connection() {
        let message = ticker();
        let mut counts = WireCounts::default();
        let a = Encoder::new(None).feed(&message, &mut counts);
        let b = Encoder::new(None).feed(&message, &mut counts);
        assert_eq!(a.bytes().as_ptr(), b.bytes().as_ptr(), "the same frame");
        assert_eq!(&a.bytes()[2..], &message.json()[..]);
        let json = message.json().len() as u64;
        assert_eq!(
            counts,
            WireCounts {
                messages: 2,
                raw_bytes: 2 * json,
                wire_bytes: 2 * json,
                compressed_messages: 0,
                writes: 0
            }
        );
    }

    #[test]
    fn shared_mode_deflates_and_frames_a_feed_message_once_for_every_connection() {
        let message = ticker();
        let shared = negotiated(DeflateMode::Shared);
        let mut counts = WireCounts::default();
        let a = Encoder::new(Some(&shared)).feed(&message, &mut counts);
        let b = Encoder::new(Some(&shared)).feed(&message, &mut counts);
        let FeedFrame::Shared(frame) = a else {
            panic!("a shared frame")
        };
        assert_eq!(frame.as_ptr(), b.bytes().as_ptr());
        assert_eq!(frame[0], COMPRESSED_TEXT, "RSV1 set");
        assert_eq!(counts.compressed_messages, 2);
        assert!(counts.wire_bytes < counts.raw_bytes);
    }

    #[test]
    fn per_connection_mode_compresses_with_the_connections_own_window() {
        let message = ticker();
        let own = negotiated(DeflateMode::PerConnection);
        let mut encoder = Encoder::new(Some(&own));
        let mut inflater = MessageInflater::new(15, false, 1 << 20);
        let mut counts = WireCounts::default();
        let mut sizes = Vec::new();
        for _ in 0..2 {
            let FeedFrame::Own(frame) = encoder.feed(&message, &mut counts) else {
                panic!("a frame of its own")
            };
            assert_eq!(frame[0], COMPRESSED_TEXT);
            assert_eq!(
                inflater.inflate_message(&frame[2..]).unwrap(),
                &message.json()[..]
            );
            sizes.push(frame.len());
        }
        assert!(sizes[1] < sizes[0], "the second refers back: {sizes:?}");
    }
}
