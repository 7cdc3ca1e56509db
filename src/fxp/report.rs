//! What a transfer tells its caller: the events heard while it runs ([`Event`], through a
//! [`Progress`] callback), and the [`Report`] of a finished copy.

use std::sync::Arc;
use std::time::Duration;

pub use super::digest::Check;
pub use super::method::Method;

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
    /// What the copy was checked with: a hash both servers computed (`sha-256`, ...),
    /// `SIZE` on both ends, or nothing.
    pub verified: Check,
}
