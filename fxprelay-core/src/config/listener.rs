//! `listeners:`, each a socket clients connect to and what it does with them, and the
//! section's rules: unique names, binds that do not overlap, keys that fit the
//! listener's mode (and warnings for keys the mode ignores).

use std::collections::HashSet;
use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

use super::Config;
use super::data::DataConfig;
use super::defense::ListenerDefense;
use super::error::ConfigError;
use super::origin::{Origin, listener_key};
use super::pool::{self, PoolConfig, PoolError};
use super::route::{self, RouteConfig};
use super::schema::{
    DataMode, FileListener, FileUpstream, Mode, ProxyProtocol, ProxyVersion, UpstreamConnect,
    UpstreamData,
};
use super::tls;
use crate::defense::Settings;
use crate::net::{AllowList, HostName, HostPort};
use crate::rewrite::{NatMode, NatPolicy, PrivateRanges};
use crate::tls::TlsSettings;

/// One listener, validated. Printed in the file's own keys.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub mode: Mode,
    /// Reverse mode with one upstream and no pool keys: that upstream. Otherwise none:
    /// a reverse listener has this or a `pool`, never both; forward and transparent
    /// listeners learn theirs from each client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<HostPort>,
    /// Reverse mode over a pool: its backends (written as the `upstream:` list),
    /// `balance` and `health_check`.
    #[serde(flatten)]
    pub pool: Option<PoolConfig>,
    /// A PROXY header with the client's address first on every upstream control
    /// connection (and on the pool's checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_proxy_protocol: Option<ProxyVersion>,
    /// Forward and transparent mode: where clients may go. Not printed when empty (the
    /// default, and all a reverse listener has).
    #[serde(skip_serializing_if = "AllowList::is_empty")]
    pub allow: AllowList,
    pub data: DataMode,
    /// Address announced to clients in relay-mode passive replies; default: the local
    /// address of the client's control connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_address: Option<HostName>,
    pub upstream_data: UpstreamData,
    /// Reverse mode: connect upstream at once or after the client's `USER`.
    pub upstream_connect: UpstreamConnect,
    /// Addresses a client's `PORT`/`EPRT`/`LPRT` may name besides its own (and where
    /// ports below 1024 are allowed): the bounce-attack exceptions.
    pub allow_foreign_port: Vec<IpNet>,
    /// Relay mode: hosts besides the server itself that a server's `227`/`228` may send
    /// the proxy's data connection to (then `nat.passive` decides); every other announced
    /// address is replaced with the server's own.
    pub allow_passive_hosts: Vec<IpNet>,
    /// PROXY protocol from these load balancers, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Transparent mode: connect upstream from the client's address (`IP_TRANSPARENT`).
    pub preserve_client_address: bool,
    /// FTPS on either leg (`None`: plain FTP only). Settings only: the certificates and
    /// rustls configs are loaded from them by `app`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
    /// Written as `nat:` and, beside it, `private_ranges`.
    #[serde(flatten, serialize_with = "nat_keys")]
    pub nat: NatPolicy,
    /// `defense: off`, settings of its own, or (not printed) the top level's.
    #[serde(skip_serializing_if = "ListenerDefense::is_shared")]
    pub defense: ListenerDefense,
    /// Reverse mode: routes to other upstreams, first match wins; `upstream` (or the
    /// pool) is then the default route, and may be left out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// Reverse mode: the agent the upstream is reached through (`via:`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

impl ListenerConfig {
    /// Where the listener's sessions go, in words (the start-up line, the console):
    /// `host:port`, a pool's members, or where forward and transparent listeners go.
    pub fn upstream_description(&self) -> String {
        match (&self.upstream, &self.pool, self.mode) {
            (Some(u), _, _) => u.to_string(),
            (None, Some(pool), _) => {
                let members: Vec<String> = pool
                    .backends
                    .iter()
                    .map(|b| b.address.to_string())
                    .collect();
                format!("pool of {} ({})", members.len(), members.join(", "))
            }
            (None, None, Mode::Forward) => "named by each client (USER user@host)".into(),
            (None, None, _) => "each connection's original destination".into(),
        }
    }
}

/// The file writes a listener's NAT policy as two keys: `nat:` (the modes and the
/// client address) and `private_ranges` beside it.
fn nat_keys<S: Serializer>(nat: &NatPolicy, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Nat<'a> {
        passive: NatMode,
        active: NatMode,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_address: &'a Option<HostName>,
    }
    #[derive(Serialize)]
    struct Keys<'a> {
        nat: Nat<'a>,
        private_ranges: &'a [IpNet],
    }
    Keys {
        nat: Nat {
            passive: nat.passive,
            active: nat.active,
            client_address: &nat.client_address,
        },
        private_ranges: nat.private.ranges(),
    }
    .serialize(s)
}

/// The `listeners:` rules across listeners: each name once, no two binds on one socket,
/// none on a data port.
pub(super) struct Listeners<'a> {
    data: &'a DataConfig,
    names: HashSet<String>,
    /// Every bind so far, with its key for the message.
    binds: Vec<(SocketAddr, String)>,
}

impl<'a> Listeners<'a> {
    /// Starts with the admin endpoint's bind, which no listener may share.
    pub(super) fn new(admin_bind: SocketAddr, data: &'a DataConfig) -> Listeners<'a> {
        Listeners {
            data,
            names: HashSet::new(),
            binds: vec![(admin_bind, "admin.bind".into())],
        }
    }

    /// Listener `i` as validated; its warnings (keys its mode ignores) go to `warnings`,
    /// and the line of its `tls:` block to `origin`, for the errors of the files it
    /// names, read later.
    pub(super) fn validate(
        &mut self,
        i: usize,
        l: FileListener,
        origin: &mut Origin,
        warnings: &mut Vec<String>,
    ) -> Result<ListenerConfig, ConfigError> {
        let at = l.name.referenced.line();
        let name = self.name(i, &l)?;
        let bind = self.bind(i, &l)?;
        let warn = |line: u64, w: String| format!("listeners[{i}] (`{name}`, line {line}): {w}");
        warnings.extend(mode_warnings(&l).into_iter().map(|w| warn(at, w)));
        warnings.extend(relay_warnings(&l, bind).into_iter().map(|w| warn(at, w)));
        let (upstream, pool) = upstream(i, &l)?;
        only_in_mode(i, &l)?;
        let tls_key = listener_key(i, "tls");
        let tls = tls::validate(&tls_key, l.tls.as_ref(), l.data, |line, w| {
            warnings.push(warn(line, w))
        })?;
        if let Some(t) = &l.tls {
            origin.record(tls_key, t.referenced.line());
        }
        let nat = NatPolicy {
            passive: l.nat.passive,
            active: l.nat.active,
            client_address: l.nat.client_address.clone(),
            private: l
                .private_ranges
                .clone()
                .map_or_else(PrivateRanges::default, PrivateRanges::new),
        };
        let upstream_data = l.upstream_data.unwrap_or_default();
        let routes = match &l.routes {
            None => Vec::new(),
            Some(routes) => {
                let from = route::Inherited {
                    data: l.data,
                    tls: tls.as_ref(),
                    nat: &nat,
                    upstream_data,
                };
                route::validate(i, routes, &from, origin, |line, w| {
                    warnings.push(warn(line, w))
                })?
            }
        };
        Ok(ListenerConfig {
            name,
            bind,
            mode: l.mode,
            upstream,
            pool,
            upstream_proxy_protocol: l.upstream_proxy_protocol,
            allow: l.allow.unwrap_or_default(),
            data: l.data,
            public_address: l.public_address,
            upstream_data,
            upstream_connect: l.upstream_connect,
            allow_foreign_port: l.allow_foreign_port,
            allow_passive_hosts: l.allow_passive_hosts,
            proxy_protocol: l.proxy_protocol,
            preserve_client_address: l.preserve_client_address,
            tls,
            nat,
            routes,
            // Over the top-level `defense:`, by the validation pass.
            defense: ListenerDefense::Shared,
            // With `agents:`, by the validation pass.
            via: None,
        })
    }

    /// The name, trimmed: not empty, not another listener's.
    fn name(&mut self, i: usize, l: &FileListener) -> Result<String, ConfigError> {
        let (key, line) = (listener_key(i, "name"), l.name.referenced.line());
        let name = l.name.value.trim().to_string();
        if name.is_empty() {
            return Err(ConfigError::invalid(key, line, "must not be empty"));
        }
        if !self.names.insert(name.clone()) {
            let why = format!("duplicate listener name `{name}`: names must be unique");
            return Err(ConfigError::invalid(key, line, why));
        }
        Ok(name)
    }

    /// The bind: no other listener's or the admin endpoint's socket, no data port.
    fn bind(&mut self, i: usize, l: &FileListener) -> Result<SocketAddr, ConfigError> {
        let (key, line) = (listener_key(i, "bind"), l.bind.referenced.line());
        let bind = l.bind.value.0;
        if let Some((_, other)) = self.binds.iter().find(|(b, _)| binds_overlap(*b, bind)) {
            let why = format!("{bind} overlaps with {other}");
            return Err(ConfigError::invalid(key, line, why));
        }
        self.binds.push((bind, key.clone()));
        self.data.refuse_port(&key, line, bind.port())?;
        Ok(bind)
    }
}

/// Where a listener's upstream comes from: a reverse listener has one (`upstream`), or a
/// pool of them (a list, or one with `balance` or `health_check`); forward and
/// transparent listeners have none.
fn upstream(
    i: usize,
    l: &FileListener,
) -> Result<(Option<HostPort>, Option<PoolConfig>), ConfigError> {
    let key = |k: &str| listener_key(i, k);
    let at = l.name.referenced.line();
    // A key's own line; the listener's for a key it lacks (or a default).
    let line_of = |line: Option<u64>| line.filter(|l| *l > 0).unwrap_or(at);
    let upstream_line = line_of(l.upstream.as_ref().map(|u| u.referenced.line()));
    let health_line = line_of(l.health_check.as_ref().map(|h| h.referenced.line()));
    let upstream = l.upstream.as_ref().map(|u| &u.value);
    let balance = l.balance.as_ref().map(|b| b.value);
    let health = l.health_check.as_ref().map(|h| &h.value);
    let pool = pool::pool(upstream, balance, health).map_err(|e| {
        let line = match e {
            PoolError::ZeroRiseOrFall => health_line,
            PoolError::Empty | PoolError::Twice(_) | PoolError::AllBackups => upstream_line,
        };
        ConfigError::invalid(key(e.key()), line, e.to_string())
    })?;
    if l.mode != Mode::Reverse && (balance.is_some() || health.is_some()) {
        let line = match &l.balance {
            Some(b) => line_of(Some(b.referenced.line())),
            None => health_line,
        };
        return Err(ConfigError::invalid(
            key("balance"),
            line,
            "`balance` and `health_check` belong to a reverse listener with `upstream` (one `host:port` or a list)",
        ));
    }
    let routed = l.routes.as_ref().is_some_and(|r| !r.value.is_empty());
    if let Some(routes) = l.routes.as_ref().filter(|_| l.mode != Mode::Reverse) {
        return Err(ConfigError::invalid(
            key("routes"),
            line_of(Some(routes.referenced.line())),
            "`routes` belong to a reverse listener: forward and transparent listeners learn each session's upstream from the client",
        ));
    }
    let refused = match (l.mode, upstream) {
        (Mode::Reverse, None) if !routed => Some((
            at,
            "a reverse listener needs `upstream: host:port` (or `routes`, with or without a default `upstream`)",
        )),
        (Mode::Forward, Some(_)) => Some((
            upstream_line,
            "a forward listener takes its upstream from the client's `USER user@host`; remove `upstream` and list allowed hosts under `allow`",
        )),
        (Mode::Transparent, Some(_)) => Some((
            upstream_line,
            "a transparent listener connects to each connection's original destination; remove `upstream` and list allowed destinations under `allow`",
        )),
        _ => None,
    };
    if let Some((line, why)) = refused {
        return Err(ConfigError::invalid(key("upstream"), line, why));
    }
    let single = match (upstream, &pool) {
        (Some(FileUpstream::One(u)), None) => Some(u.clone()),
        _ => None,
    };
    Ok((single, pool))
}

/// Keys only one mode can act on, set in another: errors (a setting that would silently
/// not apply where it matters most, at connect time).
fn only_in_mode(i: usize, l: &FileListener) -> Result<(), ConfigError> {
    let at = l.name.referenced.line();
    if l.upstream_connect == UpstreamConnect::OnLogin && l.mode != Mode::Reverse {
        return Err(ConfigError::invalid(
            listener_key(i, "upstream_connect"),
            at,
            "only a reverse listener has a fixed upstream to connect to at login; forward and transparent listeners learn theirs from the client",
        ));
    }
    if l.preserve_client_address && l.mode != Mode::Transparent {
        return Err(ConfigError::invalid(
            listener_key(i, "preserve_client_address"),
            at,
            "only a transparent listener can connect from the client's address",
        ));
    }
    Ok(())
}

/// Keys a listener sets that its modes ignore, and a passthrough listener's trap: the
/// default settings of today's clients do not work through it.
fn mode_warnings(l: &FileListener) -> Vec<String> {
    let mut w = Vec::new();
    if l.data == DataMode::Passthrough {
        if l.upstream_data.is_some() {
            w.push("`upstream_data` does nothing with `data: passthrough` (it chooses how a relaying proxy reaches the server)".into());
        }
        if l.public_address.is_some() {
            w.push("`public_address` does nothing with `data: passthrough` (passive replies carry the server's address, fixed by `nat.passive`)".into());
        }
        w.push("`data: passthrough`: clients with default settings open data connections to the address they reached the control port on, which is the proxy's, where nothing listens in passthrough (curl uses EPSV, whose 229 carries no address, and ignores the 227 address; lftp's fix-pasv-address and ftplib do the same). Use `data: relay`, or see README \"Client compatibility\" for the client settings that work".into());
    }
    if l.mode == Mode::Reverse && l.allow.is_some() {
        w.push("`allow` does nothing in `mode: reverse` (it limits where forward and transparent listeners may connect)".into());
    }
    if l.nat.client_address.is_some() && l.nat.active == NatMode::Never {
        w.push("`nat.client_address` does nothing with `nat.active: never` (no PORT address is ever replaced)".into());
    }
    w
}

/// The traps of a listener that connects where its clients say (forward, transparent):
/// without `allow` it refuses every client; with an `allow` that admits every address
/// on a bind other hosts can reach, it is an open FTP relay for anyone who finds it.
fn relay_warnings(l: &FileListener, bind: SocketAddr) -> Vec<String> {
    if l.mode == Mode::Reverse {
        return Vec::new();
    }
    match &l.allow {
        None => vec![
            "no `allow`: a forward or transparent listener may connect nowhere without one, so every client is refused; list the servers' networks or names under `allow` (e.g. `allow: [192.0.2.0/24, ftp.example.net]`)".into(),
        ],
        Some(a) if a.is_empty() => vec![
            "`allow: []` admits no server, so every client is refused; list the servers' networks or names under `allow`".into(),
        ],
        Some(a) if a.admits_everything() && !bind.ip().to_canonical().is_loopback() => {
            vec![format!(
                "open FTP relay: `allow` admits every address and `bind: {bind}` is reachable from other hosts, so anyone who finds this port can use the proxy to reach any FTP server (and scan or attack through it); list only the servers clients may reach under `allow`, or bind to 127.0.0.1"
            )]
        }
        Some(_) => Vec::new(),
    }
}

/// Two binds collide when they share a port and either address is a wildcard of the same
/// family or both addresses are equal. Port 0 (any free port) never collides.
fn binds_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let (ia, ib) = (a.ip(), b.ip());
    ia == ib
        || (ia.is_unspecified() && ia.is_ipv4() == ib.is_ipv4())
        || (ib.is_unspecified() && ia.is_ipv4() == ib.is_ipv4())
}

impl Config {
    /// The defense settings listener `l` runs with, if it defends itself at all.
    pub fn defense_of<'a>(&'a self, l: &'a ListenerConfig) -> Option<&'a Settings> {
        match &l.defense {
            ListenerDefense::Shared => self.defense.enabled.then_some(&self.defense.settings),
            ListenerDefense::Off => None,
            ListenerDefense::Own(settings) => Some(settings),
        }
    }
}
