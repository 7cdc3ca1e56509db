//! One client session: a task that owns the client's control connection and its upstream
//! control connection, relays commands and replies line by line, and applies the
//! rewriting decisions of [`crate::rewrite`]. In relay mode, [`data`] owns the data
//! connections as well.

mod data;
mod forward;
mod site;
mod transparent;
mod writer;

use writer::ClientWriter;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::codec::{LineCodec, LineError};
use crate::config::{DataConfig, DataMode, Limits, ListenerConfig, Mode};
use crate::data::PortPool;
use crate::data::relay::Direction;
use crate::metrics;
use crate::net::AllowList;
use crate::proto::command::{Command, Verb, parse_command};
use crate::proto::line::trim_eol;
use crate::proto::reply::{Reply, ReplyAssembler, ReplyError, reply_line};
use crate::rewrite::{self, ReplyAction};
use crate::upstream;

use data::{DataChannel, TransferEvent};
use forward::Login;

/// Initial read buffer of each control connection (they grow for longer lines). Control
/// lines are short, and tokio-util's 8 KiB default, twice per session, was most of an idle
/// session's memory (heaptrack, 2000 sessions: 33 of 56 MB).
const LINE_BUFFER: usize = 1024;

/// After this many consecutive unparseable command lines the client is disconnected:
/// nobody types that much garbage by accident.
const MAX_BAD_COMMANDS: u32 = 10;

/// What a session needs from its listener; shared by all sessions of that listener.
#[derive(Debug)]
pub struct ListenerCtx {
    pub cfg: ListenerConfig,
    pub limits: Limits,
    /// Where relay-mode data ports come from (shared by every listener).
    pub ports: PortPool,
    /// `data.bind`: local address for data listeners, if set.
    pub data_bind: Option<IpAddr>,
    /// `upstream_data: auto`: upstreams (control address) that answered `PASV`/`EPSV`
    /// with a 5xx, so later sessions go straight to active mode with them.
    pub passive_refused_by: PassiveRefusals,
    /// Every address this proxy listens on: forward mode never connects to these.
    pub own_binds: Vec<SocketAddr>,
    /// `fxp.allow`: the servers `SITE FXP` may reach besides the session's own.
    pub fxp_allow: Arc<AllowList>,
}

/// The upstreams `upstream_data: auto` has seen refuse passive mode. Bounded: in forward
/// and transparent mode the upstreams are the clients' choice.
#[derive(Debug, Default)]
pub struct PassiveRefusals(std::sync::Mutex<std::collections::HashSet<SocketAddr>>);

impl PassiveRefusals {
    const MAX: usize = 4096;

    pub fn contains(&self, upstream: SocketAddr) -> bool {
        self.set().contains(&upstream)
    }

    pub fn insert(&self, upstream: SocketAddr) {
        let mut set = self.set();
        if set.len() >= Self::MAX {
            // Forgetting only costs one more PASV attempt per upstream.
            set.clear();
        }
        set.insert(upstream);
    }

    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<SocketAddr>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ListenerCtx {
    pub fn new(cfg: ListenerConfig, limits: Limits, data: &DataConfig, ports: PortPool) -> Self {
        ListenerCtx {
            cfg,
            limits,
            ports,
            data_bind: data.bind,
            passive_refused_by: PassiveRefusals::default(),
            own_binds: Vec::new(),
            fxp_allow: Arc::default(),
        }
    }
}

/// Runs one session to completion. Never panics on peer input; every way out is logged
/// once and counted.
/// `peer` is the client's address (from the PROXY header behind a load balancer);
/// `early` holds bytes the client sent before the proxy read anything else.
pub async fn run(
    client: TcpStream,
    peer: SocketAddr,
    early: Vec<u8>,
    ctx: Arc<ListenerCtx>,
    hard_stop: CancellationToken,
) {
    let span = tracing::info_span!("session", listener = %ctx.cfg.name, client = %peer);
    async move {
        let started = Instant::now();
        metrics::session_started(&ctx.cfg.name);
        let outcome = serve(client, peer, early, &ctx, hard_stop).await;
        metrics::session_ended(&ctx.cfg.name, started.elapsed());
        let secs = started.elapsed().as_secs_f32();
        match outcome {
            Ok(end) => info!(reason = end, secs, "session ended"),
            Err(e) => warn!(error = %e, secs, "session failed"),
        }
    }
    .instrument(span)
    .await
}

const SHUTTING_DOWN: &[u8] = b"421 Service not available: the proxy is shutting down.\r\n";

async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    early: Vec<u8>,
    ctx: &ListenerCtx,
    hard_stop: CancellationToken,
) -> anyhow::Result<&'static str> {
    let _ = client.set_nodelay(true);
    let client_local = client.local_addr()?.ip().to_canonical();
    let original = match ctx.cfg.mode {
        Mode::Transparent => Some(transparent::original_destination(&client)?),
        _ => None,
    };
    let (cr, client_w) = client.into_split();
    let mut client_w = ClientWriter::new(client_w, ctx.limits.reply_write_timeout);
    let mut client_lines =
        FramedRead::with_capacity(cr, LineCodec::new(ctx.limits.max_line_length), LINE_BUFFER);
    client_lines.read_buffer_mut().extend_from_slice(&early);
    let opening = async {
        match (&ctx.cfg.mode, &ctx.cfg.upstream) {
            (Mode::Reverse, Some(target)) => {
                match upstream::connect(&ctx.cfg.name, target, ctx.limits.connect_timeout).await {
                    Ok(stream) => Ok(Login::Connected {
                        upstream: stream,
                        user_line: Vec::new(),
                        target: target.clone(),
                    }),
                    Err(e) => {
                        warn!(upstream = %target, error = %e, "upstream unreachable");
                        let text = "Service not available: the FTP server behind this proxy cannot be reached.";
                        client_w.write_all(&reply_line(421, text)).await?;
                        Ok(Login::End("upstream unreachable"))
                    }
                }
            }
            (Mode::Transparent, _) => match original {
                Some(dst) => {
                    transparent::connect(
                        ctx,
                        dst,
                        peer.ip().to_canonical(),
                        client_local,
                        &mut client_w,
                    )
                    .await
                }
                None => Ok(Login::End("no original destination")),
            },
            _ => forward::login(ctx, client_local, &mut client_w, &mut client_lines).await,
        }
    };
    let login = tokio::select! {
        r = opening => r?,
        _ = hard_stop.cancelled() => Login::Stopped,
    };
    let (upstream, user_line) = match login {
        Login::Connected {
            upstream,
            user_line,
            target,
        } => {
            debug!(upstream = %target, "upstream connected");
            (upstream, user_line)
        }
        Login::Stopped => {
            let _ = client_w.write_all(SHUTTING_DOWN).await;
            let _ = client_w.shutdown().await;
            return Ok("shutdown");
        }
        Login::End(why) => {
            let _ = client_w.shutdown().await;
            return Ok(why);
        }
    };
    let upstream_port = upstream.peer_addr()?.port();
    let addrs = Addrs {
        client: peer.ip().to_canonical(),
        client_local,
        upstream: upstream.peer_addr()?.ip().to_canonical(),
        upstream_local: upstream.local_addr()?.ip().to_canonical(),
    };
    let (ur, uw) = upstream.into_split();
    let mut session = Session {
        ctx,
        addrs,
        client_w,
        upstream_w: uw,
        upstream_lines: FramedRead::with_capacity(
            ur,
            LineCodec::new(ctx.limits.max_reply_bytes),
            LINE_BUFFER,
        ),
        replies: ReplyAssembler::new(ctx.limits.max_reply_bytes),
        bad_commands: 0,
        logged_in: false,
        started: Instant::now(),
        last_command: Instant::now(),
        transfer_in_flight: false,
        upstream_port,
        last_verb: None,
        site: site::SiteFxp::default(),
        data: DataChannel::default(),
    };
    if !user_line.is_empty() {
        // Forward mode: the client already had the proxy's greeting; take the server's
        // in its place, then replay the client's USER with the host part removed.
        match session.read_final_reply().await? {
            Ok(greeting) if greeting.code == 220 => {}
            Ok(other) => {
                session.client_w.write_all(&other.raw).await?;
                return Ok("upstream refused the session");
            }
            Err(_) => return Ok("upstream sent no greeting"),
        }
        session.upstream_w.write_all(&user_line).await?;
        let user = trim_eol(user_line.strip_prefix(b"USER ").unwrap_or(&user_line));
        session.site.user = Some(String::from_utf8_lossy(user).into_owned());
    }
    session.relay(&mut client_lines, hard_stop).await
}

/// The addresses a session's decisions depend on (IPv4-mapped forms made plain).
#[derive(Debug, Clone, Copy)]
struct Addrs {
    /// The client, as seen on its control connection.
    client: IpAddr,
    /// The proxy's address that the client connected to.
    client_local: IpAddr,
    /// The upstream, as the proxy reached it.
    upstream: IpAddr,
    /// The proxy's address on the upstream control connection.
    upstream_local: IpAddr,
}

struct Session<'a> {
    ctx: &'a ListenerCtx,
    addrs: Addrs,
    client_w: ClientWriter,
    upstream_w: OwnedWriteHalf,
    upstream_lines: FramedRead<OwnedReadHalf, LineCodec>,
    replies: ReplyAssembler,
    bad_commands: u32,
    /// Set by the upstream's `230`: data ports are only spent on logged-in clients.
    logged_in: bool,
    /// When the session started (for `limits.login_timeout`).
    started: Instant,
    /// When the client last completed a command line (for `limits.idle_timeout`).
    last_command: Instant,
    /// Passthrough: a transfer command awaits its final reply, so a quiet control
    /// connection is not idle.
    transfer_in_flight: bool,
    /// The upstream's control port (for `SITE FXP`'s login to it).
    upstream_port: u16,
    /// The last command forwarded, to recognise the replies to `FEAT` and `HELP`.
    last_verb: Option<Verb>,
    site: site::SiteFxp,
    data: DataChannel,
}

/// Whether the session goes on after handling an event.
enum Flow {
    Continue,
    End(&'static str),
}

/// What woke the session loop.
enum Event {
    Stop,
    Timeout,
    Client(Option<Result<BytesMut, LineError>>),
    Upstream(Option<Result<BytesMut, LineError>>),
    Transfer(TransferEvent),
}

impl Session<'_> {
    fn listener(&self) -> &str {
        &self.ctx.cfg.name
    }

    fn relaying(&self) -> bool {
        self.ctx.cfg.data == DataMode::Relay
    }

    /// Relay mode handles data commands itself, but only for a logged-in client; before
    /// that they go to the server, which refuses them.
    fn relaying_for_client(&self) -> bool {
        self.relaying() && self.logged_in
    }

    async fn relay(
        &mut self,
        client_lines: &mut FramedRead<OwnedReadHalf, LineCodec>,
        hard_stop: CancellationToken,
    ) -> anyhow::Result<&'static str> {
        loop {
            let deadline = self.deadline();
            let event = tokio::select! {
                _ = hard_stop.cancelled() => Event::Stop,
                _ = tokio::time::sleep_until(deadline.into()) => Event::Timeout,
                line = client_lines.next() => Event::Client(line),
                line = self.upstream_lines.next() => Event::Upstream(line),
                done = self.data.finished() => Event::Transfer(done),
            };
            let flow = match event {
                Event::Stop => {
                    let _ = self.client_w.write_all(SHUTTING_DOWN).await;
                    Flow::End("shutdown")
                }
                Event::Timeout => self.on_timeout().await,
                Event::Client(None) => Flow::End("client closed"),
                Event::Client(Some(Ok(line))) => self.on_client_line(line).await?,
                Event::Client(Some(Err(LineError::TooLong(e)))) => {
                    metrics::rejected(self.listener(), "line_too_long");
                    warn!(max = e.max, "client sent an over-long command line");
                    let text = format!("Command line too long (limit {} bytes); closing.", e.max);
                    self.client_w.write_all(&reply_line(500, &text)).await?;
                    Flow::End("line too long")
                }
                Event::Client(Some(Err(LineError::Io(e)))) => return Err(e.into()),
                Event::Upstream(None) => self.on_upstream_eof().await,
                Event::Upstream(Some(Ok(line))) => self.on_upstream_line(&line).await?,
                Event::Upstream(Some(Err(LineError::TooLong(_)))) => {
                    self.upstream_broken(
                        "reply_too_large",
                        "a reply larger than limits.max_reply_bytes",
                    )
                    .await
                }
                Event::Upstream(Some(Err(LineError::Io(e)))) => return Err(e.into()),
                Event::Transfer(done) => {
                    self.on_transfer_finished(done).await?;
                    Flow::Continue
                }
            };
            if let Flow::End(why) = flow {
                let _ = self.client_w.shutdown().await;
                let _ = self.upstream_w.shutdown().await;
                return Ok(why);
            }
        }
    }

    /// The next moment a limit expires: the login deadline until the server accepted the
    /// login, and the idle deadline unless a transfer keeps the session busy.
    fn deadline(&self) -> Instant {
        let limits = &self.ctx.limits;
        // Far enough to never fire, near enough not to overflow.
        let never = Instant::now() + Duration::from_secs(86400 * 365);
        let busy = self.data.busy() || self.transfer_in_flight;
        let idle = if busy {
            never
        } else {
            self.last_command + limits.idle_timeout
        };
        let idle = match self.data.passive_expires() {
            Some(expires) => idle.min(expires),
            None => idle,
        };
        if self.logged_in {
            idle
        } else {
            idle.min(self.started + limits.login_timeout)
        }
    }

    async fn on_timeout(&mut self) -> Flow {
        if self.data.expire_passive() {
            metrics::rejected(self.listener(), "passive_unused");
            info!(
                after = ?self.ctx.limits.data_accept_timeout,
                "no transfer ordered for a passive data port; port released"
            );
            return Flow::Continue;
        }
        let (reason, text) =
            if !self.logged_in && self.started.elapsed() >= self.ctx.limits.login_timeout {
                ("login_timeout", "Login timed out; closing the connection.")
            } else {
                ("idle_timeout", "Idle timeout; closing the connection.")
            };
        metrics::rejected(self.listener(), reason);
        info!(reason, "closing the session");
        let _ = self.client_w.write_all(&reply_line(421, text)).await;
        Flow::End(reason)
    }

    async fn on_client_line(&mut self, line: BytesMut) -> anyhow::Result<Flow> {
        self.last_command = Instant::now();
        let cmd = match parse_command(&line) {
            Ok(cmd) => cmd,
            Err(e) => {
                self.bad_commands += 1;
                metrics::rejected(self.listener(), "bad_command");
                debug!(error = %e, "unparseable command line");
                if self.bad_commands >= MAX_BAD_COMMANDS {
                    let reply =
                        reply_line(421, "Too many invalid commands; closing the connection.");
                    self.client_w.write_all(&reply).await?;
                    return Ok(Flow::End("too many invalid commands"));
                }
                self.reply(500, "Syntax error, command unrecognized.")
                    .await?;
                return Ok(Flow::Continue);
            }
        };
        self.bad_commands = 0;
        let verb = cmd.verb.as_str();
        metrics::command(self.listener(), &cmd.verb);
        // Passwords: PASS's own, and the URLs of SITE FXP.
        if verb == "PASS" || (verb == "SITE" && site::is_site_fxp(cmd.args)) {
            debug!(verb, "command (argument hidden)");
        } else {
            debug!(verb, args = %String::from_utf8_lossy(cmd.args).trim_end(), "command");
        }

        self.last_verb = Some(cmd.verb);
        match verb {
            "USER" => {
                self.site.user = Some(String::from_utf8_lossy(trim_eol(cmd.args)).into_owned())
            }
            "PASS" => {
                self.site.pass = Some(String::from_utf8_lossy(trim_eol(cmd.args)).into_owned())
            }
            // SITE FXP is the proxy's own; other SITE commands go to the server.
            "SITE" if site::is_site_fxp(cmd.args) && !self.logged_in => {
                // Never forwarded: the server would see the destination's password.
                self.reply(530, "Please log in with USER and PASS first.")
                    .await?;
                return Ok(Flow::Continue);
            }
            "SITE" if self.logged_in && self.on_site(cmd.args).await? => {
                // A copy can outlast limits.idle_timeout; the client was waiting, not idle.
                self.last_command = Instant::now();
                return Ok(Flow::Continue);
            }
            _ => {}
        }
        match verb {
            "PROXY" => {
                // A PROXY header from a source not listed in `proxy_protocol.trusted`:
                // never believe it, never pass it on.
                metrics::rejected(self.listener(), "proxy_untrusted");
                warn!("PROXY header from an untrusted source; closing");
                self.reply(
                    500,
                    "PROXY headers are accepted only from trusted load balancers.",
                )
                .await?;
                Ok(Flow::End("untrusted PROXY header"))
            }
            "AUTH" => {
                // Once TLS starts the proxy could no longer read or fix the addresses;
                // refusing makes clients that merely prefer TLS fall back to plain FTP.
                metrics::rejected(self.listener(), "auth_tls");
                self.reply(
                    534,
                    "Request denied for policy reasons: this proxy does not relay TLS sessions.",
                )
                .await?;
                Ok(Flow::Continue)
            }
            "PORT" | "EPRT" | "LPRT" if self.logged_in || !self.relaying() => {
                self.on_active_command(&cmd, &line).await
            }
            "PASV" | "EPSV" | "LPSV" if self.relaying_for_client() => {
                self.on_passive_command(&cmd).await?;
                Ok(Flow::Continue)
            }
            "STOR" | "STOU" | "APPE" if self.relaying_for_client() => {
                self.on_transfer_command(&line, Direction::Upload).await
            }
            "RETR" | "LIST" | "NLST" | "MLSD" if self.relaying_for_client() => {
                self.on_transfer_command(&line, Direction::Download).await
            }
            "REIN" => {
                self.logged_in = false;
                self.abort_transfer().await?;
                self.upstream_w.write_all(&line).await?;
                Ok(Flow::Continue)
            }
            "ABOR" if self.relaying() => {
                self.abort_transfer().await?;
                self.upstream_w.write_all(&line).await?;
                Ok(Flow::Continue)
            }
            _ => {
                if matches!(
                    verb,
                    "RETR" | "STOR" | "STOU" | "APPE" | "LIST" | "NLST" | "MLSD"
                ) {
                    self.transfer_in_flight = true;
                }
                self.upstream_w.write_all(&line).await?;
                Ok(Flow::Continue)
            }
        }
    }

    /// `PORT`/`EPRT`/`LPRT`: applies `nat.active` and the bounce rules, then forwards the
    /// (fixed) command in passthrough, or records the client's address in relay mode.
    async fn on_active_command(&mut self, cmd: &Command<'_>, line: &[u8]) -> anyhow::Result<Flow> {
        let verb = cmd.verb.as_str();
        let target = match rewrite::active_target(cmd) {
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                metrics::rejected(self.listener(), "bad_port");
                debug!(error = %e, "malformed active-mode address");
                self.reply(501, &format!("Syntax error in {verb} arguments: {e}."))
                    .await?;
                return Ok(Flow::Continue);
            }
            // Not an active-mode command after all: relay it untouched.
            None => {
                self.upstream_w.write_all(line).await?;
                return Ok(Flow::Continue);
            }
        };
        let fixed = self.fix_active_address(&target).await;
        let to = SocketAddr::new(fixed.unwrap_or(target.addr.ip()), target.addr.port());
        if let Some(why) = self.bounce_violation(to, fixed.is_some()) {
            metrics::rejected(self.listener(), "bounce");
            warn!(%to, why, "refused an active-mode address (bounce protection)");
            let text = format!("{verb} refused: {why}.");
            self.reply(504, &text).await?;
            return Ok(Flow::Continue);
        }
        if self.relaying() {
            self.set_active_target(verb, to).await?;
            return Ok(Flow::Continue);
        }
        match fixed.and_then(|ip| rewrite::rewrite_active(&target, ip)) {
            Some(bytes) => self.upstream_w.write_all(&bytes).await?,
            None => self.upstream_w.write_all(line).await?,
        }
        Ok(Flow::Continue)
    }

    /// Applies `nat.active`: the address to use instead of the announced one, if any.
    async fn fix_active_address(&self, target: &rewrite::ActiveTarget) -> Option<IpAddr> {
        let policy = &self.ctx.cfg.nat;
        // Who has to reach the address: the server in passthrough, the proxy in relay
        // mode, whose view of the client is the client's observed address.
        let other_side = if self.relaying() {
            self.addrs.client
        } else {
            self.addrs.upstream
        };
        let reason = rewrite::active_needs_rewrite(target, policy, other_side)?;
        let candidates = match &policy.client_address {
            None => vec![self.addrs.client],
            Some(name) => match upstream::resolve(name, self.ctx.limits.connect_timeout).await {
                Ok(ips) => ips,
                Err(e) => {
                    warn!(client_address = %name.0, error = %e, "cannot resolve nat.client_address; address left unchanged");
                    metrics::rejected(self.listener(), "client_address_unresolved");
                    return None;
                }
            },
        };
        let ip = rewrite::pick_replacement(target.kind, target.addr.ip(), &candidates)?;
        if ip == target.addr.ip().to_canonical() {
            return None;
        }
        // In passthrough the new address must fit the command (PORT is IPv4 only).
        if !self.relaying() && rewrite::rewrite_active(target, ip).is_none() {
            debug!(
                kind = target.kind.as_str(),
                "no replacement address of a family this command can carry"
            );
            return None;
        }
        metrics::rewrite(self.listener(), target.kind.as_str(), reason.as_str());
        info!(kind = target.kind.as_str(), reason = reason.as_str(), from = %target.addr, to = %ip, "rewrote active-mode address");
        Some(ip)
    }

    /// RFC 2577: a client may only have data sent to itself, on an unprivileged port,
    /// unless `allow_foreign_port` says otherwise. A NAT rewrite made by the proxy is the
    /// operator's own choice and passes.
    fn bounce_violation(&self, to: SocketAddr, rewritten: bool) -> Option<&'static str> {
        let allowed = self
            .ctx
            .cfg
            .allow_foreign_port
            .iter()
            .any(|net| net.contains(&to.ip().to_canonical()));
        if allowed {
            return None;
        }
        if to.port() < 1024 {
            return Some("ports below 1024 are not allowed");
        }
        if !rewritten && to.ip().to_canonical() != self.addrs.client {
            return Some("the address is not your own");
        }
        None
    }

    async fn on_upstream_line(&mut self, line: &[u8]) -> anyhow::Result<Flow> {
        match self.replies.push_line(line) {
            Ok(None) => Ok(Flow::Continue),
            Ok(Some(reply)) => {
                metrics::reply(self.listener(), reply.code);
                if reply.code == 230 {
                    self.logged_in = true;
                }
                if reply.code >= 200 {
                    self.transfer_in_flight = false;
                }
                if self.data.transfer_waiting_for_reply() && reply.code >= 200 {
                    self.on_transfer_reply(reply).await?;
                } else {
                    self.forward_reply(reply).await?;
                }
                Ok(Flow::Continue)
            }
            Err(ReplyError::Malformed) => Ok(self
                .upstream_broken("bad_reply", "a line that is not an FTP reply")
                .await),
            Err(ReplyError::TooLarge { .. }) => Ok(self
                .upstream_broken(
                    "reply_too_large",
                    "a reply larger than limits.max_reply_bytes",
                )
                .await),
        }
    }

    /// Sends an upstream reply on, fixing a passive address in passthrough mode.
    async fn forward_reply(&mut self, reply: Reply) -> anyhow::Result<()> {
        let last = self.last_verb.as_ref().map_or("", |v| v.as_str());
        let listed = match (reply.code, last) {
            (211, "FEAT") => Some("SITE FXP"),
            (214, "HELP") => Some(site::HELP_LINE),
            _ => None,
        };
        if let Some(line) = listed {
            self.last_verb = None;
            let raw = site::augment(&reply.raw, reply.code, line);
            self.client_w.write_all(&raw).await?;
            return Ok(());
        }
        if self.relaying() {
            self.client_w.write_all(&reply.raw).await?;
            return Ok(());
        }
        let action = rewrite::rewrite_passive_reply(&reply, &self.ctx.cfg.nat, self.addrs.upstream);
        match action {
            ReplyAction::Forward => self.client_w.write_all(&reply.raw).await?,
            ReplyAction::Rewrite {
                bytes,
                kind,
                reason,
                from,
                to,
            } => {
                metrics::rewrite(self.listener(), kind.as_str(), reason.as_str());
                info!(kind = kind.as_str(), reason = reason.as_str(), %from, %to, "rewrote passive address");
                self.client_w.write_all(&bytes).await?;
            }
            ReplyAction::Malformed { kind, error } => {
                metrics::rejected(self.listener(), "bad_passive_reply");
                warn!(kind = kind.as_str(), %error, reply = %String::from_utf8_lossy(&reply.raw).trim_end(), "upstream sent an unusable passive address");
                let text = format!(
                    "Can't open data connection: the server announced an invalid address ({error})."
                );
                self.reply(425, &text).await?;
            }
        }
        Ok(())
    }

    async fn on_upstream_eof(&mut self) -> Flow {
        if self.replies.in_progress() {
            return self
                .upstream_broken("truncated_reply", "a truncated multi-line reply")
                .await;
        }
        Flow::End("upstream closed")
    }

    /// The upstream broke the protocol: tell the client in plain words and end the session.
    async fn upstream_broken(&mut self, reason: &'static str, what: &str) -> Flow {
        metrics::rejected(self.listener(), reason);
        warn!(reason, "upstream sent {what}; closing the session");
        let reply = reply_line(
            421,
            "Service not available: the FTP server sent an invalid reply.",
        );
        let _ = self.client_w.write_all(&reply).await;
        Flow::End("upstream protocol error")
    }

    /// Sends the client a reply of the proxy's own.
    async fn reply(&mut self, code: u16, text: &str) -> std::io::Result<()> {
        self.client_w.write_all(&reply_line(code, text)).await
    }
}
