//! Zero-copy relaying on Linux: `splice(2)` moves the file from one socket to the other
//! through a pipe inside the kernel, so the bytes never enter the proxy's memory. Tokio
//! has no splice of its own; this drives the syscalls from its readiness events.
//!
//! The loop keeps both halves busy: it fills the pipe from the sender whenever the pipe
//! has room and drains it into the receiver whenever it holds bytes, and waits only when
//! neither can move. (The first version filled the pipe, then drained it whole before
//! reading again; see README "Performance" for what that cost.)

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::copy::CopyError;

/// Pipe capacity asked with `F_SETPIPE_SZ` (1 MiB is the default `pipe-max-size`, so no
/// privilege is needed). The pipe's pages are kernel memory, held only while the
/// receiver is slower than the sender.
const PIPE_SIZE: usize = 1 << 20;

/// Empty pipes kept for the next transfer, so it does not pay `pipe2` + `F_SETPIPE_SZ`.
/// Each costs two descriptors and no buffer memory while empty.
const POOL_MAX: usize = 32;

/// A pooled pipe unused for this long is closed: a proxy without transfers holds none,
/// and its descriptor count returns to its baseline.
const POOL_KEEP: Duration = Duration::from_secs(2);

static POOL: PipePool = PipePool::new(POOL_MAX, POOL_KEEP);

/// `FXPRELAY_SPLICE=0` turns zero-copy off (the user-space copy of [`super::copy`] then
/// moves every byte); anything else, or unset, leaves it on where the kernel can splice.
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FXPRELAY_SPLICE").is_none_or(|v| v != "0"))
}

/// Copies everything `from` sends until its EOF into `to`, telling `progress` the running
/// total after each write. Returns `Ok(None)` when the kernel cannot splice these sockets
/// (the caller then copies in user space); nothing has been read in that case. Does not
/// shut `to` down.
pub async fn splice_to_eof(
    from: &TcpStream,
    to: &TcpStream,
    idle: Duration,
    progress: &mut impl FnMut(u64),
) -> Result<Option<u64>, CopyError> {
    let Some(pipe) = POOL.lease()? else {
        return Ok(None);
    };
    let (pipe, result) = through(pipe, from, to, idle, progress).await;
    if let Some(pipe) = pipe {
        POOL.give_back(pipe);
    }
    result
}

/// [`splice_to_eof`] through the given pipe; hands the pipe back when it is empty (bytes
/// left in a broken transfer's pipe belong to nobody: it is closed).
async fn through(
    pipe: Pipe,
    from: &TcpStream,
    to: &TcpStream,
    idle: Duration,
    progress: &mut impl FnMut(u64),
) -> (Option<Pipe>, Result<Option<u64>, CopyError>) {
    let mut copy = Splice {
        pipe,
        in_pipe: 0,
        total: 0,
        eof: false,
    };
    let result = copy.run(from, to, idle, progress).await;
    let empty = copy.in_pipe == 0 && result.is_ok();
    (empty.then_some(copy.pipe), result)
}

/// One transfer's state: the pipe and how many bytes sit in it.
struct Splice {
    pipe: Pipe,
    in_pipe: usize,
    total: u64,
    eof: bool,
}

/// What one attempt at filling the pipe did.
enum Fill {
    Moved(usize),
    Eof,
    /// The sender has nothing now: its readiness is cleared, wait for the next event.
    Empty,
    /// `EAGAIN` with bytes already in the pipe: either the sender is empty or the pipe's
    /// slots are full (a slot holds one page fragment, so a pipe can be full with fewer
    /// bytes than its capacity). The sender's readiness is kept; drain first, then retry.
    Ambiguous,
}

impl Splice {
    async fn run(
        &mut self,
        from: &TcpStream,
        to: &TcpStream,
        idle: Duration,
        progress: &mut impl FnMut(u64),
    ) -> Result<Option<u64>, CopyError> {
        let mut deadline = Instant::now() + idle;
        loop {
            let mut moved = false;
            let mut wait_read = false;
            if !self.eof && self.in_pipe < self.pipe.capacity {
                match self.fill(from) {
                    Ok(Fill::Moved(n)) => {
                        self.in_pipe += n;
                        moved = true;
                    }
                    Ok(Fill::Eof) => {
                        self.eof = true;
                        moved = true;
                    }
                    Ok(Fill::Empty) => wait_read = true,
                    Ok(Fill::Ambiguous) => {}
                    Err(e) if self.total == 0 && self.in_pipe == 0 && unsupported(&e) => {
                        return Ok(None);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let mut wait_write = false;
            if self.in_pipe > 0 {
                match self.drain(to) {
                    Ok(n) => {
                        self.in_pipe -= n;
                        self.total += n as u64;
                        progress(self.total);
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_write = true,
                    Err(e) => return Err(e.into()),
                }
            }
            if self.eof && self.in_pipe == 0 {
                return Ok(Some(self.total));
            }
            if moved {
                deadline = Instant::now() + idle;
                continue;
            }
            // Nothing moved: wait for the sender or the receiver, whichever can unblock
            // us. Readiness is edge-driven by tokio, so this costs no wakeup until the
            // kernel has news for one of them.
            let ready = async {
                match (wait_read, wait_write) {
                    (true, true) => tokio::select! {
                        r = from.readable() => r,
                        r = to.writable() => r,
                    },
                    (true, false) => from.readable().await,
                    (false, true) => to.writable().await,
                    // Not reached: a pass that moves nothing has tried a drain that
                    // blocked or a fill that found the sender empty.
                    (false, false) => Ok(()),
                }
            };
            timeout_at(deadline, ready)
                .await
                .map_err(|_| CopyError::Idle(idle))??;
        }
    }

    fn fill(&self, from: &TcpStream) -> io::Result<Fill> {
        let room = self.pipe.capacity.saturating_sub(self.in_pipe);
        let in_pipe = self.in_pipe;
        let fd = from.as_raw_fd();
        let w = self.pipe.w.as_raw_fd();
        let r = from.try_io(Interest::READABLE, || {
            match splice(fd, w, room, libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK) {
                Ok(0) => Ok(Fill::Eof),
                Ok(n) => Ok(Fill::Moved(n)),
                // Returning Ok keeps tokio's readiness: it may be the pipe that is full.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && in_pipe > 0 => {
                    Ok(Fill::Ambiguous)
                }
                Err(e) => Err(e),
            }
        });
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Fill::Empty),
            r => r,
        }
    }

    fn drain(&self, to: &TcpStream) -> io::Result<usize> {
        // More is coming unless the sender has ended: the receiver's TCP may then fill
        // whole segments across two calls instead of pushing a short one.
        let more = if self.eof { 0 } else { libc::SPLICE_F_MORE };
        let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK | more;
        let fd = to.as_raw_fd();
        let r = self.pipe.r.as_raw_fd();
        let len = self.in_pipe;
        to.try_io(Interest::WRITABLE, || match splice(r, fd, len, flags) {
            // The pipe held bytes, so 0 means the receiver took none and never will.
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            r => r,
        })
    }
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

/// A non-blocking pipe and its capacity in bytes.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// A new pipe, sized to `size` bytes where allowed; `None` where pipes cannot be made.
    fn new(size: usize) -> io::Result<Option<Pipe>> {
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
        let mut size =
            unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
        if size <= 0 {
            // SAFETY: as above.
            size = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
        }
        // A pipe holds at least one page (pipe(7)).
        let capacity = usize::try_from(size)
            .ok()
            .filter(|&c| c > 0)
            .unwrap_or(4096);
        Ok(Some(Pipe { r, w, capacity }))
    }
}

/// Empty pipes for reuse: at most `max` of them, each kept for `keep` after its return.
struct PipePool {
    state: Mutex<PoolState>,
    max: usize,
    keep: Duration,
}

struct PoolState {
    /// Oldest return first; leases take the newest, so the old ones age out.
    idle: Vec<(Pipe, Instant)>,
    /// A task is closing pipes as they pass `keep`.
    reaping: bool,
}

impl PipePool {
    const fn new(max: usize, keep: Duration) -> PipePool {
        PipePool {
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                reaping: false,
            }),
            max,
            keep,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty pipe from the pool, or a new one.
    fn lease(&self) -> io::Result<Option<Pipe>> {
        match self.lock().idle.pop() {
            Some((p, _)) => Ok(Some(p)),
            None => Pipe::new(PIPE_SIZE),
        }
    }

    /// Takes an empty pipe back (closes it when the pool is full). Only the caller knows
    /// it is empty: a pipe with bytes of a broken transfer must be dropped instead.
    fn give_back(&'static self, pipe: Pipe) {
        let mut state = self.lock();
        if state.idle.len() >= self.max {
            return;
        }
        state.idle.push((pipe, Instant::now()));
        // Outside a runtime (unit tests) pipes are kept until leased.
        if !state.reaping
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            state.reaping = true;
            runtime.spawn(self.reap());
        }
    }

    /// Closes pipes unused for `keep`, until none is left.
    async fn reap(&'static self) {
        loop {
            tokio::time::sleep(self.keep).await;
            let now = Instant::now();
            let stale: Vec<_> = {
                let mut state = self.lock();
                let fresh = state
                    .idle
                    .iter()
                    .position(|(_, at)| now.duration_since(*at) < self.keep)
                    .unwrap_or(state.idle.len());
                let stale = state.idle.drain(..fresh).collect();
                if state.idle.is_empty() {
                    state.reaping = false;
                }
                stale
            };
            // Closed outside the lock.
            drop(stale);
            if !self.lock().reaping {
                return;
            }
        }
    }
}

/// One non-blocking `splice`; `WouldBlock` tells tokio to wait for readiness again.
fn splice(from: RawFd, to: RawFd, len: usize, flags: libc::c_uint) -> io::Result<usize> {
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const T: Duration = Duration::from_secs(10);

    /// A connected pair: (the end this side dials, the end it accepts).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialled = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = l.accept().await.unwrap();
        (dialled, accepted)
    }

    #[tokio::test]
    async fn a_slow_receiver_gets_every_byte_in_order() {
        let (mut sender, from) = pair().await;
        let (to, mut receiver) = pair().await;
        // More than pipe and socket buffers hold, so the pipe fills and the sender waits.
        let data: Vec<u8> = (0..24 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
        let sent = data.clone();
        let send = tokio::spawn(async move {
            // Odd-sized writes: pipe slots fill with partial pages.
            for chunk in sent.chunks(1000) {
                sender.write_all(chunk).await.unwrap();
            }
            sender.shutdown().await.unwrap();
        });
        let receive = tokio::spawn(async move {
            let mut got = Vec::with_capacity(data.len());
            let mut buf = [0u8; 7000];
            let mut reads = 0u32;
            loop {
                let n = receiver.read(&mut buf).await.unwrap();
                if n == 0 {
                    break (got, data);
                }
                got.extend_from_slice(&buf[..n]);
                reads += 1;
                if reads.is_multiple_of(64) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        let mut last = 0;
        let n = splice_to_eof(&from, &to, T, &mut |t| last = t)
            .await
            .unwrap()
            .expect("loopback TCP splices");
        drop(to);
        send.await.unwrap();
        let (got, data) = receive.await.unwrap();
        assert_eq!((n, last), (data.len() as u64, n));
        assert!(got == data, "{} bytes received", got.len());
    }

    /// A one-slot pipe is full after one page fragment, however few bytes that holds:
    /// the sender's socket then has data, the pipe takes none (`EAGAIN`), and the copy must
    /// drain and retry rather than wait for news from a sender whose window is closed.
    #[tokio::test]
    async fn a_pipe_full_of_slots_is_drained_and_refilled() {
        let (mut sender, from) = pair().await;
        let (to, mut receiver) = pair().await;
        let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let send = tokio::spawn(async move {
            sender.write_all(&sent).await.unwrap();
            sender.shutdown().await.unwrap();
            // Held open: the sender waits for the proxy, as an FTP server waits for 226.
            let mut rest = Vec::new();
            sender.read_to_end(&mut rest).await.unwrap();
        });
        let receive = tokio::spawn(async move {
            let mut got = Vec::new();
            receiver.read_to_end(&mut got).await.unwrap();
            got
        });
        let pipe = Pipe::new(4096).unwrap().unwrap();
        assert_eq!(pipe.capacity, 4096);
        let (pipe, n) = through(pipe, &from, &to, Duration::from_secs(2), &mut |_| {}).await;
        assert!(pipe.is_some(), "an empty pipe is handed back");
        assert_eq!(n.unwrap(), Some(data.len() as u64));
        drop((from, to));
        assert!(receive.await.unwrap() == data);
        send.await.unwrap();
    }

    #[tokio::test]
    async fn an_empty_file_is_an_immediate_eof() {
        let (sender, from) = pair().await;
        let (to, _receiver) = pair().await;
        drop(sender);
        let mut calls = 0;
        let n = splice_to_eof(&from, &to, T, &mut |_| calls += 1)
            .await
            .unwrap();
        assert_eq!((n, calls), (Some(0), 0));
    }

    #[tokio::test]
    async fn a_receiver_that_stops_reading_times_out() {
        let idle = Duration::from_millis(200);
        let (mut sender, from) = pair().await;
        let (to, _receiver) = pair().await;
        tokio::spawn(async move {
            let block = vec![7u8; 1 << 20];
            while sender.write_all(&block).await.is_ok() {}
        });
        let e = splice_to_eof(&from, &to, idle, &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, CopyError::Idle(d) if d == idle), "{e}");
    }

    #[tokio::test]
    async fn a_receiver_that_closes_is_an_io_error() {
        let (mut sender, from) = pair().await;
        let (to, receiver) = pair().await;
        drop(receiver);
        tokio::spawn(async move {
            let block = vec![7u8; 1 << 20];
            while sender.write_all(&block).await.is_ok() {}
        });
        let e = splice_to_eof(&from, &to, T, &mut |_| {}).await.unwrap_err();
        assert!(matches!(e, CopyError::Io(_)), "{e}");
    }

    #[test]
    fn pipes_are_grown_and_reused_up_to_the_pool_size() {
        let pool: &'static PipePool = Box::leak(Box::new(PipePool::new(1, POOL_KEEP)));
        let a = pool.lease().unwrap().unwrap();
        assert_eq!(
            a.capacity, PIPE_SIZE,
            "pipe-max-size allows 1 MiB unprivileged"
        );
        let b = pool.lease().unwrap().unwrap();
        let (a_fd, b_fd) = (a.r.as_raw_fd(), b.r.as_raw_fd());
        pool.give_back(a);
        // The pool is full: b is closed, not kept.
        pool.give_back(b);
        assert_eq!(pool.lock().idle.len(), 1);
        let again = pool.lease().unwrap().unwrap();
        assert_eq!(again.r.as_raw_fd(), a_fd);
        assert_ne!(a_fd, b_fd);
    }

    #[tokio::test]
    async fn pooled_pipes_are_closed_when_unused() {
        let keep = Duration::from_millis(50);
        let pool: &'static PipePool = Box::leak(Box::new(PipePool::new(4, keep)));
        let emptied = || async {
            let deadline = Instant::now() + T;
            loop {
                {
                    let state = pool.lock();
                    if state.idle.is_empty() && !state.reaping {
                        return;
                    }
                }
                assert!(Instant::now() < deadline, "pooled pipes still open");
                tokio::time::sleep(keep / 5).await;
            }
        };
        // Twice: the reaper ends when the pool is empty and starts again with the next.
        for _ in 0..2 {
            let (a, b) = (
                pool.lease().unwrap().unwrap(),
                pool.lease().unwrap().unwrap(),
            );
            pool.give_back(a);
            pool.give_back(b);
            assert_eq!(pool.lock().idle.len(), 2);
            emptied().await;
        }
    }
}
