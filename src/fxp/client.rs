//! A small async FTP client for the engine: one control connection, every read under a
//! timeout, replies assembled by [`crate::proto::reply::ReplyAssembler`].
//!
//! Passive addresses come back as [`Announced`], a type only this module can make: the
//! only way to send `PORT`/`EPRT` is [`Client::port_to`] with an `Announced` that another
//! server returned, so the engine cannot aim a server at an address of its own choosing
//! (bounce safety, RFC 2577). An `Announced` always names the announcing server's own
//! control address and a port of 1024 or above, whatever its `227` said: a malicious
//! server cannot aim the other one (or the engine) at a third host or a service port.
//!
//! TLS (`ftpes://`, `ftps://`): the control connection is upgraded after `AUTH TLS` (or
//! is TLS from the first byte), then `PBSZ 0` and `PROT P` protect data connections.
//! Each session has its own TLS session cache ([`tls::Upstream::for_session`]), so its
//! data connections resume its control connection's session, as vsftpd and proftpd
//! require.
//!
//! A server behind an agent (`?via=`) is reached through it ([`Dialer`]): the control
//! connection, and the data connections the engine makes itself (a listing, the relay).
//! Its address is then the one the agent connected to, in the agent's network.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::FramedRead;
use tracing::debug;

use super::client_stream::ClientStream;
use super::digest;
use super::url::{FtpUrl, Security};
use crate::agent::{Conn, DialError, DialFailure, Dialer};
use crate::codec::{LineCodec, LineError, LineWriter};
use crate::data::socket;
use crate::net::{AllowList, Denied, OwnSockets, SelfTarget};
use crate::proto::addr::{
    format_eprt_command, format_port_command, parse_epsv_reply, parse_pasv_reply,
};
use crate::proto::reply::{Reply, ReplyAssembler};
use crate::tls::{self, TlsConnector};

/// Longest control line and reply accepted from a server.
const MAX_LINE: usize = 8192;
const MAX_REPLY: usize = 256 * 1024;
/// Largest directory listing read for a tree copy.
const MAX_LISTING: usize = 64 * 1024 * 1024;
/// How long a server gets to answer `PORT`/`EPRT` between near servers (the engine grows
/// it with both servers' round trips and with each loss of the file, see `direct`). Most
/// answer at once; pyftpdlib only once it has connected to the address, one round trip
/// between the two servers. pyftpdlib 1.5 may also lose that connection and never answer
/// (see `direct`): the engine then starts afresh after this, not after the session
/// timeout (a lost SYN, resent after 1 s, costs a fresh try of the same method with
/// more patience, not the file). Measured: at 500 ms such losses were a third of a
/// 200-file tree's time, and at 30 ms each still held its transfer ~35 ms, the rest of
/// the gap to lftp; pyftpdlib answers in under a millisecond on loopback, and a slow
/// answer taken for a loss costs one login and one more try, with twice the patience.
pub const PORT_REPLY: Duration = Duration::from_millis(10);
/// How recently a session must have answered to be reused without a `TYPE I` round trip
/// (see [`Client::reset_for_reuse`]).
const REUSE_FRESH: Duration = Duration::from_millis(50);
/// How long `QUIT` waits for its `221` and `ABOR` for its answer (grown with the round
/// trip): a live server answers at once, and the connection ends either way. A session
/// whose server stopped reading it (pyftpdlib, see `direct`) would otherwise hold up the
/// end of a whole tree copy.
const QUIT_WAIT: Duration = Duration::from_millis(50);
const ABOR_WAIT: Duration = Duration::from_millis(250);
/// Round trips [`Client::patience`] allows: a login (greeting, `USER`, `PASS`, `TYPE`,
/// `FEAT`) and a `SIZE` with room to spare.
pub const RTT_PATIENCE: u32 = 10;
/// Lowest data port a passive reply may name: below are well-known services (SMTP, ...)
/// a bounced `PORT` could attack, and no server listens for data there.
pub const MIN_DATA_PORT: u16 = 1024;

/// Why a step with a server failed. Refusals carry the server's own code and text.
#[derive(Debug, thiserror::Error)]
pub enum FtpError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {host}: {source}")]
    Connect {
        host: String,
        source: std::io::Error,
    },
    #[error("{what}: no answer within {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("{cmd} refused: {code} {text}")]
    Refused {
        cmd: String,
        code: u16,
        text: String,
    },
    #[error("the server closed the control connection ({during})")]
    Closed { during: String },
    #[error("bad reply to {cmd}: {text}")]
    BadReply { cmd: String, text: String },
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("data connection: {0}")]
    Data(std::io::Error),
    /// A TLS handshake failed; `untrusted`: because of the server's certificate.
    #[error("TLS handshake on the {channel} connection failed: {source}{}",
        if *.untrusted { " (the server's certificate is not trusted)" } else { "" })]
    Tls {
        channel: &'static str,
        source: std::io::Error,
        untrusted: bool,
    },
    /// The engine's TLS client could not be set up (an unreadable `--ca` file, say).
    #[error("TLS setup: {0}")]
    TlsSetup(String),
    #[error("{host} is not allowed: {why}")]
    Denied { host: String, why: Denied },
    /// The server's agent could not open the connection (it has no link, say).
    #[error("{0}")]
    Agent(DialError),
    /// A control or data address that is the proxy itself (its admin endpoint, a
    /// listener, a data port).
    #[error("refused: {0}")]
    SelfTarget(SelfTarget),
    /// A passive reply naming a port below 1024: never passed on (FTP bounce, RFC 2577).
    #[error("{cmd} announced data port {port}, below 1024: refused (FTP bounce protection)")]
    PrivilegedPort { cmd: &'static str, port: u16 },
    #[error("{0}")]
    Other(String),
}

impl FtpError {
    /// The server's reply code, when the server refused something.
    pub fn code(&self) -> Option<u16> {
        match self {
            FtpError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The same on every attempt: an untrusted certificate, a TLS setup that cannot work.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            FtpError::Tls {
                untrusted: true,
                ..
            } | FtpError::TlsSetup(_)
        )
    }

    /// A handshake failure, classified.
    fn tls(channel: &'static str, source: std::io::Error) -> FtpError {
        let untrusted = source
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .is_some_and(|e| {
                matches!(
                    e,
                    rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
                )
            });
        FtpError::Tls {
            channel,
            source,
            untrusted,
        }
    }
}

/// How the engine checks TLS servers' certificates: the system's trust roots plus
/// optional extra roots, or no check at all (`verify: false`). The rustls configuration
/// is built on first use, off the async runtime (it reads the system's certificates and,
/// for the command line's `--ca`, a file), and shared by every session made with these
/// options.
#[derive(Clone)]
pub struct TlsPolicy {
    pub verify: bool,
    pub ca: ExtraRoots,
    built: Arc<tokio::sync::OnceCell<Result<tls::Upstream, String>>>,
}

/// Where a [`TlsPolicy`]'s extra trust roots come from.
#[derive(Debug, Clone, Default)]
pub enum ExtraRoots {
    /// The system's roots only.
    #[default]
    None,
    /// A PEM file named by the local user (`fxprelay fxp --ca FILE`), read when first
    /// needed. Never from a remote caller: the API names configured bundles instead.
    File(PathBuf),
    /// Certificates the proxy read when it loaded its configuration (`fxp.ca_bundles`,
    /// a listener's `tls.upstream.ca`).
    Loaded(tls::CaCerts),
}

impl TlsPolicy {
    pub fn new(verify: bool, ca: ExtraRoots) -> TlsPolicy {
        TlsPolicy {
            verify,
            ca,
            built: Arc::default(),
        }
    }

    async fn upstream(&self) -> Result<&tls::Upstream, FtpError> {
        self.built
            .get_or_init(|| {
                let (verify, ca) = (self.verify, self.ca.clone());
                async move {
                    let build = move || {
                        let ca = match ca {
                            ExtraRoots::None => None,
                            ExtraRoots::File(path) => Some(tls::CaCerts::load(&path)?),
                            ExtraRoots::Loaded(certs) => Some(certs),
                        };
                        tls::Upstream::new(verify, ca.as_ref())
                    };
                    match tokio::task::spawn_blocking(build).await {
                        Ok(built) => built.map_err(|e| e.to_string()),
                        Err(e) => Err(format!("cannot build the TLS client: {e}")),
                    }
                }
            })
            .await
            .as_ref()
            .map_err(|e| FtpError::TlsSetup(e.clone()))
    }
}

impl Default for TlsPolicy {
    /// Certificates checked against the system's trust roots.
    fn default() -> Self {
        TlsPolicy::new(true, ExtraRoots::None)
    }
}

impl std::fmt::Debug for TlsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPolicy")
            .field("verify", &self.verify)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// What protects a session's data connections: nothing, or TLS with the engine as
/// client, resuming the control connection's session. Cheap to clone, so a handshake
/// can run while the session reads its replies.
#[derive(Clone)]
pub struct DataTls(Option<(TlsConnector, ServerName<'static>)>);

impl DataTls {
    /// `tcp` as the data connection: through a TLS handshake (within `limit`) under
    /// `PROT P`, as it is otherwise.
    pub async fn wrap(self, tcp: Conn, limit: Duration) -> Result<ClientStream, FtpError> {
        match self.0 {
            Some((connector, name)) => handshake(&connector, name, tcp, limit, "data").await,
            None => Ok(ClientStream::Plain(tcp)),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.0.is_some()
    }
}

/// A TLS session's TLS client state.
struct Secure {
    connector: TlsConnector,
    name: ServerName<'static>,
    /// `PROT P` in force (else `PROT C`).
    private: bool,
}

/// What [`Client::size_and_pasv`] read: the answer to `SIZE`, and to `PASV`/`EPSV`.
pub type SizeAndPassive = (Result<Option<u64>, FtpError>, Result<Announced, FtpError>);

/// A data address a server announced (`227`/`229`) in this session: only
/// [`Client::pasv`] makes one, only [`Client::port_to`] uses it, once. Its IP is the
/// server's control address and its port is at least [`MIN_DATA_PORT`].
#[derive(Debug)]
pub struct Announced {
    addr: SocketAddr,
    extended: bool,
}

impl Announced {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// What `FEAT` listed (upper-cased feature names and their arguments).
#[derive(Debug, Clone, Default)]
pub struct Features {
    lines: Vec<String>,
}

impl Features {
    fn parse(reply: &Reply) -> Features {
        let text = String::from_utf8_lossy(&reply.raw);
        let lines = text
            .lines()
            .skip(1)
            .filter(|l| l.starts_with(' '))
            .map(|l| l.trim().to_ascii_uppercase())
            .collect();
        Features { lines }
    }

    /// The feature lines, upper-cased and trimmed.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    /// Whether a feature line is `name` or starts with `name ` (`REST STREAM`, `MLST ...`).
    pub fn has(&self, name: &str) -> bool {
        self.lines
            .iter()
            .any(|l| l == name || l.strip_prefix(name).is_some_and(|r| r.starts_with(' ')))
    }
}

/// One logged-in control connection.
pub struct Client {
    reader: FramedRead<ReadHalf<ClientStream>, LineCodec>,
    /// Every command is flushed onto the wire (a TLS record could otherwise sit in
    /// rustls' buffer) within `timeout`.
    writer: LineWriter<WriteHalf<ClientStream>>,
    /// Over TLS: the connector and the data protection in force.
    secure: Option<Secure>,
    asm: ReplyAssembler,
    peer: SocketAddr,
    timeout: Duration,
    /// `FEAT` as answered after login.
    pub features: Features,
    host: String,
    /// The proxy's own sockets, which no data address may be.
    own: Option<Arc<OwnSockets>>,
    /// Commands sent whose final (non-1xx) reply has not been read: a session is only
    /// fit for another file when this is 0 (a reply still on its way would answer the
    /// next file's command).
    outstanding: usize,
    /// `SSCN ON` in force.
    sscn: bool,
    /// The quickest command-to-reply time seen on this connection (a command sent with
    /// nothing else outstanding): the short bounds of [`Client::patience`] grow with it,
    /// so a distant server is not taken for a silent one.
    rtt: Option<Duration>,
    /// When the command now awaited went out, if nothing else was outstanding.
    sent_at: Option<Instant>,
    /// When the last final reply arrived: a session that answered moments ago needs no
    /// round trip to prove it still does ([`Client::reset_for_reuse`]).
    answered_at: Option<Instant>,
    /// The connection's local port: tells one session's lines from another's in the log.
    local_port: u16,
    /// How this server is reached: straight, or through its agent.
    dialer: Dialer,
}

impl Client {
    /// Connects to `url`'s server, reads the greeting, logs in, sets `TYPE I` and asks
    /// `FEAT`. Every step is bounded by `limit`.
    pub async fn open(url: &FtpUrl, limit: Duration) -> Result<Client, FtpError> {
        let tls = TlsPolicy::default();
        Self::open_checked(url, limit, None, &tls, None, None, &Dialer::direct()).await
    }

    /// [`Client::open`], connecting only where `allow` admits the URL's host (the API's
    /// and SITE commands' `fxp.allow`); checked after DNS so a name cannot smuggle in an
    /// address. A TLS URL's server must show a certificate `tls` trusts. With `own`,
    /// neither the control connection nor a passive data address may be one of the
    /// proxy's own sockets. With `virtual_host`, the server is asked for that name with
    /// RFC 7151 `HOST` first. `dialer` reaches the server (through its agent, the
    /// address the agent connected to is the one `allow` checks; `own` does not apply:
    /// it is an address of the agent's network).
    pub async fn open_checked(
        url: &FtpUrl,
        limit: Duration,
        allow: Option<&AllowList>,
        tls: &TlsPolicy,
        own: Option<&Arc<OwnSockets>>,
        virtual_host: Option<&str>,
        dialer: &Dialer,
    ) -> Result<Client, FtpError> {
        let host = url.host_port();
        let secure = if url.security.is_tls() {
            let name =
                tls::server_name(&url.host).map_err(|e| FtpError::TlsSetup(e.to_string()))?;
            Some((tls.upstream().await?.for_session(), name))
        } else {
            None
        };
        let own = own.filter(|_| dialer.agent().is_none());
        let direct = connect(&url.host, url.port, &host, limit, allow, own);
        let tcp = match dialer.dial(&host, limit, direct).await {
            Ok(conn) => conn,
            Err(DialFailure::Direct(e)) => return Err(e),
            Err(DialFailure::Agent(e)) => return Err(FtpError::Agent(e)),
        };
        let peer = tcp.addrs()?.0;
        if let (Some(list), true) = (allow, tcp.is_agent()) {
            list.admits(&url.host, peer.ip())
                .map_err(|why| FtpError::Denied {
                    host: peer.to_string(),
                    why,
                })?;
        }
        // Its data connections go through the agent that carries this one: the server
        // takes them only from its control connection's client address.
        let dialer = dialer.pinned(tcp.link());
        let stream = match (&secure, url.security) {
            (Some((connector, name)), Security::Implicit) => {
                handshake(connector, name.clone(), tcp, limit, "control").await?
            }
            _ => ClientStream::Plain(tcp),
        };
        let mut c = Client::over(stream, None, peer, limit, host, own.cloned());
        c.dialer = dialer;
        let mut greeting = c.read_reply("greeting").await?;
        while greeting.class() == 1 {
            greeting = c.read_reply("greeting").await?;
        }
        c.ok(greeting, "connect", |code| code == 220)?;
        if let Some(name) = virtual_host {
            // Before AUTH and USER (RFC 7151): the server picks the host, its
            // certificate and its users. A refusal is the server's view of the name; the
            // login that follows says whether it matters.
            let r = c.command(format!("HOST {name}").as_bytes()).await?;
            if r.class() != 2 {
                debug!(host = %c.host, code = r.code, "the server refused HOST {name}");
            }
        }
        if let Some((connector, name)) = secure {
            if url.security == Security::Explicit {
                c.simple(b"AUTH TLS", |code| code == 234).await?;
                c = c.start_tls(connector, name).await?;
            } else {
                c.secure = Some(Secure {
                    connector,
                    name,
                    private: false,
                });
            }
        }
        c.login(&url.user, url.login_password()).await?;
        if c.secure.is_some() {
            // vsftpd takes PBSZ/PROT only once logged in.
            c.simple(b"PBSZ 0", |code| code == 200).await?;
            c.set_private(true).await?;
        }
        c.simple(b"TYPE I", |c| c == 200).await?;
        let feat = c.command(b"FEAT").await?;
        if feat.code == 211 {
            c.features = Features::parse(&feat);
        }
        Ok(c)
    }

    fn over(
        stream: ClientStream,
        secure: Option<Secure>,
        peer: SocketAddr,
        limit: Duration,
        host: String,
        own: Option<Arc<OwnSockets>>,
    ) -> Client {
        let local_port = stream.conn().addrs().map_or(0, |(_, a)| a.port());
        let (r, w) = tokio::io::split(stream);
        Client {
            local_port,
            own,
            reader: FramedRead::new(r, LineCodec::new(MAX_LINE)),
            writer: LineWriter::new(w, limit, "server"),
            secure,
            asm: ReplyAssembler::new(MAX_REPLY),
            peer,
            timeout: limit,
            features: Features::default(),
            host,
            outstanding: 0,
            sscn: false,
            rtt: None,
            sent_at: None,
            answered_at: None,
            dialer: Dialer::direct(),
        }
    }

    /// The TLS handshake after `234` to `AUTH TLS`. Anything the server sent after the
    /// `234` would be plaintext posing as protected: refused (the STARTTLS injection
    /// class, CVE-2011-0411).
    async fn start_tls(
        self,
        connector: TlsConnector,
        name: ServerName<'static>,
    ) -> Result<Client, FtpError> {
        if !self.reader.read_buffer().is_empty() || self.asm.in_progress() {
            return Err(FtpError::BadReply {
                cmd: "AUTH TLS".into(),
                text: "the server sent more after 234, before the TLS handshake".into(),
            });
        }
        let Client {
            reader,
            writer,
            peer,
            timeout: limit,
            host,
            own,
            dialer,
            ..
        } = self;
        let ClientStream::Plain(tcp) = reader.into_inner().unsplit(writer.into_inner()) else {
            return Err(FtpError::Other("AUTH TLS on a TLS connection".into()));
        };
        let stream = handshake(&connector, name.clone(), tcp, limit, "control").await?;
        let secure = Secure {
            connector,
            name,
            private: false,
        };
        let mut c = Client::over(stream, Some(secure), peer, limit, host, own);
        c.dialer = dialer;
        Ok(c)
    }

    /// Whether the control connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.secure.is_some()
    }

    /// `PROT P` (`private`) or `PROT C` on a TLS session, sent only when that is not in
    /// force already. A plain session has clear data only: asking it for `private` is an
    /// error.
    pub async fn set_private(&mut self, private: bool) -> Result<(), FtpError> {
        match &self.secure {
            None if private => Err(FtpError::Other(
                "data protection asked of a plain FTP session".into(),
            )),
            None => Ok(()),
            Some(s) if s.private == private => Ok(()),
            Some(_) => {
                let cmd: &[u8] = if private { b"PROT P" } else { b"PROT C" };
                self.simple(cmd, |c| c == 200).await?;
                if let Some(s) = &mut self.secure {
                    s.private = private;
                }
                Ok(())
            }
        }
    }

    /// How this session's data connections are protected now (see [`DataTls::wrap`]).
    pub fn data_tls(&self) -> DataTls {
        DataTls(
            self.secure
                .as_ref()
                .filter(|s| s.private)
                .map(|s| (s.connector.clone(), s.name.clone())),
        )
    }

    /// The server's control address, as connected.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The agent this server is reached through, if any.
    pub fn agent(&self) -> Option<&str> {
        self.dialer.agent()
    }

    /// The engine's own data connection to `port` of this server's control address (so
    /// a server cannot point the engine anywhere else), as the control connection was
    /// made: straight, or through the server's agent; within the session timeout.
    pub async fn connect_data(&self, port: u16) -> Result<Conn, FtpError> {
        let addr = SocketAddr::new(self.peer.ip(), port);
        let limit = self.timeout;
        let direct = async {
            match timeout(limit, socket::connect(addr)).await {
                Ok(r) => r.map_err(FtpError::Data),
                Err(_) => Err(FtpError::Timeout {
                    what: format!("data connection to {addr}"),
                    after: limit,
                }),
            }
        };
        match self.dialer.dial(&addr.to_string(), limit, direct).await {
            Ok(conn) => Ok(conn),
            Err(DialFailure::Direct(e)) => Err(e),
            Err(DialFailure::Agent(e)) => Err(FtpError::Agent(e)),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    async fn login(&mut self, user: &str, pass: &str) -> Result<(), FtpError> {
        let r = self.command(format!("USER {user}").as_bytes()).await?;
        let r = match r.code {
            230 | 202 => return Ok(()),
            331 => {
                // Never logged, never echoed in an error: the command is named "PASS" only.
                self.send(format!("PASS {pass}").as_bytes()).await?;
                self.read_final("PASS").await?
            }
            _ => return Err(refused("USER", &r)),
        };
        match r.code {
            230 | 202 => Ok(()),
            332 => Err(refused("PASS (ACCT needed, not supported)", &r)),
            _ => Err(refused("PASS", &r)),
        }
    }

    /// Sends one command line (no terminator in `line`).
    pub async fn send(&mut self, line: &[u8]) -> Result<(), FtpError> {
        self.send_lines(&[line]).await
    }

    /// Sends command lines pipelined (each without its terminator) in one write: the
    /// server reads them in one go and answers them in order, and neither side is woken
    /// once per line.
    pub async fn send_lines(&mut self, lines: &[&[u8]]) -> Result<(), FtpError> {
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 2).sum());
        for line in lines {
            if verb_of(line) != "PASS" {
                debug!(host = %self.host, session = self.local_port, "> {}", String::from_utf8_lossy(line));
            }
            buf.extend_from_slice(line);
            buf.extend_from_slice(b"\r\n");
        }
        if self.outstanding == 0 {
            self.sent_at = Some(Instant::now());
        }
        self.outstanding += lines.len();
        self.writer.send(&buf).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => {
                self.timed_out(&lines.first().map(|l| verb_of(l)).unwrap_or_default())
            }
            _ => FtpError::Io(e),
        })
    }

    /// A short bound for a reply that should come at once (`base` on a near server),
    /// widened to [`RTT_PATIENCE`] times this connection's quickest round trip: on a link
    /// of 150 ms a login and a `SIZE` take about a second.
    pub fn patience(&self, base: Duration) -> Duration {
        base.max(self.rtt.unwrap_or_default().saturating_mul(RTT_PATIENCE))
            .min(self.timeout)
    }

    /// This connection's quickest command-to-reply time so far (zero before any).
    pub fn round_trip(&self) -> Duration {
        self.rtt.unwrap_or_default()
    }

    /// Reads one complete reply within the session timeout.
    pub async fn read_reply(&mut self, during: &str) -> Result<Reply, FtpError> {
        self.read_reply_within(during, self.timeout).await
    }

    /// Reads one complete reply within `limit`.
    pub async fn read_reply_within(
        &mut self,
        during: &str,
        limit: Duration,
    ) -> Result<Reply, FtpError> {
        let read = async {
            loop {
                let line = match self.reader.next().await {
                    Some(Ok(line)) => line,
                    Some(Err(LineError::Io(e))) => return Err(FtpError::Io(e)),
                    Some(Err(LineError::TooLong(e))) => {
                        return Err(FtpError::BadReply {
                            cmd: during.to_owned(),
                            text: e.to_string(),
                        });
                    }
                    None => {
                        return Err(FtpError::Closed {
                            during: during.to_owned(),
                        });
                    }
                };
                match self.asm.push_line(&line) {
                    Ok(Some(reply)) => {
                        debug!(host = %self.host, session = self.local_port, "< {}", String::from_utf8_lossy(&reply.raw).trim_end());
                        if reply.class() != 1 {
                            self.answered_at = Some(Instant::now());
                            self.outstanding = self.outstanding.saturating_sub(1);
                            if self.outstanding == 0
                                && let Some(at) = self.sent_at.take()
                            {
                                let took = at.elapsed();
                                self.rtt = Some(self.rtt.map_or(took, |r| r.min(took)));
                            }
                        }
                        return Ok(reply);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        return Err(FtpError::BadReply {
                            cmd: during.to_owned(),
                            text: format!("{e}: {:?}", String::from_utf8_lossy(&line)),
                        });
                    }
                }
            }
        };
        match timeout(limit, read).await {
            Ok(r) => r,
            Err(_) => Err(FtpError::Timeout {
                what: during.to_owned(),
                after: limit,
            }),
        }
    }

    /// Reads replies until one that is not preliminary (1xx).
    pub async fn read_final(&mut self, during: &str) -> Result<Reply, FtpError> {
        loop {
            let r = self.read_reply(during).await?;
            if r.class() != 1 {
                return Ok(r);
            }
        }
    }

    /// Sends `line` and returns the final reply, whatever its code.
    pub async fn command(&mut self, line: &[u8]) -> Result<Reply, FtpError> {
        self.send(line).await?;
        self.read_final(&verb_of(line)).await
    }

    /// Sends `line`; a final reply that `ok` does not accept is a [`FtpError::Refused`].
    pub async fn simple(
        &mut self,
        line: &[u8],
        ok: impl Fn(u16) -> bool,
    ) -> Result<Reply, FtpError> {
        let r = self.command(line).await?;
        self.ok(r, &shown_command(line), ok)
    }

    fn ok(&self, r: Reply, cmd: &str, ok: impl Fn(u16) -> bool) -> Result<Reply, FtpError> {
        if ok(r.code) {
            Ok(r)
        } else {
            Err(refused(cmd, &r))
        }
    }

    fn timed_out(&self, what: &str) -> FtpError {
        FtpError::Timeout {
            what: what.to_owned(),
            after: self.timeout,
        }
    }

    /// `EPSV` when `extended`, else `PASV`: the data address this server now listens on.
    ///
    /// Always this server's control address with the announced port: for `EPSV` that is
    /// the rule (RFC 2428); a `227` naming another IP is either a server behind NAT
    /// announcing its private address (unreachable for the other server and the engine
    /// anyway) or an attempt to aim them at a third host (RFC 2577 bounce). A port below
    /// [`MIN_DATA_PORT`] is refused.
    pub async fn pasv(&mut self, extended: bool) -> Result<Announced, FtpError> {
        self.passive(if extended { "EPSV" } else { "PASV" }).await
    }

    /// `CPSV`: `PASV`, with this server the TLS client of the coming data connection (so
    /// two TLS servers can protect FXP data between themselves). Answered like `PASV`.
    pub async fn cpsv(&mut self) -> Result<Announced, FtpError> {
        self.passive("CPSV").await
    }

    /// `SSCN ON`/`OFF`: this server is the TLS client of data connections from now on
    /// (or no more).
    pub async fn sscn(&mut self, on: bool) -> Result<(), FtpError> {
        let cmd: &[u8] = if on { b"SSCN ON" } else { b"SSCN OFF" };
        self.simple(cmd, |c| c == 200).await?;
        self.sscn = on;
        Ok(())
    }

    /// Whether every command sent has had its final reply: nothing is in flight.
    pub fn is_idle(&self) -> bool {
        self.outstanding == 0
    }

    /// Makes a session that copied a file ready for the next one, or says it cannot be
    /// used (then it is dropped). First, without waiting, anything the server sent
    /// unasked: a `421` idle timeout or the connection's end (EOF) means it is gone.
    /// Then the state a file may leave behind is set back explicitly:
    /// - `SSCN OFF` if a secure method turned it on;
    /// - `TYPE I`: the engine's only type (set at login and never changed), sent as the
    ///   round trip that proves the session still answers (a server may close it between
    ///   the check and the next command; that shows here, and the caller logs in
    ///   afresh). Left out when the session's last reply came less than [`REUSE_FRESH`]
    ///   ago: no server closes a session for idleness that soon, and between the files
    ///   of a queue that round trip was a tenth of a small file's copy.
    ///
    /// `PROT` needs nothing: it is tracked and every method sets what it needs
    /// ([`Client::set_private`]). `REST` needs nothing: only a transfer command follows
    /// it, and a session whose transfer failed is never reused. `CWD` needs nothing: the
    /// engine never changes directory (paths are relative to the login directory).
    pub async fn reset_for_reuse(&mut self) -> Result<(), FtpError> {
        use futures_util::FutureExt;
        if !self.is_idle() {
            return Err(FtpError::Other("a reply is still outstanding".into()));
        }
        if !self.reader.read_buffer().is_empty() || self.asm.in_progress() {
            return Err(FtpError::Other("the server sent something unasked".into()));
        }
        match self.reader.next().now_or_never() {
            None => {}
            Some(Some(Ok(line))) => {
                let line = String::from_utf8_lossy(&line);
                debug!(host = %self.host, "idle session: < {}", line.trim_end());
                return Err(FtpError::Other(format!(
                    "the idle session said {:?}",
                    line.trim_end()
                )));
            }
            Some(_) => {
                return Err(FtpError::Closed {
                    during: "idle".into(),
                });
            }
        }
        if self.sscn {
            self.sscn(false).await?;
        }
        if self.answered_at.is_some_and(|t| t.elapsed() < REUSE_FRESH) {
            return Ok(());
        }
        self.simple(b"TYPE I", |c| c == 200).await?;
        Ok(())
    }

    /// `SIZE path` and, without waiting for its answer, `EPSV` (`extended`) or `PASV`:
    /// the source's size and the address it listens on in one round trip instead of two
    /// (replies come in order). Both replies are read whatever the first says, so the
    /// session stays in step; the outer error is the connection's, the inner ones each
    /// command's.
    pub async fn size_and_pasv(
        &mut self,
        path: &[u8],
        extended: bool,
    ) -> Result<SizeAndPassive, FtpError> {
        let cmd = if extended { "EPSV" } else { "PASV" };
        self.send_lines(&[&with_arg(b"SIZE", path), cmd.as_bytes()])
            .await?;
        // Only a reply the command was refused with, or an address refused here, leaves
        // the session in step; anything else fails both.
        let in_step = |e: &FtpError| {
            matches!(
                e,
                FtpError::Refused { .. }
                    | FtpError::PrivilegedPort { .. }
                    | FtpError::SelfTarget(_)
            )
        };
        let size = match self.size_reply(path).await {
            Err(e) if !in_step(&e) => return Err(e),
            size => size,
        };
        let announced = match self.passive_reply(cmd).await {
            Err(e) if !in_step(&e) => return Err(e),
            announced => announced,
        };
        Ok((size, announced))
    }

    async fn passive(&mut self, cmd: &'static str) -> Result<Announced, FtpError> {
        self.send(cmd.as_bytes()).await?;
        self.passive_reply(cmd).await
    }

    /// The reply to a `PASV`, `EPSV` or `CPSV` sent (see [`Client::pasv`]).
    async fn passive_reply(&mut self, cmd: &'static str) -> Result<Announced, FtpError> {
        let extended = cmd == "EPSV";
        let port = if extended {
            let r = self.read_final(cmd).await?;
            let r = self.ok(r, cmd, |c| c == 229)?;
            parse_epsv_reply(&r.raw).map_err(|e| bad_reply("EPSV", &r, e))?
        } else {
            let r = self.read_final(cmd).await?;
            let r = self.ok(r, cmd, |c| c == 227)?;
            let (addr, _) = parse_pasv_reply(&r.raw).map_err(|e| bad_reply(cmd, &r, e))?;
            let said = IpAddr::V4(*addr.ip());
            if said.to_canonical() != self.peer.ip().to_canonical() {
                debug!(
                    host = %self.host,
                    announced = %said,
                    using = %self.peer.ip(),
                    "PASV named another address than the control connection's: using the latter"
                );
            }
            addr.port()
        };
        if port < MIN_DATA_PORT {
            return Err(FtpError::PrivilegedPort { cmd, port });
        }
        let addr = SocketAddr::new(self.peer.ip(), port);
        if let Some(own) = &self.own {
            own.check(addr, &[]).map_err(FtpError::SelfTarget)?;
        }
        Ok(Announced { addr, extended })
    }

    /// `PORT`/`EPRT` naming exactly the address another server announced (`EPRT` when
    /// that one was reached with `EPSV` or is IPv6), answered within `wait` (at most the
    /// session timeout).
    pub async fn port_to(&mut self, target: Announced, wait: Duration) -> Result<(), FtpError> {
        let line = match target.addr {
            SocketAddr::V4(v4) if !target.extended => format_port_command(v4),
            addr => format_eprt_command(addr),
        };
        let line = line.strip_suffix(b"\r\n").unwrap_or(&line).to_vec();
        self.send(&line).await?;
        let r = self
            .read_reply_within(&verb_of(&line), wait.min(self.timeout))
            .await?;
        self.ok(r, &shown_command(&line), |c| c == 200)?;
        Ok(())
    }

    /// `SIZE path`: `Ok(None)` when the server does not support it (500/502/504).
    pub async fn size(&mut self, path: &[u8]) -> Result<Option<u64>, FtpError> {
        self.send(&with_arg(b"SIZE", path)).await?;
        self.size_reply(path).await
    }

    /// The reply to a `SIZE path` already sent (pipelined behind another command), as
    /// [`Client::size`] reads it.
    pub async fn size_reply(&mut self, path: &[u8]) -> Result<Option<u64>, FtpError> {
        let r = self.read_final("SIZE").await?;
        match r.code {
            213 => {
                let text = String::from_utf8_lossy(r.text());
                text.trim()
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| FtpError::BadReply {
                        cmd: "SIZE".into(),
                        text: text.into_owned(),
                    })
            }
            500 | 502 | 504 => Ok(None),
            _ => Err(refused(&shown_command(&with_arg(b"SIZE", path)), &r)),
        }
    }

    pub async fn rest(&mut self, offset: u64) -> Result<(), FtpError> {
        self.simple(format!("REST {offset}").as_bytes(), |c| c == 350)
            .await?;
        Ok(())
    }

    /// `ABOR`, then `QUIT`: gives up a session whose transfer failed. Whatever the server
    /// answers to `ABOR` (a `426` then `226`, or one reply) is read for half a second at
    /// most; a server that says nothing in that time (stuck in its transfer) gets its
    /// `QUIT` without a wait for the `221`.
    pub async fn abort_and_quit(mut self) {
        if self.send(b"ABOR").await.is_err() {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.patience(ABOR_WAIT);
        let mut answered = false;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_reply_within("ABOR", left).await {
                Ok(r) if r.code == 426 || r.class() == 1 => answered = true,
                Ok(_) => {
                    answered = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if answered {
            self.quit().await;
        } else {
            let _ = self.send(b"QUIT").await;
            let _ = self.writer.shutdown().await;
        }
    }

    /// The replies to an `ABOR` sent after a finished transfer (see `direct`; another
    /// command may be pipelined behind it): read to the final one, past a `426` where a
    /// server sends one.
    pub async fn abort_reply(&mut self) -> Result<(), FtpError> {
        loop {
            let r = self.read_reply("ABOR").await?;
            if r.code != 426 && r.class() != 1 {
                return Ok(());
            }
        }
    }

    /// `QUIT`, waiting briefly for the `221`, then closes the connection.
    pub async fn quit(mut self) {
        if self.send(b"QUIT").await.is_ok() {
            let _ = self
                .read_reply_within("QUIT", self.patience(QUIT_WAIT))
                .await;
        }
        let _ = self.writer.shutdown().await;
    }

    /// `path`'s digest as the server computes it, asked with `cmd` (`OPTS HASH alg` first
    /// for `HASH`, since a reused session may have another algorithm in force). `limit`
    /// bounds the wait for the answer (hashing a large file takes the server a while);
    /// `size`, when known, is checked against the range a `HASH` reply covers. A reply
    /// without a usable digest is a [`FtpError::BadReply`], a refusal a
    /// [`FtpError::Refused`]: the session stays in step either way.
    pub async fn digest(
        &mut self,
        cmd: digest::Command,
        alg: digest::Algorithm,
        path: &[u8],
        size: Option<u64>,
        limit: Duration,
    ) -> Result<digest::Digest, FtpError> {
        if cmd == digest::Command::Hash {
            self.simple(&digest::opts_line(alg), |c| c == 200).await?;
        }
        let line = cmd.line(path);
        self.send(&line).await?;
        let r = loop {
            let r = self.read_reply_within(cmd.verb(), limit).await?;
            if r.class() != 1 {
                break r;
            }
        };
        if r.class() != 2 {
            return Err(refused(&shown_command(&line), &r));
        }
        digest::parse_reply(cmd, alg, path, size, &r.raw).map_err(|e| bad_reply(cmd.verb(), &r, e))
    }

    /// `RNFR from`, `RNTO to`.
    pub async fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<(), FtpError> {
        self.simple(&with_arg(b"RNFR", from), |c| c == 350).await?;
        self.simple(&with_arg(b"RNTO", to), |c| c == 250).await?;
        Ok(())
    }

    /// `DELE path`.
    pub async fn delete(&mut self, path: &[u8]) -> Result<(), FtpError> {
        self.simple(&with_arg(b"DELE", path), |c| c == 250).await?;
        Ok(())
    }

    /// `MKD path`; an existing directory (any `550`) is not an error here: the following
    /// uploads tell whether it is usable.
    pub async fn mkd(&mut self, path: &[u8]) -> Result<(), FtpError> {
        let r = self.command(&with_arg(b"MKD", path)).await?;
        match r.code {
            257 | 250 | 550 | 521 => Ok(()),
            _ => Err(refused(&shown_command(&with_arg(b"MKD", path)), &r)),
        }
    }

    /// Reads a listing (`MLSD` when offered, else `LIST`) of `dir` over a passive data
    /// connection this client opens itself. Returns the raw listing and whether it is MLSD.
    pub async fn listing(&mut self, dir: &[u8]) -> Result<(Vec<u8>, bool), FtpError> {
        let mlsd = self.features.has("MLST");
        let extended = self.features.has("EPSV");
        // `pasv` answers with the control address, whatever 227 said (a server behind NAT
        // often announces a private one).
        let port = self.pasv(extended).await?.addr().port();
        let tcp = self.connect_data(port).await?;
        let verb: &[u8] = if mlsd { b"MLSD" } else { b"LIST" };
        let cmd = if dir.is_empty() {
            verb.to_vec()
        } else if !mlsd && dir.starts_with(b"-") {
            // `LIST -x` would read as options (vsftpd, pure-ftpd): `./-x` cannot.
            with_arg(verb, &[b"./", dir].concat())
        } else {
            with_arg(verb, dir)
        };
        self.send(&cmd).await?;
        // Under PROT P the handshake runs while the `150` is awaited: proftpd answers
        // only once the data connection's handshake is done, vsftpd only before it.
        let (tls, limit) = (self.data_tls(), self.timeout);
        let opened = async {
            let first = self.read_reply(&verb_of(verb)).await?;
            if first.class() != 1 {
                return Err(refused(&shown_command(&cmd), &first));
            }
            Ok(())
        };
        let (mut data, ()) = tokio::try_join!(tls.wrap(tcp, limit), opened)?;
        let mut buf = Vec::new();
        let read = async {
            use tokio::io::AsyncReadExt;
            let mut chunk = [0u8; 16 * 1024];
            loop {
                let n = data.read(&mut chunk).await?;
                if n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                if buf.len() + n > MAX_LISTING {
                    return Err(std::io::Error::other("listing too large"));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        };
        timeout(self.timeout, read)
            .await
            .map_err(|_| self.timed_out("listing"))?
            .map_err(FtpError::Data)?;
        // Over TLS, the engine's `close_notify` answers the server's: vsftpd waits for it
        // before it sends the `226`.
        let _ = timeout(self.timeout, data.shutdown()).await;
        drop(data);
        let done = self.read_final(&verb_of(verb)).await?;
        if done.class() != 2 {
            return Err(refused(&shown_command(&cmd), &done));
        }
        Ok((buf, mlsd))
    }
}

/// The engine's TLS handshake with the server `name` over `tcp` (the `channel`
/// connection: control or data), within `limit`.
async fn handshake(
    connector: &TlsConnector,
    name: ServerName<'static>,
    tcp: Conn,
    limit: Duration,
    channel: &'static str,
) -> Result<ClientStream, FtpError> {
    match timeout(limit, connector.connect(name, tcp)).await {
        Ok(Ok(t)) => Ok(ClientStream::Tls(Box::new(t))),
        Ok(Err(e)) => Err(FtpError::tls(channel, e)),
        Err(_) => Err(FtpError::Timeout {
            what: format!("TLS handshake on the {channel} connection"),
            after: limit,
        }),
    }
}

/// Resolves `host` and connects to its addresses in turn, within `limit` overall.
async fn connect(
    host: &str,
    port: u16,
    shown: &str,
    limit: Duration,
    allow: Option<&AllowList>,
    own: Option<&Arc<OwnSockets>>,
) -> Result<TcpStream, FtpError> {
    let attempt = async {
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|source| FtpError::Resolve {
                    host: shown.to_owned(),
                    source,
                })?
                .collect(),
        };
        let mut last = FtpError::Connect {
            host: shown.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        };
        for addr in addrs {
            if let Some(Err(e)) = own.map(|own| own.check(addr, &[])) {
                last = FtpError::SelfTarget(e);
                continue;
            }
            if let Some(Err(why)) = allow.map(|list| list.admits(host, addr.ip())) {
                last = FtpError::Denied {
                    host: addr.to_string(),
                    why,
                };
                continue;
            }
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(source) => {
                    last = FtpError::Connect {
                        host: shown.to_owned(),
                        source,
                    }
                }
            }
        }
        Err(last)
    };
    timeout(limit, attempt).await.unwrap_or_else(|_| {
        Err(FtpError::Timeout {
            what: format!("connecting to {shown}"),
            after: limit,
        })
    })
}

/// `VERB arg` as bytes (paths are bytes).
pub fn with_arg(verb: &[u8], arg: &[u8]) -> Vec<u8> {
    let mut v = verb.to_vec();
    v.push(b' ');
    v.extend_from_slice(arg);
    v
}

/// The upper-cased verb of a command line.
fn verb_of(line: &[u8]) -> String {
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end]).to_ascii_uppercase()
}

/// A command as shown in errors: never the argument of `PASS`.
fn shown_command(line: &[u8]) -> String {
    if verb_of(line) == "PASS" {
        "PASS".to_owned()
    } else {
        String::from_utf8_lossy(line).into_owned()
    }
}

/// A refusal carrying the server's code and text (multi-line text joined by spaces).
pub fn refused(cmd: &str, r: &Reply) -> FtpError {
    FtpError::Refused {
        cmd: cmd.to_owned(),
        code: r.code,
        text: reply_text(r),
    }
}

/// The text of a reply on one line.
pub fn reply_text(r: &Reply) -> String {
    let text = String::from_utf8_lossy(r.text());
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn bad_reply(cmd: &str, r: &Reply, e: impl std::fmt::Display) -> FtpError {
    FtpError::BadReply {
        cmd: cmd.to_owned(),
        text: format!("{e}: {}", reply_text(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(raw: &[u8]) -> Reply {
        let mut asm = ReplyAssembler::new(4096);
        let mut out = None;
        for line in raw.split_inclusive(|&b| b == b'\n') {
            out = asm.push_line(line).unwrap();
        }
        out.unwrap()
    }

    #[test]
    fn feat_lines() {
        let f = Features::parse(&reply(
            b"211-Features:\r\n EPRT\r\n EPSV\r\n MLST type*;size*;\r\n REST STREAM\r\n SIZE\r\n211 End\r\n",
        ));
        assert!(f.has("EPSV"));
        assert!(f.has("REST STREAM"));
        assert!(f.has("MLST"));
        assert!(f.has("REST"));
        assert!(!f.has("RES"));
        assert!(!f.has("REST STREAMING"));
        assert!(!f.has("MDTM"));
    }

    /// A server 120 ms away (each reply delayed so) gets ten round trips where a near
    /// one gets the short bound: the short bounds are not reached on a slow link.
    #[tokio::test]
    async fn patience_grows_with_the_round_trip() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let delay = Duration::from_millis(120);
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"220 far\r\n").await.unwrap();
            let mut line = String::new();
            while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                tokio::time::sleep(delay).await;
                let reply: &[u8] = match line.split_whitespace().next().unwrap_or("") {
                    "USER" => b"331 pass\r\n",
                    "PASS" => b"230 in\r\n",
                    "FEAT" => b"211-f\r\n SIZE\r\n211 End\r\n",
                    _ => b"200 ok\r\n",
                };
                if w.write_all(reply).await.is_err() {
                    return;
                }
                line.clear();
            }
        });
        let url = FtpUrl::parse(&format!("ftp://u:p@{addr}/f")).unwrap();
        let c = Client::open(&url, Duration::from_secs(30)).await.unwrap();
        assert!(c.round_trip() >= delay, "{:?}", c.round_trip());
        assert!(c.patience(PORT_REPLY) >= delay * RTT_PATIENCE);
        assert!(
            c.patience(Duration::from_secs(60)) == Duration::from_secs(30),
            "at most the timeout"
        );
    }

    /// With a virtual host, `HOST` goes first (RFC 7151: before `USER`); without, never.
    #[tokio::test]
    async fn a_virtual_host_is_named_before_the_login() {
        use tokio::io::{AsyncBufReadExt, BufReader};
        async fn heard(virtual_host: Option<&str>) -> Vec<String> {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (s, _) = l.accept().await.unwrap();
                let (r, mut w) = s.into_split();
                w.write_all(b"220 hi\r\n").await.unwrap();
                let mut lines = BufReader::new(r).lines();
                let mut heard = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply: &[u8] = match line.split_whitespace().next().unwrap_or("") {
                        "HOST" => b"220 that host\r\n",
                        "USER" => b"331 pass\r\n",
                        "PASS" => b"230 in\r\n",
                        "QUIT" => b"221 bye\r\n",
                        _ => b"200 ok\r\n",
                    };
                    heard.push(line);
                    if w.write_all(reply).await.is_err() {
                        break;
                    }
                }
                heard
            });
            let url = FtpUrl::parse(&format!("ftp://u:p@{addr}/f")).unwrap();
            let tls = TlsPolicy::default();
            let limit = Duration::from_secs(10);
            let direct = Dialer::direct();
            let c = Client::open_checked(&url, limit, None, &tls, None, virtual_host, &direct)
                .await
                .unwrap();
            c.quit().await;
            server.await.unwrap()
        }
        let named = heard(Some("v.example.net")).await;
        assert_eq!(named[..2], ["HOST v.example.net", "USER u"]);
        let plain = heard(None).await;
        assert_eq!(plain[0], "USER u");
        assert!(!plain.iter().any(|l| l.starts_with("HOST")), "{plain:?}");
    }

    /// Bytes a server sends after its `234` and before the TLS handshake are plaintext
    /// posing as protected: the session ends there (the STARTTLS injection class).
    #[tokio::test]
    async fn replies_pipelined_after_234_are_refused() {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            w.write_all(b"220 hi\r\n").await.unwrap();
            let mut line = String::new();
            BufReader::new(r).read_line(&mut line).await.unwrap();
            // One segment: the 234 and a forged login reply.
            w.write_all(b"234 go ahead\r\n230 logged in\r\n")
                .await
                .unwrap();
            line
        });
        let url = FtpUrl::parse(&format!("ftpes://u:p@{addr}/")).unwrap();
        let e = Client::open_checked(
            &url,
            Duration::from_secs(5),
            None,
            &TlsPolicy::default(),
            None,
            None,
            &Dialer::direct(),
        )
        .await
        .err()
        .unwrap();
        assert!(e.to_string().contains("sent more after 234"), "{e}");
        assert_eq!(server.await.unwrap(), "AUTH TLS\r\n");
    }

    /// `SIZE` and `EPSV` go out in one write (the server's first read after the login
    /// holds both lines), and both replies are read, in order.
    #[tokio::test]
    async fn pipelined_commands_leave_in_one_write() {
        use tokio::io::AsyncReadExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"220 hi\r\n").await.unwrap();
            let mut buf = [0u8; 512];
            // The login, a command at a time, answered as it comes.
            for reply in [&b"331 pass\r\n"[..], b"230 in\r\n", b"200 binary\r\n"] {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                s.write_all(reply).await.unwrap();
            }
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(b"211 no features\r\n").await.unwrap();
            assert!(buf[..n].starts_with(b"FEAT"));
            // One read: both pipelined lines.
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(b"213 1234\r\n229 Entering Extended Passive Mode (|||40123|)\r\n")
                .await
                .unwrap();
            buf[..n].to_vec()
        });
        let url = FtpUrl::parse(&format!("ftp://u:p@{addr}/f")).unwrap();
        let mut c = Client::open(&url, Duration::from_secs(5)).await.unwrap();
        let (size, announced) = c.size_and_pasv(b"f", true).await.unwrap();
        assert_eq!(size.unwrap(), Some(1234));
        assert_eq!(announced.unwrap().addr.port(), 40123);
        assert!(c.is_idle());
        assert_eq!(server.await.unwrap(), b"SIZE f\r\nEPSV\r\n");
    }

    #[test]
    fn errors_never_show_the_password() {
        assert_eq!(shown_command(b"PASS secret"), "PASS");
        assert_eq!(shown_command(b"pass secret"), "PASS");
        assert_eq!(shown_command(b"RETR a"), "RETR a");
    }

    #[test]
    fn reply_text_on_one_line() {
        let r = reply(b"550-No such file\r\n550 or directory\r\n");
        assert_eq!(reply_text(&r), "No such file 550 or directory");
    }
}
