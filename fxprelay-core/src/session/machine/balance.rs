//! Reverse mode over a pool of upstreams: the session asks the shell for a backend of the
//! pool (by client address at once, or by user after `USER` with `balance: user`,
//! greeting the client itself as forward mode does) and moves on to the next one when a
//! backend cannot be reached, reporting the failure (passive ejection). The pool, with
//! its health and session counts, is the shell's: the machine knows the balance mode and
//! which backends it tried.

use std::mem;

use tracing::warn;

use super::{Action, Backend, ConnectFailure, Machine, Phase, Say};
use crate::config::Balance;
use crate::config::Mode;
use crate::net::HostPort;
use crate::proto::line::trim_eol;

#[derive(Debug, Default)]
pub(super) struct BalanceState {
    /// The backend the shell holds for this session.
    chosen: Option<usize>,
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

    /// Opens a pooled session: choose a backend now, or with `balance: user` greet and
    /// wait for `USER`.
    pub(super) fn start_pooled(&mut self) {
        if self.ctx.pool == Some(Balance::User) {
            self.say(Say::ProxyGreeting);
            self.phase = Phase::ForwardLogin { attempts: 0 };
        } else {
            self.choose_backend(None);
        }
    }

    /// `balance: user`: the client's `USER` line (`args` its argument) chooses the
    /// backend, and goes to it once it greeted.
    pub(super) fn pooled_user(&mut self, line: &[u8], args: &[u8]) {
        let user = trim_eol(args).to_vec();
        self.site.user = Some(String::from_utf8_lossy(&user).into_owned());
        self.balance.user = Some(user);
        self.choose_backend(Some(line.to_vec()));
    }

    /// A routed session's pool: choose a backend of it (by the server's login name with
    /// `balance: user`), `user_line` to replay once it greeted.
    pub(super) fn pooled_connect(&mut self, user_line: Option<Vec<u8>>) {
        if self.ctx.pool == Some(Balance::User) {
            self.balance.user = self.site.user.as_ref().map(|u| u.as_bytes().to_vec());
        }
        self.choose_backend(user_line);
    }

    fn choose_backend(&mut self, user_line: Option<Vec<u8>>) {
        self.phase = Phase::Choosing { user_line };
        self.act(Action::ChooseBackend {
            client: self.addrs.client,
            user: self.balance.user.clone(),
            tried: self.balance.tried.clone(),
        });
    }

    /// The shell chose `backend` (or found every usable one down).
    pub(super) fn on_backend_chosen(&mut self, backend: Option<Backend>) {
        let user_line = match mem::replace(&mut self.phase, Phase::New) {
            Phase::Choosing { user_line } => user_line,
            other => {
                // Not asked for: the shell lets it go with the session.
                self.phase = other;
                return;
            }
        };
        match backend {
            Some(Backend { index, target }) => {
                self.balance.tried.push(index);
                self.balance.chosen = Some(index);
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
            ConnectFailure::Tls(_)
            | ConnectFailure::SelfTarget(_)
            | ConnectFailure::AgentDown(_) => {
                return false;
            }
        };
        let Some(index) = self.balance.chosen.take() else {
            return false;
        };
        warn!(upstream = %target, %error, "upstream unreachable; trying the next one of the pool");
        self.act(Action::BackendFailed {
            index,
            error: error.clone(),
        });
        self.choose_backend(user_line.clone());
        true
    }
}
