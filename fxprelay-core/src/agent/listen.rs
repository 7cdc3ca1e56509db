//! Active mode toward a server inside, the agent's decisions: whether it may listen for a
//! server the edge names, on which address, for how long, how many ports at once, and
//! whether a connection to such a port is the server's.
//!
//! The agent listens only on these per-transfer ports: an ephemeral port (the kernel
//! picks it), on the address its kernel would use to reach the server (the address the
//! server sees as its FTP client, which servers' `PORT` checks require), for a server
//! inside its own `allow`, for one connection from that server's address, within a time.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{Reach, Refusal};

/// Listening ports one link may hold open at once: a transfer holds one for the moment
/// between its `PORT` and the server's connection, so this is many sessions' worth, and
/// an edge that asks for more is refused rather than given the agent's port range.
pub const MAX_LISTENS: usize = 64;

/// The longest a listening port waits for its server, whatever the edge asks.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// The shortest: a server needs a round trip or two after the edge's `RETR`.
pub const MIN_WAIT: Duration = Duration::from_secs(1);

/// Intruders reported to the edge per listening port; more are refused in silence, so a
/// host inside hammering the port cannot flood the link.
pub const MAX_REPORTED: u32 = 8;

/// Why the agent will not listen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenRefusal {
    #[error("{0}")]
    Reach(Refusal),
    #[error("this agent has no address to listen on toward {server} (its route gives {local})")]
    NoAddress { server: SocketAddr, local: IpAddr },
    #[error("this agent's link already holds {MAX_LISTENS} listening ports")]
    Busy,
    #[error("request {0} already has a listening port")]
    Duplicate(u64),
}

/// Where to listen for `server`'s active-mode connection: `local` is the address the
/// agent's kernel would use toward it (a routing lookup). Only a server `reach` admits,
/// and only a specific address of the server's family: never the unspecified address,
/// which would open the port on every interface, nor a multicast or broadcast one.
/// `open` is how many listening ports the link holds now.
pub fn listen_on(
    reach: &Reach,
    server: SocketAddr,
    local: IpAddr,
    open: usize,
) -> Result<SocketAddr, ListenRefusal> {
    if open >= MAX_LISTENS {
        return Err(ListenRefusal::Busy);
    }
    let host = server.ip().to_canonical().to_string();
    reach
        .admits(&host, server, &[])
        .map_err(ListenRefusal::Reach)?;
    let ip = local.to_canonical();
    let unusable = match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    };
    let same_family = ip.is_ipv4() == server.ip().to_canonical().is_ipv4();
    if unusable || !same_family {
        return Err(ListenRefusal::NoAddress { server, local });
    }
    Ok(SocketAddr::new(ip, 0))
}

/// How long a listening port waits: what the edge asked, within [`MIN_WAIT`] and
/// [`MAX_WAIT`].
pub fn wait(asked_ms: u64) -> Duration {
    Duration::from_millis(asked_ms).clamp(MIN_WAIT, MAX_WAIT)
}

/// One listening port's guard: only the server it was opened for gets in.
#[derive(Debug, Clone)]
pub struct Expected {
    server: IpAddr,
    refused: u32,
}

/// What to do with a connection to the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The server: this is the transfer's connection (the port takes no other).
    Accept,
    /// Someone else (port theft): close it and keep waiting; `report` to the edge while
    /// under [`MAX_REPORTED`].
    Refuse { report: bool },
}

impl Expected {
    /// A port for connections from `server` (its control address, as the agent reached
    /// it; its data connection comes from the same host).
    pub fn new(server: SocketAddr) -> Expected {
        Expected {
            server: server.ip().to_canonical(),
            refused: 0,
        }
    }

    /// Judges a connection from `peer`.
    pub fn judge(&mut self, peer: SocketAddr) -> Verdict {
        if peer.ip().to_canonical() == self.server {
            return Verdict::Accept;
        }
        self.refused = self.refused.saturating_add(1);
        Verdict::Refuse {
            report: self.refused <= MAX_REPORTED,
        }
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u32 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reach(entries: &[&str]) -> Reach {
        Reach::new(serde_json::from_value(serde_json::json!(entries)).unwrap())
    }

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn listens_only_for_servers_inside_allow_on_a_specific_address() {
        let r = reach(&["10.0.0.0/24"]);
        let local: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(
            listen_on(&r, at("10.0.0.5:21"), local, 0),
            Ok(at("10.0.0.9:0"))
        );
        // A server the edge may not reach: no port for it either.
        assert!(matches!(
            listen_on(&r, at("10.0.1.5:21"), local, 0),
            Err(ListenRefusal::Reach(Refusal::Outside(_)))
        ));
        for bad in ["0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "fe80::1"] {
            let r = listen_on(&r, at("10.0.0.5:21"), bad.parse().unwrap(), 0);
            assert!(
                matches!(r, Err(ListenRefusal::NoAddress { .. })),
                "{bad}: {r:?}"
            );
        }
        // IPv4-mapped addresses are the IPv4 ones.
        assert_eq!(
            listen_on(
                &r,
                at("[::ffff:10.0.0.5]:21"),
                "::ffff:10.0.0.9".parse().unwrap(),
                3
            ),
            Ok(at("10.0.0.9:0"))
        );
        let v6 = reach(&["2001:db8::/64"]);
        assert_eq!(
            listen_on(
                &v6,
                at("[2001:db8::5]:21"),
                "2001:db8::9".parse().unwrap(),
                0
            ),
            Ok(at("[2001:db8::9]:0"))
        );
        assert_eq!(
            listen_on(&r, at("10.0.0.5:21"), local, MAX_LISTENS),
            Err(ListenRefusal::Busy)
        );
    }

    #[test]
    fn the_wait_is_what_the_edge_asked_within_bounds() {
        assert_eq!(wait(30_000), Duration::from_secs(30));
        assert_eq!(wait(0), MIN_WAIT);
        assert_eq!(wait(u64::MAX), MAX_WAIT);
    }

    #[test]
    fn only_the_server_gets_in_and_intruders_are_reported_a_few_times() {
        let mut e = Expected::new(at("10.0.0.5:21"));
        for i in 1..=MAX_REPORTED + 3 {
            assert_eq!(
                e.judge(at("10.0.0.66:4000")),
                Verdict::Refuse {
                    report: i <= MAX_REPORTED
                }
            );
        }
        assert_eq!(e.refused(), MAX_REPORTED + 3);
        // The server's data connection comes from another port (20, or any).
        assert_eq!(e.judge(at("10.0.0.5:20")), Verdict::Accept);
        assert_eq!(e.judge(at("[::ffff:10.0.0.5]:5000")), Verdict::Accept);
    }

    proptest! {
        #[test]
        fn judging_never_panics_and_accepts_exactly_the_server(
            server in any::<[u8; 4]>(),
            peers in proptest::collection::vec((any::<[u8; 4]>(), any::<u16>()), 0..50),
        ) {
            let server = SocketAddr::from((server, 21));
            let mut e = Expected::new(server);
            for (ip, port) in peers {
                let peer = SocketAddr::from((ip, port));
                let v = e.judge(peer);
                prop_assert_eq!(v == Verdict::Accept, peer.ip() == server.ip());
            }
        }

        #[test]
        fn listen_on_never_panics_nor_opens_the_unspecified_address(
            server in any::<[u8; 16]>(),
            local in any::<[u8; 16]>(),
            v4 in any::<bool>(),
            open in 0usize..100,
        ) {
            let (server, local): (IpAddr, IpAddr) = if v4 {
                (IpAddr::from([server[0], server[1], server[2], server[3]]),
                 IpAddr::from([local[0], local[1], local[2], local[3]]))
            } else {
                (IpAddr::from(server), IpAddr::from(local))
            };
            let r = reach(&["0.0.0.0/0", "::/0"]);
            if let Ok(bind) = listen_on(&r, SocketAddr::new(server, 21), local, open) {
                prop_assert!(!bind.ip().is_unspecified());
                prop_assert_eq!(bind.port(), 0);
                prop_assert!(open < MAX_LISTENS);
            }
        }
    }
}
