//! The proxy binary's life as an operator sees it, against real servers: graceful
//! shutdown on SIGTERM, `421` for an unreachable upstream, secrets kept out of the logs,
//! hostile clients answered without disturbing others, and non-UTF-8 paths relayed
//! byte for byte.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::clients::{self, Mode};
use common::control::Control;
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::{ListenerSpec, Proxy, http_get};
use common::{unique_loopback_ip, wait_for, wait_for_within};

fn vsftpd() -> FtpServer {
    FtpServer::start(ServerKind::Vsftpd, ServerOptions::new(unique_loopback_ip()))
}

#[test]
fn sigterm_drains_open_sessions_then_exits() {
    let server = vsftpd();
    let mut proxy = Proxy::start_with(
        unique_loopback_ip(),
        ListenerSpec::new(server.addr),
        "limits:\n  shutdown_grace: 1s\n",
    );
    let mut c = Control::connect(proxy.addr);
    c.expect(220);

    unsafe { libc::kill(proxy.pid() as i32, libc::SIGTERM) };
    // Draining: /healthz says so and new clients are not accepted ...
    wait_for("healthz to report draining", || {
        http_get(proxy.admin, "/healthz")
            .is_ok_and(|(status, body)| status == 503 && body.trim() == "draining")
    });
    wait_for("the listener to close", || {
        TcpStream::connect(proxy.addr).is_err()
    });
    // ... while the open session is still served ...
    let r = c.cmd("USER fxptest");
    assert!(
        r.starts_with("331"),
        "open session should work while draining: {r}"
    );
    // ... and when it ends the session is told and closed, and the process exits cleanly.
    c.expect(421);
    assert!(c.closed());
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("proxy exits after the grace period");
    assert!(status.success(), "{status}\n{}", proxy.log());
}

#[test]
fn a_half_sent_admin_request_does_not_hold_up_shutdown() {
    let server = vsftpd();
    let mut proxy = Proxy::start_with(
        unique_loopback_ip(),
        ListenerSpec::new(server.addr),
        "limits:\n  shutdown_grace: 1s\n",
    );
    // Promises 100 bytes of body, sends 5, then goes quiet. `Expect: 100-continue` makes
    // the server say when it has started reading the body, so the request is in flight.
    let mut admin = TcpStream::connect(proxy.admin).unwrap();
    admin
        .write_all(
            b"POST /api/v1/transfers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    admin
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = [0u8; 25];
    admin.read_exact(&mut got).unwrap();
    assert!(got.starts_with(b"HTTP/1.1 100 Continue"), "{got:?}");
    admin.write_all(b"{\"a\":").unwrap();
    let status = proxy
        .terminate(Duration::from_secs(15))
        .expect("proxy exits despite the pending request");
    assert!(status.success(), "{status}\n{}", proxy.log());
    drop(admin);
}

#[test]
fn unreachable_upstream_gets_421_and_is_counted() {
    // Nothing listens on this address and port.
    let dead = SocketAddr::from((unique_loopback_ip(), 21));
    let proxy = Proxy::start(unique_loopback_ip(), ListenerSpec::new(dead));
    let mut c = Control::connect(proxy.addr);
    c.expect(421);
    assert!(c.closed());
    assert_eq!(
        proxy.metric("fxprelay_upstream_errors_total", &[("reason", "refused")]),
        1.0
    );
    assert_eq!(proxy.metric("fxprelay_sessions_active", &[]), 0.0);

    // Forward mode: the INFO log names the host the client could not reach.
    let mut spec = ListenerSpec::forward(&["127.0.0.0/8"]);
    spec.env = vec![("RUST_LOG", "info")];
    let proxy = Proxy::start(unique_loopback_ip(), spec);
    let mut c = Control::connect(proxy.addr);
    c.expect(220);
    let r = c.cmd(&format!("USER anonymous@{dead}"));
    assert!(r.starts_with("421"), "{r}");
    wait_for("the forward failure's line", || {
        proxy.log().contains("forward target unreachable")
    });
    let log = proxy.log();
    assert!(
        log.lines()
            .any(|l| l.contains("forward target unreachable") && l.contains(&dead.to_string())),
        "{log}"
    );
}

#[test]
fn pass_argument_never_reaches_the_log() {
    let server = vsftpd();
    let proxy = Proxy::start(unique_loopback_ip(), ListenerSpec::new(server.addr));
    let secret = "s3cr3t-do-not-log-7731";
    let url = format!("ftp://{}:{}@{}/", peers::USER, secret, proxy.addr);
    let r = clients::curl_list(&url, &Mode::PassiveTrusting);
    assert!(!r.ok(), "login with a wrong password should fail");
    // The proxy runs at debug level, where it logs every command.
    let log = proxy.log();
    assert!(
        log.contains("PASS"),
        "commands should be logged at debug:\n{log}"
    );
    assert!(
        !log.contains(secret),
        "password leaked into the log:\n{log}"
    );
}

#[test]
fn hostile_client_gets_errors_and_others_keep_working() {
    let server = vsftpd();
    let proxy = Proxy::start(unique_loopback_ip(), ListenerSpec::new(server.addr));
    let mut bad = Control::connect(proxy.addr);
    bad.expect(220);
    bad.send(b"\x16\x03\x01\x02\x00garbage that is not FTP\r\n");
    bad.expect(500);
    bad.cmd_expect("PORT 300,1,1,1,4,1", 501);
    bad.send(&vec![b'X'; 100_000]);
    bad.expect(500);
    assert!(bad.closed());

    let r = clients::curl_list(
        &clients::ftp_url(server.user, server.pass, proxy.addr, ""),
        &Mode::PassiveTrusting,
    );
    assert!(r.ok(), "a normal client after the hostile one: {r}");
    for reason in ["bad_command", "bad_port", "line_too_long"] {
        assert_eq!(
            proxy.metric("fxprelay_rejected_total", &[("reason", reason)]),
            1.0,
            "{reason}"
        );
    }
}

#[test]
fn latin1_path_is_relayed_byte_for_byte() {
    let server = vsftpd();
    let proxy = Proxy::start(unique_loopback_ip(), ListenerSpec::new(server.addr));
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("latin1");
    // curl sends the percent-decoded bytes: RETR caf\xe9.txt
    let url = clients::ftp_url(server.user, server.pass, proxy.addr, "caf%E9.txt");
    let r = clients::curl_download(&url, &got, &Mode::PassiveTrusting);
    assert!(r.ok(), "{r}\n{}", proxy.log());
    assert_eq!(std::fs::read(&got).unwrap(), peers::LATIN1);
    let listing = clients::curl_list(
        &clients::ftp_url(server.user, server.pass, proxy.addr, ""),
        &Mode::PassiveTrusting,
    );
    assert!(
        listing
            .stdout_bytes
            .windows(peers::LATIN1_NAME.len())
            .any(|w| w == peers::LATIN1_NAME),
        "{listing}"
    );
}

#[test]
fn sighup_reloads_for_new_sessions_and_keeps_the_old_config_on_error() {
    let a = vsftpd();
    let b = vsftpd();
    std::fs::write(b.file("only-on-b.txt"), b"b\n").unwrap();
    let proxy = Proxy::start(unique_loopback_ip(), ListenerSpec::new(a.addr));
    let list = |proxy: &Proxy| {
        let r = clients::curl_list(
            &clients::ftp_url(peers::USER, peers::PASS, proxy.addr, ""),
            &Mode::PassiveTrusting,
        );
        assert!(r.ok(), "{r}\n{}", proxy.log());
        r.stdout
    };
    assert!(!list(&proxy).contains("only-on-b.txt"));
    // A session opened before the reload stays with server A.
    let mut old = Control::connect(proxy.addr);
    old.expect(220);

    let text = std::fs::read_to_string(&proxy.config).unwrap();
    std::fs::write(
        &proxy.config,
        text.replace(&a.addr.to_string(), &b.addr.to_string()),
    )
    .unwrap();
    unsafe { libc::kill(proxy.pid() as i32, libc::SIGHUP) };
    wait_for("the reload", || {
        proxy.metric("fxprelay_config_reloads_total", &[("result", "ok")]) == 1.0
    });
    assert!(
        list(&proxy).contains("only-on-b.txt"),
        "new sessions use the new upstream"
    );
    let r = old.cmd("USER fxptest");
    assert!(r.starts_with("331"), "the old session still works: {r}");

    // A broken file is refused and the running configuration stays.
    std::fs::write(&proxy.config, "listeners: [oops\n").unwrap();
    unsafe { libc::kill(proxy.pid() as i32, libc::SIGHUP) };
    wait_for("the failed reload", || {
        proxy.metric("fxprelay_config_reloads_total", &[("result", "error")]) == 1.0
    });
    assert!(proxy.log().contains("config reload failed"));
    assert!(list(&proxy).contains("only-on-b.txt"));
}

/// A client that sends commands but never reads the replies is disconnected once a reply
/// has waited `limits.reply_write_timeout`, instead of holding its session forever.
#[test]
fn a_client_that_stops_reading_is_disconnected() {
    let server = vsftpd();
    let proxy = Proxy::start_with(
        unique_loopback_ip(),
        ListenerSpec::new(server.addr),
        "limits:\n  reply_write_timeout: 1s\n",
    );
    let c = Control::login(proxy.addr);
    // SITE FXP STATUS is answered by the proxy itself (~90 bytes): 100k of them are far
    // more than the socket buffers between the two hold.
    let burst = b"SITE FXP STATUS\r\n".repeat(100_000);
    std::thread::scope(|scope| {
        // Writes until the proxy stops reading (it is blocked on its replies) or closes.
        scope.spawn(|| c.try_send(&burst));
        // The proxy answers many thousands of commands before the buffers fill (seconds
        // for a debug build under a loaded suite), then gives up after 1 s.
        wait_for_within(Duration::from_secs(60), "the session to end", || {
            proxy.metric("fxprelay_sessions_active", &[]) == 0.0
        });
    });
    assert!(
        proxy
            .log()
            .contains("the client took no control-connection bytes"),
        "{}",
        proxy.log()
    );
}
