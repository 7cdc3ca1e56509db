//! The FXP HTTP API on the admin listener, driven end to end against two real servers
//! that allow FXP: submit, poll, list, cancel; the bearer token; the allow list; and
//! passwords never echoed.

mod common;

use std::net::SocketAddr;

use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::{ListenerSpec, Proxy, http};
use common::{free_port, unique_loopback_ip, wait_for};

const TOKEN: &str = "t0ken-for-tests";

fn fxp_server() -> FtpServer {
    let mut opts = ServerOptions::new(unique_loopback_ip());
    opts.foreign_data = true;
    FtpServer::start(ServerKind::Vsftpd, opts)
}

/// The JSON that orders a copy of `src` on `a` to `dst` on `b`, as the test user.
fn transfer(a: &FtpServer, src: &str, b: &FtpServer, dst: &str) -> String {
    format!(
        r#"{{"source": "ftp://{u}:{p}@{a}/{src}", "destination": "ftp://{u}:{p}@{b}/{dst}"}}"#,
        u = peers::USER,
        p = peers::PASS,
        a = a.addr,
        b = b.addr
    )
}

/// The job's current view.
fn job(api: SocketAddr, id: &str) -> String {
    http(api, "GET", &format!("/api/v1/transfers/{id}"), None, "").1
}

/// Polls the job until it has ended, either way.
fn wait_ended(api: SocketAddr, id: &str) {
    wait_for(&format!("transfer {id} to end"), || {
        matches!(field(&job(api, id), "state"), Some("done" | "failed"))
    });
}

fn field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

#[test]
fn transfers_ordered_over_the_api() {
    let (a, b) = (fxp_server(), fxp_server());
    // The API needs a listener in the config; any upstream will do.
    let extra = format!(
        "fxp:\n  allow: [\"{}/32\", \"{}/32\"]\n",
        a.addr.ip(),
        b.addr.ip()
    );
    let mut spec = ListenerSpec::new(a.addr);
    spec.data = "relay";
    let proxy = Proxy::start_with(unique_loopback_ip(), spec, &extra);
    let api = proxy.admin;
    let secret = peers::PASS;
    let body = transfer(&a, "big.bin", &b, "copy.bin");
    let (status, resp) = http(api, "POST", "/api/v1/transfers", None, &body);
    assert_eq!(status, 202, "{resp}");
    assert!(
        !resp.contains(&format!(":{secret}@")),
        "password echoed: {resp}"
    );
    let id = field(&resp, "id").unwrap().to_string();
    wait_ended(api, &id);
    let v = job(api, &id);
    assert_eq!(field(&v, "state"), Some("done"), "{v}");
    assert_eq!(field(&v, "method"), Some("fxp"), "{v}");
    assert_eq!(field(&v, "relayed_bytes"), Some("0"), "{v}");
    assert!(std::fs::read(b.file("copy.bin")).unwrap() == peers::big_bin());
    // The proxy's own data relay carried nothing: the servers moved the bytes.
    assert_eq!(proxy.metric("fxprelay_data_bytes_total", &[]), 0.0);

    let (status, list) = http(api, "GET", "/api/v1/transfers", None, "");
    assert_eq!(status, 200);
    assert!(list.contains(&format!("\"id\":{id}")), "{list}");
    assert!(!list.contains(&format!(":{secret}@")), "{list}");

    // Outside fxp.allow: refused before anything connects.
    let outside = SocketAddr::from((unique_loopback_ip(), 21));
    let body = format!(
        r#"{{"source": "ftp://x@{outside}/f", "destination": "ftp://x@{}/g"}}"#,
        b.addr
    );
    let (status, resp) = http(api, "POST", "/api/v1/transfers", None, &body);
    assert_eq!(status, 403, "{resp}");
    // Nonsense is a 400 that says what is wrong.
    let (status, resp) = http(
        api,
        "POST",
        "/api/v1/transfers",
        None,
        r#"{"source": "http://x"}"#,
    );
    assert_eq!(status, 400, "{resp}");
    // A missing file fails with the server's words; cancel of a finished job keeps it.
    let body = transfer(&a, "missing.bin", &b, "m.bin");
    let (_, resp) = http(api, "POST", "/api/v1/transfers", None, &body);
    let id = field(&resp, "id").unwrap().to_string();
    wait_ended(api, &id);
    let (_, v) = http(api, "DELETE", &format!("/api/v1/transfers/{id}"), None, "");
    assert_eq!(field(&v, "state"), Some("failed"), "{v}");
    assert!(v.contains("550"), "the server's reply text: {v}");
    let (status, _) = http(api, "GET", "/api/v1/transfers/9999", None, "");
    assert_eq!(status, 404);
}

#[test]
fn cancelling_a_running_transfer_closes_its_connections() {
    // 8 MiB at 256 KiB/s: half a minute, far longer than the test needs.
    let server = |throttle| {
        let mut opts = ServerOptions::new(unique_loopback_ip());
        opts.foreign_data = true;
        opts.throttle = throttle;
        FtpServer::start(ServerKind::Pyftpdlib, opts)
    };
    let (a, b) = (server(Some(256 * 1024)), server(None));
    let extra = format!(
        "fxp:\n  allow: [\"{}/32\", \"{}/32\"]\n",
        a.addr.ip(),
        b.addr.ip()
    );
    let proxy = Proxy::start_with(unique_loopback_ip(), ListenerSpec::new(a.addr), &extra);
    let api = proxy.admin;
    let fds = || proxy.fd_count();
    // One request first, so descriptors opened once (the API's connection) are counted.
    let _ = http(api, "GET", "/api/v1/transfers", None, "");
    let before = fds();

    let (status, resp) = http(
        api,
        "POST",
        "/api/v1/transfers",
        None,
        &transfer(&a, "big.bin", &b, "copy.bin"),
    );
    assert_eq!(status, 202, "{resp}");
    let id = field(&resp, "id").unwrap().to_string();
    let copy = b.file("copy.bin");
    wait_for("the copy to start arriving", || {
        std::fs::metadata(&copy).is_ok_and(|m| m.len() > 0)
    });
    assert_eq!(field(&job(api, &id), "state"), Some("running"));

    let (status, v) = http(api, "DELETE", &format!("/api/v1/transfers/{id}"), None, "");
    assert_eq!(status, 200, "{v}");
    assert_eq!(field(&v, "state"), Some("cancelled"), "{v}");
    // Both control connections (and any relay socket) are gone with the job.
    wait_for("the job's sockets to close", || fds() <= before);
    let v = job(api, &id);
    assert_eq!(field(&v, "state"), Some("cancelled"), "{v}");
    let got = std::fs::metadata(&copy).unwrap().len();
    assert!(
        got < peers::BIG_LEN as u64,
        "the copy finished anyway: {got} bytes"
    );
}

#[test]
fn the_api_requires_the_token_when_one_is_set() {
    let a = fxp_server();
    let extra = format!("fxp:\n  allow: [\"{}/32\"]\n", a.addr.ip());
    let mut spec = ListenerSpec::new(a.addr);
    spec.admin_token = Some(TOKEN);
    let proxy = Proxy::start_with(unique_loopback_ip(), spec, &extra);
    let (status, _) = http(proxy.admin, "GET", "/api/v1/transfers", None, "");
    assert_eq!(status, 401);
    let (status, _) = http(proxy.admin, "GET", "/api/v1/transfers", Some("wrong"), "");
    assert_eq!(status, 401);
    let (status, body) = http(proxy.admin, "GET", "/api/v1/transfers", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    // Metrics and health stay open for scrapers and load balancers.
    let (status, _) = http(proxy.admin, "GET", "/healthz", None, "");
    assert_eq!(status, 200);
}

/// A host name in `fxp.allow` admits that name's own connection only: with the
/// destination named there, a source given by another name is refused after DNS. `127.1`
/// is such a name (not an IP literal to the URL parser) resolving to 127.0.0.1 without
/// any DNS server; nothing needs to listen, as nothing may be reached.
#[test]
fn an_allowed_destination_name_does_not_admit_the_source() {
    let extra = "fxp:\n  allow: [\"localhost\"]\n";
    let upstream = SocketAddr::from((unique_loopback_ip(), 21));
    let proxy = Proxy::start_with(unique_loopback_ip(), ListenerSpec::new(upstream), extra);
    let api = proxy.admin;
    let port = free_port([127, 0, 0, 1].into());
    let body = format!(
        r#"{{"source": "ftp://x@127.1:{port}/f", "destination": "ftp://x@localhost:{port}/g"}}"#
    );
    let (status, resp) = http(api, "POST", "/api/v1/transfers", None, &body);
    assert_eq!(status, 202, "{resp}");
    let id = field(&resp, "id").unwrap().to_string();
    wait_ended(api, &id);
    let v = job(api, &id);
    assert_eq!(field(&v, "state"), Some("failed"), "{v}");
    assert!(
        v.contains(&format!("source 127.1:{port}")) && v.contains("not in fxp.allow"),
        "{v}"
    );
}

#[test]
fn too_many_retries_are_a_bad_request() {
    let upstream = SocketAddr::from((unique_loopback_ip(), 21));
    let extra = format!("fxp:\n  allow: [\"{}/32\"]\n", upstream.ip());
    let proxy = Proxy::start_with(unique_loopback_ip(), ListenerSpec::new(upstream), &extra);
    let body = format!(
        r#"{{"source": "ftp://x@{upstream}/f", "destination": "ftp://x@{upstream}/g",
            "options": {{"retries": 11}}}}"#
    );
    let (status, resp) = http(proxy.admin, "POST", "/api/v1/transfers", None, &body);
    assert_eq!(status, 400, "{resp}");
    assert!(resp.contains("retries"), "{resp}");
    let (_, list) = http(proxy.admin, "GET", "/api/v1/transfers", None, "");
    assert!(!list.contains("\"id\""), "{list}");
}

#[test]
fn a_reload_changes_the_token_and_the_allow_list() {
    let (a, b) = (fxp_server(), fxp_server());
    let extra = format!("fxp:\n  allow: [\"{}/32\"]\n", a.addr.ip());
    let mut spec = ListenerSpec::new(a.addr);
    spec.admin_token = Some(TOKEN);
    let proxy = Proxy::start_with(unique_loopback_ip(), spec, &extra);
    let api = proxy.admin;
    let body = transfer(&a, "big.bin", &b, "copy.bin");
    let (status, resp) = http(api, "POST", "/api/v1/transfers", Some(TOKEN), &body);
    assert_eq!(status, 403, "b is not allowed yet: {resp}");

    let text = std::fs::read_to_string(&proxy.config).unwrap();
    let text = text.replace(TOKEN, "the-new-token").replace(
        &format!("\"{}/32\"", a.addr.ip()),
        &format!("\"{}/32\", \"{}/32\"", a.addr.ip(), b.addr.ip()),
    );
    std::fs::write(&proxy.config, text).unwrap();
    unsafe { libc::kill(proxy.pid() as i32, libc::SIGHUP) };
    wait_for("the reload", || {
        proxy.metric("fxprelay_config_reloads_total", &[("result", "ok")]) == 1.0
    });
    let (status, _) = http(api, "GET", "/api/v1/transfers", Some(TOKEN), "");
    assert_eq!(status, 401, "the old token no longer works");
    let (status, resp) = http(
        api,
        "POST",
        "/api/v1/transfers",
        Some("the-new-token"),
        &body,
    );
    assert_eq!(status, 202, "{resp}");
}
