//! Runs the built `ticker-bench engine` on a short stream and checks its JSON report.

use std::process::Command;

fn run_engine(mode: &str) -> Vec<serde_json::Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_ticker-bench"))
        .args(["engine", "--ops", "20000", "--mode", mode])
        .output()
        .expect("ticker-bench runs");
    assert!(
        output.status.success(),
        "ticker-bench engine --mode {mode} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a JSON object"))
        .collect()
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
