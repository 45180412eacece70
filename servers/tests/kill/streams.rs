//! The client's two streams: its account's order updates over gRPC and BTC-USD trades over
//! the WebSocket. Each reader checks every message against the last `seq` the client kept
//! across every restart — `prev_seq` must equal it, and the first message after a resume in
//! particular — and the order-update reader keeps the client's view of its open orders.

use super::GUARD;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use ticker_engine::{ClientOrderId, Instrument, Lots, OrderId};
use ticker_proto::v1 as pb;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tonic::Streaming;
use tungstenite::Message;

/// One stream as the client saw it, across every process it was served by.
#[derive(Debug, Default)]
pub struct StreamLog {
    /// The last `seq` received: where the next subscription resumes.
    pub last: Option<u64>,
    /// Messages of the current subscription.
    pub since_subscribe: u64,
    pub messages: u64,
    /// Resumes (subscriptions with `from_seq`) whose first message had `prev_seq == from_seq`.
    pub resumes_continued: u64,
    pub violations: Vec<String>,
}

/// A stream's log, shared by its reader and the test, which waits on it.
pub type Log = Arc<watch::Sender<StreamLog>>;

pub fn new_log() -> Log {
    Arc::new(watch::Sender::new(StreamLog::default()))
}

impl StreamLog {
    /// Checks one message of a subscription that resumed after `from` (or started afresh).
    fn take(&mut self, stream: &str, from: Option<u64>, message: Chain, what: impl Fn() -> String) {
        let first = self.since_subscribe == 0;
        match message {
            // Only a fresh subscription starts from a snapshot; anywhere else one means the
            // server could not continue the chain from where the client was.
            Chain::Snapshot { .. } if first && from.is_none() => {}
            Chain::Snapshot { .. } => self.violations.push(format!(
                "{stream}: a snapshot where the chain should continue after {:?}: {}",
                self.last,
                what()
            )),
            Chain::Next { seq, prev_seq } if seq <= prev_seq => self.violations.push(format!(
                "{stream}: seq {seq} does not come after its prev_seq {prev_seq}: {}",
                what()
            )),
            Chain::Next { prev_seq, .. } => match self.last {
                Some(last) if prev_seq != last => self.violations.push(format!(
                    "{stream}: prev_seq {prev_seq} after seq {last} ({}): {}",
                    if first && from.is_some() {
                        "the first message after resuming"
                    } else {
                        "live"
                    },
                    what()
                )),
                Some(_) if first && from.is_some() => self.resumes_continued += 1,
                _ => {}
            },
        }
        self.last = Some(message.seq());
        self.since_subscribe += 1;
        self.messages += 1;
    }
}

#[derive(Clone, Copy)]
enum Chain {
    Snapshot { seq: u64 },
    Next { seq: u64, prev_seq: u64 },
}

impl Chain {
    fn seq(self) -> u64 {
        match self {
            Chain::Snapshot { seq } | Chain::Next { seq, .. } => seq,
        }
    }
}

/// Starts a new subscription's count (its first message is the one a resume is judged by).
pub fn subscribing(log: &Log) -> Option<u64> {
    let mut from = None;
    log.send_modify(|l| {
        l.since_subscribe = 0;
        from = l.last;
    });
    from
}

/// A stream's end is expected only once the test has stopped or killed tickerd.
fn ended(log: &Log, stream: &str, stopping: &AtomicBool, why: String) {
    if !stopping.load(Ordering::SeqCst) {
        log.send_modify(|l| {
            l.violations
                .push(format!("{stream}: ended while tickerd was running: {why}"))
        });
    }
}

/// The client's open orders: order id → client order id and open size.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenOrders(pub BTreeMap<OrderId, (ClientOrderId, Lots)>);

impl OpenOrders {
    pub fn from_snapshot(open: &pb::OpenOrders, instrument: &Instrument) -> Result<Self, String> {
        let mut orders = BTreeMap::new();
        for o in &open.orders {
            let order = o.order.as_ref().ok_or("an open order without its order")?;
            orders.insert(
                OrderId(order.order_id),
                (order.client_order_id, lots(instrument, &o.remaining_size)?),
            );
        }
        Ok(OpenOrders(orders))
    }

    /// Applies one update, as a client following its orders does.
    fn apply(&mut self, update: &pb::OrderUpdate, instrument: &Instrument) -> Result<(), String> {
        use pb::order_update::Event;
        let mut set = |order_id: OrderId, remaining: &str| -> Result<(), String> {
            let open = self
                .0
                .get_mut(&order_id)
                .ok_or_else(|| format!("an update of order {order_id}, which is not open"))?;
            open.1 = lots(instrument, remaining)?;
            Ok(())
        };
        match &update.event {
            Some(Event::Snapshot(s)) => *self = OpenOrders::from_snapshot(s, instrument)?,
            Some(Event::Accepted(a)) => {
                let order = a.order.as_ref().ok_or("accepted without its order")?;
                self.0.insert(
                    OrderId(order.order_id),
                    (order.client_order_id, lots(instrument, &order.size)?),
                );
            }
            Some(Event::Rested(r)) => set(OrderId(r.order_id), &r.remaining_size)?,
            Some(Event::Fill(f)) => set(OrderId(f.order_id), &f.remaining_size)?,
            Some(Event::Amended(a)) => set(OrderId(a.order_id), &a.remaining_size)?,
            Some(Event::Done(d)) => {
                self.0
                    .remove(&OrderId(d.order_id))
                    .ok_or_else(|| format!("done for order {}, which is not open", d.order_id))?;
            }
            Some(
                Event::Rejected(_) | Event::Ack(_) | Event::StopArmed(_) | Event::StopTriggered(_),
            ) => {}
            None => return Err("an update without an event".into()),
        }
        Ok(())
    }
}

/// A decimal size on the instrument's lot grid, in lots ("0" is zero).
fn lots(instrument: &Instrument, size: &str) -> Result<Lots, String> {
    let d = rust_decimal::Decimal::from_str(size).map_err(|e| format!("size {size:?}: {e}"))?;
    if d.is_zero() {
        return Ok(0);
    }
    instrument
        .size_to_lots(d)
        .map_err(|e| format!("size {size:?}: {e}"))
}

/// Reads the account's order updates until the stream ends, checking the chain and keeping
/// `view` up to date.
pub async fn follow_order_updates(
    mut stream: Streaming<pb::OrderUpdate>,
    from: Option<u64>,
    log: Log,
    view: Arc<Mutex<OpenOrders>>,
    instrument: Arc<Instrument>,
    stopping: Arc<AtomicBool>,
) {
    const STREAM: &str = "order updates";
    loop {
        let update = match stream.message().await {
            Ok(Some(u)) => u,
            Ok(None) => return ended(&log, STREAM, &stopping, "end of stream".into()),
            Err(status) => return ended(&log, STREAM, &stopping, status.to_string()),
        };
        let chain = match (&update.event, update.delivery()) {
            (Some(pb::order_update::Event::Snapshot(_)), _) => Chain::Snapshot { seq: update.seq },
            (_, pb::Delivery::Update) => {
                // The account's own counter: 1, 2, 3, …
                if update.seq != update.prev_seq + 1 {
                    let why = format!("{STREAM}: seq is not prev_seq + 1: {update:?}");
                    log.send_modify(|l| l.violations.push(why));
                }
                Chain::Next {
                    seq: update.seq,
                    prev_seq: update.prev_seq,
                }
            }
            (_, other) => {
                let why = format!("{STREAM}: delivery {other:?} on an update: {update:?}");
                log.send_modify(|l| l.violations.push(why));
                Chain::Next {
                    seq: update.seq,
                    prev_seq: update.prev_seq,
                }
            }
        };
        let applied = view.lock().unwrap().apply(&update, &instrument);
        log.send_modify(|l| {
            l.take(STREAM, from, chain, || format!("{update:?}"));
            if let Err(e) = applied {
                l.violations.push(format!("{STREAM}: {e}: {update:?}"));
            }
        });
    }
}

/// A WebSocket connection subscribed to BTC-USD trades, resuming after `from` if given.
pub async fn subscribe_trades(http: &str, from: Option<u64>) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(http)
        .await
        .expect("the HTTP port accepts");
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{http}/ws"), tcp)
        .await
        .expect("WebSocket upgrade");
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    let mut channel = json!({"name": "trades", "instrument": "BTC-USD"});
    if let Some(seq) = from {
        channel["from_seq"] = json!(seq);
    }
    let subscribe = json!({"op": "subscribe", "id": 1, "channels": [channel]});
    ws.send(Message::text(subscribe.to_string()))
        .await
        .expect("subscribe sent");
    // `subscribed` comes before any message of the channel.
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    ws
}

async fn next_json(ws: &mut WebSocketStream<TcpStream>) -> Value {
    loop {
        let m = tokio::time::timeout(GUARD, ws.next())
            .await
            .expect("a WebSocket message in time")
            .expect("the connection is open")
            .expect("a WebSocket message");
        if let Message::Text(text) = m {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

/// Reads trades until the connection ends, checking the chain.
pub async fn follow_trades(
    mut ws: WebSocketStream<TcpStream>,
    from: Option<u64>,
    log: Log,
    stopping: Arc<AtomicBool>,
) {
    const STREAM: &str = "trades";
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                return ended(&log, STREAM, &stopping, format!("closed: {frame:?}"))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return ended(&log, STREAM, &stopping, e.to_string()),
            None => return ended(&log, STREAM, &stopping, "end of stream".into()),
        };
        let m: Value = match serde_json::from_str(&text) {
            Ok(m) => m,
            Err(e) => {
                let why = format!("{STREAM}: not JSON ({e}): {text}");
                log.send_modify(|l| l.violations.push(why));
                continue;
            }
        };
        match m["type"].as_str() {
            Some("trade") => {
                let (Some(seq), Some(prev_seq)) = (m["seq"].as_u64(), m["prev_seq"].as_u64())
                else {
                    let why = format!("{STREAM}: a trade without seq and prev_seq: {m}");
                    log.send_modify(|l| l.violations.push(why));
                    continue;
                };
                log.send_modify(|l| {
                    l.take(STREAM, from, Chain::Next { seq, prev_seq }, || {
                        m.to_string()
                    })
                });
            }
            // A gap notice is the server saying it could not resume where the client was.
            Some("gap") | Some("error") => {
                let why = format!("{STREAM}: {m}");
                log.send_modify(|l| l.violations.push(why));
            }
            _ => {}
        }
    }
}
