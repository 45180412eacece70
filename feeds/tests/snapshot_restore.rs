//! Snapshot and restore against the real engine: feeds restored from a snapshot and fed the
//! rest of the stream publish, on every topic, exactly what feeds that never stopped publish;
//! a client resuming across the restart gets no gap and no duplicate; corrupt snapshots fail
//! with typed errors.

mod common;

use common::{market_stream, run, Step, Stream};
use std::sync::{Arc, OnceLock};
use ticker_engine::*;
use ticker_feeds::hub::{Delivery, SnapshotReason};
use ticker_feeds::*;

/// Histories long enough to hold every message of the stream, so that comparing histories
/// compares everything each topic published.
fn full_history() -> FeedsConfig {
    FeedsConfig {
        hub: HubConfig {
            history: 1 << 16,
            ..HubConfig::default()
        },
        ..FeedsConfig::default()
    }
}

fn stream() -> &'static Stream {
    static STREAM: OnceLock<Stream> = OnceLock::new();
    STREAM.get_or_init(|| market_stream(11, 12_000))
}

fn fresh(config: &FeedsConfig) -> MarketData {
    let hub = Arc::new(Hub::new(config.hub.clone()));
    MarketData::new(config.clone(), hub, Arc::new(Instruments::default()))
}

/// Every topic the stream can publish on.
fn topics(stream: &Stream) -> Vec<Topic> {
    let market = (0..3).flat_map(|instrument| {
        Channel::ALL.map(|channel| Topic::Market {
            channel,
            instrument,
        })
    });
    market
        .chain(stream.accounts.iter().map(|a| Topic::Orders(*a)))
        .chain([Topic::DropCopy, Topic::Positions])
        .collect()
}

/// Feeds fed `steps[..cut]`, snapshotted, encoded, decoded and restored on a fresh hub and
/// registry. Also checks that encoding is deterministic and survives a round trip.
fn restored_at(config: &FeedsConfig, steps: &[Step], cut: usize) -> MarketData {
    let mut before = fresh(config);
    run(&mut before, &steps[..cut]);
    let bytes = before.snapshot().encode();
    assert_eq!(
        bytes,
        before.snapshot().encode(),
        "encoding is deterministic"
    );
    let decoded = FeedsSnapshot::decode(&bytes).unwrap();
    assert_eq!(decoded.last_seq(), before.last_seq());
    assert_eq!(
        decoded.encode(),
        bytes,
        "a decoded snapshot encodes the same"
    );
    let hub = Arc::new(Hub::new(config.hub.clone()));
    MarketData::restore(
        config.clone(),
        hub,
        Arc::new(Instruments::default()),
        decoded,
    )
    .unwrap()
}

/// The first delivery a new subscriber gets: the topic's snapshot (or latest message).
fn first_delivery(md: &MarketData, topic: Topic) -> Option<Delivery> {
    let mut sub = match topic {
        Topic::Orders(account) => md.accounts().subscribe(account, None),
        Topic::Market { .. } | Topic::DropCopy | Topic::Positions => {
            md.hub().subscribe(topic, None)
        }
    };
    sub.try_recv().unwrap()
}

fn drain(md: &MarketData, topic: Topic, from_seq: u64) -> Vec<Delivery> {
    let mut sub = md.hub().subscribe(topic, Some(from_seq));
    std::iter::from_fn(|| sub.try_recv().unwrap()).collect()
}

#[test]
fn restored_feeds_publish_exactly_what_uninterrupted_feeds_publish() {
    let stream = stream();
    let steps = &stream.steps;
    let config = full_history();
    let mut uninterrupted = fresh(&config);
    run(&mut uninterrupted, steps);
    let topics = topics(stream);
    // The cut before anything (an empty snapshot), two inside, and after everything.
    for cut in [0, steps.len() / 3, 2 * steps.len() / 3 + 1, steps.len()] {
        let mut restored = restored_at(&config, steps, cut);
        run(&mut restored, &steps[cut..]);
        assert_eq!(restored.last_seq(), uninterrupted.last_seq());
        let mut published_after_cut = 0;
        for &topic in &topics {
            let expected = uninterrupted.hub().topic(topic).history();
            let got = restored.hub().topic(topic).history();
            assert!(
                expected.len() < config.hub.history_len(topic),
                "{topic:?} kept all"
            );
            assert_eq!(got.len(), expected.len(), "{topic:?} after cut {cut}");
            for (e, g) in expected.iter().zip(&got) {
                // Equal messages: seq, prev_seq, kind, JSON bytes and protobuf bytes.
                assert_eq!(e, g, "{topic:?} after cut {cut}");
            }
            published_after_cut += got
                .iter()
                .filter(|m| m.seq > before_cut(steps, cut))
                .count();
            assert_eq!(
                first_delivery(&restored, topic),
                first_delivery(&uninterrupted, topic),
                "{topic:?}: snapshot after cut {cut}"
            );
        }
        if cut < steps.len() {
            assert!(
                published_after_cut > 5_000,
                "{published_after_cut} after cut {cut}"
            );
        }
        for instrument in 0..3 {
            assert_eq!(
                restored.depth_book(instrument),
                uninterrupted.depth_book(instrument)
            );
            assert_eq!(
                restored.ticker(instrument),
                uninterrupted.ticker(instrument)
            );
        }
    }
}

/// `seq` of the last event before step `cut`.
fn before_cut(steps: &[Step], cut: usize) -> u64 {
    steps[..cut]
        .iter()
        .rev()
        .find_map(|s| match s {
            Step::Batch(events) => events.last().map(|e| e.seq),
            Step::Tick { .. } => None,
        })
        .unwrap_or(0)
}

#[test]
fn the_stream_exercises_every_view() {
    let stream = stream();
    let mut md = fresh(&full_history());
    run(&mut md, &stream.steps);
    let events = || {
        stream.steps.iter().flat_map(|s| match s {
            Step::Batch(events) => events.as_slice(),
            Step::Tick { .. } => &[],
        })
    };
    let count = |f: fn(&EventKind) -> bool| events().filter(|e| f(&e.kind)).count();
    assert!(count(|k| matches!(k, EventKind::Trade { .. })) > 1_000);
    assert!(count(|k| matches!(k, EventKind::StopTriggered { .. })) > 0);
    assert!(count(|k| matches!(k, EventKind::StopArmed { .. })) > 0);
    assert!(
        count(|k| matches!(
            k,
            EventKind::OrderAmended {
                priority_kept: true,
                ..
            }
        )) > 0
    );
    assert!(
        count(|k| matches!(
            k,
            EventKind::OrderAmended {
                priority_kept: false,
                ..
            }
        )) > 0
    );
    let done = |reason| {
        events()
            .filter(|e| matches!(e.kind, EventKind::OrderDone { reason: r, .. } if r == reason))
            .count()
    };
    for reason in [
        DoneReason::Expired,
        DoneReason::MassCancelled,
        DoneReason::SessionClosed,
        DoneReason::Cancelled,
    ] {
        assert!(done(reason) > 0, "{reason:?}");
    }
    assert!(count(|k| matches!(k, EventKind::TradingStatus { halted: true, .. })) > 0);
    // Candles of every interval closed, and the 24h window moved on.
    for interval in Interval::ALL {
        let topic = Topic::Market {
            channel: Channel::Candles(interval),
            instrument: 0,
        };
        let closed = md
            .hub()
            .topic(topic)
            .history()
            .iter()
            .filter(|m| {
                std::str::from_utf8(m.json())
                    .unwrap()
                    .contains("\"closed\":true")
            })
            .count();
        assert!(closed > 0, "{interval:?}");
    }
}

#[test]
fn a_client_resuming_across_the_restart_gets_no_gap_and_no_duplicate() {
    let stream = stream();
    let steps = &stream.steps;
    let config = FeedsConfig {
        hub: HubConfig {
            history: 200,
            ..HubConfig::default()
        },
        ..FeedsConfig::default()
    };
    let cut = steps.len() / 2;
    // A little traffic after the restart, so histories hold messages from both sides of it.
    let end = cut + 40;
    let mut uninterrupted = fresh(&config);
    run(&mut uninterrupted, &steps[..end]);
    let mut restored = restored_at(&config, steps, cut);
    run(&mut restored, &steps[cut..end]);
    let cut_seq = before_cut(steps, cut);
    let mut resumed_across = 0;
    for topic in topics(stream) {
        let history = restored.hub().topic(topic).history();
        // Resume from the oldest message the history holds, and from one from before the
        // restart when there is one.
        let from_cut = history.iter().rev().find(|m| m.seq <= cut_seq);
        for from in history.first().into_iter().chain(from_cut) {
            let got = drain(&restored, topic, from.seq);
            assert_eq!(got, drain(&uninterrupted, topic, from.seq), "{topic:?}");
            let mut last = from.seq;
            for d in &got {
                let Delivery::Message(m) = d else {
                    panic!("{topic:?}: {d:?} resuming inside the history");
                };
                assert_eq!(m.prev_seq, last, "{topic:?}: no gap, no duplicate");
                last = m.seq;
            }
            assert_eq!(
                last,
                history.last().unwrap().seq,
                "{topic:?}: up to the newest"
            );
            resumed_across += usize::from(from.seq <= cut_seq && last > cut_seq);
        }
        // Resuming from before the history: a fresh snapshot, or a gap notice for trades, the
        // same as without the restart.
        if history.first().is_some_and(|m| m.prev_seq > 1) {
            let got = drain(&restored, topic, 1);
            assert_eq!(got, drain(&uninterrupted, topic, 1), "{topic:?}");
            match &got[0] {
                Delivery::Snapshot { reason, .. } => {
                    assert_eq!(*reason, SnapshotReason::ResumeTooOld)
                }
                Delivery::Gap { from_seq: 1, .. } => {}
                other => panic!("{topic:?}: {other:?}"),
            }
        }
    }
    assert!(
        resumed_across > 20,
        "{resumed_across} topics resumed across the restart"
    );
}

#[test]
fn a_changed_depth_window_restarts_the_depth_chains_and_keeps_the_rest() {
    let steps = &stream().steps;
    let cut = steps.len() / 2;
    let mut before = fresh(&FeedsConfig::default());
    run(&mut before, &steps[..cut]);
    let snapshot = FeedsSnapshot::decode(&before.snapshot().encode()).unwrap();
    let config = FeedsConfig {
        depth_levels: 20,
        ..full_history()
    };
    let hub = Arc::new(Hub::new(config.hub.clone()));
    let mut restored = MarketData::restore(
        config.clone(),
        hub,
        Arc::new(Instruments::default()),
        snapshot,
    )
    .unwrap();
    let depth = Topic::Market {
        channel: Channel::Depth,
        instrument: 0,
    };
    let trades = Topic::Market {
        channel: Channel::Trades,
        instrument: 0,
    };
    assert!(restored.hub().topic(depth).history().is_empty());
    assert_eq!(
        restored.hub().topic(trades).history(),
        before.hub().topic(trades).history()
    );
    run(&mut restored, &steps[cut..]);
    // The new chain: a client that resumes sees `prev_seq` 0 where it expected its last seq.
    let history = restored.hub().topic(depth).history();
    assert_eq!(history[0].prev_seq, 0);
    // A client of the new window follows the book to the end.
    let mut uninterrupted = fresh(&config);
    run(&mut uninterrupted, steps);
    assert_eq!(restored.depth_book(0), uninterrupted.depth_book(0));
    assert_eq!(
        first_delivery(&restored, depth)
            .unwrap()
            .message()
            .unwrap()
            .json(),
        first_delivery(&uninterrupted, depth)
            .unwrap()
            .message()
            .unwrap()
            .json()
    );
}

#[test]
fn restoring_into_a_registry_that_disagrees_fails_and_changes_nothing() {
    let steps = &stream().steps;
    let mut before = fresh(&FeedsConfig::default());
    run(&mut before, &steps[..steps.len() / 10]);
    let snapshot = FeedsSnapshot::decode(&before.snapshot().encode()).unwrap();
    let registry = Arc::new(Instruments::default());
    let mut other = common::specs()[1].clone();
    other.symbol = "OTHER-USD".into();
    registry.insert(WireInstrument::new(1, other).unwrap());
    let hub = Arc::new(Hub::default());
    let err = MarketData::restore(FeedsConfig::default(), hub, registry.clone(), snapshot)
        .err()
        .unwrap();
    assert!(
        matches!(err, FeedsSnapshotError::InstrumentConflict { id: 1, .. }),
        "{err}"
    );
    assert_eq!(registry.all().len(), 1, "nothing registered");
}

/// A small snapshot: the first few hundred steps, short histories.
fn small_snapshot() -> Vec<u8> {
    let config = FeedsConfig {
        hub: HubConfig {
            history: 4,
            ..HubConfig::default()
        },
        ..FeedsConfig::default()
    };
    let mut md = fresh(&config);
    run(&mut md, &stream().steps[..300]);
    md.snapshot().encode()
}

#[test]
fn a_snapshot_corrupt_at_any_byte_or_cut_short_anywhere_is_refused() {
    let bytes = small_snapshot();
    assert!(FeedsSnapshot::decode(&bytes).is_ok());
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x20;
        let err = FeedsSnapshot::decode(&bad).err();
        assert!(err.is_some(), "a flipped bit at {at} went unnoticed");
    }
    for len in 0..bytes.len() {
        let err = FeedsSnapshot::decode(&bytes[..len]).err().unwrap();
        assert!(
            matches!(
                err,
                FeedsSnapshotError::TooShort { .. } | FeedsSnapshotError::BodyLength { .. }
            ),
            "cut at {len}: {err}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        FeedsSnapshot::decode(&longer),
        Err(FeedsSnapshotError::BodyLength { .. })
    ));
    let mut other_version = bytes.clone();
    other_version[4] = 3;
    assert_eq!(
        FeedsSnapshot::decode(&other_version).err(),
        Some(FeedsSnapshotError::UnsupportedVersion(3))
    );
}

/// Rewrites the header's checksum, as a bug in the writer (rather than the disk) would.
fn with_checksum(mut bytes: Vec<u8>) -> Vec<u8> {
    let crc = crc32c(&bytes[18..]);
    bytes[14..18].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// CRC32C (Castagnoli), bit by bit: the test's own, independent of the crate's.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// A body that checksums but says nonsense decodes to an error, or restores to an error,
    /// or restores: never a panic.
    #[test]
    fn a_checksummed_but_scrambled_body_never_panics(
        edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..8)
    ) {
        let mut bytes = small_snapshot();
        for (at, value) in edits {
            let at = 18 + at % (bytes.len() - 18);
            bytes[at] = value;
        }
        let bytes = with_checksum(bytes);
        if let Ok(snapshot) = FeedsSnapshot::decode(&bytes) {
            let hub = Arc::new(Hub::default());
            let _ = MarketData::restore(FeedsConfig::default(), hub, Arc::new(Instruments::default()), snapshot);
        }
    }
}

#[test]
fn the_checksum_is_crc32c() {
    let bytes = small_snapshot();
    assert_eq!(with_checksum(bytes.clone()), bytes);
}
