//! The frames the server writes, as bytes (RFC 6455 §5.2): header and payload in one buffer,
//! built once and written as they are. A server's frames are never masked, never fragmented.
//!
//! A feeds message's frames are built once for every connection and cached on the message
//! ([`text`], [`shared_deflated`]); replies, pings and close frames are built per connection.
//! The writers put these straight into vectored socket writes: nothing is copied per
//! connection.

use super::deflate::deflate_shared;
use bytes::{BufMut, Bytes, BytesMut};
use ticker_feeds::Message;
use tungstenite::protocol::CloseFrame;

/// FIN + text.
pub const TEXT: u8 = 0x81;
/// FIN + RSV1 (permessage-deflate: the payload is compressed) + text.
pub const COMPRESSED_TEXT: u8 = 0xC1;
/// FIN + close.
pub const CLOSE: u8 = 0x88;
/// FIN + ping.
pub const PING: u8 = 0x89;

/// Opcode of a close frame (the low four bits of the first byte).
const CLOSE_OPCODE: u8 = 0x8;

/// The header's length: 2 bytes, plus 2 for payloads of 126..=65535 bytes, plus 8 beyond.
pub fn header_len(payload: usize) -> usize {
    match payload {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    }
}

/// The header's length of a whole frame the server built (unmasked).
pub fn header_len_of(frame: &[u8]) -> usize {
    match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    }
}

fn put_header(out: &mut BytesMut, first: u8, len: usize) {
    out.put_u8(first);
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=0xffff => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
}

/// A whole frame: `first` (FIN, RSV bits and opcode) and `payload`.
pub fn frame(first: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    put_header(&mut out, first, payload.len());
    out.put_slice(payload);
    out.freeze()
}

/// A frame as a client sends it: `first` (FIN, RSV bits and opcode), the mask bit and `key`,
/// and `payload` masked with it (RFC 6455 §5.3; clients must mask, servers must not).
pub fn client_frame(first: u8, payload: &[u8], key: [u8; 4]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(payload.len()) + 4 + payload.len());
    put_header(&mut out, first, payload.len());
    out[1] |= 0x80;
    out.put_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out.freeze()
}

/// A close frame with a code and a reason (cut by the caller to fit a control frame).
pub fn close(close: &CloseFrame) -> Bytes {
    let mut payload = Vec::with_capacity(2 + close.reason.len());
    payload.extend_from_slice(&u16::from(close.code).to_be_bytes());
    payload.extend_from_slice(close.reason.as_bytes());
    frame(CLOSE, &payload)
}

/// The uncompressed text frame of a feeds message, built once for every connection.
pub fn text(message: &Message) -> &Bytes {
    message.frames.text(|| frame(TEXT, message.json()))
}

/// The shared compressor's frame of a feeds message (permessage-deflate, no context takeover,
/// 15-bit window), deflated and framed once for every connection.
pub fn shared_deflated(message: &Message) -> &Bytes {
    message
        .frames
        .deflated(|| frame(COMPRESSED_TEXT, &deflate_shared(message.json())))
}

/// Walks whole frames in `bytes` (as tungstenite writes them: pongs and close answers) and
/// returns the length up to and including the first close frame, if there is one: nothing
/// after a close frame may be sent.
pub fn through_close(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let opcode = bytes[at] & 0x0f;
        let masked = bytes[at + 1] & 0x80 != 0;
        let (len, header) = match bytes[at + 1] & 0x7f {
            126 if at + 4 <= bytes.len() => (
                u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize,
                4,
            ),
            127 if at + 10 <= bytes.len() => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&bytes[at + 2..at + 10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        let end = at + header + if masked { 4 } else { 0 } + len;
        if opcode == CLOSE_OPCODE {
            return Some(end.min(bytes.len()));
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_frame_is_masked_with_its_key() {
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let key = [1, 2, 3, 4];
        let f = client_frame(0x81, &payload, key);
        assert_eq!(&f[..4], &[0x81, 0x80 | 126, 0x01, 0x2c]);
        assert_eq!(&f[4..8], &key);
        let unmasked: Vec<u8> = f[8..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(unmasked, payload);
    }
    use ticker_feeds::MessageKind;
    use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
    use tungstenite::protocol::frame::{Frame, FrameHeader};

    /// The same frame as tungstenite writes it.
    fn tungstenite(first: u8, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            is_final: true,
            rsv1: first & 0x40 != 0,
            opcode: OpCode::Data(Data::Text),
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        Frame::from_payload(header, Bytes::copy_from_slice(payload))
            .format(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn frames_are_what_tungstenite_writes_at_every_length_boundary() {
        for len in [0, 1, 125, 126, 127, 0xffff, 0x10000, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for first in [TEXT, COMPRESSED_TEXT] {
                let ours = frame(first, &payload);
                assert_eq!(&ours[..], &tungstenite(first, &payload)[..], "length {len}");
                assert_eq!(ours.len(), header_len(len) + len);
            }
        }
    }

    #[test]
    fn a_close_frame_carries_its_code_then_its_reason() {
        let f = close(&CloseFrame {
            code: CloseCode::Again,
            reason: "too slow".into(),
        });
        assert_eq!(&f[..], b"\x88\x0a\x03\xf5too slow");
    }

    #[test]
    fn a_message_is_framed_once_for_every_connection() {
        let message = Message::encoded(
            1,
            0,
            MessageKind::Update,
            Bytes::from_static(br#"{"type":"ticker","bid":"100.00","ask":"100.01"}"#),
            Bytes::new(),
        );
        assert_eq!(text(&message).as_ptr(), text(&message).as_ptr());
        assert_eq!(&text(&message)[2..], &message.json()[..]);
        let deflated = shared_deflated(&message);
        assert_eq!(deflated.as_ptr(), shared_deflated(&message).as_ptr());
        assert_eq!(deflated[0], COMPRESSED_TEXT);
        let inflated = crate::ws::deflate::MessageInflater::new(15, true, 1 << 10)
            .inflate_message(&deflated[header_len_of(deflated)..])
            .unwrap();
        assert_eq!(inflated, &message.json()[..]);
    }

    #[test]
    fn tungstenites_own_frames_are_cut_after_a_close() {
        let pong = [0x8a, 0x02, b'h', b'i'];
        let close = [0x88, 0x02, 0x03, 0xe8];
        let mut bytes = pong.to_vec();
        assert_eq!(through_close(&bytes), None);
        bytes.extend_from_slice(&close);
        bytes.extend_from_slice(&pong);
        assert_eq!(through_close(&bytes), Some(8));
        let long_pong: Vec<u8> = [0x8a, 126, 0, 200]
            .into_iter()
            .chain([0; 200])
            .chain(close)
            .collect();
        assert_eq!(through_close(&long_pong), Some(208));
    }
}
