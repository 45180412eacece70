//! Every cargo-fuzz target's check (`servers/fuzz/checks/`) replayed over its corpus of
//! interesting inputs kept in the tree (`servers/fuzz/seeds/<target>/`): what a fuzz run once
//! found must keep passing, on stable and in every CI run (servers/fuzz/README.md).
//!
//! The hand-made starting inputs of `grpc_request` and `journal_reader` are built here from the
//! current encodings and must match the files in the tree (so an encoding change shows up);
//! `WRITE_FUZZ_SEEDS=1 cargo test -p ticker-servers --test fuzz_seeds` rewrites them.

#[path = "../fuzz/checks/extension_offer.rs"]
mod extension_offer;
#[path = "../fuzz/checks/grpc_request.rs"]
mod grpc_request;
#[path = "../fuzz/checks/inflate_frames.rs"]
mod inflate_frames;
#[path = "../fuzz/checks/journal_reader.rs"]
mod journal_reader;
#[path = "../fuzz/checks/json_command.rs"]
mod json_command;

use std::path::PathBuf;

/// A target's check: panics on an input that breaks one of its properties.
type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 5] = [
    ("extension_offer", extension_offer::run),
    ("grpc_request", grpc_request::run),
    ("inflate_frames", inflate_frames::run),
    ("journal_reader", journal_reader::run),
    ("json_command", json_command::run),
];

fn seeds(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target)
}

#[test]
fn every_fuzz_target_passes_on_its_seeds() {
    for (target, check) in TARGETS {
        let mut inputs = 0;
        for entry in std::fs::read_dir(seeds(target)).expect("a seeds folder per target") {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&bytes));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            inputs += 1;
        }
        assert!(inputs > 0, "{target} has seeds");
    }
}

/// The hand-made starting inputs of the targets whose inputs are binary encodings, built from
/// today's encodings: the files in the tree hold exactly these.
#[test]
fn the_hand_made_seeds_are_todays_encodings() {
    use prost::Message;
    use ticker_engine::journal::format::RecordBuilder;
    use ticker_engine::journal::snapshot_file::{SnapshotFile, SnapshotSection};
    use ticker_engine::{Command, CommandKind, Engine, EngineConfig, Place, Side};
    use ticker_proto::v1 as pb;
    let rewrite = std::env::var_os("WRITE_FUZZ_SEEDS").is_some();
    let write = |target: &str, name: &str, bytes: Vec<u8>| {
        let path = seeds(target).join(name);
        if rewrite {
            std::fs::create_dir_all(seeds(target)).unwrap();
            std::fs::write(&path, bytes).unwrap();
        } else {
            let kept = std::fs::read(&path).unwrap_or_default();
            assert!(
                kept == bytes,
                "{} differs from today's encoding: WRITE_FUZZ_SEEDS=1 rewrites it",
                path.display()
            );
        }
    };
    let with_kind = |kind: u8, m: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = vec![kind];
        m(&mut bytes);
        bytes
    };
    let place = pb::PlaceOrderRequest {
        instrument: "BTC-USD".into(),
        side: pb::Side::Buy as i32,
        order_type: pb::OrderType::Limit as i32,
        price: "65000.10".into(),
        size: "0.25".into(),
        client_order_id: 42,
        ..Default::default()
    };
    let stop = pb::PlaceOrderRequest {
        order_type: pb::OrderType::StopLimit as i32,
        trigger_price: "64999.99".into(),
        display_size: "0.05".into(),
        time_in_force: pb::TimeInForce::Gtd as i32,
        expiry_ns: 1_900_000_000_000_000_000,
        ..place.clone()
    };
    let amend = pb::AmendOrderRequest {
        order: Some(pb::amend_order_request::Order::ClientOrderId(42)),
        price: Some("65001.00".into()),
        size: Some("0.125".into()),
        trigger_price: None,
        instrument: "BTC-USD".into(),
    };
    let cancel = pb::CancelOrderRequest {
        order: Some(pb::cancel_order_request::Order::OrderId(7)),
    };
    let mass = pb::MassCancelRequest {
        instrument: "ETH-USD".into(),
        side: pb::Side::Sell as i32,
    };
    write(
        "grpc_request",
        "place",
        with_kind(0, &|b| place.encode(b).unwrap()),
    );
    write(
        "grpc_request",
        "stop_limit",
        with_kind(0, &|b| stop.encode(b).unwrap()),
    );
    write(
        "grpc_request",
        "cancel",
        with_kind(1, &|b| cancel.encode(b).unwrap()),
    );
    write(
        "grpc_request",
        "amend",
        with_kind(2, &|b| amend.encode(b).unwrap()),
    );
    write(
        "grpc_request",
        "mass_cancel",
        with_kind(3, &|b| mass.encode(b).unwrap()),
    );

    // A segment's records (after the header the check writes itself), checksums as written.
    let commands = [
        Command::new(
            10,
            1,
            CommandKind::Place(Place::limit(1, 0, Side::Buy, 6_500_000, 25)),
        ),
        Command::new(
            11,
            2,
            CommandKind::Place(Place::limit(2, 0, Side::Sell, 6_500_000, 10)),
        ),
        Command::new(12, 3, CommandKind::Heartbeat),
    ];
    let mut builder = RecordBuilder::default();
    let mut records = vec![0u8];
    for (i, c) in commands.iter().enumerate() {
        builder.begin(i as u64 + 1);
        builder.push(c);
        records.extend_from_slice(builder.finish(i as u64, None));
    }
    write("journal_reader", "segment", records);
    let engine = Engine::new(EngineConfig {
        order_capacity: 4096,
        ladder_ticks: 4096,
        index_capacity: 1024,
        ..EngineConfig::default()
    });
    let engine_bytes = postcard::to_allocvec(&engine.snapshot()).unwrap();
    let mut sections = vec![3u8];
    sections.extend_from_slice(&engine_bytes);
    write("journal_reader", "engine_snapshot", sections);
    let file = SnapshotFile {
        index: 3,
        sections: vec![SnapshotSection {
            name: "engine".into(),
            bytes: engine_bytes,
        }],
    };
    let mut snapshot = vec![2u8];
    snapshot.extend_from_slice(&file.encode());
    write("journal_reader", "snapshot_file", snapshot);
}
