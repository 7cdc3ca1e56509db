//! A raw FTP control connection, for what no FTP client does on purpose: hostile input,
//! abandoned `PASV`s, commands in the middle of a transfer, sessions held open across a
//! reload or shutdown.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use super::peers;

/// How long a reply may take. Generous: a transfer's final reply comes only after the
/// transfer, and the machine may be busy; a missing reply fails the test, never hangs it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Control {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Control {
    /// Connects without reading the greeting.
    pub fn connect(addr: SocketAddr) -> Control {
        let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        Control {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    /// Connects from `local` (posing as another host) without reading the greeting.
    pub fn connect_from(local: Ipv4Addr, addr: SocketAddr) -> Control {
        let s = connect_from(local, addr)
            .unwrap_or_else(|e| panic!("connect to {addr} from {local}: {e}"));
        s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        Control {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    /// Connects and logs in as the test user, in binary mode.
    pub fn login(addr: SocketAddr) -> Control {
        let mut c = Control::connect(addr);
        c.expect(220);
        c.cmd_expect(&format!("USER {}", peers::USER), 331);
        c.cmd_expect(&format!("PASS {}", peers::PASS), 230);
        c.cmd_expect("TYPE I", 200);
        c
    }

    /// Sends `bytes` as they are: no line ending is added, anything may be sent.
    pub fn send(&mut self, bytes: &[u8]) {
        self.w
            .write_all(bytes)
            .expect("send on the control connection");
    }

    /// Sends `bytes`, reporting failure (the proxy closed) instead of panicking; gives up
    /// after [`REPLY_TIMEOUT`] when the proxy stops reading.
    pub fn try_send(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.w.set_write_timeout(Some(REPLY_TIMEOUT))?;
        (&self.w).write_all(bytes)
    }

    /// The next complete reply, lossily decoded: one line, or all lines of a multi-line
    /// reply (`123-...` up to `123 ...`). Panics on timeout or when the connection closes
    /// first.
    pub fn reply(&mut self) -> String {
        let first = self.line();
        let code = match first.as_bytes() {
            [a, b, c, b'-', ..] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => &first[..3],
            _ => return first,
        };
        let mut all = first.clone();
        loop {
            let line = self.line();
            all.push_str(&line);
            if line.starts_with(code) && line[3..].starts_with([' ', '\r', '\n']) {
                return all;
            }
        }
    }

    /// The next complete reply if all of it arrives within `within`, else what went
    /// wrong (a timeout, with any partial line, or the connection closing): for replies
    /// that must come promptly, where [`REPLY_TIMEOUT`] would be far too lenient.
    pub fn reply_within(&mut self, within: Duration) -> Result<String, String> {
        let deadline = std::time::Instant::now() + within;
        let result = self.reply_by(deadline);
        self.r
            .get_ref()
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("restore the read timeout");
        result
    }

    fn reply_by(&mut self, deadline: std::time::Instant) -> Result<String, String> {
        let first = self.line_by(deadline)?;
        let code = match first.as_bytes() {
            [a, b, c, b'-', ..] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
                first[..3].to_string()
            }
            _ => return Ok(first),
        };
        let mut all = first;
        loop {
            let line = self
                .line_by(deadline)
                .map_err(|e| format!("{e} after {all:?}"))?;
            all.push_str(&line);
            if line.starts_with(&code) && line[3..].starts_with([' ', '\r', '\n']) {
                return Ok(all);
            }
        }
    }

    fn line_by(&mut self, deadline: std::time::Instant) -> Result<String, String> {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // A zero timeout is refused (it would mean "none").
        let left = left.max(Duration::from_millis(1));
        self.r
            .get_ref()
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        match self.r.read_until(b'\n', &mut buf) {
            Ok(0) => Err("the connection closed before a reply".into()),
            Ok(_) if buf.ends_with(b"\n") => Ok(String::from_utf8_lossy(&buf).into_owned()),
            Ok(_) => Err(format!(
                "the connection closed within a line ({:?})",
                String::from_utf8_lossy(&buf)
            )),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(format!(
                    "timed out, no complete reply (got {:?})",
                    String::from_utf8_lossy(&buf)
                ))
            }
            Err(e) => Err(format!(
                "{e} before a complete reply (got {:?})",
                String::from_utf8_lossy(&buf)
            )),
        }
    }

    /// Sends `command` with CRLF and returns its reply.
    pub fn cmd(&mut self, command: &str) -> String {
        self.send(format!("{command}\r\n").as_bytes());
        self.reply()
    }

    /// The next reply, which must have `code`.
    pub fn expect(&mut self, code: u16) -> String {
        let r = self.reply();
        assert!(
            r.starts_with(&code.to_string()),
            "expected {code}, got: {r}"
        );
        r
    }

    /// Sends `command`; its reply must have `code`.
    pub fn cmd_expect(&mut self, command: &str, code: u16) -> String {
        self.send(format!("{command}\r\n").as_bytes());
        let r = self.reply();
        assert!(
            r.starts_with(&code.to_string()),
            "{command}: expected {code}, got: {r}"
        );
        r
    }

    /// Whether the peer has closed the connection: end of stream with nothing more sent.
    pub fn closed(&mut self) -> bool {
        let mut buf = Vec::new();
        matches!(self.r.read_until(b'\n', &mut buf), Ok(0))
    }

    /// `PASV` and the address it announced, or the reply if it is not a `227`.
    pub fn pasv(&mut self) -> Result<SocketAddr, String> {
        let r = self.cmd("PASV");
        if !r.starts_with("227") {
            return Err(r);
        }
        let nums: Vec<u16> = r[r.find('(').unwrap() + 1..r.find(')').unwrap()]
            .split(',')
            .map(|n| n.trim().parse().unwrap())
            .collect();
        let ip = Ipv4Addr::new(nums[0] as u8, nums[1] as u8, nums[2] as u8, nums[3] as u8);
        Ok(SocketAddr::from((ip, nums[4] * 256 + nums[5])))
    }

    fn line(&mut self) -> String {
        let mut buf = Vec::new();
        match self.r.read_until(b'\n', &mut buf) {
            Ok(0) => panic!("the connection closed before a reply"),
            Ok(_) => String::from_utf8_lossy(&buf).into_owned(),
            Err(e) => panic!(
                "no complete reply within {REPLY_TIMEOUT:?}: {e} (got {:?})",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
}

/// A TCP connection to `to` from `local` (any port), to pose as another host. Blocking,
/// with no read timeout: set one if the test needs it.
pub fn connect_from(local: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    // std cannot bind before connecting; tokio's socket can, and hands over a std stream.
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((local, 0)))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stream = rt.block_on(s.connect(to))?.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}
