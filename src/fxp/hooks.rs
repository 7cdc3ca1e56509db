//! [`FileHooks`]: how the front ends of trees and lists follow each file of a queue.

use super::error::FxpError;
use super::report::{Progress, Report};
use super::url::FtpUrl;

/// Per-file hooks (`Options::files`): which file a tree's or list's events belong to,
/// and how each file ended. Both run on the engine's task: keep them cheap.
pub trait FileHooks: Send + Sync {
    /// `src` is about to be copied to `dst`: the callback for this file's events
    /// (`None`: `Options::progress` hears them).
    fn started(&self, src: &FtpUrl, dst: &FtpUrl) -> Option<Progress>;
    /// The copy of `src` to `dst` ended so.
    fn finished(&self, src: &FtpUrl, dst: &FtpUrl, result: Result<&Report, &FxpError>);
}
