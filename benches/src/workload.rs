//! The engine workload: a seeded command stream, generated in full before anything is timed so
//! that generation costs nothing inside a measurement.
//!
//! The stream has three parts:
//! 1. `setup` adds the instruments;
//! 2. `warmup` rests [`WorkloadConfig::warmup_orders`] limit orders around a fixed mid;
//! 3. `ops`, the measured part, mixes limit orders (1–50 ticks from the mid on a random side,
//!    so they rest and never cross), cancels of a random earlier limit order (which may have
//!    filled or been cancelled already, and is then rejected as unknown) and market orders that
//!    take liquidity from the top of the book.
//!
//! [`Mix`] names the shapes `ticker-bench engine --mix` measures: the issue-3 stream above on one
//! instrument, a deep book, and many instruments chosen by a Zipf law.
//!
//! Cancels name their order by client order id ([`OrderRef::Client`]): engine order ids are
//! only known once the engine has accepted the order, while client ids are chosen here, so the
//! whole stream is fixed in advance. Every limit order gets a client id unique in the stream.

use crate::rng::SplitMix64;
use rust_decimal::Decimal;
use ticker_engine::shard::{route, Route, Shard};
use ticker_engine::{
    AccountId, Cancel, Command, CommandKind, Engine, EngineConfig, InstrumentId, InstrumentLimits,
    InstrumentSpec, Limits, Lots, OrderRef, Place, Side, Ticks,
};

/// Measured operations in a default run.
pub const DEFAULT_OPS: usize = 1_000_000;
/// Seed of a default run.
pub const DEFAULT_SEED: u64 = 42;
/// Resting limit orders placed before the measured operations in a default run.
pub const DEFAULT_WARMUP_ORDERS: usize = 10_000;

/// The instrument a single-instrument stream trades (the first one added to a fresh engine).
pub const INSTRUMENT: InstrumentId = 0;

/// The named operation mixes of `ticker-bench engine --mix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// The issue-3 stream (the default [`WorkloadConfig`]): one instrument, limits 1–50 ticks
    /// from mid of 1–10 lots, market orders of 1–20 lots; 50% limits, 35% cancels, 15% markets.
    Issue3,
    /// A deep book: limits 1–500 ticks from mid of 1–100 lots, market orders sweeping up to
    /// 2,000 lots. 50% limits, 48% cancels, 2% markets, so makers add more size than takers
    /// remove (as in issue3) and the book stays deep instead of being swept bare.
    Deep,
    /// Many instruments: the issue-3 shape on 1,000 instruments, each order's instrument drawn
    /// by a Zipf law (exponent 1: the k-th instrument is k times less busy than the first).
    Many,
}

impl Mix {
    /// Every mix, in the order `--mix all` measures them.
    pub const ALL: [Mix; 3] = [Mix::Issue3, Mix::Deep, Mix::Many];

    pub fn name(self) -> &'static str {
        match self {
            Mix::Issue3 => "issue3",
            Mix::Deep => "deep",
            Mix::Many => "many",
        }
    }

    /// The mix's workload with the given seed and sizes.
    pub fn config(self, seed: u64, ops: usize, warmup_orders: usize) -> WorkloadConfig {
        let base = WorkloadConfig {
            seed,
            ops,
            warmup_orders,
            ..WorkloadConfig::default()
        };
        match self {
            Mix::Issue3 => base,
            Mix::Deep => WorkloadConfig {
                max_distance: 500,
                max_limit_lots: 100,
                max_market_lots: 2_000,
                cancel_percent: 48,
                ..base
            },
            Mix::Many => WorkloadConfig {
                instruments: 1_000,
                ..base
            },
        }
    }
}

/// Shape of the workload. Every field has a documented default ([`WorkloadConfig::default`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadConfig {
    /// Seed of the generator; the same seed gives the same stream. Default [`DEFAULT_SEED`].
    pub seed: u64,
    /// Resting limit orders placed before the measured operations. Default
    /// [`DEFAULT_WARMUP_ORDERS`].
    pub warmup_orders: usize,
    /// Measured operations. Default [`DEFAULT_OPS`].
    pub ops: usize,
    /// Accounts trading, ids `1..=accounts`, all with self-trade prevention `CancelTaker`.
    /// Default 8.
    pub accounts: AccountId,
    /// Fixed mid price in ticks of 0.01; also the instrument's reference price. Default
    /// 5,000,000 (50,000.00).
    pub mid: Ticks,
    /// Limit orders rest `min_distance..=max_distance` ticks from the mid. Default 1.
    pub min_distance: Ticks,
    /// See `min_distance`. Default 50.
    pub max_distance: Ticks,
    /// Limit orders are `1..=max_limit_lots` lots. Default 10.
    pub max_limit_lots: Lots,
    /// Market orders are `1..=max_market_lots` lots. Default 20.
    pub max_market_lots: Lots,
    /// Percent of operations that place a limit order. Default 50.
    pub limit_percent: u64,
    /// Percent of operations that cancel an earlier limit order. Default 35. The rest
    /// (default 15%) are market orders.
    pub cancel_percent: u64,
    /// Instruments traded, ids `0..instruments`, all with the same spec around `mid`. With more
    /// than one, each order's instrument is drawn by a Zipf law of exponent 1. Default 1.
    pub instruments: u32,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            seed: DEFAULT_SEED,
            warmup_orders: DEFAULT_WARMUP_ORDERS,
            ops: DEFAULT_OPS,
            accounts: 8,
            mid: 5_000_000,
            min_distance: 1,
            max_distance: 50,
            max_limit_lots: 10,
            max_market_lots: 20,
            limit_percent: 50,
            cancel_percent: 35,
            instruments: 1,
        }
    }
}

impl WorkloadConfig {
    /// One line describing the operation mix, for reports.
    pub fn describe(&self) -> String {
        let instruments = if self.instruments == 1 {
            "1 instrument".to_string()
        } else {
            format!("{} instruments by Zipf(1)", self.instruments)
        };
        format!(
            "{} resting limits, then {} ops: {}% limit {}-{} ticks from mid size 1-{}, {}% \
             cancel of a random earlier limit by client id, {}% market size 1-{}; {}, {} \
             accounts, STP cancel-taker, seed {}",
            self.warmup_orders,
            self.ops,
            self.limit_percent,
            self.min_distance,
            self.max_distance,
            self.max_limit_lots,
            self.cancel_percent,
            100 - self.limit_percent - self.cancel_percent,
            self.max_market_lots,
            instruments,
            self.accounts,
            self.seed,
        )
    }
}

/// The instrument the workload trades: tick 0.01, lot 0.0001, sizes 0.0001 to 100, a ±10% band
/// around `mid` ticks.
pub fn instrument_spec(mid: Ticks) -> InstrumentSpec {
    instrument_spec_named("BENCH-USD".into(), mid)
}

/// The `id`-th instrument of a stream: [`instrument_spec`], named `BENCH-USD` for the first and
/// `BENCH<id>-USD` for the others.
pub fn instrument_spec_of(id: InstrumentId, mid: Ticks) -> InstrumentSpec {
    match id {
        0 => instrument_spec(mid),
        _ => instrument_spec_named(format!("BENCH{id}-USD"), mid),
    }
}

fn instrument_spec_named(symbol: String, mid: Ticks) -> InstrumentSpec {
    let tick_size = Decimal::new(1, 2);
    InstrumentSpec {
        symbol,
        tick_size,
        lot_size: Decimal::new(1, 4),
        min_size: Decimal::new(1, 4),
        max_size: Decimal::new(100, 0),
        reference_price: Decimal::from(mid) * tick_size,
        band: Decimal::new(1, 1),
    }
}

/// A generated command stream. Commands carry `corr` = `ts` = their 1-based position in the
/// whole stream (setup, warmup, ops); the engine never reads a clock, so `ts` only has to grow.
#[derive(Clone, Debug)]
pub struct Workload {
    pub config: WorkloadConfig,
    /// Adds the instrument.
    pub setup: Vec<Command>,
    /// Applied after `setup`: risk commands ([`Workload::generous_limits`]), or none.
    pub risk: Vec<Command>,
    /// Resting limit orders placed before timing.
    pub warmup: Vec<Command>,
    /// The measured operations.
    pub ops: Vec<Command>,
}

impl Workload {
    pub fn generate(config: &WorkloadConfig) -> Self {
        assert!(
            1 <= config.min_distance && config.min_distance <= config.max_distance,
            "limit distances {}..={} ticks must be non-empty and start at 1 or more",
            config.min_distance,
            config.max_distance
        );
        assert!(
            config.limit_percent + config.cancel_percent <= 100,
            "limit_percent {} + cancel_percent {} exceed 100",
            config.limit_percent,
            config.cancel_percent
        );
        assert!(config.instruments >= 1, "a stream needs an instrument");
        let mut g = Generator {
            config,
            rng: SplitMix64::new(config.seed),
            next_corr: 1,
            limit_accounts: Vec::with_capacity(config.warmup_orders + config.ops),
            zipf: Zipf::new(config.instruments),
        };
        let setup = (0..config.instruments)
            .map(|id| {
                let spec = instrument_spec_of(id, config.mid);
                g.command(CommandKind::AddInstrument(Box::new(spec)))
            })
            .collect();
        let warmup = (0..config.warmup_orders).map(|_| g.limit()).collect();
        let ops = (0..config.ops)
            .map(|_| {
                let roll = g.rng.below(100);
                if roll < config.limit_percent {
                    g.limit()
                } else if roll < config.limit_percent + config.cancel_percent {
                    g.cancel()
                } else {
                    g.market()
                }
            })
            .collect();
        Workload {
            config: config.clone(),
            setup,
            risk: Vec::new(),
            warmup,
            ops,
        }
    }

    /// `SetLimits` for every account with every limit set but none reachable: the engine
    /// tracks positions and checks each limit on every order, and rejects nothing.
    pub fn generous_limits(&self) -> Vec<Command> {
        let generous = InstrumentLimits {
            max_order_lots: Some(Lots::MAX),
            max_order_notional: Some(u128::MAX),
            max_long_lots: Some(Lots::MAX),
            max_short_lots: Some(Lots::MAX),
        };
        (1..=self.config.accounts)
            .map(|account| {
                let limits = Limits {
                    max_open_orders: Some(u32::MAX),
                    max_orders_per_sec: Some(u32::MAX),
                    instruments: (0..self.config.instruments)
                        .map(|i| (i, generous))
                        .collect(),
                };
                let kind = CommandKind::SetLimits {
                    account,
                    limits: Some(Box::new(limits)),
                };
                // Correlation 0: outside the stream's `1..=last_corr`. Time 0: the stream's
                // timestamps start at 1.
                Command::new(0, 0, kind)
            })
            .collect()
    }

    /// A fresh engine sized for the workload, with `setup`, `risk` and `warmup` applied.
    pub fn prepared_engine(&self) -> Engine {
        self.prepared_engine_with(&self.risk)
    }

    /// A fresh engine sized for the workload, with `setup`, then `risk` (instead of the
    /// workload's own), then `warmup` applied.
    pub fn prepared_engine_with(&self, risk: &[Command]) -> Engine {
        let mut engine = Engine::new(self.engine_config());
        let mut events = Vec::new();
        for cmd in self.setup.iter().chain(risk).chain(&self.warmup) {
            engine.apply(cmd, &mut events);
            events.clear();
        }
        engine
    }

    /// `count` fresh shard engines, each sized as [`Workload::engine_config`] says, with
    /// `setup`, `risk` and `warmup` applied to the shards they are routed to.
    pub fn prepared_shards(&self, count: usize) -> anyhow::Result<Vec<Engine>> {
        let mut engines: Vec<Engine> = Shard::all(count)?
            .into_iter()
            .map(|shard| {
                Engine::new(EngineConfig {
                    shard,
                    ..self.engine_config()
                })
            })
            .collect();
        let mut events = Vec::new();
        for cmd in self.setup.iter().chain(&self.risk).chain(&self.warmup) {
            match route(count, &cmd.kind) {
                Route::One(shard) => engines[shard].apply(cmd, &mut events),
                Route::All => engines.iter_mut().for_each(|e| e.apply(cmd, &mut events)),
            }
            events.clear();
        }
        Ok(engines)
    }

    /// The default engine configuration with an order pool large enough for every limit order
    /// of the stream to rest at once and a client-id index sized for all of them too, both
    /// touched at start-up so no command pays a page fault.
    ///
    /// The index reserves two buffers of 8-byte entries at most half full for that capacity
    /// (16 MiB for the 510,000 limit orders of a default run, of which ~170,000 rest at the
    /// peak); its table starts small and grows within them, so only the live ids' share of
    /// it is hot.
    pub fn engine_config(&self) -> EngineConfig {
        let defaults = EngineConfig::default();
        let orders = self.config.warmup_orders + self.config.ops + 1;
        let limit_orders = self.warmup.len()
            + self
                .ops
                .iter()
                .filter(|c| matches!(&c.kind, CommandKind::Place(p) if p.client_id != 0))
                .count();
        EngineConfig {
            order_capacity: defaults.order_capacity.max(orders),
            index_capacity: defaults.index_capacity.max(limit_orders),
            max_instruments: defaults
                .max_instruments
                .max(self.config.instruments as usize),
            prefault: true,
            ..defaults
        }
    }

    /// Correlation id of the last command of the stream (ids run `1..=last_corr`).
    pub fn last_corr(&self) -> u64 {
        (self.setup.len() + self.warmup.len() + self.ops.len()) as u64
    }
}

struct Generator<'a> {
    config: &'a WorkloadConfig,
    rng: SplitMix64,
    next_corr: u64,
    /// Account of each limit order so far; limit `i` has client id `i + 1`.
    limit_accounts: Vec<AccountId>,
    zipf: Zipf,
}

impl Generator<'_> {
    fn command(&mut self, kind: CommandKind) -> Command {
        let corr = self.next_corr;
        self.next_corr += 1;
        Command::new(corr, corr, kind)
    }

    fn account(&mut self) -> AccountId {
        self.rng.between(1, self.config.accounts)
    }

    fn instrument(&mut self) -> InstrumentId {
        self.zipf.sample(&mut self.rng)
    }

    fn side(&mut self) -> Side {
        if self.rng.next_u64() & 1 == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    fn limit(&mut self) -> Command {
        let account = self.account();
        let instrument = self.instrument();
        let side = self.side();
        let distance = self.rng.between(
            self.config.min_distance as u64,
            self.config.max_distance as u64,
        ) as Ticks;
        let price = match side {
            Side::Buy => self.config.mid - distance,
            Side::Sell => self.config.mid + distance,
        };
        let size = self.rng.between(1, self.config.max_limit_lots);
        self.limit_accounts.push(account);
        let place = Place {
            client_id: self.limit_accounts.len() as u64,
            ..Place::limit(account, instrument, side, price, size)
        };
        self.command(CommandKind::Place(place))
    }

    /// Cancels a uniformly chosen earlier limit order. Before any limit order exists it names
    /// client id 1 of account 1, which the engine rejects as unknown.
    fn cancel(&mut self) -> Command {
        let placed = self.limit_accounts.len() as u64;
        let (account, client_id) = if placed == 0 {
            (1, 1)
        } else {
            let i = self.rng.below(placed);
            (self.limit_accounts[i as usize], i + 1)
        };
        self.command(CommandKind::Cancel(Cancel {
            account,
            order: OrderRef::Client(client_id),
        }))
    }

    fn market(&mut self) -> Command {
        let account = self.account();
        let instrument = self.instrument();
        let side = self.side();
        let size = self.rng.between(1, self.config.max_market_lots);
        self.command(CommandKind::Place(Place::market(
            account, instrument, side, size,
        )))
    }
}

/// Draws instrument ids `0..n` by a Zipf law of exponent 1: id `k` with probability
/// proportional to `1 / (k + 1)`. With one instrument it draws nothing from the generator, so
/// a single-instrument stream is the same as before instruments could be many.
struct Zipf {
    /// `cdf[k]`: probability of an id `<= k`, the last one exactly 1.
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: u32) -> Self {
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / f64::from(k)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut SplitMix64) -> InstrumentId {
        if self.cdf.len() <= 1 {
            return 0;
        }
        // 53 random bits: a uniform double in [0, 1).
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|&c| c <= u) as InstrumentId
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> WorkloadConfig {
        WorkloadConfig {
            warmup_orders: 100,
            ops: 10_000,
            ..WorkloadConfig::default()
        }
    }

    #[test]
    fn same_seed_gives_the_same_stream() {
        let a = Workload::generate(&small());
        let b = Workload::generate(&small());
        assert_eq!(a.ops, b.ops);
        let c = Workload::generate(&WorkloadConfig { seed: 7, ..small() });
        assert_ne!(a.ops, c.ops);
    }

    #[test]
    fn correlation_ids_run_from_one_without_gaps() {
        let w = Workload::generate(&small());
        let corrs: Vec<u64> = w
            .setup
            .iter()
            .chain(&w.warmup)
            .chain(&w.ops)
            .map(|c| c.corr)
            .collect();
        assert_eq!(corrs, (1..=w.last_corr()).collect::<Vec<_>>());
    }

    #[test]
    fn the_mix_follows_the_configured_percentages() {
        let w = Workload::generate(&small());
        let (mut limits, mut cancels, mut markets) = (0, 0, 0);
        for cmd in &w.ops {
            match &cmd.kind {
                CommandKind::Place(p) if p.order_type == ticker_engine::OrderType::Limit => {
                    let d = (p.price - w.config.mid).abs();
                    assert!((1..=50).contains(&d), "limit {d} ticks from mid");
                    assert!((1..=10).contains(&p.size));
                    limits += 1;
                }
                CommandKind::Place(p) => {
                    assert!((1..=20).contains(&p.size));
                    markets += 1;
                }
                CommandKind::Cancel(_) => cancels += 1,
                other => panic!("unexpected command {other:?}"),
            }
        }
        // 10,000 draws: each share is within 2 points of its target.
        assert!((4_800..=5_200).contains(&limits), "{limits} limits");
        assert!((3_300..=3_700).contains(&cancels), "{cancels} cancels");
        assert!((1_300..=1_700).contains(&markets), "{markets} markets");
    }

    #[test]
    fn cancels_name_an_earlier_limit_of_the_same_account() {
        let w = Workload::generate(&small());
        let mut owner = std::collections::HashMap::new();
        for cmd in w.warmup.iter().chain(&w.ops) {
            match &cmd.kind {
                CommandKind::Place(p) if p.client_id != 0 => {
                    assert!(owner.insert(p.client_id, p.account).is_none());
                }
                CommandKind::Cancel(c) => {
                    let OrderRef::Client(cid) = c.order else {
                        panic!("cancel by engine id");
                    };
                    assert_eq!(owner.get(&cid), Some(&c.account));
                }
                _ => {}
            }
        }
    }

    #[test]
    fn the_deep_mix_rests_far_from_mid_and_sweeps_large() {
        let w = Workload::generate(&Mix::Deep.config(3, 20_000, 100));
        let (mut far, mut big) = (false, false);
        for cmd in &w.ops {
            let CommandKind::Place(p) = &cmd.kind else {
                continue;
            };
            if p.order_type == ticker_engine::OrderType::Limit {
                let d = (p.price - w.config.mid).abs();
                assert!((1..=500).contains(&d) && (1..=100).contains(&p.size));
                far |= d > 400;
            } else {
                assert!((1..=2_000).contains(&p.size));
                big |= p.size > 1_500;
            }
        }
        assert!(far && big, "the ranges are used to their ends");
    }

    #[test]
    fn the_many_mix_spreads_orders_over_instruments_by_zipf() {
        let w = Workload::generate(&Mix::Many.config(5, 100_000, 0));
        assert_eq!(w.setup.len(), 1_000);
        let mut counts = vec![0u64; 1_000];
        for cmd in &w.ops {
            if let CommandKind::Place(p) = &cmd.kind {
                counts[p.instrument as usize] += 1;
            }
        }
        // Zipf(1) over 1,000 ids: the first takes 1/H(1000) ≈ 13.4% of the orders, the second
        // half that, the tenth a tenth of it; the busiest ten take ~39%.
        let places: u64 = counts.iter().sum();
        let share = |k: usize| counts[k] as f64 / places as f64;
        assert!((0.125..0.143).contains(&share(0)), "first {}", share(0));
        assert!((0.060..0.074).contains(&share(1)), "second {}", share(1));
        assert!((0.010..0.017).contains(&share(9)), "tenth {}", share(9));
        assert!(
            counts.iter().filter(|&&c| c > 0).count() > 900,
            "most are used"
        );
        let engine = w.prepared_engine();
        assert_eq!(engine.books().len(), 1_000);
    }

    #[test]
    fn the_single_instrument_stream_draws_no_instrument() {
        let w = Workload::generate(&small());
        assert!(w.ops.iter().all(|c| match &c.kind {
            CommandKind::Place(p) => p.instrument == INSTRUMENT,
            _ => true,
        }));
        assert_eq!(Mix::Issue3.config(42, 10_000, 100), small());
    }

    #[test]
    fn the_prepared_engine_rests_every_warmup_order() {
        let w = Workload::generate(&small());
        let engine = w.prepared_engine();
        assert_eq!(engine.live_order_count(), 100);
        let book = engine.book(INSTRUMENT).expect("instrument added");
        assert!(book.best_bid().unwrap() < w.config.mid);
        assert!(book.best_ask().unwrap() > w.config.mid);
    }
}
