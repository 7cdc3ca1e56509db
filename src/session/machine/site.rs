//! `SITE FXP` inside a proxied session: a client logged in to server A through the proxy
//! orders a server-to-server copy to or from server B with a raw command, which any
//! client can send:
//!
//! - `SITE FXP TO ftp://user:pass@B/dir/` chooses B (it must pass `fxp.allow`);
//! - `SITE FXP PUT <path-on-A> [<path-on-B>]` copies A to B, `SITE FXP GET <path-on-B>
//!   [<path-on-A>]` B to A (paths relative to the login directories);
//! - `SITE FXP STATUS` shows the destination and the last result.
//!
//! The proxy logs in to A again with the credentials the client used (kept in memory for
//! the session only, never logged), and runs the same engine as the CLI and the API, as a
//! task: meanwhile the client may ask `STAT` (bytes so far) or `ABOR` (cancel), and the
//! session still honours shutdown and an upstream that closes.

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::{Action, FxpResult, Machine, Say};
use crate::fxp::url::{FtpUrl, Security};
use crate::net::AllowList;
use crate::proto::command::{Command, Verb, VerbClass};
use crate::proto::line::trim_eol;
use crate::proto::reply::Reply;
use crate::session::replies::{SITE_FXP_USAGE, multi_line};

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
    last: Option<String>,
    running: Option<Copy>,
}

impl SiteState {
    pub(super) fn copying(&self) -> bool {
        self.running.is_some()
    }
}

/// A copy in progress (URLs as shown: without passwords).
#[derive(Debug)]
struct Copy {
    src: String,
    dst: String,
    done: u64,
    total: Option<u64>,
}

impl Machine {
    /// Handles `SITE FXP ...` (`args` after `SITE`) for a logged-in client.
    pub(super) fn on_site_fxp(&mut self, args: &[u8]) {
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
                Ok(u) => {
                    let own = u
                        .host
                        .parse::<std::net::IpAddr>()
                        .ok()
                        .and_then(|ip| self.own_socket(std::net::SocketAddr::new(ip, u.port)));
                    if let Some(e) = own {
                        self.reject(crate::metrics::Rejection::SelfTarget);
                        warn!(error = %e, "SITE FXP TO names this proxy itself; refused");
                        return self.say(Say::FxpRefused { why: e.to_string() });
                    }
                    let url = u.to_string();
                    self.site.destination = Some(u);
                    self.say(Say::FxpDestinationSet { url });
                }
                Err(e) => self.say(Say::FxpNotAnUrl {
                    error: e.to_string(),
                }),
            },
            (b"PUT", [a, b @ ..]) if b.len() <= 1 => self.site_copy(true, a, b.first().copied()),
            (b"GET", [b, a @ ..]) if a.len() <= 1 => self.site_copy(false, b, a.first().copied()),
            (b"STATUS", []) => self.site_status(),
            _ => self.say(Say::FxpUsage),
        }
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

    /// Starts one copy: `put` is A to B, else B to A.
    fn site_copy(&mut self, put: bool, from: &[u8], to: Option<&[u8]>) {
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
        info!(source = %src, destination = %dst, "SITE FXP copy");
        self.site.running = Some(Copy {
            src: shown_src,
            dst: shown_dst,
            done: 0,
            total: None,
        });
        let allow = self.fxp_allow();
        self.act(Action::StartFxp { src, dst, allow });
    }

    /// The engine may reach the session's own server A and what `fxp.allow` lists (a
    /// host named there may resolve anywhere, for its own connection).
    fn fxp_allow(&self) -> Arc<AllowList> {
        Arc::new(self.ctx.fxp_allow.with_address(self.addrs.upstream))
    }

    /// A client command while a copy runs: `STAT` reports, `ABOR` cancels, `NOOP` keeps
    /// the connection alive, `QUIT` cancels and leaves; anything else waits its turn.
    pub(super) fn while_copying(&mut self, cmd: &Command<'_>, line: &[u8]) {
        match cmd.verb.class() {
            VerbClass::Status => {
                let Some(c) = &self.site.running else { return };
                let of = c.total.map(|t| format!(" of {t}")).unwrap_or_default();
                let first = format!("FXP copy in progress: {} to {}.", c.src, c.dst);
                let reply = multi_line(211, &first, [format!("{} bytes so far{of}.", c.done)]);
                self.act(Action::ToClient(reply));
            }
            VerbClass::Abort => {
                self.cancel_copy("aborted by the client");
                self.say(Say::FxpAborted);
                self.say(Say::AbortOk);
            }
            VerbClass::Noop => self.say(Say::NoopOk),
            VerbClass::Quit => {
                self.cancel_copy("cancelled: the client quit");
                self.forward(line, cmd.verb);
            }
            _ => self.say(Say::FxpBusy),
        }
    }

    fn cancel_copy(&mut self, why: &str) {
        if self.site.running.take().is_some() {
            info!(why, "SITE FXP copy cancelled");
            self.act(Action::CancelFxp);
            self.site.last = Some(format!("FXP copy {why}."));
        }
    }

    /// Bytes at the destination so far.
    pub fn on_fxp_progress(&mut self, done: u64, total: Option<u64>) {
        if let Some(c) = self.site.running.as_mut() {
            c.done = done;
            c.total = total.or(c.total);
        }
    }

    /// The copy task ended.
    pub fn on_fxp_finished(&mut self, result: FxpResult, now: Instant) {
        if self.ended.is_some() || self.site.running.take().is_none() {
            return;
        }
        // A copy can outlast limits.idle_timeout; the client was waiting, not idle.
        self.last_command = now;
        let reply = match result {
            Ok(r) => {
                let text = format!(
                    "FXP copy done: {} bytes by {} in {:.2} s.",
                    r.bytes,
                    r.method.as_str(),
                    r.duration.as_secs_f64()
                );
                self.site.last = Some(text.clone());
                Say::FxpDone { text }
            }
            Err(e) => {
                warn!(error = %e, "SITE FXP copy failed");
                // The servers' own codes (in the text) describe their sessions, not the
                // client's: a 421 or 530 from B would make the client think it lost A.
                let permanent = e.is_permanent();
                let text = format!("FXP copy failed: {e}");
                self.site.last = Some(text.clone());
                Say::FxpFailed { permanent, text }
            }
        };
        self.say(reply);
        self.settle(now);
    }
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
