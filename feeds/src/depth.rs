//! L2 depth: a replica book per instrument built only from `LevelChanged` events, top-N
//! snapshots, incremental updates and the book checksum.
//!
//! ## Update rule
//! A subscriber's book is exactly the top `N` levels per side. Each update lists, per side, the
//! levels whose size in the top `N` changed: new or changed levels with their new size, and
//! levels that left the top `N` (removed, or pushed out by better levels) with size `"0"`. After
//! applying an update and dropping levels with size 0, the subscriber holds the same top `N` as
//! the server, and its checksum must equal the message's `checksum`.
//!
//! ## Checksum
//! CRC-32 (IEEE 802.3, the one in zlib) of one ASCII string: for each of the best 10 asks from
//! the lowest price up, then each of the best 10 bids from the highest price down (fewer when
//! the subscribed window `N` is below 10: then the best `N`), the price
//! and then the size, each written as on the wire with the decimal point removed and leading
//! zeros stripped (a zero size never appears: such levels are gone). The result is sent as an
//! unsigned 32-bit integer. Worked example in `docs/feeds.md` and in the tests below.

use crate::hub::{Encode, Message, MessageKind, SnapshotSource, TopicState};
use crate::instruments::WireInstrument;
use crate::proto;
use crate::snapshot::{DepthSnapshot, History};
use crate::topic::Channel;
use crate::wire::JsonObject;
use bytes::Bytes;
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::{btree_map, BTreeMap};
use std::sync::{Arc, OnceLock};
use ticker_engine::{Lots, Side, Ticks, Timestamp};

/// Levels per side that enter the checksum.
pub const CHECKSUM_LEVELS: usize = 10;

/// A price level on the wire: price and total visible size.
pub type LevelSize = (Ticks, Lots);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DepthBook {
    bids: BTreeMap<Reverse<Ticks>, Lots>,
    asks: BTreeMap<Ticks, Lots>,
}

impl DepthBook {
    /// Sets a level's size; 0 removes it.
    pub fn set(&mut self, side: Side, price: Ticks, size: Lots) {
        match (side, size) {
            (Side::Buy, 0) => {
                self.bids.remove(&Reverse(price));
            }
            (Side::Buy, s) => {
                self.bids.insert(Reverse(price), s);
            }
            (Side::Sell, 0) => {
                self.asks.remove(&price);
            }
            (Side::Sell, s) => {
                self.asks.insert(price, s);
            }
        }
    }

    /// Levels best first.
    pub fn levels(&self, side: Side) -> Levels<'_> {
        match side {
            Side::Buy => Levels::Bids(self.bids.iter()),
            Side::Sell => Levels::Asks(self.asks.iter()),
        }
    }

    pub fn best(&self, side: Side) -> Option<(Ticks, Lots)> {
        match side {
            Side::Buy => self.bids.first_key_value().map(|(p, s)| (p.0, *s)),
            Side::Sell => self.asks.first_key_value().map(|(p, s)| (*p, *s)),
        }
    }

    pub fn level_count(&self, side: Side) -> usize {
        match side {
            Side::Buy => self.bids.len(),
            Side::Sell => self.asks.len(),
        }
    }

    /// The checksum over the best `min(window, 10)` levels per side, where `window` is the
    /// depth subscribers hold.
    pub fn checksum(&self, wire: &WireInstrument, window: usize) -> u32 {
        let n = CHECKSUM_LEVELS.min(window);
        let levels = self.levels(Side::Sell).take(n);
        checksum_of(wire, levels.chain(self.levels(Side::Buy).take(n)))
    }
}

/// A side's levels best first, without boxing (depth views walk them on every update).
pub enum Levels<'a> {
    Bids(btree_map::Iter<'a, Reverse<Ticks>, Lots>),
    Asks(btree_map::Iter<'a, Ticks, Lots>),
}

impl Iterator for Levels<'_> {
    type Item = (Ticks, Lots);

    fn next(&mut self) -> Option<(Ticks, Lots)> {
        match self {
            Levels::Bids(i) => i.next().map(|(p, s)| (p.0, *s)),
            Levels::Asks(i) => i.next().map(|(p, s)| (*p, *s)),
        }
    }
}

/// The checksum of the given best asks (lowest first) and best bids (highest first); see the
/// module docs.
pub fn checksum(wire: &WireInstrument, asks: &[(Ticks, Lots)], bids: &[(Ticks, Lots)]) -> u32 {
    let asks = asks.iter().take(CHECKSUM_LEVELS);
    checksum_of(wire, asks.chain(bids.iter().take(CHECKSUM_LEVELS)).copied())
}

/// The checksum of the asks then bids `levels` yields (already cut to the checksum depth).
fn checksum_of(wire: &WireInstrument, levels: impl Iterator<Item = (Ticks, Lots)>) -> u32 {
    // At most 20 levels of two fields of at most 39 digits: never reallocates.
    let mut text = Vec::with_capacity(2 * CHECKSUM_LEVELS * 2 * 40);
    for (price, size) in levels {
        checksum_field(wire.price, price, &mut text);
        checksum_field(wire.size, size as i64, &mut text);
    }
    crc32fast::hash(&text)
}

/// Appends a value as the checksum writes it: its wire decimal with the point removed and
/// leading zeros stripped.
fn checksum_field(scale: crate::wire::Scale, units: i64, text: &mut Vec<u8>) {
    let v = scale.unscaled(units);
    match v {
        // Positive: the wire text is the digits of `units × mantissa` with a point put in
        // (and zeros padded in front), so removing both leaves exactly those digits. (Digits
        // of a u64 are far cheaper to write than of the i128 the product needs in general.)
        v if v > 0 => match u64::try_from(v) {
            Ok(v) => text.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
            Err(_) => text.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        },
        // Zero: every digit is a zero and is stripped.
        0 => {}
        // Negative: the sign shields the leading zeros from stripping; spell it out.
        _ => {
            let mut field = Vec::with_capacity(48);
            scale.write(units, &mut field);
            let digits = field.iter().copied().filter(|b| *b != b'.');
            text.extend(digits.skip_while(|b| *b == b'0'));
        }
    }
}

/// The depth state shared by the publisher and snapshot requests.
struct DepthState {
    book: DepthBook,
    /// `seq` of the last depth message published.
    last_seq: u64,
    last_ts: Timestamp,
}

/// The depth channel of one instrument.
pub struct DepthView {
    wire: Arc<WireInstrument>,
    levels: usize,
    state: Arc<Mutex<DepthState>>,
    topic: Arc<TopicState>,
    /// The top `levels` of each side (bids, asks) as last published: the old window of the
    /// next update, so only the new one is walked from the book.
    tops: [Vec<(Ticks, Lots)>; 2],
    // Scratch buffers reused for every update.
    new_top: Vec<(Ticks, Lots)>,
    changed: [Vec<(Ticks, Lots)>; 2],
}

struct Snapshotter {
    wire: Arc<WireInstrument>,
    levels: usize,
    state: Arc<Mutex<DepthState>>,
}

impl SnapshotSource for Snapshotter {
    fn snapshot(&self) -> Option<Arc<Message>> {
        let st = self.state.lock();
        let bids: Vec<_> = st.book.levels(Side::Buy).take(self.levels).collect();
        let asks: Vec<_> = st.book.levels(Side::Sell).take(self.levels).collect();
        let sum = checksum(&self.wire, &asks, &bids);
        let json = encode(
            &self.wire,
            "snapshot",
            st.last_seq,
            0,
            st.last_ts,
            &bids,
            &asks,
            sum,
        );
        let payload = proto::depth(&self.wire, true, &bids, &asks, sum);
        Some(Message::encoded(
            st.last_seq,
            0,
            MessageKind::Snapshot,
            json,
            proto::market(
                &self.wire,
                Channel::Depth,
                st.last_seq,
                0,
                st.last_ts,
                payload,
            ),
        ))
    }
}

#[allow(clippy::too_many_arguments)]
fn encode(
    wire: &WireInstrument,
    kind: &str,
    seq: u64,
    prev_seq: u64,
    ts: Timestamp,
    bids: &[(Ticks, Lots)],
    asks: &[(Ticks, Lots)],
    checksum: u32,
) -> Bytes {
    let mut out = Vec::with_capacity(128 + 40 * (bids.len() + asks.len()));
    let levels = |levels: &[(Ticks, Lots)], o: &mut Vec<u8>| {
        o.push(b'[');
        for (i, &(p, s)) in levels.iter().enumerate() {
            if i > 0 {
                o.push(b',');
            }
            o.extend_from_slice(b"[\"");
            wire.price.write(p, o);
            o.extend_from_slice(b"\",\"");
            wire.size.write(s as i64, o);
            o.extend_from_slice(b"\"]");
        }
        o.push(b']');
    };
    JsonObject::new(&mut out)
        .str("type", kind)
        .str("channel", "depth")
        .str("instrument", wire.symbol())
        .u64("seq", seq)
        .u64("prev_seq", prev_seq)
        .u64("ts", ts)
        .raw_with("bids", |o| levels(bids, o))
        .raw_with("asks", |o| levels(asks, o))
        .u64("checksum", checksum as u64)
        .finish();
    Bytes::from(out)
}

impl DepthView {
    pub fn new(wire: Arc<WireInstrument>, levels: usize, topic: Arc<TopicState>) -> Self {
        let levels = levels.max(1);
        let state = Arc::new(Mutex::new(DepthState {
            book: DepthBook::default(),
            last_seq: 0,
            last_ts: 0,
        }));
        topic.set_snapshot_source(Arc::new(Snapshotter {
            wire: wire.clone(),
            levels,
            state: state.clone(),
        }));
        DepthView {
            wire,
            levels,
            state,
            topic,
            tops: [Vec::with_capacity(levels), Vec::with_capacity(levels)],
            new_top: Vec::with_capacity(levels),
            changed: [Vec::new(), Vec::new()],
        }
    }

    /// Best bid and ask with sizes.
    pub fn best(&self) -> (Option<LevelSize>, Option<LevelSize>) {
        let st = self.state.lock();
        (st.book.best(Side::Buy), st.book.best(Side::Sell))
    }

    /// A copy of the replica book (tests and tools).
    pub fn book(&self) -> DepthBook {
        self.state.lock().book.clone()
    }

    /// The view's state and its topic's history, for a snapshot.
    pub(crate) fn snapshot(&self) -> DepthSnapshot {
        let st = self.state.lock();
        DepthSnapshot {
            bids: st.book.levels(Side::Buy).collect(),
            asks: st.book.levels(Side::Sell).collect(),
            last_seq: st.last_seq,
            last_ts: st.last_ts,
            history: History(self.topic.history()),
        }
    }

    /// Takes up the state of a snapshot, before anyone subscribes. A snapshot taken with
    /// another window (`same_window` false) held updates a client of this window cannot
    /// apply, so the topic starts a new chain instead: no history, and the next update's
    /// `prev_seq` is 0, which a resuming client sees as a gap (and resubscribes).
    pub(crate) fn restore(&mut self, snapshot: DepthSnapshot, same_window: bool) {
        let mut st = self.state.lock();
        st.book = DepthBook::default();
        for (side, levels) in [(Side::Buy, snapshot.bids), (Side::Sell, snapshot.asks)] {
            for (price, size) in levels {
                st.book.set(side, price, size);
            }
        }
        st.last_seq = if same_window { snapshot.last_seq } else { 0 };
        st.last_ts = snapshot.last_ts;
        // The published window is the book's top: `apply` keeps it so after every update.
        for (top, side) in self.tops.iter_mut().zip([Side::Buy, Side::Sell]) {
            top.clear();
            top.extend(st.book.levels(side).take(self.levels));
        }
        let history = if same_window {
            snapshot.history.0
        } else {
            Vec::new()
        };
        self.topic.replace_history(history);
    }

    /// Subscribers' window: levels per side.
    pub(crate) fn levels(&self) -> usize {
        self.levels
    }

    /// Applies one command's level changes and publishes an update if the top `N` changed.
    /// Returns whether it published.
    pub fn apply(&mut self, changes: &[(Side, Ticks, Lots)], seq: u64, ts: Timestamp) -> bool {
        let mut st = self.state.lock();
        let mut any = false;
        for (i, side) in [Side::Buy, Side::Sell].into_iter().enumerate() {
            self.changed[i].clear();
            let side_changes = changes.iter().filter(|c| c.0 == side);
            if side_changes.clone().next().is_none() {
                continue;
            }
            let better = |a: Ticks, b: Ticks| match side {
                Side::Buy => a > b,
                Side::Sell => a < b,
            };
            let old_top = &self.tops[i];
            let window_full = old_top.len() == self.levels;
            let worst = old_top.last().map(|l| l.0);
            let touches_window = side_changes
                .clone()
                .any(|&(_, p, _)| !window_full || worst.is_none_or(|w| !better(w, p)));
            for &(_, p, s) in side_changes {
                st.book.set(side, p, s);
            }
            if !touches_window {
                continue;
            }
            self.new_top.clear();
            self.new_top.extend(st.book.levels(side).take(self.levels));
            diff(&self.tops[i], &self.new_top, better, &mut self.changed[i]);
            any |= !self.changed[i].is_empty();
            std::mem::swap(&mut self.tops[i], &mut self.new_top);
        }
        if !any {
            return false;
        }
        // The checksum levels are copied, and the checksum computed when the message is first
        // read: formatting 40 decimals per update is most of a depth update's cost.
        let [top_bids, top_asks] = self
            .tops
            .each_ref()
            .map(|t| &t[..t.len().min(CHECKSUM_LEVELS)]);
        let mut levels = Vec::with_capacity(
            self.changed[0].len() + self.changed[1].len() + top_bids.len() + top_asks.len(),
        );
        levels.extend_from_slice(&self.changed[0]);
        levels.extend_from_slice(&self.changed[1]);
        levels.extend_from_slice(top_asks);
        levels.extend_from_slice(top_bids);
        let message = Message::lazy(
            seq,
            st.last_seq,
            MessageKind::Update,
            DepthUpdate {
                wire: self.wire.clone(),
                ts,
                levels,
                bids: self.changed[0].len(),
                asks: self.changed[1].len(),
                top_asks: top_asks.len(),
                checksum: OnceLock::new(),
            },
        );
        st.last_seq = seq;
        st.last_ts = ts;
        // Publish while holding the state lock: a snapshot taken concurrently then either
        // includes this update and its seq, or neither.
        self.topic.publish(message);
        true
    }
}

/// A depth update message, encoded when first read. It keeps the checksum levels of the
/// book as of the update (the checksum covers the whole top of the book, not only the levels
/// that changed) and computes the checksum once, for both formats.
struct DepthUpdate {
    wire: Arc<WireInstrument>,
    ts: Timestamp,
    /// Changed bids, changed asks, then the book's checksum asks and checksum bids (each best
    /// first), in one allocation.
    levels: Vec<LevelSize>,
    /// How many of `levels` are changed bids, changed asks, and checksum asks.
    bids: usize,
    asks: usize,
    top_asks: usize,
    checksum: OnceLock<u32>,
}

impl DepthUpdate {
    fn changed(&self) -> (&[LevelSize], &[LevelSize]) {
        let (bids, rest) = self.levels.split_at(self.bids);
        (bids, &rest[..self.asks])
    }

    fn checksum(&self) -> u32 {
        *self.checksum.get_or_init(|| {
            let top = &self.levels[self.bids + self.asks..];
            let (asks, bids) = top.split_at(self.top_asks);
            checksum(&self.wire, asks, bids)
        })
    }
}

impl Encode for DepthUpdate {
    fn json(&self, seq: u64, prev_seq: u64) -> Bytes {
        let (bids, asks) = self.changed();
        encode(
            &self.wire,
            "update",
            seq,
            prev_seq,
            self.ts,
            bids,
            asks,
            self.checksum(),
        )
    }

    fn proto(&self, seq: u64, prev_seq: u64) -> Bytes {
        let (bids, asks) = self.changed();
        let payload = proto::depth(&self.wire, false, bids, asks, self.checksum());
        proto::market(&self.wire, Channel::Depth, seq, prev_seq, self.ts, payload)
    }
}

/// Levels that differ between two best-first windows: changed or new ones with their new
/// size, vanished ones with size 0. Output is best first.
fn diff(
    old: &[(Ticks, Lots)],
    new: &[(Ticks, Lots)],
    better: impl Fn(Ticks, Ticks) -> bool,
    out: &mut Vec<(Ticks, Lots)>,
) {
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(&(po, so)), Some(&(pn, sn))) if po == pn => {
                if so != sn {
                    out.push((pn, sn));
                }
                i += 1;
                j += 1;
            }
            (Some(&(po, _)), Some(&(pn, _))) if better(po, pn) => {
                out.push((po, 0));
                i += 1;
            }
            (Some(_), Some(&(pn, sn))) => {
                out.push((pn, sn));
                j += 1;
            }
            (Some(&(po, _)), None) => {
                out.push((po, 0));
                i += 1;
            }
            (None, Some(&(pn, sn))) => {
                out.push((pn, sn));
                j += 1;
            }
            (None, None) => unreachable!("loop condition"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Delivery, Hub};
    use crate::topic::{Channel, Topic};
    use rust_decimal::Decimal;
    use std::str::FromStr;
    use ticker_engine::InstrumentSpec;

    pub(crate) fn wire() -> Arc<WireInstrument> {
        let d = |s| Decimal::from_str(s).unwrap();
        Arc::new(
            WireInstrument::new(
                0,
                InstrumentSpec {
                    symbol: "BTC-USD".into(),
                    tick_size: d("0.1"),
                    lot_size: d("0.001"),
                    min_size: d("0.001"),
                    max_size: d("100"),
                    reference_price: d("50000"),
                    band: d("0.1"),
                },
            )
            .unwrap(),
        )
    }

    #[test]
    fn checksum_worked_example() {
        // asks 50000.5 x 0.250, 50001.0 x 1.000; bids 49999.9 x 0.010, 49990.0 x 2.500
        let w = wire();
        let asks = [(500_005, 250), (500_010, 1_000)];
        let bids = [(499_999, 10), (499_900, 2_500)];
        // "500005" "250" "500010" "1000" "499999" "10" "499900" "2500"
        let text = "5000052505000101000499999104999002500";
        assert_eq!(checksum(&w, &asks, &bids), crc32fast::hash(text.as_bytes()));
        assert_eq!(checksum(&w, &asks, &bids), 331_038_948);
    }

    /// The checksum text of one value, straight from its definition: the wire decimal with
    /// the point removed and leading zeros stripped.
    fn reference_field(scale: crate::wire::Scale, units: i64) -> Vec<u8> {
        let text = scale.to_string(units).replace('.', "");
        text.trim_start_matches('0').as_bytes().to_vec()
    }

    proptest::proptest! {
        #[test]
        fn checksum_fields_follow_the_definition(
            units in proptest::prop_oneof![-1_000i64..1_000, proptest::num::i64::ANY],
            mantissa in 1i64..1_000,
            scale in 0u32..12,
        ) {
            let scale = crate::wire::Scale::new(Decimal::new(mantissa, scale));
            let mut text = Vec::new();
            checksum_field(scale, units, &mut text);
            proptest::prop_assert_eq!(text, reference_field(scale, units));
        }
    }

    #[test]
    fn update_lists_levels_entering_and_leaving_the_window() {
        let hub = Hub::default();
        let topic = hub.topic(Topic::Market {
            channel: Channel::Depth,
            instrument: 0,
        });
        let mut view = DepthView::new(wire(), 2, topic);
        let mut sub = hub.subscribe(
            Topic::Market {
                channel: Channel::Depth,
                instrument: 0,
            },
            None,
        );
        assert!(matches!(
            sub.try_recv(),
            Ok(Some(Delivery::Snapshot { .. }))
        ));
        assert!(view.apply(
            &[(Side::Buy, 100, 1), (Side::Buy, 99, 2), (Side::Buy, 98, 3)],
            5,
            1
        ));
        // The window is two levels: 98 is not shown.
        let m = sub.try_recv().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(m.message().unwrap().json()).unwrap();
        assert_eq!(v["bids"].as_array().unwrap().len(), 2);
        // A change below the full window publishes nothing.
        assert!(!view.apply(&[(Side::Buy, 97, 3)], 6, 2));
        // Removing the best brings 98 into the window.
        assert!(view.apply(&[(Side::Buy, 100, 0)], 7, 3));
        let m = sub.try_recv().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(m.message().unwrap().json()).unwrap();
        assert_eq!(v["prev_seq"], 5);
        assert_eq!(
            v["bids"],
            serde_json::json!([["10.0", "0.000"], ["9.8", "0.003"]])
        );
    }
}
