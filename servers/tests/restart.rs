//! A market that journals, restarted: after a clean stop (final snapshot) and from a crash
//! image (a copy of the data directory taken while it runs, which is what `kill -9` leaves once
//! the kernel has written what tickerd wrote). Books, order ids, the event sequence and every
//! topic's sequence continue; orders of dead order-entry sessions are cancelled; a torn tail is
//! cut and reported, damage in the middle refuses to start. The kill test (kill.rs) does the
//! same with real processes.

use std::path::PathBuf;
use std::time::Duration;
use ticker_engine::codec::encode_event;
use ticker_engine::journal::{snapshot_name, Journal, OpenOptions};
use ticker_engine::journal::{DirStorage, Storage};
use ticker_engine::*;
use ticker_feeds::sim::SimConfig;
use ticker_feeds::{Channel, Topic};
use ticker_servers::market::Market;
use ticker_servers::snapshot_writer::ENGINE_SECTION;

#[allow(dead_code)]
mod journaled;

use journaled::{config, limit, next_message, order_id, place};

const GUARD: Duration = Duration::from_secs(20);

/// A data directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tickerd-restart-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    /// A copy of the directory as it is now: the crash image of a process killed at this
    /// moment (everything it wrote is in the kernel's page cache, so in the copy).
    fn crash_image(&self, name: &str) -> TempDir {
        let copy = TempDir::new(name);
        std::fs::create_dir_all(&copy.0).unwrap();
        for entry in std::fs::read_dir(&self.0).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.0.join(entry.file_name())).unwrap();
        }
        copy
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_continues_books_ids_and_every_sequence() {
    let dir = TempDir::new("clean");
    let m = Market::start(config(&dir.0, 1)).unwrap();
    let btc = m.instruments().by_symbol("BTC-USD").unwrap().id();
    assert_eq!(btc, 0);
    let ask = order_id(&place(&m, limit(1, 11, Side::Sell, 6_500_000, 100)).await);
    place(&m, limit(2, 21, Side::Buy, 6_490_000, 50)).await;
    let taker = place(&m, limit(3, 31, Side::Buy, 6_500_000, 40)).await;
    let last_event = taker.last().unwrap().seq;
    let trades = m.hub().topic(Topic::Market {
        channel: Channel::Trades,
        instrument: btc,
    });
    let last_trade = trades.latest().expect("a trade was published").seq;
    let last_update = m
        .hub()
        .topic(Topic::Orders(1))
        .latest()
        .expect("account 1 had updates")
        .seq;
    m.shutdown();
    drop(m);

    let m = Market::start(config(&dir.0, 1)).unwrap();
    let recovery = &m.journal().unwrap().recovery;
    assert!(
        recovery.snapshot.is_some(),
        "a clean stop leaves a snapshot"
    );
    assert_eq!(recovery.replayed, 0, "and nothing to replay after it");
    assert_eq!(m.instruments().all().len(), 4, "no instrument added twice");
    let metrics = ticker_servers::metrics::render(&m);
    let durable = format!(
        "tickerd_journal_durable_index {}",
        m.journal().unwrap().durability[0].synced()
    );
    assert!(metrics.contains(&durable), "{metrics}");
    assert!(metrics.contains("tickerd_journal_failed 0"), "{metrics}");

    let mut trades = m.hub().subscribe(
        Topic::Market {
            channel: Channel::Trades,
            instrument: btc,
        },
        Some(last_trade),
    );
    let mut updates = m.accounts().subscribe(1, Some(last_update));
    // The resting ask is still there, 60 lots left, with its id.
    let more = place(&m, limit(4, 41, Side::Buy, 6_500_000, 10)).await;
    assert!(more[0].seq > last_event, "the event sequence continues");
    assert_ne!(order_id(&more), ask);
    let trade = more
        .iter()
        .find_map(|e| match e.kind {
            EventKind::Trade {
                maker_order,
                maker_remaining,
                ..
            } => Some((maker_order, maker_remaining)),
            _ => None,
        })
        .expect("the ask survived the restart and traded");
    assert_eq!(trade, (ask, 50));
    let m1 = next_message(&mut trades).await;
    assert_eq!(m1.prev_seq, last_trade, "trades resume with no gap");
    let u1 = next_message(&mut updates).await;
    assert_eq!(u1.prev_seq, last_update, "order updates resume with no gap");
    m.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_image_replays_the_journal_and_cancels_dead_sessions() {
    let dir = TempDir::new("crash");
    let m = Market::start(config(&dir.0, 1)).unwrap();
    let session = m.new_session();
    let tagged = order_id(
        &place(
            &m,
            Place {
                session,
                ..limit(5, 51, Side::Sell, 6_600_000, 7)
            },
        )
        .await,
    );
    let untagged = order_id(&place(&m, limit(6, 61, Side::Sell, 6_600_000, 9)).await);
    // Acknowledged means durable: the image taken now holds both orders.
    let image = dir.crash_image("crash-image");
    m.shutdown();

    let m = Market::start(config(&image.0, 1)).unwrap();
    let recovery = &m.journal().unwrap().recovery;
    assert_eq!(
        recovery.snapshot, None,
        "no snapshot was cut before the crash"
    );
    assert!(
        recovery.replayed >= 6,
        "instruments and orders replayed: {recovery}"
    );
    let cancel = |account, order| {
        CommandKind::Cancel(Cancel {
            account,
            order: OrderRef::Id(order),
        })
    };
    let events = m.execute(cancel(6, untagged)).await.unwrap();
    assert!(
        matches!(events[0].kind, EventKind::Accepted { .. }),
        "the untagged order survived: {events:?}"
    );
    let events = m.execute(cancel(5, tagged)).await.unwrap();
    assert!(
        matches!(
            events[0].kind,
            EventKind::Rejected {
                reason: RejectReason::UnknownOrder,
                ..
            }
        ),
        "the dead session's order was cancelled at start: {events:?}"
    );
    assert!(m.new_session() > session, "session ids are not reused");
    m.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_damage_in_the_middle_refuses_to_start() {
    let dir = TempDir::new("torn");
    let m = Market::start(config(&dir.0, 1)).unwrap();
    for i in 0..20 {
        place(&m, limit(7, 70 + i, Side::Buy, 6_400_000 - i as i64, 1)).await;
    }
    let image = dir.crash_image("torn-image");
    m.shutdown();
    let storage = DirStorage::new(&image.0).unwrap();
    let segment = storage
        .list()
        .unwrap()
        .into_iter()
        .find(|n| n.ends_with(".journal"))
        .unwrap();
    let path = image.0.join(&segment);
    let clean = std::fs::read(&path).unwrap();
    // Where the records end: the rest of a preallocated segment is zeros.
    let end = Journal::open(storage.clone(), OpenOptions::default())
        .unwrap()
        .segments()[0]
        .len as usize;

    // Half a record after the last one: what a crash mid-write leaves.
    let half = &clean[32..32 + 30];
    let mut torn = clean.clone();
    torn.resize(torn.len().max(end + 30), 0);
    torn[end..end + 30].copy_from_slice(half);
    std::fs::write(&path, &torn).unwrap();
    let m = Market::start(config(&image.0, 1)).unwrap();
    let report = m.journal().unwrap().recovery.clone();
    let cut = report.torn.expect("the torn tail is reported");
    // Counted up to its last byte that is not zero.
    let discarded = half.iter().rposition(|&b| b != 0).unwrap() + 1;
    assert_eq!((cut.offset, cut.bytes), (end as u64, discarded as u64));
    m.shutdown();
    drop(m);

    // A flipped bit inside an early record: refuse, naming the file and the offset.
    let mut damaged = std::fs::read(&path).unwrap();
    damaged[32 + 30] ^= 0x40;
    std::fs::write(&path, &damaged).unwrap();
    let err = Market::start(config(&image.0, 1)).err().expect("refused");
    let text = err.to_string();
    assert!(text.contains(&segment), "{text}");
    assert!(text.contains("at byte 32"), "{text}");
    assert!(text.contains("truncate_corrupt"), "{text}");
}

/// With the simulator trading and snapshots cut every 1,500 commands: the events a restored
/// engine gives for the journal after any snapshot are byte for byte those of a replay of the
/// whole journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_plus_tail_gives_the_events_of_a_full_replay() {
    let dir = TempDir::new("replay");
    let mut cfg = config(&dir.0, 1);
    cfg.simulator = Some(SimConfig {
        rate: 20_000,
        ..SimConfig::default()
    });
    cfg.heartbeat = Duration::from_millis(10);
    let j = cfg.journal.as_mut().unwrap();
    j.snapshot_every = 1_500;
    j.keep_snapshots = 1_000;
    let m = Market::start(cfg).unwrap();
    let durability = m.journal().unwrap().durability.clone();
    let snapshots = m.journal().unwrap().snapshots.clone();
    let mut written = snapshots.watch();
    tokio::time::timeout(
        GUARD,
        written.wait_for(|_| snapshots.written.load(std::sync::atomic::Ordering::Relaxed) >= 3),
    )
    .await
    .expect("three snapshots in time")
    .unwrap();
    assert!(durability[0].written() > 4_500);
    m.shutdown();

    let journal = Journal::open(DirStorage::new(&dir.0).unwrap(), OpenOptions::default()).unwrap();
    let snapshots = journal.snapshots().to_vec();
    assert!(snapshots.len() >= 4, "{snapshots:?}");
    let commands: Vec<Command> = journal.commands_from(1).map(|r| r.unwrap().1).collect();
    // The whole journal once, remembering where each command's events start.
    let mut full = Engine::default();
    let mut events = Vec::new();
    let mut starts = Vec::with_capacity(commands.len() + 1);
    for c in &commands {
        starts.push(events.len());
        full.apply(c, &mut events);
    }
    starts.push(events.len());
    let bytes = |events: &[Event]| {
        let mut out = Vec::new();
        for e in events {
            encode_event(e, &mut out);
        }
        out
    };
    for &index in &snapshots[..snapshots.len() - 1] {
        let file = journal.read_snapshot(index).unwrap();
        let snapshot: EngineSnapshot =
            postcard::from_bytes(file.section(ENGINE_SECTION).unwrap()).unwrap();
        let mut restored = Engine::restore(EngineConfig::default(), &snapshot).unwrap();
        let mut tail = Vec::new();
        for c in &commands[index as usize..] {
            restored.apply(c, &mut tail);
        }
        assert_eq!(
            bytes(&tail),
            bytes(&events[starts[index as usize]..]),
            "events after snapshot {} ({})",
            index,
            snapshot_name(index)
        );
        assert_eq!(restored.snapshot(), full.snapshot());
    }
}

/// Snapshots are cut every `snapshot_every` commands of the journal, not of one process: a
/// start whose recovered tail is already that long cuts one at its first heartbeat, so a
/// market that keeps crashing before its own count comes round (the kill test's rounds) still
/// bounds what the next start replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_counts_snapshot_commands_from_the_last_snapshot_not_from_itself() {
    let dir = TempDir::new("cadence");
    let mut cfg = config(&dir.0, 1);
    cfg.journal.as_mut().unwrap().snapshot_every = 100;
    // No beat comes round in the first run, so it never checks for a cut: what a process
    // killed before its count was reached leaves.
    cfg.heartbeat = Duration::from_secs(3600);
    let m = Market::start(cfg.clone()).unwrap();
    for i in 0..120 {
        place(&m, limit(8, 800 + i, Side::Buy, 6_300_000 - i as i64, 1)).await;
    }
    let image = dir.crash_image("cadence-image");
    m.shutdown();
    drop(m);

    cfg.journal.as_mut().unwrap().dir = image.0.clone();
    cfg.heartbeat = Duration::from_millis(10);
    let m = Market::start(cfg).unwrap();
    let recovered = m.journal().unwrap().recovery.clone();
    assert_eq!(recovered.snapshot, None, "{recovered}");
    assert!(recovered.replayed >= 124, "{recovered}");
    let snapshots = m.journal().unwrap().snapshots.clone();
    let mut written = snapshots.watch();
    let cut = *tokio::time::timeout(GUARD, written.wait_for(|index| *index > 0))
        .await
        .expect("a snapshot in time")
        .unwrap();
    // Counting from this start, the first cut would wait for 100 more commands.
    assert!(
        cut < recovered.last_index + 100,
        "the first snapshot after a start with {} unsnapshotted commands is at {cut}",
        recovered.last_index
    );
    m.shutdown();
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A fresh start runs the simulator's past through the engine, journaled and stamped from
/// `history_secs` ago; a restart recovers that market and does not run a second past.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_past_runs_on_a_fresh_start_only() {
    let dir = TempDir::new("past");
    let mut cfg = config(&dir.0, 1);
    let past_s = 120;
    cfg.simulator = Some(SimConfig {
        history_secs: past_s,
        ..SimConfig::default()
    });
    let started = wall_ns();
    let m = Market::start(cfg.clone()).unwrap();
    let opened = wall_ns();
    m.shutdown();
    drop(m);
    let journal = Journal::open(DirStorage::new(&dir.0).unwrap(), OpenOptions::default()).unwrap();
    let first_run = journal.last_index();
    let stamps: Vec<u64> = journal
        .commands_from(1)
        .map(|r| r.unwrap().1)
        .filter(|c| matches!(c.kind, CommandKind::Place(_) | CommandKind::Cancel(_)))
        .map(|c| c.ts)
        .collect();
    // About 100 commands a simulated second, from two minutes before the start.
    let second = 1_000_000_000;
    assert!(
        stamps.len() as u64 > 80 * past_s,
        "{} commands",
        stamps.len()
    );
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "time goes forward");
    assert!(stamps[0] >= started - past_s * second && stamps[0] < started - (past_s - 5) * second);
    let in_past = stamps.iter().filter(|ts| **ts < started).count();
    assert!(
        in_past as u64 > 80 * past_s,
        "{in_past} commands stamped in the past"
    );
    drop(journal);

    let restarted = wall_ns();
    let m = Market::start(cfg).unwrap();
    assert!(opened <= restarted);
    // The live simulator's commands after the restart are stamped now, not in a new past.
    let durability = m.journal().unwrap().durability.clone();
    tokio::time::timeout(GUARD, async {
        while durability[0].written() < first_run + 50 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the simulator trades after the restart");
    m.shutdown();
    drop(m);
    let journal = Journal::open(DirStorage::new(&dir.0).unwrap(), OpenOptions::default()).unwrap();
    let second_run: Vec<Command> = journal
        .commands_from(first_run + 1)
        .map(|r| r.unwrap().1)
        .collect();
    assert!(second_run.len() >= 50);
    assert!(
        second_run.iter().all(|c| c.ts >= restarted),
        "no second past after a restart"
    );
}
