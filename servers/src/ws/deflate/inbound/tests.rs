//! The inbound machine on bytes: frames built by hand in, the frames it emits and the
//! violations it records checked.

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
