//! `fxprelay agent`: the side beside the servers. It dials the edge, keeps its link up
//! (heartbeats; after a loss, backoff with jitter), and for each request on the link
//! connects to the target inside its `allow`, tells the edge, and dials the edge once
//! more for the stream's bytes. It listens on no fixed port: only, for a server's
//! active-mode data connection, on one ephemeral port per transfer, on its address
//! toward that server, for that server alone, for a bounded time
//! (`fxprelay_core::agent::listen`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use fxprelay_core::agent::listen::{self, Expected, ListenRefusal, Verdict};
use fxprelay_core::agent::wire::{self, FromAgent, Hello, MAX_LINE, PROTOCOL, ToAgent};
use fxprelay_core::agent::{Backoff, Reach};
use fxprelay_core::net::HostPort;

use super::hub::read_line;

/// What an agent runs with.
#[derive(Clone)]
pub struct Agent {
    pub name: String,
    pub token: String,
    /// The edge's agents listener.
    pub edge: HostPort,
    /// The name the edge's certificate is checked against (the edge's host).
    pub edge_name: ServerName<'static>,
    pub tls: TlsConnector,
    pub reach: Reach,
    /// Connecting to the edge or to a target must succeed within this.
    pub connect_timeout: Duration,
    /// The ports it listens on now, for servers' active-mode connections.
    pub(super) listens: Arc<Listens>,
}

/// The agent's listening ports, by the edge's request id: each closed when its
/// transfer's connection came, its wait ran out, the edge said `close` or the link was
/// lost (its entry goes with its task, whatever ends it).
#[derive(Default)]
pub(super) struct Listens {
    open: Mutex<HashMap<u64, Listening>>,
}

struct Listening {
    /// Where it listens, once bound.
    addr: Option<SocketAddr>,
    stop: CancellationToken,
}

impl Listens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Listening>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place for listen `id` if the rule allows one (the limit counted under the
    /// same lock); the place is given back when the returned guard drops.
    fn reserve(
        self: &Arc<Self>,
        id: u64,
        stop: CancellationToken,
        decide: impl FnOnce(usize) -> Result<SocketAddr, ListenRefusal>,
    ) -> Result<(SocketAddr, ListenGuard), ListenRefusal> {
        let mut open = self.lock();
        if open.contains_key(&id) {
            // One port per request: a second would outlive the first one's guard.
            return Err(ListenRefusal::Duplicate(id));
        }
        let bind = decide(open.len())?;
        open.insert(id, Listening { addr: None, stop });
        Ok((bind, ListenGuard(self.clone(), id)))
    }

    fn bound(&self, id: u64, addr: SocketAddr) {
        if let Some(l) = self.lock().get_mut(&id) {
            l.addr = Some(addr);
        }
    }

    /// The edge no longer waits for `id`.
    fn close(&self, id: u64) {
        if let Some(l) = self.lock().get(&id) {
            l.stop.cancel();
        }
    }

    /// Where it listens now: none of these is a target the edge may have it connect to.
    fn addrs(&self) -> Vec<SocketAddr> {
        self.lock().values().filter_map(|l| l.addr).collect()
    }

    /// Listening ports open now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A listen's place in [`Listens`], given back on drop.
struct ListenGuard(Arc<Listens>, u64);

impl Drop for ListenGuard {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// Why a link ended (logged, then the agent dials again).
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot reach the edge: {0}")]
    Connect(String),
    #[error("the edge refused this agent: {0}")]
    Refused(wire::Refused),
    #[error("{0}")]
    Lost(String),
}

/// `fxprelay agent -c FILE`: reads the file and the files it names, then keeps the link
/// up until SIGTERM or SIGINT.
pub fn main(path: &std::path::Path) -> std::process::ExitCode {
    use std::process::ExitCode;
    let agent = match Agent::load(path) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fxprelay agent: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fxprelay agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let stop = CancellationToken::new();
        let signals = stop.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            signals.cancel();
        });
        info!(agent = %agent.name, edge = %agent.edge, version = env!("CARGO_PKG_VERSION"), "fxprelay agent starting");
        agent.run(stop).await;
        info!("stopped");
    });
    ExitCode::SUCCESS
}

impl Agent {
    /// The agent of configuration file `path`: its token read, the edge's CA loaded.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Agent> {
        use anyhow::Context;
        use fxprelay_core::config::{AgentConfig, TokenSource};
        let c = AgentConfig::load(path)?;
        let token = match &c.token {
            TokenSource::Inline(t) => t.clone(),
            TokenSource::File(f) => std::fs::read_to_string(f)
                .with_context(|| format!("agent.token_file {}", f.display()))?
                .trim_end()
                .to_owned(),
        };
        let ca = match &c.ca {
            Some(p) => Some(crate::tls::CaCerts::load(p).with_context(|| "agent.ca".to_string())?),
            None => None,
        };
        let tls =
            crate::tls::Upstream::with_provider(true, ca.as_ref(), crate::tls::agent_provider())
                .context("agent.ca: the edge's certificate cannot be checked")?
                .for_session();
        let edge_name = crate::tls::server_name(&c.edge.host)
            .with_context(|| format!("agent.edge {}", c.edge))?;
        Ok(Agent {
            name: c.name,
            token,
            edge: c.edge,
            edge_name,
            tls,
            reach: Reach::new(c.allow),
            connect_timeout: c.connect_timeout,
            listens: Arc::default(),
        })
    }

    /// Keeps a link to the edge up until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let me = Arc::new(self);
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        loop {
            let r = tokio::select! {
                () = shutdown.cancelled() => return,
                r = me.clone().link(&mut backoff) => r,
            };
            let wait = backoff.failed(uuid::Uuid::new_v4().as_u64_pair().0);
            match r {
                Err(e @ LinkError::Refused(_)) => {
                    warn!(error = %e, retry_in = ?wait, "agent link refused")
                }
                Err(e) => warn!(error = %e, retry_in = ?wait, "agent link down"),
                Ok(()) => {}
            }
            crate::metrics::agent_link(false);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = sleep(wait) => {}
            }
        }
    }

    /// A TLS connection to the edge whose first line is `hello`.
    async fn dial_edge(
        &self,
        hello: &Hello,
    ) -> Result<tokio_rustls::client::TlsStream<super::hub::Batched>, String> {
        let limit = self.connect_timeout;
        let tcp = crate::upstream::connect(&scope(), &self.edge, limit)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let tcp = tokio::io::BufReader::with_capacity(super::hub::READ_BATCH, tcp);
        let mut tls = timeout(limit, self.tls.connect(self.edge_name.clone(), tcp))
            .await
            .map_err(|_| format!("TLS handshake with the edge timed out after {limit:?}"))?
            .map_err(|e| format!("TLS handshake with the edge failed: {e}"))?;
        tls.write_all(&wire::encode(hello))
            .await
            .map_err(|e| e.to_string())?;
        Ok(tls)
    }

    /// One link: hello, then requests until it is lost.
    async fn link(self: Arc<Self>, backoff: &mut Backoff) -> Result<(), LinkError> {
        let hello = Hello::Link {
            name: self.name.clone(),
            token: self.token.clone(),
            protocol: PROTOCOL,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let tls = self.dial_edge(&hello).await.map_err(LinkError::Connect)?;
        let mut r = BufReader::with_capacity(MAX_LINE, tls);
        let heartbeat = match timeout(self.connect_timeout, read_line(&mut r)).await {
            Ok(Ok(Some(line))) => match wire::decode::<ToAgent>(&line) {
                Ok(ToAgent::Welcome { heartbeat_secs }) => {
                    Duration::from_secs(heartbeat_secs.max(1))
                }
                Ok(ToAgent::Refused { reason }) => return Err(LinkError::Refused(reason)),
                other => return Err(LinkError::Lost(format!("unexpected answer: {other:?}"))),
            },
            _ => return Err(LinkError::Lost("no answer to the hello".into())),
        };
        backoff.reset();
        crate::metrics::agent_link(true);
        info!(agent = %self.name, edge = %self.edge, "agent link up");
        // The reader keeps what was read past the welcome; the lines go on from there.
        let (read, mut write) = tokio::io::split(r);
        let mut read = BufReader::new(read);
        let (tx, mut rx) = mpsc::channel::<FromAgent>(64);
        let writer = async {
            let mut tick = tokio::time::interval(heartbeat);
            loop {
                let m = tokio::select! {
                    m = rx.recv() => match m { Some(m) => m, None => return },
                    _ = tick.tick() => FromAgent::Ping,
                };
                if write.write_all(&wire::encode(&m)).await.is_err() {
                    return;
                }
            }
        };
        let streams = tokio_util::task::TaskTracker::new();
        // Ends this link's listening ports with it: the edge forgot their requests.
        let link_end = CancellationToken::new();
        let _ports_closed = link_end.clone().drop_guard();
        let reader = async {
            loop {
                let line = match timeout(2 * heartbeat, read_line(&mut read)).await {
                    Ok(Ok(Some(l))) => l,
                    Ok(Ok(None)) => return "the edge closed the link".to_string(),
                    Ok(Err(e)) => return format!("link error: {e}"),
                    Err(_) => return format!("no word from the edge for {:?}", 2 * heartbeat),
                };
                match wire::decode::<ToAgent>(&line) {
                    Ok(ToAgent::Pong) => {}
                    Ok(ToAgent::Open { id, target, nonce }) => {
                        streams.spawn(self.clone().open(id, target, nonce, tx.clone()));
                    }
                    Ok(ToAgent::Listen {
                        id,
                        server,
                        nonce,
                        wait_ms,
                    }) => {
                        let stop = link_end.child_token();
                        let ask = (id, server, nonce, listen::wait(wait_ms));
                        streams.spawn(self.clone().listen(ask, stop, tx.clone()));
                    }
                    Ok(ToAgent::Close { id }) => self.listens.close(id),
                    Ok(other) => return format!("unexpected on the link: {other:?}"),
                    Err(e) => return format!("the edge said something else: {e}"),
                }
            }
        };
        let why = tokio::select! {
            why = reader => why,
            () = writer => "the link could not be written".to_string(),
        };
        // Streams already open go on: each has its own connection to the edge.
        streams.close();
        Err(LinkError::Lost(why))
    }

    /// Request `id`: connect to `target` if the rule admits it, answer on the link, then
    /// carry the stream.
    async fn open(
        self: Arc<Self>,
        id: u64,
        target: String,
        nonce: String,
        tx: mpsc::Sender<FromAgent>,
    ) {
        let inside = match self.connect_inside(&target).await {
            Ok(s) => s,
            Err(reason) => {
                warn!(agent = %self.name, %target, %reason, "agent refused or could not open a stream");
                let _ = tx.send(FromAgent::Failed { id, reason }).await;
                return;
            }
        };
        let (peer, local) = match (inside.peer_addr(), inside.local_addr()) {
            (Ok(p), Ok(l)) => (p, l),
            (Err(e), _) | (_, Err(e)) => {
                let _ = tx
                    .send(FromAgent::Failed {
                        id,
                        reason: e.to_string(),
                    })
                    .await;
                return;
            }
        };
        let _ = tx.send(FromAgent::Opened { id, peer, local }).await;
        let _ = self.carry(id, nonce, inside).await;
    }

    /// Listen `id`: a port inside for `server`'s active-mode data connection, if the
    /// rule allows one; answer on the link, wait for the server (anyone else is refused
    /// and reported), then carry its connection to the edge as a stream.
    async fn listen(
        self: Arc<Self>,
        (id, server, nonce, wait): (u64, SocketAddr, String, Duration),
        stop: CancellationToken,
        tx: mpsc::Sender<FromAgent>,
    ) {
        let failed = |reason: String| FromAgent::Failed { id, reason };
        // The address the kernel would use toward the server: the one the server knows
        // as its FTP client, which its `PORT` check wants.
        let local = match route_source(server) {
            Ok(ip) => ip,
            Err(e) => {
                let reason = format!("no route to {server}: {e}");
                return warn_failed(&tx, &self.name, failed(reason)).await;
            }
        };
        let decide = |open| listen::listen_on(&self.reach, server, local, open);
        let (bind, _place) = match self.listens.reserve(id, stop.clone(), decide) {
            Ok(p) => p,
            Err(refusal) => {
                return warn_failed(&tx, &self.name, failed(refusal.to_string())).await;
            }
        };
        let listener = match TcpListener::bind(bind).await {
            Ok(l) => l,
            Err(e) => {
                let reason = format!("cannot listen on {bind}: {e}");
                return warn_failed(&tx, &self.name, failed(reason)).await;
            }
        };
        let Ok(addr) = listener.local_addr() else {
            let reason = "the listening port has no address".to_string();
            return warn_failed(&tx, &self.name, failed(reason)).await;
        };
        self.listens.bound(id, addr);
        info!(agent = %self.name, %addr, %server, ?wait, "listening for the server's active-mode data connection");
        if tx.send(FromAgent::Listening { id, addr }).await.is_err() {
            return;
        }
        let mut expected = Expected::new(server);
        let deadline = sleep(wait);
        tokio::pin!(deadline);
        let accepted = loop {
            tokio::select! {
                () = stop.cancelled() => break None,
                () = &mut deadline => {
                    let reason = format!("no connection from {} to {addr} within {wait:?}", server.ip());
                    let _ = tx.send(failed(reason)).await;
                    break None;
                }
                r = listener.accept() => match r {
                    Ok((s, peer)) => match expected.judge(peer) {
                        Verdict::Accept => break Some(s),
                        Verdict::Refuse { report } => {
                            drop(s);
                            warn!(agent = %self.name, %peer, expect = %server.ip(), %addr, "refused a connection to an active-mode port from an unexpected address");
                            if report {
                                let _ = tx.try_send(FromAgent::Intruder { id, peer });
                            }
                        }
                    },
                    Err(error) => {
                        // A peer that reset before the accept completed, or no file
                        // descriptor to spare: keep waiting, without spinning.
                        warn!(agent = %self.name, %error, %addr, "accept on an active-mode port failed");
                        sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        };
        // The port takes one connection: closed before anything else happens.
        drop(listener);
        drop(_place);
        let Some(inside) = accepted else {
            return info!(agent = %self.name, %addr, "active-mode port closed unused");
        };
        let _ = inside.set_nodelay(true);
        if let Err(error) = self.carry(id, nonce, inside).await {
            let _ = tx.send(failed(error)).await;
        }
    }

    /// Opens stream `id`'s connection to the edge (named by its `nonce`) and carries the
    /// bytes of `inside` both ways through it until both have ended.
    async fn carry(&self, id: u64, nonce: String, mut inside: TcpStream) -> Result<(), String> {
        let hello = Hello::Stream {
            name: self.name.clone(),
            id,
            nonce,
        };
        let mut edge = self.dial_edge(&hello).await.inspect_err(|error| {
            warn!(agent = %self.name, %error, "cannot open the stream's connection to the edge");
        })?;
        // Whole TLS records toward the edge: a copy buffer of one record or more.
        let size = super::hub::READ_BATCH;
        let _ = tokio::io::copy_bidirectional_with_sizes(&mut inside, &mut edge, size, size).await;
        Ok(())
    }

    /// A connection to `target` inside, to an address the rule admits.
    async fn connect_inside(&self, target: &str) -> Result<TcpStream, String> {
        let target = HostPort::parse_or_port(target, 21).map_err(|e| e.to_string())?;
        // The agent's own listening ports are never a target: the edge could otherwise
        // pose as the server on one of them.
        let own = self.listens.addrs();
        let host = target.host.to_string();
        crate::upstream::connect_checked(
            &scope(),
            &target,
            self.connect_timeout,
            None,
            |addr: SocketAddr| {
                self.reach
                    .admits(&host, addr, &own)
                    .map_err(|r| crate::upstream::ConnectError::Denied(r.to_string()))
            },
        )
        .await
        .map_err(|e| e.to_string())
    }
}

/// Logs a refused or failed listen and tells the edge.
async fn warn_failed(tx: &mpsc::Sender<FromAgent>, agent: &str, answer: FromAgent) {
    if let FromAgent::Failed { reason, .. } = &answer {
        warn!(%agent, %reason, "agent refused or could not open an active-mode port");
    }
    let _ = tx.send(answer).await;
}

/// The local address the kernel picks toward `server` (a routing lookup: connecting a
/// UDP socket sends nothing).
fn route_source(server: SocketAddr) -> std::io::Result<IpAddr> {
    let any: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let probe = std::net::UdpSocket::bind((any, 0))?;
    probe.connect(server)?;
    Ok(probe.local_addr()?.ip())
}

/// The agent's own connections in its metrics: to the edge, and to the servers inside.
fn scope() -> crate::metrics::Scope {
    crate::metrics::Scope::new("agent", fxprelay_core::route::RouteLabel::Default)
}
