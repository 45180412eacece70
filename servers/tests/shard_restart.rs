//! A sharded market (`market.shards` > 1) that journals, restarted: each shard's journal in
//! its own directory, the merged stream's order in the journals' merge tickets. After a clean
//! stop the books, order ids, merged `seq`s and topic sequences continue; and whichever
//! snapshot round a recovery starts from, or none, it rebuilds exactly the state the running
//! market's feeds had — the merged stream, with commands of every shard folded, replays as it
//! was published. The kill test (kill.rs) does the same with real processes.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use ticker_engine::journal::snapshot_name;
use ticker_engine::shard::Shard;
use ticker_engine::*;
use ticker_feeds::sim::SimConfig;
use ticker_feeds::{Channel, Hub, Instruments, Topic};
use ticker_servers::market::{Market, MarketConfig};
use ticker_servers::recovery::recover_market;
use ticker_servers::shard_recovery::shard_dir;

#[allow(dead_code)]
mod journaled;

use journaled::{config, execute, limit_on as limit, next_message, order_id, place};

const GUARD: Duration = Duration::from_secs(30);

/// Where shard 0's journal and snapshots are.
fn first_dir(dir: &Path, shards: usize) -> std::path::PathBuf {
    match shards {
        1 => dir.to_path_buf(),
        _ => shard_dir(dir, 0),
    }
}

/// A copy of a data directory and its shard directories, as it is now.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_market_restarts_with_its_books_ids_and_merged_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let m = Market::start(config(dir.path(), 2)).unwrap();
    let (btc, eth) = (0, 1);
    assert_ne!(Shard::of_instrument(2, btc), Shard::of_instrument(2, eth));
    let btc_ask = order_id(&place(&m, limit(1, 11, btc, Side::Sell, 6_500_000, 100)).await);
    let eth_ask = order_id(&place(&m, limit(1, 12, eth, Side::Sell, 350_000, 100)).await);
    place(&m, limit(2, 21, btc, Side::Buy, 6_490_000, 50)).await;
    // One command per shard, one reply: a cancel by client id only shard 1 can carry out.
    let cancel = m
        .execute(CommandKind::Cancel(Cancel {
            account: 2,
            order: OrderRef::Client(21),
        }))
        .await
        .unwrap();
    assert!(
        matches!(cancel[0].kind, EventKind::Accepted { .. }),
        "{cancel:?}"
    );
    let taker = place(&m, limit(3, 31, btc, Side::Buy, 6_500_000, 40)).await;
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
    for k in 0..2 {
        assert!(
            shard_dir(dir.path(), k).is_dir(),
            "shard {k} journals in its directory"
        );
    }
    // Another number of shards would put instruments on other shards than their journals.
    let refused = Market::start(config(dir.path(), 3)).err().expect("refused");
    assert!(
        refused.to_string().contains("a market of 2 shards"),
        "{refused}"
    );

    let m = Market::start(config(dir.path(), 2)).unwrap();
    let recovery = &m.journal().unwrap().recovery;
    assert!(
        recovery.snapshot.is_some(),
        "a clean stop leaves a snapshot round"
    );
    assert_eq!(recovery.replayed, 0, "and nothing to replay after it");
    assert_eq!(m.instruments().all().len(), 4, "no instrument added twice");
    let metrics = ticker_servers::metrics::render(&m);
    assert!(
        metrics.contains("tickerd_journal_durable_index{shard=\"1\"}"),
        "{metrics}"
    );
    let mut trades = m.hub().subscribe(
        Topic::Market {
            channel: Channel::Trades,
            instrument: btc,
        },
        Some(last_trade),
    );
    let mut updates = m.accounts().subscribe(1, Some(last_update));
    // Both resting asks are still there with their ids, on their shards.
    let more = place(&m, limit(4, 41, btc, Side::Buy, 6_500_000, 10)).await;
    assert!(more[0].seq > last_event, "the merged sequence continues");
    let maker = |events: &[Event]| {
        events
            .iter()
            .find_map(|e| match e.kind {
                EventKind::Trade {
                    maker_order,
                    maker_remaining,
                    ..
                } => Some((maker_order, maker_remaining)),
                _ => None,
            })
            .expect("a resting ask survived the restart and traded")
    };
    assert_eq!(maker(&more), (btc_ask, 50));
    let on_eth = place(&m, limit(4, 42, eth, Side::Buy, 350_000, 10)).await;
    assert_eq!(maker(&on_eth), (eth_ask, 90));
    assert!(on_eth[0].seq > more.last().unwrap().seq);
    let m1 = next_message(&mut trades).await;
    assert_eq!(m1.prev_seq, last_trade, "trades resume with no gap");
    let u1 = next_message(&mut updates).await;
    assert_eq!(u1.prev_seq, last_update, "order updates resume with no gap");
    m.shutdown();
}

/// With the simulator trading on one and on three shards, commands for every shard in
/// between and a snapshot round every 1,500 commands: recovering from the last round (the
/// clean stop's, which holds the feeds the running market had), from any earlier one, or from
/// no snapshot at all gives the same engines, the same merged `seq` and the same feeds, byte
/// for byte — the merged stream replays as it was published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_snapshot_round_and_a_full_replay_give_what_the_market_published() {
    rounds_and_full_replay(1).await;
    rounds_and_full_replay(3).await;
}

async fn rounds_and_full_replay(shards: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), shards);
    cfg.simulator = Some(SimConfig {
        rate: 20_000,
        history_secs: 0,
        ..SimConfig::default()
    });
    cfg.heartbeat = Duration::from_millis(10);
    let j = cfg.journal.as_mut().unwrap();
    j.snapshot_every = 1_500;
    j.keep_snapshots = 1_000;
    let m = Market::start(cfg.clone()).unwrap();
    let snapshots = m.journal().unwrap().snapshots.clone();
    let mut written = snapshots.watch();
    let mut round = 0u64;
    tokio::time::timeout(GUARD, async {
        while snapshots.written.load(Ordering::Relaxed) < 3 {
            // Commands every shard carries out, folded into one outcome each.
            round += 1;
            let all: [CommandKind; 3] = [
                CommandKind::MassCancel(MassCancel {
                    account: 1 + round % 3,
                    instrument: None,
                    side: None,
                }),
                CommandKind::Cancel(Cancel {
                    account: 2,
                    order: OrderRef::Client(1_000_000 + round),
                }),
                CommandKind::DisableAccount { account: 7 },
            ];
            for kind in all {
                execute(&m, kind).await;
            }
            execute(&m, CommandKind::EnableAccount { account: 7 }).await;
            let _ = tokio::time::timeout(Duration::from_millis(20), written.changed()).await;
        }
    })
    .await
    .expect("three snapshot rounds in time");
    m.shutdown();
    drop(m);

    let (rounds, seq, replayed) = recoveries_agree(dir.path(), &cfg, shards);
    assert!(rounds >= 4, "three rounds and the clean stop's: {rounds}");
    assert!(
        seq > 4_500 && replayed > 4_500,
        "seq {seq}, {replayed} replayed"
    );
}

/// Recovers copies of the stopped market's data directory `dir` from its newest snapshot
/// round, from each older one (newer shard-0 files removed) and from none, checks that all
/// give the same engines, merged `seq` and feeds byte for byte. Returns the rounds, the merged
/// `seq` and the commands replayed from nothing.
fn recoveries_agree(dir: &Path, cfg: &MarketConfig, shards: usize) -> (usize, u64, u64) {
    let mut from_nothing = 0;
    let rounds: Vec<u64> = {
        let mut r: Vec<u64> = std::fs::read_dir(first_dir(dir, shards))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().to_string();
                name.strip_suffix(".snapshot").map(|n| n.parse().unwrap())
            })
            .collect();
        r.sort_unstable();
        r
    };
    // Recover from the newest round, each older one (newer shard-0 files removed), and none.
    let mut results = Vec::new();
    for keep in (0..=rounds.len()).rev() {
        let image = tempfile::tempdir().unwrap();
        copy_dir(dir, image.path());
        for &index in &rounds[keep..] {
            std::fs::remove_file(first_dir(image.path(), shards).join(snapshot_name(index)))
                .unwrap();
        }
        let mut journal = cfg.journal.clone().unwrap();
        journal.dir = image.path().to_path_buf();
        let hub = Arc::new(Hub::new(cfg.feeds.hub.clone()));
        let r = recover_market(
            &journal,
            shards,
            &cfg.pipeline.engine,
            &cfg.feeds,
            hub,
            Arc::new(Instruments::default()),
            &mut |_| {},
        )
        .unwrap();
        let started_from = keep.checked_sub(1).map(|k| rounds[k]);
        assert_eq!(
            r.restored.report.snapshot.is_some(),
            started_from.is_some(),
            "{}",
            r.restored.report
        );
        if started_from.is_none() {
            from_nothing = r.restored.report.replayed;
        }
        let seq = r.restored.merged_seq.max(r.feeds.last_seq());
        let engines: Vec<EngineSnapshot> = r.engines.iter().map(Engine::snapshot).collect();
        results.push((started_from, seq, engines, r.feeds.snapshot().encode()));
    }
    let (_, seq, engines, feeds) = &results[0];
    for (from, other_seq, other_engines, other_feeds) in &results[1..] {
        assert_eq!(other_seq, seq, "merged seq, starting from {from:?}");
        for (k, (a, b)) in engines.iter().zip(other_engines).enumerate() {
            if a != b {
                let (a, b) = (format!("{a:?}"), format!("{b:?}"));
                let at = a
                    .bytes()
                    .zip(b.bytes())
                    .position(|(x, y)| x != y)
                    .unwrap_or(0);
                panic!(
                    "engine {k}, starting from {from:?}: {} | {}",
                    &a[at.saturating_sub(300)..(at + 200).min(a.len())],
                    &b[at.saturating_sub(300)..(at + 200).min(b.len())]
                );
            }
        }
        let at = feeds.iter().zip(other_feeds).position(|(a, b)| a != b);
        assert!(
            other_feeds == feeds,
            "feeds, starting from {from:?}: {} vs {} bytes, first difference at {at:?} of {:?}",
            feeds.len(),
            other_feeds.len(),
            results.iter().map(|r| r.3.len()).collect::<Vec<_>>()
        );
    }
    (rounds.len(), results[0].1, from_nothing)
}

/// What a crash can leave of a command sent to every shard: journaled (and its accept
/// published) by one shard, still in the other's ring. Here account 5's kill switch is in
/// shard 0's journal only, as its last run. A start sends it to shard 1 too, so the account's
/// order there is cancelled and it cannot trade on either shard; the merge folds the late
/// outcome with the first as the running market would have, so a replay of the journals from
/// nothing agrees with the market byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_switch_that_reached_one_shard_before_a_crash_reaches_every_shard_at_start() {
    use ticker_engine::journal::{DirStorage, Journal, OpenOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 2);
    cfg.journal.as_mut().unwrap().keep_snapshots = 1_000;
    let m = Market::start(cfg.clone()).unwrap();
    let (btc, eth) = (0, 1);
    let on_btc = order_id(&place(&m, limit(5, 51, btc, Side::Sell, 6_500_000, 10)).await);
    let on_eth = order_id(&place(&m, limit(5, 52, eth, Side::Sell, 350_000, 10)).await);
    m.shutdown();
    drop(m);

    // Shard 0's journal gets the kill switch as a published run: a ticket above every other.
    let journals: Vec<Journal<DirStorage>> = (0..2)
        .map(|k| {
            let storage = DirStorage::new(shard_dir(dir.path(), k)).unwrap();
            Journal::open(storage, OpenOptions::default()).unwrap()
        })
        .collect();
    let mut ticket = 0;
    let mut ts = 0;
    for journal in &journals {
        for run in journal.records_from(1) {
            let run = run.unwrap();
            ticket = ticket.max(run.ticket.unwrap_or(0));
            ts = run.commands.iter().map(|(_, c)| c.ts).fold(ts, u64::max);
        }
    }
    let shard0 = journals.into_iter().next().unwrap();
    let last = shard0.last_index();
    let mut writer = shard0.into_writer(last + 1, 64 << 20).unwrap();
    let kill = Command::new(ts, 1 << 40, CommandKind::DisableAccount { account: 5 });
    writer.push(&kill);
    writer.commit(last, Some(ticket + 1)).unwrap();
    writer.sync().unwrap();
    drop(writer);

    let m = Market::start(cfg.clone()).unwrap();
    for (instrument, price) in [(btc, 6_490_000), (eth, 349_000)] {
        let bid = limit(5, 60 + instrument as u64, instrument, Side::Buy, price, 1);
        let events = m.execute(CommandKind::Place(bid)).await.unwrap();
        assert!(
            matches!(
                events[0].kind,
                EventKind::Rejected {
                    reason: RejectReason::AccountDisabled,
                    ..
                }
            ),
            "account 5 is disabled on the shard of instrument {instrument}: {events:?}"
        );
    }
    for order in [on_btc, on_eth] {
        let events = m
            .execute(CommandKind::Cancel(Cancel {
                account: 5,
                order: OrderRef::Id(order),
            }))
            .await
            .unwrap();
        assert!(
            matches!(
                events[0].kind,
                EventKind::Rejected {
                    reason: RejectReason::UnknownOrder,
                    ..
                }
            ),
            "the kill switch cancelled order {order} on its shard: {events:?}"
        );
    }
    // The account's stream, gap-free: each shard's order ended by the kill switch.
    let history = m.hub().topic(Topic::Orders(5)).history();
    let ended = history
        .iter()
        .filter(|message| {
            let json = String::from_utf8_lossy(message.json());
            json.contains("\"done\"") && json.contains("account_disabled")
        })
        .count();
    assert_eq!(ended, 2, "both orders ended by the kill switch");
    assert!(
        history.windows(2).all(|w| w[1].prev_seq == w[0].seq),
        "account 5's stream has no gap"
    );
    m.shutdown();
    drop(m);
    recoveries_agree(dir.path(), &cfg, 2);
}
