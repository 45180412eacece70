//! `tickerd journal verify | inspect | replay` on a sharded market's data directory: every
//! shard's journal gone through, the merge tickets shown, the snapshot rounds checked, and a
//! replay that merges the shards' runs as a start does — from the round or from the first
//! command, to the same books and merged `seq`. A one-shard directory reads as before.

use std::path::Path;
use ticker_engine::shard::Shard;
use ticker_engine::*;
use ticker_servers::journal_tool::{inspect, replay, verify};
use ticker_servers::market::{Market, MarketConfig};
use ticker_servers::shard_recovery::shard_dir;

#[allow(dead_code)]
mod journaled;

/// Every round kept, and so every segment: a full replay stays possible.
fn config(dir: &Path, shards: usize) -> MarketConfig {
    let mut config = journaled::config(dir, shards);
    if let Some(j) = config.journal.as_mut() {
        j.keep_snapshots = 1_000;
    }
    config
}

fn limit(account: AccountId, instrument: InstrumentId, side: Side, price: Ticks) -> Place {
    Place {
        client_id: 0,
        instrument,
        ..Place::limit(account, 0, side, price, 10)
    }
}

/// Starts the market on `dir`, carries out every command, stops cleanly (a last snapshot
/// round) and returns the highest merged `seq` the replies carried.
async fn run_market(dir: &Path, shards: usize, commands: Vec<CommandKind>) -> u64 {
    let market = Market::start(config(dir, shards)).unwrap();
    let mut last_seq = 0;
    for command in commands {
        let events = market.execute(command).await.unwrap();
        assert!(
            matches!(
                events[0].kind,
                EventKind::PlaceAccepted { .. } | EventKind::Accepted { .. }
            ),
            "{events:?}"
        );
        last_seq = events.iter().map(|e| e.seq).fold(last_seq, u64::max);
    }
    market.shutdown();
    last_seq
}

/// Orders on instruments 0 and 1, which live on different shards of two; the last one trades.
fn orders() -> Vec<CommandKind> {
    [
        limit(1, 0, Side::Sell, 6_500_000),
        limit(1, 1, Side::Sell, 350_000),
        limit(2, 1, Side::Buy, 349_000),
        limit(2, 0, Side::Buy, 6_500_000),
    ]
    .into_iter()
    .map(CommandKind::Place)
    .collect()
}

/// Commands every shard carries out, whose outcomes the merge folds into one each, then a
/// trade on shard 1.
fn more() -> Vec<CommandKind> {
    vec![
        CommandKind::DisableAccount { account: 7 },
        CommandKind::EnableAccount { account: 7 },
        CommandKind::Place(limit(3, 1, Side::Sell, 349_000)),
        CommandKind::Place(limit(3, 0, Side::Sell, 6_600_000)),
    ]
}

fn snapshots_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut snapshots: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snapshot"))
        .collect();
    snapshots.sort();
    snapshots
}

fn run<F>(f: F) -> (bool, String)
where
    F: FnOnce(&mut Vec<u8>) -> anyhow::Result<bool>,
{
    let mut out = Vec::new();
    let ok = f(&mut out).unwrap();
    (ok, String::from_utf8(out).unwrap())
}

/// The merged `seq` a sharded replay reports where it says how it started.
fn merged_seq(replayed: &str) -> u64 {
    let started = replayed
        .lines()
        .find(|l| l.contains("shards) from"))
        .unwrap_or_else(|| panic!("how it started: {replayed}"));
    started
        .rsplit("last merged event seq ")
        .next()
        .and_then(|seq| seq.parse().ok())
        .unwrap_or_else(|| panic!("no merged seq in {started:?}"))
}

/// A replay's lines after the one that says how it started and how long it took.
fn state_lines(replayed: &str) -> Vec<&str> {
    replayed
        .lines()
        .skip_while(|l| !l.contains("shards) from"))
        .skip(1)
        .collect()
}

/// Each `shard-K:` section of `inspect`, in shard order.
fn sections(inspected: &str) -> Vec<String> {
    let mut sections: Vec<String> = Vec::new();
    for line in inspected.lines() {
        if line.ends_with(':') {
            sections.push(String::new());
        }
        let section = sections.last_mut().expect("a shard's header first");
        section.push_str(line);
        section.push('\n');
    }
    sections
}

fn tickets(section: &str) -> Vec<u64> {
    section
        .lines()
        .filter_map(|l| l.trim().strip_prefix("run ticket="))
        .map(|t| t.parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_data_directory_is_verified_inspected_and_replayed_shard_by_shard() {
    assert_ne!(Shard::of_instrument(2, 0), Shard::of_instrument(2, 1));
    let dir = tempfile::tempdir().unwrap();
    run_market(dir.path(), 2, orders()).await;
    // A second run: a round before its commands and one after.
    let published = run_market(dir.path(), 2, more()).await;
    let (shard0, shard1) = (shard_dir(dir.path(), 0), shard_dir(dir.path(), 1));

    let (ok, verified) = run(|out| verify(dir.path(), out));
    assert!(ok, "{verified}");
    assert!(verified.ends_with("OK\n"), "{verified}");
    for shard in [&shard0, &shard1] {
        assert!(
            verified.contains(&format!("{}: ", shard.display())),
            "{verified}"
        );
    }
    let whole = |verified: &str| {
        verified
            .lines()
            .filter(|l| l.starts_with("round at cuts [") && l.contains(": whole"))
            .count()
    };
    assert_eq!(whole(&verified), 2, "each clean stop's round: {verified}");

    let (_, inspected) = run(|out| inspect(dir.path(), None, 100, out).map(|()| true));
    let shards = sections(&inspected);
    assert_eq!(shards.len(), 2, "{inspected}");
    assert!(shards[0].starts_with(&format!("{}:", shard0.display())));
    assert!(shards[1].starts_with(&format!("{}:", shard1.display())));
    for (k, section) in shards.iter().enumerate() {
        let instrument = format!("instrument={k} ");
        assert_eq!(
            section.matches(" place ").count(),
            3,
            "the orders of instrument {k} on shard {k}: {section}"
        );
        assert_eq!(section.matches(&instrument).count(), 3, "{section}");
        let tickets = tickets(section);
        assert!(!tickets.is_empty(), "{section}");
        assert!(
            tickets.windows(2).all(|w| w[0] < w[1]),
            "a shard's runs in ticket order: {tickets:?}"
        );
    }
    let (t0, t1) = (tickets(&shards[0]), tickets(&shards[1]));
    assert!(
        t0.iter().all(|t| !t1.contains(t)),
        "a ticket is one run's: {t0:?} {t1:?}"
    );
    // `--from` counts in each shard's own indexes.
    let (_, from_two) = run(|out| inspect(dir.path(), Some(2), 100, out).map(|()| true));
    for section in sections(&from_two) {
        let first = section
            .lines()
            .find(|l| l.contains(" ts="))
            .expect("a command");
        assert_eq!(first.split_whitespace().next(), Some("2"), "{section}");
    }

    let (_, from_round) = run(|out| replay(dir.path(), false, out).map(|()| true));
    let (_, full) = run(|out| replay(dir.path(), true, out).map(|()| true));
    for replayed in [&from_round, &full] {
        assert!(replayed.contains("(2 shards) from"), "{replayed}");
        assert!(
            merged_seq(replayed) >= published,
            "every event the replies carried: {replayed}"
        );
        for shard in [&shard0, &shard1] {
            assert!(
                replayed.contains(&format!("{}: last command ", shard.display())),
                "{replayed}"
            );
        }
    }
    assert!(
        from_round.contains("from the round at cuts"),
        "{from_round}"
    );
    assert!(full.contains("from the first command"), "{full}");
    assert_eq!(merged_seq(&from_round), merged_seq(&full));
    assert_eq!(state_lines(&from_round), state_lines(&full));

    // A round whose shard-1 file is gone is one a start cannot use.
    let newest = snapshots_in(&shard1).pop().unwrap();
    std::fs::remove_file(&newest).unwrap();
    let (ok, verified) = run(|out| verify(dir.path(), out));
    assert!(!ok, "{verified}");
    let missing = format!("incomplete, missing {}", newest.display());
    assert!(
        verified
            .lines()
            .any(|l| l.starts_with("ERROR: round at cuts [") && l.ends_with(&missing)),
        "{verified}"
    );
    assert_eq!(whole(&verified), 1, "the first run's round: {verified}");
    assert!(verified.ends_with("DAMAGED\n"), "{verified}");
    // A replay skips it, as a start would, for the older round and the runs after it, merged.
    let (_, older) = run(|out| replay(dir.path(), false, out).map(|()| true));
    assert!(
        older.starts_with("skipped the round of snapshot "),
        "{older}"
    );
    assert!(older.contains("from the round at cuts"), "{older}");
    assert!(!older.contains(" + 0 commands "), "{older}");
    assert_eq!(merged_seq(&older), merged_seq(&full));
    assert_eq!(state_lines(&older), state_lines(&full));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shard_data_directory_reads_as_it_always_did() {
    let dir = tempfile::tempdir().unwrap();
    run_market(dir.path(), 1, orders()).await;

    let (ok, verified) = run(|out| verify(dir.path(), out));
    assert!(ok, "{verified}");
    assert!(
        verified.starts_with(&format!("{}: ", dir.path().display())),
        "{verified}"
    );
    assert!(!verified.contains("round"), "{verified}");

    let (_, inspected) = run(|out| inspect(dir.path(), None, 100, out).map(|()| true));
    let lines: Vec<&str> = inspected.lines().collect();
    assert!(
        lines[0].starts_with("snapshot after command "),
        "{inspected}"
    );
    assert!(!inspected.contains("run "), "no merge tickets: {inspected}");
    assert_eq!(inspected.matches(" place ").count(), 4, "{inspected}");

    let (_, replayed) = run(|out| replay(dir.path(), false, out).map(|()| true));
    assert!(replayed.contains(" from snapshot "), "{replayed}");
    assert!(!replayed.contains("shards"), "{replayed}");
}
