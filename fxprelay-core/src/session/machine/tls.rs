//! FTPS, as decisions. The proxy terminates TLS on each leg (an ALG cannot read what it
//! cannot decrypt): toward clients it offers `AUTH TLS` (explicit), insists on it
//! (required) or starts with TLS (implicit, done by the shell before the session runs);
//! toward servers it speaks TLS as `tls.upstream.mode` says, mirroring the client by
//! default. `PBSZ`/`PROT` are answered per leg: the client's choice protects the client's
//! data connections; the server is told what `tls.upstream.data` asks before a transfer.
//! `FEAT` shows what the proxy offers, not what the server said.

use std::time::Instant;

use tracing::{info, warn};

use super::{Action, Answers, Machine, Phase, Say};
use crate::proto::command::{Command, Verb, VerbClass};
use crate::proto::line::trim_eol;
use crate::proto::reply::Reply;
use crate::rejection::Rejection;
use crate::tls::{ClientTlsMode, DataProtection, TlsSettings, UpstreamPlan, advice};

/// The TLS state of both legs.
#[derive(Debug, Default)]
pub(super) struct TlsState {
    pub client_secure: bool,
    pub upstream_secure: bool,
    /// `PBSZ` seen on the secure client leg.
    client_pbsz: bool,
    /// The client's `PROT P`.
    pub client_private: bool,
    /// `PBSZ 0` sent to the server already.
    upstream_pbsz: bool,
    /// What the server was last told with `PROT` (servers start with `C`).
    upstream_private: bool,
}

/// What follows once the upstream leg is secure.
#[derive(Debug)]
pub(super) enum AfterUpstream {
    Nothing,
    /// Answer the client's own `AUTH TLS` and secure its leg too.
    ClientAuth,
    /// Forward mode: replay the client's `USER` to the server.
    ReplayUser(Vec<u8>),
}

/// A TLS step the session waits on.
#[derive(Debug)]
pub(super) enum TlsStep {
    /// The proxy's `AUTH TLS` to the server awaits its reply.
    UpstreamAuth(AfterUpstream),
    /// The shell runs the upstream handshake.
    UpstreamHandshake(AfterUpstream),
    /// The shell runs the client handshake.
    ClientHandshake,
}

impl Machine {
    pub(super) fn tls_settings(&self) -> Option<&TlsSettings> {
        self.ctx.cfg.tls.as_ref()
    }

    fn client_tls_mode(&self) -> ClientTlsMode {
        self.tls_settings()
            .map_or(ClientTlsMode::Off, |t| t.client.mode)
    }

    pub(super) fn upstream_plan(&self) -> UpstreamPlan {
        self.tls_settings()
            .map_or(UpstreamPlan::Plain, TlsSettings::upstream_plan)
    }

    /// The name the server's certificate must carry.
    pub(super) fn upstream_server_name(&self, host: &str) -> String {
        self.tls_settings()
            .and_then(|t| t.upstream.server_name.clone())
            .unwrap_or_else(|| host.to_string())
    }

    /// A command that the listener's TLS settings answer instead of the server: `Some`
    /// when handled. Without a `tls:` block everything goes on as before.
    pub(super) fn tls_command(&mut self, cmd: &Command<'_>, now: Instant) -> bool {
        let class = cmd.verb.class();
        if class == VerbClass::Auth {
            self.on_auth(cmd.args, now);
            return true;
        }
        if self.tls_settings().is_none() {
            return false;
        }
        let secure = self.tls.client_secure;
        match class {
            VerbClass::User | VerbClass::Pass | VerbClass::Acct
                if !secure && self.client_tls_mode() == ClientTlsMode::Required =>
            {
                self.reject(Rejection::TlsRequired);
                info!(verb = %cmd.verb.as_str(), "refused a login in clear: tls.client.mode is required");
                self.say(Say::TlsRequired);
            }
            VerbClass::Pbsz if !secure => self.say(Say::ProtNeedsTls),
            VerbClass::Pbsz => {
                self.tls.client_pbsz = true;
                self.say(Say::PbszOk);
            }
            VerbClass::Prot if !secure => self.say(Say::ProtNeedsTls),
            VerbClass::Prot if !self.tls.client_pbsz => self.say(Say::PbszFirst),
            VerbClass::Prot => match trim_eol(cmd.args)
                .trim_ascii()
                .to_ascii_uppercase()
                .as_slice()
            {
                b"C" | b"P" => {
                    let private = trim_eol(cmd.args).trim_ascii().eq_ignore_ascii_case(b"P");
                    self.tls.client_private = private;
                    self.say(Say::ProtOk { private });
                }
                b"S" | b"E" => self.say(Say::ProtUnsupported),
                _ => self.say(Say::ProtUnknown),
            },
            VerbClass::Ccc => self.say(Say::CccRefused),
            _ => return false,
        }
        true
    }

    /// `AUTH TLS` (or `AUTH SSL`) from the client.
    fn on_auth(&mut self, args: &[u8], now: Instant) {
        if self.client_tls_mode() == ClientTlsMode::Off {
            self.reject(Rejection::AuthTls);
            info!("refused AUTH: this listener has no tls.client (mode off)");
            return self.say(Say::AuthRefused);
        }
        if self.tls.client_secure {
            return self.say(Say::TlsAlready);
        }
        let mechanism = trim_eol(args).trim_ascii().to_ascii_uppercase();
        if !matches!(mechanism.as_slice(), b"TLS" | b"SSL" | b"TLS-C" | b"TLS-P") {
            return self.say(Say::AuthUnsupported);
        }
        let upstream_first = matches!(self.phase, Phase::Relaying)
            && self.upstream_plan() == UpstreamPlan::WithClient
            && !self.tls.upstream_secure;
        if upstream_first {
            // The server's leg first: if it refuses TLS, the client hears so before it
            // trusts the session with its password.
            self.upstream_auth(AfterUpstream::ClientAuth, now);
        } else {
            self.secure_client();
        }
    }

    fn secure_client(&mut self) {
        self.say(Say::TlsGo);
        self.act(Action::UpgradeClient);
        self.waiting = Some(super::Waiting::Tls(TlsStep::ClientHandshake));
    }

    /// Sends `AUTH TLS` to the server; `then` follows once its leg is secure.
    pub(super) fn upstream_auth(&mut self, then: AfterUpstream, now: Instant) {
        self.own_command(b"AUTH TLS\r\n".to_vec(), Answers::OwnAuth, now);
        self.waiting = Some(super::Waiting::Tls(TlsStep::UpstreamAuth(then)));
    }

    /// The server answered the proxy's `AUTH TLS`.
    pub(super) fn on_own_auth_reply(&mut self, reply: &Reply) {
        let Some(super::Waiting::Tls(TlsStep::UpstreamAuth(then))) = self.waiting.take() else {
            return;
        };
        if reply.code == 234 {
            let host = self.upstream_host.clone();
            let server_name = self.upstream_server_name(&host);
            self.act(Action::UpgradeUpstream { server_name });
            self.waiting = Some(super::Waiting::Tls(TlsStep::UpstreamHandshake(then)));
            return;
        }
        let text = super::reply_text(reply);
        match then {
            // Mirroring a client that asked for TLS: it learns the server's answer and
            // decides itself whether to go on in clear.
            AfterUpstream::ClientAuth => {
                warn!(reply = %text, "the FTP server refused the AUTH TLS a client asked for (tls.upstream.mode: mirror); {}", advice::NO_AUTH_TLS_FIX);
                self.say(Say::UpstreamRefusedTls { text })
            }
            // The operator wants TLS toward the server whatever the client does.
            _ => {
                self.reject(Rejection::UpstreamTls);
                warn!(reply = %text, "the FTP server refused AUTH TLS, which tls.upstream.mode requires; {}", advice::NO_AUTH_TLS_FIX);
                self.say(Say::UpstreamTlsRequired);
                self.close("upstream refused TLS");
            }
        }
    }

    /// The upstream handshake finished (or failed: an untrusted certificate, most often);
    /// `discarded` bytes the server had sent in clear after its `234` were dropped unread.
    pub(super) fn on_upstream_secured(
        &mut self,
        result: Result<(), String>,
        discarded: usize,
        now: Instant,
    ) {
        if discarded > 0 {
            warn!(
                bytes = discarded,
                "discarded what the server sent in clear after its 234"
            );
        }
        let then = match self.waiting.take() {
            Some(super::Waiting::Tls(TlsStep::UpstreamHandshake(then))) => then,
            // Implicit TLS: secured while connecting.
            other => {
                self.waiting = other;
                AfterUpstream::Nothing
            }
        };
        match result {
            Ok(()) => {
                self.tls.upstream_secure = true;
                info!("TLS with the FTP server established");
                match then {
                    AfterUpstream::Nothing => {}
                    AfterUpstream::ClientAuth => self.secure_client(),
                    AfterUpstream::ReplayUser(line) => {
                        self.forward(&line, Verb::new(b"USER").expect("a valid verb"))
                    }
                }
            }
            Err(error) => {
                self.reject(Rejection::UpstreamTls);
                // The error says why, and what to set (the binary's `tls::diagnose`).
                warn!(%error, "TLS with the FTP server failed");
                self.say(Say::UpstreamTlsFailed);
                self.close("upstream TLS failed");
            }
        }
        self.settle(now);
    }

    /// The client handshake finished; `discarded` bytes the client had sent in clear
    /// after `AUTH TLS` were thrown away unread.
    pub(super) fn on_client_secured(
        &mut self,
        result: Result<(), String>,
        discarded: usize,
        now: Instant,
    ) {
        if let Some(super::Waiting::Tls(TlsStep::ClientHandshake)) = &self.waiting {
            self.waiting = None;
        }
        // Lines the machine held back arrived in clear after AUTH TLS too.
        let discarded = discarded + self.deferred.drain(..).map(|l| l.len()).sum::<usize>();
        if discarded > 0 {
            self.reject(Rejection::TlsPipelined);
            warn!(
                bytes = discarded,
                "discarded what the client sent in clear after AUTH TLS"
            );
        }
        match result {
            Ok(()) => {
                self.tls.client_secure = true;
                // RFC 4217: a new TLS session starts with clear data until PROT P.
                self.tls.client_pbsz = false;
                self.tls.client_private = false;
                self.route_after_tls();
            }
            Err(error) => {
                self.reject(Rejection::ClientTls);
                info!(%error, "client TLS handshake failed");
                self.close("client TLS handshake failed");
            }
        }
        self.settle(now);
    }

    /// Whether the server's data connection for the next transfer is to be TLS, and the
    /// `PBSZ`/`PROT` to send first to make it so (empty when the server knows already).
    pub(super) fn upstream_protection(&mut self) -> (bool, Vec<u8>) {
        if !self.tls.upstream_secure {
            return (false, Vec::new());
        }
        let want = match self.tls_settings().map(|t| t.upstream.data) {
            Some(DataProtection::Private) => true,
            Some(DataProtection::Clear) => false,
            // A client in clear made no choice: the server leg gets the protection the
            // operator enabled TLS toward it for.
            _ => !self.tls.client_secure || self.tls.client_private,
        };
        let mut cmds = Vec::new();
        if !self.tls.upstream_pbsz {
            cmds.extend_from_slice(b"PBSZ 0\r\n");
        }
        if want != self.tls.upstream_private || !self.tls.upstream_pbsz {
            cmds.extend_from_slice(if want { b"PROT P\r\n" } else { b"PROT C\r\n" });
        }
        (want, cmds)
    }

    /// The server accepted (or not) the proxy's `PBSZ`/`PROT`.
    pub(super) fn protection_set(&mut self, private: bool) {
        self.tls.upstream_pbsz = true;
        self.tls.upstream_private = private;
    }

    /// The features the proxy offers in `FEAT`: the server's, less its own TLS ones
    /// (the proxy terminates TLS, the server's offer does not apply to the client), plus
    /// the proxy's when its client leg offers TLS. `None`: `FEAT` goes through as it is.
    /// A listener with routes offers `HOST` (RFC 7151) itself, in place of the server's.
    pub(super) fn tls_features(
        &self,
    ) -> Option<(&'static [&'static str], &'static [&'static str])> {
        const SERVERS: &[&str] = &["AUTH", "PBSZ", "PROT", "CCC", "SSCN", "CPSV"];
        const OURS: &[&str] = &["AUTH TLS", "PBSZ", "PROT"];
        const SERVERS_HOST: &[&str] = &["AUTH", "PBSZ", "PROT", "CCC", "SSCN", "CPSV", "HOST"];
        const OURS_HOST: &[&str] = &["AUTH TLS", "PBSZ", "PROT", "HOST"];
        let routed = self.routed();
        if self.tls_settings().is_none() {
            return routed.then_some((&["HOST"][..], &["HOST"][..]));
        }
        let offers_tls = self.client_tls_mode() != ClientTlsMode::Off;
        Some(match (routed, offers_tls) {
            (false, false) => (SERVERS, &[]),
            (false, true) => (SERVERS, OURS),
            (true, false) => (SERVERS_HOST, &["HOST"]),
            (true, true) => (SERVERS_HOST, OURS_HOST),
        })
    }
}
