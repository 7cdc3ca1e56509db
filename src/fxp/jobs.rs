//! FXP transfers ordered over the admin HTTP API: a registry of jobs, each one a task
//! running the engine, with the state the API reports. Passwords are kept only inside
//! the task that needs them; everything the API shows is redacted.
//!
//! A job's task folds the events of [`job::run`] into the job's [`JobState`], behind a
//! lock of its own, and a `GET` renders it. The JSON a job shows is [`JobView`];
//! `src/openapi.json` describes it (a test holds the two together). Once a job ends its
//! view's counts are fixed and a tree's records cut to [`MAX_FILE_RECORDS`].

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
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
pub use super::options::{MAX_RETRIES, TransferOptions};
use super::render;
use super::runner;
use super::url::FtpUrl;
use crate::metrics;
use crate::net::{AllowList, OwnSockets};
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
/// results of at most [`MAX_FILE_TEXT`] each, so the registry's
/// [`MAX_ACTIVE`] + [`MAX_FINISHED`] jobs stay bounded.
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
/// Finished jobs kept for `GET` (the newest); older ones are forgotten so a long-running
/// proxy's registry does not grow without bound.
pub const MAX_FINISHED: usize = 1000;
/// Queued and running jobs at most: each queued job holds its URLs (with passwords) and
/// a task, so a flood of submissions is refused rather than buffered without bound.
pub const MAX_ACTIVE: usize = 1000;

/// A job's (or one of its files') state. `queued` and `running` change; the others are
/// final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Running,
    Done,
    Failed,
    /// Stopped by `DELETE` (or, for a file of a tree, with its job).
    Cancelled,
    /// Stopped because the proxy shut down (SIGTERM or SIGINT): queued jobs at once,
    /// running ones when `limits.shutdown_grace` ran out.
    Interrupted,
}

impl State {
    fn is_active(self) -> bool {
        matches!(self, State::Queued | State::Running)
    }
}

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
}

/// One file of a tree job.
#[derive(Debug, Clone, Serialize)]
pub struct FileView {
    pub source: String,
    pub destination: String,
    pub state: State,
    pub method: Option<&'static str>,
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
            method: e.method.map(|m| m.as_str()),
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
    fn of(status: Status) -> State {
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
}

/// A job's progress: its [`JobState`] while it runs, what its view keeps once it has
/// ended. Behind its own lock, so progress never waits for the registry's.
#[derive(Debug, Default)]
struct Record {
    state: JobState,
    /// Set once the job has ended: the view's counts and records as they were then
    /// (what arrives afterwards is not applied).
    sealed: Option<Sealed>,
}

/// An ended job's view: counts fixed, a tree's records cut to [`MAX_FILE_RECORDS`].
#[derive(Debug, Clone)]
struct Sealed {
    counts: Counts,
    files: Vec<FileView>,
    omitted: usize,
}

/// What a job's view shows of its [`Totals`].
#[derive(Debug, Clone)]
struct Counts {
    bytes_done: u64,
    bytes_total: Option<u64>,
    relayed_bytes: u64,
    files_done: usize,
    files_failed: usize,
    files_total: Option<usize>,
    method: Option<&'static str>,
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
            method: t.method.map(|m| m.as_str()),
            verified: t.weakest_check,
        }
    }
}

impl Record {
    /// The counts, and a tree's file records, now.
    fn view(&self) -> (Counts, Vec<FileView>, usize) {
        match &self.sealed {
            Some(s) => (s.counts.clone(), s.files.clone(), s.omitted),
            None => (
                self.state.totals().into(),
                self.state.files().map(FileView::of).collect(),
                0,
            ),
        }
    }

    /// The job has ended: the counts are fixed and a tree's records cut down.
    fn seal(&mut self) {
        if self.sealed.is_some() {
            return;
        }
        let files: Vec<FileView> = self.state.files().map(FileView::of).collect();
        let (files, omitted) = kept_records(&files);
        self.sealed = Some(Sealed {
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
}

struct Job {
    id: JobId,
    source: String,
    destination: String,
    options: TransferOptions,
    state: State,
    submitted: SystemTime,
    /// Wall-clock time for the view, monotonic time for durations.
    started: Option<(SystemTime, Instant)>,
    finished: Option<(SystemTime, Instant)>,
    error: Option<String>,
    reply_code: Option<u16>,
    watch: Watch,
    /// Installed under the registry lock in the same step as the job itself, so a
    /// cancel can always reach the task.
    abort: Option<AbortHandle>,
    /// Stops the engine cleanly (`ABOR` to both servers): how a shutdown ends a running
    /// job, while `DELETE` drops it at once.
    stop: CancellationToken,
}

impl Job {
    /// `plan`: what the job is known to do before it runs (one file's plan; a tree's
    /// comes once listed).
    fn new(
        id: JobId,
        source: String,
        destination: String,
        options: TransferOptions,
        plan: Option<&Plan>,
    ) -> Job {
        let watch = Watch::default();
        if let Some(plan) = plan {
            watch.apply(&JobEvent::Planned(plan.outline()));
        }
        Job {
            id,
            source,
            destination,
            options,
            state: State::Queued,
            submitted: SystemTime::now(),
            started: None,
            finished: None,
            error: None,
            reply_code: None,
            watch,
            abort: None,
            stop: CancellationToken::new(),
        }
    }

    fn fail(&mut self, error: &str, code: Option<u16>) {
        self.state = State::Failed;
        self.error = Some(bounded(error.to_owned(), MAX_ERROR));
        self.reply_code = code;
    }

    /// The job as the API shows it now; `files` for the single view of a tree.
    fn view(&self, files: bool) -> JobView {
        let (t, records, omitted) = self.watch.lock().view();
        let seconds = self.started.map(|(_, at)| match self.finished {
            Some((_, end)) => end.duration_since(at).as_secs_f64(),
            None => at.elapsed().as_secs_f64(),
        });
        let rate = seconds
            .filter(|&s| s > 0.0)
            .map(|s| t.bytes_done as f64 / s);
        let eta = match (self.state, t.bytes_total, rate) {
            (State::Running, Some(total), Some(r)) if r > 0.0 => {
                Some(total.saturating_sub(t.bytes_done) as f64 / r)
            }
            _ => None,
        };
        let tree = files && self.options.recursive;
        JobView {
            id: self.id,
            source: self.source.clone(),
            destination: self.destination.clone(),
            state: self.state,
            options: self.options.clone(),
            method: t.method,
            bytes_done: t.bytes_done,
            bytes_total: t.bytes_total,
            relayed_bytes: t.relayed_bytes,
            rate_bytes_per_second: rate,
            eta_seconds: eta,
            verified: t.verified,
            files_done: t.files_done,
            files_failed: t.files_failed,
            files_total: t.files_total,
            files: tree.then_some(records),
            files_omitted: tree.then_some(omitted),
            submitted_at: rfc3339(self.submitted),
            started_at: self.started.map(|(t, _)| rfc3339(t)),
            finished_at: self.finished.map(|(t, _)| rfc3339(t)),
            seconds,
            error: self.error.clone(),
            reply_code: self.reply_code,
        }
    }
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

/// Everything behind the registry's one lock.
struct Registry {
    /// By id: in the order submitted.
    jobs: BTreeMap<JobId, Job>,
    /// Finished jobs' ids, oldest first, for dropping beyond [`MAX_FINISHED`].
    finished: VecDeque<JobId>,
    /// Shutdown has begun: no job is submitted or started any more.
    draining: bool,
}

impl Registry {
    fn active(&self) -> usize {
        self.jobs.values().filter(|j| j.state.is_active()).count()
    }

    /// Records that `id` has reached a final state and forgets the oldest finished jobs
    /// beyond [`MAX_FINISHED`]; a finished tree's records shrink to what it keeps.
    fn finished(&mut self, id: JobId) {
        if let Some(job) = self.jobs.get_mut(&id) {
            job.finished = Some((SystemTime::now(), Instant::now()));
            job.abort = None;
            job.watch.lock().seal();
        }
        self.finished.push_back(id);
        while self.finished.len() > MAX_FINISHED {
            if let Some(old) = self.finished.pop_front() {
                self.jobs.remove(&old);
            }
        }
    }
}

/// The registry shared by the API handlers.
#[derive(Clone)]
pub struct Jobs {
    reg: Arc<Mutex<Registry>>,
    slots: Arc<Semaphore>,
    /// Every job's task, so a shutdown can wait for them to end.
    tasks: TaskTracker,
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
}

impl Jobs {
    /// `allow` is the top-level `fxp.allow` list: the only servers jobs may reach.
    pub fn new(allow: AllowList, concurrency: usize) -> Jobs {
        Jobs {
            reg: Arc::new(Mutex::new(Registry {
                jobs: BTreeMap::new(),
                finished: VecDeque::new(),
                draining: false,
            })),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            tasks: TaskTracker::new(),
            settings: Arc::new(RwLock::new(Settings {
                allow: Arc::new(allow),
                concurrency: concurrency.max(1),
                own: None,
            })),
            permits: Arc::default(),
        }
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

    /// Applies a reloaded `fxp.allow` and `fxp.concurrency` to jobs submitted from now on
    /// (and, for concurrency, to jobs still queued). Running jobs keep going.
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

    fn own(&self) -> Option<Arc<OwnSockets>> {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .own
            .clone()
    }

    /// The list as it is now; a job keeps the one it was submitted under. The engine
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

    /// Validates and queues a transfer; it starts when a slot is free.
    pub fn submit(&self, req: Request) -> Result<JobView, SubmitError> {
        self.submit_from(req, None)
    }

    /// [`Jobs::submit`] for the API client at `caller`, whom every line of the job names.
    pub fn submit_from(
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
        for url in [&src, &dst] {
            self.check_literal(url)?;
        }
        let options = req.options;
        options.check().map_err(|e| SubmitError::BadRequest {
            field: e.field,
            message: e.message,
        })?;
        let ca = self.trust(&options)?;
        if options.allow_clear_data && !self.permits().allow_clear_data {
            return Err(SubmitError::NotPermitted(
                "options.allow_clear_data: this proxy does not permit FXP with clear data \
                 (fxp.allow_clear_data is false)"
                    .into(),
            ));
        }
        let me = self.clone();
        let mut reg = self.lock();
        if reg.draining {
            return Err(SubmitError::ShuttingDown(
                "this proxy is shutting down and starts no new transfer; submit it again \
                 once it is back"
                    .into(),
            ));
        }
        if reg.active() >= MAX_ACTIVE {
            return Err(SubmitError::TooMany(format!(
                "too many transfers queued or running (at most {MAX_ACTIVE}): \
                 try again once some have finished"
            )));
        }
        let id = JobId::new();
        let order = if options.recursive {
            Order::Tree {
                src: src.clone(),
                dst: dst.clone(),
                mirror: options.mirror(),
            }
        } else {
            Order::File {
                src: src.clone(),
                dst: dst.clone(),
                skip_existing: options.skip_existing,
            }
        };
        let plan = (!options.recursive).then(|| Plan::file(&src, &dst));
        let job = Job::new(
            id,
            src.to_string(),
            dst.to_string(),
            options.clone(),
            plan.as_ref(),
        );
        let opts = engine::EngineOptions {
            allow: Some(self.allow()),
            own: self.own(),
            cancel: Some(job.stop.clone()),
            ..options.engine(ca)
        };
        let watch = job.watch.clone();
        let caller = caller.map_or_else(|| "-".to_string(), |c| c.to_string());
        let span = tracing::info_span!("fxp_job", %id, %caller);
        span.in_scope(|| info!(source = %src, destination = %dst, "transfer ordered"));
        // Spawned with the registry locked: the task's first step (`start`) waits for
        // the lock, so the job and its abort handle are in place before it can run and
        // a cancel at any moment after this returns stops it.
        let task = self.tasks.spawn(
            async move {
                let Ok(_slot) = me.slots.clone().acquire_owned().await else {
                    return;
                };
                if !me.start(id) {
                    return;
                }
                info!(source = %src, destination = %dst, "transfer started");
                let mut events = runner::run(order, opts);
                while let Some(e) = events.next().await {
                    watch.apply(&e);
                }
                me.finish(id);
            }
            .instrument(span),
        );
        let view = job.view(true);
        reg.jobs.insert(
            id,
            Job {
                abort: Some(task.abort_handle()),
                ..job
            },
        );
        Ok(view)
    }

    /// A URL whose host is an IP literal outside the allow list, or that is the proxy
    /// itself, is refused at once; names are checked on their resolved addresses when
    /// the job connects (and such a job fails at once, without retries).
    fn check_literal(&self, url: &FtpUrl) -> Result<(), SubmitError> {
        let Ok(ip) = url.host.parse::<IpAddr>() else {
            return Ok(());
        };
        if let Some(own) = self.own() {
            own.check(std::net::SocketAddr::new(ip, url.port), &[])
                .map_err(|e| SubmitError::Forbidden(e.to_string()))?;
        }
        // An IP literal is never a host-name entry: only the networks can admit it.
        self.allow()
            .admits(&url.host, ip)
            .map_err(|d| SubmitError::Forbidden(d.to_string()))
    }

    /// Queued -> running; `false` when the job is no longer queued (cancelled).
    fn start(&self, id: JobId) -> bool {
        let mut reg = self.lock();
        match reg.jobs.get_mut(&id) {
            Some(job) if job.state == State::Queued => {
                job.state = State::Running;
                job.started = Some((SystemTime::now(), Instant::now()));
                true
            }
            _ => false,
        }
    }

    /// Applies a running job's outcome; a job cancelled meanwhile stays cancelled.
    fn settle(&self, id: JobId, f: impl FnOnce(&mut Job)) {
        let mut reg = self.lock();
        let Some(job) = reg.jobs.get_mut(&id) else {
            return;
        };
        if job.state != State::Running {
            return;
        }
        f(job);
        reg.finished(id);
    }

    /// The job's run is over: its state says how it went.
    fn finish(&self, id: JobId) {
        self.settle(id, |job| {
            let watch = job.watch.clone();
            let record = watch.lock();
            let state = &record.state;
            if !job.options.recursive && state.skipped() {
                job.state = State::Done;
                info!("transfer skipped: the destination has the file (skip_existing)");
                return;
            }
            if !job.options.recursive {
                match state.outcome() {
                    Some(Ok(r)) => {
                        job.state = State::Done;
                        info!(method = r.method.as_str(), bytes = r.bytes, "transfer done");
                    }
                    Some(Err(e)) => {
                        warn!(error = %e, "transfer failed");
                        job.fail(&e.message, e.code);
                    }
                    None => job.fail("the transfer ended without an outcome", None),
                }
                return;
            }
            let t = state.totals();
            match state.finished.as_ref().and_then(|f| f.error.as_ref()) {
                Some(e) => {
                    warn!(error = %e, "tree copy failed");
                    job.fail(&e.message, e.code);
                }
                None if t.failed == 0 => {
                    job.state = State::Done;
                    info!(
                        files = t.files_copied,
                        bytes = t.bytes_copied,
                        "tree copied"
                    );
                }
                None => {
                    warn!(failed = t.failed, "tree copied with failures");
                    job.fail(&render::summary(state), None);
                }
            }
        });
    }

    /// Up to `limit` jobs submitted after `after` (from the first without), oldest first
    /// (without trees' per-file records), and the cursor for the next page (`None` on
    /// the last one).
    pub fn list(&self, after: Option<JobId>, limit: usize) -> (Vec<JobView>, Option<JobId>) {
        use std::ops::Bound;
        let reg = self.lock();
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut page: Vec<JobView> = reg
            .jobs
            .range((from, Bound::Unbounded))
            .take(limit.saturating_add(1))
            .map(|(_, j)| j.view(false))
            .collect();
        let next = (page.len() > limit).then(|| {
            page.truncate(limit);
            page.last().map(|v| v.id)
        });
        (page, next.flatten())
    }

    pub fn get(&self, id: JobId) -> Option<JobView> {
        self.lock().jobs.get(&id).map(|j| j.view(true))
    }

    /// Stops a queued or running job (dropping the engine's future closes both control
    /// connections) and counts it as `result="cancelled"`; its view keeps the bytes
    /// that had moved. A finished job is left as it is.
    pub fn cancel(&self, id: JobId) -> Option<JobView> {
        let mut reg = self.lock();
        let job = reg.jobs.get_mut(&id)?;
        if job.state.is_active() {
            // Even if the task is past its last await, `settle` will not overwrite this.
            if let Some(a) = job.abort.take() {
                a.abort();
            }
            job.state = State::Cancelled;
            count_stopped(job, State::Cancelled);
            info!(%id, "transfer cancelled");
            reg.finished(id);
        }
        reg.jobs.get(&id).map(|j| j.view(true))
    }

    /// Shutdown begins: no job is submitted from now on ([`SubmitError::ShuttingDown`]),
    /// and the queued ones are interrupted (they never start); running ones go on, until
    /// [`Jobs::settled`] or [`Jobs::interrupt`].
    pub fn drain(&self) {
        let mut reg = self.lock();
        reg.draining = true;
        let queued: Vec<JobId> = reg
            .jobs
            .values()
            .filter(|j| j.state == State::Queued)
            .map(|j| j.id)
            .collect();
        for id in queued {
            if let Some(job) = reg.jobs.get_mut(&id) {
                // Waiting for a slot: nothing to stop cleanly.
                if let Some(a) = job.abort.take() {
                    a.abort();
                }
                interrupted(job, "the proxy shut down before it started");
                reg.finished(id);
            }
        }
        drop(reg);
        self.tasks.close();
    }

    /// Running jobs now (after [`Jobs::drain`], what shutdown waits for).
    pub fn running(&self) -> usize {
        self.lock()
            .jobs
            .values()
            .filter(|j| j.state == State::Running)
            .count()
    }

    /// Returns once every job's task has ended (after [`Jobs::drain`]; before it, it
    /// waits for that too).
    pub async fn settled(&self) {
        self.tasks.wait().await;
    }

    /// The shutdown's grace period is over: every running job is interrupted. Each
    /// sends `ABOR` to both servers and closes its sessions (wait with
    /// [`Jobs::settled`]); its record stays for `GET`, state `interrupted`, with what
    /// had moved.
    pub fn interrupt(&self) {
        let mut reg = self.lock();
        let running: Vec<JobId> = reg
            .jobs
            .values()
            .filter(|j| j.state == State::Running)
            .map(|j| j.id)
            .collect();
        for id in running {
            if let Some(job) = reg.jobs.get_mut(&id) {
                // `settle` leaves an interrupted job alone: the engine's own end (a
                // cancelled transfer) is not applied.
                job.stop.cancel();
                job.abort = None;
                interrupted(job, "the proxy shut down before it ended");
                reg.finished(id);
            }
        }
    }
}

/// Marks `job` interrupted by the shutdown, counts it and says so in the log.
fn interrupted(job: &mut Job, when: &str) {
    job.state = State::Interrupted;
    job.error = Some(format!("interrupted: {when} (SIGTERM or SIGINT)"));
    count_stopped(job, State::Interrupted);
    let bytes_done = job.watch.lock().view().0.bytes_done;
    warn!(
        id = %job.id,
        source = %job.source,
        destination = %job.destination,
        bytes_done,
        "transfer interrupted: {when}"
    );
}

/// `fxprelay_fxp_transfers_total{result="cancelled"}` (or `"interrupted"`, as `how`
/// says): one per file that was under way (by the method it was on), or one with
/// `method="none"` for a job that had not got that far. The files under way take the
/// job's state.
fn count_stopped(job: &mut Job, how: State) {
    let result = match how {
        State::Interrupted => "interrupted",
        _ => "cancelled",
    };
    let took = job
        .started
        .map_or(Default::default(), |(_, at)| at.elapsed());
    let stopped = match how {
        State::Interrupted => StopReason::Interrupted,
        _ => StopReason::Cancelled,
    };
    let mut record = job.watch.lock();
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

    /// A job placed in the registry directly, without a task.
    fn insert(jobs: &Jobs, state: State) -> JobId {
        let mut reg = jobs.lock();
        let id = JobId::new();
        let plan = Plan::file(
            &FtpUrl::parse("ftp://a/x").unwrap(),
            &FtpUrl::parse("ftp://b/y").unwrap(),
        );
        let mut job = Job::new(
            id,
            "ftp://a/x".into(),
            "ftp://b/y".into(),
            TransferOptions::default(),
            Some(&plan),
        );
        job.state = state;
        if state == State::Running {
            job.started = Some((SystemTime::now(), Instant::now()));
        }
        reg.jobs.insert(id, job);
        id
    }

    /// A one-file job's run ends with `outcome`, then the job is finished.
    fn finish(jobs: &Jobs, id: JobId, outcome: Result<Report, FxpError>) {
        let watch = jobs.lock().jobs[&id].watch.clone();
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
        jobs.finish(id);
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

    fn state(jobs: &Jobs, id: JobId) -> State {
        jobs.get(id).map(|v| v.state).unwrap()
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
            .unwrap();
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        let v = loop {
            let v = jobs.get(view.id).unwrap();
            if v.state == State::Failed || tokio::time::Instant::now() > end {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(v.state, State::Failed, "{v:?}");
        let e = v.error.unwrap_or_default();
        assert!(
            e.contains("source 127.1:1") && e.contains("not in fxp.allow"),
            "{e}"
        );
    }

    #[test]
    fn too_many_retries_are_a_bad_request() {
        let jobs = jobs(&["127.0.0.0/8"]);
        let mut req = request("ftp://127.0.0.2/x", "ftp://127.0.0.3/y");
        req.options.retries = MAX_RETRIES + 1;
        let e = jobs.submit(req).unwrap_err();
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
        assert!(jobs.list(None, PAGE_MAX).0.is_empty());
    }

    #[test]
    fn a_url_over_the_cap_is_refused_and_never_held() {
        let jobs = jobs(&["127.0.0.0/8"]);
        let long = format!("ftp://127.0.0.2/{}", "a".repeat(1 << 20));
        let e = jobs
            .submit(request(&long, "ftp://127.0.0.3/y"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("source: longer than {MAX_URL} bytes ({} bytes)", long.len())
        );
        let e = jobs
            .submit(request("ftp://127.0.0.3/y", &long))
            .unwrap_err();
        assert!(e.to_string().starts_with("destination: longer than"), "{e}");
        assert!(jobs.list(None, PAGE_MAX).0.is_empty());
        let e = bounded("é".repeat(MAX_ERROR), MAX_ERROR);
        assert!(
            e.len() <= MAX_ERROR + 6 && e.ends_with(" [...]"),
            "{}",
            e.len()
        );
    }

    /// `options.ca` names one of the operator's bundles, never a file; `insecure` needs
    /// `fxp.allow_insecure`. Refused before any task exists, so nothing is read.
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
        let with = |f: fn(&mut TransferOptions)| {
            let mut req = request("ftpes://127.0.0.99:1/x", "ftp://127.0.0.98:1/y");
            f(&mut req.options);
            jobs.submit(req)
        };
        for path in ["/dev/zero", "/etc/passwd", "/nonexistent"] {
            let mut req = request("ftpes://127.0.0.99:1/x", "ftp://127.0.0.98:1/y");
            req.options.ca = Some(path.into());
            let e = jobs.submit(req).unwrap_err();
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
        let e = with(|o| o.insecure = true).unwrap_err();
        assert!(matches!(e, SubmitError::NotPermitted(_)), "{e}");
        assert!(e.to_string().contains("fxp.allow_insecure"), "{e}");
        assert!(jobs.list(None, PAGE_MAX).0.is_empty(), "nothing was queued");

        let v = with(|o| o.ca = Some("corp".into())).unwrap();
        assert_eq!(v.options.ca.as_deref(), Some("corp"));
        jobs.set_permits(Permits {
            allow_insecure: true,
            ..Permits::default()
        });
        with(|o| o.insecure = true).unwrap();
    }

    #[test]
    fn jobs_naming_the_proxy_itself_are_refused_at_once() {
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
            let e = jobs.submit(request("ftp://127.0.0.2/x", dst)).unwrap_err();
            assert!(matches!(e, SubmitError::Forbidden(_)), "{dst}: {e}");
            assert!(e.to_string().contains("is this proxy itself"), "{e}");
        }
    }

    #[test]
    fn the_list_comes_in_pages() {
        let jobs = jobs(&[]);
        let ids: Vec<JobId> = (0..5).map(|_| insert(&jobs, State::Done)).collect();
        let ids_of = |page: Vec<JobView>| page.iter().map(|v| v.id).collect::<Vec<_>>();
        let (page, next) = jobs.list(None, 2);
        assert_eq!(ids_of(page), ids[..2]);
        assert_eq!(next, Some(ids[1]));
        let (page, next) = jobs.list(Some(ids[1]), 2);
        assert_eq!(ids_of(page), ids[2..4]);
        assert_eq!(next, Some(ids[3]));
        let (page, next) = jobs.list(Some(ids[3]), 2);
        assert_eq!(ids_of(page), ids[4..]);
        assert_eq!(next, None);
    }

    #[test]
    fn submissions_beyond_the_active_cap_are_refused() {
        let jobs = jobs(&["127.0.0.0/8"]);
        for i in 0..MAX_ACTIVE {
            insert(
                &jobs,
                if i % 2 == 0 {
                    State::Queued
                } else {
                    State::Running
                },
            );
        }
        // Refused before anything is spawned (this test has no runtime).
        let e = jobs
            .submit(request("ftp://127.0.0.2/x", "ftp://127.0.0.3/y"))
            .unwrap_err();
        assert!(matches!(e, SubmitError::TooMany(_)), "{e}");
        assert!(e.to_string().contains("too many transfers"), "{e}");
        assert_eq!(jobs.list(None, PAGE_MAX).0.len(), MAX_ACTIVE);
    }

    #[test]
    fn only_the_newest_finished_jobs_are_kept() {
        let jobs = jobs(&[]);
        let ids: Vec<JobId> = (0..MAX_FINISHED + 5)
            .map(|_| insert(&jobs, State::Running))
            .collect();
        let waiting = insert(&jobs, State::Queued);
        for &id in &ids {
            finish(&jobs, id, Ok(report()));
        }
        // The five oldest finished jobs are gone; the queued one stays whatever its age.
        assert_eq!(jobs.list(None, usize::MAX).0.len(), MAX_FINISHED + 1);
        assert!(ids[..5].iter().all(|&id| jobs.get(id).is_none()));
        assert_eq!(state(&jobs, ids[5]), State::Done);
        assert_eq!(state(&jobs, waiting), State::Queued);
        // A cancelled job counts as finished too.
        jobs.cancel(waiting);
        assert!(jobs.get(ids[5]).is_none());
        assert_eq!(state(&jobs, waiting), State::Cancelled);
    }

    #[test]
    fn a_cancelled_job_never_starts_and_keeps_its_state() {
        let jobs = jobs(&[]);
        // Cancelled while queued, before any abort handle: the task must not start.
        let queued = insert(&jobs, State::Queued);
        jobs.cancel(queued);
        assert!(!jobs.start(queued));
        assert_eq!(state(&jobs, queued), State::Cancelled);
        // Cancelled while running: the outcome that arrives afterwards is not applied.
        for outcome in [Ok(report()), Err(FxpError::Other("boom".into()))] {
            let running = insert(&jobs, State::Running);
            jobs.cancel(running);
            finish(&jobs, running, outcome);
            let v = jobs.get(running).unwrap();
            assert_eq!(v.state, State::Cancelled, "{v:?}");
            assert!(v.error.is_none() && v.method.is_none(), "{v:?}");
        }
        let running = insert(&jobs, State::Running);
        jobs.cancel(running);
        jobs.lock().jobs[&running].watch.apply(&JobEvent::Finished {
            error: Some(Failure::from(&FxpError::Other("boom".into()))),
            took: Duration::ZERO,
        });
        jobs.finish(running);
        assert_eq!(state(&jobs, running), State::Cancelled);
        // A finished job is not cancelled, nor finished twice.
        let done = insert(&jobs, State::Running);
        finish(&jobs, done, Ok(report()));
        jobs.cancel(done);
        finish(&jobs, done, Err(FxpError::Other("late".into())));
        assert_eq!(state(&jobs, done), State::Done);
    }

    /// A cancel straight after submission, before the task has run at all (on this
    /// single-threaded runtime it cannot run until the test yields).
    #[tokio::test]
    async fn a_cancel_right_after_submit_sticks() {
        let jobs = jobs(&["127.0.0.0/8"]);
        let view = jobs
            .submit(request("ftp://127.0.0.99:1/x", "ftp://127.0.0.98:1/y"))
            .unwrap();
        let v = jobs.cancel(view.id).unwrap();
        assert_eq!(v.state, State::Cancelled);
        // Time for the task to have run had it not been stopped (its connects are
        // refused at once, so it would have failed by now).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(state(&jobs, view.id), State::Cancelled);
        assert!(jobs.get(view.id).unwrap().error.is_none());
    }

    /// A job placed in the registry as running, with a task-less watch.
    fn running(jobs: &Jobs, recursive: bool) -> (JobId, Watch) {
        let id = insert(jobs, State::Running);
        let mut reg = jobs.lock();
        let job = reg.jobs.get_mut(&id).unwrap();
        job.options.recursive = recursive;
        if recursive {
            // A tree: nothing known until it is listed.
            job.watch.lock().state = JobState::default();
        }
        (id, job.watch.clone())
    }

    #[test]
    fn a_running_file_shows_its_progress_and_a_cancel_keeps_what_moved() {
        let jobs = jobs(&[]);
        let (id, watch) = running(&jobs, false);
        let progress = |event: FileEvent| watch.apply(&JobEvent::File { entry: 0, event });
        watch.apply(&JobEvent::Started { entry: 0 });
        progress(FileEvent::SourceSize { size: Some(1000) });
        progress(FileEvent::Trying {
            method: Method::Fxp,
            offset: 0,
        });
        let v = jobs.get(id).unwrap();
        assert_eq!((v.bytes_done, v.bytes_total), (0, Some(1000)));
        assert_eq!((v.files_total, v.method), (Some(1), Some("fxp")));
        progress(FileEvent::Bytes {
            done: 400,
            total: Some(1000),
        });
        std::thread::sleep(Duration::from_millis(5));
        let v = jobs.get(id).unwrap();
        assert_eq!(v.bytes_done, 400);
        assert!(v.rate_bytes_per_second.is_some_and(|r| r > 0.0), "{v:?}");
        assert!(v.eta_seconds.is_some_and(|e| e > 0.0), "{v:?}");
        assert!(v.started_at.is_some() && v.finished_at.is_none(), "{v:?}");

        let v = jobs.cancel(id).unwrap();
        assert_eq!((v.state, v.bytes_done), (State::Cancelled, 400));
        assert!(v.finished_at.is_some() && v.eta_seconds.is_none(), "{v:?}");
        // What a stopped engine might still report is not applied.
        progress(FileEvent::Bytes {
            done: 900,
            total: Some(1000),
        });
        assert_eq!(jobs.get(id).unwrap().bytes_done, 400);
    }

    #[test]
    fn a_tree_counts_its_files_and_keeps_failures_first() {
        let jobs = jobs(&[]);
        let (id, watch) = running(&jobs, true);
        let v = jobs.get(id).unwrap();
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
        let v = jobs.get(id).unwrap();
        assert_eq!(
            (v.files_total, v.files_done, v.files_failed),
            (Some(list.len()), 1, 1)
        );
        assert_eq!(v.bytes_done, 1 + 4);
        let files = v.files.unwrap();
        assert_eq!(files[1].state, State::Running);
        assert!(!files[0].source.contains("secret"), "{:?}", files[0]);
        assert!(
            jobs.list(None, 10).0[0].files.is_none(),
            "the list leaves files out"
        );

        watch.apply(&JobEvent::Finished {
            error: None,
            took: Duration::ZERO,
        });
        jobs.finish(id);
        let v = jobs.get(id).unwrap();
        // A file failed: so did the tree, and it says so in its summary.
        assert_eq!(v.state, State::Failed);
        assert!(v.error.as_deref().unwrap().contains("1 FAILED"), "{v:?}");
        assert_eq!((v.files_done, v.files_failed, v.bytes_done), (1, 1, 5));
        let files = v.files.unwrap();
        assert_eq!(files.len(), MAX_FILE_RECORDS);
        assert_eq!(v.files_omitted, Some(2));
        assert_eq!(files[0].state, State::Failed, "failures first");
        assert_eq!(files[0].error.as_deref(), Some("550 no"));
    }

    #[test]
    fn times_are_rfc3339() {
        let jobs = jobs(&[]);
        let id = insert(&jobs, State::Queued);
        let v = jobs.get(id).unwrap();
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
                    .unwrap();
                assert!(seen.insert(v.id), "{} twice", v.id);
                assert_ne!(v.id.to_string(), "1");
            }
        }
        for jobs in [&first, &second] {
            let ids: Vec<JobId> = jobs.list(None, PAGE_MAX).0.iter().map(|v| v.id).collect();
            assert_eq!(ids.len(), 50);
            assert!(ids.windows(2).all(|w| w[0] < w[1]));
        }
    }

    /// SIGTERM: queued jobs are interrupted at once, running ones go on until the grace
    /// period ends; then they are interrupted too, keeping what had moved; nothing new is
    /// taken meanwhile, and what the engine reports afterwards is not applied.
    #[tokio::test]
    async fn a_drain_interrupts_queued_jobs_then_running_ones_and_keeps_their_records() {
        let jobs = jobs(&["127.0.0.0/8"]);
        let queued = insert(&jobs, State::Queued);
        let (running, watch) = running(&jobs, false);
        watch.apply(&JobEvent::Started { entry: 0 });
        watch.apply(&JobEvent::File {
            entry: 0,
            event: FileEvent::Bytes {
                done: 300,
                total: Some(1000),
            },
        });
        let done = insert(&jobs, State::Done);
        jobs.drain();
        let v = jobs.get(queued).unwrap();
        assert_eq!(v.state, State::Interrupted, "{v:?}");
        assert!(
            v.error.as_deref().unwrap().contains("before it started"),
            "{v:?}"
        );
        assert_eq!(state(&jobs, running), State::Running);
        assert_eq!(jobs.running(), 1);
        let e = jobs
            .submit(request("ftp://127.0.0.2/x", "ftp://127.0.0.3/y"))
            .unwrap_err();
        assert!(matches!(e, SubmitError::ShuttingDown(_)), "{e}");

        let stop = jobs.lock().jobs[&running].stop.clone();
        jobs.interrupt();
        assert!(stop.is_cancelled(), "the engine is told to ABOR");
        let v = jobs.get(running).unwrap();
        assert_eq!((v.state, v.bytes_done), (State::Interrupted, 300), "{v:?}");
        assert!(v.finished_at.is_some(), "{v:?}");
        assert!(v.error.as_deref().unwrap().contains("shut down"), "{v:?}");
        finish(&jobs, running, Err(FxpError::Cancelled));
        assert_eq!(state(&jobs, running), State::Interrupted);
        assert_eq!(state(&jobs, done), State::Done);
        assert_eq!(jobs.running(), 0);
        // No task runs (these jobs had none): settled at once.
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
