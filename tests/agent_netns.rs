//! Servers that accept no inbound connection, reached through `fxprelay agent`: network
//! namespaces for the client, the router in front of the inside network and the inside
//! network itself (`common::netns::AgentLab`). The inside's firewall drops every inbound
//! connection attempt and the edge (the root namespace, where the proxy runs) has no
//! route into it; the agent runs inside beside the real servers and dials out. Clients
//! in the client namespace must list, download and upload through the edge, byte for
//! byte, and the drop counter must show that nothing ever tried to connect in.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::agent::AgentProc;
use common::clients::{self, ClientResult, FtplibOp};
use common::netns::AgentLab;
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::Proxy;
use common::{free_port, tls, wait_for_within};

const TOKEN: &str = "0d2c6f0e8a9b4d7f9e1c2b3a4f5e6d7c";

/// A server inside, which only the agent can reach.
fn inside_server(lab: &AgentLab, kind: ServerKind, tls: bool) -> FtpServer {
    inside_server_with(lab, kind, tls, Allows::default())
}

/// What a server inside takes beyond the defaults.
#[derive(Clone, Copy, Default)]
struct Allows {
    /// FXP: `PORT` to a foreign address.
    fxp: bool,
    /// No passive mode: its `PASV`/`EPSV` answered with a `5xx` (only active mode
    /// reaches it).
    no_passive: bool,
}

/// [`inside_server`], with what it `allows`.
fn inside_server_with(lab: &AgentLab, kind: ServerKind, tls: bool, allows: Allows) -> FtpServer {
    let mut opts = ServerOptions::new(lab.inside_ip);
    opts.foreign_data = allows.fxp;
    if tls {
        opts = opts.with_tls();
    }
    opts.passive = !allows.no_passive;
    opts.netns = Some(lab.inside_ns.clone());
    opts.unreachable_from_root = true;
    FtpServer::start(kind, opts)
}

/// The edge: fxprelay in the root namespace with an agents listener and one reverse
/// listener per `(name, upstream, extra keys)`, each `via: site-a`.
struct Edge {
    proxy: Proxy,
    /// Where the agent dials.
    agents: SocketAddr,
    /// The CA of the edge's certificates (what the agent and TLS clients trust).
    ca: PathBuf,
    /// Each listener's address, in order.
    listeners: Vec<SocketAddr>,
    dir: tempfile::TempDir,
}

fn edge(lab: &AgentLab, listeners: &[(&str, SocketAddr, &str)]) -> Edge {
    edge_with(lab, listeners, "", "")
}

/// [`edge`] with more `agents.tokens` entries (`, name: token`) and more top-level keys.
fn edge_with(
    lab: &AgentLab,
    listeners: &[(&str, SocketAddr, &str)],
    more_agents: &str,
    top: &str,
) -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let agents_id = tls::identity_for(IpAddr::V4(lab.edge_agents_ip)).write(dir.path(), "edge");
    let ca = tls::test_ca().write_cert(dir.path());
    let agents = SocketAddr::from((lab.edge_agents_ip, free_port(lab.edge_agents_ip.into())));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port([127, 0, 0, 1].into())));
    let mut yaml = format!(
        "{top}admin:\n  bind: \"{admin}\"\nagents:\n  bind: \"{agents}\"\n  cert: \"{}\"\n  key: \"{}\"\n  tokens: {{site-a: {TOKEN}{more_agents}}}\nlisteners:\n",
        agents_id.cert.display(),
        agents_id.key.display()
    );
    let mut addrs = Vec::new();
    for (name, upstream, extra) in listeners {
        let addr = SocketAddr::from((lab.edge_ip, free_port(lab.edge_ip.into())));
        // Extra keys may bring their own `upstream:` (a pool).
        let upstream = match extra.lines().any(|l| l.starts_with("    upstream:")) {
            true => String::new(),
            false => format!("    upstream: \"{upstream}\"\n"),
        };
        yaml.push_str(&format!(
            "  - name: {name}\n    bind: \"{addr}\"\n{upstream}    via: site-a\n    data: relay\n{extra}"
        ));
        addrs.push(addr);
    }
    let proxy = Proxy::launch(&yaml, addrs[0], admin, None, &[]);
    Edge {
        proxy,
        agents,
        ca,
        listeners: addrs,
        dir,
    }
}

impl Edge {
    /// An agent named `site-a` inside, with `token`, trusting `ca`, allowed `allow`.
    fn agent_with(&self, lab: &AgentLab, token: &str, ca: &Path, allow: &str) -> AgentProc {
        let yaml = format!(
            "agent:\n  name: site-a\n  edge: \"{}\"\n  ca: \"{}\"\n  token: {token}\n  allow: [{allow}]\n  connect_timeout: 5s\n",
            self.agents,
            ca.display()
        );
        AgentProc::launch(&yaml, &lab.inside_ns)
    }

    fn agent(&self, lab: &AgentLab) -> AgentProc {
        self.agent_with(lab, TOKEN, &self.ca, &lab.inside_ip.to_string())
    }

    fn links(&self) -> f64 {
        self.proxy
            .metric("fxprelay_agent_up", &[("agent", "site-a")])
    }

    fn wait_linked(&self) {
        wait_for_within(Duration::from_secs(10), "the agent's link", || {
            self.links() == 1.0
        });
    }

    /// How many links the edge lists for `site-a` (`GET /api/v1/agents`).
    fn listed(&self) -> usize {
        let (status, body) =
            common::proxy::http_get(self.proxy.admin, "/api/v1/agents").expect("GET agents");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["agents"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|l| l["name"] == "site-a").count())
    }
}

/// The first line a new session hears from listener `addr`, read in the client
/// namespace.
fn greeting(lab: &AgentLab, addr: SocketAddr) -> String {
    let script = format!(
        "import socket; s = socket.create_connection(('{}', {}), 5); s.settimeout(5); print(s.recv(512).decode(errors='replace').strip())",
        addr.ip(),
        addr.port()
    );
    let r = clients::run(
        lab.in_client(&["python3", "-c", &script]),
        Duration::from_secs(15),
    );
    r.stdout.trim().to_string()
}

fn curl(lab: &AgentLab, args: &[&str]) -> ClientResult {
    let mut all = vec!["curl", "-sS", "--connect-timeout", "5", "--max-time", "60"];
    all.extend_from_slice(args);
    clients::run(lab.in_client(&all), Duration::from_secs(70))
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("ftp://{}:{}@{addr}/{path}", peers::USER, peers::PASS)
}

fn ok(r: &ClientResult, what: &str, edge: &Edge, agent: &AgentProc) {
    assert!(
        r.ok(),
        "{what}: {r}\nedge log:\n{}\nagent log:\n{}",
        edge.proxy.log(),
        agent.log()
    );
}

fn same(path: &Path, want: &[u8], what: &str) {
    let got = std::fs::read(path).unwrap_or_default();
    assert!(
        got == want,
        "{what}: {} bytes, want {}",
        got.len(),
        want.len()
    );
}

/// An upload's content: distinct per client, so a file cannot pass for another's.
fn upload_file(dir: &Path, name: &str, seed: u64) -> (PathBuf, Vec<u8>) {
    let data = common::payload(3 * 1024 * 1024 + 17, seed);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// curl (its defaults, EPSV, and `--disable-epsv`), lftp and Python's ftplib with their
/// defaults, in the client namespace, through the edge's listener `addr` to `server`
/// inside: each downloads, lists and uploads, byte for byte.
fn every_client(
    lab: &AgentLab,
    edge: &Edge,
    agent: &AgentProc,
    server: &FtpServer,
    addr: SocketAddr,
    work: &Path,
) {
    let big = peers::big_bin();
    let kind = server.kind.name();
    // curl as it comes (EPSV), then with PASV: downloads, a listing, uploads.
    for (i, extra) in [&[][..], &["--disable-epsv"][..]].iter().enumerate() {
        let got = work.join(format!("{kind}-curl{i}.bin"));
        let mut args = extra.to_vec();
        let u = url(addr, "big.bin");
        args.extend(["-o", got.to_str().unwrap(), u.as_str()]);
        ok(&curl(lab, &args), "curl download", edge, agent);
        same(&got, big, &format!("{kind} curl {extra:?} download"));
        let list = curl(lab, &[extra, &[url(addr, "").as_str()][..]].concat());
        ok(&list, "curl list", edge, agent);
        assert!(list.stdout.contains("big.bin"), "{kind}: {}", list.stdout);
        let (up, data) = upload_file(work, &format!("{kind}-up{i}"), i as u64 + 1);
        let dest = url(addr, &format!("curl{i}.bin"));
        let args = [extra, &["-T", up.to_str().unwrap(), dest.as_str()][..]].concat();
        ok(&curl(lab, &args), "curl upload", edge, agent);
        same(
            &server.file(format!("curl{i}.bin")),
            &data,
            &format!("{kind} curl upload"),
        );
    }
    // lftp with its defaults (it fixes passive addresses it dislikes).
    let got = work.join(format!("{kind}-lftp.bin"));
    let (up, data) = upload_file(work, &format!("{kind}-lftp-up"), 7);
    let script = format!(
        "set net:max-retries 1; set net:timeout 15; open -u {},{} ftp://{addr}; get big.bin -o {}; put {} -o lftp.bin; cls",
        peers::USER,
        peers::PASS,
        got.display(),
        up.display()
    );
    let r = clients::run(
        lab.in_client(&["lftp", "-c", &script]),
        Duration::from_secs(90),
    );
    ok(&r, "lftp", edge, agent);
    same(&got, big, &format!("{kind} lftp download"));
    same(
        &server.file("lftp.bin"),
        &data,
        &format!("{kind} lftp upload"),
    );
    // Python's ftplib with its defaults (the 227 address ignored).
    let got = work.join(format!("{kind}-ftplib.bin"));
    let (up, data) = upload_file(work, &format!("{kind}-ftplib-up"), 9);
    let mut cmd = clients::ftplib_command(
        Path::new("/usr/bin/python3"),
        addr,
        peers::USER,
        peers::PASS,
        true,
        None,
        &[
            FtplibOp::Get("big.bin", &got),
            FtplibOp::Put(&up, "ftplib.bin"),
        ],
    );
    cmd.arg("--stock");
    let args: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = clients::run(lab.in_client(&args), Duration::from_secs(90));
    ok(&r, "ftplib", edge, agent);
    same(&got, big, &format!("{kind} ftplib download"));
    same(
        &server.file("ftplib.bin"),
        &data,
        &format!("{kind} ftplib upload"),
    );
}

#[test]
fn clients_reach_servers_that_accept_no_inbound_connection_through_the_agent() {
    let lab = AgentLab::new();
    let vsftpd = inside_server(&lab, ServerKind::Vsftpd, false);
    let pyftpd = inside_server(&lab, ServerKind::Pyftpdlib, false);
    let edge = edge(
        &lab,
        &[("vsftpd", vsftpd.addr, ""), ("pyftpd", pyftpd.addr, "")],
    );
    let agent = edge.agent(&lab);
    edge.wait_linked();
    assert_eq!(edge.listed(), 1);
    let work = tempfile::tempdir().unwrap();

    for (server, addr) in [(&vsftpd, edge.listeners[0]), (&pyftpd, edge.listeners[1])] {
        every_client(&lab, &edge, &agent, server, addr, work.path());
    }
    assert_eq!(
        lab.inbound_drops(),
        0,
        "something tried to connect into the inside network"
    );
    assert!(
        edge.proxy
            .metric("fxprelay_data_bytes_total", &[("direction", "download")])
            > 0.0
    );
    drop(edge.dir);
}

#[test]
fn ftps_requiring_session_reuse_runs_end_to_end_through_the_agent() {
    ftps_through_the_agent(false);
}

/// The same with a server that refuses passive mode: the agent listens inside for the
/// server's TLS data connection, which still resumes the control connection's session.
#[test]
fn ftps_in_active_mode_toward_the_server_runs_end_to_end_through_the_agent() {
    ftps_through_the_agent(true);
}

fn ftps_through_the_agent(active: bool) {
    let lab = AgentLab::new();
    let server = inside_server_with(
        &lab,
        ServerKind::Vsftpd,
        true,
        Allows {
            no_passive: active,
            ..Allows::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy_id = tls::identity_for(IpAddr::V4(lab.edge_ip)).write(dir.path(), "proxy");
    let ca = tls::test_ca().write_cert(dir.path());
    let mut keys = format!(
        "    tls:\n      client: {{mode: explicit, cert: \"{}\", key: \"{}\"}}\n      upstream: {{mode: explicit, ca: \"{}\"}}\n",
        proxy_id.cert.display(),
        proxy_id.key.display(),
        ca.display()
    );
    if active {
        keys.push_str("    upstream_data: active\n");
    }
    let edge = edge(&lab, &[("ftps", server.addr, keys.as_str())]);
    let agent = edge.agent(&lab);
    edge.wait_linked();
    let addr = edge.listeners[0];
    let ca_arg = ca.to_str().unwrap();
    let got = dir.path().join("got.bin");
    let u = url(addr, "big.bin");
    let r = curl(
        &lab,
        &[
            "--ssl-reqd",
            "--cacert",
            ca_arg,
            "-o",
            got.to_str().unwrap(),
            &u,
        ],
    );
    ok(&r, "curl FTPS download", &edge, &agent);
    same(&got, peers::big_bin(), "FTPS download");
    let (up, data) = upload_file(dir.path(), "up.bin", 3);
    let dest = url(addr, "tls-up.bin");
    // TLS 1.2 for uploads: over 1.3 vsftpd sends a session ticket curl leaves unread
    // on the data connection (README, "TLS benchmark").
    let r = curl(
        &lab,
        &[
            "--ssl-reqd",
            "--tls-max",
            "1.2",
            "--cacert",
            ca_arg,
            "-T",
            up.to_str().unwrap(),
            &dest,
        ],
    );
    ok(&r, "curl FTPS upload", &edge, &agent);
    same(&server.file("tls-up.bin"), &data, "FTPS upload");
    assert_eq!(lab.inbound_drops(), 0);
    if active {
        assert_agent_ports_used_and_closed(&lab, &edge, &agent, 2);
    }
}

/// The agent listened inside at least `transfers` times (active mode was used), and
/// every port it opened is closed again: none in the edge's gauge, no listening socket
/// of the agent's process inside, no connection to one from anyone but the server.
fn assert_agent_ports_used_and_closed(
    lab: &AgentLab,
    edge: &Edge,
    agent: &AgentProc,
    transfers: usize,
) {
    let listened = agent
        .log()
        .matches("listening for the server's active-mode data connection")
        .count();
    assert!(
        listened >= transfers,
        "the agent listened {listened} times for {transfers} transfers\n{}",
        agent.log()
    );
    let agent_label = [("agent", "site-a")];
    wait_for_within(Duration::from_secs(5), "the agent's ports closed", || {
        edge.proxy.metric("fxprelay_agent_listens", &agent_label) == 0.0
    });
    let ss = clients::run(lab.in_inside(&["ss", "-Hltnp"]), Duration::from_secs(10));
    assert!(ss.ok(), "{ss}");
    assert!(
        !ss.stdout.contains("fxprelay"),
        "the agent still listens inside:\n{}",
        ss.stdout
    );
    assert_eq!(
        edge.proxy
            .metric("fxprelay_agent_port_theft_total", &agent_label),
        0.0
    );
}

/// Servers that refuse passive mode, reached in active mode: the agent listens on an
/// ephemeral port inside for each transfer, the `PORT` names that port, and the
/// server's connection travels to the edge on the agent's own outbound connection.
#[test]
fn active_mode_toward_servers_inside_goes_through_ports_the_agent_opens_inside() {
    let lab = AgentLab::new();
    let vsftpd = inside_server_with(
        &lab,
        ServerKind::Vsftpd,
        false,
        Allows {
            no_passive: true,
            ..Allows::default()
        },
    );
    let pyftpd = inside_server_with(
        &lab,
        ServerKind::Pyftpdlib,
        false,
        Allows {
            no_passive: true,
            ..Allows::default()
        },
    );
    let active = "    upstream_data: active\n";
    let edge = edge(
        &lab,
        &[
            ("vsftpd", vsftpd.addr, active),
            ("pyftpd", pyftpd.addr, active),
            // `auto`: the server's 5xx to PASV, then active through the agent.
            ("auto", vsftpd.addr, ""),
        ],
    );
    let agent = edge.agent(&lab);
    edge.wait_linked();
    let work = tempfile::tempdir().unwrap();
    for (server, addr) in [(&vsftpd, edge.listeners[0]), (&pyftpd, edge.listeners[1])] {
        every_client(&lab, &edge, &agent, server, addr, work.path());
    }
    let got = work.path().join("auto.bin");
    let u = url(edge.listeners[2], "big.bin");
    ok(
        &curl(&lab, &["-o", got.to_str().unwrap(), &u]),
        "curl download, auto",
        &edge,
        &agent,
    );
    same(&got, peers::big_bin(), "auto download");
    assert_eq!(
        lab.inbound_drops(),
        0,
        "something tried to connect into the inside network"
    );
    // Per server: curl x2 (download, list, upload), lftp (download, upload, list),
    // ftplib (download, upload).
    assert_agent_ports_used_and_closed(&lab, &edge, &agent, 2 * 11 + 1);
}

#[test]
fn a_lost_agent_means_421_at_once_and_a_new_one_serves_within_seconds() {
    let lab = AgentLab::new();
    let server = inside_server(&lab, ServerKind::Vsftpd, false);
    let edge = edge(&lab, &[("site", server.addr, "")]);
    let addr = edge.listeners[0];
    // Two agents of one name share the sessions; losing one loses nothing.
    let mut first = edge.agent(&lab);
    let mut second = edge.agent(&lab);
    wait_for_within(Duration::from_secs(10), "two links", || edge.listed() == 2);
    first.kill();
    wait_for_within(Duration::from_secs(5), "one link left", || {
        edge.listed() == 1
    });
    for _ in 0..3 {
        let g = greeting(&lab, addr);
        assert!(
            g.starts_with("220"),
            "with one agent left: {g}\n{}",
            edge.proxy.log()
        );
    }
    // The last one gone: a new session hears 421 naming the agent, within a second.
    second.kill();
    let killed = Instant::now();
    let want = "421 Service not available (agent site-a is not connected).";
    loop {
        let g = greeting(&lab, addr);
        if g == want {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "still `{g}` {:?} after the agent died\n{}",
            killed.elapsed(),
            edge.proxy.log()
        );
    }
    assert!(killed.elapsed() < Duration::from_secs(1));
    assert_eq!(edge.links(), 0.0);
    // A new agent: sessions work again within 5 s of its start.
    let started = Instant::now();
    let third = edge.agent(&lab);
    loop {
        let g = greeting(&lab, addr);
        if g.starts_with("220") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "`{g}` {:?} after a new agent started\n{}",
            started.elapsed(),
            third.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lab.inbound_drops(), 0);
}

#[test]
fn the_agent_reaches_only_its_allow_list_and_trusts_only_the_edge() {
    let lab = AgentLab::new();
    let server = inside_server(&lab, ServerKind::Vsftpd, false);
    // The second listener names a host inside that the agent's `allow` leaves out (the
    // router's inside address).
    let router_inside = SocketAddr::new(
        IpAddr::V4(std::net::Ipv4Addr::from(u32::from(lab.inside_ip) - 1)),
        21,
    );
    let edge = edge(
        &lab,
        &[("ok", server.addr, ""), ("denied", router_inside, "")],
    );
    let agent = edge.agent_with(&lab, TOKEN, &edge.ca, &format!("\"{}\"", server.addr.ip()));
    edge.wait_linked();
    assert!(greeting(&lab, edge.listeners[0]).starts_with("220"));
    let g = greeting(&lab, edge.listeners[1]);
    assert!(g.starts_with("421 "), "{g}");
    wait_for_within(
        Duration::from_secs(5),
        "the agent's refusal in its log",
        || agent.log().contains("agent.allow"),
    );
    assert!(
        agent.log().contains(&router_inside.ip().to_string()),
        "{}",
        agent.log()
    );

    // A wrong token: refused by the edge, counted, never linked.
    let mut wrong = edge.agent_with(&lab, "not-the-token-of-site-a-at-all", &edge.ca, "10.0.0.1");
    wait_for_within(Duration::from_secs(10), "the edge's refusal", || {
        edge.proxy
            .metric("fxprelay_agent_refused_total", &[("reason", "credential")])
            >= 1.0
    });
    assert_eq!(edge.listed(), 1, "only the genuine agent is listed");
    wrong.kill();
    // An edge whose certificate the agent does not trust: no link is made.
    let other = tls::Ca::new("not the edge's CA");
    let other_ca = other.write_cert(edge.dir.path());
    let doubtful = edge.agent_with(&lab, TOKEN, &other_ca, "10.0.0.1");
    wait_for_within(Duration::from_secs(10), "the agent's TLS refusal", || {
        doubtful
            .log()
            .contains("TLS handshake with the edge failed")
    });
    assert_eq!(edge.listed(), 1);
    assert_eq!(lab.inbound_drops(), 0);
}

/// A pool behind the agent: both servers inside are health-checked through it (a check
/// straight from the edge could not reach them), and sessions go to either.
#[test]
fn a_pool_inside_is_checked_and_used_through_the_agent() {
    let lab = AgentLab::new();
    let vsftpd = inside_server(&lab, ServerKind::Vsftpd, false);
    let pyftpd = inside_server(&lab, ServerKind::Pyftpdlib, false);
    let keys = format!(
        "    balance: round_robin\n    health_check: {{interval: 1s, timeout: 2s, rise: 1, fall: 1}}\n    upstream: [\"{}\", \"{}\"]\n",
        vsftpd.addr, pyftpd.addr
    );
    let edge = edge(&lab, &[("pool", vsftpd.addr, &keys)]);
    let agent = edge.agent(&lab);
    edge.wait_linked();
    wait_for_within(
        Duration::from_secs(15),
        "both backends up through the agent",
        || {
            edge.proxy
                .metric("fxprelay_upstream_up", &[("listener", "pool")])
                == 2.0
        },
    );
    let work = tempfile::tempdir().unwrap();
    for i in 0..4 {
        let got = work.path().join(format!("{i}.bin"));
        let u = url(edge.listeners[0], "big.bin");
        ok(
            &curl(&lab, &["-o", got.to_str().unwrap(), &u]),
            "pooled download",
            &edge,
            &agent,
        );
        same(&got, peers::big_bin(), "pooled download");
    }
    assert_eq!(lab.inbound_drops(), 0);
}

/// A token changed in the edge's file (revoked, a new one issued) ends the agent's link
/// on reload, and its redials with the old one are refused.
#[test]
fn changing_a_token_and_reloading_revokes_the_agent() {
    let lab = AgentLab::new();
    let server = inside_server(&lab, ServerKind::Vsftpd, false);
    let edge = edge(&lab, &[("site", server.addr, "")]);
    let agent = edge.agent(&lab);
    edge.wait_linked();
    let yaml = std::fs::read_to_string(&edge.proxy.config).unwrap();
    let revoked = yaml.replace(
        &format!("tokens: {{site-a: {TOKEN}}}"),
        "tokens: {site-a: a-new-token-the-old-agent-does-not-have}",
    );
    assert_ne!(yaml, revoked);
    std::fs::write(&edge.proxy.config, revoked).unwrap();
    edge.proxy.reload();
    wait_for_within(
        Duration::from_secs(10),
        "the link ended and the redial refused",
        || {
            edge.listed() == 0
                && edge
                    .proxy
                    .metric("fxprelay_agent_refused_total", &[("reason", "credential")])
                    >= 1.0
        },
    );
    assert!(
        greeting(&lab, edge.listeners[0]).starts_with("421 "),
        "{}",
        agent.log()
    );
}

/// The JSON field `key` of a flat JSON object, as text.
fn field(v: &serde_json::Value, key: &str) -> String {
    match &v[key] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Orders a copy over the API; the job once it has ended.
fn api_copy(edge: &Edge, src: &str, dst: &str, options: &str) -> serde_json::Value {
    let body = format!(r#"{{"source": "{src}", "destination": "{dst}", "options": {options}}}"#);
    let (status, resp) =
        common::proxy::http(edge.proxy.admin, "POST", "/api/v1/transfers", None, &body);
    assert_eq!(status, 202, "{resp}");
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    let path = format!("/api/v1/transfers/{}", field(&v, "id"));
    let mut last = serde_json::Value::Null;
    wait_for_within(Duration::from_secs(60), "the transfer to end", || {
        let (_, body) = common::proxy::http(edge.proxy.admin, "GET", &path, None, "");
        last = serde_json::from_str(&body).unwrap();
        matches!(field(&last, "state").as_str(), "done" | "failed")
    });
    // The figures the README quotes (`cargo test --test agent_netns -- --nocapture`).
    eprintln!(
        "job {} -> {}: {} {} bytes in {} s",
        field(&last, "source"),
        field(&last, "destination"),
        field(&last, "method"),
        field(&last, "bytes_done"),
        field(&last, "seconds")
    );
    last
}

/// FXP between a server behind the agent (vsftpd inside) and one the edge reaches
/// straight (pyftpdlib in the edge's own namespace, on the address the agent dials):
/// over the API both ways, the server inside always the active one (it connects out,
/// the inside firewall lets nothing in), byte for byte; the relay through the agent when
/// asked for a direction that cannot work; `SITE FXP` from a session on the agent's
/// listener; and jobs naming an agent that is not connected, or not known, refused
/// with its name.
#[test]
fn fxp_jobs_and_site_fxp_reach_a_server_behind_the_agent() {
    let lab = AgentLab::new();
    let inside = inside_server_with(
        &lab,
        ServerKind::Vsftpd,
        false,
        Allows {
            fxp: true,
            ..Allows::default()
        },
    );
    let mut opts = ServerOptions::new(lab.edge_agents_ip);
    opts.foreign_data = true;
    let direct = FtpServer::start(ServerKind::Pyftpdlib, opts);
    let top = format!(
        "fxp:\n  allow: [\"{}/32\", \"{}/32\"]\n",
        lab.inside_ip, lab.edge_agents_ip
    );
    let more = ", site-b: 5a1e9c0d7b3f4e2a8c6d0f1b3a5e7c9d";
    let edge = edge_with(&lab, &[("inside", inside.addr, "")], more, &top);
    let agent = edge.agent(&lab);
    edge.wait_linked();
    let login = format!("{}:{}", peers::USER, peers::PASS);
    let inside_url = |path: &str| format!("ftp://{login}@{}/{path}?via=site-a", inside.addr);
    let direct_url = |path: &str| format!("ftp://{login}@{}/{path}", direct.addr);
    let done = |job: &serde_json::Value, method: &str, what: &str| {
        assert_eq!(
            (field(job, "state").as_str(), field(job, "method").as_str()),
            ("done", method),
            "{what}: {job}\nedge log:\n{}\nagent log:\n{}",
            edge.proxy.log(),
            agent.log()
        );
    };

    // Whether the edge's log since `from` shows `method` tried and failed: the server
    // inside was never tried as the passive one (its own method may be tried again
    // after a lost transfer, never the other direction).
    let tried = |from: usize, method: &str| {
        edge.proxy.log()[from..]
            .lines()
            .any(|l| l.contains("fxp method failed") && l.contains(&format!("method={method} ")))
    };
    // Inside to the edge's side: reverse FXP (PASV on the destination, PORT on the
    // source inside, which connects out).
    let from = edge.proxy.log().len();
    let job = api_copy(
        &edge,
        &inside_url("big.bin"),
        &direct_url("from-inside.bin"),
        "{}",
    );
    done(&job, "reverse_fxp", "inside to outside");
    assert!(!tried(from, "fxp"), "{}", edge.proxy.log());
    assert!(
        field(&job, "source").ends_with("/big.bin?via=site-a"),
        "{job}"
    );
    let secret = format!(":{}@", peers::PASS);
    assert!(!job.to_string().contains(&secret), "{job}");
    same(
        &direct.file("from-inside.bin"),
        peers::big_bin(),
        "API copy out",
    );
    // The edge's side to inside: standard FXP (the destination inside is the active
    // one).
    let from = edge.proxy.log().len();
    let job = api_copy(
        &edge,
        &direct_url("big.bin"),
        &inside_url("to-inside.bin"),
        "{}",
    );
    done(&job, "fxp", "outside to inside");
    assert!(!tried(from, "reverse_fxp"), "{}", edge.proxy.log());
    same(
        &inside.file("to-inside.bin"),
        peers::big_bin(),
        "API copy in",
    );
    // Reverse FXP asked for a destination inside cannot work: the relay carries the
    // bytes, its data connection to the server inside through the agent.
    let from = edge.proxy.log().len();
    let job = api_copy(
        &edge,
        &direct_url("big.bin"),
        &inside_url("relayed.bin"),
        r#"{"reverse": true}"#,
    );
    done(&job, "relay", "relay into the inside");
    assert!(!tried(from, "reverse_fxp"), "{}", edge.proxy.log());
    assert_eq!(
        job["relayed_bytes"].as_u64(),
        Some(peers::big_bin().len() as u64)
    );
    same(
        &inside.file("relayed.bin"),
        peers::big_bin(),
        "relayed copy",
    );
    // Both behind the one agent: they share the inside network, either may listen.
    let job = api_copy(
        &edge,
        &inside_url("big.bin"),
        &inside_url("same-agent.bin"),
        "{}",
    );
    done(&job, "fxp", "inside to inside");
    same(
        &inside.file("same-agent.bin"),
        peers::big_bin(),
        "copy inside",
    );
    // A tree: the source inside is listed (MLSD) over a data connection through the
    // agent, then each file copied.
    let (a, b) = (common::payload(70_000, 11), common::payload(5_000, 12));
    inside.put("tree", None);
    inside.put("tree/a.bin", Some(&a));
    inside.put("tree/sub", None);
    inside.put("tree/sub/b.bin", Some(&b));
    let job = api_copy(
        &edge,
        &inside_url("tree"),
        &direct_url("tree-copy"),
        r#"{"recursive": true}"#,
    );
    done(&job, "reverse_fxp", "a tree from inside");
    same(&direct.file("tree-copy/a.bin"), &a, "tree file");
    same(
        &direct.file("tree-copy/sub/b.bin"),
        &b,
        "tree file in a subdirectory",
    );
    // An agent of the configuration that is not connected: the job fails naming it.
    let job = api_copy(
        &edge,
        &format!("ftp://{login}@{}/big.bin?via=site-b", inside.addr),
        &direct_url("never.bin"),
        r#"{"retries": 0}"#,
    );
    assert_eq!(field(&job, "state"), "failed", "{job}");
    assert!(
        field(&job, "error").contains("agent site-b is not connected"),
        "{job}"
    );
    // One the configuration does not know: refused at once, naming it.
    let body = format!(
        r#"{{"source": "{}", "destination": "{}"}}"#,
        inside_url("big.bin").replace("site-a", "site-z"),
        direct_url("x.bin")
    );
    let (status, resp) =
        common::proxy::http(edge.proxy.admin, "POST", "/api/v1/transfers", None, &body);
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp.contains("site-z") && resp.contains("agents.tokens"),
        "{resp}"
    );

    // SITE FXP from a session on the agent's listener: A is reached through the agent.
    let absent = format!("ftp://{login}@{}/?via=site-b", inside.addr);
    let unknown = format!("ftp://{login}@{}/?via=site-z", inside.addr);
    let script = format!(
        r#"
import ftplib
f = ftplib.FTP()
f.connect('{ip}', {port}, timeout=60)
f.login('{user}', '{pw}')
print(f.sendcmd('SITE FXP TO {dst}'))
print(f.sendcmd('SITE FXP PUT big.bin site-put.bin'))
print(f.voidresp())
print(f.sendcmd('SITE FXP GET big.bin site-get.bin'))
print(f.voidresp())
try:
    f.sendcmd('SITE FXP TO {absent}')
except ftplib.error_temp as e:
    print(e)
try:
    f.sendcmd('SITE FXP TO {unknown}')
except ftplib.error_perm as e:
    print(e)
f.quit()
"#,
        ip = edge.listeners[0].ip(),
        port = edge.listeners[0].port(),
        user = peers::USER,
        pw = peers::PASS,
        dst = direct_url(""),
    );
    let r = clients::run(
        lab.in_client(&["/usr/bin/python3", "-c", &script]),
        Duration::from_secs(90),
    );
    ok(&r, "SITE FXP", &edge, &agent);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("200 FXP destination set"),
        "{}",
        r.stdout
    );
    assert!(
        lines[2].starts_with("226 ") && lines[4].starts_with("226 "),
        "{}",
        r.stdout
    );
    // A destination whose agent is not connected: answered at once, naming it.
    assert!(
        lines[5].starts_with("451 ") && lines[5].contains("agent site-b is not connected"),
        "{}",
        r.stdout
    );
    // One no agent may ever link as: a permanent refusal, naming it and the setting.
    assert!(
        lines[6].starts_with("550 ")
            && lines[6].contains("no agent is named site-z")
            && lines[6].contains("agents.tokens"),
        "{}",
        r.stdout
    );
    same(
        &direct.file("site-put.bin"),
        peers::big_bin(),
        "SITE FXP PUT",
    );
    same(
        &inside.file("site-get.bin"),
        peers::big_bin(),
        "SITE FXP GET",
    );

    assert_eq!(
        lab.inbound_drops(),
        0,
        "something tried to connect into the inside network"
    );
}

/// A TLS-only vsftpd behind the agent, requiring data connections to resume the control
/// connection's TLS session, copied to a plain server on the edge's side: the servers
/// cannot protect the data between themselves, so the engine relays it, TLS end to end
/// from the edge through the agent on the inside leg (the session resumed, or vsftpd
/// refuses), byte for byte.
#[test]
fn a_tls_server_behind_the_agent_is_relayed_with_its_session_resumed() {
    let lab = AgentLab::new();
    let inside = inside_server(&lab, ServerKind::Vsftpd, true);
    let direct = FtpServer::start(
        ServerKind::Pyftpdlib,
        ServerOptions::new(lab.edge_agents_ip),
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::test_ca().write_cert(dir.path());
    let top = format!(
        "fxp:\n  allow: [\"{}/32\", \"{}/32\"]\n  ca_bundles: {{test: \"{}\"}}\n",
        lab.inside_ip,
        lab.edge_agents_ip,
        ca.display()
    );
    let edge = edge_with(&lab, &[("inside", inside.addr, "")], "", &top);
    let agent = edge.agent(&lab);
    edge.wait_linked();
    let login = format!("{}:{}", peers::USER, peers::PASS);
    let job = api_copy(
        &edge,
        &format!("ftpes://{login}@{}/big.bin?via=site-a", inside.addr),
        &format!("ftp://{login}@{}/tls-relayed.bin", direct.addr),
        r#"{"ca": "test"}"#,
    );
    assert_eq!(
        (
            field(&job, "state").as_str(),
            field(&job, "method").as_str()
        ),
        ("done", "relay"),
        "{job}\nedge log:\n{}\nagent log:\n{}",
        edge.proxy.log(),
        agent.log()
    );
    same(
        &direct.file("tls-relayed.bin"),
        peers::big_bin(),
        "TLS source relayed",
    );
    assert_eq!(lab.inbound_drops(), 0);
}

/// A stand-in FTP server inside that takes only active mode and, on `RETR`, first has a
/// second host inside (`thief`) connect to the `PORT` address and write, then connects
/// from its own address and sends the file: a port thief racing the server, made
/// deterministic. It logs what the thief's connection read back.
const THIEF_SERVER: &str = r#"
import socket, sys, threading
ip, port, thief_ip, out, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
payload = bytes((i * 7 + 3) % 251 for i in range(size))
log = open(out, "a", buffering=1)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((ip, port))
srv.listen(8)

def session(c):
    f = c.makefile("rb")
    say = lambda t: c.sendall((t + "\r\n").encode())
    say("220 active-only stand-in")
    to = None
    for line in f:
        cmd = line.decode("latin-1").strip()
        verb = cmd.split(" ")[0].upper()
        log.write("> %s\n" % cmd)
        if verb == "USER": say("331 password")
        elif verb == "PASS": say("230 in")
        elif verb == "PWD": say('257 "/"')
        elif verb in ("PASV", "EPSV"): say("502 active mode only")
        elif verb == "PORT":
            n = cmd[5:].split(",")
            to = (".".join(n[:4]), int(n[4]) * 256 + int(n[5]))
            say("200 PORT ok")
        elif verb == "SIZE": say("213 %d" % len(payload))
        elif verb == "RETR":
            t = socket.socket()
            t.bind((thief_ip, 0))
            t.settimeout(10)
            t.connect(to)
            try:
                t.sendall(b"STOLEN")
                got = t.recv(64)
            except OSError as e:
                got = b""
            log.write("thief read %r\n" % got)
            t.close()
            say("150 here it comes")
            d = socket.socket()
            d.bind((ip, 0))
            d.settimeout(10)
            d.connect(to)
            d.sendall(payload)
            d.close()
            say("226 done")
        elif verb == "QUIT":
            say("221 bye")
            break
        else: say("200 ok")
    c.close()

while True:
    c, _ = srv.accept()
    threading.Thread(target=session, args=(c,), daemon=True).start()
"#;

/// A child process killed (and reaped) when dropped, by its pid.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A second host inside connects to the agent's active-mode port before the server: the
/// agent closes it unread and reports it (counted on the edge, per agent and for the
/// session), and the server's own connection still carries the file.
#[test]
fn the_agent_refuses_a_connection_to_its_port_from_anyone_but_the_server() {
    let lab = AgentLab::new();
    let thief = std::net::Ipv4Addr::from(u32::from(lab.inside_ip) + 75);
    lab.add_inside_address(thief);
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("server.log");
    let server = SocketAddr::from((lab.inside_ip, 2121));
    let size = 200_000;
    let script = work.path().join("server.py");
    std::fs::write(&script, THIEF_SERVER).unwrap();
    let args = [
        "/usr/bin/python3".to_string(),
        script.display().to_string(),
        lab.inside_ip.to_string(),
        server.port().to_string(),
        thief.to_string(),
        log.display().to_string(),
        size.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _server = Killed(
        lab.in_inside(&args)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_within(Duration::from_secs(10), "the stand-in listening", || {
        let ss = clients::run(lab.in_inside(&["ss", "-Hltn"]), Duration::from_secs(5));
        ss.stdout.contains(&server.to_string())
    });
    let edge = edge(&lab, &[("thief", server, "    upstream_data: active\n")]);
    let agent = edge.agent(&lab);
    edge.wait_linked();
    let got = work.path().join("got.bin");
    let u = url(edge.listeners[0], "file.bin");
    ok(
        &curl(&lab, &["-o", got.to_str().unwrap(), &u]),
        "curl download past a thief",
        &edge,
        &agent,
    );
    let want: Vec<u8> = (0..size).map(|i| ((i * 7 + 3) % 251) as u8).collect();
    same(&got, &want, "the server's file, not the thief's bytes");
    let server_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        server_log.contains("thief read b''"),
        "the thief's connection was closed unread:\n{server_log}"
    );
    let agent_label = [("agent", "site-a")];
    assert_eq!(
        edge.proxy
            .metric("fxprelay_agent_port_theft_total", &agent_label),
        1.0
    );
    assert_eq!(
        edge.proxy.metric(
            "fxprelay_rejected_total",
            &[("listener", "thief"), ("reason", "port_theft")]
        ),
        1.0
    );
    assert!(
        agent
            .log()
            .contains("refused a connection to an active-mode port"),
        "{}",
        agent.log()
    );
    assert_eq!(lab.inbound_drops(), 0);
    wait_for_within(Duration::from_secs(5), "the agent's port closed", || {
        edge.proxy.metric("fxprelay_agent_listens", &agent_label) == 0.0
    });
}
