//! Several fxprelay instances behind a real HAProxy speaking PROXY protocol v2: sessions
//! and relayed transfers work, and the proxy acts on the real client address (bounce
//! checks, logs), not the balancer's. Headers from untrusted sources are refused.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::clients::{self, Mode};
use common::control::{Control, connect_from};
use common::haproxy::Haproxy;
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::{ListenerSpec, Proxy};
use common::{unique_loopback_ip, wait_for};

/// The address HAProxy connects from: the one trusted load balancer.
const BALANCER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 88);

/// HAProxy balancing its control port over `backends`, connecting from [`BALANCER`]
/// with a PROXY v2 header; returns it and its address.
fn balancer(backends: &[SocketAddr]) -> (Haproxy, SocketAddr) {
    let ip = unique_loopback_ip();
    let addr = SocketAddr::from((ip, common::free_port(ip.into())));
    let mut cfg = format!(
        "frontend ftp\n  bind {addr}\n  default_backend fxprelay\n\
         backend fxprelay\n  balance roundrobin\n"
    );
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!(
            "  server fx{i} {b} send-proxy-v2 source {BALANCER}\n"
        ));
    }
    (Haproxy::start(&cfg, addr), addr)
}

fn instance(server: &FtpServer) -> Proxy {
    let spec = ListenerSpec::new(server.addr)
        .relay(&[&format!("proxy_protocol: {{trusted: [{BALANCER}/32]}}")]);
    Proxy::start(unique_loopback_ip(), spec)
}

#[test]
fn two_instances_behind_haproxy_with_proxy_v2() {
    let server = FtpServer::start(ServerKind::Vsftpd, ServerOptions::new(unique_loopback_ip()));
    let (a, b) = (instance(&server), instance(&server));
    let (_haproxy, haproxy) = balancer(&[a.addr, b.addr]);
    let dir = tempfile::tempdir().unwrap();
    let url = clients::ftp_url(server.user, server.pass, haproxy, "big.bin");
    // Active mode too: PORT names 127.0.0.1, which passes the bounce check only because
    // the proxy knows the real client address from the PROXY header.
    for (i, mode) in [
        Mode::PassiveTrusting,
        Mode::Active("127.0.0.1"),
        Mode::PassiveTrusting,
        Mode::Active("127.0.0.1"),
    ]
    .iter()
    .enumerate()
    {
        let got = dir.path().join(format!("{i}.bin"));
        let r = clients::curl_download(&url, &got, mode);
        assert!(r.ok(), "{mode:?}: {r}\nA:\n{}\nB:\n{}", a.log(), b.log());
        assert!(std::fs::read(&got).unwrap() == peers::big_bin());
    }
    for p in [&a, &b] {
        assert!(
            p.metric("fxprelay_sessions_total", &[]) >= 2.0,
            "round robin reaches both"
        );
        let log = p.log();
        assert!(log.contains("client=127.0.0.1:"), "{log}");
        assert!(!log.contains(&format!("client={BALANCER}")), "{log}");
        assert_eq!(
            p.metric("fxprelay_rejected_total", &[("reason", "bounce")]),
            0.0
        );
    }
}

#[test]
fn proxy_headers_only_from_trusted_balancers() {
    let server = FtpServer::start(ServerKind::Vsftpd, ServerOptions::new(unique_loopback_ip()));
    let proxy = instance(&server);

    // An ordinary client that sends a PROXY header: refused and closed.
    let mut c = Control::connect(proxy.addr);
    c.expect(220);
    let r = c.cmd("PROXY TCP4 203.0.113.9 127.0.0.1 40000 21");
    assert!(r.starts_with("500 "), "{r}");
    assert_eq!(
        proxy.metric("fxprelay_rejected_total", &[("reason", "proxy_untrusted")]),
        1.0
    );

    // The trusted balancer's address without a header: dropped, counted.
    let mut s = connect_from(BALANCER, proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"USER fxptest\r\n").unwrap();
    let mut rest = Vec::new();
    let read = s.read_to_end(&mut rest);
    // A timeout means the connection was left open; a reset is a close too.
    let timed_out = read.as_ref().is_err_and(|e| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    });
    assert!(!timed_out, "the connection should be closed");
    assert!(rest.is_empty(), "no greeting without a header: {rest:?}");
    wait_for("the rejection to be counted", || {
        proxy.metric("fxprelay_rejected_total", &[("reason", "proxy_header")]) == 1.0
    });
}
