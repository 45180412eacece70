//! `tickerd`'s configuration: one struct per concern with documented defaults, loaded once from
//! four layers, each overriding the one before:
//!
//! 1. the embedded defaults ([`TickerdConfig::default`]);
//! 2. a TOML file (`--config PATH` or `TICKERD_CONFIG`); `tickerd.example.toml` at the workspace
//!    root lists every key with its default;
//! 3. environment variables `TICKERD_<SECTION>_<KEY>` (`TICKERD_GRPC_LISTEN=0.0.0.0:50051`);
//! 4. command-line flags (`--grpc-listen`, `--no-sim`, `--token`, and `--set section.key=value`
//!    for any key).
//!
//! The layers are merged as TOML values and deserialized once, so a bad value from any layer
//! gets the same kind of error: it names the key, the layer it came from and what was wrong
//! (`grpc.listen (from TICKERD_GRPC_LISTEN): invalid socket address syntax`).

use crate::auth::{AuthConfig, Principal, Role};
use crate::bus::{BusConfig, Role as BusRole};
use crate::grpc::{GrpcConfig, TlsFiles};
use crate::limits::{LimitsSpec, RiskLimits};
use crate::market::MarketConfig;
use crate::ws::deflate::{DeflateConfig, DeflateMode};
use crate::ws::{WsConfig, WsLimits};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use ticker_engine::journal::{FsyncMode, JournalConfig, OpenOptions};
use ticker_engine::AccountId;
use ticker_feeds::sim::SimConfig;
use toml::{Table, Value};

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
            },
            journal: {
                let j = JournalConfig::default();
                JournalSection {
                    enabled: true,
                    dir: j.dir,
                    fsync: fsync_name(j.fsync).into(),
                    segment_bytes: j.segment_bytes,
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

fn fsync_name(mode: FsyncMode) -> &'static str {
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
    fn account(&self) -> Option<AccountId> {
        match self {
            TokenGrant::Trader(a) => Some(*a),
            TokenGrant::Role { account, .. } => *account,
        }
    }

    /// The principal, or why not (for the error naming the key).
    fn principal(&self) -> Result<Principal, String> {
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

/// A configuration that cannot be used, naming the key, where its value came from and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{origin}: {reason}")]
    Syntax { origin: String, reason: String },
    #[error("{key} (from {origin}): {reason}")]
    Value {
        key: String,
        origin: String,
        reason: String,
    },
    #[error("{origin}: no config key {key}; the sections are {sections}")]
    UnknownKey {
        key: String,
        origin: String,
        sections: String,
    },
}

/// Collects the layers; [`Layers::finish`] validates them into a [`TickerdConfig`].
pub struct Layers {
    tree: Table,
    /// Where each key's value came from, for error messages ("grpc.listen" → "TICKERD_GRPC_LISTEN").
    origins: HashMap<String, String>,
}

impl Default for Layers {
    fn default() -> Self {
        Self::new()
    }
}

impl Layers {
    /// Starts from the embedded defaults.
    pub fn new() -> Self {
        let tree = match Value::try_from(TickerdConfig::default()) {
            Ok(Value::Table(t)) => t,
            // The defaults are plain structs of numbers, strings and maps: they always serialize.
            other => unreachable!("defaults serialize to a table, got {other:?}"),
        };
        Layers {
            tree,
            origins: HashMap::new(),
        }
    }

    /// Merges a TOML document (a config file's text); `origin` names it in errors.
    pub fn file(&mut self, origin: &str, text: &str) -> Result<&mut Self, ConfigError> {
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                origin: origin.to_string(),
                reason: e.to_string().trim_end().to_string(),
            })?;
        self.merge(String::new(), table, origin);
        Ok(self)
    }

    /// Reads and merges a config file.
    pub fn file_at(&mut self, path: &std::path::Path) -> Result<&mut Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.file(&path.display().to_string(), &text)
    }

    /// Applies `TICKERD_<SECTION>_<KEY>` variables (`TICKERD_CONFIG` names the file and is not
    /// a key).
    pub fn env<I: IntoIterator<Item = (String, String)>>(
        &mut self,
        vars: I,
    ) -> Result<&mut Self, ConfigError> {
        let mut vars: Vec<_> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("TICKERD_") && k != "TICKERD_CONFIG")
            .collect();
        vars.sort();
        for (name, raw) in vars {
            let rest = name["TICKERD_".len()..].to_ascii_lowercase();
            let section = self
                .tree
                .keys()
                .find(|s| rest.starts_with(&format!("{s}_")))
                .cloned();
            let Some(section) = section else {
                return Err(self.unknown_key(&rest, &name));
            };
            let key = format!("{section}.{}", &rest[section.len() + 1..]);
            self.set(&key, &raw, &name)?;
        }
        Ok(self)
    }

    /// Sets one key (`section.key`) from text, as `--set` and the environment do. The text is
    /// read as a TOML value when it is one (`true`, `42`, `{ alice = 1 }`) and as a string
    /// otherwise (`127.0.0.1:8080`).
    pub fn set(&mut self, key: &str, raw: &str, origin: &str) -> Result<&mut Self, ConfigError> {
        let Some((section, field)) = key.split_once('.') else {
            return Err(self.unknown_key(key, origin));
        };
        let Some(Value::Table(table)) = self.tree.get_mut(section) else {
            return Err(self.unknown_key(key, origin));
        };
        let value = format!("v = {raw}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| Value::String(raw.to_string()));
        table.insert(field.to_string(), value);
        self.origins.insert(key.to_string(), origin.to_string());
        Ok(self)
    }

    /// Adds one bearer token: `--token TOKEN=ACCOUNT` (a trader), `--token TOKEN=ROLE` or
    /// `--token TOKEN=ROLE:ACCOUNT`. The role is checked when the layers are finished.
    pub fn token(&mut self, spec: &str, origin: &str) -> Result<&mut Self, ConfigError> {
        let bad = |reason: String| ConfigError::Value {
            key: "auth.tokens".into(),
            origin: origin.to_string(),
            reason,
        };
        let (token, grant) = spec.split_once('=').ok_or_else(|| {
            bad(format!(
                "{spec:?} is not TOKEN=ACCOUNT or TOKEN=ROLE[:ACCOUNT]"
            ))
        })?;
        let principal = Principal::parse_grant(grant).map_err(bad)?;
        let value = match principal {
            Principal {
                role: Role::Trader,
                account: Some(account),
            } => Value::Integer(account as i64),
            Principal { role, account } => {
                let mut t = Table::new();
                t.insert("role".into(), Value::String(role.as_str().into()));
                if let Some(account) = account {
                    t.insert("account".into(), Value::Integer(account as i64));
                }
                Value::Table(t)
            }
        };
        if let Some(Value::Table(auth)) = self.tree.get_mut("auth") {
            let tokens = auth
                .entry("tokens")
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(tokens) = tokens {
                tokens.insert(token.to_string(), value);
            }
        }
        self.origins
            .insert("auth.tokens".to_string(), origin.to_string());
        Ok(self)
    }

    /// Validates the merged layers.
    pub fn finish(&self) -> Result<TickerdConfig, ConfigError> {
        let config: TickerdConfig =
            serde_path_to_error::deserialize(Value::Table(self.tree.clone())).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Value {
                    origin: self.origin_of(&key),
                    key,
                    reason: e.into_inner().to_string(),
                }
            })?;
        config
            .validate()
            .map_err(|(key, reason)| ConfigError::Value {
                origin: self.origin_of(key),
                key: key.to_string(),
                reason,
            })?;
        Ok(config)
    }

    /// The layer that set `key` or the nearest key above it ("defaults" if none did).
    fn origin_of(&self, key: &str) -> String {
        let mut k = key;
        loop {
            if let Some(o) = self.origins.get(k) {
                return o.clone();
            }
            match k.rsplit_once('.') {
                Some((up, _)) => k = up,
                None => return "defaults".into(),
            }
        }
    }

    fn merge(&mut self, prefix: String, table: Table, origin: &str) {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            let target = lookup_mut(&mut self.tree, &prefix);
            match (target.get_mut(&k), v) {
                // Sections merge key by key; any other value (tokens included) replaces.
                (Some(Value::Table(_)), Value::Table(inner)) if prefix.is_empty() => {
                    self.origins.insert(key.clone(), origin.to_string());
                    self.merge(key, inner, origin);
                }
                (_, v) => {
                    target.insert(k, v);
                    self.origins.insert(key, origin.to_string());
                }
            }
        }
    }

    fn unknown_key(&self, key: &str, origin: &str) -> ConfigError {
        ConfigError::UnknownKey {
            key: key.to_string(),
            origin: origin.to_string(),
            sections: self.tree.keys().cloned().collect::<Vec<_>>().join(", "),
        }
    }
}

fn lookup_mut<'a>(tree: &'a mut Table, path: &str) -> &'a mut Table {
    if path.is_empty() {
        return tree;
    }
    match tree.get_mut(path) {
        Some(Value::Table(t)) => t,
        // merge() only descends into sections that exist as tables.
        _ => unreachable!("section {path} is a table"),
    }
}

impl TickerdConfig {
    /// Rules serde cannot express; the error names the key.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.market.ingress_capacity == 0 {
            return Err(("market.ingress_capacity", "must be > 0".into()));
        }
        if self.market.egress_capacity == 0 {
            return Err(("market.egress_capacity", "must be > 0".into()));
        }
        if self.market.simulator && self.market.sim_rate == 0 {
            return Err((
                "market.sim_rate",
                "must be > 0 when the simulator runs".into(),
            ));
        }
        if self.market.simulator && self.market.sim_history_rate == 0 {
            return Err((
                "market.sim_history_rate",
                "must be > 0 when the simulator runs".into(),
            ));
        }
        if self.market.candles_history == 0 {
            return Err(("market.candles_history", "must be > 0".into()));
        }
        if self.market.heartbeat_ms == 0 {
            return Err(("market.heartbeat_ms", "must be > 0".into()));
        }
        if self.market.depth_levels == 0 {
            return Err(("market.depth_levels", "must be > 0".into()));
        }
        if self.grpc.tls_cert.is_some() != self.grpc.tls_key.is_some() {
            return Err((
                "grpc.tls_cert",
                "tls_cert and tls_key must be set together".into(),
            ));
        }
        if !matches!(
            self.http.deflate.as_str(),
            "shared" | "per-connection" | "off"
        ) {
            return Err((
                "http.deflate",
                format!(
                    "{:?} is not one of \"shared\", \"per-connection\", \"off\"",
                    self.http.deflate
                ),
            ));
        }
        if self.http.deflate_level > 9 {
            return Err((
                "http.deflate_level",
                format!("{} is not in 0..=9", self.http.deflate_level),
            ));
        }
        if !(9..=15).contains(&self.http.deflate_max_window_bits) {
            return Err((
                "http.deflate_max_window_bits",
                format!("{} is not in 9..=15", self.http.deflate_max_window_bits),
            ));
        }
        for (key, value) in [
            ("http.max_message_bytes", self.http.max_message_bytes as u64),
            ("http.max_subscriptions", self.http.max_subscriptions as u64),
            (
                "http.messages_per_second",
                self.http.messages_per_second as u64,
            ),
            ("http.max_connections", self.http.max_connections as u64),
            ("http.ping_interval_ms", self.http.ping_interval_ms),
            ("http.max_missed_pongs", self.http.max_missed_pongs as u64),
            ("http.idle_timeout_ms", self.http.idle_timeout_ms),
            ("http.outbound_queue", self.http.outbound_queue as u64),
            ("http.close_timeout_ms", self.http.close_timeout_ms),
            ("http.close_drain_bytes", self.http.close_drain_bytes as u64),
        ] {
            if value == 0 {
                return Err((key, "must be > 0".into()));
            }
        }
        if !matches!(self.journal.fsync.as_str(), "batch" | "off") {
            return Err((
                "journal.fsync",
                format!("{:?} is not one of \"batch\", \"off\"", self.journal.fsync),
            ));
        }
        for (key, value) in [
            ("journal.segment_bytes", self.journal.segment_bytes),
            (
                "journal.group_commit_bytes",
                self.journal.group_commit_bytes,
            ),
            ("journal.snapshot_every", self.journal.snapshot_every),
            ("journal.keep_snapshots", self.journal.keep_snapshots as u64),
        ] {
            if value == 0 {
                return Err((key, "must be > 0".into()));
            }
        }
        if self.journal.enabled && self.journal.dir.as_os_str().is_empty() {
            return Err(("journal.dir", "an empty path is not a directory".into()));
        }
        if self.grpc.max_message_bytes < 1024 {
            return Err((
                "grpc.max_message_bytes",
                format!("{} is below the 1 KiB minimum", self.grpc.max_message_bytes),
            ));
        }
        for origin in &self.grpc.cors_origins {
            let (scheme, host) = origin.split_once("://").unwrap_or(("", ""));
            let well_formed = origin == "*"
                || (matches!(scheme, "http" | "https")
                    && !host.is_empty()
                    && !host.contains('/')
                    && http::HeaderValue::from_str(origin).is_ok());
            if !well_formed {
                return Err((
                    "grpc.cors_origins",
                    format!("{origin:?} is not an origin (scheme://host[:port], no path) or \"*\""),
                ));
            }
        }
        if self.grpc.max_header_bytes < 1024 {
            return Err((
                "grpc.max_header_bytes",
                format!("{} is below the 1 KiB minimum", self.grpc.max_header_bytes),
            ));
        }
        let secret = &self.auth.jwt_hs256_secret;
        if !secret.is_empty() && secret.len() < 32 {
            return Err((
                "auth.jwt_hs256_secret",
                format!("{} bytes; HS256 needs at least 32", secret.len()),
            ));
        }
        for (token, grant) in &self.auth.tokens {
            if token.is_empty() {
                return Err(("auth.tokens", "an empty token is not allowed".into()));
            }
            if let Err(reason) = grant.principal() {
                return Err(("auth.tokens", format!("token {token:?}: {reason}")));
            }
        }
        for account in self.risk.accounts.keys() {
            if !matches!(account.parse::<AccountId>(), Ok(a) if a != 0) {
                return Err((
                    "risk.accounts",
                    format!("{account:?} is not an account number (a non-zero integer)"),
                ));
            }
        }
        let role = BusRole::parse(&self.bus.role);
        match role {
            None => {
                return Err((
                    "bus.role",
                    format!(
                        "{:?} is not one of \"all\", \"matcher\", \"gateway\"",
                        self.bus.role
                    ),
                ))
            }
            Some(BusRole::Gateway) if self.bus.node == 0 => {
                return Err((
                    "bus.node",
                    "a gateway needs a number in 1..=65535, unique among the stream's gateways"
                        .into(),
                ))
            }
            _ => {}
        }
        for (key, value) in [
            ("bus.snapshot_every", self.bus.snapshot_every),
            ("bus.publish_window", self.bus.publish_window as u64),
            ("bus.publish_queue", self.bus.publish_queue as u64),
            ("bus.request_timeout_ms", self.bus.request_timeout_ms),
            ("bus.gateway_timeout_ms", self.bus.gateway_timeout_ms),
            ("bus.connect_timeout_ms", self.bus.connect_timeout_ms),
        ] {
            if value == 0 {
                return Err((key, "must be > 0".into()));
            }
        }
        for (key, value) in [
            ("bus.stream", &self.bus.stream),
            ("bus.subject_prefix", &self.bus.subject_prefix),
            ("bus.snapshot_bucket", &self.bus.snapshot_bucket),
        ] {
            if value.is_empty() || value.contains([' ', '*', '>']) {
                return Err((key, format!("{value:?}: empty, or has a space, * or >")));
            }
        }
        // Port 0 asks the system for a free port, so two zeros do not collide.
        if self.grpc.enabled
            && self.http.enabled
            && self.grpc.listen == self.http.listen
            && self.grpc.listen.port() != 0
        {
            return Err((
                "http.listen",
                format!("{} is also grpc.listen", self.http.listen),
            ));
        }
        Ok(())
    }

    /// The market's configuration.
    pub fn market_config(&self) -> MarketConfig {
        let defaults = MarketConfig::default();
        let mut m = MarketConfig {
            simulator: self.market.simulator.then(|| SimConfig {
                seed: self.market.sim_seed,
                rate: self.market.sim_rate,
                history_secs: self.market.sim_history_s,
                history_rate: self.market.sim_history_rate,
                ..SimConfig::default()
            }),
            heartbeat: Duration::from_millis(self.market.heartbeat_ms),
            ..defaults
        };
        m.pipeline.ingress_capacity = self.market.ingress_capacity;
        m.pipeline.egress_capacity = self.market.egress_capacity;
        m.feeds.depth_levels = self.market.depth_levels;
        m.feeds.candles_kept = self.market.candles_history;
        m.journal = self.journal.enabled.then(|| self.journal_config());
        m.risk = RiskLimits {
            default: self.risk.default_limits.clone(),
            accounts: self
                .risk
                .accounts
                .iter()
                .filter_map(|(a, l)| Some((a.parse().ok()?, l.clone())))
                .collect(),
        };
        m
    }

    /// The bus's configuration (used by `--role matcher` and `--role gateway`).
    pub fn bus_config(&self) -> BusConfig {
        let b = &self.bus;
        BusConfig {
            role: BusRole::parse(&b.role).unwrap_or_default(),
            url: b.url.clone(),
            stream: b.stream.clone(),
            subject_prefix: b.subject_prefix.clone(),
            snapshot_bucket: b.snapshot_bucket.clone(),
            max_age: Duration::from_secs(b.max_age_secs),
            max_bytes: b.max_bytes,
            duplicate_window: Duration::from_secs(b.duplicate_window_secs),
            snapshot_every: b.snapshot_every,
            publish_window: b.publish_window,
            publish_queue: b.publish_queue,
            node: b.node,
            request_timeout: Duration::from_millis(b.request_timeout_ms),
            gateway_timeout: Duration::from_millis(b.gateway_timeout_ms),
            connect_timeout: Duration::from_millis(b.connect_timeout_ms),
            max_lag_messages: b.max_lag_messages,
            max_lag: Duration::from_millis(b.max_lag_ms),
        }
    }

    /// The journal's configuration (used when `journal.enabled`).
    pub fn journal_config(&self) -> JournalConfig {
        let j = &self.journal;
        JournalConfig {
            dir: j.dir.clone(),
            fsync: if j.fsync == "off" {
                FsyncMode::Off
            } else {
                FsyncMode::Batch
            },
            segment_bytes: j.segment_bytes,
            group_commit_bytes: j.group_commit_bytes,
            group_commit_delay: Duration::from_micros(j.group_commit_delay_us),
            snapshot_every: j.snapshot_every,
            keep_snapshots: j.keep_snapshots,
            open: OpenOptions {
                truncate_corrupt: j.truncate_corrupt,
            },
        }
    }

    /// The bearer tokens and what needs them, shared by both fronts.
    pub fn auth_config(&self) -> AuthConfig {
        AuthConfig {
            tokens: self
                .auth
                .tokens
                .iter()
                .filter_map(|(t, g)| Some((t.clone(), g.principal().ok()?)))
                .collect(),
            market_data_requires_token: self.auth.market_data_requires_token,
            jwt_hs256_secret: (!self.auth.jwt_hs256_secret.is_empty())
                .then(|| self.auth.jwt_hs256_secret.clone()),
        }
    }

    /// The gRPC front's configuration.
    pub fn grpc_config(&self) -> GrpcConfig {
        let g = &self.grpc;
        GrpcConfig {
            listen: g.listen,
            auth: self.auth_config(),
            max_message_size: g.max_message_bytes,
            max_header_bytes: g.max_header_bytes,
            stream_window: g.stream_window_bytes,
            connection_window: g.connection_window_bytes,
            keepalive_interval: (g.keepalive_interval_ms > 0)
                .then(|| Duration::from_millis(g.keepalive_interval_ms)),
            keepalive_timeout: Duration::from_millis(g.keepalive_timeout_ms),
            gzip: g.gzip,
            grpc_web: g.grpc_web,
            cors_origins: g.cors_origins.clone(),
            tls: match (&g.tls_cert, &g.tls_key) {
                (Some(cert_chain), Some(private_key)) => Some(TlsFiles {
                    cert_chain: cert_chain.clone(),
                    private_key: private_key.clone(),
                }),
                _ => None,
            },
            ..GrpcConfig::default()
        }
    }

    /// The WebSocket/HTTP front's configuration.
    pub fn ws_config(&self) -> WsConfig {
        let h = &self.http;
        let defaults = WsConfig::default();
        WsConfig {
            listen: h.listen,
            auth: self.auth_config(),
            limits: WsLimits {
                max_message_size: h.max_message_bytes,
                max_subscriptions: h.max_subscriptions,
                messages_per_second: h.messages_per_second,
                burst: h.burst,
                max_connections: h.max_connections,
                ping_interval: Duration::from_millis(h.ping_interval_ms),
                max_missed_pongs: h.max_missed_pongs,
                idle_timeout: Duration::from_millis(h.idle_timeout_ms),
                outbound_queue: h.outbound_queue,
                close_timeout: Duration::from_millis(h.close_timeout_ms),
                close_drain_bytes: h.close_drain_bytes,
                ..defaults.limits
            },
            deflate: DeflateConfig {
                enabled: h.deflate != "off",
                mode: if h.deflate == "per-connection" {
                    DeflateMode::PerConnection
                } else {
                    DeflateMode::Shared
                },
                level: h.deflate_level,
                server_max_window_bits: h.deflate_max_window_bits,
                max_inflated_message: h.max_message_bytes,
            },
            ..defaults
        }
    }

    /// The effective configuration as TOML (`tickerd --print-config`).
    pub fn to_toml(&self) -> String {
        // Plain data: serializing cannot fail.
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_layers_give_the_embedded_defaults() {
        assert_eq!(Layers::new().finish().unwrap(), TickerdConfig::default());
        let d = TickerdConfig::default();
        assert_eq!(d.grpc.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(d.http.listen.to_string(), "127.0.0.1:8080");
        assert!(d.market.simulator);
    }

    #[test]
    fn the_shipped_example_parses_to_the_defaults() {
        let text = include_str!("../../tickerd.example.toml");
        let mut layers = Layers::new();
        layers.file("tickerd.example.toml", text).unwrap();
        let mut expected = TickerdConfig::default();
        // The example shows how tokens look; everything else is the default.
        let t = &mut expected.auth.tokens;
        t.insert("alice-token".into(), TokenGrant::Trader(1));
        t.insert("bob-token".into(), TokenGrant::Trader(2));
        t.insert(
            "risk-desk-token".into(),
            TokenGrant::Role {
                role: "risk".into(),
                account: None,
            },
        );
        t.insert(
            "ops-token".into(),
            TokenGrant::Role {
                role: "admin".into(),
                account: None,
            },
        );
        assert_eq!(layers.finish().unwrap(), expected);
    }

    #[test]
    fn later_layers_override_earlier_ones() {
        let mut layers = Layers::new();
        layers
            .file("f.toml", "[grpc]\nlisten = \"0.0.0.0:1\"\ngzip = false\n")
            .unwrap()
            .env(env(&[
                ("TICKERD_GRPC_LISTEN", "0.0.0.0:2"),
                ("HOME", "/root"),
            ]))
            .unwrap()
            .set("grpc.listen", "0.0.0.0:3", "--grpc-listen")
            .unwrap();
        let c = layers.finish().unwrap();
        assert_eq!(c.grpc.listen.to_string(), "0.0.0.0:3");
        assert!(
            !c.grpc.gzip,
            "a key only the file set keeps the file's value"
        );
    }

    #[test]
    fn environment_values_are_typed_by_their_text() {
        let mut layers = Layers::new();
        layers
            .env(env(&[
                ("TICKERD_MARKET_SIMULATOR", "false"),
                ("TICKERD_MARKET_SIM_SEED", "7"),
                ("TICKERD_AUTH_TOKENS", "{ \"desk-1\" = 12 }"),
                ("TICKERD_CONFIG", "ignored-here.toml"),
            ]))
            .unwrap();
        let c = layers.finish().unwrap();
        assert!(!c.market.simulator);
        assert_eq!(c.market.sim_seed, 7);
        assert_eq!(c.auth.tokens.get("desk-1"), Some(&TokenGrant::Trader(12)));
        assert!(c.market_config().simulator.is_none());
    }

    #[test]
    fn a_bad_value_names_the_key_and_the_layer_it_came_from() {
        let mut layers = Layers::new();
        layers
            .env(env(&[("TICKERD_GRPC_LISTEN", "localhost-ish")]))
            .unwrap();
        let e = layers.finish().unwrap_err().to_string();
        assert!(
            e.starts_with("grpc.listen (from TICKERD_GRPC_LISTEN): "),
            "{e}"
        );

        let mut layers = Layers::new();
        layers
            .file("site.toml", "[market]\nsim_rate = \"fast\"\n")
            .unwrap();
        let e = layers.finish().unwrap_err().to_string();
        assert!(
            e.starts_with("market.sim_rate (from site.toml): invalid type"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_sections_are_refused_by_name() {
        let mut layers = Layers::new();
        layers.file("site.toml", "[grpc]\nlisen = \"x\"\n").unwrap();
        let e = layers.finish().unwrap_err().to_string();
        assert!(
            e.contains("grpc.lisen") && e.contains("unknown field"),
            "{e}"
        );

        let e = Layers::new()
            .env(env(&[("TICKERD_GPRC_LISTEN", "x")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("TICKERD_GPRC_LISTEN") && e.contains("gprc_listen"),
            "{e}"
        );

        let e = Layers::new()
            .set("nosuch.key", "1", "--set")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no config key nosuch.key"), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let e = Layers::new()
            .file("site.toml", "[grpc\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("site.toml: "), "{e}");
    }

    #[test]
    fn rules_beyond_types_are_checked() {
        let cases = [
            ("market.ingress_capacity", "0", "must be > 0"),
            ("grpc.tls_cert", "\"cert.pem\"", "set together"),
            ("market.heartbeat_ms", "0", "must be > 0"),
            ("http.listen", "127.0.0.1:50051", "also grpc.listen"),
            ("http.deflate", "\"fast\"", "not one of"),
            ("http.deflate_max_window_bits", "8", "9..=15"),
            ("http.max_subscriptions", "0", "must be > 0"),
            ("auth.jwt_hs256_secret", "\"short\"", "at least 32"),
            (
                "grpc.cors_origins",
                "[\"desk.example.com\"]",
                "is not an origin",
            ),
            (
                "grpc.cors_origins",
                "[\"https://desk.example.com/app\"]",
                "no path",
            ),
            ("grpc.max_header_bytes", "100", "1 KiB minimum"),
        ];
        for (key, value, expect) in cases {
            let mut layers = Layers::new();
            layers.set(key, value, "--set").unwrap();
            let e = layers.finish().unwrap_err().to_string();
            assert!(e.starts_with(&format!("{key} (from --set): ")), "{e}");
            assert!(e.contains(expect), "{e}");
        }
    }

    #[test]
    fn tokens_from_flags_join_the_file_and_refuse_account_zero() {
        let mut layers = Layers::new();
        layers
            .file("f.toml", "[auth]\ntokens = { a = 1 }\n")
            .unwrap()
            .token("b=2", "--token")
            .unwrap();
        let c = layers.finish().unwrap();
        assert_eq!(c.auth.tokens.len(), 2);
        assert_eq!(c.auth_config().tokens.get("b"), Some(&Principal::trader(2)));

        let e = Layers::new()
            .token("z=0", "--token")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("account 0") && e.contains("--token"), "{e}");
        assert!(Layers::new().token("nope", "--token").is_err());
    }

    #[test]
    fn roles_come_from_tables_and_flags_and_unknown_ones_stop_the_start() {
        let mut layers = Layers::new();
        layers
            .file(
                "f.toml",
                "[auth]\ntokens = { t = 1, desk = { role = \"risk\" }, ops = { role = \"admin\", account = 9 } }\n",
            )
            .unwrap()
            .token("flag-risk=risk", "--token")
            .unwrap()
            .token("flag-admin=admin:4", "--token")
            .unwrap();
        let tokens = layers.finish().unwrap().auth_config().tokens;
        let p = |role, account| Principal { role, account };
        assert_eq!(tokens["t"], Principal::trader(1));
        assert_eq!(tokens["desk"], p(Role::Risk, None));
        assert_eq!(tokens["ops"], p(Role::Admin, Some(9)));
        assert_eq!(tokens["flag-risk"], p(Role::Risk, None));
        assert_eq!(tokens["flag-admin"], p(Role::Admin, Some(4)));

        let mut layers = Layers::new();
        layers
            .file("f.toml", "[auth]\ntokens = { x = { role = \"root\" } }\n")
            .unwrap();
        let e = layers.finish().unwrap_err().to_string();
        assert!(e.starts_with("auth.tokens (from f.toml)"), "{e}");
        assert!(e.contains("unknown role \"root\""), "{e}");
        let e = Layers::new()
            .token("x=trader", "--token")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("a trader needs an account"), "{e}");
        let e = Layers::new()
            .token("x=root:3", "--token")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("auth.tokens (from --token)"), "{e}");
    }

    #[test]
    fn risk_limits_reach_the_market_config_and_bad_accounts_are_refused() {
        let mut layers = Layers::new();
        layers
            .file(
                "f.toml",
                "[risk.default_limits]\nmax_open_orders = 100\n\n[risk.accounts.7]\nmax_orders_per_sec = 5\n\n[risk.accounts.7.instruments.BTC-USD]\nmax_long = \"2\"\n",
            )
            .unwrap();
        let m = layers.finish().unwrap().market_config();
        assert_eq!(m.risk.default.unwrap().max_open_orders, Some(100));
        let seven = &m.risk.accounts[&7];
        assert_eq!(seven.max_orders_per_sec, Some(5));
        assert_eq!(seven.instruments["BTC-USD"].max_long.as_deref(), Some("2"));
        for bad in ["0", "desk"] {
            let mut layers = Layers::new();
            layers
                .file(
                    "f.toml",
                    &format!("[risk.accounts.{bad}]\nmax_open_orders = 1\n"),
                )
                .unwrap();
            let e = layers.finish().unwrap_err().to_string();
            assert!(e.starts_with("risk.accounts (from f.toml)"), "{e}");
        }
    }

    #[test]
    fn the_printed_config_reads_back_the_same() {
        let mut c = TickerdConfig::default();
        c.grpc.tls_cert = Some("c.pem".into());
        c.grpc.tls_key = Some("k.pem".into());
        c.auth.tokens.insert("t".into(), TokenGrant::Trader(5));
        c.auth.tokens.insert(
            "r".into(),
            TokenGrant::Role {
                role: "risk".into(),
                account: Some(6),
            },
        );
        let mut layers = Layers::new();
        layers.file("printed", &c.to_toml()).unwrap();
        assert_eq!(layers.finish().unwrap(), c);
    }

    #[test]
    fn http_settings_reach_the_websocket_config() {
        let mut layers = Layers::new();
        layers
            .set("http.deflate", "per-connection", "--set")
            .unwrap()
            .set("http.max_message_bytes", "4096", "--set")
            .unwrap()
            .token("t=3", "--token")
            .unwrap();
        let w = layers.finish().unwrap().ws_config();
        assert_eq!(w.deflate.mode, DeflateMode::PerConnection);
        assert!(w.deflate.enabled);
        assert_eq!(w.deflate.max_inflated_message, 4096);
        assert_eq!(w.limits.max_message_size, 4096);
        assert_eq!(w.auth.tokens.get("t"), Some(&Principal::trader(3)));
        let mut layers = Layers::new();
        layers.set("http.deflate", "off", "--set").unwrap();
        assert!(!layers.finish().unwrap().ws_config().deflate.enabled);
        // The defaults map back to the front's own defaults.
        let d = TickerdConfig::default().ws_config();
        assert_eq!(d.limits, WsLimits::default());
        assert_eq!(d.deflate, DeflateConfig::default());
    }

    #[test]
    fn grpc_settings_reach_the_grpc_config() {
        let mut layers = Layers::new();
        layers
            .set("grpc.keepalive_interval_ms", "0", "--set")
            .unwrap()
            .set("grpc.max_message_bytes", "65536", "--set")
            .unwrap();
        let g = layers.finish().unwrap().grpc_config();
        assert_eq!(g.keepalive_interval, None);
        assert_eq!(g.max_message_size, 65536);
    }
}
