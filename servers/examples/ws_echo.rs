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

use clap::Parser;
use std::net::SocketAddr;
use ticker_servers::ws::deflate::DeflateConfig;
use ticker_servers::ws::echo::spawn_echo;

mod common;

/// A WebSocket echo server on tickerd's WebSocket stack.
#[derive(Parser, Debug)]
struct Flags {
    /// Where it listens; port 0 lets the system choose.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// permessage-deflate of the replies.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = common::Deflate::Shared)]
    mode: common::Deflate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let mut deflate = DeflateConfig::default();
    flags.mode.apply(&mut deflate);
    // Autobahn sends messages of up to 16 MiB (cases 9.x), compressed ones included.
    deflate.max_inflated_message = 64 << 20;
    let addr = spawn_echo(flags.listen, deflate).await?;
    println!("listening on {addr}");
    common::until_stopped().await;
    Ok(())
}
