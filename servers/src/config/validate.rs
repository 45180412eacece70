//! Rules beyond types: what serde cannot express, each error naming its key.

use super::*;
use crate::bus::Role as BusRole;
use ticker_engine::shard::MAX_SHARDS;
use ticker_engine::AccountId;

impl TickerdConfig {
    /// Rules serde cannot express; the error names the key.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
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
        if !(1..=MAX_SHARDS).contains(&self.market.shards) {
            return Err((
                "market.shards",
                format!("{} is not in 1..={MAX_SHARDS}", self.market.shards),
            ));
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
}
