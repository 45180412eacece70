//! Criterion benches of single book operations, each on a book of ~10,000 resting orders that
//! the bench keeps steady.
//!
//! Timing each operation on its own would add ~20–40 ns of clock reads to operations that take
//! about as long, so the cheap operations run in batches of [`BATCH`]: the batch's commands are
//! built and its orders placed untimed, the batch is timed as a whole, and whatever it left in
//! the book is removed untimed. The 10-level sweep is timed one order at a time (it costs far
//! more than a clock read), its levels rebuilt untimed before each one.
//!
//! ```sh
//! cargo bench -p ticker-benches --bench book
//! ```

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::{Duration, Instant};
use ticker_benches::rng::SplitMix64;
use ticker_benches::workload::{Workload, WorkloadConfig, INSTRUMENT};
use ticker_engine::{
    Amend, Cancel, Command, CommandKind, Engine, Event, EventKind, OrderId, OrderRef, Place, Side,
    Ticks,
};

/// Operations timed together in the batched benches.
const BATCH: u64 = 1_000;
/// Resting orders in every bench's book.
const BOOK_ORDERS: usize = 10_000;
/// Account of the orders the benches place; the book's orders belong to accounts 1 to 8, so
/// self-trade prevention never fires.
const BENCH_ACCOUNT: u64 = 1_000;
/// Account of the makers the sweep bench rebuilds.
const MAKER_ACCOUNT: u64 = 1_001;
/// Levels the sweep bench's market order takes out, one order of [`SWEEP_LEVEL_LOTS`] each.
const SWEEP_LEVELS: Ticks = 10;
const SWEEP_LEVEL_LOTS: u64 = 5;

/// An engine holding one instrument's book and a counter for correlation ids.
struct Fixture {
    engine: Engine,
    mid: Ticks,
    events: Vec<Event>,
    next_corr: u64,
    next_client_id: u64,
    rng: SplitMix64,
}

impl Fixture {
    /// A book of [`BOOK_ORDERS`] orders resting `min_distance..=min_distance + 49` ticks from
    /// the mid on both sides.
    fn new(min_distance: Ticks) -> Self {
        let workload = Workload::generate(&WorkloadConfig {
            warmup_orders: BOOK_ORDERS,
            ops: 0,
            min_distance,
            max_distance: min_distance + 49,
            ..WorkloadConfig::default()
        });
        Fixture {
            engine: workload.prepared_engine(),
            mid: workload.config.mid,
            events: Vec::with_capacity(64 * BATCH as usize),
            next_corr: workload.last_corr() + 1,
            // Above every client id the workload used.
            next_client_id: 1 << 40,
            rng: SplitMix64::new(0xB00C),
        }
    }

    fn command(&mut self, kind: CommandKind) -> Command {
        let corr = self.next_corr;
        self.next_corr += 1;
        Command::new(corr, corr, kind)
    }

    /// A resting limit order of the bench account 1 to 49 ticks from the mid, with a fresh
    /// client id.
    fn resting_limit(&mut self, size: u64) -> Command {
        let side = if self.rng.next_u64() & 1 == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let distance = self.rng.between(1, 49) as Ticks;
        let price = match side {
            Side::Buy => self.mid - distance,
            Side::Sell => self.mid + distance,
        };
        self.next_client_id += 1;
        let place = Place {
            client_id: self.next_client_id,
            ..Place::limit(BENCH_ACCOUNT, INSTRUMENT, side, price, size)
        };
        self.command(CommandKind::Place(place))
    }

    /// Applies `commands` untimed and returns the ids of the orders they placed.
    fn apply_all(&mut self, commands: &[Command]) -> Vec<OrderId> {
        let mut ids = Vec::with_capacity(commands.len());
        for cmd in commands {
            self.events.clear();
            self.engine.apply(cmd, &mut self.events);
            ids.extend(self.events.iter().filter_map(|e| match e.kind {
                EventKind::PlaceAccepted { order, .. } => Some(order.order_id),
                _ => None,
            }));
        }
        self.events.clear();
        ids
    }

    /// Applies `commands` and returns how long they took, clearing the event buffer per
    /// command as an embedder would.
    fn time_all(&mut self, commands: &[Command]) -> Duration {
        let start = Instant::now();
        for cmd in commands {
            self.engine.apply(black_box(cmd), &mut self.events);
            self.events.clear();
        }
        start.elapsed()
    }

    fn cancels(&mut self, ids: &[OrderId]) -> Vec<Command> {
        ids.iter()
            .map(|&id| {
                self.command(CommandKind::Cancel(Cancel {
                    account: BENCH_ACCOUNT,
                    order: OrderRef::Id(id),
                }))
            })
            .collect()
    }

    /// Runs `iters` operations in batches: `prepare` builds (and may apply, untimed) a batch of
    /// `n` timed commands, which run timed, then `clean_up` is applied untimed with the ids
    /// the prepared orders got.
    fn batched(
        &mut self,
        iters: u64,
        mut prepare: impl FnMut(&mut Fixture, usize) -> (Vec<OrderId>, Vec<Command>),
        mut clean_up: impl FnMut(&mut Fixture, &[OrderId], &[Command]) -> Vec<Command>,
    ) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(BATCH);
            left -= n;
            let (ids, timed) = prepare(self, n as usize);
            total += self.time_all(&timed);
            let after = clean_up(self, &ids, &timed);
            self.apply_all(&after);
        }
        total
    }
}

fn place_resting_limit(c: &mut Criterion) {
    let mut f = Fixture::new(1);
    c.bench_function("place_resting_limit_10k_book", |b| {
        b.iter_custom(|iters| {
            f.batched(
                iters,
                |f, n| (Vec::new(), (0..n).map(|_| f.resting_limit(5)).collect()),
                |f, _, placed| {
                    placed
                        .iter()
                        .map(|cmd| {
                            let CommandKind::Place(p) = cmd.kind else {
                                unreachable!("the batch holds places only")
                            };
                            f.command(CommandKind::Cancel(Cancel {
                                account: BENCH_ACCOUNT,
                                order: OrderRef::Client(p.client_id),
                            }))
                        })
                        .collect()
                },
            )
        })
    });
}

fn cancel(c: &mut Criterion) {
    let mut f = Fixture::new(1);
    let mut group = c.benchmark_group("cancel_resting_10k_book");
    for by_client_id in [false, true] {
        let name = if by_client_id {
            "by_client_id"
        } else {
            "by_order_id"
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                f.batched(
                    iters,
                    |f, n| {
                        let places: Vec<Command> = (0..n).map(|_| f.resting_limit(5)).collect();
                        let ids = f.apply_all(&places);
                        let cancels = if by_client_id {
                            places
                                .iter()
                                .map(|cmd| {
                                    let CommandKind::Place(p) = cmd.kind else {
                                        unreachable!("places only")
                                    };
                                    f.command(CommandKind::Cancel(Cancel {
                                        account: BENCH_ACCOUNT,
                                        order: OrderRef::Client(p.client_id),
                                    }))
                                })
                                .collect()
                        } else {
                            f.cancels(&ids)
                        };
                        (ids, cancels)
                    },
                    |_, _, _| Vec::new(),
                )
            })
        });
    }
    group.finish();
}

fn amend(c: &mut Criterion) {
    let mut f = Fixture::new(1);
    let mut group = c.benchmark_group("amend_resting_10k_book");
    for price_change in [false, true] {
        let name = if price_change {
            "price_one_tick_away_requeues"
        } else {
            "size_decrease_keeps_priority"
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                f.batched(
                    iters,
                    |f, n| {
                        let places: Vec<Command> = (0..n).map(|_| f.resting_limit(10)).collect();
                        let ids = f.apply_all(&places);
                        let amends = places
                            .iter()
                            .zip(&ids)
                            .map(|(cmd, &id)| {
                                let CommandKind::Place(p) = cmd.kind else {
                                    unreachable!("places only")
                                };
                                // One tick further from the mid: never crosses.
                                let away = match p.side {
                                    Side::Buy => p.price - 1,
                                    Side::Sell => p.price + 1,
                                };
                                f.command(CommandKind::Amend(Amend {
                                    account: BENCH_ACCOUNT,
                                    order: OrderRef::Id(id),
                                    price: price_change.then_some(away),
                                    size: (!price_change).then_some(5),
                                    trigger: None,
                                }))
                            })
                            .collect();
                        (ids, amends)
                    },
                    |f, ids, _| f.cancels(ids),
                )
            })
        });
    }
    group.finish();
}

fn market_sweep(c: &mut Criterion) {
    // The book rests 11 ticks or more from the mid, so the rebuilt levels at 1 to 10 ticks
    // are the best ten asks.
    let mut f = Fixture::new(SWEEP_LEVELS + 1);
    c.bench_function("market_buy_sweeping_10_levels_10k_book", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let makers: Vec<Command> = (1..=SWEEP_LEVELS)
                    .map(|d| {
                        let ask = Place::limit(
                            MAKER_ACCOUNT,
                            INSTRUMENT,
                            Side::Sell,
                            f.mid + d,
                            SWEEP_LEVEL_LOTS,
                        );
                        f.command(CommandKind::Place(ask))
                    })
                    .collect();
                f.apply_all(&makers);
                let size = SWEEP_LEVELS as u64 * SWEEP_LEVEL_LOTS;
                let taker = f.command(CommandKind::Place(Place::market(
                    BENCH_ACCOUNT,
                    INSTRUMENT,
                    Side::Buy,
                    size,
                )));
                total += f.time_all(std::slice::from_ref(&taker));
            }
            total
        })
    });
}

/// Checks once, before measuring, that each bench does what its name says.
fn check_fixtures() {
    let mut f = Fixture::new(SWEEP_LEVELS + 1);
    let before = f.engine.live_order_count();
    let makers: Vec<Command> = (1..=SWEEP_LEVELS)
        .map(|d| {
            let ask = Place::limit(MAKER_ACCOUNT, INSTRUMENT, Side::Sell, f.mid + d, 5);
            f.command(CommandKind::Place(ask))
        })
        .collect();
    f.apply_all(&makers);
    let taker = f.command(CommandKind::Place(Place::market(
        BENCH_ACCOUNT,
        INSTRUMENT,
        Side::Buy,
        SWEEP_LEVELS as u64 * SWEEP_LEVEL_LOTS,
    )));
    f.engine.apply(&taker, &mut f.events);
    let trades = f
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Trade { .. }))
        .count();
    assert_eq!(
        trades, SWEEP_LEVELS as usize,
        "the sweep takes one order per level"
    );
    assert_eq!(
        f.engine.live_order_count(),
        before,
        "the sweep leaves the book as it was"
    );
    f.events.clear();

    let mut f = Fixture::new(1);
    let before = f.engine.live_order_count();
    let places: Vec<Command> = (0..100).map(|_| f.resting_limit(10)).collect();
    let ids = f.apply_all(&places);
    assert_eq!(ids.len(), 100, "every bench limit order is accepted");
    assert_eq!(f.engine.live_order_count(), before + 100, "and rests");
    let cancels = f.cancels(&ids);
    f.apply_all(&cancels);
    assert_eq!(
        f.engine.live_order_count(),
        before,
        "cancels restore the book"
    );
}

fn config() -> Criterion {
    check_fixtures();
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = book;
    config = config();
    targets = place_resting_limit, cancel, amend, market_sweep
}
criterion_main!(book);
