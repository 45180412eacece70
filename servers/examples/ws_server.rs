//! A tickerd market with its WebSocket front and trader page, for browsers, the page tests and
//! the Python and Node clients.
//!
//! ```sh
//! cargo run -p ticker-servers --example ws_server -- \
//!     --listen 127.0.0.1:8080 --token alice-token=1 --token bob-token=2 [--no-simulator] \
//!     [--deflate shared|per-connection|off]
//! ```
//!
//! Prints `listening on <address>` once it serves (with `--listen 127.0.0.1:0` the port is
//! the one the system chose), then runs until Ctrl-C or the end of its standard input.

use std::collections::HashMap;
use std::time::Duration;
use ticker_servers::auth::AuthConfig;
use ticker_servers::market::{Market, MarketConfig};
use ticker_servers::ws::deflate::DeflateMode;
use ticker_servers::ws::{WsConfig, WsServer};
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = WsConfig::default();
    let mut market_config = MarketConfig::default();
    let mut tokens = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => config.listen = args.next().unwrap_or_default().parse()?,
            "--token" => {
                let value = args.next().unwrap_or_default();
                let (token, account) = value
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--token wants TOKEN=ACCOUNT, got {value:?}"))?;
                tokens.insert(token.to_string(), account.parse()?);
            }
            "--no-simulator" => market_config.simulator = None,
            "--deflate" => match args.next().as_deref() {
                Some("off") => config.deflate.enabled = false,
                Some("shared") => config.deflate.mode = DeflateMode::Shared,
                Some("per-connection") => config.deflate.mode = DeflateMode::PerConnection,
                other => anyhow::bail!("--deflate wants shared, per-connection or off, got {other:?}"),
            },
            other => anyhow::bail!(
                "unknown argument {other:?}; use --listen ADDR, --token TOKEN=ACCOUNT, --no-simulator, --deflate MODE"
            ),
        }
    }
    config.auth = AuthConfig::traders(tokens);
    let market = Market::start(market_config)?;
    let server = WsServer::start(market.clone(), config).await?;
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
