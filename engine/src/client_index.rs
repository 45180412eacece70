//! The client-order-id index: `(account, client order id)` → the order's slot in the pool.
//!
//! A cancel by client id starts here, so the index is built for one cache line per lookup, a
//! footprint that follows the live ids, and no pause when it grows:
//! - an entry is 8 bytes, a 32-bit hash of the key and the slot, in an open-addressed table
//!   probed linearly and kept at most half full, so a lookup reads one or two neighbouring
//!   entries of one cache line. The key itself is not stored: a hash that matches is confirmed
//!   on the order in the pool (which a cancel reads next anyway);
//! - the table starts small (it stays in the CPU's caches while few ids are live) and doubles
//!   without rehashing everything inside one command: each insert then moves a few entries of
//!   the old table into the new one, finishing well before the new one is half full, while
//!   lookups try the new table, then the old;
//! - the tables live in two buffers reserved at construction for the configured capacity (and
//!   touched then when the engine prefaults), used in turn: the next table's buffer is the one
//!   drained last, wiped a few entries per insert before it is needed. Up to the capacity,
//!   growing allocates nothing and touches no new page; beyond it, a buffer is allocated.
//!
//! The home of an entry is the top bits of its hash, so entries move to the larger table from
//! the stored hash alone, without reading their orders.

use crate::order::OrderPool;
use crate::types::{AccountId, ClientOrderId};

/// An empty entry: all zero bits, so a zeroed allocation is an empty table.
const EMPTY: u64 = 0;
/// A removed entry of the table being drained (its slot part is `u32::MAX`, which no slot
/// plus one reaches). Only the old table has these: removing from it must not move entries
/// across the drain's cursor.
const TOMBSTONE: u64 = u32::MAX as u64;
/// Entries of the old table moved by each insert while growing. The old table has twice as
/// many entries as the live ids that made it grow, so it is drained after a quarter as many
/// inserts: the new table is then at most 5/16 full, below its half-full trigger.
const DRAIN_PER_INSERT: usize = 8;
/// Entries of the spare buffer wiped by each insert while not draining. The drained table's
/// buffer holds at most half as many entries as the table in use, which takes at least 3/16 of
/// its length in inserts to fill: 8/3 entries per insert would do.
const WIPE_PER_INSERT: usize = 16;
/// The smallest table (entries).
const MIN_ENTRIES: usize = 16;
/// The first table (entries, 64 KiB), unless the capacity asks for less.
const FIRST_ENTRIES: usize = 8 * 1024;

/// One open-addressed table of packed entries (the hash in the high 32 bits, slot + 1 in the
/// low 32 bits) in the first `size` entries of its buffer.
struct Table {
    entries: Vec<u64>,
    size: usize,
    /// `32 - log2(size)`: a hash's home is `hash >> shift`.
    shift: u32,
    mask: usize,
}

impl Table {
    /// A table of `size` entries at the front of `buffer`, whose first `size` entries are
    /// [`EMPTY`].
    fn over(buffer: Vec<u64>, size: usize) -> Self {
        debug_assert!(size.is_power_of_two() && (MIN_ENTRIES..=1 << 32).contains(&size));
        debug_assert!(buffer.len() >= size);
        Table {
            entries: buffer,
            size,
            shift: 32 - size.trailing_zeros(),
            mask: size - 1,
        }
    }

    fn none() -> Self {
        Table {
            entries: Vec::new(),
            size: 0,
            shift: 32,
            mask: 0,
        }
    }

    #[inline]
    fn home(&self, hash: u32) -> usize {
        // `shift` is 32 only for `none`, which is never probed.
        (hash >> self.shift) as usize
    }

    /// The position of the entry of `hash` whose order has this key.
    #[inline]
    fn find(
        &self,
        hash: u32,
        account: AccountId,
        client_id: ClientOrderId,
        pool: &OrderPool,
    ) -> Option<usize> {
        if self.size == 0 {
            return None;
        }
        let mut i = self.home(hash);
        loop {
            let e = self.entries[i];
            if e == EMPTY {
                return None;
            }
            if (e >> 32) as u32 == hash && e != TOMBSTONE {
                let slot = entry_slot(e);
                let o = pool.get(slot);
                if o.account == account && o.client_id == client_id {
                    return Some(i);
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Puts an entry in the first free position from its home (a tombstone is not free: only
    /// the old table has them, and nothing is inserted there).
    #[inline]
    fn put(&mut self, entry: u64) {
        let mut i = self.home((entry >> 32) as u32);
        while self.entries[i] != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.entries[i] = entry;
    }

    /// Empties position `i` and shifts later entries of the run back over it, so every entry
    /// stays reachable from its home without tombstones.
    fn remove_at(&mut self, mut i: usize) {
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let e = self.entries[j];
            if e == EMPTY {
                break;
            }
            let home = self.home((e >> 32) as u32);
            // The entry at `j` may move to `i` unless its home lies cyclically in `(i, j]`.
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.entries[i] = e;
                i = j;
            }
        }
        self.entries[i] = EMPTY;
    }
}

#[inline]
fn entry_slot(e: u64) -> u32 {
    (e as u32).wrapping_sub(1)
}

#[inline]
fn hash(account: AccountId, client_id: ClientOrderId) -> u32 {
    // A multiply-xorshift mix (the finalizer of SplitMix64) of both halves of the key.
    let mut x = client_id ^ account.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) as u32
}

/// A zeroed buffer of `len` entries: fresh zero pages from the allocator, touched only when
/// `prefault` (written through a black box, so the stores of zeros over zeros stay).
fn zeroed(len: usize, prefault: bool) -> Vec<u64> {
    let mut buffer = vec![EMPTY; len];
    if prefault {
        std::hint::black_box(&mut buffer[..]).fill(EMPTY);
    }
    buffer
}

pub(crate) struct ClientIndex {
    /// Where inserts go.
    table: Table,
    /// The previous table while it is being drained into `table`, else [`Table::none`].
    old: Table,
    /// Next position of `old` to drain.
    cursor: usize,
    /// Live entries in `table`.
    in_table: usize,
    /// Live entries (not tombstones) still in `old`.
    in_old: usize,
    /// The buffer the next table goes in (empty while `old` holds it).
    spare: Vec<u64>,
    /// `spare[..spare_dirty]` may hold old entries; the rest is [`EMPTY`].
    spare_dirty: usize,
}

impl ClientIndex {
    /// An index that holds `capacity` ids without allocating. With `prefault`, every page of
    /// its buffers is written now rather than by the command that first uses it.
    pub fn with_capacity(capacity: usize, prefault: bool) -> Self {
        Self::with_first_table(capacity, prefault, FIRST_ENTRIES)
    }

    /// [`ClientIndex::with_capacity`] whose first table has `first` entries (at most the
    /// reserve's).
    fn with_first_table(capacity: usize, prefault: bool, first: usize) -> Self {
        let reserve = capacity
            .saturating_mul(2)
            .next_power_of_two()
            .clamp(MIN_ENTRIES, 1 << 32);
        let first = first.next_power_of_two().clamp(MIN_ENTRIES, reserve);
        ClientIndex {
            table: Table::over(zeroed(reserve, prefault), first),
            old: Table::none(),
            cursor: 0,
            in_table: 0,
            in_old: 0,
            spare: zeroed(reserve, prefault),
            spare_dirty: 0,
        }
    }

    /// Ids the index holds without allocating.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.table.entries.len().max(self.spare.len()) / 2
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.in_table + self.in_old
    }

    /// The slot of the live order `(account, client_id)`.
    #[inline]
    pub fn get(
        &self,
        account: AccountId,
        client_id: ClientOrderId,
        pool: &OrderPool,
    ) -> Option<u32> {
        let h = hash(account, client_id);
        if let Some(i) = self.table.find(h, account, client_id, pool) {
            return Some(entry_slot(self.table.entries[i]));
        }
        if self.in_old == 0 {
            return None;
        }
        let i = self.old.find(h, account, client_id, pool)?;
        Some(entry_slot(self.old.entries[i]))
    }

    /// Lookahead, first stage: starts loading the entry where `(account, client_id)` would be
    /// found (in the table inserts go to, which holds nearly every live id).
    #[inline]
    pub fn prefetch_entry(&self, account: AccountId, client_id: ClientOrderId) {
        if self.table.size > 0 {
            let i = self.table.home(hash(account, client_id));
            crate::prefetch::prefetch(&self.table.entries[i]);
        }
    }

    /// Lookahead, second stage (after [`ClientIndex::prefetch_entry`] had time to land): if
    /// the home entry holds the key's hash, starts loading the order it names, which a cancel
    /// reads next. Reads only the home entry: a miss here costs the command nothing.
    #[inline]
    pub fn prefetch_order(&self, account: AccountId, client_id: ClientOrderId, pool: &OrderPool) {
        if self.table.size == 0 {
            return;
        }
        let h = hash(account, client_id);
        let e = self.table.entries[self.table.home(h)];
        if e != EMPTY && (e >> 32) as u32 == h {
            pool.prefetch_order(entry_slot(e));
        }
    }

    /// Indexes the order in `slot` under its account and client id, which no live order of
    /// the index has (the engine checks before it places).
    pub fn insert(&mut self, slot: u32, pool: &OrderPool) {
        let o = pool.get(slot);
        debug_assert!(self.get(o.account, o.client_id, pool).is_none());
        if self.in_table + 1 > self.table.size / 2 {
            self.grow();
        }
        let entry = (u64::from(hash(o.account, o.client_id)) << 32) | u64::from(slot + 1);
        self.table.put(entry);
        self.in_table += 1;
        if self.in_old > 0 {
            self.drain(DRAIN_PER_INSERT);
        } else if self.spare_dirty > 0 {
            self.wipe(WIPE_PER_INSERT);
        }
    }

    /// Removes `(account, client_id)`; returns its slot.
    pub fn remove(
        &mut self,
        account: AccountId,
        client_id: ClientOrderId,
        pool: &OrderPool,
    ) -> Option<u32> {
        let h = hash(account, client_id);
        if let Some(i) = self.table.find(h, account, client_id, pool) {
            let slot = entry_slot(self.table.entries[i]);
            self.table.remove_at(i);
            self.in_table -= 1;
            return Some(slot);
        }
        if self.in_old == 0 {
            return None;
        }
        let i = self.old.find(h, account, client_id, pool)?;
        let slot = entry_slot(self.old.entries[i]);
        self.old.entries[i] = TOMBSTONE;
        self.in_old -= 1;
        if self.in_old == 0 {
            self.finish_drain();
        }
        Some(slot)
    }

    /// Slots of every indexed order, in no meaningful order.
    #[cfg(test)]
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.table.entries[..self.table.size]
            .iter()
            .chain(&self.old.entries[..self.old.size])
            .filter(|&&e| e != EMPTY && e != TOMBSTONE)
            .map(|&e| entry_slot(e))
    }

    /// Starts draining the half-full table into one twice its size, in the spare buffer when
    /// it is large enough.
    #[cold]
    fn grow(&mut self) {
        // The drain and the wipe outpace inserts (see `DRAIN_PER_INSERT`, `WIPE_PER_INSERT`),
        // so both have ended; finish them here should that ever not hold.
        if self.in_old > 0 {
            self.drain(usize::MAX);
        }
        let size = self.table.size * 2;
        let buffer = if self.spare.len() >= size {
            self.wipe(usize::MAX);
            std::mem::take(&mut self.spare)
        } else {
            // Beyond the reserve: a fresh buffer, its pages first touched by later commands.
            zeroed(size, false)
        };
        self.old = std::mem::replace(&mut self.table, Table::over(buffer, size));
        self.cursor = 0;
        self.in_old = self.in_table;
        self.in_table = 0;
        self.spare_dirty = 0;
        if self.in_old == 0 {
            self.finish_drain();
        }
    }

    /// Moves up to `budget` positions' worth of the old table into the new one.
    fn drain(&mut self, budget: usize) {
        let end = self.cursor.saturating_add(budget).min(self.old.size);
        for i in self.cursor..end {
            let e = self.old.entries[i];
            if e != EMPTY && e != TOMBSTONE {
                // Moved, not copied: a tombstone keeps the old table's probe runs whole for
                // the entries still to move.
                self.old.entries[i] = TOMBSTONE;
                self.table.put(e);
                self.in_table += 1;
                self.in_old -= 1;
            }
        }
        self.cursor = end;
        if self.in_old == 0 {
            self.finish_drain();
        }
    }

    /// The drained table's buffer becomes the spare (the larger one is kept if the spare
    /// already holds a buffer), to be wiped before the next growth.
    fn finish_drain(&mut self) {
        let old = std::mem::replace(&mut self.old, Table::none());
        self.cursor = 0;
        if old.entries.len() > self.spare.len() {
            self.spare = old.entries;
            self.spare_dirty = old.size;
        }
    }

    /// Wipes up to `budget` entries of the spare buffer's dirty front, from its end.
    fn wipe(&mut self, budget: usize) {
        let from = self.spare_dirty.saturating_sub(budget);
        self.spare[from..self.spare_dirty].fill(EMPTY);
        self.spare_dirty = from;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A pool holding an order per key, and the index of them all.
    struct Fixture {
        pool: OrderPool,
        index: ClientIndex,
        model: HashMap<(AccountId, ClientOrderId), u32>,
    }

    impl Fixture {
        fn new(capacity: usize) -> Self {
            Self::with_index(ClientIndex::with_capacity(capacity, false))
        }

        fn with_index(index: ClientIndex) -> Self {
            Fixture {
                pool: OrderPool::new(1 << 16, false),
                index,
                model: HashMap::new(),
            }
        }

        fn add(&mut self, account: AccountId, client_id: ClientOrderId) -> u32 {
            let slot = self.pool.alloc().unwrap();
            let o = self.pool.get_mut(slot);
            o.account = account;
            o.client_id = client_id;
            self.index.insert(slot, &self.pool);
            self.model.insert((account, client_id), slot);
            slot
        }

        fn drop_id(&mut self, account: AccountId, client_id: ClientOrderId) -> Option<u32> {
            let got = self.index.remove(account, client_id, &self.pool);
            let want = self.model.remove(&(account, client_id));
            assert_eq!(got, want);
            if let Some(slot) = got {
                self.pool.free(slot);
            }
            got
        }

        fn check(&self) {
            assert_eq!(self.index.len(), self.model.len());
            for (&(a, c), &slot) in &self.model {
                assert_eq!(self.index.get(a, c, &self.pool), Some(slot), "({a}, {c})");
            }
            let mut slots: Vec<u32> = self.index.slots().collect();
            let mut want: Vec<u32> = self.model.values().copied().collect();
            slots.sort_unstable();
            want.sort_unstable();
            assert_eq!(slots, want);
        }
    }

    #[test]
    fn finds_what_it_holds_and_nothing_else() {
        let mut f = Fixture::new(8);
        let a = f.add(1, 10);
        let b = f.add(2, 10);
        assert_eq!(f.index.get(1, 10, &f.pool), Some(a));
        assert_eq!(f.index.get(2, 10, &f.pool), Some(b));
        assert_eq!(f.index.get(1, 11, &f.pool), None);
        assert_eq!(f.index.get(3, 10, &f.pool), None);
        assert_eq!(f.drop_id(1, 10), Some(a));
        assert_eq!(f.index.get(1, 10, &f.pool), None);
        assert_eq!(f.drop_id(1, 10), None);
        f.check();
    }

    #[test]
    fn grows_a_little_at_a_time_and_keeps_every_id_reachable_meanwhile() {
        let mut f = Fixture::new(16);
        assert_eq!(f.index.capacity(), 16);
        for cid in 1..=16 {
            f.add(7, cid);
        }
        assert_eq!(f.index.in_old, 0, "not grown yet");
        f.add(7, 17);
        assert!(
            f.index.in_old > 0,
            "the old table drains over later inserts"
        );
        assert_eq!(f.index.capacity(), 32);
        f.check();
        // Removing from the old table while it drains leaves a tombstone, not a gap.
        let in_old = (1..=16).find(|&c| {
            let h = hash(7, c);
            f.index.old.find(h, 7, c, &f.pool).is_some()
        });
        if let Some(c) = in_old {
            f.drop_id(7, c);
            f.check();
        }
        let mut cid = 100;
        while f.index.in_old > 0 {
            f.add(8, cid);
            cid += 1;
            f.check();
        }
        assert!(f.index.old.entries.is_empty(), "the old table is freed");
        assert!(f.index.len() <= f.index.capacity());
    }

    #[test]
    fn within_its_capacity_it_grows_in_its_two_buffers_taking_turns() {
        let mut f = Fixture::with_index(ClientIndex::with_first_table(4_000, true, 16));
        let buffers = [f.index.table.entries.as_ptr(), f.index.spare.as_ptr()];
        assert_eq!(f.index.table.size, 16);
        let mut sizes = vec![16];
        for cid in 1..=4_000 {
            f.add(cid % 3, cid);
            // Remove some, so the tables hold tombstones and shifted runs when drained.
            if cid % 5 == 0 {
                f.drop_id((cid - 2) % 3, cid - 2);
            }
            assert!(
                buffers.contains(&f.index.table.entries.as_ptr()),
                "at id {cid}"
            );
            if sizes.last() != Some(&f.index.table.size) {
                sizes.push(f.index.table.size);
                f.check();
            }
        }
        assert_eq!(sizes, [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]);
        f.check();
        for (&(a, c), _) in f.model.clone().iter() {
            f.drop_id(a, c);
        }
        f.check();
    }

    #[test]
    fn a_prefaulted_index_is_sized_like_a_plain_one_and_starts_empty() {
        let prefaulted = ClientIndex::with_capacity(1_000, true);
        let plain = ClientIndex::with_capacity(1_000, false);
        assert_eq!(prefaulted.capacity(), plain.capacity());
        assert!(prefaulted.capacity() >= 1_000);
        assert_eq!(prefaulted.len(), 0);
        assert!(prefaulted.table.entries.iter().all(|&e| e == EMPTY));
        assert!(prefaulted.spare.iter().all(|&e| e == EMPTY));
    }

    #[test]
    fn a_lookup_confirms_the_key_on_the_order_not_only_the_hash() {
        let mut f = Fixture::new(16);
        let slot = f.add(1, 5);
        // Another key whose entry would carry the same hash is told apart by the order.
        let (h, i) = (
            hash(1, 5),
            f.index.table.find(hash(1, 5), 1, 5, &f.pool).unwrap(),
        );
        assert_eq!(f.index.table.entries[i] >> 32, u64::from(h));
        f.pool.get_mut(slot).client_id = 6;
        assert_eq!(f.index.get(1, 5, &f.pool), None);
    }

    proptest! {
        #[test]
        fn behaves_like_a_map_through_growth_and_removals(
            ops in proptest::collection::vec((any::<bool>(), 0u64..4, 0u64..300), 1..2_000),
            reserve in prop_oneof![Just(4usize), Just(1_200)],
        ) {
            // A reserve of 4 ids grows into fresh buffers; of 1,200, into its own two in turn.
            let mut f = Fixture::with_index(ClientIndex::with_first_table(reserve, false, 16));
            for (add, account, cid) in ops {
                if add && !f.model.contains_key(&(account, cid)) {
                    f.add(account, cid);
                } else {
                    f.drop_id(account, cid);
                }
                prop_assert_eq!(f.index.len(), f.model.len());
            }
            f.check();
        }
    }
}
