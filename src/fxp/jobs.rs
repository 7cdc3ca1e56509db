//! FXP transfers ordered over the admin HTTP API: a registry of jobs, each one a task
//! running the engine, with the state the API reports. Passwords are kept only inside
//! the task that needs them; everything the API shows is redacted.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tracing::{Instrument, info, warn};

use super::client::Allow;
use super::engine::{self, Options};
use super::tree;
use super::url::FtpUrl;
use crate::config::AllowEntry;

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
    #[serde(default)]
    pub retries: Option<u32>,
}

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
    /// The servers' own words when something failed.
    pub error: Option<String>,
    /// Unix time of submission.
    pub submitted: u64,
}

/// Why a submission was refused (the API's `400`/`403`).
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{field}: {message}")]
    BadRequest {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Forbidden(String),
}

struct Job {
    view: JobView,
    abort: Option<AbortHandle>,
}

/// The registry shared by the API handlers.
#[derive(Clone)]
pub struct Jobs {
    jobs: Arc<Mutex<BTreeMap<u64, Job>>>,
    next: Arc<Mutex<u64>>,
    slots: Arc<Semaphore>,
    allow: Arc<Vec<AllowEntry>>,
}

impl Jobs {
    /// `allow` is the top-level `fxp.allow` list: the only servers jobs may reach.
    pub fn new(allow: Vec<AllowEntry>, concurrency: usize) -> Jobs {
        Jobs {
            jobs: Arc::default(),
            next: Arc::new(Mutex::new(1)),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            allow: Arc::new(allow),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Job>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Validates and queues a transfer; it starts when a slot is free.
    pub fn submit(&self, req: Request) -> Result<JobView, SubmitError> {
        let parse = |field, s: &str| {
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
        let id = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let id = *next;
            *next += 1;
            id
        };
        let view = JobView {
            id,
            source: src.to_string(),
            destination: dst.to_string(),
            state: State::Queued,
            method: None,
            bytes: None,
            relayed_bytes: None,
            files: None,
            seconds: None,
            error: None,
            submitted: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        self.lock().insert(
            id,
            Job {
                view: view.clone(),
                abort: None,
            },
        );
        let opts = Options {
            reverse: req.options.reverse,
            retries: req.options.retries.unwrap_or(2),
            allow: Some(self.allow_for(&src, &dst)),
            ..Options::default()
        };
        let me = self.clone();
        let recursive = req.options.recursive;
        let span = tracing::info_span!("fxp_job", id);
        let task = tokio::spawn(
            async move {
                let Ok(_slot) = me.slots.clone().acquire_owned().await else {
                    return;
                };
                me.update(id, |v| v.state = State::Running);
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
        if let Some(job) = self.lock().get_mut(&id) {
            job.abort = Some(task.abort_handle());
        }
        Ok(view)
    }

    /// A URL whose host is an IP literal outside the allow list is refused at once;
    /// names are checked on their resolved addresses when the job connects.
    fn check_literal(&self, url: &FtpUrl) -> Result<(), SubmitError> {
        let Ok(ip) = url.host.parse::<IpAddr>() else {
            return Ok(());
        };
        if self.allow.iter().any(|e| e.contains(ip)) {
            Ok(())
        } else {
            Err(SubmitError::Forbidden(format!("{ip} is not in fxp.allow")))
        }
    }

    /// The engine's address check: a host named in the list may resolve anywhere; any
    /// other host's addresses must fall inside a listed network.
    fn allow_for(&self, src: &FtpUrl, dst: &FtpUrl) -> Allow {
        let allow = self.allow.clone();
        let named: Vec<String> = [src, dst]
            .iter()
            .filter(|u| allow.iter().any(|e| e.names(&u.host)))
            .map(|u| u.host.clone())
            .collect();
        Arc::new(move |addr: SocketAddr| {
            if !named.is_empty() || allow.iter().any(|e| e.contains(addr.ip())) {
                Ok(())
            } else {
                Err(format!("{} is not in fxp.allow", addr.ip()))
            }
        })
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut JobView)) {
        if let Some(job) = self.lock().get_mut(&id) {
            f(&mut job.view);
        }
    }

    fn finish(&self, id: u64, outcome: Result<engine::Report, engine::FxpError>) {
        self.update(id, |v| match outcome {
            Ok(r) => {
                v.state = State::Done;
                v.method = Some(r.method.as_str().to_string());
                v.bytes = Some(r.bytes);
                v.relayed_bytes = Some(r.relayed_bytes);
                v.seconds = Some(r.duration.as_secs_f64());
                info!(method = r.method.as_str(), bytes = r.bytes, "transfer done");
            }
            Err(e) => {
                v.state = State::Failed;
                v.error = Some(e.to_string());
                warn!(error = %e, "transfer failed");
            }
        });
    }

    fn finish_tree(&self, id: u64, outcome: Result<tree::TreeReport, engine::FxpError>) {
        self.update(id, |v| match outcome {
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
                v.error = Some(r.summary());
            }
            Err(e) => {
                v.state = State::Failed;
                v.error = Some(e.to_string());
            }
        });
    }

    pub fn list(&self) -> Vec<JobView> {
        self.lock().values().map(|j| j.view.clone()).collect()
    }

    pub fn get(&self, id: u64) -> Option<JobView> {
        self.lock().get(&id).map(|j| j.view.clone())
    }

    /// Stops a queued or running job (dropping the engine's future closes both control
    /// connections); a finished one is left as it is.
    pub fn cancel(&self, id: u64) -> Option<JobView> {
        let mut jobs = self.lock();
        let job = jobs.get_mut(&id)?;
        if matches!(job.view.state, State::Queued | State::Running) {
            if let Some(a) = job.abort.take() {
                a.abort();
            }
            job.view.state = State::Cancelled;
            info!(id, "transfer cancelled");
        }
        Some(job.view.clone())
    }
}
