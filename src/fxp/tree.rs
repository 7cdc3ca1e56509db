//! Directory trees: list the source (MLSD when offered, else `LIST` read as Unix
//! `ls -l`), create the directories on the destination (`MKD`, parents first), then copy
//! the files as a queue, `Options::concurrency` at a time, each through
//! [`super::engine::transfer`]. [`copy_list`] is the same queue for a given list of files.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::client::listing_lines;
use super::engine::{self, FxpError, Options, Side};
use super::sessions::Sessions;
use super::url::FtpUrl;

/// Directories listed at most, and entries accepted, so a hostile or looping server
/// cannot make the walk endless.
const MAX_DIRS: usize = 10_000;
const MAX_FILES: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// One listing entry (links and special files are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: Kind,
    pub size: Option<u64>,
}

/// What a tree copy did.
#[derive(Debug, Clone, Default)]
pub struct TreeReport {
    pub dirs: usize,
    pub files: usize,
    pub bytes: u64,
    /// Bytes that crossed the engine (relay).
    pub relayed_bytes: u64,
    pub duration: Duration,
    /// Files per method used.
    pub methods: BTreeMap<&'static str, usize>,
    /// Files that failed, with the error.
    pub failed: Vec<(String, String)>,
}

impl TreeReport {
    pub fn summary(&self) -> String {
        let secs = self.duration.as_secs_f64();
        let methods: Vec<String> = self
            .methods
            .iter()
            .map(|(m, n)| format!("{m} {n}"))
            .collect();
        format!(
            "copied {} files in {} directories: {} bytes, {secs:.3} s, {:.2} MB/s, methods: {}{}",
            self.files,
            self.dirs,
            self.bytes,
            rate_mb(self.bytes, secs),
            if methods.is_empty() {
                "none".to_owned()
            } else {
                methods.join(", ")
            },
            if self.failed.is_empty() {
                String::new()
            } else {
                format!(", {} FAILED", self.failed.len())
            }
        )
    }
}

/// Megabytes (10^6) per second, as the summaries (this one and the CLI's) show it.
pub fn rate_mb(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / 1e6 / secs
    } else {
        0.0
    }
}

/// Copies the tree under `src` into `dst` (`dst` ending in `/` gets the source
/// directory's name appended). Per-file failures are collected in the report; a failure
/// to list the source or create a directory ends the copy.
pub async fn copy_tree(src: &FtpUrl, dst: &FtpUrl, opts: &Options) -> Result<TreeReport, FxpError> {
    let started = Instant::now();
    let dst = engine::destination_path(src, dst);
    let (dirs, files) = walk(src, opts).await?;

    let mut d = opts
        .open(&dst)
        .await
        .map_err(|e| server_err(Side::Destination, &dst, e))?;
    // Parents first (the walk is breadth first), the destination directory itself too.
    let todo = (!dst.path.is_empty())
        .then(|| dst.path.clone())
        .into_iter()
        .chain(dirs.iter().map(|rel| dst.join(rel).path));
    for path in todo {
        if let Err(e) = d.mkd(&path).await {
            d.quit().await;
            return Err(server_err(Side::Destination, &dst, e));
        }
    }
    d.quit().await;

    let jobs: Vec<(FtpUrl, FtpUrl)> = files
        .iter()
        .map(|rel| (src.join(rel), dst.join(rel)))
        .collect();
    let mut report = copy_list(&jobs, opts).await;
    report.dirs = dirs.len();
    report.duration = started.elapsed();
    Ok(report)
}

/// Copies each `(source, destination)` pair, `Options::concurrency` at a time; failures
/// are collected, the others go on. The files share their logins: each of the
/// `concurrency` transfers under way holds one session on each server, taken from a pool
/// that outlives the file (see [`Sessions`]), so a list logs in to each server about
/// `concurrency` times, not once per file.
pub async fn copy_list(jobs: &[(FtpUrl, FtpUrl)], opts: &Options) -> TreeReport {
    let limit = opts.concurrency.max(1);
    // One more per server than transfers run at once: the session that watches a slow
    // copy grow comes back too.
    let sessions = Sessions::new(limit + 1);
    let report = copy_list_with(&sessions, jobs, opts).await;
    sessions.close().await;
    tracing::debug!(
        files = jobs.len(),
        logins = sessions.logins(),
        reused = sessions.reused(),
        "fxp queue done"
    );
    report
}

/// [`copy_list`] on sessions from `sessions`; the caller closes it.
pub async fn copy_list_with(
    sessions: &Sessions,
    jobs: &[(FtpUrl, FtpUrl)],
    opts: &Options,
) -> TreeReport {
    let started = Instant::now();
    let mut report = TreeReport::default();
    // A named async fn, not a closure in a stream adapter: keeps the future `Send` for
    // callers that spawn it.
    async fn one<'a>(
        sessions: &Sessions,
        s: &'a FtpUrl,
        t: &FtpUrl,
        opts: &Options,
    ) -> (&'a FtpUrl, Result<engine::Report, FxpError>) {
        (s, engine::transfer_with(sessions, s, t, opts).await)
    }
    let limit = opts.concurrency.max(1);
    let mut queue = jobs.iter();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < limit {
            match queue.next() {
                Some((s, t)) => running.push(one(sessions, s, t, opts)),
                None => break,
            }
        }
        let Some((s, r)) = running.next().await else {
            break;
        };
        match r {
            Ok(rep) => {
                report.files += 1;
                report.bytes += rep.bytes;
                report.relayed_bytes += rep.relayed_bytes;
                *report.methods.entry(rep.method.as_str()).or_default() += 1;
            }
            Err(e) => report.failed.push((s.to_string(), e.to_string())),
        }
    }
    report.duration = started.elapsed();
    report
}

/// Lists `src` breadth first: every directory (relative paths, parents before children)
/// and every file.
async fn walk(src: &FtpUrl, opts: &Options) -> Result<(Vec<Vec<u8>>, Vec<Vec<u8>>), FxpError> {
    let mut c = opts
        .open(src)
        .await
        .map_err(|e| server_err(Side::Source, src, e))?;
    let mut dirs = vec![];
    let mut files = vec![];
    let mut queue: VecDeque<Vec<u8>> = VecDeque::from([vec![]]);
    let mut listed = 0;
    while let Some(rel) = queue.pop_front() {
        listed += 1;
        if listed > MAX_DIRS || files.len() > MAX_FILES {
            c.quit().await;
            return Err(FxpError::Other(format!(
                "the source tree is too large (over {MAX_DIRS} directories or {MAX_FILES} files)"
            )));
        }
        let path = src.join(&rel).path;
        let (raw, mlsd) = match c.listing(&path).await {
            Ok(l) => l,
            Err(e) => {
                c.quit().await;
                return Err(server_err(Side::Source, src, e));
            }
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
            match e.kind {
                Kind::Dir => {
                    dirs.push(child.clone());
                    queue.push_back(child);
                }
                Kind::File => files.push(child),
            }
        }
    }
    c.quit().await;
    Ok((dirs, files))
}

fn server_err(side: Side, url: &FtpUrl, error: super::client::FtpError) -> FxpError {
    FxpError::Server {
        side,
        host: url.host_port(),
        error,
    }
}

/// A name that is safe to join into a path: not empty, `.`, `..`, and without `/`.
fn usable_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/')
}

/// RFC 3659 `MLSD` lines: `fact=value;fact=value; name`.
pub fn parse_mlsd(raw: &[u8]) -> Vec<Entry> {
    listing_lines(raw)
        .into_iter()
        .filter_map(|line| {
            let sp = line.iter().position(|&b| b == b' ')?;
            let (facts, name) = (&line[..sp], &line[sp + 1..]);
            let mut kind = None;
            let mut size = None;
            for fact in facts.split(|&b| b == b';') {
                let Some(eq) = fact.iter().position(|&b| b == b'=') else {
                    continue;
                };
                let key = String::from_utf8_lossy(&fact[..eq]).to_ascii_lowercase();
                let value = String::from_utf8_lossy(&fact[eq + 1..]).to_ascii_lowercase();
                match key.as_str() {
                    "type" => {
                        kind = match value.as_str() {
                            "file" => Some(Kind::File),
                            "dir" => Some(Kind::Dir),
                            _ => None,
                        }
                    }
                    "size" => size = value.parse().ok(),
                    _ => {}
                }
            }
            let kind = kind?;
            usable_name(name).then(|| Entry {
                name: name.to_vec(),
                kind,
                size,
            })
        })
        .collect()
}

/// Unix `ls -l` lines: `drwxr-xr-x 2 owner group 4096 Nov 24 16:00 name`. The name is
/// everything after the eighth field, spaces included. Links, devices and `total` lines
/// are skipped.
pub fn parse_list(raw: &[u8]) -> Vec<Entry> {
    listing_lines(raw)
        .into_iter()
        .filter_map(|line| {
            let kind = match line.first()? {
                b'-' => Kind::File,
                b'd' => Kind::Dir,
                _ => return None,
            };
            let mut fields = vec![];
            let mut i = 0;
            while fields.len() < 8 {
                while line.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
                    i += 1;
                }
                let start = i;
                while line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                    i += 1;
                }
                if start == i {
                    return None;
                }
                fields.push(&line[start..i]);
            }
            // Exactly one blank separates the time from the name; more belong to it.
            let name = line.get(i + 1..)?;
            let size = fields
                .get(4)
                .and_then(|f| std::str::from_utf8(f).ok())
                .and_then(|s| s.parse().ok());
            usable_name(name).then(|| Entry {
                name: name.to_vec(),
                kind,
                size,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mlsd() {
        let raw = b"type=cdir;modify=20261124;perm=el; .\r\n\
type=pdir;modify=20261124; ..\r\n\
type=file;size=8388608;modify=20261124;perm=r; big.bin\r\n\
type=dir;modify=20261124;perm=el; sub dir\r\n\
type=OS.unix=slink:/x;size=1; link\r\n\
Type=File;Size=3; caf\xe9.txt\r\n";
        let e = parse_mlsd(raw);
        assert_eq!(
            e,
            vec![
                Entry {
                    name: b"big.bin".to_vec(),
                    kind: Kind::File,
                    size: Some(8388608)
                },
                Entry {
                    name: b"sub dir".to_vec(),
                    kind: Kind::Dir,
                    size: None
                },
                Entry {
                    name: b"caf\xe9.txt".to_vec(),
                    kind: Kind::File,
                    size: Some(3)
                },
            ]
        );
    }

    #[test]
    fn ls_l() {
        let raw = b"total 8\r\n\
drwxr-xr-x    2 999      995          4096 Nov 24 16:00 a dir\r\n\
-rw-r--r--    1 999      995       8388608 Nov 24 16:00 big.bin\r\n\
-rw-r--r--    1 owner    group           5 Jan 01  2020  two spaces\r\n\
lrwxrwxrwx    1 999      995             7 Nov 24 16:00 l -> big.bin\r\n\
drwxr-xr-x    2 999      995          4096 Nov 24 16:00 ..\r\n\
-rw-r--r-- 1 short\r\n";
        let e = parse_list(raw);
        assert_eq!(
            e,
            vec![
                Entry {
                    name: b"a dir".to_vec(),
                    kind: Kind::Dir,
                    size: Some(4096)
                },
                Entry {
                    name: b"big.bin".to_vec(),
                    kind: Kind::File,
                    size: Some(8388608)
                },
                Entry {
                    name: b" two spaces".to_vec(),
                    kind: Kind::File,
                    size: Some(5)
                },
            ]
        );
    }

    #[test]
    fn names_that_would_escape_are_dropped() {
        assert!(parse_mlsd(b"type=file; a/../../x\r\n").is_empty());
        assert!(parse_list(b"-rw-r--r-- 1 o g 5 Jan 01 2020 ../x\r\n").is_empty());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
            for e in parse_mlsd(&raw).into_iter().chain(parse_list(&raw)) {
                prop_assert!(usable_name(&e.name));
            }
        }
    }
}
