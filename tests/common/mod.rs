//! Shared helpers of the integration tests. Each test binary uses a subset.
#![allow(dead_code)]

pub mod agent;
pub mod browser;
pub mod clients;
pub mod control;
pub mod haproxy;
pub mod netns;
pub mod peers;
pub mod postgres;
pub mod proxy;
pub mod tls;

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A random loopback address `127.a.b.c` (a in 10..=250, so never `127.0.0.x`; c never 0
/// or 255), never the same twice in this process: parallel tests never share an address,
/// and a server's foreign-address checks see distinct peers.
pub fn unique_loopback_ip() -> Ipv4Addr {
    static USED: Mutex<Option<HashSet<Ipv4Addr>>> = Mutex::new(None);
    let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
    let used = used.get_or_insert_with(HashSet::new);
    loop {
        let r = random_u64();
        let a = 10 + (r % 241) as u8;
        let b = (r >> 16) as u8;
        let c = 1 + ((r >> 24) % 254) as u8;
        let ip = Ipv4Addr::new(127, a, b, c);
        if used.insert(ip) {
            return ip;
        }
    }
}

/// A TCP port that is free on `ip` right now (bound to port 0 and released), outside the
/// default data port list (`50000-50999`), which the proxy refuses to share with a listener.
pub fn free_port(ip: IpAddr) -> u16 {
    loop {
        let port = TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("cannot bind {ip}:0: {e}"))
            .port();
        if !(50000..=50999).contains(&port) {
            return port;
        }
    }
}

/// 64 random bits (std's per-process random hash keys, a counter and the clock).
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    std::collections::hash_map::RandomState::new().hash_one((n, t, std::process::id()))
}

/// Deterministic, incompressible test content (xorshift), different per seed.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Polls `cond` until it holds, failing after ten seconds: tests wait on conditions,
/// never on fixed sleeps.
pub fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_for_within(std::time::Duration::from_secs(10), what, cond)
}

/// [`wait_for`] with a bound of its own, for conditions that take real work (a
/// debug-build proxy chewing through a burst on a busy machine).
pub fn wait_for_within(within: std::time::Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Established IPv4 TCP connections (from `/proc/net/tcp`, this network namespace) whose
/// local end is on one of `ips` and whose peer is not: what other hosts (the proxy, a
/// client) hold open to those servers, as (local, peer) pairs. Server-to-server data
/// connections between two of `ips` are left out.
pub fn connections_from_outside(
    ips: &[Ipv4Addr],
) -> Vec<(std::net::SocketAddrV4, std::net::SocketAddrV4)> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    // sl local_address rem_address st ...; addresses are HEXIP:HEXPORT, the IP as the
    // kernel's network-order u32 printed in host order.
    let parse = |s: &str| {
        let (ip, port) = s.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(std::net::SocketAddrV4::new(
            Ipv4Addr::from(ip.to_ne_bytes()),
            port,
        ))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, peer) = (parse(f.get(1)?)?, parse(f.get(2)?)?);
            // 01: TCP_ESTABLISHED.
            (*f.get(3)? == "01" && ips.contains(local.ip()) && !ips.contains(peer.ip()))
                .then_some((local, peer))
        })
        .collect()
}

/// Runs `fxprelay fxp ARGS` (with a config path that does not exist: `fxp` must not read
/// one) to the end: whether it succeeded, its stdout and its stderr.
#[allow(dead_code)] // not every test binary runs the CLI
pub fn fxprelay_fxp<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fxprelay"))
        .args(["-c", "/nonexistent/fxprelay.yaml", "fxp"])
        .args(args)
        .output()
        .expect("run fxprelay");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs an FXP job to its end and folds its events: the state every front end reads.
pub async fn run_job(
    order: fxprelay::fxp::Order,
    opts: fxprelay::fxp::EngineOptions,
) -> fxprelay::fxp::JobState {
    use futures_util::StreamExt;
    let mut events = fxprelay::fxp::runner::run(order, opts);
    let mut state = fxprelay::fxp::JobState::new();
    while let Some(e) = events.next().await {
        state.apply(&e);
    }
    state
}

/// `fxprelay run -c FILE` with `yaml` as FILE (in `dir`), expected to refuse to start:
/// its stderr.
#[allow(dead_code)] // not every test binary starts a proxy that must refuse
pub fn run_refused(dir: &std::path::Path, yaml: &str) -> String {
    let config = dir.join("fxprelay.yaml");
    // Never the default admin port: a proxy running on this machine (README's command)
    // holds it, and its refusal would come before the one the test looks for.
    let yaml = if yaml.contains("admin:") {
        yaml.to_owned()
    } else {
        let local = IpAddr::from([127, 0, 0, 1]);
        format!("admin:\n  bind: \"127.0.0.1:{}\"\n{yaml}", free_port(local))
    };
    std::fs::write(&config, &yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fxprelay"))
        .args(["run", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "fxprelay started with\n{yaml}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
