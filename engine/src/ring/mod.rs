//! Lock-free bounded rings between the engine thread and the rest of tickerd, in the LMAX
//! disruptor's shape: a small core of single-purpose pieces.
//!
//! - `slots` and `sequencer`: storage with per-slot sequence numbers, and the producers'
//!   claim cursor (whose top bit closes the ring);
//! - [`mpsc`]: the multi-producer single-consumer ring built from them (ingress: many order
//!   entry threads, one engine thread);
//! - [`spsc`]: the single-producer single-consumer ring (egress: engine thread to one
//!   consumer, and the buffer-return path back);
//! - [`wait`] and [`doorbell`]: how a thread waits when its ring is empty or full, and how a
//!   publisher wakes a parked waiter;
//! - [`occupancy`]: how full a ring is, read from any thread for metrics at no cost to
//!   pushes and pops;
//! - [`queue`]: the MPSC contract the pipeline is generic over, implemented by our ring and by
//!   `crossbeam_queue::ArrayQueue` ([`array_queue`]) so the two can be measured side by side.
//!
//! Pushes never block and hand the item back on failure ([`PushError`]); waiting is the
//! caller's choice, made with a [`WaitStrategy`].

pub mod array_queue;
pub mod doorbell;
pub mod error;
pub mod mpsc;
pub mod occupancy;
pub mod queue;
mod sequencer;
mod slots;
pub mod spsc;
#[cfg(test)]
mod testing;
pub mod wait;

pub use doorbell::Doorbell;
pub use error::{PopError, PushError};
pub use mpsc::{MpscConsumer, MpscProducer};
pub use occupancy::Occupancy;
pub use queue::{ArrayQueueRing, MpscQueue, MpscRing, QueueConsumer, QueueProducer};
pub use spsc::{SpscConsumer, SpscProducer};
pub use wait::WaitStrategy;
