//! The engine thread and its two rings: the threaded form of [`Engine::apply`].
//!
//! ```text
//!  Ingress (clone per producer) ──► ingress ring (MPSC) ──► engine thread ──► egress ring (SPSC) ──► Egress
//!                                                            ▲                                      │
//!                                                            └───────── empty batch buffers ◄───────┘
//! ```
//!
//! [`Pipeline::spawn`] starts one thread that owns an [`Engine`]. Producers submit
//! [`Command`]s through cloneable [`Ingress`] handles; the engine thread drains them in runs of
//! up to [`PipelineConfig::max_batch`], applies each in arrival order and publishes every
//! run's events as one [`Batch`] on the egress ring, which one [`Egress`] handle reads.
//!
//! Back-pressure is explicit and nothing is dropped: a full ingress either hands the command
//! back ([`Ingress::try_submit`]) or makes the producer wait ([`Ingress::submit`]); a full
//! egress makes the engine thread wait for the consumer. Batch buffers are made at start
//! (egress capacity plus two) and travel back to the engine thread when a [`Batch`] is
//! dropped, so in steady state nothing on the path allocates.
//! All waiting follows the configured [`WaitStrategy`].
//!
//! The engine thread stops once every [`Ingress`] is dropped or [`Pipeline::shutdown`] is
//! called, after applying every command accepted before that; [`Pipeline::join`] then hands
//! the [`Engine`] back. If the [`Egress`] is dropped the engine thread stops too: with nobody
//! to deliver events to, applying more commands would lose their events.
//!
//! ```
//! use ticker_engine::pipeline::{Pipeline, PipelineConfig};
//! use ticker_engine::{Command, CommandKind, EngineConfig, EventKind};
//!
//! let config = PipelineConfig {
//!     engine: EngineConfig { order_capacity: 1024, ..EngineConfig::default() },
//!     ..PipelineConfig::default()
//! };
//! let (pipeline, ingress, mut egress) = Pipeline::spawn(config).unwrap();
//! ingress.submit(Command { deadline: 0, ts: 1, corr: 7, kind: CommandKind::Halt { instrument: 0 } }).unwrap();
//! drop(ingress); // the last producer is gone: the engine drains and stops
//! let batch = egress.recv().unwrap();
//! assert!(matches!(batch[0].kind, EventKind::Rejected { corr: 7, .. }));
//! drop(batch); // the buffer goes back to the engine thread
//! assert!(egress.recv().is_none());
//! let engine = pipeline.join();
//! assert_eq!(engine.last_seq(), 1);
//! ```

use crate::command::{Command, CommandKind};
use crate::engine::{Engine, EngineConfig};
use crate::event::Event;
use crate::journal::sync::{Durability, GroupSync, SyncDuty};
use crate::journal::{FsyncMode, JournalWriter, Storage, StorageFile, SyncFile};
use crate::ring::{
    mpsc, spsc, Doorbell, MpscConsumer, MpscProducer, MpscQueue, MpscRing, Occupancy, PopError,
    PushError, QueueConsumer, QueueProducer, SpscConsumer, SpscProducer, WaitStrategy,
};
use crate::snapshot::EngineSnapshot;
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread, ThreadId};
use std::time::{Duration, Instant};

mod sharded;
pub use sharded::{ShardedEgress, ShardedIngress, ShardedPipeline, FIRST_TICKET};

/// Sizes and waiting of the pipeline. Capacities are rounded up to powers of two.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Commands the ingress ring holds. Default 65,536: about 10 ms of work at 5 M commands a
    /// second, enough to absorb bursts without producers waiting.
    pub ingress_capacity: usize,
    /// Event batches the egress ring holds. Default 256: with full batches, as many commands'
    /// events as the ingress holds commands, while a stalled consumer pins at most this many
    /// buffers.
    pub egress_capacity: usize,
    /// Most commands applied into one batch. Larger batches amortise the per-batch handover;
    /// smaller ones reach the consumer sooner. Default 256; 0 counts as 1.
    pub max_batch: usize,
    /// How producers, the engine thread and the consumer wait. Default [`WaitStrategy::park`],
    /// which behaves on any number of cores; `BusySpin` needs a core per waiting thread.
    pub wait: WaitStrategy,
    /// The engine's own sizes (used by [`Pipeline::spawn`]). Default [`EngineConfig::default`].
    pub engine: EngineConfig,
    /// Where command timestamps come from. Default [`Clock::Caller`].
    pub clock: Clock,
}

/// Which time a command carries into the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Clock {
    /// Keep the `ts` the producer set (replays, tests, benchmarks: fully deterministic).
    #[default]
    Caller,
    /// Stamp `ts` with the wall clock when the engine thread takes the command off the ingress
    /// ring (read once per run of commands, never going backwards), so GTD expiry and deadlines
    /// are judged on arrival at the engine, not on submission.
    Wall,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            ingress_capacity: 1 << 16,
            egress_capacity: 1 << 8,
            max_batch: 256,
            wait: WaitStrategy::park(),
            engine: EngineConfig::default(),
            clock: Clock::Caller,
        }
    }
}

/// Events a batch buffer is first sized for, per command (an outcome plus about one more on
/// average). Buffers then keep the largest capacity they ever needed.
const EVENTS_PER_COMMAND_HINT: usize = 2;
/// Batch buffers made at start beyond the egress ring's capacity: the one the consumer holds
/// and the one the engine thread fills.
const BUFFERS_BEYOND_EGRESS: usize = 2;
/// Thread handles the egress consumer can hand the engine thread before it picks them up;
/// one is needed per thread the consumer moves to, so a few are plenty.
const WAKER_MAILBOX: usize = 4;
const ENGINE_THREAD_NAME: &str = "ticker-engine";
/// Commands the engine thread takes off the ingress ahead of the one it applies, to start
/// their memory loads early (see `Engine::apply_all`).
const LOOKAHEAD: usize = 2;

/// What the handles and the engine thread share besides the rings.
#[derive(Default)]
struct Shared {
    /// [`Pipeline::shutdown`] was called.
    stop: AtomicBool,
    /// The engine thread is parked on an empty ingress or a full egress.
    engine_bell: Doorbell,
    /// The egress consumer is parked on an empty egress.
    consumer_bell: Doorbell,
    /// Batches the engine thread found the egress full for (and waited).
    egress_stalls: AtomicU64,
    /// [`Ingress::set_backfill`]: a [`Clock::Wall`] pipeline keeps the producers' stamps.
    backfill: AtomicBool,
    /// The engine thread stopped on a journal failure (a merge ticket it took may never be
    /// published: see [`ShardedEgress`]).
    failed: AtomicBool,
}

/// A running engine thread. See the [module docs](self).
pub struct Pipeline {
    thread: JoinHandle<Engine>,
    shared: Arc<Shared>,
    /// With a journal: its progress.
    durability: Option<Arc<Durability>>,
    /// Its rings, by name, for [`Pipeline::rings`].
    rings: Vec<(&'static str, Occupancy)>,
}

/// The ring of commands from producers to the engine thread.
pub const INGRESS_RING: &str = "ingress";
/// The ring of event batches from the engine thread to the consumer.
pub const EGRESS_RING: &str = "egress";
/// The ring that takes emptied batch buffers back to the engine thread for reuse.
pub const BATCH_RETURN_RING: &str = "batch_return";
/// With a journal in `batch` mode: new segments waiting for the consumer's sync to take them.
pub const JOURNAL_ROTATIONS_RING: &str = "journal_rotations";

/// How full one ring is at a moment (see [`Pipeline::rings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingFill {
    pub ring: &'static str,
    /// Items in it: commands, batches, buffers or segments, as the ring carries.
    pub len: usize,
    pub capacity: usize,
}

/// A journal for the engine thread to write every command to before its events are
/// published (see [`crate::journal`]).
pub struct JournalSetup<S: Storage> {
    /// Positioned after the last command recovered.
    pub writer: JournalWriter<S>,
    pub fsync: FsyncMode,
    /// See [`crate::journal::JournalConfig::group_commit_bytes`].
    pub group_commit_bytes: u64,
    /// See [`crate::journal::JournalConfig::group_commit_delay`].
    pub group_commit_delay: Duration,
}

/// Rotated segments the writer can hand the consumer's sync before it picks them up; a
/// segment is tens of MiB, so the sync is never this far behind.
const ROTATIONS_IN_FLIGHT: usize = 8;

impl Pipeline {
    /// Starts an engine built from `config.engine`, on our MPSC ring.
    pub fn spawn(config: PipelineConfig) -> io::Result<(Pipeline, Ingress, Egress)> {
        let engine = Engine::new(config.engine.clone());
        Self::spawn_on::<MpscRing>(engine, config)
    }

    /// Starts a given engine (e.g. restored from a snapshot), on our MPSC ring.
    pub fn spawn_with(
        engine: Engine,
        config: PipelineConfig,
    ) -> io::Result<(Pipeline, Ingress, Egress)> {
        Self::spawn_on::<MpscRing>(engine, config)
    }

    /// Starts a given engine that journals every command before its events are published:
    /// with [`FsyncMode::Batch`], [`Egress`] hands out a batch only once the commands that
    /// made it are durable.
    pub fn spawn_journaled<S: Storage>(
        engine: Engine,
        config: PipelineConfig,
        journal: JournalSetup<S>,
    ) -> io::Result<(Pipeline, Ingress, Egress)> {
        Self::spawn_journaled_on(engine, config, journal, None)
    }

    /// [`Pipeline::spawn_journaled`] for one shard of several: each run it publishes takes a
    /// merge ticket from `tickets`, journaled with the run (see [`ShardedEgress`]).
    fn spawn_journaled_on<S: Storage>(
        engine: Engine,
        config: PipelineConfig,
        journal: JournalSetup<S>,
        tickets: Option<Arc<AtomicU64>>,
    ) -> io::Result<(Pipeline, Ingress, Egress)> {
        let start = journal.writer.next_index() - 1;
        let durability = Durability::new(start);
        let (stage, gate) = match journal.fsync {
            FsyncMode::Off => (
                JournalStage {
                    segments: Segments::Kept(vec![journal.writer.sync_handle()?]),
                    writer: journal.writer,
                    durability: durability.clone(),
                    group_commit_bytes: u64::MAX,
                },
                None,
            ),
            FsyncMode::Batch => {
                let (rotations_tx, rotations_rx) = spsc::bounded(ROTATIONS_IN_FLIGHT);
                let duty = SyncDuty::new(
                    journal.writer.storage().clone(),
                    journal.writer.sync_handle()?,
                    rotations_rx,
                    durability.clone(),
                    journal.group_commit_delay,
                );
                (
                    JournalStage {
                        writer: journal.writer,
                        durability: durability.clone(),
                        segments: Segments::ToConsumer(rotations_tx),
                        group_commit_bytes: journal.group_commit_bytes.max(1),
                    },
                    Some(Gate {
                        durability: durability.clone(),
                        duty: Box::new(duty),
                    }),
                )
            }
        };
        let rotations = match &stage.segments {
            Segments::ToConsumer(rotations) => Some(rotations.occupancy()),
            Segments::Kept(_) => None,
        };
        let (mut pipeline, ingress, egress) =
            Self::spawn_inner::<MpscRing>(engine, config, Some(Box::new(stage)), gate, tickets)?;
        pipeline.durability = Some(durability);
        pipeline
            .rings
            .extend(rotations.map(|r| (JOURNAL_ROTATIONS_RING, r)));
        Ok((pipeline, ingress, egress))
    }

    /// Starts a given engine with the ingress on queue family `Q` (e.g.
    /// [`crate::ring::ArrayQueueRing`]). `config.engine` is not used.
    pub fn spawn_on<Q: MpscQueue<Command>>(
        engine: Engine,
        config: PipelineConfig,
    ) -> io::Result<(Pipeline, Ingress<Q>, Egress)> {
        Self::spawn_inner(engine, config, None, None, None)
    }

    fn spawn_inner<Q: MpscQueue<Command>>(
        engine: Engine,
        config: PipelineConfig,
        journal: Option<Box<dyn Journaling>>,
        gate: Option<Gate>,
        tickets: Option<Arc<AtomicU64>>,
    ) -> io::Result<(Pipeline, Ingress<Q>, Egress)> {
        let max_batch = config.max_batch.max(1);
        let (commands_tx, commands_rx) = Q::bounded(config.ingress_capacity);
        let (batches_tx, batches_rx) = spsc::bounded(config.egress_capacity);
        // Every buffer in circulation is made now, so that steady state allocates nothing:
        // a full egress ring, one batch the consumer holds and one the engine fills. A
        // consumer holding more batches at once makes the engine allocate more; the return
        // ring has room for as many again, and a buffer that finds it full is simply freed.
        let buffers = batches_tx.capacity() + BUFFERS_BEYOND_EGRESS;
        let (recycle_tx, recycle_rx) = mpsc::bounded(2 * buffers);
        for _ in 0..buffers {
            let buffer = Vec::with_capacity(max_batch * EVENTS_PER_COMMAND_HINT);
            if recycle_tx.try_push(buffer).is_err() {
                unreachable!("the return ring holds twice the buffers");
            }
        }
        let (wakers_tx, wakers_rx) = spsc::bounded(WAKER_MAILBOX);
        let rings = vec![
            (INGRESS_RING, commands_tx.occupancy()),
            (EGRESS_RING, batches_tx.occupancy()),
            (BATCH_RETURN_RING, recycle_tx.occupancy()),
        ];
        let shared = Arc::new(Shared::default());
        let engine_thread = EngineThread::<Q> {
            engine,
            commands: commands_rx,
            batches: batches_tx,
            recycled: recycle_rx,
            wakers: wakers_rx,
            shared: shared.clone(),
            max_batch,
            wait: config.wait,
            clock: config.clock,
            last_stamp: 0,
            journal,
            tickets,
            ahead: std::collections::VecDeque::with_capacity(LOOKAHEAD),
        };
        let thread = thread::Builder::new()
            .name(ENGINE_THREAD_NAME.into())
            .spawn(move || engine_thread.run())?;
        let ingress = Ingress {
            fill: commands_tx.occupancy(),
            commands: commands_tx,
            shared: shared.clone(),
            engine_thread: thread.thread().clone(),
            wait: config.wait,
        };
        let egress = Egress {
            gate,
            batches: batches_rx,
            recycle: recycle_tx,
            wakers: wakers_tx,
            registered: None,
            shared: shared.clone(),
            engine_thread: thread.thread().clone(),
            wait: config.wait,
        };
        Ok((
            Pipeline {
                thread,
                shared,
                durability: None,
                rings,
            },
            ingress,
            egress,
        ))
    }

    /// Asks the engine thread to stop: commands already accepted are still applied and their
    /// events delivered. Once the engine thread has seen the request, submits fail with
    /// [`SubmitError::Closed`]; one accepted before that is applied, so none is lost.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
    }

    /// How many batches the engine thread found the egress full for, and waited for the
    /// consumer: the back-pressure a slow consumer puts on matching.
    pub fn egress_stalls(&self) -> u64 {
        self.shared.egress_stalls.load(Ordering::Relaxed)
    }

    /// How full each ring is now: [`INGRESS_RING`] (commands), [`EGRESS_RING`] (event
    /// batches), [`BATCH_RETURN_RING`] (empty buffers going back: how many the engine can
    /// still reuse) and, with a journal in `batch` mode, [`JOURNAL_ROTATIONS_RING`]. Reading
    /// costs the rings nothing (see [`crate::ring::occupancy`]).
    pub fn rings(&self) -> Vec<RingFill> {
        self.rings
            .iter()
            .map(|&(ring, ref o)| RingFill {
                ring,
                len: o.len(),
                capacity: o.capacity(),
            })
            .collect()
    }

    /// Whether the engine thread has stopped.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the engine thread to stop and returns its engine. It stops after
    /// [`Pipeline::shutdown`] or once every [`Ingress`] is dropped, and only after the
    /// consumer has taken its events (or dropped the [`Egress`]): keep reading while joining.
    ///
    /// A panic on the engine thread is resumed here.
    pub fn join(self) -> Engine {
        match self.thread.join() {
            Ok(engine) => engine,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// The journal's progress (written, durable, syncs), if the pipeline journals.
    pub fn durability(&self) -> Option<&Arc<Durability>> {
        self.durability.as_ref()
    }

    /// Why the journal stopped the pipeline, if it did: a failed write or sync. The engine
    /// thread then stops taking commands and publishes nothing more.
    pub fn journal_failure(&self) -> Option<String> {
        self.durability
            .as_ref()
            .and_then(|d| d.failure().map(str::to_string))
    }
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("stop", &self.shared.stop.load(Ordering::Relaxed))
            .field("egress_stalls", &self.egress_stalls())
            .field("finished", &self.thread.is_finished())
            .finish()
    }
}

/// Why a command was not accepted; the command comes back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The ingress ring is full (only from [`Ingress::try_submit`]).
    #[error("ingress ring is full (command corr {})", .0.corr)]
    IngressFull(Command),
    /// The engine thread is stopping or stopped; the command was not applied.
    #[error("pipeline is shut down (command corr {})", .0.corr)]
    Closed(Command),
}

impl SubmitError {
    /// The command that was not accepted.
    pub fn into_command(self) -> Command {
        match self {
            SubmitError::IngressFull(command) | SubmitError::Closed(command) => command,
        }
    }
}

/// A producer's handle: clone one per thread (or share it; it is `Sync`).
pub struct Ingress<Q: MpscQueue<Command> = MpscRing> {
    commands: Q::Producer,
    /// How full the ring is, read without touching it.
    fill: Occupancy,
    shared: Arc<Shared>,
    engine_thread: Thread,
    wait: WaitStrategy,
}

impl<Q: MpscQueue<Command>> Clone for Ingress<Q> {
    fn clone(&self) -> Self {
        Ingress {
            commands: self.commands.clone(),
            fill: self.fill.clone(),
            shared: self.shared.clone(),
            engine_thread: self.engine_thread.clone(),
            wait: self.wait,
        }
    }
}

impl<Q: MpscQueue<Command>> Ingress<Q> {
    /// Submits without waiting: a full ring hands the command back in
    /// [`SubmitError::IngressFull`].
    pub fn try_submit(&self, command: Command) -> Result<(), SubmitError> {
        match self.commands.try_push(command) {
            Ok(()) => {
                self.wake_engine();
                Ok(())
            }
            Err(PushError::Full(command)) => Err(SubmitError::IngressFull(command)),
            Err(PushError::Closed(command)) => Err(SubmitError::Closed(command)),
        }
    }

    /// Submits, waiting with the configured strategy while the ring is full. Fails only with
    /// [`SubmitError::Closed`].
    pub fn submit(&self, command: Command) -> Result<(), SubmitError> {
        let mut pending = Some(command);
        // No doorbell: the engine thread cannot know which producers wait for room, so a
        // parked producer re-checks on the strategy's timeout.
        self.wait.wait_for(None, || {
            let command = pending.take().expect("a pending command between polls");
            match self.commands.try_push(command) {
                Ok(()) => Some(Ok(())),
                Err(PushError::Full(command)) => {
                    pending = Some(command);
                    None
                }
                Err(PushError::Closed(command)) => Some(Err(SubmitError::Closed(command))),
            }
        })?;
        self.wake_engine();
        Ok(())
    }

    /// While on, a [`Clock::Wall`] pipeline keeps the `ts` producers set instead of stamping
    /// arrival time: for a simulated past replayed through the engine before the market opens
    /// (stamps then go forward from it). Off, wall stamps resume and never go below one given
    /// before. A [`Clock::Caller`] pipeline keeps producers' stamps either way.
    ///
    /// Takes effect for the engine's next run of commands: a producer switching it waits for
    /// the commands it submitted before to be applied (their replies) first.
    pub fn set_backfill(&self, on: bool) {
        self.shared.backfill.store(on, Ordering::Release);
    }

    /// Commands the ingress ring holds.
    pub fn capacity(&self) -> usize {
        self.commands.capacity()
    }

    /// Whether the ring had room for one more command when looked at (other producers may
    /// take it before this one pushes).
    pub fn has_room(&self) -> bool {
        self.fill.len() < self.commands.capacity()
    }

    fn wake_engine(&self) {
        if self.wait.parks() {
            self.shared.engine_bell.ring(&self.engine_thread);
        }
    }
}

impl<Q: MpscQueue<Command>> fmt::Debug for Ingress<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ingress")
            .field("queue", &Q::NAME)
            .field("capacity", &self.commands.capacity())
            .finish()
    }
}

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
    gate: Option<Gate>,
    batches: SpscConsumer<Published>,
    recycle: MpscProducer<Vec<Event>>,
    /// Hands the engine thread the handle of the thread that blocks in `recv`.
    wakers: SpscProducer<Thread>,
    registered: Option<ThreadId>,
    shared: Arc<Shared>,
    engine_thread: Thread,
    wait: WaitStrategy,
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
    fn make_durable(&mut self, published: &Published) -> bool {
        match &mut self.gate {
            None => true,
            // The engine raised `written` past the batch before publishing it, so a sync
            // starting now covers it.
            Some(gate) => gate.durability.synced() >= published.index || gate.duty.sync_written(),
        }
    }

    fn received(&self, published: Published) -> Batch {
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
    fn register_waiter(&mut self) {
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
struct Gate {
    durability: Arc<Durability>,
    duty: Box<dyn GroupSync>,
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
struct Published {
    events: Vec<Event>,
    /// Journal index of the run's last command (0 without a journal).
    index: u64,
    /// The run's merge ticket, for a shard of several (else 0).
    ticket: u64,
    /// The engine's state after the run's last command, when that was a snapshot command.
    cut: Option<Box<Cut>>,
}

/// The engine's state at a [`CommandKind::Snapshot`], handed to the egress consumer at the end
/// of the batch that command ended, so the consumer's own state can be cut at the same point.
#[derive(Debug)]
pub struct Cut {
    /// Journal index of the snapshot command: the state includes it and everything before.
    pub index: u64,
    pub engine: Box<EngineSnapshot>,
}

/// The journal as the engine thread sees it: commands pushed as applied, one commit per run.
trait Journaling: Send {
    fn push(&mut self, command: &Command) -> u64;
    /// Writes the run; waits first if too much is written but not yet durable. Returns the
    /// index of the run's last command, or 0 if nothing was pending.
    fn commit(&mut self, wait: &WaitStrategy, ticket: Option<u64>) -> Result<u64, String>;
    /// A clean stop: everything written is made durable, whatever the mode.
    fn finish(&mut self);
    fn fail(&self, why: String);
    /// Called once on the engine thread, so the consumer's sync knows whom to wake.
    fn on_engine_thread(&self);
}

struct JournalStage<S: Storage> {
    writer: JournalWriter<S>,
    durability: Arc<Durability>,
    segments: Segments<<S::File as StorageFile>::Sync>,
    group_commit_bytes: u64,
}

/// Where the sync handles of new segments go.
enum Segments<F> {
    /// `batch`: to the consumer's sync, which syncs each in turn, oldest first.
    ToConsumer(SpscProducer<F>),
    /// `off`: kept, oldest first, for the sync at a clean stop (a segment is tens of MiB, so
    /// this grows by one every few hundred thousand commands).
    Kept(Vec<F>),
}

impl<S: Storage> Journaling for JournalStage<S> {
    fn push(&mut self, command: &Command) -> u64 {
        self.writer.push(command)
    }

    fn commit(&mut self, wait: &WaitStrategy, ticket: Option<u64>) -> Result<u64, String> {
        if self.writer.pending() == 0 {
            return Ok(0);
        }
        let d = &self.durability;
        if d.unsynced_bytes() >= self.group_commit_bytes {
            wait.wait_for(Some(&d.writer_bell), || {
                d.room_or_end(self.group_commit_bytes).then_some(())
            });
        }
        if let Some(why) = d.failure() {
            return Err(why.to_string());
        }
        let commit = match self.writer.commit(d.synced(), ticket) {
            Ok(Some(commit)) => commit,
            Ok(None) => return Ok(0),
            Err(e) => return Err(format!("journal write failed: {e}")),
        };
        match &mut self.segments {
            Segments::ToConsumer(rotations) => {
                if let Some(next) = commit.rotated {
                    let mut next = Some(next);
                    // Every sync drains these; waiting here is near impossible.
                    wait.wait_for(None, || match rotations.try_push(next.take()?) {
                        Ok(()) => Some(()),
                        Err(PushError::Full(n)) | Err(PushError::Closed(n)) => {
                            next = Some(n);
                            None
                        }
                    });
                }
                d.wrote(commit.last, commit.bytes);
            }
            Segments::Kept(kept) => {
                kept.extend(commit.rotated);
                d.wrote_unsynced(commit.last, commit.bytes);
            }
        }
        Ok(commit.last)
    }

    fn finish(&mut self) {
        // With `batch`, whatever was published is durable; runs that published nothing
        // (heartbeats) wait for a sync that the consumer may still run, and syncing only the
        // current segment here could make it durable before older ones: syncs must go oldest
        // first, so recovery can tell a torn end from damage. With `off`, a clean stop syncs
        // every segment, oldest first.
        let Segments::Kept(kept) = &self.segments else {
            return;
        };
        let synced = kept
            .iter()
            .try_for_each(|segment| segment.sync_data())
            .and_then(|()| self.writer.storage().sync_dir());
        if let Err(e) = synced {
            self.durability
                .fail(format!("journal sync at shutdown failed: {e}"));
        }
    }

    fn fail(&self, why: String) {
        self.durability.fail(why);
    }

    fn on_engine_thread(&self) {
        self.durability.register_writer(thread::current());
    }
}

/// Everything the engine thread owns.
struct EngineThread<Q: MpscQueue<Command>> {
    engine: Engine,
    commands: Q::Consumer,
    batches: SpscProducer<Published>,
    recycled: MpscConsumer<Vec<Event>>,
    wakers: SpscConsumer<Thread>,
    shared: Arc<Shared>,
    max_batch: usize,
    wait: WaitStrategy,
    clock: Clock,
    /// Last wall-clock stamp given, so stamps never go backwards.
    last_stamp: u64,
    journal: Option<Box<dyn Journaling>>,
    /// A shard of several: the merge tickets all shards take from.
    tickets: Option<Arc<AtomicU64>>,
    /// Commands taken off the ingress ahead of the one being applied (at most
    /// [`LOOKAHEAD`]); one left after a cut starts the next run.
    ahead: std::collections::VecDeque<Command>,
}

impl<Q: MpscQueue<Command>> EngineThread<Q> {
    fn run(mut self) -> Engine {
        // A buffer whose run of commands produced no events (e.g. heartbeats), kept for the
        // next run instead of being published empty.
        let mut spare: Option<Vec<Event>> = None;
        let mut consumer: Option<Thread> = None;
        if let Some(journal) = &self.journal {
            journal.on_engine_thread();
        }
        while let Some(first) = self.ahead.pop_front().or_else(|| self.next_command()) {
            let mut events = spare
                .take()
                .or_else(|| self.recycled.try_pop().ok())
                .unwrap_or_else(|| Vec::with_capacity(self.max_batch * EVENTS_PER_COMMAND_HINT));
            let stamp = self.stamp();
            let mut next = Some(first);
            let mut taken = 0;
            let mut cut = None;
            while let Some(mut command) = next.take() {
                // Lookahead within the run: the next commands' first memory misses (the
                // client-order-id index, the order a cancel names) overlap this one's work,
                // as `Engine::apply_all` does. A cut ends its run, so none is taken past it.
                let cuts = self.journal.is_some() && matches!(command.kind, CommandKind::Snapshot);
                while !cuts
                    && self.ahead.len() < LOOKAHEAD
                    && taken + 1 + self.ahead.len() < self.max_batch
                {
                    match self.commands.try_pop() {
                        Ok(later) => {
                            self.engine.prefetch_far(&later);
                            self.ahead.push_back(later);
                        }
                        Err(_) => break,
                    }
                }
                if let Some(later) = self.ahead.front() {
                    self.engine.prefetch_near(later);
                }
                stamp(&mut command);
                let index = self.journal.as_mut().map(|j| j.push(&command));
                self.engine.apply(&command, &mut events);
                taken += 1;
                if let (CommandKind::Snapshot, Some(index)) = (&command.kind, index) {
                    // The cut ends its run, so it falls on a batch boundary.
                    cut = Some(Box::new(Cut {
                        index,
                        engine: Box::new(self.engine.snapshot()),
                    }));
                    break;
                }
                if taken < self.max_batch {
                    next = self
                        .ahead
                        .pop_front()
                        .or_else(|| self.commands.try_pop().ok());
                }
            }
            // A run that publishes takes its place in the merged stream now, before its
            // record is written with it: shards take tickets in the order they publish.
            let publishes = !events.is_empty() || cut.is_some();
            let ticket = match &self.tickets {
                Some(tickets) if publishes => Some(tickets.fetch_add(1, Ordering::AcqRel)),
                _ => None,
            };
            let index = match &mut self.journal {
                None => 0,
                Some(journal) => match journal.commit(&self.wait, ticket) {
                    Ok(index) => index,
                    Err(why) => {
                        // Nothing of this run may leave: its commands are not in the journal.
                        journal.fail(why);
                        self.shared.failed.store(true, Ordering::Release);
                        break;
                    }
                },
            };
            if !publishes {
                spare = Some(events);
                continue;
            }
            let ticket = ticket.unwrap_or(0);
            if !self.publish(Published {
                events,
                index,
                ticket,
                cut,
            }) {
                break;
            }
            self.wake_consumer(&mut consumer);
        }
        if let Some(journal) = &mut self.journal {
            journal.finish();
        }
        // Stopping: refuse further commands, and let a waiting consumer see the end.
        self.commands.close();
        let Self {
            engine,
            batches,
            mut wakers,
            shared,
            wait,
            ..
        } = self;
        drop(batches);
        if wait.parks() && shared.consumer_bell.sleeper_waiting() {
            while let Ok(thread) = wakers.try_pop() {
                consumer = Some(thread);
            }
            if let Some(thread) = &consumer {
                thread.unpark();
            }
        }
        engine
    }

    /// How this run of commands gets its timestamps (one clock read per run at most).
    fn stamp(&mut self) -> impl Fn(&mut Command) {
        let backfill = self.shared.backfill.load(Ordering::Acquire);
        let now = match self.clock {
            Clock::Caller => None,
            Clock::Wall if backfill => None,
            Clock::Wall => {
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                self.last_stamp = self.last_stamp.max(wall);
                Some(self.last_stamp)
            }
        };
        move |command: &mut Command| {
            if let Some(now) = now {
                command.ts = now;
            }
        }
    }

    /// Waits for the next command; `None` once the ingress is closed and drained.
    fn next_command(&mut self) -> Option<Command> {
        // Checked once per run so that a steady stream of commands cannot delay the stop.
        if self.shared.stop.load(Ordering::Relaxed) {
            self.commands.close();
        }
        let commands = &mut self.commands;
        let shared = &*self.shared;
        self.wait
            .wait_for(Some(&shared.engine_bell), || match commands.try_pop() {
                Ok(command) => Some(Some(command)),
                Err(PopError::Closed) => Some(None),
                Err(PopError::Empty) => {
                    // Closing is idempotent; what is already in the ring still drains.
                    if shared.stop.load(Ordering::Acquire) {
                        commands.close();
                    }
                    None
                }
            })
    }

    /// Publishes one batch, waiting while the egress is full. `false` if the consumer is gone.
    fn publish(&mut self, published: Published) -> bool {
        let batches = &mut self.batches;
        let shared = &*self.shared;
        let mut pending = Some(published);
        let mut stalled = false;
        self.wait.wait_for(Some(&shared.engine_bell), || {
            let events = pending.take().expect("a pending batch between polls");
            match batches.try_push(events) {
                Ok(()) => Some(true),
                Err(PushError::Full(events)) => {
                    if !stalled {
                        stalled = true;
                        shared.egress_stalls.fetch_add(1, Ordering::Relaxed);
                    }
                    pending = Some(events);
                    None
                }
                Err(PushError::Closed(_)) => Some(false),
            }
        })
    }

    fn wake_consumer(&mut self, consumer: &mut Option<Thread>) {
        if !self.wait.parks() || !self.shared.consumer_bell.sleeper_waiting() {
            return;
        }
        // The consumer registers its thread before announcing sleep, so the handle is in
        // the mailbox by the time we see the bell.
        while let Ok(thread) = self.wakers.try_pop() {
            *consumer = Some(thread);
        }
        if let Some(thread) = consumer {
            thread.unpark();
        }
    }
}
