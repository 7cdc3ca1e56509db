//! Transparent mode in network namespaces: a client namespace whose FTP connections the
//! router namespace redirects (iptables REDIRECT) to fxprelay running there, and a server
//! namespace with a default vsftpd. The client can reach the server only through the
//! proxy, and the proxy finds the server from the redirected connection itself.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::clients::{self, ClientResult};
use common::netns::TransparentLab;
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::Proxy;

const PROXY_PORT: u16 = 2121;
const DATA: (u16, u16) = (50000, 50049);

/// A default vsftpd in the lab's server namespace, on port 21.
fn vsftpd(lab: &TransparentLab) -> FtpServer {
    let mut opts = ServerOptions::new(lab.server_ip);
    opts.netns = Some(lab.server_ns.clone());
    FtpServer::start_at(
        ServerKind::Vsftpd,
        opts,
        SocketAddr::from((lab.server_ip, 21)),
    )
}

/// fxprelay in the router namespace with one transparent listener for the lab's
/// clients; `top` adds top-level YAML, `keys` listener keys.
fn transparent_proxy(lab: &TransparentLab, top: &str, keys: &str) -> Proxy {
    let admin = SocketAddr::from((lab.router_admin_ip, 9464));
    let yaml = format!(
        "admin:\n  bind: \"{admin}\"\n{top}listeners:\n  - name: transparent\n    bind: \"0.0.0.0:{PROXY_PORT}\"\n    mode: transparent\n    allow: [10.97.0.0/16]\n{keys}"
    );
    Proxy::launch(
        &yaml,
        SocketAddr::from(([0, 0, 0, 0], PROXY_PORT)),
        admin,
        Some(&lab.router_ns),
        &[],
    )
}

/// curl in the client namespace downloading `big.bin` from the server's own address
/// (which the router redirects) into `out`, with `extra` flags and `--max-time`.
fn fetch_big(lab: &TransparentLab, extra: &[&str], out: &Path, max_time_s: u64) -> ClientResult {
    let url = format!(
        "ftp://{}:{}@{}/big.bin",
        peers::USER,
        peers::PASS,
        lab.server_ip
    );
    let max_time = max_time_s.to_string();
    let mut args = vec![
        "curl",
        "-sS",
        "--connect-timeout",
        "5",
        "--max-time",
        &max_time,
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    // The hard limit leaves curl time to give up by itself.
    clients::run(lab.in_client(&args), Duration::from_secs(max_time_s + 10))
}

#[test]
fn redirected_connections_reach_their_original_destination() {
    let lab = TransparentLab::new(PROXY_PORT, DATA);
    let server = vsftpd(&lab);
    let proxy = transparent_proxy(
        &lab,
        &format!("data:\n  ports: \"{}-{}\"\n", DATA.0, DATA.1),
        "    data: relay\n",
    );

    let dir = tempfile::tempdir().unwrap();
    // curl as it comes (EPSV, data to the server's own address: redirected as well),
    // trusting PASV, and active mode.
    let variants: [&[&str]; 3] = [
        &[],
        &["--no-ftp-skip-pasv-ip", "--disable-epsv"],
        &["-P", "-", "--disable-eprt"],
    ];
    for (i, extra) in variants.iter().enumerate() {
        let got = dir.path().join(format!("{i}.bin"));
        let r = fetch_big(&lab, extra, &got, 30);
        assert!(r.ok(), "{extra:?}: {r}\n{}", proxy.log());
        assert!(
            std::fs::read(&got).unwrap() == peers::big_bin(),
            "{extra:?}"
        );
    }
    assert!(
        proxy.metric("fxprelay_data_bytes_total", &[("direction", "download")])
            >= 3.0 * peers::big_bin().len() as f64
    );
    assert!(
        proxy.log().contains(&format!("client={}", lab.client_ip)),
        "{}",
        proxy.log()
    );
    drop(server);
}

/// Passthrough data needs the server to accept the client's own data connection, which a
/// default vsftpd does only from its control peer. With `preserve_client_address` the
/// proxy connects upstream from the client's address (IP_TRANSPARENT), so it works;
/// without, vsftpd refuses the data connection.
#[test]
fn preserve_client_address_satisfies_a_strict_server_in_passthrough() {
    let lab = TransparentLab::passthrough(PROXY_PORT);
    let server = vsftpd(&lab);
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("big.bin");
    for preserve in [true, false] {
        let proxy = transparent_proxy(
            &lab,
            "",
            &format!("    data: passthrough\n    preserve_client_address: {preserve}\n"),
        );
        let _ = std::fs::remove_file(&got);
        let r = fetch_big(&lab, &[], &got, 20);
        if preserve {
            assert!(r.ok(), "{r}\n{}\n{}", proxy.log(), server.log());
            assert!(std::fs::read(&got).unwrap() == peers::big_bin());
        } else {
            assert!(
                !r.ok(),
                "vsftpd should refuse the client's data connection: {r}"
            );
        }
    }
}
