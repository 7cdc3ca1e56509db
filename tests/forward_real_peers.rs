//! Forward mode with real servers: the client names its server in `USER user@host:port`,
//! the proxy checks it against the allow list (and its own addresses) and relays.

mod common;

use std::net::SocketAddr;

use common::clients::{self, FtplibOp, Mode};
use common::control::Control;
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::{ListenerSpec, Proxy};
use common::unique_loopback_ip;

fn vsftpd() -> FtpServer {
    FtpServer::start(ServerKind::Vsftpd, ServerOptions::new(unique_loopback_ip()))
}

/// curl's URL for `user@host:port` through the proxy (the `@` and `:` percent-encoded).
fn forward_url(server: SocketAddr, proxy: SocketAddr, path: &str) -> String {
    format!(
        "ftp://{}%40{}%3A{}:{}@{}/{}",
        peers::USER,
        server.ip(),
        server.port(),
        peers::PASS,
        proxy,
        path
    )
}

#[test]
fn user_at_host_reaches_an_allowed_server_in_both_data_modes() {
    let server = vsftpd();
    let allow = format!("{}/32", server.addr.ip());
    for data in ["relay", "passthrough"] {
        let mut spec = ListenerSpec::forward(&[&allow]);
        spec.data = data;
        let proxy = Proxy::start(unique_loopback_ip(), spec);
        let dir = tempfile::tempdir().unwrap();
        let got = dir.path().join("big.bin");
        let url = forward_url(server.addr, proxy.addr, "big.bin");
        let r = clients::curl_download(&url, &got, &Mode::PassiveTrusting);
        assert!(r.ok(), "{data}: {r}\n{}", proxy.log());
        assert!(std::fs::read(&got).unwrap() == peers::big_bin(), "{data}");

        // ftplib, with the same convention in its user name.
        let user = format!("{}@{}", peers::USER, server.addr);
        let list = clients::ftplib_ops(proxy.addr, &user, peers::PASS, true, &[FtplibOp::Nlst]);
        assert!(list.ok(), "{data}: {list}\n{}", proxy.log());
        assert!(list.stdout.contains("big.bin"), "{list}");
    }
}

/// A control connection to a forward listener, past the proxy's own greeting.
fn greeted(proxy: &Proxy) -> Control {
    let mut c = Control::connect(proxy.addr);
    let r = c.reply();
    assert!(r.starts_with("220 fxprelay"), "{r}");
    c
}

#[test]
fn hosts_outside_the_allow_list_and_the_proxy_itself_are_refused() {
    let server = vsftpd();
    let proxy = Proxy::start(
        unique_loopback_ip(),
        ListenerSpec::forward(&[&format!("{}/32", server.addr.ip())]),
    );
    let mut c = greeted(&proxy);
    // Another loopback address: not listed, so never even connected to.
    let other = SocketAddr::from((unique_loopback_ip(), server.addr.port()));
    let r = c.cmd(&format!("USER fxptest@{other}"));
    assert!(
        r.starts_with("530 ") && r.contains("not in the allow list"),
        "{r}"
    );
    let r = c.cmd("PASV");
    assert!(r.starts_with("530 ") && r.contains("USER user@host"), "{r}");
    let r = c.cmd("USER nobody-without-a-host");
    assert!(r.starts_with("530 "), "{r}");
    // The allowed one works in the same session.
    let r = c.cmd(&format!("USER fxptest@{}", server.addr));
    assert!(r.starts_with("331"), "{r}");
    assert_eq!(
        proxy.metric("fxprelay_rejected_total", &[("reason", "forward_denied")]),
        1.0
    );

    // Loop guard: even when the allow list covers it, the proxy never dials itself.
    let wide = Proxy::start(
        unique_loopback_ip(),
        ListenerSpec::forward(&["127.0.0.0/8"]),
    );
    let mut c = greeted(&wide);
    let r = c.cmd(&format!("USER x@{}", wide.addr));
    assert!(
        r.starts_with("530 ") && r.contains("this proxy itself"),
        "{r}"
    );
    let r = c.cmd(&format!("USER x@{}", wide.admin));
    assert!(
        r.starts_with("530 ") && r.contains("this proxy itself"),
        "{r}"
    );
    let r = c.cmd("QUIT");
    assert!(r.starts_with("221"), "{r}");
}

/// In forward mode the client picks the server, so the server's `227` must not send the
/// proxy to a third host: the proxy connects to the server itself, whatever it announces.
#[test]
fn a_chosen_server_cannot_point_the_proxy_at_a_third_host() {
    // A trap on a third address, on the very port the server will announce.
    let third = unique_loopback_ip();
    let trap = std::net::TcpListener::bind((third, 0)).unwrap();
    trap.set_nonblocking(true).unwrap();
    let port = trap.local_addr().unwrap().port();
    let mut opts = ServerOptions::new(unique_loopback_ip());
    opts.masquerade = Some(third);
    opts.pasv_ports = Some((port, port));
    let server = FtpServer::start(ServerKind::Pyftpdlib, opts);
    let allow = format!("{}/32", server.addr.ip());
    // Relay mode: the proxy makes the data connection (in passthrough the client would,
    // to wherever the 227 says, as it could without a proxy).
    let mut spec = ListenerSpec::forward(&[&allow]);
    spec.data = "relay";
    let proxy = Proxy::start(unique_loopback_ip(), spec);

    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("big.bin");
    let url = forward_url(server.addr, proxy.addr, "big.bin");
    let r = clients::curl_download(&url, &got, &Mode::PassiveTrusting);
    assert!(r.ok(), "{r}\n{}\n{}", proxy.log(), server.log());
    assert!(std::fs::read(&got).unwrap() == peers::big_bin());
    let knocked = trap.accept();
    assert!(
        knocked
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the proxy connected to the third host: {knocked:?}"
    );
}
