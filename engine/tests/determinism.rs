//! Determinism: the same commands give the same events, byte for byte (`codec::encode_event`).
//!
//! A seeded stream of 100,000 random commands of every kind is applied to two fresh engines
//! and their encoded events are compared command by command. The engine's layout choices (how
//! wide the dense price ladder is) must not show in its output either. Spread over 1, 2 and 4
//! shards, the same stream gives every instrument the same events (order ids named by the
//! place that made them, trade ids left out: those are the shard's), and two runs on the same
//! number of shards give each shard the same bytes.

mod shard_set;
mod streams;

use rust_decimal::Decimal;
use shard_set::{Observed, ShardSet};
use ticker_engine::codec::encode_event;
use ticker_engine::*;

/// SplitMix64: a tiny, well-mixed deterministic generator (Steele, Lea and Flood, 2014).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

const INSTRUMENTS: u32 = 3;

fn spec(k: u32) -> InstrumentSpec {
    InstrumentSpec {
        symbol: format!("D{k}"),
        tick_size: Decimal::new(1, 2),
        lot_size: Decimal::ONE,
        min_size: Decimal::ONE,
        max_size: Decimal::new(500, 0),
        reference_price: Decimal::new(100, 0), // 10,000 ticks
        band: Decimal::new(5, 2),              // 9,500..=10,500
    }
}

/// Generates commands of every kind; cancels and amends name orders seen accepted.
struct Stream {
    rng: SplitMix64,
    ts: Timestamp,
    corr: Correlation,
    /// Recently accepted orders, named by the correlation id of their place (engines and shard
    /// sets map the name to their own id: `ShardSet::resolve`), and their accounts.
    recent: Vec<(Correlation, AccountId)>,
}

impl Stream {
    fn new(seed: u64) -> Self {
        Stream {
            rng: SplitMix64(seed),
            ts: 1_000_000,
            corr: 0,
            recent: Vec::new(),
        }
    }

    fn price(&mut self) -> Ticks {
        let r = &mut self.rng;
        match r.below(50) {
            0 => r.range(9_000, 11_000), // often outside the band
            1 => 0,
            _ => r.range(9_980, 10_020),
        }
    }

    fn account(&mut self) -> AccountId {
        if self.rng.chance(1) {
            0
        } else {
            1 + self.rng.below(6)
        }
    }

    /// An order to cancel or amend, and the account asking (usually its owner).
    fn order_ref(&mut self) -> (AccountId, OrderRef) {
        let account = self.account();
        if !self.recent.is_empty() && self.rng.chance(85) {
            let (id, owner) = self.recent[self.rng.below(self.recent.len() as u64) as usize];
            let account = if self.rng.chance(95) { owner } else { account };
            (account, OrderRef::Id(OrderId(id)))
        } else {
            (account, OrderRef::Client(self.rng.below(20)))
        }
    }

    fn place(&mut self) -> Place {
        let account = self.account();
        let price = self.price();
        let trigger = self.price();
        let r = &mut self.rng;
        let instrument = if r.chance(2) {
            INSTRUMENTS
        } else {
            r.below(INSTRUMENTS as u64) as u32
        };
        let order_type = r.pick(&[
            OrderType::Limit,
            OrderType::Limit,
            OrderType::Limit,
            OrderType::Limit,
            OrderType::Market,
            OrderType::StopMarket,
            OrderType::StopLimit,
        ]);
        let tif = match order_type {
            OrderType::Market | OrderType::StopMarket if r.chance(95) => {
                r.pick(&[TimeInForce::Ioc, TimeInForce::Fok])
            }
            _ => r.pick(&[
                TimeInForce::Gtc,
                TimeInForce::Gtc,
                TimeInForce::Gtc,
                TimeInForce::Ioc,
                TimeInForce::Fok,
                TimeInForce::Gtd,
            ]),
        };
        Place {
            account,
            session: r.below(5),
            // A client id is only ever used on instruments of one residue mod 4, so it is never
            // live on two shards of 1, 2 or 4 (where shards differ by design).
            client_id: if r.chance(30) {
                4 * r.below(5) + u64::from(instrument % 4)
            } else {
                0
            },
            instrument,
            side: r.pick(&[Side::Buy, Side::Sell]),
            order_type,
            price,
            trigger,
            size: if r.chance(2) { 0 } else { 1 + r.below(30) },
            tif,
            expiry: self.ts + r.below(200),
            post_only: order_type == OrderType::Limit && r.chance(10),
            display: if order_type == OrderType::Limit && r.chance(15) {
                r.below(10)
            } else {
                0
            },
            stp: r.pick(&[
                SelfTradePrevention::CancelTaker,
                SelfTradePrevention::CancelMaker,
                SelfTradePrevention::CancelBoth,
                SelfTradePrevention::DecrementAndCancel,
            ]),
        }
    }

    fn next_command(&mut self) -> Command {
        self.ts += self.rng.below(4);
        self.corr += 1;
        let kind = match self.rng.below(1000) {
            0..=599 => CommandKind::Place(self.place()),
            600..=749 => {
                let (account, order) = self.order_ref();
                CommandKind::Cancel(Cancel { account, order })
            }
            750..=899 => {
                let (account, order) = self.order_ref();
                let price = self.rng.chance(50).then(|| self.price());
                let size = self.rng.chance(60).then(|| self.rng.below(30));
                let trigger = self.rng.chance(20).then(|| self.price());
                CommandKind::Amend(Amend {
                    account,
                    order,
                    price,
                    size,
                    trigger,
                })
            }
            900..=914 => CommandKind::MassCancel(MassCancel {
                account: self.account(),
                instrument: self
                    .rng
                    .chance(50)
                    .then(|| self.rng.below(INSTRUMENTS as u64) as u32),
                side: self
                    .rng
                    .chance(50)
                    .then(|| self.rng.pick(&[Side::Buy, Side::Sell])),
            }),
            915..=929 => CommandKind::SessionClosed {
                session: self.rng.below(5),
            },
            930..=932 => CommandKind::Halt {
                instrument: self.rng.below(INSTRUMENTS as u64) as u32,
            },
            933..=962 => CommandKind::Resume {
                instrument: self.rng.below(INSTRUMENTS as u64) as u32,
            },
            _ => CommandKind::Heartbeat,
        };
        Command {
            deadline: 0,
            ts: self.ts,
            corr: self.corr,
            kind,
        }
    }

    /// Remembers the orders a command put in the book or armed (`observed` names them).
    fn observe(&mut self, observed: &Observed) {
        for kind in observed.instruments.values().flatten() {
            if let EventKind::OrderRested {
                order_id, account, ..
            }
            | EventKind::StopArmed {
                order_id, account, ..
            } = *kind
            {
                if self.recent.len() == 256 {
                    self.recent.remove(0);
                }
                self.recent.push((order_id.0, account));
            }
        }
    }
}

fn encode(events: &[Event]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for e in events {
        encode_event(e, &mut bytes);
    }
    bytes
}

/// What a run produced, to check the stream exercised the engine.
#[derive(Debug, Default)]
struct Tally {
    events: u64,
    trades: u64,
    rejects: u64,
    expirations: u64,
    stops_triggered: u64,
}

impl Tally {
    fn count(&mut self, observed: &Observed) {
        if let Some(reply) = &observed.reply {
            self.events += 1;
            if let EventKind::Rejected { .. } = reply {
                self.rejects += 1;
            }
        }
        for kind in observed.instruments.values().flatten() {
            self.events += 1;
            match kind {
                EventKind::Trade { .. } => self.trades += 1,
                EventKind::StopTriggered { .. } => self.stops_triggered += 1,
                EventKind::OrderDone {
                    reason: DoneReason::Expired,
                    ..
                } => self.expirations += 1,
                _ => {}
            }
        }
        self.events += observed.global.len() as u64;
    }
}

/// Applies `commands` random commands after adding the instruments to every set and asserts
/// after each command that every set did the same with it and that sets of as many shards
/// gave each shard the same bytes. With `beats`, every command follows a heartbeat at its
/// time to every shard, as the server's clock does, so GTD orders expire at the same point of
/// each instrument's stream however the instruments are spread.
fn run_identically(seed: u64, commands: usize, mut sets: Vec<ShardSet>, beats: bool) -> Tally {
    let mut stream = Stream::new(seed);
    let mut tally = Tally::default();
    let apply = |sets: &mut Vec<ShardSet>, cmd: &Command, n: usize| -> Observed {
        let before: Vec<Vec<usize>> = sets
            .iter()
            .map(|s| s.streams.iter().map(Vec::len).collect())
            .collect();
        let observed: Vec<Observed> = sets.iter_mut().map(|s| s.apply(&s.resolve(cmd))).collect();
        for (k, o) in observed.iter().enumerate().skip(1) {
            assert!(
                observed[0] == *o,
                "command {n} ({cmd:?}) on {} shard(s) and on {}:\n{:#?}\nvs\n{o:#?}",
                sets[0].count(),
                sets[k].count(),
                observed[0]
            );
        }
        // What each shard of each set was given by this command, as bytes.
        let new: Vec<Vec<Vec<u8>>> = sets
            .iter()
            .zip(&before)
            .map(|(set, before)| {
                set.streams
                    .iter()
                    .zip(before)
                    .map(|(stream, &from)| encode(&stream[from..]))
                    .collect()
            })
            .collect();
        for (a, b) in (0..sets.len()).flat_map(|a| (a + 1..sets.len()).map(move |b| (a, b))) {
            if sets[a].count() == sets[b].count() {
                assert!(
                    new[a] == new[b],
                    "command {n} ({cmd:?}) gave the shards of two {}-shard sets different bytes",
                    sets[a].count()
                );
            }
        }
        observed.into_iter().next().expect("at least one set")
    };
    for k in 0..INSTRUMENTS {
        let add = Command::new(0, 0, CommandKind::AddInstrument(Box::new(spec(k))));
        apply(&mut sets, &add, 0);
    }
    for n in 0..commands {
        let cmd = stream.next_command();
        if beats {
            let expired = apply(
                &mut sets,
                &Command::new(cmd.ts, 0, CommandKind::Heartbeat),
                n,
            );
            tally.count(&expired);
        }
        let observed = apply(&mut sets, &cmd, n);
        stream.observe(&observed);
        tally.count(&observed);
    }
    for set in &sets {
        set.check_trade_ids();
    }
    tally
}

fn assert_rich(tally: &Tally) {
    assert!(
        tally.events > 150_000
            && tally.trades > 8_000
            && tally.rejects > 10_000
            && tally.expirations > 800
            && tally.stops_triggered > 1_500,
        "the stream should exercise matching, rejects, expiry and stops: {tally:?}"
    );
}

#[test]
fn same_commands_give_byte_identical_events() {
    let config = EngineConfig::default();
    let tally = run_identically(
        0x5EED_71C4_E7D0_0001,
        100_000,
        vec![ShardSet::new(&config, 1), ShardSet::new(&config, 1)],
        false,
    );
    assert_rich(&tally);
}

#[test]
fn events_do_not_depend_on_the_width_of_the_price_ladder() {
    // A ladder of 8 ticks puts most prices in the ordered map beyond it.
    let narrow = EngineConfig {
        ladder_ticks: 8,
        ..EngineConfig::default()
    };
    let tally = run_identically(
        0x5EED_71C4_E7D0_0002,
        100_000,
        vec![
            ShardSet::new(&EngineConfig::default(), 1),
            ShardSet::new(&narrow, 1),
        ],
        false,
    );
    assert_rich(&tally);
}

#[test]
fn one_two_and_four_shards_give_every_instrument_the_same_events() {
    let config = EngineConfig::default();
    let sets = [1, 2, 4, 4]
        .map(|count| ShardSet::new(&config, count))
        .into();
    let tally = run_identically(0x5EED_71C4_E7D0_0003, 100_000, sets, true);
    assert_rich(&tally);
}
