//! Names: what a client asks for (RFC 7151 `HOST`, the TLS SNI of its handshake) and the
//! `match: {host: ...}` patterns they are compared with. Both are compared normalized:
//! lowercase, an IP literal without its brackets, no trailing dot.

use std::fmt;
use std::net::IpAddr;

use serde::{Serialize, Serializer};

use super::RouteError;

/// The longest DNS name (RFC 1035), and the longest label.
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// A name a client gave, normalized; `None` when it is not a host name or an IP literal
/// (RFC 7151 allows both, an IPv6 literal in brackets).
pub fn normalize(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if let Some(inner) = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse::<IpAddr>().ok().map(|ip| ip.to_string());
    }
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
    dns_name(&name).then_some(name)
}

/// Letters, digits, `-` and `_` in dot-separated labels of 1 to 63 bytes, 253 in all.
fn dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `match: {host: ...}`: one name, or `*.` and a domain (the wildcard stands for exactly
/// one label, as in a TLS certificate: `*.gamma.example.net` matches
/// `ftp.gamma.example.net`, neither `gamma.example.net` nor `a.b.gamma.example.net`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// The name, or the domain after `*.`, normalized.
    name: String,
    wildcard: bool,
}

impl HostPattern {
    /// The pattern as the configuration writes it.
    pub fn parse(written: &str) -> Result<HostPattern, RouteError> {
        let bad = |why: &str| RouteError::Host {
            written: written.to_string(),
            why: why.to_string(),
        };
        let (wildcard, rest) = match written.trim().strip_prefix("*.") {
            Some(domain) => (true, domain),
            None => (false, written.trim()),
        };
        if rest.contains('*') {
            return Err(bad(
                "a wildcard may only be the whole first label (`*.example.net`)",
            ));
        }
        let name = normalize(rest).ok_or_else(|| {
            bad("not a host name (letters, digits, `-` and `.`) or an IP address")
        })?;
        if wildcard && name.parse::<IpAddr>().is_ok() {
            return Err(bad("a wildcard goes before a domain, not an IP address"));
        }
        Ok(HostPattern { name, wildcard })
    }

    /// Whether `name` (normalized, see [`normalize`]) is one this pattern stands for.
    pub fn matches(&self, name: &str) -> bool {
        if !self.wildcard {
            return name == self.name;
        }
        name.strip_suffix(self.name.as_str())
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.'))
    }

    /// Whether every name `other` matches, this matches too.
    pub fn covers(&self, other: &HostPattern) -> bool {
        match (self.wildcard, other.wildcard) {
            (_, false) => self.matches(&other.name),
            (true, true) => self.name == other.name,
            (false, true) => false,
        }
    }

    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

/// As the file writes it.
impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized() {
        assert_eq!(
            normalize("FTP.Example.NET.").as_deref(),
            Some("ftp.example.net")
        );
        assert_eq!(normalize(" alpha.test ").as_deref(), Some("alpha.test"));
        assert_eq!(normalize("[2001:DB8::1]").as_deref(), Some("2001:db8::1"));
        assert_eq!(normalize("192.0.2.7").as_deref(), Some("192.0.2.7"));
        let long = "a".repeat(64);
        for bad in [
            "",
            ".",
            "a..b",
            "a b",
            "a/b",
            "[nope]",
            "é.test",
            long.as_str(),
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn one_leading_wildcard_label() {
        let p = HostPattern::parse("*.gamma.example.net").unwrap();
        assert!(p.matches("ftp.gamma.example.net"));
        assert!(!p.matches("gamma.example.net"));
        assert!(!p.matches("a.b.gamma.example.net"));
        assert!(!p.matches("xgamma.example.net"));
        assert!(!p.matches(".gamma.example.net"));
        assert_eq!(p.to_string(), "*.gamma.example.net");
        let exact = HostPattern::parse("Alpha.Example.Net").unwrap();
        assert!(exact.matches("alpha.example.net"));
        assert!(!exact.matches("beta.example.net"));
        assert_eq!(exact.to_string(), "alpha.example.net");
    }

    #[test]
    fn patterns_that_are_refused() {
        for bad in [
            "*",
            "*.",
            "a.*.net",
            "*x.net",
            "**.net",
            "*.192.0.2.1",
            "a b",
            "",
        ] {
            let e = HostPattern::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad.trim()), "{bad:?}: {e}");
        }
        assert!(HostPattern::parse("[::1]").unwrap().matches("::1"));
    }

    #[test]
    fn coverage() {
        let w = HostPattern::parse("*.x.test").unwrap();
        let a = HostPattern::parse("a.x.test").unwrap();
        let deep = HostPattern::parse("a.b.x.test").unwrap();
        assert!(w.covers(&a) && !a.covers(&w));
        assert!(!w.covers(&deep));
        assert!(w.covers(&w.clone()) && a.covers(&a.clone()));
        assert!(!w.covers(&HostPattern::parse("*.y.x.test").unwrap()));
    }
}
