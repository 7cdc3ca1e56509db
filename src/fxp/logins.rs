//! Logged-in control sessions kept for the next file ([`LoginPool`]): a tree or a list
//! logs in to each server once per parallel transfer, not once per file (vsftpd's PAM
//! login alone takes ~35 ms, more than copying a 100 KB file).
//!
//! A session goes back to the pool only after a file it took part in was copied and
//! checked, with no reply outstanding ([`Client::is_idle`]); every other ending (a
//! failed transfer, an `ABOR`) quits it, so whatever a failure left in a session
//! (a late `226`, a half-open data connection) never meets the next file. A session
//! taken from the pool is first checked and reset ([`Client::reset_for_reuse`]): one the
//! server closed while it waited (`421` idle timeout, EOF) is dropped and a fresh login
//! takes its place, so the file never sees it.
//!
//! LoginPool are keyed by everything that makes a login: scheme, host (as written, case
//! folded), port, user and password. A pool lives as long as one tree, list or
//! single-file transfer; [`LoginPool::close`] quits what is left.
//!
//! Logins made ahead ([`LoginPool::prefill`]) are waited for by a lease that finds no
//! idle session, instead of a login of its own: the tree's walk starts on the first of
//! them to finish (vsftpd's logins, made together, end 30 ms apart under load).
//!
//! The pool also keeps, per server, the transfers whose active (connecting) side has
//! finished but not yet answered the `ABOR` that follows ([`LoginPool::settling`]): a
//! new `PORT` to that server waits for them ([`LoginPool::settled`]). pyftpdlib 1.5
//! closes a finished active connector again when that `ABOR` arrives, unregistering the
//! descriptor number the connection had; a `PORT` connector made in between may have
//! been given that number and is never heard of again (see `engine::direct`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;

use super::client::{Client, FtpError};
use super::options::EngineOptions;
use super::url::{FtpUrl, Security};

/// How long a session taken from the pool gets to answer its reset (grown with its round
/// trip): a live server answers `TYPE I` at once, and a needless fresh login costs less
/// than waiting longer for one that has stopped reading the session.
const REUSE_PROBE: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a login may take before a second one starts beside it (the first to finish
/// is used), and a third after three times this: pyftpdlib may stop reading a connection
/// made while its transfers run (see `direct`), and the login would wait for the whole
/// session timeout. It has left two logins in a row unanswered (three 2,000-file copies
/// in 40 stalled 30 s so, with one hedge). A slow server (PAM, LDAP) costs a login or two
/// given up.
const LOGIN_HEDGE: std::time::Duration = std::time::Duration::from_millis(250);

/// When the hedges start, counted in [`LOGIN_HEDGE`]s from the first login.
const HEDGES_AT: [u32; 2] = [1, 3];

/// How long a lease waits for logins made ahead before it logs in itself: they started
/// when its own would have, so this is only for one the server leaves unanswered.
const AHEAD_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A login to `url`'s server, hedged at each of [`HEDGES_AT`]: the first login to
/// succeed is the session. A refusal of the first login is the answer at once (a wrong
/// password is not tried again); a hedge's failure only ends its own try.
async fn hedged_login(url: &FtpUrl, opts: &EngineOptions) -> Result<Client, FtpError> {
    let first = opts.open(url);
    let hedges: FuturesUnordered<_> = HEDGES_AT
        .iter()
        .map(|&n| async move {
            tokio::time::sleep(LOGIN_HEDGE * n).await;
            opts.open(url).await
        })
        .collect();
    // Only the successes: a hedge that fails leaves the others (and the first) running.
    let mut hedged = hedges.filter_map(|r| std::future::ready(r.ok()));
    tokio::pin!(first);
    tokio::select! {
        r = &mut first => r,
        Some(c) = hedged.next() => Ok(c),
    }
}

/// What makes two logins the same.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    security: Security,
    host: String,
    port: u16,
    user: String,
    password: String,
    /// Through which agent: one address may be another server behind another agent.
    via: Option<String>,
}

impl Key {
    fn of(url: &FtpUrl) -> Key {
        Key {
            security: url.security,
            host: url.host.to_ascii_lowercase(),
            port: url.port,
            user: url.user.clone(),
            password: url.login_password().to_owned(),
            via: url.via.clone(),
        }
    }
}

/// Idle logged-in sessions, per server, and how many logins were made.
pub struct LoginPool {
    idle: Mutex<HashMap<Key, Vec<Client>>>,
    /// Per server: logins made ahead that have not finished, and transfers settling
    /// (see the module's doc).
    counts: Mutex<HashMap<Key, Counts>>,
    /// Woken when a session comes back or a count above drops.
    changed: Notify,
    /// Idle sessions kept per server; more are quit when they come back.
    keep: usize,
    logins: AtomicUsize,
    reused: AtomicUsize,
}

impl LoginPool {
    /// A pool keeping up to `keep` idle sessions per server (a tree copy with
    /// concurrency N needs N, plus one for watching a copy grow).
    pub fn new(keep: usize) -> LoginPool {
        LoginPool {
            idle: Mutex::default(),
            counts: Mutex::default(),
            changed: Notify::new(),
            keep: keep.max(1),
            logins: AtomicUsize::new(0),
            reused: AtomicUsize::new(0),
        }
    }

    /// A logged-in session to `url`'s server: an idle one that is still good, else a
    /// fresh login (within `opts`' allow list and TLS policy).
    pub async fn lease(&self, url: &FtpUrl, opts: &EngineOptions) -> Result<Client, FtpError> {
        let key = Key::of(url);
        let ahead_until = tokio::time::Instant::now() + AHEAD_WAIT;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let Some(mut c) = self.take(&key) else {
                if self.count(&key, |c| c.logging_in) == 0 {
                    break;
                }
                // A login made ahead is under way: the first of them to finish, unless
                // they take longer than AHEAD_WAIT (then one of our own, hedged).
                if tokio::time::timeout_at(ahead_until, changed).await.is_err() {
                    break;
                }
                continue;
            };
            // One that does not answer within REUSE_PROBE may have lost the connection
            // (pyftpdlib can stop reading a control connection; see `direct`).
            let reset = tokio::time::timeout(c.patience(REUSE_PROBE), c.reset_for_reuse());
            match reset
                .await
                .unwrap_or_else(|_| Err(FtpError::Other("no answer to TYPE I".into())))
            {
                Ok(()) => {
                    self.reused.fetch_add(1, Ordering::Relaxed);
                    return Ok(c);
                }
                Err(e) => {
                    tracing::debug!(host = %c.host(), error = %e, "idle session not reusable: logging in afresh");
                    // Gone or confused: closed without a word.
                    drop(c);
                }
            }
        }
        let c = hedged_login(url, opts).await?;
        self.logins.fetch_add(1, Ordering::Relaxed);
        Ok(c)
    }

    /// Logs in `n` sessions to `url`'s server at once and keeps them for the files to
    /// come (as many as there is room for); a lease meanwhile waits for the first of
    /// them. A login that fails is only logged: the file that needs the session logs in
    /// itself and reports why it could not. The logins count as under way from this
    /// call, before the returned future is first polled.
    pub fn prefill<'a>(
        &'a self,
        url: &'a FtpUrl,
        opts: &'a EngineOptions,
        n: usize,
    ) -> impl Future<Output = ()> + Send + 'a {
        let key = Key::of(url);
        self.adjust(&key, |c| c.logging_in += n);
        let login = move || {
            let key = key.clone();
            async move {
                let result = opts.open(url).await;
                self.adjust(&key, |c| c.logging_in = c.logging_in.saturating_sub(1));
                match result {
                    Ok(c) => {
                        self.logins.fetch_add(1, Ordering::Relaxed);
                        self.put(url, c).await;
                    }
                    Err(e) => {
                        tracing::debug!(host = %url.host_port(), error = %e, "login ahead of the copy failed")
                    }
                }
                self.changed.notify_waiters();
            }
        };
        async move {
            futures_util::future::join_all((0..n).map(|_| login())).await;
        }
    }

    /// Marks a transfer to `url`'s server as settling (its active side finished, its
    /// `ABOR` not yet answered) until the guard is dropped.
    pub fn settling(&self, url: &FtpUrl) -> Settling<'_> {
        let key = Key::of(url);
        self.adjust(&key, |c| c.settling += 1);
        Settling { pool: self, key }
    }

    /// Waits, at most `bound`, until no transfer to `url`'s server is settling: then a
    /// `PORT` to it cannot be given a descriptor number about to be unregistered.
    pub async fn settled(&self, url: &FtpUrl, bound: Duration) {
        let key = Key::of(url);
        let wait = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.count(&key, |c| c.settling) == 0 {
                    return;
                }
                changed.await;
            }
        };
        let _ = tokio::time::timeout(bound, wait).await;
    }

    fn adjust(&self, key: &Key, f: impl FnOnce(&mut Counts)) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        f(counts.entry(key.clone()).or_default());
    }

    fn count(&self, key: &Key, f: impl Fn(&Counts) -> usize) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(key).map_or(0, f)
    }

    fn take(&self, key: &Key) -> Option<Client> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get_mut(key).and_then(Vec::pop)
    }

    /// Gives back a session whose file is done: kept when nothing is in flight and
    /// there is room, else quit.
    pub async fn put(&self, url: &FtpUrl, c: Client) {
        let back = if c.is_idle() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = idle.entry(Key::of(url)).or_default();
            if list.len() < self.keep {
                list.push(c);
                None
            } else {
                Some(c)
            }
        } else {
            Some(c)
        };
        self.changed.notify_waiters();
        if let Some(c) = back {
            c.quit().await;
        }
    }

    /// Quits every idle session, all at once.
    pub async fn close(&self) {
        let all: Vec<Client> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.drain().flat_map(|(_, v)| v).collect()
        };
        futures_util::future::join_all(all.into_iter().map(Client::quit)).await;
        tracing::debug!(
            logins = self.logins(),
            reused = self.reused(),
            "fxp sessions closed"
        );
    }

    /// Idle sessions kept (each server's, all together).
    pub fn idle(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.values().map(Vec::len).sum()
    }

    /// Logins made so far (each server's, all together).
    pub fn logins(&self) -> usize {
        self.logins.load(Ordering::Relaxed)
    }

    /// LoginPool taken from the pool instead of logging in.
    pub fn reused(&self) -> usize {
        self.reused.load(Ordering::Relaxed)
    }
}

/// A server's logins made ahead and not yet finished, and its transfers settling.
#[derive(Default)]
struct Counts {
    logging_in: usize,
    settling: usize,
}

/// A transfer settling (see [`LoginPool::settling`]); dropped once its `ABOR` is
/// answered, or the transfer ends some other way.
pub struct Settling<'a> {
    pool: &'a LoginPool,
    key: Key,
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        self.pool
            .adjust(&self.key, |c| c.settling = c.settling.saturating_sub(1));
        self.pool.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// How a fake server ends the first session once it is idle.
    #[derive(Clone, Copy)]
    enum Ending {
        /// `421` and close, unasked (vsftpd's and pyftpdlib's idle timeout).
        Says421,
        /// Closes without a word.
        Eof,
        /// Keeps the connection but answers the next command with `421` and closes: the
        /// server gave up just as the session was taken.
        On421Reply,
        /// Stays good.
        Never,
    }

    /// A fake server: greets, takes any login, answers `TYPE`, `FEAT`, `NOOP`; the
    /// first session is ended as `ending` says once it sees `NOOP` (the test's sign
    /// that the session is back in the pool). Returns its address and the logins seen.
    async fn fake(ending: Ending) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let logins = Arc::new(AtomicUsize::new(0));
        let seen = logins.clone();
        tokio::spawn(async move {
            let mut first = true;
            while let Ok((s, _)) = l.accept().await {
                let (r, mut w) = s.into_split();
                let ending = if first { ending } else { Ending::Never };
                first = false;
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut r = BufReader::new(r);
                    w.write_all(b"220 fake\r\n").await.unwrap();
                    let mut line = String::new();
                    let mut ended = false;
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let verb = line.split_whitespace().next().unwrap_or("").to_owned();
                        if ended {
                            // On421Reply: the command after the idle time.
                            let _ = w.write_all(b"421 Timeout.\r\n").await;
                            return;
                        }
                        let reply: &[u8] = match verb.as_str() {
                            "USER" => b"331 pass\r\n",
                            "PASS" => {
                                seen.fetch_add(1, Ordering::SeqCst);
                                b"230 in\r\n"
                            }
                            "TYPE" | "NOOP" => b"200 ok\r\n",
                            "FEAT" => b"211-f\r\n SIZE\r\n211 End\r\n",
                            "QUIT" => {
                                let _ = w.write_all(b"221 bye\r\n").await;
                                return;
                            }
                            _ => b"502 no\r\n",
                        };
                        w.write_all(reply).await.unwrap();
                        if verb == "NOOP" {
                            match ending {
                                Ending::Says421 => {
                                    let _ = w.write_all(b"421 Timeout.\r\n").await;
                                    return;
                                }
                                Ending::Eof => return,
                                Ending::On421Reply => ended = true,
                                Ending::Never => {}
                            }
                        }
                    }
                });
            }
        });
        (addr, logins)
    }

    /// Leases a session, puts it back, lets the server end it as `ending` says, then
    /// leases again: the second lease must work (a fresh login where the first session
    /// is gone, the same session where it is not).
    async fn reuse_after(ending: Ending) -> (usize, usize, usize) {
        let (addr, seen) = fake(ending).await;
        let url = FtpUrl::parse(&format!("ftp://u:p@{addr}/f")).unwrap();
        let opts = EngineOptions {
            timeout: Duration::from_secs(5),
            ..EngineOptions::default()
        };
        let pool = LoginPool::new(2);
        let mut c = pool.lease(&url, &opts).await.unwrap();
        c.simple(b"NOOP", |c| c == 200).await.unwrap();
        pool.put(&url, c).await;
        // Give the server's 421 or EOF time to arrive (the On421Reply case waits for
        // the next command instead).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = pool.lease(&url, &opts).await.unwrap();
        // The session answers: it is a real one, not the dead one.
        c.simple(b"TYPE I", |c| c == 200).await.unwrap();
        pool.put(&url, c).await;
        pool.close().await;
        (seen.load(Ordering::SeqCst), pool.logins(), pool.reused())
    }

    #[tokio::test]
    async fn a_session_closed_with_421_while_idle_is_replaced() {
        assert_eq!(reuse_after(Ending::Says421).await, (2, 2, 0));
    }

    #[tokio::test]
    async fn a_session_closed_silently_while_idle_is_replaced() {
        assert_eq!(reuse_after(Ending::Eof).await, (2, 2, 0));
    }

    #[tokio::test]
    async fn a_session_that_answers_421_when_taken_is_replaced() {
        assert_eq!(reuse_after(Ending::On421Reply).await, (2, 2, 0));
    }

    #[tokio::test]
    async fn a_good_session_is_reused() {
        assert_eq!(reuse_after(Ending::Never).await, (1, 1, 1));
    }

    /// A session that answered moments ago is handed out without a `TYPE I` round trip:
    /// the next command the server sees after `NOOP` is the caller's (here answered
    /// `421`, which a probe would have met instead, logging in afresh).
    #[tokio::test]
    async fn a_session_that_just_answered_is_reused_without_a_probe() {
        let (addr, seen) = fake(Ending::On421Reply).await;
        let url = FtpUrl::parse(&format!("ftp://u:p@{addr}/f")).unwrap();
        let opts = EngineOptions::default();
        let pool = LoginPool::new(2);
        let mut c = pool.lease(&url, &opts).await.unwrap();
        c.simple(b"NOOP", |c| c == 200).await.unwrap();
        pool.put(&url, c).await;
        let mut c = pool.lease(&url, &opts).await.unwrap();
        assert_eq!((pool.logins(), pool.reused()), (1, 1));
        let r = c.command(b"TYPE I").await.unwrap();
        assert_eq!(r.code, 421);
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    /// A lease while logins made ahead are under way takes the first of them instead of
    /// logging in itself.
    #[tokio::test]
    async fn a_lease_takes_a_login_made_ahead() {
        let (addr, seen) = fake(Ending::Never).await;
        let url = FtpUrl::parse(&format!("ftp://u:p@{addr}/f")).unwrap();
        let opts = EngineOptions::default();
        let pool = LoginPool::new(2);
        let ahead = pool.prefill(&url, &opts, 1);
        // The lease is polled first: the login ahead counts from `prefill`'s call.
        let (c, ()) = tokio::join!(pool.lease(&url, &opts), ahead);
        let c = c.unwrap();
        assert_eq!((seen.load(Ordering::SeqCst), pool.logins()), (1, 1));
        pool.put(&url, c).await;
        pool.close().await;
    }

    /// A `PORT` waits while another transfer to the same server settles, until its guard
    /// is dropped or the bound passes; other servers are not held.
    #[tokio::test]
    async fn a_port_waits_for_the_servers_settling_transfers() {
        let a = FtpUrl::parse("ftp://u:p@127.0.0.1:2121/f").unwrap();
        let b = FtpUrl::parse("ftp://u:p@127.0.0.2:2121/f").unwrap();
        let pool = LoginPool::new(1);
        let guard = pool.settling(&a);
        let t = std::time::Instant::now();
        pool.settled(&b, Duration::from_secs(10)).await;
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "another server waited"
        );
        pool.settled(&a, Duration::from_millis(50)).await;
        assert!(t.elapsed() >= Duration::from_millis(50), "did not wait");
        let t = std::time::Instant::now();
        let release = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(guard);
        };
        tokio::join!(pool.settled(&a, Duration::from_secs(10)), release);
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(20), "{took:?}");
        assert!(
            took < Duration::from_secs(5),
            "waited past the guard: {took:?}"
        );
        // Nothing settling: at once.
        let t = std::time::Instant::now();
        pool.settled(&a, Duration::from_secs(10)).await;
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_session_with_a_reply_outstanding_is_not_kept() {
        let (addr, seen) = fake(Ending::Never).await;
        let url = FtpUrl::parse(&format!("ftp://u:p@{addr}/f")).unwrap();
        let opts = EngineOptions::default();
        let pool = LoginPool::new(2);
        let mut c = pool.lease(&url, &opts).await.unwrap();
        // Sent, never read: the reply would answer the next file's first command.
        c.send(b"NOOP").await.unwrap();
        assert!(!c.is_idle());
        pool.put(&url, c).await;
        let c = pool.lease(&url, &opts).await.unwrap();
        pool.put(&url, c).await;
        pool.close().await;
        assert_eq!((seen.load(Ordering::SeqCst), pool.reused()), (2, 0));
    }

    /// A fake server whose first `mute` connections never answer `PASS`, the others
    /// logged in; with no mute one, it refuses every login. Returns its address and the
    /// connections it accepted.
    async fn login_fake(mute: usize) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let muted = seen.fetch_add(1, Ordering::SeqCst) < mute;
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut r = BufReader::new(r);
                    w.write_all(b"220 fake\r\n").await.unwrap();
                    let mut line = String::new();
                    while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                        let reply: &[u8] = match line.split_whitespace().next().unwrap_or("") {
                            "USER" => b"331 pass\r\n",
                            "PASS" if muted => b"",
                            "PASS" if mute > 0 => b"230 in\r\n",
                            "PASS" => b"530 Login incorrect.\r\n",
                            "TYPE" => b"200 ok\r\n",
                            "FEAT" => b"211-f\r\n SIZE\r\n211 End\r\n",
                            _ => b"502 no\r\n",
                        };
                        line.clear();
                        if w.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// A login the server stops answering is not waited for to the timeout: a second
    /// one, started beside it, is the session; pyftpdlib has left two in a row
    /// unanswered, and then the third is.
    #[tokio::test]
    async fn logins_left_unanswered_are_overtaken_by_a_hedge() {
        for mute in [1, 2] {
            let (addr, accepted) = login_fake(mute).await;
            let url = FtpUrl::parse(&format!("ftp://u:p@{addr}/f")).unwrap();
            let opts = EngineOptions {
                timeout: Duration::from_secs(60),
                ..EngineOptions::default()
            };
            let pool = LoginPool::new(2);
            let lease = tokio::time::timeout(Duration::from_secs(30), pool.lease(&url, &opts));
            let mut c = lease.await.expect("a mute login was waited for").unwrap();
            c.simple(b"TYPE I", |c| c == 200).await.unwrap();
            assert_eq!(accepted.load(Ordering::SeqCst), mute + 1);
        }
    }

    /// A refused login is the answer at once: no second login is tried.
    #[tokio::test]
    async fn a_refused_login_is_not_tried_twice() {
        let (addr, accepted) = login_fake(0).await;
        let url = FtpUrl::parse(&format!("ftp://u:p@{addr}/f")).unwrap();
        let pool = LoginPool::new(2);
        let e = pool
            .lease(&url, &EngineOptions::default())
            .await
            .err()
            .expect("refused");
        assert!(e.to_string().contains("530"), "{e}");
        // Past the hedges' starts: still one connection.
        tokio::time::sleep(LOGIN_HEDGE * (HEDGES_AT[1] + 1)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}
