//! Criterion benches of the ingress ring against `crossbeam_queue::ArrayQueue`, and of the
//! egress ring, moving `u64` items.
//!
//! - `rings/uncontended`: one thread pushes and pops in turn (no other core involved): the
//!   bare cost of a push plus a pop.
//! - `rings/1-producer`: a producer thread pushes, the bench thread pops; time per item moved.
//! - `rings/2-producers`: two producer threads push half the items each, the bench thread
//!   pops; time per item moved.
//!
//! Contenders: `mpsc-ring` (ours) and `array-queue` (crossbeam's `ArrayQueue` behind the same
//! `MpscQueue` contract, paying for close-safety with an in-flight counter) — the two the
//! pipeline can run its ingress on; `array-queue-raw` (the bare `ArrayQueue`, no close); and
//! `spsc-ring` (the egress ring) where one producer fits. Rings hold [`CAPACITY`] items; a
//! thread finding its ring full or empty spins briefly then yields, as the pipeline does on
//! small machines — with three threads on two cores that yielding is part of what is measured.
//! The clock starts once every thread is running.
//!
//! ```sh
//! cargo bench -p ticker-benches --bench rings
//! ```

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use ticker_engine::ring::{
    spsc, ArrayQueueRing, MpscQueue, MpscRing, PopError, QueueConsumer, QueueProducer, WaitStrategy,
};

/// Items each ring holds.
const CAPACITY: usize = 1024;
/// Items moved per push/pop pair in the uncontended bench.
const ROUND: u64 = 64;
const WAIT: WaitStrategy = WaitStrategy::spin_then_yield();

fn describe() {
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "rings: u64 items, capacity {CAPACITY}, full/empty waits {WAIT:?}, {cores} cores; \
         time and throughput are per item moved from producer(s) to the consumer"
    );
}

/// Pushes until accepted, waiting as the pipeline would.
fn push_blocking<P: QueueProducer<u64>>(producer: &P, item: u64) {
    let mut item = Some(item);
    WAIT.wait_for(None, || match producer.try_push(item.take().unwrap()) {
        Ok(()) => Some(()),
        Err(e) => {
            item = Some(e.into_inner());
            None
        }
    });
}

fn pop_blocking<C: QueueConsumer<u64>>(consumer: &mut C) -> u64 {
    WAIT.wait_for(None, || match consumer.try_pop() {
        Ok(item) => Some(item),
        Err(PopError::Empty) => None,
        Err(PopError::Closed) => panic!("closed while items were due"),
    })
}

/// `iters` items from `producers` threads into one consumer through queue family `Q`.
fn through_queue<Q: MpscQueue<u64>>(producers: u64, iters: u64) -> Duration {
    let (tx, mut rx) = Q::bounded(CAPACITY);
    let start = Arc::new(Barrier::new(producers as usize + 1));
    let per_producer = iters / producers;
    let total = per_producer * producers;
    thread::scope(|s| {
        for _ in 0..producers {
            let (tx, start) = (tx.clone(), start.clone());
            s.spawn(move || {
                start.wait();
                for i in 0..per_producer {
                    push_blocking(&tx, i);
                }
            });
        }
        start.wait();
        let began = Instant::now();
        for _ in 0..total {
            black_box(pop_blocking(&mut rx));
        }
        began.elapsed()
    })
}

/// The same with the bare `ArrayQueue`.
fn through_array_queue_raw(producers: u64, iters: u64) -> Duration {
    let queue = ArrayQueue::new(CAPACITY);
    let start = Barrier::new(producers as usize + 1);
    let per_producer = iters / producers;
    let total = per_producer * producers;
    thread::scope(|s| {
        for _ in 0..producers {
            let (queue, start) = (&queue, &start);
            s.spawn(move || {
                start.wait();
                for i in 0..per_producer {
                    let mut item = Some(i);
                    WAIT.wait_for(None, || match queue.push(item.take().unwrap()) {
                        Ok(()) => Some(()),
                        Err(back) => {
                            item = Some(back);
                            None
                        }
                    });
                }
            });
        }
        start.wait();
        let began = Instant::now();
        for _ in 0..total {
            black_box(WAIT.wait_for(None, || queue.pop()));
        }
        began.elapsed()
    })
}

/// The same with the egress ring (one producer only).
fn through_spsc(iters: u64) -> Duration {
    let (mut tx, mut rx) = spsc::bounded::<u64>(CAPACITY);
    let start = Barrier::new(2);
    thread::scope(|s| {
        let start = &start;
        s.spawn(move || {
            start.wait();
            for i in 0..iters {
                let mut item = Some(i);
                WAIT.wait_for(None, || match tx.try_push(item.take().unwrap()) {
                    Ok(()) => Some(()),
                    Err(e) => {
                        item = Some(e.into_inner());
                        None
                    }
                });
            }
        });
        start.wait();
        let began = Instant::now();
        for _ in 0..iters {
            black_box(WAIT.wait_for(None, || rx.try_pop().ok()));
        }
        began.elapsed()
    })
}

fn uncontended(c: &mut Criterion) {
    describe();
    let mut group = c.benchmark_group("rings/uncontended");
    group.throughput(Throughput::Elements(ROUND));
    fn round_trip<Q: MpscQueue<u64>>(b: &mut criterion::Bencher) {
        let (tx, mut rx) = Q::bounded(CAPACITY);
        b.iter(|| {
            for i in 0..ROUND {
                tx.try_push(black_box(i)).unwrap();
            }
            for _ in 0..ROUND {
                black_box(rx.try_pop().unwrap());
            }
        });
    }
    group.bench_function(<MpscRing as MpscQueue<u64>>::NAME, round_trip::<MpscRing>);
    group.bench_function(
        <ArrayQueueRing as MpscQueue<u64>>::NAME,
        round_trip::<ArrayQueueRing>,
    );
    group.bench_function("array-queue-raw", |b| {
        let queue = ArrayQueue::new(CAPACITY);
        b.iter(|| {
            for i in 0..ROUND {
                queue.push(black_box(i)).unwrap();
            }
            for _ in 0..ROUND {
                black_box(queue.pop().unwrap());
            }
        });
    });
    group.bench_function("spsc-ring", |b| {
        let (mut tx, mut rx) = spsc::bounded::<u64>(CAPACITY);
        b.iter(|| {
            for i in 0..ROUND {
                tx.try_push(black_box(i)).unwrap();
            }
            for _ in 0..ROUND {
                black_box(rx.try_pop().unwrap());
            }
        });
    });
    group.finish();
}

fn one_producer(c: &mut Criterion) {
    let mut group = c.benchmark_group("rings/1-producer");
    group.throughput(Throughput::Elements(1));
    group.bench_function(<MpscRing as MpscQueue<u64>>::NAME, |b| {
        b.iter_custom(|iters| through_queue::<MpscRing>(1, iters))
    });
    group.bench_function(<ArrayQueueRing as MpscQueue<u64>>::NAME, |b| {
        b.iter_custom(|iters| through_queue::<ArrayQueueRing>(1, iters))
    });
    group.bench_function("array-queue-raw", |b| {
        b.iter_custom(|iters| through_array_queue_raw(1, iters))
    });
    group.bench_function("spsc-ring", |b| b.iter_custom(through_spsc));
    group.finish();
}

fn two_producers(c: &mut Criterion) {
    let mut group = c.benchmark_group("rings/2-producers");
    group.throughput(Throughput::Elements(1));
    // `iters` is split evenly; an odd count moves one item fewer, which is noise at the
    // counts criterion picks.
    group.bench_function(<MpscRing as MpscQueue<u64>>::NAME, |b| {
        b.iter_custom(|iters| through_queue::<MpscRing>(2, iters.max(2)))
    });
    group.bench_function(<ArrayQueueRing as MpscQueue<u64>>::NAME, |b| {
        b.iter_custom(|iters| through_queue::<ArrayQueueRing>(2, iters.max(2)))
    });
    group.bench_function("array-queue-raw", |b| {
        b.iter_custom(|iters| through_array_queue_raw(2, iters.max(2)))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = rings;
    config = config();
    targets = uncontended, one_producer, two_producers
}
criterion_main!(rings);
