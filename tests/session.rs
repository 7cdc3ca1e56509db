//! Fast in-process tests of the session layer against a scripted upstream: byte-exact
//! relaying, rewriting, hostile input and failure paths. The real-server evidence lives
//! in `tests/nat_real_peers.rs`; these pin down behaviour no real server shows on demand.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fxprelay::config::{Config, DataConfig, DataMode, Limits, ListenerConfig, Mode};
use fxprelay::data::PortPool;
use fxprelay::net::{AllowList, HostName, HostPort};
use fxprelay::rewrite::{NatMode, NatPolicy};
use fxprelay::server::{self, Shutdown};
use fxprelay::session::ListenerCtx;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(5);

/// A scripted upstream: accepts one connection and hands it to the test.
async fn fake_upstream() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn listener_cfg(upstream: SocketAddr, passive: NatMode, active: NatMode) -> ListenerConfig {
    ListenerConfig {
        name: "t".into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        mode: Mode::Reverse,
        upstream: Some(HostPort {
            host: upstream.ip().to_string(),
            port: upstream.port(),
        }),
        pool: None,
        upstream_proxy_protocol: None,
        allow: AllowList::default(),
        data: DataMode::Passthrough,
        public_address: None,
        upstream_data: Default::default(),
        upstream_connect: Default::default(),
        allow_foreign_port: Vec::new(),
        allow_passive_hosts: Vec::new(),
        proxy_protocol: None,
        preserve_client_address: false,
        tls: None,
        nat: NatPolicy {
            passive,
            active,
            ..NatPolicy::default()
        },
        defense: Default::default(),
        routes: Vec::new(),
        via: None,
    }
}

/// Starts a proxy listener in-process; returns its address and the shutdown handle.
async fn start_proxy(cfg: ListenerConfig, limits: Limits) -> (SocketAddr, Shutdown) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let shutdown = Shutdown::default();
    let data = DataConfig::default();
    let ports = PortPool::new(&data.ports);
    let ctx = Arc::new(ListenerCtx::new(cfg, limits, &data, ports));
    tokio::spawn(server::serve(l, ctx, shutdown.clone()));
    (addr, shutdown)
}

struct Peer {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Peer {
    fn new(s: TcpStream) -> Peer {
        let (r, w) = s.into_split();
        Peer {
            r: BufReader::new(r),
            w,
        }
    }
    async fn send(&mut self, b: &[u8]) {
        self.w.write_all(b).await.unwrap();
    }
    async fn line(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        timeout(T, self.r.read_until(b'\n', &mut buf))
            .await
            .expect("line in time")
            .unwrap();
        buf
    }
    /// Waits for EOF, failing if more data or nothing arrives in time.
    async fn eof(&mut self) {
        let mut rest = Vec::new();
        timeout(T, self.r.read_to_end(&mut rest))
            .await
            .expect("close in time")
            .ok();
        assert!(
            rest.is_empty(),
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

/// Client and upstream ends of one proxied session, after the greeting went through.
async fn session(passive: NatMode, active: NatMode, limits: Limits) -> (Peer, Peer, Shutdown) {
    let (up, up_addr) = fake_upstream().await;
    let (proxy, shutdown) = start_proxy(listener_cfg(up_addr, passive, active), limits).await;
    let client = TcpStream::connect(proxy).await.unwrap();
    let (server, _) = timeout(T, up.accept()).await.unwrap().unwrap();
    let (mut client, mut server) = (Peer::new(client), Peer::new(server));
    server.send(b"220 fake server ready\r\n").await;
    assert_eq!(client.line().await, b"220 fake server ready\r\n");
    (client, server, shutdown)
}

#[tokio::test]
async fn relays_bytes_exactly_including_non_utf8() {
    let (mut c, mut s, _sd) = session(NatMode::Auto, NatMode::Auto, Limits::default()).await;
    // Not transfer commands: a command after one waits for its final reply.
    for cmd in [
        &b"DELE caf\xe9 \xff\xfe.txt\r\n"[..],
        b"user bob\n",
        b"MKD  two  spaces\r\n",
    ] {
        c.send(cmd).await;
        assert_eq!(s.line().await, cmd);
    }
    let multi = b"211-Features:\r\n EPRT\r\n EPSV\r\n211-not the end\r\n211 End\r\n";
    s.send(multi).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.extend(c.line().await);
    }
    assert_eq!(got, multi);
}

#[tokio::test]
async fn passive_always_rewrites_227_to_upstream_address() {
    let (mut c, mut s, _sd) = session(NatMode::Always, NatMode::Never, Limits::default()).await;
    c.send(b"PASV\r\n").await;
    assert_eq!(s.line().await, b"PASV\r\n");
    s.send(b"227 Entering Passive Mode (127,0,0,99,117,49).\r\n")
        .await;
    assert_eq!(
        c.line().await,
        b"227 Entering Passive Mode (127,0,0,1,117,49).\r\n"
    );
    // 229 carries no address and passes unchanged.
    c.send(b"EPSV\r\n").await;
    assert_eq!(s.line().await, b"EPSV\r\n");
    s.send(b"229 Entering Extended Passive Mode (|||30001|)\r\n")
        .await;
    assert_eq!(
        c.line().await,
        b"229 Entering Extended Passive Mode (|||30001|)\r\n"
    );
}

#[tokio::test]
async fn passive_never_and_auto_between_loopbacks_leave_227_alone() {
    for mode in [NatMode::Never, NatMode::Auto] {
        let (mut c, mut s, _sd) = session(mode, NatMode::Never, Limits::default()).await;
        c.send(b"PASV\r\n").await;
        assert_eq!(s.line().await, b"PASV\r\n");
        s.send(b"227 Entering Passive Mode (127,0,0,99,117,49).\r\n")
            .await;
        assert_eq!(
            c.line().await,
            b"227 Entering Passive Mode (127,0,0,99,117,49).\r\n"
        );
    }
}

#[tokio::test]
async fn malformed_227_becomes_425() {
    let (mut c, mut s, _sd) = session(NatMode::Always, NatMode::Never, Limits::default()).await;
    c.send(b"PASV\r\n").await;
    assert_eq!(s.line().await, b"PASV\r\n");
    s.send(b"227 Entering Passive Mode (127,0,0,300,117,49).\r\n")
        .await;
    let line = c.line().await;
    assert!(
        line.starts_with(b"425 "),
        "{}",
        String::from_utf8_lossy(&line)
    );
    // The session is still usable.
    c.send(b"NOOP\r\n").await;
    assert_eq!(s.line().await, b"NOOP\r\n");
}

#[tokio::test]
async fn active_always_rewrites_port_to_client_address() {
    let (mut c, mut s, _sd) = session(NatMode::Never, NatMode::Always, Limits::default()).await;
    c.send(b"PORT 10,0,0,5,4,1\r\n").await;
    assert_eq!(s.line().await, b"PORT 127,0,0,1,4,1\r\n");
    c.send(b"EPRT |1|10.0.0.5|5282|\r\n").await;
    assert_eq!(s.line().await, b"EPRT |1|127.0.0.1|5282|\r\n");
    // Malformed: refused locally, never forwarded.
    c.send(b"PORT 10,0,0,500,4,1\r\n").await;
    assert!(c.line().await.starts_with(b"501 "));
    c.send(b"NOOP\r\n").await;
    assert_eq!(s.line().await, b"NOOP\r\n");
}

#[tokio::test]
async fn active_uses_configured_client_address() {
    let (up, up_addr) = fake_upstream().await;
    let mut cfg = listener_cfg(up_addr, NatMode::Never, NatMode::Always);
    cfg.nat.client_address = Some(HostName("localhost".into()));
    let (proxy, _sd) = start_proxy(cfg, Limits::default()).await;
    let mut c = Peer::new(TcpStream::connect(proxy).await.unwrap());
    let mut s = Peer::new(timeout(T, up.accept()).await.unwrap().unwrap().0);
    c.send(b"PORT 10,0,0,5,4,1\r\n").await;
    assert_eq!(s.line().await, b"PORT 127,0,0,1,4,1\r\n");
}

#[tokio::test]
async fn auth_tls_is_refused_locally() {
    let (mut c, mut s, _sd) = session(NatMode::Auto, NatMode::Auto, Limits::default()).await;
    c.send(b"AUTH TLS\r\n").await;
    assert!(c.line().await.starts_with(b"534 "));
    c.send(b"USER x\r\n").await;
    assert_eq!(s.line().await, b"USER x\r\n");
}

#[tokio::test]
async fn unreachable_upstream_gets_421_not_a_hang() {
    // Bind then drop: nothing listens on this port any more.
    let dead = fake_upstream().await.1;
    let (proxy, _sd) = start_proxy(
        listener_cfg(dead, NatMode::Auto, NatMode::Auto),
        Limits::default(),
    )
    .await;
    let mut c = Peer::new(TcpStream::connect(proxy).await.unwrap());
    assert!(c.line().await.starts_with(b"421 "));
    c.eof().await;
}

#[tokio::test]
async fn over_long_line_gets_500_and_close() {
    let limits = Limits {
        max_line_length: 512,
        ..Limits::default()
    };
    let (mut c, _s, _sd) = session(NatMode::Auto, NatMode::Auto, limits).await;
    c.send(&vec![b'A'; 4096]).await;
    let line = c.line().await;
    assert!(
        line.starts_with(b"500 "),
        "{}",
        String::from_utf8_lossy(&line)
    );
    c.eof().await;
}

#[tokio::test]
async fn garbage_gets_500_then_close_and_others_keep_working() {
    let (up, up_addr) = fake_upstream().await;
    let (proxy, _sd) = start_proxy(
        listener_cfg(up_addr, NatMode::Auto, NatMode::Auto),
        Limits::default(),
    )
    .await;
    let mut bad = Peer::new(TcpStream::connect(proxy).await.unwrap());
    let _bad_up = timeout(T, up.accept()).await.unwrap().unwrap();
    bad.send(b"\x00\x01\x02garbage\r\n").await;
    assert!(bad.line().await.starts_with(b"500 "));
    for _ in 0..20 {
        bad.send(b"12345 !!\r\n").await;
    }
    let mut saw_421 = false;
    for _ in 0..20 {
        let l = bad.line().await;
        if l.starts_with(b"421 ") {
            saw_421 = true;
            break;
        }
        assert!(l.starts_with(b"500 "));
    }
    assert!(saw_421);
    bad.eof().await;

    // A second client is unaffected.
    let mut good = Peer::new(TcpStream::connect(proxy).await.unwrap());
    let mut good_up = Peer::new(timeout(T, up.accept()).await.unwrap().unwrap().0);
    good_up.send(b"220 hi\r\n").await;
    assert_eq!(good.line().await, b"220 hi\r\n");
}

#[tokio::test]
async fn upstream_garbage_and_truncation_end_the_session_with_421() {
    let (mut c, mut s, _sd) = session(NatMode::Auto, NatMode::Auto, Limits::default()).await;
    s.send(b"this is not a reply\r\n").await;
    assert!(c.line().await.starts_with(b"421 "));
    c.eof().await;

    let (mut c, mut s, _sd) = session(NatMode::Auto, NatMode::Auto, Limits::default()).await;
    s.send(b"211-Features:\r\n EPSV\r\n").await;
    drop(s);
    assert!(c.line().await.starts_with(b"421 "));
    c.eof().await;
}

#[tokio::test]
async fn either_side_closing_ends_the_session() {
    let (c, mut s, _sd) = session(NatMode::Auto, NatMode::Auto, Limits::default()).await;
    drop(c);
    s.eof().await;
    let (mut c, s, _sd) = session(NatMode::Auto, NatMode::Auto, Limits::default()).await;
    drop(s);
    c.eof().await;
}

#[tokio::test]
async fn session_limit_refuses_with_421() {
    let (up, up_addr) = fake_upstream().await;
    let (proxy, _sd) = start_proxy(
        listener_cfg(up_addr, NatMode::Auto, NatMode::Auto),
        Limits {
            max_sessions: 1,
            ..Limits::default()
        },
    )
    .await;
    let _first = TcpStream::connect(proxy).await.unwrap();
    let _first_up = timeout(T, up.accept()).await.unwrap().unwrap();
    let mut second = Peer::new(TcpStream::connect(proxy).await.unwrap());
    assert!(second.line().await.starts_with(b"421 "));
    second.eof().await;
}

#[tokio::test]
async fn graceful_shutdown_drains_then_closes_with_421() {
    let text = "limits:\n  shutdown_grace: 200ms\nadmin:\n  bind: 127.0.0.1:0\nlisteners:\n  - name: a\n    bind: 127.0.0.1:0\n    upstream: 127.0.0.1:1\n";
    let mut config = Config::parse(text).unwrap();
    let (up, up_addr) = fake_upstream().await;
    config.listeners[0].upstream = Some(HostPort {
        host: "127.0.0.1".into(),
        port: up_addr.port(),
    });
    let loaded = fxprelay::app::Loaded::new(config).unwrap();
    let bound = fxprelay::app::bind(&loaded).await.unwrap();
    let proxy = bound.listeners[0].0.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::mpsc::unbounded_channel();
    let run = tokio::spawn(fxprelay::app::run(bound, None, stop_rx, None));
    let mut c = Peer::new(TcpStream::connect(proxy).await.unwrap());
    let mut s = Peer::new(timeout(T, up.accept()).await.unwrap().unwrap().0);
    s.send(b"220 hi\r\n").await;
    assert_eq!(c.line().await, b"220 hi\r\n");

    stop_tx.send(()).unwrap();
    // Still served during the grace period ...
    c.send(b"NOOP\r\n").await;
    assert_eq!(s.line().await, b"NOOP\r\n");
    // ... and told to go when it ends.
    assert!(c.line().await.starts_with(b"421 "));
    timeout(T, run).await.unwrap().unwrap().unwrap();
    // New clients are refused at the TCP level.
    assert!(TcpStream::connect(proxy).await.is_err());
}

#[tokio::test]
async fn per_address_limit_refuses_with_421() {
    let (up, up_addr) = fake_upstream().await;
    let limits = Limits {
        max_sessions_per_ip: 1,
        ..Limits::default()
    };
    let (proxy, _sd) =
        start_proxy(listener_cfg(up_addr, NatMode::Auto, NatMode::Auto), limits).await;
    let _first = TcpStream::connect(proxy).await.unwrap();
    let _first_up = timeout(T, up.accept()).await.unwrap().unwrap();
    let mut second = Peer::new(TcpStream::connect(proxy).await.unwrap());
    let line = second.line().await;
    assert!(line.starts_with(b"421 ") && String::from_utf8_lossy(&line).contains("your address"));
    second.eof().await;
}

#[tokio::test]
async fn login_timeout_closes_a_client_that_never_logs_in() {
    let limits = Limits {
        login_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (mut c, mut s, _sd) = session(NatMode::Auto, NatMode::Auto, limits).await;
    // Activity does not help: only the server's 230 ends the login phase.
    c.send(b"USER x\r\n").await;
    assert_eq!(s.line().await, b"USER x\r\n");
    s.send(b"331 Password required\r\n").await;
    assert!(c.line().await.starts_with(b"331"));
    let line = c.line().await;
    assert!(
        line.starts_with(b"421 ") && String::from_utf8_lossy(&line).contains("Login timed out")
    );
    c.eof().await;
}

async fn logged_in(limits: Limits) -> (Peer, Peer, Shutdown) {
    let (mut c, mut s, sd) = session(NatMode::Auto, NatMode::Auto, limits).await;
    c.send(b"PASS x\r\n").await;
    assert_eq!(s.line().await, b"PASS x\r\n");
    s.send(b"230 Logged in\r\n").await;
    assert!(c.line().await.starts_with(b"230"));
    (c, s, sd)
}

#[tokio::test]
async fn idle_timeout_closes_a_silent_or_dribbling_client() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (mut c, _s, _sd) = logged_in(limits.clone()).await;
    let line = c.line().await;
    assert!(line.starts_with(b"421 ") && String::from_utf8_lossy(&line).contains("Idle"));
    c.eof().await;

    // Slowloris: bytes keep coming, but never a whole command.
    let (mut c, _s, _sd) = logged_in(limits).await;
    let started = std::time::Instant::now();
    let mut closed = false;
    for _ in 0..30 {
        if c.w.write_all(b"N").await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = c.line().await;
    assert!(
        closed || line.starts_with(b"421 "),
        "{:?}",
        String::from_utf8_lossy(&line)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_running_passthrough_transfer_is_not_idle() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (mut c, mut s, _sd) = logged_in(limits).await;
    c.send(b"RETR big\r\n").await;
    assert_eq!(s.line().await, b"RETR big\r\n");
    s.send(b"150 Opening\r\n").await;
    assert!(c.line().await.starts_with(b"150"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.send(b"226 Done\r\n").await;
    assert_eq!(c.line().await, b"226 Done\r\n");
}

#[tokio::test]
async fn oversized_upstream_reply_ends_the_session_with_421() {
    let limits = Limits {
        max_reply_bytes: 1024,
        ..Limits::default()
    };
    let (mut c, mut s, _sd) = session(NatMode::Auto, NatMode::Auto, limits).await;
    s.send(b"211-Features:\r\n").await;
    for _ in 0..100 {
        s.send(b" a feature line that goes on and on\r\n").await;
    }
    s.send(b"211 End\r\n").await;
    let line = c.line().await;
    assert!(
        line.starts_with(b"421 "),
        "{}",
        String::from_utf8_lossy(&line)
    );
    c.eof().await;
}

#[tokio::test]
async fn upstream_connect_timeout_gets_421_in_time() {
    // A listener that never accepts, with its backlog full: further SYNs go unanswered.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let stuck = socket.listen(1).unwrap();
    let stuck_addr = stuck.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = timeout(Duration::from_millis(200), TcpStream::connect(stuck_addr)).await
        {
            fillers.push(s);
        }
    }
    let limits = Limits {
        connect_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let (proxy, _sd) = start_proxy(
        listener_cfg(stuck_addr, NatMode::Auto, NatMode::Auto),
        limits,
    )
    .await;
    let started = std::time::Instant::now();
    let mut c = Peer::new(TcpStream::connect(proxy).await.unwrap());
    let line = c.line().await;
    assert!(
        line.starts_with(b"421 "),
        "{}",
        String::from_utf8_lossy(&line)
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// A relay-mode session through a hostile scripted server, logged in.
async fn relay_logged_in() -> (Peer, Peer, Shutdown) {
    let (up, up_addr) = fake_upstream().await;
    let mut cfg = listener_cfg(up_addr, NatMode::Auto, NatMode::Auto);
    cfg.data = DataMode::Relay;
    let (proxy, shutdown) = start_proxy(cfg, Limits::default()).await;
    let client = TcpStream::connect(proxy).await.unwrap();
    let (server, _) = timeout(T, up.accept()).await.unwrap().unwrap();
    let (mut c, mut s) = (Peer::new(client), Peer::new(server));
    s.send(b"220 hostile server ready\r\n").await;
    assert_eq!(c.line().await, b"220 hostile server ready\r\n");
    c.send(b"USER u\r\n").await;
    assert_eq!(s.line().await, b"USER u\r\n");
    s.send(b"230 in\r\n").await;
    assert_eq!(c.line().await, b"230 in\r\n");
    (c, s, shutdown)
}

/// The port of a `227` the proxy sent.
fn pasv_port(line: &[u8]) -> SocketAddr {
    fxprelay::proto::addr::parse_pasv_reply(line)
        .unwrap()
        .0
        .into()
}

#[tokio::test]
async fn a_hostile_servers_extra_227_never_answers_the_clients_pasv() {
    let (mut c, mut s, _sd) = relay_logged_in().await;
    c.send(b"SYST\r\n").await;
    assert_eq!(s.line().await, b"SYST\r\n");
    // One write, two replies: the second answers nothing.
    s.send(b"215 UNIX\r\n227 Entering Passive Mode (127,0,0,66,4,1)\r\n")
        .await;
    assert_eq!(c.line().await, b"215 UNIX\r\n");
    c.send(b"PASV\r\n").await;
    let pasv = c.line().await;
    let text = String::from_utf8_lossy(&pasv);
    assert!(
        text.starts_with("227 ") && pasv_port(&pasv).ip().to_string() == "127.0.0.1",
        "the proxy's own address, not the injected one: {text}"
    );
    c.send(b"NOOP\r\n").await;
    assert_eq!(
        s.line().await,
        b"NOOP\r\n",
        "the client's PASV never reached the server"
    );
    s.send(b"200 NOOP ok\r\n").await;
    assert_eq!(c.line().await, b"200 NOOP ok\r\n", "replies stay in step");
}

#[tokio::test]
async fn a_continuation_lines_address_is_never_connected_to() {
    let (mut c, mut s, _sd) = relay_logged_in().await;
    let decoy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let data = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (d, r) = (decoy.local_addr().unwrap(), data.local_addr().unwrap());
    let six = |a: SocketAddr| {
        let SocketAddr::V4(a) = a else { unreachable!() };
        fxprelay::proto::addr::format_pasv_addr(a)
    };
    c.send(b"PASV\r\n").await;
    let to = pasv_port(&c.line().await);
    c.send(b"RETR f\r\n").await;
    assert_eq!(s.line().await, b"PASV\r\n");
    let reply = format!(
        "227-Note ({})\r\n227 Entering Passive Mode ({})\r\n",
        six(d),
        six(r)
    );
    s.send(reply.as_bytes()).await;
    let (mut up_data, _) = timeout(T, data.accept()).await.unwrap().unwrap();
    assert_eq!(s.line().await, b"RETR f\r\n");
    let mut client_data = TcpStream::connect(to).await.unwrap();
    s.send(b"150 Opening\r\n").await;
    assert_eq!(c.line().await, b"150 Opening\r\n");
    up_data.write_all(b"the file").await.unwrap();
    drop(up_data);
    s.send(b"226 Done\r\n").await;
    let mut got = Vec::new();
    timeout(T, client_data.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"the file");
    assert_eq!(c.line().await, b"226 Done\r\n");
    // The decoy was never reached.
    assert!(
        timeout(Duration::from_millis(200), decoy.accept())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_servers_421_reaches_the_client_and_ends_the_session() {
    let (mut c, mut s, _sd) = relay_logged_in().await;
    s.send(b"421 Timeout.\r\n").await;
    assert_eq!(c.line().await, b"421 Timeout.\r\n");
    c.eof().await;
}

#[tokio::test]
async fn sessions_waiting_to_log_in_have_their_own_cap() {
    let (up, up_addr) = fake_upstream().await;
    let limits = Limits {
        max_pre_login_sessions_per_ip: 2,
        ..Limits::default()
    };
    let (proxy, _sd) =
        start_proxy(listener_cfg(up_addr, NatMode::Auto, NatMode::Auto), limits).await;
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let mut c = Peer::new(TcpStream::connect(proxy).await.unwrap());
        let mut s = Peer::new(timeout(T, up.accept()).await.unwrap().unwrap().0);
        s.send(b"220 hi\r\n").await;
        assert_eq!(c.line().await, b"220 hi\r\n");
        sessions.push((c, s));
    }
    let mut third = Peer::new(TcpStream::connect(proxy).await.unwrap());
    let line = third.line().await;
    assert!(
        line.starts_with(b"421 ") && String::from_utf8_lossy(&line).contains("waiting to log in"),
        "{}",
        String::from_utf8_lossy(&line)
    );
    third.eof().await;
    // Once one logs in, its pre-login slot is free again; logged-in sessions do not count.
    let (c, s) = &mut sessions[0];
    c.send(b"USER u\r\n").await;
    assert_eq!(s.line().await, b"USER u\r\n");
    s.send(b"230 in\r\n").await;
    assert_eq!(c.line().await, b"230 in\r\n");
    c.send(b"NOOP\r\n").await;
    assert_eq!(s.line().await, b"NOOP\r\n");
    let mut again = Peer::new(TcpStream::connect(proxy).await.unwrap());
    let mut again_up = Peer::new(timeout(T, up.accept()).await.unwrap().unwrap().0);
    again_up.send(b"220 hi\r\n").await;
    assert_eq!(again.line().await, b"220 hi\r\n");
}

#[tokio::test]
async fn on_login_reverse_listeners_connect_upstream_only_after_user() {
    let (up, up_addr) = fake_upstream().await;
    let mut cfg = listener_cfg(up_addr, NatMode::Auto, NatMode::Auto);
    cfg.upstream_connect = fxprelay::config::UpstreamConnect::OnLogin;
    let (proxy, _sd) = start_proxy(cfg, Limits::default()).await;
    let mut c = Peer::new(TcpStream::connect(proxy).await.unwrap());
    assert_eq!(c.line().await, b"220 fxprelay FTP proxy ready.\r\n");
    // No upstream connection for a client that has not sent USER.
    assert!(
        timeout(Duration::from_millis(300), up.accept())
            .await
            .is_err()
    );
    c.send(b"USER bob\r\n").await;
    let mut s = Peer::new(timeout(T, up.accept()).await.unwrap().unwrap().0);
    s.send(b"220 real\r\n").await;
    assert_eq!(s.line().await, b"USER bob\r\n");
    s.send(b"331 pass\r\n").await;
    assert_eq!(c.line().await, b"331 pass\r\n");
}
