//! The one decision "connect straight, or through the agent beside the server": a
//! [`Dialer`] says which, for a listener with `via:` or an FXP URL with `?via=`, and
//! [`Dialer::dial`] carries it out. Every connection the proxy makes toward a server
//! goes through it: a session's control and data connections, a pool's health checks,
//! and the FXP engine's control and data connections. How to connect straight stays
//! the caller's (each has its own checks and socket tuning); the agent's way is the
//! same for all.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::hub::{AgentStream, DialError, Hub};

/// How connections toward one server are made: straight, or through an agent.
#[derive(Clone, Default)]
pub struct Dialer {
    via: Option<(Arc<Hub>, String)>,
    /// The agent's link to take while it is up ([`Dialer::pinned`]).
    on: Option<u64>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.agent() {
            Some(a) => write!(f, "Dialer(via {a})"),
            None => f.write_str("Dialer(direct)"),
        }
    }
}

/// A connection toward a server: a socket of this host, or a stream an agent carries.
pub enum Conn {
    Direct(TcpStream),
    Agent {
        stream: Box<AgentStream>,
        /// The server's address and the agent's own, as the agent connected.
        peer: SocketAddr,
        local: SocketAddr,
    },
}

/// Why [`Dialer::dial`] failed: the agent's reason, or the straight connection's own.
#[derive(Debug, thiserror::Error)]
pub enum DialFailure<E> {
    #[error(transparent)]
    Agent(DialError),
    #[error(transparent)]
    Direct(E),
}

impl DialFailure<io::Error> {
    /// One I/O error either way (the agent's reason as its text).
    pub fn into_io(self) -> io::Error {
        match self {
            DialFailure::Agent(e) => io::Error::other(e),
            DialFailure::Direct(e) => e,
        }
    }
}

impl Dialer {
    /// Straight from this host.
    pub fn direct() -> Dialer {
        Dialer::default()
    }

    /// Through agent `name`, whose links `hub` keeps.
    pub fn via(hub: Arc<Hub>, name: impl Into<String>) -> Dialer {
        Dialer {
            via: Some((hub, name.into())),
            on: None,
        }
    }

    /// The agent connections go through, if any.
    pub fn agent(&self) -> Option<&str> {
        self.via.as_ref().map(|(_, name)| name.as_str())
    }

    /// This dialer, taking the link that carries `control` while it is up: a server
    /// takes a session's data connections only from its control connection's client
    /// address, which is that agent's host when several agents share a name.
    pub fn pinned(&self, link: Option<u64>) -> Dialer {
        Dialer {
            via: self.via.clone(),
            on: link,
        }
    }

    /// A connection to `target` (`host:port`, as the agent resolves it when there is
    /// one), within `limit`: through the agent, or else `direct`, which is awaited only
    /// then.
    pub async fn dial<E>(
        &self,
        target: &str,
        limit: Duration,
        direct: impl Future<Output = Result<TcpStream, E>>,
    ) -> Result<Conn, DialFailure<E>> {
        match &self.via {
            Some((hub, agent)) => {
                let (stream, peer, local) = hub
                    .dial_on(agent, self.on, target, limit)
                    .await
                    .map_err(DialFailure::Agent)?;
                Ok(Conn::Agent {
                    stream: Box::new(stream),
                    peer,
                    local,
                })
            }
            None => direct.await.map(Conn::Direct).map_err(DialFailure::Direct),
        }
    }
}

impl Conn {
    /// The server's address and this end's (for a stream through an agent, the
    /// agent's), as connected.
    pub fn addrs(&self) -> io::Result<(SocketAddr, SocketAddr)> {
        match self {
            Conn::Direct(s) => Ok((s.peer_addr()?, s.local_addr()?)),
            Conn::Agent { peer, local, .. } => Ok((*peer, *local)),
        }
    }

    /// Whether the bytes go through an agent.
    pub fn is_agent(&self) -> bool {
        matches!(self, Conn::Agent { .. })
    }

    /// The agent's link that carries it, if it goes through one (see [`Dialer::pinned`]).
    pub fn link(&self) -> Option<u64> {
        match self {
            Conn::Direct(_) => None,
            Conn::Agent { stream, .. } => Some(stream.link()),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Direct(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Agent { stream, .. } => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Direct(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Agent { stream, .. } => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Direct(s) => Pin::new(s).poll_flush(cx),
            Conn::Agent { stream, .. } => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Direct(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Agent { stream, .. } => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Direct(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Agent { stream, .. } => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Direct(s) => s.is_write_vectored(),
            Conn::Agent { stream, .. } => stream.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straight: the caller's own way is taken; through an agent that has no link: the
    /// failure names the agent, and the straight way is never tried.
    #[tokio::test]
    async fn straight_or_through_the_agent() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let limit = Duration::from_secs(5);
        let conn = Dialer::direct()
            .dial(&addr.to_string(), limit, TcpStream::connect(addr))
            .await
            .unwrap();
        assert!(!conn.is_agent());
        assert_eq!(conn.addrs().unwrap().0, addr);

        let hub = Hub::new([("site-a".to_string(), "0123456789abcdef".to_string())].into());
        let dialer = Dialer::via(hub, "site-a");
        assert_eq!(dialer.agent(), Some("site-a"));
        let tried = std::sync::atomic::AtomicBool::new(false);
        let direct = async {
            tried.store(true, std::sync::atomic::Ordering::Relaxed);
            TcpStream::connect(addr).await
        };
        let e = dialer
            .dial(&addr.to_string(), limit, direct)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, DialFailure::Agent(DialError::NotConnected(_))));
        assert_eq!(e.to_string(), "agent site-a is not connected");
        assert!(!tried.load(std::sync::atomic::Ordering::Relaxed));
    }
}
