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

use super::frame;
use super::limits::WsLimits;
use super::outgoing::{Encoder, End, Feed, FeedFrame, Outbound, WireCounts, WireStats};
use super::protocol::ChannelKey;
use super::replies;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use ticker_feeds::hub::{Next, Waiter, Window};
use ticker_feeds::{Delivery, Ended, Topic};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tungstenite::protocol::frame::coding::CloseCode;

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

/// Bytes for one vectored write: a frame shared with other connections, or this one's own.
enum Piece<'a> {
    Shared(&'a Bytes),
    Own(Bytes),
}

impl Piece<'_> {
    fn bytes(&self) -> &Bytes {
        match self {
            Piece::Shared(b) => b,
            Piece::Own(b) => b,
        }
    }
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

struct Writer {
    inbox: Arc<Inbox>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    follows: Vec<Option<Follow>>,
    follow_of: HashMap<Topic, usize>,
    free_follows: Vec<usize>,
    dirty: VecDeque<usize>,
    /// Connections of the topics that moved (reused).
    owed: Vec<usize>,
    blocked: Vec<usize>,
    write_timeout: Duration,
    timeouts: tokio::time::Interval,
    counts: WireCounts,
    pieces: Vec<Piece<'static>>,
    slices: Vec<IoSlice<'static>>,
}

impl Writer {
    fn new(inbox: Arc<Inbox>, limits: &WsLimits) -> Writer {
        let check =
            (limits.write_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut timeouts = tokio::time::interval(check);
        timeouts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Writer {
            inbox,
            conns: Vec::new(),
            free: Vec::new(),
            follows: Vec::new(),
            follow_of: HashMap::new(),
            free_follows: Vec::new(),
            dirty: VecDeque::new(),
            owed: Vec::new(),
            blocked: Vec::new(),
            write_timeout: limits.write_timeout,
            timeouts,
            counts: WireCounts::default(),
            pieces: Vec::with_capacity(MAX_IOV),
            slices: Vec::with_capacity(MAX_IOV),
        }
    }

    async fn run(mut self) {
        loop {
            match poll_fn(|cx| self.poll_round(cx)).await {
                Round::Yield => tokio::task::yield_now().await,
                Round::Exit => return,
            }
        }
    }

    fn mark(&mut self, slot: usize) {
        if let Some(conn) = self.conns[slot].as_mut() {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push_back(slot);
            }
        }
    }

    fn poll_round(&mut self, cx: &mut Context<'_>) -> Poll<Round> {
        {
            let mut waker = self.inbox.waker.lock();
            match &*waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        let attached = std::mem::take(&mut *self.inbox.attached.lock());
        for conn in attached {
            let slot = match self.free.pop() {
                Some(slot) => slot,
                None => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
            };
            conn.shared.slot.store(slot, Ordering::Release);
            self.conns[slot] = Some(conn);
            self.mark(slot);
        }
        let poked = std::mem::take(&mut *self.inbox.poked.lock());
        for shared in poked {
            shared.poked.store(false, Ordering::Release);
            let slot = shared.slot.load(Ordering::Acquire);
            if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
                conn.poked = true;
                self.mark(slot);
            }
        }
        let mut owed = std::mem::take(&mut self.owed);
        for follow in self.follows.iter_mut().flatten() {
            if follow.window.refresh() {
                owed.extend_from_slice(&follow.conns);
            }
        }
        for slot in owed.drain(..) {
            // A blocked socket is served again when it is writable.
            if self.conns[slot]
                .as_ref()
                .is_some_and(|c| c.blocked_since.is_none())
            {
                self.mark(slot);
            }
        }
        self.owed = owed;
        self.poll_blocked(cx);
        let mut served = 0;
        while let Some(slot) = self.dirty.pop_front() {
            if served == CONNECTIONS_PER_ROUND {
                self.dirty.push_front(slot);
                self.publish_counts();
                return Poll::Ready(Round::Yield);
            }
            served += 1;
            self.serve(slot);
        }
        self.poll_blocked(cx);
        self.publish_counts();
        if !self.dirty.is_empty() {
            return Poll::Ready(Round::Yield);
        }
        if self.inbox.closed.load(Ordering::Acquire) && self.conns.iter().all(Option::is_none) {
            return Poll::Ready(Round::Exit);
        }
        for follow in self.follows.iter().flatten() {
            follow
                .window
                .topic()
                .wait(&follow.waiter, cx.waker(), follow.window.end());
        }
        Poll::Pending
    }

    fn publish_counts(&mut self) {
        self.inbox.stats.add(std::mem::take(&mut self.counts));
        self.inbox
            .blocked
            .store(self.blocked.len(), Ordering::Relaxed);
    }

    /// Asks the kernel to wake the writer when a blocked socket takes bytes again; drops the
    /// ones blocked longer than `write_timeout`.
    fn poll_blocked(&mut self, cx: &mut Context<'_>) {
        let check_timeouts = self.timeouts.poll_tick(cx).is_ready();
        let now = Instant::now();
        let mut i = 0;
        while i < self.blocked.len() {
            let slot = self.blocked[i];
            let Some(conn) = self.conns[slot].as_mut() else {
                self.blocked.swap_remove(i);
                continue;
            };
            let abandoned = conn.shared.abandon.load(Ordering::Acquire);
            let stalled = check_timeouts
                && conn
                    .blocked_since
                    .is_some_and(|t| now.duration_since(t) > self.write_timeout);
            let ready = match conn.socket.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(_)) => {
                    self.blocked.swap_remove(i);
                    self.remove(slot);
                    continue;
                }
                Poll::Pending => false,
            };
            if abandoned || stalled {
                self.blocked.swap_remove(i);
                self.remove(slot);
                continue;
            }
            if ready {
                self.blocked.swap_remove(i);
                conn.blocked_since = None;
                self.mark(slot);
                continue;
            }
            i += 1;
        }
    }

    fn serve(&mut self, slot: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        conn.dirty = false;
        let served = if conn.shared.abandon.load(Ordering::Acquire) {
            Served::Remove
        } else {
            self.serve_conn(slot)
        };
        match served {
            Served::Idle => {}
            Served::More => self.mark(slot),
            Served::Blocked => {
                if let Some(conn) = self.conns[slot].as_mut() {
                    if conn.blocked_since.is_none() {
                        conn.blocked_since = Some(Instant::now());
                        self.blocked.push(slot);
                    }
                }
            }
            Served::Remove => self.remove(slot),
        }
    }

    /// Writes what connection `slot` is owed: its backlog, then its queue's items and its
    /// feeds' messages, in turns of one vectored write.
    fn serve_conn(&mut self, slot: usize) -> Served {
        for _ in 0..WRITES_PER_TURN {
            let conn = self.conns[slot].as_mut().expect("served connections exist");
            if !conn.backlog.is_empty() {
                match write_backlog(conn) {
                    Ok(true) => {}
                    Ok(false) => return Served::Blocked,
                    Err(_) => return Served::Remove,
                }
            }
            let mut own = Vec::new();
            let mut stopped = Vec::new();
            self.take_items(slot, &mut own);
            let conn = self.conns[slot].as_mut().expect("served connections exist");
            // The feeds' messages, borrowed from the windows until the write is done.
            let mut pieces: Vec<Piece<'_>> = recycle(std::mem::take(&mut self.pieces));
            pieces.extend(own.into_iter().map(Piece::Own));
            if !conn.closing {
                for (i, f) in conn.feeds.iter_mut().enumerate() {
                    let window = &self.follows[f.follow]
                        .as_ref()
                        .expect("followed topics exist")
                        .window;
                    let end = gather(
                        f,
                        window,
                        !conn.refused,
                        &mut conn.encoder,
                        &mut pieces,
                        &mut self.counts,
                    );
                    match end {
                        Gathered::All => {}
                        Gathered::Full => break,
                        Gathered::Ended(end) => {
                            let _ = conn.ended.try_send(end);
                            stopped.push(i);
                        }
                    }
                }
            }
            let written = if pieces.is_empty() {
                Ok(true)
            } else {
                let mut slices: Vec<IoSlice<'_>> = recycle(std::mem::take(&mut self.slices));
                slices.extend(pieces.iter().map(|p| IoSlice::new(p.bytes())));
                let written = write_pieces(conn, &pieces, &slices);
                self.counts.writes += 1;
                self.slices = recycle(slices);
                written
            };
            let idle = pieces.is_empty();
            self.pieces = recycle(pieces);
            for i in stopped.into_iter().rev() {
                self.stop_feed(slot, i);
            }
            match written {
                Err(_) => return Served::Remove,
                Ok(false) => return Served::Blocked,
                Ok(true) if idle => {
                    let conn = self.conns[slot].as_ref().expect("served connections exist");
                    return if conn.queue_done {
                        Served::Remove
                    } else {
                        Served::Idle
                    };
                }
                Ok(true) => {}
            }
        }
        Served::More
    }

    /// Takes the session's items (and tungstenite's frames) in order, as frames of this
    /// connection, applying subscribes and unsubscribes; stops at a close.
    fn take_items(&mut self, slot: usize, own: &mut Vec<Bytes>) {
        {
            let conn = self.conns[slot].as_mut().expect("served connections exist");
            if !conn.poked {
                return;
            }
            conn.poked = false;
            let mut control = conn.shared.control.lock();
            if !control.bytes.is_empty() {
                let mut bytes = control.bytes.split().freeze();
                // After a close frame nothing more is sent (tungstenite answers a client's
                // close after the server's own, which is then dropped here).
                if !conn.closing {
                    if let Some(end) = frame::through_close(&bytes) {
                        bytes.truncate(end);
                        conn.closing = true;
                    }
                    own.push(bytes);
                }
            }
            if let Some(reader) = control.waiting.take() {
                reader.wake();
            }
        }
        while let Some(conn) = self.conns[slot].as_mut() {
            if own.len() >= MAX_IOV / 2 {
                // The rest on the next turn.
                conn.poked = true;
                break;
            }
            let item = match conn.queue.try_recv() {
                Ok(item) => item,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    conn.queue_done = true;
                    break;
                }
            };
            if conn.closing {
                // Nothing follows the close frame; the queue is read on only to see it end.
                continue;
            }
            match item {
                Outbound::Reply(json) => own.push(conn.encoder.reply(&json, &mut self.counts)),
                Outbound::Ping(payload) => own.push(frame::frame(frame::PING, &payload)),
                Outbound::Subscribe { feeds, reply } => {
                    for feed in &feeds {
                        self.stop_key(slot, feed.key());
                    }
                    let conn = self.conns[slot].as_mut().expect("served connections exist");
                    own.push(conn.encoder.reply(&reply, &mut self.counts));
                    for feed in feeds {
                        self.start_feed(slot, feed);
                    }
                }
                Outbound::Unsubscribe { keys, reply } => {
                    for key in keys {
                        self.stop_key(slot, key);
                    }
                    let conn = self.conns[slot].as_mut().expect("served connections exist");
                    own.push(conn.encoder.reply(&reply, &mut self.counts));
                }
                Outbound::Close(close) => {
                    self.stop_feeds(slot);
                    own.push(frame::close(&close));
                    let conn = self.conns[slot].as_mut().expect("served connections exist");
                    conn.closing = true;
                }
            }
        }
    }

    fn stop_feeds(&mut self, slot: usize) {
        while let Some(n) = self.conns[slot].as_ref().map(|c| c.feeds.len()) {
            if n == 0 {
                break;
            }
            self.stop_feed(slot, n - 1);
        }
    }

    fn start_feed(&mut self, slot: usize, feed: Feed) {
        let topic = feed.sub.topic();
        let follow = match self.follow_of.get(&topic) {
            Some(&i) => i,
            None => {
                let follow = Follow {
                    window: Window::new(feed.sub.state().clone()),
                    waiter: Waiter::new(),
                    conns: Vec::new(),
                };
                let i = match self.free_follows.pop() {
                    Some(i) => {
                        self.follows[i] = Some(follow);
                        i
                    }
                    None => {
                        self.follows.push(Some(follow));
                        self.follows.len() - 1
                    }
                };
                self.follow_of.insert(topic, i);
                i
            }
        };
        if let Some(f) = self.follows[follow].as_mut() {
            f.conns.push(slot);
        }
        if let Some(conn) = self.conns[slot].as_mut() {
            conn.feeds.push(ConnFeed { feed, follow });
        }
    }

    fn stop_key(&mut self, slot: usize, key: ChannelKey) {
        let found = self.conns[slot]
            .as_ref()
            .and_then(|c| c.feeds.iter().position(|f| f.feed.key() == key));
        if let Some(i) = found {
            self.stop_feed(slot, i);
        }
    }

    fn stop_feed(&mut self, slot: usize, i: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let f = conn.feeds.swap_remove(i);
        let topic = f.feed.sub.topic();
        drop(f.feed);
        let Some(follow) = self.follows[f.follow].as_mut() else {
            return;
        };
        if let Some(k) = follow.conns.iter().position(|&s| s == slot) {
            follow.conns.swap_remove(k);
        }
        if follow.conns.is_empty() {
            self.follows[f.follow] = None;
            self.free_follows.push(f.follow);
            self.follow_of.remove(&topic);
        }
    }

    fn remove(&mut self, slot: usize) {
        self.stop_feeds(slot);
        let Some(conn) = self.conns[slot].take() else {
            return;
        };
        self.free.push(slot);
        conn.shared.slot.store(NONE, Ordering::Release);
        conn.shared.finished.store(true, Ordering::Release);
        conn.shared.done.notify_waiters();
        let reader = conn.shared.control.lock().waiting.take();
        if let Some(reader) = reader {
            reader.wake();
        }
        // Dropping the queue tells the session (`Outgoing::closed`); the socket closes when
        // the session drops its half too.
    }
}

/// How gathering one feed ended.
enum Gathered {
    /// Everything the window holds for it.
    All,
    /// The write is full.
    Full,
    /// The subscription ended the stream.
    Ended(End),
}

/// Adds what `f` is owed out of `window` to `pieces`.
fn gather<'w>(
    f: &mut ConnFeed,
    window: &'w Window,
    kept_up: bool,
    encoder: &mut Encoder,
    pieces: &mut Vec<Piece<'w>>,
    counts: &mut WireCounts,
) -> Gathered {
    loop {
        if pieces.len() >= MAX_IOV {
            return Gathered::Full;
        }
        match f.feed.sub.next_in(window, kept_up) {
            Ok(None) => return Gathered::All,
            Ok(Some(Next::Message(m) | Next::Conflated { message: m, .. })) => {
                pieces.push(match encoder.feed(m, counts) {
                    FeedFrame::Shared(b) => Piece::Shared(b),
                    FeedFrame::Own(b) => Piece::Own(b),
                });
            }
            Ok(Some(Next::Own(Delivery::Gap {
                from_seq,
                resumed_after,
            }))) => {
                let gap = replies::gap(&f.feed.spec, from_seq, resumed_after);
                pieces.push(Piece::Own(encoder.reply(&gap, counts)));
            }
            Ok(Some(Next::Own(delivery))) => {
                if let Some(m) = delivery.message() {
                    // Held by the subscription only until now: the write keeps its own.
                    pieces.push(Piece::Own(encoder.feed(m, counts).bytes().clone()));
                }
            }
            Err(Ended::TooSlow { limit, .. }) => {
                return Gathered::Ended(End::Close(
                    CloseCode::Again,
                    format!(
                        "too slow: {} fell {limit} messages behind; resume with from_seq",
                        f.feed.spec.label()
                    ),
                ));
            }
            Err(Ended::Closed) => {
                return Gathered::Ended(End::Close(CloseCode::Away, "server shutting down".into()))
            }
        }
    }
}

/// Writes `pieces` in one vectored write; what the socket does not take becomes the
/// connection's backlog. `Ok(false)` when the socket is full.
fn write_pieces(conn: &mut Conn, pieces: &[Piece<'_>], slices: &[IoSlice<'_>]) -> io::Result<bool> {
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let n = match conn.socket.try_write_vectored(slices) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    if n == total {
        conn.refused = false;
        return Ok(true);
    }
    conn.refused = true;
    let mut skip = n;
    for piece in pieces {
        let bytes = piece.bytes();
        if skip >= bytes.len() {
            skip -= bytes.len();
            continue;
        }
        conn.backlog.push_back(bytes.slice(skip..));
        skip = 0;
    }
    Ok(false)
}

/// Writes a connection's backlog; `Ok(true)` once it is all written.
fn write_backlog(conn: &mut Conn) -> io::Result<bool> {
    while !conn.backlog.is_empty() {
        let slices: Vec<IoSlice<'_>> = conn
            .backlog
            .iter()
            .take(MAX_IOV)
            .map(|b| IoSlice::new(b))
            .collect();
        let mut n = match conn.socket.try_write_vectored(&slices) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        };
        drop(slices);
        while n > 0 {
            let front = conn.backlog.front_mut().expect("written bytes were queued");
            if n >= front.len() {
                n -= front.len();
                conn.backlog.pop_front();
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::protocol::{ChannelSpec, ChannelTarget};
    use std::time::Duration;
    use ticker_feeds::{Channel, Hub, HubConfig, HubStats, Message, MessageKind, WireInstrument};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpSocket};

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
