//! Relay mode, the session's half: answers the client's `PASV`/`EPSV`/`LPSV` and
//! `PORT`/`EPRT`/`LPRT` itself, opens its own data connection to the upstream with the
//! mode the upstream accepts, and runs one [`crate::data::relay`] task per transfer. The
//! upstream's final reply to a transfer is held until the bytes have crossed, so a client
//! never sees `226` for a file the proxy failed to deliver.

use std::mem;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, info, warn};

use super::{Flow, Session};
use crate::config::{Mode, UpstreamData};
use crate::data::relay::{self, DataError, Direction, Leg, Moved, Timeouts};
use crate::data::{LeaseError, LeasedListener};
use crate::metrics;
use crate::proto::addr;
use crate::proto::command::Command;
use crate::proto::line::trim_eol;
use crate::proto::reply::Reply;
use crate::rewrite;
use crate::upstream;

/// What the client asked for with its last data-setup command.
#[derive(Debug, Default)]
enum Pending {
    #[default]
    None,
    /// The client will connect to this leased port, and must order a transfer before the
    /// deadline: an unused lease would keep a port of the shared range forever.
    Passive(LeasedListener, Instant),
    /// The proxy will connect to the client here.
    Active(SocketAddr),
}

/// The result a transfer task reports back.
pub(super) type TransferEvent = Result<Result<Moved, DataError>, oneshot::error::RecvError>;

/// One transfer in flight.
struct Transfer {
    /// Dropping the transfer stops the task and closes both data connections.
    _task: AbortOnDropHandle<()>,
    /// Taken once the task has reported.
    done: Option<oneshot::Receiver<Result<Moved, DataError>>>,
    result: Option<Result<Moved, DataError>>,
    /// The upstream's final `2xx`, held until the data has crossed.
    reply: Option<Reply>,
}

/// The relay-mode data state of one session.
#[derive(Default)]
pub(super) struct DataChannel {
    pending: Pending,
    /// RFC 2428 `EPSV ALL`: from now on only `EPSV` may set up data connections.
    epsv_all: bool,
    transfer: Option<Transfer>,
    /// The client aborted a transfer whose final reply has not come yet.
    aborted: bool,
}

impl DataChannel {
    /// When the pending passive port, if any, is given up.
    pub(super) fn passive_expires(&self) -> Option<Instant> {
        match self.pending {
            Pending::Passive(_, expires) => Some(expires),
            _ => None,
        }
    }

    /// Releases the pending passive port once its deadline has passed; `true` if it did.
    pub(super) fn expire_passive(&mut self) -> bool {
        match self.pending {
            Pending::Passive(_, expires) if expires <= Instant::now() => {
                self.pending = Pending::None;
                true
            }
            _ => false,
        }
    }

    /// Resolves when the running transfer task reports; never when none runs.
    pub(super) async fn finished(&mut self) -> TransferEvent {
        match self.transfer.as_mut().and_then(|t| t.done.as_mut()) {
            Some(done) => done.await,
            None => std::future::pending().await,
        }
    }

    /// Whether a transfer is running (the control connection may rightly be silent).
    pub(super) fn busy(&self) -> bool {
        self.transfer.is_some()
    }

    /// Whether the next final upstream reply belongs to a running (or aborted) transfer.
    pub(super) fn transfer_waiting_for_reply(&self) -> bool {
        self.aborted || self.transfer.as_ref().is_some_and(|t| t.reply.is_none())
    }
}

/// How opening the upstream leg went.
enum Setup {
    Leg(Leg),
    /// The upstream refused; the text goes to the client in a `425`.
    Refused(String),
    /// The upstream answered `PASV`/`EPSV` with a 5xx: it does not do passive mode.
    PassiveUnsupported(String),
    /// The upstream broke the protocol; the session is over.
    Ended(Flow),
}

impl Session<'_> {
    /// `PASV`/`EPSV`/`LPSV` from the client: lease a port and announce it.
    pub(super) async fn on_passive_command(&mut self, cmd: &Command<'_>) -> std::io::Result<()> {
        let verb = cmd.verb.as_str();
        if verb == "EPSV" && trim_eol(cmd.args).trim_ascii().eq_ignore_ascii_case(b"ALL") {
            self.data.epsv_all = true;
            self.data.pending = Pending::None;
            return self.reply(200, "EPSV ALL command successful.").await;
        }
        if self.data.epsv_all && verb != "EPSV" {
            return self
                .reply(501, "Only EPSV is allowed after EPSV ALL.")
                .await;
        }
        self.data.pending = Pending::None;
        let bind = self.ctx.data_bind.unwrap_or(self.addrs.client_local);
        let leased = match self.ctx.ports.lease(bind) {
            Ok(l) => l,
            Err(e) => return self.lease_failed(e).await,
        };
        let announce = self.announce_address(verb == "PASV").await;
        let port = leased.port();
        let reply = match (verb, announce) {
            ("PASV", IpAddr::V4(v4)) => addr::format_pasv_reply(SocketAddrV4::new(v4, port)),
            ("PASV", IpAddr::V6(_)) => {
                return self
                    .reply(425, "Can't open passive connection: this proxy has no IPv4 address for you; use EPSV.")
                    .await;
            }
            ("EPSV", _) => addr::format_epsv_reply(port),
            _ => addr::format_lpsv_reply(SocketAddr::new(announce, port)),
        };
        debug!(verb, port, %announce, "data port leased for the client");
        let expires = Instant::now() + self.ctx.limits.data_accept_timeout;
        self.data.pending = Pending::Passive(leased, expires);
        self.client_w.write_all(&reply).await
    }

    async fn lease_failed(&mut self, e: LeaseError) -> std::io::Result<()> {
        warn!(error = %e, "no data port for the client");
        let text = match e {
            LeaseError::Exhausted { .. } => {
                "Can't open data connection: every data port of this proxy is in use; try again later."
            }
            LeaseError::Bind { .. } => {
                "Can't open data connection: the proxy cannot listen for data."
            }
        };
        self.reply(425, text).await
    }

    /// The address clients are told to connect to: `public_address` (resolved now, so a
    /// dynamic DNS name works), else the address the client reached the proxy at.
    async fn announce_address(&self, need_v4: bool) -> IpAddr {
        let local = self.addrs.client_local;
        let Some(name) = &self.ctx.cfg.public_address else {
            return local;
        };
        match upstream::resolve(name, self.ctx.limits.connect_timeout).await {
            Ok(ips) => ips
                .iter()
                .find(|ip| {
                    if need_v4 {
                        ip.is_ipv4()
                    } else {
                        ip.is_ipv4() == local.is_ipv4()
                    }
                })
                .or(ips.first())
                .copied()
                .unwrap_or(local),
            Err(e) => {
                warn!(public_address = %name.0, error = %e, "cannot resolve public_address; announcing the local address");
                local
            }
        }
    }

    /// `PORT`/`EPRT`/`LPRT` from the client, already checked: remember where to connect.
    pub(super) async fn set_active_target(
        &mut self,
        verb: &str,
        to: SocketAddr,
    ) -> std::io::Result<()> {
        if self.data.epsv_all {
            return self
                .reply(501, "Only EPSV is allowed after EPSV ALL.")
                .await;
        }
        self.data.pending = Pending::Active(to);
        self.reply(200, &format!("{verb} command successful."))
            .await
    }

    /// A transfer command: open the upstream leg, send the command on, start relaying.
    pub(super) async fn on_transfer_command(
        &mut self,
        line: &[u8],
        direction: Direction,
    ) -> anyhow::Result<Flow> {
        let client = match mem::take(&mut self.data.pending) {
            Pending::None => {
                self.reply(425, "Use PORT, EPRT, PASV or EPSV first.")
                    .await?;
                return Ok(Flow::Continue);
            }
            Pending::Passive(listener, _) => Leg::Accept {
                listener,
                expect: self.addrs.client,
            },
            Pending::Active(to) => Leg::Connect(to),
        };
        let upstream = match self.open_upstream_leg().await? {
            Setup::Leg(leg) => leg,
            Setup::Refused(why) | Setup::PassiveUnsupported(why) => {
                metrics::data_transfer(self.listener(), "failed");
                warn!(%why, "cannot open the upstream data connection");
                self.reply(
                    425,
                    &format!("Can't open data connection to the server: {why}"),
                )
                .await?;
                return Ok(Flow::Continue);
            }
            Setup::Ended(flow) => return Ok(flow),
        };
        self.upstream_w.write_all(line).await?;

        let (tx, done) = oneshot::channel();
        let limits = Timeouts {
            accept: self.ctx.limits.data_accept_timeout,
            connect: self.ctx.limits.connect_timeout,
            idle: self.ctx.limits.data_idle_timeout,
        };
        let name = self.listener().to_owned();
        let task = tokio::spawn(
            async move {
                let _ = tx.send(relay::run(&name, direction, client, upstream, limits).await);
            }
            .in_current_span(),
        );
        self.data.transfer = Some(Transfer {
            _task: AbortOnDropHandle::new(task),
            done: Some(done),
            result: None,
            reply: None,
        });
        Ok(Flow::Continue)
    }

    /// `ABOR`: close both data connections now, unless the file has already crossed
    /// completely. The client then gets `426` for the aborted transfer whatever the
    /// server says (it did not get the whole file): at once if the server's final reply
    /// was already held, else in place of that reply when it comes.
    pub(super) async fn abort_transfer(&mut self) -> std::io::Result<()> {
        self.data.pending = Pending::None;
        let delivered = self
            .data
            .transfer
            .as_ref()
            .is_some_and(|t| matches!(t.result, Some(Ok(_))));
        if delivered {
            return Ok(());
        }
        let Some(t) = self.data.transfer.take() else {
            return Ok(());
        };
        metrics::data_transfer(self.listener(), "aborted");
        info!("transfer aborted by the client");
        if t.reply.is_some() {
            self.reply(426, "Connection closed; transfer aborted.")
                .await
        } else {
            self.data.aborted = true;
            Ok(())
        }
    }

    /// The upstream's final reply to the running transfer.
    pub(super) async fn on_transfer_reply(&mut self, reply: Reply) -> anyhow::Result<()> {
        if mem::take(&mut self.data.aborted) {
            if reply.class() == 2 {
                return Ok(self
                    .reply(426, "Connection closed; transfer aborted.")
                    .await?);
            }
            self.client_w.write_all(&reply.raw).await?;
            return Ok(());
        }
        if reply.class() != 2 {
            // The server failed the transfer: stop relaying and pass its words on.
            self.data.transfer = None;
            metrics::data_transfer(self.listener(), "failed");
            self.client_w.write_all(&reply.raw).await?;
            return Ok(());
        }
        if let Some(t) = self.data.transfer.as_mut() {
            t.reply = Some(reply);
        }
        self.complete_transfer_if_done().await
    }

    /// The transfer task reported.
    pub(super) async fn on_transfer_finished(&mut self, done: TransferEvent) -> anyhow::Result<()> {
        let result =
            done.unwrap_or_else(|_| Err(DataError::Io(std::io::ErrorKind::Interrupted.into())));
        if let Some(t) = self.data.transfer.as_mut() {
            t.done = None;
            t.result = Some(result);
        }
        self.complete_transfer_if_done().await
    }

    /// Once both the bytes and the server's `2xx` are in, tell the client the truth.
    async fn complete_transfer_if_done(&mut self) -> anyhow::Result<()> {
        let ready = self
            .data
            .transfer
            .as_ref()
            .is_some_and(|t| t.reply.is_some() && t.result.is_some());
        if !ready {
            return Ok(());
        }
        let Some(Transfer {
            reply: Some(reply),
            result: Some(result),
            ..
        }) = self.data.transfer.take()
        else {
            return Ok(());
        };
        match result {
            Ok(moved) => {
                metrics::data_transfer(self.listener(), "ok");
                debug!(
                    upload = moved.upload,
                    download = moved.download,
                    "transfer relayed"
                );
                self.client_w.write_all(&reply.raw).await?;
            }
            Err(e) => {
                metrics::data_transfer(self.listener(), "failed");
                warn!(error = %e, "relayed transfer failed");
                self.reply(426, &format!("Connection closed; transfer aborted: {e}."))
                    .await?;
            }
        }
        Ok(())
    }

    /// Opens the proxy's own data connection to the upstream, passive first where allowed.
    async fn open_upstream_leg(&mut self) -> anyhow::Result<Setup> {
        let mode = self.ctx.cfg.upstream_data;
        let upstream = SocketAddr::new(self.addrs.upstream, self.upstream_port);
        let refused_before = self.ctx.passive_refused_by.contains(upstream);
        if mode == UpstreamData::Active || (mode == UpstreamData::Auto && refused_before) {
            return self.upstream_active().await;
        }
        match self.upstream_passive().await? {
            Setup::PassiveUnsupported(why) if mode == UpstreamData::Auto => {
                info!(%why, %upstream, "upstream refused passive mode; using active mode with it from now on");
                self.ctx.passive_refused_by.insert(upstream);
                self.upstream_active().await
            }
            // A one-off failure (a 4xx, a data port that did not answer): active mode may
            // still get this transfer through, but passive is not written off.
            Setup::Refused(why) if mode == UpstreamData::Auto => {
                info!(%why, "upstream passive mode failed; trying active for this transfer");
                self.upstream_active().await
            }
            other => Ok(other),
        }
    }

    async fn upstream_passive(&mut self) -> anyhow::Result<Setup> {
        let up = self.addrs.upstream;
        let cmd: &[u8] = if up.is_ipv6() {
            b"EPSV\r\n"
        } else {
            b"PASV\r\n"
        };
        let reply = match self.exchange(cmd).await? {
            Ok(r) => r,
            Err(flow) => return Ok(Setup::Ended(flow)),
        };
        let target = match reply.code {
            227 => match addr::parse_pasv_reply(&reply.raw) {
                Ok((a, _)) => self.fix_upstream_passive(SocketAddr::V4(a)),
                Err(e) => return Ok(Setup::Refused(format!("unusable passive address ({e})"))),
            },
            229 => match addr::parse_epsv_reply(&reply.raw) {
                Ok(port) => SocketAddr::new(up, port),
                Err(e) => return Ok(Setup::Refused(format!("unusable passive reply ({e})"))),
            },
            500..=599 => return Ok(Setup::PassiveUnsupported(reply_text(&reply))),
            _ => return Ok(Setup::Refused(reply_text(&reply))),
        };
        if target.port() < 1024 {
            // No FTP server puts passive ports there; a server that does is steering the
            // proxy at a service (RFC 2577's bounce, from the server side).
            metrics::rejected(self.listener(), "bounce");
            warn!(%target, "upstream announced a privileged data port; refused");
            return Ok(Setup::Refused(format!(
                "it announced the privileged data port {}",
                target.port()
            )));
        }
        let connect = crate::data::socket::connect(target);
        match timeout(self.ctx.limits.connect_timeout, connect).await {
            Ok(Ok(stream)) => Ok(Setup::Leg(Leg::Ready(stream))),
            Ok(Err(e)) => Ok(Setup::Refused(format!(
                "cannot connect to its data port {target}: {e}"
            ))),
            Err(_) => Ok(Setup::Refused(format!(
                "connecting to its data port {target} timed out"
            ))),
        }
    }

    /// Applies `nat.passive` to the address the upstream announced to the proxy. Only a
    /// reverse listener's upstream, which the operator chose, may send the proxy to another
    /// host; in forward and transparent mode the client picks the server, so its data
    /// address is always the server itself (no connections to third hosts on its word).
    fn fix_upstream_passive(&self, announced: SocketAddr) -> SocketAddr {
        let up = self.addrs.upstream;
        let nat = &self.ctx.cfg.nat;
        if announced.ip() == up {
            return announced;
        }
        if self.ctx.cfg.mode != Mode::Reverse {
            metrics::rewrite(self.listener(), "pasv", "foreign");
            debug!(from = %announced, to = %up, "upstream passive address pinned to the server");
            return SocketAddr::new(up, announced.port());
        }
        match rewrite::should_replace(nat.passive, announced.ip(), up, &nat.private) {
            Some(reason) => {
                metrics::rewrite(self.listener(), "pasv", reason.as_str());
                debug!(from = %announced, to = %up, "upstream passive address fixed");
                SocketAddr::new(up, announced.port())
            }
            None => announced,
        }
    }

    async fn upstream_active(&mut self) -> anyhow::Result<Setup> {
        let local = self.addrs.upstream_local;
        let leased = match self.ctx.ports.lease(self.ctx.data_bind.unwrap_or(local)) {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "no data port for the upstream");
                return Ok(Setup::Refused("the proxy has no free data port".into()));
            }
        };
        let me = SocketAddr::new(local, leased.port());
        let cmd = match me {
            SocketAddr::V4(v4) => addr::format_port_command(v4),
            SocketAddr::V6(_) => addr::format_eprt_command(me),
        };
        let reply = match self.exchange(&cmd).await? {
            Ok(r) => r,
            Err(flow) => return Ok(Setup::Ended(flow)),
        };
        if reply.class() != 2 {
            return Ok(Setup::Refused(reply_text(&reply)));
        }
        Ok(Setup::Leg(Leg::Accept {
            listener: leased,
            expect: self.addrs.upstream,
        }))
    }

    /// Sends a command of the proxy's own to the upstream and reads its final reply.
    /// `Err(flow)` when the upstream broke the protocol or went silent.
    async fn exchange(&mut self, cmd: &[u8]) -> anyhow::Result<Result<Reply, Flow>> {
        self.upstream_w.write_all(cmd).await?;
        self.read_final_reply().await
    }

    /// Reads the upstream's next final reply (skipping `1xx`), within the connect timeout.
    pub(super) async fn read_final_reply(&mut self) -> anyhow::Result<Result<Reply, Flow>> {
        let limit = self.ctx.limits.connect_timeout;
        loop {
            let line = match timeout(limit, self.upstream_lines.next()).await {
                Err(_) => {
                    return Ok(Err(self
                        .upstream_broken("reply_timeout", "no reply in time")
                        .await));
                }
                Ok(None) => return Ok(Err(Flow::End("upstream closed"))),
                Ok(Some(Err(e))) => {
                    debug!(error = %e, "upstream read failed");
                    return Ok(Err(self
                        .upstream_broken("bad_reply", "an unreadable reply")
                        .await));
                }
                Ok(Some(Ok(line))) => line,
            };
            match self.replies.push_line(&line) {
                Ok(None) => continue,
                Ok(Some(r)) if r.code < 200 => metrics::reply(self.listener(), r.code),
                Ok(Some(r)) => {
                    metrics::reply(self.listener(), r.code);
                    return Ok(Ok(r));
                }
                Err(_) => {
                    return Ok(Err(self
                        .upstream_broken("bad_reply", "a line that is not an FTP reply")
                        .await));
                }
            }
        }
    }
}

/// A reply's text for a message to the client (without the code).
fn reply_text(reply: &Reply) -> String {
    format!(
        "{} {}",
        reply.code,
        String::from_utf8_lossy(reply.text()).trim()
    )
}
