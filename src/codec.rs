//! The async adapters for control-channel framing, both ways: a `tokio_util` decoder that
//! yields whole lines with their terminators intact (the scanning is
//! [`crate::proto::line`]'s), [`ReplyReader`], which assembles a server's lines into
//! replies, and [`LineWriter`], which gets every line it is given onto the wire within a
//! deadline.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::codec::{Decoder, FramedRead};

use crate::proto::line::{LineTooLong, find_line};
use crate::proto::reply::{Reply, ReplyAssembler, ReplyError};

/// A framing failure on the control channel.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error(transparent)]
    TooLong(#[from] LineTooLong),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Splits a byte stream into lines ending in `\n`, bytes untouched (lines are not UTF-8).
#[derive(Debug)]
pub struct LineCodec {
    max_len: usize,
}

impl LineCodec {
    pub fn new(max_len: usize) -> Self {
        LineCodec { max_len }
    }
}

impl Decoder for LineCodec {
    type Item = BytesMut;
    type Error = LineError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, LineError> {
        Ok(find_line(src, self.max_len)?.map(|n| src.split_to(n)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, LineError> {
        // A peer that closes mid-line sent no complete command or reply: drop the rest.
        let line = self.decode(src)?;
        if line.is_none() {
            src.clear();
        }
        Ok(line)
    }
}

/// The writing half of a control connection, plain or TLS. Every line is written *and
/// flushed* within `limit`: a TLS stream may take a record into its buffer and report
/// success without the socket write having happened (when the task's cooperative budget
/// is spent, the TCP write returns `Pending` without a syscall), and nothing else would
/// push that record out until the next line, which on a control connection may never
/// come. A peer that stops reading cannot hold the session for longer than `limit`.
pub struct LineWriter<W> {
    inner: W,
    limit: Duration,
    /// Who reads these lines, for the timeout's message: "client", "server".
    reader: &'static str,
}

impl<W: AsyncWrite + Unpin> LineWriter<W> {
    /// A writer toward `reader` ("client", "server"), each line within `limit`.
    pub fn new(inner: W, limit: Duration, reader: &'static str) -> Self {
        LineWriter {
            inner,
            limit,
            reader,
        }
    }

    /// Writes `bytes` (whole lines) and flushes them onto the wire.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let write = async {
            self.inner.write_all(bytes).await?;
            self.inner.flush().await
        };
        timeout(self.limit, write)
            .await
            .unwrap_or_else(|_| Err(self.timed_out()))
    }

    /// Ends the stream after the last line (a TLS `close_notify`, then FIN), bounded
    /// like a write.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        timeout(self.limit, self.inner.shutdown())
            .await
            .unwrap_or_else(|_| Err(self.timed_out()))
    }

    /// The stream, for a TLS upgrade.
    pub fn into_inner(self) -> W {
        self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the {} took no control-connection bytes for {:?}",
                self.reader, self.limit
            ),
        )
    }
}

/// Why [`ReplyReader`] has no reply.
#[derive(Debug, thiserror::Error)]
pub enum ReadReplyError {
    #[error("read: {0}")]
    Io(#[source] io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("reply too large")]
    TooLarge,
    #[error("not an FTP reply: {0}")]
    NotFtp(ReplyError),
}

/// A server's side of a short conversation (a health check, a probe): its lines, framed
/// by [`LineCodec`] (bounded, so a server that never ends a line cannot grow the buffer)
/// and assembled by [`ReplyAssembler`] (multi-line replies, malformed codes).
pub struct ReplyReader<R> {
    lines: FramedRead<R, LineCodec>,
    assembler: ReplyAssembler,
}

impl<R: AsyncRead + Unpin> ReplyReader<R> {
    /// Replies of at most `max` bytes.
    pub fn new(r: R, max: usize) -> Self {
        ReplyReader {
            lines: FramedRead::new(r, LineCodec::new(max)),
            assembler: ReplyAssembler::new(max),
        }
    }

    /// The next reply that is not preliminary (`1xx`).
    pub async fn final_reply(&mut self) -> Result<Reply, ReadReplyError> {
        loop {
            let line = match self.lines.next().await {
                Some(Ok(line)) => line,
                Some(Err(LineError::Io(e))) => return Err(ReadReplyError::Io(e)),
                Some(Err(LineError::TooLong(_))) => return Err(ReadReplyError::TooLarge),
                None => return Err(ReadReplyError::Closed),
            };
            match self.assembler.push_line(&line) {
                Ok(Some(reply)) if reply.class() != 1 => return Ok(reply),
                Ok(_) => {}
                Err(e) => return Err(ReadReplyError::NotFtp(e)),
            }
        }
    }

    /// The reader back, for a TLS handshake after `234` (the server sends nothing in
    /// clear after it, so nothing buffered is lost).
    pub fn into_inner(self) -> R {
        self.lines.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::Poll;

    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A TLS connection over loopback: the proxy's side as TLS server, and the peer's.
    async fn tls_pair() -> (
        tokio_rustls::server::TlsStream<TcpStream>,
        tokio_rustls::client::TlsStream<TcpStream>,
    ) {
        let c = rcgen::generate_simple_self_signed(vec!["proxy.test".into()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(c.signing_key.serialize_der()).unwrap();
        let provider = crate::tls::provider();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![c.cert.der().clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(c.cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let name = rustls::pki_types::ServerName::try_from("proxy.test").unwrap();
        let connect = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, TcpStream::connect(at).await.unwrap());
        let accept = async {
            let (s, _) = listener.accept().await.unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(server))
                .accept(s)
                .await
                .unwrap()
        };
        let (server, client) = tokio::join!(accept, connect);
        (server, client.unwrap())
    }

    /// Spends the task's cooperative budget in this poll, as a task does that was woken
    /// by a channel right after another task spent it.
    async fn spend_budget() {
        std::future::poll_fn(|cx| {
            for _ in 0..10_000 {
                if pin!(tokio::task::consume_budget()).poll(cx).is_pending() {
                    return Poll::Ready(());
                }
            }
            panic!("tokio's cooperative budget never ran out");
        })
        .await
    }

    #[tokio::test]
    async fn a_tls_line_reaches_the_peer_when_the_budget_is_spent() {
        let (server, client) = tls_pair().await;
        let sent = tokio::spawn(async move {
            let mut w = LineWriter::new(server, Duration::from_secs(10), "client");
            spend_budget().await;
            w.send(b"226 Transfer complete.\r\n").await.unwrap();
            // The connection stays open and silent, as a control connection does while
            // the client reads the reply: nothing else pushes the record out.
            w
        });
        let mut lines = BufReader::new(client);
        let mut line = String::new();
        let read = timeout(Duration::from_secs(10), lines.read_line(&mut line)).await;
        assert!(
            read.is_ok(),
            "the line sat in the TLS buffer: the write was not flushed"
        );
        assert_eq!(line, "226 Transfer complete.\r\n");
        drop(sent.await.unwrap());
    }

    #[tokio::test]
    async fn a_peer_that_takes_nothing_times_the_write_out() {
        let (mut near, _far) = tokio::io::duplex(16);
        near.write_all(&[0; 16]).await.unwrap();
        let mut w = LineWriter::new(near, Duration::from_millis(50), "client");
        let e = w.send(b"200 OK\r\n").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
