//! Allow lists: where the proxy may connect on someone's behalf.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::host::HostName;

/// One entry of an allow list: a network (an address is a one-address network) or a
/// host name clients may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    Net(IpNet),
    /// Lower case, without a trailing dot.
    Host(String),
}

impl AllowEntry {
    /// Whether `host`, as the client wrote it, matches a host-name entry.
    pub fn names(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        matches!(self, AllowEntry::Host(h) if h.eq_ignore_ascii_case(host))
    }

    /// Whether `ip` (after resolution) is inside a network entry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        matches!(self, AllowEntry::Net(net) if net.contains(&ip.to_canonical()))
    }
}

/// Addresses are compared canonically (IPv4-mapped IPv6 as IPv4), so a network written
/// in mapped form must be stored as IPv4 to match anything.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

impl FromStr for AllowEntry {
    /// The message, worded for whoever wrote the value: every caller shows it (in a
    /// configuration error, a reply) or tries another form; none tells reasons apart.
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(AllowEntry::Net(canonical_net(net)));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(AllowEntry::Net(IpNet::from(ip.to_canonical())));
        }
        let name: HostName = s.parse().map_err(|_| {
            format!("`{s}` is neither a CIDR (10.0.0.0/8), an address nor a host name")
        })?;
        // `[::1]` is an address in brackets, not a name.
        if let Some(ip) = name.as_ip() {
            return Ok(AllowEntry::Net(IpNet::from(ip.to_canonical())));
        }
        Ok(AllowEntry::Host(
            name.0.trim_end_matches('.').to_ascii_lowercase(),
        ))
    }
}

/// As written in the configuration: the network, or the host name (lower case).
impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowEntry::Net(net) => net.fmt(f),
            AllowEntry::Host(host) => f.write_str(host),
        }
    }
}

impl<'de> Deserialize<'de> for AllowEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where the proxy may connect on someone's behalf: a forward or transparent listener's
/// `allow`, and `fxp.allow` for the FXP API and `SITE FXP`. Empty admits nothing.
///
/// Written in the configuration as a YAML list of [`AllowEntry`]s. The list carries its
/// name (its configuration key, by default "the allow list") so a refusal says which
/// list to edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<AllowEntry>,
    name: &'static str,
}

/// Why an [`AllowList`] refused a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ip} is not in {list}")]
pub struct Denied {
    /// The refused address, canonical (IPv4-mapped IPv6 shown as IPv4).
    pub ip: IpAddr,
    /// The list's name: "the allow list", "fxp.allow".
    pub list: &'static str,
}

impl AllowList {
    /// The name refusals use unless [`named`](Self::named) gives another.
    pub const DEFAULT_NAME: &'static str = "the allow list";

    pub fn new(entries: Vec<AllowEntry>) -> AllowList {
        AllowList {
            entries,
            name: Self::DEFAULT_NAME,
        }
    }

    /// The same list, refusing in the name of `name` (e.g. its config key `fxp.allow`).
    pub fn named(self, name: &'static str) -> AllowList {
        AllowList { name, ..self }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the proxy may connect to `addr`, resolved from `host` as the client or the
    /// URL wrote it: a host-name entry admits that name's own connections wherever it
    /// resolves; any other host must resolve into a listed network. Checked after DNS,
    /// so a name cannot smuggle in an address that is not listed.
    pub fn admits(&self, host: &str, addr: IpAddr) -> Result<(), Denied> {
        let ip = addr.to_canonical();
        if self.entries.iter().any(|e| e.names(host) || e.contains(ip)) {
            Ok(())
        } else {
            Err(Denied {
                ip,
                list: self.name,
            })
        }
    }

    /// This list plus the one address `ip`, under the same name: `SITE FXP` may always
    /// reach the session's own server.
    pub fn with_address(&self, ip: IpAddr) -> AllowList {
        let mut entries = self.entries.clone();
        entries.push(AllowEntry::Net(IpNet::from(ip.to_canonical())));
        AllowList {
            entries,
            name: self.name,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a network of the list spans a whole address family (`0.0.0.0/0`,
    /// `::/0`): the list then limits nothing.
    pub fn admits_everything(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e, AllowEntry::Net(net) if net.prefix_len() == 0))
    }

    pub fn iter(&self) -> std::slice::Iter<'_, AllowEntry> {
        self.entries.iter()
    }
}

impl Default for AllowList {
    fn default() -> Self {
        AllowList::new(Vec::new())
    }
}

impl FromIterator<AllowEntry> for AllowList {
    fn from_iter<I: IntoIterator<Item = AllowEntry>>(iter: I) -> Self {
        AllowList::new(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a AllowList {
    type Item = &'a AllowEntry;
    type IntoIter = std::slice::Iter<'a, AllowEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The YAML list as it is: each entry's own error keeps its line and column.
impl<'de> Deserialize<'de> for AllowList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<AllowEntry>::deserialize(d).map(AllowList::new)
    }
}

/// The entries, as written; the name is the key the list is read from, not a setting.
impl Serialize for AllowList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.entries.iter().map(ToString::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        entries.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_parse_as_networks_or_names() {
        let e = |s: &str| s.parse::<AllowEntry>().unwrap();
        assert_eq!(
            e("10.0.0.0/8"),
            AllowEntry::Net("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            e("10.1.2.3"),
            AllowEntry::Net("10.1.2.3/32".parse().unwrap())
        );
        assert_eq!(e("[::1]"), AllowEntry::Net("::1/128".parse().unwrap()));
        assert_eq!(
            e("::ffff:10.1.2.3"),
            AllowEntry::Net("10.1.2.3/32".parse().unwrap())
        );
        assert_eq!(
            e("::ffff:10.0.0.0/104"),
            AllowEntry::Net("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            e("FTP.Example.org."),
            AllowEntry::Host("ftp.example.org".into())
        );
        let err = "not a host".parse::<AllowEntry>().unwrap_err();
        assert!(err.contains("neither a CIDR"), "{err}");
    }

    #[test]
    fn names_admit_their_own_host_and_networks_their_addresses() {
        let l = list(&["ftp.example.org", "10.1.0.0/16"]);
        let anywhere = ip("192.0.2.7");
        // A listed name may resolve anywhere, whatever case or trailing dot it has.
        assert_eq!(l.admits("ftp.example.org", anywhere), Ok(()));
        assert_eq!(l.admits("FTP.Example.ORG.", anywhere), Ok(()));
        // Another name only reaches listed networks.
        assert_eq!(
            l.admits("other.example", anywhere),
            Err(Denied {
                ip: anywhere,
                list: "the allow list"
            })
        );
        assert_eq!(l.admits("other.example", ip("10.1.2.3")), Ok(()));
        // A name is matched whole, not as a suffix.
        assert!(l.admits("x.ftp.example.org", anywhere).is_err());
        // An IP literal is never a name.
        assert!(l.admits("192.0.2.7", anywhere).is_err());
    }

    #[test]
    fn mapped_ipv4_is_compared_as_ipv4() {
        let l = list(&["10.1.0.0/16"]);
        assert_eq!(l.admits("h", ip("::ffff:10.1.2.3")), Ok(()));
        let e = l.admits("h", ip("::ffff:192.0.2.1")).unwrap_err();
        assert_eq!(e.ip, ip("192.0.2.1"));
        assert_eq!(e.to_string(), "192.0.2.1 is not in the allow list");
        let l = list(&["::ffff:10.1.2.3"]);
        assert_eq!(l.admits("h", ip("10.1.2.3")), Ok(()));
    }

    #[test]
    fn an_empty_list_admits_nothing() {
        let l = AllowList::default();
        assert!(l.is_empty());
        assert!(l.admits("localhost", ip("127.0.0.1")).is_err());
        assert!(l.admits("", ip("::")).is_err());
    }

    #[test]
    fn with_address_adds_one_address_and_keeps_the_name() {
        let l = list(&["b.example"]).named("fxp.allow");
        let a = l.with_address(ip("::ffff:192.0.2.10"));
        assert_eq!(a.admits("192.0.2.10", ip("192.0.2.10")), Ok(()));
        assert_eq!(a.admits("b.example", ip("198.51.100.1")), Ok(()));
        assert_eq!(
            a.admits("c.example", ip("192.0.2.11"))
                .unwrap_err()
                .to_string(),
            "192.0.2.11 is not in fxp.allow"
        );
        // The original is unchanged.
        assert!(l.admits("192.0.2.10", ip("192.0.2.10")).is_err());
        assert_eq!(a.iter().count(), 2);
    }

    #[test]
    fn deserializes_from_a_list() {
        let l: AllowList = serde_json::from_str(r#"["10.0.0.0/8", "ftp.example.org"]"#).unwrap();
        assert_eq!(l.name(), AllowList::DEFAULT_NAME);
        assert_eq!(l.admits("ftp.example.org", ip("192.0.2.1")), Ok(()));
        let e = serde_json::from_str::<AllowList>(r#"["10.0.0.0/8", "not a host"]"#).unwrap_err();
        assert!(e.to_string().contains("neither a CIDR"), "{e}");
    }
}
