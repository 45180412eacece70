//! `ticker-bench engine`: throughput and latency of the matching engine on the seeded
//! [`Workload`], measured directly on [`Engine::apply`] (`book` mode) or through the threaded
//! pipeline (`pipeline` mode).
//!
//! Reading the clock around every operation costs about 20–40 ns, a large share of one
//! operation, so each mode runs the stream twice on fresh engines: a throughput pass with no
//! per-operation timing, then a latency pass that times every operation into an HDR histogram.

use crate::pipeline_load::{self, PipelineLoad};
use crate::report::{latency_histogram, record_ns, LatencySummary, ModeReport, Outcomes};
use crate::workload::{Workload, WorkloadConfig, DEFAULT_OPS, DEFAULT_SEED, DEFAULT_WARMUP_ORDERS};
use anyhow::{bail, Context};
use std::io::Write;
use std::time::Instant;
use ticker_engine::ring::WaitStrategy;
use ticker_engine::{CommandTag, Event, EventKind, RejectReason};

/// The `--help` text: what runs and how it is measured.
pub const LONG_ABOUT: &str = "\
Matching-engine throughput and latency on one instrument.

The command stream is generated in full before timing, from --seed: --warmup-orders resting
limit orders, then --ops operations: 50% limit orders 1-50 ticks from a fixed mid on a random
side (1-10 lots), 35% cancels by client order id of a random earlier limit order (rejected as
unknown if it already filled or was cancelled), 15% market orders (1-20 lots); 8 accounts with
self-trade prevention cancel-taker.

Modes: `book` applies the stream with Engine::apply on this thread; `pipeline` submits it from a
producer thread through the engine pipeline (ingress ring, engine thread, egress ring) to a
consumer thread.

Each mode runs twice on fresh engines, because reading the clock around every operation costs
~20-40 ns: ops_per_sec comes from a pass with no per-operation timing; the latency percentiles
come from a separate pass that times every operation (book: around Engine::apply; pipeline: from
its scheduled send time until the consumer sees the operation's outcome event, submitting
open-loop at --pipeline-rate, by default half the throughput just measured). Output: one JSON
line per mode.";

/// How each mode was measured, repeated in every report's `note`.
const BOOK_NOTE: &str = "ops_per_sec from a pass without per-op timing; latency percentiles from \
a separate pass on a fresh engine timing each Engine::apply with Instant (includes ~20-40 ns of \
clock reads)";

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
    pub fn workload_config(&self) -> WorkloadConfig {
        WorkloadConfig {
            seed: self.seed,
            ops: self.ops,
            warmup_orders: self.warmup_orders,
            ..WorkloadConfig::default()
        }
    }
}

/// Runs the modes `args` asks for and writes one JSON line per mode to `out`.
pub fn run(args: &EngineArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if args.ops == 0 {
        bail!("--ops must be at least 1, got 0");
    }
    if let Some(rate) = args.pipeline_rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--pipeline-rate must be a positive number of ops a second, got {rate}");
        }
    }
    let workload = Workload::generate(&args.workload_config());
    let modes: &[Mode] = match args.mode {
        Mode::All => &[Mode::Book, Mode::Pipeline],
        Mode::Book => &[Mode::Book],
        Mode::Pipeline => &[Mode::Pipeline],
    };
    for &mode in modes {
        let report = match mode {
            Mode::Book => measure_book(&workload)?,
            Mode::Pipeline => pipeline_load::measure(
                &workload,
                &PipelineLoad {
                    wait: args.wait.strategy(),
                    latency_rate: args.pipeline_rate,
                },
            )?,
            Mode::All => unreachable!("expanded above"),
        };
        writeln!(out, "{}", report.to_json_line()).context("writing the report")?;
        out.flush().context("writing the report")?;
    }
    Ok(())
}

/// Book mode: both passes on the calling thread.
pub fn measure_book(workload: &Workload) -> anyhow::Result<ModeReport> {
    let mut events: Vec<Event> = Vec::with_capacity(1024);

    let mut engine = workload.prepared_engine();
    let start = Instant::now();
    for cmd in &workload.ops {
        engine.apply(cmd, &mut events);
        events.clear();
    }
    let elapsed = start.elapsed();
    let throughput_seq = engine.last_seq();
    drop(engine);

    let mut engine = workload.prepared_engine();
    let mut histogram = latency_histogram();
    let mut outcomes = Outcomes::default();
    for cmd in &workload.ops {
        let t0 = Instant::now();
        engine.apply(cmd, &mut events);
        let ns = t0.elapsed().as_nanos() as u64;
        record_ns(&mut histogram, ns);
        tally(&events, &mut outcomes)?;
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

    Ok(ModeReport {
        mode: "book",
        ops: workload.ops.len() as u64,
        ops_per_sec: workload.ops.len() as f64 / elapsed.as_secs_f64(),
        latency: LatencySummary::of(&histogram),
        outcomes,
        note: BOOK_NOTE.into(),
        workload: workload.config.describe(),
    })
}

/// Adds one operation's events to `outcomes`, failing on a rejection the workload should never
/// cause (only cancels of orders that are gone may be rejected).
pub(crate) fn tally(events: &[Event], outcomes: &mut Outcomes) -> anyhow::Result<()> {
    outcomes.events += events.len() as u64;
    for e in events {
        match &e.kind {
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
    }
    Ok(())
}
