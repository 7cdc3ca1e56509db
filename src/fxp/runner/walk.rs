//! The I/O half of a tree's plan, and the directory steps of carrying it out: list the
//! source (MLSD when offered, else `LIST` read as Unix `ls -l`) and the destination
//! breadth first ([`list_tree`], then [`super::mirror::decide`] and
//! [`Plan::tree`]); make a directory (`MKD`, `mkdir -p` by [`levels`]).

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::fxp::client::{Client, FtpError, refused, with_arg};
use crate::fxp::engine::{EngineOptions, FxpError, Side};
use crate::fxp::job::mirror::{
    self, Filter, Item, Kind, MirrorOptions, Operation, Reason, Timestamp,
};
use crate::fxp::job::plan::Plan;
use crate::fxp::logins::LoginPool;
use crate::fxp::url::FtpUrl;
use crate::proto::listing::{parse_list, parse_mlsd};
use crate::proto::reply::quoted_path;

/// Directories listed at most, and entries accepted, so a hostile or looping server
/// cannot make the walk endless.
const MAX_DIRS: usize = 10_000;
const MAX_FILES: usize = 100_000;

/// Lists both trees and decides every entry (see [`mirror::decide`]): the plan of a tree; the destination is
/// only read. A destination directory that cannot be listed counts as empty (it may not
/// exist yet); a source that cannot be listed ends the copy here. The walk's sessions
/// come from `sessions` and go back to it for the copy.
pub async fn list_tree(
    sessions: &LoginPool,
    src: &FtpUrl,
    dst: &FtpUrl,
    opts: &EngineOptions,
    mirror: &MirrorOptions,
) -> Result<Plan, FxpError> {
    let filter = Filter::new(mirror).map_err(|e| FxpError::Other(e.to_string()))?;
    let dst = Plan::tree_root(src, dst);
    let mut s = sessions
        .lease(src, opts)
        .await
        .map_err(|e| server_err(Side::Source, src, e))?;
    let mut src_items = match walk(&mut s, src, &filter, Side::Source, &|_| true).await {
        Ok(items) => items,
        Err(e) => {
            s.quit().await;
            return Err(e);
        }
    };
    let mut d = match sessions.lease(&dst, opts).await {
        Ok(d) => d,
        Err(e) => {
            s.quit().await;
            return Err(server_err(Side::Destination, &dst, e));
        }
    };
    let src_dirs: BTreeSet<Vec<u8>> = src_items
        .iter()
        .filter(|i| i.kind == Kind::Dir)
        .map(|i| i.rel.clone())
        .collect();
    // The destination's subtrees are read where they matter: beside the source's
    // directories, or everywhere when deleting.
    let descend = |rel: &[u8]| mirror.delete || src_dirs.contains(rel);
    let mut dst_items = match walk(&mut d, &dst, &filter, Side::Destination, &descend).await {
        Ok(items) => items,
        Err(e) => {
            tokio::join!(s.quit(), d.quit());
            return Err(e);
        }
    };
    if mirror.skip_existing {
        fill_times(&mut s, src, &mut src_items, &mut d, &dst, &mut dst_items).await;
    }
    tokio::join!(sessions.put(src, s), sessions.put(&dst, d));
    let dirs = src_items.iter().filter(|i| i.kind == Kind::Dir).count();
    let decisions = mirror::decide(&src_items, &dst_items, mirror, &filter);
    Ok(Plan::tree(src, &dst, mirror, dirs, decisions))
}

/// Asks `MDTM` on both sides for the files whose sizes agree and whose listing gave no
/// time, where both servers offer `MDTM`: only there does the time decide anything.
async fn fill_times(
    s: &mut Client,
    src: &FtpUrl,
    src_items: &mut [Item],
    d: &mut Client,
    dst: &FtpUrl,
    dst_items: &mut [Item],
) {
    if !(s.features.has("MDTM") && d.features.has("MDTM")) {
        return;
    }
    let at_dst: HashMap<Vec<u8>, usize> = dst_items
        .iter()
        .enumerate()
        .map(|(n, i)| (i.rel.clone(), n))
        .collect();
    for si in src_items.iter_mut() {
        let Some(&n) = at_dst.get(&si.rel) else {
            continue;
        };
        let di = &mut dst_items[n];
        if !mirror::needs_times(si, di) {
            continue;
        }
        if si.modified.is_none() {
            si.modified = mdtm(s, &src.join(&si.rel).path).await;
        }
        if di.modified.is_none() {
            di.modified = mdtm(d, &dst.join(&di.rel).path).await;
        }
    }
}

/// What a single file's copy is to do, by the tree's rule (`mirror::file_operation`):
/// without `skip_existing` only whether the destination has it (new, or overwritten);
/// with it, both sizes and, when they agree, both times. Over the job's sessions, which
/// the copy uses next; a server that cannot answer leaves the copy to say why.
pub(super) async fn single_file(
    sessions: &LoginPool,
    src: &FtpUrl,
    dst: &FtpUrl,
    skip_existing: bool,
    opts: &EngineOptions,
) -> (Operation, Reason) {
    let overwrite = (Operation::Copy, Reason::Overwrite);
    let Ok(mut d) = sessions.lease(dst, opts).await else {
        return overwrite;
    };
    let at_dst = match d.size(&dst.path).await {
        Ok(size) => Some(size),
        Err(FtpError::Refused { code: 550, .. }) => None,
        Err(_) => {
            sessions.put(dst, d).await;
            return overwrite;
        }
    };
    let item = |size| Item {
        rel: Vec::new(),
        kind: Kind::File,
        size,
        modified: None,
    };
    let mirror = MirrorOptions {
        skip_existing,
        ..MirrorOptions::default()
    };
    let decided = match at_dst {
        None => mirror::file_operation(&item(None), None, &mirror),
        Some(_) if !skip_existing => overwrite,
        Some(dst_size) => match sessions.lease(src, opts).await {
            Err(_) => overwrite,
            Ok(mut s) => {
                let mut si = item(s.size(&src.path).await.ok().flatten());
                let mut di = item(dst_size);
                if mirror::needs_times(&si, &di) && s.features.has("MDTM") && d.features.has("MDTM")
                {
                    si.modified = mdtm(&mut s, &src.path).await;
                    di.modified = mdtm(&mut d, &dst.path).await;
                }
                sessions.put(src, s).await;
                mirror::file_operation(&si, Some(&di), &mirror)
            }
        },
    };
    sessions.put(dst, d).await;
    decided
}

/// `MDTM path`, `None` when refused or unreadable.
async fn mdtm(c: &mut Client, path: &[u8]) -> Option<Timestamp> {
    let r = c.command(&with_arg(b"MDTM", path)).await.ok()?;
    (r.code == 213)
        .then(|| Timestamp::parse(r.text()))
        .flatten()
}

/// Each level of `path`: `a/b/c` gives `a`, `a/b`, `a/b/c` (an absolute path keeps its
/// leading `/`).
pub fn levels(path: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![];
    for (n, &b) in path.iter().enumerate() {
        if b == b'/' && n > 0 && path[n - 1] != b'/' {
            out.push(path[..n].to_vec());
        }
    }
    if !path.is_empty() && !path.ends_with(b"/") {
        out.push(path.to_vec());
    }
    out
}

/// The login directory, from `PWD`'s `257 "dir"` (a doubled `"` is one).
pub(super) async fn pwd(c: &mut Client) -> Option<Vec<u8>> {
    let r = c.command(b"PWD").await.ok()?;
    (r.code == 257).then(|| quoted_path(r.text())).flatten()
}

/// `MKD path`: `Ok(true)` when made, `Ok(false)` when it was there already (a `550`
/// to `MKD`, then `CWD` into it works: the session goes back to `home` after). Any
/// other refusal is the `MKD`'s, with the server's text.
pub(super) async fn make_dir(
    c: &mut Client,
    path: &[u8],
    home: Option<&[u8]>,
) -> Result<bool, FtpError> {
    let line = with_arg(b"MKD", path);
    let r = c.command(&line).await?;
    if matches!(r.code, 257 | 250) {
        return Ok(true);
    }
    if let Some(home) = home {
        let cwd = c.command(&with_arg(b"CWD", path)).await?;
        if cwd.code == 250 {
            c.simple(&with_arg(b"CWD", home), |code| code == 250)
                .await?;
            return Ok(false);
        }
    }
    Err(refused(&String::from_utf8_lossy(&line), &r))
}

/// Lists the tree at `root` breadth first over the session `c`: every directory and file
/// the filter admits (paths relative to `root`, parents before children), entering only
/// the directories `descend` names. The source's listing failures end the walk; on the
/// destination a directory that cannot be listed counts as empty (it may not exist yet).
async fn walk(
    c: &mut Client,
    root: &FtpUrl,
    filter: &Filter,
    side: Side,
    descend: &(dyn Fn(&[u8]) -> bool + Sync),
) -> Result<Vec<Item>, FxpError> {
    let mut items = vec![];
    let mut queue: VecDeque<Vec<u8>> = VecDeque::from([vec![]]);
    let mut listed = 0;
    while let Some(rel) = queue.pop_front() {
        listed += 1;
        if listed > MAX_DIRS || items.len() > MAX_FILES {
            return Err(FxpError::Other(format!(
                "the {side} tree is too large (over {MAX_DIRS} directories or {MAX_FILES} files)"
            )));
        }
        let path = root.join(&rel).path;
        let (raw, mlsd) = match c.listing(&path).await {
            Ok(l) => l,
            // A missing directory is a 5xx (vsftpd lists it as empty); a 4xx is not that.
            Err(
                e @ FtpError::Refused {
                    code: 500..=599, ..
                },
            ) if side == Side::Destination => {
                tracing::debug!(dir = %String::from_utf8_lossy(&path), error = %e, "destination directory not listed: taken as empty");
                continue;
            }
            Err(e) => return Err(server_err(side, root, e)),
        };
        let entries = if mlsd {
            parse_mlsd(&raw)
        } else {
            parse_list(&raw)
        };
        for e in entries {
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(&e.name);
            if !filter.admits(&child, e.kind) {
                continue;
            }
            if e.kind == Kind::Dir && descend(&child) {
                queue.push_back(child.clone());
            }
            items.push(Item {
                rel: child,
                kind: e.kind,
                size: e.size,
                modified: e.modified,
            });
        }
    }
    Ok(items)
}

pub(super) fn server_err(side: Side, url: &FtpUrl, error: FtpError) -> FxpError {
    FxpError::Server {
        side,
        host: url.host_port(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_of_a_path() {
        let l = |p: &[u8]| levels(p);
        assert_eq!(
            l(b"a/b/c"),
            vec![b"a".to_vec(), b"a/b".to_vec(), b"a/b/c".to_vec()]
        );
        assert_eq!(l(b"/abs/x/"), vec![b"/abs".to_vec(), b"/abs/x".to_vec()]);
        assert_eq!(l(b"one"), vec![b"one".to_vec()]);
        assert!(l(b"").is_empty());
    }
}
