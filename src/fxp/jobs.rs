//! FXP transfers ordered over the admin HTTP API: a registry of jobs, each one a task
//! running the engine, with the state the API reports. Passwords are kept only inside
//! the task that needs them; everything the API shows is redacted.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tracing::{Instrument, info, warn};

use super::engine::{self, Options};
use super::tree;
use super::url::FtpUrl;
use crate::net::{AllowList, OwnSockets};

/// What a client posts to `POST /api/v1/transfers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub source: String,
    pub destination: String,
    #[serde(default)]
    pub options: RequestOptions,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestOptions {
    /// Reverse FXP first (`PASV` on the destination).
    #[serde(default)]
    pub reverse: bool,
    /// Copy a directory tree.
    #[serde(default)]
    pub recursive: bool,
    /// Further attempts after a failed one (default 2, at most [`MAX_RETRIES`]).
    #[serde(default)]
    pub retries: Option<u32>,
    /// `auto` (default), `hash`, `size` or `none`: see the CLI's `--verify`.
    #[serde(default)]
    pub verify: engine::Verify,
    /// `keep` (default: renamed to `NAME.fxprelay-mismatch`) or `delete`.
    #[serde(default)]
    pub on_mismatch: engine::OnMismatch,
}

/// Most retries a submission may ask for: each one logs in to both servers again.
pub const MAX_RETRIES: u32 = 10;
/// Longest URL a job may name. Paths and host names fit easily (Linux's PATH_MAX is 4096
/// bytes); what a job holds stays small: about 4 KiB per URL, kept twice (as parsed and as
/// shown), plus at most [`MAX_ERROR`] of error text, so the registry's
/// [`MAX_ACTIVE`] + [`MAX_FINISHED`] jobs stay under about 40 MB in all.
pub const MAX_URL: usize = 4096;
/// Longest error text a job keeps (servers' replies can be long).
pub const MAX_ERROR: usize = 2048;
/// `GET /api/v1/transfers` pages: the default and the largest `limit`.
pub const PAGE_DEFAULT: usize = 100;
pub const PAGE_MAX: usize = 1000;
/// Finished jobs kept for `GET` (the newest); older ones are forgotten so a long-running
/// proxy's registry does not grow without bound.
pub const MAX_FINISHED: usize = 1000;
/// Queued and running jobs at most: each queued job holds its URLs (with passwords) and
/// a task, so a flood of submissions is refused rather than buffered without bound.
pub const MAX_ACTIVE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: u64,
    /// The URLs with their passwords masked.
    pub source: String,
    pub destination: String,
    pub state: State,
    /// `fxp`, `reverse_fxp` or `relay` once known (for a tree: the first file's).
    pub method: Option<String>,
    pub bytes: Option<u64>,
    /// Bytes that crossed the proxy (0 for FXP).
    pub relayed_bytes: Option<u64>,
    /// Files copied (trees).
    pub files: Option<usize>,
    pub seconds: Option<f64>,
    /// What the copy was checked with: `sha-256` (or another hash), `size` or `none`.
    pub verified: Option<engine::Check>,
    /// The servers' own words when something failed.
    pub error: Option<String>,
    /// Unix time of submission.
    pub submitted: u64,
}

impl JobView {
    /// A job just submitted: nothing known yet but what it copies.
    fn queued(id: u64, source: String, destination: String) -> JobView {
        JobView {
            id,
            source,
            destination,
            state: State::Queued,
            method: None,
            bytes: None,
            relayed_bytes: None,
            files: None,
            seconds: None,
            verified: None,
            error: None,
            submitted: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// Why a submission was refused (the API's `400`/`403`/`429`).
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{field}: {message}")]
    BadRequest {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Forbidden(String),
    /// [`MAX_ACTIVE`] jobs are queued or running already.
    #[error("{0}")]
    TooMany(String),
}

struct Job {
    view: JobView,
    /// Installed under the registry lock in the same step as the job itself, so a
    /// cancel can always reach the task.
    abort: Option<AbortHandle>,
}

/// Everything behind the registry's one lock.
struct Registry {
    jobs: BTreeMap<u64, Job>,
    /// Finished jobs' ids, oldest first, for dropping beyond [`MAX_FINISHED`].
    finished: VecDeque<u64>,
    next: u64,
}

impl Registry {
    fn active(&self) -> usize {
        self.jobs
            .values()
            .filter(|j| matches!(j.view.state, State::Queued | State::Running))
            .count()
    }

    /// Records that `id` has reached a final state and forgets the oldest finished jobs
    /// beyond [`MAX_FINISHED`].
    fn finished(&mut self, id: u64) {
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
    /// `fxp.allow` and `fxp.concurrency` as last loaded; a reload replaces them.
    settings: Arc<RwLock<Settings>>,
    /// `fxp.allow_clear_data` as last loaded.
    clear_data: Arc<std::sync::atomic::AtomicBool>,
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
                next: 1,
            })),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            settings: Arc::new(RwLock::new(Settings {
                allow: Arc::new(allow),
                concurrency: concurrency.max(1),
                own: None,
            })),
            clear_data: Arc::default(),
        }
    }

    /// `fxp.allow_clear_data` for jobs submitted from now on: FXP with `PROT C` between
    /// TLS servers that cannot encrypt between themselves.
    pub fn set_allow_clear_data(&self, allowed: bool) {
        self.clear_data
            .store(allowed, std::sync::atomic::Ordering::Relaxed);
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
        let retries = req.options.retries.unwrap_or(2);
        if retries > MAX_RETRIES {
            return Err(SubmitError::BadRequest {
                field: "options.retries",
                message: format!("at most {MAX_RETRIES}, not {retries}"),
            });
        }
        let opts = Options {
            reverse: req.options.reverse,
            retries,
            allow: Some(self.allow()),
            allow_clear_data: self.clear_data.load(std::sync::atomic::Ordering::Relaxed),
            own: self.own(),
            verify: req.options.verify,
            on_mismatch: req.options.on_mismatch,
            ..Options::default()
        };
        let recursive = req.options.recursive;
        let me = self.clone();
        let mut reg = self.lock();
        if reg.active() >= MAX_ACTIVE {
            return Err(SubmitError::TooMany(format!(
                "too many transfers queued or running (at most {MAX_ACTIVE}): \
                 try again once some have finished"
            )));
        }
        let id = reg.next;
        reg.next += 1;
        let view = JobView::queued(id, src.to_string(), dst.to_string());
        let span = tracing::info_span!("fxp_job", id);
        // Spawned with the registry locked: the task's first step (`start`) waits for
        // the lock, so the job and its abort handle are in place before it can run and
        // a cancel at any moment after this returns stops it.
        let task = tokio::spawn(
            async move {
                let Ok(_slot) = me.slots.clone().acquire_owned().await else {
                    return;
                };
                if !me.start(id) {
                    return;
                }
                info!(source = %src, destination = %dst, "transfer started");
                if recursive {
                    let outcome = tree::copy_tree(&src, &dst, &opts).await;
                    me.finish_tree(id, outcome);
                } else {
                    let outcome = engine::transfer(&src, &dst, &opts).await;
                    me.finish(id, outcome);
                }
            }
            .instrument(span),
        );
        reg.jobs.insert(
            id,
            Job {
                view: view.clone(),
                abort: Some(task.abort_handle()),
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
    fn start(&self, id: u64) -> bool {
        let mut reg = self.lock();
        match reg.jobs.get_mut(&id) {
            Some(job) if job.view.state == State::Queued => {
                job.view.state = State::Running;
                true
            }
            _ => false,
        }
    }

    /// Applies a running job's outcome; a job cancelled meanwhile stays cancelled.
    fn settle(&self, id: u64, f: impl FnOnce(&mut JobView)) {
        let mut reg = self.lock();
        let Some(job) = reg.jobs.get_mut(&id) else {
            return;
        };
        if job.view.state != State::Running {
            return;
        }
        f(&mut job.view);
        job.abort = None;
        reg.finished(id);
    }

    fn finish(&self, id: u64, outcome: Result<engine::Report, engine::FxpError>) {
        self.settle(id, |v| match outcome {
            Ok(r) => {
                v.state = State::Done;
                v.method = Some(r.method.as_str().to_string());
                v.bytes = Some(r.bytes);
                v.relayed_bytes = Some(r.relayed_bytes);
                v.seconds = Some(r.duration.as_secs_f64());
                v.verified = Some(r.verified);
                info!(method = r.method.as_str(), bytes = r.bytes, verified = %r.verified, "transfer done");
            }
            Err(e) => {
                v.state = State::Failed;
                v.error = Some(bounded_error(e.to_string()));
                warn!(error = %e, "transfer failed");
            }
        });
    }

    fn finish_tree(&self, id: u64, outcome: Result<tree::TreeReport, engine::FxpError>) {
        self.settle(id, |v| match outcome {
            Ok(r) if r.failed.is_empty() => {
                v.state = State::Done;
                v.files = Some(r.files);
                v.bytes = Some(r.bytes);
                v.relayed_bytes = Some(r.relayed_bytes);
                v.method = r.methods.keys().next().map(|m| m.to_string());
                v.seconds = Some(r.duration.as_secs_f64());
            }
            Ok(r) => {
                v.state = State::Failed;
                v.files = Some(r.files);
                v.error = Some(bounded_error(r.summary()));
            }
            Err(e) => {
                v.state = State::Failed;
                v.error = Some(bounded_error(e.to_string()));
            }
        });
    }

    /// Up to `limit` jobs with ids above `after`, oldest first, and the cursor for the
    /// next page (`None` on the last one).
    pub fn list(&self, after: u64, limit: usize) -> (Vec<JobView>, Option<u64>) {
        let reg = self.lock();
        let mut page: Vec<JobView> = reg
            .jobs
            .range(after.saturating_add(1)..)
            .take(limit.saturating_add(1))
            .map(|(_, j)| j.view.clone())
            .collect();
        let next = (page.len() > limit).then(|| {
            page.truncate(limit);
            page.last().map_or(after, |v| v.id)
        });
        (page, next)
    }

    pub fn get(&self, id: u64) -> Option<JobView> {
        self.lock().jobs.get(&id).map(|j| j.view.clone())
    }

    /// Stops a queued or running job (dropping the engine's future closes both control
    /// connections); a finished one is left as it is.
    pub fn cancel(&self, id: u64) -> Option<JobView> {
        let mut reg = self.lock();
        let job = reg.jobs.get_mut(&id)?;
        let view = if matches!(job.view.state, State::Queued | State::Running) {
            // Even if the task is past its last await, `settle` will not overwrite this.
            if let Some(a) = job.abort.take() {
                a.abort();
            }
            job.view.state = State::Cancelled;
            info!(id, "transfer cancelled");
            let view = job.view.clone();
            reg.finished(id);
            view
        } else {
            job.view.clone()
        };
        Some(view)
    }
}

/// `text` cut to [`MAX_ERROR`] bytes (on a character boundary), marked when cut.
fn bounded_error(mut text: String) -> String {
    if text.len() > MAX_ERROR {
        let mut end = MAX_ERROR;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" [...]");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn jobs(allow: &[&str]) -> Jobs {
        let allow: AllowList = allow.iter().map(|s| s.parse().unwrap()).collect();
        Jobs::new(allow.named("fxp.allow"), 1)
    }

    fn request(source: &str, destination: &str) -> Request {
        Request {
            source: source.into(),
            destination: destination.into(),
            options: RequestOptions::default(),
        }
    }

    /// A job placed in the registry directly, without a task.
    fn insert(jobs: &Jobs, state: State) -> u64 {
        let mut reg = jobs.lock();
        let id = reg.next;
        reg.next += 1;
        let view = JobView {
            state,
            ..JobView::queued(id, "ftp://a/x".into(), "ftp://b/y".into())
        };
        reg.jobs.insert(id, Job { view, abort: None });
        id
    }

    fn report() -> engine::Report {
        engine::Report {
            method: engine::Method::Fxp,
            bytes: 1,
            relayed_bytes: 0,
            resumed_from: 0,
            attempts: 1,
            duration: Duration::ZERO,
            verified: engine::Check::Size,
        }
    }

    fn state(jobs: &Jobs, id: u64) -> State {
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
        req.options.retries = Some(MAX_RETRIES + 1);
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
        assert!(jobs.list(0, PAGE_MAX).0.is_empty());
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
        assert!(jobs.list(0, PAGE_MAX).0.is_empty());
        let e = bounded_error("é".repeat(MAX_ERROR));
        assert!(
            e.len() <= MAX_ERROR + 6 && e.ends_with(" [...]"),
            "{}",
            e.len()
        );
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
        let ids: Vec<u64> = (0..5).map(|_| insert(&jobs, State::Done)).collect();
        let ids_of = |page: Vec<JobView>| page.iter().map(|v| v.id).collect::<Vec<_>>();
        let (page, next) = jobs.list(0, 2);
        assert_eq!(ids_of(page), ids[..2]);
        assert_eq!(next, Some(ids[1]));
        let (page, next) = jobs.list(ids[1], 2);
        assert_eq!(ids_of(page), ids[2..4]);
        assert_eq!(next, Some(ids[3]));
        let (page, next) = jobs.list(ids[3], 2);
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
        assert_eq!(jobs.list(0, PAGE_MAX).0.len(), MAX_ACTIVE);
    }

    #[test]
    fn verification_options_and_result() {
        let req: Request = serde_json::from_str(
            r#"{"source": "ftp://a/x", "destination": "ftp://b/y",
                "options": {"verify": "hash", "on_mismatch": "delete"}}"#,
        )
        .unwrap();
        assert_eq!(req.options.verify, engine::Verify::Hash);
        assert_eq!(req.options.on_mismatch, engine::OnMismatch::Delete);
        let default: Request =
            serde_json::from_str(r#"{"source": "ftp://a/x", "destination": "ftp://b/y"}"#).unwrap();
        assert_eq!(default.options.verify, engine::Verify::Auto);
        assert_eq!(default.options.on_mismatch, engine::OnMismatch::Keep);
        let bad = serde_json::from_str::<Request>(
            r#"{"source": "a", "destination": "b", "options": {"verify": "sha"}}"#,
        );
        assert!(bad.is_err());
        let jobs = jobs(&[]);
        let id = insert(&jobs, State::Running);
        jobs.finish(id, Ok(report()));
        let json = serde_json::to_string(&jobs.get(id).unwrap()).unwrap();
        assert!(json.contains(r#""verified":"size""#), "{json}");
    }

    #[test]
    fn only_the_newest_finished_jobs_are_kept() {
        let jobs = jobs(&[]);
        let ids: Vec<u64> = (0..MAX_FINISHED + 5)
            .map(|_| insert(&jobs, State::Running))
            .collect();
        let waiting = insert(&jobs, State::Queued);
        for &id in &ids {
            jobs.finish(id, Ok(report()));
        }
        // The five oldest finished jobs are gone; the queued one stays whatever its age.
        assert_eq!(jobs.list(0, usize::MAX).0.len(), MAX_FINISHED + 1);
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
        for outcome in [Ok(report()), Err(engine::FxpError::Other("boom".into()))] {
            let running = insert(&jobs, State::Running);
            jobs.cancel(running);
            jobs.finish(running, outcome);
            let v = jobs.get(running).unwrap();
            assert_eq!(v.state, State::Cancelled, "{v:?}");
            assert!(v.error.is_none() && v.method.is_none(), "{v:?}");
        }
        let running = insert(&jobs, State::Running);
        jobs.cancel(running);
        jobs.finish_tree(running, Err(engine::FxpError::Other("boom".into())));
        assert_eq!(state(&jobs, running), State::Cancelled);
        // A finished job is not cancelled, nor finished twice.
        let done = insert(&jobs, State::Running);
        jobs.finish(done, Ok(report()));
        jobs.cancel(done);
        jobs.finish(done, Err(engine::FxpError::Other("late".into())));
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
