//! `limits:`, resource limits shared by all listeners. Each limit is a rule about one
//! value (a count above 0, a timeout above 0s), checked as it is parsed so the YAML
//! layer's error names its line and column; none depends on another key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values;

/// Resource limits shared by all listeners (the `limits:` key; every field optional).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// How long resolving and connecting to an upstream may take before the client gets `421`.
    #[serde(with = "values::nonzero_duration")]
    pub connect_timeout: Duration,
    /// How long open sessions and running API transfers may keep running after
    /// SIGTERM/SIGINT.
    #[serde(with = "values::duration")]
    pub shutdown_grace: Duration,
    /// Concurrent client sessions per listener; more are answered `421` and closed.
    #[serde(deserialize_with = "values::positive")]
    pub max_sessions: usize,
    /// Longest command line accepted from a client, CRLF included.
    #[serde(deserialize_with = "values::line_length")]
    pub max_line_length: usize,
    /// Largest reply (all lines of a multi-line reply) accepted from an upstream.
    #[serde(deserialize_with = "values::positive")]
    pub max_reply_bytes: usize,
    /// How long a relay data listener waits for its one expected connection.
    #[serde(with = "values::nonzero_duration")]
    pub data_accept_timeout: Duration,
    /// Concurrent sessions from one client address per listener.
    #[serde(deserialize_with = "values::positive")]
    pub max_sessions_per_ip: usize,
    /// From connect until the server accepts the login (`230`); then `421` and close.
    #[serde(with = "values::nonzero_duration")]
    pub login_timeout: Duration,
    /// A control connection with no complete command for this long (and no transfer
    /// running) is closed with `421`. A client dribbling a line byte by byte counts as idle.
    #[serde(with = "values::nonzero_duration")]
    pub idle_timeout: Duration,
    /// A relayed transfer that moves no byte for this long fails with `426`; a server
    /// that has not sent a crossed transfer's final reply this long after its data ended
    /// gets the session closed with `421`.
    #[serde(with = "values::nonzero_duration")]
    pub data_idle_timeout: Duration,
    /// A control line the client (or the server) does not take (it stopped reading) for
    /// this long ends the session, so it cannot hold its slot, upstream connection and
    /// data port.
    #[serde(with = "values::nonzero_duration")]
    pub reply_write_timeout: Duration,
    /// Sessions per listener that have not logged in yet (no `230`), apart from
    /// `max_sessions`: idle connections that never log in cannot crowd out real users.
    #[serde(deserialize_with = "values::positive")]
    pub max_pre_login_sessions: usize,
    /// The same, per client address.
    #[serde(deserialize_with = "values::positive")]
    pub max_pre_login_sessions_per_ip: usize,
    /// Relay data ports one client address may hold at once (listening or carrying a
    /// transfer), across its sessions: a few addresses cannot take the whole port list.
    #[serde(deserialize_with = "values::positive")]
    pub max_data_ports_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            max_sessions: 1024,
            max_line_length: 4096,
            max_reply_bytes: 256 * 1024,
            data_accept_timeout: Duration::from_secs(30),
            max_sessions_per_ip: 64,
            login_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(900),
            data_idle_timeout: Duration::from_secs(300),
            reply_write_timeout: Duration::from_secs(60),
            max_pre_login_sessions: 256,
            max_pre_login_sessions_per_ip: 16,
            max_data_ports_per_ip: 64,
        }
    }
}
