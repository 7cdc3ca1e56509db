//! What a session needs from its listener, shared by all sessions of that listener.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::config::{Config, DataConfig, Limits, ListenerConfig};
use crate::data::PortPool;
use crate::net::{AllowList, OwnSockets};
use crate::pool::Pool;
use crate::pool::config::ProxyVersion;
use crate::session::registry::Sessions;

/// A listener's settings and shared state, as its sessions see them.
#[derive(Debug)]
pub struct ListenerCtx {
    pub cfg: ListenerConfig,
    pub limits: Limits,
    /// Where relay-mode data ports come from (shared by every listener).
    pub ports: PortPool,
    /// `data.bind`: local address for data listeners, if set.
    pub data_bind: Option<IpAddr>,
    /// `upstream_data: auto`: upstreams (control address) that answered `PASV`/`EPSV`
    /// with a 5xx, so later sessions go straight to active mode with them.
    pub passive_refused_by: PassiveRefusals,
    /// Every address this proxy listens on (its listeners and the admin endpoint).
    pub own_binds: Vec<SocketAddr>,
    /// Those and the data ports: nothing a session connects to on someone's say-so may
    /// be one of them.
    pub own: Arc<OwnSockets>,
    /// `fxp.allow`: the servers `SITE FXP` may reach besides the session's own.
    pub fxp_allow: Arc<AllowList>,
    /// Where sessions register for `GET /api/v1/sessions`.
    pub sessions: Sessions,
    /// Reverse mode with several upstreams (or a checked one): where sessions go.
    pub pool: Option<Arc<Pool>>,
    /// `upstream_proxy_protocol`: a PROXY header with the client's address goes first
    /// on every upstream control connection.
    pub upstream_proxy: Option<ProxyVersion>,
}

impl ListenerCtx {
    /// The context of listener `l` of `config`; `own_binds` lists every socket this
    /// proxy listens on.
    pub fn of(
        config: &Config,
        l: &ListenerConfig,
        ports: PortPool,
        own_binds: Vec<SocketAddr>,
    ) -> Self {
        let extra = config.upstreams.get(&l.name);
        ListenerCtx {
            own: Arc::new(own_sockets(config, own_binds.clone())),
            own_binds,
            fxp_allow: Arc::new(config.fxp.allow.clone()),
            pool: extra.and_then(|u| {
                let pool = u.pool.clone()?;
                Some(Arc::new(Pool::new(&l.name, pool, u.proxy_protocol)))
            }),
            upstream_proxy: extra.and_then(|u| u.proxy_protocol),
            ..ListenerCtx::new(l.clone(), config.limits.clone(), &config.data, ports)
        }
    }

    /// A context with no self-target guard and no `fxp.allow` (in-process tests).
    pub fn new(cfg: ListenerConfig, limits: Limits, data: &DataConfig, ports: PortPool) -> Self {
        ListenerCtx {
            cfg,
            limits,
            ports,
            data_bind: data.bind,
            passive_refused_by: PassiveRefusals::default(),
            own_binds: Vec::new(),
            own: Arc::default(),
            fxp_allow: Arc::default(),
            sessions: Sessions::default(),
            pool: None,
            upstream_proxy: None,
        }
    }

    /// The same context, registering its sessions in `sessions`.
    pub fn with_sessions(self, sessions: Sessions) -> Self {
        ListenerCtx { sessions, ..self }
    }
}

/// The self-target guard of a proxy bound to `binds` with `config`'s data ports.
pub fn own_sockets(config: &Config, binds: Vec<SocketAddr>) -> OwnSockets {
    OwnSockets::new(
        binds,
        config.data.ports.clone(),
        config.data.bind,
        machine_addresses(),
    )
}

/// This machine's interface addresses: a wildcard bind listens on each of them.
fn machine_addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(ifs) => ifs.into_iter().map(|i| i.ip()).collect(),
        Err(error) => {
            // The guard still knows loopback and each connection's own addresses.
            tracing::warn!(%error, "cannot list this machine's addresses for the self-target guard");
            Vec::new()
        }
    }
}

/// The upstreams `upstream_data: auto` has seen refuse passive mode: a memo shared by the
/// listener's sessions (in memory, no I/O). Bounded: in forward and transparent mode the
/// upstreams are the clients' choice.
#[derive(Debug, Default)]
pub struct PassiveRefusals(Mutex<HashSet<SocketAddr>>);

impl PassiveRefusals {
    const MAX: usize = 4096;

    pub fn contains(&self, upstream: SocketAddr) -> bool {
        self.set().contains(&upstream)
    }

    pub fn insert(&self, upstream: SocketAddr) {
        let mut set = self.set();
        if set.len() >= Self::MAX {
            // Forgetting only costs one more PASV attempt per upstream.
            set.clear();
        }
        set.insert(upstream);
    }

    fn set(&self) -> MutexGuard<'_, HashSet<SocketAddr>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
