//! Helpers for the rings' stress tests.

use super::WaitStrategy;
use std::time::{Duration, Instant};

/// Longer than any healthy stress run takes on a loaded two-core machine; a lost item or a
/// corrupted slot shows up as a failure after this instead of a hung test run.
pub(crate) const STRESS_DEADLINE: Duration = Duration::from_secs(30);

/// Polls like the pipeline does on small machines (spin, then yield), failing the test if
/// `poll` gives nothing within [`STRESS_DEADLINE`].
pub(crate) fn wait_or_fail<T>(what: &str, poll: impl FnMut() -> Option<T>) -> T {
    WaitStrategy::spin_then_yield()
        .wait_until(None, Instant::now() + STRESS_DEADLINE, poll)
        .unwrap_or_else(|| panic!("{what}: still waiting after {STRESS_DEADLINE:?}"))
}
