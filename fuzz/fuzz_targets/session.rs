//! The session machine (`session::machine::Machine`) driven through `handle` with
//! arbitrary client lines, upstream lines and outcomes of what it asked for, in any order,
//! on five listener shapes (reverse relay, passthrough and active-upstream, forward relay,
//! reverse relay with `upstream_connect: on_login`).
//!
//! Properties, besides "no panic":
//! - relay mode never shows the client a server's address: every `227`/`228` it gets
//!   names the proxy's own address and a port the shell leased for it, every `229` such a
//!   port;
//! - the proxy never connects where it must not: a data connection only to the server
//!   itself, on a port of 1024 or above that is none of the proxy's own sockets; a forward
//!   target only through the allow list and self-target guard (`guarded`);
//! - replies stay in step: the client never gets more final replies than it sent
//!   commands, besides the greeting and one last word when the session closes, however
//!   many replies the server makes up.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use fxprelay_core::config::Config;
use fxprelay_core::fxp::job::{Failure, FailureKind, JobEvent};
use fxprelay_core::net::{LeaseError, OwnSockets};
use fxprelay_core::proto::addr;
use fxprelay_core::proto::reply::ReplyAssembler;
use fxprelay_core::session::Policy;
use fxprelay_core::session::machine::{
    Action, ConnectFailure, Connected, DataConnectError, Event, Machine, Slot,
};
use libfuzzer_sys::fuzz_target;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const SERVER: &str = "198.18.0.2:21";
const SERVER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
/// The proxy's side of its upstream connection.
const UPSTREAM_LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));

/// One step of the session: something one of its peers, the shell or the clock does.
#[derive(Debug, Arbitrary)]
enum Step {
    Client(Vec<u8>),
    /// One of a few meaningful client commands (the fuzzer finds verbs slowly).
    Command(u8, Vec<u8>),
    Server(Vec<u8>),
    /// One of a few meaningful server replies.
    Reply(u8, u16),
    ClientOverlong,
    Connected(bool),
    Leased(bool, bool, u16),
    DataConnected(bool),
    Resolved(bool),
    TransferDone(bool),
    FxpDone,
    Tick(u16),
    ServerClosed,
    /// The upstream connection broke (a reset, TLS that does not decrypt).
    ServerBroke,
    ClientClosed,
    Stop,
}

#[derive(Debug, Arbitrary)]
struct Input {
    listener: u8,
    steps: Vec<Step>,
}

const COMMANDS: &[&str] = &[
    "USER",
    "PASS",
    "ACCT",
    "PASV",
    "EPSV",
    "LPSV",
    "PORT",
    "EPRT",
    "RETR",
    "STOR",
    "LIST",
    "ABOR",
    "REIN",
    "STAT",
    "FEAT",
    "SYST",
    "NOOP",
    "QUIT",
    "SITE FXP TO",
    "SITE FXP PUT",
];

fn command(i: u8, args: &[u8]) -> Vec<u8> {
    let mut line = COMMANDS[usize::from(i) % COMMANDS.len()]
        .as_bytes()
        .to_vec();
    if !args.is_empty() {
        line.push(b' ');
        line.extend(args.iter().filter(|&&b| b != b'\n'));
    }
    line.extend_from_slice(b"\r\n");
    line
}

fn reply(i: u8, port: u16) -> Vec<u8> {
    let [p1, p2] = port.to_be_bytes();
    let text = match i % 14 {
        0 => "220 hi".to_string(),
        1 => "230 in".to_string(),
        2 => "331 pass".to_string(),
        3 => "150 open".to_string(),
        4 => "226 done".to_string(),
        5 => "200 ok".to_string(),
        6 => format!("227 Entering Passive Mode (198,18,0,2,{p1},{p2})"),
        7 => format!("227 Entering Passive Mode (203,0,113,66,{p1},{p2})"),
        8 => format!("227-Note (203,0,113,66,{p1},{p2})\r\n227 Entering (198,18,0,2,{p1},{p2})"),
        9 => format!("229 Entering Extended Passive Mode (|||{port}|)"),
        10 => format!("228 Long (4,4,203,0,113,66,2,{p1},{p2})"),
        11 => "421 bye".to_string(),
        12 => "211-Features:\r\n EPSV\r\n211 End".to_string(),
        _ => "502 no".to_string(),
    };
    format!("{text}\r\n").into_bytes()
}

const LISTENERS: [&str; 5] = [
    "    upstream: 198.18.0.2:21\n",
    "    upstream: 198.18.0.2:21\n    data: passthrough\n",
    "    upstream: 198.18.0.2:21\n    upstream_data: active\n",
    "    mode: forward\n    allow: [\"198.18.0.0/15\"]\n",
    "    upstream: 198.18.0.2:21\n    upstream_connect: on_login\n",
];

/// The proxy's own sockets: an admin endpoint on every address of a host that the server
/// shares, and the data ports.
fn own() -> OwnSockets {
    OwnSockets::new(
        vec![
            "0.0.0.0:9464".parse().unwrap(),
            "127.0.0.1:2121".parse().unwrap(),
        ],
        "50000-50999".parse().unwrap(),
        None,
        vec![SERVER_IP],
    )
}

fn policies() -> &'static [Arc<Policy>] {
    static POLICIES: OnceLock<Vec<Arc<Policy>>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        LISTENERS
            .iter()
            .map(|l| {
                let yaml = format!(
                    "limits:\n  login_timeout: 30s\n  idle_timeout: 300s\nfxp:\n  allow: [\"203.0.113.0/24\"]\nlisteners:\n  - name: t\n    bind: 127.0.0.1:2121\n{l}"
                );
                let cfg = Config::parse(&yaml).unwrap();
                let mut p = Policy::new(cfg.listeners[0].clone(), cfg.limits.clone(), &cfg.data);
                p.own = Arc::new(own());
                Arc::new(p)
            })
            .collect()
    })
}

/// What the client was shown, and the invariants over it.
struct Watch {
    relay: bool,
    leased: Vec<u16>,
    client_lines: usize,
    finals: usize,
    replies: ReplyAssembler,
    own: OwnSockets,
}

impl Watch {
    fn check(&mut self, m: &mut Machine) {
        while let Some(a) = m.poll_action() {
            match a {
                Action::ToClient(bytes) => self.shown(&bytes),
                Action::ConnectData(to) => {
                    assert_eq!(
                        to.ip(),
                        SERVER_IP,
                        "a data connection to a third host: {to}"
                    );
                    assert!(
                        to.port() >= 1024,
                        "a data connection to a privileged port: {to}"
                    );
                    let local = [PROXY, UPSTREAM_LOCAL];
                    assert!(
                        self.own.check(to, &local).is_ok(),
                        "a data connection to the proxy itself: {to}"
                    );
                }
                Action::Connect(req) => {
                    let forward = req.target.to_string() != SERVER;
                    assert!(
                        !forward || req.guarded,
                        "an unguarded connect to {}",
                        req.target
                    );
                }
                _ => {}
            }
        }
        // The greeting, one last word at the close, and one final reply per command.
        assert!(
            self.finals <= self.client_lines + 2,
            "{} final replies for {} commands",
            self.finals,
            self.client_lines
        );
    }

    fn shown(&mut self, bytes: &[u8]) {
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let Ok(Some(r)) = self.replies.push_line(line) else {
                continue;
            };
            if r.code >= 200 {
                self.finals += 1;
            }
            if !self.relay {
                continue;
            }
            let own_port = |p: u16| self.leased.contains(&p);
            match r.code {
                227 => {
                    let (a, _) = addr::parse_pasv_reply(&r.raw).expect("the proxy's 227 parses");
                    assert_eq!(
                        IpAddr::V4(*a.ip()),
                        PROXY,
                        "{:?}",
                        String::from_utf8_lossy(&r.raw)
                    );
                    assert!(own_port(a.port()), "{:?}", String::from_utf8_lossy(&r.raw));
                }
                228 => {
                    let (a, _) = addr::parse_lpsv_reply(&r.raw).expect("the proxy's 228 parses");
                    assert_eq!(a.ip(), PROXY, "{:?}", String::from_utf8_lossy(&r.raw));
                    assert!(own_port(a.port()));
                }
                229 => {
                    let p = addr::parse_epsv_reply(&r.raw).expect("the proxy's 229 parses");
                    assert!(own_port(p), "{:?}", String::from_utf8_lossy(&r.raw));
                }
                _ => {}
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let shape = usize::from(input.listener) % LISTENERS.len();
    let policy = policies()[shape].clone();
    let mut now = Instant::now();
    let mut m = Machine::new(policy, CLIENT, PROXY, None, now);
    let mut w = Watch {
        relay: shape != 1,
        leased: Vec::new(),
        client_lines: 0,
        finals: 0,
        replies: ReplyAssembler::new(1 << 20),
        own: own(),
    };
    w.check(&mut m);
    for step in input.steps.into_iter().take(200) {
        match step {
            Step::Client(line) => {
                w.client_lines += 1;
                m.handle(Event::ClientLine(line.into()), now);
            }
            Step::Command(i, args) => {
                w.client_lines += 1;
                m.handle(Event::ClientLine(command(i, &args).into()), now);
            }
            Step::Server(line) => m.handle(Event::UpstreamLine(line.into()), now),
            Step::Reply(i, port) => {
                for line in reply(i, port).split_inclusive(|&b| b == b'\n') {
                    m.handle(Event::UpstreamLine(line.to_vec().into()), now);
                }
            }
            Step::ClientOverlong => {
                w.client_lines += 1;
                m.handle(Event::ClientOverlong { max: 512 }, now);
            }
            Step::Connected(ok) => m.handle(
                Event::Connected(if ok {
                    Ok(Connected {
                        peer: SERVER.parse().unwrap(),
                        local: UPSTREAM_LOCAL,
                        refuses_passive: false,
                    })
                } else {
                    Err(ConnectFailure::Denied("no".into()))
                }),
                now,
            ),
            Step::Leased(passive, ok, port) => {
                let port = 50000 + port % 1000;
                let slot = if passive {
                    Slot::ClientPassive
                } else {
                    Slot::UpstreamActive
                };
                let r = if ok {
                    w.leased.push(port);
                    Ok(port)
                } else {
                    Err(LeaseError::PerClient {
                        client: CLIENT,
                        max: 1,
                    })
                };
                m.handle(Event::Leased { slot, result: r }, now);
            }
            Step::DataConnected(ok) => m.handle(
                Event::DataConnected(if ok {
                    Ok(())
                } else {
                    Err(DataConnectError::Timeout)
                }),
                now,
            ),
            Step::Resolved(ok) => m.handle(
                Event::Resolved(if ok {
                    Ok(vec!["203.0.113.7".parse().unwrap()])
                } else {
                    Err("no".into())
                }),
                now,
            ),
            Step::TransferDone(ok) => m.handle(
                Event::TransferFinished(if ok {
                    Ok(fxprelay_core::proto::Moved {
                        upload: 1,
                        download: 0,
                    })
                } else {
                    Err("broke".into())
                }),
                now,
            ),
            Step::FxpDone => m.handle(
                Event::FxpJob(JobEvent::Finished {
                    error: Some(Failure::new(FailureKind::Other, "x")),
                    took: Duration::ZERO,
                }),
                now,
            ),
            Step::Tick(s) => {
                now += Duration::from_secs(u64::from(s % 400));
                if m.poll_timeout().is_some_and(|t| t <= now) {
                    m.handle_timeout(now);
                }
            }
            Step::ServerClosed => m.handle(Event::UpstreamClosed, now),
            Step::ServerBroke => m.handle(Event::UpstreamError("corrupt message".into()), now),
            Step::ClientClosed => m.handle(Event::ClientClosed, now),
            Step::Stop => m.handle(Event::Stop, now),
        }
        w.check(&mut m);
    }
});
