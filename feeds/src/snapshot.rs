//! Snapshots of the feeds: everything a subscriber sees, cut between two event batches, so
//! that a restarted process continues every topic as if it had never stopped.
//!
//! Recovery is the newest snapshot plus the journal tail: [`MarketData::restore`] rebuilds the
//! views, topics and histories from a [`FeedsSnapshot`], then the tail is replayed through the
//! engine and [`MarketData::apply`]. Every `seq`/`prev_seq` chain, account counter, book,
//! checksum and candle then continues exactly where the uninterrupted run was.
//!
//! ## What a snapshot holds
//! - the `seq` of the last event applied, and the depth window its depth updates were made
//!   for;
//! - per instrument: its spec (a snapshot restores into an empty registry), and per view the
//!   state it publishes from with the `seq` of its last message — the whole L2 book, the
//!   ticker and its rolling-24h minute buckets, the open and kept closed candles of each
//!   interval, the L3 book in queue order;
//! - per account that has order updates: its counter and its open orders;
//! - the drop copy's counter (its open orders are the accounts');
//! - every position with the positions topic's counter (the open orders' remaining sizes,
//!   which the open quantities sum, are the accounts' open orders);
//! - per topic: the hub's history, message by message, as the JSON and protobuf bytes that
//!   were (or would have been) sent, so a client resuming with `from_seq` after a restart gets
//!   the very messages it would have got before.
//!
//! Snapshot sources (depth, L3, candles, account and drop-copy open orders, positions) answer from the restored state,
//! so they answer as before. Not kept: the hub's counters (metrics start again from zero) and
//! subscriptions (clients reconnect and resume).
//!
//! ## Where the work happens
//! [`MarketData::snapshot`] runs on the feeds thread between batches and only copies plain
//! state and `Arc`s of history messages. [`FeedsSnapshot::encode`] runs on the thread that
//! writes the snapshot: history messages not encoded yet are encoded there, once for good (live
//! subscribers share the same message). [`FeedsSnapshot::decode`] checks the bytes and
//! [`MarketData::restore`] checks the contents before touching the hub or the registry; both
//! fail with a [`FeedsSnapshotError`], never a panic.
//!
//! ## Replay and time
//! The views take time only from event timestamps: a candle closes at the first event stamped
//! past its interval (see [`crate::market_data`]). Replaying the tail therefore publishes what
//! the uninterrupted run published, message for message — provided the live feeds thread did
//! not call [`MarketData::tick`] by the wall clock. A close that a wall-clock tick made live is
//! made in the replay by the next event instead, with that event's `seq` and `ts`: a client
//! resuming across it may see that one candle close twice, or its successor's `prev_seq` point
//! at a `seq` it never got. Ticking live gains nothing in exchange (the feeds thread only wakes
//! for batches, and the next event closes the candle anyway), so the feeds thread does not.
//!
//! ## Encoding (version 2)
//! An 18-byte header, then the body:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `TKFS` |
//! | 4 | 2 | format version, `u16` little-endian (2) |
//! | 6 | 8 | body length in bytes, `u64` little-endian |
//! | 14 | 4 | CRC32C of the body, `u32` little-endian |
//!
//! The body is the snapshot types below in [`postcard`] (serde's compact binary format); their
//! field order is the format, so changing a type means a new format version. Version 2 added
//! the drop copy and positions at the end of the body. A version 1 snapshot (written before
//! them) still restores, so a data directory of an older build continues: the drop copy starts
//! its sequence there with an empty history, and positions start flat, holding only the open
//! sizes of the open orders (what was traded before the upgrade is not in them).

use crate::candles::Candle;
use crate::depth::LevelSize;
use crate::hub::{Message, MessageKind};
use crate::instruments::{Instruments, WireInstrument};
#[cfg(doc)]
use crate::market_data::MarketData;
use crate::orders::{OpenOrder, OPEN_STATUSES};
use crate::positions::{open_sums, Position};
use crate::ticker::{Bucket, Rolling24h, TickerState};
use crate::topic::Interval;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashSet;
use std::sync::Arc;
use ticker_engine::{
    AccountId, InstrumentId, InstrumentSpec, Lots, OrderId, OrderInfo, SpecError, Ticks, Timestamp,
};

pub const MAGIC: [u8; 4] = *b"TKFS";
pub const FORMAT_VERSION: u16 = 2;
/// The format before the drop copy and positions, still read.
const FORMAT_VERSION_1: u16 = 1;
pub const HEADER_LEN: usize = 18;
/// Instrument ids a snapshot may hold. The feeds index instruments by id, so an id is bounded
/// before it sizes anything; engines hold 1,024 by default.
pub const MAX_INSTRUMENTS: InstrumentId = 1 << 16;

// The feeds thread takes a snapshot and hands it to the thread that writes it.
const _: () = {
    const fn sendable<T: Send>() {}
    sendable::<FeedsSnapshot>();
};

/// Why a snapshot could not be decoded or restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedsSnapshotError {
    #[error("a feeds snapshot is {len} bytes, shorter than its {HEADER_LEN}-byte header")]
    TooShort { len: usize },
    #[error("not a feeds snapshot (magic {found:02x?}, expected {MAGIC:02x?})")]
    BadMagic { found: [u8; 4] },
    #[error(
        "feeds snapshot format version {0} is not supported (this build reads {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u16),
    #[error("the feeds snapshot body is {found} bytes, its header says {expected}")]
    BodyLength { expected: u64, found: u64 },
    #[error("the feeds snapshot body fails its checksum (CRC32C {found:#010x}, header says {expected:#010x})")]
    Checksum { expected: u32, found: u32 },
    #[error("the feeds snapshot body does not decode: {0}")]
    Decode(postcard::Error),
    #[error("the feeds snapshot body has {0} bytes left over after its end")]
    TrailingBytes(usize),
    #[error("instrument {id} in the feeds snapshot is invalid: {source}")]
    BadInstrument { id: InstrumentId, source: SpecError },
    #[error("instrument {id} is {snapshot} in the feeds snapshot but {registry} in the registry it is restored into")]
    InstrumentConflict {
        id: InstrumentId,
        snapshot: String,
        registry: String,
    },
    #[error("the feeds snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

/// The feeds' state as of one point in the event stream; see the module docs.
#[derive(Serialize, Deserialize)]
pub struct FeedsSnapshot {
    pub(crate) last_seq: u64,
    /// Levels per side of the depth window the depth updates were made for.
    pub(crate) depth_levels: u64,
    pub(crate) instruments: Vec<InstrumentSnapshot>,
    pub(crate) accounts: Vec<AccountSnapshot>,
    pub(crate) drop_copy: DropCopySnapshot,
    pub(crate) positions: PositionsSnapshot,
}

/// Format version 1: [`FeedsSnapshot`] without the drop copy and positions.
#[derive(Deserialize)]
struct FeedsSnapshotV1 {
    last_seq: u64,
    depth_levels: u64,
    instruments: Vec<InstrumentSnapshot>,
    accounts: Vec<AccountSnapshot>,
}

impl FeedsSnapshotV1 {
    /// The drop copy from here on, and positions that hold the open orders' sizes only.
    fn upgrade(self) -> FeedsSnapshot {
        let open = open_sums(
            self.accounts
                .iter()
                .flat_map(|a| a.open.iter().map(|o| (a.account, &o.info, o.remaining))),
        );
        let positions = open
            .into_iter()
            .map(|((account, instrument), (open_buy, open_sell))| Position {
                open_buy,
                open_sell,
                ..Position::new(account, instrument)
            })
            .collect();
        FeedsSnapshot {
            last_seq: self.last_seq,
            depth_levels: self.depth_levels,
            instruments: self.instruments,
            accounts: self.accounts,
            drop_copy: DropCopySnapshot {
                seq: 0,
                history: History(Vec::new()),
            },
            positions: PositionsSnapshot {
                seq: 0,
                positions,
                history: History(Vec::new()),
            },
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct DropCopySnapshot {
    /// `seq` of the drop copy's last message.
    pub seq: u64,
    pub history: History,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct PositionsSnapshot {
    /// `seq` of the positions topic's last message.
    pub seq: u64,
    /// By account, then instrument.
    pub positions: Vec<Position>,
    pub history: History,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct InstrumentSnapshot {
    pub id: InstrumentId,
    pub spec: InstrumentSpec,
    pub depth: DepthSnapshot,
    pub ticker: TickerSnapshot,
    pub trades: TradesSnapshot,
    /// One per interval, in [`Interval::ALL`] order.
    pub candles: Vec<CandlesSnapshot>,
    pub l3: L3Snapshot,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct DepthSnapshot {
    /// The whole book, not only the published window: deeper levels move into it later.
    /// Best first.
    pub bids: Vec<LevelSize>,
    pub asks: Vec<LevelSize>,
    pub last_seq: u64,
    pub last_ts: Timestamp,
    pub history: History,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct TickerSnapshot {
    pub state: TickerState,
    pub seq: u64,
    /// The rolling window's minutes, oldest first; its totals are derived from them.
    pub buckets: Vec<Bucket>,
    pub history: History,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct TradesSnapshot {
    pub seq: u64,
    pub history: History,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct CandlesSnapshot {
    pub interval: Interval,
    pub open: Option<Candle>,
    /// Oldest first.
    pub closed: Vec<Candle>,
    pub last_seq: u64,
    pub history: History,
}

/// A resting order in the L3 book: id, price, visible size.
pub(crate) type L3Entry = (OrderId, Ticks, Lots);

#[derive(Serialize, Deserialize)]
pub(crate) struct L3Snapshot {
    /// Each side best price first, each level in queue order.
    pub bids: Vec<L3Entry>,
    pub asks: Vec<L3Entry>,
    pub last_seq: u64,
    pub history: History,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct AccountSnapshot {
    pub account: AccountId,
    /// The account's own counter: `seq` of its last update.
    pub seq: u64,
    /// By order id.
    pub open: Vec<OpenOrderSnapshot>,
    pub history: History,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct OpenOrderSnapshot {
    pub info: OrderInfo,
    pub remaining: Lots,
    pub visible: Lots,
    pub filled: Lots,
    /// Index in [`OPEN_STATUSES`].
    pub status: u8,
}

/// A topic's history, oldest first: shared messages in memory, their bytes when encoded.
#[derive(Default)]
pub(crate) struct History(pub Vec<Arc<Message>>);

/// [`MessageKind`] as encoded: its own enum, so the hub's type stays free of the format.
#[derive(Serialize, Deserialize)]
enum Kind {
    Update,
    Snapshot,
}

/// One history message as encoded.
#[derive(Serialize)]
struct MessageOut<'a> {
    seq: u64,
    prev_seq: u64,
    kind: Kind,
    json: RawBytes<'a>,
    proto: RawBytes<'a>,
}

#[derive(Deserialize)]
struct MessageIn {
    seq: u64,
    prev_seq: u64,
    kind: Kind,
    json: OwnedBytes,
    proto: OwnedBytes,
}

/// Bytes written as one length-prefixed run (serde writes a plain `&[u8]` byte by byte).
struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Bytes read from one length-prefixed run, copied out of the snapshot buffer (borrowing it
/// would keep the whole buffer alive as long as any restored message).
struct OwnedBytes(Bytes);

impl<'de> Deserialize<'de> for OwnedBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = OwnedBytes;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<OwnedBytes, E> {
                Ok(OwnedBytes(Bytes::copy_from_slice(v)))
            }

            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<OwnedBytes, E> {
                Ok(OwnedBytes(Bytes::from(v)))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

impl Serialize for History {
    /// Encodes every message not encoded yet, in both formats.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|m| MessageOut {
            seq: m.seq,
            prev_seq: m.prev_seq,
            kind: match m.kind {
                MessageKind::Update => Kind::Update,
                MessageKind::Snapshot => Kind::Snapshot,
            },
            json: RawBytes(m.json()),
            proto: RawBytes(m.proto()),
        }))
    }
}

impl<'de> Deserialize<'de> for History {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let messages = Vec::<MessageIn>::deserialize(d)?;
        Ok(History(
            messages
                .into_iter()
                .map(|m| {
                    let kind = match m.kind {
                        Kind::Update => MessageKind::Update,
                        Kind::Snapshot => MessageKind::Snapshot,
                    };
                    Message::encoded(m.seq, m.prev_seq, kind, m.json.0, m.proto.0)
                })
                .collect(),
        ))
    }
}

/// A summary: the snapshot itself is mostly history messages.
impl std::fmt::Debug for FeedsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedsSnapshot")
            .field("last_seq", &self.last_seq)
            .field("instruments", &self.instruments.len())
            .field("accounts", &self.accounts.len())
            .field("history_messages", &self.history_messages())
            .finish_non_exhaustive()
    }
}

impl FeedsSnapshot {
    /// `seq` of the last engine event the feeds had applied when the snapshot was cut.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The instruments the snapshot holds, by id.
    pub fn instruments(&self) -> impl Iterator<Item = (InstrumentId, &InstrumentSpec)> {
        self.instruments.iter().map(|i| (i.id, &i.spec))
    }

    /// History messages held over every topic.
    pub fn history_messages(&self) -> usize {
        let instruments: usize = self
            .instruments
            .iter()
            .map(|i| {
                let candles: usize = i.candles.iter().map(|c| c.history.0.len()).sum();
                i.depth.history.0.len()
                    + i.ticker.history.0.len()
                    + i.trades.history.0.len()
                    + candles
                    + i.l3.history.0.len()
            })
            .sum();
        instruments
            + self
                .accounts
                .iter()
                .map(|a| a.history.0.len())
                .sum::<usize>()
            + self.drop_copy.history.0.len()
            + self.positions.history.0.len()
    }

    /// The snapshot as bytes (header and postcard body; see the module docs). History messages
    /// are encoded here if nobody has read them yet.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0; HEADER_LEN];
        // Every sequence here has a known length and every value a serde form postcard
        // writes, so serializing into a vector cannot fail.
        let mut out = postcard::to_extend(self, std::mem::take(&mut out))
            .expect("postcard writes every feeds snapshot type to a vector");
        let body_len = (out.len() - HEADER_LEN) as u64;
        let crc = crc32c::crc32c(&out[HEADER_LEN..]);
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[6..14].copy_from_slice(&body_len.to_le_bytes());
        out[14..18].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a snapshot [`encode`](Self::encode) wrote, checking its header and checksum.
    /// Contents are checked by [`MarketData::restore`].
    pub fn decode(bytes: &[u8]) -> Result<FeedsSnapshot, FeedsSnapshotError> {
        let Some((header, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(FeedsSnapshotError::TooShort { len: bytes.len() });
        };
        let magic = header_field(header, 0);
        if magic != MAGIC {
            return Err(FeedsSnapshotError::BadMagic { found: magic });
        }
        let version = u16::from_le_bytes(header_field(header, 4));
        if version != FORMAT_VERSION && version != FORMAT_VERSION_1 {
            return Err(FeedsSnapshotError::UnsupportedVersion(version));
        }
        let expected = u64::from_le_bytes(header_field(header, 6));
        if expected != body.len() as u64 {
            return Err(FeedsSnapshotError::BodyLength {
                expected,
                found: body.len() as u64,
            });
        }
        let expected = u32::from_le_bytes(header_field(header, 14));
        let found = crc32c::crc32c(body);
        if found != expected {
            return Err(FeedsSnapshotError::Checksum { expected, found });
        }
        let (snapshot, rest) = if version == FORMAT_VERSION_1 {
            let (v1, rest) = postcard::take_from_bytes::<FeedsSnapshotV1>(body)
                .map_err(FeedsSnapshotError::Decode)?;
            (v1.upgrade(), rest)
        } else {
            postcard::take_from_bytes::<FeedsSnapshot>(body).map_err(FeedsSnapshotError::Decode)?
        };
        if !rest.is_empty() {
            return Err(FeedsSnapshotError::TrailingBytes(rest.len()));
        }
        Ok(snapshot)
    }

    /// Checks everything [`MarketData::restore`] relies on, before it changes anything: the
    /// instruments against themselves and the registry (the result says, per instrument,
    /// which registered instrument to use or which to register), and each topic's history
    /// against its view.
    pub(crate) fn check(
        &self,
        registry: &Instruments,
    ) -> Result<Vec<Registration>, FeedsSnapshotError> {
        let inconsistent = |what: String| Err(FeedsSnapshotError::Inconsistent(what));
        let mut ids = HashSet::new();
        let mut registrations = Vec::with_capacity(self.instruments.len());
        for ins in &self.instruments {
            let id = ins.id;
            if id >= MAX_INSTRUMENTS {
                return inconsistent(format!(
                    "instrument id {id} is beyond the limit of {MAX_INSTRUMENTS}"
                ));
            }
            if !ids.insert(id) {
                return inconsistent(format!("instrument {id} appears twice"));
            }
            let wire = WireInstrument::new(id, ins.spec.clone())
                .map_err(|source| FeedsSnapshotError::BadInstrument { id, source })?;
            registrations.push(match registry.get(id) {
                Some(known) if known.instrument.spec == ins.spec => Registration::Known(known),
                Some(known) => {
                    return Err(FeedsSnapshotError::InstrumentConflict {
                        id,
                        snapshot: format!("{:?}", ins.spec),
                        registry: format!("{:?}", known.instrument.spec),
                    })
                }
                None => Registration::New(Box::new(wire)),
            });
            ins.check()?;
        }
        let mut accounts = HashSet::new();
        for a in &self.accounts {
            if !accounts.insert(a.account) {
                return inconsistent(format!("account {} appears twice", a.account));
            }
            a.check()?;
        }
        check_counted(&self.drop_copy.history, self.drop_copy.seq, || {
            "drop copy".to_string()
        })?;
        self.check_positions(&ids)?;
        Ok(registrations)
    }

    /// Every account's open order with its account and remaining size.
    pub(crate) fn open_orders(&self) -> impl Iterator<Item = (AccountId, &OrderInfo, Lots)> {
        self.accounts
            .iter()
            .flat_map(|a| a.open.iter().map(|o| (a.account, &o.info, o.remaining)))
    }

    /// The positions: a counted chain, each position once and in order, of a known
    /// instrument, its sums consistent with each other, and its open sizes those of its
    /// account's open orders.
    fn check_positions(
        &self,
        instruments: &HashSet<InstrumentId>,
    ) -> Result<(), FeedsSnapshotError> {
        let inconsistent = |what: String| Err(FeedsSnapshotError::Inconsistent(what));
        let positions = &self.positions;
        check_counted(&positions.history, positions.seq, || {
            "positions".to_string()
        })?;
        let keys = |p: &Position| (p.account, p.instrument);
        if let Some(w) = positions
            .positions
            .windows(2)
            .find(|w| keys(&w[0]) >= keys(&w[1]))
        {
            return inconsistent(format!(
                "position {:?} follows {:?}: not in (account, instrument) order",
                keys(&w[1]),
                keys(&w[0])
            ));
        }
        let mut open = open_sums(self.open_orders());
        for p in &positions.positions {
            let key = keys(p);
            if !instruments.contains(&p.instrument) {
                return inconsistent(format!("position {key:?} is of an unknown instrument"));
            }
            let cash = p.sold_notional as i128 - p.bought_notional as i128;
            let flat_at_cost = (p.net == 0) == (p.cost_basis == 0);
            if p.realized != cash.saturating_add(p.cost_basis) || !flat_at_cost {
                return inconsistent(format!(
                    "position {key:?}: realized {} with notionals bought {} and sold {}, net {} at cost {}",
                    p.realized, p.bought_notional, p.sold_notional, p.net, p.cost_basis
                ));
            }
            let orders = open.remove(&key).unwrap_or_default();
            if orders != (p.open_buy, p.open_sell) {
                return inconsistent(format!(
                    "position {key:?} has open sizes {:?} but its account's open orders leave {orders:?}",
                    (p.open_buy, p.open_sell)
                ));
            }
        }
        if let Some((key, _)) = open.into_iter().next() {
            return inconsistent(format!("open orders of {key:?} have no position"));
        }
        Ok(())
    }
}

/// How [`MarketData::restore`] gets a snapshot's instrument into the registry.
pub(crate) enum Registration {
    /// Registered already, with the same spec: restored views use this one.
    Known(Arc<WireInstrument>),
    New(Box<WireInstrument>),
}

impl InstrumentSnapshot {
    fn check(&self) -> Result<(), FeedsSnapshotError> {
        let id = self.id;
        let name = |channel: &str| format!("{channel} of instrument {id}");
        check_chain(&self.depth.history, self.depth.last_seq, || name("depth"))?;
        check_chain(&self.ticker.history, self.ticker.seq, || name("ticker"))?;
        check_chain(&self.trades.history, self.trades.seq, || name("trades"))?;
        check_chain(&self.l3.history, self.l3.last_seq, || name("l3"))?;
        if Rolling24h::from_buckets(self.ticker.buckets.clone()).is_none() {
            return Err(FeedsSnapshotError::Inconsistent(format!(
                "the 24h buckets of instrument {id} are not in minute order or overflow"
            )));
        }
        let intervals: Vec<Interval> = self.candles.iter().map(|c| c.interval).collect();
        if intervals != Interval::ALL {
            return Err(FeedsSnapshotError::Inconsistent(format!(
                "instrument {id} has candles of {intervals:?}, expected {:?}",
                Interval::ALL
            )));
        }
        for c in &self.candles {
            let what = || name(&format!("candles {}", c.interval.as_str()));
            check_chain(&c.history, c.last_seq, what)?;
            if let Some(open) = c.open {
                let aligned = open.start % c.interval.nanos() == 0;
                if !aligned || open.start.checked_add(c.interval.nanos()).is_none() {
                    return Err(FeedsSnapshotError::Inconsistent(format!(
                        "{}: open candle starts at {}, not an interval start",
                        what(),
                        open.start
                    )));
                }
            }
        }
        Ok(())
    }
}

impl AccountSnapshot {
    fn check(&self) -> Result<(), FeedsSnapshotError> {
        let account = self.account;
        let inconsistent = |what: String| Err(FeedsSnapshotError::Inconsistent(what));
        check_counted(&self.history, self.seq, || {
            format!("orders of account {account}")
        })?;
        if let Some(o) = self
            .open
            .iter()
            .find(|o| OPEN_STATUSES.get(o.status as usize).is_none())
        {
            return inconsistent(format!(
                "open order {} of account {account} has status code {}, beyond the {} known",
                o.info.order_id,
                o.status,
                OPEN_STATUSES.len()
            ));
        }
        Ok(())
    }
}

/// A topic's history must be a chain ending at the view's last `seq`: each message after the
/// one before it, and the newest the one the view last published.
fn check_chain(
    history: &History,
    last_seq: u64,
    topic: impl Fn() -> String,
) -> Result<(), FeedsSnapshotError> {
    let mut prev = None;
    for m in &history.0 {
        let after_prev = prev.is_none_or(|p| m.prev_seq == p);
        if m.prev_seq >= m.seq || !after_prev {
            return Err(FeedsSnapshotError::Inconsistent(format!(
                "{}: message {} (prev_seq {}) does not follow {}",
                topic(),
                m.seq,
                m.prev_seq,
                prev.unwrap_or(0)
            )));
        }
        prev = Some(m.seq);
    }
    match history.0.last() {
        Some(m) if m.seq != last_seq => Err(FeedsSnapshotError::Inconsistent(format!(
            "{}: the newest message has seq {} but the view last published {last_seq}",
            topic(),
            m.seq
        ))),
        _ => Ok(()),
    }
}

/// A history of a topic with its own counter (order updates, the drop copy, positions): a
/// chain whose messages count 1, 2, 3, …, each one's predecessor the one before it.
fn check_counted(
    history: &History,
    last_seq: u64,
    topic: impl Fn() -> String,
) -> Result<(), FeedsSnapshotError> {
    check_chain(history, last_seq, &topic)?;
    match history.0.iter().find(|m| m.prev_seq + 1 != m.seq) {
        Some(m) => Err(FeedsSnapshotError::Inconsistent(format!(
            "{}: update {} follows {}, not {}",
            topic(),
            m.seq,
            m.prev_seq,
            m.seq - 1
        ))),
        None => Ok(()),
    }
}

/// `N` bytes of the header from `at`.
fn header_field<const N: usize>(header: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    let mut field = [0; N];
    field.copy_from_slice(&header[at..at + N]);
    field
}

impl From<&OpenOrder> for OpenOrderSnapshot {
    fn from(o: &OpenOrder) -> Self {
        OpenOrderSnapshot {
            info: o.info,
            remaining: o.remaining,
            visible: o.visible,
            filled: o.filled,
            // The router sets only the listed statuses (its constants).
            status: OPEN_STATUSES
                .iter()
                .position(|s| *s == o.status)
                .map_or(u8::MAX, |i| i as u8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use crate::market_data::{FeedsConfig, MarketData};
    use rust_decimal::Decimal;
    use ticker_engine::*;

    fn spec() -> InstrumentSpec {
        InstrumentSpec {
            symbol: "ETH-USD".into(),
            tick_size: Decimal::new(1, 2),
            lot_size: Decimal::new(1, 3),
            min_size: Decimal::new(1, 3),
            max_size: Decimal::new(1000, 0),
            reference_price: Decimal::new(3000, 0),
            band: Decimal::new(5, 1),
        }
    }

    /// A snapshot of one instrument after a few trades between two accounts, with orders left
    /// resting and a stop armed.
    fn snapshot() -> FeedsSnapshot {
        let mut engine = Engine::default();
        let hub = Arc::new(Hub::default());
        let mut md = MarketData::new(FeedsConfig::default(), hub, Arc::default());
        let mut ts = 1_000_000_000;
        let mut run = |kind| {
            ts += 1_000_000;
            md.apply(&engine.apply_collect(&Command::new(ts, ts, kind)));
        };
        run(CommandKind::AddInstrument(Box::new(spec())));
        for i in 0..4 {
            run(CommandKind::Place(Place::limit(
                1,
                0,
                Side::Sell,
                300_000 + i,
                10,
            )));
            run(CommandKind::Place(Place::limit(
                2,
                0,
                Side::Buy,
                300_010,
                4,
            )));
        }
        run(CommandKind::Place(Place {
            order_type: OrderType::StopMarket,
            tif: TimeInForce::Ioc,
            trigger: 310_000,
            ..Place::limit(2, 0, Side::Buy, 0, 1)
        }));
        md.snapshot()
    }

    /// An independent copy, by way of the encoding.
    fn copy(s: &FeedsSnapshot) -> FeedsSnapshot {
        FeedsSnapshot::decode(&s.encode()).unwrap()
    }

    fn restore(s: FeedsSnapshot) -> (Result<MarketData, FeedsSnapshotError>, Arc<Instruments>) {
        let registry = Arc::new(Instruments::default());
        let hub = Arc::new(Hub::default());
        let md = MarketData::restore(FeedsConfig::default(), hub, registry.clone(), s);
        (md, registry)
    }

    #[test]
    fn a_snapshot_restores_and_its_copy_encodes_the_same() {
        let s = snapshot();
        assert_eq!(copy(&s).encode(), s.encode());
        assert!(s.history_messages() > 10);
        assert_eq!(s.instruments().map(|i| i.0).collect::<Vec<_>>(), [0]);
        assert!(restore(s).0.is_ok());
    }

    #[test]
    fn a_version_1_snapshot_restores_with_a_fresh_drop_copy_and_flat_positions() {
        let s = snapshot();
        // Version 1 is version 2's body without its last two fields (postcard writes a
        // struct as its fields in order).
        let body =
            postcard::to_allocvec(&(s.last_seq, s.depth_levels, &s.instruments, &s.accounts))
                .unwrap();
        let mut v1 = vec![0; HEADER_LEN];
        v1[0..4].copy_from_slice(&MAGIC);
        v1[4..6].copy_from_slice(&FORMAT_VERSION_1.to_le_bytes());
        v1[6..14].copy_from_slice(&(body.len() as u64).to_le_bytes());
        v1[14..18].copy_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        v1.extend_from_slice(&body);
        let upgraded = FeedsSnapshot::decode(&v1).unwrap();
        assert_eq!(upgraded.drop_copy.seq, 0);
        assert!(upgraded.drop_copy.history.0.is_empty());
        let open: Vec<_> = upgraded
            .positions
            .positions
            .iter()
            .map(|p| (p.account, p.instrument, p.open_buy, p.open_sell, p.net))
            .collect();
        let expected: Vec<_> = s
            .positions
            .positions
            .iter()
            .filter(|p| p.open_buy + p.open_sell > 0)
            .map(|p| (p.account, p.instrument, p.open_buy, p.open_sell, 0))
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(open, expected);
        assert!(restore(upgraded).0.is_ok());
        // Any other version is refused by number.
        v1[4..6].copy_from_slice(&3u16.to_le_bytes());
        assert!(matches!(
            FeedsSnapshot::decode(&v1),
            Err(FeedsSnapshotError::UnsupportedVersion(3))
        ));
    }

    #[test]
    fn every_inconsistency_is_refused_by_name_before_anything_changes() {
        type Break = fn(&mut FeedsSnapshot);
        let cases: [(Break, &str); 15] = [
            (
                |s| {
                    let twin = copy(s).instruments.remove(0);
                    s.instruments.push(twin);
                },
                "instrument 0 appears twice",
            ),
            (
                |s| s.instruments[0].id = MAX_INSTRUMENTS,
                "beyond the limit",
            ),
            (
                |s| s.instruments[0].spec.tick_size = Decimal::ZERO,
                "tick_size must be positive",
            ),
            (
                |s| s.instruments[0].trades.seq += 1,
                "trades of instrument 0: the newest message",
            ),
            (
                |s| {
                    s.instruments[0].depth.history.0.remove(1);
                },
                "depth of instrument 0: message",
            ),
            (|s| s.instruments[0].candles.swap(0, 1), "has candles of"),
            (
                |s| {
                    if let Some(c) = &mut s.instruments[0].candles[1].open {
                        c.start += 1;
                    }
                },
                "not an interval start",
            ),
            (
                |s| {
                    let b = s.instruments[0].ticker.buckets[0];
                    s.instruments[0].ticker.buckets.push(b);
                },
                "24h buckets of instrument 0",
            ),
            (
                |s| s.accounts[0].seq += 1,
                "orders of account 1: the newest message",
            ),
            (
                |s| s.accounts[1].open[0].status = OPEN_STATUSES.len() as u8,
                "has status code 4",
            ),
            (
                |s| {
                    let twin = copy(s).accounts.remove(1);
                    s.accounts.push(twin);
                },
                "account 2 appears twice",
            ),
            (|s| s.drop_copy.seq += 1, "drop copy: the newest message"),
            (
                |s| s.positions.positions[0].open_sell += 1,
                "position (1, 0) has open sizes",
            ),
            (
                |s| s.positions.positions[1].realized += 1,
                "position (2, 0): realized 1",
            ),
            (
                |s| s.positions.positions.swap(0, 1),
                "not in (account, instrument) order",
            ),
        ];
        for (make_bad, expected) in cases {
            let mut s = snapshot();
            make_bad(&mut s);
            let (md, registry) = restore(s);
            let err = md.err().expect(expected).to_string();
            assert!(err.contains(expected), "{err:?} should say {expected:?}");
            assert!(registry.all().is_empty(), "{expected}: nothing registered");
        }
    }
}
