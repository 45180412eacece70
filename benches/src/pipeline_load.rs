//! `ticker-bench engine --mode pipeline`: the workload through the threaded pipeline
//! ([`ticker_engine::pipeline`]): one producer thread submits through an [`Ingress`], the engine
//! thread matches, one consumer thread drains event [`Batch`]es from the [`Egress`].
//!
//! - The throughput pass submits as fast as the ingress accepts and ends when the consumer
//!   sees the outcome of the last operation.
//! - The latency pass submits open-loop at a fixed rate (by default half the throughput just
//!   measured, so queues stay short) and measures, per operation, from the time it was
//!   *scheduled* to be sent until the consumer sees its outcome event (matched by `corr`).
//!   Measuring from the schedule rather than the actual send keeps a stalled producer from
//!   hiding the delay it caused (coordinated omission).
//!
//! [`Ingress`]: ticker_engine::Ingress
//! [`Batch`]: ticker_engine::Batch

use crate::engine_load::tally_kind;
use crate::report::{latency_histogram, record_ns, LatencySummary, ModeReport, Outcomes};
use crate::workload::Workload;
use anyhow::{anyhow, bail, Context};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use ticker_engine::journal::{DirStorage, Journal, JournalConfig, OpenOptions};
use ticker_engine::pipeline::{
    JournalSetup, Pipeline, PipelineConfig, RecvTimeoutError, ShardedPipeline,
};
use ticker_engine::ring::WaitStrategy;
use ticker_engine::{Batch, Command, Engine, FanIn, Offered};

/// A paced producer ahead of schedule by more than this sleeps instead of yielding.
const PACING_SLEEP_THRESHOLD: Duration = Duration::from_micros(200);
/// A pass fails when the consumer sees no event for this long while outcomes are missing.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Share of the measured throughput the latency pass submits at when no rate is given.
const DEFAULT_LOAD_PERCENT: f64 = 50.0;

/// How the pipeline is driven.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PipelineLoad {
    /// How the producer, engine and consumer threads wait.
    pub wait: WaitStrategy,
    /// Submission rate of the latency pass in operations a second; `None` for
    /// [`DEFAULT_LOAD_PERCENT`] of the throughput pass's rate.
    pub latency_rate: Option<f64>,
    /// Engine threads the instruments are spread over ([`ticker_engine::shard`]); 1 runs the
    /// plain pipeline.
    pub shards: usize,
}

/// What one pass through the pipeline saw.
pub struct Pass {
    /// From the first submit until the consumer saw the last outcome.
    pub elapsed: Duration,
    pub last_seq: u64,
    pub histogram: Option<Histogram<u64>>,
    pub outcomes: Outcomes,
    /// With a journal: bytes written, `fdatasync` calls, their total and longest time.
    pub journal: Option<JournalPass>,
}

/// What the journal did during a pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct JournalPass {
    pub bytes: u64,
    pub commands: u64,
    pub syncs: u64,
    pub sync_total: Duration,
    pub sync_max: Duration,
}

/// Both passes of pipeline mode.
pub fn measure(workload: &Workload, load: &PipelineLoad) -> anyhow::Result<ModeReport> {
    let pass = |rate| match load.shards {
        0 | 1 => run_pass(workload, load.wait, rate, None),
        n => run_sharded_pass(workload, load.wait, rate, n),
    };
    let throughput = pass(None)?;
    let ops = workload.ops.len() as u64;
    let ops_per_sec = ops as f64 / throughput.elapsed.as_secs_f64();
    let rate = load
        .latency_rate
        .unwrap_or(ops_per_sec * DEFAULT_LOAD_PERCENT / 100.0);
    if !(rate.is_finite() && rate > 0.0) {
        bail!("the latency pass needs a positive submission rate, got {rate} ops/s");
    }
    let latency = pass(Some(rate))?;
    if latency.last_seq != throughput.last_seq {
        bail!(
            "the two passes diverged: last event seq {} in the throughput pass, {} in the \
             latency pass",
            throughput.last_seq,
            latency.last_seq
        );
    }
    let histogram = latency
        .histogram
        .ok_or_else(|| anyhow!("the latency pass recorded no histogram"))?;
    Ok(ModeReport {
        mode: "pipeline",
        ops,
        ops_per_sec,
        latency: LatencySummary::of(&histogram),
        outcomes: latency.outcomes,
        note: format!(
            "ops_per_sec from a pass submitting as fast as the ingress accepts, until the \
             consumer saw the last outcome; latency percentiles from a separate pass on a fresh \
             engine submitting open-loop at {rate:.0} ops/s, from each op's scheduled send time \
             to the consumer seeing its outcome event (Instant reads included); wait strategy \
             {:?}; 1 producer, {} and 1 consumer thread",
            load.wait,
            match load.shards {
                0 | 1 => "engine".to_string(),
                n => format!(
                    "{n} engine threads (shards; cancels by client id go to every shard, \
                     their replies folded)"
                ),
            }
        ),
        workload: workload.config.describe(),
    })
}

/// Runs the measured operations through a fresh pipeline. With `rate`, submits at that many
/// operations a second and records each one's latency. With `journal`, every command is
/// journaled into a fresh journal in that directory (emptied first) under its fsync mode.
pub fn run_pass(
    workload: &Workload,
    wait: WaitStrategy,
    rate: Option<f64>,
    journal: Option<&JournalConfig>,
) -> anyhow::Result<Pass> {
    let config = PipelineConfig {
        wait,
        engine: workload.engine_config(),
        ..PipelineConfig::default()
    };
    let engine = workload.prepared_engine();
    // Cloned before the clock starts, so the producer only moves commands into the ring.
    let commands: Vec<Command> = workload.ops.clone();
    let first_corr = commands.first().map_or(0, |c| c.corr);
    let last_corr = commands.last().map_or(0, |c| c.corr);
    // Scheduled send time of each operation, in ns after `base`, indexed by `corr - first_corr`.
    // Written by the producer before the submit and read by the consumer after the outcome:
    // the rings' release/acquire hand-offs order the two, so relaxed accesses suffice.
    let sent: Vec<AtomicU64> = (0..commands.len()).map(|_| AtomicU64::new(0)).collect();
    let interval_ns = rate.map(|r| 1e9 / r);

    let (pipeline, ingress, mut egress) = match journal {
        None => Pipeline::spawn_with(engine, config).context("starting the engine thread")?,
        Some(j) => {
            if j.dir.exists() {
                std::fs::remove_dir_all(&j.dir)
                    .with_context(|| format!("emptying {}", j.dir.display()))?;
            }
            let storage =
                DirStorage::new(&j.dir).with_context(|| format!("creating {}", j.dir.display()))?;
            let writer =
                Journal::open(storage, OpenOptions::default())?.into_writer(1, j.segments())?;
            let setup = JournalSetup {
                writer,
                fsync: j.fsync,
                group_commit_bytes: j.group_commit_bytes,
                group_commit_delay: j.group_commit_delay,
            };
            Pipeline::spawn_journaled(engine, config, setup)
                .context("starting the engine thread")?
        }
    };
    let base = Instant::now();
    let (consumed, submitted) = thread::scope(|s| {
        let sent = &sent;
        let producer = s.spawn(move || {
            produce(commands, base, interval_ns, sent, |command| {
                ingress
                    .submit(command)
                    .map_err(|e| anyhow!("submitting to the pipeline: {e}"))
            })
        });
        let egress = &mut egress;
        let consumer = s.spawn(move || {
            let recv = || {
                egress
                    .recv_deadline(Instant::now() + STALL_TIMEOUT)
                    .map_err(|e| match e {
                        RecvTimeoutError::Timeout => {
                            format!("the pipeline stalled: no events for {STALL_TIMEOUT:?}")
                        }
                        RecvTimeoutError::Closed => "the engine thread stopped".to_string(),
                    })
            };
            let ops = last_corr + 1 - first_corr;
            consume(
                recv,
                FanIn::new(),
                base,
                sent,
                first_corr,
                ops,
                interval_ns.is_some(),
            )
        });
        (consumer.join(), producer.join())
    });
    // Every outcome is in (or the pass failed): stop the engine thread and take it back.
    pipeline.shutdown();
    drop(egress);
    let journal = pipeline.durability().map(|d| {
        let (syncs, sync_total, sync_max) = d.sync_stats();
        JournalPass {
            bytes: d.written_bytes(),
            commands: d.written(),
            syncs,
            sync_total,
            sync_max,
        }
    });
    let failure = pipeline.journal_failure();
    let engine = pipeline.join();
    if let Some(why) = failure {
        bail!("the journal failed: {why}");
    }
    submitted.map_err(|_| anyhow!("the producer thread panicked"))??;
    let (histogram, outcomes, last_seen) =
        consumed.map_err(|_| anyhow!("the consumer thread panicked"))??;
    Ok(Pass {
        elapsed: Duration::from_nanos(last_seen),
        last_seq: engine.last_seq(),
        histogram,
        outcomes,
        journal,
    })
}

/// [`run_pass`] through `shards` engine threads ([`ShardedPipeline`]): an operation's latency
/// ends when the consumer has every shard's outcome of it (a cancel by client id goes to
/// every shard; [`FanIn`] folds the replies).
pub fn run_sharded_pass(
    workload: &Workload,
    wait: WaitStrategy,
    rate: Option<f64>,
    shards: usize,
) -> anyhow::Result<Pass> {
    let config = PipelineConfig {
        wait,
        engine: workload.engine_config(),
        ..PipelineConfig::default()
    };
    let engines = workload.prepared_shards(shards)?;
    let commands: Vec<Command> = workload.ops.clone();
    let first_corr = commands.first().map_or(0, |c| c.corr);
    let last_corr = commands.last().map_or(0, |c| c.corr);
    // Told before the clock starts which operations fan out, so the consumer folds them.
    let mut fan = FanIn::with_capacity(commands.len());
    for c in &commands {
        fan.expect_command(c.corr, &c.kind, shards);
    }
    let sent: Vec<AtomicU64> = (0..commands.len()).map(|_| AtomicU64::new(0)).collect();
    let interval_ns = rate.map(|r| 1e9 / r);
    let (pipeline, ingress, mut egress) =
        ShardedPipeline::spawn_with(engines, config).context("starting the engine threads")?;
    let base = Instant::now();
    let (consumed, submitted) = thread::scope(|s| {
        let sent = &sent;
        let producer = s.spawn(move || {
            produce(commands, base, interval_ns, sent, |command| {
                ingress
                    .submit(command)
                    .map(drop)
                    .map_err(|e| anyhow!("submitting to the shards: {e}"))
            })
        });
        let egress = &mut egress;
        let consumer = s.spawn(move || {
            let recv = || {
                egress
                    .recv_deadline(Instant::now() + STALL_TIMEOUT)
                    .map(|(_, batch)| batch)
                    .map_err(|e| format!("the shards gave no more events ({e})"))
            };
            let ops = last_corr + 1 - first_corr;
            consume(
                recv,
                fan,
                base,
                sent,
                first_corr,
                ops,
                interval_ns.is_some(),
            )
        });
        (consumer.join(), producer.join())
    });
    pipeline.shutdown();
    drop(egress);
    let engines = pipeline.join();
    submitted.map_err(|_| anyhow!("the producer thread panicked"))??;
    let (histogram, outcomes, last_seen) =
        consumed.map_err(|_| anyhow!("the consumer thread panicked"))??;
    Ok(Pass {
        elapsed: Duration::from_nanos(last_seen),
        last_seq: engines.iter().map(Engine::last_seq).sum(),
        histogram,
        outcomes,
        journal: None,
    })
}

/// The consumer of a pass: takes batches from `recv` until every one of the `ops` operations
/// (correlation ids from `first_corr`) has its reply, folding the outcomes of commands sent to
/// several shards with `fan` (with one engine nothing is folded). When `timed`, records each
/// reply's latency from its due time in `sent` and counts events, trades and rejects (from the
/// replies, not from each shard's outcome). Returns the histogram, the counts and the time of
/// the last reply after `base`.
fn consume(
    mut recv: impl FnMut() -> Result<Batch, String>,
    mut fan: FanIn,
    base: Instant,
    sent: &[AtomicU64],
    first_corr: u64,
    ops: u64,
    timed: bool,
) -> anyhow::Result<(Option<Histogram<u64>>, Outcomes, u64)> {
    let mut histogram = timed.then(latency_histogram);
    let mut outcomes = Outcomes::default();
    let mut seen: u64 = 0;
    loop {
        let batch = recv()
            .map_err(|why| anyhow!("{why} after the outcomes of {seen} of {ops} operations"))?;
        let now = base.elapsed().as_nanos() as u64;
        if timed {
            outcomes.events += batch.len() as u64;
        }
        for e in batch.iter() {
            let folded;
            let kind = match fan.offer(&e.kind) {
                Offered::Held => continue,
                Offered::Folded(reply) => {
                    folded = reply;
                    &folded
                }
                Offered::Pass => &e.kind,
            };
            if timed {
                tally_kind(kind, &mut outcomes)?;
            }
            let Some(corr) = kind.outcome_corr() else {
                continue;
            };
            seen += 1;
            if let Some(histogram) = histogram.as_mut() {
                let due = sent[(corr - first_corr) as usize].load(Ordering::Relaxed);
                record_ns(histogram, now.saturating_sub(due));
            }
        }
        // Shards run apart: the last operation's reply can come before earlier ones'.
        if seen == ops {
            return Ok((histogram, outcomes, now));
        }
    }
}

/// Submits `commands` in order; when paced, each at its due time (`interval_ns` apart from
/// `base`), recorded in `sent` before the submit.
fn produce(
    commands: Vec<Command>,
    base: Instant,
    interval_ns: Option<f64>,
    sent: &[AtomicU64],
    mut submit: impl FnMut(Command) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for (i, command) in commands.into_iter().enumerate() {
        if let Some(interval) = interval_ns {
            let due = (i as f64 * interval) as u64;
            wait_until(base, due);
            sent[i].store(due, Ordering::Relaxed);
        }
        submit(command)?;
    }
    Ok(())
}

/// Waits until `due_ns` after `base`: sleeping while far ahead, then yielding so the engine
/// and consumer threads keep the cores.
fn wait_until(base: Instant, due_ns: u64) {
    loop {
        let now = base.elapsed().as_nanos() as u64;
        if now >= due_ns {
            return;
        }
        let ahead = Duration::from_nanos(due_ns - now);
        if ahead > PACING_SLEEP_THRESHOLD {
            thread::sleep(ahead - PACING_SLEEP_THRESHOLD / 2);
        } else {
            thread::yield_now();
        }
    }
}
