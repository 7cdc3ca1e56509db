//! Transparent mode's one piece of I/O: where a redirected connection was going.

use std::io;
use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

/// Where the client meant to go: `SO_ORIGINAL_DST` after a NAT `REDIRECT`; with `TPROXY`
/// (no NAT) the socket's own local address is already the original destination.
pub(super) fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    let local = stream.local_addr()?;
    let sock = SockRef::from(stream);
    let original = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    match original.ok().and_then(|a| a.as_socket()) {
        Some(dst) => Ok(dst),
        None => Ok(local),
    }
}
