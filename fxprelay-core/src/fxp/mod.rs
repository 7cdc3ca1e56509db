//! The FXP engine's pure parts; the binary's `fxp` module drives the servers.
//!
//! - [`url`] parses `ftp://user:pass@host:port/path`, `ftpes://` (explicit TLS) and
//!   `ftps://` (implicit TLS); the password is never displayed.
//! - [`job`] is what a job is: its [`job::Plan`] (what to copy, how, in which order;
//!   [`job::mirror`] decides a tree's entries: create, copy, skip, delete), its events
//!   ([`JobEvent`], plain data) and [`JobState`], which folds them into per-file
//!   progress, totals and records. Every front end renders a `JobState`.
//! - [`method`] names the ways a file is copied (standard or reverse FXP, relay), and
//!   which server may be passive when one is reached through an agent.
//! - [`digest`]: which hash both servers compute (`HASH`, `XSHA256`, ...), their replies,
//!   and the `--verify` / `--on-mismatch` choices.
//! - [`render`] words a job's numbers (IEC bytes, the summary line) for the CLI and
//!   `SITE FXP`.
//!
//! Imports run one way: `render` -> `job` -> {`digest`, `method`, `url`}.

pub mod digest;
pub mod job;
pub mod method;
pub mod render;
pub mod url;

pub use job::{FileEvent, JobEvent, JobState, Order, Report};
pub use url::{FtpUrl, UrlError};
