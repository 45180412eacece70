//! The consumer's side of the pipeline: batches of events in sequence order, handed out once
//! their commands are durable.

use super::Shared;
use crate::event::Event;
use crate::journal::sync::{Durability, GroupSync};
use crate::ring::{MpscProducer, PopError, SpscConsumer, SpscProducer, WaitStrategy};
use crate::snapshot::EngineSnapshot;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::thread::{self, Thread, ThreadId};
use std::time::Instant;

/// Why [`Egress::try_recv`] returned no batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    #[error("no event batch is ready")]
    Empty,
    #[error("the engine thread stopped and every batch was received")]
    Closed,
}

/// Why [`Egress::recv_deadline`] returned no batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    #[error("no event batch arrived before the deadline")]
    Timeout,
    #[error("the engine thread stopped and every batch was received")]
    Closed,
}

/// The consumer's handle: batches of events in sequence order.
///
/// It may move between threads; a blocking receive wakes promptly on whichever thread it is
/// made from.
pub struct Egress {
    /// With a journal in `batch` mode: batches are handed out once durable, and this consumer
    /// runs the sync that makes them so.
    pub(super) gate: Option<Gate>,
    pub(super) batches: SpscConsumer<Published>,
    pub(super) recycle: MpscProducer<Vec<Event>>,
    /// Hands the engine thread the handle of the thread that blocks in `recv`.
    pub(super) wakers: SpscProducer<Thread>,
    pub(super) registered: Option<ThreadId>,
    pub(super) shared: Arc<Shared>,
    pub(super) engine_thread: Thread,
    pub(super) wait: WaitStrategy,
}

impl Egress {
    /// The next batch if one is ready. With a journal in `batch` mode this syncs the journal
    /// first if the batch's commands are not durable yet.
    pub fn try_recv(&mut self) -> Result<Batch, TryRecvError> {
        let published = match self.batches.try_pop() {
            Ok(p) => p,
            Err(PopError::Empty) => return Err(TryRecvError::Empty),
            Err(PopError::Closed) => return Err(TryRecvError::Closed),
        };
        match self.make_durable(&published) {
            true => Ok(self.received(published)),
            false => Err(TryRecvError::Closed),
        }
    }

    /// The next batch, waiting for it; `None` once the engine thread has stopped and every
    /// batch was received, or once the journal failed.
    pub fn recv(&mut self) -> Option<Batch> {
        self.recv_until(None).ok()
    }

    /// The next batch, waiting for it until `deadline` (a journal sync it needs is not cut
    /// short by the deadline).
    pub fn recv_deadline(&mut self, deadline: Instant) -> Result<Batch, RecvTimeoutError> {
        self.recv_until(Some(deadline))
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<Batch, RecvTimeoutError> {
        let published = self.pop_until(deadline)?;
        match self.make_durable(&published) {
            true => Ok(self.received(published)),
            false => Err(RecvTimeoutError::Closed),
        }
    }

    fn pop_until(&mut self, deadline: Option<Instant>) -> Result<Published, RecvTimeoutError> {
        match self.batches.try_pop() {
            Ok(p) => return Ok(p),
            Err(PopError::Closed) => return Err(RecvTimeoutError::Closed),
            Err(PopError::Empty) => {}
        }
        self.register_waiter();
        let batches = &mut self.batches;
        let bell = Some(&self.shared.consumer_bell);
        let poll = || match batches.try_pop() {
            Err(PopError::Empty) => None,
            other => Some(other),
        };
        let popped = match deadline {
            None => Some(self.wait.wait_for(bell, poll)),
            Some(deadline) => self.wait.wait_until(bell, deadline, poll),
        };
        match popped {
            Some(Ok(p)) => Ok(p),
            Some(Err(_)) => Err(RecvTimeoutError::Closed),
            None => Err(RecvTimeoutError::Timeout),
        }
    }

    /// Makes the commands of a batch durable if they are not yet: one sync covers everything
    /// the engine has written by then, this batch and the runs after it. `false` if the journal
    /// failed: the batch must never be published.
    pub(super) fn make_durable(&mut self, published: &Published) -> bool {
        match &mut self.gate {
            None => true,
            // The engine raised `written` past the batch before publishing it, so a sync
            // starting now covers it.
            Some(gate) => gate.durability.synced() >= published.index || gate.duty.sync_written(),
        }
    }

    pub(super) fn received(&self, published: Published) -> Batch {
        // A slot just freed: the engine may be parked waiting for one.
        if self.wait.parks() {
            self.shared.engine_bell.ring(&self.engine_thread);
        }
        Batch {
            events: published.events,
            journal_index: published.index,
            ticket: published.ticket,
            cut: published.cut,
            recycle: Some(self.recycle.clone()),
        }
    }

    /// Before parking for the first time on a thread, tell the engine thread whom to unpark.
    pub(super) fn register_waiter(&mut self) {
        if !self.wait.parks() {
            return;
        }
        let current = thread::current();
        if self.registered != Some(current.id()) {
            let id = current.id();
            // A full mailbox (the engine has not collected earlier handles yet) leaves us
            // unregistered; we retry on the next wait and meanwhile wake on the timeout.
            if self.wakers.try_push(current).is_ok() {
                self.registered = Some(id);
            }
        }
    }
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("capacity", &self.batches.capacity())
            .finish()
    }
}

/// The events of one run of commands, in sequence order. Dropping it returns its buffer to the
/// engine thread for reuse; [`Batch::into_vec`] keeps the buffer instead.
pub struct Batch {
    events: Vec<Event>,
    journal_index: u64,
    ticket: u64,
    cut: Option<Box<Cut>>,
    /// `None` once the buffer has been taken out.
    recycle: Option<MpscProducer<Vec<Event>>>,
}

impl Batch {
    /// Journal index of the last command of the run that made this batch (0 without a
    /// journal). Every command up to it is durable under the configured fsync mode.
    pub fn journal_index(&self) -> u64 {
        self.journal_index
    }

    /// The engine's state cut at this batch's end, if a snapshot command ended it (only when
    /// the pipeline journals: a cut needs a journal index). Taken once.
    /// The run's place in a sharded market's merged stream (0 with one shard).
    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    pub fn take_cut(&mut self) -> Option<Box<Cut>> {
        self.cut.take()
    }

    /// Takes the events out; the buffer is not returned to the engine thread.
    pub fn into_vec(mut self) -> Vec<Event> {
        self.recycle = None;
        std::mem::take(&mut self.events)
    }
}

impl Deref for Batch {
    type Target = [Event];

    fn deref(&self) -> &[Event] {
        &self.events
    }
}

/// The consumer may rewrite events before passing them on (a market of several shards
/// renumbers their `seq` into one merged sequence).
impl DerefMut for Batch {
    fn deref_mut(&mut self) -> &mut [Event] {
        &mut self.events
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.events.iter()).finish()
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(recycle) = self.recycle.take() {
            let mut events = std::mem::take(&mut self.events);
            // Cleared here, on the consumer's thread, so the engine thread does not pay for
            // dropping events.
            events.clear();
            // Full or closed: the buffer is not needed back, so it is freed.
            drop(recycle.try_push(events));
        }
    }
}

/// The durability gate of the `batch` fsync mode, held by the egress consumer.
pub(super) struct Gate {
    pub(super) durability: Arc<Durability>,
    pub(super) duty: Box<dyn GroupSync>,
}

impl Drop for Gate {
    fn drop(&mut self) {
        // Nobody syncs from now on: the engine thread must not wait for it (its next publish
        // finds the consumer gone and stops).
        self.durability.abandon();
    }
}

/// What the engine thread publishes for one run of commands.
#[derive(Debug)]
pub(super) struct Published {
    pub(super) events: Vec<Event>,
    /// Journal index of the run's last command (0 without a journal).
    pub(super) index: u64,
    /// The run's merge ticket, for a shard of several (else 0).
    pub(super) ticket: u64,
    /// The engine's state after the run's last command, when that was a snapshot command.
    pub(super) cut: Option<Box<Cut>>,
}

/// The engine's state at a [`CommandKind::Snapshot`](crate::CommandKind::Snapshot), handed to the egress consumer at the end
/// of the batch that command ended, so the consumer's own state can be cut at the same point.
#[derive(Debug)]
pub struct Cut {
    /// Journal index of the snapshot command: the state includes it and everything before.
    pub index: u64,
    pub engine: Box<EngineSnapshot>,
}
