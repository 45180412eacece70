//! Hands each waiting caller the events of its command, read off the merged event stream by
//! the feeds thread.
//!
//! A command's events are contiguous in its shard's stream and never span batches: its
//! outcome (`PlaceAccepted`, `Accepted`, `Rejected`) first, then everything up to the next
//! outcome. A command sent to every shard (`ticker_engine::shard::Route::All`: a mass cancel,
//! a kill switch, an instrument added) has one such run per shard; the caller gets one reply
//! once every shard gave its run: the outcome the merged stream shows, then the other events of
//! every run in the order they arrived. With one shard every command has one run and is answered as
//! soon as it arrives.

use crate::market::Reply;
use parking_lot::Mutex;
use std::collections::HashMap;
use ticker_engine::shard::{FanIn, Offered};
use ticker_engine::{Correlation, Event};

/// A caller waiting for its command's events.
pub(crate) struct Waiting {
    reply: Reply,
    /// Runs (one per shard the command went to) still to come.
    runs_left: usize,
    /// The runs already here, when there are several.
    gathered: Vec<Event>,
}

impl Waiting {
    /// A caller whose command gives `runs` runs of events (one per shard it went to; at
    /// least one is waited for).
    pub(crate) fn new(reply: Reply, runs: usize) -> Self {
        Waiting {
            reply,
            runs_left: runs.max(1),
            gathered: Vec::new(),
        }
    }
}

/// Callers by their command's correlation id.
pub(crate) type Replies = Mutex<HashMap<Correlation, Waiting>>;

/// Gives the callers waiting for commands whose runs `events` holds what they are owed.
pub(crate) fn route_replies(replies: &Replies, events: &[Event]) {
    let outcome_corr = |e: &Event| e.kind.outcome_corr();
    let mut i = 0;
    while i < events.len() {
        let Some(corr) = outcome_corr(&events[i]) else {
            i += 1;
            continue;
        };
        let end = events[i + 1..]
            .iter()
            .position(|e| outcome_corr(e).is_some())
            .map_or(events.len(), |p| i + 1 + p);
        let run = &events[i..end];
        i = end;
        let mut replies = replies.lock();
        let Some(waiting) = replies.get_mut(&corr) else {
            continue;
        };
        waiting.runs_left -= 1;
        if waiting.runs_left > 0 {
            waiting.gathered.extend_from_slice(run);
            continue;
        }
        let waiting = replies.remove(&corr).expect("looked up above");
        drop(replies);
        let events = if waiting.gathered.is_empty() {
            run.to_vec()
        } else {
            let mut gathered = waiting.gathered;
            gathered.extend_from_slice(run);
            folded(gathered)
        };
        waiting.reply.send(Ok(events));
    }
}

/// The runs of one command's shards as one reply: the outcome the merged stream shows, by the
/// same rule and with the same `seq` (`FanIn::offer_first_accept`, `crate::shard_merge`: the
/// first accept where it arrived, else the folded reject where the last arrived), the other
/// outcomes left out, every other event in the order it came.
fn folded(runs: Vec<Event>) -> Vec<Event> {
    let outcomes: Vec<&Event> = runs
        .iter()
        .filter(|e| e.kind.outcome_corr().is_some())
        .collect();
    let corr = outcomes[0].kind.outcome_corr().expect("an outcome");
    let mut fan_in = FanIn::new();
    fan_in.expect(corr, outcomes.len());
    let shown = outcomes
        .iter()
        .find_map(|e| match fan_in.offer_first_accept(&e.kind) {
            Offered::Folded(kind) => Some(Event {
                seq: e.seq,
                ts: e.ts,
                kind,
            }),
            Offered::Held | Offered::Pass => None,
        })
        .expect("the last outcome at the latest");
    let mut reply = vec![shown];
    reply.extend(runs.into_iter().filter(|e| e.kind.outcome_corr().is_none()));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_outcomes::{accepted, unknown_order};
    use ticker_engine::{AccountId, CommandTag, EventKind, OrderId};

    fn event(seq: u64, kind: EventKind) -> Event {
        Event { seq, ts: 0, kind }
    }

    /// Something a command caused (its kind does not matter here).
    fn caused(seq: u64, account: AccountId) -> Event {
        event(
            seq,
            EventKind::AccountStatus {
                account,
                disabled: true,
            },
        )
    }

    fn wait(
        replies: &Replies,
        corr: Correlation,
        runs: usize,
    ) -> tokio::sync::oneshot::Receiver<crate::market::ReplyResult> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        replies
            .lock()
            .insert(corr, Waiting::new(Reply::Async(tx), runs));
        rx
    }

    fn seqs(rx: &mut tokio::sync::oneshot::Receiver<crate::market::ReplyResult>) -> Vec<u64> {
        let events = rx.try_recv().expect("answered").expect("events");
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn each_caller_gets_its_run_at_once_with_one_shard() {
        let replies = Replies::default();
        let mut a = wait(&replies, 1, 1);
        let mut b = wait(&replies, 2, 1);
        route_replies(
            &replies,
            &[
                accepted(1, 1, CommandTag::Cancel, 5),
                caused(2, 1),
                accepted(3, 2, CommandTag::Halt, 0),
            ],
        );
        assert_eq!(seqs(&mut a), [1, 2]);
        assert_eq!(seqs(&mut b), [3]);
        assert!(replies.lock().is_empty());
    }

    #[test]
    fn a_command_of_every_shard_is_answered_once_all_runs_are_in() {
        let replies = Replies::default();
        let mut mass = wait(&replies, 7, 2);
        // Shard 0's run, beside another command's.
        route_replies(
            &replies,
            &[
                accepted(10, 7, CommandTag::MassCancel, 0),
                caused(11, 1),
                accepted(12, 8, CommandTag::Halt, 0),
            ],
        );
        assert!(mass.try_recv().is_err(), "one shard of two answered");
        route_replies(
            &replies,
            &[
                accepted(20, 7, CommandTag::MassCancel, 0),
                caused(21, 1),
                caused(22, 2),
            ],
        );
        // The first accept (where the merged stream has it), then what both shards did, in
        // arrival order.
        assert_eq!(seqs(&mut mass), [10, 11, 21, 22]);
        assert!(replies.lock().is_empty());
    }

    #[test]
    fn a_cancel_by_client_id_answers_with_the_shard_that_held_the_order() {
        let replies = Replies::default();
        let mut cancel = wait(&replies, 3, 3);
        route_replies(&replies, &[unknown_order(1, 3)]);
        route_replies(
            &replies,
            &[accepted(5, 3, CommandTag::Cancel, 42), caused(6, 1)],
        );
        route_replies(&replies, &[unknown_order(9, 3)]);
        let events = cancel.try_recv().unwrap().unwrap();
        assert!(
            matches!(
                events[0].kind,
                EventKind::Accepted {
                    order_id: OrderId(42),
                    ..
                }
            ),
            "{events:?}"
        );
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn a_reject_by_every_shard_is_one_reject() {
        let replies = Replies::default();
        let mut cancel = wait(&replies, 3, 2);
        route_replies(&replies, &[unknown_order(1, 3)]);
        route_replies(&replies, &[unknown_order(2, 3)]);
        assert_eq!(seqs(&mut cancel), [2]);
    }
}
