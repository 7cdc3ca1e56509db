//! Host names and `host:port` targets as the configuration and the clients write them.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `host:port`, where host is an IP literal (`[v6]` in brackets) or a DNS name that is
/// resolved each time a session connects, so DNS changes need no restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// FTP's control port, for a target written without one.
    pub const FTP_PORT: u16 = 21;

    /// `host:port`, or a host alone (a name, an IPv4 address, an IPv6 address with or
    /// without brackets) on port `default`: how clients, URLs and upstreams may omit
    /// FTP's port.
    pub fn parse_or_port(s: &str, default: u16) -> Result<HostPort, String> {
        s.parse().or_else(|e| {
            let bare = s.strip_prefix('[').and_then(|b| b.strip_suffix(']'));
            let host = match bare.unwrap_or(s).parse::<Ipv6Addr>() {
                Ok(ip) => ip.to_string(),
                Err(_) if s.contains(':') => return Err(e),
                Err(_) => s.parse::<HostName>()?.0,
            };
            Ok(HostPort {
                host,
                port: default,
            })
        })
    }
}

impl FromStr for HostPort {
    /// The message, worded for whoever wrote the value: every caller shows it (in a
    /// configuration error, a reply) or tries another form; none tells reasons apart.
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(HostPort {
                host: sa.ip().to_string(),
                port: sa.port(),
            });
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` is not host:port (e.g. `192.168.1.10:21`)"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{s}`: port must be a number from 1 to 65535"))?;
        let host: HostName = host.parse()?;
        Ok(HostPort { host: host.0, port })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// As written: `host:port`, an IPv6 address in brackets.
impl Serialize for HostPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An IP literal or a DNS host name (letters, digits, `-`, `.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostName(pub String);

impl HostName {
    /// The address itself when the name is an IP literal.
    pub fn as_ip(&self) -> Option<IpAddr> {
        self.0.parse().ok()
    }
}

impl FromStr for HostName {
    /// The message, worded for whoever wrote the value: every caller shows it (in a
    /// configuration error, a reply) or tries another form; none tells reasons apart.
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<IpAddr>().is_ok() {
            return Ok(HostName(bare.to_string()));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        let name = s.strip_suffix('.').unwrap_or(s);
        if name.len() <= 253 && name.split('.').all(label_ok) {
            Ok(HostName(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is neither an IP address nor a valid host name"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// As written.
impl Serialize for HostName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn host_port_forms() {
        let hp: HostPort = "[::1]:21".parse().unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("::1", 21));
        assert_eq!(hp.to_string(), "[::1]:21");
        let hp: HostPort = "ftp.example.com:2121".parse().unwrap();
        assert_eq!(hp.host, "ftp.example.com");
        assert!("ftp.example.com".parse::<HostPort>().is_err());
        assert!("ftp.example.com:0".parse::<HostPort>().is_err());
        assert!("-bad.example:21".parse::<HostPort>().is_err());
    }

    #[test]
    fn a_target_without_a_port_takes_the_default() {
        let parsed =
            |s: &str| HostPort::parse_or_port(s, HostPort::FTP_PORT).map(|h| h.to_string());
        for (written, meant) in [
            ("ftp.example.com", "ftp.example.com:21"),
            ("ftp.example.com:2121", "ftp.example.com:2121"),
            ("192.0.2.1", "192.0.2.1:21"),
            ("[2001:db8::1]", "[2001:db8::1]:21"),
            ("2001:db8::1", "[2001:db8::1]:21"),
            ("[::1]:990", "[::1]:990"),
        ] {
            assert_eq!(parsed(written).as_deref(), Ok(meant), "{written}");
        }
        for bad in ["h:ftp", "h:0", "", "-bad", "[h]", "a b"] {
            assert!(parsed(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_names() {
        assert_eq!(
            "[::1]".parse::<HostName>().unwrap().as_ip(),
            Some(ip("::1"))
        );
        let n: HostName = "ftp.example.com.".parse().unwrap();
        assert_eq!((n.0.as_str(), n.as_ip()), ("ftp.example.com.", None));
        assert!("bad host".parse::<HostName>().is_err());
        assert!("a..b".parse::<HostName>().is_err());
        assert!(
            format!("{}.com", "x".repeat(64))
                .parse::<HostName>()
                .is_err()
        );
    }
}
