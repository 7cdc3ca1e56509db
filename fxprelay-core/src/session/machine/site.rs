//! `SITE FXP` inside a proxied session: a client logged in to server A through the proxy
//! orders a server-to-server copy to or from server B with a raw command, which any
//! client can send:
//!
//! - `SITE FXP TO ftp://user:pass@B/dir/` chooses B: it must pass `fxp.allow` and not be
//!   the proxy itself, and the proxy logs in to it at once (and out again), so a wrong
//!   server, password or address is answered here and not at the first copy;
//! - `SITE FXP PUT [-r] <path-on-A> [<path-on-B>]` copies A to B, `SITE FXP GET [-r]
//!   <path-on-B> [<path-on-A>]` B to A (paths relative to the login directories); `-r`
//!   copies a directory tree, through the same tree copy as `fxprelay fxp -r`;
//! - `SITE FXP STATUS` shows the destination and the last result.
//!
//! Failures are answered by [`answer`], the one place that turns an error's kind into a
//! reply code: a refusal by rule or by B's login `530`, other permanent refusals `550`,
//! temporary failures (unreachable, timed out, `4xx`) `451`.
//!
//! The proxy logs in to A again with the credentials the client used (kept in memory for
//! the session only, never logged), and runs the same engine as the CLI and the API, as a
//! task: meanwhile the client may ask `STAT` (bytes so far) or `ABOR` (cancel), and the
//! session still honours shutdown and an upstream that closes. What the engine may reach
//! and which certificates it trusts are decided here ([`FxpRules`]), not by the shell.

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::{Action, Count, FxpRules, Machine, Say};
use crate::fxp::job::plan::Plan;
use crate::fxp::job::{Failure, FailureKind, JobEvent, JobState};
use crate::fxp::render;
use crate::fxp::url::{FtpUrl, Security, VirtualHost};
use crate::net::AllowList;
use crate::proto::command::{Command, Verb, VerbClass};
use crate::proto::line::trim_eol;
use crate::proto::reply::Reply;
use crate::session::replies::{FxpAnswer, SITE_FXP_USAGE, multi_line};

/// Whether `SITE` arguments are the proxy's own `SITE FXP` (which carry passwords in URLs).
pub fn is_site_fxp(args: &[u8]) -> bool {
    let args = args.trim_ascii_start();
    args.get(..3)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"FXP"))
        && args.get(3).is_none_or(|b| b.is_ascii_whitespace())
}

/// The `SITE FXP` state of one session.
#[derive(Debug, Default)]
pub(super) struct SiteState {
    /// The user name and password the client logged in to A with.
    pub user: Option<String>,
    pub pass: Option<String>,
    destination: Option<FtpUrl>,
    /// A `SITE FXP TO` whose login is under way.
    checking: Option<FtpUrl>,
    last: Option<String>,
    running: Option<Copy>,
}

impl SiteState {
    /// A copy or a destination check is under way: the client waits for its reply.
    pub(super) fn copying(&self) -> bool {
        self.running.is_some() || self.checking.is_some()
    }
}

/// A copy in progress (URLs as shown: without passwords).
#[derive(Debug)]
struct Copy {
    src: String,
    dst: String,
    /// When it started (for the metric of a cancelled copy).
    started: Instant,
    /// Its job's progress, folded from the job's events: what `STAT` and the final
    /// reply show.
    job: JobState,
}

/// What a `SITE FXP` failure is about: where it is answered differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The check of a `SITE FXP TO` destination.
    Destination,
    /// A copy.
    Copy,
}

/// The one place that turns a `SITE FXP` failure into a reply code (see [`FxpAnswer`]):
/// refused by rule (outside `fxp.allow`, the proxy itself) or by B's login: `530`, only
/// while choosing the destination (during a copy a `530` would read as the client's own
/// session ending); other permanent refusals (a `5xx` from a server, an untrusted
/// certificate): `550`; anything a retry may mend (unreachable, no answer, a `4xx`):
/// `451`.
pub fn answer(stage: Stage, e: &Failure) -> FxpAnswer {
    let by_rule = e.kind == FailureKind::NotAllowed;
    let login = e.kind == FailureKind::LoginRefused && e.code.is_some_and(|c| c / 100 == 5);
    match stage {
        Stage::Destination if by_rule => FxpAnswer::NotAllowed,
        Stage::Destination if login => FxpAnswer::LoginRefused,
        _ if e.permanent || by_rule => FxpAnswer::Permanent,
        _ => FxpAnswer::Temporary,
    }
}

impl Machine {
    /// Handles `SITE FXP ...` (`args` after `SITE`) for a logged-in client.
    pub(super) fn on_site_fxp(&mut self, args: &[u8], now: Instant) {
        // Bytes throughout: paths need not be UTF-8, and a lossy decoding would copy
        // another file than the one named.
        let mut words = trim_eol(args)
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .skip(1);
        let sub = words.next().unwrap_or_default().to_ascii_uppercase();
        let rest: Vec<&[u8]> = words.collect();
        match (sub.as_slice(), rest.as_slice()) {
            (b"TO", [url]) => match FtpUrl::parse_bytes(url) {
                Ok(u) => self.site_destination(u),
                Err(e) => self.say(Say::FxpNotAnUrl {
                    error: e.to_string(),
                }),
            },
            (b"PUT" | b"GET", [flag, from, to @ ..]) if is_recursive(flag) && to.len() <= 1 => {
                self.site_copy(sub == b"PUT", true, from, to.first().copied(), now)
            }
            (b"PUT" | b"GET", [from, to @ ..]) if !is_recursive(from) && to.len() <= 1 => {
                self.site_copy(sub == b"PUT", false, from, to.first().copied(), now)
            }
            (b"STATUS", []) => self.site_status(),
            _ => self.say(Say::FxpUsage),
        }
    }

    /// `SITE FXP TO`: refused at once when the URL names an address outside `fxp.allow`
    /// or the proxy itself; otherwise the shell logs in to it (names are checked on
    /// their addresses then) and [`super::Event::FxpChecked`] answers.
    fn site_destination(&mut self, u: FtpUrl) {
        let literal = u.host.parse::<std::net::IpAddr>().ok();
        // An address behind an agent is one of the agent's network, never this proxy's.
        let here = literal.filter(|_| u.via.is_none());
        if let Some(e) = here.and_then(|ip| self.own_socket(std::net::SocketAddr::new(ip, u.port)))
        {
            self.reject(crate::rejection::Rejection::SelfTarget);
            warn!(error = %e, "SITE FXP TO names this proxy itself; refused");
            return self.refuse_destination(e.to_string());
        }
        let allow = self.fxp_allow();
        if let Some(Err(denied)) = literal.map(|ip| allow.admits(&u.host, ip)) {
            info!(destination = %u, %denied, "SITE FXP TO outside fxp.allow; refused");
            return self.refuse_destination(denied.to_string());
        }
        // Until the check says otherwise, no destination: a copy must never go to the
        // one chosen before.
        self.site.destination = None;
        self.site.checking = Some(u.clone());
        let rules = self.fxp_rules(allow);
        self.act(Action::CheckFxpDestination { url: u, rules });
    }

    fn refuse_destination(&mut self, why: String) {
        self.site.destination = None;
        self.say(Say::FxpFailed {
            answer: FxpAnswer::NotAllowed,
            text: format!("Not an FXP destination: {why}."),
        });
    }

    /// The login to a `SITE FXP TO` destination succeeded or failed.
    pub(super) fn on_fxp_destination_checked(&mut self, result: Result<(), Failure>, now: Instant) {
        let Some(u) = self.site.checking.take() else {
            return;
        };
        self.last_command = now;
        match result {
            Ok(()) => {
                let url = u.to_string();
                self.site.destination = Some(u);
                self.say(Say::FxpDestinationSet { url });
            }
            Err(e) => {
                warn!(destination = %u, error = %e.message, "SITE FXP TO refused");
                let text = format!("FXP destination {u}: {}", e.message);
                self.say(Say::FxpFailed {
                    answer: answer(Stage::Destination, &e),
                    text,
                });
            }
        }
        self.settle(now);
    }

    fn site_status(&mut self) {
        let dest = self
            .site
            .destination
            .as_ref()
            .map_or("none (SITE FXP TO <url>)".to_string(), |d| d.to_string());
        let last = self.site.last.as_deref().unwrap_or("no copy yet");
        let lines = [format!("Destination: {dest}"), format!("Last copy: {last}")];
        self.act(Action::ToClient(multi_line(211, "FXP status", lines)));
    }

    /// Starts one copy: `put` is A to B, else B to A; `recursive`, a tree.
    fn site_copy(
        &mut self,
        put: bool,
        recursive: bool,
        from: &[u8],
        to: Option<&[u8]>,
        now: Instant,
    ) {
        let Some(b) = self.site.destination.clone() else {
            return self.say(Say::FxpNoDestination);
        };
        let (Some(user), Some(pass)) = (self.site.user.clone(), self.site.pass.clone()) else {
            return self.say(Say::FxpLoginFirst);
        };
        let a = FtpUrl {
            // The engine reaches A the way this session does.
            security: match (self.tls.upstream_secure, self.upstream_plan()) {
                (false, _) => Security::Plain,
                (true, crate::tls::UpstreamPlan::Implicit) => Security::Implicit,
                (true, _) => Security::Explicit,
            },
            user,
            password: Some(pass),
            host: self.addrs.upstream.to_string(),
            port: self.addrs.upstream_port,
            path: Vec::new(),
            // Through this listener's agent, when its server is behind one.
            via: self.ctx.cfg.via.clone(),
        };
        let (src_base, dst_base) = if put { (&a, &b) } else { (&b, &a) };
        let src = src_base.join(from);
        let dst = match to {
            Some(p) => dst_base.join(p),
            None => dst_base.clone(),
        };
        let (shown_src, shown_dst) = (src.to_string(), dst.to_string());
        self.say(Say::FxpCopying {
            src: shown_src.clone(),
            dst: shown_dst.clone(),
        });
        info!(source = %src, destination = %dst, recursive, "SITE FXP copy");
        // A file's plan is known now; a tree's once the job has listed it.
        let mut job = JobState::new();
        if !recursive {
            job.apply(&JobEvent::Planned(Plan::file(&src, &dst).outline()));
        }
        self.site.running = Some(Copy {
            src: shown_src,
            dst: shown_dst,
            started: now,
            job,
        });
        let rules = self.fxp_rules(self.fxp_allow());
        self.act(Action::StartFxp {
            src,
            dst,
            recursive,
            rules,
        });
    }

    /// What the engine of a `SITE FXP` task may reach (`allow`, never the proxy itself)
    /// and trust: the listener's upstream trust, as for the session's own server.
    fn fxp_rules(&self, allow: Arc<AllowList>) -> FxpRules {
        let trust = self.tls_settings().map(|t| &t.upstream);
        FxpRules {
            allow,
            own: self.ctx.own.clone(),
            verify: trust.is_none_or(|u| u.verify),
            ca: trust.and_then(|u| u.ca.clone()),
            virtual_host: self.host_taken().map(|name| VirtualHost {
                host: self.addrs.upstream.to_string(),
                port: self.addrs.upstream_port,
                name: name.to_string(),
            }),
        }
    }

    /// The engine may reach the session's own server A and what `fxp.allow` lists (a
    /// host named there may resolve anywhere, for its own connection).
    fn fxp_allow(&self) -> Arc<AllowList> {
        Arc::new(self.ctx.fxp_allow.with_address(self.addrs.upstream))
    }

    /// A client command while a copy runs: `STAT` reports, `ABOR` cancels, `NOOP` keeps
    /// the connection alive, `QUIT` cancels and leaves; anything else waits its turn.
    pub(super) fn while_copying(&mut self, cmd: &Command<'_>, line: &[u8], now: Instant) {
        match cmd.verb.class() {
            VerbClass::Status => {
                if let Some(u) = &self.site.checking {
                    let first = format!("Logging in to the FXP destination {u}.");
                    let reply = multi_line(211, &first, ["SITE FXP TO answers once it has."]);
                    return self.act(Action::ToClient(reply));
                }
                let Some(c) = &self.site.running else { return };
                let t = c.job.totals();
                let of = t
                    .bytes_total
                    .map(|t| format!(" of {t}"))
                    .unwrap_or_default();
                let first = format!("FXP copy in progress: {} to {}.", c.src, c.dst);
                let mut lines = vec![format!("{} bytes so far{of}.", t.bytes_done)];
                if let (true, Some(total)) = (c.job.is_tree(), t.files_total) {
                    lines.push(format!("{} of {total} files copied.", t.files_copied));
                }
                self.act(Action::ToClient(multi_line(211, &first, lines)));
            }
            VerbClass::Abort if self.site.checking.is_some() => {
                self.site.checking = None;
                self.act(Action::CancelFxp);
                self.say(Say::FxpCheckAborted);
                self.say(Say::AbortOk);
            }
            VerbClass::Abort => {
                self.cancel_copy("aborted by the client", now);
                self.say(Say::FxpAborted);
                self.say(Say::AbortOk);
            }
            VerbClass::Noop => self.say(Say::NoopOk),
            VerbClass::Quit => {
                if self.site.checking.take().is_some() {
                    self.act(Action::CancelFxp);
                }
                self.cancel_copy("cancelled: the client quit", now);
                self.forward(line, cmd.verb);
            }
            _ => self.say(Say::FxpBusy),
        }
    }

    fn cancel_copy(&mut self, why: &str, now: Instant) {
        if let Some(c) = self.site.running.take() {
            info!(why, "SITE FXP copy cancelled");
            self.act(Action::CancelFxp);
            self.count(Count::FxpCancelled {
                method: c.job.totals().method,
                took: now.saturating_duration_since(c.started),
            });
            self.site.last = Some(format!("FXP copy {why}."));
        }
    }

    /// News of the running copy's job; its `Finished` is answered.
    pub(super) fn on_fxp_job(&mut self, event: JobEvent, now: Instant) {
        let Some(c) = self.site.running.as_mut() else {
            return;
        };
        c.job.apply(&event);
        if c.job.is_finished() {
            let reply = copy_reply(&c.job);
            self.copy_ended(reply, now);
        }
    }

    /// The task is gone: if it had not said how the copy or the check ended, it
    /// stopped (it panicked), and the client hears so.
    pub(super) fn on_fxp_task_ended(&mut self, now: Instant) {
        let stopped = |what: &str| format!("the {what} task stopped");
        if self.site.checking.is_some() {
            let e = Failure::new(FailureKind::Other, stopped("login check"));
            self.on_fxp_destination_checked(Err(e), now);
        } else if self.site.running.is_some() {
            let error = Failure::new(FailureKind::Other, stopped("copy"));
            let finished = JobEvent::Finished {
                error: Some(error),
                took: std::time::Duration::ZERO,
            };
            self.on_fxp_job(finished, now);
        }
    }

    /// Answers the end of the running copy (nothing when it was cancelled meanwhile).
    fn copy_ended(&mut self, reply: Say, now: Instant) {
        if self.ended.is_some() || self.site.running.take().is_none() {
            return;
        }
        // A copy can outlast limits.idle_timeout; the client was waiting, not idle.
        self.last_command = now;
        if let Say::FxpDone { text } = &reply {
            // A failure was logged where it was worded; a success gets its line here.
            info!(result = %text, "SITE FXP copy done");
        }
        if let Say::FxpDone { text } | Say::FxpFailed { text, .. } = &reply {
            self.site.last = Some(text.clone());
        }
        self.say(reply);
        self.settle(now);
    }
}

/// The reply to a copy whose job has finished, from its state.
fn copy_reply(job: &JobState) -> Say {
    let failed = |e: &Failure, what: &str| {
        warn!(error = %e, "SITE FXP copy failed");
        Say::FxpFailed {
            answer: answer(Stage::Copy, e),
            text: format!("{what} failed: {e}"),
        }
    };
    if !job.is_tree() {
        return match job.outcome() {
            Some(Ok(r)) => Say::FxpDone {
                text: format!(
                    "FXP copy done: {} bytes by {} in {:.2} s.",
                    r.bytes,
                    r.method.as_str(),
                    r.duration.as_secs_f64()
                ),
            },
            Some(Err(e)) => failed(&e, "FXP copy"),
            None => failed(&Failure::new(FailureKind::Other, "no outcome"), "FXP copy"),
        };
    }
    if let Some(e) = job.finished.as_ref().and_then(|f| f.error.as_ref()) {
        return failed(e, "FXP tree copy");
    }
    let summary = render::summary(job);
    match job.failures().next() {
        None => Say::FxpDone {
            text: format!("FXP tree {summary}."),
        },
        // Per-file errors come as text: the first one is shown. A rerun copies what
        // failed (the others again too), so this is not final: 451.
        Some(first) => Say::FxpFailed {
            answer: FxpAnswer::Temporary,
            text: format!(
                "FXP tree {summary}; first failure: {}: {}",
                first.plan.path,
                first.error.as_ref().map_or("", |f| f.message.as_str())
            ),
        },
    }
}

/// `-r` (or `-R`, `--recursive`) before the paths: a tree.
fn is_recursive(word: &[u8]) -> bool {
    matches!(word, b"-r" | b"-R" | b"--recursive")
}

/// `FEAT` and `HELP` answers list the proxy's own commands too: the new reply, or `None`
/// when `reply` is not such an answer. `tls` is the proxy's TLS offer (see
/// `Machine::tls_features`): the server's TLS features to drop and the proxy's to add.
pub(super) fn augment_listing(
    reply: &Reply,
    answers: Verb,
    tls: Option<(&[&str], &[&str])>,
) -> Option<Vec<u8>> {
    let (drop, mut add): (&[&str], Vec<&str>) = match (reply.code, answers.class()) {
        (211, VerbClass::Features) => {
            let (drop, ours) = tls.unwrap_or_default();
            (drop, ours.iter().copied().chain(["SITE FXP"]).collect())
        }
        (214, VerbClass::Help) => (&[], vec![SITE_FXP_USAGE]),
        _ => return None,
    };
    add.retain(|l| !l.is_empty());
    Some(augment(&reply.raw, reply.code, &add, drop))
}

/// Adds `lines` to a (possibly single-line) reply, before its last line, leaving out
/// inner lines whose first word is in `drop`.
fn augment(raw: &[u8], code: u16, lines: &[&str], drop: &[&str]) -> Vec<u8> {
    let body = raw.strip_suffix(b"\n").unwrap_or(raw);
    let last_start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut out = Vec::with_capacity(raw.len() + 64);
    let mut added = lines.iter();
    if last_start == 0 {
        if let Some(first) = added.next() {
            out.extend_from_slice(format!("{code}-{first}\r\n").as_bytes());
        }
    } else {
        for line in raw[..last_start].split_inclusive(|&b| b == b'\n') {
            let word = line.trim_ascii().split(|b| b.is_ascii_whitespace()).next();
            let dropped =
                word.is_some_and(|w| drop.iter().any(|d| w.eq_ignore_ascii_case(d.as_bytes())));
            if !dropped || line.starts_with(format!("{code}-").as_bytes()) {
                out.extend_from_slice(line);
            }
        }
    }
    for line in added {
        out.extend_from_slice(format!(" {line}\r\n").as_bytes());
    }
    out.extend_from_slice(&raw[last_start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::{augment, is_site_fxp};

    #[test]
    fn augments_single_and_multi_line_replies() {
        assert_eq!(
            augment(b"214 Help OK.\r\n", 214, &["SITE FXP"], &[]),
            b"214-SITE FXP\r\n214 Help OK.\r\n"
        );
        assert_eq!(
            augment(
                b"211-Features:\r\n EPSV\r\n211 End\r\n",
                211,
                &["SITE FXP"],
                &[]
            ),
            b"211-Features:\r\n EPSV\r\n SITE FXP\r\n211 End\r\n"
        );
        // The server's TLS offer is replaced by the proxy's.
        assert_eq!(
            augment(
                b"211-Features:\r\n AUTH TLS\r\n EPSV\r\n PROT\r\n211 End\r\n",
                211,
                &["AUTH TLS", "SITE FXP"],
                &["AUTH", "PROT"]
            ),
            b"211-Features:\r\n EPSV\r\n AUTH TLS\r\n SITE FXP\r\n211 End\r\n"
        );
    }

    #[test]
    fn site_fxp_is_recognised_by_its_first_word() {
        assert!(is_site_fxp(b"FXP TO ftp://u:p@h/\r\n"));
        assert!(is_site_fxp(b" fxp status"));
        assert!(is_site_fxp(b"FXP"));
        assert!(!is_site_fxp(b"FXPX TO x"));
        assert!(!is_site_fxp(b"CHMOD 644 FXP"));
        assert!(!is_site_fxp(b""));
    }
}
