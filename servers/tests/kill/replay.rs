//! After the clean stop: the whole journal replayed from its first command through a fresh
//! engine (the library, not the server), compared with every snapshot on disk at the command
//! it was cut, and what the client was told checked against it.

use super::streams::OpenOrders;
use super::trader::{Ledger, PlaceOutcome};
use std::collections::HashMap;
use std::path::Path;
use ticker_engine::journal::{DirStorage, Journal, OpenOptions};
use ticker_engine::*;
use ticker_servers::snapshot_writer::ENGINE_SECTION;

/// An outcome event, as much of it as the checks read (a long run has millions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Placed {
        order_id: OrderId,
        client_id: ClientOrderId,
    },
    Accepted {
        command: CommandTag,
        order_id: OrderId,
    },
    Rejected {
        command: CommandTag,
        client_id: ClientOrderId,
        reason: RejectReason,
    },
}

/// The engine rebuilt from the journal, and what its events said about one account.
pub struct Replay {
    pub engine: Engine,
    pub commands: u64,
    /// Snapshots compared with the replay at their command.
    pub snapshots: usize,
    /// The account's outcome events (accepted, rejected) by engine seq.
    outcomes: HashMap<u64, Outcome>,
    /// Each of the account's orders that ended: the seq of its `OrderDone` and why.
    done: HashMap<OrderId, (u64, DoneReason)>,
    /// Trades the account's orders took as taker: trade id → taker order.
    taken: HashMap<u64, OrderId>,
}

impl Replay {
    /// Replays `dir` with the engine configuration tickerd runs with. Panics if the journal
    /// is not whole from command 1, or if a snapshot differs from the replay at its command.
    pub fn run(dir: &Path, config: EngineConfig, account: AccountId) -> Replay {
        let storage = DirStorage::new(dir).expect("the data directory");
        let journal = Journal::open(storage, OpenOptions::default()).expect("the journal opens");
        assert!(
            journal.torn_tail().is_none(),
            "a clean stop leaves no torn tail: {:?}",
            journal.torn_tail()
        );
        assert_eq!(journal.first_index(), 1, "nothing was pruned");
        let snapshots = journal.snapshots().to_vec();
        let newest = *snapshots.last().expect("a clean stop leaves a snapshot");
        assert_eq!(
            newest,
            journal.last_index(),
            "the clean stop's snapshot is cut after the last journaled command"
        );
        let mut replay = Replay {
            engine: Engine::new(config),
            commands: 0,
            snapshots: 0,
            outcomes: HashMap::new(),
            done: HashMap::new(),
            taken: HashMap::new(),
        };
        let mut events = Vec::new();
        let mut next_snapshot = snapshots.iter().copied().peekable();
        for item in journal.commands_from(1) {
            let (index, command) = item.expect("every journaled command reads back");
            replay.commands += 1;
            assert_eq!(
                index, replay.commands,
                "command indexes run from 1 without a gap"
            );
            replay.engine.apply(&command, &mut events);
            for e in events.drain(..) {
                replay.note(account, e);
            }
            if next_snapshot.next_if_eq(&index).is_some() {
                let file = journal
                    .read_snapshot(index)
                    .unwrap_or_else(|e| panic!("snapshot {index} reads back: {e}"));
                let bytes = file.section(ENGINE_SECTION).expect("an engine section");
                let cut: EngineSnapshot =
                    postcard::from_bytes(bytes).expect("the engine section decodes");
                // Not assert_eq: the Debug form of two whole engines says nothing useful.
                assert!(
                    replay.engine.snapshot() == cut,
                    "snapshot {index} differs from the replay of commands 1..={index}"
                );
                replay.snapshots += 1;
            }
        }
        assert_eq!(
            replay.snapshots,
            snapshots.len(),
            "every snapshot lies within the journal"
        );
        replay
    }

    fn note(&mut self, account: AccountId, e: Event) {
        match e.kind {
            EventKind::PlaceAccepted { order, .. } if order.account == account => {
                let placed = Outcome::Placed {
                    order_id: order.order_id,
                    client_id: order.client_id,
                };
                self.outcomes.insert(e.seq, placed);
            }
            EventKind::Accepted {
                account: a,
                command,
                order_id,
                ..
            } if a == account => {
                self.outcomes
                    .insert(e.seq, Outcome::Accepted { command, order_id });
            }
            EventKind::Rejected {
                account: a,
                command,
                client_id,
                reason,
                ..
            } if a == account => {
                let rejected = Outcome::Rejected {
                    command,
                    client_id,
                    reason,
                };
                self.outcomes.insert(e.seq, rejected);
            }
            EventKind::Trade {
                trade_id,
                taker_order,
                taker_account,
                ..
            } if taker_account == account => {
                self.taken.insert(trade_id, taker_order);
            }
            EventKind::OrderDone {
                order_id,
                account: a,
                reason,
                ..
            } if a == account => {
                let again = self.done.insert(order_id, (e.seq, reason));
                assert!(again.is_none(), "order {order_id} ended twice");
            }
            _ => {}
        }
    }

    /// The account's live orders at the end of the journal.
    pub fn open_orders(&self, account: AccountId) -> OpenOrders {
        OpenOrders(
            self.engine
                .live_orders()
                .filter(|o| o.account == account)
                .map(|o| (o.id, (o.client_id, o.remaining)))
                .collect(),
        )
    }

    /// Accepted places of the account in the journal (answered or not).
    pub fn accepted_places(&self) -> usize {
        self.outcomes
            .values()
            .filter(|k| matches!(k, Outcome::Placed { .. }))
            .count()
    }

    /// Everything the ledger says the server answered that the journal does not bear out.
    pub fn disagreements(&self, ledger: &Ledger, account: AccountId) -> Vec<String> {
        let mut wrong = Vec::new();
        for p in &ledger.places {
            let outcome = self.outcomes.get(&p.engine_seq);
            match &p.outcome {
                PlaceOutcome::Accepted {
                    order_id,
                    trade_ids,
                } => {
                    let journaled = outcome
                        == Some(&Outcome::Placed {
                            order_id: *order_id,
                            client_id: p.client_id,
                        });
                    if !journaled {
                        wrong.push(format!(
                            "order {order_id} (client id {}) was acknowledged at seq {}, the \
                             journal has {outcome:?} there",
                            p.client_id, p.engine_seq
                        ));
                        continue;
                    }
                    let live = self
                        .engine
                        .order(*order_id)
                        .filter(|o| o.account == account);
                    match (live, self.done.get(order_id)) {
                        (Some(_), None) => {}
                        (None, Some((seq, _))) if *seq > p.engine_seq => {}
                        (live, done) => wrong.push(format!(
                            "acknowledged order {order_id} is neither resting nor ended by a \
                             later journaled event: live {live:?}, done {done:?}"
                        )),
                    }
                    for t in trade_ids {
                        if self.taken.get(t) != Some(order_id) {
                            wrong.push(format!(
                                "order {order_id} was told of trade {t}, the journal's trade \
                                 {t} has taker {:?}",
                                self.taken.get(t)
                            ));
                        }
                    }
                }
                PlaceOutcome::Rejected(reason) => {
                    let journaled = matches!(outcome, Some(Outcome::Rejected { command: CommandTag::Place, reason: r, client_id })
                        if *r as i32 == *reason as i32 && *client_id == p.client_id);
                    if !journaled {
                        wrong.push(format!(
                            "a place (client id {}) was rejected {reason:?} at seq {}, the \
                             journal has {outcome:?} there",
                            p.client_id, p.engine_seq
                        ));
                    }
                }
            }
        }
        for c in &ledger.cancels {
            let outcome = self.outcomes.get(&c.engine_seq);
            let order_id = c.order_id;
            match c.outcome {
                Ok(()) => {
                    let journaled = outcome
                        == Some(&Outcome::Accepted {
                            command: CommandTag::Cancel,
                            order_id,
                        });
                    let ended = self.done.get(&order_id).copied();
                    if !journaled
                        || !matches!(ended, Some((seq, DoneReason::Cancelled)) if seq > c.engine_seq)
                    {
                        wrong.push(format!(
                            "the cancel of order {order_id} was acknowledged at seq {}, the \
                             journal has {outcome:?} there and the order ended {ended:?}",
                            c.engine_seq
                        ));
                    }
                }
                Err(reason) => {
                    let journaled = matches!(outcome, Some(Outcome::Rejected { command: CommandTag::Cancel, reason: r, .. })
                        if *r as i32 == reason as i32);
                    if !journaled {
                        wrong.push(format!(
                            "the cancel of order {order_id} was rejected {reason:?} at seq {}, \
                             the journal has {outcome:?} there",
                            c.engine_seq
                        ));
                    }
                }
            }
        }
        wrong
    }
}
