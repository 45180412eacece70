//! What a reply from tickerd costs before the engine: an order the front refuses by itself (a
//! price that is not a decimal), over the same order-entry connections as the flow — the gRPC
//! `OrderSession` stream and a signed-in WebSocket — one at a time at the flow's rate, timed from
//! the send call to the reply read, both in one task.
//!
//! Measured in the same run as `latency`, it is the floor under order → ack on this machine: the
//! client's runtime, the server's runtime, a socket each way and the front's own work, and
//! nothing of the engine, the feeds or the reply routing. (The flow's clients also hand each
//! command to a writer task and read replies in another: a hop each way more than this.)

use super::latency::{histogram, summary};
use super::order_flow::{grpc_session, ws_signed_in, WsReply};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use ticker_proto::v1 as pb;
use tungstenite::Message as WsMessage;

/// Refused orders over both fronts, `count` of each at `rate` per second, signed in with
/// `token`; the JSON of the report's `front_alone` phase.
pub async fn round_trips(
    grpc: SocketAddr,
    ws: SocketAddr,
    token: &str,
    instrument: &str,
    rate: u64,
    count: u64,
) -> anyhow::Result<Value> {
    let run = Refusals {
        token,
        instrument,
        interval: Duration::from_nanos(1_000_000_000 / rate.max(1)),
        count,
    };
    Ok(json!({
        "grpc_refused_order": summary(&grpc_refused(grpc, &run).await?),
        "ws_refused_order": summary(&ws_refused(ws, &run).await?),
        "rate": rate,
    }))
}

/// What both kinds send: `count` orders, one `interval` apart, for `instrument`.
struct Refusals<'a> {
    token: &'a str,
    instrument: &'a str,
    interval: Duration,
    count: u64,
}

async fn grpc_refused(addr: SocketAddr, run: &Refusals<'_>) -> anyhow::Result<Histogram<u64>> {
    use pb::session_request::Action;
    let (tx, mut responses) = grpc_session(addr, run.token, pb::SessionStart::default()).await?;
    let mut took = histogram();
    let start = tokio::time::Instant::now();
    for id in 1..=run.count {
        tokio::time::sleep_until(start + run.interval * id as u32).await;
        let sent = Instant::now();
        tx.send(pb::SessionRequest {
            request_id: id,
            action: Some(Action::Place(pb::PlaceOrderRequest {
                instrument: run.instrument.to_string(),
                side: pb::Side::Buy as i32,
                price: "not-a-price".into(),
                size: "1".into(),
                client_order_id: id,
                ..Default::default()
            })),
        })?;
        let reply = responses
            .message()
            .await?
            .ok_or_else(|| anyhow::anyhow!("the order session ended at request {id}"))?;
        anyhow::ensure!(reply.request_id == id, "reply out of order: {reply:?}");
        took.saturating_record(sent.elapsed().as_nanos() as u64);
    }
    Ok(took)
}

async fn ws_refused(addr: SocketAddr, run: &Refusals<'_>) -> anyhow::Result<Histogram<u64>> {
    let (mut sink, mut stream) = ws_signed_in(addr, run.token).await?;
    let mut took = histogram();
    let start = tokio::time::Instant::now();
    for id in 1..=run.count {
        tokio::time::sleep_until(start + run.interval * id as u32).await;
        let sent = Instant::now();
        sink.send(WsMessage::text(format!(
            r#"{{"op":"place","id":{id},"instrument":"{}","side":"buy","price":"not-a-price","size":"1","client_order_id":{id}}}"#,
            run.instrument
        )))
        .await?;
        reply_to(&mut stream, id, "error").await?;
        took.saturating_record(sent.elapsed().as_nanos() as u64);
    }
    Ok(took)
}

/// Reads until the reply to request `id`, which must be of type `kind`.
async fn reply_to<S>(stream: &mut S, id: u64, kind: &str) -> anyhow::Result<()>
where
    S: futures_util::Stream<Item = Result<WsMessage, tungstenite::Error>> + Unpin,
{
    loop {
        let Some(message) = stream.next().await else {
            anyhow::bail!("the WebSocket closed before the reply to {id}");
        };
        let WsMessage::Text(text) = message? else {
            continue;
        };
        let reply: WsReply = serde_json::from_str(&text)?;
        if reply.id == Some(id) {
            anyhow::ensure!(reply.kind == kind, "expected {kind} for {id}, got {text}");
            return Ok(());
        }
    }
}
