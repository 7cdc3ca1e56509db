//! The state store: what outlives the process and is shared by a fleet (FXP jobs, with
//! their URLs' credentials sealed; bans). One small trait, [`Store`], with two backends:
//! SQLite ([`sqlite`], the embedded default, one file or memory) and PostgreSQL
//! ([`postgres`], for N instances). The decisions are pure and tested with the time
//! passed in: who may claim a job ([`lease`]), which finished jobs are forgotten
//! ([`retention`]), which schema migrations to run ([`migrate`]); the backends only say
//! them in SQL. [`seal`] seals the credentials.
//!
//! The store knows rows, not jobs: a job's options and progress are JSON the front end
//! ([`crate::fxp::jobs`]) writes and reads, so this module imports nothing of `fxp`.

pub mod lease;
pub mod migrate;
pub mod postgres;
pub mod retention;
pub mod seal;
pub mod sqlite;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::config::{StateConfig, StoreUrl};
pub use lease::{Millis, Renewal};
pub use retention::Retention;
pub use seal::Sealer;

/// A job's state, as the API names it. `queued` and `running` change; `interrupted`
/// (stopped by a shutdown) runs again at the next start, here or on another instance;
/// the others are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Queued,
    Running,
    Done,
    Failed,
    /// Stopped by `DELETE` (or, for a file of a tree, with its job).
    Cancelled,
    /// Stopped because the proxy shut down (SIGTERM or SIGINT): running ones when
    /// `limits.shutdown_grace` ran out.
    Interrupted,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Queued,
        Phase::Running,
        Phase::Done,
        Phase::Failed,
        Phase::Cancelled,
        Phase::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
            Phase::Interrupted => "interrupted",
        }
    }

    pub fn from_word(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Queued or running: the job may still change.
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Queued | Phase::Running)
    }
}

/// A job as submitted: stored before the API answers `202`.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    /// The URLs with their passwords masked, as the API shows them.
    pub source: String,
    pub destination: String,
    /// The URLs as given (passwords included), sealed ([`Sealer`]).
    pub sealed: Vec<u8>,
    /// JSON of the job's options.
    pub options: String,
    /// JSON of the job's progress as the front end shows it.
    pub progress: String,
    pub submitted: Millis,
}

/// One run of a job: the instance that claimed it, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub instance: String,
    pub at: Millis,
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub source: String,
    pub destination: String,
    pub sealed: Vec<u8>,
    pub options: String,
    pub phase: Phase,
    pub progress: String,
    pub error: Option<String>,
    pub reply_code: Option<u16>,
    pub submitted: Millis,
    pub started: Option<Millis>,
    pub finished: Option<Millis>,
    /// The instance that holds (or last held) the job's lease.
    pub owner: Option<String>,
    pub lease_until: Option<Millis>,
    /// Every claim, oldest first: more than one when the job was resumed or taken over.
    pub runs: Vec<Run>,
}

impl JobRow {
    /// Claims the job for instance `me` at `now` for `lease`, as both backends record it:
    /// `None` when `lease::claimable` says it is not free; else the row as it now stands
    /// (running, owned, a run added) and its runs as the stored JSON.
    pub fn claim(&mut self, me: &str, now: Millis, lease: Millis) -> Option<String> {
        if !lease::claimable(self.phase, self.lease_until, now) {
            return None;
        }
        self.runs.push(Run {
            instance: me.to_owned(),
            at: now,
        });
        self.phase = Phase::Running;
        self.owner = Some(me.to_owned());
        self.lease_until = Some(now.saturating_add(lease));
        self.started = self.started.or(Some(now));
        self.finished = None;
        self.error = None;
        Some(serde_json::to_string(&self.runs).unwrap_or_else(|_| "[]".into()))
    }
}

/// How a run ended, written by the instance that ran it.
#[derive(Debug, Clone)]
pub struct Ending {
    pub phase: Phase,
    pub error: Option<String>,
    pub reply_code: Option<u16>,
    pub progress: String,
    pub at: Millis,
}

/// A ban as stored: every instance applies the bans of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRow {
    /// The ban table (`defense` or a listener's own).
    pub table: String,
    /// The banned key: an address or a network.
    pub key: String,
    /// Until when (Unix milliseconds).
    pub until: Millis,
    /// Why, as the ban's log line said.
    pub reason: String,
    /// Set by [`Store::unban`]: the row stays until `until` so every instance hears of it.
    pub lifted: bool,
    /// When the row last changed: instances read the rows changed since their last look.
    pub changed: Millis,
    /// The instance that wrote it.
    pub by: String,
}

/// Why the store did not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state store ({url}) cannot be reached: {message}")]
    Unreachable { url: String, message: String },
    #[error("the state store ({url}): {message}")]
    Failed { url: String, message: String },
    #[error(transparent)]
    Schema(#[from] migrate::TooNew),
    #[error("a stored row is not readable: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What every backend does. Each call is one transaction; times come in as arguments
/// (the stores keep no clock of their own, so one instance's view of time decides).
pub trait Store: Send + Sync + 'static {
    /// The URL without its password, for errors and logs.
    fn url(&self) -> String;

    /// Stores a new job (queued).
    fn insert_job<'a>(&'a self, job: &'a NewJob) -> BoxFuture<'a, StoreResult<()>>;
    fn job<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<JobRow>>>;
    /// Up to `limit` jobs with an id after `after`, in id order (the order submitted).
    fn jobs<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<JobRow>>>;
    /// Jobs queued or running, in the whole fleet.
    fn active_jobs(&self) -> BoxFuture<'_, StoreResult<usize>>;
    /// Claims the oldest job [`lease::claimable`] now for `me`, until `now + lease`; a
    /// job is never claimed by two instances at once.
    fn claim<'a>(
        &'a self,
        me: &'a str,
        now: Millis,
        lease: Millis,
    ) -> BoxFuture<'a, StoreResult<Option<JobRow>>>;
    /// Extends `me`'s lease on a running job and writes its progress, or says why not
    /// ([`lease::renewal`]).
    fn renew<'a>(
        &'a self,
        id: &'a str,
        me: &'a str,
        now: Millis,
        lease: Millis,
        progress: &'a str,
    ) -> BoxFuture<'a, StoreResult<Renewal>>;
    /// `me`'s run of a job ended: a job still running under `me` takes `end`; one
    /// cancelled meanwhile keeps its state and takes only the progress.
    fn settle<'a>(
        &'a self,
        id: &'a str,
        me: &'a str,
        end: &'a Ending,
    ) -> BoxFuture<'a, StoreResult<()>>;
    /// Cancels a queued, running or interrupted job (its runner, wherever it is, stops
    /// at its next renewal); `None` when there is no such job.
    fn cancel<'a>(&'a self, id: &'a str, now: Millis)
    -> BoxFuture<'a, StoreResult<Option<JobRow>>>;
    /// Marks every queued job interrupted with `error` (a store in memory, at shutdown:
    /// they will never run); returns them.
    fn interrupt_queued<'a>(
        &'a self,
        now: Millis,
        error: &'a str,
    ) -> BoxFuture<'a, StoreResult<Vec<JobRow>>>;
    /// At start: the jobs `me` was running when it last stopped (killed) can be claimed
    /// again at once. Returns how many.
    fn recover<'a>(&'a self, me: &'a str) -> BoxFuture<'a, StoreResult<usize>>;
    /// Forgets finished jobs as [`retention::expired`] says; returns how many.
    fn prune(&self, keep: Retention, now: Millis) -> BoxFuture<'_, StoreResult<usize>>;

    /// Writes a ban (or its lifting) for the fleet.
    fn put_ban<'a>(&'a self, ban: &'a BanRow) -> BoxFuture<'a, StoreResult<()>>;
    /// Bans that changed after `since` and have not run out at `now`, plus liftings.
    fn bans_since(&self, since: Millis, now: Millis) -> BoxFuture<'_, StoreResult<Vec<BanRow>>>;
}

/// Whether the store answered last time it was asked: `/healthz` says why not, and
/// `fxprelay_state_store_up` follows it.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<Option<String>>>);

impl Health {
    /// What a call to the store found: a store that did not answer is down (logged and
    /// counted once, until it answers again).
    pub fn note<T>(&self, result: &StoreResult<T>) {
        let down = match result {
            Ok(_) | Err(StoreError::Corrupt(_) | StoreError::Schema(_)) => None,
            Err(e) => Some(e.to_string()),
        };
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match (&*now, &down) {
            (None, Some(why)) => {
                tracing::warn!(error = %why, "state store unreachable: FTP goes on, new API transfers get 503, running ones write back when it answers");
                crate::metrics::state_store_up(false);
            }
            (Some(_), None) => {
                tracing::info!("state store answers again");
                crate::metrics::state_store_up(true);
            }
            _ => {}
        }
        *now = down;
    }

    /// Why the store is down, if it is.
    pub fn down(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The store this configuration names, opened and migrated, with its sealer.
#[derive(Clone)]
pub struct StateStore {
    pub store: Arc<dyn Store>,
    pub health: Health,
    pub sealer: Arc<Sealer>,
    pub instance: Arc<str>,
    pub lease: Duration,
    pub retention: Retention,
    /// Whether it outlives the process (not `sqlite::memory:`).
    pub durable: bool,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("url", &self.store.url())
            .field("instance", &self.instance)
            .finish()
    }
}

/// Why the store could not be opened at start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Key(#[from] seal::KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StateStore {
    /// Opens the store `cfg` names (migrating its schema) and reads or makes its key.
    pub async fn open(cfg: &StateConfig) -> Result<StateStore, OpenError> {
        let sealer = match &cfg.key_file {
            Some(path) => Sealer::from_file(path)?,
            None => Sealer::ephemeral()?,
        };
        let store: Arc<dyn Store> = match &cfg.url {
            StoreUrl::Memory => Arc::new(sqlite::Sqlite::memory()?),
            StoreUrl::Sqlite(path) => Arc::new(sqlite::Sqlite::open(path)?),
            StoreUrl::Postgres(url) => Arc::new(postgres::Postgres::connect(url).await?),
        };
        Ok(StateStore {
            store,
            health: Health::default(),
            sealer: Arc::new(sealer),
            instance: Arc::from(cfg.instance.as_str()),
            lease: cfg.lease,
            retention: Retention {
                keep_finished: cfg.keep_finished,
                keep_for: cfg.keep_for,
            },
            durable: cfg.url != StoreUrl::Memory,
        })
    }

    /// A store in memory with an ephemeral key: what a configuration without `state:`
    /// gets, and the unit tests.
    pub fn memory() -> StateStore {
        StateStore {
            store: Arc::new(sqlite::Sqlite::memory().expect("SQLite opens in memory")),
            health: Health::default(),
            sealer: Arc::new(Sealer::ephemeral().expect("the system's random generator works")),
            instance: Arc::from("local"),
            lease: Duration::from_secs(15),
            retention: Retention {
                keep_finished: 1000,
                keep_for: Duration::from_secs(7 * 24 * 3600),
            },
            durable: false,
        }
    }
}

/// Now, in the stores' unit.
pub fn now_millis() -> Millis {
    to_millis(SystemTime::now())
}

pub fn to_millis(t: SystemTime) -> Millis {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub fn from_millis(ms: Millis) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// A duration in the stores' unit (saturating).
pub fn millis(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_what_the_store_answered() {
        let h = Health::default();
        assert_eq!(h.down(), None);
        h.note::<()>(&Err(StoreError::Unreachable {
            url: "postgres://fx:***@db/x".into(),
            message: "connection refused".into(),
        }));
        let why = h.down().unwrap();
        assert!(
            why.contains("cannot be reached") && why.contains("***"),
            "{why}"
        );
        // A row it cannot read says nothing of whether the store answers.
        h.note::<()>(&Err(StoreError::Corrupt("x".into())));
        h.note(&Ok(()));
        assert_eq!(h.down(), None);
    }

    #[test]
    fn milliseconds_round_trip_either_side_of_the_epoch() {
        for ms in [0, 1, 1_764_000_000_123, -5_000] {
            assert_eq!(to_millis(from_millis(ms)), ms);
        }
        assert_eq!(millis(Duration::MAX), i64::MAX);
        assert!(
            Phase::ALL
                .iter()
                .all(|p| Phase::from_word(p.as_str()) == Some(*p))
        );
        assert_eq!(Phase::from_word("nonsense"), None);
    }
}
