//! A writer's task: each round takes the sessions' new connections and items, refreshes the
//! windows of the topics that moved, and serves every connection owed something.

use super::vectored::{gather, write_backlog, write_pieces, Gathered, Piece};
use super::{
    recycle, Conn, ConnFeed, Follow, Inbox, Round, Served, CONNECTIONS_PER_ROUND, MAX_IOV, NONE,
    WRITES_PER_TURN,
};
use crate::ws::frame;
use crate::ws::limits::WsLimits;
use crate::ws::outgoing::{Feed, Outbound, WireCounts};
use crate::ws::protocol::ChannelKey;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use ticker_feeds::hub::{Waiter, Window};
use ticker_feeds::Topic;
use tokio::sync::mpsc;

pub(super) struct Writer {
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
    pub(super) fn new(inbox: Arc<Inbox>, limits: &WsLimits) -> Writer {
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

    pub(super) async fn run(mut self) {
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
