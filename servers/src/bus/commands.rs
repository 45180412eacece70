//! Order entry from gateways: a gateway sends each command to `{prefix}.cmd` as a NATS request
//! (the journal's encoding of the command) and the matcher answers with the command's events,
//! exactly what a local caller of [`Market::execute`] gets. Authentication, validation into
//! engine commands and the typed rejects stay on the gateway's fronts (the same code as a
//! single process); idempotency by client order id is the engine's. A gateway that gets no
//! answer — no matcher subscribed, or none within `bus.request_timeout` — answers its client
//! UNAVAILABLE (gRPC) or an `unavailable` error (WebSocket), never silence.

use super::wire::{self, ERROR_HEADER};
use super::{session_epoch, session_node, BusConfig};
use crate::market::{ExecuteError, Market, Reply, ReplyResult};
use async_nats::{Client, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use ticker_engine::{Command, CommandKind, SessionId};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The name of a gateway's command queue among the rings on `/metrics`.
pub const BUS_COMMANDS_RING: &str = "bus_commands";

/// A gateway's way to the matcher (see [`Market`]'s remote entry).
pub struct Forwarder {
    tx: mpsc::Sender<(Command, Reply)>,
}

impl Forwarder {
    /// Starts forwarding on the current runtime; at most `queue` commands wait to be sent.
    pub fn start(client: Client, config: &BusConfig, queue: usize) -> Forwarder {
        let (tx, rx) = mpsc::channel(queue.max(1));
        tokio::spawn(forward(
            client,
            config.command_subject(),
            config.request_timeout,
            rx,
        ));
        Forwarder { tx }
    }

    /// How full its queue of commands waiting to be sent is (`/metrics`: ring `bus_commands`).
    pub fn fill(&self) -> ticker_engine::pipeline::RingFill {
        let capacity = self.tx.max_capacity();
        ticker_engine::pipeline::RingFill {
            ring: BUS_COMMANDS_RING,
            len: capacity - self.tx.capacity(),
            capacity,
        }
    }

    /// Queues a command for the matcher; never waits (a full queue is busy).
    pub(crate) fn submit(&self, cmd: Command, reply: Reply) -> Result<(), ExecuteError> {
        self.tx.try_send((cmd, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ExecuteError::Busy,
            mpsc::error::TrySendError::Closed(_) => ExecuteError::ShuttingDown,
        })
    }
}

async fn forward(
    client: Client,
    subject: String,
    timeout: Duration,
    mut rx: mpsc::Receiver<(Command, Reply)>,
) {
    let inbox = client.new_inbox();
    let mut replies = match client.subscribe(format!("{inbox}.*")).await {
        Ok(s) => s,
        Err(e) => {
            let why = format!("cannot subscribe to replies: {e}");
            while let Some((_, reply)) = rx.recv().await {
                reply.send(Err(ExecuteError::Unavailable(why.clone())));
            }
            return;
        }
    };
    let mut pending: HashMap<u64, Reply> = HashMap::new();
    // Every command waits as long, so expiries come in submission order.
    let mut expiries: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            next = rx.recv() => {
                let Some((cmd, reply)) = next else { break };
                let corr = cmd.corr;
                let payload = Bytes::from(wire::encode_command_request(&cmd));
                match client
                    .publish_with_reply(subject.clone(), format!("{inbox}.{corr}"), payload)
                    .await
                {
                    Ok(()) => {
                        pending.insert(corr, reply);
                        expiries.push_back((Instant::now() + timeout, corr));
                    }
                    Err(e) => reply.send(Err(ExecuteError::Unavailable(format!(
                        "cannot send to NATS: {e}"
                    )))),
                }
            }
            Some(message) = replies.next() => {
                let corr = message
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|c| c.parse::<u64>().ok());
                let Some(reply) = corr.and_then(|c| pending.remove(&c)) else { continue };
                reply.send(answer(&message, &subject));
            }
            _ = tick.tick() => {
                let now = Instant::now();
                while let Some(&(at, corr)) = expiries.front() {
                    if at > now {
                        break;
                    }
                    expiries.pop_front();
                    if let Some(reply) = pending.remove(&corr) {
                        reply.send(Err(ExecuteError::Unavailable(format!(
                            "no answer from the matcher within {timeout:?}"
                        ))));
                    }
                }
            }
        }
    }
    for (_, reply) in pending.drain() {
        reply.send(Err(ExecuteError::ShuttingDown));
    }
}

fn answer(message: &async_nats::Message, subject: &str) -> ReplyResult {
    if message.status == Some(StatusCode::NO_RESPONDERS) {
        return Err(ExecuteError::Unavailable(format!(
            "no matcher is listening on {subject}"
        )));
    }
    if let Some(code) = message.headers.as_ref().and_then(|h| h.get(ERROR_HEADER)) {
        return Err(match code.as_str() {
            "busy" => ExecuteError::Busy,
            "shutting-down" => ExecuteError::Unavailable("the matcher is shutting down".into()),
            other => ExecuteError::Unavailable(format!(
                "the matcher refused the command ({other}): {}",
                String::from_utf8_lossy(&message.payload)
            )),
        });
    }
    wire::decode_reply(&message.payload)
        .map_err(|e| ExecuteError::Unavailable(format!("the matcher's answer is unreadable: {e}")))
}

/// A gateway's `GetLimits`: the matcher's table (the engine's limits as of its last change).
pub async fn remote_limits(
    client: &Client,
    config: &BusConfig,
    account: u64,
) -> Result<crate::limits::AccountLimitsView, ExecuteError> {
    let asked = client.request(config.limits_subject(), Bytes::from(account.to_string()));
    let message = match tokio::time::timeout(config.request_timeout, asked).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return Err(ExecuteError::Unavailable(e.to_string())),
        Err(_) => {
            return Err(ExecuteError::Unavailable(format!(
                "no answer from the matcher within {:?}",
                config.request_timeout
            )))
        }
    };
    if let Some(code) = message.headers.as_ref().and_then(|h| h.get(ERROR_HEADER)) {
        return Err(ExecuteError::Unavailable(format!(
            "the matcher refused ({code})"
        )));
    }
    postcard::from_bytes(&message.payload)
        .map_err(|e| ExecuteError::Unavailable(format!("the matcher's answer is unreadable: {e}")))
}

/// The sessions gateways opened, by node, so that a restarted gateway's previous sessions
/// are closed (cancel-on-disconnect) when it announces itself.
#[derive(Default)]
struct Sessions {
    by_node: HashMap<u16, HashSet<SessionId>>,
}

impl Sessions {
    fn track(&mut self, kind: &CommandKind) {
        match kind {
            CommandKind::Place(p) if session_node(p.session) != 0 => {
                self.by_node
                    .entry(session_node(p.session))
                    .or_default()
                    .insert(p.session);
            }
            CommandKind::SessionClosed { session } => {
                if let Some(set) = self.by_node.get_mut(&session_node(*session)) {
                    set.remove(session);
                }
            }
            _ => {}
        }
    }

    /// Every session of `node` (a gateway that went silent).
    fn take_all(&mut self, node: u16) -> Vec<SessionId> {
        self.by_node
            .remove(&node)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default()
    }

    /// The sessions of `node` from runs before the one that started at `epoch`.
    fn take_stale(&mut self, node: u16, epoch: u32) -> Vec<SessionId> {
        let Some(set) = self.by_node.get_mut(&node) else {
            return Vec::new();
        };
        let stale: Vec<SessionId> = set
            .iter()
            .copied()
            .filter(|s| session_epoch(*s) != epoch)
            .collect();
        for s in &stale {
            set.remove(s);
        }
        stale
    }
}

/// The matcher's side: executes gateways' commands and answers each with its events.
/// `stale` are the gateway sessions the engine recovered (their gateways may still be up).
pub async fn serve(
    market: Arc<Market>,
    client: Client,
    config: BusConfig,
    stale: Vec<SessionId>,
) -> Result<(), String> {
    let subscribe = |subject: String| {
        let client = client.clone();
        async move {
            client
                .subscribe(subject.clone())
                .await
                .map_err(|e| format!("cannot subscribe to {subject}: {e}"))
        }
    };
    let commands = client
        .queue_subscribe(config.command_subject(), "tickerd-matcher".into())
        .await
        .map_err(|e| format!("cannot subscribe to {}: {e}", config.command_subject()))?;
    let nodes = subscribe(config.node_subject()).await?;
    let limits = subscribe(config.limits_subject()).await?;
    let alive = subscribe(config.alive_subject()).await?;
    let sessions = Arc::new(parking_lot::Mutex::new(Sessions::default()));
    for s in stale {
        sessions
            .lock()
            .by_node
            .entry(session_node(s))
            .or_default()
            .insert(s);
    }
    tokio::spawn(answer_limits(market.clone(), client.clone(), limits));
    tokio::spawn(watch_gateways(
        market.clone(),
        sessions.clone(),
        alive,
        config.gateway_timeout,
    ));
    {
        let (market, client, sessions) = (market.clone(), client.clone(), sessions.clone());
        tokio::spawn(async move {
            let mut nodes = nodes;
            while let Some(message) = nodes.next().await {
                node_started(&market, &client, &sessions, message).await;
            }
        });
    }
    tokio::spawn(execute_commands(market, client, sessions, commands));
    Ok(())
}

/// Answers gateways' requests for an account's limits (the matcher holds the only copy).
async fn answer_limits(market: Arc<Market>, client: Client, mut limits: async_nats::Subscriber) {
    while let Some(message) = limits.next().await {
        let Some(reply) = message.reply else { continue };
        let text = String::from_utf8_lossy(&message.payload);
        match text.parse::<u64>() {
            Ok(account) => {
                let view = market.limits().get(account);
                let bytes = postcard::to_stdvec(&view).unwrap_or_default();
                let _ = client.publish(reply, Bytes::from(bytes)).await;
            }
            Err(_) => respond_error(&client, reply, "bad-request", format!("{text:?}")).await,
        }
    }
}

/// Cancels the orders of every session of a gateway silent for `timeout` (cancel on
/// disconnect across processes).
async fn watch_gateways(
    market: Arc<Market>,
    sessions: Arc<parking_lot::Mutex<Sessions>>,
    mut alive: async_nats::Subscriber,
    timeout: std::time::Duration,
) {
    // When each gateway was last heard from; a gateway with sessions that has never been
    // heard from (recovered from the journal) gets a full timeout from now.
    let mut heard: HashMap<u16, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(timeout / 5);
    loop {
        tokio::select! {
            message = alive.next() => {
                let Some(message) = message else { return };
                let text = String::from_utf8_lossy(&message.payload);
                if let Some(Ok(node)) = text.split_whitespace().next().map(str::parse::<u16>) {
                    heard.insert(node, Instant::now());
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let nodes: Vec<u16> = sessions.lock().by_node.keys().copied().collect();
                for node in nodes {
                    let last = *heard.entry(node).or_insert(now);
                    if now.duration_since(last) < timeout {
                        continue;
                    }
                    heard.remove(&node);
                    let gone = sessions.lock().take_all(node);
                    for session in &gone {
                        let _ = market
                            .execute(CommandKind::SessionClosed { session: *session })
                            .await;
                    }
                    if !gone.is_empty() {
                        tracing::warn!(
                            "bus: gateway {node} silent for {timeout:?}: cancelled the orders of its {} sessions",
                            gone.len()
                        );
                    }
                }
            }
        }
    }
}

/// Submits the gateways' commands in arrival order and answers each when its events are back.
async fn execute_commands(
    market: Arc<Market>,
    client: Client,
    sessions: Arc<parking_lot::Mutex<Sessions>>,
    mut commands: async_nats::Subscriber,
) {
    while let Some(message) = commands.next().await {
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let cmd = match wire::decode_command_request(&message.payload) {
            Ok(c) => c,
            Err(why) => {
                respond_error(&client, reply_to, "bad-request", why).await;
                continue;
            }
        };
        sessions.lock().track(&cmd.kind);
        match market.submit_for_reply(cmd.kind, cmd.deadline) {
            Ok(pending) => {
                let client = client.clone();
                tokio::spawn(async move {
                    let result = pending.await;
                    respond(&client, reply_to, result).await;
                });
            }
            Err(e) => respond(&client, reply_to, Err(e)).await,
        }
    }
}

/// A gateway announced `node epoch`: close its sessions from earlier runs, then answer.
async fn node_started(
    market: &Market,
    client: &Client,
    sessions: &parking_lot::Mutex<Sessions>,
    message: async_nats::Message,
) {
    let text = String::from_utf8_lossy(&message.payload);
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(node)), Some(Ok(epoch))) = (parts.next(), parts.next()) else {
        if let Some(reply) = message.reply {
            respond_error(
                client,
                reply,
                "bad-request",
                format!("{text:?} is not NODE EPOCH"),
            )
            .await;
        }
        return;
    };
    let stale = sessions
        .lock()
        .take_stale(node as u16, (epoch & 0xFF_FFFF) as u32);
    for session in &stale {
        if let Err(e) = market
            .execute(CommandKind::SessionClosed { session: *session })
            .await
        {
            tracing::warn!("bus: cannot close session {session} of gateway {node}: {e}");
        }
    }
    if !stale.is_empty() {
        tracing::info!(
            "bus: gateway {node} restarted: cancelled the orders of {} of its sessions",
            stale.len()
        );
    }
    if let Some(reply) = message.reply {
        let _ = client
            .publish(reply, Bytes::from(stale.len().to_string()))
            .await;
    }
}

async fn respond(client: &Client, reply_to: async_nats::Subject, result: ReplyResult) {
    match result {
        Ok(events) => {
            let mut out = Vec::new();
            wire::encode_events(&events, &mut out);
            let _ = client.publish(reply_to, Bytes::from(out)).await;
        }
        Err(ExecuteError::Busy) => {
            respond_error(
                client,
                reply_to,
                "busy",
                "the engine's queue is full".into(),
            )
            .await
        }
        Err(e) => respond_error(client, reply_to, "shutting-down", e.to_string()).await,
    }
}

async fn respond_error(client: &Client, reply_to: async_nats::Subject, code: &str, why: String) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(ERROR_HEADER, code);
    let _ = client
        .publish_with_headers(reply_to, headers, Bytes::from(why))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::first_session;
    use ticker_engine::{Place, Side};

    #[test]
    fn a_restarted_gateway_closes_only_its_earlier_sessions() {
        let mut s = Sessions::default();
        let old = first_session(3, 100);
        let new = first_session(3, 200);
        let other = first_session(4, 100);
        for session in [old, old + 1, new, other, 7] {
            s.track(&CommandKind::Place(Place {
                session,
                ..Place::limit(1, 0, Side::Buy, 1, 1)
            }));
        }
        s.track(&CommandKind::SessionClosed { session: old + 1 });
        assert_eq!(s.take_stale(3, 200), vec![old]);
        assert!(s.take_stale(3, 200).is_empty());
        assert_eq!(s.take_stale(4, 200), vec![other]);
        assert!(
            !s.by_node.contains_key(&0),
            "the matcher's own sessions are not tracked"
        );
    }
}
