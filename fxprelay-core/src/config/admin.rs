//! `admin:`, the HTTP endpoint (`/metrics`, `/healthz`, the API): its address, token and
//! bounds, and the section's rule: an endpoint other hosts reach needs a token.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::schema::FileAdmin;
use super::values;

/// The `admin:` block, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    /// Bearer token required by the admin API (`/api/...`); `/metrics` and `/healthz`
    /// stay open. Printed as `***`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "values::redacted_opt"
    )]
    pub token: Option<String>,
    #[serde(flatten)]
    pub limits: AdminLimits,
}

/// What a file without `admin:` gets.
impl Default for AdminConfig {
    fn default() -> Self {
        validate(FileAdmin::default())
    }
}

/// Bounds of the admin HTTP listener (`admin:` keys), so that clients that open
/// connections and never finish a request cannot hold its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AdminLimits {
    /// A request's headers must arrive within this, counted from the connection's start
    /// or from the previous response (so it also closes idle keep-alive connections).
    #[serde(serialize_with = "values::duration::serialize")]
    pub header_read_timeout: Duration,
    /// A whole request, body and answer included.
    #[serde(serialize_with = "values::duration::serialize")]
    pub request_timeout: Duration,
    /// Connections open at once. A newcomer beyond it closes the oldest idle connection
    /// (one not being served a request), or is closed when there is none.
    pub max_connections: usize,
    /// The same for one client address, which makes room among its own connections.
    pub max_connections_per_ip: usize,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminConfig::default().limits
    }
}

/// The `admin:` block as validated; an empty token is no token.
pub(super) fn validate(file: FileAdmin) -> AdminConfig {
    AdminConfig {
        bind: file.bind.value.0,
        token: file.token.filter(|t| !t.is_empty()),
        limits: AdminLimits {
            header_read_timeout: file.header_read_timeout,
            request_timeout: file.request_timeout,
            max_connections: file.max_connections,
            max_connections_per_ip: file.max_connections_per_ip,
        },
    }
}

/// Warns when other hosts can reach the API and no token guards it.
pub(super) fn warn(admin: &AdminConfig, warnings: &mut Vec<String>) {
    let bind = admin.bind;
    if admin.token.is_none() && !bind.ip().to_canonical().is_loopback() {
        warnings.push(format!(
            "admin.bind {bind} is reachable from other hosts and admin.token is not set: \
             anyone who reaches it can order FXP transfers through the API; set admin.token"
        ));
    }
}
