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
//!   - `report` ([`Method`], [`Event`], [`Report`]) and `error` ([`FxpError`]) are what a
//!     transfer tells its caller; [`engine`] re-exports them.
//! - [`sessions`] keeps logged-in control sessions for the next file of a tree or list
//!   (checked and reset before reuse; a session whose transfer failed is never kept).
//! - [`tree`] lists directories (MLSD or `ls -l`) and copies a tree as a queue.
//! - [`cli`] is `fxprelay fxp`: progress bar, summary line, exit code.
//! - [`jobs`] runs transfers ordered over the admin HTTP API (`/api/v1/transfers`).

pub mod cli;
pub mod client;
mod direct;
pub mod engine;
mod error;
pub mod jobs;
mod pair;
mod plan;
mod relay;
mod report;
pub mod sessions;
pub mod stream;
pub mod tree;
pub mod url;

pub use client::{Client, FtpError, TlsPolicy};
pub use engine::{Event, FxpError, Method, Options, Progress, Report, transfer, transfer_with};
pub use sessions::Sessions;
pub use url::{FtpUrl, UrlError};
