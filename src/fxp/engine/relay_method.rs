//! The relay method: `PASV` on both servers, the engine connects to both data ports and
//! copies the bytes itself. The last resort when neither server accepts a foreign peer;
//! it connects only to the servers' control addresses, whatever their `227` says, and
//! to a server behind an agent through that agent (the only method between servers
//! behind two different agents).
//!
//! The bytes go through the same sockets and copy loop as relay-mode data connections
//! ([`crate::data::socket`]): one tuning for every byte the proxy copies.
//!
//! A leg whose server speaks TLS is protected (`PROT P`), the engine its TLS client,
//! resuming that session's control connection's TLS session. The handshakes run while
//! the `150`s are awaited: proftpd answers only once the handshake is done, vsftpd only
//! before it starts. The source's `close_notify` must arrive (a connection that just
//! ends may be a truncated file), and the destination's is awaited after the engine's
//! own, so the destination has read everything before the engine closes.

use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use super::attempts::Fail;
use super::pair::{Done, Pair, Run, State, classify};
use crate::agent::Conn;
use crate::data::copy::{self, CopyError};
use crate::data::secure;
use crate::data::socket;
use crate::fxp::client::refused;
use crate::fxp::client_stream::ClientStream;
use crate::fxp::error::{FxpError, Side};
use crate::fxp::job::event::FileEvent as Event;
use crate::fxp::method::Method;

impl Run<'_> {
    /// `PASV` on both; the engine connects to both data ports and copies.
    pub(super) async fn relay(&self, p: &mut Pair, state: &mut State) -> Result<Done, Fail> {
        let limit = self.opts.timeout;
        for side in [Side::Source, Side::Destination] {
            // Data protected wherever the server speaks TLS (after a `PROT C` method).
            let tls = p.side(side).is_tls();
            let r = p.side(side).set_private(tls).await;
            r.map_err(|e| Fail::Negotiation(self.err(side, e)))?;
        }
        let mut socks = vec![];
        for side in [Side::Source, Side::Destination] {
            let c = p.side(side);
            let extended = c.features.has("EPSV");
            let announced = c.pasv(extended).await;
            let announced = announced.map_err(|e| Fail::Negotiation(self.err(side, e)))?;
            // The engine's own connection: the control address with the announced port,
            // so a server cannot point the engine anywhere else.
            let sock = c.connect_data(announced.addr().port()).await;
            socks.push(sock.map_err(|e| Fail::Negotiation(self.err(side, e)))?);
        }
        let (Some(to), Some(from)) = (socks.pop(), socks.pop()) else {
            return Err(Fail::Negotiation(FxpError::Other(
                "relay: no data connection".into(),
            )));
        };
        self.rest_both(p).await?;
        // Both are passive and connected already: nothing to wait for.
        self.send_transfer(p, state, false).await?;
        let (src_tls, dst_tls) = (p.src.data_tls(), p.dst.data_tls());
        let secured = async {
            tokio::try_join!(
                async {
                    let r = src_tls.wrap(from, limit).await;
                    r.map_err(|e| Fail::Transfer(self.err(Side::Source, e)))
                },
                async {
                    let r = dst_tls.wrap(to, limit).await;
                    r.map_err(|e| Fail::Transfer(self.err(Side::Destination, e)))
                },
            )
        };
        // Both must open (`150`) before any byte moves.
        let opened = async {
            for side in [Side::Destination, Side::Source] {
                let r = p.side(side).read_reply("transfer").await;
                let r = r.map_err(|e| Fail::Transfer(self.err(side, e)))?;
                if r.class() != 1 {
                    return Err(classify(side, refused(verb(side), &r), p));
                }
            }
            Ok(())
        };
        let ((mut from, mut to), ()) = tokio::try_join!(secured, opened)?;
        let copied = self.pump(&mut from, &mut to).await;
        if copied.is_ok() && from.is_tls() {
            // The source's `close_notify` came (the copy reached its EOF): the engine's
            // answers it (vsftpd waits for it before it says `226`).
            let _ = timeout(limit, from.shutdown()).await;
        }
        drop(from);
        // Passed on already after a whole copy; after a failed one, the destination
        // must still see the end.
        let _ = to.shutdown().await;
        if copied.is_ok() && to.is_tls() {
            // Closing at once could reset the connection while the server still has
            // the file's tail to read (it may have sent a TLS 1.3 ticket the engine never
            // read): its own close is awaited.
            secure::await_close(&mut to, limit).await;
        }
        drop(to);
        let copied = copied.map_err(|e| {
            Fail::Transfer(match e {
                CopyError::Idle(after) => FxpError::Stalled(after),
                CopyError::Io(e) => FxpError::Relay(e),
            })
        })?;
        for side in [Side::Source, Side::Destination] {
            let r = p.side(side).read_final(verb(side)).await;
            let r = r.map_err(|e| Fail::Transfer(self.err(side, e)))?;
            if r.class() != 2 {
                return Err(classify(side, refused(verb(side), &r), p));
            }
        }
        Ok(Done {
            method: Method::Relay,
            bytes: self.offset + copied,
            relayed: copied,
            offset: self.offset,
            verified: crate::fxp::digest::Check::None,
            dst_size: None,
        })
    }

    /// Copies until EOF; every read and write must progress within the timeout. The
    /// byte count reaches the front end at most every `poll_interval`.
    async fn pump(&self, from: &mut ClientStream, to: &mut ClientStream) -> Result<u64, CopyError> {
        let mut reported = Instant::now();
        let progress = |copied: u64| {
            if reported.elapsed() >= self.opts.poll_interval {
                reported = Instant::now();
                self.opts.emit(Event::Bytes {
                    done: self.offset + copied,
                    total: self.total,
                });
            }
        };
        match (from, to) {
            (ClientStream::Plain(Conn::Direct(from)), ClientStream::Plain(Conn::Direct(to))) => {
                socket::copy_tcp_to_eof(from, to, self.opts.timeout, progress).await
            }
            (from, to) => copy::copy_to_eof(from, to, self.opts.timeout, progress).await,
        }
    }
}

fn verb(side: Side) -> &'static str {
    match side {
        Side::Source => "RETR",
        Side::Destination => "STOR",
    }
}
