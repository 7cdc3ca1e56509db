//! One address, many servers: a reverse listener with `routes:` in front of three real
//! servers with different contents (vsftpd by the name `alpha.test`, proftpd by logins
//! `name@beta`, pyftpdlib the default route). Each session reaches the server its `HOST`,
//! TLS SNI or login chooses, downloads that server's own file byte for byte and uploads
//! one there; a name gets its own certificate (checked by clients trusting that name's CA
//! only); `HOST` is answered as RFC 7151 says, and a login no route takes, without a
//! default route, gets `530` and no upstream connection.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::clients::{self, ClientResult, FtplibOp, Mode};
use common::control::Control;
use common::peers::{FtpServer, ServerKind, ServerOptions};
use common::proxy::Proxy;
use common::tls::{Ca, IdentityFiles};
use common::{free_port, payload, unique_loopback_ip};

/// The file whose bytes say which server a session reached.
const WHO: &str = "who.bin";

struct Lab {
    alpha: FtpServer,
    beta: FtpServer,
    default: FtpServer,
    proxy: Proxy,
    /// The listener without a default route (only `alpha.test`).
    strict: SocketAddr,
    /// The same routes behind implicit TLS (the port-990 convention).
    implicit: SocketAddr,
    /// The CA of the listener's own certificate, and of alpha's.
    edge_ca: PathBuf,
    alpha_ca: PathBuf,
    dir: tempfile::TempDir,
}

/// A server whose `who.bin` is its own (`seed`).
fn server(kind: ServerKind, seed: u64) -> FtpServer {
    let s = FtpServer::start(kind, ServerOptions::new(unique_loopback_ip()));
    s.put(WHO, Some(&payload(200_000, seed)));
    s
}

impl Lab {
    fn start() -> Lab {
        let (alpha, beta, default) = (
            server(ServerKind::Vsftpd, 11),
            server(ServerKind::Proftpd, 21),
            server(ServerKind::Pyftpdlib, 31),
        );
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = unique_loopback_ip().into();
        let (addr, strict, implicit, admin) = (
            SocketAddr::new(ip, free_port(ip)),
            SocketAddr::new(ip, free_port(ip)),
            SocketAddr::new(ip, free_port(ip)),
            SocketAddr::new(ip, free_port(ip)),
        );
        // The listener's own certificate (for its address, as clients without a name
        // check it) and alpha's, each from a CA of its own.
        let (edge, alpha_ca) = (Ca::new("edge CA"), Ca::new("alpha CA"));
        let edge_files = edge.issue(&[ip], &["edge.test"]).write(dir.path(), "edge");
        // Alpha's is for the proxy's address too: a client that connects by address and
        // names alpha with HOST checks it against that address.
        let alpha_files = alpha_ca
            .issue(&[ip], &["alpha.test"])
            .write(dir.path(), "alpha");
        let f = |i: &IdentityFiles| (i.cert.display().to_string(), i.key.display().to_string());
        let ((ec, ek), (ac, ak)) = (f(&edge_files), f(&alpha_files));
        let yaml = format!(
            "admin:\n  bind: \"{admin}\"\nlisteners:\n  - name: edge\n    bind: \"{addr}\"\n    upstream: \"{}\"\n    data: relay\n    tls:\n      client: {{mode: explicit, cert: {ec}, key: {ek}}}\n      upstream: {{mode: off}}\n    routes:\n      - match: {{host: alpha.test}}\n        name: alpha\n        upstream: \"{}\"\n        tls: {{cert: {ac}, key: {ak}}}\n      - match: {{user: '^(.+)@beta$'}}\n        name: beta\n        upstream: \"{}\"\n  - name: strict\n    bind: \"{strict}\"\n    data: relay\n    routes:\n      - match: {{host: alpha.test}}\n        upstream: \"{}\"\n  - name: implicit\n    bind: \"{implicit}\"\n    upstream: \"{}\"\n    data: relay\n    tls:\n      client: {{mode: implicit, cert: {ec}, key: {ek}}}\n      upstream: {{mode: off}}\n    routes:\n      - match: {{host: alpha.test}}\n        upstream: \"{}\"\n        tls: {{cert: {ac}, key: {ak}}}\n",
            default.addr, alpha.addr, beta.addr, alpha.addr, default.addr, alpha.addr
        );
        let proxy = Proxy::launch(&yaml, addr, admin, None, &[]);
        Lab {
            edge_ca: edge.write_cert(dir.path()),
            alpha_ca: alpha_ca.write_cert(dir.path()),
            alpha,
            beta,
            default,
            proxy,
            strict,
            implicit,
            dir,
        }
    }

    /// A file to upload, different for each `name`.
    fn upload(&self, name: &str) -> (PathBuf, Vec<u8>) {
        let data = payload(150_000, common::random_u64());
        let path = self.dir.path().join(format!("{name}.up"));
        std::fs::write(&path, &data).unwrap();
        (path, data)
    }

    /// `who` downloaded by `client` into `got` is `server`'s own, and the file it uploaded
    /// as `name` arrived there byte for byte.
    fn check(&self, client: &str, server: &FtpServer, got: &Path, name: &str, sent: &[u8]) {
        let own = std::fs::read(server.file(WHO)).unwrap();
        let log = || self.proxy.log();
        assert!(
            std::fs::read(got).unwrap() == own,
            "{client}: the download is not {}'s who.bin\n{}",
            server.kind.name(),
            log()
        );
        let up = std::fs::read(server.file(name))
            .unwrap_or_else(|e| panic!("{client}: {name} not on {}: {e}", server.kind.name()));
        assert!(up == sent, "{client}: the upload differs");
    }

    fn route_sessions(&self, listener: &str, route: &str) -> f64 {
        self.proxy.metric(
            "fxprelay_route_sessions_total",
            &[("listener", listener), ("route", route)],
        )
    }
}

/// List, download `who.bin` into `got`, upload `up` as `name`.
fn ops<'a>(got: &'a Path, up: &'a Path, name: &'a str) -> [FtplibOp<'a>; 3] {
    [
        FtplibOp::List,
        FtplibOp::Get(WHO, got),
        FtplibOp::Put(up, name),
    ]
}

fn ftplib(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    host: Option<&str>,
    ops: &[FtplibOp],
) -> ClientResult {
    ftplib_tls(addr, user, pass, host, None, ops)
}

/// [`ftplib`], over explicit TLS trusting only `ca` when given.
fn ftplib_tls(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    host: Option<&str>,
    ca: Option<&Path>,
    ops: &[FtplibOp],
) -> ClientResult {
    let python = Path::new("/usr/bin/python3");
    let mut cmd = clients::ftplib_command(python, addr, user, pass, true, ca, ops);
    if let Some(h) = host {
        cmd.args(["--send-host", h]);
    }
    clients::run(cmd, clients::CLIENT_TIMEOUT)
}

/// ftplib sending `HOST alpha.test` reaches alpha (vsftpd); logins `fxptest@beta` from
/// ftplib, curl and lftp reach beta (proftpd), which sees the login `fxptest` (it knows
/// no other: the login succeeds only so); a client with neither reaches the default
/// (pyftpdlib). Each downloads its server's file and uploads one, byte for byte.
#[test]
fn host_and_login_choose_the_server() {
    let lab = Lab::start();
    let proxy = lab.proxy.addr;
    let (user, pass) = (lab.alpha.user, lab.alpha.pass);

    // HOST alpha.test: vsftpd.
    let got = lab.dir.path().join("alpha.got");
    let (up, sent) = lab.upload("ftplib-host");
    lab.alpha.put("only-on-alpha.txt", Some(b"alpha"));
    let r = ftplib(
        proxy,
        user,
        pass,
        Some("alpha.test"),
        &ops(&got, &up, "ftplib-host.bin"),
    );
    assert!(r.ok(), "{r}\n{}", lab.proxy.log());
    assert!(r.stderr.contains("HOST: 220"), "{r}");
    assert!(r.stdout.contains("only-on-alpha.txt"), "{r}");
    lab.check("ftplib HOST", &lab.alpha, &got, "ftplib-host.bin", &sent);

    // name@beta from ftplib, curl and lftp: proftpd, logged in as `fxptest`.
    lab.beta.put("only-on-beta.txt", Some(b"beta"));
    let beta_user = format!("{user}@beta");
    let got = lab.dir.path().join("beta-ftplib.got");
    let (up, sent) = lab.upload("ftplib-beta");
    let r = ftplib(
        proxy,
        &beta_user,
        pass,
        None,
        &ops(&got, &up, "ftplib-beta.bin"),
    );
    assert!(r.ok(), "{r}\n{}", lab.proxy.log());
    assert!(r.stdout.contains("only-on-beta.txt"), "{r}");
    lab.check(
        "ftplib name@beta",
        &lab.beta,
        &got,
        "ftplib-beta.bin",
        &sent,
    );

    let listing = clients::curl_list(&clients::ftp_url(&beta_user, pass, proxy, ""), &Mode::Stock);
    assert!(
        listing.ok() && listing.stdout.contains("only-on-beta.txt"),
        "{listing}"
    );
    let got = lab.dir.path().join("beta-curl.got");
    let r = clients::curl_download(
        &clients::ftp_url(&beta_user, pass, proxy, WHO),
        &got,
        &Mode::Stock,
    );
    assert!(r.ok(), "{r}\n{}", lab.proxy.log());
    let (up, sent) = lab.upload("curl-beta");
    let url = clients::ftp_url(&beta_user, pass, proxy, "curl-beta.bin");
    let r = clients::curl_upload(&url, &up, &Mode::Stock);
    assert!(r.ok(), "{r}\n{}", lab.proxy.log());
    lab.check("curl name@beta", &lab.beta, &got, "curl-beta.bin", &sent);

    let got = lab.dir.path().join("beta-lftp.got");
    let (up, sent) = lab.upload("lftp-beta");
    let script = format!(
        "ls; get {WHO} -o {}; put {} -o lftp-beta.bin",
        got.display(),
        up.display()
    );
    let r = clients::lftp_stock(
        proxy,
        &beta_user,
        pass,
        &format!("set ftp:ssl-allow no; {script}"),
    );
    assert!(r.ok(), "{r}\n{}", lab.proxy.log());
    assert!(r.stdout.contains("only-on-beta.txt"), "{r}");
    lab.check("lftp name@beta", &lab.beta, &got, "lftp-beta.bin", &sent);
    // proftpd knows the user `fxptest` only: the name as the client wrote it is
    // refused there, so these logins reached it as `fxptest`.
    let mut direct = Control::connect(lab.beta.addr);
    direct.expect(220);
    let said = direct.cmd(&format!("USER {beta_user}"));
    if said.starts_with("331") {
        direct.cmd_expect(&format!("PASS {pass}"), 530);
    } else {
        assert!(said.starts_with('5'), "{said}");
    }

    // Neither HOST nor a routed login: the default route (pyftpdlib).
    let got = lab.dir.path().join("default.got");
    let (up, sent) = lab.upload("ftplib-default");
    let r = ftplib(
        proxy,
        user,
        pass,
        None,
        &ops(&got, &up, "ftplib-default.bin"),
    );
    assert!(r.ok(), "{r}\n{}", lab.proxy.log());
    lab.check(
        "ftplib without HOST",
        &lab.default,
        &got,
        "ftplib-default.bin",
        &sent,
    );

    // Every session counted on its route; the log names it.
    assert_eq!(lab.route_sessions("edge", "alpha"), 1.0);
    assert!(lab.route_sessions("edge", "beta") >= 4.0);
    assert_eq!(lab.route_sessions("edge", "default"), 1.0);
    // The sessions' own series carry their route: each route's bytes are its sessions'
    // (a 200 kB download and a 150 kB upload each, beta's three clients' together).
    let bytes = |route: &str, direction: &str| {
        lab.proxy.metric(
            "fxprelay_data_bytes_total",
            &[
                ("listener", "edge"),
                ("route", route),
                ("direction", direction),
            ],
        )
    };
    assert!(bytes("alpha", "download") >= 200_000.0);
    assert_eq!(bytes("alpha", "upload"), 150_000.0);
    assert!(bytes("beta", "download") >= 3.0 * 200_000.0);
    assert_eq!(bytes("beta", "upload"), 3.0 * 150_000.0);
    assert_eq!(bytes("default", "upload"), 150_000.0);
    assert_eq!(bytes("none", "download"), 0.0);
    let transfers = |route: &str| {
        lab.proxy.metric(
            "fxprelay_data_transfers_total",
            &[("listener", "edge"), ("route", route), ("result", "ok")],
        )
    };
    assert!(transfers("alpha") >= 3.0 && transfers("beta") >= 9.0);
    let connects = |route: &str| {
        lab.proxy.metric(
            "fxprelay_upstream_connect_seconds_count",
            &[("listener", "edge"), ("route", route)],
        )
    };
    assert_eq!(connects("alpha"), 1.0);
    assert_eq!(connects("none"), 0.0);
    let logins = |route: &str, result: &str| {
        lab.proxy.metric(
            "fxprelay_logins_total",
            &[("listener", "edge"), ("route", route), ("result", result)],
        )
    };
    assert_eq!(logins("alpha", "ok"), 1.0);
    assert!(logins("beta", "ok") >= 4.0);
    assert_eq!(logins("beta", "failed"), 0.0);
    // Closed sessions are open nowhere: each one moved from `none` to its route and left.
    common::wait_for("every session closed", || {
        lab.proxy
            .metric("fxprelay_sessions_active", &[("listener", "edge")])
            == 0.0
    });
    let seconds = |route: &str| {
        lab.proxy.metric(
            "fxprelay_session_duration_seconds_count",
            &[("listener", "edge"), ("route", route)],
        )
    };
    assert_eq!((seconds("alpha"), seconds("default")), (1.0, 1.0));
    assert_eq!(seconds("none"), 0.0);
    assert!(
        lab.proxy.log().contains("route=beta"),
        "{}",
        lab.proxy.log()
    );
}

/// curl over explicit TLS to `alpha.test` (SNI from the URL's name, `--resolve` to the
/// proxy) gets alpha's certificate, trusting alpha's CA only, and alpha's server; by
/// address (no SNI) the listener's own certificate and the default server.
/// `openssl s_client -starttls ftp -servername` shows the certificate per name.
#[test]
fn the_tls_name_chooses_certificate_and_server() {
    let lab = Lab::start();
    let proxy = lab.proxy.addr;
    let (user, pass) = (lab.alpha.user, lab.alpha.pass);
    let resolve = format!("alpha.test:{}:{}", proxy.port(), proxy.ip());
    let by_name = |path: &str| format!("ftp://{user}:{pass}@alpha.test:{}/{path}", proxy.port());

    let got = lab.dir.path().join("tls-alpha.got");
    let args = ["--resolve", resolve.as_str(), "-o", got.to_str().unwrap()];
    let r = clients::curl_tls(&by_name(WHO), &Mode::Stock, &lab.alpha_ca, args);
    assert!(r.ok(), "{r}\n{}", lab.proxy.log());
    let (up, sent) = lab.upload("curl-tls-alpha");
    let mut args = clients::curl_tls_upload_args(&up);
    args.extend(["--resolve".into(), resolve.clone().into()]);
    let r = clients::curl_tls(
        &by_name("curl-tls-alpha.bin"),
        &Mode::Stock,
        &lab.alpha_ca,
        args,
    );
    assert!(r.ok(), "{r}\n{}", lab.proxy.log());
    lab.check(
        "curl TLS alpha.test",
        &lab.alpha,
        &got,
        "curl-tls-alpha.bin",
        &sent,
    );
    // The listener's CA does not vouch for alpha.test: the name got alpha's certificate.
    let r = clients::curl_tls(
        &by_name(""),
        &Mode::Stock,
        &lab.edge_ca,
        ["--resolve", &resolve],
    );
    assert!(!r.ok(), "alpha.test checked with the listener's CA: {r}");

    // By address: no SNI, the listener's certificate and the default route.
    let got = lab.dir.path().join("tls-default.got");
    let url = clients::ftp_url(user, pass, proxy, WHO);
    let r = clients::curl_tls(
        &url,
        &Mode::Stock,
        &lab.edge_ca,
        ["-o", got.to_str().unwrap()],
    );
    assert!(r.ok(), "{r}\n{}", lab.proxy.log());
    let (up, sent) = lab.upload("curl-tls-default");
    let url = clients::ftp_url(user, pass, proxy, "curl-tls-default.bin");
    let r = clients::curl_tls(
        &url,
        &Mode::Stock,
        &lab.edge_ca,
        clients::curl_tls_upload_args(&up),
    );
    assert!(r.ok(), "{r}\n{}", lab.proxy.log());
    lab.check(
        "curl TLS without a name",
        &lab.default,
        &got,
        "curl-tls-default.bin",
        &sent,
    );

    // Implicit TLS: the handshake's name chooses before anything is said.
    let resolve = format!("alpha.test:{}:{}", lab.implicit.port(), lab.implicit.ip());
    let url = format!(
        "ftps://{user}:{pass}@alpha.test:{}/{WHO}",
        lab.implicit.port()
    );
    let got = lab.dir.path().join("implicit-alpha.got");
    let args = ["--resolve", resolve.as_str(), "-o", got.to_str().unwrap()];
    let r = clients::curl_tls(&url, &Mode::Stock, &lab.alpha_ca, args);
    assert!(r.ok(), "{r}\n{}", lab.proxy.log());
    let (up, sent) = lab.upload("curl-implicit-alpha");
    let mut args = clients::curl_tls_upload_args(&up);
    args.extend(["--resolve".into(), resolve.clone().into()]);
    let url = format!(
        "ftps://{user}:{pass}@alpha.test:{}/curl-implicit-alpha.bin",
        lab.implicit.port()
    );
    let r = clients::curl_tls(&url, &Mode::Stock, &lab.alpha_ca, args);
    assert!(r.ok(), "{r}\n{}", lab.proxy.log());
    lab.check(
        "curl implicit alpha.test",
        &lab.alpha,
        &got,
        "curl-implicit-alpha.bin",
        &sent,
    );
    let got = lab.dir.path().join("implicit-default.got");
    let url = clients::ftps_url(user, pass, lab.implicit, WHO);
    let r = clients::curl_tls(
        &url,
        &Mode::Stock,
        &lab.edge_ca,
        ["-o", got.to_str().unwrap()],
    );
    assert!(r.ok(), "{r}\n{}", lab.proxy.log());
    assert!(std::fs::read(&got).unwrap() == std::fs::read(lab.default.file(WHO)).unwrap());

    // HOST before AUTH TLS, by address (no SNI): alpha's certificate on the control and
    // data connections (trusting alpha's CA only), and alpha's server.
    let got = lab.dir.path().join("tls-host.got");
    let (up, sent) = lab.upload("ftplib-tls-host");
    let ops = ops(&got, &up, "ftplib-tls-host.bin");
    let r = ftplib_tls(
        proxy,
        user,
        pass,
        Some("alpha.test"),
        Some(&lab.alpha_ca),
        &ops,
    );
    assert!(r.ok(), "{r}\n{}", lab.proxy.log());
    lab.check(
        "ftplib TLS HOST",
        &lab.alpha,
        &got,
        "ftplib-tls-host.bin",
        &sent,
    );

    // openssl s_client: the certificate per name, each verified by its own CA only.
    let s_client = |name: Option<&str>, ca: &Path| {
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-starttls",
            "ftp",
            "-connect",
            &proxy.to_string(),
        ])
        .arg("-CAfile")
        .arg(ca)
        .arg("-verify_return_error");
        match name {
            Some(n) => cmd.args(["-servername", n]),
            None => cmd.arg("-noservername"),
        };
        clients::run(cmd, clients::CLIENT_TIMEOUT)
    };
    let issuer = |r: &ClientResult| {
        r.stdout
            .lines()
            .find(|l| l.starts_with("issuer="))
            .unwrap_or_default()
            .to_string()
    };
    let r = s_client(Some("alpha.test"), &lab.alpha_ca);
    assert!(issuer(&r).contains("alpha CA"), "{r}");
    assert!(r.stdout.contains("Verify return code: 0 (ok)"), "{r}");
    for name in [Some("other.test"), None] {
        let r = s_client(name, &lab.edge_ca);
        assert!(issuer(&r).contains("edge CA"), "{name:?}: {r}");
        assert!(r.stdout.contains("Verify return code: 0 (ok)"), "{r}");
    }
}

/// RFC 7151's answers, and a login no route takes on a listener without a default.
#[test]
fn host_answers_and_a_login_without_a_route() {
    let lab = Lab::start();
    let (user, pass) = (lab.alpha.user, lab.alpha.pass);

    // An unknown name: 504, and the session goes on to a known one and logs in.
    let mut c = Control::connect(lab.proxy.addr);
    c.expect(220);
    let feat = c.cmd_expect("FEAT", 211);
    assert!(feat.contains(" HOST"), "{feat}");
    c.cmd_expect("HOST nowhere.test", 504);
    c.cmd_expect("NOOP", 200);
    // Refused before any route: counted under `none`.
    let unknown = lab.proxy.metric(
        "fxprelay_rejected_total",
        &[
            ("listener", "edge"),
            ("route", "none"),
            ("reason", "unknown_host"),
        ],
    );
    assert_eq!(unknown, 1.0);
    // Open, and not yet on a route.
    let open = |route: &str| {
        lab.proxy.metric(
            "fxprelay_sessions_active",
            &[("listener", "edge"), ("route", route)],
        )
    };
    assert_eq!((open("none"), open("alpha")), (1.0, 0.0));
    c.cmd_expect("HOST alpha.test", 220);
    assert_eq!((open("none"), open("alpha")), (0.0, 1.0));
    c.cmd_expect(&format!("USER {user}"), 331);
    c.cmd_expect(&format!("PASS {pass}"), 230);
    // After the login: 503, and the session is still alpha's.
    c.cmd_expect("HOST alpha.test", 503);
    let size = c.cmd_expect(&format!("SIZE {WHO}"), 213);
    assert!(size.contains("200000"), "{size}");
    // The API (and the console) show the route the session took.
    let (status, body) = common::proxy::http(lab.proxy.admin, "GET", "/api/v1/sessions", None, "");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["route"] == "alpha" && s["upstream"] == lab.alpha.addr.to_string()),
        "{body}"
    );

    // HOST after USER (a routed login): 503.
    let mut c = Control::connect(lab.proxy.addr);
    c.expect(220);
    c.cmd_expect(&format!("USER {user}@beta"), 331);
    c.cmd_expect("HOST alpha.test", 503);
    c.cmd_expect(&format!("PASS {pass}"), 230);

    // No route and no default: asked for the password, then 530; no upstream connection.
    let connects = || {
        lab.proxy.metric(
            "fxprelay_upstream_connect_seconds_count",
            &[("listener", "strict")],
        )
    };
    let mut c = Control::connect(lab.strict);
    c.expect(220);
    c.cmd_expect(&format!("USER {user}"), 331);
    let refused = c.cmd_expect(&format!("PASS {pass}"), 530);
    assert!(refused.contains("No server for this login"), "{refused}");
    c.cmd_expect("NOOP", 200);
    c.cmd_expect("QUIT", 221);
    assert_eq!(connects(), 0.0, "{}", lab.proxy.log());
    let no_route = lab.proxy.metric(
        "fxprelay_rejected_total",
        &[
            ("listener", "strict"),
            ("route", "none"),
            ("reason", "no_route"),
        ],
    );
    assert_eq!(no_route, 1.0);
    let failed = lab.proxy.metric(
        "fxprelay_logins_total",
        &[
            ("listener", "strict"),
            ("route", "none"),
            ("result", "failed"),
        ],
    );
    assert_eq!(failed, 1.0);
    // The same listener's named route still works.
    let mut c = Control::connect(lab.strict);
    c.expect(220);
    c.cmd_expect("HOST alpha.test", 220);
    c.cmd_expect(&format!("USER {user}"), 331);
    c.cmd_expect(&format!("PASS {pass}"), 230);
    assert_eq!(connects(), 1.0);
    // An unnamed route is labelled by its host pattern.
    let on_route = lab.proxy.metric(
        "fxprelay_upstream_connect_seconds_count",
        &[("listener", "strict"), ("route", "alpha.test")],
    );
    assert_eq!(on_route, 1.0);
    // A route a reload adds has its series from then on, at 0.
    let yaml = std::fs::read_to_string(&lab.proxy.config).unwrap();
    let gamma = format!(
        "      - match: {{host: gamma.test}}\n        name: gamma\n        upstream: \"{}\"\n  - name: implicit\n",
        lab.alpha.addr
    );
    let yaml = yaml.replacen("  - name: implicit\n", &gamma, 1);
    std::fs::write(&lab.proxy.config, yaml).unwrap();
    lab.proxy.reload();
    common::wait_for("the new route's series", || {
        lab.proxy.metrics().lines().any(|l| {
            l == "fxprelay_rejected_total{listener=\"strict\",route=\"gamma\",reason=\"bounce\"} 0"
        })
    });
    let mut c = Control::connect(lab.strict);
    c.expect(220);
    c.cmd_expect("HOST gamma.test", 220);
    c.cmd_expect(&format!("USER {user}"), 331);
    c.cmd_expect(&format!("PASS {pass}"), 230);
    let gamma = lab.proxy.metric(
        "fxprelay_logins_total",
        &[("listener", "strict"), ("route", "gamma"), ("result", "ok")],
    );
    assert_eq!(gamma, 1.0);
}

/// A route's own pool: its backends are checked and shown as `listener/route`, a stopped
/// one is taken out of the route's pool, and the route's sessions go to the other.
#[test]
fn a_routes_pool_is_checked_on_its_own() {
    let servers: Vec<FtpServer> = (0..2)
        .map(|i| server(ServerKind::Pyftpdlib, 40 + i * 10))
        .collect();
    let default = server(ServerKind::Pyftpdlib, 90);
    let ip: IpAddr = unique_loopback_ip().into();
    let (addr, admin) = (
        SocketAddr::new(ip, free_port(ip)),
        SocketAddr::new(ip, free_port(ip)),
    );
    let yaml = format!(
        "admin:\n  bind: \"{admin}\"\nlisteners:\n  - name: edge\n    bind: \"{addr}\"\n    upstream: \"{}\"\n    data: relay\n    routes:\n      - match: {{user: '^(.+)@farm$'}}\n        name: farm\n        upstream: [\"{}\", \"{}\"]\n        balance: round_robin\n        health_check: {{interval: 200ms, timeout: 1s, rise: 2, fall: 2}}\n",
        default.addr, servers[0].addr, servers[1].addr
    );
    let proxy = Proxy::launch(&yaml, addr, admin, None, &[]);
    let up = |b: &FtpServer| {
        proxy.metric(
            "fxprelay_upstream_up",
            &[
                ("listener", "edge"),
                ("route", "farm"),
                ("upstream", &b.addr.to_string()),
            ],
        )
    };
    assert!(servers.iter().all(|s| up(s) == 1.0), "{}", proxy.metrics());
    let (_, api) = common::proxy::http_get(admin, "/api/v1/upstreams").unwrap();
    assert!(api.contains("edge/farm"), "{api}");
    // A `name@farm` session logs in on a backend of the route's pool.
    let (user, pass) = (default.user, default.pass);
    let reached = || {
        let mut c = Control::connect(addr);
        c.expect(220);
        c.cmd_expect(&format!("USER {user}@farm"), 331);
        c.cmd_expect(&format!("PASS {pass}"), 230);
        c.cmd_expect("TYPE I", 200);
        c.cmd_expect(&format!("SIZE {WHO}"), 213);
        c.cmd_expect("QUIT", 221);
    };
    reached();
    // Stop the second server: the route's checks take it out; sessions go on.
    let mut servers = servers;
    let stopped = servers.pop().unwrap();
    let stopped_addr = stopped.addr.to_string();
    drop(stopped);
    common::wait_for("the stopped backend to be down", || {
        proxy.metric(
            "fxprelay_upstream_up",
            &[
                ("listener", "edge"),
                ("route", "farm"),
                ("upstream", &stopped_addr),
            ],
        ) == 0.0
    });
    for _ in 0..4 {
        reached();
    }
    assert_eq!(up(&servers[0]), 1.0);
    assert!(proxy.log().contains("route=farm"), "{}", proxy.log());
}
