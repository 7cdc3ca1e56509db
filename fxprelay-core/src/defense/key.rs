//! Who a score belongs to: a client's address, an IPv6 client's network of
//! `ipv6_prefix` bits (one host usually holds a whole /64, so its addresses count as one).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A client as the defender scores and bans it: an IPv4 address (IPv4-mapped IPv6
/// addresses included), or an IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    V4(Ipv4Addr),
    /// The network's first address and its prefix length.
    V6(Ipv6Addr, u8),
}

impl Key {
    /// The key of a client at `ip`, IPv6 clients by their network of `ipv6_prefix` bits
    /// (at most 128).
    pub fn of(ip: IpAddr, ipv6_prefix: u8) -> Key {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Key::V4(v4),
            IpAddr::V6(v6) => {
                let prefix = ipv6_prefix.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                Key::V6(Ipv6Addr::from(u128::from(v6) & mask), prefix)
            }
        }
    }
}

/// `198.51.100.7`, `2001:db8:1:2::/64` (a whole IPv6 address without its `/128`).
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::V4(a) => write!(f, "{a}"),
            Key::V6(a, 128) => write!(f, "{a}"),
            Key::V6(a, p) => write!(f, "{a}/{p}"),
        }
    }
}
