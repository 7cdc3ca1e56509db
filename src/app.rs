//! Wiring: bind every socket the config names, run listeners and the admin endpoint, and
//! drive the two-phase shutdown and reloads.
//!
//! - [`material`]: the TLS material a configuration names (certificates, keys, CA
//!   files), read when the configuration is put to use: at start, on `SIGHUP`, for
//!   `fxprelay check`.
//! - this file: binding, serving, shutting down, applying a reload to new sessions.

pub mod material;

pub use material::{Loaded, TlsMaterial};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::admin::{self, AdminState};
use crate::agent::Hub;
use crate::bans::Bans;
use crate::config::{Config, ConfigError};
use crate::data::PortPool;
use crate::fxp::jobs::Jobs;
use crate::metrics as m;
use crate::route::RouteLabel;
use crate::server::{self, Shutdown};
use crate::session::ListenerCtx;
use crate::session::context::{own_sockets, route_pool_name};
use crate::session::registry::Sessions;
use crate::state::StateStore;

/// How long sessions get to say `421` and close after the grace period ran out.
const HARD_STOP_WAIT: Duration = Duration::from_secs(5);

/// All sockets bound, before anything is served: binding first means a bad address or a
/// port in use fails at start-up with a clear message, not later.
pub struct Bound {
    pub admin: TcpListener,
    pub listeners: Vec<(TcpListener, Arc<ListenerCtx>)>,
    pub shutdown_grace: Duration,
    /// The configuration these sockets were bound for (what a reload compares against).
    pub config: Config,
    /// Its TLS material (the listeners' is in their contexts already).
    pub tls: TlsMaterial,
    pub ports: PortPool,
    /// The open sessions of every listener (`GET /api/v1/sessions`).
    pub sessions: Sessions,
    /// The FXP transfers ordered over the API (a shutdown interrupts what still runs).
    pub jobs: Jobs,
    /// The edge defense's ban tables (`/api/v1/bans`).
    pub bans: Bans,
    /// Where agents dial in (`agents:`), and the links they keep.
    pub agents: Option<AgentsEdge>,
}

/// The edge's agents listener, bound, with its certificate and the hub of links.
pub struct AgentsEdge {
    pub socket: TcpListener,
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub hub: Arc<Hub>,
}

/// Every address the proxy listens on, for the forward mode's loop guard.
fn own_binds<T>(admin: &TcpListener, listeners: &[(TcpListener, T)]) -> Vec<SocketAddr> {
    std::iter::once(admin)
        .chain(listeners.iter().map(|(s, _)| s))
        .filter_map(|s| s.local_addr().ok())
        .collect()
}

/// SIGHUP reloads: re-read `path` whenever a request arrives.
pub struct Reload {
    pub path: PathBuf,
    pub requests: mpsc::UnboundedReceiver<()>,
}

impl Bound {
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("bound socket has an address")
    }
}

/// Binds the admin endpoint and every listener of `loaded`'s configuration.
pub async fn bind(loaded: &Loaded) -> anyhow::Result<Bound> {
    let Loaded { config, tls } = loaded;
    let admin = TcpListener::bind(config.admin.bind)
        .await
        .with_context(|| format!("cannot bind admin.bind {}", config.admin.bind))?;
    // Before any listener: an unreachable or too new store stops the start, and nothing
    // has been served without it.
    let store = StateStore::open(&config.state).await.with_context(|| {
        format!(
            "cannot open the state store (state.url {})",
            config.state.url
        )
    })?;
    if store.durable {
        info!(url = %config.state.url, instance = %config.state.instance, "state store open");
    }
    let ports = PortPool::new(&config.data.ports);
    let mut sockets = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let socket = TcpListener::bind(l.bind)
            .await
            .with_context(|| format!("cannot bind listener `{}` to {}", l.name, l.bind))?;
        sockets.push((socket, (i, l)));
    }
    let agents = match (&config.agents, &tls.agents) {
        (Some(a), Some(server)) => Some(AgentsEdge {
            socket: TcpListener::bind(a.bind)
                .await
                .with_context(|| format!("cannot bind agents.bind {}", a.bind))?,
            acceptor: tokio_rustls::TlsAcceptor::from(server.clone()),
            hub: Hub::new(a.tokens.clone()),
        }),
        _ => None,
    };
    let mut own_binds = own_binds(&admin, &sockets);
    own_binds.extend(agents.as_ref().and_then(|a| a.socket.local_addr().ok()));
    let sessions = Sessions::default();
    let bans = Bans::default();
    let guards = bans.apply(config);
    let listeners = sockets
        .into_iter()
        .map(|(socket, (i, l))| {
            let ctx = ListenerCtx::of(config, l, tls.listener(i), ports.clone(), own_binds.clone())
                .with_sessions(sessions.clone())
                .with_defense(guards[i].clone())
                .with_agents(agents.as_ref().map(|a| a.hub.clone()));
            (socket, Arc::new(ctx))
        })
        .collect();
    Ok(Bound {
        admin,
        listeners,
        shutdown_grace: config.limits.shutdown_grace,
        config: config.clone(),
        tls: tls.clone(),
        ports,
        sessions,
        jobs: Jobs::with_store(config.fxp.allow.clone(), config.fxp.concurrency, store),
        bans,
        agents,
    })
}

/// Serves until the first stop request (graceful: stop accepting new sessions and API
/// transfers, interrupt the queued transfers, let sessions and running transfers finish
/// up to the grace period, then interrupt those still running); a second request ends
/// the wait at once. The admin endpoint answers until the end (the interrupted
/// transfers' records included). Reload requests apply a re-read configuration to new
/// sessions.
pub async fn run(
    bound: Bound,
    metrics: Option<PrometheusHandle>,
    mut stop: mpsc::UnboundedReceiver<()>,
    mut reload: Option<Reload>,
) -> anyhow::Result<()> {
    let shutdown = Shutdown::default();
    let admin_stop = CancellationToken::new();
    let draining = Arc::new(AtomicBool::new(false));
    let state = AdminState {
        metrics,
        draining: draining.clone(),
        jobs: bound.jobs.clone(),
        token: Arc::new(RwLock::new(
            bound.config.admin.token.as_deref().map(Arc::from),
        )),
        sessions: bound.sessions.clone(),
        bans: bound.bans.clone(),
        pools: admin::Pools::default(),
        agents: bound.agents.as_ref().map(|a| a.hub.clone()),
        listeners: Arc::new(RwLock::new(
            bound
                .listeners
                .iter()
                .map(|(socket, ctx)| summary(ctx, socket.local_addr().ok()))
                .collect(),
        )),
    };
    m::process_started(bound.config.data.ports.len());
    for (_, ctx) in &bound.listeners {
        m::listener_started(&ctx.policy.cfg.name, ctx.policy.limits.max_sessions);
        m::routes_started(&ctx.policy.cfg.name, &route_labels(ctx));
    }
    state.jobs.set_permits(bound.tls.permits(&bound.config.fxp));
    state
        .jobs
        .reach_agents(bound.agents.as_ref().map(|a| a.hub.clone()));
    state.jobs.guard_against(Arc::new(own_sockets(
        &bound.config,
        own_binds(&bound.admin, &bound.listeners),
    )));
    // Stored jobs resume once the guard is in place: none may reach the proxy itself.
    state.jobs.start();
    let admin_limits = bound.config.admin.limits;
    let agents_stop = CancellationToken::new();
    let hub = bound.agents.as_ref().map(|a| a.hub.clone());
    if let Some(a) = bound.agents {
        info!(bind = %a.socket.local_addr()?, "agents listener");
        tokio::spawn(a.hub.serve(a.socket, a.acceptor, agents_stop.clone()));
    }
    let mut live = Live {
        hub,
        admin: state.clone(),
        config: bound.config,
        ports: bound.ports,
        listeners: HashMap::new(),
        checkers: HashMap::new(),
    };
    let mut accept_loops = Vec::new();
    for (socket, ctx) in bound.listeners {
        live.start_checks(&ctx);
        let (tx, rx) = watch::channel(ctx.clone());
        live.listeners.insert(ctx.policy.cfg.name.clone(), tx);
        accept_loops.push(tokio::spawn(server::serve_reloadable(
            socket,
            rx,
            shutdown.clone(),
        )));
    }
    // Served only now, so the first `/healthz` 200 means every pool's series exist.
    info!(admin = %bound.admin.local_addr()?, "admin endpoint (/metrics, /healthz)");
    tokio::spawn(bound.bans.clone().run_sweeps(admin_stop.clone()));
    // Bans go to a durable store and come from it: the fleet's, and this instance's
    // own from before a restart.
    let store = bound.jobs.store().clone();
    if store.durable {
        tokio::spawn(bound.bans.clone().share(store, admin_stop.clone()));
    }
    let admin_task = tokio::spawn(admin::serve(
        bound.admin,
        state,
        admin_limits,
        admin_stop.clone(),
    ));

    loop {
        let reloaded = async {
            match reload.as_mut() {
                Some(r) => r.requests.recv().await.map(|()| r.path.clone()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.recv() => break,
            Some(path) = reloaded => {
                // The file and the TLS files it names are read off the runtime.
                let file = path.clone();
                let loaded = tokio::task::spawn_blocking(move || Loaded::read(&file))
                    .await
                    .context("config reload")?;
                live.reload(&path, loaded);
            }
        }
    }
    info!(
        grace_ms = bound.shutdown_grace.as_millis() as u64,
        "shutting down: no new sessions; open sessions may finish"
    );
    draining.store(true, Ordering::Relaxed);
    for (_, stop) in live.checkers.drain() {
        stop.cancel();
    }
    shutdown.stop_accepting.cancel();
    let jobs = live.admin.jobs.clone();
    jobs.drain();
    for task in accept_loops {
        let _ = task.await;
    }
    shutdown.sessions.close();
    let (open, running) = (shutdown.sessions.len(), jobs.running());
    if open > 0 || running > 0 {
        info!(
            open,
            running, "waiting for open sessions and running API transfers"
        );
    }
    let settled = async {
        shutdown.sessions.wait().await;
        jobs.settled().await;
    };
    tokio::select! {
        _ = settled => {}
        _ = tokio::time::sleep(bound.shutdown_grace) => {
            warn!(open = shutdown.sessions.len(), running = jobs.running(), "grace period over; closing remaining sessions and interrupting API transfers");
        }
        Some(()) = stop.recv() => warn!("second stop signal; closing remaining sessions and interrupting API transfers"),
    }
    shutdown.hard_stop.cancel();
    jobs.interrupt();
    let closed = async {
        shutdown.sessions.wait().await;
        jobs.settled().await;
    };
    if tokio::time::timeout(HARD_STOP_WAIT, closed).await.is_err() {
        warn!(
            open = shutdown.sessions.len(),
            "sessions or API transfers did not close in time"
        );
    }
    admin_stop.cancel();
    agents_stop.cancel();
    // Graceful shutdown waits for requests in flight; a client that never finishes
    // sending one must not keep the process alive.
    let mut admin_task = admin_task;
    match tokio::time::timeout(HARD_STOP_WAIT, &mut admin_task).await {
        Ok(done) => done?.context("admin endpoint failed")?,
        Err(_) => {
            warn!("admin requests did not finish in time; closing them");
            admin_task.abort();
        }
    }
    info!("stopped");
    Ok(())
}

/// What a reload may change: the configuration and each listener's shared context.
struct Live {
    /// The agents' links, whose tokens a reload replaces.
    hub: Option<Arc<Hub>>,
    /// The admin API's token and FXP job settings, which a reload replaces in place.
    admin: AdminState,
    config: Config,
    ports: PortPool,
    listeners: HashMap<String, watch::Sender<Arc<ListenerCtx>>>,
    /// The health-check task of each listener with a pool.
    checkers: HashMap<String, CancellationToken>,
}

impl Live {
    /// Starts checking `ctx`'s pool (stopping the checks of the pool it replaces) and
    /// shows it in `GET /api/v1/upstreams`.
    fn start_checks(&mut self, ctx: &ListenerCtx) {
        start_checks(&mut self.checkers, &self.admin.pools, ctx);
    }

    /// Shows `ctx` in `GET /api/v1/listeners` instead of what its listener had, at the
    /// address its socket is bound to.
    fn show(&self, ctx: &ListenerCtx) {
        let mut listeners = self
            .admin
            .listeners
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = listeners.iter_mut().find(|l| l.name == ctx.policy.cfg.name) {
            *l = summary(ctx, l.bind.parse().ok());
        }
    }

    /// Applies a re-read config to new sessions of the existing listeners. A file that
    /// does not load changes nothing. What needs new sockets (a listener's bind, new or
    /// removed listeners, the admin address) is reported and left for a restart.
    fn reload(&mut self, path: &Path, loaded: Result<Loaded, ConfigError>) {
        let Loaded { config: new, tls } = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                m::config_reload("error");
                m::config_loaded(false);
                error!("config reload failed; the running configuration stays: {e}");
                return;
            }
        };
        if new.admin.bind != self.config.admin.bind {
            warn!(old = %self.config.admin.bind, new = %new.admin.bind, "admin.bind changed: takes effect after a restart");
        }
        if new.admin.token != self.config.admin.token {
            *self
                .admin
                .token
                .write()
                .unwrap_or_else(PoisonError::into_inner) =
                new.admin.token.as_deref().map(Arc::from);
            info!("admin.token changed: the API takes the new one from now on");
        }
        if new.state != self.config.state {
            warn!("state: changed: takes effect after a restart (the store stays open as it is)");
        }
        self.admin
            .jobs
            .reconfigure(new.fxp.allow.clone(), new.fxp.concurrency);
        self.admin.jobs.set_permits(tls.permits(&new.fxp));
        match (&self.hub, &new.agents) {
            (Some(hub), Some(a)) => hub.set_tokens(a.tokens.clone()),
            (None, None) => {}
            _ => warn!("agents: added or removed: takes effect after a restart"),
        }
        // Ban tables carry over (scores and bans kept) under the new settings.
        let guards = self.admin.bans.apply(&new);
        // A new port list gets a new pool; open sessions keep their leases in the old one.
        if new.data.ports != self.config.data.ports {
            self.ports = PortPool::new(&new.data.ports);
        }
        for (i, l) in new.listeners.iter().enumerate() {
            let old_bind = self
                .config
                .listeners
                .iter()
                .find(|o| o.name == l.name)
                .map(|o| o.bind);
            match (self.listeners.get(&l.name), old_bind) {
                (Some(tx), Some(bind)) if bind == l.bind => {
                    // The sockets did not change, so neither did the loop guard's list.
                    let own_binds = tx.borrow().own_binds.clone();
                    let mut ctx =
                        ListenerCtx::of(&new, l, tls.listener(i), self.ports.clone(), own_binds)
                            .with_sessions(self.admin.sessions.clone())
                            .with_defense(guards[i].clone())
                            .with_agents(self.hub.clone());
                    let old_pool = tx.borrow().services.pool.clone();
                    if let (Some(pool), Some(old)) =
                        (ctx.services.pool.as_mut().and_then(Arc::get_mut), old_pool)
                    {
                        pool.inherit(&old);
                    }
                    // A route's pool of the same name keeps its backends' health too.
                    let old_routes = tx.borrow().services.route_pools.clone();
                    for new_pool in ctx.services.route_pools.iter_mut().flatten() {
                        let old = old_routes
                            .iter()
                            .flatten()
                            .find(|o| o.listener == new_pool.listener);
                        if let (Some(pool), Some(old)) = (Arc::get_mut(new_pool), old) {
                            pool.inherit(old);
                        }
                    }
                    start_checks(&mut self.checkers, &self.admin.pools, &ctx);
                    // Routes the file added have their series from now on.
                    m::routes_started(&l.name, &route_labels(&ctx));
                    self.show(&ctx);
                    tx.send_replace(Arc::new(ctx));
                }
                (Some(_), _) => {
                    warn!(listener = %l.name, bind = %l.bind, "listener bind changed: takes effect after a restart")
                }
                (None, _) => {
                    warn!(listener = %l.name, "new listener: takes effect after a restart")
                }
            }
        }
        // The data ports may have changed: jobs take the new guard.
        if let Some(tx) = self.listeners.values().next() {
            self.admin
                .jobs
                .guard_against(tx.borrow().policy.own.clone());
        }
        for name in self
            .listeners
            .keys()
            .filter(|n| !new.listeners.iter().any(|l| &l.name == *n))
        {
            warn!(listener = %name, "listener removed from the file: it keeps running until a restart");
        }
        m::config_reload("ok");
        m::config_loaded(true);
        m::data_ports_available(new.data.ports.len());
        info!(path = %path.display(), "configuration reloaded; new sessions use it, open sessions keep theirs");
        // Keep the bound binds of listeners that could not change, so the next reload
        // compares against what actually runs.
        let mut applied = new;
        for l in &mut applied.listeners {
            if let Some(old) = self.config.listeners.iter().find(|o| o.name == l.name) {
                l.bind = old.bind;
            }
        }
        applied.admin.bind = self.config.admin.bind;
        self.config = applied;
    }
}

/// The route labels `ctx`'s sessions can be counted under (see [`RouteLabel`]).
fn route_labels(ctx: &ListenerCtx) -> Vec<RouteLabel> {
    match &ctx.policy.routes {
        Some(routes) => routes.labels(),
        None => vec![RouteLabel::Default],
    }
}

/// What the API shows of a listener, at `bound`; its certificates' expiry (its own and
/// its routes') goes to the metric too.
fn summary(ctx: &ListenerCtx, bound: Option<SocketAddr>) -> admin::ListenerSummary {
    let tls = ctx.services.tls.as_ref();
    let name = &ctx.policy.cfg.name;
    if let Some(cert) = tls.and_then(|t| t.certificate.as_ref()) {
        m::tls_certificate_expiry(&m::Scope::new(name, RouteLabel::Default), cert.not_after);
    }
    let routes = tls.map_or(&[][..], |t| &t.routes[..]);
    for (route, r) in ctx.policy.cfg.routes.iter().zip(routes) {
        if let Some(cert) = &r.certificate {
            let label = RouteLabel::Named(route.name.as_str().into());
            m::tls_certificate_expiry(&m::Scope::new(name, label), cert.not_after);
        }
    }
    admin::ListenerSummary::of(&ctx.policy.cfg, bound, tls)
}

/// Starts checking `ctx`'s pool (stopping the checks of the pool it replaces) and shows
/// it in `GET /api/v1/upstreams`.
fn start_checks(
    checkers: &mut HashMap<String, CancellationToken>,
    admin_pools: &admin::Pools,
    ctx: &ListenerCtx,
) {
    let name = &ctx.policy.cfg.name;
    // The listener's pool and its routes' (`listener/route`), those of the routes a
    // reload removed included.
    let route_prefix = format!("{name}/");
    let mine = |k: &String| k == name || k.starts_with(&route_prefix);
    let stale: Vec<String> = checkers.keys().filter(|k| mine(k)).cloned().collect();
    for key in stale {
        if let Some(old) = checkers.remove(&key) {
            old.cancel();
        }
    }
    let mut pools = admin_pools.write().unwrap_or_else(PoisonError::into_inner);
    pools.retain(|k, _| !mine(k));
    let routes = ctx.policy.cfg.routes.iter();
    let route_pools = routes
        .zip(&ctx.services.route_pools)
        .filter_map(|(r, p)| Some((route_pool_name(name, &r.name), p.clone()?)));
    let own = ctx.services.pool.clone().map(|p| (name.clone(), p));
    for (key, pool) in own.into_iter().chain(route_pools) {
        pool.announce();
        pools.insert(key.clone(), pool.clone());
        let stop = CancellationToken::new();
        checkers.insert(key, stop.clone());
        let dialer = ctx.services.dialer.clone();
        tokio::spawn(crate::pool::check::run(pool, dialer, stop));
    }
}
