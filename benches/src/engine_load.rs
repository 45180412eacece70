//! `ticker-bench engine`: throughput and latency of the matching engine on the seeded
//! [`Workload`] of each [`Mix`], measured directly on [`Engine::apply`] (`book` mode) or through
//! the threaded pipeline (`pipeline` mode), beside a peer order book from crates.io
//! ([`crate::peer`]) run on the same stream.
//!
//! Reading the clock around every operation costs about 20–40 ns, a large share of one
//! operation, so each mode runs the stream twice on fresh engines: a throughput pass with no
//! per-operation timing, then a latency pass that times every operation into an HDR histogram.

use crate::peer::{self, PeerStream};
use crate::pipeline_load::{self, PipelineLoad};
use crate::report::{latency_histogram, record_ns, LatencySummary, ModeReport, Outcomes};
use crate::workload::{
    Mix, Workload, WorkloadConfig, DEFAULT_OPS, DEFAULT_SEED, DEFAULT_WARMUP_ORDERS,
};
use anyhow::{bail, Context};
use std::io::Write;
use std::time::Instant;
use ticker_engine::ring::WaitStrategy;
use ticker_engine::{Command, CommandTag, Event, EventKind, RejectReason};

/// The `--help` text: what runs and how it is measured.
pub const LONG_ABOUT: &str = "\
Matching-engine throughput and latency, beside a peer order book, on seeded streams.

The command stream is generated in full before timing, from --seed: --warmup-orders resting
limit orders, then --ops operations. --mix issue3 (the default), on one instrument: 50% limit
orders 1-50 ticks from a fixed mid on a random side (1-10 lots), 35% cancels by client order id
of a random earlier limit order (rejected as unknown if it already filled or was cancelled), 15%
market orders (1-20 lots); 8 accounts with self-trade prevention cancel-taker. --mix deep: limits
1-500 ticks from mid of 1-100 lots, market orders of 1-2,000 lots sweeping many levels (50%
limits, 48% cancels, 2% markets, so the book stays deep). --mix many: the issue3 shape on 1,000
instruments, each order's instrument drawn by a Zipf law (exponent 1). --mix all runs the three.

--peer lobster (the default) also runs lobster 0.7, an order book from crates.io, through its
own API on the same pre-generated stream (one book per instrument; it has no accounts, so no
self-trade prevention), with the same two passes as book mode.

Modes: `book` applies the stream with Engine::apply on this thread; `pipeline` submits it from a
producer thread through the engine pipeline (ingress ring, engine thread, egress ring) to a
consumer thread.

--limits on gives every account generous pre-trade limits (every limit set, none reached), so
the engine tracks positions and checks each limit on every order; --limits compare runs only the
book throughput pass, limits off then on, for --rounds rounds on the same stream, and reports the
medians and the share kept.

Each mode runs twice on fresh engines, because reading the clock around every operation costs
~20-40 ns: ops_per_sec comes from a pass with no per-operation timing; the latency percentiles
come from a separate pass that times every operation (book: around Engine::apply; pipeline: from
its scheduled send time until the consumer sees the operation's outcome event, submitting
open-loop at --pipeline-rate, by default half the throughput just measured). Book mode and the
peer repeat the latency pass once more and report repeat_max_ns: the slowest operation counted
at the faster of its two times, which a pause outside the operation (the thread descheduled)
rarely inflates but a pause inside it (a rehash) does. Output: one JSON
line per mix and mode on stdout (the peer's mode is \"lobster\"); then, on stderr so stdout stays
JSON, a table of every row with tickerd's book-mode throughput as a multiple of the peer's.";

/// How each mode was measured, repeated in every report's `note`.
const BOOK_NOTE: &str = "ops_per_sec from a pass without per-op timing (--apply runs: the stream \
in runs of 256 through Engine::apply_all, which starts each command's first memory loads while \
the two before it are applied; --apply one: Engine::apply per command); latency percentiles \
from a separate pass on a fresh engine timing each Engine::apply with Instant (includes ~20-40 \
ns of clock reads)";

/// Commands per `Engine::apply_all` call in book mode's throughput pass: the pipeline's
/// default `max_batch`.
const BOOK_RUN: usize = 256;

/// `--apply`: how book mode's throughput pass hands the stream to the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Apply {
    /// `Engine::apply_all` on runs of 256 commands (lookahead across commands).
    Runs,
    /// `Engine::apply`, one command at a time.
    One,
}

/// Which way to drive the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `Engine::apply` on the calling thread.
    Book,
    /// The threaded pipeline: producer thread, engine thread, consumer thread.
    Pipeline,
    /// `book`, then `pipeline`.
    All,
}

/// Arguments of `ticker-bench engine`.
#[derive(Clone, Debug, clap::Args)]
pub struct EngineArgs {
    /// Measured operations after the warm-up orders.
    #[arg(long, default_value_t = DEFAULT_OPS)]
    pub ops: usize,
    /// Seed of the command stream; the same seed gives the same stream.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Which way to drive the engine.
    #[arg(long, value_enum, default_value_t = Mode::All)]
    pub mode: Mode,
    /// Resting limit orders placed (untimed) before the measured operations.
    #[arg(long, default_value_t = DEFAULT_WARMUP_ORDERS)]
    pub warmup_orders: usize,
    /// Pipeline mode: how the producer, engine and consumer threads wait. `busy-spin` needs a
    /// free core per thread (three).
    #[arg(long, value_enum, default_value_t = Wait::Park)]
    pub wait: Wait,
    /// Pipeline mode: submission rate of the latency pass, in ops a second [default: half the
    /// throughput pass's ops_per_sec].
    #[arg(long)]
    pub pipeline_rate: Option<f64>,
    /// Pipeline mode: engine threads the instruments are spread over (`instrument % shards`).
    /// With more than one, a cancel by client id goes to every shard.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Pre-trade limits in the engine: `off`; `on` (generous limits on every account, so the
    /// engine tracks positions and checks every limit on every order but rejects nothing);
    /// `compare`: book-mode throughput with limits off and on in alternating rounds.
    #[arg(long, value_enum, default_value_t = LimitsMode::Off)]
    pub limits: LimitsMode,
    /// `--limits compare`: rounds of each setting (one pass each, off then on).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// The operation mix: `issue3`, `deep`, `many`, or `all` of them in turn.
    #[arg(long, value_enum, default_value_t = MixArg::Issue3)]
    pub mix: MixArg,
    /// The peer order book measured with book mode on the same stream, or `none`.
    #[arg(long, value_enum, default_value_t = Peer::Lobster)]
    pub peer: Peer,
    /// Book mode's throughput pass: `runs` of 256 commands through `Engine::apply_all`, or
    /// `one` command at a time through `Engine::apply` (the latency pass always times each
    /// `Engine::apply`).
    #[arg(long, value_enum, default_value_t = Apply::Runs)]
    pub apply: Apply,
}

/// `--mix`: one [`Mix`] or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MixArg {
    Issue3,
    Deep,
    Many,
    All,
}

impl MixArg {
    pub fn mixes(self) -> &'static [Mix] {
        match self {
            MixArg::Issue3 => &[Mix::Issue3],
            MixArg::Deep => &[Mix::Deep],
            MixArg::Many => &[Mix::Many],
            MixArg::All => &Mix::ALL,
        }
    }
}

/// `--peer`: which order book from crates.io runs beside book mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// lobster 0.7 ([`crate::peer`]).
    Lobster,
    /// No peer.
    None,
}

/// Whether the engine checks pre-trade limits while measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitsMode {
    Off,
    On,
    Compare,
}

/// The pipeline's wait strategies, with their default tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Wait {
    /// Spin, yield, then park until woken (the pipeline's default).
    Park,
    /// Spin, then yield between polls.
    SpinThenYield,
    /// Poll in a tight loop.
    BusySpin,
}

impl Wait {
    pub fn strategy(self) -> WaitStrategy {
        match self {
            Wait::Park => WaitStrategy::park(),
            Wait::SpinThenYield => WaitStrategy::spin_then_yield(),
            Wait::BusySpin => WaitStrategy::BusySpin,
        }
    }
}

impl EngineArgs {
    pub fn workload_config(&self, mix: Mix) -> WorkloadConfig {
        mix.config(self.seed, self.ops, self.warmup_orders)
    }
}

/// Runs the mixes and modes `args` asks for: one JSON line per mix and mode to `out`, then the
/// table of them all to stderr.
pub fn run(args: &EngineArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &mix in args.mix.mixes() {
        run_mix(args, mix, out, &mut rows)?;
    }
    if !rows.is_empty() {
        eprint!("{}", table(&rows));
    }
    Ok(())
}

/// One mix: its workload generated once, then each mode (and the peer after book mode).
fn run_mix(
    args: &EngineArgs,
    mix: Mix,
    out: &mut dyn Write,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    if args.ops == 0 {
        bail!("--ops must be at least 1, got 0");
    }
    if let Some(rate) = args.pipeline_rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--pipeline-rate must be a positive number of ops a second, got {rate}");
        }
    }
    if !(1..=ticker_engine::shard::MAX_SHARDS).contains(&args.shards) {
        bail!(
            "--shards must be 1..={}, got {}",
            ticker_engine::shard::MAX_SHARDS,
            args.shards
        );
    }
    let mut workload = Workload::generate(&args.workload_config(mix));
    match args.limits {
        LimitsMode::Off => {}
        LimitsMode::On => workload.risk = workload.generous_limits(),
        LimitsMode::Compare => return compare_limits(&workload, args.rounds, out),
    }
    let peer = match args.peer {
        Peer::Lobster if args.mode != Mode::Pipeline => Some(PeerStream::of(&workload)?),
        _ => None,
    };
    let modes: &[Mode] = match args.mode {
        Mode::All => &[Mode::Book, Mode::Pipeline],
        Mode::Book => &[Mode::Book],
        Mode::Pipeline => &[Mode::Pipeline],
    };
    for &mode in modes {
        let (mut report, repeat_max_ns) = match mode {
            Mode::Book => {
                let (report, repeat) = measure_book(&workload, args.apply)?;
                (report, Some(repeat))
            }
            Mode::Pipeline => {
                let load = PipelineLoad {
                    wait: args.wait.strategy(),
                    latency_rate: args.pipeline_rate,
                    shards: args.shards,
                };
                (pipeline_load::measure(&workload, &load)?, None)
            }
            Mode::All => unreachable!("expanded above"),
        };
        if args.limits == LimitsMode::On {
            report.note +=
                "; generous pre-trade limits on every account (every limit checked, none reached)";
        }
        let row = Row {
            mix,
            report,
            repeat_max_ns,
        };
        write_row(out, &row)?;
        rows.push(row);
        if let (Mode::Book, Some(peer)) = (mode, &peer) {
            let (mut report, repeat) = peer.measure(workload.ops.len() as u64)?;
            report.workload = workload.config.describe();
            let row = Row {
                mix,
                report,
                repeat_max_ns: Some(repeat),
            };
            write_row(out, &row)?;
            rows.push(row);
        }
    }
    Ok(())
}

/// One measured mode of one mix.
pub struct Row {
    pub mix: Mix,
    pub report: ModeReport,
    /// [`repeat_max_ns`], for the modes that measure it (book and the peer).
    pub repeat_max_ns: Option<u64>,
}

/// One row as a JSON line: `mix` first, then the report, then `repeat_max_ns` when measured.
fn write_row(out: &mut dyn Write, row: &Row) -> anyhow::Result<()> {
    let line = row.report.to_json_line();
    let body = line
        .strip_prefix('{')
        .and_then(|l| l.strip_suffix('}'))
        .context("a report is a JSON object")?;
    let repeat = row
        .repeat_max_ns
        .map_or(String::new(), |ns| format!(",\"repeat_max_ns\":{ns}"));
    writeln!(out, "{{\"mix\":\"{}\",{body}{repeat}}}", row.mix.name())
        .context("writing the report")?;
    out.flush().context("writing the report")
}

/// The rows as a table: one line per mix and mode, then per mix tickerd's book-mode
/// throughput as a multiple of the peer's.
pub fn table(rows: &[Row]) -> String {
    let mut t = format!(
        "{:<7} {:<9} {:>12} {:>8} {:>8} {:>9} {:>11} {:>13} {:>9}\n",
        "mix", "mode", "ops/s", "p50 ns", "p99 ns", "p99.9 ns", "max ns", "repeat max ns", "trades"
    );
    for row in rows {
        let r = &row.report;
        let repeat = row.repeat_max_ns.map_or("-".into(), |ns| ns.to_string());
        t += &format!(
            "{:<7} {:<9} {:>12.0} {:>8} {:>8} {:>9} {:>11} {:>13} {:>9}\n",
            row.mix.name(),
            r.mode,
            r.ops_per_sec,
            r.latency.p50_ns,
            r.latency.p99_ns,
            r.latency.p999_ns,
            r.latency.max_ns,
            repeat,
            r.outcomes.trades
        );
    }
    for &mix in &Mix::ALL {
        let of = |mode: &str| {
            rows.iter()
                .find(|row| row.mix == mix && row.report.mode == mode)
                .map(|row| row.report.ops_per_sec)
        };
        if let (Some(book), Some(peer)) = (of("book"), of(peer::NAME)) {
            t += &format!(
                "{}: tickerd book {:.2}x {} throughput\n",
                mix.name(),
                book / peer,
                peer::NAME
            );
        }
    }
    t
}

/// Book mode: both passes on the calling thread, then a repeat of the latency pass for
/// [`repeat_max_ns`]. Returns the report and that figure.
pub fn measure_book(workload: &Workload, apply: Apply) -> anyhow::Result<(ModeReport, u64)> {
    let mut events: Vec<Event> = Vec::with_capacity(1024);

    let mut engine = workload.prepared_engine();
    let start = Instant::now();
    match apply {
        Apply::Runs => {
            for run in workload.ops.chunks(BOOK_RUN) {
                engine.apply_all(run, &mut events);
                events.clear();
            }
        }
        Apply::One => {
            for cmd in &workload.ops {
                engine.apply(cmd, &mut events);
                events.clear();
            }
        }
    }
    let elapsed = start.elapsed();
    let throughput_seq = engine.last_seq();
    drop(engine);

    let mut engine = workload.prepared_engine();
    let mut histogram = latency_histogram();
    let mut outcomes = Outcomes::default();
    let mut first = Vec::with_capacity(workload.ops.len());
    for cmd in &workload.ops {
        let t0 = Instant::now();
        engine.apply(cmd, &mut events);
        let ns = t0.elapsed().as_nanos() as u64;
        record_ns(&mut histogram, ns);
        first.push(ns);
        tally(&events, &mut outcomes)?;
        events.clear();
    }
    drop(engine);
    let mut engine = workload.prepared_engine();
    let mut second = Vec::with_capacity(workload.ops.len());
    for cmd in &workload.ops {
        let t0 = Instant::now();
        engine.apply(cmd, &mut events);
        second.push(t0.elapsed().as_nanos() as u64);
        events.clear();
    }
    if engine.last_seq() != throughput_seq {
        bail!(
            "the two passes diverged: last event seq {} in the throughput pass, {} in the \
             latency pass",
            throughput_seq,
            engine.last_seq()
        );
    }

    let report = ModeReport {
        mode: "book",
        ops: workload.ops.len() as u64,
        ops_per_sec: workload.ops.len() as f64 / elapsed.as_secs_f64(),
        latency: LatencySummary::of(&histogram),
        outcomes,
        note: BOOK_NOTE.into(),
        workload: workload.config.describe(),
    };
    Ok((report, repeat_max_ns(&first, &second)))
}

/// The slowest operation of a stream timed twice on fresh engines, each operation counted at
/// the faster of its two times: what the operation itself costs at worst. A pause that is not
/// the operation's (the thread descheduled, an interrupt) rarely hits the same operation in
/// both passes, so it shows in `max_ns` but not here; work the operation does every time (a
/// rehash inside it) shows in both.
pub fn repeat_max_ns(first: &[u64], second: &[u64]) -> u64 {
    first
        .iter()
        .zip(second)
        .map(|(&a, &b)| a.min(b))
        .max()
        .unwrap_or(0)
}

/// One book-mode throughput pass (no per-operation timing) on a fresh engine prepared with
/// `risk`: operations a second and the last event's sequence number.
fn throughput_pass(workload: &Workload, risk: &[Command]) -> (f64, u64) {
    let mut events: Vec<Event> = Vec::with_capacity(1024);
    let mut engine = workload.prepared_engine_with(risk);
    let start = Instant::now();
    for cmd in &workload.ops {
        engine.apply(cmd, &mut events);
        events.clear();
    }
    let elapsed = start.elapsed();
    (
        workload.ops.len() as f64 / elapsed.as_secs_f64(),
        engine.last_seq(),
    )
}

/// `--limits compare`: book-mode throughput without and with limits, in alternating rounds on
/// one workload (so drift of the machine hits both alike), after one untimed pass with limits
/// that checks nothing was rejected. One JSON line per pass, then a summary with the medians
/// and the share of throughput kept with limits on.
pub fn compare_limits(
    workload: &Workload,
    rounds: usize,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if rounds == 0 {
        bail!("--rounds must be at least 1, got 0");
    }
    let limits = workload.generous_limits();
    let mut engine = workload.prepared_engine_with(&limits);
    let (mut events, mut outcomes) = (Vec::new(), Outcomes::default());
    for cmd in &workload.ops {
        engine.apply(cmd, &mut events);
        tally(&events, &mut outcomes)?;
        events.clear();
    }
    let checked_seq = engine.last_seq();
    drop(engine);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Which goes first alternates, so neither always runs on a warmer (or hotter) machine.
        let mut passes = [("off", &[][..], &mut off), ("on", &limits[..], &mut on)];
        if round % 2 == 0 {
            passes.reverse();
        }
        for (name, risk, results) in passes {
            let (ops_per_sec, seq) = throughput_pass(workload, risk);
            if name == "on" && seq != checked_seq {
                bail!("round {round}: the limits pass diverged from the checked one");
            }
            results.push(ops_per_sec);
            writeln!(
                out,
                "{{\"mode\":\"book\",\"limits\":\"{name}\",\"round\":{round},\"ops\":{},\"ops_per_sec\":{ops_per_sec:.0}}}",
                workload.ops.len()
            )?;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off, on) = (median(&mut off), median(&mut on));
    writeln!(
        out,
        "{{\"mode\":\"book\",\"limits\":\"compare\",\"rounds\":{rounds},\"off_median_ops_per_sec\":{off:.0},\"on_median_ops_per_sec\":{on:.0},\"kept\":{:.3},\"rejected\":{},\"trades\":{},\"workload\":{}}}",
        on / off,
        outcomes.rejected,
        outcomes.trades,
        serde_json::Value::from(workload.config.describe())
    )?;
    out.flush().context("writing the report")?;
    Ok(())
}

/// Adds one operation's events to `outcomes`, failing on a rejection the workload should never
/// cause (only cancels of orders that are gone may be rejected).
pub(crate) fn tally(events: &[Event], outcomes: &mut Outcomes) -> anyhow::Result<()> {
    outcomes.events += events.len() as u64;
    events
        .iter()
        .try_for_each(|e| tally_kind(&e.kind, outcomes))
}

/// Counts one event's trade or reject (not the event itself); fails on a reject the workload
/// does not expect.
pub(crate) fn tally_kind(kind: &EventKind, outcomes: &mut Outcomes) -> anyhow::Result<()> {
    match kind {
        EventKind::Trade { .. } => outcomes.trades += 1,
        EventKind::Rejected {
            command: CommandTag::Cancel,
            reason: RejectReason::UnknownOrder,
            ..
        } => outcomes.rejected += 1,
        EventKind::Rejected {
            corr,
            command,
            reason,
            ..
        } => bail!(
            "the workload's command {corr} ({command:?}) was rejected with {reason}; only \
             cancels of orders already gone should be"
        ),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_max_counts_each_operation_at_its_faster_time() {
        // The 900 ns and 700 ns pauses hit different operations: neither is the operation's.
        assert_eq!(repeat_max_ns(&[5, 900, 7], &[6, 8, 700]), 8);
        // A pause in both passes is.
        assert_eq!(repeat_max_ns(&[5, 900, 7], &[6, 800, 7]), 800);
        assert_eq!(repeat_max_ns(&[], &[]), 0);
    }
}
