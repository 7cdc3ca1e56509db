//! Scale-out as README's HAProxy section describes it: two fxprelay instances behind one
//! real HAProxy, both announcing HAProxy's address, each with a data port range of its
//! own that HAProxy forwards to it with a PROXY v2 header, the control port balanced over
//! both. Clients with their default settings (curl with `EPSV`, curl `--disable-epsv`,
//! lftp, Python ftplib) connect their data connections to HAProxy's address, which is
//! exactly what makes this layout work. Both instances run from one config file whose
//! per-instance values come from `${VAR}`s. README's and `docker/kubernetes.yaml`'s
//! versions of the layout are checked too: HAProxy accepts their files, and each
//! instance's range is the one the balancer forwards to it.

mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use common::clients::{self, FtplibOp, Mode};
use common::control::{Control, connect_from};
use common::haproxy::Haproxy;
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::Proxy;
use common::{free_port, payload, random_u64, unique_loopback_ip, wait_for};

/// Data ports per instance: enough for the clients here, small for HAProxy to bind.
const RANGE_LEN: u16 = 20;

/// The one config file every instance runs; what differs per instance is in the
/// environment, as README's HAProxy section shows.
const INSTANCE_YAML: &str = r#"admin:
  bind: "${FXPRELAY_ADMIN}"
data:
  ports: "${FXPRELAY_DATA_PORTS}"
listeners:
  - name: farm
    bind: "${FXPRELAY_BIND}"
    mode: reverse
    upstream: "${FTP_SERVER}"
    data: relay
    public_address: "${FXPRELAY_PUBLIC_ADDRESS}"
    proxy_protocol: {trusted: ["${FXPRELAY_BALANCER}/32"]}
"#;

/// One instance: its control address, its data range, and the running proxy.
struct Instance {
    proxy: Proxy,
    ports: RangeInclusive<u16>,
}

/// `len` consecutive ports, free on every one of `ips` right now, away from the default
/// data range and the usual ephemeral ports' start.
fn free_range(ips: &[IpAddr], len: u16, taken: &[RangeInclusive<u16>]) -> RangeInclusive<u16> {
    loop {
        let start = 20000 + (random_u64() % 9000) as u16;
        let range = start..=start + len - 1;
        let overlaps = taken
            .iter()
            .any(|t| t.start() <= range.end() && range.start() <= t.end());
        let free = || {
            range.clone().all(|p| {
                ips.iter()
                    .all(|ip| TcpListener::bind(SocketAddr::new(*ip, p)).is_ok())
            })
        };
        if !overlaps && free() {
            return range;
        }
    }
}

/// The farm: one vsftpd, two instances, HAProxy in front.
struct Farm {
    server: FtpServer,
    a: Instance,
    b: Instance,
    /// Where clients connect: HAProxy's control frontend.
    public: SocketAddr,
    haproxy: Haproxy,
}

impl Farm {
    fn start() -> Farm {
        Farm::start_with("")
    }

    /// With more listener keys (YAML lines indented by four spaces) on every instance.
    fn start_with(extra: &str) -> Farm {
        Farm::start_at(unique_loopback_ip(), extra)
    }

    /// With HAProxy on `h`.
    fn start_at(h: Ipv4Addr, extra: &str) -> Farm {
        let yaml = format!("{INSTANCE_YAML}{extra}");
        let server = FtpServer::start(ServerKind::Vsftpd, ServerOptions::new(unique_loopback_ip()));
        let public = SocketAddr::from((h, free_port(h.into())));
        let ips = [unique_loopback_ip(), unique_loopback_ip()];
        let range_a = free_range(&[h.into(), ips[0].into()], RANGE_LEN, &[]);
        let range_b = free_range(
            &[h.into(), ips[1].into()],
            RANGE_LEN,
            std::slice::from_ref(&range_a),
        );
        let start = |ip: Ipv4Addr, ports: RangeInclusive<u16>| {
            let bind = SocketAddr::from((ip, free_port(ip.into())));
            let admin = SocketAddr::from((ip, free_port(ip.into())));
            let env = [
                ("FXPRELAY_ADMIN", admin.to_string()),
                ("FXPRELAY_BIND", bind.to_string()),
                (
                    "FXPRELAY_DATA_PORTS",
                    format!("{}-{}", ports.start(), ports.end()),
                ),
                ("FXPRELAY_PUBLIC_ADDRESS", h.to_string()),
                ("FXPRELAY_BALANCER", h.to_string()),
                ("FTP_SERVER", server.addr.to_string()),
            ];
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Instance {
                proxy: Proxy::launch(&yaml, bind, admin, None, &env),
                ports,
            }
        };
        let a = start(ips[0], range_a);
        let b = start(ips[1], range_b);
        let haproxy = Haproxy::start(&haproxy_cfg(public, &[&a, &b]), public);
        Farm {
            server,
            a,
            b,
            public,
            haproxy,
        }
    }

    fn instances(&self) -> [&Instance; 2] {
        [&self.a, &self.b]
    }

    /// The instance owning a data port.
    fn owner(&self, port: u16) -> &Instance {
        self.instances()
            .into_iter()
            .find(|i| i.ports.contains(&port))
            .unwrap_or_else(|| panic!("port {port} is in no instance's range"))
    }

    /// Every log, for failure messages.
    fn logs(&self) -> String {
        format!(
            "--- instance A:\n{}\n--- instance B:\n{}\n--- haproxy:\n{}\n{}",
            self.a.proxy.log(),
            self.b.proxy.log(),
            self.haproxy.log(),
            self.server.log()
        )
    }
}

/// The haproxy.cfg of README's HAProxy section: the control port balanced over every
/// instance, each instance's data range forwarded to it alone, PROXY v2 on all of them,
/// connecting from HAProxy's own address (the one the instances trust).
fn haproxy_cfg(public: SocketAddr, instances: &[&Instance]) -> String {
    let h = public.ip();
    let mut cfg = format!(
        "frontend ftp\n  bind {public}\n  default_backend ftp_control\n\
         backend ftp_control\n  balance roundrobin\n"
    );
    for (i, inst) in instances.iter().enumerate() {
        cfg.push_str(&format!(
            "  server fx{i} {} send-proxy-v2 source {h}\n",
            inst.proxy.addr
        ));
    }
    for (i, inst) in instances.iter().enumerate() {
        // No port on the server line: HAProxy connects to the port the client reached.
        cfg.push_str(&format!(
            "frontend ftp_data_{i}\n  bind {h}:{}-{}\n  default_backend ftp_data_{i}\n\
             backend ftp_data_{i}\n  server fx{i} {} send-proxy-v2 source {h}\n",
            inst.ports.start(),
            inst.ports.end(),
            inst.proxy.addr.ip()
        ));
    }
    cfg
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn default_clients_through_two_instances_behind_haproxy() {
    let farm = Farm::start();
    let s = &farm.server;
    let dir = tempfile::tempdir().unwrap();
    let direct =
        |mode: &Mode| clients::curl_list(&clients::ftp_url(s.user, s.pass, s.addr, ""), mode);

    // curl with its defaults (EPSV: `229 (|||port|)`, connecting to HAProxy on that
    // port) and with --disable-epsv (PASV, the 227 address ignored: HAProxy again).
    for (i, mode) in [Mode::Stock, Mode::StockPasv, Mode::Stock, Mode::StockPasv]
        .iter()
        .enumerate()
    {
        let base = clients::ftp_url(s.user, s.pass, farm.public, "");
        let list = clients::curl_list(&base, mode);
        assert!(list.ok(), "{mode:?}: {list}\n{}", farm.logs());
        let want = direct(mode);
        assert!(want.ok(), "{want}");
        assert_eq!(
            list.stdout_bytes, want.stdout_bytes,
            "{mode:?}: NLST differs"
        );
        assert!(list.stdout.contains(peers::BIG_NAME), "{list}");

        let got = dir.path().join(format!("curl-{i}.bin"));
        let url = clients::ftp_url(s.user, s.pass, farm.public, peers::BIG_NAME);
        let r = clients::curl_download(&url, &got, mode);
        assert!(r.ok(), "{mode:?}: {r}\n{}", farm.logs());
        assert!(read(&got) == peers::big_bin(), "{mode:?}: download differs");

        let up = dir.path().join(format!("curl-up-{i}.bin"));
        std::fs::write(&up, payload(3 << 20, random_u64())).unwrap();
        let name = format!("curl-up-{i}.bin");
        let url = clients::ftp_url(s.user, s.pass, farm.public, &name);
        let r = clients::curl_upload(&url, &up, mode);
        assert!(r.ok(), "{mode:?}: {r}\n{}", farm.logs());
        assert!(
            read(&s.file(&name)) == read(&up),
            "{mode:?}: upload differs"
        );
    }

    // lftp and ftplib with their defaults, twice each so that round robin gives each
    // client a session on both instances.
    for i in 0..2 {
        let got = dir.path().join(format!("lftp-{i}.bin"));
        let up = dir.path().join(format!("lftp-up-{i}.bin"));
        std::fs::write(&up, payload(3 << 20, random_u64())).unwrap();
        let name = format!("lftp-up-{i}.bin");
        let script = format!(
            "ls; get {} -o {}; put {} -o {name}",
            peers::BIG_NAME,
            got.display(),
            up.display()
        );
        let r = clients::lftp_stock(farm.public, s.user, s.pass, &script);
        assert!(r.ok(), "lftp: {r}\n{}", farm.logs());
        assert!(r.stdout.contains(peers::BIG_NAME), "{r}");
        assert!(read(&got) == peers::big_bin(), "lftp download differs");
        assert!(read(&s.file(&name)) == read(&up), "lftp upload differs");

        let got = dir.path().join(format!("ftplib-{i}.bin"));
        let up = dir.path().join(format!("ftplib-up-{i}.bin"));
        std::fs::write(&up, payload(3 << 20, random_u64())).unwrap();
        let name = format!("ftplib-up-{i}.bin");
        let ops = [
            FtplibOp::Nlst,
            FtplibOp::Get(peers::BIG_NAME, &got),
            FtplibOp::Put(&up, &name),
        ];
        let r = clients::ftplib_stock_ops(farm.public, s.user, s.pass, &ops);
        assert!(r.ok(), "ftplib: {r}\n{}", farm.logs());
        assert!(r.stdout.lines().any(|l| l == peers::BIG_NAME), "{r}");
        assert!(read(&got) == peers::big_bin(), "ftplib download differs");
        assert!(read(&s.file(&name)) == read(&up), "ftplib upload differs");
    }

    // Both instances carried sessions and relayed data, always for the real client
    // (127.0.0.1, named by HAProxy's headers): no data connection was refused.
    for (name, inst) in [("A", &farm.a), ("B", &farm.b)] {
        let p = &inst.proxy;
        assert!(
            p.metric("fxprelay_sessions_total", &[]) >= 3.0,
            "{name}: {}",
            farm.logs()
        );
        assert!(
            p.metric("fxprelay_data_connections_total", &[("side", "client")]) >= 3.0,
            "{name}: {}",
            farm.logs()
        );
        for reason in ["port_theft", "proxy_header"] {
            assert_eq!(
                p.metric("fxprelay_rejected_total", &[("reason", reason)]),
                0.0,
                "{name}: {reason}\n{}",
                farm.logs()
            );
        }
        let log = p.log();
        assert!(log.contains("client=127.0.0.1:"), "{name}: {log}");
    }
}

#[test]
fn ftps_with_protected_data_through_the_balancer() {
    // The clients verify the certificate against the address they connect to: HAProxy's.
    // So the balancer is chosen first and every instance shows a certificate for it.
    let dir = tempfile::tempdir().unwrap();
    let h = unique_loopback_ip();
    let files = common::tls::identity_for(h.into()).write(dir.path(), "farm");
    let ca = common::tls::test_ca().write_cert(dir.path());
    let tls = format!(
        "    tls:\n      client: {{mode: required, cert: \"{}\", key: \"{}\"}}\n      upstream: {{mode: off}}\n",
        files.cert.display(),
        files.key.display()
    );
    let farm = Farm::start_at(h, &tls);
    let s = &farm.server;
    // PROT P: each data connection's TLS handshake follows HAProxy's header at once, and
    // must reach the instance's TLS layer whole.
    for (i, mode) in [Mode::Stock, Mode::StockPasv].iter().enumerate() {
        let got = dir.path().join(format!("tls-{i}.bin"));
        let url = clients::ftp_url(s.user, s.pass, farm.public, peers::BIG_NAME);
        let r = clients::curl_tls(&url, mode, &ca, [OsStr::new("-o"), got.as_os_str()]);
        assert!(r.ok(), "{mode:?}: {r}\n{}", farm.logs());
        assert!(read(&got) == peers::big_bin(), "{mode:?}: download differs");

        let up = dir.path().join(format!("tls-up-{i}.bin"));
        std::fs::write(&up, payload(3 << 20, random_u64())).unwrap();
        let name = format!("tls-up-{i}.bin");
        let url = clients::ftp_url(s.user, s.pass, farm.public, &name);
        let r = clients::curl_tls(&url, mode, &ca, clients::curl_tls_upload_args(&up));
        assert!(r.ok(), "{mode:?}: {r}\n{}", farm.logs());
        assert!(
            read(&s.file(&name)) == read(&up),
            "{mode:?}: upload differs"
        );
    }
    for inst in farm.instances() {
        assert!(
            inst.proxy.metric("fxprelay_sessions_total", &[]) >= 1.0,
            "{}",
            farm.logs()
        );
    }
}

/// A v1 header naming `client`, as a balancer would send it.
fn v1_header(client: &str, to: SocketAddr) -> String {
    format!("PROXY TCP4 {client} {} 40000 {}\r\n", to.ip(), to.port())
}

/// Connects from `from` to `to`, sends `bytes`, and waits until the proxy closes it.
fn refused(from: Ipv4Addr, to: SocketAddr, bytes: &[u8]) {
    let mut s = connect_from(from, to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The proxy may close before this arrives (a stranger is refused at accept).
    let _ = s.write_all(bytes);
    let mut rest = Vec::new();
    // A close or a reset: either way the proxy let go, and sent nothing.
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a refused data connection got {rest:?}");
}

#[test]
fn data_ports_check_the_client_named_by_the_balancer() {
    let farm = Farm::start();
    let balancer = match farm.public.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => unreachable!(),
    };
    // The client reaches HAProxy from 127.0.0.1; HAProxy tells the instance so.
    let mut c = Control::login(farm.public);
    let announced = c.pasv().unwrap();
    assert_eq!(
        announced.ip(),
        farm.public.ip(),
        "every instance announces HAProxy"
    );
    let owner = farm.owner(announced.port());
    let leased = SocketAddr::new(owner.proxy.addr.ip(), announced.port());
    c.send(format!("RETR {}\r\n", peers::BIG_NAME).as_bytes());
    let count = |reason: &str| {
        owner
            .proxy
            .metric("fxprelay_rejected_total", &[("reason", reason)])
    };

    // The balancer's address without a header, and with one naming someone else.
    refused(balancer, leased, b"\x16\x03\x01 not a header");
    wait_for("the missing header to be counted", || {
        count("proxy_header") == 1.0
    });
    refused(balancer, leased, v1_header("127.0.0.2", leased).as_bytes());
    wait_for("the other client to be counted", || {
        count("port_theft") == 1.0
    });
    // An untrusted host's header is not read: it is judged by its own address.
    let stranger = unique_loopback_ip();
    refused(stranger, leased, v1_header("127.0.0.1", leased).as_bytes());
    wait_for("the stranger to be counted", || count("port_theft") == 2.0);

    // The real client, through HAProxy: the file, byte for byte.
    let mut data = TcpStream::connect(announced).unwrap();
    data.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = Vec::new();
    data.read_to_end(&mut got).unwrap();
    assert!(
        got == peers::big_bin(),
        "{} bytes\n{}",
        got.len(),
        farm.logs()
    );
    let r = c.reply();
    let r = if r.starts_with("150") { c.reply() } else { r };
    assert!(r.starts_with("226"), "{r}\n{}", farm.logs());
    let log = owner.proxy.log();
    assert!(
        log.contains("refused a load-balancer data connection without a valid PROXY header"),
        "{log}"
    );
    assert!(
        log.contains("named by the balancer's PROXY header"),
        "{log}"
    );
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The YAML literal block under `key: |` in `text`, without its indentation.
fn literal_block(text: &str, key: &str) -> String {
    let mut lines = text.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    lines
        .next()
        .unwrap_or_else(|| panic!("no `{key}: |` block"));
    let body: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect();
    body.iter()
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect()
}

/// The fenced code block of README.md that starts with `first_line`.
fn readme_block(first_line: &str) -> String {
    let readme = repo_file("README.md");
    let start = readme
        .find(&format!("```\n{first_line}\n"))
        .or_else(|| readme.find(&format!("```yaml\n{first_line}\n")))
        .unwrap_or_else(|| panic!("README has no block starting {first_line:?}"));
    let body = &readme[readme[start..].find('\n').unwrap() + start + 1..];
    body[..body.find("```").unwrap()].to_string()
}

/// `haproxy -c` on `cfg`: HAProxy itself says whether the file is valid.
fn haproxy_accepts(cfg: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .expect("haproxy");
    assert!(
        out.status.success(),
        "haproxy -c refused:\n{cfg}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The data ranges an haproxy.cfg forwards, per server address (`bind :A-B` of each data
/// frontend, and the one server of its backend).
fn forwarded_ranges(cfg: &str) -> Vec<(String, String)> {
    let mut ranges = Vec::new();
    let mut bind = None;
    for line in cfg.lines().map(str::trim) {
        if let Some(b) = line.strip_prefix("bind :").filter(|b| b.contains('-')) {
            bind = Some(b.to_string());
        } else if let Some(server) = line.strip_prefix("server ")
            && line.contains("check port")
            && let Some(range) = bind.take()
        {
            let host = server.split_whitespace().nth(1).unwrap().to_string();
            ranges.push((host, range));
        }
    }
    ranges
}

fn load(yaml: &str, env: &[(&str, &str)]) -> fxprelay::config::Config {
    fxprelay::config::Config::parse_with_env(yaml, |name| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

#[test]
fn the_documented_layouts_are_valid_and_agree() {
    // README: the balancer's file, and the instances' one file with their own ranges.
    let cfg = readme_block("defaults");
    haproxy_accepts(&cfg);
    let yaml = readme_block("# fxprelay.yaml, the same on every instance");
    let forwarded = forwarded_ranges(&cfg);
    assert_eq!(forwarded.len(), 2, "{cfg}");
    for (_, range) in &forwarded {
        let c = load(&yaml, &[("FXPRELAY_DATA_PORTS", range)]);
        assert_eq!(c.data.ports.to_string(), *range);
        assert!(c.listeners[0].proxy_protocol.is_some());
        assert!(c.listeners[0].public_address.is_some());
    }

    // Kubernetes: pod N's range is the one HAProxy forwards to pod N, and the ten
    // possible pods' ranges are disjoint.
    let manifest = repo_file("docker/kubernetes.yaml");
    let cfg = literal_block(&manifest, "haproxy.cfg");
    haproxy_accepts(&cfg);
    let yaml = literal_block(&manifest, "fxprelay.yaml");
    let ranges: Vec<_> = (0..10)
        .map(|i| load(&yaml, &[("POD_INDEX", &i.to_string())]).data.ports)
        .collect();
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            assert!(a.iter().all(|p| !b.contains(p)), "{a} overlaps {b}");
        }
    }
    let forwarded = forwarded_ranges(&cfg);
    assert!(!forwarded.is_empty(), "{cfg}");
    for (host, range) in forwarded {
        let pod: usize = host
            .strip_prefix("fxprelay-")
            .and_then(|h| h.split('.').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{host}: not a StatefulSet pod name"));
        assert_eq!(ranges[pod].to_string(), range, "pod {pod}");
    }
}
