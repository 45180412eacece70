//! Applies the engine's event stream to every view and publishes what changed: depth, ticker,
//! trades, candles and L3 per instrument, order updates per account and on the drop copy,
//! positions per account and instrument. One `MarketData` is fed by one thread (the egress
//! consumer); it is the only writer of the views.
//!
//! The engine closes each command with its `LevelChanged` events, so a run of them for one
//! instrument marks the end of that command's effect on the instrument: depth, ticker and
//! candles publish there, at most once per command. Trades and L3 publish per event.
//!
//! ## Time comes from events only
//! A candle closes when the first event stamped at or after the end of its interval arrives,
//! whatever its instrument, and that event's `seq` and `ts` go on the closing message. Every
//! view is therefore a function of the event stream alone: replaying the journal after a
//! restart publishes exactly what the uninterrupted run published (see [`crate::snapshot`]).
//! The cost is that in a market with no events at all the last candle stays open until the
//! next event, which was already so: the feeds thread only wakes for event batches, and
//! heartbeats produce no events. [`MarketData::tick`] advances time without an event for a
//! caller that has a reason to, at the price of output that a replay reproduces only if it
//! calls `tick` at the same points.

use crate::candles::{self, CandleSeries, CandleUpdate};
use crate::depth::DepthView;
use crate::drop_copy::DropCopy;
use crate::hub::{Hub, HubConfig, Message, MessageKind, SnapshotSource, TopicState};
use crate::instruments::{Instruments, WireInstrument};
use crate::l3::{self, L3Book, L3Event, L3Snapshotter, L3State, L3Update};
use crate::orders::{Accounts, OrderRouter};
use crate::positions::{PositionKeeper, Positions};
use crate::proto;
use crate::snapshot::{
    CandlesSnapshot, FeedsSnapshot, FeedsSnapshotError, History, InstrumentSnapshot, L3Snapshot,
    Registration, TickerSnapshot, TradesSnapshot,
};
use crate::ticker::{Rolling24h, TickerState, TickerUpdate};
use crate::topic::{Channel, Interval, Topic};
use crate::trades::TradeUpdate;
use parking_lot::Mutex;
use std::sync::Arc;
use ticker_engine::*;

/// Feed settings; defaults in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedsConfig {
    /// Depth levels per side in snapshots and in the maintained window [50].
    pub depth_levels: usize,
    /// Candles per interval a snapshot sends: the newest closed ones and the open one [300].
    pub candles_kept: usize,
    pub hub: HubConfig,
}

impl Default for FeedsConfig {
    fn default() -> Self {
        FeedsConfig {
            depth_levels: 50,
            candles_kept: 300,
            hub: HubConfig::default(),
        }
    }
}

struct Series {
    topic: Arc<TopicState>,
    state: Arc<Mutex<CandleState>>,
}

struct CandleState {
    series: CandleSeries,
    last_seq: u64,
}

struct CandleSnapshotter {
    wire: Arc<WireInstrument>,
    state: Arc<Mutex<CandleState>>,
}

impl SnapshotSource for CandleSnapshotter {
    fn snapshot(&self) -> Option<Arc<Message>> {
        let st = self.state.lock();
        let channel = Channel::Candles(st.series.interval);
        let payload = proto::candles(&self.wire, &st.series);
        Some(Message::encoded(
            st.last_seq,
            0,
            MessageKind::Snapshot,
            candles::encode_snapshot(&self.wire, &st.series, st.last_seq),
            proto::market(&self.wire, channel, st.last_seq, 0, 0, payload),
        ))
    }
}

struct InstrumentFeeds {
    wire: Arc<WireInstrument>,
    depth: DepthView,
    ticker_topic: Arc<TopicState>,
    ticker: TickerState,
    ticker_seq: u64,
    rolling: Rolling24h,
    traded: bool,
    trades_topic: Arc<TopicState>,
    trades_seq: u64,
    candles: Vec<Series>,
    l3_topic: Arc<TopicState>,
    l3: Arc<Mutex<L3State>>,
}

impl InstrumentFeeds {
    fn new(hub: &Hub, wire: Arc<WireInstrument>, config: &FeedsConfig) -> Self {
        let id = wire.id();
        let topic = |channel| {
            hub.topic(Topic::Market {
                channel,
                instrument: id,
            })
        };
        let candles = Interval::ALL
            .into_iter()
            .map(|interval| {
                let state = Arc::new(Mutex::new(CandleState {
                    series: CandleSeries::new(interval, config.candles_kept),
                    last_seq: 0,
                }));
                let topic = topic(Channel::Candles(interval));
                topic.set_snapshot_source(Arc::new(CandleSnapshotter {
                    wire: wire.clone(),
                    state: state.clone(),
                }));
                Series { topic, state }
            })
            .collect();
        let l3 = l3::new_state();
        let l3_topic = topic(Channel::L3);
        l3_topic.set_snapshot_source(Arc::new(L3Snapshotter {
            wire: wire.clone(),
            state: l3.clone(),
        }));
        InstrumentFeeds {
            depth: DepthView::new(wire.clone(), config.depth_levels, topic(Channel::Depth)),
            ticker_topic: topic(Channel::Ticker),
            ticker: TickerState::default(),
            ticker_seq: 0,
            rolling: Rolling24h::default(),
            traded: false,
            trades_topic: topic(Channel::Trades),
            trades_seq: 0,
            candles,
            l3_topic,
            l3,
            wire,
        }
    }

    fn publish_ticker(&mut self, seq: u64, ts: Timestamp) {
        self.rolling.expire(ts);
        self.ticker.stats = self.rolling.stats();
        self.ticker_topic.publish(Message::lazy(
            seq,
            self.ticker_seq,
            MessageKind::Update,
            TickerUpdate {
                wire: self.wire.clone(),
                ts,
                state: self.ticker.clone(),
            },
        ));
        self.ticker_seq = seq;
    }

    /// End of a command's effect on this instrument.
    fn flush(&mut self, changes: &[(Side, Ticks, Lots)], seq: u64, ts: Timestamp) {
        self.depth.apply(changes, seq, ts);
        let (bid, ask) = self.depth.best();
        if bid != self.ticker.bid || ask != self.ticker.ask || self.traded {
            self.ticker.bid = bid;
            self.ticker.ask = ask;
            self.publish_ticker(seq, ts);
        }
        if self.traded {
            for s in &self.candles {
                let mut st = s.state.lock();
                if let Some(candle) = st.series.open_candle() {
                    publish_candle(&self.wire, s, &mut st, candle, seq, ts);
                }
            }
        }
        self.traded = false;
    }

    /// Closes candles whose interval ended by `ts`, publishing each close with `seq`; a series
    /// whose last message already has `seq` stays open (a message that does not advance its
    /// topic's `seq` reaches no subscriber). Returns the earliest end of a candle left open.
    fn roll_candles(&mut self, seq: u64, ts: Timestamp) -> Timestamp {
        let mut due = Timestamp::MAX;
        for s in &self.candles {
            let mut st = s.state.lock();
            if st.last_seq < seq {
                if let Some(candle) = st.series.roll(ts) {
                    publish_candle(&self.wire, s, &mut st, candle, seq, ts);
                }
            }
            due = due.min(st.series.open_end().unwrap_or(Timestamp::MAX));
        }
        due
    }

    /// Every view's state and every topic's history, for a snapshot.
    fn snapshot(&self) -> InstrumentSnapshot {
        let l3 = {
            let st = self.l3.lock();
            L3Snapshot {
                bids: st.book.orders(Side::Buy),
                asks: st.book.orders(Side::Sell),
                last_seq: st.last_seq,
                history: History(self.l3_topic.history()),
            }
        };
        InstrumentSnapshot {
            id: self.wire.id(),
            spec: self.wire.instrument.spec.clone(),
            depth: self.depth.snapshot(),
            ticker: TickerSnapshot {
                state: self.ticker.clone(),
                seq: self.ticker_seq,
                buckets: self.rolling.buckets(),
                history: History(self.ticker_topic.history()),
            },
            trades: TradesSnapshot {
                seq: self.trades_seq,
                history: History(self.trades_topic.history()),
            },
            candles: self
                .candles
                .iter()
                .map(|s| {
                    let st = s.state.lock();
                    CandlesSnapshot {
                        interval: st.series.interval,
                        open: st.series.open_candle(),
                        closed: st.series.closed_candles(),
                        last_seq: st.last_seq,
                        history: History(s.topic.history()),
                    }
                })
                .collect(),
            l3,
        }
    }

    /// Takes up a checked snapshot's state, before anyone subscribes.
    fn restore(&mut self, s: InstrumentSnapshot, depth_levels: u64, config: &FeedsConfig) {
        let same_window = depth_levels == self.depth.levels() as u64;
        self.depth.restore(s.depth, same_window);
        self.ticker = s.ticker.state;
        self.ticker_seq = s.ticker.seq;
        // Checked: the minutes are in order and their volume fits.
        self.rolling = Rolling24h::from_buckets(s.ticker.buckets).unwrap_or_default();
        self.ticker_topic.replace_history(s.ticker.history.0);
        self.trades_seq = s.trades.seq;
        self.trades_topic.replace_history(s.trades.history.0);
        // Checked: one snapshot per interval, in the same order as the series.
        for (series, c) in self.candles.iter().zip(s.candles) {
            let mut st = series.state.lock();
            st.series = CandleSeries::restored(c.interval, config.candles_kept, c.open, c.closed);
            st.last_seq = c.last_seq;
            drop(st);
            series.topic.replace_history(c.history.0);
        }
        let mut l3 = self.l3.lock();
        l3.book = L3Book::from_orders(s.l3.bids, s.l3.asks);
        l3.last_seq = s.l3.last_seq;
        drop(l3);
        self.l3_topic.replace_history(s.l3.history.0);
    }

    /// Earliest end of this instrument's open candles.
    fn candle_due(&self) -> Timestamp {
        self.candles
            .iter()
            .filter_map(|s| s.state.lock().series.open_end())
            .min()
            .unwrap_or(Timestamp::MAX)
    }

    fn l3(&mut self, seq: u64, ts: Timestamp, event: L3Event) {
        let mut st = self.l3.lock();
        let known = match event {
            L3Event::Add {
                order_id,
                side,
                price,
                size,
            } => {
                st.book.add(order_id, side, price, size);
                true
            }
            L3Event::Amend { order_id, size } => st.book.set_size(order_id, size),
            L3Event::Match { order_id, size, .. } => st.book.matched(order_id, size),
            L3Event::Delete { order_id, .. } => st.book.delete(order_id),
        };
        if !known {
            // The order never rested (a taker): nothing an L3 subscriber knows of.
            return;
        }
        self.l3_topic.publish(Message::lazy(
            seq,
            st.last_seq,
            MessageKind::Update,
            L3Update {
                wire: self.wire.clone(),
                ts,
                event,
            },
        ));
        st.last_seq = seq;
    }

    /// Publishes a trade and records it in the ticker and candles; lowers `candle_due` to the
    /// end of a candle it opens.
    fn trade(&mut self, e: &Event, trade: (u64, Ticks, Lots, Side), candle_due: &mut Timestamp) {
        let (trade_id, price, size, aggressor) = trade;
        self.trades_topic.publish(Message::lazy(
            e.seq,
            self.trades_seq,
            MessageKind::Update,
            TradeUpdate {
                wire: self.wire.clone(),
                ts: e.ts,
                trade_id,
                price,
                size,
                aggressor,
            },
        ));
        self.trades_seq = e.seq;
        self.ticker.last = Some((price, size));
        self.rolling.record(e.ts, price, size);
        // Candles this trade is past the end of were closed before the event was applied.
        for s in &self.candles {
            let mut st = s.state.lock();
            st.series.record(e.ts, price, size);
            *candle_due = (*candle_due).min(st.series.open_end().unwrap_or(Timestamp::MAX));
        }
        self.traded = true;
    }
}

/// Publishes `candle` on its series' topic (under the series lock, so a concurrent snapshot
/// either reflects it with its `seq` or neither).
fn publish_candle(
    wire: &Arc<WireInstrument>,
    series: &Series,
    st: &mut CandleState,
    candle: candles::Candle,
    seq: u64,
    ts: Timestamp,
) {
    series.topic.publish(Message::lazy(
        seq,
        st.last_seq,
        MessageKind::Update,
        CandleUpdate {
            wire: wire.clone(),
            interval: st.series.interval,
            ts,
            candle,
        },
    ));
    st.last_seq = seq;
}

pub struct MarketData {
    config: FeedsConfig,
    hub: Arc<Hub>,
    instruments: Arc<Instruments>,
    feeds: Vec<Option<InstrumentFeeds>>,
    accounts: Arc<Accounts>,
    orders: OrderRouter,
    positions: PositionKeeper,
    pending: Vec<(Side, Ticks, Lots)>,
    pending_for: Option<(InstrumentId, u64, Timestamp)>,
    /// Earliest end of an open candle over every instrument and interval (`MAX`: none open):
    /// the first event stamped at or after it closes candles.
    candle_due: Timestamp,
    /// `seq` of the last event applied.
    last_seq: u64,
}

impl MarketData {
    pub fn new(config: FeedsConfig, hub: Arc<Hub>, instruments: Arc<Instruments>) -> Self {
        let accounts = Arc::new(Accounts::new(hub.clone(), instruments.clone()));
        let positions = Arc::new(Positions::new(hub.clone(), instruments.clone()));
        MarketData {
            orders: OrderRouter::new(accounts.clone()),
            positions: PositionKeeper::new(positions),
            accounts,
            config,
            hub,
            instruments,
            feeds: Vec::new(),
            pending: Vec::with_capacity(64),
            pending_for: None,
            candle_due: Timestamp::MAX,
            last_seq: 0,
        }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Per-account order streams: subscribe to an account's order updates through this.
    pub fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    pub fn instruments(&self) -> &Arc<Instruments> {
        &self.instruments
    }

    /// Every account's order updates in one stream (see [`crate::drop_copy`]).
    pub fn drop_copy(&self) -> &Arc<DropCopy> {
        self.accounts.drop_copy()
    }

    /// Positions per account and instrument: queries and the positions stream (see
    /// [`crate::positions`]).
    pub fn positions(&self) -> &Arc<Positions> {
        self.positions.positions()
    }

    /// The ticker state of an instrument as last published: best bid and ask, last trade,
    /// 24h statistics.
    pub fn ticker(&self, instrument: InstrumentId) -> Option<TickerState> {
        self.feed(instrument).map(|f| f.ticker.clone())
    }

    /// The feeds' state as of the last batch applied, cheap to take on the feeds thread: plain
    /// state is copied and history messages shared, nothing is encoded (that is
    /// [`FeedsSnapshot::encode`]'s work, on the thread that writes the snapshot). See
    /// [`crate::snapshot`].
    pub fn snapshot(&self) -> FeedsSnapshot {
        debug_assert!(self.pending_for.is_none(), "apply flushes every batch");
        FeedsSnapshot {
            last_seq: self.last_seq,
            depth_levels: self.config.depth_levels.max(1) as u64,
            instruments: self
                .feeds
                .iter()
                .flatten()
                .map(InstrumentFeeds::snapshot)
                .collect(),
            accounts: self.accounts.snapshot(),
            drop_copy: self.accounts.drop_copy().snapshot(),
            positions: self.positions.positions().snapshot(),
        }
    }

    /// Feeds that continue where `snapshot` was cut: every view, topic (with its snapshot
    /// source), account stream and history as they were, on `hub` (which nobody has
    /// subscribed to yet). The snapshot's instruments are added to `instruments`, which may
    /// already hold them with the same spec. Then apply the events after
    /// [`FeedsSnapshot::last_seq`].
    ///
    /// `config` may differ from the snapshot's: histories longer than `config.hub.history`
    /// keep their newest messages, candle series their newest closed candles, and a changed
    /// depth window starts each depth topic on a new chain (its next update has `prev_seq`
    /// 0). Nothing is changed when the snapshot is found inconsistent.
    pub fn restore(
        config: FeedsConfig,
        hub: Arc<Hub>,
        instruments: Arc<Instruments>,
        snapshot: FeedsSnapshot,
    ) -> Result<MarketData, FeedsSnapshotError> {
        let registrations = snapshot.check(&instruments)?;
        let mut md = MarketData::new(config, hub, instruments);
        md.positions.restore_open_orders(snapshot.open_orders());
        for (ins, registration) in snapshot.instruments.into_iter().zip(registrations) {
            let wire = match registration {
                Registration::Known(wire) => wire,
                Registration::New(wire) => md.instruments.insert(*wire),
            };
            let idx = wire.id() as usize;
            let mut feeds = InstrumentFeeds::new(&md.hub, wire, &md.config);
            feeds.restore(ins, snapshot.depth_levels, &md.config);
            md.candle_due = md.candle_due.min(feeds.candle_due());
            if md.feeds.len() <= idx {
                md.feeds.resize_with(idx + 1, || None);
            }
            md.feeds[idx] = Some(feeds);
        }
        md.positions.positions().restore(snapshot.positions);
        md.accounts.drop_copy().restore(snapshot.drop_copy);
        for account in snapshot.accounts {
            md.accounts.restore(account);
        }
        md.last_seq = snapshot.last_seq;
        Ok(md)
    }

    /// Replica depth book of an instrument (tests and tools).
    pub fn depth_book(&self, instrument: InstrumentId) -> Option<crate::depth::DepthBook> {
        self.feed(instrument).map(|f| f.depth.book())
    }

    fn feed(&self, instrument: InstrumentId) -> Option<&InstrumentFeeds> {
        self.feeds.get(instrument as usize).and_then(|f| f.as_ref())
    }

    fn feed_mut(&mut self, instrument: InstrumentId) -> Option<&mut InstrumentFeeds> {
        self.feeds
            .get_mut(instrument as usize)
            .and_then(|f| f.as_mut())
    }

    fn flush(&mut self) {
        if let Some((instrument, seq, ts)) = self.pending_for.take() {
            let pending = std::mem::take(&mut self.pending);
            if let Some(f) = self.feed_mut(instrument) {
                f.flush(&pending, seq, ts);
            }
            self.pending = pending;
            self.pending.clear();
        }
    }

    /// Applies a batch of events in sequence order.
    pub fn apply(&mut self, events: &[Event]) {
        for e in events {
            self.apply_one(e);
        }
        self.flush();
        if let Some(e) = events.last() {
            self.last_seq = e.seq;
        }
    }

    /// Closes, on every instrument, the candles whose interval ended by `ts`.
    fn close_candles(&mut self, seq: u64, ts: Timestamp) {
        self.flush();
        let mut due = Timestamp::MAX;
        for f in self.feeds.iter_mut().flatten() {
            due = due.min(f.roll_candles(seq, ts));
        }
        self.candle_due = due;
    }

    fn apply_one(&mut self, e: &Event) {
        if e.ts >= self.candle_due {
            self.close_candles(e.seq, e.ts);
        }
        if let EventKind::LevelChanged {
            instrument,
            side,
            price,
            size,
            ..
        } = e.kind
        {
            if self.pending_for.is_some_and(|p| p.0 != instrument) {
                self.flush();
            }
            self.pending.push((side, price, size));
            self.pending_for = Some((instrument, e.seq, e.ts));
            return;
        }
        self.flush();
        match &e.kind {
            EventKind::InstrumentAdded { instrument, spec } => {
                if let Ok(wire) = WireInstrument::new(*instrument, (**spec).clone()) {
                    let wire = self.instruments.insert(wire);
                    let idx = *instrument as usize;
                    if self.feeds.len() <= idx {
                        self.feeds.resize_with(idx + 1, || None);
                    }
                    self.feeds[idx] = Some(InstrumentFeeds::new(&self.hub, wire, &self.config));
                }
            }
            &EventKind::Trade {
                trade_id,
                instrument,
                price,
                size,
                aggressor,
                maker_order,
                ..
            } => {
                let mut due = self.candle_due;
                if let Some(f) = self.feed_mut(instrument) {
                    f.trade(e, (trade_id, price, size, aggressor), &mut due);
                    f.l3(
                        e.seq,
                        e.ts,
                        L3Event::Match {
                            order_id: maker_order,
                            price,
                            size,
                            trade_id,
                        },
                    );
                }
                self.candle_due = due;
            }
            &EventKind::OrderRested {
                order_id,
                instrument,
                side,
                price,
                visible,
                ..
            } => {
                if let Some(f) = self.feed_mut(instrument) {
                    f.l3(
                        e.seq,
                        e.ts,
                        L3Event::Add {
                            order_id,
                            side,
                            price,
                            size: visible,
                        },
                    );
                }
            }
            &EventKind::OrderAmended {
                order_id,
                instrument,
                visible,
                priority_kept,
                ..
            } => {
                let event = if priority_kept {
                    L3Event::Amend {
                        order_id,
                        size: visible,
                    }
                } else {
                    L3Event::Delete {
                        order_id,
                        reason: "requeue",
                    }
                };
                if let Some(f) = self.feed_mut(instrument) {
                    f.l3(e.seq, e.ts, event);
                }
            }
            &EventKind::OrderDone {
                order_id,
                instrument,
                reason,
                ..
            } => {
                if let Some(f) = self.feed_mut(instrument) {
                    f.l3(
                        e.seq,
                        e.ts,
                        L3Event::Delete {
                            order_id,
                            reason: reason.as_str(),
                        },
                    );
                }
            }
            &EventKind::TradingStatus { instrument, halted } => {
                if let Some(f) = self.feed_mut(instrument) {
                    f.ticker.halted = halted;
                    f.publish_ticker(e.seq, e.ts);
                }
            }
            _ => {}
        }
        self.orders.apply(e);
        self.positions.apply(e);
    }

    /// Advances time to `ts` with no event: closes the candles whose interval ended by `ts`,
    /// each with `seq` (normally the last event's; a series that already published at `seq`
    /// waits for the next event). [`apply`](Self::apply) does this by itself for every event,
    /// so a feed of events never needs it; a caller that ticks by the wall clock makes output
    /// that a replay of the same events reproduces only by ticking at the same points (see
    /// the module docs).
    pub fn tick(&mut self, seq: u64, ts: Timestamp) {
        if ts >= self.candle_due {
            self.close_candles(seq, ts);
        }
    }

    /// `seq` of the last event applied (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}
