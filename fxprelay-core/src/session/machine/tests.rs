//! The session's policy, without sockets: each test drives a [`Machine`] with lines,
//! outcomes and a clock it moves by hand, and checks the actions it answers with.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::config::Config;
use crate::fxp::digest::Check;
use crate::fxp::job::{EntryOutcome, Failure, FailureKind, FileEvent, JobEvent, Report};
use crate::fxp::method::Method;
use crate::net::LeaseError;
use crate::proto::Moved;
use crate::proto::command::Direction;
use crate::route::RouteLabel;

const CLIENT: &str = "198.51.100.7";
const PROXY: &str = "127.0.0.1";
const SERVER: &str = "198.18.0.2:21";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// What the sessions of one listener share, as the shell holds it: the policy, a
/// stand-in for the pool and the passive-refusal memo. The stand-in takes the next
/// backend in the list (for a user name, the same one each time) that is neither down
/// nor tried; the binary's pool, with its balancing and health, is tested there.
struct Ctx {
    policy: Arc<Policy>,
    /// Backends a health check would have found down.
    down: Mutex<HashSet<usize>>,
    /// What the machine reported with `BackendFailed`: the index and the error.
    failed: Mutex<Vec<(usize, String)>>,
    /// Round robin's next start.
    next: Mutex<usize>,
    passive_refusals: Mutex<HashSet<SocketAddr>>,
}

impl Ctx {
    fn new(policy: Policy) -> Arc<Ctx> {
        Arc::new(Ctx {
            policy: Arc::new(policy),
            down: Mutex::default(),
            failed: Mutex::default(),
            next: Mutex::default(),
            passive_refusals: Mutex::default(),
        })
    }

    fn choose(&self, user: Option<&[u8]>, tried: &[usize]) -> Option<Backend> {
        let backends = &self.policy.cfg.pool.as_ref()?.backends;
        let n = backends.len();
        let start = match user {
            Some(u) => u.iter().map(|&b| usize::from(b)).sum::<usize>(),
            None => {
                let mut next = self.next.lock().unwrap();
                *next += 1;
                *next - 1
            }
        };
        let down = self.down.lock().unwrap();
        (0..n)
            .map(|k| (start + k) % n)
            .find(|i| !down.contains(i) && !tried.contains(i))
            .map(|index| Backend {
                index,
                target: backends[index].address.clone(),
            })
    }
}

/// A listener's shared context from YAML lines added to one listener (indented four
/// spaces) and top-level blocks.
fn ctx(listener: &str, top: &str) -> Arc<Ctx> {
    ctx_guarded(listener, top, crate::net::OwnSockets::default())
}

/// [`ctx`] with a self-target guard.
fn ctx_guarded(listener: &str, top: &str, own: crate::net::OwnSockets) -> Arc<Ctx> {
    let yaml = format!("{top}listeners:\n  - name: t\n    bind: 127.0.0.1:2121\n{listener}");
    let cfg = Config::parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let mut policy = Policy::of(&cfg, &cfg.listeners[0], Arc::new(own));
    // No pool unless a test asks for one ([`pooled`]), and the edge defense only where a
    // test writes `defense:` (it is on by default, and would add its reports to every
    // other test's actions).
    policy.pool = None;
    if !top.contains("defense:") {
        policy.defense = None;
    }
    Ctx::new(policy)
}

/// The limits the tests count on (connect_timeout and data_accept_timeout as defaults).
const LIMITS: &str = "limits:\n  login_timeout: 30s\n  idle_timeout: 300s\n";

fn reverse(extra: &str) -> Arc<Ctx> {
    ctx(&format!("    upstream: {SERVER}\n{extra}"), LIMITS)
}

/// A machine under test, its clock and everything it has asked for so far. Like the
/// shell, it answers what the machine asks of the listener's services (a backend of the
/// pool, the passive-refusal memo) from `ctx`, which sessions of one listener share.
struct T {
    m: Machine,
    ctx: Arc<Ctx>,
    now: Instant,
    actions: Vec<Action>,
    /// The backend chosen for the session, held as the shell holds it.
    backend: Option<Backend>,
}

impl T {
    fn new(ctx: Arc<Ctx>) -> T {
        Self::with_original(ctx, None)
    }

    fn with_original(ctx: Arc<Ctx>, original: Option<SocketAddr>) -> T {
        let now = Instant::now();
        let mut t = T {
            m: Machine::new(ctx.policy.clone(), ip(CLIENT), ip(PROXY), original, now),
            ctx,
            now,
            actions: Vec::new(),
            backend: None,
        };
        t.drain();
        t
    }

    /// A reverse session to [`SERVER`] whose greeting reached the client.
    fn connected(ctx: Arc<Ctx>) -> T {
        let mut t = T::new(ctx);
        assert!(matches!(t.take().as_slice(), [Action::Connect(_)]));
        t.connect_ok(SERVER);
        t.server("220 hi");
        assert_eq!(t.client_bytes(), ["220 hi\r\n"]);
        t
    }

    /// Logged in with USER/PASS.
    fn logged_in(ctx: Arc<Ctx>) -> T {
        let mut t = T::connected(ctx);
        t.client("USER u");
        t.server("331 pass");
        t.client("PASS secret");
        t.server("230 in");
        t.take();
        t
    }

    fn drain(&mut self) {
        while let Some(a) = self.m.poll_action() {
            self.serve(&a);
            self.actions.push(a);
        }
    }

    /// What the shell does with the listener's services for `a`.
    fn serve(&mut self, a: &Action) {
        match a {
            Action::ChooseBackend { user, tried, .. } => {
                let backend = self.ctx.choose(user.as_deref(), tried);
                self.backend = backend.clone();
                self.m.handle(Event::BackendChosen(backend), self.now);
            }
            Action::BackendFailed { index, error } => {
                self.ctx
                    .failed
                    .lock()
                    .unwrap()
                    .push((*index, error.clone()));
                self.backend = None;
            }
            Action::RememberPassiveRefusal(upstream) => {
                self.ctx.passive_refusals.lock().unwrap().insert(*upstream);
            }
            _ => {}
        }
    }

    fn take(&mut self) -> Vec<Action> {
        self.drain();
        std::mem::take(&mut self.actions)
    }

    fn client(&mut self, line: &str) {
        self.m
            .handle(Event::ClientLine(format!("{line}\r\n").into()), self.now);
        self.drain();
    }

    fn server(&mut self, line: &str) {
        self.m
            .handle(Event::UpstreamLine(format!("{line}\r\n").into()), self.now);
        self.drain();
    }

    fn connect_ok(&mut self, peer: &str) {
        let peer = peer.parse().unwrap();
        let c = Connected {
            peer,
            local: ip("198.18.0.1"),
            refuses_passive: self.ctx.passive_refusals.lock().unwrap().contains(&peer),
        };
        self.m.handle(Event::Connected(Ok(c)), self.now);
        self.drain();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.m.poll_timeout().is_some_and(|t| t <= self.now) {
            self.m.handle_timeout(self.now);
        }
        self.drain();
    }

    /// Takes the actions, keeping only the bytes written to the client.
    fn client_bytes(&mut self) -> Vec<String> {
        self.take()
            .into_iter()
            .filter_map(|a| match a {
                Action::ToClient(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                _ => None,
            })
            .collect()
    }

    fn has(&self, pred: impl Fn(&Action) -> bool) -> bool {
        self.actions.iter().any(pred)
    }

    /// Whether `c` was counted, under the `default` route (these listeners have no
    /// routes: every session's upstream is the listener's own).
    fn counted(&self, c: Count) -> bool {
        self.has(|a| matches!(a, Action::Count(x, RouteLabel::Default) if *x == c))
    }

    fn rejected(&self, r: Rejection) -> bool {
        self.counted(Count::Rejected(r))
    }

    fn sent_upstream(&self) -> Vec<String> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::ToUpstream(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    fn sent_client(&self) -> Vec<String> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::ToClient(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    fn closed(&self) -> bool {
        self.has(|a| matches!(a, Action::Close))
    }
}

fn exhausted() -> LeaseError {
    LeaseError::Exhausted {
        spec: "50000-50001".into(),
        ip: ip(PROXY),
        leased: 2,
        busy: 0,
        denied: 0,
    }
}

fn starts(lines: &[String], prefix: &str) -> bool {
    lines.iter().any(|l| l.starts_with(prefix))
}

// ---------------------------------------------------------------------------------------
// Login and connection
// ---------------------------------------------------------------------------------------

#[test]
fn reverse_connects_and_relays_the_greeting() {
    let mut t = T::new(reverse(""));
    let acts = t.take();
    let [Action::Connect(req)] = acts.as_slice() else {
        panic!("{acts:?}")
    };
    assert_eq!(req.target.to_string(), SERVER);
    assert!(!req.guarded);
    assert!(!t.m.wants_client_input());
    t.connect_ok(SERVER);
    assert!(t.m.wants_client_input());
    t.server("220-Welcome");
    assert!(t.client_bytes().is_empty());
    t.server("220 ready");
    assert_eq!(t.client_bytes(), ["220-Welcome\r\n220 ready\r\n"]);
}

#[test]
fn an_unreachable_upstream_gets_421_and_closes() {
    let mut t = T::new(reverse(""));
    t.take();
    t.m.handle(
        Event::Connected(Err(ConnectFailure::Unreachable("refused".into()))),
        t.now,
    );
    t.drain();
    assert!(starts(
        &t.sent_client(),
        "421 Service not available: the FTP server behind"
    ));
    assert!(t.closed());
    assert_eq!(t.m.end_reason(), Some("upstream unreachable"));
}

#[test]
fn forward_mode_greets_checks_and_replays_user() {
    let mut t = T::new(ctx(
        "    mode: forward\n    allow: [\"198.18.0.0/15\"]\n",
        "",
    ));
    assert!(starts(&t.client_bytes(), "220 fxprelay"));
    t.client("PASS early");
    assert!(starts(
        &t.client_bytes(),
        "530 Please log in with USER user@host"
    ));
    t.client("USER nobody");
    assert!(starts(&t.client_bytes(), "530 Log in as user@host"));
    for attempt in 1..=3 {
        t.client("USER me@evil.example");
        let acts = t.take();
        let guarded = acts
            .iter()
            .any(|a| matches!(a, Action::Connect(req) if req.guarded && req.target.host == "evil.example"));
        assert!(guarded, "{acts:?}");
        t.m.handle(
            Event::Connected(Err(ConnectFailure::Denied("not allowed".into()))),
            t.now,
        );
        t.drain();
        assert!(t.rejected(Rejection::ForwardDenied));
        assert!(starts(&t.sent_client(), "530 evil.example is not allowed"));
        assert_eq!(t.closed(), attempt == 3, "attempt {attempt}");
        t.take();
    }
}

#[test]
fn forward_mode_takes_the_servers_greeting_in_place_of_its_own() {
    let mut t = T::new(ctx(
        "    mode: forward\n    allow: [\"198.18.0.0/15\"]\n",
        "",
    ));
    t.take();
    t.client("USER anonymous@198.18.0.2:2121");
    t.take();
    t.connect_ok("198.18.0.2:2121");
    // Pipelined before the server greeted: it waits.
    t.client("PASS guest");
    assert!(t.take().is_empty());
    t.server("220 real server");
    let up = t.sent_upstream();
    assert_eq!(up, ["USER anonymous\r\n", "PASS guest\r\n"]);
    assert!(t.sent_client().is_empty());
    t.take();
    t.server("331 pass");
    assert_eq!(t.client_bytes(), ["331 pass\r\n"]);
}

#[test]
fn forward_greeting_must_come_in_time() {
    let mut t = T::new(ctx(
        "    mode: forward\n    allow: [\"198.18.0.0/15\"]\n",
        "",
    ));
    t.client("USER a@198.18.0.2");
    t.connect_ok("198.18.0.2:21");
    t.take();
    t.advance(Duration::from_secs(11));
    assert!(t.rejected(Rejection::ReplyTimeout));
    assert_eq!(
        t.sent_client(),
        ["421 Service not available: the FTP server did not greet within 10s.\r\n"]
    );
    assert!(t.closed());
}

#[test]
fn a_reverse_upstream_that_never_greets_is_named_as_such() {
    let mut t = T::new(reverse(""));
    t.connect_ok(SERVER);
    t.advance(Duration::from_secs(9));
    assert!(!t.closed());
    t.advance(Duration::from_secs(2));
    assert_eq!(
        t.sent_client(),
        ["421 Service not available: the FTP server did not greet within 10s.\r\n"]
    );
    assert_eq!(t.m.end_reason(), Some("upstream sent no greeting"));
    // A greeting in time clears the deadline.
    let mut t = T::connected(reverse(""));
    t.advance(Duration::from_secs(20));
    assert!(!t.closed());
}

#[test]
fn a_reverse_listener_on_login_greets_first_and_connects_after_user() {
    let mut t = T::new(reverse("    upstream_connect: on_login\n"));
    assert!(!t.has(|a| matches!(a, Action::Connect(_))));
    assert_eq!(t.client_bytes(), ["220 fxprelay FTP proxy ready.\r\n"]);
    t.client("NOOP");
    assert_eq!(t.client_bytes(), ["200 NOOP ok.\r\n"]);
    t.client("LIST");
    assert!(starts(
        &t.client_bytes(),
        "530 Please log in with USER and PASS"
    ));
    t.client("USER anonymous");
    let acts = t.take();
    assert!(
        acts.iter().any(
            |a| matches!(a, Action::Connect(r) if r.target.to_string() == SERVER && !r.guarded)
        ),
        "{acts:?}"
    );
    t.connect_ok(SERVER);
    // The server's greeting is the proxy's to take; the USER goes on as it came.
    t.server("220 real server");
    assert!(t.sent_client().is_empty());
    assert_eq!(t.sent_upstream(), ["USER anonymous\r\n"]);
    t.take();
    t.server("331 pass");
    assert_eq!(t.client_bytes(), ["331 pass\r\n"]);
    // Only reverse listeners have the option.
    let e = Config::parse(
        "listeners:\n  - name: f\n    bind: 127.0.0.1:2121\n    mode: forward\n    upstream_connect: on_login\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("upstream_connect"), "{e}");
}

#[test]
fn a_client_over_its_data_port_share_gets_425() {
    let mut t = T::logged_in(reverse(""));
    t.client("PASV");
    t.take();
    let e = LeaseError::PerClient {
        client: ip(CLIENT),
        max: 64,
    };
    t.m.handle(
        Event::Leased {
            slot: Slot::ClientPassive,
            result: Err(e),
        },
        t.now,
    );
    t.drain();
    assert!(t.rejected(Rejection::MaxDataPortsPerIp));
    assert!(starts(
        &t.sent_client(),
        "425 Can't open data connection: your address holds 64 data ports"
    ));
    assert!(t.m.wants_client_input());
}

#[test]
fn transparent_mode_needs_and_checks_the_original_destination() {
    let t = T::with_original(ctx("    mode: transparent\n", ""), None);
    assert!(t.closed());
    let dst: SocketAddr = "203.0.113.9:21".parse().unwrap();
    let mut t = T::with_original(ctx("    mode: transparent\n", ""), Some(dst));
    let acts = t.take();
    let [Action::Connect(req)] = acts.as_slice() else {
        panic!("{acts:?}")
    };
    assert!(req.guarded);
    assert_eq!(req.target.to_string(), "203.0.113.9:21");
    t.m.handle(
        Event::Connected(Err(ConnectFailure::Denied("outside".into()))),
        t.now,
    );
    t.drain();
    assert!(t.rejected(Rejection::TransparentDenied));
    assert!(starts(
        &t.sent_client(),
        "421 Service not available: 203.0.113.9:21 is not allowed"
    ));
    assert!(t.closed());
}

// ---------------------------------------------------------------------------------------
// Passthrough: NAT and bounce
// ---------------------------------------------------------------------------------------

#[test]
fn passthrough_rewrites_a_private_227_behind_a_public_server() {
    let mut t = T::logged_in(reverse("    data: passthrough\n"));
    t.client("PASV");
    assert_eq!(t.sent_upstream(), ["PASV\r\n"]);
    t.take();
    t.server("227 Entering Passive Mode (10,99,0,2,117,49).");
    assert_eq!(
        t.sent_client(),
        ["227 Entering Passive Mode (198,18,0,2,117,49).\r\n"]
    );
    assert!(t.counted(Count::Rewrite {
        kind: "pasv",
        reason: "private"
    }));
}

#[test]
fn passthrough_never_leaves_227_alone_and_reports_garbage() {
    let mut t = T::logged_in(reverse(
        "    data: passthrough\n    nat:\n      passive: never\n",
    ));
    t.client("PASV");
    t.take();
    t.server("227 Entering Passive Mode (10,99,0,2,117,49).");
    assert_eq!(
        t.client_bytes(),
        ["227 Entering Passive Mode (10,99,0,2,117,49).\r\n"]
    );

    let mut t = T::logged_in(reverse("    data: passthrough\n"));
    t.client("PASV");
    t.take();
    t.server("227 Entering Passive Mode (10,99,0,300,117,49).");
    assert!(t.rejected(Rejection::BadPassiveReply));
    assert!(starts(
        &t.sent_client(),
        "425 Can't open data connection: the server announced"
    ));
}

#[test]
fn passthrough_fixes_a_private_port_address_and_refuses_bounces() {
    let mut t = T::logged_in(reverse(
        "    data: passthrough\n    nat:\n      active: always\n",
    ));
    t.client("PORT 10,0,0,5,4,1");
    assert_eq!(t.sent_upstream(), ["PORT 198,51,100,7,4,1\r\n"]);
    t.take();
    let mut t = T::logged_in(reverse(
        "    data: passthrough\n    nat:\n      active: never\n",
    ));
    t.client("PORT 203,0,113,9,4,1");
    assert!(t.rejected(Rejection::Bounce));
    assert!(starts(
        &t.sent_client(),
        "504 PORT refused: the address is not your own"
    ));
    assert!(t.sent_upstream().is_empty());
    t.take();
    t.client("EPRT |1|198.51.100.7|80|");
    assert!(starts(
        &t.sent_client(),
        "504 EPRT refused: ports below 1024"
    ));
    t.take();
    t.client("PORT 1,2,3");
    assert!(t.rejected(Rejection::BadPort));
    assert!(starts(
        &t.sent_client(),
        "501 Syntax error in PORT arguments"
    ));
}

#[test]
fn allow_foreign_port_exempts_listed_networks() {
    let mut t = T::logged_in(reverse(
        "    data: passthrough\n    nat:\n      active: never\n    allow_foreign_port: [\"203.0.113.0/24\"]\n",
    ));
    t.client("PORT 203,0,113,9,0,21");
    assert_eq!(t.sent_upstream(), ["PORT 203,0,113,9,0,21\r\n"]);
}

#[test]
fn a_dns_client_address_is_resolved_before_the_port_goes_on() {
    let mut t = T::logged_in(reverse(
        "    data: passthrough\n    nat:\n      active: always\n      client_address: office.example\n",
    ));
    t.client("PORT 10,0,0,5,4,1");
    let acts = t.take();
    assert!(
        matches!(acts.as_slice(), [Action::Count(..), Action::Resolve(n)] if n.0 == "office.example"),
        "{acts:?}"
    );
    assert!(!t.m.wants_client_input());
    t.m.handle(
        Event::Resolved(Ok(vec![ip("2001:db8::1"), ip("203.0.113.7")])),
        t.now,
    );
    t.drain();
    assert_eq!(t.sent_upstream(), ["PORT 203,0,113,7,4,1\r\n"]);
    t.take();
    t.client("PORT 10,0,0,5,4,1");
    t.m.handle(Event::Resolved(Err("no such host".into())), t.now);
    t.drain();
    assert!(t.rejected(Rejection::ClientAddressUnresolved));
    // Left alone, the private address is not the client's own: a bounce.
    assert!(starts(&t.sent_client(), "504 "));
}

// ---------------------------------------------------------------------------------------
// Relay mode
// ---------------------------------------------------------------------------------------

/// Relay-mode PASV from the client, answered with a port leased for it; what the
/// client was sent (the actions stay in `t.actions`).
fn client_pasv(t: &mut T, port: u16) -> Vec<String> {
    t.client("PASV");
    let acts = t.take();
    assert!(
        acts.iter().any(|a| matches!(
            a,
            Action::Lease {
                slot: Slot::ClientPassive,
                ..
            }
        )),
        "{acts:?}"
    );
    t.m.handle(
        Event::Leased {
            slot: Slot::ClientPassive,
            result: Ok(port),
        },
        t.now,
    );
    t.drain();
    t.sent_client()
}

#[test]
fn relay_answers_pasv_itself_and_releases_an_unused_port() {
    let mut t = T::logged_in(reverse(""));
    let r = client_pasv(&mut t, 50001);
    assert_eq!(r, ["227 Entering Passive Mode (127,0,0,1,195,81).\r\n"]);
    t.advance(Duration::from_secs(31));
    assert!(t.has(|a| matches!(a, Action::Release(Slot::ClientPassive))));
    assert!(t.rejected(Rejection::PassiveUnused));
    assert!(!t.closed());
}

#[test]
fn relay_announces_public_address_and_refuses_pasv_without_ipv4() {
    let mut t = T::logged_in(reverse("    public_address: 192.0.2.10\n"));
    assert_eq!(
        client_pasv(&mut t, 50001),
        ["227 Entering Passive Mode (192,0,2,10,195,81).\r\n"]
    );
    let mut t = T::logged_in(reverse("    public_address: \"2001:db8::10\"\n"));
    assert!(starts(
        &client_pasv(&mut t, 50001),
        "425 Can't open passive connection"
    ));
    assert!(t.has(|a| matches!(a, Action::Release(Slot::ClientPassive))));
    t.take();
    t.client("EPSV");
    t.m.handle(
        Event::Leased {
            slot: Slot::ClientPassive,
            result: Ok(50002),
        },
        t.now,
    );
    assert_eq!(
        t.client_bytes(),
        ["229 Entering Extended Passive Mode (|||50002|)\r\n"]
    );
}

#[test]
fn relay_lease_failures_get_425() {
    let mut t = T::logged_in(reverse(""));
    t.client("PASV");
    t.take();
    t.m.handle(
        Event::Leased {
            slot: Slot::ClientPassive,
            result: Err(exhausted()),
        },
        t.now,
    );
    assert!(starts(
        &t.client_bytes(),
        "425 Can't open data connection: every data port"
    ));
}

#[test]
fn epsv_all_locks_out_other_setups() {
    let mut t = T::logged_in(reverse(""));
    t.client("EPSV ALL");
    assert_eq!(t.client_bytes(), ["200 EPSV ALL command successful.\r\n"]);
    t.client("PASV");
    assert!(starts(&t.client_bytes(), "501 Only EPSV"));
    t.client("EPRT |1|198.51.100.7|5000|");
    assert!(starts(&t.client_bytes(), "501 Only EPSV"));
}

#[test]
fn a_transfer_without_setup_gets_425() {
    let mut t = T::logged_in(reverse(""));
    t.client("RETR f");
    assert_eq!(
        t.client_bytes(),
        ["425 Use PORT, EPRT, PASV or EPSV first.\r\n"]
    );
}

/// Relay-mode `PASV` + `RETR` up to the moment the transfer starts.
fn start_download(t: &mut T) {
    client_pasv(t, 50001);
    t.client("RETR f");
    assert_eq!(t.sent_upstream(), ["PASV\r\n"]);
    assert!(!t.m.wants_client_input());
    t.take();
    // The server names another host: in relay mode the proxy connects to the server.
    t.server("227 Entering Passive Mode (10,0,0,9,117,49)");
    let acts = t.take();
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::ConnectData(to) if to.to_string() == "198.18.0.2:30001")),
        "{acts:?}"
    );
    t.m.handle(Event::DataConnected(Ok(())), t.now);
    t.drain();
    assert_eq!(t.sent_upstream(), ["RETR f\r\n"]);
    assert!(t.has(|a| matches!(
        a,
        Action::StartTransfer {
            direction: Direction::Download,
            client: ClientLeg::Accept { .. },
            upstream: UpstreamLeg::Connected,
            client_tls: false,
            upstream_tls: false,
        }
    )));
    assert!(t.m.wants_client_input());
    t.take();
}

#[test]
fn relay_holds_226_until_the_bytes_crossed() {
    let mut t = T::logged_in(reverse(""));
    start_download(&mut t);
    t.server("150 Opening");
    assert_eq!(t.client_bytes(), ["150 Opening\r\n"]);
    t.server("226 Done");
    assert!(t.client_bytes().is_empty(), "226 must wait for the data");
    t.m.handle(
        Event::TransferFinished(Ok(Moved {
            upload: 0,
            download: 5,
        })),
        t.now,
    );
    t.drain();
    assert_eq!(t.sent_client(), ["226 Done\r\n"]);
    assert!(t.counted(Count::Transfer("ok")));
}

#[test]
fn a_failed_relay_gets_426_instead_of_226() {
    let mut t = T::logged_in(reverse(""));
    start_download(&mut t);
    t.m.handle(
        Event::TransferFinished(Err("data connection broke".into())),
        t.now,
    );
    t.server("226 Done");
    assert!(starts(
        &t.sent_client(),
        "426 Connection closed; transfer aborted: data connection broke"
    ));
    assert!(t.counted(Count::Transfer("failed")));
}

#[test]
fn abor_closes_the_data_connections_and_answers_426() {
    let mut t = T::logged_in(reverse(""));
    start_download(&mut t);
    t.server("150 Opening");
    t.take();
    t.client("ABOR");
    assert!(t.has(|a| matches!(a, Action::AbortTransfer)));
    assert_eq!(t.sent_upstream(), ["ABOR\r\n"]);
    t.take();
    t.server("426 Aborted");
    t.server("226 ABOR ok");
    assert_eq!(t.client_bytes(), ["426 Aborted\r\n", "226 ABOR ok\r\n"]);

    // The server had already finished: the client still learns it lacks the file.
    let mut t = T::logged_in(reverse(""));
    start_download(&mut t);
    t.server("226 Done");
    t.take();
    t.client("ABOR");
    assert!(starts(
        &t.sent_client(),
        "426 Connection closed; transfer aborted."
    ));
}

/// Relay-mode `PASV` + `STOR` up to the server's `150`.
fn start_upload(t: &mut T) {
    client_pasv(t, 50001);
    t.client("STOR up.bin");
    t.take();
    t.server("227 Entering Passive Mode (198,18,0,2,117,49)");
    t.m.handle(Event::DataConnected(Ok(())), t.now);
    t.drain();
    assert_eq!(t.sent_upstream(), ["STOR up.bin\r\n"]);
    t.server("150 Ok to send data.");
    assert_eq!(t.client_bytes(), ["150 Ok to send data.\r\n"]);
}

fn moved(upload: u64, download: u64) -> TransferResult {
    Ok(Moved { upload, download })
}

#[test]
fn a_command_sent_during_an_upload_waits_and_never_cuts_the_file() {
    // pyftpdlib answers commands while a transfer runs: a SIZE sent on at once would be
    // answered 550 while the file still flows, and that 550 taken for the STOR's end.
    let mut t = T::logged_in(reverse(""));
    start_upload(&mut t);
    t.client("SIZE no-such-file");
    assert!(t.sent_upstream().is_empty(), "SIZE waits for the transfer");
    assert!(
        t.m.wants_client_input(),
        "more lines are read (an ABOR may follow)"
    );
    t.take();
    t.m.handle(Event::TransferFinished(moved(1_376_256, 0)), t.now);
    t.drain();
    assert!(!t.has(|a| matches!(a, Action::AbortTransfer)));
    assert!(t.sent_upstream().is_empty(), "still waiting for the 226");
    t.take();
    t.server("226 Transfer complete.");
    assert_eq!(t.sent_client(), ["226 Transfer complete.\r\n"]);
    assert_eq!(t.sent_upstream(), ["SIZE no-such-file\r\n"]);
    assert!(t.counted(Count::Transfer("ok")));
    t.take();
    t.server("550 No such file.");
    assert_eq!(t.client_bytes(), ["550 No such file.\r\n"]);
}

#[test]
fn a_reply_that_cannot_end_a_transfer_is_never_taken_for_its_end() {
    let mut t = T::logged_in(reverse(""));
    start_upload(&mut t);
    // A 2xx other than 226/250 answers no transfer (a misbehaving server's answer to
    // something else): dropped, the upload goes on.
    t.server("213 1310720");
    assert!(t.sent_client().is_empty());
    assert!(t.rejected(Rejection::UnsolicitedReply));
    assert!(!t.has(|a| matches!(a, Action::AbortTransfer)));
    t.take();
    t.m.handle(Event::TransferFinished(moved(7, 0)), t.now);
    t.server("226 Done");
    assert_eq!(t.client_bytes(), ["226 Done\r\n"]);
}

#[test]
fn replies_never_overtake_a_held_226() {
    // lftp pipelines SITE UTIME right after the data connection closes, before the 226.
    let mut t = T::logged_in(reverse(""));
    start_download(&mut t);
    t.server("150 Opening");
    t.take();
    t.server("226 Done");
    t.client("SITE UTIME 20260101000000 a");
    t.client("NOOP");
    assert!(
        t.sent_upstream().is_empty(),
        "both wait behind the held 226"
    );
    assert!(t.sent_client().is_empty(), "the 226 waits for the data");
    t.take();
    t.m.handle(Event::TransferFinished(moved(0, 5)), t.now);
    t.drain();
    assert_eq!(t.sent_client(), ["226 Done\r\n"]);
    assert_eq!(
        t.sent_upstream(),
        ["SITE UTIME 20260101000000 a\r\n", "NOOP\r\n"]
    );
    t.take();
    t.server("500 Unknown SITE command.");
    t.server("200 NOOP ok.");
    assert_eq!(
        t.client_bytes(),
        ["500 Unknown SITE command.\r\n", "200 NOOP ok.\r\n"]
    );
}

#[test]
fn lines_held_by_a_long_transfer_are_never_given_up_on() {
    let mut t = T::logged_in(reverse(""));
    start_download(&mut t);
    t.server("150 Opening");
    t.client("NOOP");
    t.take();
    // Far past connect_timeout (which bounds a server's silence on plain commands): a
    // transfer takes as long as its file does.
    t.advance(Duration::from_secs(120));
    assert!(t.sent_upstream().is_empty());
    assert!(!t.closed());
    t.m.handle(Event::TransferFinished(moved(0, 5)), t.now);
    t.server("226 Done");
    assert_eq!(t.sent_upstream(), ["NOOP\r\n"]);
}

#[test]
fn a_server_that_never_confirms_a_crossed_transfer_ends_the_session() {
    let mut t = T::logged_in(reverse(""));
    start_download(&mut t);
    t.server("150 Opening");
    t.m.handle(Event::TransferFinished(moved(0, 5)), t.now);
    t.take();
    t.advance(Duration::from_secs(299));
    assert!(!t.closed());
    t.advance(Duration::from_secs(2));
    assert!(t.closed());
    assert!(starts(&t.sent_client(), "421 Service not available"));
    assert!(t.counted(Count::Transfer("failed")));
    assert!(!starts(&t.sent_client(), "226"));
}

#[test]
fn abor_behind_held_lines_stops_the_transfer_at_once_and_keeps_its_place() {
    let mut t = T::logged_in(reverse(""));
    start_download(&mut t);
    t.server("150 Opening");
    t.take();
    t.client("NOOP");
    t.client("ABOR");
    assert!(
        t.has(|a| matches!(a, Action::AbortTransfer)),
        "the data connections close at once"
    );
    assert!(t.sent_upstream().is_empty(), "NOOP and ABOR go on in order");
    t.take();
    // The server sees its data connection go and fails the transfer.
    t.server("426 Failure writing network stream.");
    assert_eq!(t.sent_client(), ["426 Failure writing network stream.\r\n"]);
    assert_eq!(t.sent_upstream().len(), 2, "NOOP, then ABOR");
    t.take();
    t.server("200 NOOP ok.");
    t.server("225 No transfer to ABOR.");
    assert_eq!(
        t.client_bytes(),
        ["200 NOOP ok.\r\n", "225 No transfer to ABOR.\r\n"]
    );
}

#[test]
fn stat_during_a_relayed_transfer_is_answered_by_the_proxy() {
    let mut t = T::logged_in(reverse(""));
    start_download(&mut t);
    t.server("150 Opening");
    t.take();
    t.client("STAT");
    assert!(t.sent_upstream().is_empty(), "the server is not asked");
    let status = t.client_bytes().concat();
    assert!(status.starts_with("211-"), "{status}");
    assert!(status.contains("RETR f: in progress"), "{status}");
    assert!(status.ends_with("211 End\r\n"), "{status}");
    t.m.handle(Event::TransferFinished(moved(0, 5)), t.now);
    t.take();
    t.client("STAT");
    let status = t.client_bytes().concat();
    assert!(
        status.contains("waiting for the FTP server's final reply"),
        "{status}"
    );
}

#[test]
fn a_passthrough_transfer_holds_later_commands_until_its_final_reply() {
    let mut t = T::logged_in(reverse("    data: passthrough\n"));
    t.client("STOR up.bin");
    t.server("150 Ok to send data.");
    t.take();
    t.client("SIZE up.bin");
    t.client("STAT");
    assert!(t.sent_upstream().is_empty());
    t.client("ABOR");
    assert!(
        t.sent_upstream().is_empty(),
        "ABOR keeps its place behind them"
    );
    t.take();
    t.server("226 Transfer complete.");
    assert_eq!(t.sent_client(), ["226 Transfer complete.\r\n"]);
    assert_eq!(
        t.sent_upstream(),
        ["SIZE up.bin\r\n", "STAT\r\n", "ABOR\r\n"]
    );
    // Alone, ABOR goes on at once, as ever.
    let mut t = T::logged_in(reverse("    data: passthrough\n"));
    t.client("RETR big");
    t.server("150 Opening");
    t.take();
    t.client("ABOR");
    assert_eq!(t.sent_upstream(), ["ABOR\r\n"]);
}

#[test]
fn a_client_flooding_a_transfer_is_read_only_so_far() {
    let mut t = T::logged_in(reverse(""));
    start_download(&mut t);
    t.server("150 Opening");
    for _ in 0..MAX_HELD_DURING_TRANSFER {
        assert!(t.m.wants_client_input());
        t.client("NOOP");
    }
    assert!(!t.m.wants_client_input(), "the socket pushes back");
}

#[test]
fn a_server_refusing_the_transfer_is_passed_on() {
    let mut t = T::logged_in(reverse(""));
    start_download(&mut t);
    t.server("550 No such file");
    assert!(t.has(|a| matches!(a, Action::AbortTransfer)));
    assert_eq!(t.sent_client(), ["550 No such file\r\n"]);
}

/// A listener whose server is reached through agent `site-a` (`via`).
fn via(extra: &str) -> Arc<Ctx> {
    let top = format!(
        "{LIMITS}agents:\n  bind: 127.0.0.1:8021\n  cert: /e.crt\n  key: /e.key\n  tokens: {{site-a: 0123456789abcdef0123}}\n"
    );
    ctx(
        &format!("    upstream: {SERVER}\n    via: site-a\n{extra}"),
        &top,
    )
}

fn listen_inside_asked(acts: &[Action]) -> bool {
    let server: SocketAddr = SERVER.parse().unwrap();
    let asked = acts
        .iter()
        .any(|a| matches!(a, Action::ListenInside { server: s } if *s == server));
    // Never a port of the proxy's own: the server cannot reach it.
    let leased = acts.iter().any(|a| {
        matches!(
            a,
            Action::Lease {
                slot: Slot::UpstreamActive,
                ..
            }
        )
    });
    asked && !leased
}

#[test]
fn active_mode_through_an_agent_names_the_agents_inside_address_never_the_proxys() {
    let mut t = T::logged_in(via("    upstream_data: active\n"));
    client_pasv(&mut t, 50001);
    t.client("RETR f");
    let acts = t.take();
    assert!(listen_inside_asked(&acts), "{acts:?}");
    assert!(t.sent_upstream().is_empty());
    // The agent listens on its own address inside, not the control connection's local
    // address the proxy knows (198.18.0.1 here), and not the proxy's.
    t.m.handle(
        Event::ListeningInside(Ok("10.0.0.9:41234".parse().unwrap())),
        t.now,
    );
    t.drain();
    assert_eq!(t.sent_upstream(), ["PORT 10,0,0,9,161,18\r\n"]);
    t.take();
    t.server("200 PORT ok");
    assert_eq!(t.sent_upstream(), ["RETR f\r\n"]);
    let expect = ip("198.18.0.2");
    assert!(t.has(|a| matches!(
        a,
        Action::StartTransfer {
            direction: Direction::Download,
            upstream: UpstreamLeg::Accept { expect: e },
            ..
        } if *e == expect
    )));

    // IPv6 inside: EPRT.
    let mut t = T::logged_in(via("    upstream_data: active\n"));
    client_pasv(&mut t, 50001);
    t.client("STOR g");
    t.take();
    t.m.handle(
        Event::ListeningInside(Ok("[2001:db8::9]:40000".parse().unwrap())),
        t.now,
    );
    t.drain();
    assert_eq!(t.sent_upstream(), ["EPRT |2|2001:db8::9|40000|\r\n"]);
}

#[test]
fn an_agent_that_cannot_listen_fails_the_transfer_with_425_and_frees_everything() {
    let mut t = T::logged_in(via("    upstream_data: active\n"));
    client_pasv(&mut t, 50001);
    t.client("RETR f");
    t.take();
    t.m.handle(
        Event::ListeningInside(Err(
            "this agent's link already holds 64 listening ports".into()
        )),
        t.now,
    );
    t.drain();
    assert!(t.has(|a| matches!(a, Action::Release(Slot::ClientPassive))));
    assert!(t.counted(Count::Transfer("failed")));
    assert!(starts(
        &t.sent_client(),
        "425 Can't open data connection to the server: its agent cannot listen for it: this agent's link already holds 64"
    ));
    assert!(t.sent_upstream().is_empty());
    // An address no server can connect to is never sent; the agent's port is let go.
    client_pasv(&mut t, 50002);
    t.client("RETR f");
    t.take();
    t.m.handle(
        Event::ListeningInside(Ok("0.0.0.0:41000".parse().unwrap())),
        t.now,
    );
    t.drain();
    assert!(t.has(|a| matches!(a, Action::Release(Slot::UpstreamActive))));
    assert!(t.sent_upstream().is_empty());
    assert!(starts(&t.sent_client(), "425 "));
    // The server refuses the PORT: the agent's port is let go, the client hears why.
    client_pasv(&mut t, 50003);
    t.client("RETR f");
    t.take();
    t.m.handle(
        Event::ListeningInside(Ok("10.0.0.9:41001".parse().unwrap())),
        t.now,
    );
    t.drain();
    t.take();
    t.server("500 Illegal PORT command.");
    assert!(t.has(|a| matches!(a, Action::Release(Slot::UpstreamActive))));
    assert!(starts(&t.sent_client(), "425 "));
    // An answer nobody waits for any more (the transfer failed meanwhile) is let go.
    t.take();
    t.m.handle(
        Event::ListeningInside(Ok("10.0.0.9:41002".parse().unwrap())),
        t.now,
    );
    t.drain();
    assert!(t.has(|a| matches!(a, Action::Release(Slot::UpstreamActive))));
    assert!(t.sent_upstream().is_empty());
}

#[test]
fn through_an_agent_auto_falls_back_to_the_agents_listening_port() {
    // A server that refuses passive mode (or whose passive address is wrong) is reached
    // in active mode through the agent, as a direct one would be.
    let mut t = T::logged_in(via(""));
    client_pasv(&mut t, 50001);
    t.client("STOR f");
    assert_eq!(t.sent_upstream(), ["PASV\r\n"]);
    t.take();
    t.server("502 No passive mode here");
    let acts = t.take();
    assert!(listen_inside_asked(&acts), "{acts:?}");
    t.m.handle(
        Event::ListeningInside(Ok("10.0.0.9:41234".parse().unwrap())),
        t.now,
    );
    t.drain();
    assert_eq!(t.sent_upstream(), ["PORT 10,0,0,9,161,18\r\n"]);
}

proptest! {
    /// Whatever the agent answers, the machine neither panics nor names an address to
    /// the server other than the one the agent listens at.
    #[test]
    fn any_listening_answer_is_sent_as_is_or_refused(
        ip in any::<[u8; 4]>(),
        port in any::<u16>(),
        ok in any::<bool>(),
    ) {
        let mut t = T::logged_in(via("    upstream_data: active\n"));
        client_pasv(&mut t, 50001);
        t.client("RETR f");
        t.take();
        let at = SocketAddr::from((ip, port));
        let answer = if ok { Ok(at) } else { Err("no".to_string()) };
        t.m.handle(Event::ListeningInside(answer), t.now);
        t.drain();
        let sent = t.sent_upstream();
        if ok && !at.ip().is_unspecified() && port != 0 {
            let v4 = std::net::SocketAddrV4::new(ip.into(), port);
            let want = String::from_utf8(crate::proto::addr::format_port_command(v4)).unwrap();
            prop_assert_eq!(sent, vec![want]);
        } else {
            prop_assert!(sent.is_empty());
            prop_assert!(starts(&t.sent_client(), "425 "));
        }
    }
}

#[test]
fn upstream_data_auto_falls_back_to_active_and_remembers_a_5xx() {
    let c = reverse("");
    let mut t = T::logged_in(c.clone());
    client_pasv(&mut t, 50001);
    t.client("STOR f");
    t.take();
    t.server("502 No passive mode here");
    let acts = t.take();
    assert!(
        acts.iter().any(|a| matches!(
            a,
            Action::Lease {
                slot: Slot::UpstreamActive,
                ..
            }
        )),
        "{acts:?}"
    );
    t.m.handle(
        Event::Leased {
            slot: Slot::UpstreamActive,
            result: Ok(50002),
        },
        t.now,
    );
    t.drain();
    assert_eq!(t.sent_upstream(), ["PORT 198,18,0,1,195,82\r\n"]);
    t.take();
    t.server("200 PORT ok");
    assert_eq!(t.sent_upstream(), ["STOR f\r\n"]);
    assert!(t.has(|a| matches!(
        a,
        Action::StartTransfer {
            direction: Direction::Upload,
            upstream: UpstreamLeg::Accept { .. },
            ..
        }
    )));

    // The next session to that server goes straight to active mode.
    let mut t = T::logged_in(c);
    client_pasv(&mut t, 50003);
    t.client("STOR g");
    assert!(t.has(|a| matches!(
        a,
        Action::Lease {
            slot: Slot::UpstreamActive,
            ..
        }
    )));
    assert!(t.sent_upstream().is_empty());
}

#[test]
fn a_privileged_passive_port_is_refused() {
    let mut t = T::logged_in(reverse("    upstream_data: passive\n"));
    client_pasv(&mut t, 50001);
    t.client("RETR f");
    t.take();
    t.server("227 Entering Passive Mode (198,18,0,2,0,22)");
    assert!(t.rejected(Rejection::Bounce));
    assert!(!t.has(|a| matches!(a, Action::ConnectData(_))));
    assert!(starts(
        &t.sent_client(),
        "425 Can't open data connection to the server: it announced the privileged data port 22"
    ));
    assert!(t.has(|a| matches!(a, Action::Release(Slot::ClientPassive))));
}

#[test]
fn a_server_cannot_aim_the_relay_at_a_third_host_unless_listed() {
    let connects_to = |extra: &str, announced: &str| {
        let mut t = T::logged_in(reverse(&format!("    upstream_data: passive\n{extra}")));
        client_pasv(&mut t, 50001);
        t.client("RETR f");
        t.take();
        t.server(&format!("227 Entering Passive Mode ({announced})"));
        t.take()
            .into_iter()
            .find_map(|a| match a {
                Action::ConnectData(to) => Some(to.to_string()),
                _ => None,
            })
            .unwrap()
    };
    // `never`, `auto` with a private host the server could reach: the server's own.
    let never = "    nat:\n      passive: never\n";
    assert_eq!(
        connects_to(never, "203,0,113,66,117,49"),
        "198.18.0.2:30001"
    );
    assert_eq!(connects_to("", "10,9,9,9,117,49"), "198.18.0.2:30001");
    // Listed hosts are the operator's choice.
    let listed = format!("{never}    allow_passive_hosts: [203.0.113.0/24]\n");
    assert_eq!(
        connects_to(&listed, "203,0,113,66,117,49"),
        "203.0.113.66:30001"
    );
    assert_eq!(connects_to(&listed, "192,0,2,1,117,49"), "198.18.0.2:30001");
}

#[test]
fn a_data_port_that_does_not_answer_fails_the_transfer_in_passive_mode() {
    let mut t = T::logged_in(reverse("    upstream_data: passive\n"));
    client_pasv(&mut t, 50001);
    t.client("RETR f");
    t.server("229 Entering Extended Passive Mode (|||30001|)");
    t.take();
    t.m.handle(Event::DataConnected(Err(DataConnectError::Timeout)), t.now);
    t.drain();
    assert!(starts(
        &t.sent_client(),
        "425 Can't open data connection to the server: connecting to its data port 198.18.0.2:30001 timed out"
    ));
    assert!(t.counted(Count::Transfer("failed")));
}

#[test]
fn a_silent_server_ends_the_session_after_the_connect_timeout() {
    let mut t = T::logged_in(reverse(""));
    client_pasv(&mut t, 50001);
    t.client("RETR f");
    t.take();
    t.advance(Duration::from_secs(9));
    assert!(!t.closed());
    t.advance(Duration::from_secs(2));
    assert!(t.rejected(Rejection::ReplyTimeout));
    assert!(starts(
        &t.sent_client(),
        "421 Service not available: the FTP server did not answer within 10s."
    ));
    assert!(t.closed());
}

#[test]
fn a_relayed_transfer_waits_for_earlier_replies_so_each_reply_finds_its_command() {
    let mut t = T::logged_in(reverse(""));
    client_pasv(&mut t, 50001);
    t.client("TYPE I");
    t.client("RETR f");
    // The proxy's PASV must not overtake TYPE: its 227 would be taken for TYPE's answer.
    assert_eq!(t.sent_upstream(), ["TYPE I\r\n"]);
    t.take();
    t.server("200 Type set to I");
    assert_eq!(t.sent_client(), ["200 Type set to I\r\n"]);
    assert_eq!(t.sent_upstream(), ["PASV\r\n"]);
}

#[test]
fn a_server_that_never_answers_does_not_hold_a_transfer_forever() {
    let mut t = T::logged_in(reverse(""));
    client_pasv(&mut t, 50001);
    t.client("SITE QUIET");
    t.client("RETR f");
    t.take();
    t.advance(Duration::from_secs(11));
    assert_eq!(t.sent_upstream(), ["PASV\r\n"]);
    assert!(!t.closed());
}

#[test]
fn relay_data_commands_before_login_go_to_the_server() {
    let mut t = T::connected(reverse(""));
    t.client("PASV");
    assert_eq!(t.sent_upstream(), ["PASV\r\n"]);
}

// ---------------------------------------------------------------------------------------
// Reply sequencing
// ---------------------------------------------------------------------------------------

#[test]
fn an_unrequested_227_never_answers_the_clients_pasv() {
    // The adversarial pass: `215 UNIX` and a `227` naming a third host, in one answer.
    let mut t = T::logged_in(reverse(""));
    t.client("SYST");
    t.take();
    t.server("215 UNIX");
    t.server("227 Entering Passive Mode (203,0,113,66,4,1)");
    assert_eq!(t.sent_client(), ["215 UNIX\r\n"]);
    assert!(t.rejected(Rejection::UnsolicitedReply));
    assert!(!t.closed());
    t.take();
    assert_eq!(
        client_pasv(&mut t, 50001),
        ["227 Entering Passive Mode (127,0,0,1,195,81).\r\n"]
    );
    t.take();
    t.client("NOOP");
    t.server("200 NOOP ok");
    assert_eq!(t.client_bytes(), ["200 NOOP ok\r\n"]);

    // Passthrough: the client's PASV gets the server's real answer, not the injected one.
    let mut t = T::logged_in(reverse("    data: passthrough\n"));
    t.client("SYST");
    t.server("215 UNIX");
    t.server("227 Entering Passive Mode (203,0,113,66,4,1)");
    assert_eq!(t.client_bytes(), ["215 UNIX\r\n"]);
    t.client("PASV");
    t.server("227 Entering Passive Mode (198,18,0,2,117,49)");
    assert_eq!(
        t.client_bytes(),
        ["227 Entering Passive Mode (198,18,0,2,117,49)\r\n"]
    );
}

#[test]
fn a_227_after_150_is_not_the_transfers_completion() {
    let mut t = T::logged_in(reverse(""));
    start_download(&mut t);
    t.server("150 Opening");
    t.server("227 Entering Passive Mode (203,0,113,66,4,1)");
    assert_eq!(t.sent_client(), ["150 Opening\r\n"]);
    assert!(t.rejected(Rejection::UnsolicitedReply));
    t.take();
    t.m.handle(
        Event::TransferFinished(Ok(Moved {
            upload: 0,
            download: 5,
        })),
        t.now,
    );
    assert!(
        t.client_bytes().is_empty(),
        "the completion is still to come"
    );
    t.server("226 Done");
    assert_eq!(t.client_bytes(), ["226 Done\r\n"]);
}

#[test]
fn a_server_that_keeps_answering_nothing_is_disconnected() {
    let mut t = T::logged_in(reverse(""));
    for _ in 0..4 {
        t.server("200 nobody asked");
    }
    assert!(t.sent_client().is_empty());
    assert!(!t.closed());
    t.server("200 nobody asked");
    assert!(t.closed());
    assert!(starts(&t.sent_client(), "421 Service not available"));
    let unsolicited = t
        .actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Count(Count::Rejected(Rejection::UnsolicitedReply), _)
            )
        })
        .count();
    assert_eq!(unsolicited, 5);
}

#[test]
fn a_421_reaches_the_client_and_ends_the_session() {
    // Unrequested,
    let mut t = T::logged_in(reverse(""));
    t.server("421 Timeout, closing control connection.");
    assert_eq!(
        t.sent_client(),
        ["421 Timeout, closing control connection.\r\n"]
    );
    assert!(t.closed());
    assert!(!t.rejected(Rejection::UnsolicitedReply));
    // as an answer to a command,
    let mut t = T::logged_in(reverse(""));
    t.client("STAT");
    t.server("421 Shutting down");
    assert!(t.closed());
    assert_eq!(t.client_bytes(), ["421 Shutting down\r\n"]);
    // and to the proxy's own PASV in relay mode.
    let mut t = T::logged_in(reverse(""));
    client_pasv(&mut t, 50001);
    t.client("RETR f");
    t.take();
    t.server("421 Going away");
    assert!(t.closed());
    assert_eq!(t.client_bytes(), ["421 Going away\r\n"]);
}

#[test]
fn relay_mode_never_passes_a_servers_passive_address_on() {
    // Before login the client's PASV goes to the server; its 227 is withheld.
    let mut t = T::connected(reverse(""));
    t.client("PASV");
    t.server("227 Entering Passive Mode (203,0,113,66,117,49)");
    assert_eq!(
        t.client_bytes(),
        [
            "530 Please log in with USER and PASS first: the proxy sets up data connections itself.\r\n"
        ]
    );
    t.client("EPSV");
    t.server("229 Entering Extended Passive Mode (|||30001|)");
    assert!(starts(&t.client_bytes(), "530 "));
    // Nor as a forward target's greeting (found by the session fuzz target).
    let mut t = T::new(ctx(
        "    mode: forward\n    allow: [\"198.18.0.0/15\"]\n",
        LIMITS,
    ));
    t.client("USER a@198.18.0.2");
    t.connect_ok("198.18.0.2:21");
    t.take();
    t.server("227 Entering Passive Mode (203,0,113,66,117,49)");
    assert!(t.sent_client().is_empty());
    assert!(t.rejected(Rejection::UnsolicitedReply));
    t.server("220 hi");
    assert_eq!(t.sent_upstream(), ["USER a\r\n"]);
    // An unrequested 230 does not log anyone in.
    let mut t = T::connected(reverse(""));
    t.server("230 you are in");
    t.take();
    t.client("PASV");
    assert_eq!(t.sent_upstream(), ["PASV\r\n"]);
}

#[test]
fn the_address_of_a_continuation_line_is_never_used() {
    let mut t = T::logged_in(reverse("    upstream_data: passive\n"));
    client_pasv(&mut t, 50001);
    t.client("RETR f");
    t.take();
    t.server("227-Note (203,0,113,66,4,1)");
    t.server("227 Entering Passive Mode (198,18,0,2,117,49)");
    let acts = t.take();
    let targets: Vec<String> = acts
        .iter()
        .filter_map(|a| match a {
            Action::ConnectData(to) => Some(to.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(targets, ["198.18.0.2:30001"]);
}

// ---------------------------------------------------------------------------------------
// Self-target guard
// ---------------------------------------------------------------------------------------

/// A proxy whose admin endpoint listens on every address of a host that the test's
/// server (198.18.0.2) shares, with data ports 50000-50999.
fn guarded(extra: &str) -> Arc<Ctx> {
    let own = crate::net::OwnSockets::new(
        vec![
            "0.0.0.0:9464".parse().unwrap(),
            "127.0.0.1:2121".parse().unwrap(),
        ],
        "50000-50999".parse().unwrap(),
        None,
        vec![ip("198.18.0.2")],
    );
    ctx_guarded(
        &format!("    upstream: {SERVER}\n{extra}"),
        &format!("{LIMITS}fxp:\n  allow: [\"198.18.0.0/15\"]\n"),
        own,
    )
}

#[test]
fn a_servers_passive_address_naming_the_admin_endpoint_is_refused() {
    // The adversarial pass: a 227 with the admin port, so the client's STOR bytes would
    // be an HTTP request to the API.
    let mut t = T::logged_in(guarded("    upstream_data: passive\n"));
    client_pasv(&mut t, 50001);
    t.client("STOR job.http");
    t.take();
    t.server("227 Entering Passive Mode (198,18,0,2,36,248)");
    assert!(t.rejected(Rejection::SelfTarget));
    assert!(!t.has(|a| matches!(a, Action::ConnectData(_))));
    assert!(starts(
        &t.sent_client(),
        "425 Can't open data connection to the server: it announced 198.18.0.2:9464 is this proxy itself"
    ));
    assert!(!t.sent_upstream().iter().any(|l| l.starts_with("STOR")));
    // The proxy's own data ports, on its side of the upstream connection, likewise; in
    // `auto` the transfer goes on in active mode instead.
    let mut t = T::logged_in(guarded("    nat:\n      passive: never\n"));
    client_pasv(&mut t, 50001);
    t.client("RETR f");
    t.take();
    t.server("227 Entering Passive Mode (198,18,0,1,195,90)");
    assert!(t.rejected(Rejection::SelfTarget));
    assert!(!t.has(|a| matches!(a, Action::ConnectData(_))));
    assert!(t.has(|a| matches!(
        a,
        Action::Lease {
            slot: Slot::UpstreamActive,
            ..
        }
    )));
    // Someone else's port on the same host is fine.
    let mut t = T::logged_in(guarded("    upstream_data: passive\n"));
    client_pasv(&mut t, 50001);
    t.client("RETR f");
    t.take();
    t.server("227 Entering Passive Mode (198,18,0,2,117,49)");
    assert!(t.has(|a| matches!(a, Action::ConnectData(to) if to.port() == 30001)));
}

#[test]
fn forward_targets_and_fxp_destinations_that_are_the_proxy_are_refused() {
    let own = crate::net::OwnSockets::new(
        vec!["127.0.0.1:9464".parse().unwrap()],
        "50000-50999".parse().unwrap(),
        None,
        Vec::new(),
    );
    let c = ctx_guarded(
        "    mode: forward\n    allow: [\"127.0.0.0/8\"]\n",
        LIMITS,
        own,
    );
    let e = permitted(
        &c.policy,
        "127.0.0.1",
        "127.0.0.1:9464".parse().unwrap(),
        ip(PROXY),
    );
    assert!(
        matches!(e, Err(crate::net::ConnectError::SelfTarget(_))),
        "{e:?}"
    );
    assert!(
        permitted(
            &c.policy,
            "127.0.0.1",
            "127.0.0.1:21".parse().unwrap(),
            ip(PROXY)
        )
        .is_ok()
    );
    let mut t = T::new(c);
    t.client("USER anonymous@127.0.0.1:9464");
    t.take();
    t.m.handle(
        Event::Connected(Err(ConnectFailure::SelfTarget(
            "127.0.0.1:9464 is this proxy itself".into(),
        ))),
        t.now,
    );
    t.drain();
    assert!(t.rejected(Rejection::SelfTarget));
    assert!(starts(
        &t.sent_client(),
        "530 127.0.0.1 is not allowed through this proxy: 127.0.0.1:9464 is this proxy itself"
    ));
    assert!(!t.closed());

    let mut t = T::logged_in(guarded(""));
    t.client("SITE FXP TO ftp://u:p@198.18.0.2:9464/");
    assert!(t.rejected(Rejection::SelfTarget));
    assert!(starts(
        &t.sent_client(),
        "530 Not an FXP destination: 198.18.0.2:9464 is this proxy itself"
    ));
    t.take();
    t.client("SITE FXP PUT f");
    assert!(!t.has(|a| matches!(a, Action::StartFxp { .. })));
}

// ---------------------------------------------------------------------------------------
// Limits and shutdown
// ---------------------------------------------------------------------------------------

#[test]
fn login_and_idle_timeouts() {
    let mut t = T::connected(reverse(""));
    t.advance(Duration::from_secs(29));
    assert!(!t.closed());
    t.advance(Duration::from_secs(2));
    assert!(t.rejected(Rejection::LoginTimeout));
    assert!(starts(&t.sent_client(), "421 Login timed out"));

    let mut t = T::logged_in(reverse(""));
    t.advance(Duration::from_secs(299));
    t.client("NOOP");
    t.advance(Duration::from_secs(299));
    assert!(!t.closed());
    t.advance(Duration::from_secs(2));
    assert!(t.rejected(Rejection::IdleTimeout));
    assert!(starts(&t.sent_client(), "421 Idle timeout"));
}

#[test]
fn a_running_transfer_is_not_idle() {
    let mut t = T::logged_in(reverse(""));
    start_download(&mut t);
    t.advance(Duration::from_secs(3600));
    assert!(!t.closed());
    let mut t = T::logged_in(reverse("    data: passthrough\n"));
    t.client("RETR big");
    t.server("150 Opening");
    t.advance(Duration::from_secs(3600));
    assert!(!t.closed());
    t.server("226 Done");
    t.advance(Duration::from_secs(301));
    assert!(t.closed());
}

#[test]
fn bad_input_from_the_client() {
    let mut t = T::connected(reverse(""));
    t.m.handle(Event::ClientOverlong { max: 512 }, t.now);
    t.drain();
    assert!(t.rejected(Rejection::LineTooLong));
    assert!(starts(
        &t.sent_client(),
        "500 Command line too long (limit 512 bytes)"
    ));
    assert!(t.closed());

    let mut t = T::connected(reverse(""));
    for _ in 0..9 {
        t.client("!!");
        assert_eq!(
            t.client_bytes(),
            ["500 Syntax error, command unrecognized.\r\n"]
        );
    }
    t.client("!!");
    assert!(starts(&t.sent_client(), "421 Too many invalid commands"));
    assert!(t.closed());

    let mut t = T::connected(reverse(""));
    t.client("PROXY TCP4 1.2.3.4 5.6.7.8 1 2");
    assert!(t.rejected(Rejection::ProxyUntrusted));
    assert!(t.closed());
    let mut t = T::connected(reverse(""));
    t.client("AUTH TLS");
    assert!(t.rejected(Rejection::AuthTls));
    assert!(starts(&t.sent_client(), "534 "));
    assert!(!t.closed());
}

#[test]
fn bad_input_from_the_server() {
    let mut t = T::connected(reverse(""));
    t.server("this is no reply");
    assert!(t.rejected(Rejection::BadReply));
    assert!(t.closed());
    let mut t = T::connected(reverse(""));
    t.server("211-Features:");
    t.m.handle(Event::UpstreamClosed, t.now);
    t.drain();
    assert!(t.rejected(Rejection::TruncatedReply));
    assert!(starts(&t.sent_client(), "421 "));
    let mut t = T::connected(reverse(""));
    t.m.handle(Event::UpstreamClosed, t.now);
    assert_eq!(t.m.end_reason(), Some("upstream closed"));
}

#[test]
fn shutdown_says_421_once() {
    let mut t = T::logged_in(reverse(""));
    t.m.handle(Event::Stop, t.now);
    t.m.handle(Event::Stop, t.now);
    t.drain();
    assert_eq!(
        t.sent_client(),
        ["421 Service not available: the proxy is shutting down.\r\n"]
    );
    assert_eq!(t.m.end_reason(), Some("shutdown"));
    assert_eq!(t.m.poll_timeout(), None);
}

#[test]
fn an_operator_ending_the_session_says_so_once() {
    let mut t = T::logged_in(reverse(""));
    t.m.handle(Event::Ended, t.now);
    t.m.handle(Event::Ended, t.now);
    t.drain();
    assert_eq!(
        t.sent_client(),
        ["421 Service not available: an operator of this proxy ended the session.\r\n"]
    );
    assert_eq!(t.m.end_reason(), Some("ended by an operator"));
}

#[test]
fn feat_and_help_list_site_fxp() {
    let mut t = T::logged_in(reverse(""));
    t.client("FEAT");
    t.take();
    t.server("211-Features:");
    t.server(" EPSV");
    t.server("211 End");
    assert_eq!(
        t.client_bytes(),
        ["211-Features:\r\n EPSV\r\n SITE FXP\r\n211 End\r\n"]
    );
    t.client("HELP");
    t.take();
    t.server("214 Help OK.");
    assert!(starts(&t.client_bytes(), "214-SITE FXP TO <ftp-url>"));
}

// ---------------------------------------------------------------------------------------
// SITE FXP
// ---------------------------------------------------------------------------------------

fn site_ctx() -> Arc<Ctx> {
    ctx(
        &format!("    upstream: {SERVER}\n"),
        "fxp:\n  allow: [\"203.0.113.0/24\"]\n",
    )
}

/// `SITE FXP TO url`, its login checked by the shell with `result`: the check's URL.
fn choose(t: &mut T, url: &str, result: Result<(), Failure>) -> crate::fxp::url::FtpUrl {
    t.client(&format!("SITE FXP TO {url}"));
    let checked = t.take().into_iter().find_map(|a| match a {
        Action::CheckFxpDestination { url, .. } => Some(url),
        _ => None,
    });
    let checked = checked.expect("the destination is logged in to");
    // Nothing is answered before the login's outcome.
    assert!(t.sent_client().is_empty());
    t.m.handle(Event::FxpChecked(result), t.now);
    checked
}

/// Logged in, B chosen, a copy of `big.bin` started.
fn copying() -> T {
    let mut t = T::logged_in(site_ctx());
    choose(&mut t, "ftp://u:pw@203.0.113.5/in/", Ok(()));
    assert_eq!(
        t.client_bytes(),
        ["200 FXP destination set to ftp://u:***@203.0.113.5/in/ (login checked).\r\n"]
    );
    t.client("SITE FXP PUT big.bin");
    let acts = t.take();
    let start = acts.iter().find_map(|a| match a {
        Action::StartFxp {
            src,
            dst,
            rules,
            recursive: false,
        } => Some((src.clone(), dst.clone(), rules.allow.clone())),
        _ => None,
    });
    let (src, dst, allow) = start.expect("a copy starts");
    assert_eq!(
        (src.host.as_str(), src.port, src.password.as_deref()),
        ("198.18.0.2", 21, Some("secret"))
    );
    assert_eq!(dst.host, "203.0.113.5");
    // The engine may reach A and fxp.allow, nothing else.
    assert!(allow.admits("198.18.0.2", ip("198.18.0.2")).is_ok());
    assert!(allow.admits("203.0.113.5", ip("203.0.113.77")).is_ok());
    let e = allow.admits("192.0.2.1", ip("192.0.2.1")).unwrap_err();
    assert_eq!(e.to_string(), "192.0.2.1 is not in fxp.allow");
    t
}

#[test]
fn site_fxp_paths_stay_bytes() {
    let mut t = T::logged_in(site_ctx());
    t.m.handle(
        Event::ClientLine(Bytes::from_static(
            b"SITE FXP TO ftp://u:pw@203.0.113.5/caf\xe9/\r\n",
        )),
        t.now,
    );
    t.take();
    t.m.handle(Event::FxpChecked(Ok(())), t.now);
    assert_eq!(
        t.client_bytes(),
        ["200 FXP destination set to ftp://u:***@203.0.113.5/caf%E9/ (login checked).\r\n"]
    );
    t.m.handle(
        Event::ClientLine(Bytes::from_static(b"SITE FXP PUT d\xe9j\xe0.bin \xff\r\n")),
        t.now,
    );
    let (src, dst) = t
        .take()
        .into_iter()
        .find_map(|a| match a {
            Action::StartFxp { src, dst, .. } => Some((src, dst)),
            _ => None,
        })
        .expect("a copy starts");
    assert_eq!(src.path, b"d\xe9j\xe0.bin");
    assert_eq!(dst.path, b"caf\xe9/\xff");
    copy_ends(&mut t, Err(Failure::new(FailureKind::Other, "x")));
    t.take();
    t.client("SITE FXP TO ftp://u:pw@203.0.113.5/100%zz");
    assert!(starts(
        &t.client_bytes(),
        "501 Not an FTP URL: `%` must be followed"
    ));
}

#[test]
fn site_fxp_needs_a_login_and_a_destination() {
    let mut t = T::connected(site_ctx());
    t.client("SITE FXP TO ftp://u:pw@203.0.113.5/");
    assert_eq!(
        t.client_bytes(),
        ["530 Please log in with USER and PASS first.\r\n"]
    );
    let mut t = T::logged_in(site_ctx());
    t.client("SITE FXP PUT x");
    assert!(starts(
        &t.client_bytes(),
        "503 Choose the other server first"
    ));
    t.client("SITE FXP TO not-a-url");
    assert!(starts(&t.client_bytes(), "501 Not an FTP URL"));
    t.client("SITE FXP FROB");
    assert!(starts(&t.client_bytes(), "501 Usage: SITE FXP TO"));
    t.client("SITE CHMOD 644 f");
    assert_eq!(t.sent_upstream(), ["SITE CHMOD 644 f\r\n"]);
}

#[test]
fn site_fxp_to_outside_the_allow_list_is_refused_at_once() {
    let mut t = T::logged_in(site_ctx());
    t.client("SITE FXP TO ftp://u:pw@192.0.2.1/in/");
    // No login is tried: the answer comes with the command.
    assert!(!t.has(|a| matches!(a, Action::CheckFxpDestination { .. })));
    assert_eq!(
        t.sent_client(),
        ["530 Not an FXP destination: 192.0.2.1 is not in fxp.allow.\r\n"]
    );
    t.take();
    t.client("SITE FXP PUT x");
    assert!(starts(
        &t.client_bytes(),
        "503 Choose the other server first"
    ));
}

#[test]
fn site_fxp_to_answers_the_login_check() {
    let mut t = T::logged_in(site_ctx());
    choose(&mut t, "ftp://u:pw@203.0.113.5/", Ok(()));
    t.take();
    // A wrong password: 530, and the destination chosen before is gone.
    // As the binary's engine words a refused PASS (its own tests hold it to this).
    let refused = Failure {
        message: "destination 203.0.113.5:21: PASS refused: 530 Login incorrect.".into(),
        ..failed(FailureKind::LoginRefused, Some(530), true)
    };
    choose(&mut t, "ftp://u:bad@203.0.113.5/", Err(refused));
    assert_eq!(
        t.client_bytes(),
        [
            "530 FXP destination ftp://u:***@203.0.113.5/: destination 203.0.113.5:21: PASS refused: 530 Login incorrect.\r\n"
        ]
    );
    t.client("SITE FXP PUT x");
    assert!(starts(
        &t.client_bytes(),
        "503 Choose the other server first"
    ));
    // Unreachable: temporary, 451.
    let down = failed(FailureKind::Unreachable, None, false);
    choose(&mut t, "ftp://u:pw@203.0.113.5/", Err(down));
    assert!(starts(&t.client_bytes(), "451 FXP destination"));
    // While the check runs: STAT says so, ABOR cancels it.
    t.client("SITE FXP TO ftp://u:pw@203.0.113.5/");
    t.take();
    t.client("STAT");
    assert!(t.client_bytes()[0].starts_with("211-Logging in to the FXP destination"));
    t.client("ABOR");
    assert!(t.has(|a| matches!(a, Action::CancelFxp)));
    assert_eq!(
        t.sent_client(),
        [
            "426 FXP destination check aborted; no destination chosen.\r\n",
            "226 ABOR command successful.\r\n"
        ]
    );
    t.take();
    t.m.handle(Event::FxpChecked(Ok(())), t.now);
    assert!(t.client_bytes().is_empty(), "a late check changes nothing");
    t.client("SITE FXP PUT x");
    assert!(starts(
        &t.client_bytes(),
        "503 Choose the other server first"
    ));
}

#[test]
fn site_fxp_failures_map_to_one_set_of_codes() {
    use super::site::{Stage, answer};
    use crate::session::replies::FxpAnswer as A;
    use FailureKind as K;
    // Each failure as the binary's engine reports it (`fxp::error`'s tests hold the
    // engine to these kinds, codes and verdicts).
    let denied = || failed(K::NotAllowed, None, true);
    let refused = |kind, code| failed(kind, Some(code), code / 100 == 5);
    let timeout = failed(K::Timeout, None, false);
    let cases = [
        (Stage::Destination, denied(), A::NotAllowed, 530),
        (
            Stage::Destination,
            refused(K::LoginRefused, 530),
            A::LoginRefused,
            530,
        ),
        (
            Stage::Destination,
            refused(K::Refused, 550),
            A::Permanent,
            550,
        ),
        (
            Stage::Destination,
            refused(K::LoginRefused, 421),
            A::Temporary,
            451,
        ),
        (Stage::Destination, timeout, A::Temporary, 451),
        // During a copy a 530 would read as the client's own session ending.
        (Stage::Copy, denied(), A::Permanent, 550),
        (
            Stage::Copy,
            refused(K::LoginRefused, 530),
            A::Permanent,
            550,
        ),
        (Stage::Copy, refused(K::Refused, 550), A::Permanent, 550),
        (Stage::Copy, stalled(), A::Temporary, 451),
    ];
    for (stage, e, want, code) in cases {
        let got = answer(stage, &e);
        assert_eq!((got, got.code()), (want, code), "{stage:?} {e:?}");
    }
}

#[test]
fn site_fxp_put_and_get_take_r_for_trees() {
    let mut t = T::logged_in(site_ctx());
    choose(&mut t, "ftp://u:pw@203.0.113.5/in/", Ok(()));
    t.take();
    t.client("SITE FXP PUT -r pub/tree copied");
    let start = t.take().into_iter().find_map(|a| match a {
        Action::StartFxp {
            src,
            dst,
            recursive,
            ..
        } => Some((src, dst, recursive)),
        _ => None,
    });
    let (src, dst, recursive) = start.expect("a tree copy starts");
    assert!(recursive);
    assert_eq!(
        (src.path.as_slice(), dst.path.as_slice()),
        (&b"pub/tree"[..], &b"in/copied"[..])
    );
    assert_eq!(src.host, "198.18.0.2");
    job(&mut t, tree_planned(3));
    job(&mut t, file_ended(0, Ok(())));
    t.client("STAT");
    assert!(t.client_bytes()[0].contains(" 1 of 3 files copied."));
    job(&mut t, file_ended(1, Ok(())));
    job(&mut t, file_ended(2, Ok(())));
    job(&mut t, finished());
    assert!(starts(
        &t.client_bytes(),
        "226 FXP tree copied 3 files in 1 directories"
    ));
    // GET -r: from B to A.
    t.client("SITE FXP GET -r tree");
    let start = t.take().into_iter().find_map(|a| match a {
        Action::StartFxp { src, recursive, .. } => Some((src, recursive)),
        _ => None,
    });
    let (src, recursive) = start.expect("a tree copy starts");
    assert!(recursive && src.host == "203.0.113.5" && src.path == b"in/tree");
    job(&mut t, tree_planned(2));
    job(&mut t, file_ended(0, Ok(())));
    job(
        &mut t,
        file_ended(1, Err(Failure::new(FailureKind::Other, "553 no"))),
    );
    job(&mut t, finished());
    assert!(starts(&t.client_bytes(), "451 FXP tree copied 1 files"));
    // `-r` alone is not a file name.
    t.client("SITE FXP PUT -r");
    assert!(starts(&t.client_bytes(), "501 Usage: SITE FXP TO"));
}

#[test]
fn stat_during_a_copy_reports_progress() {
    let mut t = copying();
    t.client("STAT");
    assert_eq!(
        t.client_bytes(),
        [
            "211-FXP copy in progress: ftp://u:***@198.18.0.2/big.bin to ftp://u:***@203.0.113.5/in/.\r\n 0 bytes so far.\r\n211 End\r\n"
        ]
    );
    job(&mut t, JobEvent::Started { entry: 0 });
    job(
        &mut t,
        JobEvent::File {
            entry: 0,
            event: FileEvent::Bytes {
                done: 4096,
                total: Some(8192),
            },
        },
    );
    t.client("STAT");
    assert!(t.client_bytes()[0].contains(" 4096 bytes so far of 8192."));
    t.client("LIST");
    assert!(starts(&t.client_bytes(), "503 A SITE FXP copy is running"));
    t.client("NOOP");
    assert_eq!(t.client_bytes(), ["200 NOOP ok.\r\n"]);
    // Waiting on a long copy is not idling.
    t.advance(Duration::from_secs(3600));
    assert!(!t.closed());
    let report = Report {
        method: Method::Fxp,
        bytes: 8192,
        relayed_bytes: 0,
        resumed_from: 0,
        attempts: 1,
        duration: Duration::from_millis(1500),
        verified: Check::Size,
    };
    copy_ends(&mut t, Ok(report));
    t.drain();
    assert_eq!(
        t.sent_client(),
        ["226 FXP copy done: 8192 bytes by fxp in 1.50 s.\r\n"]
    );
    t.take();
    t.client("SITE FXP STATUS");
    assert!(t.client_bytes()[0].contains("Last copy: FXP copy done: 8192 bytes"));
}

#[test]
fn abor_cancels_a_copy_and_the_session_goes_on() {
    let mut t = copying();
    t.client("ABOR");
    assert!(t.has(|a| matches!(a, Action::CancelFxp)));
    assert_eq!(
        t.sent_client(),
        [
            "426 FXP copy aborted.\r\n",
            "226 ABOR command successful.\r\n"
        ]
    );
    assert!(t.sent_upstream().is_empty());
    t.take();
    // The engine's late word changes nothing.
    copy_ends(
        &mut t,
        Err(Failure::new(FailureKind::Cancelled, "interrupted")),
    );
    assert!(t.client_bytes().is_empty());
    t.client("PWD");
    assert_eq!(t.sent_upstream(), ["PWD\r\n"]);
}

#[test]
fn a_failed_copy_answers_451_or_550() {
    let mut t = copying();
    copy_ends(&mut t, Err(stalled()));
    assert!(starts(
        &t.client_bytes(),
        "451 FXP copy failed: no progress"
    ));
}

#[test]
fn shutdown_and_a_closing_server_end_a_copy() {
    let mut t = copying();
    t.m.handle(Event::Stop, t.now);
    t.drain();
    assert!(starts(
        &t.sent_client(),
        "421 Service not available: the proxy is shutting down."
    ));
    assert!(t.closed());
    let mut t = copying();
    t.m.handle(Event::UpstreamClosed, t.now);
    assert_eq!(t.m.end_reason(), Some("upstream closed"));
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

const SECRET: &str = "s3cr3t-Pa55";

fn client_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"USER u\r\n".to_vec()),
        Just(format!("PASS {SECRET}\r\n").into_bytes()),
        Just(format!("ACCT {SECRET}\r\n").into_bytes()),
        Just(b"PASV\r\n".to_vec()),
        Just(b"EPSV\r\n".to_vec()),
        Just(b"EPSV ALL\r\n".to_vec()),
        Just(b"PORT 198,51,100,7,4,1\r\n".to_vec()),
        Just(b"PORT 10,0,0,1,0,21\r\n".to_vec()),
        Just(b"EPRT |2|::1|5000|\r\n".to_vec()),
        Just(b"RETR f\r\n".to_vec()),
        Just(b"STOR f\r\n".to_vec()),
        Just(b"ABOR\r\n".to_vec()),
        Just(b"REIN\r\n".to_vec()),
        Just(b"STAT\r\n".to_vec()),
        Just(b"FEAT\r\n".to_vec()),
        Just(format!("SITE FXP TO ftp://u:{SECRET}@203.0.113.5/\r\n").into_bytes()),
        Just(b"SITE FXP PUT a b\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

fn server_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"220 hi\r\n".to_vec()),
        Just(b"230 in\r\n".to_vec()),
        Just(b"331 pass\r\n".to_vec()),
        Just(b"150 open\r\n".to_vec()),
        Just(b"226 done\r\n".to_vec()),
        Just(b"200 ok\r\n".to_vec()),
        Just(b"227 Entering Passive Mode (10,0,0,1,117,49)\r\n".to_vec()),
        Just(b"227 Entering Passive Mode (1,2,3,4,0,22)\r\n".to_vec()),
        Just(b"229 Entering Extended Passive Mode (|||30001|)\r\n".to_vec()),
        Just(b"211-Features:\r\n".to_vec()),
        Just(b"211 End\r\n".to_vec()),
        Just(b"502 no\r\n".to_vec()),
        Just(b"426 aborted\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

#[derive(Debug, Clone)]
enum Input {
    Client(Vec<u8>),
    Server(Vec<u8>),
    Connected(bool),
    Leased(bool),
    DataConnected(bool),
    Resolved,
    TransferDone(bool),
    FxpDone,
    FxpChecked(bool),
    Tick(u16),
    ServerClosed,
    ServerBroke,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        4 => client_line().prop_map(Input::Client),
        4 => server_line().prop_map(Input::Server),
        1 => any::<bool>().prop_map(Input::Connected),
        1 => any::<bool>().prop_map(Input::Leased),
        1 => any::<bool>().prop_map(Input::DataConnected),
        1 => Just(Input::Resolved),
        1 => any::<bool>().prop_map(Input::TransferDone),
        1 => Just(Input::FxpDone),
        1 => any::<bool>().prop_map(Input::FxpChecked),
        1 => any::<u16>().prop_map(Input::Tick),
        1 => Just(Input::ServerClosed),
        1 => Just(Input::ServerBroke),
    ]
}

fn listener_variant() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(format!("    upstream: {SERVER}\n")),
        Just(format!("    upstream: {SERVER}\n    data: passthrough\n")),
        Just(format!(
            "    upstream: {SERVER}\n    upstream_data: active\n"
        )),
        Just("    mode: forward\n    allow: [\"198.18.0.0/15\"]\n".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the two peers send, in whatever order, the machine does not panic, and a
    /// password reaches nobody but the server.
    #[test]
    fn arbitrary_interleavings_never_panic_or_leak_a_password(
        listener in listener_variant(),
        inputs in proptest::collection::vec(input(), 0..60),
    ) {
        let c = ctx(&listener, "fxp:\n  allow: [\"203.0.113.0/24\"]\n");
        let mut now = Instant::now();
        let mut m = Machine::new(c.policy.clone(), ip(CLIENT), ip(PROXY), None, now);
        let check = |m: &mut Machine| {
            while let Some(a) = m.poll_action() {
                if let Action::ToClient(b) = &a {
                    prop_assert!(!String::from_utf8_lossy(b).contains(SECRET), "{:?}", String::from_utf8_lossy(b));
                }
                if let Action::StartFxp { dst, .. } = &a {
                    prop_assert!(!dst.to_string().contains(SECRET));
                }
            }
            Ok(())
        };
        check(&mut m)?;
        for i in inputs {
            match i {
                Input::Client(l) => m.handle(Event::ClientLine(l.into()), now),
                Input::Server(l) => m.handle(Event::UpstreamLine(l.into()), now),
                Input::Connected(ok) => m.handle(Event::Connected(if ok {
                        Ok(Connected { peer: SERVER.parse().unwrap(), local: ip("198.18.0.1"), refuses_passive: false })
                    } else {
                        Err(ConnectFailure::Denied("no".into()))
                    }), now),
                Input::Leased(ok) => {
                    let r = if ok { Ok(50001) } else { Err(exhausted()) };
                    m.handle(Event::Leased { slot: Slot::ClientPassive, result: r }, now);
                }
                Input::DataConnected(ok) => m.handle(Event::DataConnected(if ok { Ok(()) } else { Err(DataConnectError::Timeout) }), now),
                Input::Resolved => m.handle(Event::Resolved(Ok(vec![ip("203.0.113.7")])), now),
                Input::TransferDone(ok) => m.handle(Event::TransferFinished(if ok { Ok(Moved { upload: 1, download: 0 }) } else { Err("broke".into()) }), now),
                Input::FxpDone => m.handle(Event::FxpJob(JobEvent::Finished { error: Some(Failure::new(FailureKind::Other, "x")), took: Duration::ZERO }), now),
                Input::FxpChecked(ok) => m.handle(Event::FxpChecked(if ok { Ok(()) } else { Err(Failure::new(FailureKind::Other, "x")) }), now),
                Input::Tick(s) => {
                    now += Duration::from_secs(u64::from(s % 400));
                    if m.poll_timeout().is_some_and(|t| t <= now) {
                        m.handle_timeout(now);
                    }
                }
                Input::ServerClosed => m.handle(Event::UpstreamClosed, now),
                Input::ServerBroke => m.handle(Event::UpstreamError("corrupt message".into()), now),
            }
            check(&mut m)?;
        }
    }
}

// ---------------------------------------------------------------------------------------
// FTPS
// ---------------------------------------------------------------------------------------

/// A listener with a `tls:` block. The machine holds the settings only: the files they
/// name are the shell's to read, and need not exist here.
fn tls_ctx(client: &str, upstream: &str, extra: &str) -> (Arc<Ctx>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let listener = format!(
        "    upstream: {SERVER}\n    tls:\n      client: {{mode: {client}, cert: {}, key: {}}}\n      upstream: {{mode: {upstream}{extra}}}\n",
        cert.display(),
        key.display()
    );
    (ctx(&listener, LIMITS), dir)
}

#[test]
fn explicit_tls_secures_the_server_leg_first_then_the_client() {
    let (c, _dir) = tls_ctx("explicit", "mirror", "");
    let mut t = T::connected(c);
    t.client("FEAT");
    t.take();
    t.server("211-Features:");
    t.server(" AUTH TLS");
    t.server(" EPSV");
    t.server(" PBSZ");
    t.server("211 End");
    assert_eq!(
        t.client_bytes(),
        ["211-Features:\r\n EPSV\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n SITE FXP\r\n211 End\r\n"]
    );
    t.client("AUTH TLS");
    assert_eq!(t.sent_upstream(), ["AUTH TLS\r\n"]);
    assert!(t.sent_client().is_empty());
    assert!(!t.m.wants_client_input());
    t.take();
    t.server("234 Proceed");
    let acts = t.take();
    assert!(
        acts.iter().any(
            |a| matches!(a, Action::UpgradeUpstream { server_name } if server_name == "198.18.0.2")
        ),
        "{acts:?}"
    );
    t.m.handle(
        Event::UpstreamSecured {
            result: Ok(()),
            discarded: 0,
        },
        t.now,
    );
    t.drain();
    assert_eq!(
        t.sent_client(),
        ["234 AUTH TLS successful; go ahead with the TLS handshake.\r\n"]
    );
    assert!(t.has(|a| matches!(a, Action::UpgradeClient)));
    t.take();
    // What the client pipelined in clear behind AUTH TLS was dropped by the shell.
    t.m.handle(
        Event::ClientSecured {
            result: Ok(()),
            discarded: 13,
        },
        t.now,
    );
    t.drain();
    assert!(t.rejected(Rejection::TlsPipelined));
    t.client("PROT P");
    assert!(starts(&t.client_bytes(), "503 Send PBSZ 0 before PROT"));
    t.client("PBSZ 0");
    assert_eq!(t.client_bytes(), ["200 PBSZ=0\r\n"]);
    t.client("PROT P");
    assert_eq!(
        t.client_bytes(),
        ["200 Protection level set to Private.\r\n"]
    );
    t.client("USER u");
    t.server("331 pass");
    t.client("PASS p");
    t.server("230 in");
    t.take();
    client_pasv(&mut t, 50001);
    t.client("RETR f");
    // The server's data connection must be protected too: it is told so first.
    assert_eq!(t.sent_upstream(), ["PBSZ 0\r\nPROT P\r\n"]);
    t.take();
    t.server("200 PBSZ=0");
    t.server("200 PROT now Private");
    assert_eq!(t.sent_upstream(), ["PASV\r\n"]);
    t.take();
    t.server("227 Entering Passive Mode (198,18,0,2,117,49)");
    t.m.handle(Event::DataConnected(Ok(())), t.now);
    t.drain();
    assert!(t.has(|a| matches!(
        a,
        Action::StartTransfer {
            client_tls: true,
            upstream_tls: true,
            ..
        }
    )));
}

#[test]
fn a_server_that_refuses_tls_is_reported_to_a_mirroring_client() {
    let (c, _dir) = tls_ctx("explicit", "mirror", "");
    let mut t = T::connected(c);
    t.client("AUTH TLS");
    t.take();
    t.server("502 No TLS here");
    assert!(starts(
        &t.client_bytes(),
        "534 The FTP server behind this proxy refused TLS (502 No TLS here)"
    ));
    assert!(t.m.wants_client_input());
    assert!(!t.closed());
}

#[test]
fn required_tls_refuses_a_clear_login() {
    let (c, _dir) = tls_ctx("required", "off", "");
    let mut t = T::connected(c);
    t.client("USER u");
    assert!(t.rejected(Rejection::TlsRequired));
    assert!(starts(&t.sent_client(), "530 This proxy requires TLS"));
    assert!(t.sent_upstream().is_empty());
    t.take();
    // Upstream off: the client leg alone turns to TLS.
    t.client("AUTH TLS");
    assert!(t.has(|a| matches!(a, Action::UpgradeClient)));
    assert!(t.sent_upstream().is_empty());
    t.take();
    t.m.handle(
        Event::ClientSecured {
            result: Ok(()),
            discarded: 0,
        },
        t.now,
    );
    t.drain();
    assert!(!t.rejected(Rejection::TlsPipelined));
    t.client("USER u");
    assert_eq!(t.sent_upstream(), ["USER u\r\n"]);
    t.take();
    t.client("CCC");
    assert!(starts(&t.client_bytes(), "534 CCC refused"));
    t.client("PBSZ 0");
    t.client("PROT S");
    assert!(starts(&t.client_bytes()[1..], "536 "));
}

#[test]
fn an_explicit_upstream_gets_auth_tls_before_the_login() {
    let (c, _dir) = tls_ctx("off", "explicit", ", server_name: ftp.internal.test");
    let mut t = T::new(c);
    let acts = t.take();
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Connect(r) if r.tls.is_none()))
    );
    t.connect_ok(SERVER);
    t.server("220 hi");
    assert_eq!(t.sent_client(), ["220 hi\r\n"]);
    assert_eq!(t.sent_upstream(), ["AUTH TLS\r\n"]);
    t.take();
    // The client's login waits until the server's leg is secure.
    t.client("USER u");
    assert!(t.take().is_empty());
    t.server("234 go");
    assert!(t.has(|a| matches!(a, Action::UpgradeUpstream { server_name } if server_name == "ftp.internal.test")));
    t.take();
    t.m.handle(
        Event::UpstreamSecured {
            result: Ok(()),
            discarded: 0,
        },
        t.now,
    );
    t.drain();
    assert_eq!(t.sent_upstream(), ["USER u\r\n"]);
    // A plain client asking for TLS is refused: its leg is off.
    t.take();
    t.client("AUTH TLS");
    assert!(starts(&t.client_bytes(), "534 "));
}

#[test]
fn an_untrusted_server_certificate_ends_the_session() {
    let (c, _dir) = tls_ctx("off", "explicit", "");
    let mut t = T::connected(c);
    t.take();
    t.server("234 go");
    t.m.handle(
        Event::UpstreamSecured {
            result: Err("invalid peer certificate: UnknownIssuer".into()),
            discarded: 0,
        },
        t.now,
    );
    t.drain();
    assert!(t.rejected(Rejection::UpstreamTls));
    assert!(starts(
        &t.sent_client(),
        "421 Service not available: TLS with the FTP server"
    ));
    assert!(t.closed());
}

#[test]
fn a_broken_upstream_connection_is_told_to_the_client() {
    let (c, _dir) = tls_ctx("off", "explicit", "");
    let mut t = T::connected(c);
    t.take();
    t.server("234 go");
    t.m.handle(
        Event::UpstreamSecured {
            result: Ok(()),
            discarded: 0,
        },
        t.now,
    );
    t.take();
    // vsftpd's `500 OOPS` in clear inside the TLS stream.
    t.m.handle(
        Event::UpstreamError("received corrupt message of type InvalidContentType".into()),
        t.now,
    );
    t.drain();
    assert!(t.rejected(Rejection::UpstreamTls));
    assert!(starts(
        &t.sent_client(),
        "421 Service not available: TLS with the FTP server behind this proxy broke."
    ));
    assert!(t.closed());
    // Plain TCP: a reset.
    let mut t = T::logged_in(reverse(""));
    t.m.handle(
        Event::UpstreamError("Connection reset by peer (os error 104)".into()),
        t.now,
    );
    t.drain();
    assert!(starts(
        &t.sent_client(),
        "421 Service not available: the connection"
    ));
    assert!(!t.rejected(Rejection::UpstreamTls));
    assert!(t.closed());
}

#[test]
fn implicit_tls_on_both_legs() {
    let (c, _dir) = tls_ctx("implicit", "mirror", "");
    let mut t = T::new(c);
    let acts = t.take();
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Connect(r) if r.tls.as_deref() == Some("198.18.0.2"))),
        "{acts:?}"
    );
    t.connect_ok(SERVER);
    t.server("220 hi");
    t.take();
    // The client's leg was secured by the shell before the session began.
    t.client("PBSZ 0");
    assert_eq!(t.client_bytes(), ["200 PBSZ=0\r\n"]);
    t.client("AUTH TLS");
    assert!(starts(
        &t.client_bytes(),
        "503 This connection is already protected"
    ));
}

#[test]
fn clear_upstream_data_policy_leaves_the_server_leg_clear() {
    let (c, _dir) = tls_ctx("explicit", "explicit", ", data: clear");
    let mut t = T::connected(c);
    t.server("234 go");
    t.m.handle(
        Event::UpstreamSecured {
            result: Ok(()),
            discarded: 0,
        },
        t.now,
    );
    t.client("AUTH TLS");
    t.m.handle(
        Event::ClientSecured {
            result: Ok(()),
            discarded: 0,
        },
        t.now,
    );
    t.client("PBSZ 0");
    t.client("PROT P");
    t.client("USER u");
    t.server("331 p");
    t.client("PASS p");
    t.server("230 in");
    t.take();
    client_pasv(&mut t, 50001);
    t.client("STOR f");
    assert_eq!(t.sent_upstream(), ["PBSZ 0\r\nPROT C\r\n"]);
    t.take();
    t.server("200 ok");
    t.server("534 PROT C refused");
    assert!(starts(
        &t.sent_client(),
        "425 Can't open data connection to the server: it refused PROT C: 534"
    ));
}

#[test]
fn without_a_tls_block_pbsz_and_prot_go_to_the_server() {
    let mut t = T::connected(reverse(""));
    t.client("PBSZ 0");
    t.client("AUTH TLS");
    assert_eq!(t.sent_upstream(), ["PBSZ 0\r\n"]);
    assert!(t.rejected(Rejection::AuthTls));
}

#[test]
fn the_snapshot_follows_login_and_transfers() {
    let mut t = T::connected(reverse(""));
    assert_eq!(t.m.snapshot().upstream.as_deref(), Some(SERVER));
    t.client("USER alice");
    t.server("331 pass");
    t.client("PASS secret");
    let before = t.m.snapshot();
    assert_eq!(before.user.as_deref(), Some("alice"));
    assert!(!before.logged_in);
    t.server("230 in");
    t.take();
    assert!(t.m.snapshot().logged_in);
    start_download(&mut t);
    assert_eq!(
        t.m.snapshot().transfer,
        Some(("RETR".to_string(), "f".to_string()))
    );
    t.server("226 Done");
    t.m.handle(
        Event::TransferFinished(Ok(Moved {
            upload: 0,
            download: 5,
        })),
        t.now,
    );
    t.drain();
    let after = t.m.snapshot();
    assert_eq!(after.transfer, None);
    assert_eq!((after.download_bytes, after.transfers), (5, 1));
    // A failed one counts as a transfer, with no bytes.
    start_download(&mut t);
    t.m.handle(Event::TransferFinished(Err("broke".into())), t.now);
    t.server("226 Done");
    let s = t.m.snapshot();
    assert_eq!((s.download_bytes, s.transfers, s.transfer), (5, 2, None));
}

#[test]
fn a_passthrough_transfer_runs_until_its_final_reply() {
    let mut t = T::logged_in(reverse("    data: passthrough\n"));
    t.client("RETR big.iso");
    assert_eq!(
        t.m.snapshot().transfer,
        Some(("RETR".to_string(), "big.iso".to_string()))
    );
    t.server("150 Opening");
    assert!(t.m.snapshot().transfer.is_some(), "a 1xx is not the end");
    t.server("226 Done");
    let s = t.m.snapshot();
    assert_eq!((s.transfer, s.transfers), (None, 1));
    // Before the login nothing is a transfer yet.
    let mut t = T::connected(reverse("    data: passthrough\n"));
    t.client("RETR x");
    assert_eq!(t.m.snapshot().transfer, None);
}

// ---------------------------------------------------------------------------------------
// Pools of upstreams
// ---------------------------------------------------------------------------------------

fn pooled(extra: &str) -> Arc<Ctx> {
    let yaml = format!(
        "{LIMITS}listeners:\n  - name: t\n    bind: 127.0.0.1:2121\n    upstream: [198.18.0.2:21, 198.18.0.3:21, 198.18.0.4:21]\n{extra}"
    );
    let cfg = Config::parse(&yaml).unwrap();
    Ctx::new(Policy::of(&cfg, &cfg.listeners[0], Arc::default()))
}

fn connect_target(actions: &[Action]) -> String {
    let targets: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Connect(req) => Some(req.target.to_string()),
            _ => None,
        })
        .collect();
    match targets.as_slice() {
        [one] => one.clone(),
        _ => panic!("expected one Connect, got {actions:?}"),
    }
}

#[test]
fn a_pooled_session_connects_to_the_chosen_backend_and_skips_one_that_fails() {
    let ctx = pooled("    balance: round_robin\n");
    let mut t = T::new(ctx.clone());
    let first = connect_target(&t.take());
    t.m.handle(
        Event::Connected(Err(ConnectFailure::Unreachable("refused".into()))),
        t.now,
    );
    let second = connect_target(&t.take());
    assert_ne!(first, second, "the next backend, not the failed one again");
    t.connect_ok(&second);
    t.server("220 hi");
    assert_eq!(t.client_bytes(), ["220 hi\r\n"]);
    // The pool heard of the failure (it counts toward the backend's `fall`), and the
    // session holds the one it reached.
    let failed = ctx.failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 1);
    let first_index = ctx.policy.cfg.pool.as_ref().unwrap().backends[failed[0].0]
        .address
        .to_string();
    assert_eq!((first_index, failed[0].1.as_str()), (first, "refused"));
    assert_eq!(
        t.backend.as_ref().map(|b| b.target.to_string()),
        Some(second)
    );
}

#[test]
fn a_pool_that_is_all_down_answers_421_at_once() {
    let ctx = pooled("    health_check: {fall: 1}\n");
    ctx.down.lock().unwrap().extend(0..3);
    let mut t = T::new(ctx);
    let actions = t.take();
    assert!(!actions.iter().any(|a| matches!(a, Action::Connect(_))));
    let text: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::ToClient(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect();
    assert!(
        text[0].starts_with("421 ") && text[0].contains("down"),
        "{text:?}"
    );
    assert!(matches!(actions.last(), Some(Action::Close)));
}

#[test]
fn balance_user_greets_then_chooses_by_the_user_name() {
    let ctx = pooled("    balance: user\n");
    for _ in 0..3 {
        let mut t = T::new(ctx.clone());
        assert_eq!(t.client_bytes(), ["220 fxprelay FTP proxy ready.\r\n"]);
        t.client("PWD");
        assert!(t.client_bytes()[0].starts_with("530 "));
        t.client("USER alice");
        let actions = t.take();
        let by_name = |a: &Action| matches!(a, Action::ChooseBackend { user: Some(u), .. } if u.as_slice() == b"alice");
        assert!(actions.iter().any(by_name), "{actions:?}");
        let target = connect_target(&actions);
        t.connect_ok(&target);
        // The server's greeting is taken in place of the proxy's; USER goes on.
        t.server("220 server");
        let actions = t.take();
        assert!(!actions.iter().any(|a| matches!(a, Action::ToClient(_))));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::ToUpstream(b) if b.as_slice() == b"USER alice\r\n"))
        );
        t.server("331 pass");
        assert_eq!(t.client_bytes(), ["331 pass\r\n"]);
    }
}

// ---------------------------------------------------------------------------------------
// Requests to the shell's services, and what the machine decides for its tasks
// ---------------------------------------------------------------------------------------

#[test]
fn a_passive_refusal_is_remembered_through_the_shell_and_kept_for_the_session() {
    let mut t = T::logged_in(reverse(""));
    client_pasv(&mut t, 50001);
    t.client("STOR f");
    t.take();
    t.server("502 No passive mode here");
    let server: SocketAddr = SERVER.parse().unwrap();
    assert!(t.has(|a| matches!(a, Action::RememberPassiveRefusal(s) if *s == server)));
    t.m.handle(
        Event::Leased {
            slot: Slot::UpstreamActive,
            result: Ok(50002),
        },
        t.now,
    );
    t.server("200 PORT ok");
    t.server("150 go");
    t.m.handle(Event::TransferFinished(moved(3, 0)), t.now);
    t.server("226 done");
    t.take();
    // The same session's next transfer goes straight to active mode, whatever the
    // listener's memo says by then.
    client_pasv(&mut t, 50003);
    t.client("STOR g");
    assert!(t.has(|a| matches!(
        a,
        Action::Lease {
            slot: Slot::UpstreamActive,
            ..
        }
    )));
    assert!(t.sent_upstream().is_empty());
}

#[test]
fn a_connect_that_knows_a_passive_refusal_goes_straight_to_active_mode() {
    let mut t = T::new(reverse(""));
    t.take();
    let c = Connected {
        peer: SERVER.parse().unwrap(),
        local: ip("198.18.0.1"),
        refuses_passive: true,
    };
    t.m.handle(Event::Connected(Ok(c)), t.now);
    t.server("220 hi");
    t.client("USER u");
    t.server("331 pass");
    t.client("PASS p");
    t.server("230 in");
    client_pasv(&mut t, 50001);
    t.client("RETR f");
    assert!(t.has(|a| matches!(
        a,
        Action::Lease {
            slot: Slot::UpstreamActive,
            ..
        }
    )));
    // With `upstream_data: passive` the memo changes nothing.
    let mut t = T::new(reverse("    upstream_data: passive\n"));
    t.take();
    t.m.handle(Event::Connected(Ok(c)), t.now);
    t.server("220 hi");
    t.client("USER u");
    t.server("331 pass");
    t.client("PASS p");
    t.server("230 in");
    client_pasv(&mut t, 50001);
    t.client("RETR f");
    assert_eq!(t.sent_upstream(), ["PASV\r\n"]);
}

#[test]
fn a_pooled_session_reports_the_backend_it_could_not_reach_by_its_index() {
    let ctx = pooled("    balance: round_robin\n");
    let mut t = T::new(ctx);
    let acts = t.take();
    let chose = acts
        .iter()
        .any(|a| matches!(a, Action::ChooseBackend { user: None, tried, .. } if tried.is_empty()));
    assert!(chose, "{acts:?}");
    let first = t.backend.as_ref().expect("a backend held").index;
    t.m.handle(
        Event::Connected(Err(ConnectFailure::Unreachable("refused".into()))),
        t.now,
    );
    let acts = t.take();
    assert!(
        matches!(acts.first(), Some(Action::BackendFailed { index, error }) if *index == first && error == "refused"),
        "{acts:?}"
    );
    assert!(
        acts.iter().any(
            |a| matches!(a, Action::ChooseBackend { tried, .. } if tried.as_slice() == [first])
        )
    );
    // A choice nobody asked for changes nothing.
    t.m.handle(Event::BackendChosen(None), t.now);
    assert!(t.take().is_empty());
}

#[test]
fn a_cancelled_copy_is_counted_with_the_method_it_was_trying() {
    let mut t = copying();
    job(
        &mut t,
        JobEvent::File {
            entry: 0,
            event: FileEvent::Trying {
                method: Method::ReverseFxp,
                offset: 0,
            },
        },
    );
    t.now += Duration::from_secs(3);
    t.client("ABOR");
    assert!(t.has(|a| matches!(a, Action::CancelFxp)));
    assert!(t.counted(Count::FxpCancelled {
        method: Some(Method::ReverseFxp),
        took: Duration::from_secs(3),
    }));
    // Before the engine tried any method; and QUIT cancels too.
    let mut t = copying();
    t.client("QUIT");
    assert!(t.counted(Count::FxpCancelled {
        method: None,
        took: Duration::ZERO,
    }));
    // A destination check that is aborted is no copy.
    let mut t = T::logged_in(site_ctx());
    t.client("SITE FXP TO ftp://u:pw@203.0.113.5/");
    t.client("ABOR");
    assert!(t.has(|a| matches!(a, Action::CancelFxp)));
    assert!(!t.has(|a| matches!(a, Action::Count(Count::FxpCancelled { .. }, _))));
}

#[test]
fn a_task_that_ends_without_a_word_is_answered_and_one_that_spoke_is_not() {
    let mut t = copying();
    t.m.handle(Event::FxpTaskEnded, t.now);
    let said = t.client_bytes();
    assert!(
        starts(&said, "451 FXP copy failed: the copy task stopped"),
        "{said:?}"
    );
    // The session goes on: the next command goes to the server again.
    t.client("NOOP");
    assert_eq!(t.sent_upstream(), ["NOOP\r\n"]);

    let mut t = copying();
    copy_ends(&mut t, Err(Failure::new(FailureKind::Other, "x")));
    t.take();
    t.m.handle(Event::FxpTaskEnded, t.now);
    assert!(t.take().is_empty());

    let mut t = T::logged_in(site_ctx());
    t.client("SITE FXP TO ftp://u:pw@203.0.113.5/");
    t.take();
    t.m.handle(Event::FxpTaskEnded, t.now);
    let said = t.client_bytes();
    assert!(
        said.iter()
            .any(|l| l.contains("the login check task stopped")),
        "{said:?}"
    );
}

/// The rules of the `SITE FXP TO` check for the listener `ctx`.
fn check_rules(ctx: Arc<Ctx>) -> FxpRules {
    let mut t = T::logged_in(ctx);
    t.client("SITE FXP TO ftp://u:pw@203.0.113.5/");
    t.take()
        .into_iter()
        .find_map(|a| match a {
            Action::CheckFxpDestination { rules, .. } => Some(rules),
            _ => None,
        })
        .expect("the destination is logged in to")
}

#[test]
fn site_fxp_reaches_and_trusts_what_the_listener_does() {
    // Without a `tls:` block: the system's roots, certificates checked.
    let ctx = site_ctx();
    let rules = check_rules(ctx.clone());
    assert!(rules.verify && rules.ca.is_none());
    assert!(Arc::ptr_eq(&rules.own, &ctx.policy.own));
    assert!(rules.allow.admits("198.18.0.2", ip("198.18.0.2")).is_ok());
    assert!(rules.allow.admits("192.0.2.1", ip("192.0.2.1")).is_err());

    // The listener's upstream trust, as for the session's own server (a client in clear:
    // the server's leg mirrors it).
    let dir = tempfile::tempdir().unwrap();
    let (ca, key) = (dir.path().join("ca.pem"), dir.path().join("key.pem"));
    let tls = |verify: bool| {
        ctx_guarded(
            &format!(
                "    upstream: {SERVER}\n    tls:\n      client: {{mode: explicit, cert: {ca}, key: {key}}}\n      upstream: {{mode: mirror, verify: {verify}, ca: {ca}}}\n",
                ca = ca.display(),
                key = key.display(),
            ),
            &format!("{LIMITS}fxp:\n  allow: [\"203.0.113.0/24\"]\n"),
            crate::net::OwnSockets::default(),
        )
    };
    let rules = check_rules(tls(true));
    assert!(rules.verify);
    assert_eq!(rules.ca.as_deref(), Some(ca.as_path()));
    let rules = check_rules(tls(false));
    assert!(!rules.verify);
}

/// A server's failure of `kind`, as plain data.
fn failed(kind: FailureKind, code: Option<u16>, permanent: bool) -> Failure {
    Failure {
        code,
        permanent,
        ..Failure::new(kind, "no")
    }
}

/// A copy that stopped moving, as the engine words it.
fn stalled() -> Failure {
    Failure::new(FailureKind::Stalled, "no progress for 30s")
}

/// An event of the running `SITE FXP` copy's job.
fn job(t: &mut T, e: JobEvent) {
    t.m.handle(Event::FxpJob(e), t.now);
}

/// The running one-file copy's job ends with `outcome`.
fn copy_ends(t: &mut T, outcome: Result<Report, Failure>) {
    let outcome = match outcome {
        Ok(r) => EntryOutcome::Copied(r),
        Err(e) => EntryOutcome::Failed(e),
    };
    job(
        t,
        JobEvent::Ended {
            entry: 0,
            took: Duration::ZERO,
            outcome,
        },
    );
    job(t, finished());
}

fn finished() -> JobEvent {
    JobEvent::Finished {
        error: None,
        took: Duration::from_millis(20),
    }
}

/// A tree of one directory and `files` files of 10 bytes, listed.
fn tree_planned(files: usize) -> JobEvent {
    use crate::fxp::job::mirror::{Kind, Operation, Reason};
    use crate::fxp::job::plan::{Outline, OutlineEntry, Shape};
    JobEvent::Planned(Outline {
        shape: Shape::Tree,
        dirs: 1,
        dry_run: false,
        entries: (0..files)
            .map(|i| OutlineEntry {
                path: format!("f{i}"),
                src: format!("ftp://a/tree/f{i}"),
                dst: format!("ftp://b/in/copied/f{i}"),
                kind: Kind::File,
                operation: Operation::Copy,
                reason: Reason::Missing,
                size: Some(10),
            })
            .collect(),
    })
}

/// File `entry` of a tree copied (10 bytes), or failed.
fn file_ended(entry: usize, outcome: Result<(), Failure>) -> JobEvent {
    let outcome = match outcome {
        Ok(()) => EntryOutcome::Copied(Report {
            method: Method::Fxp,
            bytes: 10,
            relayed_bytes: 0,
            resumed_from: 0,
            attempts: 1,
            duration: Duration::from_millis(5),
            verified: Check::Size,
        }),
        Err(e) => EntryOutcome::Failed(e),
    };
    JobEvent::Ended {
        entry,
        took: Duration::from_millis(5),
        outcome,
    }
}

// ---------------------------------------------------------------------------------------
// The edge defense: what the machine reports, the tarpit
// ---------------------------------------------------------------------------------------

fn defended(defense: &str) -> Arc<Ctx> {
    ctx(
        &format!("    upstream: {SERVER}\n"),
        &format!("{LIMITS}defense:\n{defense}"),
    )
}

impl T {
    /// The defense events reported so far (taking the actions).
    fn reported(&mut self) -> Vec<crate::defense::DefenseEvent> {
        self.take()
            .into_iter()
            .filter_map(|a| match a {
                Action::Defend { client, event } => {
                    assert_eq!(client, ip(CLIENT));
                    Some(event)
                }
                _ => None,
            })
            .collect()
    }

    /// One wrong password: `USER`, `331`, `PASS`, the server's `530`.
    fn wrong_password(&mut self) {
        self.client("USER u");
        self.server("331 pass");
        self.client("PASS wrong");
        self.server("530 Login incorrect.");
    }
}

/// Logins are counted by result, with the defense on or off: the server's `530` to
/// `USER`/`PASS` a failure, its `230` a success (once per login).
#[test]
fn logins_are_counted_by_result() {
    let mut t = T::connected(reverse(""));
    t.wrong_password();
    assert!(t.counted(Count::Login { ok: false }));
    assert!(!t.counted(Count::Login { ok: true }));
    let mut t = T::connected(reverse(""));
    t.client("USER u");
    t.server("331 pass");
    t.client("PASS secret");
    t.server("230 in");
    t.drain();
    let logins = |t: &T| {
        t.actions
            .iter()
            .filter(|a| matches!(a, Action::Count(Count::Login { .. }, _)))
            .count()
    };
    assert!(t.counted(Count::Login { ok: true }));
    assert_eq!(logins(&t), 1);
    // A second 230 (a server repeating itself) is not a second login.
    t.client("NOOP");
    t.server("230 still in");
    t.drain();
    assert_eq!(logins(&t), 1);
}

#[test]
fn the_machine_reports_failed_logins_bait_users_bad_commands_and_logins() {
    use crate::defense::DefenseEvent as D;
    let mut t = T::connected(defended("  bait_users: [root]\n"));
    t.wrong_password();
    assert_eq!(t.reported(), [D::LoginFailed]);
    // A 530 to USER (servers that refuse a name at once) is a failed login too.
    t.client("USER nobody");
    t.server("530 Permission denied.");
    assert_eq!(t.reported(), [D::LoginFailed]);
    t.client("USER ROOT");
    assert_eq!(t.reported(), [D::BaitUser], "bait names match without case");
    t.server("331 pass");
    t.client("\u{1}\u{2} garbage");
    assert_eq!(t.reported(), [D::BadCommand]);
    t.client("LIST");
    t.server("530 Please login with USER and PASS.");
    assert_eq!(t.reported(), [D::BadCommand], "refused for want of a login");
    t.client("OPTS UTF8 ON");
    t.server("530 Log in with USER and PASS first.");
    assert_eq!(t.reported(), [], "clients negotiate before logging in");
    t.client("USER u");
    t.server("331 pass");
    t.client("PASS right");
    t.server("230 in");
    assert_eq!(t.reported(), [D::LoggedIn]);
    // Once logged in, a 530 (or garbage) is nobody's attack.
    t.client("\u{1}\u{2} garbage");
    t.client("SITE CHMOD 777 x");
    t.server("530 Not allowed.");
    t.m.handle(Event::ClientClosed, t.now);
    assert_eq!(t.reported(), []);
}

#[test]
fn a_close_before_any_command_is_an_early_close() {
    use crate::defense::DefenseEvent as D;
    let mut t = T::connected(defended("  threshold: 10\n"));
    t.m.handle(Event::ClientClosed, t.now);
    assert_eq!(t.reported(), [D::EarlyClose]);
    let mut t = T::connected(defended("  threshold: 10\n"));
    t.client("NOOP");
    t.m.handle(Event::ClientClosed, t.now);
    assert_eq!(t.reported(), [], "it said something first");
    // A login timeout without a word is one too.
    let mut t = T::connected(defended("  threshold: 10\n"));
    t.advance(Duration::from_secs(31));
    assert!(t.closed());
    assert_eq!(t.reported(), [D::EarlyClose]);
}

#[test]
fn without_defense_nothing_is_reported_and_nothing_held() {
    let mut t = T::connected(reverse(""));
    for _ in 0..6 {
        t.wrong_password();
        assert_eq!(t.reported(), []);
        // Every 530 goes out at once.
        t.wrong_password();
        assert_eq!(
            t.client_bytes(),
            ["331 pass\r\n", "530 Login incorrect.\r\n"]
        );
    }
    assert!(t.m.poll_timeout() > Some(t.now + Duration::from_secs(10)));
}

#[test]
fn the_tarpit_holds_the_fourth_and_later_wrong_passwords_longer_and_longer() {
    let mut t = T::connected(defended("  threshold: 100\n"));
    for _ in 0..3 {
        t.wrong_password();
        assert_eq!(
            t.client_bytes(),
            ["331 pass\r\n", "530 Login incorrect.\r\n"]
        );
    }
    // The 4th waits 1 s, the 5th 2 s, the 6th 4 s, then 5 s each: never sooner.
    for delay in [1, 2, 4, 5, 5] {
        let delay = Duration::from_secs(delay);
        t.wrong_password();
        assert_eq!(t.client_bytes(), ["331 pass\r\n"], "the 530 is held");
        assert_eq!(t.m.poll_timeout(), Some(t.now + delay));
        assert!(
            !t.m.wants_client_input(),
            "no next try while the answer waits"
        );
        t.advance(delay - Duration::from_millis(1));
        assert_eq!(
            t.client_bytes(),
            Vec::<String>::new(),
            "not before {delay:?}"
        );
        t.advance(Duration::from_millis(1));
        assert_eq!(t.client_bytes(), ["530 Login incorrect.\r\n"]);
        assert!(t.m.wants_client_input());
    }
}

#[test]
fn the_tarpit_keeps_later_replies_behind_the_held_one_and_forgets_old_failures() {
    let mut t = T::connected(defended("  threshold: 100\n  window: 1m\n"));
    for _ in 0..3 {
        t.wrong_password();
    }
    t.take();
    t.wrong_password();
    // The server answers a pipelined command meanwhile: it waits behind the 530.
    t.client_bytes();
    t.m.handle(Event::UpstreamLine("421 bye\r\n".into()), t.now);
    t.drain();
    assert_eq!(
        t.sent_client(),
        ["530 Login incorrect.\r\n", "421 bye\r\n"],
        "the session ends: what was held goes first"
    );
    // Failures older than the window no longer count.
    let mut t = T::connected(defended("  threshold: 100\n  window: 20s\n"));
    for _ in 0..3 {
        t.wrong_password();
    }
    t.advance(Duration::from_secs(21));
    t.take();
    t.wrong_password();
    assert_eq!(
        t.client_bytes(),
        ["331 pass\r\n", "530 Login incorrect.\r\n"]
    );
}

#[test]
fn a_banned_client_hears_421_and_nothing_more_reaches_the_server() {
    // The report comes before the USER goes on; the shell's answer: the bait user's
    // score banned the client.
    let mut t = T::connected(defended("  bait_users: [admin]\n"));
    t.m.handle(Event::ClientLine("USER admin\r\n".into()), t.now);
    loop {
        match t.m.poll_action() {
            Some(Action::Defend { .. }) => break,
            Some(Action::ToUpstream(_)) | None => panic!("the report comes first"),
            Some(_) => {}
        }
    }
    t.m.handle(Event::Banned, t.now);
    t.drain();
    assert_eq!(
        t.sent_upstream(),
        Vec::<String>::new(),
        "the USER never goes"
    );
    assert_eq!(
        t.sent_client(),
        ["421 Too many failed logins from your address; try again later.\r\n"]
    );
    assert!(t.rejected(Rejection::Banned) && t.closed());
    assert_eq!(t.m.end_reason(), Some("banned"));
    // `silent: true`: closed without a word.
    let mut t = T::connected(defended("  silent: true\n"));
    t.m.handle(Event::Banned, t.now);
    t.drain();
    assert!(t.sent_client().is_empty() && t.closed());
}

// ---------------------------------------------------------------------------------------
// A server reached through an agent (`via`)
// ---------------------------------------------------------------------------------------

fn via_ctx() -> Arc<Ctx> {
    via("    data: relay\n")
}

#[test]
fn a_session_whose_agent_is_down_hears_421_naming_it_and_ends() {
    let mut t = T::new(via_ctx());
    assert!(matches!(t.take().as_slice(), [Action::Connect(_)]));
    t.m.handle(
        Event::Connected(Err(ConnectFailure::AgentDown("site-a".into()))),
        t.now,
    );
    t.drain();
    assert!(t.closed());
    assert_eq!(
        t.sent_client(),
        ["421 Service not available (agent site-a is not connected).\r\n"]
    );
}

#[test]
fn through_an_agent_data_keeps_the_listeners_upstream_data() {
    let ctx = via_ctx();
    // Passive first, active (the agent listens inside) where the server refuses it.
    assert_eq!(
        ctx.policy.cfg.upstream_data,
        crate::config::UpstreamData::Auto
    );
}

/// `SITE FXP` on a listener behind an agent: the engine reaches A through the same
/// agent (`?via=site-a`), and a destination behind an agent is not checked against the
/// proxy's own sockets (its address is the agent's network's).
#[test]
fn site_fxp_through_an_agent_reaches_a_through_it() {
    let ctx = ctx(
        &format!("    upstream: {SERVER}\n    via: site-a\n    data: relay\n"),
        &format!(
            "{LIMITS}fxp:\n  allow: [\"203.0.113.0/24\"]\nagents:\n  bind: 127.0.0.1:8021\n  cert: /e.crt\n  key: /e.key\n  tokens: {{site-a: 0123456789abcdef0123}}\n"
        ),
    );
    let mut t = T::logged_in(ctx);
    let b = choose(&mut t, "ftp://u:pw@203.0.113.5/in/", Ok(()));
    assert_eq!(b.via, None);
    assert!(
        t.sent_upstream().is_empty(),
        "the URL's password never goes upstream"
    );
    t.take();
    t.client("SITE FXP PUT big.bin");
    let src = t.take().into_iter().find_map(|a| match a {
        Action::StartFxp { src, .. } => Some(src),
        _ => None,
    });
    let src = src.expect("a copy starts");
    assert_eq!(
        (src.host.as_str(), src.via.as_deref(), src.path.as_slice()),
        ("198.18.0.2", Some("site-a"), &b"big.bin"[..])
    );
    assert!(src.to_string().ends_with("/big.bin?via=site-a"), "{src}");
}
