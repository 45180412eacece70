//! Runs the built `ticker-bench engine` on a short stream and checks its JSON report.

use std::process::Command;

fn run_engine(mode: &str) -> Vec<serde_json::Value> {
    run_engine_with(&["--mode", mode, "--peer", "none"]).0
}

/// Runs `ticker-bench engine --ops 20000` with `args`: its JSON lines and its stderr (the table).
fn run_engine_with(args: &[&str]) -> (Vec<serde_json::Value>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ticker-bench"))
        .args(["engine", "--ops", "20000"])
        .args(args)
        .output()
        .expect("ticker-bench runs");
    assert!(
        output.status.success(),
        "ticker-bench engine {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reports = String::from_utf8(output.stdout)
        .expect("utf-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a JSON object"))
        .collect();
    (
        reports,
        String::from_utf8(output.stderr).expect("utf-8 table"),
    )
}

fn assert_sane_report(report: &serde_json::Value, mode: &str) {
    assert_eq!(report["mode"], mode);
    assert_eq!(report["ops"], 20_000);
    let ops_per_sec = report["ops_per_sec"]
        .as_f64()
        .expect("ops_per_sec is a number");
    assert!(ops_per_sec > 0.0, "ops_per_sec {ops_per_sec}");
    let ns = |field: &str| {
        report[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} is an integer in {report}"))
    };
    let (p50, p99, p999, max) = (ns("p50_ns"), ns("p99_ns"), ns("p999_ns"), ns("max_ns"));
    assert!(
        0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "percentiles out of order in {report}"
    );
    assert!(
        report["trades"].as_u64().unwrap() > 0,
        "the market orders trade"
    );
    assert!(report["note"].as_str().is_some_and(|n| !n.is_empty()));
}

#[test]
fn book_mode_reports_throughput_and_ordered_percentiles() {
    let reports = run_engine("book");
    assert_eq!(reports.len(), 1);
    assert_sane_report(&reports[0], "book");
}

#[test]
fn pipeline_mode_reports_throughput_and_ordered_percentiles() {
    let reports = run_engine("pipeline");
    assert_eq!(reports.len(), 1);
    assert_sane_report(&reports[0], "pipeline");
}

#[test]
fn mix_all_reports_every_mix_beside_the_peer_and_tabulates_them() {
    let (reports, table) = run_engine_with(&["--mode", "book", "--mix", "all"]);
    let rows: Vec<(String, String)> = reports
        .iter()
        .map(|r| {
            let text = |f: &str| r[f].as_str().expect("a string field").to_string();
            (text("mix"), text("mode"))
        })
        .collect();
    let expected: Vec<(String, String)> = ["issue3", "deep", "many"]
        .iter()
        .flat_map(|m| {
            [
                (m.to_string(), "book".into()),
                (m.to_string(), "lobster".into()),
            ]
        })
        .collect();
    assert_eq!(rows, expected);
    for r in &reports {
        assert_sane_report(r, r["mode"].as_str().unwrap());
        let repeat = r["repeat_max_ns"]
            .as_u64()
            .expect("book and peer rows repeat");
        assert!(0 < repeat && repeat <= r["max_ns"].as_u64().unwrap(), "{r}");
    }
    for mix in ["issue3", "deep", "many"] {
        assert!(
            table.contains(&format!("{mix}: tickerd book ")),
            "no ratio for {mix} in\n{table}"
        );
    }
}
