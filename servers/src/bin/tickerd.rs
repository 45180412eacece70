//! `tickerd`: the ticker engine as one program.
//!
//! Runs the engine thread, the feeds and the market simulator with the embedded defaults and
//! reports activity until SIGINT/SIGTERM, then shuts down cleanly. The gRPC and WebSocket
//! fronts are added by their issues.

use std::sync::atomic::Ordering;
use std::time::Duration;
use ticker_feeds::{Channel, Topic};
use ticker_servers::market::{Market, MarketConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let market = Market::start(MarketConfig::default())?;
    for w in market.instruments().all() {
        let i = &w.instrument;
        println!(
            "instrument {:<8} tick {:<8} lot {:<8} band [{}, {}]",
            w.symbol(),
            i.spec.tick_size,
            i.spec.lot_size,
            w.price.to_string(i.band_low),
            w.price.to_string(i.band_high)
        );
    }
    println!(
        "tickerd {}: engine, feeds and simulator running; the gRPC and WebSocket fronts are not \
         built yet. Ctrl-C stops.",
        env!("CARGO_PKG_VERSION")
    );
    let mut tickers: Vec<_> = market
        .instruments()
        .all()
        .iter()
        .map(|w| {
            let topic = Topic::Market {
                channel: Channel::Ticker,
                instrument: w.id(),
            };
            (w.symbol().to_string(), market.hub().topic(topic))
        })
        .collect();
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {
                let stats = market.stats();
                println!(
                    "commands {} events {}",
                    stats.commands.load(Ordering::Relaxed),
                    stats.events.load(Ordering::Relaxed)
                );
                for (symbol, topic) in &mut tickers {
                    if let Some(m) = topic.latest() {
                        println!("  {symbol}: {}", String::from_utf8_lossy(&m.json));
                    }
                }
            }
            _ = shutdown_signal() => break,
        }
    }
    println!("shutting down");
    tokio::task::spawn_blocking(move || market.shutdown()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
