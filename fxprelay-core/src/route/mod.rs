//! Routing, as pure decisions: which of a reverse listener's routes a session belongs to,
//! from what its client has said so far, and the name its server gets.
//!
//! A listener's [`Routes`] are tried in order, first match wins:
//! - `match: {host: ...}` ([`HostPattern`]) compares the name the client asked for, with
//!   RFC 7151 `HOST` before logging in or with the TLS SNI of its handshake;
//! - `match: {user: ...}` ([`UserPattern`]) is a regular expression on the `USER` name;
//!   its capture group 1, if any, is the name the server gets;
//! - a route's `user:` [`Template`] makes the server's name from `{user}` and `{host}`;
//! - the listener's own `upstream`, when it has one, is the default route, taken by a
//!   login no route matched.
//!
//! [`Routes::decide`] is the choice: a route as soon as a name matches one, otherwise a
//! wait for `USER`, then a user route, the default, or no route at all. [`reach`] finds
//! routes that can never be chosen and routes that share names, for `fxprelay check`.
//!
//! The payload of a route (where it goes, with which settings) is the caller's: this
//! module knows matches and names only, does no I/O and imports nothing from the crate
//! (the bottom of the graph, beside `net` and `proto`).

mod host;
pub mod reach;
mod template;
mod user;

pub use host::{HostPattern, normalize};
pub use template::Template;
pub use user::UserPattern;

use std::sync::Arc;

use serde::Serialize;

/// What the default route is called (in logs, metrics and `fxprelay config`): the
/// listener's own `upstream`. No route may take the name.
pub const DEFAULT_ROUTE: &str = "default";

/// The `route` label of a session's metrics before a listener with routes chose one
/// (an unknown `HOST`, a login no route takes, a client refused at accept). No route
/// may take the name.
pub const NO_ROUTE_YET: &str = "none";

/// The route a session's metrics are counted under (their `route` label). Bounded: a
/// route's name comes from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteLabel {
    /// A listener with routes has not chosen one yet ([`NO_ROUTE_YET`]).
    NotYet,
    /// The listener's own upstream ([`DEFAULT_ROUTE`]): the default route, and every
    /// session of a listener without routes.
    Default,
    /// A route, by its name.
    Named(Arc<str>),
}

impl RouteLabel {
    /// The label of a session that has said nothing yet: [`RouteLabel::NotYet`] on a
    /// listener with routes, [`RouteLabel::Default`] on one without (its upstream is
    /// known from the start).
    pub fn at_accept(has_routes: bool) -> RouteLabel {
        if has_routes {
            RouteLabel::NotYet
        } else {
            RouteLabel::Default
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            RouteLabel::NotYet => NO_ROUTE_YET,
            RouteLabel::Default => DEFAULT_ROUTE,
            RouteLabel::Named(name) => name,
        }
    }

    /// The label as a shared string (a metric label value without a copy).
    pub fn shared(&self) -> Arc<str> {
        match self {
            RouteLabel::Named(name) => name.clone(),
            other => Arc::from(other.as_str()),
        }
    }
}

impl std::fmt::Display for RouteLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a route's setting cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("`{written}` is not a host pattern: {why}")]
    Host { written: String, why: String },
    #[error("`{written}` is not a usable regular expression: {why}")]
    User { written: String, why: String },
    #[error("`{written}` is not a usable template: {why}")]
    Template { written: String, why: String },
}

/// What a route matches. Written `{host: ...}` or `{user: ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Match {
    Host(HostPattern),
    User(UserPattern),
}

impl Match {
    /// `host` or `user`, as the file writes the key.
    pub fn kind(&self) -> &'static str {
        match self {
            Match::Host(_) => "host",
            Match::User(_) => "user",
        }
    }

    fn matches(&self, said: &Said<'_>) -> bool {
        match self {
            Match::Host(p) => said.name.is_some_and(|n| p.matches(n)),
            Match::User(p) => said.user.is_some_and(|u| p.matches(u)),
        }
    }
}

/// One route: its name, what it matches, the server's login name, and where it goes
/// (`to`, the caller's).
#[derive(Debug, Clone)]
pub struct Route<T> {
    pub name: String,
    pub matches: Match,
    pub user: Option<Template>,
    pub to: T,
}

/// What the client has said so far, as far as routing is concerned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Said<'a> {
    /// The name it asked for (`HOST`, or TLS SNI), normalized ([`normalize`]).
    pub name: Option<&'a str>,
    /// Its `USER` name, once sent.
    pub user: Option<&'a [u8]>,
}

/// A route of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// The route at this place in the list.
    Route(usize),
    /// The listener's own `upstream`.
    Default,
}

/// What [`Routes::decide`] makes of what the client said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Chosen(Chosen),
    /// Nothing matches yet, and the login name is still to come.
    Wait,
    /// The login name came, no route matches it, and there is no default route.
    NoRoute,
}

/// A listener's routes, in order, and its default route.
#[derive(Debug, Clone)]
pub struct Routes<T> {
    routes: Vec<Route<T>>,
    default: Option<T>,
}

impl<T> Routes<T> {
    pub fn new(routes: Vec<Route<T>>, default: Option<T>) -> Routes<T> {
        Routes { routes, default }
    }

    pub fn routes(&self) -> &[Route<T>] {
        &self.routes
    }

    /// The listener's own `upstream`, if it has one.
    pub fn default_route(&self) -> Option<&T> {
        self.default.as_ref()
    }

    /// The route a name selects, if any: the first host route matching it (what `HOST`
    /// and TLS SNI choose, and which certificate the handshake shows).
    pub fn by_name(&self, name: &str) -> Option<usize> {
        let said = Said {
            name: Some(name),
            user: None,
        };
        self.routes
            .iter()
            .position(|r| matches!(r.matches, Match::Host(_)) && r.matches.matches(&said))
    }

    /// The route for what the client has said: the first that matches; without a match,
    /// the default once the login name came (or none), and a wait before.
    pub fn decide(&self, said: &Said<'_>) -> Decision {
        if let Some(i) = self.routes.iter().position(|r| r.matches.matches(said)) {
            return Decision::Chosen(Chosen::Route(i));
        }
        match (said.user, &self.default) {
            (None, _) => Decision::Wait,
            (Some(_), Some(_)) => Decision::Chosen(Chosen::Default),
            (Some(_), None) => Decision::NoRoute,
        }
    }

    /// Where a chosen route goes.
    pub fn target(&self, chosen: Chosen) -> Option<&T> {
        match chosen {
            Chosen::Route(i) => self.routes.get(i).map(|r| &r.to),
            Chosen::Default => self.default.as_ref(),
        }
    }

    /// Every label a session of these routes can be counted under, in order: before a
    /// choice, each route, the default route when there is one.
    pub fn labels(&self) -> Vec<RouteLabel> {
        let named = self
            .routes
            .iter()
            .map(|r| RouteLabel::Named(r.name.as_str().into()));
        let default = self.default.as_ref().map(|_| RouteLabel::Default);
        std::iter::once(RouteLabel::NotYet)
            .chain(named)
            .chain(default)
            .collect()
    }

    /// A chosen route's metrics label (once per session: it copies the name).
    pub fn label(&self, chosen: Chosen) -> RouteLabel {
        match chosen {
            Chosen::Route(i) => self.routes.get(i).map_or(RouteLabel::Default, |r| {
                RouteLabel::Named(r.name.as_str().into())
            }),
            Chosen::Default => RouteLabel::Default,
        }
    }

    /// A chosen route's name.
    pub fn name(&self, chosen: Chosen) -> &str {
        match chosen {
            Chosen::Route(i) => self.routes.get(i).map_or(DEFAULT_ROUTE, |r| &r.name),
            Chosen::Default => DEFAULT_ROUTE,
        }
    }

    /// The login name the server gets on `chosen` for a client that said `user` (and
    /// asked for `name`): the route's template, with `{user}` the client's name or a
    /// user route's capture group 1; without a template, that capture or the name as is.
    pub fn upstream_user(&self, chosen: Chosen, user: &[u8], name: Option<&str>) -> Vec<u8> {
        let Chosen::Route(i) = chosen else {
            return user.to_vec();
        };
        let Some(route) = self.routes.get(i) else {
            return user.to_vec();
        };
        let base = match &route.matches {
            Match::User(p) => p.name(user).unwrap_or(user),
            Match::Host(_) => user,
        };
        match &route.user {
            Some(t) => t.render(base, name),
            None => base.to_vec(),
        }
    }

    /// The same routes going elsewhere.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Routes<U> {
        Routes {
            routes: self
                .routes
                .iter()
                .map(|r| Route {
                    name: r.name.clone(),
                    matches: r.matches.clone(),
                    user: r.user.clone(),
                    to: f(&r.to),
                })
                .collect(),
            default: self.default.as_ref().map(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example: alpha by name, beta by login, `*.gamma` by name with a
    /// template, and a default route when `default` is set.
    fn example(default: bool) -> Routes<&'static str> {
        let route = |name: &str, matches, user: Option<&str>, to| Route {
            name: name.into(),
            matches,
            user: user.map(|t| Template::parse(t).unwrap()),
            to,
        };
        Routes::new(
            vec![
                route(
                    "alpha",
                    Match::Host(HostPattern::parse("alpha.example.net").unwrap()),
                    None,
                    "10.0.0.11:21",
                ),
                route(
                    "beta",
                    Match::User(UserPattern::new("^(.+)@beta$").unwrap()),
                    None,
                    "beta pool",
                ),
                route(
                    "gamma",
                    Match::Host(HostPattern::parse("*.gamma.example.net").unwrap()),
                    Some("{user}@{host}"),
                    "10.0.0.14:21",
                ),
            ],
            default.then_some("10.0.0.10:21"),
        )
    }

    fn said<'a>(name: Option<&'a str>, user: Option<&'a str>) -> Said<'a> {
        Said {
            name,
            user: user.map(str::as_bytes),
        }
    }

    #[test]
    fn a_name_chooses_at_once() {
        let r = example(true);
        let alpha = r.decide(&said(Some("alpha.example.net"), None));
        assert_eq!(alpha, Decision::Chosen(Chosen::Route(0)));
        assert_eq!(r.target(Chosen::Route(0)), Some(&"10.0.0.11:21"));
        let gamma = r.decide(&said(Some("ftp.gamma.example.net"), None));
        assert_eq!(gamma, Decision::Chosen(Chosen::Route(2)));
        assert_eq!(r.by_name("ftp.gamma.example.net"), Some(2));
        assert_eq!(r.by_name("beta"), None);
        // A name no route has: wait for the login.
        assert_eq!(r.decide(&said(Some("other.test"), None)), Decision::Wait);
        assert_eq!(r.decide(&said(None, None)), Decision::Wait);
    }

    #[test]
    fn a_login_chooses_a_user_route_or_the_default() {
        let r = example(true);
        let beta = r.decide(&said(None, Some("alice@beta")));
        assert_eq!(beta, Decision::Chosen(Chosen::Route(1)));
        assert_eq!(r.name(Chosen::Route(1)), "beta");
        let plain = r.decide(&said(Some("other.test"), Some("alice")));
        assert_eq!(plain, Decision::Chosen(Chosen::Default));
        assert_eq!(r.name(Chosen::Default), DEFAULT_ROUTE);
        assert_eq!(r.target(Chosen::Default), Some(&"10.0.0.10:21"));
        // Without a default route, an unmatched login has no server.
        let strict = example(false);
        let none = strict.decide(&said(None, Some("alice")));
        assert_eq!(none, Decision::NoRoute);
        assert_eq!(strict.target(Chosen::Default), None);
    }

    #[test]
    fn first_match_wins() {
        let r = Routes::new(
            vec![
                Route {
                    name: "one".into(),
                    matches: Match::User(UserPattern::new("^ops-").unwrap()),
                    user: None,
                    to: 1,
                },
                Route {
                    name: "two".into(),
                    matches: Match::User(UserPattern::new("@beta$").unwrap()),
                    user: None,
                    to: 2,
                },
            ],
            None,
        );
        let d = r.decide(&said(None, Some("ops-x@beta")));
        assert_eq!(d, Decision::Chosen(Chosen::Route(0)));
    }

    #[test]
    fn the_servers_login_name() {
        let r = example(true);
        let up = |c, user: &str, name| r.upstream_user(c, user.as_bytes(), name);
        // Capture group 1 of a user route.
        assert_eq!(up(Chosen::Route(1), "alice@beta", None), b"alice");
        // A host route without a template, and the default: as the client wrote it.
        assert_eq!(up(Chosen::Route(0), "alice@x", None), b"alice@x");
        assert_eq!(up(Chosen::Default, "alice", None), b"alice");
        // The template with the name the client asked for.
        let gamma = up(Chosen::Route(2), "bob", Some("ftp.gamma.example.net"));
        assert_eq!(gamma, b"bob@ftp.gamma.example.net");
    }

    #[test]
    fn a_template_on_a_user_route_gets_the_capture() {
        let r = Routes::new(
            vec![Route {
                name: "web".into(),
                matches: Match::User(UserPattern::new("^web-(.+)$").unwrap()),
                user: Some(Template::parse("{user}@{host}").unwrap()),
                to: (),
            }],
            None,
        );
        let name = r.upstream_user(Chosen::Route(0), b"web-carol", Some("ftp.test"));
        assert_eq!(name, b"carol@ftp.test");
    }

    #[test]
    fn labels_are_bounded_by_the_configuration() {
        let named = |n: &str| RouteLabel::Named(n.into());
        let r = example(true);
        assert_eq!(
            r.labels(),
            [
                RouteLabel::NotYet,
                named("alpha"),
                named("beta"),
                named("gamma"),
                RouteLabel::Default
            ]
        );
        assert_eq!(example(false).labels().last(), Some(&named("gamma")));
        assert_eq!(r.label(Chosen::Route(1)), named("beta"));
        assert_eq!(r.label(Chosen::Default).as_str(), DEFAULT_ROUTE);
        assert_eq!(RouteLabel::at_accept(true).as_str(), NO_ROUTE_YET);
        assert_eq!(RouteLabel::at_accept(false), RouteLabel::Default);
        assert_eq!(&*named("beta").shared(), "beta");
    }

    #[test]
    fn mapped_routes_keep_their_matches() {
        let r = example(true).map(|to| to.len());
        assert_eq!(r.target(Chosen::Route(0)), Some(&12));
        assert_eq!(r.routes()[2].name, "gamma");
        assert_eq!(r.default_route(), Some(&12));
    }
}
