//! What the admin API shows of a running session: a plain [`Snapshot`] the machine
//! produces and the registry stores. Its own module so that neither imports the other.

/// What the admin API shows of a session while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The `USER` name (forward mode: without `@host`), once sent.
    pub user: Option<String>,
    /// The upstream as configured or named by the client, once connected.
    pub upstream: Option<String>,
    /// Whether the server accepted the login (`230`).
    pub logged_in: bool,
    /// The transfer running now: verb and path.
    pub transfer: Option<(String, String)>,
    /// Bytes relayed by the finished transfers of this session, client to server.
    pub upload_bytes: u64,
    /// Bytes relayed by the finished transfers of this session, server to client.
    pub download_bytes: u64,
    /// Transfers finished (any result).
    pub transfers: u64,
    /// Whether the client's control connection is TLS.
    pub client_tls: bool,
    /// The route the session took, on a listener with `routes:`.
    pub route: Option<String>,
}
