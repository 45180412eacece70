//! permessage-deflate end to end: the echo server (`ws::echo`, the stack the real server uses)
//! in-process on 127.0.0.1:0 and the `ws::client` helper, over real sockets.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use ticker_servers::ws::client::{client_handshake, connect, ClientConnection};
use ticker_servers::ws::deflate::{
    compressed_binary_message, compressed_message, DeflateConfig, DeflateMode, MessageDeflater,
};
use ticker_servers::ws::echo::spawn_echo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The client's side: inflates the server's replies up to 8 MiB.
fn client_config() -> DeflateConfig {
    DeflateConfig {
        max_inflated_message: 8 << 20,
        ..DeflateConfig::default()
    }
}

async fn echo_server(mode: DeflateMode) -> SocketAddr {
    let config = DeflateConfig {
        mode,
        max_inflated_message: 4 << 20,
        ..DeflateConfig::default()
    };
    spawn_echo("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

/// Counts the bytes the client reads off the wire.
struct Counting {
    tcp: TcpStream,
    read: Arc<AtomicUsize>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.tcp).poll_read(cx, buf);
        self.read
            .fetch_add(buf.filled().len() - before, Ordering::Relaxed);
        result
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

async fn counting_client(
    addr: SocketAddr,
    offer: Option<&str>,
) -> (ClientConnection<Counting>, Arc<AtomicUsize>) {
    let read = Arc::new(AtomicUsize::new(0));
    let io = Counting {
        tcp: TcpStream::connect(addr).await.unwrap(),
        read: read.clone(),
    };
    let conn = client_handshake(io, &addr.to_string(), "/ws", offer, &client_config(), None)
        .await
        .unwrap();
    (conn, read)
}

async fn next_message<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut ClientConnection<S>,
) -> Message {
    conn.ws.next().await.expect("a message").expect("no error")
}

fn text(len: usize) -> String {
    (0..)
        .map(|i: u32| format!("{{\"seq\":{i},\"price\":\"65000.{:02}\"}}", i % 100))
        .take_while({
            let mut total = 0;
            move |s| {
                total += s.len();
                total <= len
            }
        })
        .collect()
}

#[tokio::test]
async fn compressed_and_plain_messages_round_trip_in_both_modes() {
    for mode in [DeflateMode::Shared, DeflateMode::PerConnection] {
        let addr = echo_server(mode).await;
        let mut conn = connect(addr, "/ws", Some(BROWSER_OFFER), &client_config(), None)
            .await
            .unwrap();
        let n = conn.negotiated.clone().expect("negotiated");
        assert_eq!(n.server_no_context_takeover, mode == DeflateMode::Shared);
        let messages = [
            "Hello".to_string(),
            String::new(),
            text(5_000),
            "Hello".to_string(),
        ];
        for m in &messages {
            let z = conn.deflater.as_mut().unwrap().compress(m.as_bytes());
            conn.ws.send(compressed_message(z)).await.unwrap();
            assert_eq!(
                next_message(&mut conn).await,
                Message::text(m.clone()),
                "{mode:?}"
            );
            // The same message uncompressed on the same connection.
            conn.ws.send(Message::text(m.clone())).await.unwrap();
            assert_eq!(next_message(&mut conn).await, Message::text(m.clone()));
        }
        let binary: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8).collect();
        let z = conn.deflater.as_mut().unwrap().compress(&binary);
        conn.ws.send(compressed_binary_message(z)).await.unwrap();
        assert_eq!(next_message(&mut conn).await, Message::binary(binary));
        conn.ws.close(None).await.unwrap();
    }
}

#[tokio::test]
async fn replies_are_compressed_on_the_wire() {
    let addr = echo_server(DeflateMode::Shared).await;
    let big = text(20_000);
    let (mut conn, read) = counting_client(addr, Some(BROWSER_OFFER)).await;
    let before = read.load(Ordering::Relaxed);
    conn.ws.send(Message::text(big.clone())).await.unwrap();
    assert_eq!(next_message(&mut conn).await, Message::text(big.clone()));
    let compressed = read.load(Ordering::Relaxed) - before;
    assert!(
        compressed * 3 < big.len(),
        "{compressed} bytes on the wire for {}",
        big.len()
    );

    // Declined (no offer): the same message comes back whole.
    let (mut plain, read) = counting_client(addr, None).await;
    assert!(plain.negotiated.is_none() && plain.deflater.is_none());
    let before = read.load(Ordering::Relaxed);
    plain.ws.send(Message::text(big.clone())).await.unwrap();
    assert_eq!(next_message(&mut plain).await, Message::text(big.clone()));
    assert!(read.load(Ordering::Relaxed) - before >= big.len());
}

#[tokio::test]
async fn fragmented_compressed_message_with_a_ping_between_fragments() {
    let addr = echo_server(DeflateMode::PerConnection).await;
    let mut conn = connect(
        addr,
        "/",
        Some("permessage-deflate"),
        &client_config(),
        None,
    )
    .await
    .unwrap();
    let message = text(50_000);
    let z = conn.deflater.as_mut().unwrap().compress(message.as_bytes());
    let pieces: Vec<Bytes> = z
        .chunks(z.len() / 3 + 1)
        .map(Bytes::copy_from_slice)
        .collect();
    for (i, piece) in pieces.iter().enumerate() {
        let (opcode, fin) = (
            if i == 0 { Data::Text } else { Data::Continue },
            i == pieces.len() - 1,
        );
        let mut frame = Frame::message(piece.clone(), OpCode::Data(opcode), fin);
        frame.header_mut().rsv1 = i == 0;
        conn.ws.send(Message::Frame(frame)).await.unwrap();
        if i == 0 {
            conn.ws
                .send(Message::Ping(Bytes::from_static(b"between")))
                .await
                .unwrap();
        }
    }
    // The pong for the ping between fragments comes first, then the echo.
    assert_eq!(
        next_message(&mut conn).await,
        Message::Pong(Bytes::from_static(b"between"))
    );
    assert_eq!(next_message(&mut conn).await, Message::text(message));
}

#[tokio::test]
async fn large_messages_round_trip_with_context_takeover_and_small_windows() {
    let addr = echo_server(DeflateMode::PerConnection).await;
    let offer = "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9";
    let mut conn = connect(addr, "/", Some(offer), &client_config(), None)
        .await
        .unwrap();
    let n = conn.negotiated.clone().unwrap();
    assert_eq!((n.server_window_bits(), n.client_window_bits()), (10, 9));
    let large = text(3 << 20);
    for _ in 0..2 {
        let z = conn.deflater.as_mut().unwrap().compress(large.as_bytes());
        conn.ws.send(compressed_message(z)).await.unwrap();
        assert_eq!(next_message(&mut conn).await, Message::text(large.clone()));
    }
}

#[tokio::test]
async fn eight_bit_server_window_is_honoured_with_stored_blocks() {
    let addr = echo_server(DeflateMode::Shared).await;
    let offer = "permessage-deflate; server_max_window_bits=8";
    let mut conn = connect(addr, "/", Some(offer), &client_config(), None)
        .await
        .unwrap();
    assert_eq!(conn.negotiated.as_ref().unwrap().server_window_bits(), 8);
    let message = text(2_000);
    conn.ws.send(Message::text(message.clone())).await.unwrap();
    assert_eq!(next_message(&mut conn).await, Message::text(message));
}

#[tokio::test]
async fn deflate_bomb_is_closed_with_1009() {
    let addr = echo_server(DeflateMode::Shared).await;
    let mut conn = connect(addr, "/", Some(BROWSER_OFFER), &client_config(), None)
        .await
        .unwrap();
    // 64 MiB of zeros, about 64 KiB compressed at level 9 (a message compressed without
    // context is valid under any takeover); the server's cap is 4 MiB.
    let z = MessageDeflater::new(15, true, 9).compress(&vec![0u8; 64 << 20]);
    assert!(z.len() < 100_000, "{}", z.len());
    conn.ws.send(compressed_message(z)).await.unwrap();
    match next_message(&mut conn).await {
        Message::Close(Some(close)) => {
            assert_eq!(close.code, CloseCode::Size);
            assert_eq!(
                close.reason.as_str(),
                "compressed message inflates past the 4194304-byte limit"
            );
        }
        other => panic!("expected close 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn compressed_message_without_negotiation_is_closed_with_1002() {
    let addr = echo_server(DeflateMode::Shared).await;
    let mut conn = connect(addr, "/", None, &client_config(), None)
        .await
        .unwrap();
    conn.ws
        .send(compressed_message(Bytes::from_static(&[
            0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00,
        ])))
        .await
        .unwrap();
    match next_message(&mut conn).await {
        Message::Close(Some(close)) => assert_eq!(close.code, CloseCode::Protocol),
        other => panic!("expected close 1002, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_offer_is_refused_with_400() {
    let addr = echo_server(DeflateMode::Shared).await;
    let err = connect(
        addr,
        "/",
        Some("permessage-deflate;;"),
        &client_config(),
        None,
    )
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("400"), "{err}");
}
