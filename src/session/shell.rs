//! The session's async shell: it owns the sockets, the leased ports, the backend it holds
//! and the tasks; it turns each I/O completion into an [`Event`] for the [`Machine`] and
//! carries out the [`Action`]s it answers with, using the listener's [`Services`]. It
//! decides nothing. Both control connections are boxed `AsyncRead + AsyncWrite` streams,
//! so a TLS stream can take the place of a TCP one mid-session.
//!
//! [`Services`]: super::context::Services

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::context::ListenerCtx;
use super::handshake::{self, Handshake};
use super::machine::{
    Action, Backend, ClientLeg, ConnectFailure, ConnectRequest, Connected, Count, DataConnectError,
    Event, FxpRules, Machine, Slot, UpstreamLeg, permitted,
};
use super::policy::Policy;
use super::registry::Registration;
use crate::agent::{DialError, DialFailure, Inside};
use crate::codec::{LineCodec, LineError, LineWriter};
use crate::data::LeasedListener;
use crate::data::relay::{self, DataError, Leg, Moved, Protection, Timeouts};
use crate::data::socket;
use crate::fxp::client::{ExtraRoots, TlsPolicy};
use crate::fxp::engine::{EngineOptions, FxpError};
use crate::fxp::job::{Failure, Order};
use crate::fxp::runner;
use crate::fxp::url::FtpUrl;
use crate::metrics::{self, TlsSide};
use crate::pool::Chosen;
use crate::tls::{self, TlsConnector};
use crate::upstream::{self, ConnectError};

/// Initial read buffer of each control connection (they grow for longer lines). Control
/// lines are short, and tokio-util's 8 KiB default, twice per session, was most of an idle
/// session's memory (heaptrack, 2000 sessions: 33 of 56 MB).
const LINE_BUFFER: usize = 1024;

/// A control connection's byte stream: TCP today, TLS over TCP after `AUTH TLS`.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

pub(super) type BoxStream = Box<dyn Stream>;

/// What a session holds until its client has logged in (dropped then): the listener's
/// pre-login slots.
pub type UntilLogin = Box<dyn Send>;
type Lines = FramedRead<ReadHalf<BoxStream>, LineCodec>;

/// What an operation the machine ordered came back with: the event that answers it, and
/// the connection it opened, which the shell keeps.
struct Completion {
    event: Event,
    keep: Option<Keep>,
}

/// A connection an operation opened.
enum Keep {
    /// The client's control connection, now over TLS, and the name its handshake asked
    /// for (SNI).
    Client(BoxStream, Option<String>),
    /// The upstream's control connection, opened or now over TLS.
    Upstream(BoxStream),
    /// The proxy's connection to the upstream's passive data port (a socket, or a
    /// stream through the listener's agent), as the transfer's upstream leg.
    UpstreamData(Leg),
    /// The agent's listening port inside, for the server's active-mode connection.
    UpstreamInside(Inside),
}

impl From<Event> for Completion {
    fn from(event: Event) -> Completion {
        Completion { event, keep: None }
    }
}

/// One running relayed transfer: dropping it stops the task and closes both data
/// connections.
struct TransferTask {
    _task: AbortOnDropHandle<()>,
    done: oneshot::Receiver<Result<Moved, DataError>>,
}

/// One running `SITE FXP` copy or destination check: dropping it cancels the engine,
/// which closes its sessions with both servers. Its news are the machine's events.
struct FxpTask {
    _task: AbortOnDropHandle<()>,
    news: mpsc::UnboundedReceiver<Event>,
}

pub(super) struct Shell {
    /// The listener's policy, the one the machine has: names, limits and the settings the
    /// I/O needs.
    ctx: Arc<Policy>,
    /// The listener's services (ports, pool, memo, TLS material) through its context.
    listener: Arc<ListenerCtx>,
    machine: Machine,
    client_local: IpAddr,
    /// Both control connections; `None` while a TLS handshake has them (or, upstream,
    /// before the connect).
    client_lines: Option<Lines>,
    client_w: Option<LineWriter<WriteHalf<BoxStream>>>,
    upstream_lines: Option<Lines>,
    upstream_w: Option<LineWriter<WriteHalf<BoxStream>>>,
    /// This session's TLS client side toward the server: its own session cache, so the
    /// data connections resume this session's control connection.
    upstream_tls: Option<TlsConnector>,
    /// The name the server's certificate was checked against.
    upstream_name: Option<ServerName<'static>>,
    ops: FuturesUnordered<BoxFuture<'static, Completion>>,
    client_passive: Option<LeasedListener>,
    upstream_active: Option<LeasedListener>,
    /// Through an agent, [`Slot::UpstreamActive`] is the agent's port inside.
    upstream_inside: Option<Inside>,
    /// Through an agent, the link that carries the control connection: the agent that
    /// listens for this session's active-mode data connections (set by the connect).
    agent_link: Arc<std::sync::Mutex<Option<u64>>>,
    upstream_data: Option<Leg>,
    transfer: Option<TransferTask>,
    fxp: Option<FxpTask>,
    /// Reverse mode over a pool: the backend chosen for the machine, one of its sessions
    /// while held.
    backend: Option<Chosen>,
    /// A listener with routes: the route taken (`None`: none yet, or the default).
    route: Option<usize>,
    /// The name the client asked for in its control connection's TLS handshake (SNI):
    /// its data connections get the certificate that one got.
    client_name: Option<String>,
    /// The session's entry in `GET /api/v1/sessions`, refreshed after every event.
    registration: Option<Registration>,
    /// The client's address and the one it connected to, for a PROXY header toward the
    /// server (`upstream_proxy_protocol`).
    client_addrs: Option<(SocketAddr, SocketAddr)>,
    /// The session's own series, under its listener and the route the machine said it
    /// took: what the shell counts itself (connects, TLS, data) is counted there.
    meter: metrics::SessionMeter,
}

impl Shell {
    /// `early` holds bytes the client sent before the session started (behind a PROXY
    /// header, in the same segment).
    pub(super) fn new(
        listener: Arc<ListenerCtx>,
        machine: Machine,
        client: BoxStream,
        early: &[u8],
        client_local: IpAddr,
        meter: metrics::SessionMeter,
    ) -> Shell {
        let upstream_tls = listener
            .services
            .tls
            .as_ref()
            .and_then(|t| t.upstream.as_ref())
            .map(tls::Upstream::for_session);
        let mut shell = Shell {
            ctx: listener.policy.clone(),
            listener,
            machine,
            client_local,
            client_lines: None,
            client_w: None,
            upstream_lines: None,
            upstream_w: None,
            upstream_tls,
            upstream_name: None,
            ops: FuturesUnordered::new(),
            client_passive: None,
            upstream_active: None,
            upstream_inside: None,
            agent_link: Arc::default(),
            upstream_data: None,
            transfer: None,
            fxp: None,
            backend: None,
            route: None,
            client_name: None,
            registration: None,
            client_addrs: None,
            meter,
        };
        shell.set_client(client, early);
        shell
    }

    fn set_client(&mut self, stream: BoxStream, early: &[u8]) {
        let (r, w) = tokio::io::split(stream);
        let codec = LineCodec::new(self.ctx.limits.max_line_length);
        let mut lines = FramedRead::with_capacity(r, codec, LINE_BUFFER);
        lines.read_buffer_mut().extend_from_slice(early);
        self.client_lines = Some(lines);
        // Every reply must be taken by the client within `limits.reply_write_timeout`: one
        // that stops reading would otherwise hold its slot, upstream and data port.
        self.client_w = Some(LineWriter::new(
            w,
            self.ctx.limits.reply_write_timeout,
            "client",
        ));
    }

    fn set_upstream(&mut self, stream: BoxStream) {
        let (r, w) = tokio::io::split(stream);
        let codec = LineCodec::new(self.ctx.limits.max_reply_bytes);
        self.upstream_lines = Some(FramedRead::with_capacity(r, codec, LINE_BUFFER));
        // The same bound toward the server: a server that stops reading is a dead session.
        self.upstream_w = Some(LineWriter::new(
            w,
            self.ctx.limits.reply_write_timeout,
            "server",
        ));
    }

    /// The client is `peer` and reached this proxy at `local` (what a PROXY header toward
    /// the server says).
    pub(super) fn client_addrs(mut self, peer: SocketAddr, local: SocketAddr) -> Shell {
        self.client_addrs = Some((peer, local));
        self
    }

    /// The client asked for `name` in its implicit-TLS handshake (SNI).
    pub(super) fn client_named(mut self, name: Option<String>) -> Shell {
        self.client_name = name;
        self
    }

    /// Shows the session in `registration` while it runs.
    pub(super) fn registered(mut self, registration: Registration) -> Shell {
        self.registration = Some(registration);
        self
    }

    /// Runs the session to its end; the reason it ended.
    /// `hard_stop` is the proxy's shutdown; `end` an operator ending this session.
    pub(super) async fn run(
        mut self,
        hard_stop: CancellationToken,
        end: CancellationToken,
        until_login: UntilLogin,
    ) -> anyhow::Result<&'static str> {
        let mut until_login = Some(until_login);
        loop {
            if until_login.is_some() && self.machine.logged_in() {
                until_login = None;
            }
            while let Some(action) = self.machine.poll_action() {
                if let Some(reason) = self.execute(action).await? {
                    return Ok(reason);
                }
            }
            let deadline = self.machine.poll_timeout();
            let reading = self.machine.wants_client_input();
            let event = tokio::select! {
                biased;
                _ = hard_stop.cancelled() => Event::Stop,
                _ = end.cancelled(), if self.machine.end_reason().is_none() => Event::Ended,
                _ = sleep_until(deadline) => {
                    self.machine.handle_timeout(Instant::now());
                    self.refresh();
                    continue;
                }
                line = next_line(&mut self.client_lines), if reading => client_event(line)?,
                line = next_line(&mut self.upstream_lines) => upstream_event(line),
                Some(done) = self.ops.next(), if !self.ops.is_empty() => self.keep(done),
                done = transfer_done(&mut self.transfer) => {
                    self.transfer = None;
                    Event::TransferFinished(match done {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err(DataError::Io(io::ErrorKind::Interrupted.into()).to_string()),
                    })
                }
                news = fxp_news(&mut self.fxp) => match news {
                    Some(event) => event,
                    None => {
                        self.fxp = None;
                        Event::FxpTaskEnded
                    }
                },
            };
            self.machine.handle(event, Instant::now());
            self.refresh();
        }
    }

    /// Shows what the machine knows now in `GET /api/v1/sessions`.
    fn refresh(&self) {
        if let Some(r) = &self.registration {
            r.update(self.machine.snapshot());
        }
    }

    /// Takes over what an operation opened; the event that reports it.
    fn keep(&mut self, done: Completion) -> Event {
        match done.keep {
            Some(Keep::Client(s, name)) => {
                self.set_client(s, &[]);
                if let Some(name) = name {
                    self.client_name = Some(name.clone());
                    self.machine
                        .handle(Event::ClientNamed(name), Instant::now());
                }
            }
            Some(Keep::Upstream(s)) => self.set_upstream(s),
            Some(Keep::UpstreamData(s)) => self.upstream_data = Some(s),
            Some(Keep::UpstreamInside(l)) => self.upstream_inside = Some(l),
            None => {}
        }
        done.event
    }

    /// Carries out one action; `Some(reason)` once the session is closed.
    async fn execute(&mut self, action: Action) -> anyhow::Result<Option<&'static str>> {
        let limits = &self.ctx.limits;
        match action {
            Action::ToClient(bytes) => {
                if let Some(w) = self.client_w.as_mut() {
                    let written = w.send(&bytes).await;
                    // After the end only the last words are at stake: a gone client is fine.
                    if self.machine.end_reason().is_none() {
                        written?;
                    }
                }
            }
            Action::ToUpstream(bytes) => {
                if let Some(w) = self.upstream_w.as_mut()
                    && let Err(e) = w.send(&bytes).await
                {
                    self.machine
                        .handle(Event::UpstreamError(e.to_string()), Instant::now());
                }
            }
            Action::Routed { route, label } => self.routed(route, label),
            Action::ChooseBackend {
                client,
                user,
                tried,
            } => {
                let pool = self.pool();
                let chosen = pool.and_then(|p| p.choose(client, user.as_deref(), &tried));
                let backend = chosen.as_ref().map(|c| Backend {
                    index: c.index,
                    target: c.target.clone(),
                });
                self.backend = chosen;
                self.machine
                    .handle(Event::BackendChosen(backend), Instant::now());
            }
            Action::BackendFailed { index, error } => {
                if let Some(pool) = self.pool() {
                    pool.session_failed(index, &error);
                }
                if self.backend.as_ref().is_some_and(|c| c.index == index) {
                    self.backend = None;
                }
            }
            Action::Connect(req) => {
                let op = self.connect(req);
                self.ops.push(op);
            }
            Action::Resolve(name) => {
                let limit = limits.connect_timeout;
                self.ops.push(
                    async move {
                        Event::Resolved(
                            upstream::resolve(&name, limit)
                                .await
                                .map_err(|e| e.to_string()),
                        )
                        .into()
                    }
                    .boxed(),
                );
            }
            Action::Lease { slot, bind, client } => {
                let max = limits.max_data_ports_per_ip;
                let result = match self.listener.services.ports.lease_for(bind, client, max) {
                    Ok(leased) => {
                        let port = leased.port();
                        match slot {
                            Slot::ClientPassive => self.client_passive = Some(leased),
                            Slot::UpstreamActive => self.upstream_active = Some(leased),
                            Slot::UpstreamData => {}
                        }
                        Ok(port)
                    }
                    Err(e) => Err(e),
                };
                self.machine
                    .handle(Event::Leased { slot, result }, Instant::now());
            }
            Action::ListenInside { server } => self.listen_inside(server),
            Action::Release(slot) => match slot {
                Slot::ClientPassive => self.client_passive = None,
                Slot::UpstreamActive => {
                    self.upstream_active = None;
                    self.upstream_inside = None;
                }
                Slot::UpstreamData => self.upstream_data = None,
            },
            Action::ConnectData(to) => {
                let limit = limits.connect_timeout;
                // The agent that carries the control connection: the server takes the
                // data connection only from its control connection's client's address.
                let on = *self.agent_link.lock().unwrap_or_else(|e| e.into_inner());
                let dialer = self.listener.services.dialer.pinned(on);
                self.ops.push(
                    async move {
                        let direct = async {
                            match timeout(limit, socket::connect(to)).await {
                                Ok(r) => r.map_err(|e| DataConnectError::Io(e.to_string())),
                                Err(_) => Err(DataConnectError::Timeout),
                            }
                        };
                        match dialer.dial(&to.to_string(), limit, direct).await {
                            Ok(conn) => Completion {
                                event: Event::DataConnected(Ok(())),
                                keep: Some(Keep::UpstreamData(Leg::from(conn))),
                            },
                            Err(DialFailure::Agent(e)) => {
                                Event::DataConnected(Err(DataConnectError::Io(e.to_string())))
                                    .into()
                            }
                            Err(DialFailure::Direct(e)) => Event::DataConnected(Err(e)).into(),
                        }
                    }
                    .boxed(),
                );
            }
            Action::RememberPassiveRefusal(upstream) => {
                self.listener.services.passive_refusals.insert(upstream)
            }
            Action::StartTransfer {
                direction,
                client,
                upstream,
                client_tls,
                upstream_tls,
            } => {
                let data_acceptor = self.listener.services.tls.as_ref();
                let name = self.client_name.as_deref();
                let protect = Protection {
                    client: data_acceptor
                        .and_then(|t| t.client_data_for(name, self.route))
                        .filter(|_| client_tls),
                    upstream: match (&self.upstream_tls, &self.upstream_name) {
                        (Some(c), Some(n)) if upstream_tls => Some((c.clone(), n.clone())),
                        _ => None,
                    },
                };
                self.start_transfer(direction, client, upstream, protect)
            }
            Action::UpgradeClient => self.upgrade_client(),
            Action::UpgradeUpstream { server_name } => self.upgrade_upstream(&server_name),
            Action::AbortTransfer => self.transfer = None,
            Action::StartFxp {
                src,
                dst,
                recursive,
                rules,
            } => self.start_fxp(src, dst, rules, recursive),
            Action::CheckFxpDestination { url, rules } => self.check_fxp_destination(url, rules),
            Action::CancelFxp => self.fxp = None,
            Action::Defend { client, event } => {
                let guard = self.listener.services.defense.as_ref();
                if guard.is_some_and(|g| g.record(client, event)) {
                    self.machine.handle(Event::Banned, Instant::now());
                }
            }
            Action::Count(c, route) => count(&self.meter.scope().on(route), c),
            Action::Close => {
                if let Some(w) = self.client_w.as_mut() {
                    let _ = w.shutdown().await;
                }
                if let Some(w) = self.upstream_w.as_mut() {
                    let _ = w.shutdown().await;
                }
                return Ok(self.machine.end_reason());
            }
        }
        Ok(None)
    }

    fn connect(&mut self, req: ConnectRequest) -> BoxFuture<'static, Completion> {
        let listener = self.listener.clone();
        let client_local = self.client_local;
        let implicit = match (&req.tls, &self.upstream_tls) {
            (Some(name), Some(connector)) => match tls::server_name(name) {
                Ok(n) => {
                    self.upstream_name = Some(n.clone());
                    Some(Ok((connector.clone(), n)))
                }
                Err(e) => Some(Err(e.to_string())),
            },
            (Some(_), None) => Some(Err("no TLS client configured".to_string())),
            _ => None,
        };
        let proxy_header = req
            .proxy_header
            .map(|v| crate::proxy_protocol::encode(v, self.client_addrs));
        let failed = |f: ConnectFailure| Completion::from(Event::Connected(Err(f)));
        let scope = self.meter.scope().clone();
        // A listener whose server accepts no inbound connection reaches it through its
        // agent; the agent checks its own `allow`.
        let dialer = listener.services.dialer.clone();
        let pin = self.agent_link.clone();
        async move {
            let ctx = &listener.policy;
            let limit = ctx.limits.connect_timeout;
            let direct = async {
                if req.guarded {
                    let check =
                        |addr: SocketAddr| permitted(ctx, &req.target.host, addr, client_local);
                    upstream::connect_checked(&scope, &req.target, limit, req.source, check).await
                } else {
                    upstream::connect(&scope, &req.target, limit).await
                }
            };
            let conn = match dialer.dial(&req.target.to_string(), limit, direct).await {
                Ok(conn) => conn,
                Err(DialFailure::Agent(DialError::NotConnected(agent))) => {
                    return failed(ConnectFailure::AgentDown(agent));
                }
                Err(DialFailure::Direct(ConnectError::Denied(why))) => {
                    return failed(ConnectFailure::Denied(why));
                }
                Err(DialFailure::Direct(ConnectError::SelfTarget(why))) => {
                    return failed(ConnectFailure::SelfTarget(why));
                }
                Err(e) => return failed(ConnectFailure::Unreachable(e.to_string())),
            };
            let (peer, local) = match conn.addrs() {
                Ok((peer, local)) => (peer, local.ip()),
                Err(e) => return failed(ConnectFailure::Unreachable(e.to_string())),
            };
            // The session's data connections go through the same agent (Dialer::pinned).
            *pin.lock().unwrap_or_else(|e| e.into_inner()) = conn.link();
            let mut stream: BoxStream = Box::new(conn);
            // The header comes first, before any TLS: it is for the server's TCP layer.
            if let Some(header) = proxy_header {
                use tokio::io::AsyncWriteExt;
                if let Err(e) = stream.write_all(&header).await {
                    let e = format!("cannot write the PROXY header: {e}");
                    return failed(ConnectFailure::Unreachable(e));
                }
            }
            let stream: BoxStream = match implicit {
                None => stream,
                Some(Err(e)) => return failed(ConnectFailure::Tls(e)),
                Some(Ok((connector, server_name))) => {
                    let how = Handshake::Connect(connector, server_name);
                    match handshake::secure(how, stream, limit).await {
                        Ok(s) => {
                            metrics::tls_session(&scope, TlsSide::Upstream);
                            Box::new(s)
                        }
                        Err(e) => return failed(ConnectFailure::Tls(e)),
                    }
                }
            };
            let connected = Connected {
                peer,
                local,
                refuses_passive: listener.services.passive_refusals.contains(peer),
            };
            Completion {
                event: Event::Connected(Ok(connected)),
                keep: Some(Keep::Upstream(stream)),
            }
        }
        .boxed()
    }

    /// Asks the agent that carries the control connection to listen inside for the
    /// server's active-mode connection, for as long as a transfer may take to start.
    fn listen_inside(&mut self, server: SocketAddr) {
        let limits = &self.ctx.limits;
        let (limit, wait) = (
            limits.connect_timeout,
            limits.connect_timeout + limits.data_accept_timeout,
        );
        let via = self.ctx.cfg.via.clone();
        let hub = self.listener.services.agents.clone();
        let link = *self.agent_link.lock().unwrap_or_else(|e| e.into_inner());
        self.ops.push(
            async move {
                let (Some(agent), Some(hub), Some(link)) = (via, hub, link) else {
                    let why = "the control connection does not go through an agent";
                    return Event::ListeningInside(Err(why.into())).into();
                };
                match hub.listen(&agent, link, server, wait, limit).await {
                    Ok(inside) => Completion {
                        event: Event::ListeningInside(Ok(inside.addr())),
                        keep: Some(Keep::UpstreamInside(inside)),
                    },
                    Err(e) => Event::ListeningInside(Err(e.to_string())).into(),
                }
            }
            .boxed(),
        );
    }

    /// Hands the client connection to a TLS handshake as the server, dropping whatever
    /// the client sent after `AUTH TLS` unread.
    fn upgrade_client(&mut self) {
        let (Some(lines), Some(w)) = (self.client_lines.take(), self.client_w.take()) else {
            return;
        };
        let discarded = lines.read_buffer().len();
        let stream = lines.into_inner().unsplit(w.into_inner());
        // A route chosen by HOST before AUTH TLS shows its own certificate.
        let how = self
            .listener
            .services
            .tls
            .as_ref()
            .and_then(|t| t.client_for(self.route));
        let how = how
            .map(Handshake::Accept)
            .ok_or_else(|| "no TLS certificate configured".to_string());
        self.secure(TlsSide::Client, how, stream, discarded);
    }

    /// Hands the upstream connection to a TLS handshake as the client, dropping whatever
    /// the server sent after its `234` unread.
    fn upgrade_upstream(&mut self, server_name: &str) {
        let (Some(lines), Some(w)) = (self.upstream_lines.take(), self.upstream_w.take()) else {
            return;
        };
        let discarded = lines.read_buffer().len();
        let stream = lines.into_inner().unsplit(w.into_inner());
        let how = match (&self.upstream_tls, tls::server_name(server_name)) {
            (Some(c), Ok(n)) => {
                self.upstream_name = Some(n.clone());
                Ok(Handshake::Connect(c.clone(), n))
            }
            (None, _) => Err("no TLS client configured".to_string()),
            (_, Err(e)) => Err(e.to_string()),
        };
        self.secure(TlsSide::Upstream, how, stream, discarded);
    }

    /// Runs the handshake `how` (or reports why there is none) over the control
    /// connection of `side`.
    fn secure(
        &mut self,
        side: TlsSide,
        how: Result<Handshake, String>,
        stream: BoxStream,
        discarded: usize,
    ) {
        let limit = self.ctx.limits.connect_timeout;
        let scope = self.meter.scope().clone();
        self.ops.push(
            async move {
                let secured = match how {
                    Ok(how) => handshake::secure(how, stream, limit).await,
                    Err(e) => Err(e),
                };
                let (result, keep) = match secured {
                    Ok(s) => {
                        let name = handshake::client_name(&s);
                        metrics::tls_session(&scope, side);
                        let s: BoxStream = Box::new(s);
                        let keep = match side {
                            TlsSide::Client => Keep::Client(s, name),
                            TlsSide::Upstream => Keep::Upstream(s),
                        };
                        (Ok(()), Some(keep))
                    }
                    Err(e) => (Err(e), None),
                };
                let event = match side {
                    TlsSide::Client => Event::ClientSecured { result, discarded },
                    TlsSide::Upstream => Event::UpstreamSecured { result, discarded },
                };
                Completion { event, keep }
            }
            .boxed(),
        );
    }

    /// The machine took route `route` (`None`: the default) labelled `label`: its pool
    /// and upstream TLS from now on, its name in the session's log lines and metrics.
    fn routed(&mut self, route: Option<usize>, label: metrics::RouteLabel) {
        tracing::Span::current().record("route", label.as_str());
        self.meter.routed(label);
        self.route = route;
        let tls = self.listener.services.tls.as_ref();
        self.upstream_tls = tls
            .and_then(|t| t.upstream_of(route).0)
            .map(tls::Upstream::for_session);
    }

    /// The pool this session's backends come from: its route's, or the listener's.
    fn pool(&self) -> Option<&Arc<crate::pool::Pool>> {
        let services = &self.listener.services;
        match self.route {
            Some(i) => services.route_pools.get(i).and_then(Option::as_ref),
            None => services.pool.as_ref(),
        }
    }

    /// The CA the session's server is checked with (`tls.upstream.ca`, its route's).
    fn upstream_ca(&self) -> Option<crate::tls::CaCerts> {
        let tls = self.listener.services.tls.as_ref()?;
        tls.upstream_of(self.route).1.cloned()
    }

    fn start_transfer(
        &mut self,
        direction: crate::proto::Direction,
        client: ClientLeg,
        upstream: UpstreamLeg,
        protect: Protection,
    ) {
        let client = match client {
            // Behind a balancer that forwards the data ports, the client's connection
            // arrives from the balancer with a PROXY header naming the client.
            ClientLeg::Accept { expect } => {
                self.client_passive.take().map(|listener| Leg::Accept {
                    listener,
                    expect,
                    balancers: self.ctx.cfg.proxy_protocol.clone(),
                    guard: self.listener.services.defense.clone(),
                })
            }
            ClientLeg::Connect(to) => Some(Leg::Connect(to)),
        };
        let upstream = match upstream {
            UpstreamLeg::Connected => self.upstream_data.take(),
            UpstreamLeg::Accept { .. } if self.upstream_inside.is_some() => {
                self.upstream_inside.take().map(Leg::Inside)
            }
            UpstreamLeg::Accept { expect } => {
                self.upstream_active.take().map(|listener| Leg::Accept {
                    listener,
                    expect,
                    balancers: None,
                    guard: None,
                })
            }
        };
        let (tx, done) = oneshot::channel();
        let limits = Timeouts {
            accept: self.ctx.limits.data_accept_timeout,
            connect: self.ctx.limits.connect_timeout,
            idle: self.ctx.limits.data_idle_timeout,
        };
        let scope = self.meter.scope().clone();
        let live = self
            .registration
            .as_ref()
            .and_then(Registration::live_bytes);
        let progress = move |total| {
            if let Some(live) = &live {
                live.store(total, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let task = tokio::spawn(
            async move {
                let result = match (client, upstream) {
                    (Some(c), Some(u)) => {
                        relay::run(&scope, direction, (c, u), protect, limits, progress).await
                    }
                    // The machine ordered a leg the shell does not hold: a bug, reported
                    // as a failed transfer rather than a hang.
                    _ => Err(DataError::Io(io::Error::other(
                        "no data connection to relay",
                    ))),
                };
                let _ = tx.send(result);
            }
            .in_current_span(),
        );
        self.transfer = Some(TransferTask {
            _task: AbortOnDropHandle::new(task),
            done,
        });
    }

    fn start_fxp(&mut self, src: FtpUrl, dst: FtpUrl, rules: FxpRules, recursive: bool) {
        let (tx, news) = mpsc::unbounded_channel();
        let opts = engine_options(rules, self.upstream_ca(), &self.listener);
        let order = if recursive {
            Order::Tree {
                src,
                dst,
                mirror: Default::default(),
            }
        } else {
            Order::File {
                src,
                dst,
                skip_existing: false,
            }
        };
        // The job's events go to the machine as they come: it keeps the job's state.
        let task = tokio::spawn(
            async move {
                let mut events = runner::run(order, opts);
                while let Some(e) = events.next().await {
                    if tx.send(Event::FxpJob(e)).is_err() {
                        break;
                    }
                }
            }
            .in_current_span(),
        );
        self.fxp = Some(FxpTask {
            _task: AbortOnDropHandle::new(task),
            news,
        });
    }

    /// `SITE FXP TO`: logs in to the destination (every address checked against
    /// `allow` and the proxy's own sockets, each step within the engine's timeout) and
    /// out again.
    fn check_fxp_destination(&mut self, url: FtpUrl, rules: FxpRules) {
        let (tx, news) = mpsc::unbounded_channel();
        let opts = engine_options(rules, self.upstream_ca(), &self.listener);
        let task = tokio::spawn(
            async move {
                let result = match opts.open(&url).await {
                    Ok(c) => {
                        c.quit().await;
                        Ok(())
                    }
                    Err(error) => Err(Failure::from(&FxpError::Server {
                        side: crate::fxp::engine::Side::Destination,
                        host: url.host_port(),
                        error,
                    })),
                };
                let _ = tx.send(Event::FxpChecked(result));
            }
            .in_current_span(),
        );
        self.fxp = Some(FxpTask {
            _task: AbortOnDropHandle::new(task),
            news,
        });
    }
}

/// The engine's options for a `SITE FXP` task, as the machine's `rules` say, the
/// engine's defaults otherwise. The CA the rules name is the listener's
/// `tls.upstream.ca`, read with the configuration: nothing is read here. URLs naming an
/// agent (`?via=`, the session's own server on a `via` listener) go through the edge's
/// agent links.
fn engine_options(
    rules: FxpRules,
    loaded: Option<crate::tls::CaCerts>,
    listener: &ListenerCtx,
) -> EngineOptions {
    let ca = match (rules.ca, loaded) {
        (Some(_), Some(certs)) => ExtraRoots::Loaded(certs),
        (Some(path), None) => ExtraRoots::File(path),
        (None, _) => ExtraRoots::None,
    };
    EngineOptions {
        allow: Some(rules.allow),
        tls: TlsPolicy::new(rules.verify, ca),
        own: Some(rules.own),
        virtual_host: rules.virtual_host,
        agents: listener.services.agents.clone(),
        ..EngineOptions::default()
    }
}

/// A line read from the client's control connection, as the machine hears it; an I/O
/// error ends the session.
fn client_event(line: Option<Result<bytes::BytesMut, LineError>>) -> io::Result<Event> {
    Ok(match line {
        None => Event::ClientClosed,
        Some(Ok(line)) => Event::ClientLine(line.freeze()),
        Some(Err(LineError::TooLong(e))) => Event::ClientOverlong { max: e.max },
        // A TLS peer that closes without close_notify: nothing to lose on a control
        // connection, the session is simply over.
        Some(Err(LineError::Io(e))) if closed_without_notify(&e) => Event::ClientClosed,
        Some(Err(LineError::Io(e))) => return Err(e),
    })
}

/// A line read from the upstream's control connection, as the machine hears it.
fn upstream_event(line: Option<Result<bytes::BytesMut, LineError>>) -> Event {
    match line {
        None => Event::UpstreamClosed,
        Some(Ok(line)) => Event::UpstreamLine(line.freeze()),
        Some(Err(LineError::TooLong(_))) => Event::UpstreamOverlong,
        Some(Err(LineError::Io(e))) if closed_without_notify(&e) => Event::UpstreamClosed,
        Some(Err(LineError::Io(e))) => Event::UpstreamError(e.to_string()),
    }
}

fn closed_without_notify(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::UnexpectedEof
}

fn count(scope: &metrics::Scope, c: Count) {
    match c {
        // A client's verbs are the same whatever the route: per listener only.
        Count::Command(verb) => metrics::command(scope.listener(), &verb),
        Count::Reply(code) => metrics::reply(scope, code),
        Count::Rewrite { kind, reason } => metrics::rewrite(scope, kind, reason),
        Count::Rejected(r) => metrics::rejected(scope, r),
        Count::Transfer(result) => metrics::data_transfer(scope, result),
        Count::Login { ok } => metrics::login(scope, ok),
        Count::FxpCancelled { method, took } => {
            let method = method.map_or("none", |m| m.as_str());
            metrics::fxp_transfer("cancelled", method, 0, took)
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

async fn next_line(lines: &mut Option<Lines>) -> Option<Result<bytes::BytesMut, LineError>> {
    match lines {
        Some(l) => l.next().await,
        None => std::future::pending().await,
    }
}

async fn transfer_done(
    t: &mut Option<TransferTask>,
) -> Result<Result<Moved, DataError>, oneshot::error::RecvError> {
    match t {
        Some(t) => (&mut t.done).await,
        None => std::future::pending().await,
    }
}

async fn fxp_news(f: &mut Option<FxpTask>) -> Option<Event> {
    match f {
        Some(f) => f.news.recv().await,
        None => std::future::pending().await,
    }
}
