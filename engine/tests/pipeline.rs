//! The engine thread behind its rings must behave exactly like `Engine::apply` called in a
//! loop: same events, no gap, no duplicate, whatever the batching, the ring sizes, the number
//! of producers or the back-pressure.

use rust_decimal::Decimal;
use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};
use ticker_engine::pipeline::RecvTimeoutError;
use ticker_engine::ring::{ArrayQueueRing, MpscQueue, MpscRing, WaitStrategy};
use ticker_engine::*;

/// Reference price of every test instrument, in ticks of 0.01.
const MID: Ticks = 5_000_000;
/// How long any single wait in these tests may take before it counts as a hang.
const DEADLINE: Duration = Duration::from_secs(20);

fn engine_config() -> EngineConfig {
    EngineConfig {
        order_capacity: 1 << 16,
        max_instruments: 8,
        ladder_ticks: 4096,
        index_capacity: 1024,
        ..EngineConfig::default()
    }
}

/// Never busy-spins: these tests run more threads than a two-core machine has cores.
fn test_wait() -> WaitStrategy {
    WaitStrategy::Park {
        spins: 50,
        yields: 10,
        timeout: Duration::from_micros(200),
    }
}

fn config(ingress: usize, egress: usize, max_batch: usize) -> PipelineConfig {
    PipelineConfig {
        ingress_capacity: ingress,
        egress_capacity: egress,
        max_batch,
        wait: test_wait(),
        engine: engine_config(),
        clock: Clock::Caller,
    }
}

fn spec(symbol: &str) -> InstrumentSpec {
    InstrumentSpec {
        symbol: symbol.into(),
        tick_size: Decimal::new(1, 2),
        lot_size: Decimal::new(1, 4),
        min_size: Decimal::new(1, 4),
        max_size: Decimal::new(100, 0),
        reference_price: Decimal::new(50_000, 0),
        band: Decimal::new(1, 1),
    }
}

fn add_instrument(symbol: &str, corr: Correlation) -> Command {
    Command {
        deadline: 0,
        ts: 1,
        corr,
        kind: CommandKind::AddInstrument(Box::new(spec(symbol))),
    }
}

/// xorshift64*: deterministic "random-ish" order flow without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// `count` commands of one group of accounts on one instrument: limit orders around the mid
/// (some post-only or IOC), cancels by client order id, market orders and invalid orders.
/// Correlation ids are `corr_base + i`, client order ids equal the place's correlation id.
fn order_flow(
    seed: u64,
    instrument: InstrumentId,
    accounts: &[AccountId],
    corr_base: Correlation,
    count: usize,
) -> Vec<Command> {
    let mut rng = Rng(seed | 1);
    let mut placed: Vec<(AccountId, ClientOrderId)> = Vec::new();
    (0..count)
        .map(|i| {
            let corr = corr_base + i as u64;
            let account = accounts[rng.below(accounts.len() as u64) as usize];
            let side = if rng.below(2) == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            let size = (1 + rng.below(20)) * 100;
            let kind = match rng.below(100) {
                0..=54 => {
                    let offset = rng.below(41) as Ticks - 20;
                    let mut place = Place::limit(account, instrument, side, MID + offset, size);
                    place.client_id = corr;
                    match rng.below(10) {
                        0 => place.post_only = true,
                        1 => place.tif = TimeInForce::Ioc,
                        _ => {}
                    }
                    placed.push((account, corr));
                    CommandKind::Place(place)
                }
                55..=79 if !placed.is_empty() => {
                    let (owner, client_id) = placed[rng.below(placed.len() as u64) as usize];
                    CommandKind::Cancel(Cancel {
                        account: owner,
                        order: OrderRef::Client(client_id),
                    })
                }
                80..=94 => CommandKind::Place(Place::market(account, instrument, side, size)),
                _ => CommandKind::Place(Place::limit(account, instrument, side, MID, 0)),
            };
            Command {
                deadline: 0,
                ts: 1_000 + i as u64,
                corr,
                kind,
            }
        })
        .collect()
}

fn reference_events(commands: &[Command]) -> (Vec<Event>, Engine) {
    let mut engine = Engine::new(engine_config());
    let mut events = Vec::new();
    for command in commands {
        engine.apply(command, &mut events);
    }
    (events, engine)
}

/// Receives every batch until the engine thread stops, failing instead of hanging.
fn receive_all(egress: &mut Egress) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        match egress.recv_deadline(Instant::now() + DEADLINE) {
            Ok(batch) => events.extend_from_slice(&batch),
            Err(RecvTimeoutError::Closed) => return events,
            Err(RecvTimeoutError::Timeout) => panic!("no batch for {DEADLINE:?}"),
        }
    }
}

fn single_producer_run<Q: MpscQueue<Command>>(
    commands: &[Command],
    config: PipelineConfig,
) -> (Vec<Event>, Engine) {
    let engine = Engine::new(config.engine.clone());
    let (pipeline, ingress, mut egress) = Pipeline::spawn_on::<Q>(engine, config).unwrap();
    let to_submit = commands.to_vec();
    let producer = thread::spawn(move || {
        for command in to_submit {
            ingress.submit(command).unwrap();
        }
        // Dropping the only ingress handle here is what stops the engine thread.
    });
    let events = receive_all(&mut egress);
    producer.join().unwrap();
    (events, pipeline.join())
}

fn assert_same_final_state(engine: &Engine, reference: &Engine) {
    assert_eq!(engine.last_seq(), reference.last_seq());
    assert_eq!(engine.live_order_count(), reference.live_order_count());
    for (book, expected) in engine.books().iter().zip(reference.books()) {
        assert_eq!(book.best_bid(), expected.best_bid());
        assert_eq!(book.best_ask(), expected.best_ask());
    }
}

fn assert_gap_free(events: &[Event]) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1, "sequence broken at index {i}");
    }
}

fn single_producer_commands() -> Vec<Command> {
    let mut commands = vec![add_instrument("BTC-USD", 1)];
    commands.extend(order_flow(42, 0, &[1, 2, 3, 4, 5], 100, 4_000));
    commands
}

#[test]
fn single_producer_pipeline_emits_exactly_the_events_of_engine_apply() {
    let commands = single_producer_commands();
    let (expected, reference) = reference_events(&commands);
    assert!(expected
        .iter()
        .any(|e| matches!(e.kind, EventKind::Trade { .. })));
    // Default-sized rings, then rings and batches small enough that both ends fill up often.
    for config in [
        PipelineConfig {
            engine: engine_config(),
            wait: test_wait(),
            ..PipelineConfig::default()
        },
        config(8, 2, 3),
        config(2, 1, 1),
    ] {
        let (events, engine) = single_producer_run::<MpscRing>(&commands, config.clone());
        assert!(events == expected, "events differ with {config:?}");
        assert_same_final_state(&engine, &reference);
    }
}

#[test]
fn pipeline_on_array_queue_emits_exactly_the_events_of_engine_apply() {
    let commands = single_producer_commands();
    let (expected, reference) = reference_events(&commands);
    let (events, engine) = single_producer_run::<ArrayQueueRing>(&commands, config(8, 2, 3));
    assert!(events == expected);
    assert_same_final_state(&engine, &reference);
}

/// An outcome event's correlation id and what it says, ignoring engine-assigned ids.
fn outcome(event: &Event) -> Option<(Correlation, String)> {
    match &event.kind {
        EventKind::PlaceAccepted { corr, .. } => Some((*corr, "place_accepted".into())),
        EventKind::Accepted { corr, command, .. } => Some((*corr, format!("accepted {command:?}"))),
        EventKind::Rejected {
            corr,
            command,
            reason,
            ..
        } => Some((*corr, format!("rejected {command:?} {reason}"))),
        _ => None,
    }
}

/// Trades on one instrument, without the engine-assigned ids.
fn trades(events: &[Event], on: InstrumentId) -> Vec<(Ticks, Lots, Side, AccountId, AccountId)> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Trade {
                instrument,
                price,
                size,
                aggressor,
                taker_account,
                maker_account,
                ..
            } if instrument == on => Some((price, size, aggressor, taker_account, maker_account)),
            _ => None,
        })
        .collect()
}

/// Three producers, each trading its own instrument with its own accounts, submit at once.
/// The interleaving is up to the scheduler, but: every command gets exactly one outcome, in
/// each producer's submission order; replaying the commands in the order the engine applied
/// them gives exactly the same events; and each producer's outcomes and trades are those it
/// gets running alone.
#[test]
fn three_producers_each_get_the_outcomes_they_get_alone() {
    const PRODUCERS: u64 = 3;
    let setup: Vec<Command> = (0..PRODUCERS)
        .map(|p| add_instrument(&format!("INS-{p}"), p + 1))
        .collect();
    let flows: Vec<Vec<Command>> = (0..PRODUCERS)
        .map(|p| {
            let accounts: Vec<AccountId> = (1..=4).map(|a| 100 * (p + 1) + a).collect();
            order_flow(7 + p, p as InstrumentId, &accounts, (p + 1) << 32, 2_000)
        })
        .collect();

    let (pipeline, ingress, mut egress) = Pipeline::spawn(config(64, 8, 16)).unwrap();
    for command in &setup {
        ingress.submit(command.clone()).unwrap();
    }
    let producers: Vec<_> = flows
        .iter()
        .map(|flow| {
            let (ingress, flow) = (ingress.clone(), flow.clone());
            thread::spawn(move || {
                for command in flow {
                    ingress.submit(command).unwrap();
                }
            })
        })
        .collect();
    drop(ingress);
    let events = receive_all(&mut egress);
    for producer in producers {
        producer.join().unwrap();
    }
    let engine = pipeline.join();
    assert_gap_free(&events);
    assert_eq!(engine.last_seq(), events.len() as u64);

    // One outcome per command, each producer's in its submission order.
    let applied: Vec<Correlation> = events.iter().filter_map(outcome).map(|(c, _)| c).collect();
    let total = setup.len() + flows.iter().map(Vec::len).sum::<usize>();
    assert_eq!(applied.len(), total);
    for (p, flow) in flows.iter().enumerate() {
        let mine: Vec<Correlation> = applied
            .iter()
            .copied()
            .filter(|c| c >> 32 == p as u64 + 1)
            .collect();
        let submitted: Vec<Correlation> = flow.iter().map(|c| c.corr).collect();
        assert_eq!(mine, submitted, "producer {p}");
    }

    // The engine's interleaving, replayed single-threaded, gives the very same events.
    let by_corr: HashMap<Correlation, &Command> = setup
        .iter()
        .chain(flows.iter().flatten())
        .map(|c| (c.corr, c))
        .collect();
    let replay: Vec<Command> = applied.iter().map(|c| by_corr[c].clone()).collect();
    let (expected, reference) = reference_events(&replay);
    assert!(events == expected, "replay of the applied order differs");
    assert_same_final_state(&engine, &reference);

    // Producers share nothing, so each one's outcomes match its solo run.
    for (p, flow) in flows.iter().enumerate() {
        let solo: Vec<Command> = setup.iter().chain(flow).cloned().collect();
        let (solo_events, _) = reference_events(&solo);
        let mine = |events: &[Event]| -> Vec<(Correlation, String)> {
            events
                .iter()
                .filter_map(outcome)
                .filter(|(c, _)| c >> 32 == p as u64 + 1)
                .collect()
        };
        assert_eq!(mine(&events), mine(&solo_events), "producer {p} outcomes");
        let on = p as InstrumentId;
        assert_eq!(
            trades(&events, on),
            trades(&solo_events, on),
            "producer {p} trades"
        );
    }
}

/// A command the engine rejects with exactly one event, whatever the book holds.
fn reject(corr: Correlation) -> Command {
    Command {
        deadline: 0,
        ts: corr,
        corr,
        kind: CommandKind::Cancel(Cancel {
            account: 1,
            order: OrderRef::Client(corr),
        }),
    }
}

#[test]
fn try_submit_on_a_full_ingress_hands_the_command_back() {
    // Nobody reads: the engine fills the egress, waits, and the ingress fills behind it.
    let (pipeline, ingress, mut egress) = Pipeline::spawn(config(4, 2, 1)).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut accepted = 0;
    let refused = loop {
        match ingress.try_submit(reject(accepted + 1)) {
            Ok(()) => accepted += 1,
            Err(SubmitError::IngressFull(command)) => break command,
            Err(other) => panic!("unexpected {other}"),
        }
        assert!(Instant::now() < deadline, "the ingress never filled");
        thread::yield_now();
    };
    assert_eq!(refused, reject(accepted + 1));
    // Ingress (4) plus egress (2 batches of one command) plus the batch the engine holds.
    assert!((4..=4 + 2 + 1).contains(&accepted), "accepted {accepted}");

    drop(ingress);
    let events = receive_all(&mut egress);
    assert_gap_free(&events);
    let corrs: Vec<Correlation> = events.iter().filter_map(outcome).map(|(c, _)| c).collect();
    assert_eq!(corrs, (1..=accepted).collect::<Vec<_>>());
    assert_eq!(pipeline.join().last_seq(), accepted);
}

/// The consumer stops reading mid-stream until the engine thread has waited on the full
/// egress, then resumes: the events are still exactly those of `Engine::apply`.
#[test]
fn a_consumer_that_stops_reading_makes_the_engine_wait_and_loses_no_event() {
    let commands = single_producer_commands();
    let (expected, _) = reference_events(&commands);
    let (pipeline, ingress, mut egress) = Pipeline::spawn(config(64, 4, 8)).unwrap();
    let producer = {
        let commands = commands.clone();
        thread::spawn(move || {
            for command in commands {
                ingress.submit(command).unwrap();
            }
        })
    };
    let mut events = Vec::new();
    for _ in 0..10 {
        events.extend_from_slice(&egress.recv().unwrap());
    }
    // Paused: 4 batches of at most 8 commands cannot hold the rest of the 4,000 commands, so
    // the engine thread must fill the egress and wait. (Not "until the stall count moves":
    // the engine may have found the egress full before the count was first read, and it
    // counts each batch it waits for once.)
    let ring = |name| {
        let rings = pipeline.rings();
        *rings.iter().find(|r| r.ring == name).unwrap()
    };
    let deadline = Instant::now() + DEADLINE;
    while ring(pipeline::EGRESS_RING).len < 4 || pipeline.egress_stalls() == 0 {
        assert!(
            Instant::now() < deadline,
            "the engine never waited on the egress: {:?}",
            pipeline.rings()
        );
        thread::yield_now();
    }
    assert_eq!(ring(pipeline::EGRESS_RING).capacity, 4);
    assert_eq!(ring(pipeline::INGRESS_RING).capacity, 64);
    assert!(ring(pipeline::INGRESS_RING).len <= 64);
    events.extend(receive_all(&mut egress));
    producer.join().unwrap();
    let drained = pipeline.rings();
    assert!(
        drained
            .iter()
            .filter(|r| r.ring != pipeline::BATCH_RETURN_RING)
            .all(|r| r.len == 0),
        "{drained:?}"
    );
    let engine = pipeline.join();
    assert_gap_free(&events);
    assert!(
        events == expected,
        "the resumed stream differs from Engine::apply"
    );
    assert_eq!(engine.last_seq(), expected.len() as u64);
}

/// Shutdown races a producer: every command accepted before the refusals start is applied,
/// none after, and `join` hands back the engine that applied them.
#[test]
fn shutdown_applies_every_accepted_command_and_refuses_the_rest() {
    let (pipeline, ingress, mut egress) = Pipeline::spawn(config(32, 4, 8)).unwrap();
    let producer = {
        let ingress = ingress.clone();
        thread::spawn(move || {
            let mut accepted = 0;
            loop {
                match ingress.submit(reject(accepted + 1)) {
                    Ok(()) => accepted += 1,
                    Err(SubmitError::Closed(command)) => {
                        assert_eq!(command, reject(accepted + 1));
                        return accepted;
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
            }
        })
    };
    let mut events = Vec::new();
    for _ in 0..20 {
        events.extend_from_slice(&egress.recv().unwrap());
    }
    pipeline.shutdown();
    events.extend(receive_all(&mut egress));
    let accepted = producer.join().unwrap();
    let engine = pipeline.join();
    assert_gap_free(&events);
    let corrs: Vec<Correlation> = events.iter().filter_map(outcome).map(|(c, _)| c).collect();
    assert_eq!(corrs, (1..=accepted).collect::<Vec<_>>());
    assert_eq!(engine.last_seq(), accepted);
    // Still holding an ingress handle does not keep a shut-down engine alive.
    assert_eq!(
        ingress.try_submit(reject(0)),
        Err(SubmitError::Closed(reject(0)))
    );
}

#[test]
fn dropping_the_egress_stops_the_engine_and_refuses_further_commands() {
    let (pipeline, ingress, egress) = Pipeline::spawn(config(8, 2, 4)).unwrap();
    ingress.submit(reject(1)).unwrap();
    drop(egress);
    let deadline = Instant::now() + DEADLINE;
    let mut corr = 2;
    loop {
        match ingress.try_submit(reject(corr)) {
            Err(SubmitError::Closed(_)) => break,
            Ok(()) | Err(SubmitError::IngressFull(_)) => corr += 1,
        }
        assert!(Instant::now() < deadline, "the engine kept running");
        thread::yield_now();
    }
    let engine = pipeline.join();
    assert!(engine.last_seq() >= 1);
}

#[test]
fn heartbeats_alone_publish_no_empty_batch() {
    let (pipeline, ingress, mut egress) = Pipeline::spawn(config(16, 2, 4)).unwrap();
    for ts in 1..=100 {
        ingress
            .submit(Command {
                deadline: 0,
                ts,
                corr: ts,
                kind: CommandKind::Heartbeat,
            })
            .unwrap();
    }
    ingress.submit(reject(101)).unwrap();
    drop(ingress);
    let batch = egress.recv().unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].seq, 1);
    drop(batch);
    assert!(egress.recv().is_none());
    assert_eq!(pipeline.join().last_seq(), 1);
}

#[test]
fn a_wall_clock_pipeline_stamps_commands_when_the_engine_takes_them() {
    let config = PipelineConfig {
        clock: ticker_engine::Clock::Wall,
        ..PipelineConfig::default()
    };
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let (pipeline, ingress, mut egress) = Pipeline::spawn(config).unwrap();
    // A deadline in the past (relative to the wall clock) is judged at the engine.
    ingress
        .submit(Command {
            ts: 1,
            corr: 1,
            deadline: 2,
            kind: CommandKind::Halt { instrument: 0 },
        })
        .unwrap();
    drop(ingress);
    let batch = egress.recv().unwrap();
    assert!(batch[0].ts >= before, "stamped with the wall clock");
    assert!(matches!(
        batch[0].kind,
        EventKind::Rejected {
            reason: RejectReason::DeadlineExceeded,
            ..
        }
    ));
    drop(batch);
    pipeline.join();
}

#[test]
fn a_wall_clock_pipeline_keeps_stamps_while_backfilling_then_goes_forward() {
    let config = PipelineConfig {
        clock: ticker_engine::Clock::Wall,
        ..PipelineConfig::default()
    };
    let (pipeline, ingress, mut egress) = Pipeline::spawn(config).unwrap();
    let halt = |ts| Command {
        ts,
        corr: ts,
        deadline: 0,
        kind: CommandKind::Halt { instrument: 0 },
    };
    let mut next_ts = || loop {
        if let Some(event) = egress.recv().unwrap().first() {
            return event.ts;
        }
    };
    ingress.set_backfill(true);
    ingress.submit(halt(1_000)).unwrap();
    assert_eq!(next_ts(), 1_000, "a simulated past keeps its stamps");
    ingress.submit(halt(2_000)).unwrap();
    assert_eq!(next_ts(), 2_000);
    ingress.set_backfill(false);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    ingress.submit(halt(3_000)).unwrap();
    assert!(next_ts() >= before, "then the wall clock stamps again");
    drop(ingress);
    drop(egress);
    pipeline.join();
}
