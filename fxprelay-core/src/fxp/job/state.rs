//! A job's progress, kept once: [`JobState`] folds the job's events ([`JobEvent`]) into
//! what every entry is doing or did, and the totals the front ends show. Pure: no clock
//! (durations come in the events), no I/O; serializable, so a job's state can be saved
//! and restored. The CLI's bars and report, the admin API's job view and `SITE FXP`'s
//! `STAT` and replies are renderings of it.
//!
//! Folding rules:
//! - `Planned` lists the entries; those the plan skips are `skipped` from then on.
//! - An event naming an entry the plan does not have is ignored, and so is one about an
//!   entry that has ended: an ending is final.
//! - `Stopped` ends every entry still queued or running, as stopped; nothing that
//!   arrives after it changes an entry. `Finished` closes the job.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::event::{EntryOutcome, Failure, FailureKind, FileEvent, JobEvent, Report, StopReason};
use super::mirror::{Kind, Operation, Reason};
use super::plan::{OutlineEntry, Shape};
use crate::fxp::digest::Check;
use crate::fxp::method::Method;

/// Everything known of one job, from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    /// Set by `Planned`: `None` while a tree is still being listed.
    pub shape: Option<Shape>,
    /// Directories in a tree's source (those the filters admit).
    pub dirs: usize,
    pub dry_run: bool,
    /// Every entry of the plan, in its order.
    pub entries: Vec<EntryState>,
    /// Why the job was stopped before its end, if it was.
    pub stopped: Option<StopReason>,
    /// Set by `Finished`.
    pub finished: Option<Finished>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    /// The job's own failure (a source that cannot be listed), not an entry's.
    pub error: Option<Failure>,
    pub took: Duration,
}

/// One entry of a job: what the plan says of it, and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryState {
    pub plan: OutlineEntry,
    pub status: Status,
    /// The method being tried, then the one that copied the file.
    pub method: Option<Method>,
    /// Bytes at the destination: as last polled or counted while running; the copy's
    /// size once copied; what had moved when it failed or was stopped.
    pub done: u64,
    /// The source's size: as the plan's listing said, then as `SIZE` tells.
    pub total: Option<u64>,
    /// Attempts that failed as a whole and were retried.
    pub retries: u32,
    /// The copy's record, once copied.
    pub report: Option<Report>,
    pub error: Option<Failure>,
    /// From its start to its end.
    pub took: Duration,
}

/// Where an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Running,
    /// A file copied and checked.
    Copied,
    /// A directory made on the destination (or there already).
    Created,
    Deleted,
    /// Left as it is (the plan says so: the destination's copy is up to date).
    Skipped,
    Failed,
    /// Not begun, or stopped part way.
    Stopped(StopReason),
}

impl Status {
    /// Queued or running: the entry may still change.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Queued | Status::Running)
    }
}

impl EntryState {
    fn new(plan: OutlineEntry) -> EntryState {
        let status = match plan.operation {
            Operation::Skip => Status::Skipped,
            _ => Status::Queued,
        };
        EntryState {
            total: plan.size,
            plan,
            status,
            method: None,
            done: 0,
            retries: 0,
            report: None,
            error: None,
            took: Duration::ZERO,
        }
    }

    /// A file the plan copies.
    pub fn is_copy(&self) -> bool {
        self.plan.operation == Operation::Copy
    }

    fn file(&mut self, event: &FileEvent) {
        match event {
            FileEvent::SourceSize { size } => self.total = size.or(self.total),
            FileEvent::Trying { method, offset } => {
                self.method = Some(*method);
                self.done = *offset;
            }
            FileEvent::Bytes { done, total } => {
                self.done = *done;
                self.total = total.or(self.total);
            }
            FileEvent::Retrying { attempt, .. } => self.retries = *attempt,
            FileEvent::MethodFailed { .. } => {}
        }
    }

    fn ended(&mut self, took: Duration, outcome: &EntryOutcome) {
        self.took = took;
        self.status = match outcome {
            EntryOutcome::Copied(r) => {
                self.method = Some(r.method);
                self.done = r.bytes;
                self.total = self.total.or(Some(r.bytes));
                self.report = Some(r.clone());
                Status::Copied
            }
            EntryOutcome::Created => Status::Created,
            EntryOutcome::Deleted => Status::Deleted,
            EntryOutcome::Failed(f) if f.kind == FailureKind::Cancelled => {
                Status::Stopped(StopReason::Cancelled)
            }
            EntryOutcome::Failed(f) => {
                self.error = Some(f.clone());
                Status::Failed
            }
        };
    }
}

impl JobState {
    /// A job that has heard nothing yet.
    pub fn new() -> JobState {
        JobState::default()
    }

    /// The state after `events`, from nothing.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a JobEvent>) -> JobState {
        let mut s = JobState::new();
        for e in events {
            s.apply(e);
        }
        s
    }

    /// Folds one event in (see the module doc for the rules).
    pub fn apply(&mut self, event: &JobEvent) {
        if self.finished.is_some() {
            return;
        }
        match event {
            JobEvent::Planned(outline) => {
                // A provisional plan (the API shows a file job's entry while it is
                // queued) gives way to the runner's, which knows what the destination
                // has: the same entries, refined, before work begins. Any other second
                // plan changes nothing.
                let begun = self
                    .entries
                    .iter()
                    .any(|e| !matches!(e.status, Status::Queued | Status::Skipped));
                let refines = self.shape == Some(outline.shape)
                    && self.entries.len() == outline.entries.len()
                    && self
                        .entries
                        .iter()
                        .zip(&outline.entries)
                        .all(|(e, o)| e.plan.path == o.path && e.plan.dst == o.dst);
                if (self.shape.is_some() && (begun || !refines)) || self.stopped.is_some() {
                    return;
                }
                self.shape = Some(outline.shape);
                self.dirs = outline.dirs;
                self.dry_run = outline.dry_run;
                self.entries = outline
                    .entries
                    .iter()
                    .cloned()
                    .map(EntryState::new)
                    .collect();
            }
            JobEvent::Started { entry } => {
                if let Some(e) = self.active(*entry) {
                    e.status = Status::Running;
                }
            }
            JobEvent::File { entry, event } => {
                if let Some(e) = self.active(*entry) {
                    e.file(event);
                }
            }
            JobEvent::Ended {
                entry,
                took,
                outcome,
            } => {
                if let Some(e) = self.active(*entry) {
                    e.ended(*took, outcome);
                }
            }
            JobEvent::Stopped(why) => {
                if self.stopped.is_some() {
                    return;
                }
                self.stopped = Some(*why);
                for e in self.entries.iter_mut().filter(|e| e.status.is_active()) {
                    e.status = Status::Stopped(*why);
                }
            }
            JobEvent::Finished { error, took } => {
                self.finished = Some(Finished {
                    error: error.clone(),
                    took: *took,
                });
            }
        }
    }

    /// Entry `n`, while it may still change.
    fn active(&mut self, n: usize) -> Option<&mut EntryState> {
        if self.stopped.is_some() {
            return None;
        }
        self.entries.get_mut(n).filter(|e| e.status.is_active())
    }

    /// The plan is known (a tree: listed).
    pub fn planned(&self) -> bool {
        self.shape.is_some()
    }

    /// The job is over.
    pub fn is_finished(&self) -> bool {
        self.finished.is_some()
    }

    /// A tree (not one file, not a list).
    pub fn is_tree(&self) -> bool {
        self.shape == Some(Shape::Tree)
    }

    /// The files the plan copies, in its order.
    pub fn files(&self) -> impl Iterator<Item = &EntryState> {
        self.entries.iter().filter(|e| e.is_copy())
    }

    /// Entries that failed, in the plan's order.
    pub fn failures(&self) -> impl Iterator<Item = &EntryState> {
        self.entries.iter().filter(|e| e.status == Status::Failed)
    }

    /// The job's own failure, else its first entry's.
    pub fn first_error(&self) -> Option<&Failure> {
        self.finished
            .as_ref()
            .and_then(|f| f.error.as_ref())
            .or_else(|| self.failures().find_map(|e| e.error.as_ref()))
    }

    /// A one-file job whose file was left alone (`skip_existing`: the destination has
    /// it). It has no copy and no failure.
    pub fn skipped(&self) -> bool {
        self.entries.len() == 1 && self.entries[0].status == Status::Skipped
    }

    /// A one-file job's outcome: the copy's record, or why there is none (the job's own
    /// failure, the file's, or its stop). `None` while it runs.
    pub fn outcome(&self) -> Option<Result<&Report, Failure>> {
        if let Some(e) = self.entries.first() {
            match e.status {
                Status::Copied => return e.report.as_ref().map(Ok),
                Status::Failed => return e.error.clone().map(Err),
                Status::Stopped(_) => {
                    return Some(Err(Failure::new(FailureKind::Cancelled, "interrupted")));
                }
                _ => {}
            }
        }
        let f = self.finished.as_ref()?;
        Some(Err(f.error.clone().unwrap_or_else(|| {
            Failure::new(FailureKind::Other, "the job ended without copying the file")
        })))
    }

    /// The counts over the whole job.
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            files_total: self.planned().then(|| self.files().count()),
            bytes_total: if self.planned() {
                self.files().map(|e| e.total).sum()
            } else {
                None
            },
            ..Totals::default()
        };
        let mut trying: Vec<(Method, usize)> = Vec::new();
        for e in &self.entries {
            match e.status {
                Status::Copied => t.files_copied += 1,
                Status::Failed => t.failed += 1,
                Status::Skipped => t.skipped += 1,
                Status::Created => t.created += 1,
                Status::Deleted => t.deleted += 1,
                Status::Stopped(_) => t.stopped += 1,
                Status::Queued | Status::Running => {}
            }
            if !e.is_copy() {
                continue;
            }
            if e.status == Status::Failed {
                t.files_failed += 1;
            }
            t.bytes_done += e.done;
            if let Some(m) = e.method {
                match trying.iter_mut().find(|(x, _)| *x == m) {
                    Some((_, n)) => *n += 1,
                    None => trying.push((m, 1)),
                }
            }
            if let Some(r) = &e.report {
                t.bytes_copied += r.bytes;
                t.relayed_bytes += r.relayed_bytes;
                *t.methods.entry(r.method.as_str()).or_default() += 1;
                *t.checks.entry(r.verified.as_str()).or_default() += 1;
                t.weakest_check = Some(t.weakest_check.map_or(r.verified, |c| c.min(r.verified)));
            }
        }
        // The method most files use or used, the first seen of equals.
        let best = trying.iter().map(|(_, n)| *n).max();
        t.method = trying
            .iter()
            .find(|(_, n)| Some(*n) == best)
            .map(|(m, _)| *m);
        t
    }

    /// Every entry as its report line shows it, in the plan's order.
    pub fn records(&self) -> Vec<FileRecord> {
        self.entries.iter().map(|e| self.record(e)).collect()
    }

    fn record(&self, e: &EntryState) -> FileRecord {
        let result = match (self.dry_run, e.status, e.plan.operation) {
            (true, _, Operation::CreateDir) => EntryResult::WouldCreate,
            (true, _, Operation::Copy) => EntryResult::WouldCopy,
            (true, _, Operation::Delete | Operation::RemoveDir) => EntryResult::WouldDelete,
            (_, Status::Skipped, _) => EntryResult::Skipped,
            (_, Status::Copied, _) => EntryResult::Copied,
            (_, Status::Created, _) => EntryResult::Created,
            (_, Status::Deleted, _) => EntryResult::Deleted,
            (_, Status::Failed, _) => EntryResult::Failed,
            (_, Status::Stopped(_) | Status::Queued | Status::Running, _) => {
                EntryResult::Interrupted
            }
        };
        let bytes = match (result, &e.report) {
            (EntryResult::Copied, Some(r)) => r.bytes,
            (EntryResult::Failed | EntryResult::Interrupted, _) => 0,
            _ => e.plan.size.unwrap_or(0),
        };
        FileRecord {
            path: e.plan.path.clone(),
            kind: e.plan.kind,
            result,
            reason: e.plan.reason,
            bytes,
            method: e.report.as_ref().map(|r| r.method),
            verified: e.report.as_ref().map(|r| r.verified),
            error: e.error.as_ref().map(|f| f.message.clone()),
        }
    }
}

/// A job's counts, summed over its entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Files the plan copies (`None` before a tree is listed).
    pub files_total: Option<usize>,
    pub files_copied: usize,
    pub files_failed: usize,
    /// Entries (files, directories, deletions) that failed.
    pub failed: usize,
    pub skipped: usize,
    pub created: usize,
    pub deleted: usize,
    /// Entries stopped before their end.
    pub stopped: usize,
    /// Bytes at the destination over the files to copy: exact for those done, as last
    /// heard for the others.
    pub bytes_done: u64,
    /// The sum of the sources' sizes, once every one is known.
    pub bytes_total: Option<u64>,
    /// Bytes of the copied files.
    pub bytes_copied: u64,
    /// Of those, bytes that crossed the engine (relay).
    pub relayed_bytes: u64,
    /// Copied files per method (`fxp`, `reverse_fxp`, `relay`, ...).
    pub methods: BTreeMap<&'static str, usize>,
    /// Copied files per check (`sha-256`, `size`, `none`).
    pub checks: BTreeMap<&'static str, usize>,
    /// The weakest check a copied file had (`none` < `size` < crc32 < ... < sha-512).
    pub weakest_check: Option<Check>,
    /// The method most files use or used.
    pub method: Option<Method>,
}

/// How one entry ended, as the report says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryResult {
    Copied,
    Skipped,
    Failed,
    Created,
    Deleted,
    /// Not begun, or stopped part way, when the copy was interrupted (Ctrl-C).
    Interrupted,
    /// `--dry-run`: what would have happened.
    WouldCopy,
    WouldCreate,
    WouldDelete,
}

impl EntryResult {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryResult::Copied => "copied",
            EntryResult::Skipped => "skipped",
            EntryResult::Failed => "FAILED",
            EntryResult::Created => "created",
            EntryResult::Deleted => "deleted",
            EntryResult::Interrupted => "interrupted",
            EntryResult::WouldCopy => "would copy",
            EntryResult::WouldCreate => "would create",
            EntryResult::WouldDelete => "would delete",
        }
    }
}

/// One entry of a job's report (the `files` of `fxprelay fxp --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRecord {
    /// A tree's entry relative to its root (bytes that are not UTF-8 shown as U+FFFD);
    /// the source URL of a file.
    pub path: String,
    pub kind: Kind,
    pub result: EntryResult,
    /// Why it was copied, skipped or deleted.
    pub reason: Reason,
    /// The file's size once copied (skipped or planned: the source's size; failed or
    /// interrupted: 0; the destination's size for a deletion).
    pub bytes: u64,
    pub method: Option<Method>,
    /// How the copy was checked once done (`sha-256` or another hash, `size`, `none`).
    pub verified: Option<Check>,
    /// The server's reply or the engine's reason, for a failure.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fxp::job::plan::Outline;

    fn entry(path: &str, kind: Kind, operation: Operation, size: Option<u64>) -> OutlineEntry {
        OutlineEntry {
            path: path.into(),
            src: format!("ftp://a/tree/{path}"),
            dst: format!("ftp://b/tree/{path}"),
            kind,
            operation,
            reason: Reason::Missing,
            size,
        }
    }

    /// A tree: `sub/` to make, `sub/a.bin` (10 bytes) and `b.bin` (20) to copy,
    /// `c.bin` (5) up to date.
    fn tree() -> JobEvent {
        JobEvent::Planned(Outline {
            shape: Shape::Tree,
            dirs: 1,
            dry_run: false,
            entries: vec![
                entry("sub", Kind::Dir, Operation::CreateDir, None),
                entry("sub/a.bin", Kind::File, Operation::Copy, Some(10)),
                entry("b.bin", Kind::File, Operation::Copy, Some(20)),
                entry("c.bin", Kind::File, Operation::Skip, Some(5)),
            ],
        })
    }

    fn file(entry: usize, event: FileEvent) -> JobEvent {
        JobEvent::File { entry, event }
    }

    fn ended(entry: usize, outcome: EntryOutcome) -> JobEvent {
        JobEvent::Ended {
            entry,
            took: Duration::from_millis(5),
            outcome,
        }
    }

    fn copied(method: Method, bytes: u64, attempts: u32) -> EntryOutcome {
        EntryOutcome::Copied(Report {
            method,
            bytes,
            relayed_bytes: if method == Method::Relay { bytes } else { 0 },
            resumed_from: 0,
            attempts,
            duration: Duration::from_millis(5),
            verified: Check::Size,
        })
    }

    fn refused(text: &str) -> Failure {
        Failure {
            kind: FailureKind::Refused,
            message: text.into(),
            code: Some(550),
            permanent: true,
        }
    }

    fn finished() -> JobEvent {
        JobEvent::Finished {
            error: None,
            took: Duration::from_millis(40),
        }
    }

    #[test]
    fn a_tree_with_a_failed_file() {
        let events = [
            tree(),
            JobEvent::Started { entry: 0 },
            ended(0, EntryOutcome::Created),
            JobEvent::Started { entry: 1 },
            JobEvent::Started { entry: 2 },
            file(1, FileEvent::SourceSize { size: Some(10) }),
            file(
                1,
                FileEvent::Trying {
                    method: Method::Fxp,
                    offset: 0,
                },
            ),
            file(
                1,
                FileEvent::Bytes {
                    done: 4,
                    total: Some(10),
                },
            ),
            ended(1, copied(Method::Fxp, 10, 1)),
            ended(
                2,
                EntryOutcome::Failed(refused("RETR b.bin refused: 550 no")),
            ),
            finished(),
        ];
        let s = JobState::of(&events);
        let status: Vec<Status> = s.entries.iter().map(|e| e.status).collect();
        assert_eq!(
            status,
            [
                Status::Created,
                Status::Copied,
                Status::Failed,
                Status::Skipped
            ]
        );
        let t = s.totals();
        assert_eq!(
            (t.files_total, t.files_copied, t.files_failed, t.failed),
            (Some(2), 1, 1, 1)
        );
        assert_eq!((t.created, t.skipped, t.deleted, t.stopped), (1, 1, 0, 0));
        assert_eq!(
            (t.bytes_done, t.bytes_total, t.bytes_copied),
            (10, Some(30), 10)
        );
        assert_eq!(t.methods, BTreeMap::from([("fxp", 1)]));
        assert_eq!(t.method, Some(Method::Fxp));
        assert_eq!(t.weakest_check, Some(Check::Size));
        assert_eq!(
            s.first_error().map(|f| f.message.as_str()),
            Some("RETR b.bin refused: 550 no")
        );
        let records = s.records();
        let results: Vec<(&str, EntryResult, u64)> = records
            .iter()
            .map(|r| (r.path.as_str(), r.result, r.bytes))
            .collect();
        assert_eq!(
            results,
            [
                ("sub", EntryResult::Created, 0),
                ("sub/a.bin", EntryResult::Copied, 10),
                ("b.bin", EntryResult::Failed, 0),
                ("c.bin", EntryResult::Skipped, 5),
            ]
        );
        assert_eq!(
            records[2].error.as_deref(),
            Some("RETR b.bin refused: 550 no")
        );
        assert!(s.is_finished());
    }

    #[test]
    fn a_retried_file_counts_its_retries_and_ends_by_its_last_method() {
        let failure = Failure::new(FailureKind::Connection, "425 no data connection");
        let events = [
            tree(),
            JobEvent::Started { entry: 2 },
            file(2, FileEvent::SourceSize { size: Some(20) }),
            file(
                2,
                FileEvent::Trying {
                    method: Method::Fxp,
                    offset: 0,
                },
            ),
            file(
                2,
                FileEvent::Bytes {
                    done: 8,
                    total: None,
                },
            ),
            file(
                2,
                FileEvent::MethodFailed {
                    method: Method::Fxp,
                    error: failure.clone(),
                },
            ),
            file(
                2,
                FileEvent::Retrying {
                    attempt: 1,
                    delay: Duration::from_millis(500),
                    error: failure,
                },
            ),
            file(
                2,
                FileEvent::Trying {
                    method: Method::ReverseFxp,
                    offset: 8,
                },
            ),
        ];
        let mut s = JobState::of(&events);
        let e = &s.entries[2];
        assert_eq!(
            (e.status, e.retries, e.done, e.total),
            (Status::Running, 1, 8, Some(20))
        );
        assert_eq!(e.method, Some(Method::ReverseFxp));
        assert_eq!(s.totals().method, Some(Method::ReverseFxp));
        s.apply(&ended(2, copied(Method::ReverseFxp, 20, 2)));
        let e = &s.entries[2];
        assert_eq!(
            (e.status, e.done, e.error.as_ref()),
            (Status::Copied, 20, None)
        );
        assert_eq!(e.report.as_ref().map(|r| r.attempts), Some(2));
        let t = s.totals();
        assert_eq!((t.files_copied, t.files_failed, t.bytes_copied), (1, 0, 20));
        assert_eq!(t.methods, BTreeMap::from([("reverse_fxp", 1)]));
        // An ending is final: a late event about the file changes nothing.
        let before = s.clone();
        s.apply(&ended(2, EntryOutcome::Failed(refused("late"))));
        s.apply(&file(
            2,
            FileEvent::Bytes {
                done: 1,
                total: None,
            },
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn a_cancelled_job_stops_what_had_not_ended_and_keeps_what_moved() {
        let events = [
            tree(),
            JobEvent::Started { entry: 0 },
            ended(0, EntryOutcome::Created),
            JobEvent::Started { entry: 1 },
            file(
                1,
                FileEvent::Trying {
                    method: Method::Relay,
                    offset: 0,
                },
            ),
            file(
                1,
                FileEvent::Bytes {
                    done: 6,
                    total: Some(10),
                },
            ),
            JobEvent::Stopped(StopReason::Cancelled),
            // The engine's own end of the aborted copy, after the stop: not applied.
            ended(
                1,
                EntryOutcome::Failed(Failure::new(FailureKind::Cancelled, "interrupted")),
            ),
            JobEvent::Started { entry: 2 },
            JobEvent::Finished {
                error: None,
                took: Duration::from_millis(9),
            },
        ];
        let s = JobState::of(&events);
        let status: Vec<Status> = s.entries.iter().map(|e| e.status).collect();
        let stopped = Status::Stopped(StopReason::Cancelled);
        assert_eq!(status, [Status::Created, stopped, stopped, Status::Skipped]);
        assert_eq!(s.stopped, Some(StopReason::Cancelled));
        assert_eq!(s.entries[1].done, 6, "what had moved is kept");
        let t = s.totals();
        assert_eq!((t.stopped, t.files_copied, t.files_failed), (2, 0, 0));
        assert_eq!((t.bytes_done, t.method), (6, Some(Method::Relay)));
        assert!(s.first_error().is_none());
        let r = s.records();
        assert_eq!(r[1].result, EntryResult::Interrupted);
        assert_eq!(r[2].result, EntryResult::Interrupted);
        assert!(s.is_finished());
    }

    #[test]
    fn a_file_job_has_one_outcome() {
        let plan = crate::fxp::job::plan::Plan::file(
            &crate::fxp::url::FtpUrl::parse("ftp://a/x").unwrap(),
            &crate::fxp::url::FtpUrl::parse("ftp://b/").unwrap(),
        );
        let mut s = JobState::new();
        assert!(s.outcome().is_none() && s.totals().files_total.is_none());
        s.apply(&JobEvent::Planned(plan.outline()));
        assert_eq!(s.totals().files_total, Some(1));
        assert!(s.outcome().is_none());
        s.apply(&JobEvent::Started { entry: 0 });
        s.apply(&ended(0, copied(Method::Fxp, 7, 1)));
        assert_eq!(s.outcome().unwrap().unwrap().bytes, 7);

        // A provisional plan gives way to the runner's (which found the file there and
        // up to date) until work begins; after, a second plan changes nothing.
        let mut s = JobState::new();
        s.apply(&JobEvent::Planned(plan.outline()));
        let mut skip = plan.clone();
        skip.entries[0].operation = Operation::Skip;
        s.apply(&JobEvent::Planned(skip.outline()));
        assert!(s.skipped() && s.outcome().is_none());
        let mut s = JobState::new();
        s.apply(&JobEvent::Planned(plan.outline()));
        s.apply(&JobEvent::Started { entry: 0 });
        s.apply(&JobEvent::Planned(skip.outline()));
        assert!(!s.skipped());

        // A job that failed before its file: the job's own error.
        let mut s = JobState::new();
        s.apply(&JobEvent::Finished {
            error: Some(refused("LIST refused")),
            took: Duration::ZERO,
        });
        assert_eq!(s.outcome().unwrap().unwrap_err().message, "LIST refused");
    }

    #[test]
    fn events_about_entries_the_plan_lacks_are_ignored() {
        let mut s = JobState::new();
        // Before the plan, nothing has entries.
        s.apply(&JobEvent::Started { entry: 0 });
        s.apply(&tree());
        s.apply(&JobEvent::Started { entry: 99 });
        s.apply(&ended(99, EntryOutcome::Created));
        s.apply(&file(
            42,
            FileEvent::Bytes {
                done: 1,
                total: None,
            },
        ));
        // The skipped entry has ended already.
        s.apply(&ended(3, EntryOutcome::Failed(refused("no"))));
        assert_eq!(s, JobState::of(&[tree()]));
        // A second plan does not replace the first.
        s.apply(&JobEvent::Planned(Outline {
            shape: Shape::List,
            dirs: 0,
            dry_run: false,
            entries: vec![],
        }));
        assert_eq!(s.entries.len(), 4);
    }

    #[test]
    fn a_dry_run_reports_what_would_happen() {
        let JobEvent::Planned(mut outline) = tree() else {
            unreachable!()
        };
        outline.dry_run = true;
        let s = JobState::of(&[JobEvent::Planned(outline), finished()]);
        let r: Vec<EntryResult> = s.records().iter().map(|r| r.result).collect();
        assert_eq!(
            r,
            [
                EntryResult::WouldCreate,
                EntryResult::WouldCopy,
                EntryResult::WouldCopy,
                EntryResult::Skipped
            ]
        );
    }

    /// The state a durable store saves reads back the same, and goes on folding.
    #[test]
    fn a_saved_state_reads_back_and_goes_on() {
        let mut s = JobState::of(&[
            tree(),
            JobEvent::Started { entry: 1 },
            file(
                1,
                FileEvent::Bytes {
                    done: 3,
                    total: Some(10),
                },
            ),
        ]);
        let saved = serde_json::to_string(&s).unwrap();
        let mut back: JobState = serde_json::from_str(&saved).unwrap();
        assert_eq!(back, s);
        let next = ended(1, copied(Method::Fxp, 10, 1));
        s.apply(&next);
        back.apply(&next);
        assert_eq!(back, s);
    }
}
