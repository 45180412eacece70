//! `ticker.v1.OrderService`: order entry for authenticated accounts.
//!
//! Every request is checked and converted at the edge ([`super::convert`]), executed through
//! [`Market::execute_with_deadline`] and answered from the command's own events
//! ([`super::report`]). Unary calls, bulk placement and order sessions share [`OrderDesk`]; the
//! order-update streams forward the feeds' pre-encoded updates ([`super::frames`]).

use super::auth::Auth;
use super::convert::{self, Refusal};
use super::frames::{self, Out, OutStream};
use super::report;
use crate::market::{now_ns, Market};
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use prost::encoding::{encode_key, encode_varint, WireType};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use ticker_engine::*;
use ticker_proto::frame::Frame;
use ticker_proto::v1 as pb;
use ticker_proto::v1::order_service_server::OrderService;
use ticker_proto::v1::session_request::Action;
use ticker_proto::v1::session_response::Event as SessionEvent;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status, Streaming};

/// Limits of order entry; defaults in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderConfig {
    /// Orders one `BulkPlaceOrders` call may place; the rest of the stream is not read [10,000].
    pub max_bulk_orders: usize,
    /// Responses and updates queued for an order session's client before the session waits
    /// for it, and requests of a session awaiting the engine's answer at once [1,024].
    pub session_queue: usize,
}

impl Default for OrderConfig {
    fn default() -> Self {
        OrderConfig {
            max_bulk_orders: 10_000,
            session_queue: 1024,
        }
    }
}

/// When the caller gives up: from the `grpc-timeout` header.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deadline {
    /// Engine time (ns since the Unix epoch) after which a command is not executed; 0: none.
    pub at_ns: Timestamp,
    /// The same moment on the runtime's clock, to stop waiting for the engine.
    pub at: Option<tokio::time::Instant>,
}

impl Deadline {
    pub fn from_metadata(metadata: &MetadataMap) -> Deadline {
        let Some(timeout) = metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
        else {
            return Deadline::default();
        };
        Deadline {
            at_ns: now_ns().saturating_add(timeout.as_nanos().min(u64::MAX as u128) as u64),
            at: tokio::time::Instant::now().checked_add(timeout),
        }
    }
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n), as the gRPC HTTP/2 spec says.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Order entry shared by every RPC: one request in, its command's answer out.
pub struct OrderDesk {
    market: Arc<Market>,
}

impl OrderDesk {
    pub fn new(market: Arc<Market>) -> Self {
        OrderDesk { market }
    }

    /// Submits `kind` now — so commands reach the engine in the order of these calls — and
    /// returns the wait for its events, which borrows nothing: a session can hold many.
    fn submit(
        &self,
        kind: CommandKind,
        deadline: Deadline,
    ) -> impl Future<Output = Result<Vec<Event>, Refusal>> + Send + 'static {
        let submitted = self.market.submit_for_reply(kind, deadline.at_ns);
        async move {
            let reply = submitted.map_err(Refusal::from)?;
            let run = reply;
            let events = match deadline.at {
                Some(at) => tokio::time::timeout_at(at, run).await.map_err(|_| {
                    Refusal::new(
                        Code::DeadlineExceeded,
                        "deadline passed while waiting for the engine",
                    )
                })?,
                None => run.await,
            };
            events.map_err(Refusal::from)
        }
    }

    /// Checks and submits the order now; the returned future waits for the answer.
    pub fn place(
        &self,
        account: AccountId,
        session: SessionId,
        req: &pb::PlaceOrderRequest,
        deadline: Deadline,
    ) -> impl Future<Output = Result<pb::PlaceOrderResponse, Refusal>> + Send + 'static {
        let instruments = self.market.instruments().clone();
        let pending = convert::place(req, &instruments, account, session)
            .map(|place| self.submit(CommandKind::Place(place), deadline));
        async move {
            let events = pending?.await?;
            report::placed(&instruments, &events)
        }
    }

    pub fn cancel(
        &self,
        account: AccountId,
        req: &pb::CancelOrderRequest,
        deadline: Deadline,
    ) -> impl Future<Output = Result<pb::CancelOrderResponse, Refusal>> + Send + 'static {
        let instruments = self.market.instruments().clone();
        let pending = convert::cancel(req, account)
            .map(|cancel| self.submit(CommandKind::Cancel(cancel), deadline));
        async move {
            let events = pending?.await?;
            Ok(pb::CancelOrderResponse {
                result: Some(report::decision(&events)?),
                order: report::touched(&instruments, &events),
            })
        }
    }

    pub fn amend(
        &self,
        account: AccountId,
        req: &pb::AmendOrderRequest,
        deadline: Deadline,
    ) -> impl Future<Output = Result<pb::AmendOrderResponse, Refusal>> + Send + 'static {
        let instruments = self.market.instruments().clone();
        let pending = convert::amend(req, account, &instruments, self.market.accounts())
            .map(|amend| self.submit(CommandKind::Amend(amend), deadline));
        async move {
            let events = pending?.await?;
            Ok(pb::AmendOrderResponse {
                result: Some(report::decision(&events)?),
                order: report::touched(&instruments, &events),
            })
        }
    }

    pub fn mass_cancel(
        &self,
        account: AccountId,
        req: &pb::MassCancelRequest,
        deadline: Deadline,
    ) -> impl Future<Output = Result<pb::MassCancelResponse, Refusal>> + Send + 'static {
        let pending = convert::mass_cancel(req, account, self.market.instruments())
            .map(|mass| self.submit(CommandKind::MassCancel(mass), deadline));
        async move {
            let events = pending?.await?;
            Ok(pb::MassCancelResponse {
                result: Some(report::decision(&events)?),
                cancelled_order_ids: report::mass_cancelled(&events),
            })
        }
    }
}

/// The service: authentication, then the desk.
pub struct OrderApi {
    desk: OrderDesk,
    market: Arc<Market>,
    auth: Auth,
    config: OrderConfig,
}

/// Field number of `SessionResponse.update`.
const SESSION_UPDATE_FIELD: u32 = 8;

/// A `SessionResponse` carrying a pre-encoded order update: the update's bytes are copied
/// behind the field's key and length, not re-encoded.
fn session_update(frame: &Frame) -> Out {
    let len = frame.encoded_len();
    let mut out = Vec::with_capacity(len + 8);
    encode_key(SESSION_UPDATE_FIELD, WireType::LengthDelimited, &mut out);
    encode_varint(len as u64, &mut out);
    frame.encode(&mut out);
    Out::Encoded(out.into())
}

impl OrderApi {
    pub fn new(market: Arc<Market>, auth: Auth, config: OrderConfig) -> Self {
        OrderApi {
            desk: OrderDesk::new(market.clone()),
            market,
            auth,
            config,
        }
    }

    /// `SubscribeOrderUpdates`, as pre-encoded frames.
    pub async fn order_updates(
        self: Arc<Self>,
        req: Request<pb::SubscribeOrderUpdatesRequest>,
    ) -> Result<Response<OutStream>, Status> {
        let account = self.auth.account(req.metadata())?;
        let sub = self
            .market
            .accounts()
            .subscribe(account, req.into_inner().from_seq);
        let what = format!("the order updates of account {account}");
        // Account topics always have a snapshot, so the hub never reports a gap on them.
        let stream =
            frames::subscription_stream(
                sub,
                what,
                |_, _| Out::encoded(&pb::OrderUpdate::default()),
            );
        Ok(Response::new(Box::pin(stream)))
    }

    /// `OrderSession`, as pre-encoded frames.
    pub async fn session(
        self: Arc<Self>,
        req: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<OutStream>, Status> {
        let account = self.auth.account(req.metadata())?;
        let deadline = Deadline::from_metadata(req.metadata());
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(self.config.session_queue.max(1));
        // The session runs in its own task so that it outlives a client that vanishes: the
        // cancel-on-disconnect at its end must happen however the stream ends.
        tokio::spawn(self.clone().run_session(account, deadline, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn run_session(
        self: Arc<Self>,
        account: AccountId,
        deadline: Deadline,
        mut inbound: Streaming<pb::SessionRequest>,
        tx: mpsc::Sender<Result<Out, Status>>,
    ) {
        let session = self.market.new_session();
        let mut cancel_on_disconnect = false;
        let mut updates: Option<tokio::task::JoinHandle<()>> = None;
        let mut first = true;
        // Commands are submitted to the engine as they arrive, in order, and answered in that
        // order as their events come back: a client with many requests in flight is not held to
        // one engine round trip at a time. At most `session_queue` answers are awaited at once.
        let mut answers = FuturesOrdered::new();
        let in_flight = self.config.session_queue.max(1);
        let mut reading = true;
        loop {
            tokio::select! {
                biased;
                Some(response) = answers.next(), if !answers.is_empty() => {
                    if tx.send(Ok(Out::encoded(&response))).await.is_err() {
                        break; // the client stopped reading: the call is gone
                    }
                }
                // A transport error ends the session like a clean end of stream.
                req = inbound.message(), if reading && answers.len() < in_flight => {
                    let Ok(Some(req)) = req else {
                        reading = false;
                        continue;
                    };
                    let request_id = req.request_id;
                    let answer = self.answer(
                        req.action,
                        account,
                        session,
                        deadline,
                        &mut first,
                        &mut cancel_on_disconnect,
                        &mut updates,
                        &tx,
                    );
                    answers.push_back(async move {
                        pb::SessionResponse {
                            request_id,
                            event: Some(answer.await),
                        }
                    });
                }
                else => break,
            }
        }
        if let Some(h) = updates {
            h.abort();
        }
        if cancel_on_disconnect {
            // Waits for room in the ingress ring rather than failing when it is full: the
            // client is gone and its orders must not stay in the book.
            let market = self.market.clone();
            let _ = tokio::task::spawn_blocking(move || {
                market.execute_blocking(CommandKind::SessionClosed { session })
            })
            .await;
        }
    }

    /// Handles one session request now (checks, state, submission to the engine) and returns
    /// the wait for its answer.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        self: &Arc<Self>,
        action: Option<Action>,
        account: AccountId,
        session: SessionId,
        deadline: Deadline,
        first: &mut bool,
        cancel_on_disconnect: &mut bool,
        updates: &mut Option<tokio::task::JoinHandle<()>>,
        tx: &mpsc::Sender<Result<Out, Status>>,
    ) -> std::pin::Pin<Box<dyn Future<Output = SessionEvent> + Send>> {
        let refuse = |r: Refusal| SessionEvent::Error(r.to_proto());
        let was_first = std::mem::replace(first, false);
        let ready =
            |event: SessionEvent| -> std::pin::Pin<Box<dyn Future<Output = SessionEvent> + Send>> {
                Box::pin(std::future::ready(event))
            };
        match action {
            Some(Action::Start(start)) if was_first => {
                *cancel_on_disconnect = start.cancel_on_disconnect;
                if start.order_updates {
                    *updates = Some(tokio::spawn(forward_updates(
                        self.market.clone(),
                        account,
                        start.order_updates_from_seq,
                        tx.clone(),
                    )));
                }
                ready(SessionEvent::Started(pb::SessionStarted {
                    session_id: session,
                    cancel_on_disconnect: *cancel_on_disconnect,
                }))
            }
            Some(Action::Start(_)) => ready(refuse(Refusal {
                code: Code::InvalidArgument,
                message: "start is only allowed as the session's first message".into(),
                violations: vec![("start".into(), "only as the first message".into())],
            })),
            Some(Action::Place(p)) => {
                // Only a session that cancels on disconnect tags its orders.
                let tag = if *cancel_on_disconnect { session } else { 0 };
                let placed = self.desk.place(account, tag, &p, deadline);
                Box::pin(async move { placed.await.map_or_else(refuse, SessionEvent::Placed) })
            }
            Some(Action::Cancel(c)) => {
                let cancelled = self.desk.cancel(account, &c, deadline);
                Box::pin(
                    async move { cancelled.await.map_or_else(refuse, SessionEvent::Cancelled) },
                )
            }
            Some(Action::Amend(a)) => {
                let amended = self.desk.amend(account, &a, deadline);
                Box::pin(async move { amended.await.map_or_else(refuse, SessionEvent::Amended) })
            }
            Some(Action::MassCancel(m)) => {
                let cancelled = self.desk.mass_cancel(account, &m, deadline);
                Box::pin(async move {
                    cancelled
                        .await
                        .map_or_else(refuse, SessionEvent::MassCancelled)
                })
            }
            None => ready(refuse(Refusal {
                code: Code::InvalidArgument,
                message: "a session request needs an action".into(),
                violations: vec![(
                    "action".into(),
                    "one of start, place, cancel, amend, mass_cancel".into(),
                )],
            })),
        }
    }
}

/// Forwards the account's order updates into an order session.
async fn forward_updates(
    market: Arc<Market>,
    account: AccountId,
    from_seq: Option<u64>,
    tx: mpsc::Sender<Result<Out, Status>>,
) {
    let sub = market.accounts().subscribe(account, from_seq);
    let what = format!("the order updates of account {account}");
    let stream =
        frames::subscription_stream(sub, what, |_, _| Out::encoded(&pb::OrderUpdate::default()));
    futures_util::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        let item = item.map(|out| match out {
            Out::Frame(f) => session_update(&f),
            Out::Encoded(b) => session_update(&Frame {
                shared: b,
                tail: Default::default(),
            }),
        });
        let end = item.is_err();
        if tx.send(item).await.is_err() || end {
            return;
        }
    }
}

/// One order's result in a bulk placement, ready or awaiting the engine.
type BulkAnswer = std::pin::Pin<Box<dyn Future<Output = pb::BulkPlaceResult> + Send>>;

/// The generated server's view of [`OrderApi`] (the streams need the `Arc`).
#[derive(Clone)]
pub struct OrderRpc(pub Arc<OrderApi>);

impl std::ops::Deref for OrderRpc {
    type Target = OrderApi;

    fn deref(&self) -> &OrderApi {
        &self.0
    }
}

#[tonic::async_trait]
impl OrderService for OrderRpc {
    async fn place_order(
        &self,
        req: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let account = self.auth.account(req.metadata())?;
        let deadline = Deadline::from_metadata(req.metadata());
        let r = self.desk.place(account, 0, req.get_ref(), deadline).await?;
        Ok(Response::new(r))
    }

    async fn cancel_order(
        &self,
        req: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let account = self.auth.account(req.metadata())?;
        let deadline = Deadline::from_metadata(req.metadata());
        let r = self.desk.cancel(account, req.get_ref(), deadline).await?;
        Ok(Response::new(r))
    }

    async fn amend_order(
        &self,
        req: Request<pb::AmendOrderRequest>,
    ) -> Result<Response<pb::AmendOrderResponse>, Status> {
        let account = self.auth.account(req.metadata())?;
        let deadline = Deadline::from_metadata(req.metadata());
        let r = self.desk.amend(account, req.get_ref(), deadline).await?;
        Ok(Response::new(r))
    }

    async fn mass_cancel(
        &self,
        req: Request<pb::MassCancelRequest>,
    ) -> Result<Response<pb::MassCancelResponse>, Status> {
        let account = self.auth.account(req.metadata())?;
        let deadline = Deadline::from_metadata(req.metadata());
        let r = self
            .desk
            .mass_cancel(account, req.get_ref(), deadline)
            .await?;
        Ok(Response::new(r))
    }

    async fn bulk_place_orders(
        &self,
        req: Request<Streaming<pb::PlaceOrderRequest>>,
    ) -> Result<Response<pb::BulkPlaceOrdersResponse>, Status> {
        let account = self.auth.account(req.metadata())?;
        let deadline = Deadline::from_metadata(req.metadata());
        let mut orders = req.into_inner();
        let mut summary = pb::BulkPlaceOrdersResponse::default();
        // Each order is submitted to the engine as it arrives (in order) and its result is
        // recorded in order as its events come back, at most `session_queue` awaited at once.
        let mut pending = FuturesOrdered::new();
        let in_flight = self.config.session_queue.max(1);
        let mut index = 0u32;
        let mut reading = true;
        loop {
            tokio::select! {
                biased;
                Some(result) = pending.next(), if !pending.is_empty() => {
                    let result: pb::BulkPlaceResult = result;
                    match &result.outcome {
                        Some(pb::bulk_place_result::Outcome::Placed(placed)) => {
                            if placed.result.as_ref().is_some_and(|r| r.accepted) {
                                summary.accepted += 1;
                            } else {
                                summary.rejected += 1;
                            }
                        }
                        _ => summary.errors += 1,
                    }
                    summary.results.push(result);
                }
                order = orders.message(), if reading && pending.len() < in_flight => {
                    let Some(order) = order? else {
                        reading = false;
                        continue;
                    };
                    let at = index;
                    index += 1;
                    if at as usize >= self.config.max_bulk_orders {
                        let limit = self.config.max_bulk_orders;
                        let refusal = Refusal::new(
                            Code::ResourceExhausted,
                            format!("at most {limit} orders per call; the rest of the stream was not read"),
                        );
                        let outcome = pb::bulk_place_result::Outcome::Error(refusal.to_proto());
                        pending.push_back(Box::pin(std::future::ready(pb::BulkPlaceResult {
                            index: at,
                            outcome: Some(outcome),
                        })) as BulkAnswer);
                        reading = false;
                        continue;
                    }
                    let placed = self.desk.place(account, 0, &order, deadline);
                    pending.push_back(Box::pin(async move {
                        let outcome = match placed.await {
                            Ok(placed) => pb::bulk_place_result::Outcome::Placed(placed),
                            Err(refusal) => pb::bulk_place_result::Outcome::Error(refusal.to_proto()),
                        };
                        pb::BulkPlaceResult {
                            index: at,
                            outcome: Some(outcome),
                        }
                    }));
                }
                else => break,
            }
        }
        Ok(Response::new(summary))
    }

    type OrderSessionStream = frames::TypedStream<pb::SessionResponse>;

    async fn order_session(
        &self,
        req: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Self::OrderSessionStream>, Status> {
        let stream = self.0.clone().session(req).await?.into_inner();
        Ok(Response::new(frames::typed(stream)))
    }

    type SubscribeOrderUpdatesStream = frames::TypedStream<pb::OrderUpdate>;

    async fn subscribe_order_updates(
        &self,
        req: Request<pb::SubscribeOrderUpdatesRequest>,
    ) -> Result<Response<Self::SubscribeOrderUpdatesStream>, Status> {
        let stream = self.0.clone().order_updates(req).await?.into_inner();
        Ok(Response::new(frames::typed(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn grpc_timeout_values_parse_as_the_spec_says() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_forwarded_update_decodes_as_a_session_response() {
        let update = pb::OrderUpdate {
            seq: 9,
            prev_seq: 8,
            ..Default::default()
        };
        let frame = Frame {
            shared: update.encode_to_vec().into(),
            tail: ticker_proto::frame::Tail {
                delivery: pb::Delivery::Snapshot,
                skipped: 0,
            },
        };
        let response: pb::SessionResponse = session_update(&frame).decode().unwrap();
        let Some(SessionEvent::Update(u)) = response.event else {
            panic!("an update: {response:?}");
        };
        assert_eq!((u.seq, u.delivery()), (9, pb::Delivery::Snapshot));
    }
}
