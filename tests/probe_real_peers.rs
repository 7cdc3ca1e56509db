//! `fxprelay check --probe` against real servers: a TLS listener in front of a plain
//! server is told to set `tls.upstream.mode: off` (explicit clients) or that the server
//! answered plaintext FTP to a TLS handshake (implicit), an untrusted certificate points
//! at `tls.upstream.ca`, a server that fits passes; and a session through an implicit
//! listener in front of a plain server logs the same diagnosis.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use common::clients::{self, Mode};
use common::peers::{FtpServer, ServerKind, ServerOptions, ServerTls};
use common::proxy::{ListenerSpec, Proxy};
use common::{free_port, tls, unique_loopback_ip};

/// `check --probe` of one reverse listener to `upstream` with these TLS modes, its
/// upstream leg trusting the test CA when `trust`: whether it passed, and what it said.
fn probe(upstream: SocketAddr, client: &str, upstream_mode: &str, trust: bool) -> (bool, String) {
    let ip = unique_loopback_ip();
    let dir = tempfile::tempdir().unwrap();
    let files = tls::identity_for(IpAddr::V4(ip)).write(dir.path(), "proxy");
    let ca = tls::test_ca().write_cert(dir.path());
    let ca = if trust {
        format!(", ca: \"{}\"", ca.display())
    } else {
        String::new()
    };
    let yaml = format!(
        "admin:\n  bind: \"{ip}:{}\"\nlisteners:\n  - name: edge\n    bind: \"{ip}:{}\"\n    upstream: \"{upstream}\"\n    tls:\n      client: {{mode: {client}, cert: \"{}\", key: \"{}\"}}\n      upstream: {{mode: {upstream_mode}{ca}}}\n",
        free_port(ip.into()),
        free_port(ip.into()),
        files.cert.display(),
        files.key.display(),
    );
    let config = dir.path().join("fxprelay.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fxprelay"))
        .args(["check", "--probe", "-c"])
        .arg(&config)
        .output()
        .expect("run fxprelay");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn plain_vsftpd() -> FtpServer {
    FtpServer::start(ServerKind::Vsftpd, ServerOptions::new(unique_loopback_ip()))
}

#[test]
fn a_tls_listener_in_front_of_a_plain_server_is_told_to_set_mode_off() {
    let server = plain_vsftpd();
    // Explicit clients, the default `mirror`: their AUTH TLS would get a 534.
    let (ok, out) = probe(server.addr, "explicit", "mirror", true);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("listener `edge` -> {}: 220", server.addr)),
        "{out}"
    );
    assert!(
        out.contains("refused AUTH TLS") && out.contains("clients that ask for TLS get 534"),
        "{out}"
    );
    assert!(
        out.contains("set `tls.upstream.mode: off`") && out.contains("--probe found problems"),
        "{out}"
    );
    // Implicit clients: the ClientHello gets vsftpd's greeting in clear.
    let (ok, out) = probe(server.addr, "implicit", "mirror", true);
    assert!(!ok, "{out}");
    assert!(
        out.contains("the server answered plaintext FTP to a TLS handshake"),
        "{out}"
    );
    assert!(
        out.contains("it offers no AUTH TLS either: set `tls.upstream.mode: off`"),
        "{out}"
    );
    // What the probe advises passes.
    let (ok, out) = probe(server.addr, "explicit", "off", true);
    assert!(ok && out.contains("every server fits"), "{out}");
}

#[test]
fn a_tls_server_fits_when_trusted_and_names_the_ca_setting_when_not() {
    let server = FtpServer::start(
        ServerKind::Vsftpd,
        ServerOptions::new(unique_loopback_ip()).with_tls(),
    );
    let (ok, out) = probe(server.addr, "explicit", "mirror", true);
    assert!(ok, "{out}");
    assert!(
        out.contains("FEAT: AUTH TLS") && out.contains("TLS after AUTH TLS: ok"),
        "{out}"
    );
    let (ok, out) = probe(server.addr, "explicit", "mirror", false);
    assert!(!ok, "{out}");
    assert!(
        out.contains("not trusted") && out.contains("tls.upstream.ca"),
        "{out}"
    );
    // An implicit-TLS vsftpd behind an implicit listener.
    let ip = unique_loopback_ip();
    let mut opts = ServerOptions::new(ip);
    opts.tls = Some(ServerTls {
        identity: tls::identity_for(IpAddr::V4(ip)),
        implicit: true,
        reuse_required: true,
    });
    let implicit = FtpServer::start(ServerKind::Vsftpd, opts);
    let (ok, out) = probe(implicit.addr, "implicit", "mirror", true);
    assert!(ok && out.contains("implicit TLS: ok"), "{out}");
}

#[test]
fn an_unreachable_server_is_a_problem() {
    let ip = unique_loopback_ip();
    let nobody = SocketAddr::new(ip.into(), free_port(ip.into()));
    let (ok, out) = probe(nobody, "explicit", "off", true);
    assert!(!ok && out.contains("unreachable: connect:"), "{out}");
}

/// A real client through an implicit listener in front of a plain server: the session's
/// log line says what the probe says, not to trust a CA.
#[test]
fn a_session_logs_that_the_server_answered_plaintext_to_tls() {
    let server = plain_vsftpd();
    let ip = unique_loopback_ip();
    let dir = tempfile::tempdir().unwrap();
    let files = tls::identity_for(IpAddr::V4(ip)).write(dir.path(), "proxy");
    let ca = tls::test_ca().write_cert(dir.path());
    let mut spec = ListenerSpec::new(server.addr);
    spec.data = "relay";
    spec.extra = format!(
        "    tls:\n      client: {{mode: implicit, cert: \"{}\", key: \"{}\"}}\n",
        files.cert.display(),
        files.key.display()
    );
    let proxy = Proxy::start(ip, spec);
    let url = format!("ftps://{}:{}@{}/", server.user, server.pass, proxy.addr);
    let r = clients::curl_tls(&url, &Mode::Passive, &ca, ["-l", "--max-time", "20"]);
    assert!(!r.ok(), "{r}");
    common::wait_for("the session's TLS failure logged", || {
        proxy.log().contains("TLS with the FTP server failed")
    });
    let log = proxy.log();
    assert!(
        log.contains("the server answered plaintext FTP to a TLS handshake")
            && log.contains("tls.upstream.mode: off")
            && !log.contains("tls.upstream.verify: false"),
        "{log}"
    );
}
