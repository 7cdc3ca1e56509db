//! FTPS through the proxy, with real servers that require TLS and real clients: the NAT
//! fix for a TLS-only vsftpd that requires data connections to resume the control
//! session, implicit TLS, `required` listeners, bridging a plaintext client to a TLS-only
//! server and a TLS client to a plaintext-only one, untrusted upstream certificates, many
//! transfers in one session, and the STARTTLS injection guard. Certificates come from
//! the test CA (`tests/common/tls.rs`), which the proxy and the clients trust.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::clients::{self, ClientResult, FtplibOp, Mode};
use common::peers::{self, FtpServer, ServerKind, ServerOptions, ServerTls};
use common::proxy::{ListenerSpec, Proxy};
use common::{tls, unique_loopback_ip};

/// The dead address TLS servers announce in `227` (nothing listens there).
const MASQUERADE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 99);

fn tls_server(kind: ServerKind, masquerade: bool) -> FtpServer {
    let mut opts = ServerOptions::new(unique_loopback_ip()).with_tls();
    if masquerade {
        opts.masquerade = Some(MASQUERADE);
    }
    FtpServer::start(kind, opts)
}

/// A proxy on its own address with a certificate for it from the test CA, a reverse
/// listener to `server` in relay mode whose `227` address is fixed (`nat.passive:
/// always`), and the given `tls:` modes; the upstream leg trusts the test CA.
struct TlsProxy {
    proxy: Proxy,
    /// The test CA's certificate: what the clients trust.
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

fn tls_proxy(
    upstream: SocketAddr,
    client_mode: &str,
    upstream_mode: &str,
    extra: &str,
) -> TlsProxy {
    let ip = unique_loopback_ip();
    let dir = tempfile::tempdir().unwrap();
    let files = tls::identity_for(IpAddr::V4(ip)).write(dir.path(), "proxy");
    let ca = tls::test_ca().write_cert(dir.path());
    let mut spec = ListenerSpec::new(upstream).passive("always");
    spec.data = "relay";
    spec.extra = format!(
        "    tls:\n      client: {{mode: {client_mode}, cert: \"{}\", key: \"{}\"}}\n      upstream: {{mode: {upstream_mode}, ca: \"{}\"{extra}}}\n",
        files.cert.display(),
        files.key.display(),
        ca.display()
    );
    TlsProxy {
        proxy: Proxy::start(ip, spec),
        ca,
        _dir: dir,
    }
}

fn ok(r: &ClientResult, what: &str, proxy: &Proxy) {
    assert!(r.ok(), "{what} failed: {r}\nproxy log:\n{}", proxy.log());
}

fn same_file(path: &Path, want: &[u8], what: &str) {
    let got = std::fs::read(path).unwrap_or_default();
    assert!(
        got == want,
        "{what}: {} bytes, want {}",
        got.len(),
        want.len()
    );
}

fn url(server: &FtpServer, addr: SocketAddr, path: &str) -> String {
    clients::ftp_url(server.user, server.pass, addr, path)
}

#[test]
fn a_natd_tls_only_vsftpd_with_session_reuse_works_for_curl_ftplib_and_lftp() {
    let server = tls_server(ServerKind::Vsftpd, true);
    let p = tls_proxy(server.addr, "explicit", "mirror", "");
    let dir = tempfile::tempdir().unwrap();
    let big = peers::big_bin();
    let up = dir.path().join("up.bin");
    std::fs::write(&up, common::payload(3 * 1024 * 1024 + 17, 7)).unwrap();
    let up_data = std::fs::read(&up).unwrap();

    // Directly, a client that trusts the 227 address fails: it names the dead address.
    let direct = clients::curl_tls(
        &url(&server, server.addr, peers::BIG_NAME),
        &Mode::PassiveTrusting,
        server.ca_file.as_deref().unwrap(),
        ["-o", "/dev/null"],
    );
    assert!(
        !direct.ok(),
        "direct PASV to {MASQUERADE} should fail: {direct}"
    );

    // curl: defaults (EPSV), PASV trusting the 227 address.
    for (name, mode, extra) in [
        ("curl default", Mode::Passive, vec![]),
        ("curl trusting PASV", Mode::PassiveTrusting, vec![]),
    ] {
        let got = dir.path().join(format!("{name}.bin"));
        let mut args: Vec<std::ffi::OsString> = vec!["-o".into(), got.clone().into()];
        args.extend(extra);
        let r = if name == "curl default" {
            let mut cmd = std::process::Command::new("curl");
            cmd.args(["-sS", "--fail", "--max-time", "60"])
                .args(clients::curl_tls_args(&p.ca))
                .args(&args)
                .arg(url(&server, p.proxy.addr, peers::BIG_NAME));
            clients::run(cmd, Duration::from_secs(90))
        } else {
            clients::curl_tls(
                &url(&server, p.proxy.addr, peers::BIG_NAME),
                &mode,
                &p.ca,
                args,
            )
        };
        ok(&r, name, &p.proxy);
        same_file(&got, big, name);
    }
    let r = clients::curl_tls(
        &url(&server, p.proxy.addr, "curl-up.bin"),
        &Mode::Passive,
        &p.ca,
        clients::curl_tls_upload_args(&up),
    );
    ok(&r, "curl upload", &p.proxy);
    same_file(&server.root.join("curl-up.bin"), &up_data, "curl upload");

    // ftplib and lftp, passive and active (curl 7.88's active FTPS hangs even directly,
    // curl/curl#10666).
    for passive in [true, false] {
        let got = dir.path().join(format!("ftplib-{passive}.bin"));
        let remote = format!("ftplib-{passive}.bin");
        let r = clients::ftplib_tls_ops(
            p.proxy.addr,
            server.user,
            server.pass,
            passive,
            &p.ca,
            &[
                FtplibOp::Get(peers::BIG_NAME, &got),
                FtplibOp::Put(&up, &remote),
            ],
        );
        ok(&r, &format!("ftplib passive={passive}"), &p.proxy);
        same_file(&got, big, "ftplib download");
        same_file(&server.root.join(&remote), &up_data, "ftplib upload");

        let got = dir.path().join(format!("lftp-{passive}.bin"));
        let remote = format!("lftp-{passive}.bin");
        let script = format!(
            "get {} -o {}; put {} -o {remote}",
            peers::BIG_NAME,
            got.display(),
            up.display()
        );
        let r = clients::lftp_tls(
            p.proxy.addr,
            server.user,
            server.pass,
            passive,
            &p.ca,
            &script,
        );
        ok(&r, &format!("lftp passive={passive}"), &p.proxy);
        same_file(&got, big, "lftp download");
        same_file(&server.root.join(&remote), &up_data, "lftp upload");
    }

    let m = p.proxy.metrics();
    for (side, channel) in [
        ("client", "control"),
        ("upstream", "control"),
        ("client", "data"),
        ("upstream", "data"),
    ] {
        let n = common::proxy::metric_sum(
            &m,
            "fxprelay_tls_handshakes_total",
            &[("side", side), ("channel", channel), ("result", "ok")],
        );
        assert!(n >= 1.0, "no {side} {channel} handshakes counted:\n{m}");
    }
    // vsftpd accepted every data connection: each resumed the proxy's control session.
    let resumed = common::proxy::metric_sum(
        &m,
        "fxprelay_tls_resumptions_total",
        &[("side", "upstream")],
    );
    assert!(resumed >= 4.0, "upstream resumptions {resumed}:\n{m}");
}

#[test]
fn proftpd_and_pure_ftpd_requiring_tls_work_through_the_proxy() {
    for kind in [ServerKind::Proftpd, ServerKind::PureFtpd] {
        let server = tls_server(kind, false);
        let p = tls_proxy(server.addr, "explicit", "mirror", "");
        let dir = tempfile::tempdir().unwrap();
        let got = dir.path().join("got.bin");
        let r = clients::curl_tls(
            &url(&server, p.proxy.addr, peers::BIG_NAME),
            &Mode::Passive,
            &p.ca,
            ["-o".into(), got.clone().into_os_string()],
        );
        ok(&r, kind.name(), &p.proxy);
        same_file(&got, peers::big_bin(), kind.name());
        let up = dir.path().join("up.bin");
        std::fs::write(&up, common::payload(1024 * 1024, 3)).unwrap();
        let r = clients::ftplib_tls_ops(
            p.proxy.addr,
            server.user,
            server.pass,
            false,
            &p.ca,
            &[FtplibOp::Put(&up, "up.bin")],
        );
        ok(&r, &format!("{} active upload", kind.name()), &p.proxy);
        same_file(
            &server.root.join("up.bin"),
            &std::fs::read(&up).unwrap(),
            kind.name(),
        );
    }
}

#[test]
fn implicit_tls_on_both_legs() {
    let mut opts = ServerOptions::new(unique_loopback_ip());
    opts.tls = Some(ServerTls::implicit(opts.ip));
    let server = FtpServer::start(ServerKind::Vsftpd, opts);
    let p = tls_proxy(server.addr, "implicit", "mirror", "");
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("got.bin");
    let url = clients::ftps_url(server.user, server.pass, p.proxy.addr, peers::BIG_NAME);
    let r = clients::curl_tls(
        &url,
        &Mode::Passive,
        &p.ca,
        ["-o".into(), got.clone().into_os_string()],
    );
    ok(&r, "curl ftps://", &p.proxy);
    same_file(&got, peers::big_bin(), "implicit download");
}

#[test]
fn a_required_listener_refuses_a_plaintext_login() {
    let server = tls_server(ServerKind::Vsftpd, false);
    let p = tls_proxy(server.addr, "required", "mirror", "");
    let mut c = common::control::Control::connect(p.proxy.addr);
    assert!(c.reply().starts_with("220"));
    c.send(b"USER fxptest\r\n");
    let r = c.reply();
    assert!(r.starts_with("530 This proxy requires TLS"), "{r}");
    let m = p.proxy.metrics();
    assert!(
        common::proxy::metric_sum(&m, "fxprelay_rejected_total", &[("reason", "tls_required")])
            >= 1.0
    );
    // With TLS the same login works.
    let r = clients::curl_tls(
        &url(&server, p.proxy.addr, ""),
        &Mode::Passive,
        &p.ca,
        ["-l"],
    );
    ok(&r, "curl --ssl-reqd to a required listener", &p.proxy);
    assert!(r.stdout.contains(peers::BIG_NAME), "{r}");
}

#[test]
fn a_plaintext_client_reaches_a_tls_only_server_and_a_tls_client_a_plaintext_one() {
    // Plain curl with its defaults, through `client: off, upstream: explicit`.
    let server = tls_server(ServerKind::Vsftpd, true);
    let p = tls_proxy(server.addr, "off", "explicit", "");
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("plain.bin");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--fail", "--max-time", "60", "-o"])
        .arg(&got)
        .arg(url(&server, p.proxy.addr, peers::BIG_NAME));
    let r = clients::run(cmd, Duration::from_secs(90));
    ok(&r, "plain curl to a TLS-only server", &p.proxy);
    same_file(&got, peers::big_bin(), "plain client, TLS server");
    let r = clients::curl_upload(
        &url(&server, p.proxy.addr, "plain-up.bin"),
        &got,
        &Mode::Active("127.0.0.1"),
    );
    ok(
        &r,
        "plain curl active upload to a TLS-only server",
        &p.proxy,
    );
    same_file(
        &server.root.join("plain-up.bin"),
        peers::big_bin(),
        "plain upload",
    );

    // curl --ssl-reqd through `client: required, upstream: off` to a plain pyftpdlib.
    let plain = FtpServer::start(
        ServerKind::Pyftpdlib,
        ServerOptions::new(unique_loopback_ip()),
    );
    let p = tls_proxy(plain.addr, "required", "off", "");
    let got = dir.path().join("tls.bin");
    let r = clients::curl_tls(
        &url(&plain, p.proxy.addr, peers::BIG_NAME),
        &Mode::Passive,
        &p.ca,
        ["-o".into(), got.clone().into_os_string()],
    );
    ok(&r, "curl --ssl-reqd to a plaintext-only server", &p.proxy);
    same_file(&got, peers::big_bin(), "TLS client, plain server");
}

#[test]
fn an_untrusted_upstream_certificate_is_refused_unless_the_operator_says_so() {
    let ip = unique_loopback_ip();
    let mut opts = ServerOptions::new(ip);
    opts.tls = Some(ServerTls {
        identity: tls::untrusted_identity(IpAddr::V4(ip)),
        implicit: false,
        reuse_required: true,
    });
    let server = FtpServer::start(ServerKind::Vsftpd, opts);
    let p = tls_proxy(server.addr, "explicit", "mirror", "");
    let r = clients::curl_tls(
        &url(&server, p.proxy.addr, ""),
        &Mode::Passive,
        &p.ca,
        ["-l"],
    );
    assert!(
        !r.ok(),
        "an untrusted server certificate must be refused: {r}"
    );
    let log = p.proxy.log();
    assert!(
        log.contains("TLS with the FTP server failed") && log.contains("UnknownIssuer"),
        "{log}"
    );
    let m = p.proxy.metrics();
    assert!(
        common::proxy::metric_sum(&m, "fxprelay_rejected_total", &[("reason", "upstream_tls")])
            >= 1.0
    );

    let p = tls_proxy(server.addr, "explicit", "mirror", ", verify: false");
    let r = clients::curl_tls(
        &url(&server, p.proxy.addr, ""),
        &Mode::Passive,
        &p.ca,
        ["-l"],
    );
    ok(&r, "curl with tls.upstream.verify: false", &p.proxy);
}

#[test]
fn three_hundred_transfers_in_one_session_keep_resuming() {
    let server = tls_server(ServerKind::Vsftpd, false);
    let p = tls_proxy(server.addr, "explicit", "mirror", "");
    let script = r#"
import ftplib, ssl, sys, io
host, port, ca, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
ftp = ftplib.FTP_TLS(context=ctx, timeout=30)
ftp.connect(host, port)
ftp.login(user, password)
ftp.prot_p()
for i in range(300):
    data = (b"%05d" % i) * 50
    ftp.storbinary("STOR f%d.txt" % (i % 10), io.BytesIO(data))
    got = io.BytesIO()
    ftp.retrbinary("RETR f%d.txt" % (i % 10), got.write)
    if got.getvalue() != data:
        sys.exit("transfer %d differs" % i)
ftp.quit()
print("300 ok")
"#;
    let mut cmd = std::process::Command::new("/usr/bin/python3");
    cmd.arg("-c")
        .arg(script)
        .arg(p.proxy.addr.ip().to_string())
        .arg(p.proxy.addr.port().to_string())
        .arg(&p.ca)
        .arg(server.user)
        .arg(server.pass);
    let r = clients::run(cmd, Duration::from_secs(120));
    ok(
        &r,
        "300 uploads and 300 downloads over one FTPS session",
        &p.proxy,
    );
    assert!(r.stdout.contains("300 ok"), "{r}");
    let m = p.proxy.metrics();
    let resumed = common::proxy::metric_sum(
        &m,
        "fxprelay_tls_resumptions_total",
        &[("side", "upstream")],
    );
    assert!(resumed >= 600.0, "upstream resumptions {resumed}");
}

#[test]
fn commands_pipelined_after_auth_tls_are_discarded() {
    let server = tls_server(ServerKind::Vsftpd, false);
    let p = tls_proxy(server.addr, "explicit", "mirror", "");
    let mut s = TcpStream::connect(p.proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = [0u8; 512];
    let n = s.read(&mut greeting).unwrap();
    assert!(greeting[..n].starts_with(b"220"));
    // The injection: a command after AUTH TLS in the same segment.
    s.write_all(b"AUTH TLS\r\nUSER injected\r\n").unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "connection closed: {reply:?}"
        );
        reply.push(byte[0]);
    }
    assert!(
        reply.starts_with(b"234 "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // Nothing else in clear: the next bytes are the TLS handshake, once the client
    // starts it, so before that, silence.
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut more = [0u8; 64];
    match s.read(&mut more) {
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
        Ok(n) => panic!(
            "{n} bytes in clear after 234: {:?}",
            String::from_utf8_lossy(&more[..n])
        ),
    }
    // The handshake then works, and the injected USER was never acted on.
    let config = tls::client_config(tls::test_ca().roots());
    let name = rustls_pki_types::ServerName::IpAddress(p.proxy.addr.ip().into());
    let conn = rustls::ClientConnection::new(Arc::clone(&config), name).unwrap();
    let mut tls_stream = rustls::StreamOwned::new(conn, s);
    // Had the injected USER been read, its 331 would come first.
    tls_stream.write_all(b"FEAT\r\n").unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut tls_stream), &mut line).unwrap();
    assert!(line.starts_with("211"), "{line}");
    assert!(!server.log().contains("injected"), "{}", server.log());
    let m = p.proxy.metrics();
    assert!(
        common::proxy::metric_sum(
            &m,
            "fxprelay_rejected_total",
            &[("reason", "tls_pipelined")]
        ) >= 1.0
    );
}

/// Python's `ftplib.FTP_TLS` unwraps the data connection after every upload: it sends
/// `close_notify` and waits for the proxy's, and Python 3.11.7 fails the upload
/// (`SSLEOFError`) when the proxy closes without one. Every Python here, Debian's and
/// any other on `PATH`, uploads and downloads through a TLS listener, passive and active,
/// to vsftpd and pyftpdlib, byte for byte.
#[test]
fn ftplib_tls_uploads_end_with_close_notify_on_every_python() {
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up.bin");
    std::fs::write(&up, common::payload(300 * 1024 + 5, 11)).unwrap();
    let up_data = std::fs::read(&up).unwrap();
    for kind in [ServerKind::Vsftpd, ServerKind::Pyftpdlib] {
        let server = tls_server(kind, true);
        let p = tls_proxy(server.addr, "explicit", "mirror", "");
        for (n, python) in clients::pythons().iter().enumerate() {
            for passive in [true, false] {
                let name = format!("py{n}-{passive}.bin");
                let back = dir.path().join(format!("{}-{name}", kind.name()));
                let what = format!("{} {} passive={passive}", kind.name(), python.display());
                let r = clients::ftplib_tls_ops_with(
                    python,
                    p.proxy.addr,
                    (server.user, server.pass),
                    passive,
                    &p.ca,
                    &[FtplibOp::Put(&up, &name), FtplibOp::Get(&name, &back)],
                );
                ok(&r, &what, &p.proxy);
                same_file(&server.file(&name), &up_data, &what);
                same_file(&back, &up_data, &what);
            }
        }
    }
}

/// A TLS control connection to the proxy, logged in and with `PROT P`, read a line at a
/// time.
struct TlsControl {
    s: std::io::BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl TlsControl {
    fn login(proxy: SocketAddr, server: &FtpServer) -> TlsControl {
        let mut s = TcpStream::connect(proxy).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut clear = std::io::BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut clear, &mut line).unwrap();
        assert!(line.starts_with("220"), "{line}");
        s.write_all(b"AUTH TLS\r\n").unwrap();
        line.clear();
        std::io::BufRead::read_line(&mut clear, &mut line).unwrap();
        assert!(line.starts_with("234"), "{line}");
        let config = tls::client_config(tls::test_ca().roots());
        let name = rustls_pki_types::ServerName::IpAddress(proxy.ip().into());
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut c = TlsControl {
            s: std::io::BufReader::new(rustls::StreamOwned::new(conn, s)),
        };
        c.cmd(&format!("USER {}", server.user), "331");
        c.cmd(&format!("PASS {}", server.pass), "230");
        c.cmd("PBSZ 0", "200");
        c.cmd("PROT P", "200");
        c
    }

    fn send(&mut self, line: &str) {
        let s = self.s.get_mut();
        s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        s.flush().unwrap();
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.s, &mut line)?;
        Ok(line)
    }

    fn cmd(&mut self, line: &str, want: &str) -> String {
        self.send(line);
        let r = self.line().unwrap();
        assert!(r.starts_with(want), "{line}: {r}");
        r
    }
}

/// vsftpd gives a data connection's TLS handshake `data_connection_timeout` to finish;
/// then it ends the session with a `500 OOPS` written in clear on its TLS control
/// connection. The proxy cannot read that as FTP, but the client still hears `421`
/// rather than a silent close.
#[test]
fn a_server_writing_plaintext_inside_tls_gets_the_client_a_421() {
    let mut opts = ServerOptions::new(unique_loopback_ip()).with_tls();
    opts.masquerade = Some(MASQUERADE);
    opts.data_timeout = Some(2);
    let server = FtpServer::start(ServerKind::Vsftpd, opts);
    let p = tls_proxy(server.addr, "explicit", "mirror", "");
    let mut c = TlsControl::login(p.proxy.addr, &server);
    let pasv = c.cmd("PASV", "227");
    let nums: Vec<u16> = pasv[pasv.find('(').unwrap() + 1..pasv.find(')').unwrap()]
        .split(',')
        .map(|n| n.trim().parse().unwrap())
        .collect();
    let data_at = SocketAddr::from((p.proxy.addr.ip(), nums[4] * 256 + nums[5]));
    // The client connects its data connection but never starts TLS on it: the proxy
    // waits for that handshake (connect_timeout, 10 s), and vsftpd, which waits for the
    // proxy's, gives up after 2 s.
    let _data = TcpStream::connect(data_at).unwrap();
    c.send(&format!("RETR {}", peers::HELLO_NAME));
    let mut replies = Vec::new();
    loop {
        match c.line() {
            Ok(l) if l.is_empty() => break,
            Ok(l) => replies.push(l),
            Err(e) => {
                replies.push(format!("<{e}>"));
                break;
            }
        }
    }
    assert!(
        replies.iter().any(|r| r.starts_with(
            "421 Service not available: TLS with the FTP server behind this proxy broke."
        )),
        "{replies:?}\n{}",
        p.proxy.log()
    );
    assert!(
        p.proxy.log().contains("TLS with the FTP server broke"),
        "{}",
        p.proxy.log()
    );
    assert_eq!(
        p.proxy
            .metric("fxprelay_rejected_total", &[("reason", "upstream_tls")]),
        1.0
    );
}
