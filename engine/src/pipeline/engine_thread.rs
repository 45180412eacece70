//! The engine thread: takes runs of commands off the ingress ring, journals and applies them,
//! and publishes each run's events as one batch.

use super::egress::Published;
use super::journal_stage::Journaling;
use super::{Clock, Cut, Shared, EVENTS_PER_COMMAND_HINT, LOOKAHEAD};
use crate::command::{Command, CommandKind};
use crate::engine::Engine;
use crate::event::Event;
use crate::ring::{
    MpscConsumer, MpscQueue, PopError, PushError, QueueConsumer, SpscConsumer, SpscProducer,
    WaitStrategy,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::Thread;

/// Everything the engine thread owns.
pub(super) struct EngineThread<Q: MpscQueue<Command>> {
    pub(super) engine: Engine,
    pub(super) commands: Q::Consumer,
    pub(super) batches: SpscProducer<Published>,
    pub(super) recycled: MpscConsumer<Vec<Event>>,
    pub(super) wakers: SpscConsumer<Thread>,
    pub(super) shared: Arc<Shared>,
    pub(super) max_batch: usize,
    pub(super) wait: WaitStrategy,
    pub(super) clock: Clock,
    /// Last wall-clock stamp given, so stamps never go backwards.
    pub(super) last_stamp: u64,
    pub(super) journal: Option<Box<dyn Journaling>>,
    /// A shard of several: the merge tickets all shards take from.
    pub(super) tickets: Option<Arc<AtomicU64>>,
    /// Commands taken off the ingress ahead of the one being applied (at most
    /// [`LOOKAHEAD`]); one left after a cut starts the next run.
    pub(super) ahead: std::collections::VecDeque<Command>,
}

impl<Q: MpscQueue<Command>> EngineThread<Q> {
    pub(super) fn run(mut self) -> Engine {
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
