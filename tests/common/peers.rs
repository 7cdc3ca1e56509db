//! Real FTP servers (vsftpd, pure-ftpd, proftpd, pyftpdlib) run in the foreground as child
//! processes, one per test, each bound to its own loopback address and serving its own
//! temporary directory, stopped (the whole process group) when dropped.
//!
//! Needs root and `scripts/install-test-peers.sh` (vsftpd from apt, pure-ftpd and proftpd
//! unpacked into `.peers/`, pyftpdlib for `/usr/bin/python3`, the system user `fxptest`).
//!
//! Every server logs in `fxptest`/`fxptest` and serves a directory owned by `fxptest`
//! holding the fixtures [`HELLO_NAME`], [`BIG_NAME`] (8 MiB, see [`big_bin`]) and
//! [`LATIN1_NAME`] (a name that is not UTF-8).
//!
//! With [`ServerOptions::tls`] a server requires FTPS, with a certificate from the test CA
//! (`tests/common/tls.rs`) whose PEM file is [`FtpServer::ca_file`].

use std::ffi::{CString, OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The login every server accepts.
pub const USER: &str = "fxptest";
pub const PASS: &str = "fxptest";
/// `crypt(3)` SHA-512 hash of [`PASS`] (pure-pw's default hash would make every login
/// take seconds).
const PASS_HASH: &str = "$6$fxprelaytest$8gz5kyeezGUZf0s3pCcPKxOAe3ZlXdZNpkwzv6SfzMgadU9SjqAMWccO3XKX0LiqBmN5C/nKYghSwdNEc5rKF.";

/// Fixture files in every server's root.
pub const HELLO_NAME: &str = "hello.txt";
pub const HELLO: &[u8] = b"Hello from the fxprelay test peers.\n";
pub const BIG_NAME: &str = "big.bin";
pub const BIG_LEN: usize = 8 * 1024 * 1024;
/// `café.txt` in Latin-1: the `é` is the single byte 0xE9, not valid UTF-8.
pub const LATIN1_NAME: &[u8] = b"caf\xe9.txt";
pub const LATIN1: &[u8] = b"Latin-1 named file.\n";

/// How long a server gets to answer `220`.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// Default size of a picked passive port range (pure-ftpd caps its clients at half of it).
const PASV_RANGE_LEN: u16 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerKind {
    Vsftpd,
    PureFtpd,
    Proftpd,
    Pyftpdlib,
}

impl ServerKind {
    pub const ALL: [ServerKind; 4] = [
        ServerKind::Vsftpd,
        ServerKind::PureFtpd,
        ServerKind::Proftpd,
        ServerKind::Pyftpdlib,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Vsftpd => "vsftpd",
            ServerKind::PureFtpd => "pure-ftpd",
            ServerKind::Proftpd => "proftpd",
            ServerKind::Pyftpdlib => "pyftpdlib",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Address to bind; each test uses its own 127.x.y.z (see `unique_loopback_ip`).
    pub ip: Ipv4Addr,
    /// Address to announce in `227` instead of the real one (NAT emulation).
    pub masquerade: Option<Ipv4Addr>,
    /// `false` refuses `PASV`/`EPSV` (not supported by pure-ftpd: `start` panics).
    pub passive: bool,
    /// `false` refuses `PORT`/`EPRT` (vsftpd only: other servers panic in `start`).
    pub active: bool,
    /// Allow FXP: `PORT` to and passive connections from foreign addresses.
    pub foreign_data: bool,
    /// Run the server inside this network namespace (`ip netns exec NAME ...`).
    pub netns: Option<String>,
    /// Passive port range (inclusive); default: a free range of 100 ports.
    pub pasv_ports: Option<(u16, u16)>,
    /// Bytes per second for every data connection, so a transfer is still running when
    /// the test acts on it (pyftpdlib only: other servers panic in `start`).
    pub throttle: Option<u32>,
    /// FTPS: the server requires TLS on login and data (see [`ServerTls`]).
    pub tls: Option<ServerTls>,
    /// Hash commands (see [`Digests`]); vsftpd and pure-ftpd have none: `start` panics.
    pub digests: Digests,
    /// pyftpdlib only: flip the first byte of every uploaded file once it is stored (a
    /// destination whose copy differs at the same size).
    pub corrupt_uploads: bool,
    /// pyftpdlib only: how long a hash command takes to answer (a large file's hash).
    pub hash_delay: Option<Duration>,
    /// vsftpd only: `data_connection_timeout`, seconds (default 60). A data connection
    /// whose TLS handshake does not finish by then makes vsftpd end the session with a
    /// `500 OOPS` written in clear on its TLS control connection.
    pub data_timeout: Option<u32>,
    /// pyftpdlib only: how long its `530` to a wrong password waits (its own default is
    /// 3 s, which a test of many wrong passwords need not sit out).
    pub auth_failed_delay: Option<Duration>,
    /// pyftpdlib only: take RFC 7151 `HOST` (listed in `FEAT`, logged as `HOST <name>`
    /// when received) and refuse a login without it, as a server with name-based virtual
    /// hosts only does.
    pub host_command: bool,
    /// With `netns`: the test (in the root namespace) cannot reach the server, so its
    /// readiness is probed from inside the namespace (a server behind an agent).
    pub unreachable_from_root: bool,
}

/// Which hash commands a server offers. proftpd's are its own (`mod_digest`, shipped in
/// Debian's proftpd-core, loaded with `LoadModule mod_digest.c`); pyftpdlib has none,
/// so `tests/peers/pyftpd.py` adds them in Python.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digests {
    None,
    /// proftpd: mod_digest, which offers `HASH` (CRC32, MD5, SHA-1, SHA-256, SHA-512)
    /// and `XCRC`/`XMD5`/`XSHA1`/`XSHA256`/`XSHA512`; pyftpdlib: `HASH` and `OPTS HASH`
    /// (SHA-256, SHA-1, MD5, CRC32).
    Hash,
    /// pyftpdlib only: `XSHA256`, `XSHA1`, `XMD5`, `XCRC`, without `HASH`.
    Legacy,
}

/// How a server speaks FTPS. With it, every server refuses a plaintext login (see
/// [`plain_login_refusal`]) and wants `PROT P` on data, except pure-ftpd (`--tls=2`: TLS
/// required on the control connection, clear data still allowed).
///
/// Session reuse: vsftpd (`require_ssl_reuse=YES`) and proftpd (mod_tls's default) refuse
/// a data connection whose TLS session does not resume the control connection's;
/// pure-ftpd and pyftpdlib do not check.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub identity: super::tls::Identity,
    /// TLS from the first byte (the port-990 convention) instead of `AUTH TLS`; vsftpd
    /// (`implicit_ssl=YES`) and proftpd (`TLSOptions UseImplicitSSL`) only: the others
    /// panic in `start`.
    pub implicit: bool,
    /// vsftpd and proftpd: refuse data connections whose TLS session does not resume the
    /// control connection's (their default). `false` (`require_ssl_reuse=NO`, `TLSOptions
    /// NoSessionReuseRequired`) lets another server be the data connection's TLS client
    /// (FXP with `SSCN`): it cannot resume a session it never had.
    pub reuse_required: bool,
}

/// The reply code with which a server started with `tls` refuses a plaintext login:
/// vsftpd `530 Non-anonymous sessions must use encryption.` (to `USER`), proftpd and
/// pyftpdlib `550 SSL/TLS required on the control channel` (to `USER`), pure-ftpd
/// `421 ... cleartext sessions ... are not accepted` (to `USER`, then it hangs up).
pub fn plain_login_refusal(kind: ServerKind) -> &'static str {
    match kind {
        ServerKind::Vsftpd => "530",
        ServerKind::Proftpd | ServerKind::Pyftpdlib => "550",
        ServerKind::PureFtpd => "421",
    }
}

impl ServerTls {
    /// Explicit FTPS (`AUTH TLS`) with a certificate for `ip` from the test CA.
    pub fn explicit(ip: Ipv4Addr) -> ServerTls {
        ServerTls {
            identity: super::tls::identity_for(ip.into()),
            implicit: false,
            reuse_required: true,
        }
    }

    /// Implicit FTPS with a certificate for `ip` from the test CA.
    pub fn implicit(ip: Ipv4Addr) -> ServerTls {
        ServerTls {
            implicit: true,
            ..ServerTls::explicit(ip)
        }
    }
}

impl ServerOptions {
    pub fn new(ip: Ipv4Addr) -> Self {
        ServerOptions {
            ip,
            masquerade: None,
            passive: true,
            active: true,
            foreign_data: false,
            netns: None,
            pasv_ports: None,
            throttle: None,
            tls: None,
            digests: Digests::None,
            corrupt_uploads: false,
            host_command: false,
            hash_delay: None,
            data_timeout: None,
            auth_failed_delay: None,
            unreachable_from_root: false,
        }
    }

    /// These options with explicit FTPS required, certificate from the test CA.
    pub fn with_tls(mut self) -> Self {
        self.tls = Some(ServerTls::explicit(self.ip));
        self
    }
}

pub struct FtpServer {
    pub kind: ServerKind,
    /// Where clients connect (the bound address, or the public one given to `start_at`).
    pub addr: SocketAddr,
    /// The directory the user sees as `/`, owned by `fxptest`.
    pub root: PathBuf,
    pub user: &'static str,
    pub pass: &'static str,
    /// The passive port range the server uses.
    pub pasv_ports: (u16, u16),
    /// With `tls`: the CA certificate that signed the server's certificate, a PEM file in
    /// the server's directory (what a client passes as `--cacert`).
    pub ca_file: Option<PathBuf>,
    /// With `tls`: the server's certificate and key files.
    pub tls_files: Option<super::tls::IdentityFiles>,
    /// Whether the server speaks TLS from the first byte.
    pub implicit_tls: bool,
    /// The server process (leader of its own process group), or `None` in inetd mode.
    child: Option<Child>,
    /// proftpd: an acceptor thread runs one `ServerType inetd` process per connection
    /// (standalone proftpd 1.3.8 stalls ~0.4 s before accepting after every session exit:
    /// its signal handling sleeps 200 ms twice on the EINTR that SIGCHLD causes).
    inetd: Option<Inetd>,
    /// Everything the server wrote to stdout/stderr.
    output: PathBuf,
    /// The generated configuration (or command line), for failure messages.
    config: String,
    /// Extra log files the server writes.
    logs: Vec<PathBuf>,
    /// The namespace readiness is probed from (see `unreachable_from_root`).
    probe_netns: Option<String>,
    dir: tempfile::TempDir,
}

impl FtpServer {
    /// Starts a server on `opts.ip` and a free port, waiting until it greets with `220`.
    /// Panics with the server's configuration and output if it does not come up.
    pub fn start(kind: ServerKind, opts: ServerOptions) -> FtpServer {
        let port = if opts.netns.is_some() {
            // Nothing else runs in a test's own namespace.
            2000 + (super::random_u64() % 8000) as u16
        } else {
            super::free_port(opts.ip.into())
        };
        let addr = SocketAddr::from((opts.ip, port));
        Self::launch(kind, opts, port, addr)
    }

    /// Starts a server bound to `opts.ip:public.port()` that clients reach at `public`
    /// (e.g. through a DNAT router in front of `opts.netns`); readiness is probed at
    /// `public`.
    pub fn start_at(kind: ServerKind, opts: ServerOptions, public: SocketAddr) -> FtpServer {
        Self::launch(kind, opts, public.port(), public)
    }

    /// A server on its own loopback address that takes `PORT` to and data connections
    /// from other hosts: one end of an FXP copy (not masqueraded: the servers must
    /// announce their real addresses to each other).
    pub fn start_fxp(kind: ServerKind) -> FtpServer {
        let mut opts = ServerOptions::new(super::unique_loopback_ip());
        opts.foreign_data = true;
        Self::start(kind, opts)
    }

    /// Writes `rel` under the server's root (a directory when `data` is `None`), owned
    /// like the root (vsftpd's and proftpd's logins switch to that user).
    pub fn put(&self, rel: &str, data: Option<&[u8]>) {
        use std::os::unix::fs::MetadataExt;
        let p = self.root.join(rel);
        match data {
            Some(d) => fs::write(&p, d).unwrap(),
            None => fs::create_dir(&p).unwrap(),
        }
        let meta = fs::metadata(&self.root).unwrap();
        std::os::unix::fs::chown(&p, Some(meta.uid()), Some(meta.gid())).unwrap();
    }

    /// Path of `name` in the server's root.
    pub fn file(&self, name: impl AsRef<Path>) -> PathBuf {
        self.root.join(name)
    }

    /// The server's output and log files so far.
    pub fn log(&self) -> String {
        let mut s = format!(
            "--- {} on {} (root {})\n--- output:\n{}",
            self.kind.name(),
            self.addr,
            self.root.display(),
            read_lossy(&self.output)
        );
        for l in &self.logs {
            let _ = write!(s, "--- {}:\n{}", l.display(), read_lossy(l));
        }
        s
    }

    /// The per-test directory holding `root/`, the configuration and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process ids of the server's process-group leaders: the server process, or in
    /// inetd mode (proftpd) one per live session.
    pub fn pids(&self) -> Vec<u32> {
        match (&self.child, &self.inetd) {
            (Some(c), _) => vec![c.id()],
            (None, Some(i)) => i.sessions.lock().unwrap().iter().map(|c| c.id()).collect(),
            (None, None) => vec![],
        }
    }

    fn launch(kind: ServerKind, opts: ServerOptions, port: u16, addr: SocketAddr) -> FtpServer {
        assert!(
            opts.active || kind == ServerKind::Vsftpd,
            "only vsftpd can refuse active mode in this harness"
        );
        assert!(
            opts.data_timeout.is_none() || kind == ServerKind::Vsftpd,
            "only vsftpd takes a data timeout in this harness"
        );
        assert!(
            opts.throttle.is_none() || kind == ServerKind::Pyftpdlib,
            "only pyftpdlib can throttle data connections in this harness"
        );
        assert!(
            match opts.digests {
                Digests::None => true,
                Digests::Hash => matches!(kind, ServerKind::Proftpd | ServerKind::Pyftpdlib),
                Digests::Legacy => kind == ServerKind::Pyftpdlib,
            } && (!opts.corrupt_uploads && opts.hash_delay.is_none() && !opts.host_command
                || kind == ServerKind::Pyftpdlib),
            "{:?} hash commands (corrupt uploads: {}) are not available on {} in this harness",
            opts.digests,
            opts.corrupt_uploads,
            kind.name()
        );
        let user = system_user();
        let dir = tempfile::Builder::new()
            .prefix(&format!("fxp-{}-", kind.name()))
            .tempdir()
            .expect("tempdir");
        // Root-owned and 0755: servers refuse configs/logs in group/world-writable places.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("root");
        populate_root(&root, &user);

        let pasv_ports = opts.pasv_ports.unwrap_or_else(|| pick_pasv_range(&opts));
        assert!(
            pasv_ports.0 <= pasv_ports.1,
            "bad passive range {pasv_ports:?}"
        );

        if let Some(t) = &opts.tls {
            assert!(
                !t.implicit || matches!(kind, ServerKind::Vsftpd | ServerKind::Proftpd),
                "only vsftpd and proftpd speak implicit TLS in this harness"
            );
        }
        let tls_files = opts
            .tls
            .as_ref()
            .map(|t| t.identity.write(dir.path(), "server"));
        let ca_file = opts.tls.as_ref().map(|t| {
            let p = dir.path().join("server-ca.pem");
            fs::write(&p, &t.identity.ca_pem).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
            p
        });

        let output = dir.path().join("output.log");
        let ctx = Ctx {
            tls: tls_files.as_ref(),
            opts: &opts,
            port,
            pasv_ports,
            dir: dir.path(),
            root: &root,
            user: &user,
        };
        let spec = match kind {
            ServerKind::Vsftpd => vsftpd(&ctx),
            ServerKind::PureFtpd => pure_ftpd(&ctx),
            ServerKind::Proftpd => proftpd(&ctx),
            ServerKind::Pyftpdlib => pyftpdlib(&ctx),
        };
        let out = fs::File::create(&output).expect("server output file");
        let mut server = FtpServer {
            kind,
            addr,
            root,
            user: USER,
            pass: PASS,
            pasv_ports,
            ca_file,
            tls_files,
            implicit_tls: opts.tls.as_ref().is_some_and(|t| t.implicit),
            child: None,
            inetd: None,
            output,
            config: spec.config.clone(),
            logs: spec.logs.clone(),
            probe_netns: opts.netns.clone().filter(|_| opts.unreachable_from_root),
            dir,
        };
        if spec.inetd {
            let check = Command::new(&spec.program)
                .args(&spec.args)
                .arg("-t")
                .output()
                .expect("run proftpd -t");
            assert!(
                check.status.success(),
                "{} rejects its configuration:\n{}{}\nconfig:\n{}",
                kind.name(),
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr),
                spec.config
            );
            let bind = SocketAddr::from((opts.ip, port));
            server.inetd = Some(Inetd::start(bind, opts.netns.clone(), spec, out));
        } else {
            let mut cmd = in_netns(opts.netns.as_deref(), &spec.program);
            cmd.args(&spec.args)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .process_group(0);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {} ({cmd:?}): {e}", kind.name()));
            server.child = Some(child);
        }
        // On panic the server is dropped, which stops it.
        server.wait_ready()
    }

    fn wait_ready(mut self) -> FtpServer {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "{} exited with {status} before greeting on {}\nconfig:\n{}\n{}",
                    self.kind.name(),
                    self.addr,
                    self.config,
                    self.log()
                );
            }
            let (addr, implicit, ca_file) = (self.addr, self.implicit_tls, self.ca_file.clone());
            let probe = move || {
                if implicit {
                    let ca = fs::read_to_string(ca_file.as_ref().unwrap()).unwrap();
                    let mut roots = rustls::RootCertStore::empty();
                    let pem = rustls_pki_types::pem::PemObject::from_pem_slice(ca.as_bytes());
                    roots.add(pem.unwrap()).unwrap();
                    super::tls::implicit_greeting(addr, super::tls::client_config(roots))
                } else {
                    greeting(addr)
                }
            };
            let first_line = match &self.probe_netns {
                None => probe(),
                // A thread of its own joins the namespace; the test's threads stay out.
                Some(ns) => std::thread::scope(|t| {
                    t.spawn(|| enter_netns(ns).and_then(|()| probe()))
                        .join()
                        .expect("the readiness probe's thread")
                }),
            };
            let last = match first_line {
                Ok(line) if line.starts_with("220") => return self,
                Ok(line) => format!("greeting {line:?}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "{} did not greet with 220 on {} within {START_DEADLINE:?} (last: {last})\nconfig:\n{}\n{}",
                    self.kind.name(),
                    self.addr,
                    self.config,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        if let Some(inetd) = self.inetd.take() {
            inetd.stop();
        }
        if let Some(child) = self.child.take() {
            stop_groups(vec![child]);
        }
    }
}

/// Stops process groups led by `children`: SIGTERM to each group, then SIGKILL to what
/// is still alive after a grace period; reaps the leaders.
fn stop_groups(mut children: Vec<Child>) {
    for c in &children {
        // SAFETY: kill(2) on process groups we created (process_group(0)) and whose
        // leaders we have not reaped yet, so the ids cannot have been reused.
        unsafe { libc::kill(-(c.id() as libc::pid_t), libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut reaped = vec![false; children.len()];
    loop {
        for (c, r) in children.iter_mut().zip(reaped.iter_mut()) {
            if !*r {
                *r = matches!(c.try_wait(), Ok(Some(_)));
            }
        }
        // A reaped leader's id stays reserved as a group id while members live.
        let alive: Vec<libc::pid_t> = children
            .iter()
            .zip(&reaped)
            .filter(|(c, r)| !**r || group_alive(c.id() as libc::pid_t))
            .map(|(c, _)| c.id() as libc::pid_t)
            .collect();
        if alive.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for pgid in alive {
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            for c in &mut children {
                let _ = c.wait();
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a process of group `pgid` is still running (zombies whose parent died wait
/// for init to reap them: they do not count).
pub fn group_alive(pgid: libc::pid_t) -> bool {
    let Ok(procs) = fs::read_dir("/proc") else {
        return unsafe { libc::kill(-pgid, 0) } == 0;
    };
    procs.flatten().any(|e| {
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut f = rest.split_whitespace();
        let state = f.next();
        let pgrp = f.nth(1).and_then(|g| g.parse::<libc::pid_t>().ok());
        pgrp == Some(pgid) && state != Some("Z") && state != Some("X")
    })
}

/// Moves the calling thread into the network namespace `name` (`ip netns add NAME`).
fn enter_netns(name: &str) -> std::io::Result<()> {
    let f = fs::File::open(Path::new("/var/run/netns").join(name))?;
    // SAFETY: setns(2) on a valid fd; affects only this (dedicated) thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One server process per accepted connection, like inetd.
struct Inetd {
    stop: Arc<AtomicBool>,
    sessions: Arc<Mutex<Vec<Child>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Inetd {
    /// Listens on `bind` (inside `netns` if given: the acceptor thread joins it, and so
    /// do the sessions it spawns) and runs `spec` per connection.
    fn start(bind: SocketAddr, netns: Option<String>, spec: Spec, out: fs::File) -> Inetd {
        let stop = Arc::new(AtomicBool::new(false));
        let sessions: Arc<Mutex<Vec<Child>>> = Arc::default();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, sessions, ns) = (stop.clone(), sessions.clone(), netns.clone());
            std::thread::spawn(move || {
                let listener = ns
                    .as_deref()
                    .map_or(Ok(()), enter_netns)
                    .and_then(|()| TcpListener::bind(bind));
                let listener = match listener {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while !stop.load(Ordering::SeqCst) {
                    // Wait for a connection, checking the stop flag every 50 ms.
                    let mut pfd = libc::pollfd {
                        fd: listener.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: poll(2) on one valid pollfd.
                    if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
                        continue;
                    }
                    let Ok((conn, _)) = listener.accept() else {
                        continue;
                    };
                    let sock = OwnedFd::from(conn);
                    let (Ok(sock2), Ok(err)) = (sock.try_clone(), out.try_clone()) else {
                        continue;
                    };
                    let child = Command::new(&spec.program)
                        .args(&spec.args)
                        .stdin(Stdio::from(sock))
                        .stdout(Stdio::from(sock2))
                        .stderr(err)
                        .process_group(0)
                        .spawn();
                    let mut list = sessions.lock().unwrap();
                    // Forget finished sessions (reaped by try_wait).
                    list.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
                    match child {
                        Ok(c) => list.push(c),
                        Err(e) => {
                            let _ = writeln!(&out, "inetd: cannot spawn {:?}: {e}", spec.program);
                        }
                    }
                }
            })
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("inetd listener on {bind} (netns {netns:?}): {e}"),
            Err(_) => panic!("inetd listener thread died"),
        }
        Inetd {
            stop,
            sessions,
            thread,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        let sessions = std::mem::take(&mut *self.sessions.lock().unwrap());
        stop_groups(sessions);
    }
}

/// The `220` line of a fresh control connection (reads one line, then hangs up).
fn greeting(addr: SocketAddr) -> std::io::Result<String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

struct Ctx<'a> {
    opts: &'a ServerOptions,
    /// The certificate and key files when `opts.tls` is set.
    tls: Option<&'a super::tls::IdentityFiles>,
    port: u16,
    pasv_ports: (u16, u16),
    dir: &'a Path,
    root: &'a Path,
    user: &'a SystemUser,
}

/// How to run a server.
struct Spec {
    program: PathBuf,
    args: Vec<OsString>,
    /// The generated configuration (or command line), for failure messages.
    config: String,
    logs: Vec<PathBuf>,
    /// One process per connection on stdin/stdout (proftpd `ServerType inetd`).
    inetd: bool,
}

/// `program`, run inside the namespace `netns` when one is given.
fn in_netns(netns: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn vsftpd(c: &Ctx) -> Spec {
    let bin = require_bin(Path::new("/usr/sbin/vsftpd"));
    let empty = c.dir.join("empty");
    fs::create_dir(&empty).unwrap();
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o755)).unwrap();
    let log = c.dir.join("vsftpd.log");
    let o = c.opts;
    let yes = |b: bool| if b { "YES" } else { "NO" };
    let mut conf = format!(
        "listen=YES\n\
         listen_ipv6=NO\n\
         background=NO\n\
         listen_address={ip}\n\
         listen_port={port}\n\
         anonymous_enable=NO\n\
         local_enable=YES\n\
         write_enable=YES\n\
         local_umask=022\n\
         local_root={root}\n\
         chroot_local_user=YES\n\
         allow_writeable_chroot=YES\n\
         secure_chroot_dir={empty}\n\
         pam_service_name=vsftpd\n\
         seccomp_sandbox=NO\n\
         isolate=NO\n\
         isolate_network=NO\n\
         userlist_enable=NO\n\
         tcp_wrappers=NO\n\
         dirmessage_enable=NO\n\
         connect_from_port_20=NO\n\
         max_clients=200\n\
         max_per_ip=200\n\
         idle_session_timeout=120\n\
         data_connection_timeout={data_timeout}\n\
         accept_timeout=15\n\
         connect_timeout=15\n\
         syslog_enable=NO\n\
         xferlog_enable=YES\n\
         xferlog_std_format=NO\n\
         log_ftp_protocol=YES\n\
         vsftpd_log_file={log}\n\
         pasv_enable={pasv}\n\
         pasv_min_port={pmin}\n\
         pasv_max_port={pmax}\n\
         port_enable={active}\n\
         port_promiscuous={foreign}\n\
         pasv_promiscuous={foreign}\n",
        ip = o.ip,
        port = c.port,
        root = c.root.display(),
        empty = empty.display(),
        log = log.display(),
        pasv = yes(o.passive),
        active = yes(o.active),
        pmin = c.pasv_ports.0,
        pmax = c.pasv_ports.1,
        foreign = yes(o.foreign_data),
        data_timeout = o.data_timeout.unwrap_or(60),
    );
    if let Some(m) = o.masquerade {
        let _ = writeln!(conf, "pasv_address={m}\npasv_addr_resolve=NO");
    }
    if let (Some(t), Some(f)) = (&o.tls, c.tls) {
        // ssl_ciphers: vsftpd's default is DES-CBC3-SHA, which no modern client offers.
        let _ = write!(
            conf,
            "ssl_enable=YES\n\
             rsa_cert_file={cert}\n\
             rsa_private_key_file={key}\n\
             force_local_logins_ssl=YES\n\
             force_local_data_ssl=YES\n\
             require_ssl_reuse={reuse}\n\
             ssl_tlsv1=YES\n\
             ssl_sslv2=NO\n\
             ssl_sslv3=NO\n\
             ssl_ciphers=HIGH\n\
             debug_ssl=YES\n\
             implicit_ssl={implicit}\n",
            cert = f.cert.display(),
            key = f.key.display(),
            implicit = yes(t.implicit),
            reuse = yes(t.reuse_required),
        );
    }
    let path = c.dir.join("vsftpd.conf");
    write_private(&path, conf.as_bytes());
    Spec {
        program: bin,
        args: vec![path.into()],
        config: conf,
        logs: vec![log],
        inetd: false,
    }
}

fn pure_ftpd(c: &Ctx) -> Spec {
    let o = c.opts;
    assert!(
        o.passive,
        "pure-ftpd cannot refuse passive mode: use another server for `passive: false`"
    );
    let bin = require_bin(&peers_dir().join("usr/sbin/pure-ftpd"));
    let pure_pw = require_bin(&peers_dir().join("usr/bin/pure-pw"));
    // PureDB virtual user; `/./` marks the chroot point of its home.
    let passwd = c.dir.join("pureftpd.passwd");
    let pdb = c.dir.join("pureftpd.pdb");
    let line = format!(
        "{USER}:{PASS_HASH}:{}:{}::{}/./::::::::::::\n",
        c.user.uid,
        c.user.gid,
        c.root.display()
    );
    write_private(&passwd, line.as_bytes());
    let out = Command::new(&pure_pw)
        .arg("mkdb")
        .arg(&pdb)
        .arg("-f")
        .arg(&passwd)
        .output()
        .expect("run pure-pw");
    assert!(
        out.status.success(),
        "pure-pw mkdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xfer = c.dir.join("xfer.log");
    // Max clients is silently capped at half the passive range.
    let span = u32::from(c.pasv_ports.1 - c.pasv_ports.0) + 1;
    let max_clients = (span / 2).clamp(1, 50);
    let mut args: Vec<OsString> = vec![
        format!("--bind={},{}", o.ip, c.port).into(),
        format!("--login=puredb:{}", pdb.display()).into(),
        "--noanonymous".into(),
        "--chrooteveryone".into(),
        "--dontresolve".into(),
        "--ipv4only".into(),
        format!("--pidfile={}", c.dir.join("pure-ftpd.pid").display()).into(),
        format!("--maxclientsnumber={max_clients}").into(),
        format!("--maxclientsperip={max_clients}").into(),
        format!("--passiveportrange={}:{}", c.pasv_ports.0, c.pasv_ports.1).into(),
        "--maxidletime=2".into(),
        format!("--altlog=clf:{}", xfer.display()).into(),
        "--verboselog".into(),
    ];
    if let Some(m) = o.masquerade {
        args.push(format!("--forcepassiveip={m}").into());
    }
    if o.foreign_data {
        args.push("--allowuserfxp".into());
    }
    if let Some(f) = c.tls {
        args.push("--tls=2".into());
        args.push(format!("--certfile={}", f.combined.display()).into());
    }
    let config = format!("pure-ftpd {}\n{line}", join_args(&args));
    Spec {
        program: bin,
        args,
        config,
        logs: vec![xfer],
        inetd: false,
    }
}

fn proftpd(c: &Ctx) -> Spec {
    let o = c.opts;
    let bin = require_bin(&peers_dir().join("usr/sbin/proftpd"));
    let d = c.dir;
    let users = d.join("ftpd.passwd");
    let groups = d.join("ftpd.group");
    write_private(
        &users,
        format!(
            "{USER}:{PASS_HASH}:{}:{}::{}:/bin/sh\n",
            c.user.uid,
            c.user.gid,
            c.root.display()
        )
        .as_bytes(),
    );
    write_private(&groups, format!("{USER}:x:{}:\n", c.user.gid).as_bytes());
    let syslog = d.join("proftpd.log");
    let xferlog = d.join("xfer.log");
    // Run per connection by `Inetd` (see `FtpServer::inetd`): standalone mode would be
    // `ServerType standalone` and `proftpd -n -c FILE`.
    let mut conf = format!(
        "ServerType inetd\n\
         ServerName \"fxprelay test proftpd\"\n\
         ServerIdent on \"fxprelay test proftpd ready.\"\n\
         DefaultAddress {ip}\n\
         SocketBindTight on\n\
         Port {port}\n\
         UseIPv6 off\n\
         User {USER}\n\
         Group {USER}\n\
         PidFile {d}/proftpd.pid\n\
         ScoreboardFile {d}/proftpd.scoreboard\n\
         DelayTable {d}/proftpd.delay\n\
         DelayEngine off\n\
         SystemLog {syslog}\n\
         TransferLog {xferlog}\n\
         WtmpLog off\n\
         UseReverseDNS off\n\
         MaxInstances 100\n\
         AuthOrder mod_auth_file.c\n\
         AuthUserFile {users}\n\
         AuthGroupFile {groups}\n\
         RequireValidShell off\n\
         UseFtpUsers off\n\
         DefaultRoot ~\n\
         AllowOverwrite on\n\
         Umask 022\n\
         TimeoutIdle 120\n\
         TimeoutNoTransfer 120\n\
         TimeoutStalled 60\n\
         PassivePorts {pmin} {pmax}\n\
         AllowForeignAddress {foreign}\n",
        ip = o.ip,
        port = c.port,
        d = d.display(),
        syslog = syslog.display(),
        xferlog = xferlog.display(),
        users = users.display(),
        groups = groups.display(),
        pmin = c.pasv_ports.0,
        pmax = c.pasv_ports.1,
        foreign = if o.foreign_data { "on" } else { "off" },
    );
    if let Some(m) = o.masquerade {
        let _ = writeln!(conf, "MasqueradeAddress {m}");
    }
    if !o.passive {
        conf.push_str("<Limit PASV EPSV>\n  DenyAll\n</Limit>\n");
    }
    let mut logs = vec![syslog, xferlog];
    if o.digests == Digests::Hash || o.tls.is_some() {
        let modules = peers_dir().join("usr/lib/proftpd");
        let _ = writeln!(conf, "ModulePath {}", modules.display());
    }
    if o.digests == Digests::Hash {
        // DigestEngine is on once the module is loaded.
        conf.push_str("LoadModule mod_digest.c\n");
    }
    if let (Some(t), Some(f)) = (&o.tls, c.tls) {
        let tls_log = d.join("tls.log");
        // TLSCACertificateFile: with SSCN the server is the data connection's TLS client
        // and verifies its peer against it (TLSVerifyServer defaults to on).
        let _ = write!(
            conf,
            "LoadModule mod_tls.c\n\
             TLSEngine on\n\
             TLSRequired on\n\
             TLSProtocol TLSv1.2 TLSv1.3\n\
             TLSECCertificateFile {cert}\n\
             TLSECCertificateKeyFile {key}\n\
             TLSCACertificateFile {ca}\n\
             TLSVerifyClient off\n\
             TLSLog {log}\n",
            cert = f.cert.display(),
            key = f.key.display(),
            ca = d.join("server-ca.pem").display(),
            log = tls_log.display(),
        );
        let options: Vec<&str> = [
            t.implicit.then_some("UseImplicitSSL"),
            (!t.reuse_required).then_some("NoSessionReuseRequired"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !options.is_empty() {
            let _ = writeln!(conf, "TLSOptions {}", options.join(" "));
        }
        logs.push(tls_log);
    }
    let path = d.join("proftpd.conf");
    write_private(&path, conf.as_bytes());
    Spec {
        program: bin,
        args: vec!["-c".into(), path.into()],
        config: conf,
        logs,
        inetd: true,
    }
}

fn pyftpdlib(c: &Ctx) -> Spec {
    let o = c.opts;
    let python = require_bin(Path::new("/usr/bin/python3"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pyftpd.py");
    let mut args: Vec<OsString> = vec![
        script.into(),
        "--ip".into(),
        o.ip.to_string().into(),
        "--port".into(),
        c.port.to_string().into(),
        "--root".into(),
        c.root.into(),
        "--user".into(),
        USER.into(),
        "--password".into(),
        PASS.into(),
        "--passive-ports".into(),
        format!("{}-{}", c.pasv_ports.0, c.pasv_ports.1).into(),
        "--run-as".into(),
        USER.into(),
    ];
    if let Some(m) = o.masquerade {
        args.extend(["--masquerade".into(), m.to_string().into()]);
    }
    if !o.passive {
        args.push("--no-passive".into());
    }
    if o.foreign_data {
        args.push("--foreign".into());
    }
    if let Some(rate) = o.throttle {
        args.extend(["--throttle".into(), rate.to_string().into()]);
    }
    match o.digests {
        Digests::None => {}
        Digests::Hash => args.extend(["--digest".into(), "hash".into()]),
        Digests::Legacy => args.extend(["--digest".into(), "legacy".into()]),
    }
    if o.corrupt_uploads {
        args.push("--corrupt-uploads".into());
    }
    if o.host_command {
        args.push("--host-command".into());
    }
    if let Some(d) = o.hash_delay {
        args.extend(["--hash-delay".into(), d.as_secs_f64().to_string().into()]);
    }
    if let Some(d) = o.auth_failed_delay {
        args.extend([
            "--auth-failed-delay".into(),
            d.as_secs_f64().to_string().into(),
        ]);
    }
    if let Some(f) = c.tls {
        assert!(
            o.throttle.is_none(),
            "pyftpdlib cannot throttle TLS data connections in this harness"
        );
        args.extend([
            "--tls-cert".into(),
            f.cert.clone().into(),
            "--tls-key".into(),
            f.key.clone().into(),
        ]);
    }
    let config = format!("python3 {}", join_args(&args));
    Spec {
        program: python,
        args,
        config,
        logs: vec![],
        inetd: false,
    }
}

/// Where `scripts/install-test-peers.sh` unpacks pure-ftpd and proftpd.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".peers")
}

fn require_bin(p: &Path) -> PathBuf {
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-test-peers.sh (or scripts/test.sh)",
        p.display()
    );
    p.to_path_buf()
}

struct SystemUser {
    uid: u32,
    gid: u32,
}

fn system_user() -> SystemUser {
    static USER_IDS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    let ids = USER_IDS.get_or_init(|| {
        let name = CString::new(USER).unwrap();
        // SAFETY: getpwnam returns NULL or a pointer to static storage; read at once, and
        // only once per process (OnceLock), so no concurrent getpwnam from here.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            None
        } else {
            unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
        }
    });
    let (uid, gid) = ids.unwrap_or_else(|| {
        panic!("system user {USER} is missing: run scripts/install-test-peers.sh")
    });
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the real-peer tests need root (they start FTP servers that switch users)"
    );
    SystemUser { uid, gid }
}

/// The 8 MiB of `big.bin`: deterministic pseudo-random (xorshift64) bytes.
pub fn big_bin() -> &'static [u8] {
    static BIG: OnceLock<Vec<u8>> = OnceLock::new();
    BIG.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut v = Vec::with_capacity(BIG_LEN);
        while v.len() < BIG_LEN {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(BIG_LEN);
        v
    })
}

fn populate_root(root: &Path, user: &SystemUser) {
    fs::create_dir(root).expect("create server root");
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    let files: [(&OsStr, &[u8]); 3] = [
        (OsStr::new(HELLO_NAME), HELLO),
        (OsStr::new(BIG_NAME), big_bin()),
        (OsStr::from_bytes(LATIN1_NAME), LATIN1),
    ];
    for (name, data) in files {
        let p = root.join(name);
        fs::write(&p, data).expect("write fixture");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::chown(&p, Some(user.uid), Some(user.gid)).unwrap();
    }
    std::os::unix::fs::chown(root, Some(user.uid), Some(user.gid)).unwrap();
}

/// Writes a root-owned 0600 file (vsftpd insists on that for its config).
fn write_private(path: &Path, data: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data).unwrap();
}

/// A range of [`PASV_RANGE_LEN`] ports below the ephemeral range, all bindable on `ip`
/// (and on a loopback masquerade address, so that nothing answers there).
fn pick_pasv_range(opts: &ServerOptions) -> (u16, u16) {
    let mut check = vec![];
    if opts.netns.is_none() {
        check.push(opts.ip);
        check.extend(opts.masquerade.filter(|m| m.is_loopback()));
    }
    for _ in 0..50 {
        let span = u64::from(32000 - 10000 - PASV_RANGE_LEN);
        let lo = 10000 + (super::random_u64() % span) as u16;
        let hi = lo + PASV_RANGE_LEN - 1;
        if (lo..=hi).all(|p| check.iter().all(|ip| TcpListener::bind((*ip, p)).is_ok())) {
            return (lo, hi);
        }
    }
    panic!("no free passive port range on {check:?}");
}

fn join_args(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_lossy(p: &Path) -> String {
    match fs::read(p) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("(unreadable: {e})\n"),
    }
}

/// pyftpdlib listening on `[::1]` only (the harness's `FtpServer` binds IPv4), running
/// as root with one user and full permissions, stopped on drop.
pub struct V6Pyftpd {
    child: Child,
    pub addr: SocketAddr,
    /// The directory the user sees as `/` (holds `big.bin`).
    pub root: tempfile::TempDir,
}

impl V6Pyftpd {
    pub fn start() -> V6Pyftpd {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("big.bin"), big_bin()).unwrap();
        let ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let addr = SocketAddr::new(ip, super::free_port(ip));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/pyftpd.py");
        let child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--ip", "::1", "--port", &addr.port().to_string()])
            .arg("--root")
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pyftpdlib");
        let server = V6Pyftpd { child, addr, root };
        super::wait_for("pyftpdlib on [::1] to greet", || {
            TcpStream::connect(addr).is_ok_and(|s| {
                let mut first = [0u8; 3];
                s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                (&s).read_exact(&mut first).is_ok() && &first == b"220"
            })
        });
        server
    }
}

impl Drop for V6Pyftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
