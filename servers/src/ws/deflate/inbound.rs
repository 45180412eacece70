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

use super::message::MessageInflater;
use super::negotiate::Negotiated;
use bytes::{Buf, BytesMut};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::Role;

mod violation;

use violation::inflate_violation;
pub use violation::Violation;

/// Input is not consumed while this much output waits to be read.
pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;

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

#[cfg(test)]
mod tests;
