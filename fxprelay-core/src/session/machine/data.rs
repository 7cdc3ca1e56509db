//! Data connections, as decisions. Relay mode answers the client's `PASV`/`EPSV`/`LPSV`
//! and `PORT`/`EPRT`/`LPRT` itself, reaches the server with its own `PASV`/`EPSV` or
//! `PORT`/`EPRT` (whatever the server accepts, independently of the client), and holds
//! the server's final reply to a transfer until the bytes have crossed, so a client never
//! sees `226` for a file the proxy failed to deliver. Passthrough mode only fixes the
//! addresses. Both apply the bounce rules of RFC 2577.

use std::mem;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use tracing::{debug, info, warn};

use super::audit::Outcome;
use super::{
    Action, Answers, ClientLeg, Count, DataConnectError, LeaseResult, Machine, Say, Slot,
    TransferResult, UpstreamLeg, Waiting, reply_text,
};
use crate::config::UpstreamData;
use crate::net::LeaseError;
use crate::proto::addr;
use crate::proto::command::{ActiveVerb, Command, Direction, PassiveVerb, Verb};
use crate::proto::line::trim_eol;
use crate::proto::reply::Reply;
use crate::rejection::Rejection;
use crate::rewrite::{self, ActiveTarget, Reason, ReplyAction};

/// What the client asked for with its last data-setup command.
#[derive(Debug, Default)]
enum Pending {
    #[default]
    None,
    /// The client will connect to the leased port in [`Slot::ClientPassive`], and must
    /// order a transfer before the deadline: an unused lease would keep a port of the
    /// shared range forever.
    Passive { expires: Instant },
    /// The proxy will connect to the client here.
    Active(SocketAddr),
}

/// One relayed transfer in flight.
#[derive(Debug, Default)]
struct Transfer {
    /// What the transfer task reported, once it has.
    result: Option<TransferResult>,
    /// The upstream's final `2xx`, held until the data has crossed.
    reply: Option<Reply>,
    /// The data has crossed: the server's final reply is due by then.
    confirm_by: Option<Instant>,
}

/// The data state of one session.
#[derive(Debug, Default)]
pub(super) struct DataState {
    pending: Pending,
    /// RFC 2428 `EPSV ALL`: from now on only `EPSV` may set up data connections.
    epsv_all: bool,
    transfer: Option<Transfer>,
    /// The client aborted a transfer whose final reply has not come yet.
    aborted: bool,
    /// The server refuses passive mode: its `5xx` to the proxy's `PASV`/`EPSV`, this
    /// session's or (as the shell said when it connected) an earlier session's.
    pub(super) refuses_passive: bool,
}

impl DataState {
    /// When the pending passive port, if any, is given up.
    pub(super) fn passive_expires(&self) -> Option<Instant> {
        match self.pending {
            Pending::Passive { expires, .. } => Some(expires),
            _ => None,
        }
    }

    /// Forgets the pending passive port once its deadline has passed; `true` if it did.
    pub(super) fn expire_passive(&mut self, now: Instant) -> bool {
        match self.pending {
            Pending::Passive { expires, .. } if expires <= now => {
                self.pending = Pending::None;
                true
            }
            _ => false,
        }
    }

    /// Whether a transfer is running (the control connection may rightly be silent).
    pub(super) fn busy(&self) -> bool {
        self.transfer.is_some()
    }

    /// Whether the proxy carries a transfer whose final reply the client has not had yet
    /// (running, or aborted and waiting for the server's word on it).
    pub(super) fn relayed_transfer(&self) -> bool {
        self.transfer.is_some() || self.aborted
    }

    /// When the server's final reply to a transfer whose data has crossed is overdue.
    pub(super) fn confirm_by(&self) -> Option<Instant> {
        self.transfer.as_ref().and_then(|t| t.confirm_by)
    }

    /// Drops the running transfer's state (the session is ending without its reply).
    pub(super) fn forget_transfer(&mut self) {
        self.transfer = None;
    }

    /// Whether the next final upstream reply belongs to a running (or aborted) transfer.
    pub(super) fn transfer_waiting_for_reply(&self) -> bool {
        self.aborted || self.transfer.as_ref().is_some_and(|t| t.reply.is_none())
    }
}

/// A relayed transfer command waiting for the proxy's data connection to the server.
#[derive(Debug)]
pub(super) struct Setup {
    /// The client's command, sent on once the server's data side is ready.
    line: Vec<u8>,
    verb: Verb,
    direction: Direction,
    client: ClientLeg,
    /// TLS on the client's data connection (its `PROT P`).
    client_tls: bool,
    /// TLS on the server's data connection.
    upstream_tls: bool,
    step: Step,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// The proxy's `PBSZ`/`PROT` await their replies.
    Protect,
    /// The proxy's `PASV`/`EPSV` awaits its reply.
    Passive,
    /// Connecting to the server's passive data port.
    ConnectingData(SocketAddr),
    /// A port for the server's active connection is being leased.
    Leasing,
    /// The proxy's `PORT`/`EPRT` awaits its reply.
    Active,
}

/// How the proxy's passive attempt with the server failed.
enum PassiveFailure {
    /// A one-off failure (a 4xx, a data port that did not answer).
    Refused(String),
    /// A 5xx to `PASV`/`EPSV`: the server does not do passive mode.
    Unsupported(String),
}

impl Machine {
    // -----------------------------------------------------------------------------------
    // Active-mode commands (both data modes)
    // -----------------------------------------------------------------------------------

    /// `PORT`/`EPRT`/`LPRT`: applies `nat.active` and the bounce rules, then forwards the
    /// (fixed) command in passthrough, or records the client's address in relay mode.
    pub(super) fn on_active_command(&mut self, cmd: &Command<'_>, active: ActiveVerb, line: &[u8]) {
        let target = match rewrite::active_target(cmd) {
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                self.reject(Rejection::BadPort);
                info!(error = %e, "refused a malformed active-mode address");
                return self.say(Say::BadActiveArgs {
                    verb: active.as_str(),
                    error: e.to_string(),
                });
            }
            None => return self.forward(line, cmd.verb),
        };
        // Who has to reach the address: the server in passthrough, the proxy in relay
        // mode, whose view of the client is the client's observed address.
        let other_side = if self.relaying() {
            self.addrs.client
        } else {
            self.addrs.upstream
        };
        let policy = &self.ctx.cfg.nat;
        let Some(reason) = rewrite::active_needs_rewrite(&target, policy, other_side) else {
            return self.finish_active(line, cmd.verb, active, target, None);
        };
        let candidates = match &policy.client_address {
            None => vec![self.addrs.client],
            Some(name) => match name.as_ip() {
                Some(ip) => vec![ip],
                None => {
                    let name = name.clone();
                    self.waiting = Some(Waiting::ActiveResolve {
                        line: line.to_vec(),
                        verb: cmd.verb,
                        active,
                        target,
                        reason,
                    });
                    return self.act(Action::Resolve(name));
                }
            },
        };
        let fixed = self.pick_active(&target, reason, &candidates);
        self.finish_active(line, cmd.verb, active, target, fixed);
    }

    /// The replacement for a client's address, from the candidates `nat.client_address`
    /// names; `None` leaves the address alone.
    fn pick_active(
        &mut self,
        target: &ActiveTarget,
        reason: Reason,
        candidates: &[IpAddr],
    ) -> Option<IpAddr> {
        let ip = rewrite::pick_replacement(target.kind, target.addr.ip(), candidates)?;
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
        self.count(Count::Rewrite {
            kind: target.kind.as_str(),
            reason: reason.as_str(),
        });
        info!(kind = target.kind.as_str(), reason = reason.as_str(), from = %target.addr, to = %ip, "rewrote active-mode address");
        Some(ip)
    }

    fn finish_active(
        &mut self,
        line: &[u8],
        verb: Verb,
        active: ActiveVerb,
        target: ActiveTarget,
        fixed: Option<IpAddr>,
    ) {
        let to = SocketAddr::new(fixed.unwrap_or(target.addr.ip()), target.addr.port());
        if let Some(why) = self.bounce_violation(to, fixed.is_some()) {
            self.reject(Rejection::Bounce);
            warn!(%to, why, "refused an active-mode address (bounce protection)");
            return self.say(Say::Bounce {
                verb: active.as_str(),
                why,
            });
        }
        if self.relaying() {
            if self.data.epsv_all {
                return self.say(Say::OnlyEpsv);
            }
            // Only the listeners count: the address is the client's own (checked above),
            // and a client on the proxy's host may well pick an ephemeral port inside
            // `data.ports`; a leased data port takes only its own expected peer anyway.
            let own = self
                .own_socket(to)
                .filter(|e| e.socket == crate::net::OwnSocket::Listener);
            if let Some(e) = own {
                self.reject(Rejection::SelfTarget);
                warn!(%to, "refused an active-mode address that is this proxy itself");
                return self.say(Say::SelfTarget {
                    verb: active.as_str(),
                    why: e.to_string(),
                });
            }
            self.release_pending();
            self.data.pending = Pending::Active(to);
            return self.say(Say::ActiveOk {
                verb: active.as_str(),
            });
        }
        match fixed.and_then(|ip| rewrite::rewrite_active(&target, ip)) {
            Some(bytes) => self.forward(&bytes, verb),
            None => self.forward(line, verb),
        }
    }

    /// RFC 2577: a client may only have data sent to itself, on an unprivileged port,
    /// unless `allow_foreign_port` says otherwise. A NAT rewrite made by the proxy is the
    /// operator's own choice and passes.
    fn bounce_violation(&self, to: SocketAddr, rewritten: bool) -> Option<&'static str> {
        let ip = to.ip().to_canonical();
        if self
            .ctx
            .cfg
            .allow_foreign_port
            .iter()
            .any(|n| n.contains(&ip))
        {
            return None;
        }
        if to.port() < 1024 {
            return Some("ports below 1024 are not allowed");
        }
        if !rewritten && ip != self.addrs.client {
            return Some("the address is not your own");
        }
        None
    }

    /// A name the machine asked for resolved (or failed to).
    pub(super) fn on_resolved(&mut self, result: Result<Vec<IpAddr>, String>, now: Instant) {
        match self.waiting.take() {
            Some(Waiting::ActiveResolve {
                line,
                verb,
                active,
                target,
                reason,
            }) => {
                let fixed = match result {
                    Ok(ips) => self.pick_active(&target, reason, &ips),
                    Err(error) => {
                        let name = self
                            .ctx
                            .cfg
                            .nat
                            .client_address
                            .as_ref()
                            .map(|n| n.0.clone());
                        warn!(client_address = name.unwrap_or_default(), %error, "cannot resolve nat.client_address; address left unchanged");
                        self.reject(Rejection::ClientAddressUnresolved);
                        None
                    }
                };
                self.finish_active(&line, verb, active, target, fixed);
            }
            Some(Waiting::PassiveResolve { verb, port }) => {
                let local = self.addrs.client_local;
                let announce = match result {
                    Ok(ips) => pick_announced(&ips, verb == PassiveVerb::Pasv, local),
                    Err(error) => {
                        let name = self.ctx.cfg.public_address.as_ref().map(|n| n.0.clone());
                        warn!(public_address = name.unwrap_or_default(), %error, "cannot resolve public_address; announcing the local address");
                        local
                    }
                };
                self.finish_passive(verb, port, announce, now);
            }
            other => self.waiting = other,
        }
        self.settle(now);
    }

    // -----------------------------------------------------------------------------------
    // Passive-mode commands (relay mode)
    // -----------------------------------------------------------------------------------

    /// `PASV`/`EPSV`/`LPSV` from the client: lease a port and announce it.
    pub(super) fn on_passive_command(&mut self, verb: PassiveVerb, args: &[u8]) {
        if verb == PassiveVerb::Epsv && trim_eol(args).trim_ascii().eq_ignore_ascii_case(b"ALL") {
            self.data.epsv_all = true;
            self.release_pending();
            return self.say(Say::EpsvAllOk);
        }
        if self.data.epsv_all && verb != PassiveVerb::Epsv {
            return self.say(Say::OnlyEpsv);
        }
        self.release_pending();
        let bind = self.ctx.data_bind.unwrap_or(self.addrs.client_local);
        self.waiting = Some(Waiting::PassiveLease { verb });
        self.act(Action::Lease {
            slot: Slot::ClientPassive,
            bind,
            client: self.addrs.client,
        });
    }

    /// A port the machine asked for was leased into `slot` (or could not be).
    pub(super) fn on_leased(&mut self, slot: Slot, result: LeaseResult, now: Instant) {
        match (self.waiting.take(), slot) {
            (Some(Waiting::PassiveLease { verb }), Slot::ClientPassive) => match result {
                Ok(port) => self.announce(verb, port, now),
                Err(e) => {
                    warn!(error = %e, "no data port for the client");
                    if let LeaseError::PerClient { .. } = e {
                        self.reject(Rejection::MaxDataPortsPerIp);
                    }
                    self.say(match e {
                        LeaseError::Exhausted { .. } => Say::PortsExhausted,
                        LeaseError::PerClient { max, .. } => Say::TooManyDataPorts { max },
                        LeaseError::Bind { .. } => Say::CannotListen,
                    });
                }
            },
            (Some(Waiting::Setup(setup)), Slot::UpstreamActive)
                if matches!(setup.step, Step::Leasing) =>
            {
                match result {
                    Ok(port) => {
                        let me = SocketAddr::new(self.addrs.upstream_local, port);
                        self.send_active(setup, me, now);
                    }
                    Err(e) => {
                        warn!(error = %e, "no data port for the upstream");
                        let why = match e {
                            LeaseError::PerClient { max, .. } => {
                                self.reject(Rejection::MaxDataPortsPerIp);
                                format!("your address holds {max} data ports already")
                            }
                            _ => "the proxy has no free data port".into(),
                        };
                        self.fail_setup(setup, why);
                    }
                }
            }
            (other, _) => {
                // Not asked for (any more): give it back.
                if result.is_ok() {
                    self.act(Action::Release(slot));
                }
                self.waiting = other;
            }
        }
        self.settle(now);
    }

    /// Tells the server to connect to `to` (`PORT`, `EPRT` for IPv6) for the transfer
    /// `setup` is opening.
    fn send_active(&mut self, mut setup: Setup, to: SocketAddr, now: Instant) {
        let cmd = match to {
            SocketAddr::V4(v4) => addr::format_port_command(v4),
            SocketAddr::V6(_) => addr::format_eprt_command(to),
        };
        setup.step = Step::Active;
        self.own_command(cmd, Answers::OwnActive, now);
        self.waiting = Some(Waiting::Setup(setup));
    }

    /// The agent answered [`Action::ListenInside`]: the server is told the agent's
    /// address, the one inside, never the proxy's (which it cannot reach).
    pub(super) fn on_listening_inside(&mut self, result: Result<SocketAddr, String>, now: Instant) {
        match self.waiting.take() {
            Some(Waiting::Setup(setup)) if matches!(setup.step, Step::Leasing) => match result {
                Ok(at) if at.ip().is_unspecified() || at.port() == 0 => {
                    self.act(Action::Release(Slot::UpstreamActive));
                    warn!(%at, "the agent listens at an address no server can connect to");
                    let why = format!("the agent listens at {at}, which the server cannot reach");
                    self.fail_setup(setup, why);
                }
                Ok(at) => {
                    debug!(%at, "the agent listens inside for the server's data connection");
                    self.send_active(setup, at, now);
                }
                Err(why) => {
                    warn!(%why, "the agent cannot listen for the server's data connection");
                    self.fail_setup(setup, format!("its agent cannot listen for it: {why}"));
                }
            },
            other => {
                // Not asked for (any more): the agent closes the port.
                if result.is_ok() {
                    self.act(Action::Release(Slot::UpstreamActive));
                }
                self.waiting = other;
            }
        }
        self.settle(now);
    }

    /// The address clients are told to connect to: `public_address` (resolved now, so a
    /// dynamic DNS name works), else the address the client reached the proxy at.
    fn announce(&mut self, verb: PassiveVerb, port: u16, now: Instant) {
        let local = self.addrs.client_local;
        match &self.ctx.cfg.public_address {
            None => self.finish_passive(verb, port, local, now),
            Some(name) => match name.as_ip() {
                Some(ip) => self.finish_passive(verb, port, ip, now),
                None => {
                    let name = name.clone();
                    self.waiting = Some(Waiting::PassiveResolve { verb, port });
                    self.act(Action::Resolve(name));
                }
            },
        }
    }

    fn finish_passive(&mut self, verb: PassiveVerb, port: u16, announce: IpAddr, now: Instant) {
        let reply = match (verb, announce) {
            (PassiveVerb::Pasv, IpAddr::V4(v4)) => {
                addr::format_pasv_reply(SocketAddrV4::new(v4, port))
            }
            (PassiveVerb::Pasv, IpAddr::V6(_)) => {
                self.act(Action::Release(Slot::ClientPassive));
                return self.say(Say::NoIpv4ForPasv);
            }
            (PassiveVerb::Epsv, _) => addr::format_epsv_reply(port),
            (PassiveVerb::Lpsv, _) => addr::format_lpsv_reply(SocketAddr::new(announce, port)),
        };
        debug!(verb = verb.as_str(), port, %announce, "data port leased for the client");
        let expires = now + self.ctx.limits.data_accept_timeout;
        self.data.pending = Pending::Passive { expires };
        self.act(Action::ToClient(reply));
    }

    /// Forgets the client's pending data set-up, giving back its port.
    fn release_pending(&mut self) {
        if let Pending::Passive { .. } = mem::take(&mut self.data.pending) {
            self.act(Action::Release(Slot::ClientPassive));
        }
    }

    // -----------------------------------------------------------------------------------
    // Transfers (relay mode)
    // -----------------------------------------------------------------------------------

    /// A transfer command: open the upstream leg, then send the command on and relay.
    pub(super) fn on_transfer_command(
        &mut self,
        line: &[u8],
        verb: Verb,
        direction: Direction,
        now: Instant,
    ) {
        let client = match mem::take(&mut self.data.pending) {
            Pending::None => return self.say(Say::NoDataSetup),
            Pending::Passive { .. } => ClientLeg::Accept {
                expect: self.addrs.client,
            },
            Pending::Active(to) => ClientLeg::Connect(to),
        };
        if let Ok(cmd) = crate::proto::command::parse_command(line) {
            self.audit.start(verb, cmd.args, true, now);
        }
        let (upstream_tls, protect) = self.upstream_protection();
        let mut setup = Setup {
            line: line.to_vec(),
            verb,
            direction,
            client,
            client_tls: self.tls.client_secure && self.tls.client_private,
            upstream_tls,
            step: Step::Passive,
        };
        if !protect.is_empty() {
            setup.step = Step::Protect;
            if protect.starts_with(b"PBSZ") {
                self.expect(Answers::OwnPbsz);
            }
            self.own_command(
                protect,
                Answers::OwnProt {
                    private: upstream_tls,
                },
                now,
            );
            self.waiting = Some(Waiting::Setup(setup));
            return;
        }
        self.choose_upstream_mode(setup, now);
    }

    /// The server said whether it takes the `PROT` the transfer needs.
    pub(super) fn on_own_prot_reply(&mut self, reply: &Reply, private: bool, now: Instant) {
        let Some(Waiting::Setup(setup)) = self.waiting.take() else {
            return;
        };
        if reply.class() == 2 {
            self.protection_set(private);
            self.choose_upstream_mode(setup, now);
        } else {
            let level = if private { "P" } else { "C" };
            self.fail_setup(
                setup,
                format!("it refused PROT {level}: {}", reply_text(reply)),
            );
        }
    }

    /// Passive or active toward the server, as `upstream_data` and its history say.
    fn choose_upstream_mode(&mut self, setup: Setup, now: Instant) {
        let mode = self.ctx.cfg.upstream_data;
        let refused = self.data.refuses_passive;
        if mode == UpstreamData::Active || (mode == UpstreamData::Auto && refused) {
            self.begin_active(setup);
        } else {
            self.begin_passive(setup, now);
        }
    }

    /// Sends a command of the proxy's own; its reply must come within the connect timeout.
    pub(super) fn own_command(&mut self, cmd: Vec<u8>, answers: Answers, now: Instant) {
        self.act(Action::ToUpstream(cmd));
        self.expect(answers);
        self.reply_deadline = Some(now + self.ctx.limits.connect_timeout);
    }

    fn begin_passive(&mut self, mut setup: Setup, now: Instant) {
        let cmd: &[u8] = if self.addrs.upstream.is_ipv6() {
            b"EPSV\r\n"
        } else {
            b"PASV\r\n"
        };
        setup.step = Step::Passive;
        self.own_command(cmd.to_vec(), Answers::OwnPassive, now);
        self.waiting = Some(Waiting::Setup(setup));
    }

    fn begin_active(&mut self, mut setup: Setup) {
        setup.step = Step::Leasing;
        self.waiting = Some(Waiting::Setup(setup));
        if self.ctx.cfg.via.is_some() {
            // The server cannot reach the proxy: its agent listens inside instead.
            let server = self.addrs.upstream_control();
            return self.act(Action::ListenInside { server });
        }
        let bind = self.ctx.data_bind.unwrap_or(self.addrs.upstream_local);
        self.act(Action::Lease {
            slot: Slot::UpstreamActive,
            bind,
            client: self.addrs.client,
        });
    }

    /// The server answered the proxy's `PASV`/`EPSV`.
    pub(super) fn on_own_passive_reply(&mut self, reply: &Reply) {
        let Some(Waiting::Setup(mut setup)) = self.waiting.take() else {
            return;
        };
        let up = self.addrs.upstream;
        let target = match reply.code {
            227 => match addr::parse_pasv_reply(&reply.raw) {
                Ok((a, _)) => Ok(self.fix_upstream_passive(SocketAddr::V4(a))),
                Err(e) => Err(PassiveFailure::Refused(format!(
                    "unusable passive address ({e})"
                ))),
            },
            229 => match addr::parse_epsv_reply(&reply.raw) {
                Ok(port) => Ok(SocketAddr::new(up, port)),
                Err(e) => Err(PassiveFailure::Refused(format!(
                    "unusable passive reply ({e})"
                ))),
            },
            500..=599 => Err(PassiveFailure::Unsupported(reply_text(reply))),
            _ => Err(PassiveFailure::Refused(reply_text(reply))),
        };
        let target = match target {
            Ok(t) => match self.own_socket(t) {
                Some(e) => {
                    // Aimed at the admin endpoint, the client's bytes would be an HTTP
                    // request to the API; at a listener or a data port, a loop.
                    self.reject(Rejection::SelfTarget);
                    warn!(target = %t, "upstream announced a data address that is this proxy itself; refused");
                    Err(PassiveFailure::Refused(format!("it announced {e}")))
                }
                None => Ok(t),
            },
            Err(e) => Err(e),
        };
        match target {
            Ok(target) if target.port() < 1024 => {
                // No FTP server puts passive ports there; a server that does is steering
                // the proxy at a service (RFC 2577's bounce, from the server side).
                self.reject(Rejection::Bounce);
                warn!(%target, "upstream announced a privileged data port; refused");
                let why = format!("it announced the privileged data port {}", target.port());
                self.passive_failed(setup, PassiveFailure::Refused(why));
            }
            Ok(target) => {
                setup.step = Step::ConnectingData(target);
                self.waiting = Some(Waiting::Setup(setup));
                self.act(Action::ConnectData(target));
            }
            Err(failure) => self.passive_failed(setup, failure),
        }
    }

    /// The self-target guard, for an address the proxy would connect to in this session:
    /// its own side of both control connections is local for sure.
    pub(super) fn own_socket(&self, target: SocketAddr) -> Option<crate::net::SelfTarget> {
        let local = [self.addrs.client_local, self.addrs.upstream_local];
        self.ctx.own.check(target, &local).err()
    }

    /// Where the proxy connects for a server's announced passive address: the server's
    /// own address, whatever host the reply names, unless `allow_passive_hosts` lists
    /// that host; then `nat.passive` decides. A server (or whoever controls its replies)
    /// can never aim the proxy at a third host on its word alone.
    fn fix_upstream_passive(&mut self, announced: SocketAddr) -> SocketAddr {
        let up = self.addrs.upstream;
        let ip = announced.ip().to_canonical();
        if ip == up {
            return announced;
        }
        let listed = self
            .ctx
            .cfg
            .allow_passive_hosts
            .iter()
            .any(|n| n.contains(&ip));
        let nat = &self.ctx.cfg.nat;
        let reason = match rewrite::should_replace(nat.passive, ip, up, &nat.private) {
            Some(reason) => reason.as_str(),
            None if listed => return announced,
            None => "foreign",
        };
        self.count(Count::Rewrite {
            kind: "pasv",
            reason,
        });
        debug!(from = %announced, to = %up, reason, "upstream passive address replaced with the server's");
        SocketAddr::new(up, announced.port())
    }

    /// `upstream_data: auto` falls back to active mode; a 5xx is remembered for this
    /// server, a one-off failure only costs this transfer the extra try.
    fn passive_failed(&mut self, setup: Setup, failure: PassiveFailure) {
        let auto = self.ctx.cfg.upstream_data == UpstreamData::Auto;
        match failure {
            PassiveFailure::Unsupported(why) if auto => {
                let upstream = self.addrs.upstream_control();
                info!(%why, %upstream, "upstream refused passive mode; using active mode with it from now on");
                self.data.refuses_passive = true;
                self.act(Action::RememberPassiveRefusal(upstream));
                self.begin_active(setup);
            }
            PassiveFailure::Refused(why) if auto => {
                info!(%why, "upstream passive mode failed; trying active for this transfer");
                self.begin_active(setup);
            }
            PassiveFailure::Refused(why) | PassiveFailure::Unsupported(why) => {
                self.fail_setup(setup, why)
            }
        }
    }

    /// The proxy's connection to the server's passive data port opened (or did not).
    pub(super) fn on_data_connected(&mut self, result: Result<(), DataConnectError>, now: Instant) {
        match self.waiting.take() {
            Some(Waiting::Setup(setup)) => {
                let Step::ConnectingData(target) = setup.step else {
                    self.waiting = Some(Waiting::Setup(setup));
                    return;
                };
                match result {
                    Ok(()) => self.launch(setup, UpstreamLeg::Connected),
                    Err(e) => {
                        let why = match e {
                            DataConnectError::Timeout => {
                                format!("connecting to its data port {target} timed out")
                            }
                            DataConnectError::Io(e) => {
                                format!("cannot connect to its data port {target}: {e}")
                            }
                        };
                        self.passive_failed(setup, PassiveFailure::Refused(why));
                    }
                }
            }
            other => {
                if result.is_ok() {
                    self.act(Action::Release(Slot::UpstreamData));
                }
                self.waiting = other;
            }
        }
        self.settle(now);
    }

    /// The server answered the proxy's `PORT`/`EPRT`.
    pub(super) fn on_own_active_reply(&mut self, reply: &Reply) {
        let Some(Waiting::Setup(setup)) = self.waiting.take() else {
            return;
        };
        if reply.class() == 2 {
            let expect = self.addrs.upstream;
            self.launch(setup, UpstreamLeg::Accept { expect });
        } else {
            self.act(Action::Release(Slot::UpstreamActive));
            self.fail_setup(setup, reply_text(reply));
        }
    }

    /// Both legs are ready: send the command on and start relaying.
    fn launch(&mut self, setup: Setup, upstream: UpstreamLeg) {
        self.act(Action::ToUpstream(setup.line));
        self.expect(Answers::RelayedTransfer(setup.verb));
        self.act(Action::StartTransfer {
            direction: setup.direction,
            client: setup.client,
            upstream,
            client_tls: setup.client_tls,
            upstream_tls: setup.upstream_tls,
        });
        self.data.transfer = Some(Transfer::default());
    }

    fn fail_setup(&mut self, setup: Setup, why: String) {
        if let ClientLeg::Accept { .. } = setup.client {
            self.act(Action::Release(Slot::ClientPassive));
        }
        self.count(Count::Transfer("failed"));
        self.audit
            .finish(Outcome::Failed, (0, 0), Some(why.clone()));
        warn!(%why, "cannot open the upstream data connection");
        self.say(Say::UpstreamDataFailed { why });
    }

    /// `ABOR`: close both data connections now, unless the file has already crossed
    /// completely. The client then gets `426` for the aborted transfer whatever the
    /// server says (it did not get the whole file): at once if the server's final reply
    /// was already held, else in place of that reply when it comes.
    pub(super) fn abort_transfer(&mut self) {
        self.release_pending();
        let delivered = self
            .data
            .transfer
            .as_ref()
            .is_some_and(|t| matches!(t.result, Some(Ok(_))));
        if delivered {
            return;
        }
        let Some(t) = self.data.transfer.take() else {
            return;
        };
        self.act(Action::AbortTransfer);
        self.count(Count::Transfer("aborted"));
        self.audit
            .finish(Outcome::Aborted, (0, 0), Some("ABOR".into()));
        debug!("transfer aborted by the client");
        if t.reply.is_some() {
            self.say(Say::TransferAborted);
        } else {
            self.data.aborted = true;
        }
    }

    /// The upstream's final reply to the running transfer.
    pub(super) fn on_transfer_reply(&mut self, reply: Reply) {
        if mem::take(&mut self.data.aborted) {
            if reply.class() == 2 {
                return self.say(Say::TransferAborted);
            }
            return self.act(Action::ToClient(reply.raw));
        }
        if reply.class() != 2 {
            // The server failed the transfer: stop relaying and pass its words on.
            self.data.transfer = None;
            self.act(Action::AbortTransfer);
            self.count(Count::Transfer("failed"));
            self.audit
                .finish(Outcome::Failed, (0, 0), Some(reply_text(&reply)));
            return self.act(Action::ToClient(reply.raw));
        }
        if let Some(t) = self.data.transfer.as_mut() {
            t.reply = Some(reply);
        }
        self.complete_transfer_if_done();
    }

    /// The transfer task reported.
    pub(super) fn on_transfer_finished(&mut self, result: TransferResult, now: Instant) {
        let confirm_by = now + self.ctx.limits.data_idle_timeout;
        if let Some(t) = self.data.transfer.as_mut() {
            t.result = Some(result);
            t.confirm_by = Some(confirm_by);
        }
        self.complete_transfer_if_done();
        self.settle(now);
    }

    /// Once both the bytes and the server's `2xx` are in, tell the client the truth.
    fn complete_transfer_if_done(&mut self) {
        let ready = self
            .data
            .transfer
            .as_ref()
            .is_some_and(|t| t.reply.is_some() && t.result.is_some());
        if !ready {
            return;
        }
        let Some(Transfer {
            reply: Some(reply),
            result: Some(result),
            ..
        }) = self.data.transfer.take()
        else {
            return;
        };
        match result {
            Ok(moved) => {
                self.count(Count::Transfer("ok"));
                self.audit
                    .finish(Outcome::Ok, (moved.upload, moved.download), None);
                self.act(Action::ToClient(reply.raw));
            }
            Err(error) => {
                self.count(Count::Transfer("failed"));
                self.audit
                    .finish(Outcome::Failed, (0, 0), Some(error.clone()));
                self.say(Say::TransferFailed { error });
            }
        }
    }

    /// `STAT` while the proxy carries a transfer: answered by the proxy, which knows where
    /// the transfer stands (the server is not asked: its answer could not be told from
    /// the transfer's own final reply).
    pub(super) fn transfer_status(&mut self) {
        let what = self
            .audit
            .current()
            .map(|(verb, path)| format!("{verb} {path}"))
            .unwrap_or_else(|| "The transfer".into());
        let state = match &self.data.transfer {
            None => "aborted; waiting for the FTP server's last word on it.",
            Some(Transfer { result: None, .. }) => "in progress: the data connection is open.",
            Some(Transfer { reply: None, .. }) => {
                "the data has crossed; waiting for the FTP server's final reply."
            }
            Some(_) => "complete.",
        };
        let first = "Status of fxprelay's relayed transfer:";
        let reply = super::super::replies::multi_line(211, first, [format!("{what}: {state}")]);
        self.act(Action::ToClient(reply));
    }

    // -----------------------------------------------------------------------------------
    // Passthrough replies
    // -----------------------------------------------------------------------------------

    /// Passthrough: `nat.passive` applied to a `227`/`228` on its way to the client.
    pub(super) fn forward_passive_reply(&mut self, reply: Reply) {
        let action = rewrite::rewrite_passive_reply(&reply, &self.ctx.cfg.nat, self.addrs.upstream);
        match action {
            ReplyAction::Forward => self.act(Action::ToClient(reply.raw)),
            ReplyAction::Rewrite {
                bytes,
                kind,
                reason,
                from,
                to,
            } => {
                self.count(Count::Rewrite {
                    kind: kind.as_str(),
                    reason: reason.as_str(),
                });
                info!(kind = kind.as_str(), reason = reason.as_str(), %from, %to, "rewrote passive address");
                self.act(Action::ToClient(bytes));
            }
            ReplyAction::Malformed { kind, error } => {
                self.reject(Rejection::BadPassiveReply);
                warn!(kind = kind.as_str(), %error, reply = %String::from_utf8_lossy(&reply.raw).trim_end(), "upstream sent an unusable passive address");
                self.say(Say::BadPassiveAddress {
                    error: error.to_string(),
                });
            }
        }
    }
}

/// The address to announce from `public_address`'s addresses: IPv4 for `PASV`, else the
/// family the client used; else the first (a `PASV` then says it has no IPv4 address),
/// and the local address when there is none.
fn pick_announced(ips: &[IpAddr], need_v4: bool, local: IpAddr) -> IpAddr {
    rewrite::pick_family(ips, need_v4, local)
        .or(ips.first().copied())
        .unwrap_or(local)
}
