//! The load tool's network modes: `ticker-bench latency | throughput | fanout` drive a running
//! tickerd (or one started in-process with `--spawn`) over gRPC and WebSocket with the same
//! order flow, and report latency percentiles, throughput, bytes per message and CPU time.
//!
//! - [`order_flow`]: the commands and the order-entry clients of both fronts.
//! - [`subscribe`]: verifying market-data subscribers of both fronts; [`frame_count`]: the
//!   counting-only WebSocket subscriber of `fanout` mode.
//! - [`latency`]: joins what clients logged into histograms.
//! - [`flow`] runs `latency` and `throughput`, [`fanout`] runs `fanout`, [`stream`] runs
//!   `stream` (one connection's capacity, hub-fed); [`output`] and
//!   [`svg`] write the table, the JSON and the plot; [`spawn`] is `--spawn`.

pub mod counting;
pub mod depth_check;
pub mod fanout;
pub mod flow;
pub mod frame_count;
pub mod front_alone;
pub mod grpc_count;
pub mod latency;
pub mod nats;
pub mod order_flow;
pub mod output;
pub mod spawn;
pub mod stream;
pub mod subscribe;
pub mod svg;
pub mod trivial;

use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Nanoseconds since the start of a run, one base for every client of the run.
#[derive(Debug, Clone)]
pub struct Clock(Arc<Instant>);

impl Clock {
    pub fn start() -> Clock {
        Clock(Arc::new(Instant::now()))
    }
    pub fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
    pub fn instant(&self, ns: u64) -> Instant {
        *self.0 + Duration::from_nanos(ns)
    }
}

/// Where a client connects.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Grpc(SocketAddr),
    /// A WebSocket front, and the permessage-deflate offer to make (none for raw frames).
    Ws {
        addr: SocketAddr,
        offer: Option<&'static str>,
    },
}

/// The offer a browser makes.
pub const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// How a market-data subscriber connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Kind {
    /// gRPC `MarketDataService/Subscribe`, protobuf.
    Grpc,
    /// WebSocket JSON, no compression offered.
    WsRaw,
    /// WebSocket JSON with permessage-deflate from the shared compressor.
    WsShared,
    /// WebSocket JSON with permessage-deflate, a compressor per connection.
    WsPerConnection,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Grpc => "grpc",
            Kind::WsRaw => "ws-raw",
            Kind::WsShared => "ws-shared",
            Kind::WsPerConnection => "ws-per-connection",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Kind::Grpc => "gRPC",
            Kind::WsRaw => "WS raw",
            Kind::WsShared => "WS shared deflate",
            Kind::WsPerConnection => "WS per-connection deflate",
        }
    }
}

/// How orders are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Front {
    /// gRPC `OrderService/OrderSession` (bidirectional stream).
    Grpc,
    /// WebSocket `place` / `cancel` ops (no compression).
    Ws,
}

impl Front {
    pub fn name(self) -> &'static str {
        match self {
            Front::Grpc => "grpc",
            Front::Ws => "ws",
        }
    }
}

/// Which tickerd to load, and where to write results.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Start tickerd inside the tool (engine, feeds, gRPC and two WebSocket fronts: shared
    /// and per-connection deflate) on ports chosen by the OS, instead of connecting to one.
    #[arg(long)]
    pub spawn: bool,
    /// gRPC address of a running tickerd.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc: SocketAddr,
    /// HTTP/WebSocket address of a running tickerd (raw and shared-deflate subscribers; its
    /// `http.deflate` should be `shared`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub ws: SocketAddr,
    /// A second running tickerd front with `http.deflate = "per-connection"`, for the
    /// per-connection subscribers (with `--spawn` the tool starts one).
    #[arg(long)]
    pub ws_per_connection: Option<SocketAddr>,
    /// Order-entry token of a running tickerd (start it with `--token bench-token=1`, and
    /// `--set http.messages_per_second=1000000 --set http.burst=1000000`). With `--spawn` each
    /// client gets an account of its own.
    #[arg(long, default_value = "bench-token")]
    pub token: String,
    /// Instrument the flow trades and subscribers watch.
    #[arg(long, default_value = "BTC-USD")]
    pub instrument: String,
    /// Simulator commands per second in the spawned tickerd (0: none).
    #[arg(long)]
    pub sim_rate: Option<u64>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG plot of the latency distributions here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Server worker threads of the spawned tickerd.
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// Which spawned tickerd the clients use: `single` (one process), `bus` (a matcher and
    /// `--gateways` gateways over a nats-server the tool starts; the clients use the gateways),
    /// or, for latency and throughput, `single,bus` in one run. Latency with `bus` also times
    /// one hop through the same nats-server alone (JetStream and core), at the same rate.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "single")]
    pub via: Vec<Via>,
    /// Gateways with `--via bus`; fan-out spreads its connections over them.
    #[arg(long, default_value_t = 1)]
    pub gateways: usize,
    /// The nats-server binary for `--via bus`.
    #[arg(long, default_value = "nats-server")]
    pub nats_server: String,
    /// The spawned tickerd journals every command (into a temporary data directory, removed
    /// afterwards) with this fsync mode [default: no journal].
    #[arg(long, value_enum)]
    pub journal: Option<JournalArg>,
    /// Engine threads of the spawned tickerd (`market.shards`).
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
}

/// `--via`: how the spawned tickerd is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// One process: engine and fronts together.
    Single,
    /// A matcher and gateways over NATS JetStream.
    Bus,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Single => "single",
            Via::Bus => "bus",
        }
    }
}

/// `--journal`: tickerd's `journal.fsync` modes (and `journal.preallocate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JournalArg {
    /// Results published once synced (group commit) into preallocated segments: tickerd's
    /// default.
    Batch,
    /// `batch` into segments that grow as they are written (`journal.preallocate = false`).
    BatchAppending,
    /// Written before publishing, not synced.
    Off,
}

impl JournalArg {
    /// The journal of a spawned tickerd writing into `dir`.
    pub fn config(self, dir: std::path::PathBuf) -> ticker_engine::journal::JournalConfig {
        use ticker_engine::journal::{FsyncMode, JournalConfig};
        let (fsync, preallocate) = match self {
            JournalArg::Batch => (FsyncMode::Batch, true),
            JournalArg::BatchAppending => (FsyncMode::Batch, false),
            JournalArg::Off => (FsyncMode::Off, true),
        };
        JournalConfig {
            dir,
            fsync,
            preallocate,
            ..JournalConfig::default()
        }
    }
}

/// `latency` and `throughput` modes.
#[derive(Debug, Clone, Args)]
pub struct FlowArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Order-entry fronts to run the flow over, one after the other.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "grpc,ws")]
    pub order_entry: Vec<Front>,
    /// Subscriber kinds attached to every flow.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "grpc,ws-raw,ws-shared,ws-per-connection"
    )]
    pub kinds: Vec<Kind>,
    /// Order-entry connections.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Subscribers of each kind.
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Market-data channels each subscriber takes (ticker, depth, trades).
    #[arg(long, value_delimiter = ',', default_value = "depth")]
    pub channels: Vec<String>,
    /// Measured seconds per order-entry front.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Unmeasured seconds of flow before each measurement.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// `latency` mode: commands a second per order-entry client, at fixed intervals.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u64,
    /// `throughput` mode: commands in flight per order-entry client.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
}

/// `fanout` mode: WebSocket subscribers, or gRPC `Subscribe` streams with `--kind grpc`.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// WebSocket subscribers.
    #[arg(long, default_value_t = 5_000)]
    pub connections: usize,
    /// Of which this many verify everything (inflate, parse, seq continuity, latency); the
    /// rest count whole frames.
    #[arg(long, default_value_t = 20)]
    pub verify: usize,
    /// How they connect.
    #[arg(long, value_enum, default_value = "ws-shared")]
    pub kind: Kind,
    /// Market-data channels each subscriber takes.
    #[arg(long, value_delimiter = ',', default_value = "ticker,trades")]
    pub channels: Vec<String>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Unmeasured seconds after every subscriber is subscribed.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Connections opened at once while connecting.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Skip the calibration against the tool's trivial server (WebSocket kinds).
    #[arg(long)]
    pub no_trivial: bool,
    /// Messages a second the trivial server publishes when the tool did not spawn the server
    /// (with --spawn: the rate the spawned server's topics published during the run). The
    /// default is BTC-USD's ticker rate measured with --spawn at --sim-rate 20000.
    #[arg(long, default_value_t = 1_400.0)]
    pub trivial_rate: f64,
}

/// `stream` mode.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Messages streamed to each subscriber kind.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Subscriber kinds, one connection each, one after the other.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "grpc,ws-raw,ws-shared,ws-per-connection"
    )]
    pub kinds: Vec<Kind>,
}

/// The process's CPU time so far (user + system, every thread; with `--spawn` that includes
/// the server).
pub fn cpu_time() -> Duration {
    cpu_time::ProcessTime::now().as_duration()
}
