//! A reverse listener's `routes:`, each sending the sessions it matches (by the name the
//! client asks for, or by its login) to an upstream of its own, and the section's rules:
//! one match key, a pattern that compiles, a template that parses, a certificate only
//! for a name, the route's pool keys as a listener's; no route that can never be chosen
//! (an error), routes that share names (a warning); names unique. What a route leaves
//! out is the listener's: the validated route carries the settings it runs with.

use std::collections::HashSet;

use serde::{Serialize, Serializer};
use serde_saphyr::Spanned;

use super::error::ConfigError;
use super::origin::{Origin, listener_key};
use super::pool::{self, PoolConfig, PoolError};
use super::schema::{DataMode, FileRoute, FileUpstream, RouteTls, UpstreamData};
use crate::net::{HostName, HostPort};
use crate::rewrite::{NatMode, NatPolicy};
use crate::route::reach::{self, Finding};
use crate::route::{DEFAULT_ROUTE, HostPattern, Match, NO_ROUTE_YET, Template, UserPattern};
use crate::tls::{ClientTlsMode, TlsSettings, UpstreamPlan};

/// One route, validated: printed in the file's own keys, every setting as it runs (the
/// listener's where the route left a key out).
#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    pub name: String,
    #[serde(rename = "match")]
    pub matches: Match,
    /// One upstream and no pool keys: that upstream. Otherwise the pool's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<HostPort>,
    /// Written as the `upstream:` list, `balance` and `health_check`.
    #[serde(flatten)]
    pub pool: Option<PoolConfig>,
    /// The server's login name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Template>,
    /// This name's certificate and the upstream leg's own settings, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RouteTls>,
    /// The listener's, with the keys of the route's `nat:` (its `private_ranges` are
    /// the listener's).
    #[serde(serialize_with = "nat_keys")]
    pub nat: NatPolicy,
    pub upstream_data: UpstreamData,
}

impl RouteConfig {
    /// The TLS settings of sessions on this route: the listener's client leg, and the
    /// route's `tls.upstream` or else the listener's. `None` when neither leg uses TLS.
    pub fn tls_settings(&self, listener: Option<&TlsSettings>) -> Option<TlsSettings> {
        let upstream = self.tls.as_ref().and_then(|t| t.upstream.clone());
        let settings = match (listener, upstream) {
            (l, Some(upstream)) => TlsSettings {
                client: l.map(|l| l.client.clone()).unwrap_or_default(),
                upstream,
            },
            (Some(l), None) => l.clone(),
            (None, None) => return None,
        };
        settings.enabled().then_some(settings)
    }

    /// The certificate and key clients asking for this route's name get.
    pub fn certificate(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        let t = self.tls.as_ref()?;
        Some((t.cert.as_deref()?, t.key.as_deref()?))
    }
}

/// A route's NAT policy as its `nat:` key (the ranges are the listener's key).
fn nat_keys<S: Serializer>(nat: &NatPolicy, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Nat<'a> {
        passive: NatMode,
        active: NatMode,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_address: &'a Option<HostName>,
    }
    Nat {
        passive: nat.passive,
        active: nat.active,
        client_address: &nat.client_address,
    }
    .serialize(s)
}

/// What a listener's routes inherit, validated already.
pub(super) struct Inherited<'a> {
    pub data: DataMode,
    pub tls: Option<&'a TlsSettings>,
    pub nat: &'a NatPolicy,
    pub upstream_data: UpstreamData,
}

/// The key path of `field` of route `j` of listener `i`.
pub fn route_key(i: usize, j: usize, field: &str) -> String {
    listener_key(i, &format!("routes[{j}].{field}"))
}

/// The routes of listener `i`, validated; `warn` receives (line, message) for what
/// works but is likely not meant, and `origin` the line of each route's `tls:` block.
pub(super) fn validate(
    i: usize,
    routes: &Spanned<Vec<Spanned<FileRoute>>>,
    from: &Inherited<'_>,
    origin: &mut Origin,
    mut warn: impl FnMut(u64, String),
) -> Result<Vec<RouteConfig>, ConfigError> {
    let mut out = Vec::new();
    let mut lines = Vec::new();
    for (j, r) in routes.value.iter().enumerate() {
        let line = r.referenced.line();
        let route = one(i, j, &r.value, line, from, origin, &mut warn)?;
        let match_line = r.value.matches.referenced.line();
        lines.push((line, if match_line > 0 { match_line } else { line }));
        out.push(route);
    }
    let matches: Vec<&Match> = out.iter().map(|r| &r.matches).collect();
    for finding in reach::findings(&matches) {
        match finding {
            Finding::Unreachable { route, by } => {
                let what = what_it_matches(&out[route].matches);
                return Err(ConfigError::invalid(
                    route_key(i, route, "match"),
                    lines[route].1,
                    format!(
                        "this route can never be chosen: every {what} it matches, routes[{by}] (`{}`) matches first; remove it or move it up",
                        out[by].name
                    ),
                ));
            }
            Finding::Overlap { route, with } => warn(
                lines[route].1,
                format!(
                    "routes[{route}] (`{}`) and routes[{with}] (`{}`) both match some {}s: those go to routes[{with}], which comes first",
                    out[route].name,
                    out[with].name,
                    what_it_matches(&out[route].matches)
                ),
            ),
        }
    }
    let mut names = HashSet::new();
    for (j, r) in out.iter().enumerate() {
        if !names.insert(r.name.as_str()) {
            let why = format!(
                "two routes are called `{}`: names must be unique (they label metrics and logs)",
                r.name
            );
            return Err(ConfigError::invalid(
                route_key(i, j, "name"),
                lines[j].0,
                why,
            ));
        }
    }
    Ok(out)
}

fn what_it_matches(m: &Match) -> &'static str {
    match m {
        Match::Host(_) => "name",
        Match::User(_) => "login",
    }
}

/// Route `j` of listener `i`, written on `line`.
fn one(
    i: usize,
    j: usize,
    r: &FileRoute,
    line: u64,
    from: &Inherited<'_>,
    origin: &mut Origin,
    warn: &mut impl FnMut(u64, String),
) -> Result<RouteConfig, ConfigError> {
    let key = |k: &str| route_key(i, j, k);
    let at = |l: u64| if l > 0 { l } else { line };
    let match_line = at(r.matches.referenced.line());
    let matches = match (&r.matches.value.host, &r.matches.value.user) {
        (Some(host), None) => HostPattern::parse(host).map(Match::Host),
        (None, Some(user)) => UserPattern::new(user).map(Match::User),
        _ => {
            return Err(ConfigError::invalid(
                key("match"),
                match_line,
                "write one key: `{host: name}` (RFC 7151 HOST or TLS SNI; `*.domain` for one label) or `{user: regex}` (the login name; capture group 1 is the name the server gets)",
            ));
        }
    }
    .map_err(|e| ConfigError::invalid(key("match"), match_line, e.to_string()))?;
    let name = name(r, j, &matches).map_err(|why| {
        let l = r.name.as_ref().map_or(line, |n| at(n.referenced.line()));
        ConfigError::invalid(key("name"), l, why)
    })?;
    let (upstream, pool) =
        upstreams(r, line).map_err(|(k, l, why)| ConfigError::invalid(key(k), l, why))?;
    let user = match &r.user {
        None => None,
        Some(t) => {
            let l = at(t.referenced.line());
            let template = Template::parse(&t.value)
                .map_err(|e| ConfigError::invalid(key("user"), l, e.to_string()))?;
            if template.uses_host() && matches!(matches, Match::User(_)) {
                warn(
                    l,
                    format!(
                        "routes[{j}] (`{name}`): `{{host}}` in `user` is empty for clients that name no host (sessions on a `match: {{user: ...}}` route may not have sent HOST or SNI)"
                    ),
                );
            }
            Some(template)
        }
    };
    let tls = match &r.tls {
        None => None,
        Some(t) => {
            let l = at(t.referenced.line());
            tls(&t.value, &matches, from, &name)
                .map_err(|why| ConfigError::invalid(key("tls"), l, why))?;
            origin.record(key("tls"), l);
            Some(t.value.clone())
        }
    };
    let nat = match &r.nat {
        None => from.nat.clone(),
        Some(n) => NatPolicy {
            passive: n.value.passive.unwrap_or(from.nat.passive),
            active: n.value.active.unwrap_or(from.nat.active),
            client_address: n
                .value
                .client_address
                .clone()
                .or_else(|| from.nat.client_address.clone()),
            private: from.nat.private.clone(),
        },
    };
    if let Some(n) = &r.nat
        && nat.client_address.is_some()
        && nat.active == NatMode::Never
        && n.value.active.is_some()
    {
        warn(
            at(n.referenced.line()),
            format!(
                "routes[{j}] (`{name}`): `nat.client_address` does nothing with `nat.active: never`"
            ),
        );
    }
    if let Some(d) = &r.upstream_data
        && from.data == DataMode::Passthrough
    {
        warn(
            at(d.referenced.line()),
            format!(
                "routes[{j}] (`{name}`): `upstream_data` does nothing with `data: passthrough` (it chooses how a relaying proxy reaches the server)"
            ),
        );
    }
    let route = RouteConfig {
        name,
        matches,
        upstream,
        pool,
        user,
        tls,
        nat,
        upstream_data: r
            .upstream_data
            .as_ref()
            .map_or(from.upstream_data, |d| d.value),
    };
    if let Some(settings) = route.tls_settings(from.tls)
        && settings.upstream_plan() != UpstreamPlan::Plain
        && !settings.upstream.verify
        && route.tls.as_ref().is_some_and(|t| t.upstream.is_some())
    {
        warn(
            line,
            format!(
                "routes[{j}] (`{}`): tls.upstream.verify is false: any server certificate is accepted, so anyone on the path to the server can read and change the session",
                route.name
            ),
        );
    }
    Ok(route)
}

/// The route's name: as written (trimmed, not `default` or `none`, no control
/// characters), or its host pattern, or `routes[N]`.
fn name(r: &FileRoute, j: usize, matches: &Match) -> Result<String, String> {
    let Some(written) = &r.name else {
        return match matches {
            Match::Host(p) if [DEFAULT_ROUTE, NO_ROUTE_YET].contains(&p.to_string().as_str()) => {
                Err(format!(
                    "the host `{p}` would name this route `{p}`, which metrics and logs use for sessions off the routes: give it a `name:`"
                ))
            }
            Match::Host(p) => Ok(p.to_string()),
            Match::User(_) => Ok(format!("routes[{j}]")),
        };
    };
    let name = written.value.trim();
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name == DEFAULT_ROUTE {
        return Err(format!(
            "`{DEFAULT_ROUTE}` is the listener's own `upstream` (the default route); choose another name"
        ));
    }
    if name == NO_ROUTE_YET {
        return Err(format!(
            "`{NO_ROUTE_YET}` labels the metrics of sessions that have no route yet; choose another name"
        ));
    }
    if name.chars().any(char::is_control) || name.len() > 100 {
        return Err("must be at most 100 characters, none of them a control character".into());
    }
    Ok(name.to_string())
}

/// The route's `upstream` and pool keys, read as a listener's; an error names its key
/// and line.
type Upstreams = (Option<HostPort>, Option<PoolConfig>);

fn upstreams(r: &FileRoute, line: u64) -> Result<Upstreams, (&'static str, u64, String)> {
    let at = |l: u64| if l > 0 { l } else { line };
    let balance = r.balance.as_ref().map(|b| b.value);
    let health = r.health_check.as_ref().map(|h| &h.value);
    let pool = pool::pool(Some(&r.upstream.value), balance, health).map_err(|e| {
        let l = match e {
            PoolError::ZeroRiseOrFall => r.health_check.as_ref().map(|h| h.referenced.line()),
            _ => Some(r.upstream.referenced.line()),
        };
        (e.key(), at(l.unwrap_or(line)), e.to_string())
    })?;
    let single = match (&r.upstream.value, &pool) {
        (FileUpstream::One(u), None) => Some(u.clone()),
        _ => None,
    };
    Ok((single, pool))
}

/// A route's `tls:` block, on a listener with `from`'s settings.
fn tls(t: &RouteTls, matches: &Match, from: &Inherited<'_>, name: &str) -> Result<(), String> {
    if from.data == DataMode::Passthrough {
        return Err("TLS needs `data: relay` (see the listener's `tls`)".into());
    }
    match (&t.cert, &t.key) {
        (None, None) => {}
        (Some(_), Some(_)) => {
            if !matches!(matches, Match::Host(_)) {
                return Err(format!(
                    "route `{name}` matches by login, but a certificate is chosen by the name the client asks for in its TLS handshake: give certificates to `match: {{host: ...}}` routes"
                ));
            }
            let client = from.tls.map_or(ClientTlsMode::Off, |t| t.client.mode);
            if client == ClientTlsMode::Off {
                return Err("a route's certificate is shown to clients: set the listener's `tls.client` (mode, and its default certificate) first".into());
            }
        }
        _ => return Err("`cert` and `key` go together".into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{Balance, Config, UpstreamData};
    use crate::rewrite::NatMode;
    use crate::route::Match;

    /// The issue's example, with a default route.
    const ISSUE: &str = r#"
listeners:
  - name: edge
    bind: 0.0.0.0:2121
    upstream: 10.0.0.10:21               # default route (optional)
    routes:
      - match: {host: alpha.example.net}  # RFC 7151 HOST, or TLS SNI
        upstream: 10.0.0.11:21            # a host:port or a pool list, as `upstream`
      - match: {user: '^(.+)@beta$'}      # regex on the login name; capture 1, if any,
        upstream: [10.0.0.12:21, 10.0.0.13:21]   # is the name sent upstream
      - match: {host: '*.gamma.example.net'}     # one leading wildcard label
        upstream: 10.0.0.14:21
        user: '{user}@{host}'             # optional template for the name sent upstream
"#;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text).map_err(|e| e.to_string())
    }

    fn routes(extra: &str) -> Result<Config, String> {
        parse(&format!(
            "listeners:\n  - name: edge\n    bind: 127.0.0.1:2121\n    upstream: 10.0.0.10:21\n    routes:\n{extra}"
        ))
    }

    #[test]
    fn the_issue_example_loads_and_prints_back() {
        let c = parse(ISSUE).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let l = &c.listeners[0];
        assert_eq!(l.upstream.as_ref().unwrap().to_string(), "10.0.0.10:21");
        let names: Vec<&str> = l.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["alpha.example.net", "routes[1]", "*.gamma.example.net"]
        );
        assert!(matches!(l.routes[0].matches, Match::Host(_)));
        assert_eq!(
            l.routes[0].upstream.as_ref().unwrap().to_string(),
            "10.0.0.11:21"
        );
        let beta = l.routes[1].pool.as_ref().unwrap();
        assert_eq!(
            (beta.backends.len(), beta.balance),
            (2, Balance::LeastSessions)
        );
        assert_eq!(
            l.routes[2].user.as_ref().unwrap().to_string(),
            "{user}@{host}"
        );
        // Each route runs with the listener's settings it did not override.
        assert_eq!(l.routes[0].nat, l.nat);
        assert_eq!(l.routes[0].upstream_data, l.upstream_data);
        // `fxprelay config` prints it, and what it prints loads back the same.
        let printed = c.effective_yaml();
        assert!(
            printed.contains("routes:") && printed.contains("match:"),
            "{printed}"
        );
        assert!(
            printed.contains("user: ^(.+)@beta$") || printed.contains("'^(.+)@beta$'"),
            "{printed}"
        );
        let again = parse(&printed).unwrap();
        let l2 = &again.listeners[0];
        assert_eq!(l2.routes.len(), 3);
        for (a, b) in l.routes.iter().zip(&l2.routes) {
            assert_eq!(
                (&a.name, &a.matches, &a.user),
                (&b.name, &b.matches, &b.user)
            );
            assert_eq!(
                (&a.upstream, &a.pool, &a.nat),
                (&b.upstream, &b.pool, &b.nat)
            );
        }
    }

    #[test]
    fn without_a_default_route_upstream_may_be_left_out() {
        let c = parse("listeners:\n  - name: edge\n    bind: 127.0.0.1:2121\n    routes:\n      - match: {host: a.test}\n        upstream: 10.0.0.11:21\n").unwrap();
        assert!(c.listeners[0].upstream.is_none() && c.listeners[0].pool.is_none());
        let e = parse("listeners:\n  - name: edge\n    bind: 127.0.0.1:2121\n    routes: []\n")
            .unwrap_err();
        assert!(e.contains("needs `upstream"), "{e}");
    }

    #[test]
    fn routes_override_what_they_say() {
        let c = routes(
            "      - name: alpha\n        match: {host: a.test}\n        upstream: [10.0.0.11:21, 10.0.0.12:21]\n        balance: round_robin\n        health_check: {interval: 1s, rise: 1}\n        nat: {passive: always}\n        upstream_data: active\n",
        )
        .unwrap();
        let l = &c.listeners[0];
        let r = &l.routes[0];
        assert_eq!(r.name, "alpha");
        assert_eq!(r.nat.passive, NatMode::Always);
        assert_eq!(r.nat.active, l.nat.active);
        assert_eq!(r.upstream_data, UpstreamData::Active);
        let p = r.pool.as_ref().unwrap();
        assert_eq!(
            (p.balance, p.health.rise, p.health.fall),
            (Balance::RoundRobin, 1, 3)
        );
        // `health` is accepted for `health_check`, as the issue writes it.
        let c = routes("      - match: {host: a.test}\n        upstream: 10.0.0.11:21\n        health: {interval: 1s}\n").unwrap();
        assert!(c.listeners[0].routes[0].pool.is_some());
    }

    /// Every mistake names its key and line.
    #[test]
    fn mistakes_name_their_key_and_line() {
        for (route, key, line, says) in [
            (
                "      - match: {}\n        upstream: h:21\n",
                "routes[0].match",
                6,
                "write one key",
            ),
            (
                "      - match: {host: a.test, user: x}\n        upstream: h:21\n",
                "routes[0].match",
                6,
                "write one key",
            ),
            (
                "      - match: {host: 'a.*.test'}\n        upstream: h:21\n",
                "routes[0].match",
                6,
                "whole first label",
            ),
            (
                "      - match: {user: '^(.+@beta$'}\n        upstream: h:21\n",
                "routes[0].match",
                6,
                "unclosed group",
            ),
            (
                "      - match: {host: a.test}\n        upstream: h:21\n        user: '{name}'\n",
                "routes[0].user",
                8,
                "unknown placeholder",
            ),
            (
                "      - match: {host: a.test}\n        upstream: [h:21, h:21]\n",
                "routes[0].upstream",
                7,
                "twice",
            ),
            (
                "      - match: {host: a.test}\n        upstream: h:21\n        health_check: {fall: 0}\n",
                "routes[0].health_check",
                8,
                "at least 1",
            ),
            (
                "      - name: default\n        match: {host: a.test}\n        upstream: h:21\n",
                "routes[0].name",
                6,
                "default route",
            ),
            (
                "      - name: none\n        match: {host: a.test}\n        upstream: h:21\n",
                "routes[0].name",
                6,
                "no route yet",
            ),
            (
                "      - match: {host: none}\n        upstream: h:21\n",
                "routes[0].name",
                6,
                "give it a `name:`",
            ),
            (
                "      - match: {host: a.test}\n        upstream: h:21\n        tls: {cert: /c.pem}\n",
                "routes[0].tls",
                8,
                "go together",
            ),
            (
                "      - match: {host: a.test}\n        upstream: h:21\n        tls: {cert: /c.pem, key: /k.pem}\n",
                "routes[0].tls",
                8,
                "listener's `tls.client`",
            ),
        ] {
            let e = routes(route).unwrap_err();
            assert!(
                e.contains(&format!("`listeners[0].{key}`"))
                    && e.contains(&format!("line {line}:"))
                    && e.contains(says),
                "{route}: {e}"
            );
        }
        let e =
            routes("      - match: {host: a.test}\n        upstream: h:21\n        colour: red\n")
                .unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e = routes("      - match: {host: a.test}\n").unwrap_err();
        assert!(e.contains("upstream"), "{e}");
        let e = parse("listeners:\n  - name: f\n    bind: 127.0.0.1:2121\n    mode: forward\n    routes:\n      - match: {host: a.test}\n        upstream: h:21\n").unwrap_err();
        assert!(
            e.contains("`listeners[0].routes`") && e.contains("belong to a reverse listener"),
            "{e}"
        );
    }

    #[test]
    fn a_certificate_needs_a_name_route() {
        let e = parse("listeners:\n  - name: edge\n    bind: 127.0.0.1:2121\n    upstream: h:21\n    tls:\n      client: {mode: explicit, cert: /c.pem, key: /k.pem}\n    routes:\n      - match: {user: '@beta$'}\n        upstream: h:21\n        tls: {cert: /c.pem, key: /k.pem}\n").unwrap_err();
        assert!(
            e.contains("routes[0].tls")
                && e.contains("give certificates to `match: {host: ...}` routes"),
            "{e}"
        );
        let ok = parse("listeners:\n  - name: edge\n    bind: 127.0.0.1:2121\n    upstream: h:21\n    tls:\n      client: {mode: explicit, cert: /c.pem, key: /k.pem}\n    routes:\n      - match: {host: a.test}\n        upstream: h:21\n        tls: {cert: /a.pem, key: /ak.pem, upstream: {mode: explicit, verify: false}}\n").unwrap();
        let r = &ok.listeners[0].routes[0];
        assert_eq!(r.certificate().unwrap().0, std::path::Path::new("/a.pem"));
        let settings = r.tls_settings(ok.listeners[0].tls.as_ref()).unwrap();
        assert!(!settings.upstream.verify);
        assert!(
            ok.warnings.iter().any(|w| w.contains("verify is false")),
            "{:?}",
            ok.warnings
        );
        // Passthrough cannot carry TLS.
        let e = parse("listeners:\n  - name: edge\n    bind: 127.0.0.1:2121\n    upstream: h:21\n    data: passthrough\n    routes:\n      - match: {host: a.test}\n        upstream: h:21\n        tls: {upstream: {mode: explicit}}\n").unwrap_err();
        assert!(
            e.contains("routes[0].tls") && e.contains("data: relay"),
            "{e}"
        );
    }

    #[test]
    fn unreachable_routes_are_refused_and_overlaps_warned() {
        let e = routes("      - match: {user: '^(.+)@beta$'}\n        upstream: h:21\n      - match: {user: '^(.+)@beta$'}\n        upstream: i:21\n").unwrap_err();
        assert!(
            e.contains("`listeners[0].routes[1].match`")
                && e.contains("line 8")
                && e.contains("can never be chosen")
                && e.contains("routes[0] (`routes[0]`)"),
            "{e}"
        );
        let e = routes("      - match: {host: '*.x.test'}\n        upstream: h:21\n      - match: {host: a.x.test}\n        upstream: i:21\n").unwrap_err();
        assert!(
            e.contains("routes[1].match") && e.contains("every name"),
            "{e}"
        );
        let c = routes("      - name: bob\n        match: {user: '^bob@'}\n        upstream: h:21\n      - name: beta\n        match: {user: '@beta$'}\n        upstream: i:21\n").unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w
                    .contains("routes[1] (`beta`) and routes[0] (`bob`) both match some logins")),
            "{:?}",
            c.warnings
        );
        let e = routes("      - name: x\n        match: {host: a.test}\n        upstream: h:21\n      - name: x\n        match: {host: b.test}\n        upstream: i:21\n").unwrap_err();
        assert!(
            e.contains("routes[1].name") && e.contains("two routes are called `x`"),
            "{e}"
        );
    }

    #[test]
    fn a_host_template_on_a_login_route_is_warned_about() {
        let c = routes("      - match: {user: '^(.+)@beta$'}\n        upstream: h:21\n        user: '{user}@{host}'\n").unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("`{host}` in `user` is empty")),
            "{:?}",
            c.warnings
        );
    }
}
