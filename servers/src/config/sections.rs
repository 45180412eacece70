//! The configuration's sections: one struct per concern, each key documented with its default.

use crate::auth::{Principal, Role};
use crate::bus::BusConfig;
use crate::grpc::GrpcConfig;
use crate::limits::LimitsSpec;
use crate::market::MarketConfig;
use crate::ws::deflate::DeflateMode;
use crate::ws::WsConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use ticker_engine::journal::{FsyncMode, JournalConfig};
use ticker_engine::AccountId;
use ticker_feeds::sim::SimConfig;

/// Everything `tickerd` runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TickerdConfig {
    pub market: MarketSection,
    pub journal: JournalSection,
    pub auth: AuthSection,
    pub risk: RiskSection,
    pub grpc: GrpcSection,
    pub http: HttpSection,
    pub bus: BusSection,
}

impl Default for TickerdConfig {
    fn default() -> Self {
        let market = MarketConfig::default();
        let sim = SimConfig::default();
        let grpc = GrpcConfig::default();
        TickerdConfig {
            market: MarketSection {
                simulator: market.simulator.is_some(),
                sim_seed: sim.seed,
                sim_rate: sim.rate,
                sim_history_s: 3_600,
                sim_history_rate: sim.history_rate,
                heartbeat_ms: market.heartbeat.as_millis() as u64,
                ingress_capacity: market.pipeline.ingress_capacity,
                egress_capacity: market.pipeline.egress_capacity,
                depth_levels: market.feeds.depth_levels,
                candles_history: market.feeds.candles_kept,
                shards: market.shards,
            },
            journal: {
                let j = JournalConfig::default();
                JournalSection {
                    enabled: true,
                    dir: j.dir,
                    fsync: fsync_name(j.fsync).into(),
                    segment_bytes: j.segment_bytes,
                    preallocate: j.preallocate,
                    group_commit_bytes: j.group_commit_bytes,
                    group_commit_delay_us: j.group_commit_delay.as_micros() as u64,
                    snapshot_every: j.snapshot_every,
                    keep_snapshots: j.keep_snapshots,
                    truncate_corrupt: j.open.truncate_corrupt,
                }
            },
            auth: AuthSection {
                tokens: BTreeMap::new(),
                market_data_requires_token: false,
                jwt_hs256_secret: String::new(),
            },
            risk: RiskSection::default(),
            bus: {
                let b = BusConfig::default();
                BusSection {
                    role: b.role.as_str().into(),
                    url: b.url,
                    stream: b.stream,
                    subject_prefix: b.subject_prefix,
                    snapshot_bucket: b.snapshot_bucket,
                    max_age_secs: b.max_age.as_secs(),
                    max_bytes: b.max_bytes,
                    duplicate_window_secs: b.duplicate_window.as_secs(),
                    snapshot_every: b.snapshot_every,
                    publish_window: b.publish_window,
                    publish_queue: b.publish_queue,
                    node: b.node,
                    request_timeout_ms: b.request_timeout.as_millis() as u64,
                    gateway_timeout_ms: b.gateway_timeout.as_millis() as u64,
                    connect_timeout_ms: b.connect_timeout.as_millis() as u64,
                    max_lag_messages: b.max_lag_messages,
                    max_lag_ms: b.max_lag.as_millis() as u64,
                }
            },
            grpc: GrpcSection {
                enabled: true,
                listen: grpc.listen,
                max_message_bytes: grpc.max_message_size,
                max_header_bytes: grpc.max_header_bytes,
                stream_window_bytes: grpc.stream_window,
                connection_window_bytes: grpc.connection_window,
                keepalive_interval_ms: grpc.keepalive_interval.map_or(0, |d| d.as_millis() as u64),
                keepalive_timeout_ms: grpc.keepalive_timeout.as_millis() as u64,
                gzip: grpc.gzip,
                grpc_web: grpc.grpc_web,
                cors_origins: grpc.cors_origins.clone(),
                tls_cert: None,
                tls_key: None,
            },
            http: {
                let ws = WsConfig::default();
                let l = &ws.limits;
                HttpSection {
                    enabled: true,
                    listen: ws.listen,
                    deflate: if ws.deflate.enabled {
                        match ws.deflate.mode {
                            DeflateMode::Shared => "shared".into(),
                            DeflateMode::PerConnection => "per-connection".into(),
                        }
                    } else {
                        "off".into()
                    },
                    deflate_level: ws.deflate.level,
                    deflate_max_window_bits: ws.deflate.server_max_window_bits,
                    max_message_bytes: l.max_message_size,
                    max_subscriptions: l.max_subscriptions,
                    messages_per_second: l.messages_per_second,
                    burst: l.burst,
                    max_connections: l.max_connections,
                    ping_interval_ms: l.ping_interval.as_millis() as u64,
                    max_missed_pongs: l.max_missed_pongs,
                    idle_timeout_ms: l.idle_timeout.as_millis() as u64,
                    outbound_queue: l.outbound_queue,
                    close_timeout_ms: l.close_timeout.as_millis() as u64,
                    close_drain_bytes: l.close_drain_bytes,
                }
            },
        }
    }
}

/// The engine, the feeds and the simulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarketSection {
    /// Run the market simulator [true]; `--no-sim` takes orders only from clients.
    pub simulator: bool,
    /// Simulator seed: the same seed gives the same order flow [42].
    pub sim_seed: u64,
    /// Simulator commands per second across all instruments [3,000].
    pub sim_rate: u64,
    /// Seconds of simulated past the simulator runs through the engine on a fresh start (no
    /// journal to recover), stamped in the past, so charts and 24 h statistics have history
    /// on the first visit; 0 for none [3,600].
    pub sim_history_s: u64,
    /// Simulator commands per second in that past [100]; market orders and price moves per
    /// second are the live market's.
    pub sim_history_rate: u64,
    /// Engine time and candle closing advance at least this often, in ms [100].
    pub heartbeat_ms: u64,
    /// Commands the ingress ring holds (rounded up to a power of two); a full ring answers
    /// "busy" [65,536].
    pub ingress_capacity: usize,
    /// Event batches the egress ring holds (rounded up to a power of two) [256].
    pub egress_capacity: usize,
    /// Levels per side in depth snapshots and deltas [50].
    pub depth_levels: usize,
    /// Candles of each interval a candles snapshot sends (the newest, the open one last),
    /// over WebSocket and gRPC [300].
    pub candles_history: usize,
    /// Engine threads; instrument `id` is matched by shard `id % shards`, a rule that holds
    /// across restarts (docs/engine.md, "Shards") [1]. Each shard journals in its own
    /// `journal.dir/shard-K`; a data directory is refused by another number of shards.
    pub shards: usize,
}

impl Default for MarketSection {
    fn default() -> Self {
        TickerdConfig::default().market
    }
}

/// The journal, snapshots and recovery (docs/journal.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalSection {
    /// Journal every command and recover at start [true]; `--no-journal` turns it off (a
    /// restart then starts an empty market).
    pub enabled: bool,
    /// Data directory: journal segments and snapshots [`tickerd-data`, relative to the working
    /// directory]; `--data-dir`.
    pub dir: PathBuf,
    /// "batch": results are published once their commands are synced (group commit);
    /// "off": written before publishing but not synced, so a machine crash (not a process
    /// crash) can lose the last seconds of acknowledged commands ["batch"].
    pub fsync: String,
    /// Segment file size before the next one starts [64 MiB].
    pub segment_bytes: u64,
    /// Zero-fill each segment file to `segment_bytes` before writing into it (the next one on
    /// a background thread), so each group commit's `fdatasync` writes data alone [true].
    pub preallocate: bool,
    /// Written-but-unsynced bytes at which the engine waits for the disk [4 MiB].
    pub group_commit_bytes: u64,
    /// How long a sync may wait to gather more commands, in µs [0].
    pub group_commit_delay_us: u64,
    /// A snapshot every this many commands, and at a clean shutdown [250,000].
    pub snapshot_every: u64,
    /// Snapshots kept; older ones and the journal they cover are deleted [2].
    pub keep_snapshots: usize,
    /// Start even if a record in the middle of the journal is damaged, cutting the journal
    /// there and losing every command after it [false].
    pub truncate_corrupt: bool,
}

impl Default for JournalSection {
    fn default() -> Self {
        TickerdConfig::default().journal
    }
}

pub(super) fn fsync_name(mode: FsyncMode) -> &'static str {
    match mode {
        FsyncMode::Batch => "batch",
        FsyncMode::Off => "off",
    }
}

/// Who may trade: bearer tokens shared by the gRPC and WebSocket fronts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Token → account (a trader), or `{ role = "...", account = N }` [none: no order entry
    /// from clients].
    pub tokens: BTreeMap<String, TokenGrant>,
    /// Whether market data needs a token too [false].
    pub market_data_requires_token: bool,
    /// Also accept JWTs signed with HS256 and this secret: `sub` is the account, `exp` required
    /// [empty: off].
    pub jwt_hs256_secret: String,
}

/// Pre-trade limits, in the instruments' decimals (docs/engine.md, "Risk limits"). Applied at
/// every start, through the engine like any command: they replace the limits of the default set
/// and of the accounts they name (limits set at run time by `RiskService/SetLimits` for other
/// accounts stay).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskSection {
    /// Limits of every account without its own [none].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_limits: Option<LimitsSpec>,
    /// Account number → its own limits [none].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub accounts: BTreeMap<String, LimitsSpec>,
}

/// Scale-out over NATS JetStream (docs/scale-out.md). Only `--role matcher` and `--role
/// gateway` use it; the default single process needs no NATS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusSection {
    /// "all": engine and both fronts in one process, no bus; "matcher": engine, journal and
    /// feeds, publishing to JetStream and taking gateways' orders; "gateway": no engine, the
    /// fronts fed from JetStream; `--role` ["all"].
    pub role: String,
    /// NATS server URL(s), comma-separated ["nats://127.0.0.1:4222"].
    pub url: String,
    /// The JetStream stream of engine events, created by the matcher ["TICKERD"].
    pub stream: String,
    /// Subjects: `{prefix}.ev.<instrument id>|x` (events), `{prefix}.cmd` (commands),
    /// `{prefix}.node` (gateway starts) ["tickerd"].
    pub subject_prefix: String,
    /// Object store bucket of feeds snapshots for gateways ["tickerd-snapshots"].
    pub snapshot_bucket: String,
    /// How long the stream keeps events, 0 = forever [86,400 s].
    pub max_age_secs: u64,
    /// Most bytes the stream keeps, 0 = no limit [0].
    pub max_bytes: u64,
    /// JetStream de-duplication window of `Nats-Msg-Id` [120 s].
    pub duplicate_window_secs: u64,
    /// The matcher stores a feeds snapshot every this many events, at start and at a clean
    /// shutdown [200,000].
    pub snapshot_every: u64,
    /// Publishes awaiting their acknowledgement [4,096].
    pub publish_window: usize,
    /// Event batches queued for publishing before the engine waits for NATS [65,536].
    pub publish_queue: usize,
    /// A gateway's number, 1..=65535, unique among the gateways of a stream [0: required on a
    /// gateway].
    pub node: u16,
    /// How long a gateway waits for the matcher's answer to a command [2,000 ms].
    pub request_timeout_ms: u64,
    /// The matcher cancels the orders of a gateway's sessions when it has not heard from the
    /// gateway for this long [5,000 ms].
    pub gateway_timeout_ms: u64,
    /// How long a start waits for NATS (and a gateway for the stream) [10,000 ms].
    pub connect_timeout_ms: u64,
    /// A gateway is NOT_SERVING while more messages than this are waiting [10,000]...
    pub max_lag_messages: u64,
    /// ...or while the newest it applied was published longer ago than this and more wait
    /// [2,000 ms].
    pub max_lag_ms: u64,
}

impl Default for BusSection {
    fn default() -> Self {
        TickerdConfig::default().bus
    }
}

/// What one configured token grants: a bare account number is a trader of that account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenGrant {
    Trader(AccountId),
    Role {
        /// `trader`, `risk` or `admin`; checked when the config is finished.
        role: String,
        /// Needed by a trader; optional for risk and admin (who then cannot place orders).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<AccountId>,
    },
}

impl TokenGrant {
    pub(super) fn account(&self) -> Option<AccountId> {
        match self {
            TokenGrant::Trader(a) => Some(*a),
            TokenGrant::Role { account, .. } => *account,
        }
    }

    /// The principal, or why not (for the error naming the key).
    pub(super) fn principal(&self) -> Result<Principal, String> {
        let role = match self {
            TokenGrant::Trader(_) => Role::Trader,
            TokenGrant::Role { role, .. } => Role::parse(role)
                .ok_or_else(|| format!("unknown role {role:?}: one of trader, risk, admin"))?,
        };
        match (role, self.account()) {
            (_, Some(0)) => Err("account 0 is reserved by the engine".into()),
            (Role::Trader, None) => Err("a trader needs an account".into()),
            (role, account) => Ok(Principal { role, account }),
        }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        TickerdConfig::default().auth
    }
}

/// The gRPC front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcSection {
    /// Serve gRPC [true].
    pub enabled: bool,
    /// [127.0.0.1:50051]
    pub listen: SocketAddr,
    /// Largest message accepted or sent [4 MiB].
    pub max_message_bytes: usize,
    /// Largest request metadata (header block, as HTTP/2 counts it); larger gets
    /// RESOURCE_EXHAUSTED naming both sizes [16 KiB].
    pub max_header_bytes: usize,
    /// HTTP/2 window per stream [1 MiB].
    pub stream_window_bytes: u32,
    /// HTTP/2 window per connection [16 MiB].
    pub connection_window_bytes: u32,
    /// HTTP/2 keepalive PING interval, 0 = off [20,000].
    pub keepalive_interval_ms: u64,
    /// Close a connection whose PING goes unanswered this long [10,000].
    pub keepalive_timeout_ms: u64,
    /// Negotiate gzip per call [true].
    pub gzip: bool,
    /// Serve gRPC-Web on the same port [true].
    pub grpc_web: bool,
    /// Origins whose pages may call gRPC-Web (CORS): `["https://desk.example.com"]`, or
    /// `["*"]` for any [none: same-origin pages only].
    pub cors_origins: Vec<String>,
    /// TLS certificate chain (PEM); set together with `tls_key` [none: clear text].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) [none].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

impl Default for GrpcSection {
    fn default() -> Self {
        TickerdConfig::default().grpc
    }
}

/// The HTTP port: the WebSocket feed, the trader page, `/healthz` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Serve HTTP and WebSocket [true].
    pub enabled: bool,
    /// [127.0.0.1:8080]
    pub listen: SocketAddr,
    /// permessage-deflate: "shared" (each update deflated once for every client),
    /// "per-connection" (a sliding window per client: smaller, costlier) or "off" [shared].
    pub deflate: String,
    /// zlib level of per-connection compressors, 0..=9 [1]; the shared compressor always uses 6,
    /// since it runs once for all connections.
    pub deflate_level: u32,
    /// Largest server LZ77 window, 9..=15 [15].
    pub deflate_max_window_bits: u8,
    /// Largest client message, also after inflating; larger: close 1009 [1 MiB].
    pub max_message_bytes: usize,
    /// Subscriptions per connection [64].
    pub max_subscriptions: usize,
    /// Sustained client messages per second per connection [50].
    pub messages_per_second: u32,
    /// Messages a client may send at once above that rate [100].
    pub burst: u32,
    /// Open WebSocket connections; more get HTTP 503 [10,000].
    pub max_connections: usize,
    /// Server ping interval [20,000].
    pub ping_interval_ms: u64,
    /// Pings in a row without a pong that close the connection (1008) [2].
    pub max_missed_pongs: u32,
    /// No client message for this long closes the connection (1001) [120,000].
    pub idle_timeout_ms: u64,
    /// The server's own messages (replies, errors) queued per connection for a client that
    /// does not read, before its session waits [1,024].
    pub outbound_queue: usize,
    /// After the server's close frame, how long it reads on for the client's [2,000]: a close
    /// written with the client's data unread is lost to a TCP reset.
    pub close_timeout_ms: u64,
    /// What it reads and drops meanwhile (the rest of a message too big to take) [4 MiB].
    pub close_drain_bytes: usize,
}

impl Default for HttpSection {
    fn default() -> Self {
        TickerdConfig::default().http
    }
}
