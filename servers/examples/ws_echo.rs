//! A WebSocket echo server on tickerd's WebSocket stack (hyper upgrade, our permessage-deflate),
//! for the Autobahn testsuite's fuzzingclient and for trying clients by hand.
//!
//! ```sh
//! cargo run -p ticker-servers --example ws_echo -- --listen 127.0.0.1:9001 [--mode shared|per-connection|off]
//! ```
//!
//! Prints `listening on <address>` once it serves (with port 0 the port is the one the system
//! chose), then runs until Ctrl-C or the end of its standard input (in a script, keep stdin
//! open: `tail -f /dev/null | cargo run ...`). Every text and binary message is echoed,
//! compressed when the client negotiated permessage-deflate: with `--mode shared` (default)
//! each reply is deflated without context takeover, as market data is in shared mode; with
//! `per-connection` each connection keeps its own window.

use ticker_servers::ws::deflate::{DeflateConfig, DeflateMode};
use ticker_servers::ws::echo::spawn_echo;
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:9001".parse()?;
    let mut deflate = DeflateConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().unwrap_or_default().parse()?,
            "--mode" => match args.next().as_deref() {
                Some("shared") => deflate.mode = DeflateMode::Shared,
                Some("per-connection") => deflate.mode = DeflateMode::PerConnection,
                Some("off") => deflate.enabled = false,
                other => anyhow::bail!("--mode wants shared, per-connection or off, got {other:?}"),
            },
            other => anyhow::bail!(
                "unknown argument {other:?}; use --listen ADDR, --mode shared|per-connection|off"
            ),
        }
    }
    // Autobahn sends messages of up to 16 MiB (cases 9.x), compressed ones included.
    deflate.max_inflated_message = 64 << 20;
    let addr = spawn_echo(listen, deflate).await?;
    println!("listening on {addr}");
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 256];
    let stdin_closed = async {
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
    Ok(())
}
