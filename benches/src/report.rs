//! What a `ticker-bench` run prints: one JSON object per line per measured mode, with the
//! throughput, latency percentiles from an HDR histogram and a note on how both were measured.

use hdrhistogram::Histogram;

/// Highest latency the histograms record; slower samples are clamped to it (and would show as
/// `max_ns` equal to this value). 60 s.
pub const MAX_RECORDABLE_NS: u64 = 60_000_000_000;
/// Significant decimal digits the histograms keep (3: within 0.1%).
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// A histogram of latencies in nanoseconds with this module's bounds.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_RECORDABLE_NS, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Records one latency sample, clamped into the histogram's range.
pub fn record_ns(histogram: &mut Histogram<u64>, ns: u64) {
    histogram.saturating_record(ns.clamp(1, MAX_RECORDABLE_NS));
}

/// Latency percentiles in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencySummary {
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        LatencySummary {
            p50_ns: histogram.value_at_quantile(0.50),
            p99_ns: histogram.value_at_quantile(0.99),
            p999_ns: histogram.value_at_quantile(0.999),
            max_ns: histogram.max(),
        }
    }
}

/// What the engine emitted during a measured pass, to show the workload did what it claims.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub events: u64,
    pub trades: u64,
    /// Rejected commands (in this workload: cancels of orders already filled or cancelled).
    pub rejected: u64,
}

/// One measured mode.
#[derive(Clone, Debug, PartialEq)]
pub struct ModeReport {
    pub mode: &'static str,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub latency: LatencySummary,
    pub outcomes: Outcomes,
    /// How the figures were measured.
    pub note: String,
    /// The workload, in one line.
    pub workload: String,
}

impl ModeReport {
    /// The report as one line of JSON, fields in the documented order.
    pub fn to_json_line(&self) -> String {
        let text = |s: &str| serde_json::Value::from(s).to_string();
        format!(
            "{{\"mode\":{},\"ops\":{},\"ops_per_sec\":{:.0},\"p50_ns\":{},\"p99_ns\":{},\
             \"p999_ns\":{},\"max_ns\":{},\"events\":{},\"trades\":{},\"rejected\":{},\
             \"workload\":{},\"note\":{}}}",
            text(self.mode),
            self.ops,
            self.ops_per_sec,
            self.latency.p50_ns,
            self.latency.p99_ns,
            self.latency.p999_ns,
            self.latency.max_ns,
            self.outcomes.events,
            self.outcomes.trades,
            self.outcomes.rejected,
            text(&self.workload),
            text(&self.note),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles_are_ordered_and_max_is_exact() {
        let mut h = latency_histogram();
        for ns in 1..=10_000 {
            record_ns(&mut h, ns);
        }
        record_ns(&mut h, u64::MAX);
        let s = LatencySummary::of(&h);
        assert!(s.p50_ns <= s.p99_ns && s.p99_ns <= s.p999_ns && s.p999_ns <= s.max_ns);
        assert!((4_990..=5_010).contains(&s.p50_ns), "p50 {}", s.p50_ns);
        assert_eq!(
            h.highest_equivalent(s.max_ns),
            h.highest_equivalent(MAX_RECORDABLE_NS)
        );
    }

    #[test]
    fn json_line_has_the_documented_fields() {
        let report = ModeReport {
            mode: "book",
            ops: 10,
            ops_per_sec: 1234.4,
            latency: LatencySummary {
                p50_ns: 1,
                p99_ns: 2,
                p999_ns: 3,
                max_ns: 4,
            },
            outcomes: Outcomes::default(),
            note: "n".into(),
            workload: "w".into(),
        };
        let line = report.to_json_line();
        assert!(!line.contains('\n'));
        assert!(line.starts_with(r#"{"mode":"book","ops":10,"ops_per_sec":1234,"p50_ns":1,"#));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["mode"], "book");
        assert_eq!(v["ops"], 10);
        assert_eq!(v["ops_per_sec"], 1234);
        assert_eq!(v["max_ns"], 4);
    }
}
