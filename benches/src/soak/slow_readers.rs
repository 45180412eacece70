//! Readers the server must protect itself from.
//!
//! - Slow readers read in turns of 1 s reading and 3 s not reading, over the churners'
//!   verifying subscriber ([`slow`]): ticker may be conflated and depth resynced, trades must
//!   still chain.
//! - Stalled readers ([`stalled`]) subscribe to trades, depth and ticker of every instrument
//!   (about a megabyte a second without compression) on a socket with a 4 KiB receive buffer,
//!   so the server's writes block within a second, and then read nothing, in turns:
//!   - a short stall (4–8 s, under the server's `write_timeout` of 10 s): when the reader
//!     reads again, the server finds its subscriptions behind in the rings and conflates the
//!     ticker and resyncs depth (trades, 8,192 behind at most, are kept); the reader must catch
//!     up with the live stream, trades chaining all along, or be closed 1013;
//!   - a long stall (20–35 s): the server drops the connection once its writes have been
//!     blocked for `write_timeout` (docs/websocket.md: no close frame can reach a client that
//!     does not read), or closes it 1013; either is counted, anything else fails.
//!
//!   With tickerd's default simulator the trades of all instruments (about 600 a second) do
//!   not fall 8,192 behind within `write_timeout`, so the stalled readers see the drop, not
//!   1013. Every stall stays under 40 s, so the server's two unanswered pings (20 s apart,
//!   close 1008) never come into it.

use super::churn::Churner;
use super::{tally, Ctx};
use crate::load::subscribe::ReadPauses;
use crate::load::{Target, DEFLATE_OFFER};
use crate::rng::SplitMix64;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

/// A slow reader: a churner that pauses, over sessions of about a minute.
pub fn slow(ctx: &Ctx, seed: u64) -> Churner {
    Churner {
        target: Target::Ws {
            addr: ctx.http,
            offer: Some(DEFLATE_OFFER),
        },
        stay_ms: (45_000, 75_000),
        pauses: Some(ReadPauses {
            read: Duration::from_secs(1),
            pause: Duration::from_secs(3),
        }),
        seed,
    }
}

/// Longest a drain may take after the stall before the reader counts as failed.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// Stalls under the server's default `write_timeout` (10 s), and well over it; milliseconds.
const SHORT_STALL_MS: (u64, u64) = (4_000, 8_000);
const LONG_STALL_MS: (u64, u64) = (20_000, 35_000);
/// The stalled reader's socket receive buffer: the kernel's minimum, so the server's writes
/// block on the server's own send buffer alone.
const RECEIVE_BUFFER: u32 = 4096;

/// How a stall ended.
enum Stall {
    /// The server closed the connection 1013.
    ClosedTooSlow,
    /// The reader drained what was queued and reached the live stream.
    CaughtUp,
    /// The connection ended without a close frame (the server's `write_timeout`).
    Dropped(String),
    /// The soak stopped during the stall.
    Stopped,
}

pub async fn stalled(ctx: Arc<Ctx>, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut long = false;
    loop {
        let (lo, hi) = if long { LONG_STALL_MS } else { SHORT_STALL_MS };
        let stall = Duration::from_millis(rng.between(lo, hi));
        let outcome = stall_once(&ctx, stall).await;
        tally::add(&ctx.tally.ws_connects, 1);
        match outcome {
            Ok(Stall::ClosedTooSlow) => tally::add(&ctx.tally.too_slow_closes, 1),
            Ok(Stall::CaughtUp) => tally::add(&ctx.tally.stalls_survived, 1),
            Ok(Stall::Dropped(_)) if long => tally::add(&ctx.tally.stalls_dropped, 1),
            Ok(Stall::Dropped(why)) => ctx.tally.fail(format!(
                "stalled reader: dropped after a {stall:?} stall, under write_timeout: {why}"
            )),
            Ok(Stall::Stopped) => break,
            Err(e) => ctx.tally.fail(format!("stalled reader: {e:#}")),
        }
        if *ctx.stop.borrow() {
            break;
        }
        long = !long;
    }
}

/// The fields of a market-data message the stalled reader checks.
#[derive(serde::Deserialize)]
struct Seen {
    #[serde(rename = "type")]
    kind: String,
    channel: Option<String>,
    instrument: Option<String>,
    seq: Option<u64>,
    prev_seq: Option<u64>,
    ts: Option<u64>,
}

async fn stall_once(ctx: &Ctx, stall: Duration) -> anyhow::Result<Stall> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(RECEIVE_BUFFER)?;
    let tcp = socket.connect(ctx.http).await?;
    let conn = ticker_servers::ws::client::client_handshake(
        tcp,
        &ctx.http.to_string(),
        "/ws",
        None,
        &Default::default(),
        None,
    )
    .await?;
    let mut ws = conn.ws;
    let channels: Vec<_> = ctx
        .symbols
        .iter()
        .flat_map(|s| {
            [
                serde_json::json!({"name": "trades", "instrument": s}),
                serde_json::json!({"name": "depth", "instrument": s}),
                serde_json::json!({"name": "ticker", "instrument": s}),
            ]
        })
        .collect();
    ws.send(Message::text(
        serde_json::json!({"op": "subscribe", "id": 1, "channels": channels}).to_string(),
    ))
    .await?;
    // The stall is the behaviour under test: nothing is read from the socket.
    let mut stop = ctx.stop.clone();
    tokio::select! {
        _ = stop.wait_for(|s| *s) => return Ok(Stall::Stopped),
        _ = tokio::time::sleep(stall) => {}
    }
    let drain = tokio::time::timeout(DRAIN_LIMIT, async {
        let mut trades: HashMap<String, u64> = HashMap::new();
        let mut lost = 0;
        loop {
            let text = match ws.next().await {
                None => return Ok((Stall::Dropped("the connection ended".into()), lost)),
                Some(Err(e)) => return Ok((Stall::Dropped(e.to_string()), lost)),
                Some(Ok(Message::Close(Some(f)))) if f.code == CloseCode::Again => {
                    return Ok((Stall::ClosedTooSlow, lost));
                }
                Some(Ok(Message::Close(f))) => anyhow::bail!("closed with {f:?}, not 1013"),
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
            };
            let m: Seen = serde_json::from_str(&text)?;
            match m.kind.as_str() {
                "error" => anyhow::bail!("the subscribe was refused: {text}"),
                "trade" if m.channel.as_deref() == Some("trades") => {
                    let instrument = m.instrument.unwrap_or_default();
                    let seq = m.seq.unwrap_or(0);
                    if let Some(last) = trades.insert(instrument, seq) {
                        if m.prev_seq != Some(last) {
                            lost += 1;
                        }
                    }
                    if live(m.ts) {
                        let _ = ws.close(None).await;
                        return Ok((Stall::CaughtUp, lost));
                    }
                }
                _ => {}
            }
        }
    });
    let drained = tokio::select! {
        _ = stop.wait_for(|s| *s) => return Ok(Stall::Stopped),
        drained = drain => drained,
    };
    match drained {
        Err(_) => anyhow::bail!("neither closed nor caught up {DRAIN_LIMIT:?} after its stall"),
        Ok(Err(e)) => Err(e),
        Ok(Ok((outcome, lost))) => {
            if lost > 0 {
                ctx.tally
                    .lose(lost, "stalled reader: trades skipped before the close");
            }
            Ok(outcome)
        }
    }
}

/// Whether an engine timestamp is within a second of now: the reader is on the live stream.
fn live(ts_ns: Option<u64>) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    ts_ns.is_some_and(|ts| now.saturating_sub(ts) < 1_000_000_000)
}
