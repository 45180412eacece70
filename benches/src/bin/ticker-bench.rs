//! `ticker-bench`: load and latency benchmarks of tickerd, one subcommand per target.
//!
//! ```sh
//! cargo run --release -p ticker-benches --bin ticker-bench -- engine --mode all
//! cargo run --release -p ticker-benches --bin ticker-bench -- journal
//! cargo run --release -p ticker-benches --bin ticker-bench -- recovery
//! cargo run --release -p ticker-benches --bin ticker-bench -- latency --spawn
//! cargo run --release -p ticker-benches --bin ticker-bench -- throughput --spawn
//! cargo run --release -p ticker-benches --bin ticker-bench -- fanout --spawn
//! cargo run --release -p ticker-benches --bin ticker-bench -- stream --spawn
//! cargo run --release -p ticker-benches --bin ticker-bench -- catchup
//! cargo run --release -p ticker-benches --bin ticker-bench -- soak --duration 10m
//! ```

use clap::{Parser, Subcommand};
use ticker_benches::catchup_load::{self, CatchupArgs};
use ticker_benches::dropcopy_load::{self, DropCopyArgs};
use ticker_benches::engine_load::{self, EngineArgs};
use ticker_benches::journal_load::{self, JournalArgs};
use ticker_benches::load::flow::{self, Pace};
use ticker_benches::load::{fanout, output, stream, FanoutArgs, FlowArgs, StreamArgs};
use ticker_benches::recovery_load::{self, RecoveryArgs};
use ticker_benches::soak::{self, SoakArgs};

#[derive(Debug, Parser)]
#[command(
    name = "ticker-bench",
    version,
    about = "Load and latency benchmarks of tickerd"
)]
struct Cli {
    #[command(subcommand)]
    target: Target,
}

#[derive(Debug, Subcommand)]
enum Target {
    /// Matching-engine throughput and latency on a seeded single-instrument stream.
    #[command(long_about = engine_load::LONG_ABOUT)]
    Engine(EngineArgs),
    /// What the journal costs: appending alone, and the pipeline with no journal, fsync off
    /// and fsync batch.
    #[command(long_about = journal_load::LONG_ABOUT)]
    Journal(JournalArgs),
    /// How long a start takes on a million journaled commands: from the journal alone, and
    /// from a snapshot plus the tail.
    #[command(long_about = recovery_load::LONG_ABOUT)]
    Recovery(RecoveryArgs),
    /// Order → ack and order → market-data latency at a fixed command rate, over gRPC and
    /// WebSocket (raw, shared deflate, per-connection deflate).
    Latency(FlowArgs),
    /// The same flow as fast as the server answers (`--window` commands in flight per client).
    Throughput(FlowArgs),
    /// How many drop-copy messages one gRPC consumer of RiskService/StreamDropCopy takes a
    /// second from a real market.
    #[command(long_about = dropcopy_load::LONG_ABOUT)]
    Dropcopy(DropCopyArgs),
    /// How fast a gateway catches up with the JetStream stream from a million messages behind.
    #[command(long_about = catchup_load::LONG_ABOUT)]
    Catchup(CatchupArgs),
    /// Thousands of WebSocket subscribers to one instrument, a sample of them verified.
    Fanout(FanoutArgs),
    /// How fast one connection takes a stream, per front: the spawned server's hub is fed
    /// pre-encoded messages as fast as the subscriber counts them.
    Stream(StreamArgs),
    /// tickerd (the release binary, as a child process) under mixed load for as long as asked:
    /// RSS, fds, threads, tasks, ack latency and slow-consumer counters every interval; fails
    /// on a lost sequence, an unexpected answer, growth that does not level off or a latency
    /// drift.
    Soak(SoakArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Every network mode ends the same way: its table on stdout, then the JSON and the plot.
    type Table = fn(&serde_json::Value) -> String;
    let (report, series, table, target): (_, _, Table, _) = match cli.target {
        Target::Engine(args) => return engine_load::run(&args, &mut out),
        Target::Journal(args) => return journal_load::run(&args, &mut out),
        Target::Recovery(args) => return recovery_load::run(&args, &mut out),
        Target::Dropcopy(args) => return dropcopy_load::run(&args, &mut out),
        Target::Catchup(args) => return catchup_load::run(&args, &mut out),
        Target::Soak(args) => return soak::run(&args, &mut out),
        Target::Latency(args) => {
            let (report, series) = flow::run("latency", Pace::Fixed(args.rate), &args)?;
            (report, series, output::flow_table, args.target)
        }
        Target::Throughput(args) => {
            let (report, series) = flow::run("throughput", Pace::Window(args.window), &args)?;
            (report, series, output::flow_table, args.target)
        }
        Target::Stream(args) => {
            let (report, series) = stream::run(&args)?;
            (report, series, output::stream_table, args.target)
        }
        Target::Fanout(args) => {
            let (report, series) = fanout::run(&args)?;
            (report, series, output::fanout_table, args.target)
        }
    };
    output::emit(&report, &table(&report), &series, &target, &mut out)
}
