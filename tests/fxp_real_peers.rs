//! The FXP engine against real servers on their own loopback addresses: standard FXP
//! (the bytes never cross fxprelay), reverse FXP, relay fallback, a tree, failures with
//! the server's text, and the `fxprelay fxp` command; and, against a scripted fake server
//! (no real one misbehaves on purpose), a `227` aiming the other server elsewhere.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::{payload, unique_loopback_ip};
use fxprelay::fxp::job::Failure;
use fxprelay::fxp::{self, EngineOptions, FtpUrl, Method};

fn server(kind: ServerKind, tweak: impl FnOnce(&mut ServerOptions)) -> FtpServer {
    let mut opts = ServerOptions::new(unique_loopback_ip());
    tweak(&mut opts);
    FtpServer::start(kind, opts)
}

fn url(s: &FtpServer, path: &str) -> FtpUrl {
    let text = format!(
        "ftp://{}:{}@{}:{}/{path}",
        s.user,
        s.pass,
        s.addr.ip(),
        s.addr.port()
    );
    FtpUrl::parse(&text).unwrap()
}

fn opts() -> EngineOptions {
    EngineOptions {
        timeout: Duration::from_secs(10),
        retries: 0,
        // Shown with a failing test: why a method was given up.
        progress: Some(std::sync::Arc::new(|e: &fxp::FileEvent| {
            if let fxp::FileEvent::MethodFailed { .. } | fxp::FileEvent::Retrying { .. } = e {
                eprintln!("{e:?}");
            }
        })),
        ..EngineOptions::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn copy(src: &FtpUrl, dst: &FtpUrl, o: &EngineOptions) -> Result<fxp::Report, Failure> {
    let order = fxp::Order::File {
        src: src.clone(),
        dst: dst.clone(),
        skip_existing: false,
    };
    rt().block_on(common::run_job(order, o.clone()))
        .outcome()
        .expect("a finished job has an outcome")
        .cloned()
}

fn logs(a: &FtpServer, b: &FtpServer) -> String {
    format!("{}\n{}", a.log(), b.log())
}

fn assert_big_copied(dst: &FtpServer, name: &str) {
    let got = std::fs::read(dst.file(name)).unwrap_or_default();
    assert!(
        got == peers::big_bin(),
        "{name} differs: {} bytes of {}",
        got.len(),
        peers::BIG_LEN
    );
}

fn standard_fxp(src_kind: ServerKind, dst_kind: ServerKind) {
    let a = FtpServer::start_fxp(src_kind);
    let b = FtpServer::start_fxp(dst_kind);
    let r = copy(&url(&a, "big.bin"), &url(&b, "copy.bin"), &opts())
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&a, &b)));
    assert_eq!(r.method, Method::Fxp, "{r:?}");
    // Proof the bytes went server to server: the engine carried none.
    assert_eq!(r.relayed_bytes, 0);
    assert_eq!(r.bytes, peers::BIG_LEN as u64);
    assert_eq!(r.verified, fxp::engine::Check::Size, "{r:?}");
    assert_big_copied(&b, "copy.bin");
    eprintln!(
        "standard FXP {} -> {}: 8 MiB in {:?}",
        src_kind.name(),
        dst_kind.name(),
        r.duration
    );
}

/// IPv6 servers: FXP with `EPSV` and `EPRT` (RFC 2428), as `PASV`/`PORT` cannot name them.
#[test]
fn standard_fxp_between_ipv6_servers() {
    let (a, b) = (peers::V6Pyftpd::start(), peers::V6Pyftpd::start());
    let url = |s: &peers::V6Pyftpd, path: &str| {
        // An IPv6 SocketAddr displays as `[::1]:port`, the URL form.
        FtpUrl::parse(&format!(
            "ftp://{}:{}@{}/{path}",
            peers::USER,
            peers::PASS,
            s.addr
        ))
        .unwrap()
    };
    let r = copy(&url(&a, "big.bin"), &url(&b, "copy.bin"), &opts()).unwrap();
    assert_eq!(r.method, Method::Fxp, "{r:?}");
    assert_eq!(r.relayed_bytes, 0);
    assert_eq!(r.verified, fxp::engine::Check::Size, "{r:?}");
    let got = std::fs::read(b.root.path().join("copy.bin")).unwrap();
    assert!(got == peers::big_bin(), "copy differs: {} bytes", got.len());
}

/// One file under two spellings of the server's address is still one file: refused
/// before `STOR` could truncate it.
#[test]
fn the_same_file_under_another_address_spelling_is_refused() {
    let a = peers::V6Pyftpd::start();
    let port = a.addr.port();
    let spelled = |host: &str| {
        FtpUrl::parse(&format!(
            "ftp://{}:{}@[{host}]:{port}/big.bin",
            peers::USER,
            peers::PASS
        ))
        .unwrap()
    };
    let e = copy(&spelled("::1"), &spelled("0:0:0:0:0:0:0:1"), &opts()).unwrap_err();
    assert!(e.to_string().contains("same file"), "{e}");
    let kept = std::fs::read(a.root.path().join("big.bin")).unwrap();
    assert!(kept == peers::big_bin(), "the file was touched");
}

#[test]
fn standard_fxp_vsftpd_to_pyftpdlib() {
    standard_fxp(ServerKind::Vsftpd, ServerKind::Pyftpdlib);
}

#[test]
fn standard_fxp_pyftpdlib_to_vsftpd() {
    standard_fxp(ServerKind::Pyftpdlib, ServerKind::Vsftpd);
}

#[test]
fn reverse_fxp_when_the_source_refuses_pasv() {
    let a = server(ServerKind::Vsftpd, |o| {
        o.foreign_data = true;
        o.passive = false;
    });
    let b = FtpServer::start_fxp(ServerKind::Pyftpdlib);
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    let o = EngineOptions {
        progress: Some(std::sync::Arc::new(move |e: &fxp::FileEvent| {
            seen.lock().unwrap().push(format!("{e:?}"));
        })),
        ..opts()
    };
    let r = copy(&url(&a, "big.bin"), &url(&b, "rev.bin"), &o)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&a, &b)));
    assert_eq!(r.method, Method::ReverseFxp, "{r:?}");
    assert_eq!(r.relayed_bytes, 0);
    assert_big_copied(&b, "rev.bin");
    let events = events.lock().unwrap().join("\n");
    // The source's own refusal is what made the engine turn around.
    assert!(events.contains("MethodFailed { method: Fxp"), "{events}");
    assert!(events.contains("PASV"), "{events}");

    // Asked for explicitly, reverse FXP is the first method.
    let b2 = FtpServer::start_fxp(ServerKind::Vsftpd);
    let a2 = FtpServer::start_fxp(ServerKind::Pyftpdlib);
    let o = EngineOptions {
        reverse: true,
        ..opts()
    };
    let r = copy(&url(&a2, "big.bin"), &url(&b2, ""), &o)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&a2, &b2)));
    assert_eq!(r.method, Method::ReverseFxp);
    assert_big_copied(&b2, "big.bin");
}

#[test]
fn relay_fallback_when_the_destination_refuses_foreign_peers() {
    let a = FtpServer::start_fxp(ServerKind::Vsftpd);
    // A default vsftpd: "500 Illegal PORT command." and "425 Security: Bad IP connecting."
    let b = server(ServerKind::Vsftpd, |_| {});
    let started = Instant::now();
    let r = copy(&url(&a, "big.bin"), &url(&b, "relayed.bin"), &opts())
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&a, &b)));
    assert_eq!(r.method, Method::Relay, "{r:?}");
    assert_eq!(r.relayed_bytes, peers::BIG_LEN as u64);
    assert_eq!(r.verified, fxp::engine::Check::Size, "{r:?}");
    assert_big_copied(&b, "relayed.bin");
    eprintln!(
        "relay fallback vsftpd -> vsftpd: 8 MiB in {:?}",
        started.elapsed()
    );

    // Without the fallback the copy fails, naming the destination's refusal.
    let o = EngineOptions {
        relay_fallback: false,
        ..opts()
    };
    let e = copy(&url(&a, "big.bin"), &url(&b, "never.bin"), &o).unwrap_err();
    let text = e.to_string();
    // Both methods' reasons, in the servers' own words.
    assert!(text.contains("fxp: destination"), "{text}");
    assert!(text.contains("Illegal"), "{text}");
    assert!(
        text.contains("reverse_fxp: destination")
            && text.contains("425 Security: Bad IP connecting"),
        "{text}"
    );
    eprintln!("without relay: {text}");
}

fn tree_copy(src_kind: ServerKind, dst_kind: ServerKind) {
    let a = FtpServer::start_fxp(src_kind);
    let b = FtpServer::start_fxp(dst_kind);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("tree/top.bin", payload(300_000, 1)),
        ("tree/sub/a.txt", b"a\n".to_vec()),
        ("tree/sub/with space.bin", payload(70_000, 2)),
        ("tree/sub/deeper/b.bin", payload(1_000_001, 3)),
        ("tree/-dash dir/c.bin", payload(5000, 4)),
        ("tree/empty.bin", vec![]),
    ];
    for d in [
        "tree",
        "tree/sub",
        "tree/sub/deeper",
        "tree/hollow",
        "tree/-dash dir",
    ] {
        a.put(d, None);
    }
    for (f, data) in &files {
        a.put(f, Some(data));
    }
    let o = EngineOptions {
        concurrency: 3,
        ..opts()
    };
    let order = fxp::Order::Tree {
        src: url(&a, "tree"),
        dst: url(&b, "copied"),
        mirror: Default::default(),
    };
    let s = rt().block_on(common::run_job(order, o));
    if let Some(e) = s.finished.as_ref().and_then(|f| f.error.as_ref()) {
        panic!("{e}\n{}", logs(&a, &b));
    }
    let r = s.totals();
    assert_eq!(r.failed, 0, "{s:?}\n{}", logs(&a, &b));
    assert_eq!(r.files_copied, files.len(), "{r:?}");
    assert_eq!(s.dirs, 4, "{s:?}");
    // Server to server, every byte: a file may take reverse FXP when a data connection
    // is slow to open under load (seen once in a while on this sandbox's loopback).
    assert_eq!(r.relayed_bytes, 0, "{r:?}");
    assert_eq!(r.methods.get("relay"), None, "{r:?}");
    assert!(r.methods.contains_key("fxp"), "{r:?}");
    for (f, data) in &files {
        let rel = f.replacen("tree/", "copied/", 1);
        let got = std::fs::read(b.file(&rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(&got == data, "{rel} differs");
    }
    assert!(
        b.file("copied/hollow").is_dir(),
        "empty directory not created"
    );
}

#[test]
fn tree_from_vsftpd_list_to_pyftpdlib() {
    tree_copy(ServerKind::Vsftpd, ServerKind::Pyftpdlib);
}

#[test]
fn tree_from_pyftpdlib_mlsd_to_vsftpd() {
    tree_copy(ServerKind::Pyftpdlib, ServerKind::Vsftpd);
}

/// Processes in the process group `pgid` (a vsftpd listener and its sessions).
fn group_size(pgid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            rest.split_whitespace().nth(2) == Some(&pgid.to_string())
        })
        .count()
}

fn sessions_closed(s: &FtpServer) {
    let pid = s.pids()[0];
    common::wait_for("the server's sessions to end", || group_size(pid) == 1);
}

#[test]
fn missing_source_file_reports_the_server_text_and_closes_sessions() {
    let a = FtpServer::start_fxp(ServerKind::Vsftpd);
    let b = FtpServer::start_fxp(ServerKind::Vsftpd);
    let o = EngineOptions {
        retries: 2,
        ..opts()
    };
    let started = Instant::now();
    let e = copy(&url(&a, "no-such.bin"), &url(&b, "x.bin"), &o).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(e.code, Some(550), "{e}");
    let text = e.to_string();
    assert!(text.contains("source") && text.contains("550"), "{text}");
    assert!(text.contains("Could not get file size"), "{text}");
    // The destination was never touched.
    assert!(!b.file("x.bin").exists());
    sessions_closed(&a);
    sessions_closed(&b);
}

#[test]
fn refused_destination_reports_the_server_text_and_closes_sessions() {
    let a = FtpServer::start_fxp(ServerKind::Vsftpd);
    let b = FtpServer::start_fxp(ServerKind::Vsftpd);
    // A directory where the file should go: vsftpd refuses the STOR (a missing parent
    // would be made first, see `one_file_into_missing_directories_makes_them`).
    b.put("taken", None);
    let started = Instant::now();
    let e = copy(&url(&a, "big.bin"), &url(&b, "taken"), &opts()).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let text = e.to_string();
    assert!(
        text.contains("destination") && text.contains("553"),
        "{text}"
    );
    sessions_closed(&a);
    sessions_closed(&b);
}

#[test]
fn cli_copies_and_reports() {
    let a = FtpServer::start_fxp(ServerKind::Pyftpdlib);
    let b = FtpServer::start_fxp(ServerKind::Vsftpd);
    let src = format!("ftp://{}:{}@{}/big.bin", a.user, a.pass, a.addr);
    let dst = format!("ftp://{}:{}@{}/", b.user, b.pass, b.addr);
    // Debug logging shows every command but never the password.
    let (ok, out, err) =
        common::fxprelay_fxp(&[src.clone(), dst.clone(), "--log".into(), "debug".into()]);
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("RETR big.bin"), "{err}");
    assert!(!err.contains("PASS fxptest"), "{err}");
    assert!(
        out.contains("method fxp, 8388608 bytes (8.00 MiB)"),
        "{out}"
    );
    // One unit system: IEC, as in the progress bars.
    assert!(out.contains("MiB/s") && !out.contains(" MB/s"), "{out}");
    // The password is never shown.
    let pass = format!(":{}@", b.pass);
    assert!(!out.contains(&pass) && !err.contains(&pass), "{out}\n{err}");
    assert_big_copied(&b, "big.bin");

    let missing = format!("ftp://{}:{}@{}/missing.bin", a.user, a.pass, a.addr);
    let (ok, out, err) = common::fxprelay_fxp(&[missing, dst, "--retries".into(), "0".into()]);
    assert!(!ok, "{out}\n{err}");
    assert!(err.contains("550"), "{err}");

    // A tree with --recursive.
    a.put("d", None);
    a.put("d/f.bin", Some(&payload(1234, 9)));
    let src = format!("ftp://{}:{}@{}/d", a.user, a.pass, a.addr);
    let dst = format!("ftp://{}:{}@{}/d2", b.user, b.pass, b.addr);
    let (ok, out, err) = common::fxprelay_fxp(&[src, dst, "--recursive".into()]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("copied 1 files"), "{out}");
    assert_eq!(std::fs::read(b.file("d2/f.bin")).unwrap(), payload(1234, 9));
}

#[test]
fn standard_fxp_pure_ftpd_both_ways() {
    standard_fxp(ServerKind::PureFtpd, ServerKind::Vsftpd);
    standard_fxp(ServerKind::Vsftpd, ServerKind::PureFtpd);
}

#[test]
fn standard_fxp_proftpd_both_ways() {
    standard_fxp(ServerKind::Proftpd, ServerKind::Pyftpdlib);
    standard_fxp(ServerKind::Pyftpdlib, ServerKind::Proftpd);
}

/// A default pure-ftpd as the source accepts the destination's data connection and drops
/// it, then never answers `RETR`: the short copy is noticed at once and the relay takes
/// over, well within the timeout.
#[test]
fn pure_ftpd_dropping_a_foreign_peer_falls_back_quickly() {
    let a = server(ServerKind::PureFtpd, |_| {});
    let b = FtpServer::start_fxp(ServerKind::Vsftpd);
    let started = Instant::now();
    let o = EngineOptions {
        progress: Some(std::sync::Arc::new(move |e: &fxp::FileEvent| {
            eprintln!("{:?} {e:?}", started.elapsed());
        })),
        ..opts()
    };
    let r = copy(&url(&a, "big.bin"), &url(&b, "p.bin"), &o)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&a, &b)));
    assert_ne!(r.method, Method::Fxp, "{r:?}");
    assert_big_copied(&b, "p.bin");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?} ({r:?})",
        started.elapsed()
    );
    eprintln!("pure-ftpd default source: {r:?}");
}

/// A partial destination file (the first 3 MiB) is continued with `REST` on both sides,
/// by FXP and by the relay, and the result is whole.
#[test]
fn resume_continues_a_partial_copy() {
    const PART: usize = 3 * 1024 * 1024;
    let a = FtpServer::start_fxp(ServerKind::Vsftpd);
    let b = FtpServer::start_fxp(ServerKind::Pyftpdlib);
    let c = server(ServerKind::Vsftpd, |_| {});
    let o = EngineOptions {
        resume: true,
        ..opts()
    };
    for (dst, method) in [(&b, Method::Fxp), (&c, Method::Relay)] {
        dst.put("part.bin", Some(&peers::big_bin()[..PART]));
        let r = copy(&url(&a, "big.bin"), &url(dst, "part.bin"), &o)
            .unwrap_or_else(|e| panic!("{e}\n{}", logs(&a, dst)));
        assert_eq!(r.method, method, "{r:?}");
        assert_eq!(r.resumed_from, PART as u64, "{r:?}");
        if method == Method::Relay {
            assert_eq!(r.relayed_bytes, (peers::BIG_LEN - PART) as u64, "{r:?}");
        }
        assert_big_copied(dst, "part.bin");
    }
}

#[test]
fn a_list_of_files_as_a_queue() {
    let a = FtpServer::start_fxp(ServerKind::Pyftpdlib);
    let b = FtpServer::start_fxp(ServerKind::Vsftpd);
    let jobs = vec![
        (url(&a, "big.bin"), url(&b, "one.bin")),
        (url(&a, peers::HELLO_NAME), url(&b, "two.txt")),
        (url(&a, "missing"), url(&b, "three")),
    ];
    let s = rt().block_on(common::run_job(fxp::Order::List(jobs), opts()));
    let r = s.totals();
    assert_eq!(r.files_copied, 2, "{s:?}");
    assert_eq!(r.failed, 1, "{s:?}");
    let failed = s.failures().next().and_then(|e| e.error.as_ref()).unwrap();
    assert!(failed.message.contains("550"), "{s:?}");
    assert_big_copied(&b, "one.bin");
    assert_eq!(std::fs::read(b.file("two.txt")).unwrap(), peers::HELLO);
}

/// A scripted FTP server on its own loopback address, for what no real server does: it
/// logs in anyone, lists no features (so the engine uses `PASV`/`PORT`), answers `PASV`
/// with `pasv` (or refuses it), accepts `PORT`/`EPRT`, and answers `STOR`/`RETR` with
/// `150` then `226` without any data connection. Records every command line; stops its
/// threads and connections on drop.
struct FakeFtp {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeFtp {
    fn start(pasv: Option<String>) -> FakeFtp {
        let listener = std::net::TcpListener::bind((unique_loopback_ip(), 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut conns = vec![];
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (log, pasv) = (log.clone(), pasv.clone());
                        let Ok(mine) = s.try_clone() else { continue };
                        conns.push((
                            mine,
                            std::thread::spawn(move || fake_session(s, &log, pasv)),
                        ));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for (s, t) in conns {
                let _ = s.shutdown(std::net::Shutdown::Both);
                let _ = t.join();
            }
        });
        FakeFtp {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> FtpUrl {
        FtpUrl::parse(&format!("ftp://u:p@{}/{path}", self.addr)).unwrap()
    }

    /// The command lines received whose verb is one of `verbs`.
    fn commands(&self, verbs: &[&str]) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|l| verbs.iter().any(|v| l.split(' ').next() == Some(*v)))
            .cloned()
            .collect()
    }
}

impl Drop for FakeFtp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fake_session(s: std::net::TcpStream, seen: &Mutex<Vec<String>>, pasv: Option<String>) {
    use std::io::{BufRead, BufReader, Write};
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut out) = s.try_clone() else { return };
    let mut say = |text: &str| out.write_all(format!("{text}\r\n").as_bytes()).is_ok();
    if !say("220 fake") {
        return;
    }
    for line in BufReader::new(s).lines() {
        let Ok(line) = line else { return };
        let line = line.trim_end().to_string();
        seen.lock().unwrap().push(line.clone());
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply = match verb.as_str() {
            "USER" => "331 password".to_string(),
            "PASS" => "230 in".into(),
            "TYPE" => "200 binary".into(),
            "PASV" => pasv
                .clone()
                .unwrap_or_else(|| "502 no passive mode here".into()),
            "PORT" | "EPRT" => "200 ok".into(),
            "STOR" | "RETR" => "150 opening\r\n226 done".into(),
            "ABOR" => "226 aborted".into(),
            "QUIT" => {
                say("221 bye");
                return;
            }
            _ => "502 not implemented".into(),
        };
        if !say(&reply) {
            return;
        }
    }
}

/// `h1,h2,h3,h4,p1,p2` as in `227` and `PORT`.
fn comma_addr(ip: std::net::Ipv4Addr, port: u16) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{a},{b},{c},{d},{},{}", port >> 8, port & 0xff)
}

fn fake_ipv4(f: &FakeFtp) -> std::net::Ipv4Addr {
    match f.addr.ip() {
        std::net::IpAddr::V4(ip) => ip,
        other => panic!("fake bound {other}"),
    }
}

/// A `227` naming a third host: the destination is told the source's own control
/// address with the announced port (what a server behind NAT needs, and no bounce).
#[test]
fn fxp_gives_the_passive_servers_control_address_not_the_announced_one() {
    let third = unique_loopback_ip();
    let a = FakeFtp::start(Some(format!(
        "227 Entering Passive Mode ({}).",
        comma_addr(third, 40021)
    )));
    let b = FakeFtp::start(None);
    let o = EngineOptions {
        relay_fallback: false,
        ..opts()
    };
    let r = copy(&a.url("x.bin"), &b.url("y.bin"), &o).unwrap();
    assert_eq!(r.method, Method::Fxp, "{r:?}");
    assert_eq!(
        b.commands(&["PORT", "EPRT"]),
        [format!("PORT {}", comma_addr(fake_ipv4(&a), 40021))]
    );
}

/// A `227` naming port 25 (RFC 2577's bounce to a mail server): refused with the
/// server and the port named, and the other server never hears a `PORT`.
#[test]
fn a_passive_reply_naming_a_privileged_port_is_refused() {
    let a = FakeFtp::start(Some("227 Entering Passive Mode (10,9,8,7,0,25).".into()));
    let b = FakeFtp::start(None);
    let o = EngineOptions {
        relay_fallback: false,
        ..opts()
    };
    let e = copy(&a.url("x.bin"), &b.url("y.bin"), &o).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!("source {}: PASV announced data port 25", a.addr)),
        "{text}"
    );
    assert_eq!(b.commands(&["PORT", "EPRT"]), Vec::<String>::new());
    assert_eq!(b.commands(&["STOR"]), Vec::<String>::new());
    assert_eq!(a.commands(&["RETR"]), Vec::<String>::new());
}

/// One file into a directory that does not exist yet: its parents are made first, as a
/// tree's root is, by the engine (what the API and `SITE FXP` run) and by the CLI; a
/// parent that cannot be made fails the file with the server's words.
#[test]
fn one_file_into_missing_directories_makes_them() {
    let a = FtpServer::start_fxp(ServerKind::Vsftpd);
    let b = FtpServer::start_fxp(ServerKind::Pyftpdlib);
    let r = copy(&url(&a, "big.bin"), &url(&b, "new/dir/copy.bin"), &opts())
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&a, &b)));
    assert_eq!(r.bytes, peers::BIG_LEN as u64);
    assert_big_copied(&b, "new/dir/copy.bin");
    // The CLI, and an existing parent (made once, then found).
    let cli_url =
        |s: &FtpServer, path: &str| format!("ftp://{}:{}@{}/{path}", s.user, s.pass, s.addr);
    let (ok, out, err) =
        common::fxprelay_fxp(&[cli_url(&a, "big.bin"), cli_url(&b, "new/other/cli.bin")]);
    assert!(ok, "{out}{err}");
    assert_big_copied(&b, "new/other/cli.bin");
    // `--json` says whether the file was new there or overwritten.
    let reason = |dst: &str| {
        let (ok, out, err) = common::fxprelay_fxp(&[
            "--json".to_string(),
            cli_url(&a, "big.bin"),
            cli_url(&b, dst),
        ]);
        assert!(ok, "{out}{err}");
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v["files"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(reason("new/json.bin"), "new");
    assert_eq!(reason("new/json.bin"), "overwrite");
    // `--skip-existing` for one file: left alone when the destination has it (same size,
    // not older), copied when it differs.
    let skip = |dst: &str| {
        let (ok, out, err) = common::fxprelay_fxp(&[
            "--json".to_string(),
            "--skip-existing".to_string(),
            cli_url(&a, "big.bin"),
            cli_url(&b, dst),
        ]);
        assert!(ok, "{out}{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let v = skip("new/json.bin");
    assert_eq!(
        (
            v["files_skipped"].as_u64(),
            v["files"][0]["reason"].as_str()
        ),
        (Some(1), Some("up_to_date")),
        "{v:#}"
    );
    std::fs::write(b.file("new/json.bin"), b"shorter").unwrap();
    let v = skip("new/json.bin");
    assert_eq!(
        (v["files_copied"].as_u64(), v["files"][0]["reason"].as_str()),
        (Some(1), Some("size_differs")),
        "{v:#}"
    );
    assert_big_copied(&b, "new/json.bin");
    // A parent that is a file: the copy fails saying so, nothing is written.
    let e = copy(
        &url(&a, "big.bin"),
        &url(&b, "new/dir/copy.bin/x.bin"),
        &opts(),
    )
    .expect_err("a file cannot be a directory");
    assert!(e.message.contains("could not be created"), "{e:?}");
}

/// The CLI without a terminal: a user without a password is an error that says where one
/// can come from (never a silent empty password), and a failed single file is reported
/// once.
#[test]
fn cli_errors_are_said_once_and_a_missing_password_is_one() {
    let ip = unique_loopback_ip();
    let nobody = std::net::SocketAddr::new(ip.into(), common::free_port(ip.into()));
    let (ok, out, err) = common::fxprelay_fxp(&[
        format!("ftp://bob@{nobody}/f"),
        format!("ftp://x:y@{nobody}/g"),
    ]);
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("bob@")
            && err.contains("needs a password")
            && err.contains("FXPRELAY_SRC_PASSWORD")
            && err.contains(".netrc"),
        "{err}"
    );
    let (ok, out, err) = common::fxprelay_fxp(&[
        "--retries".to_string(),
        "0".to_string(),
        format!("ftp://bob:pw@{nobody}/f"),
        format!("ftp://x:y@{nobody}/g"),
    ]);
    assert!(!ok, "{out}{err}");
    assert_eq!(err.matches("cannot connect").count(), 1, "{err}");
}
