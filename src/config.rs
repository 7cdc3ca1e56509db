//! YAML configuration: serde structs that mirror the file, then a validation pass that
//! turns them into the typed [`Config`] the rest of the proxy uses.
//!
//! Every struct denies unknown keys, and every value whose validity depends on other
//! values (duplicate names, overlapping binds) is wrapped in [`Spanned`] so the error can
//! name its line. Parse errors from the YAML layer already carry line and column.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use serde_saphyr::{Location, Spanned};

use crate::net::{AllowList, HostName, HostPort, PortSpec};
use crate::rewrite::{NatMode, NatPolicy, PrivateRanges};

/// Default address of the admin listener (`/metrics`, `/healthz`).
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9464";

/// A configuration problem, with the place in the file it comes from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The YAML layer's own message: it names the line, column and offending key.
    #[error("{0}")]
    Yaml(String),
    #[error("line {line}: `{key}`: {message}")]
    Invalid {
        key: String,
        line: u64,
        message: String,
    },
}

// ---------------------------------------------------------------------------------------
// File format
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    admin: FileAdmin,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    data: DataConfig,
    #[serde(default)]
    fxp: FxpConfig,
    listeners: Spanned<Vec<FileListener>>,
}

/// The top-level `fxp:` block: FXP transfers ordered over the admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FxpConfig {
    /// Servers the API may order transfers between (CIDRs, addresses, host names);
    /// empty: none. The `fxprelay fxp` command line runs for its own user and needs none.
    #[serde(default = "default_fxp_allow")]
    pub allow: AllowList,
    /// Transfers run at once; more wait in the queue.
    #[serde(default = "default_fxp_concurrency", deserialize_with = "de_positive")]
    pub concurrency: usize,
}

impl Default for FxpConfig {
    fn default() -> Self {
        FxpConfig {
            allow: default_fxp_allow(),
            concurrency: default_fxp_concurrency(),
        }
    }
}

/// Refusals name the list by its key, so the operator knows which one to edit.
const FXP_ALLOW: &str = "fxp.allow";

fn default_fxp_allow() -> AllowList {
    AllowList::default().named(FXP_ALLOW)
}

fn default_fxp_concurrency() -> usize {
    4
}

/// The top-level `data:` block: where relay-mode data connections live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Every port the proxy listens on for data comes from this list.
    #[serde(default = "default_data_ports")]
    pub ports: PortSpec,
    /// Local address for data listeners; default: the local address of the control
    /// connection the data belongs to.
    #[serde(default)]
    pub bind: Option<IpAddr>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            ports: default_data_ports(),
            bind: None,
        }
    }
}

/// Default data port range: 1000 ports above the usual ephemeral-port-free zone.
pub const DEFAULT_DATA_PORTS: &str = "50000-50999";

fn default_data_ports() -> PortSpec {
    DEFAULT_DATA_PORTS.parse().expect("valid default")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    #[serde(default = "default_admin_bind")]
    bind: Spanned<BindAddr>,
    #[serde(default)]
    token: Option<String>,
    #[serde(
        default = "AdminLimits::default_header_read_timeout",
        deserialize_with = "de_nonzero_duration"
    )]
    header_read_timeout: Duration,
    #[serde(
        default = "AdminLimits::default_request_timeout",
        deserialize_with = "de_nonzero_duration"
    )]
    request_timeout: Duration,
    #[serde(
        default = "AdminLimits::default_max_connections",
        deserialize_with = "de_positive"
    )]
    max_connections: usize,
}

impl Default for FileAdmin {
    fn default() -> Self {
        let limits = AdminLimits::default();
        FileAdmin {
            bind: default_admin_bind(),
            token: None,
            header_read_timeout: limits.header_read_timeout,
            request_timeout: limits.request_timeout,
            max_connections: limits.max_connections,
        }
    }
}

/// Bounds of the admin HTTP listener (`admin:` keys), so that clients that open
/// connections and never finish a request cannot hold its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// A request's headers must arrive within this, counted from the connection's start
    /// or from the previous response (so it also closes idle keep-alive connections).
    pub header_read_timeout: Duration,
    /// A whole request, body and answer included.
    pub request_timeout: Duration,
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
}

impl AdminLimits {
    fn default_header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn default_request_timeout() -> Duration {
        Duration::from_secs(30)
    }
    fn default_max_connections() -> usize {
        // Prometheus and a few operators' scripts; far below the fd limit.
        64
    }
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            header_read_timeout: Self::default_header_read_timeout(),
            request_timeout: Self::default_request_timeout(),
            max_connections: Self::default_max_connections(),
        }
    }
}

fn default_admin_bind() -> Spanned<BindAddr> {
    let addr = DEFAULT_ADMIN_BIND.parse().expect("valid default");
    Spanned::new(BindAddr(addr), Location::UNKNOWN, Location::UNKNOWN)
}

/// A local `ip:port` to listen on, with an error message that says what is expected.
#[derive(Debug, Clone, Copy)]
struct BindAddr(SocketAddr);

impl<'de> Deserialize<'de> for BindAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(BindAddr).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{s}` is not a local ip:port to listen on (e.g. `0.0.0.0:2121`, `[::]:2121`)"
            ))
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileListener {
    name: Spanned<String>,
    bind: Spanned<BindAddr>,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    upstream: Option<HostPort>,
    #[serde(default)]
    allow: AllowList,
    #[serde(default)]
    data: DataMode,
    #[serde(default)]
    public_address: Option<HostName>,
    #[serde(default)]
    upstream_data: UpstreamData,
    #[serde(default)]
    upstream_connect: UpstreamConnect,
    #[serde(default)]
    allow_foreign_port: Vec<IpNet>,
    #[serde(default)]
    allow_passive_hosts: Vec<IpNet>,
    #[serde(default)]
    proxy_protocol: Option<ProxyProtocol>,
    #[serde(default)]
    preserve_client_address: bool,
    #[serde(default)]
    nat: FileNat,
    #[serde(default)]
    private_ranges: Option<Vec<IpNet>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNat {
    #[serde(default)]
    passive: NatMode,
    #[serde(default)]
    active: NatMode,
    #[serde(default)]
    client_address: Option<HostName>,
}

fn de_positive<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be greater than 0")),
        n => Ok(n),
    }
}

fn de_line_length<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        // Commands that carry a path easily exceed a few hundred bytes.
        n if n < 512 => Err(serde::de::Error::custom("must be at least 512")),
        n => Ok(n),
    }
}

fn de_nonzero_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match de_duration(d)? {
        z if z.is_zero() => Err(serde::de::Error::custom("must be longer than 0s")),
        t => Ok(t),
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration `{s}` ({e}); write e.g. `10s`, `500ms`, `2m`"
        ))
    })
}

// ---------------------------------------------------------------------------------------
// Typed configuration
// ---------------------------------------------------------------------------------------

/// How a listener finds its upstream. Only `reverse` exists so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every client goes to the one configured `upstream`.
    #[default]
    Reverse,
    /// The client names its server: `USER user@host[:port]`, checked against `allow`.
    Forward,
    /// Connections redirected here by the firewall go to their original destination,
    /// checked against `allow`.
    Transparent,
}

/// `proxy_protocol:` on a listener: connections from `trusted` load balancers must start
/// with a PROXY v1/v2 header naming the real client; others must not send one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocol {
    pub trusted: Vec<IpNet>,
}

impl ProxyProtocol {
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted.iter().any(|net| net.contains(&peer))
    }
}

/// How data connections travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataMode {
    /// The proxy terminates data connections on both sides and copies the bytes: works
    /// with every server, whatever it thinks of foreign addresses.
    #[default]
    Relay,
    /// Client and server connect to each other directly; the proxy only fixes addresses.
    Passthrough,
}

/// How a relaying proxy opens data connections to the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamData {
    /// `PASV` (`EPSV` for an IPv6 upstream), then connect.
    Passive,
    /// Listen on a leased port and send `PORT` (`EPRT` for IPv6).
    Active,
    /// Passive; after a `5xx` to it, active, remembered for this upstream.
    #[default]
    Auto,
}

/// When a reverse listener connects to its upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamConnect {
    /// As soon as the client connects; the client sees the server's own greeting.
    #[default]
    Immediately,
    /// Once the client sent `USER`: the proxy greets it itself, so clients that never log
    /// in cost the server nothing.
    OnLogin,
}

/// Resource limits shared by all listeners (the `limits:` key; every field optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// How long resolving and connecting to an upstream may take before the client gets `421`.
    #[serde(deserialize_with = "de_nonzero_duration")]
    pub connect_timeout: Duration,
    /// How long open sessions may keep running after SIGTERM/SIGINT.
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_grace: Duration,
    /// Concurrent client sessions per listener; more are answered `421` and closed.
    #[serde(deserialize_with = "de_positive")]
    pub max_sessions: usize,
    /// Longest command line accepted from a client, CRLF included.
    #[serde(deserialize_with = "de_line_length")]
    pub max_line_length: usize,
    /// Largest reply (all lines of a multi-line reply) accepted from an upstream.
    #[serde(deserialize_with = "de_positive")]
    pub max_reply_bytes: usize,
    /// How long a relay data listener waits for its one expected connection.
    #[serde(deserialize_with = "de_nonzero_duration")]
    pub data_accept_timeout: Duration,
    /// Concurrent sessions from one client address per listener.
    #[serde(deserialize_with = "de_positive")]
    pub max_sessions_per_ip: usize,
    /// From connect until the server accepts the login (`230`); then `421` and close.
    #[serde(deserialize_with = "de_nonzero_duration")]
    pub login_timeout: Duration,
    /// A control connection with no complete command for this long (and no transfer
    /// running) is closed with `421`. A client dribbling a line byte by byte counts as idle.
    #[serde(deserialize_with = "de_nonzero_duration")]
    pub idle_timeout: Duration,
    /// A relayed transfer that moves no byte for this long fails with `426`.
    #[serde(deserialize_with = "de_nonzero_duration")]
    pub data_idle_timeout: Duration,
    /// A reply the client does not take (it stopped reading) for this long ends the
    /// session, so it cannot hold its slot, upstream connection and data port.
    #[serde(deserialize_with = "de_nonzero_duration")]
    pub reply_write_timeout: Duration,
    /// Sessions per listener that have not logged in yet (no `230`), apart from
    /// `max_sessions`: idle connections that never log in cannot crowd out real users.
    #[serde(deserialize_with = "de_positive")]
    pub max_pre_login_sessions: usize,
    /// The same, per client address.
    #[serde(deserialize_with = "de_positive")]
    pub max_pre_login_sessions_per_ip: usize,
    /// Relay data ports one client address may hold at once (listening or carrying a
    /// transfer), across its sessions: a few addresses cannot take the whole port list.
    #[serde(deserialize_with = "de_positive")]
    pub max_data_ports_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            max_sessions: 1024,
            max_line_length: 4096,
            max_reply_bytes: 256 * 1024,
            data_accept_timeout: Duration::from_secs(30),
            max_sessions_per_ip: 64,
            login_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(900),
            data_idle_timeout: Duration::from_secs(300),
            reply_write_timeout: Duration::from_secs(60),
            max_pre_login_sessions: 256,
            max_pre_login_sessions_per_ip: 16,
            max_data_ports_per_ip: 64,
        }
    }
}

/// One listener, validated.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub mode: Mode,
    /// Reverse mode: the one upstream. Forward mode: none (the client names it).
    pub upstream: Option<HostPort>,
    /// Forward and transparent mode: where clients may go.
    pub allow: AllowList,
    pub data: DataMode,
    /// Address announced to clients in relay-mode passive replies; default: the local
    /// address of the client's control connection.
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
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Transparent mode: connect upstream from the client's address (`IP_TRANSPARENT`).
    pub preserve_client_address: bool,
    pub nat: NatPolicy,
}

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub admin_bind: SocketAddr,
    /// Bearer token required by the admin API (`/api/...`); `/metrics` and `/healthz`
    /// stay open.
    pub admin_token: Option<String>,
    pub admin_limits: AdminLimits,
    pub fxp: FxpConfig,
    pub limits: Limits,
    pub data: DataConfig,
    pub listeners: Vec<ListenerConfig>,
}

impl Config {
    /// Settings that load but that an operator should think twice about, in words for
    /// them (`check` prints these, `run` logs them).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.admin_token.is_none() && !self.admin_bind.ip().to_canonical().is_loopback() {
            out.push(format!(
                "admin.bind {} is reachable from other hosts and admin.token is not set: \
                 anyone who reaches it can order FXP transfers through the API; set admin.token",
                self.admin_bind
            ));
        }
        out
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml(e.to_string()))?;
        validate(file)
    }
}

fn invalid<T>(
    key: impl Into<String>,
    line: u64,
    message: impl Into<String>,
) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key: key.into(),
        line,
        message: message.into(),
    })
}

fn validate(file: FileConfig) -> Result<Config, ConfigError> {
    let limits = file.limits;
    if file.listeners.value.is_empty() {
        return invalid(
            "listeners",
            file.listeners.referenced.line(),
            "at least one listener is needed",
        );
    }
    let admin_bind = file.admin.bind.value.0;
    let mut names = HashSet::new();
    let mut binds: Vec<(SocketAddr, String)> = vec![(admin_bind, "admin.bind".into())];
    let mut listeners = Vec::new();
    for (i, l) in file.listeners.value.into_iter().enumerate() {
        let key = |k: &str| format!("listeners[{i}].{k}");
        let name = l.name.value.trim().to_string();
        if name.is_empty() {
            return invalid(key("name"), l.name.referenced.line(), "must not be empty");
        }
        if !names.insert(name.clone()) {
            return invalid(
                key("name"),
                l.name.referenced.line(),
                format!("duplicate listener name `{name}`: names must be unique"),
            );
        }
        let bind = l.bind.value.0;
        if let Some((_, other)) = binds.iter().find(|(b, _)| binds_overlap(*b, bind)) {
            return invalid(
                key("bind"),
                l.bind.referenced.line(),
                format!("{bind} overlaps with {other}"),
            );
        }
        binds.push((bind, key("bind")));
        match (l.mode, &l.upstream) {
            (Mode::Reverse, None) => {
                return invalid(
                    key("upstream"),
                    l.name.referenced.line(),
                    "a reverse listener needs `upstream: host:port`",
                );
            }
            (Mode::Forward, Some(_)) => {
                return invalid(
                    key("upstream"),
                    l.name.referenced.line(),
                    "a forward listener takes its upstream from the client's `USER user@host`; remove `upstream` and list allowed hosts under `allow`",
                );
            }
            (Mode::Transparent, Some(_)) => {
                return invalid(
                    key("upstream"),
                    l.name.referenced.line(),
                    "a transparent listener connects to each connection's original destination; remove `upstream` and list allowed destinations under `allow`",
                );
            }
            _ => {}
        }
        if l.upstream_connect == UpstreamConnect::OnLogin && l.mode != Mode::Reverse {
            return invalid(
                key("upstream_connect"),
                l.name.referenced.line(),
                "only a reverse listener has a fixed upstream to connect to at login; forward and transparent listeners learn theirs from the client",
            );
        }
        if l.preserve_client_address && l.mode != Mode::Transparent {
            return invalid(
                key("preserve_client_address"),
                l.name.referenced.line(),
                "only a transparent listener can connect from the client's address",
            );
        }
        let private = match l.private_ranges {
            Some(ranges) => PrivateRanges::new(ranges),
            None => PrivateRanges::default(),
        };
        listeners.push(ListenerConfig {
            name,
            bind,
            mode: l.mode,
            upstream: l.upstream,
            allow: l.allow,
            data: l.data,
            public_address: l.public_address,
            upstream_data: l.upstream_data,
            upstream_connect: l.upstream_connect,
            allow_foreign_port: l.allow_foreign_port,
            allow_passive_hosts: l.allow_passive_hosts,
            proxy_protocol: l.proxy_protocol,
            preserve_client_address: l.preserve_client_address,
            nat: NatPolicy {
                passive: l.nat.passive,
                active: l.nat.active,
                client_address: l.nat.client_address,
                private,
            },
        });
    }
    Ok(Config {
        admin_bind,
        admin_token: file.admin.token.filter(|t| !t.is_empty()),
        admin_limits: AdminLimits {
            header_read_timeout: file.admin.header_read_timeout,
            request_timeout: file.admin.request_timeout,
            max_connections: file.admin.max_connections,
        },
        fxp: FxpConfig {
            allow: file.fxp.allow.named(FXP_ALLOW),
            ..file.fxp
        },
        limits,
        data: file.data,
        listeners,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
admin:
  bind: 127.0.0.1:9464
listeners:
  - name: nas
    bind: 0.0.0.0:2121
    mode: reverse
    upstream: 192.168.1.10:21
    data: passthrough
    nat:
      passive: auto
      active: auto
      client_address: ftp-clients.example.net   # optional
    private_ranges: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]   # optional
"#;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn issue_example_parses() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.admin_bind, "127.0.0.1:9464".parse().unwrap());
        let l = &c.listeners[0];
        assert_eq!(l.name, "nas");
        assert_eq!(l.upstream.as_ref().unwrap().to_string(), "192.168.1.10:21");
        assert_eq!(l.nat.passive, NatMode::Auto);
        assert_eq!(
            l.nat.client_address,
            Some(HostName("ftp-clients.example.net".into()))
        );
        assert!(l.nat.private.contains("10.1.2.3".parse().unwrap()));
        assert!(!l.nat.private.contains("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn shipped_config_is_valid() {
        let text = include_str!("../config/fxprelay.yaml");
        Config::parse(text).unwrap();
    }

    #[test]
    fn defaults_are_filled() {
        let c = Config::parse(
            "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: ftp.example.com:21\n",
        )
        .unwrap();
        assert_eq!(c.admin_bind.to_string(), DEFAULT_ADMIN_BIND);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        assert_eq!(c.listeners[0].nat.passive, NatMode::Auto);
        assert_eq!(c.listeners[0].data, DataMode::Relay);
        assert_eq!(c.data.ports.to_string(), DEFAULT_DATA_PORTS);
        assert_eq!(c.limits.max_sessions, 1024);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err(
            "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n    colour: red\n",
        );
        assert!(e.contains("colour"), "{e}");
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn bad_address_names_line() {
        let e = err("listeners:\n  - name: a\n    bind: 127.0.0.300:2121\n    upstream: h:21\n");
        assert!(e.contains("line 3"), "{e}");
        let e = err("listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:99999\n");
        assert!(e.contains("line 4") && e.contains("port"), "{e}");
        let e =
            err("listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: 'bad host:21'\n");
        assert!(e.contains("line 4"), "{e}");
    }

    #[test]
    fn duplicate_names_are_rejected_with_line() {
        let e = err(
            "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n  - name: a\n    bind: 127.0.0.1:2122\n    upstream: h:21\n",
        );
        assert!(
            e.contains("line 5") && e.contains("duplicate listener name"),
            "{e}"
        );
        assert!(e.contains("listeners[1].name"), "{e}");
    }

    #[test]
    fn overlapping_binds_are_rejected() {
        let e = err(
            "listeners:\n  - name: a\n    bind: 0.0.0.0:2121\n    upstream: h:21\n  - name: b\n    bind: 127.0.0.1:2121\n    upstream: h:21\n",
        );
        assert!(e.contains("line 6") && e.contains("overlaps"), "{e}");
        let e = err(
            "admin:\n  bind: 127.0.0.1:2121\nlisteners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n",
        );
        assert!(e.contains("admin.bind"), "{e}");
    }

    #[test]
    fn bad_enum_and_cidr() {
        let e = err(
            "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n    nat:\n      passive: sometimes\n",
        );
        assert!(e.contains("line 6") && e.contains("sometimes"), "{e}");
        let e = err(
            "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n    private_ranges: [10.0.0.0/33]\n",
        );
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn bad_duration() {
        let e = err(
            "limits:\n  connect_timeout: soon\nlisteners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n",
        );
        assert!(e.contains("line 2") && e.contains("duration"), "{e}");
    }

    #[test]
    fn allow_lists_refuse_in_their_own_name() {
        let c = Config::parse("fxp:\n  allow: [10.0.0.0/8]\nlisteners:\n  - name: f\n    bind: 127.0.0.1:2121\n    mode: forward\n    allow: [10.0.0.0/8]\n").unwrap();
        let outside = "192.0.2.1".parse().unwrap();
        let e = c.fxp.allow.admits("h", outside).unwrap_err();
        assert_eq!(e.to_string(), "192.0.2.1 is not in fxp.allow");
        let e = c.listeners[0].allow.admits("h", outside).unwrap_err();
        assert_eq!(e.to_string(), "192.0.2.1 is not in the allow list");
        // Without an `fxp:` block the (empty) list still has its name.
        let c = Config::parse(
            "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n",
        )
        .unwrap();
        assert!(c.fxp.allow.is_empty());
        assert_eq!(c.fxp.allow.name(), "fxp.allow");
        assert_eq!(FxpConfig::default().allow.name(), "fxp.allow");
    }

    #[test]
    fn forward_listeners() {
        let c = Config::parse("listeners:\n  - name: f\n    bind: 127.0.0.1:2121\n    mode: forward\n    allow: [127.0.0.0/8, 10.1.2.3, ftp.Example.org]\n").unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.mode, Mode::Forward);
        assert!(l.upstream.is_none());
        let allow: Vec<_> = l.allow.iter().collect();
        assert!(allow[0].contains("127.9.9.9".parse().unwrap()));
        assert!(allow[1].contains("10.1.2.3".parse().unwrap()));
        assert!(allow[2].names("FTP.example.org."));
        let e = err(
            "listeners:\n  - name: f\n    bind: 127.0.0.1:2121\n    mode: forward\n    upstream: h:21\n",
        );
        assert!(
            e.contains("listeners[0].upstream") && e.contains("allow"),
            "{e}"
        );
        let e = err("listeners:\n  - name: r\n    bind: 127.0.0.1:2121\n");
        assert!(
            e.contains("listeners[0].upstream") && e.contains("line 2"),
            "{e}"
        );
        let e = err(
            "listeners:\n  - name: f\n    bind: 127.0.0.1:2121\n    mode: forward\n    allow: [\"not a host\"]\n",
        );
        assert!(e.contains("line 5"), "{e}");
    }
    #[test]
    fn an_open_admin_bind_without_a_token_is_warned_about_and_admin_limits_load() {
        let base = "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n";
        let c = Config::parse(&format!("admin:\n  bind: 0.0.0.0:9464\n{base}")).unwrap();
        let w = c.warnings();
        assert!(w.len() == 1 && w[0].contains("set admin.token"), "{w:?}");
        let c =
            Config::parse(&format!("admin:\n  bind: 0.0.0.0:9464\n  token: t\n{base}")).unwrap();
        assert!(c.warnings().is_empty());
        assert_eq!(c.admin_limits, AdminLimits::default());
        let c = Config::parse(&format!(
            "admin:\n  header_read_timeout: 2s\n  request_timeout: 5s\n  max_connections: 8\n{base}"
        ))
        .unwrap();
        assert_eq!(
            c.admin_limits,
            AdminLimits {
                header_read_timeout: Duration::from_secs(2),
                request_timeout: Duration::from_secs(5),
                max_connections: 8,
            }
        );
        let e = Config::parse(&format!("admin:\n  max_connections: 0\n{base}")).unwrap_err();
        assert!(e.to_string().contains("greater than 0"), "{e}");
    }
}
