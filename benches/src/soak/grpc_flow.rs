//! Order flow over gRPC: place/cancel pairs at a fixed rate over one `OrderService/OrderSession`
//! (the load tool's own [`OrderClient`] and [`Plan`]), each order → ack time recorded into the
//! interval's histogram; and the account's `SubscribeOrderUpdates` stream, reopened every
//! 5–30 s with `from_seq`, checked for an unbroken `seq` across every resume.

use super::{tally, Ctx, ORDER_ACCOUNT_TOKEN};
use crate::load::order_flow::{OrderClient, Plan, Reply};
use crate::load::Target;
use crate::rng::SplitMix64;
use std::sync::Arc;
use std::time::Duration;
use ticker_proto::v1 as pb;
use tokio::sync::mpsc;

/// Engine rejects that are the market's doing, not the server's: the simulated market moved
/// onto the flow's post-only price (it would cross), or filled the resting order before its
/// cancel (unknown order). Anything else is an unexpected answer.
const EXPECTED_REJECTS: [&str; 2] = [
    "reject_reason_post_only_would_cross",
    "reject_reason_unknown_order",
];

/// Sends `rate` commands a second until the soak stops, then waits for every reply.
pub async fn orders(ctx: Arc<Ctx>, rate: u64) {
    if let Err(e) = run_orders(&ctx, rate).await {
        ctx.tally.fail(format!("gRPC order flow: {e:#}"));
    }
}

async fn run_orders(ctx: &Ctx, rate: u64) -> anyhow::Result<()> {
    let (tap, mut replies) = mpsc::unbounded_channel::<Reply>();
    let mut client = OrderClient::connect_tapped(
        &Target::Grpc(ctx.grpc),
        Plan::new(0, &ctx.instrument)?,
        ORDER_ACCOUNT_TOKEN,
        ctx.clock.clone(),
        // Open loop: the pace is the rate, never the replies.
        usize::MAX >> 4,
        tap,
    )
    .await?;
    let tally = ctx.tally.clone();
    let counting = tokio::spawn(async move {
        while let Some(reply) = replies.recv().await {
            tally.record_ack(reply.acked_ns.saturating_sub(reply.sent_ns));
            tally::add(&tally.commands, 1);
            match &reply.outcome {
                Ok(_) => {}
                Err(reason) if EXPECTED_REJECTS.contains(&reason.as_str()) => {
                    tally::add(&tally.engine_rejects, 1)
                }
                Err(other) => tally.fail(format!("gRPC order flow: answered {other:?}")),
            }
        }
    });
    let mut pace = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    // A late tick is sent at once (the latency then counts from the send, not the slot: the
    // flow is a load, not a coordinated-omission-free latency benchmark).
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = ctx.stop.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = pace.tick() => client.submit()?,
        }
    }
    client.finish().await?;
    counting.await?;
    Ok(())
}

/// Follows the order account's updates, reconnecting every 5–30 s with `from_seq`.
pub async fn order_updates(ctx: Arc<Ctx>, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut last: Option<u64> = None;
    let mut stop = ctx.stop.clone();
    while !*stop.borrow() {
        let stay = Duration::from_millis(rng.between(5_000, 30_000));
        match tokio::time::timeout(stay, follow(&ctx, &mut last)).await {
            // The stay ended: disconnect and resume.
            Err(_) => {}
            Ok(Err(e)) => {
                ctx.tally.fail(format!("order updates: {e:#}"));
                // Resume from scratch after a failure rather than report the same gap twice.
                last = None;
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Ok(Ok(())) => {}
        }
        if *stop.borrow_and_update() {
            break;
        }
    }
}

/// One subscription: from a snapshot, or resumed after `last`. Returns when the soak stops.
async fn follow(ctx: &Ctx, last: &mut Option<u64>) -> anyhow::Result<()> {
    let mut client =
        pb::order_service_client::OrderServiceClient::connect(format!("http://{}", ctx.grpc))
            .await?;
    let mut request = tonic::Request::new(pb::SubscribeOrderUpdatesRequest { from_seq: *last });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ORDER_ACCOUNT_TOKEN}").parse()?,
    );
    let mut stream = client.subscribe_order_updates(request).await?.into_inner();
    tally::add(&ctx.tally.grpc_streams, 1);
    let resumed_from = *last;
    let mut first = true;
    let mut stop = ctx.stop.clone();
    loop {
        let update = tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            u = stream.message() => u?,
        };
        let Some(u) = update else {
            anyhow::bail!("the server ended the stream");
        };
        let delivery = pb::Delivery::try_from(u.delivery).unwrap_or(pb::Delivery::Update);
        match (delivery, *last) {
            (pb::Delivery::ResumeTooOld, _) => {
                ctx.tally.lose(
                    u.seq.saturating_sub(last.unwrap_or(0)),
                    format!(
                        "order updates resumed from {resumed_from:?}: the history no longer held it"
                    ),
                );
            }
            (pb::Delivery::Snapshot, _) if resumed_from.is_none() && first => {}
            (_, Some(prev)) if u.prev_seq == prev && u.seq == prev + 1 => {
                if first && resumed_from.is_some() {
                    tally::add(&ctx.tally.resumes_verified, 1);
                }
            }
            (_, prev) => ctx.tally.lose(
                u.seq.saturating_sub(prev.unwrap_or(0) + 1).max(1),
                format!(
                    "order update seq {} prev_seq {} ({delivery:?}) after {prev:?}",
                    u.seq, u.prev_seq
                ),
            ),
        }
        first = false;
        *last = Some(u.seq);
    }
}
