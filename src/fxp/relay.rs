//! The relay method: `PASV` on both servers, the engine connects to both data ports and
//! copies the bytes itself. The last resort when neither server accepts a foreign peer;
//! it connects only to the servers' control addresses, whatever their `227` says.
//!
//! The bytes go through the same sockets and copy loop as relay-mode data connections
//! ([`crate::data::socket`]): one tuning for every byte the proxy copies.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::client::{FtpError, refused};
use super::error::{FxpError, Side};
use super::pair::{Done, Pair, Run, State, classify};
use super::plan::Fail;
use super::report::{Event, Method};
use crate::data::copy::CopyError;
use crate::data::socket;

impl Run<'_> {
    /// `PASV` on both; the engine connects to both data ports and copies.
    pub(super) async fn relay(&self, p: &mut Pair, state: &mut State) -> Result<Done, Fail> {
        let limit = self.opts.timeout;
        let mut socks = vec![];
        for side in [Side::Source, Side::Destination] {
            let c = p.side(side);
            let extended = c.features.has("EPSV");
            let announced = c.pasv(extended).await;
            let announced = announced.map_err(|e| Fail::Negotiation(self.err(side, e)))?;
            // The engine's own connection: the control address with the announced port,
            // so a server cannot point the engine anywhere else.
            let addr = SocketAddr::new(c.peer().ip(), announced.addr().port());
            let sock = match timeout(limit, socket::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(Fail::Negotiation(self.err(side, FtpError::Data(e)))),
                Err(_) => {
                    let e = FtpError::Timeout {
                        what: format!("data connection to {addr}"),
                        after: limit,
                    };
                    return Err(Fail::Negotiation(self.err(side, e)));
                }
            };
            socks.push(sock);
        }
        let (Some(mut to), Some(mut from)) = (socks.pop(), socks.pop()) else {
            return Err(Fail::Negotiation(FxpError::Other(
                "relay: no data connection".into(),
            )));
        };
        self.rest_both(p).await?;
        // Both are passive and connected already: nothing to wait for.
        self.send_transfer(p, state, false).await?;
        // Both must open (`150`) before any byte moves.
        for side in [Side::Destination, Side::Source] {
            let r = p.side(side).read_reply("transfer").await;
            let r = r.map_err(|e| Fail::Transfer(self.err(side, e)))?;
            if r.class() != 1 {
                return Err(classify(side, refused(verb(side), &r), p));
            }
        }
        let copied = self.pump(&mut from, &mut to).await;
        drop(from);
        // Passed on already after a whole copy; after a failed one, the destination
        // must still see the end.
        let _ = to.shutdown().await;
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
            verified: false,
        })
    }

    /// Copies until EOF; every read and write must progress within the timeout. The
    /// byte count reaches the front end at most every `poll_interval`.
    async fn pump(&self, from: &mut TcpStream, to: &mut TcpStream) -> Result<u64, CopyError> {
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
        socket::copy_tcp_to_eof(from, to, self.opts.timeout, progress).await
    }
}

fn verb(side: Side) -> &'static str {
    match side {
        Side::Source => "RETR",
        Side::Destination => "STOR",
    }
}
