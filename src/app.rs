//! Wiring: bind every socket the config names, run listeners and the admin endpoint, and
//! drive the two-phase shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::data::PortPool;
use crate::server::{self, Shutdown};
use crate::session::ListenerCtx;

/// How long sessions get to say `421` and close after the grace period ran out.
const HARD_STOP_WAIT: Duration = Duration::from_secs(5);

/// All sockets bound, before anything is served: binding first means a bad address or a
/// port in use fails at start-up with a clear message, not later.
pub struct Bound {
    pub admin: TcpListener,
    pub listeners: Vec<(TcpListener, Arc<ListenerCtx>)>,
    pub shutdown_grace: Duration,
}

impl Bound {
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("bound socket has an address")
    }
}

/// Binds the admin endpoint and every listener of `config`.
pub async fn bind(config: &Config) -> anyhow::Result<Bound> {
    let admin = TcpListener::bind(config.admin_bind)
        .await
        .with_context(|| format!("cannot bind admin.bind {}", config.admin_bind))?;
    let ports = PortPool::new(&config.data.ports);
    let mut listeners = Vec::new();
    for l in &config.listeners {
        let socket = TcpListener::bind(l.bind)
            .await
            .with_context(|| format!("cannot bind listener `{}` to {}", l.name, l.bind))?;
        let ctx = ListenerCtx::new(
            l.clone(),
            config.limits.clone(),
            &config.data,
            ports.clone(),
        );
        listeners.push((socket, Arc::new(ctx)));
    }
    Ok(Bound {
        admin,
        listeners,
        shutdown_grace: config.limits.shutdown_grace,
    })
}

/// Serves until the first stop request (graceful: stop accepting, let sessions finish up
/// to the grace period); a second request ends the wait at once.
pub async fn run(
    bound: Bound,
    metrics: Option<PrometheusHandle>,
    mut stop: mpsc::UnboundedReceiver<()>,
) -> anyhow::Result<()> {
    let shutdown = Shutdown::default();
    let admin_stop = CancellationToken::new();
    let draining = Arc::new(AtomicBool::new(false));
    let state = AdminState {
        metrics,
        draining: draining.clone(),
    };
    info!(admin = %bound.admin_addr(), "admin endpoint (/metrics, /healthz)");
    let admin_task = tokio::spawn(admin::serve(bound.admin, state, admin_stop.clone()));
    let accept_loops: Vec<_> = bound
        .listeners
        .into_iter()
        .map(|(socket, ctx)| tokio::spawn(server::serve(socket, ctx, shutdown.clone())))
        .collect();

    stop.recv().await;
    info!(grace = ?bound.shutdown_grace, "shutting down: no new sessions; open sessions may finish");
    draining.store(true, Ordering::Relaxed);
    shutdown.stop_accepting.cancel();
    for task in accept_loops {
        let _ = task.await;
    }
    shutdown.sessions.close();
    let open = shutdown.sessions.len();
    if open > 0 {
        info!(open, "waiting for open sessions");
    }
    tokio::select! {
        _ = shutdown.sessions.wait() => {}
        _ = tokio::time::sleep(bound.shutdown_grace) => {
            warn!(open = shutdown.sessions.len(), "grace period over; closing remaining sessions");
        }
        Some(()) = stop.recv() => warn!("second stop signal; closing remaining sessions"),
    }
    shutdown.hard_stop.cancel();
    if tokio::time::timeout(HARD_STOP_WAIT, shutdown.sessions.wait())
        .await
        .is_err()
    {
        warn!(
            open = shutdown.sessions.len(),
            "sessions did not close in time"
        );
    }
    admin_stop.cancel();
    admin_task.await?.context("admin endpoint failed")?;
    info!("stopped");
    Ok(())
}
