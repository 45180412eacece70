//! One WebSocket connection: reads the client's commands and answers each exactly once, runs
//! its subscriptions, and enforces the per-connection limits.
//!
//! ```text
//!  client ──► session (this task): parse → subscribe / auth / order ops ──┐
//!  feeds hub ──► one forwarder task per subscription ─────────────────────┼──► bounded queue ──► writer ──► client
//!  timers: server pings, idle timeout ────────────────────────────────────┘
//! ```
//!
//! Nothing here can make the engine wait: forwarders await the hub and the queue, and a
//! subscriber that falls behind meets its channel's hub policy (conflate, resync, or — for
//! trades and orders — the end of its subscription, which closes the connection with 1013).
//! Order commands run one at a time, in the order sent, so their replies come in that order.

use super::deflate::{DeflateConfig, Negotiated};
use super::limits::{Rate, RateLimiter, WsLimits};
use super::outgoing::{self, Encoder, Outbound, WireStats};
use super::protocol::{
    self, ChannelKey, ChannelSpec, ChannelTarget, ErrorCode, Op, Request, RequestError,
};
use super::replies;
use super::stream::{InflatingStream, ViolationHandle};
use crate::auth::Tokens;
use crate::market::{now_ns, ExecuteError, Market};
use crate::order_entry::{self, AmendTicket, PlaceTicket};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use ticker_engine::{AccountId, CommandKind, Event};
use ticker_feeds::{Delivery, Ended, Subscription, Topic};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

/// What every session of a server shares.
pub struct Front {
    pub market: Arc<Market>,
    /// permessage-deflate: whether offers are accepted and how the server compresses.
    pub deflate: DeflateConfig,
    /// Bytes written, raw and compressed (`/metrics`).
    pub wire: Arc<WireStats>,
    pub tokens: Tokens,
    pub limits: WsLimits,
    /// Becomes `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// How a session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Send a close frame with this code and reason, then wait for the client's.
    Close(CloseCode, String),
    /// The client is gone or cannot be written to: nothing more to send.
    Gone,
}

/// The payload of the server's pings.
const PING_PAYLOAD: &[u8] = b"tickerd";
/// Close reasons are at most 123 bytes (RFC 6455 §5.5: a control frame carries 125 bytes).
const MAX_CLOSE_REASON: usize = 123;

fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: reason[..end].to_string().into(),
    }
}

/// Runs a connection to its end.
pub async fn run<S>(
    ws: WebSocketStream<InflatingStream<S>>,
    negotiated: Option<Negotiated>,
    front: Arc<Front>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = front.limits.clone();
    let violations = ws.get_ref().violation_handle();
    let encoder = Encoder::new(negotiated.as_ref(), front.wire.clone());
    let (sink, mut stream) = ws.split();
    let (out, queue) = mpsc::channel(limits.outbound_queue.max(1));
    let mut writer = tokio::spawn(outgoing::write(sink, queue, encoder, limits.write_timeout));
    let (ended_tx, ended) = mpsc::channel(1);
    let mut session = Session {
        rate: RateLimiter::new(&limits, Instant::now()),
        front,
        out,
        ended_tx,
        account: None,
        subscriptions: HashMap::new(),
    };
    let end = session.serve(&mut stream, ended, &violations).await;
    session.stop_subscriptions().await;
    if let End::Close(code, reason) = end {
        if session
            .send(Outbound::Close(close_frame(code, &reason)))
            .await
        {
            // Read on until the client answers with its close frame (tungstenite replies to
            // it and ends the stream), dropping whatever else it still sends.
            let _ = tokio::time::timeout(limits.close_timeout, async {
                while let Some(r) = stream.next().await {
                    // An oversize message is skipped frame by frame; any other error ends it.
                    if let Err(e) = r {
                        if !matches!(e, tungstenite::Error::Capacity(_)) {
                            break;
                        }
                    }
                }
            })
            .await;
        }
    }
    drop(session);
    if tokio::time::timeout(limits.close_timeout, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

struct Session {
    front: Arc<Front>,
    out: mpsc::Sender<Outbound>,
    /// Forwarders report here why a subscription ended the connection.
    ended_tx: mpsc::Sender<End>,
    account: Option<AccountId>,
    subscriptions: HashMap<ChannelKey, JoinHandle<()>>,
    rate: RateLimiter,
}

impl Session {
    fn limits(&self) -> &WsLimits {
        &self.front.limits
    }

    /// Queues an item; `false` when the writer is gone or has not taken anything for
    /// `write_timeout` (a client that does not read).
    async fn send(&self, item: Outbound) -> bool {
        matches!(
            tokio::time::timeout(self.limits().write_timeout, self.out.send(item)).await,
            Ok(Ok(()))
        )
    }

    async fn reply(&self, json: Bytes) -> Result<(), End> {
        if self.send(Outbound::Reply(json)).await {
            Ok(())
        } else {
            Err(End::Gone)
        }
    }

    async fn error(&self, e: RequestError) -> Result<(), End> {
        self.reply(replies::error(&e)).await
    }

    async fn serve<S>(
        &mut self,
        stream: &mut S,
        mut ended: mpsc::Receiver<End>,
        violations: &ViolationHandle,
    ) -> End
    where
        S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
    {
        if let Err(end) = self.reply(replies::hello(self.limits())).await {
            return end;
        }
        let limits = self.limits().clone();
        let mut shutdown = self.front.shutdown.clone();
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + limits.ping_interval,
            limits.ping_interval,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unanswered_pings = 0u32;
        let idle = tokio::time::sleep(limits.idle_timeout);
        tokio::pin!(idle);
        loop {
            if *shutdown.borrow_and_update() {
                return End::Close(CloseCode::Away, "server shutting down".into());
            }
            let message = tokio::select! {
                _ = shutdown.changed() => continue,
                Some(end) = ended.recv() => return end,
                _ = self.out.closed() => return End::Gone,
                _ = ping.tick() => {
                    if unanswered_pings >= limits.max_missed_pongs {
                        return End::Close(
                            CloseCode::Policy,
                            format!("no pong to {unanswered_pings} pings"),
                        );
                    }
                    unanswered_pings += 1;
                    if !self.send(Outbound::Ping(Bytes::from_static(PING_PAYLOAD))).await {
                        return End::Gone;
                    }
                    continue;
                }
                _ = &mut idle => {
                    return End::Close(
                        CloseCode::Away,
                        format!("idle: no message for {} s", limits.idle_timeout.as_secs_f64()),
                    );
                }
                message = stream.next() => message,
            };
            // A compressed message the adapter refused (bad deflate data, a deflate bomb, RSV1
            // where it is not allowed) surfaces as a read error: its own close code wins.
            if let (Some(Err(_)), Some(v)) = (&message, violations.get()) {
                return End::Close(v.code, v.reason.clone());
            }
            let text = match message {
                None => return End::Gone,
                Some(Err(tungstenite::Error::Capacity(_))) => {
                    return End::Close(
                        CloseCode::Size,
                        format!("message too big: limit {} bytes", limits.max_message_size),
                    );
                }
                Some(Err(tungstenite::Error::Utf8(_))) => {
                    return End::Close(
                        CloseCode::Invalid,
                        "invalid UTF-8 in a text message".into(),
                    );
                }
                Some(Err(tungstenite::Error::Protocol(e))) => {
                    return End::Close(CloseCode::Protocol, e.to_string());
                }
                Some(Err(_)) => return End::Gone,
                Some(Ok(Message::Pong(_))) => {
                    unanswered_pings = 0;
                    continue;
                }
                // tungstenite answers pings and close frames itself; after a close frame the
                // stream ends.
                Some(Ok(Message::Ping(_) | Message::Close(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Text(text))) => Some(text),
                Some(Ok(Message::Binary(_))) => None,
            };
            idle.as_mut()
                .reset(tokio::time::Instant::now() + limits.idle_timeout);
            if let Err(end) = self.on_message(text.as_ref().map(|t| t.as_str())).await {
                return end;
            }
        }
    }

    /// One text (or binary: `None`) message from the client.
    async fn on_message(&mut self, text: Option<&str>) -> Result<(), End> {
        match self.rate.check(Instant::now()) {
            Rate::Allowed => {}
            Rate::Limited => {
                let (op, id) = text.map_or((None, None), protocol::peek);
                let limits = self.limits();
                let e = RequestError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "over {} messages per second (burst {}); not executed",
                        limits.messages_per_second, limits.burst
                    ),
                );
                return self.error(e.about(op, id)).await;
            }
            Rate::Abusive { limited } => {
                let limits = self.limits();
                return Err(End::Close(
                    CloseCode::Policy,
                    format!(
                        "rate limit: {limited} messages over {}/s in {} s",
                        limits.messages_per_second,
                        limits.rate_limit_window.as_secs_f64()
                    ),
                ));
            }
        }
        let Some(text) = text else {
            let e = RequestError::new(
                ErrorCode::BadJson,
                "binary messages are not part of the protocol; send JSON text",
            );
            return self.error(e).await;
        };
        let parsed = protocol::parse(
            text,
            self.front.market.instruments(),
            self.limits().max_subscriptions,
        );
        match parsed {
            Ok(request) => self.handle(request).await,
            Err(e) => self.error(e).await,
        }
    }

    async fn handle(&mut self, Request { id, op }: Request) -> Result<(), End> {
        let name = op.name();
        let market = self.front.market.clone();
        let instruments = market.instruments();
        let order_command = match op {
            Op::Subscribe(specs) => return self.subscribe(id, specs).await,
            Op::Unsubscribe(specs) => {
                for spec in &specs {
                    if let Some(forwarder) = self.subscriptions.remove(&spec.key()) {
                        stop(forwarder).await;
                    }
                }
                return self
                    .reply(replies::channels("unsubscribed", id, &specs))
                    .await;
            }
            Op::Ping => return self.reply(replies::pong(id, now_ns())).await,
            Op::Instruments => return self.reply(replies::instruments(id, instruments)).await,
            Op::Auth { token } => return self.auth(id, &token).await,
            other => other,
        };
        let Some(account) = self.account else {
            let e = RequestError::new(
                ErrorCode::NotAuthenticated,
                format!("{name} needs an account: send auth with a token first"),
            );
            return self.error(e.about(Some(name), id)).await;
        };
        let command = match order_command {
            Op::Place(p, v) => {
                let ticket = PlaceTicket {
                    instrument: &p.instrument,
                    side: p.side,
                    order_type: p.order_type,
                    price: &p.price,
                    trigger_price: &p.trigger_price,
                    size: &p.size,
                    display_size: &p.display_size,
                    time_in_force: p.time_in_force,
                    expiry_ns: p.expiry_ns,
                    post_only: p.post_only,
                    self_trade_prevention: p.self_trade_prevention,
                    client_order_id: p.client_order_id,
                };
                order_entry::place(&ticket, v, instruments, account, 0).map(CommandKind::Place)
            }
            Op::Cancel(order, v) => order_entry::cancel(order, v, account).map(CommandKind::Cancel),
            Op::Amend(a, v) => {
                let ticket = AmendTicket {
                    order: a.order,
                    instrument: &a.instrument,
                    price: a.price.as_deref(),
                    size: a.size.as_deref(),
                    trigger_price: a.trigger_price.as_deref(),
                };
                order_entry::amend(&ticket, v, account, instruments, market.accounts())
                    .map(CommandKind::Amend)
            }
            Op::MassCancel {
                instrument,
                side,
                violations,
            } => order_entry::mass_cancel(&instrument, side, violations, account, instruments)
                .map(CommandKind::MassCancel),
            // Handled above.
            Op::Subscribe(_)
            | Op::Unsubscribe(_)
            | Op::Ping
            | Op::Instruments
            | Op::Auth { .. } => return Ok(()),
        };
        let command = match command {
            Ok(c) => c,
            Err(invalid) => {
                return self
                    .error(RequestError::from(invalid).about(Some(name), id))
                    .await
            }
        };
        let reply = match execute(&market, command).await {
            Ok(events) => replies::result(name, id, &events, instruments),
            Err(e) => Err(e.about(Some(name), id)),
        };
        match reply {
            Ok(json) => self.reply(json).await,
            Err(e) => self.error(e).await,
        }
    }

    async fn auth(&mut self, id: Option<u64>, token: &str) -> Result<(), End> {
        let Some(account) = self.front.tokens.account(token) else {
            let e = RequestError::new(ErrorCode::AuthFailed, "unknown token");
            return self.error(e.about(Some("auth"), id)).await;
        };
        match self.account {
            Some(current) if current != account => {
                let e = RequestError::new(
                    ErrorCode::AlreadyAuthenticated,
                    format!("this connection trades for account {current}; open another connection for account {account}"),
                );
                self.error(e.about(Some("auth"), id)).await
            }
            _ => {
                self.account = Some(account);
                self.reply(replies::authenticated(id, account)).await
            }
        }
    }

    async fn subscribe(&mut self, id: Option<u64>, specs: Vec<ChannelSpec>) -> Result<(), End> {
        let needs_account = |s: &ChannelSpec| {
            matches!(s.target, ChannelTarget::Orders)
                || self.front.tokens.market_data_requires_token()
        };
        if self.account.is_none() {
            let fields: Vec<(String, String)> = specs
                .iter()
                .enumerate()
                .filter(|(_, s)| needs_account(s))
                .map(|(i, s)| {
                    (
                        format!("channels[{i}].name"),
                        format!("{} needs auth first", s.label()),
                    )
                })
                .collect();
            if !fields.is_empty() {
                let mut e = RequestError::new(
                    ErrorCode::NotAuthenticated,
                    "subscribing to these channels needs an account: send auth with a token first",
                );
                e.fields = fields;
                return self.error(e.about(Some("subscribe"), id)).await;
            }
        }
        // A channel listed twice counts once; the later entry wins.
        let mut unique: Vec<ChannelSpec> = Vec::with_capacity(specs.len());
        for spec in &specs {
            unique.retain(|s| s.key() != spec.key());
            unique.push(spec.clone());
        }
        let added = unique
            .iter()
            .filter(|s| !self.subscriptions.contains_key(&s.key()))
            .count();
        let max = self.limits().max_subscriptions;
        if self.subscriptions.len() + added > max {
            let e = RequestError::new(
                ErrorCode::TooManySubscriptions,
                format!(
                    "at most {max} subscriptions per connection: {} held, {added} more asked; nothing was subscribed",
                    self.subscriptions.len()
                ),
            );
            return self.error(e.about(Some("subscribe"), id)).await;
        }
        let mut started = Vec::with_capacity(unique.len());
        for spec in unique {
            // A restarted channel's old messages all precede the new `subscribed`.
            if let Some(old) = self.subscriptions.remove(&spec.key()) {
                stop(old).await;
            }
            let sub = self.open(&spec);
            started.push((spec, sub));
        }
        self.reply(replies::channels("subscribed", id, &specs))
            .await?;
        for (spec, sub) in started {
            let key = spec.key();
            let forwarder =
                tokio::spawn(forward(sub, spec, self.out.clone(), self.ended_tx.clone()));
            self.subscriptions.insert(key, forwarder);
        }
        Ok(())
    }

    fn open(&self, spec: &ChannelSpec) -> Subscription {
        let market = &self.front.market;
        match &spec.target {
            ChannelTarget::Market {
                channel,
                instrument,
            } => market.hub().subscribe(
                Topic::Market {
                    channel: *channel,
                    instrument: instrument.id(),
                },
                spec.from_seq,
            ),
            ChannelTarget::Orders => market
                .accounts()
                .subscribe(self.account.unwrap_or_default(), spec.from_seq),
        }
    }

    async fn stop_subscriptions(&mut self) {
        for (_, forwarder) in self.subscriptions.drain() {
            stop(forwarder).await;
        }
    }
}

/// Ends a forwarder and waits until it is gone, so nothing of it is queued afterwards.
async fn stop(forwarder: JoinHandle<()>) {
    forwarder.abort();
    let _ = forwarder.await;
}

async fn execute(market: &Market, command: CommandKind) -> Result<Vec<Event>, RequestError> {
    market.execute(command).await.map_err(|e| match e {
        ExecuteError::Busy => RequestError::new(
            ErrorCode::Busy,
            "the engine's queue is full; not executed, retry",
        ),
        ExecuteError::ShuttingDown => {
            RequestError::new(ErrorCode::Unavailable, "the server is shutting down")
        }
    })
}

/// Moves one subscription's deliveries into the connection's queue until it ends.
async fn forward(
    mut sub: Subscription,
    spec: ChannelSpec,
    out: mpsc::Sender<Outbound>,
    ended: mpsc::Sender<End>,
) {
    loop {
        let item = match sub.recv().await {
            Ok(Delivery::Gap {
                from_seq,
                resumed_after,
            }) => Outbound::Reply(replies::gap(&spec, from_seq, resumed_after)),
            Ok(delivery) => match delivery.message() {
                Some(m) => Outbound::Feed(m.clone()),
                None => continue,
            },
            Err(Ended::TooSlow { limit, .. }) => {
                let reason = format!(
                    "too slow: {} fell {limit} messages behind; resume with from_seq",
                    spec.label()
                );
                let _ = ended.try_send(End::Close(CloseCode::Again, reason));
                return;
            }
            Err(Ended::Closed) => {
                let _ = ended.try_send(End::Close(CloseCode::Away, "server shutting down".into()));
                return;
            }
        };
        if out.send(item).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ticker_feeds::{Channel, Hub, HubConfig, MessageKind, WireInstrument};

    fn message(seq: u64) -> Arc<ticker_feeds::Message> {
        ticker_feeds::Message::encoded(
            seq,
            seq - 1,
            MessageKind::Update,
            Bytes::from(format!(r#"{{"type":"trade","seq":{seq}}}"#)),
            Bytes::new(),
        )
    }

    #[tokio::test]
    async fn a_trades_subscriber_behind_its_queue_limit_closes_the_connection_with_1013() {
        let hub = Hub::new(HubConfig {
            lossless_queue: 2,
            ..HubConfig::default()
        });
        let topic = Topic::Market {
            channel: Channel::Trades,
            instrument: 0,
        };
        let spec = ChannelSpec {
            target: ChannelTarget::Market {
                channel: Channel::Trades,
                instrument: Arc::new(
                    WireInstrument::new(0, crate::defaults::instruments().remove(0)).unwrap(),
                ),
            },
            from_seq: None,
        };
        let sub = hub.subscribe(topic, None);
        // A connection whose queue holds one message and is not being written out.
        let (out, mut queue) = mpsc::channel(1);
        let (ended_tx, mut ended) = mpsc::channel(1);
        let forwarder = tokio::spawn(forward(sub, spec, out, ended_tx));
        for seq in 1..=10 {
            hub.topic(topic).publish(message(seq));
        }
        let end = loop {
            tokio::select! {
                end = ended.recv() => break end,
                // Let the forwarder move on so it meets the lag.
                _ = queue.recv() => {}
            }
        };
        assert_eq!(
            end,
            Some(End::Close(
                CloseCode::Again,
                "too slow: trades BTC-USD fell 2 messages behind; resume with from_seq".into()
            ))
        );
        forwarder.await.unwrap();
    }

    #[test]
    fn close_reasons_are_cut_to_123_bytes_on_a_character_boundary() {
        let reason = "é".repeat(100);
        let frame = close_frame(CloseCode::Policy, &reason);
        assert_eq!(frame.reason.len(), 122);
        assert!(frame.reason.chars().all(|c| c == 'é'));
    }
}
