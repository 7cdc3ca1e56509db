//! The tarpit: within one session, failed logins beyond the third are answered late, so
//! a single connection cannot try passwords fast (a ban needs the key's score; the
//! tarpit needs nothing shared, so the session's machine decides it alone).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Failed logins a session may have within the window before its refusals are held.
pub const FREE_FAILURES: usize = 3;
/// How long the first held refusal (the fourth failure) waits; each next one twice as long.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest wait: a client's own timeouts (often 30 s to 60 s) must not run out.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// How long the refusal of the `failures`th failed login (counting this one) waits:
/// nothing up to [`FREE_FAILURES`], then 1 s, 2 s, 4 s, and 5 s from then on.
pub fn delay(failures: usize) -> Duration {
    let Some(beyond) = failures.checked_sub(FREE_FAILURES + 1) else {
        return Duration::ZERO;
    };
    let factor = 1u32.checked_shl(beyond.min(31) as u32).unwrap_or(u32::MAX);
    FIRST_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

/// One session's failed logins within the window.
#[derive(Debug, Default)]
pub struct Tarpit {
    failures: VecDeque<Instant>,
}

impl Tarpit {
    /// A login failed at `now`: how long its refusal must wait, counting the failures
    /// of the last `window`.
    pub fn failed(&mut self, now: Instant, window: Duration) -> Duration {
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.failures.pop_front();
        }
        // Bounded: beyond the point where the delay stops growing, the count changes nothing.
        if self.failures.len() > FREE_FAILURES + 8 {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        delay(self.failures.len())
    }
}
