//! A reverse listener with `routes:`: which server the session goes to, decided from what
//! the client says before it logs in (the choice itself is [`crate::route`]'s, pure):
//! - RFC 7151 `HOST` before `USER`: `220` and connect for a name a route has, `504` for
//!   one it has not (the session goes on), `503` once `USER` came;
//! - the TLS SNI of its handshake (implicit TLS, or after `AUTH TLS`): a name a route has
//!   chooses it at once, as `HOST` does;
//! - otherwise `USER`: the proxy greeted with its own `220` (as forward mode does), the
//!   login name chooses a route or the default, and the connect follows with the name the
//!   route makes (a regex capture, a template). A login no route takes, without a
//!   default, is asked for its password and then refused (`530`) with no connection.
//!
//! Once chosen, the session runs under the route's [`Policy`] (its upstream, pool, NAT,
//! data and upstream TLS settings) and the shell is told the route
//! ([`Action::Routed`]) for its pool, TLS material, metrics and logs.

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info};

use super::{Action, Answers, Machine, Phase, Say, Waiting};
use crate::proto::command::{VerbClass, parse_command};
use crate::proto::line::trim_eol;
use crate::proto::reply::Reply;
use crate::rejection::Rejection;
use crate::route::{Chosen, Decision, RouteLabel, Said, normalize};
use crate::session::policy::RouteTable;

/// Where the session is in choosing its route.
#[derive(Debug, Default)]
pub(super) struct RouteState {
    /// The listener's routes (`None`: a listener without routes).
    table: Option<Arc<RouteTable>>,
    /// The name the client asked for (`HOST` or TLS SNI), normalized.
    name: Option<String>,
    /// The route taken, once taken.
    chosen: Option<Chosen>,
    /// The proxy greeted the client itself: the server's greeting is not relayed.
    pub greeted: bool,
    /// A `USER` came that no route takes: its `PASS` is refused.
    unrouted: bool,
    /// Logins refused so far for want of a route.
    refused: u32,
    /// A `USER` came (after it, `HOST` is too late).
    user_sent: bool,
    /// The route was chosen by the client's `HOST`: the server gets it too, if it
    /// takes `HOST` (its `FEAT` says so).
    host_sent: bool,
    /// The route's metrics label, once taken.
    label: Option<RouteLabel>,
    /// The server took the client's `HOST` (it serves several names): the `SITE FXP`
    /// engine's own login to it names the host too.
    host_taken: bool,
}

/// Passing the client's `HOST` on: the proxy asks the server's features, then sends it.
#[derive(Debug)]
pub(super) enum HostStep {
    Features,
    Host,
}

impl RouteState {
    /// Whether the listener has routes and none is taken yet.
    fn pending(&self) -> bool {
        self.table.is_some() && self.chosen.is_none()
    }
}

impl Machine {
    /// The name of the route this session took, once taken (the console, the API).
    pub(super) fn route_name(&self) -> Option<String> {
        let (table, chosen) = (self.route.table.as_ref()?, self.route.chosen?);
        Some(table.name(chosen).to_string())
    }

    /// The route this session's metrics count under: the one it took, `none` while a
    /// listener with routes has not chosen, `default` on a listener without routes.
    pub(super) fn route_label(&self) -> RouteLabel {
        match &self.route.label {
            Some(label) => label.clone(),
            None => RouteLabel::at_accept(self.routed()),
        }
    }

    /// Whether this session's listener has routes.
    pub(super) fn routed(&self) -> bool {
        self.route.table.is_some()
    }

    /// Whether a route is still to be chosen.
    pub(super) fn routing_pending(&self) -> bool {
        self.route.pending()
    }

    /// Opens a session of a listener with routes: the name its implicit-TLS handshake
    /// asked for ([`Machine::with_name`]) may choose at once; otherwise the proxy greets
    /// and waits.
    pub(super) fn start_routed(&mut self) {
        self.route.table = self.ctx.routes.clone();
        match self.decide(None) {
            Decision::Chosen(chosen) => {
                self.take_route(chosen);
                self.start();
            }
            Decision::Wait | Decision::NoRoute => {
                self.say(Say::ProxyGreeting);
                self.route.greeted = true;
                self.phase = Phase::ForwardLogin { attempts: 0 };
            }
        }
    }

    fn decide(&self, user: Option<&[u8]>) -> Decision {
        let Some(table) = &self.route.table else {
            return Decision::NoRoute;
        };
        table.decide(&Said {
            name: self.route.name.as_deref(),
            user,
        })
    }

    /// From now on the session is `chosen`'s: its policy, and the shell told.
    fn take_route(&mut self, chosen: Chosen) {
        let Some(table) = self.route.table.clone() else {
            return;
        };
        let Some(policy) = table.target(chosen) else {
            return;
        };
        let label = table.label(chosen);
        info!(route = %label, host = self.route.name.as_deref().unwrap_or(""), "route chosen");
        self.route.chosen = Some(chosen);
        self.route.label = Some(label.clone());
        self.ctx = Arc::clone(policy);
        self.act(Action::Routed {
            route: match chosen {
                Chosen::Route(i) => Some(i),
                Chosen::Default => None,
            },
            label,
        });
    }

    /// Connects to the chosen route's server (a backend of its pool), replaying
    /// `user_line` once it greeted.
    fn connect_route(&mut self, user_line: Option<Vec<u8>>) {
        if self.pooled() {
            return self.pooled_connect(user_line);
        }
        match self.ctx.cfg.upstream.clone() {
            Some(target) => self.connect(target, user_line, 0, false, None),
            // A route always has an upstream or a pool (the configuration says so).
            None => {
                self.say(Say::UpstreamUnreachable);
                self.close("route without upstream");
            }
        }
    }

    /// A client line while no route is taken yet (the proxy greeted): `HOST`, `USER`,
    /// `PASS` and `FEAT` are the routing's; the rest as before any login.
    pub(super) fn routing_line(&mut self, line: &[u8], attempts: u32, now: Instant) {
        let Ok(cmd) = parse_command(line) else {
            return self.forward_login_line(line, attempts, now);
        };
        let class = cmd.verb.class();
        if !matches!(
            class,
            VerbClass::Host | VerbClass::User | VerbClass::Pass | VerbClass::Features
        ) {
            return self.forward_login_line(line, attempts, now);
        }
        self.count(super::Count::Command(cmd.verb));
        if self.tls_command(&cmd, now) {
            return;
        }
        match class {
            VerbClass::Host => self.on_host(cmd.args),
            VerbClass::User => self.on_routed_user(cmd.args),
            VerbClass::Pass if self.route.unrouted => {
                // Refused only now, as a wrong password is: the reply to USER did not
                // tell which names a route takes.
                self.route.unrouted = false;
                self.route.user_sent = false;
                self.reject(Rejection::NoRoute);
                self.count(super::Count::Login { ok: false });
                self.say(Say::NoServerForLogin);
                // As forward mode's refused targets: a client guessing names gets few tries.
                self.route.refused += 1;
                if self.route.refused >= super::login::MAX_ATTEMPTS {
                    self.say(Say::TooManyRefusedTargets);
                    self.close("too many logins without a route");
                }
            }
            VerbClass::Pass => self.say(Say::LoginFirst),
            _ => {
                let ours = self.tls_features().map_or(&[][..], |(_, ours)| ours);
                let reply = crate::session::replies::multi_line(211, "Features:", ours);
                self.act(Action::ToClient(reply));
            }
        }
    }

    /// `HOST` before a route is taken.
    fn on_host(&mut self, args: &[u8]) {
        let written = String::from_utf8_lossy(trim_eol(args)).trim().to_string();
        let Some(name) = normalize(&written) else {
            return self.say(Say::HostSyntax);
        };
        if self.route.user_sent {
            return self.say(Say::HostTooLate);
        }
        let route = self.route.table.as_ref().and_then(|t| t.by_name(&name));
        let Some(i) = route else {
            self.reject(Rejection::UnknownHost);
            info!(host = %name, "HOST names no route");
            return self.say(Say::HostUnknown { name });
        };
        self.route.name = Some(name.clone());
        self.route.host_sent = true;
        self.say(Say::HostAccepted { name });
        self.take_route(Chosen::Route(i));
        self.connect_route(None);
    }

    /// `USER` before a route is taken: the name chooses one, or the default.
    fn on_routed_user(&mut self, args: &[u8]) {
        let user = trim_eol(args).to_vec();
        self.route.user_sent = true;
        match self.decide(Some(&user)) {
            Decision::Chosen(chosen) => {
                self.take_route(chosen);
                let line = self.upstream_user_line(&user);
                self.connect_route(Some(line));
            }
            Decision::Wait | Decision::NoRoute => {
                debug!(user = %String::from_utf8_lossy(&user), "no route for this login");
                self.route.unrouted = true;
                self.say(Say::PasswordRequired);
            }
        }
    }

    /// The `USER` line the chosen route's server gets for the client's `user` (the
    /// route's capture or template); remembered for `SITE FXP`'s login to it.
    fn upstream_user_line(&mut self, user: &[u8]) -> Vec<u8> {
        let name = match (&self.route.table, self.route.chosen) {
            (Some(t), Some(c)) => t.upstream_user(c, user, self.route.name.as_deref()),
            _ => user.to_vec(),
        };
        self.site.user = Some(String::from_utf8_lossy(&name).into_owned());
        let mut line = b"USER ".to_vec();
        line.extend_from_slice(&name);
        line.extend_from_slice(b"\r\n");
        line
    }

    /// `USER` on a routed session whose route is taken already: the name its server
    /// gets. `None`: not routed, the line goes as it is.
    pub(super) fn routed_user_line(&mut self, args: &[u8]) -> Option<Vec<u8>> {
        self.route.chosen?;
        self.route.user_sent = true;
        Some(self.upstream_user_line(trim_eol(args)))
    }

    /// `HOST` once the route is taken: the proxy answers, the server never sees it.
    /// Whether `line` was such a `HOST`.
    pub(super) fn host_after_route(&mut self, class: VerbClass, args: &[u8]) -> bool {
        if class != VerbClass::Host || !self.routed() {
            return false;
        }
        if self.logged_in || self.route.user_sent {
            self.say(Say::HostTooLate);
            return true;
        }
        let written = String::from_utf8_lossy(trim_eol(args)).trim().to_string();
        let Some(name) = normalize(&written) else {
            self.say(Say::HostSyntax);
            return true;
        };
        let same = self.route.table.as_ref().and_then(|t| t.by_name(&name));
        if same.map(Chosen::Route) == self.route.chosen {
            // The name its TLS handshake asked for, or one of the same route.
            self.say(Say::HostAccepted { name });
        } else {
            self.reject(Rejection::UnknownHost);
            self.say(Say::HostUnknown { name });
        }
        true
    }

    /// The name the session's server took with `HOST`, if it did.
    pub(super) fn host_taken(&self) -> Option<&str> {
        self.route.name.as_deref().filter(|_| self.route.host_taken)
    }

    /// The name a client's `HOST` chose its route with, still to pass to the server.
    pub(super) fn host_to_pass(&self) -> Option<&str> {
        self.route.name.as_deref().filter(|_| self.route.host_sent)
    }

    /// After the greeting of a server chosen by `HOST`: does it take `HOST` too? (As
    /// mod_proxy does: a server without it never sees one.)
    pub(super) fn ask_server_features(&mut self, now: Instant) {
        self.own_command(b"FEAT\r\n".to_vec(), Answers::OwnFeat, now);
        self.waiting = Some(Waiting::Host(HostStep::Features));
    }

    /// The server answered the proxy's `FEAT` or `HOST`.
    pub(super) fn on_own_host_step_reply(&mut self, reply: &Reply, now: Instant) {
        let Some(Waiting::Host(step)) = self.waiting.take() else {
            return;
        };
        let name = self.host_to_pass().map(str::to_owned);
        match (step, name) {
            (HostStep::Features, Some(name)) if reply.code == 211 && lists_host(reply) => {
                let line = format!("HOST {name}\r\n").into_bytes();
                self.own_command(line, Answers::OwnHost, now);
                self.waiting = Some(Waiting::Host(HostStep::Host));
                return;
            }
            (HostStep::Features, _) => debug!("the server does not take HOST; not sent"),
            (HostStep::Host, _) if reply.class() == 2 => {
                debug!("the server took HOST");
                self.route.host_taken = true;
            }
            (HostStep::Host, _) => {
                // The proxy chose the server already; its own view of the name is
                // its business, the session goes on.
                info!(reply = %super::reply_text(reply), "the server refused HOST");
            }
        }
        self.route.host_sent = false;
        if self.tls_after_greeting() {
            self.upstream_auth(super::tls::AfterUpstream::Nothing, now);
        }
    }

    /// The client's TLS handshake asked for `name` (SNI).
    pub(super) fn on_client_named(&mut self, name: &str) {
        if self.route.chosen.is_none() {
            self.route.name = normalize(name);
        }
    }

    /// The name an implicit-TLS handshake asked for, before the session starts.
    pub(super) fn set_client_name(&mut self, name: Option<&str>) {
        self.route.name = name.and_then(normalize);
    }

    /// The client's leg is secure: a name it asked for in the handshake may choose the
    /// route now; the connect follows, its greeting not relayed (the proxy greeted).
    pub(super) fn route_after_tls(&mut self) {
        if !self.route.pending() || self.route.user_sent {
            return;
        }
        let Some(name) = self.route.name.clone() else {
            return;
        };
        let Some(i) = self.route.table.as_ref().and_then(|t| t.by_name(&name)) else {
            return;
        };
        self.take_route(Chosen::Route(i));
        self.connect_route(None);
    }
}

/// Whether a `211` answer to `FEAT` lists `HOST` (one feature a line, RFC 2389).
fn lists_host(reply: &Reply) -> bool {
    reply.raw.split(|&b| b == b'\n').skip(1).any(|line| {
        let word = line.trim_ascii().split(|b| b.is_ascii_whitespace()).next();
        word.is_some_and(|w| w.eq_ignore_ascii_case(b"HOST"))
    })
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::super::{Connected, Event};
    use super::*;
    use crate::config::Config;
    use crate::session::policy::Policy;

    /// The example: alpha by name, beta by login (capture 1 is the server's
    /// name), `*.gamma` by name with a template; `default` adds the listener's own
    /// upstream as the default route.
    fn policy(default: bool, extra: &str) -> Arc<Policy> {
        let upstream = if default {
            "    upstream: 10.0.0.10:21\n"
        } else {
            ""
        };
        let yaml = format!(
            "listeners:\n  - name: edge\n    bind: 127.0.0.1:2121\n{upstream}{extra}    routes:\n      - match: {{host: alpha.example.net}}\n        upstream: 10.0.0.11:21\n      - match: {{user: '^(.+)@beta$'}}\n        name: beta\n        upstream: 10.0.0.12:21\n      - match: {{host: '*.gamma.example.net'}}\n        upstream: 10.0.0.14:21\n        user: '{{user}}@{{host}}'\n"
        );
        let cfg = Config::parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        Arc::new(Policy::new(
            cfg.listeners[0].clone(),
            cfg.limits.clone(),
            &cfg.data,
        ))
    }

    struct S {
        m: Machine,
        now: Instant,
    }

    impl S {
        fn new(p: Arc<Policy>, sni: Option<&str>) -> S {
            let ip: IpAddr = "198.51.100.7".parse().unwrap();
            let now = Instant::now();
            let local = "127.0.0.1".parse().unwrap();
            S {
                m: Machine::with_name(p, ip, local, None, sni, now),
                now,
            }
        }

        fn take(&mut self) -> Vec<Action> {
            std::iter::from_fn(|| self.m.poll_action()).collect()
        }

        fn client(&mut self, line: &str) -> Vec<Action> {
            let line = format!("{line}\r\n");
            self.m.handle(Event::ClientLine(line.into()), self.now);
            self.take()
        }

        fn server(&mut self, line: &str) -> Vec<Action> {
            let line = format!("{line}\r\n");
            self.m.handle(Event::UpstreamLine(line.into()), self.now);
            self.take()
        }

        fn connected(&mut self, peer: &str) -> Vec<Action> {
            let c = Connected {
                peer: peer.parse().unwrap(),
                local: "198.18.0.1".parse().unwrap(),
                refuses_passive: false,
            };
            self.m.handle(Event::Connected(Ok(c)), self.now);
            self.take()
        }
    }

    fn to_client(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ToClient(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    fn to_server(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ToUpstream(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    /// Where the session connects, if it does.
    fn connects(actions: &[Action]) -> Option<String> {
        actions.iter().find_map(|a| match a {
            Action::Connect(req) => Some(req.target.to_string()),
            _ => None,
        })
    }

    fn routed(actions: &[Action]) -> Option<(Option<usize>, String)> {
        actions.iter().find_map(|a| match a {
            Action::Routed { route, label } => Some((*route, label.to_string())),
            _ => None,
        })
    }

    #[test]
    fn the_proxy_greets_and_feat_lists_host() {
        let mut s = S::new(policy(true, ""), None);
        let first = s.take();
        assert_eq!(to_client(&first), ["220 fxprelay FTP proxy ready.\r\n"]);
        assert_eq!(connects(&first), None);
        let feat = to_client(&s.client("FEAT")).concat();
        assert!(
            feat.starts_with("211-") && feat.contains(" HOST\r\n"),
            "{feat}"
        );
    }

    /// RFC 7151: a known name is answered 220 and chosen at once; the server's own
    /// greeting is not relayed (the client was greeted), the login goes as it came.
    #[test]
    fn host_chooses_at_once() {
        let mut s = S::new(policy(true, ""), None);
        s.take();
        let a = s.client("HOST Alpha.Example.NET");
        assert_eq!(to_client(&a), ["220 alpha.example.net ready.\r\n"]);
        assert_eq!(routed(&a), Some((Some(0), "alpha.example.net".into())));
        assert_eq!(connects(&a).as_deref(), Some("10.0.0.11:21"));
        // Lines that come meanwhile wait for the server.
        assert!(s.client("USER alice").is_empty());
        s.connected("10.0.0.11:21");
        let a = s.server("220 alpha's own greeting");
        assert!(to_client(&a).is_empty(), "{a:?}");
        // The server takes HOST (its FEAT says so): it gets the client's.
        assert_eq!(to_server(&a), ["FEAT\r\n"]);
        s.server("211-Features:");
        s.server(" MDTM");
        let a = s.server(" HOST");
        assert!(a.is_empty());
        let a = s.server("211 End");
        assert!(to_client(&a).is_empty(), "{a:?}");
        assert_eq!(to_server(&a), ["HOST alpha.example.net\r\n"]);
        let a = s.server("220 alpha here");
        assert!(to_client(&a).is_empty(), "{a:?}");
        assert_eq!(to_server(&a), ["USER alice\r\n"]);
        let a = s.server("331 password please");
        assert_eq!(to_client(&a), ["331 password please\r\n"]);
    }

    /// A server whose FEAT has no HOST never sees one; one that refuses it still serves.
    #[test]
    fn host_goes_on_only_to_a_server_that_takes_it() {
        let mut s = S::new(policy(true, ""), None);
        s.take();
        s.client("HOST alpha.example.net");
        s.connected("10.0.0.11:21");
        assert_eq!(to_server(&s.server("220 hi")), ["FEAT\r\n"]);
        s.client("USER alice");
        s.server("211-Features:");
        s.server(" MDTM HOST");
        let a = s.server("211 End");
        assert_eq!(to_server(&a), ["USER alice\r\n"]);
        let mut s = S::new(policy(true, ""), None);
        s.take();
        s.client("HOST alpha.example.net");
        s.connected("10.0.0.11:21");
        s.server("220 hi");
        s.server("211-Features:");
        s.server(" HOST");
        assert_eq!(to_server(&s.server("211 End")).len(), 1);
        s.client("USER alice");
        let a = s.server("504 no such host here");
        assert!(to_client(&a).is_empty(), "{a:?}");
        assert_eq!(to_server(&a), ["USER alice\r\n"]);
    }

    /// `SITE FXP` from a session whose server took the client's `HOST`: the engine asks
    /// that server (A) for the same name; from one whose server does not take `HOST`, not.
    #[test]
    fn site_fxp_names_the_host_the_server_took() {
        let rules_of = |lists_host: bool| {
            let mut s = S::new(policy(true, ""), None);
            s.take();
            s.client("HOST alpha.example.net");
            s.connected("10.0.0.11:21");
            s.server("220 hi");
            s.server("211-Features:");
            if lists_host {
                s.server(" HOST");
            }
            s.server("211 End");
            if lists_host {
                s.server("220 alpha it is");
            }
            s.client("USER alice");
            s.server("331 pass");
            s.client("PASS secret");
            s.server("230 in");
            let a = s.client("SITE FXP TO ftp://u:p@10.0.0.11/");
            a.into_iter()
                .find_map(|a| match a {
                    Action::CheckFxpDestination { rules, .. } => Some(rules),
                    _ => None,
                })
                .expect("the destination is checked")
        };
        let named = rules_of(true).virtual_host.expect("a virtual host");
        assert_eq!(
            (named.host.as_str(), named.port, named.name.as_str()),
            ("10.0.0.11", 21, "alpha.example.net")
        );
        assert!(rules_of(false).virtual_host.is_none());
    }

    /// An unknown name: 504, and the session goes on (another HOST, or a login).
    #[test]
    fn an_unknown_host_gets_504_and_the_session_stays_usable() {
        let mut s = S::new(policy(false, ""), None);
        s.take();
        let a = s.client("HOST nowhere.example.net");
        assert_eq!(to_client(&a), ["504 Unknown host nowhere.example.net.\r\n"]);
        assert_eq!(connects(&a), None);
        assert!(to_client(&s.client("HOST")).concat().starts_with("501 "));
        assert_eq!(to_client(&s.client("NOOP")), ["200 NOOP ok.\r\n"]);
        let a = s.client("HOST x.gamma.example.net");
        assert_eq!(to_client(&a), ["220 x.gamma.example.net ready.\r\n"]);
        assert_eq!(connects(&a).as_deref(), Some("10.0.0.14:21"));
    }

    /// A login chooses a user route; its capture is the server's name.
    #[test]
    fn a_login_chooses_by_its_name() {
        let mut s = S::new(policy(true, ""), None);
        s.take();
        let a = s.client("USER alice@beta");
        assert_eq!(routed(&a), Some((Some(1), "beta".into())));
        assert_eq!(connects(&a).as_deref(), Some("10.0.0.12:21"));
        s.connected("10.0.0.12:21");
        let a = s.server("220 beta");
        assert_eq!(to_server(&a), ["USER alice\r\n"]);
        // HOST after USER, and after the login: 503, answered by the proxy.
        s.server("331 pass");
        let a = s.client("HOST alpha.example.net");
        assert_eq!(to_client(&a), ["503 HOST must come before USER.\r\n"]);
        assert!(to_server(&a).is_empty());
        s.client("PASS secret");
        s.server("230 in");
        let a = s.client("HOST alpha.example.net");
        assert!(to_client(&a).concat().starts_with("503 "));
    }

    /// What the session counts carries its route: `none` until one is taken, then the
    /// route's name, for as long as the session lasts.
    #[test]
    fn counts_carry_the_route() {
        use super::super::Count;
        let counts = |actions: &[Action]| -> Vec<(Count, String)> {
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::Count(c, route) => Some((c.clone(), route.to_string())),
                    _ => None,
                })
                .collect()
        };
        let mut s = S::new(policy(true, ""), None);
        s.take();
        let a = s.client("HOST nowhere.example.net");
        assert!(
            counts(&a).contains(&(Count::Rejected(Rejection::UnknownHost), "none".into())),
            "{a:?}"
        );
        let a = s.client("USER alice@beta");
        // The route is taken before anything is counted under it.
        let routed_at = a.iter().position(|a| matches!(a, Action::Routed { .. }));
        assert!(routed_at.is_some(), "{a:?}");
        s.connected("10.0.0.12:21");
        s.server("220 beta");
        let a = s.server("331 pass");
        assert_eq!(counts(&a), [(Count::Reply(331), "beta".to_string())]);
        // The default route is `default`.
        let mut s = S::new(policy(true, ""), None);
        s.take();
        s.client("USER carol");
        s.connected("10.0.0.10:21");
        s.server("220 default");
        let a = s.server("331 pass");
        assert_eq!(counts(&a), [(Count::Reply(331), "default".to_string())]);
    }

    /// A login no route takes goes to the default route, as it came.
    #[test]
    fn an_unmatched_login_takes_the_default() {
        let mut s = S::new(policy(true, ""), None);
        s.take();
        let a = s.client("USER carol");
        assert_eq!(routed(&a), Some((None, "default".into())));
        assert_eq!(connects(&a).as_deref(), Some("10.0.0.10:21"));
        s.connected("10.0.0.10:21");
        assert_eq!(to_server(&s.server("220 default")), ["USER carol\r\n"]);
    }

    /// Without a default route: asked for the password, then 530, never a connection.
    #[test]
    fn an_unmatched_login_without_default_gets_530_and_no_connection() {
        let mut s = S::new(policy(false, ""), None);
        s.take();
        let a = s.client("USER carol");
        assert_eq!(to_client(&a), ["331 Password required.\r\n"]);
        let b = s.client("PASS secret");
        assert_eq!(to_client(&b), ["530 No server for this login.\r\n"]);
        for a in a.iter().chain(&b) {
            assert!(!matches!(a, Action::Connect(_) | Action::Close), "{a:?}");
        }
        assert!(b.iter().any(|a| matches!(
            a,
            Action::Count(
                super::super::Count::Rejected(Rejection::NoRoute),
                RouteLabel::NotYet
            )
        )));
        let failed = super::super::Count::Login { ok: false };
        assert!(
            b.iter()
                .any(|a| matches!(a, Action::Count(c, RouteLabel::NotYet) if *c == failed))
        );
        // The session goes on: another login may have a route.
        let a = s.client("USER dave@beta");
        assert_eq!(connects(&a).as_deref(), Some("10.0.0.12:21"));
        // A client guessing names gets three tries, then the session ends.
        let mut s = S::new(policy(false, ""), None);
        s.take();
        for _ in 0..2 {
            s.client("USER nobody");
            let a = s.client("PASS x");
            assert!(!a.iter().any(|a| matches!(a, Action::Close)));
        }
        s.client("USER nobody");
        let a = s.client("PASS x");
        assert!(to_client(&a).concat().contains("421 "), "{a:?}");
        assert!(a.iter().any(|a| matches!(a, Action::Close)));
    }

    /// A host route's template makes the server's name from the login and the name.
    #[test]
    fn a_template_names_the_login() {
        let mut s = S::new(policy(false, ""), None);
        s.take();
        s.client("HOST ftp.gamma.example.net");
        s.connected("10.0.0.14:21");
        s.server("220 gamma");
        s.server("500 FEAT unknown");
        let a = s.client("USER bob");
        assert_eq!(to_server(&a), ["USER bob@ftp.gamma.example.net\r\n"]);
    }

    /// The name of an implicit-TLS handshake chooses before anything is said: the
    /// server's greeting is the client's.
    #[test]
    fn a_tls_name_chooses_at_once() {
        let mut s = S::new(policy(false, ""), Some("alpha.example.net"));
        let a = s.take();
        assert_eq!(connects(&a).as_deref(), Some("10.0.0.11:21"));
        assert!(to_client(&a).is_empty());
        s.connected("10.0.0.11:21");
        assert_eq!(to_client(&s.server("220 alpha")), ["220 alpha\r\n"]);
        // Its own name again is fine before USER; another is not this session's.
        let a = s.client("HOST alpha.example.net");
        assert_eq!(to_client(&a), ["220 alpha.example.net ready.\r\n"]);
        let a = s.client("HOST x.gamma.example.net");
        assert!(to_client(&a).concat().starts_with("504 "));
        // A name no route has: the choice waits for the login.
        let mut s = S::new(policy(true, ""), Some("other.example.net"));
        let a = s.take();
        assert_eq!(connects(&a), None);
        assert_eq!(to_client(&a), ["220 fxprelay FTP proxy ready.\r\n"]);
    }

    /// After `AUTH TLS`, the handshake's name chooses; the connect follows and the
    /// server's greeting is not relayed.
    #[test]
    fn the_name_after_auth_tls_chooses() {
        // The machine holds settings only: the files are the shell's to read.
        let tls = "    tls:\n      client: {mode: explicit, cert: /nonexistent/c.pem, key: /nonexistent/k.pem}\n";
        let mut s = S::new(policy(false, tls), None);
        s.take();
        let feat = to_client(&s.client("FEAT")).concat();
        assert!(
            feat.contains(" AUTH TLS\r\n") && feat.contains(" HOST\r\n"),
            "{feat}"
        );
        let a = s.client("AUTH TLS");
        assert!(a.iter().any(|a| matches!(a, Action::UpgradeClient)));
        s.m.handle(Event::ClientNamed("x.gamma.example.net".into()), s.now);
        let ok = Event::ClientSecured {
            result: Ok(()),
            discarded: 0,
        };
        s.m.handle(ok, s.now);
        let a = s.take();
        assert_eq!(connects(&a).as_deref(), Some("10.0.0.14:21"));
        s.connected("10.0.0.14:21");
        // Mirroring the client: TLS toward the server too, before anything else.
        let a = s.server("220 gamma");
        assert!(to_client(&a).is_empty());
        assert_eq!(to_server(&a), ["AUTH TLS\r\n"]);
        assert!(s.client("USER bob").is_empty());
        let a = s.server("234 go");
        assert!(
            a.iter()
                .any(|a| matches!(a, Action::UpgradeUpstream { .. }))
        );
        let ok = Event::UpstreamSecured {
            result: Ok(()),
            discarded: 0,
        };
        s.m.handle(ok, s.now);
        assert_eq!(to_server(&s.take()), ["USER bob@x.gamma.example.net\r\n"]);
    }
}
