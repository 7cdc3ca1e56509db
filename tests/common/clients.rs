//! Real FTP clients (curl, lftp, Python ftplib) run as child processes with a hard
//! timeout, configured so that the address in a `227` reply matters (modern clients
//! quietly ignore it otherwise).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::peers::{self, FtpServer};
use super::proxy::Proxy;

/// Hard limit for one client run (the clients' own limits are shorter).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// curl `--connect-timeout`, lftp `net:timeout`, ftplib socket timeout, in seconds.
pub const CONNECT_TIMEOUT_S: u32 = 5;
/// curl `--max-time`, in seconds.
pub const MAX_TIME_S: u32 = 45;

/// What a client run produced.
#[derive(Debug)]
pub struct ClientResult {
    /// The command line, for messages.
    pub command: String,
    /// `None` when it was killed on timeout.
    pub status: Option<ExitStatus>,
    /// stdout, lossily decoded; see `stdout_bytes` for the exact bytes.
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl ClientResult {
    /// Exited by itself with status 0.
    pub fn ok(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// The exit code, if it exited by itself.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

impl fmt::Display for ClientResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.timed_out {
            "TIMED OUT (killed)".to_string()
        } else {
            match self.status {
                Some(s) => s.to_string(),
                None => "no status".to_string(),
            }
        };
        write!(
            f,
            "`{}` -> {how} after {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.command,
            self.elapsed,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs `cmd` in its own process group, killing the group if it outlives `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> ClientResult {
    let command = describe(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let (status, timed_out) = wait_deadline(&mut child, start + timeout);
    let stdout_bytes = out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    ClientResult {
        command,
        status,
        stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
        stdout_bytes,
        stderr,
        timed_out,
        elapsed: start.elapsed(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

fn wait_deadline(child: &mut Child, deadline: Instant) -> (Option<ExitStatus>, bool) {
    let mut nap = Duration::from_millis(1);
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return (Some(s), false);
        }
        if Instant::now() >= deadline {
            let pgid = child.id() as libc::pid_t;
            // SAFETY: kill(2) on the process group this module created, still unreaped.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            return (None, true);
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let s = a.to_string_lossy();
            if s.contains([' ', ';', '"']) {
                format!("'{s}'")
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------
// curl

/// How curl opens data connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode<'a> {
    /// `PASV`, connecting to the control connection's address and ignoring the one in
    /// `227` (curl's default `--ftp-skip-pasv-ip`, forced to `PASV` with `--disable-epsv`).
    Passive,
    /// `PASV`, connecting to the address in `227` (`--no-ftp-skip-pasv-ip --disable-epsv`).
    PassiveTrusting,
    /// `PORT` naming this address (`-P ADDR --disable-eprt`).
    Active(&'a str),
    /// curl's defaults: `EPSV` first (`229` names only a port, on the control host), the
    /// `227` address ignored.
    Stock,
    /// curl's defaults but `--disable-epsv`: `PASV`, its address ignored.
    StockPasv,
}

impl Mode<'_> {
    pub fn curl_args(&self) -> Vec<OsString> {
        let v: Vec<&str> = match self {
            Mode::Passive => vec!["--ftp-pasv", "--ftp-skip-pasv-ip", "--disable-epsv"],
            Mode::PassiveTrusting => vec!["--ftp-pasv", "--no-ftp-skip-pasv-ip", "--disable-epsv"],
            Mode::Active(a) => vec!["-P", a, "--disable-eprt"],
            Mode::Stock => vec![],
            Mode::StockPasv => vec!["--disable-epsv"],
        };
        v.into_iter().map(OsString::from).collect()
    }
}

/// `ftp://user:pass@addr/path` (`path` without a leading slash; `""` is the root).
pub fn ftp_url(user: &str, pass: &str, addr: SocketAddr, path: &str) -> String {
    format!("ftp://{}:{}@{addr}/{path}", encode(user), encode(pass))
}

/// `ftps://user:pass@addr/path`: implicit FTPS (TLS from the first byte).
pub fn ftps_url(user: &str, pass: &str, addr: SocketAddr, path: &str) -> String {
    format!("ftps://{}:{}@{addr}/{path}", encode(user), encode(pass))
}

/// curl flags for explicit FTPS trusting only the CA in `ca`: `AUTH TLS` is required
/// (`--ssl-reqd`, curl fails rather than going on in clear) and data is protected
/// (`PROT P`, curl's default with `--ssl-reqd`). With an `ftps://` URL the same flags
/// mean implicit FTPS.
pub fn curl_tls_args(ca: &Path) -> Vec<OsString> {
    vec!["--ssl-reqd".into(), "--cacert".into(), ca.into()]
}

/// curl flags to upload `local` over FTPS: `-T local --tls-max 1.2`.
///
/// Trap: over TLS 1.3 the server sends a session ticket on the data connection; curl
/// only writes there, closes with the ticket unread, the kernel answers with a reset and
/// the server loses the upload's tail (vsftpd 3.0.3: `426 Failure reading network
/// stream.`, about every other upload here). TLS 1.2 sends no ticket after the handshake.
pub fn curl_tls_upload_args(local: &Path) -> Vec<OsString> {
    vec!["-T".into(), local.into(), "--tls-max".into(), "1.2".into()]
}

/// curl over FTPS (see [`curl_tls_args`]) with the mode's flags and `extra`.
pub fn curl_tls<I, S>(url: &str, mode: &Mode, ca: &Path, extra: I) -> ClientResult
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut args = curl_tls_args(ca);
    args.extend(extra.into_iter().map(|a| a.as_ref().to_os_string()));
    curl(url, mode, args)
}

/// Percent-encodes what curl would take as URL syntax in the user part.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs curl on `url` with the mode's flags, `-sS`, connect/max-time limits, and `extra`.
pub fn curl<I, S>(url: &str, mode: &Mode, extra: I) -> ClientResult
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--connect-timeout"])
        .arg(CONNECT_TIMEOUT_S.to_string())
        .arg("--max-time")
        .arg(MAX_TIME_S.to_string())
        .args(mode.curl_args())
        .args(extra)
        .arg(url);
    run(cmd, CLIENT_TIMEOUT)
}

/// Names in a directory (`NLST`, `--list-only`); the URL should end with `/`.
pub fn curl_list(url: &str, mode: &Mode) -> ClientResult {
    curl(url, mode, ["--list-only"])
}

/// A full `LIST` of a directory; the URL should end with `/`.
pub fn curl_list_long(url: &str, mode: &Mode) -> ClientResult {
    curl(url, mode, std::iter::empty::<&str>())
}

/// `RETR` into `local`.
pub fn curl_download(url: &str, local: &Path, mode: &Mode) -> ClientResult {
    curl(url, mode, [OsStr::new("-o"), local.as_os_str()])
}

/// `STOR` from `local`.
pub fn curl_upload(url: &str, local: &Path, mode: &Mode) -> ClientResult {
    curl(url, mode, [OsStr::new("-T"), local.as_os_str()])
}

// ---------------------------------------------------------------------------------------
// lftp

/// Runs an lftp script (`;`-separated commands, e.g. `ls; get big.bin -o /tmp/x; put
/// /tmp/y -o y`) after logging in at `addr`. `passive` picks `PASV` (trusting the `227`
/// address: `ftp:fix-pasv-address false`) or `PORT`. Fails at the first failing command.
///
/// Trap: lftp 4.9 counts every 127.0.0.0/8 address but 127.0.0.1 as "reserved" and
/// replaces such a `227` address with the control connection's address whatever the
/// settings say. So lftp never connects to `127.0.0.99` (or to any 127.x.y.z other than
/// 127.0.0.1) from a `227`; it does trust 127.0.0.1 and non-loopback addresses (e.g.
/// the private address behind the netns NAT).
pub fn lftp(addr: SocketAddr, user: &str, pass: &str, passive: bool, script: &str) -> ClientResult {
    lftp_with(addr, user, pass, passive, None, script)
}

/// [`lftp`] over explicit FTPS, trusting only the CA in `ca`: `AUTH TLS` required
/// (`ftp:ssl-force`), data and listings protected (`PROT P`), certificate and host
/// name (the IP address) verified.
pub fn lftp_tls(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    passive: bool,
    ca: &Path,
    script: &str,
) -> ClientResult {
    lftp_with(addr, user, pass, passive, Some(ca), script)
}

fn lftp_with(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    passive: bool,
    tls_ca: Option<&Path>,
    script: &str,
) -> ClientResult {
    let tls = match tls_ca {
        None => "set ftp:ssl-allow no;".to_string(),
        Some(ca) => format!(
            "set ftp:ssl-allow yes; set ftp:ssl-force true; set ftp:ssl-protect-data true; \
             set ftp:ssl-protect-list true; set ssl:ca-file {}; \
             set ssl:verify-certificate yes; set ssl:check-hostname yes;",
            lftp_quote(&ca.to_string_lossy())
        ),
    };
    let settings = format!(
        "{tls} set ftp:fix-pasv-address false; set ftp:prefer-epsv false; \
         set ftp:passive-mode {};",
        if passive { "on" } else { "off" },
    );
    lftp_run(addr, user, pass, &settings, script)
}

/// [`lftp`] (passive, no TLS) connecting from the local address `source`, so the proxy
/// sees the client as that host.
pub fn lftp_from(
    addr: SocketAddr,
    (user, pass): (&str, &str),
    source: std::net::Ipv4Addr,
    script: &str,
) -> ClientResult {
    let settings = format!(
        "set ftp:ssl-allow no; set ftp:passive-mode on; set net:socket-bind-ipv4 {source};"
    );
    lftp_run(addr, user, pass, &settings, script)
}

/// An lftp script after logging in at `addr`, with lftp's own defaults for everything
/// that decides where data connections go (passive, `ftp:fix-pasv-address` on, `EPSV`
/// not preferred, TLS tried): only failing fast, retries and overwrites are set.
pub fn lftp_stock(addr: SocketAddr, user: &str, pass: &str, script: &str) -> ClientResult {
    lftp_run(addr, user, pass, "", script)
}

/// lftp with `settings`, failing fast (no interaction, one retry, overwrites allowed),
/// logged in at `addr`, then `script`.
fn lftp_run(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    settings: &str,
    script: &str,
) -> ClientResult {
    let full = format!(
        "set cmd:fail-exit yes; set cmd:interactive false; {settings} \
         set net:max-retries 1; set net:persist-retries 0; set net:timeout {CONNECT_TIMEOUT_S}; \
         set net:reconnect-interval-base 1; set xfer:clobber on; \
         open -u {},{} -p {} {}; {script}",
        lftp_quote(user),
        lftp_quote(pass),
        addr.port(),
        addr.ip()
    );
    let mut cmd = Command::new("lftp");
    cmd.arg("-c").arg(full);
    run(cmd, CLIENT_TIMEOUT)
}

fn lftp_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._@".contains(c))
    {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

// ---------------------------------------------------------------------------------------
// Python ftplib

/// One operation of `tests/peers/ftplib_client.py`.
#[derive(Debug, Clone, Copy)]
pub enum FtplibOp<'a> {
    /// `LIST`, printed to stdout.
    List,
    /// `NLST`, one name a line to stdout.
    Nlst,
    /// `RETR remote` into the local file.
    Get(&'a str, &'a Path),
    /// `STOR remote` from the local file.
    Put(&'a Path, &'a str),
}

/// Runs Python's ftplib (with `trust_server_pasv_ipv4_address = True`) against `addr`:
/// logs in, then the operations in order; passive (`PASV`) or active (`PORT`).
pub fn ftplib_ops(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    passive: bool,
    ops: &[FtplibOp],
) -> ClientResult {
    ftplib_ops_with(addr, user, pass, passive, None, ops)
}

/// [`ftplib_ops`] with ftplib's own defaults: passive, and the `227` address ignored
/// (`trust_server_pasv_ipv4_address = False`): data goes to the control host.
pub fn ftplib_stock_ops(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    ops: &[FtplibOp],
) -> ClientResult {
    let mut cmd = ftplib_command(Path::new(DEBIAN_PYTHON), addr, user, pass, true, None, ops);
    cmd.arg("--stock");
    run(cmd, CLIENT_TIMEOUT)
}

/// [`ftplib_ops`] over explicit FTPS: `ftplib.FTP_TLS` with a context trusting only the
/// CA in `ca` (certificate and host name checked), `AUTH TLS` before login, then
/// `prot_p()`. Data connections resume the control connection's TLS session (stock
/// ftplib does not, and vsftpd and proftpd refuse that).
pub fn ftplib_tls_ops(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    passive: bool,
    ca: &Path,
    ops: &[FtplibOp],
) -> ClientResult {
    ftplib_ops_with(addr, user, pass, passive, Some(ca), ops)
}

/// [`ftplib_tls_ops`] run by the Python interpreter `python` (see [`pythons`]).
pub fn ftplib_tls_ops_with(
    python: &Path,
    addr: SocketAddr,
    (user, pass): (&str, &str),
    passive: bool,
    ca: &Path,
    ops: &[FtplibOp],
) -> ClientResult {
    let cmd = ftplib_command(python, addr, user, pass, passive, Some(ca), ops);
    run(cmd, CLIENT_TIMEOUT)
}

/// The Python 3 interpreters on this machine, Debian's first: `/usr/bin/python3` and the
/// `python3` on `PATH` when that is another build (a pyenv one, say). How a TLS
/// connection is closed matters to them differently: Python 3.11.7's `ftplib.FTP_TLS`
/// fails an upload whose data connection ends without the peer's `close_notify`, where
/// Debian's 3.11.2 lets it pass.
pub fn pythons() -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from(DEBIAN_PYTHON)];
    let on_path = Command::new("python3")
        .args(["-c", "import ftplib, ssl, sys; print(sys.executable)"])
        .output();
    if let Ok(out) = on_path
        && out.status.success()
    {
        let exe = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let same = |a: &Path, b: &Path| a.canonicalize().ok() == b.canonicalize().ok();
        if exe.is_file() && !found.iter().any(|p| same(p, &exe)) {
            found.push(exe);
        }
    }
    found
}

fn ftplib_ops_with(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    passive: bool,
    tls_ca: Option<&Path>,
    ops: &[FtplibOp],
) -> ClientResult {
    run(
        ftplib_command(
            Path::new(DEBIAN_PYTHON),
            addr,
            user,
            pass,
            passive,
            tls_ca,
            ops,
        ),
        CLIENT_TIMEOUT,
    )
}

/// [`ftplib_ops`] (passive) connecting from the local address `source`.
pub fn ftplib_from(
    addr: SocketAddr,
    (user, pass): (&str, &str),
    source: std::net::Ipv4Addr,
    ops: &[FtplibOp],
) -> ClientResult {
    let mut cmd = ftplib_command(Path::new(DEBIAN_PYTHON), addr, user, pass, true, None, ops);
    cmd.args(["--source", &source.to_string()]);
    run(cmd, CLIENT_TIMEOUT)
}

/// Debian's Python, which has pyftpdlib beside it and runs the ftplib client by default.
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

fn ftplib_command(
    python: &Path,
    addr: SocketAddr,
    user: &str,
    pass: &str,
    passive: bool,
    tls_ca: Option<&Path>,
    ops: &[FtplibOp],
) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/ftplib_client.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(["--host", &addr.ip().to_string()])
        .args(["--port", &addr.port().to_string()])
        .args(["--user", user, "--password", pass])
        .args(["--timeout", &CONNECT_TIMEOUT_S.to_string()])
        .arg(if passive { "--passive" } else { "--active" });
    if let Some(ca) = tls_ca {
        cmd.arg("--tls-ca").arg(ca);
    }
    for op in ops {
        match op {
            FtplibOp::List => {
                cmd.arg("--list");
            }
            FtplibOp::Nlst => {
                cmd.arg("--nlst");
            }
            FtplibOp::Get(remote, local) => {
                cmd.arg("--get").arg(remote).arg(local);
            }
            FtplibOp::Put(local, remote) => {
                cmd.arg("--put").arg(local).arg(remote);
            }
        }
    }
    cmd
}

/// ftplib: download `remote_get` to `local_get`, then upload `local_put` as `remote_put`.
#[allow(clippy::too_many_arguments)]
pub fn ftplib(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    passive: bool,
    remote_get: &str,
    local_get: &Path,
    local_put: &Path,
    remote_put: &str,
) -> ClientResult {
    ftplib_ops(
        addr,
        user,
        pass,
        passive,
        &[
            FtplibOp::Get(remote_get, local_get),
            FtplibOp::Put(local_put, remote_put),
        ],
    )
}

/// ftplib through `proxy` to `server`, passive and then active: lists, downloads
/// `big.bin` into `dir` and uploads `up`, checking the listing and both files byte for
/// byte.
pub fn ftplib_round_trip(server: &FtpServer, proxy: &Proxy, dir: &Path, up: &Path) {
    let data = std::fs::read(up).unwrap();
    for passive in [true, false] {
        let got = dir.join(format!("ftplib-{passive}.bin"));
        let name = format!("ftplib-up-{passive}.bin");
        let ops = [
            FtplibOp::List,
            FtplibOp::Get(peers::BIG_NAME, &got),
            FtplibOp::Put(up, &name),
        ];
        let r = ftplib_ops(proxy.addr, server.user, server.pass, passive, &ops);
        assert!(
            r.ok(),
            "ftplib (passive={passive}) through the proxy failed: {r}\nproxy log:\n{}",
            proxy.log()
        );
        assert!(r.stdout.contains(peers::BIG_NAME), "{r}");
        assert!(
            std::fs::read(&got).unwrap() == peers::big_bin(),
            "ftplib download differs (passive={passive})"
        );
        assert!(
            std::fs::read(server.file(&name)).unwrap() == data,
            "ftplib upload differs (passive={passive})"
        );
    }
}
