//! The wake-up half of the `Park` wait strategy: how a publisher knows a waiter is parked.
//!
//! A waiter that is about to park raises the bell's flag and then polls its ring once more; a
//! publisher makes its item visible and then looks at the flag, unparking the waiter if it is
//! raised. A `SeqCst` fence on each side (store, fence, load — Dekker's pattern) guarantees
//! that at least one of them sees the other: either the waiter's last poll finds the item, or
//! the publisher sees the flag and unparks. So no wake-up is lost, and a publisher whose waiter
//! is awake pays one fence and one load of a line that is almost never written.
//!
//! A bell serves one sleeping thread at a time (the engine thread, or the egress consumer);
//! the thread to unpark is supplied by the ringer, which knows it.

use crossbeam_utils::CachePadded;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::thread::Thread;

#[derive(Debug, Default)]
pub struct Doorbell {
    /// Padded: ringers on other cores read it on every publish.
    asleep: CachePadded<AtomicBool>,
}

impl Doorbell {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waiter side: called right before the final poll that precedes parking.
    pub(crate) fn announce_sleep(&self) {
        // Release: whatever the waiter did before (e.g. registering its thread handle) is
        // visible to a ringer that reads `true` with Acquire.
        self.asleep.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// Waiter side: called after waking (or after the final poll found something).
    pub(crate) fn withdraw(&self) {
        // A ringer that still reads the stale `true` only unparks a thread that is awake,
        // which leaves a token its next park consumes at once: harmless.
        self.asleep.store(false, Ordering::Relaxed);
    }

    /// Ringer side, after publishing: whether a waiter may be parked and must be unparked.
    pub fn sleeper_waiting(&self) -> bool {
        fence(Ordering::SeqCst);
        self.asleep.load(Ordering::Acquire)
    }

    /// Ringer side, after publishing: unparks `thread` if it announced it was going to sleep.
    pub fn ring(&self, thread: &Thread) {
        if self.sleeper_waiting() {
            thread.unpark();
        }
    }
}

/// So a wait can take its bells by reference or inside what owns them.
impl AsRef<Doorbell> for Doorbell {
    fn as_ref(&self) -> &Doorbell {
        self
    }
}
