//! The contract the ingress needs from a multi-producer single-consumer queue, so the pipeline
//! (and the benches) can run on our ring or on `crossbeam_queue::ArrayQueue` alike.

use super::array_queue::{ArrayQueueConsumer, ArrayQueueProducer};
use super::error::{PopError, PushError};
use super::mpsc::{self, MpscConsumer, MpscProducer};
use super::occupancy::Occupancy;

/// A family of bounded MPSC queues: the marker type picks the implementation.
pub trait MpscQueue<T: Send>: 'static {
    type Producer: QueueProducer<T>;
    type Consumer: QueueConsumer<T>;
    /// Short name for bench reports.
    const NAME: &'static str;
    /// A queue of at least `capacity` items (implementations may round up).
    fn bounded(capacity: usize) -> (Self::Producer, Self::Consumer);
}

/// A producer end: shared by any number of threads. Dropping the last one closes the queue.
pub trait QueueProducer<T>: Clone + Send + Sync + 'static {
    /// Pushes without waiting, handing the item back on `Full` or `Closed`.
    fn try_push(&self, item: T) -> Result<(), PushError<T>>;
    fn capacity(&self) -> usize;
    /// A handle that reads how full the queue is, from any thread (for metrics).
    fn occupancy(&self) -> Occupancy;
}

/// The single consumer end. Dropping it closes the queue.
pub trait QueueConsumer<T>: Send + 'static {
    /// Pops without waiting; `Closed` only once closed and drained.
    fn try_pop(&mut self) -> Result<T, PopError>;
    /// Makes later pushes fail with `Closed`; items pushed before stay poppable.
    fn close(&mut self);
}

/// Our ring ([`super::mpsc`]): per-slot sequence numbers, closing for free in the tail.
#[derive(Debug, Clone, Copy, Default)]
pub struct MpscRing;

impl<T: Send + 'static> MpscQueue<T> for MpscRing {
    type Producer = MpscProducer<T>;
    type Consumer = MpscConsumer<T>;
    const NAME: &'static str = "mpsc-ring";

    fn bounded(capacity: usize) -> (Self::Producer, Self::Consumer) {
        mpsc::bounded(capacity)
    }
}

impl<T: Send + 'static> QueueProducer<T> for MpscProducer<T> {
    fn try_push(&self, item: T) -> Result<(), PushError<T>> {
        MpscProducer::try_push(self, item)
    }

    fn capacity(&self) -> usize {
        MpscProducer::capacity(self)
    }

    fn occupancy(&self) -> Occupancy {
        MpscProducer::occupancy(self)
    }
}

impl<T: Send + 'static> QueueConsumer<T> for MpscConsumer<T> {
    fn try_pop(&mut self) -> Result<T, PopError> {
        MpscConsumer::try_pop(self)
    }

    fn close(&mut self) {
        MpscConsumer::close(self)
    }
}

/// `crossbeam_queue::ArrayQueue` behind the same contract ([`super::array_queue`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ArrayQueueRing;

impl<T: Send + 'static> MpscQueue<T> for ArrayQueueRing {
    type Producer = ArrayQueueProducer<T>;
    type Consumer = ArrayQueueConsumer<T>;
    const NAME: &'static str = "array-queue";

    fn bounded(capacity: usize) -> (Self::Producer, Self::Consumer) {
        super::array_queue::bounded(capacity)
    }
}

/// The contract, checked once for every implementation.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::testing::{wait_or_fail, STRESS_DEADLINE};
    use std::thread;
    use std::time::Instant;

    fn fifo_full_and_close<Q: MpscQueue<u32>>() {
        let (tx, mut rx) = Q::bounded(4);
        assert!(tx.capacity() >= 4);
        let fill = tx.occupancy();
        assert_eq!(fill.capacity(), tx.capacity(), "{}", Q::NAME);
        let mut pushed = 0;
        while tx.try_push(pushed).is_ok() {
            pushed += 1;
        }
        assert_eq!(pushed as usize, tx.capacity(), "{}", Q::NAME);
        assert_eq!(fill.len(), tx.capacity(), "{}", Q::NAME);
        assert_eq!(tx.try_push(99), Err(PushError::Full(99)), "{}", Q::NAME);
        assert_eq!(rx.try_pop(), Ok(0));
        assert_eq!(fill.len(), tx.capacity() - 1, "{}", Q::NAME);
        rx.close();
        assert_eq!(tx.try_push(99), Err(PushError::Closed(99)), "{}", Q::NAME);
        for i in 1..pushed {
            assert_eq!(rx.try_pop(), Ok(i), "{}", Q::NAME);
        }
        assert_eq!(rx.try_pop(), Err(PopError::Closed), "{}", Q::NAME);
    }

    fn last_producer_drop_closes<Q: MpscQueue<u32>>() {
        let (tx, mut rx) = Q::bounded(4);
        let tx2 = tx.clone();
        drop(tx);
        tx2.try_push(5).unwrap();
        assert_eq!(rx.try_pop(), Ok(5));
        assert_eq!(rx.try_pop(), Err(PopError::Empty), "{}", Q::NAME);
        drop(tx2);
        assert_eq!(rx.try_pop(), Err(PopError::Closed), "{}", Q::NAME);
    }

    fn consumer_drop_closes<Q: MpscQueue<u32>>() {
        let (tx, rx) = Q::bounded(4);
        drop(rx);
        assert_eq!(tx.try_push(1), Err(PushError::Closed(1)), "{}", Q::NAME);
    }

    /// Producers race a close: what was accepted is delivered, in each producer's order.
    fn close_racing_pushes_loses_nothing<Q: MpscQueue<(usize, u32)>>() {
        const PRODUCERS: usize = 3;
        for round in 0..10 {
            let (tx, mut rx) = Q::bounded(8);
            let handles: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let tx = tx.clone();
                    thread::spawn(move || {
                        let deadline = Instant::now() + STRESS_DEADLINE;
                        let mut accepted = 0;
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
            let mut received = [0u32; PRODUCERS];
            let mut popped = 0;
            while let Ok((p, i)) = wait_or_fail("the next item", || match rx.try_pop() {
                Err(PopError::Empty) => None,
                other => Some(other),
            }) {
                assert_eq!(i, received[p], "{}", Q::NAME);
                received[p] += 1;
                popped += 1;
                if popped == 500 + round * 131 {
                    rx.close();
                }
            }
            let accepted: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(accepted, received, "{} round {round}", Q::NAME);
        }
    }

    /// One producer pushing flat out into a roomy queue while the consumer closes it many
    /// times over: a close that overlooks a push in flight reports `Closed` while the pushed
    /// item is still to land, and the item is lost.
    fn close_during_a_push_in_flight_loses_nothing<Q: MpscQueue<u32>>() {
        for round in 0..1500 {
            let (tx, mut rx) = Q::bounded(1024);
            let producer = thread::spawn(move || {
                let mut accepted = 0;
                while tx.try_push(accepted).is_ok() {
                    accepted += 1;
                }
                accepted
            });
            let mut received = 0;
            while let Ok(item) = wait_or_fail("the next item", || match rx.try_pop() {
                Err(PopError::Empty) => None,
                other => Some(other),
            }) {
                assert_eq!(item, received, "{}", Q::NAME);
                received += 1;
                if received == 1 + round % 7 {
                    rx.close();
                }
            }
            assert_eq!(
                producer.join().unwrap(),
                received,
                "{} round {round}",
                Q::NAME
            );
        }
    }

    #[test]
    fn mpsc_ring_meets_the_queue_contract() {
        fifo_full_and_close::<MpscRing>();
        last_producer_drop_closes::<MpscRing>();
        consumer_drop_closes::<MpscRing>();
        close_racing_pushes_loses_nothing::<MpscRing>();
        close_during_a_push_in_flight_loses_nothing::<MpscRing>();
    }

    #[test]
    fn array_queue_meets_the_queue_contract() {
        fifo_full_and_close::<ArrayQueueRing>();
        last_producer_drop_closes::<ArrayQueueRing>();
        consumer_drop_closes::<ArrayQueueRing>();
        close_racing_pushes_loses_nothing::<ArrayQueueRing>();
        close_during_a_push_in_flight_loses_nothing::<ArrayQueueRing>();
    }
}
