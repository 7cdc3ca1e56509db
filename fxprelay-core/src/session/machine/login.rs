//! Before there is an upstream: forward mode's own greeting and `USER user@host[:port]`,
//! the allow list and loop guard every connection on a client's say-so passes, and what
//! each mode tells the client when the connection fails.

use std::net::{IpAddr, SocketAddr};

use tracing::{debug, info, warn};

use super::tls::AfterUpstream;
use super::{Action, Answers, ConnectFailure, ConnectRequest, Connected, Machine, Phase, Say};
use crate::config::Mode;
use crate::defense::DefenseEvent;
use crate::net::ConnectError;
use crate::net::HostPort;
use crate::proto::command::{VerbClass, parse_command};
use crate::proto::line::trim_eol;
use crate::proto::reply::Reply;
use crate::rejection::Rejection;
use crate::session::policy::Policy;
use crate::tls::UpstreamPlan;

/// After this many refused `USER` attempts the client is disconnected.
pub(super) const MAX_ATTEMPTS: u32 = 3;

/// Splits `user@host[:port]` at the last `@` (user names may contain `@`).
pub fn parse_target(arg: &[u8]) -> Option<(&[u8], HostPort)> {
    let at = arg.iter().rposition(|&b| b == b'@')?;
    let (user, host) = (&arg[..at], &arg[at + 1..]);
    if user.is_empty() {
        return None;
    }
    let host = std::str::from_utf8(host).ok()?.trim();
    let target = HostPort::parse_or_port(host, HostPort::FTP_PORT).ok()?;
    Some((user, target))
}

/// The self-target guard and the allow list, checked on resolved addresses: never
/// connect to one of this proxy's own sockets, nor outside `allow`. The shell applies it
/// to each address a [`super::ConnectRequest`] marked `guarded` resolves to.
pub fn permitted(
    ctx: &Policy,
    host: &str,
    addr: SocketAddr,
    client_local: IpAddr,
) -> Result<(), ConnectError> {
    ctx.own
        .check(addr, &[client_local])
        .map_err(|e| ConnectError::SelfTarget(e.to_string()))?;
    ctx.cfg
        .allow
        .admits(host, addr.ip().to_canonical())
        .map_err(|d| ConnectError::Denied(d.to_string()))
}

impl Machine {
    pub(super) fn connect(
        &mut self,
        target: HostPort,
        user_line: Option<Vec<u8>>,
        attempts: u32,
        guarded: bool,
        source: Option<IpAddr>,
    ) {
        let tls = (self.upstream_plan() == UpstreamPlan::Implicit)
            .then(|| self.upstream_server_name(&target.host));
        self.upstream_host = target.host.clone();
        self.phase = Phase::Connecting {
            target: target.clone(),
            user_line,
            attempts,
        };
        self.act(Action::Connect(ConnectRequest {
            target,
            guarded,
            source,
            tls,
            proxy_header: self.ctx.upstream_proxy,
        }));
    }

    /// Before the upstream is connected: forward mode, or a reverse listener with
    /// `upstream_connect: on_login`.
    pub(super) fn forward_login_line(
        &mut self,
        line: &[u8],
        attempts: u32,
        now: std::time::Instant,
    ) {
        let cmd = match parse_command(line) {
            Ok(cmd) => cmd,
            Err(e) => {
                self.reject(Rejection::BadCommand);
                self.defend(DefenseEvent::BadCommand);
                info!(error = %e, "refused an unparseable command line before login");
                return self.say(Say::for_bad_command(e));
            }
        };
        self.count(super::Count::Command(cmd.verb));
        if self.tls_command(&cmd, now) {
            return;
        }
        if cmd.verb.class() == VerbClass::User {
            self.defend_user(cmd.args);
        }
        // A route taken by the TLS name, with `upstream_connect: on_login`: its server
        // gets the name the route makes.
        let routed = match cmd.verb.class() {
            VerbClass::User => self.routed_user_line(cmd.args),
            _ => None,
        };
        let line = routed.as_deref().unwrap_or(line);
        match cmd.verb.class() {
            VerbClass::User if self.pooled() && routed.is_some() => {
                return self.pooled_connect(Some(line.to_vec()));
            }
            VerbClass::User if self.pooled() => return self.pooled_user(line, cmd.args),
            VerbClass::User => {}
            VerbClass::Features if self.tls_features().is_some() => {
                let ours = self.tls_features().map_or(&[][..], |(_, ours)| ours);
                let reply = crate::session::replies::multi_line(211, "Features:", ours);
                return self.act(Action::ToClient(reply));
            }
            VerbClass::Quit => {
                self.say(Say::Goodbye);
                return self.close("client quit");
            }
            VerbClass::Noop => return self.say(Say::NoopOk),
            VerbClass::ProxyHeader => {
                self.reject(Rejection::ProxyUntrusted);
                self.say(Say::ProxyUntrusted);
                return self.close("untrusted PROXY header");
            }
            _ if self.ctx.cfg.mode == Mode::Reverse || self.pooled() => {
                self.defend(DefenseEvent::BadCommand);
                return self.say(Say::LoginFirst);
            }
            _ => {
                self.defend(DefenseEvent::BadCommand);
                return self.say(Say::ForwardLoginFirst);
            }
        }
        if let (Mode::Reverse, Some(target)) = (self.ctx.cfg.mode, &self.ctx.cfg.upstream) {
            // `upstream_connect: on_login`: the operator's upstream, the USER as it came.
            let target = target.clone();
            if routed.is_none() {
                self.site.user = Some(super::lossy(cmd.args));
            }
            return self.connect(target, Some(line.to_vec()), attempts, false, None);
        }
        let Some((user, target)) = parse_target(trim_eol(cmd.args)) else {
            self.login_failed(now);
            return self.say(Say::ForwardBadTarget);
        };
        self.site.user = Some(String::from_utf8_lossy(user).into_owned());
        let mut user_line = b"USER ".to_vec();
        user_line.extend_from_slice(user);
        user_line.extend_from_slice(b"\r\n");
        self.connect(target, Some(user_line), attempts, true, None);
    }

    /// The upstream control connection opened, or could not be.
    pub(super) fn on_connected(
        &mut self,
        result: Result<Connected, ConnectFailure>,
        now: std::time::Instant,
    ) {
        let (target, user_line, attempts) = match std::mem::replace(&mut self.phase, Phase::New) {
            Phase::Connecting {
                target,
                user_line,
                attempts,
            } => (target, user_line, attempts),
            other => {
                // Not asked for: the session stays where it is.
                self.phase = other;
                return;
            }
        };
        match result {
            Ok(c) => {
                self.addrs.upstream = c.peer.ip().to_canonical();
                self.addrs.upstream_port = c.peer.port();
                self.addrs.upstream_local = c.local.to_canonical();
                self.data.refuses_passive = c.refuses_passive;
                self.tls.upstream_secure = self.upstream_plan() == UpstreamPlan::Implicit;
                self.audit.upstream = Some(target.to_string());
                debug!(upstream = %target, "upstream connected");
                match user_line {
                    Some(user_line) => {
                        info!(upstream = %target, "forward target connected");
                        self.phase = Phase::Greeting {
                            user_line: Some(user_line),
                        };
                        self.reply_deadline = Some(now + self.ctx.limits.connect_timeout);
                    }
                    // A route chosen by HOST or SNI after the proxy greeted.
                    None if self.route.greeted => {
                        self.phase = Phase::Greeting { user_line: None };
                        self.reply_deadline = Some(now + self.ctx.limits.connect_timeout);
                    }
                    None => {
                        self.phase = Phase::Relaying;
                        self.expect(Answers::Greeting);
                        self.reply_deadline = Some(now + self.ctx.limits.connect_timeout);
                    }
                }
            }
            Err(ConnectFailure::Tls(error)) => {
                return self.on_upstream_secured(Err(error), 0, now);
            }
            Err(failure) if self.pooled_connect_failed(&target, &user_line, &failure) => {}
            Err(failure) => self.connect_failed(target, attempts, failure, now),
        }
        self.settle(now);
    }

    fn connect_failed(
        &mut self,
        target: HostPort,
        attempts: u32,
        failure: ConnectFailure,
        now: std::time::Instant,
    ) {
        let (why, rejection) = match failure {
            ConnectFailure::Unreachable(error) => return self.unreachable(target, error),
            ConnectFailure::AgentDown(agent) => {
                warn!(upstream = %target, %agent, "the upstream's agent is not connected");
                self.say(Say::AgentDown { agent });
                return self.close("agent not connected");
            }
            ConnectFailure::Denied(why) => (why, None),
            ConnectFailure::SelfTarget(why) => (why, Some(Rejection::SelfTarget)),
            // `on_connected` answers a TLS failure before it gets here.
            ConnectFailure::Tls(error) => return self.unreachable(target, error),
        };
        match self.ctx.cfg.mode {
            Mode::Transparent => {
                self.reject(rejection.unwrap_or(Rejection::TransparentDenied));
                let destination = self.original.map_or(target.to_string(), |d| d.to_string());
                warn!(%destination, why, "redirected connection refused");
                self.say(Say::TransparentDenied { destination, why });
                self.close("destination not allowed");
            }
            Mode::Reverse => self.unreachable(target, why),
            Mode::Forward => {
                self.reject(rejection.unwrap_or(Rejection::ForwardDenied));
                warn!(upstream = %target, why, "forward target refused");
                self.login_failed(now);
                self.say(Say::ForwardDenied {
                    host: target.host.clone(),
                    why,
                });
                let attempts = attempts + 1;
                if attempts >= MAX_ATTEMPTS {
                    self.say(Say::TooManyRefusedTargets);
                    return self.close("too many refused targets");
                }
                self.phase = Phase::ForwardLogin { attempts };
            }
        }
    }

    fn unreachable(&mut self, target: HostPort, error: String) {
        match self.ctx.cfg.mode {
            Mode::Transparent => {
                warn!(destination = %target, %error, "original destination unreachable");
                self.say(Say::TransparentUnreachable);
            }
            Mode::Reverse => {
                warn!(upstream = %target, %error, "upstream unreachable");
                self.say(Say::UpstreamUnreachable);
            }
            Mode::Forward => {
                // INFO, not WARN: the client chose the host. Named, so the session's
                // end says where it could not go.
                info!(upstream = %target, %error, "forward target unreachable");
                self.say(Say::ForwardUnreachable {
                    target: target.to_string(),
                    error,
                });
            }
        }
        self.close("upstream unreachable");
    }

    /// Whether the upstream leg turns to TLS right after the server's greeting: the
    /// operator says so, or it mirrors a client that is on TLS already.
    pub(super) fn tls_after_greeting(&self) -> bool {
        let plan = self.upstream_plan();
        let tls_now = plan == UpstreamPlan::AfterGreeting
            || (plan == UpstreamPlan::WithClient && self.tls.client_secure);
        tls_now && !self.tls.upstream_secure
    }

    /// Forward mode: the server's greeting replaces the proxy's, then the client's `USER`
    /// (host part removed) goes to it.
    pub(super) fn on_forward_greeting(&mut self, reply: Reply, now: std::time::Instant) {
        if reply.code < 200 {
            return;
        }
        self.reply_deadline = None;
        let Phase::Greeting { user_line } = std::mem::replace(&mut self.phase, Phase::Relaying)
        else {
            return;
        };
        if reply.code != 220 {
            self.act(Action::ToClient(reply.raw));
            return self.close("upstream refused the session");
        }
        if user_line.is_none() && self.host_to_pass().is_some() {
            // The client's HOST goes on to a server that takes it, before anything else.
            return self.ask_server_features(now);
        }
        if self.tls_after_greeting() {
            let then = match user_line {
                Some(line) => AfterUpstream::ReplayUser(line),
                None => AfterUpstream::Nothing,
            };
            return self.upstream_auth(then, now);
        }
        if let Some(user_line) = user_line {
            let verb = crate::proto::Verb::new(b"USER").expect("a valid verb");
            self.forward(&user_line, verb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let (u, t) = parse_target(b"anonymous@ftp.example.org").unwrap();
        assert_eq!(
            (u, t.host.as_str(), t.port),
            (&b"anonymous"[..], "ftp.example.org", 21)
        );
        let (u, t) = parse_target(b"me@corp.com@127.0.0.1:2121").unwrap();
        assert_eq!(
            (u, t.host.as_str(), t.port),
            (&b"me@corp.com"[..], "127.0.0.1", 2121)
        );
        let (_, t) = parse_target(b"u@[::1]:21").unwrap();
        assert_eq!(t.host, "::1");
        let (_, t) = parse_target(b"u@::1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 21));
        assert!(parse_target(b"nobody").is_none());
        assert!(parse_target(b"@host").is_none());
        assert!(parse_target(b"u@bad host").is_none());
        assert!(parse_target(b"u@h:0").is_none());
    }
}
