//! One client session: a task that owns the client's control connection and its upstream
//! control connection, and relays commands and replies between them.
//!
//! - [`machine`] (in the pure core, `fxprelay_core`) decides everything, sans I/O:
//!   [`machine::Event`]s in through one `handle`, [`machine::Action`]s out, time passed
//!   in; it holds only the listener's [`policy`], immutable;
//! - [`shell`] is the async half that owns sockets, ports, the chosen backend and tasks,
//!   turns each completion into an event and carries the actions out with the listener's
//!   services; [`handshake`] is its one TLS handshake for either control connection;
//! - [`context`] is what sessions share with their listener: the [`Policy`] and the
//!   shell's [`Services`];
//! - [`registry`] lists the open sessions for the admin API, each as a [`view::Snapshot`]
//!   its machine makes;
//! - [`replies`] is the catalogue of the proxy's own replies.
//!
//! Imports run one way: `shell` -> `machine` -> {`policy`, `view`, `replies`};
//! `context` -> {`policy`, `registry` -> `view`}; the machine never sees `context`.

pub mod context;
mod handshake;
pub mod registry;
mod shell;
mod transparent;

pub use fxprelay_core::session::{machine, policy, replies, view};

pub use context::{ListenerCtx, PassiveRefusals, Services};
pub use policy::Policy;
pub use shell::UntilLogin;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::config::Mode;
use crate::metrics::{self, Rejection, TlsSide};
use crate::tls::ClientTlsMode;
use handshake::Handshake;
use machine::Machine;
use shell::{BoxStream, Shell};
use tokio::io::AsyncReadExt;

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
    // The session's id (the one the API and the console show, which `DELETE
    // /api/v1/sessions/{id}` takes) is on every line of the session, from the first.
    let end = CancellationToken::new();
    let registration = ctx
        .services
        .sessions
        .register(&ctx.policy.cfg.name, peer, end.clone());
    // `route` is filled in once the session takes one (a listener with routes).
    let span = tracing::info_span!(
        "session",
        session = registration.id(),
        listener = %ctx.policy.cfg.name,
        client = %peer,
        route = tracing::field::Empty
    );
    async move {
        let started = Instant::now();
        let meter = metrics::SessionMeter::start(ctx.scope_at_accept());
        let session = Registered {
            registration,
            end,
            meter,
        };
        let outcome = serve(client, peer, early, ctx, hard_stop, until_login, session).await;
        let ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(end) => info!(reason = %end, ms, "session ended"),
            Err(e) => warn!(error = %e, ms, "session failed"),
        }
    }
    .instrument(span)
    .await
}

/// A session's place in the registry, how an operator ends it, and its series (closed
/// when it is dropped, with the session).
struct Registered {
    registration: registry::Registration,
    end: CancellationToken,
    meter: metrics::SessionMeter,
}

async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    early: Vec<u8>,
    ctx: Arc<ListenerCtx>,
    hard_stop: CancellationToken,
    until_login: UntilLogin,
    Registered {
        registration,
        end,
        meter,
    }: Registered,
) -> anyhow::Result<&'static str> {
    let _ = client.set_nodelay(true);
    let client_local = client.local_addr()?.ip().to_canonical();
    let policy = ctx.policy.clone();
    let original = match policy.cfg.mode {
        Mode::Transparent => Some(transparent::original_destination(&client)?),
        _ => None,
    };
    let tls = ctx.services.tls.as_ref();
    let implicit = tls
        .filter(|t| t.settings.client.mode == ClientTlsMode::Implicit)
        .and_then(|t| t.client.clone());
    let (client, early, name): (BoxStream, Vec<u8>, Option<String>) = match implicit {
        None => (Box::new(client), early, None),
        // Implicit TLS: the handshake comes before any FTP. Bytes the client sent behind
        // a PROXY header are the start of its TLS hello: they go back in front.
        Some(acceptor) => {
            let (r, w) = client.into_split();
            let stream = tokio::io::join(std::io::Cursor::new(early).chain(r), w);
            let limit = policy.limits.connect_timeout;
            let handshake = handshake::secure(Handshake::Accept(acceptor), stream, limit);
            let secured = tokio::select! {
                r = handshake => r,
                _ = hard_stop.cancelled() => return Ok("shutdown"),
            };
            match secured {
                Ok(s) => {
                    metrics::tls_session(meter.scope(), TlsSide::Client);
                    let name = handshake::client_name(&s);
                    (Box::new(s), Vec::new(), name)
                }
                Err(error) => {
                    metrics::rejected(meter.scope(), Rejection::ClientTls);
                    info!(%error, "client TLS handshake failed");
                    return Ok("client TLS handshake failed");
                }
            }
        }
    };
    let machine = Machine::with_name(
        policy.clone(),
        peer.ip(),
        client_local,
        original,
        name.as_deref(),
        Instant::now(),
    );
    let local = SocketAddr::new(client_local, policy.cfg.bind.port());
    Shell::new(ctx, machine, client, &early, client_local, meter)
        .client_named(name)
        .client_addrs(peer, local)
        .registered(registration)
        .run(hard_stop, end, until_login)
        .await
}
