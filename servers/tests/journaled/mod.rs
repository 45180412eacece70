//! What the tests of a journaling market share: its config on a data directory, placing an
//! order and reading its id, and the next message of a resumed subscription.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use ticker_engine::journal::{FsyncMode, JournalConfig};
use ticker_engine::*;
use ticker_feeds::Delivery;
use ticker_servers::market::{Market, MarketConfig};

const GUARD: Duration = Duration::from_secs(20);

/// A market of `shards` shards journaling to `dir` in `batch` mode, without the simulator.
pub fn config(dir: &Path, shards: usize) -> MarketConfig {
    MarketConfig {
        simulator: None,
        shards,
        journal: Some(JournalConfig {
            dir: dir.to_path_buf(),
            fsync: FsyncMode::Batch,
            ..JournalConfig::default()
        }),
        ..MarketConfig::default()
    }
}

/// A limit order on `instrument`.
pub fn limit_on(
    account: AccountId,
    client_id: ClientOrderId,
    instrument: InstrumentId,
    side: Side,
    price: Ticks,
    size: Lots,
) -> Place {
    Place {
        client_id,
        instrument,
        ..Place::limit(account, 0, side, price, size)
    }
}

/// A limit order on instrument 0 (BTC-USD).
pub fn limit(
    account: AccountId,
    client_id: ClientOrderId,
    side: Side,
    price: Ticks,
    size: Lots,
) -> Place {
    limit_on(account, client_id, 0, side, price, size)
}

/// Places `p`, which must be accepted, and returns its events.
/// Executes `kind`, again while the market answers `Busy`: a command for every shard is handed
/// back, before any copy goes in, when another such command holds the turn for longer than
/// `TURN_WAIT` (100 µs), which a descheduled thread on 2 loaded cores can do. Retrying is what
/// a client does; the caller's timeout bounds it.
pub async fn execute(market: &Market, kind: CommandKind) -> Vec<Event> {
    loop {
        match market.execute(kind.clone()).await {
            Err(ticker_servers::market::ExecuteError::Busy) => tokio::task::yield_now().await,
            outcome => return outcome.unwrap(),
        }
    }
}

pub async fn place(market: &Market, p: Place) -> Vec<Event> {
    let events = market.execute(CommandKind::Place(p)).await.unwrap();
    assert!(
        matches!(events[0].kind, EventKind::PlaceAccepted { .. }),
        "{events:?}"
    );
    events
}

pub fn order_id(events: &[Event]) -> OrderId {
    match &events[0].kind {
        EventKind::PlaceAccepted { order, .. } => order.order_id,
        other => panic!("not accepted: {other:?}"),
    }
}

/// The next message of a subscription that resumed, which must be a plain one.
pub async fn next_message(sub: &mut ticker_feeds::Subscription) -> Arc<ticker_feeds::Message> {
    let d = tokio::time::timeout(GUARD, sub.recv())
        .await
        .expect("a message in time")
        .expect("the subscription lives");
    match d {
        Delivery::Message(m) => m,
        other => panic!("expected a plain message after a resume, got {other:?}"),
    }
}
