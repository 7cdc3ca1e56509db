//! When an agent dials the edge again after losing it: exponential backoff with full
//! jitter (a random delay between zero and the bound), so a fleet of agents that lost
//! their edge together does not come back in one wave. The randomness is passed in.

use std::time::Duration;

/// The delays between an agent's attempts to reach the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Bounds that start at `first` and double up to `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max: max.max(first),
            failures: 0,
        }
    }

    /// The bound after the failures so far: `first * 2^failures`, at most `max`.
    pub fn bound(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }

    /// One more failed attempt: how long to wait before the next, drawn from `random`
    /// (any `u64`; uniform gives the full jitter).
    pub fn failed(&mut self, random: u64) -> Duration {
        let bound = self.bound();
        self.failures = self.failures.saturating_add(1);
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(random % nanos.saturating_add(1))
    }

    /// The link is up: the next loss starts from `first` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_bound_doubles_up_to_the_cap_and_a_link_resets_it() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let bounds: Vec<_> = (0..10)
            .map(|_| {
                let bound = b.bound();
                b.failed(u64::MAX);
                bound.as_millis()
            })
            .collect();
        assert_eq!(
            bounds,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        b.reset();
        assert_eq!(b.bound(), Duration::from_millis(250));
        // Full jitter: zero is a possible delay, the bound the largest.
        assert_eq!(b.failed(0), Duration::ZERO);
    }

    proptest! {
        #[test]
        fn a_delay_never_exceeds_its_bound(random in any::<u64>(), failures in 0u32..200) {
            let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(60));
            for _ in 0..failures {
                b.failed(random);
            }
            let bound = b.bound();
            prop_assert!(b.failed(random) <= bound);
            prop_assert!(bound <= Duration::from_secs(60));
        }
    }
}
