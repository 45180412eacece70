//! One side of a book: price levels, each a FIFO queue of orders linked through the pool.
//!
//! Prices near the reference price live in a tick-indexed ladder (an array of levels plus a
//! hierarchical bitmap of the non-empty ones), so the best price and the next level are found
//! without a tree walk. Prices beyond the ladder's window go to an ordered map. Internally a
//! price is turned into a *key* where lower is always better (asks: `price`, bids: `-price`),
//! so one code path serves both sides.

use crate::bitmap::Bitmap;
use crate::order::{OrderPool, NIL};
use crate::types::{Lots, Side, Ticks};
use std::collections::BTreeMap;

/// Levels are allocated a page at a time (6 KiB), when a price in the page is first used;
/// the pages within half a page of the reference price when the side is made, so an
/// instrument's first orders near the reference allocate nothing.
const PAGE: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    pub(crate) head: u32,
    pub(crate) tail: u32,
    /// Sum of the visible sizes of the level's orders.
    pub visible: Lots,
    pub orders: u32,
}

impl Level {
    const EMPTY: Level = Level {
        head: NIL,
        tail: NIL,
        visible: 0,
        orders: 0,
    };
}

pub(crate) struct PriceLevels {
    side: Side,
    /// Lowest key the ladder covers.
    lo: i64,
    bits: Bitmap,
    pages: Vec<Option<Box<[Level]>>>,
    far: BTreeMap<i64, Level>,
    /// Key of the best level, `i64::MAX` when the side is empty.
    best: i64,
}

impl PriceLevels {
    /// A side whose ladder covers `ladder_ticks` prices centred on `centre` (clamped to cover
    /// `[low, high]` entirely when it fits).
    pub fn new(side: Side, low: Ticks, high: Ticks, centre: Ticks, ladder_ticks: usize) -> Self {
        let width = (high - low + 1).max(1) as usize;
        let cap = width.min(ladder_ticks.max(1));
        let (klo, khi, kc) = match side {
            Side::Sell => (low, high, centre),
            Side::Buy => (-high, -low, -centre),
        };
        let lo = if cap == width {
            klo
        } else {
            (kc - cap as i64 / 2).clamp(klo, khi - cap as i64 + 1)
        };
        let mut levels = PriceLevels {
            side,
            lo,
            bits: Bitmap::new(cap),
            pages: (0..cap.div_ceil(PAGE)).map(|_| None).collect(),
            far: BTreeMap::new(),
            best: i64::MAX,
        };
        let half = PAGE as i64 / 2;
        for key in [kc - half, kc + half] {
            if levels.ladder_index(key).is_some() {
                levels.level_mut(key);
            }
        }
        levels
    }

    #[inline]
    fn key(&self, price: Ticks) -> i64 {
        match self.side {
            Side::Sell => price,
            Side::Buy => -price,
        }
    }

    #[inline]
    fn price(&self, key: i64) -> Ticks {
        match self.side {
            Side::Sell => key,
            Side::Buy => -key,
        }
    }

    #[inline]
    fn ladder_index(&self, key: i64) -> Option<usize> {
        let off = key.wrapping_sub(self.lo);
        (off >= 0 && (off as usize) < self.bits.len()).then_some(off as usize)
    }

    pub fn is_empty(&self) -> bool {
        self.best == i64::MAX
    }

    pub fn best_price(&self) -> Option<Ticks> {
        (!self.is_empty()).then(|| self.price(self.best))
    }

    /// Whether `price` is at least as good as the best of this side (used for crossing checks
    /// by the opposite side): for asks, `best <= price`; for bids, `best >= price`.
    #[inline]
    pub fn best_is_within(&self, limit: Ticks) -> bool {
        self.best <= self.key(limit)
    }

    /// The level at `price`, if any order rests there.
    pub fn level(&self, price: Ticks) -> Option<&Level> {
        let key = self.key(price);
        let level = match self.ladder_index(key) {
            Some(i) => self.pages[i / PAGE].as_ref().map(|p| &p[i % PAGE]),
            None => self.far.get(&key),
        };
        level.filter(|l| l.orders > 0)
    }

    /// Starts fetching the level at `price` and its bit, when both are on the ladder: an
    /// order about to rest there touches them at the end of its command, cold on a book
    /// that has not traded for a while.
    #[inline]
    pub fn prefetch(&self, price: Ticks) {
        if let Some(i) = self.ladder_index(self.key(price)) {
            if let Some(Some(page)) = self.pages.get(i / PAGE) {
                crate::prefetch::prefetch(page.as_ptr().wrapping_add(i % PAGE));
            }
            self.bits.prefetch(i);
        }
    }

    #[inline]
    fn level_mut(&mut self, key: i64) -> &mut Level {
        match self.ladder_index(key) {
            Some(i) => &mut self.pages[i / PAGE]
                .get_or_insert_with(|| vec![Level::EMPTY; PAGE].into())[i % PAGE],
            None => self.far.entry(key).or_insert(Level::EMPTY),
        }
    }

    /// The first non-empty key `>= key`.
    fn first_key_from(&self, key: i64) -> Option<i64> {
        let mut found = None;
        let end = self.lo + self.bits.len() as i64;
        if key < end {
            let from = if key <= self.lo {
                0
            } else {
                (key - self.lo) as usize
            };
            found = self.bits.first_set_from(from).map(|i| self.lo + i as i64);
        }
        if !self.far.is_empty() {
            if let Some((&k, _)) = self.far.range(key..).next() {
                if found.is_none_or(|f| k < f) {
                    found = Some(k);
                }
            }
        }
        found
    }

    /// The next worse price after `price` that has orders.
    pub fn next_price(&self, price: Ticks) -> Option<Ticks> {
        self.first_key_from(self.key(price) + 1)
            .map(|k| self.price(k))
    }

    /// Levels from best to worst.
    pub fn iter(&self) -> impl Iterator<Item = (Ticks, Level)> + '_ {
        let mut next = self.best_price();
        std::iter::from_fn(move || {
            let price = next?;
            next = self.next_price(price);
            Some((price, *self.level(price).expect("indexed level has orders")))
        })
    }

    /// Appends the order in `slot` at the back of its price level, showing `visible`.
    pub fn push_back(&mut self, pool: &mut OrderPool, slot: u32) {
        let (price, visible) = {
            let o = pool.get(slot);
            (o.price, o.visible)
        };
        let key = self.key(price);
        let level = self.level_mut(key);
        let tail = level.tail;
        level.tail = slot;
        if tail == NIL {
            level.head = slot;
        }
        level.visible += visible;
        level.orders += 1;
        let new_level = level.orders == 1;
        {
            let o = pool.get_mut(slot);
            o.prev = tail;
            o.next = NIL;
        }
        if tail != NIL {
            pool.get_mut(tail).next = slot;
        }
        if new_level {
            if let Some(i) = self.ladder_index(key) {
                self.bits.set(i);
            }
            if key < self.best {
                self.best = key;
            }
        }
    }

    /// Removes the order in `slot` from its level; drops the level when it empties.
    pub fn unlink(&mut self, pool: &mut OrderPool, slot: u32) {
        let (price, visible, prev, next) = {
            let o = pool.get(slot);
            (o.price, o.visible, o.prev, o.next)
        };
        if prev != NIL {
            pool.get_mut(prev).next = next;
        }
        if next != NIL {
            pool.get_mut(next).prev = prev;
        }
        let key = self.key(price);
        let level = self.level_mut(key);
        if prev == NIL {
            level.head = next;
        }
        if next == NIL {
            level.tail = prev;
        }
        level.visible -= visible;
        level.orders -= 1;
        if level.orders == 0 {
            debug_assert_eq!(level.visible, 0);
            match self.ladder_index(key) {
                Some(i) => self.bits.clear(i),
                None => {
                    self.far.remove(&key);
                }
            }
            if key == self.best {
                self.best = self.first_key_from(key + 1).unwrap_or(i64::MAX);
            }
        }
        let o = pool.get_mut(slot);
        o.prev = NIL;
        o.next = NIL;
    }

    /// Changes the visible size of a resting order in place (keeps its queue position).
    pub fn set_visible(&mut self, pool: &mut OrderPool, slot: u32, visible: Lots) {
        let (price, old) = {
            let o = pool.get_mut(slot);
            let old = o.visible;
            o.visible = visible;
            (o.price, old)
        };
        let key = self.key(price);
        let level = self.level_mut(key);
        level.visible = level.visible - old + visible;
    }

    /// Moves a resting order to the back of its level (an iceberg showing its next slice).
    pub fn requeue(&mut self, pool: &mut OrderPool, slot: u32) {
        let (price, next) = {
            let o = pool.get(slot);
            (o.price, o.next)
        };
        if next == NIL {
            return;
        }
        let prev = pool.get(slot).prev;
        // Unlink without touching the level's totals, then append.
        if prev != NIL {
            pool.get_mut(prev).next = next;
        }
        pool.get_mut(next).prev = prev;
        let key = self.key(price);
        let level = self.level_mut(key);
        if prev == NIL {
            level.head = next;
        }
        let tail = level.tail;
        level.tail = slot;
        pool.get_mut(tail).next = slot;
        let o = pool.get_mut(slot);
        o.prev = tail;
        o.next = NIL;
    }

    /// The first order of the best level.
    #[inline]
    pub fn best_head(&self) -> Option<u32> {
        if self.is_empty() {
            return None;
        }
        let key = self.best;
        let head = match self.ladder_index(key) {
            Some(i) => self.pages[i / PAGE].as_ref().map(|p| p[i % PAGE].head),
            None => self.far.get(&key).map(|l| l.head),
        };
        head.filter(|&h| h != NIL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(pool: &mut OrderPool, price: Ticks, visible: Lots) -> u32 {
        let s = pool.alloc().unwrap();
        let o = pool.get_mut(s);
        o.price = price;
        o.visible = visible;
        o.remaining = visible;
        s
    }

    #[test]
    fn bids_best_is_highest_and_asks_lowest_across_ladder_and_far_prices() {
        let mut pool = OrderPool::new(16, false);
        // A ladder of 8 ticks around 100 on a band of 50..=150.
        let mut bids = PriceLevels::new(Side::Buy, 50, 150, 100, 8);
        let mut asks = PriceLevels::new(Side::Sell, 50, 150, 100, 8);
        for p in [99, 60, 140, 101] {
            let s = order(&mut pool, p, 1);
            bids.push_back(&mut pool, s);
            let s = order(&mut pool, p, 1);
            asks.push_back(&mut pool, s);
        }
        let bid_prices: Vec<_> = bids.iter().map(|(p, _)| p).collect();
        let ask_prices: Vec<_> = asks.iter().map(|(p, _)| p).collect();
        assert_eq!(bid_prices, vec![140, 101, 99, 60]);
        assert_eq!(ask_prices, vec![60, 99, 101, 140]);
        assert!(asks.best_is_within(60) && !asks.best_is_within(59));
        assert!(bids.best_is_within(140) && !bids.best_is_within(141));
    }

    #[test]
    fn the_pages_around_the_reference_price_exist_from_the_start() {
        for side in [Side::Buy, Side::Sell] {
            let levels = PriceLevels::new(side, 1_000, 100_000, 50_000, 1 << 16);
            let allocated = |price: Ticks| {
                let i = levels.ladder_index(levels.key(price)).unwrap();
                levels.pages[i / PAGE].is_some()
            };
            let half = PAGE as Ticks / 2;
            assert!(allocated(50_000 - half) && allocated(50_000) && allocated(50_000 + half));
            assert!(
                !allocated(50_000 + 4 * PAGE as Ticks),
                "far pages wait for orders"
            );
            assert!(levels.is_empty() && levels.level(50_000).is_none());
        }
    }

    #[test]
    fn unlinking_keeps_fifo_and_moves_best() {
        let mut pool = OrderPool::new(16, false);
        let mut asks = PriceLevels::new(Side::Sell, 1, 1000, 500, 1 << 10);
        let a = order(&mut pool, 500, 2);
        let b = order(&mut pool, 500, 3);
        let c = order(&mut pool, 510, 4);
        for s in [a, b, c] {
            asks.push_back(&mut pool, s);
        }
        assert_eq!(asks.best_head(), Some(a));
        assert_eq!(asks.level(500).unwrap().visible, 5);
        asks.requeue(&mut pool, a);
        assert_eq!(asks.best_head(), Some(b));
        asks.unlink(&mut pool, b);
        assert_eq!(asks.best_head(), Some(a));
        asks.unlink(&mut pool, a);
        assert_eq!(asks.best_price(), Some(510));
        asks.set_visible(&mut pool, c, 1);
        assert_eq!(asks.level(510).unwrap().visible, 1);
        asks.unlink(&mut pool, c);
        assert!(asks.is_empty());
        assert!(asks.level(510).is_none());
    }
}
