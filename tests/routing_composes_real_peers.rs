//! Routing composes with the rest (issue 22, point 3), against real servers:
//! - a routed listener behind HAProxy's PROXY protocol routes by `HOST` and by login,
//!   and logs, counts and limits the real client's address, not the balancer's;
//! - `SITE FXP` from a routed session copies from the route's server, logged in with
//!   the name the route gives it (and, on a server with virtual hosts, asking it for the
//!   client's `HOST`), never from the listener's default server;
//! - the client's `HOST` goes on to a server whose `FEAT` lists `HOST` (pyftpdlib with
//!   a `HOST` command) and never to one whose `FEAT` does not (vsftpd).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::clients::{self, ClientResult, FtplibOp, Mode};
use common::control::Control;
use common::haproxy::Haproxy;
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::Proxy;
use common::{free_port, payload, unique_loopback_ip, wait_for};

/// The file whose bytes say which server a session (or a copy) came from.
const WHO: &str = "who.bin";

/// The address HAProxy connects to the proxy from: the one trusted load balancer.
const BALANCER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 89);

/// Gives `server` a `who.bin` of its own (`seed`).
fn own_file(server: &FtpServer, seed: u64) -> Vec<u8> {
    let data = payload(120_000, seed);
    server.put(WHO, Some(&data));
    data
}

/// A fresh address and two free ports on it: the proxy's listener and admin endpoint.
fn proxy_addrs() -> (SocketAddr, SocketAddr) {
    let ip: IpAddr = unique_loopback_ip().into();
    (
        SocketAddr::new(ip, free_port(ip)),
        SocketAddr::new(ip, free_port(ip)),
    )
}

/// ftplib (trusting `227`, as a client behind a balancer must) at `addr`, sending `HOST
/// host` first when given.
fn ftplib(addr: SocketAddr, user: &str, host: Option<&str>, ops: &[FtplibOp]) -> ClientResult {
    let python = Path::new("/usr/bin/python3");
    let mut cmd = clients::ftplib_command(python, addr, user, peers::PASS, true, None, ops);
    if let Some(h) = host {
        cmd.args(["--send-host", h]);
    }
    clients::run(cmd, clients::CLIENT_TIMEOUT)
}

fn scratch(dir: &Path, name: &str, seed: u64) -> (PathBuf, Vec<u8>) {
    let data = payload(90_000, seed);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// HAProxy in front of a listener with routes, sending PROXY v2 from [`BALANCER`]: a
/// `HOST` session and a routed login each reach their route's server and move their
/// files; the log names the real client (never the balancer) beside the route; the
/// per-address session limit counts the real client, so a second client behind the same
/// balancer still gets in.
#[test]
fn behind_haproxy_routes_by_host_and_login_and_limits_the_real_client() {
    let alpha = FtpServer::start(
        ServerKind::Pyftpdlib,
        ServerOptions::new(unique_loopback_ip()),
    );
    let beta = FtpServer::start(ServerKind::Vsftpd, ServerOptions::new(unique_loopback_ip()));
    let (alpha_who, beta_who) = (own_file(&alpha, 1), own_file(&beta, 2));
    let (addr, admin) = proxy_addrs();
    let yaml = format!(
        "admin:\n  bind: \"{admin}\"\nlimits:\n  max_sessions_per_ip: 1\nlisteners:\n  - name: edge\n    bind: \"{addr}\"\n    data: relay\n    proxy_protocol: {{trusted: [{BALANCER}/32]}}\n    routes:\n      - match: {{host: alpha.test}}\n        name: alpha\n        upstream: \"{}\"\n      - match: {{user: '^(.+)@beta$'}}\n        name: beta\n        upstream: \"{}\"\n",
        alpha.addr, beta.addr
    );
    let proxy = Proxy::launch(&yaml, addr, admin, None, &[]);
    let front_ip = unique_loopback_ip();
    let front = SocketAddr::from((front_ip, free_port(front_ip.into())));
    let _haproxy = Haproxy::start(
        &format!(
            "frontend ftp\n  bind {front}\n  default_backend fxprelay\n\
             backend fxprelay\n  server fx {addr} send-proxy-v2 source {BALANCER}\n"
        ),
        front,
    );
    let dir = tempfile::tempdir().unwrap();
    let log = || proxy.log();

    // HOST alpha.test through the balancer: alpha's file down, one up.
    let got = dir.path().join("alpha.got");
    let (up, sent) = scratch(dir.path(), "alpha.up", 3);
    let ops = [
        FtplibOp::List,
        FtplibOp::Get(WHO, &got),
        FtplibOp::Put(&up, "via-haproxy.bin"),
    ];
    let r = ftplib(front, peers::USER, Some("alpha.test"), &ops);
    assert!(r.ok(), "{r}\n{}", log());
    assert!(
        std::fs::read(&got).unwrap() == alpha_who,
        "not alpha's file"
    );
    assert!(std::fs::read(alpha.file("via-haproxy.bin")).unwrap() == sent);

    // A login `fxptest@beta` through the balancer (curl, trusting 227): beta's file.
    let got = dir.path().join("beta.got");
    let url = clients::ftp_url(&format!("{}@beta", peers::USER), peers::PASS, front, WHO);
    let r = clients::curl_download(&url, &got, &Mode::PassiveTrusting);
    assert!(r.ok(), "{r}\n{}", log());
    assert!(std::fs::read(&got).unwrap() == beta_who, "not beta's file");

    // The session lines name the real client and the route, never the balancer; the
    // data connections were accepted from the real client (no port theft).
    wait_for("both sessions to end", || {
        proxy.metric("fxprelay_sessions_active", &[("listener", "edge")]) == 0.0
    });
    let text = log();
    for route in ["alpha", "beta"] {
        assert!(
            text.lines()
                .any(|l| l.contains("client=127.0.0.1:") && l.contains(&format!("route={route}"))),
            "no line names the real client on route {route}:\n{text}"
        );
    }
    assert!(!text.contains(&format!("client={BALANCER}")), "{text}");
    let rejected = |reason: &str| {
        proxy.metric(
            "fxprelay_rejected_total",
            &[("listener", "edge"), ("reason", reason)],
        )
    };
    assert_eq!(rejected("port_theft") + rejected("proxy_header"), 0.0);
    for route in ["alpha", "beta"] {
        let sessions = proxy.metric(
            "fxprelay_route_sessions_total",
            &[("listener", "edge"), ("route", route)],
        );
        assert_eq!(sessions, 1.0, "{route}");
    }

    // One session per address: the real client holds its one; a second from it is
    // refused at accept (before any route), one from another client behind the same
    // balancer is not.
    // (The earlier sessions' address slots go a moment after their series: wait for
    // the greeting rather than a refusal.)
    let mut held = None;
    wait_for("the real client's earlier slots to be free", || {
        let mut c = Control::connect(front);
        let greeting = c.reply();
        held = greeting.starts_with("220").then_some(c);
        held.is_some()
    });
    let mut held = held.unwrap();
    held.cmd_expect("HOST alpha.test", 220);
    held.cmd_expect(&format!("USER {}", peers::USER), 331);
    held.cmd_expect(&format!("PASS {}", peers::PASS), 230);
    let per_ip = || {
        proxy.metric(
            "fxprelay_rejected_total",
            &[
                ("listener", "edge"),
                ("route", "none"),
                ("reason", "max_sessions_per_ip"),
            ],
        )
    };
    let before = per_ip();
    let mut again = Control::connect(front);
    let refused = again.reply();
    assert!(refused.starts_with("421"), "{refused}");
    assert_eq!(per_ip(), before + 1.0);
    let other = Ipv4Addr::new(127, 0, 0, 77);
    let mut neighbour = Control::connect_from(other, front);
    neighbour.expect(220);
    neighbour.cmd_expect(&format!("USER {}@beta", peers::USER), 331);
    neighbour.cmd_expect(&format!("PASS {}", peers::PASS), 230);
    let size = neighbour.cmd_expect(&format!("SIZE {WHO}"), 213);
    assert!(size.contains("120000"), "{size}");
    assert!(
        log().contains(&format!("client={other}:")),
        "the second client is known by its own address:\n{}",
        log()
    );
    held.cmd_expect("QUIT", 221);
    neighbour.cmd_expect("QUIT", 221);
}

/// Logs in through the proxy with ftplib (sending `HOST host` first when given) and runs
/// `commands`; a command ending in `+` expects a preliminary reply and reads the final
/// one too. Prints every reply.
fn ftplib_site(
    proxy: SocketAddr,
    user: &str,
    host: Option<&str>,
    commands: &[&str],
) -> ClientResult {
    let script = r#"
import ftplib, sys
host, port, user, password, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ftp = ftplib.FTP()
ftp.connect(host, port, timeout=60)
if name:
    print(ftp.sendcmd("HOST " + name))
ftp.login(user, password)
for cmd in sys.argv[6:]:
    wait = cmd.endswith("+")
    cmd = cmd.rstrip("+")
    try:
        print(ftp.sendcmd(cmd))
        if wait:
            print(ftp.voidresp())
    except ftplib.Error as e:
        print("ERR", e)
ftp.quit()
"#;
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("-c")
        .arg(script)
        .arg(proxy.ip().to_string())
        .arg(proxy.port().to_string())
        .arg(user)
        .arg(peers::PASS)
        .arg(host.unwrap_or(""))
        .args(commands);
    clients::run(cmd, Duration::from_secs(90))
}

/// `SITE FXP` from routed sessions: one routed by `HOST`, one by a login whose capture is
/// the server's name. Each copy comes from its route's server (its own `who.bin`), not
/// from the listener's default server, and the engine logs in to that server as the
/// session did: alpha has virtual hosts only (it refuses a login without `HOST`), so the
/// engine asks it for `alpha.test` too; proftpd knows `fxptest` only, the name beta's
/// route gives it.
#[test]
fn site_fxp_from_a_routed_session_copies_from_the_routes_server() {
    let mut opts = ServerOptions::new(unique_loopback_ip());
    opts.foreign_data = true;
    opts.host_command = true;
    let alpha = FtpServer::start(ServerKind::Pyftpdlib, opts);
    let beta = FtpServer::start_fxp(ServerKind::Proftpd);
    let default = FtpServer::start_fxp(ServerKind::Vsftpd);
    let b = FtpServer::start_fxp(ServerKind::Pyftpdlib);
    let alpha_who = own_file(&alpha, 11);
    let beta_who = own_file(&beta, 12);
    let default_who = own_file(&default, 13);
    let (addr, admin) = proxy_addrs();
    let yaml = format!(
        "admin:\n  bind: \"{admin}\"\nfxp:\n  allow: [\"{}/32\"]\nlisteners:\n  - name: edge\n    bind: \"{addr}\"\n    upstream: \"{}\"\n    data: relay\n    routes:\n      - match: {{host: alpha.test}}\n        name: alpha\n        upstream: \"{}\"\n      - match: {{user: '^(.+)@beta$'}}\n        name: beta\n        upstream: \"{}\"\n",
        b.addr.ip(),
        default.addr,
        alpha.addr,
        beta.addr
    );
    let proxy = Proxy::launch(&yaml, addr, admin, None, &[]);
    let to_b = format!(
        "SITE FXP TO ftp://{}:{}@{}/",
        peers::USER,
        peers::PASS,
        b.addr
    );
    let copied = |name: &str| std::fs::read(b.file(name)).ok();

    let r = ftplib_site(
        addr,
        peers::USER,
        Some("alpha.test"),
        &[&to_b, "SITE FXP PUT who.bin from-alpha.bin+"],
    );
    assert!(r.ok() && !r.stdout.contains("ERR"), "{r}\n{}", proxy.log());
    assert!(
        copied("from-alpha.bin") == Some(alpha_who),
        "HOST alpha.test: the copy is not alpha's file\n{r}"
    );
    // The session's login and the engine's each named the host.
    assert!(
        alpha.log().matches("HOST alpha.test").count() >= 2,
        "{}",
        alpha.log()
    );

    let beta_user = format!("{}@beta", peers::USER);
    let r = ftplib_site(
        addr,
        &beta_user,
        None,
        &[
            &to_b,
            "SITE FXP PUT who.bin from-beta.bin+",
            "SITE FXP GET from-alpha.bin back-on-beta.bin+",
        ],
    );
    assert!(r.ok() && !r.stdout.contains("ERR"), "{r}\n{}", proxy.log());
    assert!(
        copied("from-beta.bin") == Some(beta_who),
        "name@beta: the copy is not beta's file\n{r}"
    );
    // And the other way: B to the route's server.
    let back = std::fs::read(beta.file("back-on-beta.bin")).ok();
    assert!(back.as_deref() == copied("from-alpha.bin").as_deref());
    assert!(default.file("back-on-beta.bin").metadata().is_err());
    assert!(copied("from-alpha.bin").as_deref() != Some(&default_who[..]));
    assert!(
        proxy.log().matches("SITE FXP copy done").count() >= 3,
        "{}",
        proxy.log()
    );
}

/// The client's `HOST` is passed on to a server whose `FEAT` lists `HOST` (the proxy
/// asks first, as mod_proxy does), and never sent to one whose `FEAT` does not (vsftpd
/// would answer `500` to it); either way the client's session works as usual.
#[test]
fn host_goes_on_only_to_a_server_whose_feat_lists_it() {
    let mut opts = ServerOptions::new(unique_loopback_ip());
    opts.host_command = true;
    let vhost = FtpServer::start(ServerKind::Pyftpdlib, opts);
    let plain = FtpServer::start(ServerKind::Vsftpd, ServerOptions::new(unique_loopback_ip()));
    let (vhost_who, plain_who) = (own_file(&vhost, 21), own_file(&plain, 22));
    let (addr, admin) = proxy_addrs();
    let yaml = format!(
        "admin:\n  bind: \"{admin}\"\nlisteners:\n  - name: edge\n    bind: \"{addr}\"\n    data: relay\n    routes:\n      - match: {{host: vhost.test}}\n        upstream: \"{}\"\n      - match: {{host: plain.test}}\n        upstream: \"{}\"\n",
        vhost.addr, plain.addr
    );
    let proxy = Proxy::launch(&yaml, addr, admin, None, &[]);
    let dir = tempfile::tempdir().unwrap();

    // Direct: pyftpdlib lists HOST, vsftpd does not (what the proxy reads). vsftpd logs
    // every command it gets (`log_ftp_protocol`).
    let mut direct = Control::connect(vhost.addr);
    direct.expect(220);
    assert!(direct.cmd_expect("FEAT", 211).contains(" HOST"));
    let mut direct = Control::connect(plain.addr);
    direct.expect(220);
    assert!(!direct.cmd_expect("FEAT", 211).contains("HOST"));

    for (name, server, who) in [
        ("vhost.test", &vhost, &vhost_who),
        ("plain.test", &plain, &plain_who),
    ] {
        let got = dir.path().join(format!("{name}.got"));
        let (up, sent) = scratch(dir.path(), &format!("{name}.up"), 23);
        let ops = [
            FtplibOp::List,
            FtplibOp::Get(WHO, &got),
            FtplibOp::Put(&up, "up.bin"),
        ];
        let r = ftplib(addr, peers::USER, Some(name), &ops);
        assert!(r.ok(), "{name}: {r}\n{}", proxy.log());
        // The client hears the proxy's 220 for its HOST, whatever the server says.
        assert!(r.stderr.contains("HOST: 220"), "{r}");
        assert!(std::fs::read(&got).unwrap() == *who, "{name}: wrong server");
        assert!(std::fs::read(server.file("up.bin")).unwrap() == sent);
    }
    // pyftpdlib got the client's HOST; vsftpd was asked FEAT and got no HOST.
    assert!(
        vhost.log().contains("HOST vhost.test"),
        "the HOST-taking server never got HOST:\n{}",
        vhost.log()
    );
    let plain_log = plain.log();
    // The direct FEAT above, and the proxy's.
    assert!(plain_log.matches("\"FEAT\"").count() >= 2, "{plain_log}");
    assert!(
        !plain_log.contains("\"HOST"),
        "vsftpd got HOST:\n{plain_log}"
    );
    let text = proxy.log();
    assert!(text.contains("the server took HOST"), "{text}");
    assert!(
        text.contains("the server does not take HOST; not sent"),
        "{text}"
    );
}
