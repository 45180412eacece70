//! The producers' side of the pipeline: submitting commands to the engine thread.

use super::Shared;
use crate::command::Command;
use crate::ring::{MpscQueue, MpscRing, Occupancy, PushError, QueueProducer, WaitStrategy};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::Thread;

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
    pub(super) commands: Q::Producer,
    /// How full the ring is, read without touching it.
    pub(super) fill: Occupancy,
    pub(super) shared: Arc<Shared>,
    pub(super) engine_thread: Thread,
    pub(super) wait: WaitStrategy,
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

    /// While on, a [`Clock::Wall`](super::Clock::Wall) pipeline keeps the `ts` producers set instead of stamping
    /// arrival time: for a simulated past replayed through the engine before the market opens
    /// (stamps then go forward from it). Off, wall stamps resume and never go below one given
    /// before. A [`Clock::Caller`](super::Clock::Caller) pipeline keeps producers' stamps either way.
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
