//! Who is on the other end of a connection to a leased data port, and whether it is the
//! client the port was leased for.
//!
//! Behind a load balancer that forwards the data port range (many instances behind one
//! HAProxy), every data connection arrives from the balancer's address; the client is
//! named by the PROXY header the balancer sends first. So a connection from a
//! `proxy_protocol.trusted` address must start with a header, exactly as on the control
//! port (HAProxy's `accept-proxy`), and the port-theft check compares the address the
//! header carries. Anyone else is judged by its socket address, as without a balancer:
//! a header from an untrusted peer is never read (on an upload it is the file's first
//! bytes, which only the client can choose), so a balancer missing from `trusted` shows
//! up as port theft from the balancer's address.

use std::net::IpAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::ProxyProtocol;
use crate::metrics::Rejection;
use crate::proxy_protocol::{self, HeaderError};

/// Where a data connection comes from, as far as the proxy can tell.
#[derive(Debug)]
pub enum Origin {
    /// Connected directly: its socket address is all there is.
    Direct(IpAddr),
    /// Through a trusted balancer whose PROXY header named `client`.
    Proxied { balancer: IpAddr, client: IpAddr },
    /// A trusted balancer's own connection (`LOCAL`/`UNKNOWN` header: a health check).
    BalancerOwn(IpAddr),
    /// A trusted balancer's connection without a valid header in time.
    NoHeader {
        balancer: IpAddr,
        error: HeaderError,
    },
}

/// What to do with a data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The expected client: this is the transfer's connection.
    Accept,
    /// Close it, count it under this reason, and keep waiting for the client.
    Refuse(Rejection),
    /// Close it quietly (a balancer probing the port) and keep waiting.
    Ignore,
}

/// Whether a peer's connection must start with a PROXY header: only trusted balancers.
pub fn needs_header(peer: IpAddr, balancers: Option<&ProxyProtocol>) -> bool {
    balancers.is_some_and(|b| b.trusts(peer))
}

/// The port-theft check: only the client the port was leased for may use it.
pub fn judge(origin: &Origin, expect: IpAddr) -> Verdict {
    let is_client = |ip: &IpAddr| ip.to_canonical() == expect.to_canonical();
    match origin {
        Origin::Direct(ip) | Origin::Proxied { client: ip, .. } if is_client(ip) => Verdict::Accept,
        Origin::Direct(_) | Origin::Proxied { .. } => Verdict::Refuse(Rejection::PortTheft),
        Origin::BalancerOwn(_) => Verdict::Ignore,
        Origin::NoHeader { .. } => Verdict::Refuse(Rejection::ProxyHeader),
    }
}

/// Reads a trusted balancer's PROXY header (nothing past it) within `within`.
pub async fn through_balancer(stream: &mut TcpStream, peer: IpAddr, within: Duration) -> Origin {
    match proxy_protocol::read_header_exact(stream, within).await {
        Ok(Some(client)) => Origin::Proxied {
            balancer: peer,
            client: client.ip(),
        },
        Ok(None) => Origin::BalancerOwn(peer),
        Err(error) => Origin::NoHeader {
            balancer: peer,
            error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn balancers() -> ProxyProtocol {
        ProxyProtocol {
            trusted: vec!["10.0.0.5/32".parse().unwrap(), "fd00::/8".parse().unwrap()],
        }
    }

    #[test]
    fn only_trusted_balancers_must_send_a_header() {
        let b = balancers();
        assert!(needs_header(ip("10.0.0.5"), Some(&b)));
        assert!(needs_header(ip("::ffff:10.0.0.5"), Some(&b)), "IPv4-mapped");
        assert!(needs_header(ip("fd00::7"), Some(&b)));
        assert!(!needs_header(ip("10.0.0.6"), Some(&b)));
        assert!(
            !needs_header(ip("10.0.0.5"), None),
            "no proxy_protocol: no header"
        );
    }

    #[test]
    fn the_header_names_the_client_the_theft_check_compares() {
        let client = ip("198.51.100.7");
        let balancer = ip("10.0.0.5");
        let via = |c: &str| Origin::Proxied {
            balancer,
            client: ip(c),
        };
        assert_eq!(judge(&via("198.51.100.7"), client), Verdict::Accept);
        assert_eq!(
            judge(&via("::ffff:198.51.100.7"), client),
            Verdict::Accept,
            "the same address, IPv4-mapped"
        );
        assert_eq!(
            judge(&via("198.51.100.8"), client),
            Verdict::Refuse(Rejection::PortTheft),
            "another client through the same balancer"
        );
        // The balancer's own address is not the client's, header or not.
        assert_eq!(
            judge(&Origin::Direct(balancer), client),
            Verdict::Refuse(Rejection::PortTheft)
        );
    }

    #[test]
    fn direct_connections_are_judged_by_their_address() {
        let client = ip("198.51.100.7");
        assert_eq!(judge(&Origin::Direct(client), client), Verdict::Accept);
        assert_eq!(
            judge(&Origin::Direct(ip("198.51.100.9")), client),
            Verdict::Refuse(Rejection::PortTheft)
        );
    }

    #[test]
    fn a_balancer_without_a_header_is_refused_and_its_probes_ignored() {
        let balancer = ip("10.0.0.5");
        let client = ip("198.51.100.7");
        let none = Origin::NoHeader {
            balancer,
            error: HeaderError::Timeout(Duration::from_secs(1)),
        };
        assert_eq!(
            judge(&none, client),
            Verdict::Refuse(Rejection::ProxyHeader)
        );
        let garbage = Origin::NoHeader {
            balancer,
            error: HeaderError::Invalid("not a PROXY header".into()),
        };
        assert_eq!(
            judge(&garbage, client),
            Verdict::Refuse(Rejection::ProxyHeader)
        );
        assert_eq!(
            judge(&Origin::BalancerOwn(balancer), client),
            Verdict::Ignore
        );
    }
}
