//! The edge defense with real clients and a real server: wrong passwords from curl, lftp
//! and Python ftplib ban their source address, whose next connection is refused with
//! `421` by the proxy alone (the server never sees it), while clients from other
//! addresses log in and download as before; bans expire, repeat bans double, the admin
//! API lifts and imposes them, exempt networks are never banned, and behind HAProxy with
//! PROXY protocol v2 the client's address is the one banned, never the balancer's.
//!
//! Each attacker and each legitimate client gets its own 127.x.y.z as source address.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::clients::{self, Mode};
use common::control::connect_from;
use common::haproxy::Haproxy;
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::{ListenerSpec, Proxy, http};
use common::{unique_loopback_ip, wait_for, wait_for_within};

const REFUSAL: &str = "421 Too many failed logins from your address; try again later.";
const TOKEN: &str = "s3cret";

/// pyftpdlib on its own address, answering wrong passwords at once (its own 3 s delay
/// would only slow the test down: the proxy's tarpit is tested on its own).
fn server() -> FtpServer {
    let mut opts = ServerOptions::new(unique_loopback_ip());
    opts.auth_failed_delay = Some(Duration::ZERO);
    FtpServer::start(ServerKind::Pyftpdlib, opts)
}

/// A relay-mode proxy in front of `server` with this top-level `defense:` block.
fn proxy(server: &FtpServer, defense: &str) -> Proxy {
    let mut spec = ListenerSpec::new(server.addr).relay(&[]);
    spec.admin_token = Some(TOKEN);
    Proxy::start_with(unique_loopback_ip(), spec, &format!("defense:\n{defense}"))
}

/// How many control connections the server has seen (pyftpdlib logs each).
fn server_sessions(server: &FtpServer) -> usize {
    server.log().matches("FTP session opened").count()
}

/// One wrong password from `source` with curl; it must fail with the server's `530`.
fn curl_wrong(proxy: &Proxy, server: &FtpServer, source: Ipv4Addr) {
    let url = clients::ftp_url(server.user, "wrong", proxy.addr, "");
    let r = clients::curl(&url, &Mode::Passive, ["--interface", &source.to_string()]);
    assert_eq!(
        r.code(),
        Some(67),
        "curl: login denied\n{r}\n{}",
        proxy.log()
    );
}

fn lftp_wrong(proxy: &Proxy, server: &FtpServer, source: Ipv4Addr) {
    let r = clients::lftp_from(proxy.addr, (server.user, "wrong"), source, "ls");
    assert!(
        !r.ok() && (r.stderr.contains("530") || r.stderr.contains("Login failed")),
        "lftp: login denied\n{r}\n{}",
        proxy.log()
    );
}

fn ftplib_wrong(proxy: &Proxy, server: &FtpServer, source: Ipv4Addr) {
    let r = clients::ftplib_from(proxy.addr, (server.user, "wrong"), source, &[]);
    assert!(
        !r.ok() && r.stderr.contains("530"),
        "ftplib: login denied\n{r}\n{}",
        proxy.log()
    );
}

/// The first reply the proxy gives a new connection from `source` to `to`, and how long
/// it took from the connect.
fn first_reply(source: Ipv4Addr, to: SocketAddr) -> (String, Duration) {
    let started = Instant::now();
    let mut s = connect_from(source, to).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let took = started.elapsed();
    let _ = s.write_all(b"QUIT\r\n");
    (String::from_utf8_lossy(&got).trim_end().to_string(), took)
}

/// Downloads `big.bin` through `at` from `source` with curl, checking every byte.
fn download_from(at: SocketAddr, server: &FtpServer, source: Ipv4Addr, proxy: &Proxy) {
    download_with(&Mode::Passive, at, server, source, proxy)
}

fn download_with(mode: &Mode, at: SocketAddr, server: &FtpServer, source: Ipv4Addr, proxy: &Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("big.bin");
    let url = clients::ftp_url(server.user, server.pass, at, "big.bin");
    let r = clients::curl(
        &url,
        mode,
        [
            "--interface".as_ref(),
            source.to_string().as_ref(),
            "-o".as_ref(),
            got.as_os_str(),
        ],
    );
    assert!(r.ok(), "{r}\n{}", proxy.log());
    assert!(
        std::fs::read(&got).unwrap() == peers::big_bin(),
        "byte-identical"
    );
}

/// The ban list as the admin API gives it.
fn bans(proxy: &Proxy) -> serde_json::Value {
    let (status, body) = http(proxy.admin, "GET", "/api/v1/bans", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["bans"].clone()
}

#[test]
fn wrong_passwords_from_curl_lftp_and_ftplib_ban_their_address_and_no_other() {
    let server = server();
    let proxy = proxy(&server, "  threshold: 10\n");
    let (attacker, user) = (unique_loopback_ip(), unique_loopback_ip());
    // Ten wrong passwords, from three clients, all reaching the server: 4 + 3 + 3.
    for _ in 0..4 {
        curl_wrong(&proxy, &server, attacker);
    }
    for _ in 0..3 {
        lftp_wrong(&proxy, &server, attacker);
    }
    for _ in 0..3 {
        ftplib_wrong(&proxy, &server, attacker);
    }
    wait_for("the ban", || {
        proxy.metric("fxprelay_bans_active", &[]) == 1.0
    });
    assert!(
        proxy.metric(
            "fxprelay_defense_events_total",
            &[("event", "login_failed")]
        ) >= 10.0,
        "{}",
        proxy.metrics()
    );
    let log = proxy.log();
    let ban_line = log
        .lines()
        .find(|l| l.contains(" ban ") && l.contains(&format!("client={attacker}")))
        .unwrap_or_else(|| panic!("an INFO line for the ban\n{log}"));
    assert!(
        ban_line.contains("INFO") && ban_line.contains("until=") && ban_line.contains("score=10"),
        "{ban_line}"
    );
    assert!(ban_line.contains("events=login_failed:10"), "{ban_line}");
    let listed = bans(&proxy);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["address"], attacker.to_string());
    assert_eq!(listed[0]["source"], "defense");

    // Its next connection: refused by the proxy at once, the server never asked.
    wait_for("the server to log every attempt", || {
        server_sessions(&server) >= 10
    });
    let before = server_sessions(&server);
    let (reply, took) = first_reply(attacker, proxy.addr);
    assert_eq!(reply, REFUSAL);
    assert!(took < Duration::from_millis(50), "refused in {took:?}");
    for ftplib in [false, true] {
        let r = if ftplib {
            clients::ftplib_from(proxy.addr, (server.user, server.pass), attacker, &[])
        } else {
            let url = clients::ftp_url(server.user, server.pass, proxy.addr, "");
            clients::curl(&url, &Mode::Passive, ["--interface", &attacker.to_string()])
        };
        // ftplib shows the 421; curl 7.88 reports a greeting of 421 as a timeout (28).
        assert!(
            !r.ok() && (!ftplib || r.stderr.contains(REFUSAL)),
            "the right password does not help now: {r}"
        );
    }
    assert!(
        proxy.metric(
            "fxprelay_rejected_total",
            &[("listener", "test"), ("reason", "banned")]
        ) >= 3.0
    );

    // Meanwhile another address logs in and downloads, byte for byte.
    download_from(proxy.addr, &server, user, &proxy);
    wait_for("the other client's session in the server's log", || {
        server_sessions(&server) > before
    });
    assert_eq!(
        server_sessions(&server),
        before + 1,
        "only the other client's connection reached the server\n{}",
        server.log()
    );
    assert_eq!(proxy.metric("fxprelay_bans_total", &[]), 1.0);
}

#[test]
fn a_short_ban_expires_a_repeat_doubles_and_the_api_lifts_and_imposes_bans() {
    let server = server();
    let proxy = proxy(&server, "  threshold: 2\n  ban: 2s\n  max_ban: 1m\n");
    let attacker = unique_loopback_ip();
    curl_wrong(&proxy, &server, attacker);
    ftplib_wrong(&proxy, &server, attacker);
    let banned_at = Instant::now();
    assert_eq!(first_reply(attacker, proxy.addr).0, REFUSAL);
    assert_eq!(bans(&proxy)[0]["seconds"], 2);
    // It ends on its own: the proxy greets the client again (the server's 220).
    wait_for_within(Duration::from_secs(10), "the ban to end", || {
        first_reply(attacker, proxy.addr).0.starts_with("220")
    });
    let lasted = banned_at.elapsed();
    assert!(
        lasted >= Duration::from_millis(1900),
        "ended after {lasted:?}"
    );
    wait_for("the unban line", || {
        proxy
            .log()
            .contains(&format!("unban client={attacker} reason=\"expired\""))
            || proxy
                .log()
                .contains(&format!("unban client={attacker} reason=expired"))
    });
    assert_eq!(proxy.metric("fxprelay_bans_active", &[]), 0.0);

    // Again: the repeat ban is twice as long.
    curl_wrong(&proxy, &server, attacker);
    curl_wrong(&proxy, &server, attacker);
    assert_eq!(first_reply(attacker, proxy.addr).0, REFUSAL);
    assert_eq!(bans(&proxy)[0]["seconds"], 4, "{}", bans(&proxy));
    // DELETE lets it in at once.
    let path = format!("/api/v1/bans/{attacker}");
    assert_eq!(http(proxy.admin, "DELETE", &path, None, "").0, 401);
    let (status, body) = http(proxy.admin, "DELETE", &path, Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    assert!(first_reply(attacker, proxy.addr).0.starts_with("220"));
    assert_eq!(http(proxy.admin, "DELETE", &path, Some(TOKEN), "").0, 404);
    assert!(proxy.log().contains(&format!("unban client={attacker}")));

    // An operator's ban: refused at once, listed, lifted.
    let other = unique_loopback_ip();
    let body = format!("{{\"address\": \"{other}\", \"duration\": \"1h\"}}");
    let (status, made) = http(proxy.admin, "POST", "/api/v1/bans", Some(TOKEN), &body);
    assert_eq!(status, 201, "{made}");
    assert_eq!(first_reply(other, proxy.addr).0, REFUSAL);
    let listed = bans(&proxy);
    assert_eq!(listed[0]["source"], "api", "{listed}");
    assert_eq!(listed[0]["seconds"], 3600);
    let (status, _) = http(
        proxy.admin,
        "POST",
        "/api/v1/bans",
        Some(TOKEN),
        "{\"address\": \"nonsense\"}",
    );
    assert_eq!(status, 400);
    http(
        proxy.admin,
        "DELETE",
        &format!("/api/v1/bans/{other}"),
        Some(TOKEN),
        "",
    );
    download_from(proxy.addr, &server, other, &proxy);
}

#[test]
fn exempt_addresses_are_never_banned() {
    let server = server();
    let trusted = unique_loopback_ip();
    let proxy = proxy(
        &server,
        &format!("  threshold: 2\n  exempt: [\"{trusted}/32\"]\n"),
    );
    for _ in 0..4 {
        curl_wrong(&proxy, &server, trusted);
    }
    download_from(proxy.addr, &server, trusted, &proxy);
    assert_eq!(proxy.metric("fxprelay_bans_total", &[]), 0.0);
    let body = format!("{{\"address\": \"{trusted}\"}}");
    let (status, answer) = http(proxy.admin, "POST", "/api/v1/bans", Some(TOKEN), &body);
    assert_eq!(status, 403, "{answer}");
}

/// The address HAProxy connects from: the one trusted load balancer.
const BALANCER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 89);

#[test]
fn behind_haproxy_the_client_is_banned_never_the_balancer() {
    let server = server();
    let mut spec = ListenerSpec::new(server.addr)
        .relay(&[&format!("proxy_protocol: {{trusted: [{BALANCER}/32]}}")]);
    spec.admin_token = Some(TOKEN);
    let proxy = Proxy::start_with(unique_loopback_ip(), spec, "defense:\n  threshold: 3\n");
    let ip = unique_loopback_ip();
    let front = SocketAddr::from((ip, common::free_port(ip.into())));
    let cfg = format!(
        "frontend ftp\n  bind {front}\n  default_backend fxprelay\n\
         backend fxprelay\n  server fx {} send-proxy-v2 source {BALANCER}\n",
        proxy.addr
    );
    let haproxy = Haproxy::start(&cfg, front);
    let (attacker, user) = (unique_loopback_ip(), unique_loopback_ip());
    let wrong = clients::ftp_url(server.user, "wrong", front, "");
    for _ in 0..3 {
        let r = clients::curl(
            &wrong,
            &Mode::Passive,
            ["--interface", &attacker.to_string()],
        );
        assert_eq!(r.code(), Some(67), "{r}\n{}", proxy.log());
    }
    wait_for("the ban", || {
        proxy.metric("fxprelay_bans_active", &[]) == 1.0
    });
    let (reply, _) = first_reply(attacker, front);
    assert_eq!(reply, REFUSAL, "{}", haproxy.log());
    let listed = bans(&proxy);
    assert_eq!(listed[0]["address"], attacker.to_string(), "{listed}");
    let log = proxy.log();
    assert!(log.contains(&format!("ban client={attacker}")), "{log}");
    assert!(!log.contains(&format!("client={BALANCER}")), "{log}");
    // Through the same balancer, another client logs in and downloads (relay mode: its
    // data connection goes straight to the proxy's data port, the `227` address).
    download_with(&Mode::PassiveTrusting, front, &server, user, &proxy);
}
