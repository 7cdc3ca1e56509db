//! Directory trees: list the source (MLSD when offered, else `LIST` read as Unix
//! `ls -l`) and the destination, decide what to do with every entry
//! ([`super::job::mirror::decide`]: create, copy, skip, delete), create the missing
//! directories on the destination (`MKD` each missing level, like `mkdir -p`), then copy
//! the files as a queue, `Options::concurrency` at a time, each through
//! [`super::engine::transfer`], and last delete what `--delete` asks for. [`plan_tree`]
//! is the walk and the decisions (a dry run stops there), [`run_plan`] carries them out;
//! [`copy_list`] is the queue, also for a given list of files.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::client::{Client, FtpError, refused, with_arg};
use super::engine::{self, Check, EngineOptions, FileHooks, FxpError, Method, Progress, Side};
use super::job::mirror::{
    self, Decision, Filter, Item, MirrorOptions, Operation, Reason, Timestamp,
};
use super::logins::LoginPool;
use super::url::FtpUrl;
use crate::proto::listing::{parse_list, parse_mlsd};
use crate::proto::reply::quoted_path;

/// Directories listed at most, and entries accepted, so a hostile or looping server
/// cannot make the walk endless.
const MAX_DIRS: usize = 10_000;
const MAX_FILES: usize = 100_000;

pub use super::job::mirror::Kind;

/// How one entry of a tree copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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

/// One entry of a tree copy's report (the `files` of `--json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileRecord {
    /// Relative to the tree's root (bytes that are not UTF-8 shown as U+FFFD).
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

/// What a tree copy did.
#[derive(Debug, Clone, Default)]
pub struct TreeReport {
    /// Directories in the source tree (those the filters admit).
    pub dirs: usize,
    /// Files copied.
    pub files: usize,
    pub bytes: u64,
    /// Bytes that crossed the engine (relay).
    pub relayed_bytes: u64,
    pub duration: Duration,
    /// Files per method used.
    pub methods: BTreeMap<&'static str, usize>,
    /// Files per check made (`sha-256`, `size`, `none`).
    pub verified: BTreeMap<&'static str, usize>,
    /// Entries that failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Files left as they were (`--skip-existing`).
    pub skipped: usize,
    /// Directories made on the destination.
    pub created: usize,
    /// Files and directories deleted (`--delete`).
    pub deleted: usize,
    pub dry_run: bool,
    /// Stopped by `Options::cancel` before the end.
    pub interrupted: bool,
    /// Every entry, in the order decided.
    pub records: Vec<FileRecord>,
}

impl TreeReport {
    pub fn summary(&self) -> String {
        let secs = self.duration.as_secs_f64();
        let methods: Vec<String> = self
            .methods
            .iter()
            .map(|(m, n)| format!("{m} {n}"))
            .collect();
        if self.dry_run {
            let count = |r| self.records.iter().filter(|x| x.result == r).count();
            return format!(
                "dry run: would copy {} files ({}), create {} directories, delete {}; {} skipped",
                count(EntryResult::WouldCopy),
                bytes_iec(
                    self.records
                        .iter()
                        .filter(|x| x.result == EntryResult::WouldCopy)
                        .map(|x| x.bytes)
                        .sum()
                ),
                count(EntryResult::WouldCreate),
                count(EntryResult::WouldDelete),
                self.skipped,
            );
        }
        format!(
            "copied {} files in {} directories: {}, {secs:.3} s, {}/s, methods: {}{}{}{}{}{}{}",
            self.files,
            self.dirs,
            bytes_iec(self.bytes),
            rate_iec(self.bytes, secs),
            if methods.is_empty() {
                "none".to_owned()
            } else {
                methods.join(", ")
            },
            if self.verified.is_empty() {
                String::new()
            } else {
                let v: Vec<String> = self
                    .verified
                    .iter()
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect();
                format!(", verified: {}", v.join(", "))
            },
            match self.skipped {
                0 => String::new(),
                n => format!(", {n} skipped"),
            },
            match self.created {
                0 => String::new(),
                n => format!(", {n} directories created"),
            },
            match self.deleted {
                0 => String::new(),
                n => format!(", {n} deleted"),
            },
            if self.failed.is_empty() {
                String::new()
            } else {
                format!(", {} FAILED", self.failed.len())
            },
            if self.interrupted {
                ", INTERRUPTED"
            } else {
                ""
            },
        )
    }

    /// The most used method (the tree's `method` in one word), `None` before any copy.
    pub fn main_method(&self) -> Option<&'static str> {
        self.methods
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(m, _)| *m)
    }
}

/// Megabytes (10^6) per second. Kept for callers of the earlier summaries; the CLI shows
/// IEC units ([`rate_iec`]).
pub fn rate_mb(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / 1e6 / secs
    } else {
        0.0
    }
}

/// `12939428 bytes (12.34 MiB)`: the exact count, and in IEC units as the progress bars
/// show it (below 1 KiB the count alone).
pub fn bytes_iec(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{bytes} bytes ({})", indicatif::HumanBytes(bytes))
    }
}

/// `161.30 MiB` (per second, when the caller appends `/s`).
pub fn rate_iec(bytes: u64, secs: f64) -> String {
    let per = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
    indicatif::HumanBytes(per as u64).to_string()
}

/// Copies the tree under `src` into `dst` (`dst` ending in `/` gets the source
/// directory's name appended), overwriting what is there: [`plan_tree`] then [`run_plan`]
/// with the default [`MirrorOptions`].
pub async fn copy_tree(
    src: &FtpUrl,
    dst: &FtpUrl,
    opts: &EngineOptions,
) -> Result<TreeReport, FxpError> {
    copy_tree_with(src, dst, opts, &MirrorOptions::default()).await
}

/// [`copy_tree`] with mirror options (skip existing files, dry run, filters, delete).
pub async fn copy_tree_with(
    src: &FtpUrl,
    dst: &FtpUrl,
    opts: &EngineOptions,
    mirror: &MirrorOptions,
) -> Result<TreeReport, FxpError> {
    copy_tree_planned(src, dst, opts, mirror, |_| {}).await
}

/// [`copy_tree_with`], telling `planned` the plan before carrying it out (the CLI's
/// overall bar learns its totals there).
pub async fn copy_tree_planned(
    src: &FtpUrl,
    dst: &FtpUrl,
    opts: &EngineOptions,
    mirror: &MirrorOptions,
    planned: impl FnOnce(&TreePlan),
) -> Result<TreeReport, FxpError> {
    let started = Instant::now();
    let sessions = queue_sessions(opts);
    let result = async {
        // The copy's logins are made while the trees are walked (vsftpd's PAM login
        // takes ~50 ms), and before any file: pyftpdlib may stop reading a connection
        // made while its transfers run (see `direct`).
        let warm = async {
            if !mirror.dry_run {
                let n = opts.concurrency.max(1);
                let dst = engine::destination_path(src, dst);
                // The walk brings one session to each; the destination gets one more,
                // for watching a copy.
                tokio::join!(
                    sessions.prefill(src, opts, n - 1),
                    sessions.prefill(&dst, opts, n)
                );
            }
        };
        let (plan, ()) = tokio::join!(plan_tree(&sessions, src, dst, opts, mirror), warm);
        let plan = match plan {
            // A server that takes fewer logins at once may have refused the walk's for
            // those made ahead: once more, with a session those made.
            Err(_) if sessions.idle() > 0 => plan_tree(&sessions, src, dst, opts, mirror).await?,
            plan => plan?,
        };
        planned(&plan);
        run_plan(&sessions, &plan, opts).await
    }
    .await;
    sessions.close().await;
    let mut report = result?;
    report.duration = started.elapsed();
    Ok(report)
}

/// The pool a tree or list copy takes its sessions from: the walk's, the directories'
/// and the files' are the same logins. One more per server than transfers run at once:
/// the session that watches a slow copy grow comes back too.
fn queue_sessions(opts: &EngineOptions) -> LoginPool {
    LoginPool::new(opts.concurrency.max(1) + 1)
}

/// A tree copy decided and not yet carried out.
#[derive(Debug, Clone)]
pub struct TreePlan {
    pub src: FtpUrl,
    /// The destination directory (with the source's name appended when `dst` ended in `/`).
    pub dst: FtpUrl,
    pub mirror: MirrorOptions,
    /// Directories in the source tree.
    pub dirs: usize,
    pub decisions: Vec<Decision>,
}

impl TreePlan {
    /// Files to copy, and their bytes (as the source's listing tells).
    pub fn to_copy(&self) -> (usize, u64) {
        self.decisions
            .iter()
            .filter(|d| d.operation == Operation::Copy)
            .fold((0, 0), |(n, b), d| (n + 1, b + d.size.unwrap_or(0)))
    }
}

/// Lists both trees and decides every entry (see [`mirror::decide`]); the destination is
/// only read. A destination directory that cannot be listed counts as empty (it may not
/// exist yet); a source that cannot be listed ends the copy here. The walk's sessions
/// come from `sessions` and go back to it for the copy.
pub async fn plan_tree(
    sessions: &LoginPool,
    src: &FtpUrl,
    dst: &FtpUrl,
    opts: &EngineOptions,
    mirror: &MirrorOptions,
) -> Result<TreePlan, FxpError> {
    let filter = Filter::new(mirror).map_err(|e| FxpError::Other(e.to_string()))?;
    let dst = engine::destination_path(src, dst);
    let mut s = sessions
        .lease(src, opts)
        .await
        .map_err(|e| server_err(Side::Source, src, e))?;
    let mut src_items = match walk(&mut s, src, &filter, Side::Source, &|_| true).await {
        Ok(items) => items,
        Err(e) => {
            s.quit().await;
            return Err(e);
        }
    };
    let mut d = match sessions.lease(&dst, opts).await {
        Ok(d) => d,
        Err(e) => {
            s.quit().await;
            return Err(server_err(Side::Destination, &dst, e));
        }
    };
    let src_dirs: BTreeSet<Vec<u8>> = src_items
        .iter()
        .filter(|i| i.kind == Kind::Dir)
        .map(|i| i.rel.clone())
        .collect();
    // The destination's subtrees are read where they matter: beside the source's
    // directories, or everywhere when deleting.
    let descend = |rel: &[u8]| mirror.delete || src_dirs.contains(rel);
    let mut dst_items = match walk(&mut d, &dst, &filter, Side::Destination, &descend).await {
        Ok(items) => items,
        Err(e) => {
            tokio::join!(s.quit(), d.quit());
            return Err(e);
        }
    };
    if mirror.skip_existing {
        fill_times(&mut s, src, &mut src_items, &mut d, &dst, &mut dst_items).await;
    }
    tokio::join!(sessions.put(src, s), sessions.put(&dst, d));
    let dirs = src_items.iter().filter(|i| i.kind == Kind::Dir).count();
    let decisions = mirror::decide(&src_items, &dst_items, mirror, &filter);
    Ok(TreePlan {
        src: src.clone(),
        dst,
        mirror: mirror.clone(),
        dirs,
        decisions,
    })
}

/// Asks `MDTM` on both sides for the files whose sizes agree and whose listing gave no
/// time, where both servers offer `MDTM`: only there does the time decide anything.
async fn fill_times(
    s: &mut Client,
    src: &FtpUrl,
    src_items: &mut [Item],
    d: &mut Client,
    dst: &FtpUrl,
    dst_items: &mut [Item],
) {
    if !(s.features.has("MDTM") && d.features.has("MDTM")) {
        return;
    }
    let at_dst: HashMap<Vec<u8>, usize> = dst_items
        .iter()
        .enumerate()
        .map(|(n, i)| (i.rel.clone(), n))
        .collect();
    for si in src_items.iter_mut() {
        let Some(&n) = at_dst.get(&si.rel) else {
            continue;
        };
        let di = &mut dst_items[n];
        if !mirror::needs_times(si, di) {
            continue;
        }
        if si.modified.is_none() {
            si.modified = mdtm(s, &src.join(&si.rel).path).await;
        }
        if di.modified.is_none() {
            di.modified = mdtm(d, &dst.join(&di.rel).path).await;
        }
    }
}

/// `MDTM path`, `None` when refused or unreadable.
async fn mdtm(c: &mut Client, path: &[u8]) -> Option<Timestamp> {
    let r = c.command(&with_arg(b"MDTM", path)).await.ok()?;
    (r.code == 213)
        .then(|| Timestamp::parse(r.text()))
        .flatten()
}

/// Carries `plan` out: every missing directory level (`mkdir -p`), the copies (through
/// [`copy_list`]), then the deletions, which are left out when anything failed. A
/// directory that cannot be made fails with the server's reply, and so does everything
/// beneath it; the rest goes on. `--dry-run` touches nothing and reports what would be
/// done. Only a destination root that cannot be made (or logged into) is an error.
/// LoginPool come from `sessions`; the caller closes it.
pub async fn run_plan(
    sessions: &LoginPool,
    plan: &TreePlan,
    opts: &EngineOptions,
) -> Result<TreeReport, FxpError> {
    let started = Instant::now();
    let mut report = TreeReport {
        dirs: plan.dirs,
        dry_run: plan.mirror.dry_run,
        ..TreeReport::default()
    };
    let record = |d: &Decision, result: EntryResult, error: Option<String>| FileRecord {
        path: String::from_utf8_lossy(&d.rel).into_owned(),
        kind: d.kind,
        result,
        reason: d.reason,
        bytes: match result {
            EntryResult::Failed => 0,
            _ => d.size.unwrap_or(0),
        },
        method: None,
        verified: None,
        error,
    };
    if plan.mirror.dry_run {
        for d in &plan.decisions {
            let result = match d.operation {
                Operation::CreateDir => EntryResult::WouldCreate,
                Operation::Copy => EntryResult::WouldCopy,
                Operation::Skip => {
                    report.skipped += 1;
                    EntryResult::Skipped
                }
                Operation::Delete | Operation::RemoveDir => EntryResult::WouldDelete,
            };
            report.records.push(record(d, result, None));
        }
        report.duration = started.elapsed();
        return Ok(report);
    }

    // Directories: the root's every level, then the tree's, parents first.
    let mut c = sessions
        .lease(&plan.dst, opts)
        .await
        .map_err(|e| server_err(Side::Destination, &plan.dst, e))?;
    let home = pwd(&mut c).await;
    for level in levels(&plan.dst.path) {
        if let Err(e) = make_dir(&mut c, &level, home.as_deref()).await {
            c.quit().await;
            return Err(server_err(Side::Destination, &plan.dst, e));
        }
    }
    // Failed directories, with the reason everything beneath them shares.
    let mut broken: Vec<(Vec<u8>, String)> = vec![];
    let under_broken = |rel: &[u8], broken: &[(Vec<u8>, String)]| {
        broken
            .iter()
            .find(|(dir, _)| {
                rel.len() > dir.len() && rel.starts_with(dir) && rel[dir.len()] == b'/'
            })
            .map(|(dir, why)| {
                format!(
                    "not attempted: directory {} could not be created ({why})",
                    String::from_utf8_lossy(dir)
                )
            })
    };
    let mut records: Vec<Option<FileRecord>> = vec![None; plan.decisions.len()];
    for (n, d) in plan.decisions.iter().enumerate() {
        if d.operation != Operation::CreateDir {
            continue;
        }
        if let Some(why) = under_broken(&d.rel, &broken) {
            records[n] = Some(record(d, EntryResult::Failed, Some(why)));
            continue;
        }
        let path = plan.dst.join(&d.rel).path;
        let result = make_dir(&mut c, &path, home.as_deref()).await;
        if matches!(&result, Err(e) if !matches!(e, FtpError::Refused { .. })) {
            // The session itself broke: no further MKD can work on it.
            c.quit().await;
            c = sessions
                .lease(&plan.dst, opts)
                .await
                .map_err(|e| server_err(Side::Destination, &plan.dst, e))?;
        }
        records[n] = Some(match result {
            Ok(_) => {
                report.created += 1;
                record(d, EntryResult::Created, None)
            }
            Err(e) => {
                let why = e.to_string();
                broken.push((d.rel.clone(), why.clone()));
                record(d, EntryResult::Failed, Some(why))
            }
        });
    }
    sessions.put(&plan.dst, c).await;

    // Files: the queue, with a hook that hears how each one ended.
    let collect = Arc::new(Collect {
        inner: opts.files.clone(),
        ended: Mutex::default(),
    });
    let mut jobs = vec![];
    for (n, d) in plan.decisions.iter().enumerate() {
        match d.operation {
            Operation::Copy => match under_broken(&d.rel, &broken) {
                Some(why) => records[n] = Some(record(d, EntryResult::Failed, Some(why))),
                None => jobs.push((plan.src.join(&d.rel), plan.dst.join(&d.rel))),
            },
            Operation::Skip => {
                report.skipped += 1;
                records[n] = Some(record(d, EntryResult::Skipped, None));
            }
            _ => {}
        }
    }
    let queue_opts = EngineOptions {
        files: Some(collect.clone()),
        ..opts.clone()
    };
    let copied = copy_list_with(sessions, &jobs, &queue_opts).await;
    report.files = copied.files;
    report.bytes = copied.bytes;
    report.relayed_bytes = copied.relayed_bytes;
    report.methods = copied.methods;
    report.verified = copied.verified;
    let ended = std::mem::take(&mut *collect.ended.lock().unwrap_or_else(|p| p.into_inner()));
    for (n, d) in plan.decisions.iter().enumerate() {
        if d.operation != Operation::Copy || records[n].is_some() {
            continue;
        }
        let mut r = record(d, EntryResult::Copied, None);
        match ended.get(&plan.src.join(&d.rel).path) {
            Some(Ok((bytes, method, check))) => {
                r.bytes = *bytes;
                r.method = Some(*method);
                r.verified = Some(*check);
            }
            Some(Err(Ended::Cancelled)) => {
                r.result = EntryResult::Interrupted;
                r.bytes = 0;
            }
            Some(Err(Ended::Failed(e))) => {
                r.result = EntryResult::Failed;
                r.error = Some(e.clone());
                r.bytes = 0;
            }
            // Executed outside `engine::transfer`'s hooks: the queue's own count.
            None => {
                let shown = plan.src.join(&d.rel).to_string();
                if let Some((_, e)) = copied.failed.iter().find(|(u, _)| *u == shown) {
                    r.result = EntryResult::Failed;
                    r.error = Some(e.clone());
                    r.bytes = 0;
                }
            }
        }
        records[n] = Some(r);
    }
    report.interrupted = opts
        .cancel
        .as_ref()
        .is_some_and(tokio_util::sync::CancellationToken::is_cancelled);

    // Deletions, only after a copy without failures.
    let clean = !report.interrupted
        && records
            .iter()
            .flatten()
            .all(|r| r.result != EntryResult::Failed);
    let deletions: Vec<usize> = (0..plan.decisions.len())
        .filter(|&n| {
            matches!(
                plan.decisions[n].operation,
                Operation::Delete | Operation::RemoveDir
            )
        })
        .collect();
    if !deletions.is_empty() {
        let mut session = if clean {
            Some(
                sessions
                    .lease(&plan.dst, opts)
                    .await
                    .map_err(|e| e.to_string()),
            )
        } else {
            None
        };
        for n in deletions {
            let d = &plan.decisions[n];
            records[n] = Some(match &mut session {
                None => record(
                    d,
                    EntryResult::Failed,
                    Some("not deleted: the copy did not complete".into()),
                ),
                Some(Err(e)) => record(d, EntryResult::Failed, Some(format!("not deleted: {e}"))),
                Some(Ok(c)) => {
                    let (verb, ok): (&[u8], u16) = match d.operation {
                        Operation::RemoveDir => (b"RMD", 250),
                        _ => (b"DELE", 250),
                    };
                    let line = with_arg(verb, &plan.dst.join(&d.rel).path);
                    match c.command(&line).await {
                        Ok(r) if r.code == ok || r.code == 200 => {
                            report.deleted += 1;
                            record(d, EntryResult::Deleted, None)
                        }
                        Ok(r) => record(
                            d,
                            EntryResult::Failed,
                            Some(refused(&String::from_utf8_lossy(&line), &r).to_string()),
                        ),
                        Err(e) => record(d, EntryResult::Failed, Some(e.to_string())),
                    }
                }
            });
        }
        if let Some(Ok(c)) = session {
            sessions.put(&plan.dst, c).await;
        }
    }
    report.records = records.into_iter().flatten().collect();
    report.failed = report
        .records
        .iter()
        .filter(|r| r.result == EntryResult::Failed)
        .map(|r| (r.path.clone(), r.error.clone().unwrap_or_default()))
        .collect();
    report.duration = started.elapsed();
    Ok(report)
}

/// How one queued file ended, as the hooks heard it.
enum Ended {
    Cancelled,
    Failed(String),
}

/// Hears every file's end (keyed by the source path) and passes both hooks on.
struct Collect {
    inner: Option<Arc<dyn FileHooks>>,
    #[allow(clippy::type_complexity)]
    ended: Mutex<HashMap<Vec<u8>, Result<(u64, Method, Check), Ended>>>,
}

impl FileHooks for Collect {
    fn listed(&self, files: &[(FtpUrl, FtpUrl)]) {
        if let Some(h) = &self.inner {
            h.listed(files);
        }
    }

    fn started(&self, index: usize, src: &FtpUrl, dst: &FtpUrl) -> Option<Progress> {
        self.inner.as_ref().and_then(|h| h.started(index, src, dst))
    }

    fn finished(
        &self,
        index: usize,
        src: &FtpUrl,
        dst: &FtpUrl,
        result: Result<&engine::Report, &FxpError>,
    ) {
        let ended = match result {
            Ok(r) => Ok((r.bytes, r.method, r.verified)),
            Err(FxpError::Cancelled) => Err(Ended::Cancelled),
            Err(e) => Err(Ended::Failed(e.to_string())),
        };
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(src.path.clone(), ended);
        if let Some(h) = &self.inner {
            h.finished(index, src, dst, result);
        }
    }
}

/// Each level of `path`: `a/b/c` gives `a`, `a/b`, `a/b/c` (an absolute path keeps its
/// leading `/`).
pub fn levels(path: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![];
    for (n, &b) in path.iter().enumerate() {
        if b == b'/' && n > 0 && path[n - 1] != b'/' {
            out.push(path[..n].to_vec());
        }
    }
    if !path.is_empty() && !path.ends_with(b"/") {
        out.push(path.to_vec());
    }
    out
}

/// The login directory, from `PWD`'s `257 "dir"` (a doubled `"` is one).
async fn pwd(c: &mut Client) -> Option<Vec<u8>> {
    let r = c.command(b"PWD").await.ok()?;
    (r.code == 257).then(|| quoted_path(r.text())).flatten()
}

/// `MKD path`: `Ok(true)` when made, `Ok(false)` when it was there already (a `550`
/// to `MKD`, then `CWD` into it works: the session goes back to `home` after). Any
/// other refusal is the `MKD`'s, with the server's text.
async fn make_dir(c: &mut Client, path: &[u8], home: Option<&[u8]>) -> Result<bool, FtpError> {
    let line = with_arg(b"MKD", path);
    let r = c.command(&line).await?;
    if matches!(r.code, 257 | 250) {
        return Ok(true);
    }
    if let Some(home) = home {
        let cwd = c.command(&with_arg(b"CWD", path)).await?;
        if cwd.code == 250 {
            c.simple(&with_arg(b"CWD", home), |code| code == 250)
                .await?;
            return Ok(false);
        }
    }
    Err(refused(&String::from_utf8_lossy(&line), &r))
}

/// Copies each `(source, destination)` pair, `Options::concurrency` at a time; failures
/// are collected, the others go on. The files share their logins: each of the
/// `concurrency` transfers under way holds one session on each server, taken from a pool
/// that outlives the file (see [`LoginPool`]), so a list logs in to each server about
/// `concurrency` times, not once per file.
pub async fn copy_list(jobs: &[(FtpUrl, FtpUrl)], opts: &EngineOptions) -> TreeReport {
    let sessions = queue_sessions(opts);
    let report = copy_list_with(&sessions, jobs, opts).await;
    sessions.close().await;
    report
}

/// [`copy_list`] on sessions from `sessions`; the caller closes it.
pub async fn copy_list_with(
    sessions: &LoginPool,
    jobs: &[(FtpUrl, FtpUrl)],
    opts: &EngineOptions,
) -> TreeReport {
    let started = Instant::now();
    let mut report = TreeReport::default();
    // A named async fn, not a closure in a stream adapter: keeps the future `Send` for
    // callers that spawn it.
    async fn one<'a>(
        sessions: &LoginPool,
        index: usize,
        s: &'a FtpUrl,
        t: &FtpUrl,
        opts: &EngineOptions,
    ) -> (&'a FtpUrl, Result<engine::Report, FxpError>) {
        (s, engine::transfer_with(sessions, index, s, t, opts).await)
    }
    if let Some(f) = &opts.files {
        f.listed(jobs);
    }
    let limit = opts.concurrency.max(1);
    let mut queue = jobs.iter().enumerate();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < limit {
            match queue.next() {
                Some((i, (s, t))) => running.push(one(sessions, i, s, t, opts)),
                None => break,
            }
        }
        let Some((s, r)) = running.next().await else {
            break;
        };
        match r {
            Ok(rep) => {
                report.files += 1;
                report.bytes += rep.bytes;
                report.relayed_bytes += rep.relayed_bytes;
                *report.methods.entry(rep.method.as_str()).or_default() += 1;
                *report.verified.entry(rep.verified.as_str()).or_default() += 1;
            }
            Err(e) => report.failed.push((s.to_string(), e.to_string())),
        }
    }
    report.duration = started.elapsed();
    report
}

/// Lists the tree at `root` breadth first over the session `c`: every directory and file
/// the filter admits (paths relative to `root`, parents before children), entering only
/// the directories `descend` names. The source's listing failures end the walk; on the
/// destination a directory that cannot be listed counts as empty (it may not exist yet).
async fn walk(
    c: &mut Client,
    root: &FtpUrl,
    filter: &Filter,
    side: Side,
    descend: &(dyn Fn(&[u8]) -> bool + Sync),
) -> Result<Vec<Item>, FxpError> {
    let mut items = vec![];
    let mut queue: VecDeque<Vec<u8>> = VecDeque::from([vec![]]);
    let mut listed = 0;
    while let Some(rel) = queue.pop_front() {
        listed += 1;
        if listed > MAX_DIRS || items.len() > MAX_FILES {
            return Err(FxpError::Other(format!(
                "the {side} tree is too large (over {MAX_DIRS} directories or {MAX_FILES} files)"
            )));
        }
        let path = root.join(&rel).path;
        let (raw, mlsd) = match c.listing(&path).await {
            Ok(l) => l,
            // A missing directory is a 5xx (vsftpd lists it as empty); a 4xx is not that.
            Err(
                e @ FtpError::Refused {
                    code: 500..=599, ..
                },
            ) if side == Side::Destination => {
                tracing::debug!(dir = %String::from_utf8_lossy(&path), error = %e, "destination directory not listed: taken as empty");
                continue;
            }
            Err(e) => return Err(server_err(side, root, e)),
        };
        let entries = if mlsd {
            parse_mlsd(&raw)
        } else {
            parse_list(&raw)
        };
        for e in entries {
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(&e.name);
            if !filter.admits(&child, e.kind) {
                continue;
            }
            if e.kind == Kind::Dir && descend(&child) {
                queue.push_back(child.clone());
            }
            items.push(Item {
                rel: child,
                kind: e.kind,
                size: e.size,
                modified: e.modified,
            });
        }
    }
    Ok(items)
}

fn server_err(side: Side, url: &FtpUrl, error: super::client::FtpError) -> FxpError {
    FxpError::Server {
        side,
        host: url.host_port(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_of_a_path() {
        let l = |p: &[u8]| levels(p);
        assert_eq!(
            l(b"a/b/c"),
            vec![b"a".to_vec(), b"a/b".to_vec(), b"a/b/c".to_vec()]
        );
        assert_eq!(l(b"/abs/x/"), vec![b"/abs".to_vec(), b"/abs/x".to_vec()]);
        assert_eq!(l(b"one"), vec![b"one".to_vec()]);
        assert!(l(b"").is_empty());
    }
}
