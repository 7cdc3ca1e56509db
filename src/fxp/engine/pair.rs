//! The two logged-in sessions of a transfer ([`Pair`]), one method's run over them
//! ([`Run`]), and the steps every method takes: `REST` on both, then `STOR` and `RETR`.

use std::time::Duration;

use super::attempts::Fail;
use crate::fxp::client::{Client, FtpError, RTT_PATIENCE, refused, with_arg};
use crate::fxp::digest::Check;
use crate::fxp::error::{FxpError, Side};
use crate::fxp::job::event::FileEvent as Event;
use crate::fxp::logins::LoginPool;
use crate::fxp::method::Method;
use crate::fxp::options::EngineOptions;
use crate::fxp::options::Progress;
use crate::fxp::url::FtpUrl;

/// Two logged-in sessions.
pub(super) struct Pair {
    pub(super) src: Client,
    pub(super) dst: Client,
}

impl Pair {
    /// The pair from both logins, or the first failure (after quitting the session that
    /// did log in).
    pub(super) async fn from_logins(
        (src, dst): (&FtpUrl, &FtpUrl),
        s: Result<Client, FtpError>,
        d: Result<Client, FtpError>,
    ) -> Result<Pair, FxpError> {
        match (s, d) {
            (Ok(src), Ok(dst)) => Ok(Pair { src, dst }),
            (Err(e), other) => {
                if let Ok(c) = other {
                    c.quit().await;
                }
                Err(FxpError::at(Side::Source, &src.host_port(), e))
            }
            (Ok(c), Err(e)) => {
                c.quit().await;
                Err(FxpError::at(Side::Destination, &dst.host_port(), e))
            }
        }
    }

    pub(super) fn side(&mut self, side: Side) -> &mut Client {
        match side {
            Side::Source => &mut self.src,
            Side::Destination => &mut self.dst,
        }
    }

    pub(super) fn err(&self, side: Side, e: FtpError) -> FxpError {
        let host = match side {
            Side::Source => self.src.host(),
            Side::Destination => self.dst.host(),
        };
        FxpError::at(side, host, e)
    }
}

/// A refusal of `RETR` (`side` source) or `STOR` once sent: see [`Fail::started`].
pub(super) fn classify(side: Side, e: FtpError, p: &Pair) -> Fail {
    Fail::started(p.err(side, e))
}

/// What survives from one attempt to the next.
#[derive(Default)]
pub(super) struct State {
    /// A `STOR` was sent: the destination file may hold a resumable prefix.
    pub(super) stored: bool,
    pub(super) last_method: Option<Method>,
}

/// A method's copy.
pub(super) struct Done {
    pub(super) method: Method,
    pub(super) bytes: u64,
    pub(super) relayed: u64,
    pub(super) offset: u64,
    /// Set by the engine once the copy is checked.
    pub(super) verified: Check,
    /// The destination's `SIZE` the method already read after the copy's end (the
    /// check after the copy uses it instead of asking again).
    pub(super) dst_size: Option<u64>,
}

/// What a method reads of the transfer's options.
pub(super) struct Context<'a> {
    /// Bound on every control step, and on a transfer making no progress.
    pub(super) timeout: Duration,
    /// How often progress is reported (and the destination's `SIZE` polled).
    pub(super) poll_interval: Duration,
    pub(super) progress: Option<&'a Progress>,
    /// Where a session watching the destination comes from (and goes back to).
    pub(super) sessions: &'a LoginPool,
    /// How such a session logs in.
    pub(super) options: &'a EngineOptions,
}

impl Context<'_> {
    pub(super) fn emit(&self, e: Event) {
        if let Some(p) = self.progress {
            p(&e);
        }
    }
}

/// One method on one pair of sessions.
pub(super) struct Run<'a> {
    pub(super) src: &'a FtpUrl,
    pub(super) dst: &'a FtpUrl,
    pub(super) opts: Context<'a>,
    pub(super) total: Option<u64>,
    pub(super) offset: u64,
    /// How often a server lost this file in this attempt (`Attempts::losses`).
    pub(super) losses: u32,
}

/// How long an active destination gets to open (`150`) before `RETR` goes to the source
/// anyway (grown with both servers' round trips): a late `150` is still read, but a
/// destination that has stopped reading the session (pyftpdlib, see `direct`) is then
/// found by the watch from the source's end, in a fraction of this.
pub(super) const OPEN_WAIT: Duration = Duration::from_millis(250);

impl Run<'_> {
    pub(super) fn err(&self, side: Side, e: FtpError) -> FxpError {
        let url = match side {
            Side::Source => self.src,
            Side::Destination => self.dst,
        };
        FxpError::at(side, &url.host_port(), e)
    }

    pub(super) async fn rest_both(&self, p: &mut Pair) -> Result<(), Fail> {
        if self.offset == 0 {
            return Ok(());
        }
        p.src
            .rest(self.offset)
            .await
            .map_err(|e| Fail::Negotiation(p.err(Side::Source, e)))?;
        p.dst
            .rest(self.offset)
            .await
            .map_err(|e| Fail::Negotiation(p.err(Side::Destination, e)))
    }

    /// Sends `STOR` to the destination, then `RETR` to the source.
    ///
    /// Neither waits for the other's `150`: a passive server may answer only once its data
    /// connection exists, which needs the other command. One exception, bounded: when
    /// the destination is the active side its `150` cannot depend on the source (its
    /// connection completes in the source's listen backlog), so it gets up to
    /// [`OPEN_WAIT`] to open before `RETR` goes out. pyftpdlib drops an active data
    /// connection that turns readable before it has processed `STOR`, and a small file
    /// can arrive and end that fast. Returns whether the destination's `150` was read.
    pub(super) async fn send_transfer(
        &self,
        p: &mut Pair,
        state: &mut State,
        dst_active: bool,
    ) -> Result<bool, Fail> {
        state.stored = true;
        let open_wait =
            OPEN_WAIT.max((p.src.round_trip() + p.dst.round_trip()).saturating_mul(RTT_PATIENCE));
        p.dst
            .send(&with_arg(b"STOR", &self.dst.path))
            .await
            .map_err(|e| Fail::Transfer(p.err(Side::Destination, e)))?;
        let mut opened = false;
        if dst_active {
            match p
                .dst
                .read_reply_within("STOR", open_wait.min(self.opts.timeout))
                .await
            {
                Ok(r) if r.class() == 1 => opened = true,
                Ok(r) => {
                    let shown =
                        String::from_utf8_lossy(&with_arg(b"STOR", &self.dst.path)).into_owned();
                    return Err(classify(Side::Destination, refused(&shown, &r), p));
                }
                // Not open yet: the source's RETR may be what it waits for after all.
                Err(FtpError::Timeout { .. }) => {}
                Err(e) => return Err(Fail::Transfer(p.err(Side::Destination, e))),
            }
        }
        p.src
            .send(&with_arg(b"RETR", &self.src.path))
            .await
            .map_err(|e| Fail::Transfer(p.err(Side::Source, e)))?;
        Ok(opened)
    }
}
