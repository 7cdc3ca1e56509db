//! The FXP engine: fxprelay as a client of two servers, making them copy a file (or a
//! tree) between themselves, or relaying the bytes when they will not.
//!
//! - [`url`] parses `ftp://user:pass@host:port/path` (the password never displayed).
//! - [`client`] is the async FTP client: one control connection, timeouts on every read.
//! - [`engine`] picks standard FXP, reverse FXP or relay, retries and resumes; `relay`
//!   is the method that copies the bytes itself.
//! - [`tree`] lists directories (MLSD or `ls -l`) and copies a tree as a queue.
//! - [`cli`] is `fxprelay fxp`: progress bar, summary line, exit code.
//! - [`jobs`] runs transfers ordered over the admin HTTP API (`/api/v1/transfers`).

pub mod cli;
pub mod client;
pub mod engine;
pub mod jobs;
mod relay;
pub mod tree;
pub mod url;

pub use client::{Client, FtpError};
pub use engine::{Event, FxpError, Method, Options, Progress, Report, transfer};
pub use url::{FtpUrl, UrlError};
