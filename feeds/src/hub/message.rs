//! One update of a topic, shared by its subscribers and encoded at most once per wire format,
//! with the WebSocket frames built from it.

use bytes::Bytes;
use std::sync::{Arc, OnceLock};

/// One update, shared by every subscriber of its topic, and encoded at most once per wire
/// format: the publisher hands over what the update says (`body`) and the first subscriber
/// that needs JSON or protobuf encodes it, for everyone. A topic nobody reads (most of them,
/// most of the time) then costs the feeds thread no encoding at all.
///
/// `Arc<Message>` is `Arc<Message<dyn Encode>>`: each view publishes its own `Sized` body
/// type and the `Arc` coerces, so a message is still one allocation.
pub struct Message<B: ?Sized + Encode = dyn Encode> {
    /// Sequence number of the last engine event this message reflects.
    pub seq: u64,
    /// `seq` of the previous message on the same topic (0 for the first): a subscriber that
    /// sees `prev_seq` differ from the last `seq` it got has a gap.
    pub prev_seq: u64,
    pub kind: MessageKind,
    /// `json()` as WebSocket frames, built once for every connection by the first one that
    /// needs each (the framing and the compressor live in `servers`).
    pub frames: FrameCache,
    json: OnceLock<Bytes>,
    proto: OnceLock<Bytes>,
    body: B,
}

/// What a message says, able to write itself in both wire formats. Implemented by each view's
/// update type; [`Encoded`] holds bytes encoded up front (snapshots, tests).
pub trait Encode: Send + Sync + 'static {
    /// The message as JSON text.
    fn json(&self, seq: u64, prev_seq: u64) -> Bytes;
    /// The message as protobuf: a `ticker.v1.MarketDataMessage` (market data) or
    /// `ticker.v1.OrderUpdate` (order updates) without its per-subscriber fields.
    fn proto(&self, seq: u64, prev_seq: u64) -> Bytes;
}

/// A body already encoded.
pub struct Encoded {
    pub json: Bytes,
    pub proto: Bytes,
}

impl Encode for Encoded {
    fn json(&self, _: u64, _: u64) -> Bytes {
        self.json.clone()
    }

    fn proto(&self, _: u64, _: u64) -> Bytes {
        self.proto.clone()
    }
}

impl Message {
    /// A message whose encodings are made by `body` when first asked for.
    pub fn lazy<B: Encode>(seq: u64, prev_seq: u64, kind: MessageKind, body: B) -> Arc<Message> {
        Arc::new(Message {
            seq,
            prev_seq,
            kind,
            frames: FrameCache::default(),
            json: OnceLock::new(),
            proto: OnceLock::new(),
            body,
        })
    }

    /// A message encoded up front.
    pub fn encoded(
        seq: u64,
        prev_seq: u64,
        kind: MessageKind,
        json: Bytes,
        proto: Bytes,
    ) -> Arc<Message> {
        Arc::new(Message {
            seq,
            prev_seq,
            kind,
            frames: FrameCache::default(),
            json: OnceLock::from(json.clone()),
            proto: OnceLock::from(proto.clone()),
            body: Encoded { json, proto },
        })
    }

    /// The message as JSON text, encoded on first use.
    pub fn json(&self) -> &Bytes {
        self.json
            .get_or_init(|| self.body.json(self.seq, self.prev_seq))
    }

    /// The message as protobuf, encoded on first use: a `ticker.v1.MarketDataMessage` (market
    /// data) or `ticker.v1.OrderUpdate` (order updates) without its per-subscriber fields.
    pub fn proto(&self) -> &Bytes {
        self.proto
            .get_or_init(|| self.body.proto(self.seq, self.prev_seq))
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("seq", &self.seq)
            .field("prev_seq", &self.prev_seq)
            .field("kind", &self.kind)
            .field("json", &self.json.get())
            .finish_non_exhaustive()
    }
}

/// Messages are equal when they say the same thing in both formats (encoding them if needed);
/// the frame cache takes no part.
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
            && self.prev_seq == other.prev_seq
            && self.kind == other.kind
            && self.json() == other.json()
            && self.proto() == other.proto()
    }
}

impl Eq for Message {}

/// A message's WebSocket frames (header and payload in one buffer), each built once and then
/// written to every connection as is: the plain text frame, and the frame of the shared
/// compressor's output (permessage-deflate without context takeover). They are derived from
/// the message, so they take no part in equality.
#[derive(Debug, Default)]
pub struct FrameCache {
    text: OnceLock<Bytes>,
    deflated: OnceLock<Bytes>,
}

impl FrameCache {
    /// The uncompressed frame, built with `build` the first time; concurrent callers wait for
    /// that one build.
    pub fn text(&self, build: impl FnOnce() -> Bytes) -> &Bytes {
        self.text.get_or_init(build)
    }

    /// The shared compressed frame, built with `build` the first time.
    pub fn deflated(&self, build: impl FnOnce() -> Bytes) -> &Bytes {
        self.deflated.get_or_init(build)
    }

    pub fn get_deflated(&self) -> Option<&Bytes> {
        self.deflated.get()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Update,
    /// A full state (depth book, L3 book, latest ticker) a subscriber can start from.
    Snapshot,
}
