//! The writers: a few tasks (one per runtime worker by default), each owning the sending side
//! of many connections, uWebSockets-style. Everything a connection sends is written by its
//! writer: its session's replies, and its market data, which the writer reads from the feeds'
//! topics itself.
//!
//! ```text
//!  feeds: publish ──wakes once──► writer ──refresh──► one Window per topic (the ring's new messages, copied once)
//!  sessions: Outbound items ─poke─►  │   for each connection owed something:
//!  sockets: writable ───────────────►│     replies, then each subscription's messages out of the windows,
//!                                    └──►  as frames built once and shared, in ONE vectored write
//! ```
//!
//! A publish wakes each writer that follows its topic once, whatever the number of
//! subscribers; a writer serves every connection that is owed something in one pass, and a
//! connection gets everything it is owed in one `writev` (at most 1,024 frames at a time). A
//! message's frame is built once for all connections (header and payload, deflated once in
//! shared mode) and the writes point at it: no copy, no allocation and no reference count per
//! message per connection.
//!
//! Nothing waits for a client. A socket that cannot take everything keeps the rest as its
//! backlog and is written again when the kernel says it is writable; meanwhile its
//! subscriptions fall behind in the topics' rings, where the hub's policies act (conflate,
//! resync, or the end of the subscription: then the session closes with 1013). A socket that
//! stays blocked longer than `write_timeout` is dropped. The session's own items wait in a
//! queue of `outbound_queue` that the writer takes from only while the socket keeps up, so a
//! client that does not read holds its session back, not the writer.

use super::limits::WsLimits;
use super::outgoing::{Encoder, End, Feed, Outbound, WireCounts, WireStats};
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use ticker_feeds::hub::{Waiter, Window};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

mod serve;
mod vectored;

use serve::Writer;

/// Frames in one vectored write: Linux's `IOV_MAX`.
const MAX_IOV: usize = 1024;
/// Vectored writes one connection gets per turn before the writer moves on.
const WRITES_PER_TURN: usize = 4;
/// Connections a writer serves before it lets the other tasks of its thread run.
const CONNECTIONS_PER_ROUND: usize = 256;
/// Bytes of tungstenite's own frames (pongs, close answers) a connection may hold unwritten
/// before its reader is made to wait.
const MAX_CONTROL_BYTES: usize = 64 * 1024;
/// No connection.
const NONE: usize = usize::MAX;

/// The writers of one WebSocket server.
pub struct Writers {
    inboxes: Vec<Arc<Inbox>>,
    next: AtomicUsize,
}

impl Writers {
    /// Starts `count` writer tasks (at least one) on the current runtime.
    pub fn start(count: usize, limits: &WsLimits) -> Writers {
        let inboxes: Vec<Arc<Inbox>> = (0..count.max(1))
            .map(|_| Arc::new(Inbox::default()))
            .collect();
        for inbox in &inboxes {
            let writer = Writer::new(inbox.clone(), limits);
            tokio::spawn(tokio::task::unconstrained(writer.run()));
        }
        Writers {
            inboxes,
            next: AtomicUsize::new(0),
        }
    }

    /// Gives a new connection's socket to a writer; `queue` items (at most `outbound_queue`
    /// waiting) go out in order. Returns the session's handle and where the writer says that
    /// a subscription ended the stream.
    pub fn attach(
        &self,
        socket: Arc<TcpStream>,
        encoder: Encoder,
        limits: &WsLimits,
    ) -> (Outgoing, mpsc::Receiver<End>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.inboxes.len();
        let inbox = self.inboxes[i].clone();
        let (tx, queue) = mpsc::channel(limits.outbound_queue.max(1));
        let (ended_tx, ended) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            slot: AtomicUsize::new(NONE),
            poked: AtomicBool::new(false),
            control: Mutex::new(Control::default()),
            finished: AtomicBool::new(false),
            done: Notify::new(),
            abandon: AtomicBool::new(false),
            inbox: inbox.clone(),
        });
        inbox.attached.lock().push(Conn {
            shared: shared.clone(),
            socket,
            queue,
            ended: ended_tx,
            encoder,
            feeds: Vec::new(),
            poked: true,
            backlog: VecDeque::new(),
            blocked_since: None,
            refused: false,
            closing: false,
            queue_done: false,
            dirty: false,
        });
        inbox.wake();
        (
            Outgoing {
                tx: Some(tx),
                shared,
            },
            ended,
        )
    }

    /// Connections whose socket refuses bytes now: clients that do not keep up.
    pub fn blocked(&self) -> usize {
        self.inboxes
            .iter()
            .map(|i| i.blocked.load(Ordering::Relaxed))
            .sum()
    }

    /// What every writer wrote so far.
    pub fn wire(&self) -> WireCounts {
        let mut total = WireCounts::default();
        for inbox in &self.inboxes {
            total.add(inbox.stats.get());
        }
        total
    }
}

impl Drop for Writers {
    /// Each writer ends once its last connection is done.
    fn drop(&mut self) {
        for inbox in &self.inboxes {
            inbox.closed.store(true, Ordering::Release);
            inbox.wake();
        }
    }
}

/// What sessions hand a writer, and how they wake it.
#[derive(Default)]
struct Inbox {
    waker: Mutex<Option<Waker>>,
    attached: Mutex<Vec<Conn>>,
    /// Connections with new items or control bytes.
    poked: Mutex<Vec<Arc<Shared>>>,
    /// The server is gone: end when no connection is left.
    closed: AtomicBool,
    stats: WireStats,
    /// Connections whose socket refuses bytes now (clients that do not keep up).
    blocked: AtomicUsize,
}

impl Inbox {
    fn wake(&self) {
        if let Some(waker) = self.waker.lock().take() {
            waker.wake();
        }
    }
}

/// Tungstenite's own frames for a connection (pongs, the answer to a client's close), written
/// between the session's items.
#[derive(Default)]
struct Control {
    bytes: BytesMut,
    /// The reader, waiting for room.
    waiting: Option<Waker>,
}

/// What a connection's session and its writer share.
struct Shared {
    /// The connection's index in its writer, [`NONE`] before and after.
    slot: AtomicUsize,
    /// On the inbox's poked list now.
    poked: AtomicBool,
    control: Mutex<Control>,
    /// The writer is done with the connection (all written, or it failed).
    finished: AtomicBool,
    done: Notify,
    /// The session gave up waiting: drop whatever is unwritten.
    abandon: AtomicBool,
    inbox: Arc<Inbox>,
}

impl Shared {
    fn poke(self: &Arc<Self>) {
        if !self.poked.swap(true, Ordering::AcqRel) {
            self.inbox.poked.lock().push(self.clone());
            self.inbox.wake();
        }
    }
}

/// A session's handle on its connection's writer.
pub struct Outgoing {
    tx: Option<mpsc::Sender<Outbound>>,
    shared: Arc<Shared>,
}

impl Outgoing {
    /// Queues an item; `false` when the writer is gone or has not taken anything for `wait`
    /// (a client that does not read).
    pub async fn send(&self, item: Outbound, wait: Duration) -> bool {
        let Some(tx) = &self.tx else { return false };
        let sent = matches!(tokio::time::timeout(wait, tx.send(item)).await, Ok(Ok(())));
        if sent {
            self.shared.poke();
        }
        sent
    }

    /// Resolves when the writer has dropped the connection (a write failed or stalled).
    pub async fn closed(&self) {
        match &self.tx {
            Some(tx) => tx.closed().await,
            None => std::future::pending().await,
        }
    }

    /// Where the session's tungstenite writes its own frames (pongs, close answers).
    pub fn control(&self) -> ControlSink {
        ControlSink {
            shared: self.shared.clone(),
        }
    }

    /// Ends the queue and waits up to `wait` for the writer to write what is queued; then the
    /// writer drops whatever is left.
    pub async fn finish(mut self, wait: Duration) {
        self.tx = None;
        self.shared.poke();
        let shared = self.shared.clone();
        let done = async {
            loop {
                let notified = shared.done.notified();
                if shared.finished.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(wait, done).await.is_err() {
            shared.abandon.store(true, Ordering::Release);
            shared.poke();
        }
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        if self.tx.take().is_some() {
            self.shared.poke();
        }
    }
}

/// The write side of a session's socket as tungstenite sees it: its frames are queued for the
/// writer, whole (tungstenite writes whole frames into any writer that takes all it is given).
pub struct ControlSink {
    shared: Arc<Shared>,
}

impl ControlSink {
    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.shared.finished.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let mut control = self.shared.control.lock();
        if !control.bytes.is_empty() && control.bytes.len() + buf.len() > MAX_CONTROL_BYTES {
            control.waiting = Some(cx.waker().clone());
            return Poll::Pending;
        }
        control.bytes.extend_from_slice(buf);
        drop(control);
        self.shared.poke();
        Poll::Ready(Ok(buf.len()))
    }
}

/// One subscription a writer delivers for a connection.
struct ConnFeed {
    feed: Feed,
    /// Index of its topic in the writer's follows.
    follow: usize,
}

/// A connection's sending side, owned by its writer.
struct Conn {
    shared: Arc<Shared>,
    socket: Arc<TcpStream>,
    queue: mpsc::Receiver<Outbound>,
    ended: mpsc::Sender<End>,
    encoder: Encoder,
    feeds: Vec<ConnFeed>,
    /// The session queued items (or tungstenite frames) since the queue was last read.
    poked: bool,
    /// Bytes taken for the socket but not written yet, in order.
    backlog: VecDeque<Bytes>,
    /// When the socket last refused bytes, while it still does.
    blocked_since: Option<Instant>,
    /// The socket refused bytes since everything it was given was last written: the client
    /// did not keep up, and its subscriptions get their queue limits.
    refused: bool,
    /// The close frame is taken: nothing more is sent.
    closing: bool,
    /// The session dropped its handle: done once everything is written.
    queue_done: bool,
    /// On the writer's to-do list.
    dirty: bool,
}

/// A topic some of a writer's connections follow.
struct Follow {
    window: Window,
    waiter: Arc<Waiter>,
    /// Slots of the connections with a feed on it.
    conns: Vec<usize>,
}

/// An empty vector's allocation, reused for borrows of another lifetime (the collect of an
/// empty vector's `into_iter` reuses the allocation; nothing is converted).
fn recycle<A, B>(mut v: Vec<A>) -> Vec<B> {
    v.clear();
    v.into_iter().map(|_| unreachable!("empty")).collect()
}

/// What serving a connection came to.
#[derive(Debug, PartialEq, Eq)]
enum Served {
    /// Everything it is owed is written.
    Idle,
    /// More is owed than one turn writes.
    More,
    /// The socket is full.
    Blocked,
    /// Done: the session is gone and everything is written, or the socket failed.
    Remove,
}

/// Why a round of the writer ended.
enum Round {
    /// Connections are still owed something: let the thread's other tasks run, then go on.
    Yield,
    /// The server is gone and so is every connection.
    Exit,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame;
    use crate::ws::protocol::{ChannelSpec, ChannelTarget};
    use std::time::Duration;
    use ticker_feeds::{
        Channel, Hub, HubConfig, HubStats, Message, MessageKind, Topic, WireInstrument,
    };
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpSocket};
    use tungstenite::protocol::frame::coding::CloseCode;

    const GUARD: Duration = Duration::from_secs(10);

    fn limits() -> WsLimits {
        WsLimits {
            write_timeout: Duration::from_secs(5),
            ..WsLimits::default()
        }
    }

    fn message(channel: &str, seq: u64) -> Arc<Message> {
        Message::encoded(
            seq,
            seq - 1,
            MessageKind::Update,
            Bytes::from(format!(r#"{{"channel":"{channel}","seq":{seq}}}"#)),
            Bytes::new(),
        )
    }

    fn spec(channel: Channel) -> ChannelSpec {
        ChannelSpec {
            target: ChannelTarget::Market {
                channel,
                instrument: Arc::new(
                    WireInstrument::new(0, crate::defaults::instruments().remove(0)).unwrap(),
                ),
            },
            from_seq: None,
        }
    }

    fn topic(channel: Channel) -> Topic {
        Topic::Market {
            channel,
            instrument: 0,
        }
    }

    /// A server-side socket and the client's end of it, on loopback; `buffer` sets both
    /// ends' kernel buffers when given.
    async fn pair(buffer: Option<u32>) -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpSocket::new_v4().unwrap();
        if let Some(b) = buffer {
            listener.set_send_buffer_size(b).unwrap();
        }
        listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener: TcpListener = listener.listen(1).unwrap();
        let client = TcpSocket::new_v4().unwrap();
        if let Some(b) = buffer {
            client.set_recv_buffer_size(b).unwrap();
        }
        let (client, accepted) = tokio::join!(
            client.connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        (Arc::new(accepted.unwrap().0), client.unwrap())
    }

    /// Reads whole unmasked frames: (first byte, payload).
    async fn frames(client: &mut TcpStream, n: usize) -> Vec<(u8, String)> {
        let mut out = Vec::new();
        while out.len() < n {
            let mut head = [0u8; 2];
            client.read_exact(&mut head).await.unwrap();
            let len = match head[1] {
                126 => client.read_u16().await.unwrap() as usize,
                127 => client.read_u64().await.unwrap() as usize,
                n => n as usize,
            };
            let mut payload = vec![0; len];
            client.read_exact(&mut payload).await.unwrap();
            out.push((head[0], String::from_utf8_lossy(&payload).into_owned()));
        }
        out
    }

    #[tokio::test]
    async fn what_a_connection_is_owed_goes_out_in_one_write_after_its_reply() {
        let hub = Hub::default();
        let writers = Writers::start(1, &limits());
        let (socket, mut client) = pair(None).await;
        let (out, _ended) = writers.attach(socket, Encoder::new(None), &limits());
        let sub = hub.subscribe(topic(Channel::Trades), None);
        let subscribe = Outbound::Subscribe {
            feeds: vec![Feed {
                spec: spec(Channel::Trades),
                sub,
            }],
            reply: Bytes::from_static(b"subscribed"),
        };
        // The writer runs on this thread: nothing is written before this task waits.
        assert!(out.send(subscribe, GUARD).await);
        for seq in 1..=50 {
            hub.topic(topic(Channel::Trades))
                .publish(message("trades", seq));
        }
        let got = tokio::time::timeout(GUARD, frames(&mut client, 51))
            .await
            .unwrap();
        assert_eq!(got[0], (frame::TEXT, "subscribed".into()));
        for (i, (first, payload)) in got[1..].iter().enumerate() {
            assert_eq!(*first, frame::TEXT);
            assert_eq!(
                payload,
                &format!(r#"{{"channel":"trades","seq":{}}}"#, i + 1)
            );
        }
        let wire = writers.wire();
        assert_eq!((wire.messages, wire.writes), (51, 1), "{wire:?}");
        drop(out);
    }

    #[tokio::test]
    async fn a_trades_subscriber_over_its_limit_ends_the_stream_with_1013() {
        let hub = Hub::new(HubConfig {
            lossless_queue: 2,
            ..HubConfig::default()
        });
        let writers = Writers::start(1, &limits());
        let (socket, _client) = pair(None).await;
        let (out, mut ended) = writers.attach(socket, Encoder::new(None), &limits());
        let sub = hub.subscribe(topic(Channel::Trades), None);
        for seq in 1..=10 {
            hub.topic(topic(Channel::Trades))
                .publish(message("trades", seq));
        }
        let feeds = vec![Feed {
            spec: spec(Channel::Trades),
            sub,
        }];
        let reply = Bytes::from_static(b"subscribed");
        assert!(out.send(Outbound::Subscribe { feeds, reply }, GUARD).await);
        let end = tokio::time::timeout(GUARD, ended.recv()).await.unwrap();
        assert_eq!(
            end,
            Some(End::Close(
                CloseCode::Again,
                "too slow: trades BTC-USD fell 2 messages behind; resume with from_seq".into()
            ))
        );
    }

    #[tokio::test]
    async fn nothing_follows_the_close_frame_and_the_writer_lets_the_connection_go() {
        let hub = Hub::default();
        let writers = Writers::start(1, &limits());
        let (socket, mut client) = pair(None).await;
        let (out, _ended) = writers.attach(socket, Encoder::new(None), &limits());
        let feeds = vec![Feed {
            spec: spec(Channel::Trades),
            sub: hub.subscribe(topic(Channel::Trades), None),
        }];
        let reply = Bytes::from_static(b"subscribed");
        assert!(out.send(Outbound::Subscribe { feeds, reply }, GUARD).await);
        let close = tungstenite::protocol::CloseFrame {
            code: CloseCode::Away,
            reason: "bye".into(),
        };
        assert!(out.send(Outbound::Close(close), GUARD).await);
        assert!(
            out.send(Outbound::Reply(Bytes::from_static(b"late")), GUARD)
                .await
        );
        hub.topic(topic(Channel::Trades))
            .publish(message("trades", 1));
        out.finish(GUARD).await;
        let mut rest = Vec::new();
        tokio::time::timeout(GUARD, client.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        let mut expected = frame::frame(frame::TEXT, b"subscribed").to_vec();
        expected.extend_from_slice(b"\x88\x05\x03\xe9bye");
        assert_eq!(rest, expected, "the reply, the close frame, then the end");
        assert_eq!(hub.topic(topic(Channel::Trades)).subscriber_count(), 0);
    }

    #[tokio::test]
    async fn a_client_that_does_not_keep_up_is_conflated_at_its_queue_limit() {
        const BUFFER: u32 = 4096;
        let hub = Hub::new(HubConfig {
            conflated_queue: 4,
            ..HubConfig::default()
        });
        let writers = Writers::start(1, &limits());
        let (socket, mut client) = pair(Some(BUFFER)).await;
        let (out, _ended) = writers.attach(socket, Encoder::new(None), &limits());
        let ticker = hub.topic(topic(Channel::Ticker));
        let feeds = vec![Feed {
            spec: spec(Channel::Ticker),
            sub: hub.subscribe(topic(Channel::Ticker), None),
        }];
        let reply = Bytes::from_static(b"subscribed");
        assert!(out.send(Outbound::Subscribe { feeds, reply }, GUARD).await);
        // Three tickers far larger than the socket's buffers, which the client does not read:
        // the writer keeps what the socket refuses as its backlog.
        let big = "x".repeat(100_000);
        for seq in 1..=3 {
            ticker.publish(Message::encoded(
                seq,
                seq - 1,
                MessageKind::Update,
                Bytes::from(format!(
                    r#"{{"channel":"ticker","seq":{seq},"pad":"{big}"}}"#
                )),
                Bytes::new(),
            ));
        }
        // The writer runs on this thread whenever this task yields.
        while writers.blocked() == 0 {
            tokio::task::yield_now().await;
        }
        // Ten more while the client is behind: over its queue limit of 4.
        for seq in 4..=13 {
            ticker.publish(message("ticker", seq));
        }
        // Reading again, it gets its backlog in order, then the latest ticker, conflated.
        let got = tokio::time::timeout(GUARD, frames(&mut client, 5))
            .await
            .unwrap();
        let seqs: Vec<u64> = got[1..]
            .iter()
            .map(|(_, text)| {
                let v: serde_json::Value = serde_json::from_str(text).unwrap();
                v["seq"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3, 13]);
        let conflated = HubStats::get(&hub.stats().conflated_messages, topic(Channel::Ticker));
        assert_eq!(conflated, 9);
        drop(out);
    }
}
