//! The cheap subscriber of `fanout` mode: a WebSocket client that counts whole frames without
//! inflating or parsing them, so one load-tool process can hold thousands of connections and
//! still measure what the server sends rather than its own decoding. It answers pings (or the
//! server would close it) and stops at a close frame. Which connections are counted this way
//! and which are fully verified is stated in the report.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Totals over every counting connection, sampled by the orchestrator.
#[derive(Debug, Default)]
pub struct Totals {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    /// Connections that have sent `subscribe` and received its reply.
    pub subscribed: AtomicU64,
    /// Connections the server closed, with the last close code seen.
    pub closed: AtomicU64,
    pub last_close_code: AtomicU64,
}

/// Frame-boundary tracking across reads.
#[derive(Debug, Default)]
pub struct FrameCounter {
    /// Bytes of the current frame's header read so far (a header may span reads).
    header: Vec<u8>,
    /// Payload bytes still to skip.
    remaining: u64,
    /// The payload of a control frame being collected (ping → pong, close → code).
    control: Option<(u8, Vec<u8>)>,
}

/// What a chunk of bytes contained.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    pub data_frames: u64,
    pub pings: Vec<Vec<u8>>,
    pub close: Option<u16>,
}

impl FrameCounter {
    /// Walks the frames in `bytes` (server frames: unmasked).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Chunk {
        let mut out = Chunk::default();
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining as usize).min(bytes.len());
                if let Some((_, payload)) = &mut self.control {
                    payload.extend_from_slice(&bytes[..n]);
                }
                self.remaining -= n as u64;
                bytes = &bytes[n..];
                if self.remaining == 0 {
                    self.finish_control(&mut out);
                }
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            let Some((opcode, fin, len)) = parse_header(&self.header) else {
                continue;
            };
            self.header.clear();
            if opcode >= 0x8 {
                self.control = Some((opcode, Vec::with_capacity(len as usize)));
            } else if fin {
                out.data_frames += 1;
            }
            self.remaining = len;
            if len == 0 {
                self.finish_control(&mut out);
            }
        }
        out
    }

    fn finish_control(&mut self, out: &mut Chunk) {
        match self.control.take() {
            Some((0x9, payload)) => out.pings.push(payload),
            Some((0x8, payload)) => {
                out.close = Some(match payload.as_slice() {
                    [a, b, ..] => u16::from_be_bytes([*a, *b]),
                    _ => 1005,
                })
            }
            _ => {}
        }
    }
}

/// (opcode, FIN, payload length) once `h` holds a whole header.
fn parse_header(h: &[u8]) -> Option<(u8, bool, u64)> {
    if h.len() < 2 {
        return None;
    }
    let fin = h[0] & 0x80 != 0;
    let opcode = h[0] & 0x0f;
    let masked = h[1] & 0x80 != 0;
    let mask = if masked { 4 } else { 0 };
    let (len, need) = match h[1] & 0x7f {
        126 => (None, 4),
        127 => (None, 10),
        n => (Some(n as u64), 2),
    };
    if h.len() < need + mask {
        return None;
    }
    let len = len.unwrap_or_else(|| {
        h[2..need]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    });
    Some((opcode, fin, len))
}

/// A masked client frame with FIN set (the key needs no secrecy for a benchmark).
fn client_frame(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    ticker_servers::ws::frame::client_frame(0x80 | opcode, payload, key).to_vec()
}

/// Connects, subscribes with `subscribe` (the JSON op) and counts frames until `stop`.
/// The first two data frames (`hello`, `subscribed`) are not counted as market data.
/// `connecting` is held until the subscribe is sent, to bound the connections opening at once.
pub async fn run(
    addr: SocketAddr,
    offer: Option<&str>,
    subscribe: String,
    key: [u8; 4],
    totals: Arc<Totals>,
    connecting: tokio::sync::OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(offer) = offer {
        request.push_str(&format!("Sec-WebSocket-Extensions: {offer}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let body_start = loop {
        let n = tcp.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "connection closed during the handshake");
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        anyhow::ensure!(head.len() < 16 * 1024, "handshake answer too long");
    };
    anyhow::ensure!(
        head.starts_with(b"HTTP/1.1 101"),
        "upgrade refused: {}",
        String::from_utf8_lossy(&head[..body_start])
            .lines()
            .next()
            .unwrap_or("")
    );
    tcp.write_all(&client_frame(0x1, subscribe.as_bytes(), key))
        .await?;
    drop(connecting);
    let mut counter = FrameCounter::default();
    let mut preamble = 2u64;
    let mut account = |chunk: Chunk, bytes: usize, totals: &Totals| -> Chunk {
        let skip = preamble.min(chunk.data_frames);
        if preamble > 0 && skip == preamble {
            totals.subscribed.fetch_add(1, Ordering::Relaxed);
        }
        preamble -= skip;
        totals
            .frames
            .fetch_add(chunk.data_frames - skip, Ordering::Relaxed);
        totals.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        chunk
    };
    let first = counter.feed(&head[body_start..]);
    let mut chunk = account(first, head.len() - body_start, &totals);
    loop {
        for ping in chunk.pings.drain(..) {
            tcp.write_all(&client_frame(0xA, &ping, key)).await?;
        }
        if let Some(code) = chunk.close {
            totals.closed.fetch_add(1, Ordering::Relaxed);
            totals.last_close_code.store(code.into(), Ordering::Relaxed);
            return Ok(());
        }
        let n = tokio::select! {
            _ = stop.changed() => return Ok(()),
            n = tcp.read(&mut buf) => n?,
        };
        if n == 0 {
            totals.closed.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        chunk = account(counter.feed(&buf[..n]), n, &totals);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = client_frame(opcode, payload, [0; 4]);
        // Unmask: clear the mask bit and drop the (zero) key.
        f[1] &= 0x7f;
        let key_at = match f[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        f.drain(key_at..key_at + 4);
        f
    }

    #[test]
    fn counts_frames_split_anywhere_across_reads() {
        let mut stream = Vec::new();
        stream.extend(server_frame(0x1, b"hello"));
        stream.extend(server_frame(0x1, &[b'x'; 300]));
        stream.extend(server_frame(0x1, &vec![b'y'; 70_000]));
        stream.extend(server_frame(0x9, b"pp"));
        stream.extend(server_frame(0x1, b""));
        for split in [1, 2, 3, 7, 100, 4096] {
            let mut c = FrameCounter::default();
            let mut total = Chunk::default();
            for part in stream.chunks(split) {
                let chunk = c.feed(part);
                total.data_frames += chunk.data_frames;
                total.pings.extend(chunk.pings);
            }
            assert_eq!(total.data_frames, 4, "split {split}");
            assert_eq!(total.pings, vec![b"pp".to_vec()], "split {split}");
        }
    }

    #[test]
    fn a_close_frame_reports_its_code() {
        let mut c = FrameCounter::default();
        let chunk = c.feed(&server_frame(0x8, &[0x03, 0xF5, b'x']));
        assert_eq!(chunk.close, Some(1013));
    }

    #[test]
    fn client_frames_are_masked() {
        let f = client_frame(0x1, b"abc", [1, 2, 3, 4]);
        assert_eq!(f[0], 0x81);
        assert_eq!(f[1], 0x80 | 3);
        assert_eq!(&f[6..], &[b'a' ^ 1, b'b' ^ 2, b'c' ^ 3]);
    }
}
