//! The session's audit trail at INFO: one line per login (user, upstream, TLS, result),
//! one per transfer (verb, path, bytes each way, milliseconds, result), the facts
//! vsftpd's xferlog gives, greppable as `message="login"` / `message="transfer"`, and
//! one per file operation ([`files`]); paths absolute once the working directory
//! is known. The session span adds listener, client and the session's id. Passwords never appear: only the `USER`
//! argument is kept. The same facts feed the session's [`Snapshot`] for the admin API.

use std::time::Instant;

use tracing::info;

mod files;

use super::Machine;
use crate::proto::command::Verb;
use crate::proto::line::trim_eol;
use crate::session::view::Snapshot;
use files::Files;

/// The target of every line of the trail (`--log fxprelay::session::machine::audit=info`
/// keeps just these).
pub(super) const TARGET: &str = module_path!();

/// How a transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Ok,
    Failed,
    Aborted,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
        }
    }
}

#[derive(Debug)]
struct Running {
    verb: Verb,
    path: String,
    started: Instant,
    /// Relay mode: the proxy counts the bytes. Passthrough: they bypass it.
    relayed: bool,
}

/// A finished transfer, logged at the next [`Audit::flush`] (which has the clock).
#[derive(Debug)]
struct Finished {
    running: Running,
    outcome: Outcome,
    /// Relayed bytes: client to server, server to client.
    bytes: (u64, u64),
    /// Why it failed: the server's reply or the proxy's error.
    detail: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct Audit {
    pub(super) upstream: Option<String>,
    /// File operations and the working directory their paths resolve against.
    pub(super) files: Files,
    running: Option<Running>,
    finished: Vec<Finished>,
    upload_bytes: u64,
    download_bytes: u64,
    transfers: u64,
}

impl Audit {
    /// A transfer command was sent on (or set up) at `now`.
    pub(super) fn start(&mut self, verb: Verb, args: &[u8], relayed: bool, now: Instant) {
        let arg = String::from_utf8_lossy(trim_eol(args));
        self.running = Some(Running {
            verb,
            path: self.files.resolve(arg.trim()),
            started: now,
            relayed,
        });
    }

    /// The running transfer's verb and path.
    pub(super) fn current(&self) -> Option<(&str, &str)> {
        self.running
            .as_ref()
            .map(|r| (r.verb.as_str(), r.path.as_str()))
    }

    /// The running transfer ended; `bytes` are the relayed ones (0 when unknown).
    pub(super) fn finish(&mut self, outcome: Outcome, bytes: (u64, u64), detail: Option<String>) {
        let Some(running) = self.running.take() else {
            return;
        };
        self.upload_bytes += bytes.0;
        self.download_bytes += bytes.1;
        self.transfers += 1;
        self.finished.push(Finished {
            running,
            outcome,
            bytes,
            detail,
        });
    }

    /// Logs the transfers finished since the last call, timed at `now`.
    pub(super) fn flush(&mut self, now: Instant) {
        for f in self.finished.drain(..) {
            let r = &f.running;
            let ms = now.saturating_duration_since(r.started).as_millis() as u64;
            let (verb, path, result) = (r.verb.as_str(), r.path.as_str(), f.outcome.as_str());
            // Display, not Debug: `path=big.iso`, not `path="big.iso"`. The empty
            // `detail` of a success is left out.
            let (up, down) = f.bytes;
            match (r.relayed, f.detail.as_deref()) {
                (true, None) => {
                    info!(%verb, %path, upload_bytes = up, download_bytes = down, ms, %result, "transfer")
                }
                (true, Some(detail)) => {
                    info!(%verb, %path, upload_bytes = up, download_bytes = down, ms, %result, %detail, "transfer")
                }
                // Passthrough: the bytes went straight between client and server.
                (false, None) => info!(%verb, %path, ms, %result, data = "passthrough", "transfer"),
                (false, Some(detail)) => {
                    info!(%verb, %path, ms, %result, %detail, data = "passthrough", "transfer")
                }
            }
        }
    }
}

impl Machine {
    /// What the session is doing, for `GET /api/v1/sessions`.
    pub fn snapshot(&self) -> Snapshot {
        let a = &self.audit;
        Snapshot {
            user: self.site.user.clone(),
            upstream: a.upstream.clone(),
            logged_in: self.logged_in,
            transfer: a
                .running
                .as_ref()
                .map(|r| (r.verb.as_str().to_owned(), r.path.clone())),
            upload_bytes: a.upload_bytes,
            download_bytes: a.download_bytes,
            transfers: a.transfers,
            client_tls: self.tls.client_secure,
            route: self.route_name(),
        }
    }

    /// The server's final answer to `USER`, `PASS` or `ACCT`: `230` is a login, a
    /// refusal a failed one; `331`/`332` (more to come) say nothing yet.
    pub(super) fn audit_login(&self, code: u16) {
        let result = match code {
            230 => "ok",
            300..=399 => return,
            _ => "failed",
        };
        let user = self.site.user.as_deref().unwrap_or("");
        let upstream = self.audit.upstream.as_deref().unwrap_or("");
        let tls = self.tls.client_secure;
        info!(%user, %upstream, %result, reply = code, tls, "login");
    }
}
