//! A gateway's side of the stream: load the newest feeds snapshot, then apply every event
//! message after it, in stream order, to feeds of its own — the same views, topics, `seq`s and
//! checksums as the matcher's, since the feeds are a function of the events.

use super::wire::{self, SNAPSHOT_OBJECT, SNAPSHOT_SEQ, SNAPSHOT_STREAM_SEQ};
use super::{BusConfig, BusStats};
use async_nats::jetstream::{self, consumer, stream};
use async_nats::Client;
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use ticker_engine::Event;
use ticker_feeds::snapshot::FeedsSnapshot;
use ticker_feeds::{FeedsConfig, Hub, Instruments, MarketData};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// Events for the gateway's feeds thread, with where they were in the stream.
pub struct Delivery {
    pub events: Vec<Event>,
    pub stream_seq: u64,
    /// Messages in the stream after this one.
    pub pending: u64,
    /// When the matcher published it (ns since the Unix epoch).
    pub published_ns: u64,
    /// Stream messages it holds.
    pub messages: u64,
}

/// A gateway that has loaded its starting point and is following the stream.
pub struct Following {
    pub md: MarketData,
    pub deliveries: mpsc::Receiver<Delivery>,
    pub stats: Arc<BusStats>,
    pub client: Client,
    pub consumer: tokio::task::JoinHandle<()>,
    /// The event seq the gateway starts after (its snapshot's, or 0).
    pub start_seq: u64,
    /// The stream's last message when the gateway started, and the first it reads: the
    /// gateway serves once it has applied the first (a client resuming from any `seq` it saw
    /// elsewhere then finds it here).
    pub head: u64,
    pub from_stream_seq: u64,
}

/// Connects, loads the newest snapshot (or starts from the stream's first event if the
/// stream has never been cut) and starts consuming after it. Waits up to `connect_timeout`
/// for NATS and for a matcher to have created the stream.
pub async fn follow(
    config: &BusConfig,
    feeds: FeedsConfig,
    hub: Arc<Hub>,
    instruments: Arc<Instruments>,
) -> Result<Following, String> {
    let client = super::connect(config).await?;
    let js = jetstream::new(client.clone());
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let (mut stream, start) = loop {
        match starting_point(&js, config).await {
            Ok(found) => break found,
            Err(why) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("no starting point on the bus: {why}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let stats = Arc::new(BusStats::default());
    let (md, start_seq, stream_seq) = match start {
        Some((snapshot, stream_seq)) => {
            let seq = snapshot.last_seq();
            let md = MarketData::restore(feeds, hub, instruments, snapshot)
                .map_err(|e| format!("the bus snapshot at event {seq} is refused: {e}"))?;
            stats.snapshots.fetch_add(1, Ordering::Relaxed);
            stats.snapshot_seq.store(seq, Ordering::Relaxed);
            (md, seq, stream_seq)
        }
        None => (MarketData::new(feeds, hub, instruments), 0, 0),
    };
    stats.applied_seq.store(start_seq, Ordering::Relaxed);
    stats.stream_seq.store(stream_seq, Ordering::Relaxed);
    let head = stream
        .info()
        .await
        .map_err(|e| format!("stream {}: {e}", config.stream))?
        .state
        .last_sequence;
    let deliver_policy = if stream_seq == 0 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: stream_seq + 1,
        }
    };
    // A push consumer: measured on this 2-core machine, JetStream delivers a stream to one
    // 1.4–1.7× as fast as to a pull consumer (`ticker-bench catchup` prints both), and
    // flow control keeps it from running further ahead than the gateway reads. No subject
    // filter: the stream holds only event subjects, and a filter costs the server a match
    // per message.
    let ordered = stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot create a consumer of {}: {e}", config.stream))?;
    let messages = ordered
        .messages()
        .await
        .map_err(|e| format!("cannot consume {}: {e}", config.stream))?;
    let (tx, deliveries) = mpsc::channel(1024);
    let consumer = tokio::spawn(consume(messages, tx, stats.clone(), start_seq));
    Ok(Following {
        md,
        deliveries,
        stats,
        client,
        consumer,
        start_seq,
        head,
        from_stream_seq: stream_seq + 1,
    })
}

/// The stream, and the newest snapshot with the stream sequence it covers — `None` when the
/// stream can be read from its first event instead.
async fn starting_point(
    js: &jetstream::Context,
    config: &BusConfig,
) -> Result<(stream::Stream, Option<(FeedsSnapshot, u64)>), String> {
    let mut stream = js
        .get_stream(&config.stream)
        .await
        .map_err(|e| format!("stream {}: {e}", config.stream))?;
    if let Some(found) = newest_snapshot(js, config).await? {
        return Ok((stream, Some(found)));
    }
    let info = stream
        .info()
        .await
        .map_err(|e| format!("stream {}: {e}", config.stream))?;
    let (messages, first_sequence) = (info.state.messages, info.state.first_sequence);
    if messages == 0 {
        return Ok((stream, None));
    }
    let first = stream
        .get_raw_message(first_sequence)
        .await
        .map_err(|e| format!("stream {}: {e}", config.stream))?;
    let id = first
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|v| v.as_str().to_string());
    if id.as_deref() == Some("1") {
        Ok((stream, None))
    } else {
        Err(format!(
            "the stream starts at event {} and there is no snapshot yet",
            id.unwrap_or_default()
        ))
    }
}

async fn newest_snapshot(
    js: &jetstream::Context,
    config: &BusConfig,
) -> Result<Option<(FeedsSnapshot, u64)>, String> {
    let Ok(store) = js.get_object_store(&config.snapshot_bucket).await else {
        return Ok(None);
    };
    let Ok(mut object) = store.get(SNAPSHOT_OBJECT).await else {
        return Ok(None);
    };
    let meta = |key: &str| -> Result<u64, String> {
        object
            .info
            .metadata
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("the snapshot has no {key} metadata"))
    };
    let (seq, stream_seq) = (meta(SNAPSHOT_SEQ)?, meta(SNAPSHOT_STREAM_SEQ)?);
    let mut bytes = Vec::with_capacity(object.info.size);
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("reading the snapshot: {e}"))?;
    let snapshot = FeedsSnapshot::decode(&bytes)
        .map_err(|e| format!("the snapshot at event {seq} does not decode: {e}"))?;
    if snapshot.last_seq() != seq {
        return Err(format!(
            "the snapshot says event {seq} but holds feeds at {}",
            snapshot.last_seq()
        ));
    }
    Ok(Some((snapshot, stream_seq)))
}

/// Decodes each message and hands its new events to the feeds thread, in order: the messages
/// already received go as one delivery (one wake of the feeds thread per batch, not per
/// message, when catching up). A message that does not follow the last event applied (a gap:
/// the matcher lost events it could not publish) stops the gateway: its feeds could no longer
/// match the matcher's.
async fn consume<S, E>(
    mut messages: S,
    tx: mpsc::Sender<Delivery>,
    stats: Arc<BusStats>,
    start: u64,
) where
    S: futures_util::Stream<Item = Result<jetstream::Message, E>> + Unpin,
    E: std::fmt::Display,
{
    use futures_util::FutureExt;
    /// Events per delivery at most while catching up.
    const BATCH_EVENTS: usize = 8192;
    let mut last = start;
    let mut batch: Option<Delivery> = None;
    loop {
        let next = if batch.is_some() {
            match messages.next().now_or_never() {
                Some(next) => next,
                None => {
                    // Nothing more is ready: hand over what is gathered.
                    let d = batch.take().expect("a batch");
                    if tx.send(d).await.is_err() {
                        return;
                    }
                    continue;
                }
            }
        } else {
            messages.next().await
        };
        let Some(next) = next else {
            if let Some(d) = batch.take() {
                let _ = tx.send(d).await;
            }
            return;
        };
        let message = match next {
            Ok(m) => m,
            Err(e) => {
                // The ordered consumer recreates itself after a missed message or a lost
                // connection; errors it yields are worth a log line, not a stop.
                tracing::warn!("bus: consuming the stream: {e}");
                continue;
            }
        };
        let (stream_seq, pending, published_ns) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                info.pending,
                info.published.unix_timestamp_nanos().max(0) as u64,
            ),
            Err(e) => {
                stats.fail(format!("a stream message without JetStream metadata: {e}"));
                return;
            }
        };
        let d = batch.get_or_insert_with(|| Delivery {
            events: Vec::with_capacity(256),
            stream_seq,
            pending,
            published_ns,
            messages: 0,
        });
        let before = d.events.len();
        if let Err(why) = wire::decode_events_into(&message.payload, &mut d.events) {
            stats.fail(format!("stream message {stream_seq} is unreadable: {why}"));
            return;
        }
        // A republished message (a matcher restarting) holds nothing new: it still moves the
        // gateway's place in the stream.
        let fresh = d.events[before..].partition_point(|e| e.seq <= last);
        d.events.drain(before..before + fresh);
        let first = d.events.get(before).map_or(last + 1, |e| e.seq);
        if first != last + 1 {
            stats.fail(format!(
                "events {} to {} are missing from the stream (message {stream_seq} starts at {first}); restart the gateway to load the newest snapshot",
                last + 1,
                first - 1
            ));
            return;
        }
        last = d.events.last().map_or(last, |e| e.seq.max(last));
        d.stream_seq = stream_seq;
        d.messages += 1;
        d.pending = pending;
        d.published_ns = published_ns;
        if d.events.len() >= BATCH_EVENTS {
            let d = batch.take().expect("a batch");
            if tx.send(d).await.is_err() {
                return;
            }
        }
    }
}
