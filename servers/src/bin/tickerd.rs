//! `tickerd`: the ticker engine as one program.
//!
//! Runs the engine thread, the feeds, the market simulator (unless `--no-sim`), the gRPC front
//! and the HTTP front (WebSocket feed, trader page, `/healthz`, `/metrics`) with the embedded
//! defaults, overridden by a TOML file, `TICKERD_*` variables and flags (see
//! `ticker_servers::config`). SIGINT or SIGTERM stops ingress, drains the engine, closes
//! WebSocket clients with 1001 and ends gRPC streams.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use ticker_servers::bus::publisher::Publisher;
use ticker_servers::bus::Role;
use ticker_servers::config::{ConfigError, Layers, TickerdConfig};
use ticker_servers::grpc::GrpcServer;
use ticker_servers::market::Market;
use ticker_servers::ws::WsServer;

/// A real-time trading ticker engine: matching core, gRPC and WebSocket fronts.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Flags {
    /// TOML config file (every key: tickerd.example.toml) [env: TICKERD_CONFIG].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Take orders only from clients: no simulated market.
    #[arg(long)]
    no_sim: bool,
    /// Where gRPC listens (grpc.listen).
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<String>,
    /// Where HTTP/WebSocket listens (http.listen).
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// A bearer token: TOKEN=ACCOUNT (a trader of that account), TOKEN=ROLE or
    /// TOKEN=ROLE:ACCOUNT (role: trader, risk, admin); repeatable.
    #[arg(long, value_name = "TOKEN=ACCOUNT|ROLE[:ACCOUNT]")]
    token: Vec<String>,
    /// Any config key, as in the file: `--set http.deflate=per-connection`; repeatable.
    #[arg(long, value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// What this process is (bus.role): all (one process, the default), matcher (engine,
    /// journal and feeds, publishing to NATS JetStream) or gateway (the fronts, fed from
    /// JetStream; needs bus.node).
    #[arg(long, value_name = "all|matcher|gateway")]
    role: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// The data directory: journal and snapshots (journal.dir) [default: ./tickerd-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// No journal: nothing survives a restart (journal.enabled = false).
    #[arg(long)]
    no_journal: bool,
    #[command(subcommand)]
    tool: Option<Tool>,
}

#[derive(Subcommand, Debug)]
enum Tool {
    /// Inspect a data directory (read-only; safe on a copy or beside a running tickerd). A
    /// sharded market's (shard-K subdirectories) is taken shard by shard.
    #[command(subcommand)]
    Journal(JournalTool),
}

#[derive(Subcommand, Debug)]
enum JournalTool {
    /// Check every checksum, the continuity of command indexes, that every command decodes
    /// and that every snapshot reads back; sharded, also that every snapshot round has each
    /// shard's file. Exit status 1 if anything is wrong.
    Verify { dir: PathBuf },
    /// Print snapshots and journaled commands; sharded, each shard's, with each record's
    /// merge ticket.
    Inspect {
        dir: PathBuf,
        /// First command index to print [default: the first on disk]; sharded, of each shard.
        #[arg(long)]
        from: Option<u64>,
        /// Most commands to print (sharded: per shard).
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Rebuild the engine from the newest snapshot and the journal after it, and print each
    /// book's checksum (equal output = equal state); sharded, every shard's engine from the
    /// newest whole round, the runs merged by ticket, with the merged event seq.
    Replay {
        dir: PathBuf,
        /// Ignore snapshots: replay the journal from its first command (needs every segment;
        /// sharded, of every shard).
        #[arg(long)]
        full: bool,
    },
}

fn load(flags: &Flags) -> Result<TickerdConfig, ConfigError> {
    let mut layers = Layers::new();
    let file = flags
        .config
        .clone()
        .or_else(|| std::env::var_os("TICKERD_CONFIG").map(PathBuf::from));
    if let Some(path) = file {
        layers.file_at(&path)?;
    }
    layers.env(std::env::vars())?;
    if flags.no_sim {
        layers.set("market.simulator", "false", "--no-sim")?;
    }
    if flags.no_journal {
        layers.set("journal.enabled", "false", "--no-journal")?;
    }
    if let Some(dir) = &flags.data_dir {
        let value = toml::Value::String(dir.display().to_string()).to_string();
        layers.set("journal.dir", &value, "--data-dir")?;
    }
    if let Some(role) = &flags.role {
        layers.set("bus.role", &format!("{role:?}"), "--role")?;
    }
    if let Some(addr) = &flags.grpc_listen {
        layers.set("grpc.listen", &format!("{addr:?}"), "--grpc-listen")?;
    }
    if let Some(addr) = &flags.http_listen {
        layers.set("http.listen", &format!("{addr:?}"), "--http-listen")?;
    }
    for spec in &flags.token {
        layers.token(spec, "--token")?;
    }
    for spec in &flags.set {
        let Some((key, value)) = spec.split_once('=') else {
            return Err(ConfigError::Syntax {
                origin: "--set".into(),
                reason: format!("{spec:?} is not SECTION.KEY=VALUE"),
            });
        };
        layers.set(key, value, &format!("--set {key}"))?;
    }
    layers.finish()
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    if let Some(Tool::Journal(tool)) = &flags.tool {
        return journal_tool(tool);
    }
    let config = match load(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tickerd: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if flags.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    ticker_servers::logging::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tickerd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickerd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn journal_tool(tool: &JournalTool) -> ExitCode {
    use ticker_servers::journal_tool as t;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Whether the directory is sound (only `verify` can find otherwise without failing).
    let sound = match tool {
        JournalTool::Verify { dir } => t::verify(dir, &mut out),
        JournalTool::Inspect { dir, from, limit } => {
            t::inspect(dir, *from, *limit, &mut out).map(|()| true)
        }
        JournalTool::Replay { dir, full } => t::replay(dir, *full, &mut out).map(|()| true),
    };
    match sound {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("tickerd journal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a start-up line. Whoever started tickerd may have stopped reading its output (a
/// supervisor, a test that has its addresses): a closed stdout must not stop the server, as
/// `println!` would, by panicking on the broken pipe.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

async fn run(config: TickerdConfig) -> anyhow::Result<()> {
    let stop = StopSignal::install();
    let bus = config.bus_config();
    let market = match bus.role {
        Role::All => Market::start(config.market_config())?,
        Role::Matcher => {
            let publisher = Publisher::start(&bus).await.map_err(anyhow::Error::msg)?;
            let market = Market::start_matcher(config.market_config(), bus.clone(), publisher)?;
            let client = market
                .bus()
                .map(|b| b.client().clone())
                .expect("a matcher has a bus");
            let stale = market.take_foreign_sessions();
            ticker_servers::bus::commands::serve(market.clone(), client, bus.clone(), stale)
                .await
                .map_err(anyhow::Error::msg)?;
            market
        }
        Role::Gateway => Market::start_gateway(config.market_config(), bus.clone()).await?,
    };
    let grpc = if config.grpc.enabled {
        Some(GrpcServer::start(market.clone(), config.grpc_config()).await?)
    } else {
        None
    };
    let http = if config.http.enabled {
        Some(WsServer::start(market.clone(), config.ws_config()).await?)
    } else {
        None
    };
    let symbols: Vec<_> = market
        .instruments()
        .all()
        .iter()
        .map(|w| w.symbol().to_string())
        .collect();
    say!(
        "tickerd {}: {} ({})",
        env!("CARGO_PKG_VERSION"),
        match bus.role {
            Role::Gateway => "gateway: market data from the bus, orders to the matcher",
            _ if config.market.simulator => "simulated market running",
            _ => "no simulator: orders come from clients only",
        },
        symbols.join(", ")
    );
    if bus.role != Role::All {
        say!(
            "bus:          {} at {} (stream {}, subjects {}.>)",
            bus.role.as_str(),
            bus.url,
            bus.stream,
            bus.subject_prefix
        );
    }
    if let Some(http) = &http {
        let addr = http.local_addr();
        say!("trader page:  http://{addr}/");
        say!("WebSocket:    ws://{addr}/ws  (metrics: http://{addr}/metrics)");
    }
    if let Some(grpc) = &grpc {
        say!(
            "gRPC:         {}://{}  (ticker.v1.MarketDataService, ticker.v1.OrderService; reflection on)",
            if config.grpc.tls_cert.is_some() { "https" } else { "http" },
            grpc.local_addr()
        );
    }
    if config.auth.tokens.is_empty() {
        say!("order entry:  no tokens configured (--token TOKEN=ACCOUNT to trade)");
    }
    match market.journal() {
        Some(j) => say!(
            "journal:      {} (fsync {}); {}; a restart continues this market (--no-journal: it does not)",
            j.config.dir.display(),
            config.journal.fsync,
            j.recovery
        ),
        None if bus.role == Role::Gateway => {
            say!("journal:      none on a gateway (the matcher journals)")
        }
        None => say!("journal:      off (--no-journal): a restart starts an empty market"),
    }
    tracing::info!("tickerd started");
    let failed = tokio::select! {
        _ = stop.received() => None,
        why = journal_failure(&market) => Some(why),
        why = bus_failure(&market) => Some(why),
    };
    if let Some(why) = &failed {
        tracing::error!("stopping: {why}");
    }
    tracing::info!("shutting down: closing fronts, draining the engine");
    let grace = Duration::from_secs(5);
    // Fronts first, so no new command arrives; then the market drains the engine's output.
    let closing_http = async {
        if let Some(http) = http {
            http.shutdown(grace).await;
        }
    };
    let closing_grpc = async {
        if let Some(grpc) = grpc {
            grpc.shutdown(grace).await;
        }
    };
    tokio::join!(closing_http, closing_grpc);
    tokio::task::spawn_blocking(move || market.shutdown()).await?;
    tracing::info!("stopped");
    match failed {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => Ok(()),
    }
}

/// Resolves once the journal has failed (a write or sync error): nothing more can be made
/// durable, so nothing more may be acknowledged.
async fn journal_failure(market: &Market) -> String {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        if let Some(why) = market.journal_failure() {
            return why;
        }
    }
}

/// Resolves once a gateway has stopped following the stream (a gap it cannot repair): its
/// feeds would no longer be the matcher's, so it exits and a restart loads the newest
/// snapshot.
async fn bus_failure(market: &Market) -> String {
    let Some(bus) = market.bus() else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        if let Some(why) = bus.stats.failure.lock().clone() {
            return why;
        }
    }
}

/// SIGINT or SIGTERM, with the handlers installed when this is made: a signal that arrives
/// while tickerd is still starting (its addresses already printed) is a request to stop, not
/// the default action that kills the process before its clients get their close frames.
struct StopSignal {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignal {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(int), Ok(term)) => StopSignal {
                    signals: Some((int, term)),
                },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!("no SIGINT/SIGTERM handler ({e}); falling back to Ctrl-C");
                    StopSignal { signals: None }
                }
            }
        }
        #[cfg(not(unix))]
        StopSignal {}
    }

    async fn received(self) {
        #[cfg(unix)]
        if let Some((mut int, mut term)) = self.signals {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
