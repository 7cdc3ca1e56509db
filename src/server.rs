//! The accept loop of one listener: caps concurrent sessions, backs off on accept errors,
//! and spawns one task per client into the shared [`TaskTracker`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::metrics;
use crate::proto::reply::reply_line;
use crate::session::{self, ListenerCtx};

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

/// Accepts clients on `listener` until `shutdown.stop_accepting` is cancelled.
pub async fn serve(listener: TcpListener, ctx: Arc<ListenerCtx>, shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(ctx.limits.max_sessions));
    let mut backoff = Duration::from_millis(10);
    info!(listener = %ctx.cfg.name, bind = ?listener.local_addr().ok(), upstream = %ctx.cfg.upstream, "listening");
    loop {
        let accepted = tokio::select! {
            _ = shutdown.stop_accepting.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => {
                backoff = Duration::from_millis(10);
                conn
            }
            Err(e) => {
                // Typically EMFILE: wait for sessions to release descriptors instead of
                // spinning on the error.
                warn!(listener = %ctx.cfg.name, error = %e, "accept failed; backing off");
                tokio::select! {
                    _ = shutdown.stop_accepting.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::rejected(&ctx.cfg.name, "max_sessions");
            warn!(listener = %ctx.cfg.name, client = %peer, max = ctx.limits.max_sessions, "session limit reached; refusing client");
            shutdown.sessions.spawn(refuse(stream, peer));
            continue;
        };
        let ctx = ctx.clone();
        let hard_stop = shutdown.hard_stop.clone();
        shutdown.sessions.spawn(async move {
            session::run(stream, peer, ctx, hard_stop).await;
            drop(permit);
        });
    }
    info!(listener = %ctx.cfg.name, "stopped accepting");
}

async fn refuse(mut stream: TcpStream, peer: SocketAddr) {
    let reply = reply_line(421, "Too many connections to this proxy; try again later.");
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
