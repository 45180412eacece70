//! Snapshots and restore, as specifications: an engine restored from a snapshot (through
//! postcard, as the journal stores it) goes on exactly as the original does, byte for byte, and
//! a snapshot that does not describe a state the engine can be in is refused with the
//! inconsistency named, never with a panic.
//!
//! - The property test cuts random command streams of every kind (`streams`) at a random
//!   command, restores a copy with another memory layout, applies the rest of the stream to
//!   both and compares their encoded events; `snapshot(restore(s)) == s` throughout.
//! - The named tests pin each thing a snapshot must keep (order ids, queue priority, stop
//!   order, expiries, list order) on a book small enough to check by hand.
//! - Corrupt snapshots are edited by hand, and fuzzed as bytes.

mod instrument;
mod streams;

use instrument::spec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use streams::*;
use ticker_engine::snapshot::*;
use ticker_engine::*;

const BUY: Side = Side::Buy;
const SELL: Side = Side::Sell;

// ---------------------------------------------------------------------------------------------
// Random streams cut by a snapshot
// ---------------------------------------------------------------------------------------------

/// Turns generated steps into commands for one engine, resolving the orders that cancels and
/// amends name against that engine's live orders.
struct Driver {
    ts: Timestamp,
    corr: Correlation,
    /// Every order ever accepted, with its owner.
    accepted: Vec<(OrderId, AccountId)>,
}

impl Driver {
    fn new() -> Self {
        Driver {
            ts: 1_000,
            corr: 0,
            accepted: Vec::new(),
        }
    }

    /// The order a cancel or amend names, and the account that sends the command.
    fn resolve(&self, engine: &Engine, c: &OrderCommand) -> (OrderRef, AccountId) {
        let named = |id: OrderId, owner: AccountId| {
            let account = if c.foreign { c.account } else { owner };
            (OrderRef::Id(id), account)
        };
        match &c.target {
            Target::Live(ix) => {
                let live: Vec<OrderView> = engine.live_orders().collect();
                if live.is_empty() {
                    return (OrderRef::Id(NO_SUCH_ORDER), c.account);
                }
                let o = live[ix.index(live.len())];
                named(o.id, o.account)
            }
            Target::Any(ix) if !self.accepted.is_empty() => {
                let (id, owner) = self.accepted[ix.index(self.accepted.len())];
                named(id, owner)
            }
            Target::Client(cid) => (OrderRef::Client(*cid), c.account),
            Target::Any(_) | Target::Unknown => (OrderRef::Id(NO_SUCH_ORDER), c.account),
        }
    }

    fn command(&mut self, engine: &Engine, step: &Step) -> Command {
        self.ts += step.dt;
        self.corr += 1;
        let kind = match &step.action {
            Action::Place(p, expiry_in) => {
                let mut p = *p;
                p.expiry = (self.ts as i64 + expiry_in).max(0) as u64;
                CommandKind::Place(p)
            }
            Action::Cancel(c) => {
                let (order, account) = self.resolve(engine, c);
                CommandKind::Cancel(Cancel { account, order })
            }
            Action::Amend {
                order,
                price,
                size,
                trigger,
                fit,
            } => {
                let (order, account) = self.resolve(engine, order);
                let (mut price, mut size, mut trigger) = (*price, *size, *trigger);
                let named = match order {
                    OrderRef::Id(id) => engine.order(id),
                    OrderRef::Client(_) => None,
                };
                if let (true, Some(o)) = (fit, named) {
                    if !o.order_type.has_limit_price() {
                        price = None;
                    }
                    if !o.armed_stop {
                        trigger = None;
                    }
                    if (price, size, trigger) == (None, None, None) {
                        size = Some(o.remaining + 1);
                    }
                }
                CommandKind::Amend(Amend {
                    account,
                    order,
                    price,
                    size,
                    trigger,
                })
            }
            Action::MassCancel(m) => CommandKind::MassCancel(*m),
            Action::SessionClosed(session) => CommandKind::SessionClosed { session: *session },
            Action::Halt(instrument) => CommandKind::Halt {
                instrument: *instrument,
            },
            Action::Resume(instrument) => CommandKind::Resume {
                instrument: *instrument,
            },
            Action::AddInstrument(spec) => CommandKind::AddInstrument(Box::new(spec.clone())),
            Action::Heartbeat => CommandKind::Heartbeat,
            Action::SetLimits(account, limits) => CommandKind::SetLimits {
                account: *account,
                limits: limits.clone().map(Box::new),
            },
            Action::DisableAccount(account) => CommandKind::DisableAccount { account: *account },
            Action::EnableAccount(account) => CommandKind::EnableAccount { account: *account },
        };
        // Every 23rd command arrives after its deadline, every 5th well within one.
        let deadline = match self.corr {
            c if c % 23 == 0 => self.ts - 1,
            c if c % 5 == 0 => self.ts + 1_000,
            _ => 0,
        };
        Command {
            ts: self.ts,
            corr: self.corr,
            deadline,
            kind,
        }
    }

    fn apply(&mut self, engine: &mut Engine, step: &Step) -> (Command, Vec<Event>) {
        let cmd = self.command(engine, step);
        let events = engine.apply_collect(&cmd);
        self.observe(&events);
        (cmd, events)
    }

    fn observe(&mut self, events: &[Event]) {
        for e in events {
            if let EventKind::PlaceAccepted { order, .. } = &e.kind {
                self.accepted.push((order.order_id, order.account));
            }
        }
    }
}

/// Layout settings of the restored engine, free to differ from the original's.
#[derive(Clone, Debug)]
struct Layout {
    ladder_ticks: usize,
    index_capacity: usize,
    prefault: bool,
}

impl Layout {
    /// The original's limits (they decide rejects) with this layout.
    fn config(&self, original: &EngineConfig) -> EngineConfig {
        EngineConfig {
            ladder_ticks: self.ladder_ticks,
            index_capacity: self.index_capacity,
            prefault: self.prefault,
            ..original.clone()
        }
    }
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        prop_oneof![Just(1usize << 18), Just(3usize), Just(16usize)],
        prop_oneof![Just(1usize), Just(16), Just(1024)],
        any::<bool>(),
    )
        .prop_map(|(ladder_ticks, index_capacity, prefault)| Layout {
            ladder_ticks,
            index_capacity,
            prefault,
        })
}

/// Small pools more often than not, so places are rejected for capacity and slots recycle.
fn cut_scenario() -> impl Strategy<Value = Scenario> {
    scenario_with(prop_oneof![1 => Just(4096usize), 2 => 3usize..=16])
}

fn encoded(events: &[Event]) -> Vec<u8> {
    postcard::to_allocvec(events).expect("events encode")
}

/// What one cut held and what came after it, for the coverage test.
struct Cut {
    snapshot: EngineSnapshot,
    tail: Vec<Event>,
}

/// Runs `scenario` up to step `cut`, snapshots the engine there (after a `Snapshot` command,
/// as the pipeline does), restores a copy with `layout` from the postcard bytes, and runs the
/// rest of the scenario on both, requiring byte-identical events.
fn run_cut(scenario: &Scenario, cut: Index, layout: &Layout) -> Result<Cut, TestCaseError> {
    let setup = (0..scenario.instruments).map(|k| Step {
        dt: 0,
        action: Action::AddInstrument(instrument_spec(k)),
    });
    let steps: Vec<Step> = setup.chain(scenario.steps.iter().cloned()).collect();
    let cut = scenario.instruments + cut.index(scenario.steps.len() + 1);
    let mut original = Engine::new(scenario.config.clone());
    let mut driver = Driver::new();
    for step in &steps[..cut] {
        driver.apply(&mut original, step);
    }
    let cut_step = Step {
        dt: 1,
        action: Action::Heartbeat,
    };
    let mut cmd = driver.command(&original, &cut_step);
    cmd.kind = CommandKind::Snapshot;
    let mut tail = original.apply_collect(&cmd);

    let snapshot = original.snapshot();
    let bytes = postcard::to_allocvec(&snapshot).expect("snapshot encodes");
    let decoded: EngineSnapshot = postcard::from_bytes(&bytes).expect("snapshot decodes");
    prop_assert_eq!(&decoded, &snapshot);
    let mut restored = Engine::restore(layout.config(&scenario.config), &decoded)
        .map_err(|e| TestCaseError::fail(format!("restore refused its own snapshot: {e}")))?;
    prop_assert_eq!(&restored.snapshot(), &snapshot, "snapshot(restore(s)) == s");
    prop_assert_eq!(
        restored.live_orders().collect::<Vec<_>>(),
        original.live_orders().collect::<Vec<_>>()
    );
    prop_assert_eq!(
        restored.sessions().collect::<Vec<_>>(),
        original.sessions().collect::<Vec<_>>()
    );

    for (n, step) in steps[cut..].iter().enumerate() {
        let (cmd, expected) = driver.apply(&mut original, step);
        let got = restored.apply_collect(&cmd);
        prop_assert!(
            encoded(&got) == encoded(&expected),
            "command {} after the cut ({:?}) gave different events:\n{:#?}\nvs the original's\n{:#?}",
            n,
            cmd,
            got,
            expected
        );
        tail.extend(expected);
    }
    prop_assert_eq!(restored.snapshot(), original.snapshot());
    Ok(Cut { snapshot, tail })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        max_shrink_iters: 4096,
        // Integration tests have no lib.rs for proptest to file regressions beside; a failure
        // prints its minimal input.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn restored_engine_continues_byte_identically_to_the_original(
        scenario in cut_scenario(),
        cut in any::<Index>(),
        layout in layout(),
    ) {
        run_cut(&scenario, cut, &layout)?;
    }
}

/// The property test is only as good as the states it cuts through: every kind of state a
/// snapshot holds shows up in some cut, and every kind of consequence after some cut.
#[test]
fn cuts_in_the_property_test_hold_every_kind_of_state() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let strategy = (cut_scenario(), any::<Index>(), layout());
    for _ in 0..200 {
        let (scenario, cut, layout) = strategy.new_tree(&mut runner).unwrap().current();
        let Cut { snapshot, tail } = run_cut(&scenario, cut, &layout).unwrap();
        let mut note =
            |what: &'static str, yes: bool| *seen.entry(what).or_default() += yes as usize;
        let live: Vec<&OrderSnapshot> = snapshot
            .books
            .iter()
            .flat_map(|b| {
                let resting = b.bids.iter().chain(&b.asks).flat_map(|l| &l.orders);
                resting.chain(b.buy_stops.iter().chain(&b.sell_stops).map(|s| &s.order))
            })
            .collect();
        let books = &snapshot.books;
        note("freed slots", !snapshot.slots.freed.is_empty());
        note("a full pool", live.len() == scenario.config.order_capacity);
        note(
            "a queue of several orders",
            books
                .iter()
                .any(|b| b.bids.iter().chain(&b.asks).any(|l| l.orders.len() > 1)),
        );
        note("buy stops", books.iter().any(|b| !b.buy_stops.is_empty()));
        note("sell stops", books.iter().any(|b| !b.sell_stops.is_empty()));
        note(
            "icebergs",
            live.iter()
                .any(|o| o.display > 0 && o.visible < o.remaining),
        );
        note(
            "live GTD orders",
            live.iter().any(|o| o.tif == TimeInForce::Gtd),
        );
        note(
            "stale expiry entries",
            snapshot
                .expiries
                .iter()
                .any(|e| !live.iter().any(|o| o.id == e.order_id)),
        );
        note("sessions", !snapshot.sessions.is_empty());
        note("client ids", live.iter().any(|o| o.client_id != 0));
        note("a halted book", books.iter().any(|b| b.halted));
        note("a last price", books.iter().any(|b| b.last_price.is_some()));
        note("several instruments", books.len() > 1);
        let risk = &snapshot.risk;
        note("risk on", risk.active);
        note("default limits", risk.default_limits.is_some());
        note(
            "an account's own limits",
            risk.accounts.iter().any(|a| a.limits.is_some()),
        );
        note(
            "a disabled account",
            risk.accounts.iter().any(|a| a.disabled),
        );
        note(
            "an order-rate window",
            risk.accounts.iter().any(|a| a.window_orders > 0),
        );
        note("a net position", !risk.positions.is_empty());
        let then = |f: fn(&EventKind) -> bool| tail.iter().any(|e| f(&e.kind));
        let done = |reason| {
            tail.iter()
                .any(|e| matches!(e.kind, EventKind::OrderDone { reason: r, .. } if r == reason))
        };
        note(
            "then a trade",
            then(|k| matches!(k, EventKind::Trade { .. })),
        );
        note(
            "then a stop triggered",
            then(|k| matches!(k, EventKind::StopTriggered { .. })),
        );
        note(
            "then an instrument added",
            then(|k| matches!(k, EventKind::InstrumentAdded { .. })),
        );
        note(
            "then capacity exhausted",
            then(|k| {
                matches!(
                    k,
                    EventKind::Rejected {
                        reason: RejectReason::CapacityExhausted,
                        ..
                    }
                )
            }),
        );
        note("then an expiry", done(DoneReason::Expired));
        note("then a kill switch", done(DoneReason::AccountDisabled));
        note(
            "then a limit reject",
            then(|k| {
                matches!(
                    k,
                    EventKind::Rejected {
                        reason: RejectReason::MaxPositionLong
                            | RejectReason::MaxPositionShort
                            | RejectReason::MaxOrderSize
                            | RejectReason::MaxOrderNotional
                            | RejectReason::MaxOpenOrders
                            | RejectReason::MaxOrderRate
                            | RejectReason::AccountDisabled,
                        ..
                    }
                )
            }),
        );
        note("then a mass cancel", done(DoneReason::MassCancelled));
        note("then a session closed", done(DoneReason::SessionClosed));
        note("then a self-trade prevented", done(DoneReason::SelfTrade));
    }
    let missing: Vec<_> = seen
        .iter()
        .filter(|(_, &n)| n == 0)
        .map(|(k, _)| k)
        .collect();
    assert!(
        missing.is_empty(),
        "never reached: {missing:?}\nseen: {seen:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Each thing a snapshot keeps, by hand
// ---------------------------------------------------------------------------------------------

fn config() -> EngineConfig {
    EngineConfig {
        order_capacity: 64,
        max_instruments: 4,
        ..EngineConfig::default()
    }
}

/// An engine and its clock.
struct Venue {
    engine: Engine,
    ts: Timestamp,
}

impl Venue {
    fn new() -> Self {
        let mut v = Venue {
            engine: Engine::new(config()),
            ts: 0,
        };
        v.send(CommandKind::AddInstrument(Box::new(spec("ABC"))));
        v
    }

    fn send(&mut self, kind: CommandKind) -> Vec<Event> {
        self.ts += 1;
        let ts = self.ts;
        self.send_at(ts, kind)
    }

    fn send_at(&mut self, ts: Timestamp, kind: CommandKind) -> Vec<Event> {
        self.ts = ts;
        self.engine.apply_collect(&Command::new(ts, ts, kind))
    }

    fn place(&mut self, p: Place) -> OrderId {
        let events = self.send(CommandKind::Place(p));
        match events[0].kind {
            EventKind::PlaceAccepted { order, .. } => order.order_id,
            ref other => panic!("place {p:?} not accepted: {other:?}"),
        }
    }

    fn limit(&mut self, account: AccountId, side: Side, price: Ticks, size: Lots) -> OrderId {
        self.place(Place::limit(account, 0, side, price, size))
    }

    fn cancel(&mut self, account: AccountId, id: OrderId) {
        let order = OrderRef::Id(id);
        self.send(CommandKind::Cancel(Cancel { account, order }));
    }

    /// A copy restored from this venue's snapshot, through postcard as the journal keeps it.
    fn restored(&self) -> Venue {
        let bytes = postcard::to_allocvec(&self.engine.snapshot()).unwrap();
        let snapshot: EngineSnapshot = postcard::from_bytes(&bytes).unwrap();
        Venue {
            engine: Engine::restore(config(), &snapshot).unwrap(),
            ts: self.ts,
        }
    }
}

/// Sends the same commands to the original and the restored venue and returns the events,
/// after checking they are the same.
fn both(a: &mut Venue, b: &mut Venue, kinds: Vec<CommandKind>) -> Vec<Event> {
    let mut all = Vec::new();
    for kind in kinds {
        let expected = a.send(kind.clone());
        assert_eq!(b.send(kind), expected);
        all.extend(expected);
    }
    all
}

fn done_ids(events: &[Event]) -> Vec<OrderId> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::OrderDone { order_id, .. } => Some(order_id),
            _ => None,
        })
        .collect()
}

fn accepted_ids(events: &[Event]) -> Vec<OrderId> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::PlaceAccepted { order, .. } => Some(order.order_id),
            _ => None,
        })
        .collect()
}

fn place(p: Place) -> CommandKind {
    CommandKind::Place(p)
}

#[test]
fn restored_engine_assigns_the_same_order_ids_as_the_original() {
    let mut v = Venue::new();
    let ids: Vec<OrderId> = (0..5).map(|k| v.limit(1, BUY, 95 + k, 1)).collect();
    v.cancel(1, ids[3]);
    v.cancel(1, ids[1]);
    let mut r = v.restored();
    let next: Vec<_> = (0..4)
        .map(|k| place(Place::limit(2, 0, SELL, 105 + k, 1)))
        .collect();
    let new_ids = accepted_ids(&both(&mut v, &mut r, next));
    // The freed slots come back most recently freed first, with a new generation; then fresh ones.
    let slot = |id: OrderId| id.0 as u32;
    let slots: Vec<u32> = new_ids.iter().map(|&id| slot(id)).collect();
    assert_eq!(slots, vec![slot(ids[1]), slot(ids[3]), 5, 6]);
    assert!(!new_ids.contains(&ids[1]) && !new_ids.contains(&ids[3]));
}

#[test]
fn restored_engine_keeps_each_levels_queue_priority() {
    let mut v = Venue::new();
    let a = v.limit(1, SELL, 101, 2);
    let b = v.limit(2, SELL, 101, 2);
    let c = v.limit(3, SELL, 101, 2);
    // A size decrease keeps a's place; an iceberg behind them shows one lot at a time.
    v.send(CommandKind::Amend(Amend {
        account: 1,
        order: OrderRef::Id(a),
        price: None,
        size: Some(1),
        trigger: None,
    }));
    let d = v.place(Place {
        display: 1,
        ..Place::limit(4, 0, SELL, 101, 3)
    });
    let mut r = v.restored();
    assert_eq!(r.engine.level_orders(0, SELL, 101), vec![a, b, c, d]);
    let events = both(&mut v, &mut r, vec![place(Place::market(9, 0, BUY, 8))]);
    let makers: Vec<OrderId> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Trade { maker_order, .. } => Some(maker_order),
            _ => None,
        })
        .collect();
    // d shows one lot at a time and goes back in the queue after each (here, alone in it).
    assert_eq!(makers, vec![a, b, c, d, d, d]);
}

#[test]
fn restored_engine_triggers_stops_in_the_original_order() {
    let mut v = Venue::new();
    v.limit(1, SELL, 100, 1);
    v.limit(2, BUY, 100, 1); // last price 100
    let stop = |trigger| Place {
        order_type: OrderType::StopMarket,
        tif: TimeInForce::Ioc,
        trigger,
        ..Place::market(3, 0, BUY, 1)
    };
    let first = v.place(stop(103));
    let second = v.place(stop(102));
    let third = v.place(stop(102));
    // Re-armed by a size increase: behind `third`, same trigger.
    v.send(CommandKind::Amend(Amend {
        account: 3,
        order: OrderRef::Id(second),
        price: None,
        size: Some(2),
        trigger: None,
    }));
    for price in [101, 102, 103, 104] {
        v.limit(4, SELL, price, 5);
    }
    let mut r = v.restored();
    // Lifts 101 and 102: the stops at 102 trigger, and their trades at 103 trigger the last.
    let events = both(&mut v, &mut r, vec![place(Place::market(5, 0, BUY, 10))]);
    let triggered: Vec<OrderId> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::StopTriggered { order_id, .. } => Some(order_id),
            _ => None,
        })
        .collect();
    assert_eq!(triggered, vec![third, second, first]);
}

#[test]
fn restored_engine_expires_gtd_orders_when_and_in_the_order_the_original_would() {
    let mut v = Venue::new();
    let gtd = |side, price, expiry| Place {
        tif: TimeInForce::Gtd,
        expiry,
        ..Place::limit(1, 0, side, price, 1)
    };
    let late = v.place(gtd(BUY, 95, 500));
    let early = v.place(gtd(BUY, 96, 400));
    let same_time = v.place(gtd(BUY, 97, 400));
    // Filled before its time: its entry stays in the heap, stale.
    v.place(gtd(SELL, 105, 450));
    v.send(CommandKind::Place(Place::market(2, 0, BUY, 1)));
    let mut r = v.restored();
    let events = both(&mut v, &mut r, vec![CommandKind::Heartbeat]);
    assert!(done_ids(&events).is_empty());
    v.ts = 450;
    r.ts = 450;
    let events = both(&mut v, &mut r, vec![CommandKind::Heartbeat]);
    assert_eq!(done_ids(&events), vec![early, same_time]);
    v.ts = 600;
    r.ts = 600;
    let events = both(&mut v, &mut r, vec![CommandKind::Snapshot]);
    assert_eq!(done_ids(&events), vec![late]);
}

#[test]
fn mass_cancel_and_session_close_after_restore_go_newest_first_as_the_original_would() {
    let tagged = |account, session, price| Place {
        session,
        ..Place::limit(account, 0, BUY, price, 1)
    };
    let setup = || {
        let mut v = Venue::new();
        let ids = [
            v.place(tagged(1, 7, 95)),
            v.place(tagged(2, 7, 96)),
            v.place(tagged(1, 8, 97)),
            v.place(tagged(1, 7, 98)),
        ];
        (v, ids)
    };
    let (mut v, [a, _, c, d]) = setup();
    let mut r = v.restored();
    let mass = MassCancel {
        account: 1,
        instrument: None,
        side: None,
    };
    let events = both(&mut v, &mut r, vec![CommandKind::MassCancel(mass)]);
    assert_eq!(done_ids(&events), vec![d, c, a]);
    let (mut v, [a, b, _, d]) = setup();
    let mut r = v.restored();
    let events = both(
        &mut v,
        &mut r,
        vec![CommandKind::SessionClosed { session: 7 }],
    );
    assert_eq!(done_ids(&events), vec![d, b, a]);
}

#[test]
fn live_orders_and_sessions_tell_a_restarted_server_what_to_clean_up() {
    let mut v = Venue::new();
    let resting = v.place(Place {
        session: 9,
        client_id: 77,
        ..Place::limit(1, 0, BUY, 95, 3)
    });
    v.limit(2, SELL, 100, 1);
    v.limit(3, BUY, 100, 1);
    let stop = v.place(Place {
        session: 4,
        order_type: OrderType::StopLimit,
        trigger: 104,
        ..Place::limit(1, 0, BUY, 105, 2)
    });
    let r = v.restored();
    let live: Vec<OrderView> = r.engine.live_orders().collect();
    assert_eq!(live.len(), r.engine.live_order_count());
    assert_eq!(
        live.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![resting, stop]
    );
    assert_eq!((live[0].client_id, live[0].armed_stop), (77, false));
    assert_eq!((live[1].trigger, live[1].armed_stop), (104, true));
    assert_eq!(r.engine.sessions().collect::<Vec<_>>(), vec![4, 9]);
}

#[test]
fn a_snapshot_begins_with_its_format_so_a_reader_can_check_it_first() {
    let v = Venue::new();
    let bytes = postcard::to_allocvec(&v.engine.snapshot()).unwrap();
    let (format, _) = postcard::take_from_bytes::<u32>(&bytes).unwrap();
    assert_eq!(format, EngineSnapshot::FORMAT);
}

#[test]
fn a_fresh_engine_restores_to_a_fresh_engine() {
    let fresh = Engine::new(config());
    let snapshot = fresh.snapshot();
    assert_eq!(snapshot.slots.high_water, 0);
    let mut restored = Engine::restore(config(), &snapshot).unwrap();
    let mut original = Engine::new(config());
    let add = Command::new(1, 1, CommandKind::AddInstrument(Box::new(spec("ABC"))));
    assert_eq!(restored.apply_collect(&add), original.apply_collect(&add));
}

#[test]
fn restore_into_a_pool_smaller_than_the_slots_used_is_refused() {
    let mut v = Venue::new();
    for k in 0..5 {
        v.limit(1, BUY, 95 + k, 1);
    }
    let small = EngineConfig {
        order_capacity: 4,
        ..config()
    };
    assert_eq!(
        Engine::restore(small, &v.engine.snapshot()).err(),
        Some(RestoreError::CapacityExceeded {
            high_water: 5,
            capacity: 4
        })
    );
}

#[test]
fn restore_with_fewer_instruments_allowed_than_the_snapshot_holds_is_refused() {
    let mut v = Venue::new();
    v.send(CommandKind::AddInstrument(Box::new(spec("DEF"))));
    let one = EngineConfig {
        max_instruments: 1,
        ..config()
    };
    assert_eq!(
        Engine::restore(one, &v.engine.snapshot()).err(),
        Some(RestoreError::TooManyInstruments {
            instruments: 2,
            max: 1
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Corrupt snapshots
// ---------------------------------------------------------------------------------------------

/// A venue whose snapshot has something in every part: two books, a queue of several orders,
/// an iceberg, stops on both sides, sessions, client ids, GTD orders (one stale entry), freed
/// slots and a halted book.
fn busy_venue() -> Venue {
    let mut v = Venue::new();
    v.send(CommandKind::AddInstrument(Box::new(spec("DEF"))));
    // Risk on from the start: generous default limits, account 4's own, account 9 disabled.
    let generous = InstrumentLimits {
        max_order_lots: Some(500),
        max_order_notional: Some(50_000),
        max_long_lots: Some(500),
        max_short_lots: Some(500),
    };
    let limits = |open| Limits {
        max_open_orders: Some(open),
        max_orders_per_sec: Some(1_000),
        instruments: vec![(0, generous), (1, generous)],
    };
    let set = |account, open| CommandKind::SetLimits {
        account,
        limits: Some(Box::new(limits(open))),
    };
    v.send(set(0, 40));
    v.send(set(4, 30));
    v.send(CommandKind::DisableAccount { account: 9 });
    for (k, price) in [98, 99, 99, 99].into_iter().enumerate() {
        let k = k as u64;
        v.place(Place {
            session: k % 3,
            client_id: k,
            ..Place::limit(1 + k % 2, 0, BUY, price, 2 + k)
        });
    }
    v.place(Place {
        display: 2,
        ..Place::limit(2, 0, SELL, 101, 9)
    });
    v.limit(3, SELL, 102, 4);
    let gtd = Place {
        tif: TimeInForce::Gtd,
        expiry: 1_000,
        session: 5,
        ..Place::limit(3, 1, SELL, 100, 4)
    };
    v.place(gtd);
    v.place(gtd);
    v.send(place(Place::market(4, 1, BUY, 4)));
    v.send(place(Place::market(4, 0, BUY, 1))); // last price 101
    for (side, trigger, price) in [(BUY, 103, 104), (SELL, 97, 96)] {
        for _ in 0..2 {
            v.place(Place {
                order_type: OrderType::StopLimit,
                trigger,
                session: 6,
                ..Place::limit(5, 0, side, price, 3)
            });
        }
    }
    let some = v.limit(6, BUY, 90, 1);
    v.cancel(6, some);
    v.send(CommandKind::Halt { instrument: 1 });
    v
}

/// A hand-made inconsistency: what it is, how to make it, and the error it must give.
type Corruption = (
    &'static str,
    fn(&mut EngineSnapshot),
    fn(&RestoreError) -> bool,
);

fn corruptions() -> Vec<Corruption> {
    fn bids(s: &mut EngineSnapshot) -> &mut Vec<LevelSnapshot> {
        &mut s.books[0].bids
    }
    fn queue(s: &mut EngineSnapshot) -> &mut Vec<OrderSnapshot> {
        // The 99 level: three orders.
        &mut s.books[0].bids[0].orders
    }
    vec![
        (
            "a format from another build",
            |s| s.format += 1,
            |e| matches!(e, RestoreError::UnsupportedFormat { .. }),
        ),
        (
            "an order listed twice in a level",
            |s| {
                let o = queue(s)[0].clone();
                queue(s).push(o);
            },
            |e| matches!(e, RestoreError::SlotListedTwice { .. }),
        ),
        (
            "a stop armed twice",
            |s| {
                let order = s.books[0].buy_stops[0].order.clone();
                let arrival = s.last_seq;
                s.books[0].buy_stops.push(StopSnapshot { arrival, order });
            },
            |e| matches!(e, RestoreError::SlotListedTwice { .. }),
        ),
        (
            "a live order whose slot is also freed",
            |s| {
                let slot = queue(s)[0].id.0 as u32;
                s.slots.freed.push(FreedSlot {
                    slot,
                    generation: 3,
                });
            },
            |e| matches!(e, RestoreError::SlotListedTwice { .. }),
        ),
        (
            "a slot beyond the high-water mark (a dangling slot)",
            |s| s.slots.high_water -= 1,
            |e| matches!(e, RestoreError::SlotBeyondHighWater { .. }),
        ),
        (
            "a slot neither live nor freed",
            |s| s.slots.high_water += 1,
            |e| matches!(e, RestoreError::SlotUnaccounted { .. }),
        ),
        (
            "a high-water mark beyond the pool",
            |s| s.slots.high_water = u32::MAX,
            |e| matches!(e, RestoreError::CapacityExceeded { .. }),
        ),
        (
            "a freed slot of generation 0",
            |s| s.slots.freed[0].generation = 0,
            |e| matches!(e, RestoreError::FreedSlotNeverUsed { .. }),
        ),
        (
            "an order id of generation 0",
            |s| queue(s)[0].id = OrderId(queue(s)[0].id.0 & 0xFFFF_FFFF),
            |e| matches!(e, RestoreError::InvalidOrderId { .. }),
        ),
        (
            "an account list naming a dead order",
            |s| s.accounts[0].orders.push(OrderId((7 << 32) | 2)),
            |e| {
                matches!(
                    e,
                    RestoreError::UnknownOrder {
                        list: ListKind::Account,
                        ..
                    }
                )
            },
        ),
        (
            "an order linked twice into its account's list",
            |s| {
                let id = s.accounts[0].orders[0];
                s.accounts[0].orders.push(id);
            },
            |e| {
                matches!(
                    e,
                    RestoreError::LinkedTwice {
                        list: ListKind::Account,
                        ..
                    }
                )
            },
        ),
        (
            "an order in another account's list",
            |s| {
                let id = s.accounts[0].orders.remove(0);
                s.accounts[1].orders.push(id);
            },
            |e| matches!(e, RestoreError::WrongOwner { .. }),
        ),
        (
            "a live order in no session list",
            |s| {
                s.sessions[0].orders.pop();
                if s.sessions[0].orders.is_empty() {
                    s.sessions.remove(0);
                }
            },
            |e| {
                matches!(
                    e,
                    RestoreError::NotLinked {
                        list: ListKind::Session,
                        ..
                    }
                )
            },
        ),
        (
            "account lists out of order",
            |s| s.accounts.swap(0, 1),
            |e| {
                matches!(
                    e,
                    RestoreError::BadList {
                        list: ListKind::Account,
                        ..
                    }
                )
            },
        ),
        (
            "an empty session list",
            |s| {
                s.sessions.push(OrderList {
                    owner: 1_000,
                    orders: vec![],
                })
            },
            |e| {
                matches!(
                    e,
                    RestoreError::BadList {
                        list: ListKind::Session,
                        ..
                    }
                )
            },
        ),
        (
            "an invalid instrument spec",
            |s| s.books[1].spec.band = Decimal::ZERO,
            |e| matches!(e, RestoreError::InvalidInstrument { instrument: 1, .. }),
        ),
        (
            "two instruments with one symbol",
            |s| s.books[1].spec.symbol = s.books[0].spec.symbol.clone(),
            |e| {
                matches!(
                    e,
                    RestoreError::DuplicateSymbol {
                        instrument: 1,
                        first: 0,
                        ..
                    }
                )
            },
        ),
        (
            "levels out of price order",
            |s| bids(s).swap(0, 1),
            |e| matches!(e, RestoreError::BadLevel { .. }),
        ),
        (
            "an empty level",
            |s| {
                bids(s).push(LevelSnapshot {
                    price: 91,
                    orders: vec![],
                })
            },
            |e| matches!(e, RestoreError::BadLevel { .. }),
        ),
        (
            "a level outside the band",
            |s| bids(s)[1].price = 5,
            |e| matches!(e, RestoreError::BadLevel { .. }),
        ),
        (
            "an order at another price than its level",
            |s| queue(s)[1].price = 98,
            |e| matches!(e, RestoreError::BadOrder { .. }),
        ),
        (
            "an order showing more than it has",
            |s| queue(s)[1].visible = queue(s)[1].remaining + 1,
            |e| matches!(e, RestoreError::BadOrder { .. }),
        ),
        (
            "an order with nothing left",
            |s| queue(s)[1].remaining = 0,
            |e| matches!(e, RestoreError::BadOrder { .. }),
        ),
        (
            "a market order resting",
            |s| {
                queue(s)[1].order_type = OrderType::Market;
                queue(s)[1].price = 0;
            },
            |e| matches!(e, RestoreError::BadOrder { .. }),
        ),
        (
            "a crossed book",
            |s| {
                let level = s.books[0].asks[0].clone();
                s.books[0].asks.clear();
                let mut level = level;
                level.price = 98;
                for o in &mut level.orders {
                    o.price = 98;
                }
                s.books[0].asks.push(level);
            },
            |e| matches!(e, RestoreError::Crossed { .. }),
        ),
        (
            "stops out of trigger order",
            |s| s.books[0].buy_stops.swap(0, 1),
            |e| matches!(e, RestoreError::StopsOutOfOrder { .. }),
        ),
        (
            "an armed stop the last price has reached",
            |s| s.books[0].last_price = Some(103),
            |e| matches!(e, RestoreError::StopAlreadyReached { .. }),
        ),
        (
            "a limit order armed as a stop",
            |s| s.books[0].buy_stops[1].order.order_type = OrderType::Limit,
            |e| matches!(e, RestoreError::BadOrder { .. }),
        ),
        (
            "a last price outside the band",
            |s| s.books[1].last_price = Some(1),
            |e| matches!(e, RestoreError::LastPriceOutsideBand { .. }),
        ),
        (
            "two live orders with one client id",
            |s| {
                let cid = queue(s)[0].client_id;
                queue(s)[2].client_id = cid;
            },
            |e| matches!(e, RestoreError::DuplicateClientOrderId { .. }),
        ),
        (
            "a GTD order without its expiry entry",
            // The later entry is the live order's; the earlier one is stale.
            |s| {
                s.expiries.pop();
            },
            |e| matches!(e, RestoreError::MissingExpiry { .. }),
        ),
        (
            "expiry entries out of order",
            |s| s.expiries.reverse(),
            |e| matches!(e, RestoreError::ExpiriesOutOfOrder { .. }),
        ),
        (
            "a stop armed after the last event",
            |s| {
                s.books[0].sell_stops[1].arrival = s.last_seq + 1;
            },
            |e| matches!(e, RestoreError::SeqAfterLast { .. }),
        ),
    ]
}

fn risk_corruptions() -> Vec<Corruption> {
    vec![
        (
            "a disabled account with live orders",
            |s| {
                let a = s.risk.accounts.iter_mut().find(|a| a.account == 1);
                a.unwrap().disabled = true;
            },
            |e| matches!(e, RestoreError::BadRisk { account: 1, .. }),
        ),
        (
            "an account with live orders left out",
            |s| s.risk.accounts.retain(|a| a.account != 2),
            |e| matches!(e, RestoreError::BadRisk { account: 2, .. }),
        ),
        (
            "risk state while risk is off",
            |s| s.risk.active = false,
            |e| matches!(e, RestoreError::BadRisk { .. }),
        ),
        (
            "risk accounts out of order",
            |s| s.risk.accounts.reverse(),
            |e| matches!(e, RestoreError::BadRisk { .. }),
        ),
        (
            "positions out of order",
            |s| s.risk.positions.reverse(),
            |e| matches!(e, RestoreError::BadRisk { .. }),
        ),
        (
            "a position on an unknown instrument",
            |s| s.risk.positions.last_mut().unwrap().instrument = 7,
            |e| matches!(e, RestoreError::BadRisk { .. }),
        ),
        (
            "limits on an unknown instrument",
            |s| {
                let l = s.risk.default_limits.as_mut().unwrap();
                l.instruments.push((7, InstrumentLimits::default()));
            },
            |e| matches!(e, RestoreError::BadRisk { account: 0, .. }),
        ),
    ]
}

#[test]
fn corrupt_risk_state_is_refused_with_the_account_named() {
    let good = busy_venue().engine.snapshot();
    assert!(good.risk.positions.len() >= 2 && good.risk.accounts.len() >= 3);
    for (what, edit, expected) in risk_corruptions() {
        let mut bad = good.clone();
        edit(&mut bad);
        match Engine::restore(config(), &bad) {
            Ok(_) => panic!("{what}: restored"),
            Err(e) => assert!(expected(&e), "{what}: unexpected error {e:?}"),
        }
    }
}

/// Limits, kill switches, positions and rate windows go on after a restore as before it.
#[test]
fn restored_engine_keeps_limits_kill_switches_positions_and_rate_windows() {
    let mut a = busy_venue();
    let tight = Limits {
        max_open_orders: None,
        max_orders_per_sec: Some(3),
        instruments: vec![(
            1,
            InstrumentLimits {
                max_long_lots: Some(6),
                ..InstrumentLimits::default()
            },
        )],
    };
    a.send(CommandKind::SetLimits {
        account: 4,
        limits: Some(Box::new(tight)),
    });
    // Account 4 bought 4 lots on instrument 1 (from the GTD order) with the first of its two
    // market orders; both count in this second's window, which allows 3.
    a.send(CommandKind::Resume { instrument: 1 });
    a.limit(7, SELL, 101, 1);
    let mut b = a.restored();
    assert_eq!(b.engine.net_position(4, 1), 4);
    assert_eq!(b.engine.snapshot(), a.engine.snapshot());
    let events = both(
        &mut a,
        &mut b,
        vec![
            place(Place::limit(4, 1, BUY, 95, 3)), // long 4 + 3 > 6
            place(Place::limit(4, 1, BUY, 95, 2)), // fits
            place(Place::limit(9, 0, BUY, 95, 1)), // disabled
            CommandKind::EnableAccount { account: 9 },
            place(Place::limit(9, 0, BUY, 95, 1)),
            CommandKind::DisableAccount { account: 1 },
        ],
    );
    let reasons: Vec<RejectReason> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Rejected { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![RejectReason::MaxPositionLong, RejectReason::AccountDisabled]
    );
    assert!(done_ids(&events).len() >= 2, "account 1's orders cancelled");
    // The third place this second was the last: the rate window came through the restore.
    let events = both(&mut a, &mut b, vec![place(Place::limit(4, 0, BUY, 95, 1))]);
    assert!(matches!(
        events[0].kind,
        EventKind::Rejected {
            reason: RejectReason::MaxOrderRate,
            ..
        }
    ));
}

/// A snapshot written before risk existed (format 1: no `risk` at the end) still decodes,
/// and restores with risk off.
#[test]
fn a_format_1_snapshot_decodes_and_restores_with_risk_off() {
    let mut v = Venue::new();
    v.limit(1, BUY, 99, 5);
    v.limit(2, SELL, 101, 5);
    let s = v.engine.snapshot();
    assert!(!s.risk.active);
    // Format 1's shape: the same fields in the same order, without `risk`.
    let v1 = (
        1u32,
        s.last_seq,
        s.last_trade_id,
        &s.books,
        &s.slots,
        &s.accounts,
        &s.sessions,
        &s.expiries,
    );
    let bytes = postcard::to_allocvec(&v1).unwrap();
    let decoded: EngineSnapshot = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(decoded.format, 1);
    assert_eq!(
        EngineSnapshot {
            format: EngineSnapshot::FORMAT,
            ..decoded.clone()
        },
        s
    );
    let mut restored = Venue {
        engine: Engine::restore(config(), &decoded).unwrap(),
        ts: v.ts,
    };
    both(
        &mut v,
        &mut restored,
        vec![place(Place::market(3, 0, BUY, 2))],
    );
    // A format this build does not know is refused.
    let mut future = s.clone();
    future.format = EngineSnapshot::FORMAT + 1;
    assert!(matches!(
        Engine::restore(config(), &future),
        Err(RestoreError::UnsupportedFormat { .. })
    ));
}

#[test]
fn corrupt_snapshots_are_refused_with_the_inconsistency_named() {
    let good = busy_venue().engine.snapshot();
    Engine::restore(config(), &good).expect("the uncorrupted snapshot restores");
    assert!(good.expiries.len() == 2 && good.books[0].bids[0].orders.len() == 3);
    for (what, edit, expected) in corruptions() {
        let mut bad = good.clone();
        edit(&mut bad);
        match Engine::restore(config(), &bad) {
            Ok(_) => panic!("{what}: restored"),
            Err(e) => assert!(expected(&e), "{what}: unexpected error {e:?}"),
        }
    }
}

#[test]
fn restore_errors_say_what_is_wrong_and_with_which_value() {
    let mut bad = busy_venue().engine.snapshot();
    bad.slots.high_water = 1_000;
    let err = Engine::restore(config(), &bad).err().unwrap();
    assert_eq!(
        err.to_string(),
        "snapshot used 1000 order slots, order_capacity allows 64"
    );
}

/// Applies a few commands that touch every part of a restored engine: expiry, matching on both
/// sides of both books, a mass cancel per account, every session closed.
fn exercise(engine: &mut Engine) {
    let mut ts = 2_000;
    let mut send = |kind| {
        ts += 1;
        engine.apply_collect(&Command::new(ts, ts, kind));
    };
    for instrument in 0..2 {
        send(CommandKind::Resume { instrument });
        for side in [BUY, SELL] {
            send(place(Place::market(99, instrument, side, 50)));
        }
    }
    for account in 1..=6 {
        send(CommandKind::MassCancel(MassCancel {
            account,
            instrument: None,
            side: None,
        }));
    }
    for session in 0..=6 {
        send(CommandKind::SessionClosed { session });
    }
}

/// Counters and fill totals near `u64::MAX` would overflow in later commands (a panic in debug
/// builds); restore takes them as they are, so the fuzzing below only runs commands on
/// snapshots whose counters leave room.
fn counters_leave_room(s: &EngineSnapshot) -> bool {
    let room = |n: u64| n < 1 << 60;
    let orders_ok = s.books.iter().all(|b| {
        let resting = b.bids.iter().chain(&b.asks).flat_map(|l| &l.orders);
        let mut all = resting.chain(b.buy_stops.iter().chain(&b.sell_stops).map(|s| &s.order));
        all.all(|o| room(o.filled) && room(o.remaining))
    });
    room(s.last_seq) && room(s.last_trade_id) && orders_ok
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Postcard bytes of the current format, drawn mostly from small values (lengths, bools
    /// and enum tags are small) so that many decode and reach restore's checks.
    #[test]
    fn arbitrary_bytes_never_make_restore_panic(
        body in prop::collection::vec(prop_oneof![4 => 0u8..4, 1 => any::<u8>()], 0..400),
    ) {
        let mut bytes = postcard::to_allocvec(&EngineSnapshot::FORMAT).unwrap();
        bytes.extend(body);
        if let Ok(snapshot) = postcard::from_bytes::<EngineSnapshot>(&bytes) {
            if let Ok(engine) = Engine::restore(config(), &snapshot) {
                prop_assert_eq!(engine.snapshot(), snapshot);
            }
        }
    }

    /// A real snapshot with a few bytes changed decodes more often than noise, reaching deep
    /// into restore's checks. Whatever restore accepts is a consistent engine: it snapshots
    /// back to the same value and takes commands without panicking.
    #[test]
    fn corrupted_snapshot_bytes_are_refused_or_restore_a_consistent_engine(
        edits in prop::collection::vec((any::<Index>(), any::<u8>()), 1..4),
        cut in prop::option::weighted(0.1, any::<Index>()),
    ) {
        let good = busy_venue().engine.snapshot();
        let mut bytes = postcard::to_allocvec(&good).unwrap();
        for (at, value) in &edits {
            let at = at.index(bytes.len());
            bytes[at] = *value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(snapshot) = postcard::from_bytes::<EngineSnapshot>(&bytes) {
            if let Ok(mut engine) = Engine::restore(config(), &snapshot) {
                prop_assert_eq!(&engine.snapshot(), &snapshot);
                if counters_leave_room(&snapshot) {
                    exercise(&mut engine);
                    let again = Engine::restore(config(), &engine.snapshot()).unwrap();
                    prop_assert_eq!(again.snapshot(), engine.snapshot());
                }
            }
        }
    }
}
