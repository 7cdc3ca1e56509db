//! Who may run a job, decided with the time passed in: a job is claimed with a lease its
//! runner renews; a lease that ran out (its instance was killed or cut off) lets another
//! instance take the job over. Pure; the backends' SQL says the same in its `WHERE`.

use super::Phase;

/// Milliseconds since the Unix epoch: the stores' clock.
pub type Millis = i64;

/// Whether an instance may claim a job now: a queued job, one interrupted by a shutdown
/// (it goes on from where it was), or a running one whose lease ran out.
pub fn claimable(phase: Phase, lease_until: Option<Millis>, now: Millis) -> bool {
    match phase {
        Phase::Queued | Phase::Interrupted => true,
        Phase::Running => lease_until.is_none_or(|until| until <= now),
        Phase::Done | Phase::Failed | Phase::Cancelled => false,
    }
}

/// What a runner's renewal finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Still this runner's: the lease is extended and the progress written.
    Kept,
    /// Cancelled (through any instance): the runner stops the job.
    Cancelled,
    /// Another instance took it over (this one's lease ran out), or it is gone: the
    /// runner stops without writing anything more.
    Lost,
}

/// The renewal of `me`'s claim on a job now `phase`, owned by `owner`.
pub fn renewal(phase: Phase, owner: Option<&str>, me: &str) -> Renewal {
    match phase {
        Phase::Running if owner == Some(me) => Renewal::Kept,
        Phase::Cancelled if owner == Some(me) => Renewal::Cancelled,
        _ => Renewal::Lost,
    }
}

/// How often a runner renews a lease of `lease` (and writes the job's progress, and
/// hears of a cancel through another instance): every second, so a cancel through any
/// instance stops the job within one, and at least five times a lease, so a store that
/// is slow for a moment does not cost the job.
pub fn renew_every(lease: std::time::Duration) -> std::time::Duration {
    (lease / 5).min(std::time::Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_and_interrupted_jobs_are_claimable_finished_ones_never() {
        for p in [Phase::Queued, Phase::Interrupted] {
            assert!(claimable(p, None, 0));
            assert!(claimable(p, Some(i64::MAX), 0));
        }
        for p in [Phase::Done, Phase::Failed, Phase::Cancelled] {
            assert!(!claimable(p, None, i64::MAX));
        }
    }

    #[test]
    fn a_running_job_is_taken_over_only_once_its_lease_ran_out() {
        assert!(!claimable(Phase::Running, Some(1_000), 999));
        assert!(claimable(Phase::Running, Some(1_000), 1_000));
        assert!(claimable(Phase::Running, Some(1_000), 5_000));
        // A lease never written (a row from a crash mid-claim) does not hold the job.
        assert!(claimable(Phase::Running, None, 0));
    }

    #[test]
    fn only_the_owner_keeps_its_claim() {
        assert_eq!(renewal(Phase::Running, Some("a"), "a"), Renewal::Kept);
        assert_eq!(renewal(Phase::Running, Some("b"), "a"), Renewal::Lost);
        assert_eq!(
            renewal(Phase::Cancelled, Some("a"), "a"),
            Renewal::Cancelled
        );
        // Cancelled after another instance took it over: not this runner's to stop.
        assert_eq!(renewal(Phase::Cancelled, Some("b"), "a"), Renewal::Lost);
        assert_eq!(renewal(Phase::Queued, None, "a"), Renewal::Lost);
        assert_eq!(renewal(Phase::Done, Some("a"), "a"), Renewal::Lost);
    }

    #[test]
    fn renewals_come_five_times_a_lease_and_at_least_each_second() {
        use std::time::Duration;
        assert_eq!(renew_every(Duration::from_secs(15)), Duration::from_secs(1));
        assert_eq!(
            renew_every(Duration::from_secs(2)),
            Duration::from_millis(400)
        );
    }
}
