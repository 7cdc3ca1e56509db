//! The proxy's own sockets, so that nothing it connects to on someone else's say-so (a
//! forward or transparent target, a server's passive address, an FXP URL, a client's
//! `PORT`) is the proxy itself: aimed at its admin endpoint, a connection would carry a
//! client's bytes into the API (blind SSRF); aimed at a listener or a data port, it loops.

use std::net::{IpAddr, SocketAddr};

use super::ports::PortSpec;

/// Which of the proxy's own sockets a target would reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnSocket {
    /// An FTP listener or the admin endpoint.
    Listener,
    /// A port of `data.ports` on an address the proxy leases data ports on.
    DataPort,
}

/// Why a target was refused: it is this proxy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{addr} is this proxy itself ({})", match .socket {
    OwnSocket::Listener => "one of its listeners or its admin endpoint",
    OwnSocket::DataPort => "one of its data ports",
})]
pub struct SelfTarget {
    pub addr: SocketAddr,
    pub socket: OwnSocket,
}

/// Every socket this proxy listens on or may lease, and the machine's own addresses
/// (which a wildcard bind covers). Built once from the bound sockets and the
/// configuration; checking is pure.
#[derive(Debug, Clone, Default)]
pub struct OwnSockets {
    /// Listener and admin binds as bound (a wildcard IP covers every local address).
    binds: Vec<SocketAddr>,
    /// `data.ports` (none in a default, empty set).
    data_ports: Option<PortSpec>,
    /// `data.bind`: where data ports are leased; else on the address a client reached
    /// or the proxy's side of an upstream connection.
    data_bind: Option<IpAddr>,
    /// The machine's interface addresses, besides loopback (which is always local).
    local: Vec<IpAddr>,
}

impl OwnSockets {
    pub fn new(
        binds: Vec<SocketAddr>,
        data_ports: PortSpec,
        data_bind: Option<IpAddr>,
        local: Vec<IpAddr>,
    ) -> OwnSockets {
        OwnSockets {
            binds,
            data_ports: Some(data_ports),
            data_bind: data_bind.map(|ip| ip.to_canonical()),
            local: local.into_iter().map(|ip| ip.to_canonical()).collect(),
        }
    }

    /// Refuses `target` when it is one of the proxy's own sockets. `session_local` are
    /// addresses known to be this machine's for the caller (the proxy's side of its
    /// connections: a session's client and upstream legs), in case the interface list
    /// missed one.
    pub fn check(&self, target: SocketAddr, session_local: &[IpAddr]) -> Result<(), SelfTarget> {
        let ip = target.ip().to_canonical();
        let port = target.port();
        let is_local = |a: IpAddr| {
            a.is_loopback()
                || a.is_unspecified()
                || self.local.contains(&a)
                || session_local.iter().any(|l| l.to_canonical() == a)
        };
        // A socket bound to the wildcard answers on every local address, and a
        // connection to `0.0.0.0` or `::` reaches the local host.
        let reaches = |bind: IpAddr| {
            let bind = bind.to_canonical();
            bind == ip
                || (bind.is_unspecified() && is_local(ip))
                || (ip.is_unspecified() && is_local(bind))
        };
        let refuse = |socket| {
            Err(SelfTarget {
                addr: target,
                socket,
            })
        };
        if self
            .binds
            .iter()
            .any(|b| b.port() == port && reaches(b.ip()))
        {
            return refuse(OwnSocket::Listener);
        }
        if self.data_ports.as_ref().is_some_and(|s| s.contains(port)) {
            let leased_here = match self.data_bind {
                Some(bind) => reaches(bind),
                None => {
                    self.binds.iter().any(|b| reaches(b.ip()))
                        || session_local.iter().any(|l| reaches(*l))
                }
            };
            if leased_here {
                return refuse(OwnSocket::DataPort);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn own(binds: &[&str], data_bind: Option<&str>) -> OwnSockets {
        OwnSockets::new(
            binds.iter().map(|b| sa(b)).collect(),
            "50000-50099".parse().unwrap(),
            data_bind.map(ip),
            vec![ip("192.0.2.10")],
        )
    }

    #[test]
    fn a_specific_bind_is_refused_exactly() {
        let o = own(&["127.0.0.1:9464", "127.0.0.5:2121"], None);
        let e = o.check(sa("127.0.0.1:9464"), &[]).unwrap_err();
        assert_eq!(e.socket, OwnSocket::Listener);
        assert_eq!(
            e.to_string(),
            "127.0.0.1:9464 is this proxy itself (one of its listeners or its admin endpoint)"
        );
        assert!(o.check(sa("127.0.0.5:2121"), &[]).is_err());
        // Mapped forms are the same address.
        assert!(o.check(sa("[::ffff:127.0.0.1]:9464"), &[]).is_err());
        // Another address, or another port, is someone else.
        assert!(o.check(sa("127.0.0.2:9464"), &[]).is_ok());
        assert!(o.check(sa("127.0.0.1:21"), &[]).is_ok());
        assert!(o.check(sa("198.51.100.1:9464"), &[]).is_ok());
        // `0.0.0.0` reaches the local host.
        assert!(o.check(sa("0.0.0.0:9464"), &[]).is_err());
    }

    #[test]
    fn a_wildcard_bind_covers_every_local_address() {
        let o = own(&["0.0.0.0:9464", "[::]:2121"], None);
        for local in ["127.0.0.1:9464", "127.9.9.9:9464", "192.0.2.10:9464"] {
            assert!(o.check(sa(local), &[]).is_err(), "{local}");
        }
        assert!(o.check(sa("[::1]:2121"), &[]).is_err());
        assert!(o.check(sa("192.0.2.10:2121"), &[]).is_err());
        // An address the interface list missed but a connection showed is local too.
        assert!(o.check(sa("203.0.113.4:9464"), &[]).is_ok());
        assert!(
            o.check(sa("203.0.113.4:9464"), &[ip("203.0.113.4")])
                .is_err()
        );
    }

    #[test]
    fn data_ports_are_refused_where_the_proxy_leases_them() {
        // data.bind set: there only.
        let o = own(&["127.0.0.5:2121"], Some("127.0.0.7"));
        let e = o.check(sa("127.0.0.7:50010"), &[]).unwrap_err();
        assert_eq!(e.socket, OwnSocket::DataPort);
        assert!(o.check(sa("127.0.0.5:50010"), &[]).is_ok());
        assert!(o.check(sa("127.0.0.7:50100"), &[]).is_ok());
        // No data.bind: on the listeners' addresses and the session's own.
        let o = own(&["127.0.0.5:2121"], None);
        assert!(o.check(sa("127.0.0.5:50010"), &[]).is_err());
        assert!(o.check(sa("127.0.0.6:50010"), &[]).is_ok());
        assert!(o.check(sa("127.0.0.6:50010"), &[ip("127.0.0.6")]).is_err());
        // Behind a wildcard listener every local address has them.
        let o = own(&["0.0.0.0:2121"], None);
        assert!(o.check(sa("127.0.0.6:50010"), &[]).is_err());
        assert!(o.check(sa("198.51.100.1:50010"), &[]).is_ok());
    }
}
