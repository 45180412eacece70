//! Orders at the touch: a flow that trades with the simulated market instead of resting beside
//! it. The session flow ([`super::grpc_flow`]) prices its bids under the reference price, so
//! whether the market ever reaches them depends on where the simulated price wandered (in an
//! hour it may never). This flow reads the book before each round and, on one side and then the
//! other:
//! - places a post-only order at the far touch (a buy at the best ask): the engine rejects it
//!   as crossing, unless the market moved away in between, when it rests like the next one;
//! - places a post-only order one tick inside the spread, first in its queue, so the
//!   simulator's next market order on that side fills it (when the spread is one tick, that
//!   price is the far touch and it crosses too);
//! - cancels each resting order 0.5–3 s later: accepted, or `unknown_order` when the market
//!   filled it first.
//!
//! Every answer is judged: accepted, or one of those two rejects where the flow expects them;
//! anything else is a failure. Fills and cancels of these orders reach the account's
//! order-update stream, which [`super::grpc_flow::order_updates`] follows and checks for gaps,
//! so fills are part of what a resume must deliver without a gap. Buys and sells alternate, so
//! the account's position stays near flat.

use super::{tally, Ctx, ORDER_ACCOUNT_TOKEN};
use crate::rng::SplitMix64;
use anyhow::Context;
use rust_decimal::Decimal;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use ticker_proto::v1 as pb;
use tokio::time::Instant;
use tonic::transport::Channel;

/// Client order ids of this flow: above the session flow's (`(client + 1) << 32 + k`).
const COID_BASE: u64 = 1 << 48;
/// How long a resting order of the flow waits before its cancel, in milliseconds.
const REST_MS: (u64, u64) = (500, 3_000);

/// Runs rounds at `rounds_per_sec` until the soak stops, then cancels what still rests.
pub async fn run(ctx: Arc<Ctx>, rounds_per_sec: u64, seed: u64) {
    if let Err(e) = rounds(&ctx, rounds_per_sec, seed).await {
        ctx.tally.fail(format!("orders at the touch: {e:#}"));
    }
}

/// What the engine answered to one of the flow's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accepted,
    /// The reject the flow expects from this command.
    Expected,
    /// Any other reject: counted as a failure.
    Unexpected,
}

struct Flow {
    md: pb::market_data_service_client::MarketDataServiceClient<Channel>,
    orders: pb::order_service_client::OrderServiceClient<Channel>,
    instrument: String,
    tick: Decimal,
    size: String,
    next_coid: u64,
    /// Resting orders, soonest cancel first (cancel time, client order id).
    resting: BinaryHeap<Reverse<(Instant, u64)>>,
}

async fn rounds(ctx: &Ctx, rounds_per_sec: u64, seed: u64) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", ctx.grpc))?
        .connect()
        .await?;
    let mut flow = Flow {
        md: pb::market_data_service_client::MarketDataServiceClient::new(channel.clone()),
        orders: pb::order_service_client::OrderServiceClient::new(channel),
        instrument: ctx.instrument.symbol.clone(),
        tick: Decimal::from_str(&ctx.instrument.tick_size)?,
        size: ctx.instrument.min_size.clone(),
        next_coid: COID_BASE,
        resting: BinaryHeap::new(),
    };
    let mut rng = SplitMix64::new(seed);
    let mut pace =
        tokio::time::interval(Duration::from_nanos(1_000_000_000 / rounds_per_sec.max(1)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = ctx.stop.clone();
    let mut side = pb::Side::Buy;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = pace.tick() => {}
        }
        flow.cancel_due(ctx, Instant::now()).await?;
        let Some((bid, ask)) = flow.touch().await? else {
            continue;
        };
        for price in prices(side, bid, ask, flow.tick) {
            let coid = flow.next_coid;
            flow.next_coid += 1;
            match flow.place(ctx, side, price, coid).await? {
                Answer::Accepted => {
                    let rest = Duration::from_millis(rng.between(REST_MS.0, REST_MS.1));
                    flow.resting.push(Reverse((Instant::now() + rest, coid)));
                }
                Answer::Expected => tally::add(&ctx.tally.touch_crossed, 1),
                Answer::Unexpected => {}
            }
        }
        side = match side {
            pb::Side::Buy => pb::Side::Sell,
            _ => pb::Side::Buy,
        };
    }
    // Leave nothing resting: the account's orders end with the soak.
    flow.cancel_due(ctx, Instant::now() + Duration::from_millis(REST_MS.1))
        .await
}

/// A round's two prices on `side`: the far touch (crosses), then one tick inside the spread
/// (first in a new level), which is the far touch again when the spread is one tick.
fn prices(side: pb::Side, bid: Decimal, ask: Decimal, tick: Decimal) -> [Decimal; 2] {
    match side {
        pb::Side::Sell => [bid, (ask - tick).max(bid)],
        _ => [ask, (bid + tick).min(ask)],
    }
}

impl Flow {
    /// The best bid and ask now, if the book has both.
    async fn touch(&mut self) -> anyhow::Result<Option<(Decimal, Decimal)>> {
        let snapshot = self
            .md
            .get_depth_snapshot(pb::GetDepthSnapshotRequest {
                instrument: self.instrument.clone(),
            })
            .await
            .context("GetDepthSnapshot")?
            .into_inner();
        let Some(pb::market_data_message::Payload::Depth(depth)) = snapshot.payload else {
            anyhow::bail!("GetDepthSnapshot answered without a depth payload");
        };
        let best = |levels: &[pb::Level]| -> anyhow::Result<Option<Decimal>> {
            levels
                .first()
                .map(|l| Decimal::from_str(&l.price).context("a depth price"))
                .transpose()
        };
        Ok(best(&depth.bids)?.zip(best(&depth.asks)?))
    }

    async fn place(
        &mut self,
        ctx: &Ctx,
        side: pb::Side,
        price: Decimal,
        coid: u64,
    ) -> anyhow::Result<Answer> {
        let request = authed(pb::PlaceOrderRequest {
            instrument: self.instrument.clone(),
            side: side as i32,
            order_type: pb::OrderType::Limit as i32,
            price: price.to_string(),
            size: self.size.clone(),
            post_only: true,
            client_order_id: coid,
            ..Default::default()
        })?;
        let response = self
            .orders
            .place_order(request)
            .await
            .context("PlaceOrder")?
            .into_inner();
        judge(ctx, response.result, pb::RejectReason::PostOnlyWouldCross)
    }

    /// Cancels every resting order whose time has come by `until`.
    async fn cancel_due(&mut self, ctx: &Ctx, until: Instant) -> anyhow::Result<()> {
        while let Some(&Reverse((due, coid))) = self.resting.peek() {
            if due > until {
                break;
            }
            self.resting.pop();
            let request = authed(pb::CancelOrderRequest {
                order: Some(pb::cancel_order_request::Order::ClientOrderId(coid)),
            })?;
            let response = self
                .orders
                .cancel_order(request)
                .await
                .context("CancelOrder")?
                .into_inner();
            if judge(ctx, response.result, pb::RejectReason::UnknownOrder)? == Answer::Expected {
                tally::add(&ctx.tally.touch_filled, 1);
            }
        }
        Ok(())
    }
}

/// Counts the answer; accepted, or rejected with `expected`, is fine, anything else fails the
/// soak (the flow goes on).
fn judge(
    ctx: &Ctx,
    result: Option<pb::CommandResult>,
    expected: pb::RejectReason,
) -> anyhow::Result<Answer> {
    let result = result.context("an answer without a result")?;
    tally::add(&ctx.tally.commands, 1);
    if result.accepted {
        return Ok(Answer::Accepted);
    }
    let reason =
        pb::RejectReason::try_from(result.reject_reason).unwrap_or(pb::RejectReason::Unspecified);
    if reason == expected {
        return Ok(Answer::Expected);
    }
    ctx.tally.fail(format!(
        "orders at the touch: rejected {} where only {} was expected",
        reason.as_str_name(),
        expected.as_str_name()
    ));
    Ok(Answer::Unexpected)
}

fn authed<T>(message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ORDER_ACCOUNT_TOKEN}").parse()?,
    );
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn a_round_crosses_at_the_far_touch_then_steps_one_tick_inside_the_spread() {
        let tick = d("0.01");
        assert_eq!(
            prices(pb::Side::Buy, d("100.00"), d("100.05"), tick),
            [d("100.05"), d("100.01")]
        );
        assert_eq!(
            prices(pb::Side::Sell, d("100.00"), d("100.05"), tick),
            [d("100.00"), d("100.04")]
        );
        // A one-tick spread has no inside: both orders are at the far touch and cross.
        assert_eq!(
            prices(pb::Side::Buy, d("100.00"), d("100.01"), tick),
            [d("100.01"), d("100.01")]
        );
        assert_eq!(
            prices(pb::Side::Sell, d("100.00"), d("100.01"), tick),
            [d("100.00"), d("100.00")]
        );
    }
}
