//! Backend pools: a reverse listener with several upstreams, the selection of each new
//! session's backend, and health checks in HAProxy's model applied to FTP.
//!
//! - the settings are a listener's (`upstream:` as a list, `balance`, `health_check`,
//!   `upstream_proxy_protocol`): [`crate::config::PoolConfig`] and its section's rules;
//! - [`select`]: the policies, pure (round robin, least sessions, sticky by client
//!   address or user through rendezvous hashing, weights, backups);
//! - [`health`]: the rise/fall state machine, pure;
//! - [`check`]: the task that checks every backend the way an FTP client would;
//! - this file: the shared state of one pool ([`Pool`]) that sessions choose from,
//!   checks and failed sessions report to, and `GET /api/v1/upstreams` reads.

pub mod check;
pub mod health;
pub mod select;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tracing::{info, warn};

use crate::config::{Balance, PoolConfig, ProxyVersion};
use crate::metrics;
use crate::net::HostPort;
use health::{Change, Health};
use select::{Candidate, Key, Ring};

/// One pool's backends and their state, shared by the listener's sessions and its
/// checker.
#[derive(Debug)]
pub struct Pool {
    /// The pool's name: its listener's, or `listener/route` for a route's pool (the
    /// admin API's `upstreams`, the log lines).
    pub listener: String,
    /// Its metrics' listener and route (`default`: the listener's own pool).
    scope: metrics::Scope,
    pub cfg: PoolConfig,
    /// `upstream_proxy_protocol`: the checks speak it too (a server that expects the
    /// header refuses a connection without one).
    pub proxy_protocol: Option<ProxyVersion>,
    backends: Vec<Backend>,
    ring: Ring,
    turn: AtomicUsize,
}

#[derive(Debug)]
struct Backend {
    /// `host:port` as configured: the `upstream` label and the hashing key.
    name: String,
    /// Open sessions; shared with the pool a reload replaces, so counts stay true.
    sessions: Arc<AtomicUsize>,
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone)]
struct State {
    health: Health,
    last_check: Option<SystemTime>,
    last_check_ok: Option<bool>,
    last_check_seconds: Option<f64>,
    last_error: Option<String>,
}

/// A session's hold on its backend: counted in `least_sessions` and
/// `fxprelay_upstream_sessions` until dropped.
#[derive(Debug)]
pub struct Lease {
    scope: metrics::Scope,
    upstream: String,
    sessions: Arc<AtomicUsize>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
        metrics::upstream_sessions(&self.scope, &self.upstream, -1.0);
    }
}

/// The backend a session got.
#[derive(Debug)]
pub struct Chosen {
    pub index: usize,
    pub target: HostPort,
    pub lease: Lease,
}

/// One backend in `GET /api/v1/upstreams`.
#[derive(Debug, Serialize)]
pub struct BackendStatus {
    pub address: String,
    pub state: &'static str,
    pub weight: u32,
    pub backup: bool,
    pub sessions: usize,
    /// RFC 3339, UTC.
    pub last_check: Option<String>,
    pub last_check_ok: Option<bool>,
    pub last_check_seconds: Option<f64>,
    pub last_error: Option<String>,
}

/// One pool in `GET /api/v1/upstreams`.
#[derive(Debug, Serialize)]
pub struct PoolStatus {
    pub listener: String,
    pub balance: &'static str,
    pub backends: Vec<BackendStatus>,
}

impl Pool {
    /// The pool called `listener` (see [`Pool::listener`]), counted under `scope`.
    pub fn new(
        listener: &str,
        scope: metrics::Scope,
        cfg: PoolConfig,
        proxy_protocol: Option<ProxyVersion>,
    ) -> Pool {
        let backends: Vec<Backend> = cfg
            .backends
            .iter()
            .map(|b| Backend {
                name: b.address.to_string(),
                sessions: Arc::default(),
                state: Mutex::default(),
            })
            .collect();
        let ring = Ring::new(
            backends
                .iter()
                .zip(&cfg.backends)
                .map(|(b, c)| (b.name.as_str(), c.weight)),
        );
        Pool {
            listener: listener.to_owned(),
            scope,
            cfg,
            proxy_protocol,
            backends,
            ring,
            turn: AtomicUsize::new(0),
        }
    }

    /// After a reload: backends that stayed keep their health and session counts.
    pub fn inherit(&mut self, old: &Pool) {
        for b in &mut self.backends {
            if let Some(o) = old.backends.iter().find(|o| o.name == b.name) {
                b.sessions = o.sessions.clone();
                *lock(&b.state) = lock(&o.state).clone();
            }
        }
    }

    /// Creates every backend's series with its current state (before the first scrape,
    /// and again after a reload for backends the file added).
    pub fn announce(&self) {
        for b in &self.backends {
            metrics::upstream_started(&self.scope, &b.name);
            metrics::upstream_up(&self.scope, &b.name, lock(&b.state).health.is_up());
        }
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    pub fn balance(&self) -> Balance {
        self.cfg.balance
    }

    /// The backend for a new session from `client` (logged in as `user`, with `balance:
    /// user`), skipping `excluded`; `None` when every usable backend is down.
    pub fn choose(
        &self,
        client: IpAddr,
        user: Option<&[u8]>,
        excluded: &[usize],
    ) -> Option<Chosen> {
        let candidates: Vec<Candidate> = self
            .backends
            .iter()
            .zip(&self.cfg.backends)
            .map(|(b, c)| Candidate {
                up: lock(&b.state).health.is_up(),
                backup: c.backup,
                weight: c.weight,
                sessions: b.sessions.load(Ordering::Relaxed),
            })
            .collect();
        let order = match (self.cfg.balance, user) {
            (Balance::User, Some(user)) => self.ring.order(Key::User(user)),
            (Balance::ClientAddress, _) => self.ring.order(Key::Client(client)),
            _ => Vec::new(),
        };
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let index = select::choose(self.cfg.balance, &candidates, &order, turn, excluded)?;
        let b = &self.backends[index];
        b.sessions.fetch_add(1, Ordering::Relaxed);
        metrics::upstream_sessions(&self.scope, &b.name, 1.0);
        Some(Chosen {
            index,
            target: self.cfg.backends[index].address.clone(),
            lease: Lease {
                scope: self.scope.clone(),
                upstream: b.name.clone(),
                sessions: b.sessions.clone(),
            },
        })
    }

    /// A real session could not connect: counts toward `fall` like a failed check
    /// (passive ejection).
    pub fn session_failed(&self, index: usize, error: &str) {
        self.record(index, Err(error.to_owned()), "session", false);
    }

    /// A check's result. The error is only words to show (`last_error`, the DOWN log
    /// line), so the pool keeps it as text.
    pub fn check_done(&self, index: usize, result: Result<(), String>, took: Duration) {
        metrics::upstream_check(&self.scope, &self.backends[index].name, took);
        {
            let mut s = lock(&self.backends[index].state);
            s.last_check = Some(SystemTime::now());
            s.last_check_ok = Some(result.is_ok());
            s.last_check_seconds = Some(took.as_secs_f64());
        }
        self.record(index, result, "check", true);
    }

    fn record(&self, index: usize, result: Result<(), String>, by: &str, check: bool) {
        let (rise, fall) = (self.cfg.health.rise, self.cfg.health.fall);
        let b = &self.backends[index];
        let mut s = lock(&b.state);
        let ok = result.is_ok();
        if let Err(e) = &result {
            s.last_error = Some(format!("{by}: {e}"));
        }
        // A session that connected proves nothing the checks do not; only checks rise.
        if ok && !check {
            return;
        }
        let change = s.health.record(ok, rise, fall);
        drop(s);
        let (listener, upstream) = (&self.listener, &b.name);
        match (change, &result) {
            (Some(Change::Down), Err(error)) => {
                warn!(listener, upstream, %error, fall, "upstream DOWN: no new sessions go to it");
                metrics::upstream_up(&self.scope, upstream, false);
            }
            (Some(Change::Up), _) => {
                info!(
                    listener,
                    upstream, rise, "upstream UP: it takes new sessions again"
                );
                metrics::upstream_up(&self.scope, upstream, true);
            }
            _ => {}
        }
    }

    /// The backends' addresses, in pool order (what the checker checks).
    pub fn targets(&self) -> Vec<HostPort> {
        self.cfg
            .backends
            .iter()
            .map(|b| b.address.clone())
            .collect()
    }

    pub fn status(&self) -> PoolStatus {
        PoolStatus {
            listener: self.listener.clone(),
            balance: self.cfg.balance.as_str(),
            backends: self
                .backends
                .iter()
                .zip(&self.cfg.backends)
                .map(|(b, c)| {
                    let s = lock(&b.state).clone();
                    BackendStatus {
                        address: b.name.clone(),
                        state: if s.health.is_up() { "up" } else { "down" },
                        weight: c.weight,
                        backup: c.backup,
                        sessions: b.sessions.load(Ordering::Relaxed),
                        last_check: s
                            .last_check
                            .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                        last_check_ok: s.last_check_ok,
                        last_check_seconds: s.last_check_seconds,
                        last_error: s.last_error,
                    }
                })
                .collect(),
        }
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn pool(extra: &str) -> Pool {
        let c = Config::parse(&format!(
            "listeners:\n  - name: p\n    bind: 127.0.0.1:0\n    upstream: [a:21, b:21, c:21]\n{extra}"
        ))
        .unwrap();
        let l = c.listeners[0].clone();
        let scope = metrics::Scope::new("p", metrics::RouteLabel::Default);
        Pool::new("p", scope, l.pool.unwrap(), l.upstream_proxy_protocol)
    }

    #[test]
    fn sessions_are_counted_until_their_lease_drops() {
        let p = pool("    health_check: {fall: 2}\n");
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = p.choose(ip, None, &[]).unwrap();
        let b = p.choose(ip, None, &[]).unwrap();
        assert_ne!(a.index, b.index, "least_sessions spreads");
        assert_eq!(p.status().backends[a.index].sessions, 1);
        drop(a);
        assert_eq!(
            p.status()
                .backends
                .iter()
                .map(|b| b.sessions)
                .sum::<usize>(),
            1
        );
    }

    #[test]
    fn failed_sessions_and_checks_eject_and_checks_restore() {
        let p = pool("    health_check: {fall: 2, rise: 1}\n");
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        p.session_failed(0, "refused");
        p.check_done(0, Err("no banner".into()), Duration::from_millis(3));
        let st = p.status();
        assert_eq!(st.backends[0].state, "down");
        assert!(
            st.backends[0]
                .last_error
                .as_deref()
                .unwrap()
                .contains("no banner")
        );
        for _ in 0..10 {
            assert_ne!(p.choose(ip, None, &[]).unwrap().index, 0);
        }
        p.check_done(0, Ok(()), Duration::from_millis(1));
        assert_eq!(p.status().backends[0].state, "up");
        for i in 0..3 {
            p.check_done(i, Err("down".into()), Duration::ZERO);
            p.check_done(i, Err("down".into()), Duration::ZERO);
        }
        assert!(p.choose(ip, None, &[]).is_none());
    }

    #[test]
    fn a_reload_keeps_state_of_backends_that_stayed() {
        let old = pool("    health_check: {fall: 1}\n");
        old.check_done(1, Err("x".into()), Duration::ZERO);
        let _held = old.choose("127.0.0.1".parse().unwrap(), None, &[]).unwrap();
        let mut new = pool("");
        new.inherit(&old);
        let st = new.status();
        assert_eq!(st.backends[1].state, "down");
        assert_eq!(st.backends.iter().map(|b| b.sessions).sum::<usize>(), 1);
    }
}
