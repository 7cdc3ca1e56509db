//! The direct methods, standard and reverse FXP: one server listens (`PASV`/`EPSV`), the
//! other connects to it (`PORT`/`EPRT`), and the bytes go server to server. The engine
//! only watches: it reads both servers' replies and polls the destination's `SIZE` for
//! progress and stalls.
//!
//! Between TLS servers the data connection is protected by the servers themselves: with
//! `SSCN ON` one server is the TLS client of the data connection (the active one when it
//! offers `SSCN`), with `CPSV` the passive one is; or it is clear (`PROT C`, when the
//! operator allows it).

use std::pin::pin;
use std::time::{Duration, Instant};

use tokio::time::{sleep, timeout};

use super::client::{Client, FtpError, refused, with_arg};
use super::error::{FxpError, Side};
use super::pair::{Done, Pair, Run, State, classify};
use super::plan::Fail;
use super::report::{Event, Method, Protection};

impl Run<'_> {
    /// Standard or reverse FXP (`method.is_reverse()`), its data protected as
    /// `protection` says. `poller`, a second session on the destination, reports progress
    /// and notices a stall.
    pub(super) async fn direct(
        &self,
        p: &mut Pair,
        method: Method,
        protection: Protection,
        mut poller: Option<Client>,
        state: &mut State,
    ) -> Result<Done, Fail> {
        let (passive_side, active_side) = if method.is_reverse() {
            (Side::Destination, Side::Source)
        } else {
            (Side::Source, Side::Destination)
        };
        if let Err(e) = protect(p, protection).await {
            if let Some(c) = poller {
                c.quit().await;
            }
            return Err(Fail::Negotiation(e));
        }
        let (passive, active) = roles(p, passive_side);
        // CPSV is PASV's counterpart only: IPv4 and `227`.
        let extended = protection != Protection::Cpsv
            && passive.features.has("EPSV")
            && active.features.has("EPRT")
            && passive.peer().is_ipv4() == active.peer().is_ipv4();
        // With SSCN, the server that is the data connection's TLS client.
        let sscn_side = (protection == Protection::Sscn).then(|| {
            if active.features.has("SSCN") {
                active_side
            } else {
                passive_side
            }
        });
        let mut sscn_on = false;
        // Bounce safety: the active server gets the address the passive server just
        // announced in this transfer, as the opaque `Announced` value that only `pasv`
        // makes (with the passive server's own control IP and a port >= 1024: a `227`
        // naming a third host or port 25 cannot turn the active server into a weapon)
        // and only `port_to` takes.
        let negotiated = async {
            let announced = if protection == Protection::Cpsv {
                passive.cpsv().await
            } else {
                passive.pasv(extended).await
            };
            let announced = announced.map_err(|e| self.err(passive_side, e))?;
            active
                .port_to(announced)
                .await
                .map_err(|e| self.err(active_side, e))?;
            if let Some(side) = sscn_side {
                let c = if side == active_side { active } else { passive };
                c.sscn(true).await.map_err(|e| self.err(side, e))?;
                sscn_on = true;
            }
            Ok(())
        };
        let negotiated = match negotiated.await {
            Ok(()) => self.rest_both(p).await,
            Err(e) => Err(Fail::Negotiation(e)),
        };
        if let Err(fail) = negotiated {
            // The sessions go on to the next method: as they were.
            if let (Some(side), true) = (sscn_side, sscn_on) {
                let _ = p.side(side).sscn(false).await;
            }
            if let Some(c) = poller {
                c.quit().await;
            }
            return Err(fail);
        }
        let dst_active = active_side == Side::Destination;
        let result = self.start_and_wait(p, &mut poller, state, dst_active).await;
        if let Some(c) = poller {
            c.quit().await;
        }
        result?;
        Ok(Done {
            method,
            bytes: self.total.unwrap_or(0),
            relayed: 0,
            offset: self.offset,
            verified: super::report::Check::None,
        })
    }

    /// Sends `STOR` and `RETR` before waiting on either (a passive server may answer only
    /// once its data connection exists), then waits for both completions.
    async fn start_and_wait(
        &self,
        p: &mut Pair,
        poller: &mut Option<Client>,
        state: &mut State,
        dst_active: bool,
    ) -> Result<(), Fail> {
        let opened = self.send_transfer(p, state, dst_active).await?;
        let limit = self.opts.timeout;
        let Pair { src, dst } = &mut *p;
        let outcome = {
            let mut retr = pin!(finish(src, "RETR", &self.src.path, limit, false));
            let mut stor = pin!(async {
                finish(dst, "STOR", &self.dst.path, limit, opened).await?;
                check_stored(dst, &self.dst.path, self.total).await
            });
            let mut poll = pin!(poll_progress(poller, self));
            // Once one side is done the bytes have all gone; the other gets `limit` to say
            // so (pure-ftpd may drop a foreign peer and never answer RETR). After a failure
            // the other side gets a moment only, for its (often more telling) reason.
            let (first, second) = tokio::select! {
                r = &mut retr => {
                    let wait = other_wait(&r, limit);
                    let other = timeout(wait, &mut stor).await;
                    ((Side::Source, r), (Side::Destination, other.unwrap_or_else(|_| Err(stalled(wait)))))
                }
                r = &mut stor => {
                    let wait = other_wait(&r, limit);
                    let other = timeout(wait, &mut retr).await;
                    ((Side::Destination, r), (Side::Source, other.unwrap_or_else(|_| Err(stalled(wait)))))
                }
                e = &mut poll => {
                    return Err(Fail::Transfer(e));
                }
            };
            [first, second]
        };
        let mut failures: Vec<(Side, FtpError)> = outcome
            .into_iter()
            .filter_map(|(side, r)| r.err().map(|e| (side, e)))
            .collect();
        // The root cause first: a refusal of the data connection (`425`, or `522` for its
        // TLS) or of the file
        // explains the other side's `426` or timeout.
        failures.sort_by_key(|(_, e)| match e.code() {
            Some(425 | 522) => 0,
            Some(426) => 2,
            Some(_) => 1,
            None => 3,
        });
        match failures.into_iter().next() {
            Some((side, e)) => Err(classify(side, e, p)),
            None => Ok(()),
        }
    }
}

/// Sets both sessions' data protection for `protection`: `PROT P` for the servers to
/// encrypt between themselves, `PROT C` for clear data (plain sessions stay as they are).
async fn protect(p: &mut Pair, protection: Protection) -> Result<(), FxpError> {
    let private = match protection {
        Protection::Plain => return Ok(()),
        Protection::Clear => false,
        Protection::Sscn | Protection::Cpsv => true,
    };
    for side in [Side::Source, Side::Destination] {
        let r = p.side(side).set_private(private).await;
        r.map_err(|e| p.err(side, e))?;
    }
    Ok(())
}

/// `(passive, active)` sessions for a direct transfer whose passive side is `passive`.
fn roles(p: &mut Pair, passive: Side) -> (&mut Client, &mut Client) {
    match passive {
        Side::Source => (&mut p.src, &mut p.dst),
        Side::Destination => (&mut p.dst, &mut p.src),
    }
}

/// How long the other side of a failed transfer gets to give its own reason.
const GRACE: Duration = Duration::from_secs(1);

/// How long to wait for the other side once one side of a transfer has finished.
fn other_wait(first: &Result<(), FtpError>, limit: Duration) -> Duration {
    match first {
        Ok(()) => limit,
        // A server's refusal: the other server's reply may name the cause.
        Err(e) if e.code().is_some() => GRACE.min(limit),
        // The engine's own finding (a short file, a timeout): nothing more to learn.
        Err(_) => Duration::ZERO,
    }
}

fn stalled(limit: Duration) -> FtpError {
    FtpError::Timeout {
        what: "transfer completion".into(),
        after: limit,
    }
}

/// Reads a transfer's replies to the end: the preliminary one within `limit` (unless
/// `opened`: already read), the final one without a bound of its own (the progress poll
/// and the other side bound it).
async fn finish(
    c: &mut Client,
    cmd: &str,
    path: &[u8],
    limit: Duration,
    opened: bool,
) -> Result<(), FtpError> {
    let shown = String::from_utf8_lossy(&with_arg(cmd.as_bytes(), path)).into_owned();
    let forever = Duration::from_secs(365 * 86400);
    let first = c
        .read_reply_within(cmd, if opened { forever } else { limit })
        .await?;
    let last = if first.class() == 1 {
        c.read_reply_within(cmd, forever).await?
    } else {
        first
    };
    if last.class() == 2 {
        Ok(())
    } else {
        Err(refused(&shown, &last))
    }
}

/// After the destination's `226`: a short file means the source's data connection broke
/// (pure-ftpd accepts a foreign peer, then drops it and never answers `RETR`), which is
/// better known now than after waiting for the source.
async fn check_stored(c: &mut Client, path: &[u8], total: Option<u64>) -> Result<(), FtpError> {
    let Some(total) = total.filter(|_| c.features.has("SIZE")) else {
        return Ok(());
    };
    match c.size(path).await? {
        Some(n) if n < total => Err(FtpError::Other(format!(
            "the destination stored {n} of {total} bytes"
        ))),
        _ => Ok(()),
    }
}

/// Polls the destination's `SIZE` for progress events; returns only on a stall (no
/// growth for the timeout). Without a poller, progress cannot be seen: it returns after
/// a generous bound instead (ten timeouts plus the size at 256 KiB/s), so a pair of
/// servers that never answer cannot hold the transfer forever.
async fn poll_progress(poller: &mut Option<Client>, run: &Run<'_>) -> FxpError {
    if let Some(c) = poller {
        let limit = run.opts.timeout;
        let mut last = run.offset;
        let mut since = Instant::now();
        loop {
            sleep(run.opts.poll_interval).await;
            let done = match c.size(&run.dst.path).await {
                Ok(Some(n)) => n,
                Ok(None) | Err(FtpError::Refused { .. }) => last,
                // The poller itself is gone: fall back to the bound by size below.
                Err(_) => break,
            };
            if done != last {
                last = done;
                since = Instant::now();
                run.opts.emit(Event::Bytes {
                    done,
                    total: run.total,
                });
            } else if since.elapsed() >= limit {
                return FxpError::Stalled(limit);
            }
        }
    }
    // Progress cannot be watched: allow the file's size at a slow 256 KiB/s, plus margin.
    let bytes = run.total.unwrap_or(0).saturating_sub(run.offset);
    let bound = run
        .opts
        .timeout
        .saturating_mul(10)
        .saturating_add(Duration::from_secs(bytes / (256 * 1024)));
    sleep(bound).await;
    FxpError::Other(format!(
        "no completion within {bound:?} (the destination's size could not be watched)"
    ))
}
