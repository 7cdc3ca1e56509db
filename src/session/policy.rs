//! What a session's machine decides by: its listener's settings, immutable and shared by
//! the listener's sessions. Plain data: no lock, atomic, socket or TLS session cache is
//! reachable from a [`Policy`]. What changes while sessions run (data ports, a pool's
//! health and session counts, the passive-refusal memo, the registry) and the loaded TLS
//! material are the shell's ([`super::context::Services`]); the machine reaches them only
//! through actions and the events that answer them.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{Balance, ProxyVersion};
use crate::config::{Config, DataConfig, Limits, ListenerConfig};
use crate::defense::Settings;
use crate::net::{AllowList, OwnSockets};

/// A listener's settings, as its sessions' machines see them.
#[derive(Debug)]
pub struct Policy {
    /// The listener's settings. Its `tls` holds the settings only: certificates, keys and
    /// rustls configs are the shell's.
    pub cfg: ListenerConfig,
    pub limits: Limits,
    /// `data.bind`: local address for data listeners, if set.
    pub data_bind: Option<IpAddr>,
    /// This proxy's listeners, admin endpoint and data ports: nothing a session connects
    /// to on someone's say-so may be one of them.
    pub own: Arc<OwnSockets>,
    /// `fxp.allow`: the servers `SITE FXP` may reach besides the session's own.
    pub fxp_allow: Arc<AllowList>,
    /// Reverse mode over a pool (several upstreams, or a checked one): how a backend is
    /// chosen. The pool itself, its health and session counts, is the shell's.
    pub pool: Option<Balance>,
    /// `upstream_proxy_protocol`: a PROXY header with the client's address goes first on
    /// every upstream control connection.
    pub upstream_proxy: Option<ProxyVersion>,
    /// The edge defense this listener runs with (`None`: `defense: off`): what the
    /// machine reports to the ban table, and its tarpit's window and bait user names.
    pub defense: Option<Settings>,
}

impl Policy {
    /// The policy of listener `l` of `config`, guarded by `own`.
    pub fn of(config: &Config, l: &ListenerConfig, own: Arc<OwnSockets>) -> Policy {
        Policy {
            own,
            fxp_allow: Arc::new(config.fxp.allow.clone()),
            pool: l.pool.as_ref().map(|p| p.balance),
            upstream_proxy: l.upstream_proxy_protocol,
            defense: config.defense_of(l).cloned(),
            ..Policy::new(l.clone(), config.limits.clone(), &config.data)
        }
    }

    /// A policy with no self-target guard, no `fxp.allow`, no pool and no defense
    /// (in-process tests).
    pub fn new(cfg: ListenerConfig, limits: Limits, data: &DataConfig) -> Policy {
        Policy {
            cfg,
            limits,
            data_bind: data.bind,
            own: Arc::default(),
            fxp_allow: Arc::default(),
            pool: None,
            upstream_proxy: None,
            defense: None,
        }
    }
}
