//! The file as the operator writes it: what serde reads, before validation. Every
//! struct denies unknown keys (a typo is an error with a suggestion, never a silently
//! ignored setting). A value whose validity depends on other values (a name that must
//! be unique, a bind that must not overlap, a key its listener's mode ignores) is kept
//! as written, wrapped in [`Spanned`] where the error must name its line, and checked by
//! its section's validator.
//!
//! What a key left out means is written here too, as part of the file's format (the
//! sections read whole carry theirs).
//!
//! Values whose keys are their settings as they are go straight into the typed
//! configuration: whole sections ([`Limits`], [`DataConfig`], a listener's
//! [`TlsSettings`]), and the listeners' modes, `proxy_protocol`, a pool's `balance` and
//! check login, defined here.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_saphyr::{Location, Spanned};

use super::data::DataConfig;
use super::limits::Limits;
use super::values::{self, BindAddr};
use crate::defense::Rate;
use crate::net::{AllowList, HostName, HostPort};
use crate::rewrite::NatMode;
use crate::tls::{TlsSettings, UpstreamTls};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub admin: FileAdmin,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub fxp: FileFxp,
    #[serde(default)]
    pub defense: Option<Spanned<FileDefense>>,
    #[serde(default)]
    pub state: Option<Spanned<FileState>>,
    #[serde(default)]
    pub agents: Option<Spanned<FileAgents>>,
    pub listeners: Spanned<Vec<FileListener>>,
}

/// `agents:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAgents {
    pub bind: Spanned<BindAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub tokens: Spanned<BTreeMap<String, String>>,
}

/// Default address of the admin listener (`/metrics`, `/healthz`).
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9464";

/// `admin:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAdmin {
    #[serde(default = "default_admin_bind")]
    pub bind: Spanned<BindAddr>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(
        default = "default_header_read_timeout",
        deserialize_with = "values::nonzero_duration::deserialize"
    )]
    pub header_read_timeout: Duration,
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "values::nonzero_duration::deserialize"
    )]
    pub request_timeout: Duration,
    #[serde(
        default = "default_max_connections",
        deserialize_with = "values::positive"
    )]
    pub max_connections: usize,
    #[serde(
        default = "default_max_connections_per_ip",
        deserialize_with = "values::positive"
    )]
    pub max_connections_per_ip: usize,
}

impl Default for FileAdmin {
    fn default() -> Self {
        FileAdmin {
            bind: default_admin_bind(),
            token: None,
            header_read_timeout: default_header_read_timeout(),
            request_timeout: default_request_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
        }
    }
}

fn default_admin_bind() -> Spanned<BindAddr> {
    let addr = DEFAULT_ADMIN_BIND.parse().expect("valid default");
    Spanned::new(BindAddr(addr), Location::UNKNOWN, Location::UNKNOWN)
}

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

/// `fxp:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileFxp {
    #[serde(default = "default_fxp_allow")]
    pub allow: AllowList,
    #[serde(
        default = "default_fxp_concurrency",
        deserialize_with = "values::positive"
    )]
    pub concurrency: usize,
    #[serde(default)]
    pub allow_clear_data: bool,
    #[serde(default)]
    pub allow_insecure: bool,
    #[serde(default)]
    pub ca_bundles: BTreeMap<String, Spanned<PathBuf>>,
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

/// Refusals name the list by its key, so the operator knows which one to edit.
pub(super) const FXP_ALLOW: &str = "fxp.allow";

fn default_fxp_allow() -> AllowList {
    AllowList::default().named(FXP_ALLOW)
}

fn default_fxp_concurrency() -> usize {
    4
}

/// `state:`. Without the section the store is in memory (see `state::StateConfig`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileState {
    #[serde(default = "default_state_url")]
    pub url: Spanned<String>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub instance: Option<String>,
    #[serde(
        default = "default_keep_finished",
        deserialize_with = "values::positive"
    )]
    pub keep_finished: usize,
    #[serde(
        default = "default_keep_for",
        deserialize_with = "values::nonzero_duration::deserialize"
    )]
    pub keep_for: Duration,
    #[serde(
        default = "default_lease",
        deserialize_with = "values::nonzero_duration::deserialize"
    )]
    pub lease: Duration,
}

impl Default for FileState {
    fn default() -> Self {
        FileState {
            url: default_state_url(),
            key_file: None,
            instance: None,
            keep_finished: default_keep_finished(),
            keep_for: default_keep_for(),
            lease: default_lease(),
        }
    }
}

/// The store a `state:` section without `url` uses: a file in the working directory.
pub const DEFAULT_STATE_URL: &str = "sqlite://./fxprelay-state.db";

fn default_state_url() -> Spanned<String> {
    Spanned::new(
        DEFAULT_STATE_URL.to_owned(),
        Location::UNKNOWN,
        Location::UNKNOWN,
    )
}

fn default_keep_finished() -> usize {
    // What the in-memory registry kept before the store existed.
    1000
}

fn default_keep_for() -> Duration {
    // A week: long enough to look at last weekend's failures on Monday.
    Duration::from_secs(7 * 24 * 3600)
}

fn default_lease() -> Duration {
    // Renewed every 3 s; a killed instance's jobs are taken over within 15 s.
    Duration::from_secs(15)
}

/// One entry of `listeners:`. Keys whose absence means something (a warning names a key
/// only if it was written) stay `Option`s here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileListener {
    pub name: Spanned<String>,
    pub bind: Spanned<BindAddr>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub upstream: Option<Spanned<FileUpstream>>,
    #[serde(default)]
    pub balance: Option<Spanned<Balance>>,
    #[serde(default)]
    pub health_check: Option<Spanned<FileHealthCheck>>,
    #[serde(default)]
    pub upstream_proxy_protocol: Option<ProxyVersion>,
    #[serde(default)]
    pub allow: Option<AllowList>,
    #[serde(default)]
    pub data: DataMode,
    #[serde(default)]
    pub public_address: Option<HostName>,
    #[serde(default)]
    pub upstream_data: Option<UpstreamData>,
    #[serde(default)]
    pub upstream_connect: UpstreamConnect,
    #[serde(default, deserialize_with = "values::nets")]
    pub allow_foreign_port: Vec<IpNet>,
    #[serde(default)]
    pub allow_passive_hosts: Vec<IpNet>,
    #[serde(default)]
    pub proxy_protocol: Option<ProxyProtocol>,
    #[serde(default)]
    pub preserve_client_address: bool,
    #[serde(default)]
    pub tls: Option<Spanned<TlsSettings>>,
    #[serde(default)]
    pub nat: FileNat,
    #[serde(default, deserialize_with = "values::opt_nets")]
    pub private_ranges: Option<Vec<IpNet>>,
    #[serde(default)]
    pub defense: Option<Spanned<FileListenerDefense>>,
    /// Reverse mode: the routes to other upstreams, first match wins (the listener's own
    /// `upstream`, if any, is the default route).
    #[serde(default)]
    pub routes: Option<Spanned<Vec<Spanned<FileRoute>>>>,
    /// Reverse mode: reach the upstream through this agent (`agents.tokens`).
    #[serde(default)]
    pub via: Option<Spanned<String>>,
}

/// A listener's `nat:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileNat {
    #[serde(default)]
    pub passive: NatMode,
    #[serde(default)]
    pub active: NatMode,
    #[serde(default)]
    pub client_address: Option<HostName>,
}

/// One entry of a listener's `routes:`. Keys left out take the listener's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRoute {
    /// The route's name in logs and metrics; default: its host pattern, or `routes[N]`.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    #[serde(rename = "match")]
    pub matches: Spanned<FileMatch>,
    pub upstream: Spanned<FileUpstream>,
    #[serde(default)]
    pub balance: Option<Spanned<Balance>>,
    #[serde(default, alias = "health")]
    pub health_check: Option<Spanned<FileHealthCheck>>,
    /// The server's login name, from `{user}` and `{host}`.
    #[serde(default)]
    pub user: Option<Spanned<String>>,
    #[serde(default)]
    pub tls: Option<Spanned<RouteTls>>,
    #[serde(default)]
    pub nat: Option<Spanned<FileRouteNat>>,
    #[serde(default)]
    pub upstream_data: Option<Spanned<UpstreamData>>,
}

/// A route's `match:`: one of the two keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMatch {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// A route's `nat:`: the keys it sets replace the listener's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRouteNat {
    #[serde(default)]
    pub passive: Option<NatMode>,
    #[serde(default)]
    pub active: Option<NatMode>,
    #[serde(default)]
    pub client_address: Option<HostName>,
}

// ---------------------------------------------------------------------------------------
// Values read whole into the typed configuration
// ---------------------------------------------------------------------------------------

/// How a listener finds its upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every client goes to the one configured `upstream` (or a backend of its pool).
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocol {
    #[serde(deserialize_with = "values::nets")]
    pub trusted: Vec<IpNet>,
}

impl ProxyProtocol {
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted.iter().any(|net| net.contains(&peer))
    }
}

/// How data connections travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamConnect {
    /// As soon as the client connects; the client sees the server's own greeting.
    #[default]
    Immediately,
    /// Once the client sent `USER`: the proxy greets it itself, so clients that never log
    /// in cost the server nothing.
    OnLogin,
}

/// How a pool picks the backend of a new session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// In turn, by weight.
    RoundRobin,
    /// The backend with the fewest open sessions per unit of weight.
    #[default]
    LeastSessions,
    /// Sticky by the client's address (rendezvous hashing).
    ClientAddress,
    /// Sticky by the `USER` name: the proxy greets the client itself and connects after
    /// `USER`.
    User,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastSessions => "least_sessions",
            Balance::ClientAddress => "client_address",
            Balance::User => "user",
        }
    }
}

/// The PROXY protocol version written toward servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    V1,
    V2,
}

/// A route's `tls:`: the certificate clients that ask for its name get (TLS SNI), and the
/// upstream leg's settings, replacing the listener's `tls.upstream` as a whole (its keys
/// left out take their defaults, as in the listener's block).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamTls>,
}

/// The check user: the check logs in and sends `NOOP`, proving more than a banner.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckLogin {
    pub user: String,
    /// Printed as `***`, like `admin.token`.
    #[serde(serialize_with = "values::redacted")]
    pub password: String,
}

// ---------------------------------------------------------------------------------------
// A reverse listener's upstreams
// ---------------------------------------------------------------------------------------

/// `upstream:` as the file writes it: one `host:port`, or a list of entries.
#[derive(Debug)]
pub(super) enum FileUpstream {
    One(HostPort),
    Many(Vec<FileBackend>),
}

/// One list entry: `host:port`, or `{address, weight, backup}`.
#[derive(Debug)]
pub(super) struct FileBackend {
    pub address: HostPort,
    pub weight: u32,
    pub backup: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackendMap {
    address: String,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    backup: bool,
}

fn one() -> u32 {
    1
}

impl<'de> Deserialize<'de> for FileUpstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FileUpstream;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`host:port`, or a list of `host:port` entries or `{address: host:port, weight: 2, backup: true}` maps")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FileUpstream, E> {
                values::upstream_address(s)
                    .map(FileUpstream::One)
                    .map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FileUpstream, A::Error> {
                let mut list = Vec::new();
                while let Some(b) = seq.next_element::<FileBackend>()? {
                    list.push(b);
                }
                Ok(FileUpstream::Many(list))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for FileBackend {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FileBackend;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`host:port` or `{address: host:port, weight: 2, backup: true}`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FileBackend, E> {
                let address = values::upstream_address(s).map_err(E::custom)?;
                Ok(FileBackend {
                    address,
                    weight: 1,
                    backup: false,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FileBackend, A::Error> {
                let m = FileBackendMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if m.weight == 0 {
                    return Err(de::Error::custom(
                        "`weight` must be at least 1 (to take a backend out, remove it or mark it `backup: true`)",
                    ));
                }
                let address = values::upstream_address(&m.address)
                    .map_err(<A::Error as de::Error>::custom)?;
                Ok(FileBackend {
                    address,
                    weight: m.weight,
                    backup: m.backup,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `health_check:` as the file writes it: what is left out takes its default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileHealthCheck {
    #[serde(default, deserialize_with = "values::opt_nonzero_duration")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "values::opt_nonzero_duration")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub rise: Option<u32>,
    #[serde(default)]
    pub fall: Option<u32>,
    #[serde(default)]
    pub login: Option<CheckLogin>,
}

// ---------------------------------------------------------------------------------------
// Edge defense
// ---------------------------------------------------------------------------------------

/// `defense:` at the top level, or the keys a listener's `defense:` overrides: every key
/// optional. What the top level leaves out takes the default ([`crate::defense::Settings`]),
/// what a listener leaves out the top level's. `ban` and `max_ban` keep their lines (a
/// rule holds between them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDefense {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "values::opt_nonzero_duration")]
    pub window: Option<Duration>,
    #[serde(default, deserialize_with = "opt_threshold")]
    pub threshold: Option<u32>,
    #[serde(default)]
    pub ban: Option<Spanned<NonzeroDuration>>,
    #[serde(default)]
    pub max_ban: Option<Spanned<NonzeroDuration>>,
    #[serde(default, deserialize_with = "opt_prefix")]
    pub ipv6_prefix: Option<u8>,
    #[serde(default, deserialize_with = "opt_rate")]
    pub connect_rate: Option<Rate>,
    #[serde(default, deserialize_with = "opt_names")]
    pub bait_users: Option<Vec<String>>,
    #[serde(default, deserialize_with = "values::opt_nets")]
    pub exempt: Option<Vec<IpNet>>,
    #[serde(default)]
    pub silent: Option<bool>,
    #[serde(default)]
    pub scores: Option<FileScores>,
    #[serde(default)]
    pub clear_on_login: Option<bool>,
}

/// `defense.scores:`: what each event adds to a client's score.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileScores {
    pub login_failed: Option<u32>,
    pub bait_user: Option<u32>,
    pub bad_command: Option<u32>,
    pub early_close: Option<u32>,
    pub rate_limited: Option<u32>,
}

/// A listener's `defense:`: `off`, `on` (the top level's, also where the top level says
/// `enabled: false`), or overrides (read by [`super::defense`]).
#[derive(Debug)]
pub(super) enum FileListenerDefense {
    Off,
    On,
    Override(Box<FileDefense>),
}

// ---------------------------------------------------------------------------------------
// Single values, checked as they are parsed (the YAML layer's error names line and column)
// ---------------------------------------------------------------------------------------

/// A duration above 0s, kept with its line where a rule across keys may need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NonzeroDuration(pub Duration);

impl<'de> Deserialize<'de> for NonzeroDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        values::nonzero_duration::deserialize(d).map(NonzeroDuration)
    }
}

/// `threshold`: at least 1.
pub(super) fn opt_threshold<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(de::Error::custom(
            "must be at least 1 (to stop banning, write `enabled: false`)",
        )),
        n => Ok(Some(n)),
    }
}

/// `ipv6_prefix`: a prefix length from 1 to 128.
pub(super) fn opt_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    match u32::deserialize(d)? {
        n @ 1..=128 => Ok(Some(n as u8)),
        n => Err(de::Error::custom(format!(
            "{n} is not an IPv6 prefix length: write 1 to 128 (64: a client's /64 is one key; 128: every address its own)"
        ))),
    }
}

/// `connect_rate: 20/10s`.
pub(super) fn opt_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Rate>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<Rate>().map(Some).map_err(de::Error::custom)
}

/// `bait_users`: names, none empty.
pub(super) fn opt_names<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    if names.iter().any(|n| n.trim().is_empty()) {
        return Err(de::Error::custom("a user name must not be empty"));
    }
    Ok(Some(
        names.into_iter().map(|n| n.trim().to_owned()).collect(),
    ))
}
