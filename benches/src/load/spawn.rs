//! `--spawn`: a tickerd started inside the load tool — the engine, the feeds, the gRPC front and
//! two WebSocket fronts (shared and per-connection compression) on ports chosen by the OS, on a
//! runtime of their own so the servers' tasks do not queue behind the clients' on one
//! scheduler. Limits that would throttle a load test (WebSocket message rate, connections,
//! hub queues) are raised; everything else is tickerd's defaults.
//!
//! With a bus (`--via bus`): a `nats-server -js` started by the tool, a matcher market in this
//! process (the simulator and the engine; no fronts) and gateway markets fed over JetStream,
//! each with the three fronts, as `tickerd --role matcher` and `--role gateway` run them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use ticker_feeds::sim::SimConfig;
use ticker_servers::auth::AuthConfig;
use ticker_servers::bus::publisher::Publisher;
use ticker_servers::bus::{commands, BusConfig, Role};
use ticker_servers::grpc::{GrpcConfig, GrpcServer};
use ticker_servers::market::{Market, MarketConfig};
use ticker_servers::ws::deflate::{DeflateConfig, DeflateMode};
use ticker_servers::ws::{WsConfig, WsLimits, WsServer};

/// What the in-process tickerd is asked to run.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// Order-entry tokens to create: `token` → account.
    pub tokens: Vec<(String, u64)>,
    /// Simulator commands per second, or none.
    pub simulator_rate: Option<u64>,
    /// Most WebSocket connections per front.
    pub max_connections: usize,
    /// Server worker threads.
    pub workers: usize,
    /// Journal into a temporary data directory this way, or not at all.
    pub journal: Option<super::JournalArg>,
    /// Serve the fronts from gateways over NATS JetStream instead of the matching process.
    pub bus: Option<BusSpawn>,
    /// Engine threads (`market.shards`).
    pub shards: usize,
}

/// The scale-out setting of a spawned tickerd.
#[derive(Debug, Clone)]
pub struct BusSpawn {
    /// The `nats-server` binary.
    pub nats_server: String,
    /// Gateway processes' worth of markets, each with its own fronts.
    pub gateways: usize,
}

/// A running in-process tickerd.
pub struct Spawned {
    pub grpc: SocketAddr,
    /// The WebSocket front with the shared compressor (also serves clients that offer none).
    pub ws_shared: SocketAddr,
    /// The WebSocket front with a compressor per connection.
    pub ws_per_connection: SocketAddr,
    /// The shared-compressor WebSocket front of every market that serves (one, or each
    /// gateway's).
    pub ws_shared_all: Vec<SocketAddr>,
    /// The market behind the first fronts (the first gateway's with a bus).
    market: Arc<Market>,
    fronts: Vec<(Arc<Market>, GrpcServer, WsServer, WsServer)>,
    /// With a bus: the matching market, and the NATS server.
    matcher: Option<Arc<Market>>,
    nats: Option<super::nats::NatsServer>,
    runtime: Option<tokio::runtime::Runtime>,
    /// The temporary data directory, removed after shutdown.
    data_dir: Option<PathBuf>,
}

impl Spawned {
    pub fn start(options: &SpawnOptions) -> anyhow::Result<Spawned> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.workers.max(1))
            .thread_name("tickerd")
            .enable_all()
            .build()?;
        let data_dir = options.journal.map(|_| {
            std::env::temp_dir().join(format!("ticker-bench-spawn-{}", std::process::id()))
        });
        if let Some(dir) = &data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        let config = MarketConfig {
            simulator: options.simulator_rate.map(|rate| SimConfig {
                rate,
                ..SimConfig::default()
            }),
            journal: options
                .journal
                .zip(data_dir.clone())
                .map(|(journal, dir)| journal.config(dir)),
            shards: options.shards,
            ..MarketConfig::default()
        };
        let (matcher, nats, serving) = match &options.bus {
            None => (None, None, vec![Market::start(config)?]),
            Some(bus) => {
                let nats = super::nats::NatsServer::start(&bus.nats_server)?;
                let base = BusConfig {
                    url: nats.url.clone(),
                    connect_timeout: Duration::from_secs(20),
                    ..BusConfig::default()
                };
                let matcher = runtime.block_on(start_matcher(config.clone(), base.clone()))?;
                let mut gateways = Vec::new();
                for node in 1..=bus.gateways.max(1) {
                    let gateway = BusConfig {
                        role: Role::Gateway,
                        node: node as u16,
                        ..base.clone()
                    };
                    gateways.push(runtime.block_on(Market::start_gateway(
                        MarketConfig {
                            simulator: None,
                            journal: None,
                            ..config.clone()
                        },
                        gateway,
                    ))?);
                }
                (Some(matcher), Some(nats), gateways)
            }
        };
        let auth = AuthConfig::traders(options.tokens.iter().cloned());
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let limits = WsLimits {
            // A load test sends as fast as it can; the default 50 messages/s would refuse it.
            messages_per_second: 10_000_000,
            burst: 10_000_000,
            max_connections: options.max_connections,
            ..WsLimits::default()
        };
        let ws = |mode: DeflateMode| WsConfig {
            listen: any_port,
            auth: auth.clone(),
            limits: limits.clone(),
            deflate: DeflateConfig {
                mode,
                ..DeflateConfig::default()
            },
            ..WsConfig::default()
        };
        let grpc_config = GrpcConfig {
            listen: any_port,
            auth: auth.clone(),
            ..GrpcConfig::default()
        };
        let mut fronts = Vec::new();
        for market in serving {
            let servers = runtime.block_on({
                let market = market.clone();
                let grpc_config = grpc_config.clone();
                let (shared, own) = (ws(DeflateMode::Shared), ws(DeflateMode::PerConnection));
                async move {
                    let grpc = GrpcServer::start(market.clone(), grpc_config).await?;
                    let shared = WsServer::start(market.clone(), shared).await?;
                    let own = WsServer::start(market, own).await?;
                    anyhow::Ok((grpc, shared, own))
                }
            })?;
            fronts.push((market, servers.0, servers.1, servers.2));
        }
        let first = &fronts[0];
        Ok(Spawned {
            grpc: first.1.local_addr(),
            ws_shared: first.2.local_addr(),
            ws_per_connection: first.3.local_addr(),
            ws_shared_all: fronts.iter().map(|f| f.2.local_addr()).collect(),
            market: first.0.clone(),
            fronts,
            matcher,
            nats,
            runtime: Some(runtime),
            data_dir,
        })
    }

    pub fn market(&self) -> &Arc<Market> {
        &self.market
    }

    /// The matching market when the fronts are gateways.
    pub fn nats_url(&self) -> Option<&str> {
        self.nats.as_ref().map(|n| n.url.as_str())
    }

    pub fn matcher(&self) -> Option<&Arc<Market>> {
        self.matcher.as_ref()
    }

    /// Closes the fronts (WebSocket clients get 1001) and stops the engine.
    pub fn shutdown(mut self) {
        let fronts = std::mem::take(&mut self.fronts);
        if let Some(runtime) = self.runtime.take() {
            let mut markets = Vec::new();
            runtime.block_on(async {
                let grace = Duration::from_secs(1);
                for (market, grpc, shared, own) in fronts {
                    tokio::join!(
                        grpc.shutdown(grace),
                        shared.shutdown(grace),
                        own.shutdown(grace)
                    );
                    markets.push(market);
                }
            });
            // Gateways first, then the matcher (whose publisher needs the runtime).
            for market in markets {
                market.shutdown();
            }
            if let Some(matcher) = self.matcher.take() {
                matcher.shutdown();
            }
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        self.market.shutdown();
        drop(self.nats.take());
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A matcher as `tickerd --role matcher` starts it, on the current runtime.
pub async fn start_matcher(config: MarketConfig, bus: BusConfig) -> anyhow::Result<Arc<Market>> {
    let bus = BusConfig {
        role: Role::Matcher,
        ..bus
    };
    let publisher = Publisher::start(&bus).await.map_err(anyhow::Error::msg)?;
    let market = Market::start_matcher(config, bus.clone(), publisher)?;
    let client = market
        .bus()
        .map(|b| b.client().clone())
        .expect("a matcher has a bus");
    let stale = market.take_foreign_sessions();
    commands::serve(market.clone(), client, bus, stale)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(market)
}
