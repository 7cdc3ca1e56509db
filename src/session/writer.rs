//! The client's side of the control connection, written with a deadline.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

/// Every reply must be taken by the client within `limit` (`limits.reply_write_timeout`):
/// one that stops reading would otherwise block its session, and with it the session's
/// slot, upstream connection and data port, for as long as it likes.
pub(super) struct ClientWriter<W> {
    inner: W,
    limit: Duration,
}

impl<W: AsyncWrite + Unpin> ClientWriter<W> {
    pub(super) fn new(inner: W, limit: Duration) -> Self {
        ClientWriter { inner, limit }
    }

    pub(super) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        timeout(self.limit, self.inner.write_all(bytes))
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client took no reply bytes for {:?}", self.limit),
                ))
            })
    }

    /// The stream, for a TLS upgrade.
    pub(super) fn into_inner(self) -> W {
        self.inner
    }

    /// Sends FIN after the last reply (bounded like a write).
    pub(super) async fn shutdown(&mut self) -> io::Result<()> {
        timeout(self.limit, self.inner.shutdown())
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }
}
