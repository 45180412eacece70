//! `stream` mode: how fast one connection can take a market-data stream, per front. The
//! spawned tickerd's hub is fed pre-encoded trade messages as fast as the subscriber takes
//! them (the engine and feeds are bypassed: a single order-entry connection cannot produce a
//! million updates a second, see `throughput`), and one subscriber per kind counts whole
//! messages — gRPC frames undecoded, WebSocket frames uninflated — so the figure is what the
//! server can send to one connection. The publisher stays at most `WINDOW` messages ahead of
//! the subscriber, below the trades topic's queue limit, so the lossless topic never
//! disconnects it.

use super::flow::{Series, Server};
use super::frame_count::{self, Totals};
use super::{Kind, StreamArgs, Target};
use bytes::{Buf, Bytes};
use serde_json::{json, Value};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticker_feeds::hub::TopicState;
use ticker_feeds::trades::TradeUpdate;
use ticker_feeds::{Channel, Encode, Message, MessageKind, Topic};
use ticker_proto::v1 as pb;
use tokio::sync::{watch, Semaphore};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Messages the publisher may run ahead of the subscriber.
const WINDOW: u64 = 4096;

pub fn run(args: &StreamArgs) -> anyhow::Result<(Value, Vec<Series>)> {
    anyhow::ensure!(
        args.target.spawn,
        "stream mode feeds the hub of a tickerd it spawns: add --spawn"
    );
    anyhow::ensure!(args.messages > 0, "--messages must be at least 1");
    let mut target = args.target.clone();
    target.sim_rate = None;
    let server = Server::start(&target, 1, 64, super::Via::Single)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ticker-bench")
        .enable_all()
        .build()?;
    let result = (|| {
        let market = server.market().expect("spawned");
        let wire = market
            .instruments()
            .by_symbol(&args.target.instrument)
            .ok_or_else(|| anyhow::anyhow!("no instrument {}", args.target.instrument))?;
        let mut results = Vec::new();
        // Each kind gets a fresh seq range above the last, as a live topic would.
        let mut first_seq = 1;
        for &kind in &args.kinds {
            let messages: Vec<Arc<Message>> = (first_seq..first_seq + args.messages)
                .map(|seq| {
                    let trade = TradeUpdate {
                        wire: wire.clone(),
                        ts: seq,
                        trade_id: seq,
                        price: 6_500_000 + (seq % 100) as i64,
                        size: 1 + seq % 7,
                        aggressor: ticker_engine::Side::Buy,
                    };
                    Message::encoded(
                        seq,
                        seq - 1,
                        MessageKind::Update,
                        trade.json(seq, seq - 1),
                        trade.proto(seq, seq - 1),
                    )
                })
                .collect();
            first_seq += args.messages;
            let topic = market.hub().topic(Topic::Market {
                channel: Channel::Trades,
                instrument: wire.id(),
            });
            let target = server.endpoints.subscriber(kind)?;
            results.push(runtime.block_on(one(kind, target, topic, messages, wire.symbol()))?);
        }
        anyhow::Ok(results)
    })();
    runtime.shutdown_timeout(Duration::from_secs(1));
    server.shutdown();
    let results = result?;
    Ok((
        json!({
            "mode": "stream",
            "messages_per_kind": args.messages,
            "results": results,
            "method": "Pre-encoded trade messages published into the spawned server's hub (engine and feeds bypassed), at most 4,096 ahead of the one subscriber, which counts whole messages without decoding (gRPC) or inflating (WebSocket). Rate = messages / time from the first publish to the last message counted.",
        }),
        Vec::new(),
    ))
}

/// Streams `messages` to one subscriber of `kind`.
async fn one(
    kind: Kind,
    target: Target,
    topic: Arc<TopicState>,
    messages: Vec<Arc<Message>>,
    instrument: &str,
) -> anyhow::Result<Value> {
    let n = messages.len() as u64;
    let received = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let reader = match target {
        Target::Grpc(addr) => {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect()
                .await?;
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await?;
            let path =
                http::uri::PathAndQuery::from_static("/ticker.v1.MarketDataService/Subscribe");
            let request = pb::SubscribeRequest {
                instruments: vec![instrument.to_string()],
                channels: vec![pb::Channel::Trades as i32],
                ..Default::default()
            };
            let mut stream = grpc
                .server_streaming(tonic::Request::new(request), path, RawCodec::default())
                .await?
                .into_inner();
            let (received, bytes) = (received.clone(), bytes.clone());
            tokio::spawn(async move {
                while let Some(m) = stream.message().await? {
                    // 5 bytes of gRPC framing per message; HTTP/2 frame headers not counted.
                    bytes.fetch_add(m.len() as u64 + 5, Ordering::Relaxed);
                    if received.fetch_add(1, Ordering::Relaxed) + 1 == n {
                        break;
                    }
                }
                anyhow::Ok(())
            })
        }
        Target::Ws { addr, offer } => {
            let totals = Arc::new(Totals::default());
            let subscribe = super::subscribe::subscribe_json(&super::subscribe::Subscription {
                instrument: instrument.to_string(),
                channels: vec!["trades".into()],
                ..Default::default()
            });
            let gate = Arc::new(Semaphore::new(1)).acquire_owned().await?;
            let run = tokio::spawn(frame_count::run(
                addr,
                offer,
                subscribe,
                [7, 1, 3, 9],
                totals.clone(),
                gate,
                stop_rx,
            ));
            while totals.subscribed.load(Ordering::Relaxed) == 0 {
                anyhow::ensure!(!run.is_finished(), "the WebSocket subscriber ended");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let (received, bytes) = (received.clone(), bytes.clone());
            tokio::spawn(async move {
                loop {
                    let frames = totals.frames.load(Ordering::Relaxed);
                    received.store(frames, Ordering::Relaxed);
                    bytes.store(totals.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
                    if frames >= n || run.is_finished() {
                        break;
                    }
                    // The publisher's window (4,096 messages) outlasts a 1 ms poll at any
                    // rate this machine reaches.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                anyhow::Ok(())
            })
        }
    };
    let start = Instant::now();
    let publisher = {
        let received = received.clone();
        std::thread::spawn(move || {
            for (i, m) in messages.into_iter().enumerate() {
                while i as u64 - received.load(Ordering::Relaxed) >= WINDOW {
                    std::thread::yield_now();
                }
                topic.publish(m);
            }
        })
    };
    reader.await??;
    let elapsed = start.elapsed();
    let _ = stop_tx.send(true);
    publisher
        .join()
        .map_err(|_| anyhow::anyhow!("the publisher panicked"))?;
    let count = received.load(Ordering::Relaxed);
    anyhow::ensure!(
        count >= n,
        "{}: {count} of {n} messages arrived",
        kind.name()
    );
    let rate = count as f64 / elapsed.as_secs_f64();
    Ok(json!({
        "kind": kind.name(),
        "messages": count,
        "seconds": elapsed.as_secs_f64(),
        "messages_per_second": rate,
        "wire_bytes_per_message": bytes.load(Ordering::Relaxed) as f64 / count as f64,
    }))
}

/// Decodes nothing: each gRPC message arrives as its bytes; requests `Req` are encoded with
/// prost.
pub struct RawCodec<Req = pb::SubscribeRequest>(PhantomData<fn(Req)>);
pub struct RawDecoder;
pub struct RequestEncoder<Req>(PhantomData<fn(Req)>);

impl<Req> Default for RawCodec<Req> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

impl<Req: prost::Message> Encoder for RequestEncoder<Req> {
    type Item = Req;
    type Error = Status;
    fn encode(&mut self, item: Req, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl<Req: prost::Message + Send + 'static> Codec for RawCodec<Req> {
    type Encode = Req;
    type Decode = Bytes;
    type Encoder = RequestEncoder<Req>;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RequestEncoder<Req> {
        RequestEncoder(PhantomData)
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}
