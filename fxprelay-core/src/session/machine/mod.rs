//! The session's decisions, sans I/O: a state machine that takes [`Event`]s (a client
//! line, an upstream line, the outcome of something it asked for, a `SITE FXP` task's
//! news) through one entry, [`Machine::handle`], and answers with [`Action`]s for the
//! shell in [`super`] to carry out (write these bytes, connect there, lease a port,
//! choose a backend, start a transfer, close). It never touches a socket, a lock or the
//! clock: it holds only its listener's immutable [`Policy`], every input carries `now`,
//! and [`Machine::poll_timeout`] says when it next wants [`Machine::handle_timeout`].
//! Shared services (the data ports, a pool's health and counts, the passive-refusal
//! memo) are requests and answers, like the port lease. So every policy branch is a unit
//! test that runs in microseconds (`tests.rs`).
//!
//! The parts (`handle` dispatches each event to the part that owns its concern):
//! - this file: phases, reply sequencing (which command each upstream reply answers),
//!   command dispatch, the control connections' events, limits and timers;
//! - `event` and `action`: the vocabulary in and out;
//! - `login`: the pre-session dialogue of forward mode and the connect outcomes;
//! - `balance`: the backend of a pooled reverse listener;
//! - `data`: relay mode's data connections (the proxy's own `PASV`/`PORT` exchange
//!   with the server, held `226`, `ABOR`) and passthrough's address fixes;
//! - `site`: `SITE FXP`, whose copy runs as a task while the session goes on;
//! - `tls`: FTPS on either leg (`AUTH TLS`, `PBSZ`/`PROT`, what `FEAT` offers);
//! - `defense`: what the edge defense hears of the client (failed logins, bait users,
//!   bad commands, early closes) and the tarpit on repeated failed logins;
//! - `audit`: the login and transfer log lines, and the
//!   [`Snapshot`](super::view::Snapshot) the API shows.

mod action;
mod audit;
mod balance;
mod data;
mod defense;
mod event;
mod login;
mod routing;
mod site;
#[cfg(test)]
mod tests;
mod tls;

pub use action::{Action, ClientLeg, ConnectRequest, Count, FxpRules, Slot, UpstreamLeg};
pub use event::{
    Backend, ConnectFailure, Connected, DataConnectError, Event, LeaseResult, TransferResult,
};
pub use login::{parse_target, permitted};
pub use site::is_site_fxp;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::policy::Policy;
use super::replies::Say;
use crate::config::{DataMode, Mode, UpstreamConnect};
use crate::net::HostPort;
use crate::proto::command::{PassiveVerb, Verb, VerbClass, parse_command};
use crate::proto::line::trim_eol;
use crate::proto::reply::{Reply, ReplyAssembler, ReplyError};
use crate::rejection::Rejection;

/// After this many consecutive unparseable command lines the client is disconnected:
/// nobody types that much garbage by accident.
const MAX_BAD_COMMANDS: u32 = 10;

/// After this many replies that answer no command the server is disconnected. One can be
/// an honest late answer (after the proxy gave up waiting for it, see
/// [`Machine::give_up_ordering`]); a server that keeps sending them is broken or is
/// trying to put words in the proxy's mouth.
const MAX_UNSOLICITED: u32 = 5;

/// Client lines read and held while a transfer runs, beyond which the shell stops reading
/// (TCP pushes back). A client rarely sends more than one or two then; reading them at
/// all lets an `ABOR` behind them be seen.
const MAX_HELD_DURING_TRANSFER: usize = 16;

/// The addresses a session's decisions depend on (IPv4-mapped forms made plain).
#[derive(Debug, Clone, Copy)]
struct Addrs {
    /// The client, as seen on its control connection (or in its PROXY header).
    client: IpAddr,
    /// The proxy's address that the client connected to.
    client_local: IpAddr,
    /// The upstream, as the proxy reached it (unspecified until connected).
    upstream: IpAddr,
    /// The upstream's control port.
    upstream_port: u16,
    /// The proxy's address on the upstream control connection.
    upstream_local: IpAddr,
}

impl Addrs {
    fn upstream_control(&self) -> SocketAddr {
        SocketAddr::new(self.upstream, self.upstream_port)
    }
}

#[derive(Debug)]
enum Phase {
    /// Before [`Machine::new`] has opened the session (and while a connect's outcome
    /// is being taken in).
    New,
    /// The proxy greeted the client itself (forward mode, or a reverse listener with
    /// `upstream_connect: on_login`); reading `USER` (`user@host` in forward mode).
    ForwardLogin { attempts: u32 },
    /// Reverse mode over a pool: the shell is choosing a backend (`user_line`: as in
    /// [`Phase::Connecting`]).
    Choosing { user_line: Option<Vec<u8>> },
    /// The upstream control connection is being opened.
    Connecting {
        target: HostPort,
        /// Forward mode or `on_login`: the `USER` to replay once the server greeted.
        user_line: Option<Vec<u8>>,
        attempts: u32,
    },
    /// Forward mode, `on_login` or a route chosen after the proxy greeted: connected; the
    /// server's greeting is taken in place of the proxy's, then `user_line` (if any) goes
    /// to the server.
    Greeting { user_line: Option<Vec<u8>> },
    /// Client and upstream talk through the proxy.
    Relaying,
}

/// A command (or the greeting) whose final reply the upstream still owes.
#[derive(Debug, Clone, Copy)]
struct Awaiting {
    answers: Answers,
    /// A `1xx` came already: the command runs (a transfer), its final reply comes later.
    preliminary: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answers {
    /// The server's greeting, relayed to the client (reverse and transparent mode).
    Greeting,
    /// A client command relayed as it was (or with its address fixed).
    Forwarded(Verb),
    /// Relay mode: the transfer command whose final reply is held until the bytes crossed.
    RelayedTransfer(Verb),
    /// The proxy's own `PASV`/`EPSV`, for its data connection to the server.
    OwnPassive,
    /// The proxy's own `PORT`/`EPRT`.
    OwnActive,
    /// The proxy's own `AUTH TLS`.
    OwnAuth,
    /// The proxy's own `PBSZ 0`.
    OwnPbsz,
    /// The proxy's own `PROT`, `P` when `private`.
    OwnProt { private: bool },
    /// The proxy's own `FEAT` (does the server take `HOST`?).
    OwnFeat,
    /// The proxy's own `HOST`, passing on the client's.
    OwnHost,
}

impl Answers {
    fn is_own(self) -> bool {
        matches!(
            self,
            Answers::OwnPassive
                | Answers::OwnActive
                | Answers::OwnAuth
                | Answers::OwnPbsz
                | Answers::OwnProt { .. }
                | Answers::OwnFeat
                | Answers::OwnHost
        )
    }

    /// A command that opens a data connection, relayed or passed through.
    fn is_transfer(self) -> bool {
        match self {
            Answers::RelayedTransfer(_) => true,
            Answers::Forwarded(v) => matches!(v.class(), VerbClass::Transfer(_)),
            _ => false,
        }
    }

    /// Whether a reply with `code` can be the answer to this: a passive address
    /// (`227`/`228`/`229`) answers only the passive command that asks for it; a transfer
    /// is started by a `1xx` and ended only by `226`/`250` or a `4xx`/`5xx` (RFC 959), so
    /// that no other reply (a server answering some command while a transfer runs) is
    /// ever taken for its end; anything else is judged by the server's protocol.
    fn may_be_answered_by(self, code: u16) -> bool {
        if self.is_transfer() {
            return matches!(code, 100..=199 | 226 | 250 | 400..=599);
        }
        let passive = match self {
            Answers::Forwarded(v) => match v.class() {
                VerbClass::Passive(p) => Some(p),
                _ => None,
            },
            _ => None,
        };
        match code {
            227 => self == Answers::OwnPassive || passive == Some(PassiveVerb::Pasv),
            228 => passive == Some(PassiveVerb::Lpsv),
            229 => self == Answers::OwnPassive || passive == Some(PassiveVerb::Epsv),
            _ => true,
        }
    }
}

/// An asynchronous step a command waits on.
#[derive(Debug)]
enum Waiting {
    /// A port for the client's passive connection is being leased.
    PassiveLease {
        verb: crate::proto::command::PassiveVerb,
    },
    /// `public_address` is being resolved for the reply to `verb`.
    PassiveResolve {
        verb: crate::proto::command::PassiveVerb,
        port: u16,
    },
    /// `nat.client_address` is being resolved for an active-mode command.
    ActiveResolve {
        line: Vec<u8>,
        verb: Verb,
        active: crate::proto::command::ActiveVerb,
        target: crate::rewrite::ActiveTarget,
        reason: crate::rewrite::Reason,
    },
    /// The upstream side of a transfer is being set up.
    Setup(data::Setup),
    /// A TLS step on either leg.
    Tls(tls::TlsStep),
    /// Passing the client's `HOST` on to its route's server.
    Host(routing::HostStep),
}

/// The machine of one session.
pub struct Machine {
    /// The listener's policy.
    ctx: Arc<Policy>,
    addrs: Addrs,
    /// Transparent mode: where the client was going.
    original: Option<SocketAddr>,
    phase: Phase,
    actions: VecDeque<Action>,
    replies: ReplyAssembler,
    /// What the upstream's next final replies answer, oldest first.
    awaiting: VecDeque<Awaiting>,
    /// Client lines held back until the proxy is ready for them (see
    /// `Machine::must_defer`).
    deferred: VecDeque<Vec<u8>>,
    /// When the proxy stops waiting for a server that leaves commands unanswered.
    deferred_until: Option<Instant>,
    /// An asynchronous step the current command waits on; client lines wait meanwhile.
    waiting: Option<Waiting>,
    /// The proxy's own command (or forward mode's greeting) must be answered by then.
    reply_deadline: Option<Instant>,
    bad_commands: u32,
    /// Upstream replies that answered no command, so far.
    unsolicited: u32,
    /// Set by the upstream's `230`: data ports are only spent on logged-in clients.
    logged_in: bool,
    started: Instant,
    /// When the client last completed a command line (for `limits.idle_timeout`).
    last_command: Instant,
    data: data::DataState,
    site: site::SiteState,
    tls: tls::TlsState,
    /// The upstream host as configured or named (for its TLS certificate's name).
    upstream_host: String,
    /// The login and transfer lines, and what the admin API shows.
    audit: audit::Audit,
    /// Reverse mode over a pool: the backend held and those that failed.
    balance: balance::BalanceState,
    /// What the edge defense hears of the client, and the tarpit's held replies.
    defense: defense::DefenseState,
    /// A listener with routes: which one this session takes.
    route: routing::RouteState,
    ended: Option<&'static str>,
}

impl Machine {
    /// A session under the listener policy `ctx` for a client at `client` that reached
    /// the proxy at `client_local`; `original` is a transparent listener's redirected
    /// destination. The session is open at once: its first actions (greet the client,
    /// connect upstream, choose a backend) wait in [`Machine::poll_action`].
    pub fn new(
        ctx: Arc<Policy>,
        client: IpAddr,
        client_local: IpAddr,
        original: Option<SocketAddr>,
        now: Instant,
    ) -> Machine {
        Self::with_name(ctx, client, client_local, original, None, now)
    }

    /// [`Machine::new`] for a client whose implicit-TLS handshake asked for `name` (SNI):
    /// on a listener with routes, a name a route has chooses it at once.
    pub fn with_name(
        ctx: Arc<Policy>,
        client: IpAddr,
        client_local: IpAddr,
        original: Option<SocketAddr>,
        name: Option<&str>,
        now: Instant,
    ) -> Machine {
        let max_reply = ctx.limits.max_reply_bytes;
        // An implicit-TLS listener's shell has finished the handshake before this runs.
        let implicit = ctx
            .cfg
            .tls
            .as_ref()
            .is_some_and(|t| t.client.mode == crate::tls::ClientTlsMode::Implicit);
        let mut m = Machine {
            ctx,
            addrs: Addrs {
                client: client.to_canonical(),
                client_local: client_local.to_canonical(),
                upstream: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                upstream_port: 0,
                upstream_local: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            },
            original,
            phase: Phase::New,
            actions: VecDeque::new(),
            replies: ReplyAssembler::new(max_reply),
            awaiting: VecDeque::new(),
            deferred: VecDeque::new(),
            deferred_until: None,
            waiting: None,
            reply_deadline: None,
            bad_commands: 0,
            unsolicited: 0,
            logged_in: false,
            started: now,
            last_command: now,
            data: data::DataState::default(),
            site: site::SiteState::default(),
            tls: tls::TlsState::default(),
            upstream_host: String::new(),
            audit: audit::Audit::default(),
            balance: balance::BalanceState::default(),
            defense: defense::DefenseState::default(),
            route: routing::RouteState::default(),
            ended: None,
        };
        m.tls.client_secure = implicit;
        m.set_client_name(name);
        m.start();
        m
    }

    // -----------------------------------------------------------------------------------
    // The shell's interface
    // -----------------------------------------------------------------------------------

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether the server accepted the client's login (its `230`).
    pub fn logged_in(&self) -> bool {
        self.logged_in
    }

    /// Why the session ended, once it has.
    pub fn end_reason(&self) -> Option<&'static str> {
        self.ended
    }

    /// Whether the shell should read client lines now. While a command waits for a
    /// lookup, a data connection or the server's answer to the proxy's own command, later
    /// lines stay in the socket (TCP pushes back on a client that floods).
    /// While a transfer runs, a few lines are read and held in order (see
    /// `Machine::must_defer`), so that an `ABOR` behind them is seen.
    pub fn wants_client_input(&self) -> bool {
        let held = self.deferred.is_empty()
            || (self.transfer_pending() && self.deferred.len() < MAX_HELD_DURING_TRANSFER);
        self.ended.is_none()
            && self.waiting.is_none()
            && self.defense.held_until().is_none()
            && held
            && matches!(self.phase, Phase::ForwardLogin { .. } | Phase::Relaying)
    }

    /// When [`Machine::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended.is_some() {
            return None;
        }
        let limits = &self.ctx.limits;
        let idle = if self.busy() {
            None
        } else {
            Some(self.last_command + limits.idle_timeout)
        };
        let login = (!self.logged_in).then(|| self.started + limits.login_timeout);
        [
            idle,
            login,
            self.reply_deadline,
            self.deferred_until,
            self.data.passive_expires(),
            self.data.confirm_by(),
            self.defense.held_until(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What happened, at `now`. After the end ([`Machine::end_reason`]) nothing does.
    pub fn handle(&mut self, event: Event, now: Instant) {
        if self.ended.is_some() {
            return;
        }
        match event {
            Event::ClientLine(line) => self.on_client_line(&line, now),
            Event::ClientOverlong { max } => self.on_client_overlong(max),
            Event::ClientClosed => {
                self.defend_early_close();
                self.close("client closed")
            }
            Event::Banned => self.on_banned(),
            Event::UpstreamLine(line) => self.on_upstream_line(&line, now),
            Event::UpstreamOverlong => self.on_upstream_overlong(),
            Event::UpstreamClosed => self.on_upstream_closed(),
            Event::UpstreamError(error) => self.on_upstream_error(&error),
            Event::Stop => self.on_stop(),
            Event::Ended => self.on_ended(),
            Event::BackendChosen(backend) => self.on_backend_chosen(backend),
            Event::Connected(result) => self.on_connected(result, now),
            Event::Resolved(result) => self.on_resolved(result, now),
            Event::Leased { slot, result } => self.on_leased(slot, result, now),
            Event::DataConnected(result) => self.on_data_connected(result, now),
            Event::ListeningInside(result) => self.on_listening_inside(result, now),
            Event::TransferFinished(result) => self.on_transfer_finished(result, now),
            Event::ClientNamed(name) => self.on_client_named(&name),
            Event::ClientSecured { result, discarded } => {
                self.on_client_secured(result, discarded, now)
            }
            Event::UpstreamSecured { result, discarded } => {
                self.on_upstream_secured(result, discarded, now)
            }
            Event::FxpJob(event) => self.on_fxp_job(event, now),
            Event::FxpChecked(result) => self.on_fxp_destination_checked(result, now),
            Event::FxpTaskEnded => self.on_fxp_task_ended(now),
        }
    }

    /// Opens the session: connect upstream or, in forward mode, greet the client.
    fn start(&mut self) {
        if self.ctx.routes.is_some() {
            return self.start_routed();
        }
        if self.pooled() {
            return self.start_pooled();
        }
        let cfg = &self.ctx.cfg;
        match (cfg.mode, &cfg.upstream, self.original) {
            (Mode::Reverse, Some(_), _) if cfg.upstream_connect == UpstreamConnect::OnLogin => {
                self.say(Say::ProxyGreeting);
                self.phase = Phase::ForwardLogin { attempts: 0 };
            }
            (Mode::Reverse, Some(target), _) => {
                let target = target.clone();
                self.connect(target, None, 0, false, None);
            }
            (Mode::Transparent, _, Some(dst)) => {
                let target = HostPort {
                    host: dst.ip().to_string(),
                    port: dst.port(),
                };
                let source = cfg.preserve_client_address.then_some(self.addrs.client);
                self.connect(target, None, 0, true, source);
            }
            (Mode::Transparent, _, None) => self.close("no original destination"),
            _ => {
                self.say(Say::ForwardGreeting);
                self.phase = Phase::ForwardLogin { attempts: 0 };
            }
        }
    }

    /// A complete line from the client (terminator included).
    fn on_client_line(&mut self, line: &[u8], now: Instant) {
        self.last_command = now;
        self.defense.heard = true;
        if !self.deferred.is_empty() || self.must_defer(line) {
            if self.transfer_pending() && is_abort(line) {
                // Behind other held lines the ABOR keeps its place (its reply comes in
                // order), but the transfer it is for stops now.
                self.abort_transfer();
            }
            self.defer(line.to_vec(), now);
        } else {
            self.client_line(line, now);
        }
        self.settle(now);
    }

    /// The client sent a line longer than `limits.max_line_length`.
    fn on_client_overlong(&mut self, max: usize) {
        self.reject(Rejection::LineTooLong);
        warn!(max, "client sent an over-long command line");
        self.say(Say::LineTooLong { max });
        self.close("line too long");
    }

    /// A complete line from the upstream.
    fn on_upstream_line(&mut self, line: &[u8], now: Instant) {
        match self.replies.push_line(line) {
            Ok(None) => {}
            Ok(Some(reply)) => self.on_reply(reply, now),
            Err(ReplyError::Malformed) => {
                self.upstream_broken(Rejection::BadReply, "a line that is not an FTP reply")
            }
            Err(ReplyError::TooLarge { .. }) => self.on_upstream_overlong(),
        }
        self.settle(now);
    }

    /// The upstream sent more than `limits.max_reply_bytes` without a line end.
    fn on_upstream_overlong(&mut self) {
        self.upstream_broken(
            Rejection::ReplyTooLarge,
            "a reply larger than limits.max_reply_bytes",
        );
    }

    /// The upstream closed its control connection.
    fn on_upstream_closed(&mut self) {
        if self.replies.in_progress() {
            return self.upstream_broken(Rejection::TruncatedReply, "a truncated multi-line reply");
        }
        match self.phase {
            Phase::Greeting { .. } => self.close("upstream sent no greeting"),
            _ => self.close("upstream closed"),
        }
    }

    /// Reading from or writing to the upstream's control connection failed (a reset, or
    /// over TLS a record that does not decrypt: a server that writes plaintext inside
    /// TLS, as vsftpd's `500 OOPS` after a failed data handshake). The client hears
    /// `421` rather than a silent close.
    fn on_upstream_error(&mut self, error: &str) {
        let tls = self.tls.upstream_secure;
        if tls {
            self.reject(Rejection::UpstreamTls);
            warn!(%error, "TLS with the FTP server broke (a server writing plaintext inside TLS looks like this); closing the session");
        } else {
            warn!(%error, "the connection to the FTP server broke; closing the session");
        }
        self.say(Say::UpstreamBroke { tls });
        self.close("upstream connection broke");
    }

    /// The proxy is shutting down now (the drain deadline passed).
    fn on_stop(&mut self) {
        self.say(Say::ShuttingDown);
        self.close("shutdown");
    }

    fn on_ended(&mut self) {
        info!("an operator ended the session");
        self.say(Say::EndedByOperator);
        self.close("ended by an operator");
    }

    /// The clock reached [`Machine::poll_timeout`] (or passed it).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ended.is_some() {
            return;
        }
        let limits = &self.ctx.limits;
        let (login_timeout, idle_timeout) = (limits.login_timeout, limits.idle_timeout);
        if self.defense.held_until().is_some_and(|d| d <= now) {
            self.release_held();
        }
        if self.reply_deadline.is_some_and(|d| d <= now) {
            self.reply_deadline = None;
            return self.upstream_silent(self.ctx.limits.connect_timeout);
        }
        if self.data.confirm_by().is_some_and(|d| d <= now) {
            // The bytes crossed but the server never said how the file ended: the client
            // must not take it for stored, and a reply that comes later would answer its
            // next command.
            self.data.forget_transfer();
            self.count(Count::Transfer("failed"));
            let after = self.ctx.limits.data_idle_timeout;
            self.audit.finish(
                audit::Outcome::Failed,
                (0, 0),
                Some("the server did not confirm the transfer".into()),
            );
            return self.upstream_silent(after);
        }
        if self.deferred_until.is_some_and(|d| d <= now) {
            self.give_up_ordering(now);
            return;
        }
        if self.data.expire_passive(now) {
            self.act(Action::Release(Slot::ClientPassive));
            self.reject(Rejection::PassiveUnused);
            info!(
                after_ms = self.ctx.limits.data_accept_timeout.as_millis() as u64,
                "no transfer ordered for a passive data port; port released"
            );
            return;
        }
        if !self.logged_in && self.started + login_timeout <= now {
            self.reject(Rejection::LoginTimeout);
            self.defend_early_close();
            info!(reason = "login_timeout", "closing the session");
            self.say(Say::LoginTimedOut);
            return self.close("login_timeout");
        }
        if !self.busy() && self.last_command + idle_timeout <= now {
            self.reject(Rejection::IdleTimeout);
            info!(reason = "idle_timeout", "closing the session");
            self.say(Say::IdleTimeout);
            self.close("idle_timeout");
        }
    }

    // -----------------------------------------------------------------------------------
    // Small helpers
    // -----------------------------------------------------------------------------------

    fn act(&mut self, action: Action) {
        // Behind a reply the tarpit holds, every later one waits too: replies keep
        // the order of the commands.
        let action = match action {
            Action::ToClient(bytes) => match self.defense.hold(bytes) {
                Some(bytes) => Action::ToClient(bytes),
                None => return,
            },
            other => other,
        };
        self.actions.push_back(action);
    }

    fn say(&mut self, reply: Say) {
        self.act(Action::ToClient(reply.bytes()));
    }

    fn count(&mut self, c: Count) {
        let route = self.route_label();
        self.act(Action::Count(c, route));
    }

    fn reject(&mut self, r: Rejection) {
        self.count(Count::Rejected(r));
    }

    fn close(&mut self, reason: &'static str) {
        if self.ended.is_none() {
            self.release_held();
            self.ended = Some(reason);
            self.act(Action::Close);
        }
    }

    fn relaying(&self) -> bool {
        self.ctx.cfg.data == DataMode::Relay
    }

    /// Relay mode handles data commands itself, but only for a logged-in client; before
    /// that they go to the server, which refuses them.
    fn relaying_for_client(&self) -> bool {
        self.relaying() && self.logged_in
    }

    /// Whether the session rightly has a quiet control connection: a transfer or a copy
    /// runs, or the proxy is busy on the client's behalf.
    fn busy(&self) -> bool {
        self.data.busy()
            || self.site.copying()
            || self.waiting.is_some()
            || matches!(
                self.phase,
                Phase::Choosing { .. } | Phase::Connecting { .. }
            )
            || self.awaiting.iter().any(|a| match a.answers {
                Answers::Forwarded(v) => matches!(v.class(), VerbClass::Transfer(_)),
                _ => false,
            })
    }

    /// The upstream broke the protocol: tell the client in plain words and end.
    fn upstream_broken(&mut self, reason: Rejection, what: &str) {
        if self.ended.is_some() {
            return;
        }
        self.reject(reason);
        warn!(%reason, "upstream sent {what}; closing the session");
        self.say(Say::UpstreamInvalid);
        self.close("upstream protocol error");
    }

    /// The server let `limits.connect_timeout` pass without greeting or without
    /// answering the proxy's own command: say so plainly, and end.
    fn upstream_silent(&mut self, after: std::time::Duration) {
        let greeting = matches!(self.phase, Phase::Greeting { .. })
            || self
                .awaiting
                .front()
                .is_some_and(|a| a.answers == Answers::Greeting);
        self.reject(Rejection::ReplyTimeout);
        warn!(
            ?after,
            greeting, "the upstream went silent; closing the session"
        );
        self.say(Say::UpstreamSilent { greeting, after });
        self.close(if greeting {
            "upstream sent no greeting"
        } else {
            "upstream did not answer"
        });
    }

    fn forward(&mut self, line: &[u8], verb: Verb) {
        self.audit.files.forwarded(&verb, line);
        self.act(Action::ToUpstream(line.to_vec()));
        self.expect(Answers::Forwarded(verb));
    }

    fn expect(&mut self, answers: Answers) {
        self.awaiting.push_back(Awaiting {
            answers,
            preliminary: false,
        });
    }

    // -----------------------------------------------------------------------------------
    // Ordering
    // -----------------------------------------------------------------------------------

    /// Commands the server has not answered at all yet (a running transfer that already
    /// had its `1xx` does not count: the client may talk meanwhile).
    fn unanswered(&self) -> bool {
        self.awaiting.iter().any(|a| !a.preliminary)
    }

    /// Whether `line` must wait:
    /// - the proxy is busy with an earlier command;
    /// - a transfer's final reply is still to reach the client: every command but `ABOR`
    ///   (and, for a relayed transfer, `STAT`, which the proxy answers) waits for it, so
    ///   no reply overtakes it and no reply to a later command can be taken for it (a
    ///   server such as pyftpdlib answers commands while a transfer runs);
    /// - `line` is a relayed transfer, whose set-up sends the proxy's own `PASV`/`PORT`
    ///   first: that goes out only once the server has answered everything before it, so
    ///   that each reply is taken for what it answers.
    fn must_defer(&self, line: &[u8]) -> bool {
        if self.waiting.is_some() {
            return true;
        }
        match self.phase {
            Phase::Relaying => {}
            Phase::ForwardLogin { .. } => return false,
            _ => return true,
        }
        if self.site.copying() {
            return false;
        }
        if self.transfer_pending() {
            return !self.answered_during_transfer(line);
        }
        if !self.unanswered() || !self.relaying_for_client() {
            return false;
        }
        parse_command(line).is_ok_and(|cmd| matches!(cmd.verb.class(), VerbClass::Transfer(_)))
    }

    /// A transfer's final reply is outstanding, or held until its bytes have crossed.
    fn transfer_pending(&self) -> bool {
        self.data.busy() || self.awaiting.iter().any(|a| a.answers.is_transfer())
    }

    /// The commands that go ahead while a transfer runs: `ABOR`, and `STAT` without
    /// arguments while the proxy carries the transfer (it answers that itself).
    fn answered_during_transfer(&self, line: &[u8]) -> bool {
        let Ok(cmd) = parse_command(line) else {
            return false;
        };
        match cmd.verb.class() {
            VerbClass::Abort => true,
            VerbClass::Status => {
                self.data.relayed_transfer() && trim_eol(cmd.args).trim_ascii().is_empty()
            }
            _ => false,
        }
    }

    fn defer(&mut self, line: Vec<u8>, now: Instant) {
        if self.ordering_deadline_applies() && self.deferred_until.is_none() {
            self.deferred_until = Some(now + self.ctx.limits.connect_timeout);
        }
        self.deferred.push_back(line);
    }

    /// Held lines wait for the server to answer earlier commands only so long (see
    /// [`Machine::give_up_ordering`]); not while a transfer runs, which takes as long as
    /// its file does (its own bounds are the data timeouts), nor while the proxy's own
    /// step runs (bounded by `reply_deadline` and the shell's timeouts).
    fn ordering_deadline_applies(&self) -> bool {
        self.waiting.is_none() && !self.transfer_pending()
    }

    /// Processes deferred lines whose turn has come.
    fn settle(&mut self, now: Instant) {
        self.audit.flush(now);
        while self.ended.is_none() {
            let Some(line) = self.deferred.front() else {
                break;
            };
            if self.must_defer(line) {
                break;
            }
            let line = self.deferred.pop_front().unwrap_or_default();
            self.client_line(&line, now);
        }
        if self.deferred.is_empty() || !self.ordering_deadline_applies() {
            self.deferred_until = None;
        } else if self.deferred_until.is_none() {
            self.deferred_until = Some(now + self.ctx.limits.connect_timeout);
        }
    }

    /// The server left commands unanswered for a whole `connect_timeout` while the client
    /// waits: stop keeping its answers in step rather than hang the session.
    fn give_up_ordering(&mut self, now: Instant) {
        let before = self.awaiting.len();
        self.awaiting
            .retain(|a| a.preliminary || a.answers.is_own());
        warn!(
            unanswered = before - self.awaiting.len(),
            "the server left commands unanswered; going on without their replies"
        );
        self.deferred_until = None;
        // Whatever still blocks the first line, the next attempt waits another while.
        let first = self.deferred.pop_front();
        if let Some(line) = first {
            self.client_line(&line, now);
        }
        self.settle(now);
    }

    // -----------------------------------------------------------------------------------
    // Client commands
    // -----------------------------------------------------------------------------------

    fn client_line(&mut self, line: &[u8], now: Instant) {
        match self.phase {
            Phase::ForwardLogin { attempts } if self.routing_pending() => {
                self.routing_line(line, attempts, now)
            }
            Phase::ForwardLogin { attempts } => self.forward_login_line(line, attempts, now),
            Phase::Relaying => self.relaying_line(line, now),
            // Read only when deferring is over; kept for the next phase otherwise.
            _ => self.deferred.push_front(line.to_vec()),
        }
    }

    fn relaying_line(&mut self, line: &[u8], now: Instant) {
        let cmd = match parse_command(line) {
            Ok(cmd) => cmd,
            Err(e) => {
                self.bad_commands += 1;
                self.reject(Rejection::BadCommand);
                if !self.logged_in {
                    self.defend(crate::defense::DefenseEvent::BadCommand);
                }
                info!(error = %e, "refused an unparseable command line");
                if self.bad_commands >= MAX_BAD_COMMANDS {
                    self.say(Say::TooManyInvalidCommands);
                    return self.close("too many invalid commands");
                }
                return self.say(Say::for_bad_command(e));
            }
        };
        self.bad_commands = 0;
        self.count(Count::Command(cmd.verb));
        let class = cmd.verb.class();
        let verb = cmd.verb.as_str();
        // Secrets: PASS's and ACCT's arguments, and the URLs of SITE FXP.
        let secret = matches!(class, VerbClass::Pass | VerbClass::Acct)
            || (class == VerbClass::Site && is_site_fxp(cmd.args));
        if secret {
            debug!(verb, "command (argument hidden)");
        } else {
            debug!(verb, args = %String::from_utf8_lossy(cmd.args).trim_end(), "command");
        }
        if self.site.copying() {
            return self.while_copying(&cmd, line, now);
        }
        if class == VerbClass::Status && self.data.relayed_transfer() {
            return self.transfer_status();
        }
        if self.tls_command(&cmd, now) || self.host_after_route(class, cmd.args) {
            return;
        }
        if matches!(class, VerbClass::Transfer(_)) && self.logged_in && !self.relaying() {
            self.audit.start(cmd.verb, cmd.args, false, now);
        }
        if class == VerbClass::User && !self.logged_in {
            self.defend_user(cmd.args);
        }
        match class {
            VerbClass::User => {
                // A routed session's server gets the name its route makes.
                if let Some(rewritten) = self.routed_user_line(cmd.args) {
                    return self.forward(&rewritten, cmd.verb);
                }
                self.site.user = Some(lossy(cmd.args))
            }
            VerbClass::Pass => self.site.pass = Some(lossy(cmd.args)),
            _ => {}
        }
        match class {
            // SITE FXP is the proxy's own; other SITE commands go to the server.
            VerbClass::Site if is_site_fxp(cmd.args) => {
                if self.logged_in {
                    self.on_site_fxp(cmd.args, now);
                } else {
                    // Never forwarded: the server would see the destination's password.
                    self.defend(crate::defense::DefenseEvent::BadCommand);
                    self.say(Say::LoginFirst);
                }
            }
            VerbClass::ProxyHeader => {
                // A PROXY header from a source not listed in `proxy_protocol.trusted`:
                // never believe it, never pass it on.
                self.reject(Rejection::ProxyUntrusted);
                warn!("PROXY header from an untrusted source; closing");
                self.say(Say::ProxyUntrusted);
                self.close("untrusted PROXY header");
            }
            VerbClass::Active(v) if self.logged_in || !self.relaying() => {
                self.on_active_command(&cmd, v, line)
            }
            VerbClass::Passive(v) if self.relaying_for_client() => {
                self.on_passive_command(v, cmd.args)
            }
            VerbClass::Transfer(direction) if self.relaying_for_client() => {
                self.on_transfer_command(line, cmd.verb, direction, now)
            }
            VerbClass::Reinitialize => {
                self.logged_in = false;
                self.abort_transfer();
                self.forward(line, cmd.verb);
            }
            VerbClass::Abort if self.relaying() => {
                self.abort_transfer();
                self.forward(line, cmd.verb);
            }
            _ => self.forward(line, cmd.verb),
        }
    }

    // -----------------------------------------------------------------------------------
    // Upstream replies
    // -----------------------------------------------------------------------------------

    fn on_reply(&mut self, reply: Reply, now: Instant) {
        self.count(Count::Reply(reply.code));
        if let Phase::Greeting { .. } = self.phase {
            // Forward mode and `on_login` take the server's greeting in place of the
            // proxy's: it answers the connection, so a passive address cannot be it.
            if !Answers::Greeting.may_be_answered_by(reply.code) {
                return self.unsolicited(&reply, "a greeting is no passive address");
            }
            return self.on_forward_greeting(reply, now);
        }
        if reply.code == 421 {
            // RFC 959 lets a server say 421 at any time before it closes: whatever it
            // answers, it is the last word, and the client should hear it.
            return self.upstream_closing(reply);
        }
        // Each reply is taken for what the oldest unanswered command asked; one that
        // cannot be its answer answers nothing (a server putting words in the proxy's
        // mouth: passed on, it would shift every later reply by one).
        let Some(front) = self.awaiting.front_mut() else {
            return self.unsolicited(&reply, "no command is waiting for a reply");
        };
        if !front.answers.may_be_answered_by(reply.code) {
            return self.unsolicited(&reply, "it cannot answer the command in flight");
        }
        if front.answers == Answers::Greeting {
            // The server spoke: a 120 ("ready in nnn minutes") may be followed by a long
            // wait for its 220, which is the client's to sit out.
            self.reply_deadline = None;
        }
        if reply.code < 200 {
            // The server's progress on the proxy's own command is nobody else's.
            if !front.answers.is_own() {
                front.preliminary = true;
                self.act(Action::ToClient(reply.raw));
            }
            return;
        }
        let answers = front.answers;
        self.audit_reply(&reply);
        self.awaiting.pop_front();
        if reply.code == 230 && matches!(answers, Answers::Forwarded(_)) && !self.logged_in {
            self.logged_in = true;
            self.count(Count::Login { ok: true });
        }
        if let Answers::Forwarded(verb) = answers {
            self.defend_reply(verb.class(), reply.code, now);
        }
        match answers {
            Answers::OwnPassive => {
                self.reply_deadline = None;
                self.on_own_passive_reply(&reply);
            }
            Answers::OwnActive => {
                self.reply_deadline = None;
                self.on_own_active_reply(&reply);
            }
            Answers::OwnAuth => {
                self.reply_deadline = None;
                self.on_own_auth_reply(&reply);
            }
            // Its failure shows in the PROT that follows it.
            Answers::OwnPbsz => {}
            Answers::OwnProt { private } => {
                self.reply_deadline = None;
                self.on_own_prot_reply(&reply, private, now);
            }
            Answers::OwnFeat | Answers::OwnHost => {
                self.reply_deadline = None;
                self.on_own_host_step_reply(&reply, now);
            }
            Answers::RelayedTransfer(_) if self.data.transfer_waiting_for_reply() => {
                self.on_transfer_reply(reply)
            }
            Answers::Forwarded(verb) | Answers::RelayedTransfer(verb) => {
                self.forward_reply(reply, verb)
            }
            Answers::Greeting => {
                let ready = reply.code == 220;
                self.act(Action::ToClient(reply.raw));
                if ready && self.upstream_plan() == crate::tls::UpstreamPlan::AfterGreeting {
                    self.upstream_auth(tls::AfterUpstream::Nothing, now);
                }
            }
        }
    }

    /// The audit trail's view of a final reply: a login's result, a passthrough
    /// transfer's end.
    fn audit_reply(&mut self, reply: &Reply) {
        let Some(Answers::Forwarded(verb)) = self.awaiting.front().map(|a| a.answers) else {
            return;
        };
        let first = String::from_utf8_lossy(&reply.raw);
        let first = first.lines().next().unwrap_or("");
        self.audit.files.answered(&verb, reply.code, first);
        match verb.class() {
            VerbClass::User | VerbClass::Pass | VerbClass::Acct => self.audit_login(reply.code),
            VerbClass::Transfer(_) if !self.relaying() => {
                let (outcome, detail) = match reply.class() {
                    2 => (audit::Outcome::Ok, None),
                    _ => (audit::Outcome::Failed, Some(reply_text(reply))),
                };
                self.audit.finish(outcome, (0, 0), detail);
            }
            _ => {}
        }
    }

    /// A reply that answers nothing: dropped and counted; a server that keeps sending
    /// them is disconnected.
    fn unsolicited(&mut self, reply: &Reply, why: &str) {
        self.unsolicited += 1;
        if self.unsolicited >= MAX_UNSOLICITED {
            return self.upstream_broken(
                Rejection::UnsolicitedReply,
                "one reply too many that answered no command",
            );
        }
        self.reject(Rejection::UnsolicitedReply);
        warn!(
            code = reply.code,
            why, "dropped an upstream reply that answers no command"
        );
    }

    /// The server's `421`: it reaches the client and the session ends.
    fn upstream_closing(&mut self, reply: Reply) {
        info!(reply = %reply_text(&reply), "the server is closing the session");
        self.act(Action::ToClient(reply.raw));
        self.close("upstream closed with 421");
    }

    /// Sends an upstream reply on: `FEAT` and `HELP` list the proxy's own commands too,
    /// and in passthrough mode a passive address is fixed.
    fn forward_reply(&mut self, reply: Reply, answers: Verb) {
        let tls = self.tls_features();
        if let Some(raw) = site::augment_listing(&reply, answers, tls) {
            return self.act(Action::ToClient(raw));
        }
        if self.relaying() {
            if matches!(reply.code, 227..=229) {
                // A passive command sent on before login: in relay mode only the proxy's
                // own address may reach the client, and it gives that once logged in.
                debug!(
                    code = reply.code,
                    "server's passive address withheld from the client"
                );
                return self.say(Say::PassiveBeforeLogin);
            }
            return self.act(Action::ToClient(reply.raw));
        }
        self.forward_passive_reply(reply);
    }
}

/// Whether a client line is `ABOR` (Telnet sequences before it included).
fn is_abort(line: &[u8]) -> bool {
    parse_command(line).is_ok_and(|cmd| cmd.verb.class() == VerbClass::Abort)
}

/// Command arguments as text for the `SITE FXP` login (lossy: FTP user names are text).
fn lossy(args: &[u8]) -> String {
    String::from_utf8_lossy(trim_eol(args)).into_owned()
}

/// A server reply's code and text, for a message to the client.
fn reply_text(reply: &Reply) -> String {
    format!(
        "{} {}",
        reply.code,
        String::from_utf8_lossy(reply.text()).trim()
    )
}
