//! The peer of `ticker-bench engine`: [lobster](https://docs.rs/lobster), a well-known
//! single-threaded limit order book from crates.io, driven through its own API on the same
//! pre-generated [`Workload`] the engine runs, so the two are compared on identical streams in
//! one run.
//!
//! The stream is translated to lobster's `OrderType`s before anything is timed, one book per
//! instrument: a limit order keeps its client id as its lobster id (unique in the stream), so a
//! cancel by client id is a lobster cancel of that id; a market order gets an id above every
//! client id. lobster has no accounts, so it has no self-trade prevention: where the engine
//! cancels a taker that meets its own account's order, lobster trades. Its books are sized for
//! every limit order of their instrument (as the engine's pool is), and its trade statistics are
//! off.
//!
//! Like book mode, each run applies the stream twice on fresh books: a throughput pass without
//! per-operation timing, then a latency pass timing each `OrderBook::execute` (the returned
//! event, with its vector of fills, is dropped after the clock is read).

use crate::engine_load::repeat_max_ns;
use crate::report::{latency_histogram, record_ns, LatencySummary, ModeReport, Outcomes};
use crate::workload::Workload;
use anyhow::bail;
use lobster::{OrderBook, OrderEvent, OrderType, Side as LobsterSide};
use std::time::Instant;
use ticker_engine::{CommandKind, InstrumentId, OrderRef, OrderType as EngineOrderType, Side};

/// The name reports give the peer.
pub const NAME: &str = "lobster";

/// lobster's price-level queues start with this many slots (its default).
const QUEUE_CAPACITY: usize = 10;

const NOTE: &str = "lobster 0.7 (crates.io) through OrderBook::execute, one book per \
instrument, on the same pre-generated stream (client ids as lobster ids, no self-trade \
prevention: lobster has no accounts); ops_per_sec from a pass without per-op timing; latency \
percentiles from a separate pass on fresh books timing each execute with Instant";

/// The workload's measured operations (and warm-up) as lobster orders.
pub struct PeerStream {
    /// Orders per instrument a book is sized for: the instrument's limit orders in the stream.
    capacities: Vec<usize>,
    warmup: Vec<(InstrumentId, OrderType)>,
    ops: Vec<(InstrumentId, OrderType)>,
}

impl PeerStream {
    /// Translates the workload's warm-up and operations. Fails on a command lobster cannot
    /// express (the engine workloads only place limit and market orders and cancel by client id).
    pub fn of(workload: &Workload) -> anyhow::Result<Self> {
        let instruments = workload.config.instruments as usize;
        let mut capacities = vec![0usize; instruments];
        let mut next_market_id = u128::from(u64::MAX) + 1;
        let mut translate = |kind: &CommandKind| -> anyhow::Result<(InstrumentId, OrderType)> {
            Ok(match kind {
                CommandKind::Place(p) => {
                    let side = match p.side {
                        Side::Buy => LobsterSide::Bid,
                        Side::Sell => LobsterSide::Ask,
                    };
                    match p.order_type {
                        EngineOrderType::Limit if p.price > 0 && p.client_id != 0 => {
                            capacities[p.instrument as usize] += 1;
                            let order = OrderType::Limit {
                                id: u128::from(p.client_id),
                                side,
                                qty: p.size,
                                price: p.price as u64,
                            };
                            (p.instrument, order)
                        }
                        EngineOrderType::Market => {
                            next_market_id += 1;
                            let order = OrderType::Market {
                                id: next_market_id,
                                side,
                                qty: p.size,
                            };
                            (p.instrument, order)
                        }
                        other => bail!("the peer cannot place {other:?} order {p:?}"),
                    }
                }
                CommandKind::Cancel(c) => match c.order {
                    OrderRef::Client(cid) => {
                        // Which book holds the order is found at run time, as lobster would
                        // need a map of its own: instrument `u32::MAX` means "look it up".
                        let order = OrderType::Cancel {
                            id: u128::from(cid),
                        };
                        (InstrumentId::MAX, order)
                    }
                    OrderRef::Id(_) => bail!("the peer cancels by client id only"),
                },
                other => bail!("the peer cannot run {:?}", other.tag()),
            })
        };
        let warmup = workload
            .warmup
            .iter()
            .map(|c| translate(&c.kind))
            .collect::<anyhow::Result<_>>()?;
        let ops = workload
            .ops
            .iter()
            .map(|c| translate(&c.kind))
            .collect::<anyhow::Result<_>>()?;
        let mut stream = PeerStream {
            capacities,
            warmup,
            ops,
        };
        stream.route_cancels();
        Ok(stream)
    }

    /// Gives each cancel the instrument of the limit order it names, so the driver sends it to
    /// the right book without a lookup of its own inside the measurement.
    fn route_cancels(&mut self) {
        let mut book_of = std::collections::HashMap::new();
        for (instrument, order) in self.warmup.iter_mut().chain(self.ops.iter_mut()) {
            match *order {
                OrderType::Limit { id, .. } => {
                    book_of.insert(id, *instrument);
                }
                OrderType::Cancel { id } => {
                    // A cancel names an earlier limit order; with none it goes to book 0.
                    *instrument = book_of.get(&id).copied().unwrap_or(0);
                }
                OrderType::Market { .. } => {}
            }
        }
    }

    fn fresh_books(&self) -> Vec<OrderBook> {
        let mut books: Vec<OrderBook> = self
            .capacities
            .iter()
            .map(|&c| OrderBook::new(c.max(1), QUEUE_CAPACITY, false))
            .collect();
        for &(instrument, order) in &self.warmup {
            books[instrument as usize].execute(order);
        }
        books
    }

    /// Both passes and a repeat of the latency pass; the report's outcomes count lobster's
    /// events and fills (`rejected` stays 0: lobster answers every cancel `Canceled`, known id
    /// or not). Returns the report and [`crate::engine_load::repeat_max_ns`].
    pub fn measure(&self, ops_label: u64) -> anyhow::Result<(ModeReport, u64)> {
        let mut books = self.fresh_books();
        let start = Instant::now();
        for &(instrument, order) in &self.ops {
            std::hint::black_box(books[instrument as usize].execute(order));
        }
        let elapsed = start.elapsed();
        drop(books);

        let mut books = self.fresh_books();
        let mut histogram = latency_histogram();
        let mut outcomes = Outcomes::default();
        let mut first = Vec::with_capacity(self.ops.len());
        for &(instrument, order) in &self.ops {
            let t0 = Instant::now();
            let event = books[instrument as usize].execute(order);
            let ns = t0.elapsed().as_nanos() as u64;
            record_ns(&mut histogram, ns);
            first.push(ns);
            outcomes.events += 1;
            if let OrderEvent::Filled { fills, .. } | OrderEvent::PartiallyFilled { fills, .. } =
                &event
            {
                outcomes.trades += fills.len() as u64;
            }
        }
        drop(books);
        let mut books = self.fresh_books();
        let mut second = Vec::with_capacity(self.ops.len());
        for &(instrument, order) in &self.ops {
            let t0 = Instant::now();
            let event = books[instrument as usize].execute(order);
            second.push(t0.elapsed().as_nanos() as u64);
            drop(event);
        }
        let report = ModeReport {
            mode: NAME,
            ops: ops_label,
            ops_per_sec: self.ops.len() as f64 / elapsed.as_secs_f64(),
            latency: LatencySummary::of(&histogram),
            outcomes,
            note: NOTE.into(),
            workload: String::new(),
        };
        Ok((report, repeat_max_ns(&first, &second)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Mix, Workload};

    #[test]
    fn every_operation_is_translated_and_cancels_reach_the_book_of_their_order() {
        let w = Workload::generate(&Mix::Many.config(9, 5_000, 200));
        let stream = PeerStream::of(&w).unwrap();
        assert_eq!(stream.ops.len(), w.ops.len());
        assert_eq!(stream.warmup.len(), w.warmup.len());
        for ((instrument, order), cmd) in stream.ops.iter().zip(&w.ops) {
            match (&cmd.kind, order) {
                (CommandKind::Place(p), OrderType::Limit { id, qty, price, .. }) => {
                    assert_eq!(
                        (*id, *qty, *price),
                        (p.client_id.into(), p.size, p.price as u64)
                    );
                    assert_eq!(*instrument, p.instrument);
                }
                (CommandKind::Place(p), OrderType::Market { qty, .. }) => {
                    assert_eq!((*qty, *instrument), (p.size, p.instrument));
                }
                (CommandKind::Cancel(c), OrderType::Cancel { id }) => {
                    let OrderRef::Client(cid) = c.order else {
                        panic!("cancel by engine id")
                    };
                    assert_eq!(*id, u128::from(cid));
                    let placed = w.warmup.iter().chain(&w.ops).find_map(|c| match &c.kind {
                        CommandKind::Place(p) if p.client_id == cid => Some(p.instrument),
                        _ => None,
                    });
                    assert_eq!(Some(*instrument), placed);
                }
                (kind, order) => panic!("{kind:?} became {order:?}"),
            }
        }
    }

    #[test]
    fn the_peer_trades_on_the_issue3_stream() {
        let w = Workload::generate(&Mix::Issue3.config(1, 20_000, 1_000));
        let (report, repeat_max_ns) = PeerStream::of(&w).unwrap().measure(20_000).unwrap();
        assert_eq!(report.mode, NAME);
        assert!(0 < repeat_max_ns && repeat_max_ns <= report.latency.max_ns);
        assert_eq!(report.outcomes.events, 20_000);
        assert!(report.outcomes.trades > 1_000, "{:?}", report.outcomes);
        assert!(report.ops_per_sec > 0.0);
    }
}
