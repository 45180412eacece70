//! Market-data subscribers that come and go: each connects (WebSocket with permessage-deflate,
//! or gRPC `Subscribe`), takes trades, ticker and depth of one instrument for a random 5–30 s
//! with the load tool's verifying subscriber ([`subscribe::run`]: `prev_seq` continuity,
//! depth checksums), disconnects, and reconnects resuming trades with `from_seq`. The first
//! trade after a resume must chain to the last one before it: a gap notice or a `prev_seq`
//! that skips is a lost sequence (the reconnect takes milliseconds, well within the server's
//! history of 1,024 trades).
//!
//! Slow readers (`pauses`) do the same over sessions of a minute, reading in turns with
//! pauses; the server may conflate their ticker, resync their depth or close them 1013 — the
//! latter is counted and they start again afresh (a resume after a 1013 is older than the
//! history by construction: 8,192 trades behind).

use super::{tally, Ctx};
use crate::load::subscribe::{self, ReadPauses, SubLog, Subscription};
use crate::load::{Clock, Target};
use crate::rng::SplitMix64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// How one churning subscriber behaves.
#[derive(Debug, Clone, Copy)]
pub struct Churner {
    pub target: Target,
    /// Shortest and longest stay, milliseconds.
    pub stay_ms: (u64, u64),
    pub pauses: Option<ReadPauses>,
    pub seed: u64,
}

const CHANNELS: [&str; 3] = ["trades", "ticker", "depth"];

pub async fn run(ctx: Arc<Ctx>, churner: Churner) {
    let mut rng = SplitMix64::new(churner.seed);
    let mut stop = ctx.stop.clone();
    let mut resume_trades: Option<u64> = None;
    let front = match churner.target {
        Target::Grpc(_) => "gRPC",
        Target::Ws { .. } => "WebSocket",
    };
    let who = if churner.pauses.is_some() {
        format!("slow {front} reader")
    } else {
        format!("{front} subscriber")
    };
    while !*stop.borrow_and_update() {
        let subscription = Subscription {
            instrument: ctx.instrument.symbol.clone(),
            channels: CHANNELS.iter().map(|c| c.to_string()).collect(),
            resume: resume_trades
                .map(|seq| vec![("trades".to_string(), seq)])
                .unwrap_or_default(),
            pauses: churner.pauses,
        };
        let stay = Duration::from_millis(rng.between(churner.stay_ms.0, churner.stay_ms.1));
        let log = session(&ctx, churner.target, subscription, stay).await;
        match churner.target {
            Target::Grpc(_) => tally::add(&ctx.tally.grpc_streams, 1),
            Target::Ws { .. } => tally::add(&ctx.tally.ws_connects, 1),
        }
        resume_trades = match log {
            Err(e) => {
                ctx.tally.fail(format!("{who}: {e:#}"));
                None
            }
            Ok(log) => judge(&ctx, &who, &log, resume_trades, churner.pauses.is_some()),
        };
        // Reconnect at once (a client that lost its connection), or stop.
        if *stop.borrow() {
            break;
        }
    }
}

/// One connection for `stay`, or until the server ends it.
async fn session(
    ctx: &Ctx,
    target: Target,
    subscription: Subscription,
    stay: Duration,
) -> anyhow::Result<SubLog> {
    let (leave, left) = watch::channel(false);
    let (ready, _subscribed) = oneshot::channel();
    let mut running = tokio::spawn(subscribe::run(
        target,
        subscription,
        Clock::start(),
        Arc::default(),
        ready,
        left,
    ));
    let mut stop = ctx.stop.clone();
    tokio::select! {
        log = &mut running => return log?,
        _ = tokio::time::sleep(stay) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    let _ = leave.send(true);
    running.await?
}

/// Counts what a session saw; returns the trades `seq` to resume from, if any. Only a reader
/// that pauses may be too slow: a subscriber reading at once being closed 1013 is a failure.
fn judge(ctx: &Ctx, who: &str, log: &SubLog, resumed: Option<u64>, pauses: bool) -> Option<u64> {
    let tally = &ctx.tally;
    tally::add(&tally.resumes_verified, log.resumes_verified);
    if log.gaps > 0 {
        tally.lose(
            log.gaps,
            format!("{who}: {} gaps (trades resumed from {resumed:?})", log.gaps),
        );
    }
    if log.checksums_bad > 0 {
        tally.fail(format!("{who}: {} bad depth checksums", log.checksums_bad));
    }
    match &log.ended {
        None => log.last_seq.get("trades").copied().or(resumed),
        Some(why) if pauses && too_slow(why) => {
            tally::add(&tally.too_slow_closes, 1);
            None
        }
        Some(why) => {
            tally.fail(format!("{who}: the server ended the subscription: {why}"));
            None
        }
    }
}

/// A WebSocket close 1013 or a gRPC RESOURCE_EXHAUSTED "subscriber too slow", as
/// [`subscribe::run`] reports them.
fn too_slow(ended: &str) -> bool {
    ended.contains("Again") || ended.contains("1013") || ended.contains("too slow")
}
