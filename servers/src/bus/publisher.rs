//! The matcher's side of the stream: every event the feeds thread applies is published to
//! JetStream, one message per command, in engine order; feeds snapshots go to the object store
//! so a gateway starts near the head instead of at the beginning of time.
//!
//! The publisher runs on a thread of its own and drives the NATS client on the process's
//! runtime. Its queue is bounded: when NATS is slower than the engine the feeds thread waits
//! (and then the engine; clients get "busy"), like a full egress ring — events are never
//! dropped, and never published out of order. Publishes are pipelined (`publish_window`
//! awaiting their acknowledgement); if one fails, the publisher reads the stream's last event
//! and publishes again everything after it, in order.

use super::wire::{self, LAST_SEQ_HEADER, SNAPSHOT_OBJECT, SNAPSHOT_SEQ, SNAPSHOT_STREAM_SEQ};
use super::{BusConfig, BusStats};
use async_nats::jetstream::{self, context::PublishAckFuture, object_store, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use ticker_engine::Event;
use ticker_feeds::snapshot::FeedsSnapshot;
use tokio::runtime::Handle;

enum Item {
    Events(Vec<Event>),
    Snapshot(FeedsSnapshot),
}

/// The feeds thread's handle on the publisher.
pub struct Publisher {
    tx: Option<SyncSender<Item>>,
    /// The last event seq the stream held when this matcher started.
    after: u64,
    snapshot_every: u64,
    thread: Option<JoinHandle<()>>,
    stats: Arc<BusStats>,
    client: async_nats::Client,
}

impl Publisher {
    /// Connects, creates the stream and the snapshot bucket if they do not exist, reads the
    /// stream's last event and starts the publishing thread. Call from inside the runtime.
    pub async fn start(config: &BusConfig) -> Result<Publisher, String> {
        let client = super::connect(config).await?;
        let js = jetstream::new(client.clone());
        let mut stream = ensure_stream(&js, config).await?;
        let store = ensure_bucket(&js, config).await?;
        let after = last_published(&mut stream).await?;
        let stats = Arc::new(BusStats::default());
        stats.applied_seq.store(after, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::sync_channel(config.publish_queue);
        let mut state = State {
            js,
            stream,
            store,
            config: config.clone(),
            handle: Handle::current(),
            in_flight: VecDeque::new(),
            published: after,
            waiting_for_snapshot: false,
            stats: stats.clone(),
            scratch: Vec::new(),
            give_up_at: None,
        };
        let thread = std::thread::Builder::new()
            .name("ticker-bus-publisher".into())
            .spawn(move || state.run(rx))
            .map_err(|e| format!("cannot start the publisher thread: {e}"))?;
        Ok(Publisher {
            tx: Some(tx),
            after,
            snapshot_every: config.snapshot_every,
            thread: Some(thread),
            stats,
            client,
        })
    }

    /// The newest event seq already in the stream when this matcher started: replayed events
    /// up to it are not published again.
    pub fn after(&self) -> u64 {
        self.after
    }

    pub fn snapshot_every(&self) -> u64 {
        self.snapshot_every
    }

    pub fn stats(&self) -> &Arc<BusStats> {
        &self.stats
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Queues events for publishing (waits while the queue is full); those at or below
    /// [`after`](Self::after) are skipped.
    pub fn events(&self, events: &[Event]) {
        let start = events.partition_point(|e| e.seq <= self.after);
        if start == events.len() {
            return;
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(Item::Events(events[start..].to_vec()));
        }
    }

    /// Queues a feeds snapshot, to be stored once every event before it is in the stream.
    pub fn snapshot(&self, snapshot: FeedsSnapshot) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Item::Snapshot(snapshot));
        }
    }

    /// Publishes what is queued, waits for every acknowledgement and stops the thread.
    pub fn finish(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.finish();
    }
}

async fn ensure_stream(
    js: &jetstream::Context,
    config: &BusConfig,
) -> Result<stream::Stream, String> {
    js.get_or_create_stream(stream::Config {
        name: config.stream.clone(),
        subjects: vec![config.events_wildcard()],
        max_age: config.max_age,
        max_bytes: if config.max_bytes == 0 {
            -1
        } else {
            config.max_bytes as i64
        },
        duplicate_window: config.duplicate_window,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot create or open the stream {}: {e}", config.stream))
}

async fn ensure_bucket(
    js: &jetstream::Context,
    config: &BusConfig,
) -> Result<object_store::ObjectStore, String> {
    if let Ok(store) = js.get_object_store(&config.snapshot_bucket).await {
        return Ok(store);
    }
    js.create_object_store(object_store::Config {
        bucket: config.snapshot_bucket.clone(),
        description: Some("tickerd feeds snapshots for gateways".into()),
        ..Default::default()
    })
    .await
    .map_err(|e| {
        format!(
            "cannot create the snapshot bucket {}: {e}",
            config.snapshot_bucket
        )
    })
}

/// The seq of the newest event in the stream (0 when it holds none).
async fn last_published(stream: &mut stream::Stream) -> Result<u64, String> {
    let info = stream
        .info()
        .await
        .map_err(|e| format!("cannot read the stream's state: {e}"))?;
    let last = info.state.last_sequence;
    if info.state.messages == 0 || last == 0 {
        return Ok(0);
    }
    let message = stream
        .get_raw_message(last)
        .await
        .map_err(|e| format!("cannot read the stream's last message ({last}): {e}"))?;
    message
        .headers
        .get(LAST_SEQ_HEADER)
        .and_then(|v| v.as_str().parse().ok())
        .ok_or_else(|| format!("stream message {last} has no {LAST_SEQ_HEADER} header"))
}

struct Message {
    last_seq: u64,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
}

struct State {
    js: jetstream::Context,
    stream: stream::Stream,
    store: object_store::ObjectStore,
    config: BusConfig,
    handle: Handle,
    in_flight: VecDeque<(Message, Option<PublishAckFuture>)>,
    /// The newest event seq handed to NATS.
    published: u64,
    /// After a gap (events the stream never got and no longer can): publish nothing until the
    /// next snapshot, which gateways start from.
    waiting_for_snapshot: bool,
    stats: Arc<BusStats>,
    scratch: Vec<u8>,
    /// Set once the market stops: after it the publisher gives up on NATS (the next start
    /// publishes what is left, from the journal).
    give_up_at: Option<std::time::Instant>,
}

impl State {
    fn run(&mut self, rx: Receiver<Item>) {
        loop {
            let item = match rx.recv_timeout(Duration::from_millis(1)) {
                Ok(item) => item,
                Err(RecvTimeoutError::Timeout) => {
                    // Idle: collect the acknowledgements, then wait for more.
                    self.settle();
                    match rx.recv() {
                        Ok(item) => item,
                        Err(_) => break,
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            match item {
                Item::Events(events) => self.publish_events(&events),
                Item::Snapshot(snapshot) => self.store_snapshot(snapshot),
            }
        }
        self.give_up_at = Some(std::time::Instant::now() + self.config.connect_timeout);
        self.settle();
    }

    fn publish_events(&mut self, events: &[Event]) {
        for chunk in wire::per_command(events) {
            let (first, last) = (chunk[0].seq, chunk[chunk.len() - 1].seq);
            if last <= self.published {
                continue;
            }
            if first != self.published + 1 && !self.waiting_for_snapshot {
                tracing::error!(
                    "bus: events {} to {} never reached the stream (it ends at {}); gateways restart from the next snapshot",
                    self.published + 1,
                    first - 1,
                    self.published
                );
                self.waiting_for_snapshot = true;
            }
            if self.waiting_for_snapshot {
                continue;
            }
            self.scratch.clear();
            wire::encode_events(chunk, &mut self.scratch);
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                first.to_string().as_str(),
            );
            headers.insert(LAST_SEQ_HEADER, last.to_string().as_str());
            let message = Message {
                last_seq: last,
                subject: self.config.events_subject(wire::subject_instrument(chunk)),
                headers,
                payload: Bytes::copy_from_slice(&self.scratch),
            };
            self.published = last;
            self.send(message);
        }
    }

    /// Publishes one message, keeping at most `publish_window` unacknowledged.
    fn send(&mut self, message: Message) {
        while self.in_flight.len() >= self.config.publish_window {
            self.settle_one();
        }
        let sent = self.handle.block_on(self.js.publish_with_headers(
            message.subject.clone(),
            message.headers.clone(),
            message.payload.clone(),
        ));
        match sent {
            Ok(ack) => self.in_flight.push_back((message, Some(ack))),
            Err(e) => {
                tracing::warn!("bus: publish failed ({e}); resending from the stream's end");
                self.in_flight.push_back((message, None));
                self.recover();
            }
        }
    }

    /// Waits for the oldest acknowledgement.
    fn settle_one(&mut self) {
        let Some((message, Some(ack))) = self.in_flight.pop_front() else {
            return;
        };
        match self.handle.block_on(async { ack.await }) {
            Ok(ack) => {
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .applied_seq
                    .store(message.last_seq, Ordering::Relaxed);
                self.stats.stream_seq.store(ack.sequence, Ordering::Relaxed);
                if ack.duplicate {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::warn!(
                    "bus: publish not acknowledged ({e}); resending from the stream's end"
                );
                self.in_flight.push_front((message, None));
                self.recover();
            }
        }
    }

    fn settle(&mut self) {
        while !self.in_flight.is_empty() {
            self.settle_one();
        }
    }

    /// After a failed publish: read where the stream really ends (retrying until NATS
    /// answers) and publish again, in order, every message after it. The `Nats-Msg-Id`
    /// makes a resend of a message that did arrive harmless within the duplicate window.
    fn recover(&mut self) {
        let pending: Vec<Message> = self.in_flight.drain(..).map(|(m, _)| m).collect();
        let mut backoff = Duration::from_millis(50);
        loop {
            if self
                .give_up_at
                .is_some_and(|at| std::time::Instant::now() >= at)
            {
                tracing::error!(
                    "bus: stopping with {} messages unpublished (NATS unreachable); the next start publishes them from the journal",
                    pending.len()
                );
                return;
            }
            self.stats.publish_retries.fetch_add(1, Ordering::Relaxed);
            let end = self.handle.block_on(last_published(&mut self.stream));
            let Ok(end) = end else {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            };
            let mut ok = true;
            for m in pending.iter().filter(|m| m.last_seq > end) {
                let sent = self.handle.block_on(async {
                    self.js
                        .publish_with_headers(
                            m.subject.clone(),
                            m.headers.clone(),
                            m.payload.clone(),
                        )
                        .await?
                        .await
                });
                match sent {
                    Ok(ack) => {
                        self.stats.published.fetch_add(1, Ordering::Relaxed);
                        self.stats.applied_seq.store(m.last_seq, Ordering::Relaxed);
                        self.stats.stream_seq.store(ack.sequence, Ordering::Relaxed);
                    }
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                return;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Stores a feeds snapshot once every event it covers is acknowledged, with the stream
    /// sequence a gateway resumes after.
    fn store_snapshot(&mut self, snapshot: FeedsSnapshot) {
        self.settle();
        let seq = snapshot.last_seq();
        if seq < self.published {
            return;
        }
        let bytes = snapshot.encode();
        // The stream's own end: after a gap the last message may be older than `seq`.
        let stream_seq = match self.handle.block_on(self.stream.info()) {
            Ok(info) => info.state.last_sequence,
            Err(e) => {
                tracing::warn!("bus: snapshot at {seq} not stored: cannot read the stream ({e})");
                return;
            }
        };
        let meta = object_store::ObjectMetadata {
            name: SNAPSHOT_OBJECT.into(),
            description: Some(format!("feeds at event {seq}")),
            metadata: HashMap::from([
                (SNAPSHOT_SEQ.to_string(), seq.to_string()),
                (SNAPSHOT_STREAM_SEQ.to_string(), stream_seq.to_string()),
            ]),
            ..Default::default()
        };
        match self
            .handle
            .block_on(self.store.put(meta, &mut bytes.as_slice()))
        {
            Ok(_) => {
                self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
                self.stats.snapshot_seq.store(seq, Ordering::Relaxed);
                if self.waiting_for_snapshot {
                    tracing::info!("bus: snapshot at {seq} stored; publishing resumes after it");
                    self.waiting_for_snapshot = false;
                    self.published = seq;
                }
            }
            Err(e) => tracing::warn!("bus: snapshot at {seq} not stored: {e}"),
        }
    }
}
