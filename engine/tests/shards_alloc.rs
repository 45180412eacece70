//! In steady state nothing on the sharded pipeline's path allocates either: a command for
//! every shard is copied by value into each shard's ring, the merged egress parks on the
//! shards' doorbells without building anything, and folding the shards' outcomes into one
//! reply ([`FanIn`], sized up front) only fills and empties its map.
//!
//! Its own test binary (one test) because it counts every allocation of the process.

use std::thread;
use std::time::{Duration, Instant};
use ticker_engine::pipeline::{RecvTimeoutError, ShardedEgress, ShardedPipeline};
use ticker_engine::ring::WaitStrategy;
use ticker_engine::*;

mod counting_alloc;

const DEADLINE: Duration = Duration::from_secs(20);
const SHARDS: usize = 3;

/// A cancel by client id: it goes to every shard, and each answers with one `Rejected`.
fn reject(corr: Correlation) -> Command {
    Command::new(
        corr,
        corr,
        CommandKind::Cancel(Cancel {
            account: 1,
            order: OrderRef::Client(corr),
        }),
    )
}

fn recv(egress: &mut ShardedEgress) -> Batch {
    match egress.recv_deadline(Instant::now() + DEADLINE) {
        Ok((_, batch)) => batch,
        Err(RecvTimeoutError::Timeout) => panic!("no batch for {DEADLINE:?}"),
        Err(RecvTimeoutError::Closed) => panic!("a shard stopped early"),
    }
}

#[test]
fn steady_state_allocates_nothing_on_the_sharded_path() {
    const WARM_UP: u64 = 10_000;
    const MEASURED: u64 = 30_000;
    let config = PipelineConfig {
        ingress_capacity: 64,
        egress_capacity: 4,
        max_batch: 8,
        wait: WaitStrategy::Park {
            spins: 50,
            yields: 10,
            timeout: Duration::from_micros(200),
        },
        engine: EngineConfig {
            order_capacity: 1024,
            max_instruments: 1,
            ladder_ticks: 64,
            index_capacity: 64,
            ..EngineConfig::default()
        },
        clock: Clock::Caller,
    };
    let mut fan = FanIn::with_capacity((WARM_UP + MEASURED) as usize);
    for corr in 1..=WARM_UP + MEASURED {
        fan.expect_command(corr, &reject(corr).kind, SHARDS);
    }
    let (pipeline, ingress, mut egress) = ShardedPipeline::spawn(config, SHARDS).unwrap();
    let producer = thread::spawn(move || {
        for corr in 1..=WARM_UP + MEASURED {
            ingress.submit(reject(corr)).unwrap();
        }
    });

    let mut replies = 0;
    let mut take = |batch: &Batch, fan: &mut FanIn| {
        for e in batch.iter() {
            match fan.offer(&e.kind) {
                Offered::Folded(EventKind::Rejected {
                    reason: RejectReason::UnknownOrder,
                    ..
                }) => replies += 1,
                Offered::Held => {}
                other => panic!("{other:?}"),
            }
        }
        replies
    };
    // Warm-up: thread handles and the consumer's registrations with every shard settle.
    while take(&recv(&mut egress), &mut fan) < WARM_UP {}

    let before = counting_alloc::allocations();
    while take(&recv(&mut egress), &mut fan) < WARM_UP + MEASURED {}
    let allocations = counting_alloc::allocations() - before;

    producer.join().unwrap();
    assert!(egress.recv().is_none());
    assert_eq!(fan.pending(), 0);
    let engines = pipeline.join();
    assert!(engines.iter().all(|e| e.last_seq() == WARM_UP + MEASURED));
    assert_eq!(
        allocations, 0,
        "{allocations} allocations while {MEASURED} commands went to {SHARDS} shards"
    );
}
