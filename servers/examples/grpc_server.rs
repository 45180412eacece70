//! A tickerd market with its gRPC front, for clients to try and for the Python tests.
//!
//! ```sh
//! cargo run -p ticker-servers --example grpc_server -- \
//!     --listen 127.0.0.1:50051 --token alice-token=1 --token bob-token=2 \
//!     --token risk-desk=risk --token ops=admin [--no-simulator]
//! ```
//!
//! `--token TOKEN=ACCOUNT` is a trader of that account; `TOKEN=ROLE` and `TOKEN=ROLE:ACCOUNT`
//! give a role (`trader`, `risk`, `admin`), as tickerd's `--token`. `--help` lists every flag.
//!
//! Prints `listening on <address>` once it serves (with `--listen 127.0.0.1:0` the port is
//! the one the system chose), then runs until Ctrl-C, SIGTERM or the end of its standard input.

use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;
use ticker_servers::grpc::{AuthConfig, GrpcConfig, GrpcServer};
use ticker_servers::market::{Market, MarketConfig};

mod common;

/// A tickerd market with its gRPC front.
#[derive(Parser, Debug)]
struct Flags {
    /// Where gRPC listens; port 0 lets the system choose.
    #[arg(long, value_name = "ADDR", default_value_t = GrpcConfig::default().listen)]
    listen: SocketAddr,
    /// A bearer token: TOKEN=ACCOUNT (a trader of that account), TOKEN=ROLE or
    /// TOKEN=ROLE:ACCOUNT (role: trader, risk, admin); repeatable.
    #[arg(long, value_name = "TOKEN=ACCOUNT|ROLE[:ACCOUNT]")]
    token: Vec<common::TokenGrant>,
    /// Take orders only from clients: no simulated market.
    #[arg(long)]
    no_simulator: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let config = GrpcConfig {
        listen: flags.listen,
        auth: AuthConfig {
            tokens: common::tokens(flags.token),
            ..AuthConfig::default()
        },
        ..GrpcConfig::default()
    };
    let mut market_config = MarketConfig::default();
    if flags.no_simulator {
        market_config.simulator = None;
    }
    let market = Market::start(market_config)?;
    let server = GrpcServer::start(market.clone(), config).await?;
    println!("listening on {}", server.local_addr());
    common::until_stopped().await;
    server.shutdown(Duration::from_secs(2)).await;
    tokio::task::spawn_blocking(move || market.shutdown()).await?;
    Ok(())
}
