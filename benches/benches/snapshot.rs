//! Criterion benches of engine snapshots on the book the default engine workload leaves: its
//! 10,000 resting limit orders and 1,000,000 operations applied (untimed) leave ~170,000 live
//! orders on one instrument, 100 price levels, 8 accounts, every order with a client id.
//!
//! - `snapshot/take`: `Engine::snapshot()`, the engine's whole state in logical form.
//! - `snapshot/encode` and `snapshot/decode`: that snapshot to and from postcard bytes (the
//!   size is printed once, before the benches).
//! - `snapshot/restore`: `Engine::restore` with the workload's config (a pool of 1,010,001
//!   slots, not prefaulted), and `snapshot/restore_prefaulted` with every slot of the pool
//!   touched as `prefault = true` does (128 bytes a slot). The restored engine's drop is not
//!   timed.
//!
//! ```sh
//! cargo bench -p ticker-benches --bench snapshot
//! ```

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;
use ticker_benches::workload::{Workload, WorkloadConfig};
use ticker_engine::{Engine, EngineConfig, EngineSnapshot};

/// The default workload applied in full, and the config it ran with (minus prefault).
fn loaded_engine() -> (Engine, EngineConfig) {
    let workload = Workload::generate(&WorkloadConfig::default());
    let config = EngineConfig {
        prefault: false,
        ..workload.engine_config()
    };
    let mut engine = Engine::new(config.clone());
    let mut events = Vec::new();
    for cmd in workload
        .setup
        .iter()
        .chain(&workload.warmup)
        .chain(&workload.ops)
    {
        engine.apply(cmd, &mut events);
        events.clear();
    }
    (engine, config)
}

fn snapshot(c: &mut Criterion) {
    let (engine, config) = loaded_engine();
    let snapshot = engine.snapshot();
    let bytes = postcard::to_allocvec(&snapshot).expect("snapshot encodes");
    let live = engine.live_order_count();
    assert_eq!(snapshot.live_order_count(), live);
    println!(
        "snapshot of {live} live orders: {} bytes postcard-encoded ({:.1} bytes an order)",
        bytes.len(),
        bytes.len() as f64 / live as f64
    );
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.bench_function("take", |b| b.iter(|| black_box(&engine).snapshot()));
    group.bench_function("encode", |b| {
        b.iter(|| postcard::to_allocvec(black_box(&snapshot)).unwrap())
    });
    group.bench_function("decode", |b| {
        b.iter(|| postcard::from_bytes::<EngineSnapshot>(black_box(&bytes)).unwrap())
    });
    for prefault in [false, true] {
        let name = if prefault {
            "restore_prefaulted"
        } else {
            "restore"
        };
        let config = EngineConfig {
            prefault,
            ..config.clone()
        };
        group.bench_function(name, |b| {
            b.iter_with_large_drop(|| {
                Engine::restore(config.clone(), black_box(&snapshot)).map_err(|e| e.to_string())
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = snapshot
}
criterion_main!(benches);
