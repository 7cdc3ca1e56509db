//! One relayed transfer: open both data legs (accepting only the expected peer, or
//! connecting out), then copy the file from sender to receiver until EOF, and pass the
//! EOF (the end of the file) on exactly as it was sent.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{debug, warn};

use super::ports::{LeasedListener, PortLease};
use crate::metrics;

/// Copy buffer. Measured with scripts/bench-relay.sh (1 GiB over loopback): 64 KiB cost
/// 0.53 CPU s/GiB and 0.73x direct RETR speed, 1 MiB 0.27 s/GiB and ~1x; 4 MiB gained
/// little more for four times the memory per transfer.
const COPY_BUFFER: usize = 1024 * 1024;

/// Kernel socket buffers of data connections: 4 MiB in flight is 800 Mbit/s at 40 ms,
/// and on loopback it measured better than the kernel's defaults (RETR ~0.85x -> ~0.9x).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// How one side of a transfer gets its data connection.
#[derive(Debug)]
pub enum Leg {
    /// Wait on a leased port for one connection from `expect` (anyone else is port theft).
    Accept {
        listener: LeasedListener,
        expect: IpAddr,
    },
    /// Connect out to this address.
    Connect(SocketAddr),
    /// Already connected (the upstream's passive port is reached before the command).
    Ready(TcpStream),
}

/// Why a transfer failed. The session turns it into a `425`/`426` for the client.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("no data connection from {expect} within {after:?}")]
    AcceptTimeout { expect: IpAddr, after: Duration },
    #[error("cannot open the data connection to {0}: {1}")]
    Connect(SocketAddr, io::Error),
    #[error("no data moved for {0:?}")]
    Idle(Duration),
    #[error("data connection broke: {0}")]
    Io(#[from] io::Error),
}

/// What a finished transfer moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Client to server bytes.
    pub upload: u64,
    /// Server to client bytes.
    pub download: u64,
}

/// Which way the file goes; the other direction of the data connection carries nothing.
pub use crate::proto::Direction;

/// Per-transfer settings.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub accept: Duration,
    pub connect: Duration,
    /// A transfer that moves no byte for this long has failed.
    pub idle: Duration,
}

/// Opens both legs, then copies the file one way until the sender's EOF, which is passed
/// on as a half-close: the end of the file. The transfer is complete at that point; a
/// receiver that keeps its socket open until it sees `226` must not hold it up.
pub async fn run(
    listener: &str,
    direction: Direction,
    client: Leg,
    upstream: Leg,
    limits: Timeouts,
) -> Result<Moved, DataError> {
    let (c, _client_lease) = open(listener, "client", client, limits).await?;
    let (u, _upstream_lease) = open(listener, "upstream", upstream, limits).await?;
    let (from, to) = match direction {
        Direction::Upload => (c, u),
        Direction::Download => (u, c),
    };
    let bytes = copy_to_eof(from, to, limits.idle).await?;
    let moved = match direction {
        Direction::Upload => Moved {
            upload: bytes,
            download: 0,
        },
        Direction::Download => Moved {
            upload: 0,
            download: bytes,
        },
    };
    metrics::data_bytes(listener, moved.upload, moved.download);
    Ok(moved)
}

async fn copy_to_eof(from: TcpStream, mut to: TcpStream, idle: Duration) -> Result<u64, DataError> {
    #[cfg(target_os = "linux")]
    if splice_requested()
        && let Some(n) = super::splice::splice_to_eof(&from, &to, idle).await?
    {
        to.shutdown().await?;
        return Ok(n);
    }
    let mut from = from;
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        // Each step must make progress within `idle`: a stalled peer on either side
        // cannot hold the transfer, its port and its buffers forever.
        let n = timeout(idle, from.read(&mut buf))
            .await
            .map_err(|_| DataError::Idle(idle))??;
        if n == 0 {
            break;
        }
        timeout(idle, to.write_all(&buf[..n]))
            .await
            .map_err(|_| DataError::Idle(idle))??;
        total += n as u64;
    }
    to.shutdown().await?;
    debug!(bytes = total, "data copied");
    Ok(total)
}

/// `FXPRELAY_SPLICE=1` relays with zero-copy `splice(2)`. Off by default: on the VMs we
/// measure on (2 vCPUs, Linux 6.18) it made downloads slower than the user-space copy
/// (RETR 0.64x vs 0.82x of direct) while halving the CPU of uploads; it stays available
/// for operators to measure on their kernel with scripts/bench-relay.sh.
#[cfg(target_os = "linux")]
fn splice_requested() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FXPRELAY_SPLICE").is_some_and(|v| v == "1"))
}

/// Establishes one leg. The returned lease (for accepted legs) keeps the port reserved,
/// and counted, until the transfer is over.
async fn open(
    listener: &str,
    side: &'static str,
    leg: Leg,
    limits: Timeouts,
) -> Result<(TcpStream, Option<PortLease>), DataError> {
    let (stream, lease) = match leg {
        Leg::Ready(s) => (s, None),
        Leg::Connect(to) => {
            let s = timeout(limits.connect, connect(to))
                .await
                .map_err(|_| DataError::Connect(to, io::ErrorKind::TimedOut.into()))?
                .map_err(|e| DataError::Connect(to, e))?;
            (s, None)
        }
        Leg::Accept {
            listener: leased,
            expect,
        } => {
            let s = accept_from(listener, &leased, expect, limits.accept).await?;
            // Drop the listening socket at once: the port takes no second connection.
            let (_, lease) = leased.into_parts();
            (s, Some(lease))
        }
    };
    metrics::data_connection(listener, side);
    debug!(side, peer = ?stream.peer_addr().ok(), "data connection open");
    Ok((stream, lease))
}

/// Connects a data connection, with its socket buffers sized before the handshake.
pub async fn connect(to: SocketAddr) -> io::Result<TcpStream> {
    let socket = match to {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    size_buffers(&socket);
    socket.connect(to).await
}

/// Sizes a data socket's kernel buffers. Done before `connect`/`listen` (accepted sockets
/// inherit the listener's), because the TCP window scale is fixed at the handshake.
/// Failing only costs speed.
pub fn size_buffers(socket: &TcpSocket) {
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER as u32);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER as u32);
}

/// Accepts the first connection from `expect`, refusing (and counting) any other peer.
async fn accept_from(
    listener: &str,
    leased: &LeasedListener,
    expect: IpAddr,
    within: Duration,
) -> Result<TcpStream, DataError> {
    let deadline = Instant::now() + within;
    let expect = expect.to_canonical();
    loop {
        let accepted = timeout_at(deadline, leased.listener().accept())
            .await
            .map_err(|_| DataError::AcceptTimeout {
                expect,
                after: within,
            })?;
        match accepted {
            Ok((s, peer)) if peer.ip().to_canonical() == expect => return Ok(s),
            Ok((_, peer)) => {
                metrics::rejected(listener, metrics::Rejection::PortTheft);
                warn!(%peer, %expect, port = leased.port(), "refused a data connection from an unexpected address");
            }
            // A peer that reset before accept completed: keep waiting for the real one.
            Err(e) => debug!(error = %e, "data accept failed"),
        }
    }
}
