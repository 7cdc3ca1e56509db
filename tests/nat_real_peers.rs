//! The core promise with real servers and real clients: a server that announces a dead
//! address in `227` (`127.0.0.99`, nothing listens there) is unusable for a client that
//! trusts the reply, and becomes usable through fxprelay, for listing, downloading and
//! uploading, passive and active, byte for byte. Plus one real NAT built from network
//! namespaces.

mod common;

use std::net::{Ipv4Addr, SocketAddr};

use common::clients::{self, FtplibOp, Mode};
use common::peers::{FtpServer, ServerKind, ServerOptions};
use common::proxy::{ListenerSpec, Proxy};
use common::{payload, unique_loopback_ip};

const DEAD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 99);

/// A server announcing the dead address, and a proxy in front of it.
fn server_behind(
    kind: ServerKind,
    spec: impl FnOnce(SocketAddr) -> ListenerSpec,
) -> (FtpServer, Proxy) {
    let mut opts = ServerOptions::new(unique_loopback_ip());
    opts.masquerade = Some(DEAD);
    let server = FtpServer::start(kind, opts);
    let proxy = Proxy::start(unique_loopback_ip(), spec(server.addr));
    (server, proxy)
}

fn url(server: &FtpServer, at: SocketAddr, path: &str) -> String {
    format!("ftp://{}:{}@{}/{}", server.user, server.pass, at, path)
}

/// Lists, downloads `big.bin` and uploads a multi-megabyte file through the proxy with
/// curl, asserting byte equality both ways.
fn curl_round_trip(server: &FtpServer, proxy: &Proxy, mode: &Mode) {
    let dir = tempfile::tempdir().unwrap();
    let listing = clients::curl_list(&url(server, proxy.addr, ""), mode);
    assert!(
        listing.ok(),
        "list through proxy failed: {listing}\nproxy log:\n{}",
        proxy.log()
    );
    assert!(listing.stdout.contains("big.bin"), "{listing}");

    let got = dir.path().join("big.bin");
    let r = clients::curl_download(&url(server, proxy.addr, "big.bin"), &got, mode);
    assert!(
        r.ok(),
        "download through proxy failed: {r}\nproxy log:\n{}",
        proxy.log()
    );
    assert!(
        std::fs::read(&got).unwrap() == std::fs::read(server.file("big.bin")).unwrap(),
        "download differs"
    );

    let up = dir.path().join("up.bin");
    let data = payload(3 * 1024 * 1024 + 17, 7);
    std::fs::write(&up, &data).unwrap();
    let r = clients::curl_upload(&url(server, proxy.addr, "up.bin"), &up, mode);
    assert!(
        r.ok(),
        "upload through proxy failed: {r}\nproxy log:\n{}",
        proxy.log()
    );
    assert!(
        std::fs::read(server.file("up.bin")).unwrap() == data,
        "upload differs"
    );
}

/// curl trusting the `227`: fails directly, works through `nat.passive: always`.
fn passive_always(kind: ServerKind) {
    let (server, proxy) = server_behind(kind, |up| ListenerSpec::new(up).passive("always"));
    let direct = clients::curl_list(&url(&server, server.addr, ""), &Mode::PassiveTrusting);
    assert!(
        !direct.ok(),
        "direct list should fail against the dead address: {direct}"
    );

    curl_round_trip(&server, &proxy, &Mode::PassiveTrusting);
    let rewrites = proxy.metric(
        "fxprelay_rewrites_total",
        &[("kind", "pasv"), ("reason", "always")],
    );
    assert!(
        rewrites >= 3.0,
        "expected a rewrite per transfer, got {rewrites}"
    );
}

/// curl announcing `PORT 0,0,0,0,...`: refused directly, fixed through `nat.active: auto`
/// with `0.0.0.0/8` as the only private range (so the loopback upstream counts as public).
fn active_auto(kind: ServerKind) {
    let (server, proxy) = server_behind(kind, |up| {
        let mut spec = ListenerSpec::new(up).passive("never").active("auto");
        spec.private_ranges = Some(vec!["0.0.0.0/8".into()]);
        spec
    });
    let direct = clients::curl_list(&url(&server, server.addr, ""), &Mode::Active("0.0.0.0"));
    assert!(!direct.ok(), "direct PORT 0.0.0.0 should fail: {direct}");

    curl_round_trip(&server, &proxy, &Mode::Active("0.0.0.0"));
    let rewrites = proxy.metric(
        "fxprelay_rewrites_total",
        &[("kind", "port"), ("reason", "private")],
    );
    assert!(
        rewrites >= 3.0,
        "expected a PORT rewrite per transfer, got {rewrites}"
    );
}

/// Python ftplib trusting the `227` (passive) and in active mode through the proxy with
/// `nat.passive: auto` and the dead address declared private (so the loopback upstream
/// counts as public).
fn ftplib_passive_auto(kind: ServerKind) {
    let (server, proxy) = server_behind(kind, |up| {
        let mut spec = ListenerSpec::new(up).passive("auto");
        spec.private_ranges = Some(vec!["127.0.0.99/32".into()]);
        spec
    });
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up.bin");
    std::fs::write(&up, payload(2 * 1024 * 1024 + 3, 11)).unwrap();

    let direct = clients::ftplib(
        server.addr,
        server.user,
        server.pass,
        true,
        "big.bin",
        &dir.path().join("x"),
        &up,
        "x.bin",
    );
    assert!(
        !direct.ok(),
        "direct ftplib trusting 227 should fail: {direct}"
    );

    clients::ftplib_round_trip(&server, &proxy, dir.path(), &up);
    let rewrites = proxy.metric(
        "fxprelay_rewrites_total",
        &[("kind", "pasv"), ("reason", "private")],
    );
    assert!(rewrites >= 3.0, "got {rewrites}");
}

/// lftp, passive and active, through the proxy with `nat.passive: always`. lftp quietly
/// replaces any 127.x address except 127.0.0.1 in a `227` with the control address, so
/// here the server binds 127.0.0.1 (the rewrite target lftp accepts); the NAT lab test
/// shows lftp failing directly and succeeding through the proxy.
fn lftp_passive_always(kind: ServerKind) {
    let mut opts = ServerOptions::new(Ipv4Addr::LOCALHOST);
    opts.masquerade = Some(DEAD);
    let server = FtpServer::start(kind, opts);
    let proxy = Proxy::start(
        unique_loopback_ip(),
        ListenerSpec::new(server.addr).passive("always"),
    );
    let dir = tempfile::tempdir().unwrap();
    let data = payload(2 * 1024 * 1024 + 5, 13);
    let up = dir.path().join("up.bin");
    std::fs::write(&up, &data).unwrap();
    let big = std::fs::read(server.file("big.bin")).unwrap();
    for passive in [true, false] {
        let got = dir.path().join(format!("lftp-{passive}.bin"));
        let name = format!("lftp-up-{passive}.bin");
        let script = format!(
            "ls; get big.bin -o {}; put {} -o {name}",
            got.display(),
            up.display()
        );
        let r = clients::lftp(proxy.addr, server.user, server.pass, passive, &script);
        assert!(
            r.ok(),
            "lftp (passive={passive}) through proxy failed: {r}\nproxy log:\n{}",
            proxy.log()
        );
        assert!(r.stdout.contains("big.bin"), "{r}");
        assert!(std::fs::read(&got).unwrap() == big, "lftp download differs");
        assert!(
            std::fs::read(server.file(&name)).unwrap() == data,
            "lftp upload differs"
        );
    }
    let rewrites = proxy.metric(
        "fxprelay_rewrites_total",
        &[("kind", "pasv"), ("reason", "always")],
    );
    assert!(rewrites >= 2.0, "got {rewrites}");
}

/// `nat.passive: never` leaves the dead address in place: the proxy alone changes nothing.
#[test]
fn passive_never_leaves_the_broken_address() {
    let (server, proxy) = server_behind(ServerKind::Vsftpd, |up| {
        ListenerSpec::new(up).passive("never")
    });
    let r = clients::curl_list(&url(&server, proxy.addr, ""), &Mode::PassiveTrusting);
    assert!(
        !r.ok(),
        "listing should fail with the address untouched: {r}"
    );
    assert_eq!(proxy.metric("fxprelay_rewrites_total", &[]), 0.0);
    assert!(proxy.metric("fxprelay_replies_total", &[("class", "2xx")]) >= 1.0);
}

macro_rules! per_server {
    ($($name:ident => $kind:expr),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[test]
                fn curl_passive_always() { super::passive_always($kind) }
                #[test]
                fn curl_active_auto() { super::active_auto($kind) }
                #[test]
                fn ftplib_passive_auto() { super::ftplib_passive_auto($kind) }
                #[test]
                fn lftp_passive_always() { super::lftp_passive_always($kind) }
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

/// A real NAT: the server lives in a namespace behind a router namespace that DNATs its
/// control port and passive range, and it announces its private address. Through the
/// proxy with `nat.passive: auto` curl, lftp and ftplib that trust the `227` work;
/// directly, or through the proxy with `never`, they do not.
#[test]
fn real_nat_behind_router_namespace() {
    let lab = common::netns::NatLab::new();
    let mut opts = ServerOptions::new(lab.server_ip);
    opts.netns = Some(lab.server_ns.clone());
    opts.pasv_ports = Some(common::netns::PASV_PORTS);
    let public = SocketAddr::from((lab.public_ip, 21));
    let server = FtpServer::start_at(ServerKind::Vsftpd, opts, public);
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("big.bin");
    let get = format!("get big.bin -o {}", got.display());
    let big = std::fs::read(server.file("big.bin")).unwrap();

    let direct = clients::curl_list(&url(&server, public, ""), &Mode::PassiveTrusting);
    assert!(
        !direct.ok(),
        "direct curl trusting the private 227 should fail: {direct}"
    );
    let direct = clients::lftp(public, server.user, server.pass, true, &get);
    assert!(
        !direct.ok(),
        "direct lftp trusting the private 227 should fail: {direct}"
    );

    let proxy = Proxy::start(
        unique_loopback_ip(),
        ListenerSpec::new(public).passive("auto"),
    );
    curl_round_trip(&server, &proxy, &Mode::PassiveTrusting);
    let _ = std::fs::remove_file(&got);
    let r = clients::lftp(proxy.addr, server.user, server.pass, true, &get);
    assert!(
        r.ok(),
        "lftp through proxy failed: {r}\nproxy log:\n{}",
        proxy.log()
    );
    assert!(std::fs::read(&got).unwrap() == big, "lftp download differs");
    let _ = std::fs::remove_file(&got);
    let r = clients::ftplib_ops(
        proxy.addr,
        server.user,
        server.pass,
        true,
        &[FtplibOp::Get("big.bin", &got)],
    );
    assert!(
        r.ok(),
        "ftplib through proxy failed: {r}\nproxy log:\n{}",
        proxy.log()
    );
    assert!(
        std::fs::read(&got).unwrap() == big,
        "ftplib download differs"
    );
    let rewrites = proxy.metric(
        "fxprelay_rewrites_total",
        &[("kind", "pasv"), ("reason", "private")],
    );
    assert!(rewrites >= 5.0, "got {rewrites}\n{}", proxy.log());

    let never = Proxy::start(
        unique_loopback_ip(),
        ListenerSpec::new(public).passive("never"),
    );
    let r = clients::curl_list(&url(&server, never.addr, ""), &Mode::PassiveTrusting);
    assert!(
        !r.ok(),
        "with nat.passive: never the private address must stay broken: {r}"
    );
    assert_eq!(never.metric("fxprelay_rewrites_total", &[]), 0.0);
}
