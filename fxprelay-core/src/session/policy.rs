//! What a session's machine decides by: its listener's settings, immutable and shared by
//! the listener's sessions. Plain data: no lock, atomic, socket or TLS session cache is
//! reachable from a [`Policy`]. What changes while sessions run (data ports, a pool's
//! health and session counts, the passive-refusal memo, the registry) and the loaded TLS
//! material are the shell's (the binary's `session::Services`); the machine reaches them only
//! through actions and the events that answer them.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{Balance, ProxyVersion};
use crate::config::{Config, DataConfig, Limits, ListenerConfig, RouteConfig};
use crate::defense::Settings;
use crate::net::{AllowList, OwnSockets};
use crate::route::{Route, Routes};

/// A reverse listener's routes, each going to the policy its sessions run under once
/// chosen: the listener's, with the route's upstream and what it overrides (`nat`,
/// `upstream_data`, `tls.upstream`, the pool's balance). The default route's is the
/// listener's own, without routes.
pub type RouteTable = Routes<Arc<Policy>>;

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
    /// A reverse listener with `routes:`: a session's policy is its route's, chosen by
    /// what the client says before it logs in (`None` on a route's own policy).
    pub routes: Option<Arc<RouteTable>>,
}

impl Policy {
    /// The policy of listener `l` of `config`, guarded by `own`.
    pub fn of(config: &Config, l: &ListenerConfig, own: Arc<OwnSockets>) -> Policy {
        let unrouted = Policy {
            own,
            fxp_allow: Arc::new(config.fxp.allow.clone()),
            pool: l.pool.as_ref().map(|p| p.balance),
            upstream_proxy: l.upstream_proxy_protocol,
            defense: config.defense_of(l).cloned(),
            ..Policy::new(l.clone(), config.limits.clone(), &config.data)
        };
        unrouted.routed()
    }

    /// This policy with its listener's routes, when it has some.
    fn routed(mut self) -> Policy {
        if self.cfg.routes.is_empty() {
            return self;
        }
        let routes = std::mem::take(&mut self.cfg.routes);
        let table = routes
            .iter()
            .map(|r| Route {
                name: r.name.clone(),
                matches: r.matches.clone(),
                user: r.user.clone(),
                to: Arc::new(self.for_route(r)),
            })
            .collect();
        let has_default = self.cfg.upstream.is_some() || self.cfg.pool.is_some();
        let default = has_default.then(|| Arc::new(self.unrouted()));
        self.cfg.routes = routes;
        self.routes = Some(Arc::new(Routes::new(table, default)));
        self
    }

    /// The policy of sessions on route `r`: the listener's, with the route's upstream and
    /// the settings it overrides.
    fn for_route(&self, r: &RouteConfig) -> Policy {
        let mut p = self.unrouted();
        p.cfg.upstream = r.upstream.clone();
        p.cfg.pool = r.pool.clone();
        p.pool = r.pool.as_ref().map(|pool| pool.balance);
        p.cfg.nat = r.nat.clone();
        p.cfg.upstream_data = r.upstream_data;
        p.cfg.tls = r.tls_settings(self.cfg.tls.as_ref());
        p
    }

    /// The same settings without routes (a route's policy, or the default route's).
    fn unrouted(&self) -> Policy {
        let mut cfg = self.cfg.clone();
        cfg.routes = Vec::new();
        Policy {
            cfg,
            limits: self.limits.clone(),
            data_bind: self.data_bind,
            own: self.own.clone(),
            fxp_allow: self.fxp_allow.clone(),
            pool: self.pool,
            upstream_proxy: self.upstream_proxy,
            defense: self.defense.clone(),
            routes: None,
        }
    }

    /// A policy with no self-target guard, no `fxp.allow`, no pool and no defense
    /// (in-process tests). A listener's `routes:` are kept (a route's pool balance
    /// included).
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
            routes: None,
        }
        .routed()
    }
}
