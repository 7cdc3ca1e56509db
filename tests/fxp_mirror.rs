//! `fxprelay fxp` as an operator drives it, the real binary against real servers: mirror
//! semantics for trees (a missing destination parent, `--skip-existing` by size and
//! time, `--dry-run`, `--include`/`--exclude`, `--delete`, a directory that cannot be
//! made), `--json`, passwords from a netrc file and the environment, Ctrl-C, and the
//! progress bars on a terminal (in `tmux`).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::{payload, unique_loopback_ip, wait_for};
use serde_json::Value;

/// A pyftpdlib that sends (and takes) every data connection at `rate` bytes per second.
fn slow_server(rate: u32) -> FtpServer {
    let mut o = ServerOptions::new(unique_loopback_ip());
    o.foreign_data = true;
    o.throttle = Some(rate);
    FtpServer::start(ServerKind::Pyftpdlib, o)
}

/// `ftp://user:pass@addr/path`.
fn url(s: &FtpServer, path: &str) -> String {
    format!("ftp://{}:{}@{}/{path}", s.user, s.pass, s.addr)
}

fn fxprelay() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fxprelay"));
    // A config file that does not exist: `fxp` must not read one. No netrc of the
    // machine's user, and no passwords from the environment, unless a test sets them.
    c.args(["-c", "/nonexistent/fxprelay.yaml", "fxp"])
        .env("NETRC", "/nonexistent/netrc")
        .env_remove("FXPRELAY_SRC_PASSWORD")
        .env_remove("FXPRELAY_DST_PASSWORD")
        .stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Output {
    fxprelay().args(args).output().expect("run fxprelay")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The `--json` object, which must be the whole of stdout.
fn json(o: &Output) -> Value {
    let (out, err) = text(o);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}\n{err}"))
}

fn record<'a>(v: &'a Value, path: &str) -> &'a Value {
    v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == path)
        .unwrap_or_else(|| panic!("no record for {path}: {v:#}"))
}

fn results(v: &Value) -> Vec<(String, String)> {
    let mut r: Vec<(String, String)> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_owned(),
                r["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    r.sort();
    r
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

fn tree_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("tree/top.bin", payload(300_000, 1)),
        ("tree/sub/a.txt", b"a\n".to_vec()),
        ("tree/sub/deep/b.bin", payload(1_000_001, 3)),
        ("tree/empty.bin", vec![]),
    ]
}

fn put_tree(a: &FtpServer) {
    for d in ["tree", "tree/sub", "tree/sub/deep", "tree/hollow"] {
        a.put(d, None);
    }
    for (f, data) in tree_files() {
        a.put(f, Some(&data));
    }
}

/// Into a destination whose parents do not exist: every level is made and the tree
/// copied, with exact bytes in `--json`; a rerun with `--skip-existing` copies nothing;
/// a dry run lists and touches nothing; `--delete` removes what the source lacks.
fn mirror_round(src_kind: ServerKind, dst_kind: ServerKind) {
    let (a, b) = (
        FtpServer::start_fxp(src_kind),
        FtpServer::start_fxp(dst_kind),
    );
    put_tree(&a);
    let (src, dst) = (url(&a, "tree"), url(&b, "new/parent/copy"));
    let logs = || format!("{}\n{}", a.log(), b.log());

    let o = run(&["-r", &src, &dst, "--json"]);
    let v = json(&o);
    assert!(o.status.success(), "{v:#}\n{}", logs());
    let total: u64 = tree_files().iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(v["files_copied"], 4, "{v:#}");
    assert_eq!(v["files_failed"], 0, "{v:#}");
    assert_eq!(v["bytes"], total, "{v:#}");
    assert_eq!(v["dirs_created"], 3, "{v:#}");
    assert!(v["seconds"].as_f64().unwrap() > 0.0, "{v:#}");
    assert!(v["method"].is_string(), "{v:#}");
    let deep = record(&v, "sub/deep/b.bin");
    assert_eq!(deep["bytes"], 1_000_001, "{v:#}");
    assert_eq!(deep["result"], "copied", "{v:#}");
    assert!(
        deep["method"].is_string() && deep["error"].is_null(),
        "{v:#}"
    );
    for (f, data) in tree_files() {
        let rel = f.replacen("tree/", "new/parent/copy/", 1);
        assert_eq!(std::fs::read(b.file(&rel)).unwrap(), data, "{rel}");
    }
    assert!(b.file("new/parent/copy/hollow").is_dir());

    // Again with --skip-existing: nothing moves.
    let o = run(&["-r", &src, &dst, "--json", "--skip-existing"]);
    let v = json(&o);
    assert!(o.status.success(), "{v:#}");
    assert_eq!(
        (v["files_copied"].clone(), v["files_skipped"].clone()),
        (0.into(), 4.into()),
        "{v:#}"
    );
    assert_eq!(v["bytes"], 0, "{v:#}");

    // A changed file, a new one, and a stale one at the destination: the dry run names
    // each and changes nothing.
    a.put("tree/sub/a.txt", Some(b"longer now\n"));
    a.put("tree/sub/new.bin", Some(&payload(4096, 5)));
    b.put("new/parent/copy/sub/stale.bin", Some(b"old"));
    let o = run(&["-r", &src, &dst, "--skip-existing", "--delete", "--dry-run"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for line in [
        "would copy   sub/a.txt (11 bytes, size differs)",
        "would copy   sub/new.bin (4096 bytes (4.00 KiB), new at the destination)",
        "would delete sub/stale.bin (not in the source)",
        "skipped      top.bin (same size, not older)",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    assert!(out.contains("dry run: would copy 2 files"), "{out}");
    assert_eq!(
        std::fs::read(b.file("new/parent/copy/sub/a.txt")).unwrap(),
        b"a\n"
    );
    assert!(!b.file("new/parent/copy/sub/new.bin").exists());
    assert!(b.file("new/parent/copy/sub/stale.bin").exists());

    // The same for real.
    let o = run(&["-r", &src, &dst, "--skip-existing", "--delete", "--json"]);
    let v = json(&o);
    assert!(o.status.success(), "{v:#}");
    assert_eq!(
        results(&v),
        pairs(&[
            ("empty.bin", "skipped"),
            ("sub/a.txt", "copied"),
            ("sub/deep/b.bin", "skipped"),
            ("sub/new.bin", "copied"),
            ("sub/stale.bin", "deleted"),
            ("top.bin", "skipped"),
        ]),
        "{v:#}"
    );
    assert_eq!(v["bytes"], 11 + 4096, "{v:#}");
    assert_eq!(
        std::fs::read(b.file("new/parent/copy/sub/a.txt")).unwrap(),
        b"longer now\n"
    );
    assert!(!b.file("new/parent/copy/sub/stale.bin").exists());
}

#[test]
fn mirror_vsftpd_list_to_pyftpdlib() {
    mirror_round(ServerKind::Vsftpd, ServerKind::Pyftpdlib);
}

#[test]
fn mirror_pyftpdlib_mlsd_to_proftpd() {
    mirror_round(ServerKind::Pyftpdlib, ServerKind::Proftpd);
}

/// `--skip-existing` copies a file of the same size again when the destination's copy is
/// older (MDTM on vsftpd's side, MLSD `modify` on pyftpdlib's), and filters pick files.
#[test]
fn skip_existing_compares_times_and_filters_choose() {
    let (a, b) = (
        FtpServer::start_fxp(ServerKind::Vsftpd),
        FtpServer::start_fxp(ServerKind::Pyftpdlib),
    );
    put_tree(&a);
    a.put("tree/sub/notes.tmp", Some(b"tmp"));
    let (src, dst) = (url(&a, "tree"), url(&b, "m"));
    let o = run(&[
        "-r",
        &src,
        &dst,
        "--json",
        "--exclude",
        "deep",
        "--exclude",
        "*.tmp",
    ]);
    let v = json(&o);
    assert!(o.status.success(), "{v:#}");
    assert_eq!(
        results(&v),
        pairs(&[
            ("empty.bin", "copied"),
            ("hollow", "created"),
            ("sub", "created"),
            ("sub/a.txt", "copied"),
            ("top.bin", "copied"),
        ]),
        "{v:#}"
    );
    assert!(!b.file("m/sub/deep").exists());

    // The destination's top.bin made older than the source's: same size, copied again.
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800); // 2000-01-01
    std::fs::File::options()
        .write(true)
        .open(b.file("m/top.bin"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let o = run(&[
        "-r",
        &src,
        &dst,
        "--json",
        "--skip-existing",
        "--include",
        "*.bin",
        "--exclude",
        "deep",
    ]);
    let v = json(&o);
    assert!(o.status.success(), "{v:#}");
    let top = record(&v, "top.bin");
    assert_eq!(
        (top["result"].as_str(), top["reason"].as_str()),
        (Some("copied"), Some("older")),
        "{v:#}"
    );
    assert_eq!(record(&v, "empty.bin")["result"], "skipped", "{v:#}");
    // Not included: not in the report at all.
    assert!(!results(&v).iter().any(|(p, _)| p == "sub/a.txt"), "{v:#}");
}

/// A directory the destination refuses to make fails with the server's reply, and so
/// does everything beneath it; the rest of the tree is copied.
#[test]
fn a_refused_mkd_stops_only_its_subtree() {
    let (a, b) = (
        FtpServer::start_fxp(ServerKind::Vsftpd),
        FtpServer::start_fxp(ServerKind::Pyftpdlib),
    );
    put_tree(&a);
    // A file where the tree's `sub` directory should go.
    b.put("c", None);
    b.put("c/sub", Some(b"in the way"));
    let o = run(&["-r", &url(&a, "tree"), &url(&b, "c"), "--json"]);
    let v = json(&o);
    assert!(!o.status.success(), "{v:#}");
    let sub = record(&v, "sub");
    assert_eq!(sub["result"], "failed", "{v:#}");
    let why = sub["error"].as_str().unwrap();
    assert!(why.contains("MKD") && why.contains("550"), "{why}");
    let beneath = record(&v, "sub/deep/b.bin");
    assert_eq!(beneath["result"], "failed", "{v:#}");
    assert!(
        beneath["error"]
            .as_str()
            .unwrap()
            .contains("directory sub could not be created"),
        "{v:#}"
    );
    assert_eq!(record(&v, "top.bin")["result"], "copied", "{v:#}");
    assert_eq!(
        std::fs::read(b.file("c/top.bin")).unwrap(),
        payload(300_000, 1)
    );
    assert_eq!(v["files_failed"], 4, "{v:#}");
    // The text report says the same, in the server's words.
    let o = run(&["-r", &url(&a, "tree"), &url(&b, "c")]);
    let (out, err) = text(&o);
    assert!(
        out.contains("FAILED       sub/: MKD c/sub refused: 550"),
        "{out}"
    );
    assert!(err.contains("sub/a.txt: not attempted"), "{err}");
}

/// Passwords from a netrc file (source) and the environment (destination): never
/// printed, even in debug logs; `--json` for a single file too.
#[test]
fn passwords_off_the_command_line() {
    let (a, b) = (
        FtpServer::start_fxp(ServerKind::Pyftpdlib),
        FtpServer::start_fxp(ServerKind::Vsftpd),
    );
    let dir = tempfile::tempdir().unwrap();
    let netrc = dir.path().join("netrc");
    std::fs::write(
        &netrc,
        format!(
            "machine {} login {} password {}\n",
            a.addr.ip(),
            a.user,
            a.pass
        ),
    )
    .unwrap();
    let src = format!("ftp://{}@{}/big.bin", a.user, a.addr);
    let dst = format!("ftp://{}@{}/got.bin", b.user, b.addr);
    let o = fxprelay()
        .args([&src, &dst, "--json", "--log", "debug", "--netrc-file"])
        .arg(&netrc)
        .env("FXPRELAY_DST_PASSWORD", b.pass)
        .output()
        .unwrap();
    let v = json(&o);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{v:#}\n{err}");
    assert_eq!(v["files_copied"], 1);
    assert_eq!(v["bytes"], peers::BIG_LEN as u64, "{v:#}");
    assert_eq!(v["files"][0]["result"], "copied");
    assert!(std::fs::read(b.file("got.bin")).unwrap() == peers::big_bin());
    for shown in [&out, &err] {
        assert!(!shown.contains(&format!("PASS {}", a.pass)), "{shown}");
        assert!(!shown.contains(&format!(":{}@", a.pass)), "{shown}");
    }
    assert!(err.contains("credentials"), "{err}");

    // Without any password for the destination's user (and no terminal to ask on), the
    // CLI says where one can come from, before any login.
    let o = fxprelay()
        .args([&src, &dst, "--retries", "0", "--netrc-file"])
        .arg(&netrc)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("needs a password") && err.contains("FXPRELAY_DST_PASSWORD"),
        "{err}"
    );
    // A named netrc file that does not exist is an error of its own.
    let o = run(&[&src, &dst, "--netrc-file", "/nonexistent/netrc"]);
    assert!(
        text(&o)
            .1
            .contains("cannot read the netrc file /nonexistent/netrc")
    );
}

fn sigint(pid: u32) {
    // SAFETY: kill(2) with a pid of a child this test started and has not waited for.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

fn size_of(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Ctrl-C during a copy: both transfers are aborted, the report names the partial file
/// and how many bytes it holds, says how to resume, and the exit code is 130; the resume
/// then completes the file.
#[test]
fn ctrl_c_aborts_reports_and_resumes() {
    // 8 MiB at 1 MiB/s (pyftpdlib's throttle lets some bursts through: a few seconds),
    // stopped after the first bytes.
    let a = slow_server(1024 * 1024);
    let b = FtpServer::start_fxp(ServerKind::Vsftpd);
    let (src, dst) = (url(&a, "big.bin"), url(&b, "part.bin"));
    let child = fxprelay()
        .args(["--log", "fxprelay=debug"])
        .args([&src, &dst])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let part = b.file("part.bin");
    wait_for("the copy to start", || size_of(&part) > 0);
    sigint(child.id());
    let started = Instant::now();
    let o = child.wait_with_output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(130), "{out}\n{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    // Both servers were told (the engine's debug log shows each command it sends).
    for server in [&a, &b] {
        let abor = format!("> ABOR host={}", server.addr);
        assert!(err.contains(&abor), "{abor} missing:\n{err}");
    }
    assert!(err.contains("--resume"), "{err}");
    eprintln!(
        "after Ctrl-C:\n{}",
        err.lines()
            .filter(|l| !l.contains("DEBUG"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let left = size_of(&part);
    assert!(left > 0 && left < peers::BIG_LEN as u64, "{left}");
    // The bytes the destination held once both transfers were aborted (its `SIZE`).
    let said: u64 = err
        .lines()
        .find(|l| l.contains("written when stopped"))
        .and_then(|l| l.split(" bytes (").next())
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in:\n{err}"));
    assert!(
        said > 0 && said <= left,
        "said {said}, file holds {left}\n{err}"
    );

    // The hint works: the rest is copied from where it stopped.
    let o = run(&[&src, &dst, "--resume", "--json"]);
    let v = json(&o);
    assert!(o.status.success(), "{v:#}\n{}", text(&o).1);
    assert!(
        std::fs::read(&part).unwrap() == peers::big_bin(),
        "not whole"
    );

    // A tree: the JSON result says what was interrupted, and the suggested rerun
    // completes it.
    a.put("t", None);
    let files: Vec<Vec<u8>> = (0..3).map(|n| payload(3_000_000, n)).collect();
    for (n, data) in files.iter().enumerate() {
        a.put(&format!("t/f{n}.bin"), Some(data));
    }
    let (src, dst) = (url(&a, "t"), url(&b, "t"));
    let child = fxprelay()
        .args(["-r", &src, &dst, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the tree copy to start", || {
        (0..3).any(|n| size_of(&b.file(format!("t/f{n}.bin"))) > 0)
    });
    sigint(child.id());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o).1);
    let v = json(&o);
    assert_eq!(v["interrupted"], true, "{v:#}");
    assert!(results(&v).iter().any(|(_, r)| r == "interrupted"), "{v:#}");
    assert!(
        text(&o).1.contains("--resume --skip-existing"),
        "{}",
        text(&o).1
    );
    let o = run(&["-r", &src, &dst, "--resume", "--skip-existing", "--json"]);
    let v = json(&o);
    assert!(o.status.success(), "{v:#}");
    for (n, data) in files.iter().enumerate() {
        assert!(
            &std::fs::read(b.file(format!("t/f{n}.bin"))).unwrap() == data,
            "f{n}"
        );
    }
}

/// Stops a tmux server (its own socket) when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// A tmux server of its own (parallel tests do not meet) running `line` in a 150x30
    /// pane; stopped on drop.
    fn start(line: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("fxprelay-test-{}", common::random_u64()),
        };
        let ok = tmux
            .cmd()
            .args(["new-session", "-d", "-s", "t", "-x", "150", "-y", "30"])
            .arg(line)
            .status()
            .unwrap();
        assert!(ok.success());
        tmux
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn pane(&self) -> String {
        let o = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// On a terminal (a tmux pane, captured as text) a tree shows one overall line (files
/// done/total, bytes done/total, rate, ETA) and a line per file in flight, below the log
/// lines, which never break into them.
#[test]
fn a_tree_on_a_terminal_shows_an_overall_bar_and_live_files() {
    // Four files of 800 KB at 100 KB/s (some bursts get through), two at a time:
    // several seconds of bars.
    let a = slow_server(100_000);
    let b = FtpServer::start_fxp(ServerKind::Vsftpd);
    a.put("t", None);
    for n in 0..4 {
        a.put(&format!("t/file-{n}.bin"), Some(&payload(800_000, n)));
    }
    let line = format!(
        // Debug logging: every command a line, which must go above the bars.
        "{} -c /nonexistent/fxprelay.yaml --log fxprelay=debug fxp -r {} {}; echo EXIT=$?; sleep 600",
        env!("CARGO_BIN_EXE_fxprelay"),
        url(&a, "t"),
        url(&b, "t2")
    );
    let tmux = Tmux::start(&line);
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let pane = tmux.pane();
        let overall = pane
            .lines()
            .find(|l| l.starts_with("files ") && l.contains("ETA"));
        // A file's line once its size is known: `file-1.bin [==> ] 195.31 KiB/781.25 KiB`.
        let live = pane.lines().find(|l| {
            l.trim_start().starts_with("file-") && l.contains('[') && l.contains("/781.25 KiB")
        });
        if let (Some(o), Some(f)) = (overall, live) {
            // Rate and sizes in IEC units once bytes have moved.
            if o.contains("iB/s") && !o.contains("] 0 B/") {
                break (pane.clone(), o.to_owned(), f.to_owned());
            }
        }
        assert!(
            Instant::now() < deadline && !pane.contains("EXIT="),
            "no bars seen:\n{pane}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (pane, overall, live) = seen;
    eprintln!("captured pane:\n{pane}");
    assert!(overall.contains("/4 ["), "{pane}");
    assert!(overall.contains("/3.05 MiB"), "{pane}");
    assert!(overall.contains("KiB") || overall.contains("MiB"), "{pane}");
    assert!(live.contains("KiB") || live.contains(" B"), "{pane}");
    // One overall line only, whatever the redraws and the log lines, and the bars last.
    assert_eq!(pane.matches("ETA").count(), 1, "{pane}");
    let lines: Vec<&str> = pane.lines().filter(|l| !l.trim().is_empty()).collect();
    let at = lines.iter().position(|l| l.starts_with("files ")).unwrap();
    assert!(
        lines[..at].iter().any(|l| l.contains("DEBUG")),
        "no log lines above:\n{pane}"
    );
    assert!(
        lines[at + 1..]
            .iter()
            .all(|l| l.trim_start().starts_with("file-")),
        "something else below the overall bar:\n{pane}"
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let pane = loop {
        let pane = tmux.pane();
        if pane.contains("EXIT=") {
            break pane;
        }
        assert!(Instant::now() < deadline, "the copy did not end:\n{pane}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(pane.contains("EXIT=0"), "{pane}");
    assert!(pane.contains("copied 4 files"), "{pane}");
    // The bars are gone once the summary is printed.
    assert!(!pane.contains("ETA"), "{pane}");
    for n in 0..4 {
        assert_eq!(
            std::fs::read(b.file(format!("t2/file-{n}.bin"))).unwrap(),
            payload(800_000, n)
        );
    }
}

/// A URL naming a user but no password, on a terminal: the password is asked for, not
/// echoed, and the copy goes on.
#[test]
fn a_missing_password_is_asked_on_the_terminal() {
    let (a, b) = (
        FtpServer::start_fxp(ServerKind::Pyftpdlib),
        FtpServer::start_fxp(ServerKind::Vsftpd),
    );
    let line = format!(
        "NETRC=/nonexistent {} -c /nonexistent/fxprelay.yaml fxp ftp://{}@{}/{} {}; echo EXIT=$?; sleep 600",
        env!("CARGO_BIN_EXE_fxprelay"),
        a.user,
        a.addr,
        peers::HELLO_NAME,
        url(&b, "asked.txt")
    );
    let tmux = Tmux::start(&line);
    let prompt = format!("Password for {}@{}: ", a.user, a.addr);
    wait_for("the password prompt", || {
        tmux.pane().contains(prompt.trim_end())
    });
    // The prompt is written just before echo is turned off: type once the terminal says
    // it is off (`-echo`), as a person reading the prompt would.
    let tty = tmux
        .cmd()
        .args(["display", "-p", "-t", "t", "#{pane_tty}"])
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&tty.stdout).trim().to_owned();
    wait_for("echo off on the pane's terminal", || {
        let stty = Command::new("stty")
            .args(["-a", "-F", &tty])
            .output()
            .unwrap();
        String::from_utf8_lossy(&stty.stdout)
            .split_whitespace()
            .any(|w| w == "-echo")
    });
    let typed = tmux
        .cmd()
        .args(["send-keys", "-t", "t", a.pass, "Enter"])
        .status()
        .unwrap();
    assert!(typed.success());
    wait_for("the copy to end", || tmux.pane().contains("EXIT="));
    let pane = tmux.pane();
    assert!(pane.contains("EXIT=0"), "{pane}");
    assert!(pane.contains("copied"), "{pane}");
    // Never echoed: the pane shows the user's name only in the prompt and the URLs.
    assert!(!pane.contains(&format!(": {}", a.pass)), "{pane}");
    assert!(
        !pane.contains(&format!("{}{}", prompt.trim_end(), a.pass)),
        "{pane}"
    );
    assert_eq!(std::fs::read(b.file("asked.txt")).unwrap(), peers::HELLO);
}

/// On a terminal a single file's bar is labelled with the file's name, not its URL cut
/// to the bar's width.
#[test]
fn a_single_file_bar_is_labelled_by_its_name() {
    let a = slow_server(100_000);
    let b = FtpServer::start_fxp(ServerKind::Vsftpd);
    a.put("slow-one.bin", Some(&payload(800_000, 7)));
    let line = format!(
        "{} -c /nonexistent/fxprelay.yaml fxp {} {}; echo EXIT=$?; sleep 600",
        env!("CARGO_BIN_EXE_fxprelay"),
        url(&a, "slow-one.bin"),
        url(&b, "copy.bin")
    );
    let tmux = Tmux::start(&line);
    let deadline = Instant::now() + Duration::from_secs(60);
    let bar = loop {
        let pane = tmux.pane();
        if let Some(l) = pane
            .lines()
            .find(|l| l.contains('[') && l.contains("/781.25 KiB"))
        {
            break l.to_owned();
        }
        assert!(
            Instant::now() < deadline && !pane.contains("EXIT="),
            "no bar seen:\n{pane}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        bar.trim_start().starts_with("slow-one.bin") && !bar.contains("ftp://"),
        "{bar}"
    );
    wait_for("the copy to end", || tmux.pane().contains("EXIT="));
    assert!(tmux.pane().contains("EXIT=0"), "{}", tmux.pane());
}
