//! One WebSocket connection: reads the client's commands and answers each exactly once, runs
//! its subscriptions, and enforces the per-connection limits.
//!
//! ```text
//!  client ──► session (this task): parse → subscribe / auth / order ops ──┐
//!  timers: server pings, idle timeout ────────────────────────────────────┴─► bounded queue ──► writer ──► client
//!  feeds hub ──► (the subscriptions, handed to the writer with `subscribed`) ───────────────────┘
//! ```
//!
//! Market data never passes through this task: a subscribe hands the hub subscriptions to the
//! connection's writer ([`super::writer`]), which delivers them. Nothing here can make the
//! engine wait: a subscriber that falls behind meets its channel's hub policy (conflate,
//! resync, or — for trades and orders — the end of its subscription, which the writer reports
//! and this task answers with close 1013). Order commands run one at a time, in the order
//! sent, so their replies come in that order.

use super::deflate::{DeflateConfig, Negotiated};
use super::handshake;
use super::limits::{Rate, RateLimiter, WsLimits};
use super::outgoing::{Encoder, Feed, Outbound};
use super::protocol::{
    self, ChannelKey, ChannelSpec, ChannelTarget, ErrorCode, Op, Request, RequestError,
};
use super::replies;
use super::socket::SessionSocket;
use super::stream::ViolationHandle;
use super::writer::{Outgoing, Writers};
use crate::auth::{Principal, Role as TokenRole, Tokens};
use crate::market::{now_ns, ExecuteError, Market};
use crate::order_entry::{self, AmendTicket, PlaceTicket};
use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::{Stream, StreamExt};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use ticker_engine::{AccountId, CommandKind, SessionId};
use ticker_feeds::{Subscription, Topic};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::Message;

pub use super::outgoing::End;

/// What every session of a server shares.
pub struct Front {
    pub market: Arc<Market>,
    /// permessage-deflate: whether offers are accepted and how the server compresses.
    pub deflate: DeflateConfig,
    /// The tasks that write to every connection (and count the bytes for `/metrics`).
    pub writers: Writers,
    pub tokens: Tokens,
    pub limits: WsLimits,
    /// Becomes `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
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

/// Runs a connection to its end: `tcp` is the upgraded socket, `buffered` what was read from
/// it past the HTTP request.
pub async fn run(
    tcp: TcpStream,
    buffered: Bytes,
    negotiated: Option<Negotiated>,
    ws_config: WebSocketConfig,
    front: Arc<Front>,
) {
    let limits = front.limits.clone();
    let tcp = Arc::new(tcp);
    let encoder = Encoder::new(negotiated.as_ref());
    let (out, ended) = front.writers.attach(tcp.clone(), encoder, &limits);
    let socket = SessionSocket::new(tcp, out.control());
    let mut stream =
        handshake::upgrade_buffered(socket, &buffered, negotiated, Role::Server, Some(ws_config))
            .await;
    let violations = stream.get_ref().violation_handle();
    let mut session = Session {
        rate: RateLimiter::new(&limits, Instant::now()),
        front,
        out,
        principal: None,
        follows_instruments: false,
        subscriptions: HashSet::new(),
        cancel_on_disconnect: None,
        tagged: false,
        answers: FuturesOrdered::new(),
    };
    let end = session.serve(&mut stream, ended, &violations).await;
    if let End::Close(code, reason) = end {
        // Requests already submitted are answered before the close frame.
        session.flush_answers(limits.close_timeout).await;
        if session
            .send(Outbound::Close(close_frame(code, &reason)))
            .await
        {
            // Read on, dropping what the client still sends, until its close frame (or EOF,
            // or the byte budget): closing with its data unread would reset the connection and
            // could destroy our close frame on the way. tungstenite's stream has ended if the
            // close is for a message it refused, so the frames are read beneath it.
            let _ = tokio::time::timeout(
                limits.close_timeout,
                stream
                    .get_mut()
                    .discard_until_close(limits.close_drain_bytes),
            )
            .await;
        }
    }
    let Session {
        out,
        front,
        cancel_on_disconnect,
        tagged,
        ..
    } = session;
    out.finish(limits.close_timeout).await;
    if let (Some(session), true) = (cancel_on_disconnect, tagged) {
        // After every order the connection submitted, in the engine's order: waits for room
        // in the ingress ring rather than failing when it is full, since the client is gone
        // and its orders must not stay in the book.
        let market = front.market.clone();
        let _ = tokio::task::spawn_blocking(move || {
            market.execute_blocking(CommandKind::SessionClosed { session })
        })
        .await;
    }
}

struct Session {
    front: Arc<Front>,
    /// What the connection sends goes through its writer.
    out: Outgoing,
    /// Who `auth` said this connection is.
    principal: Option<Principal>,
    /// Asked for `instruments`: sent the list again whenever an instrument is added.
    follows_instruments: bool,
    /// The channels the writer delivers for this connection.
    subscriptions: HashSet<ChannelKey>,
    /// Set by `auth` with `cancel_on_disconnect`: orders placed from then on carry this
    /// session id, and the engine cancels them when the connection ends.
    cancel_on_disconnect: Option<SessionId>,
    /// An order was placed with the session id: cancel on disconnect at the end.
    tagged: bool,
    rate: RateLimiter,
    /// What each request is answered with, in request order: order commands are submitted to
    /// the engine as they arrive and answered as their events come back, and every other
    /// answer (a `pong`, an `error`, `subscribed`) waits for the ones before it.
    answers: FuturesOrdered<Answer>,
}

/// A request's answer, ready or awaiting the engine.
type Answer = Pin<Box<dyn Future<Output = Outbound> + Send>>;

impl Session {
    fn limits(&self) -> &WsLimits {
        &self.front.limits
    }

    /// Queues an item; `false` when the writer is gone or has not taken anything for
    /// `write_timeout` (a client that does not read).
    fn send(&self, item: Outbound) -> impl Future<Output = bool> + Send + '_ {
        // Borrows only the handle, so the session itself need not be shared between threads.
        self.out.send(item, self.limits().write_timeout)
    }

    /// Answers the current request with `item`, after every earlier answer.
    fn answer(&mut self, item: Outbound) {
        self.answers.push_back(Box::pin(std::future::ready(item)));
    }

    fn reply(&mut self, json: Bytes) {
        self.answer(Outbound::Reply(json));
    }

    fn error(&mut self, e: RequestError) {
        self.reply(replies::error(&e));
    }

    /// Hands the writer every answer still owed, waiting for the engine's up to `wait` in all.
    async fn flush_answers(&mut self, wait: std::time::Duration) {
        let _ = tokio::time::timeout(wait, async {
            while let Some(item) = self.answers.next().await {
                if !self.send(item).await {
                    return;
                }
            }
        })
        .await;
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
        if !self
            .send(Outbound::Reply(replies::hello(self.limits())))
            .await
        {
            return End::Gone;
        }
        let limits = self.limits().clone();
        // Requests awaiting their answer at most; then the connection is not read until the
        // oldest is answered.
        let in_flight = limits.outbound_queue.max(1);
        let mut shutdown = self.front.shutdown.clone();
        let mut instrument_changes = self.front.market.instrument_changes();
        instrument_changes.mark_unchanged();
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
                biased;
                Some(item) = self.answers.next(), if !self.answers.is_empty() => {
                    if !self.send(item).await {
                        return End::Gone;
                    }
                    continue;
                }
                _ = shutdown.changed() => continue,
                Ok(()) = instrument_changes.changed(), if self.follows_instruments => {
                    let list = replies::instruments(None, self.front.market.instruments());
                    self.reply(list);
                    continue;
                }
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
                message = stream.next(), if self.answers.len() < in_flight => message,
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
            if let Err(end) = self.on_message(text.as_ref().map(|t| t.as_str())) {
                return end;
            }
        }
    }

    /// One text (or binary: `None`) message from the client.
    fn on_message(&mut self, text: Option<&str>) -> Result<(), End> {
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
                self.error(e.about(op, id));
                return Ok(());
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
            self.error(e);
            return Ok(());
        };
        let parsed = protocol::parse(
            text,
            self.front.market.instruments(),
            self.limits().max_subscriptions,
        );
        match parsed {
            Ok(request) => self.handle(request),
            Err(e) => self.error(e),
        }
        Ok(())
    }

    /// Acts on one request now (state changes, subscriptions, submission to the engine) and
    /// queues its answer.
    fn handle(&mut self, Request { id, op }: Request) {
        let name = op.name();
        let market = self.front.market.clone();
        let instruments = market.instruments();
        let order_command = match op {
            Op::Subscribe(specs) => return self.subscribe(id, specs),
            Op::Unsubscribe(specs) => {
                let keys: Vec<ChannelKey> = specs.iter().map(ChannelSpec::key).collect();
                for key in &keys {
                    self.subscriptions.remove(key);
                }
                let reply = replies::channels("unsubscribed", id, &specs);
                return self.answer(Outbound::Unsubscribe { keys, reply });
            }
            Op::Ping => return self.reply(replies::pong(id, now_ns())),
            Op::Instruments => {
                self.follows_instruments = true;
                return self.reply(replies::instruments(id, instruments));
            }
            Op::Auth {
                token,
                cancel_on_disconnect,
            } => return self.auth(id, &token, cancel_on_disconnect),
            other => other,
        };
        let Some(account) = self.account() else {
            let e = RequestError::new(
                ErrorCode::NotAuthenticated,
                format!(
                    "{name} needs an account: send auth with a token that trades for one first"
                ),
            );
            return self.error(e.about(Some(name), id));
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
                // Only a connection that cancels on disconnect tags its orders.
                let tag = self.cancel_on_disconnect.unwrap_or(0);
                self.tagged |= tag != 0;
                order_entry::place(&ticket, v, instruments, account, tag).map(CommandKind::Place)
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
            | Op::Auth { .. } => return,
        };
        let command = match command {
            Ok(c) => c,
            Err(invalid) => return self.error(RequestError::from(invalid).about(Some(name), id)),
        };
        // Submitted now, in request order; answered when its events are back.
        let submitted = market.submit_for_reply(command, 0);
        let instruments = instruments.clone();
        self.answers.push_back(Box::pin(async move {
            let events = match submitted {
                Ok(reply) => reply.await,
                Err(e) => Err(e),
            };
            let reply = match events {
                Ok(events) => replies::result(name, id, &events, &instruments),
                Err(e) => Err(execute_error(e).about(Some(name), id)),
            };
            Outbound::Reply(reply.unwrap_or_else(|e| replies::error(&e)))
        }));
    }

    fn auth(&mut self, id: Option<u64>, token: &str, cancel_on_disconnect: bool) {
        let Some(principal) = self.front.tokens.principal(token) else {
            let e = RequestError::new(ErrorCode::AuthFailed, "unknown token");
            return self.error(e.about(Some("auth"), id));
        };
        match self.principal {
            Some(current) if current != principal => {
                let who = |p: Principal| match p.account {
                    Some(a) => format!("account {a} ({} role)", p.role),
                    None => format!("the {} role with no account", p.role),
                };
                let e = RequestError::new(
                    ErrorCode::AlreadyAuthenticated,
                    format!(
                        "this connection is {}; open another connection for {}",
                        who(current),
                        who(principal)
                    ),
                );
                self.error(e.about(Some("auth"), id))
            }
            _ => {
                self.principal = Some(principal);
                // Once on, it stays on: orders placed under it are still cancelled at the end.
                if cancel_on_disconnect && self.cancel_on_disconnect.is_none() {
                    self.cancel_on_disconnect = Some(self.front.market.new_session());
                }
                let on = self.cancel_on_disconnect.is_some();
                self.reply(replies::authenticated(id, principal, on))
            }
        }
    }

    /// The account this connection trades for, once authenticated with a token that has one.
    fn account(&self) -> Option<AccountId> {
        self.principal.and_then(|p| p.account)
    }

    fn subscribe(&mut self, id: Option<u64>, specs: Vec<ChannelSpec>) {
        let needs_account = |s: &ChannelSpec| {
            matches!(s.target, ChannelTarget::Orders)
                || (self.principal.is_none() && self.front.tokens.market_data_requires_token())
        };
        if self.account().is_none() {
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
                return self.error(e.about(Some("subscribe"), id));
            }
        }
        if !self.principal.is_some_and(|p| p.has(TokenRole::Risk)) {
            let fields: Vec<(String, String)> = specs
                .iter()
                .enumerate()
                .filter(|(_, s)| s.target.needs_risk_role())
                .map(|(i, s)| {
                    (
                        format!("channels[{i}].name"),
                        format!("{} needs a token with the risk role", s.label()),
                    )
                })
                .collect();
            if !fields.is_empty() {
                let mut e = RequestError::new(
                    ErrorCode::PermissionDenied,
                    "these channels need a token with the risk role: send auth with one first",
                );
                e.fields = fields;
                return self.error(e.about(Some("subscribe"), id));
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
            .filter(|s| !self.subscriptions.contains(&s.key()))
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
            return self.error(e.about(Some("subscribe"), id));
        }
        // Each subscription starts now (its snapshot is taken here); the writer stops any
        // earlier one of the same channel, writes `subscribed`, then delivers.
        let feeds: Vec<Feed> = unique
            .into_iter()
            .map(|spec| {
                self.subscriptions.insert(spec.key());
                Feed {
                    sub: self.open(&spec),
                    spec,
                }
            })
            .collect();
        let reply = replies::channels("subscribed", id, &specs);
        self.answer(Outbound::Subscribe { feeds, reply });
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
                .subscribe(self.account().unwrap_or_default(), spec.from_seq),
            ChannelTarget::DropCopy => market.accounts().drop_copy().subscribe(spec.from_seq),
            ChannelTarget::Positions => market.positions().subscribe(spec.from_seq),
        }
    }
}

fn execute_error(e: ExecuteError) -> RequestError {
    match e {
        ExecuteError::Busy => RequestError::new(
            ErrorCode::Busy,
            "the engine's queue is full; not executed, retry",
        ),
        ExecuteError::ShuttingDown => {
            RequestError::new(ErrorCode::Unavailable, "the server is shutting down")
        }
        ExecuteError::Unavailable(why) => RequestError::new(
            ErrorCode::Unavailable,
            format!("the matcher is unavailable: {why}; the command may not have executed"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn close_reasons_are_cut_to_123_bytes_on_a_character_boundary() {
        let reason = "é".repeat(100);
        let frame = close_frame(CloseCode::Policy, &reason);
        assert_eq!(frame.reason.len(), 122);
        assert!(frame.reason.chars().all(|c| c == 'é'));
    }
}
