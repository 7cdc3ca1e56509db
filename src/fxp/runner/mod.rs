//! The job runner, the I/O half of a job: [`plan`] decides what to do (a file or a list
//! needs nothing but the URLs; a tree lists both servers, `walk`); [`run`] plans, then
//! does it, and says what happens as a stream of [`JobEvent`]s, which every front end
//! folds into a [`JobState`](super::job::JobState). What a job is (its plan, events and
//! state) is [`super::job`], pure.
//!
//! A tree is carried out in three steps, each its own function: the directories
//! ([`Runner::make_dirs`]: every missing level of the root, then the tree's, parents
//! first; a directory that cannot be made fails everything beneath it, the rest goes
//! on), the files ([`Runner::copy_files`]: a queue, `EngineOptions::concurrency` at a
//! time, each through the one-file engine), then the deletions ([`Runner::delete`]),
//! left out when anything failed. Only a destination root that cannot be made (or
//! logged into) fails the job itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures_util::stream::{self, BoxStream, FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod walk;

use self::walk::{levels, make_dir, pwd, server_err};
use super::job::event::{EntryOutcome, Failure, FailureKind, FileEvent, JobEvent, StopReason};
use super::job::mirror::Operation;
use super::job::plan::{Entry, Order, Plan};
use crate::fxp::client::{refused, with_arg};
use crate::fxp::engine::{self, EngineOptions, FxpError, Side};
use crate::fxp::logins::LoginPool;

/// What `order` comes to: the plan of a file or a list at once; a tree's once both
/// servers are listed, on sessions from `sessions` (they go back to it for the copy).
pub async fn plan(
    sessions: &LoginPool,
    order: &Order,
    opts: &EngineOptions,
) -> Result<Plan, FxpError> {
    match order {
        Order::File {
            src,
            dst,
            skip_existing,
        } => {
            let mut plan = Plan::file(src, dst);
            // New there, overwritten, or (`skip_existing`) up to date: a `SIZE` (and
            // with `skip_existing` perhaps `MDTM`) on the sessions the copy uses next.
            if let Some(e) = plan.entries.first_mut() {
                (e.operation, e.reason) =
                    walk::single_file(sessions, &e.src, &e.dst, *skip_existing, opts).await;
            }
            Ok(plan)
        }
        Order::List(pairs) => Ok(Plan::list(pairs)),
        Order::Tree { src, dst, mirror } => walk::list_tree(sessions, src, dst, opts, mirror).await,
    }
}

/// Carries `order` out with `opts`: `Planned` first (unless planning failed), an event
/// per step of every entry, `Stopped` when `opts.cancel` stopped it, `Finished` last.
/// The work is done as the stream is polled; dropping the stream stops it (the control
/// connections close). `opts.progress`, when set, hears every file's events too.
pub fn run(order: Order, opts: EngineOptions) -> BoxStream<'static, JobEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    let work = async move {
        let runner = Runner {
            // One more session per server than transfers run at once: the session that
            // watches a slow copy grow comes back too.
            sessions: LoginPool::new(opts.concurrency.max(1) + 1),
            opts,
            tx,
            failed: AtomicBool::new(false),
        };
        runner.job(order).await;
    };
    // The work yields nothing itself: its events come through the channel, which ends
    // once the work (holding the sender) is done.
    let driver = stream::once(work).filter_map(|()| std::future::ready(None));
    let events = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    stream::select(driver, events).boxed()
}

/// One job under way.
struct Runner {
    opts: EngineOptions,
    /// Where the walk's, the directories' and the files' sessions come from: the same
    /// logins.
    sessions: LoginPool,
    tx: mpsc::UnboundedSender<JobEvent>,
    /// An entry has failed: the deletions are left out.
    failed: AtomicBool,
}

impl Runner {
    fn emit(&self, e: JobEvent) {
        let _ = self.tx.send(e);
    }

    fn cancelled(&self) -> bool {
        self.opts
            .cancel
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }

    fn ended(&self, entry: usize, started: Option<Instant>, outcome: EntryOutcome) {
        if let EntryOutcome::Failed(f) = &outcome
            && f.kind != FailureKind::Cancelled
        {
            self.failed.store(true, Ordering::Relaxed);
        }
        self.emit(JobEvent::Ended {
            entry,
            took: started.map(|t| t.elapsed()).unwrap_or_default(),
            outcome,
        });
    }

    async fn job(self, order: Order) {
        let started = Instant::now();
        let stop = self.opts.cancel.clone().unwrap_or_default();
        // A tree's copy logins, made while the trees are walked and the first files copy
        // (vsftpd's PAM login takes ~50 ms): counted as under way from here, so the walk
        // and each file's lease take the first to finish; given up once the job is done.
        // One that pyftpdlib leaves unanswered (a login made while its transfers run may
        // be, see `engine::direct`) holds a lease at most `AHEAD_WAIT` (see `logins`),
        // which then logs in itself, hedged.
        let (src_dst, n) = match &order {
            Order::Tree { src, dst, mirror } if !mirror.dry_run => (
                Some((src, Plan::tree_root(src, dst))),
                self.opts.concurrency.max(1),
            ),
            _ => (None, 0),
        };
        // The destination gets one more, for watching a copy.
        let ahead = src_dst.as_ref().map(|(src, dst)| {
            (
                self.sessions.prefill(src, &self.opts, n),
                self.sessions.prefill(dst, &self.opts, n + 1),
            )
        });
        let warm = async {
            if let Some((src, dst)) = ahead {
                tokio::join!(src, dst);
            }
            std::future::pending::<std::convert::Infallible>().await
        };
        let work = async {
            let planned = tokio::select! {
                plan = self.plan(&order) => Some(plan),
                // Stopped while listing: the plan is never made.
                () = stop.cancelled() => None,
            };
            match planned {
                None => Ok(()),
                Some(Err(e)) => Err(e),
                Some(Ok(plan)) => {
                    self.emit(JobEvent::Planned(plan.outline()));
                    if plan.dry_run() {
                        Ok(())
                    } else {
                        self.carry_out(&plan).await
                    }
                }
            }
        };
        let result = tokio::select! {
            biased;
            result = work => result,
            never = warm => match never {},
        };
        self.sessions.close().await;
        if self.cancelled() {
            self.emit(JobEvent::Stopped(StopReason::Cancelled));
        }
        let error = match result {
            Err(FxpError::Cancelled) | Ok(()) => None,
            Err(e) => Some(Failure::from(&e)),
        };
        self.emit(JobEvent::Finished {
            error,
            took: started.elapsed(),
        });
    }

    /// [`plan`], once more when a tree's walk failed while logins made ahead left
    /// sessions: a server that takes fewer logins at once may have refused the walk's.
    async fn plan(&self, order: &Order) -> Result<Plan, FxpError> {
        let (opts, sessions) = (&self.opts, &self.sessions);
        match plan(sessions, order, opts).await {
            Err(_) if matches!(order, Order::Tree { .. }) && sessions.idle() > 0 => {
                plan(sessions, order, opts).await
            }
            planned => planned,
        }
    }

    /// The directories, the files, then the deletions (see the module doc).
    async fn carry_out(&self, plan: &Plan) -> Result<(), FxpError> {
        let broken = match &plan.roots {
            Some(_) => self.make_dirs(plan).await?,
            None => self.make_parents(plan).await,
        };
        self.copy_files(plan, &broken).await;
        if !self.cancelled() {
            self.delete(plan).await;
        }
        Ok(())
    }

    /// Every missing level of the tree's root (`mkdir -p`; one that cannot be made
    /// fails the job), then each directory the plan creates, parents first. Returns the
    /// directories that could not be made.
    async fn make_dirs(&self, plan: &Plan) -> Result<Broken, FxpError> {
        let mut broken = Broken::default();
        let Some((_, root)) = &plan.roots else {
            return Ok(broken);
        };
        let (opts, sessions) = (&self.opts, &self.sessions);
        let lease = || async {
            sessions
                .lease(root, opts)
                .await
                .map_err(|e| server_err(Side::Destination, root, e))
        };
        let mut c = lease().await?;
        let home = pwd(&mut c).await;
        for level in levels(&root.path) {
            if let Err(e) = make_dir(&mut c, &level, home.as_deref()).await {
                c.quit().await;
                return Err(server_err(Side::Destination, root, e));
            }
        }
        for (n, e) in plan.entries.iter().enumerate() {
            if e.operation != Operation::CreateDir {
                continue;
            }
            if self.cancelled() {
                break;
            }
            if let Some(why) = broken.beneath(e) {
                self.ended(n, None, EntryOutcome::Failed(why));
                continue;
            }
            self.emit(JobEvent::Started { entry: n });
            let started = Instant::now();
            let result = make_dir(&mut c, &e.dst.path, home.as_deref()).await;
            let outcome = match result {
                Ok(_) => EntryOutcome::Created,
                Err(error) => {
                    let message = error.to_string();
                    let broke = !matches!(error, crate::fxp::client::FtpError::Refused { .. });
                    let failure = Failure {
                        message: message.clone(),
                        ..Failure::from(&server_err(Side::Destination, root, error))
                    };
                    if broke {
                        // The session itself broke: no further MKD can work on it.
                        c.quit().await;
                        c = lease().await?;
                    }
                    broken.0.push((e.rel.clone(), message));
                    EntryOutcome::Failed(failure)
                }
            };
            self.ended(n, Some(started), outcome);
        }
        sessions.put(root, c).await;
        Ok(broken)
    }

    /// A single file's or a list's missing destination directories, as `mkdir -p` (a
    /// tree's root gets the same): `new/dir/f` makes `new` and `new/dir` first. Each
    /// directory once; one that cannot be made fails the files beneath it, not the job.
    async fn make_parents(&self, plan: &Plan) -> Broken {
        let mut broken = Broken::default();
        // Each server (host, port, user) and directory once.
        type Made<'a> = ((&'a str, u16, &'a str), Vec<u8>);
        let mut made: Vec<Made> = Vec::new();
        for e in plan
            .entries
            .iter()
            .filter(|e| e.operation == Operation::Copy)
        {
            let Some(slash) = e.dst.path.iter().rposition(|&b| b == b'/') else {
                continue;
            };
            let parent = e.dst.path[..slash].to_vec();
            let server = (e.dst.host.as_str(), e.dst.port, e.dst.user.as_str());
            if parent.is_empty() || made.iter().any(|(s, p)| *s == server && *p == parent) {
                continue;
            }
            made.push((server, parent.clone()));
            if let Err(why) = self.mkdir_p(&e.dst, &parent).await {
                broken.0.push((parent, why));
            }
        }
        broken
    }

    /// Every level of `dir` on `url`'s server, over one of the job's sessions.
    async fn mkdir_p(&self, url: &crate::fxp::url::FtpUrl, dir: &[u8]) -> Result<(), String> {
        let mut c = self
            .sessions
            .lease(url, &self.opts)
            .await
            .map_err(|e| e.to_string())?;
        let home = pwd(&mut c).await;
        for level in levels(dir) {
            if let Err(e) = make_dir(&mut c, &level, home.as_deref()).await {
                c.quit().await;
                return Err(e.to_string());
            }
        }
        self.sessions.put(url, c).await;
        Ok(())
    }

    /// The files, `concurrency` at a time; failures are recorded, the others go on.
    /// Each of the transfers under way holds one session on each server, taken from the
    /// job's pool, so a job logs in to each server about `concurrency` times, not once
    /// per file.
    async fn copy_files(&self, plan: &Plan, broken: &Broken) {
        let mut queue = plan
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.operation == Operation::Copy);
        let limit = self.opts.concurrency.max(1);
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < limit {
                let Some((n, e)) = queue.next() else { break };
                match broken.beneath(e) {
                    Some(why) => self.ended(n, None, EntryOutcome::Failed(why)),
                    None => running.push(self.copy_file(n, e)),
                }
            }
            if running.next().await.is_none() {
                break;
            }
        }
    }

    /// Entry `n`, one file, through the engine: its events are the job's.
    async fn copy_file(&self, n: usize, e: &Entry) {
        self.emit(JobEvent::Started { entry: n });
        let started = Instant::now();
        let tx = self.tx.clone();
        let outer = self.opts.progress.clone();
        let opts = EngineOptions {
            progress: Some(Arc::new(move |event: &FileEvent| {
                if let Some(p) = &outer {
                    p(event);
                }
                let _ = tx.send(JobEvent::File {
                    entry: n,
                    event: event.clone(),
                });
            })),
            ..self.opts.clone()
        };
        let outcome = match engine::transfer_with(&self.sessions, &e.src, &e.dst, &opts).await {
            Ok(report) => EntryOutcome::Copied(report),
            Err(error) => EntryOutcome::Failed(Failure::from(&error)),
        };
        self.ended(n, Some(started), outcome);
    }

    /// What `--delete` asks for, after a copy without failures; else each deletion
    /// fails saying why it was left out.
    async fn delete(&self, plan: &Plan) {
        let deletions: Vec<(usize, &Entry)> = plan
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.operation, Operation::Delete | Operation::RemoveDir))
            .collect();
        let Some((_, root)) = &plan.roots else { return };
        if deletions.is_empty() {
            return;
        }
        let not_deleted = |why: String| EntryOutcome::Failed(Failure::new(FailureKind::Other, why));
        if self.failed.load(Ordering::Relaxed) {
            for (n, _) in deletions {
                self.ended(
                    n,
                    None,
                    not_deleted("not deleted: the copy did not complete".into()),
                );
            }
            return;
        }
        let mut c = match self.sessions.lease(root, &self.opts).await {
            Ok(c) => c,
            Err(e) => {
                for (n, _) in deletions {
                    self.ended(n, None, not_deleted(format!("not deleted: {e}")));
                }
                return;
            }
        };
        for (n, e) in deletions {
            self.emit(JobEvent::Started { entry: n });
            let started = Instant::now();
            let verb: &[u8] = match e.operation {
                Operation::RemoveDir => b"RMD",
                _ => b"DELE",
            };
            let line = with_arg(verb, &e.dst.path);
            let outcome = match c.command(&line).await {
                Ok(r) if matches!(r.code, 250 | 200) => EntryOutcome::Deleted,
                Ok(r) => {
                    let error = refused(&String::from_utf8_lossy(&line), &r);
                    EntryOutcome::Failed(Failure {
                        message: error.to_string(),
                        ..Failure::from(&server_err(Side::Destination, root, error))
                    })
                }
                Err(error) => EntryOutcome::Failed(Failure {
                    message: error.to_string(),
                    ..Failure::from(&server_err(Side::Destination, root, error))
                }),
            };
            self.ended(n, Some(started), outcome);
        }
        self.sessions.put(root, c).await;
    }
}

/// Directories that could not be made, with the reason everything beneath them shares.
#[derive(Default)]
struct Broken(Vec<(Vec<u8>, String)>);

impl Broken {
    /// Why `e` is not attempted, when it lies beneath a broken directory: a tree's
    /// (by its path in the tree) or a file's parent (by its destination path).
    fn beneath(&self, e: &Entry) -> Option<Failure> {
        let under = |path: &[u8], dir: &[u8]| {
            path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
        };
        self.0
            .iter()
            .find(|(dir, _)| under(&e.rel, dir) || (e.rel.is_empty() && under(&e.dst.path, dir)))
            .map(|(dir, why)| {
                Failure::new(
                    FailureKind::Other,
                    format!(
                        "not attempted: directory {} could not be created ({why})",
                        String::from_utf8_lossy(dir)
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fxp::job::{JobState, Status};
    use crate::fxp::url::FtpUrl;

    fn url(s: &str) -> FtpUrl {
        FtpUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// The API and SITE front ends spawn jobs on the runtime: the stream must be Send.
    #[test]
    fn jobs_can_be_spawned() {
        fn spawnable<T: Send + 'static>(_: T) {}
        let order = Order::File {
            src: url("ftp://a/x"),
            dst: url("ftp://b/y"),
            skip_existing: false,
        };
        spawnable(run(order, EngineOptions::default()));
    }

    /// The same file under two names is refused without connecting; the job's events
    /// say so, in order.
    #[tokio::test]
    async fn a_file_job_says_what_happened_in_order() {
        let u = url("ftp://u:p@127.0.0.99:1/f.bin");
        let order = Order::File {
            src: u.clone(),
            dst: u,
            skip_existing: false,
        };
        let events: Vec<JobEvent> = run(order, EngineOptions::default()).collect().await;
        assert!(matches!(events[0], JobEvent::Planned(_)), "{events:?}");
        assert!(
            matches!(events[1], JobEvent::Started { entry: 0 }),
            "{events:?}"
        );
        assert!(matches!(
            events.last(),
            Some(JobEvent::Finished { error: None, .. })
        ));
        let s = JobState::of(&events);
        assert_eq!(s.entries[0].status, Status::Failed);
        let e = s.outcome().unwrap().unwrap_err();
        assert!(e.message.contains("same file"), "{e:?}");
    }

    /// A job cancelled before it starts plans nothing and says it was stopped.
    #[tokio::test]
    async fn a_job_cancelled_while_listing_stops() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let order = Order::Tree {
            src: url("ftp://127.0.0.99:1/t"),
            dst: url("ftp://127.0.0.98:1/u/"),
            mirror: Default::default(),
        };
        let opts = EngineOptions {
            cancel: Some(cancel),
            ..EngineOptions::default()
        };
        let events: Vec<JobEvent> = run(order, opts).collect().await;
        let s = JobState::of(&events);
        assert_eq!(s.stopped, Some(StopReason::Cancelled), "{events:?}");
        assert!(s.is_finished() && !s.planned());
    }
}
