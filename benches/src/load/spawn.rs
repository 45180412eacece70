//! `--spawn`: a tickerd started inside the load tool — the engine, the feeds, the gRPC front and
//! two WebSocket fronts (shared and per-connection compression) on ports chosen by the OS, on a
//! runtime of their own so the servers' tasks do not queue behind the clients' on one
//! scheduler. Limits that would throttle a load test (WebSocket message rate, connections,
//! hub queues) are raised; everything else is tickerd's defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use ticker_engine::journal::{FsyncMode, JournalConfig};
use ticker_feeds::sim::SimConfig;
use ticker_servers::auth::AuthConfig;
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
    /// Journal into a temporary data directory with this fsync mode, or not at all.
    pub journal: Option<FsyncMode>,
}

/// A running in-process tickerd.
pub struct Spawned {
    pub grpc: SocketAddr,
    /// The WebSocket front with the shared compressor (also serves clients that offer none).
    pub ws_shared: SocketAddr,
    /// The WebSocket front with a compressor per connection.
    pub ws_per_connection: SocketAddr,
    market: Arc<Market>,
    servers: Option<(GrpcServer, WsServer, WsServer)>,
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
        let market = Market::start(MarketConfig {
            simulator: options.simulator_rate.map(|rate| SimConfig {
                rate,
                ..SimConfig::default()
            }),
            journal: options
                .journal
                .zip(data_dir.clone())
                .map(|(fsync, dir)| JournalConfig {
                    dir,
                    fsync,
                    ..JournalConfig::default()
                }),
            ..MarketConfig::default()
        })?;
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
        let servers = runtime.block_on({
            let market = market.clone();
            async move {
                let grpc = GrpcServer::start(market.clone(), grpc_config).await?;
                let shared = WsServer::start(market.clone(), ws(DeflateMode::Shared)).await?;
                let own = WsServer::start(market, ws(DeflateMode::PerConnection)).await?;
                anyhow::Ok((grpc, shared, own))
            }
        })?;
        Ok(Spawned {
            grpc: servers.0.local_addr(),
            ws_shared: servers.1.local_addr(),
            ws_per_connection: servers.2.local_addr(),
            market,
            servers: Some(servers),
            runtime: Some(runtime),
            data_dir,
        })
    }

    pub fn market(&self) -> &Arc<Market> {
        &self.market
    }

    /// Closes the fronts (WebSocket clients get 1001) and stops the engine.
    pub fn shutdown(mut self) {
        if let (Some(runtime), Some((grpc, shared, own))) =
            (self.runtime.take(), self.servers.take())
        {
            runtime.block_on(async {
                let grace = Duration::from_secs(1);
                tokio::join!(
                    grpc.shutdown(grace),
                    shared.shutdown(grace),
                    own.shutdown(grace)
                );
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        self.market.shutdown();
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
