//! Scale-out over NATS JetStream (docs/scale-out.md): a matcher publishes the engine's
//! sequenced events, gateways rebuild the feeds from them and forward order entry back.
//!
//! ```text
//!  matcher: engine ─► feeds thread ─► publisher ──JetStream stream {prefix}.ev.<instrument|x>──► gateways
//!                         │                       ──object store: feeds snapshot at a seq──────►   │
//!                         ▲                                                                       │
//!                         └── command server ◄──NATS request {prefix}.cmd (reply: the events)──────┘
//! ```
//!
//! One JetStream message carries one command's events (the outcome and what it caused, or a
//! heartbeat's expiries), so message boundaries depend only on the event stream: a matcher that
//! restarts from its journal splits the same events into the same messages, and the
//! `Nats-Msg-Id` (the first event's seq) lets the stream drop any it republishes. The
//! publisher also starts after the newest event already in the stream, so republishing is the
//! exception (a publish in flight when the matcher died), not the rule.

pub mod commands;
pub mod gateway;
pub mod publisher;
pub mod wire;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What this process does (`--role`, `bus.role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Engine, feeds and both fronts in one process, no bus: the embedded default.
    #[default]
    All,
    /// Engine, journal and feeds; publishes to JetStream and takes gateways' orders.
    Matcher,
    /// No engine: rebuilds the feeds from JetStream and forwards orders to the matcher.
    Gateway,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Matcher => "matcher",
            Role::Gateway => "gateway",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "all" => Some(Role::All),
            "matcher" => Some(Role::Matcher),
            "gateway" => Some(Role::Gateway),
            _ => None,
        }
    }
}

/// The bus as the market uses it (built from config `[bus]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    pub role: Role,
    /// NATS server URL(s), comma-separated.
    pub url: String,
    /// The JetStream stream holding the events.
    pub stream: String,
    /// Subjects start with this: `{prefix}.ev.*`, `{prefix}.cmd`, `{prefix}.node`.
    pub subject_prefix: String,
    /// The object store bucket of feeds snapshots for late joiners.
    pub snapshot_bucket: String,
    /// How long the stream keeps events (0: forever).
    pub max_age: Duration,
    /// Most bytes the stream keeps (0: no limit); the oldest go first.
    pub max_bytes: u64,
    /// JetStream's de-duplication window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
    /// The matcher publishes a feeds snapshot every this many events (and at start).
    pub snapshot_every: u64,
    /// Publishes awaiting their acknowledgement before the publisher waits.
    pub publish_window: usize,
    /// Event batches queued for the publisher before the feeds thread waits (and so the
    /// engine: events are never dropped).
    pub publish_queue: usize,
    /// This gateway's number, 1..=65535, unique among gateways: it tags the order-entry
    /// sessions it opens so the matcher can cancel them when the gateway restarts.
    pub node: u16,
    /// How long a gateway waits for the matcher's answer to a command.
    pub request_timeout: Duration,
    /// A gateway not heard from for this long is gone: the matcher cancels the orders of its
    /// sessions (cancel-on-disconnect). Gateways say they are alive five times as often.
    pub gateway_timeout: Duration,
    /// How long a start waits for NATS (and a gateway for the stream's first snapshot).
    pub connect_timeout: Duration,
    /// A gateway reports NOT_SERVING while more than this many messages behind the stream...
    pub max_lag_messages: u64,
    /// ...or while its newest applied message was published longer ago than this and more
    /// messages are waiting.
    pub max_lag: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            role: Role::All,
            url: "nats://127.0.0.1:4222".into(),
            stream: "TICKERD".into(),
            subject_prefix: "tickerd".into(),
            snapshot_bucket: "tickerd-snapshots".into(),
            max_age: Duration::from_secs(24 * 3600),
            max_bytes: 0,
            duplicate_window: Duration::from_secs(120),
            snapshot_every: 200_000,
            publish_window: 4096,
            publish_queue: 65_536,
            node: 0,
            request_timeout: Duration::from_secs(2),
            gateway_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            max_lag_messages: 10_000,
            max_lag: Duration::from_secs(2),
        }
    }
}

impl BusConfig {
    /// Subjects of event messages: `{prefix}.ev.<instrument id>` or `{prefix}.ev.x` for
    /// commands that touch no instrument or several.
    pub fn events_subject(&self, instrument: Option<u32>) -> String {
        match instrument {
            Some(i) => format!("{}.ev.{i}", self.subject_prefix),
            None => format!("{}.ev.x", self.subject_prefix),
        }
    }

    /// Every event subject (the stream's subjects and a gateway's filter).
    pub fn events_wildcard(&self) -> String {
        format!("{}.ev.>", self.subject_prefix)
    }

    /// Where gateways send commands (NATS request/reply).
    pub fn command_subject(&self) -> String {
        format!("{}.cmd", self.subject_prefix)
    }

    /// Where a gateway asks the matcher for an account's limits (`GetLimits`).
    pub fn limits_subject(&self) -> String {
        format!("{}.limits", self.subject_prefix)
    }

    /// Where gateways say they are alive (`NODE EPOCH`, every `gateway_timeout / 5`).
    pub fn alive_subject(&self) -> String {
        format!("{}.node.alive", self.subject_prefix)
    }

    /// Where a gateway announces that it (re)started, so the matcher cancels the orders of
    /// the sessions it had before.
    pub fn node_subject(&self) -> String {
        format!("{}.node", self.subject_prefix)
    }
}

/// The bus's counters, read by `/metrics` and health.
#[derive(Debug, Default)]
pub struct BusStats {
    /// The newest event seq published and acknowledged (matcher) or applied (gateway).
    pub applied_seq: AtomicU64,
    /// The stream sequence of that message.
    pub stream_seq: AtomicU64,
    /// Messages published and acknowledged (matcher) or applied (gateway).
    pub published: AtomicU64,
    /// Publishes the stream reported as duplicates (already stored: a resend).
    pub duplicates: AtomicU64,
    /// Times the publisher re-read the stream's end after a failed publish.
    pub publish_retries: AtomicU64,
    /// Snapshots stored (matcher) or loaded (gateway), and the seq of the newest.
    pub snapshots: AtomicU64,
    pub snapshot_seq: AtomicU64,
    /// Gateway: messages in the stream after the newest one applied.
    pub pending: AtomicU64,
    /// Gateway: when the newest applied message was published (ns since the Unix epoch).
    pub applied_published_ns: AtomicU64,
    /// Gateway: why it stopped following the stream, if it did.
    pub failure: Mutex<Option<String>>,
}

impl BusStats {
    /// How far a gateway is behind: messages waiting, and how long ago the newest applied
    /// one was published while others wait (zero when caught up).
    pub fn lag(&self, now_ns: u64) -> (u64, Duration) {
        let pending = self.pending.load(Ordering::Relaxed);
        if pending == 0 {
            return (0, Duration::ZERO);
        }
        let published = self.applied_published_ns.load(Ordering::Relaxed);
        (
            pending,
            Duration::from_nanos(now_ns.saturating_sub(published)),
        )
    }

    pub fn fail(&self, why: String) {
        tracing::error!("bus: {why}");
        self.failure.lock().get_or_insert(why);
    }
}

/// The node a session id belongs to: a gateway's sessions are `node (16 bits) | epoch (24
/// bits) | counter (24 bits)`, the epoch being the gateway's start time in seconds, so a
/// restarted gateway never reuses a session id of its previous run; the matcher's own (and a
/// single process's) have 0 in the top bits.
pub fn session_node(session: u64) -> u16 {
    (session >> 48) as u16
}

pub fn session_epoch(session: u64) -> u32 {
    ((session >> 24) & 0xFF_FFFF) as u32
}

/// The first session id of a node's run that started at `epoch` (seconds; its low 24 bits).
pub fn first_session(node: u16, epoch: u64) -> u64 {
    ((node as u64) << 48) | ((epoch & 0xFF_FFFF) << 24) | 1
}

/// Connects to NATS, retrying until `connect_timeout` (a matcher and its gateways may start
/// before the server does); once connected, the client reconnects by itself.
async fn connect(config: &BusConfig) -> Result<async_nats::Client, String> {
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    loop {
        let options = async_nats::ConnectOptions::new()
            .name(format!("tickerd-{}", config.role.as_str()))
            .connection_timeout(config.connect_timeout.min(Duration::from_secs(2)));
        match options.connect(config.url.as_str()).await {
            Ok(client) => return Ok(client),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!(
                    "cannot connect to NATS at {} within {:?}: {e}",
                    config.url, config.connect_timeout
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_sessions() {
        let c = BusConfig::default();
        assert_eq!(c.events_subject(Some(3)), "tickerd.ev.3");
        assert_eq!(c.events_subject(None), "tickerd.ev.x");
        assert_eq!(c.events_wildcard(), "tickerd.ev.>");
        let s = first_session(7, 0x0123_4567);
        assert_eq!((session_node(s), session_epoch(s)), (7, 0x23_4567));
        assert_eq!(session_node(s + 1000), 7);
        assert_eq!(session_node(5), 0);
        assert_eq!(Role::parse("gateway"), Some(Role::Gateway));
        assert_eq!(Role::parse("edge"), None);
    }
}
