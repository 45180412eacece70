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

use crate::command::Command;
use crate::engine::{Engine, EngineConfig};
use crate::journal::sync::{Durability, SyncDuty};
use crate::journal::{FsyncMode, JournalWriter, Storage};
use crate::ring::{
    mpsc, spsc, Doorbell, MpscQueue, MpscRing, Occupancy, QueueProducer, WaitStrategy,
};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

mod egress;
mod engine_thread;
mod ingress;
mod journal_stage;
mod sharded;
pub use egress::{Batch, Cut, Egress, RecvTimeoutError, TryRecvError};
pub use ingress::{Ingress, SubmitError};
pub use sharded::{ShardedEgress, ShardedIngress, ShardedPipeline, FIRST_TICKET};

use egress::{Gate, Published};
use engine_thread::EngineThread;
use journal_stage::{JournalStage, Journaling, Segments};

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
