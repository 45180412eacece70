//! `ticker-bench journal`: what the journal costs.
//!
//! - **append**: the workload's commands written by a [`JournalWriter`] alone, in records of
//!   `--run` commands (the engine's batch), with no sync (`fsync = off`) and with an
//!   `fdatasync` after every record (`batch` with no other work to overlap), into segments
//!   that grow as they are written and into preallocated ones: records/s, commands/s and MB/s.
//! - **pipeline**: the workload through the engine pipeline (producer → engine thread →
//!   consumer) with no journal, `fsync = off` and `fsync = batch` (group commit) into growing
//!   and into preallocated segments, the four interleaved `--rounds` times in one run so they
//!   share the machine's state: commands/s, and for each journaled pass the bytes, syncs and
//!   sync times.
//!
//! Journals go to `--dir` (default: a fresh directory under the system temp dir, removed at
//! the end); put it on the disk you want to measure.

use crate::engine_load::Wait;
use crate::pipeline_load::{self, JournalPass};
use crate::workload::{Workload, WorkloadConfig, DEFAULT_SEED, DEFAULT_WARMUP_ORDERS};
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use ticker_engine::journal::{
    DirStorage, FsyncMode, Journal, JournalConfig, JournalWriter, OpenOptions, SegmentLayout,
};

/// Arguments of `ticker-bench journal`.
#[derive(Clone, Debug, clap::Args)]
pub struct JournalArgs {
    /// Measured operations of the workload (after its warm-up orders).
    #[arg(long, default_value_t = 1_000_000)]
    pub ops: usize,
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Commands per record in the append bench (the engine writes one record per run of up
    /// to 256 commands).
    #[arg(long, default_value_t = 256)]
    pub run: usize,
    /// Times the three pipeline passes are repeated, interleaved.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Where the journals are written [default: a temporary directory, removed afterwards].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How the pipeline's threads wait.
    #[arg(long, value_enum, default_value_t = Wait::Park)]
    pub wait: Wait,
}

pub const LONG_ABOUT: &str = "\
What the journal costs: appending alone (records/s, MB/s with fsync off and with an fdatasync \
per record, into growing and into preallocated segments), and the engine pipeline's commands/s \
with no journal, fsync = off and fsync = batch (group commit, growing and preallocated \
segments), interleaved in one run. Output: Markdown tables, then one JSON line.";

pub fn run(args: &JournalArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let workload = Workload::generate(&WorkloadConfig {
        seed: args.seed,
        ops: args.ops,
        warmup_orders: DEFAULT_WARMUP_ORDERS,
        ..WorkloadConfig::default()
    });
    let (base, temporary) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("ticker-bench-journal-{}", std::process::id())),
            true,
        ),
    };
    let result = measure(args, &workload, &base, out);
    if temporary {
        let _ = std::fs::remove_dir_all(&base);
    }
    result
}

fn measure(
    args: &JournalArgs,
    workload: &Workload,
    base: &std::path::Path,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    writeln!(out, "workload: {}", workload.config.describe())?;
    writeln!(out, "journal directory: {}\n", base.display())?;
    let commands: Vec<_> = workload
        .setup
        .iter()
        .chain(&workload.ops)
        .cloned()
        .collect();

    writeln!(
        out,
        "| append, {} commands per record | records/s | commands/s | MB/s | bytes/command |",
        args.run
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    let mut json = Vec::new();
    let segments = |preallocate| SegmentLayout {
        bytes: JournalConfig::default().segment_bytes,
        preallocate,
    };
    for (mode, sync, layout) in [
        ("fsync = off", false, segments(true)),
        ("fdatasync per record, appending", true, segments(false)),
        ("fdatasync per record, preallocated", true, segments(true)),
    ] {
        let a = append(&commands, args.run, sync, layout, &base.join("append"))?;
        writeln!(
            out,
            "| {mode} | {:.0} | {:.0} | {:.1} | {:.1} |",
            a.records as f64 / a.elapsed.as_secs_f64(),
            a.commands as f64 / a.elapsed.as_secs_f64(),
            a.bytes as f64 / a.elapsed.as_secs_f64() / 1e6,
            a.bytes as f64 / a.commands as f64,
        )?;
        json.push(format!(
            "{{\"bench\":\"append\",\"mode\":\"{mode}\",\"run\":{},\"records\":{},\"commands\":{},\"bytes\":{},\"seconds\":{:.6}}}",
            args.run, a.records, a.commands, a.bytes, a.elapsed.as_secs_f64()
        ));
    }

    writeln!(out)?;
    writeln!(out, "| pipeline ({} ops) | commands/s | vs no journal | MB/s | fdatasyncs | commands per sync | mean sync | max sync |", workload.ops.len())?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    let modes: [(&str, Option<(FsyncMode, bool)>); 4] = [
        ("no journal", None),
        ("fsync = off", Some((FsyncMode::Off, true))),
        ("fsync = batch, appending", Some((FsyncMode::Batch, false))),
        (
            "fsync = batch, preallocated",
            Some((FsyncMode::Batch, true)),
        ),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut passes: Vec<Vec<JournalPass>> = vec![Vec::new(); modes.len()];
    for _ in 0..args.rounds.max(1) {
        for (i, (_, fsync)) in modes.iter().enumerate() {
            let config = fsync.map(|(fsync, preallocate)| JournalConfig {
                dir: base.join("pipeline"),
                fsync,
                preallocate,
                ..JournalConfig::default()
            });
            let pass =
                pipeline_load::run_pass(workload, args.wait.strategy(), None, config.as_ref())
                    .with_context(|| format!("pipeline pass, {}", modes[i].0))?;
            rates[i].push(workload.ops.len() as f64 / pass.elapsed.as_secs_f64());
            if let Some(j) = pass.journal {
                passes[i].push(j);
            }
        }
    }
    let best_plain = rates[0].iter().cloned().fold(0.0, f64::max);
    for (i, (name, _)) in modes.iter().enumerate() {
        let list = rates[i]
            .iter()
            .map(|r| format!("{:.2} M", r / 1e6))
            .collect::<Vec<_>>()
            .join(" / ");
        let best = rates[i].iter().cloned().fold(0.0, f64::max);
        let (mbs, syncs, per_sync, mean, max) = match passes[i].last() {
            None => ("—".into(), "—".into(), "—".into(), "—".into(), "—".into()),
            Some(j) => {
                let secs = workload.ops.len() as f64 / rates[i].last().copied().unwrap_or(1.0);
                (
                    format!("{:.1}", j.bytes as f64 / secs / 1e6),
                    j.syncs.to_string(),
                    if j.syncs == 0 {
                        "—".into()
                    } else {
                        format!("{:.0}", j.commands as f64 / j.syncs as f64)
                    },
                    if j.syncs == 0 {
                        "—".into()
                    } else {
                        format!("{:.0} µs", j.sync_total.as_micros() as f64 / j.syncs as f64)
                    },
                    format!("{:.0} µs", j.sync_max.as_micros() as f64),
                )
            }
        };
        writeln!(
            out,
            "| {name} | {list} | {:.0}% | {mbs} | {syncs} | {per_sync} | {mean} | {max} |",
            100.0 * best / best_plain
        )?;
        json.push(format!(
            "{{\"bench\":\"pipeline\",\"mode\":\"{name}\",\"ops\":{},\"commands_per_sec\":[{}]}}",
            workload.ops.len(),
            rates[i]
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    writeln!(out, "\n[{}]", json.join(","))?;
    Ok(())
}

struct Append {
    records: u64,
    commands: u64,
    bytes: u64,
    elapsed: Duration,
}

/// Writes `commands` in records of `run`, syncing each record if `sync`.
fn append(
    commands: &[ticker_engine::Command],
    run: usize,
    sync: bool,
    layout: SegmentLayout,
    dir: &std::path::Path,
) -> anyhow::Result<Append> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let storage = DirStorage::new(dir)?;
    let mut writer: JournalWriter<DirStorage> =
        Journal::open(storage, OpenOptions::default())?.into_writer(1, layout)?;
    let mut handle = writer.sync_handle()?;
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut records_synced = 0u64;
    let started = Instant::now();
    for chunk in commands.chunks(run.max(1)) {
        for c in chunk {
            writer.push(c);
        }
        let durable = if sync { records_synced } else { 0 };
        let commit = writer.commit(durable, None)?.expect("commands were pushed");
        bytes += commit.bytes;
        records += 1;
        if sync {
            handle.sync_data()?;
            if let Some(next) = commit.rotated {
                handle = next;
            }
            records_synced = commit.last;
        }
    }
    let elapsed = started.elapsed();
    drop(writer);
    let _ = std::fs::remove_dir_all(dir);
    Ok(Append {
        records,
        commands: commands.len() as u64,
        bytes,
        elapsed,
    })
}
