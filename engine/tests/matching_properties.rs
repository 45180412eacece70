//! Property tests of the matching engine against the naive reference engine in `reference/`.
//!
//! Random command streams of every kind (one to three instruments, a few accounts, sessions and
//! client ids, prices clustered around the reference price so orders cross often, occasional
//! invalid values, stops, icebergs, GTD orders with advancing timestamps, heartbeats, halts) are
//! applied to both engines. After every command:
//!
//! - the engine's events, with its order ids mapped onto the reference's, equal the reference's
//!   events exactly: outcome and reject reason, trades (price, size, maker, taker, remaining
//!   sizes) in order, rests, amends, stop triggers, done reasons, `LevelChanged`, sequence numbers;
//! - the resting books are the same (per side, levels best first, each level's queue of
//!   `(order, visible, remaining)`), and so are the armed stops and every live order;
//! - the engine's own invariants hold: the book is never crossed, each `LevelChanged` carries
//!   its level's visible total and every changed level gets one, sizes are conserved, sequence
//!   numbers go up by one without a gap, and every command but a heartbeat has exactly one
//!   outcome event, coming before everything the command caused.

mod reference;
mod streams;

use proptest::prelude::*;
use reference::{Queued, Reference};
use std::collections::{BTreeMap, HashMap};
use streams::*;
use ticker_engine::*;

// ---------------------------------------------------------------------------------------------
// Running both engines side by side
// ---------------------------------------------------------------------------------------------

struct Harness {
    engine: Engine,
    reference: Reference,
    /// Engine order id -> reference order id, for every order ever accepted.
    to_ref: HashMap<OrderId, OrderId>,
    /// Reference order id -> engine order id.
    to_engine: HashMap<OrderId, OrderId>,
    /// Reference ids in order of acceptance, with their owners.
    accepted: Vec<(OrderId, AccountId)>,
    audit: Audit,
    ts: Timestamp,
    corr: Correlation,
}

impl Harness {
    fn new(config: &EngineConfig) -> Self {
        let ids = HashMap::from([
            (NO_SUCH_ORDER, NO_SUCH_ORDER),
            (OrderId::NONE, OrderId::NONE),
        ]);
        Harness {
            engine: Engine::new(config.clone()),
            reference: Reference::new(config),
            to_ref: ids.clone(),
            to_engine: ids,
            accepted: Vec::new(),
            audit: Audit::default(),
            ts: 1_000,
            corr: 0,
        }
    }

    /// The order a cancel or amend names, for the engine and for the reference, and the
    /// account that sends the command.
    fn resolve(&self, c: &OrderCommand) -> (OrderRef, OrderRef, AccountId) {
        let by_ref_id = |id: OrderId, owner: AccountId| {
            let account = if c.foreign { c.account } else { owner };
            (OrderRef::Id(self.to_engine[&id]), OrderRef::Id(id), account)
        };
        match &c.target {
            Target::Live(ix) => {
                let live = self.reference.live_orders();
                if live.is_empty() {
                    let none = OrderRef::Id(NO_SUCH_ORDER);
                    return (none, none, c.account);
                }
                let o = live[ix.index(live.len())];
                by_ref_id(OrderId(o.id), o.account)
            }
            Target::Any(ix) if !self.accepted.is_empty() => {
                let (id, owner) = self.accepted[ix.index(self.accepted.len())];
                by_ref_id(id, owner)
            }
            Target::Client(cid) => (OrderRef::Client(*cid), OrderRef::Client(*cid), c.account),
            Target::Any(_) | Target::Unknown => {
                let none = OrderRef::Id(NO_SUCH_ORDER);
                (none, none, c.account)
            }
        }
    }

    /// The command for the engine and the same command for the reference.
    fn commands(&mut self, step: &Step) -> (Command, Command) {
        self.ts += step.dt;
        self.corr += 1;
        let (engine, reference) = match &step.action {
            Action::Place(p, expiry_in) => {
                let mut p = *p;
                p.expiry = (self.ts as i64 + expiry_in).max(0) as u64;
                (CommandKind::Place(p), CommandKind::Place(p))
            }
            Action::Cancel(c) => {
                let (e, r, account) = self.resolve(c);
                (
                    CommandKind::Cancel(Cancel { account, order: e }),
                    CommandKind::Cancel(Cancel { account, order: r }),
                )
            }
            Action::Amend {
                order,
                price,
                size,
                trigger,
                fit,
            } => {
                let (e, r, account) = self.resolve(order);
                let (mut price, mut size, mut trigger) = (*price, *size, *trigger);
                let named = match r {
                    OrderRef::Id(id) => self.reference.order(id.0),
                    OrderRef::Client(_) => None,
                };
                if let (true, Some(o)) = (fit, named) {
                    if !o.order_type.has_limit_price() {
                        price = None;
                    }
                    if !self.reference.is_armed(o.id) {
                        trigger = None;
                    }
                    if (price, size, trigger) == (None, None, None) {
                        size = Some(o.remaining + 1);
                    }
                }
                let amend = |order| Amend {
                    account,
                    order,
                    price,
                    size,
                    trigger,
                };
                (CommandKind::Amend(amend(e)), CommandKind::Amend(amend(r)))
            }
            Action::MassCancel(m) => (CommandKind::MassCancel(*m), CommandKind::MassCancel(*m)),
            Action::SessionClosed(s) => (
                CommandKind::SessionClosed { session: *s },
                CommandKind::SessionClosed { session: *s },
            ),
            Action::Halt(i) => (
                CommandKind::Halt { instrument: *i },
                CommandKind::Halt { instrument: *i },
            ),
            Action::Resume(i) => (
                CommandKind::Resume { instrument: *i },
                CommandKind::Resume { instrument: *i },
            ),
            Action::AddInstrument(spec) => (
                CommandKind::AddInstrument(Box::new(spec.clone())),
                CommandKind::AddInstrument(Box::new(spec.clone())),
            ),
            Action::Heartbeat => (CommandKind::Heartbeat, CommandKind::Heartbeat),
            Action::SetLimits(account, limits) => {
                let kind = CommandKind::SetLimits {
                    account: *account,
                    limits: limits.clone().map(Box::new),
                };
                (kind.clone(), kind)
            }
            Action::DisableAccount(account) => (
                CommandKind::DisableAccount { account: *account },
                CommandKind::DisableAccount { account: *account },
            ),
            Action::EnableAccount(account) => (
                CommandKind::EnableAccount { account: *account },
                CommandKind::EnableAccount { account: *account },
            ),
        };
        // Every 23rd command arrives after its deadline, every 5th well within one.
        let deadline = match self.corr {
            c if c % 23 == 0 => self.ts - 1,
            c if c % 5 == 0 => self.ts + 1_000,
            _ => 0,
        };
        let command = |kind| Command {
            ts: self.ts,
            corr: self.corr,
            deadline,
            kind,
        };
        (command(engine), command(reference))
    }

    fn run(&mut self, step_no: usize, step: &Step) -> Result<(), TestCaseError> {
        let (engine_cmd, ref_cmd) = self.commands(step);
        let levels_before = engine_levels(&self.engine);
        let seq_before = self.engine.last_seq();
        let engine_events = self.engine.apply_collect(&engine_cmd);
        let ref_events = self.reference.apply(&ref_cmd);

        // Pair the accepted orders, then compare the whole event streams.
        let accepted = |events: &[Event]| {
            events.iter().find_map(|e| match &e.kind {
                EventKind::PlaceAccepted { order, .. } => Some((order.order_id, order.account)),
                _ => None,
            })
        };
        if let (Some((e, _)), Some((r, owner))) = (accepted(&engine_events), accepted(&ref_events))
        {
            self.to_ref.insert(e, r);
            self.to_engine.insert(r, e);
            self.accepted.push((r, owner));
        }
        let mapped: Vec<Event> = engine_events
            .iter()
            .map(|e| map_ids(e, &self.to_ref))
            .collect();
        prop_assert!(
            mapped == ref_events,
            "step {step_no}: engine and reference disagree on {:?}\n\
             engine (ids mapped to the reference's):\n{}\nreference:\n{}",
            ref_cmd,
            listing(&mapped),
            listing(&ref_events)
        );

        check_sequence_and_outcome(&engine_cmd, seq_before, &engine_events, &self.engine)?;
        check_level_changes(&engine_events, &levels_before, &self.engine)?;
        check_not_crossed(&self.engine)?;
        self.audit.command(&engine_events)?;
        self.audit.matches_engine(&self.engine)?;
        self.same_risk_counts()?;
        self.same_state()
    }

    /// The engine's running risk counts (kept incrementally, one lookup per order event) equal
    /// a recount: open orders and open sizes from the live orders, net positions from the
    /// reference's trades.
    fn same_risk_counts(&self) -> Result<(), TestCaseError> {
        if !self.reference.risk.active {
            return Ok(());
        }
        let live = self.reference.live_orders();
        for account in 0..=4 {
            let count = live.iter().filter(|o| o.account == account).count();
            prop_assert_eq!(self.engine.open_orders(account) as usize, count);
            for instrument in 0..self.engine.books().len() as InstrumentId {
                let open = |side| -> i128 {
                    live.iter()
                        .filter(|o| o.account == account && o.instrument == instrument)
                        .filter(|o| o.side == side)
                        .map(|o| o.remaining as i128)
                        .sum()
                };
                let net = self.reference.risk.net.get(&(account, instrument));
                let expected = Position {
                    net: net.copied().unwrap_or(0),
                    open_buy: open(Side::Buy),
                    open_sell: open(Side::Sell),
                };
                prop_assert_eq!(
                    self.engine.position(account, instrument),
                    expected,
                    "account {} instrument {}",
                    account,
                    instrument
                );
            }
        }
        Ok(())
    }

    /// Books, armed stops and live orders are the same in both engines.
    fn same_state(&self) -> Result<(), TestCaseError> {
        let (engine, reference) = (&self.engine, &self.reference);
        prop_assert_eq!(engine.books().len(), reference.books.len());
        for (i, rb) in reference.books.iter().enumerate() {
            let book = engine.book(i as InstrumentId).unwrap();
            prop_assert_eq!(book.is_halted(), rb.halted);
            prop_assert_eq!(book.last_price(), rb.last_price);
            for side in [Side::Buy, Side::Sell] {
                let levels: Vec<(Ticks, Vec<Queued>)> = book
                    .depth(side)
                    .map(|(price, _)| {
                        let queue = engine
                            .level_orders(i as InstrumentId, side, price)
                            .into_iter()
                            .map(|id| {
                                let o = engine.order(id).expect("queued order is live");
                                (self.to_ref[&id].0, o.visible, o.remaining)
                            })
                            .collect();
                        (price, queue)
                    })
                    .collect();
                prop_assert_eq!(
                    &levels,
                    &rb.levels(side),
                    "instrument {} {:?} book (engine left, reference right)",
                    i,
                    side
                );
            }
            prop_assert_eq!(book.armed_stops(), rb.stops.len());
            for stop in &rb.stops {
                let o = engine.order(self.to_engine[&OrderId(stop.id)]);
                prop_assert!(o.is_some_and(|o| o.armed_stop
                    && o.trigger == stop.trigger
                    && o.price == stop.price
                    && o.remaining == stop.remaining));
            }
        }
        let live = reference.live_orders();
        prop_assert_eq!(engine.live_order_count(), live.len());
        for r in live {
            let o = engine
                .order(self.to_engine[&OrderId(r.id)])
                .expect("live in both");
            let expected = (
                r.account,
                r.client_id,
                r.instrument,
                r.side,
                r.order_type,
                r.price,
                r.trigger,
                r.remaining,
                r.visible,
                r.filled,
            );
            let got = (
                o.account,
                o.client_id,
                o.instrument,
                o.side,
                o.order_type,
                o.price,
                o.trigger,
                o.remaining,
                o.visible,
                o.filled,
            );
            prop_assert_eq!(got, expected, "live order {}", r.id);
        }
        Ok(())
    }
}

fn listing(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| format!("  {} {:?}\n", e.seq, e.kind))
        .collect()
}

/// The event with every order id translated through `ids` (unknown ids become `u64::MAX - 1`).
fn map_ids(e: &Event, ids: &HashMap<OrderId, OrderId>) -> Event {
    let mut e = e.clone();
    each_order_id(&mut e.kind, |id| {
        *id = ids.get(id).copied().unwrap_or(OrderId(u64::MAX - 1))
    });
    e
}

// ---------------------------------------------------------------------------------------------
// Invariants of the engine on its own
// ---------------------------------------------------------------------------------------------

fn is_outcome(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::PlaceAccepted { .. } | EventKind::Accepted { .. } | EventKind::Rejected { .. }
    )
}

/// Sequence numbers go up by one; the command's timestamp is on every event; expirations (which
/// happen before the command runs) come first, then exactly one outcome unless it is a heartbeat.
fn check_sequence_and_outcome(
    cmd: &Command,
    seq_before: u64,
    events: &[Event],
    engine: &Engine,
) -> Result<(), TestCaseError> {
    for (k, e) in events.iter().enumerate() {
        prop_assert_eq!(
            e.seq,
            seq_before + 1 + k as u64,
            "gap or repeat in sequence"
        );
        prop_assert_eq!(e.ts, cmd.ts);
    }
    prop_assert_eq!(engine.last_seq(), seq_before + events.len() as u64);
    let expirations = events
        .iter()
        .take_while(|e| {
            matches!(
                e.kind,
                EventKind::OrderDone {
                    reason: DoneReason::Expired,
                    ..
                }
            )
        })
        .count();
    let outcomes = events.iter().filter(|e| is_outcome(&e.kind)).count();
    if cmd.kind == CommandKind::Heartbeat {
        prop_assert_eq!(outcomes, 0, "a heartbeat has no outcome");
    } else {
        prop_assert_eq!(outcomes, 1, "one outcome per command");
        let first = &events[expirations].kind;
        prop_assert!(is_outcome(first), "outcome first, got {:?}", first);
        let corr = match first {
            EventKind::PlaceAccepted { corr, .. }
            | EventKind::Accepted { corr, .. }
            | EventKind::Rejected { corr, .. } => *corr,
            _ => unreachable!(),
        };
        prop_assert_eq!(corr, cmd.corr);
    }
    Ok(())
}

type Levels = BTreeMap<(InstrumentId, u8, Ticks), (Lots, u32)>;

/// Every non-empty level of every book: `(visible, orders)`, checked against its queue.
fn engine_levels(engine: &Engine) -> Levels {
    let mut levels = Levels::new();
    for (i, book) in engine.books().iter().enumerate() {
        for side in [Side::Buy, Side::Sell] {
            for (price, level) in book.depth(side) {
                let queue = engine.level_orders(i as InstrumentId, side, price);
                let visible: Lots = queue
                    .iter()
                    .map(|&id| engine.order(id).unwrap().visible)
                    .sum();
                assert_eq!(
                    (level.visible, level.orders),
                    (visible, queue.len() as u32),
                    "level {price} totals disagree with its queue"
                );
                assert!(queue
                    .iter()
                    .all(|&id| engine.order(id).unwrap().visible > 0));
                levels.insert(
                    (i as InstrumentId, side as u8, price),
                    (level.visible, level.orders),
                );
            }
        }
    }
    levels
}

/// `LevelChanged` events close the command, sorted, each carrying its level's final state, and
/// every level whose size or order count changed has one.
fn check_level_changes(
    events: &[Event],
    before: &Levels,
    engine: &Engine,
) -> Result<(), TestCaseError> {
    let after = engine_levels(engine);
    let first = events
        .iter()
        .position(|e| matches!(e.kind, EventKind::LevelChanged { .. }))
        .unwrap_or(events.len());
    let mut reported = Vec::new();
    for e in &events[first..] {
        let EventKind::LevelChanged {
            instrument,
            side,
            price,
            size,
            orders,
        } = e.kind
        else {
            return Err(TestCaseError::fail(format!(
                "{:?} after the LevelChanged events",
                e.kind
            )));
        };
        let key = (instrument, side as u8, price);
        prop_assert_eq!(after.get(&key).copied().unwrap_or((0, 0)), (size, orders));
        reported.push(key);
    }
    prop_assert!(
        reported.windows(2).all(|w| w[0] < w[1]),
        "LevelChanged sorted, one per level"
    );
    for key in before.keys().chain(after.keys()) {
        if before.get(key) != after.get(key) {
            prop_assert!(reported.contains(key), "level {:?} changed silently", key);
        }
    }
    Ok(())
}

fn check_not_crossed(engine: &Engine) -> Result<(), TestCaseError> {
    for book in engine.books() {
        if let (Some(bid), Some(ask)) = (book.best_bid(), book.best_ask()) {
            prop_assert!(bid < ask, "crossed book: bid {} >= ask {}", bid, ask);
        }
    }
    Ok(())
}

/// Size bookkeeping of one order, from events alone.
#[derive(Clone, Copy, Debug)]
struct Ledger {
    /// Accepted size plus amend increases.
    size_in: Lots,
    open: Lots,
    filled: Lots,
    /// Amend decreases and self-trade decrements: cancelled without ending the order.
    reduced: Lots,
    stp: SelfTradePrevention,
    armed: bool,
}

/// Conservation of size: for every order, `filled + cancelled + reduced + open == size_in`
/// at every event, where `cancelled` is reported by its `OrderDone`.
#[derive(Default)]
struct Audit {
    orders: HashMap<OrderId, Ledger>,
    /// The order currently matching.
    taker: Option<OrderId>,
    /// How often each kind of thing happened, for `generated_streams_reach_every_outcome`.
    seen: BTreeMap<String, usize>,
}

impl Audit {
    fn ledger(&mut self, id: OrderId) -> Result<&mut Ledger, TestCaseError> {
        self.orders
            .get_mut(&id)
            .ok_or_else(|| TestCaseError::fail(format!("event for unknown order {id}")))
    }

    fn note(&mut self, what: String) {
        *self.seen.entry(what).or_default() += 1;
    }

    fn command(&mut self, events: &[Event]) -> Result<(), TestCaseError> {
        self.taker = None;
        for e in events {
            match e.kind {
                EventKind::Rejected {
                    command, reason, ..
                } => self.note(format!("{command:?} rejected {reason:?}")),
                EventKind::OrderDone { reason, .. } => self.note(format!("done {reason:?}")),
                EventKind::OrderAmended { priority_kept, .. } => {
                    self.note(format!("amended, priority kept {priority_kept}"))
                }
                EventKind::Trade { .. } => self.note("trade".into()),
                EventKind::StopTriggered { .. } => self.note("stop triggered".into()),
                EventKind::OrderRested { order_id, .. } if self.taker != Some(order_id) => {
                    self.note("iceberg slice re-queued".into())
                }
                _ => {}
            }
            match e.kind {
                EventKind::PlaceAccepted { order, .. } => {
                    let armed = order.order_type.is_stop();
                    self.orders.insert(
                        order.order_id,
                        Ledger {
                            size_in: order.size,
                            open: order.size,
                            filled: 0,
                            reduced: 0,
                            stp: order.stp,
                            armed,
                        },
                    );
                    if !armed {
                        self.taker = Some(order.order_id);
                    }
                }
                EventKind::StopTriggered { order_id, .. } => {
                    self.ledger(order_id)?.armed = false;
                    self.taker = Some(order_id);
                }
                EventKind::Trade {
                    size,
                    taker_order,
                    maker_order,
                    taker_remaining,
                    maker_remaining,
                    ..
                } => {
                    prop_assert_eq!(Some(taker_order), self.taker, "trade by a non-taker");
                    prop_assert!(size > 0);
                    for (id, remaining) in [
                        (taker_order, taker_remaining),
                        (maker_order, maker_remaining),
                    ] {
                        let l = self.ledger(id)?;
                        prop_assert!(l.open >= size, "order {} overfilled", id);
                        l.open -= size;
                        l.filled += size;
                        prop_assert_eq!(l.open, remaining, "remaining of order {}", id);
                    }
                }
                EventKind::OrderAmended {
                    order_id,
                    remaining,
                    priority_kept,
                    ..
                } => {
                    let l = self.ledger(order_id)?;
                    if remaining > l.open {
                        l.size_in += remaining - l.open;
                    } else {
                        l.reduced += l.open - remaining;
                    }
                    l.open = remaining;
                    if !priority_kept && !l.armed {
                        self.taker = Some(order_id);
                    }
                }
                EventKind::OrderRested {
                    order_id,
                    visible,
                    remaining,
                    ..
                } => {
                    let l = self.ledger(order_id)?;
                    prop_assert_eq!(l.open, remaining);
                    prop_assert!(visible > 0 && visible <= remaining);
                }
                EventKind::OrderDone {
                    order_id,
                    filled,
                    cancelled,
                    reason,
                    ..
                } => {
                    let taker = self.taker.and_then(|t| self.orders.get(&t)).copied();
                    if let (DoneReason::SelfTrade, Some(t)) = (reason, taker) {
                        self.note(format!("self-trade {:?}", t.stp));
                        // Decrement-and-cancel takes a cancelled maker's size off the taker too
                        // (unless the taker is cancelled next, for the same size).
                        if self.taker != Some(order_id)
                            && t.stp == SelfTradePrevention::DecrementAndCancel
                            && t.open > cancelled
                        {
                            self.note("decrement-and-cancel taker goes on".into());
                            let t = self.ledger(self.taker.unwrap())?;
                            t.open -= cancelled;
                            t.reduced += cancelled;
                        }
                    }
                    let l = self.orders.remove(&order_id).ok_or_else(|| {
                        TestCaseError::fail(format!("done for unknown order {order_id}"))
                    })?;
                    prop_assert_eq!(filled, l.filled, "filled of order {}", order_id);
                    if reason == DoneReason::Filled {
                        prop_assert_eq!((cancelled, l.open), (0, 0));
                    } else {
                        prop_assert_eq!(cancelled, l.open, "cancelled of order {}", order_id);
                    }
                    prop_assert_eq!(
                        l.size_in,
                        filled + cancelled + l.reduced,
                        "size of order {} not conserved",
                        order_id
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every order the events say is live is live in the engine, with the same sizes.
    fn matches_engine(&self, engine: &Engine) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.orders.len(), engine.live_order_count());
        for (&id, l) in &self.orders {
            let o = engine.order(id);
            prop_assert!(
                o.is_some_and(|o| o.remaining == l.open
                    && o.filled == l.filled
                    && o.armed_stop == l.armed
                    && l.size_in == l.filled + l.reduced + l.open),
                "order {} in the engine {:?}, from its events {:?}",
                id,
                o,
                l
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        max_shrink_iters: 4096,
        // Integration tests have no lib.rs for proptest to file regressions beside; a failure
        // prints its minimal input, which belongs in `scenarios.rs` once understood.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_the_naive_reference_on_random_command_streams(scenario in scenario()) {
        let mut h = Harness::new(&scenario.config);
        for k in 0..scenario.instruments {
            let step = Step { dt: 0, action: Action::AddInstrument(instrument_spec(k)) };
            h.run(0, &step)?;
        }
        for (step_no, step) in scenario.steps.iter().enumerate() {
            h.run(step_no + 1, step)?;
        }
    }
}

/// A scenario whose limits (one set per account 1-4 and a default set, each maybe absent) are
/// set before the first order and never changed, so positions must stay within them.
fn scenario_with_fixed_limits() -> impl Strategy<Value = (Scenario, Vec<Option<Limits>>)> {
    scenario().prop_flat_map(|mut scenario| {
        scenario
            .steps
            .retain(|s| !matches!(s.action, Action::SetLimits(..)));
        let n = scenario.instruments as u32 - 1;
        let limits = prop::collection::vec(prop::option::weighted(0.8, limits(n)), 5);
        (Just(scenario), limits)
    })
}

/// Worst-case positions of every account with limits on an instrument stay within them.
fn check_positions_within_limits(engine: &Engine) -> Result<(), TestCaseError> {
    let live: Vec<OrderView> = engine.live_orders().collect();
    for account in 1..=4 {
        for instrument in 0..engine.books().len() as InstrumentId {
            let Some(l) = engine
                .limits(account)
                .and_then(|l| l.instrument(instrument))
            else {
                continue;
            };
            let net = engine.net_position(account, instrument);
            let open = |side| -> i128 {
                live.iter()
                    .filter(|o| {
                        o.account == account && o.instrument == instrument && o.side == side
                    })
                    .map(|o| o.remaining as i128)
                    .sum()
            };
            if let Some(max) = l.max_long_lots {
                prop_assert!(
                    net + open(Side::Buy) <= max as i128,
                    "account {account} instrument {instrument}: net {net} + open buys {} > {max}",
                    open(Side::Buy)
                );
            }
            if let Some(max) = l.max_short_lots {
                prop_assert!(
                    net - open(Side::Sell) >= -(max as i128),
                    "account {account} instrument {instrument}: net {net} - open sells {} < -{max}",
                    open(Side::Sell)
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        max_shrink_iters: 4096,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// With limits fixed from the start, the engine agrees with the reference on every order
    /// (so it lets through exactly the orders within the limits, and rejects with a limit
    /// reason exactly those that break one), and no fill ever takes a position, even counting
    /// every open order as filled, past a limit.
    #[test]
    fn no_fill_takes_a_position_past_its_limits((scenario, limits) in scenario_with_fixed_limits()) {
        let mut h = Harness::new(&scenario.config);
        for k in 0..scenario.instruments {
            let step = Step { dt: 0, action: Action::AddInstrument(instrument_spec(k)) };
            h.run(0, &step)?;
        }
        for (account, limits) in limits.into_iter().enumerate() {
            let step = Step { dt: 0, action: Action::SetLimits(account as AccountId, limits) };
            h.run(0, &step)?;
        }
        for (step_no, step) in scenario.steps.iter().enumerate() {
            h.run(step_no + 1, step)?;
            check_positions_within_limits(&h.engine)?;
        }
    }
}

/// The generator is only as good as what it reaches: every done reason, every reject reason the
/// engine can give (off-tick and off-lot come from decimal conversion at the edge, never from
/// `apply`), each self-trade prevention mode, icebergs re-queuing, stops triggering, amends of
/// both kinds.
#[test]
fn generated_streams_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..300 {
        let scenario = scenario().new_tree(&mut runner).unwrap().current();
        let mut h = Harness::new(&scenario.config);
        for k in 0..scenario.instruments {
            let step = Step {
                dt: 0,
                action: Action::AddInstrument(instrument_spec(k)),
            };
            h.run(0, &step).unwrap();
        }
        for (step_no, step) in scenario.steps.iter().enumerate() {
            h.run(step_no + 1, step).unwrap();
        }
        for (name, n) in h.audit.seen {
            *seen.entry(name).or_default() += n;
        }
    }
    let reached = |name: &str| seen.keys().any(|k| k.ends_with(name));
    let mut missing: Vec<String> = Vec::new();
    for reason in RejectReason::ALL {
        if !matches!(reason, RejectReason::OffTick | RejectReason::OffLot)
            && !reached(&format!("rejected {reason:?}"))
        {
            missing.push(format!("reject {reason:?}"));
        }
    }
    for reason in [
        DoneReason::Filled,
        DoneReason::Cancelled,
        DoneReason::MassCancelled,
        DoneReason::SessionClosed,
        DoneReason::ImmediateOrCancel,
        DoneReason::MarketProtection,
        DoneReason::SelfTrade,
        DoneReason::Expired,
        DoneReason::FillOrKill,
        DoneReason::AccountDisabled,
    ] {
        if !reached(&format!("done {reason:?}")) {
            missing.push(format!("done {reason:?}"));
        }
    }
    for name in [
        "trade",
        "iceberg slice re-queued",
        "stop triggered",
        "amended, priority kept true",
        "amended, priority kept false",
        "self-trade CancelTaker",
        "self-trade CancelMaker",
        "self-trade CancelBoth",
        "self-trade DecrementAndCancel",
        "decrement-and-cancel taker goes on",
    ] {
        if !reached(name) {
            missing.push(name.into());
        }
    }
    assert!(
        missing.is_empty(),
        "never reached: {missing:?}\nseen: {seen:#?}"
    );
}
