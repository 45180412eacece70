//! Shards give the same market as one engine: the random command streams of the property
//! tests, run on 1, 2 and 4 shards, give the same events for every instrument and the same
//! reply to every command, and the threaded [`ShardedPipeline`] gives, shard by shard, exactly
//! the events its engines give applied one command at a time.
//!
//! The streams are the property tests' ([`streams`]) with three things kept out that shards
//! decide differently by design (`ticker_engine::shard`): account-wide limits (split between
//! shards), a client order id live on two shards at once (unique per shard), and a full order
//! pool (one per shard). Every command is preceded by a heartbeat to every shard at its
//! timestamp, as the server's clock does, so GTD orders expire at the same point of each
//! instrument's stream however the instruments are spread.

mod shard_set;
mod streams;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use shard_set::*;
use std::collections::BTreeMap;
use streams::*;
use ticker_engine::codec::encode_event;
use ticker_engine::pipeline::{PipelineConfig, ShardedPipeline};
use ticker_engine::shard::{route, Route};
use ticker_engine::*;

/// Runs one scenario on sets of several shard counts side by side, choosing the orders that
/// cancels and amends name from the first set's live orders.
struct Runs {
    sets: Vec<ShardSet>,
    /// Correlation ids of every place accepted, with the owner.
    accepted: Vec<(Correlation, AccountId)>,
    /// Every command given, in order (heartbeats included), for the first set's ids.
    commands: Vec<Vec<Command>>,
    ts: Timestamp,
    corr: Correlation,
}

impl Runs {
    fn new(config: &EngineConfig, counts: &[usize]) -> Self {
        Runs {
            sets: counts.iter().map(|&n| ShardSet::new(config, n)).collect(),
            accepted: Vec::new(),
            commands: vec![Vec::new(); counts.len()],
            ts: 1_000,
            corr: 0,
        }
    }

    /// The place (by correlation id) a cancel or amend names, and the account sending it.
    fn target(&self, c: &OrderCommand) -> (Option<Result<Correlation, ClientOrderId>>, AccountId) {
        let owner = |account: AccountId| if c.foreign { c.account } else { account };
        match &c.target {
            Target::Live(ix) => {
                let first = &self.sets[0];
                let live: Vec<OrderView> = first.engines[0].live_orders().collect();
                if live.is_empty() {
                    return (None, c.account);
                }
                let o = live[ix.index(live.len())];
                (Some(Ok(first.names[&o.id])), owner(o.account))
            }
            Target::Any(ix) if !self.accepted.is_empty() => {
                let (corr, account) = self.accepted[ix.index(self.accepted.len())];
                (Some(Ok(corr)), owner(account))
            }
            Target::Client(cid) => (Some(Err(*cid)), c.account),
            Target::Any(_) | Target::Unknown => (None, c.account),
        }
    }

    fn kind(&self, set: &ShardSet, action: &Action) -> CommandKind {
        let order = |t: Option<Result<Correlation, ClientOrderId>>| match t {
            Some(Err(cid)) => OrderRef::Client(cid),
            Some(Ok(corr)) => OrderRef::Id(set.id(Some(corr))),
            None => OrderRef::Id(NO_SUCH_ORDER),
        };
        match action {
            Action::Place(p, expiry_in) => {
                let mut p = *p;
                p.expiry = (self.ts as i64 + expiry_in).max(0) as u64;
                // A client id is only ever used on instruments of one residue mod 4, so it is
                // never live on two shards of 1, 2 or 4.
                if p.client_id % 4 != p.instrument as u64 % 4 {
                    p.client_id = 0;
                }
                CommandKind::Place(p)
            }
            Action::Cancel(c) => {
                let (t, account) = self.target(c);
                CommandKind::Cancel(Cancel {
                    account,
                    order: order(t),
                })
            }
            Action::Amend {
                order: c,
                price,
                size,
                trigger,
                ..
            } => {
                let (t, account) = self.target(c);
                CommandKind::Amend(Amend {
                    account,
                    order: order(t),
                    price: *price,
                    size: *size,
                    trigger: *trigger,
                })
            }
            Action::MassCancel(m) => CommandKind::MassCancel(*m),
            Action::SessionClosed(s) => CommandKind::SessionClosed { session: *s },
            Action::Halt(i) => CommandKind::Halt { instrument: *i },
            Action::Resume(i) => CommandKind::Resume { instrument: *i },
            Action::AddInstrument(spec) => CommandKind::AddInstrument(Box::new(spec.clone())),
            Action::Heartbeat => CommandKind::Heartbeat,
            Action::SetLimits(account, limits) => CommandKind::SetLimits {
                account: *account,
                limits: limits.clone().map(|l| {
                    Box::new(Limits {
                        max_open_orders: None,
                        max_orders_per_sec: None,
                        ..l
                    })
                }),
            },
            Action::DisableAccount(account) => CommandKind::DisableAccount { account: *account },
            Action::EnableAccount(account) => CommandKind::EnableAccount { account: *account },
        }
    }

    fn step(&mut self, step_no: usize, step: &Step) -> Result<(), TestCaseError> {
        self.ts += step.dt;
        self.corr += 1;
        let beat = Command::new(self.ts, self.corr, CommandKind::Heartbeat);
        self.corr += 1;
        let deadline = match self.corr {
            c if c % 23 == 0 => self.ts - 1,
            c if c % 5 == 0 => self.ts + 1_000,
            _ => 0,
        };
        let kinds: Vec<CommandKind> = self
            .sets
            .iter()
            .map(|set| self.kind(set, &step.action))
            .collect();
        let mut observed = Vec::new();
        for (k, kind) in kinds.into_iter().enumerate() {
            let command = Command {
                ts: self.ts,
                corr: self.corr,
                deadline,
                kind,
            };
            let set = &mut self.sets[k];
            let expired = set.apply(&beat);
            let did = set.apply(&command);
            self.commands[k].extend([beat.clone(), command]);
            observed.push((expired, did));
        }
        if let Some((
            _,
            Observed {
                reply: Some(EventKind::PlaceAccepted { order, .. }),
                ..
            },
        )) = observed.first()
        {
            self.accepted.push((self.corr, order.account));
        }
        for (k, o) in observed.iter().enumerate().skip(1) {
            prop_assert_eq!(
                &observed[0],
                o,
                "step {}: {:?} on {} shard(s) and on {}",
                step_no,
                step.action,
                self.sets[0].count(),
                self.sets[k].count()
            );
        }
        Ok(())
    }

    fn run(&mut self, scenario: &Scenario) -> Result<(), TestCaseError> {
        for k in 0..scenario.instruments {
            let add = Step {
                dt: 0,
                action: Action::AddInstrument(instrument_spec(k)),
            };
            self.step(0, &add)?;
        }
        for (n, step) in scenario.steps.iter().enumerate() {
            self.step(n + 1, step)?;
        }
        for set in &self.sets {
            set.check_trade_ids();
        }
        self.same_books()
    }

    /// Every book ends the same on its shard as in the one engine.
    fn same_books(&self) -> Result<(), TestCaseError> {
        let one = &self.sets[0].engines[0];
        for set in &self.sets[1..] {
            for (i, book) in one.books().iter().enumerate() {
                let i = i as InstrumentId;
                let owner = &set.engines[Shard::of_instrument(set.count(), i)];
                let theirs = owner.book(i).expect("every shard knows every instrument");
                for side in [Side::Buy, Side::Sell] {
                    // Levels name their queues' slots, which differ between shard sets.
                    let levels = |b: &Book| -> Vec<(Ticks, Lots, u32)> {
                        b.depth(side)
                            .map(|(p, l)| (p, l.visible, l.orders))
                            .collect()
                    };
                    let (a, b) = (levels(book), levels(theirs));
                    prop_assert_eq!(
                        a,
                        b,
                        "instrument {} {:?} on {} shards",
                        i,
                        side,
                        set.count()
                    );
                }
                prop_assert_eq!(book.is_halted(), theirs.is_halted());
                prop_assert_eq!(book.last_price(), theirs.last_price());
            }
        }
        Ok(())
    }
}

/// The property tests' scenarios with an order pool no shard fills.
fn sharded_scenario() -> impl Strategy<Value = Scenario> {
    scenario_with(Just(4096usize))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        max_shrink_iters: 2048,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn one_two_and_four_shards_give_every_instrument_the_same_events(
        scenario in sharded_scenario()
    ) {
        Runs::new(&scenario.config, &[1, 2, 4]).run(&scenario)?;
    }
}

/// A long stream: many scenarios' steps over four instruments, from a fixed seed.
fn long_stream(steps: usize) -> Scenario {
    let mut runner = TestRunner::deterministic();
    let mut scenario = sharded_scenario().new_tree(&mut runner).unwrap().current();
    scenario.instruments = 4;
    scenario.config.max_instruments = 8;
    let step = (0u64..40, action(4)).prop_map(|(dt, action)| Step { dt, action });
    let steps = prop::collection::vec(step, steps);
    scenario.steps = steps.new_tree(&mut runner).unwrap().current();
    scenario
}

/// Events of one shard as bytes, for exact comparison.
fn bytes(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        encode_event(e, &mut out);
    }
    out
}

#[test]
fn the_threaded_shards_give_exactly_what_their_engines_give() {
    let scenario = long_stream(6_000);
    let mut runs = Runs::new(&scenario.config, &[1, 2, 4]);
    runs.run(&scenario).unwrap();
    for (k, set) in runs.sets.iter().enumerate() {
        let count = set.count();
        let config = PipelineConfig {
            engine: scenario.config.clone(),
            max_batch: 7, // batches end mid-stream, often
            ..PipelineConfig::default()
        };
        let (pipeline, ingress, mut egress) = ShardedPipeline::spawn(config, count).unwrap();
        let commands = runs.commands[k].clone();
        let producer = std::thread::spawn(move || {
            for command in commands {
                ingress.submit(command).unwrap();
            }
        });
        let mut streams = vec![Vec::new(); count];
        while let Some((shard, batch)) = egress.recv() {
            streams[shard].extend(batch.iter().cloned());
        }
        producer.join().unwrap();
        let engines = pipeline.join();
        for shard in 0..count {
            assert_eq!(
                bytes(&streams[shard]),
                bytes(&set.streams[shard]),
                "shard {shard} of {count}"
            );
            assert_eq!(engines[shard].last_seq(), set.engines[shard].last_seq());
        }
        assert!(streams.iter().all(|s| !s.is_empty()), "every shard worked");
    }
}

/// `Engine::apply_all` (runs applied with lookahead) gives exactly what `Engine::apply` gives
/// one command at a time, whatever the length of the runs.
#[test]
fn applying_runs_with_lookahead_gives_what_one_at_a_time_gives() {
    let scenario = long_stream(6_000);
    let mut runs = Runs::new(&scenario.config, &[1]);
    runs.run(&scenario).unwrap();
    let expected = bytes(&runs.sets[0].streams[0]);
    for run in [1, 2, 3, 7, 256, usize::MAX] {
        let mut engine = Engine::new(scenario.config.clone());
        let mut events = Vec::new();
        for chunk in runs.commands[0].chunks(run.min(runs.commands[0].len())) {
            engine.apply_all(chunk, &mut events);
        }
        assert_eq!(bytes(&events), expected, "runs of {run}");
    }
}

/// Each shard's journal holds, with every run it published, that run's merge ticket: reading
/// the journals back and interleaving their runs by ticket gives exactly the merged stream
/// the egress handed out, event for event — what a sharded market's recovery relies on.
#[test]
fn the_shards_journals_give_back_the_merged_stream() {
    use ticker_engine::journal::{FsyncMode, Journal, OpenOptions, SimStorage};
    use ticker_engine::pipeline::{JournalSetup, FIRST_TICKET};
    let scenario = long_stream(3_000);
    let mut runs = Runs::new(&scenario.config, &[1, 2, 4]);
    runs.run(&scenario).unwrap();
    for (k, set) in runs.sets.iter().enumerate().skip(1) {
        let count = set.count();
        let disks: Vec<SimStorage> = (0..count).map(|_| SimStorage::new()).collect();
        let journals = disks
            .iter()
            .map(|disk| JournalSetup {
                writer: Journal::open(disk.clone(), OpenOptions::default())
                    .unwrap()
                    .into_writer(1, 64 << 10)
                    .unwrap(),
                fsync: FsyncMode::Batch,
                group_commit_bytes: 1 << 20,
                group_commit_delay: std::time::Duration::ZERO,
            })
            .collect();
        let config = PipelineConfig {
            engine: scenario.config.clone(),
            max_batch: 7,
            ..PipelineConfig::default()
        };
        let engines = (0..count)
            .map(|i| {
                Engine::new(EngineConfig {
                    shard: shard::Shard::new(i, count).unwrap(),
                    ..scenario.config.clone()
                })
            })
            .collect();
        let (pipeline, ingress, mut egress) =
            ShardedPipeline::spawn_journaled(engines, config, journals, FIRST_TICKET).unwrap();
        // Two producers, so the shards' runs interleave differently from run to run.
        let commands = runs.commands[k].clone();
        let (a, b): (Vec<_>, Vec<_>) = commands.into_iter().partition(|c| c.corr % 2 == 0);
        let producers: Vec<_> = [a, b]
            .into_iter()
            .map(|part| {
                let ingress = ingress.clone();
                std::thread::spawn(move || {
                    for c in part {
                        ingress.submit(c).unwrap();
                    }
                })
            })
            .collect();
        drop(ingress);
        let mut merged = Vec::new();
        let mut tickets = Vec::new();
        while let Some((_, batch)) = egress.recv() {
            tickets.push(batch.ticket());
            merged.extend(batch.iter().cloned());
        }
        producers.into_iter().for_each(|p| p.join().unwrap());
        pipeline.join();
        let expected: Vec<u64> = (FIRST_TICKET..FIRST_TICKET + tickets.len() as u64).collect();
        assert_eq!(
            tickets, expected,
            "batches come in ticket order, none missing"
        );
        // Replay: every shard's runs, the ticketed ones interleaved by ticket.
        let mut engines: Vec<Engine> = (0..count)
            .map(|i| {
                Engine::new(EngineConfig {
                    shard: shard::Shard::new(i, count).unwrap(),
                    ..scenario.config.clone()
                })
            })
            .collect();
        let journals: Vec<Journal<SimStorage>> = disks
            .iter()
            .map(|d| Journal::open(d.clone(), OpenOptions::default()).unwrap())
            .collect();
        let mut runs_left: Vec<std::collections::VecDeque<_>> = journals
            .iter()
            .map(|j| j.records_from(1).collect::<Result<_, _>>().unwrap())
            .collect();
        let mut replayed = Vec::new();
        let mut scratch = Vec::new();
        loop {
            // Runs that published nothing go in at once: their place changes no event.
            for (shard, left) in runs_left.iter_mut().enumerate() {
                while left.front().is_some_and(|r| r.ticket.is_none()) {
                    for (_, c) in left.pop_front().unwrap().commands {
                        engines[shard].apply(&c, &mut scratch);
                    }
                    assert!(scratch.is_empty(), "an unticketed run published nothing");
                }
            }
            let next = runs_left
                .iter()
                .enumerate()
                .filter_map(|(shard, left)| left.front().map(|r| (r.ticket.unwrap(), shard)))
                .min();
            let Some((_, shard)) = next else { break };
            for (_, c) in runs_left[shard].pop_front().unwrap().commands {
                engines[shard].apply(&c, &mut replayed);
            }
        }
        assert_eq!(
            bytes(&replayed),
            bytes(&merged),
            "{count} shards: the journals replay the merged stream"
        );
    }
}

/// A shard whose journal fails after taking a merge ticket never publishes that ticket: the
/// merged egress ends (as a one-shard pipeline's does) instead of waiting for it forever with
/// the other shard's later batch ready.
#[test]
fn a_shard_whose_journal_fails_ends_the_merged_egress() {
    use std::time::{Duration, Instant};
    use ticker_engine::journal::{FsyncMode, Journal, OpenOptions, SimStorage};
    use ticker_engine::pipeline::{JournalSetup, RecvTimeoutError, FIRST_TICKET};
    let disks: Vec<SimStorage> = (0..2).map(|_| SimStorage::new()).collect();
    let journals = disks
        .iter()
        .map(|disk| JournalSetup {
            writer: Journal::open(disk.clone(), OpenOptions::default())
                .unwrap()
                .into_writer(1, 1 << 20)
                .unwrap(),
            fsync: FsyncMode::Batch,
            group_commit_bytes: 1 << 20,
            group_commit_delay: Duration::ZERO,
        })
        .collect();
    let engines = (0..2)
        .map(|i| {
            Engine::new(EngineConfig {
                shard: shard::Shard::new(i, 2).unwrap(),
                order_capacity: 64,
                ..EngineConfig::default()
            })
        })
        .collect();
    let (pipeline, ingress, mut egress) = ShardedPipeline::spawn_journaled(
        engines,
        PipelineConfig::default(),
        journals,
        FIRST_TICKET,
    )
    .unwrap();
    // Instrument i lives on shard i; halting an unknown one is a reject: one event each.
    let halt = |corr, instrument| Command::new(corr, corr, CommandKind::Halt { instrument });
    ingress.submit(halt(1, 1)).unwrap();
    ingress.submit(halt(2, 0)).unwrap();
    for _ in 0..2 {
        let (_, batch) = egress.recv().expect("both shards publish");
        assert!(batch.ticket() < FIRST_TICKET + 2);
    }
    disks[1].fail_from_now();
    ingress.submit(halt(3, 1)).unwrap();
    // Shard 1 takes the next ticket and fails to write its record.
    let guard = Instant::now() + Duration::from_secs(20);
    while pipeline.journal_failure().is_none() {
        assert!(Instant::now() < guard, "shard 1's journal fails in time");
        std::thread::yield_now();
    }
    // Shard 0's batch takes a later ticket and is ready; the one before it never will be.
    ingress.submit(halt(4, 0)).unwrap();
    match egress.recv_deadline(Instant::now() + Duration::from_secs(20)) {
        Err(RecvTimeoutError::Closed) => {}
        other => panic!("the merged egress ends, not {other:?}"),
    }
    assert_eq!(pipeline.journal_failure().map(|(shard, _)| shard), Some(1));
    pipeline.shutdown();
    drop(ingress);
    pipeline.join();
}

/// A command for every shard is handed back when any shard's ring is full, before any copy
/// goes in, instead of going into the others' and waiting for room in the full one: a front's
/// task that must not wait gets `IngressFull`, and no shard applies half the command.
#[test]
fn a_command_for_every_shard_is_handed_back_whole_when_a_ring_is_full() {
    use std::time::{Duration, Instant};
    use ticker_engine::pipeline::SubmitError;
    let config = PipelineConfig {
        ingress_capacity: 8,
        egress_capacity: 2,
        max_batch: 1,
        engine: EngineConfig {
            order_capacity: 64,
            ..EngineConfig::default()
        },
        ..PipelineConfig::default()
    };
    let (pipeline, ingress, mut egress) = ShardedPipeline::spawn(config, 2).unwrap();
    // Nobody reads the egress yet: shard 1's engine thread stops at its full egress ring, then
    // its ingress ring fills with rejected halts of instrument 1.
    let guard = Instant::now() + Duration::from_secs(20);
    let mut corr = 0;
    loop {
        corr += 1;
        let halt = Command::new(corr, corr, CommandKind::Halt { instrument: 1 });
        match ingress.try_submit(halt) {
            // Full while the engine thread waits on its egress: it stays full.
            Err(SubmitError::IngressFull(_)) if pipeline.egress_stalls() > 0 => break,
            Err(SubmitError::IngressFull(_)) => corr -= 1,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < guard, "shard 1's ring fills in time");
        std::thread::yield_now();
    }
    let kill = Command::new(
        corr + 1,
        corr + 1,
        CommandKind::DisableAccount { account: 9 },
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let submitter = {
        let ingress = ingress.clone();
        std::thread::spawn(move || tx.send(ingress.try_submit(kill)).unwrap())
    };
    let handed_back = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("try_submit does not wait for room");
    assert!(
        matches!(handed_back, Err(SubmitError::IngressFull(_))),
        "{handed_back:?}"
    );
    submitter.join().unwrap();
    // A submitter that waits for room holds the turn of commands for every shard: another
    // such command is handed back, not made to wait behind it.
    let waiting = {
        let ingress = ingress.clone();
        let enable = Command::new(
            corr + 2,
            corr + 2,
            CommandKind::EnableAccount { account: 9 },
        );
        std::thread::spawn(move || ingress.submit(enable).unwrap())
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let again = {
        let ingress = ingress.clone();
        let kill = Command::new(
            corr + 3,
            corr + 3,
            CommandKind::DisableAccount { account: 9 },
        );
        std::thread::spawn(move || tx.send(ingress.try_submit(kill)).unwrap())
    };
    let handed_back = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("try_submit does not wait behind a waiting submitter");
    assert!(
        matches!(handed_back, Err(SubmitError::IngressFull(_))),
        "{handed_back:?}"
    );
    again.join().unwrap();
    drop(ingress);
    let mut seen = Vec::new();
    while let Some((shard, batch)) = egress.recv() {
        seen.extend(batch.iter().map(|e| (shard, e.kind.outcome_corr())));
    }
    assert!(
        !seen
            .iter()
            .any(|&(_, c)| c == Some(corr + 1) || c == Some(corr + 3)),
        "no shard applied a command handed back"
    );
    waiting.join().unwrap();
    let enabled = seen.iter().filter(|&&(_, c)| c == Some(corr + 2)).count();
    assert_eq!(
        enabled, 2,
        "the waiting submitter's command reached both shards"
    );
    let halts = seen
        .iter()
        .filter(|&&(_, c)| c.is_some_and(|c| c < corr))
        .count();
    assert_eq!(halts as u64, corr - 1, "every halt taken was applied");
    pipeline.join();
}

/// Commands for every shard submitted from several threads at once reach every shard in the
/// same order, so a snapshot is never between two copies of another such command (what lets a
/// recovery tell which shards a crash left without one).
#[test]
fn commands_for_every_shard_reach_every_shard_in_one_order() {
    const SUBMITTERS: u64 = 3;
    const EACH: u64 = 300;
    // Tiny rings: a submitter often waits for room part-way through its copies, which is when
    // another could slip its own in between.
    let config = PipelineConfig {
        ingress_capacity: 2,
        max_batch: 1,
        ..PipelineConfig::default()
    };
    let (pipeline, ingress, mut egress) = ShardedPipeline::spawn(config, 3).unwrap();
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|t| {
            let ingress = ingress.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let corr = 1 + t * EACH + i;
                    let kind = if i % 2 == 0 {
                        CommandKind::DisableAccount { account: t }
                    } else {
                        CommandKind::EnableAccount { account: t }
                    };
                    // try_submit on odd ones: both ways of submitting keep the order.
                    let command = Command::new(corr, corr, kind);
                    if i % 3 == 0 {
                        let mut command = command;
                        loop {
                            match ingress.try_submit(command) {
                                Ok(_) => break,
                                Err(ticker_engine::pipeline::SubmitError::IngressFull(c)) => {
                                    command = c;
                                    std::thread::yield_now();
                                }
                                Err(e) => panic!("{e}"),
                            }
                        }
                    } else {
                        ingress.submit(command).unwrap();
                    }
                }
            })
        })
        .collect();
    // Read while they submit: the egress rings are small too.
    drop(ingress);
    let mut order: Vec<Vec<u64>> = vec![Vec::new(); 3];
    while let Some((shard, batch)) = egress.recv() {
        order[shard].extend(batch.iter().filter_map(|e| e.kind.outcome_corr()));
    }
    for s in submitters {
        s.join().unwrap();
    }
    pipeline.join();
    assert_eq!(order[0].len() as u64, SUBMITTERS * EACH);
    assert_eq!(order[1], order[0]);
    assert_eq!(order[2], order[0]);
}

#[test]
fn a_kill_switch_reaches_every_shard_and_gives_one_reply() {
    let config = EngineConfig {
        order_capacity: 1024,
        ..EngineConfig::default()
    };
    let (pipeline, ingress, mut egress) = ShardedPipeline::spawn(
        PipelineConfig {
            engine: config,
            ..PipelineConfig::default()
        },
        3,
    )
    .unwrap();
    let mut fan = FanIn::new();
    let mut corr = 0;
    let mut submit = |kind: CommandKind, fan: &mut FanIn| {
        corr += 1;
        fan.expect_command(corr, &kind, 3);
        ingress.submit(Command::new(corr, corr, kind)).unwrap();
    };
    for k in 0..3 {
        submit(
            CommandKind::AddInstrument(Box::new(instrument_spec(k))),
            &mut fan,
        );
    }
    for k in 0..3 {
        submit(
            CommandKind::Place(Place::limit(7, k, Side::Buy, CENTRE, 10)),
            &mut fan,
        );
    }
    submit(CommandKind::DisableAccount { account: 7 }, &mut fan);
    drop(ingress);
    let mut replies = BTreeMap::new();
    let mut cancelled = Vec::new();
    let mut added = Vec::new();
    let mut status = 0;
    while let Some((shard, batch)) = egress.recv() {
        for e in batch.iter() {
            match fan.offer(&e.kind) {
                Offered::Held => continue,
                Offered::Folded(reply) => {
                    replies.insert(reply.outcome_corr().unwrap(), reply);
                    continue;
                }
                Offered::Pass => {}
            }
            match &e.kind {
                k if k.outcome_corr().is_some() => {
                    replies.insert(k.outcome_corr().unwrap(), k.clone());
                }
                EventKind::OrderDone {
                    instrument, reason, ..
                } => {
                    assert_eq!(*reason, DoneReason::AccountDisabled);
                    assert_eq!(Shard::of_instrument(3, *instrument), shard);
                    cancelled.push(*instrument);
                }
                EventKind::InstrumentAdded { instrument, .. } => {
                    assert_eq!(Shard::of_instrument(3, *instrument), shard);
                    added.push(*instrument);
                }
                EventKind::AccountStatus { .. } => {
                    assert_eq!(shard, 0);
                    status += 1;
                }
                _ => {}
            }
        }
    }
    pipeline.join();
    assert_eq!(fan.pending(), 0);
    assert_eq!(replies.len(), 7, "one reply per command: {replies:?}");
    assert!(matches!(
        replies[&7],
        EventKind::Accepted {
            command: CommandTag::DisableAccount,
            ..
        }
    ));
    for k in 1..=3 {
        assert!(matches!(
            replies[&k],
            EventKind::Accepted { command: CommandTag::AddInstrument, instrument: Some(i), .. } if i == k as u32 - 1
        ));
    }
    cancelled.sort_unstable();
    added.sort_unstable();
    assert_eq!(cancelled, [0, 1, 2]);
    assert_eq!(added, [0, 1, 2]);
    assert_eq!(status, 1, "one AccountStatus");
}

#[test]
fn account_wide_limits_are_split_so_the_shards_never_exceed_them() {
    let mut set = ShardSet::new(
        &EngineConfig {
            order_capacity: 1024,
            ..EngineConfig::default()
        },
        2,
    );
    let mut corr = 0;
    let mut apply = |set: &mut ShardSet, kind| {
        corr += 1;
        set.apply(&Command::new(corr, corr, kind)).reply
    };
    for k in 0..2 {
        apply(
            &mut set,
            CommandKind::AddInstrument(Box::new(instrument_spec(k))),
        );
    }
    let limits = Limits {
        max_open_orders: Some(3),
        ..Limits::default()
    };
    apply(
        &mut set,
        CommandKind::SetLimits {
            account: 7,
            limits: Some(Box::new(limits)),
        },
    );
    let mut accepted = 0;
    for n in 0..10 {
        let place = Place::limit(7, n % 2, Side::Buy, CENTRE - 1, 10);
        match apply(&mut set, CommandKind::Place(place)) {
            Some(EventKind::PlaceAccepted { .. }) => accepted += 1,
            Some(EventKind::Rejected { reason, .. }) => {
                assert_eq!(reason, RejectReason::MaxOpenOrders)
            }
            other => panic!("{other:?}"),
        }
    }
    // Shard 0 takes 2 of the 3, shard 1 one: never more than the limit.
    assert_eq!(accepted, 3);
    assert_eq!(set.engines[0].open_orders(7), 2);
    assert_eq!(set.engines[1].open_orders(7), 1);
}

#[test]
fn a_shard_restored_from_its_snapshot_goes_on_as_the_original() {
    let scenario = long_stream(3_000);
    let mut runs = Runs::new(&scenario.config, &[4]);
    runs.run(&scenario).unwrap();
    let commands = &runs.commands[0];
    let (before, after) = commands.split_at(commands.len() / 2);
    let mut originals = ShardSet::new(&scenario.config, 4);
    for command in before {
        originals.apply(command);
    }
    let mut restored: Vec<Engine> = originals
        .engines
        .iter()
        .map(|e| Engine::restore(e.config().clone(), &e.snapshot()).unwrap())
        .collect();
    let mut live = 0;
    for command in after {
        match route(4, &command.kind) {
            Route::One(shard) => {
                let a = originals.engines[shard].apply_collect(command);
                let b = restored[shard].apply_collect(command);
                assert_eq!(bytes(&a), bytes(&b), "shard {shard} after {command:?}");
            }
            Route::All => {
                for (original, copy) in originals.engines.iter_mut().zip(&mut restored) {
                    let a = original.apply_collect(command);
                    assert_eq!(bytes(&a), bytes(&copy.apply_collect(command)));
                }
            }
        }
        live += restored
            .iter()
            .map(|e| e.live_orders().count())
            .sum::<usize>();
    }
    assert!(live > 0, "the restored shards held orders");
    // A copy restored now goes on into the very state of its original, down to the
    // generations of the slots its restored orders leave free (which a later snapshot keeps):
    // cancel every live order on both.
    let tagged: usize = originals.engines[1..]
        .iter()
        .map(|e| e.live_orders().count())
        .sum();
    assert!(tagged > 0, "shards whose ids carry a tag hold orders");
    for (k, original) in originals.engines.iter_mut().enumerate() {
        let mut copy = Engine::restore(original.config().clone(), &original.snapshot()).unwrap();
        let live: Vec<OrderView> = original.live_orders().collect();
        for (i, o) in live.iter().enumerate() {
            let cancel = Command::new(
                1,
                1_000_000 + i as u64,
                CommandKind::Cancel(Cancel {
                    account: o.account,
                    order: OrderRef::Id(o.id),
                }),
            );
            assert_eq!(
                bytes(&original.apply_collect(&cancel)),
                bytes(&copy.apply_collect(&cancel))
            );
        }
        assert!(original.snapshot() == copy.snapshot(), "shard {k}");
    }
}

#[test]
fn a_snapshot_restores_only_into_its_own_shard() {
    let mut set = ShardSet::new(
        &EngineConfig {
            order_capacity: 64,
            ..EngineConfig::default()
        },
        2,
    );
    for (corr, kind) in [
        CommandKind::AddInstrument(Box::new(instrument_spec(0))),
        CommandKind::AddInstrument(Box::new(instrument_spec(1))),
        CommandKind::Place(Place::limit(7, 1, Side::Buy, CENTRE, 10)),
    ]
    .into_iter()
    .enumerate()
    {
        set.apply(&Command::new(1, corr as u64 + 1, kind));
    }
    let theirs = set.engines[1].snapshot();
    let as_shard = |index| EngineConfig {
        shard: Shard::new(index, 2).unwrap(),
        ..set.engines[1].config().clone()
    };
    assert!(Engine::restore(as_shard(1), &theirs).is_ok());
    let refused = Engine::restore(as_shard(0), &theirs)
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(
            refused,
            RestoreError::WrongShard {
                instrument: 1,
                shard: 0,
                count: 2,
                ..
            }
        ),
        "{refused}"
    );
}

#[test]
fn the_merged_egress_waits_times_out_and_ends_with_its_shards() {
    use std::time::{Duration, Instant};
    use ticker_engine::pipeline::RecvTimeoutError;
    let config = PipelineConfig {
        engine: EngineConfig {
            order_capacity: 64,
            ..EngineConfig::default()
        },
        ..PipelineConfig::default()
    };
    let (pipeline, ingress, mut egress) = ShardedPipeline::spawn(config, 2).unwrap();
    assert_eq!(
        (pipeline.count(), ingress.count(), egress.count()),
        (2, 2, 2)
    );
    assert!(matches!(egress.try_recv(), Ok(None)));
    let soon = Instant::now() + Duration::from_millis(20);
    assert!(matches!(
        egress.recv_deadline(soon),
        Err(RecvTimeoutError::Timeout)
    ));
    // A consumer waiting (spinning, then parked) gets the batch of whichever shard publishes.
    let producer = std::thread::spawn(move || {
        ingress
            .submit(Command::new(1, 1, CommandKind::Halt { instrument: 1 }))
            .unwrap();
        ingress
    });
    let (shard, batch) = egress.recv().unwrap();
    assert_eq!(shard, 1, "instrument 1 lives on shard 1");
    assert!(matches!(batch[0].kind, EventKind::Rejected { corr: 1, .. }));
    drop(batch);
    let ingress = producer.join().unwrap();
    pipeline.shutdown();
    assert!(egress.recv().is_none(), "every shard stopped");
    let refused = ingress.submit(Command::new(2, 2, CommandKind::Heartbeat));
    assert!(matches!(refused, Err(SubmitError::Closed(_))));
    assert_eq!(pipeline.join().len(), 2);
}
