//! `data:`, where relay-mode data connections live, and the section's one rule across
//! the file: no listener and no admin endpoint on a port of `data.ports`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use crate::net::PortSpec;

/// Default data port range: 1000 ports above the usual ephemeral-port-free zone.
pub const DEFAULT_DATA_PORTS: &str = "50000-50999";

/// The top-level `data:` block: where relay-mode data connections live.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Every port the proxy listens on for data comes from this list.
    #[serde(default = "default_data_ports")]
    pub ports: PortSpec,
    /// Local address for data listeners; default: the local address of the control
    /// connection the data belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<IpAddr>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            ports: default_data_ports(),
            bind: None,
        }
    }
}

fn default_data_ports() -> PortSpec {
    DEFAULT_DATA_PORTS.parse().expect("valid default")
}

impl DataConfig {
    /// Refuses `port` of `key` (a listener's or the admin endpoint's bind, written on
    /// `line`) when it is one of the data ports: a transfer would take it from the
    /// listener, or the listener from the transfers. Port 0 (any free port) is never one.
    pub(super) fn refuse_port(&self, key: &str, line: u64, port: u16) -> Result<(), ConfigError> {
        if port == 0 || !self.ports.contains(port) {
            return Ok(());
        }
        Err(ConfigError::invalid(
            key,
            line,
            format!(
                "port {port} is also in `data.ports` (\"{}\"): a data transfer would take it from the listener, or the listener from the transfers; move the listener or leave the port out of `data.ports`",
                self.ports
            ),
        ))
    }
}
