//! Shards: instruments spread over several engines, each its own single writer.
//!
//! An instrument lives on exactly one shard, `instrument % count` ([`Shard::of_instrument`]).
//! Instrument ids are dense and journaled, so the rule maps every instrument to the same shard
//! on every restart as long as the shard count stays the same (the count is part of the data
//! directory's identity; changing it means re-partitioning, which tickerd refuses).
//!
//! Every shard knows every instrument (`AddInstrument` goes to all of them, so each gives the
//! new one the same dense id) but only ever matches its own. What each command does:
//!
//! | command | goes to |
//! |---|---|
//! | `Place`, `Halt`, `Resume`, `MassCancel` naming an instrument | the instrument's shard |
//! | `Cancel`, `Amend` naming an [`OrderId`] | the shard that assigned the id ([`Shard::of_order`]) |
//! | `Cancel`, `Amend` naming a client order id | every shard: the one holding the order acts, the others reject it as unknown |
//! | `MassCancel` of every instrument, `SessionClosed`, `DisableAccount`, `EnableAccount`, `SetLimits`, `AddInstrument` | every shard |
//! | `Heartbeat`, `Snapshot` | every shard |
//!
//! A command sent to every shard is applied by each as one command of its own stream, with its
//! own sequence number, and each gives its own outcome; [`FanIn`] folds those outcomes into the
//! one reply the caller gets ([`fold`] says how). Events that belong to no instrument are
//! published once: `InstrumentAdded` by the new instrument's shard, `AccountStatus` by shard 0.
//!
//! What a sequence number means: each shard numbers its own events from 1, so an event is
//! named by `(shard, seq)`. Per instrument (and so per book, trade tape, depth stream) the
//! order is the one shard's order, exactly as with one engine; across instruments on different
//! shards there is no order. Order ids and trade ids stay unique across shards: an order id
//! carries its shard in its top [`SHARD_BITS`] bits, and trade ids interleave
//! (`(n − 1) × count + index + 1` for a shard's `n`th trade). With one shard every id, number
//! and event is what a plain [`crate::Engine`] gives.
//!
//! Account-wide risk limits cannot be checked exactly by shards that never talk to each other:
//! `max_open_orders` and `max_orders_per_sec` are split between the shards ([`Shard::share`]),
//! so together they never allow more than the limit (an account trading on one shard's
//! instruments only gets that shard's share). Per-instrument limits and the kill switch are
//! exact. A client order id is unique among the account's live orders on one shard.

use crate::command::{Amend, Cancel, CommandKind, MassCancel, OrderRef};
use crate::event::{EventKind, RejectReason};
use crate::types::*;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// Bits at the top of an [`OrderId`] that name the shard that assigned it.
pub const SHARD_BITS: u32 = 6;
/// Most shards: what [`SHARD_BITS`] can name.
pub const MAX_SHARDS: usize = 1 << SHARD_BITS;
/// The generation bits an order id keeps with more than one shard (the rest hold the shard).
pub(crate) const SHARDED_GENERATION_MASK: u32 = u32::MAX >> SHARD_BITS;

/// Which shard an engine is, of how many. The default is the only shard of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u8,
    count: u8,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::SOLE
    }
}

/// Why a shard cannot be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("shard count must be 1..={MAX_SHARDS}, got {0}")]
    Count(usize),
    #[error("shard index {index} is not below the shard count {count}")]
    Index { index: usize, count: usize },
}

impl Shard {
    /// One engine holding every instrument.
    pub const SOLE: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> Result<Self, ShardError> {
        if count == 0 || count > MAX_SHARDS {
            return Err(ShardError::Count(count));
        }
        if index >= count {
            return Err(ShardError::Index { index, count });
        }
        Ok(Shard {
            index: index as u8,
            count: count as u8,
        })
    }

    /// Every shard of `count`, in index order.
    pub fn all(count: usize) -> Result<Vec<Shard>, ShardError> {
        (0..count.max(1)).map(|i| Shard::new(i, count)).collect()
    }

    pub fn index(self) -> usize {
        self.index as usize
    }

    pub fn count(self) -> usize {
        self.count as usize
    }

    /// The shard that holds `instrument` when there are `count`: `instrument % count`.
    #[inline]
    pub fn of_instrument(count: usize, instrument: InstrumentId) -> usize {
        instrument as usize % count.max(1)
    }

    /// The shard that assigned `order` when there are `count` (ids of one shard of one carry
    /// no shard). An id naming a shard beyond `count` is no order of any shard: it goes to
    /// shard 0, which does not know it either.
    #[inline]
    pub fn of_order(count: usize, order: OrderId) -> usize {
        if count <= 1 {
            return 0;
        }
        let shard = (order.0 >> (64 - SHARD_BITS)) as usize;
        if shard < count {
            shard
        } else {
            0
        }
    }

    /// Whether this shard holds `instrument`.
    #[inline]
    pub fn owns(self, instrument: InstrumentId) -> bool {
        self.count == 1 || Self::of_instrument(self.count(), instrument) == self.index()
    }

    /// Whether `order` is an id this shard could have given (any id, for a shard of one).
    #[inline]
    pub fn assigned(self, order: OrderId) -> bool {
        self.count == 1 || (order.0 >> (64 - SHARD_BITS)) as usize == self.index()
    }

    /// The bits every order id this shard assigns carries (none for a shard of one).
    pub(crate) fn order_tag(self) -> u64 {
        if self.count == 1 {
            0
        } else {
            (self.index as u64) << (64 - SHARD_BITS)
        }
    }

    /// The generation bits of this shard's order ids: all 32 alone, fewer beside a shard tag.
    pub(crate) fn generation_mask(self) -> u32 {
        if self.count == 1 {
            u32::MAX
        } else {
            SHARDED_GENERATION_MASK
        }
    }

    /// This shard's id for its `n`th trade (`n` from 1): interleaved, so unique across shards.
    #[inline]
    pub(crate) fn trade_id(self, n: u64) -> u64 {
        (n - 1) * self.count as u64 + self.index as u64 + 1
    }

    /// This shard's part of an account-wide limit: `limit / count`, and one more for the first
    /// `limit % count` shards, so the parts add up to exactly the limit.
    #[inline]
    pub fn share(self, limit: u32) -> u32 {
        if self.count == 1 {
            return limit;
        }
        let count = self.count as u32;
        limit / count + u32::from((self.index as u32) < limit % count)
    }

    /// Whether this shard publishes the events that belong to no instrument
    /// (`AccountStatus`): shard 0.
    pub(crate) fn publishes_global(self) -> bool {
        self.index == 0
    }
}

/// Where a command goes (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To this shard only.
    One(usize),
    /// To every shard; the caller gets one reply folded from theirs.
    All,
}

impl Route {
    /// How many outcomes the command's reply is folded from, with `count` shards (0 for the
    /// commands that give none: heartbeats and snapshots).
    pub fn outcomes(self, kind: &CommandKind, count: usize) -> usize {
        match (kind, self) {
            (CommandKind::Heartbeat | CommandKind::Snapshot, _) => 0,
            (_, Route::One(_)) => 1,
            (_, Route::All) => count,
        }
    }
}

/// Where `kind` goes when there are `count` shards.
#[inline]
pub fn route(count: usize, kind: &CommandKind) -> Route {
    if count <= 1 {
        return Route::One(0);
    }
    let by_order = |order: &OrderRef| match *order {
        OrderRef::Id(id) => Route::One(Shard::of_order(count, id)),
        OrderRef::Client(_) => Route::All,
    };
    match kind {
        CommandKind::Place(p) => Route::One(Shard::of_instrument(count, p.instrument)),
        CommandKind::Cancel(Cancel { order, .. }) | CommandKind::Amend(Amend { order, .. }) => {
            by_order(order)
        }
        CommandKind::MassCancel(MassCancel {
            instrument: Some(instrument),
            ..
        })
        | CommandKind::Halt { instrument }
        | CommandKind::Resume { instrument } => {
            Route::One(Shard::of_instrument(count, *instrument))
        }
        CommandKind::MassCancel(MassCancel {
            instrument: None, ..
        })
        | CommandKind::SessionClosed { .. }
        | CommandKind::AddInstrument(_)
        | CommandKind::Heartbeat
        | CommandKind::Snapshot
        | CommandKind::SetLimits { .. }
        | CommandKind::DisableAccount { .. }
        | CommandKind::EnableAccount { .. } => Route::All,
    }
}

/// Folds the outcomes of one command sent to several shards into the reply its caller gets:
///
/// - one shard accepted (a cancel or amend by client order id: the shard holding the order)
///   or all did (a command every shard carries out): that accept — the first one naming an
///   order or instrument if there is one, else the first;
/// - otherwise the first reject for another reason than an unknown order (e.g. a risk limit
///   refusing an amend on the shard holding the order), else the first reject.
///
/// A command every shard carries out is accepted by all of them or rejected by all (they see
/// the same command and the same account state), so mixed outcomes only come from commands
/// naming an order by client id.
pub fn fold(outcomes: &[EventKind]) -> Option<EventKind> {
    let mut best: Option<(u8, &EventKind)> = None;
    for o in outcomes {
        keep_better(&mut best, o);
    }
    best.map(|(_, o)| o.clone())
}

/// How much an outcome says, for [`fold`]: higher wins, the first of equals stays.
fn rank(outcome: &EventKind) -> u8 {
    match outcome {
        EventKind::PlaceAccepted { .. } => 3,
        EventKind::Accepted {
            order_id,
            instrument,
            ..
        } if !order_id.is_none() || instrument.is_some() => 3,
        EventKind::Accepted { .. } => 2,
        EventKind::Rejected {
            reason: RejectReason::UnknownOrder,
            ..
        } => 0,
        _ => 1,
    }
}

fn keep_better<'a>(best: &mut Option<(u8, &'a EventKind)>, outcome: &'a EventKind) {
    let r = rank(outcome);
    if best.as_ref().is_none_or(|(b, _)| r > *b) {
        *best = Some((r, outcome));
    }
}

/// Collects the outcomes of commands sent to several shards until each has all of them, then
/// gives the folded reply ([`fold`]). Whoever reads the merged shard streams keeps one; whoever
/// submits tells it first how many outcomes a command's reply needs ([`FanIn::expect`]), or the
/// reader learns it from the command ([`FanIn::expect_command`]) when both are one thread.
/// Outcomes are folded as they come, so a command in flight costs one map entry. It
/// serializes, so a snapshot cut while commands are in flight continues folding them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FanIn {
    pending: FxHashMap<Correlation, Pending>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    /// Outcomes still to come.
    remaining: usize,
    best: Option<(u8, EventKind)>,
    /// [`FanIn::offer_first_accept`] gave the command's outcome already.
    given: bool,
}

/// What [`FanIn::offer`] made of an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    /// Not an outcome being folded: use the event as it is.
    Pass,
    /// An outcome kept until the command's other shards give theirs.
    Held,
    /// The last outcome arrived: the command's one reply.
    Folded(EventKind),
}

impl FanIn {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `commands` commands in flight without growing.
    pub fn with_capacity(commands: usize) -> Self {
        FanIn {
            pending: FxHashMap::with_capacity_and_hasher(commands, Default::default()),
        }
    }

    /// The reply to `corr` folds `outcomes` outcomes (1 or 0: nothing to fold, the outcome
    /// passes).
    pub fn expect(&mut self, corr: Correlation, outcomes: usize) {
        if outcomes > 1 {
            let pending = Pending {
                remaining: outcomes,
                best: None,
                given: false,
            };
            self.pending.insert(corr, pending);
        }
    }

    /// [`FanIn::expect`] for a command about to be submitted to `count` shards.
    pub fn expect_command(&mut self, corr: Correlation, kind: &CommandKind, count: usize) {
        self.expect(corr, route(count, kind).outcomes(kind, count));
    }

    /// Drops what was expected of `corr` (its command could not be submitted after all).
    pub fn forget(&mut self, corr: Correlation) {
        self.pending.remove(&corr);
    }

    /// Commands whose reply still waits for a shard.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether the reply to `corr` still waits for a shard.
    pub fn is_pending(&self, corr: Correlation) -> bool {
        self.pending.contains_key(&corr)
    }

    /// The highest correlation id still waiting, if any.
    pub fn max_pending(&self) -> Option<Correlation> {
        self.pending.keys().copied().max()
    }

    /// The correlation ids still waiting, in no order.
    pub fn pending_corrs(&self) -> impl Iterator<Item = Correlation> + '_ {
        self.pending.keys().copied()
    }

    /// Keeps only the commands in flight `keep` says to.
    pub fn retain(&mut self, mut keep: impl FnMut(Correlation) -> bool) {
        self.pending.retain(|&corr, _| keep(corr));
    }

    /// Looks at one event of a merged stream.
    pub fn offer(&mut self, event: &EventKind) -> Offered {
        let Some(corr) = event.outcome_corr() else {
            return Offered::Pass;
        };
        let Some(pending) = self.pending.get_mut(&corr) else {
            return Offered::Pass;
        };
        if pending.best.as_ref().is_none_or(|(b, _)| rank(event) > *b) {
            pending.best = Some((rank(event), event.clone()));
        }
        pending.remaining -= 1;
        if pending.remaining > 0 {
            return Offered::Held;
        }
        match self.pending.remove(&corr).and_then(|p| p.best) {
            Some((_, reply)) => Offered::Folded(reply),
            None => Offered::Pass,
        }
    }
}

impl FanIn {
    /// [`FanIn::offer`] for a merged stream that must show a command's outcome before the
    /// events it caused: an accept is given at once, and the command's later outcomes are
    /// `Held` (dropped); rejects are held and folded when the last arrives. The accept given is
    /// the one [`fold`] keeps: a command every shard carries out is accepted alike by each,
    /// and an accept of a command naming an order by client id names the order.
    pub fn offer_first_accept(&mut self, event: &EventKind) -> Offered {
        let Some(corr) = event.outcome_corr() else {
            return Offered::Pass;
        };
        let Some(pending) = self.pending.get_mut(&corr) else {
            return Offered::Pass;
        };
        pending.remaining -= 1;
        let offered = if pending.given {
            Offered::Held
        } else if rank(event) >= 2 {
            pending.given = true;
            Offered::Folded(event.clone())
        } else {
            if pending.best.as_ref().is_none_or(|(b, _)| rank(event) > *b) {
                pending.best = Some((rank(event), event.clone()));
            }
            match (pending.remaining, pending.best.take()) {
                (0, Some((_, best))) => Offered::Folded(best),
                (_, best) => {
                    pending.best = best;
                    Offered::Held
                }
            }
        };
        if pending.remaining == 0 {
            self.pending.remove(&corr);
        }
        offered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandTag;
    use crate::command::Place;

    #[test]
    fn shards_are_checked() {
        assert_eq!(Shard::new(0, 0), Err(ShardError::Count(0)));
        assert_eq!(Shard::new(0, 65), Err(ShardError::Count(65)));
        assert_eq!(
            Shard::new(2, 2),
            Err(ShardError::Index { index: 2, count: 2 })
        );
        assert_eq!(Shard::all(3).unwrap().len(), 3);
        assert_eq!(Shard::default(), Shard::SOLE);
    }

    #[test]
    fn instruments_go_round_the_shards() {
        let map: Vec<usize> = (0..6).map(|i| Shard::of_instrument(4, i)).collect();
        assert_eq!(map, [0, 1, 2, 3, 0, 1]);
        let s = Shard::new(1, 4).unwrap();
        assert!(s.owns(1) && s.owns(5) && !s.owns(0) && !s.owns(2));
        assert!(Shard::SOLE.owns(12345));
    }

    #[test]
    fn an_order_id_names_its_shard() {
        for count in [2, 4, 64] {
            for index in 0..count {
                let s = Shard::new(index, count).unwrap();
                let id = OrderId(s.order_tag() | (7 << 32) | 12);
                assert_eq!(Shard::of_order(count, id), index);
            }
        }
        // A shard beyond the count is nobody's: shard 0 rejects it as unknown.
        let stray = OrderId(Shard::new(3, 4).unwrap().order_tag() | 1);
        assert_eq!(Shard::of_order(2, stray), 0);
        assert_eq!(Shard::of_order(1, OrderId(u64::MAX)), 0);
        assert_eq!(Shard::SOLE.order_tag(), 0);
        assert_eq!(Shard::SOLE.generation_mask(), u32::MAX);
    }

    #[test]
    fn trade_ids_interleave_and_are_plain_with_one_shard() {
        assert_eq!(
            (1..4).map(|n| Shard::SOLE.trade_id(n)).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let mut ids: Vec<u64> = Vec::new();
        for index in 0..3 {
            let s = Shard::new(index, 3).unwrap();
            ids.extend((1..=4).map(|n| s.trade_id(n)));
        }
        ids.sort_unstable();
        assert_eq!(ids, (1..=12).collect::<Vec<_>>());
    }

    #[test]
    fn shares_of_a_limit_add_up_to_it() {
        for count in 1..=8 {
            for limit in [0, 1, 5, 7, 100, u32::MAX] {
                let total: u64 = Shard::all(count)
                    .unwrap()
                    .iter()
                    .map(|s| s.share(limit) as u64)
                    .sum();
                assert_eq!(total, limit as u64, "{limit} over {count}");
            }
        }
        assert_eq!(Shard::SOLE.share(9), 9);
    }

    #[test]
    fn commands_are_routed_by_instrument_order_or_to_all() {
        let place = CommandKind::Place(Place::limit(1, 5, Side::Buy, 100, 1));
        assert_eq!(route(4, &place), Route::One(1));
        assert_eq!(route(1, &place), Route::One(0));
        let tagged = OrderId(Shard::new(3, 4).unwrap().order_tag() | (1 << 32) | 9);
        let cancel = |order| CommandKind::Cancel(Cancel { account: 1, order });
        assert_eq!(route(4, &cancel(OrderRef::Id(tagged))), Route::One(3));
        assert_eq!(route(4, &cancel(OrderRef::Client(3))), Route::All);
        let mass = |instrument| {
            CommandKind::MassCancel(MassCancel {
                account: 1,
                instrument,
                side: None,
            })
        };
        assert_eq!(route(4, &mass(Some(6))), Route::One(2));
        assert_eq!(route(4, &mass(None)), Route::All);
        assert_eq!(
            route(4, &CommandKind::Halt { instrument: 3 }),
            Route::One(3)
        );
        let kill = CommandKind::DisableAccount { account: 1 };
        assert_eq!(route(4, &kill), Route::All);
        assert_eq!(route(4, &kill).outcomes(&kill, 4), 4);
        let beat = CommandKind::Heartbeat;
        assert_eq!(route(4, &beat).outcomes(&beat, 4), 0);
        assert_eq!(route(4, &place).outcomes(&place, 4), 1);
    }

    fn accepted(corr: Correlation, order_id: u64) -> EventKind {
        EventKind::Accepted {
            corr,
            command: CommandTag::Cancel,
            account: 1,
            order_id: OrderId(order_id),
            instrument: None,
        }
    }

    fn rejected(corr: Correlation, reason: RejectReason) -> EventKind {
        EventKind::Rejected {
            corr,
            command: CommandTag::Amend,
            account: 1,
            client_id: 4,
            order_id: OrderId::NONE,
            reason,
        }
    }

    #[test]
    fn the_shard_holding_the_order_decides_the_reply() {
        let unknown = rejected(1, RejectReason::UnknownOrder);
        let found = accepted(1, 77);
        assert_eq!(
            fold(&[unknown.clone(), found.clone(), unknown.clone()]),
            Some(found)
        );
        let refused = rejected(1, RejectReason::MaxPositionLong);
        assert_eq!(
            fold(&[unknown.clone(), refused.clone()]),
            Some(refused.clone())
        );
        assert_eq!(fold(&[unknown.clone(), unknown.clone()]), Some(unknown));
        assert_eq!(fold(&[]), None);
    }

    #[test]
    fn fan_in_holds_outcomes_until_every_shard_gave_one() {
        let mut fan = FanIn::new();
        let kill = CommandKind::DisableAccount { account: 1 };
        fan.expect_command(9, &kill, 3);
        fan.expect_command(10, &CommandKind::Heartbeat, 3);
        assert_eq!(fan.pending(), 1);
        let other = accepted(8, 1);
        assert_eq!(fan.offer(&other), Offered::Pass);
        assert_eq!(fan.offer(&accepted(9, 0)), Offered::Held);
        assert_eq!(fan.offer(&accepted(9, 0)), Offered::Held);
        assert_eq!(fan.offer(&accepted(9, 0)), Offered::Folded(accepted(9, 0)));
        assert_eq!(fan.pending(), 0);
        // Not an outcome at all.
        let status = EventKind::AccountStatus {
            account: 1,
            disabled: true,
        };
        assert_eq!(fan.offer(&status), Offered::Pass);
    }

    #[test]
    fn a_merged_stream_gets_the_first_accept_at_once_and_rejects_at_the_end() {
        let mut fan = FanIn::new();
        let unknown = rejected(5, RejectReason::UnknownOrder);
        fan.expect(5, 3);
        assert_eq!(fan.offer_first_accept(&unknown), Offered::Held);
        assert_eq!(
            fan.offer_first_accept(&accepted(5, 77)),
            Offered::Folded(accepted(5, 77))
        );
        assert_eq!(fan.offer_first_accept(&unknown), Offered::Held);
        assert_eq!(fan.pending(), 0);
        // Every shard refusing: one reject, the one fold keeps, when the last arrives.
        let refused = rejected(6, RejectReason::MaxPositionLong);
        let unknown = rejected(6, RejectReason::UnknownOrder);
        fan.expect(6, 3);
        assert_eq!(fan.offer_first_accept(&unknown), Offered::Held);
        assert_eq!(fan.offer_first_accept(&refused), Offered::Held);
        assert_eq!(
            fan.offer_first_accept(&unknown),
            Offered::Folded(refused.clone())
        );
        assert_eq!(
            fold(&[unknown.clone(), refused.clone(), unknown]),
            Some(refused)
        );
        // A kill switch: the first shard's accept, at once.
        fan.expect(7, 2);
        assert_eq!(
            fan.offer_first_accept(&accepted(7, 0)),
            Offered::Folded(accepted(7, 0))
        );
        assert_eq!(fan.offer_first_accept(&accepted(7, 0)), Offered::Held);
        assert_eq!(fan.pending(), 0);
    }
}
