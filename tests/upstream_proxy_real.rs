//! `upstream_proxy_protocol`: a real HAProxy with `accept-proxy` in front of a real FTP
//! server logs the client's own address, carried by the proxy's PROXY header, not the
//! proxy's. Both versions.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;

use common::control::connect_from;
use common::haproxy::Haproxy;
use common::peers::{FtpServer, ServerKind, ServerOptions};
use common::proxy::{ListenerSpec, Proxy};
use common::{unique_loopback_ip, wait_for};

/// HAProxy accepting PROXY headers in front of `server`, logging each connection's
/// client; returns it and its address.
fn accept_proxy(server: SocketAddr) -> (Haproxy, SocketAddr) {
    let ip = unique_loopback_ip();
    let addr = SocketAddr::from((ip, common::free_port(ip.into())));
    let cfg = format!(
        "frontend ftp\n  bind {addr} accept-proxy\n  default_backend ftp\n\
         backend ftp\n  server s {server}\n"
    );
    (Haproxy::start(&cfg, addr), addr)
}

fn server_logs_the_real_client(version: &str) {
    let server = FtpServer::start(ServerKind::Vsftpd, ServerOptions::new(unique_loopback_ip()));
    let (haproxy, haproxy_addr) = accept_proxy(server.addr);
    let spec =
        ListenerSpec::new(haproxy_addr).relay(&[&format!("upstream_proxy_protocol: {version}")]);
    let proxy = Proxy::start(unique_loopback_ip(), spec);
    let client_ip = unique_loopback_ip();
    let s = connect_from(client_ip, proxy.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("220"), "{line}\n{}", proxy.log());
    w.write_all(format!("USER {}\r\n", server.user).as_bytes())
        .unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("331"), "{line}");
    w.write_all(b"QUIT\r\n").unwrap();
    line.clear();
    let _ = r.read_line(&mut line);
    drop(w);
    let client = format!("{client_ip}:");
    wait_for("HAProxy to log the session", || {
        haproxy.log().contains(&client)
    });
    let log = haproxy.log();
    // The session's log line starts with the client as HAProxy understood it.
    let session = log.lines().find(|l| l.contains("ftp ftp/s")).unwrap();
    assert!(session.starts_with(&client), "{log}");
    println!("{session}");
}

#[test]
fn a_server_behind_accept_proxy_logs_the_client_with_v2() {
    server_logs_the_real_client("v2");
}

#[test]
fn a_server_behind_accept_proxy_logs_the_client_with_v1() {
    server_logs_the_real_client("v1");
}
