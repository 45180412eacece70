//! A simulator resumed after a restart carries on against the engine as it was at the cut: it
//! knows its quotes and passive orders, never reuses a client id, starts from the market's
//! prices, and does not replay the flow it would have sent.

mod common;

use common::{instruments, START};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use ticker_engine::*;
use ticker_feeds::sim::{LastPrices, SimConfig, Simulator};

const BEFORE: usize = 30_000;
const AFTER: usize = 20_000;

/// An engine and what a restart needs of it, kept from its events: live order ids (the
/// engine lists only their count on this branch) and each instrument's last trade.
struct Market {
    engine: Engine,
    live: BTreeSet<OrderId>,
    last_trade: BTreeMap<InstrumentId, Ticks>,
    rejects: HashMap<RejectReason, usize>,
    events: Vec<Event>,
}

impl Market {
    fn new() -> Market {
        let mut market = Market {
            engine: Engine::default(),
            live: BTreeSet::new(),
            last_trade: BTreeMap::new(),
            rejects: HashMap::new(),
            events: Vec::new(),
        };
        for ins in instruments() {
            market.apply(&Command::new(
                START,
                0,
                CommandKind::AddInstrument(Box::new(ins.spec)),
            ));
        }
        market
    }

    fn apply(&mut self, cmd: &Command) {
        self.events.clear();
        self.engine.apply(cmd, &mut self.events);
        for e in &self.events {
            match e.kind {
                EventKind::PlaceAccepted { order, .. } => {
                    self.live.insert(order.order_id);
                }
                EventKind::OrderDone { order_id, .. } => {
                    self.live.remove(&order_id);
                }
                EventKind::Trade {
                    instrument, price, ..
                } => {
                    self.last_trade.insert(instrument, price);
                }
                EventKind::Rejected { reason, .. } => *self.rejects.entry(reason).or_default() += 1,
                _ => {}
            }
        }
    }

    fn live_orders(&self) -> Vec<OrderView> {
        self.live
            .iter()
            .filter_map(|id| self.engine.order(*id))
            .collect()
    }

    fn prices(&self) -> Vec<(InstrumentId, LastPrices)> {
        self.engine
            .books()
            .iter()
            .map(|b| {
                let id = b.instrument().id;
                let prices = LastPrices {
                    last_trade: self.last_trade.get(&id).copied(),
                    bid: b.best_bid(),
                    ask: b.best_ask(),
                };
                (id, prices)
            })
            .collect()
    }

    fn rejected(&self) -> usize {
        self.rejects.values().sum()
    }
}

/// Runs `n` commands of `sim` on `market`; returns them.
fn drive(sim: &mut Simulator, market: &mut Market, n: usize) -> Vec<Command> {
    (0..n)
        .map(|_| {
            let cmd = sim.next_command();
            market.apply(&cmd);
            cmd
        })
        .collect()
}

fn client_id(cmd: &Command) -> ClientOrderId {
    match &cmd.kind {
        CommandKind::Place(p) => p.client_id,
        _ => 0,
    }
}

#[test]
fn a_resumed_simulator_carries_on_with_valid_flow_and_fresh_ids() {
    let config = SimConfig::default();
    let ins = instruments();
    // Two identical markets up to the cut: one carries on with the simulator that made it, the
    // other (the engine restored at the cut) with a resumed one.
    let mut original = Simulator::new(config.clone(), &ins, START);
    let mut uninterrupted = Market::new();
    let before = drive(&mut original, &mut uninterrupted, BEFORE);
    let mut restarted = Market::new();
    for cmd in &before {
        restarted.apply(cmd);
    }
    assert_eq!(restarted.engine.last_seq(), uninterrupted.engine.last_seq());
    let used: BTreeSet<ClientOrderId> = before.iter().map(client_id).collect();
    let position = restarted.engine.last_seq();
    let mut resumed = Simulator::resume(
        config.clone(),
        &ins,
        original.now(),
        position,
        restarted.live_orders(),
        restarted.prices(),
    );
    uninterrupted.rejects.clear();
    restarted.rejects.clear();
    let carried_on = drive(&mut original, &mut uninterrupted, AFTER);
    let after = drive(&mut resumed, &mut restarted, AFTER);

    // Fresh ids: above every id used before, so never a duplicate.
    let fresh = after.iter().map(client_id).filter(|id| *id != 0);
    assert!(fresh.clone().all(|id| id > *used.last().unwrap()));
    assert_eq!(
        restarted.rejects.get(&RejectReason::DuplicateClientOrderId),
        None
    );

    // Valid flow. The simulator's own rejects are post-only quotes that would cross and
    // cancels of orders already filled; a resumed simulator remembers only live passive
    // orders (the original also remembers filled ones), so it has no more of the latter. Its
    // first requote of each maker cancels quotes it took over, which may have been filled
    // since: a handful more at most. The bound allows for that and for a different flow's
    // share of crossing quotes.
    let baseline = uninterrupted.rejected();
    let got = restarted.rejected();
    assert!(
        got <= baseline + baseline / 4 + 20,
        "resumed {got} rejects {:?}, uninterrupted {baseline} {:?}",
        restarted.rejects,
        uninterrupted.rejects
    );
    assert!(got < AFTER / 4, "{got} rejects in {AFTER} commands");

    // It knows its makers' quotes: each replaces its own, so no maker keeps stale quotes.
    for order in restarted.live_orders() {
        let role = (order.account - config.first_account) % 100;
        if role < config.makers {
            let quotes = restarted
                .live_orders()
                .into_iter()
                .filter(|o| o.account == order.account)
                .count();
            assert!(
                quotes <= 2,
                "maker {} has {quotes} live quotes",
                order.account
            );
        }
    }

    // A new flow: not what the original would have sent, nor what a resume elsewhere sends.
    let kinds = |cmds: &[Command]| cmds.iter().map(|c| c.kind.clone()).collect::<Vec<_>>();
    assert_ne!(kinds(&after[..100]), kinds(&carried_on[..100]));
    let mut elsewhere = Simulator::resume(
        config,
        &ins,
        original.now(),
        position + 1,
        Vec::new(),
        Vec::new(),
    );
    let elsewhere: Vec<Command> = (0..100).map(|_| elsewhere.next_command()).collect();
    assert_ne!(kinds(&elsewhere), kinds(&after[..100]));
}

#[test]
fn a_resumed_simulator_starts_from_the_mid_then_the_last_trade() {
    let ins = instruments();
    let btc = &ins[0];
    let fair_of = |prices: LastPrices| {
        let config = SimConfig::default();
        let sim = Simulator::resume(config, &ins, START, 0, Vec::new(), [(btc.id, prices)]);
        sim.fair_price(btc.id).unwrap()
    };
    let step = btc.reference_ticks / 5_000;
    let last = btc.reference_ticks + 300 * step;
    let with_trade = LastPrices {
        last_trade: Some(last),
        bid: Some(last - 50 * step),
        ask: Some(last + 10 * step),
    };
    // The book is current; the last trade may be old.
    assert_eq!(fair_of(with_trade), last - 20 * step);
    let trade_only = LastPrices {
        last_trade: Some(last),
        ..LastPrices::default()
    };
    assert_eq!(fair_of(trade_only), last);
    let mid = btc.reference_ticks - 200 * step;
    let book_only = LastPrices {
        last_trade: None,
        bid: Some(mid - step),
        ask: Some(mid + step),
    };
    assert_eq!(fair_of(book_only), mid);
    let one_sided = LastPrices {
        bid: Some(mid),
        ..LastPrices::default()
    };
    assert_eq!(fair_of(one_sided), mid);
    assert_eq!(fair_of(LastPrices::default()), btc.reference_ticks);
    // Far outside the band: kept inside it, as the walk keeps itself.
    let wild = LastPrices {
        last_trade: Some(btc.band_high * 2),
        ..LastPrices::default()
    };
    assert!(fair_of(wild) < btc.band_high);
}
