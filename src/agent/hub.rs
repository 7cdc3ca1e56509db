//! The edge's side of the agents: it accepts their TLS connections, checks each link's
//! credential, keeps the links by agent name, and opens streams through them
//! ([`Hub::dial`]): a request on the link, then the connection the agent dials back with.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use subtle::ConstantTimeEq;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use fxprelay_core::agent::wire::{self, FromAgent, Hello, MAX_LINE, PROTOCOL, Refused, ToAgent};

/// A stream the agent opened: the agent's connection to the edge, carrying the bytes of
/// its connection to the target. Counted while open (`fxprelay_agent_streams`) and by
/// the bytes it carries (`fxprelay_agent_bytes_total`).
pub struct AgentStream {
    inner: TlsStream<Batched>,
    meter: crate::metrics::AgentMeter,
    /// Its link's count of open streams, decremented when it is dropped.
    link_open: Arc<AtomicUsize>,
}

impl Drop for AgentStream {
    fn drop(&mut self) {
        self.link_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for AgentStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentStream")
            .field(
                "edge_side",
                &self.inner.get_ref().0.get_ref().peer_addr().ok(),
            )
            .finish_non_exhaustive()
    }
}

impl AgentStream {
    fn new(inner: TlsStream<Batched>, agent: &str, link_open: Arc<AtomicUsize>) -> AgentStream {
        link_open.fetch_add(1, Ordering::Relaxed);
        AgentStream {
            inner,
            meter: crate::metrics::AgentMeter::open(agent),
            link_open,
        }
    }
}

impl tokio::io::AsyncRead for AgentStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.meter.received(n);
        r
    }
}

impl tokio::io::AsyncWrite for AgentStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            self.meter.sent(*n);
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The socket under an agent connection's TLS: reads take up to this much at once, as
/// the relay's TLS data legs do (`data::secure`: rustls asks for 4 KiB a read, four
/// system calls per 16 KiB record otherwise).
pub type Batched = tokio::io::BufReader<TcpStream>;

/// Bytes a read under an agent connection's TLS may take at once.
pub const READ_BATCH: usize = 128 * 1024;

/// Connections to the agents listener that may be in their TLS handshake or hello at
/// once.
const MAX_UNPROVEN: usize = 64;

/// How often an agent must say something on its link; twice this in silence and the
/// edge drops the link.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Why a stream could not be opened through an agent.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("agent {0} is not connected")]
    NotConnected(String),
    #[error("agent {agent} could not reach {target}: {reason}")]
    Failed {
        agent: String,
        target: String,
        reason: String,
    },
    #[error("agent {agent} did not open a stream to {target} within {after:?}")]
    Timeout {
        agent: String,
        target: String,
        after: Duration,
    },
}

/// What the edge knows of one connected link.
struct Link {
    id: u64,
    addr: SocketAddr,
    since: SystemTime,
    version: String,
    /// The token it came with: a reload that changes or removes it ends the link.
    token: String,
    /// Ends the link's task (a revoked token).
    end: CancellationToken,
    /// Streams open through it now: a new stream goes to the link of its name with the
    /// fewest, which spreads sessions over the agents of one name.
    streams: Arc<AtomicUsize>,
    tx: mpsc::Sender<ToAgent>,
}

/// A request waiting for its agent: the link's answer, then the stream's connection.
struct Pending {
    /// The link asked on: if it ends first, the request fails at once.
    link: u64,
    nonce: String,
    opened: Option<oneshot::Sender<Result<(SocketAddr, SocketAddr), String>>>,
    stream: Option<oneshot::Sender<TlsStream<Batched>>>,
}

/// What `/api/v1/agents` shows of a connected link.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkView {
    pub name: String,
    pub address: SocketAddr,
    pub since: String,
    pub version: String,
    /// Streams (control and data connections) open through it now.
    pub streams: usize,
}

/// The connected agents, by name, and the requests in flight.
#[derive(Default)]
pub struct Hub {
    tokens: RwLock<BTreeMap<String, String>>,
    links: Mutex<HashMap<String, Vec<Link>>>,
    pending: Mutex<HashMap<(String, u64), Pending>>,
    next: AtomicU64,
    refusals: AtomicUsize,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and counts only: the tokens are secrets.
        let links: Vec<(String, usize)> = lock(&self.links)
            .iter()
            .map(|(n, l)| (n.clone(), l.len()))
            .collect();
        f.debug_struct("Hub")
            .field("links", &links)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hub {
    /// A hub that accepts the agents named in `tokens`, each with its token.
    pub fn new(tokens: BTreeMap<String, String>) -> Arc<Hub> {
        Arc::new(Hub {
            tokens: RwLock::new(tokens),
            ..Hub::default()
        })
    }

    /// The tokens of a reloaded configuration: links whose name is gone or whose token
    /// changed end now (their agents dial again, and are refused unless they know the
    /// new token).
    pub fn set_tokens(&self, tokens: BTreeMap<String, String>) {
        *self.tokens.write().unwrap_or_else(PoisonError::into_inner) = tokens;
        let mut links = lock(&self.links);
        for (name, ls) in links.iter_mut() {
            ls.retain(|l| {
                let keep = self.admits(name, &l.token);
                if !keep {
                    l.end.cancel();
                }
                keep
            });
        }
        for (name, ls) in links.iter() {
            if ls.is_empty() {
                crate::metrics::agent_up(name, false);
            }
        }
        links.retain(|_, ls| !ls.is_empty());
    }

    /// Whether agent `name` is one the edge accepts (`agents.tokens`), linked or not.
    pub fn knows(&self, name: &str) -> bool {
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(name)
    }

    /// Whether agent `name` has a link up now.
    pub fn connected(&self, name: &str) -> bool {
        lock(&self.links).get(name).is_some_and(|l| !l.is_empty())
    }

    /// Links refused since start (a wrong name, token or protocol).
    pub fn refusals(&self) -> usize {
        self.refusals.load(Ordering::Relaxed)
    }

    /// The connected links, for the API.
    pub fn links(&self) -> Vec<LinkView> {
        let links = lock(&self.links);
        let mut out: Vec<LinkView> = links
            .iter()
            .flat_map(|(name, ls)| {
                ls.iter().map(move |l| LinkView {
                    name: name.clone(),
                    address: l.addr,
                    since: humantime::format_rfc3339_seconds(l.since).to_string(),
                    version: l.version.clone(),
                    streams: l.streams.load(Ordering::Relaxed),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.name, a.address).cmp(&(&b.name, b.address)));
        out
    }

    /// Opens a stream to `target` (`host:port`, as the agent resolves it) through agent
    /// `name`: the least busy of its links asks, the agent connects and dials back.
    /// Answers the stream and the addresses the agent connected from and to.
    pub async fn dial(
        &self,
        name: &str,
        target: &str,
        limit: Duration,
    ) -> Result<(AgentStream, SocketAddr, SocketAddr), DialError> {
        let (link, tx, streams) = {
            let links = lock(&self.links);
            let link = links
                .get(name)
                .and_then(|ls| ls.iter().min_by_key(|l| l.streams.load(Ordering::Relaxed)))
                .ok_or_else(|| DialError::NotConnected(name.to_owned()))?;
            (link.id, link.tx.clone(), link.streams.clone())
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let (opened_tx, opened_rx) = oneshot::channel();
        let (stream_tx, stream_rx) = oneshot::channel();
        let key = (name.to_owned(), id);
        lock(&self.pending).insert(
            key.clone(),
            Pending {
                link,
                nonce: nonce.clone(),
                opened: Some(opened_tx),
                stream: Some(stream_tx),
            },
        );
        // Whatever happens below, the request does not outlive this call.
        let _forget = Forget(self, key);
        let open = ToAgent::Open {
            id,
            target: target.to_owned(),
            nonce,
        };
        if tx.send(open).await.is_err() {
            return Err(DialError::NotConnected(name.to_owned()));
        }
        let failed = |reason: String| DialError::Failed {
            agent: name.to_owned(),
            target: target.to_owned(),
            reason,
        };
        let late = || DialError::Timeout {
            agent: name.to_owned(),
            target: target.to_owned(),
            after: limit,
        };
        let both = async {
            let (peer, local) = opened_rx
                .await
                .map_err(|_| failed("the agent's link closed".into()))?
                .map_err(failed)?;
            let stream = stream_rx
                .await
                .map_err(|_| failed("the agent's link closed".into()))?;
            Ok((stream, peer, local))
        };
        let (stream, peer, local) = timeout(limit, both).await.map_err(|_| late())??;
        Ok((AgentStream::new(stream, name, streams), peer, local))
    }

    fn register(&self, name: &str, link: Link) {
        lock(&self.links)
            .entry(name.to_owned())
            .or_default()
            .push(link);
        crate::metrics::agent_up(name, true);
    }

    fn unregister(&self, name: &str, id: u64) {
        // Its requests in flight fail now (their dialers hear "the agent's link closed").
        lock(&self.pending).retain(|_, p| p.link != id);
        let mut links = lock(&self.links);
        if let Some(ls) = links.get_mut(name) {
            ls.retain(|l| l.id != id);
            if ls.is_empty() {
                links.remove(name);
                crate::metrics::agent_up(name, false);
            }
        }
    }

    /// The answer on a link to request `id`.
    fn answered(&self, name: &str, id: u64, result: Result<(SocketAddr, SocketAddr), String>) {
        if let Some(p) = lock(&self.pending).get_mut(&(name.to_owned(), id))
            && let Some(tx) = p.opened.take()
        {
            let _ = tx.send(result);
        }
    }

    /// A stream connection naming request `id`: handed to its dialer when the nonce is
    /// the request's, else dropped.
    fn arrived(&self, name: &str, id: u64, nonce: &str, stream: TlsStream<Batched>) -> bool {
        let mut pending = lock(&self.pending);
        let Some(p) = pending.get_mut(&(name.to_owned(), id)) else {
            return false;
        };
        if !bool::from(p.nonce.as_bytes().ct_eq(nonce.as_bytes())) {
            return false;
        }
        match p.stream.take() {
            Some(tx) => tx.send(stream).is_ok(),
            None => false,
        }
    }

    fn admits(&self, name: &str, token: &str) -> bool {
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())))
    }

    /// Accepts agents on `listener` until `shutdown`.
    pub async fn serve(
        self: Arc<Hub>,
        listener: TcpListener,
        acceptor: TlsAcceptor,
        shutdown: CancellationToken,
    ) {
        let tasks = tokio_util::task::TaskTracker::new();
        // Connections that have not said who they are yet: anyone who reaches the port
        // can open them, so they are bounded (each also by the hello's time limit).
        let unproven = Arc::new(tokio::sync::Semaphore::new(MAX_UNPROVEN));
        loop {
            let (tcp, addr) = tokio::select! {
                () = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(error) => {
                        warn!(%error, "agents listener: accept failed");
                        continue;
                    }
                },
            };
            let Ok(permit) = unproven.clone().try_acquire_owned() else {
                warn!(%addr, "agents listener: too many connections without a hello; closed");
                continue;
            };
            let (hub, acceptor, stop) = (self.clone(), acceptor.clone(), shutdown.clone());
            tasks.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = hub.connection(tcp, addr, acceptor, permit) => {}
                }
            });
        }
        tasks.close();
        tasks.wait().await;
    }

    /// One connection from an agent: its TLS handshake and hello, then a link or a
    /// stream.
    async fn connection(
        self: Arc<Hub>,
        tcp: TcpStream,
        addr: SocketAddr,
        acceptor: TlsAcceptor,
        unproven: tokio::sync::OwnedSemaphorePermit,
    ) {
        let _ = tcp.set_nodelay(true);
        let tcp = tokio::io::BufReader::with_capacity(READ_BATCH, tcp);
        let tls = match timeout(HEARTBEAT, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(error)) => return warn!(%addr, %error, "agent TLS handshake failed"),
            Err(_) => return warn!(%addr, "agent TLS handshake timed out"),
        };
        let mut tls = tls;
        let hello = match timeout(HEARTBEAT, read_hello(&mut tls)).await {
            Ok(Ok(line)) => wire::decode::<Hello>(&line),
            _ => return warn!(%addr, "agent connection without a hello"),
        };
        drop(unproven);
        match hello {
            Ok(Hello::Link {
                name,
                token,
                protocol,
                version,
            }) => {
                let r = BufReader::with_capacity(MAX_LINE, tls);
                self.link(r, addr, name, token, protocol, version).await
            }
            Ok(Hello::Stream { name, id, nonce }) => {
                if !self.arrived(&name, id, &nonce, tls) {
                    warn!(%addr, agent = %name, id, "a stream connection no request waits for: closed");
                }
            }
            Err(error) => warn!(%addr, %error, "agent hello not understood"),
        }
    }

    async fn link(
        self: Arc<Hub>,
        mut r: BufReader<TlsStream<Batched>>,
        addr: SocketAddr,
        name: String,
        token: String,
        protocol: u32,
        version: String,
    ) {
        let refuse = if !self.admits(&name, &token) {
            Some(Refused::Credential)
        } else if protocol != PROTOCOL {
            Some(Refused::Protocol)
        } else {
            None
        };
        if let Some(reason) = refuse {
            warn!(%addr, agent = %name, %reason, "agent refused");
            crate::metrics::agent_refused(reason);
            self.refusals.fetch_add(1, Ordering::Relaxed);
            let _ = r
                .get_mut()
                .write_all(&wire::encode(&ToAgent::Refused { reason }))
                .await;
            let _ = r.get_mut().shutdown().await;
            return;
        }
        let welcome = ToAgent::Welcome {
            heartbeat_secs: HEARTBEAT.as_secs(),
        };
        if r.get_mut()
            .write_all(&wire::encode(&welcome))
            .await
            .is_err()
        {
            return;
        }
        let (tx, mut rx) = mpsc::channel::<ToAgent>(64);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let end = CancellationToken::new();
        self.register(
            &name,
            Link {
                id,
                addr,
                since: SystemTime::now(),
                version: version.clone(),
                token,
                end: end.clone(),
                streams: Arc::default(),
                tx: tx.clone(),
            },
        );
        info!(%addr, agent = %name, %version, "agent connected");
        // The reader keeps what was read past the hello; the lines go on from there.
        let (read, mut write) = tokio::io::split(r);
        let mut read = BufReader::new(read);
        let writer = async {
            while let Some(m) = rx.recv().await {
                if write.write_all(&wire::encode(&m)).await.is_err() {
                    break;
                }
            }
        };
        let reader = async {
            loop {
                let line = match timeout(2 * HEARTBEAT, read_line(&mut read)).await {
                    Ok(Ok(Some(l))) => l,
                    Ok(Ok(None)) => return "the agent closed its link".to_string(),
                    Ok(Err(e)) => return format!("link error: {e}"),
                    Err(_) => return format!("no word from the agent for {:?}", 2 * HEARTBEAT),
                };
                match wire::decode::<FromAgent>(&line) {
                    Ok(FromAgent::Ping) => {
                        let _ = tx.send(ToAgent::Pong).await;
                    }
                    Ok(FromAgent::Opened { id, peer, local }) => {
                        self.answered(&name, id, Ok((peer, local)));
                    }
                    Ok(FromAgent::Failed { id, reason }) => self.answered(&name, id, Err(reason)),
                    Err(e) => return format!("the agent said something else: {e}"),
                }
            }
        };
        let why = tokio::select! {
            why = reader => why,
            () = writer => "the link could not be written".to_string(),
            () = end.cancelled() => "its token was revoked (a reload changed agents.tokens)".to_string(),
        };
        self.unregister(&name, id);
        info!(%addr, agent = %name, reason = %why, "agent disconnected");
    }
}

/// Removes a request from the hub when its dialer is done with it.
struct Forget<'a>(&'a Hub, (String, u64));

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.0.pending).remove(&self.1);
    }
}

/// The hello line, read a byte at a time: on a stream's connection the bytes after it are
/// the stream's, and none may be taken into a buffer (they come from rustls' plaintext
/// buffer, so this costs no system call per byte).
async fn read_hello(tls: &mut TlsStream<Batched>) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    while line.len() <= MAX_LINE {
        let b = tls.read_u8().await?;
        line.push(b);
        if b == b'\n' {
            return Ok(line);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "a hello longer than a line may be",
    ))
}

/// One line, at most [`MAX_LINE`] bytes; `None` at the end of the stream.
pub(super) async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a line too long, or cut off",
        ));
    }
    Ok(Some(line))
}
