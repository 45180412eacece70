//! The `tickerd` program end to end: started as a process on free loopback ports, it serves
//! `/healthz`, `/metrics`, the WebSocket feed and gRPC; SIGTERM closes WebSocket clients with
//! 1001 and exits cleanly; a bad configuration is refused with the key's name, not a panic.

#![cfg(unix)]

use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

const GUARD: Duration = Duration::from_secs(30);

struct Tickerd {
    child: Child,
    http: String,
    grpc: String,
}

impl Drop for Tickerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts tickerd on port 0 for both fronts and reads the addresses it prints.
fn start(extra: &[&str]) -> Tickerd {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickerd"))
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            // These tests are about the fronts; the journal has its own (restart.rs, kill.rs).
            "--no-journal",
            // The simulated past on a fresh start has its own test (a later --set wins).
            "--set",
            "market.sim_history_s=0",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tickerd starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut http, mut grpc) = (None, None);
    while http.is_none() || grpc.is_none() {
        let line = lines
            .next()
            .expect("tickerd prints its addresses")
            .expect("utf-8");
        if let Some(rest) = line.strip_prefix("trader page:  http://") {
            http = Some(rest.trim_end_matches('/').to_string());
        }
        if let Some(rest) = line.strip_prefix("gRPC:         http://") {
            grpc = rest.split_whitespace().next().map(str::to_string);
        }
    }
    Tickerd {
        child,
        http: http.unwrap(),
        grpc: grpc.unwrap(),
    }
}

/// A minimal HTTP/1.1 GET: status code and body.
async fn get(addr: &str, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn tickerd_serves_both_fronts_and_stops_on_sigterm_with_1001() {
    let tickerd = start(&["--token", "alice-token=1"]);

    let (status, body) = tokio::time::timeout(GUARD, get(&tickerd.http, "/healthz"))
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // The simulator trades, and the metrics say so.
    let metrics = tokio::time::timeout(GUARD, async {
        loop {
            let (status, body) = get(&tickerd.http, "/metrics").await;
            assert_eq!(status, 200);
            let accepted = body
                .lines()
                .find_map(|l| l.strip_prefix("tickerd_orders_total{outcome=\"accepted\"} "))
                .and_then(|v| v.parse::<u64>().ok())
                .expect("an accepted-orders counter");
            if accepted > 0 {
                return body;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the simulator trades");
    for family in [
        "# TYPE tickerd_rejects_total counter",
        "# TYPE tickerd_engine_to_feeds_seconds histogram",
        "# TYPE tickerd_subscribers gauge",
        "# TYPE tickerd_ws_bytes_out_total counter",
        "# TYPE tickerd_commands_in_flight gauge",
    ] {
        assert!(metrics.contains(family), "{family} in /metrics");
    }

    // gRPC answers on its port (a plain TCP connect is enough to know it listens; the gRPC
    // behaviour itself is tests/grpc.rs).
    TcpStream::connect(&tickerd.grpc)
        .await
        .expect("gRPC listens");

    // A WebSocket client gets its hello, then 1001 when tickerd is stopped.
    let tcp = TcpStream::connect(&tickerd.http).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", tickerd.http), tcp)
        .await
        .expect("upgrade");
    let hello = tokio::time::timeout(GUARD, ws.next()).await.unwrap();
    assert!(
        matches!(&hello, Some(Ok(Message::Text(t))) if t.contains("\"hello\"")),
        "{hello:?}"
    );
    let pid = tickerd.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let close = tokio::time::timeout(GUARD, async {
        while let Some(m) = ws.next().await {
            if let Ok(Message::Close(frame)) = m {
                return frame;
            }
        }
        None
    })
    .await
    .expect("a close frame before the guard");
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    let mut tickerd = tickerd;
    let status = tokio::task::spawn_blocking(move || {
        let status = tickerd.child.wait();
        (status, tickerd)
    })
    .await
    .unwrap()
    .0
    .unwrap();
    assert!(
        status.success(),
        "tickerd exits cleanly on SIGTERM: {status:?}"
    );
}

/// The addresses are printed before tickerd waits for its stop signal: a SIGTERM sent the
/// moment they appear (a supervisor stopping a service that just started) must still be a
/// clean stop, not the default action that kills the process mid-start.
#[test]
fn sigterm_right_after_the_addresses_are_printed_is_a_clean_stop() {
    for _ in 0..5 {
        let mut tickerd = start(&[]);
        let pid = tickerd.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = tickerd.child.wait().unwrap();
        assert!(status.success(), "exit after an early SIGTERM: {status:?}");
    }
}

/// Whoever started tickerd may stop reading its output (a supervisor; a test that has read
/// the addresses): printing the start-up lines into a closed pipe must not stop the server.
/// Here stdout is a pipe whose reading end is closed before tickerd starts.
#[tokio::test]
async fn a_closed_stdout_does_not_stop_tickerd() {
    let http = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().to_string()
    };
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickerd"))
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            &http,
            "--no-journal",
            "--set",
            "market.sim_history_s=0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(writer)
        .stderr(Stdio::null())
        .spawn()
        .expect("tickerd starts");
    let serving = tokio::time::timeout(GUARD, async {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(status);
            }
            if let Ok(mut tcp) = TcpStream::connect(&http).await {
                let request =
                    format!("GET /healthz HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
                tcp.write_all(request.as_bytes()).await.unwrap();
                let mut answer = String::new();
                let _ = tcp.read_to_string(&mut answer).await;
                if answer.starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
            }
            // Not listening yet: look again shortly (the address was never printed to read).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("tickerd serves or ends in time");
    assert_eq!(serving, Ok(()), "tickerd ended instead of serving");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_bad_configuration_is_refused_by_key_with_exit_code_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_tickerd"))
        .args(["--set", "http.deflate=fast"])
        .env("TICKERD_GRPC_MAX_MESSAGE_BYTES", "12")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The first bad key found is reported with where it came from.
    assert!(
        stderr.contains("http.deflate (from --set http.deflate)")
            || stderr.contains("grpc.max_message_bytes (from TICKERD_GRPC_MAX_MESSAGE_BYTES)"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_tickerd"))
        .args(["--no-sim", "--set", "market.sim_seed=7", "--print-config"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("simulator = false"), "{printed}");
    assert!(printed.contains("sim_seed = 7"), "{printed}");
}

/// Reads text messages until one contains `needle`.
async fn next_containing(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    needle: &str,
) -> serde_json::Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains(needle) => {
                return serde_json::from_str(&t).unwrap()
            }
            Some(Ok(_)) => continue,
            other => panic!("the connection ended: {other:?}"),
        }
    }
}

/// A fresh start simulates its past before the market opens: a new subscriber's candles
/// snapshot is full of candles stamped in that past (the chart is drawn on the first visit),
/// and it holds `market.candles_history` of them.
#[tokio::test]
async fn a_fresh_start_has_a_past_to_chart() {
    let span_s = 600;
    let tickerd = start(&[
        "--set",
        &format!("market.sim_history_s={span_s}"),
        "--set",
        "market.candles_history=120",
    ]);
    let opened = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let tcp = TcpStream::connect(&tickerd.http).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", tickerd.http), tcp)
        .await
        .expect("upgrade");
    let subscribe = r#"{"op":"subscribe","id":1,"channels":[
        {"name":"candles","instrument":"BTC-USD","interval":"1m"},
        {"name":"candles","instrument":"BTC-USD","interval":"1s"}]}"#;
    ws.send(Message::text(subscribe)).await.unwrap();
    let (mut minutes, mut seconds) = (None, None);
    tokio::time::timeout(GUARD, async {
        while minutes.is_none() || seconds.is_none() {
            let snapshot = next_containing(&mut ws, "\"type\":\"snapshot\"").await;
            match snapshot["interval"].as_str() {
                Some("1m") => minutes = Some(snapshot),
                Some("1s") => seconds = Some(snapshot),
                other => panic!("a candles snapshot, not {other:?}"),
            }
        }
    })
    .await
    .expect("both snapshots");
    let starts = |s: &serde_json::Value| -> Vec<u64> {
        s["candles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["start"].as_u64().unwrap())
            .collect()
    };
    let minute_starts = starts(minutes.as_ref().unwrap());
    // Ten minutes of past: ten or eleven one-minute candles, the first ten minutes back.
    assert!(
        (10..=12).contains(&minute_starts.len()),
        "{} one-minute candles",
        minute_starts.len()
    );
    let minute = 60_000_000_000;
    assert!(minute_starts.windows(2).all(|w| w[0] < w[1]));
    assert!(minute_starts.iter().all(|s| s % minute == 0));
    let first_ago = opened - minute_starts[0];
    assert!(
        (span_s - 60) * 1_000_000_000 <= first_ago && first_ago <= (span_s + 120) * 1_000_000_000,
        "the first candle starts {first_ago} ns before the market opened"
    );
    // The first and the open candle cover part of a minute; every whole minute trades.
    let candles = minutes.as_ref().unwrap()["candles"].as_array().unwrap();
    assert!(candles.iter().all(|c| c["trades"].as_u64().unwrap() > 0));
    for c in &candles[1..candles.len() - 1] {
        assert!(c["trades"].as_u64().unwrap() > 10, "a traded minute: {c}");
        let volume: rust_decimal::Decimal = c["volume"].as_str().unwrap().parse().unwrap();
        assert!(
            volume > rust_decimal::Decimal::ONE,
            "about two market orders a second: {c}"
        );
    }
    // Six hundred seconds with trades in most of them: the snapshot is capped at its history.
    assert_eq!(starts(seconds.as_ref().unwrap()).len(), 120);
}
