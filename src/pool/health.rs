//! HAProxy's rise/fall model: a backend changes state only after `rise` consecutive
//! good results (down → up) or `fall` consecutive bad ones (up → down). Results come
//! from the periodic check and, for failures, from real sessions that could not connect
//! (passive ejection). Pure: the checker and the sessions feed it.

/// A state change worth logging and exporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    up: bool,
    /// Consecutive results that disagree with the current state.
    streak: u32,
}

impl Default for Health {
    /// A backend starts up, as in HAProxy: sessions flow from the start, and a dead one is
    /// found within `fall` checks (or `fall` failed sessions).
    fn default() -> Self {
        Health {
            up: true,
            streak: 0,
        }
    }
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records one result; `Some` when it flips the state.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Option<Change> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { fall } else { rise };
        if self.streak < needed.max(1) {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(if ok { Change::Up } else { Change::Down })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_successes() {
        let mut h = Health::default();
        assert!(h.is_up());
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), Some(Change::Down));
        assert!(!h.is_up());
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), Some(Change::Up));
        assert!(h.is_up());
    }

    #[test]
    fn an_interrupted_streak_starts_over() {
        let mut h = Health::default();
        h.record(false, 2, 3);
        h.record(false, 2, 3);
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert!(h.is_up());
        assert_eq!(h.record(false, 2, 3), Some(Change::Down));
    }

    #[test]
    fn one_means_at_once() {
        let mut h = Health::default();
        assert_eq!(h.record(false, 1, 1), Some(Change::Down));
        assert_eq!(h.record(true, 1, 1), Some(Change::Up));
    }
}
