//! The soak's table (one row per interval) and its verdict.
//!
//! The verdict is a pure function of the rows, so its rules are tested on made-up series:
//! growth that levels off passes, growth that goes on fails, and so does a latency drift.

use super::process::ProcessSample;
use super::tally::Counts;
use std::fmt::Write as _;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// Intervals left out of every judgement: the first one holds the start (connections opening,
/// the journal's first segment, the allocator's first arenas, the JIT-free but cold caches).
pub const WARMUP_INTERVALS: usize = 1;

/// How much the last third's peak may exceed the middle third's before it is growth that does
/// not level off.
///
/// - RSS: +10% and +16 MiB. The allocator keeps freed memory in per-thread arenas and returns it
///   late, so the peak moves by a few MiB with nothing leaking; socket buffers of the ~20
///   connections the load holds (each can hold a few hundred KiB while a slow reader pauses)
///   add up to ~10 MiB at a bad moment. 10% covers noise that scales with the process.
/// - fds: +16. Every connection of the load is one fd, and at a sample some closed sessions are
///   still in their close handshake (up to `close_timeout`, 2 s) beside their replacements:
///   16 is more than every churning connection reopening at once.
/// - tasks: +64. A connection holds a handful of tasks (session, reader, writer, pinger and
///   per-subscription forwarders), so 64 is that overlap of ~12 connections again.
///
/// A leak smaller than these per third of the run passes (an hour: about 30 MiB, 16 fds or 64
/// tasks every 20 minutes); the run's table shows it.
pub const RSS_GROWTH: (u64, u64) = (10, 16 * MIB);
pub const FD_GROWTH: u64 = 16;
pub const TASK_GROWTH: u64 = 64;

/// Latency drift: the median of the per-interval p99 over the last third may be at most twice
/// that of the first third plus 1 ms. Twice: a 2-core VM shared with other work moves its p99
/// by tens of percent from one minute to the next; 1 ms: below a millisecond a doubling is a
/// scheduler's quantum, not a drift.
pub const DRIFT_FACTOR: u64 = 2;
pub const DRIFT_SLACK_NS: u64 = 1_000_000;

/// Order → ack latency of one interval, nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckLatency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
}

/// Server-side slow-consumer counters of one interval (differences of `/metrics` totals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlowConsumers {
    pub conflated: u64,
    pub resynced: u64,
    pub too_slow: u64,
}

/// One interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub elapsed: Duration,
    pub process: ProcessSample,
    /// tickerd's CPU time over the interval, as a percentage of one core.
    pub cpu_percent: f64,
    pub tasks: u64,
    pub ack: Option<AckLatency>,
    pub counts: Counts,
    pub slow: SlowConsumers,
}

pub fn header() -> String {
    "| elapsed | RSS MiB | fds | threads | tasks | CPU % | ack p50 / p99 / p99.9 µs | commands | WS connects | resumes ok | conflated / resynced / too slow | bad inputs | lost / failures |\n\
     |---|---|---|---|---|---|---|---|---|---|---|---|---|"
        .to_string()
}

pub fn row(r: &Row) -> String {
    let us = |ns: u64| ns.div_ceil(1_000);
    let ack = r.ack.map_or("—".to_string(), |a| {
        format!("{} / {} / {}", us(a.p50), us(a.p99), us(a.p999))
    });
    let mut out = String::new();
    let _ = write!(
        out,
        "| {} | {:.1} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} / {} / {} | {} | {} / {} |",
        clock(r.elapsed),
        r.process.rss_bytes as f64 / MIB as f64,
        r.process.fds,
        r.process.threads,
        r.tasks,
        r.cpu_percent,
        ack,
        r.counts.commands,
        r.counts.ws_connects,
        r.counts.resumes_verified,
        r.slow.conflated,
        r.slow.resynced,
        r.slow.too_slow,
        r.counts.bad_inputs,
        r.counts.lost,
        r.counts.failures,
    );
    out
}

/// `h:mm:ss`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Everything wrong with a run, judged from its rows; empty when it passes.
pub fn verdict(rows: &[Row]) -> Vec<String> {
    let mut problems = Vec::new();
    let lost: u64 = rows.iter().map(|r| r.counts.lost).sum();
    let failures: u64 = rows.iter().map(|r| r.counts.failures).sum();
    if lost > 0 {
        problems.push(format!("{lost} lost sequence numbers"));
    }
    if failures > 0 {
        problems.push(format!("{failures} unexpected answers or failed clients"));
    }
    let judged = &rows[WARMUP_INTERVALS.min(rows.len())..];
    let n = judged.len();
    if n < 3 {
        problems.push(format!(
            "too short to judge growth and drift: {n} intervals after the warm-up, at least 3 needed"
        ));
        return problems;
    }
    let third = n / 3;
    let (first, middle, last) = (
        &judged[..third],
        &judged[third..n - third],
        &judged[n - third..],
    );
    let peak = |rows: &[Row], f: fn(&Row) -> u64| rows.iter().map(f).max().unwrap_or(0);
    let mut growth = |what: &str, f: fn(&Row) -> u64, limit: &dyn Fn(u64) -> u64, unit: &str| {
        let (mid, end) = (peak(middle, f), peak(last, f));
        if end > limit(mid) {
            problems.push(format!(
                "{what} keeps growing: peak {end}{unit} in the last third, {mid}{unit} in the middle third (limit {}{unit})",
                limit(mid)
            ));
        }
    };
    growth(
        "RSS",
        |r| r.process.rss_bytes / MIB,
        &|mid| mid + mid * RSS_GROWTH.0 / 100 + RSS_GROWTH.1 / MIB,
        " MiB",
    );
    growth("open fds", |r| r.process.fds, &|mid| mid + FD_GROWTH, "");
    growth("alive tasks", |r| r.tasks, &|mid| mid + TASK_GROWTH, "");
    let p99s = |rows: &[Row]| -> Option<u64> {
        let mut v: Vec<u64> = rows.iter().filter_map(|r| r.ack.map(|a| a.p99)).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    };
    match (p99s(first), p99s(last)) {
        (Some(early), Some(late)) if late > DRIFT_FACTOR * early + DRIFT_SLACK_NS => {
            problems.push(format!(
                "ack latency drifts: median p99 {} µs in the last third, {} µs in the first (limit {} µs)",
                late / 1_000,
                early / 1_000,
                (DRIFT_FACTOR * early + DRIFT_SLACK_NS) / 1_000
            ))
        }
        (Some(_), Some(_)) => {}
        _ => problems.push("no order was acknowledged in the first or last third".into()),
    }
    problems
}

/// A warning, not a failure: RSS rose in every interval after the warm-up. Within the growth
/// limits that is a warm-up a short run cannot tell from a leak; a longer run can.
pub fn rss_trend(rows: &[Row]) -> Option<String> {
    let judged = &rows[WARMUP_INTERVALS.min(rows.len())..];
    let rising = judged.len() >= 2
        && judged
            .windows(2)
            .all(|w| w[1].process.rss_bytes > w[0].process.rss_bytes);
    rising.then(|| {
        let (first, last) = (&judged[0], &judged[judged.len() - 1]);
        format!(
            "note: RSS rose in every interval after the warm-up, {:.1} → {:.1} MiB over {}; run longer to see whether it levels off",
            first.process.rss_bytes as f64 / MIB as f64,
            last.process.rss_bytes as f64 / MIB as f64,
            clock(last.elapsed - first.elapsed),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows from per-interval RSS (MiB), fds, tasks and p99 (µs).
    fn rows(series: &[(u64, u64, u64, u64)]) -> Vec<Row> {
        series
            .iter()
            .enumerate()
            .map(|(i, &(rss, fds, tasks, p99))| Row {
                elapsed: Duration::from_secs(60 * (i as u64 + 1)),
                process: ProcessSample {
                    rss_bytes: rss * MIB,
                    fds,
                    threads: 8,
                    cpu_ns: 0,
                },
                cpu_percent: 30.0,
                tasks,
                ack: Some(AckLatency {
                    p50: p99 * 500,
                    p99: p99 * 1_000,
                    p999: p99 * 2_000,
                }),
                counts: Counts {
                    commands: 12_000,
                    ..Counts::default()
                },
                slow: SlowConsumers::default(),
            })
            .collect()
    }

    #[test]
    fn growth_that_levels_off_passes() {
        // A cold start climbs, then the process holds its size with noise.
        let mut series = vec![(40, 20, 50, 300), (90, 40, 120, 300), (110, 44, 140, 320)];
        for i in 0..27 {
            series.push((120 + i % 3, 44 + i % 5, 150 + i % 7, 300 + 10 * (i % 4)));
        }
        let problems = verdict(&rows(&series));
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn linear_rss_growth_fails() {
        let series: Vec<_> = (0..30).map(|i| (100 + 5 * i, 40, 150, 300)).collect();
        let problems = verdict(&rows(&series));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("RSS keeps growing"), "{problems:?}");
    }

    #[test]
    fn leaking_fds_and_tasks_fail() {
        let series: Vec<_> = (0..30)
            .map(|i| (100, 40 + 2 * i, 150 + 8 * i, 300))
            .collect();
        let problems = verdict(&rows(&series));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("open fds keeps growing"));
        assert!(problems[1].starts_with("alive tasks keeps growing"));
    }

    #[test]
    fn latency_drift_fails_and_noise_does_not() {
        // p99 from 0.4 ms to 4.8 ms: the last third's median (4.2 ms) is more than
        // 2 × the first third's (1.2 ms) + 1 ms.
        let drift: Vec<_> = (0..30).map(|i| (100, 40, 150, 400 + 150 * i)).collect();
        let problems = verdict(&rows(&drift));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("ack latency drifts"),
            "{problems:?}"
        );
        // One bad interval in the last third moves the median of the third not at all.
        let mut spike: Vec<_> = (0..30).map(|_| (100, 40, 150, 400)).collect();
        spike[27].3 = 50_000;
        assert!(verdict(&rows(&spike)).is_empty());
    }

    #[test]
    fn a_lost_sequence_or_a_failure_fails_whatever_the_curves() {
        let mut r = rows(&[(100, 40, 150, 300); 6]);
        r[3].counts.lost = 2;
        r[4].counts.failures = 1;
        assert_eq!(
            verdict(&r),
            vec![
                "2 lost sequence numbers".to_string(),
                "1 unexpected answers or failed clients".to_string()
            ]
        );
    }

    #[test]
    fn a_run_too_short_to_judge_does_not_pass() {
        let problems = verdict(&rows(&[(100, 40, 150, 300); 3]));
        assert!(problems[0].starts_with("too short"), "{problems:?}");
    }

    #[test]
    fn rss_rising_in_every_interval_is_noted() {
        let rising: Vec<_> = (0..6).map(|i| (100 + 12 * i, 40, 150, 300)).collect();
        let note = rss_trend(&rows(&rising)).expect("a note");
        assert!(note.contains("112.0 → 160.0 MiB over 0:04:00"), "{note}");
        let flat: Vec<_> = (0..6).map(|i| (100 + i % 2, 40, 150, 300)).collect();
        assert_eq!(rss_trend(&rows(&flat)), None);
    }

    #[test]
    fn a_row_prints_every_column() {
        let r = &rows(&[(100, 40, 150, 300)])[0];
        let line = row(r);
        assert_eq!(
            line.matches('|').count(),
            header().lines().next().unwrap().matches('|').count()
        );
        assert!(
            line.starts_with("| 0:01:00 | 100.0 | 40 | 8 | 150 | 30 | 150 / 300 / 600 |"),
            "{line}"
        );
    }
}
