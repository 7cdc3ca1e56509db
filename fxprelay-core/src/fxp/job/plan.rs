//! What a job is to do, decided before anything is done: an [`Order`] (one file, a list
//! of files, a tree) becomes a [`Plan`], every entry to create, copy, skip or delete, in
//! the order the runner carries them out. A single file is a plan of one entry.
//!
//! Making the plan of a file or a list needs nothing but the URLs ([`Plan::file`],
//! [`Plan::list`]); a tree's needs both servers listed (the runner's walk), then
//! [`super::mirror::decide`] and [`Plan::tree`]. The plan holds the URLs with their
//! passwords: what leaves it is its [`Outline`], the URLs as shown.

use serde::{Deserialize, Serialize};

use super::mirror::{Decision, Kind, MirrorOptions, Operation, Reason};
use crate::fxp::url::FtpUrl;

/// What a caller asks for.
#[derive(Debug, Clone)]
pub enum Order {
    /// One file. A destination path that is empty or ends in `/` names a directory: the
    /// file keeps its name there.
    File {
        src: FtpUrl,
        dst: FtpUrl,
        /// Leave it when the destination has it already, as a tree's `skip_existing`
        /// would (same size, not older).
        skip_existing: bool,
    },
    /// Files, each pair copied as [`Order::File`] would.
    List(Vec<(FtpUrl, FtpUrl)>),
    /// The tree under `src` into `dst` (`dst` ending in `/` gets the source directory's
    /// name appended), as `mirror` says.
    Tree {
        src: FtpUrl,
        dst: FtpUrl,
        mirror: MirrorOptions,
    },
}

/// Which kind of order a plan carries out: what the reports say differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    File,
    List,
    Tree,
}

/// A job decided and not yet carried out.
#[derive(Debug, Clone)]
pub struct Plan {
    pub shape: Shape,
    /// A tree's roots: the source directory and the destination directory (with the
    /// source's name appended where the order's destination ended in `/`).
    pub roots: Option<(FtpUrl, FtpUrl)>,
    pub mirror: MirrorOptions,
    /// Directories in the source tree (those the filters admit).
    pub dirs: usize,
    /// Every entry, in the order to carry them out: a tree's directories to create
    /// (parents first), the files to copy or skip, then the deletions.
    pub entries: Vec<Entry>,
}

/// One entry of a plan.
#[derive(Debug, Clone)]
pub struct Entry {
    pub src: FtpUrl,
    pub dst: FtpUrl,
    /// A tree's entry: its path relative to the roots (empty for a file or a list).
    pub rel: Vec<u8>,
    pub kind: Kind,
    pub operation: Operation,
    pub reason: Reason,
    /// The source's size for copies and skips (as its listing tells), the
    /// destination's for deletions.
    pub size: Option<u64>,
}

impl Entry {
    /// As reports show it: a tree's relative path (bytes that are not UTF-8 as U+FFFD),
    /// else the source URL (password masked).
    pub fn shown(&self) -> String {
        if self.rel.is_empty() {
            self.src.to_string()
        } else {
            String::from_utf8_lossy(&self.rel).into_owned()
        }
    }
}

/// A plan as its events show it: what each entry is, without passwords.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outline {
    pub shape: Shape,
    pub dirs: usize,
    pub dry_run: bool,
    pub entries: Vec<OutlineEntry>,
}

/// One entry of an [`Outline`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutlineEntry {
    /// As reports show it (see [`Entry::shown`]).
    pub path: String,
    /// The URLs, passwords masked.
    pub src: String,
    pub dst: String,
    pub kind: Kind,
    pub operation: Operation,
    pub reason: Reason,
    pub size: Option<u64>,
}

/// `dst`, with the source's file name appended when it names a directory.
pub fn destination_path(src: &FtpUrl, dst: &FtpUrl) -> FtpUrl {
    if dst.path.is_empty() || dst.path.ends_with(b"/") {
        dst.join(src.file_name())
    } else {
        dst.clone()
    }
}

impl Plan {
    /// One file from `src` to `dst` (see [`Order::File`]).
    pub fn file(src: &FtpUrl, dst: &FtpUrl) -> Plan {
        Plan {
            shape: Shape::File,
            ..Plan::list(&[(src.clone(), dst.clone())])
        }
    }

    /// Each pair as one file, in the order given.
    pub fn list(pairs: &[(FtpUrl, FtpUrl)]) -> Plan {
        let entries = pairs
            .iter()
            .map(|(src, dst)| Entry {
                src: src.clone(),
                dst: destination_path(src, dst),
                rel: Vec::new(),
                kind: Kind::File,
                operation: Operation::Copy,
                reason: Reason::Overwrite,
                size: None,
            })
            .collect();
        Plan {
            shape: Shape::List,
            roots: None,
            mirror: MirrorOptions::default(),
            dirs: 0,
            entries,
        }
    }

    /// The tree under `src` into `dst` (the destination directory itself, as
    /// [`Plan::tree_root`] gives it), entry by entry as `decisions` say.
    pub fn tree(
        src: &FtpUrl,
        dst: &FtpUrl,
        mirror: &MirrorOptions,
        dirs: usize,
        decisions: Vec<Decision>,
    ) -> Plan {
        let entries = decisions
            .into_iter()
            .map(|d| Entry {
                src: src.join(&d.rel),
                dst: dst.join(&d.rel),
                rel: d.rel,
                kind: d.kind,
                operation: d.operation,
                reason: d.reason,
                size: d.size,
            })
            .collect();
        Plan {
            shape: Shape::Tree,
            roots: Some((src.clone(), dst.clone())),
            mirror: mirror.clone(),
            dirs,
            entries,
        }
    }

    /// Where a tree from `src` lands when ordered to `dst`: `dst` ending in `/` gets the
    /// source directory's name appended.
    pub fn tree_root(src: &FtpUrl, dst: &FtpUrl) -> FtpUrl {
        destination_path(src, dst)
    }

    /// A dry run: the plan is only shown.
    pub fn dry_run(&self) -> bool {
        self.mirror.dry_run
    }

    /// Files to copy, and their bytes (as the source's listing tells).
    pub fn to_copy(&self) -> (usize, u64) {
        self.entries
            .iter()
            .filter(|e| e.operation == Operation::Copy)
            .fold((0, 0), |(n, b), e| (n + 1, b + e.size.unwrap_or(0)))
    }

    /// What the plan's events say of it.
    pub fn outline(&self) -> Outline {
        Outline {
            shape: self.shape,
            dirs: self.dirs,
            dry_run: self.dry_run(),
            entries: self
                .entries
                .iter()
                .map(|e| OutlineEntry {
                    path: e.shown(),
                    src: e.src.to_string(),
                    dst: e.dst.to_string(),
                    kind: e.kind,
                    operation: e.operation,
                    reason: e.reason,
                    size: e.size,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> FtpUrl {
        FtpUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_directory_destination_keeps_the_name() {
        let src = url("ftp://a/pub/big.bin");
        assert_eq!(destination_path(&src, &url("ftp://b/")).path, b"big.bin");
        assert_eq!(
            destination_path(&src, &url("ftp://b/in/")).path,
            b"in/big.bin"
        );
        assert_eq!(destination_path(&src, &url("ftp://b/x.bin")).path, b"x.bin");
    }

    #[test]
    fn a_file_is_a_plan_of_one_shown_without_its_password() {
        let plan = Plan::file(
            &url("ftp://u:secret@a/pub/big.bin"),
            &url("ftp://v:pw@b/in/"),
        );
        assert_eq!((plan.shape, plan.entries.len()), (Shape::File, 1));
        assert_eq!(plan.entries[0].dst.path, b"in/big.bin");
        let outline = plan.outline();
        let e = &outline.entries[0];
        assert_eq!(e.path, "ftp://u:***@a/pub/big.bin");
        assert_eq!(e.dst, "ftp://v:***@b/in/big.bin");
        assert_eq!(
            (e.operation, e.reason),
            (Operation::Copy, Reason::Overwrite)
        );
        assert_eq!(plan.to_copy(), (1, 0));
    }

    #[test]
    fn a_tree_joins_each_entry_to_its_roots() {
        let decisions = vec![
            Decision {
                rel: b"sub".to_vec(),
                kind: Kind::Dir,
                operation: Operation::CreateDir,
                reason: Reason::Missing,
                size: None,
            },
            Decision {
                rel: b"sub/a.bin".to_vec(),
                kind: Kind::File,
                operation: Operation::Copy,
                reason: Reason::Missing,
                size: Some(5),
            },
            Decision {
                rel: b"b.bin".to_vec(),
                kind: Kind::File,
                operation: Operation::Skip,
                reason: Reason::UpToDate,
                size: Some(7),
            },
        ];
        let (src, dst) = (url("ftp://a/tree"), url("ftp://b/"));
        let root = Plan::tree_root(&src, &dst);
        assert_eq!(root.path, b"tree");
        let plan = Plan::tree(&src, &root, &MirrorOptions::default(), 1, decisions);
        assert_eq!(plan.entries[1].src.path, b"tree/sub/a.bin");
        assert_eq!(plan.entries[1].dst.path, b"tree/sub/a.bin");
        assert_eq!(plan.to_copy(), (1, 5));
        let outline = plan.outline();
        assert_eq!(outline.entries[1].path, "sub/a.bin");
        assert_eq!((outline.shape, outline.dirs), (Shape::Tree, 1));
    }
}
