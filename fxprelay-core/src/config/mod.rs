//! The YAML configuration: from the file the operator writes to the typed [`Config`] the
//! rest of the proxy runs, and back (`fxprelay config`).
//!
//! - `load`: read the file, expand `${VAR}`s (`env`), parse the YAML into the file's
//!   shape (`yaml` words the parser's errors for operators: line, column, "did you
//!   mean"), validate.
//! - `schema`: the file as written, every key known (an unknown one is an error), with
//!   the defaults of keys left out; values whose rules depend on other keys keep their
//!   line. Values read whole (the listeners' modes, `proxy_protocol`, `balance`, the
//!   check login) are defined there and used as they are.
//! - One validator per section, each module owning its section's typed settings and
//!   its rules: `admin` (an open endpoint needs a token), `data` (no listener on a data
//!   port), `limits` (each limit a rule about its own value, checked as it is parsed),
//!   `fxp` (bundle names), `state` (the store's URL, key file and instance name), `defense` (the edge defense, a listener's overrides of it),
//!   `listener` (names, binds, upstreams by mode, keys a mode ignores), `pool` (a reverse
//!   listener's backends and health checks, with [`PoolError`]), `route` (a reverse
//!   listener's `routes:`, each with what it overrides of the listener's settings, and
//!   which of them can never be chosen), `tls` (a listener's `tls:` block). `validate`
//!   runs them in order;
//!   `values` holds the rules and the written form of single values (durations,
//!   counts, networks, secrets).
//! - `print`: the typed configuration is plain data (addresses, durations, paths,
//!   enums) that serializes in the file's own keys, so the effective configuration is
//!   printed from it directly, and loads back to the same configuration.
//! - [`Origin`]: where the keys that name files were written. Validation reads no file
//!   but the configuration: certificates, keys and CA bundles are read by
//!   `app::material` (at start, on `SIGHUP`, for `fxprelay check` and `fxprelay config`),
//!   whose errors name key, line and file through it.
//!
//! Every error ([`ConfigError`]) names the line, and the key once validation has one; in
//! a file it names the file and quotes the lines around the problem.

mod admin;
mod agents;
mod data;
mod defense;
mod env;
mod error;
mod fxp;
mod limits;
mod listener;
mod load;
mod origin;
mod pool;
mod print;
mod route;
mod schema;
mod state;
mod tls;
mod validate;
mod values;
mod yaml;

use serde::Serialize;

pub use admin::{AdminConfig, AdminLimits};
pub use agents::{AGENTS_TLS_KEY, AgentConfig, AgentsConfig, TokenSource};
pub use data::{DEFAULT_DATA_PORTS, DataConfig};
pub use defense::{DefenseConfig, ListenerDefense};
pub use env::expand_env;
pub use error::ConfigError;
pub use fxp::FxpConfig;
pub use limits::Limits;
pub use listener::ListenerConfig;
pub use origin::{Origin, ca_bundle_key, listener_key};
pub use pool::{BackendConfig, HealthCheck, PoolConfig, PoolError};
pub use route::{RouteConfig, route_key};
pub use schema::{
    Balance, CheckLogin, DEFAULT_ADMIN_BIND, DataMode, Mode, ProxyProtocol, ProxyVersion, RouteTls,
    UpstreamConnect, UpstreamData,
};
pub use state::{StateConfig, StoreUrl, without_password as state_url_without_password};
pub use yaml::did_you_mean;

/// The whole configuration, validated: plain data, printed by `fxprelay config` in the
/// file's own keys.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub admin: AdminConfig,
    pub fxp: FxpConfig,
    pub state: StateConfig,
    pub limits: Limits,
    pub data: DataConfig,
    pub defense: DefenseConfig,
    /// Where outbound-only agents dial in (`agents:`), when any listener uses one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<AgentsConfig>,
    pub listeners: Vec<ListenerConfig>,
    /// Settings that load but do nothing or will likely not work as meant, worded for
    /// the operator (`fxprelay check` prints them; `run` logs them).
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// Where the keys that name files were written, for the errors of reading them.
    #[serde(skip)]
    pub origin: Origin,
}

#[cfg(test)]
mod tests;
