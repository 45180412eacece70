//! Everything a connection sends goes through one bounded queue of [`Outbound`] items and one
//! writer task, which turns each item into a WebSocket message with the connection's
//! [`Encoder`] — the one place where a message's bytes are chosen, so that compression plugs
//! in here — and writes them in queue order, flushing once per batch.

use super::deflate::{compressed_message, Compressor, Negotiated};
use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, Utf8Bytes};

/// One item for the writer.
#[derive(Debug)]
pub enum Outbound {
    /// A feeds message (market data or an order update), shared with every subscriber.
    Feed(Arc<ticker_feeds::Message>),
    /// One of the server's own JSON messages (replies, `hello`, `gap`, `error`).
    Reply(Bytes),
    Ping(Bytes),
    /// The last item: the writer sends it and stops.
    Close(CloseFrame),
}

/// Bytes the WebSocket front wrote, for `/metrics`: payloads before and after compression.
#[derive(Debug, Default)]
pub struct WireStats {
    pub messages: AtomicU64,
    /// JSON payload bytes before compression.
    pub raw_bytes: AtomicU64,
    /// Payload bytes as written (compressed where negotiated); frame headers excluded.
    pub wire_bytes: AtomicU64,
    /// Messages sent compressed.
    pub compressed_messages: AtomicU64,
}

/// Turns outgoing JSON into WebSocket messages for one connection: an uncompressed text
/// message on the very bytes it was given, or a compressed one — deflated once for every
/// connection in shared mode, or with this connection's own window.
pub struct Encoder {
    compressor: Compressor,
    stats: Arc<WireStats>,
}

impl Encoder {
    pub fn new(negotiated: Option<&Negotiated>, stats: Arc<WireStats>) -> Self {
        Encoder {
            compressor: Compressor::new(negotiated),
            stats,
        }
    }

    /// A feeds message: its JSON bytes (or their shared deflated form), not copied.
    pub fn feed(&mut self, message: &ticker_feeds::Message) -> Message {
        let compressed = self.compressor.compress_feed(message);
        self.finish(message.json().clone(), compressed)
    }

    pub fn reply(&mut self, json: Bytes) -> Message {
        let compressed = self.compressor.compress(&json);
        self.finish(json, compressed)
    }

    fn finish(&self, json: Bytes, compressed: Option<Bytes>) -> Message {
        let s = &self.stats;
        s.messages.fetch_add(1, Ordering::Relaxed);
        s.raw_bytes.fetch_add(json.len() as u64, Ordering::Relaxed);
        match compressed {
            Some(z) => {
                s.wire_bytes.fetch_add(z.len() as u64, Ordering::Relaxed);
                s.compressed_messages.fetch_add(1, Ordering::Relaxed);
                compressed_message(z)
            }
            None => {
                s.wire_bytes.fetch_add(json.len() as u64, Ordering::Relaxed);
                text(json)
            }
        }
    }
}

/// A text message on `json` without copying it (the UTF-8 check reads it once).
fn text(json: Bytes) -> Message {
    match Utf8Bytes::try_from(json.clone()) {
        Ok(text) => Message::Text(text),
        // The feeds and the replies only ever write UTF-8; should that break, the client
        // still gets valid text rather than nothing.
        Err(_) => Message::Text(String::from_utf8_lossy(&json).into_owned().into()),
    }
}

/// Writes the queue to `sink` until a [`Outbound::Close`] is written, the queue's senders are
/// all gone, or a write stalls longer than `write_timeout` (a client that does not read):
/// then the writer stops and drops its half of the socket.
pub async fn write<S>(
    mut sink: S,
    mut queue: mpsc::Receiver<Outbound>,
    mut encoder: Encoder,
    write_timeout: Duration,
) where
    S: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        // Everything already queued goes out in one flush.
        while let Some(item) = next.take() {
            let (message, last) = match item {
                Outbound::Feed(m) => (encoder.feed(&m), false),
                Outbound::Reply(json) => (encoder.reply(json), false),
                Outbound::Ping(payload) => (Message::Ping(payload), false),
                Outbound::Close(frame) => (Message::Close(Some(frame)), true),
            };
            if !matches!(
                tokio::time::timeout(write_timeout, sink.feed(message)).await,
                Ok(Ok(()))
            ) {
                return;
            }
            if last {
                let _ = tokio::time::timeout(write_timeout, sink.flush()).await;
                return;
            }
            next = queue.try_recv().ok();
        }
        if !matches!(
            tokio::time::timeout(write_timeout, sink.flush()).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_message_is_sent_on_its_own_bytes() {
        let json = Bytes::from_static(br#"{"type":"ticker"}"#);
        let message = ticker_feeds::Message::encoded(
            1,
            0,
            ticker_feeds::MessageKind::Update,
            json.clone(),
            Bytes::new(),
        );
        let stats = Arc::new(WireStats::default());
        let Message::Text(text) = Encoder::new(None, stats.clone()).feed(&message) else {
            panic!("a text message")
        };
        let sent: Bytes = text.into();
        assert_eq!(sent, json);
        // The same allocation: the bytes were shared, not copied.
        assert_eq!(sent.as_ptr(), json.as_ptr());
        assert_eq!(stats.wire_bytes.load(Ordering::Relaxed), json.len() as u64);
    }

    #[test]
    fn shared_mode_deflates_a_feed_message_once_for_every_connection() {
        let message = ticker_feeds::Message::encoded(
            1,
            0,
            ticker_feeds::MessageKind::Update,
            Bytes::from_static(br#"{"type":"ticker","bid":"100.00","ask":"100.01"}"#),
            Bytes::new(),
        );
        let shared = crate::ws::deflate::Negotiated {
            server_no_context_takeover: true,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: None,
            mode: crate::ws::deflate::DeflateMode::Shared,
            level: crate::ws::deflate::DEFAULT_LEVEL,
            max_inflated_message: 1 << 20,
        };
        let stats = Arc::new(WireStats::default());
        let payload = |m: Message| match m {
            Message::Frame(f) => {
                assert!(f.header().rsv1, "compressed frames carry RSV1");
                f.into_payload()
            }
            other => panic!("a compressed frame, got {other:?}"),
        };
        let a = payload(Encoder::new(Some(&shared), stats.clone()).feed(&message));
        let b = payload(Encoder::new(Some(&shared), stats.clone()).feed(&message));
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "one deflated payload for both connections"
        );
        assert_eq!(stats.compressed_messages.load(Ordering::Relaxed), 2);
        assert!(stats.wire_bytes.load(Ordering::Relaxed) < stats.raw_bytes.load(Ordering::Relaxed));
    }
}
