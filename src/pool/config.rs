//! The keys of a reverse listener with several upstreams (`upstream:` as a list,
//! `balance`, `health_check`) and `upstream_proxy_protocol`, as the file writes them and
//! validated.

use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::net::HostPort;

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

/// `upstream:` as the file writes it: one `host:port`, or a list of entries.
#[derive(Debug)]
pub enum FileUpstream {
    One(HostPort),
    Many(Vec<FileBackend>),
}

/// One list entry: `host:port`, or `{address, weight, backup}`.
#[derive(Debug)]
pub struct FileBackend {
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
                parse_upstream(s).map(FileUpstream::One).map_err(E::custom)
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
                let address = parse_upstream(s).map_err(E::custom)?;
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
                let address =
                    parse_upstream(&m.address).map_err(<A::Error as de::Error>::custom)?;
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

/// `host:port`, refusing an IPv6 address without brackets: in `2001:db8::1:21` the port
/// is a guess (`:21`, or part of the address?), so the operator must say.
pub fn parse_upstream(s: &str) -> Result<HostPort, String> {
    let t = s.trim();
    if !t.starts_with('[') && t.matches(':').count() > 1 {
        let v6 = |h: &str| h.parse::<std::net::Ipv6Addr>().is_ok();
        let split = t
            .rsplit_once(':')
            .filter(|(host, port)| v6(host) && port.parse::<u16>().is_ok_and(|p| p > 0));
        let hint = match (split, v6(t)) {
            (Some((host, port)), true) => {
                format!("`[{host}]:{port}` for port {port} of {host}, or `[{t}]:21`")
            }
            (Some((host, port)), false) => format!("`[{host}]:{port}`"),
            (None, true) => format!("`[{t}]:21`"),
            (None, false) => "`[address]:port`".into(),
        };
        return Err(format!(
            "`{t}` looks like an IPv6 address without brackets, so its port is ambiguous; write {hint} (quoted in YAML)"
        ));
    }
    t.parse::<HostPort>().map_err(|e| e.to_string())
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    match humantime::parse_duration(&s) {
        Ok(t) if t.is_zero() => Err(de::Error::custom("must be longer than 0s")),
        Ok(t) => Ok(Some(t)),
        Err(e) => Err(de::Error::custom(format!(
            "invalid duration `{s}` ({e}); write e.g. `10s`, `500ms`, `2m`"
        ))),
    }
}

/// `health_check:` as the file writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealthCheck {
    #[serde(default, deserialize_with = "de_opt_duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    rise: Option<u32>,
    #[serde(default)]
    fall: Option<u32>,
    #[serde(default)]
    login: Option<CheckLogin>,
}

/// The check user: the check logs in and sends `NOOP`, proving more than a banner.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckLogin {
    pub user: String,
    pub password: String,
}

/// How a pool checks its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub interval: Duration,
    /// For the whole check: connect, banner, login, `NOOP`.
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub login: Option<CheckLogin>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            login: None,
        }
    }
}

impl FileHealthCheck {
    pub fn validate(self) -> Result<HealthCheck, String> {
        let d = HealthCheck::default();
        let check = HealthCheck {
            interval: self.interval.unwrap_or(d.interval),
            timeout: self.timeout.unwrap_or(d.timeout),
            rise: self.rise.unwrap_or(d.rise),
            fall: self.fall.unwrap_or(d.fall),
            login: self.login,
        };
        if check.rise == 0 || check.fall == 0 {
            return Err("`rise` and `fall` must be at least 1".into());
        }
        Ok(check)
    }
}

/// One backend, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: HostPort,
    pub weight: u32,
    pub backup: bool,
}

/// A reverse listener's pool, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub backends: Vec<BackendConfig>,
    pub balance: Balance,
    pub health: HealthCheck,
}

/// What a listener adds to today's single `upstream`: a pool, and the PROXY header
/// toward servers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub pool: Option<PoolConfig>,
    pub proxy_protocol: Option<ProxyVersion>,
}

impl PoolConfig {
    /// A pool from the file's keys; `Ok(None)` when the listener has one upstream and no
    /// pool keys (today's behaviour, untouched). A single `upstream` with `health_check`
    /// or `balance` is a pool of one: checked, and `421` at once while it is down.
    pub fn from_file(
        upstream: Option<&FileUpstream>,
        balance: Option<Balance>,
        health: Option<FileHealthCheck>,
    ) -> Result<Option<PoolConfig>, String> {
        let backends: Vec<BackendConfig> = match upstream {
            None => return Ok(None),
            Some(FileUpstream::One(_)) if balance.is_none() && health.is_none() => {
                return Ok(None);
            }
            Some(FileUpstream::One(a)) => vec![BackendConfig {
                address: a.clone(),
                weight: 1,
                backup: false,
            }],
            Some(FileUpstream::Many(list)) => list
                .iter()
                .map(|b| BackendConfig {
                    address: b.address.clone(),
                    weight: b.weight,
                    backup: b.backup,
                })
                .collect(),
        };
        if backends.is_empty() {
            return Err("the list is empty: name at least one `host:port`".into());
        }
        for (i, b) in backends.iter().enumerate() {
            if backends[..i].iter().any(|o| o.address == b.address) {
                return Err(format!("{} is listed twice", b.address));
            }
        }
        if backends.iter().all(|b| b.backup) {
            return Err("every entry is `backup: true`: backups take sessions only while no other entry is up, so at least one must not be a backup".into());
        }
        let health = match health {
            Some(h) => h.validate()?,
            None => HealthCheck::default(),
        };
        Ok(Some(PoolConfig {
            backends,
            balance: balance.unwrap_or_default(),
            health,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    use super::*;

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!(
            "listeners:\n  - name: farm\n    bind: 127.0.0.1:2121\n{extra}"
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_issue_example_loads() {
        let c = parse(
            "    upstream: [10.0.0.11:21, 10.0.0.12:21, {address: 10.0.0.14:21, weight: 2, backup: true}]\n    balance: least_sessions\n    health_check:\n      interval: 5s\n      timeout: 2s\n      rise: 2\n      fall: 3\n      login: {user: monitor, password: secret}\n    upstream_proxy_protocol: v2\n",
        )
        .unwrap();
        let u = &c.upstreams["farm"];
        assert_eq!(u.proxy_protocol, Some(ProxyVersion::V2));
        let p = u.pool.as_ref().unwrap();
        assert_eq!(p.backends.len(), 3);
        assert_eq!((p.backends[2].weight, p.backends[2].backup), (2, true));
        assert_eq!(p.balance, Balance::LeastSessions);
        assert_eq!(p.health.login.as_ref().unwrap().user, "monitor");
        assert!(c.listeners[0].upstream.is_none());
        // What `fxprelay config` prints loads back to the same pool.
        let again = Config::parse(&c.effective_yaml()).unwrap();
        let p2 = again.upstreams["farm"].pool.as_ref().unwrap();
        assert_eq!(p2.backends, p.backends);
        assert_eq!(p2.health.interval, p.health.interval);
    }

    #[test]
    fn one_upstream_stays_as_it_was() {
        let c = parse("    upstream: h:21\n").unwrap();
        assert!(!c.upstreams.contains_key("farm"));
        assert_eq!(
            c.listeners[0].upstream.as_ref().unwrap().to_string(),
            "h:21"
        );
        let c = parse("    upstream: h:21\n    health_check: {interval: 1s}\n").unwrap();
        let p = c.upstreams["farm"].pool.as_ref().unwrap();
        assert_eq!((p.backends.len(), p.health.fall), (1, 3));
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("    upstream: []\n").unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = parse("    upstream: [a:21, a:21]\n").unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = parse("    upstream: [{address: a:21, weight: 0}]\n").unwrap_err();
        assert!(e.contains("weight"), "{e}");
        let e = parse("    upstream: [{address: a:21, colour: red}]\n").unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e = parse("    upstream: [a:21]\n    balance: random\n").unwrap_err();
        assert!(e.contains("random"), "{e}");
        let e = parse("    upstream: [\"2001:db8::1:21\"]\n").unwrap_err();
        assert!(e.contains("brackets"), "{e}");
        let e = parse("    upstream: [{address: a:21, backup: true}]\n").unwrap_err();
        assert!(e.contains("backup"), "{e}");
        let e = parse("    upstream: [a:21]\n    health_check: {rise: 0}\n").unwrap_err();
        assert!(e.contains("rise"), "{e}");
        let e = parse("    mode: forward\n    balance: user\n").unwrap_err();
        assert!(e.contains("balance"), "{e}");
    }
}
