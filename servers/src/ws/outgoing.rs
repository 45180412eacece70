//! Everything a connection sends goes through one bounded queue of [`Outbound`] items and one
//! writer task, which turns each item into a WebSocket message with the connection's
//! [`Encoder`] — the one place where a message's bytes are chosen, so that compression plugs
//! in here — and writes them in queue order, flushing once per batch.

use bytes::Bytes;
use futures_util::{Sink, SinkExt};
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

/// Turns outgoing JSON into WebSocket messages for one connection. Today every message is an
/// uncompressed text message on the very bytes it was given; a compressing encoder (shared or
/// per-connection deflate) replaces these two methods and nothing else.
#[derive(Debug, Default)]
pub struct Encoder;

impl Encoder {
    /// The encoder of a connection without compression.
    pub fn new() -> Self {
        Encoder
    }

    /// A feeds message: its JSON bytes, shared, not copied.
    pub fn feed(&mut self, message: &ticker_feeds::Message) -> Message {
        text(message.json.clone())
    }

    pub fn reply(&mut self, json: Bytes) -> Message {
        text(json)
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
        let message = ticker_feeds::Message {
            seq: 1,
            prev_seq: 0,
            kind: ticker_feeds::MessageKind::Update,
            json: json.clone(),
            proto: Bytes::new(),
        };
        let Message::Text(text) = Encoder::new().feed(&message) else {
            panic!("a text message")
        };
        let sent: Bytes = text.into();
        assert_eq!(sent, json);
        // The same allocation: the bytes were shared, not copied.
        assert_eq!(sent.as_ptr(), json.as_ptr());
    }
}
