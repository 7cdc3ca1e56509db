//! The agent's transport, measured: one TLS connection per stream (what `fxprelay agent`
//! does: each session's control connection and each data connection is a connection of
//! its own from the agent to the edge) against streams multiplexed with yamux over one
//! TLS connection. Both sides run in this process on loopback, with the product's TLS
//! settings (the agent's AES-128-GCM-first provider, the edge's server config, session
//! resumption, 128 KiB reads under TLS), so only the transport differs.
//!
//!   cargo bench --bench agent_link -- [SIZE_MIB=256] [SETUPS=300] [ROUNDS=3]
//!
//! Prints, per transport, the median over ROUNDS of:
//! - set-up: a new stream from the agent, one byte to the edge and one back (what a data
//!   connection costs before its first byte), in microseconds of wall time and of CPU;
//! - 4 streams at once, each moving SIZE_MIB from the agent to the edge (a download
//!   through the agent): MB/s in all and CPU seconds per GiB (this process: both ends).
//!
//! Loopback has no delay: a new connection's TCP and TLS handshakes cost 2 round trips
//! on a real network that a multiplexed stream does not (yamux sends its first data with
//! the stream's SYN); README "Servers that accept no inbound connection" puts the two
//! together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

/// Reads under TLS take this much at once, as the agent's and the edge's do.
const READ_BATCH: usize = 128 * 1024;
const PARALLEL: usize = 4;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Boxed = Box<dyn Io>;
/// The one TLS connection yamux runs over, as the futures traits it takes.
type Link = tokio_util::compat::Compat<Boxed>;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let size_mib = args.first().copied().unwrap_or(256);
    let setups = args.get(1).copied().unwrap_or(300) as usize;
    let rounds = args.get(2).copied().unwrap_or(3).max(1) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(run(size_mib << 20, setups, rounds));
}

/// CPU seconds this process has used (all threads, user and system).
fn cpu_now() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given and nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    name: ServerName<'static>,
}

fn tls() -> Tls {
    let key = rcgen::generate_simple_self_signed(vec!["edge.test".into()]).expect("a cert");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (cert, pkey) = (dir.path().join("edge.crt"), dir.path().join("edge.key"));
    std::fs::write(&cert, key.cert.pem()).expect("cert written");
    std::fs::write(&pkey, key.signing_key.serialize_pem()).expect("key written");
    let server = fxprelay::tls::server_config(&cert, &pkey).expect("the edge's config");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(key.cert.der().to_vec()))
        .expect("a root");
    let client = rustls::ClientConfig::builder_with_provider(fxprelay::tls::agent_provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Tls {
        acceptor: TlsAcceptor::from(server),
        connector: TlsConnector::from(Arc::new(client)),
        name: ServerName::try_from("edge.test").expect("a name"),
    }
}

/// The edge's side of one stream: a set-up probe (`p`: one byte back) or a transfer
/// (`t`: read to the end), then the byte count.
async fn edge_stream(mut s: Boxed) -> u64 {
    let mut kind = [0u8; 1];
    if s.read_exact(&mut kind).await.is_err() {
        return 0;
    }
    if kind[0] == b'p' {
        let _ = s.write_all(b"k").await;
        let _ = s.flush().await;
    }
    let mut buf = vec![0u8; READ_BATCH];
    let mut n = 0u64;
    while let Ok(k) = s.read(&mut buf).await {
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    n
}

/// Opens streams from the agent's side.
#[derive(Clone)]
enum Opener {
    /// A TCP connection and a TLS handshake (resumed after the first) per stream.
    PerStream {
        to: std::net::SocketAddr,
        connector: TlsConnector,
        name: ServerName<'static>,
    },
    /// A stream of the one yamux connection, through its driver task.
    Yamux(mpsc::UnboundedSender<oneshot::Sender<yamux::Stream>>),
}

impl Opener {
    async fn open(&self) -> Boxed {
        match self {
            Opener::PerStream {
                to,
                connector,
                name,
            } => {
                let tcp = TcpStream::connect(to).await.expect("connect");
                tcp.set_nodelay(true).expect("nodelay");
                let tls = connector
                    .connect(name.clone(), BufReader::with_capacity(READ_BATCH, tcp))
                    .await
                    .expect("TLS");
                Box::new(tls)
            }
            Opener::Yamux(tx) => {
                let (back, stream) = oneshot::channel();
                tx.send(back).expect("the driver runs");
                Box::new(stream.await.expect("a stream").compat())
            }
        }
    }
}

/// Runs a yamux connection: opens what `opens` asks for, hands inbound streams to
/// `inbound`.
async fn drive(
    mut conn: yamux::Connection<Link>,
    mut opens: mpsc::UnboundedReceiver<oneshot::Sender<yamux::Stream>>,
    inbound: Option<mpsc::UnboundedSender<yamux::Stream>>,
) {
    use std::task::Poll;
    let mut waiting: Option<oneshot::Sender<yamux::Stream>> = None;
    std::future::poll_fn(|cx| {
        loop {
            let mut progress = false;
            if waiting.is_none()
                && let Poll::Ready(Some(back)) = opens.poll_recv(cx)
            {
                waiting = Some(back);
            }
            if waiting.is_some() {
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(Ok(s)) => {
                        if let Some(back) = waiting.take() {
                            let _ = back.send(s);
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(s))) => {
                    if let Some(tx) = &inbound {
                        let _ = tx.send(s);
                    }
                    progress = true;
                }
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => {}
            }
            if !progress {
                return Poll::Pending;
            }
        }
    })
    .await;
}

/// yamux's settings for `kind`: its defaults (16 KiB frames), or frames as large as the
/// reads under TLS (fewer frames and wake-ups of its connection task per byte).
fn yamux_config(kind: &str) -> yamux::Config {
    let mut c = yamux::Config::default();
    if kind.contains("128 KiB") {
        c.set_split_send_size(READ_BATCH);
    }
    c
}

/// Starts the edge for `kind` and returns the agent's opener.
async fn start(kind: &str, tls: &Tls) -> Opener {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let to = listener.local_addr().expect("an address");
    let acceptor = tls.acceptor.clone();
    if kind == "one TLS connection per stream" {
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let tls = acceptor
                        .accept(BufReader::with_capacity(READ_BATCH, tcp))
                        .await
                        .expect("TLS");
                    edge_stream(Box::new(tls)).await
                });
            }
        });
        return Opener::PerStream {
            to,
            connector: tls.connector.clone(),
            name: tls.name.clone(),
        };
    }
    // yamux over one TLS connection, the agent being the client.
    let server_config = yamux_config(kind);
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("the agent's link");
        let _ = tcp.set_nodelay(true);
        let tls = acceptor
            .accept(BufReader::with_capacity(READ_BATCH, tcp))
            .await
            .expect("TLS");
        let conn = yamux::Connection::new(
            (Box::new(tls) as Boxed).compat(),
            server_config,
            yamux::Mode::Server,
        );
        let (_keep, none) = mpsc::unbounded_channel();
        let (tx, mut rx) = mpsc::unbounded_channel::<yamux::Stream>();
        tokio::spawn(async move {
            while let Some(s) = rx.recv().await {
                tokio::spawn(edge_stream(Box::new(s.compat())));
            }
        });
        drive(conn, none, Some(tx)).await;
    });
    let tcp = TcpStream::connect(to).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let link = tls
        .connector
        .connect(tls.name.clone(), BufReader::with_capacity(READ_BATCH, tcp))
        .await
        .expect("TLS");
    let conn = yamux::Connection::new(
        (Box::new(link) as Boxed).compat(),
        yamux_config(kind),
        yamux::Mode::Client,
    );
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(drive(conn, rx, None));
    Opener::Yamux(tx)
}

/// Mean wall and CPU microseconds of one set-up: open, one byte each way, close.
async fn setup(opener: &Opener, n: usize) -> (f64, f64) {
    let (t0, c0) = (Instant::now(), cpu_now());
    for _ in 0..n {
        let mut s = opener.open().await;
        s.write_all(b"p").await.expect("probe");
        s.flush().await.expect("flush");
        let mut k = [0u8; 1];
        s.read_exact(&mut k).await.expect("answer");
        let _ = s.shutdown().await;
    }
    let per = |x: f64| x * 1e6 / n as f64;
    (per(t0.elapsed().as_secs_f64()), per(cpu_now() - c0))
}

/// PARALLEL streams of `size` bytes at once: MB/s in all and CPU s per GiB.
async fn transfer(opener: &Opener, size: u64) -> (f64, f64) {
    let (t0, c0) = (Instant::now(), cpu_now());
    let mut tasks = Vec::new();
    for _ in 0..PARALLEL {
        let opener = opener.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = opener.open().await;
            s.write_all(b"t").await.expect("kind");
            let chunk = vec![0x5au8; READ_BATCH];
            let mut left = size;
            while left > 0 {
                let k = left.min(chunk.len() as u64) as usize;
                s.write_all(&chunk[..k]).await.expect("write");
                left -= k as u64;
            }
            s.shutdown().await.expect("shutdown");
            // The edge's close: everything was read.
            let mut rest = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_secs(30), s.read(&mut rest)).await;
        }));
    }
    for t in tasks {
        t.await.expect("a transfer");
    }
    let secs = t0.elapsed().as_secs_f64();
    let bytes = (size * PARALLEL as u64) as f64;
    (
        bytes / secs / 1e6,
        (cpu_now() - c0) / (bytes / (1u64 << 30) as f64),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn run(size: u64, setups: usize, rounds: usize) {
    let tls = tls();
    let kinds = [
        "one TLS connection per stream",
        "yamux streams over one TLS connection",
        "yamux, 128 KiB frames",
    ];
    let mut rows = Vec::new();
    for kind in kinds {
        let opener = start(kind, &tls).await;
        // Warm-up: the first handshake is a full one, later ones resume.
        let _ = setup(&opener, 5).await;
        let (mut wall, mut cpu, mut mbs, mut per_gib) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            let (w, c) = setup(&opener, setups).await;
            wall.push(w);
            cpu.push(c);
            let (m, g) = transfer(&opener, size).await;
            mbs.push(m);
            per_gib.push(g);
        }
        rows.push((
            kind,
            median(wall),
            median(cpu),
            median(mbs),
            median(per_gib),
        ));
    }
    println!(
        "agent transports, loopback, median of {rounds} rounds ({setups} set-ups; {PARALLEL} streams of {} MiB at once)",
        size >> 20
    );
    println!(
        "| transport                               | set-up (us) | set-up CPU (us) | {PARALLEL} streams (MB/s) | CPU s/GiB |"
    );
    println!(
        "|-----------------------------------------|-------------|-----------------|------------------|-----------|"
    );
    for (kind, w, c, m, g) in &rows {
        println!("| {kind:<39} | {w:>11.0} | {c:>15.0} | {m:>16.0} | {g:>9.2} |");
    }
    println!(
        "(both ends in this process; on a network a new connection adds 2 round trips, TCP and TLS, that a yamux stream does not)"
    );
}
