//! Transparent mode: the firewall redirected a connection meant for some FTP server to
//! this listener (iptables `REDIRECT`, or `TPROXY`); the proxy connects to where the client
//! was going, under the same allow list and loop guard as forward mode.

use std::io;
use std::net::{IpAddr, SocketAddr};

use super::writer::ClientWriter;
use socket2::SockRef;
use tokio::net::TcpStream;
use tracing::warn;

use super::ListenerCtx;
use super::forward::{Login, permitted};
use crate::metrics;
use crate::net::HostPort;
use crate::proto::reply::reply_line;
use crate::upstream::{self, ConnectError};

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

/// Connects to the original destination if the allow list and the loop guard permit.
/// With `preserve_client_address`, the upstream connection leaves from the client's own
/// address, so strict servers accept the client's direct (passthrough) data connections.
pub(super) async fn connect(
    ctx: &ListenerCtx,
    dst: SocketAddr,
    client: IpAddr,
    client_local: IpAddr,
    client_w: &mut ClientWriter,
) -> anyhow::Result<Login> {
    let name = ctx.cfg.name.as_str();
    let target = HostPort {
        host: dst.ip().to_string(),
        port: dst.port(),
    };
    let check = |addr: SocketAddr| permitted(ctx, &target.host, addr, client_local);
    let source = ctx.cfg.preserve_client_address.then_some(client);
    match upstream::connect_checked(name, &target, ctx.limits.connect_timeout, source, check).await
    {
        Ok(upstream) => Ok(Login::Connected {
            upstream,
            user_line: Vec::new(),
            target,
        }),
        Err(ConnectError::Denied(why)) => {
            metrics::rejected(name, "transparent_denied");
            warn!(destination = %dst, why, "redirected connection refused");
            let text =
                format!("Service not available: {dst} is not allowed through this proxy ({why}).");
            client_w.write_all(&reply_line(421, &text)).await?;
            Ok(Login::End("destination not allowed"))
        }
        Err(e) => {
            warn!(destination = %dst, error = %e, "original destination unreachable");
            let text = "Service not available: the FTP server cannot be reached.";
            client_w.write_all(&reply_line(421, text)).await?;
            Ok(Login::End("upstream unreachable"))
        }
    }
}
