//! The bounded lock-free multi-producer single-consumer ring the ingress runs on.
//!
//! Built from `slots` (per-slot sequence numbers) and `sequencer` (the claim cursor with its
//! closed mark). A push is one CAS on the tail plus a Release store on
//! the slot; a pop is one Acquire load and one Release store on the slot, and the consumer
//! keeps its cursor to itself. The single consumer is enforced by the types: [`MpscConsumer`]
//! is not `Clone` and pops through `&mut self`.
//!
//! The ring closes when the consumer closes it or is dropped, or when the last producer is
//! dropped; items pushed before the close are still delivered.

use super::error::{PopError, PushError};
use super::occupancy::{Fill, Occupancy};
use super::sequencer::{ClaimError, Sequencer};
use super::slots::Slots;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

struct Shared<T> {
    sequencer: Sequencer,
    slots: Slots<T>,
    /// Live producer handles; the last one to go closes the ring.
    producers: AtomicUsize,
}

impl<T: Send> Fill for Shared<T> {
    /// The consumer keeps its cursor to itself, so the head is found from the slots: of the
    /// last `capacity` positions claimed, those already popped (slot released for a later lap,
    /// `seq >= pos + capacity`) come first, then those still held. A binary search over them
    /// reads a few sequence numbers at scrape time and adds nothing to a push or a pop. Slots
    /// only move forward, so a race with pushes and pops gives a figure between the before and
    /// the after.
    fn len(&self) -> usize {
        let capacity = self.slots.capacity() as u64;
        let tail = self.sequencer.claimed();
        // A position is claimed only once the one a lap before it was popped.
        let (mut lo, mut hi) = (tail.saturating_sub(capacity), tail);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.slots.at(mid).seq.load(Ordering::Acquire) >= mid + capacity {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (tail - lo) as usize
    }
}

fn occupancy<T: Send + 'static>(shared: &Arc<Shared<T>>) -> Occupancy {
    let weak = Arc::downgrade(shared);
    Occupancy::new(weak, shared.slots.capacity())
}

/// Creates a ring of at least `capacity` slots (rounded up to a power of two, minimum 2).
pub fn bounded<T: Send>(capacity: usize) -> (MpscProducer<T>, MpscConsumer<T>) {
    let shared = Arc::new(Shared {
        sequencer: Sequencer::default(),
        slots: Slots::new(capacity),
        producers: AtomicUsize::new(1),
    });
    (
        MpscProducer {
            shared: shared.clone(),
        },
        MpscConsumer { shared, head: 0 },
    )
}

/// A producer end: cloneable and shareable between threads.
pub struct MpscProducer<T> {
    shared: Arc<Shared<T>>,
}

impl<T: Send> MpscProducer<T> {
    /// Pushes `value`, or hands it back if the ring is full or closed. Never waits.
    pub fn try_push(&self, value: T) -> Result<(), PushError<T>> {
        let shared = &*self.shared;
        match shared.sequencer.claim(&shared.slots) {
            Ok(pos) => {
                let slot = shared.slots.at(pos);
                // SAFETY: the claim observed `seq == pos` (slot free, previous item moved out)
                // and won the CAS for `pos`, so this thread alone owns the slot until the
                // store below publishes it.
                unsafe { slot.write(value) };
                // Release: the write above happens before the consumer's Acquire load that
                // sees `pos + 1`.
                slot.seq.store(pos + 1, Ordering::Release);
                Ok(())
            }
            Err(ClaimError::Full) => Err(PushError::Full(value)),
            Err(ClaimError::Closed) => Err(PushError::Closed(value)),
        }
    }

    pub fn capacity(&self) -> usize {
        self.shared.slots.capacity()
    }

    /// A handle that reads how full the ring is, from any thread.
    pub fn occupancy(&self) -> Occupancy
    where
        T: 'static,
    {
        occupancy(&self.shared)
    }

    pub fn is_closed(&self) -> bool {
        self.shared.sequencer.is_closed()
    }
}

impl<T> Clone for MpscProducer<T> {
    fn clone(&self) -> Self {
        // Relaxed: the count only decides who closes; a clone is made from a live handle, so
        // the count cannot be zero meanwhile.
        self.shared.producers.fetch_add(1, Ordering::Relaxed);
        MpscProducer {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for MpscProducer<T> {
    fn drop(&mut self) {
        // AcqRel: the last producer's close is ordered after every other producer's pushes.
        if self.shared.producers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.sequencer.close();
        }
    }
}

/// The one consumer end.
pub struct MpscConsumer<T> {
    shared: Arc<Shared<T>>,
    /// Next position to pop; only this handle reads or writes it.
    head: u64,
}

impl<T: Send> MpscConsumer<T> {
    /// Pops the oldest published item. `Empty` also covers a claimed slot whose producer has
    /// not published yet (items come out in claim order, so the consumer waits for it).
    pub fn try_pop(&mut self) -> Result<T, PopError> {
        let shared = &*self.shared;
        let head = self.head;
        let slot = shared.slots.at(head);
        // Acquire pairs with the producer's Release publish.
        if slot.seq.load(Ordering::Acquire) == head + 1 {
            // SAFETY: `seq == head + 1` means the item for `head` is published; this handle
            // is the only consumer (`&mut self`, not `Clone`), so nobody else reads it, and no
            // producer writes the slot until the store below frees it.
            let value = unsafe { slot.read() };
            // Release: our read happens before the next lap's producer writes.
            slot.seq
                .store(head + shared.slots.capacity() as u64, Ordering::Release);
            self.head = head + 1;
            Ok(value)
        } else if shared.sequencer.is_drained(head) {
            Err(PopError::Closed)
        } else {
            Err(PopError::Empty)
        }
    }

    /// Closes the ring: pushes fail from now on; items already pushed can still be popped.
    pub fn close(&mut self) {
        self.shared.sequencer.close();
    }

    pub fn capacity(&self) -> usize {
        self.shared.slots.capacity()
    }

    /// A handle that reads how full the ring is, from any thread.
    pub fn occupancy(&self) -> Occupancy
    where
        T: 'static,
    {
        occupancy(&self.shared)
    }
}

impl<T> Drop for MpscConsumer<T> {
    fn drop(&mut self) {
        // Producers must not fill a ring nobody will empty; the items left are dropped with
        // the slots when the last handle goes.
        self.shared.sequencer.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::testing::{wait_or_fail, STRESS_DEADLINE};
    use std::sync::atomic::AtomicUsize;
    use std::thread;
    use std::time::Instant;

    #[test]
    fn items_come_out_in_push_order_across_many_laps() {
        let (tx, mut rx) = bounded::<u64>(2);
        for lap in 0..1000u64 {
            tx.try_push(2 * lap).unwrap();
            tx.try_push(2 * lap + 1).unwrap();
            assert_eq!(rx.try_pop(), Ok(2 * lap));
            assert_eq!(rx.try_pop(), Ok(2 * lap + 1));
            assert_eq!(rx.try_pop(), Err(PopError::Empty));
        }
    }

    #[test]
    fn capacity_is_rounded_up_to_a_power_of_two_of_at_least_two() {
        assert_eq!(bounded::<u8>(0).0.capacity(), 2);
        assert_eq!(bounded::<u8>(1).0.capacity(), 2);
        assert_eq!(bounded::<u8>(5).0.capacity(), 8);
        assert_eq!(bounded::<u8>(64).1.capacity(), 64);
    }

    #[test]
    fn occupancy_counts_items_pushed_and_not_popped_across_laps() {
        let (tx, mut rx) = bounded::<u32>(8);
        let fill = tx.occupancy();
        assert_eq!((fill.len(), fill.capacity()), (0, 8));
        // Every fill level, starting at every offset of the lap.
        for start in 0..8 {
            for level in 0..=8 {
                for i in 0..level {
                    tx.try_push(i).unwrap();
                }
                assert_eq!(fill.len(), level as usize, "{level} items after {start}");
                for _ in 0..level {
                    rx.try_pop().unwrap();
                }
                assert_eq!(rx.occupancy().len(), 0);
            }
            tx.try_push(0).unwrap();
            rx.try_pop().unwrap();
        }
        tx.try_push(1).unwrap();
        drop((tx, rx));
        assert_eq!(fill.len(), 0, "a ring whose ends are gone reads as empty");
    }

    /// Read while producers and the consumer race, the figure stays within the capacity and
    /// ends at what is left.
    #[test]
    fn occupancy_read_during_pushes_and_pops_stays_within_bounds() {
        let (tx, mut rx) = bounded::<u64>(16);
        let fill = tx.occupancy();
        let producers: Vec<_> = (0..2)
            .map(|_| {
                let tx = tx.clone();
                thread::spawn(move || {
                    for i in 0..20_000 {
                        while tx.try_push(i).is_err() {
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect();
        let mut popped = 0;
        while popped < 40_000 - 5 {
            if rx.try_pop().is_ok() {
                popped += 1;
            }
            assert!(fill.len() <= 16);
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(fill.len(), 5);
    }

    #[test]
    fn push_on_full_ring_hands_the_item_back_and_frees_up_after_a_pop() {
        let (tx, mut rx) = bounded::<String>(4);
        for i in 0..4 {
            tx.try_push(i.to_string()).unwrap();
        }
        match tx.try_push("overflow".to_string()) {
            Err(PushError::Full(item)) => assert_eq!(item, "overflow"),
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(rx.try_pop().unwrap(), "0");
        tx.try_push("4".to_string()).unwrap();
        let rest: Vec<String> = std::iter::from_fn(|| rx.try_pop().ok()).collect();
        assert_eq!(rest, ["1", "2", "3", "4"]);
    }

    #[test]
    fn dropping_the_last_producer_closes_after_the_items_are_drained() {
        let (tx, mut rx) = bounded::<u32>(8);
        let tx2 = tx.clone();
        tx.try_push(1).unwrap();
        drop(tx);
        assert_eq!(rx.try_pop(), Ok(1));
        assert_eq!(rx.try_pop(), Err(PopError::Empty), "one producer is left");
        tx2.try_push(2).unwrap();
        drop(tx2);
        assert_eq!(rx.try_pop(), Ok(2));
        assert_eq!(rx.try_pop(), Err(PopError::Closed));
    }

    #[test]
    fn closing_rejects_new_pushes_but_delivers_earlier_ones() {
        let (tx, mut rx) = bounded::<u32>(8);
        tx.try_push(7).unwrap();
        rx.close();
        assert_eq!(tx.try_push(8), Err(PushError::Closed(8)));
        assert!(tx.is_closed());
        assert_eq!(rx.try_pop(), Ok(7));
        assert_eq!(rx.try_pop(), Err(PopError::Closed));
    }

    #[test]
    fn dropping_the_consumer_closes_the_ring_for_producers() {
        let (tx, rx) = bounded::<u32>(8);
        drop(rx);
        assert_eq!(tx.try_push(1), Err(PushError::Closed(1)));
    }

    /// Catches a slot dropped twice or never: each item is counted once when dropped.
    #[test]
    fn items_left_in_the_ring_are_dropped_exactly_once() {
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = bounded::<Counted>(4);
        // Two laps so that "full" slots sit both before and after the wrapped head.
        for _ in 0..6 {
            tx.try_push(Counted(drops.clone()))
                .unwrap_or_else(|_| panic!("full"));
            if drops.load(Ordering::Relaxed) < 3 {
                drop(rx.try_pop().unwrap());
            }
        }
        assert_eq!(drops.load(Ordering::Relaxed), 3);
        drop(tx);
        drop(rx);
        assert_eq!(drops.load(Ordering::Relaxed), 6);
    }

    /// Several producers push numbered items through a small ring (many laps, frequent
    /// full/empty races). Every item must arrive exactly once and each producer's items in
    /// the order it pushed them; a broken claim or publish shows up as a duplicate, a gap or a
    /// torn value.
    #[test]
    fn every_item_of_every_producer_arrives_once_and_in_producer_order() {
        const PRODUCERS: u64 = 4;
        const PER_PRODUCER: u64 = 50_000;
        let (tx, mut rx) = bounded::<(u64, u64)>(16);
        let handles: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let tx = tx.clone();
                thread::spawn(move || {
                    for i in 0..PER_PRODUCER {
                        let mut item = Some((p, i));
                        wait_or_fail("a free slot", || match tx.try_push(item.take().unwrap()) {
                            Ok(()) => Some(()),
                            Err(PushError::Full(back)) => {
                                item = Some(back);
                                None
                            }
                            Err(PushError::Closed(_)) => panic!("closed while pushing"),
                        });
                    }
                })
            })
            .collect();
        drop(tx);
        let mut next = [0u64; PRODUCERS as usize];
        let mut total = 0;
        while let Ok((p, i)) = wait_or_fail("the next item", || match rx.try_pop() {
            Err(PopError::Empty) => None,
            other => Some(other),
        }) {
            assert_eq!(i, next[p as usize], "producer {p} out of order");
            next[p as usize] += 1;
            total += 1;
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(total, PRODUCERS * PER_PRODUCER);
        assert!(next.iter().all(|&n| n == PER_PRODUCER));
    }

    /// Producers push until the ring closes under them. Every push that returned `Ok` must be
    /// delivered (a claim that won before the close still publishes) and nothing else.
    #[test]
    fn a_close_racing_with_pushes_loses_no_accepted_item() {
        const PRODUCERS: usize = 3;
        for round in 0..20 {
            let (tx, mut rx) = bounded::<(usize, u64)>(8);
            let handles: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let tx = tx.clone();
                    thread::spawn(move || {
                        let deadline = Instant::now() + STRESS_DEADLINE;
                        let mut accepted = 0u64;
                        loop {
                            match tx.try_push((p, accepted)) {
                                Ok(()) => accepted += 1,
                                Err(PushError::Full(_)) => {
                                    assert!(Instant::now() < deadline, "never closed");
                                    thread::yield_now();
                                }
                                Err(PushError::Closed(_)) => return accepted,
                            }
                        }
                    })
                })
                .collect();
            drop(tx);
            let mut received = [0u64; PRODUCERS];
            let close_after = 1_000 + round * 97;
            let mut popped = 0;
            loop {
                let item = wait_or_fail("the next item", || match rx.try_pop() {
                    Err(PopError::Empty) => None,
                    other => Some(other),
                });
                match item {
                    Ok((p, i)) => {
                        assert_eq!(i, received[p]);
                        received[p] += 1;
                        popped += 1;
                        if popped == close_after {
                            rx.close();
                        }
                    }
                    Err(_) => break,
                }
            }
            let accepted: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(accepted, received, "round {round}");
        }
    }
}
