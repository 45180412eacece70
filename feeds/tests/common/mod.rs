//! Engine-made event streams for the snapshot tests: a simulated market on the default
//! instruments, with every kind of order event mixed in and time jumps that close candles of
//! every interval and expire the 24h window.

#![allow(dead_code)] // Each test file uses its own part of this.

use rust_decimal::Decimal;
use std::collections::BTreeSet;
use std::str::FromStr;
use ticker_engine::*;
use ticker_feeds::sim::{Rng, SimConfig, Simulator};
use ticker_feeds::MarketData;

/// BTC-USD, ETH-USD and SOL-USD as in `servers/src/defaults.rs`.
pub fn specs() -> Vec<InstrumentSpec> {
    let d = |s: &str| Decimal::from_str(s).unwrap();
    let spec = |symbol: &str, tick, lot, min, max, reference| InstrumentSpec {
        symbol: symbol.into(),
        tick_size: d(tick),
        lot_size: d(lot),
        min_size: d(min),
        max_size: d(max),
        reference_price: d(reference),
        band: d("0.10"),
    };
    vec![
        spec("BTC-USD", "0.01", "0.00001", "0.00001", "100", "65000"),
        spec("ETH-USD", "0.01", "0.0001", "0.0001", "1000", "3200"),
        spec("SOL-USD", "0.001", "0.01", "0.01", "100000", "150"),
    ]
}

pub fn instruments() -> Vec<Instrument> {
    specs()
        .into_iter()
        .enumerate()
        .map(|(i, s)| Instrument::new(i as u32, s).unwrap())
        .collect()
}

/// 2023-11-14T22:13:20Z: timestamps like the wall clock's.
pub const START: Timestamp = 1_700_000_000_000_000_000;
const SECOND: u64 = 1_000_000_000;

/// What the feeds thread does: apply a batch, or tick.
#[derive(Clone)]
pub enum Step {
    Batch(Vec<Event>),
    Tick { seq: u64, ts: Timestamp },
}

pub fn run(md: &mut MarketData, steps: &[Step]) {
    for step in steps {
        match step {
            Step::Batch(events) => md.apply(events),
            Step::Tick { seq, ts } => md.tick(*seq, *ts),
        }
    }
}

pub struct Stream {
    pub steps: Vec<Step>,
    /// Every account a command named.
    pub accounts: BTreeSet<AccountId>,
}

/// Accounts of the targeted commands (the simulator's start at 1,000,000).
const OWN_ACCOUNTS: u64 = 7;

/// `commands` simulator commands on the default instruments with targeted ones mixed in
/// (icebergs, stops, GTD expiries, amends kept and re-queued, cancels, mass cancels, a session
/// closing, halts, rejects), in batches of 1 to 6 commands with a tick now and then, and time
/// jumps of a minute, an hour and a day.
pub fn market_stream(seed: u64, commands: usize) -> Stream {
    let ins = instruments();
    let mut engine = Engine::default();
    let mut rng = Rng::new(seed ^ 0x5EED);
    // A busier, faster-moving market than the default's, so a short stream has every kind
    // of event (fills, sweeps, stops triggered) many times.
    let config = SimConfig {
        seed,
        takes_per_sec: 100,
        volatility_ppm: 2_000,
        ..SimConfig::default()
    };
    let mut sim = Simulator::new(config, &ins, START);
    let mut own = Own::default();
    let mut accounts = BTreeSet::new();
    let mut steps = Vec::new();
    let mut batch = Vec::new();
    let mut in_batch = 0;
    let mut jump = 0;
    let mut ts = START;
    for spec in specs() {
        let kind = CommandKind::AddInstrument(Box::new(spec));
        engine.apply(&Command::new(ts, 0, kind), &mut batch);
    }
    for i in 0..commands {
        if i == commands / 4 {
            jump += 61 * SECOND;
        } else if i == commands / 2 {
            jump += 3_601 * SECOND;
        } else if i == 3 * commands / 4 {
            jump += 25 * 3_600 * SECOND;
        }
        let mut cmd = sim.next_command();
        cmd.ts += jump;
        ts = cmd.ts;
        let mut cmds = vec![cmd];
        if rng.chance(40) {
            cmds.push(Command::new(ts, 0, own.command(&mut rng, &engine, ts)));
        }
        for cmd in cmds {
            accounts.insert(cmd.kind.account());
            engine.apply(&cmd, &mut batch);
            in_batch += 1;
            if in_batch > rng.below(6) {
                steps.push(Step::Batch(std::mem::take(&mut batch)));
                in_batch = 0;
                if rng.chance(50) {
                    let seq = engine.last_seq();
                    steps.push(Step::Tick {
                        seq,
                        ts: ts + SECOND / 10,
                    });
                }
            }
        }
    }
    if !batch.is_empty() {
        steps.push(Step::Batch(batch));
    }
    accounts.remove(&0);
    Stream { steps, accounts }
}

/// The targeted commands' own book of what they placed.
#[derive(Default)]
struct Own {
    next_id: ClientOrderId,
    placed: Vec<(AccountId, ClientOrderId)>,
    halted: Option<InstrumentId>,
    session_open: bool,
}

impl Own {
    fn command(&mut self, rng: &mut Rng, engine: &Engine, ts: Timestamp) -> CommandKind {
        let instrument = rng.below(3) as InstrumentId;
        let book = engine.book(instrument).unwrap();
        let ins = book.instrument();
        let mid = match (book.best_bid(), book.best_ask()) {
            (Some(b), Some(a)) => b + (a - b) / 2,
            _ => ins.reference_ticks,
        };
        let step = (ins.reference_ticks / 2_000).max(1);
        let lots = ins.min_lots * (1 + rng.below(20));
        let account = OWN_ACCOUNTS + rng.below(3);
        self.next_id += 1;
        let client_id = self.next_id;
        let side = if rng.chance(500) {
            Side::Buy
        } else {
            Side::Sell
        };
        let away = |ticks: i64| match side {
            Side::Buy => mid - ticks,
            Side::Sell => mid + ticks,
        };
        let place = |p: Place| CommandKind::Place(Place { client_id, ..p });
        // One of the last few placed: most older ones are long gone.
        let pick = |rng: &mut Rng, placed: &[(AccountId, ClientOrderId)]| {
            let recent = &placed[placed.len().saturating_sub(8)..];
            recent
                .get(rng.below(recent.len().max(1) as u64) as usize)
                .copied()
        };
        match rng.below(12) {
            0 | 1 => {
                self.placed.push((account, client_id));
                place(Place {
                    display: ins.min_lots,
                    ..Place::limit(
                        account,
                        instrument,
                        side,
                        away(rng.range(0, 5) * step),
                        lots * 4,
                    )
                })
            }
            2 => {
                // A stop on the far side of the market, triggered when trades get there.
                let trigger = match side {
                    Side::Buy => mid + rng.range(1, 4) * step,
                    Side::Sell => mid - rng.range(1, 4) * step,
                };
                self.placed.push((account, client_id));
                place(Place {
                    order_type: OrderType::StopMarket,
                    tif: TimeInForce::Ioc,
                    trigger,
                    ..Place::limit(account, instrument, side, 0, lots)
                })
            }
            3 => {
                let trigger = match side {
                    Side::Buy => mid + rng.range(1, 4) * step,
                    Side::Sell => mid - rng.range(1, 4) * step,
                };
                self.placed.push((account, client_id));
                place(Place {
                    order_type: OrderType::StopLimit,
                    trigger,
                    ..Place::limit(account, instrument, side, trigger, lots)
                })
            }
            4 => {
                self.placed.push((account, client_id));
                place(Place {
                    tif: TimeInForce::Gtd,
                    expiry: ts + rng.range(1, 3) as u64 * SECOND,
                    ..Place::limit(
                        account,
                        instrument,
                        side,
                        away(rng.range(1, 10) * step),
                        lots,
                    )
                })
            }
            5 | 6 => match pick(rng, &self.placed) {
                Some((account, id)) => CommandKind::Amend(Amend {
                    account,
                    order: OrderRef::Client(id),
                    price: None,
                    size: Some(ins.min_lots),
                    trigger: None,
                }),
                None => CommandKind::Heartbeat,
            },
            7 => match pick(rng, &self.placed) {
                Some((account, id)) => CommandKind::Amend(Amend {
                    account,
                    order: OrderRef::Client(id),
                    price: Some(away(rng.range(0, 8) * step)),
                    size: Some(lots * 2),
                    trigger: None,
                }),
                None => CommandKind::Heartbeat,
            },
            8 => match pick(rng, &self.placed) {
                Some((account, id)) => CommandKind::Cancel(Cancel {
                    account,
                    order: OrderRef::Client(id),
                }),
                None => CommandKind::Heartbeat,
            },
            9 => {
                if rng.chance(300) {
                    CommandKind::MassCancel(MassCancel {
                        account,
                        instrument: Some(instrument),
                        side: None,
                    })
                } else if self.session_open && rng.chance(200) {
                    self.session_open = false;
                    CommandKind::SessionClosed { session: 5 }
                } else {
                    self.session_open = true;
                    self.placed.push((account, client_id));
                    place(Place {
                        session: 5,
                        ..Place::limit(
                            account,
                            instrument,
                            side,
                            away(rng.range(2, 9) * step),
                            lots,
                        )
                    })
                }
            }
            10 => match self.halted.take() {
                Some(halted) => CommandKind::Resume { instrument: halted },
                None => {
                    self.halted = Some(instrument);
                    CommandKind::Halt { instrument }
                }
            },
            _ => place(Place::limit(
                account,
                instrument,
                side,
                ins.band_high + 1,
                lots,
            )),
        }
    }
}
