//! Reaching origin servers: resolve, connect within the configured time, classify failures.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use crate::metrics::{self, Scope};
use crate::net::{HostName, HostPort};

pub use crate::net::ConnectError;

/// Resolves `target` and connects to its addresses in turn, all within `limit`.
/// Records the connect latency or the failure reason under `scope`.
pub async fn connect(
    scope: &Scope,
    target: &HostPort,
    limit: Duration,
) -> Result<TcpStream, ConnectError> {
    connect_checked(scope, target, limit, None, |_| Ok(())).await
}

/// Like [`connect`], but only to resolved addresses that `check` accepts (the forward
/// mode's allow list and self-target guard, refusing with [`ConnectError::Denied`] or
/// [`ConnectError::SelfTarget`], applied after DNS so a name cannot smuggle in an
/// address that is not allowed), and, with `source`, from that address even though it is
/// not one of this host's (`IP_TRANSPARENT`: the upstream sees the client's address).
pub async fn connect_checked(
    scope: &Scope,
    target: &HostPort,
    limit: Duration,
    source: Option<IpAddr>,
    check: impl Fn(SocketAddr) -> Result<(), ConnectError>,
) -> Result<TcpStream, ConnectError> {
    let started = Instant::now();
    let result = match timeout(limit, connect_any(target, source, check)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout(target.to_string(), limit)),
    };
    match &result {
        Ok(_) => metrics::upstream_connected(scope, started.elapsed()),
        Err(e) => metrics::upstream_error(scope, e.reason()),
    }
    result
}

async fn connect_any(
    target: &HostPort,
    source: Option<IpAddr>,
    check: impl Fn(SocketAddr) -> Result<(), ConnectError>,
) -> Result<TcpStream, ConnectError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| ConnectError::Resolve(target.to_string(), e))?
        .collect();
    let mut last = ConnectError::NoAddress(target.to_string());
    for addr in addrs {
        if let Err(refused) = check(addr) {
            last = refused;
            continue;
        }
        match connect_from(addr, source).await {
            Ok(stream) => {
                // Control lines are small and interactive: do not wait to coalesce them.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                last = ConnectError::Refused(addr)
            }
            Err(e) => last = ConnectError::Io(addr, e),
        }
    }
    Err(last)
}

async fn connect_from(to: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(to).await;
    };
    let socket = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    let sock = SockRef::from(&socket);
    if to.is_ipv4() {
        sock.set_ip_transparent_v4(true)?;
    } else {
        sock.set_ip_transparent_v6(true)?;
    }
    socket.bind(SocketAddr::new(source.to_canonical(), 0))?;
    socket.connect(to).await
}

/// Resolves a configured host name (or returns the IP literal) at the time of use, so a
/// dynamic-DNS name keeps working without a restart.
pub async fn resolve(name: &HostName, limit: Duration) -> io::Result<Vec<IpAddr>> {
    if let Some(ip) = name.as_ip() {
        return Ok(vec![ip]);
    }
    let lookup = tokio::net::lookup_host((name.0.as_str(), 0));
    let addrs = timeout(limit, lookup)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "DNS lookup timed out"))??;
    Ok(addrs.map(|a| a.ip()).collect())
}
