//! What the machine asks of its shell: [`Action`]s, in order. Each request that has an
//! outcome names the [`Event`] that answers it; the rest are carried out and forgotten.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[cfg(doc)]
use super::{Event, Machine};
use crate::config::ProxyVersion;
use crate::defense::DefenseEvent;
use crate::fxp::method::Method;
use crate::fxp::url::{FtpUrl, VirtualHost};
use crate::net::{AllowList, HostName, HostPort, OwnSockets};
use crate::proto::command::{Direction, Verb};
use crate::rejection::Rejection;
use crate::route::RouteLabel;

/// What the shell must do, in order.
#[derive(Debug)]
pub enum Action {
    /// Write to the client's control connection.
    ToClient(Vec<u8>),
    /// Write to the upstream's control connection (a failure is [`Event::UpstreamError`]).
    ToUpstream(Vec<u8>),
    /// Choose a backend of the listener's pool for the client at `client` (with `balance:
    /// user`, logged in as `user`), none of `tried`, and hold it for the session (one of
    /// its sessions until the next choice or the end); answer with
    /// [`Event::BackendChosen`].
    ChooseBackend {
        client: IpAddr,
        user: Option<Vec<u8>>,
        tried: Vec<usize>,
    },
    /// A listener with routes: the session takes route `route` (`None`: the default
    /// route, the listener's own `upstream`), labelled `label`. Its pool, upstream TLS
    /// settings, metrics and log lines are that route's from now on.
    Routed {
        route: Option<usize>,
        label: RouteLabel,
    },
    /// The chosen backend `index` could not be reached: report it to the pool (it counts
    /// toward `fall`, like a failed check) and let go of it.
    BackendFailed { index: usize, error: String },
    /// Open the upstream control connection; answer with [`Event::Connected`].
    Connect(ConnectRequest),
    /// Look a name up; answer with [`Event::Resolved`].
    Resolve(HostName),
    /// Lease a data port on `bind` into `slot`, counted against `client`'s share
    /// (`limits.max_data_ports_per_ip`); answer with [`Event::Leased`].
    Lease {
        slot: Slot,
        bind: IpAddr,
        client: IpAddr,
    },
    /// The listener reaches its server through an agent (`via`): have the agent that
    /// carries this session's control connection listen, inside, for the server's
    /// active-mode data connection (from `server`'s address only), held in
    /// [`Slot::UpstreamActive`]; answer with [`Event::ListeningInside`].
    ListenInside { server: SocketAddr },
    /// Drop what `slot` holds (a leased port, an agent's listening port, a connected
    /// data socket).
    Release(Slot),
    /// Connect to the upstream's passive data port, into [`Slot::UpstreamData`]; answer
    /// with [`Event::DataConnected`].
    ConnectData(SocketAddr),
    /// Remember for the listener's later sessions that the upstream at this control
    /// address refuses passive mode (they learn it in [`Connected::refuses_passive`]).
    ///
    /// [`Connected::refuses_passive`]: super::Connected::refuses_passive
    RememberPassiveRefusal(SocketAddr),
    /// Run one relayed transfer with these legs, each TLS-protected when its flag says
    /// so; answer with [`Event::TransferFinished`].
    StartTransfer {
        direction: Direction,
        client: ClientLeg,
        upstream: UpstreamLeg,
        client_tls: bool,
        upstream_tls: bool,
    },
    /// The client's `234` is written: discard whatever the client sent after `AUTH TLS`
    /// unread, and run the TLS handshake as the server; answer with
    /// [`Event::ClientSecured`].
    UpgradeClient,
    /// The server's `234` came: discard whatever it sent after it, and run the TLS
    /// handshake as the client, checking that the certificate is for `server_name`;
    /// answer with [`Event::UpstreamSecured`].
    UpgradeUpstream { server_name: String },
    /// Stop the running transfer now (both data connections close).
    AbortTransfer,
    /// Run a `SITE FXP` copy (a tree when `recursive`) as a task, with the engine's
    /// options as `rules` says (`fxp::job::run`); report each of the job's events with
    /// [`Event::FxpJob`], then [`Event::FxpTaskEnded`].
    StartFxp {
        src: FtpUrl,
        dst: FtpUrl,
        recursive: bool,
        rules: FxpRules,
    },
    /// Log in to a `SITE FXP TO` destination (as `rules` says, within the engine's
    /// timeout) and out again; report with [`Event::FxpChecked`], then
    /// [`Event::FxpTaskEnded`].
    CheckFxpDestination { url: FtpUrl, rules: FxpRules },
    /// Stop the running `SITE FXP` copy or destination check: no event follows.
    CancelFxp,
    /// Report what `client` did to the listener's ban table; answer with
    /// [`Event::Banned`] if the client is banned now, else nothing.
    Defend { client: IpAddr, event: DefenseEvent },
    /// Record a metric, under the route the session had when it happened.
    Count(Count, RouteLabel),
    /// The session is over ([`Machine::end_reason`] says why): close both connections.
    Close,
}

/// Where the upstream control connection goes.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub target: HostPort,
    /// Check every resolved address with [`super::permitted`] (forward and transparent
    /// mode: the allow list and the loop guard).
    pub guarded: bool,
    /// Connect from this (non-local) address: transparent `preserve_client_address`.
    pub source: Option<IpAddr>,
    /// Implicit TLS: the handshake follows the connect, for this certificate name.
    pub tls: Option<String>,
    /// `upstream_proxy_protocol`: a PROXY header of this version, naming the client,
    /// goes first (before any TLS).
    pub proxy_header: Option<ProxyVersion>,
}

/// How the client's side of a transfer gets its data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientLeg {
    /// The client connects to the port in [`Slot::ClientPassive`]; only from `expect`
    /// (anyone else is port theft).
    Accept { expect: IpAddr },
    /// The proxy connects to the client here.
    Connect(SocketAddr),
}

/// How the upstream's side of a transfer gets its data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamLeg {
    /// Already connected: the socket in [`Slot::UpstreamData`].
    Connected,
    /// The server connects to the port in [`Slot::UpstreamActive`] (the proxy's, or the
    /// agent's inside), only from `expect`.
    Accept { expect: IpAddr },
}

/// What a `SITE FXP` task's engine may reach and trust, as the machine decided: the
/// shell builds the engine's options from it and adds only the progress plumbing.
#[derive(Debug, Clone)]
pub struct FxpRules {
    /// The servers the engine may reach: the session's own server A and `fxp.allow`.
    pub allow: Arc<AllowList>,
    /// The proxy's own sockets, which no server or data address may be.
    pub own: Arc<OwnSockets>,
    /// Check the servers' certificates: the listener's `tls.upstream.verify` (on without
    /// a `tls:` block), since the engine reaches A as this session does.
    pub verify: bool,
    /// Extra trust roots: the listener's `tls.upstream.ca`.
    pub ca: Option<PathBuf>,
    /// The name the session's server A took with `HOST` (a session routed by it): the
    /// engine asks A for it too before logging in.
    pub virtual_host: Option<VirtualHost>,
}

/// The resources the shell holds for the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A port leased for the client's passive data connection.
    ClientPassive,
    /// A port leased for the upstream's active data connection, or through an agent the
    /// port it listens on inside.
    UpstreamActive,
    /// The proxy's connection to the upstream's passive data port.
    UpstreamData,
}

/// A metric event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Count {
    Command(Verb),
    Reply(u16),
    Rewrite {
        kind: &'static str,
        reason: &'static str,
    },
    Rejected(Rejection),
    /// A relayed transfer ended: `ok`, `failed` or `aborted`.
    Transfer(&'static str),
    /// A login succeeded (the server's `230`) or failed (the server's `530` to `USER`,
    /// `PASS` or `ACCT`, or the proxy's own refusal: no route, a forward target refused).
    Login {
        ok: bool,
    },
    /// A `SITE FXP` copy was cancelled `took` after it started, while trying `method`
    /// (`None`: before the engine tried any). The engine counts copies that end.
    FxpCancelled {
        method: Option<Method>,
        took: Duration,
    },
}
