//! Why a connection the proxy makes failed: the words the session machine, the FXP
//! engine and the logs share, and the `reason` label of `fxprelay_upstream_errors_total`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Why the proxy could not reach an upstream. The client only ever sees a generic `421`;
/// this detail goes to the log and the `reason` label of `fxprelay_upstream_errors_total`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, io::Error),
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("connecting to {0} timed out after {1:?}")]
    Timeout(String, Duration),
    #[error("connection to {0} refused")]
    Refused(SocketAddr),
    #[error("cannot connect to {0}: {1}")]
    Io(SocketAddr, io::Error),
    #[error("{0}")]
    Denied(String),
    /// The target is this proxy itself (see [`super::OwnSockets`]).
    #[error("{0}")]
    SelfTarget(String),
}

impl ConnectError {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectError::Resolve(..) | ConnectError::NoAddress(_) => "resolve",
            ConnectError::Timeout(..) => "timeout",
            ConnectError::Refused(_) => "refused",
            ConnectError::Io(..) => "io",
            ConnectError::Denied(_) => "denied",
            ConnectError::SelfTarget(_) => "self_target",
        }
    }
}
