//! The journal on a simulated disk: what is written reads back, every torn tail a crash can
//! leave is cut off and reported, damage in the middle is refused with its file and offset,
//! and a pipeline in `batch` mode never hands out a batch whose commands a crash could lose.

use rust_decimal::Decimal;
use ticker_engine::journal::*;
use ticker_engine::pipeline::{JournalSetup, Pipeline, PipelineConfig};
use ticker_engine::*;

fn spec() -> InstrumentSpec {
    InstrumentSpec {
        symbol: "J-USD".into(),
        tick_size: Decimal::new(1, 2),
        lot_size: Decimal::ONE,
        min_size: Decimal::ONE,
        max_size: Decimal::new(1000, 0),
        reference_price: Decimal::new(100, 0),
        band: Decimal::new(5, 2),
    }
}

/// Command `i` of a deterministic stream: an instrument, then places and cancels that trade.
fn command(i: u64) -> Command {
    let kind = match i {
        0 => CommandKind::AddInstrument(Box::new(spec())),
        _ if i.is_multiple_of(7) => CommandKind::Cancel(Cancel {
            account: 1 + i % 3,
            order: OrderRef::Client(i - 3),
        }),
        _ if i.is_multiple_of(11) => CommandKind::Heartbeat,
        _ => {
            let side = if i.is_multiple_of(2) {
                Side::Buy
            } else {
                Side::Sell
            };
            let mut p = Place::limit(1 + i % 3, 0, side, 10_000 + (i % 9) as i64 - 4, 1 + i % 5);
            p.client_id = i;
            CommandKind::Place(p)
        }
    };
    Command::new(1_000 + i, i, kind)
}

fn write(
    disk: &SimStorage,
    from: u64,
    runs: &[u64],
    segments: impl Into<SegmentLayout>,
) -> JournalWriter<SimStorage> {
    let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
    let mut w = journal.into_writer(from, segments).unwrap();
    let mut i = from;
    for &n in runs {
        // As in `batch` mode under a light load: each run was synced before the next.
        let durable = i - 1;
        for _ in 0..n {
            assert_eq!(w.push(&command(i - 1)), i);
            i += 1;
        }
        w.commit(durable, None).unwrap();
    }
    w
}

/// Each file of a simulated disk with its length, for failure messages.
fn describe(disk: &SimStorage) -> String {
    let mut names = disk.list().unwrap();
    names.sort();
    names
        .iter()
        .map(|n| format!("{n} ({} bytes)", disk.read(n).unwrap().len()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_all(disk: &SimStorage) -> Vec<(u64, Command)> {
    let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
    journal.commands_from(1).collect::<Result<_, _>>().unwrap()
}

fn sync_all(w: &JournalWriter<SimStorage>) {
    w.sync().unwrap();
}

#[test]
fn commands_read_back_in_order_across_segment_boundaries() {
    let disk = SimStorage::new();
    let w = write(&disk, 1, &[1, 5, 40, 3, 200, 1, 1], 1_000);
    sync_all(&w);
    let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
    assert_eq!(
        journal.segments().len(),
        3,
        "a segment closes at its first record past 1,000 bytes"
    );
    assert_eq!(journal.last_index(), 251);
    assert!(journal.torn_tail().is_none());
    let back = read_all(&disk);
    assert_eq!(back.len(), 251);
    for (k, (index, cmd)) in back.iter().enumerate() {
        assert_eq!(*index, k as u64 + 1);
        assert_eq!(*cmd, command(k as u64));
    }
    let from_middle: Vec<u64> = journal.commands_from(123).map(|r| r.unwrap().0).collect();
    assert_eq!(from_middle, (123..=251).collect::<Vec<_>>());
}

#[test]
fn an_empty_journal_opens_and_starts_at_one() {
    let disk = SimStorage::new();
    let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
    assert_eq!((journal.first_index(), journal.last_index()), (1, 0));
    assert_eq!(journal.commands_from(1).count(), 0);
    let w = journal.into_writer(1, 1 << 20).unwrap();
    assert_eq!(w.next_index(), 1);
    assert_eq!(disk.list().unwrap(), vec![segment_name(1)]);
}

#[test]
fn a_huge_batch_is_one_record() {
    let disk = SimStorage::new();
    let w = write(&disk, 1, &[20_000], 1 << 30);
    sync_all(&w);
    let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
    assert_eq!(journal.segments()[0].records, 1);
    assert_eq!(read_all(&disk).len(), 20_000);
}

#[test]
fn a_torn_last_record_is_cut_at_every_byte_offset() {
    for preallocate in [false, true] {
        a_torn_last_record_is_cut_at_every_byte_offset_in(SegmentLayout {
            bytes: 4_096,
            preallocate,
        });
    }
}

fn a_torn_last_record_is_cut_at_every_byte_offset_in(layout: SegmentLayout) {
    let disk = SimStorage::new();
    let w = write(&disk, 1, &[3, 4], layout);
    sync_all(&w);
    let name = segment_name(1);
    let synced_len = Journal::open(disk.clone(), OpenOptions::default())
        .unwrap()
        .segments()[0]
        .len as usize;
    // The next record: written, never synced.
    let mut w = w;
    for i in 8..=12 {
        w.push(&command(i - 1));
    }
    w.commit(7, None).unwrap();
    let record_len = disk.unsynced(&name);
    assert!(record_len > 32);
    let record = disk.read(&name).unwrap()[synced_len..synced_len + record_len].to_vec();
    for keep in 0..=record_len {
        for tear in [Tear::Keep(keep), Tear::Garble(keep)] {
            let after = disk.crash(|_| tear);
            let journal = Journal::open(after.clone(), OpenOptions::default()).unwrap();
            // Whole when every byte is there: in a preallocated segment, a record's last bytes
            // may be zeros that the preallocation had put there already.
            let whole = after
                .read(&name)
                .unwrap()
                .get(synced_len..synced_len + record_len)
                == Some(&record[..]);
            if whole {
                assert_eq!(journal.last_index(), 12);
                assert!(journal.torn_tail().is_none());
                continue;
            }
            assert_eq!(journal.last_index(), 7, "{tear:?} {layout:?}");
            // Reported up to the last byte that is not zero.
            let left = after.read(&name).unwrap()[synced_len..].to_vec();
            let discarded = left.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            if discarded == 0 {
                assert!(journal.torn_tail().is_none());
                continue;
            }
            let torn = journal
                .torn_tail()
                .expect("a torn tail is reported")
                .clone();
            assert_eq!(torn.offset, synced_len as u64, "{tear:?}");
            assert_eq!(torn.bytes, discarded as u64);
            assert!(!torn.deliberate);
            // Repair, append, and the journal reads whole again.
            let mut w = journal.into_writer(8, layout).unwrap();
            w.push(&command(7));
            w.commit(7, None).unwrap();
            w.sync().unwrap();
            let back = read_all(&after);
            assert_eq!(back.len(), 8);
            assert_eq!(back[7], (8, command(7)));
        }
    }
}

#[test]
fn zeros_after_the_last_record_are_its_unwritten_rest_and_anything_else_is_a_torn_tail() {
    let disk = SimStorage::new();
    let w = write(&disk, 1, &[2], 1 << 20);
    sync_all(&w);
    let name = segment_name(1);
    let len = disk.read(&name).unwrap().len() as u64;
    let mut f = disk.write_at(&name, len).unwrap();
    f.append(&[0; 100]).unwrap();
    let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
    assert!(journal.torn_tail().is_none(), "zeros: a preallocated rest");
    assert_eq!((journal.last_index(), journal.segments()[0].len), (2, len));

    f.append(&[0, 0, 7, 0]).unwrap();
    let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
    let torn = journal.torn_tail().expect("a byte after the zeros").clone();
    assert_eq!((torn.offset, torn.bytes), (len, 103));
    assert_eq!(journal.last_index(), 2);
    let mut w = journal.into_writer(3, 1 << 20).unwrap();
    w.push(&command(2));
    w.commit(2, None).unwrap();
    w.sync().unwrap();
    assert_eq!(read_all(&disk).len(), 3);
}

#[test]
fn damage_in_the_middle_is_refused_with_file_and_offset() {
    let disk = SimStorage::new();
    let w = write(&disk, 1, &[3, 3, 3], 1 << 20);
    sync_all(&w);
    let name = segment_name(1);
    let bytes = disk.read(&name).unwrap();
    // Flip a bit inside the second record's payload.
    let second = 32 + 32 + u32::from_le_bytes(bytes[36..40].try_into().unwrap()) as usize;
    disk.poke(&name, second + 30, |b| *b ^= 4);
    let err = Journal::open(disk.clone(), OpenOptions::default())
        .err()
        .expect("damage refuses to open");
    match &err {
        JournalError::Corrupt { file, offset, .. } => {
            assert_eq!(file, &format!("sim:{name}"));
            assert_eq!(*offset, second as u64);
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(err.to_string().contains("truncate_corrupt"));
    // On purpose: cut there, keep the first record.
    let journal = Journal::open(
        disk.clone(),
        OpenOptions {
            truncate_corrupt: true,
        },
    )
    .unwrap();
    assert!(journal.torn_tail().unwrap().deliberate);
    assert_eq!(journal.last_index(), 3);
    let w = journal.into_writer(4, 1 << 20).unwrap();
    w.sync().unwrap();
    assert_eq!(read_all(&disk).len(), 3);
}

#[test]
fn damage_in_a_closed_segment_drops_the_later_segments_only_on_purpose() {
    let disk = SimStorage::new();
    let w = write(&disk, 1, &[10, 10, 10, 10, 10, 10], 600);
    sync_all(&w);
    let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
    let segments = journal.segments().to_vec();
    assert!(segments.len() >= 3);
    let victim = &segments[1];
    disk.poke(&victim.name, 40, |b| *b ^= 1);
    assert!(matches!(
        Journal::open(disk.clone(), OpenOptions::default()),
        Err(JournalError::Corrupt { .. })
    ));
    let journal = Journal::open(
        disk.clone(),
        OpenOptions {
            truncate_corrupt: true,
        },
    )
    .unwrap();
    let torn = journal.torn_tail().unwrap().clone();
    assert_eq!(torn.dropped_segments.len(), segments.len() - 2);
    let last = journal.last_index();
    assert_eq!(last, segments[0].last);
    journal.into_writer(last + 1, 600).unwrap().sync().unwrap();
    assert_eq!(read_all(&disk).len() as u64, last);
}

#[test]
fn a_crash_loses_nothing_that_was_synced() {
    // Deterministic simulation: runs of commands written, some synced, a crash with every
    // kind of tear at each step; recovery must keep every synced command and never invent one.
    let disk = SimStorage::new();
    let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
    let mut w = journal.into_writer(1, 700).unwrap();
    let mut synced = 0u64;
    let mut handles = vec![w.sync_handle().unwrap()];
    for step in 0u64..60 {
        let n = 1 + step % 4;
        for _ in 0..n {
            let i = w.next_index();
            w.push(&command(i - 1));
        }
        let commit = w.commit(synced, None).unwrap().unwrap();
        if let Some(h) = commit.rotated {
            handles.push(h);
        }
        if step % 3 == 0 {
            // What the syncer does: every segment, then the directory.
            for h in &handles {
                h.sync_data().unwrap();
            }
            disk.sync_dir().unwrap();
            synced = commit.last;
        }
        for tear in [
            Tear::Lose,
            Tear::Keep(5),
            Tear::Garble(40),
            Tear::Keep(usize::MAX),
        ] {
            let after = disk.crash(|_| tear);
            let journal = Journal::open(after.clone(), OpenOptions::default())
                .unwrap_or_else(|e| panic!("step {step} {tear:?}: {e}"));
            let last = journal.last_index();
            assert!(last >= synced, "step {step} {tear:?}: lost synced commands");
            assert!(last <= commit.last);
            let back: Vec<_> = journal.commands_from(1).collect::<Result<_, _>>().unwrap();
            assert_eq!(back.len() as u64, last);
            for (index, cmd) in back {
                assert_eq!(cmd, command(index - 1));
            }
        }
    }
}

/// Snapshot files with no sections at `indexes` (pruning reads only their names).
fn empty_snapshots(disk: &SimStorage, indexes: &[u64]) {
    for &index in indexes {
        let file = SnapshotFile {
            index,
            sections: vec![],
        };
        snapshot_file::write(disk, &file).unwrap();
    }
}

#[test]
fn prune_keeps_the_newest_snapshots_and_the_segments_after_them() {
    let disk = SimStorage::new();
    let w = write(&disk, 1, &[10; 12], 400);
    sync_all(&w);
    let segments = Journal::open(disk.clone(), OpenOptions::default())
        .unwrap()
        .segments()
        .to_vec();
    empty_snapshots(&disk, &[15, 40, 80]);
    let deleted = Journal::prune(&disk, 2).unwrap();
    assert!(deleted.contains(&snapshot_name(15)));
    let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
    assert_eq!(journal.snapshots(), &[40, 80]);
    // Every command after the oldest kept snapshot is still there.
    assert!(journal.first_index() <= 41);
    assert!(journal.first_index() > 1, "covered segments went");
    assert_eq!(journal.last_index(), 120);
    assert_eq!(
        journal.segments().last().unwrap().name,
        segments.last().unwrap().name,
        "the last segment is never pruned"
    );
    let n = journal.commands_from(41).count();
    assert_eq!(n, 80);
}

#[test]
fn prune_to_keeps_exactly_the_snapshots_named_and_the_segments_the_oldest_needs() {
    let disk = SimStorage::new();
    let w = write(&disk, 1, &[10; 12], 400);
    sync_all(&w);
    // 30 and 70 belong to whole rounds of a sharded market; 50 is a shard's file of a round
    // that failed before its shard-0 file (an orphan), 90 a newer one.
    empty_snapshots(&disk, &[30, 50, 70, 90]);
    assert!(Journal::prune_to(&disk, &[]).unwrap().is_empty());
    let deleted = Journal::prune_to(&disk, &[70, 30]).unwrap();
    assert!(deleted.contains(&snapshot_name(50)) && deleted.contains(&snapshot_name(90)));
    assert_eq!(Journal::snapshots_in(&disk).unwrap(), [30, 70]);
    let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
    assert!(
        journal.first_index() <= 31,
        "the oldest kept snapshot's tail is kept"
    );
    assert!(journal.first_index() > 1, "covered segments went");
    assert_eq!(journal.commands_from(31).count(), 90);
}

#[test]
fn a_gap_is_allowed_only_where_a_snapshot_covers_it() {
    let disk = SimStorage::new();
    let w = write(&disk, 1, &[5], 1 << 20);
    sync_all(&w);
    drop(w);
    // As after a machine crash with fsync = off: the journal lost 6..=9, a snapshot has 9.
    let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
    let w = journal.into_writer(10, 1 << 20).unwrap();
    w.sync().unwrap();
    drop(w);
    assert!(matches!(
        Journal::open(disk.clone(), OpenOptions::default()),
        Err(JournalError::Corrupt { .. })
    ));
    snapshot_file::write(
        &disk,
        &SnapshotFile {
            index: 9,
            sections: vec![],
        },
    )
    .unwrap();
    assert!(Journal::open(disk.clone(), OpenOptions::default()).is_ok());
}

/// A pipeline in `batch` mode on a simulated disk: whenever the consumer holds a batch, a
/// crash at that moment still recovers every command up to the batch's journal index.
#[test]
fn batch_mode_publishes_only_what_a_crash_keeps() {
    for preallocate in [false, true] {
        batch_mode_publishes_only_what_a_crash_keeps_in(SegmentLayout {
            bytes: 4_096,
            preallocate,
        });
    }
}

fn batch_mode_publishes_only_what_a_crash_keeps_in(layout: SegmentLayout) {
    let disk = SimStorage::new();
    let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
    let writer = journal.into_writer(1, layout).unwrap();
    let config = PipelineConfig {
        max_batch: 16,
        ..PipelineConfig::default()
    };
    let (pipeline, ingress, mut egress) = Pipeline::spawn_journaled(
        Engine::new(EngineConfig {
            order_capacity: 4096,
            ..EngineConfig::default()
        }),
        config,
        JournalSetup {
            writer,
            fsync: FsyncMode::Batch,
            group_commit_bytes: 1 << 20,
            group_commit_delay: std::time::Duration::ZERO,
        },
    )
    .unwrap();
    let producer = std::thread::spawn(move || {
        for i in 0..3_000 {
            ingress.submit(command(i)).unwrap();
        }
    });
    let mut checks = 0;
    let mut last_index = 0;
    while let Some(batch) = egress.recv() {
        assert!(batch.journal_index() >= last_index);
        last_index = batch.journal_index();
        if batch.len() % 5 == 0 {
            let after = disk.crash(|_| Tear::Lose);
            let journal = Journal::open(after.clone(), OpenOptions::default())
                .unwrap_or_else(|e| panic!("{e}; the crash image: {}", describe(&after)));
            assert!(
                journal.last_index() >= batch.journal_index(),
                "published up to {} but only {} survive",
                batch.journal_index(),
                journal.last_index()
            );
            checks += 1;
        }
    }
    producer.join().unwrap();
    let durability = pipeline.durability().unwrap().clone();
    let engine = pipeline.join();
    // 3,000 commands in 4 KiB segments: many rotations, each counted.
    assert!(durability.segments_started() > 10);
    assert!(durability.segments_unprepared() <= durability.segments_started());
    if !layout.preallocate {
        assert_eq!(durability.segments_unprepared(), 0);
    }
    assert!(checks > 0);
    let d = last_index;
    assert!(d > 0);
    // Everything is journaled, in order, exactly as applied.
    let back = read_all(&disk);
    assert_eq!(back.len(), 3_000);
    let mut replayed = Engine::new(EngineConfig {
        order_capacity: 4096,
        ..EngineConfig::default()
    });
    let mut events = Vec::new();
    for (_, cmd) in &back {
        replayed.apply(cmd, &mut events);
    }
    assert_eq!(replayed.last_seq(), engine.last_seq());
}

#[test]
fn a_failing_disk_stops_the_pipeline_without_publishing() {
    let disk = SimStorage::new();
    let writer = Journal::open(disk.clone(), OpenOptions::default())
        .unwrap()
        .into_writer(1, 1 << 20)
        .unwrap();
    let (pipeline, ingress, mut egress) = Pipeline::spawn_journaled(
        Engine::default(),
        PipelineConfig::default(),
        JournalSetup {
            writer,
            fsync: FsyncMode::Batch,
            group_commit_bytes: 1 << 20,
            group_commit_delay: std::time::Duration::ZERO,
        },
    )
    .unwrap();
    ingress.submit(command(0)).unwrap();
    let first = egress.recv().expect("the first command's batch");
    assert_eq!(first.journal_index(), 1);
    drop(first);
    disk.fail_from_now();
    // The failure may be seen on the write or on the sync; either way nothing more comes out.
    let _ = ingress.submit(command(1));
    assert!(egress.recv().is_none());
    assert!(pipeline.journal_failure().is_some());
    drop(ingress);
    pipeline.join();
}

/// A snapshot command cuts the engine's state at its journal index, at the end of its batch:
/// that state plus the journal after it is the engine at the end.
#[test]
fn a_snapshot_command_cuts_the_state_at_its_index() {
    let disk = SimStorage::new();
    let writer = Journal::open(disk.clone(), OpenOptions::default())
        .unwrap()
        .into_writer(1, 1 << 20)
        .unwrap();
    let config = EngineConfig {
        order_capacity: 4096,
        ..EngineConfig::default()
    };
    let (pipeline, ingress, mut egress) = Pipeline::spawn_journaled(
        Engine::new(config.clone()),
        PipelineConfig::default(),
        JournalSetup {
            writer,
            fsync: FsyncMode::Off,
            group_commit_bytes: 1 << 20,
            group_commit_delay: std::time::Duration::ZERO,
        },
    )
    .unwrap();
    let producer = std::thread::spawn(move || {
        for i in 0..600 {
            ingress.submit(command(i)).unwrap();
            if i == 400 {
                ingress
                    .submit(Command::new(5_000, 9_999, CommandKind::Snapshot))
                    .unwrap();
            }
        }
    });
    let mut cut = None;
    while let Some(mut batch) = egress.recv() {
        if let Some(c) = batch.take_cut() {
            assert!(cut.is_none(), "one cut per snapshot command");
            assert_eq!(batch.journal_index(), c.index, "the cut ends its batch");
            cut = Some(c);
        }
    }
    producer.join().unwrap();
    let engine = pipeline.join();
    let cut = cut.expect("the snapshot command gave a cut");
    assert_eq!(cut.index, 402, "401 commands, then the snapshot");
    let back = read_all(&disk);
    assert_eq!(back[cut.index as usize - 1].1.kind, CommandKind::Snapshot);
    let mut restored = Engine::restore(config, &cut.engine).unwrap();
    let mut events = Vec::new();
    for (_, cmd) in &back[cut.index as usize..] {
        restored.apply(cmd, &mut events);
    }
    assert_eq!(restored.snapshot(), engine.snapshot());
}

/// Command `i` of the stream above with risk in it: limits from the start that some orders
/// break, account 2 disabled for a while (its orders cancelled, its places refused).
fn risky_command(i: u64) -> Command {
    let limits = Limits {
        max_open_orders: Some(40),
        max_orders_per_sec: None,
        instruments: vec![(
            0,
            InstrumentLimits {
                max_order_lots: Some(4),
                max_long_lots: Some(30),
                max_short_lots: Some(30),
                max_order_notional: None,
            },
        )],
    };
    let kind = match i {
        1 => CommandKind::SetLimits {
            account: 0,
            limits: Some(Box::new(limits)),
        },
        250 => CommandKind::DisableAccount { account: 2 },
        450 => CommandKind::EnableAccount { account: 2 },
        _ => return command(i),
    };
    Command::new(1_000 + i, i, kind)
}

#[test]
fn a_snapshot_with_limits_and_a_disabled_account_plus_the_tail_replays_like_the_whole_journal() {
    let disk = SimStorage::new();
    let writer = Journal::open(disk.clone(), OpenOptions::default())
        .unwrap()
        .into_writer(1, 1 << 20)
        .unwrap();
    let config = EngineConfig {
        order_capacity: 4096,
        ..EngineConfig::default()
    };
    let (pipeline, ingress, mut egress) = Pipeline::spawn_journaled(
        Engine::new(config.clone()),
        PipelineConfig::default(),
        JournalSetup {
            writer,
            fsync: FsyncMode::Off,
            group_commit_bytes: 1 << 20,
            group_commit_delay: std::time::Duration::ZERO,
        },
    )
    .unwrap();
    let producer = std::thread::spawn(move || {
        for i in 0..600 {
            ingress.submit(risky_command(i)).unwrap();
            if i == 300 {
                ingress
                    .submit(Command::new(1_300, 9_999, CommandKind::Snapshot))
                    .unwrap();
            }
        }
    });
    let (mut cut, mut published) = (None, Vec::new());
    while let Some(mut batch) = egress.recv() {
        if let Some(c) = batch.take_cut() {
            cut = Some(c);
        }
        published.extend(batch.iter().cloned());
    }
    producer.join().unwrap();
    let engine = pipeline.join();
    let cut = cut.expect("the snapshot command gave a cut");
    let risk = &cut.engine.risk;
    assert!(risk.active && risk.default_limits.is_some());
    assert!(risk.accounts.iter().any(|a| a.account == 2 && a.disabled));
    assert!(!risk.positions.is_empty());

    // Full replay of the journal from an empty engine gives the published events.
    let back = read_all(&disk);
    let mut full = Engine::new(config.clone());
    let mut replayed = Vec::new();
    for (_, cmd) in &back {
        full.apply(cmd, &mut replayed);
    }
    assert_eq!(replayed, published);
    let reasons = |r: RejectReason| {
        replayed
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Rejected { reason, .. } if reason == r))
            .count()
    };
    assert!(reasons(RejectReason::MaxOrderSize) > 0 && reasons(RejectReason::AccountDisabled) > 0);

    // Snapshot plus tail gives the tail's events and the same final state.
    let mut restored = Engine::restore(config, &cut.engine).unwrap();
    let mut tail = Vec::new();
    for (_, cmd) in &back[cut.index as usize..] {
        restored.apply(cmd, &mut tail);
    }
    let first_after_cut = published.len() - tail.len();
    assert_eq!(tail, published[first_after_cut..]);
    assert_eq!(restored.snapshot(), engine.snapshot());
    assert_eq!(restored.snapshot(), full.snapshot());
}

mod crashes {
    use super::*;
    use proptest::prelude::*;

    /// What a test run does between crashes.
    #[derive(Clone, Debug)]
    enum Step {
        /// A run of this many commands, written as one record.
        Run(u64),
        /// What the syncer does: every segment written so far, then the directory.
        Sync,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            prop_oneof![
                4 => (1u64..40).prop_map(Step::Run),
                1 => Just(Step::Sync),
            ],
            1..40,
        )
    }

    fn tear() -> impl Strategy<Value = Tear> {
        prop_oneof![
            Just(Tear::Lose),
            (0usize..2_000).prop_map(Tear::Keep),
            (0usize..2_000).prop_map(Tear::Garble),
            Just(Tear::Keep(usize::MAX)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Any run of writes and syncs, any segment size, a crash tearing each file its own way:
        /// recovery keeps every synced command, invents none, reports any cut-off bytes as a
        /// torn tail, and the repaired journal takes new commands and reads back whole.
        #[test]
        fn recovery_after_any_crash_keeps_what_was_synced(
            steps in steps(),
            segment_bytes in 200u64..4_000,
            preallocate in any::<bool>(),
            tears in prop::collection::vec(tear(), 1..8),
        ) {
            let layout = SegmentLayout { bytes: segment_bytes, preallocate };
            let disk = SimStorage::new();
            let mut w = Journal::open(disk.clone(), OpenOptions::default())
                .unwrap()
                .into_writer(1, layout)
                .unwrap();
            let mut handles = vec![w.sync_handle().unwrap()];
            let (mut synced, mut written) = (0u64, 0u64);
            for step in &steps {
                match step {
                    Step::Run(n) => {
                        for _ in 0..*n {
                            let i = w.next_index();
                            w.push(&command(i - 1));
                        }
                        let commit = w.commit(synced, None).unwrap().unwrap();
                        handles.extend(commit.rotated);
                        written = commit.last;
                    }
                    Step::Sync => {
                        for h in &handles {
                            h.sync_data().unwrap();
                        }
                        disk.sync_dir().unwrap();
                        synced = written;
                    }
                }
            }
            let mut k = 0;
            let after = disk.crash(|_| {
                k += 1;
                tears[k % tears.len()]
            });
            let journal = Journal::open(after.clone(), OpenOptions::default()).unwrap();
            let last = journal.last_index();
            prop_assert!(last >= synced, "lost synced commands: {last} < {synced}");
            prop_assert!(last <= written);
            let next = last + 1;
            let mut w = journal.into_writer(next, layout).unwrap();
            w.push(&command(next - 1));
            w.commit(last, None).unwrap();
            w.sync().unwrap();
            let back = read_all(&after);
            prop_assert_eq!(back.len() as u64, next);
            for (index, cmd) in back {
                prop_assert_eq!(cmd, command(index - 1));
            }
        }
    }
}

/// The engine thread waits for the consumer's syncs once `group_commit_bytes` are unsynced;
/// a consumer that goes away must not leave it waiting forever.
#[test]
fn a_consumer_that_leaves_does_not_strand_the_engine_on_the_group_bound() {
    let disk = SimStorage::new();
    let writer = Journal::open(disk.clone(), OpenOptions::default())
        .unwrap()
        .into_writer(1, 1 << 20)
        .unwrap();
    let (pipeline, ingress, egress) = Pipeline::spawn_journaled(
        Engine::default(),
        // One command per run, so there are many commits.
        PipelineConfig {
            max_batch: 1,
            ..PipelineConfig::default()
        },
        JournalSetup {
            writer,
            fsync: FsyncMode::Batch,
            // Every run is over the bound: each commit after the first waits for a sync.
            group_commit_bytes: 1,
            group_commit_delay: std::time::Duration::ZERO,
        },
    )
    .unwrap();
    for i in 0..50 {
        ingress.submit(command(i)).unwrap();
    }
    drop(egress);
    drop(ingress);
    // Returns: the engine thread found the consumer gone instead of waiting for it.
    pipeline.join();
}

/// A directory sync can make a new segment's name durable before its data: after a crash the
/// journal may end in segments that are empty or torn. That is a torn tail, not damage.
#[test]
fn trailing_segments_whose_data_never_became_durable_are_a_torn_tail() {
    let disk = SimStorage::new();
    // Small enough to stay in the first segment, which the writer's sync then covers.
    let mut w = write(&disk, 1, &[2], 300);
    w.sync().unwrap();
    let kept = Journal::open(disk.clone(), OpenOptions::default())
        .unwrap()
        .last_index();
    // Two more segments, written but not synced; then a directory sync makes their names durable.
    for _ in 0..3 {
        let i = w.next_index();
        for k in 0..10 {
            w.push(&command(i - 1 + k));
        }
        w.commit(kept, None).unwrap();
    }
    disk.sync_dir().unwrap();
    let after = disk.crash(|_| Tear::Lose);
    let segments = after.list().unwrap().len();
    assert!(segments >= 3, "rotations made durable names: {segments}");
    let journal = Journal::open(after.clone(), OpenOptions::default()).unwrap();
    assert_eq!(journal.last_index(), kept);
    let torn = journal.torn_tail().expect("reported").clone();
    assert!(!torn.deliberate);
    assert_eq!(torn.dropped_segments.len(), segments - 2);
    let w = journal.into_writer(kept + 1, 300).unwrap();
    w.sync().unwrap();
    assert_eq!(read_all(&after).len() as u64, kept);
}
