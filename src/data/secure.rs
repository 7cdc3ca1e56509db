//! TLS on relayed data connections (FTPS `PROT P`), each leg as its own control
//! connection negotiated: toward the client the proxy is the TLS server (clients resume
//! their control session, which the server side's session cache allows), toward the
//! server it is the TLS client and resumes its own control session (vsftpd's
//! `require_ssl_reuse`). Whoever opened the TCP connection, the FTP client side is the
//! TLS client (RFC 4217 section 7).

use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::metrics::{self, TlsSide};

/// A protected leg's TLS handshake failed.
#[derive(Debug, thiserror::Error)]
#[error("TLS on the {side}'s data connection failed: {why}")]
pub struct HandshakeFailed {
    pub side: &'static str,
    pub why: String,
}

/// A data connection, plain or TLS.
pub trait DataStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> DataStream for T {}

/// Which legs of a transfer are protected.
#[derive(Default)]
pub struct Protection {
    /// `PROT P` toward the client.
    pub client: Option<TlsAcceptor>,
    /// `PROT P` toward the server, with the name its certificate must carry.
    pub upstream: Option<(TlsConnector, ServerName<'static>)>,
}

impl Protection {
    /// Whether both legs stay plain TCP (and can take the zero-copy path).
    pub fn is_clear(&self) -> bool {
        self.client.is_none() && self.upstream.is_none()
    }

    /// Runs the handshakes of the protected legs, within `limit` each.
    pub async fn secure(
        self,
        client: Box<dyn DataStream>,
        upstream: Box<dyn DataStream>,
        limit: Duration,
    ) -> Result<(Box<dyn DataStream>, Box<dyn DataStream>), HandshakeFailed> {
        let client: Box<dyn DataStream> = match self.client {
            None => client,
            Some(acceptor) => {
                let started = Instant::now();
                let r = timeout(limit, acceptor.accept(batched(client))).await;
                let tls = finish(TlsSide::Client, r, started, |s| {
                    s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
                })?;
                Box::new(tls)
            }
        };
        let upstream: Box<dyn DataStream> = match self.upstream {
            None => upstream,
            Some((connector, name)) => {
                let started = Instant::now();
                let r = timeout(limit, connector.connect(name, batched(upstream))).await;
                let tls = finish(TlsSide::Upstream, r, started, |s| {
                    s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
                })?;
                Box::new(tls)
            }
        };
        Ok((client, upstream))
    }
}

/// Socket reads under a TLS data connection take up to this much at once: rustls asks
/// for at most 4 KiB a read, four system calls per 16 KiB record, and the copy loop takes
/// whatever records are already here in one go. Measured with scripts/bench-tls.sh (1 GiB,
/// 5 runs, quiet machine): 64 KiB cost 0.67/0.48 CPU s/GiB (RETR/STOR), 256 KiB 0.62/0.43;
/// scripts/mem-tls.sh: 256 KiB made a running TLS transfer ~600 KiB. 128 KiB is between.
const READ_BATCH: usize = 128 * 1024;

fn batched(stream: Box<dyn DataStream>) -> BufReader<Box<dyn DataStream>> {
    BufReader::with_capacity(READ_BATCH, stream)
}

/// How long a protected data connection's receiver gets to close after the proxy's
/// close_notify: well-behaved peers answer at once; one that waits for the `226` (which
/// the proxy holds until this transfer ends) must not hold the transfer up for long.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Reads (and drops) whatever the peer still sends until it closes, within `limit`:
/// after the proxy's close_notify, a TLS peer answers with its own.
pub async fn await_close(stream: &mut (impl AsyncRead + Unpin), limit: Duration) {
    let mut sink = [0u8; 4096];
    let _ = timeout(limit, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Counts a data handshake and turns its failure into the transfer's.
fn finish<S>(
    side: TlsSide,
    r: Result<std::io::Result<S>, tokio::time::error::Elapsed>,
    started: Instant,
    resumed: impl Fn(&S) -> bool,
) -> Result<S, HandshakeFailed> {
    let took = started.elapsed();
    let outcome = match r {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no TLS handshake within {took:?}")),
    };
    match outcome {
        Ok(s) => {
            metrics::tls_handshake(side, "data", true, resumed(&s), took);
            Ok(s)
        }
        Err(why) => {
            metrics::tls_handshake(side, "data", false, false, took);
            Err(HandshakeFailed {
                side: side.as_str(),
                why,
            })
        }
    }
}
