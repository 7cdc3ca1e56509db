//! The pool that leases data ports from the operator's port spec.
//!
//! A [`PortPool`] hands out ports of a [`PortSpec`] (`"21,80,50000-50100"`) at random,
//! binds them with `SO_REUSEADDR`, skips ports another program holds, and takes each port
//! back when its [`PortLease`] drops, so running out is a clean
//! [`LeaseError::Exhausted`] and never a hang.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasher;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::net::{TcpListener, TcpSocket};

use crate::metrics::{DATA_PORT_EXHAUSTED_TOTAL, DATA_PORTS_IN_USE};
use crate::net::PortSpec;

pub use crate::net::LeaseError;

/// Leases ports of one [`PortSpec`]. Cheap to clone; clones share the leases.
#[derive(Clone)]
pub struct PortPool {
    inner: Arc<Inner>,
}

struct Inner {
    spec: PortSpec,
    leased: Mutex<HashSet<u16>>,
    /// Leases per client address, for [`PortPool::lease_for`].
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

impl PortPool {
    pub fn new(spec: &PortSpec) -> Self {
        PortPool {
            inner: Arc::new(Inner {
                spec: spec.clone(),
                leased: Mutex::new(HashSet::new()),
                per_client: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn spec(&self) -> &PortSpec {
        &self.inner.spec
    }

    /// Ports leased right now (including ones being bound at this instant).
    pub fn in_use(&self) -> usize {
        self.leased().len()
    }

    /// Leases a random free port and listens on `ip:port` (backlog 1).
    ///
    /// Synchronous, but must be called within a tokio runtime: the listener registers with
    /// its reactor. Ports another program holds are skipped; [`LeaseError::Exhausted`]
    /// comes only after every port of the spec was tried, and counts
    /// [`DATA_PORT_EXHAUSTED_TOTAL`](crate::metrics::DATA_PORT_EXHAUSTED_TOTAL).
    pub fn lease(&self, ip: IpAddr) -> Result<LeasedListener, LeaseError> {
        let (listener, lease) = self.lease_with(ip, |addr| bound_socket(addr)?.listen(1))?;
        Ok(LeasedListener { listener, lease })
    }

    /// [`PortPool::lease`] on behalf of `client`, which may hold at most `max` leases of
    /// this pool at once ([`LeaseError::PerClient`] beyond).
    pub fn lease_for(
        &self,
        ip: IpAddr,
        client: IpAddr,
        max: usize,
    ) -> Result<LeasedListener, LeaseError> {
        let share = self.client_share(client.to_canonical(), max)?;
        let mut leased = self.lease(ip)?;
        leased.lease.share = Some(share);
        Ok(leased)
    }

    fn client_share(&self, client: IpAddr, max: usize) -> Result<ClientShare, LeaseError> {
        let mut counts = self.per_client();
        let n = counts.entry(client).or_insert(0);
        if *n >= max {
            return Err(LeaseError::PerClient { client, max });
        }
        *n += 1;
        Ok(ClientShare {
            client,
            pool: self.clone(),
        })
    }

    fn per_client(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.inner
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Leases a random free port and returns a socket bound to `ip:port`, neither listening
    /// nor connected, for callers that connect out from a port of the spec. Needs no runtime
    /// until the socket is used. Keep the [`PortLease`] as long as the connection lives.
    pub fn lease_socket(&self, ip: IpAddr) -> Result<(TcpSocket, PortLease), LeaseError> {
        self.lease_with(ip, bound_socket)
    }

    /// Tries each port once, from a random starting point, until `bind` succeeds.
    fn lease_with<T>(
        &self,
        ip: IpAddr,
        mut bind: impl FnMut(SocketAddr) -> io::Result<T>,
    ) -> Result<(T, PortLease), LeaseError> {
        let spec = self.spec();
        // Random, not lowest-free, so consecutive transfers do not get predictable ports
        // that a third party could race the client to. Not security-critical: std's
        // randomly keyed hasher is enough, no RNG crate needed.
        let start = (RandomState::new().hash_one(0u8) % spec.len() as u64) as usize;
        let (mut leased, mut busy, mut denied) = (0, 0, 0);
        for port in spec.iter().skip(start).chain(spec.iter().take(start)) {
            let Some(lease) = self.reserve(port) else {
                leased += 1;
                continue;
            };
            let addr = SocketAddr::new(ip, port);
            match bind(addr) {
                Ok(socket) => return Ok((socket, lease)),
                // Port-specific: someone else owns it, or it is privileged. Try the next one;
                // dropping `lease` hands the port back.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => busy += 1,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => denied += 1,
                Err(cause) => return Err(LeaseError::Bind { addr, cause }),
            }
        }
        metrics::counter!(DATA_PORT_EXHAUSTED_TOTAL).increment(1);
        Err(LeaseError::Exhausted {
            spec: spec.to_string(),
            ip,
            leased,
            busy,
            denied,
        })
    }

    fn reserve(&self, port: u16) -> Option<PortLease> {
        if !self.leased().insert(port) {
            return None;
        }
        metrics::gauge!(DATA_PORTS_IN_USE).increment(1.0);
        Some(PortLease {
            port,
            pool: self.clone(),
            share: None,
        })
    }

    /// The set is valid after any panic (single insert/remove), so poisoning is ignored;
    /// this also keeps `PortLease::drop` from panicking.
    fn leased(&self) -> MutexGuard<'_, HashSet<u16>> {
        self.inner
            .leased
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for PortPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortPool")
            .field("spec", &self.spec().to_string())
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// SO_REUSEADDR so a port whose last data connection is still in TIME_WAIT can be reused
/// at once; a port another program listens on still fails with `AddrInUse`.
fn bound_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    super::socket::size_buffers(&socket);
    socket.bind(addr)?;
    Ok(socket)
}

/// One leased port; dropping it returns the port to its pool.
pub struct PortLease {
    port: u16,
    pool: PortPool,
    /// The client's count, when leased with [`PortPool::lease_for`].
    share: Option<ClientShare>,
}

/// One lease in a client address's count; dropping it takes it off.
struct ClientShare {
    client: IpAddr,
    pool: PortPool,
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut counts = self.pool.per_client();
        if let Some(n) = counts.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

impl PortLease {
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.leased().remove(&self.port);
        metrics::gauge!(DATA_PORTS_IN_USE).decrement(1.0);
    }
}

impl fmt::Debug for PortLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortLease")
            .field("port", &self.port)
            .finish()
    }
}

/// A listener on a leased port.
///
/// Typical relay use: accept the one data connection, then [`into_parts`](Self::into_parts)
/// and drop the listener so nobody else can connect, but keep the [`PortLease`] until the
/// transfer ends, so the port is not announced to another transfer while this one still
/// uses it and [`DATA_PORTS_IN_USE`](crate::metrics::DATA_PORTS_IN_USE) counts transfers.
#[derive(Debug)]
pub struct LeasedListener {
    listener: TcpListener,
    lease: PortLease,
}

impl LeasedListener {
    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }

    pub fn port(&self) -> u16 {
        self.lease.port
    }

    pub fn into_parts(self) -> (TcpListener, PortLease) {
        (self.listener, self.lease)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    fn spec(s: &str) -> PortSpec {
        s.parse().unwrap()
    }

    /// Each test uses its own loopback address (all of 127/8 is local on Linux), so tests
    /// running in parallel never compete for ports.
    fn test_ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, n, 1))
    }

    /// `n` consecutive ports free on `ip` right now, below the ephemeral range.
    fn free_spec(ip: IpAddr, n: u16) -> PortSpec {
        for attempt in 0..100u64 {
            let base = 20_000 + (RandomState::new().hash_one(attempt) % 10_000) as u16;
            if (base..base + n).all(|p| std::net::TcpListener::bind((ip, p)).is_ok()) {
                return format!("{base}-{}", base + n - 1).parse().unwrap();
            }
        }
        panic!("no block of {n} free ports on {ip}");
    }

    #[tokio::test]
    async fn one_client_address_holds_at_most_its_share() {
        let ip = test_ip(1);
        let pool = PortPool::new(&free_spec(ip, 4));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = pool.lease_for(ip, a, 2).unwrap();
        let _second = pool
            .lease_for(ip, "::ffff:192.0.2.1".parse().unwrap(), 2)
            .unwrap();
        let err = pool.lease_for(ip, a, 2).unwrap_err();
        assert!(
            matches!(err, LeaseError::PerClient { max: 2, .. }),
            "{err:?}"
        );
        // Others are not affected, and a returned port frees the share.
        let _other = pool.lease_for(ip, b, 2).unwrap();
        drop(first);
        assert!(pool.lease_for(ip, a, 2).is_ok());
        assert!(pool.per_client().len() <= 2);
    }

    #[tokio::test]
    async fn leases_until_exhausted_and_recovers() {
        let ip = test_ip(1);
        let spec = free_spec(ip, 3);
        let pool = PortPool::new(&spec);
        let mut leases: Vec<_> = (0..3).map(|_| pool.lease(ip).unwrap()).collect();
        let mut ports: Vec<_> = leases.iter().map(LeasedListener::port).collect();
        ports.sort_unstable();
        assert_eq!(ports, spec.iter().collect::<Vec<_>>());
        assert_eq!(pool.in_use(), 3);

        let err = pool.lease(ip).unwrap_err();
        assert!(
            matches!(err, LeaseError::Exhausted { leased: 3, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("\"{spec}\"")), "{msg}");
        assert!(msg.contains("3 in use by this proxy"), "{msg}");
        assert_eq!(pool.in_use(), 3);

        let freed = leases.pop().unwrap().port();
        let again = pool.lease(ip).unwrap();
        assert_eq!(again.port(), freed);

        // The listener works: one connection, bytes through.
        let mut client = TcpStream::connect((ip, again.port())).await.unwrap();
        let (mut conn, _) = again.listener().accept().await.unwrap();
        client.write_all(b"ok").await.unwrap();
        let mut buf = [0; 2];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ok");

        // The lease outlives the listener until the transfer ends.
        let (listener, lease) = again.into_parts();
        drop(listener);
        assert_eq!(pool.in_use(), 3);
        drop(lease);
        drop(leases);
        assert_eq!(pool.in_use(), 0);
    }

    #[tokio::test]
    async fn skips_ports_held_by_other_programs() {
        let ip = test_ip(2);
        let spec = free_spec(ip, 3);
        let middle = spec.iter().nth(1).unwrap();
        // Another program: plain listener, no SO_REUSEADDR.
        let other = TcpSocket::new_v4().unwrap();
        other.bind(SocketAddr::new(ip, middle)).unwrap();
        let _other = other.listen(1).unwrap();

        let pool = PortPool::new(&spec);
        let a = pool.lease(ip).unwrap();
        let b = pool.lease(ip).unwrap();
        assert!(a.port() != middle && b.port() != middle && a.port() != b.port());
        let err = pool.lease(ip).unwrap_err();
        assert!(
            err.to_string().contains("1 taken by other programs"),
            "{err}"
        );
        // The busy port was handed back after the failed bind.
        assert_eq!(pool.in_use(), 2);
    }

    #[tokio::test]
    async fn non_port_errors_are_not_exhaustion() {
        // 192.0.2.1 (TEST-NET-1) is not an address of this host.
        let pool = PortPool::new(&spec("50000-50010"));
        let err = pool.lease("192.0.2.1".parse().unwrap()).unwrap_err();
        assert!(matches!(err, LeaseError::Bind { .. }), "{err:?}");
        assert_eq!(pool.in_use(), 0);
    }

    #[tokio::test]
    async fn leases_are_spread_over_the_range() {
        let ip = test_ip(3);
        let spec = free_spec(ip, 100);
        let pool = PortPool::new(&spec);
        let ports: HashSet<u16> = (0..100).map(|_| pool.lease(ip).unwrap().port()).collect();
        assert!(ports.len() >= 20, "only {} distinct ports", ports.len());
    }

    #[test]
    fn lease_socket_is_bound_to_the_leased_port() {
        let ip = test_ip(4);
        let pool = PortPool::new(&free_spec(ip, 2));
        let (socket, lease) = pool.lease_socket(ip).unwrap();
        assert_eq!(
            socket.local_addr().unwrap(),
            SocketAddr::new(ip, lease.port())
        );
        assert!(pool.spec().contains(lease.port()));
        drop(lease);
        assert_eq!(pool.in_use(), 0);
    }

    #[tokio::test]
    async fn leases_on_ipv6_when_available() {
        let ip: IpAddr = "::1".parse().unwrap();
        if std::net::TcpListener::bind((ip, 0)).is_err() {
            return; // no IPv6 loopback here
        }
        let lease = PortPool::new(&free_spec(ip, 2)).lease(ip).unwrap();
        assert!(lease.listener().local_addr().unwrap().is_ipv6());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_leases_never_share_a_port() {
        let ip = test_ip(5);
        let pool = PortPool::new(&free_spec(ip, 16));
        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (pool, barrier) = (pool.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    pool.lease(ip)
                })
            })
            .collect();
        let mut held = Vec::new();
        let mut exhausted = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(lease) => held.push(lease),
                Err(LeaseError::Exhausted { .. }) => exhausted += 1,
                Err(e) => panic!("{e}"),
            }
        }
        let distinct: HashSet<u16> = held.iter().map(LeasedListener::port).collect();
        assert_eq!((held.len(), distinct.len(), exhausted), (16, 16, 16));
        drop(held);
        assert_eq!(pool.in_use(), 0);
    }
}
