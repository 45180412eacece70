//! The WebSocket fan-out path on its own: a hub topic published to by this thread, the
//! WebSocket writers (`ticker_servers::ws::writer`) delivering it to many loopback connections,
//! and one reading task per connection that counts bytes. No engine, no feeds views, no
//! handshake: what is measured is publish → window → frames built once → one vectored write
//! per connection → the socket.
//!
//! - `fanout/shared-deflate/N`: one trades topic (lossless, so every message must arrive),
//!   `N` connections in shared-deflate mode; bursts of [`BURST`] messages, each burst waited
//!   for on every connection before the next. Time and throughput are per message delivered
//!   (`N` per message published).
//!
//! ```sh
//! cargo bench -p ticker-benches --bench fanout
//! cargo test -p ticker-benches --bench fanout    # each case once, as CI runs it
//! ```

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticker_benches::load::frame_count::FrameCounter;
use ticker_feeds::hub::TopicState;
use ticker_feeds::{Channel, Hub, Message, MessageKind, Topic, WireInstrument};
use ticker_servers::ws::deflate::{DeflateMode, Negotiated, DEFAULT_LEVEL};
use ticker_servers::ws::outgoing::{Encoder, Feed, Outbound};
use ticker_servers::ws::protocol::{ChannelSpec, ChannelTarget};
use ticker_servers::ws::writer::{Outgoing, Writers};
use ticker_servers::ws::WsLimits;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Messages published before waiting for every connection to have them.
const BURST: u64 = 32;
/// A trade's JSON, about the size the feeds write.
const TRADE: &str = r#"{"type":"trade","channel":"trades","instrument":"BTC-USD","seq":SEQ,"prev_seq":PREV,"ts":1764430000000000000,"trade_id":12,"price":"65000.10","size":"0.01000","side":"buy"}"#;

fn topic() -> Topic {
    Topic::Market {
        channel: Channel::Trades,
        instrument: 0,
    }
}

fn shared() -> Negotiated {
    Negotiated {
        server_no_context_takeover: true,
        client_no_context_takeover: false,
        server_max_window_bits: None,
        client_max_window_bits: None,
        mode: DeflateMode::Shared,
        level: DEFAULT_LEVEL,
        max_inflated_message: 1 << 20,
    }
}

/// `n` connections subscribed to the trades topic through the writers, and the frames their
/// clients have read.
struct Rig {
    hub: Hub,
    topic: Arc<TopicState>,
    _writers: Writers,
    _outgoing: Vec<Outgoing>,
    received: Arc<AtomicU64>,
    seq: u64,
}

impl Rig {
    async fn start(n: usize) -> Rig {
        let hub = Hub::default();
        let limits = WsLimits::default();
        let writers = Writers::start(2, &limits);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let wire = Arc::new(
            WireInstrument::new(0, ticker_servers::defaults::instruments().remove(0)).unwrap(),
        );
        let mut outgoing = Vec::with_capacity(n);
        for _ in 0..n {
            let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
            let (client, server) = (client.unwrap(), accepted.unwrap().0);
            client.set_nodelay(true).unwrap();
            server.set_nodelay(true).unwrap();
            let (out, _ended) =
                writers.attach(Arc::new(server), Encoder::new(Some(&shared())), &limits);
            let spec = ChannelSpec {
                target: ChannelTarget::Market {
                    channel: Channel::Trades,
                    instrument: wire.clone(),
                },
                from_seq: None,
            };
            let feeds = vec![Feed {
                spec,
                sub: hub.subscribe(topic(), None),
            }];
            let reply = Bytes::from_static(b"{}");
            assert!(
                out.send(
                    Outbound::Subscribe { feeds, reply },
                    Duration::from_secs(10)
                )
                .await
            );
            outgoing.push(out);
            tokio::spawn(read(client, received.clone()));
        }
        let topic = hub.topic(topic());
        let rig = Rig {
            hub,
            topic,
            _writers: writers,
            _outgoing: outgoing,
            received,
            seq: 0,
        };
        // Every connection's `subscribed` reply.
        rig.wait_for(n as u64).await;
        rig
    }

    fn publish(&mut self, count: u64) {
        for _ in 0..count {
            self.seq += 1;
            let json = TRADE
                .replace("PREV", &(self.seq - 1).to_string())
                .replace("SEQ", &self.seq.to_string());
            self.topic.publish(Message::encoded(
                self.seq,
                self.seq - 1,
                MessageKind::Update,
                Bytes::from(json),
                Bytes::new(),
            ));
        }
    }

    /// Waits until the clients have read `frames` in all.
    async fn wait_for(&self, frames: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.received.load(Ordering::Relaxed) < frames {
            assert!(
                Instant::now() < deadline,
                "the connections stopped receiving"
            );
            tokio::task::yield_now().await;
        }
    }
}

async fn read(mut client: TcpStream, received: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut frames = FrameCounter::default();
    while let Ok(n) = client.read(&mut buf).await {
        if n == 0 {
            return;
        }
        let got = frames.feed(&buf[..n]).data_frames;
        received.fetch_add(got, Ordering::Relaxed);
    }
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("fanout");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for n in [100usize, 1000] {
        let mut rig = runtime.block_on(Rig::start(n));
        g.throughput(Throughput::Elements(n as u64 * BURST));
        g.bench_with_input(BenchmarkId::new("shared-deflate", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let target = rig.received.load(Ordering::Relaxed) + n as u64 * BURST;
                    rig.publish(BURST);
                    runtime.block_on(rig.wait_for(target));
                }
                start.elapsed()
            })
        });
        let lost: u64 = rig
            .hub
            .stats()
            .disconnects
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum();
        assert_eq!(lost, 0, "a connection fell behind the lossless topic");
        println!(
            "fanout/shared-deflate/{n}: {} messages published, each delivered to all {n}",
            rig.seq
        );
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
