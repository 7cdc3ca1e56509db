//! The accept loop of one listener: caps concurrent sessions, backs off on accept errors,
//! and spawns one task per client into the shared [`TaskTracker`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::bans::Admission;
use crate::metrics;
use crate::proxy_protocol;
use crate::session::replies::Say;
use crate::session::{self, ListenerCtx};
use crate::tls::ClientTlsMode;

/// The two phases of shutdown, shared by every listener.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Cancelled first: listeners stop accepting, open sessions go on.
    pub stop_accepting: CancellationToken,
    /// Cancelled when the grace period is over: open sessions say `421` and close.
    pub hard_stop: CancellationToken,
    /// Every session task, so the caller can wait for them to finish.
    pub sessions: TaskTracker,
}

/// Accepts clients on `listener` with a fixed configuration until
/// `shutdown.stop_accepting` is cancelled.
pub async fn serve(listener: TcpListener, ctx: Arc<ListenerCtx>, shutdown: Shutdown) {
    let (_keep, ctx) = watch::channel(ctx);
    serve_reloadable(listener, ctx, shutdown).await
}

/// Like [`serve`], but every new session takes the configuration current at its accept
/// (SIGHUP reload); open sessions keep the one they started with.
/// `limits.max_sessions` is sized at start and needs a restart to change.
pub async fn serve_reloadable(
    listener: TcpListener,
    ctx: watch::Receiver<Arc<ListenerCtx>>,
    shutdown: Shutdown,
) {
    let first = ctx.borrow().clone();
    let slots = Arc::new(Semaphore::new(first.policy.limits.max_sessions));
    let per_ip = PerIp::default();
    let pre_login = PreLogin {
        slots: Arc::new(Semaphore::new(first.policy.limits.max_pre_login_sessions)),
        per_ip: PerIp::default(),
    };
    let mut backoff = Duration::from_millis(10);
    let upstream = first.policy.cfg.upstream_description();
    let bind = listener
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    info!(listener = %first.policy.cfg.name, %bind, %upstream, "listening");
    loop {
        let accepted = tokio::select! {
            _ = shutdown.stop_accepting.cancelled() => break,
            r = listener.accept() => r,
        };
        let current = ctx.borrow().clone();
        let (stream, peer) = match accepted {
            Ok(conn) => {
                backoff = Duration::from_millis(10);
                conn
            }
            Err(e) => {
                // Typically EMFILE: wait for sessions to release descriptors instead of
                // spinning on the error.
                warn!(listener = %current.policy.cfg.name, error = %e, "accept failed; backing off");
                tokio::select! {
                    _ = shutdown.stop_accepting.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::rejected(&current.scope_at_accept(), metrics::Rejection::MaxSessions);
            warn!(listener = %current.policy.cfg.name, client = %peer, max = current.policy.limits.max_sessions, "session limit reached; refusing client");
            shutdown.sessions.spawn(async move {
                let mut stream = stream;
                refuse(&mut stream, peer, Say::TooManySessions).await
            });
            continue;
        };
        let hard_stop = shutdown.hard_stop.clone();
        let per_ip = per_ip.clone();
        let pre_login = pre_login.clone();
        // The PROXY header is read in the session's own task: a slow balancer connection
        // must not stall the accept loop.
        shutdown.sessions.spawn(async move {
            let _permit = permit;
            let Some((mut stream, client, rest)) = client_of(stream, peer, &current).await else {
                return;
            };
            // Before anything costs: the upstream connect, a TLS handshake, a slot.
            if let Some(silent) = banned(&current, client.ip()) {
                metrics::rejected(&current.scope_at_accept(), metrics::Rejection::Banned);
                debug!(listener = %current.policy.cfg.name, %client, "banned client refused");
                if !silent {
                    refuse(&mut stream, client, Say::Banned).await;
                }
                return;
            }
            let Some(_ip_slot) = per_ip.acquire(client.ip(), current.policy.limits.max_sessions_per_ip) else {
                metrics::rejected(&current.scope_at_accept(), metrics::Rejection::MaxSessionsPerIp);
                warn!(listener = %current.policy.cfg.name, %client, max = current.policy.limits.max_sessions_per_ip, "per-address session limit reached; refusing client");
                refuse(&mut stream, client, Say::TooManySessionsFromYou).await;
                return;
            };
            let until_login = match pre_login.acquire(client.ip(), &current.policy.limits) {
                Ok(slot) => slot,
                Err((rejection, say)) => {
                    metrics::rejected(&current.scope_at_accept(), rejection);
                    warn!(listener = %current.policy.cfg.name, %client, reason = %rejection, "too many sessions waiting to log in; refusing client");
                    refuse(&mut stream, client, say).await;
                    return;
                }
            };
            session::run(stream, client, rest, current, hard_stop, Box::new(until_login)).await;
        });
    }
    info!(listener = %first.policy.cfg.name, "stopped accepting");
}

/// Whether the edge defense refuses a new connection from `client` (counting it against
/// `connect_rate`); `Some(silent)`: close it, without a word when `silent`. An
/// implicit-TLS listener's clients expect a TLS handshake, not a `421`: theirs are closed
/// silently.
fn banned(ctx: &ListenerCtx, client: IpAddr) -> Option<bool> {
    let guard = ctx.services.defense.as_ref()?;
    match guard.admit(client) {
        Admission::Admit => None,
        Admission::Refuse { silent } => {
            let implicit = ctx
                .policy
                .cfg
                .tls
                .as_ref()
                .is_some_and(|t| t.client.mode == ClientTlsMode::Implicit);
            Some(silent || implicit)
        }
    }
}

/// The client behind a connection: from the PROXY header when the peer is a trusted load
/// balancer, else the peer itself. `None` when a trusted peer sent no valid header (the
/// connection is dropped: without it the proxy cannot know whom it serves).
async fn client_of(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: &ListenerCtx,
) -> Option<(TcpStream, SocketAddr, Vec<u8>)> {
    let Some(pp) = &ctx.policy.cfg.proxy_protocol else {
        return Some((stream, peer, Vec::new()));
    };
    if !pp.trusts(peer.ip()) {
        return Some((stream, peer, Vec::new()));
    }
    match proxy_protocol::read_header(&mut stream, ctx.policy.limits.connect_timeout).await {
        Ok(h) => Some((stream, h.source.unwrap_or(peer), h.rest)),
        Err(e) => {
            metrics::rejected(&ctx.scope_at_accept(), metrics::Rejection::ProxyHeader);
            warn!(listener = %ctx.policy.cfg.name, balancer = %peer, error = %e, "dropping a load-balancer connection without a valid PROXY header");
            None
        }
    }
}

async fn refuse(stream: &mut TcpStream, peer: SocketAddr, why: Say) {
    let reply = why.bytes();
    // Bounded: a client that does not read must not hold the task.
    let write = async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    };
    if tokio::time::timeout(Duration::from_secs(5), write)
        .await
        .is_err()
    {
        warn!(client = %peer, "client did not take the refusal in time");
    }
}

/// The slots of sessions that have not logged in yet, in total and per address (sized at
/// start, like `max_sessions`).
#[derive(Clone)]
struct PreLogin {
    slots: Arc<Semaphore>,
    per_ip: PerIp,
}

impl PreLogin {
    /// A session's pre-login slots, which it gives back once logged in (or when it ends).
    #[allow(clippy::type_complexity)]
    fn acquire(
        &self,
        ip: IpAddr,
        limits: &crate::config::Limits,
    ) -> Result<(IpSlot, OwnedSemaphorePermit), (metrics::Rejection, Say)> {
        let ip_slot = self
            .per_ip
            .acquire(ip, limits.max_pre_login_sessions_per_ip)
            .ok_or((
                metrics::Rejection::MaxPreLoginSessionsPerIp,
                Say::TooManyPreLoginFromYou,
            ))?;
        let total = self.slots.clone().try_acquire_owned().map_err(|_| {
            (
                metrics::Rejection::MaxPreLoginSessions,
                Say::TooManyPreLogin,
            )
        })?;
        Ok((ip_slot, total))
    }
}

/// Open sessions per client address, so one host cannot take every session slot.
#[derive(Clone, Default)]
struct PerIp {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One session's share of its address's count; released on drop.
struct IpSlot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerIp {
    fn acquire(&self, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            open: self.open.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                // Keep the map as small as the set of connected addresses.
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_counts_and_releases() {
        let per_ip = PerIp::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let s1 = per_ip.acquire(a, 2).unwrap();
        let _s2 = per_ip.acquire(b, 2).unwrap(); // the same address, IPv4-mapped
        assert!(per_ip.acquire(a, 2).is_none());
        assert!(per_ip.acquire("192.0.2.2".parse().unwrap(), 2).is_some());
        drop(s1);
        assert!(per_ip.acquire(a, 2).is_some());
        assert!(
            per_ip.open.lock().unwrap().len() == 1,
            "released addresses leave the map"
        );
    }
}
