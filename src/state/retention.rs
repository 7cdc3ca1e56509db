//! Which finished jobs are forgotten: those beyond the newest `keep_finished`, and those
//! finished longer ago than `keep_for`. Pure, with the time passed in; the backends
//! delete what it returns.

use std::time::Duration;

use super::lease::Millis;

/// How finished jobs are kept (`state.keep_finished`, `state.keep_for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_finished: usize,
    pub keep_for: Duration,
}

/// The finished jobs to forget now, of `finished` (id and end time, newest first).
pub fn expired(finished: &[(String, Millis)], keep: Retention, now: Millis) -> Vec<&str> {
    let age = i64::try_from(keep.keep_for.as_millis()).unwrap_or(i64::MAX);
    let oldest_kept = now.saturating_sub(age);
    finished
        .iter()
        .enumerate()
        .filter(|(i, (_, at))| *i >= keep.keep_finished || *at < oldest_kept)
        .map(|(_, (id, _))| id.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(ends: &[Millis]) -> Vec<(String, Millis)> {
        ends.iter().map(|t| (format!("j{t}"), *t)).collect()
    }

    #[test]
    fn the_newest_are_kept_by_count() {
        let keep = Retention {
            keep_finished: 2,
            keep_for: Duration::from_secs(3600),
        };
        assert_eq!(expired(&jobs(&[30, 20, 10]), keep, 40), vec!["j10"]);
        assert!(expired(&jobs(&[30, 20]), keep, 40).is_empty());
    }

    #[test]
    fn old_ones_go_by_age_even_under_the_count() {
        let keep = Retention {
            keep_finished: 100,
            keep_for: Duration::from_secs(1),
        };
        assert_eq!(
            expired(&jobs(&[5_000, 3_999, 1]), keep, 5_000),
            vec!["j3999", "j1"]
        );
        // Exactly as old as allowed is kept.
        assert!(expired(&jobs(&[4_000]), keep, 5_000).is_empty());
    }

    #[test]
    fn a_clock_far_off_does_not_overflow() {
        let keep = Retention {
            keep_finished: 1,
            keep_for: Duration::MAX,
        };
        assert!(expired(&jobs(&[i64::MIN + 1]), keep, i64::MIN).is_empty());
    }
}
