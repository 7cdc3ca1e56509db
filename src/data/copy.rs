//! The one user-space copy loop: the relay-mode data connections ([`super::relay`]) and
//! the FXP engine's relay method both move their files through it when they cannot
//! splice (TLS legs, `FXPRELAY_SPLICE=0`, a kernel without splice), so one buffer policy
//! and one timeout rule apply to every byte the proxy copies.
//!
//! Generic over the streams (TCP or TLS); the zero-copy `splice(2)` variant and the
//! socket tuning are TCP-only and live in [`super::socket`].

use std::io;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tracing::debug;

/// Largest copy buffer. Measured with scripts/bench-relay.sh (1 GiB over loopback): 64 KiB
/// cost 0.53 CPU s/GiB and 0.73x direct RETR speed, 1 MiB 0.27 s/GiB and ~1x; 4 MiB gained
/// little more for four times the memory per transfer (256 KiB: RETR 1982 against 2155
/// MB/s for 1 MiB, alternating in one run).
pub const COPY_BUFFER: usize = 1024 * 1024;

/// Every copy starts with this much (a TLS record is at most 16 KiB), so an idle or slow
/// transfer holds little; [`Sizer`] grows it while the transfer is fast.
pub const MIN_BUFFER: usize = 16 * 1024;

/// How often the observed throughput resizes the buffer.
const WINDOW: Duration = Duration::from_millis(10);

/// A buffer holds this long a slice of the observed throughput: 1 MiB at 2 GB/s, 16 KiB
/// (the floor) below 32 MB/s. Bigger buffers only save syscalls, which matter when fast.
const SLICE: Duration = Duration::from_micros(500);

/// Sizes a transfer's copy buffer from its throughput: growing only after two windows in a
/// row wanted more, and then at most doubling per [`WINDOW`] (the burst that fills empty
/// socket buffers at the start of a slow transfer buys nothing), and
/// shrinking to the need at once when that is a quarter of the buffer or the floor (a
/// transfer near the boundary does not reallocate every window).
#[derive(Debug)]
pub struct Sizer {
    size: usize,
    window_start: Instant,
    window_bytes: u64,
    /// The last window wanted a bigger buffer.
    wanted_more: bool,
}

impl Sizer {
    pub fn new(now: Instant) -> Sizer {
        Sizer {
            size: MIN_BUFFER,
            window_start: now,
            window_bytes: 0,
            wanted_more: false,
        }
    }

    /// The buffer size to use now.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Counts `n` bytes moved at `now`; returns the new size when the buffer should change.
    pub fn moved(&mut self, n: usize, now: Instant) -> Option<usize> {
        self.window_bytes += n as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW {
            return None;
        }
        let rate = self.window_bytes as f64 / elapsed.as_secs_f64();
        let need = ((rate * SLICE.as_secs_f64()) as usize)
            .clamp(MIN_BUFFER, COPY_BUFFER)
            .next_power_of_two();
        self.window_start = now;
        self.window_bytes = 0;
        let wanted_more = std::mem::replace(&mut self.wanted_more, need > self.size);
        let next = if need > self.size && wanted_more {
            need.min(self.size * 2)
        } else if need > self.size {
            self.size
        } else if need <= self.size / 4 || need == MIN_BUFFER {
            need
        } else {
            self.size
        };
        (next != self.size).then(|| {
            self.size = next;
            next
        })
    }
}

/// Why a copy stopped before the sender's EOF was passed on.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A read or a write made no progress for this long.
    #[error("no data moved for {0:?}")]
    Idle(Duration),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Copies everything `from` sends until its EOF into `to`, then shuts `to` down so the
/// receiver sees the end of the file as it was sent (a half-close). Returns the bytes
/// copied; `progress` hears the running total after each chunk, so it must be cheap.
/// The buffer follows the throughput ([`Sizer`]): from 16 KiB for a slow transfer to
/// 1 MiB for a fast one.
pub async fn copy_to_eof<R, W>(
    mut from: R,
    mut to: W,
    idle: Duration,
    mut progress: impl FnMut(u64),
) -> Result<u64, CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut sizer = Sizer::new(Instant::now());
    let mut buf = vec![0u8; sizer.size()];
    let mut total = 0u64;
    let mut eof = false;
    while !eof {
        // Each step must make progress within `idle`: a stalled peer on either side
        // cannot hold the transfer, its port and its buffers forever.
        let mut n = timeout(idle, from.read(&mut buf))
            .await
            .map_err(|_| CopyError::Idle(idle))??;
        if n == 0 {
            break;
        }
        // Then whatever else is there already, up to the buffer: a TLS reader hands out
        // one record (16 KiB) a read, and writing each on its own would cost a write, a
        // wake-up of the receiver and a small TCP segment per record.
        while n < buf.len() {
            match from.read(&mut buf[n..]).now_or_never() {
                Some(Ok(0)) => {
                    eof = true;
                    break;
                }
                Some(Ok(more)) => n += more,
                Some(Err(e)) => return Err(e.into()),
                None => break,
            }
        }
        let chunk = buf.get(..n).unwrap_or_default();
        timeout(idle, to.write_all(chunk))
            .await
            .map_err(|_| CopyError::Idle(idle))??;
        total += n as u64;
        progress(total);
        if let Some(size) = sizer.moved(n, Instant::now()) {
            // Empty between chunks: a fresh buffer loses nothing.
            buf = vec![0u8; size];
        }
    }
    // Bounded too: a TLS close has to be written like any other data.
    timeout(idle, to.shutdown())
        .await
        .map_err(|_| CopyError::Idle(idle))??;
    debug!(bytes = total, "data copied");
    Ok(total)
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    const T: Duration = Duration::from_secs(5);

    /// Feeds `sizer` `per_window` bytes in each of `windows` windows; the sizes it picks.
    fn feed(sizer: &mut Sizer, start: &mut Instant, per_window: u64, windows: u32) -> Vec<usize> {
        (0..windows)
            .filter_map(|_| {
                *start += WINDOW;
                sizer.moved(per_window as usize, *start)
            })
            .collect()
    }

    #[test]
    fn a_fast_transfer_doubles_its_buffer_each_window_up_to_the_cap() {
        let mut now = Instant::now();
        let mut sizer = Sizer::new(now);
        assert_eq!(sizer.size(), MIN_BUFFER);
        // 2 GB/s: 20 MB per 10 ms window.
        let sizes = feed(&mut sizer, &mut now, 20_000_000, 10);
        let kib: Vec<usize> = sizes.iter().map(|s| s / 1024).collect();
        // The first window only notes the need; then one doubling per window.
        assert_eq!(kib, [32, 64, 128, 256, 512, 1024]);
        assert_eq!(sizer.size(), COPY_BUFFER);
    }

    #[test]
    fn a_slow_transfer_keeps_the_smallest_buffer() {
        let mut now = Instant::now();
        let mut sizer = Sizer::new(now);
        // 1 MB/s, in 16 KiB writes that each wait ~16 ms for the receiver.
        for _ in 0..100 {
            now += Duration::from_millis(16);
            assert_eq!(sizer.moved(MIN_BUFFER, now), None);
        }
        assert_eq!(sizer.size(), MIN_BUFFER);
    }

    #[test]
    fn a_burst_into_empty_socket_buffers_buys_nothing() {
        let mut now = Instant::now();
        let mut sizer = Sizer::new(now);
        // 4 MiB vanish into the kernel's socket buffers at once ...
        for _ in 0..256 {
            now += Duration::from_micros(40);
            sizer.moved(MIN_BUFFER, now);
        }
        // ... then the receiver's pace (1 MB/s) shows.
        now += Duration::from_millis(16);
        assert_eq!(sizer.moved(MIN_BUFFER, now), None);
        assert_eq!(sizer.size(), MIN_BUFFER);
    }

    #[test]
    fn a_transfer_that_slows_down_gives_its_memory_back_with_hysteresis() {
        let mut now = Instant::now();
        let mut sizer = Sizer::new(now);
        feed(&mut sizer, &mut now, 20_000_000, 10);
        assert_eq!(sizer.size(), COPY_BUFFER);
        // Half the speed needs half the buffer: not worth a reallocation.
        assert!(feed(&mut sizer, &mut now, 10_000_000, 5).is_empty());
        // A tenth (200 MB/s) needs ~100 KiB: down at once, to 128 KiB.
        assert_eq!(feed(&mut sizer, &mut now, 2_000_000, 1), [128 * 1024]);
        // Within a window nothing changes, however much moves.
        assert_eq!(sizer.moved(usize::MAX / 2, now), None);
    }

    #[tokio::test]
    async fn copies_every_byte_reports_progress_and_passes_the_eof() {
        let data: Vec<u8> = (0..3 * COPY_BUFFER + 12345).map(|i| i as u8).collect();
        let (mut sender, from) = duplex(64 * 1024);
        let (to, mut receiver) = duplex(64 * 1024);
        let sent = data.clone();
        let send = tokio::spawn(async move {
            sender.write_all(&sent).await.unwrap();
            // Dropping the sender is its EOF.
        });
        // The receiver's read_to_end ends only if the copy passed the EOF on.
        let receive = tokio::spawn(async move {
            let mut got = Vec::new();
            receiver.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut seen = Vec::new();
        let n = copy_to_eof(from, to, T, |total| seen.push(total))
            .await
            .unwrap();
        send.await.unwrap();
        let got = timeout(T, receive).await.unwrap().unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(got == data, "{} bytes received", got.len());
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(seen.last(), Some(&n));
    }

    /// Hands out `chunk` bytes a read, always at once (a TLS reader with records waiting).
    struct Records {
        left: usize,
        chunk: usize,
    }

    impl AsyncRead for Records {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let n = self.left.min(self.chunk).min(buf.remaining());
            buf.put_slice(&vec![7; n]);
            self.left -= n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Counts the writes it takes.
    #[derive(Default)]
    struct Writes(Vec<usize>);

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.0.push(buf.len());
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn what_is_already_there_goes_out_in_one_write() {
        let from = Records {
            left: 64 * 1024 + 100,
            chunk: 4096,
        };
        let mut to = Writes::default();
        let n = copy_to_eof(from, &mut to, T, |_| {}).await.unwrap();
        assert_eq!(n, 64 * 1024 + 100);
        // Four reads of 4 KiB fill each 16 KiB buffer: one write each, not four.
        assert_eq!(to.0, [MIN_BUFFER, MIN_BUFFER, MIN_BUFFER, MIN_BUFFER, 100]);
    }

    #[tokio::test]
    async fn an_empty_file_is_an_immediate_eof() {
        let (sender, from) = duplex(1024);
        let (to, mut receiver) = duplex(1024);
        drop(sender);
        let mut calls = 0;
        let n = copy_to_eof(from, to, T, |_| calls += 1).await.unwrap();
        assert_eq!((n, calls), (0, 0));
        let mut got = Vec::new();
        receiver.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn a_silent_sender_times_out() {
        let idle = Duration::from_millis(50);
        let (_sender, from) = duplex(1024);
        let (to, _receiver) = duplex(1024);
        let e = copy_to_eof(from, to, idle, |_| {}).await.unwrap_err();
        assert!(matches!(e, CopyError::Idle(d) if d == idle), "{e}");
        assert_eq!(e.to_string(), "no data moved for 50ms");
    }

    #[tokio::test]
    async fn a_receiver_that_stops_reading_times_out() {
        let idle = Duration::from_millis(50);
        let (mut sender, from) = duplex(64 * 1024);
        // A small pipe that nobody drains: the write blocks once it is full.
        let (to, _receiver) = duplex(1024);
        tokio::spawn(async move {
            let _ = sender.write_all(&[7u8; 8 * 1024]).await;
            std::future::pending::<()>().await;
        });
        let mut seen = 0;
        let e = copy_to_eof(from, to, idle, |t| seen = t).await.unwrap_err();
        assert!(matches!(e, CopyError::Idle(_)), "{e}");
        assert_eq!(seen, 0, "no chunk was written whole");
    }

    #[tokio::test]
    async fn a_broken_receiver_is_an_io_error() {
        let (mut sender, from) = duplex(1024);
        let (to, receiver) = duplex(1024);
        drop(receiver);
        sender.write_all(b"data").await.unwrap();
        let e = copy_to_eof(from, to, T, |_| {}).await.unwrap_err();
        assert!(matches!(e, CopyError::Io(_)), "{e}");
    }
}
