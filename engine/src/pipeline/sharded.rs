//! Several engine threads, one per shard ([`crate::shard`]), behind one ingress and one egress.
//!
//! ```text
//!                      ┌─► ingress ring 0 ─► engine thread 0 (shard 0) ─► egress ring 0 ─┐
//!  ShardedIngress ─────┤           …                                                      ├──► ShardedEgress
//!  (routes each        └─► ingress ring N ─► engine thread N (shard N) ─► egress ring N ─┘    (shard, batch)
//!   command)
//! ```
//!
//! Each shard is a whole [`Pipeline`]: its own rings, its own engine thread, its own journal.
//! [`ShardedIngress`] sends a command to the shard [`route`] names, or a copy to every shard.
//!
//! With several shards, every run of commands an engine thread publishes takes a **merge
//! ticket** from a counter the shards share, at the moment it is ready to publish; a
//! journaled shard writes the ticket into the run's journal record
//! ([`crate::journal::format`]). [`ShardedEgress`] hands batches out in ticket order — one
//! stream, the order in which the shards finished their runs — so the order is known to the
//! journals and a recovery interleaves the shards' runs exactly as they were handed out. It
//! waits for the next ticket when a shard took it but has not pushed its batch yet (a few
//! instructions later, or a journal write later); it cannot wait on a full ring, since a
//! shard pushes in ticket order and everything before the next ticket was handed out
//! already. It parks on all of the shards' doorbells at once. The outcomes of a command sent
//! to every shard are folded by a [`crate::FanIn`] the consumer keeps.

use super::{
    Egress, Ingress, JournalSetup, Pipeline, PipelineConfig, RecvTimeoutError, RingFill,
    SubmitError,
};
use crate::command::Command;
use crate::engine::Engine;
use crate::journal::Storage;
use crate::ring::MpscRing;
use crate::ring::{Doorbell, PopError};
use crate::shard::{route, Route, Shard, ShardError};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The engine threads of every shard.
#[derive(Debug)]
pub struct ShardedPipeline {
    shards: Vec<Pipeline>,
}

/// Routes each command to its shard, or a copy to every shard. Cloneable like [`Ingress`].
#[derive(Clone, Debug)]
pub struct ShardedIngress {
    shards: Vec<Ingress>,
    /// Held while the copies of a command for every shard go in, so such commands reach every
    /// shard in the same order: a snapshot is then before or after another such command (a
    /// kill switch, a mass cancel) in every shard, never between its copies, and a command
    /// still folding at a snapshot round has no copy before any shard's cut — what lets a
    /// recovery complete one a crash cut short. Only these (rare) commands take it; one for a
    /// single shard never does.
    every_shard: Arc<parking_lot::Mutex<()>>,
}

/// The longest [`ShardedIngress::try_submit`] waits for another command for every shard to
/// finish going in; that takes well under a microsecond unless a ring is full.
pub const TURN_WAIT: std::time::Duration = std::time::Duration::from_micros(100);

/// Every shard's batches, each shard's in its order.
#[derive(Debug)]
pub struct ShardedEgress {
    shards: Vec<Egress>,
    /// Shards whose engine thread stopped and whose batches were all received.
    closed: Vec<bool>,
    /// Each shard's next batch, popped while looking for the next ticket.
    heads: Vec<Option<super::Published>>,
    /// The merge ticket handed out next.
    next_ticket: u64,
    /// Each shard's consumer doorbell, rung when it publishes: a wait raises them all.
    bells: Vec<ConsumerBell>,
}

/// A shard's consumer doorbell, held through the state its pipeline shares.
struct ConsumerBell(Arc<super::Shared>);

impl AsRef<Doorbell> for ConsumerBell {
    fn as_ref(&self) -> &Doorbell {
        &self.0.consumer_bell
    }
}

impl std::fmt::Debug for ConsumerBell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsumerBell")
    }
}

fn invalid(e: ShardError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

impl ShardedPipeline {
    /// Starts `count` shards, each an engine built from `config.engine` with its [`Shard`].
    pub fn spawn(
        config: PipelineConfig,
        count: usize,
    ) -> io::Result<(ShardedPipeline, ShardedIngress, ShardedEgress)> {
        let engines = Shard::all(count)
            .map_err(invalid)?
            .into_iter()
            .map(|shard| {
                Engine::new(crate::EngineConfig {
                    shard,
                    ..config.engine.clone()
                })
            })
            .collect();
        Self::spawn_with(engines, config)
    }

    /// Starts given engines (e.g. restored from snapshots), engine `i` as shard `i` of
    /// `engines.len()`: each must have been made for that shard.
    pub fn spawn_with(
        engines: Vec<Engine>,
        config: PipelineConfig,
    ) -> io::Result<(ShardedPipeline, ShardedIngress, ShardedEgress)> {
        check_shards(&engines)?;
        let tickets = Tickets::new(engines.len(), FIRST_TICKET);
        let parts = engines
            .into_iter()
            .map(|engine| {
                Pipeline::spawn_inner::<MpscRing>(
                    engine,
                    config.clone(),
                    None,
                    None,
                    tickets.shared.clone(),
                )
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self::assemble(parts, tickets))
    }

    /// Starts given engines, each journaling to its own journal (`journals[i]` for shard `i`).
    /// `first_ticket` is the merge ticket the first published run takes: one past the
    /// highest in the journals (a recovery's [`ShardedEgress`] order continues), or
    /// [`FIRST_TICKET`].
    pub fn spawn_journaled<S: Storage>(
        engines: Vec<Engine>,
        config: PipelineConfig,
        journals: Vec<JournalSetup<S>>,
        first_ticket: u64,
    ) -> io::Result<(ShardedPipeline, ShardedIngress, ShardedEgress)> {
        check_shards(&engines)?;
        if journals.len() != engines.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} journals for {} shards: each shard needs its own",
                    journals.len(),
                    engines.len()
                ),
            ));
        }
        let tickets = Tickets::new(engines.len(), first_ticket.max(FIRST_TICKET));
        let parts = engines
            .into_iter()
            .zip(journals)
            .map(|(engine, journal)| {
                Pipeline::spawn_journaled_on(
                    engine,
                    config.clone(),
                    journal,
                    tickets.shared.clone(),
                )
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self::assemble(parts, tickets))
    }

    fn assemble(
        parts: Vec<(Pipeline, Ingress, Egress)>,
        tickets: Tickets,
    ) -> (ShardedPipeline, ShardedIngress, ShardedEgress) {
        let count = parts.len();
        let mut pipelines = Vec::with_capacity(count);
        let mut ingresses = Vec::with_capacity(count);
        let mut egresses = Vec::with_capacity(count);
        for (p, i, e) in parts {
            pipelines.push(p);
            ingresses.push(i);
            egresses.push(e);
        }
        (
            ShardedPipeline { shards: pipelines },
            ShardedIngress {
                shards: ingresses,
                every_shard: Arc::default(),
            },
            ShardedEgress {
                bells: egresses
                    .iter()
                    .map(|e| ConsumerBell(e.shared.clone()))
                    .collect(),
                shards: egresses,
                closed: vec![false; count],
                heads: (0..count).map(|_| None).collect(),
                next_ticket: tickets.first,
            },
        )
    }

    pub fn count(&self) -> usize {
        self.shards.len()
    }

    /// Each shard's pipeline, in shard order (rings, stalls, journal progress).
    pub fn shards(&self) -> &[Pipeline] {
        &self.shards
    }

    /// Asks every engine thread to stop (see [`Pipeline::shutdown`]).
    pub fn shutdown(&self) {
        self.shards.iter().for_each(Pipeline::shutdown);
    }

    /// Batches the engine threads found their egress full for, summed.
    pub fn egress_stalls(&self) -> u64 {
        self.shards.iter().map(Pipeline::egress_stalls).sum()
    }

    /// Every shard's rings, as `(shard, fill)`.
    pub fn rings(&self) -> Vec<(usize, RingFill)> {
        self.shards
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.rings().into_iter().map(move |r| (i, r)))
            .collect()
    }

    /// The first journal failure of any shard: that shard stopped taking commands.
    pub fn journal_failure(&self) -> Option<(usize, String)> {
        self.shards
            .iter()
            .enumerate()
            .find_map(|(i, p)| p.journal_failure().map(|why| (i, why)))
    }

    /// Waits for every engine thread and returns the engines in shard order (keep reading
    /// the egress while joining, as with [`Pipeline::join`]).
    pub fn join(self) -> Vec<Engine> {
        self.shards.into_iter().map(Pipeline::join).collect()
    }
}

/// The merge ticket of the first run a fresh sharded market publishes (0 is no ticket).
pub const FIRST_TICKET: u64 = 1;

/// The merge tickets of a market's shards: none with one shard, whose batches need no merge.
struct Tickets {
    shared: Option<Arc<AtomicU64>>,
    first: u64,
}

impl Tickets {
    fn new(shards: usize, first: u64) -> Tickets {
        Tickets {
            shared: (shards > 1).then(|| Arc::new(AtomicU64::new(first))),
            first,
        }
    }
}

/// Engine `i` must be shard `i` of `engines.len()`.
fn check_shards(engines: &[Engine]) -> io::Result<()> {
    let count = engines.len();
    Shard::new(0, count).map_err(invalid)?;
    for (i, engine) in engines.iter().enumerate() {
        let shard = engine.config().shard;
        if shard != Shard::new(i, count).map_err(invalid)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "engine {i} of {count} was made as shard {} of {}",
                    shard.index(),
                    shard.count()
                ),
            ));
        }
    }
    Ok(())
}

impl ShardedIngress {
    pub fn count(&self) -> usize {
        self.shards.len()
    }

    /// Submits to the command's shard, or a copy to every shard, waiting while a ring is full;
    /// returns where it went. Fails only with [`SubmitError::Closed`]; a copy for every shard
    /// that fails has reached the shards before the closed one (they were stopping anyway).
    pub fn submit(&self, command: Command) -> Result<Route, SubmitError> {
        let route = route(self.shards.len(), &command.kind);
        match route {
            Route::One(shard) => self.shards[shard].submit(command)?,
            Route::All => {
                let _in_order = self.every_shard.lock();
                let (last, rest) = self.shards.split_last().expect("at least one shard");
                for shard in rest {
                    shard.submit(command.clone())?;
                }
                last.submit(command)?;
            }
        }
        Ok(route)
    }

    /// Submits to shard `shard` alone, whatever the command's route, waiting while its ring is
    /// full: for a copy of a command sent to every shard that some shards never took (a
    /// recovery completing what a crash cut short).
    pub fn submit_to(&self, shard: usize, command: Command) -> Result<(), SubmitError> {
        self.shards[shard].submit(command)
    }

    /// Submits without waiting when the command goes to one shard: a full ring hands it back.
    /// A command for every shard is handed back if another such command holds the turn for
    /// longer than [`TURN_WAIT`] (its submitter waiting for room), or if any shard's ring is
    /// full when looked at, before any copy goes in; once the first shard took it, the other copies are submitted
    /// waiting (for room another producer took in between), so no shard misses it.
    pub fn try_submit(&self, command: Command) -> Result<Route, SubmitError> {
        let route = route(self.shards.len(), &command.kind);
        match route {
            Route::One(shard) => self.shards[shard].try_submit(command)?,
            Route::All => {
                // A submitter holding the turn may be waiting for room in a full ring: hand
                // the command back rather than wait behind it.
                let Some(_in_order) = self.every_shard.try_lock_for(TURN_WAIT) else {
                    return Err(SubmitError::IngressFull(command));
                };
                if !self.shards.iter().all(Ingress::has_room) {
                    return Err(SubmitError::IngressFull(command));
                }
                let (first, rest) = self.shards.split_first().expect("at least one shard");
                first.try_submit(command.clone())?;
                for shard in rest {
                    shard.submit(command.clone())?;
                }
            }
        }
        Ok(route)
    }

    /// See [`Ingress::set_backfill`]; set on every shard.
    pub fn set_backfill(&self, on: bool) {
        self.shards.iter().for_each(|s| s.set_backfill(on));
    }

    /// Commands each shard's ingress ring holds.
    pub fn capacity(&self) -> usize {
        self.shards[0].capacity()
    }
}

impl ShardedEgress {
    pub fn count(&self) -> usize {
        self.shards.len()
    }

    /// The next batch of any shard, with the shard's index, waiting for one; `None` once every
    /// engine thread stopped and every batch was received (or a journal failed).
    pub fn recv(&mut self) -> Option<(usize, super::Batch)> {
        self.recv_until(None).ok()
    }

    /// Like [`ShardedEgress::recv`], giving up at `deadline`.
    pub fn recv_deadline(
        &mut self,
        deadline: Instant,
    ) -> Result<(usize, super::Batch), RecvTimeoutError> {
        self.recv_until(Some(deadline))
    }

    /// The next batch of any shard if one is ready (`Ok(None)`: none is), or
    /// [`RecvTimeoutError::Closed`] once every shard is done.
    pub fn try_recv(&mut self) -> Result<Option<(usize, super::Batch)>, RecvTimeoutError> {
        match self.poll() {
            Some(Ok(found)) => self.deliver(found).map(Some),
            Some(Err(())) => Err(RecvTimeoutError::Closed),
            None => Ok(None),
        }
    }

    fn recv_until(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<(usize, super::Batch), RecvTimeoutError> {
        let found = match self.poll() {
            Some(found) => found,
            None => self.wait(deadline)?,
        };
        match found {
            Ok(found) => self.deliver(found),
            Err(()) => Err(RecvTimeoutError::Closed),
        }
    }

    /// One look for the batch with the next ticket: `Some(Ok)` found, `Some(Err)` no more
    /// will come, `None` not ready yet.
    fn poll(&mut self) -> Option<Result<(usize, super::Published), ()>> {
        poll_shards(
            &mut self.shards,
            &mut self.closed,
            &mut self.heads,
            &mut self.next_ticket,
        )
    }

    fn wait(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Result<(usize, super::Published), ()>, RecvTimeoutError> {
        for egress in &mut self.shards {
            egress.register_waiter();
        }
        let wait = self.shards[0].wait;
        let (shards, closed, heads, next) = (
            &mut self.shards,
            &mut self.closed,
            &mut self.heads,
            &mut self.next_ticket,
        );
        wait.wait_any(&self.bells, deadline, || {
            poll_shards(shards, closed, heads, next)
        })
        .ok_or(RecvTimeoutError::Timeout)
    }

    /// Makes a popped batch durable on its shard and hands it out.
    fn deliver(
        &mut self,
        (shard, published): (usize, super::Published),
    ) -> Result<(usize, super::Batch), RecvTimeoutError> {
        let egress = &mut self.shards[shard];
        if !egress.make_durable(&published) {
            // That shard's journal failed: nothing more of it may be published.
            return Err(RecvTimeoutError::Closed);
        }
        Ok((shard, egress.received(published)))
    }
}

/// Pops each shard's next batch into `heads` and hands out the one with ticket `next` (a
/// single shard's batches have no tickets: each is next). `Some(Err)` once every shard is
/// closed and drained, or one stopped on a journal failure holding a ticket it never
/// published.
fn poll_shards(
    shards: &mut [Egress],
    closed: &mut [bool],
    heads: &mut [Option<super::Published>],
    next: &mut u64,
) -> Option<Result<(usize, super::Published), ()>> {
    let single = shards.len() == 1;
    for (shard, egress) in shards.iter_mut().enumerate() {
        if heads[shard].is_none() && !closed[shard] {
            match egress.batches.try_pop() {
                Ok(published) => heads[shard] = Some(published),
                Err(PopError::Closed) => closed[shard] = true,
                Err(PopError::Empty) => {}
            }
        }
        if heads[shard]
            .as_ref()
            .is_some_and(|p| single || p.ticket == *next)
        {
            *next += 1;
            return heads[shard].take().map(|p| Ok((shard, p)));
        }
    }
    let drained = closed.iter().all(|&c| c) && heads.iter().all(Option::is_none);
    let failed = shards
        .iter()
        .zip(closed.iter())
        .any(|(egress, &closed)| closed && egress.shared.failed.load(Ordering::Acquire));
    (drained || failed).then_some(Err(()))
}
