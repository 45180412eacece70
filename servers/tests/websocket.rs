//! The WebSocket front against a real market (no simulator), through a real tokio-tungstenite
//! client on loopback: every command and reply, every error code, every limit with its close
//! code, resume without gaps, snapshots first, and the HTTP side (page, 404, refused upgrades).
//! A raw TCP client covers what a well-behaved client cannot do: never answer pings; and a
//! client on small socket buffers that stops reading meets close 1013 while another reads on.
//!
//! Limits are made small so each test runs in well under a second; timeouts are failure guards
//! only, never waits.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use ticker_engine::{CommandKind, Place, Side};
use ticker_feeds::{FeedsConfig, HubConfig};
use ticker_servers::auth::AuthConfig;
use ticker_servers::market::{Market, MarketConfig};
use ticker_servers::ws::deflate::MessageDeflater;
use ticker_servers::ws::{WsConfig, WsLimits, WsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

const ALICE: &str = "alice-token";
const BOB: &str = "bob-token";
/// Failure guard for anything awaited.
const GUARD: Duration = Duration::from_secs(10);

async fn guard<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Test limits: the defaults, but a short wait for the client's close frame.
fn limits() -> WsLimits {
    WsLimits {
        close_timeout: Duration::from_millis(200),
        ..WsLimits::default()
    }
}

struct Rig {
    market: Arc<Market>,
    server: Option<WsServer>,
    addr: std::net::SocketAddr,
}

impl Rig {
    async fn start(limits: WsLimits) -> Rig {
        Rig::start_with(limits, HubConfig::default()).await
    }

    async fn start_with(limits: WsLimits, hub: HubConfig) -> Rig {
        Rig::start_on(None, limits, hub).await
    }

    /// A rig serving on `listener` if given (with socket options of the test's choosing),
    /// else on a port `WsServer::start` binds.
    async fn start_on(listener: Option<TcpListener>, limits: WsLimits, hub: HubConfig) -> Rig {
        Rig::start_market(listener, limits, hub, 1).await
    }

    /// A rig whose market runs `shards` engine threads.
    async fn start_sharded(limits: WsLimits, shards: usize) -> Rig {
        Rig::start_market(None, limits, HubConfig::default(), shards).await
    }

    async fn start_market(
        listener: Option<TcpListener>,
        limits: WsLimits,
        hub: HubConfig,
        shards: usize,
    ) -> Rig {
        let market = Market::start(MarketConfig {
            simulator: None,
            feeds: FeedsConfig {
                hub,
                ..FeedsConfig::default()
            },
            shards,
            ..MarketConfig::default()
        })
        .unwrap();
        let config = WsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            auth: AuthConfig {
                jwt_hs256_secret: Some(JWT_SECRET.to_string()),
                ..AuthConfig::traders([(ALICE, 1), (BOB, 2)])
            },
            limits,
            ..WsConfig::default()
        };
        let server = match listener {
            Some(listener) => WsServer::start_on(listener, market.clone(), config).unwrap(),
            None => WsServer::start(market.clone(), config).await.unwrap(),
        };
        let addr = server.local_addr();
        Rig {
            market,
            server: Some(server),
            addr,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// A client authenticated with `token`.
    async fn trader(&self, token: &str) -> Client {
        let mut c = self.client().await;
        let r = c.request(json!({"op":"auth","token":token})).await;
        assert_eq!(r["type"], "authenticated", "{r}");
        c
    }

    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(1)).await;
        }
        let market = self.market.clone();
        tokio::task::spawn_blocking(move || market.shutdown())
            .await
            .unwrap();
    }
}

struct Client {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    hello: Value,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        Client::upgrade(TcpStream::connect(addr).await.unwrap(), addr).await
    }

    /// A client on a socket the test connected itself (with socket options of its choosing).
    async fn upgrade(tcp: TcpStream, addr: std::net::SocketAddr) -> Client {
        let (ws, response) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp)
            .await
            .expect("upgrade");
        assert_eq!(response.status(), 101);
        let mut c = Client {
            ws,
            next_id: 1,
            hello: Value::Null,
        };
        c.hello = c.recv().await;
        assert_eq!(c.hello["type"], "hello", "{}", c.hello);
        c
    }

    async fn send_text(&mut self, text: String) {
        guard("a send", self.ws.send(Message::Text(text.into())))
            .await
            .unwrap();
    }

    /// Sends `message` with a fresh id (unless it has one) and returns the id.
    async fn send(&mut self, mut message: Value) -> u64 {
        if message.get("id").is_none() {
            message["id"] = self.next_id.into();
            self.next_id += 1;
        }
        let id = message["id"].as_u64().unwrap();
        self.send_text(message.to_string()).await;
        id
    }

    /// The next JSON message (pings are answered by tungstenite and skipped).
    async fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_text().await).expect("JSON")
    }

    /// The next text message as sent.
    async fn recv_text(&mut self) -> String {
        loop {
            let m = guard("a message", self.ws.next())
                .await
                .expect("the connection is open")
                .expect("a message");
            match m {
                Message::Text(t) => return t.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The next message that `pick` accepts, skipping others.
    async fn recv_where(&mut self, pick: impl Fn(&Value) -> bool) -> Value {
        loop {
            let m = self.recv().await;
            if pick(&m) {
                return m;
            }
        }
    }

    /// The reply to request `id`.
    async fn reply(&mut self, id: u64) -> Value {
        self.recv_where(|m| m["id"] == id).await
    }

    async fn request(&mut self, message: Value) -> Value {
        let id = self.send(message).await;
        self.reply(id).await
    }

    /// Reads to the server's close frame, then on to the end so that tungstenite sends the
    /// client's answering close frame.
    async fn close_frame(&mut self) -> (CloseCode, String) {
        loop {
            match guard("the close frame", self.ws.next()).await {
                Some(Ok(Message::Close(Some(f)))) => {
                    while let Some(Ok(_)) = guard("the end", self.ws.next()).await {}
                    return (f.code, f.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
                Some(Ok(_)) => continue,
                other => panic!("connection ended without a close frame: {other:?}"),
            }
        }
    }
}

fn place(side: &str, price: &str, size: &str) -> Value {
    json!({"op":"place","instrument":"BTC-USD","side":side,"price":price,"size":size})
}

/// A trade on BTC-USD between alice (maker, sell) and bob (taker, buy).
async fn trade(alice: &mut Client, bob: &mut Client, price: &str) {
    let r = alice.request(place("sell", price, "0.01")).await;
    assert_eq!(r["accepted"], true, "{r}");
    let r = bob.request(place("buy", price, "0.01")).await;
    assert_eq!(r["order"]["status"], "done", "{r}");
}

fn field_names(error: &Value) -> Vec<String> {
    error["fields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["field"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn hello_ping_and_instruments() {
    let rig = Rig::start(limits()).await;
    let mut c = rig.client().await;
    assert_eq!(c.hello["limits"]["max_message_size"], 1 << 20);
    assert_eq!(c.hello["limits"]["messages_per_second"], 50);
    let pong = c.request(json!({"op":"ping","id":41})).await;
    assert_eq!(pong["type"], "pong");
    assert!(pong["ts"].as_u64().unwrap() > 1_700_000_000_000_000_000);
    let list = c.request(json!({"op":"instruments"})).await;
    let btc = &list["instruments"][0];
    assert_eq!(
        (btc["symbol"].as_str(), btc["tick_size"].as_str()),
        (Some("BTC-USD"), Some("0.01"))
    );
    assert_eq!(btc["band_low"], "58500.00");
    rig.stop().await;
}

/// Applies depth levels `[[price, size], ...]` to one side of a book keyed by integer price.
fn apply(side: &mut BTreeMap<i128, (String, String)>, levels: &Value) {
    for level in levels.as_array().unwrap() {
        let (price, size) = (level[0].as_str().unwrap(), level[1].as_str().unwrap());
        let key: i128 = price.replace('.', "").parse().unwrap();
        if size.bytes().all(|b| b == b'0' || b == b'.') {
            side.remove(&key);
        } else {
            side.insert(key, (price.to_string(), size.to_string()));
        }
    }
}

/// The depth checksum as docs/feeds.md defines it.
fn checksum(
    bids: &BTreeMap<i128, (String, String)>,
    asks: &BTreeMap<i128, (String, String)>,
) -> u32 {
    let digits = |s: &str| s.replace('.', "").trim_start_matches('0').to_string();
    let mut text = String::new();
    for (price, size) in asks.values().take(10) {
        text += &digits(price);
        text += &digits(size);
    }
    for (price, size) in bids.values().rev().take(10) {
        text += &digits(price);
        text += &digits(size);
    }
    crc32fast::hash(text.as_bytes())
}

#[tokio::test]
async fn depth_starts_with_a_snapshot_and_updates_keep_the_checksum() {
    let rig = Rig::start(limits()).await;
    let mut alice = rig.trader(ALICE).await;
    alice.request(place("sell", "65010.00", "0.5")).await;
    let mut watcher = rig.client().await;
    let r = watcher
        .request(json!({"op":"subscribe","channels":[{"name":"depth","instrument":"BTC-USD"}]}))
        .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(
        r["channels"],
        json!([{"name":"depth","instrument":"BTC-USD"}])
    );
    let snapshot = watcher.recv().await;
    assert_eq!(
        (
            &snapshot["type"],
            &snapshot["channel"],
            &snapshot["prev_seq"]
        ),
        (&json!("snapshot"), &json!("depth"), &json!(0))
    );
    let (mut bids, mut asks) = (BTreeMap::new(), BTreeMap::new());
    apply(&mut bids, &snapshot["bids"]);
    apply(&mut asks, &snapshot["asks"]);
    assert_eq!(asks.len(), 1);
    assert_eq!(
        checksum(&bids, &asks),
        snapshot["checksum"].as_u64().unwrap() as u32
    );
    let mut last = snapshot["seq"].as_u64().unwrap();
    for price in ["64990.00", "64995.50", "65005.00"] {
        alice.request(place("buy", price, "0.25")).await;
    }
    alice.request(place("sell", "65010.00", "0.1")).await;
    for _ in 0..4 {
        let update = watcher.recv().await;
        assert_eq!(
            (&update["type"], &update["channel"]),
            (&json!("update"), &json!("depth"))
        );
        assert_eq!(
            update["prev_seq"].as_u64().unwrap(),
            last,
            "no gap: {update}"
        );
        last = update["seq"].as_u64().unwrap();
        apply(&mut bids, &update["bids"]);
        apply(&mut asks, &update["asks"]);
        assert_eq!(
            checksum(&bids, &asks),
            update["checksum"].as_u64().unwrap() as u32
        );
    }
    assert_eq!((bids.len(), asks[&6501000].1.as_str()), (3, "0.60000"));
    rig.stop().await;
}

#[tokio::test]
async fn every_channel_delivers_after_its_subscribed_reply() {
    let rig = Rig::start(limits()).await;
    let mut alice = rig.trader(ALICE).await;
    let mut bob = rig.trader(BOB).await;
    let mut watcher = rig.trader(ALICE).await;
    let r = watcher
        .request(json!({"op":"subscribe","channels":[
            {"name":"ticker","instrument":"BTC-USD"},{"name":"trades","instrument":"BTC-USD"},
            {"name":"candles","instrument":"BTC-USD","interval":"1s"},{"name":"l3","instrument":"BTC-USD"},
            {"name":"orders"}]}))
        .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(
        r["channels"][2],
        json!({"name":"candles","instrument":"BTC-USD","interval":"1s"})
    );
    trade(&mut alice, &mut bob, "65000.00").await;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 6 {
        let m = watcher.recv().await;
        let kind = match (m["type"].as_str().unwrap(), m["channel"].as_str()) {
            ("order", _) => "order",
            ("snapshot", Some("orders")) => "orders snapshot",
            ("snapshot", Some("l3")) => "l3 snapshot",
            ("ticker", _) => "ticker",
            ("trade", _) => {
                assert_eq!(
                    (m["price"].as_str(), m["side"].as_str()),
                    (Some("65000.00"), Some("buy"))
                );
                "trade"
            }
            ("candle", _) => "candle",
            _ => continue,
        };
        seen.insert(kind);
    }
    assert!(
        seen.contains("l3 snapshot") && seen.contains("orders snapshot"),
        "{seen:?}"
    );
    rig.stop().await;
}

#[tokio::test]
async fn a_decimal_takes_one_form() {
    let rig = Rig::start(limits()).await;
    let mut alice = rig.trader(ALICE).await;
    for (id, price, size) in [
        (1, ".5", "0.01"),
        (2, "65100.", "0.01"),
        (3, "65100.00", "+0.01"),
    ] {
        alice
            .send(json!({"op":"place","id":id,"instrument":"BTC-USD","side":"sell","price":price,"size":size}))
            .await;
        let reply = loop {
            let m = alice.recv().await;
            if m["id"] == id {
                break m;
            }
        };
        assert_eq!(reply["code"], "invalid_request", "{reply}");
        let field = if id == 3 { "size" } else { "price" };
        assert_eq!(field_names(&reply), [field], "{reply}");
    }
    rig.stop().await;
}

#[tokio::test]
async fn every_order_command_gets_exactly_one_reply_in_order() {
    one_reply_each_in_order(1).await;
}

/// On two shards the amend and the cancels by client order id go to both (one holds the
/// order): each still gets one reply, in order, behind and ahead of commands of one shard.
#[tokio::test]
async fn every_order_command_gets_exactly_one_reply_in_order_on_two_shards() {
    one_reply_each_in_order(2).await;
}

async fn one_reply_each_in_order(shards: usize) {
    let rig = Rig::start_sharded(limits(), shards).await;
    let mut alice = rig.trader(ALICE).await;
    // Sent back to back without waiting: a mix of good, malformed and engine-rejected commands.
    let commands = [
        json!({"op":"place","id":10,"instrument":"BTC-USD","side":"sell","price":"65100.00","size":"0.01","client_order_id":7}),
        json!({"op":"place","id":11,"instrument":"BTC-USD","side":"sell","price":"65100.001","size":"0.01"}),
        json!({"op":"place","id":12,"instrument":"BTC-USD","side":"buy","price":"65100.00","size":"0.01","post_only":true}),
        json!({"op":"amend","id":13,"client_order_id":7,"instrument":"BTC-USD","size":"0.005"}),
        json!({"op":"cancel","id":14,"order_id":"99999"}),
        json!({"op":"place","id":15,"instrument":"BTC-USD","side":"sell","price":"65200.00","size":"0.02"}),
        json!({"op":"mass_cancel","id":16,"instrument":"BTC-USD","side":"sell"}),
        json!({"op":"cancel","id":17,"client_order_id":7}),
    ];
    for c in &commands {
        alice.send(c.clone()).await;
    }
    let mut replies = Vec::new();
    while replies.len() < commands.len() {
        let m = alice.recv().await;
        if m.get("id").is_some_and(|id| !id.is_null()) {
            replies.push(m);
        }
    }
    let ids: Vec<u64> = replies.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [10, 11, 12, 13, 14, 15, 16, 17]);
    let placed = &replies[0];
    assert_eq!(
        (&placed["type"], &placed["op"], &placed["accepted"]),
        (&json!("result"), &json!("place"), &json!(true))
    );
    assert_eq!(placed["order"]["status"], "resting");
    assert_eq!(placed["order"]["client_order_id"], 7);
    assert_eq!(placed["order"]["price"], "65100.00");
    assert_eq!(
        (&replies[1]["type"], &replies[1]["code"]),
        (&json!("error"), &json!("invalid_request"))
    );
    assert_eq!(field_names(&replies[1]), ["price"]);
    assert_eq!(
        (&replies[2]["accepted"], &replies[2]["reason"]),
        (&json!(false), &json!("post_only_would_cross"))
    );
    assert_eq!(
        (&replies[3]["op"], &replies[3]["accepted"]),
        (&json!("amend"), &json!(true))
    );
    assert_eq!(replies[3]["order"]["remaining_size"], "0.00500");
    assert_eq!(
        (&replies[4]["accepted"], &replies[4]["reason"]),
        (&json!(false), &json!("unknown_order"))
    );
    assert_eq!(replies[6]["op"], "mass_cancel");
    let cancelled = replies[6]["cancelled"].as_array().unwrap();
    assert_eq!(cancelled.len(), 2, "{}", replies[6]);
    assert!(cancelled.contains(&placed["order"]["order_id"]));
    // The mass cancel took order 7: cancelling it again is the engine's unknown_order.
    assert_eq!(replies[7]["reason"], "unknown_order");
    rig.stop().await;
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order_and_no_pong_overtakes_a_result() {
    let rig = Rig::start(WsLimits {
        messages_per_second: 1_000_000,
        burst: 1_000_000,
        ..limits()
    })
    .await;
    let mut alice = rig.trader(ALICE).await;
    // Everything sent at once: orders (submitted as they arrive, answered when the engine is
    // done with them) between pings and a subscribe (answered at once, but only in turn).
    let mut sent = Vec::new();
    for i in 0..100u64 {
        let price = format!("{}.00", 60_000 + i);
        sent.push(
            alice
                .send(
                    json!({"op":"place","instrument":"BTC-USD","side":"buy","price":price,
                             "size":"0.01","client_order_id":i + 1}),
                )
                .await,
        );
        sent.push(alice.send(json!({"op":"ping"})).await);
    }
    sent.push(
        alice
            .send(json!({"op":"subscribe","channels":[{"name":"orders"}]}))
            .await,
    );
    sent.push(alice.send(json!({"op":"mass_cancel"})).await);
    let mut answered = Vec::new();
    let mut types = Vec::new();
    while answered.len() < sent.len() {
        let m = alice.recv().await;
        if let Some(id) = m["id"].as_u64() {
            answered.push(id);
            types.push(m["type"].as_str().unwrap().to_string());
            if m["type"] == "result" && m["op"] == "place" {
                assert_eq!(m["accepted"], true, "{m}");
            }
        }
    }
    assert_eq!(answered, sent, "one answer per request, in request order");
    for pair in types[..200].chunks(2) {
        assert_eq!(pair, ["result", "pong"]);
    }
    assert_eq!(types[200..], ["subscribed", "result"]);
    rig.stop().await;
}

#[tokio::test]
async fn a_ticker_carries_the_engine_timestamp_of_the_command_that_moved_it() {
    let rig = Rig::start(limits()).await;
    let mut watcher = rig.client().await;
    let r = watcher
        .request(json!({"op":"subscribe","channels":[{"name":"ticker","instrument":"BTC-USD"}]}))
        .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    let mut alice = rig.trader(ALICE).await;
    let before = ticker_servers::market::now_ns();
    let placed = alice.request(place("sell", "65300.00", "0.01")).await;
    let ticker = watcher
        .recv_where(|m| m["type"] == "ticker" && m["ask"] == "65300.00")
        .await;
    let after = ticker_servers::market::now_ns();
    let ts = ticker["ts"].as_u64().unwrap();
    // Stamped by the engine when it took the command: after it was sent, before it arrived,
    // and the very timestamp of the command's own result.
    assert!(before <= ts && ts <= after, "{before} <= {ts} <= {after}");
    assert_eq!(ts, placed["ts"].as_u64().unwrap(), "{placed}");
    rig.stop().await;
}

#[tokio::test]
async fn orders_of_a_connection_that_cancels_on_disconnect_are_cancelled_when_it_goes() {
    let rig = Rig::start(limits()).await;
    let mut watcher = rig.trader(ALICE).await;
    let r = watcher
        .request(json!({"op":"subscribe","channels":[{"name":"orders"}]}))
        .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    let mut keeper = rig.trader(ALICE).await;
    let kept = keeper.request(place("sell", "65300.00", "0.01")).await;
    let kept = kept["order"]["order_id"].clone();
    let mut leaver = rig.client().await;
    let r = leaver
        .request(json!({"op":"auth","token":ALICE,"cancel_on_disconnect":true}))
        .await;
    assert_eq!(
        (&r["type"], &r["cancel_on_disconnect"]),
        (&json!("authenticated"), &json!(true))
    );
    let placed = leaver.request(place("sell", "65400.00", "0.01")).await;
    assert_eq!(placed["order"]["status"], "resting", "{placed}");
    let gone = placed["order"]["order_id"].clone();
    // The connection drops without a close handshake, as a crashed client's would.
    drop(leaver);
    let done = watcher
        .recv_where(|m| m["event"] == "done" && m["order_id"] == gone)
        .await;
    assert_eq!(done["reason"], "session_closed", "{done}");
    // The other connection's order, placed without the option, is still in the book.
    let r = keeper.request(json!({"op":"cancel","order_id":kept})).await;
    assert_eq!(r["accepted"], true, "{r}");
    rig.stop().await;
}

#[tokio::test]
async fn bad_messages_get_typed_errors_and_the_connection_stays() {
    let rig = Rig::start(limits()).await;
    let mut c = rig.client().await;
    c.send_text("{not json".into()).await;
    let e = c.recv().await;
    assert_eq!(
        (&e["type"], &e["code"]),
        (&json!("error"), &json!("bad_json"))
    );
    guard("a send", c.ws.send(Message::Binary(vec![1, 2, 3].into())))
        .await
        .unwrap();
    assert_eq!(c.recv().await["code"], "bad_json");
    let e = c.request(json!({"op":"teleport","id":3})).await;
    assert_eq!((&e["code"], &e["id"]), (&json!("unknown_op"), &json!(3)));
    c.send_text(r#"{"id":4}"#.into()).await;
    let e = c.reply(4).await;
    assert_eq!(
        (&e["code"], field_names(&e)),
        (&json!("invalid_request"), vec!["op".to_string()])
    );
    let e = c
        .request(json!({"op":"subscribe","channels":[{"name":"depth","instrument":"DOGE-USD"},
            {"name":"candles","instrument":"BTC-USD","interval":"5m"},{"name":"news","instrument":"BTC-USD"}]}))
        .await;
    assert_eq!(e["code"], "invalid_request");
    assert_eq!(
        field_names(&e),
        [
            "channels[0].instrument",
            "channels[1].interval",
            "channels[2].name"
        ]
    );
    let e = c
        .request(json!({"op":"subscribe","channels":"depth"}))
        .await;
    assert_eq!(field_names(&e), ["channels"]);
    let e = c.request(json!({"op":"ping","extra":1})).await;
    assert_eq!(field_names(&e), ["extra"]);
    // Order fields: every bad one at once, decimals as numbers named too.
    let mut alice = rig.trader(ALICE).await;
    let e = alice
        .request(json!({"op":"place","instrument":"BTC-USD","side":"up","price":65000,"size":"0.000001","post_onyl":true}))
        .await;
    assert_eq!(e["code"], "invalid_request");
    assert_eq!(field_names(&e), ["post_onyl", "side", "price", "size"]);
    let e = alice.request(json!({"op":"cancel"})).await;
    assert_eq!(field_names(&e), ["order"]);
    let e = alice
        .request(json!({"op":"amend","order_id":"1","instrument":"BTC-USD"}))
        .await;
    assert_eq!(field_names(&e), ["price"]);
    // Still connected and answering.
    assert_eq!(c.request(json!({"op":"ping"})).await["type"], "pong");
    rig.stop().await;
}

#[tokio::test]
async fn auth_failures_are_errors() {
    let rig = Rig::start(limits()).await;
    let mut c = rig.client().await;
    let e = c.request(place("buy", "65000.00", "0.01")).await;
    assert_eq!(
        (&e["code"], &e["op"]),
        (&json!("not_authenticated"), &json!("place"))
    );
    let e = c
        .request(json!({"op":"subscribe","channels":[{"name":"orders"}]}))
        .await;
    assert_eq!(e["code"], "not_authenticated");
    assert_eq!(field_names(&e), ["channels[0].name"]);
    let e = c.request(json!({"op":"auth","token":"guess"})).await;
    assert_eq!(e["code"], "auth_failed");
    let e = c.request(json!({"op":"auth"})).await;
    assert_eq!(field_names(&e), ["token"]);
    let ok = c.request(json!({"op":"auth","token":ALICE})).await;
    assert_eq!(
        (&ok["type"], &ok["account"]),
        (&json!("authenticated"), &json!(1))
    );
    let e = c.request(json!({"op":"auth","token":BOB})).await;
    assert_eq!(e["code"], "already_authenticated");
    let again = c.request(json!({"op":"auth","token":ALICE})).await;
    assert_eq!(again["type"], "authenticated");
    rig.stop().await;
}

const JWT_SECRET: &str = "the identity service's 32-byte key";

#[tokio::test]
async fn a_jwt_signed_with_the_configured_secret_authenticates_its_account() {
    let rig = Rig::start(limits()).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let key = ticker_servers::jwt::Hs256::new(JWT_SECRET.as_bytes());
    let mut c = rig.client().await;
    let forged = ticker_servers::jwt::Hs256::new(b"not the identity service's key!!")
        .sign(&json!({"sub": "77", "exp": exp}));
    let e = c.request(json!({"op":"auth","token":forged})).await;
    assert_eq!(e["code"], "auth_failed");
    let token = key.sign(&json!({"sub": "77", "exp": exp}));
    let ok = c.request(json!({"op":"auth","token":token})).await;
    assert_eq!(
        (&ok["type"], &ok["account"]),
        (&json!("authenticated"), &json!(77))
    );
    // A risk token with no account authenticates with its role and cannot place orders.
    let mut desk = rig.client().await;
    let risk = key.sign(&json!({"role": "risk", "exp": exp}));
    let ok = desk.request(json!({"op":"auth","token":risk})).await;
    assert_eq!(
        ok,
        json!({"type":"authenticated","id":ok["id"],"role":"risk"})
    );
    let e = desk.request(place("buy", "65000.00", "0.01")).await;
    assert_eq!(e["code"], "not_authenticated");
    assert!(
        e["message"].as_str().unwrap().contains("needs an account"),
        "{e}"
    );
    let e = desk.request(json!({"op":"auth","token":ALICE})).await;
    assert_eq!(e["code"], "already_authenticated");
    rig.stop().await;
}

#[tokio::test]
async fn an_account_cannot_touch_another_accounts_orders() {
    let rig = Rig::start(limits()).await;
    let mut alice = rig.trader(ALICE).await;
    let mut bob = rig.trader(BOB).await;
    let placed = alice.request(place("buy", "64000.00", "0.01")).await;
    let order_id = placed["order"]["order_id"].clone();
    let e = bob
        .request(json!({"op":"cancel","order_id":order_id}))
        .await;
    assert_eq!(
        (&e["type"], &e["code"]),
        (&json!("error"), &json!("permission_denied"))
    );
    let e = bob
        .request(
            json!({"op":"amend","order_id":order_id,"instrument":"BTC-USD","price":"64001.00"}),
        )
        .await;
    assert_eq!(e["code"], "permission_denied");
    // Bob's mass cancel covers only his own orders.
    let r = bob.request(json!({"op":"mass_cancel"})).await;
    assert_eq!(r["cancelled"], json!([]));
    let r = alice
        .request(json!({"op":"cancel","order_id":order_id}))
        .await;
    assert_eq!(
        (&r["accepted"], &r["order"]["done_reason"]),
        (&json!(true), &json!("cancelled"))
    );
    rig.stop().await;
}

#[tokio::test]
async fn resuming_from_seq_replays_what_was_missed_without_a_gap() {
    let rig = Rig::start(limits()).await;
    let mut alice = rig.trader(ALICE).await;
    let mut bob = rig.trader(BOB).await;
    let mut first = rig.trader(ALICE).await;
    first
        .request(json!({"op":"subscribe","channels":[{"name":"trades","instrument":"BTC-USD"},{"name":"orders"}]}))
        .await;
    trade(&mut alice, &mut bob, "65000.00").await;
    // The trade; the orders snapshot, then alice's accepted, rested, fill, done (seq 4).
    let (mut trade_seq, mut order_seq) = (0, 0);
    while trade_seq == 0 || order_seq < 4 {
        let m = first.recv().await;
        match (m["type"].as_str(), m["channel"].as_str()) {
            (Some("trade"), _) => trade_seq = m["seq"].as_u64().unwrap(),
            (Some("order"), _) | (_, Some("orders")) => order_seq = m["seq"].as_u64().unwrap(),
            _ => {}
        }
    }
    drop(first);
    // Missed while disconnected.
    trade(&mut alice, &mut bob, "65001.00").await;
    trade(&mut alice, &mut bob, "65002.00").await;
    let mut again = rig.trader(ALICE).await;
    let r = again
        .request(json!({"op":"subscribe","channels":[
            {"name":"trades","instrument":"BTC-USD","from_seq":trade_seq},{"name":"orders","from_seq":order_seq}]}))
        .await;
    assert_eq!(r["channels"][0]["from_seq"], trade_seq);
    let mut last_trade = trade_seq;
    let mut last_order = order_seq;
    let mut prices = Vec::new();
    while prices.len() < 2 || last_order < order_seq + 8 {
        let m = again.recv().await;
        match m["type"].as_str() {
            Some("trade") => {
                assert_eq!(m["prev_seq"].as_u64().unwrap(), last_trade, "no gap: {m}");
                last_trade = m["seq"].as_u64().unwrap();
                prices.push(m["price"].as_str().unwrap().to_string());
            }
            Some("order") => {
                assert_eq!(m["prev_seq"].as_u64().unwrap(), last_order, "no gap: {m}");
                last_order = m["seq"].as_u64().unwrap();
            }
            other => panic!("resumed streams replay updates only, got {other:?}: {m}"),
        }
    }
    assert_eq!(prices, ["65001.00", "65002.00"]);
    rig.stop().await;
}

/// Two shards (BTC-USD on one, ETH-USD on the other): an account's order updates from both
/// come as one chain of `seq`s, and a mass cancel of every instrument answers once with the
/// orders of both.
#[tokio::test]
async fn an_accounts_updates_from_two_shards_are_one_stream() {
    let rig = Rig::start_sharded(limits(), 2).await;
    let mut alice = rig.trader(ALICE).await;
    // Another of alice's connections watches (a request skips what is not its reply).
    let mut watch = rig.trader(ALICE).await;
    let r = watch
        .request(json!({"op":"subscribe","channels":[{"name":"orders"}]}))
        .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    let mut ids = Vec::new();
    for (instrument, price) in [("BTC-USD", "60000.00"), ("ETH-USD", "3000.00")] {
        for _ in 0..2 {
            let r = alice
                .request(json!({"op":"place","instrument":instrument,"side":"buy","price":price,"size":"0.01"}))
                .await;
            assert_eq!(r["accepted"], true, "{r}");
            ids.push(r["order"]["order_id"].clone());
        }
    }
    let r = alice.request(json!({"op":"mass_cancel"})).await;
    let mut cancelled = r["cancelled"].as_array().unwrap().clone();
    let key = |v: &Value| v.as_str().unwrap().to_string();
    cancelled.sort_by_key(key);
    ids.sort_by_key(key);
    assert_eq!(cancelled, ids, "{r}");
    // Four orders accepted, rested and done after the snapshot: one chain.
    let mut last: Option<u64> = None;
    let mut done = 0;
    while done < 4 {
        let m = watch.recv().await;
        if m["type"] != "order" {
            continue;
        }
        let seq = m["seq"].as_u64().unwrap();
        if let Some(last) = last {
            assert_eq!(m["prev_seq"].as_u64().unwrap(), last, "no gap: {m}");
            assert_eq!(seq, last + 1, "{m}");
        }
        last = Some(seq);
        if m["event"] == "done" {
            done += 1;
        }
    }
    rig.stop().await;
}

#[tokio::test]
async fn trades_resumed_beyond_the_history_get_a_gap_notice() {
    let hub = HubConfig {
        history: 2,
        ..HubConfig::default()
    };
    let rig = Rig::start_with(limits(), hub).await;
    let mut alice = rig.trader(ALICE).await;
    let mut bob = rig.trader(BOB).await;
    let mut watcher = rig.client().await;
    watcher
        .request(json!({"op":"subscribe","channels":[{"name":"trades","instrument":"BTC-USD"}]}))
        .await;
    trade(&mut alice, &mut bob, "65000.00").await;
    let first = watcher.recv().await["seq"].as_u64().unwrap();
    for price in ["65001.00", "65002.00", "65003.00"] {
        trade(&mut alice, &mut bob, price).await;
    }
    let r = watcher
        .request(json!({"op":"subscribe","channels":[{"name":"trades","instrument":"BTC-USD","from_seq":first}]}))
        .await;
    assert_eq!(r["type"], "subscribed");
    // Restarted: the old subscription's messages all came before `subscribed`.
    let gap = watcher.recv().await;
    assert_eq!(
        (&gap["type"], &gap["channel"], &gap["instrument"]),
        (&json!("gap"), &json!("trades"), &json!("BTC-USD"))
    );
    assert_eq!(gap["from_seq"], first);
    let resumed_after = gap["resumed_after"].as_u64().unwrap();
    let next = watcher.recv().await;
    assert_eq!(
        (&next["price"], next["prev_seq"].as_u64().unwrap()),
        (&json!("65002.00"), resumed_after)
    );
    assert_eq!(watcher.recv().await["price"], "65003.00");
    rig.stop().await;
}

#[tokio::test]
async fn unsubscribed_channels_stop_and_restarts_begin_with_a_snapshot() {
    let rig = Rig::start(limits()).await;
    let mut alice = rig.trader(ALICE).await;
    let mut bob = rig.trader(BOB).await;
    let mut watcher = rig.client().await;
    watcher
        .request(json!({"op":"subscribe","channels":[{"name":"depth","instrument":"BTC-USD"},{"name":"trades","instrument":"BTC-USD"}]}))
        .await;
    assert_eq!(watcher.recv().await["type"], "snapshot");
    let r = watcher
        .request(json!({"op":"unsubscribe","channels":[{"name":"trades","instrument":"BTC-USD"}]}))
        .await;
    assert_eq!(r["type"], "unsubscribed");
    trade(&mut alice, &mut bob, "65000.00").await;
    // Depth moved twice (rest, then taken); no trade may follow `unsubscribed`.
    for _ in 0..2 {
        let m = watcher.recv().await;
        assert_eq!(m["channel"], "depth", "{m}");
    }
    // Subscribing again to depth (a client that failed its checksum) starts from a snapshot;
    // nothing came between.
    watcher
        .send(
            json!({"op":"subscribe","id":99,"channels":[{"name":"depth","instrument":"BTC-USD"}]}),
        )
        .await;
    let r = watcher.recv().await;
    assert_eq!((&r["type"], &r["id"]), (&json!("subscribed"), &json!(99)));
    let m = watcher.recv().await;
    assert_eq!(
        (&m["type"], &m["prev_seq"]),
        (&json!("snapshot"), &json!(0))
    );
    let ping = watcher.request(json!({"op":"ping"})).await;
    assert_eq!(ping["type"], "pong");
    rig.stop().await;
}

#[tokio::test]
async fn an_oversize_message_closes_with_1009() {
    let rig = Rig::start(WsLimits {
        max_message_size: 1024,
        ..limits()
    })
    .await;
    let mut c = rig.client().await;
    // Just under the limit is a normal message.
    let padded = format!(r#"{{"op":"ping","id":1,"pad":"{}"}}"#, "x".repeat(900));
    c.send_text(padded).await;
    assert_eq!(c.recv().await["code"], "invalid_request");
    c.send_text(format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(2000)))
        .await;
    let (code, reason) = c.close_frame().await;
    assert_eq!(code, CloseCode::Size);
    assert_eq!(reason, "message too big: limit 1024 bytes");
    rig.stop().await;
}

/// A client frame: FIN and opcode in `first`, masked as RFC 6455 requires of clients.
fn masked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    ticker_servers::ws::frame::client_frame(first, payload, [0x37, 0xfa, 0x21, 0x3d]).to_vec()
}

/// Text no deflater squeezes much: a 3 MiB message compresses to about half.
fn noisy_text(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"0123456789abcdef"[(x >> 60) as usize]
        })
        .collect()
}

/// A client still sending `text` in 16 fragments when the server writes its close (1009 for a
/// message too big, 1007 for invalid UTF-8): the server reads on and drops the rest until the
/// client's close frame, so the close frame reaches the client (closing with the client's data
/// unread would make the kernel reset the connection and lose it), and the connection then
/// ends with a clean FIN.
async fn a_fragmented_message_gets_its_close_frame(
    text: Vec<u8>,
    offer_deflate: bool,
    expected: (u16, &str),
) {
    let rig = Rig::start(limits()).await;
    let head = if offer_deflate {
        UPGRADE.replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        )
    } else {
        UPGRADE.to_string()
    };
    let (response, tcp) = raw_request(rig.addr, &head).await;
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    assert_eq!(
        response.contains("permessage-deflate"),
        offer_deflate,
        "{response}"
    );
    let (payload, rsv1) = if offer_deflate {
        let z = MessageDeflater::new(15, true, 6).compress(&text);
        (z.to_vec(), 0x40)
    } else {
        (text, 0)
    };
    let fragments: Vec<&[u8]> = payload.chunks(payload.len().div_ceil(16)).collect();
    assert_eq!(fragments.len(), 16);
    assert!(fragments.iter().all(|f| f.len() <= 200_000));
    let (mut rx, mut tx) = tcp.into_split();
    // Every fragment is written, whatever the server has said meanwhile (the write of all of
    // them completes only if the server keeps reading after its close).
    for (i, f) in fragments.iter().enumerate() {
        let fin = if i + 1 == fragments.len() { 0x80 } else { 0 };
        let opcode = if i == 0 { 0x1 | rsv1 } else { 0x0 };
        guard(
            "a fragment written",
            tx.write_all(&masked_frame(fin | opcode, f)),
        )
        .await
        .expect("the server reads the whole message");
    }
    let mut rx_frames = {
        let mut buffered = Vec::new();
        guard("the server's frames", async {
            let mut chunk = vec![0u8; 64 << 10];
            // Until the close frame's header and payload are in.
            loop {
                let n = rx
                    .read(&mut chunk)
                    .await
                    .expect("no reset before the close frame");
                assert!(n > 0, "EOF before the close frame: {buffered:?}");
                buffered.extend_from_slice(&chunk[..n]);
                if let Some(close) = find_close(&buffered) {
                    return close;
                }
            }
        })
        .await
    };
    let code = u16::from_be_bytes([rx_frames[0], rx_frames[1]]);
    assert_eq!(
        (code, String::from_utf8(rx_frames.split_off(2)).unwrap()),
        (expected.0, expected.1.to_string())
    );
    // The client answers the close; the server ends the connection with a FIN.
    tx.write_all(&masked_frame(0x88, &code.to_be_bytes()))
        .await
        .unwrap();
    let mut rest = Vec::new();
    guard("the end of the connection", rx.read_to_end(&mut rest))
        .await
        .expect("a clean end, not a reset");
    assert!(rest.is_empty(), "nothing after the close frame: {rest:?}");
    rig.stop().await;
}

/// The payload of the first close frame in `bytes` (unmasked server frames), once whole.
fn find_close(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let (first, len7) = (bytes[at], (bytes[at + 1] & 0x7f) as usize);
        let (len, head) = match len7 {
            126 if at + 4 <= bytes.len() => (
                u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize,
                4,
            ),
            127 if at + 10 <= bytes.len() => (
                u64::from_be_bytes(bytes[at + 2..at + 10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n, 2),
        };
        if at + head + len > bytes.len() {
            return None;
        }
        if first & 0x0f == 0x8 {
            return Some(bytes[at + head..at + head + len].to_vec());
        }
        at += head + len;
    }
    None
}

const TOO_BIG: (u16, &str) = (1009, "message too big: limit 1048576 bytes");

#[tokio::test]
async fn a_client_still_sending_an_oversize_message_gets_the_1009_close_frame() {
    a_fragmented_message_gets_its_close_frame(noisy_text(3 << 20), false, TOO_BIG).await;
}

#[tokio::test]
async fn a_client_still_sending_an_oversize_compressed_message_gets_the_1009_close_frame() {
    let inflates_past = (
        1009,
        "compressed message inflates past the 1048576-byte limit",
    );
    a_fragmented_message_gets_its_close_frame(noisy_text(3 << 20), true, inflates_past).await;
}

#[tokio::test]
async fn a_client_still_sending_invalid_utf8_gets_the_1007_close_frame() {
    // 800 KB, within the size limit, with a byte no UTF-8 text holds in its second fragment.
    let mut text = noisy_text(800_000);
    text[60_000] = 0xff;
    let invalid = (1007, "invalid UTF-8 in a text message");
    a_fragmented_message_gets_its_close_frame(text.clone(), false, invalid).await;
    a_fragmented_message_gets_its_close_frame(text, true, invalid).await;
}

#[tokio::test]
async fn subscriptions_are_limited_per_connection() {
    let rig = Rig::start(WsLimits {
        max_subscriptions: 2,
        ..limits()
    })
    .await;
    let mut c = rig.client().await;
    let ticker = |symbol: &str| json!({"name":"ticker","instrument":symbol});
    let e = c
        .request(json!({"op":"subscribe","channels":[ticker("BTC-USD"),ticker("ETH-USD"),ticker("SOL-USD")]}))
        .await;
    assert_eq!(
        (&e["code"], field_names(&e)),
        (&json!("invalid_request"), vec!["channels".to_string()])
    );
    let r = c
        .request(json!({"op":"subscribe","channels":[ticker("BTC-USD"),ticker("ETH-USD")]}))
        .await;
    assert_eq!(r["type"], "subscribed");
    let e = c
        .request(json!({"op":"subscribe","channels":[ticker("SOL-USD")]}))
        .await;
    assert_eq!(e["code"], "too_many_subscriptions");
    // Restarting a held channel takes no new slot.
    let r = c
        .request(json!({"op":"subscribe","channels":[ticker("ETH-USD")]}))
        .await;
    assert_eq!(r["type"], "subscribed");
    c.request(json!({"op":"unsubscribe","channels":[ticker("BTC-USD")]}))
        .await;
    let r = c
        .request(json!({"op":"subscribe","channels":[ticker("SOL-USD")]}))
        .await;
    assert_eq!(r["type"], "subscribed");
    rig.stop().await;
}

#[tokio::test]
async fn over_rate_messages_are_refused_and_sustained_abuse_closes_with_1008() {
    let rig = Rig::start(WsLimits {
        messages_per_second: 2,
        burst: 3,
        rate_limit_close_after: 2,
        ..limits()
    })
    .await;
    let mut alice = rig.trader(ALICE).await; // the auth used one token of the burst
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(alice.send(json!({"op":"ping"})).await);
    }
    let limited = alice.send(place("buy", "64000.00", "0.01")).await;
    let second = alice.send(json!({"op":"ping"})).await;
    for id in ids {
        assert_eq!(alice.reply(id).await["type"], "pong");
    }
    let e = alice.reply(limited).await;
    assert_eq!(
        (&e["code"], &e["op"]),
        (&json!("rate_limited"), &json!("place"))
    );
    assert_eq!(alice.reply(second).await["code"], "rate_limited");
    // The refused order was not executed: alice has no open order.
    let mut orders = rig.market.accounts().subscribe(1, None);
    let snapshot = orders
        .try_recv()
        .unwrap()
        .expect("the open-orders snapshot");
    let snapshot: Value = serde_json::from_slice(snapshot.message().unwrap().json()).unwrap();
    assert_eq!(snapshot["orders"], json!([]));
    alice.send(json!({"op":"ping"})).await;
    let (code, reason) = alice.close_frame().await;
    assert_eq!(code, CloseCode::Policy);
    assert!(
        reason.starts_with("rate limit: 3 messages over 2/s"),
        "{reason}"
    );
    rig.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_get_503_before_the_upgrade() {
    let rig = Rig::start(WsLimits {
        max_connections: 1,
        ..limits()
    })
    .await;
    let _first = rig.client().await;
    let tcp = TcpStream::connect(rig.addr).await.unwrap();
    let refused = tokio_tungstenite::client_async(format!("ws://{}/ws", rig.addr), tcp).await;
    match refused {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("a 503, got {other:?}"),
    }
    assert_eq!(rig.server.as_ref().unwrap().connections(), 1);
    rig.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_with_1001() {
    let rig = Rig::start(WsLimits {
        idle_timeout: Duration::from_millis(150),
        ..limits()
    })
    .await;
    let mut c = rig.client().await;
    let (code, reason) = c.close_frame().await;
    assert_eq!(code, CloseCode::Away);
    assert_eq!(reason, "idle: no message for 0.15 s");
    rig.stop().await;
}

#[tokio::test]
async fn a_server_shutdown_closes_connections_with_1001() {
    let mut rig = Rig::start(limits()).await;
    let mut c = rig.client().await;
    let server = rig.server.take().unwrap();
    let (closed, ()) = tokio::join!(c.close_frame(), server.shutdown(Duration::from_secs(2)));
    assert_eq!(
        closed,
        (CloseCode::Away, "server shutting down".to_string())
    );
    rig.stop().await;
}

/// A raw client: the upgrade by hand, then frames read off the socket with nothing answered.
async fn raw_request(addr: std::net::SocketAddr, head: &str) -> (String, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        let n = guard("a response", tcp.read(&mut byte)).await.unwrap();
        assert_eq!(n, 1, "connection closed mid-response: {response:?}");
        response.push(byte[0]);
    }
    (String::from_utf8(response).unwrap(), tcp)
}

const UPGRADE: &str =
    "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
     Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// One server frame: (opcode, payload). Server frames are not masked.
async fn raw_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    guard("a frame", tcp.read_exact(&mut head)).await.unwrap();
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            tcp.read_exact(&mut b).await.unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            tcp.read_exact(&mut b).await.unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    (head[0] & 0x0f, payload)
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_with_1008() {
    let rig = Rig::start(WsLimits {
        ping_interval: Duration::from_millis(40),
        max_missed_pongs: 2,
        ..limits()
    })
    .await;
    let (head, mut tcp) = raw_request(rig.addr, UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    let mut pings = 0;
    loop {
        match raw_frame(&mut tcp).await {
            (0x1, _) => continue, // hello
            (0x9, payload) => {
                assert_eq!(payload, b"tickerd");
                pings += 1;
            }
            (0x8, payload) => {
                assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
                assert_eq!(&payload[2..], b"no pong to 2 pings");
                break;
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(pings, 2);
    rig.stop().await;
}

#[tokio::test]
async fn a_client_that_answers_pings_stays() {
    let rig = Rig::start(WsLimits {
        ping_interval: Duration::from_millis(50),
        max_missed_pongs: 1,
        ..limits()
    })
    .await;
    let mut c = rig.client().await;
    // tungstenite answers each ping while the client reads; after several intervals the
    // connection still serves.
    let mut pings = 0;
    while pings < 5 {
        if let Message::Ping(_) = guard("a ping", c.ws.next()).await.unwrap().unwrap() {
            pings += 1;
        }
    }
    assert_eq!(c.request(json!({"op":"ping"})).await["type"], "pong");
    rig.stop().await;
}

/// `n` BTC-USD trades submitted straight to the engine, with no round trip: account 1 rests a
/// sell of one lot at 65,000.00 and account 2 takes it, `n` times in a row.
fn engine_trades(market: &Market, n: usize) {
    const BTC_USD: u32 = 0;
    const PRICE: i64 = 6_500_000;
    for _ in 0..n {
        for (account, side) in [(1, Side::Sell), (2, Side::Buy)] {
            let place = Place::limit(account, BTC_USD, side, PRICE, 1);
            market
                .submit_detached(CommandKind::Place(place))
                .expect("room in the ingress ring");
        }
    }
}

/// The next trade on `client`, which must follow the one before it (`last` seq) with no gap.
async fn next_trade(client: &mut Client, last: &mut u64) -> usize {
    let text = client.recv_text().await;
    let m: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (&m["type"], &m["instrument"]),
        (&json!("trade"), &json!("BTC-USD")),
        "{m}"
    );
    if *last != 0 {
        assert_eq!(m["prev_seq"].as_u64().unwrap(), *last, "no gap: {m}");
    }
    *last = m["seq"].as_u64().unwrap();
    text.len()
}

#[tokio::test]
async fn a_trades_subscriber_that_stops_reading_is_closed_with_1013_while_others_keep_up() {
    const LOSSLESS_QUEUE: usize = 64;
    const OUTBOUND_QUEUE: usize = 4;
    // Asked of the kernel for both ends of the slow connection (Linux doubles it).
    const SOCKET_BUFFER: u32 = 4096;
    let hub = HubConfig {
        lossless_queue: LOSSLESS_QUEUE,
        ..HubConfig::default()
    };
    let limits = WsLimits {
        outbound_queue: OUTBOUND_QUEUE,
        // Only the hub's policy may end the slow connection, and its close frame must wait
        // for the client to read again, however long the publishing takes.
        write_timeout: Duration::from_secs(60),
        close_timeout: Duration::from_secs(60),
        ..limits()
    };
    // Accepted connections inherit the listener's small send buffer, and it is not auto-tuned.
    let listener = TcpSocket::new_v4().unwrap();
    listener.set_send_buffer_size(SOCKET_BUFFER).unwrap();
    listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let server_send_buffer = listener.send_buffer_size().unwrap() as usize;
    let rig = Rig::start_on(Some(listener.listen(16).unwrap()), limits, hub).await;
    let trades = json!({"op":"subscribe","channels":[{"name":"trades","instrument":"BTC-USD"}]});

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(SOCKET_BUFFER).unwrap();
    let client_recv_buffer = socket.recv_buffer_size().unwrap() as usize;
    let mut slow = Client::upgrade(socket.connect(rig.addr).await.unwrap(), rig.addr).await;
    assert_eq!(slow.request(trades.clone()).await["type"], "subscribed");
    let mut reader = rig.client().await;
    assert_eq!(reader.request(trades).await["type"], "subscribed");

    // `slow` reads nothing now. Between the hub and its application at most this many bytes
    // wait: its receive buffer, the server's send buffer plus the one segment of up to 64 KiB
    // the kernel may append past it, and the writer's backlog: at most one vectored write of
    // what was published since it last wrote, here one round of trades, well under
    // tungstenite's write buffer size, which the bound counts instead; each trade takes its
    // JSON and a 2-byte frame header. Add the connection's queue and the
    // hub's ring: one trade more than all of that cannot fit, and the slow subscriber has
    // fallen behind its limit.
    let buffered_bytes = client_recv_buffer
        + server_send_buffer
        + (64 << 10)
        + tungstenite::protocol::WebSocketConfig::default().write_buffer_size;
    let mut shortest = usize::MAX;
    let mut published = 0;
    let mut needed = 1;
    let mut last = 0;
    while published < needed {
        // In rounds the reader's hub queue holds, since this task is also the one that runs
        // the server: the reading client gets every trade, and the engine and the other
        // subscribers never wait for the one that does not read.
        let round = (needed - published).min(LOSSLESS_QUEUE / 2);
        engine_trades(&rig.market, round);
        for _ in 0..round {
            shortest = shortest.min(next_trade(&mut reader, &mut last).await);
        }
        published += round;
        needed = buffered_bytes / (shortest + 2) + OUTBOUND_QUEUE + 2 + LOSSLESS_QUEUE + 1;
    }
    // The server noticed the lag when its writer last made progress: as soon as the kernel let
    // a little more through, or only now. Reading again, `slow` gets what was queued for it,
    // in order and with no gap, then 1013.
    let mut received = 0;
    let mut slow_last = 0;
    let (code, reason) = loop {
        match guard("the close frame", slow.ws.next()).await {
            Some(Ok(Message::Text(text))) => {
                let m: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(m["type"], "trade", "{m}");
                if slow_last != 0 {
                    assert_eq!(m["prev_seq"].as_u64().unwrap(), slow_last, "no gap: {m}");
                }
                slow_last = m["seq"].as_u64().unwrap();
                received += 1;
            }
            Some(Ok(Message::Close(Some(f)))) => break (f.code, f.reason.to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("the connection ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(code, CloseCode::Again);
    assert_eq!(
        reason,
        format!(
            "too slow: trades BTC-USD fell {LOSSLESS_QUEUE} messages behind; resume with from_seq"
        )
    );
    assert!(
        received < published,
        "{received} of {published} trades reached the slow client"
    );
    let trades_topic = ticker_feeds::Topic::Market {
        channel: ticker_feeds::Channel::Trades,
        instrument: 0,
    };
    let hub = rig.market.hub().stats();
    assert_eq!(
        ticker_feeds::HubStats::get(&hub.disconnects, trades_topic),
        1
    );
    // The reader is still served.
    engine_trades(&rig.market, 1);
    next_trade(&mut reader, &mut last).await;
    rig.stop().await;
}

#[tokio::test]
async fn the_http_side_serves_the_page_and_refuses_bad_upgrades() {
    let rig = Rig::start(limits()).await;
    let (head, mut tcp) = raw_request(rig.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: text/html; charset=utf-8"));
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.unwrap();
    assert!(String::from_utf8(body).unwrap().contains("<html"));
    for (path, content_type) in [("/app.js", "text/javascript"), ("/style.css", "text/css")] {
        let (head, _) =
            raw_request(rig.addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
        assert!(
            head.starts_with("HTTP/1.1 200") && head.contains(content_type),
            "{head}"
        );
    }
    let cases = [
        ("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "404"),
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "400"),
        (UPGRADE.replace("GET", "POST"), "405"),
        (UPGRADE.replace("Version: 13", "Version: 8"), "426"),
        (UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), "400"),
    ];
    for (request, status) in cases {
        let (head, _) = raw_request(rig.addr, &request).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{request:?} → {head}"
        );
    }
    let (head, _) = raw_request(rig.addr, &UPGRADE.replace("Version: 13", "Version: 8")).await;
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{head}"
    );
    rig.stop().await;
}

#[tokio::test]
async fn a_client_that_listed_instruments_hears_of_one_added_at_run_time() {
    let rig = Rig::start(limits()).await;
    let mut c = rig.client().await;
    let listed = c.request(json!({"op":"instruments"})).await;
    let before = listed["instruments"].as_array().unwrap().len();
    let mut spec = ticker_servers::defaults::instruments().remove(0);
    spec.symbol = "BTC-EUR".into();
    let market = rig.market.clone();
    let events = tokio::task::spawn_blocking(move || {
        market.execute_blocking(CommandKind::AddInstrument(Box::new(spec)))
    })
    .await
    .unwrap();
    assert!(matches!(
        events[0].kind,
        ticker_engine::EventKind::Accepted { .. }
    ));
    let pushed = c.recv_where(|m| m["type"] == "instruments").await;
    assert_eq!(pushed["id"], Value::Null);
    let list = pushed["instruments"].as_array().unwrap();
    assert_eq!(list.len(), before + 1);
    assert!(list.iter().any(|i| i["symbol"] == "BTC-EUR"));
    // It can be subscribed to at once.
    let ok = c
        .request(json!({"op":"subscribe","channels":[{"name":"ticker","instrument":"BTC-EUR"}]}))
        .await;
    assert_eq!(ok["type"], "subscribed", "{ok}");
    rig.stop().await;
}

#[tokio::test]
async fn a_risk_desk_follows_the_drop_copy_and_positions_and_a_trader_may_not() {
    let rig = Rig::start(limits()).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let risk = ticker_servers::jwt::Hs256::new(JWT_SECRET.as_bytes())
        .sign(&json!({"role": "risk", "exp": exp}));
    let mut alice = rig.trader(ALICE).await;
    let mut bob = rig.trader(BOB).await;
    let e = alice
        .request(json!({"op":"subscribe","channels":[{"name":"drop_copy"},{"name":"ticker","instrument":"BTC-USD"},{"name":"positions"}]}))
        .await;
    assert_eq!(e["code"], "permission_denied", "{e}");
    assert_eq!(field_names(&e), ["channels[0].name", "channels[2].name"]);

    let mut desk = rig.client().await;
    let ok = desk.request(json!({"op":"auth","token":risk})).await;
    assert_eq!(ok["role"], "risk");
    let ok = desk
        .request(json!({"op":"subscribe","channels":[{"name":"drop_copy"},{"name":"positions"}]}))
        .await;
    assert_eq!(ok["type"], "subscribed", "{ok}");
    let snap = desk
        .recv_where(|m| m["type"] == "snapshot" && m["channel"] == "drop_copy")
        .await;
    let mut last = snap["seq"].as_u64().unwrap();
    trade(&mut alice, &mut bob, "65000.00").await;
    // Both sides' fills, in one gap-free sequence, each with its account.
    let mut fills = Vec::new();
    while fills.len() < 2 {
        let m = desk.recv_where(|m| m["channel"] == "drop_copy").await;
        assert_eq!(m["prev_seq"].as_u64().unwrap(), last, "{m}");
        last = m["seq"].as_u64().unwrap();
        if m["event"] == "fill" {
            fills.push(m["account"].as_u64().unwrap());
        }
    }
    fills.sort();
    assert_eq!(fills, [1, 2]);
    let position = desk
        .recv_where(|m| m["channel"] == "positions" && m["type"] == "position" && m["account"] == 2)
        .await;
    assert_eq!(position["instrument"], "BTC-USD");
    rig.stop().await;
}

#[tokio::test]
async fn limit_breaches_and_the_kill_switch_are_typed_rejects_over_websocket() {
    use ticker_engine::{InstrumentLimits, Limits};
    let rig = Rig::start(limits()).await;
    let market = rig.market.clone();
    let set = tokio::task::spawn_blocking(move || {
        // BTC-USD is instrument 0; 0.005 BTC is 500 lots.
        let limits = Limits {
            instruments: vec![(
                0,
                InstrumentLimits {
                    max_order_lots: Some(500),
                    ..InstrumentLimits::default()
                },
            )],
            ..Limits::default()
        };
        market.execute_blocking(CommandKind::SetLimits {
            account: 1,
            limits: Some(Box::new(limits)),
        })
    })
    .await
    .unwrap();
    assert!(matches!(
        set[0].kind,
        ticker_engine::EventKind::Accepted { .. }
    ));
    let mut alice = rig.trader(ALICE).await;
    let r = alice.request(place("buy", "64000.00", "0.01")).await;
    assert_eq!(
        (&r["accepted"], &r["reason"]),
        (&json!(false), &json!("max_order_size")),
        "{r}"
    );
    let r = alice.request(place("buy", "64000.00", "0.005")).await;
    assert_eq!(r["accepted"], true, "{r}");
    let market = rig.market.clone();
    tokio::task::spawn_blocking(move || {
        market.execute_blocking(CommandKind::DisableAccount { account: 1 })
    })
    .await
    .unwrap();
    let r = alice.request(place("buy", "64000.00", "0.001")).await;
    assert_eq!(
        (&r["accepted"], &r["reason"]),
        (&json!(false), &json!("account_disabled")),
        "{r}"
    );
    rig.stop().await;
}
