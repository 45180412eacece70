//! The order flow and the order-entry clients that send it, over gRPC (an `OrderSession`
//! stream) and over WebSocket (`place` / `cancel` ops).
//!
//! Every client repeats: place a post-only buy a few ticks under the reference price, then
//! cancel it by client order id. Both commands change the depth of a level near the top of the
//! book, so each accepted command is reflected in the next depth update; the book stays empty
//! between pairs, so the flow can run forever without filling the engine. The same flow is sent
//! over both fronts.
//!
//! Sending and receiving are split: whoever paces the flow calls [`OrderClient::submit`] (a
//! pacing thread in `latency` mode, a windowed task in `throughput` mode) and the client's
//! reader task matches each reply to its command (replies come in request order on both fronts)
//! and logs it — or, for a client connected with [`OrderClient::connect_tapped`] (the soak,
//! which summarises each interval and must not grow over an hour), hands it on as it arrives.

use super::latency::Sent;
use super::{Clock, Target};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use ticker_proto::v1 as pb;
use ticker_servers::ws::stream::InflatingStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tungstenite::Message as WsMessage;

/// Distinct price levels the clients spread their orders over (all within the best 10).
const LEVELS: i64 = 5;

/// What one client sends: the instrument's grid and its own client-order-id range.
#[derive(Debug, Clone)]
pub struct Plan {
    pub instrument: String,
    /// Decimal strings of the prices used, best first.
    prices: Vec<String>,
    size: String,
    coid_base: u64,
}

/// The k-th command of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    Place {
        client_order_id: u64,
        price: &'a str,
        size: &'a str,
    },
    Cancel {
        client_order_id: u64,
    },
}

impl Plan {
    /// Plan of client `index`: prices 1..=5 ticks under the reference, the minimum size.
    pub fn new(index: usize, instrument: &pb::Instrument) -> anyhow::Result<Plan> {
        let tick = Decimal::from_str(&instrument.tick_size)?;
        let reference = Decimal::from_str(&instrument.reference_price)?;
        let prices = (1..=LEVELS)
            .map(|k| (reference - tick * Decimal::from(k)).to_string())
            .collect();
        Ok(Plan {
            instrument: instrument.symbol.clone(),
            prices,
            size: instrument.min_size.clone(),
            // Unique across clients even when they share one account.
            coid_base: (index as u64 + 1) << 32,
        })
    }

    pub fn command(&self, k: u64) -> Command<'_> {
        let client_order_id = self.coid_base + k / 2 + 1;
        if k.is_multiple_of(2) {
            Command::Place {
                client_order_id,
                price: &self.prices[((k / 2) % LEVELS as u64) as usize],
                size: &self.size,
            }
        } else {
            Command::Cancel { client_order_id }
        }
    }

    fn grpc_request(&self, k: u64) -> pb::SessionRequest {
        use pb::session_request::Action;
        let action = match self.command(k) {
            Command::Place {
                client_order_id,
                price,
                size,
            } => Action::Place(pb::PlaceOrderRequest {
                instrument: self.instrument.clone(),
                side: pb::Side::Buy as i32,
                price: price.to_string(),
                size: size.to_string(),
                post_only: true,
                client_order_id,
                ..Default::default()
            }),
            Command::Cancel { client_order_id } => Action::Cancel(pb::CancelOrderRequest {
                order: Some(pb::cancel_order_request::Order::ClientOrderId(
                    client_order_id,
                )),
            }),
        };
        pb::SessionRequest {
            request_id: k + 1,
            action: Some(action),
        }
    }

    fn ws_text(&self, k: u64) -> String {
        let id = k + 1;
        match self.command(k) {
            Command::Place {
                client_order_id,
                price,
                size,
            } => format!(
                r#"{{"op":"place","id":{id},"instrument":"{}","side":"buy","price":"{price}","size":"{size}","post_only":true,"client_order_id":{client_order_id}}}"#,
                self.instrument
            ),
            Command::Cancel { client_order_id } => {
                format!(r#"{{"op":"cancel","id":{id},"client_order_id":{client_order_id}}}"#)
            }
        }
    }
}

/// What a client logged: every reply.
#[derive(Debug, Default)]
pub struct OrderLog {
    pub accepted: Vec<Sent>,
    /// (sent, acked) times and the engine's reject reason or the request error.
    pub rejected: Vec<(u64, u64, String)>,
}

impl OrderLog {
    /// Replies received in `[from_ns, to_ns)`.
    pub fn replies_between(&self, from_ns: u64, to_ns: u64) -> u64 {
        let inside = |at: u64| (from_ns..to_ns).contains(&at);
        (self.accepted.iter().filter(|s| inside(s.acked_ns)).count()
            + self.rejected.iter().filter(|r| inside(r.1)).count()) as u64
    }

    /// Rejects of commands sent in `[from_ns, to_ns)`, by reason.
    pub fn rejects_between(&self, from_ns: u64, to_ns: u64) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (sent, _, reason) in &self.rejected {
            if (from_ns..to_ns).contains(sent) {
                *out.entry(reason.clone()).or_default() += 1;
            }
        }
        out
    }
}

/// One answered command, as the reader matched it to its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub sent_ns: u64,
    pub acked_ns: u64,
    /// The engine's `engine_seq`, or the engine's reject reason or the request error.
    pub outcome: Result<u64, String>,
}

/// Where the reader puts each reply.
enum Replies {
    /// Into the [`OrderLog`] returned by [`OrderClient::finish`].
    Log,
    /// Handed on as it arrives; the log stays empty.
    Tap(mpsc::UnboundedSender<Reply>),
}

/// Where a command goes: the front-specific writer.
enum Writer {
    Grpc(mpsc::UnboundedSender<pb::SessionRequest>),
    Ws(mpsc::UnboundedSender<String>),
}

/// One connected order-entry client.
pub struct OrderClient {
    plan: Arc<Plan>,
    writer: Writer,
    timing: mpsc::UnboundedSender<(u64, u64)>,
    next: u64,
    clock: Clock,
    /// Released by the reader per reply: bounds the commands in flight.
    pub window: Arc<Semaphore>,
    reader: JoinHandle<anyhow::Result<OrderLog>>,
}

impl OrderClient {
    /// Connects over `front` and starts the session (gRPC) or authenticates (WebSocket).
    pub async fn connect(
        target: &Target,
        plan: Plan,
        token: &str,
        clock: Clock,
        window: usize,
    ) -> anyhow::Result<OrderClient> {
        Self::connect_with(target, plan, token, clock, window, Replies::Log).await
    }

    /// As [`connect`](Self::connect), but every reply is sent to `tap` as it arrives instead
    /// of being kept for [`finish`](Self::finish).
    pub async fn connect_tapped(
        target: &Target,
        plan: Plan,
        token: &str,
        clock: Clock,
        window: usize,
        tap: mpsc::UnboundedSender<Reply>,
    ) -> anyhow::Result<OrderClient> {
        Self::connect_with(target, plan, token, clock, window, Replies::Tap(tap)).await
    }

    async fn connect_with(
        target: &Target,
        plan: Plan,
        token: &str,
        clock: Clock,
        window: usize,
        replies: Replies,
    ) -> anyhow::Result<OrderClient> {
        let (timing, timing_rx) = mpsc::unbounded_channel();
        let window = Arc::new(Semaphore::new(window));
        let (writer, reader) = match target {
            Target::Grpc(addr) => {
                let start = pb::SessionStart {
                    cancel_on_disconnect: true,
                    ..Default::default()
                };
                let (tx, responses) = grpc_session(*addr, token, start).await?;
                let reader = tokio::spawn(read_grpc(
                    responses,
                    Matcher::new(timing_rx, clock.clone(), window.clone(), replies),
                ));
                (Writer::Grpc(tx), reader)
            }
            Target::Ws { addr, .. } => {
                let (mut sink, stream) = ws_signed_in(*addr, token).await?;
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                tokio::spawn(async move {
                    // Feed what is queued, flush when the queue is empty: one write per burst.
                    while let Some(text) = rx.recv().await {
                        if sink.feed(WsMessage::text(text)).await.is_err() {
                            return;
                        }
                        while let Ok(text) = rx.try_recv() {
                            if sink.feed(WsMessage::text(text)).await.is_err() {
                                return;
                            }
                        }
                        if sink.flush().await.is_err() {
                            return;
                        }
                    }
                    let _ = sink.close().await;
                });
                let reader = tokio::spawn(read_ws(
                    stream,
                    Matcher::new(timing_rx, clock.clone(), window.clone(), replies),
                ));
                (Writer::Ws(tx), reader)
            }
        };
        Ok(OrderClient {
            plan: Arc::new(plan),
            writer,
            timing,
            next: 0,
            clock,
            window,
            reader,
        })
    }

    /// Sends the next command now. Never blocks: the writer runs on its own task.
    pub fn submit(&mut self) -> anyhow::Result<()> {
        let k = self.next;
        self.next += 1;
        let at = self.clock.now_ns();
        self.timing.send((k + 1, at))?;
        match &self.writer {
            Writer::Grpc(tx) => tx.send(self.plan.grpc_request(k))?,
            Writer::Ws(tx) => tx.send(self.plan.ws_text(k))?,
        }
        Ok(())
    }

    /// Stops sending and returns the log once every reply is in (or the server ended the
    /// connection).
    pub async fn finish(self) -> anyhow::Result<OrderLog> {
        let OrderClient {
            writer,
            timing,
            reader,
            ..
        } = self;
        drop(timing);
        let log = reader.await??;
        drop(writer);
        Ok(log)
    }
}

/// Opens an `OrderSession` at `addr` signed with `token`, starts it with `start` and waits for
/// `Started`: the sender of further requests and the responses that follow.
pub(super) async fn grpc_session(
    addr: SocketAddr,
    token: &str,
    start: pb::SessionStart,
) -> anyhow::Result<(
    mpsc::UnboundedSender<pb::SessionRequest>,
    tonic::Streaming<pb::SessionResponse>,
)> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut client = pb::order_service_client::OrderServiceClient::new(channel);
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(pb::SessionRequest {
        request_id: 0,
        action: Some(pb::session_request::Action::Start(start)),
    })?;
    let mut request = tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut responses = client.order_session(request).await?.into_inner();
    match responses.message().await? {
        Some(pb::SessionResponse {
            event: Some(pb::session_response::Event::Started(_)),
            ..
        }) => Ok((tx, responses)),
        other => anyhow::bail!("gRPC order session did not start: {other:?}"),
    }
}

/// An order-entry WebSocket (no compression), as the tool opens them.
type WsConnection = tokio_tungstenite::WebSocketStream<InflatingStream<tokio::net::TcpStream>>;

/// Connects a WebSocket to `addr` and signs in with `token`: its two halves once the server
/// said `authenticated`.
pub(super) async fn ws_signed_in(
    addr: SocketAddr,
    token: &str,
) -> anyhow::Result<(
    SplitSink<WsConnection, WsMessage>,
    SplitStream<WsConnection>,
)> {
    let conn =
        ticker_servers::ws::client::connect(addr, "/ws", None, &Default::default(), None).await?;
    let (mut sink, mut stream) = conn.ws.split();
    sink.send(WsMessage::text(format!(
        r#"{{"op":"auth","id":0,"token":"{token}"}}"#
    )))
    .await?;
    loop {
        let Some(message) = stream.next().await else {
            anyhow::bail!("WebSocket closed before authentication");
        };
        if let WsMessage::Text(text) = message? {
            let reply: WsReply = serde_json::from_str(&text)?;
            match reply.kind.as_str() {
                "authenticated" => return Ok((sink, stream)),
                "error" => anyhow::bail!("WebSocket auth refused: {text}"),
                _ => {}
            }
        }
    }
}

/// The fields of a WebSocket reply the load tool reads.
#[derive(serde::Deserialize)]
pub(super) struct WsReply {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) id: Option<u64>,
    accepted: Option<bool>,
    engine_seq: Option<u64>,
    reason: Option<String>,
    code: Option<String>,
}

/// Logs one reply; `false` once every command sent has its reply and the sender is done.
struct Matcher {
    timing: mpsc::UnboundedReceiver<(u64, u64)>,
    pending: VecDeque<(u64, u64)>,
    clock: Clock,
    window: Arc<Semaphore>,
    replies: Replies,
    log: OrderLog,
    sender_done: bool,
}

impl Matcher {
    fn new(
        timing: mpsc::UnboundedReceiver<(u64, u64)>,
        clock: Clock,
        window: Arc<Semaphore>,
        replies: Replies,
    ) -> Self {
        Matcher {
            timing,
            pending: VecDeque::new(),
            clock,
            window,
            replies,
            log: OrderLog::default(),
            sender_done: false,
        }
    }

    /// Waits for the sender's record of request `id`.
    async fn sent_at(&mut self, id: u64) -> anyhow::Result<u64> {
        loop {
            while let Some(&(pending_id, at)) = self.pending.front() {
                self.pending.pop_front();
                if pending_id == id {
                    return Ok(at);
                }
            }
            match self.timing.recv().await {
                Some(entry) => self.pending.push_back(entry),
                None => anyhow::bail!("a reply to request {id}, which was never sent"),
            }
        }
    }

    async fn reply(
        &mut self,
        id: u64,
        outcome: Result<u64, String>,
        acked_ns: u64,
    ) -> anyhow::Result<()> {
        let sent_ns = self.sent_at(id).await?;
        self.window.add_permits(1);
        if let Replies::Tap(tap) = &self.replies {
            // The soak stops listening only once it stops sending.
            let _ = tap.send(Reply {
                sent_ns,
                acked_ns,
                outcome,
            });
            return Ok(());
        }
        match outcome {
            Ok(engine_seq) => self.log.accepted.push(Sent {
                engine_seq,
                sent_ns,
                acked_ns,
            }),
            Err(reason) => self.log.rejected.push((sent_ns, acked_ns, reason)),
        }
        Ok(())
    }

    /// True when every command the sender sent has been answered.
    fn all_answered(&mut self) -> bool {
        while let Ok(entry) = self.timing.try_recv() {
            self.pending.push_back(entry);
        }
        if !self.sender_done && self.timing.is_closed() && self.timing.is_empty() {
            self.sender_done = true;
        }
        self.sender_done && self.pending.is_empty()
    }
}

async fn read_grpc(
    mut responses: tonic::Streaming<pb::SessionResponse>,
    mut m: Matcher,
) -> anyhow::Result<OrderLog> {
    use pb::session_response::Event;
    loop {
        if m.all_answered() {
            break;
        }
        let next = tokio::select! {
            r = responses.message() => r?,
            // Wakes when the sender finishes, to re-check whether anything is outstanding.
            entry = m.timing.recv(), if !m.sender_done => {
                if let Some(e) = entry { m.pending.push_back(e) } else { m.sender_done = true }
                continue;
            }
        };
        let Some(response) = next else { break };
        let at = m.clock.now_ns();
        let result = |r: Option<pb::CommandResult>| match r {
            Some(r) if r.accepted => Ok(r.engine_seq),
            Some(r) => Err(pb::RejectReason::try_from(r.reject_reason)
                .map_or("unknown".to_string(), |r| r.as_str_name().to_lowercase())),
            None => Err("no result".to_string()),
        };
        let outcome = match response.event {
            Some(Event::Placed(p)) => result(p.result),
            Some(Event::Cancelled(c)) => result(c.result),
            Some(Event::Error(e)) => Err(format!("error {}: {}", e.code, e.message)),
            _ => continue,
        };
        m.reply(response.request_id, outcome, at).await?;
    }
    Ok(m.log)
}

async fn read_ws<S>(mut stream: S, mut m: Matcher) -> anyhow::Result<OrderLog>
where
    S: futures_util::Stream<Item = Result<WsMessage, tungstenite::Error>> + Unpin,
{
    loop {
        if m.all_answered() {
            break;
        }
        let next = tokio::select! {
            r = stream.next() => r,
            entry = m.timing.recv(), if !m.sender_done => {
                if let Some(e) = entry { m.pending.push_back(e) } else { m.sender_done = true }
                continue;
            }
        };
        let text = match next {
            None => break,
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(WsMessage::Close(frame))) => {
                anyhow::bail!("the server closed the order-entry connection: {frame:?}")
            }
            Some(Ok(_)) => continue,
        };
        let at = m.clock.now_ns();
        let reply: WsReply = serde_json::from_str(&text)?;
        let (Some(id), "result" | "error") = (reply.id, reply.kind.as_str()) else {
            continue;
        };
        let outcome = match (reply.accepted, reply.engine_seq) {
            (Some(true), Some(seq)) => Ok(seq),
            _ => Err(reply
                .reason
                .or(reply.code.map(|c| format!("error {c}")))
                .unwrap_or_else(|| "unknown".into())),
        };
        m.reply(id, outcome, at).await?;
    }
    Ok(m.log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn btc() -> pb::Instrument {
        pb::Instrument {
            symbol: "BTC-USD".into(),
            tick_size: "0.01".into(),
            lot_size: "0.00001".into(),
            min_size: "0.00001".into(),
            reference_price: "65000".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_client_alternates_place_and_cancel_of_the_same_order() {
        let plan = Plan::new(0, &btc()).unwrap();
        assert_eq!(
            plan.command(0),
            Command::Place {
                client_order_id: (1 << 32) + 1,
                price: "64999.99",
                size: "0.00001"
            }
        );
        assert_eq!(
            plan.command(1),
            Command::Cancel {
                client_order_id: (1 << 32) + 1
            }
        );
        assert_eq!(
            plan.command(8),
            Command::Place {
                client_order_id: (1 << 32) + 5,
                price: "64999.95",
                size: "0.00001"
            }
        );
        // Five levels, then round again.
        assert!(matches!(
            plan.command(10),
            Command::Place {
                price: "64999.99",
                ..
            }
        ));
    }

    #[test]
    fn clients_never_share_client_order_ids() {
        let a = Plan::new(0, &btc()).unwrap();
        let b = Plan::new(1, &btc()).unwrap();
        let id = |p: &Plan, k| match p.command(k) {
            Command::Place {
                client_order_id, ..
            }
            | Command::Cancel { client_order_id } => client_order_id,
        };
        assert!((0..1000).all(|k| id(&a, k) != id(&b, k)));
    }

    #[test]
    fn the_websocket_command_is_the_documented_json() {
        let plan = Plan::new(0, &btc()).unwrap();
        let place: serde_json::Value = serde_json::from_str(&plan.ws_text(0)).unwrap();
        assert_eq!(place["op"], "place");
        assert_eq!(place["price"], "64999.99");
        assert_eq!(place["post_only"], true);
        let cancel: serde_json::Value = serde_json::from_str(&plan.ws_text(1)).unwrap();
        assert_eq!(cancel["op"], "cancel");
        assert_eq!(cancel["id"], 2);
    }
}
