//! One client session: a task that owns the client's control connection and its upstream
//! control connection, and relays commands and replies between them.
//!
//! - [`machine`] decides everything, sans I/O: events in, actions out, time passed in;
//! - [`shell`] is the async half that owns sockets, ports and tasks and carries the
//!   actions out;
//! - [`context`] is what sessions share with their listener;
//! - [`replies`] is the catalogue of the proxy's own replies.

pub mod context;
pub mod machine;
pub mod replies;
mod shell;
mod transparent;
mod writer;

pub use context::{ListenerCtx, PassiveRefusals};
pub use shell::UntilLogin;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::config::Mode;
use crate::metrics;
use machine::Machine;
use shell::Shell;

/// Runs one session to completion. Never panics on peer input; every way out is logged
/// once and counted.
/// `peer` is the client's address (from the PROXY header behind a load balancer);
/// `early` holds bytes the client sent before the proxy read anything else;
/// `until_login` is dropped once the client has logged in (the listener's pre-login slots).
pub async fn run(
    client: TcpStream,
    peer: SocketAddr,
    early: Vec<u8>,
    ctx: Arc<ListenerCtx>,
    hard_stop: CancellationToken,
    until_login: UntilLogin,
) {
    let span = tracing::info_span!("session", listener = %ctx.cfg.name, client = %peer);
    async move {
        let started = Instant::now();
        metrics::session_started(&ctx.cfg.name);
        let name = ctx.cfg.name.clone();
        let outcome = serve(client, peer, early, ctx, hard_stop, until_login).await;
        metrics::session_ended(&name, started.elapsed());
        let secs = started.elapsed().as_secs_f32();
        match outcome {
            Ok(end) => info!(reason = end, secs, "session ended"),
            Err(e) => warn!(error = %e, secs, "session failed"),
        }
    }
    .instrument(span)
    .await
}

async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    early: Vec<u8>,
    ctx: Arc<ListenerCtx>,
    hard_stop: CancellationToken,
    until_login: UntilLogin,
) -> anyhow::Result<&'static str> {
    let _ = client.set_nodelay(true);
    let client_local = client.local_addr()?.ip().to_canonical();
    let original = match ctx.cfg.mode {
        Mode::Transparent => Some(transparent::original_destination(&client)?),
        _ => None,
    };
    let machine = Machine::new(
        ctx.clone(),
        peer.ip(),
        client_local,
        original,
        Instant::now(),
    );
    Shell::new(ctx, machine, client, &early, client_local)
        .run(hard_stop, until_login)
        .await
}
