//! PROXY protocol v1/v2 from trusted load balancers: the real client address, so that
//! bounce checks, data-connection expectations, per-address limits and logs see the
//! client rather than the balancer. [`read_header`] serves control connections (bytes a
//! client sent after the header are handed back); [`read_header_exact`] serves relay data
//! ports, where what follows the header is a file or a TLS handshake left in the socket.

use std::net::SocketAddr;
use std::time::Duration;

use proxy_header::{ParseConfig, ProxyHeader};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Largest header accepted: a v1 line is at most 107 bytes; v2 with TLVs can be longer,
/// but nothing an FTP proxy needs comes close to this.
const MAX_HEADER: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("the connection closed before a complete PROXY header")]
    Closed,
    #[error("invalid PROXY header: {0}")]
    Invalid(String),
    #[error("PROXY header larger than {MAX_HEADER} bytes")]
    TooBig,
    /// A data port already reading as many headers as it allows.
    #[error("too many connections reading their PROXY header at once")]
    Crowded,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What the header said, and what followed it in the same reads.
#[derive(Debug)]
pub struct Header {
    /// The client's address; `None` for a `LOCAL` header (the balancer's own health check).
    pub source: Option<SocketAddr>,
    /// Bytes after the header (a client that spoke before the greeting).
    pub rest: Vec<u8>,
}

/// Reads one PROXY header (v1 or v2) from the start of `stream`.
pub async fn read_header(stream: &mut TcpStream, within: Duration) -> Result<Header, HeaderError> {
    let mut buf = Vec::with_capacity(256);
    let read = async {
        let mut chunk = [0u8; 512];
        loop {
            match ProxyHeader::parse(&buf, ParseConfig::default()) {
                Ok((header, used)) => {
                    let source = header.proxied_address().map(|a| a.source);
                    return Ok(Header {
                        source,
                        rest: buf[used..].to_vec(),
                    });
                }
                Err(proxy_header::Error::BufferTooShort) => {}
                Err(e) => return Err(HeaderError::Invalid(e.to_string())),
            }
            if buf.len() >= MAX_HEADER {
                return Err(HeaderError::TooBig);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(HeaderError::Closed);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    timeout(within, read)
        .await
        .map_err(|_| HeaderError::Timeout(within))?
}

/// The v2 signature; a v1 header starts with `PROXY` instead.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\x00\r\nQUIT\n";
/// A v1 line is at most 107 bytes, CRLF included (the specification's own bound).
const V1_MAX: usize = 107;

/// Reads one PROXY header (v1 or v2) from the start of `stream` and not one byte more:
/// `Ok(None)` for a `LOCAL`/`UNKNOWN` header (the balancer's own connection). For data
/// connections, whose first bytes after the header may be a file or a TLS handshake
/// that the relay must pass on untouched. v1 is read a byte at a time up to its LF;
/// v2's fixed 16 bytes say how long the rest is.
pub async fn read_header_exact(
    stream: &mut TcpStream,
    within: Duration,
) -> Result<Option<SocketAddr>, HeaderError> {
    let read = async {
        // Both forms are longer than this (v1 `PROXY UNKNOWN\r\n` is 15, v2 at least 16),
        // so reading it exactly never waits for bytes that are not part of the header.
        let mut buf = vec![0u8; 5];
        read_exact(stream, &mut buf).await?;
        if buf == b"PROXY" {
            while buf.last() != Some(&b'\n') {
                if buf.len() >= V1_MAX {
                    return Err(HeaderError::Invalid("v1 line longer than 107 bytes".into()));
                }
                let mut byte = [0u8; 1];
                read_exact(stream, &mut byte).await?;
                buf.push(byte[0]);
            }
        } else if V2_SIGNATURE.starts_with(&buf) {
            buf.resize(16, 0);
            read_exact(stream, &mut buf[5..]).await?;
            let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
            if 16 + len > MAX_HEADER {
                return Err(HeaderError::TooBig);
            }
            buf.resize(16 + len, 0);
            read_exact(stream, &mut buf[16..]).await?;
        } else {
            return Err(HeaderError::Invalid("not a PROXY header".into()));
        }
        match ProxyHeader::parse(&buf, ParseConfig::default()) {
            Ok((header, used)) if used == buf.len() => {
                Ok(header.proxied_address().map(|a| a.source))
            }
            Ok(_) => Err(HeaderError::Invalid("trailing bytes in the header".into())),
            Err(e) => Err(HeaderError::Invalid(e.to_string())),
        }
    };
    timeout(within, read)
        .await
        .map_err(|_| HeaderError::Timeout(within))?
}

async fn read_exact(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), HeaderError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(HeaderError::Closed),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// The accepted end of a loopback connection whose other end writes `bytes` in
    /// pieces (the parsers must cope with a header that arrives so), and that writer.
    async fn sent(bytes: &'static [u8]) -> (TcpStream, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            for part in bytes.chunks(7) {
                s.write_all(part).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        (l.accept().await.unwrap().0, writer)
    }

    /// The parsed header, plus every byte after it (what was read with the header and
    /// what came later), to check nothing is lost.
    async fn feed(bytes: &'static [u8]) -> Result<(Header, Vec<u8>), HeaderError> {
        let (mut s, writer) = sent(bytes).await;
        let r = read_header(&mut s, Duration::from_secs(2)).await;
        drop(writer.await);
        let h = r?;
        let mut after = h.rest.clone();
        s.read_to_end(&mut after).await?;
        Ok((h, after))
    }

    #[tokio::test]
    async fn v1_with_pipelined_bytes() {
        let (h, after) = feed(b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 21\r\nUSER x\r\n")
            .await
            .unwrap();
        assert_eq!(h.source, Some("203.0.113.9:40000".parse().unwrap()));
        assert_eq!(after, b"USER x\r\n");
    }

    #[tokio::test]
    async fn v2_and_local() {
        let mut v2 = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        v2.extend_from_slice(&[203, 0, 113, 9, 192, 0, 2, 1, 0x9c, 0x40, 0, 21]);
        let v2: &'static [u8] = Box::leak(v2.into_boxed_slice());
        let (h, after) = feed(v2).await.unwrap();
        assert_eq!(h.source, Some("203.0.113.9:40000".parse().unwrap()));
        assert!(after.is_empty());
        let local: &'static [u8] = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00";
        assert_eq!(feed(local).await.unwrap().0.source, None);
    }

    /// [`read_header_exact`] on `bytes`: what it said, and every byte left after it.
    async fn feed_exact(
        bytes: &'static [u8],
    ) -> Result<(Option<SocketAddr>, Vec<u8>), HeaderError> {
        let (mut s, writer) = sent(bytes).await;
        let r = read_header_exact(&mut s, Duration::from_secs(2)).await;
        drop(writer.await);
        let source = r?;
        let mut after = Vec::new();
        s.read_to_end(&mut after).await?;
        Ok((source, after))
    }

    #[tokio::test]
    async fn exact_reads_leave_the_data_after_the_header() {
        let (src, after) =
            feed_exact(b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 21\r\n\x16\x03\x01rest")
                .await
                .unwrap();
        assert_eq!(src, Some("203.0.113.9:40000".parse().unwrap()));
        assert_eq!(after, b"\x16\x03\x01rest");
        let (src, after) = feed_exact(b"PROXY UNKNOWN\r\n").await.unwrap();
        assert_eq!((src, after), (None, Vec::new()));
        let mut v2 = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        v2.extend_from_slice(&[203, 0, 113, 9, 192, 0, 2, 1, 0x9c, 0x40, 0, 21]);
        v2.extend_from_slice(b"PROXY file bytes");
        let v2: &'static [u8] = Box::leak(v2.into_boxed_slice());
        let (src, after) = feed_exact(v2).await.unwrap();
        assert_eq!(src, Some("203.0.113.9:40000".parse().unwrap()));
        assert_eq!(after, b"PROXY file bytes");
        assert!(matches!(
            feed_exact(b"RETR x\r\n").await,
            Err(HeaderError::Invalid(_))
        ));
        assert!(matches!(
            feed_exact(b"PROXY TCP4 1.2").await,
            Err(HeaderError::Closed)
        ));
        let long: &'static [u8] = Box::leak(
            format!("PROXY {}\r\n", "x".repeat(120))
                .into_bytes()
                .into_boxed_slice(),
        );
        assert!(matches!(
            feed_exact(long).await,
            Err(HeaderError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn garbage_is_refused() {
        assert!(matches!(
            feed(b"USER x\r\n").await,
            Err(HeaderError::Invalid(_))
        ));
        assert!(matches!(
            feed(b"PROXY TCP4 1.2.3.4\r\n").await,
            Err(HeaderError::Invalid(_) | HeaderError::Closed)
        ));
        assert!(matches!(
            feed(b"PROXY TCP4 1.2").await,
            Err(HeaderError::Closed)
        ));
    }
}

/// The PROXY header (`version`) that tells a server behind this proxy where the client
/// came from: `addrs` is (client, the address it connected to). Without them, or when
/// v1 cannot carry the pair (mixed address families), a `LOCAL`/`UNKNOWN` header: the
/// server still gets the header it expects, only without an address.
pub fn encode(
    version: crate::config::ProxyVersion,
    addrs: Option<(SocketAddr, SocketAddr)>,
) -> Vec<u8> {
    use crate::config::ProxyVersion;
    use proxy_header::ProxiedAddress;
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let header = match addrs.map(|(s, d)| (canonical(s), canonical(d))) {
        Some((s, d)) if s.is_ipv4() == d.is_ipv4() => {
            ProxyHeader::with_address(ProxiedAddress::stream(s, d))
        }
        _ => ProxyHeader::with_local(),
    };
    let encode = |h: &ProxyHeader, buf: &mut Vec<u8>| match version {
        ProxyVersion::V1 => h.encode_v1(buf),
        ProxyVersion::V2 => h.encode_v2(buf),
    };
    let mut buf = Vec::with_capacity(64);
    if encode(&header, &mut buf).is_err() {
        // Only TLVs (none here) make encoding fail; the LOCAL form always encodes.
        buf.clear();
        let _ = encode(&ProxyHeader::with_local(), &mut buf);
    }
    buf
}

#[cfg(test)]
mod encode_tests {
    use super::*;
    use crate::config::ProxyVersion;

    #[test]
    fn headers_toward_servers_carry_the_client() {
        let client: SocketAddr = "192.0.2.9:40000".parse().unwrap();
        let local: SocketAddr = "[::ffff:127.0.0.1]:2121".parse().unwrap();
        let v1 = encode(ProxyVersion::V1, Some((client, local)));
        assert_eq!(v1, b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 2121\r\n");
        let v2 = encode(ProxyVersion::V2, Some((client, local)));
        let (h, used) = ProxyHeader::parse(&v2, ParseConfig::default()).unwrap();
        assert_eq!(used, v2.len());
        assert_eq!(h.proxied_address().unwrap().source, client);
        let mixed = encode(
            ProxyVersion::V1,
            Some((client, "[::1]:21".parse().unwrap())),
        );
        assert_eq!(mixed, b"PROXY UNKNOWN\r\n");
    }
}
