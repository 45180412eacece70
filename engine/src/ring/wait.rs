//! How a thread waits on a ring: the consumer for an item, a producer for a free slot.
//!
//! Waiting has three tiers, cheapest wake-up first: spinning (nanoseconds, burns the core),
//! yielding to the scheduler (lets another thread run on the core, microseconds), and parking
//! (costs nothing while idle, tens of microseconds to wake). [`WaitStrategy`] picks how many
//! steps of each a wait goes through. Busy spinning only pays off with a core per spinning
//! thread; on a two-core machine with more threads than cores it starves the very thread being
//! waited for, so tests and small machines use `SpinThenYield` or `Park`.

use super::doorbell::Doorbell;
use std::hint;
use std::thread;
use std::time::{Duration, Instant};

/// How a waiting thread spends its time until the ring it waits on is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Poll in a tight loop. Lowest latency; needs a dedicated core per waiting thread.
    BusySpin,
    /// Spin `spins` polls, then yield to the scheduler between polls.
    SpinThenYield { spins: u32 },
    /// Spin `spins` polls, yield `yields` times, then park until woken or `timeout` passes.
    ///
    /// Waits announced on a [`Doorbell`] are woken by the publisher as soon as it publishes;
    /// `timeout` then only bounds how long a waiter nobody rings (a producer waiting for a free
    /// slot) can oversleep.
    Park {
        spins: u32,
        yields: u32,
        timeout: Duration,
    },
}

impl WaitStrategy {
    /// Polls spun before yielding: about a microsecond of `spin_loop` hints on current x86.
    pub const DEFAULT_SPINS: u32 = 100;
    /// Yields before parking: another few microseconds during which a busy peer can run.
    pub const DEFAULT_YIELDS: u32 = 10;
    /// Longest park without a wake-up: the latency a producer waiting on a full ingress may
    /// add, and how often an idle thread nobody rings re-checks.
    pub const DEFAULT_PARK_TIMEOUT: Duration = Duration::from_micros(500);

    /// `Park` with the default spins, yields and timeout.
    pub const fn park() -> Self {
        WaitStrategy::Park {
            spins: Self::DEFAULT_SPINS,
            yields: Self::DEFAULT_YIELDS,
            timeout: Self::DEFAULT_PARK_TIMEOUT,
        }
    }

    /// `SpinThenYield` with the default spins.
    pub const fn spin_then_yield() -> Self {
        WaitStrategy::SpinThenYield {
            spins: Self::DEFAULT_SPINS,
        }
    }

    /// Whether waiters may park, so publishers must ring doorbells to wake them.
    pub fn parks(&self) -> bool {
        matches!(self, WaitStrategy::Park { .. })
    }

    /// Calls `poll` until it returns `Some`, waiting between calls as the strategy says.
    ///
    /// `bell`, if given, is the doorbell publishers ring when `poll` may have become ready;
    /// without one a parked waiter wakes only on its timeout.
    pub fn wait_for<T>(&self, bell: Option<&Doorbell>, poll: impl FnMut() -> Option<T>) -> T {
        match self.wait(bell.as_slice(), None, poll) {
            Some(value) => value,
            // Without a deadline `wait` only returns once `poll` gave a value.
            None => unreachable!("wait without deadline returned without a value"),
        }
    }

    /// Like [`WaitStrategy::wait_for`], but gives up with `None` once `deadline` has passed.
    pub fn wait_until<T>(
        &self,
        bell: Option<&Doorbell>,
        deadline: Instant,
        poll: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        self.wait(bell.as_slice(), Some(deadline), poll)
    }

    /// Like [`WaitStrategy::wait_until`] (no deadline: `None`) for a `poll` that looks at
    /// several rings: a publisher to any of them rings its own bell of `bells`, and each wakes
    /// the waiter.
    pub fn wait_any<T, B: AsRef<Doorbell>>(
        &self,
        bells: &[B],
        deadline: Option<Instant>,
        poll: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        self.wait(bells, deadline, poll)
    }

    fn wait<T, B: AsRef<Doorbell>>(
        &self,
        bells: &[B],
        deadline: Option<Instant>,
        mut poll: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let mut step: u32 = 0;
        loop {
            if let Some(value) = poll() {
                return Some(value);
            }
            let now = deadline.map(|d| (d, Instant::now()));
            if let Some((deadline, now)) = now {
                if now >= deadline {
                    return None;
                }
            }
            match *self {
                WaitStrategy::BusySpin => hint::spin_loop(),
                WaitStrategy::SpinThenYield { spins } => {
                    if step < spins {
                        hint::spin_loop();
                    } else {
                        thread::yield_now();
                    }
                }
                WaitStrategy::Park {
                    spins,
                    yields,
                    timeout,
                } => {
                    if step < spins {
                        hint::spin_loop();
                    } else if step < spins.saturating_add(yields) {
                        thread::yield_now();
                    } else {
                        let timeout = match now {
                            Some((deadline, now)) => timeout.min(deadline - now),
                            None => timeout,
                        };
                        if let Some(value) = park(bells, timeout, &mut poll) {
                            return Some(value);
                        }
                    }
                }
            }
            step = step.saturating_add(1);
        }
    }
}

/// Default: [`WaitStrategy::park`], which is safe on any number of cores.
impl Default for WaitStrategy {
    fn default() -> Self {
        WaitStrategy::park()
    }
}

/// One park: announce on every bell, poll a last time (closing the lost-wake-up window for
/// each: a publisher either sees its bell raised or its item is found), sleep.
fn park<T, B: AsRef<Doorbell>>(
    bells: &[B],
    timeout: Duration,
    poll: &mut impl FnMut() -> Option<T>,
) -> Option<T> {
    if bells.is_empty() {
        thread::park_timeout(timeout);
        return None;
    }
    for bell in bells {
        bell.as_ref().announce_sleep();
    }
    let value = poll();
    if value.is_none() {
        thread::park_timeout(timeout);
    }
    for bell in bells {
        bell.as_ref().withdraw();
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn wait_for_returns_what_poll_gives_after_some_failed_polls() {
        for strategy in [
            WaitStrategy::BusySpin,
            WaitStrategy::spin_then_yield(),
            WaitStrategy::Park {
                spins: 2,
                yields: 2,
                timeout: Duration::from_micros(50),
            },
        ] {
            let mut polls = 0;
            let got = strategy.wait_for(None, || {
                polls += 1;
                (polls == 20).then_some(polls)
            });
            assert_eq!(got, 20, "{strategy:?}");
        }
    }

    #[test]
    fn wait_until_gives_up_at_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(20);
        let got: Option<()> = WaitStrategy::park().wait_until(None, deadline, || None);
        assert_eq!(got, None);
        assert!(Instant::now() >= deadline);
    }

    /// The waiter parks with a timeout far beyond what a wake-up takes, so each round only
    /// finishes quickly if ringing the doorbell really unparks it.
    #[test]
    fn ringing_the_doorbell_wakes_a_parked_waiter() {
        let timeout = Duration::from_secs(10);
        let strategy = WaitStrategy::Park {
            spins: 0,
            yields: 0,
            timeout,
        };
        for round in 0..200 {
            let started = Instant::now();
            let bell = Arc::new(Doorbell::new());
            let ready = Arc::new(AtomicBool::new(false));
            let waiter = {
                let (bell, ready) = (bell.clone(), ready.clone());
                thread::spawn(move || {
                    strategy.wait_for(Some(&bell), || ready.load(Ordering::Acquire).then_some(()))
                })
            };
            ready.store(true, Ordering::Release);
            bell.ring(waiter.thread());
            waiter.join().unwrap();
            assert!(
                started.elapsed() < timeout / 2,
                "round {round}: waiter slept through the doorbell"
            );
        }
    }
}
