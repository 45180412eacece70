//! What one WebSocket connection (and the server) may use, with the default of each, and the
//! per-connection rate limiter that enforces `messages_per_second`.
//!
//! Each limit ends in a typed `error` reply or a close code with a reason (docs/websocket.md,
//! "Limits"); none ends in a panic or a lost order.

use std::time::{Duration, Instant};

/// Limits of the WebSocket front; defaults in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsLimits {
    /// Largest client message and frame, in bytes [1 MiB]; larger: close 1009.
    pub max_message_size: usize,
    /// Subscriptions one connection may hold, and channels one request may list [64]; more:
    /// `error` `too_many_subscriptions` (or `invalid_request` on `channels`).
    pub max_subscriptions: usize,
    /// Sustained client messages per second [50]; faster: `error` `rate_limited`.
    pub messages_per_second: u32,
    /// Messages a client may send at once above the sustained rate [100].
    pub burst: u32,
    /// Rate-limited messages within `rate_limit_window` that close the connection with 1008
    /// [100].
    pub rate_limit_close_after: u32,
    /// [10 s].
    pub rate_limit_window: Duration,
    /// Open WebSocket connections per server [10,000]; more: HTTP 503 before the upgrade.
    pub max_connections: usize,
    /// How often the server pings each connection [20 s].
    pub ping_interval: Duration,
    /// Pings in a row without a pong that close the connection with 1008 [2].
    pub max_missed_pongs: u32,
    /// Time without a text or binary client message that closes the connection with 1001
    /// [120 s].
    pub idle_timeout: Duration,
    /// The server's own messages (replies, errors, pings) queued for one connection's writer
    /// [1,024]; the writer takes from the queue only while the socket keeps up, so a client
    /// that does not read makes its session wait (up to `write_timeout`). Market data does not
    /// queue here: it waits in the feeds hub's rings, where the slow-subscriber policies act;
    /// the engine never waits.
    pub outbound_queue: usize,
    /// How long a write to a client may stall before the connection is dropped [10 s].
    pub write_timeout: Duration,
    /// How long the server waits for the client's close frame after sending its own [2 s].
    pub close_timeout: Duration,
    /// What the server reads and drops of a client's data while it waits for that close frame
    /// (the rest of a message too big to take, say) [4 MiB]; then the connection is dropped.
    pub close_drain_bytes: usize,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            max_message_size: 1 << 20,
            max_subscriptions: 64,
            messages_per_second: 50,
            burst: 100,
            rate_limit_close_after: 100,
            rate_limit_window: Duration::from_secs(10),
            max_connections: 10_000,
            ping_interval: Duration::from_secs(20),
            max_missed_pongs: 2,
            idle_timeout: Duration::from_secs(120),
            outbound_queue: 1024,
            write_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            close_drain_bytes: 4 << 20,
        }
    }
}

/// What the rate limiter decided about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Allowed,
    /// Over the rate: answer `rate_limited`, do not execute.
    Limited,
    /// Over the rate too often within the window: close with 1008.
    Abusive {
        limited: u32,
    },
}

/// A token bucket of `burst` tokens refilled at `messages_per_second`, kept as a theoretical
/// arrival time in integer nanoseconds (GCRA: no floating point, no refill timer), plus a
/// count of refused messages per fixed window for the abuse rule.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// Nanoseconds one message costs.
    interval: u128,
    /// How far ahead of now the theoretical arrival time may run: the burst.
    tolerance: u128,
    start: Instant,
    /// Theoretical arrival time of the next message, ns after `start`.
    tat: u128,
    close_after: u32,
    window: Duration,
    window_start: Instant,
    limited_in_window: u32,
}

impl RateLimiter {
    pub fn new(limits: &WsLimits, now: Instant) -> Self {
        let interval = 1_000_000_000u128 / u128::from(limits.messages_per_second.max(1));
        RateLimiter {
            interval,
            tolerance: interval * u128::from(limits.burst.max(1) - 1),
            start: now,
            tat: 0,
            close_after: limits.rate_limit_close_after,
            window: limits.rate_limit_window,
            window_start: now,
            limited_in_window: 0,
        }
    }

    /// Accounts for one message arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Rate {
        let t = now.saturating_duration_since(self.start).as_nanos();
        if t + self.tolerance >= self.tat {
            self.tat = self.tat.max(t) + self.interval;
            return Rate::Allowed;
        }
        if now.saturating_duration_since(self.window_start) >= self.window {
            self.window_start = now;
            self.limited_in_window = 0;
        }
        self.limited_in_window += 1;
        if self.limited_in_window > self.close_after {
            Rate::Abusive {
                limited: self.limited_in_window,
            }
        } else {
            Rate::Limited
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, burst: u32, close_after: u32) -> WsLimits {
        WsLimits {
            messages_per_second: rate,
            burst,
            rate_limit_close_after: close_after,
            ..WsLimits::default()
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(&limits(10, 3, 100), t0);
        for _ in 0..3 {
            assert_eq!(r.check(t0), Rate::Allowed);
        }
        assert_eq!(r.check(t0), Rate::Limited);
        // One message costs 100 ms at 10/s: after 100 ms exactly one more passes.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.check(t1), Rate::Allowed);
        assert_eq!(r.check(t1), Rate::Limited);
        // After a long pause the whole burst is back, and no more.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(r.check(t2), Rate::Allowed);
        }
        assert_eq!(r.check(t2), Rate::Limited);
    }

    #[test]
    fn a_steady_client_at_the_rate_is_never_limited() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(&limits(50, 1, 100), t0);
        for i in 0..1000u64 {
            let t = t0 + Duration::from_millis(20 * i);
            assert_eq!(r.check(t), Rate::Allowed, "message {i}");
        }
    }

    #[test]
    fn too_many_refusals_within_the_window_are_abusive() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(&limits(1, 1, 2), t0);
        assert_eq!(r.check(t0), Rate::Allowed);
        assert_eq!(r.check(t0), Rate::Limited);
        assert_eq!(r.check(t0), Rate::Limited);
        assert_eq!(r.check(t0), Rate::Abusive { limited: 3 });
        // A new window forgets the old refusals.
        let later = t0 + Duration::from_secs(11) + Duration::from_millis(1);
        assert_eq!(r.check(later), Rate::Allowed);
        assert_eq!(r.check(later), Rate::Limited);
    }
}
