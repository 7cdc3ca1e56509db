//! Rewriting policy: pure decisions over parsed messages and the session's addresses.
//!
//! The session hands in a reply or a command plus what it knows (the address it used to
//! reach the upstream, the address that should replace a client's private one) and gets
//! back what to send. No I/O happens here, so every rule is unit-tested.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::net::HostName;
use crate::proto::addr::{self, AddrError};
use crate::proto::command::Command;
use crate::proto::reply::Reply;

/// When to replace an address (`nat.passive` for `227`/`228`, `nat.active` for
/// `PORT`/`EPRT`/`LPRT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NatMode {
    /// Leave every address alone.
    Never,
    /// Replace every address.
    Always,
    /// Replace only a private/unroutable address, and only when the other side is not
    /// private itself (then both are on the same network and the address works).
    #[default]
    Auto,
}

/// The address ranges `auto` treats as private or unroutable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateRanges(Vec<IpNet>);

impl PrivateRanges {
    pub fn new(ranges: Vec<IpNet>) -> Self {
        PrivateRanges(ranges)
    }

    /// The ranges, as configured (or the built-in set).
    pub fn ranges(&self) -> &[IpNet] {
        &self.0
    }

    /// Whether `ip` is in one of the ranges (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

impl Default for PrivateRanges {
    /// RFC 1918, CGNAT (100.64/10), link-local, loopback, "this network" (0/8), and their
    /// IPv6 counterparts (ULA, link-local, loopback, unspecified).
    fn default() -> Self {
        let nets = [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "169.254.0.0/16",
            "127.0.0.0/8",
            "0.0.0.0/8",
            "fc00::/7",
            "fe80::/10",
            "::1/128",
            "::/128",
        ];
        PrivateRanges(
            nets.iter()
                .map(|n| n.parse().expect("valid CIDR"))
                .collect(),
        )
    }
}

/// A listener's NAT settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatPolicy {
    pub passive: NatMode,
    pub active: NatMode,
    /// Replaces a client's private `PORT` address; `None` means "the client's observed
    /// control-connection address".
    pub client_address: Option<HostName>,
    pub private: PrivateRanges,
}

/// Why an address was replaced (the `reason` label of `fxprelay_rewrites_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `nat.*: always`.
    Always,
    /// `nat.*: auto` and the address was private while the other side was not.
    Private,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Always => "always",
            Reason::Private => "private",
        }
    }
}

/// Which message carried the address (the `kind` label of `fxprelay_rewrites_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pasv,
    Lpsv,
    Port,
    Eprt,
    Lprt,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pasv => "pasv",
            Kind::Lpsv => "lpsv",
            Kind::Port => "port",
            Kind::Eprt => "eprt",
            Kind::Lprt => "lprt",
        }
    }
}

/// Decides whether an address announced by one side should be replaced.
///
/// `announced` is the address in the message; `other_side` is the address of the peer
/// that will have to reach it (for a passive reply: the upstream's control address, which
/// the client reaches; for `PORT`: the upstream, which has to connect back).
pub fn should_replace(
    mode: NatMode,
    announced: IpAddr,
    other_side: IpAddr,
    private: &PrivateRanges,
) -> Option<Reason> {
    match mode {
        NatMode::Never => None,
        NatMode::Always => Some(Reason::Always),
        NatMode::Auto => (private.contains(announced) && !private.contains(other_side))
            .then_some(Reason::Private),
    }
}

/// What to do with one complete upstream reply.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyAction {
    /// Send it on unchanged.
    Forward,
    /// Send these bytes instead.
    Rewrite {
        bytes: Vec<u8>,
        kind: Kind,
        reason: Reason,
        from: SocketAddr,
        to: SocketAddr,
    },
    /// The reply should carry an address but it cannot be parsed: the client would be
    /// sent somewhere invalid, so it gets this error reply instead.
    Malformed { kind: Kind, error: AddrError },
}

/// Applies `nat.passive` to a `227`/`228` reply. `upstream` is the address the proxy used
/// to reach the upstream's control port: the one address known to reach the server.
pub fn rewrite_passive_reply(reply: &Reply, policy: &NatPolicy, upstream: IpAddr) -> ReplyAction {
    if policy.passive == NatMode::Never {
        return ReplyAction::Forward;
    }
    let upstream = upstream.to_canonical();
    match reply.code {
        227 => match addr::parse_pasv_reply(&reply.raw) {
            Err(error) => ReplyAction::Malformed {
                kind: Kind::Pasv,
                error,
            },
            Ok((old, _)) => {
                let IpAddr::V4(up4) = upstream else {
                    // A 227 cannot carry an IPv6 address; the client must use EPSV.
                    return ReplyAction::Forward;
                };
                let new = SocketAddrV4::new(up4, old.port());
                decide(
                    policy,
                    IpAddr::V4(*old.ip()),
                    upstream,
                    Kind::Pasv,
                    |reason| {
                        addr::rewrite_pasv_reply(&reply.raw, new).map(|bytes| {
                            ReplyAction::Rewrite {
                                bytes,
                                kind: Kind::Pasv,
                                reason,
                                from: old.into(),
                                to: new.into(),
                            }
                        })
                    },
                )
            }
        },
        228 => match addr::parse_lpsv_reply(&reply.raw) {
            Err(error) => ReplyAction::Malformed {
                kind: Kind::Lpsv,
                error,
            },
            Ok((old, _)) => {
                let new = SocketAddr::new(upstream, old.port());
                decide(policy, old.ip(), upstream, Kind::Lpsv, |reason| {
                    addr::rewrite_lpsv_reply(&reply.raw, new).map(|bytes| ReplyAction::Rewrite {
                        bytes,
                        kind: Kind::Lpsv,
                        reason,
                        from: old,
                        to: new,
                    })
                })
            }
        },
        _ => ReplyAction::Forward,
    }
}

fn decide(
    policy: &NatPolicy,
    announced: IpAddr,
    upstream: IpAddr,
    kind: Kind,
    rewrite: impl FnOnce(Reason) -> Result<ReplyAction, AddrError>,
) -> ReplyAction {
    if announced == upstream {
        return ReplyAction::Forward;
    }
    match should_replace(policy.passive, announced, upstream, &policy.private) {
        None => ReplyAction::Forward,
        Some(reason) => {
            rewrite(reason).unwrap_or_else(|error| ReplyAction::Malformed { kind, error })
        }
    }
}

/// The data address a client announced with `PORT`, `EPRT` or `LPRT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveTarget {
    pub kind: Kind,
    pub addr: SocketAddr,
}

/// Parses the address of an active-mode command; `None` for every other command.
pub fn active_target(cmd: &Command<'_>) -> Option<Result<ActiveTarget, AddrError>> {
    let kind = match cmd.verb.as_str() {
        "PORT" => Kind::Port,
        "EPRT" => Kind::Eprt,
        "LPRT" => Kind::Lprt,
        _ => return None,
    };
    let addr = match kind {
        Kind::Port => addr::parse_port_args(cmd.args).map(SocketAddr::V4),
        Kind::Eprt => addr::parse_eprt_args(cmd.args),
        _ => addr::parse_lprt_args(cmd.args),
    };
    Some(addr.map(|addr| ActiveTarget { kind, addr }))
}

/// Whether `nat.active` wants the client's address replaced, given the upstream address.
pub fn active_needs_rewrite(
    target: &ActiveTarget,
    policy: &NatPolicy,
    upstream: IpAddr,
) -> Option<Reason> {
    should_replace(
        policy.active,
        target.addr.ip(),
        upstream.to_canonical(),
        &policy.private,
    )
}

/// The command to send instead, announcing `ip` with the client's port. `None` when the
/// command cannot carry that address family (`PORT` is IPv4 only) or nothing changes.
pub fn rewrite_active(target: &ActiveTarget, ip: IpAddr) -> Option<Vec<u8>> {
    let ip = ip.to_canonical();
    if ip == target.addr.ip().to_canonical() {
        return None;
    }
    let new = SocketAddr::new(ip, target.addr.port());
    match (target.kind, new) {
        (Kind::Port, SocketAddr::V4(v4)) => Some(addr::format_port_command(v4)),
        (Kind::Port, SocketAddr::V6(_)) => None,
        (Kind::Eprt, _) => Some(addr::format_eprt_command(new)),
        (Kind::Lprt, _) => Some(addr::format_lprt_command(new)),
        _ => None,
    }
}

/// Picks from resolved addresses the one a command of `kind` can carry, preferring the
/// family the client used.
pub fn pick_replacement(kind: Kind, client_used: IpAddr, candidates: &[IpAddr]) -> Option<IpAddr> {
    pick_family(candidates, kind == Kind::Port, client_used)
}

/// The address among `candidates` that a message can carry: the first IPv4 one when
/// `need_v4` (`PORT`, `227`), else the first of `prefer`'s family, else the first.
pub fn pick_family(candidates: &[IpAddr], need_v4: bool, prefer: IpAddr) -> Option<IpAddr> {
    if need_v4 {
        return candidates.iter().find(|ip| ip.is_ipv4()).copied();
    }
    candidates
        .iter()
        .find(|ip| ip.is_ipv4() == prefer.is_ipv4())
        .or_else(|| candidates.first())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::command::parse_command;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(passive: NatMode, active: NatMode) -> NatPolicy {
        NatPolicy {
            passive,
            active,
            ..NatPolicy::default()
        }
    }

    fn reply(raw: &[u8]) -> Reply {
        let code = std::str::from_utf8(&raw[..3]).unwrap().parse().unwrap();
        Reply {
            code,
            raw: raw.to_vec(),
        }
    }

    #[test]
    fn default_private_ranges() {
        let p = PrivateRanges::default();
        for a in [
            "10.1.1.1",
            "172.31.0.1",
            "192.168.1.20",
            "100.64.0.1",
            "169.254.1.1",
            "127.0.0.99",
            "0.0.0.0",
            "fd00::1",
            "fe80::1",
            "::1",
            "::",
            "::ffff:10.0.0.1",
        ] {
            assert!(p.contains(ip(a)), "{a}");
        }
        for a in [
            "198.18.0.1",
            "8.8.8.8",
            "172.32.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!p.contains(ip(a)), "{a}");
        }
    }

    #[test]
    fn should_replace_matrix() {
        let p = PrivateRanges::default();
        let (private, public) = (ip("10.99.0.2"), ip("198.18.0.2"));
        assert_eq!(should_replace(NatMode::Never, private, public, &p), None);
        assert_eq!(
            should_replace(NatMode::Always, public, public, &p),
            Some(Reason::Always)
        );
        assert_eq!(
            should_replace(NatMode::Auto, private, public, &p),
            Some(Reason::Private)
        );
        assert_eq!(should_replace(NatMode::Auto, public, public, &p), None);
        // Both private: the same network, the address works as it is.
        assert_eq!(
            should_replace(NatMode::Auto, private, ip("10.0.0.1"), &p),
            None
        );
    }

    #[test]
    fn always_rewrites_227_keeping_port_and_text() {
        let r = reply(b"227 Entering Passive Mode (127,0,0,99,117,49).\r\n");
        let action = rewrite_passive_reply(
            &r,
            &policy(NatMode::Always, NatMode::Never),
            ip("127.0.0.5"),
        );
        let ReplyAction::Rewrite {
            bytes,
            kind,
            reason,
            from,
            to,
        } = action
        else {
            panic!("{action:?}")
        };
        assert_eq!(bytes, b"227 Entering Passive Mode (127,0,0,5,117,49).\r\n");
        assert_eq!((kind, reason), (Kind::Pasv, Reason::Always));
        assert_eq!(from, "127.0.0.99:30001".parse().unwrap());
        assert_eq!(to, "127.0.0.5:30001".parse().unwrap());
    }

    #[test]
    fn auto_rewrites_private_behind_public_only() {
        let r = reply(b"227 Entering Passive Mode (10,99,0,2,117,49)\r\n");
        let p = policy(NatMode::Auto, NatMode::Never);
        let a = rewrite_passive_reply(&r, &p, ip("198.18.0.2"));
        assert!(
            matches!(
                a,
                ReplyAction::Rewrite {
                    reason: Reason::Private,
                    ..
                }
            ),
            "{a:?}"
        );
        // Upstream is itself private: same network, leave alone.
        assert_eq!(
            rewrite_passive_reply(&r, &p, ip("10.99.0.2")),
            ReplyAction::Forward
        );
        assert_eq!(
            rewrite_passive_reply(&r, &p, ip("10.0.0.1")),
            ReplyAction::Forward
        );
    }

    #[test]
    fn never_and_other_codes_forward() {
        let r = reply(b"227 Entering Passive Mode (10,99,0,2,117,49)\r\n");
        let p = policy(NatMode::Never, NatMode::Never);
        assert_eq!(
            rewrite_passive_reply(&r, &p, ip("198.18.0.2")),
            ReplyAction::Forward
        );
        let r = reply(b"229 Entering Extended Passive Mode (|||6446|)\r\n");
        let p = policy(NatMode::Always, NatMode::Never);
        assert_eq!(
            rewrite_passive_reply(&r, &p, ip("198.18.0.2")),
            ReplyAction::Forward
        );
    }

    #[test]
    fn same_address_is_not_a_rewrite() {
        let r = reply(b"227 Entering Passive Mode (198,18,0,2,117,49)\r\n");
        let p = policy(NatMode::Always, NatMode::Never);
        assert_eq!(
            rewrite_passive_reply(&r, &p, ip("198.18.0.2")),
            ReplyAction::Forward
        );
    }

    #[test]
    fn malformed_227_is_reported() {
        let r = reply(b"227 Entering Passive Mode (10,99,0,300,117,49)\r\n");
        let p = policy(NatMode::Auto, NatMode::Never);
        assert!(matches!(
            rewrite_passive_reply(&r, &p, ip("198.18.0.2")),
            ReplyAction::Malformed {
                kind: Kind::Pasv,
                ..
            }
        ));
    }

    #[test]
    fn ipv6_upstream_leaves_227_alone_but_rewrites_228() {
        let p = policy(NatMode::Always, NatMode::Never);
        let r = reply(b"227 Entering Passive Mode (10,99,0,2,117,49)\r\n");
        assert_eq!(
            rewrite_passive_reply(&r, &p, ip("2001:db8::5")),
            ReplyAction::Forward
        );
        let r = reply(b"228 Entering Long Passive Mode (4,4,10,99,0,2,2,117,49)\r\n");
        let a = rewrite_passive_reply(&r, &p, ip("2001:db8::5"));
        let ReplyAction::Rewrite { to, kind, .. } = a else {
            panic!("{a:?}")
        };
        assert_eq!(kind, Kind::Lpsv);
        assert_eq!(to, "[2001:db8::5]:30001".parse().unwrap());
    }

    #[test]
    fn mapped_upstream_counts_as_ipv4() {
        let r = reply(b"227 Entering Passive Mode (10,99,0,2,117,49)\r\n");
        let p = policy(NatMode::Auto, NatMode::Never);
        let a = rewrite_passive_reply(&r, &p, ip("::ffff:198.18.0.2"));
        assert!(matches!(a, ReplyAction::Rewrite { .. }), "{a:?}");
    }

    #[test]
    fn active_commands() {
        let c = parse_command(b"PORT 192,168,1,5,4,1\r\n").unwrap();
        let t = active_target(&c).unwrap().unwrap();
        assert_eq!(t.kind, Kind::Port);
        assert_eq!(t.addr, "192.168.1.5:1025".parse().unwrap());
        let p = policy(NatMode::Never, NatMode::Auto);
        assert_eq!(
            active_needs_rewrite(&t, &p, ip("198.18.0.2")),
            Some(Reason::Private)
        );
        assert_eq!(active_needs_rewrite(&t, &p, ip("192.168.1.10")), None);
        assert_eq!(
            rewrite_active(&t, ip("203.0.113.7")).unwrap(),
            b"PORT 203,0,113,7,4,1\r\n"
        );
        assert_eq!(rewrite_active(&t, ip("192.168.1.5")), None);
        assert_eq!(rewrite_active(&t, ip("2001:db8::1")), None);

        let c = parse_command(b"EPRT |1|10.0.0.5|5282|\r\n").unwrap();
        let t = active_target(&c).unwrap().unwrap();
        assert_eq!(
            rewrite_active(&t, ip("2001:db8::1")).unwrap(),
            b"EPRT |2|2001:db8::1|5282|\r\n"
        );

        let c = parse_command(b"LPRT 4,4,10,0,0,5,2,20,162\r\n").unwrap();
        let t = active_target(&c).unwrap().unwrap();
        assert_eq!(t.addr, "10.0.0.5:5282".parse().unwrap());
        assert!(rewrite_active(&t, ip("203.0.113.7")).is_some());

        assert!(active_target(&parse_command(b"RETR x\r\n").unwrap()).is_none());
        assert!(
            active_target(&parse_command(b"PORT 1,2,3\r\n").unwrap())
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn replacement_family() {
        let cands = [ip("2001:db8::1"), ip("203.0.113.7")];
        assert_eq!(
            pick_replacement(Kind::Port, ip("10.0.0.1"), &cands),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            pick_replacement(Kind::Eprt, ip("fd00::1"), &cands),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            pick_replacement(Kind::Port, ip("10.0.0.1"), &cands[..1]),
            None
        );
    }
}
