//! The market simulator: tickerd's embedded default source of order flow.
//!
//! Per instrument, a fair price follows a mean-reverting random walk around the reference
//! price (in whole ticks). Market makers keep a two-sided quote around it and re-quote as it
//! moves; other traders add passive orders at random depths and cancel some of them; takers
//! arrive as a Poisson process with market orders, and now and then one sweeps several levels.
//! Everything comes from one seeded generator and integer arithmetic, so a seed always gives
//! the same commands, timestamps included.
//!
//! After a restart, [`Simulator::resume`] picks up the market it left: its makers' quotes and
//! its passive orders from the engine's live orders, fair prices from the last trades, and a
//! generator seeded from the seed and the resume point, so the flow goes on rather than
//! starting over.

use crate::ticker::TickerState;
use std::collections::VecDeque;
use ticker_engine::*;

/// Passive orders remembered per instrument as candidates for cancels.
const PASSIVE_KEPT: usize = 1024;
/// Accounts of one instrument's block by role: makers from 0, passive traders and takers
/// from these offsets.
const PASSIVE_ACCOUNTS: std::ops::Range<u64> = 10..30;
const TAKER_ACCOUNTS: std::ops::Range<u64> = 50..70;
/// Accounts per instrument block.
const BLOCK: u64 = 100;
/// Mixed into a resumed simulator's seed (the fractional digits of √2), so that resuming at
/// position 0 differs from a fresh start with the same seed.
const RESUME_SALT: u64 = 0x6A09_E667_F3BC_C908;

/// SplitMix64: small, fast, and good enough for simulated order flow.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// `true` with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// An exponential(1) variate as fixed point with 32 fractional bits, by von Neumann's
    /// comparison method (integer only, exact in distribution).
    pub fn exp_fixed32(&mut self) -> u64 {
        let mut whole = 0u64;
        loop {
            let first = self.next_u64();
            let mut prev = first;
            let mut run = 1u32;
            loop {
                let u = self.next_u64();
                if u < prev {
                    prev = u;
                    run += 1;
                } else {
                    break;
                }
            }
            if run % 2 == 1 {
                return (whole << 32) + (first >> 32);
            }
            whole += 1;
        }
    }
}

/// Simulator settings; defaults in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    pub seed: u64,
    /// Commands per second across all instruments [3,000].
    pub rate: u64,
    /// Market-making accounts per instrument [3].
    pub makers: u64,
    /// First account id the simulator uses; it uses a block of 100 per instrument [1,000,000].
    pub first_account: AccountId,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            rate: 3_000,
            makers: 3,
            first_account: 1_000_000,
        }
    }
}

struct Market {
    id: InstrumentId,
    reference: Ticks,
    low: Ticks,
    high: Ticks,
    min_lots: Lots,
    max_lots: Lots,
    fair: Ticks,
    /// Typical move of the fair price per step, in ticks (≈ 2 bp of the price).
    step: i64,
    /// Client ids of the makers' live quotes: (account, bid id, ask id).
    quotes: Vec<(AccountId, ClientOrderId, ClientOrderId)>,
    /// Recent passive orders that may be cancelled: (account, client id).
    passive: VecDeque<(AccountId, ClientOrderId)>,
    accounts: AccountId,
}

/// Where a resumed simulator starts an instrument's fair price: the last trade, else the middle
/// of the best bid and ask (or whichever exists), else the reference price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastPrices {
    pub last_trade: Option<Ticks>,
    pub bid: Option<Ticks>,
    pub ask: Option<Ticks>,
}

impl From<&TickerState> for LastPrices {
    fn from(t: &TickerState) -> Self {
        LastPrices {
            last_trade: t.last.map(|l| l.0),
            bid: t.bid.map(|l| l.0),
            ask: t.ask.map(|l| l.0),
        }
    }
}

impl LastPrices {
    fn fair(&self) -> Option<Ticks> {
        match (self.last_trade, self.bid, self.ask) {
            (Some(last), _, _) => Some(last),
            (None, Some(bid), Some(ask)) => Some(bid + (ask - bid) / 2),
            (None, bid, ask) => bid.or(ask),
        }
    }
}

/// Generates commands one at a time; see the module docs.
pub struct Simulator {
    config: SimConfig,
    rng: Rng,
    markets: Vec<Market>,
    next_client_id: ClientOrderId,
    now: Timestamp,
    corr: u64,
    queue: VecDeque<CommandKind>,
}

impl Simulator {
    /// A simulator over the given instruments, starting its clock at `start` (ns).
    pub fn new(config: SimConfig, instruments: &[Instrument], start: Timestamp) -> Self {
        let markets = instruments
            .iter()
            .enumerate()
            .map(|(i, ins)| Market {
                id: ins.id,
                reference: ins.reference_ticks,
                low: ins.band_low,
                high: ins.band_high,
                min_lots: ins.min_lots,
                max_lots: ins.max_lots,
                fair: ins.reference_ticks,
                step: (ins.reference_ticks / 5_000).max(1),
                quotes: Vec::new(),
                passive: VecDeque::with_capacity(PASSIVE_KEPT),
                accounts: config.first_account + BLOCK * i as u64,
            })
            .collect();
        Simulator {
            rng: Rng::new(config.seed),
            config,
            markets,
            next_client_id: 1,
            now: start,
            corr: 0,
            queue: VecDeque::new(),
        }
    }

    /// A simulator that carries on after a restart, over the same `instruments` in the same
    /// order as before (they number its accounts), its clock starting at `start`.
    ///
    /// - `live`: the engine's live orders (all of them, or those of the simulator's accounts).
    ///   Each maker's newest bid and ask become its quotes, replaced at its next requote;
    ///   other live orders of the simulator's accounts become passive orders it may cancel.
    /// - `position`: the engine's last event `seq` at the resume point (or any count at least
    ///   the commands the engine has applied, such as a journal position in commands). The
    ///   generator is seeded from `config.seed` and `position`, so no two resume points replay
    ///   the same flow, and client ids start above `position + 1`, which bounds every id a
    ///   simulator ever used: its ids go up by one per place it submits, and every command the
    ///   engine applies emits at least one event.
    /// - `prices`: per instrument, where its fair price starts (see [`LastPrices`]); an
    ///   instrument not listed starts at its reference price.
    pub fn resume(
        config: SimConfig,
        instruments: &[Instrument],
        start: Timestamp,
        position: u64,
        live: impl IntoIterator<Item = OrderView>,
        prices: impl IntoIterator<Item = (InstrumentId, LastPrices)>,
    ) -> Self {
        let mut sim = Simulator::new(config, instruments, start);
        // One SplitMix step over each half, so nearby positions give unrelated streams.
        sim.rng = Rng::new(
            Rng::new(sim.config.seed).next_u64() ^ Rng::new(position ^ RESUME_SALT).next_u64(),
        );
        sim.next_client_id = position.saturating_add(1);
        for (id, p) in prices {
            if let (Some(mk), Some(fair)) = (sim.markets.iter_mut().find(|m| m.id == id), p.fair())
            {
                let margin = (mk.high - mk.low) / 10;
                mk.fair = fair.clamp(mk.low + margin, mk.high - margin);
            }
        }
        let first = sim.config.first_account;
        let mut live: Vec<OrderView> = live
            .into_iter()
            .filter(|o| {
                let block = o.account.checked_sub(first).map(|a| a / BLOCK);
                block.is_some_and(|b| {
                    sim.markets
                        .get(b as usize)
                        .is_some_and(|m| m.id == o.instrument)
                })
            })
            .collect();
        // Oldest first: client ids grow with time.
        live.sort_unstable_by_key(|o| o.client_id);
        for o in &live {
            sim.next_client_id = sim.next_client_id.max(o.client_id);
        }
        let makers = sim.config.makers.max(1);
        for o in live.iter().rev() {
            let market = ((o.account - first) / BLOCK) as usize;
            let role = (o.account - first) % BLOCK;
            let mk = &mut sim.markets[market];
            if o.client_id == 0 || TAKER_ACCOUNTS.contains(&role) {
                // Nothing the simulator can name or would have left resting.
                continue;
            }
            if role < makers {
                let i = match mk.quotes.iter().position(|q| q.0 == o.account) {
                    Some(i) => i,
                    None => {
                        mk.quotes.push((o.account, 0, 0));
                        mk.quotes.len() - 1
                    }
                };
                let slot = match o.side {
                    Side::Buy => &mut mk.quotes[i].1,
                    Side::Sell => &mut mk.quotes[i].2,
                };
                if *slot == 0 {
                    *slot = o.client_id;
                    continue;
                }
                // An older quote on the same side: left over, so cancel it like a passive one.
            } else if !PASSIVE_ACCOUNTS.contains(&role) {
                continue;
            }
            if mk.passive.len() < PASSIVE_KEPT {
                mk.passive.push_front((o.account, o.client_id));
            }
        }
        sim
    }

    /// The fair price an instrument's flow is centred on now.
    pub fn fair_price(&self, instrument: InstrumentId) -> Option<Ticks> {
        self.markets
            .iter()
            .find(|m| m.id == instrument)
            .map(|m| m.fair)
    }

    /// Simulated time of the last command.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    fn client_id(&mut self) -> ClientOrderId {
        self.next_client_id += 1;
        self.next_client_id
    }

    /// The next command, stamped with simulated time advancing by an exponential
    /// inter-arrival at the configured rate.
    pub fn next_command(&mut self) -> Command {
        let mean_ns = 1_000_000_000 / self.config.rate.max(1);
        let gap = ((mean_ns as u128 * self.rng.exp_fixed32() as u128) >> 32) as u64;
        self.now += gap.max(1);
        if self.queue.is_empty() && !self.markets.is_empty() {
            self.generate();
        }
        self.corr += 1;
        Command {
            deadline: 0,
            ts: self.now,
            corr: self.corr,
            kind: self.queue.pop_front().unwrap_or(CommandKind::Heartbeat),
        }
    }

    fn generate(&mut self) {
        let m = self.rng.below(self.markets.len() as u64) as usize;
        let roll = self.rng.below(1000);
        // Move the fair price: a random step plus a pull back towards the reference.
        {
            let mk = &mut self.markets[m];
            let noise = self.rng.range(-mk.step, mk.step);
            let pull = (mk.reference - mk.fair) / 64;
            let margin = (mk.high - mk.low) / 10;
            mk.fair = (mk.fair + noise + pull).clamp(mk.low + margin, mk.high - margin);
        }
        match roll {
            0..=449 => self.requote(m),
            450..=699 => self.passive(m),
            700..=849 => self.cancel_passive(m),
            850..=979 => self.take(m, false),
            _ => self.take(m, true),
        }
    }

    fn lots(&mut self, m: usize, max_multiple: u64) -> Lots {
        let mk = &self.markets[m];
        let (min, max) = (mk.min_lots, mk.max_lots);
        (min * (1 + self.rng.below(max_multiple))).min(max)
    }

    fn requote(&mut self, m: usize) {
        let makers = self.config.makers.max(1);
        let k = self.rng.below(makers) as usize;
        let (account, fair, step) = {
            let mk = &self.markets[m];
            (mk.accounts + k as u64, mk.fair, mk.step)
        };
        let half_spread = step * (1 + k as i64);
        let (bid_id, ask_id) = (self.client_id(), self.client_id());
        let size = self.lots(m, 20);
        let mk = &mut self.markets[m];
        if let Some(q) = mk.quotes.iter_mut().find(|q| q.0 == account) {
            // A resumed maker may have had only one side live (id 0 for the other).
            for old in [q.1, q.2].into_iter().filter(|id| *id != 0) {
                self.queue.push_back(CommandKind::Cancel(Cancel {
                    account,
                    order: OrderRef::Client(old),
                }));
            }
            *q = (account, bid_id, ask_id);
        } else {
            mk.quotes.push((account, bid_id, ask_id));
        }
        for (side, price, id) in [
            (Side::Buy, fair - half_spread, bid_id),
            (Side::Sell, fair + half_spread, ask_id),
        ] {
            self.queue.push_back(CommandKind::Place(Place {
                client_id: id,
                post_only: true,
                ..Place::limit(account, mk.id, side, price.clamp(mk.low, mk.high), size)
            }));
        }
    }

    fn passive(&mut self, m: usize) {
        let side = if self.rng.chance(500) {
            Side::Buy
        } else {
            Side::Sell
        };
        let depth = self.rng.range(1, 30) * self.markets[m].step / 2 + 1;
        let size = self.lots(m, 50);
        let id = self.client_id();
        let mk = &mut self.markets[m];
        let passive = PASSIVE_ACCOUNTS.end - PASSIVE_ACCOUNTS.start;
        let account = mk.accounts + PASSIVE_ACCOUNTS.start + self.rng.below(passive);
        let price = match side {
            Side::Buy => mk.fair - depth,
            Side::Sell => mk.fair + depth,
        }
        .clamp(mk.low, mk.high);
        if mk.passive.len() == PASSIVE_KEPT {
            mk.passive.pop_front();
        }
        mk.passive.push_back((account, id));
        self.queue.push_back(CommandKind::Place(Place {
            client_id: id,
            ..Place::limit(account, mk.id, side, price, size)
        }));
    }

    fn cancel_passive(&mut self, m: usize) {
        let mk = &mut self.markets[m];
        if mk.passive.is_empty() {
            return self.passive(m);
        }
        let i = self.rng.below(mk.passive.len() as u64) as usize;
        let (account, id) = mk.passive.remove(i).expect("index in range");
        self.queue.push_back(CommandKind::Cancel(Cancel {
            account,
            order: OrderRef::Client(id),
        }));
    }

    fn take(&mut self, m: usize, sweep: bool) {
        let side = if self.rng.chance(500) {
            Side::Buy
        } else {
            Side::Sell
        };
        let size = if sweep {
            self.lots(m, 400)
        } else {
            self.lots(m, 30)
        };
        let mk = &self.markets[m];
        let takers = TAKER_ACCOUNTS.end - TAKER_ACCOUNTS.start;
        let account = mk.accounts + TAKER_ACCOUNTS.start + self.rng.below(takers);
        self.queue.push_back(CommandKind::Place(Place::market(
            account, mk.id, side, size,
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    fn instruments() -> Vec<Instrument> {
        let d = |s| Decimal::from_str(s).unwrap();
        vec![
            Instrument::new(
                0,
                InstrumentSpec {
                    symbol: "BTC-USD".into(),
                    tick_size: d("0.01"),
                    lot_size: d("0.00001"),
                    min_size: d("0.00001"),
                    max_size: d("100"),
                    reference_price: d("65000"),
                    band: d("0.1"),
                },
            )
            .unwrap(),
            Instrument::new(
                1,
                InstrumentSpec {
                    symbol: "EUR-USD".into(),
                    tick_size: d("0.00001"),
                    lot_size: d("1000"),
                    min_size: d("1000"),
                    max_size: d("10000000"),
                    reference_price: d("1.08"),
                    band: d("0.05"),
                },
            )
            .unwrap(),
        ]
    }

    fn run(seed: u64, n: usize) -> (Engine, Vec<Command>, Vec<Event>) {
        let ins = instruments();
        let mut engine = Engine::default();
        let mut events = Vec::new();
        for (i, x) in ins.iter().enumerate() {
            engine.apply(
                &Command {
                    deadline: 0,
                    ts: 0,
                    corr: i as u64,
                    kind: CommandKind::AddInstrument(Box::new(x.spec.clone())),
                },
                &mut events,
            );
        }
        let mut sim = Simulator::new(
            SimConfig {
                seed,
                ..SimConfig::default()
            },
            &ins,
            1_000,
        );
        let mut cmds = Vec::new();
        for _ in 0..n {
            let c = sim.next_command();
            engine.apply(&c, &mut events);
            cmds.push(c);
        }
        (engine, cmds, events)
    }

    #[test]
    fn same_seed_same_commands_and_a_live_market() {
        let (engine, a, events) = run(7, 20_000);
        let (_, b, _) = run(7, 20_000);
        assert_eq!(a, b);
        let (_, c, _) = run(8, 1_000);
        assert_ne!(a[..1_000], c[..]);
        let trades = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Trade { .. }))
            .count();
        let rejects = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Rejected { .. }))
            .count();
        assert!(trades > 1_000, "the market trades: {trades}");
        assert!(
            rejects < a.len() / 4,
            "mostly valid flow: {rejects} rejects"
        );
        for book in engine.books() {
            let (bid, ask) = (book.best_bid().unwrap(), book.best_ask().unwrap());
            assert!(bid < ask);
        }
        // Timestamps advance at about the configured rate (3,000/s).
        let span = a.last().unwrap().ts - a[0].ts;
        let rate = a.len() as u64 * 1_000_000_000 / span;
        assert!((2_700..3_300).contains(&rate), "rate {rate}/s");
    }

    #[test]
    fn exponential_variates_have_mean_one() {
        let mut rng = Rng::new(1);
        let n = 200_000u64;
        let sum: u128 = (0..n).map(|_| rng.exp_fixed32() as u128).sum();
        let mean_milli = (sum * 1000 / n as u128) >> 32;
        assert!((985..=1015).contains(&mean_milli), "mean {mean_milli}/1000");
    }
}
