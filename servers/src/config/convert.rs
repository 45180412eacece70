//! What each section becomes for the parts that run: the market, the journal, the bus, auth
//! and both fronts.

use super::*;
use crate::auth::AuthConfig;
use crate::bus::{BusConfig, Role as BusRole};
use crate::grpc::{GrpcConfig, TlsFiles};
use crate::limits::RiskLimits;
use crate::market::MarketConfig;
use crate::ws::deflate::{DeflateConfig, DeflateMode};
use crate::ws::{WsConfig, WsLimits};
use std::time::Duration;
use ticker_engine::journal::{FsyncMode, JournalConfig, OpenOptions};
use ticker_feeds::sim::SimConfig;

impl TickerdConfig {
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
        m.shards = self.market.shards;
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
            preallocate: j.preallocate,
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
