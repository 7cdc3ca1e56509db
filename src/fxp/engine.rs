//! One file from a source server to a destination server.
//!
//! Methods, tried in this order until one works (`Options::reverse` skips the first):
//! 1. standard FXP: `PASV`/`EPSV` on the source, `PORT`/`EPRT` on the destination naming
//!    the source's control address and announced port (never another host, never a port
//!    below 1024), `STOR` then `RETR`; the servers move the bytes;
//! 2. reverse FXP: the same with the roles swapped (`PASV` on the destination);
//! 3. relay: `PASV` on both, the engine connects to both and copies the bytes itself.
//!
//! A method that is refused while negotiating (a `PORT` to a foreign address, no `PASV`)
//! moves on to the next on the same sessions; one that fails once data should flow
//! (`425`, a stall, a short copy) gives up both sessions (`ABOR`, `QUIT`) and the next
//! method starts fresh, resuming with `REST` where both servers offer `REST STREAM`.
//! A refusal about the file itself (`550` on `RETR`/`SIZE`, `553` on `STOR`) ends the
//! transfer at once with the server's text; other failures are retried with backoff.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::{sleep, timeout};

use super::client::{Client, FtpError, with_arg};
use super::url::FtpUrl;
use crate::metrics;
use crate::net::AllowList;

/// How a file was moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `PASV` on the source, `PORT` on the destination.
    Fxp,
    /// `PASV` on the destination, `PORT` on the source.
    ReverseFxp,
    /// Through the engine: `PASV` on both, bytes copied here.
    Relay,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Fxp => "fxp",
            Method::ReverseFxp => "reverse_fxp",
            Method::Relay => "relay",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the front end hears while a transfer runs.
#[derive(Debug, Clone)]
pub enum Event {
    /// Both servers logged in; `size` is the source's `SIZE` when known.
    Started {
        src: String,
        dst: String,
        size: Option<u64>,
    },
    /// A method is being tried.
    Trying { method: Method, offset: u64 },
    /// A method failed; the next one (or a retry) follows.
    MethodFailed { method: Method, error: String },
    /// Bytes at the destination so far (polled with `SIZE`, or counted by the relay).
    Bytes { done: u64, total: Option<u64> },
    /// A whole attempt failed and another follows after `delay`.
    Retrying {
        attempt: u32,
        delay: Duration,
        error: String,
    },
}

/// Progress callback; must be cheap (it runs on the engine's task).
pub type Progress = Arc<dyn Fn(&Event) + Send + Sync>;

#[derive(Clone)]
pub struct Options {
    /// Try reverse FXP first (skip standard FXP).
    pub reverse: bool,
    /// Further attempts after a failed one (backoff 0.5 s, 1 s, 2 s, ...).
    pub retries: u32,
    /// Bound on every control step, and on a transfer making no progress.
    pub timeout: Duration,
    /// Relay the bytes when neither FXP direction works.
    pub relay_fallback: bool,
    /// Continue a partial destination file left by an earlier run (`REST`, when both
    /// servers offer `REST STREAM`); otherwise only this transfer's own retries resume.
    pub resume: bool,
    /// Files copied at once by a tree copy.
    pub concurrency: usize,
    /// How often the destination's `SIZE` is polled during an FXP copy.
    pub poll_interval: Duration,
    pub progress: Option<Progress>,
    /// Which servers may be reached: `None` (the CLI) allows all; the API and SITE
    /// commands pass `fxp.allow`. Checked per connection with the URL's host as written
    /// and each resolved address, so a host-name entry admits that name's own connection
    /// only, not every server of a transfer that mentions it.
    pub allow: Option<Arc<AllowList>>,
}

/// Longest wait between two attempts, however many retries were asked for.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Default for Options {
    fn default() -> Self {
        Options {
            reverse: false,
            retries: 2,
            timeout: Duration::from_secs(30),
            relay_fallback: true,
            resume: false,
            concurrency: 2,
            poll_interval: Duration::from_millis(250),
            progress: None,
            allow: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("reverse", &self.reverse)
            .field("retries", &self.retries)
            .field("timeout", &self.timeout)
            .field("relay_fallback", &self.relay_fallback)
            .field("resume", &self.resume)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// A logged-in session to `url`, within the allow list.
    pub async fn open(&self, url: &FtpUrl) -> Result<Client, FtpError> {
        Client::open_checked(url, self.timeout, self.allow.as_deref()).await
    }

    pub(super) fn emit(&self, e: Event) {
        match &e {
            Event::MethodFailed { method, error } => {
                tracing::debug!(%method, %error, "fxp method failed");
            }
            Event::Retrying { attempt, error, .. } => {
                tracing::debug!(attempt, %error, "fxp attempt failed, retrying");
            }
            _ => {}
        }
        if let Some(p) = &self.progress {
            p(&e);
        }
    }
}

/// The outcome of a successful copy.
#[derive(Debug, Clone)]
pub struct Report {
    pub method: Method,
    /// Size of the copy: the destination's `SIZE`, else the source's, else what the relay
    /// counted (0 when nothing tells).
    pub bytes: u64,
    /// Bytes that crossed the engine: 0 for FXP.
    pub relayed_bytes: u64,
    /// Where the last attempt resumed (`REST`), 0 when it started from scratch.
    pub resumed_from: u64,
    pub attempts: u32,
    pub duration: Duration,
    /// `SIZE` on both ends agreed.
    pub verified: bool,
}

/// Which server a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FxpError {
    #[error("{side} {host}: {error}")]
    Server {
        side: Side,
        host: String,
        error: FtpError,
    },
    #[error("size differs after the copy: source {src} bytes, destination {dst}")]
    SizeMismatch { src: u64, dst: u64 },
    #[error("no progress for {0:?}")]
    Stalled(Duration),
    #[error("relay: {0}")]
    Relay(std::io::Error),
    /// Every method failed: each one's reason, in the order tried.
    #[error("{}", .0.iter().map(|(m, e)| format!("{m}: {e}")).collect::<Vec<_>>().join("; "))]
    Methods(Vec<(Method, FxpError)>),
    #[error("{0}")]
    Other(String),
}

impl FxpError {
    /// One method's failure as itself, several as [`FxpError::Methods`].
    fn methods(mut tried: Vec<(Method, FxpError)>) -> FxpError {
        match tried.len() {
            0 => FxpError::Other("no transfer method to try".into()),
            1 => tried.remove(0).1,
            _ => FxpError::Methods(tried),
        }
    }

    /// The server's reply code, when a server refused something.
    pub fn code(&self) -> Option<u16> {
        match self {
            FxpError::Server { error, .. } => error.code(),
            // The last method's answer decides whether retrying is any use.
            FxpError::Methods(tried) => tried.last().and_then(|(_, e)| e.code()),
            _ => None,
        }
    }

    /// A permanent refusal (5xx): retrying would get the same answer.
    pub fn is_permanent(&self) -> bool {
        self.code().is_some_and(|c| c / 100 == 5)
    }
}

/// Copies `src` to `dst` (a `dst` path that is empty or ends in `/` names a directory:
/// the file keeps its name). Never returns before both control sessions are closed.
pub async fn transfer(src: &FtpUrl, dst: &FtpUrl, opts: &Options) -> Result<Report, FxpError> {
    let dst = &destination_path(src, dst);
    if same_file(src, dst) {
        // STOR would truncate the very file RETR is about to read.
        return Err(FxpError::Other(format!(
            "{src} and {dst} are the same file"
        )));
    }
    metrics::fxp_active(1.0);
    let _active = ActiveGuard;
    let started = Instant::now();
    let mut state = State {
        stored: opts.resume,
        last_method: None,
    };
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        match attempt_once(src, dst, opts, &mut state).await {
            Ok(done) => break Ok(done),
            Err(e) if e.is_permanent() || attempt > opts.retries => break Err(e),
            Err(e) => {
                let delay = backoff(attempt);
                opts.emit(Event::Retrying {
                    attempt,
                    delay,
                    error: e.to_string(),
                });
                sleep(delay).await;
            }
        }
    };
    let took = started.elapsed();
    match result {
        Ok(done) => {
            let report = Report {
                method: done.method,
                bytes: done.bytes,
                relayed_bytes: done.relayed,
                resumed_from: done.offset,
                attempts: attempt,
                duration: took,
                verified: done.verified,
            };
            metrics::fxp_transfer("ok", done.method.as_str(), done.bytes, took);
            tracing::debug!(%src, %dst, method = %done.method, bytes = done.bytes, ?took, "fxp transfer done");
            Ok(report)
        }
        Err(e) => {
            let method = state.last_method.map_or("none", Method::as_str);
            metrics::fxp_transfer("failed", method, 0, took);
            tracing::debug!(%src, %dst, error = %e, "fxp transfer failed");
            Err(e)
        }
    }
}

/// The wait after failed attempt `attempt` (1-based): 0.5 s, 1 s, 2 s, ... up to
/// [`MAX_BACKOFF`].
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(MAX_BACKOFF)
}

/// `dst`, with the source's file name appended when it names a directory.
pub fn destination_path(src: &FtpUrl, dst: &FtpUrl) -> FtpUrl {
    if dst.path.is_empty() || dst.path.ends_with(b"/") {
        dst.join(src.file_name())
    } else {
        dst.clone()
    }
}

fn same_file(a: &FtpUrl, b: &FtpUrl) -> bool {
    a.host.eq_ignore_ascii_case(&b.host) && a.port == b.port && a.user == b.user && a.path == b.path
}

struct ActiveGuard;

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        metrics::fxp_active(-1.0);
    }
}

/// What survives from one attempt to the next.
#[derive(Default)]
pub(super) struct State {
    /// A `STOR` was sent: the destination file may hold a resumable prefix.
    pub(super) stored: bool,
    pub(super) last_method: Option<Method>,
}

pub(super) struct Done {
    pub(super) method: Method,
    pub(super) bytes: u64,
    pub(super) relayed: u64,
    pub(super) offset: u64,
    pub(super) verified: bool,
}

/// How a method failed: try the next method, or give up this attempt.
pub(super) enum Fail {
    /// Refused while negotiating: the sessions are clean, the next method may use them.
    Negotiation(FxpError),
    /// Failed after `STOR`/`RETR` were sent: give up these sessions.
    Transfer(FxpError),
    /// About the file itself, or a login: no other method would do better.
    Fatal(FxpError),
}

/// Two logged-in sessions.
pub(super) struct Pair {
    pub(super) src: Client,
    pub(super) dst: Client,
}

impl Pair {
    async fn open(src: &FtpUrl, dst: &FtpUrl, opts: &Options) -> Result<Pair, FxpError> {
        let (s, d) = tokio::join!(opts.open(src), opts.open(dst));
        match (s, d) {
            (Ok(src), Ok(dst)) => Ok(Pair { src, dst }),
            (Err(e), other) => {
                if let Ok(c) = other {
                    c.quit().await;
                }
                Err(at(Side::Source, &src.host_port(), e))
            }
            (Ok(c), Err(e)) => {
                c.quit().await;
                Err(at(Side::Destination, &dst.host_port(), e))
            }
        }
    }

    pub(super) fn side(&mut self, side: Side) -> &mut Client {
        match side {
            Side::Source => &mut self.src,
            Side::Destination => &mut self.dst,
        }
    }

    fn err(&self, side: Side, e: FtpError) -> FxpError {
        let host = match side {
            Side::Source => self.src.host(),
            Side::Destination => self.dst.host(),
        };
        at(side, host, e)
    }

    async fn quit(self) {
        tokio::join!(self.src.quit(), self.dst.quit());
    }
}

/// `ABOR` and `QUIT` on both sessions of a pair whose transfer failed.
async fn teardown(pair: Option<Pair>) {
    if let Some(p) = pair {
        tokio::join!(p.src.abort_and_quit(), p.dst.abort_and_quit());
    }
}

fn at(side: Side, host: &str, error: FtpError) -> FxpError {
    FxpError::Server {
        side,
        host: host.to_owned(),
        error,
    }
}

async fn attempt_once(
    src: &FtpUrl,
    dst: &FtpUrl,
    opts: &Options,
    state: &mut State,
) -> Result<Done, FxpError> {
    let mut methods = vec![];
    if !opts.reverse {
        methods.push(Method::Fxp);
    }
    methods.push(Method::ReverseFxp);
    if opts.relay_fallback {
        methods.push(Method::Relay);
    }
    let mut pair: Option<Pair> = None;
    let mut total = None;
    let mut tried: Vec<(Method, FxpError)> = vec![];
    let mut announced_start = false;
    // A pair given up after a failed transfer: `ABOR` and `QUIT` before the next method
    // logs in afresh (pyftpdlib, logged into while it winds down the failed transfer,
    // was seen to leave the new login unanswered for the whole timeout).
    let mut dying: Option<Pair> = None;
    for method in methods {
        let mut p = match pair.take() {
            Some(p) => p,
            None => {
                teardown(dying.take()).await;
                Pair::open(src, dst, opts).await?
            }
        };
        if !announced_start
            && p.src.peer() == p.dst.peer()
            && src.user == dst.user
            && src.path == dst.path
        {
            // The same file under two names of one server (a host name and its address,
            // say): STOR would truncate what RETR is about to read.
            let e = FxpError::Other(format!(
                "{src} and {dst} are the same file on {}",
                p.src.peer()
            ));
            p.quit().await;
            return Err(e);
        }
        if !announced_start {
            // The source's size: a missing file ends everything here, before the
            // destination is touched.
            total = match p.src.size(&src.path).await {
                Ok(t) => t,
                Err(e) => {
                    let e = p.err(Side::Source, e);
                    p.quit().await;
                    return Err(e);
                }
            };
            opts.emit(Event::Started {
                src: src.to_string(),
                dst: dst.to_string(),
                size: total,
            });
            announced_start = true;
        }
        let offset = resume_offset(&mut p, dst, total, state).await;
        opts.emit(Event::Trying { method, offset });
        state.last_method = Some(method);
        let run = Run {
            src,
            dst,
            opts,
            total,
            offset,
        };
        let result = match method {
            Method::Fxp | Method::ReverseFxp => run.direct(&mut p, method, state).await,
            Method::Relay => run.relay(&mut p, state).await,
        };
        match result {
            Ok(mut done) => {
                done.verified = false;
                if let (Some(t), Ok(Some(d))) = (total, p.dst.size(&dst.path).await) {
                    if d != t {
                        let e = FxpError::SizeMismatch { src: t, dst: d };
                        opts.emit(Event::MethodFailed {
                            method,
                            error: e.to_string(),
                        });
                        p.quit().await;
                        tried.push((method, e));
                        continue;
                    }
                    done.bytes = d;
                    done.verified = true;
                }
                p.quit().await;
                return Ok(done);
            }
            Err(fail) => {
                let (e, keep, fatal) = match fail {
                    Fail::Negotiation(e) => (e, true, false),
                    Fail::Transfer(e) => (e, false, false),
                    Fail::Fatal(e) => (e, false, true),
                };
                opts.emit(Event::MethodFailed {
                    method,
                    error: e.to_string(),
                });
                if keep {
                    pair = Some(p);
                } else {
                    dying = Some(p);
                }
                if fatal {
                    teardown(dying.take()).await;
                    if let Some(p) = pair.take() {
                        p.quit().await;
                    }
                    return Err(e);
                }
                tried.push((method, e));
            }
        }
    }
    teardown(dying.take()).await;
    if let Some(p) = pair.take() {
        p.quit().await;
    }
    Err(FxpError::methods(tried))
}

/// Where to resume: the destination's size when an earlier try of this transfer wrote
/// part of the file and both servers offer `REST STREAM`; else 0.
async fn resume_offset(p: &mut Pair, dst: &FtpUrl, total: Option<u64>, state: &State) -> u64 {
    let both = p.src.features.has("REST STREAM") && p.dst.features.has("REST STREAM");
    if !state.stored || !both {
        return 0;
    }
    match (total, p.dst.size(&dst.path).await) {
        (Some(t), Ok(Some(d))) if d < t => d,
        _ => 0,
    }
}

/// One method on one pair of sessions.
pub(super) struct Run<'a> {
    pub(super) src: &'a FtpUrl,
    pub(super) dst: &'a FtpUrl,
    pub(super) opts: &'a Options,
    pub(super) total: Option<u64>,
    pub(super) offset: u64,
}

impl Run<'_> {
    /// Standard (`Fxp`) or reverse FXP.
    async fn direct(&self, p: &mut Pair, method: Method, state: &mut State) -> Result<Done, Fail> {
        let (passive_side, active_side) = match method {
            Method::ReverseFxp => (Side::Destination, Side::Source),
            _ => (Side::Source, Side::Destination),
        };
        // A poller session on the destination reports progress and notices a stall.
        let mut poller = if p.dst.features.has("SIZE") {
            self.opts.open(self.dst).await.ok()
        } else {
            None
        };
        let (passive, active) = roles(p, passive_side);
        let extended = passive.features.has("EPSV")
            && active.features.has("EPRT")
            && passive.peer().is_ipv4() == active.peer().is_ipv4();
        // Bounce safety: the active server gets the address the passive server just
        // announced in this transfer, as the opaque `Announced` value that only `pasv`
        // makes (with the passive server's own control IP and a port >= 1024: a `227`
        // naming a third host or port 25 cannot turn the active server into a weapon)
        // and only `port_to` takes.
        let negotiated = async {
            let announced = passive
                .pasv(extended)
                .await
                .map_err(|e| self.err(passive_side, e))?;
            active
                .port_to(announced)
                .await
                .map_err(|e| self.err(active_side, e))
        };
        let negotiated = match negotiated.await {
            Ok(()) => self.rest_both(p).await,
            Err(e) => Err(Fail::Negotiation(e)),
        };
        if let Err(fail) = negotiated {
            if let Some(c) = poller {
                c.quit().await;
            }
            return Err(fail);
        }
        let dst_active = active_side == Side::Destination;
        let result = self.start_and_wait(p, &mut poller, state, dst_active).await;
        if let Some(c) = poller {
            c.quit().await;
        }
        result?;
        Ok(Done {
            method,
            bytes: self.total.unwrap_or(0),
            relayed: 0,
            offset: self.offset,
            verified: false,
        })
    }

    pub(super) fn err(&self, side: Side, e: FtpError) -> FxpError {
        let url = match side {
            Side::Source => self.src,
            Side::Destination => self.dst,
        };
        at(side, &url.host_port(), e)
    }

    pub(super) async fn rest_both(&self, p: &mut Pair) -> Result<(), Fail> {
        if self.offset == 0 {
            return Ok(());
        }
        p.src
            .rest(self.offset)
            .await
            .map_err(|e| Fail::Negotiation(p.err(Side::Source, e)))?;
        p.dst
            .rest(self.offset)
            .await
            .map_err(|e| Fail::Negotiation(p.err(Side::Destination, e)))
    }

    /// Sends `STOR` and `RETR` before waiting on either (a passive server may answer only
    /// once its data connection exists), then waits for both completions.
    async fn start_and_wait(
        &self,
        p: &mut Pair,
        poller: &mut Option<Client>,
        state: &mut State,
        dst_active: bool,
    ) -> Result<(), Fail> {
        let opened = self.send_transfer(p, state, dst_active).await?;
        let limit = self.opts.timeout;
        let Pair { src, dst } = &mut *p;
        let outcome = {
            let mut retr = pin!(finish(src, "RETR", &self.src.path, limit, false));
            let mut stor = pin!(async {
                finish(dst, "STOR", &self.dst.path, limit, opened).await?;
                check_stored(dst, &self.dst.path, self.total).await
            });
            let mut poll = pin!(poll_progress(poller, self));
            // Once one side is done the bytes have all gone; the other gets `limit` to say
            // so (pure-ftpd may drop a foreign peer and never answer RETR). After a failure
            // the other side gets a moment only, for its (often more telling) reason.
            let (first, second) = tokio::select! {
                r = &mut retr => {
                    let wait = other_wait(&r, limit);
                    let other = timeout(wait, &mut stor).await;
                    ((Side::Source, r), (Side::Destination, other.unwrap_or_else(|_| Err(stalled(wait)))))
                }
                r = &mut stor => {
                    let wait = other_wait(&r, limit);
                    let other = timeout(wait, &mut retr).await;
                    ((Side::Destination, r), (Side::Source, other.unwrap_or_else(|_| Err(stalled(wait)))))
                }
                e = &mut poll => {
                    return Err(Fail::Transfer(e));
                }
            };
            [first, second]
        };
        let mut failures: Vec<(Side, FtpError)> = outcome
            .into_iter()
            .filter_map(|(side, r)| r.err().map(|e| (side, e)))
            .collect();
        // The root cause first: a refusal of the data connection (`425`) or of the file
        // explains the other side's `426` or timeout.
        failures.sort_by_key(|(_, e)| match e.code() {
            Some(425) => 0,
            Some(426) => 2,
            Some(_) => 1,
            None => 3,
        });
        match failures.into_iter().next() {
            Some((side, e)) => Err(classify(side, e, p)),
            None => Ok(()),
        }
    }

    /// Sends `STOR` to the destination, then `RETR` to the source.
    ///
    /// Neither waits for the other's `150`: a passive server may answer only once its data
    /// connection exists, which needs the other command. One exception, bounded: when
    /// the destination is the active side its `150` cannot depend on the source (its
    /// connection completes in the source's listen backlog), so it gets up to
    /// [`OPEN_WAIT`] to open before `RETR` goes out. pyftpdlib drops an active data
    /// connection that turns readable before it has processed `STOR`, and a small file
    /// can arrive and end that fast. Returns whether the destination's `150` was read.
    pub(super) async fn send_transfer(
        &self,
        p: &mut Pair,
        state: &mut State,
        dst_active: bool,
    ) -> Result<bool, Fail> {
        state.stored = true;
        p.dst
            .send(&with_arg(b"STOR", &self.dst.path))
            .await
            .map_err(|e| Fail::Transfer(p.err(Side::Destination, e)))?;
        let mut opened = false;
        if dst_active {
            match p
                .dst
                .read_reply_within("STOR", OPEN_WAIT.min(self.opts.timeout))
                .await
            {
                Ok(r) if r.class() == 1 => opened = true,
                Ok(r) => {
                    let shown =
                        String::from_utf8_lossy(&with_arg(b"STOR", &self.dst.path)).into_owned();
                    return Err(classify(
                        Side::Destination,
                        super::client::refused(&shown, &r),
                        p,
                    ));
                }
                // Not open yet: the source's RETR may be what it waits for after all.
                Err(FtpError::Timeout { .. }) => {}
                Err(e) => return Err(Fail::Transfer(p.err(Side::Destination, e))),
            }
        }
        p.src
            .send(&with_arg(b"RETR", &self.src.path))
            .await
            .map_err(|e| Fail::Transfer(p.err(Side::Source, e)))?;
        Ok(opened)
    }
}

/// `(passive, active)` sessions for a direct transfer whose passive side is `passive`.
fn roles(p: &mut Pair, passive: Side) -> (&mut Client, &mut Client) {
    match passive {
        Side::Source => (&mut p.src, &mut p.dst),
        Side::Destination => (&mut p.dst, &mut p.src),
    }
}

/// How long an active destination gets to open (`150`) before `RETR` goes to the source.
pub(super) const OPEN_WAIT: Duration = Duration::from_secs(2);

/// How long the other side of a failed transfer gets to give its own reason.
const GRACE: Duration = Duration::from_secs(1);

/// How long to wait for the other side once one side of a transfer has finished.
fn other_wait(first: &Result<(), FtpError>, limit: Duration) -> Duration {
    match first {
        Ok(()) => limit,
        // A server's refusal: the other server's reply may name the cause.
        Err(e) if e.code().is_some() => GRACE.min(limit),
        // The engine's own finding (a short file, a timeout): nothing more to learn.
        Err(_) => Duration::ZERO,
    }
}

fn stalled(limit: Duration) -> FtpError {
    FtpError::Timeout {
        what: "transfer completion".into(),
        after: limit,
    }
}

/// Reads a transfer's replies to the end: the preliminary one within `limit` (unless
/// `opened`: already read), the final one without a bound of its own (the progress poll
/// and the other side bound it).
async fn finish(
    c: &mut Client,
    cmd: &str,
    path: &[u8],
    limit: Duration,
    opened: bool,
) -> Result<(), FtpError> {
    let shown = String::from_utf8_lossy(&with_arg(cmd.as_bytes(), path)).into_owned();
    let forever = Duration::from_secs(365 * 86400);
    let first = c
        .read_reply_within(cmd, if opened { forever } else { limit })
        .await?;
    let last = if first.class() == 1 {
        c.read_reply_within(cmd, forever).await?
    } else {
        first
    };
    if last.class() == 2 {
        Ok(())
    } else {
        Err(super::client::refused(&shown, &last))
    }
}

/// After the destination's `226`: a short file means the source's data connection broke
/// (pure-ftpd accepts a foreign peer, then drops it and never answers `RETR`), which is
/// better known now than after waiting for the source.
async fn check_stored(c: &mut Client, path: &[u8], total: Option<u64>) -> Result<(), FtpError> {
    let Some(total) = total.filter(|_| c.features.has("SIZE")) else {
        return Ok(());
    };
    match c.size(path).await? {
        Some(n) if n < total => Err(FtpError::Other(format!(
            "the destination stored {n} of {total} bytes"
        ))),
        _ => Ok(()),
    }
}

/// A refusal of `RETR`/`STOR` about the data connection (`425`, `426`) or a timeout lets
/// the next method try; one about the file (`550`, `553`, ...) does not.
pub(super) fn classify(side: Side, e: FtpError, p: &Pair) -> Fail {
    let fatal = matches!(e.code(), Some(c) if c != 425 && c != 426);
    let e = p.err(side, e);
    if fatal {
        Fail::Fatal(e)
    } else {
        Fail::Transfer(e)
    }
}

/// Polls the destination's `SIZE` for progress events; returns only on a stall (no
/// growth for the timeout). Without a poller, progress cannot be seen: it returns after
/// a generous bound instead (ten timeouts plus the size at 256 KiB/s), so a pair of
/// servers that never answer cannot hold the transfer forever.
async fn poll_progress(poller: &mut Option<Client>, run: &Run<'_>) -> FxpError {
    if let Some(c) = poller {
        let limit = run.opts.timeout;
        let mut last = run.offset;
        let mut since = Instant::now();
        loop {
            sleep(run.opts.poll_interval).await;
            let done = match c.size(&run.dst.path).await {
                Ok(Some(n)) => n,
                Ok(None) | Err(FtpError::Refused { .. }) => last,
                // The poller itself is gone: fall back to the bound by size below.
                Err(_) => break,
            };
            if done != last {
                last = done;
                since = Instant::now();
                run.opts.emit(Event::Bytes {
                    done,
                    total: run.total,
                });
            } else if since.elapsed() >= limit {
                return FxpError::Stalled(limit);
            }
        }
    }
    // Progress cannot be watched: allow the file's size at a slow 256 KiB/s, plus margin.
    let bytes = run.total.unwrap_or(0).saturating_sub(run.offset);
    let bound = run
        .opts
        .timeout
        .saturating_mul(10)
        .saturating_add(Duration::from_secs(bytes / (256 * 1024)));
    sleep(bound).await;
    FxpError::Other(format!(
        "no completion within {bound:?} (the destination's size could not be watched)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> FtpUrl {
        FtpUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_directory_destination_keeps_the_name() {
        let src = url("ftp://a/pub/big.bin");
        assert_eq!(destination_path(&src, &url("ftp://b/")).path, b"big.bin");
        assert_eq!(
            destination_path(&src, &url("ftp://b/in/")).path,
            b"in/big.bin"
        );
        assert_eq!(destination_path(&src, &url("ftp://b/x.bin")).path, b"x.bin");
    }

    #[tokio::test]
    async fn the_same_file_is_refused_without_connecting() {
        // Port 1 on a dead address: any connection attempt would fail differently.
        let u = url("ftp://u:p@127.0.0.99:1/f.bin");
        let e = transfer(&u, &u, &Options::default()).await.unwrap_err();
        assert!(e.to_string().contains("same file"), "{e}");
        let other = url("ftp://u:p@127.0.0.99:1/g.bin");
        let e = transfer(
            &u,
            &other,
            &Options {
                retries: 0,
                timeout: Duration::from_secs(2),
                ..Options::default()
            },
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("source 127.0.0.99:1"), "{e}");
    }

    #[test]
    fn the_backoff_doubles_up_to_a_minute() {
        let ms = |n| backoff(n).as_millis();
        assert_eq!([ms(1), ms(2), ms(3), ms(4)], [500, 1000, 2000, 4000]);
        assert_eq!(backoff(8), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
        assert_eq!(ms(0), 500);
    }

    /// A copy between two dead addresses that the checks in `opts` must stop.
    async fn refused_copy(opts: &Options) -> FxpError {
        let (src, dst) = (url("ftp://127.0.0.99:1/a"), url("ftp://127.0.0.98:1/b"));
        transfer(&src, &dst, opts).await.unwrap_err()
    }

    /// Each connection is checked with its own URL's host: a name listed for one server
    /// does not admit the other, though both resolve to the same address. `127.1` is a
    /// host name to the URL parser that resolves, without DNS, to 127.0.0.1.
    #[tokio::test]
    async fn the_host_check_sees_each_urls_own_host() {
        let listed = AllowList::new(vec!["localhost".parse().unwrap()]);
        let opts = Options {
            retries: 0,
            allow: Some(Arc::new(listed)),
            ..Options::default()
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

    /// The API and SITE front ends spawn transfers on the runtime: the future must be Send.
    #[test]
    fn transfers_can_be_spawned() {
        fn spawnable<T: Send + 'static>(_: T) {}
        let (src, dst) = (url("ftp://a/x"), url("ftp://b/y"));
        let opts = Options::default();
        spawnable(async move { transfer(&src, &dst, &opts).await.map(|r| r.bytes) });
        let jobs = vec![(url("ftp://a/x"), url("ftp://b/y"))];
        let opts = Options::default();
        spawnable(async move { crate::fxp::tree::copy_list(&jobs, &opts).await.files });
        let (src, dst, opts) = (url("ftp://a/x"), url("ftp://b/y"), Options::default());
        spawnable(async move { crate::fxp::tree::copy_tree(&src, &dst, &opts).await.is_ok() });
    }

    #[tokio::test]
    async fn the_allow_list_is_checked_before_connecting() {
        let opts = Options {
            retries: 0,
            // Empty: admits nothing.
            allow: Some(Arc::new(AllowList::default())),
            ..Options::default()
        };
        let e = refused_copy(&opts).await;
        assert!(e.to_string().contains("not allowed"), "{e}");
    }
}
