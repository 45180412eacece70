//! Outcome events for the unit tests of the shard merge and the reply routing.

use ticker_engine::{CommandTag, Correlation, Event, EventKind, OrderId, RejectReason};

/// Account 1's `command` (`corr`) accepted, naming order `order`.
pub(crate) fn accepted(seq: u64, corr: Correlation, command: CommandTag, order: u64) -> Event {
    Event {
        seq,
        ts: 0,
        kind: EventKind::Accepted {
            corr,
            command,
            account: 1,
            order_id: OrderId(order),
            instrument: None,
        },
    }
}

/// Account 1's cancel (`corr`) of client order id 9 refused: no such order on that shard.
pub(crate) fn unknown_order(seq: u64, corr: Correlation) -> Event {
    Event {
        seq,
        ts: 0,
        kind: EventKind::Rejected {
            corr,
            command: CommandTag::Cancel,
            account: 1,
            client_id: 9,
            order_id: OrderId(0),
            reason: RejectReason::UnknownOrder,
        },
    }
}
