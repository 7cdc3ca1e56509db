//! The direct methods, standard and reverse FXP: one server listens (`PASV`/`EPSV`), the
//! other connects to it (`PORT`/`EPRT`), and the bytes go server to server. The engine
//! only watches: it reads both servers' replies and polls the destination's `SIZE` for
//! progress and stalls, over a second session on the destination that it takes (from
//! the pool) only once a copy has run a poll interval, or once the source has finished
//! and the destination has not: small files need none.
//!
//! A destination that stops reading its data connection never answers `STOR`, though the
//! source said `226` (everything was sent, into the destination's socket buffer).
//! pyftpdlib 1.5 does this to a transfer when another session of it with an active
//! (`PORT`) transfer behind it sends its next `PORT`, `PASV`, `ABOR` or `QUIT`: it closes
//! the finished connector again, unregistering from its event loop the file descriptor
//! number that connector once had, which by then may be the other transfer's new data
//! connection. The engine sees it from the source's completion and the destination's
//! size, which no longer grows: once the source's `226` is followed by a silence as long
//! as the copy itself took ([`SILENT_MIN`] to [`SILENT_AFTER_SOURCE`]) with less than the
//! whole file stored, the transfer is given up (`ABOR`, `QUIT`: the bytes that wait
//! unread in that connection can reach no other file) and the same method runs again on
//! fresh sessions (`plan::Fail::Lost`), with twice the patience for each loss of
//! the file. A small file is cheaper to copy again than to wait for: a healthy
//! destination has said `226` within a millisecond of the source on loopback, and one
//! taken for lost when it was only slow costs a copy of that file.
//!
//! Between TLS servers the data connection is protected by the servers themselves: with
//! `SSCN ON` one server is the TLS client of the data connection (the active one when it
//! offers `SSCN`), with `CPSV` the passive one is; or it is clear (`PROT C`, when the
//! operator allows it).

use std::pin::pin;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::{sleep, timeout};

use super::attempts::Fail;
use super::pair::{Done, Pair, Run, State, classify};
use crate::fxp::client::{
    Announced, Client, FtpError, PORT_REPLY, RTT_PATIENCE, refused, with_arg,
};
use crate::fxp::error::{FxpError, Side};
use crate::fxp::job::event::FileEvent as Event;
use crate::fxp::method::{Method, Protection};

impl Run<'_> {
    /// Standard or reverse FXP (`method.is_reverse()`), its data protected as
    /// `protection` says. `early`: the passive server's answer to a `PASV`/`EPSV` already
    /// sent with the source's `SIZE` (see [`early_passive`]).
    pub(super) async fn direct(
        &self,
        p: &mut Pair,
        method: Method,
        protection: Protection,
        state: &mut State,
        early: Option<Result<Announced, FtpError>>,
    ) -> Result<Done, Fail> {
        let (passive_side, active_side) = if method.is_reverse() {
            (Side::Destination, Side::Source)
        } else {
            (Side::Source, Side::Destination)
        };
        if let Err(e) = protect(p, protection).await {
            return Err(Fail::Negotiation(e));
        }
        let (passive, active) = roles(p, passive_side);
        let extended = extended(passive, active, protection);
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
            let announced = match early {
                Some(announced) => announced,
                None if protection == Protection::Cpsv => passive.cpsv().await,
                None => passive.pasv(extended).await,
            };
            let announced = announced.map_err(|e| self.err(passive_side, e))?;
            // Not while another transfer of the active server is settling (see
            // `LoginPool::settling`): its `ABOR` may unregister this `PORT`'s connection.
            let active_url = if active_side == Side::Destination {
                self.dst
            } else {
                self.src
            };
            self.opts.sessions.settled(active_url, SETTLED_WAIT).await;
            // The active server connects to the passive one before it answers: no
            // farther than the two are from here, as a rule.
            let wait = grown(PORT_REPLY, self.losses)
                .max((passive.round_trip() + active.round_trip()).saturating_mul(RTT_PATIENCE));
            active
                .port_to(announced, wait)
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
            if !p.src.is_idle() || !p.dst.is_idle() {
                // A command went unanswered (pyftpdlib's lost `PORT` connection): its
                // late reply would answer the next method's command. Fresh sessions.
                return Err(match fail {
                    Fail::Negotiation(e) => Fail::Lost(e),
                    other => other,
                });
            }
            // The sessions go on to the next method: as they were.
            if let (Some(side), true) = (sscn_side, sscn_on) {
                let _ = p.side(side).sscn(false).await;
            }
            return Err(fail);
        }
        let dst_active = active_side == Side::Destination;
        // A second session on the destination, taken when there is something to watch.
        let mut watcher = None;
        let result = self
            .start_and_wait(p, &mut watcher, state, dst_active)
            .await;
        if let Some(c) = watcher {
            // Kept only if its last SIZE was answered (see `LoginPool::put`).
            self.opts.sessions.put(self.dst, c).await;
        }
        let dst_size = result?;
        Ok(Done {
            method,
            bytes: self.total.unwrap_or(0),
            relayed: 0,
            offset: self.offset,
            verified: crate::fxp::digest::Check::None,
            dst_size,
        })
    }

    /// Sends `STOR` and `RETR` before waiting on either (a passive server may answer only
    /// once its data connection exists), then waits for both completions. Returns the
    /// destination's `SIZE` asked after its `226`, when it was asked.
    async fn start_and_wait(
        &self,
        p: &mut Pair,
        watcher: &mut Option<Client>,
        state: &mut State,
        dst_active: bool,
    ) -> Result<Option<u64>, Fail> {
        let opened = self.send_transfer(p, state, dst_active).await?;
        let started = Instant::now();
        // Set by the STOR side (a lock, not a Cell: the engine's future must stay `Send`).
        let stored = std::sync::OnceLock::new();
        let limit = self.opts.timeout;
        let watchable = p.dst.features.has("SIZE");
        let dst_rtt = p.dst.round_trip();
        let Pair { src, dst } = &mut *p;
        let (source_done, done_seen) = watch::channel(false);
        // Set by a side whose server stopped answering after its `226` (see `after_end`).
        let unanswered = std::sync::OnceLock::new();
        // From either side's `226` (the passive one's comes as the active server reads
        // the end of the data) until the active side's `ABOR` is answered, this transfer
        // is settling: other `PORT`s to the active server wait meanwhile (a little: one
        // that lost this transfer holds it until the loss is found). Opening it only at
        // the active side's `226` left twice the losses.
        let active_url = if dst_active { self.dst } else { self.src };
        let held = std::sync::Mutex::new(None);
        let settling = |on: bool| {
            let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
            if !on {
                *held = None;
            } else if held.is_none() {
                *held = Some(self.opts.sessions.settling(active_url));
            }
        };
        let outcome = {
            let mut retr = pin!(async {
                finish(src, "RETR", &self.src.path, limit, false).await?;
                settling(true);
                let ended = self.after_end(Side::Source, src, !dst_active, None, &unanswered);
                let ended = ended.await;
                if !dst_active {
                    settling(false);
                }
                ended?;
                Ok(())
            });
            let mut stor = pin!(async {
                finish(dst, "STOR", &self.dst.path, limit, opened).await?;
                settling(true);
                // A short file means the source's data connection broke (pure-ftpd
                // accepts a foreign peer, then drops it and never answers `RETR`), which
                // is better known now than after waiting for the source.
                let total = self.total.filter(|_| dst.features.has("SIZE"));
                let path = total.map(|_| &self.dst.path[..]);
                let size = self.after_end(Side::Destination, dst, dst_active, path, &unanswered);
                let size = size.await;
                if dst_active {
                    settling(false);
                }
                match (size?, total) {
                    (Some(n), Some(total)) if n < total => {
                        return Err(FtpError::Other(format!(
                            "the destination stored {n} of {total} bytes"
                        )));
                    }
                    (Some(n), _) => {
                        let _ = stored.set(n);
                    }
                    (None, _) => {}
                }
                Ok(())
            });
            let mut poll =
                pin!(self.watch(watchable.then_some(watcher), done_seen, started, dst_rtt));
            // Once one side is done the bytes have all gone; the other gets `limit` to say
            // so (pure-ftpd may drop a foreign peer and never answer RETR), and a
            // destination that has stopped reading is found sooner by the watch. After a
            // failure the other side gets a moment only, for its (often more telling)
            // reason.
            let (first, second) = tokio::select! {
                r = &mut retr => {
                    let wait = other_wait(&r, limit);
                    let other = if r.is_ok() {
                        let _ = source_done.send(true);
                        tokio::select! {
                            other = timeout(wait, &mut stor) => other,
                            fail = &mut poll => return Err(fail),
                        }
                    } else {
                        timeout(wait, &mut stor).await
                    };
                    ((Side::Source, r), (Side::Destination, other.unwrap_or_else(|_| Err(stalled(wait)))))
                }
                r = &mut stor => {
                    let wait = other_wait(&r, limit);
                    let other = timeout(wait, &mut retr).await;
                    ((Side::Destination, r), (Side::Source, other.unwrap_or_else(|_| Err(stalled(wait)))))
                }
                fail = &mut poll => {
                    return Err(fail);
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
            Some((side, e)) if unanswered.get() == Some(&side) => Err(Fail::Lost(p.err(side, e))),
            Some((side, e)) => Err(classify(side, e, p)),
            None => Ok(stored.into_inner()),
        }
    }

    /// What follows a side's `226`, bounded as a reply that should come at once: for the
    /// server that connected out (`active`), `ABOR`, then `SIZE size_of` when given (the
    /// destination's size, returned), both sent in one write: the replies come in order,
    /// and the pair costs one round trip instead of two. A server that has stopped
    /// answering this session (pyftpdlib, see the module's doc) is recorded in
    /// `unanswered`: the file runs again on fresh sessions, as a lost one does, instead
    /// of waiting for the session timeout.
    ///
    /// `ABOR` with no transfer in progress is a no-op (RFC 959: `225`/`226`). pyftpdlib
    /// 1.5 takes it to drop the finished connector that it would otherwise close again
    /// at this session's next `PORT`, `PASV` or `QUIT`, unregistering whichever
    /// connection has been given its descriptor number since: sent at once, that leaves
    /// the least time for one to be. Measured on a 200-file tree: transfers lost per run
    /// from about seven to about four, none of them any more with bytes in flight.
    async fn after_end(
        &self,
        side: Side,
        c: &mut Client,
        active: bool,
        size_of: Option<&[u8]>,
        unanswered: &std::sync::OnceLock<Side>,
    ) -> Result<Option<u64>, FtpError> {
        let wait =
            grown(AFTER_END_WAIT, self.losses).max(c.round_trip().saturating_mul(RTT_PATIENCE));
        let steps = async {
            let size = size_of.map(|path| with_arg(b"SIZE", path));
            let lines: Vec<&[u8]> = active
                .then_some(&b"ABOR"[..])
                .into_iter()
                .chain(size.as_deref())
                .collect();
            if !lines.is_empty() {
                c.send_lines(&lines).await?;
            }
            if active {
                c.abort_reply().await?;
            }
            match size_of {
                Some(path) => c.size_reply(path).await,
                None => Ok(None),
            }
        };
        match timeout(wait, steps).await {
            Ok(r) => r,
            Err(_) => {
                let _ = unanswered.set(side);
                Err(FtpError::Timeout {
                    what: "the replies after the transfer".into(),
                    after: wait,
                })
            }
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

/// Whether a direct transfer between `passive` and `active` uses `EPSV`/`EPRT` (else
/// `PASV`/`PORT`): both offer them and share an address family; `CPSV` is `PASV`'s
/// counterpart only (IPv4, `227`).
fn extended(passive: &Client, active: &Client, protection: Protection) -> bool {
    protection != Protection::Cpsv
        && passive.features.has("EPSV")
        && active.features.has("EPRT")
        && passive.peer().is_ipv4() == active.peer().is_ipv4()
}

/// For `method` on these sessions, the passive command that may go to the source with
/// its `SIZE`, before the method starts (`Some(extended)`): standard FXP in the clear,
/// whose first step is just that command. Nothing for the others (TLS protection, `SSCN`
/// and `CPSV` come first, or the destination is the passive one).
pub(super) fn early_passive(method: Method, p: &Pair) -> Option<bool> {
    let plain = method.protection() == Some(Protection::Plain) && !method.is_reverse();
    plain.then(|| extended(&p.src, &p.dst, Protection::Plain))
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

/// How long a destination may go without storing more, once the source has sent the
/// whole file, before the transfer counts as lost (see the module's doc): as long as the
/// copy took until then, within these bounds. Its `SIZE` is asked every quarter of that
/// (at most [`AFTER_SOURCE_POLL`]), the first time [`SETTLE`] after the source's `226`
/// (most destinations have answered by then).
pub(super) const SILENT_MIN: Duration = Duration::from_millis(60);
pub(super) const SILENT_AFTER_SOURCE: Duration = Duration::from_millis(300);
/// The same for a destination that holds the whole file but has not said so: it may
/// still be flushing it (the reply comes once the file is closed), so it gets longer;
/// pyftpdlib that lost the connection's end never says so.
pub(super) const SILENT_WHEN_COMPLETE: Duration = Duration::from_secs(2);
const AFTER_SOURCE_POLL: Duration = Duration::from_millis(50);
/// How long a server gets for the replies after its `226` (`ABOR`, `SIZE`), which a live
/// one sends at once (grown with its round trip and each loss, as the others).
const AFTER_END_WAIT: Duration = Duration::from_millis(100);
const SETTLE: Duration = Duration::from_millis(20);
/// How long a `PORT` waits for the active server's other transfers to settle (see
/// `LoginPool::settling`): a live server answers their `ABOR` within a millisecond; one
/// that does not (it lost that transfer) is no reason to hold this one longer. At 10 ms,
/// a lost transfer slowed every other file by that much until it was found.
const SETTLED_WAIT: Duration = Duration::from_millis(3);

/// How long a destination may stay silent after the source's end: `took` is how long the
/// copy ran until then, `rtt` the destination's quickest round trip (a distant server
/// gets as many round trips as a near one, see `Client::patience`), `losses` how often a
/// server lost this file already.
fn silent_limit(complete: bool, took: Duration, rtt: Duration, losses: u32) -> Duration {
    let base = if complete {
        SILENT_WHEN_COMPLETE
    } else {
        took.clamp(SILENT_MIN, SILENT_AFTER_SOURCE)
    };
    grown(base, losses).max(rtt.saturating_mul(RTT_PATIENCE))
}

/// `base` doubled for each loss of the file (a server that is slow, not lost,
/// gets its file on the next try).
fn grown(base: Duration, losses: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(losses.min(16)))
}

impl Run<'_> {
    /// Watches the destination's `SIZE` (when `watcher` is given: the destination offers
    /// `SIZE`) over a session it takes from the pool only when there is something to
    /// watch: after a poll interval (progress events), or once the source has finished
    /// (`source_done`) and the destination has not. Returns only on a failure: no growth
    /// for the timeout ([`FxpError::Stalled`]), or, after the source's end, no growth and
    /// no reply for [`silent_limit`] ([`Fail::Lost`]). `started`: when the copy began.
    ///
    /// Without a watcher progress cannot be seen: it returns after a generous bound
    /// instead (ten timeouts plus the size at 256 KiB/s), so a pair of servers that never
    /// answer cannot hold the transfer forever.
    async fn watch(
        &self,
        mut watcher: Option<&mut Option<Client>>,
        mut source_done: watch::Receiver<bool>,
        started: Instant,
        dst_rtt: Duration,
    ) -> Fail {
        let limit = self.opts.timeout;
        let mut last = self.offset;
        let mut since = Instant::now();
        // Since when the source is done and the destination has not grown.
        let mut silent: Option<Instant> = None;
        // How long the copy took until the source's end.
        let mut took = Duration::ZERO;
        let window =
            |complete: bool, took: Duration| silent_limit(complete, took, dst_rtt, self.losses);
        let login_bound = silent_limit(false, SILENT_AFTER_SOURCE, dst_rtt, self.losses);
        // The destination holds the whole file: only its reply is awaited.
        let mut complete = false;
        // The silence is counted again from a watcher's login, once: a slow login is
        // no sign of a lost transfer (one that does not come at all is, see
        // `lease_watcher`).
        let mut recounted = false;
        while let Some(slot) = watcher.as_deref_mut() {
            match silent {
                None => tokio::select! {
                    () = sleep(self.opts.poll_interval) => {}
                    // (The borrow `wait_for` returns must not live across the sleep.)
                    _ = async { source_done.wait_for(|done| *done).await.is_ok() } => {
                        took = started.elapsed();
                        sleep(SETTLE.min(window(false, took) / 3)).await;
                        silent = Some(Instant::now());
                    }
                },
                Some(_) => sleep((window(complete, took) / 4).min(AFTER_SOURCE_POLL)).await,
            }
            let leased = match slot {
                Some(c) => Ok(c),
                // A login gets the longest silence a small file gets, at least.
                None => match self.lease_watcher(silent.map(|_| login_bound)).await {
                    None => {
                        let t = silent.unwrap_or_else(Instant::now);
                        return Fail::Lost(FxpError::DestinationSilent {
                            stored: last,
                            total: self.total.unwrap_or(0),
                            after: t.elapsed(),
                        });
                    }
                    Some(Ok(c)) => {
                        if let Some(t) = silent.as_mut().filter(|_| !recounted) {
                            *t = Instant::now();
                            recounted = true;
                        }
                        Ok(slot.insert(c))
                    }
                    Some(Err(e)) => Err(e),
                },
            };
            let asked = match (leased, silent) {
                (Err(e), _) => Ok(Err(e)),
                // After the source's end the watcher too must answer within the window:
                // a destination that has stopped reading one connection may have
                // stopped reading the watcher's as well (pyftpdlib, see above).
                (Ok(c), Some(t)) => {
                    let left = window(complete, took).saturating_sub(t.elapsed());
                    timeout(left, c.size(&self.dst.path)).await
                }
                (Ok(c), None) => Ok(c.size(&self.dst.path).await),
            };
            let Ok(asked) = asked else {
                // No sign of progress within the window; the watcher, with a reply
                // outstanding, is of no more use.
                *slot = None;
                let t = silent.unwrap_or_else(Instant::now);
                return Fail::Lost(FxpError::DestinationSilent {
                    stored: last,
                    total: self.total.unwrap_or(0),
                    after: t.elapsed(),
                });
            };
            let done = match asked {
                Ok(Some(n)) => n,
                Ok(None) | Err(FtpError::Refused { .. }) => last,
                // The watcher is gone (or could not log in): another is taken next time.
                Err(_) => {
                    *slot = None;
                    last
                }
            };
            complete = self.total.is_some_and(|t| done >= t);
            if done != last {
                last = done;
                since = Instant::now();
                silent = silent.map(|_| Instant::now());
                self.opts.emit(Event::Bytes {
                    done,
                    total: self.total,
                });
            } else if let Some(t) = silent.filter(|_| self.total.is_some()) {
                if t.elapsed() >= window(complete, took) {
                    return Fail::Lost(FxpError::DestinationSilent {
                        stored: done,
                        total: self.total.unwrap_or(0),
                        after: t.elapsed(),
                    });
                }
            } else if since.elapsed() >= limit {
                return Fail::Transfer(FxpError::Stalled(limit));
            }
        }
        // Progress cannot be watched: allow the file's size at a slow 256 KiB/s, plus margin.
        let bytes = self.total.unwrap_or(0).saturating_sub(self.offset);
        let bound = self
            .opts
            .timeout
            .saturating_mul(10)
            .saturating_add(Duration::from_secs(bytes / (256 * 1024)));
        sleep(bound).await;
        Fail::Transfer(FxpError::Other(format!(
            "no completion within {bound:?} (the destination's size could not be watched)"
        )))
    }

    /// A session to watch the destination with, within `bound` if given (`None` if it
    /// does not come in time): after the source's end pyftpdlib may stop reading even a
    /// login's new connection (its descriptor number may be the one it unregisters), and
    /// the copy would wait for the whole login timeout.
    async fn lease_watcher(&self, bound: Option<Duration>) -> Option<Result<Client, FtpError>> {
        let lease = self.opts.sessions.lease(self.dst, self.opts.options);
        match bound {
            Some(bound) => timeout(bound, lease).await.ok(),
            None => Some(lease.await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_small_file_is_given_up_sooner_than_a_large_one() {
        // A copy of a millisecond: the shortest window.
        assert_eq!(silent_limit(false, MS, Duration::ZERO, 0), SILENT_MIN);
        // As long as the copy took, in between.
        assert_eq!(silent_limit(false, 150 * MS, Duration::ZERO, 0), 150 * MS);
        // Never longer than this for a file not yet all there.
        assert_eq!(
            silent_limit(false, Duration::from_secs(60), Duration::ZERO, 0),
            SILENT_AFTER_SOURCE
        );
        // The whole file is there: its reply may wait for a flush.
        assert_eq!(
            silent_limit(true, MS, Duration::ZERO, 0),
            SILENT_WHEN_COMPLETE
        );
    }

    #[test]
    fn each_loss_and_a_distant_server_make_the_window_longer() {
        assert_eq!(silent_limit(false, MS, Duration::ZERO, 1), 2 * SILENT_MIN);
        assert_eq!(silent_limit(false, MS, Duration::ZERO, 2), 4 * SILENT_MIN);
        // Ten round trips of a server 150 ms away.
        assert_eq!(
            silent_limit(false, MS, 150 * MS, 0),
            150 * MS * RTT_PATIENCE
        );
        // However many losses: no overflow.
        assert!(silent_limit(true, MS, Duration::ZERO, u32::MAX) > SILENT_WHEN_COMPLETE);
        assert_eq!(grown(PORT_REPLY, 0), PORT_REPLY);
        assert_eq!(grown(PORT_REPLY, 1), 2 * PORT_REPLY);
    }
}
