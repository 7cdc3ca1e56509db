//! The FXP queue: a tree of many files copied with default settings on reused sessions
//! (vsftpd to pyftpdlib) and over a slow link (vsftpd to vsftpd, 50 ms away); and a
//! destination that stops reading its data connection while the source completes, goes
//! silent after its `226`, or leaves a login unanswered (what pyftpdlib 1.5 does now and
//! then when several transfers run on it), played by a small fake server against a real
//! vsftpd.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::peers::{FtpServer, ServerKind};
use common::{payload, unique_loopback_ip};
use fxprelay::fxp::{self, EngineOptions, FtpUrl, Method};

fn url(s: &FtpServer, path: &str) -> FtpUrl {
    url_at(s, s.addr, path)
}

/// `path` on `s`, reached at `addr` (a forwarder to it).
fn url_at(s: &FtpServer, addr: SocketAddr, path: &str) -> FtpUrl {
    FtpUrl::parse(&format!("ftp://{}:{}@{addr}/{path}", s.user, s.pass)).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Logins vsftpd logged (`log_ftp_protocol`: one `OK LOGIN` per login).
fn vsftpd_logins(s: &FtpServer) -> usize {
    s.log().matches("OK LOGIN").count()
}

/// 200 small files with default settings: every one byte for byte, every one by plain
/// FXP (no reverse FXP, no relay), and the source logged in to a handful of times, not
/// once per file.
#[test]
fn a_tree_of_200_files_goes_by_plain_fxp_on_reused_sessions() {
    const FILES: usize = 200;
    let a = FtpServer::start_fxp(ServerKind::Vsftpd);
    let b = FtpServer::start_fxp(ServerKind::Pyftpdlib);
    a.put("tree", None);
    a.put("tree/sub", None);
    let files: Vec<(String, Vec<u8>)> = (0..FILES)
        .map(|i| {
            let dir = if i % 2 == 0 { "tree" } else { "tree/sub" };
            (
                format!("{dir}/f{i:03}.bin"),
                payload(1000 + 37 * i, i as u64),
            )
        })
        .collect();
    for (f, data) in &files {
        a.put(f, Some(data));
    }
    let before = vsftpd_logins(&a);
    let order = fxp::Order::Tree {
        src: url(&a, "tree"),
        dst: url(&b, "copy"),
        mirror: Default::default(),
    };
    let s = rt().block_on(common::run_job(order, EngineOptions::default()));
    if let Some(e) = s.finished.as_ref().and_then(|f| f.error.as_ref()) {
        panic!("{e}\n{}\n{}", a.log(), b.log());
    }
    let r = s.totals();
    assert_eq!(r.failed, 0, "{:?}", s.records());
    assert_eq!(r.files_copied, FILES, "{r:?}");
    assert_eq!(
        r.methods.get("fxp"),
        Some(&FILES),
        "every file by plain FXP: {:?}",
        r.methods
    );
    assert_eq!(r.relayed_bytes, 0);
    for (f, data) in &files {
        let rel = f.replacen("tree", "copy", 1);
        let got = std::fs::read(b.file(&rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(&got == data, "{rel} differs");
    }
    // The walk's session, one per transfer running at once, one watching a slow copy,
    // and a fresh pair for each transfer pyftpdlib lost (rare): far below one per file.
    let logins = vsftpd_logins(&a) - before;
    assert!(
        logins <= 20,
        "{logins} logins on the source for {FILES} files: sessions were not reused"
    );
}

/// Both servers 50 ms away (their control connections through a forwarder that delays
/// every byte so; their data connection to each other stays near): the short bounds grow
/// with the round trip, so not one transfer is taken for lost and every file goes by
/// plain FXP. With the bounds as they are for near servers (`PORT` 30 ms, the replies
/// after `226` 100 ms) every file would fail over to reverse FXP.
#[test]
fn a_tree_over_a_slow_link_goes_by_plain_fxp_with_no_transfer_taken_for_lost() {
    const FILES: usize = 12;
    let a = FtpServer::start_fxp(ServerKind::Vsftpd);
    let b = FtpServer::start_fxp(ServerKind::Vsftpd);
    a.put("tree", None);
    let files: Vec<(String, Vec<u8>)> = (0..FILES)
        .map(|i| (format!("tree/f{i:02}.bin"), payload(20_000 + i, i as u64)))
        .collect();
    for (f, data) in &files {
        a.put(f, Some(data));
    }
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let opts = EngineOptions {
        progress: Some(Arc::new(move |e: &fxp::FileEvent| {
            if let fxp::FileEvent::MethodFailed { .. } | fxp::FileEvent::Retrying { .. } = e {
                seen.lock().unwrap().push(format!("{e:?}"));
            }
        })),
        ..EngineOptions::default()
    };
    let one_way = Duration::from_millis(50);
    let r = rt().block_on(async {
        let (src, dst) = (
            slow_link(a.addr, one_way).await,
            slow_link(b.addr, one_way).await,
        );
        let src = url_at(&a, src, "tree");
        let dst = url_at(&b, dst, "copy");
        let order = fxp::Order::Tree {
            src,
            dst,
            mirror: Default::default(),
        };
        common::run_job(order, opts).await
    });
    if let Some(e) = r.finished.as_ref().and_then(|f| f.error.as_ref()) {
        panic!("{e}\n{}\n{}", a.log(), b.log());
    }
    let failed: Vec<_> = r.failures().map(|e| (&e.plan.path, &e.error)).collect();
    let r = r.totals();
    let events = events.lock().unwrap();
    assert!(
        events.is_empty(),
        "taken for lost on a slow link: {events:#?}"
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(r.methods.get("fxp"), Some(&FILES), "{:?}", r.methods);
    for (f, data) in &files {
        let rel = f.replacen("tree", "copy", 1);
        let got = std::fs::read(b.file(&rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(&got == data, "{rel} differs");
    }
}

/// A forwarder to `server` on the server's own address (so the engine tells the other
/// server that address, as for a direct connection), another port, that delays every
/// byte by `one_way` in each direction. Its tasks end with the runtime.
async fn slow_link(server: SocketAddr, one_way: Duration) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind((server.ip(), 0))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    // Bytes read at one time reach the other side `one_way` later, in order.
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        one_way: Duration,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = from.read(&mut buf).await {
                let due = tokio::time::Instant::now() + one_way;
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
        });
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    }
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let Ok(up) = tokio::net::TcpStream::connect(server).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (ur, uw) = up.into_split();
            tokio::spawn(pump(cr, uw, one_way));
            tokio::spawn(pump(ur, cw, one_way));
        }
    });
    addr
}

/// A destination that takes `STOR` (`125`) and then never reads its data connection nor
/// answers, the first time; later sessions behave. The source (a real vsftpd) sends the
/// whole small file into the socket buffer and says `226`. The engine must see from
/// that and the destination's unchanged `SIZE` that the transfer is lost, give it up and
/// run plain FXP again on fresh sessions, long before its 10 s timeout: with the timeout
/// it would move on to reverse FXP and the relay, which this fake refuses (no `PASV`), and
/// the copy would fail.
#[test]
fn a_destination_that_stops_reading_is_found_from_the_sources_end() {
    copies_by_fxp_again(Stall::Data, "stopped reading");
}

/// A destination that stores the file and says `226`, then answers nothing more on that
/// session (pyftpdlib, when another session's stale close unregisters this control
/// connection): the `ABOR` and `SIZE` after the transfer go unanswered. The engine must
/// run plain FXP again on fresh sessions, not wait its 10 s timeout for the `SIZE` and
/// then move on to reverse FXP and the relay (which this fake refuses: the copy would
/// fail).
#[test]
fn a_destination_silent_after_its_226_costs_a_fresh_try_not_the_timeout() {
    copies_by_fxp_again(Stall::AfterTransfer, "the replies after the transfer");
}

/// A destination whose first login is never answered (pyftpdlib, a connection made while
/// its transfers run): a second login beside it is the session, with no retry of the
/// attempt (`retries: 0`: waiting out the timeout would fail the copy).
#[test]
fn a_login_left_unanswered_is_overtaken() {
    copies_by_fxp_again(Stall::Login, "");
}

/// Copies a small file from vsftpd to a fake destination that stalls once as `stall`
/// says, with a 10 s timeout and no retries: the copy must succeed by plain FXP, the
/// events must name `reason` (when given), and the copy must be byte-identical.
fn copies_by_fxp_again(stall: Stall, reason: &str) {
    let a = FtpServer::start_fxp(ServerKind::Vsftpd);
    let data = payload(100_000, 11);
    a.put("small.bin", Some(&data));
    let fake = StuckOnce::start(stall);
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let opts = EngineOptions {
        retries: 0,
        timeout: Duration::from_secs(10),
        progress: Some(Arc::new(move |e: &fxp::FileEvent| {
            seen.lock().unwrap().push(format!("{e:?}"));
        })),
        ..EngineOptions::default()
    };
    let dst = FtpUrl::parse(&format!("ftp://u:p@{}/copy.bin", fake.addr)).unwrap();
    let r = rt()
        .block_on(common::run_job(
            fxp::Order::File {
                src: url(&a, "small.bin"),
                dst,
                skip_existing: false,
            },
            opts,
        ))
        .outcome()
        .expect("an outcome")
        .cloned()
        .unwrap_or_else(|e| panic!("{e}\nevents: {:?}\n{}", events.lock().unwrap(), a.log()));
    let events = events.lock().unwrap().join("\n");
    assert_eq!(r.method, Method::Fxp, "{r:?}\n{events}");
    assert!(events.contains(reason), "{events}");
    assert!(fake.stuck.load(Ordering::SeqCst), "the fake never stalled");
    let stored = fake.files.lock().unwrap().get("copy.bin").cloned();
    assert!(stored.as_deref() == Some(&data[..]), "the copy differs");
}

/// How [`StuckOnce`] misbehaves, once.
#[derive(Clone, Copy, PartialEq)]
enum Stall {
    /// Takes the first `STOR` (`125`), then neither reads its data connection nor answers.
    Data,
    /// Stores the first file and says `226`, then answers nothing more on that session.
    AfterTransfer,
    /// Never answers the first `PASS`.
    Login,
}

/// The fake destination of the tests above (plain threads and std sockets).
struct StuckOnce {
    addr: SocketAddr,
    /// The first `STOR` was left hanging.
    stuck: Arc<AtomicBool>,
    /// What later `STOR`s stored, by path.
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl StuckOnce {
    fn start(stall: Stall) -> StuckOnce {
        let ip = unique_loopback_ip();
        let l = TcpListener::bind((ip, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        let stuck = Arc::new(AtomicBool::new(false));
        let files = Arc::new(Mutex::new(HashMap::new()));
        let (s2, f2) = (stuck.clone(), files.clone());
        // The thread ends with the test process; each session ends with its connection.
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let (stuck, files) = (s2.clone(), f2.clone());
                std::thread::spawn(move || session(conn, stall, &stuck, &files));
            }
        });
        StuckOnce { addr, stuck, files }
    }
}

fn session(
    conn: TcpStream,
    stall: Stall,
    stuck: &AtomicBool,
    files: &Mutex<HashMap<String, Vec<u8>>>,
) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let _ = w.write_all(b"220 fake\r\n");
    let mut data: Option<TcpStream> = None;
    // Held open and never read: the hung transfer's connection.
    let mut hung: Vec<TcpStream> = vec![];
    let mut line = String::new();
    // This session answers nothing more (Stall::AfterTransfer, Stall::Login).
    let mut mute = false;
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if mute {
            continue;
        }
        let (verb, arg) = line
            .trim_end()
            .split_once(' ')
            .unwrap_or((line.trim_end(), ""));
        let reply = match verb.to_ascii_uppercase().as_str() {
            "USER" => "331 pass".to_owned(),
            "PASS" if stall == Stall::Login && !stuck.swap(true, Ordering::SeqCst) => {
                mute = true;
                continue;
            }
            "PASS" => "230 in".to_owned(),
            "TYPE" => "200 ok".to_owned(),
            "FEAT" => "211-Features:\r\n SIZE\r\n211 End".to_owned(),
            "PORT" => {
                let n: Vec<u8> = arg.split(',').filter_map(|x| x.parse().ok()).collect();
                if n.len() != 6 {
                    "501 bad PORT".to_owned()
                } else {
                    let ip = Ipv4Addr::new(n[0], n[1], n[2], n[3]);
                    let port = u16::from(n[4]) * 256 + u16::from(n[5]);
                    match TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(5)) {
                        Ok(s) => {
                            data = Some(s);
                            "200 connected".to_owned()
                        }
                        Err(_) => "425 cannot connect".to_owned(),
                    }
                }
            }
            "STOR" => match data.take() {
                None => "425 no data connection".to_owned(),
                Some(s) if stall == Stall::Data && !stuck.swap(true, Ordering::SeqCst) => {
                    // Accepted, then neither read nor answered.
                    let _ = w.write_all(b"125 go\r\n");
                    hung.push(s);
                    continue;
                }
                Some(mut s) => {
                    let _ = w.write_all(b"125 go\r\n");
                    let mut got = vec![];
                    let _ = s.read_to_end(&mut got);
                    files.lock().unwrap().insert(arg.to_owned(), got);
                    if stall == Stall::AfterTransfer && !stuck.swap(true, Ordering::SeqCst) {
                        mute = true;
                    }
                    "226 stored".to_owned()
                }
            },
            "SIZE" => match files.lock().unwrap().get(arg) {
                Some(f) => format!("213 {}", f.len()),
                // The hung transfer's file exists, empty.
                None => "213 0".to_owned(),
            },
            "ABOR" => {
                hung.clear();
                "225 aborted".to_owned()
            }
            "QUIT" => {
                let _ = w.write_all(b"221 bye\r\n");
                return;
            }
            _ => "502 not here".to_owned(),
        };
        let _ = w.write_all(format!("{reply}\r\n").as_bytes());
    }
}
