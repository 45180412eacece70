//! The inbound state machine on arbitrary bytes never panics, keeps its pending output
//! bounded, and only ever hands tungstenite frames without RSV1 and no inflated message above
//! the cap.

use std::io::Cursor;
use ticker_servers::ws::deflate::inbound::OUTPUT_HIGH_WATER;
use ticker_servers::ws::deflate::{negotiate, DeflateConfig, InboundInflater};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::Role;

const OFFERS: [&str; 4] = [
    "permessage-deflate",
    "permessage-deflate; client_no_context_takeover",
    "permessage-deflate; client_max_window_bits=9",
    "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8",
];

/// One input; panics on a property that does not hold.
pub fn run(data: &[u8]) {
    let [control, chunking, input @ ..] = data else {
        return;
    };
    let role = if control & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    // A small cap so that bombs are found quickly.
    let cap = 1 + usize::from(control >> 4) * 1024;
    let config = DeflateConfig {
        max_inflated_message: cap,
        ..DeflateConfig::default()
    };
    let negotiated = match (control >> 1) & 7 {
        i @ 0..=3 => negotiate(&[OFFERS[usize::from(i)]], &config).unwrap(),
        _ => None,
    };
    let mut machine = InboundInflater::new(role, negotiated.as_ref());
    let chunk = 1 + usize::from(*chunking);
    let mut output = Vec::new();
    let mut pos = 0;
    while pos < input.len() {
        let end = input.len().min(pos + chunk);
        let consumed = machine.feed(&input[pos..end]);
        let pending = machine.output().len();
        assert!(
            pending <= OUTPUT_HIGH_WATER + cap + 14 + chunk,
            "{pending} bytes pending"
        );
        output.extend_from_slice(machine.output());
        machine.consume(pending);
        if machine.violation().is_some() {
            assert_eq!(machine.feed(&input[pos + consumed..]), 0);
            break;
        }
        assert!(consumed > 0 || pending > 0, "no progress");
        pos += consumed;
    }
    // Every frame handed on has RSV1 clear; inflated messages (which the input cannot contain
    // verbatim when they exceed it) are within the cap.
    let mut cursor = Cursor::new(&output[..]);
    while let Ok(Some((header, len))) = FrameHeader::parse(&mut cursor) {
        assert!(!header.rsv1 && !header.rsv2 && !header.rsv3);
        // The last frame may be a passthrough frame cut short, its length as the peer wrote it.
        let next = cursor.position().saturating_add(len);
        if next > output.len() as u64 {
            break;
        }
        assert!(len as usize <= input.len().max(cap), "{len}-byte frame");
        cursor.set_position(next);
    }
}
