//! What happens to a session, as the machine hears it: one [`Event`] enum for the lines
//! of both control connections, the outcome of each [`Action`] that has one, a `SITE FXP`
//! task's news and the shutdown. The clock is no event: every call takes `now`, and
//! [`Machine::handle_timeout`] runs when [`Machine::poll_timeout`] says.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

#[cfg(doc)]
use super::Machine;
#[cfg(doc)]
use super::action::Action;
use super::action::Slot;
use crate::fxp::job::{Failure, JobEvent};
use crate::net::{HostPort, LeaseError};
use crate::proto::Moved;

/// One thing that happened, for [`Machine::handle`].
#[derive(Debug)]
pub enum Event {
    // The control connections and the process.
    /// A complete line from the client (terminator included).
    ClientLine(Bytes),
    /// The client sent a line longer than `limits.max_line_length` (`max`).
    ClientOverlong { max: usize },
    /// The client closed its control connection.
    ClientClosed,
    /// A complete line from the upstream.
    UpstreamLine(Bytes),
    /// The upstream sent more than `limits.max_reply_bytes` without a line end.
    UpstreamOverlong,
    /// The upstream closed its control connection.
    UpstreamClosed,
    /// Reading from or writing to the upstream's control connection failed (a reset, or
    /// over TLS a record that does not decrypt).
    UpstreamError(String),
    /// The proxy is shutting down now (the drain deadline passed).
    Stop,
    /// An operator ended this session (`DELETE /api/v1/sessions/{id}`, the console).
    Ended,
    /// To [`Action::Defend`]: the client is banned now (that report's score banned it,
    /// or another session's did meanwhile).
    Banned,

    // Answers to actions.
    /// To [`Action::ChooseBackend`]: the backend the shell now holds, or none when every
    /// usable one is down.
    BackendChosen(Option<Backend>),
    /// To [`Action::Connect`].
    Connected(Result<Connected, ConnectFailure>),
    /// To [`Action::Resolve`].
    Resolved(Result<Vec<IpAddr>, String>),
    /// To [`Action::Lease`]: the port leased into `slot`, or why none was.
    Leased { slot: Slot, result: LeaseResult },
    /// To [`Action::ConnectData`].
    DataConnected(Result<(), DataConnectError>),
    /// To [`Action::ListenInside`]: the address the agent listens at, or why it does not.
    ListeningInside(Result<SocketAddr, String>),
    /// To [`Action::StartTransfer`]: the transfer task ended.
    TransferFinished(TransferResult),
    /// Before [`Event::ClientSecured`]: the name the client asked for in its TLS
    /// handshake (SNI), when it sent one.
    ClientNamed(String),
    /// To [`Action::UpgradeClient`]; `discarded` bytes the client had sent in clear after
    /// `AUTH TLS` were thrown away unread.
    ClientSecured {
        result: Result<(), String>,
        discarded: usize,
    },
    /// To [`Action::UpgradeUpstream`]; `discarded` bytes the server had sent in clear
    /// after its `234` were thrown away unread.
    UpstreamSecured {
        result: Result<(), String>,
        discarded: usize,
    },

    // A `SITE FXP` task's news (after [`Action::StartFxp`] or
    // [`Action::CheckFxpDestination`]).
    /// An event of the copy's job, in order; the last is `Finished`.
    FxpJob(JobEvent),
    /// The login to a `SITE FXP TO` destination succeeded or failed.
    FxpChecked(Result<(), Failure>),
    /// The task is gone, after its last word or without one (it panicked).
    FxpTaskEnded,
}

/// The upstream control connection, once open.
#[derive(Debug, Clone, Copy)]
pub struct Connected {
    pub peer: SocketAddr,
    pub local: IpAddr,
    /// The listener's sessions have seen this server refuse passive mode before
    /// (`upstream_data: auto` then goes straight to active mode).
    pub refuses_passive: bool,
}

/// Why the upstream control connection could not be opened.
#[derive(Debug, Clone)]
pub enum ConnectFailure {
    /// Every resolved address was refused by [`super::permitted`]'s allow list.
    Denied(String),
    /// A resolved address was this proxy itself (and none was allowed).
    SelfTarget(String),
    Unreachable(String),
    /// The listener's upstream is reached through agent `.0` (`via`), which has no link
    /// up.
    AgentDown(String),
    /// Connected, but implicit TLS with the server failed.
    Tls(String),
}

/// A backend the shell chose from the pool, and now holds for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Its place in the pool (what [`Action::BackendFailed`] names).
    pub index: usize,
    pub target: HostPort,
}

/// Why the proxy's connection to the server's passive data port failed.
#[derive(Debug, Clone)]
pub enum DataConnectError {
    Timeout,
    Io(String),
}

/// What a relayed transfer came to: the bytes it moved, or why it failed.
pub type TransferResult = Result<Moved, String>;
/// A leased data port, or why there is none.
pub type LeaseResult = Result<u16, LeaseError>;
