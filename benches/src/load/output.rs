//! What a network mode prints and writes: a side-by-side table in the shape of the seed
//! article's comparison (latency p50 and p99, one-connection throughput, message size, for
//! gRPC and WebSocket), the full results as JSON, and the SVG plot.

use super::flow::Series;
use super::TargetArgs;
use serde_json::Value;
use std::fmt::Write as _;

/// Subscriber kinds in column order, with the order-entry front whose flow they are shown for.
const COLUMNS: [(&str, &str, &str); 4] = [
    ("grpc", "grpc", "gRPC"),
    ("ws-raw", "ws", "WebSocket raw"),
    ("ws-shared", "ws", "WebSocket shared deflate"),
    (
        "ws-per-connection",
        "ws",
        "WebSocket per-connection deflate",
    ),
];

fn us(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 1000.0 => format!("{:.2} ms", x / 1000.0),
        Some(x) => format!("{x:.0} µs"),
        None => "—".into(),
    }
}

fn pair(h: &Value, a: &str, b: &str) -> String {
    if h["count"].as_u64().unwrap_or(0) == 0 {
        return "—".into();
    }
    format!("{} / {}", us(&h[a]), us(&h[b]))
}

fn rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M/s", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k/s", x / 1e3)
    } else {
        format!("{x:.0} /s")
    }
}

/// The phase whose order entry ran over `front`, or else the first one.
fn phase<'a>(report: &'a Value, front: &str) -> Option<&'a Value> {
    let phases = report["phases"].as_array()?;
    phases
        .iter()
        .find(|p| p["order_entry"] == front)
        .or(phases.first())
}

fn kind<'a>(phase: &'a Value, kind: &str) -> Option<&'a Value> {
    phase["subscribers"]
        .as_array()?
        .iter()
        .find(|s| s["kind"] == kind)
}

/// The table of a `latency` or `throughput` run, as Markdown: one per deployment (`--via`).
pub fn flow_table(report: &Value) -> String {
    let mut vias: Vec<&str> = Vec::new();
    for p in report["phases"].as_array().into_iter().flatten() {
        if let Some(v) = p["via"].as_str() {
            if !vias.contains(&v) {
                vias.push(v);
            }
        }
    }
    if vias.len() <= 1 {
        return via_table(report) + &front_alone(report) + &nats_alone(report);
    }
    let mut out = String::new();
    for via in vias {
        let mut one = report.clone();
        if let Some(phases) = one["phases"].as_array_mut() {
            phases.retain(|p| p["via"] == via);
        }
        let _ = writeln!(
            out,
            "via {via}:\n{}{}{}",
            via_table(&one),
            front_alone(&one),
            nats_alone(&one)
        );
    }
    out
}

/// The line of `latency`'s round trips that the fronts answer without the engine, if the
/// report has them.
fn front_alone(report: &Value) -> String {
    calibration(report, "front_alone", |front| {
        format!(
            "Front alone (an order the front refuses without the engine), one at a time at {} per second: gRPC {}, WebSocket {} (p50 / p99)\n",
            front["rate"],
            pair(&front["grpc_refused_order"], "p50_us", "p99_us"),
            pair(&front["ws_refused_order"], "p50_us", "p99_us"),
        )
    })
}

/// The line of `--via bus`'s one-hop measurement of the NATS server, if the report has it.
fn nats_alone(report: &Value) -> String {
    calibration(report, "nats_alone", |hop| {
        format!(
            "NATS alone, one hop at {} messages/s: JetStream publish → push consumer {}, core publish → subscriber {} (p50 / p99)\n",
            hop["rate"],
            pair(&hop["jetstream_publish_to_push_consumer"], "p50_us", "p99_us"),
            pair(&hop["core_publish_to_subscriber"], "p50_us", "p99_us"),
        )
    })
}

/// `line` of the report's phase `key` (a measurement beside the flow's, read against it), or
/// nothing if the run did not take it.
fn calibration(report: &Value, key: &str, line: impl Fn(&Value) -> String) -> String {
    report["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|p| p.get(key))
        .map_or_else(String::new, line)
}

fn via_table(report: &Value) -> String {
    let cols: Vec<_> = COLUMNS
        .iter()
        .filter_map(|(k, front, label)| {
            let p = phase(report, front)?;
            Some((p, kind(p, k)?, *label))
        })
        .collect();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| {} | {} |",
        report["mode"].as_str().unwrap_or(""),
        cols.iter().map(|c| c.2).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(t, "|---|{}", "---|".repeat(cols.len()));
    let mut row = |name: &str, f: &dyn Fn(&Value, &Value) -> String| {
        let cells: Vec<String> = cols.iter().map(|(p, s, _)| f(p, s)).collect();
        let _ = writeln!(t, "| {name} | {} |", cells.join(" | "));
    };
    row("order → ack, p50 / p99", &|p, _| {
        format!(
            "{} ({} order entry)",
            pair(&p["ack"], "p50_us", "p99_us"),
            p["order_entry"].as_str().unwrap_or("")
        )
    });
    row("order → market data, p50 / p99", &|_, s| {
        pair(&s["order_to_update"], "p50_us", "p99_us")
    });
    row("order → market data, p99.9 / max", &|_, s| {
        pair(&s["order_to_update"], "p99_9_us", "max_us")
    });
    row("engine → subscriber, p50 / p99", &|_, s| {
        pair(&s["engine_to_client"], "p50_us", "p99_us")
    });
    row("order entry, commands/s (all clients)", &|p, _| {
        rate(p["commands_per_second_total"].as_f64().unwrap_or(0.0))
    });
    row("market data, messages/s per connection", &|_, s| {
        let rates: Vec<f64> = s["messages_per_second_per_connection"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        rate(rates.iter().sum::<f64>() / rates.len().max(1) as f64)
    });
    row("bytes per message on the wire", &|_, s| {
        format!(
            "{:.1} B",
            s["wire_bytes_per_message"].as_f64().unwrap_or(0.0)
        )
    });
    row("gaps / bad checksums / resyncs", &|_, s| {
        format!("{} / {} / {}", s["gaps"], s["checksums_bad"], s["resyncs"])
    });
    row("CPU per command (tool + spawned server)", &|p, _| {
        format!("{:.1} µs", p["cpu_us_per_command"].as_f64().unwrap_or(0.0))
    });
    t
}

/// The table of a `fanout` run, as Markdown.
pub fn fanout_table(report: &Value) -> String {
    let r = &report["result"];
    let mut t = String::new();
    let _ = writeln!(t, "| fanout | {} |", report["kind"].as_str().unwrap_or(""));
    let _ = writeln!(t, "|---|---|");
    let _ = writeln!(
        t,
        "| connections (verified + counted) | {} ({} + {}) |",
        report["connections"], report["verified_connections"], report["counted_connections"]
    );
    let _ = writeln!(
        t,
        "| messages/s, total | {} |",
        rate(r["messages_per_second_total"].as_f64().unwrap_or(0.0))
    );
    let _ = writeln!(
        t,
        "| messages/s, per connection | {:.1} |",
        r["messages_per_second_per_connection"]
            .as_f64()
            .unwrap_or(0.0)
    );
    let _ = writeln!(
        t,
        "| bytes per message on the wire | {:.1} B |",
        r["counted"]["wire_bytes_per_message"]
            .as_f64()
            .unwrap_or(0.0)
    );
    let _ = writeln!(
        t,
        "| engine → verified client, p50 / p99 / max | {} / {} |",
        pair(&r["verified"]["engine_to_client"], "p50_us", "p99_us"),
        us(&r["verified"]["engine_to_client"]["max_us"])
    );
    let _ = writeln!(
        t,
        "| gaps / conflated (verified) | {} / {} |",
        r["verified"]["gaps"], r["verified"]["conflated"]
    );
    let _ = writeln!(
        t,
        "| closed by the server | {} |",
        r["counted"]["closed_by_server"]
    );
    let _ = writeln!(
        t,
        "| CPU per delivered message (tool + spawned server) | {:.2} µs |",
        r["cpu_us_per_delivered_message"].as_f64().unwrap_or(0.0)
    );
    if let Some(p) = r["published_per_second"].as_f64() {
        let _ = writeln!(t, "| published on the topics, messages/s | {p:.0} |");
    }
    let trivial = &r["trivial_server"];
    if !trivial.is_null() {
        let _ = writeln!(
            t,
            "| the tool against its trivial server ({} connections, {:.0}/s of {} B frames): counted / offered | {} / {} |",
            trivial["connections"],
            trivial["publish_rate"].as_f64().unwrap_or(0.0),
            trivial["frame_bytes"],
            rate(trivial["messages_per_second_total"].as_f64().unwrap_or(0.0)),
            rate(trivial["offered_per_second_total"].as_f64().unwrap_or(0.0)),
        );
    }
    t
}

/// The table of a `stream` run, as Markdown.
pub fn stream_table(report: &Value) -> String {
    let mut t = String::from(
        "| one-connection stream (hub-fed) | messages/s | bytes per message |\n|---|---|---|\n",
    );
    for r in report["results"].as_array().into_iter().flatten() {
        let _ = writeln!(
            t,
            "| {} | {} | {:.1} B |",
            r["kind"].as_str().unwrap_or(""),
            rate(r["messages_per_second"].as_f64().unwrap_or(0.0)),
            r["wire_bytes_per_message"].as_f64().unwrap_or(0.0)
        );
    }
    t
}

/// Prints the table and writes the JSON and the plot where asked.
pub fn emit(
    report: &Value,
    table: &str,
    series: &[Series],
    target: &TargetArgs,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    writeln!(out, "{table}")?;
    if let Some(path) = &target.json {
        std::fs::write(path, serde_json::to_string_pretty(report)? + "\n")?;
        writeln!(out, "results: {}", path.display())?;
    }
    if let Some(path) = &target.svg {
        std::fs::write(path, super::svg::plot(series))?;
        writeln!(out, "plot: {}", path.display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bus_run_prints_its_nats_hop_under_its_own_table_only() {
        let hop = |p50: f64, p99: f64| json!({"count": 1000, "p50_us": p50, "p99_us": p99});
        let report = json!({"mode": "latency", "phases": [
            {"via": "single", "front": "grpc"},
            {"via": "bus", "front": "grpc"},
            {"via": "bus", "nats_alone": {
                "rate": 2000,
                "jetstream_publish_to_push_consumer": hop(180.4, 351.0),
                "core_publish_to_subscriber": hop(131.0, 1294.0),
            }},
        ]});
        let table = flow_table(&report);
        let line = "NATS alone, one hop at 2000 messages/s: JetStream publish → push consumer 180 µs / 351 µs, core publish → subscriber 131 µs / 1.29 ms (p50 / p99)";
        let (single, bus) = table.split_once("via bus:").expect("two tables");
        assert!(!single.contains("NATS alone"));
        assert!(bus.contains(line), "{bus}");
    }

    #[test]
    fn each_deployment_prints_its_own_front_alone_round_trips() {
        let took = |p50: f64, p99: f64| json!({"count": 1000, "p50_us": p50, "p99_us": p99});
        let front = |ws: f64, grpc: f64| json!({"rate": 2000, "ws_refused_order": took(ws, 90.0), "grpc_refused_order": took(grpc, 120.0)});
        let report = json!({"mode": "latency", "phases": [
            {"via": "single", "front": "grpc"},
            {"via": "single", "front_alone": front(61.2, 84.0)},
            {"via": "bus", "front": "grpc"},
            {"via": "bus", "front_alone": front(70.0, 95.0)},
        ]});
        let table = flow_table(&report);
        let (single, bus) = table.split_once("via bus:").expect("two tables");
        let line = |ws: &str, grpc: &str| {
            format!("Front alone (an order the front refuses without the engine), one at a time at 2000 per second: gRPC {grpc} / 120 µs, WebSocket {ws} / 90 µs (p50 / p99)")
        };
        assert!(single.contains(&line("61 µs", "84 µs")), "{single}");
        assert!(bus.contains(&line("70 µs", "95 µs")), "{bus}");
        let alone = json!({"mode": "latency", "phases": [
            {"via": "single", "front": "ws"},
            {"via": "single", "front_alone": front(61.2, 84.0)},
        ]});
        assert!(flow_table(&alone).contains(&line("61 µs", "84 µs")));
    }
}
