//! YAML configuration: serde structs that mirror the file, then a validation pass that
//! turns them into the typed [`Config`] the rest of the proxy uses.
//!
//! Every struct denies unknown keys, and every value whose validity depends on other
//! values (duplicate names, overlapping binds) is wrapped in [`Spanned`] so the error can
//! name its line. Parse errors from the YAML layer already carry line and column.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use serde_saphyr::{Location, Spanned};

use crate::net::{AllowList, HostName, HostPort, PortSpec};
use crate::pool::config::{
    Balance, FileHealthCheck, FileUpstream, PoolConfig, ProxyVersion, UpstreamSettings,
};
use crate::rewrite::{NatMode, NatPolicy, PrivateRanges};
use crate::tls::{CaBundles, ListenerTls, TlsSettings};

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
    /// The YAML layer's own message (made plainer, with a suggestion for a misspelt key).
    #[error("line {line} column {column}: {message}")]
    Yaml {
        line: u64,
        column: u64,
        message: String,
    },
    #[error("line {line}: `{key}`: {message}")]
    Invalid {
        key: String,
        line: u64,
        message: String,
    },
    /// A `${VAR}` that cannot be expanded.
    #[error("line {line}: {message}")]
    Env { line: u64, message: String },
    /// One of the above in a file: its name and the lines around the problem.
    #[error("{file}: {error}\n{snippet}")]
    InFile {
        file: String,
        error: Box<ConfigError>,
        snippet: String,
    },
}

impl ConfigError {
    /// The line (and column, if known) the problem is on.
    fn position(&self) -> Option<(u64, Option<u64>)> {
        match self {
            ConfigError::Yaml { line, column, .. } => Some((*line, Some(*column))),
            ConfigError::Invalid { line, .. } | ConfigError::Env { line, .. } => {
                Some((*line, None))
            }
            _ => None,
        }
        .filter(|(line, _)| *line > 0)
    }

    /// Names `file` and quotes the lines around the problem.
    fn in_file(self, file: &Path, text: &str) -> ConfigError {
        let Some((line, column)) = self.position() else {
            return self;
        };
        ConfigError::InFile {
            file: file.display().to_string(),
            snippet: snippet(file, text, line, column),
            error: Box::new(self),
        }
    }
}

/// The line `line` of `text` and the one before it, with a caret under `column`:
///
/// ```text
///  --> /etc/fxprelay/fxprelay.yaml:5:5
///   |
/// 4 |     upstream: h:21
/// 5 |     upstream_dat: active
///   |     ^
/// ```
fn snippet(file: &Path, text: &str, line: u64, column: Option<u64>) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let at = line as usize;
    let width = at.to_string().len();
    let pad = " ".repeat(width);
    let mut out = match column {
        Some(c) => format!("{pad}--> {}:{line}:{c}\n", file.display()),
        None => format!("{pad}--> {}:{line}\n", file.display()),
    };
    out.push_str(&format!("{pad} |\n"));
    for n in at.saturating_sub(1).max(1)..=at {
        if let Some(l) = lines.get(n - 1) {
            out.push_str(&format!("{n:>width$} | {l}\n"));
        }
    }
    if let Some(c) = column {
        let caret = " ".repeat(c.saturating_sub(1) as usize);
        out.push_str(&format!("{pad} | {caret}^\n"));
    }
    out.trim_end().to_owned()
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
    fxp: FileFxp,
    listeners: Spanned<Vec<FileListener>>,
}

/// The top-level `fxp:` block as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFxp {
    #[serde(default = "default_fxp_allow")]
    allow: AllowList,
    #[serde(default = "default_fxp_concurrency", deserialize_with = "de_positive")]
    concurrency: usize,
    #[serde(default)]
    allow_clear_data: bool,
    #[serde(default)]
    allow_insecure: bool,
    #[serde(default)]
    ca_bundles: BTreeMap<String, Spanned<PathBuf>>,
}

impl Default for FileFxp {
    fn default() -> Self {
        FileFxp {
            allow: default_fxp_allow(),
            concurrency: default_fxp_concurrency(),
            allow_clear_data: false,
            allow_insecure: false,
            ca_bundles: BTreeMap::new(),
        }
    }
}

/// The top-level `fxp:` block, validated: FXP transfers ordered over the admin API (and,
/// for `allow`, with `SITE FXP`).
#[derive(Debug, Clone)]
pub struct FxpConfig {
    /// Servers the API may order transfers between (CIDRs, addresses, host names);
    /// empty: none. The `fxprelay fxp` command line runs for its own user and needs none.
    pub allow: AllowList,
    /// Transfers run at once; more wait in the queue.
    pub concurrency: usize,
    /// Between two TLS servers that offer neither `SSCN` nor `CPSV`, FXP with `PROT C`
    /// (the file crosses the network between them unencrypted) may be asked for by an
    /// API job (`options.allow_clear_data`); off: such a job is refused, the proxy relays.
    pub allow_clear_data: bool,
    /// An API job may turn off the check of TLS servers' certificates
    /// (`options.insecure`); off: such a job is refused.
    pub allow_insecure: bool,
    /// CA files an API job may name in `options.ca` (by name: callers name no file),
    /// read when the configuration loads.
    pub ca_bundles: CaBundles,
}

impl Default for FxpConfig {
    fn default() -> Self {
        FxpConfig {
            allow: default_fxp_allow(),
            concurrency: default_fxp_concurrency(),
            allow_clear_data: false,
            allow_insecure: false,
            ca_bundles: CaBundles::default(),
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
    #[serde(
        default = "AdminLimits::default_max_connections_per_ip",
        deserialize_with = "de_positive"
    )]
    max_connections_per_ip: usize,
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
            max_connections_per_ip: limits.max_connections_per_ip,
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
    /// Connections open at once. A newcomer beyond it closes the oldest idle connection
    /// (one not being served a request), or is closed when there is none.
    pub max_connections: usize,
    /// The same for one client address, which makes room among its own connections.
    pub max_connections_per_ip: usize,
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
    fn default_max_connections_per_ip() -> usize {
        // A scraper, probes and a few scripts from one host; a quarter of the slots.
        16
    }
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            header_read_timeout: Self::default_header_read_timeout(),
            request_timeout: Self::default_request_timeout(),
            max_connections: Self::default_max_connections(),
            max_connections_per_ip: Self::default_max_connections_per_ip(),
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
    upstream: Option<FileUpstream>,
    #[serde(default)]
    balance: Option<Balance>,
    #[serde(default)]
    health_check: Option<FileHealthCheck>,
    #[serde(default)]
    upstream_proxy_protocol: Option<ProxyVersion>,
    #[serde(default)]
    allow: Option<AllowList>,
    #[serde(default)]
    data: DataMode,
    #[serde(default)]
    public_address: Option<HostName>,
    #[serde(default)]
    upstream_data: Option<UpstreamData>,
    #[serde(default)]
    upstream_connect: UpstreamConnect,
    #[serde(default, deserialize_with = "de_nets")]
    allow_foreign_port: Vec<IpNet>,
    #[serde(default)]
    allow_passive_hosts: Vec<IpNet>,
    #[serde(default)]
    proxy_protocol: Option<ProxyProtocol>,
    #[serde(default)]
    preserve_client_address: bool,
    #[serde(default)]
    tls: Option<Spanned<TlsSettings>>,
    #[serde(default)]
    nat: FileNat,
    #[serde(default, deserialize_with = "de_opt_nets")]
    private_ranges: Option<Vec<IpNet>>,
}

/// A network in CIDR form, or a bare address (a one-address network), as in `allow`.
struct Net(IpNet);

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let s = s.trim();
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map(Net)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{s}` is not an address or a network (e.g. `10.0.0.5`, `10.0.0.0/8`, `fd00::/8`)"
                ))
            })
    }
}

fn de_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Ok(Vec::<Net>::deserialize(d)?
        .into_iter()
        .map(|n| n.0)
        .collect())
}

fn de_opt_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<IpNet>>, D::Error> {
    de_nets(d).map(Some)
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
    #[serde(deserialize_with = "de_nets")]
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
    /// How long open sessions and running API transfers may keep running after
    /// SIGTERM/SIGINT.
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
    /// A relayed transfer that moves no byte for this long fails with `426`; a server
    /// that has not sent a crossed transfer's final reply this long after its data ended
    /// gets the session closed with `421`.
    #[serde(deserialize_with = "de_nonzero_duration")]
    pub data_idle_timeout: Duration,
    /// A control line the client (or the server) does not take (it stopped reading) for
    /// this long ends the session, so it cannot hold its slot, upstream connection and
    /// data port.
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
    /// FTPS on either leg, with its certificates loaded (`None`: plain FTP only).
    pub tls: Option<ListenerTls>,
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
    /// Per listener name: a pool of upstreams and the PROXY header toward them (only
    /// listeners that set either).
    pub upstreams: HashMap<String, UpstreamSettings>,
    /// Settings that load but do nothing or will likely not work as meant, worded for
    /// the operator (`fxprelay check` prints them; `run` logs them).
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text).map_err(|e| e.in_file(path, &text))
    }

    /// Expands `${VAR}` references from the environment, then parses and validates YAML
    /// text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, |name| std::env::var(name).ok())
    }

    /// Like [`Config::parse`], with `env` in place of the process environment.
    pub fn parse_with_env(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = expand_env(text, env)?;
        let file: FileConfig = serde_saphyr::from_str(&text).map_err(yaml_error)?;
        validate(file)
    }
}

/// Replaces `${VAR}` with the variable's value and `${VAR:-default}` with the value, or
/// `default` when the variable is unset or empty (the shell's rules), so one file can
/// serve many nodes (`public_address: ${NODE_IP}`). `$${` writes a literal `${`.
/// Comments are left alone: a commented-out line may name variables nobody sets.
pub fn expand_env(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = line.split_at(comment_start(line));
        let mut rest = code;
        while let Some(i) = rest.find("${") {
            if rest[..i].ends_with('$') {
                out.push_str(&rest[..i - 1]);
                out.push_str("${");
                rest = &rest[i + 2..];
                continue;
            }
            out.push_str(&rest[..i]);
            let line = n as u64 + 1;
            let Some(end) = rest[i..].find('}') else {
                return Err(ConfigError::Env {
                    line,
                    message: "`${` without a closing `}`; write `$${` for a literal `${`".into(),
                });
            };
            let inner = &rest[i + 2..i + end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(ConfigError::Env {
                    line,
                    message: format!(
                        "`${{{inner}}}`: `{name}` is not a variable name (letters, digits, `_`)"
                    ),
                });
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(ConfigError::Env {
                        line,
                        message: format!(
                            "`${{{name}}}`: the environment variable {name} is not set (or empty); set it, or write `${{{name}:-default}}`"
                        ),
                    });
                }
            }
            rest = &rest[i + end + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    Ok(out)
}

/// Where a YAML comment starts in `line` (its length if none): a `#` at the start or
/// after whitespace, outside quotes.
fn comment_start(line: &str) -> usize {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev.is_whitespace() => return i,
            _ => {}
        }
        prev = c;
    }
    line.len()
}

/// The YAML layer's error, worded for an operator: one message (the snippet is added by
/// [`Config::load`], naming the file), a suggestion for a misspelt key or value, no
/// library jargon.
fn yaml_error(e: serde_saphyr::Error) -> ConfigError {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let plain = e.render_with_options(serde_saphyr::render_options! {
        snippets: serde_saphyr::SnippetMode::Off,
    });
    // The plain rendering ends with its own location; ours goes in front.
    let message = match plain.rfind(" at line ") {
        Some(i) => plain[..i].to_owned(),
        None => plain,
    };
    ConfigError::Yaml {
        line,
        column,
        message: reword(&message),
    }
}

/// Adds "did you mean" to unknown keys and values; rewords duplicate keys.
fn reword(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        return format!(
            "`{key}` appears twice in the same block; keep one (the second would silently replace the first)"
        );
    }
    for what in ["unknown field `", "unknown variant `"] {
        let Some(rest) = message.strip_prefix(what) else {
            continue;
        };
        let Some((given, expected)) = rest.split_once('`') else {
            continue;
        };
        let choices: Vec<&str> = expected
            .trim_start_matches(',')
            .trim()
            .trim_start_matches("expected one of")
            .trim_start_matches("expected")
            .split(',')
            .map(|c| c.trim().trim_matches('`'))
            .filter(|c| !c.is_empty())
            .collect();
        if let Some(best) = did_you_mean(given, &choices) {
            return format!("{message}; did you mean `{best}`?");
        }
    }
    message.to_owned()
}

/// The choice closest to `given`, if one is close enough to be a typo.
pub fn did_you_mean<'a>(given: &str, choices: &[&'a str]) -> Option<&'a str> {
    choices
        .iter()
        .map(|c| (strsim::jaro_winkler(given, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
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
    let mut warnings = Vec::new();
    let data_ports = &file.data.ports;
    if data_ports.contains(admin_bind.port()) && admin_bind.port() != 0 {
        return invalid(
            "admin.bind",
            file.admin.bind.referenced.line(),
            port_overlap(admin_bind.port(), data_ports),
        );
    }
    let mut names = HashSet::new();
    let mut binds: Vec<(SocketAddr, String)> = vec![(admin_bind, "admin.bind".into())];
    let mut listeners = Vec::new();
    let mut upstreams = HashMap::new();
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
        if bind.port() != 0 && data_ports.contains(bind.port()) {
            return invalid(
                key("bind"),
                l.bind.referenced.line(),
                port_overlap(bind.port(), data_ports),
            );
        }
        warnings.extend(mode_warnings(&l).into_iter().map(|w| {
            format!(
                "listeners[{i}] (`{name}`, line {}): {w}",
                l.name.referenced.line()
            )
        }));
        let pool = PoolConfig::from_file(l.upstream.as_ref(), l.balance, l.health_check).map_err(
            |message| ConfigError::Invalid {
                key: key("upstream"),
                line: l.name.referenced.line(),
                message,
            },
        )?;
        if l.mode != Mode::Reverse && (l.balance.is_some() || pool.is_some()) {
            return invalid(
                key("balance"),
                l.name.referenced.line(),
                "`balance` and `health_check` belong to a reverse listener with `upstream` (one `host:port` or a list)",
            );
        }
        let single = match (&l.upstream, &pool) {
            (Some(FileUpstream::One(u)), None) => Some(u.clone()),
            _ => None,
        };
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
        let tls = match &l.tls {
            Some(t) if t.value.enabled() => {
                let line = t.referenced.line();
                if l.data == DataMode::Passthrough {
                    return invalid(
                        key("tls"),
                        line,
                        "TLS needs `data: relay`: in passthrough the client's data connections would have to resume a TLS session that the server shares with the proxy, which cannot work",
                    );
                }
                match ListenerTls::load(&t.value) {
                    Ok(loaded) => {
                        if loaded.upstream.is_some() && !t.value.upstream.verify {
                            warnings.push(format!(
                                "listeners[{i}] (`{name}`, line {line}): tls.upstream.verify is false: any server certificate is accepted, so anyone on the path to the server can read and change the session"
                            ));
                        }
                        Some(loaded)
                    }
                    Err(e) => return invalid(key("tls"), line, e.to_string()),
                }
            }
            _ => None,
        };
        if pool.is_some() || l.upstream_proxy_protocol.is_some() {
            upstreams.insert(
                name.clone(),
                UpstreamSettings {
                    pool,
                    proxy_protocol: l.upstream_proxy_protocol,
                },
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
            upstream: single,
            allow: l.allow.unwrap_or_default(),
            data: l.data,
            public_address: l.public_address,
            upstream_data: l.upstream_data.unwrap_or_default(),
            upstream_connect: l.upstream_connect,
            allow_foreign_port: l.allow_foreign_port,
            allow_passive_hosts: l.allow_passive_hosts,
            proxy_protocol: l.proxy_protocol,
            preserve_client_address: l.preserve_client_address,
            tls,
            nat: NatPolicy {
                passive: l.nat.passive,
                active: l.nat.active,
                client_address: l.nat.client_address,
                private,
            },
        });
    }
    let admin_token = file.admin.token.filter(|t| !t.is_empty());
    if admin_token.is_none() && !admin_bind.ip().to_canonical().is_loopback() {
        warnings.push(format!(
            "admin.bind {admin_bind} is reachable from other hosts and admin.token is not set: \
             anyone who reaches it can order FXP transfers through the API; set admin.token"
        ));
    }
    Ok(Config {
        admin_bind,
        admin_token,
        admin_limits: AdminLimits {
            header_read_timeout: file.admin.header_read_timeout,
            request_timeout: file.admin.request_timeout,
            max_connections: file.admin.max_connections,
            max_connections_per_ip: file.admin.max_connections_per_ip,
        },
        fxp: fxp_config(file.fxp, &mut warnings)?,
        limits,
        data: file.data,
        listeners,
        upstreams,
        warnings,
    })
}

/// The `fxp:` block, validated: every CA bundle read (a bad one is an error naming its
/// key and line), a warning for `allow_insecure`.
fn fxp_config(file: FileFxp, warnings: &mut Vec<String>) -> Result<FxpConfig, ConfigError> {
    let ca_bundles = CaBundles::load(
        file.ca_bundles
            .iter()
            .map(|(name, path)| (name.as_str(), path.value.as_path())),
    )
    .or_else(|(name, e)| {
        let line = file
            .ca_bundles
            .get(&name)
            .map_or(0, |p| p.referenced.line());
        invalid(format!("fxp.ca_bundles.{name}"), line, e.to_string())
    })?;
    if file.allow_insecure {
        warnings.push(
            "fxp.allow_insecure is true: API callers may turn off the check of TLS servers' certificates (options.insecure), so anyone on the path to those servers can read and change the transfer, passwords included".into(),
        );
    }
    Ok(FxpConfig {
        allow: file.allow.named(FXP_ALLOW),
        concurrency: file.concurrency,
        allow_clear_data: file.allow_clear_data,
        allow_insecure: file.allow_insecure,
        ca_bundles,
    })
}

// ---------------------------------------------------------------------------------------
// The effective configuration (`fxprelay config`)
// ---------------------------------------------------------------------------------------

impl Config {
    /// The configuration as the proxy runs it, every default filled in and `${VAR}`s
    /// expanded, as YAML that loads back to the same configuration. `admin.token` is
    /// shown as `"***"`.
    pub fn effective_yaml(&self) -> String {
        let view = EffectiveConfig::of(self);
        match serde_saphyr::to_string(&view) {
            Ok(yaml) if yaml.ends_with('\n') => yaml,
            Ok(yaml) => yaml + "\n",
            Err(e) => format!("# cannot print the configuration: {e}\n"),
        }
    }
}

#[derive(Serialize)]
struct EffectiveConfig {
    admin: EffectiveAdmin,
    fxp: EffectiveFxp,
    limits: EffectiveLimits,
    data: EffectiveData,
    listeners: Vec<EffectiveListener>,
}

#[derive(Serialize)]
struct EffectiveAdmin {
    bind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'static str>,
    header_read_timeout: String,
    request_timeout: String,
    max_connections: usize,
    max_connections_per_ip: usize,
}

#[derive(Serialize)]
struct EffectiveFxp {
    allow: Vec<String>,
    concurrency: usize,
    allow_clear_data: bool,
    allow_insecure: bool,
    ca_bundles: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct EffectiveLimits {
    connect_timeout: String,
    shutdown_grace: String,
    max_sessions: usize,
    max_line_length: usize,
    max_reply_bytes: usize,
    data_accept_timeout: String,
    max_sessions_per_ip: usize,
    login_timeout: String,
    idle_timeout: String,
    data_idle_timeout: String,
    reply_write_timeout: String,
    max_pre_login_sessions: usize,
    max_pre_login_sessions_per_ip: usize,
    max_data_ports_per_ip: usize,
}

#[derive(Serialize)]
struct EffectiveData {
    ports: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    bind: Option<String>,
}

#[derive(Serialize)]
struct EffectiveListener {
    name: String,
    bind: String,
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<EffectiveUpstream>,
    #[serde(skip_serializing_if = "Option::is_none")]
    balance: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health_check: Option<EffectiveHealthCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_proxy_protocol: Option<ProxyVersion>,
    allow: Vec<String>,
    data: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_address: Option<String>,
    upstream_data: &'static str,
    upstream_connect: &'static str,
    allow_foreign_port: Vec<String>,
    allow_passive_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_protocol: Option<EffectiveProxyProtocol>,
    preserve_client_address: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsSettings>,
    nat: EffectiveNat,
    private_ranges: Vec<String>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EffectiveUpstream {
    One(String),
    Many(Vec<EffectiveBackend>),
}

#[derive(Serialize)]
struct EffectiveBackend {
    address: String,
    weight: u32,
    backup: bool,
}

#[derive(Serialize)]
struct EffectiveHealthCheck {
    interval: String,
    timeout: String,
    rise: u32,
    fall: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    login: Option<crate::pool::config::CheckLogin>,
}

#[derive(Serialize)]
struct EffectiveProxyProtocol {
    trusted: Vec<String>,
}

#[derive(Serialize)]
struct EffectiveNat {
    passive: &'static str,
    active: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_address: Option<String>,
}

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn strings<T: ToString>(items: impl IntoIterator<Item = T>) -> Vec<String> {
    items.into_iter().map(|i| i.to_string()).collect()
}

fn allow_strings(list: &AllowList) -> Vec<String> {
    list.iter()
        .map(|e| match e {
            crate::net::AllowEntry::Net(net) => net.to_string(),
            crate::net::AllowEntry::Host(host) => host.clone(),
        })
        .collect()
}

fn nat_mode(m: NatMode) -> &'static str {
    match m {
        NatMode::Never => "never",
        NatMode::Always => "always",
        NatMode::Auto => "auto",
    }
}

impl EffectiveConfig {
    fn of(c: &Config) -> Self {
        let l = &c.limits;
        EffectiveConfig {
            admin: EffectiveAdmin {
                bind: c.admin_bind.to_string(),
                token: c.admin_token.as_ref().map(|_| "***"),
                header_read_timeout: duration(c.admin_limits.header_read_timeout),
                request_timeout: duration(c.admin_limits.request_timeout),
                max_connections: c.admin_limits.max_connections,
                max_connections_per_ip: c.admin_limits.max_connections_per_ip,
            },
            fxp: EffectiveFxp {
                allow: allow_strings(&c.fxp.allow),
                concurrency: c.fxp.concurrency,
                allow_clear_data: c.fxp.allow_clear_data,
                allow_insecure: c.fxp.allow_insecure,
                ca_bundles: c
                    .fxp
                    .ca_bundles
                    .iter()
                    .map(|(name, certs)| (name.to_owned(), certs.path().display().to_string()))
                    .collect(),
            },
            limits: EffectiveLimits {
                connect_timeout: duration(l.connect_timeout),
                shutdown_grace: duration(l.shutdown_grace),
                max_sessions: l.max_sessions,
                max_line_length: l.max_line_length,
                max_reply_bytes: l.max_reply_bytes,
                data_accept_timeout: duration(l.data_accept_timeout),
                max_sessions_per_ip: l.max_sessions_per_ip,
                login_timeout: duration(l.login_timeout),
                idle_timeout: duration(l.idle_timeout),
                data_idle_timeout: duration(l.data_idle_timeout),
                reply_write_timeout: duration(l.reply_write_timeout),
                max_pre_login_sessions: l.max_pre_login_sessions,
                max_pre_login_sessions_per_ip: l.max_pre_login_sessions_per_ip,
                max_data_ports_per_ip: l.max_data_ports_per_ip,
            },
            data: EffectiveData {
                ports: c.data.ports.to_string(),
                bind: c.data.bind.map(|b| b.to_string()),
            },
            listeners: c
                .listeners
                .iter()
                .map(|l| EffectiveListener::of(l, c.upstreams.get(&l.name)))
                .collect(),
        }
    }
}

impl EffectiveListener {
    fn of(l: &ListenerConfig, extra: Option<&UpstreamSettings>) -> Self {
        let pool = extra.and_then(|u| u.pool.as_ref());
        let upstream = match pool {
            Some(p) => Some(EffectiveUpstream::Many(
                p.backends
                    .iter()
                    .map(|b| EffectiveBackend {
                        address: b.address.to_string(),
                        weight: b.weight,
                        backup: b.backup,
                    })
                    .collect(),
            )),
            None => l
                .upstream
                .as_ref()
                .map(|u| EffectiveUpstream::One(u.to_string())),
        };
        EffectiveListener {
            upstream,
            balance: pool.map(|p| p.balance.as_str()),
            health_check: pool.map(|p| EffectiveHealthCheck {
                interval: duration(p.health.interval),
                timeout: duration(p.health.timeout),
                rise: p.health.rise,
                fall: p.health.fall,
                // Shown, like admin.token, without the secret.
                login: p
                    .health
                    .login
                    .as_ref()
                    .map(|l| crate::pool::config::CheckLogin {
                        user: l.user.clone(),
                        password: "***".into(),
                    }),
            }),
            upstream_proxy_protocol: extra.and_then(|u| u.proxy_protocol),
            name: l.name.clone(),
            bind: l.bind.to_string(),
            mode: match l.mode {
                Mode::Reverse => "reverse",
                Mode::Forward => "forward",
                Mode::Transparent => "transparent",
            },
            allow: allow_strings(&l.allow),
            data: match l.data {
                DataMode::Relay => "relay",
                DataMode::Passthrough => "passthrough",
            },
            public_address: l.public_address.as_ref().map(|h| h.0.clone()),
            upstream_data: match l.upstream_data {
                UpstreamData::Passive => "passive",
                UpstreamData::Active => "active",
                UpstreamData::Auto => "auto",
            },
            upstream_connect: match l.upstream_connect {
                UpstreamConnect::Immediately => "immediately",
                UpstreamConnect::OnLogin => "on_login",
            },
            allow_foreign_port: strings(&l.allow_foreign_port),
            allow_passive_hosts: strings(&l.allow_passive_hosts),
            proxy_protocol: l.proxy_protocol.as_ref().map(|p| EffectiveProxyProtocol {
                trusted: strings(&p.trusted),
            }),
            preserve_client_address: l.preserve_client_address,
            tls: l.tls.as_ref().map(|t| t.settings.clone()),
            nat: EffectiveNat {
                passive: nat_mode(l.nat.passive),
                active: nat_mode(l.nat.active),
                client_address: l.nat.client_address.as_ref().map(|h| h.0.clone()),
            },
            private_ranges: strings(l.nat.private.ranges()),
        }
    }
}

fn port_overlap(port: u16, data_ports: &PortSpec) -> String {
    format!(
        "port {port} is also in `data.ports` (\"{data_ports}\"): a data transfer would take it from the listener, or the listener from the transfers; move the listener or leave the port out of `data.ports`"
    )
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
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
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

    const ONE: &str = "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n";

    #[test]
    fn env_vars_expand_in_values_not_comments() {
        let env = |name: &str| (name == "NODE_IP").then(|| "10.1.2.3".to_string());
        let text = format!(
            "{ONE}    public_address: ${{NODE_IP}}   # ${{UNSET}} here is a comment\n    nat: {{client_address: \"${{CLIENTS:-clients.example}}\"}}\n"
        );
        let c = Config::parse_with_env(&text, env).unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.public_address, Some(HostName("10.1.2.3".into())));
        assert_eq!(
            l.nat.client_address,
            Some(HostName("clients.example".into()))
        );
        let e = Config::parse_with_env(&format!("{ONE}    public_address: ${{NODE}}\n"), env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 5") && e.contains("NODE is not set"), "{e}");
        assert_eq!(
            expand_env("a: $${X} '# ${Y}'\n", |_| Some("v".into())).unwrap(),
            "a: ${X} '# v'\n"
        );
        assert!(expand_env("a: ${X\n", |_| None).is_err());
        assert!(expand_env("a: ${1X}\n", |_| None).is_err());
    }

    #[test]
    fn misspelt_keys_and_values_get_a_suggestion() {
        let e = err(&format!("{ONE}    upstream_dat: active\n"));
        assert!(e.contains("did you mean `upstream_data`?"), "{e}");
        let e = err(&format!("{ONE}    nat: {{passive: allways}}\n"));
        assert!(e.contains("did you mean `always`?"), "{e}");
        let e = err(&format!("limit:\n  max_sessions: 5\n{ONE}"));
        assert!(e.contains("did you mean `limits`?"), "{e}");
        // Nothing close: no suggestion.
        let e = err(&format!("{ONE}    colour: red\n"));
        assert!(!e.contains("did you mean"), "{e}");
    }

    #[test]
    fn errors_in_a_file_name_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.yaml");
        std::fs::write(&path, format!("{ONE}    upstream_dat: active\n")).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains(&format!("{}:5:5", path.display())), "{e}");
        assert!(!e.contains("<input>"), "{e}");
        assert_eq!(e.matches("unknown field").count(), 1, "{e}");
        assert!(e.contains("5 |     upstream_dat: active"), "{e}");
    }

    #[test]
    fn duplicate_keys_are_worded_for_operators() {
        let e = err(&format!(
            "admin:\n  bind: 127.0.0.1:1\nadmin:\n  bind: 127.0.0.1:2\n{ONE}"
        ));
        assert!(
            e.contains("`admin` appears twice") && e.contains("line 3"),
            "{e}"
        );
        assert!(!e.contains("DuplicateKeyPolicy"), "{e}");
    }

    #[test]
    fn bare_addresses_are_accepted_wherever_networks_are() {
        let c = Config::parse(&format!(
            "{ONE}    private_ranges: [10.0.0.1, 192.168.0.0/16]\n    allow_foreign_port: [192.0.2.7]\n    proxy_protocol: {{trusted: [10.0.0.5, \"::1\"]}}\n"
        ))
        .unwrap();
        let l = &c.listeners[0];
        assert!(l.nat.private.contains("10.0.0.1".parse().unwrap()));
        assert!(!l.nat.private.contains("10.0.0.2".parse().unwrap()));
        assert_eq!(l.allow_foreign_port[0].to_string(), "192.0.2.7/32");
        let pp = l.proxy_protocol.as_ref().unwrap();
        assert!(pp.trusts("10.0.0.5".parse().unwrap()) && pp.trusts("::1".parse().unwrap()));
        let e = err(&format!("{ONE}    private_ranges: [10.0.0]\n"));
        assert!(
            e.contains("line 5") && e.contains("not an address or a network"),
            "{e}"
        );
    }

    #[test]
    fn unbracketed_ipv6_upstream_is_refused_with_the_bracketed_form() {
        let e = err(
            "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: \"2001:db8::1:21\"\n",
        );
        assert!(
            e.contains("`[2001:db8::1]:21`") && e.contains("line 4"),
            "{e}"
        );
        let e =
            err("listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: \"fe80::1\"\n");
        assert!(e.contains("`[fe80::1]:21`"), "{e}");
        let c = Config::parse("listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: \"[2001:db8::1]:21\"\n").unwrap();
        assert_eq!(c.listeners[0].upstream.as_ref().unwrap().port, 21);
    }

    #[test]
    fn listener_ports_inside_the_data_ports_are_refused() {
        let e = err("listeners:\n  - name: a\n    bind: 127.0.0.1:50010\n    upstream: h:21\n");
        assert!(
            e.contains("listeners[0].bind") && e.contains("data.ports"),
            "{e}"
        );
        let e = err(&format!(
            "admin:\n  bind: 127.0.0.1:7000\ndata:\n  ports: \"7000-7010\"\n{ONE}"
        ));
        assert!(e.contains("admin.bind") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn keys_that_do_nothing_are_warned_about() {
        let c = Config::parse(ONE).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = Config::parse(&format!(
            "{ONE}    data: passthrough\n    upstream_data: active\n    allow: [10.0.0.0/8]\n"
        ))
        .unwrap();
        let all = c.warnings.join("\n");
        assert!(all.contains("`upstream_data` does nothing"), "{all}");
        assert!(
            all.contains("`allow` does nothing in `mode: reverse`"),
            "{all}"
        );
        assert!(all.contains("proxy's, where nothing listens"), "{all}");
    }

    #[test]
    fn effective_config_loads_back_the_same() {
        let text = include_str!("../config/fxprelay.yaml");
        let c = Config::parse(text).unwrap();
        let yaml = c.effective_yaml();
        assert!(
            yaml.contains("idle_timeout: 15m") && yaml.contains("private_ranges"),
            "{yaml}"
        );
        let again = Config::parse(&yaml).unwrap();
        assert_eq!(again.effective_yaml(), yaml);
        let c = Config::parse("admin:\n  token: s3cret\nlisteners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n").unwrap();
        assert!(!c.effective_yaml().contains("s3cret"));
    }

    /// `fxprelay config` prints every setting: a file that sets each key away from its
    /// default loads back from the printout to the same configuration.
    #[test]
    fn effective_config_keeps_every_setting() {
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["proxy.test".into()]).unwrap();
        let (cert, key) = (dir.path().join("p.crt"), dir.path().join("p.key"));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        let tls = format!(
            "    tls:\n      client: {{mode: required, cert: {}, key: {}}}\n      upstream: {{mode: explicit, verify: false, server_name: s.example, data: private}}",
            cert.display(),
            key.display()
        );
        let text = [
            "admin:",
            "  bind: 127.0.0.1:9999",
            "  token: t",
            "  header_read_timeout: 3s",
            "  request_timeout: 7s",
            "  max_connections: 9",
            "  max_connections_per_ip: 2",
            &format!(
                "fxp: {{allow: [10.0.0.0/8, ftp.example.org], concurrency: 3, allow_clear_data: true, allow_insecure: true, ca_bundles: {{corp: {}}}}}",
                cert.display()
            ),
            "limits:",
            "  connect_timeout: 3s",
            "  shutdown_grace: 4s",
            "  max_sessions: 11",
            "  max_line_length: 1000",
            "  max_reply_bytes: 5000",
            "  data_accept_timeout: 6s",
            "  max_sessions_per_ip: 5",
            "  login_timeout: 8s",
            "  idle_timeout: 9s",
            "  data_idle_timeout: 10s",
            "  reply_write_timeout: 11s",
            "  max_pre_login_sessions: 12",
            "  max_pre_login_sessions_per_ip: 4",
            "  max_data_ports_per_ip: 13",
            "data: {ports: 40000-40099, bind: 127.0.0.2}",
            "listeners:",
            "  - name: r",
            "    bind: 127.0.0.1:2121",
            "    upstream: [h1:21, {address: h2:21, weight: 2, backup: true}]",
            "    balance: user",
            "    health_check: {interval: 2s, timeout: 1s, rise: 3, fall: 4}",
            "    upstream_proxy_protocol: v2",
            "    public_address: ftp.example.net",
            "    upstream_data: active",
            "    allow_foreign_port: [192.0.2.0/24]",
            "    allow_passive_hosts: [198.51.100.0/24]",
            "    proxy_protocol: {trusted: [127.0.0.9/32]}",
            "    nat: {passive: always, active: never, client_address: 203.0.113.5}",
            "    private_ranges: [10.0.0.0/8]",
            &tls,
            "  - name: o",
            "    bind: 127.0.0.1:2122",
            "    upstream: h3:21",
            "    upstream_connect: on_login",
            "    data: passthrough",
            "  - name: f",
            "    bind: 127.0.0.1:2123",
            "    mode: forward",
            "    allow: [127.0.0.0/8]",
            "",
        ]
        .join("\n");
        let first = Config::parse(&text).unwrap();
        let printed = first.effective_yaml();
        // The token is shown as *** and loads back as that: compare everything else.
        let again = Config::parse(&printed.replace("\"***\"", "t"))
            .unwrap_or_else(|e| panic!("{e}\n{printed}"));
        let view = |c: &Config| {
            format!(
                "{:?}",
                (
                    c.admin_bind,
                    &c.admin_token,
                    c.admin_limits,
                    &c.fxp,
                    &c.limits,
                    &c.data,
                    &c.listeners,
                    &c.upstreams
                )
            )
        };
        let (a, b) = (view(&first), view(&again));
        assert_eq!(a, b, "printed:\n{printed}");
        assert!(
            printed.contains("allow_passive_hosts") && printed.contains("tls:"),
            "{printed}"
        );
        assert!(
            printed.contains("allow_insecure: true") && printed.contains("corp:"),
            "{printed}"
        );
        assert_eq!(again.fxp.ca_bundles.names(), "corp");
    }

    /// `fxp.ca_bundles` are read at load, like the listeners' TLS files: a bad one is an
    /// error naming its key and line, and `fxp.allow_insecure` is warned about.
    #[test]
    fn ca_bundles_are_read_at_load_and_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, c.cert.pem()).unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        let with = |bundles: &str| format!("fxp:\n  ca_bundles:\n{bundles}{ONE}");
        let cfg = Config::parse(&with(&format!("    corp: {}\n", ca.display()))).unwrap();
        let corp = cfg.fxp.ca_bundles.get("corp").expect("the bundle");
        assert_eq!(corp.certs().len(), 1);
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        for (file, says) in [
            (key.display().to_string(), "holds no PEM certificate"),
            ("/nonexistent/ca.pem".into(), "cannot read"),
            ("/dev/zero".into(), "larger than 1 MiB"),
        ] {
            let text = with(&format!("    corp: {}\n    other: {file}\n", ca.display()));
            let e = err(&text);
            assert!(
                e.contains("`fxp.ca_bundles.other`") && e.contains("line 4") && e.contains(says),
                "{e}"
            );
        }
        let e = err(&with(&format!("    \"/etc/ca\": {}\n", ca.display())));
        assert!(e.contains("not a bundle name"), "{e}");
        let cfg = Config::parse(&format!("fxp:\n  allow_insecure: true\n{ONE}")).unwrap();
        assert!(cfg.fxp.allow_insecure);
        assert!(
            cfg.warnings[0].contains("fxp.allow_insecure is true"),
            "{:?}",
            cfg.warnings
        );
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
        let w = &c.warnings;
        assert!(w.len() == 1 && w[0].contains("set admin.token"), "{w:?}");
        let c =
            Config::parse(&format!("admin:\n  bind: 0.0.0.0:9464\n  token: t\n{base}")).unwrap();
        assert!(c.warnings.is_empty());
        assert_eq!(c.admin_limits, AdminLimits::default());
        let c = Config::parse(&format!(
            "admin:\n  header_read_timeout: 2s\n  request_timeout: 5s\n  max_connections: 8\n  max_connections_per_ip: 3\n{base}"
        ))
        .unwrap();
        assert_eq!(
            c.admin_limits,
            AdminLimits {
                header_read_timeout: Duration::from_secs(2),
                request_timeout: Duration::from_secs(5),
                max_connections: 8,
                max_connections_per_ip: 3,
            }
        );
        let e = Config::parse(&format!("admin:\n  max_connections: 0\n{base}")).unwrap_err();
        assert!(e.to_string().contains("greater than 0"), "{e}");
    }
}
