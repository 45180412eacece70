//! The order pool: every live order of an engine in one pre-sized slab, linked intrusively into
//! its price level's FIFO queue, its account's list and its session's list. Nothing here
//! allocates after construction; a slot is recycled through a free list and its generation
//! counter makes every [`OrderId`] unique.

use crate::shard::Shard;
use crate::types::*;

/// "No slot" in the intrusive links.
pub(crate) const NIL: u32 = u32::MAX;

pub(crate) const FLAG_POST_ONLY: u8 = 1;
/// A stop order waiting for its trigger (not in a price level).
pub(crate) const FLAG_STOP_ARMED: u8 = 2;
/// Resting in a price level.
pub(crate) const FLAG_RESTING: u8 = 4;
pub(crate) const FLAG_LIVE: u8 = 8;

/// One order. Kept to two cache lines at most (checked below) and aligned to a cache line, so
/// an order never straddles a third one: the hot fields of the matching loop (links, sizes,
/// price, account) sit in the first 64 bytes, the bookkeeping in the second.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
pub(crate) struct Order {
    pub id: OrderId,
    pub account: AccountId,
    pub price: Ticks,
    pub remaining: Lots,
    pub visible: Lots,
    pub prev: u32,
    pub next: u32,
    pub display: Lots,
    pub filled: Lots,
    // -- second cache line: bookkeeping
    pub client_id: ClientOrderId,
    pub session: SessionId,
    pub expiry: Timestamp,
    pub trigger: Ticks,
    pub acct_prev: u32,
    pub acct_next: u32,
    pub sess_prev: u32,
    pub sess_next: u32,
    pub instrument: InstrumentId,
    pub generation: u32,
    pub side: Side,
    pub order_type: OrderType,
    pub tif: TimeInForce,
    pub stp: SelfTradePrevention,
    pub flags: u8,
}

const _: () = assert!(std::mem::size_of::<Order>() <= 128);

impl Order {
    pub(crate) fn vacant(generation: u32) -> Self {
        Order {
            id: OrderId::NONE,
            account: 0,
            price: 0,
            remaining: 0,
            visible: 0,
            prev: NIL,
            next: NIL,
            display: 0,
            filled: 0,
            client_id: 0,
            session: 0,
            expiry: 0,
            trigger: 0,
            acct_prev: NIL,
            acct_next: NIL,
            sess_prev: NIL,
            sess_next: NIL,
            instrument: 0,
            generation,
            side: Side::Buy,
            order_type: OrderType::Limit,
            tif: TimeInForce::Gtc,
            stp: SelfTradePrevention::CancelTaker,
            flags: 0,
        }
    }

    pub fn is(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The size a resting order shows: the whole remainder, or an iceberg's next slice.
    pub fn slice(&self) -> Lots {
        if self.display == 0 {
            self.remaining
        } else {
            self.display.min(self.remaining)
        }
    }
}

/// A copy of an [`OrderPool`]'s links ([`OrderPool::links`]), to walk its lists by slot.
pub(crate) struct Links {
    free_head: u32,
    /// Per slot: the next in its level's queue, or for a freed slot the next freed one.
    next: Vec<u32>,
    acct_next: Vec<u32>,
    sess_next: Vec<u32>,
}

impl Links {
    /// A level's queue from its head slot.
    pub fn queue(&self, head: u32) -> impl Iterator<Item = u32> + '_ {
        chain(&self.next, head)
    }

    /// An account's list from its head slot.
    pub fn account(&self, head: u32) -> impl Iterator<Item = u32> + '_ {
        chain(&self.acct_next, head)
    }

    /// A session's list from its head slot.
    pub fn session(&self, head: u32) -> impl Iterator<Item = u32> + '_ {
        chain(&self.sess_next, head)
    }

    /// The freed slots in the order [`OrderPool::alloc`] will reuse them (a prefaulted pool's
    /// never-used slots, chained after them, are beyond the copy and so end the walk).
    pub fn freed(&self) -> impl Iterator<Item = u32> + '_ {
        chain(&self.next, self.free_head)
    }
}

/// Slots from `head` along `next` until a slot outside `next` ([`NIL`] or beyond the copy).
fn chain(next: &[u32], head: u32) -> impl Iterator<Item = u32> + '_ {
    let mut s = head;
    std::iter::from_fn(move || {
        let slot = s;
        s = *next.get(slot as usize)?;
        Some(slot)
    })
}

pub(crate) struct OrderPool {
    slots: Vec<Order>,
    free_head: u32,
    capacity: u32,
    live: usize,
    /// The shard's bits, set in every id this pool gives ([`Shard::order_tag`]).
    tag: u64,
    /// The generation bits ids keep beside the tag ([`Shard::generation_mask`]).
    generation_mask: u32,
}

impl OrderPool {
    /// Reserves room for `capacity` orders. Without `prefault`, pages of the slab are only
    /// touched (and so only cost memory) once orders use them; with it, every slot is written
    /// now and chained into the free list in ascending order.
    pub fn new(capacity: usize, prefault: bool) -> Self {
        let capacity = Self::clamped_capacity(capacity);
        let mut pool = OrderPool {
            slots: Vec::with_capacity(capacity as usize),
            free_head: NIL,
            capacity,
            live: 0,
            tag: 0,
            generation_mask: u32::MAX,
        };
        if prefault {
            pool.slots
                .resize_with(capacity as usize, || Order::vacant(0));
            for slot in (0..capacity).rev() {
                pool.slots[slot as usize].next = pool.free_head;
                pool.free_head = slot;
            }
        }
        pool
    }

    /// This pool gives the order ids of `shard`.
    pub fn for_shard(mut self, shard: Shard) -> Self {
        self.tag = shard.order_tag();
        self.generation_mask = shard.generation_mask();
        self
    }

    /// The capacity a pool asked for `capacity` gets: slot numbers stop short of [`NIL`].
    pub fn clamped_capacity(capacity: usize) -> u32 {
        capacity.min(NIL as usize - 1) as u32
    }

    pub fn live(&self) -> usize {
        self.live
    }

    /// Whether [`OrderPool::alloc`] would give a slot.
    pub fn has_room(&self) -> bool {
        self.free_head != NIL || (self.slots.len() as u32) < self.capacity
    }

    /// Takes a slot and gives it a fresh id, or `None` when the pool is full.
    // LLVM inlined this into `place` by its own choice until the snapshot code (more users of
    // the pool) tipped it the other way, a few instructions more per command (cachegrind on
    // `ticker-bench engine`); the hint keeps it inlined.
    #[inline]
    pub fn alloc(&mut self) -> Option<u32> {
        let slot = if self.free_head != NIL {
            let slot = self.free_head;
            self.free_head = self.slots[slot as usize].next;
            // The next alloc reads and rewrites the new head's two lines; freed long ago,
            // they are cold, and the commands in between hide the miss.
            self.prefetch_order(self.free_head);
            slot
        } else if (self.slots.len() as u32) < self.capacity {
            // Within the reserved capacity: push never reallocates.
            self.slots.push(Order::vacant(0));
            self.slots.len() as u32 - 1
        } else {
            return None;
        };
        let o = &mut self.slots[slot as usize];
        let generation = (o.generation.wrapping_add(1) & self.generation_mask).max(1);
        *o = Order::vacant(generation);
        o.id = OrderId(self.tag | OrderId::new(slot, generation).0);
        o.flags = FLAG_LIVE;
        self.live += 1;
        Some(slot)
    }

    pub fn free(&mut self, slot: u32) {
        let o = &mut self.slots[slot as usize];
        debug_assert!(o.is(FLAG_LIVE));
        o.flags = 0;
        o.id = OrderId::NONE;
        o.next = self.free_head;
        self.free_head = slot;
        self.live -= 1;
    }

    /// Slots of the live orders, ascending.
    pub fn live_slots(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.slots.len() as u32).filter(|&s| self.slots[s as usize].is(FLAG_LIVE))
    }

    /// Slots ever handed out: every slot below it has held an order, none at or above it has.
    /// With the freed slots and their generations it is all a snapshot needs to make the pool
    /// hand out the same ids again, whatever its capacity or whether it was prefaulted.
    pub fn high_water(&self) -> u32 {
        // A slot that ever held an order has a generation of at least 1; never-used slots (of
        // generation 0) exist only as the tail a prefaulted pool has not reached yet.
        self.slots.partition_point(|o| o.generation != 0) as u32
    }

    /// The pool's links copied out in one sequential pass over the slots below the high-water
    /// mark. Following a long list through the slots costs a cache miss per order; through
    /// the copy (12 bytes a slot) it costs next to nothing, and the orders can then be read
    /// with loads that do not wait for each other.
    pub fn links(&self) -> Links {
        let used = &self.slots[..self.high_water() as usize];
        Links {
            free_head: self.free_head,
            next: used.iter().map(|o| o.next).collect(),
            acct_next: used.iter().map(|o| o.acct_next).collect(),
            sess_next: used.iter().map(|o| o.sess_next).collect(),
        }
    }

    /// A pool as a snapshot describes it, to be filled by [`OrderPool::occupy`] and
    /// [`OrderPool::push_freed`]: `high_water` vacant slots of generation 0, and beyond them,
    /// if `prefault`, the never-used rest chained ascending as [`OrderPool::new`] would.
    /// The caller checks `high_water <= capacity`.
    pub fn restored(capacity: usize, prefault: bool, high_water: u32) -> Self {
        let mut pool = OrderPool::new(capacity, false);
        debug_assert!(high_water <= pool.capacity);
        let len = if prefault { pool.capacity } else { high_water };
        pool.slots.resize_with(len as usize, || Order::vacant(0));
        for slot in (high_water..len).rev() {
            pool.slots[slot as usize].next = pool.free_head;
            pool.free_head = slot;
        }
        pool
    }

    /// Puts a live order in a vacant slot below the high-water mark.
    pub fn occupy(&mut self, slot: u32, mut order: Order) {
        debug_assert!(order.is(FLAG_LIVE) && !self.slots[slot as usize].is(FLAG_LIVE));
        // The id's generation field carries a shard's tag in its top bits; the slot keeps the
        // bare generation, as `alloc` gives it, so a slot freed later is as in the original.
        order.generation &= self.generation_mask;
        self.slots[slot as usize] = order;
        self.live += 1;
    }

    /// Pushes a vacant slot with its generation on the front of the free list, as
    /// [`OrderPool::free`] does: pushing a snapshot's freed slots last to first rebuilds its
    /// free list.
    pub fn push_freed(&mut self, slot: u32, generation: u32) {
        let o = &mut self.slots[slot as usize];
        debug_assert!(!o.is(FLAG_LIVE));
        o.generation = generation;
        o.next = self.free_head;
        self.free_head = slot;
    }

    /// The slot of a live order with this id.
    pub fn find(&self, id: OrderId) -> Option<u32> {
        let slot = id.slot();
        match self.slots.get(slot as usize) {
            Some(o) if o.id == id && o.is(FLAG_LIVE) && !id.is_none() => Some(slot),
            _ => None,
        }
    }

    #[inline]
    pub fn get(&self, slot: u32) -> &Order {
        &self.slots[slot as usize]
    }

    #[inline]
    pub fn get_mut(&mut self, slot: u32) -> &mut Order {
        &mut self.slots[slot as usize]
    }

    /// Starts loading one cache line of the order in `slot` (the first, `second == false`:
    /// queue links, sizes, price; or the second: account and session links, client id) so a
    /// later access does not wait for memory. A hint only: it changes nothing, and a slot
    /// outside the pool ([`NIL`]) is ignored.
    #[inline(always)]
    pub fn prefetch(&self, slot: u32, second: bool) {
        let Some(o) = self.slots.get(slot as usize) else {
            return;
        };
        let line = (o as *const Order)
            .cast::<u8>()
            .wrapping_add(if second { 64 } else { 0 });
        crate::prefetch::prefetch(line);
    }

    /// [`OrderPool::prefetch`] of both lines of the order in `slot`.
    #[inline(always)]
    pub fn prefetch_order(&self, slot: u32) {
        self.prefetch(slot, false);
        self.prefetch(slot, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_slots_get_new_ids_and_old_ids_stop_resolving() {
        let mut pool = OrderPool::new(2, false);
        let a = pool.alloc().unwrap();
        let id_a = pool.get(a).id;
        let b = pool.alloc().unwrap();
        assert!(pool.alloc().is_none(), "pool holds exactly its capacity");
        pool.free(a);
        let c = pool.alloc().unwrap();
        assert_eq!(c, a, "the freed slot is reused");
        assert_ne!(pool.get(c).id, id_a);
        assert_eq!(pool.find(id_a), None);
        assert_eq!(pool.find(pool.get(c).id), Some(c));
        assert_eq!(pool.find(pool.get(b).id), Some(b));
        assert_eq!(pool.find(OrderId::NONE), None);
        assert_eq!(pool.live(), 2);
    }

    #[test]
    fn a_prefaulted_pool_hands_out_every_slot_once_in_order() {
        let mut pool = OrderPool::new(3, true);
        let slots: Vec<_> = (0..3).map(|_| pool.alloc().unwrap()).collect();
        assert_eq!(slots, vec![0, 1, 2]);
        assert!(pool.alloc().is_none());
        let id = pool.get(1).id;
        pool.free(1);
        assert_eq!(pool.find(id), None);
        assert_eq!(pool.alloc(), Some(1));
    }

    /// Allocates and frees in a fixed pattern that leaves live slots, freed slots and, in a
    /// prefaulted pool, never-used ones.
    fn churn(pool: &mut OrderPool) -> Vec<OrderId> {
        let mut ids = Vec::new();
        let slots: Vec<u32> = (0..6).map(|_| pool.alloc().unwrap()).collect();
        for &s in &[slots[4], slots[1], slots[2]] {
            pool.free(s);
        }
        for _ in 0..2 {
            let s = pool.alloc().unwrap();
            ids.push(pool.get(s).id);
        }
        pool.free(slots[5]);
        pool.free(slots[0]);
        ids
    }

    #[test]
    fn prefaulted_and_plain_pools_agree_on_high_water_and_freed_slots() {
        let mut plain = OrderPool::new(10, false);
        let mut prefaulted = OrderPool::new(10, true);
        assert_eq!(churn(&mut plain), churn(&mut prefaulted));
        assert_eq!(plain.high_water(), 6);
        assert_eq!(prefaulted.high_water(), 6);
        let freed: Vec<_> = plain.links().freed().collect();
        // Most recently freed first; slot 2 went back into use.
        assert_eq!(freed, vec![0, 5, 4]);
        assert_eq!(prefaulted.links().freed().collect::<Vec<_>>(), freed);
        assert_eq!(
            plain.live_slots().collect::<Vec<_>>(),
            vec![1, 2, 3],
            "slots 1 and 2 were reused"
        );
    }

    #[test]
    fn a_full_prefaulted_pool_has_used_every_slot() {
        let mut pool = OrderPool::new(3, true);
        while pool.alloc().is_some() {}
        assert_eq!(pool.high_water(), 3);
        assert_eq!(pool.links().freed().count(), 0);
    }

    #[test]
    fn a_restored_pool_hands_out_the_ids_the_original_would_have() {
        for (original_prefault, restored_prefault) in [(false, true), (true, false), (true, true)] {
            let mut original = OrderPool::new(10, original_prefault);
            churn(&mut original);
            let mut restored = OrderPool::restored(10, restored_prefault, original.high_water());
            for slot in original.live_slots() {
                restored.occupy(slot, original.get(slot).clone());
            }
            let freed: Vec<_> = original.links().freed().collect();
            for &slot in freed.iter().rev() {
                restored.push_freed(slot, original.get(slot).generation);
            }
            assert_eq!(restored.live(), original.live());
            let next = |pool: &mut OrderPool| pool.alloc().map(|s| pool.get(s).id);
            let from_original: Vec<_> = std::iter::from_fn(|| next(&mut original)).collect();
            let from_restored: Vec<_> = std::iter::from_fn(|| next(&mut restored)).collect();
            assert_eq!(from_original.len(), 7, "until the pool is full");
            assert_eq!(from_restored, from_original);
        }
    }

    #[test]
    fn an_order_costs_at_most_128_bytes() {
        assert!(std::mem::size_of::<Order>() <= 128);
    }

    #[test]
    fn prefetching_any_slot_changes_nothing() {
        let mut pool = OrderPool::new(4, true);
        let a = pool.alloc().unwrap();
        let before = format!("{:?}", pool.get(a));
        for slot in [a, 1, 3, 4, NIL] {
            pool.prefetch_order(slot);
        }
        assert_eq!(format!("{:?}", pool.get(a)), before);
        assert_eq!(pool.live(), 1);
        assert_eq!(pool.alloc(), Some(1), "the free list is untouched");
    }

    #[test]
    fn every_slot_starts_on_a_cache_line() {
        let mut pool = OrderPool::new(8, false);
        let slots: Vec<u32> = (0..3).map(|_| pool.alloc().unwrap()).collect();
        for s in slots {
            let address = pool.get(s) as *const Order as usize;
            assert_eq!(address % 64, 0, "slot {s} at {address:#x}");
        }
        assert_eq!(std::mem::size_of::<Order>() % 64, 0);
    }
}
