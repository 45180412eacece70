//! A tickerd market with its WebSocket front and trader page, for browsers, the page tests and
//! the Python and Node clients.
//!
//! ```sh
//! cargo run -p ticker-servers --example ws_server -- \
//!     --listen 127.0.0.1:8080 --token alice-token=1 --token bob-token=2 [--no-simulator] \
//!     [--sim-history-s 3600] [--deflate shared|per-connection|off]
//! ```
//!
//! `--token` reads as tickerd's and the gRPC example's: `TOKEN=ACCOUNT` is a trader of that
//! account, `TOKEN=ROLE[:ACCOUNT]` gives a role. `--help` lists every flag.
//!
//! Prints `listening on <address>` once it serves (with `--listen 127.0.0.1:0` the port is
//! the one the system chose), then runs until Ctrl-C or the end of its standard input.

use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;
use ticker_servers::auth::AuthConfig;
use ticker_servers::market::{Market, MarketConfig};
use ticker_servers::ws::{WsConfig, WsServer};

mod common;

/// A tickerd market with its WebSocket front and trader page.
#[derive(Parser, Debug)]
struct Flags {
    /// Where HTTP/WebSocket listens; port 0 lets the system choose.
    #[arg(long, value_name = "ADDR", default_value_t = WsConfig::default().listen)]
    listen: SocketAddr,
    /// A bearer token: TOKEN=ACCOUNT (a trader of that account), TOKEN=ROLE or
    /// TOKEN=ROLE:ACCOUNT (role: trader, risk, admin); repeatable.
    #[arg(long, value_name = "TOKEN=ACCOUNT|ROLE[:ACCOUNT]")]
    token: Vec<common::TokenGrant>,
    /// Take orders only from clients: no simulated market.
    #[arg(long)]
    no_simulator: bool,
    /// Seconds of simulated past to run through the engine before serving, stamped in the
    /// past, so charts have history (tickerd's market.sim_history_s; the browser test uses an
    /// hour).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    sim_history_s: u64,
    /// Simulated market orders per second per instrument (the simulator's default: 2).
    #[arg(long, value_name = "N")]
    sim_takes_per_sec: Option<u64>,
    /// permessage-deflate [default: the server's own, shared].
    #[arg(long, value_enum, value_name = "MODE")]
    deflate: Option<common::Deflate>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let mut config = WsConfig {
        listen: flags.listen,
        auth: AuthConfig {
            tokens: common::tokens(flags.token),
            ..AuthConfig::default()
        },
        ..WsConfig::default()
    };
    if let Some(deflate) = flags.deflate {
        deflate.apply(&mut config.deflate);
    }
    let mut market_config = MarketConfig::default();
    if flags.no_simulator {
        market_config.simulator = None;
    }
    if let Some(sim) = &mut market_config.simulator {
        sim.history_secs = flags.sim_history_s;
        if let Some(n) = flags.sim_takes_per_sec {
            sim.takes_per_sec = n;
        }
    }
    let market = Market::start(market_config)?;
    let server = WsServer::start(market.clone(), config).await?;
    println!("listening on {}", server.local_addr());
    common::until_stopped().await;
    server.shutdown(Duration::from_secs(2)).await;
    tokio::task::spawn_blocking(move || market.shutdown()).await?;
    Ok(())
}
