//! `SITE FXP` through a proxied session, driven by Python ftplib's `sendcmd` (a plain
//! client with no FXP support of its own) against two real servers that allow FXP; and,
//! with a raw control connection, what the session answers while a slow copy runs:
//! `STAT`, `ABOR` and the proxy's shutdown.

mod common;

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::clients;
use common::control::Control;
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::{ListenerSpec, Proxy};
use common::{connections_from_outside, unique_loopback_ip, wait_for};

/// Logs in through the proxy with ftplib and runs `commands`; a command ending in `+`
/// expects a preliminary reply and reads the final one too. Prints every reply.
fn ftplib_site(proxy: &Proxy, commands: &[&str]) -> clients::ClientResult {
    let script = r#"
import ftplib, sys
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ftp = ftplib.FTP()
ftp.connect(host, port, timeout=60)
ftp.login(user, password)
for cmd in sys.argv[5:]:
    wait = cmd.endswith("+")
    cmd = cmd.rstrip("+")
    try:
        print(ftp.sendcmd(cmd))
        if wait:
            print(ftp.voidresp())
    except ftplib.Error as e:
        print("ERR", e)
ftp.quit()
"#;
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("-c")
        .arg(script)
        .arg(proxy.addr.ip().to_string())
        .arg(proxy.addr.port().to_string())
        .arg(peers::USER)
        .arg(peers::PASS)
        .args(commands);
    clients::run(cmd, Duration::from_secs(90))
}

#[test]
fn site_fxp_put_get_status_help_and_failures() {
    let a = FtpServer::start_fxp(ServerKind::Vsftpd);
    let b = FtpServer::start_fxp(ServerKind::Pyftpdlib);
    let mut spec = ListenerSpec::new(a.addr);
    spec.data = "relay";
    let proxy = Proxy::start_with(
        unique_loopback_ip(),
        spec,
        &format!("fxp:\n  allow: [\"{}/32\"]\n", b.addr.ip()),
    );
    let to_b = format!(
        "SITE FXP TO ftp://{}:{}@{}/",
        peers::USER,
        peers::PASS,
        b.addr
    );

    let r = ftplib_site(
        &proxy,
        &[
            "FEAT",
            "HELP",
            &to_b,
            "SITE FXP PUT big.bin copy.bin+",
            "SITE FXP GET copy.bin back.bin+",
            // Into directories that do not exist yet: they are made first.
            "SITE FXP PUT big.bin made/by/site.bin+",
            "SITE FXP STATUS",
            "SITE FXP PUT missing.bin x.bin+",
        ],
    );
    assert!(r.ok(), "{r}\n{}", proxy.log());
    let out = &r.stdout;
    assert!(
        out.contains("SITE FXP"),
        "FEAT/HELP list the commands: {out}"
    );
    assert!(out.contains("200 FXP destination set to"), "{out}");
    // Each successful copy has its line in the log, like the session's own transfers.
    wait_for("the copies' log lines", || {
        proxy.log().matches("SITE FXP copy done").count() >= 3
    });
    assert!(std::fs::read(b.file("made/by/site.bin")).unwrap() == peers::big_bin());
    assert!(
        !out.contains(&format!(":{}@", peers::PASS)),
        "password echoed: {out}"
    );
    assert!(
        out.contains("226 FXP copy done") && out.contains("by fxp"),
        "{out}"
    );
    assert!(
        std::fs::read(b.file("copy.bin")).unwrap() == peers::big_bin(),
        "A to B"
    );
    assert!(
        std::fs::read(a.file("back.bin")).unwrap() == peers::big_bin(),
        "B to A"
    );
    assert!(out.contains("Last copy: FXP copy done"), "{out}");
    let failure = out.lines().last().unwrap_or("");
    assert!(
        failure.starts_with("ERR 5") && failure.contains("missing.bin"),
        "the server's words: {out}"
    );
    // The servers moved the bytes; the proxy's data relay carried none.
    assert_eq!(proxy.metric("fxprelay_data_bytes_total", &[]), 0.0);

    // `SITE FXP TO` is checked at once: outside fxp.allow (530, and no destination is
    // left chosen for the PUT), a wrong password (530, B's words), nothing listening at
    // an allowed address (451: temporary).
    let outside = format!(
        "SITE FXP TO ftp://x:y@{}:{}/",
        unique_loopback_ip(),
        b.addr.port()
    );
    let wrong = format!("SITE FXP TO ftp://{}:wrong@{}/", peers::USER, b.addr);
    let closed = std::net::SocketAddr::new(b.addr.ip(), common::free_port(b.addr.ip()));
    let down = format!(
        "SITE FXP TO ftp://{}:{}@{closed}/",
        peers::USER,
        peers::PASS
    );
    let r = ftplib_site(
        &proxy,
        &[&outside, "SITE FXP PUT big.bin z.bin+", &wrong, &down],
    );
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines.len() == 4
            && lines[0].starts_with("ERR 530 Not an FXP destination")
            && lines[0].contains("not in fxp.allow"),
        "{r}"
    );
    assert!(
        lines[1].starts_with("ERR 503 Choose the other server first"),
        "{r}"
    );
    assert!(
        lines[2].starts_with("ERR 530 FXP destination") && lines[2].contains("PASS refused: 530"),
        "{r}"
    );
    assert!(
        lines[3].starts_with("ERR 451 FXP destination") && lines[3].contains("cannot connect"),
        "{r}"
    );
    assert!(!b.file("z.bin").exists());
}

/// Outside `fxp.allow`: `530` at once, before any connection to that address (a
/// listener there sees none).
#[test]
fn site_fxp_to_outside_the_allow_list_answers_530_without_connecting() {
    let a = FtpServer::start_fxp(ServerKind::Vsftpd);
    let outside_ip = unique_loopback_ip();
    let outside = std::net::TcpListener::bind((outside_ip, 0)).unwrap();
    outside.set_nonblocking(true).unwrap();
    let proxy = Proxy::start(unique_loopback_ip(), ListenerSpec::new(a.addr));
    let mut c = Control::login(proxy.addr);
    let to = format!(
        "SITE FXP TO ftp://u:p@{}/in/",
        outside.local_addr().unwrap()
    );
    let r = c.cmd_expect(&to, 530);
    assert!(
        r.starts_with("530 Not an FXP destination:") && r.contains("not in fxp.allow"),
        "{r}"
    );
    assert!(
        matches!(outside.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the proxy connected to a destination it refused"
    );
    c.cmd_expect("SITE FXP PUT big.bin", 503);
    c.cmd_expect("QUIT", 221);
}

/// `SITE FXP PUT -r` and `GET -r` copy directory trees, every file intact, with the same
/// tree copy as `fxprelay fxp -r`.
#[test]
fn site_fxp_put_and_get_r_copy_trees() {
    let a = FtpServer::start_fxp(ServerKind::Vsftpd);
    let b = FtpServer::start_fxp(ServerKind::Pyftpdlib);
    let files: [(&str, Vec<u8>); 3] = [
        (
            "tree/top.bin",
            (0..300_000u32).map(|i| (i % 251) as u8).collect(),
        ),
        ("tree/sub/a.txt", b"a\n".to_vec()),
        ("tree/sub/deeper/with space.bin", vec![7u8; 70_000]),
    ];
    let owner = std::fs::metadata(&a.root).unwrap();
    for dir in ["tree", "tree/sub", "tree/sub/deeper"] {
        std::fs::create_dir(a.file(dir)).unwrap();
        std::os::unix::fs::chown(a.file(dir), Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    for (rel, data) in &files {
        std::fs::write(a.file(rel), data).unwrap();
        std::os::unix::fs::chown(a.file(rel), Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    let proxy = Proxy::start_with(
        unique_loopback_ip(),
        ListenerSpec::new(a.addr),
        &format!("fxp:\n  allow: [\"{}/32\"]\n", b.addr.ip()),
    );
    let to_b = format!(
        "SITE FXP TO ftp://{}:{}@{}/",
        peers::USER,
        peers::PASS,
        b.addr
    );
    let r = ftplib_site(
        &proxy,
        &[
            &to_b,
            "SITE FXP PUT -r tree copied+",
            "SITE FXP GET -r copied back+",
        ],
    );
    assert!(r.ok(), "{r}\n{}", proxy.log());
    assert!(
        r.stdout
            .contains("226 FXP tree copied 3 files in 2 directories"),
        "{r}"
    );
    for (rel, data) in &files {
        let rel = rel.strip_prefix("tree/").unwrap();
        assert_eq!(
            &std::fs::read(b.file(format!("copied/{rel}"))).unwrap(),
            data,
            "A to B: {rel}"
        );
        assert_eq!(
            &std::fs::read(a.file(format!("back/{rel}"))).unwrap(),
            data,
            "B to A: {rel}"
        );
    }
    assert_eq!(proxy.metric("fxprelay_data_bytes_total", &[]), 0.0);
}

/// Before login `SITE FXP` is refused by the proxy itself: never forwarded to the server,
/// and the destination's password never logged (the test proxy logs at debug level).
#[test]
fn site_fxp_before_login_is_refused_and_its_password_kept_secret() {
    let a = FtpServer::start_fxp(ServerKind::Vsftpd);
    let proxy = Proxy::start(unique_loopback_ip(), ListenerSpec::new(a.addr));
    let mut c = common::control::Control::connect(proxy.addr);
    c.expect(220);
    c.cmd_expect("SITE FXP TO ftp://bob:Sekr1tPw@127.0.0.1/", 530);
    c.cmd_expect(&format!("USER {}", peers::USER), 331);
    c.cmd_expect(&format!("PASS {}", peers::PASS), 230);
    // Outside fxp.allow (none is set): refused at once, the password still unlogged.
    c.cmd_expect("SITE FXP TO ftp://bob:Sekr1tPw@127.0.0.1/", 530);
    c.cmd_expect("QUIT", 221);
    let logs = format!("{}\n{}", proxy.log(), a.log());
    assert!(!logs.contains("Sekr1tPw"), "{logs}");
}

/// How long the session may take to answer a command while a copy runs: "at once", with
/// room for a busy machine, and far shorter than any copy below.
const PROMPT: Duration = Duration::from_secs(5);

/// A copy through `SITE FXP PUT` that is slow enough to act on while it runs.
struct SlowCopy {
    /// Throttled pyftpdlib, the proxy's upstream: the source of `big.bin`.
    a: FtpServer,
    /// pyftpdlib: the destination, receiving `copy.bin`.
    b: FtpServer,
    proxy: Proxy,
    /// Logged in to A through the proxy; `SITE FXP PUT` sent and its `150` read.
    c: Control,
}

impl SlowCopy {
    /// Starts A (sending at `rate` bytes/s on every data connection), B and a proxy to A
    /// allowing B, with `extra_yaml` added to its config; logs in, chooses B and starts
    /// copying `big.bin` to `copy.bin`.
    fn start(rate: u32, extra_yaml: &str) -> SlowCopy {
        let server = |throttle| {
            let mut opts = ServerOptions::new(unique_loopback_ip());
            opts.foreign_data = true;
            opts.throttle = throttle;
            FtpServer::start(ServerKind::Pyftpdlib, opts)
        };
        let (a, b) = (server(Some(rate)), server(None));
        let proxy = Proxy::start_with(
            unique_loopback_ip(),
            ListenerSpec::new(a.addr),
            &format!("fxp:\n  allow: [\"{}/32\"]\n{extra_yaml}", b.addr.ip()),
        );
        let mut c = Control::login(proxy.addr);
        c.cmd_expect(
            &format!(
                "SITE FXP TO ftp://{}:{}@{}/",
                peers::USER,
                peers::PASS,
                b.addr
            ),
            200,
        );
        c.send(b"SITE FXP PUT big.bin copy.bin\r\n");
        let r = c
            .reply_within(PROMPT)
            .unwrap_or_else(|e| panic!("SITE FXP PUT: no 150 at once: {e}\n{}", proxy.log()));
        assert!(r.starts_with("150 Copying"), "{r}");
        SlowCopy { a, b, proxy, c }
    }

    fn ips(&self) -> [Ipv4Addr; 2] {
        let ip = |s: &FtpServer| match s.addr.ip() {
            std::net::IpAddr::V4(ip) => ip,
            other => panic!("IPv4 test servers only: {other}"),
        };
        [ip(&self.a), ip(&self.b)]
    }

    /// How many established connections from outside A and B each server holds (from
    /// the proxy, as nothing else connects to them).
    fn connections(&self) -> (usize, usize) {
        let conns = connections_from_outside(&self.ips());
        let at = |s: &FtpServer| {
            conns
                .iter()
                .filter(|(local, _)| std::net::IpAddr::V4(*local.ip()) == s.addr.ip())
                .count()
        };
        (at(&self.a), at(&self.b))
    }

    /// Bytes of the copy at B so far.
    fn copied(&self) -> u64 {
        std::fs::metadata(self.b.file("copy.bin")).map_or(0, |m| m.len())
    }

    /// Waits until bytes arrive at B and both servers see the copy's logins: the copy
    /// runs. A holds the client's own session and the copy's login, B the copy's.
    fn wait_running(&self) {
        wait_for("the copy to start arriving at B", || self.copied() > 0);
        let (at_a, at_b) = self.connections();
        assert!(
            at_a >= 2 && at_b >= 1,
            "connections from the proxy during the copy: {at_a} at A, {at_b} at B: {:?}",
            connections_from_outside(&self.ips())
        );
    }

    fn logs(&self) -> String {
        format!("{}\n{}\n{}", self.proxy.log(), self.a.log(), self.b.log())
    }
}

/// What `STAT` says during a copy:
/// `211-FXP copy in progress: <src> to <dst>.\r\n <N> bytes so far[ of <TOTAL>].\r\n211 End\r\n`.
#[derive(Debug)]
struct Progress {
    src: String,
    dst: String,
    bytes: u64,
    total: Option<u64>,
}

fn parse_progress(r: &str) -> Result<Progress, String> {
    let bad = |why: &str| format!("{why}: {r:?}");
    let lines: Vec<&str> = r
        .strip_suffix("\r\n")
        .ok_or_else(|| bad("not CRLF-terminated"))?
        .split("\r\n")
        .collect();
    let [head, count, end] = lines[..] else {
        return Err(bad("not three lines"));
    };
    if end != "211 End" {
        return Err(bad("last line not `211 End`"));
    }
    let (src, dst) = head
        .strip_prefix("211-FXP copy in progress: ")
        .and_then(|h| h.strip_suffix('.'))
        .and_then(|h| h.split_once(" to "))
        .ok_or_else(|| bad("first line not `211-FXP copy in progress: <src> to <dst>.`"))?;
    let words: Vec<&str> = count
        .strip_prefix(' ')
        .and_then(|c| c.strip_suffix('.'))
        .ok_or_else(|| bad("second line not ` <N> bytes so far[ of <TOTAL>].`"))?
        .split(' ')
        .collect();
    let number = |w: &str| w.parse::<u64>().map_err(|_| bad("not a byte count"));
    let (bytes, total) = match words[..] {
        [n, "bytes", "so", "far"] => (number(n)?, None),
        [n, "bytes", "so", "far", "of", t] => (number(n)?, Some(number(t)?)),
        _ => return Err(bad("second line not ` <N> bytes so far[ of <TOTAL>].`")),
    };
    Ok(Progress {
        src: src.to_string(),
        dst: dst.to_string(),
        bytes,
        total,
    })
}

#[test]
fn stat_progress_replies_parse() {
    let p = parse_progress(
        "211-FXP copy in progress: ftp://u:***@h:21/a to ftp://u:***@k/b.\r\n 5 bytes so far of 9.\r\n211 End\r\n",
    )
    .unwrap();
    assert_eq!(
        (p.src.as_str(), p.dst.as_str(), p.bytes, p.total),
        ("ftp://u:***@h:21/a", "ftp://u:***@k/b", 5, Some(9))
    );
    let p = parse_progress(
        "211-FXP copy in progress: ftp://h/a to ftp://k/b.\r\n 0 bytes so far.\r\n211 End\r\n",
    )
    .unwrap();
    assert_eq!((p.bytes, p.total), (0, None));
    for bad in [
        "211-FTP server status:\r\n Connected.\r\n211 End of status.\r\n",
        "211-FXP copy in progress: ftp://h/a to ftp://k/b.\r\n 5 bytes.\r\n211 End\r\n",
        "211 FXP copy in progress: ftp://h/a to ftp://k/b.\r\n",
    ] {
        assert!(parse_progress(bad).is_err(), "{bad}");
    }
}

/// `STAT` while the copy runs, answered at once.
fn stat_progress(copy: &mut SlowCopy) -> Progress {
    copy.c.send(b"STAT\r\n");
    let r = copy.c.reply_within(PROMPT).unwrap_or_else(|e| {
        panic!(
            "STAT during the copy: not answered within {PROMPT:?}: {e}\n{}",
            copy.logs()
        )
    });
    parse_progress(&r).unwrap_or_else(|e| panic!("STAT during the copy: {e}"))
}

/// `STAT` during a copy is the proxy's own progress report, at once, with the bytes
/// growing as the destination's `SIZE` does; the copy still ends with `226`, intact, and
/// `STAT` after it goes to the server again.
#[test]
fn stat_during_site_fxp_put_reports_progress() {
    // 8 MiB at 1 MiB/s: about eight seconds.
    let mut copy = SlowCopy::start(1024 * 1024, "");
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let p = stat_progress(&mut copy);
        if p.bytes > 0 {
            break p;
        }
        assert!(Instant::now() < deadline, "no progress reported: {p:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (a, b) = (copy.a.addr, copy.b.addr);
    assert!(
        first.src.starts_with("ftp://")
            && first.src.contains(&a.to_string())
            && first.src.ends_with("/big.bin"),
        "source is A's big.bin: {first:?}"
    );
    assert!(
        first.dst.starts_with("ftp://")
            && first.dst.contains(&b.to_string())
            && first.dst.ends_with("/copy.bin"),
        "destination is B's copy.bin: {first:?}"
    );
    for url in [&first.src, &first.dst] {
        assert!(
            !url.contains(&format!(":{}@", peers::PASS)),
            "password shown: {url}"
        );
    }
    let len = peers::BIG_LEN as u64;
    assert!(first.bytes <= len, "{first:?}");
    assert!(
        first.total.is_none_or(|t| t == len),
        "the total is big.bin's size: {first:?}"
    );
    // The count follows the copy.
    let grown = loop {
        let p = stat_progress(&mut copy);
        if p.bytes > first.bytes {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the byte count did not grow past {}: {p:?}",
            first.bytes
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(grown.bytes <= len, "{grown:?}");
    assert_eq!((&grown.src, &grown.dst), (&first.src, &first.dst));

    let done = copy.c.expect(226);
    assert!(done.contains("FXP copy done"), "{done}");
    assert!(
        std::fs::read(copy.b.file("copy.bin")).unwrap() == peers::big_bin(),
        "the copy is intact"
    );
    let after = copy.c.cmd_expect("STAT", 211);
    assert!(
        !after.contains("FXP copy in progress"),
        "STAT after the copy is the server's: {after}"
    );
    copy.c.cmd_expect("QUIT", 221);
}

/// `ABOR` during a copy cancels it: `426` ends `SITE FXP PUT`, `226` answers `ABOR`, the
/// copy's connections to both servers close, and the session goes on.
#[test]
fn abor_during_site_fxp_put_cancels_the_copy() {
    // 8 MiB at 256 KiB/s: half a minute, far longer than the test needs.
    let mut copy = SlowCopy::start(256 * 1024, "");
    copy.wait_running();
    copy.c.send(b"ABOR\r\n");
    for (code, of) in [("426", "SITE FXP PUT"), ("226", "ABOR")] {
        let r = copy.c.reply_within(PROMPT);
        assert!(
            r.as_ref().is_ok_and(|r| r.starts_with(code)),
            "ABOR during the copy: expected {code} ({of}) within {PROMPT:?}, got {r:?}\n{}",
            copy.logs()
        );
    }
    copy.c.cmd_expect("NOOP", 200);
    copy.c.cmd_expect("PWD", 257);
    wait_for("the copy's connections to close", || {
        copy.connections() == (1, 0)
    });
    let got = copy.copied();
    assert!(
        got < peers::BIG_LEN as u64,
        "the copy finished anyway: {got} bytes"
    );
    copy.c.cmd_expect("PWD", 257);
    copy.c.cmd_expect("QUIT", 221);
    let cancelled = copy.proxy.metric(
        "fxprelay_fxp_transfers_total",
        &[("result", "cancelled"), ("method", "fxp")],
    );
    assert_eq!(cancelled, 1.0, "the cancelled copy is counted");
}

/// SIGTERM during a copy: the session gets `421` when the drain deadline ends (plus a
/// margin), the proxy exits, and no upstream session is left at either server.
#[test]
fn sigterm_during_site_fxp_put_says_421_and_leaves_no_upstream_session() {
    let grace = Duration::from_secs(2);
    let mut copy = SlowCopy::start(
        256 * 1024,
        &format!("limits:\n  shutdown_grace: {}s\n", grace.as_secs()),
    );
    copy.wait_running();
    unsafe { libc::kill(copy.proxy.pid() as i32, libc::SIGTERM) };
    let sent = Instant::now();
    let deadline = sent + grace + Duration::from_secs(3);
    let mut seen = Vec::new();
    loop {
        match copy
            .c
            .reply_within(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(r) if r.starts_with("421") => break,
            Ok(r) => seen.push(r),
            Err(e) => panic!(
                "SIGTERM during the copy: no 421 within {:?} (drain deadline {grace:?} + 3 s): {e}; before it: {seen:?}\n{}",
                deadline - sent,
                copy.logs()
            ),
        }
    }
    assert!(copy.c.closed(), "the session closes after its 421");
    wait_for("no connection from the proxy left at A or B", || {
        copy.connections() == (0, 0)
    });
    let status = copy
        .proxy
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the proxy did not exit\n{}", copy.logs()));
    assert!(status.success(), "{status}\n{}", copy.logs());
    // The session obeyed the hard stop rather than being dropped with the runtime.
    let log = copy.proxy.log();
    assert!(!log.contains("sessions did not close in time"), "{log}");
    assert_eq!(
        copy.connections(),
        (0, 0),
        "{:?}",
        connections_from_outside(&copy.ips())
    );
}
