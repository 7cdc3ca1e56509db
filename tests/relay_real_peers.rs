//! Relay mode with real servers and clients. The servers announce the dead address
//! `127.0.0.99`, so a client cannot reach a server's data port by itself: every
//! successful transfer here crossed the proxy, which the data byte counter confirms.

mod common;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::clients::{self, Mode};
use common::control::{Control, connect_from};
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::{ListenerSpec, Proxy};
use common::{payload, unique_loopback_ip, wait_for};

const DEAD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 99);
const MIB: f64 = 1024.0 * 1024.0;

fn masqueraded(kind: ServerKind, tweak: impl FnOnce(&mut ServerOptions)) -> FtpServer {
    let mut opts = ServerOptions::new(unique_loopback_ip());
    opts.masquerade = Some(DEAD);
    tweak(&mut opts);
    FtpServer::start(kind, opts)
}

/// A relaying proxy in front of `server`; its upstream leg fixes the dead address.
fn relay(server: &FtpServer, keys: &[&str]) -> Proxy {
    relay_with(server, keys, "")
}

/// [`relay`] with extra top-level YAML (e.g. `limits:`).
fn relay_with(server: &FtpServer, keys: &[&str], extra_yaml: &str) -> Proxy {
    Proxy::start_with(
        unique_loopback_ip(),
        ListenerSpec::new(server.addr).passive("always").relay(keys),
        extra_yaml,
    )
}

fn url(server: &FtpServer, at: SocketAddr, path: &str) -> String {
    clients::ftp_url(server.user, server.pass, at, path)
}

/// Downloads `big.bin` through `proxy` into `got` with curl and checks it byte for byte.
fn download_big(server: &FtpServer, proxy: &Proxy, got: &Path, mode: &Mode) {
    let r = clients::curl_download(&url(server, proxy.addr, "big.bin"), got, mode);
    assert!(r.ok(), "curl download ({mode:?}): {r}\n{}", proxy.log());
    assert!(
        std::fs::read(got).unwrap() == peers::big_bin(),
        "curl download differs ({mode:?})"
    );
}

/// Data ports in use, which must return to zero when no transfer runs.
fn ports_in_use(proxy: &Proxy) -> f64 {
    proxy.metric("fxprelay_data_ports_in_use", &[])
}

/// curl passive (trusting the 227) and active, ftplib both ways, and lftp, all through
/// the relay, with byte-identical files both ways.
fn all_clients_through_relay(kind: ServerKind) {
    let server = masqueraded(kind, |_| {});
    let proxy = relay(&server, &[]);
    let dir = tempfile::tempdir().unwrap();
    let big = peers::big_bin();
    let data = payload(3 * 1024 * 1024 + 1, 5);
    let up = dir.path().join("up.bin");
    std::fs::write(&up, &data).unwrap();

    let direct = clients::curl_list(&url(&server, server.addr, ""), &Mode::PassiveTrusting);
    assert!(
        !direct.ok(),
        "the server's own data address must be unreachable: {direct}"
    );

    for (i, mode) in [Mode::PassiveTrusting, Mode::Active("127.0.0.1")]
        .iter()
        .enumerate()
    {
        let list = clients::curl_list(&url(&server, proxy.addr, ""), mode);
        assert!(list.ok(), "curl list ({mode:?}): {list}\n{}", proxy.log());
        assert!(list.stdout.contains("big.bin"), "{list}");
        let got = dir.path().join(format!("curl-{i}.bin"));
        download_big(&server, &proxy, &got, mode);
        let name = format!("curl-up-{i}.bin");
        let r = clients::curl_upload(&url(&server, proxy.addr, &name), &up, mode);
        assert!(r.ok(), "curl upload ({mode:?}): {r}\n{}", proxy.log());
        assert!(
            std::fs::read(server.file(&name)).unwrap() == data,
            "curl upload differs"
        );
    }
    clients::ftplib_round_trip(&server, &proxy, dir.path(), &up);
    let got = dir.path().join("lftp.bin");
    let script = format!(
        "ls; get big.bin -o {}; put {} -o lftp-up.bin",
        got.display(),
        up.display()
    );
    let r = clients::lftp(proxy.addr, server.user, server.pass, true, &script);
    assert!(r.ok(), "lftp: {r}\n{}", proxy.log());
    assert!(std::fs::read(&got).unwrap() == big, "lftp download differs");
    assert!(
        std::fs::read(server.file("lftp-up.bin")).unwrap() == data,
        "lftp upload differs"
    );

    // Five downloads of big.bin crossed the proxy (plus listings), four uploads too.
    let down = proxy.metric("fxprelay_data_bytes_total", &[("direction", "download")]);
    let up = proxy.metric("fxprelay_data_bytes_total", &[("direction", "upload")]);
    assert!(down >= 5.0 * 8.0 * MIB, "download bytes {down}");
    assert!(up >= 5.0 * data.len() as f64, "upload bytes {up}");
    wait_for("data ports to be returned", || ports_in_use(&proxy) == 0.0);
}

macro_rules! per_server {
    ($($name:ident => $kind:expr),* $(,)?) => {
        $(
            #[test]
            fn $name() { all_clients_through_relay($kind) }
        )*
    };
}

per_server! {
    vsftpd_all_clients => ServerKind::Vsftpd,
    pure_ftpd_all_clients => ServerKind::PureFtpd,
    proftpd_all_clients => ServerKind::Proftpd,
    pyftpdlib_all_clients => ServerKind::Pyftpdlib,
}

#[test]
fn passive_client_with_active_only_server() {
    let server = masqueraded(ServerKind::Vsftpd, |o| o.passive = false);
    let direct = clients::curl_list(&url(&server, server.addr, ""), &Mode::Passive);
    assert!(
        !direct.ok(),
        "the server must refuse passive mode: {direct}"
    );
    let proxy = relay(&server, &["upstream_data: auto"]);
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("big.bin");
    for _ in 0..2 {
        download_big(&server, &proxy, &got, &Mode::PassiveTrusting);
    }
    // The second transfer went straight to active mode: the refusal was remembered.
    assert_eq!(
        proxy.log().matches("upstream refused passive mode").count(),
        1,
        "{}",
        proxy.log()
    );
}

#[test]
fn active_client_with_passive_only_server() {
    let server = masqueraded(ServerKind::Vsftpd, |o| o.active = false);
    let direct = clients::curl_list(&url(&server, server.addr, ""), &Mode::Active("127.0.0.1"));
    assert!(!direct.ok(), "the server must refuse active mode: {direct}");
    let proxy = relay(&server, &[]);
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("big.bin");
    download_big(&server, &proxy, &got, &Mode::Active("127.0.0.1"));
}

#[test]
fn ipv6_client_with_ipv4_server() {
    let server = masqueraded(ServerKind::Vsftpd, |_| {});
    let proxy = Proxy::start(
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        ListenerSpec::new(server.addr).passive("always").relay(&[]),
    );
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("big.bin");
    for mode in [Mode::Passive, Mode::Active("::1")] {
        // curl speaks EPSV/EPRT to an IPv6 proxy; the proxy speaks PASV to the IPv4 server.
        let r = clients::curl(
            &url(&server, proxy.addr, "big.bin"),
            &mode,
            ["-o".as_ref(), got.as_os_str()],
        );
        let r = if matches!(mode, Mode::Passive) {
            // Mode::Passive disables EPSV; over IPv6 curl needs it, so run without it.
            let mut cmd = std::process::Command::new("curl");
            cmd.args(["-sS", "--max-time", "30", "-o"])
                .arg(&got)
                .arg(url(&server, proxy.addr, "big.bin"));
            clients::run(cmd, Duration::from_secs(40))
        } else {
            r
        };
        assert!(r.ok(), "{mode:?}: {r}\n{}", proxy.log());
        assert!(std::fs::read(&got).unwrap() == peers::big_bin());
    }
}

#[test]
fn three_ports_five_sessions_clean_425_and_ports_return() {
    let server = masqueraded(ServerKind::Vsftpd, |_| {});
    let ip = unique_loopback_ip();
    let first = common::free_port(ip.into());
    let ports = format!("data:\n  ports: \"{}-{}\"\n", first, first + 2);
    let proxy = Proxy::start_with(
        ip,
        ListenerSpec::new(server.addr).passive("always").relay(&[]),
        &ports,
    );
    let fds = || proxy.fd_count();
    ports_in_use(&proxy); // a first scrape, so the admin endpoint's own sockets settle
    let fds_before = fds();

    let mut sessions: Vec<Control> = (0..5).map(|_| Control::login(proxy.addr)).collect();
    let answers: Vec<Result<SocketAddr, String>> = sessions.iter_mut().map(Control::pasv).collect();
    let granted = answers.iter().filter(|a| a.is_ok()).count();
    let refused: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert_eq!(granted, 3, "{answers:?}");
    assert_eq!(refused.len(), 2);
    for r in refused {
        assert!(r.starts_with("425 ") && r.contains("in use"), "{r}");
    }
    assert_eq!(proxy.metric("fxprelay_data_port_exhausted_total", &[]), 2.0);
    assert_eq!(ports_in_use(&proxy), 3.0);

    // The three granted sessions transfer; the refused ones retry once ports are back.
    for (s, a) in sessions.iter_mut().zip(&answers) {
        if let Ok(addr) = a {
            retr_hello(s, *addr);
        }
    }
    wait_for("ports returned after the transfers", || {
        ports_in_use(&proxy) == 0.0
    });
    for (s, a) in sessions.iter_mut().zip(&answers) {
        if a.is_err() {
            let addr = s.pasv().expect("a port is free again");
            retr_hello(s, addr);
        }
    }
    // An abandoned PASV holds its port until the session ends.
    sessions[0].pasv().unwrap();
    assert_eq!(ports_in_use(&proxy), 1.0);
    drop(sessions);
    wait_for("ports returned when sessions end", || {
        ports_in_use(&proxy) == 0.0
    });
    wait_for("sessions to end", || {
        proxy.metric("fxprelay_sessions_active", &[]) == 0.0
    });
    wait_for("descriptors back to the baseline", || fds() <= fds_before);
}

/// Downloads hello.txt over a data connection to `addr` after `PASV`.
fn retr_hello(s: &mut Control, addr: SocketAddr) {
    let mut data = TcpStream::connect(addr).expect("data connect");
    let r = s.cmd("RETR hello.txt");
    assert!(r.starts_with("150") || r.starts_with("125"), "{r}");
    let mut got = Vec::new();
    data.read_to_end(&mut got).unwrap();
    assert_eq!(got, peers::HELLO);
    let r = s.reply();
    assert!(r.starts_with("226") || r.starts_with("250"), "{r}");
}

#[test]
fn bounce_port_to_third_address_is_refused_in_both_modes() {
    let server = masqueraded(ServerKind::Vsftpd, |_| {});
    for data in ["relay", "passthrough"] {
        let mut spec = ListenerSpec::new(server.addr).passive("always");
        spec.data = data;
        let proxy = Proxy::start(unique_loopback_ip(), spec);
        let mut s = Control::login(proxy.addr);
        let r = s.cmd("PORT 127,0,0,250,200,1");
        assert!(
            r.starts_with("504 ") && r.contains("not your own"),
            "{data}: {r}"
        );
        let r = s.cmd("EPRT |1|127.0.0.1|21|");
        assert!(r.starts_with("504 ") && r.contains("1024"), "{data}: {r}");
        assert_eq!(
            proxy.metric("fxprelay_rejected_total", &[("reason", "bounce")]),
            2.0
        );
        // The session goes on, and its own address is fine.
        let r = s.cmd("PORT 127,0,0,1,200,1");
        assert!(r.starts_with("200"), "{data}: {r}");
    }
}

#[test]
fn allow_foreign_port_permits_listed_addresses() {
    let server = masqueraded(ServerKind::Vsftpd, |_| {});
    let proxy = relay(&server, &["allow_foreign_port: [127.0.0.250/32]"]);
    let mut s = Control::login(proxy.addr);
    s.cmd_expect("PORT 127,0,0,250,200,1", 200);
    s.cmd_expect("PORT 127,0,0,251,200,1", 504);
}

#[test]
fn data_connection_from_another_address_is_refused() {
    let server = masqueraded(ServerKind::Vsftpd, |_| {});
    let proxy = relay(&server, &[]);
    let mut s = Control::login(proxy.addr);
    let addr = s.pasv().unwrap();
    // The thief comes first, from another address; then the client.
    let mut thief = connect_from(Ipv4Addr::new(127, 0, 0, 77), addr)
        .expect("thief connects (the kernel accepts)");
    let mut data = TcpStream::connect(addr).unwrap();
    s.cmd_expect("RETR hello.txt", 150);
    let mut got = Vec::new();
    data.read_to_end(&mut got).unwrap();
    assert_eq!(got, peers::HELLO);
    s.expect(226);
    let mut stolen = Vec::new();
    let _ = thief.read_to_end(&mut stolen);
    assert!(stolen.is_empty(), "the thief got data");
    assert_eq!(
        proxy.metric("fxprelay_rejected_total", &[("reason", "port_theft")]),
        1.0
    );
}

#[test]
fn abort_mid_transfer_keeps_the_session_usable() {
    let server = masqueraded(ServerKind::Vsftpd, |_| {});
    let proxy = relay(&server, &[]);
    let mut s = Control::login(proxy.addr);
    let addr = s.pasv().unwrap();
    let mut data = TcpStream::connect(addr).unwrap();
    s.cmd_expect("RETR big.bin", 150);
    let mut first = vec![0u8; 64 * 1024];
    data.read_exact(&mut first).unwrap();
    // Stop reading: the transfer stalls; then abort it.
    // RFC 959: the aborted transfer's 426, then the reply to ABOR itself. When the whole
    // file already sat in socket buffers on the way to the client, the transfer did
    // complete and its 226 is the truth.
    let r = s.cmd("ABOR");
    assert!(r.starts_with("426") || r.starts_with("226"), "{r}");
    let r = s.reply();
    assert!(r.starts_with("226") || r.starts_with("225"), "{r}");
    let r = s.cmd("NOOP");
    assert!(r.starts_with("200"), "{r}\n{}", proxy.log());
    // A new transfer in the same session works.
    let addr = s.pasv().unwrap();
    retr_hello(&mut s, addr);
    let aborted = proxy.metric("fxprelay_data_transfers_total", &[("result", "aborted")]);
    let ok = proxy.metric("fxprelay_data_transfers_total", &[("result", "ok")]);
    assert_eq!(aborted + ok, 2.0);
    wait_for("ports returned", || ports_in_use(&proxy) == 0.0);
}

#[test]
fn ipv4_client_with_ipv6_server() {
    let server = peers::V6Pyftpd::start();
    let proxy = Proxy::start(
        unique_loopback_ip(),
        ListenerSpec::new(server.addr).relay(&[]),
    );
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("big.bin");
    let base = clients::ftp_url(peers::USER, peers::PASS, proxy.addr, "");
    for mode in [Mode::PassiveTrusting, Mode::Active("127.0.0.1")] {
        // The client speaks PASV/PORT over IPv4; the proxy speaks EPSV over IPv6.
        let r = clients::curl_download(&format!("{base}big.bin"), &got, &mode);
        assert!(r.ok(), "{mode:?}: {r}\n{}", proxy.log());
        assert!(std::fs::read(&got).unwrap() == peers::big_bin());
    }
    let up = dir.path().join("up.bin");
    std::fs::write(&up, payload(1024 * 1024, 3)).unwrap();
    let r = clients::curl_upload(&format!("{base}up.bin"), &up, &Mode::PassiveTrusting);
    assert!(r.ok(), "{r}\n{}", proxy.log());
    assert_eq!(
        std::fs::read(server.root.path().join("up.bin")).unwrap(),
        std::fs::read(&up).unwrap()
    );
}

#[test]
fn failures_on_either_leg_map_to_425_and_426() {
    // Upstream leg: the server refuses passive mode and the listener insists on it.
    let server = masqueraded(ServerKind::Vsftpd, |o| o.passive = false);
    let proxy = relay_with(
        &server,
        &["upstream_data: passive"],
        "limits:\n  data_accept_timeout: 1s\n",
    );
    let mut s = Control::login(proxy.addr);
    let _addr = s.pasv().unwrap();
    let r = s.cmd("RETR hello.txt");
    assert!(r.starts_with("425 ") && r.contains("server"), "{r}");
    s.cmd_expect("NOOP", 200);

    // Client leg: a client that never connects gets 426 after data_accept_timeout, even
    // though the server sent the whole (small) file into the proxy.
    let server = masqueraded(ServerKind::Vsftpd, |_| {});
    let proxy = relay_with(&server, &[], "limits:\n  data_accept_timeout: 1s\n");
    let mut s = Control::login(proxy.addr);
    let _addr = s.pasv().unwrap();
    s.cmd_expect("RETR hello.txt", 150);
    let r = s.reply();
    assert!(r.starts_with("426 "), "{r}");
    s.cmd_expect("NOOP", 200);
    assert_eq!(
        proxy.metric("fxprelay_data_transfers_total", &[("result", "failed")]),
        1.0
    );
    wait_for("ports returned", || ports_in_use(&proxy) == 0.0);
}

#[test]
fn burst_of_transfers_and_aborts_leaves_nothing_behind() {
    let server = masqueraded(ServerKind::Vsftpd, |_| {});
    let proxy = relay(&server, &[]);
    let fds = || proxy.fd_count();
    // One warm-up session so lazily opened descriptors (e.g. the resolver) are counted.
    let warm = clients::curl_list(&url(&server, proxy.addr, ""), &Mode::PassiveTrusting);
    assert!(warm.ok(), "{warm}");
    let before = fds();

    let dir = tempfile::tempdir().unwrap();
    std::thread::scope(|scope| {
        for i in 0..8 {
            let (server, proxy, dir) = (&server, &proxy, dir.path());
            scope.spawn(move || {
                let mode = if i % 2 == 0 {
                    Mode::PassiveTrusting
                } else {
                    Mode::Active("127.0.0.1")
                };
                let got = dir.join(format!("b{i}"));
                download_big(server, proxy, &got, &mode);
            });
        }
        for _ in 0..3 {
            let proxy = &proxy;
            scope.spawn(move || {
                let mut s = Control::login(proxy.addr);
                let addr = s.pasv().unwrap();
                let mut data = TcpStream::connect(addr).unwrap();
                s.cmd_expect("RETR big.bin", 150);
                let mut some = vec![0u8; 4096];
                data.read_exact(&mut some).unwrap();
                let r = s.cmd("ABOR");
                assert!(r.starts_with("426") || r.starts_with("226"), "{r}");
                s.reply();
                // Hang up without QUIT, mid-session.
            });
        }
    });
    wait_for("ports returned", || ports_in_use(&proxy) == 0.0);
    wait_for("sessions ended", || {
        proxy.metric("fxprelay_sessions_active", &[]) == 0.0
    });
    wait_for("descriptors back to the baseline", || fds() <= before);
}

/// A relay with `FXPRELAY_SPLICE` set to `splice` moves files byte for byte both ways.
fn relay_is_byte_identical(splice: &'static str, seed: u64) {
    let server = masqueraded(ServerKind::Vsftpd, |_| {});
    let mut spec = ListenerSpec::new(server.addr).passive("always").relay(&[]);
    spec.env.push(("FXPRELAY_SPLICE", splice));
    let proxy = Proxy::start(unique_loopback_ip(), spec);
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("big.bin");
    download_big(&server, &proxy, &got, &Mode::PassiveTrusting);
    let data = payload(5 * 1024 * 1024 + 7, seed);
    let up = dir.path().join("up.bin");
    std::fs::write(&up, &data).unwrap();
    let r = clients::curl_upload(
        &url(&server, proxy.addr, "up.bin"),
        &up,
        &Mode::Active("127.0.0.1"),
    );
    assert!(r.ok(), "{r}\n{}", proxy.log());
    assert!(std::fs::read(server.file("up.bin")).unwrap() == data);
}

/// The zero-copy path (`FXPRELAY_SPLICE=1`, the default).
#[test]
fn splice_relay_is_byte_identical() {
    relay_is_byte_identical("1", 9);
}

/// The user-space copy (`FXPRELAY_SPLICE=0`, and what TLS legs use), through its growing
/// buffers.
#[test]
fn copy_relay_is_byte_identical() {
    relay_is_byte_identical("0", 10);
}

/// A client that stops reading mid-download cannot hold the transfer: after
/// `limits.data_idle_timeout` without progress it fails with 426 and its port is returned.
#[test]
fn stalled_transfer_fails_after_data_idle_timeout() {
    let server = masqueraded(ServerKind::Vsftpd, |_| {});
    // Larger than every socket buffer on the way, so the transfer must stall.
    let huge = payload(64 * 1024 * 1024, 21);
    std::fs::write(server.file("huge.bin"), &huge).unwrap();
    let proxy = relay_with(&server, &[], "limits:\n  data_idle_timeout: 1s\n");
    let mut s = Control::login(proxy.addr);
    let addr = s.pasv().unwrap();
    let _data = TcpStream::connect(addr).unwrap();
    s.cmd_expect("RETR huge.bin", 150);
    let r = s.reply();
    assert!(r.starts_with("426 "), "{r}");
    s.cmd_expect("NOOP", 200);
    wait_for("ports returned", || ports_in_use(&proxy) == 0.0);
}

/// A `PASV` nobody uses gives its port back after `limits.data_accept_timeout`, so idle
/// clients cannot hold the shared range; the session itself goes on.
#[test]
fn an_unused_passive_port_is_released() {
    let server = masqueraded(ServerKind::Vsftpd, |_| {});
    let proxy = relay_with(&server, &[], "limits:\n  data_accept_timeout: 1s\n");
    let mut s = Control::login(proxy.addr);
    let _addr = s.pasv().unwrap();
    assert_eq!(ports_in_use(&proxy), 1.0);
    wait_for("the unused port to be released", || {
        ports_in_use(&proxy) == 0.0
    });
    assert_eq!(
        proxy.metric("fxprelay_rejected_total", &[("reason", "passive_unused")]),
        1.0
    );
    s.cmd_expect("NOOP", 200);
    let r = s.cmd("RETR hello.txt");
    assert!(r.starts_with("425 "), "{r}");
}
