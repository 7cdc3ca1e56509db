//! Zero-copy relaying on Linux: `splice(2)` moves the file from one socket to the other
//! through a pipe inside the kernel, so the bytes never enter the proxy's memory. Tokio
//! has no splice of its own; this drives the syscalls from its readiness events.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::copy::CopyError;

/// Bytes asked of one `splice` call; the pipe is grown to hold this much.
const CHUNK: usize = 1 << 20;

/// `FXPRELAY_SPLICE=1` relays with zero-copy `splice(2)`. Off by default: on the VMs we
/// measure on (2 vCPUs, Linux 6.18) it made downloads slower than the user-space copy
/// (RETR 0.64x vs 0.82x of direct) while halving the CPU of uploads; it stays available
/// for operators to measure on their kernel with scripts/bench-relay.sh.
pub fn requested() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FXPRELAY_SPLICE").is_some_and(|v| v == "1"))
}

/// Copies everything `from` sends until its EOF into `to`, telling `progress` the running
/// total after each chunk. Returns `Ok(None)` when the kernel cannot splice these sockets
/// (the caller then copies in user space); nothing has been read in that case.
pub async fn splice_to_eof(
    from: &TcpStream,
    to: &TcpStream,
    idle: Duration,
    progress: &mut impl FnMut(u64),
) -> Result<Option<u64>, CopyError> {
    let Some((pipe_r, pipe_w)) = pipe()? else {
        return Ok(None);
    };
    let mut total = 0u64;
    loop {
        let fill = from.async_io(Interest::READABLE, || {
            splice(from.as_raw_fd(), pipe_w.as_raw_fd(), CHUNK)
        });
        let filled = timeout(idle, fill)
            .await
            .map_err(|_| CopyError::Idle(idle))?;
        let n = match filled {
            Ok(n) => n,
            Err(e) if total == 0 && unsupported(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Ok(Some(total));
        }
        let mut left = n;
        while left > 0 {
            let drain = to.async_io(Interest::WRITABLE, || {
                splice(pipe_r.as_raw_fd(), to.as_raw_fd(), left)
            });
            let sent = timeout(idle, drain)
                .await
                .map_err(|_| CopyError::Idle(idle))??;
            if sent == 0 {
                return Err(CopyError::Io(io::ErrorKind::WriteZero.into()));
            }
            left -= sent;
        }
        total += n as u64;
        progress(total);
    }
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

/// A non-blocking pipe, as large as one chunk where the kernel allows it.
fn pipe() -> io::Result<Option<(OwnedFd, OwnedFd)>> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two descriptors for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        let e = io::Error::last_os_error();
        return if unsupported(&e) { Ok(None) } else { Err(e) };
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A bigger pipe means fewer syscalls; failing to grow it only costs speed.
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
    Ok(Some((r, w)))
}

/// One non-blocking `splice`; `WouldBlock` tells tokio to wait for readiness again.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: plain syscall on descriptors that stay open for the call; null offsets mean
    // "current position", as required for sockets and pipes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
