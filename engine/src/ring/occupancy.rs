//! How full a ring is, read from any thread: what `/metrics` shows per ring.
//!
//! Each ring already keeps what its fill can be read from — the SPSC ring's two cursors, the
//! MPSC ring's claim cursor and per-slot sequence numbers — so measuring costs the push and
//! pop paths nothing: an [`Occupancy`] is a weak handle to the ring's shared state that reads
//! those when asked. The figure is a snapshot, possibly stale as soon as it is read, and
//! never above the capacity.

use std::fmt;
use std::sync::Weak;

/// A ring's shared state, as far as its fill goes.
pub(crate) trait Fill: Send + Sync {
    /// Items pushed (or claimed for a push) and not yet popped.
    fn len(&self) -> usize;
}

/// A handle that reads how many items a ring holds. Cheap to clone; it does not keep the
/// ring alive.
#[derive(Clone)]
pub struct Occupancy {
    ring: Weak<dyn Fill>,
    capacity: usize,
}

impl Occupancy {
    pub(crate) fn new(ring: Weak<dyn Fill>, capacity: usize) -> Occupancy {
        Occupancy { ring, capacity }
    }

    /// Items in the ring now; 0 once both of its ends are gone.
    pub fn len(&self) -> usize {
        self.ring
            .upgrade()
            .map_or(0, |ring| ring.len().min(self.capacity))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl fmt::Debug for Occupancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Occupancy")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}
