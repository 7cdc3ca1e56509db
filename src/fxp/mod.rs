//! The FXP engine: fxprelay as a client of two servers, making them copy a file (or a
//! tree) between themselves, or relaying the bytes when they will not.
//!
//! - [`url`] parses `ftp://user:pass@host:port/path`, `ftpes://` (explicit TLS) and
//!   `ftps://` (implicit TLS); the password is never displayed.
//! - [`client`] is the async FTP client: one control connection (TLS after `AUTH TLS`,
//!   or from the first byte), timeouts on every read; [`stream`] is its plain-or-TLS
//!   connection.
//! - [`engine`] copies one file: it carries out what `plan` decides, logs in, resumes
//!   and checks the copy's size.
//!   - `plan` is pure: the order of the methods, what each failure means, retries and
//!     their backoff.
//!   - `direct` is standard and reverse FXP (the servers move the bytes); `relay` is the
//!     method that copies the bytes itself.
//!   - `pair` holds the two sessions and the steps both kinds of method share (`REST`,
//!     `STOR` and `RETR`).
//!   - [`digest`] is pure: which hash both servers compute (`HASH`, `XSHA256`, ...),
//!     their replies, and the `--verify` / `--on-mismatch` choices.
//!   - `report` ([`Method`], [`Event`], [`Report`]) and `error` ([`FxpError`]) are what a
//!     transfer tells its caller, `hooks` (`FileHooks`) what a queue tells per file;
//!     [`engine`] re-exports them.
//! - [`sessions`] keeps logged-in control sessions for the next file of a tree or list
//!   (checked and reset before reuse; a session whose transfer failed is never kept).
//! - [`tree`] lists directories (MLSD or `ls -l`) and copies a tree as a queue;
//!   [`job::mirror`] is the pure half: what to create, copy, skip or delete per entry
//!   ([`job::mirror::MirrorOptions`]: skip-existing, dry run, include/exclude, delete).
//! - [`cli`] is `fxprelay fxp`: progress bars ([`progress`]), the report (text or
//!   `--json`), Ctrl-C, exit code; [`credentials`] finds passwords off the command line
//!   (environment, netrc, a prompt).
//! - [`jobs`] runs transfers ordered over the admin HTTP API (`/api/v1/transfers`), each
//!   under a [`jobs::JobId`] that never repeats (`job_id`);
//!   [`options`] is the options object it takes, the same struct as the CLI's flags.

pub mod cli;
pub mod client;
pub mod client_stream;
pub mod credentials;
pub mod digest;
pub mod engine;
mod error;
pub mod job;
mod job_id;
pub mod jobs;
pub mod logins;
pub mod method;
pub mod options;
pub mod progress;
pub mod render;
pub mod runner;
pub mod url;

pub use client::{Client, ExtraRoots, FtpError, TlsPolicy};
pub use engine::{EngineOptions, FxpError, Method, Progress, transfer};
pub use job::{FileEvent, JobEvent, JobState, Order, Report};
pub use logins::LoginPool;
pub use url::{FtpUrl, UrlError};
