//! What an operator meets on day one, checked against the real binary and the shipped
//! files: metrics from the first scrape (and `promtool check metrics`), the alert rules
//! (`promtool check rules` / `test rules`), the Grafana dashboard's queries against a
//! real scrape, the compose file's provisioning, the login and transfer log lines in
//! text and JSON, the admin page and sessions API, and the packaging commands
//! (`completions`, `man`, `healthcheck`, the systemd unit through `systemd-analyze`).

mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::clients::{self, Mode};
use common::control::Control;
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::{ListenerSpec, Proxy, http};
use common::{free_port, unique_loopback_ip, wait_for};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs a tool the test script installs, failing with the fix when it is missing.
fn tool(program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): run scripts/install-test-peers.sh")
        });
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn fxprelay(args: &[&str]) -> (bool, String) {
    tool(env!("CARGO_BIN_EXE_fxprelay"), args, None)
}

/// A relaying proxy whose upstream is a free port (nothing needs to answer there).
fn idle_proxy() -> Proxy {
    let ip = unique_loopback_ip();
    let upstream = SocketAddr::new(ip.into(), free_port(ip.into()));
    Proxy::start(ip, ListenerSpec::new(upstream).relay(&[]))
}

/// The metric families of a scrape (its `# TYPE` lines).
/// A proxy with what the idle one lacks: a listener over a pool of two members (nobody
/// listens there) that shows clients a certificate of the test CA, with a route
/// (`alpha`) that has a certificate of its own.
fn tls_pool_proxy() -> (tempfile::TempDir, Proxy) {
    let ip = unique_loopback_ip();
    let dir = tempfile::tempdir().unwrap();
    let files = common::tls::identity_for(ip.into()).write(dir.path(), "proxy");
    let (addr, admin) = (
        SocketAddr::new(ip.into(), free_port(ip.into())),
        SocketAddr::new(ip.into(), free_port(ip.into())),
    );
    let member = || SocketAddr::new(ip.into(), free_port(ip.into()));
    let yaml = format!(
        "admin:\n  bind: \"{admin}\"\nlisteners:\n  - name: edge\n    bind: \"{addr}\"\n    upstream: [\"{}\", \"{}\"]\n    data: relay\n    tls:\n      client: {{mode: explicit, cert: \"{cert}\", key: \"{key}\"}}\n    routes:\n      - match: {{host: alpha.test}}\n        name: alpha\n        upstream: \"{}\"\n        tls: {{cert: \"{cert}\", key: \"{key}\"}}\n",
        member(),
        member(),
        member(),
        cert = files.cert.display(),
        key = files.key.display()
    );
    let proxy = Proxy::launch(&yaml, addr, admin, None, &[]);
    (dir, proxy)
}

fn families(scrape: &str) -> HashSet<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Every `fxprelay_*` and `process_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("fxprelay_") || w.starts_with("process_"))
        .map(|w| w.trim_end_matches('_').to_owned())
        .collect()
}

/// The family a sample name belongs to (a histogram's `_bucket`, `_sum`, `_count`).
fn family_of(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[test]
fn a_fresh_proxy_exports_every_documented_series_and_promtool_accepts_them() {
    let proxy = idle_proxy();
    let scrape = proxy.metrics();
    let have = families(&scrape);
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let section = readme
        .split("## Operations")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has an Operations section");
    let documented = metric_names(section);
    assert!(documented.len() > 25, "{documented:?}");
    let missing: Vec<_> = documented
        .iter()
        .filter(|n| !have.contains(family_of(n)))
        .collect();
    assert!(
        missing.is_empty(),
        "not in the first scrape: {missing:?}\n{scrape}"
    );
    // Every known label value is there at 0, per listener and route (`default`: a
    // listener without routes has only its own upstream).
    for sample in [
        "fxprelay_rejected_total{listener=\"test\",route=\"default\",reason=\"bounce\"} 0",
        "fxprelay_upstream_errors_total{listener=\"test\",route=\"default\",reason=\"timeout\"} 0",
        "fxprelay_data_transfers_total{listener=\"test\",route=\"default\",result=\"failed\"} 0",
        "fxprelay_sessions_limit{listener=\"test\"} 1024",
        "fxprelay_config_last_reload_success 1",
        "fxprelay_data_ports_available 1000",
    ] {
        assert!(
            scrape.lines().any(|l| l == sample),
            "missing {sample}\n{scrape}"
        );
    }
    assert!(
        scrape.contains(&format!(
            "fxprelay_build_info{{version=\"{}\",commit=",
            env!("CARGO_PKG_VERSION")
        )),
        "{scrape}"
    );
    let (ok, out) = tool("promtool", &["check", "metrics"], Some(&scrape));
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}"
    );
}

#[test]
fn alert_rules_pass_promtool_checks_and_their_unit_tests() {
    let rules = repo("deploy/prometheus/alerts.yml");
    let (ok, out) = tool(
        "promtool",
        &["check", "rules", rules.to_str().unwrap()],
        None,
    );
    assert!(ok, "{out}");
    let tests = repo("deploy/prometheus/alerts_test.yml");
    let (ok, out) = tool(
        "promtool",
        &["test", "rules", tests.to_str().unwrap()],
        None,
    );
    assert!(ok && out.contains("SUCCESS"), "{out}");
    let config = repo("deploy/prometheus/prometheus.yml");
    let (ok, out) = tool(
        "promtool",
        &["check", "config", config.to_str().unwrap()],
        None,
    );
    assert!(ok && out.contains("1 rule files found"), "{out}");
    // Every alert the issue asks for, on metrics that exist.
    let text = std::fs::read_to_string(&rules).unwrap();
    for alert in [
        "FxprelayDown",
        "FxprelayDataPortsNearExhaustion",
        "FxprelayUpstreamErrorsRising",
        "FxprelayFxpFailureRatio",
        "FxprelayConfigReloadFailed",
        "FxprelaySessionsNearLimit",
        "FxprelayPoolMemberDown",
        "FxprelayCertificateExpiringSoon",
    ] {
        assert!(text.contains(&format!("alert: {alert}")), "{alert}");
    }
    // Pool and certificate series exist where there are pools and certificates.
    let (_dir, full) = tls_pool_proxy();
    let scrape = full.metrics();
    let have = families(&scrape);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // The listener's own certificate, and its route's.
    for route in ["default", "alpha"] {
        let series = format!(
            "fxprelay_tls_certificate_expiry_timestamp_seconds{{listener=\"edge\",route=\"{route}\"}} "
        );
        let expiry = scrape
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no certificate expiry for edge/{route}:\n{scrape}"));
        assert!(
            expiry > now + 86400.0,
            "the test certificate expires at {expiry}"
        );
    }
    // A listener with routes has every session series per route, `none` (no route
    // chosen yet) and `default` included, at 0; its pool's under `default`.
    for sample in [
        "fxprelay_rejected_total{listener=\"edge\",route=\"none\",reason=\"unknown_host\"} 0",
        "fxprelay_data_bytes_total{listener=\"edge\",route=\"alpha\",direction=\"download\"} 0",
        "fxprelay_sessions_active{listener=\"edge\",route=\"default\"} 0",
        "fxprelay_route_sessions_total{listener=\"edge\",route=\"alpha\"} 0",
    ] {
        assert!(
            scrape.lines().any(|l| l == sample),
            "missing {sample}\n{scrape}"
        );
    }
    assert!(
        scrape.contains("fxprelay_upstream_up{listener=\"edge\",route=\"default\",upstream="),
        "{scrape}"
    );
    let (ok, out) = tool("promtool", &["check", "metrics"], Some(&scrape));
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}"
    );
    for name in metric_names(&text) {
        assert!(have.contains(family_of(&name)), "alerts.yml names {name}");
    }
}

#[test]
fn the_dashboard_loads_and_every_query_names_a_real_metric() {
    let text = std::fs::read_to_string(repo("deploy/grafana/fxprelay-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    assert_eq!(dash["uid"], "fxprelay");
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(dash["title"].is_string());
    let panels = dash["panels"].as_array().unwrap();
    // Pool and certificate panels query series a proxy has with pools and TLS.
    let (_dir, full) = tls_pool_proxy();
    let have = families(&full.metrics());
    // Every query is scoped to the chosen job and instances.
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        vars.contains(&"job") && vars.contains(&"instance"),
        "{vars:?}"
    );
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains("instance=~\"$instance\""),
                "{}: {expr}",
                p["title"]
            );
        }
    }
    let mut queried = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(
            p["type"].is_string() && p["gridPos"]["w"].is_u64(),
            "{title}"
        );
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr}");
            for n in names {
                assert!(have.contains(family_of(&n)), "{title}: {n} does not exist");
                queried.insert(family_of(&n).to_owned());
            }
        }
    }
    // What the issue lists: sessions, commands, rewrites, throughput, ports in use vs
    // available, connect latency (a heatmap), rejections, FXP jobs.
    for m in [
        "fxprelay_sessions_active",
        "fxprelay_commands_total",
        "fxprelay_rewrites_total",
        "fxprelay_data_bytes_total",
        "fxprelay_data_ports_in_use",
        "fxprelay_data_ports_available",
        "fxprelay_upstream_connect_seconds",
        "fxprelay_rejected_total",
        "fxprelay_fxp_transfers_total",
    ] {
        assert!(queried.contains(m), "no panel shows {m}");
    }
    assert!(panels.iter().any(|p| p["type"] == "heatmap"));

    // The compose file mounts the dashboard where the provisioning provider looks.
    let compose: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(repo("docker/compose.yaml")).unwrap())
            .expect("compose YAML");
    let provider: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo("deploy/grafana/provisioning/dashboards/fxprelay.yml"))
            .unwrap(),
    )
    .unwrap();
    let dashboards_dir = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let mounts: Vec<(String, String)> = compose["services"]["grafana"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let v = v.as_str().unwrap();
            let mut parts = v.split(':');
            (parts.next().unwrap().into(), parts.next().unwrap().into())
        })
        .collect();
    let docker = repo("docker");
    for (src, _) in &mounts {
        assert!(docker.join(src).exists(), "compose mounts missing {src}");
    }
    assert!(
        mounts
            .iter()
            .any(|(src, dst)| src.ends_with("fxprelay-dashboard.json")
                && dst.starts_with(dashboards_dir)),
        "{mounts:?} vs {dashboards_dir}"
    );
    assert!(
        mounts
            .iter()
            .any(|(_, dst)| dst == "/etc/grafana/provisioning")
    );
    let prometheus = compose["services"]["prometheus"]["volumes"][0]
        .as_str()
        .unwrap();
    let src = prometheus.split(':').next().unwrap();
    for f in ["prometheus.yml", "alerts.yml"] {
        assert!(docker.join(src).join(f).exists(), "{src}/{f}");
    }
}

/// A pyftpdlib server with a file to download, and a relaying proxy logging at INFO in
/// `format`.
fn logging_proxy(server: &FtpServer, format: &'static str) -> Proxy {
    let mut spec = ListenerSpec::new(server.addr).relay(&[]);
    spec.env = vec![("RUST_LOG", "info"), ("FXPRELAY_LOG_FORMAT", format)];
    Proxy::start(unique_loopback_ip(), spec)
}

/// A session that moves into `a/b`, uploads, renames, deletes and makes a directory:
/// one INFO line per action, each with the absolute path and the session's id.
#[test]
fn file_operations_log_one_line_each_with_absolute_paths() {
    let server = FtpServer::start(ServerKind::Vsftpd, ServerOptions::new(unique_loopback_ip()));
    server.put("a", None);
    server.put("a/b", None);
    let proxy = logging_proxy(&server, "text");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("up.bin");
    std::fs::write(&local, b"some bytes").unwrap();
    let url = clients::ftp_url(server.user, server.pass, proxy.addr, "a/b/up.bin");
    // curl's defaults: PWD after the login, CWD a, CWD b, STOR; then the post-quotes.
    let r = clients::curl(
        &url,
        &Mode::Passive,
        [
            "-T".as_ref(),
            local.as_os_str(),
            "-Q".as_ref(),
            "-RNFR up.bin".as_ref(),
            "-Q".as_ref(),
            "-RNTO moved.bin".as_ref(),
            "-Q".as_ref(),
            "-MKD made".as_ref(),
            "-Q".as_ref(),
            "-DELE moved.bin".as_ref(),
        ],
    );
    assert!(r.ok(), "{r}\n{}", proxy.log());
    // vsftpd shows its root as `/`: paths are absolute as the server names them.
    let root = server.root.clone();
    let b = "/a/b";
    wait_for("the delete's line", || {
        proxy.log().contains("audit: delete")
    });
    let log = proxy.log();
    let line = |what: &str| {
        let found: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("audit: {what} ")))
            .collect();
        assert_eq!(found.len(), 1, "{what}:\n{log}");
        assert!(found[0].contains("session="), "{}", found[0]);
        found[0].to_owned()
    };
    assert!(
        line("transfer").contains(&format!("verb=STOR path={b}/up.bin")),
        "{log}"
    );
    assert!(
        line("rename").contains(&format!(
            "from={b}/up.bin to={b}/moved.bin result=ok reply=250"
        )),
        "{log}"
    );
    assert!(
        line("mkdir").contains(&format!("path={b}/made result=ok reply=257")),
        "{log}"
    );
    assert!(
        line("delete").contains(&format!("path={b}/moved.bin result=ok reply=250")),
        "{log}"
    );
    assert!(root.join("a/b/made").is_dir() && !root.join("a/b/moved.bin").exists());
}

#[test]
fn one_login_and_one_download_log_one_line_each_in_text_and_json() {
    let server = FtpServer::start(
        ServerKind::Pyftpdlib,
        ServerOptions::new(unique_loopback_ip()),
    );
    let dir = tempfile::tempdir().unwrap();
    for format in ["text", "json"] {
        let proxy = logging_proxy(&server, format);
        let got = dir.path().join(format!("hello-{format}"));
        let url = clients::ftp_url(server.user, server.pass, proxy.addr, peers::HELLO_NAME);
        let r = clients::curl_download(&url, &got, &Mode::Passive);
        assert!(r.ok(), "{r}\n{}", proxy.log());
        // A wrong password is a failed login, not just "client closed".
        let mut c = Control::connect(proxy.addr);
        c.expect(220);
        c.cmd_expect(&format!("USER {}", server.user), 331);
        c.cmd_expect("PASS not-the-password", 530);
        c.cmd_expect("QUIT", 221);
        let refused = if format == "text" {
            "reply=530"
        } else {
            "\"reply\":530"
        };
        wait_for("the failed login's line", || proxy.log().contains(refused));
        let log = proxy.log();
        assert!(!log.contains("not-the-password"), "{log}");
        let len = peers::HELLO.len().to_string();
        let upstream = server.addr.to_string();
        match format {
            "text" => {
                let logins: Vec<_> = log
                    .lines()
                    .filter(|l| l.contains("audit: login "))
                    .collect();
                let transfers: Vec<_> = log
                    .lines()
                    .filter(|l| l.contains("audit: transfer "))
                    .collect();
                assert_eq!(logins.len(), 2, "{log}");
                assert!(
                    logins[0].contains(&format!(
                        "user={} upstream={upstream} result=ok",
                        server.user
                    )),
                    "{log}"
                );
                assert!(
                    logins[0].contains("listener=test") && logins[0].contains("client="),
                    "{log}"
                );
                assert!(logins[1].contains("result=failed reply=530"), "{log}");
                // Whether TLS carried the login, and the session's id, on every line.
                assert!(logins[0].contains("tls=false"), "{log}");
                assert!(
                    log.lines()
                        .filter(|l| l.contains("fxprelay::session"))
                        .all(|l| l.contains("session=")),
                    "{log}"
                );
                assert_eq!(transfers.len(), 1, "{log}");
                let t = transfers[0];
                // Absolute: curl asked PWD (pyftpdlib's root is `/`).
                assert!(
                    t.contains(&format!("verb=RETR path=/{}", peers::HELLO_NAME)),
                    "{t}"
                );
                assert!(
                    t.contains(&format!("upload_bytes=0 download_bytes={len} ms=")),
                    "{t}"
                );
                assert!(t.contains("result=ok"), "{t}");
                assert!(!log.contains("Some("), "debug formatting in:\n{log}");
                assert!(
                    log.contains("session ended") && log.contains(" ms="),
                    "{log}"
                );
            }
            _ => {
                let lines: Vec<serde_json::Value> = log
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                    .collect();
                for l in &lines {
                    assert!(l.get("fields").is_none() && l.get("spans").is_none(), "{l}");
                }
                let of = |m: &str| {
                    lines
                        .iter()
                        .filter(|l| l["message"] == m)
                        .collect::<Vec<_>>()
                };
                let logins = of("login");
                assert_eq!(logins.len(), 2, "{log}");
                let ok = logins[0];
                assert_eq!(
                    (ok["user"].as_str(), ok["result"].as_str()),
                    (Some(server.user), Some("ok"))
                );
                assert_eq!(ok["upstream"].as_str(), Some(upstream.as_str()));
                assert_eq!(ok["listener"], "test");
                assert!(ok["client"].is_string() && ok["level"] == "INFO", "{ok}");
                assert_eq!(logins[1]["result"], "failed");
                let transfers = of("transfer");
                assert_eq!(transfers.len(), 1, "{log}");
                let t = transfers[0];
                assert_eq!(
                    (t["verb"].as_str(), t["path"].as_str()),
                    (
                        Some("RETR"),
                        Some(format!("/{}", peers::HELLO_NAME).as_str())
                    )
                );
                assert_eq!(t["download_bytes"].to_string(), len);
                assert!(t["ms"].is_u64() && t["result"] == "ok", "{t}");
            }
        }
    }
}

#[test]
fn the_admin_page_and_the_sessions_api() {
    let server = FtpServer::start(
        ServerKind::Pyftpdlib,
        ServerOptions::new(unique_loopback_ip()),
    );
    let mut spec = ListenerSpec::new(server.addr).relay(&[]);
    spec.admin_token = Some("s3cret");
    let proxy = Proxy::start(unique_loopback_ip(), spec);
    let (status, page) = http(proxy.admin, "GET", "/", None, "");
    assert_eq!(status, 200, "{page}");
    for needle in [
        env!("CARGO_PKG_VERSION"),
        "href=\"/metrics\"",
        "href=\"/healthz\"",
        "/api/v1/sessions",
        &proxy.addr.to_string(),
    ] {
        assert!(page.contains(needle), "{needle} missing:\n{page}");
    }
    let (status, _) = http(proxy.admin, "GET", "/api/v1/sessions", None, "");
    assert_eq!(status, 401);
    let c = Control::login(proxy.addr);
    let (status, body) = http(proxy.admin, "GET", "/api/v1/sessions", Some("s3cret"), "");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sessions = v["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{body}");
    let s = &sessions[0];
    assert_eq!(s["listener"], "test");
    assert_eq!(s["user"], peers::USER);
    assert_eq!(s["upstream"], server.addr.to_string());
    assert_eq!(s["logged_in"], true);
    assert!(s["started"].is_f64() && s["client"].is_string(), "{s}");
    assert!(s["transfer"].is_null() && s["download_bytes"] == 0, "{s}");
    drop(c);
    wait_for("the closed session to leave the list", || {
        let (_, body) = http(proxy.admin, "GET", "/api/v1/sessions", Some("s3cret"), "");
        body.contains("\"sessions\":[]")
    });
}

/// `check --bind` next to the running proxy, as before a `systemctl reload`: the binds
/// that proxy holds count as working; a port someone else holds still fails.
#[test]
fn check_bind_beside_the_running_instance() {
    let proxy = idle_proxy();
    let config = proxy.config.to_str().unwrap();
    let (ok, out) = fxprelay(&["check", "--bind", "-c", config]);
    assert!(
        ok && out.contains("every bind works (2 held by the running instance)"),
        "{out}"
    );
    // Another program's port in the same file: refused, saying it is not the proxy's.
    let ip = unique_loopback_ip();
    let other = std::net::TcpListener::bind((ip, 0)).unwrap();
    let yaml = std::fs::read_to_string(&proxy.config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("more.yaml");
    std::fs::write(
        &path,
        format!(
            "{yaml}  - name: other\n    bind: \"{}\"\n    upstream: h:21\n",
            other.local_addr().unwrap()
        ),
    )
    .unwrap();
    let (ok, out) = fxprelay(&["check", "--bind", "-c", path.to_str().unwrap()]);
    assert!(
        !ok && out.contains("cannot bind listener `other`")
            && out.contains("not by the fxprelay answering at"),
        "{out}"
    );
}

#[test]
fn completions_man_healthcheck_and_the_systemd_unit() {
    let (ok, out) = fxprelay(&["completions", "bash"]);
    assert!(
        ok && out.contains("_fxprelay()") && out.contains("healthcheck"),
        "{out}"
    );
    let (ok, man) = fxprelay(&["man"]);
    assert!(ok && man.contains(".TH fxprelay 1"), "{man}");

    let proxy = idle_proxy();
    let admin = proxy.admin.to_string();
    let (ok, out) = fxprelay(&["healthcheck", "--admin", &admin]);
    assert!(ok, "{out}");
    // The admin address from the config file.
    let (ok, out) = fxprelay(&["healthcheck", "-c", proxy.config.to_str().unwrap()]);
    assert!(ok, "{out}");
    let ip = unique_loopback_ip();
    let nobody = SocketAddr::new(ip.into(), free_port(ip.into())).to_string();
    let (ok, out) = fxprelay(&["healthcheck", "--admin", &nobody, "--timeout", "2s"]);
    assert!(!ok && out.contains("cannot ask"), "{out}");

    // systemd-analyze checks the unit's executables and its man: documentation, so the
    // unit is verified against the built binary and the generated page.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo("deploy/systemd/fxprelay.service")).unwrap();
    for needle in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(needle), "{needle}");
    }
    // With the TLS drop-in's LoadCredential= lines, as systemd would merge them.
    let drop_in = std::fs::read_to_string(repo("deploy/systemd/tls-credentials.conf")).unwrap();
    let credentials: String = drop_in
        .lines()
        .filter(|l| l.starts_with("LoadCredential="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(credentials.lines().count(), 2, "{drop_in}");
    let unit = unit
        .replace("/usr/bin/fxprelay", env!("CARGO_BIN_EXE_fxprelay"))
        .replace("[Service]\n", &format!("[Service]\n{credentials}"));
    let path = dir.path().join("fxprelay.service");
    std::fs::write(&path, unit).unwrap();
    std::fs::create_dir_all(dir.path().join("man/man1")).unwrap();
    std::fs::write(dir.path().join("man/man1/fxprelay.1"), &man).unwrap();
    verify_unit(&path, &dir.path().join("man"));

    // The agent's unit, against the pages `fxprelay man --dir` writes (fxprelay-agent.1).
    let pages = dir.path().join("man/man1");
    let (ok, out) = fxprelay(&["man", "--dir", pages.to_str().unwrap()]);
    assert!(ok && pages.join("fxprelay-agent.1").exists(), "{out}");
    let unit = std::fs::read_to_string(repo("deploy/systemd/fxprelay-agent.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/fxprelay agent -c /etc/fxprelay/agent.yaml"));
    let path = dir.path().join("fxprelay-agent.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/fxprelay", env!("CARGO_BIN_EXE_fxprelay")),
    )
    .unwrap();
    verify_unit(&path, &dir.path().join("man"));
}

/// `systemd-analyze verify` finds nothing to say about the unit at `path` (its
/// executables exist, its `man:` pages are in `manpath`).
fn verify_unit(path: &Path, manpath: &Path) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(path)
        .env("MANPATH", manpath)
        .output()
        .expect("systemd-analyze (Debian package systemd): run scripts/install-test-peers.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "{}: {text}",
        path.display()
    );
}
