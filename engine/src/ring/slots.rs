//! The storage of the multi-producer ring: a power-of-two array of slots, each with its own
//! sequence number (Dmitry Vyukov's bounded queue).
//!
//! A slot's sequence number says whose turn it is, so producers never have to read the
//! consumer's cursor (no shared "head" line bouncing between cores):
//! - `seq == pos`: empty, waiting for the producer that claims position `pos`;
//! - `seq == pos + 1`: holds the item of position `pos`, waiting for the consumer;
//! - after the pop the consumer sets `seq = pos + capacity`, the slot's next position.
//!
//! Positions are `u64` and never wrap in practice (2^63 pushes at a billion a second take
//! three centuries).

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::AtomicU64;

/// Smallest capacity: with one slot, "empty" (`seq ≡ i`) and "full" (`seq ≡ i + 1`) would be
/// the same residue and `Drop` could not tell which slots hold items.
pub(crate) const MIN_CAPACITY: usize = 2;

pub(crate) struct Slot<T> {
    pub(crate) seq: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

impl<T> Slot<T> {
    /// Moves `value` into the slot.
    ///
    /// # Safety
    /// The caller has exclusive access to the slot's value: it claimed the slot's current
    /// position (`seq == pos` observed with Acquire, then won the claim), and it has not yet
    /// published it, so no other thread reads or writes the value. Any previous item was moved
    /// out by the consumer, so nothing is overwritten without being dropped.
    pub(crate) unsafe fn write(&self, value: T) {
        // SAFETY: exclusive access per this function's contract.
        unsafe { (*self.value.get()).write(value) };
    }

    /// Moves the item out of the slot.
    ///
    /// # Safety
    /// The caller is the only consumer and observed `seq == pos + 1` with Acquire, so the
    /// producer's write happened before and no producer touches the value until the caller
    /// stores the next lap's `seq`. The item is moved out exactly once per lap.
    pub(crate) unsafe fn read(&self) -> T {
        // SAFETY: initialised and exclusively ours per this function's contract.
        unsafe { (*self.value.get()).assume_init_read() }
    }
}

pub(crate) struct Slots<T> {
    slots: Box<[Slot<T>]>,
    mask: u64,
}

// SAFETY: items are moved from producer threads to the consumer thread, hence `T: Send`. The
// `UnsafeCell`s are only accessed under the sequence protocol above, which gives each slot's
// value to exactly one thread at a time (claim → write → publish → read → release), with
// Release/Acquire on `seq` ordering the accesses. No `&T` is ever shared, so `T: Sync` is not
// needed.
unsafe impl<T: Send> Send for Slots<T> {}
// SAFETY: as above; shared references only reach the values through the sequence protocol.
unsafe impl<T: Send> Sync for Slots<T> {}

impl<T> Slots<T> {
    /// `capacity` rounded up to a power of two (at least [`MIN_CAPACITY`]), so a position maps to
    /// its slot with a mask instead of a division.
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(MIN_CAPACITY).next_power_of_two();
        let slots = (0..capacity as u64)
            .map(|i| Slot {
                seq: AtomicU64::new(i),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Slots {
            slots,
            mask: capacity as u64 - 1,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn at(&self, pos: u64) -> &Slot<T> {
        &self.slots[(pos & self.mask) as usize]
    }
}

impl<T> Drop for Slots<T> {
    fn drop(&mut self) {
        // With `&mut self` no claim is in flight, so each slot is either empty (`seq ≡ i`) or
        // holds an item (`seq ≡ i + 1`); MIN_CAPACITY keeps the two residues apart.
        let mask = self.mask;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let seq = *slot.seq.get_mut();
            if seq & mask == (i as u64 + 1) & mask {
                // SAFETY: the slot holds an initialised item nobody else can reach any more;
                // dropping it here is its one and only drop.
                unsafe { slot.value.get_mut().assume_init_drop() };
            }
        }
    }
}
