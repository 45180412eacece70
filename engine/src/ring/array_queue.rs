//! `crossbeam_queue::ArrayQueue` as an ingress queue, for comparison with our ring.
//!
//! `ArrayQueue` has no notion of closing, so this adapter adds it the only race-free way open
//! to an outsider: each push announces itself in an in-flight counter and checks a closed flag
//! (Dekker-style, both `SeqCst`), and the consumer reports `Closed` only once the flag is set,
//! no push is in flight and the queue is empty. That costs two extra atomic read-modify-writes
//! per push on a line all producers share — part of the price of this alternative, and
//! measured as such by the `rings` bench (which also measures the bare `ArrayQueue`).

use super::error::{PopError, PushError};
use super::occupancy::{Fill, Occupancy};
use super::queue::{QueueConsumer, QueueProducer};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

struct Shared<T> {
    queue: ArrayQueue<T>,
    /// Pushes between their closed check and their completion.
    pushing: CachePadded<AtomicUsize>,
    closed: AtomicBool,
    producers: AtomicUsize,
}

impl<T> Shared<T> {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

impl<T: Send> Fill for Shared<T> {
    fn len(&self) -> usize {
        self.queue.len()
    }
}

/// A queue of exactly `capacity` items (at least one).
pub fn bounded<T: Send>(capacity: usize) -> (ArrayQueueProducer<T>, ArrayQueueConsumer<T>) {
    let shared = Arc::new(Shared {
        queue: ArrayQueue::new(capacity.max(1)),
        pushing: CachePadded::new(AtomicUsize::new(0)),
        closed: AtomicBool::new(false),
        producers: AtomicUsize::new(1),
    });
    (
        ArrayQueueProducer {
            shared: shared.clone(),
        },
        ArrayQueueConsumer { shared },
    )
}

pub struct ArrayQueueProducer<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for ArrayQueueProducer<T> {
    fn clone(&self) -> Self {
        self.shared.producers.fetch_add(1, Ordering::Relaxed);
        ArrayQueueProducer {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for ArrayQueueProducer<T> {
    fn drop(&mut self) {
        if self.shared.producers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.close();
        }
    }
}

impl<T: Send + 'static> QueueProducer<T> for ArrayQueueProducer<T> {
    fn try_push(&self, item: T) -> Result<(), PushError<T>> {
        let shared = &*self.shared;
        // SeqCst on both sides: either the consumer sees us in flight, or we see the close.
        shared.pushing.fetch_add(1, Ordering::SeqCst);
        let result = if shared.closed.load(Ordering::SeqCst) {
            Err(PushError::Closed(item))
        } else {
            shared.queue.push(item).map_err(PushError::Full)
        };
        // Release: the push happens before a consumer that reads the count reaching zero.
        shared.pushing.fetch_sub(1, Ordering::Release);
        result
    }

    fn capacity(&self) -> usize {
        self.shared.queue.capacity()
    }

    fn occupancy(&self) -> Occupancy {
        let weak = Arc::downgrade(&self.shared);
        Occupancy::new(weak, self.shared.queue.capacity())
    }
}

pub struct ArrayQueueConsumer<T> {
    shared: Arc<Shared<T>>,
}

impl<T: Send + 'static> QueueConsumer<T> for ArrayQueueConsumer<T> {
    fn try_pop(&mut self) -> Result<T, PopError> {
        let shared = &*self.shared;
        if let Some(item) = shared.queue.pop() {
            return Ok(item);
        }
        if !shared.closed.load(Ordering::SeqCst) || shared.pushing.load(Ordering::SeqCst) != 0 {
            return Err(PopError::Empty);
        }
        // Closed and nothing in flight: every accepted push is in the queue by now.
        shared.queue.pop().ok_or(PopError::Closed)
    }

    fn close(&mut self) {
        self.shared.close();
    }
}

impl<T> Drop for ArrayQueueConsumer<T> {
    fn drop(&mut self) {
        self.shared.close();
    }
}
