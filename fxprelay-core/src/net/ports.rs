//! The operator's data port spec: a list of ports and inclusive ranges
//! (`"21,80,50000-50100"`), parsed from the configuration, and why a port of it could
//! not be leased ([`LeaseError`]; the binary's `data::ports` leases them).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};
use thiserror::Error;

/// Why a port spec was refused. Messages are for an operator editing the config file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PortSpecError {
    #[error(
        "the port list is empty; give ports and ranges such as \"50000-50100\" or \"21,80,50000-50100\""
    )]
    Empty,
    #[error(
        "the port list has an empty item (two commas in a row, or a comma at the start or end)"
    )]
    EmptyItem,
    #[error(
        "`{0}` is not a port or a port range; write a number from 1 to 65535 or a range such as 50000-50100"
    )]
    NotANumber(String),
    #[error("`{0}` uses port 0, which is not a usable port; ports start at 1")]
    PortZero(String),
    #[error("`{0}` is above 65535, the highest TCP port")]
    TooLarge(String),
    #[error("the range `{item}` is reversed; write the low port first, as {low}-{high}")]
    Reversed { item: String, low: u16, high: u16 },
    #[error("`{first}` and `{second}` overlap; list each port only once")]
    Overlap { first: String, second: String },
}

/// A non-empty set of TCP ports, parsed from `"21,80,50000-50100"`.
///
/// Stored as sorted, disjoint ranges with adjacent ones merged, so two specs covering the
/// same ports compare equal and print the same canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    ranges: Vec<(u16, u16)>,
    len: usize,
}

impl PortSpec {
    /// Number of ports in the spec (at least 1).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a parsed spec holds at least one port.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, port: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(low, high)| (low..=high).contains(&port))
    }

    /// Every port, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.ranges.iter().flat_map(|&(low, high)| low..=high)
    }
}

impl<'a> IntoIterator for &'a PortSpec {
    type Item = u16;
    type IntoIter = Box<dyn Iterator<Item = u16> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl FromStr for PortSpec {
    type Err = PortSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(PortSpecError::Empty);
        }
        // (low, high, position in the text, text) so overlap errors quote what was written,
        // in the order it was written.
        let mut items = Vec::new();
        for (index, raw) in s.split(',').enumerate() {
            let item = raw.trim();
            if item.is_empty() {
                return Err(PortSpecError::EmptyItem);
            }
            let (low, high) = match item.split_once('-') {
                Some((low, high)) => (parse_port(low, item)?, parse_port(high, item)?),
                None => {
                    let port = parse_port(item, item)?;
                    (port, port)
                }
            };
            if low > high {
                return Err(PortSpecError::Reversed {
                    item: item.to_owned(),
                    low: high,
                    high: low,
                });
            }
            items.push((low, high, index, item));
        }
        items.sort_unstable();

        let mut ranges: Vec<(u16, u16)> = Vec::with_capacity(items.len());
        // Sorted by start and overlap-free so far, so only the previous item can overlap.
        for pair in items.windows(2) {
            let (prev, next) = (pair[0], pair[1]);
            if next.0 <= prev.1 {
                let (first, second) = if prev.2 < next.2 {
                    (prev, next)
                } else {
                    (next, prev)
                };
                return Err(PortSpecError::Overlap {
                    first: first.3.to_owned(),
                    second: second.3.to_owned(),
                });
            }
        }
        for &(low, high, _, _) in &items {
            match ranges.last_mut() {
                Some(last) if u32::from(last.1) + 1 == u32::from(low) => last.1 = high,
                _ => ranges.push((low, high)),
            }
        }
        let len = ranges
            .iter()
            .map(|&(low, high)| usize::from(high - low) + 1)
            .sum();
        Ok(PortSpec { ranges, len })
    }
}

/// Digits only: `u16::from_str` would also accept `+80`, which no operator means.
fn parse_port(text: &str, item: &str) -> Result<u16, PortSpecError> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortSpecError::NotANumber(item.to_owned()));
    }
    match text.parse::<u16>() {
        Ok(0) => Err(PortSpecError::PortZero(item.to_owned())),
        Ok(port) => Ok(port),
        Err(_) => Err(PortSpecError::TooLarge(item.to_owned())),
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(low, high)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if low == high {
                write!(f, "{low}")?;
            } else {
                write!(f, "{low}-{high}")?;
            }
        }
        Ok(())
    }
}

/// As written: `"21,80,50000-50100"`.
impl Serialize for PortSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// From a string, or from a bare number so YAML `ports: 2121` works without quotes.
impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpecVisitor;

        impl Visitor<'_> for SpecVisitor {
            type Value = PortSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port list such as \"21,80,50000-50100\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortSpec, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortSpec, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortSpec, E> {
                self.visit_str(&v.to_string())
            }
        }

        deserializer.deserialize_any(SpecVisitor)
    }
}

/// Why no data port could be leased.
#[derive(Debug, Error)]
pub enum LeaseError {
    /// Every port of the spec is leased by this pool or held by another program.
    #[error(
        "no free data port on {ip} in the port list \"{spec}\": {leased} in use by this proxy, \
         {busy} taken by other programs{}; widen the data port list (`data.ports`) or allow \
         fewer concurrent transfers",
        denied_note(.denied)
    )]
    Exhausted {
        spec: String,
        ip: IpAddr,
        leased: usize,
        busy: usize,
        denied: usize,
    },
    /// `client` holds `max` ports already (`limits.max_data_ports_per_ip`).
    #[error(
        "{client} holds {max} data ports already (limits.max_data_ports_per_ip); \
         finish or abort a transfer first"
    )]
    PerClient { client: IpAddr, max: usize },
    /// A failure that is not about one port (e.g. `ip` is not an address of this host, or
    /// the process is out of file descriptors), so trying other ports would not help.
    #[error("could not open data port {addr}: {cause}")]
    Bind { addr: SocketAddr, cause: io::Error },
}

fn denied_note(denied: &usize) -> String {
    match denied {
        0 => String::new(),
        n => format!(", {n} refused by the system (ports below 1024 need CAP_NET_BIND_SERVICE)"),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn spec(s: &str) -> PortSpec {
        s.parse().unwrap()
    }

    #[test]
    fn parses_good_specs() {
        let s = spec(" 21 , 80 ,50000-50100 ");
        assert_eq!(s.len(), 103);
        assert_eq!(s.to_string(), "21,80,50000-50100");
        assert!(s.contains(21) && s.contains(50000) && s.contains(50100));
        assert!(!s.contains(22) && !s.contains(49999) && !s.contains(50101));
        assert_eq!(s.iter().take(3).collect::<Vec<_>>(), [21, 80, 50000]);
        assert_eq!((&s).into_iter().count(), 103);

        // Canonical form: sorted, adjacent items merged, `a-a` and leading zeros dropped.
        assert_eq!(spec("50101-50200,50000-50100").to_string(), "50000-50200");
        assert_eq!(spec("7-7,5,6").to_string(), "5-7");
        assert_eq!(spec("080,50000 - 50001").to_string(), "80,50000-50001");
        assert_eq!(spec("1-65535").len(), 65535);
        assert_eq!(spec("65535").to_string(), "65535");
        assert_eq!(spec("21,80"), spec("80,21"));
    }

    #[test]
    fn rejects_bad_specs_with_readable_errors() {
        let cases = [
            ("", "port list is empty"),
            ("  ", "port list is empty"),
            ("21,,80", "empty item"),
            ("21,", "empty item"),
            (",21", "empty item"),
            ("ftp", "`ftp` is not a port"),
            ("+21", "`+21` is not a port"),
            ("-5", "`-5` is not a port"),
            ("1-2-3", "`1-2-3` is not a port"),
            ("50000-", "`50000-` is not a port"),
            ("0", "`0` uses port 0"),
            ("0-10", "`0-10` uses port 0"),
            ("65536", "`65536` is above 65535"),
            ("1-99999999999999999999", "above 65535"),
            (
                "60000-50000",
                "reversed; write the low port first, as 50000-60000",
            ),
            ("21,21", "`21` and `21` overlap"),
            ("50000-50100,50050", "`50000-50100` and `50050` overlap"),
            ("50050, 50000-50100", "`50050` and `50000-50100` overlap"),
            ("10-20,1,15-30", "`10-20` and `15-30` overlap"),
        ];
        for (input, wanted) in cases {
            let err = input.parse::<PortSpec>().unwrap_err().to_string();
            assert!(err.contains(wanted), "{input:?}: got {err:?}");
        }
    }

    #[test]
    fn deserializes_from_string_or_number() {
        let s: PortSpec = serde_json::from_str("\"21, 50000-50001\"").unwrap();
        assert_eq!(s.to_string(), "21,50000-50001");
        let s: PortSpec = serde_saphyr::from_str("2121").unwrap();
        assert_eq!(s.to_string(), "2121");
        let s: PortSpec = serde_saphyr::from_str("\"50000-50100\"").unwrap();
        assert_eq!(s.len(), 101);
        let err = serde_json::from_str::<PortSpec>("\"0\"").unwrap_err();
        assert!(err.to_string().contains("port 0"), "{err}");
        assert!(serde_json::from_str::<PortSpec>("-3").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = s.parse::<PortSpec>();
        }

        #[test]
        fn specish_strings_round_trip_when_valid(s in "[0-9 ,-]{0,30}") {
            if let Ok(spec) = s.parse::<PortSpec>() {
                prop_assert_eq!(spec.to_string().parse::<PortSpec>().unwrap(), spec);
            }
        }

        #[test]
        fn display_round_trips(raw in proptest::collection::vec((1u16.., 0u16..300), 1..20)) {
            // Turn random (start, width) pairs into disjoint items, then write them
            // back to front with stray spaces: order and spacing must not matter.
            let mut raw = raw;
            raw.sort_unstable();
            let mut items = Vec::new();
            let mut next_free = 1u32;
            for (start, width) in raw {
                let (low, high) = (u32::from(start), (u32::from(start) + u32::from(width)).min(65535));
                if low >= next_free {
                    items.push((low as u16, high as u16));
                    next_free = high + 1;
                }
            }
            let text = items
                .iter()
                .rev()
                .map(|&(l, h)| if l == h { format!(" {l}") } else { format!("{l} - {h} ") })
                .collect::<Vec<_>>()
                .join(",");
            let spec: PortSpec = text.parse().unwrap();
            prop_assert!(spec.iter().eq(items.iter().flat_map(|&(l, h)| l..=h)));
            prop_assert_eq!(spec.len(), spec.iter().count());
            let again: PortSpec = spec.to_string().parse().unwrap();
            prop_assert_eq!(again.to_string(), spec.to_string());
            prop_assert_eq!(again, spec);
        }
    }
}
