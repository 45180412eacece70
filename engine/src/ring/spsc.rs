//! The bounded lock-free single-producer single-consumer ring the egress runs on.
//!
//! Lamport's ring with cached cursors: each side owns its cursor, publishes it with a Release
//! store to its own padded line, and keeps a private copy of the other side's cursor that it
//! refreshes only when the ring looks full (producer) or empty (consumer). In steady state a
//! push or pop touches no line the other side writes.
//!
//! Dropping either end closes the ring: the producer's pushes then fail, and the consumer
//! still drains what was pushed before it sees [`PopError::Closed`].

use super::error::{PopError, PushError};
use super::occupancy::{Fill, Occupancy};
use crossbeam_utils::CachePadded;
use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

struct Shared<T> {
    buffer: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: u64,
    /// Next position to pop; written by the consumer only.
    head: CachePadded<AtomicU64>,
    /// Next position to push; written by the producer only.
    tail: CachePadded<AtomicU64>,
    /// Set when either end is dropped.
    closed: AtomicBool,
}

// SAFETY: items move from the producer's thread to the consumer's, hence `T: Send`. A buffer
// cell in `[head, tail)` is only touched by the consumer and one outside it only by the
// producer; the Release stores of `head`/`tail` and the other side's Acquire loads hand each
// cell over. No `&T` is shared, so `T: Sync` is not needed.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    fn cell(&self, pos: u64) -> *mut MaybeUninit<T> {
        self.buffer[(pos & self.mask) as usize].get()
    }

    fn capacity(&self) -> u64 {
        self.buffer.len() as u64
    }
}

impl<T: Send> Fill for Shared<T> {
    fn len(&self) -> usize {
        // Head first: the tail read after it is at least as far on, so the difference is
        // never negative.
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        tail.saturating_sub(head) as usize
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let (head, tail) = (*self.head.get_mut(), *self.tail.get_mut());
        for pos in head..tail {
            // SAFETY: positions in `[head, tail)` hold published items not yet popped, and
            // with `&mut self` no end is left to touch them; each is dropped once here.
            unsafe { (*self.cell(pos)).assume_init_drop() };
        }
    }
}

/// Creates a ring of at least `capacity` slots (rounded up to a power of two, minimum 1).
pub fn bounded<T: Send>(capacity: usize) -> (SpscProducer<T>, SpscConsumer<T>) {
    let capacity = capacity.max(1).next_power_of_two();
    let shared = Arc::new(Shared {
        buffer: (0..capacity)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect(),
        mask: capacity as u64 - 1,
        head: CachePadded::new(AtomicU64::new(0)),
        tail: CachePadded::new(AtomicU64::new(0)),
        closed: AtomicBool::new(false),
    });
    (
        SpscProducer {
            shared: shared.clone(),
            tail: 0,
            head_seen: 0,
        },
        SpscConsumer {
            shared,
            head: 0,
            tail_seen: 0,
        },
    )
}

/// The one producer end.
pub struct SpscProducer<T> {
    shared: Arc<Shared<T>>,
    tail: u64,
    /// Last consumer cursor read; the ring has at least `capacity - (tail - head_seen)` room.
    head_seen: u64,
}

impl<T: Send> SpscProducer<T> {
    /// Pushes `value`, or hands it back if the ring is full or the consumer is gone.
    pub fn try_push(&mut self, value: T) -> Result<(), PushError<T>> {
        let shared = &*self.shared;
        if shared.closed.load(Ordering::Relaxed) {
            return Err(PushError::Closed(value));
        }
        if self.tail - self.head_seen == shared.capacity() {
            // Acquire pairs with the consumer's Release: its read of the cell we are about to
            // reuse happens before our write.
            self.head_seen = shared.head.load(Ordering::Acquire);
            if self.tail - self.head_seen == shared.capacity() {
                return Err(PushError::Full(value));
            }
        }
        // SAFETY: `tail - head < capacity`, so the cell at `tail` is outside `[head, tail)`:
        // the consumer has moved its previous item out (or it never held one) and will not
        // touch it until we publish `tail + 1`. We are the only producer (`&mut self`).
        unsafe { (*shared.cell(self.tail)).write(value) };
        self.tail += 1;
        // Release: the write above happens before the consumer's Acquire load of `tail`.
        shared.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    pub fn capacity(&self) -> usize {
        self.shared.buffer.len()
    }

    /// A handle that reads how full the ring is, from any thread.
    pub fn occupancy(&self) -> Occupancy
    where
        T: 'static,
    {
        occupancy(&self.shared)
    }

    /// Whether the consumer end is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }
}

impl<T> Drop for SpscProducer<T> {
    fn drop(&mut self) {
        // Release: our last publish of `tail` happens before a consumer that sees `closed`.
        self.shared.closed.store(true, Ordering::Release);
    }
}

/// The one consumer end.
pub struct SpscConsumer<T> {
    shared: Arc<Shared<T>>,
    head: u64,
    /// Last producer cursor read; items in `[head, tail_seen)` are ready to pop.
    tail_seen: u64,
}

impl<T: Send> SpscConsumer<T> {
    /// Pops the oldest item; `Closed` once the producer is gone and everything is drained.
    pub fn try_pop(&mut self) -> Result<T, PopError> {
        let shared = &*self.shared;
        if self.head == self.tail_seen {
            // Acquire pairs with the producer's Release publish.
            self.tail_seen = shared.tail.load(Ordering::Acquire);
            if self.head == self.tail_seen {
                if !shared.closed.load(Ordering::Acquire) {
                    return Err(PopError::Empty);
                }
                // The producer may have published between our two loads; after seeing
                // `closed` (Acquire) its final `tail` is visible.
                self.tail_seen = shared.tail.load(Ordering::Acquire);
                if self.head == self.tail_seen {
                    return Err(PopError::Closed);
                }
            }
        }
        // SAFETY: `head < tail_seen`, so the cell at `head` holds a published item; we are
        // the only consumer (`&mut self`) and the producer will not reuse the cell until we
        // publish `head + 1`. The item is moved out exactly once.
        let value = unsafe { (*shared.cell(self.head)).assume_init_read() };
        self.head += 1;
        // Release: our read happens before the producer reuses the cell.
        shared.head.store(self.head, Ordering::Release);
        Ok(value)
    }

    pub fn capacity(&self) -> usize {
        self.shared.buffer.len()
    }

    /// A handle that reads how full the ring is, from any thread.
    pub fn occupancy(&self) -> Occupancy
    where
        T: 'static,
    {
        occupancy(&self.shared)
    }
}

fn occupancy<T: Send + 'static>(shared: &Arc<Shared<T>>) -> Occupancy {
    let weak = Arc::downgrade(shared);
    Occupancy::new(weak, shared.buffer.len())
}

impl<T> Drop for SpscConsumer<T> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::testing::wait_or_fail;
    use std::sync::atomic::AtomicUsize;
    use std::thread;

    #[test]
    fn items_come_out_in_push_order_and_a_full_ring_hands_the_item_back() {
        let (mut tx, mut rx) = bounded::<u32>(3);
        assert_eq!(tx.capacity(), 4);
        for i in 0..4 {
            tx.try_push(i).unwrap();
        }
        assert_eq!(tx.try_push(4), Err(PushError::Full(4)));
        for i in 0..4 {
            assert_eq!(rx.try_pop(), Ok(i));
        }
        assert_eq!(rx.try_pop(), Err(PopError::Empty));
    }

    #[test]
    fn occupancy_counts_items_pushed_and_not_popped_across_laps() {
        let (mut tx, mut rx) = bounded::<u32>(4);
        let fill = tx.occupancy();
        assert_eq!((fill.len(), fill.capacity()), (0, 4));
        for lap in 0..3 {
            for i in 0..4 {
                tx.try_push(i).unwrap();
                assert_eq!(fill.len(), i as usize + 1, "lap {lap}");
            }
            for i in 0..4 {
                rx.try_pop().unwrap();
                assert_eq!(rx.occupancy().len(), 3 - i, "lap {lap}");
            }
        }
        tx.try_push(9).unwrap();
        drop((tx, rx));
        assert_eq!(fill.len(), 0, "a ring whose ends are gone reads as empty");
    }

    #[test]
    fn the_consumer_drains_before_it_sees_the_producer_gone() {
        let (mut tx, mut rx) = bounded::<u32>(4);
        tx.try_push(1).unwrap();
        tx.try_push(2).unwrap();
        drop(tx);
        assert_eq!(rx.try_pop(), Ok(1));
        assert_eq!(rx.try_pop(), Ok(2));
        assert_eq!(rx.try_pop(), Err(PopError::Closed));
    }

    #[test]
    fn pushing_to_a_ring_whose_consumer_is_gone_fails_with_closed() {
        let (mut tx, rx) = bounded::<u32>(4);
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.try_push(1), Err(PushError::Closed(1)));
    }

    /// Catches an item dropped twice or leaked: cells before and after the wrapped head hold
    /// items when the ring is dropped.
    #[test]
    fn items_left_in_the_ring_are_dropped_exactly_once() {
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut tx, mut rx) = bounded::<Counted>(4);
        for _ in 0..3 {
            tx.try_push(Counted(drops.clone())).unwrap();
            drop(rx.try_pop().unwrap());
        }
        for _ in 0..3 {
            tx.try_push(Counted(drops.clone())).unwrap();
        }
        drop(rx);
        drop(tx);
        assert_eq!(drops.load(Ordering::Relaxed), 6);
    }

    /// A producer thread streams numbered items through a tiny ring; the consumer must see
    /// every number once, in order (a torn handover shows up as a wrong or repeated number).
    #[test]
    fn a_stream_through_a_tiny_ring_arrives_complete_and_in_order() {
        const ITEMS: u64 = 200_000;
        let (mut tx, mut rx) = bounded::<u64>(4);
        let producer = thread::spawn(move || {
            for i in 0..ITEMS {
                let mut item = Some(i);
                wait_or_fail("a free slot", || match tx.try_push(item.take().unwrap()) {
                    Ok(()) => Some(()),
                    Err(e) => {
                        item = Some(e.into_inner());
                        None
                    }
                });
            }
        });
        let mut expected = 0;
        while let Ok(i) = wait_or_fail("the next item", || match rx.try_pop() {
            Err(PopError::Empty) => None,
            other => Some(other),
        }) {
            assert_eq!(i, expected);
            expected += 1;
        }
        producer.join().unwrap();
        assert_eq!(expected, ITEMS);
    }
}
