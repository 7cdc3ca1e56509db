//! What a job says while it runs: one [`JobEvent`] per thing that happened, in the order
//! it happened. Plain data: no socket, no `io::Error` (a failure is a [`Failure`], its
//! kind and its words), no password (URLs as shown), serializable, so the events can
//! cross a channel into the session machine, be logged or be stored, and [`JobState`]
//! can be rebuilt from them.
//!
//! Entries are named by their index in the plan's [`Outline`] (what `Planned` said); an
//! event about an index the plan does not have is ignored by [`JobState`].
//!
//! [`JobState`]: super::state::JobState

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::plan::Outline;
use crate::fxp::digest::Check;
use crate::fxp::method::Method;

/// One thing that happened to a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobEvent {
    /// The plan is decided: every entry, in the order they are carried out. The first
    /// event of a run.
    Planned(Outline),
    /// Entry `entry` is begun: a file's copy, a directory's `MKD`, a deletion.
    Started { entry: usize },
    /// News of file `entry`'s copy.
    File { entry: usize, event: FileEvent },
    /// Entry `entry` ended, `took` after it was begun (zero for one never begun, such as a
    /// file beneath a directory that could not be made).
    Ended {
        entry: usize,
        took: Duration,
        outcome: EntryOutcome,
    },
    /// The job was told to stop: what has not ended ends so, and nothing that arrives
    /// after changes it.
    Stopped(StopReason),
    /// The job is over, `took` after it began; `error` when the job itself failed (a
    /// source tree that cannot be listed, a destination root that cannot be made), not
    /// one of its entries. The last event of a job.
    Finished {
        error: Option<Failure>,
        took: Duration,
    },
}

/// What the engine says while it copies one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileEvent {
    /// Both servers logged in and the source checked, at the start of each attempt:
    /// `size` is its `SIZE` when the server tells.
    SourceSize { size: Option<u64> },
    /// A method is being tried, from `offset` (`REST`; 0 from the start).
    Trying { method: Method, offset: u64 },
    /// A method failed; the next one (or a retry) follows.
    MethodFailed { method: Method, error: Failure },
    /// Bytes at the destination so far (polled with `SIZE`, or counted by the relay).
    Bytes { done: u64, total: Option<u64> },
    /// Attempt `attempt` failed as a whole; the next begins after `delay`.
    Retrying {
        attempt: u32,
        delay: Duration,
        error: Failure,
    },
}

/// How an entry ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryOutcome {
    /// A file copied and checked.
    Copied(Report),
    /// A directory made on the destination (or found there already).
    Created,
    /// A destination file or directory deleted (`--delete`).
    Deleted,
    Failed(Failure),
}

/// The record of a copied file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// What the copy was checked with: a hash both servers computed (`sha-256`, ...),
    /// `SIZE` on both ends, or nothing.
    pub verified: Check,
}

/// Why a job stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Its caller stopped it: `DELETE` over the API, `ABOR` or `QUIT` during `SITE FXP`,
    /// Ctrl-C on the command line.
    Cancelled,
    /// The proxy shut down (SIGTERM or SIGINT).
    Interrupted,
}

impl StopReason {
    /// `cancelled`, `interrupted`: the metric's `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Cancelled => "cancelled",
            StopReason::Interrupted => "interrupted",
        }
    }
}

/// Why something failed, as plain data: the kind front ends decide by, the words people
/// read (the server's own reply, where a server refused), and the reply code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    /// The server's reply code, when a server refused something.
    pub code: Option<u16>,
    /// Retrying would get the same answer (a `5xx`, a server the proxy may not reach, an
    /// untrusted certificate, a differing hash).
    pub permanent: bool,
}

impl Failure {
    /// A failure of the job's own making (not a server's): `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            code: None,
            permanent: false,
        }
    }

    /// The same failure with its message cut to `max` bytes (on a character boundary),
    /// marked when cut: what a bounded record keeps.
    pub fn bounded(mut self, max: usize) -> Failure {
        self.message = bounded(self.message, max);
        self
    }
}

/// What kind of failure: what a front end decides by (a reply code, a hint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A server refused a command (`code` says how).
    Refused,
    /// A server refused the login (`USER` or `PASS`).
    LoginRefused,
    /// A server the proxy may not reach: outside the allow list, or the proxy itself.
    NotAllowed,
    /// A server that cannot be resolved or connected to.
    Unreachable,
    /// A server that did not answer in time.
    Timeout,
    /// A control or data connection that broke, or a reply that made no sense.
    Connection,
    /// A TLS handshake or the engine's TLS set-up failed.
    Tls,
    /// A server's certificate is not trusted (the operator may trust its CA).
    UntrustedCertificate,
    /// The copy's size differs from the source's.
    SizeMismatch,
    /// The servers' digests of the copy differ.
    HashMismatch,
    /// The copy could not be checked as asked.
    Unverified,
    /// A transfer that stopped making progress.
    Stalled,
    /// Stopped by its caller.
    Cancelled,
    /// Anything else (the same file under two names, a tree too large, a bad glob).
    Other,
}

/// `text` cut to `max` bytes (on a character boundary), marked when cut.
pub fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
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
    use super::*;

    /// Events are data: they read back as written (what a store of them needs).
    #[test]
    fn events_read_back_as_written() {
        let failure = Failure {
            kind: FailureKind::Refused,
            message: "source a:21: RETR x refused: 550 no".into(),
            code: Some(550),
            permanent: true,
        };
        let events = [
            JobEvent::Started { entry: 3 },
            JobEvent::File {
                entry: 3,
                event: FileEvent::MethodFailed {
                    method: Method::Fxp,
                    error: failure.clone(),
                },
            },
            JobEvent::File {
                entry: 3,
                event: FileEvent::Retrying {
                    attempt: 1,
                    delay: Duration::from_millis(500),
                    error: failure.clone(),
                },
            },
            JobEvent::Ended {
                entry: 3,
                took: Duration::from_millis(12),
                outcome: EntryOutcome::Copied(Report {
                    method: Method::ReverseFxp,
                    bytes: 10,
                    relayed_bytes: 0,
                    resumed_from: 0,
                    attempts: 2,
                    duration: Duration::from_millis(12),
                    verified: Check::Size,
                }),
            },
            JobEvent::Stopped(StopReason::Interrupted),
            JobEvent::Finished {
                error: Some(failure),
                took: Duration::from_secs(1),
            },
        ];
        for e in events {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(
                serde_json::from_str::<JobEvent>(&json).unwrap(),
                e,
                "{json}"
            );
        }
    }

    #[test]
    fn long_words_are_cut_on_a_character_boundary() {
        let e = bounded("é".repeat(100), 51);
        assert!(e.len() <= 51 + 6 && e.ends_with(" [...]"), "{e}");
        assert_eq!(bounded("short".into(), 51), "short");
        let f = Failure::new(FailureKind::Other, "x".repeat(10)).bounded(4);
        assert_eq!(f.message, "xxxx [...]");
    }
}
