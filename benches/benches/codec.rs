//! The journal's encoding, hand-written (`ticker_engine::codec`) against serde + postcard, on
//! the issue-3 stream: 100,000 commands (limits, cancels by client id, markets) and the events
//! the engine gives for them. Each bench encodes (or decodes) the whole stream into one reused
//! buffer; throughput is per command or per event.
//!
//! ```sh
//! cargo bench -p ticker-benches --bench codec
//! ```

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use ticker_benches::workload::{Workload, WorkloadConfig};
use ticker_engine::codec::{decode_command, decode_event, encode_command, encode_event};
use ticker_engine::{Command, Event};

fn stream() -> (Vec<Command>, Vec<Event>) {
    let workload = Workload::generate(&WorkloadConfig {
        warmup_orders: 10_000,
        ops: 100_000,
        ..WorkloadConfig::default()
    });
    let mut engine = workload.prepared_engine();
    let mut events = Vec::new();
    for cmd in &workload.ops {
        engine.apply(cmd, &mut events);
    }
    (workload.ops, events)
}

/// Encodes every item one after the other, as the journal does, each prefixed by nothing (the
/// record framing is the same for both encodings).
fn encode_all<T>(items: &[T], out: &mut Vec<u8>, encode: impl Fn(&T, &mut Vec<u8>)) -> usize {
    out.clear();
    for item in items {
        encode(item, out);
    }
    out.len()
}

fn postcard_encode<T: serde::Serialize>(item: &T, out: &mut Vec<u8>) {
    let taken = std::mem::take(out);
    *out = postcard::to_extend(item, taken).expect("Vec grows");
}

/// postcard into a stack buffer, then one copy: its slice flavor writes without growth checks.
fn postcard_encode_slice<T: serde::Serialize>(item: &T, out: &mut Vec<u8>) {
    let mut scratch = [0u8; 512];
    let used = postcard::to_slice(item, &mut scratch).expect("fits").len();
    out.extend_from_slice(&scratch[..used]);
}

/// Decodes back-to-back items until the buffer is used up.
fn decode_all<T>(mut buf: &[u8], decode: impl Fn(&[u8]) -> (T, usize)) -> usize {
    let mut n = 0;
    while !buf.is_empty() {
        let (item, used) = decode(buf);
        black_box(item);
        buf = &buf[used..];
        n += 1;
    }
    n
}

fn postcard_decode<T: serde::de::DeserializeOwned>(buf: &[u8]) -> (T, usize) {
    let (item, rest) = postcard::take_from_bytes(buf).expect("valid");
    (item, buf.len() - rest.len())
}

fn bench(c: &mut Criterion) {
    let (commands, events) = stream();
    let mut out = Vec::with_capacity(64 << 20);
    let hand_cmd = encode_all(&commands, &mut out, encode_command);
    let hand_cmd_bytes = out.clone();
    let post_cmd = encode_all(&commands, &mut out, postcard_encode);
    let post_cmd_bytes = out.clone();
    let hand_ev = encode_all(&events, &mut out, encode_event);
    let hand_ev_bytes = out.clone();
    let post_ev = encode_all(&events, &mut out, postcard_encode);
    let post_ev_bytes = out.clone();
    println!(
        "{} commands: hand-written {:.1} B each, postcard {:.1} B; {} events: hand-written {:.1} B, postcard {:.1} B",
        commands.len(),
        hand_cmd as f64 / commands.len() as f64,
        post_cmd as f64 / commands.len() as f64,
        events.len(),
        hand_ev as f64 / events.len() as f64,
        post_ev as f64 / events.len() as f64,
    );

    let mut g = c.benchmark_group("codec/commands");
    g.throughput(Throughput::Elements(commands.len() as u64));
    g.bench_function("encode/hand", |b| {
        b.iter(|| encode_all(&commands, &mut out, encode_command))
    });
    g.bench_function("encode/postcard", |b| {
        b.iter(|| encode_all(&commands, &mut out, postcard_encode))
    });
    g.bench_function("encode/postcard-slice", |b| {
        b.iter(|| encode_all(&commands, &mut out, postcard_encode_slice))
    });
    g.bench_function("decode/hand", |b| {
        b.iter(|| decode_all(&hand_cmd_bytes, |b| decode_command(b).expect("valid")))
    });
    g.bench_function("decode/postcard", |b| {
        b.iter(|| decode_all(&post_cmd_bytes, postcard_decode::<Command>))
    });
    g.finish();

    let mut g = c.benchmark_group("codec/events");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("encode/hand", |b| {
        b.iter(|| encode_all(&events, &mut out, encode_event))
    });
    g.bench_function("encode/postcard", |b| {
        b.iter(|| encode_all(&events, &mut out, postcard_encode))
    });
    g.bench_function("encode/postcard-slice", |b| {
        b.iter(|| encode_all(&events, &mut out, postcard_encode_slice))
    });
    g.bench_function("decode/hand", |b| {
        b.iter(|| decode_all(&hand_ev_bytes, |b| decode_event(b).expect("valid")))
    });
    g.bench_function("decode/postcard", |b| {
        b.iter(|| decode_all(&post_ev_bytes, postcard_decode::<Event>))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
