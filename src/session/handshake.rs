//! The TLS handshake of a control connection, on either side: the proxy as the server of
//! a client's connection (`AUTH TLS`, implicit TLS) or as the client of a server's. One
//! function for both, bounded by a deadline, timed and counted the same way.

use std::time::{Duration, Instant};

use rustls::HandshakeKind;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::timeout;
use tokio_rustls::TlsStream;

use crate::metrics::{self, TlsSide};
use crate::tls::{TlsAcceptor, TlsConnector};

/// The proxy's side of a handshake.
pub(super) enum Handshake {
    /// The TLS server of a client's control connection.
    Accept(TlsAcceptor),
    /// The TLS client of a server's control connection, which must show a certificate
    /// for this name.
    Connect(TlsConnector, ServerName<'static>),
}

impl Handshake {
    fn side(&self) -> TlsSide {
        match self {
            Handshake::Accept(_) => TlsSide::Client,
            Handshake::Connect(..) => TlsSide::Upstream,
        }
    }
}

/// Runs the handshake `how` over `stream` within `limit`: the secured stream, or why
/// there is none (worded for the log and the machine).
pub(super) async fn secure<S>(
    how: Handshake,
    stream: S,
    limit: Duration,
) -> Result<TlsStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let side = how.side();
    let started = Instant::now();
    let handshake = async {
        Ok::<_, std::io::Error>(match how {
            Handshake::Accept(acceptor) => TlsStream::from(acceptor.accept(stream).await?),
            Handshake::Connect(connector, name) => {
                TlsStream::from(connector.connect(name, stream).await?)
            }
        })
    };
    let r = timeout(limit, handshake).await;
    let took = started.elapsed();
    let error = match r {
        Ok(Ok(s)) => {
            metrics::tls_handshake(side, "control", true, resumed(&s), took);
            return Ok(s);
        }
        Ok(Err(e)) if side == TlsSide::Upstream => crate::tls::diagnose::server_handshake(&e),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no TLS handshake within {limit:?}"),
    };
    metrics::tls_handshake(side, "control", false, false, took);
    Err(error)
}

/// Whether the handshake resumed an earlier TLS session.
fn resumed<S>(s: &TlsStream<S>) -> bool {
    let kind = match s {
        TlsStream::Client(c) => c.get_ref().1.handshake_kind(),
        TlsStream::Server(c) => c.get_ref().1.handshake_kind(),
    };
    kind == Some(HandshakeKind::Resumed)
}
