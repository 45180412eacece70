//! Compressing and inflating whole messages (RFC 7692 §7.2): raw deflate, sync-flushed, with
//! the `00 00 ff ff` tail removed on the way out and appended on the way in.
//!
//! - [`MessageDeflater`]: one side's compressor, honouring the negotiated window and context
//!   takeover.
//! - [`deflate_shared`]: the shared mode's compressor: no context takeover and a 15-bit window,
//!   so one output is valid for every connection; `ws::frame::shared_deflated` frames it once
//!   per hub message, for every connection.
//! - [`MessageInflater`]: the receiving side, with a hard cap on the inflated size that it
//!   never allocates past (a deflate bomb stops at the cap).
//! - [`compressed_message`]: a tungstenite frame with RSV1 set around a compressed payload.

use super::negotiate::Negotiated;
use super::SHARED_LEVEL;
use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::cell::RefCell;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

/// What a sync flush ends with (§7.2.1): removed from every compressed message by the sender,
/// appended again by the receiver (§7.2.2).
pub const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The compressed form of the empty message (§7.2.3.6): one empty stored block without its
/// tail. An empty payload would not do: with the tail appended it is the start of a stored
/// block whose length is cut off.
const EMPTY_MESSAGE: &[u8] = &[0x00];

/// One side's compressor for a connection's outgoing messages.
pub struct MessageDeflater {
    compress: Compress,
    no_context_takeover: bool,
}

impl std::fmt::Debug for MessageDeflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageDeflater")
            .field("no_context_takeover", &self.no_context_takeover)
            .finish_non_exhaustive()
    }
}

impl MessageDeflater {
    /// A compressor with at most a `window_bits` window (8..=15, clamped) at `level` (0..=9,
    /// clamped), reset after every message when `no_context_takeover`.
    ///
    /// zlib has no 8-bit raw deflate window, so a window of 8 writes stored blocks: deflate that
    /// never refers back at all, valid for any window (see `negotiate` on why 8 is not answered
    /// with 9).
    pub fn new(window_bits: u8, no_context_takeover: bool, level: u32) -> Self {
        let window_bits = window_bits.clamp(8, 15);
        let (level, window_bits) = if window_bits == 8 {
            (Compression::none(), 9)
        } else {
            (Compression::new(level.min(9)), window_bits)
        };
        Self {
            compress: Compress::new_with_window_bits(level, false, window_bits),
            no_context_takeover,
        }
    }

    /// The server's compressor for a connection that negotiated `n`.
    pub fn for_server(n: &Negotiated) -> Self {
        Self::new(
            n.server_window_bits(),
            n.server_no_context_takeover,
            n.level,
        )
    }

    /// The client's compressor (tests and the load tool).
    pub fn for_client(n: &Negotiated) -> Self {
        Self::new(
            n.client_window_bits(),
            n.client_no_context_takeover,
            n.level,
        )
    }

    /// The compressed payload of one message, tail removed, ready for a frame with RSV1.
    pub fn compress(&mut self, payload: &[u8]) -> Bytes {
        if payload.is_empty() {
            // With context takeover zlib would write nothing at all for an empty input after
            // an earlier flush; the empty stored block is what the RFC asks for, and leaves
            // the window as it is.
            return Bytes::from_static(EMPTY_MESSAGE);
        }
        let out = sync_flush(&mut self.compress, payload);
        if self.no_context_takeover {
            self.compress.reset();
        }
        Bytes::from(out)
    }
}

/// Compresses `payload` with a sync flush and strips the tail.
fn sync_flush(compress: &mut Compress, payload: &[u8]) -> Vec<u8> {
    // JSON compresses to well under half; the loop grows the buffer when it does not.
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    let mut input = payload;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
        let before = compress.total_in();
        // A sync flush into a Vec with room cannot fail: zlib reports only stream-state errors
        // here, and this stream is only ever used this way.
        let _ = compress.compress_vec(input, &mut out, FlushCompress::Sync);
        let consumed = (compress.total_in() - before) as usize;
        input = &input[consumed..];
        // Finished when all input is in and zlib stopped with room to spare (so the flush
        // marker is out too).
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&DEFLATE_TAIL) {
        out.truncate(out.len() - DEFLATE_TAIL.len());
    }
    out
}

thread_local! {
    /// The shared mode's compressor: reset after each message, so keeping one per thread
    /// only saves its allocation.
    static SHARED: RefCell<Compress> =
        RefCell::new(Compress::new_with_window_bits(Compression::new(SHARED_LEVEL), false, 15));
}

/// The shared mode's compressed payload for `payload`: no context takeover, 15-bit window,
/// level [`SHARED_LEVEL`], so the same bytes are valid for every connection that left the
/// server a 15-bit window ([`Negotiated::uses_shared_payload`]).
pub fn deflate_shared(payload: &[u8]) -> Bytes {
    if payload.is_empty() {
        return Bytes::from_static(EMPTY_MESSAGE);
    }
    SHARED.with(|c| {
        let mut compress = c.borrow_mut();
        let out = sync_flush(&mut compress, payload);
        compress.reset();
        Bytes::from(out)
    })
}

/// A text message with RSV1 set carrying an already compressed payload; the payload is shared,
/// not copied, until tungstenite writes the frame.
pub fn compressed_message(payload: Bytes) -> tungstenite::Message {
    compressed_frame(payload, Data::Text)
}

/// [`compressed_message`] for a binary message.
pub fn compressed_binary_message(payload: Bytes) -> tungstenite::Message {
    compressed_frame(payload, Data::Binary)
}

fn compressed_frame(payload: Bytes, data: Data) -> tungstenite::Message {
    let header = FrameHeader {
        is_final: true,
        rsv1: true,
        opcode: OpCode::Data(data),
        ..FrameHeader::default()
    };
    tungstenite::Message::Frame(Frame::from_payload(header, payload))
}

/// Why an incoming compressed message could not be inflated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("message inflates to more than {cap} bytes")]
    TooLarge { cap: usize },
    #[error("invalid deflate data: {0}")]
    Corrupt(String),
}

/// The receiving side: inflates a message fed in pieces, into a buffer never larger than
/// the cap.
pub struct MessageInflater {
    decompress: Decompress,
    no_context_takeover: bool,
    cap: usize,
    /// The sender ended the deflate stream (a block with BFINAL set, §7.2.3.5): the rest of
    /// the message is ignored and the inflater starts afresh with the next one.
    stream_ended: bool,
    /// Compressed bytes of the current message, to tell the empty message apart.
    message_input: u64,
}

impl std::fmt::Debug for MessageInflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageInflater")
            .field("no_context_takeover", &self.no_context_takeover)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

/// First allocation for an inflated message; doubled as needed up to the cap.
const FIRST_CHUNK: usize = 4096;

impl MessageInflater {
    /// An inflater for a peer compressing with at most `window_bits` (8..=15; 8 is read with
    /// 9, a larger window reads any smaller one) that resets after every message when
    /// `no_context_takeover`, capping each message at `cap` bytes.
    pub fn new(window_bits: u8, no_context_takeover: bool, cap: usize) -> Self {
        Self {
            decompress: Decompress::new_with_window_bits(false, window_bits.clamp(9, 15)),
            no_context_takeover,
            cap,
            stream_ended: false,
            message_input: 0,
        }
    }

    /// The server's inflater for the client's messages.
    pub fn for_server(n: &Negotiated) -> Self {
        Self::new(
            n.client_window_bits(),
            n.client_no_context_takeover,
            n.max_inflated_message,
        )
    }

    /// The client's inflater for the server's messages.
    pub fn for_client(n: &Negotiated) -> Self {
        Self::new(
            n.server_window_bits(),
            n.server_no_context_takeover,
            n.max_inflated_message,
        )
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Inflates the next piece of the current message's payload, appending to `out` (the
    /// message so far). `out` never grows past `cap + 1` bytes. After an error the message is
    /// abandoned and the inflater starts afresh.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), InflateError> {
        self.message_input += input.len() as u64;
        let result = self.inflate(input, out);
        if result.is_err() {
            self.start_afresh();
        }
        result
    }

    fn start_afresh(&mut self) {
        self.decompress.reset(false);
        self.stream_ended = false;
        self.message_input = 0;
    }

    fn inflate(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), InflateError> {
        // One byte past the cap tells "exactly the cap" from "more".
        let limit = self.cap.saturating_add(1);
        while !self.stream_ended {
            if out.len() == out.capacity() {
                let grow_to = out.capacity().saturating_mul(2).max(FIRST_CHUNK).min(limit);
                out.reserve_exact(grow_to - out.len());
            }
            let (in_before, out_before) = (self.decompress.total_in(), self.decompress.total_out());
            let status = self
                .decompress
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|e| {
                    InflateError::Corrupt(e.message().unwrap_or("corrupt stream").to_string())
                })?;
            let consumed = (self.decompress.total_in() - in_before) as usize;
            let produced = self.decompress.total_out() - out_before;
            input = &input[consumed..];
            if out.len() > self.cap {
                return Err(InflateError::TooLarge { cap: self.cap });
            }
            if status == Status::StreamEnd {
                self.stream_ended = true;
                break;
            }
            let room_left = out.len() < out.capacity();
            if input.is_empty() && room_left {
                // All input taken and zlib stopped before filling the buffer: nothing pending.
                break;
            }
            if consumed == 0 && produced == 0 && room_left {
                // No progress with input and room: zlib cannot go on (cannot happen with a
                // valid stream; guards against a loop).
                return Err(InflateError::Corrupt("inflate made no progress".into()));
            }
        }
        Ok(())
    }

    /// Ends the current message: appends the tail, and resets the window unless context is
    /// taken over to the next message.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), InflateError> {
        // An empty payload is read as the empty message: appending the tail to nothing would
        // leave the inflater inside a stored block header.
        let result = if self.message_input == 0 {
            Ok(())
        } else {
            self.inflate(&DEFLATE_TAIL, out)
        };
        if self.no_context_takeover || self.stream_ended || result.is_err() {
            self.start_afresh();
        }
        self.message_input = 0;
        result
    }

    /// Inflates one whole message.
    pub fn inflate_message(&mut self, payload: &[u8]) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        self.push(payload, &mut out)?;
        self.finish(&mut out)?;
        Ok(out)
    }
}

/// How one server connection compresses what it sends: not at all, with the shared
/// no-context-takeover payloads, or with its own sliding window.
pub enum Compressor {
    Plain,
    Shared,
    Own(MessageDeflater),
}

impl Compressor {
    pub fn new(negotiated: Option<&Negotiated>) -> Self {
        match negotiated {
            None => Self::Plain,
            Some(n) if n.uses_shared_payload() => Self::Shared,
            Some(n) => Self::Own(MessageDeflater::for_server(n)),
        }
    }

    /// The compressed payload of `payload`, or `None` when this connection sends it as is.
    pub fn compress(&mut self, payload: &[u8]) -> Option<Bytes> {
        match self {
            Self::Plain => None,
            Self::Shared => Some(deflate_shared(payload)),
            Self::Own(deflater) => Some(deflater.compress(payload)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::deflate::DEFAULT_LEVEL;

    const HELLO: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    #[test]
    fn hello_compresses_to_the_rfc_bytes() {
        // RFC 7692 §7.2.3.1, at both levels in use.
        for level in [DEFAULT_LEVEL, SHARED_LEVEL] {
            let mut deflater = MessageDeflater::new(15, false, level);
            assert_eq!(&deflater.compress(b"Hello")[..], HELLO, "level {level}");
        }
        assert_eq!(&deflate_shared(b"Hello")[..], HELLO);
    }

    #[test]
    fn hello_inflates_from_the_rfc_bytes() {
        let mut inflater = MessageInflater::new(15, false, 1024);
        assert_eq!(inflater.inflate_message(HELLO).unwrap(), b"Hello");
    }

    #[test]
    fn fragmented_hello_inflates_from_its_pieces() {
        // §7.2.3.1: the same payload split over two frames.
        let mut inflater = MessageInflater::new(15, false, 1024);
        let mut out = Vec::new();
        inflater.push(&[0xf2, 0x48, 0xcd], &mut out).unwrap();
        inflater.push(&[0xc9, 0xc9, 0x07, 0x00], &mut out).unwrap();
        inflater.finish(&mut out).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn second_hello_with_context_takeover_is_the_rfc_back_reference() {
        // §7.2.3.2: the second "Hello" refers to the first. Level 6 writes the RFC's bytes;
        // level 1 (zlib-rs's quick strategy) another encoding of the same back-reference.
        let mut deflater = MessageDeflater::new(15, false, SHARED_LEVEL);
        assert_eq!(&deflater.compress(b"Hello")[..], HELLO);
        assert_eq!(
            &deflater.compress(b"Hello")[..],
            &[0xf2, 0x00, 0x11, 0x00, 0x00]
        );
        let mut quick = MessageDeflater::new(15, false, DEFAULT_LEVEL);
        let mut quick_inflater = MessageInflater::new(15, false, 1024);
        assert_eq!(
            quick_inflater
                .inflate_message(&quick.compress(b"Hello"))
                .unwrap(),
            b"Hello"
        );
        let second = quick.compress(b"Hello");
        assert!(
            second.len() < HELLO.len(),
            "{second:02x?} is no back-reference"
        );
        assert_eq!(quick_inflater.inflate_message(&second).unwrap(), b"Hello");
        let mut inflater = MessageInflater::new(15, false, 1024);
        assert_eq!(inflater.inflate_message(HELLO).unwrap(), b"Hello");
        assert_eq!(
            inflater
                .inflate_message(&[0xf2, 0x00, 0x11, 0x00, 0x00])
                .unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn without_context_takeover_every_message_is_the_same() {
        let mut deflater = MessageDeflater::new(15, true, DEFAULT_LEVEL);
        assert_eq!(&deflater.compress(b"Hello")[..], HELLO);
        assert_eq!(&deflater.compress(b"Hello")[..], HELLO);
    }

    #[test]
    fn no_compression_block_example_inflates() {
        // §7.2.3.3: "Hello" in a stored block.
        let mut inflater = MessageInflater::new(15, false, 1024);
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflater.inflate_message(&stored).unwrap(), b"Hello");
    }

    #[test]
    fn bfinal_block_example_inflates_and_the_next_message_starts_afresh() {
        // §7.2.3.4: "Hello" in a block with BFINAL set.
        let mut inflater = MessageInflater::new(15, false, 1024);
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(inflater.inflate_message(&bfinal).unwrap(), b"Hello");
        assert_eq!(inflater.inflate_message(HELLO).unwrap(), b"Hello");
    }

    #[test]
    fn two_deflate_blocks_example_inflates() {
        // §7.2.3.5: "He" and "llo" in two blocks of one message.
        let mut inflater = MessageInflater::new(15, false, 1024);
        let two_blocks = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(inflater.inflate_message(&two_blocks).unwrap(), b"Hello");
    }

    #[test]
    fn empty_message_is_one_zero_byte_both_ways() {
        // §7.2.3.6.
        let mut deflater = MessageDeflater::new(15, false, DEFAULT_LEVEL);
        let mut inflater = MessageInflater::new(15, false, 1024);
        assert_eq!(&deflater.compress(b"")[..], &[0x00]);
        assert_eq!(&deflate_shared(b"")[..], &[0x00]);
        assert_eq!(inflater.inflate_message(&[0x00]).unwrap(), b"");
        // Context carries on across an empty message in between.
        let first = deflater.compress(b"Hello");
        let empty = deflater.compress(b"");
        let third = deflater.compress(b"Hello");
        for (payload, expected) in [(first, &b"Hello"[..]), (empty, b""), (third, b"Hello")] {
            assert_eq!(inflater.inflate_message(&payload).unwrap(), expected);
        }
        // An empty payload with RSV1 is read as the empty message too.
        assert_eq!(inflater.inflate_message(&[]).unwrap(), b"");
        assert_eq!(inflater.inflate_message(HELLO).unwrap(), b"Hello");
    }

    fn ticker_like(i: u32) -> Vec<u8> {
        format!(
            r#"{{"type":"ticker","instrument":"BTC-USD","seq":{i},"prev_seq":{},"bid":"65000.{:02}","ask":"65000.{:02}"}}"#,
            i.saturating_sub(1),
            i % 100,
            (i + 3) % 100
        )
        .into_bytes()
    }

    #[test]
    fn every_window_and_takeover_round_trips_many_messages() {
        for bits in 8..=15u8 {
            for no_takeover in [false, true] {
                let mut deflater = MessageDeflater::new(bits, no_takeover, DEFAULT_LEVEL);
                let mut inflater = MessageInflater::new(bits, no_takeover, 1 << 20);
                for i in 0..200 {
                    let msg = ticker_like(i);
                    let payload = deflater.compress(&msg);
                    assert_eq!(
                        inflater.inflate_message(&payload).unwrap(),
                        msg,
                        "bits {bits}"
                    );
                }
            }
        }
    }

    #[test]
    fn context_takeover_makes_repeated_messages_smaller() {
        let mut takeover = MessageDeflater::new(15, false, DEFAULT_LEVEL);
        let mut fresh = MessageDeflater::new(15, true, DEFAULT_LEVEL);
        let (mut with, mut without) = (0, 0);
        for i in 1..50 {
            with += takeover.compress(&ticker_like(i)).len();
            without += fresh.compress(&ticker_like(i)).len();
        }
        assert!(with * 2 < without, "takeover {with} vs fresh {without}");
    }

    #[test]
    fn window_of_8_writes_only_stored_blocks() {
        let mut deflater = MessageDeflater::new(8, false, 9);
        let msg = [b'a'; 1000];
        let payload = deflater.compress(&msg);
        // Stored: no smaller than the input.
        assert!(payload.len() > msg.len());
        assert_eq!(
            MessageInflater::new(8, false, 2000)
                .inflate_message(&payload)
                .unwrap(),
            msg
        );
    }

    #[test]
    fn large_message_round_trips() {
        let msg: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let payload = MessageDeflater::new(15, false, 1).compress(&msg);
        assert_eq!(
            MessageInflater::new(15, false, msg.len())
                .inflate_message(&payload)
                .unwrap(),
            msg
        );
    }

    #[test]
    fn bomb_stops_at_the_cap_without_allocating_past_it() {
        let zeros = vec![0u8; 10 << 20];
        let bomb = MessageDeflater::new(15, true, 9).compress(&zeros);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        let cap = 64 * 1024;
        let mut inflater = MessageInflater::new(15, false, cap);
        let mut out = Vec::new();
        assert_eq!(
            inflater.push(&bomb, &mut out),
            Err(InflateError::TooLarge { cap })
        );
        assert!(out.capacity() <= cap + 1, "capacity {}", out.capacity());
        // Exactly the cap is allowed.
        let exact = MessageDeflater::new(15, true, 9).compress(&zeros[..cap]);
        assert_eq!(inflater.inflate_message(&exact).unwrap().len(), cap);
        let over = MessageDeflater::new(15, true, 9).compress(&zeros[..cap + 1]);
        assert_eq!(
            inflater.inflate_message(&over),
            Err(InflateError::TooLarge { cap })
        );
    }

    #[test]
    fn corrupt_data_is_an_error() {
        let mut inflater = MessageInflater::new(15, false, 1024);
        // BTYPE 11 is reserved.
        assert!(matches!(
            inflater.inflate_message(&[0xff, 0xff]),
            Err(InflateError::Corrupt(_))
        ));
        // The inflater is usable again afterwards.
        assert_eq!(inflater.inflate_message(HELLO).unwrap(), b"Hello");
    }

    #[test]
    fn compressed_message_is_a_final_text_frame_with_rsv1_sharing_the_payload() {
        let payload = Bytes::from_static(HELLO);
        let tungstenite::Message::Frame(frame) = compressed_message(payload.clone()) else {
            panic!("not a frame")
        };
        let header = frame.header();
        assert!(header.rsv1 && header.is_final && !header.rsv2 && !header.rsv3);
        assert_eq!(header.opcode, OpCode::Data(Data::Text));
        assert_eq!(frame.payload().as_ptr(), payload.as_ptr());
    }
}
