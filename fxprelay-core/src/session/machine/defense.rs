//! The edge defense's side of a session: the machine names what its client does that the
//! listener's ban table scores ([`Action::Defend`]: a failed login, a bait user name, a
//! bad command before login, a close before any command, a successful login), and holds
//! its own `530` answers in the tarpit after the third failed login (the delay is
//! [`crate::defense::tarpit`]'s, decided here with the clock passed in). The table
//! itself is the shell's: when a report finds the client banned, the shell answers with
//! [`Event::Banned`](super::Event::Banned) and the session ends with `421`.
//!
//! A listener with `defense: off` reports nothing and has no tarpit.

use std::time::Instant;

use tracing::info;

use super::{Action, Machine};
use crate::config::Mode;
use crate::defense::{DefenseEvent, Tarpit};
use crate::proto::command::VerbClass;
use crate::proto::line::trim_eol;
use crate::rejection::Rejection;
use crate::session::replies::Say;

#[derive(Debug, Default)]
pub(super) struct DefenseState {
    /// This session's failed logins, for the tarpit.
    tarpit: Tarpit,
    /// Replies to the client held back by the tarpit until the instant, in order (every
    /// reply after a held one waits behind it).
    held: Option<(Instant, Vec<Vec<u8>>)>,
    /// The client has sent at least one line.
    pub(super) heard: bool,
}

impl DefenseState {
    /// When the held replies go out.
    pub(super) fn held_until(&self) -> Option<Instant> {
        self.held.as_ref().map(|(at, _)| *at)
    }

    /// Holds `bytes` behind the tarpit if it holds anything; else gives them back.
    pub(super) fn hold(&mut self, bytes: Vec<u8>) -> Option<Vec<u8>> {
        match &mut self.held {
            Some((_, held)) => {
                held.push(bytes);
                None
            }
            None => Some(bytes),
        }
    }
}

impl Machine {
    /// Reports `event` to the ban table (nothing under `defense: off`).
    pub(super) fn defend(&mut self, event: DefenseEvent) {
        if self.ctx.defense.is_some() {
            self.actions.push_back(Action::Defend {
                client: self.addrs.client,
                event,
            });
        }
    }

    /// The client sent `USER` with these arguments before logging in: a bait user name
    /// scores (in forward mode, the user part of `user@host`).
    pub(super) fn defend_user(&mut self, args: &[u8]) {
        let Some(settings) = &self.ctx.defense else {
            return;
        };
        let args = trim_eol(args);
        let user = match self.ctx.cfg.mode {
            Mode::Forward => args
                .iter()
                .rposition(|&b| b == b'@')
                .map_or(args, |at| &args[..at]),
            _ => args,
        };
        if settings.is_bait(&String::from_utf8_lossy(user)) {
            info!(user = %String::from_utf8_lossy(user), "login as a bait user name");
            self.defend(DefenseEvent::BaitUser);
        }
    }

    /// A login failed at `now` (the server's `530` to `USER`/`PASS`/`ACCT`, or the
    /// proxy's own refusal): reported, and beyond the third in the window the answers
    /// to the client are held for the tarpit's delay.
    pub(super) fn login_failed(&mut self, now: Instant) {
        self.count(super::Count::Login { ok: false });
        let Some(settings) = &self.ctx.defense else {
            return;
        };
        let window = settings.window;
        self.defend(DefenseEvent::LoginFailed);
        let delay = self.defense.tarpit.failed(now, window);
        if !delay.is_zero() && self.defense.held.is_none() {
            info!(
                delay_ms = delay.as_millis() as u64,
                "repeated failed logins: the answer waits"
            );
            self.defense.held = Some((now + delay, Vec::new()));
        }
    }

    /// A final reply from the server to a command the client sent (`verb`'s class).
    pub(super) fn defend_reply(&mut self, class: VerbClass, code: u16, now: Instant) {
        match (class, code) {
            (VerbClass::User | VerbClass::Pass | VerbClass::Acct, 530) => self.login_failed(now),
            (_, 230) => self.defend(DefenseEvent::LoggedIn),
            // Refused for want of a login: data and file commands before `USER` (a bot
            // probing for anonymous access). Not what clients send to negotiate before
            // logging in (`OPTS UTF8 ON`, `SYST`, `CLNT`), which some servers refuse
            // with `530` too: every lftp connection to pyftpdlib would score.
            (
                VerbClass::Transfer(_)
                | VerbClass::Passive(_)
                | VerbClass::Active(_)
                | VerbClass::Site,
                530,
            ) if !self.logged_in => self.defend(DefenseEvent::BadCommand),
            _ => {}
        }
    }

    /// The client went away (or timed out) before logging in: without having sent a
    /// single line, that is a port scanner or a bot that did not like the greeting.
    pub(super) fn defend_early_close(&mut self) {
        if !self.logged_in && !self.defense.heard {
            self.defend(DefenseEvent::EarlyClose);
        }
    }

    /// Sends the replies the tarpit held (when their time came, or the session ends).
    pub(super) fn release_held(&mut self) {
        if let Some((_, held)) = self.defense.held.take() {
            self.actions.extend(held.into_iter().map(Action::ToClient));
        }
    }

    /// The shell found the client banned: `421` and the end (silently under
    /// `silent: true`). What the machine had queued for the server does not go.
    pub(super) fn on_banned(&mut self) {
        self.actions.retain(|a| !matches!(a, Action::ToUpstream(_)));
        self.release_held();
        self.reject(Rejection::Banned);
        info!("client banned; closing the session");
        if !self.ctx.defense.as_ref().is_some_and(|s| s.silent) {
            self.say(Say::Banned);
        }
        self.close("banned");
    }
}
