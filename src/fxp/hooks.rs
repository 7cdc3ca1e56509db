//! [`FileHooks`]: how the front ends of trees and lists follow each file of a queue.

use super::error::FxpError;
use super::report::{Progress, Report};
use super::url::FtpUrl;

/// Per-file hooks (`Options::files`): which files a tree or list is about to copy, which
/// file each event belongs to, and how each file ended. The CLI's bars and per-file
/// report, the API's file records and `SITE FXP -r`'s `STAT` are built on them. They run
/// on the engine's tasks: keep them cheap.
pub trait FileHooks: Send + Sync {
    /// The `(source, destination)` pairs about to be copied, in order (once per list;
    /// a single [`transfer`](super::engine::transfer) is not announced).
    fn listed(&self, _files: &[(FtpUrl, FtpUrl)]) {}
    /// File `index` of the list, `src` to `dst`, is about to be copied: the callback for
    /// its events, heard besides `Options::progress` (`None`: none of its own).
    fn started(&self, index: usize, src: &FtpUrl, dst: &FtpUrl) -> Option<Progress>;
    /// File `index`'s copy ended so.
    fn finished(
        &self,
        index: usize,
        src: &FtpUrl,
        dst: &FtpUrl,
        result: Result<&Report, &FxpError>,
    );
}
