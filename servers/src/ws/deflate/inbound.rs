//! The inbound side of permessage-deflate as a pure state machine on bytes: RFC 6455 frames
//! from the peer go in, frames tungstenite can parse come out.
//!
//! tungstenite rejects any frame with RSV1 set, so compressed messages must be inflated
//! before its parser sees them. [`InboundInflater`] parses the peer's frames and
//! - passes every uncompressed frame through byte for byte (control frames too, at once);
//! - collects the fragments of a compressed message (RSV1 on its first frame), inflating each
//!   piece as it arrives without buffering the compressed bytes, and emits the message as ONE
//!   final frame with RSV1 clear — masked with a zero key in the server role (tungstenite
//!   insists a client's frames are masked), unmasked in the client role;
//! - records the first protocol violation as a [`Violation`] (close code and reason) and stops:
//!   RSV1 on a control or continuation frame or without negotiation, RSV2/RSV3, reserved
//!   opcodes, bad masking for the role, broken fragmentation, control frames that are
//!   fragmented or longer than 125 bytes (1002); invalid deflate data (1007); a message that
//!   inflates past the cap, or compressed data larger than the cap could ever need (1009).
//!
//! Memory stays bounded: input is consumed only while the pending output is below
//! [`OUTPUT_HIGH_WATER`], so pending output never exceeds that plus one message (at most the
//! cap) plus one input chunk.

use super::message::{InflateError, MessageInflater};
use super::negotiate::Negotiated;
use bytes::{Buf, BytesMut};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::Role;

/// Input is not consumed while this much output waits to be read.
pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// Longest reason a close frame can carry (125 bytes of payload minus the code).
const MAX_REASON: usize = 123;

/// Why the connection must be closed, as the peer will be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub code: CloseCode,
    pub reason: String,
}

impl Violation {
    fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Self { code, reason }
    }

    fn protocol(reason: impl Into<String>) -> Self {
        Self::new(CloseCode::Protocol, reason)
    }

    /// The close frame to send.
    pub fn close_frame(&self) -> CloseFrame {
        CloseFrame {
            code: self.code,
            reason: self.reason.clone().into(),
        }
    }
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;

#[derive(Debug)]
enum State {
    /// Collecting a frame header (`header_len` bytes so far).
    Header,
    /// Copying the payload of an uncompressed frame through.
    Passthrough { remaining: u64 },
    /// Inflating the payload of a frame of a compressed message.
    Compressed {
        remaining: u64,
        mask: Option<[u8; 4]>,
        offset: usize,
        fin: bool,
    },
    /// Dropping the rest of a frame's payload (closing: see [`InboundInflater::begin_closing`]).
    Skip { remaining: u64 },
    /// A violation was recorded; nothing more is consumed.
    Failed,
}

#[derive(Debug)]
enum MessageState {
    /// Between messages.
    Idle,
    /// Inside an uncompressed fragmented message.
    Plain,
    /// Inside a compressed message: its opcode and the inflated bytes so far.
    Compressed {
        opcode: u8,
        inflated: Vec<u8>,
        compressed_len: u64,
    },
}

/// The frame-level state machine; see the module documentation.
#[derive(Debug)]
pub struct InboundInflater {
    role: Role,
    /// `None` when permessage-deflate was not negotiated: RSV1 is then a violation.
    inflater: Option<MessageInflater>,
    header: [u8; 14],
    header_len: usize,
    state: State,
    message: MessageState,
    out: BytesMut,
    /// Unmasked compressed bytes on their way to the inflater.
    scratch: Vec<u8>,
    violation: Option<Violation>,
    /// Where the frames still are after a violation inside a payload: the bytes left of the
    /// frame it happened in (`None`: a bad header, so no frame boundary can be trusted).
    frame_rest_at_failure: Option<u64>,
    /// After the server's close: frames are parsed only to find the peer's close frame.
    closing: bool,
    peer_closed: bool,
}

/// Parsed fields of a frame header.
struct Header {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
}

impl InboundInflater {
    /// A machine for the frames the peer of `role` sends (a server reads a client's masked
    /// frames), inflating per `negotiated`.
    pub fn new(role: Role, negotiated: Option<&Negotiated>) -> Self {
        let inflater = negotiated.map(|n| match role {
            Role::Server => MessageInflater::for_server(n),
            Role::Client => MessageInflater::for_client(n),
        });
        Self {
            role,
            inflater,
            header: [0; 14],
            header_len: 0,
            state: State::Header,
            message: MessageState::Idle,
            out: BytesMut::new(),
            scratch: Vec::new(),
            violation: None,
            frame_rest_at_failure: None,
            closing: false,
            peer_closed: false,
        }
    }

    /// After the server sent its close frame: from here on every frame is dropped unread
    /// (nothing more is inflated or output) until the peer's close frame, which
    /// [`peer_closed`](Self::peer_closed) then reports. `false` when the frame boundaries are
    /// lost (the peer broke a frame header): the caller can only drop bytes until EOF.
    pub fn begin_closing(&mut self) -> bool {
        self.out.clear();
        self.message = MessageState::Idle;
        self.closing = true;
        self.state = match self.state {
            State::Header => State::Header,
            State::Passthrough { remaining }
            | State::Compressed { remaining, .. }
            | State::Skip { remaining } => State::Skip { remaining },
            State::Failed => match self.frame_rest_at_failure {
                Some(remaining) => State::Skip { remaining },
                None => return false,
            },
        };
        true
    }

    /// The peer's close frame has arrived (closing only).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// The first violation, once recorded.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Bytes ready for tungstenite.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Marks `n` output bytes as read.
    pub fn consume(&mut self, n: usize) {
        self.out.advance(n);
    }

    /// Moves up to `dst.len()` output bytes into `dst`.
    pub fn read_output(&mut self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.out.len());
        dst[..n].copy_from_slice(&self.out[..n]);
        self.out.advance(n);
        n
    }

    /// Feeds bytes from the peer and returns how many were consumed: all of them, unless
    /// output reached [`OUTPUT_HIGH_WATER`] (read it and feed the rest) or a violation was
    /// recorded (nothing more is consumed).
    pub fn feed(&mut self, input: &[u8]) -> usize {
        let mut pos = 0;
        while pos < input.len() && self.out.len() < OUTPUT_HIGH_WATER && !self.peer_closed {
            let rest = &input[pos..];
            pos += match self.state {
                State::Failed => break,
                State::Skip { remaining } => {
                    let n = rest
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::Header
                    } else {
                        State::Skip { remaining }
                    };
                    n
                }
                State::Header => self.feed_header(rest),
                State::Passthrough { remaining } => {
                    let n = rest
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    self.out.extend_from_slice(&rest[..n]);
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::Header
                    } else {
                        State::Passthrough { remaining }
                    };
                    n
                }
                State::Compressed { .. } => self.feed_compressed(rest),
            };
        }
        pos
    }

    fn fail(&mut self, violation: Violation) {
        self.violation.get_or_insert(violation);
        self.state = State::Failed;
    }

    fn feed_header(&mut self, input: &[u8]) -> usize {
        let mut taken = 0;
        loop {
            let needed = self.header_needed();
            if self.header_len >= needed {
                break;
            }
            let Some(&b) = input.get(taken) else {
                return taken;
            };
            self.header[self.header_len] = b;
            self.header_len += 1;
            taken += 1;
        }
        let header = self.parse_header();
        self.header_len = 0;
        self.start_frame(header);
        taken
    }

    /// Header length known so far: 2 until the second byte is in.
    fn header_needed(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        let b1 = self.header[1];
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
    }

    fn parse_header(&self) -> (Header, u8) {
        let (b0, b1) = (self.header[0], self.header[1]);
        let (len, mut at) = match b1 & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                4,
            ),
            127 => {
                let mut be = [0; 8];
                be.copy_from_slice(&self.header[2..10]);
                (u64::from_be_bytes(be), 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = (b1 & 0x80 != 0).then(|| {
            let m = [
                self.header[at],
                self.header[at + 1],
                self.header[at + 2],
                self.header[at + 3],
            ];
            at += 4;
            m
        });
        debug_assert_eq!(at, self.header_len);
        (
            Header {
                fin: b0 & 0x80 != 0,
                rsv1: b0 & 0x40 != 0,
                opcode: b0 & 0x0f,
                mask,
                len,
            },
            b0 & 0x30,
        )
    }

    fn start_frame(&mut self, (h, rsv23): (Header, u8)) {
        if self.closing {
            // Only the peer's close frame matters now; its payload is not needed.
            self.peer_closed = h.opcode == 0x8;
            self.state = State::Skip { remaining: h.len };
            return;
        }
        if let Err(v) = self.check_frame(&h, rsv23) {
            return self.fail(v);
        }
        let compressed = match (h.opcode, &self.message) {
            // Control frames (checked above) pass through at once, also between fragments.
            (op, _) if op >= 0x8 => false,
            (OP_CONTINUATION, MessageState::Compressed { .. }) => true,
            (OP_CONTINUATION, _) => {
                if h.fin {
                    self.message = MessageState::Idle;
                }
                false
            }
            (opcode, _) if h.rsv1 => {
                self.message = MessageState::Compressed {
                    opcode,
                    inflated: Vec::new(),
                    compressed_len: 0,
                };
                true
            }
            _ => {
                self.message = if h.fin {
                    MessageState::Idle
                } else {
                    MessageState::Plain
                };
                false
            }
        };
        if compressed {
            self.state = State::Compressed {
                remaining: h.len,
                mask: h.mask,
                offset: 0,
                fin: h.fin,
            };
            if h.len == 0 {
                self.end_compressed_frame(h.fin);
            }
        } else {
            self.out
                .extend_from_slice(&self.header[..self.header_needed_for(&h)]);
            self.state = if h.len == 0 {
                State::Header
            } else {
                State::Passthrough { remaining: h.len }
            };
        }
    }

    /// Length of the header just parsed (the buffer still holds it).
    fn header_needed_for(&self, h: &Header) -> usize {
        let ext = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + if h.mask.is_some() { 4 } else { 0 }
    }

    fn check_frame(&self, h: &Header, rsv23: u8) -> Result<(), Violation> {
        if rsv23 != 0 {
            return Err(Violation::protocol(
                "RSV2/RSV3 set; no extension defines them",
            ));
        }
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(Violation::protocol("client frame is not masked")),
            (Role::Client, true) => return Err(Violation::protocol("server frame is masked")),
            _ => {}
        }
        if h.len >> 63 != 0 {
            return Err(Violation::protocol(
                "frame length has its most significant bit set",
            ));
        }
        match h.opcode {
            0x8..=0xa => {
                if h.rsv1 {
                    return Err(Violation::protocol("RSV1 set on a control frame"));
                }
                if !h.fin {
                    return Err(Violation::protocol("fragmented control frame"));
                }
                if h.len > 125 {
                    return Err(Violation::protocol("control frame longer than 125 bytes"));
                }
            }
            OP_CONTINUATION => {
                if h.rsv1 {
                    return Err(Violation::protocol("RSV1 set on a continuation frame"));
                }
                if matches!(self.message, MessageState::Idle) {
                    return Err(Violation::protocol(
                        "continuation frame with no message to continue",
                    ));
                }
            }
            OP_TEXT | OP_BINARY => {
                if !matches!(self.message, MessageState::Idle) {
                    return Err(Violation::protocol(
                        "new data frame before the previous message ended",
                    ));
                }
                if h.rsv1 && self.inflater.is_none() {
                    return Err(Violation::protocol(
                        "RSV1 set but permessage-deflate was not negotiated",
                    ));
                }
            }
            op => return Err(Violation::protocol(format!("reserved opcode {op:#x}"))),
        }
        Ok(())
    }

    fn feed_compressed(&mut self, input: &[u8]) -> usize {
        let State::Compressed {
            remaining,
            mask,
            offset,
            fin,
        } = self.state
        else {
            return 0;
        };
        let n = input
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        self.scratch.clear();
        self.scratch.extend_from_slice(&input[..n]);
        if let Some(mask) = mask {
            for (i, b) in self.scratch.iter_mut().enumerate() {
                *b ^= mask[(offset + i) % 4];
            }
        }
        let (
            Some(inflater),
            MessageState::Compressed {
                inflated,
                compressed_len,
                ..
            },
        ) = (self.inflater.as_mut(), &mut self.message)
        else {
            // start_frame only enters State::Compressed with both present.
            self.fail(Violation::protocol(
                "compressed frame outside a compressed message",
            ));
            return n;
        };
        *compressed_len += n as u64;
        // deflate expands incompressible data by well under 1%: compressed input beyond this
        // cannot be a message within the cap, and would otherwise be read forever (empty
        // blocks inflate to nothing).
        let cap = inflater.cap() as u64;
        if *compressed_len > cap + cap / 64 + 1024 {
            self.frame_rest_at_failure = Some(remaining - n as u64);
            self.fail(Violation::new(
                CloseCode::Size,
                format!("compressed message longer than the {cap}-byte limit allows"),
            ));
            return n;
        }
        if let Err(e) = inflater.push(&self.scratch, inflated) {
            self.frame_rest_at_failure = Some(remaining - n as u64);
            self.fail(inflate_violation(e));
            return n;
        }
        let remaining = remaining - n as u64;
        self.state = State::Compressed {
            remaining,
            mask,
            offset: (offset + n) % 4,
            fin,
        };
        if remaining == 0 {
            self.end_compressed_frame(fin);
        }
        n
    }

    fn end_compressed_frame(&mut self, fin: bool) {
        self.state = State::Header;
        if !fin {
            return;
        }
        let MessageState::Compressed {
            opcode,
            mut inflated,
            ..
        } = std::mem::replace(&mut self.message, MessageState::Idle)
        else {
            return;
        };
        let Some(inflater) = self.inflater.as_mut() else {
            return;
        };
        if let Err(e) = inflater.finish(&mut inflated) {
            self.frame_rest_at_failure = Some(0);
            return self.fail(inflate_violation(e));
        }
        self.emit(opcode, &inflated);
    }

    /// One final frame with RSV1 clear, masked with a zero key for a server (so the payload
    /// is unchanged).
    fn emit(&mut self, opcode: u8, payload: &[u8]) {
        let masked = matches!(self.role, Role::Server);
        let mask_bit = if masked { 0x80 } else { 0 };
        self.out.reserve(14 + payload.len());
        self.out.extend_from_slice(&[0x80 | opcode]);
        let len = payload.len();
        if len < 126 {
            self.out.extend_from_slice(&[mask_bit | len as u8]);
        } else if let Ok(len) = u16::try_from(len) {
            self.out.extend_from_slice(&[mask_bit | 126]);
            self.out.extend_from_slice(&len.to_be_bytes());
        } else {
            self.out.extend_from_slice(&[mask_bit | 127]);
            self.out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if masked {
            self.out.extend_from_slice(&[0; 4]);
        }
        self.out.extend_from_slice(payload);
    }
}

fn inflate_violation(e: InflateError) -> Violation {
    match e {
        InflateError::TooLarge { cap } => Violation::new(
            CloseCode::Size,
            format!("compressed message inflates past the {cap}-byte limit"),
        ),
        InflateError::Corrupt(why) => Violation::new(
            CloseCode::Invalid,
            format!("invalid compressed data: {why}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::deflate::{DeflateConfig, DeflateMode, MessageDeflater};

    /// A frame as a peer would send it: masked with a fixed key when `mask` (client → server).
    fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
        let mask_bit = if mask { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                f.push(mask_bit | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(mask_bit | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if mask {
            let key = [0x37, 0xfa, 0x21, 0x3d];
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        f
    }

    /// What the machine emits for an inflated message in the server role.
    fn emitted(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut m = InboundInflater::new(Role::Server, None);
        m.emit(opcode, payload);
        m.output().to_vec()
    }

    fn negotiated(client_no_context_takeover: bool) -> Negotiated {
        let config = DeflateConfig {
            mode: DeflateMode::PerConnection,
            max_inflated_message: 4096,
            ..Default::default()
        };
        let offer = if client_no_context_takeover {
            "permessage-deflate; client_no_context_takeover"
        } else {
            "permessage-deflate"
        };
        crate::ws::deflate::negotiate(&[offer], &config)
            .unwrap()
            .unwrap()
    }

    fn server(n: Option<&Negotiated>) -> InboundInflater {
        InboundInflater::new(Role::Server, n)
    }

    /// Feeds everything (draining as it goes) and returns the output.
    fn run(m: &mut InboundInflater, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            pos += m.feed(&input[pos..]);
            out.extend_from_slice(m.output());
            let n = m.output().len();
            m.consume(n);
            if pos == input.len() || m.violation().is_some() {
                return out;
            }
        }
    }

    const HELLO: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    #[test]
    fn compressed_single_frame_becomes_one_plain_masked_frame() {
        let n = negotiated(false);
        let out = run(
            &mut server(Some(&n)),
            &frame(true, true, OP_TEXT, HELLO, true),
        );
        assert_eq!(out, emitted(OP_TEXT, b"Hello"));
        assert_eq!(&out[..6], &[0x81, 0x85, 0, 0, 0, 0]);
    }

    #[test]
    fn client_role_sees_unmasked_frames_and_emits_unmasked() {
        let n = negotiated(false);
        let mut m = InboundInflater::new(Role::Client, Some(&n));
        let out = run(&mut m, &frame(true, true, OP_BINARY, HELLO, false));
        assert_eq!(out, [&[0x82, 0x05][..], b"Hello"].concat());
    }

    #[test]
    fn uncompressed_frames_pass_through_unchanged() {
        let n = negotiated(false);
        let input = [
            frame(true, false, OP_TEXT, b"plain", true),
            frame(false, false, OP_BINARY, &[1; 300], true),
            frame(true, false, 0x9, b"ping", true),
            frame(true, false, OP_CONTINUATION, &[2; 70_000], true),
            frame(true, false, 0x8, &[0x03, 0xe8], true),
        ]
        .concat();
        assert_eq!(run(&mut server(Some(&n)), &input), input);
        // And without negotiation.
        assert_eq!(run(&mut server(None), &input), input);
    }

    #[test]
    fn fragmented_compressed_message_with_control_frames_between() {
        let n = negotiated(false);
        let ping = frame(true, false, 0x9, b"p1", true);
        let pong = frame(true, false, 0xa, b"p2", true);
        let input = [
            frame(false, true, OP_TEXT, &HELLO[..2], true),
            ping.clone(),
            frame(false, false, OP_CONTINUATION, &HELLO[2..5], true),
            pong.clone(),
            frame(true, false, OP_CONTINUATION, &HELLO[5..], true),
        ]
        .concat();
        let expected = [ping, pong, emitted(OP_TEXT, b"Hello")].concat();
        assert_eq!(run(&mut server(Some(&n)), &input), expected);
    }

    #[test]
    fn empty_fragments_and_empty_messages() {
        let n = negotiated(false);
        let input = [
            // The RFC's empty message.
            frame(true, true, OP_TEXT, &[0x00], true),
            // A compressed message with an empty first fragment.
            frame(false, true, OP_BINARY, &[], true),
            frame(true, false, OP_CONTINUATION, HELLO, true),
            // A compressed message with no payload at all.
            frame(true, true, OP_TEXT, &[], true),
        ]
        .concat();
        let expected = [
            emitted(OP_TEXT, b""),
            emitted(OP_BINARY, b"Hello"),
            emitted(OP_TEXT, b""),
        ]
        .concat();
        assert_eq!(run(&mut server(Some(&n)), &input), expected);
    }

    fn compressed_stream(n: &Negotiated, messages: &[&[u8]]) -> Vec<u8> {
        let mut deflater = MessageDeflater::for_client(n);
        messages
            .iter()
            .flat_map(|m| frame(true, true, OP_TEXT, &deflater.compress(m), true))
            .collect()
    }

    #[test]
    fn context_takeover_over_several_messages() {
        for no_takeover in [false, true] {
            let n = negotiated(no_takeover);
            let messages: [&[u8]; 4] = [b"Hello", b"Hello", b"", b"Hello, Hello"];
            let input = compressed_stream(&n, &messages);
            let expected: Vec<u8> = messages.iter().flat_map(|m| emitted(OP_TEXT, m)).collect();
            assert_eq!(run(&mut server(Some(&n)), &input), expected);
        }
        // The RFC's back-reference example only inflates with the first message's context.
        let n = negotiated(false);
        let input = [
            frame(true, true, OP_TEXT, HELLO, true),
            frame(true, true, OP_TEXT, &[0xf2, 0x00, 0x11, 0x00, 0x00], true),
        ]
        .concat();
        assert_eq!(
            run(&mut server(Some(&n)), &input),
            [emitted(OP_TEXT, b"Hello"), emitted(OP_TEXT, b"Hello")].concat()
        );
    }

    #[test]
    fn split_reads_at_every_byte_boundary_give_the_same_output() {
        let n = negotiated(false);
        let big: Vec<u8> = (0..1000u32)
            .flat_map(|i| i.to_string().into_bytes())
            .collect();
        let mut deflater = MessageDeflater::for_client(&n);
        let big_z = deflater.compress(&big);
        let input = [
            frame(true, false, OP_TEXT, b"plain", true),
            frame(false, true, OP_BINARY, &big_z[..big_z.len() / 2], true),
            frame(true, false, 0x9, b"ping", true),
            frame(
                true,
                false,
                OP_CONTINUATION,
                &big_z[big_z.len() / 2..],
                true,
            ),
            frame(true, true, OP_TEXT, &deflater.compress(b"after"), true),
        ]
        .concat();
        let mut m = server(Some(&n));
        let whole = run(&mut m, &input);
        assert_eq!(m.violation(), None);
        for split in 0..=input.len() {
            let mut m = server(Some(&n));
            let mut out = run(&mut m, &input[..split]);
            out.extend(run(&mut m, &input[split..]));
            assert_eq!(out, whole, "split at {split}");
        }
        // And one byte at a time.
        let mut m = server(Some(&n));
        let out: Vec<u8> = input
            .iter()
            .flat_map(|b| run(&mut m, std::slice::from_ref(b)))
            .collect();
        assert_eq!(out, whole);
        assert_eq!(m.violation(), None);
    }

    fn violation(m: &mut InboundInflater, input: &[u8]) -> (CloseCode, String) {
        run(m, input);
        let v = m.violation().expect("a violation").clone();
        (v.code, v.reason)
    }

    #[test]
    fn rsv1_on_control_or_continuation_frames_is_a_protocol_error() {
        let n = negotiated(false);
        let (code, reason) = violation(&mut server(Some(&n)), &frame(true, true, 0x9, b"", true));
        assert_eq!(
            (code, reason.as_str()),
            (CloseCode::Protocol, "RSV1 set on a control frame")
        );
        let input = [
            frame(false, true, OP_TEXT, &HELLO[..3], true),
            frame(true, true, OP_CONTINUATION, &HELLO[3..], true),
        ]
        .concat();
        let (code, reason) = violation(&mut server(Some(&n)), &input);
        assert_eq!(
            (code, reason.as_str()),
            (CloseCode::Protocol, "RSV1 set on a continuation frame")
        );
        // Also on the continuation of an uncompressed message.
        let input = [
            frame(false, false, OP_TEXT, b"a", true),
            frame(true, true, OP_CONTINUATION, b"b", true),
        ]
        .concat();
        assert_eq!(
            violation(&mut server(Some(&n)), &input).0,
            CloseCode::Protocol
        );
    }

    #[test]
    fn rsv1_without_negotiation_is_a_protocol_error_and_earlier_frames_still_come_out() {
        let plain = frame(true, false, OP_TEXT, b"ok", true);
        let input = [
            plain.clone(),
            frame(true, true, OP_TEXT, HELLO, true),
            frame(true, false, OP_TEXT, b"never", true),
        ]
        .concat();
        let mut m = server(None);
        assert_eq!(run(&mut m, &input), plain);
        let v = m.violation().unwrap();
        assert_eq!(
            (v.code, v.reason.as_str()),
            (
                CloseCode::Protocol,
                "RSV1 set but permessage-deflate was not negotiated"
            )
        );
        // Nothing more is consumed.
        assert_eq!(m.feed(b"\x81\x80"), 0);
    }

    #[test]
    fn framing_errors_are_protocol_errors() {
        let n = negotiated(false);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                frame(true, false, OP_TEXT, b"x", false),
                "client frame is not masked",
            ),
            (frame(true, false, 0x3, b"x", true), "reserved opcode 0x3"),
            (frame(true, false, 0xb, b"x", true), "reserved opcode 0xb"),
            (
                [0xa1, 0x80, 0, 0, 0, 0].to_vec(),
                "RSV2/RSV3 set; no extension defines them",
            ),
            (
                frame(false, false, 0x9, b"x", true),
                "fragmented control frame",
            ),
            (
                frame(true, false, 0x9, &[0; 126], true),
                "control frame longer than 125 bytes",
            ),
            (
                frame(true, false, OP_CONTINUATION, b"x", true),
                "continuation frame with no message to continue",
            ),
            (
                [
                    frame(false, true, OP_TEXT, &HELLO[..2], true),
                    frame(true, false, OP_TEXT, b"x", true),
                ]
                .concat(),
                "new data frame before the previous message ended",
            ),
            (
                [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4].to_vec(),
                "frame length has its most significant bit set",
            ),
        ];
        for (input, reason) in cases {
            let (code, got) = violation(&mut server(Some(&n)), &input);
            assert_eq!((code, got.as_str()), (CloseCode::Protocol, reason));
        }
        let (code, reason) = violation(
            &mut InboundInflater::new(Role::Client, Some(&n)),
            &frame(true, false, OP_TEXT, b"x", true),
        );
        assert_eq!(
            (code, reason.as_str()),
            (CloseCode::Protocol, "server frame is masked")
        );
    }

    #[test]
    fn bomb_is_a_1009_and_output_stays_bounded() {
        let n = negotiated(true); // cap 4096
        let bomb = MessageDeflater::new(15, true, 9).compress(&vec![b'a'; 1 << 20]);
        let mut m = server(Some(&n));
        let out = run(&mut m, &frame(true, true, OP_TEXT, &bomb, true));
        assert!(out.is_empty());
        let v = m.violation().unwrap();
        assert_eq!(v.code, CloseCode::Size);
        assert_eq!(
            v.reason,
            "compressed message inflates past the 4096-byte limit"
        );
        // Exactly the cap passes.
        let exact = MessageDeflater::new(15, true, 9).compress(&[b'a'; 4096]);
        let out = run(
            &mut server(Some(&n)),
            &frame(true, true, OP_TEXT, &exact, true),
        );
        assert_eq!(out, emitted(OP_TEXT, &[b'a'; 4096]));
    }

    #[test]
    fn closing_after_a_violation_inside_a_payload_finds_the_peers_close_frame() {
        let n = negotiated(true); // cap 4096
        let bomb = MessageDeflater::new(15, true, 9).compress(&vec![b'a'; 1 << 20]);
        let (first, rest) = bomb.split_at(bomb.len() / 2);
        let mut input = frame(false, true, OP_TEXT, first, true);
        input.extend(frame(true, false, OP_CONTINUATION, rest, true));
        input.extend(frame(true, false, 0x9, b"ping", true));
        let close = frame(true, false, 0x8, &1009u16.to_be_bytes(), true);
        input.extend(&close);
        input.extend(b"after");
        let mut m = server(Some(&n));
        let mut pos = m.feed(&input);
        assert_eq!(m.violation().unwrap().code, CloseCode::Size);
        assert!(m.begin_closing(), "the frame boundaries are known");
        // Fed in small steps, as reads arrive.
        while !m.peer_closed() && pos < input.len() {
            let end = (pos + 7).min(input.len());
            pos += m.feed(&input[pos..end]);
        }
        assert!(m.peer_closed());
        assert!(m.output().is_empty(), "nothing is output while closing");
        let close_header = input.len() - b"after".len() - close.len() + 6;
        assert_eq!(pos, close_header, "consumed up to the close frame's header");
    }

    #[test]
    fn closing_mid_message_drops_its_frames_and_a_broken_header_loses_the_boundaries() {
        let mut m = server(None);
        let mut input = frame(false, false, OP_TEXT, &[b'x'; 300], true);
        input.extend(frame(true, false, OP_CONTINUATION, &[b'y'; 300], true));
        input.extend(frame(true, false, 0x8, &[], true));
        let pos = m.feed(&input[..100]);
        assert_eq!(pos, 100);
        assert!(m.begin_closing());
        m.feed(&input[pos..]);
        assert!(m.peer_closed());
        assert!(m.output().is_empty());

        // RSV2 set: the header is not one to trust, so neither is any length after it.
        let mut m = server(None);
        m.feed(&[0xa1, 0x80, 0, 0, 0, 0]);
        assert!(m.violation().is_some());
        assert!(!m.begin_closing());
    }

    #[test]
    fn endless_compressed_input_that_inflates_to_nothing_is_a_1009() {
        let n = negotiated(true); // cap 4096
                                  // Empty stored blocks: five bytes each, no output.
        let empties: Vec<u8> = std::iter::repeat_n([0x00, 0x00, 0x00, 0xff, 0xff], 2000)
            .flatten()
            .collect();
        let (code, _) = violation(
            &mut server(Some(&n)),
            &frame(true, true, OP_BINARY, &empties, true),
        );
        assert_eq!(code, CloseCode::Size);
    }

    #[test]
    fn corrupt_compressed_data_is_a_1007() {
        let n = negotiated(false);
        let (code, reason) = violation(
            &mut server(Some(&n)),
            &frame(true, true, OP_TEXT, &[0xff, 0xff, 0xff], true),
        );
        assert_eq!(code, CloseCode::Invalid);
        assert!(reason.starts_with("invalid compressed data"), "{reason}");
    }

    #[test]
    fn many_small_messages_in_one_chunk_are_consumed_in_steps() {
        let n = negotiated(false);
        let body = vec![b'z'; 4000];
        let messages: Vec<&[u8]> = (0..100).map(|_| &body[..]).collect();
        let input = compressed_stream(&n, &messages);
        let mut m = server(Some(&n));
        let first = m.feed(&input);
        assert!(
            first < input.len(),
            "consumed all {first} of {}",
            input.len()
        );
        assert!(m.output().len() < OUTPUT_HIGH_WATER + 4096 + 14);
        let mut out = m.output().to_vec();
        m.consume(out.len());
        out.extend(run(&mut m, &input[first..]));
        let expected: Vec<u8> = messages.iter().flat_map(|b| emitted(OP_TEXT, b)).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn violation_reason_fits_a_close_frame() {
        let v = Violation::new(CloseCode::Protocol, "é".repeat(100));
        assert!(v.reason.len() <= MAX_REASON);
        assert_eq!(v.close_frame().code, CloseCode::Protocol);
    }
}
