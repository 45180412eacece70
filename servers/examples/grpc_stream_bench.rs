//! Server-stream throughput to one consumer on loopback: trade messages published into the
//! feeds hub as fast as the consumer takes them, streamed by `MarketDataService/Subscribe` to
//! one tonic client in the same process, counted at the client.
//!
//! ```sh
//! cargo run --release -p ticker-servers --example grpc_stream_bench -- [messages] [--raw]
//! ```
//!
//! `--raw` counts the messages without decoding them (what the server can send); without it
//! the client decodes each one with prost, as an application would. The publisher keeps at most
//! `WINDOW` messages ahead of the client so the lossless trades topic never disconnects it.

use bytes::{Buf, Bytes};
use clap::Parser;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticker_feeds::{proto, Channel, FeedsConfig, HubConfig, Message, MessageKind, Topic};
use ticker_proto::v1 as pb;
use ticker_servers::grpc::{GrpcConfig, GrpcServer};
use ticker_servers::market::{Market, MarketConfig};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Messages the publisher may run ahead of the client (below the topic's queue limit).
const WINDOW: u64 = 1 << 15;

/// Server-stream throughput to one consumer on loopback.
#[derive(Parser, Debug)]
struct Flags {
    /// Messages to stream.
    #[arg(default_value_t = 2_000_000)]
    messages: u64,
    /// Count the messages without decoding them (what the server can send).
    #[arg(long)]
    raw: bool,
}

/// Decodes nothing: each message arrives as its bytes.
#[derive(Default)]
struct RawCodec;
struct RawDecoder;
struct RequestEncoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

impl Encoder for RequestEncoder {
    type Item = pb::SubscribeRequest;
    type Error = Status;
    fn encode(
        &mut self,
        item: pb::SubscribeRequest,
        dst: &mut EncodeBuf<'_>,
    ) -> Result<(), Status> {
        prost::Message::encode(&item, dst).map_err(|e| Status::internal(e.to_string()))
    }
}

impl Codec for RawCodec {
    type Encode = pb::SubscribeRequest;
    type Decode = Bytes;
    type Encoder = RequestEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RequestEncoder {
        RequestEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let Flags { messages: n, raw } = Flags::parse();

    let market = Market::start(MarketConfig {
        simulator: None,
        feeds: FeedsConfig {
            hub: HubConfig {
                lossless_queue: 2 * WINDOW as usize,
                ..HubConfig::default()
            },
            ..FeedsConfig::default()
        },
        ..MarketConfig::default()
    })?;
    let config = GrpcConfig {
        listen: "127.0.0.1:0".parse()?,
        ..GrpcConfig::default()
    };
    let server = GrpcServer::start(market.clone(), config).await?;
    let wire = market
        .instruments()
        .by_symbol("BTC-USD")
        .expect("default instrument");
    let topic = market.hub().topic(Topic::Market {
        channel: Channel::Trades,
        instrument: wire.id(),
    });

    // Encoded up front, as the feeds would have done once per trade.
    let messages: Vec<Arc<Message>> = (1..=n)
        .map(|seq| {
            let payload = proto::trade(
                &wire,
                seq,
                6_500_000 + (seq % 100) as i64,
                1 + seq % 7,
                ticker_engine::Side::Buy,
            );
            Message::encoded(
                seq,
                seq - 1,
                MessageKind::Update,
                Bytes::new(),
                proto::market(&wire, Channel::Trades, seq, seq - 1, seq, payload),
            )
        })
        .collect();
    let bytes_per_message = messages[0].proto().len();

    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", server.local_addr()))?
            .connect()
            .await?;
    let request = pb::SubscribeRequest {
        instruments: vec!["BTC-USD".into()],
        channels: vec![pb::Channel::Trades as i32],
        ..Default::default()
    };
    let received = Arc::new(AtomicU64::new(0));
    // Started once the subscription is open: a trades subscriber gets no history.
    let spawn_publisher = {
        let received = received.clone();
        move || {
            std::thread::spawn(move || {
                for (i, m) in messages.into_iter().enumerate() {
                    while i as u64 - received.load(Ordering::Relaxed) >= WINDOW {
                        std::thread::yield_now();
                    }
                    topic.publish(m);
                }
            })
        }
    };
    let publisher;

    let start;
    let mut count = 0u64;
    if raw {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await?;
        let path = http::uri::PathAndQuery::from_static("/ticker.v1.MarketDataService/Subscribe");
        let mut stream = grpc
            .server_streaming(tonic::Request::new(request), path, RawCodec)
            .await?
            .into_inner();
        publisher = spawn_publisher();
        start = Instant::now();
        while let Some(_m) = stream.message().await? {
            count += 1;
            received.store(count, Ordering::Relaxed);
            if count == n {
                break;
            }
        }
    } else {
        let mut client = pb::market_data_service_client::MarketDataServiceClient::new(channel);
        let mut stream = client.subscribe(request).await?.into_inner();
        publisher = spawn_publisher();
        start = Instant::now();
        while let Some(m) = stream.message().await? {
            count += 1;
            received.store(count, Ordering::Relaxed);
            if m.seq == n {
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    publisher
        .join()
        .map_err(|_| anyhow::anyhow!("publisher panicked"))?;
    let rate = count as f64 / elapsed.as_secs_f64();
    println!(
        "server stream to one {} client on loopback: {count} messages of {bytes_per_message} bytes in {:.3} s = {:.2} M messages/s ({:.0} MB/s of payload)",
        if raw { "counting (no decode)" } else { "decoding (prost)" },
        elapsed.as_secs_f64(),
        rate / 1e6,
        rate * bytes_per_message as f64 / 1e6
    );
    server.shutdown(Duration::from_secs(1)).await;
    tokio::task::spawn_blocking(move || market.shutdown()).await?;
    Ok(())
}
