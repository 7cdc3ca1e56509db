//! What a transfer tells its caller: how a file was moved ([`Method`]), the events heard
//! while it runs ([`Event`], through a [`Progress`] callback), and the [`Report`] of a
//! finished copy.

use std::sync::Arc;
use std::time::Duration;

pub use super::digest::Check;

/// How a file was moved. The names ([`Method::as_str`], the JSON and metric labels) of
/// the first three never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `PASV` on the source, `PORT` on the destination.
    Fxp,
    /// `PASV` on the destination, `PORT` on the source.
    ReverseFxp,
    /// Through the engine: `PASV` on both, bytes copied here (over TLS on each leg whose
    /// server speaks TLS).
    Relay,
    /// FXP between two TLS servers under `PROT P`, one of them the TLS client of the data
    /// connection (`SSCN ON`): the servers encrypt between themselves.
    FxpSscn,
    /// [`Method::FxpSscn`] with `PASV` on the destination.
    ReverseFxpSscn,
    /// FXP between two TLS servers, `CPSV` (`PASV` with the passive server as TLS client)
    /// on the source.
    FxpCpsv,
    /// [`Method::FxpCpsv`] with `CPSV` on the destination.
    ReverseFxpCpsv,
    /// FXP with `PROT C` on the TLS servers: the file crosses the network between them
    /// unencrypted (only with `fxp.allow_clear_data`).
    FxpClear,
    /// [`Method::FxpClear`] with `PASV` on the destination.
    ReverseFxpClear,
}

/// How a direct method protects the data connection between the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// As the sessions are: plain FTP.
    Plain,
    /// `SSCN ON` on one server.
    Sscn,
    /// `CPSV` on the passive server.
    Cpsv,
    /// `PROT C` on the TLS servers.
    Clear,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Fxp => "fxp",
            Method::ReverseFxp => "reverse_fxp",
            Method::Relay => "relay",
            Method::FxpSscn => "fxp_sscn",
            Method::ReverseFxpSscn => "reverse_fxp_sscn",
            Method::FxpCpsv => "fxp_cpsv",
            Method::ReverseFxpCpsv => "reverse_fxp_cpsv",
            Method::FxpClear => "fxp_clear",
            Method::ReverseFxpClear => "reverse_fxp_clear",
        }
    }

    /// A direct method with `PASV` on the destination.
    pub fn is_reverse(self) -> bool {
        matches!(
            self,
            Method::ReverseFxp
                | Method::ReverseFxpSscn
                | Method::ReverseFxpCpsv
                | Method::ReverseFxpClear
        )
    }

    /// How a direct method protects the data; `None` for the relay.
    pub fn protection(self) -> Option<Protection> {
        match self {
            Method::Fxp | Method::ReverseFxp => Some(Protection::Plain),
            Method::FxpSscn | Method::ReverseFxpSscn => Some(Protection::Sscn),
            Method::FxpCpsv | Method::ReverseFxpCpsv => Some(Protection::Cpsv),
            Method::FxpClear | Method::ReverseFxpClear => Some(Protection::Clear),
            Method::Relay => None,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the front end hears while a transfer runs.
#[derive(Debug, Clone)]
pub enum Event {
    /// Both servers logged in; `size` is the source's `SIZE` when known.
    Started {
        src: String,
        dst: String,
        size: Option<u64>,
    },
    /// A method is being tried.
    Trying { method: Method, offset: u64 },
    /// A method failed; the next one (or a retry) follows.
    MethodFailed { method: Method, error: String },
    /// Bytes at the destination so far (polled with `SIZE`, or counted by the relay).
    Bytes { done: u64, total: Option<u64> },
    /// A whole attempt failed and another follows after `delay`.
    Retrying {
        attempt: u32,
        delay: Duration,
        error: String,
    },
}

/// Progress callback; must be cheap (it runs on the engine's task).
pub type Progress = Arc<dyn Fn(&Event) + Send + Sync>;

/// The outcome of a successful copy.
#[derive(Debug, Clone)]
pub struct Report {
    pub method: Method,
    /// Size of the copy: the destination's `SIZE`, else the source's, else what the relay
    /// counted (0 when nothing tells).
    pub bytes: u64,
    /// Bytes that crossed the engine: 0 for FXP.
    pub relayed_bytes: u64,
    /// Where the last attempt resumed (`REST`), 0 when it started from scratch.
    pub resumed_from: u64,
    pub attempts: u32,
    pub duration: Duration,
    /// What the copy was checked with: a hash both servers computed (`sha-256`, ...),
    /// `SIZE` on both ends, or nothing.
    pub verified: Check,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dashboards and scripts read these names: the metric label, the JSON and
    /// `Display` agree, and the original three never change.
    #[test]
    fn names_are_stable_and_agree() {
        let all = [
            Method::Fxp,
            Method::ReverseFxp,
            Method::Relay,
            Method::FxpSscn,
            Method::ReverseFxpSscn,
            Method::FxpCpsv,
            Method::ReverseFxpCpsv,
            Method::FxpClear,
            Method::ReverseFxpClear,
        ];
        for m in all {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
            assert_eq!(m.to_string(), m.as_str());
            assert_eq!(m.is_reverse(), m.as_str().starts_with("reverse_"));
        }
        let old: Vec<_> = all[..3].iter().map(|m| m.as_str()).collect();
        assert_eq!(old, ["fxp", "reverse_fxp", "relay"]);
    }
}
