//! The FXP engine: fxprelay as a client of two servers, making them copy a file (or a
//! tree) between themselves, or relaying the bytes when they will not.
//!
//! - [`url`] parses `ftp://user:pass@host:port/path`, `ftpes://` (explicit TLS) and
//!   `ftps://` (implicit TLS); the password is never displayed.
//! - [`client`] is the async FTP client: one control connection (TLS after `AUTH TLS`,
//!   or from the first byte), timeouts on every read; [`client_stream`] is its plain-or-TLS
//!   connection.
//! - [`job`] is what a job is, pure: its [`job::Plan`] (what to copy, how, in which
//!   order; [`job::mirror`] decides a tree's entries: create, copy, skip, delete), its
//!   events ([`JobEvent`], plain data) and [`JobState`], which folds them into per-file
//!   progress, totals and records. The front ends below render a `JobState`.
//! - [`runner`] carries a job out: `plan` (a tree: both servers listed, MLSD or
//!   `ls -l`), `run` (a stream of [`JobEvent`]s: the directories, the files as a queue,
//!   the deletions), on logins shared through a [`LoginPool`] ([`logins`]: checked and
//!   reset before reuse; a session whose transfer failed is never kept).
//! - [`engine`] copies one file: it carries out what `attempts` decides, logs in,
//!   resumes and checks the copy.
//!   - `attempts` is pure: the order of the methods, what each failure means, retries
//!     and their backoff.
//!   - `direct` is standard and reverse FXP (the servers move the bytes);
//!     `relay_method` copies the bytes itself; `pair` holds the two sessions and the
//!     steps both kinds of method share (`REST`, `STOR` and `RETR`).
//!   - [`digest`] is pure: which hash both servers compute (`HASH`, `XSHA256`, ...),
//!     their replies, and the `--verify` / `--on-mismatch` choices.
//!   - `error` ([`FxpError`]) is how a copy fails; a job's events carry it as a
//!     [`job::Failure`].
//! - [`cli`] is `fxprelay fxp`: progress bars ([`progress`]), the report (text or
//!   `--json`), Ctrl-C, exit code; [`credentials`] finds passwords off the command line
//!   (environment, netrc, a prompt); [`render`] words a job's numbers (IEC bytes, the
//!   summary line) for the CLI and `SITE FXP`.
//! - [`jobs`] runs transfers ordered over the admin HTTP API (`/api/v1/transfers`), each
//!   under a [`jobs::JobId`] that never repeats (`job_id`);
//!   [`options`] is the options object it takes, the same struct as the CLI's flags.

pub mod cli;
pub mod client;
pub mod client_stream;
pub mod credentials;
pub mod engine;
mod error;
mod job_id;
pub mod jobs;
pub mod logins;
pub mod options;
pub mod progress;
pub mod runner;

pub use fxprelay_core::fxp::{digest, job, method, render, url};

pub use client::{Client, ExtraRoots, FtpError, TlsPolicy};
pub use engine::{EngineOptions, FxpError, Method, Progress};
pub use job::{FileEvent, JobEvent, JobState, Order, Report};
pub use logins::LoginPool;
pub use url::{FtpUrl, UrlError};
