//! The market simulator: tickerd's embedded default source of order flow.
//!
//! Per instrument, a fair price follows a random walk in continuous time (a volatility per
//! √second, so a minute's candle looks the same at any command rate) pulled slowly back
//! towards the reference price. Market makers keep a two-sided quote around it and re-quote
//! as it moves; other traders add passive orders at random depths and cancel some of them;
//! takers arrive as a Poisson process of market orders at a rate per second, and now and then
//! one sweeps several levels. Sizes are notionals in the quote currency (many small orders,
//! some large, rare sweeps of a million) turned into lots at the reference price.
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

/// Passive orders remembered per instrument as candidates for cancels; once this many rest,
/// adding one cancels the oldest, so the simulator never leaves orders behind.
const PASSIVE_KEPT: usize = 1024;
/// Fractional bits of the fair price (in ticks): an instrument whose tick is large against
/// its moves (EUR-USD: about 0.04 ticks per millisecond) still moves.
const FAIR_SHIFT: u32 = 16;
/// How fast the fair price is pulled back to the reference: the pull closes the gap at this
/// rate (ns), about two hours, so the walk wanders within the band over a day.
const REVERT_NS: i128 = 2 * 3_600 * 1_000_000_000;
/// Market orders that sweep: one in this many.
const SWEEP_ONE_IN: u64 = 100;
/// Mix of the commands that are not market orders, in thousandths: re-quotes, then passive
/// orders, the rest cancels of passive orders. More adds than cancels keeps a deep book; the
/// [`PASSIVE_KEPT`] cap cancels the oldest.
const REQUOTE_PER_MILLE: u64 = 650;
const PASSIVE_PER_MILLE: u64 = 250;
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
    /// Market orders per second per instrument, at any command rate [2]: with the sizes
    /// below, about 2.7 billion (quote currency) a day per instrument, a large venue's volume.
    pub takes_per_sec: u64,
    /// Volatility of the fair price in millionths per √second [80: 0.8 bp/√s, about 6 bp a
    /// minute and 45% a year].
    pub volatility_ppm: u64,
    /// Seconds of simulated past run through the engine before the market opens, stamped in
    /// the past, so charts and 24 h statistics have history on a fresh start [0; `tickerd`
    /// runs 3,600].
    pub history_secs: u64,
    /// Commands per second during that past [100]: fewer than live (less quoting), the same
    /// market orders and price moves per second.
    pub history_rate: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            rate: 3_000,
            makers: 3,
            first_account: 1_000_000,
            takes_per_sec: 2,
            volatility_ppm: 80,
            history_secs: 0,
            history_rate: 100,
        }
    }
}

/// Order notionals in the quote currency, drawn log-uniformly within a tier.
#[derive(Clone, Copy)]
struct Tier {
    /// Chance in thousandths, cumulative over a tier list.
    upto_per_mille: u64,
    lo: u64,
    hi: u64,
}

const fn tier(upto_per_mille: u64, lo: u64, hi: u64) -> Tier {
    Tier {
        upto_per_mille,
        lo,
        hi,
    }
}

/// Makers quote 10 k–150 k a side.
const QUOTE_SIZES: [Tier; 1] = [tier(1000, 10_000, 150_000)];
/// Resting orders: mostly small, some large.
const PASSIVE_SIZES: [Tier; 3] = [
    tier(600, 500, 5_000),
    tier(950, 5_000, 50_000),
    tier(1000, 50_000, 250_000),
];
/// Market orders: many small, some large.
const TAKE_SIZES: [Tier; 3] = [
    tier(750, 50, 5_000),
    tier(970, 5_000, 50_000),
    tier(1000, 50_000, 250_000),
];
/// Sweeps: a few hundred thousand to a million and a half.
const SWEEP_SIZES: [Tier; 1] = [tier(1000, 300_000, 1_500_000)];

/// 2^(i/8) in ten-thousandths: steps of a log-uniform draw.
const EIGHTHS_OF_AN_OCTAVE: [u64; 8] = [
    10_000, 10_905, 11_892, 12_968, 14_142, 15_422, 16_818, 18_340,
];

struct Market {
    id: InstrumentId,
    reference: Ticks,
    low: Ticks,
    high: Ticks,
    min_lots: Lots,
    max_lots: Lots,
    fair: Ticks,
    /// The fair price with [`FAIR_SHIFT`] fractional bits: what the walk moves.
    fair_fp: i128,
    /// Simulated time the fair price last moved.
    moved_at: Timestamp,
    /// One lot at the reference price, in millionths of the quote currency (at least 1).
    lot_micros: u128,
    /// Quoting granularity in ticks (≈ 2 bp of the price): makers' spreads, passive depths.
    step: i64,
    /// Client ids of the makers' live quotes: (account, bid id, ask id).
    quotes: Vec<(AccountId, ClientOrderId, ClientOrderId)>,
    /// Recent passive orders that may be cancelled: (account, client id).
    passive: VecDeque<Resting>,
    accounts: AccountId,
}

/// A passive order the simulator may cancel.
#[derive(Debug, Clone, Copy)]
struct Resting {
    account: AccountId,
    id: ClientOrderId,
    side: Side,
    price: Ticks,
}

impl Resting {
    /// How far the order's price is on the market's side of `fair` (ticks): positive once the
    /// fair price has moved through it.
    fn through(&self, fair: Ticks) -> Ticks {
        match self.side {
            Side::Buy => self.price - fair,
            Side::Sell => fair - self.price,
        }
    }
}

/// Where a resumed simulator starts an instrument's fair price: the middle of the best bid and
/// ask, else the last trade, else whichever side exists, else the reference price.
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
        // The book is current; the last trade may be minutes old (market orders are rare).
        match (self.last_trade, self.bid, self.ask) {
            (_, Some(bid), Some(ask)) => Some(bid + (ask - bid) / 2),
            (Some(last), _, _) => Some(last),
            (None, bid, ask) => bid.or(ask),
        }
    }
}

/// Generates commands one at a time; see the module docs.
pub struct Simulator {
    config: SimConfig,
    /// Commands per second now: `config.rate`, or `config.history_rate` in the past.
    rate: u64,
    rng: Rng,
    markets: Vec<Market>,
    next_client_id: ClientOrderId,
    now: Timestamp,
    corr: u64,
    queue: VecDeque<CommandKind>,
    /// Simulated time of the next market order.
    next_take: Timestamp,
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
                fair_fp: (ins.reference_ticks as i128) << FAIR_SHIFT,
                moved_at: start,
                lot_micros: lot_micros(&ins.spec),
                step: (ins.reference_ticks / 5_000).max(1),
                quotes: Vec::new(),
                passive: VecDeque::with_capacity(PASSIVE_KEPT),
                accounts: config.first_account + BLOCK * i as u64,
            })
            .collect();
        Simulator {
            rng: Rng::new(config.seed),
            rate: config.rate,
            config,
            markets,
            next_client_id: 1,
            now: start,
            corr: 0,
            queue: VecDeque::new(),
            next_take: start,
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
                mk.fair_fp = (mk.fair as i128) << FAIR_SHIFT;
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
                mk.passive.push_front(Resting {
                    account: o.account,
                    id: o.client_id,
                    side: o.side,
                    price: o.price,
                });
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

    /// Commands per second from now on (the past runs at `history_rate`, the market at
    /// `rate`); market orders and price moves per second stay as they are.
    pub fn set_rate(&mut self, rate: u64) {
        self.rate = rate.max(1);
    }

    /// Buy or sell, even odds.
    fn side(&mut self) -> Side {
        if self.rng.chance(500) {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    fn client_id(&mut self) -> ClientOrderId {
        self.next_client_id += 1;
        self.next_client_id
    }

    /// The next command, stamped with simulated time advancing by an exponential
    /// inter-arrival at the configured rate.
    pub fn next_command(&mut self) -> Command {
        let mean_ns = 1_000_000_000 / self.rate.max(1);
        let gap = ((mean_ns as u128 * self.rng.exp_fixed32() as u128) >> 32) as u64;
        self.now += gap.max(1);
        if self.now >= self.next_take && !self.markets.is_empty() {
            self.take();
        } else if self.queue.is_empty() && !self.markets.is_empty() {
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
        self.move_fair(m);
        match self.rng.below(1000) {
            r if r < REQUOTE_PER_MILLE => self.requote(m),
            r if r < REQUOTE_PER_MILLE + PASSIVE_PER_MILLE => self.passive(m),
            _ => self.cancel_passive(m),
        }
    }

    /// Moves an instrument's fair price over the simulated time since it last moved: a step of
    /// the walk's spread over that time (uniform noise, Gaussian in sum) plus a pull back
    /// towards the reference, kept inside the band with a tenth of it to spare.
    fn move_fair(&mut self, m: usize) {
        let now = self.now;
        let vol = self.config.volatility_ppm as i128;
        let mk = &mut self.markets[m];
        let dt = now.saturating_sub(mk.moved_at);
        mk.moved_at = now;
        // Spread over dt: fair × vol × √(dt / 1 s), with √(10^9 ns) = 31,623.
        let spread = mk.fair_fp * vol * dt.isqrt() as i128 / (1_000_000 * 31_623);
        // Uniform on ±√3·σ has spread σ.
        let half_width = (spread * 1_732 / 1_000).min(i64::MAX as i128 / 2) as i64;
        let noise = self.rng.range(-half_width, half_width) as i128;
        let reference = (mk.reference as i128) << FAIR_SHIFT;
        let pull = (reference - mk.fair_fp) * (dt as i128).min(REVERT_NS) / REVERT_NS;
        let margin = (mk.high - mk.low) / 10;
        let (lo, hi) = (
            ((mk.low + margin) as i128) << FAIR_SHIFT,
            ((mk.high - margin) as i128) << FAIR_SHIFT,
        );
        mk.fair_fp = (mk.fair_fp + noise + pull).clamp(lo, hi);
        mk.fair = (mk.fair_fp >> FAIR_SHIFT) as Ticks;
    }

    /// Lots for a notional drawn from `tiers` (quote currency), within the instrument's sizes.
    fn lots(&mut self, m: usize, tiers: &[Tier]) -> Lots {
        let roll = self.rng.below(1000);
        let t = tiers
            .iter()
            .find(|t| roll < t.upto_per_mille)
            .unwrap_or(&tiers[tiers.len() - 1]);
        let notional = self.log_uniform(t.lo, t.hi);
        let mk = &self.markets[m];
        let lots = (notional as u128 * 1_000_000 / mk.lot_micros).min(Lots::MAX as u128) as Lots;
        lots.clamp(mk.min_lots, mk.max_lots.max(mk.min_lots))
    }

    /// Log-uniform in about `lo..hi` (hi > lo > 0): a power of 2^(1/8) above `lo`, jittered
    /// by up to an eighth of an octave so the sizes are not a ladder.
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let mut eighths = 0u64;
        while eighths < 63 * 8 && step_up(lo, eighths + 1) <= hi {
            eighths += 1;
        }
        let k = self.rng.below(eighths + 1);
        let base = step_up(lo, k);
        let jitter = self.rng.below(base / 11 + 1);
        base + jitter
    }

    /// A maker moves one side of its quote: cancels that side's order and quotes it again
    /// around the fair price now.
    fn requote(&mut self, m: usize) {
        let makers = self.config.makers.max(1);
        let k = self.rng.below(makers) as usize;
        let side = self.side();
        let (account, fair, step) = {
            let mk = &self.markets[m];
            (mk.accounts + k as u64, mk.fair, mk.step)
        };
        // Makers compete at the touch, inside the resting orders (the nearest of which rest
        // half a step from the fair price), each re-quote a little nearer or further: the best
        // quote changes hands and most re-quotes move the ticker, as on a real book.
        let half_spread = (step / 8 + self.rng.below(step as u64 / 4 + 1) as i64).max(1);
        let id = self.client_id();
        let size = self.lots(m, &QUOTE_SIZES);
        let mk = &mut self.markets[m];
        let q = match mk.quotes.iter().position(|q| q.0 == account) {
            Some(i) => &mut mk.quotes[i],
            None => {
                mk.quotes.push((account, 0, 0));
                mk.quotes.last_mut().expect("just pushed")
            }
        };
        let slot = match side {
            Side::Buy => &mut q.1,
            Side::Sell => &mut q.2,
        };
        // A resumed maker may have had only one side live (id 0 for the other).
        if *slot != 0 {
            self.queue.push_back(CommandKind::Cancel(Cancel {
                account,
                order: OrderRef::Client(*slot),
            }));
        }
        *slot = id;
        let price = match side {
            Side::Buy => fair - half_spread,
            Side::Sell => fair + half_spread,
        };
        self.queue.push_back(CommandKind::Place(Place {
            client_id: id,
            post_only: true,
            ..Place::limit(account, mk.id, side, price.clamp(mk.low, mk.high), size)
        }));
    }

    fn passive(&mut self, m: usize) {
        let side = self.side();
        let depth = self.rng.range(1, 30) * self.markets[m].step / 2 + 1;
        let size = self.lots(m, &PASSIVE_SIZES);
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
            // Forgetting it would leave it resting for ever.
            if let Some(old) = mk.passive.pop_front() {
                self.queue.push_back(CommandKind::Cancel(Cancel {
                    account: old.account,
                    order: OrderRef::Client(old.id),
                }));
            }
        }
        mk.passive.push_back(Resting {
            account,
            id,
            side,
            price,
        });
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
        // The order the market has come nearest (or moved through) is pulled first, once it is
        // as near as the makers' quotes: a resting order left behind by a move would sit at
        // the touch, ahead of the makers, until a taker came. Otherwise any one.
        let (nearest, through) = mk
            .passive
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.through(mk.fair)))
            .max_by_key(|&(_, t)| t)
            .expect("not empty");
        let i = if through > -(mk.step / 4) {
            nearest
        } else {
            self.rng.below(mk.passive.len() as u64) as usize
        };
        let Resting { account, id, .. } = mk.passive.remove(i).expect("index in range");
        self.queue.push_back(CommandKind::Cancel(Cancel {
            account,
            order: OrderRef::Client(id),
        }));
    }

    /// A market order now (ahead of any queued command), and when the next one comes: market
    /// orders are their own Poisson process in simulated time, so they arrive at
    /// `takes_per_sec` whatever the command rate.
    fn take(&mut self) {
        let per_sec = (self.config.takes_per_sec * self.markets.len() as u64).max(1);
        let gap = ((1_000_000_000 / per_sec) as u128 * self.rng.exp_fixed32() as u128) >> 32;
        self.next_take = self.now + (gap as u64).max(1);
        if self.config.takes_per_sec == 0 {
            self.next_take = Timestamp::MAX;
            return;
        }
        let m = self.rng.below(self.markets.len() as u64) as usize;
        self.move_fair(m);
        let sweep = self.rng.below(SWEEP_ONE_IN) == 0;
        let order = self.market_order(m, sweep);
        self.queue.push_front(order);
    }

    fn market_order(&mut self, m: usize, sweep: bool) -> CommandKind {
        let side = self.side();
        let size = if sweep {
            self.lots(m, &SWEEP_SIZES)
        } else {
            self.lots(m, &TAKE_SIZES)
        };
        let mk = &self.markets[m];
        let takers = TAKER_ACCOUNTS.end - TAKER_ACCOUNTS.start;
        let account = mk.accounts + TAKER_ACCOUNTS.start + self.rng.below(takers);
        CommandKind::Place(Place::market(account, mk.id, side, size))
    }
}

/// `lo` × 2^(eighths/8), saturating.
fn step_up(lo: u64, eighths: u64) -> u64 {
    let octaves = (eighths / 8) as u32;
    let scaled = lo as u128 * EIGHTHS_OF_AN_OCTAVE[(eighths % 8) as usize] as u128 / 10_000;
    scaled
        .checked_shl(octaves)
        .filter(|v| *v <= u64::MAX as u128)
        .map_or(u64::MAX, |v| v as u64)
}

/// One lot at the reference price in millionths of the quote currency (at least 1): what
/// turns a notional into lots. Decimal arithmetic, exact.
fn lot_micros(spec: &InstrumentSpec) -> u128 {
    let micros = spec.reference_price * spec.lot_size * rust_decimal::Decimal::from(1_000_000u32);
    u128::try_from(micros.trunc()).unwrap_or(1).max(1)
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

    fn engine_with(ins: &[Instrument]) -> (Engine, Vec<Event>) {
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
        (engine, events)
    }

    /// Runs `secs` simulated seconds at `rate` commands a second.
    fn run_for(seed: u64, rate: u64, secs: u64) -> (Engine, Vec<Command>, Vec<Event>) {
        let ins = instruments();
        let (mut engine, mut events) = engine_with(&ins);
        let config = SimConfig {
            seed,
            rate,
            ..SimConfig::default()
        };
        let mut sim = Simulator::new(config, &ins, 1_000);
        let mut cmds = Vec::new();
        while sim.now() < secs * 1_000_000_000 {
            let c = sim.next_command();
            engine.apply(&c, &mut events);
            cmds.push(c);
        }
        (engine, cmds, events)
    }

    fn run(seed: u64, n: usize) -> Vec<Command> {
        let ins = instruments();
        let mut sim = Simulator::new(
            SimConfig {
                seed,
                ..SimConfig::default()
            },
            &ins,
            1_000,
        );
        (0..n).map(|_| sim.next_command()).collect()
    }

    fn market_orders(cmds: &[Command], instrument: InstrumentId) -> usize {
        cmds.iter()
            .filter(|c| {
                matches!(&c.kind, CommandKind::Place(p)
                    if p.instrument == instrument && p.order_type == OrderType::Market)
            })
            .count()
    }

    #[test]
    fn same_seed_same_commands() {
        let a = run(7, 20_000);
        assert_eq!(a, run(7, 20_000));
        assert_ne!(a[..1_000], run(8, 1_000)[..]);
        // Timestamps advance at about the configured rate (3,000/s).
        let span = a.last().unwrap().ts - a[0].ts;
        let rate = a.len() as u64 * 1_000_000_000 / span;
        assert!((2_700..3_300).contains(&rate), "rate {rate}/s");
    }

    /// Ten simulated minutes at the past's rate: sizes, volume, price moves and book of the
    /// order a real market of this size shows, and no order left behind.
    #[test]
    fn a_plausible_market() {
        let secs = 600;
        let (engine, cmds, events) = run_for(3, 300, secs);
        let ins = instruments();
        let btc = &ins[0];
        let micros = lot_micros(&btc.spec); // one BTC lot at 65,000: 650,000 µUSD
        let notional = |lots: Lots| lots as u128 * micros / 1_000_000; // whole USD
        let mut sizes = Vec::new();
        let (mut lo, mut hi) = (Ticks::MAX, 0);
        for e in &events {
            if let EventKind::Trade {
                instrument: 0,
                price,
                size,
                ..
            } = e.kind
            {
                sizes.push(notional(size));
                lo = lo.min(price);
                hi = hi.max(price);
            }
        }
        sizes.sort_unstable();
        let volume: u128 = sizes.iter().sum();
        let per_day = volume * 86_400 / secs as u128;
        assert!(
            (500_000_000..10_000_000_000).contains(&per_day),
            "BTC-USD 24 h volume ≈ {per_day} USD"
        );
        let median = sizes[sizes.len() / 2];
        assert!((20..5_000).contains(&median), "median trade {median} USD");
        assert!(*sizes.last().unwrap() > 100_000, "some large trades");
        // About two market orders a second per instrument.
        for i in 0..2 {
            let takes = market_orders(&cmds, i) as u64;
            assert!(
                (secs * 3 / 2..secs * 5 / 2).contains(&takes),
                "{takes} market orders"
            );
        }
        // Moves of the order of 0.8 bp/√s: about 20 bp over ten minutes, well inside the band.
        let range_bp = (hi - lo) * 10_000 / btc.reference_ticks;
        assert!(
            (5..300).contains(&range_bp),
            "10-minute range {range_bp} bp"
        );
        let rejects = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Rejected { .. }))
            .count();
        assert!(
            rejects < cmds.len() / 4,
            "mostly valid flow: {rejects} rejects"
        );
        for book in engine.books() {
            assert!(book.best_bid().unwrap() < book.best_ask().unwrap());
        }
        // A deep book: at least a million on each side (the largest sweep is 1.5 million).
        let book = engine.book(0).unwrap();
        for side in [Side::Buy, Side::Sell] {
            let lots: u128 = book.depth(side).map(|(_, l)| l.visible as u128).sum();
            assert!(
                notional(lots as Lots) > 1_000_000,
                "{side:?} depth {}",
                notional(lots as Lots)
            );
        }
        // Bounded: remembered passive orders plus the makers' quotes, per instrument.
        let bound = 2 * (PASSIVE_KEPT + 2 * SimConfig::default().makers as usize);
        assert!(
            engine.live_order_count() <= bound,
            "{} live",
            engine.live_order_count()
        );
    }

    /// Market orders and price moves come per second, not per command: the past (300/s) and
    /// the live market (3,000/s) trade alike.
    #[test]
    fn trading_does_not_depend_on_the_command_rate() {
        let secs = 120;
        let (_, slow, _) = run_for(5, 300, secs);
        let (_, fast, _) = run_for(5, 3_000, secs);
        let (a, b) = (market_orders(&slow, 0), market_orders(&fast, 0));
        assert!(a * 10 > b * 7 && b * 10 > a * 7, "{a} vs {b} market orders");
    }

    #[test]
    fn log_uniform_sizes_cover_their_range() {
        let mut sim = Simulator::new(SimConfig::default(), &instruments(), 0);
        let draws: Vec<u64> = (0..10_000).map(|_| sim.log_uniform(50, 5_000)).collect();
        assert!(draws.iter().all(|d| (50..5_600).contains(d)));
        let below_500 = draws.iter().filter(|d| **d < 500).count();
        // Log-uniform: half the draws in each decade.
        assert!((4_000..6_000).contains(&below_500), "{below_500} below 500");
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
