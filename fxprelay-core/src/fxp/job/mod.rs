//! One FXP job, whatever its shape (a file, a list, a tree), pure: what it is to do
//! ([`Plan`]: what to copy, how and in which order), what it says while it runs
//! ([`JobEvent`]), and [`JobState`], which folds those events into per-entry progress,
//! totals and final records (serializable). The runner (`fxp::runner`: `plan`, `run`)
//! does the I/O; the front ends (the CLI's bars and report, the admin API's job view,
//! `SITE FXP`'s `STAT` and replies) render a `JobState`; none keeps progress of its own.
//!
//! - [`plan`]: [`Order`] → [`Plan`] and its [`plan::Outline`] (what events show);
//! - [`mirror`]: a tree's per-entry decisions (create, copy, skip, delete);
//! - [`event`]: [`JobEvent`], [`FileEvent`], [`Failure`], plain data;
//! - [`state`]: [`JobState`], the fold.

pub mod event;
pub mod mirror;
pub mod plan;
pub mod state;

pub use event::{EntryOutcome, Failure, FailureKind, FileEvent, JobEvent, Report, StopReason};
pub use plan::{Order, Plan};
pub use state::{EntryResult, EntryState, FileRecord, JobState, Status, Totals};
