//! Scale-out over NATS JetStream (issue 15), with real processes: a `nats-server` with
//! JetStream, one `tickerd --role matcher` and three `tickerd --role gateway`, all on
//! 127.0.0.1 with their own temporary directories.
//!
//! - Orders placed on one gateway fill against orders placed on another.
//! - WebSocket clients on all three gateways and a gRPC client on one see the same trades,
//!   message for message (`seq`, `prev_seq`, trade id, price, size).
//! - A gateway killed with SIGKILL mid-stream and restarted: its client resumes with
//!   `from_seq` and gets every trade it missed, no gap, no duplicate.
//! - The matcher killed with SIGKILL and restarted from its journal: gateways' clients go on
//!   without a gap, and the stream holds every event exactly once (read back with async-nats).
//! - While no matcher runs, an order on a gateway gets UNAVAILABLE, not silence.
//! - A gateway's `/healthz` is 200 while it follows and 503 once NATS is gone.
//!
//! Needs `nats-server` (Debian's package, 2.9): `servers/tests/bus/run.sh` installs it and
//! runs this test; `NATS_SERVER` names another binary.

#![cfg(unix)]

// Shared with the kill test, which also starts processes killed partway through start-up.
#[allow(dead_code)]
#[path = "kill/process.rs"]
mod process;

use futures_util::{SinkExt, StreamExt};
use process::{run_to_failure, DataDir, Tickerd};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use ticker_engine::Instrument;
use ticker_proto::v1 as pb;
use ticker_proto::v1::market_data_service_client::MarketDataServiceClient;
use ticker_proto::v1::order_service_client::OrderServiceClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::WebSocketStream;
use tonic::transport::Channel;
use tungstenite::Message;

/// Failure guard for anything awaited; never a wait for something to happen.
const GUARD: Duration = Duration::from_secs(30);
const ALICE: &str = "bus-alice";
const BOB: &str = "bus-bob";

/// `nats-server -js` on a random loopback port, stopped (and its store removed) on drop.
struct Nats {
    child: Child,
    url: String,
    _store: DataDir,
}

impl Nats {
    async fn start(seed: u64) -> Nats {
        let store = DataDir::new(seed, 1);
        let binary = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let mut child = Command::new(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(&store.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{binary} starts ({e}); servers/tests/bus/run.sh installs it")
            });
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(GUARD, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(at) = line.find("Listening for client connections on ") {
                    let addr = line[at..].rsplit(' ').next().unwrap().to_string();
                    return format!("nats://{addr}");
                }
            }
            panic!("nats-server ended before listening");
        })
        .await
        .expect("nats-server listens in time");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Nats {
            child,
            url,
            _store: store,
        }
    }
}

fn args(role: &str, nats: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--role",
        role,
        "--no-sim",
        "--grpc-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--token",
        &format!("{ALICE}=11"),
        "--token",
        &format!("{BOB}=12"),
        "--token",
        "bus-risk=risk",
        "--set",
        &format!("bus.url={nats:?}"),
        "--set",
        "bus.connect_timeout_ms=5000",
        "--set",
        "bus.request_timeout_ms=3000",
        "--set",
        "bus.gateway_timeout_ms=1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

async fn gateway(nats: &str, node: u16) -> Tickerd {
    Tickerd::start(&args(
        "gateway",
        nats,
        &["--set", &format!("bus.node={node}")],
    ))
    .await
}

/// A matcher of `shards` engine threads (`market.shards`) on the data directory `dir`.
async fn matcher(nats: &str, dir: &DataDir, shards: usize) -> Tickerd {
    let d = dir.0.display().to_string();
    let shards = format!("market.shards={shards}");
    Tickerd::start(&args(
        "matcher",
        nats,
        &["--data-dir", &d, "--set", &shards],
    ))
    .await
}

fn btc() -> Instrument {
    Instrument::new(0, ticker_servers::defaults::instruments()[0].clone()).unwrap()
}

async fn orders(t: &Tickerd) -> OrderServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", t.grpc))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects");
    OrderServiceClient::new(channel)
}

fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn limit(side: pb::Side, ticks: i64, ioc: bool) -> pb::PlaceOrderRequest {
    let btc = btc();
    pb::PlaceOrderRequest {
        instrument: btc.spec.symbol.clone(),
        side: side as i32,
        order_type: pb::OrderType::Limit as i32,
        price: btc.ticks_to_price(ticks).to_string(),
        size: btc.lots_to_size(1).to_string(),
        time_in_force: if ioc {
            pb::TimeInForce::Ioc
        } else {
            pb::TimeInForce::Gtc
        } as i32,
        ..Default::default()
    }
}

/// Alice rests a sell on one gateway, Bob takes it on another: one trade, and Bob's answer
/// lists the fill.
async fn cross(seller: &Tickerd, buyer: &Tickerd, ticks: i64) {
    let mut s = orders(seller).await;
    let placed = s
        .place_order(authed(ALICE, limit(pb::Side::Sell, ticks, false)))
        .await
        .expect("the sell is answered")
        .into_inner();
    assert!(placed.result.unwrap().accepted, "the sell is accepted");
    let mut b = orders(buyer).await;
    let taken = b
        .place_order(authed(BOB, limit(pb::Side::Buy, ticks, true)))
        .await
        .expect("the buy is answered")
        .into_inner();
    assert!(taken.result.unwrap().accepted, "the buy is accepted");
    let fills = taken.order.expect("an accepted order").fills;
    assert_eq!(
        fills.len(),
        1,
        "the buy on one gateway fills against the sell on another"
    );
}

/// A trade as both fronts show it.
type Trade = (u64, u64, u64, String, String);

async fn ws_trades(http: &str, from: Option<u64>) -> WebSocketStream<TcpStream> {
    ws_channel(http, "trades", from).await
}

async fn ws_connect(http: &str) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(http).await.expect("HTTP accepts");
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{http}/ws"), tcp)
        .await
        .expect("WebSocket upgrade");
    ws
}

async fn ws_channel(http: &str, name: &str, from: Option<u64>) -> WebSocketStream<TcpStream> {
    let mut ws = ws_connect(http).await;
    let mut channel = json!({"name": name, "instrument": "BTC-USD"});
    if let Some(seq) = from {
        channel["from_seq"] = json!(seq);
    }
    let subscribe = json!({"op": "subscribe", "id": 1, "channels": [channel]});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    loop {
        let m = next_json(&mut ws).await;
        if m["type"] == "subscribed" {
            return ws;
        }
        assert_ne!(m["type"], "error", "{m}");
    }
}

async fn next_json(ws: &mut WebSocketStream<TcpStream>) -> Value {
    loop {
        let m = tokio::time::timeout(GUARD, ws.next())
            .await
            .expect("a WebSocket message in time")
            .expect("the connection is open")
            .expect("a WebSocket message");
        if let Message::Text(text) = m {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

async fn next_ws_trades(ws: &mut WebSocketStream<TcpStream>, n: usize) -> Vec<Trade> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = next_json(ws).await;
        if m["type"] == "trade" {
            out.push((
                m["seq"].as_u64().unwrap(),
                m["prev_seq"].as_u64().unwrap(),
                m["trade_id"].as_u64().unwrap(),
                m["price"].as_str().unwrap().to_string(),
                m["size"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// Depth updates as a client checks them: seq, prev_seq, checksum.
async fn next_depth(ws: &mut WebSocketStream<TcpStream>, n: usize) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = next_json(ws).await;
        if m["channel"] == "depth" && m["type"] == "update" {
            out.push((
                m["seq"].as_u64().unwrap(),
                m["prev_seq"].as_u64().unwrap(),
                m["checksum"].as_u64().unwrap(),
            ));
        }
    }
    out
}

/// The next reply to a WebSocket request `id`.
async fn ws_reply(ws: &mut WebSocketStream<TcpStream>, request: Value) -> Value {
    let id = request["id"].clone();
    ws.send(Message::text(request.to_string())).await.unwrap();
    loop {
        let m = next_json(ws).await;
        if m["id"] == id {
            return m;
        }
    }
}

async fn grpc_trades(t: &Tickerd) -> tonic::Streaming<pb::MarketDataMessage> {
    let channel = Channel::from_shared(format!("http://{}", t.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    MarketDataServiceClient::new(channel)
        .subscribe(pb::SubscribeRequest {
            instruments: vec!["BTC-USD".into()],
            channels: vec![pb::Channel::Trades as i32],
            ..Default::default()
        })
        .await
        .expect("subscribed over gRPC")
        .into_inner()
}

async fn next_grpc_trades(s: &mut tonic::Streaming<pb::MarketDataMessage>, n: usize) -> Vec<Trade> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(GUARD, s.message())
            .await
            .expect("a gRPC message in time")
            .expect("the stream is open")
            .expect("a message");
        if let Some(pb::market_data_message::Payload::Trade(t)) = m.payload {
            out.push((m.seq, m.prev_seq, t.trade_id, t.price, t.size));
        }
    }
    out
}

/// Every trade follows the one before it.
fn chained(trades: &[Trade], after: u64) {
    let mut last = after;
    for t in trades {
        assert_eq!(t.1, last, "prev_seq continues the chain: {trades:?}");
        last = t.0;
    }
}

async fn healthz(http: &str) -> (u16, String) {
    get(http, "/healthz").await
}

async fn get(http: &str, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(http).await.expect("HTTP accepts");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header("host", http)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).to_string())
}

/// Every event message in the stream, in order: (first seq, last seq).
async fn stream_contents(nats: &str) -> Vec<(u64, u64)> {
    let client = async_nats::connect(nats).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("TICKERD").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        let first: u64 = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        let last: u64 = m
            .headers
            .get("Tickerd-Last-Seq")
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        out.push((first, last));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: servers/tests/bus/run.sh"]
async fn gateways_serve_the_matchers_stream_across_kills() {
    stream_across_kills(1, 0).await;
}

/// The same with a matcher of two shards: the stream is their merged one, and a matcher
/// restarted from its journals republishes it with the same `seq`s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: servers/tests/bus/run.sh"]
async fn gateways_serve_a_sharded_matchers_stream_across_kills() {
    stream_across_kills(2, 10).await;
}

/// `seeds` keeps the two runs' NATS and data directories apart.
async fn stream_across_kills(shards: usize, seeds: u64) {
    let seed = std::process::id() as u64 + seeds;
    let mut nats = Nats::start(seed).await;
    let dir = DataDir::new(seed + 1, shards);
    let m = matcher(&nats.url, &dir, shards).await;
    let (g1, g2, g3) = (
        gateway(&nats.url, 1).await,
        gateway(&nats.url, 2).await,
        gateway(&nats.url, 3).await,
    );
    let mut ws1 = ws_trades(&g1.http, None).await;
    let mut ws2 = ws_trades(&g2.http, None).await;
    let mut ws3 = ws_trades(&g3.http, None).await;
    let mut grpc2 = grpc_trades(&g2).await;
    let mut depth1 = ws_channel(&g1.http, "depth", None).await;
    let mut depth3 = ws_channel(&g3.http, "depth", None).await;
    let reference = btc().reference_ticks;

    // Orders on one gateway fill against orders on another; every client sees the same
    // trades.
    for i in 0..6 {
        cross(&g1, &g2, reference + i).await;
    }
    let t1 = next_ws_trades(&mut ws1, 6).await;
    assert_eq!(
        next_ws_trades(&mut ws2, 6).await,
        t1,
        "gateway 2's WebSocket"
    );
    assert_eq!(
        next_ws_trades(&mut ws3, 6).await,
        t1,
        "gateway 3's WebSocket"
    );
    assert_eq!(
        next_grpc_trades(&mut grpc2, 6).await,
        t1,
        "gateway 2's gRPC"
    );
    chained(&t1[1..], t1[0].0);
    // Each process meters its own front; a gateway's only ring is its queue to the matcher.
    let (_, metrics) = get(&g1.http, "/metrics").await;
    for sample in [
        "tickerd_grpc_requests_total{method=\"/ticker.v1.OrderService/PlaceOrder\",code=\"OK\"} 6\n",
        "tickerd_ring_depth{ring=\"bus_commands\"} ",
        "tickerd_ring_capacity{ring=\"bus_commands\"} 65536\n",
        "tickerd_bus_connected{role=\"gateway\"} 1\n",
    ] {
        assert!(metrics.contains(sample), "{sample} in gateway 1's\n{metrics}");
    }
    assert!(!metrics.contains("ring=\"ingress\""), "{metrics}");
    let (_, metrics) = get(&m.http, "/metrics").await;
    // With several shards each ring is labelled with its shard.
    let shard = if shards > 1 { ",shard=\"1\"" } else { "" };
    for sample in [
        format!("tickerd_ring_capacity{{ring=\"ingress\"{shard}}} 65536\n"),
        format!("tickerd_ring_capacity{{ring=\"egress\"{shard}}} 256\n"),
        format!("tickerd_ring_capacity{{ring=\"journal_rotations\"{shard}}} 8\n"),
    ] {
        assert!(
            metrics.contains(&sample),
            "{sample} in the matcher's\n{metrics}"
        );
    }
    // Depth: the same updates and checksums on two gateways (each cross rests and takes).
    let d1 = next_depth(&mut depth1, 12).await;
    assert_eq!(
        next_depth(&mut depth3, 12).await,
        d1,
        "the same depth updates"
    );
    drop((depth1, depth3));
    // A client moving from gateway 1 to gateway 2 resumes with from_seq: no gap, no
    // duplicate.
    let mut moved = ws_trades(&g2.http, Some(t1[2].0)).await;
    assert_eq!(next_ws_trades(&mut moved, 3).await, t1[3..].to_vec());
    drop(moved);

    // Idempotency by client order id holds across gateways: the engine's typed reject.
    let far = pb::PlaceOrderRequest {
        client_order_id: 777,
        ..limit(pb::Side::Sell, reference + 1000, false)
    };
    let first = orders(&g1)
        .await
        .place_order(authed(ALICE, far.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(first.result.unwrap().accepted);
    let again = orders(&g2)
        .await
        .place_order(authed(ALICE, far))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert!(!again.accepted);
    assert_eq!(
        again.reject_reason(),
        pb::RejectReason::DuplicateClientOrderId
    );

    // GetLimits on a gateway reads the matcher's table: risk tracking is on, no limits.
    let channel = Channel::from_shared(format!("http://{}", g3.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let limits = ticker_proto::v1::risk_service_client::RiskServiceClient::new(channel)
        .get_limits(authed("bus-risk", pb::GetLimitsRequest { account: 11 }))
        .await
        .expect("GetLimits answered through the bus")
        .into_inner();
    assert!(!limits.disabled && limits.limits.is_none(), "{limits:?}");

    // Gateway 3 dies mid-stream; trades go on without it; restarted, it serves its client
    // everything after the last seq that client saw.
    let seen3 = t1[5].0;
    drop(ws3);
    g3.kill().await;
    for i in 0..4 {
        cross(&g2, &g1, reference + 10 + i).await;
    }
    let g3 = gateway(&nats.url, 3).await;
    let mut ws3 = ws_trades(&g3.http, Some(seen3)).await;
    let resumed = next_ws_trades(&mut ws3, 4).await;
    chained(&resumed, seen3);
    assert_eq!(
        next_ws_trades(&mut ws1, 4).await,
        resumed,
        "the same trades as gateway 1"
    );
    next_grpc_trades(&mut grpc2, 4).await;
    next_ws_trades(&mut ws2, 4).await;

    // The matcher dies; orders on a gateway are answered UNAVAILABLE meanwhile.
    m.kill().await;
    let mut o = orders(&g1).await;
    let refused = tokio::time::timeout(
        GUARD,
        o.place_order(authed(ALICE, limit(pb::Side::Sell, reference, false))),
    )
    .await
    .expect("an answer, not silence")
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let mut trader = ws_connect(&g2.http).await;
    let authed_ws = ws_reply(&mut trader, json!({"op": "auth", "id": 1, "token": BOB})).await;
    assert_eq!(authed_ws["type"], "authenticated", "{authed_ws}");
    let place = json!({"op": "place", "id": 2, "instrument": "BTC-USD", "side": "buy",
        "price": btc().ticks_to_price(reference).to_string(),
        "size": btc().lots_to_size(1).to_string()});
    let error = ws_reply(&mut trader, place).await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("unavailable")),
        "{error}"
    );
    drop(trader);
    let m = matcher(&nats.url, &dir, shards).await;
    assert!(m.recovery.contains("replayed"), "{}", m.recovery);
    // After the restart the chain goes on, on every gateway.
    let last = resumed[3].0;
    for i in 0..3 {
        cross(&g3, &g1, reference + 20 + i).await;
    }
    let after = next_ws_trades(&mut ws1, 3).await;
    chained(&after, last);
    assert_eq!(next_ws_trades(&mut ws2, 3).await, after);
    assert_eq!(next_ws_trades(&mut ws3, 3).await, after);
    assert_eq!(next_grpc_trades(&mut grpc2, 3).await, after);

    // The stream holds every event once, in order, across the matcher's kill.
    let contents = stream_contents(&nats.url).await;
    assert!(!contents.is_empty());
    let mut expected = 1;
    for (first, last) in &contents {
        assert_eq!(*first, expected, "no gap and no duplicate: {contents:?}");
        expected = last + 1;
    }

    // A gateway that dies for good: once it has been silent for bus.gateway_timeout_ms the
    // matcher cancels the orders of its sessions (cancel-on-disconnect), as one process does
    // when a connection drops.
    let mut watch = ws_channel(&g1.http, "depth", None).await;
    let mut doomed = ws_connect(&g3.http).await;
    let hello = ws_reply(
        &mut doomed,
        json!({"op": "auth", "id": 1, "token": ALICE, "cancel_on_disconnect": true}),
    )
    .await;
    assert_eq!(hello["type"], "authenticated", "{hello}");
    let price = btc().ticks_to_price(reference + 3000);
    let placed = ws_reply(
        &mut doomed,
        json!({"op": "place", "id": 2, "instrument": "BTC-USD", "side": "sell",
            "price": price.to_string(), "size": btc().lots_to_size(1).to_string()}),
    )
    .await;
    assert_eq!(placed["accepted"], true, "{placed}");
    let ask_size = |m: &Value| -> Option<rust_decimal::Decimal> {
        m["asks"].as_array()?.iter().find_map(|level| {
            let p: rust_decimal::Decimal = level[0].as_str()?.parse().ok()?;
            (p == price).then(|| level[1].as_str()?.parse().ok())?
        })
    };
    loop {
        let m = next_json(&mut watch).await;
        if m["type"] == "update" && ask_size(&m).is_some_and(|s| !s.is_zero()) {
            break;
        }
    }
    g3.kill().await;
    loop {
        let m = next_json(&mut watch).await;
        if m["type"] == "update" && ask_size(&m).is_some_and(|s| s.is_zero()) {
            break;
        }
    }
    drop((watch, doomed));

    let (status, body) = healthz(&g1.http).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // Without NATS a gateway is not healthy, and says why.
    nats.child.start_kill().unwrap();
    let _ = nats.child.wait().await;
    let unhealthy = tokio::time::timeout(GUARD, async {
        loop {
            let (status, body) = healthz(&g2.http).await;
            if status == 503 {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the gateway notices NATS is gone");
    assert!(unhealthy.contains("not connected to NATS"), "{unhealthy}");
    // Both roles stop cleanly on SIGTERM without NATS (the matcher gives up publishing after
    // bus.connect_timeout_ms; its next start publishes the rest from the journal).
    for t in [g1, g2, m] {
        t.terminate().await;
    }
}

/// Events missing from the stream (a message deleted: what a matcher that lost events it
/// could not publish would leave) stop a gateway catching up, with the range named, instead of
/// serving feeds that are no longer the matcher's; gateways that had read past the hole keep
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: servers/tests/bus/run.sh"]
async fn a_gateway_that_meets_a_gap_in_the_stream_stops_and_names_it() {
    let seed = std::process::id() as u64 + 100;
    let nats = Nats::start(seed).await;
    let dir = DataDir::new(seed + 1, 1);
    let m = matcher(&nats.url, &dir, 1).await;
    let g1 = gateway(&nats.url, 1).await;
    let mut ws1 = ws_trades(&g1.http, None).await;
    let reference = btc().reference_ticks;
    for i in 0..3 {
        cross(&g1, &g1, reference + i).await;
    }
    let before = next_ws_trades(&mut ws1, 3).await;
    let contents = stream_contents(&nats.url).await;
    assert!(contents.len() >= 3, "{contents:?}");
    let hole = contents.len() as u64 / 2 + 1;
    let (first, last) = contents[hole as usize - 1];
    let client = async_nats::connect(&nats.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("TICKERD").await.unwrap();
    assert!(stream.delete_message(hole).await.unwrap());

    let (status, stderr) =
        run_to_failure(&args("gateway", &nats.url, &["--set", "bus.node=2"])).await;
    assert!(!status.success(), "{status:?}");
    let said = stderr.join("\n");
    assert!(
        said.contains(&format!(
            "events {first} to {last} are missing from the stream"
        )),
        "{said}"
    );

    // The gateway that read past the hole serves on.
    cross(&g1, &g1, reference + 3).await;
    let after = next_ws_trades(&mut ws1, 1).await;
    chained(&after, before[2].0);
    drop((g1, m));
}

/// The caller's deadline travels with an order through a gateway to the matcher: a client
/// gives up on an order while the matcher is frozen (SIGSTOP), and when the matcher runs again
/// the engine refuses the order as past its deadline instead of executing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: servers/tests/bus/run.sh"]
async fn an_order_past_its_deadline_at_the_matcher_is_not_executed() {
    let seed = std::process::id() as u64 + 200;
    let nats = Nats::start(seed).await;
    let dir = DataDir::new(seed + 1, 1);
    let m = matcher(&nats.url, &dir, 1).await;
    let g1 = gateway(&nats.url, 1).await;
    let mut updates = orders(&g1)
        .await
        .subscribe_order_updates(authed(ALICE, pb::SubscribeOrderUpdatesRequest::default()))
        .await
        .expect("order updates")
        .into_inner();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &m.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "{name} sent");
    };
    signal("-STOP");
    let mut request = authed(
        ALICE,
        limit(pb::Side::Sell, btc().reference_ticks + 5, false),
    );
    request.set_timeout(Duration::from_millis(300));
    let e = orders(&g1)
        .await
        .place_order(request)
        .await
        .expect_err("no answer from a frozen matcher within the deadline");
    assert!(
        matches!(
            e.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{e:?}"
    );
    signal("-CONT");
    let rejected = tokio::time::timeout(GUARD, async {
        loop {
            let u = updates.message().await.unwrap().expect("updates go on");
            match u.event {
                Some(pb::order_update::Event::Snapshot(_)) => continue,
                Some(pb::order_update::Event::Rejected(r)) => return r,
                other => panic!("the order must not be executed: {other:?}"),
            }
        }
    })
    .await
    .expect("the matcher answers once it runs again");
    assert_eq!(rejected.reason(), pb::RejectReason::DeadlineExceeded);
    drop((g1, m));
}
