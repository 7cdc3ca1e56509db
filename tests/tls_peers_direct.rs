//! The FTPS test infrastructure on its own, with no proxy: every server started with
//! `tls` requires TLS (a plaintext login is refused), serves its fixtures to curl
//! `--ssl-reqd` trusting the test CA (listing, byte-identical download, upload), and the
//! lftp and ftplib FTPS helpers work against vsftpd, which requires data connections to
//! resume the control connection's TLS session. Implicit FTPS works with `ftps://`, and a
//! certificate from an unknown CA is refused by the clients.

mod common;

use std::path::Path;

use common::clients::{self, ClientResult, FtplibOp, Mode};
use common::control::Control;
use common::peers::{self, FtpServer, ServerKind, ServerOptions, ServerTls};
use common::{tls, unique_loopback_ip};

fn tls_server(kind: ServerKind) -> FtpServer {
    FtpServer::start(kind, ServerOptions::new(unique_loopback_ip()).with_tls())
}

fn url(server: &FtpServer, path: &str) -> String {
    clients::ftp_url(server.user, server.pass, server.addr, path)
}

fn ca(server: &FtpServer) -> &Path {
    server
        .ca_file
        .as_deref()
        .expect("a TLS server has a CA file")
}

fn check(r: &ClientResult, what: &str, server: &FtpServer) {
    assert!(r.ok(), "{what} failed: {r}\n{}", server.log());
}

/// The reply to a plaintext `USER` (or to `PASS` when `USER` passes): every TLS server
/// refuses to log in without `AUTH TLS`.
fn plain_login_reply(server: &FtpServer) -> String {
    let mut c = Control::connect(server.addr);
    let greeting = c.reply();
    assert!(greeting.starts_with("220"), "{greeting}");
    c.send(format!("USER {}\r\n", server.user).as_bytes());
    let user = c.reply();
    if !user.starts_with("331") {
        return user;
    }
    c.send(format!("PASS {}\r\n", server.pass).as_bytes());
    c.reply()
}

/// curl `--ssl-reqd`: NLST, byte-identical RETR and STOR (passive: curl 7.88's active
/// FTPS hangs after accepting the data connection, curl/curl#10666, so active mode over
/// TLS is shown with lftp and ftplib); a plaintext login is refused.
fn curl_direct(kind: ServerKind) {
    let server = tls_server(kind);
    let dir = tempfile::tempdir().unwrap();

    let list = clients::curl_tls(&url(&server, ""), &Mode::Passive, ca(&server), ["-l"]);
    check(&list, "curl --ssl-reqd NLST", &server);
    assert!(list.stdout.contains(peers::BIG_NAME), "{list}");
    assert!(list.stdout.contains(peers::HELLO_NAME), "{list}");

    let got = dir.path().join("big.bin");
    let r = clients::curl_tls(
        &url(&server, peers::BIG_NAME),
        &Mode::Passive,
        ca(&server),
        [std::ffi::OsStr::new("-o"), got.as_os_str()],
    );
    check(&r, "curl --ssl-reqd RETR", &server);
    assert!(
        std::fs::read(&got).unwrap() == peers::big_bin(),
        "big.bin differs"
    );

    let up = dir.path().join("up.bin");
    let data = common::payload(700 * 1024 + 3, 11);
    std::fs::write(&up, &data).unwrap();
    let r = clients::curl_tls(
        &url(&server, "up.bin"),
        &Mode::Passive,
        ca(&server),
        clients::curl_tls_upload_args(&up),
    );
    check(&r, "curl --ssl-reqd STOR", &server);
    assert!(
        std::fs::read(server.file("up.bin")).unwrap() == data,
        "upload differs"
    );

    let refused = plain_login_reply(&server);
    let expected = peers::plain_login_refusal(kind);
    assert!(
        refused.starts_with(expected),
        "{}: plaintext login should be refused with {expected}, got {refused:?}",
        kind.name()
    );

    // Without --ssl-reqd curl logs in in clear and is refused too.
    let plain = clients::curl_list(&url(&server, ""), &Mode::Passive);
    assert!(!plain.ok(), "plain curl should be refused: {plain}");
    assert!(!plain.timed_out, "{plain}");
}

#[test]
fn vsftpd_requires_tls_and_serves_curl() {
    curl_direct(ServerKind::Vsftpd);
}

#[test]
fn pure_ftpd_requires_tls_and_serves_curl() {
    curl_direct(ServerKind::PureFtpd);
}

#[test]
fn proftpd_requires_tls_and_serves_curl() {
    curl_direct(ServerKind::Proftpd);
}

#[test]
fn pyftpdlib_requires_tls_and_serves_curl() {
    curl_direct(ServerKind::Pyftpdlib);
}

/// lftp (`ftp:ssl-force`, `ftp:ssl-protect-data`) and ftplib (`FTP_TLS` + `prot_p()`)
/// against a server that requires session reuse, passive and active.
fn lftp_and_ftplib_over_tls(kind: ServerKind) {
    let server = tls_server(kind);
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up.bin");
    let data = common::payload(300 * 1024 + 7, 5);
    std::fs::write(&up, &data).unwrap();

    for passive in [true, false] {
        let got = dir.path().join(format!("lftp-{passive}.bin"));
        let name = format!("lftp-up-{passive}.bin");
        let script = format!(
            "ls; get {} -o {}; put {} -o {name}",
            peers::BIG_NAME,
            got.display(),
            up.display()
        );
        let r = clients::lftp_tls(
            server.addr,
            server.user,
            server.pass,
            passive,
            ca(&server),
            &script,
        );
        check(&r, &format!("lftp over TLS (passive={passive})"), &server);
        assert!(r.stdout.contains(peers::BIG_NAME), "{r}");
        assert!(std::fs::read(&got).unwrap() == peers::big_bin());
        assert!(std::fs::read(server.file(&name)).unwrap() == data);

        let got = dir.path().join(format!("ftplib-{passive}.bin"));
        let name = format!("ftplib-up-{passive}.bin");
        let ops = [
            FtplibOp::List,
            FtplibOp::Get(peers::BIG_NAME, &got),
            FtplibOp::Put(&up, &name),
        ];
        let r = clients::ftplib_tls_ops(
            server.addr,
            server.user,
            server.pass,
            passive,
            ca(&server),
            &ops,
        );
        check(&r, &format!("ftplib FTP_TLS (passive={passive})"), &server);
        assert!(r.stdout.contains(peers::BIG_NAME), "{r}");
        assert!(std::fs::read(&got).unwrap() == peers::big_bin());
        assert!(std::fs::read(server.file(&name)).unwrap() == data);
    }
}

#[test]
fn lftp_and_ftplib_over_tls_to_vsftpd() {
    lftp_and_ftplib_over_tls(ServerKind::Vsftpd);
}

#[test]
fn lftp_and_ftplib_over_tls_to_proftpd() {
    lftp_and_ftplib_over_tls(ServerKind::Proftpd);
}

/// Implicit FTPS (TLS from the first byte) with curl `ftps://`.
#[test]
fn implicit_tls_with_curl_ftps_url() {
    for kind in [ServerKind::Vsftpd, ServerKind::Proftpd] {
        let ip = unique_loopback_ip();
        let mut opts = ServerOptions::new(ip);
        opts.tls = Some(ServerTls::implicit(ip));
        let server = FtpServer::start(kind, opts);
        let dir = tempfile::tempdir().unwrap();
        let got = dir.path().join("big.bin");
        let u = clients::ftps_url(server.user, server.pass, server.addr, peers::BIG_NAME);
        let r = clients::curl_tls(
            &u,
            &Mode::Passive,
            ca(&server),
            [std::ffi::OsStr::new("-o"), got.as_os_str()],
        );
        check(&r, &format!("curl ftps:// to {}", kind.name()), &server);
        assert!(std::fs::read(&got).unwrap() == peers::big_bin());
    }
}

/// A server whose certificate comes from a CA the client does not trust is refused by
/// curl (exit 60: certificate problem).
#[test]
fn certificate_from_unknown_ca_is_refused_by_curl() {
    let ip = unique_loopback_ip();
    let mut opts = ServerOptions::new(ip);
    opts.tls = Some(ServerTls {
        identity: tls::untrusted_identity(ip.into()),
        implicit: false,
        reuse_required: true,
    });
    let server = FtpServer::start(ServerKind::Vsftpd, opts);
    let dir = tempfile::tempdir().unwrap();
    let trusted = tls::test_ca().write_cert(dir.path());
    let r = clients::curl_tls(&url(&server, ""), &Mode::Passive, &trusted, ["-l"]);
    assert!(!r.ok() && !r.timed_out, "{r}");
    assert_eq!(r.code(), Some(60), "expected a certificate error: {r}");
    // Its own CA works: the refusal is about trust, not a broken server.
    let r = clients::curl_tls(&url(&server, ""), &Mode::Passive, ca(&server), ["-l"]);
    check(&r, "curl trusting the server's own CA", &server);
}
