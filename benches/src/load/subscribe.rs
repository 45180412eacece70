//! Market-data subscribers that check everything they receive: over gRPC (`Subscribe`, decoded
//! with prost) and over WebSocket (inflated when compressed, parsed as JSON). Each one logs
//! the `seq` and arrival time of every message for the latency join, checks `prev_seq`
//! continuity per channel, keeps a depth replica and verifies every depth checksum, and times
//! each message from the engine's timestamp to its arrival (same host, same wall clock).
//!
//! A subscriber may also resume channels from a `seq` (the soak's reconnecting subscribers):
//! the first message of a resumed channel must then chain to it (`prev_seq == from_seq`), or
//! it counts as a gap. And a WebSocket subscriber may read with pauses (the soak's slow
//! readers), leaving the server to apply its slow-subscriber policies.

use super::counting::Counting;
use super::depth_check::DepthReplica;
use super::latency::{histogram, Received};
use super::{Clock, Target};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use ticker_proto::v1 as pb;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tungstenite::Message as WsMessage;

/// What a subscriber asks for.
#[derive(Debug, Clone, Default)]
pub struct Subscription {
    pub instrument: String,
    /// Channel names as on the WebSocket: `ticker`, `depth`, `trades`.
    pub channels: Vec<String>,
    /// Channels to resume after a `seq` (the last one received) instead of starting afresh.
    pub resume: Vec<(String, u64)>,
    /// WebSocket only: read like a slow client, in turns of reading and not reading.
    pub pauses: Option<ReadPauses>,
}

/// A slow reader's rhythm: read for `read`, then take nothing from the socket for `pause`.
#[derive(Debug, Clone, Copy)]
pub struct ReadPauses {
    pub read: Duration,
    pub pause: Duration,
}

/// Counters the orchestrator samples while the subscriber runs, to rate a time window.
#[derive(Debug, Default)]
pub struct Live {
    pub messages: AtomicU64,
    /// The highest `seq` received so far.
    pub highest_seq: AtomicU64,
    pub wire_bytes: Arc<AtomicU64>,
}

/// What a subscriber saw.
#[derive(Debug)]
pub struct SubLog {
    pub received: Vec<Received>,
    /// Market-data messages whose `prev_seq` skipped a message on a lossless channel (trades)
    /// or an update whose `prev_seq` did not follow (depth): must stay 0.
    pub gaps: u64,
    /// Ticker messages that skipped older ones (the slow-subscriber policy, not an error).
    pub conflated: u64,
    /// Depth snapshots after the first (resyncs of a subscriber that fell behind).
    pub resyncs: u64,
    pub checksums_ok: u64,
    pub checksums_bad: u64,
    /// Engine timestamp → arrival, per message.
    pub engine_to_client: Histogram<u64>,
    /// Set when the server ended the subscription.
    pub ended: Option<String>,
    /// The last `seq` received per channel: where to resume from.
    pub last_seq: BTreeMap<&'static str, u64>,
    /// Resumed channels whose first message chained to the `from_seq` asked for.
    pub resumes_verified: u64,
}

/// A depth message's levels per side (price, size as sent) and its checksum.
type DepthFacts<'a> = (&'a [(String, String)], &'a [(String, String)], u32);

/// One message's facts, whatever the front.
struct Facts<'a> {
    channel: &'static str,
    seq: u64,
    prev_seq: u64,
    ts_ns: u64,
    snapshot: bool,
    depth: Option<DepthFacts<'a>>,
}

struct Verifier {
    clock: Clock,
    live: Arc<Live>,
    last_seq: HashMap<&'static str, u64>,
    depth: DepthReplica,
    depth_seen: bool,
    /// Resumed channels whose first message has not arrived yet, with their `from_seq`.
    resuming: HashMap<&'static str, u64>,
    log: SubLog,
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The name of a channel the load tool measures, as a `'static` key.
fn channel_key(name: &str) -> anyhow::Result<&'static str> {
    Ok(match name {
        "ticker" => "ticker",
        "depth" => "depth",
        "trades" => "trades",
        other => anyhow::bail!("channel {other:?} is not one the load tool measures"),
    })
}

impl Verifier {
    /// A verifier that expects each resumed channel to continue from its `from_seq`.
    fn new(clock: Clock, live: Arc<Live>, resume: &[(String, u64)]) -> anyhow::Result<Self> {
        let resuming = resume
            .iter()
            .map(|(channel, from)| Ok((channel_key(channel)?, *from)))
            .collect::<anyhow::Result<HashMap<_, _>>>()?;
        Ok(Verifier {
            clock,
            live,
            // A resumed channel's first message is checked against its `from_seq` like any
            // later message against the one before it.
            last_seq: resuming.clone(),
            resuming,
            depth: DepthReplica::default(),
            depth_seen: false,
            log: SubLog {
                received: Vec::with_capacity(1 << 16),
                gaps: 0,
                conflated: 0,
                resyncs: 0,
                checksums_ok: 0,
                checksums_bad: 0,
                engine_to_client: histogram(),
                ended: None,
                last_seq: BTreeMap::new(),
                resumes_verified: 0,
            },
        })
    }

    /// The log, with the last `seq` of each channel.
    fn finish(mut self) -> SubLog {
        self.log.last_seq = self.last_seq.into_iter().collect();
        self.log
    }

    fn message(&mut self, f: Facts<'_>) {
        let at_ns = self.clock.now_ns();
        let wall = wall_ns();
        self.live.messages.fetch_add(1, Ordering::Relaxed);
        self.live.highest_seq.fetch_max(f.seq, Ordering::Relaxed);
        self.log.received.push(Received { seq: f.seq, at_ns });
        if f.ts_ns > 0 {
            self.log
                .engine_to_client
                .saturating_record(wall.saturating_sub(f.ts_ns).max(1));
        }
        let last = self.last_seq.insert(f.channel, f.seq);
        if let Some(from) = self.resuming.remove(f.channel) {
            if !f.snapshot && f.prev_seq == from {
                self.log.resumes_verified += 1;
            }
        }
        if !f.snapshot {
            if let Some(last) = last {
                if f.prev_seq != last {
                    if f.channel == "ticker" {
                        self.log.conflated += 1;
                    } else {
                        self.log.gaps += 1;
                    }
                }
            }
        }
        if let Some((bids, asks, checksum)) = f.depth {
            if f.snapshot {
                if self.depth_seen {
                    self.log.resyncs += 1;
                }
                self.depth_seen = true;
            }
            let ok = self.depth.apply(f.snapshot, bids, asks).is_ok()
                && self.depth.checksum() == checksum;
            if ok {
                self.log.checksums_ok += 1;
            } else {
                self.log.checksums_bad += 1;
            }
        }
    }
}

/// Runs a subscriber until `stop` turns true; `ready` fires once it is subscribed.
pub async fn run(
    target: Target,
    subscription: Subscription,
    clock: Clock,
    live: Arc<Live>,
    ready: oneshot::Sender<()>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<SubLog> {
    match target {
        Target::Grpc(addr) => grpc(addr, subscription, clock, live, ready, stop).await,
        Target::Ws { addr, offer } => ws(addr, offer, subscription, clock, live, ready, stop).await,
    }
}

pub fn grpc_channel(name: &str) -> anyhow::Result<pb::Channel> {
    Ok(match name {
        "ticker" => pb::Channel::Ticker,
        "depth" => pb::Channel::Depth,
        "trades" => pb::Channel::Trades,
        other => anyhow::bail!("channel {other:?} is not one the load tool measures"),
    })
}

async fn grpc(
    addr: std::net::SocketAddr,
    subscription: Subscription,
    clock: Clock,
    live: Arc<Live>,
    ready: oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<SubLog> {
    use pb::market_data_message::Payload;
    let bytes = live.wire_bytes.clone();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let bytes = bytes.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(Counting::new(tcp, bytes)))
            }
        }))
        .await?;
    let mut client = pb::market_data_service_client::MarketDataServiceClient::new(channel)
        .max_decoding_message_size(4 << 20);
    let request = pb::SubscribeRequest {
        instruments: vec![subscription.instrument.clone()],
        channels: subscription
            .channels
            .iter()
            .map(|c| grpc_channel(c).map(|c| c as i32))
            .collect::<anyhow::Result<_>>()?,
        resume: subscription
            .resume
            .iter()
            .map(|(channel, from_seq)| {
                Ok(pb::ResumePoint {
                    instrument: subscription.instrument.clone(),
                    channel: grpc_channel(channel)? as i32,
                    from_seq: *from_seq,
                })
            })
            .collect::<anyhow::Result<_>>()?,
        ..Default::default()
    };
    let mut v = Verifier::new(clock, live, &subscription.resume)?;
    let mut stream = client.subscribe(request).await?.into_inner();
    let _ = ready.send(());
    let levels = |l: &[pb::Level]| -> Vec<(String, String)> {
        l.iter()
            .map(|l| (l.price.clone(), l.size.clone()))
            .collect()
    };
    loop {
        let next = tokio::select! {
            _ = stop.changed() => break,
            m = stream.message() => m,
        };
        let m = match next {
            Ok(Some(m)) => m,
            Ok(None) => {
                v.log.ended = Some("stream ended".into());
                break;
            }
            Err(status) => {
                v.log.ended = Some(format!("{:?}: {}", status.code(), status.message()));
                break;
            }
        };
        let snapshot = m.delivery != pb::Delivery::Update as i32
            && m.delivery != pb::Delivery::Conflated as i32;
        let (channel, depth) = match &m.payload {
            Some(Payload::Ticker(_)) => ("ticker", None),
            Some(Payload::Trade(_)) => ("trades", None),
            Some(Payload::Depth(d)) => ("depth", Some((levels(&d.bids), levels(&d.asks), d))),
            Some(Payload::Gap(_)) => {
                v.log.gaps += 1;
                continue;
            }
            _ => continue,
        };
        v.message(Facts {
            channel,
            seq: m.seq,
            prev_seq: m.prev_seq,
            ts_ns: m.timestamp_ns,
            snapshot: snapshot || depth.as_ref().is_some_and(|d| d.2.snapshot),
            depth: depth
                .as_ref()
                .map(|(b, a, d)| (b.as_slice(), a.as_slice(), d.checksum)),
        });
    }
    Ok(v.finish())
}

/// The fields of a WebSocket market-data message the load tool reads.
#[derive(serde::Deserialize)]
struct WsMarketData {
    #[serde(rename = "type")]
    kind: String,
    channel: Option<String>,
    seq: Option<u64>,
    prev_seq: Option<u64>,
    ts: Option<u64>,
    bids: Option<Vec<(String, String)>>,
    asks: Option<Vec<(String, String)>>,
    checksum: Option<u32>,
    code: Option<String>,
    message: Option<String>,
}

/// The `subscribe` op for `subscription`.
pub fn subscribe_json(subscription: &Subscription) -> String {
    let channels: Vec<_> = subscription
        .channels
        .iter()
        .map(|c| {
            let mut channel = serde_json::json!({"name": c, "instrument": subscription.instrument});
            if let Some((_, from_seq)) = subscription.resume.iter().find(|(r, _)| r == c) {
                channel["from_seq"] = (*from_seq).into();
            }
            channel
        })
        .collect();
    serde_json::json!({"op": "subscribe", "id": 1, "channels": channels}).to_string()
}

async fn ws(
    addr: std::net::SocketAddr,
    offer: Option<&'static str>,
    subscription: Subscription,
    clock: Clock,
    live: Arc<Live>,
    ready: oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<SubLog> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let io = Counting::new(tcp, live.wire_bytes.clone());
    let mut conn = ticker_servers::ws::client::client_handshake(
        io,
        &addr.to_string(),
        "/ws",
        offer,
        &Default::default(),
        None,
    )
    .await?;
    anyhow::ensure!(
        offer.is_none() || conn.negotiated.is_some(),
        "the server at {addr} declined permessage-deflate"
    );
    conn.ws
        .send(WsMessage::text(subscribe_json(&subscription)))
        .await?;
    let mut ready = Some(ready);
    let mut v = Verifier::new(clock, live, &subscription.resume)?;
    // A slow reader's current turn of reading started here (once subscribed).
    let mut reading_since: Option<tokio::time::Instant> = None;
    loop {
        if let (Some(p), Some(since)) = (subscription.pauses, reading_since) {
            if since.elapsed() >= p.read {
                // The pause is the behaviour under test: the socket is left unread.
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(p.pause) => {}
                }
                reading_since = Some(tokio::time::Instant::now());
            }
        }
        let next = tokio::select! {
            _ = stop.changed() => break,
            m = conn.ws.next() => m,
        };
        let text = match next {
            None => {
                v.log.ended = Some("connection ended".into());
                break;
            }
            Some(Err(e)) => {
                v.log.ended = Some(e.to_string());
                break;
            }
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(WsMessage::Close(frame))) => {
                v.log.ended = Some(format!("closed: {frame:?}"));
                break;
            }
            Some(Ok(_)) => continue,
        };
        let m: WsMarketData = serde_json::from_str(&text)?;
        let channel = match (m.kind.as_str(), m.channel.as_deref()) {
            ("subscribed", _) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                reading_since = Some(tokio::time::Instant::now());
                continue;
            }
            ("error", _) => anyhow::bail!(
                "subscribe refused: {} {}",
                m.code.unwrap_or_default(),
                m.message.unwrap_or_default()
            ),
            ("gap", _) => {
                v.log.gaps += 1;
                continue;
            }
            (_, Some("ticker")) => "ticker",
            (_, Some("trades")) => "trades",
            (_, Some("depth")) => "depth",
            _ => continue,
        };
        let snapshot = m.kind == "snapshot";
        let depth = match (&m.bids, &m.asks, m.checksum) {
            (Some(b), Some(a), Some(c)) if channel == "depth" => {
                Some((b.as_slice(), a.as_slice(), c))
            }
            _ => None,
        };
        v.message(Facts {
            channel,
            seq: m.seq.unwrap_or(0),
            prev_seq: m.prev_seq.unwrap_or(0),
            ts_ns: m.ts.unwrap_or(0),
            snapshot,
            depth,
        });
    }
    Ok(v.finish())
}
