//! Runs the real `fxprelay` binary with a generated config, as an operator would, and
//! reads its metrics over HTTP. Stopped (SIGTERM, then SIGKILL) when dropped.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One reverse listener of a test proxy.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// `Some`: a reverse listener to this upstream; `None`: a forward listener.
    pub upstream: Option<SocketAddr>,
    /// Forward mode's allow list.
    pub allow: Vec<String>,
    pub passive: &'static str,
    pub active: &'static str,
    pub client_address: Option<String>,
    pub private_ranges: Option<Vec<String>>,
    /// `passthrough` or `relay`.
    pub data: &'static str,
    /// More listener keys, YAML lines indented by four spaces.
    pub extra: String,
    /// Environment variables for the proxy process.
    pub env: Vec<(&'static str, &'static str)>,
    /// `admin.token`, protecting the admin API.
    pub admin_token: Option<&'static str>,
}

impl ListenerSpec {
    pub fn new(upstream: SocketAddr) -> Self {
        ListenerSpec {
            upstream: Some(upstream),
            allow: Vec::new(),
            passive: "auto",
            active: "auto",
            client_address: None,
            private_ranges: None,
            data: "passthrough",
            extra: String::new(),
            env: Vec::new(),
            admin_token: None,
        }
    }

    pub fn passive(mut self, mode: &'static str) -> Self {
        self.passive = mode;
        self
    }

    pub fn active(mut self, mode: &'static str) -> Self {
        self.active = mode;
        self
    }

    /// A forward listener (clients log in as `user@host:port`) allowing `allow`.
    pub fn forward(allow: &[&str]) -> Self {
        let mut spec = ListenerSpec::new(SocketAddr::from(([127, 0, 0, 1], 21)));
        spec.upstream = None;
        spec.allow = allow.iter().map(|a| a.to_string()).collect();
        spec
    }

    /// Relay mode, with extra listener keys (`key: value` lines).
    pub fn relay(mut self, keys: &[&str]) -> Self {
        self.data = "relay";
        for k in keys {
            self.extra.push_str(&format!("    {k}\n"));
        }
        self
    }
}

pub struct Proxy {
    child: Child,
    /// Where clients connect.
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The generated config file (tests rewrite it and send SIGHUP).
    pub config: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts the proxy with one reverse listener on `ip`, waiting until it serves.
    pub fn start(ip: impl Into<IpAddr>, spec: ListenerSpec) -> Proxy {
        Proxy::start_with(ip, spec, "")
    }

    /// Like [`Proxy::start`], with extra top-level YAML (e.g. a `limits:` block).
    pub fn start_with(ip: impl Into<IpAddr>, spec: ListenerSpec, extra_yaml: &str) -> Proxy {
        let ip: IpAddr = ip.into();
        let addr = SocketAddr::new(ip, super::free_port(ip));
        let admin = SocketAddr::new(ip, super::free_port(ip));
        let mut nat = format!(
            "      passive: {}\n      active: {}\n",
            spec.passive, spec.active
        );
        if let Some(c) = &spec.client_address {
            nat.push_str(&format!("      client_address: {c}\n"));
        }
        let mut yaml = format!(
            "admin:\n  bind: \"{admin}\"\n{}{extra_yaml}\nlisteners:\n  - name: test\n    bind: \"{addr}\"\n{}    data: {}\n{}    nat:\n{nat}",
            spec.admin_token
                .map(|t| format!("  token: {t}\n"))
                .unwrap_or_default(),
            match spec.upstream {
                Some(up) => format!("    mode: reverse\n    upstream: \"{up}\"\n"),
                None => format!(
                    "    mode: forward\n    allow: [{}]\n",
                    spec.allow.join(", ")
                ),
            },
            spec.data,
            spec.extra
        );
        if let Some(r) = &spec.private_ranges {
            yaml.push_str(&format!("    private_ranges: [{}]\n", r.join(", ")));
        }
        Proxy::launch(&yaml, addr, admin, None, &spec.env)
    }

    /// Runs the binary with a config written by the caller, inside network namespace
    /// `netns` if given; `addr` and `admin` are what the config binds.
    pub fn launch(
        yaml: &str,
        addr: SocketAddr,
        admin: SocketAddr,
        netns: Option<&str>,
        env: &[(&str, &str)],
    ) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("fxprelay.yaml");
        // The edge defense is on by default, and would ban the loopback address of a
        // test that opens many connections or tries wrong passwords on purpose: tests
        // that are not about it run without it; those that are write `defense:`.
        let yaml = &match yaml.contains("defense:") {
            true => yaml.to_string(),
            false => format!("defense:\n  enabled: false\n{yaml}"),
        };
        std::fs::write(&config, yaml).expect("write config");
        let log = dir.path().join("fxprelay.log");
        let mut cmd = match netns {
            // `ip netns exec` execs the program: the pid stays the proxy's own.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_fxprelay")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_fxprelay")),
        };
        let child = cmd
            .arg("run")
            .arg("-c")
            .arg(&config)
            .env("RUST_LOG", "fxprelay=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn fxprelay");
        let mut proxy = Proxy {
            child,
            addr,
            admin,
            config: config.clone(),
            log,
            _dir: dir,
        };
        proxy.wait_ready(yaml);
        proxy
    }

    fn wait_ready(&mut self, yaml: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "fxprelay exited with {status}\nconfig:\n{yaml}\nlog:\n{}",
                    self.log()
                );
            }
            if let Ok((200, _)) = http_get(self.admin, "/healthz") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "fxprelay did not come up\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the proxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The Prometheus text from `/metrics`.
    pub fn metrics(&self) -> String {
        let (status, body) = http_get(self.admin, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The sum of every series of `name` whose labels include all of `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics(), name, labels)
    }

    /// Asks the proxy to re-read its config file (`SIGHUP`).
    pub fn reload(&self) {
        // SAFETY: a signal to the child this struct owns, by its pid.
        unsafe { libc::kill(self.pid() as i32, libc::SIGHUP) };
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many file descriptors the proxy holds now (sockets included).
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("the proxy's /proc/PID/fd")
            .count()
    }

    /// Waits up to `within` for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait_exit(within)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.terminate(Duration::from_secs(3)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sums the samples of `name` (exact metric name) whose label set contains `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let has_all = labels
                .iter()
                .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            has_all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// One HTTP/1.1 request to the admin listener, enough for `/metrics`, `/healthz` and the
/// FXP API: status and body. `token` goes in a bearer `Authorization` header; a non-empty
/// `body` is sent as JSON.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    let wrote = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // A server may answer (e.g. 413) and close before taking a large body: its answer
    // is still there to read.
    if let Err(e) = wrote
        && !matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        )
    {
        return Err(e);
    }
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// [`http_request`] to a listener that must answer: an I/O error fails the test.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    http_request(addr, method, path, token, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// `GET path` with I/O errors returned, for polling a listener that may not be up yet.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, None, "")
}
