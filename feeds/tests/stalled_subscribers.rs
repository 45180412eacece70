//! A subscriber that never reads costs the engine nothing: the engine thread and the feeds
//! consumer run a simulated market to the end while hundreds of subscribers never read, and
//! each stalled subscriber is then handled by its topic's policy.

use std::sync::Arc;
use ticker_engine::pipeline::{Pipeline, PipelineConfig};
use ticker_engine::*;
use ticker_feeds::sim::{SimConfig, Simulator};
use ticker_feeds::*;

#[test]
fn the_engine_and_feeds_run_to_the_end_while_subscribers_never_read() {
    let spec = InstrumentSpec {
        symbol: "ETH-USD".into(),
        tick_size: "0.01".parse().unwrap(),
        lot_size: "0.0001".parse().unwrap(),
        min_size: "0.0001".parse().unwrap(),
        max_size: "1000".parse().unwrap(),
        reference_price: "3200".parse().unwrap(),
        band: "0.1".parse().unwrap(),
    };
    let instrument = Instrument::new(0, spec.clone()).unwrap();
    let config = FeedsConfig {
        hub: HubConfig {
            conflated_queue: 4,
            resync_queue: 16,
            lossless_queue: 64,
            history: 32,
            drop_copy_history: 32,
        },
        ..FeedsConfig::default()
    };
    let hub = Arc::new(Hub::new(config.hub.clone()));
    let mut md = MarketData::new(config, hub.clone(), Arc::new(Instruments::default()));
    let (pipeline, ingress, mut egress) = Pipeline::spawn(PipelineConfig::default()).unwrap();
    ingress
        .submit(Command::new(
            0,
            0,
            CommandKind::AddInstrument(Box::new(spec)),
        ))
        .unwrap();
    // The instrument's topics exist once its event is applied; subscribe to all of them.
    let first = egress.recv().unwrap();
    md.apply(&first);
    let setup_events = first.len();
    drop(first);
    let mut stalled = Vec::new();
    for channel in Channel::ALL {
        for _ in 0..50 {
            stalled.push(hub.subscribe(
                Topic::Market {
                    channel,
                    instrument: 0,
                },
                None,
            ));
        }
    }
    let traders: Vec<AccountId> = (1_000_000..1_000_100).collect();
    for &account in &traders {
        stalled.push(md.accounts().subscribe(account, None));
    }
    let consumer = std::thread::spawn(move || {
        let mut events = 0;
        // Setup's events were the first two.
        let mut last = 2u64;
        while let Some(batch) = egress.recv() {
            md.apply(&batch);
            events += batch.len();
            for e in batch.iter() {
                assert_eq!(e.seq, last + 1, "gap before {:?}", e);
                last = e.seq;
            }
        }
        events
    });
    // Busy: a trade every few commands, so trade subscribers overflow their queue.
    let config = SimConfig {
        takes_per_sec: 500,
        ..SimConfig::default()
    };
    let mut sim = Simulator::new(config, &[instrument], 1);
    const COMMANDS: u64 = 20_000;
    for _ in 0..COMMANDS {
        ingress.submit(sim.next_command()).unwrap();
    }
    drop(ingress);
    let events = consumer.join().unwrap();
    let engine = pipeline.join();
    assert!(
        events as u64 > COMMANDS,
        "every command's events reached the feeds"
    );
    assert_eq!(
        (setup_events + events) as u64,
        engine.last_seq(),
        "no event lost on the way"
    );
    // Each stalled subscriber now meets its policy, and its backlog never exceeded its limit.
    let mut outcomes = [0usize; 3];
    for sub in &mut stalled {
        loop {
            match sub.try_recv() {
                Ok(Some(Delivery::Conflated { .. })) => outcomes[0] += 1,
                Ok(Some(Delivery::Snapshot {
                    reason: SnapshotReason::Resync,
                    ..
                })) => outcomes[1] += 1,
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(Ended::TooSlow { .. }) => {
                    outcomes[2] += 1;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(
        outcomes[0] >= 4 * 50,
        "ticker and candle subscribers conflated: {outcomes:?}"
    );
    assert!(
        outcomes[1] >= 2 * 50,
        "depth and L3 subscribers resynced: {outcomes:?}"
    );
    assert!(
        outcomes[2] >= 50,
        "trade and busy account subscribers disconnected: {outcomes:?}"
    );
}
