//! One client session: a task that owns the client's control connection and its upstream
//! control connection, relays commands and replies line by line, and applies the
//! rewriting decisions of [`crate::rewrite`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::codec::{LineCodec, LineError};
use crate::config::{Limits, ListenerConfig};
use crate::metrics;
use crate::proto::command::{is_known_verb, parse_command};
use crate::proto::reply::{Reply, ReplyAssembler, ReplyError, reply_line};
use crate::rewrite::{self, ActiveTarget, ReplyAction};
use crate::upstream;

/// After this many consecutive unparseable command lines the client is disconnected:
/// nobody types that much garbage by accident.
const MAX_BAD_COMMANDS: u32 = 10;

/// What a session needs from its listener; shared by all sessions of that listener.
#[derive(Debug)]
pub struct ListenerCtx {
    pub cfg: ListenerConfig,
    pub limits: Limits,
}

/// Runs one session to completion. Never panics on peer input; every way out is logged
/// once and counted.
pub async fn run(
    client: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ListenerCtx>,
    hard_stop: CancellationToken,
) {
    let span = tracing::info_span!("session", listener = %ctx.cfg.name, client = %peer);
    async move {
        let started = Instant::now();
        metrics::session_started(&ctx.cfg.name);
        let outcome = serve(client, peer, &ctx, hard_stop).await;
        metrics::session_ended(&ctx.cfg.name, started.elapsed());
        match outcome {
            Ok(end) => info!(
                reason = end,
                secs = started.elapsed().as_secs_f32(),
                "session ended"
            ),
            Err(e) => warn!(error = %e, secs = started.elapsed().as_secs_f32(), "session failed"),
        }
    }
    .instrument(span)
    .await
}

async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    ctx: &ListenerCtx,
    hard_stop: CancellationToken,
) -> anyhow::Result<&'static str> {
    let _ = client.set_nodelay(true);
    let connect = upstream::connect(&ctx.cfg.name, &ctx.cfg.upstream, ctx.limits.connect_timeout);
    let upstream = tokio::select! {
        r = connect => r,
        _ = hard_stop.cancelled() => {
            let _ = client.write_all(SHUTTING_DOWN).await;
            return Ok("shutdown");
        }
    };
    let upstream = match upstream {
        Ok(s) => s,
        Err(e) => {
            warn!(upstream = %ctx.cfg.upstream, error = %e, "upstream unreachable");
            let reply = reply_line(
                421,
                "Service not available: the FTP server behind this proxy cannot be reached.",
            );
            let _ = client.write_all(&reply).await;
            let _ = client.shutdown().await;
            return Ok("upstream unreachable");
        }
    };
    let upstream_addr = upstream.peer_addr()?;
    debug!(upstream = %upstream_addr, "upstream connected");
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let mut session = Session {
        ctx,
        client_ip: peer.ip().to_canonical(),
        upstream_ip: upstream_addr.ip().to_canonical(),
        client_w: cw,
        upstream_w: uw,
        replies: ReplyAssembler::new(ctx.limits.max_reply_bytes),
        bad_commands: 0,
    };
    let mut client_lines = FramedRead::new(cr, LineCodec::new(ctx.limits.max_line_length));
    // Upstream lines are bounded by the reply limit: one line cannot exceed a whole reply.
    let mut upstream_lines = FramedRead::new(ur, LineCodec::new(ctx.limits.max_reply_bytes));
    session
        .relay(&mut client_lines, &mut upstream_lines, hard_stop)
        .await
}

const SHUTTING_DOWN: &[u8] = b"421 Service not available: the proxy is shutting down.\r\n";

struct Session<'a> {
    ctx: &'a ListenerCtx,
    client_ip: IpAddr,
    upstream_ip: IpAddr,
    client_w: OwnedWriteHalf,
    upstream_w: OwnedWriteHalf,
    replies: ReplyAssembler,
    bad_commands: u32,
}

/// Whether the session goes on after handling a line.
enum Flow {
    Continue,
    End(&'static str),
}

impl Session<'_> {
    fn listener(&self) -> &str {
        &self.ctx.cfg.name
    }

    async fn relay(
        &mut self,
        client_lines: &mut FramedRead<OwnedReadHalf, LineCodec>,
        upstream_lines: &mut FramedRead<OwnedReadHalf, LineCodec>,
        hard_stop: CancellationToken,
    ) -> anyhow::Result<&'static str> {
        loop {
            let flow = tokio::select! {
                _ = hard_stop.cancelled() => {
                    let _ = self.client_w.write_all(SHUTTING_DOWN).await;
                    Flow::End("shutdown")
                }
                line = client_lines.next() => match line {
                    None => Flow::End("client closed"),
                    Some(Ok(line)) => self.on_client_line(line).await?,
                    Some(Err(LineError::TooLong(e))) => {
                        metrics::rejected(self.listener(), "line_too_long");
                        warn!(max = e.max, "client sent an over-long command line");
                        let text = format!("Command line too long (limit {} bytes); closing.", e.max);
                        self.client_w.write_all(&reply_line(500, &text)).await?;
                        Flow::End("line too long")
                    }
                    Some(Err(LineError::Io(e))) => return Err(e.into()),
                },
                line = upstream_lines.next() => match line {
                    None => self.on_upstream_eof().await,
                    Some(Ok(line)) => self.on_upstream_line(&line).await?,
                    Some(Err(LineError::TooLong(_))) => self.upstream_broken("reply_too_large", "a reply larger than limits.max_reply_bytes").await,
                    Some(Err(LineError::Io(e))) => return Err(e.into()),
                },
            };
            if let Flow::End(why) = flow {
                let _ = self.client_w.shutdown().await;
                let _ = self.upstream_w.shutdown().await;
                return Ok(why);
            }
        }
    }

    async fn on_client_line(&mut self, line: BytesMut) -> anyhow::Result<Flow> {
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
                self.client_w
                    .write_all(&reply_line(500, "Syntax error, command unrecognized."))
                    .await?;
                return Ok(Flow::Continue);
            }
        };
        self.bad_commands = 0;
        let verb = cmd.verb.as_str();
        metrics::command(
            self.listener(),
            if is_known_verb(&cmd.verb) {
                verb
            } else {
                "OTHER"
            },
        );
        if verb == "PASS" {
            debug!(verb, "command (argument hidden)");
        } else {
            debug!(verb, args = %String::from_utf8_lossy(cmd.args).trim_end(), "command");
        }

        if verb == "AUTH" {
            // Once TLS starts the proxy could no longer read or fix the addresses; refusing
            // makes clients that merely prefer TLS fall back to plain FTP.
            metrics::rejected(self.listener(), "auth_tls");
            let reply = reply_line(
                534,
                "Request denied for policy reasons: this proxy does not relay TLS sessions.",
            );
            self.client_w.write_all(&reply).await?;
            return Ok(Flow::Continue);
        }

        if let Some(target) = rewrite::active_target(&cmd) {
            let target = match target {
                Ok(t) => t,
                Err(e) => {
                    metrics::rejected(self.listener(), "bad_port");
                    debug!(error = %e, "malformed active-mode address");
                    let text = format!("Syntax error in {verb} arguments: {e}.");
                    self.client_w.write_all(&reply_line(501, &text)).await?;
                    return Ok(Flow::Continue);
                }
            };
            if let Some(bytes) = self.rewrite_active(&target).await {
                self.upstream_w.write_all(&bytes).await?;
                return Ok(Flow::Continue);
            }
        }
        self.upstream_w.write_all(&line).await?;
        Ok(Flow::Continue)
    }

    /// Applies `nat.active`; `Some(bytes)` is the replacement command.
    async fn rewrite_active(&self, target: &ActiveTarget) -> Option<Vec<u8>> {
        let policy = &self.ctx.cfg.nat;
        let reason = rewrite::active_needs_rewrite(target, policy, self.upstream_ip)?;
        let candidates = match &policy.client_address {
            None => vec![self.client_ip],
            Some(name) => match upstream::resolve(name, self.ctx.limits.connect_timeout).await {
                Ok(ips) => ips,
                Err(e) => {
                    warn!(client_address = %name.0, error = %e, "cannot resolve nat.client_address; command sent unchanged");
                    metrics::rejected(self.listener(), "client_address_unresolved");
                    return None;
                }
            },
        };
        let Some(ip) = rewrite::pick_replacement(target.kind, target.addr.ip(), &candidates) else {
            debug!(
                kind = target.kind.as_str(),
                "no replacement address of a family this command can carry"
            );
            return None;
        };
        let bytes = rewrite::rewrite_active(target, ip)?;
        metrics::rewrite(self.listener(), target.kind.as_str(), reason.as_str());
        info!(kind = target.kind.as_str(), reason = reason.as_str(), from = %target.addr, to = %ip, "rewrote active-mode address");
        Some(bytes)
    }

    async fn on_upstream_line(&mut self, line: &[u8]) -> anyhow::Result<Flow> {
        match self.replies.push_line(line) {
            Ok(None) => Ok(Flow::Continue),
            Ok(Some(reply)) => {
                self.on_reply(reply).await?;
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

    async fn on_reply(&mut self, reply: Reply) -> anyhow::Result<()> {
        metrics::reply(self.listener(), reply.code);
        let action = rewrite::rewrite_passive_reply(&reply, &self.ctx.cfg.nat, self.upstream_ip);
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
                self.client_w.write_all(&reply_line(425, &text)).await?;
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
}
