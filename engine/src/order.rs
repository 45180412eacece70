//! The order pool: every live order of an engine in one pre-sized slab, linked intrusively into
//! its price level's FIFO queue, its account's list and its session's list. Nothing here
//! allocates after construction; a slot is recycled through a free list and its generation
//! counter makes every [`OrderId`] unique.

use crate::types::*;

/// "No slot" in the intrusive links.
pub(crate) const NIL: u32 = u32::MAX;

pub(crate) const FLAG_POST_ONLY: u8 = 1;
/// A stop order waiting for its trigger (not in a price level).
pub(crate) const FLAG_STOP_ARMED: u8 = 2;
/// Resting in a price level.
pub(crate) const FLAG_RESTING: u8 = 4;
pub(crate) const FLAG_LIVE: u8 = 8;

/// One order. Kept to two cache lines' worth at most (checked below): the hot fields of the
/// matching loop (links, sizes, price, account) sit in the first 64 bytes.
#[derive(Clone, Debug)]
#[repr(C)]
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
    fn vacant(generation: u32) -> Self {
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

pub(crate) struct OrderPool {
    slots: Vec<Order>,
    free_head: u32,
    capacity: u32,
    live: usize,
}

impl OrderPool {
    /// Reserves room for `capacity` orders. Without `prefault`, pages of the slab are only
    /// touched (and so only cost memory) once orders use them; with it, every slot is written
    /// now and chained into the free list in ascending order.
    pub fn new(capacity: usize, prefault: bool) -> Self {
        let capacity = capacity.min(NIL as usize - 1) as u32;
        let mut pool = OrderPool {
            slots: Vec::with_capacity(capacity as usize),
            free_head: NIL,
            capacity,
            live: 0,
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

    pub fn live(&self) -> usize {
        self.live
    }

    /// Takes a slot and gives it a fresh id, or `None` when the pool is full.
    pub fn alloc(&mut self) -> Option<u32> {
        let slot = if self.free_head != NIL {
            let slot = self.free_head;
            self.free_head = self.slots[slot as usize].next;
            slot
        } else if (self.slots.len() as u32) < self.capacity {
            // Within the reserved capacity: push never reallocates.
            self.slots.push(Order::vacant(0));
            self.slots.len() as u32 - 1
        } else {
            return None;
        };
        let o = &mut self.slots[slot as usize];
        let generation = o.generation.wrapping_add(1).max(1);
        *o = Order::vacant(generation);
        o.id = OrderId::new(slot, generation);
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

    #[test]
    fn an_order_costs_at_most_128_bytes() {
        assert!(std::mem::size_of::<Order>() <= 128);
    }
}
