//! One stream out of several shards' (`market.shards`): what the views, topics and metrics of a
//! sharded market read.
//!
//! The feeds thread takes the shards' batches in merge-ticket order
//! ([`ticker_engine::pipeline::ShardedEgress`]), which their journals record, and renumbers every
//! event with one `seq` that goes up by one per event, so everything downstream sees the stream
//! of one engine, gap-free. A command sent to every shard gives an outcome on each; the merged
//! stream carries one ([`FanIn::offer_first_accept`]): the first accept where it arrives, before
//! the events it caused, or when every shard refused, the folded reject where the last arrives
//! (the outcomes left out take no `seq`). A cancel by client order id that one shard carried out
//! is its accept, not an accept and `unknown_order`s, and a kill switch is one accept, not one
//! per shard. Whoever submits a command tells the [`FanIn`] first ([`expect`]), so it is known
//! before any outcome arrives. A recovery merges the replayed runs into the same stream
//! (`crate::shard_recovery`); a snapshot keeps where the merge stood ([`MergeState`]).

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use ticker_engine::shard::{FanIn, Offered};
use ticker_engine::{Correlation, Event};

/// The fan-in a sharded market's submitters and its feeds thread share.
pub(crate) type SharedFanIn = Arc<Mutex<FanIn>>;

/// Tells `fan_in` that the command `corr` gives `outcomes` outcomes (one per shard it goes to,
/// `ticker_engine::shard::Route::outcomes`); true if it goes to more than one (then
/// [`forget`] it if it cannot be submitted). Locks only then.
pub(crate) fn expect(fan_in: &SharedFanIn, corr: Correlation, outcomes: usize) -> bool {
    if outcomes <= 1 {
        return false;
    }
    fan_in.lock().expect(corr, outcomes);
    true
}

/// Undoes [`expect`] for the command `corr` that was not submitted.
pub(crate) fn forget(fan_in: &SharedFanIn, corr: Correlation) {
    fan_in.lock().forget(corr);
}

/// The feeds thread's side: renumbers and folds each batch.
pub(crate) struct ShardMerge {
    fan_in: SharedFanIn,
    seq: u64,
    /// The merge ticket of the last batch merged.
    ticket: u64,
    /// The last batch as the views see it (reused: no allocation once grown).
    merged: Vec<Event>,
}

/// Where a sharded market's merged stream stood at a snapshot: kept beside the feeds so a
/// recovery goes on numbering and folding exactly as the market did.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MergeState {
    /// The merge ticket of the last batch the feeds had taken.
    pub ticket: u64,
    /// The merged `seq` of the last event.
    pub seq: u64,
    /// Each shard's snapshot: the journal index it was cut at.
    pub cuts: Vec<u64>,
    /// Commands of several shards not all of whose outcomes were merged yet.
    pub fan_in: FanIn,
}

/// [`MergeState`] borrowed from a running merge, for encoding.
#[derive(Serialize)]
struct MergeStateRef<'a> {
    ticket: u64,
    seq: u64,
    cuts: &'a [u64],
    fan_in: &'a FanIn,
}

impl MergeState {
    pub(crate) fn decode(bytes: &[u8]) -> Result<MergeState, String> {
        postcard::from_bytes(bytes).map_err(|e| e.to_string())
    }
}

impl ShardMerge {
    /// Goes on after event `seq` and ticket `ticket` (a recovered market).
    pub(crate) fn resume(fan_in: SharedFanIn, seq: u64, ticket: u64) -> Self {
        ShardMerge {
            fan_in,
            seq,
            ticket,
            merged: Vec::with_capacity(1024),
        }
    }

    /// The merged `seq` of the last event.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// The fan-in it folds with (shared with the submitters).
    pub(crate) fn fan_in(&self) -> &SharedFanIn {
        &self.fan_in
    }

    /// Where the merge stands, encoded, with the shards' snapshot `cuts`.
    pub(crate) fn encode_state(&self, cuts: &[u64]) -> Vec<u8> {
        let fan_in = self.fan_in.lock();
        postcard::to_allocvec(&MergeStateRef {
            ticket: self.ticket,
            seq: self.seq,
            cuts,
            fan_in: &fan_in,
        })
        .expect("a merge state always encodes")
    }

    /// Gives every event of `batch` (the run with merge ticket `ticket`) its merged `seq`
    /// (in place: replies carry it too) and returns the batch as the views see it.
    pub(crate) fn merge(&mut self, ticket: u64, batch: &mut [Event]) -> &[Event] {
        self.ticket = ticket;
        self.merged.clear();
        let mut fan_in = self.fan_in.lock();
        for e in batch.iter_mut() {
            match fan_in.offer_first_accept(&e.kind) {
                Offered::Pass => {
                    self.seq += 1;
                    e.seq = self.seq;
                    self.merged.push(e.clone());
                }
                // Left out of the stream (and of every reply), so it takes no `seq` of its
                // own: the stream stays gap-free, as the bus and resuming clients need.
                Offered::Held => e.seq = self.seq,
                Offered::Folded(kind) => {
                    self.seq += 1;
                    e.seq = self.seq;
                    self.merged.push(Event {
                        seq: e.seq,
                        ts: e.ts,
                        kind,
                    });
                }
            }
        }
        &self.merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_outcomes::{accepted, unknown_order};
    use ticker_engine::shard::route;
    use ticker_engine::{Cancel, Command, CommandKind, CommandTag, EventKind, OrderId, OrderRef};

    /// What the market computes when it submits `command` to `shards` shards.
    fn outcomes(command: &Command, shards: usize) -> usize {
        route(shards, &command.kind).outcomes(&command.kind, shards)
    }

    fn outcome(corr: u64, accept: bool) -> Event {
        match accept {
            true => accepted(0, corr, CommandTag::Cancel, 42),
            false => unknown_order(0, corr),
        }
    }

    fn cancel_by_client_id(corr: u64) -> Command {
        Command::new(
            0,
            corr,
            CommandKind::Cancel(Cancel {
                account: 1,
                order: OrderRef::Client(9),
            }),
        )
    }

    #[test]
    fn a_command_of_every_shard_shows_once_in_the_merged_stream() {
        let fan_in = SharedFanIn::default();
        assert!(expect(&fan_in, 7, outcomes(&cancel_by_client_id(7), 2)));
        let by_id = Command::new(
            0,
            8,
            CommandKind::Cancel(Cancel {
                account: 1,
                order: OrderRef::Id(OrderId(42)),
            }),
        );
        assert!(
            !expect(&fan_in, 8, outcomes(&by_id, 2)),
            "an order id names its shard"
        );
        let mut merge = ShardMerge::resume(fan_in.clone(), 0, 0);
        let mut first = vec![outcome(7, false), outcome(8, false)];
        let seen: Vec<_> = merge.merge(1, &mut first).to_vec();
        // The held unknown_order is left out and takes no seq; the one-shard command passes.
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].seq, seen[0].kind.outcome_corr()), (1, Some(8)));
        let mut second = vec![outcome(7, true)];
        let seen: Vec<_> = merge.merge(2, &mut second).to_vec();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].seq, 2, "the stream has no gap");
        assert!(
            matches!(seen[0].kind, EventKind::Accepted { corr: 7, .. }),
            "the shard that held the order answers: {seen:?}"
        );
        // Events are renumbered in place; a held one carries the seq before it.
        assert_eq!((first[0].seq, first[1].seq, second[0].seq), (0, 1, 2));
        assert_eq!(fan_in.lock().pending(), 0);
    }

    #[test]
    fn a_merge_state_round_trips_with_commands_in_flight() {
        let fan_in = SharedFanIn::default();
        expect(&fan_in, 7, outcomes(&cancel_by_client_id(7), 2));
        let mut merge = ShardMerge::resume(fan_in, 0, 0);
        merge.merge(5, &mut [outcome(7, false)]);
        let state = MergeState::decode(&merge.encode_state(&[10, 20])).unwrap();
        assert_eq!((state.ticket, state.seq, state.cuts), (5, 0, vec![10, 20]));
        // The restored fan-in folds the outcome still to come.
        let mut resumed = ShardMerge::resume(Arc::new(Mutex::new(state.fan_in)), 0, 5);
        let seen = resumed.merge(6, &mut [outcome(7, true)]).to_vec();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].seq, 1);
        assert!(matches!(seen[0].kind, EventKind::Accepted { corr: 7, .. }));
        assert_eq!(resumed.fan_in().lock().pending(), 0);
    }

    #[test]
    fn a_command_that_was_not_submitted_is_forgotten() {
        let fan_in = SharedFanIn::default();
        let cancel = cancel_by_client_id(7);
        assert!(expect(&fan_in, cancel.corr, outcomes(&cancel, 4)));
        forget(&fan_in, cancel.corr);
        assert_eq!(fan_in.lock().pending(), 0);
    }
}
