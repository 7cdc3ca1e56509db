//! One relayed transfer: open both data legs (accepting only the expected peer, or
//! connecting out), then copy the file from sender to receiver until EOF, and pass the
//! EOF (the end of the file) on exactly as it was sent.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tracing::{debug, warn};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::copy::{self, CopyError};
use super::peer::{self, Origin, Verdict};
use super::ports::{LeasedListener, PortLease};
use super::secure;
use super::secure::DataStream;
pub use super::secure::Protection;
use super::socket;
use crate::agent::{AgentStream, Inside, InsideError};
use crate::bans::Guard;
use crate::config::ProxyProtocol;
use crate::metrics;
use crate::metrics::{Rejection, Scope};
use crate::proxy_protocol::HeaderError;

/// PROXY headers read at once on one leased port: the real client's connection and a
/// few strays. Beyond that, new balancer connections are refused rather than held.
const MAX_PENDING_HEADERS: usize = 8;

/// How one side of a transfer gets its data connection.
#[derive(Debug)]
pub enum Leg {
    /// Wait on a leased port for one connection from `expect` (anyone else is port theft).
    /// Connections from `balancers` must start with a PROXY header, whose address is
    /// the one compared (see [`super::peer`]). A client `guard` has banned gets no
    /// connection either.
    Accept {
        listener: LeasedListener,
        expect: IpAddr,
        balancers: Option<ProxyProtocol>,
        guard: Option<Guard>,
    },
    /// Connect out to this address.
    Connect(SocketAddr),
    /// Already connected (the upstream's passive port is reached before the command).
    Ready(TcpStream),
    /// Already connected through the listener's agent (`via`): a stream the agent
    /// carries to the server's passive port.
    Agent(Box<AgentStream>),
    /// The listener's agent listens inside for the server's active-mode connection (it
    /// refuses anyone else), which arrives as a stream the agent carries.
    Inside(Inside),
}

/// An open leg: a socket of this host (spliced when both legs are clear), or an
/// agent's stream.
enum Conn {
    Tcp(TcpStream),
    Agent(Box<AgentStream>),
}

impl Conn {
    fn boxed(self) -> Box<dyn DataStream> {
        match self {
            Conn::Tcp(s) => Box::new(s),
            Conn::Agent(s) => s,
        }
    }
}

/// Why a transfer failed. The session turns it into a `425`/`426` for the client.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("no data connection from {expect} within {after:?}")]
    AcceptTimeout { expect: IpAddr, after: Duration },
    #[error(transparent)]
    Inside(#[from] InsideError),
    #[error("cannot open the data connection to {0}: {1}")]
    Connect(SocketAddr, io::Error),
    #[error("no data moved for {0:?}")]
    Idle(Duration),
    #[error(transparent)]
    Tls(#[from] secure::HandshakeFailed),
    #[error("data connection broke: {0}")]
    Io(#[from] io::Error),
}

impl From<crate::agent::Conn> for Leg {
    /// A connection the listener's dialer made toward the server.
    fn from(conn: crate::agent::Conn) -> Leg {
        match conn {
            crate::agent::Conn::Direct(s) => Leg::Ready(s),
            crate::agent::Conn::Agent { stream, .. } => Leg::Agent(stream),
        }
    }
}

impl From<CopyError> for DataError {
    fn from(e: CopyError) -> Self {
        match e {
            CopyError::Idle(after) => DataError::Idle(after),
            CopyError::Io(e) => DataError::Io(e),
        }
    }
}

pub use crate::proto::Moved;

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
/// `progress` hears the running total after each write (the console's live bytes), so
/// it must be cheap.
pub async fn run(
    scope: &Scope,
    direction: Direction,
    (client, upstream): (Leg, Leg),
    protect: Protection,
    limits: Timeouts,
    progress: impl FnMut(u64),
) -> Result<Moved, DataError> {
    let (c, _client_lease) = open(scope, "client", client, limits).await?;
    let (u, _upstream_lease) = open(scope, "upstream", upstream, limits).await?;
    let bytes = match (c, u) {
        (Conn::Tcp(c), Conn::Tcp(u)) if protect.is_clear() => {
            let (mut from, mut to) = match direction {
                Direction::Upload => (c, u),
                Direction::Download => (u, c),
            };
            socket::copy_tcp_to_eof(&mut from, &mut to, limits.idle, progress).await?
        }
        (c, u) => protected(direction, (c.boxed(), u.boxed()), protect, limits, progress).await?,
    };
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
    metrics::data_bytes(scope, moved.upload, moved.download);
    Ok(moved)
}

/// The copy where a leg is not a plain socket of this host: TLS on either leg, or an
/// agent's stream.
async fn protected(
    direction: Direction,
    (c, u): (Box<dyn DataStream>, Box<dyn DataStream>),
    protect: Protection,
    limits: Timeouts,
    progress: impl FnMut(u64),
) -> Result<u64, DataError> {
    {
        let (c, u) = protect.secure(c, u, limits.connect).await?;
        let (mut from, mut to) = match direction {
            Direction::Upload => (c, u),
            Direction::Download => (u, c),
        };
        // A TLS reader reports a peer that closed without close_notify as an error:
        // a truncated file is a failed transfer, never a 226.
        let n = copy::copy_to_eof(&mut from, &mut to, limits.idle, progress).await?;
        // Both legs end as TLS ends: the proxy's close_notify went to the receiver with
        // the end of the file, and goes to the sender now, answering the one that ended
        // the copy (a sender that unwraps its connection, as Python's ftplib.FTP_TLS
        // does after an upload, waits for it and fails the upload without it). The
        // receiver's TLS layer may have sent records of its own (session tickets);
        // closing with them unread would reset the connection and lose the file's tail
        // in flight, so its own close (close_notify or EOF) is awaited.
        let wait = limits.idle.min(secure::CLOSE_WAIT);
        let answer = async {
            let _ = timeout(wait, from.shutdown()).await;
        };
        tokio::join!(answer, secure::await_close(&mut to, wait));
        Ok(n)
    }
}

/// Establishes one leg. The returned lease (for accepted legs) keeps the port reserved,
/// and counted, until the transfer is over.
async fn open(
    scope: &Scope,
    side: &'static str,
    leg: Leg,
    limits: Timeouts,
) -> Result<(Conn, Option<PortLease>), DataError> {
    let (stream, lease) = match leg {
        Leg::Ready(s) => (s, None),
        Leg::Agent(s) => {
            metrics::data_connection(scope, side);
            debug!(side, "data connection open through the agent");
            return Ok((Conn::Agent(s), None));
        }
        Leg::Inside(inside) => {
            let s = inside.accepted(scope, limits.accept).await?;
            metrics::data_connection(scope, side);
            debug!(side, "data connection accepted by the agent inside");
            return Ok((Conn::Agent(Box::new(s)), None));
        }
        Leg::Connect(to) => {
            let s = timeout(limits.connect, socket::connect(to))
                .await
                .map_err(|_| DataError::Connect(to, io::ErrorKind::TimedOut.into()))?
                .map_err(|e| DataError::Connect(to, e))?;
            (s, None)
        }
        Leg::Accept {
            listener: leased,
            expect,
            balancers,
            guard,
        } => {
            let s = accept_from(
                scope,
                &leased,
                expect,
                balancers.as_ref(),
                guard.as_ref(),
                limits,
            )
            .await?;
            // Drop the listening socket at once: the port takes no second connection.
            let (_, lease) = leased.into_parts();
            (s, Some(lease))
        }
    };
    metrics::data_connection(scope, side);
    debug!(side, peer = ?stream.peer_addr().ok(), "data connection open");
    Ok((Conn::Tcp(stream), lease))
}

/// Accepts the first connection from `expect`, refusing (and counting) any other peer,
/// and `expect` too while `guard` says it is banned.
/// Headers from trusted balancers are read beside the accept, each within the connect
/// timeout, so a slow one does not hold up the client's connection.
async fn accept_from(
    scope: &Scope,
    leased: &LeasedListener,
    expect: IpAddr,
    balancers: Option<&ProxyProtocol>,
    guard: Option<&Guard>,
    limits: Timeouts,
) -> Result<TcpStream, DataError> {
    let deadline = Instant::now() + limits.accept;
    let expect = expect.to_canonical();
    let mut headers = FuturesUnordered::new();
    loop {
        let (stream, origin) = tokio::select! {
            accepted = leased.listener().accept() => match accepted {
                Ok((mut s, peer)) if peer::needs_header(peer.ip(), balancers) => {
                    if headers.len() >= MAX_PENDING_HEADERS {
                        let origin = Origin::NoHeader {
                            balancer: peer.ip(),
                            error: HeaderError::Crowded,
                        };
                        (s, origin)
                    } else {
                        let within = limits.connect;
                        headers.push(async move {
                            let origin = peer::through_balancer(&mut s, peer.ip(), within).await;
                            (s, origin)
                        });
                        continue;
                    }
                }
                Ok((s, peer)) => (s, Origin::Direct(peer.ip())),
                // A peer that reset before accept completed: keep waiting for the real one.
                Err(e) => {
                    debug!(error = %e, "data accept failed");
                    continue;
                }
            },
            Some(read) = headers.next(), if !headers.is_empty() => read,
            _ = tokio::time::sleep_until(deadline) => {
                return Err(DataError::AcceptTimeout {
                    expect,
                    after: limits.accept,
                });
            }
        };
        let port = leased.port();
        let client = match origin {
            Origin::Direct(ip) | Origin::Proxied { client: ip, .. } => Some(ip),
            Origin::BalancerOwn(_) | Origin::NoHeader { .. } => None,
        };
        if let (Some(client), Some(guard)) = (client, guard)
            && guard.is_banned(client)
        {
            metrics::rejected(scope, Rejection::Banned);
            warn!(%client, port, "refused a data connection from a banned client");
            continue;
        }
        match (peer::judge(&origin, expect), &origin) {
            (Verdict::Accept, _) => return Ok(stream),
            (Verdict::Refuse(reason), origin) => {
                metrics::rejected(scope, reason);
                match origin {
                    Origin::NoHeader { balancer, error } => {
                        warn!(%balancer, %error, %expect, port, "refused a load-balancer data connection without a valid PROXY header");
                    }
                    Origin::Proxied { balancer, client } => {
                        warn!(peer = %client, %balancer, %expect, port, "refused a data connection from an unexpected address (named by the balancer's PROXY header)");
                    }
                    Origin::Direct(peer) | Origin::BalancerOwn(peer) => {
                        warn!(%peer, %expect, port, "refused a data connection from an unexpected address");
                    }
                }
            }
            (Verdict::Ignore, _) => {
                debug!(
                    port,
                    "closed a load balancer's own data connection (LOCAL header)"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpSocket;

    use super::*;
    use crate::data::PortPool;
    use crate::metrics::RouteLabel;

    static SCOPE: std::sync::LazyLock<Scope> =
        std::sync::LazyLock::new(|| Scope::new("t", RouteLabel::Default));

    const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
    const BALANCER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

    async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::from((from, 0))).unwrap();
        s.connect(to).await.unwrap()
    }

    #[tokio::test]
    async fn a_silent_balancer_connection_does_not_hold_up_the_client() {
        let pool = PortPool::new(&"42000-42999".parse().unwrap());
        let leased = pool.lease(Ipv4Addr::LOCALHOST.into()).unwrap();
        let at = SocketAddr::from((Ipv4Addr::LOCALHOST, leased.port()));
        let balancers = ProxyProtocol {
            trusted: vec![IpAddr::from(BALANCER).into()],
        };
        // Headers may take an hour here: only reading them beside the accept lets the
        // client's connection through while the first one stays silent.
        let limits = Timeouts {
            accept: Duration::from_secs(3600),
            connect: Duration::from_secs(3600),
            idle: Duration::from_secs(3600),
        };
        let _silent = connect_from(BALANCER, at).await;
        let mut proxied = connect_from(BALANCER, at).await;
        let header = format!("PROXY TCP4 {CLIENT} 127.0.0.1 40000 {}\r\n", at.port());
        proxied.write_all(header.as_bytes()).await.unwrap();
        proxied.write_all(b"first bytes of the file").await.unwrap();
        let accepted = accept_from(
            &SCOPE,
            &leased,
            CLIENT.into(),
            Some(&balancers),
            None,
            limits,
        );
        let mut s = tokio::time::timeout(Duration::from_secs(30), accepted)
            .await
            .expect("the proxied client's connection is taken at once")
            .unwrap();
        proxied.shutdown().await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert_eq!(
            rest, b"first bytes of the file",
            "nothing past the header is lost"
        );
    }

    #[tokio::test]
    async fn a_banned_client_gets_no_data_connection() {
        let pool = PortPool::new(&"43000-43999".parse().unwrap());
        let leased = pool.lease(Ipv4Addr::LOCALHOST.into()).unwrap();
        let at = SocketAddr::from((Ipv4Addr::LOCALHOST, leased.port()));
        let yaml = "listeners:\n  - name: t\n    bind: 127.0.0.1:2121\n    upstream: h:21\n";
        let bans = crate::bans::Bans::default();
        let guard = bans.apply(&crate::config::Config::parse(yaml).unwrap())[0]
            .clone()
            .unwrap();
        bans.ban(CLIENT.into(), Some(Duration::from_secs(60)))
            .unwrap();
        let limits = Timeouts {
            accept: Duration::from_millis(500),
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(5),
        };
        let mut refused = connect_from(CLIENT, at).await;
        let accepted = accept_from(&SCOPE, &leased, CLIENT.into(), None, Some(&guard), limits);
        assert!(matches!(
            accepted.await,
            Err(DataError::AcceptTimeout { .. })
        ));
        let mut buf = [0u8; 1];
        let read = refused.read(&mut buf).await;
        assert!(matches!(read, Ok(0) | Err(_)), "closed: {read:?}");
        // Let in again: the same client's next connection is the transfer's.
        bans.unban(CLIENT.into());
        let _client = connect_from(CLIENT, at).await;
        let accepted = accept_from(&SCOPE, &leased, CLIENT.into(), None, Some(&guard), limits);
        assert!(accepted.await.is_ok());
    }
}
