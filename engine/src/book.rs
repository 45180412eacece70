//! A limit order book for one instrument: two sides of price levels, the armed stop orders and
//! the last trade price that triggers them. Orders themselves live in the engine's pool.

use crate::instrument::Instrument;
use crate::levels::{Level, PriceLevels};
use crate::types::{Side, Ticks};

/// An armed stop order, ordered so the next one to trigger sits at the end of its list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StopEntry {
    pub trigger: Ticks,
    /// Sequence number of the event that armed it: ties on the trigger go to the earlier one.
    pub arrival: u64,
    pub slot: u32,
}

pub struct Book {
    pub(crate) instrument: Instrument,
    pub(crate) bids: PriceLevels,
    pub(crate) asks: PriceLevels,
    /// Buy stops trigger when the last price rises to their trigger: sorted by trigger
    /// descending then arrival descending, so the lowest trigger (earliest first) is last.
    pub(crate) buy_stops: Vec<StopEntry>,
    /// Sell stops trigger when the last price falls to their trigger: sorted by trigger
    /// ascending then arrival descending, so the highest trigger (earliest first) is last.
    pub(crate) sell_stops: Vec<StopEntry>,
    pub(crate) last_price: Option<Ticks>,
    pub(crate) halted: bool,
}

impl Book {
    pub(crate) fn new(instrument: Instrument, ladder_ticks: usize) -> Self {
        let (lo, hi, centre) = (
            instrument.band_low,
            instrument.band_high,
            instrument.reference_ticks,
        );
        Book {
            bids: PriceLevels::new(Side::Buy, lo, hi, centre, ladder_ticks),
            asks: PriceLevels::new(Side::Sell, lo, hi, centre, ladder_ticks),
            instrument,
            buy_stops: Vec::with_capacity(64),
            sell_stops: Vec::with_capacity(64),
            last_price: None,
            halted: false,
        }
    }

    pub fn instrument(&self) -> &Instrument {
        &self.instrument
    }

    pub fn is_halted(&self) -> bool {
        self.halted
    }

    pub fn last_price(&self) -> Option<Ticks> {
        self.last_price
    }

    pub fn best_bid(&self) -> Option<Ticks> {
        self.bids.best_price()
    }

    pub fn best_ask(&self) -> Option<Ticks> {
        self.asks.best_price()
    }

    /// Price levels of one side, best first: `(price, visible size, order count)`.
    pub fn depth(&self, side: Side) -> impl Iterator<Item = (Ticks, Level)> + '_ {
        self.side(side).iter()
    }

    pub(crate) fn side(&self, side: Side) -> &PriceLevels {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    pub(crate) fn side_mut(&mut self, side: Side) -> &mut PriceLevels {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    pub(crate) fn stops_mut(&mut self, side: Side) -> &mut Vec<StopEntry> {
        match side {
            Side::Buy => &mut self.buy_stops,
            Side::Sell => &mut self.sell_stops,
        }
    }

    /// Number of armed stop orders on both sides.
    pub fn armed_stops(&self) -> usize {
        self.buy_stops.len() + self.sell_stops.len()
    }

    pub(crate) fn arm_stop(&mut self, side: Side, entry: StopEntry) {
        let stops = self.stops_mut(side);
        // Position keeps the list sorted as documented on the fields.
        let pos = stops.partition_point(|e| match side {
            Side::Buy => (e.trigger, e.arrival) > (entry.trigger, entry.arrival),
            Side::Sell => {
                e.trigger < entry.trigger
                    || (e.trigger == entry.trigger && e.arrival > entry.arrival)
            }
        });
        stops.insert(pos, entry);
    }

    /// Removes an armed stop; returns its entry.
    pub(crate) fn disarm_stop(&mut self, side: Side, slot: u32) -> Option<StopEntry> {
        let stops = self.stops_mut(side);
        let pos = stops.iter().position(|e| e.slot == slot)?;
        Some(stops.remove(pos))
    }

    /// Pops the next stop the last price has reached, buy stops first within a call (at most one
    /// side can be triggered at a time: stops are armed only on the far side of the last price).
    pub(crate) fn pop_triggered(&mut self) -> Option<StopEntry> {
        let last = self.last_price?;
        if self.buy_stops.last().is_some_and(|e| e.trigger <= last) {
            return self.buy_stops.pop();
        }
        if self.sell_stops.last().is_some_and(|e| e.trigger >= last) {
            return self.sell_stops.pop();
        }
        None
    }
}
