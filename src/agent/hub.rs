//! The edge's side of the agents: it accepts their TLS connections, checks each link's
//! credential, keeps the links by agent name, and opens streams through them
//! ([`Hub::dial`]): a request on the link, then the connection the agent dials back with.
//! For active mode toward a server, [`Hub::listen`] has the agent listen inside; the
//! server's connection arrives the same way, as a stream ([`Inside`]).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
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

use fxprelay_core::agent::listen::MAX_REPORTED;
use fxprelay_core::agent::wire::{
    self, FromAgent, Hello, LISTEN_PROTOCOL, MAX_LINE, MIN_PROTOCOL, PROTOCOL, Refused, ToAgent,
};

/// A stream the agent opened: the agent's connection to the edge, carrying the bytes of
/// its connection to the target. Counted while open (`fxprelay_agent_streams`) and by
/// the bytes it carries (`fxprelay_agent_bytes_total`).
pub struct AgentStream {
    inner: TlsStream<Batched>,
    meter: crate::metrics::AgentMeter,
    /// Its link's count of open streams, decremented when it is dropped.
    link_open: Arc<AtomicUsize>,
    /// The link it was asked for on: the agent (one process, one host) that carries it.
    link: u64,
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
    fn new(
        inner: TlsStream<Batched>,
        agent: &str,
        (link, link_open): (u64, Arc<AtomicUsize>),
    ) -> AgentStream {
        link_open.fetch_add(1, Ordering::Relaxed);
        AgentStream {
            inner,
            meter: crate::metrics::AgentMeter::open(agent),
            link_open,
            link,
        }
    }

    /// The link of the agent that carries this stream: an active-mode data connection
    /// of the same session must be listened for by that agent ([`Hub::listen`]), on the
    /// host the server knows as its client.
    pub fn link(&self) -> u64 {
        self.link
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
    /// A name that no agent may link with (not in `agents.tokens`): nothing to wait for.
    #[error("no agent is named {0} here (agents.tokens)")]
    Unknown(String),
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
    #[error(
        "agent {agent} runs version {version}, too old to listen for active-mode data connections: upgrade it"
    )]
    TooOld { agent: String, version: String },
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
    /// The protocol version it speaks (listens need [`LISTEN_PROTOCOL`]).
    protocol: u32,
    tx: mpsc::Sender<ToAgent>,
}

/// What a link answered to a request.
enum Answer {
    /// [`FromAgent::Opened`]: the agent's connection's far and near ends.
    Opened(SocketAddr, SocketAddr),
    /// [`FromAgent::Listening`]: where it listens.
    Listening(SocketAddr),
}

/// What a link says about a listen after its first answer.
enum Note {
    /// A connection from someone else than the server, refused by the agent.
    Intruder(SocketAddr),
    /// The agent gave up the port (its wait ran out, or it could not dial back).
    Failed(String),
}

/// Notes a listen keeps unread; beyond, the agent's reports are dropped (it reports at
/// most [`MAX_REPORTED`] intruders per port anyway).
const NOTES: usize = MAX_REPORTED as usize + 2;

/// A request waiting for its agent: the link's answer, then the stream's connection.
struct Pending {
    /// The link asked on: if it ends first, the request fails at once.
    link: u64,
    nonce: String,
    answer: Option<oneshot::Sender<Result<Answer, String>>>,
    stream: Option<oneshot::Sender<TlsStream<Batched>>>,
    /// A listen's later news.
    notes: Option<mpsc::Sender<Note>>,
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
    thefts: AtomicUsize,
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

    /// Why no link of `name` can take a request: unknown, or known and not linked.
    fn absent(&self, name: &str) -> DialError {
        if self.knows(name) {
            DialError::NotConnected(name.to_owned())
        } else {
            DialError::Unknown(name.to_owned())
        }
    }

    /// Whether agent `name` has a link up now.
    pub fn connected(&self, name: &str) -> bool {
        lock(&self.links).get(name).is_some_and(|l| !l.is_empty())
    }

    /// Links refused since start (a wrong name, token or protocol).
    pub fn refusals(&self) -> usize {
        self.refusals.load(Ordering::Relaxed)
    }

    /// Connections to agents' active-mode ports from someone other than the server,
    /// as the agents reported them, since start.
    pub fn thefts(&self) -> usize {
        self.thefts.load(Ordering::Relaxed)
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
        self.dial_on(name, None, target, limit).await
    }

    /// [`Hub::dial`] through link `on` while it is up (a data connection of a session
    /// whose control connection it carries: servers accept a passive data connection
    /// only from their control connection's client address, the same agent's host).
    pub async fn dial_on(
        &self,
        name: &str,
        on: Option<u64>,
        target: &str,
        limit: Duration,
    ) -> Result<(AgentStream, SocketAddr, SocketAddr), DialError> {
        let (link, tx, streams) = {
            let links = lock(&self.links);
            let link = links
                .get(name)
                .and_then(|ls| pick(ls, on))
                .ok_or_else(|| self.absent(name))?;
            (link.id, link.tx.clone(), link.streams.clone())
        };
        let (key, nonce, answer, stream_rx) = self.pending_for(name, link, None);
        // Whatever happens below, the request does not outlive this call.
        let id = key.1;
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
            let (peer, local) = match answer
                .await
                .map_err(|_| failed("the agent's link closed".into()))?
                .map_err(failed)?
            {
                Answer::Opened(peer, local) => (peer, local),
                Answer::Listening(_) => return Err(failed("a confused answer".into())),
            };
            let stream = stream_rx
                .await
                .map_err(|_| failed("the agent's link closed".into()))?;
            Ok((stream, peer, local))
        };
        let (stream, peer, local) = timeout(limit, both).await.map_err(|_| late())??;
        Ok((AgentStream::new(stream, name, (link, streams)), peer, local))
    }

    /// A request of link `link` in flight: its key, nonce, and where its answer and
    /// stream arrive (a listen's later notes too, when `notes` is given).
    #[allow(clippy::type_complexity)]
    fn pending_for(
        &self,
        name: &str,
        link: u64,
        notes: Option<mpsc::Sender<Note>>,
    ) -> (
        (String, u64),
        String,
        oneshot::Receiver<Result<Answer, String>>,
        oneshot::Receiver<TlsStream<Batched>>,
    ) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let (answer_tx, answer_rx) = oneshot::channel();
        let (stream_tx, stream_rx) = oneshot::channel();
        let key = (name.to_owned(), id);
        lock(&self.pending).insert(
            key.clone(),
            Pending {
                link,
                nonce: nonce.clone(),
                answer: Some(answer_tx),
                stream: Some(stream_tx),
                notes,
            },
        );
        (key, nonce, answer_rx, stream_rx)
    }

    /// Has agent `name` listen inside for `server`'s active-mode data connection, on the
    /// link `link` (the one that carries the session's control connection: the agent
    /// whose address the server knows as its client's; if that link was lost, the least
    /// busy of the name's, most often the same agent linked again); the agent keeps the port for
    /// at most `wait`. Answers once the agent listens (within `limit`); the server's
    /// connection is then awaited with [`Inside::accepted`]. Dropping the [`Inside`]
    /// closes the port on the agent.
    pub async fn listen(
        self: &Arc<Self>,
        name: &str,
        link: u64,
        server: SocketAddr,
        wait: Duration,
        limit: Duration,
    ) -> Result<Inside, DialError> {
        let (link, tx, streams) = {
            let links = lock(&self.links);
            let ls = links.get(name).ok_or_else(|| self.absent(name))?;
            let l = pick(ls, Some(link)).ok_or_else(|| DialError::NotConnected(name.to_owned()))?;
            if l.protocol < LISTEN_PROTOCOL {
                return Err(DialError::TooOld {
                    agent: name.to_owned(),
                    version: l.version.clone(),
                });
            }
            (l.id, l.tx.clone(), l.streams.clone())
        };
        let (notes_tx, notes) = mpsc::channel(NOTES);
        let (key, nonce, answer, stream) = self.pending_for(name, link, Some(notes_tx));
        // From here the handle owns the request: dropped on any path, it forgets it
        // and tells the agent to close the port.
        let mut inside = Inside {
            hub: self.clone(),
            key,
            tx,
            addr: None,
            server,
            stream: Some(stream),
            notes,
            link: (link, streams),
            asked: false,
            _gauge: crate::metrics::AgentListen::open(name),
        };
        let id = inside.key.1;
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let ask = ToAgent::Listen {
            id,
            server,
            nonce,
            wait_ms,
        };
        if inside.tx.send(ask).await.is_err() {
            return Err(DialError::NotConnected(name.to_owned()));
        }
        inside.asked = true;
        let failed = |reason: String| DialError::Failed {
            agent: name.to_owned(),
            target: format!("a listening port for {server}"),
            reason,
        };
        let answered = timeout(limit, answer)
            .await
            .map_err(|_| DialError::Timeout {
                agent: name.to_owned(),
                target: format!("a listening port for {server}"),
                after: limit,
            })?;
        match answered
            .map_err(|_| failed("the agent's link closed".into()))?
            .map_err(failed)?
        {
            Answer::Listening(at) => inside.addr = Some(at),
            Answer::Opened(..) => return Err(failed("a confused answer".into())),
        }
        Ok(inside)
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

    /// The answer on link `link` to request `id`; a failure after the answer is a
    /// listen's note (the agent gave up its port).
    fn answered(&self, name: &str, link: u64, id: u64, result: Result<Answer, String>) {
        let mut pending = lock(&self.pending);
        let Some(p) = pending.get_mut(&(name.to_owned(), id)) else {
            return;
        };
        if p.link != link {
            // Another link's request: a confused or hostile agent may not answer it.
            return;
        }
        match (p.answer.take(), result) {
            (Some(tx), result) => {
                let _ = tx.send(result);
            }
            (None, Err(reason)) => {
                if let Some(notes) = &p.notes {
                    let _ = notes.try_send(Note::Failed(reason));
                }
                // No stream follows.
                p.stream = None;
            }
            (None, Ok(_)) => {}
        }
    }

    /// Link `link` reports an intruder on listen `id`'s port.
    fn intruder(&self, name: &str, link: u64, id: u64, peer: SocketAddr) {
        let pending = lock(&self.pending);
        let Some(p) = pending.get(&(name.to_owned(), id)) else {
            return;
        };
        if p.link != link {
            return;
        }
        if let Some(notes) = &p.notes {
            self.thefts.fetch_add(1, Ordering::Relaxed);
            crate::metrics::agent_port_theft(name);
            let _ = notes.try_send(Note::Intruder(peer));
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
        } else if !(MIN_PROTOCOL..=PROTOCOL).contains(&protocol) {
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
                protocol,
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
                    Ok(FromAgent::Opened {
                        id: req,
                        peer,
                        local,
                    }) => {
                        self.answered(&name, id, req, Ok(Answer::Opened(peer, local)));
                    }
                    Ok(FromAgent::Listening { id: req, addr }) => {
                        self.answered(&name, id, req, Ok(Answer::Listening(addr)));
                    }
                    Ok(FromAgent::Intruder { id: req, peer }) => {
                        self.intruder(&name, id, req, peer);
                    }
                    Ok(FromAgent::Failed { id: req, reason }) => {
                        self.answered(&name, id, req, Err(reason));
                    }
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

/// An agent listening inside for one active-mode data connection ([`Hub::listen`]).
/// Dropped before the server's connection arrived, it tells the agent to close the port.
pub struct Inside {
    hub: Arc<Hub>,
    key: (String, u64),
    tx: mpsc::Sender<ToAgent>,
    addr: Option<SocketAddr>,
    server: SocketAddr,
    stream: Option<oneshot::Receiver<TlsStream<Batched>>>,
    notes: mpsc::Receiver<Note>,
    link: (u64, Arc<AtomicUsize>),
    /// The agent was asked and has not handed over the server's connection: its port
    /// may be open.
    asked: bool,
    /// `fxprelay_agent_listens`, while the port may be open.
    _gauge: crate::metrics::AgentListen,
}

/// Why no connection came through an agent's listening port.
#[derive(Debug, thiserror::Error)]
pub enum InsideError {
    #[error("no data connection from {server} to agent {agent}'s port {at} within {after:?}")]
    Timeout {
        agent: String,
        server: IpAddr,
        at: SocketAddr,
        after: Duration,
    },
    #[error("agent {agent} gave up its port {at}: {reason}")]
    Failed {
        agent: String,
        at: SocketAddr,
        reason: String,
    },
}

impl std::fmt::Debug for Inside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inside")
            .field("agent", &self.key.0)
            .field("id", &self.key.1)
            .field("addr", &self.addr)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Inside {
    /// Where the agent listens: what the `PORT` to the server names.
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .unwrap_or_else(|| SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0))
    }

    /// The server's connection, carried to the edge as a stream, within `within`;
    /// connections from anyone else the agent refused are counted as port theft under
    /// `scope`.
    pub async fn accepted(
        mut self,
        scope: &crate::metrics::Scope,
        within: Duration,
    ) -> Result<AgentStream, InsideError> {
        let agent = self.key.0.clone();
        let at = self.addr();
        let server = self.server.ip();
        let deadline = tokio::time::Instant::now() + within;
        let Some(mut stream) = self.stream.take() else {
            return Err(InsideError::Failed {
                agent,
                at,
                reason: "already taken".into(),
            });
        };
        loop {
            tokio::select! {
                s = &mut stream => {
                    return match s {
                        Ok(s) => {
                            // Arrived: the agent's port is closed already.
                            self.asked = false;
                            Ok(AgentStream::new(s, &agent, self.link.clone()))
                        }
                        Err(_) => {
                            let reason = match self.notes.try_recv() {
                                Ok(Note::Failed(reason)) => reason,
                                _ => "the agent's link closed".into(),
                            };
                            Err(InsideError::Failed { agent, at, reason })
                        }
                    };
                }
                Some(note) = self.notes.recv() => match note {
                    Note::Intruder(peer) => {
                        crate::metrics::rejected(scope, crate::metrics::Rejection::PortTheft);
                        warn!(%agent, %peer, expect = %server, port = at.port(), "the agent refused a data connection from an unexpected address");
                    }
                    Note::Failed(reason) => return Err(InsideError::Failed { agent, at, reason }),
                },
                () = tokio::time::sleep_until(deadline) => {
                    return Err(InsideError::Timeout { agent, server, at, after: within });
                }
            }
        }
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        lock(&self.hub.pending).remove(&self.key);
        if self.asked {
            // The port may still be open on the agent: close it now rather than at the
            // end of its wait (which ends it anyway if even this word is lost).
            let close = ToAgent::Close { id: self.key.1 };
            if let Err(mpsc::error::TrySendError::Full(close)) = self.tx.try_send(close)
                && let Ok(rt) = tokio::runtime::Handle::try_current()
            {
                let tx = self.tx.clone();
                rt.spawn(async move { tx.send(close).await });
            }
        }
    }
}

/// The link a request goes to: `on` while it is up; else (none asked for, or it was lost
/// and its agent may have linked again since: most often the same host) the least busy.
fn pick(links: &[Link], on: Option<u64>) -> Option<&Link> {
    on.and_then(|id| links.iter().find(|l| l.id == id))
        .or_else(|| {
            links
                .iter()
                .min_by_key(|l| l.streams.load(Ordering::Relaxed))
        })
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
