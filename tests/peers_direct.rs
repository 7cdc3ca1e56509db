//! The real-peer test infrastructure on its own, with no proxy: every server starts,
//! serves its fixtures, announces the dead masqueraded address `127.0.0.99` when asked,
//! and every client helper behaves as the proxy tests assume: a client that trusts the
//! `227` address fails directly, one that ignores it works, and active mode works.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use common::clients::{self, ClientResult, FtplibOp, Mode};
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::unique_loopback_ip;

const DEAD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 99);

fn masqueraded(kind: ServerKind) -> FtpServer {
    let mut opts = ServerOptions::new(unique_loopback_ip());
    opts.masquerade = Some(DEAD);
    FtpServer::start(kind, opts)
}

fn url(server: &FtpServer, path: &str) -> String {
    clients::ftp_url(server.user, server.pass, server.addr, path)
}

fn check(r: &ClientResult, what: &str, server: &FtpServer) {
    assert!(r.ok(), "{what} failed: {r}\n{}", server.log());
}

/// Deterministic test content, different from `big.bin`.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// curl: ignoring the `227` address lists and downloads; trusting it fails against the
/// dead address; active mode uploads.
fn curl_masqueraded(kind: ServerKind) {
    let server = masqueraded(kind);
    let dir = tempfile::tempdir().unwrap();

    let list = clients::curl_list(&url(&server, ""), &Mode::Passive);
    check(&list, "curl NLST ignoring the 227 address", &server);
    assert!(list.stdout.contains(peers::BIG_NAME), "{list}");
    assert!(list.stdout.contains(peers::HELLO_NAME), "{list}");
    assert!(
        contains(&list.stdout_bytes, peers::LATIN1_NAME),
        "Latin-1 name not listed byte for byte: {list}"
    );

    let long = clients::curl_list_long(&url(&server, ""), &Mode::Passive);
    check(&long, "curl LIST", &server);
    assert!(long.stdout.contains(peers::BIG_NAME), "{long}");

    let got = dir.path().join("big.bin");
    let r = clients::curl_download(&url(&server, peers::BIG_NAME), &got, &Mode::Passive);
    check(&r, "curl RETR big.bin", &server);
    assert!(
        std::fs::read(&got).unwrap() == peers::big_bin(),
        "big.bin differs"
    );

    // curl names the control host in its error message: `-v` shows where it connected.
    let got = dir.path().join("latin1.txt");
    let r = clients::curl_download(&url(&server, "caf%E9.txt"), &got, &Mode::Passive);
    check(&r, "curl RETR of a Latin-1 name", &server);
    assert_eq!(std::fs::read(&got).unwrap(), peers::LATIN1);

    let trusting = clients::curl(
        &url(&server, ""),
        &Mode::PassiveTrusting,
        ["--list-only", "-v"],
    );
    assert!(
        !trusting.ok(),
        "trusting the dead 227 address should fail: {trusting}"
    );
    assert!(!trusting.timed_out, "{trusting}");
    assert_eq!(
        trusting.code(),
        Some(7),
        "expected `couldn't connect`: {trusting}"
    );
    assert!(
        trusting.stderr.contains("connect to 127.0.0.99 port")
            && trusting.stderr.contains("Connection refused"),
        "{trusting}"
    );

    let up = dir.path().join("up.bin");
    let data = payload(1024 * 1024 + 5, 3);
    std::fs::write(&up, &data).unwrap();
    let r = clients::curl_upload(&url(&server, "up.bin"), &up, &Mode::Active("127.0.0.1"));
    check(&r, "curl active STOR", &server);
    assert!(
        std::fs::read(server.file("up.bin")).unwrap() == data,
        "uploaded file differs"
    );
}

/// lftp and ftplib in active mode work; ftplib trusting the dead `227` address fails.
/// lftp cannot be made to trust `127.0.0.99`: see `lftp_trusts_only_127_0_0_1`.
fn lftp_and_ftplib(kind: ServerKind) {
    let server = masqueraded(kind);
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up.bin");
    let data = payload(300 * 1024 + 1, 9);
    std::fs::write(&up, &data).unwrap();

    let got = dir.path().join("lftp-hello.txt");
    let script = format!(
        "ls; get hello.txt -o {}; put {} -o lftp-up.bin",
        got.display(),
        up.display()
    );
    let r = clients::lftp(server.addr, server.user, server.pass, false, &script);
    check(&r, "lftp active", &server);
    assert!(r.stdout.contains(peers::BIG_NAME), "{r}");
    assert_eq!(std::fs::read(&got).unwrap(), peers::HELLO);
    assert!(std::fs::read(server.file("lftp-up.bin")).unwrap() == data);

    let got = dir.path().join("ftplib-big.bin");
    let r = clients::ftplib(
        server.addr,
        server.user,
        server.pass,
        false,
        peers::BIG_NAME,
        &got,
        &up,
        "ftplib-up.bin",
    );
    check(&r, "ftplib active", &server);
    assert!(std::fs::read(&got).unwrap() == peers::big_bin());
    assert!(std::fs::read(server.file("ftplib-up.bin")).unwrap() == data);

    let r = clients::ftplib_ops(
        server.addr,
        server.user,
        server.pass,
        true,
        &[FtplibOp::Nlst],
    );
    assert!(
        !r.ok(),
        "ftplib trusting the dead 227 address should fail: {r}"
    );
    assert!(!r.timed_out, "{r}");
    assert!(r.stderr.contains("Connection refused"), "{r}");
}

/// lftp 4.9 replaces any `227` address in 127.0.0.0/8 other than 127.0.0.1 with the
/// control connection's address (it counts them as "reserved"), whatever
/// `ftp:fix-pasv-address` says. So against `127.0.0.99` lftp "works"; to see lftp trust
/// a wrong loopback address, a server must announce 127.0.0.1 (nothing listens on its
/// passive ports there).
#[test]
fn lftp_trusts_only_127_0_0_1() {
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("hello.txt");
    let script = format!("get hello.txt -o {}", got.display());

    let server = masqueraded(ServerKind::Vsftpd);
    let r = clients::lftp(server.addr, server.user, server.pass, true, &script);
    check(
        &r,
        "lftp passive against 127.0.0.99 (silently fixed by lftp)",
        &server,
    );
    assert_eq!(std::fs::read(&got).unwrap(), peers::HELLO);

    let mut opts = ServerOptions::new(unique_loopback_ip());
    opts.masquerade = Some(Ipv4Addr::LOCALHOST);
    let server = FtpServer::start(ServerKind::Vsftpd, opts);
    let r = clients::lftp(server.addr, server.user, server.pass, true, &script);
    assert!(
        !r.ok(),
        "lftp trusting 127.0.0.1 in the 227 should fail: {r}"
    );
    assert!(!r.timed_out, "{r}");
}

/// Passive refused where the server supports that (all but pure-ftpd), FXP options on:
/// the generated configuration is accepted, passive fails, active still works.
fn options_variants(kind: ServerKind) {
    let mut opts = ServerOptions::new(unique_loopback_ip());
    opts.foreign_data = true;
    opts.passive = kind == ServerKind::PureFtpd;
    let server = FtpServer::start(kind, opts);

    let r = clients::curl_list(&url(&server, ""), &Mode::Passive);
    if kind == ServerKind::PureFtpd {
        check(&r, "curl passive (foreign data allowed)", &server);
    } else {
        assert!(!r.ok(), "passive should be refused: {r}");
    }
    let r = clients::curl_list(&url(&server, ""), &Mode::Active("127.0.0.1"));
    check(&r, "curl active", &server);
    assert!(r.stdout.contains(peers::HELLO_NAME), "{r}");
}

macro_rules! per_server {
    ($($name:ident => $kind:expr),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[test]
                fn curl_masqueraded() { super::curl_masqueraded($kind) }
                #[test]
                fn lftp_and_ftplib() { super::lftp_and_ftplib($kind) }
                #[test]
                fn options_variants() { super::options_variants($kind) }
                #[test]
                fn drop_stops_everything() { super::drop_stops_everything($kind) }
            }
        )*
    };
}

per_server! {
    vsftpd => ServerKind::Vsftpd,
    pure_ftpd => ServerKind::PureFtpd,
    proftpd => ServerKind::Proftpd,
    pyftpdlib => ServerKind::Pyftpdlib,
}

/// Dropping a server stops every process it started, sessions included: the listener
/// refuses, an open session is cut, the process groups are gone.
fn drop_stops_everything(kind: ServerKind) {
    let server = FtpServer::start(kind, ServerOptions::new(unique_loopback_ip()));
    let addr = server.addr;
    let mut session = TcpStream::connect(addr).unwrap();
    session
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut greeting = [0u8; 3];
    session.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"220");
    let pgids = server.pids();
    assert!(!pgids.is_empty());
    drop(server);

    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "{addr} still accepts connections"
    );
    let mut rest = Vec::new();
    match session.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert!(
            e.kind() == std::io::ErrorKind::ConnectionReset,
            "session not cut: {e}"
        ),
    }
    for pgid in pgids {
        assert!(
            !peers::group_alive(pgid as libc::pid_t),
            "process group {pgid} survives the drop"
        );
    }
}

#[test]
fn unique_loopback_ips_are_distinct_and_never_127_0_0_x() {
    let ips: Vec<_> = (0..2000).map(|_| unique_loopback_ip()).collect();
    let set: std::collections::HashSet<_> = ips.iter().collect();
    assert_eq!(set.len(), ips.len());
    for ip in ips {
        let o = ip.octets();
        assert_eq!(o[0], 127);
        assert!((10..=250).contains(&o[1]), "{ip}");
        assert!(o[3] != 0 && o[3] != 255, "{ip}");
    }
}
