//! The session's async shell: it owns the sockets, the leased ports and the tasks, feeds
//! what happens to the [`Machine`] and carries out the [`Action`]s it answers with. It
//! decides nothing. Both control connections are boxed `AsyncRead + AsyncWrite` streams,
//! so a TLS stream can take the place of a TCP one mid-session.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::context::ListenerCtx;
use super::machine::{
    Action, ClientLeg, ConnectFailure, ConnectRequest, Connected, Count, DataConnectError,
    FxpResult, Machine, Slot, UpstreamLeg, permitted,
};
use super::registry::Registration;
use crate::codec::{LineCodec, LineError, LineWriter};
use crate::data::LeasedListener;
use crate::data::relay::{self, DataError, Leg, Moved, Protection, Timeouts};
use crate::data::socket;
use crate::fxp::engine::{self, Event as FxpEvent, FxpError, Options};
use crate::fxp::url::FtpUrl;
use crate::metrics::{self, TlsSide};
use crate::tls::{self, TlsAcceptor, TlsConnector};
use crate::upstream::{self, ConnectError};
use rustls::pki_types::ServerName;
use tracing::warn;

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

/// What an asynchronous operation the machine ordered came back with.
enum Done {
    Connected(Result<(BoxStream, Connected), ConnectFailure>),
    Resolved(io::Result<Vec<IpAddr>>),
    DataConnected(Result<TcpStream, DataConnectError>),
    /// A control connection's TLS handshake; `discarded` bytes had been read past the
    /// `AUTH TLS` exchange and were dropped unread.
    Secured {
        side: TlsSide,
        stream: Result<BoxStream, String>,
        discarded: usize,
    },
}

/// What a `SITE FXP` task reports.
enum FxpNews {
    Bytes {
        done: u64,
        total: Option<u64>,
    },
    /// A tree's files: copied, listed.
    Files {
        done: usize,
        total: usize,
    },
    /// A method is being tried (for the metric of a cancelled copy).
    Method(&'static str),
    Finished(FxpResult),
    TreeFinished(Result<crate::fxp::tree::TreeReport, FxpError>),
    /// The `SITE FXP TO` login check.
    Checked(Result<(), FxpError>),
}

/// What woke the loop.
enum Wake {
    Stop,
    Timer,
    Client(Option<Result<bytes::BytesMut, LineError>>),
    Upstream(Option<Result<bytes::BytesMut, LineError>>),
    Op(Done),
    Transfer(Result<Result<Moved, DataError>, oneshot::error::RecvError>),
    Fxp(Option<FxpNews>),
}

/// One running relayed transfer: dropping it stops the task and closes both data
/// connections.
struct TransferTask {
    _task: AbortOnDropHandle<()>,
    done: oneshot::Receiver<Result<Moved, DataError>>,
}

/// One running `SITE FXP` copy: dropping it cancels the engine, which closes its
/// sessions with both servers.
struct FxpTask {
    _task: AbortOnDropHandle<()>,
    news: mpsc::UnboundedReceiver<FxpNews>,
    /// A copy (not a destination check): a cancel is counted.
    copy: bool,
    /// The method last tried, for that count.
    method: &'static str,
    started: Instant,
}

pub(super) struct Shell {
    ctx: Arc<ListenerCtx>,
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
    ops: FuturesUnordered<BoxFuture<'static, Done>>,
    client_passive: Option<LeasedListener>,
    upstream_active: Option<LeasedListener>,
    upstream_data: Option<TcpStream>,
    transfer: Option<TransferTask>,
    fxp: Option<FxpTask>,
    /// The session's entry in `GET /api/v1/sessions`, refreshed after every event.
    registration: Option<Registration>,
    /// The client's address and the one it connected to, for a PROXY header toward the
    /// server (`upstream_proxy_protocol`).
    client_addrs: Option<(SocketAddr, SocketAddr)>,
}

impl Shell {
    /// `early` holds bytes the client sent before the session started (behind a PROXY
    /// header, in the same segment).
    pub(super) fn new(
        ctx: Arc<ListenerCtx>,
        machine: Machine,
        client: BoxStream,
        early: &[u8],
        client_local: IpAddr,
    ) -> Shell {
        let upstream_tls = ctx
            .cfg
            .tls
            .as_ref()
            .and_then(|t| t.upstream.as_ref())
            .map(tls::Upstream::for_session);
        let mut shell = Shell {
            ctx,
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
            upstream_data: None,
            transfer: None,
            fxp: None,
            registration: None,
            client_addrs: None,
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

    /// Shows the session in `registration` while it runs.
    pub(super) fn registered(mut self, registration: Registration) -> Shell {
        self.registration = Some(registration);
        self
    }

    /// Runs the session to its end; the reason it ended.
    pub(super) async fn run(
        mut self,
        hard_stop: CancellationToken,
        until_login: UntilLogin,
    ) -> anyhow::Result<&'static str> {
        let mut until_login = Some(until_login);
        self.machine.start();
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
            let wake = tokio::select! {
                biased;
                _ = hard_stop.cancelled() => Wake::Stop,
                _ = sleep_until(deadline) => Wake::Timer,
                line = next_line(&mut self.client_lines), if reading => Wake::Client(line),
                line = next_line(&mut self.upstream_lines) => Wake::Upstream(line),
                Some(done) = self.ops.next(), if !self.ops.is_empty() => Wake::Op(done),
                done = transfer_done(&mut self.transfer) => Wake::Transfer(done),
                news = fxp_news(&mut self.fxp) => Wake::Fxp(news),
            };
            self.feed(wake)?;
            if let Some(r) = &self.registration {
                r.update(self.machine.snapshot());
            }
        }
    }

    /// Hands what happened to the machine.
    fn feed(&mut self, wake: Wake) -> anyhow::Result<()> {
        let now = Instant::now();
        let m = &mut self.machine;
        match wake {
            Wake::Stop => m.on_stop(),
            Wake::Timer => m.on_timer(now),
            Wake::Client(None) => m.on_client_closed(),
            Wake::Client(Some(Ok(line))) => m.on_client_line(&line, now),
            Wake::Client(Some(Err(LineError::TooLong(e)))) => m.on_client_overlong(e.max),
            // A TLS peer that closes without close_notify: nothing to lose on a control
            // connection, the session is simply over.
            Wake::Client(Some(Err(LineError::Io(e)))) if closed_without_notify(&e) => {
                m.on_client_closed()
            }
            Wake::Client(Some(Err(LineError::Io(e)))) => return Err(e.into()),
            Wake::Upstream(None) => m.on_upstream_closed(),
            Wake::Upstream(Some(Ok(line))) => m.on_upstream_line(&line, now),
            Wake::Upstream(Some(Err(LineError::TooLong(_)))) => m.on_upstream_overlong(),
            Wake::Upstream(Some(Err(LineError::Io(e)))) if closed_without_notify(&e) => {
                m.on_upstream_closed()
            }
            Wake::Upstream(Some(Err(LineError::Io(e)))) => m.on_upstream_error(&e.to_string()),
            Wake::Op(Done::Connected(Ok((stream, connected)))) => {
                self.set_upstream(stream);
                self.machine.on_connected(Ok(connected), now);
            }
            Wake::Op(Done::Connected(Err(failure))) => m.on_connected(Err(failure), now),
            Wake::Op(Done::Secured {
                side,
                stream,
                discarded,
            }) => {
                let result = stream.map(|s| match side {
                    TlsSide::Client => self.set_client(s, &[]),
                    TlsSide::Upstream => self.set_upstream(s),
                });
                if result.is_ok() {
                    metrics::tls_session(&self.ctx.cfg.name, side);
                }
                match side {
                    TlsSide::Client => self.machine.on_client_secured(result, discarded, now),
                    TlsSide::Upstream => {
                        if discarded > 0 {
                            warn!(
                                bytes = discarded,
                                "discarded what the server sent in clear after its 234"
                            );
                        }
                        self.machine.on_upstream_secured(result, now)
                    }
                }
            }
            Wake::Op(Done::Resolved(r)) => m.on_resolved(r.map_err(|e| e.to_string()), now),
            Wake::Op(Done::DataConnected(r)) => {
                let r = r.map(|stream| self.upstream_data = Some(stream));
                self.machine.on_data_connected(r, now);
            }
            Wake::Transfer(done) => {
                self.transfer = None;
                let result = match done {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(DataError::Io(io::ErrorKind::Interrupted.into()).to_string()),
                };
                self.machine.on_transfer_finished(result, now);
            }
            Wake::Fxp(Some(FxpNews::Bytes { done, total })) => m.on_fxp_progress(done, total),
            Wake::Fxp(Some(FxpNews::Files { done, total })) => m.on_fxp_files(done, total),
            Wake::Fxp(Some(FxpNews::Method(method))) => {
                if let Some(f) = self.fxp.as_mut() {
                    f.method = method;
                }
            }
            Wake::Fxp(news) => {
                let copy = self.fxp.take().is_some_and(|f| f.copy);
                let m = &mut self.machine;
                match news {
                    Some(FxpNews::Finished(r)) => m.on_fxp_finished(r, now),
                    Some(FxpNews::TreeFinished(r)) => m.on_fxp_tree_finished(r, now),
                    Some(FxpNews::Checked(r)) => m.on_fxp_destination_checked(r, now),
                    // The task ended without a word (it panicked).
                    _ if copy => m.on_fxp_finished(Err(stopped("copy")), now),
                    _ => m.on_fxp_destination_checked(Err(stopped("login check")), now),
                }
            }
        }
        Ok(())
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
                    self.machine.on_upstream_error(&e.to_string());
                }
            }
            Action::Connect(req) => {
                let op = self.connect(req);
                self.ops.push(op);
            }
            Action::Resolve(name) => {
                let limit = limits.connect_timeout;
                self.ops.push(
                    async move { Done::Resolved(upstream::resolve(&name, limit).await) }.boxed(),
                );
            }
            Action::Lease { slot, bind, client } => {
                let max = limits.max_data_ports_per_ip;
                let port = match self.ctx.ports.lease_for(bind, client, max) {
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
                self.machine.on_leased(slot, port, Instant::now());
            }
            Action::Release(slot) => match slot {
                Slot::ClientPassive => self.client_passive = None,
                Slot::UpstreamActive => self.upstream_active = None,
                Slot::UpstreamData => self.upstream_data = None,
            },
            Action::ConnectData(to) => {
                let limit = limits.connect_timeout;
                self.ops.push(
                    async move {
                        let r = match timeout(limit, socket::connect(to)).await {
                            Ok(Ok(s)) => Ok(s),
                            Ok(Err(e)) => Err(DataConnectError::Io(e.to_string())),
                            Err(_) => Err(DataConnectError::Timeout),
                        };
                        Done::DataConnected(r)
                    }
                    .boxed(),
                );
            }
            Action::StartTransfer {
                direction,
                client,
                upstream,
                client_tls,
                upstream_tls,
            } => {
                let protect = Protection {
                    client: self.data_acceptor().filter(|_| client_tls),
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
                allow,
                recursive,
            } => self.start_fxp(src, dst, allow, recursive),
            Action::CheckFxpDestination { url, allow } => self.check_fxp_destination(url, allow),
            Action::CancelFxp => {
                if let Some(f) = self.fxp.take()
                    && f.copy
                {
                    metrics::fxp_transfer("cancelled", f.method, 0, f.started.elapsed());
                }
            }
            Action::Count(c) => count(&self.ctx.cfg.name, c),
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

    fn connect(&mut self, req: ConnectRequest) -> BoxFuture<'static, Done> {
        let ctx = self.ctx.clone();
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
        let proxy_header = ctx
            .upstream_proxy
            .map(|v| crate::proxy_protocol::encode(v, self.client_addrs));
        async move {
            let (name, limit) = (&ctx.cfg.name, ctx.limits.connect_timeout);
            let r = if req.guarded {
                let check =
                    |addr: SocketAddr| permitted(&ctx, &req.target.host, addr, client_local);
                upstream::connect_checked(name, &req.target, limit, req.source, check).await
            } else {
                upstream::connect(name, &req.target, limit).await
            };
            let mut stream = match r {
                Ok(s) => s,
                Err(ConnectError::Denied(why)) => {
                    return Done::Connected(Err(ConnectFailure::Denied(why)));
                }
                Err(ConnectError::SelfTarget(why)) => {
                    return Done::Connected(Err(ConnectFailure::SelfTarget(why)));
                }
                Err(e) => return Done::Connected(Err(ConnectFailure::Unreachable(e.to_string()))),
            };
            let connected = match (stream.peer_addr(), stream.local_addr()) {
                (Ok(peer), Ok(local)) => Connected {
                    peer,
                    local: local.ip(),
                },
                (Err(e), _) | (_, Err(e)) => {
                    return Done::Connected(Err(ConnectFailure::Unreachable(e.to_string())));
                }
            };
            // The header comes first, before any TLS: it is for the server's TCP layer.
            if let Some(header) = proxy_header {
                use tokio::io::AsyncWriteExt;
                if let Err(e) = stream.write_all(&header).await {
                    let e = format!("cannot write the PROXY header: {e}");
                    return Done::Connected(Err(ConnectFailure::Unreachable(e)));
                }
            }
            let stream: BoxStream = match implicit {
                None => Box::new(stream),
                Some(Err(e)) => return Done::Connected(Err(ConnectFailure::Tls(e))),
                Some(Ok((connector, server_name))) => {
                    match handshake_upstream(connector, server_name, Box::new(stream), limit).await
                    {
                        Ok(s) => {
                            metrics::tls_session(name, TlsSide::Upstream);
                            s
                        }
                        Err(e) => return Done::Connected(Err(ConnectFailure::Tls(e))),
                    }
                }
            };
            Done::Connected(Ok((stream, connected)))
        }
        .boxed()
    }

    fn client_acceptor(&self) -> Option<TlsAcceptor> {
        self.ctx.cfg.tls.as_ref().and_then(|t| t.client.clone())
    }

    fn data_acceptor(&self) -> Option<TlsAcceptor> {
        self.ctx
            .cfg
            .tls
            .as_ref()
            .and_then(|t| t.client_data.clone())
    }

    /// Hands the client connection to a TLS handshake as the server, dropping whatever
    /// the client sent after `AUTH TLS` unread.
    fn upgrade_client(&mut self) {
        let (Some(lines), Some(w)) = (self.client_lines.take(), self.client_w.take()) else {
            return;
        };
        let discarded = lines.read_buffer().len();
        let stream = lines.into_inner().unsplit(w.into_inner());
        let acceptor = self.client_acceptor();
        let limit = self.ctx.limits.connect_timeout;
        self.ops.push(
            async move {
                let stream = match acceptor {
                    Some(a) => handshake_client(a, stream, limit).await,
                    None => Err("no TLS certificate configured".to_string()),
                };
                Done::Secured {
                    side: TlsSide::Client,
                    stream,
                    discarded,
                }
            }
            .boxed(),
        );
    }

    /// Hands the upstream connection to a TLS handshake as the client.
    fn upgrade_upstream(&mut self, server_name: &str) {
        let (Some(lines), Some(w)) = (self.upstream_lines.take(), self.upstream_w.take()) else {
            return;
        };
        let discarded = lines.read_buffer().len();
        let stream = lines.into_inner().unsplit(w.into_inner());
        let target = match (&self.upstream_tls, tls::server_name(server_name)) {
            (Some(c), Ok(n)) => {
                self.upstream_name = Some(n.clone());
                Ok((c.clone(), n))
            }
            (None, _) => Err("no TLS client configured".to_string()),
            (_, Err(e)) => Err(e.to_string()),
        };
        let limit = self.ctx.limits.connect_timeout;
        self.ops.push(
            async move {
                let stream = match target {
                    Ok((connector, name)) => {
                        handshake_upstream(connector, name, stream, limit).await
                    }
                    Err(e) => Err(e),
                };
                Done::Secured {
                    side: TlsSide::Upstream,
                    stream,
                    discarded,
                }
            }
            .boxed(),
        );
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
                })
            }
            ClientLeg::Connect(to) => Some(Leg::Connect(to)),
        };
        let upstream = match upstream {
            UpstreamLeg::Connected => self.upstream_data.take().map(Leg::Ready),
            UpstreamLeg::Accept { expect } => {
                self.upstream_active.take().map(|listener| Leg::Accept {
                    listener,
                    expect,
                    balancers: None,
                })
            }
        };
        let (tx, done) = oneshot::channel();
        let limits = Timeouts {
            accept: self.ctx.limits.data_accept_timeout,
            connect: self.ctx.limits.connect_timeout,
            idle: self.ctx.limits.data_idle_timeout,
        };
        let name = self.ctx.cfg.name.clone();
        let task = tokio::spawn(
            async move {
                let result = match (client, upstream) {
                    (Some(c), Some(u)) => relay::run(&name, direction, c, u, protect, limits).await,
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

    /// The engine's options for a `SITE FXP` task: `allow`, the proxy's own sockets, and
    /// the trust of the listener's upstream leg.
    fn fxp_options(&self, allow: Arc<crate::net::AllowList>) -> Options {
        use crate::fxp::{ExtraRoots, TlsPolicy};
        Options {
            allow: Some(allow),
            // The CA file was read with the configuration: nothing is read here.
            tls: match &self.ctx.cfg.tls {
                Some(t) => TlsPolicy::new(
                    t.settings.upstream.verify,
                    t.upstream_ca
                        .clone()
                        .map_or(ExtraRoots::None, ExtraRoots::Loaded),
                ),
                None => Options::default().tls,
            },
            own: Some(self.ctx.own.clone()),
            ..Options::default()
        }
    }

    fn start_fxp(
        &mut self,
        src: crate::fxp::url::FtpUrl,
        dst: crate::fxp::url::FtpUrl,
        allow: Arc<crate::net::AllowList>,
        recursive: bool,
    ) {
        let (tx, news) = mpsc::unbounded_channel();
        let progress_tx = tx.clone();
        let mut opts = self.fxp_options(allow);
        let progress: crate::fxp::Progress = Arc::new(move |e: &FxpEvent| {
            let news = match e {
                FxpEvent::Bytes { done, total } => FxpNews::Bytes {
                    done: *done,
                    total: *total,
                },
                FxpEvent::Trying { method, .. } => FxpNews::Method(method.as_str()),
                _ => return,
            };
            let _ = progress_tx.send(news);
        });
        if recursive {
            // A tree's files run side by side: their bytes are summed per file.
            opts.files = Some(Arc::new(TreeNews {
                tx: tx.clone(),
                files: Arc::default(),
            }));
        } else {
            opts.progress = Some(progress);
        }
        let task = tokio::spawn(
            async move {
                let news = if recursive {
                    FxpNews::TreeFinished(crate::fxp::tree::copy_tree(&src, &dst, &opts).await)
                } else {
                    FxpNews::Finished(engine::transfer(&src, &dst, &opts).await)
                };
                let _ = tx.send(news);
            }
            .in_current_span(),
        );
        self.fxp = Some(FxpTask {
            _task: AbortOnDropHandle::new(task),
            news,
            copy: true,
            method: "none",
            started: Instant::now(),
        });
    }

    /// `SITE FXP TO`: logs in to the destination (every address checked against
    /// `allow` and the proxy's own sockets, each step within the engine's timeout) and
    /// out again.
    fn check_fxp_destination(
        &mut self,
        url: crate::fxp::url::FtpUrl,
        allow: Arc<crate::net::AllowList>,
    ) {
        let (tx, news) = mpsc::unbounded_channel();
        let opts = self.fxp_options(allow);
        let task = tokio::spawn(
            async move {
                let result = match opts.open(&url).await {
                    Ok(c) => {
                        c.quit().await;
                        Ok(())
                    }
                    Err(error) => Err(FxpError::Server {
                        side: crate::fxp::engine::Side::Destination,
                        host: url.host_port(),
                        error,
                    }),
                };
                let _ = tx.send(FxpNews::Checked(result));
            }
            .in_current_span(),
        );
        self.fxp = Some(FxpTask {
            _task: AbortOnDropHandle::new(task),
            news,
            copy: false,
            method: "none",
            started: Instant::now(),
        });
    }
}

/// One file of a `SITE FXP -r` tree: bytes so far, size, done.
type TreeFile = (u64, Option<u64>, bool);

/// A `SITE FXP -r` tree's progress, summed over its files for `STAT`.
#[derive(Clone)]
struct TreeNews {
    tx: mpsc::UnboundedSender<FxpNews>,
    /// Per file: bytes so far, size, done.
    files: Arc<std::sync::Mutex<Vec<TreeFile>>>,
}

impl TreeNews {
    fn update(&self, f: impl FnOnce(&mut Vec<TreeFile>)) {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut files);
        let done = files.iter().map(|f| f.0).sum();
        let total = files.iter().map(|f| f.1).sum();
        let copied = files.iter().filter(|f| f.2).count();
        let _ = self.tx.send(FxpNews::Bytes { done, total });
        let _ = self.tx.send(FxpNews::Files {
            done: copied,
            total: files.len(),
        });
    }
}

impl crate::fxp::engine::FileHooks for TreeNews {
    fn listed(&self, list: &[(FtpUrl, FtpUrl)]) {
        self.update(|files| *files = vec![(0, None, false); list.len()]);
    }

    fn started(&self, index: usize, _src: &FtpUrl, _dst: &FtpUrl) -> Option<crate::fxp::Progress> {
        let me = self.clone();
        Some(Arc::new(move |e: &FxpEvent| me.event(index, e)))
    }

    fn finished(
        &self,
        index: usize,
        _src: &FtpUrl,
        _dst: &FtpUrl,
        result: Result<&crate::fxp::Report, &crate::fxp::FxpError>,
    ) {
        self.update(|files| {
            if let (Some(f), Ok(r)) = (files.get_mut(index), result) {
                (f.0, f.1, f.2) = (r.bytes, f.1.or(Some(r.bytes)), true);
            }
        });
    }
}

impl TreeNews {
    fn event(&self, index: usize, event: &FxpEvent) {
        let news = match event {
            FxpEvent::Trying { method, .. } => FxpNews::Method(method.as_str()),
            FxpEvent::Started { size, .. } => {
                return self.update(|files| {
                    if let Some(f) = files.get_mut(index) {
                        f.1 = *size;
                    }
                });
            }
            FxpEvent::Bytes { done, total } => {
                return self.update(|files| {
                    if let Some(f) = files.get_mut(index) {
                        (f.0, f.1) = (*done, total.or(f.1));
                    }
                });
            }
            _ => return,
        };
        let _ = self.tx.send(news);
    }
}

/// The proxy as TLS server of the client's control connection.
pub(super) async fn handshake_client(
    acceptor: TlsAcceptor,
    stream: BoxStream,
    limit: std::time::Duration,
) -> Result<BoxStream, String> {
    let started = Instant::now();
    let r = timeout(limit, acceptor.accept(stream)).await;
    let took = started.elapsed();
    let r = match r {
        Ok(Ok(s)) => {
            let resumed = s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            metrics::tls_handshake(TlsSide::Client, "control", true, resumed, took);
            return Ok(Box::new(s));
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no TLS handshake within {limit:?}"),
    };
    metrics::tls_handshake(TlsSide::Client, "control", false, false, took);
    Err(r)
}

/// The proxy as TLS client of the server's control connection.
async fn handshake_upstream(
    connector: TlsConnector,
    name: ServerName<'static>,
    stream: BoxStream,
    limit: std::time::Duration,
) -> Result<BoxStream, String> {
    let started = Instant::now();
    let r = timeout(limit, connector.connect(name, stream)).await;
    let took = started.elapsed();
    let r = match r {
        Ok(Ok(s)) => {
            let resumed = s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            metrics::tls_handshake(TlsSide::Upstream, "control", true, resumed, took);
            return Ok(Box::new(s));
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no TLS handshake within {limit:?}"),
    };
    metrics::tls_handshake(TlsSide::Upstream, "control", false, false, took);
    Err(r)
}

fn closed_without_notify(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::UnexpectedEof
}

fn count(listener: &str, c: Count) {
    match c {
        Count::Command(verb) => metrics::command(listener, &verb),
        Count::Reply(code) => metrics::reply(listener, code),
        Count::Rewrite { kind, reason } => metrics::rewrite(listener, kind, reason),
        Count::Rejected(r) => metrics::rejected(listener, r),
        Count::Transfer(result) => metrics::data_transfer(listener, result),
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

fn stopped(what: &str) -> FxpError {
    FxpError::Other(format!("the {what} task stopped"))
}

async fn fxp_news(f: &mut Option<FxpTask>) -> Option<FxpNews> {
    match f {
        Some(f) => f.news.recv().await,
        None => std::future::pending().await,
    }
}
