//! Mirror semantics, pure: given the source tree's listing and the destination's, decide
//! for every entry whether to create it, copy it, skip it or delete it ([`decide`]).
//! No I/O here: the runner lists both servers and carries the decisions out; the CLI, the
//! HTTP API and `SITE` share the option set ([`MirrorOptions`], deserializable as JSON).
//!
//! - Paths are relative to the tree's root, as bytes (`sub/a.bin`), `/`-separated.
//! - `--include` / `--exclude` globs (globset syntax: `*`, `?`, `[ab]`, `{a,b}`, `**`)
//!   match the relative path; `*` never crosses a `/`. A pattern without `/` matches the
//!   name at any depth (`*.iso` is `**/*.iso`). Excludes apply to files and directories
//!   (an excluded directory is not entered); includes to files only, so `--include '*.bin'`
//!   still walks every directory. An entry that the filters leave out is never deleted.
//! - `skip_existing`: a destination file counts as up to date, and is skipped, when its
//!   size equals the source's and, where both modification times are known (`MLSD`'s
//!   `modify` fact or `MDTM`, in UTC), it is not older than the source's (compared to the
//!   second). Otherwise it is copied again (overwritten).
//! - `delete`: destination files and directories inside the tree that the source lacks are
//!   deleted (files first, then directories deepest first).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

pub use crate::proto::listing::{Kind, Timestamp};

/// What a tree copy does besides copying: the binary's `fxp::options::TransferOptions`'s
/// `skip_existing`, `dry_run`, `include`, `exclude` and `delete` (the flags' help there
/// says what each means).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorOptions {
    pub skip_existing: bool,
    pub dry_run: bool,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub delete: bool,
}

impl MirrorOptions {
    /// Whether any option differs from a plain copy.
    pub fn any(&self) -> bool {
        *self != MirrorOptions::default()
    }

    /// Whether an option only a tree can use is set (all but `skip_existing`, which a
    /// single file follows too).
    pub fn tree_only(&self) -> bool {
        MirrorOptions {
            skip_existing: false,
            ..self.clone()
        }
        .any()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("bad glob {pattern:?}: {source}")]
pub struct GlobError {
    pattern: String,
    source: globset::Error,
}

/// Compiled `include` / `exclude` globs.
#[derive(Debug, Clone)]
pub struct Filter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl Default for Filter {
    /// Admits everything.
    fn default() -> Self {
        Filter {
            include: None,
            exclude: GlobSet::empty(),
        }
    }
}

fn glob_set(patterns: &[String]) -> Result<GlobSet, GlobError> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        // A bare name matches at any depth, as in rsync and .gitignore.
        let full = if p.contains('/') {
            p.trim_start_matches('/').to_owned()
        } else {
            format!("**/{p}")
        };
        let glob = GlobBuilder::new(&full)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|source| GlobError {
                pattern: p.clone(),
                source,
            })?;
        set.add(glob);
    }
    set.build().map_err(|source| GlobError {
        pattern: patterns.join(" "),
        source,
    })
}

fn as_path(rel: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(rel))
}

impl Filter {
    pub fn new(opts: &MirrorOptions) -> Result<Filter, GlobError> {
        Ok(Filter {
            include: (!opts.include.is_empty())
                .then(|| glob_set(&opts.include))
                .transpose()?,
            exclude: glob_set(&opts.exclude)?,
        })
    }

    /// Whether the walk enters the directory `rel` (no exclude matches it).
    pub fn admits_dir(&self, rel: &[u8]) -> bool {
        !self.exclude.is_match(as_path(rel))
    }

    /// Whether `rel` (of `kind`) takes part in the mirror: neither it nor a parent is
    /// excluded, and a file matches an include when there are any.
    pub fn admits(&self, rel: &[u8], kind: Kind) -> bool {
        let parents_ok = rel
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .all(|(i, _)| self.admits_dir(&rel[..i]));
        parents_ok
            && !self.exclude.is_match(as_path(rel))
            && (kind == Kind::Dir
                || self
                    .include
                    .as_ref()
                    .is_none_or(|inc| inc.is_match(as_path(rel))))
    }
}

/// One entry of a listed tree, its path relative to the tree's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub rel: Vec<u8>,
    pub kind: Kind,
    pub size: Option<u64>,
    pub modified: Option<Timestamp>,
}

/// What to do with one entry.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `MKD` on the destination.
    CreateDir,
    /// Copy the source file over.
    Copy,
    /// Leave the destination's file as it is.
    Skip,
    /// `DELE` a destination file the source lacks.
    Delete,
    /// `RMD` a destination directory the source lacks.
    RemoveDir,
}

/// Why, in words an operator reads in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not at the destination: a new file (`new` in reports).
    #[serde(rename = "new")]
    Missing,
    /// At the destination, copied again (no `skip_existing`).
    Overwrite,
    SizeDiffers,
    /// A size is not known on one side, so the copy cannot be shown to be the same.
    SizeUnknown,
    /// Same size, but the destination's copy is older than the source.
    Older,
    /// Same size, and not older where both times are known.
    UpToDate,
    /// At the destination only (`delete`).
    NotInSource,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "new at the destination",
            Reason::Overwrite => "exists, overwritten",
            Reason::SizeDiffers => "size differs",
            Reason::SizeUnknown => "size unknown",
            Reason::Older => "destination older",
            Reason::UpToDate => "same size, not older",
            Reason::NotInSource => "not in the source",
        }
    }
}

/// The decision for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub rel: Vec<u8>,
    pub kind: Kind,
    pub operation: Operation,
    pub reason: Reason,
    /// The source's size (for copies and skips), else the destination's.
    pub size: Option<u64>,
}

/// Depth of a relative path: `a` is 0, `a/b` is 1.
fn depth(rel: &[u8]) -> usize {
    rel.iter().filter(|&&b| b == b'/').count()
}

/// Every decision for mirroring `src` onto `dst` (both listed relative to their roots),
/// in the order to carry them out: directories to create (parents first), then the
/// files to copy or skip (in the source's order), then deletions (files, then
/// directories deepest first). Entries the filter leaves out appear nowhere.
pub fn decide(src: &[Item], dst: &[Item], opts: &MirrorOptions, filter: &Filter) -> Vec<Decision> {
    let at_dst: BTreeMap<&[u8], &Item> = dst.iter().map(|i| (i.rel.as_slice(), i)).collect();
    let in_src: BTreeSet<&[u8]> = src.iter().map(|i| i.rel.as_slice()).collect();
    let admitted = |i: &&Item| filter.admits(&i.rel, i.kind);

    let mut dirs: Vec<&Item> = src
        .iter()
        .filter(admitted)
        // Missing as a directory: where a file has the name, `MKD` fails and says so.
        .filter(|i| {
            i.kind == Kind::Dir
                && at_dst
                    .get(i.rel.as_slice())
                    .is_none_or(|d| d.kind != Kind::Dir)
        })
        .collect();
    dirs.sort_by(|a, b| (depth(&a.rel), &a.rel).cmp(&(depth(&b.rel), &b.rel)));
    let mut out: Vec<Decision> = dirs
        .into_iter()
        .map(|i| Decision {
            rel: i.rel.clone(),
            kind: Kind::Dir,
            operation: Operation::CreateDir,
            reason: Reason::Missing,
            size: None,
        })
        .collect();

    for s in src.iter().filter(admitted).filter(|i| i.kind == Kind::File) {
        let (operation, reason) = file_operation(s, at_dst.get(s.rel.as_slice()).copied(), opts);
        out.push(Decision {
            rel: s.rel.clone(),
            kind: Kind::File,
            operation,
            reason,
            size: s.size,
        });
    }

    if opts.delete {
        let mut gone: Vec<&Item> = dst
            .iter()
            .filter(admitted)
            .filter(|d| !in_src.contains(d.rel.as_slice()))
            .collect();
        // Files before directories; directories deepest first, so each is empty by then.
        gone.sort_by(|a, b| {
            let key = |i: &Item| (i.kind == Kind::Dir, std::cmp::Reverse(depth(&i.rel)));
            key(a).cmp(&key(b)).then_with(|| a.rel.cmp(&b.rel))
        });
        out.extend(gone.into_iter().map(|d| Decision {
            rel: d.rel.clone(),
            kind: d.kind,
            operation: if d.kind == Kind::Dir {
                Operation::RemoveDir
            } else {
                Operation::Delete
            },
            reason: Reason::NotInSource,
            size: d.size,
        }));
    }
    out
}

/// What to do with the file `s` given what the destination has (`d`): the tree's rule,
/// which a single file with `skip_existing` follows too.
pub fn file_operation(s: &Item, d: Option<&Item>, opts: &MirrorOptions) -> (Operation, Reason) {
    let Some(d) = d else {
        return (Operation::Copy, Reason::Missing);
    };
    if !opts.skip_existing {
        return (Operation::Copy, Reason::Overwrite);
    }
    match (s.size, d.size) {
        (Some(a), Some(b)) if a != b => (Operation::Copy, Reason::SizeDiffers),
        (Some(_), Some(_)) => match (s.modified, d.modified) {
            (Some(sm), Some(dm)) if dm < sm => (Operation::Copy, Reason::Older),
            _ => (Operation::Skip, Reason::UpToDate),
        },
        _ => (Operation::Copy, Reason::SizeUnknown),
    }
}

/// Whether the time of `s` and `d` decides anything: both files with the same known
/// size, and at least one time unknown (the caller may then ask `MDTM`).
pub fn needs_times(s: &Item, d: &Item) -> bool {
    s.kind == Kind::File
        && d.kind == Kind::File
        && s.size.is_some()
        && s.size == d.size
        && (s.modified.is_none() || d.modified.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(rel: &str, size: u64, t: Option<u64>) -> Item {
        Item {
            rel: rel.as_bytes().to_vec(),
            kind: Kind::File,
            size: Some(size),
            modified: t.map(Timestamp),
        }
    }

    fn dir(rel: &str) -> Item {
        Item {
            rel: rel.as_bytes().to_vec(),
            kind: Kind::Dir,
            size: None,
            modified: None,
        }
    }

    fn summary(d: &[Decision]) -> Vec<(String, Operation, Reason)> {
        d.iter()
            .map(|d| {
                (
                    String::from_utf8_lossy(&d.rel).into_owned(),
                    d.operation,
                    d.reason,
                )
            })
            .collect()
    }

    fn s(rel: &str, a: Operation, r: Reason) -> (String, Operation, Reason) {
        (rel.to_owned(), a, r)
    }

    #[test]
    fn an_empty_destination_gets_everything_parents_first() {
        let src = [
            dir("b"),
            dir("a"),
            file("top.bin", 5, None),
            dir("a/deep"),
            file("a/deep/x", 1, None),
        ];
        let d = decide(&src, &[], &MirrorOptions::default(), &Filter::default());
        assert_eq!(
            summary(&d),
            vec![
                s("a", Operation::CreateDir, Reason::Missing),
                s("b", Operation::CreateDir, Reason::Missing),
                s("a/deep", Operation::CreateDir, Reason::Missing),
                s("top.bin", Operation::Copy, Reason::Missing),
                s("a/deep/x", Operation::Copy, Reason::Missing),
            ]
        );
    }

    #[test]
    fn skip_existing_by_size_then_time() {
        let src = [
            file("same", 5, None),
            file("bigger", 6, None),
            file("newer-src", 5, Some(20260102000000)),
            file("older-src", 5, Some(20260101000000)),
            file("one-time", 5, Some(20260101000000)),
            file("new", 1, None),
        ];
        let dst = [
            file("same", 5, None),
            file("bigger", 5, None),
            file("newer-src", 5, Some(20260101000000)),
            file("older-src", 5, Some(20260102000000)),
            file("one-time", 5, None),
        ];
        let skip = MirrorOptions {
            skip_existing: true,
            ..MirrorOptions::default()
        };
        assert_eq!(
            summary(&decide(&src, &dst, &skip, &Filter::default())),
            vec![
                s("same", Operation::Skip, Reason::UpToDate),
                s("bigger", Operation::Copy, Reason::SizeDiffers),
                s("newer-src", Operation::Copy, Reason::Older),
                s("older-src", Operation::Skip, Reason::UpToDate),
                s("one-time", Operation::Skip, Reason::UpToDate),
                s("new", Operation::Copy, Reason::Missing),
            ]
        );
        // Without the option everything is copied again.
        let all = decide(&src, &dst, &MirrorOptions::default(), &Filter::default());
        assert!(
            all.iter().all(|d| d.operation == Operation::Copy),
            "{all:?}"
        );
        assert_eq!(all[0].reason, Reason::Overwrite);
    }

    #[test]
    fn delete_only_what_the_source_lacks_files_first() {
        let src = [dir("keep"), file("keep/a", 1, None)];
        let dst = [
            dir("keep"),
            file("keep/a", 1, None),
            file("keep/stale", 1, None),
            dir("gone"),
            dir("gone/deeper"),
            file("gone/deeper/f", 1, None),
            file("logs.txt", 1, None),
        ];
        let opts = MirrorOptions {
            delete: true,
            exclude: vec!["*.txt".into()],
            ..MirrorOptions::default()
        };
        let d = decide(&src, &dst, &opts, &Filter::new(&opts).unwrap());
        assert_eq!(
            summary(&d),
            vec![
                s("keep/a", Operation::Copy, Reason::Overwrite),
                s("gone/deeper/f", Operation::Delete, Reason::NotInSource),
                s("keep/stale", Operation::Delete, Reason::NotInSource),
                s("gone/deeper", Operation::RemoveDir, Reason::NotInSource),
                s("gone", Operation::RemoveDir, Reason::NotInSource),
            ]
        );
    }

    #[test]
    fn globs_match_relative_paths_and_bare_names_at_any_depth() {
        let opts = MirrorOptions {
            include: vec!["*.bin".into(), "docs/*.md".into()],
            exclude: vec!["tmp".into(), "sub/skip-*".into()],
            ..MirrorOptions::default()
        };
        let f = Filter::new(&opts).unwrap();
        assert!(f.admits(b"a.bin", Kind::File));
        assert!(f.admits(b"x/y/a.bin", Kind::File));
        assert!(!f.admits(b"a.txt", Kind::File));
        assert!(f.admits(b"docs/r.md", Kind::File));
        // `*` does not cross a `/`.
        assert!(!f.admits(b"docs/deep/r.md", Kind::File));
        // Includes never prune directories; excludes do, with everything beneath.
        assert!(f.admits(b"docs", Kind::Dir));
        assert!(!f.admits(b"tmp", Kind::Dir));
        assert!(!f.admits(b"a/tmp", Kind::Dir));
        assert!(!f.admits(b"tmp/a.bin", Kind::File));
        assert!(!f.admits(b"sub/skip-1.bin", Kind::File));
        assert!(f.admits(b"sub/keep.bin", Kind::File));
        // Paths are bytes: a Latin-1 name still matches.
        assert!(f.admits(b"caf\xe9.bin", Kind::File));
        let bad = MirrorOptions {
            exclude: vec!["[".into()],
            ..MirrorOptions::default()
        };
        assert!(Filter::new(&bad).unwrap_err().to_string().contains("\"[\""));
    }

    fn tree() -> impl Strategy<Value = Vec<Item>> {
        // Paths from a small alphabet so source and destination overlap often.
        let rel = proptest::collection::vec(prop::sample::select(vec!["a", "b", "c.bin"]), 1..4)
            .prop_map(|parts| parts.join("/"));
        let item = (rel, any::<bool>(), 0u64..3, proptest::option::of(0u64..3)).prop_map(
            |(rel, is_dir, size, t)| Item {
                rel: rel.into_bytes(),
                kind: if is_dir { Kind::Dir } else { Kind::File },
                size: (!is_dir).then_some(size),
                modified: t.map(Timestamp),
            },
        );
        proptest::collection::vec(item, 0..12).prop_map(|items| {
            // A listing names each path once, with its parents as directories.
            let mut by: BTreeMap<Vec<u8>, Item> = BTreeMap::new();
            for i in items {
                for (n, _) in i.rel.iter().enumerate().filter(|(_, b)| **b == b'/') {
                    by.entry(i.rel[..n].to_vec()).or_insert_with(|| Item {
                        rel: i.rel[..n].to_vec(),
                        kind: Kind::Dir,
                        size: None,
                        modified: None,
                    });
                }
                by.entry(i.rel.clone()).or_insert(i);
            }
            // A path that became a parent is a directory.
            let parents: BTreeSet<Vec<u8>> = by
                .keys()
                .flat_map(|k| {
                    k.iter()
                        .enumerate()
                        .filter(|(_, b)| **b == b'/')
                        .map(|(n, _)| k[..n].to_vec())
                        .collect::<Vec<_>>()
                })
                .collect();
            by.into_values()
                .map(|mut i| {
                    if parents.contains(&i.rel) {
                        i.kind = Kind::Dir;
                        i.size = None;
                    }
                    i
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn decisions_are_consistent(
            src in tree(),
            dst in tree(),
            skip_existing: bool,
            delete: bool,
            exclude: bool,
        ) {
            let opts = MirrorOptions {
                skip_existing,
                delete,
                exclude: if exclude { vec!["b".into()] } else { vec![] },
                ..MirrorOptions::default()
            };
            let filter = Filter::new(&opts).unwrap();
            let d = decide(&src, &dst, &opts, &filter);
            let at_dst: BTreeMap<&[u8], &Item> = dst.iter().map(|i| (i.rel.as_slice(), i)).collect();
            let mut seen = BTreeSet::new();
            let mut created = BTreeSet::new();
            for x in &d {
                // Each entry once, and never one the filter leaves out.
                prop_assert!(seen.insert((x.rel.clone(), x.operation)), "{x:?} twice");
                prop_assert!(filter.admits(&x.rel, x.kind));
                match x.operation {
                    Operation::CreateDir => {
                        prop_assert!(at_dst.get(x.rel.as_slice()).is_none_or(|d| d.kind != Kind::Dir));
                        created.insert(x.rel.clone());
                    }
                    Operation::Copy | Operation::Skip => {
                        // Every parent exists or was created before.
                        for (n, _) in x.rel.iter().enumerate().filter(|(_, b)| **b == b'/') {
                            let p = &x.rel[..n];
                            let is_dir = at_dst.get(p).is_some_and(|d| d.kind == Kind::Dir);
                            prop_assert!(is_dir || created.contains(p), "{x:?}");
                        }
                        if x.operation == Operation::Skip {
                            let there = at_dst[x.rel.as_slice()];
                            prop_assert!(skip_existing);
                            prop_assert_eq!(there.size, x.size);
                        }
                    }
                    Operation::Delete | Operation::RemoveDir => {
                        prop_assert!(delete);
                        prop_assert!(!src.iter().any(|s| s.rel == x.rel));
                        prop_assert!(at_dst.contains_key(x.rel.as_slice()));
                    }
                }
            }
            // Every admitted source file is copied or skipped.
            for s in src.iter().filter(|s| s.kind == Kind::File && filter.admits(&s.rel, s.kind)) {
                prop_assert!(d.iter().any(|x| x.rel == s.rel
                    && matches!(x.operation, Operation::Copy | Operation::Skip)));
            }
            // Deleted directories come after everything deleted beneath them.
            for (i, x) in d.iter().enumerate().filter(|(_, x)| x.operation == Operation::RemoveDir) {
                let mut prefix = x.rel.clone();
                prefix.push(b'/');
                prop_assert!(!d[i..].iter().any(|y| y.rel.starts_with(&prefix)));
            }
            // A dry run decides the same: it only does not act.
            let dry = MirrorOptions { dry_run: true, ..opts.clone() };
            prop_assert_eq!(decide(&src, &dst, &dry, &filter), d);
        }
    }
}
