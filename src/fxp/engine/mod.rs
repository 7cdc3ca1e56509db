//! One file from a source server to a destination server: [`transfer_with`] carries out what
//! `attempts` decides.
//!
//! Methods, tried in this order until one works (`EngineOptions::reverse` skips the first):
//! 1. standard FXP: `PASV`/`EPSV` on the source, `PORT`/`EPRT` on the destination naming
//!    the source's control address and announced port (never another host, never a port
//!    below 1024), `STOR` then `RETR`; the servers move the bytes (`direct`);
//! 2. reverse FXP: the same with the roles swapped (`PASV` on the destination);
//! 3. relay: `PASV` on both, the engine connects to both and copies the bytes itself
//!    (`relay`).
//!
//! When a server speaks TLS (`ftpes://`, `ftps://`) the direct methods keep the data
//! encrypted between the servers: `SSCN ON` on one of them, or `CPSV` on the passive
//! one, where a server offers it (`FEAT`); FXP with `PROT C` only when the operator
//! allows clear data (`EngineOptions::allow_clear_data`); otherwise the relay, with the engine
//! the TLS client of each leg whose server speaks TLS (resuming that session's control
//! connection's TLS session, as vsftpd and proftpd require). See `plan::methods`.
//!
//! A method that is refused while negotiating (a `PORT` to a foreign address, no `PASV`)
//! moves on to the next on the same sessions; one that fails once data should flow
//! (`425`, a stall, a short copy) gives up both sessions (`ABOR`, `QUIT`) and the next
//! method starts fresh, resuming with `REST` where both servers offer `REST STREAM`.
//! A refusal about the file itself (`550` on `RETR`/`SIZE`, `553` on `STOR`) ends the
//! transfer at once with the server's text; other failures are retried with backoff.
//!
//! After the copy: `SIZE` on both ends, then (`EngineOptions::verify`, `auto` by default) the
//! strongest hash both servers compute (`HASH`, `XSHA256`, ... as `FEAT` lists them;
//! see `digest`), asked of both at once; the [`Report`] says which check was made
//! ([`Check`]). A differing hash fails the file for good, the copy renamed to
//! `NAME.fxprelay-mismatch` or deleted (`EngineOptions::on_mismatch`).
//!
//! Here: the loop that runs the plan's steps (logging in, checking the
//! source, resuming, verifying the copy, closing sessions), and the [`Report`]; the
//! engine's [`EngineOptions`] are in `options`.

use std::time::{Duration, Instant};

use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

mod attempts;
mod direct;
mod pair;
mod relay_method;

use self::attempts::{Attempts, Choices, Close, Fail, Outcome, Step};
use self::pair::{Context, Done, Pair, Run, State};
use super::client::{Client, FtpError};
use super::digest::{self, Choice, Support};
pub use super::digest::{Check, OnMismatch, Verify};
pub use super::error::{FxpError, Side};
use super::job::event::Failure;
pub use super::job::event::{FileEvent, Report};
pub use super::job::plan::destination_path;
use super::logins::LoginPool;
pub use super::method::{Method, Passive, Protection};
pub use super::options::Progress;
use super::url::FtpUrl;
use crate::metrics;

pub use super::options::{DEFAULT_CONCURRENCY, EngineOptions, HASH_TIMEOUT};

/// Longest wait between two attempts, however many retries were asked for.
pub use self::attempts::MAX_BACKOFF;

/// Copies `src` to `dst` (a `dst` path that is empty or ends in `/` names a directory:
/// the file keeps its name) on sessions from `sessions`, and back to it once the file
/// is copied: the files of a job share their logins. The caller closes `sessions`.
/// The job runner's one call into the engine (`runner::run`, an `Order::File` for one
/// file).
pub(crate) async fn transfer_with(
    sessions: &LoginPool,
    src: &FtpUrl,
    dst: &FtpUrl,
    opts: &EngineOptions,
) -> Result<Report, FxpError> {
    let dst = &destination_path(src, dst);
    if same_file(src, dst) {
        // STOR would truncate the very file RETR is about to read.
        return Err(FxpError::Other(format!(
            "{src} and {dst} are the same file"
        )));
    }
    // A server behind an agent accepts no inbound connection: it is never the passive
    // one, and between two agents only the relay can copy.
    let (src_via, dst_via) = (src.via.as_deref(), dst.via.as_deref());
    let passive = Passive::of(src_via, dst_via);
    if !opts.relay_fallback
        && let Some(why) = passive.without_relay(src_via, dst_via, opts.reverse)
    {
        return Err(FxpError::Other(format!("{src} to {dst}: {why}")));
    }
    metrics::fxp_active(1.0);
    let _active = ActiveGuard;
    let started = Instant::now();
    let mut plan = Attempts::new(Choices {
        reverse: opts.reverse,
        relay_fallback: opts.relay_fallback,
        retries: opts.retries,
        secure: src.security.is_tls() || dst.security.is_tls(),
        clear_data: opts.allow_clear_data,
        passive,
    });
    let mut copy = Transfer {
        src,
        dst,
        opts,
        sessions,
        state: State {
            stored: opts.resume,
            last_method: None,
        },
        pair: None,
        source_size: None,
    };
    let result = copy.follow(&mut plan).await;
    let took = started.elapsed();
    match result {
        Ok(done) => {
            let report = Report {
                method: done.method,
                bytes: done.bytes,
                relayed_bytes: done.relayed,
                resumed_from: done.offset,
                attempts: plan.attempt(),
                duration: took,
                verified: done.verified,
            };
            metrics::fxp_transfer("ok", done.method.as_str(), done.bytes, took);
            tracing::debug!(%src, %dst, method = %done.method, bytes = done.bytes, ?took, "fxp transfer done");
            Ok(report)
        }
        Err(e) => {
            let method = copy.state.last_method.map_or("none", Method::as_str);
            metrics::fxp_transfer("failed", method, 0, took);
            tracing::debug!(%src, %dst, error = %e, "fxp transfer failed");
            Err(e)
        }
    }
}

fn same_file(a: &FtpUrl, b: &FtpUrl) -> bool {
    a.host.eq_ignore_ascii_case(&b.host)
        && a.port == b.port
        && a.user == b.user
        && a.path == b.path
        && a.via == b.via
}

/// Holds the `fxp_active` gauge up while a transfer runs, whichever way it ends.
struct ActiveGuard;

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        metrics::fxp_active(-1.0);
    }
}

/// One transfer under way: what it copies, and what it holds between the plan's steps.
struct Transfer<'a> {
    src: &'a FtpUrl,
    dst: &'a FtpUrl,
    opts: &'a EngineOptions,
    /// Where sessions come from, and go back to once the file is copied.
    sessions: &'a LoginPool,
    state: State,
    /// The sessions in hand, if any.
    pair: Option<Pair>,
    /// The source's `SIZE` (itself optional: not every server tells), once this attempt
    /// has asked.
    source_size: Option<Option<u64>>,
}

impl Transfer<'_> {
    /// Carries out `plan`'s steps until it is done or gives up.
    async fn follow(&mut self, plan: &mut Attempts) -> Result<Done, FxpError> {
        let mut step = plan.start();
        let cancel = self.opts.cancel.clone();
        let cancelled = || async {
            match &cancel {
                Some(c) => c.cancelled().await,
                None => std::future::pending().await,
            }
        };
        loop {
            if cancel.as_ref().is_some_and(CancellationToken::is_cancelled) {
                return Err(self.abort().await);
            }
            // The one place sessions end: before the next login (pyftpdlib, logged into
            // while it winds down a failed transfer, was seen to leave the new login
            // unanswered for the whole timeout) and before the transfer returns.
            if let Some(how) = step.close()
                && let Some(p) = self.pair.take()
            {
                self.end(p, how, matches!(step, Step::Done(_))).await;
            }
            let method = match step {
                Step::Try(method) | Step::Reconnect(method, _) => method,
                Step::Retry {
                    attempt,
                    after,
                    error,
                    method,
                    ..
                } => {
                    self.opts.emit(FileEvent::Retrying {
                        attempt,
                        delay: after,
                        error: Failure::from(&error),
                    });
                    tokio::select! {
                        () = sleep(after) => {}
                        () = cancelled() => return Err(self.abort().await),
                    }
                    // A new attempt checks the source again.
                    self.source_size = None;
                    method
                }
                Step::GiveUp(_, e) => return Err(e),
                Step::Done(done) => return Ok(done),
            };
            let outcome = tokio::select! {
                o = self.try_method(method, plan.losses()) => o,
                () = cancelled() => return Err(self.abort().await),
            };
            if let Some(e) = outcome.method_error() {
                self.opts.emit(FileEvent::MethodFailed {
                    method,
                    error: Failure::from(e),
                });
            }
            step = plan.next(outcome);
        }
    }

    /// Ends both sessions at once, as `how` says. Those of a copied and checked file
    /// (`copied`) are clean for the next file and go back to the pool, and so does a
    /// session with nothing outstanding when the other server lost the file.
    async fn end(&self, p: Pair, how: Close, copied: bool) {
        async fn one(sessions: &LoginPool, url: &FtpUrl, c: Client, how: Close, copied: bool) {
            if copied || (how == Close::Lost && c.is_idle()) {
                sessions.put(url, c).await;
            } else if how == Close::Quit {
                c.quit().await;
            } else {
                c.abort_and_quit().await;
            }
        }
        tokio::join!(
            one(self.sessions, self.src, p.src, how, copied),
            one(self.sessions, self.dst, p.dst, how, copied)
        );
    }

    /// Cancelled: `ABOR` to both servers (a transfer in flight stops there), then `QUIT`.
    async fn abort(&mut self) -> FxpError {
        if let Some(p) = self.pair.take() {
            self.end(p, Close::Abort, false).await;
        }
        FxpError::Cancelled
    }

    /// `method` on the sessions in hand, logging in first when there are none; the first
    /// method of an attempt checks the source first. `losses`: how often a server lost
    /// this file in this attempt ([`Attempts::losses`]).
    async fn try_method(&mut self, method: Method, losses: u32) -> Outcome<Done> {
        let (src, dst, opts, sessions) = (self.src, self.dst, self.opts, self.sessions);
        let p = match &mut self.pair {
            Some(p) => p,
            none => {
                let (s, d) = tokio::join!(sessions.lease(src, opts), sessions.lease(dst, opts));
                match Pair::from_logins((src, dst), s, d).await {
                    Ok(p) => none.insert(p),
                    Err(e) => return Outcome::NotStarted(e),
                }
            }
        };
        let hash = match hash_choice(p, opts.verify) {
            Ok(choice) => choice,
            Err(e) => return Outcome::NotStarted(e),
        };
        // The first method of an attempt asks the source's size; for standard FXP in the
        // clear, the source's `PASV`/`EPSV` goes with it (one round trip).
        let mut early = None;
        let total = match self.source_size {
            Some(total) => total,
            None => {
                let pasv = direct::early_passive(method, p);
                match check_source(p, src, dst, opts, pasv).await {
                    Ok((total, announced)) => {
                        early = announced;
                        *self.source_size.insert(total)
                    }
                    Err(e) => return Outcome::NotStarted(e),
                }
            }
        };
        if let Err(why) = supported(method, p) {
            return Outcome::Unsupported(why);
        }
        let offset = match resume_offset(p, dst, total, &self.state).await {
            Ok(offset) => offset,
            Err(fail) => return Outcome::Failed(fail),
        };
        opts.emit(FileEvent::Trying { method, offset });
        self.state.last_method = Some(method);
        let run = Run {
            src,
            dst,
            opts: Context {
                timeout: opts.timeout,
                poll_interval: opts.poll_interval,
                progress: opts.progress.as_ref(),
                sessions,
                options: opts,
            },
            total,
            offset,
            losses,
        };
        let result = match method.protection() {
            Some(protection) => (run.direct(p, method, protection, &mut self.state, early)).await,
            None => run.relay(p, &mut self.state).await,
        };
        match result {
            Ok(done) => verify(p, (src, dst), total, hash, opts, done).await,
            Err(fail) => Outcome::Failed(fail),
        }
    }
}

/// Whether these two sessions can do `method` at all (the plan offers the secure ones
/// whenever a server speaks TLS): `SSCN` needs both servers on TLS and one offering it,
/// `CPSV` both on TLS and the passive one offering it.
fn supported(method: Method, p: &Pair) -> Result<(), FxpError> {
    let both_tls = p.src.is_tls() && p.dst.is_tls();
    let passive = if method.is_reverse() { &p.dst } else { &p.src };
    let why = match method.protection() {
        Some(Protection::Sscn) if !both_tls => "SSCN needs TLS on both servers",
        Some(Protection::Sscn) if !p.src.features.has("SSCN") && !p.dst.features.has("SSCN") => {
            "neither server offers SSCN"
        }
        Some(Protection::Cpsv) if !both_tls => "CPSV needs TLS on both servers",
        Some(Protection::Cpsv) if !passive.features.has("CPSV") => {
            "the passive server does not offer CPSV"
        }
        _ => return Ok(()),
    };
    Err(FxpError::Other(why.into()))
}

/// The start of an attempt: refuses one file under two names, and returns the source's
/// size (a missing file ends everything here, before the destination is touched), with
/// the source's answer to `PASV` (`pasv`: `Some(false)`) or `EPSV` (`Some(true)`) sent
/// along with the `SIZE`.
async fn check_source(
    p: &mut Pair,
    src: &FtpUrl,
    dst: &FtpUrl,
    opts: &EngineOptions,
    pasv: Option<bool>,
) -> Result<(Option<u64>, Option<Early>), FxpError> {
    if p.src.peer() == p.dst.peer()
        && src.user == dst.user
        && src.path == dst.path
        && src.via == dst.via
    {
        // The same file under two names of one server (a host name and its address,
        // say): STOR would truncate what RETR is about to read.
        return Err(FxpError::Other(format!(
            "{src} and {dst} are the same file on {}",
            p.src.peer()
        )));
    }
    let (total, announced) = match pasv {
        Some(extended) => {
            let both = p.src.size_and_pasv(&src.path, extended).await;
            let (total, announced) = both.map_err(|e| p.err(Side::Source, e))?;
            (total, Some(announced))
        }
        None => (p.src.size(&src.path).await, None),
    };
    let total = total.map_err(|e| p.err(Side::Source, e))?;
    opts.emit(FileEvent::SourceSize { size: total });
    Ok((total, announced))
}

/// The source's answer to a `PASV`/`EPSV` sent with its `SIZE` (see `direct::early_passive`).
type Early = Result<super::client::Announced, FtpError>;

/// How long the destination gets to tell its size before a resumed try (grown with its
/// round trip): a live server answers at once.
const RESUME_SIZE_WAIT: Duration = Duration::from_millis(300);

/// Where to resume: the destination's size when an earlier try of this transfer wrote
/// part of the file and both servers offer `REST STREAM`; else 0. A destination that
/// does not answer has lost the session (its reply would answer the next command): the
/// try runs again on fresh sessions.
async fn resume_offset(
    p: &mut Pair,
    dst: &FtpUrl,
    total: Option<u64>,
    state: &State,
) -> Result<u64, Fail> {
    let both = p.src.features.has("REST STREAM") && p.dst.features.has("REST STREAM");
    if !state.stored || !both {
        return Ok(0);
    }
    let wait = p.dst.patience(RESUME_SIZE_WAIT);
    let size = match tokio::time::timeout(wait, p.dst.size(&dst.path)).await {
        Ok(size) => size,
        Err(_) => {
            let e = FtpError::Timeout {
                what: "SIZE".into(),
                after: wait,
            };
            return Err(Fail::Lost(p.err(Side::Destination, e)));
        }
    };
    Ok(match (total, size) {
        (Some(t), Ok(Some(d))) if d < t => d,
        _ => 0,
    })
}

/// The hash these sessions check a copy with, as `mode` asks: `None` for no hash;
/// `--verify hash` between servers without a common one fails before anything is copied.
fn hash_choice(p: &Pair, mode: Verify) -> Result<Option<Choice>, FxpError> {
    if !matches!(mode, Verify::Auto | Verify::Hash) {
        return Ok(None);
    }
    let (s, d) = (
        Support::from_features(p.src.features.lines()),
        Support::from_features(p.dst.features.lines()),
    );
    match digest::choose(&s, &d) {
        Some(c) => Ok(Some(c)),
        None if mode == Verify::Hash => Err(FxpError::Unverified(format!(
            "--verify hash: no hash algorithm both servers compute (source {}: {}; \
             destination {}: {})",
            p.src.host(),
            offered(&s),
            p.dst.host(),
            offered(&d)
        ))),
        None => Ok(None),
    }
}

/// `sha-256, md5` or `no hash command`, for messages.
fn offered(s: &Support) -> String {
    let all: Vec<&str> = s.algorithms().into_iter().map(|a| a.as_str()).collect();
    if all.is_empty() {
        "no hash command".into()
    } else {
        all.join(", ")
    }
}

/// A method's copy, checked as `opts.verify` asks: the sizes first where both servers
/// tell (a short copy is a [`Outcome::Mismatch`]: the next method may do better), then
/// the `hash` both servers compute, in parallel. A differing hash fails the file for good
/// and keeps or deletes the copy (`opts.on_mismatch`).
async fn verify(
    p: &mut Pair,
    (src, dst): (&FtpUrl, &FtpUrl),
    total: Option<u64>,
    hash: Option<Choice>,
    opts: &EngineOptions,
    mut done: Done,
) -> Outcome<Done> {
    if opts.verify == Verify::None {
        return Outcome::Copied(done);
    }
    let dst_size = match done.dst_size {
        Some(n) => Ok(Some(n)),
        None => p.dst.size(&dst.path).await,
    };
    if let (Some(t), Ok(Some(d))) = (total, dst_size) {
        if d != t {
            return Outcome::Mismatch(FxpError::SizeMismatch { src: t, dst: d });
        }
        done.bytes = d;
        done.verified = Check::Size;
    }
    let Some(c) = hash else {
        return Outcome::Copied(done);
    };
    let (alg, limit) = (c.algorithm, opts.hash_timeout);
    let (s, d) = tokio::join!(
        p.src.digest(c.src, alg, &src.path, total, limit),
        p.dst.digest(c.dst, alg, &dst.path, total, limit)
    );
    let failed = match (s, d) {
        (Ok(s), Ok(d)) if s == d => {
            tracing::debug!(%dst, digest = %d, "copy verified");
            done.verified = Check::Hash(alg);
            return Outcome::Copied(done);
        }
        (Ok(s), Ok(d)) => {
            let copy = dispose(p, &dst.path, opts.on_mismatch).await;
            return Outcome::Failed(Fail::Fatal(FxpError::HashMismatch {
                algorithm: alg,
                src: s.hex().to_owned(),
                dst: d.hex().to_owned(),
                copy,
            }));
        }
        (Err(e), _) => p.err(Side::Source, e),
        (_, Err(e)) => p.err(Side::Destination, e),
    };
    let in_step = |e: &FxpError| {
        matches!(
            e,
            FxpError::Server {
                error: FtpError::Refused { .. } | FtpError::BadReply { .. },
                ..
            }
        )
    };
    if opts.verify == Verify::Auto && in_step(&failed) {
        // The server answered, only not with a digest (a file too large for its hash
        // limit, say): the size check stands.
        tracing::warn!(%dst, error = %failed, check = %done.verified, "hash check failed; keeping the size check");
        return Outcome::Copied(done);
    }
    let hint = match &failed {
        FxpError::Server {
            error: FtpError::Timeout { .. },
            ..
        } => " (raise --hash-timeout for large files)",
        _ => "",
    };
    Outcome::Failed(Fail::Fatal(FxpError::Unverified(format!(
        "{failed}{hint}; the copy is left in place, unchecked"
    ))))
}

/// Renames (`keep`) or deletes a copy whose hash differs, saying what became of it.
/// A copy that cannot be renamed is deleted: it must not stay under the file's name.
async fn dispose(p: &mut Pair, path: &[u8], how: OnMismatch) -> String {
    let shown = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let renamed = match how {
        OnMismatch::Keep => {
            let kept = digest::mismatch_path(path);
            match p.dst.rename(path, &kept).await {
                Ok(()) => return format!("was kept as {} for inspection", shown(&kept)),
                Err(e) => Some((kept, e)),
            }
        }
        OnMismatch::Delete => None,
    };
    let deleted = p.dst.delete(path).await;
    match (renamed, deleted) {
        (None, Ok(())) => "was deleted".into(),
        (None, Err(e)) => format!("could not be deleted ({e}): it is still {}", shown(path)),
        (Some((kept, e)), Ok(())) => {
            format!(
                "could not be renamed to {} ({e}) and was deleted",
                shown(&kept)
            )
        }
        (Some((kept, e)), Err(d)) => format!(
            "could not be renamed to {} ({e}) nor deleted ({d}): it is still {}",
            shown(&kept),
            shown(path)
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::fxp::client::TlsPolicy;

    /// One file on a pool of its own, closed after.
    async fn transfer(
        src: &FtpUrl,
        dst: &FtpUrl,
        opts: &EngineOptions,
    ) -> Result<Report, FxpError> {
        let sessions = LoginPool::new(2);
        let result = transfer_with(&sessions, src, dst, opts).await;
        sessions.close().await;
        result
    }
    use crate::net::AllowList;

    fn url(s: &str) -> FtpUrl {
        FtpUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[tokio::test]
    async fn the_same_file_is_refused_without_connecting() {
        // Port 1 on a dead address: any connection attempt would fail differently.
        let u = url("ftp://u:p@127.0.0.99:1/f.bin");
        let e = transfer(&u, &u, &EngineOptions::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("same file"), "{e}");
        let other = url("ftp://u:p@127.0.0.99:1/g.bin");
        let e = transfer(
            &u,
            &other,
            &EngineOptions {
                retries: 0,
                timeout: Duration::from_secs(2),
                ..EngineOptions::default()
            },
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("source 127.0.0.99:1"), "{e}");
    }

    /// A copy between two dead addresses that the checks in `opts` must stop.
    async fn refused_copy(opts: &EngineOptions) -> FxpError {
        let (src, dst) = (url("ftp://127.0.0.99:1/a"), url("ftp://127.0.0.98:1/b"));
        transfer(&src, &dst, opts).await.unwrap_err()
    }

    /// Each connection is checked with its own URL's host: a name listed for one server
    /// does not admit the other, though both resolve to the same address. `127.1` is a
    /// host name to the URL parser that resolves, without DNS, to 127.0.0.1.
    #[tokio::test]
    async fn the_host_check_sees_each_urls_own_host() {
        let listed = AllowList::new(vec!["localhost".parse().unwrap()]);
        let opts = EngineOptions {
            retries: 0,
            allow: Some(Arc::new(listed)),
            ..EngineOptions::default()
        };
        let (named, other) = (url("ftp://localhost:1/a"), url("ftp://127.1:1/b"));
        let e = transfer(&other, &named, &opts)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("source 127.1:1") && e.contains("127.0.0.1 is not in the allow list"),
            "{e}"
        );
        // The named source is admitted: it gets as far as connecting (port 1 refuses).
        let e = transfer(&named, &other, &opts)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("source localhost:1") && e.contains("cannot connect"),
            "{e}"
        );
    }

    /// Jobs spawn transfers on the runtime: the future must be Send (`job::run`'s test
    /// holds the job's stream to the same).
    #[test]
    fn transfers_can_be_spawned() {
        fn spawnable<T: Send + 'static>(_: T) {}
        let (src, dst) = (url("ftp://a/x"), url("ftp://b/y"));
        let opts = EngineOptions::default();
        spawnable(async move { transfer(&src, &dst, &opts).await.map(|r| r.bytes) });
    }

    /// A TLS setup that cannot work (an unreadable CA file) fails before any connection
    /// and is not retried: every attempt would fail the same way.
    #[tokio::test]
    async fn a_broken_tls_setup_fails_at_once() {
        let retries = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = retries.clone();
        let opts = EngineOptions {
            retries: 3,
            tls: TlsPolicy::new(
                true,
                crate::fxp::ExtraRoots::File("/nonexistent/ca.pem".into()),
            ),
            progress: Some(Arc::new(move |e: &FileEvent| {
                if let FileEvent::Retrying { .. } = e {
                    seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })),
            ..EngineOptions::default()
        };
        let (src, dst) = (url("ftpes://127.0.0.99:1/a"), url("ftp://127.0.0.98:1/b"));
        let e = transfer(&src, &dst, &opts).await.unwrap_err().to_string();
        assert!(
            e.contains("TLS setup") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        assert_eq!(retries.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    /// Servers behind two different agents cannot reach each other: without the relay
    /// the copy is refused at once, naming both. A URL naming an agent where there are
    /// no agent links (the CLI) says so without connecting.
    #[tokio::test]
    async fn agents_that_leave_no_method_are_refused_before_connecting() {
        let opts = EngineOptions {
            retries: 0,
            relay_fallback: false,
            ..EngineOptions::default()
        };
        let (src, dst) = (
            url("ftp://127.0.0.99:1/a?via=site-a"),
            url("ftp://127.0.0.98:1/b?via=site-b"),
        );
        let e = transfer(&src, &dst, &opts).await.unwrap_err().to_string();
        assert!(
            e.contains("agent site-a") && e.contains("agent site-b") && e.contains("relay"),
            "{e}"
        );
        let e = transfer(
            &src,
            &url("ftp://127.0.0.98:1/b"),
            &EngineOptions {
                retries: 0,
                ..EngineOptions::default()
            },
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("agent site-a") && e.contains("agents:"), "{e}");
    }

    #[tokio::test]
    async fn the_allow_list_is_checked_before_connecting() {
        let opts = EngineOptions {
            retries: 0,
            // Empty: admits nothing.
            allow: Some(Arc::new(AllowList::default())),
            ..EngineOptions::default()
        };
        let e = refused_copy(&opts).await;
        assert!(e.to_string().contains("not allowed"), "{e}");
    }
}
