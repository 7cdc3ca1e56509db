//! Reverse mode over a pool of upstreams: the session asks the pool for a backend (by
//! client address at once, or by user after `USER` with `balance: user`, greeting the
//! client itself as forward mode does) and moves on to the next one when a backend
//! cannot be reached, reporting the failure (passive ejection).

use tracing::warn;

use super::{ConnectFailure, Machine, Phase, Say};
use crate::config::Mode;
use crate::net::HostPort;
use crate::pool::Chosen;
use crate::pool::config::Balance;
use crate::proto::line::trim_eol;

#[derive(Debug, Default)]
pub(super) struct BalanceState {
    /// The backend this session holds: counted as one of its sessions until the end.
    chosen: Option<Chosen>,
    /// Backends this session could not reach.
    tried: Vec<usize>,
    /// `balance: user`: the name the client gave.
    user: Option<Vec<u8>>,
}

impl Machine {
    /// Whether this session's upstream comes from a pool.
    pub(super) fn pooled(&self) -> bool {
        self.ctx.pool.is_some() && self.ctx.cfg.mode == Mode::Reverse
    }

    /// Opens a pooled session: connect now, or with `balance: user` greet and wait for
    /// `USER`.
    pub(super) fn start_pooled(&mut self) {
        if self
            .ctx
            .pool
            .as_ref()
            .is_some_and(|p| p.balance() == Balance::User)
        {
            self.say(Say::ProxyGreeting);
            self.phase = Phase::ForwardLogin { attempts: 0 };
        } else {
            self.connect_pooled(None);
        }
    }

    /// `balance: user`: the client's `USER` line (`args` its argument) chooses the
    /// backend, and goes to it once it greeted.
    pub(super) fn pooled_user(&mut self, line: &[u8], args: &[u8]) {
        let user = trim_eol(args).to_vec();
        self.site.user = Some(String::from_utf8_lossy(&user).into_owned());
        self.balance.user = Some(user);
        self.connect_pooled(Some(line.to_vec()));
    }

    fn connect_pooled(&mut self, user_line: Option<Vec<u8>>) {
        let Some(pool) = self.ctx.pool.clone() else {
            return;
        };
        let user = self.balance.user.as_deref();
        match pool.choose(self.addrs.client, user, &self.balance.tried) {
            Some(chosen) => {
                let target = chosen.target.clone();
                self.balance.tried.push(chosen.index);
                self.balance.chosen = Some(chosen);
                self.connect(target, user_line, 0, false, None);
            }
            None => {
                warn!(
                    tried = self.balance.tried.len(),
                    "no upstream of the pool is up"
                );
                self.say(Say::PoolDown);
                self.close("every upstream down");
            }
        }
    }

    /// A pooled connect failed: report it to the pool and try the next backend. Whether
    /// this handled `failure` (TLS failures go the usual way).
    pub(super) fn pooled_connect_failed(
        &mut self,
        target: &HostPort,
        user_line: &Option<Vec<u8>>,
        failure: &ConnectFailure,
    ) -> bool {
        let error = match failure {
            ConnectFailure::Unreachable(e) | ConnectFailure::Denied(e) => e,
            ConnectFailure::Tls(_) | ConnectFailure::SelfTarget(_) => return false,
        };
        let (Some(chosen), Some(pool)) = (self.balance.chosen.take(), self.ctx.pool.clone()) else {
            return false;
        };
        warn!(upstream = %target, %error, "upstream unreachable; trying the next one of the pool");
        pool.session_failed(chosen.index, error);
        self.connect_pooled(user_line.clone());
        true
    }
}
