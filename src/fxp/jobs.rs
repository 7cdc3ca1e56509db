//! FXP transfers ordered over the admin HTTP API: jobs kept in the state store
//! ([`crate::state`]), run by whichever instance claims them, with the state the API
//! reports. A job is committed to the store before the API answers `202`; its URLs are
//! stored sealed (their passwords never in clear) and opened only by the task that runs
//! it; everything the API shows is redacted.
//!
//! This instance's scheduler claims jobs while it has free slots (`fxp.concurrency`):
//! queued ones, those a shutdown interrupted, and those whose runner's lease ran out
//! (killed, cut off), which go on from where the destination file ends (`REST`). A
//! job's task folds the events of [`runner::run`] into the job's [`JobState`], behind a
//! lock of its own, and renews its lease with the progress at a bounded rate (every
//! [`lease::renew_every`]); a renewal that finds the job cancelled (through any
//! instance) stops it. A `GET` reads the store, and shows a job running here with its
//! live progress. The JSON a job shows is [`JobView`]; `src/openapi.json` describes it
//! (a test holds the two together). Once a job ends its view's counts are fixed and a
//! tree's records cut to [`MAX_FILE_RECORDS`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, warn};

use futures_util::StreamExt;

use super::client::ExtraRoots;
use super::engine::{self, Check};
use super::job::event::{JobEvent, StopReason, bounded};
use super::job::plan::Plan;
use super::job::{EntryState, JobState, Order, Status, Totals};
pub use super::job_id::{BadJobId, JobId};
use super::method::Method;
pub use super::options::{MAX_RETRIES, TransferOptions};
use super::render;
use super::runner;
use super::url::FtpUrl;
use crate::agent::Hub;
use crate::metrics;
use crate::net::{AllowList, OwnSockets};
use crate::state::{
    Ending, JobRow, NewJob, Renewal, StateStore, StoreError, from_millis, lease, millis, now_millis,
};
use crate::tls::CaBundles;

/// What a client posts to `POST /api/v1/transfers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub source: String,
    pub destination: String,
    /// Every `fxprelay fxp` flag, by its long name with `_` for `-`.
    #[serde(default)]
    pub options: TransferOptions,
}

/// Longest URL a job may name. Paths and host names fit easily (Linux's PATH_MAX is 4096
/// bytes); what a job holds stays small: about 4 KiB per URL, kept twice (as parsed and as
/// shown), plus at most [`MAX_ERROR`] of error text and [`MAX_FILE_RECORDS`] per-file
/// results of at most [`MAX_FILE_TEXT`] each, so the store's [`MAX_ACTIVE`] jobs and
/// `state.keep_finished` ones stay bounded.
pub const MAX_URL: usize = 4096;
/// Longest error text a job keeps (servers' replies can be long).
pub const MAX_ERROR: usize = 2048;
/// Per-file results a finished tree keeps (failures first); a running tree holds one
/// record per file it lists (at most the tree walk's bound).
pub const MAX_FILE_RECORDS: usize = 200;
/// Longest URL or error text a per-file result keeps.
pub const MAX_FILE_TEXT: usize = 1024;
/// `GET /api/v1/transfers` pages: the default and the largest `limit`.
pub const PAGE_DEFAULT: usize = 100;
pub const PAGE_MAX: usize = 1000;
/// Queued and running jobs at most (in the whole fleet): a flood of submissions is
/// refused rather than stored without bound. Queued jobs live in the store, not in
/// tasks: a queued file job is a row of about 1 KiB (10,000 are about 10 MiB even with
/// the store in memory; `scripts/bench-state.sh` measures them). Finished jobs are kept
/// as `state.keep_finished` and `state.keep_for` say.
pub const MAX_ACTIVE: usize = 10_000;
/// How often the scheduler looks for jobs it did not hear of (submitted through another
/// instance, or whose runner's lease ran out) when nothing woke it.
const POLL: Duration = Duration::from_secs(1);
/// How often finished jobs beyond `state.keep_finished` and `state.keep_for` are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// A job's (or one of its files') state, as the store keeps it.
pub use crate::state::Phase as State;

/// A job as the API shows it (`GET /api/v1/transfers/{id}`; the list leaves out `files`).
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: JobId,
    /// The URLs with their passwords masked.
    pub source: String,
    pub destination: String,
    pub state: State,
    /// The options in effect (the request's, defaults filled in).
    pub options: TransferOptions,
    /// `fxp`, `reverse_fxp`, `relay`, ... once known: the method being tried or used;
    /// for a tree, the one most of its files used.
    pub method: Option<&'static str>,
    /// Bytes at the destination so far: exact once a file is done, else as last polled
    /// (`SIZE` every 250 ms during FXP) or counted (relay). For a cancelled job, what had
    /// moved when it was stopped.
    pub bytes_done: u64,
    /// The source's size (a tree's: the sum, once every file's size is known).
    pub bytes_total: Option<u64>,
    /// Bytes that crossed the proxy (0 for FXP).
    pub relayed_bytes: u64,
    /// `bytes_done` over the time since the job started.
    pub rate_bytes_per_second: Option<f64>,
    /// While running, with `bytes_total` known and a rate: the time left at that rate.
    pub eta_seconds: Option<f64>,
    /// How the copies were checked: a file's check; for a tree the weakest any of its
    /// copied files had (`none` < `size` < crc32 < md5 < sha-1 < sha-256 < sha-512).
    pub verified: Option<Check>,
    pub files_done: usize,
    pub files_failed: usize,
    /// 1 for a file; a tree's file count once it is listed.
    pub files_total: Option<usize>,
    /// A tree's files, in the order listed (a finished tree keeps at most
    /// [`MAX_FILE_RECORDS`], failures first; `files_omitted` counts the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_omitted: Option<usize>,
    /// RFC 3339 (UTC) times.
    pub submitted_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Seconds from start to end (or to now, while running).
    pub seconds: Option<f64>,
    /// The servers' own words when something failed.
    pub error: Option<String>,
    /// The reply code behind `error`, when a server refused something.
    pub reply_code: Option<u16>,
    /// The instance (`state.instance`) running the job, or that last ran it.
    pub instance: Option<String>,
    /// Every start of the job, oldest first: more than one when it was resumed after a
    /// restart or taken over from an instance that stopped renewing its lease.
    pub runs: Vec<RunView>,
}

/// One start of a job.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub instance: String,
    /// RFC 3339 (UTC).
    pub started_at: String,
}

/// One file of a tree job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileView {
    pub source: String,
    pub destination: String,
    pub state: State,
    pub method: Option<Method>,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    /// How the copy was checked once done: `sha-256` (or another hash), `size`, `none`.
    pub verified: Option<Check>,
    pub error: Option<String>,
    pub reply_code: Option<u16>,
}

impl FileView {
    /// A file of the job's state, as the API shows it (texts bounded).
    fn of(e: &EntryState) -> FileView {
        FileView {
            source: bounded(e.plan.src.clone(), MAX_FILE_TEXT),
            destination: bounded(e.plan.dst.clone(), MAX_FILE_TEXT),
            state: State::of(e.status),
            method: e.method,
            verified: e.report.as_ref().map(|r| r.verified),
            bytes_done: e.done,
            bytes_total: e.total,
            error: e
                .error
                .as_ref()
                .map(|f| bounded(f.message.clone(), MAX_FILE_TEXT)),
            reply_code: e.error.as_ref().and_then(|f| f.code),
        }
    }
}

impl State {
    /// A file's state from its entry's.
    pub fn of(status: Status) -> State {
        match status {
            Status::Queued => State::Queued,
            Status::Running => State::Running,
            Status::Copied | Status::Created | Status::Deleted | Status::Skipped => State::Done,
            Status::Failed => State::Failed,
            Status::Stopped(StopReason::Cancelled) => State::Cancelled,
            Status::Stopped(StopReason::Interrupted) => State::Interrupted,
        }
    }
}

/// Why a submission was refused: what the API answers (`code` is the stable name).
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{field}: {message}")]
    BadRequest {
        field: &'static str,
        message: String,
    },
    /// A server outside `fxp.allow`, or the proxy itself.
    #[error("{0}")]
    Forbidden(String),
    /// The proxy is shutting down: it starts no new transfer.
    #[error("{0}")]
    ShuttingDown(String),
    /// An option the configuration does not permit (`allow_clear_data`, `insecure`).
    #[error("{0}")]
    NotPermitted(String),
    /// [`MAX_ACTIVE`] jobs are queued or running already.
    #[error("{0}")]
    TooMany(String),
    /// The state store does not answer: the job could not be committed.
    #[error("{0}")]
    Unavailable(String),
}

/// A job's progress: its [`JobState`] while it runs, what its view keeps once it has
/// ended. Behind its own lock, so progress never waits for the registry's.
#[derive(Debug, Default)]
struct Record {
    state: JobState,
    /// Set once the job has ended: the view's counts and records as they were then
    /// (what arrives afterwards is not applied).
    sealed: Option<Snapshot>,
}

/// A job's progress as the view shows it, and as the store keeps it (JSON): counts,
/// and a tree's records (an ended one's cut to [`MAX_FILE_RECORDS`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Snapshot {
    counts: Counts,
    files: Vec<FileView>,
    omitted: usize,
}

/// What a job's view shows of its [`Totals`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Counts {
    bytes_done: u64,
    bytes_total: Option<u64>,
    relayed_bytes: u64,
    files_done: usize,
    files_failed: usize,
    files_total: Option<usize>,
    method: Option<Method>,
    verified: Option<Check>,
}

impl From<Totals> for Counts {
    fn from(t: Totals) -> Counts {
        Counts {
            bytes_done: t.bytes_done,
            bytes_total: t.bytes_total,
            relayed_bytes: t.relayed_bytes,
            files_done: t.files_copied,
            files_failed: t.files_failed,
            files_total: t.files_total,
            method: t.method,
            verified: t.weakest_check,
        }
    }
}

impl Record {
    /// The counts, and a tree's file records, now.
    fn view(&self) -> Snapshot {
        match &self.sealed {
            Some(s) => s.clone(),
            None => Snapshot {
                counts: self.state.totals().into(),
                files: self.state.files().map(FileView::of).collect(),
                omitted: 0,
            },
        }
    }

    /// The job has ended: the counts are fixed and a tree's records cut down.
    fn seal(&mut self) {
        if self.sealed.is_some() {
            return;
        }
        let files: Vec<FileView> = self.state.files().map(FileView::of).collect();
        let (files, omitted) = kept_records(&files);
        self.sealed = Some(Snapshot {
            counts: self.state.totals().into(),
            files,
            omitted,
        });
        // The view keeps what it shows; the entries (up to the walk's bound) go.
        self.state = JobState::default();
    }
}

/// Shared handle on a job's [`Record`], which its task feeds.
#[derive(Clone, Default)]
struct Watch(Arc<Mutex<Record>>);

impl Watch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One event of the job's run (ignored once the job has ended).
    fn apply(&self, e: &JobEvent) {
        let mut r = self.lock();
        if r.sealed.is_none() {
            r.state.apply(e);
        }
    }

    /// The progress as the store keeps it.
    fn json(&self) -> String {
        progress_json(&self.lock().view())
    }
}

fn progress_json(s: &Snapshot) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "{}".into())
}

/// What a finished tree keeps of its records: failures first, then the others in order,
/// at most [`MAX_FILE_RECORDS`]; and how many were left out.
fn kept_records(files: &[FileView]) -> (Vec<FileView>, usize) {
    let failed = files.iter().filter(|f| f.state == State::Failed);
    let others = files.iter().filter(|f| f.state != State::Failed);
    let kept: Vec<FileView> = failed
        .chain(others)
        .take(MAX_FILE_RECORDS)
        .cloned()
        .collect();
    let omitted = files.len() - kept.len();
    (kept, omitted)
}

/// RFC 3339, UTC, to the millisecond: `2026-12-02T01:37:38.123Z`.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The URLs as the caller gave them (passwords included): what is sealed in the store.
#[derive(Serialize, Deserialize)]
struct Urls {
    source: String,
    destination: String,
}

/// What a run here decides a job's record says, until the store has it: how it ended
/// (a cancel or a shutdown stops it before the engine has), and when.
#[derive(Debug, Clone)]
struct LocalEnd {
    state: State,
    error: Option<String>,
    at: SystemTime,
}

/// A job this instance runs.
struct Local {
    watch: Watch,
    options: TransferOptions,
    started: Instant,
    /// The task (a cancel aborts it at once).
    abort: Option<AbortHandle>,
    /// Stops the engine cleanly (`ABOR` to both servers): how a shutdown ends a running
    /// job, while a cancel drops it at once.
    stop: CancellationToken,
    /// Set when a cancel or the shutdown ended it here.
    ended: Option<LocalEnd>,
}

impl Local {
    /// A cancel or the shutdown ended it here (the first of them is what the record
    /// says, and what is counted).
    fn stopped(&mut self, how: State, error: Option<String>) {
        if self.ended.is_some() {
            return;
        }
        self.ended = Some(LocalEnd {
            state: how,
            error,
            at: SystemTime::now(),
        });
        count_stopped(self, how);
    }
}

/// This instance's side of the jobs: the ones it runs, and whether it still takes any.
#[derive(Default)]
struct Registry {
    running: BTreeMap<JobId, Local>,
    /// Shutdown has begun: no job is submitted or claimed any more.
    draining: bool,
}

/// The jobs: the state store, and this instance's scheduler and runs.
#[derive(Clone)]
pub struct Jobs {
    store: StateStore,
    reg: Arc<Mutex<Registry>>,
    slots: Arc<Semaphore>,
    /// Every job's task (and the scheduler), so a shutdown can wait for them to end.
    tasks: TaskTracker,
    /// Wakes the scheduler: a job was submitted here, or a slot came free.
    wake: Arc<Notify>,
    /// The scheduler runs (started once, by [`Jobs::start`] or the first submission).
    scheduling: Arc<AtomicBool>,
    /// `fxp.allow` and `fxp.concurrency` as last loaded; a reload replaces them.
    settings: Arc<RwLock<Settings>>,
    /// What callers may ask for, as last loaded.
    permits: Arc<RwLock<Permits>>,
}

/// The options a caller may use only as far as the operator allows (`fxp:` keys): FXP
/// with clear data, no certificate check, and which CA bundles may be named.
#[derive(Debug, Clone, Default)]
pub struct Permits {
    pub allow_clear_data: bool,
    pub allow_insecure: bool,
    pub ca_bundles: CaBundles,
}

struct Settings {
    allow: Arc<AllowList>,
    concurrency: usize,
    /// The proxy's own sockets, which no job may reach.
    own: Option<Arc<OwnSockets>>,
    /// The edge's agent links, for URLs naming `?via=AGENT`.
    agents: Option<Arc<Hub>>,
}

/// The options a job runs with when it starts again (after a restart, a shutdown or a
/// takeover): a file goes on from where the destination's copy ends (`REST`, when both
/// servers offer it; else from the start), and a file the destination already has whole
/// (the earlier run copied it, then stopped before it could say so) is left as it is,
/// for a tree each of its files: none is copied twice from the start.
pub fn resumed(options: &TransferOptions, earlier_runs: usize) -> TransferOptions {
    let mut o = options.clone();
    if earlier_runs > 0 {
        o.resume = true;
        o.skip_existing = true;
    }
    o
}

impl Jobs {
    /// Jobs in memory (nothing outlives the process): a configuration without `state:`,
    /// and tests. `allow` is the top-level `fxp.allow` list: the only servers jobs may
    /// reach.
    pub fn new(allow: AllowList, concurrency: usize) -> Jobs {
        Jobs::with_store(allow, concurrency, StateStore::memory())
    }

    /// Jobs kept in `store`.
    pub fn with_store(allow: AllowList, concurrency: usize, store: StateStore) -> Jobs {
        Jobs {
            store,
            reg: Arc::default(),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            tasks: TaskTracker::new(),
            wake: Arc::default(),
            scheduling: Arc::default(),
            settings: Arc::new(RwLock::new(Settings {
                allow: Arc::new(allow),
                concurrency: concurrency.max(1),
                own: None,
                agents: None,
            })),
            permits: Arc::default(),
        }
    }

    /// The store the jobs are kept in.
    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// Starts the scheduler (once): the jobs this instance was running when it was
    /// killed are claimable again at once, then queued, interrupted and abandoned jobs
    /// run as slots come free. Call it once the permits and the guard are set.
    pub fn start(&self) {
        if self.scheduling.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        self.tasks.spawn(async move {
            match me.store.store.recover(&me.store.instance).await {
                Ok(0) => {}
                Ok(n) => {
                    info!(
                        jobs = n,
                        "resuming the transfers this instance was running when it stopped"
                    )
                }
                Err(e) => warn!(error = %e, "cannot look for this instance's unfinished transfers"),
            }
            me.schedule().await;
        });
    }

    /// Claims jobs while slots are free, until shutdown.
    async fn schedule(self) {
        let lease = millis(self.store.lease);
        let mut pruned = Instant::now();
        let mut store_down = false;
        loop {
            if self.lock().draining {
                break;
            }
            while let Ok(slot) = self.slots.clone().try_acquire_owned() {
                if self.lock().draining {
                    break;
                }
                let claimed = self
                    .store
                    .store
                    .claim(&self.store.instance, now_millis(), lease)
                    .await;
                self.store.health.note(&claimed);
                match claimed {
                    Ok(Some(row)) => {
                        store_down = false;
                        self.launch(row, slot);
                    }
                    Ok(None) => {
                        store_down = false;
                        break;
                    }
                    Err(e) => {
                        if !store_down {
                            warn!(error = %e, "cannot claim transfers; the running ones go on");
                        }
                        store_down = true;
                        break;
                    }
                }
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = Instant::now();
                if let Err(e) = self
                    .store
                    .store
                    .prune(self.store.retention, now_millis())
                    .await
                {
                    warn!(error = %e, "cannot forget old finished transfers");
                }
            }
            let _ = tokio::time::timeout(POLL, self.wake.notified()).await;
        }
        if !self.store.durable {
            self.interrupt_queued().await;
        }
    }

    /// Runs a job this instance has just claimed, on `slot`.
    fn launch(&self, row: JobRow, slot: OwnedSemaphorePermit) {
        let Ok(id) = row.id.parse::<JobId>() else {
            warn!(id = %row.id, "a stored transfer's id is not one; left alone");
            return;
        };
        let span = tracing::info_span!("fxp_job", %id);
        let prepared = span.in_scope(|| self.prepare(&row));
        let (order, opts, options) = match prepared {
            Ok(p) => p,
            Err(why) => {
                span.in_scope(|| warn!(error = %why, "transfer failed before it started"));
                let me = self.clone();
                let progress = row.progress.clone();
                self.tasks.spawn(async move {
                    let _slot = slot;
                    let end = Ending {
                        phase: State::Failed,
                        error: Some(bounded(why, MAX_ERROR)),
                        reply_code: None,
                        progress,
                        at: now_millis(),
                    };
                    me.write_end(id, &end).await;
                });
                return;
            }
        };
        let watch = Watch::default();
        if !options.recursive {
            // A file's plan is known before it runs; a tree's comes once listed.
            if let Order::File { src, dst, .. } = &order {
                watch.apply(&JobEvent::Planned(Plan::file(src, dst).outline()));
            }
        }
        let stop = opts.cancel.clone().unwrap_or_default();
        let me = self.clone();
        let task_watch = watch.clone();
        let resumed_run = row.runs.len() > 1;
        // Spawned with the registry locked: the task's record (and its abort handle) is
        // in place before it can run, so a cancel at any moment reaches it.
        let mut reg = self.lock();
        let task = self.tasks.spawn(
            async move {
                let _slot = slot;
                if resumed_run {
                    info!(source = %row.source, destination = %row.destination, "transfer resumed");
                } else {
                    info!(source = %row.source, destination = %row.destination, "transfer started");
                }
                me.run(id, order, opts, task_watch).await;
                me.wake.notify_one();
            }
            .instrument(span),
        );
        reg.running.insert(
            id,
            Local {
                watch,
                options,
                started: Instant::now(),
                abort: Some(task.abort_handle()),
                stop,
                ended: None,
            },
        );
    }

    /// The order and engine options of a claimed job, from its row (the URLs unsealed).
    fn prepare(
        &self,
        row: &JobRow,
    ) -> Result<(Order, engine::EngineOptions, TransferOptions), String> {
        let plain = self
            .store
            .sealer
            .open(&row.id, &row.sealed)
            .map_err(|e| e.to_string())?;
        let urls: Urls = serde_json::from_slice(&plain).map_err(|e| format!("stored URLs: {e}"))?;
        let options: TransferOptions =
            serde_json::from_str(&row.options).map_err(|e| format!("stored options: {e}"))?;
        let src = FtpUrl::parse(&urls.source).map_err(|e| format!("source: {e}"))?;
        let dst = FtpUrl::parse(&urls.destination).map_err(|e| format!("destination: {e}"))?;
        for url in [&src, &dst] {
            self.check_literal(url).map_err(|e| e.to_string())?;
        }
        let ca = self.trust(&options).map_err(|e| e.to_string())?;
        let run = resumed(&options, row.runs.len().saturating_sub(1));
        let order = if run.recursive {
            Order::Tree {
                src,
                dst,
                mirror: run.mirror(),
            }
        } else {
            Order::File {
                src,
                dst,
                skip_existing: run.skip_existing,
            }
        };
        let opts = engine::EngineOptions {
            allow: Some(self.allow()),
            own: self.own(),
            agents: self.agents(),
            cancel: Some(CancellationToken::new()),
            ..run.engine(ca)
        };
        Ok((order, opts, options))
    }

    /// Drives a job's events into its watch, renewing its lease with the progress; then
    /// writes how it ended.
    async fn run(&self, id: JobId, order: Order, opts: engine::EngineOptions, watch: Watch) {
        let lease = self.store.lease;
        let mut renew = tokio::time::interval(lease::renew_every(lease));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        let mut events = runner::run(order, opts);
        let mut store_down = false;
        loop {
            tokio::select! {
                e = events.next() => match e {
                    Some(e) => watch.apply(&e),
                    None => break,
                },
                _ = renew.tick() => {
                    let renewal = self.store.store.renew(
                        &id.to_string(),
                        &self.store.instance,
                        now_millis(),
                        millis(lease),
                        &watch.json(),
                    ).await;
                    self.store.health.note(&renewal);
                    match renewal {
                        Ok(Renewal::Kept) => store_down = false,
                        Ok(Renewal::Cancelled) => {
                            // Dropping the events stops the engine (both sessions close).
                            drop(events);
                            info!("transfer cancelled (through another instance)");
                            self.stopped_here(id, State::Cancelled, None);
                            self.write_progress_and_forget(id).await;
                            return;
                        }
                        Ok(Renewal::Lost) => {
                            drop(events);
                            warn!("transfer taken over by another instance (this one's lease ran out); stopped here");
                            self.lock().running.remove(&id);
                            return;
                        }
                        Err(e) => {
                            if !store_down {
                                warn!(error = %e, "cannot renew the transfer's lease; it goes on and writes back when the store answers");
                            }
                            store_down = true;
                        }
                    }
                }
            }
        }
        self.finish(id).await;
    }

    /// The job's run is over: its state says how it went; a cancel or a shutdown that
    /// ended it here first wins.
    async fn finish(&self, id: JobId) {
        let end = {
            let reg = self.lock();
            let Some(local) = reg.running.get(&id) else {
                return;
            };
            let mut record = local.watch.lock();
            let (state, error, code) = match &local.ended {
                Some(e) => (e.state, e.error.clone(), None),
                None => outcome(local.options.recursive, &record.state),
            };
            record.seal();
            Ending {
                phase: state,
                error: error.map(|e| bounded(e, MAX_ERROR)),
                reply_code: code,
                progress: progress_json(&record.view()),
                at: local
                    .ended
                    .as_ref()
                    .map_or_else(now_millis, |e| crate::state::to_millis(e.at)),
            }
        };
        self.write_end(id, &end).await;
        self.lock().running.remove(&id);
    }

    /// Writes how a run ended, again until the store answers (the job's record here
    /// shows it meanwhile) or the process stops.
    async fn write_end(&self, id: JobId, end: &Ending) {
        let mut warned = false;
        loop {
            let settled = self
                .store
                .store
                .settle(&id.to_string(), &self.store.instance, end)
                .await;
            self.store.health.note(&settled);
            match settled {
                Ok(()) => return,
                Err(e) => {
                    if !warned {
                        warn!(error = %e, "cannot record the transfer's end; trying again until the store answers");
                        warned = true;
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }

    /// A job cancelled (here or through another instance) or interrupted here: the
    /// record here shows it at once, with what had moved, and counts it.
    fn stopped_here(&self, id: JobId, how: State, error: Option<String>) {
        if let Some(local) = self.lock().running.get_mut(&id) {
            local.stopped(how, error);
        }
    }

    /// After a cancel: what had moved goes to the store, and the job is no longer here.
    async fn write_progress_and_forget(&self, id: JobId) {
        let end = {
            let reg = self.lock();
            let Some(local) = reg.running.get(&id) else {
                return;
            };
            Ending {
                phase: State::Cancelled,
                error: None,
                reply_code: None,
                progress: local.watch.json(),
                at: now_millis(),
            }
        };
        // `settle` of a cancelled job writes only its progress; once is enough (the
        // job's state is already final in the store).
        if let Err(e) = self
            .store
            .store
            .settle(&id.to_string(), &self.store.instance, &end)
            .await
        {
            warn!(%id, error = %e, "cannot record what the cancelled transfer had moved");
        }
        self.lock().running.remove(&id);
    }

    /// What jobs submitted from now on may ask for: FXP with `PROT C` between TLS
    /// servers that cannot encrypt between themselves (`options.allow_clear_data`), no
    /// certificate check (`options.insecure`), which CA bundle to trust (`options.ca`).
    pub fn set_permits(&self, permits: Permits) {
        *self.permits.write().unwrap_or_else(PoisonError::into_inner) = permits;
    }

    fn permits(&self) -> Permits {
        self.permits
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The roots `options` asks to trust besides the system's, and whether it may: a
    /// caller names a bundle of `fxp.ca_bundles`, never a file, and turns the check off
    /// only where `fxp.allow_insecure` says so.
    fn trust(&self, options: &TransferOptions) -> Result<ExtraRoots, SubmitError> {
        let permits = self.permits();
        if options.insecure && !permits.allow_insecure {
            return Err(SubmitError::NotPermitted(
                "options.insecure: this proxy does not let API callers turn off the check \
                 of TLS servers' certificates (fxp.allow_insecure is false); name a CA \
                 bundle of fxp.ca_bundles in options.ca to trust a private CA"
                    .into(),
            ));
        }
        let Some(name) = &options.ca else {
            return Ok(ExtraRoots::None);
        };
        match permits.ca_bundles.get(name) {
            Some(certs) => Ok(ExtraRoots::Loaded(certs.clone())),
            None => Err(SubmitError::BadRequest {
                field: "options.ca",
                message: format!(
                    "no CA bundle named {:?} in fxp.ca_bundles (this proxy has: {}); \
                     options.ca names a bundle the operator configured, not a file",
                    bounded(name.clone(), crate::tls::bundles::MAX_NAME),
                    permits.ca_bundles.names()
                ),
            }),
        }
    }

    /// Applies a reloaded `fxp.allow` and `fxp.concurrency` to jobs started from now on
    /// (and, for concurrency, to how many run here at once). Running jobs keep going.
    pub fn reconfigure(&self, allow: AllowList, concurrency: usize) {
        let mut settings = self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        settings.allow = Arc::new(allow);
        let (old, new) = (settings.concurrency, concurrency.max(1));
        settings.concurrency = new;
        if new > old {
            self.slots.add_permits(new - old);
            self.wake.notify_one();
        } else if new < old {
            // Take the surplus slots out of circulation as running jobs hand them back.
            let slots = self.slots.clone();
            tokio::spawn(async move {
                if let Ok(surplus) = slots.acquire_many_owned((old - new) as u32).await {
                    surplus.forget();
                }
            });
        }
    }

    /// Refuses jobs that would reach `own`, the proxy's own sockets: a URL naming the
    /// admin endpoint would have the engine post FTP commands into the API.
    pub fn guard_against(&self, own: Arc<OwnSockets>) {
        self.settings
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .own = Some(own);
    }

    /// The edge's agent links (`agents:`), through which jobs reach the servers their
    /// URLs name with `?via=AGENT`.
    pub fn reach_agents(&self, hub: Option<Arc<Hub>>) {
        self.settings
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .agents = hub;
    }

    fn agents(&self) -> Option<Arc<Hub>> {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .agents
            .clone()
    }

    fn own(&self) -> Option<Arc<OwnSockets>> {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .own
            .clone()
    }

    /// The list as it is now; a job keeps the one it was started under. The engine
    /// checks every connection against it: a host named in the list may resolve
    /// anywhere, but only for its own connection; any other host's addresses must fall
    /// inside a listed network.
    fn allow(&self) -> Arc<AllowList> {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .allow
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.reg.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Validates a transfer and commits it to the store (queued); it starts when an
    /// instance has a free slot.
    pub async fn submit(&self, req: Request) -> Result<JobView, SubmitError> {
        self.submit_from(req, None).await
    }

    /// [`Jobs::submit`] for the API client at `caller`, whom the job's first line names.
    pub async fn submit_from(
        &self,
        req: Request,
        caller: Option<std::net::SocketAddr>,
    ) -> Result<JobView, SubmitError> {
        let parse = |field, s: &str| {
            if s.len() > MAX_URL {
                return Err(SubmitError::BadRequest {
                    field,
                    message: format!("longer than {MAX_URL} bytes ({} bytes)", s.len()),
                });
            }
            FtpUrl::parse(s).map_err(|e| SubmitError::BadRequest {
                field,
                message: e.to_string(),
            })
        };
        let src = parse("source", &req.source)?;
        let dst = parse("destination", &req.destination)?;
        for (field, url) in [("source", &src), ("destination", &dst)] {
            self.check_agent(field, url)?;
            self.check_literal(url)?;
        }
        let options = req.options;
        options.check().map_err(|e| SubmitError::BadRequest {
            field: e.field,
            message: e.message,
        })?;
        self.trust(&options)?;
        if options.allow_clear_data && !self.permits().allow_clear_data {
            return Err(SubmitError::NotPermitted(
                "options.allow_clear_data: this proxy does not permit FXP with clear data \
                 (fxp.allow_clear_data is false)"
                    .into(),
            ));
        }
        if self.lock().draining {
            return Err(shutting_down());
        }
        let unavailable = |e: StoreError| {
            SubmitError::Unavailable(format!(
                "{e}; the transfer was not stored: submit it again once the store answers"
            ))
        };
        let active = self.store.store.active_jobs().await;
        self.store.health.note(&active);
        let active = active.map_err(unavailable)?;
        if active >= MAX_ACTIVE {
            return Err(SubmitError::TooMany(format!(
                "too many transfers queued or running (at most {MAX_ACTIVE}): \
                 try again once some have finished"
            )));
        }
        let id = JobId::new();
        let watch = Watch::default();
        if !options.recursive {
            watch.apply(&JobEvent::Planned(Plan::file(&src, &dst).outline()));
        }
        let urls = Urls {
            source: req.source,
            destination: req.destination,
        };
        let plain = serde_json::to_vec(&urls).unwrap_or_default();
        let job = NewJob {
            id: id.to_string(),
            source: src.to_string(),
            destination: dst.to_string(),
            sealed: self.store.sealer.seal(&id.to_string(), &plain),
            options: serde_json::to_string(&options).unwrap_or_else(|_| "{}".into()),
            progress: watch.json(),
            submitted: now_millis(),
        };
        let inserted = self.store.store.insert_job(&job).await;
        self.store.health.note(&inserted);
        inserted.map_err(unavailable)?;
        let caller = caller.map_or_else(|| "-".to_string(), |c| c.to_string());
        tracing::info_span!("fxp_job", %id, %caller)
            .in_scope(|| info!(source = %src, destination = %dst, "transfer ordered"));
        self.start();
        self.wake.notify_one();
        let row = JobRow {
            id: job.id,
            source: job.source,
            destination: job.destination,
            sealed: Vec::new(),
            options: job.options,
            phase: State::Queued,
            progress: job.progress,
            error: None,
            reply_code: None,
            submitted: job.submitted,
            started: None,
            finished: None,
            owner: None,
            lease_until: None,
            runs: Vec::new(),
        };
        self.view(&row, true).map_err(unavailable)
    }

    /// A URL whose host is an IP literal outside the allow list, or that is the proxy
    /// itself, is refused at once; names are checked on their resolved addresses when
    /// the job connects (and such a job fails at once, without retries).
    fn check_literal(&self, url: &FtpUrl) -> Result<(), SubmitError> {
        let Ok(ip) = url.host.parse::<IpAddr>() else {
            return Ok(());
        };
        // An address behind an agent is one of the agent's network, never this proxy's.
        if let (Some(own), None) = (self.own(), &url.via) {
            own.check(std::net::SocketAddr::new(ip, url.port), &[])
                .map_err(|e| SubmitError::Forbidden(e.to_string()))?;
        }
        // An IP literal is never a host-name entry: only the networks can admit it.
        self.allow()
            .admits(&url.host, ip)
            .map_err(|d| SubmitError::Forbidden(d.to_string()))
    }

    /// A URL's `?via=` must name an agent of this proxy's `agents.tokens` (whether it is
    /// connected is found when the job runs: it may dial in before then).
    fn check_agent(&self, field: &'static str, url: &FtpUrl) -> Result<(), SubmitError> {
        let Some(agent) = &url.via else {
            return Ok(());
        };
        let message = match self.agents() {
            None => format!(
                "names agent {agent} (?via=), but this proxy has no `agents:` block: it reaches \
                 no server through an agent"
            ),
            Some(hub) if !hub.knows(agent) => {
                format!("names agent {agent} (?via=), which is not in this proxy's agents.tokens")
            }
            Some(_) => return Ok(()),
        };
        Err(SubmitError::BadRequest { field, message })
    }

    /// A stored job as the API shows it: a job running here with its live progress (and
    /// how a cancel or the shutdown ended it, before the store has heard).
    fn view(&self, row: &JobRow, files: bool) -> Result<JobView, StoreError> {
        let options: TransferOptions = serde_json::from_str(&row.options)
            .map_err(|e| StoreError::Corrupt(format!("job {}: options: {e}", row.id)))?;
        let id: JobId = row
            .id
            .parse()
            .map_err(|e: BadJobId| StoreError::Corrupt(e.to_string()))?;
        let reg = self.lock();
        let local = reg.running.get(&id);
        let snap = match local {
            Some(l) => l.watch.lock().view(),
            None => serde_json::from_str(&row.progress)
                .map_err(|e| StoreError::Corrupt(format!("job {}: progress: {e}", row.id)))?,
        };
        let ended = local.and_then(|l| l.ended.clone());
        drop(reg);
        let (state, error, reply_code, finished) = match ended {
            Some(e) if row.phase == State::Running => (e.state, e.error, None, Some(e.at)),
            _ => (
                row.phase,
                row.error.clone(),
                row.reply_code,
                row.finished.map(from_millis),
            ),
        };
        let started = row.started.map(from_millis);
        let seconds = started.map(|at| {
            let end = finished.unwrap_or_else(SystemTime::now);
            end.duration_since(at).unwrap_or_default().as_secs_f64()
        });
        let t = snap.counts;
        let rate = seconds
            .filter(|&s| s > 0.0)
            .map(|s| t.bytes_done as f64 / s);
        let eta = match (state, t.bytes_total, rate) {
            (State::Running, Some(total), Some(r)) if r > 0.0 => {
                Some(total.saturating_sub(t.bytes_done) as f64 / r)
            }
            _ => None,
        };
        let tree = files && options.recursive;
        Ok(JobView {
            id,
            source: row.source.clone(),
            destination: row.destination.clone(),
            state,
            method: t.method.map(Method::as_str),
            bytes_done: t.bytes_done,
            bytes_total: t.bytes_total,
            relayed_bytes: t.relayed_bytes,
            rate_bytes_per_second: rate,
            eta_seconds: eta,
            verified: t.verified,
            files_done: t.files_done,
            files_failed: t.files_failed,
            files_total: t.files_total,
            files: tree.then_some(snap.files),
            files_omitted: tree.then_some(snap.omitted),
            submitted_at: rfc3339(from_millis(row.submitted)),
            started_at: started.map(rfc3339),
            finished_at: finished.map(rfc3339),
            seconds,
            error,
            reply_code,
            options,
            instance: row.owner.clone(),
            runs: row
                .runs
                .iter()
                .map(|r| RunView {
                    instance: r.instance.clone(),
                    started_at: rfc3339(from_millis(r.at)),
                })
                .collect(),
        })
    }

    /// Up to `limit` jobs submitted after `after` (from the first without), oldest first
    /// (without trees' per-file records), and the cursor for the next page (`None` on
    /// the last one).
    pub async fn list(
        &self,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<(Vec<JobView>, Option<JobId>), StoreError> {
        let after = after.map(|a| a.to_string());
        let rows = self
            .store
            .store
            .jobs(after.as_deref(), limit.saturating_add(1))
            .await;
        self.store.health.note(&rows);
        let rows = rows?;
        let mut page = rows
            .iter()
            .map(|r| self.view(r, false))
            .collect::<Result<Vec<_>, _>>()?;
        let next = (page.len() > limit).then(|| {
            page.truncate(limit);
            page.last().map(|v| v.id)
        });
        Ok((page, next.flatten()))
    }

    pub async fn get(&self, id: JobId) -> Result<Option<JobView>, StoreError> {
        let row = self.store.store.job(&id.to_string()).await;
        self.store.health.note(&row);
        match row? {
            Some(row) => self.view(&row, true).map(Some),
            None => Ok(None),
        }
    }

    /// Stops a queued or running job, wherever it runs (here at once: dropping the
    /// engine's future closes both control connections; elsewhere at its runner's next
    /// renewal) and counts it as `result="cancelled"`; its view keeps the bytes that had
    /// moved. A finished job is left as it is.
    pub async fn cancel(&self, id: JobId) -> Result<Option<JobView>, StoreError> {
        let row = self.store.store.cancel(&id.to_string(), now_millis()).await;
        self.store.health.note(&row);
        let Some(row) = row? else {
            return Ok(None);
        };
        let here = {
            let mut reg = self.lock();
            match reg.running.get_mut(&id) {
                Some(local) if row.phase == State::Cancelled && local.ended.is_none() => {
                    // Said before the task is stopped: a run ending on another thread
                    // meanwhile finds the cancel, not its own failure, to record.
                    local.stopped(State::Cancelled, None);
                    if let Some(a) = local.abort.take() {
                        a.abort();
                    }
                    true
                }
                _ => false,
            }
        };
        if here {
            info!(%id, "transfer cancelled");
            let view = self.view(&row, true);
            self.write_progress_and_forget(id).await;
            self.wake.notify_one();
            return view.map(Some);
        }
        if row.phase == State::Cancelled && row.owner.is_none() {
            metrics::fxp_transfer("cancelled", "none", 0, Duration::ZERO);
            info!(%id, "transfer cancelled");
        }
        self.view(&row, true).map(Some)
    }

    /// Shutdown begins: no job is submitted or claimed from now on
    /// ([`SubmitError::ShuttingDown`]); running ones go on, until [`Jobs::settled`] or
    /// [`Jobs::interrupt`]. Queued jobs stay queued in a durable store (the next start,
    /// or another instance, runs them); in memory they are interrupted, as they will
    /// never run.
    pub fn drain(&self) {
        self.lock().draining = true;
        // The scheduler, woken, stops claiming (and in memory marks the queued jobs).
        self.wake.notify_one();
        self.tasks.close();
    }

    /// In memory, at shutdown: every queued job is marked interrupted (it will never
    /// run).
    async fn interrupt_queued(&self) {
        let error = "interrupted: the proxy shut down before it started (SIGTERM or SIGINT)";
        match self.store.store.interrupt_queued(now_millis(), error).await {
            Ok(rows) => {
                for row in rows {
                    metrics::fxp_transfer("interrupted", "none", 0, Duration::ZERO);
                    warn!(id = %row.id, source = %row.source, destination = %row.destination, bytes_done = 0, "transfer interrupted: the proxy shut down before it started");
                }
            }
            Err(e) => warn!(error = %e, "cannot mark the queued transfers interrupted"),
        }
    }

    /// Running jobs here now (after [`Jobs::drain`], what shutdown waits for).
    pub fn running(&self) -> usize {
        self.lock()
            .running
            .values()
            .filter(|l| l.ended.is_none())
            .count()
    }

    /// Returns once every job's task (and the scheduler) has ended (after
    /// [`Jobs::drain`]; before it, it waits for that too).
    pub async fn settled(&self) {
        self.tasks.wait().await;
    }

    /// The shutdown's grace period is over: every job running here is interrupted. Each
    /// sends `ABOR` to both servers and closes its sessions (wait with
    /// [`Jobs::settled`]); its record says `interrupted`, with what had moved, and the
    /// next start (or another instance) resumes it.
    pub fn interrupt(&self) {
        let ids: Vec<JobId> = self
            .lock()
            .running
            .iter()
            .filter(|(_, l)| l.ended.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let mut reg = self.lock();
            let Some(local) = reg.running.get_mut(&id) else {
                continue;
            };
            // The run's own end (a cancelled transfer) is not what the record says: the
            // interruption is noted first, under the lock the run's end reads it with,
            // then the run is stopped.
            let error = "interrupted: the proxy shut down before it ended (SIGTERM or SIGINT)";
            local.stopped(State::Interrupted, Some(error.into()));
            local.stop.cancel();
            let bytes_done = local.watch.lock().view().counts.bytes_done;
            warn!(%id, bytes_done, "transfer interrupted: the proxy shut down before it ended");
        }
    }
}

fn shutting_down() -> SubmitError {
    SubmitError::ShuttingDown(
        "this proxy is shutting down and starts no new transfer; submit it again once it \
         is back"
            .into(),
    )
}

/// How a run went, from its state: the job's state, its error and reply code.
fn outcome(recursive: bool, state: &JobState) -> (State, Option<String>, Option<u16>) {
    if !recursive && state.skipped() {
        info!("transfer skipped: the destination has the file (skip_existing)");
        return (State::Done, None, None);
    }
    if !recursive {
        return match state.outcome() {
            Some(Ok(r)) => {
                info!(method = r.method.as_str(), bytes = r.bytes, "transfer done");
                (State::Done, None, None)
            }
            Some(Err(e)) => {
                warn!(error = %e, "transfer failed");
                (State::Failed, Some(e.message.clone()), e.code)
            }
            None => (
                State::Failed,
                Some("the transfer ended without an outcome".into()),
                None,
            ),
        };
    }
    let t = state.totals();
    match state.finished.as_ref().and_then(|f| f.error.as_ref()) {
        Some(e) => {
            warn!(error = %e, "tree copy failed");
            (State::Failed, Some(e.message.clone()), e.code)
        }
        None if t.failed == 0 => {
            info!(
                files = t.files_copied,
                bytes = t.bytes_copied,
                "tree copied"
            );
            (State::Done, None, None)
        }
        None => {
            warn!(failed = t.failed, "tree copied with failures");
            (State::Failed, Some(render::summary(state)), None)
        }
    }
}

/// `fxprelay_fxp_transfers_total{result="cancelled"}` (or `"interrupted"`, as `how`
/// says): one per file that was under way (by the method it was on), or one with
/// `method="none"` for a job that had not got that far. The files under way take the
/// job's state.
fn count_stopped(local: &mut Local, how: State) {
    let result = match how {
        State::Interrupted => "interrupted",
        _ => "cancelled",
    };
    let took = local.started.elapsed();
    let stopped = match how {
        State::Interrupted => StopReason::Interrupted,
        _ => StopReason::Cancelled,
    };
    let mut record = local.watch.lock();
    let mut counted = false;
    for f in record.state.files().filter(|f| f.status.is_active()) {
        if f.status == Status::Running || f.method.is_some() {
            metrics::fxp_transfer(result, f.method.map_or("none", |m| m.as_str()), 0, took);
            counted = true;
        }
    }
    // The files under way take the job's state; what the engine says after is not
    // applied.
    record.state.apply(&JobEvent::Stopped(stopped));
    record.seal();
    if !counted {
        metrics::fxp_transfer(result, "none", 0, took);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fxp::engine::{FxpError, Method};
    use crate::fxp::job::{EntryOutcome, Failure, FileEvent, Report};

    fn jobs(allow: &[&str]) -> Jobs {
        let allow: AllowList = allow.iter().map(|s| s.parse().unwrap()).collect();
        Jobs::new(allow.named("fxp.allow"), 1)
    }

    fn request(source: &str, destination: &str) -> Request {
        Request {
            source: source.into(),
            destination: destination.into(),
            options: TransferOptions::default(),
        }
    }

    /// A job placed in the store directly, in `state`, without a task; a running one is
    /// this instance's, with a task-less watch.
    async fn insert(jobs: &Jobs, state: State) -> JobId {
        insert_with(jobs, state, false).await
    }

    async fn insert_with(jobs: &Jobs, state: State, recursive: bool) -> JobId {
        let id = JobId::new();
        let (src, dst) = (
            FtpUrl::parse("ftp://a/x").unwrap(),
            FtpUrl::parse("ftp://b/y").unwrap(),
        );
        let watch = Watch::default();
        if !recursive {
            watch.apply(&JobEvent::Planned(Plan::file(&src, &dst).outline()));
        }
        let options = TransferOptions {
            recursive,
            ..TransferOptions::default()
        };
        let store = &jobs.store.store;
        store
            .insert_job(&NewJob {
                id: id.to_string(),
                source: src.to_string(),
                destination: dst.to_string(),
                sealed: vec![],
                options: serde_json::to_string(&options).unwrap(),
                progress: watch.json(),
                submitted: now_millis(),
            })
            .await
            .unwrap();
        let me = &jobs.store.instance;
        match state {
            State::Queued => {}
            State::Cancelled => {
                store.cancel(&id.to_string(), now_millis()).await.unwrap();
            }
            _ => {
                let row = store
                    .claim(me, now_millis(), 60_000)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(row.id, id.to_string());
                jobs.lock().running.insert(
                    id,
                    Local {
                        watch,
                        options,
                        started: Instant::now(),
                        abort: None,
                        stop: CancellationToken::new(),
                        ended: None,
                    },
                );
                if state != State::Running {
                    jobs.lock().running.remove(&id);
                    let end = Ending {
                        phase: state,
                        error: None,
                        reply_code: None,
                        progress: "{}".into(),
                        at: now_millis(),
                    };
                    let end = Ending {
                        progress: progress_json(&Snapshot::default()),
                        ..end
                    };
                    store.settle(&id.to_string(), me, &end).await.unwrap();
                }
            }
        }
        id
    }

    fn watch(jobs: &Jobs, id: JobId) -> Watch {
        jobs.lock().running[&id].watch.clone()
    }

    /// A one-file job's run ends with `outcome`, then the job is finished.
    async fn finish(jobs: &Jobs, id: JobId, outcome: Result<Report, FxpError>) {
        if let Some(watch) = jobs.lock().running.get(&id).map(|l| l.watch.clone()) {
            watch.apply(&JobEvent::Started { entry: 0 });
            let outcome = match outcome {
                Ok(r) => EntryOutcome::Copied(r),
                Err(e) => EntryOutcome::Failed(Failure::from(&e)),
            };
            watch.apply(&JobEvent::Ended {
                entry: 0,
                took: Duration::ZERO,
                outcome,
            });
            watch.apply(&JobEvent::Finished {
                error: None,
                took: Duration::ZERO,
            });
        }
        jobs.finish(id).await;
    }

    fn report() -> Report {
        Report {
            method: engine::Method::Fxp,
            bytes: 1,
            relayed_bytes: 0,
            resumed_from: 0,
            attempts: 1,
            duration: Duration::ZERO,
            verified: Check::Size,
        }
    }

    async fn get(jobs: &Jobs, id: JobId) -> Option<JobView> {
        jobs.get(id).await.unwrap()
    }

    async fn state(jobs: &Jobs, id: JobId) -> State {
        get(jobs, id).await.map(|v| v.state).unwrap()
    }

    async fn list(jobs: &Jobs) -> Vec<JobView> {
        jobs.list(None, PAGE_MAX).await.unwrap().0
    }

    #[test]
    fn a_listed_name_admits_only_its_own_connection() {
        let check = jobs(&["allowed.example", "10.1.0.0/16"]).allow();
        let anywhere: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(check.admits("allowed.example", anywhere).is_ok());
        assert!(check.admits("ALLOWED.example.", anywhere).is_ok());
        let e = check.admits("other.example", anywhere).unwrap_err();
        assert!(e.to_string().contains("not in fxp.allow"), "{e}");
        assert!(
            check
                .admits("other.example", "10.1.2.3".parse().unwrap())
                .is_ok()
        );
    }

    /// The destination's name is listed, the source's is not: the source may not ride
    /// on it. `127.1` is a host name to the URL parser (no IP literal) that resolves,
    /// without any DNS server, to 127.0.0.1.
    #[tokio::test]
    async fn an_allowed_destination_name_does_not_admit_the_source() {
        let jobs = jobs(&["localhost"]);
        let view = jobs
            .submit(request("ftp://127.1:1/x", "ftp://localhost:1/y"))
            .await
            .unwrap();
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        let v = loop {
            let v = get(&jobs, view.id).await.unwrap();
            if v.state == State::Failed || tokio::time::Instant::now() > end {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(v.state, State::Failed, "{v:?}");
        let e = v.error.clone().unwrap_or_default();
        assert!(
            e.contains("source 127.1:1") && e.contains("not in fxp.allow"),
            "{e}"
        );
        assert_eq!(v.runs.len(), 1, "{v:?}");
        assert_eq!(v.instance.as_deref(), Some("local"));
    }

    /// `?via=` must name an agent of `agents.tokens`; a proxy without `agents:` has
    /// none. Neither job is kept.
    #[tokio::test]
    async fn a_url_naming_an_unknown_agent_is_a_bad_request() {
        let jobs = jobs(&["10.0.0.0/8", "127.0.0.0/8"]);
        let req = || request("ftp://10.0.0.5/x?via=site-a", "ftp://127.0.0.3/y");
        let e = jobs.submit(req()).await.unwrap_err();
        assert!(
            matches!(&e, SubmitError::BadRequest { field: "source", message }
                if message.contains("site-a") && message.contains("no `agents:` block")),
            "{e}"
        );
        let hub = Hub::new([("site-b".to_string(), "0123456789abcdef".to_string())].into());
        jobs.reach_agents(Some(hub));
        let e = jobs.submit(req()).await.unwrap_err();
        assert!(
            matches!(&e, SubmitError::BadRequest { field: "source", message }
                if message.contains("site-a") && message.contains("agents.tokens")),
            "{e}"
        );
        assert!(list(&jobs).await.is_empty());
        // A known agent is taken (whether it is connected is found when the job runs).
        let ok = request("ftp://127.0.0.2/x", "ftp://10.0.0.5/y?via=site-b");
        let view = jobs.submit(ok).await.unwrap();
        assert!(
            view.destination.ends_with("/y?via=site-b"),
            "{}",
            view.destination
        );
    }

    #[tokio::test]
    async fn too_many_retries_are_a_bad_request() {
        let jobs = jobs(&["127.0.0.0/8"]);
        let mut req = request("ftp://127.0.0.2/x", "ftp://127.0.0.3/y");
        req.options.retries = MAX_RETRIES + 1;
        let e = jobs.submit(req).await.unwrap_err();
        assert!(
            matches!(
                e,
                SubmitError::BadRequest {
                    field: "options.retries",
                    ..
                }
            ),
            "{e}"
        );
        assert!(list(&jobs).await.is_empty());
    }

    #[tokio::test]
    async fn a_url_over_the_cap_is_refused_and_never_held() {
        let jobs = jobs(&["127.0.0.0/8"]);
        let long = format!("ftp://127.0.0.2/{}", "a".repeat(1 << 20));
        let e = jobs
            .submit(request(&long, "ftp://127.0.0.3/y"))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("source: longer than {MAX_URL} bytes ({} bytes)", long.len())
        );
        let e = jobs
            .submit(request("ftp://127.0.0.3/y", &long))
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("destination: longer than"), "{e}");
        assert!(list(&jobs).await.is_empty());
        let e = bounded("é".repeat(MAX_ERROR), MAX_ERROR);
        assert!(
            e.len() <= MAX_ERROR + 6 && e.ends_with(" [...]"),
            "{}",
            e.len()
        );
    }

    /// `options.ca` names one of the operator's bundles, never a file; `insecure` needs
    /// `fxp.allow_insecure`. Refused before anything is stored, so nothing is read.
    #[tokio::test]
    async fn a_caller_names_a_ca_bundle_never_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, c.cert.pem()).unwrap();
        let jobs = jobs(&["127.0.0.0/8"]);
        jobs.set_permits(Permits {
            ca_bundles: CaBundles::load([("corp", ca.as_path())]).unwrap(),
            ..Permits::default()
        });
        let with = async |f: fn(&mut TransferOptions)| {
            let mut req = request("ftpes://127.0.0.99:1/x", "ftp://127.0.0.98:1/y");
            f(&mut req.options);
            jobs.submit(req).await
        };
        for path in ["/dev/zero", "/etc/passwd", "/nonexistent"] {
            let mut req = request("ftpes://127.0.0.99:1/x", "ftp://127.0.0.98:1/y");
            req.options.ca = Some(path.into());
            let e = jobs.submit(req).await.unwrap_err();
            assert!(
                matches!(
                    e,
                    SubmitError::BadRequest {
                        field: "options.ca",
                        ..
                    }
                ),
                "{e}"
            );
            let text = e.to_string();
            assert!(
                text.contains("has: corp") && text.contains("not a file"),
                "{text}"
            );
            assert!(!text.contains(&ca.display().to_string()), "{text}");
        }
        let e = with(|o| o.insecure = true).await.unwrap_err();
        assert!(matches!(e, SubmitError::NotPermitted(_)), "{e}");
        assert!(e.to_string().contains("fxp.allow_insecure"), "{e}");
        assert!(list(&jobs).await.is_empty(), "nothing was queued");

        let v = with(|o| o.ca = Some("corp".into())).await.unwrap();
        assert_eq!(v.options.ca.as_deref(), Some("corp"));
        jobs.set_permits(Permits {
            allow_insecure: true,
            ..Permits::default()
        });
        with(|o| o.insecure = true).await.unwrap();
    }

    #[tokio::test]
    async fn jobs_naming_the_proxy_itself_are_refused_at_once() {
        let jobs = jobs(&["127.0.0.0/8"]);
        jobs.guard_against(Arc::new(OwnSockets::new(
            vec!["127.0.0.1:9464".parse().unwrap()],
            "50000-50009".parse().unwrap(),
            None,
            Vec::new(),
        )));
        for dst in [
            "ftp://127.0.0.1:9464/x",
            "ftp://0.0.0.0:9464/x",
            "ftp://127.0.0.1:50005/x",
        ] {
            let e = jobs
                .submit(request("ftp://127.0.0.2/x", dst))
                .await
                .unwrap_err();
            assert!(matches!(e, SubmitError::Forbidden(_)), "{dst}: {e}");
            assert!(e.to_string().contains("is this proxy itself"), "{e}");
        }
    }

    /// What the store keeps of a job's URLs: the shown (masked) ones, and the given ones
    /// sealed; the password is nowhere in clear.
    #[tokio::test]
    async fn a_stored_job_holds_no_password_in_clear() {
        let jobs = jobs(&["127.0.0.0/8"]);
        let v = jobs
            .submit(request(
                "ftp://u:hunter2secret@127.0.0.99:1/x",
                "ftp://v:otherpass99@127.0.0.98:1/y",
            ))
            .await
            .unwrap();
        let row = jobs
            .store
            .store
            .job(&v.id.to_string())
            .await
            .unwrap()
            .unwrap();
        let text = format!("{row:?}");
        for secret in ["hunter2secret", "otherpass99"] {
            assert!(!text.contains(secret), "{text}");
            assert!(
                !row.sealed
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes())
            );
        }
        assert_eq!(row.source, "ftp://u:***@127.0.0.99:1/x");
        let urls: Urls =
            serde_json::from_slice(&jobs.store.sealer.open(&row.id, &row.sealed).unwrap()).unwrap();
        assert_eq!(urls.source, "ftp://u:hunter2secret@127.0.0.99:1/x");
    }

    #[test]
    fn a_job_started_again_resumes_and_a_tree_skips_what_it_has() {
        let file = TransferOptions::default();
        assert_eq!(resumed(&file, 0), file);
        let again = resumed(&file, 1);
        assert!(again.resume && again.skip_existing && !again.recursive);
        let tree = TransferOptions {
            recursive: true,
            ..TransferOptions::default()
        };
        let again = resumed(&tree, 2);
        assert!(again.resume && again.skip_existing && again.recursive);
    }

    #[tokio::test]
    async fn the_list_comes_in_pages() {
        let jobs = jobs(&[]);
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(insert(&jobs, State::Done).await);
        }
        let ids_of = |page: Vec<JobView>| page.iter().map(|v| v.id).collect::<Vec<_>>();
        let (page, next) = jobs.list(None, 2).await.unwrap();
        assert_eq!(ids_of(page), ids[..2]);
        assert_eq!(next, Some(ids[1]));
        let (page, next) = jobs.list(Some(ids[1]), 2).await.unwrap();
        assert_eq!(ids_of(page), ids[2..4]);
        assert_eq!(next, Some(ids[3]));
        let (page, next) = jobs.list(Some(ids[3]), 2).await.unwrap();
        assert_eq!(ids_of(page), ids[4..]);
        assert_eq!(next, None);
    }

    #[tokio::test]
    async fn submissions_beyond_the_active_cap_are_refused() {
        let jobs = jobs(&["127.0.0.0/8"]);
        for _ in 0..MAX_ACTIVE {
            insert(&jobs, State::Queued).await;
        }
        let e = jobs
            .submit(request("ftp://127.0.0.2/x", "ftp://127.0.0.3/y"))
            .await
            .unwrap_err();
        assert!(matches!(e, SubmitError::TooMany(_)), "{e}");
        assert!(e.to_string().contains("too many transfers"), "{e}");
        assert_eq!(jobs.store.store.active_jobs().await.unwrap(), MAX_ACTIVE);
    }

    #[tokio::test]
    async fn a_cancelled_job_never_starts_and_keeps_its_state() {
        let jobs = jobs(&[]);
        // Cancelled while queued: no instance claims it.
        let queued = insert(&jobs, State::Queued).await;
        jobs.cancel(queued).await.unwrap();
        assert!(
            jobs.store
                .store
                .claim("any", now_millis(), 1000)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(state(&jobs, queued).await, State::Cancelled);
        // Cancelled while running: the outcome that arrives afterwards is not applied.
        for outcome in [Ok(report()), Err(FxpError::Other("boom".into()))] {
            let running = insert(&jobs, State::Running).await;
            let w = watch(&jobs, running);
            jobs.cancel(running).await.unwrap();
            jobs.lock().running.insert(
                running,
                Local {
                    watch: w,
                    options: TransferOptions::default(),
                    started: Instant::now(),
                    abort: None,
                    stop: CancellationToken::new(),
                    ended: None,
                },
            );
            finish(&jobs, running, outcome).await;
            let v = get(&jobs, running).await.unwrap();
            assert_eq!(v.state, State::Cancelled, "{v:?}");
            assert!(v.error.is_none() && v.method.is_none(), "{v:?}");
        }
        // A finished job is not cancelled, nor finished twice.
        let done = insert(&jobs, State::Running).await;
        finish(&jobs, done, Ok(report())).await;
        jobs.cancel(done).await.unwrap();
        assert_eq!(state(&jobs, done).await, State::Done);
    }

    /// A cancel straight after submission, before the scheduler has run at all (on this
    /// single-threaded runtime it cannot run until the test yields).
    #[tokio::test]
    async fn a_cancel_right_after_submit_sticks() {
        let jobs = jobs(&["127.0.0.0/8"]);
        let view = jobs
            .submit(request("ftp://127.0.0.99:1/x", "ftp://127.0.0.98:1/y"))
            .await
            .unwrap();
        let v = jobs.cancel(view.id).await.unwrap().unwrap();
        assert_eq!(v.state, State::Cancelled);
        // Time for the task to have run had it not been stopped (its connects are
        // refused at once, so it would have failed by now).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(state(&jobs, view.id).await, State::Cancelled);
        assert!(get(&jobs, view.id).await.unwrap().error.is_none());
    }

    #[tokio::test]
    async fn a_running_file_shows_its_progress_and_a_cancel_keeps_what_moved() {
        let jobs = jobs(&[]);
        let id = insert(&jobs, State::Running).await;
        let watch = watch(&jobs, id);
        let progress = |event: FileEvent| watch.apply(&JobEvent::File { entry: 0, event });
        watch.apply(&JobEvent::Started { entry: 0 });
        progress(FileEvent::SourceSize { size: Some(1000) });
        progress(FileEvent::Trying {
            method: Method::Fxp,
            offset: 0,
        });
        let v = get(&jobs, id).await.unwrap();
        assert_eq!((v.bytes_done, v.bytes_total), (0, Some(1000)));
        assert_eq!((v.files_total, v.method), (Some(1), Some("fxp")));
        progress(FileEvent::Bytes {
            done: 400,
            total: Some(1000),
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let v = get(&jobs, id).await.unwrap();
        assert_eq!(v.bytes_done, 400);
        assert!(v.rate_bytes_per_second.is_some_and(|r| r > 0.0), "{v:?}");
        assert!(v.eta_seconds.is_some_and(|e| e > 0.0), "{v:?}");
        assert!(v.started_at.is_some() && v.finished_at.is_none(), "{v:?}");

        let v = jobs.cancel(id).await.unwrap().unwrap();
        assert_eq!((v.state, v.bytes_done), (State::Cancelled, 400));
        assert!(v.finished_at.is_some() && v.eta_seconds.is_none(), "{v:?}");
        // What a stopped engine might still report is not applied, and the store has
        // what had moved.
        progress(FileEvent::Bytes {
            done: 900,
            total: Some(1000),
        });
        assert!(jobs.lock().running.is_empty());
        assert_eq!(get(&jobs, id).await.unwrap().bytes_done, 400);
    }

    #[tokio::test]
    async fn a_tree_counts_its_files_and_keeps_failures_first() {
        let jobs = jobs(&[]);
        let id = insert_with(&jobs, State::Running, true).await;
        let watch = watch(&jobs, id);
        let v = get(&jobs, id).await.unwrap();
        assert_eq!(
            (v.files_total, v.bytes_total),
            (None, None),
            "not listed yet"
        );
        let list: Vec<(FtpUrl, FtpUrl)> = (0..MAX_FILE_RECORDS + 2)
            .map(|i| {
                let u = |h: &str| FtpUrl::parse(&format!("ftp://u:secret@{h}/f{i}")).unwrap();
                (u("a"), u("b"))
            })
            .collect();
        let mut outline = Plan::list(&list).outline();
        outline.shape = crate::fxp::job::plan::Shape::Tree;
        watch.apply(&JobEvent::Planned(outline));
        let file = |entry, event| watch.apply(&JobEvent::File { entry, event });
        watch.apply(&JobEvent::Started { entry: 1 });
        file(1, FileEvent::SourceSize { size: Some(10) });
        file(
            1,
            FileEvent::Bytes {
                done: 4,
                total: Some(10),
            },
        );
        let ended = |entry, outcome| {
            watch.apply(&JobEvent::Ended {
                entry,
                took: Duration::ZERO,
                outcome,
            })
        };
        ended(0, EntryOutcome::Copied(report()));
        let last = list.len() - 1;
        ended(
            last,
            EntryOutcome::Failed(Failure::from(&FxpError::Other("550 no".into()))),
        );
        let v = get(&jobs, id).await.unwrap();
        assert_eq!(
            (v.files_total, v.files_done, v.files_failed),
            (Some(list.len()), 1, 1)
        );
        assert_eq!(v.bytes_done, 1 + 4);
        let files = v.files.unwrap();
        assert_eq!(files[1].state, State::Running);
        assert!(!files[0].source.contains("secret"), "{:?}", files[0]);
        assert!(
            jobs.list(None, 10).await.unwrap().0[0].files.is_none(),
            "the list leaves files out"
        );

        watch.apply(&JobEvent::Finished {
            error: None,
            took: Duration::ZERO,
        });
        jobs.finish(id).await;
        // Read back from the store: this instance no longer runs it.
        assert!(jobs.lock().running.is_empty());
        let v = get(&jobs, id).await.unwrap();
        // A file failed: so did the tree, and it says so in its summary.
        assert_eq!(v.state, State::Failed);
        assert!(v.error.as_deref().unwrap().contains("1 FAILED"), "{v:?}");
        assert_eq!((v.files_done, v.files_failed, v.bytes_done), (1, 1, 5));
        let files = v.files.unwrap();
        assert_eq!(files.len(), MAX_FILE_RECORDS);
        assert_eq!(v.files_omitted, Some(2));
        assert_eq!(files[0].state, State::Failed, "failures first");
        assert_eq!(files[0].error.as_deref(), Some("550 no"));
        assert_eq!(files[0].method, None);
    }

    #[tokio::test]
    async fn times_are_rfc3339() {
        let jobs = jobs(&[]);
        let id = insert(&jobs, State::Queued).await;
        let v = get(&jobs, id).await.unwrap();
        assert!(
            humantime::parse_rfc3339(&v.submitted_at).is_ok(),
            "{}",
            v.submitted_at
        );
        assert!(v.submitted_at.ends_with('Z'), "{}", v.submitted_at);
        assert!(v.started_at.is_none() && v.rate_bytes_per_second.is_none());
    }

    /// Ids from registries that never met (two processes, one after the other or side
    /// by side) never repeat, and each registry's sort in the order submitted.
    #[tokio::test]
    async fn ids_never_repeat_across_registries() {
        let (first, second) = (jobs(&["127.0.0.0/8"]), jobs(&["127.0.0.0/8"]));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            for jobs in [&first, &second] {
                let v = jobs
                    .submit(request("ftp://127.0.0.99:1/x", "ftp://127.0.0.98:1/y"))
                    .await
                    .unwrap();
                assert!(seen.insert(v.id), "{} twice", v.id);
                assert_ne!(v.id.to_string(), "1");
            }
        }
        for jobs in [&first, &second] {
            let ids: Vec<JobId> = list(jobs).await.iter().map(|v| v.id).collect();
            assert_eq!(ids.len(), 50);
            assert!(ids.windows(2).all(|w| w[0] < w[1]));
        }
    }

    /// SIGTERM, in memory: queued jobs are interrupted (they would never run), running
    /// ones go on until the grace period ends; then they are interrupted too, keeping
    /// what had moved; nothing new is taken meanwhile, and what the engine reports
    /// afterwards is not applied.
    #[tokio::test]
    async fn a_drain_interrupts_queued_jobs_then_running_ones_and_keeps_their_records() {
        let jobs = jobs(&["127.0.0.0/8"]);
        // (Inserted so: the helper claims the oldest claimable job.)
        let done = insert(&jobs, State::Done).await;
        let running = insert(&jobs, State::Running).await;
        let queued = insert(&jobs, State::Queued).await;
        let watch = watch(&jobs, running);
        watch.apply(&JobEvent::Started { entry: 0 });
        watch.apply(&JobEvent::File {
            entry: 0,
            event: FileEvent::Bytes {
                done: 300,
                total: Some(1000),
            },
        });
        // The scheduler runs (a submission would start it), with no free slot.
        let held = jobs.slots.clone().acquire_owned().await.unwrap();
        jobs.start();
        jobs.drain();
        tokio::time::timeout(Duration::from_secs(5), async {
            while state(&jobs, queued).await != State::Interrupted {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        let v = get(&jobs, queued).await.unwrap();
        assert!(
            v.error.as_deref().unwrap().contains("before it started"),
            "{v:?}"
        );
        assert_eq!(state(&jobs, running).await, State::Running);
        assert_eq!(jobs.running(), 1);
        let e = jobs
            .submit(request("ftp://127.0.0.2/x", "ftp://127.0.0.3/y"))
            .await
            .unwrap_err();
        assert!(matches!(e, SubmitError::ShuttingDown(_)), "{e}");

        let stop = jobs.lock().running[&running].stop.clone();
        jobs.interrupt();
        assert!(stop.is_cancelled(), "the engine is told to ABOR");
        let v = get(&jobs, running).await.unwrap();
        assert_eq!((v.state, v.bytes_done), (State::Interrupted, 300), "{v:?}");
        assert!(v.finished_at.is_some(), "{v:?}");
        assert!(v.error.as_deref().unwrap().contains("shut down"), "{v:?}");
        finish(&jobs, running, Err(FxpError::Cancelled)).await;
        let v = get(&jobs, running).await.unwrap();
        assert_eq!((v.state, v.bytes_done), (State::Interrupted, 300), "{v:?}");
        assert_eq!(state(&jobs, done).await, State::Done);
        assert_eq!(jobs.running(), 0);
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), jobs.settled())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_reload_resizes_the_running_slots() {
        let jobs = Jobs::new(AllowList::default(), 2);
        jobs.reconfigure(AllowList::default(), 4);
        assert_eq!(jobs.slots.available_permits(), 4);
        // Shrinking waits for busy slots: with one held, only the free ones go at once.
        let held = jobs.slots.clone().acquire_owned().await.unwrap();
        jobs.reconfigure(AllowList::default(), 1);
        drop(held);
        for _ in 0..100 {
            if jobs.slots.available_permits() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(jobs.slots.available_permits(), 1);
    }
}
