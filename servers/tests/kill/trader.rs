//! The client's order flow through the gRPC `OrderService`: limit orders resting away from the
//! touch, crossing ones (GTC and IOC) that trade with the simulator's quotes, and cancels of
//! orders placed in this run or an earlier one, each order with a client order id never used
//! before. Every answer that comes back goes into the ledger: what the server acknowledged,
//! and so what the journal must hold.

use super::streams::OpenOrders;
use super::GUARD;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use ticker_engine::{Instrument, Lots, OrderId, Ticks};
use ticker_feeds::sim::Rng;
use ticker_proto::v1 as pb;
use ticker_proto::v1::market_data_service_client::MarketDataServiceClient;
use ticker_proto::v1::order_service_client::OrderServiceClient;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Everything the server answered, over every run.
#[derive(Debug, Default)]
pub struct Ledger {
    pub places: Vec<Placed>,
    pub cancels: Vec<Cancelled>,
    /// Orders and cancels sent whose answers were lost with the process they were sent to.
    pub unanswered: u64,
    pub violations: Vec<String>,
}

/// An answered place: the engine decided it at `engine_seq`.
#[derive(Debug, Clone)]
pub struct Placed {
    pub client_id: u64,
    pub engine_seq: u64,
    pub outcome: PlaceOutcome,
}

#[derive(Debug, Clone)]
pub enum PlaceOutcome {
    /// Accepted as `order_id`; the trades it took part in on arrival.
    Accepted {
        order_id: OrderId,
        trade_ids: Vec<u64>,
    },
    Rejected(pb::RejectReason),
}

/// An answered cancel of `order_id`, decided at `engine_seq`.
#[derive(Debug, Clone)]
pub struct Cancelled {
    pub order_id: OrderId,
    pub engine_seq: u64,
    pub outcome: Result<(), pb::RejectReason>,
}

impl Ledger {
    pub fn accepted(&self) -> usize {
        self.places
            .iter()
            .filter(|p| matches!(p.outcome, PlaceOutcome::Accepted { .. }))
            .count()
    }

    fn accepted_order(&self, pick: usize) -> Option<OrderId> {
        match self.places.get(pick)?.outcome {
            PlaceOutcome::Accepted { order_id, .. } => Some(order_id),
            PlaceOutcome::Rejected(_) => None,
        }
    }
}

/// Best bid and ask in ticks, as last read.
#[derive(Clone, Copy, Debug)]
pub struct Touch {
    pub bid: Ticks,
    pub ask: Ticks,
}

/// One client of the order service.
#[derive(Clone)]
pub struct Trader {
    pub orders: OrderServiceClient<Channel>,
    pub market_data: MarketDataServiceClient<Channel>,
    pub token: &'static str,
    pub instrument: Arc<Instrument>,
    pub ledger: Arc<Mutex<Ledger>>,
    /// The client's open orders as its order updates tell them.
    pub view: Arc<Mutex<OpenOrders>>,
    pub client_ids: Arc<AtomicU64>,
    /// Set before the test kills or stops tickerd: from then on a failed call is expected.
    pub stopping: Arc<AtomicBool>,
}

/// Reads the touch again after this many orders.
const TOUCH_EVERY: u64 = 16;
/// Open orders past which the client cancels rather than places: the book (and the open-order
/// snapshots) stay the same size however long the test runs.
const MAX_OPEN: usize = 400;

impl Trader {
    pub fn authed<T>(&self, message: T) -> Request<T> {
        let mut r = Request::new(message);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().expect("ASCII"),
        );
        r
    }

    /// Awaits a call for at most the guard. `None` when it failed: then tickerd is gone (the
    /// test was stopping it) or the failure is recorded as a violation.
    async fn call<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<Response<T>, Status>>,
    ) -> Option<T> {
        let why = match tokio::time::timeout(GUARD, call).await {
            Ok(Ok(response)) => return Some(response.into_inner()),
            Ok(Err(status)) => status.to_string(),
            Err(_) => "no answer in time".to_string(),
        };
        if !self.stopping.load(Ordering::SeqCst) {
            let mut ledger = self.ledger.lock().unwrap();
            ledger
                .violations
                .push(format!("{what} failed while tickerd ran: {why}"));
        }
        None
    }

    /// The best bid and ask (the instrument's reference price for a side that is empty).
    pub async fn touch(&self) -> Option<Touch> {
        let request = pb::GetDepthSnapshotRequest {
            instrument: self.instrument.spec.symbol.clone(),
        };
        let mut client = self.market_data.clone();
        let message = self
            .call("GetDepthSnapshot", client.get_depth_snapshot(request))
            .await?;
        let Some(pb::market_data_message::Payload::Depth(depth)) = message.payload else {
            panic!("a depth snapshot: {message:?}");
        };
        let best = |levels: &[pb::Level]| {
            levels.first().map(|l| {
                let price = l.price.parse().expect("a decimal price");
                self.instrument.price_to_ticks(price).expect("on the grid")
            })
        };
        let reference = self.instrument.reference_ticks;
        let (bid, ask) = (best(&depth.bids), best(&depth.asks));
        Some(Touch {
            bid: bid.or(ask).unwrap_or(reference),
            ask: ask.or(bid).unwrap_or(reference),
        })
    }

    /// A limit order with a fresh client order id.
    pub fn limit(
        &self,
        side: pb::Side,
        price: Ticks,
        size: Lots,
        ioc: bool,
    ) -> pb::PlaceOrderRequest {
        pb::PlaceOrderRequest {
            instrument: self.instrument.spec.symbol.clone(),
            side: side as i32,
            order_type: pb::OrderType::Limit as i32,
            price: self.instrument.ticks_to_price(price).to_string(),
            size: self.instrument.lots_to_size(size).to_string(),
            time_in_force: if ioc {
                pb::TimeInForce::Ioc
            } else {
                pb::TimeInForce::Gtc
            } as i32,
            client_order_id: self.client_ids.fetch_add(1, Ordering::Relaxed),
            ..Default::default()
        }
    }

    /// Places an order and records the answer; `None` if none came.
    pub async fn place(&self, request: pb::PlaceOrderRequest) -> Option<pb::PlaceOrderResponse> {
        let client_id = request.client_order_id;
        let mut client = self.orders.clone();
        let call = client.place_order(self.authed(request));
        let Some(response) = self.call("PlaceOrder", call).await else {
            self.ledger.lock().unwrap().unanswered += 1;
            return None;
        };
        let result = response.result.expect("a place answer has a result");
        let outcome = if result.accepted {
            let order = response
                .order
                .as_ref()
                .expect("an accepted place reports its order");
            PlaceOutcome::Accepted {
                order_id: OrderId(order.order_id),
                trade_ids: order.fills.iter().map(|f| f.trade_id).collect(),
            }
        } else {
            PlaceOutcome::Rejected(result.reject_reason())
        };
        self.ledger.lock().unwrap().places.push(Placed {
            client_id,
            engine_seq: result.engine_seq,
            outcome,
        });
        Some(response)
    }

    /// Cancels an order by id and records the answer; `false` if none came.
    async fn cancel(&self, order_id: OrderId) -> bool {
        let request = pb::CancelOrderRequest {
            order: Some(pb::cancel_order_request::Order::OrderId(order_id.0)),
        };
        let mut client = self.orders.clone();
        let call = client.cancel_order(self.authed(request));
        let Some(response) = self.call("CancelOrder", call).await else {
            self.ledger.lock().unwrap().unanswered += 1;
            return false;
        };
        let result = response.result.expect("a cancel answer has a result");
        let outcome = if result.accepted {
            Ok(())
        } else {
            Err(result.reject_reason())
        };
        self.ledger.lock().unwrap().cancels.push(Cancelled {
            order_id,
            engine_seq: result.engine_seq,
            outcome,
        });
        true
    }

    /// Sends orders and cancels one after another until a call fails (the process is gone).
    pub async fn run(self, mut rng: Rng) {
        let mut touch = None;
        for n in 0.. {
            if n % TOUCH_EVERY == 0 || touch.is_none() {
                touch = self.touch().await;
                if touch.is_none() {
                    return;
                }
            }
            let Touch { bid, ask } = touch.expect("read above");
            let roll = rng.below(100);
            let open = self.view.lock().unwrap().0.len();
            if roll >= 75 || open > MAX_OPEN {
                if let Some(order_id) = self.to_cancel(&mut rng) {
                    if !self.cancel(order_id).await {
                        return;
                    }
                    continue;
                }
            }
            let size = rng.range(10, 500) as Lots;
            let mut order = match roll % 4 {
                // Resting, away from the touch.
                0 => self.limit(pb::Side::Buy, bid - rng.range(10, 2_000), size, false),
                1 => self.limit(pb::Side::Sell, ask + rng.range(10, 2_000), size, false),
                // Crossing: trades with what rests at the touch; the rest rests (GTC) or is
                // cancelled (IOC).
                2 => self.limit(pb::Side::Buy, ask + rng.range(0, 50), size, rng.chance(400)),
                _ => self.limit(
                    pb::Side::Sell,
                    bid - rng.range(0, 50),
                    size,
                    rng.chance(400),
                ),
            };
            if roll % 4 >= 2 {
                // Its own resting orders at the touch make way, so it trades with the market.
                order.self_trade_prevention = pb::SelfTradePrevention::CancelMaker as i32;
                // Now and then one that must rest but would cross: rejected, and the
                // rejection is journaled like any outcome.
                if order.time_in_force == pb::TimeInForce::Gtc as i32 && rng.chance(100) {
                    order.post_only = true;
                }
            }
            let price = self
                .instrument
                .price_to_ticks(order.price.parse().expect("decimal"));
            if !price.is_ok_and(|p| self.instrument.in_band(p)) {
                touch = None;
                continue;
            }
            if self.place(order).await.is_none() {
                return;
            }
        }
    }

    /// An order to cancel: one the client follows as open, or one accepted at any time
    /// before (most of those are long gone: an "unknown order" answer).
    fn to_cancel(&self, rng: &mut Rng) -> Option<OrderId> {
        if rng.chance(500) {
            let view = self.view.lock().unwrap();
            let open = view.0.len() as u64;
            return (open > 0)
                .then(|| rng.below(open) as usize)
                .and_then(|i| view.0.keys().nth(i).copied());
        }
        let ledger = self.ledger.lock().unwrap();
        let places = ledger.places.len() as u64;
        (places > 0)
            .then(|| rng.below(places) as usize)
            .and_then(|i| ledger.accepted_order(i))
    }
}
