//! The trivial server of `fanout` mode's calibration: what the load tool itself can count, so
//! that a fan-out figure is known to be the server's and not the tool's.
//!
//! It does the least a fan-out server can: it answers the WebSocket upgrade, sends the two
//! messages the counting clients expect first (`hello`, `subscribed`), then publishes one
//! pre-built frame (of the size measured on the server under test) at a fixed rate to every
//! connection. A few writer tasks each own a share of the sockets and, whenever the rate says
//! more frames are due, write each socket everything it is owed in one write from a buffer of
//! frames built once. No parsing, no compression, no conflation (a socket more than
//! [`MAX_OWED`] frames behind skips ahead).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tungstenite::handshake::derive_accept_key;

/// Frames a connection may be owed before it skips ahead.
const MAX_OWED: u64 = 4096;
/// How often the publisher ticks.
const TICK: Duration = Duration::from_millis(1);

/// A running trivial server.
pub struct TrivialServer {
    pub addr: std::net::SocketAddr,
    /// Frames published so far (to every connection).
    published: Arc<AtomicU64>,
    frame_len: usize,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Shared {
    published: Arc<AtomicU64>,
    tick: Notify,
    /// The same frame, repeated: what any connection is owed is a slice of it.
    frames: Vec<u8>,
    frame_len: usize,
}

struct Conn {
    tcp: TcpStream,
    /// Bytes of the published stream written so far.
    sent: u64,
}

impl TrivialServer {
    /// Starts on its own runtime of `threads` workers with one writer per worker, publishing
    /// `rate` frames a second of `frame_len` bytes each (at least 2).
    pub fn start(rate: f64, frame_len: usize, threads: usize) -> anyhow::Result<TrivialServer> {
        anyhow::ensure!(rate > 0.0, "the trivial server needs a rate above 0");
        let threads = threads.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("trivial-server")
            .enable_all()
            .build()?;
        // A text frame of `frame_len` bytes in all: 2 bytes of header up to 125 bytes of
        // payload, 4 up to 65,535.
        let frame_len = frame_len.clamp(2, 0xffff);
        let mut frame = if frame_len <= 127 {
            vec![0x81, (frame_len - 2) as u8]
        } else {
            let payload = (frame_len - 4).max(126) as u16;
            let mut f = vec![0x81, 126];
            f.extend_from_slice(&payload.to_be_bytes());
            f
        };
        let payload = if frame_len <= 127 {
            frame_len - 2
        } else {
            (frame_len - 4).max(126)
        };
        frame.resize(frame.len() + payload, b'x');
        let frame_len = frame.len();
        let published = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared {
            published: published.clone(),
            tick: Notify::new(),
            frames: frame.repeat(MAX_OWED as usize),
            frame_len,
        });
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let inboxes: Vec<Arc<std::sync::Mutex<Vec<Conn>>>> = (0..threads)
            .map(|_| Arc::new(std::sync::Mutex::new(Vec::new())))
            .collect();
        for inbox in &inboxes {
            runtime.spawn(write(shared.clone(), inbox.clone()));
        }
        runtime.spawn(accept(listener, inboxes));
        runtime.spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                if due > shared.published.load(Ordering::Relaxed) {
                    shared.published.store(due, Ordering::Release);
                    shared.tick.notify_waiters();
                }
            }
        });
        Ok(TrivialServer {
            addr,
            published,
            frame_len,
            runtime: Some(runtime),
        })
    }

    /// Bytes of each frame, header included.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Frames published to each connection so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    pub fn shutdown(mut self) {
        if let Some(r) = self.runtime.take() {
            r.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

async fn accept(listener: TcpListener, inboxes: Vec<Arc<std::sync::Mutex<Vec<Conn>>>>) {
    let mut next = 0;
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let inbox = inboxes[next % inboxes.len()].clone();
        next += 1;
        tokio::spawn(async move {
            if let Ok(tcp) = upgrade(tcp).await {
                inbox
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Conn { tcp, sent: 0 });
            }
        });
    }
}

/// Reads the upgrade request, answers 101 and sends `hello` and `subscribed`.
async fn upgrade(mut tcp: TcpStream) -> std::io::Result<TcpStream> {
    tcp.set_nodelay(true)?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let key = text
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    tcp.write_all(answer.as_bytes()).await?;
    tcp.write_all(b"\x81\x05hello\x81\x0asubscribed").await?;
    Ok(tcp)
}

/// One writer: whenever frames are due, each of its sockets gets what it is owed in one write.
async fn write(shared: Arc<Shared>, inbox: Arc<std::sync::Mutex<Vec<Conn>>>) {
    let len = shared.frame_len as u64;
    let mut conns: Vec<Conn> = Vec::new();
    loop {
        let tick = shared.tick.notified();
        let published = shared.published.load(Ordering::Acquire);
        let due = published * len;
        // A new connection starts with the next frame published.
        for mut c in inbox.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            c.sent = due;
            conns.push(c);
        }
        conns.retain_mut(|c| {
            if c.sent % len == 0 && due - c.sent > MAX_OWED * len {
                c.sent = due - MAX_OWED * len;
            }
            let offset = (c.sent % len) as usize;
            let owed = ((due - c.sent) as usize).min(shared.frames.len() - offset);
            if owed == 0 {
                return true;
            }
            match c.tcp.try_write(&shared.frames[offset..offset + owed]) {
                Ok(n) => {
                    c.sent += n as u64;
                    true
                }
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            }
        });
        tick.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::frame_count::FrameCounter;

    #[test]
    fn it_sends_hello_subscribed_then_whole_frames_of_the_size_asked() {
        for len in [2, 100, 127, 130, 221, 1000] {
            let server = TrivialServer::start(1000.0, len, 1).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut tcp = TcpStream::connect(server.addr).await.unwrap();
                tcp.write_all(
                    b"GET /ws HTTP/1.1\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                )
                .await
                .unwrap();
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    head.push(tcp.read_u8().await.unwrap());
                }
                assert!(head.starts_with(b"HTTP/1.1 101"), "length {len}");
                let mut preamble = [0u8; 19];
                tcp.read_exact(&mut preamble).await.unwrap();
                let mut frame = vec![0u8; len];
                tcp.read_exact(&mut frame).await.unwrap();
                let mut counter = FrameCounter::default();
                assert_eq!(counter.feed(&preamble).data_frames, 2);
                assert_eq!(counter.feed(&frame).data_frames, 1, "length {len}");
            });
            server.shutdown();
        }
    }
}
