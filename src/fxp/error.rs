//! How a transfer fails: [`FxpError`], naming the server ([`Side`]) that refused.

use std::time::Duration;

use super::client::FtpError;
use super::digest::Algorithm;
use super::job::event::{Failure, FailureKind};
use super::method::Method;

/// Which server a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FxpError {
    #[error("{side} {host}: {error}")]
    Server {
        side: Side,
        host: String,
        error: FtpError,
    },
    #[error("size differs after the copy: source {src} bytes, destination {dst}")]
    SizeMismatch { src: u64, dst: u64 },
    /// The servers' digests of the copy differ; `copy` says what became of it.
    #[error("{algorithm} differs after the copy: source {src}, destination {dst}; the copy {copy}")]
    HashMismatch {
        algorithm: Algorithm,
        src: String,
        dst: String,
        copy: String,
    },
    /// The copy could not be checked as asked (`--verify hash` between servers without a
    /// common hash, a hash that took too long): final, retrying would not help.
    #[error("cannot verify the copy: {0}")]
    Unverified(String),
    #[error("no progress for {0:?}")]
    Stalled(Duration),
    /// The source sent the whole file; the destination stored `stored` bytes of it, then
    /// nothing more for `after`, and never answered (it stopped reading its data
    /// connection).
    #[error(
        "destination: stored {stored} of {total} bytes, then nothing for {after:.1?} after \
         the source had sent everything, and no reply (it stopped reading the data connection)"
    )]
    DestinationSilent {
        stored: u64,
        total: u64,
        after: Duration,
    },
    #[error("relay: {0}")]
    Relay(std::io::Error),
    /// Every method failed: each one's reason, in the order tried.
    #[error("{}", .0.iter().map(|(m, e)| format!("{m}: {e}")).collect::<Vec<_>>().join("; "))]
    Methods(Vec<(Method, FxpError)>),
    /// Stopped by the caller (`Options::cancel`: Ctrl-C, an API cancel); both servers
    /// were sent `ABOR`.
    #[error("interrupted")]
    Cancelled,
    #[error("{0}")]
    Other(String),
}

impl FxpError {
    /// `error` from the `side` server at `host`.
    pub(super) fn at(side: Side, host: &str, error: FtpError) -> FxpError {
        FxpError::Server {
            side,
            host: host.to_owned(),
            error,
        }
    }

    /// One method's failure as itself, several as [`FxpError::Methods`].
    pub(super) fn methods(mut tried: Vec<(Method, FxpError)>) -> FxpError {
        match tried.len() {
            0 => FxpError::Other("no transfer method to try".into()),
            1 => tried.remove(0).1,
            _ => FxpError::Methods(tried),
        }
    }

    /// The server's reply code, when a server refused something.
    pub fn code(&self) -> Option<u16> {
        match self {
            FxpError::Server { error, .. } => error.code(),
            // The last method's answer decides whether retrying is any use.
            FxpError::Methods(tried) => tried.last().and_then(|(_, e)| e.code()),
            _ => None,
        }
    }

    /// A permanent refusal (5xx, a server the proxy may not reach at all, or a TLS failure
    /// that no retry can mend, such as an untrusted certificate): retrying would get the
    /// same answer.
    pub fn is_permanent(&self) -> bool {
        // An agent name the proxy has no token for never links: as final as a rule.
        let unreachable_by_rule = |e: &FtpError| {
            matches!(
                e,
                FtpError::Denied { .. }
                    | FtpError::SelfTarget(_)
                    | FtpError::Agent(crate::agent::DialError::Unknown(_))
            )
        };
        matches!(
            self,
            FxpError::HashMismatch { .. } | FxpError::Unverified(_)
        ) || self.code().is_some_and(|c| c / 100 == 5)
            || self
                .server_error()
                .is_some_and(|e| e.is_permanent() || unreachable_by_rule(e))
    }

    /// The server's error behind this one (the last method's, for several).
    fn server_error(&self) -> Option<&FtpError> {
        match self {
            FxpError::Server { error, .. } => Some(error),
            FxpError::Methods(tried) => tried.last().and_then(|(_, e)| e.server_error()),
            _ => None,
        }
    }

    /// A server's certificate was not trusted (the operator may trust its CA, or not
    /// check): front ends say how.
    pub fn untrusted_certificate(&self) -> bool {
        matches!(
            self.server_error(),
            Some(FtpError::Tls {
                untrusted: true,
                ..
            })
        )
    }
}

impl From<&FxpError> for Failure {
    /// The failure as plain data: its kind, its words, its reply code, whether a retry
    /// could mend it.
    fn from(e: &FxpError) -> Failure {
        Failure {
            kind: e.kind(),
            message: e.to_string(),
            code: e.code(),
            permanent: e.is_permanent(),
        }
    }
}

impl FxpError {
    /// What kind of failure this is, for the front ends ([`FailureKind`]).
    pub fn kind(&self) -> FailureKind {
        match self {
            FxpError::Server { error, .. } => match error {
                FtpError::Resolve { .. } | FtpError::Connect { .. } | FtpError::Agent(_) => {
                    FailureKind::Unreachable
                }
                FtpError::Timeout { .. } => FailureKind::Timeout,
                FtpError::Refused { cmd, .. }
                    if cmd.starts_with("USER") || cmd.starts_with("PASS") =>
                {
                    FailureKind::LoginRefused
                }
                FtpError::Refused { .. } => FailureKind::Refused,
                FtpError::Closed { .. }
                | FtpError::BadReply { .. }
                | FtpError::Io(_)
                | FtpError::Data(_) => FailureKind::Connection,
                FtpError::Tls {
                    untrusted: true, ..
                } => FailureKind::UntrustedCertificate,
                FtpError::Tls { .. } | FtpError::TlsSetup(_) => FailureKind::Tls,
                FtpError::Denied { .. } | FtpError::SelfTarget(_) => FailureKind::NotAllowed,
                FtpError::PrivilegedPort { .. } | FtpError::Other(_) => FailureKind::Other,
            },
            FxpError::SizeMismatch { .. } => FailureKind::SizeMismatch,
            FxpError::HashMismatch { .. } => FailureKind::HashMismatch,
            FxpError::Unverified(_) => FailureKind::Unverified,
            FxpError::Stalled(_) | FxpError::DestinationSilent { .. } => FailureKind::Stalled,
            FxpError::Relay(_) => FailureKind::Connection,
            FxpError::Methods(tried) => tried.last().map_or(FailureKind::Other, |(_, e)| e.kind()),
            FxpError::Cancelled => FailureKind::Cancelled,
            FxpError::Other(_) => FailureKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::DialError;
    use crate::fxp::job::FailureKind as K;

    fn at_destination(error: FtpError) -> FxpError {
        FxpError::at(Side::Destination, "203.0.113.5:21", error)
    }

    fn refused(cmd: &str, code: u16) -> FxpError {
        at_destination(FtpError::Refused {
            cmd: cmd.into(),
            code,
            text: "Login incorrect.".into(),
        })
    }

    /// What the session machine's `SITE FXP` replies are decided by (its tests start
    /// from these failures): the kind, the reply code, whether a retry could mend it,
    /// and the words.
    #[test]
    fn each_failure_becomes_the_plain_data_front_ends_decide_by() {
        let denied = {
            let allow = crate::net::AllowList::default().named("fxp.allow");
            let why = allow.admits("h", "192.0.2.1".parse().unwrap()).unwrap_err();
            at_destination(FtpError::Denied {
                host: "h".into(),
                why,
            })
        };
        let connect = at_destination(FtpError::Connect {
            host: "203.0.113.5:21".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        });
        // An agent that may link again later, and a name none may ever link as.
        let absent = at_destination(FtpError::Agent(DialError::NotConnected("a".into())));
        let unknown = at_destination(FtpError::Agent(DialError::Unknown("z".into())));
        let timeout = at_destination(FtpError::Timeout {
            what: "USER".into(),
            after: Duration::from_secs(30),
        });
        let cases = [
            (denied, K::NotAllowed, None, true),
            (refused("PASS", 530), K::LoginRefused, Some(530), true),
            (refused("USER u", 530), K::LoginRefused, Some(530), true),
            (refused("PASS", 421), K::LoginRefused, Some(421), false),
            (refused("CWD", 550), K::Refused, Some(550), true),
            (connect, K::Unreachable, None, false),
            (absent, K::Unreachable, None, false),
            (unknown, K::Unreachable, None, true),
            (timeout, K::Timeout, None, false),
            (
                FxpError::Stalled(Duration::from_secs(30)),
                K::Stalled,
                None,
                false,
            ),
            (FxpError::Cancelled, K::Cancelled, None, false),
        ];
        for (e, kind, code, permanent) in cases {
            let f = Failure::from(&e);
            assert_eq!(
                (f.kind, f.code, f.permanent),
                (kind, code, permanent),
                "{e}"
            );
            assert_eq!(f.message, e.to_string());
        }
        assert_eq!(
            Failure::from(&refused("PASS", 530)).message,
            "destination 203.0.113.5:21: PASS refused: 530 Login incorrect."
        );
        assert_eq!(
            Failure::from(&FxpError::Stalled(Duration::from_secs(30))).message,
            "no progress for 30s"
        );
    }
}
