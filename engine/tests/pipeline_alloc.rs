//! In steady state nothing on the pipeline's path allocates, even through a stall on a full
//! egress: commands move through the ingress ring by value, and the event buffers, all made at
//! start, come back from the consumer and are reused.
//!
//! Its own test binary (one test) because it counts every allocation of the process.

use std::thread;
use std::time::{Duration, Instant};
use ticker_engine::pipeline::RecvTimeoutError;
use ticker_engine::ring::WaitStrategy;
use ticker_engine::*;

mod counting_alloc;

const DEADLINE: Duration = Duration::from_secs(20);

/// A command the engine answers with exactly one `Rejected` event and no state change.
fn reject(corr: Correlation) -> Command {
    Command {
        deadline: 0,
        ts: corr,
        corr,
        kind: CommandKind::Cancel(Cancel {
            account: 1,
            order: OrderRef::Client(corr),
        }),
    }
}

fn recv(egress: &mut Egress) -> Batch {
    match egress.recv_deadline(Instant::now() + DEADLINE) {
        Ok(batch) => batch,
        Err(RecvTimeoutError::Timeout) => panic!("no batch for {DEADLINE:?}"),
        Err(RecvTimeoutError::Closed) => panic!("the engine stopped early"),
    }
}

#[test]
fn steady_state_allocates_nothing_on_the_pipeline_path() {
    const WARM_UP: u64 = 20_000;
    const MEASURED: u64 = 50_000;
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
    let (pipeline, ingress, mut egress) = Pipeline::spawn(config).unwrap();
    let producer = thread::spawn(move || {
        for corr in 1..=WARM_UP + MEASURED {
            ingress.submit(reject(corr)).unwrap();
        }
    });

    // Warm-up: lazily initialised state (thread handles, the consumer registering for
    // wake-ups) settles before counting starts.
    let mut received = 0;
    while received < WARM_UP {
        received += recv(&mut egress).len() as u64;
    }

    let before = counting_alloc::allocations();
    let mut last_seq = 0;
    let mut paused = false;
    while received < WARM_UP + MEASURED {
        if !paused && received >= WARM_UP + MEASURED / 2 {
            // Stop reading until the engine stalls on the full egress: every buffer is then
            // in circulation at once, which must not take a new one either.
            paused = true;
            let stalls = pipeline.egress_stalls();
            let deadline = Instant::now() + DEADLINE;
            while pipeline.egress_stalls() == stalls {
                assert!(Instant::now() < deadline, "the engine never stalled");
                thread::yield_now();
            }
        }
        let batch = recv(&mut egress);
        received += batch.len() as u64;
        last_seq = batch.last().map_or(last_seq, |e| e.seq);
    }
    let allocations = counting_alloc::allocations() - before;

    assert_eq!(last_seq, WARM_UP + MEASURED);
    producer.join().unwrap();
    assert!(egress.recv().is_none());
    pipeline.join();
    assert_eq!(
        allocations, 0,
        "{allocations} allocations while {MEASURED} commands went through"
    );
}
