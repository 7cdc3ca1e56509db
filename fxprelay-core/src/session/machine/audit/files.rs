//! The audit trail's file operations: `DELE`, `RNFR`+`RNTO`, `MKD`, `RMD`, `SITE CHMOD`
//! get one INFO line each with their result and reply code, and every path the trail
//! logs (these and transfers) is absolute once the session's working directory is known:
//! from a `PWD` reply (`257 "/dir"`), then followed through `CWD`/`CDUP` as the server
//! accepts them. Pure bookkeeping: the commands as forwarded, the replies as they come,
//! in order.

use std::collections::VecDeque;

use tracing::info;

use super::TARGET;
use crate::proto::command::Verb;
use crate::proto::line::trim_eol;
use crate::proto::reply::quoted_path;

/// A forwarded command the trail waits to hear the answer to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Delete(String),
    RenameFrom(String),
    RenameTo(String),
    MakeDir(String),
    RemoveDir(String),
    Chmod {
        mode: String,
        path: String,
    },
    /// `CWD` to this (absolute when known) directory; `CDUP` is `CWD ..`.
    ChangeDir(String),
    PrintDir,
}

/// The file operations of one session.
#[derive(Debug, Default)]
pub(in crate::session::machine) struct Files {
    /// The server's working directory, once a `PWD` told it.
    cwd: Option<String>,
    /// Commands forwarded and not yet answered, in order (only the ones kept here).
    pending: VecDeque<(String, Op)>,
    /// The path an accepted `RNFR` named, for the `RNTO` that follows.
    rename_from: Option<String>,
}

impl Files {
    /// `arg` as the server reads it: absolute when the working directory is known.
    pub(in crate::session::machine) fn resolve(&self, arg: &str) -> String {
        resolve(self.cwd.as_deref(), arg)
    }

    /// A command went to the server; `line` is what was sent.
    pub(in crate::session::machine) fn forwarded(&mut self, verb: &Verb, line: &[u8]) {
        let text = String::from_utf8_lossy(trim_eol(line));
        let arg = text.split_once(' ').map_or("", |(_, a)| a).trim();
        let path = || self.resolve(arg);
        let op = match verb.as_str() {
            "DELE" => Op::Delete(path()),
            "RNFR" => Op::RenameFrom(path()),
            "RNTO" => Op::RenameTo(path()),
            "MKD" | "XMKD" => Op::MakeDir(path()),
            "RMD" | "XRMD" => Op::RemoveDir(path()),
            "CWD" | "XCWD" => Op::ChangeDir(path()),
            "CDUP" | "XCUP" => Op::ChangeDir(self.resolve("..")),
            "PWD" | "XPWD" => Op::PrintDir,
            "SITE" => {
                let mut words = arg.splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some(site), Some(mode), Some(file)) if site.eq_ignore_ascii_case("CHMOD") => {
                        Op::Chmod {
                            mode: mode.to_owned(),
                            path: self.resolve(file.trim()),
                        }
                    }
                    _ => return,
                }
            }
            _ => return,
        };
        self.pending.push_back((verb.as_str().to_owned(), op));
    }

    /// The server's final reply to `verb` (`code`, its first line `text`): the line for
    /// a file operation, the working directory followed.
    pub(in crate::session::machine) fn answered(&mut self, verb: &Verb, code: u16, text: &str) {
        let matches = self
            .pending
            .front()
            .is_some_and(|(v, _)| v == verb.as_str());
        if !matches {
            return;
        }
        let Some((_, op)) = self.pending.pop_front() else {
            return;
        };
        let ok = (200..300).contains(&code);
        let result = |ok: bool| if ok { "ok" } else { "failed" };
        match op {
            Op::PrintDir => {
                if code == 257
                    && let Some(dir) = quoted_path(text.as_bytes())
                {
                    self.cwd = Some(String::from_utf8_lossy(&dir).into_owned());
                }
            }
            Op::ChangeDir(dir) => {
                // Only a directory known to be absolute: a relative one (the working
                // directory not yet known) would mislead every later path.
                if (200..300).contains(&code) && dir.starts_with('/') {
                    self.cwd = Some(dir);
                }
            }
            Op::RenameFrom(path) => {
                // 350: the name is taken, RNTO follows; anything else ends the rename.
                if code == 350 {
                    self.rename_from = Some(path);
                } else {
                    info!(target: TARGET, from = %path, result = %"failed", reply = code, "rename");
                }
            }
            Op::RenameTo(to) => {
                let from = self.rename_from.take().unwrap_or_default();
                info!(target: TARGET, %from, %to, result = %result(ok), reply = code, "rename");
            }
            Op::Delete(path) => {
                info!(target: TARGET, %path, result = %result(ok), reply = code, "delete")
            }
            Op::MakeDir(path) => {
                info!(target: TARGET, %path, result = %result(ok), reply = code, "mkdir")
            }
            Op::RemoveDir(path) => {
                info!(target: TARGET, %path, result = %result(ok), reply = code, "rmdir")
            }
            Op::Chmod { mode, path } => {
                info!(target: TARGET, %path, %mode, result = %result(ok), reply = code, "chmod")
            }
        }
    }
}

/// `arg` against the working directory `cwd`: absolute, `.` and `..` resolved, when
/// either is absolute; as given otherwise.
fn resolve(cwd: Option<&str>, arg: &str) -> String {
    let joined = match (arg.starts_with('/'), cwd) {
        (true, _) => arg.to_owned(),
        (false, Some(cwd)) if cwd.starts_with('/') => format!("{cwd}/{arg}"),
        _ => return arg.to_owned(),
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verb(v: &str) -> Verb {
        Verb::new(v.as_bytes()).unwrap()
    }

    fn send(f: &mut Files, line: &str) {
        let v = line.split(' ').next().unwrap();
        f.forwarded(&verb(v), format!("{line}\r\n").as_bytes());
    }

    #[test]
    fn paths_resolve_against_the_working_directory() {
        assert_eq!(resolve(None, "a/b"), "a/b");
        assert_eq!(resolve(Some("/home/x"), "a/./b/../c"), "/home/x/a/c");
        assert_eq!(resolve(Some("/home/x"), "/etc//passwd"), "/etc/passwd");
        assert_eq!(resolve(Some("/"), ".."), "/");
        assert_eq!(resolve(Some("relative"), "f"), "f");
    }

    #[test]
    fn the_working_directory_follows_pwd_and_accepted_cwds() {
        let mut f = Files::default();
        send(&mut f, "CWD a");
        f.answered(&verb("CWD"), 250, "250 ok");
        assert_eq!(f.resolve("f"), "f", "not known yet: as given");
        send(&mut f, "PWD");
        f.answered(
            &verb("PWD"),
            257,
            "257 \"/srv/ftp/a\" is the current directory",
        );
        send(&mut f, "CWD b");
        send(&mut f, "CWD nowhere");
        f.answered(&verb("CWD"), 250, "250 ok");
        f.answered(&verb("CWD"), 550, "550 no");
        assert_eq!(f.resolve("f"), "/srv/ftp/a/b/f");
        send(&mut f, "CDUP");
        f.answered(&verb("CDUP"), 200, "200 ok");
        assert_eq!(f.resolve("f"), "/srv/ftp/a/f");
        // A rename's two halves, a delete and a chmod, each matched to its reply.
        send(&mut f, "RNFR old");
        send(&mut f, "RNTO new");
        send(&mut f, "SITE CHMOD 640 new");
        assert_eq!(f.pending.len(), 3);
        f.answered(&verb("RNFR"), 350, "350 ready");
        assert_eq!(f.rename_from.as_deref(), Some("/srv/ftp/a/old"));
        f.answered(&verb("RNTO"), 250, "250 renamed");
        assert!(f.rename_from.is_none());
        f.answered(&verb("SITE"), 200, "200 ok");
        assert!(f.pending.is_empty());
        // Other SITE commands and other verbs are not kept; a reply to them changes
        // nothing here.
        send(&mut f, "SITE UTIME 20260101 f");
        send(&mut f, "NOOP");
        assert!(f.pending.is_empty());
        f.answered(&verb("NOOP"), 200, "200 ok");
    }
}
