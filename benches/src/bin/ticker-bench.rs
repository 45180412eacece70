//! `ticker-bench`: load and latency benchmarks of tickerd, one subcommand per target.
//!
//! ```sh
//! cargo run --release -p ticker-benches --bin ticker-bench -- engine --mode all
//! ```

use clap::{Parser, Subcommand};
use ticker_benches::engine_load::{self, EngineArgs};

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    match cli.target {
        Target::Engine(args) => engine_load::run(&args, &mut stdout.lock()),
    }
}
