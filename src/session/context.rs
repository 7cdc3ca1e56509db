//! A listener's context, shared by all its sessions: the [`Policy`] their machines decide
//! by, and the [`Services`] their shells use and change while they run.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::agent::{Dialer, Hub};
use crate::bans::Guard;
use crate::config::{Config, DataConfig, Limits, ListenerConfig};
use crate::data::PortPool;
use crate::metrics::Scope;
use crate::net::OwnSockets;
use crate::pool::Pool;
use crate::route::RouteLabel;
use crate::tls::ListenerTls;

use super::policy::Policy;
use super::registry::Sessions;

/// A listener's settings and shared state, as its sessions see them.
#[derive(Debug)]
pub struct ListenerCtx {
    /// What the sessions' machines decide by; immutable.
    pub policy: Arc<Policy>,
    /// What only the sessions' shells touch.
    pub services: Services,
    /// Every address this proxy listens on (its listeners and the admin endpoint), which
    /// `policy.own` was built from: a reload that keeps the sockets keeps them.
    pub own_binds: Vec<SocketAddr>,
}

/// The listener's shared mutable state and loaded TLS material: the shell carries out
/// the machine's requests with them (a port lease, a backend choice, a memo lookup) and
/// never hands them to the machine.
#[derive(Debug)]
pub struct Services {
    /// Where relay-mode data ports come from (shared by every listener).
    pub ports: PortPool,
    /// Reverse mode over a pool: its backends, their health and session counts.
    pub pool: Option<Arc<Pool>>,
    /// A listener with routes: each route's pool, when it has one (by the route's place).
    pub route_pools: Vec<Option<Arc<Pool>>>,
    /// `upstream_data: auto`: the upstreams seen to refuse passive mode.
    pub passive_refusals: PassiveRefusals,
    /// Where sessions register for `GET /api/v1/sessions`.
    pub sessions: Sessions,
    /// The certificates and rustls configs of the listener's `tls:` block, read by `app`
    /// from its settings.
    pub tls: Option<ListenerTls>,
    /// The listener's ban table (`None`: `defense: off`): asked at accept and on relay
    /// data ports, told what the sessions' machines report.
    pub defense: Option<Guard>,
    /// The edge's agent links (`agents:`): what `SITE FXP` URLs naming `?via=` use.
    pub agents: Option<Arc<Hub>>,
    /// How the listener's servers are reached: straight, or through its agent (`via`).
    pub dialer: Dialer,
}

impl ListenerCtx {
    /// The context of listener `l` of `config`, with the TLS material read from its
    /// `tls:` block (`None` without one); `own_binds` lists every socket this proxy
    /// listens on.
    pub fn of(
        config: &Config,
        l: &ListenerConfig,
        tls: Option<ListenerTls>,
        ports: PortPool,
        own_binds: Vec<SocketAddr>,
    ) -> Self {
        let own = Arc::new(own_sockets(config, own_binds.clone()));
        let pp = l.upstream_proxy_protocol;
        let pool = l.pool.clone().map(|pool| {
            let scope = Scope::new(&l.name, RouteLabel::Default);
            Arc::new(Pool::new(&l.name, scope, pool, pp))
        });
        let route_pools = l
            .routes
            .iter()
            .map(|r| {
                let name = route_pool_name(&l.name, &r.name);
                let scope = Scope::new(&l.name, RouteLabel::Named(r.name.as_str().into()));
                Some(Arc::new(Pool::new(&name, scope, r.pool.clone()?, pp)))
            })
            .collect();
        ListenerCtx {
            policy: Arc::new(Policy::of(config, l, own)),
            services: Services {
                pool,
                route_pools,
                tls,
                ..Services::new(ports)
            },
            own_binds,
        }
    }

    /// A context with no self-target guard, no `fxp.allow`, no pool and no TLS material
    /// (in-process tests).
    pub fn new(cfg: ListenerConfig, limits: Limits, data: &DataConfig, ports: PortPool) -> Self {
        ListenerCtx {
            services: Services::new(ports),
            policy: Arc::new(Policy::new(cfg, limits, data)),
            own_binds: Vec::new(),
        }
    }

    /// The listener's metrics scope for a client that has said nothing yet: route
    /// `none` on a listener with routes, `default` on one without.
    pub fn scope_at_accept(&self) -> Scope {
        let has_routes = self.policy.routes.is_some();
        Scope::new(&self.policy.cfg.name, RouteLabel::at_accept(has_routes))
    }

    /// The same context, guarded by the ban table `defense` (from [`crate::bans::Bans::apply`]).
    pub fn with_defense(mut self, defense: Option<Guard>) -> Self {
        self.services.defense = defense;
        self
    }

    /// The agents' hub; a listener with `via` reaches its servers through that agent.
    pub fn with_agents(mut self, hub: Option<Arc<Hub>>) -> Self {
        self.services.dialer = match (&hub, &self.policy.cfg.via) {
            (Some(hub), Some(agent)) => Dialer::via(hub.clone(), agent.clone()),
            _ => Dialer::direct(),
        };
        self.services.agents = hub;
        self
    }

    /// The same context, registering its sessions in `sessions`.
    pub fn with_sessions(mut self, sessions: Sessions) -> Self {
        self.services.sessions = sessions;
        self
    }
}

impl Services {
    fn new(ports: PortPool) -> Services {
        Services {
            ports,
            pool: None,
            route_pools: Vec::new(),
            passive_refusals: PassiveRefusals::default(),
            sessions: Sessions::default(),
            tls: None,
            defense: None,
            agents: None,
            dialer: Dialer::direct(),
        }
    }
}

/// What a route's pool is called (its health checks' log lines, the admin API's
/// `upstreams`): `listener/route`. Its metrics say `listener` and `route` apart.
pub fn route_pool_name(listener: &str, route: &str) -> String {
    format!("{listener}/{route}")
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

/// The upstreams `upstream_data: auto` has seen refuse passive mode (keyed by control
/// address): a memo shared by the listener's sessions, in memory. A session learns what
/// it holds when it connects and adds what it learns itself; a refusal another session
/// learns later costs it one more `PASV` try. Bounded: in forward and transparent mode the
/// upstreams are the clients' choice.
#[derive(Debug, Default)]
pub struct PassiveRefusals(Mutex<HashSet<SocketAddr>>);

impl PassiveRefusals {
    const MAX: usize = 4096;

    pub fn contains(&self, upstream: SocketAddr) -> bool {
        self.set().contains(&canonical(upstream))
    }

    pub fn insert(&self, upstream: SocketAddr) {
        let mut set = self.set();
        if set.len() >= Self::MAX {
            // Forgetting only costs one more PASV attempt per upstream.
            set.clear();
        }
        set.insert(canonical(upstream));
    }

    fn set(&self) -> MutexGuard<'_, HashSet<SocketAddr>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// IPv4-mapped addresses as plain IPv4: one server, one entry.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy the machine gets holds TLS settings (plain data, by its type); the
    /// certificates, keys and rustls configs are the shell's services.
    #[test]
    fn the_machine_holds_tls_settings_and_the_shell_the_material() {
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["proxy.test".into()]).unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        let yaml = format!(
            "listeners:\n  - name: t\n    bind: 127.0.0.1:2121\n    upstream: 198.18.0.2:21\n    tls:\n      client: {{mode: explicit, cert: {}, key: {}}}\n      upstream: {{mode: explicit}}\n",
            cert.display(),
            key.display()
        );
        let cfg = Config::parse(&yaml).unwrap();
        let l = &cfg.listeners[0];
        let material = ListenerTls::load(l.tls.as_ref().unwrap()).unwrap();
        let ctx = ListenerCtx::of(
            &cfg,
            l,
            Some(material),
            PortPool::new(&cfg.data.ports),
            Vec::new(),
        );
        let machine_side: &crate::tls::TlsSettings =
            ctx.policy.cfg.tls.as_ref().expect("the settings");
        let shell_side = ctx.services.tls.as_ref().unwrap();
        assert_eq!(*machine_side, shell_side.settings);
        assert!(shell_side.client.is_some() && shell_side.upstream.is_some());
    }
}
