//! Runs the built `ticker-bench` in its network modes against a tickerd it spawns, briefly,
//! and checks that the JSON report's histograms are non-empty and sane and that every
//! subscriber saw a correct, gap-free stream.

use serde_json::Value;
use std::process::Command;

/// A directory removed when dropped, however the test ends.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Value {
    // Tests run in parallel, several per mode: each run writes into a directory of its own.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        TempDir(std::env::temp_dir().join(format!("ticker-bench-test-{}-{n}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let json = dir.0.join(format!("{}.json", args[0]));
    let svg = dir.0.join(format!("{}.svg", args[0]));
    let output = Command::new(env!("CARGO_BIN_EXE_ticker-bench"))
        .args(args)
        .args(["--spawn", "--json"])
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .expect("ticker-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ticker-bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("| "), "a table first: {stdout}");
    let plot = std::fs::read_to_string(&svg).expect("the plot is written");
    assert!(plot.starts_with("<svg"));
    assert!(
        args[0] == "stream" || plot.contains("<polyline"),
        "no curve in the plot"
    );
    serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON is written"))
        .expect("the report is JSON")
}

/// A latency summary with samples, ordered percentiles and nothing absurd (over 10 s).
fn assert_sane(h: &Value, what: &str) {
    let f = |k: &str| {
        h[k].as_f64()
            .unwrap_or_else(|| panic!("{what}: {k} in {h}"))
    };
    assert!(h["count"].as_u64().unwrap() > 0, "{what}: empty histogram");
    assert!(f("min_us") > 0.0, "{what}: {h}");
    assert!(f("min_us") <= f("p50_us"), "{what}: {h}");
    assert!(f("p50_us") <= f("p90_us"), "{what}: {h}");
    assert!(f("p90_us") <= f("p99_us"), "{what}: {h}");
    assert!(f("p99_us") <= f("p99_9_us"), "{what}: {h}");
    assert!(f("p99_9_us") <= f("max_us"), "{what}: {h}");
    assert!(f("max_us") < 10e6, "{what}: {h}");
}

#[test]
fn latency_mode_measures_both_fronts_and_every_subscriber_kind() {
    let report = run(&[
        "latency",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--rate",
        "200",
    ]);
    assert_eq!(report["mode"], "latency");
    let (phases, floor): (Vec<&Value>, Vec<&Value>) = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .partition(|p| p.get("order_entry").is_some());
    assert_eq!(phases.len(), 2, "gRPC then WebSocket order entry");
    // Then orders the fronts refuse before the engine, one at a time: the floor under an ack.
    assert_eq!(floor.len(), 1, "one front-alone phase: {floor:?}");
    for kind in ["grpc_refused_order", "ws_refused_order"] {
        let h = &floor[0]["front_alone"][kind];
        assert_sane(h, kind);
        assert_eq!(
            h["count"], 100,
            "{kind}: 200 commands/s for 1 s, half over each front"
        );
    }
    for phase in &phases {
        let front = phase["order_entry"].as_str().unwrap();
        assert_sane(&phase["ack"], &format!("{front} ack"));
        // 200 commands/s for 1 s: allow for a slow test machine, not for a dead flow.
        let acked = phase["commands_acked"].as_u64().unwrap();
        assert!((100..=260).contains(&acked), "{front}: {acked} acks");
        assert_eq!(phase["rejects"], serde_json::json!({}), "{front}");
        let subscribers = phase["subscribers"].as_array().unwrap();
        assert_eq!(subscribers.len(), 4);
        for s in subscribers {
            let what = format!("{front} → {}", s["kind"]);
            assert_sane(&s["order_to_update"], &what);
            assert_sane(&s["engine_to_client"], &what);
            assert_eq!(s["commands_not_reflected"], 0, "{what}");
            assert_eq!(s["gaps"], 0, "{what}");
            assert_eq!(s["checksums_bad"], 0, "{what}");
            assert!(s["checksums_ok"].as_u64().unwrap() > 0, "{what}");
            assert!(
                s["wire_bytes_per_message"].as_f64().unwrap() > 10.0,
                "{what}"
            );
            assert_eq!(s["ended"], serde_json::json!([]), "{what}");
        }
        // Every command moved a depth level: each was reflected in some update, so a
        // subscriber saw at least one message per two commands.
        let order_to_update = subscribers[0]["order_to_update"]["count"].as_u64().unwrap();
        assert!(
            order_to_update * 10 >= acked * 9,
            "{front}: {order_to_update} of {acked}"
        );
    }
    let bytes = |kind: &str| {
        phases[1]["subscribers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == kind)
            .unwrap()["wire_bytes_per_message"]
            .as_f64()
            .unwrap()
    };
    // A compressor with memory across messages beats one without, which beats none.
    assert!(bytes("ws-per-connection") < bytes("ws-shared"));
    assert!(bytes("ws-shared") < bytes("ws-raw"));
}

#[test]
fn fanout_mode_counts_and_verifies_many_connections() {
    let report = run(&[
        "fanout",
        "--connections",
        "60",
        "--verify",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0.5",
        "--sim-rate",
        "3000",
    ]);
    let r = &report["result"];
    assert_eq!(report["counted_connections"], 56);
    assert!(r["counted"]["messages"].as_u64().unwrap() > 0, "{r}");
    assert!(r["verified"]["messages"].as_u64().unwrap() > 0, "{r}");
    assert_sane(&r["verified"]["engine_to_client"], "fanout");
    assert_eq!(r["verified"]["gaps"], 0, "{r}");
    assert_eq!(r["counted"]["closed_by_server"], 0, "{r}");
    assert!(r["published_per_second"].as_f64().unwrap() > 0.0, "{r}");
    // The same connections against the tool's trivial server, at the topics' rate.
    let trivial = &r["trivial_server"];
    assert_eq!(trivial["connections"], 60, "{trivial}");
    assert!(
        trivial["messages_per_second_total"].as_f64().unwrap() > 0.0,
        "{trivial}"
    );
    assert_eq!(trivial["closed"], 0, "{trivial}");
}

#[test]
fn fanout_mode_counts_grpc_streams() {
    let report = run(&[
        "fanout",
        "--kind",
        "grpc",
        "--connections",
        "30",
        "--verify",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0.5",
        "--sim-rate",
        "3000",
        "--channels",
        "ticker,trades",
    ]);
    let r = &report["result"];
    assert_eq!(report["kind"], "grpc");
    assert!(r["counted"]["messages"].as_u64().unwrap() > 0, "{r}");
    assert!(r["verified"]["messages"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["verified"]["gaps"], 0, "{r}");
    assert_eq!(r["counted"]["closed_by_server"], 0, "{r}");
    assert!(
        r["trivial_server"].is_null(),
        "no WebSocket calibration for gRPC"
    );
}

#[test]
fn stream_mode_delivers_every_message_to_one_connection_of_each_kind() {
    let report = run(&["stream", "--messages", "3000"]);
    let results = report["results"].as_array().unwrap();
    let kinds: Vec<_> = results
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["grpc", "ws-raw", "ws-shared", "ws-per-connection"]);
    for r in results {
        assert_eq!(r["messages"], 3000, "{r}");
        assert!(r["messages_per_second"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["wire_bytes_per_message"].as_f64().unwrap() > 10.0, "{r}");
    }
}
