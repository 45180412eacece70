//! After the clean stop: the whole journal replayed from its first command through fresh
//! engines (the library, not the server; a sharded market's journals interleaved by merge
//! ticket and merged as its feeds did, `ticker_servers::shard_recovery::MergedReplay`),
//! compared with every snapshot on disk at the command it was cut, and what the client was
//! told checked against it.

use super::streams::OpenOrders;
use super::trader::{Ledger, PlaceOutcome};
use std::collections::HashMap;
use std::path::Path;
use ticker_engine::journal::{DirStorage, Journal, OpenOptions};
use ticker_engine::shard::Shard;
use ticker_engine::*;
use ticker_servers::shard_recovery::{runs_in_ticket_order, shard_dir, MergedReplay};
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

/// The engines rebuilt from the journal, and what their events said about one account.
pub struct Replay {
    /// In shard order.
    pub engines: Vec<Engine>,
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
    /// Replays `dir`, written by a market of `shards` shards, with the engine configuration
    /// tickerd runs with. Panics if a journal is not whole from command 1, or if a snapshot
    /// differs from the replay at its command.
    pub fn run(dir: &Path, config: EngineConfig, account: AccountId, shards: usize) -> Replay {
        let journals: Vec<Journal<DirStorage>> = (0..shards)
            .map(|k| {
                let dir = if shards == 1 {
                    dir.to_path_buf()
                } else {
                    shard_dir(dir, k)
                };
                let storage = DirStorage::new(dir).expect("the data directory");
                Journal::open(storage, OpenOptions::default()).expect("the journal opens")
            })
            .collect();
        let mut snapshots = Vec::new();
        for (k, journal) in journals.iter().enumerate() {
            assert!(
                journal.torn_tail().is_none(),
                "a clean stop leaves no torn tail (shard {k}): {:?}",
                journal.torn_tail()
            );
            assert_eq!(journal.first_index(), 1, "nothing was pruned (shard {k})");
            let cut = journal.snapshots().to_vec();
            assert_eq!(
                cut.last().copied(),
                Some(journal.last_index()),
                "the clean stop's snapshot is cut after the last journaled command (shard {k})"
            );
            snapshots.push(cut.into_iter().peekable());
        }
        let engines = (0..shards)
            .map(|k| {
                Engine::new(EngineConfig {
                    shard: Shard::new(k, shards).expect("a shard"),
                    ..config.clone()
                })
            })
            .collect();
        let mut merged_replay = MergedReplay::new(engines);
        let mut replay = Replay {
            engines: Vec::new(),
            commands: 0,
            snapshots: 0,
            outcomes: HashMap::new(),
            done: HashMap::new(),
            taken: HashMap::new(),
        };
        let mut indexes = vec![0; shards];
        let mut events = Vec::new();
        for item in runs_in_ticket_order(&journals, &vec![0; shards]) {
            let (k, run) = item.expect("every journaled command reads back");
            for &(index, _) in &run.commands {
                indexes[k] += 1;
                assert_eq!(
                    index, indexes[k],
                    "command indexes run from 1 without a gap (shard {k})"
                );
            }
            merged_replay.apply(k, &run, Some(&mut events));
            for e in events.drain(..) {
                replay.note(account, e);
            }
            // A snapshot command ends its run: the cut is the engine after the run.
            if snapshots[k].next_if_eq(&indexes[k]).is_some() {
                let index = indexes[k];
                let file = journals[k]
                    .read_snapshot(index)
                    .unwrap_or_else(|e| panic!("snapshot {index} of shard {k} reads back: {e}"));
                let bytes = file.section(ENGINE_SECTION).expect("an engine section");
                let cut: EngineSnapshot =
                    postcard::from_bytes(bytes).expect("the engine section decodes");
                // Not assert_eq: the Debug form of two whole engines says nothing useful.
                assert!(
                    merged_replay.engines()[k].snapshot() == cut,
                    "snapshot {index} of shard {k} differs from the replay of commands 1..={index}"
                );
                replay.snapshots += 1;
            }
        }
        for (k, left) in snapshots.iter_mut().enumerate() {
            assert!(
                left.peek().is_none(),
                "every snapshot lies within the journal (shard {k})"
            );
        }
        replay.commands = merged_replay.commands;
        replay.engines = merged_replay.into_engines();
        replay
    }

    /// The live order `id`, on whichever shard holds it.
    fn order(&self, id: OrderId) -> Option<OrderView> {
        self.engines.iter().find_map(|e| e.order(id))
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
            self.engines
                .iter()
                .flat_map(Engine::live_orders)
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
                    let live = self.order(*order_id).filter(|o| o.account == account);
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
