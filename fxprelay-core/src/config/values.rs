//! Values as the file writes them and as `fxprelay config` prints them back: the rules a
//! single value must follow (checked while it is parsed, so the YAML layer's error names
//! its line and column) and the written form of types whose own serde form is not the
//! operator's (durations as `10s`, secrets as `***`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serializer};

use crate::net::HostPort;

/// A local `ip:port` to listen on, with an error message that says what is expected.
#[derive(Debug, Clone, Copy)]
pub(super) struct BindAddr(pub SocketAddr);

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

/// A list of networks, bare addresses allowed.
pub(super) fn nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Ok(Vec::<Net>::deserialize(d)?
        .into_iter()
        .map(|n| n.0)
        .collect())
}

/// [`nets`], for a key whose absence means something else than an empty list.
pub(super) fn opt_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<IpNet>>, D::Error> {
    nets(d).map(Some)
}

/// A count that must not be 0 (sessions, connections, bytes).
pub(super) fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be greater than 0")),
        n => Ok(n),
    }
}

/// `limits.max_line_length`.
pub(super) fn line_length<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        // Commands that carry a path easily exceed a few hundred bytes.
        n if n < 512 => Err(serde::de::Error::custom("must be at least 512")),
        n => Ok(n),
    }
}

/// A duration written `10s`, `500ms`, `2m` (humantime), printed the same way.
pub(super) mod duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration `{s}` ({e}); write e.g. `10s`, `500ms`, `2m`"
            ))
        })
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}

/// A [`duration`] that must not be zero (a timeout of 0 would fail everything at once).
pub(super) mod nonzero_duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match duration::deserialize(d)? {
            z if z.is_zero() => Err(serde::de::Error::custom("must be longer than 0s")),
            t => Ok(t),
        }
    }

    pub use super::duration::serialize;
}

/// A [`nonzero_duration`] whose key may be left out (its default then depends on more
/// than the key: see `health_check`).
pub(super) fn opt_nonzero_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    nonzero_duration::deserialize(d).map(Some)
}

/// A secret (`admin.token`, a check's password) printed as `***`: `fxprelay config`
/// output gets pasted into tickets.
pub(super) fn redacted<S: Serializer>(_secret: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("***")
}

/// [`redacted`], for a secret that may be unset (then skipped, not serialized).
pub(super) fn redacted_opt<S: Serializer>(
    secret: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => redacted(secret, s),
        None => s.serialize_none(),
    }
}

/// An upstream `host:port` (a host alone means port 21), refusing an IPv6 address without brackets: in
/// `2001:db8::1:21` the port is a guess (`:21`, or part of the address?), so the
/// operator must say. The message goes straight into the YAML layer's error (with line
/// and column), which is all a caller does with it.
pub(super) fn upstream_address(s: &str) -> Result<HostPort, String> {
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
    HostPort::parse_or_port(t, HostPort::FTP_PORT)
}
