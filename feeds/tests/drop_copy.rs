//! The drop copy against the real engine: one gap-free stream of every account's updates,
//! each the account's own update with the account named; resumable from any `seq` its
//! history holds, and from further back with a snapshot of every open order.

mod common;

use common::{market_stream, run, Stream};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use ticker_engine::AccountId;
use ticker_feeds::hub::{Delivery, SnapshotReason};
use ticker_feeds::*;
use ticker_proto::v1 as pb;

fn stream() -> &'static Stream {
    static STREAM: OnceLock<Stream> = OnceLock::new();
    STREAM.get_or_init(|| market_stream(11, 12_000))
}

fn feeds(hub: HubConfig) -> MarketData {
    let config = FeedsConfig {
        hub,
        ..FeedsConfig::default()
    };
    let hub = Arc::new(Hub::new(config.hub.clone()));
    MarketData::new(config, hub, Arc::new(Instruments::default()))
}

fn json(m: &Message) -> Value {
    serde_json::from_slice(m.json()).unwrap()
}

fn drain(sub: &mut Subscription) -> Vec<Delivery> {
    std::iter::from_fn(|| sub.try_recv().unwrap()).collect()
}

/// An account's own update as the drop copy carries it: the same message but for its own
/// sequence, the channel and the account.
fn as_own(mut update: Value) -> Value {
    let o = update.as_object_mut().unwrap();
    for key in ["seq", "prev_seq", "channel", "account"] {
        o.remove(key);
    }
    update
}

#[test]
fn every_accounts_updates_arrive_once_in_one_gap_free_sequence() {
    let stream = stream();
    let mut md = feeds(HubConfig {
        history: 1 << 20,
        ..HubConfig::default()
    });
    let mut sub = md.drop_copy().subscribe(None);
    let Some(Delivery::Snapshot { message, reason }) = sub.try_recv().unwrap() else {
        panic!("a subscriber starts from a snapshot");
    };
    assert_eq!(reason, SnapshotReason::Initial);
    assert_eq!(json(&message)["orders"], Value::Array(vec![]));
    let mut got = Vec::new();
    for step in &stream.steps {
        run(&mut md, std::slice::from_ref(step));
        // Read as the stream goes, within the lossless queue limit.
        for d in drain(&mut sub) {
            let Delivery::Message(m) = d else {
                panic!("only updates after the snapshot: {d:?}");
            };
            got.push(m);
        }
    }
    assert_eq!(got.len() as u64, md.drop_copy().seq());
    let mut by_account: BTreeMap<AccountId, Vec<Value>> = BTreeMap::new();
    for (i, m) in got.iter().enumerate() {
        assert_eq!((m.prev_seq, m.seq), (i as u64, i as u64 + 1), "gap-free");
        let update = json(m);
        assert_eq!(update["channel"], "drop_copy");
        let account = update["account"]
            .as_u64()
            .expect("every message names its account");
        let proto = <pb::OrderUpdate as prost::Message>::decode(m.proto().as_ref()).unwrap();
        assert_eq!((proto.seq, proto.account), (m.seq, account));
        assert_eq!(proto.engine_seq, update["engine_seq"]);
        by_account.entry(account).or_default().push(as_own(update));
    }
    assert!(by_account.len() > 10, "{} accounts", by_account.len());
    let kinds: std::collections::BTreeSet<String> = by_account
        .values()
        .flatten()
        .map(|u| u["event"].as_str().unwrap().to_string())
        .collect();
    for kind in [
        "accepted",
        "rejected",
        "ack",
        "rested",
        "stop_armed",
        "stop_triggered",
        "fill",
        "amended",
        "done",
    ] {
        assert!(kinds.contains(kind), "no {kind} on the drop copy");
    }
    // Account by account, the drop copy is exactly the account's own stream.
    for account in &stream.accounts {
        let own: Vec<Value> = md
            .hub()
            .topic(Topic::Orders(*account))
            .history()
            .iter()
            .map(|m| as_own(json(m)))
            .collect();
        assert_eq!(
            by_account.remove(account).unwrap_or_default(),
            own,
            "account {account}"
        );
    }
    assert!(by_account.is_empty(), "only the stream's accounts");
}

#[test]
fn resuming_within_the_history_continues_with_no_gap_and_no_duplicate() {
    let steps = &stream().steps;
    let mut md = feeds(HubConfig {
        drop_copy_history: 2_000,
        ..HubConfig::default()
    });
    run(&mut md, &steps[..steps.len() / 2]);
    let history = md.hub().topic(Topic::DropCopy).history();
    assert_eq!(history.len(), 2_000, "the history is full");
    let oldest = history[0].prev_seq;
    let live = steps.len() / 2;
    for (i, from) in [oldest, oldest + 777, md.drop_copy().seq()]
        .into_iter()
        .enumerate()
    {
        let mut sub = md.drop_copy().subscribe(Some(from));
        let mut last = from;
        let check = |sub: &mut Subscription, last: &mut u64| {
            for d in drain(sub) {
                let Delivery::Message(m) = d else {
                    panic!("resuming from {from} inside the history: {d:?}");
                };
                assert_eq!(m.prev_seq, *last, "no gap, no duplicate");
                *last = m.seq;
            }
        };
        check(&mut sub, &mut last);
        assert_eq!(last, md.drop_copy().seq(), "the history up to the newest");
        // And live from there on, the replay and the live stream meeting exactly.
        let more = live + 50 * i..live + 50 * (i + 1);
        run(&mut md, &steps[more]);
        check(&mut sub, &mut last);
        assert_eq!(last, md.drop_copy().seq());
    }
}

#[test]
fn resuming_from_before_the_history_starts_from_every_open_order_then_goes_live() {
    let stream = stream();
    let steps = &stream.steps;
    let mut md = feeds(HubConfig {
        drop_copy_history: 100,
        ..HubConfig::default()
    });
    let cut = steps.len() / 2;
    run(&mut md, &steps[..cut]);
    let mut sub = md.drop_copy().subscribe(Some(1));
    let Some(Delivery::Snapshot { message, reason }) = sub.try_recv().unwrap() else {
        panic!("a snapshot");
    };
    assert_eq!(reason, SnapshotReason::ResumeTooOld);
    assert_eq!(message.seq, md.drop_copy().seq());
    // The snapshot is every account's own snapshot, each order with its account.
    let snapshot = json(&message);
    assert_eq!(snapshot["channel"], "drop_copy");
    let mut expected = Vec::new();
    for account in &stream.accounts {
        let mut own = md.accounts().subscribe(*account, None);
        let Some(Delivery::Snapshot { message, .. }) = own.try_recv().unwrap() else {
            panic!("account {account} starts from a snapshot");
        };
        for mut order in json(&message)["orders"].as_array().unwrap().clone() {
            order["account"] = (*account).into();
            expected.push(order);
        }
    }
    let got = snapshot["orders"].as_array().unwrap();
    assert!(got.len() > 20, "{} open orders", got.len());
    let key = |o: &Value| {
        let id: u64 = o["order_id"].as_str().unwrap().parse().unwrap();
        (o["account"].as_u64().unwrap(), id)
    };
    let mut expected_sorted = expected.clone();
    expected_sorted.sort_by_key(key);
    assert_eq!(got, &expected_sorted, "by account, then order id");
    let proto = <pb::OrderUpdate as prost::Message>::decode(message.proto().as_ref()).unwrap();
    let Some(pb::order_update::Event::Snapshot(open)) = proto.event else {
        panic!("an open-orders snapshot");
    };
    assert_eq!(open.orders.len(), got.len());
    assert!(open
        .orders
        .iter()
        .zip(got)
        .all(|(p, j)| j["account"] == p.account));
    // Then the updates after the snapshot's seq, live.
    run(&mut md, &steps[cut..cut + 50]);
    let mut last = message.seq;
    let live = drain(&mut sub);
    assert!(!live.is_empty());
    for d in live {
        let Delivery::Message(m) = d else {
            panic!("live updates after the snapshot: {d:?}");
        };
        assert_eq!(m.prev_seq, last);
        last = m.seq;
    }
    assert_eq!(last, md.drop_copy().seq());
}

#[test]
fn a_restarted_drop_copy_continues_its_chain_and_answers_resumes_as_before() {
    let steps = &stream().steps;
    let config = HubConfig {
        drop_copy_history: 3_000,
        ..HubConfig::default()
    };
    let cut = steps.len() / 3;
    let mut uninterrupted = feeds(config.clone());
    run(&mut uninterrupted, steps);
    let mut before = feeds(config.clone());
    run(&mut before, &steps[..cut]);
    let snapshot = FeedsSnapshot::decode(&before.snapshot().encode()).unwrap();
    let feeds_config = FeedsConfig {
        hub: config.clone(),
        ..FeedsConfig::default()
    };
    let mut restored = MarketData::restore(
        feeds_config,
        Arc::new(Hub::new(config)),
        Arc::new(Instruments::default()),
        snapshot,
    )
    .unwrap();
    assert_eq!(restored.drop_copy().seq(), before.drop_copy().seq());
    // A client that got up to 10 messages before the cut resumes across the restart.
    let resume_from = before.drop_copy().seq() - 10;
    let mut resumed = restored.drop_copy().subscribe(Some(resume_from));
    let mut last = resume_from;
    for chunk in steps[cut..].chunks(20) {
        run(&mut restored, chunk);
        for d in drain(&mut resumed) {
            let Delivery::Message(m) = d else {
                panic!("resuming inside the history: {d:?}");
            };
            assert_eq!(m.prev_seq, last, "no gap, no duplicate");
            last = m.seq;
        }
    }
    assert_eq!(last, uninterrupted.drop_copy().seq());
    assert_eq!(restored.drop_copy().seq(), uninterrupted.drop_copy().seq());
    assert_eq!(
        restored.hub().topic(Topic::DropCopy).history(),
        uninterrupted.hub().topic(Topic::DropCopy).history()
    );
    assert_eq!(restored.positions().all(), uninterrupted.positions().all());
    assert!(last > before.drop_copy().seq(), "crossed the restart");
}
