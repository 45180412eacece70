//! A tickerd market with its gRPC front, for clients to try and for the Python tests.
//!
//! ```sh
//! cargo run -p ticker-servers --example grpc_server -- \
//!     --listen 127.0.0.1:50051 --token alice-token=1 --token bob-token=2 \
//!     --token risk-desk=risk --token ops=admin [--no-simulator]
//! ```
//!
//! `--token TOKEN=ACCOUNT` is a trader of that account; `TOKEN=ROLE` and `TOKEN=ROLE:ACCOUNT`
//! give a role (`trader`, `risk`, `admin`), as tickerd's `--token`.
//!
//! Prints `listening on <address>` once it serves (with `--listen 127.0.0.1:0` the port is
//! the one the system chose), then runs until Ctrl-C, SIGTERM or the end of its standard input.

use std::collections::HashMap;
use std::time::Duration;
use ticker_servers::auth::Principal;
use ticker_servers::grpc::{AuthConfig, GrpcConfig, GrpcServer};
use ticker_servers::market::{Market, MarketConfig};
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = GrpcConfig::default();
    let mut market_config = MarketConfig::default();
    let mut tokens = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => config.listen = args.next().unwrap_or_default().parse()?,
            "--token" => {
                let value = args.next().unwrap_or_default();
                let (token, grant) = value.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("--token wants TOKEN=ACCOUNT or TOKEN=ROLE[:ACCOUNT], got {value:?}")
                })?;
                let principal = Principal::parse_grant(grant).map_err(anyhow::Error::msg)?;
                tokens.insert(token.to_string(), principal);
            }
            "--no-simulator" => market_config.simulator = None,
            other => anyhow::bail!(
                "unknown argument {other:?}; use --listen ADDR, --token TOKEN=ACCOUNT, --no-simulator"
            ),
        }
    }
    config.auth = AuthConfig {
        tokens,
        ..AuthConfig::default()
    };
    let market = Market::start(market_config)?;
    let server = GrpcServer::start(market.clone(), config).await?;
    println!("listening on {}", server.local_addr());
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 256];
    let stdin_closed = async {
        // A parent that dies closes our stdin: stop with it rather than linger.
        while let Ok(n) = stdin.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = stdin_closed => {}
    }
    server.shutdown(Duration::from_secs(2)).await;
    tokio::task::spawn_blocking(move || market.shutdown()).await?;
    Ok(())
}
