//! A real NAT built from network namespaces, torn down on drop:
//!
//! ```text
//!  root namespace                router namespace                  server namespace
//!  198.18.N.1 ──veth── 198.18.N.2 (public)   10.99.N.1 ──veth── 10.99.N.2 (FTP server)
//!                      DNAT :21 and the passive range to 10.99.N.2
//!                      everything else forwarded from outside: rejected (TCP reset)
//! ```
//!
//! The root namespace gets a route to 10.99.N.0/24 via the router so that a client
//! trusting the server's private address is refused at the router at once, instead of its
//! packets leaving the machine.

use std::net::Ipv4Addr;
use std::process::Command;

/// Passive ports the router forwards to the server.
pub const PASV_PORTS: (u16, u16) = (30000, 30009);

pub struct NatLab {
    pub router_ns: String,
    pub server_ns: String,
    /// The router's public address: what clients and the proxy dial.
    pub public_ip: Ipv4Addr,
    /// The server's own address, private, announced in its 227 replies.
    pub server_ip: Ipv4Addr,
    root_if: String,
}

/// Runs a command given as one whitespace-separated string (no argument here contains a
/// space), inside namespace `ns` when given.
fn sh(ns: Option<&str>, cmd: &str) {
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = ns {
        args.extend(["ip", "netns", "exec", ns]);
    }
    args.extend(cmd.split_whitespace());
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NatLab {
    pub fn new() -> NatLab {
        // One octet both names the namespaces and picks the subnets, so parallel labs
        // (several test binaries) do not collide.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n: u8 = ((std::process::id() * 7 + k) % 200 + 20) as u8;
        let tag = format!("{}{k}", std::process::id() % 10000);
        let lab = NatLab {
            router_ns: format!("fxpr-r{tag}"),
            server_ns: format!("fxpr-s{tag}"),
            public_ip: Ipv4Addr::new(198, 18, n, 2),
            server_ip: Ipv4Addr::new(10, 99, n, 2),
            root_if: format!("fxo{tag}"),
        };
        lab.teardown();
        lab.build(n, &tag);
        lab
    }

    fn build(&self, n: u8, tag: &str) {
        let (r, s) = (Some(self.router_ns.as_str()), Some(self.server_ns.as_str()));
        let (root_if, up_if, priv_r, priv_s) = (
            &self.root_if,
            format!("fxu{tag}"),
            format!("fxp{tag}"),
            format!("fxs{tag}"),
        );
        let (public_ip, server_ip) = (self.public_ip, self.server_ip);
        let (first, last) = PASV_PORTS;
        sh(None, &format!("ip netns add {}", self.router_ns));
        sh(None, &format!("ip netns add {}", self.server_ns));
        // root <-> router
        sh(
            None,
            &format!("ip link add {root_if} type veth peer name {up_if}"),
        );
        sh(
            None,
            &format!("ip link set {up_if} netns {}", self.router_ns),
        );
        sh(None, &format!("ip addr add 198.18.{n}.1/24 dev {root_if}"));
        sh(None, &format!("ip link set {root_if} up"));
        sh(r, &format!("ip addr add {public_ip}/24 dev {up_if}"));
        sh(r, &format!("ip link set {up_if} up"));
        sh(r, "ip link set lo up");
        // router <-> server
        sh(
            r,
            &format!("ip link add {priv_r} type veth peer name {priv_s}"),
        );
        sh(r, &format!("ip link set {priv_s} netns {}", self.server_ns));
        sh(r, &format!("ip addr add 10.99.{n}.1/24 dev {priv_r}"));
        sh(r, &format!("ip link set {priv_r} up"));
        sh(s, &format!("ip addr add {server_ip}/24 dev {priv_s}"));
        sh(s, &format!("ip link set {priv_s} up"));
        sh(s, "ip link set lo up");
        sh(s, &format!("ip route add default via 10.99.{n}.1"));
        // The router NATs: the server's control port and passive range are published on
        // the public address; anything else from outside is refused at once (a reset, so a
        // client trusting the private address fails fast instead of timing out).
        sh(r, "sysctl -qw net.ipv4.ip_forward=1");
        for ports in ["21".to_string(), format!("{first}:{last}")] {
            sh(
                r,
                &format!(
                    "iptables -t nat -A PREROUTING -i {up_if} -p tcp -d {public_ip} --dport {ports} -j DNAT --to-destination {server_ip}"
                ),
            );
        }
        let not_published = format!(
            "iptables -A FORWARD -i {up_if} -m conntrack ! --ctstate DNAT,ESTABLISHED,RELATED"
        );
        sh(
            r,
            &format!("{not_published} -p tcp -j REJECT --reject-with tcp-reset"),
        );
        sh(r, &format!("{not_published} -j DROP"));
        // Root namespace: the private network is behind the router, never the default route.
        sh(
            None,
            &format!("ip route add 10.99.{n}.0/24 via {public_ip}"),
        );
    }

    fn teardown(&self) {
        remove(&[&self.server_ns, &self.router_ns], &self.root_if);
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A transparent-proxy lab, torn down on drop:
///
/// ```text
///  client ns 10.98.N.2 ──── router ns ──── server ns 10.97.N.2 (FTP server)
///                       10.98.N.1 | 10.97.N.1
///                        198.19.N.2 (admin, reachable from the root namespace 198.19.N.1)
/// ```
///
/// In the router, connections from the client side to port 21 and to the relay data range
/// are redirected (iptables `REDIRECT`) to the proxy running there; anything else the
/// client sends through the router is refused, so the client reaches the server only
/// through the proxy. The root namespace may reach the server (readiness probes).
pub struct TransparentLab {
    pub client_ns: String,
    pub router_ns: String,
    pub server_ns: String,
    pub client_ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    /// The router's address towards the root namespace (admin endpoint).
    pub router_admin_ip: Ipv4Addr,
    /// The router's address on the client side.
    pub router_client_ip: Ipv4Addr,
    root_if: String,
}

impl TransparentLab {
    /// `proxy_port` is where REDIRECT sends control connections; `data` is the relay
    /// data port range, redirected port for port.
    pub fn new(proxy_port: u16, data: (u16, u16)) -> TransparentLab {
        TransparentLab::create(proxy_port, Some(data))
    }

    /// For passthrough with `preserve_client_address`: only port 21 is redirected, the
    /// router forwards the client's data connections to the server, and (the TPROXY
    /// routing recipe) delivers the server's replies to the proxy's transparent sockets
    /// locally.
    pub fn passthrough(proxy_port: u16) -> TransparentLab {
        TransparentLab::create(proxy_port, None)
    }

    fn create(proxy_port: u16, data: Option<(u16, u16)>) -> TransparentLab {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n: u8 = ((std::process::id() * 11 + k) % 200 + 20) as u8;
        let tag = format!("{}{k}", std::process::id() % 10000);
        let lab = TransparentLab {
            client_ns: format!("fxtc{tag}"),
            router_ns: format!("fxtr{tag}"),
            server_ns: format!("fxts{tag}"),
            client_ip: Ipv4Addr::new(10, 98, n, 2),
            server_ip: Ipv4Addr::new(10, 97, n, 2),
            router_admin_ip: Ipv4Addr::new(198, 19, n, 2),
            router_client_ip: Ipv4Addr::new(10, 98, n, 1),
            root_if: format!("fto{tag}"),
        };
        lab.teardown();
        lab.build(n, &tag, proxy_port, data);
        lab
    }

    fn build(&self, n: u8, tag: &str, proxy_port: u16, data: Option<(u16, u16)>) {
        let (c, r, s) = (
            self.client_ns.as_str(),
            self.router_ns.as_str(),
            self.server_ns.as_str(),
        );
        let (cr, rc, rs, sr, ra) = (
            format!("ftc{tag}"),
            format!("ftk{tag}"),
            format!("ftq{tag}"),
            format!("fts{tag}"),
            format!("fta{tag}"),
        );
        let root_if = &self.root_if;
        for ns in [c, r, s] {
            sh(None, &format!("ip netns add {ns}"));
            sh(Some(ns), "ip link set lo up");
        }
        // root <-> router (admin and readiness probes only)
        sh(
            None,
            &format!("ip link add {root_if} type veth peer name {ra}"),
        );
        sh(None, &format!("ip link set {ra} netns {r}"));
        sh(None, &format!("ip addr add 198.19.{n}.1/24 dev {root_if}"));
        sh(None, &format!("ip link set {root_if} up"));
        sh(
            Some(r),
            &format!("ip addr add {}/24 dev {ra}", self.router_admin_ip),
        );
        sh(Some(r), &format!("ip link set {ra} up"));
        // client <-> router
        sh(
            Some(c),
            &format!("ip link add {cr} type veth peer name {rc}"),
        );
        sh(Some(c), &format!("ip link set {rc} netns {r}"));
        sh(
            Some(c),
            &format!("ip addr add {}/24 dev {cr}", self.client_ip),
        );
        sh(Some(c), &format!("ip link set {cr} up"));
        sh(Some(c), &format!("ip route add default via 10.98.{n}.1"));
        sh(Some(r), &format!("ip addr add 10.98.{n}.1/24 dev {rc}"));
        sh(Some(r), &format!("ip link set {rc} up"));
        // router <-> server
        sh(
            Some(r),
            &format!("ip link add {rs} type veth peer name {sr}"),
        );
        sh(Some(r), &format!("ip link set {sr} netns {s}"));
        sh(Some(r), &format!("ip addr add 10.97.{n}.1/24 dev {rs}"));
        sh(Some(r), &format!("ip link set {rs} up"));
        sh(
            Some(s),
            &format!("ip addr add {}/24 dev {sr}", self.server_ip),
        );
        sh(Some(s), &format!("ip link set {sr} up"));
        sh(Some(s), &format!("ip route add default via 10.97.{n}.1"));
        // The router: FTP from the client side goes to the proxy, nothing else passes.
        sh(Some(r), "sysctl -qw net.ipv4.ip_forward=1");
        let redirect = format!("iptables -t nat -A PREROUTING -i {rc} -p tcp");
        sh(
            Some(r),
            &format!("{redirect} --dport 21 -j REDIRECT --to-ports {proxy_port}"),
        );
        match data {
            // Relay: the data range goes to the proxy too; nothing else gets through.
            Some((first, last)) => {
                sh(
                    Some(r),
                    &format!("{redirect} --dport {first}:{last} -j REDIRECT"),
                );
                let reject = "-p tcp -j REJECT --reject-with tcp-reset";
                sh(Some(r), &format!("iptables -A FORWARD -i {rc} {reject}"));
                sh(Some(r), &format!("iptables -A FORWARD -i {rc} -j DROP"));
            }
            // Passthrough: forward data; replies to transparent sockets are local.
            None => {
                let mark = "-p tcp -m socket -j MARK --set-mark 1";
                sh(
                    Some(r),
                    &format!("iptables -t mangle -A PREROUTING -i {rs} {mark}"),
                );
                sh(Some(r), "ip rule add fwmark 1 lookup 100");
                sh(Some(r), "ip route add local 0.0.0.0/0 dev lo table 100");
            }
        }
        sh(
            None,
            &format!("ip route add 10.97.{n}.0/24 via {}", self.router_admin_ip),
        );
    }

    /// Runs `args` inside the client namespace (e.g. curl).
    pub fn in_client(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.client_ns]).args(args);
        cmd
    }

    fn teardown(&self) {
        remove(
            &[&self.client_ns, &self.server_ns, &self.router_ns],
            &self.root_if,
        );
    }
}

impl Drop for TransparentLab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Servers that accept no inbound connection, reached through an agent; torn down on
/// drop:
///
/// ```text
///  client ns 10.96.N.2 ── root namespace: the edge ── router ns ── inside ns 10.95.N.2
///                  10.96.N.1 |  198.20.N.1        198.20.N.2 | 10.95.N.1   (FTP servers, agent)
/// ```
///
/// The router masquerades the inside's outbound connections and forwards nothing inbound;
/// the inside's own firewall drops every inbound connection attempt (counted, see
/// [`AgentLab::inbound_drops`]); the root namespace (the edge) has no route into the
/// inside network at all (an `unreachable` route).
pub struct AgentLab {
    pub client_ns: String,
    pub router_ns: String,
    pub inside_ns: String,
    pub client_ip: Ipv4Addr,
    /// The edge's address toward clients.
    pub edge_ip: Ipv4Addr,
    /// The edge's address toward the agent (its agents listener).
    pub edge_agents_ip: Ipv4Addr,
    /// The servers' (and the agent's) address inside.
    pub inside_ip: Ipv4Addr,
    root_ifs: [String; 2],
    inside_net: String,
}

impl AgentLab {
    pub fn new() -> AgentLab {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n: u8 = ((std::process::id() * 13 + k) % 200 + 20) as u8;
        let tag = format!("{}{k}", std::process::id() % 10000);
        let lab = AgentLab {
            client_ns: format!("fxac{tag}"),
            router_ns: format!("fxar{tag}"),
            inside_ns: format!("fxai{tag}"),
            client_ip: Ipv4Addr::new(10, 96, n, 2),
            edge_ip: Ipv4Addr::new(10, 96, n, 1),
            edge_agents_ip: Ipv4Addr::new(198, 20, n, 1),
            inside_ip: Ipv4Addr::new(10, 95, n, 2),
            root_ifs: [format!("fac{tag}"), format!("far{tag}")],
            inside_net: format!("10.95.{n}.0/24"),
        };
        lab.teardown();
        lab.build(n, &tag);
        lab
    }

    fn build(&self, n: u8, tag: &str) {
        let (c, r, i) = (
            self.client_ns.as_str(),
            self.router_ns.as_str(),
            self.inside_ns.as_str(),
        );
        let [root_c, root_r] = &self.root_ifs;
        let (cl, re, ri, ir) = (
            format!("fcl{tag}"),
            format!("fre{tag}"),
            format!("fri{tag}"),
            format!("fir{tag}"),
        );
        for ns in [c, r, i] {
            sh(None, &format!("ip netns add {ns}"));
            sh(Some(ns), "ip link set lo up");
        }
        // client <-> root (the edge)
        sh(
            None,
            &format!("ip link add {root_c} type veth peer name {cl}"),
        );
        sh(None, &format!("ip link set {cl} netns {c}"));
        sh(
            None,
            &format!("ip addr add {}/24 dev {root_c}", self.edge_ip),
        );
        sh(None, &format!("ip link set {root_c} up"));
        sh(
            Some(c),
            &format!("ip addr add {}/24 dev {cl}", self.client_ip),
        );
        sh(Some(c), &format!("ip link set {cl} up"));
        // root <-> router: the only way out of the inside network
        sh(
            None,
            &format!("ip link add {root_r} type veth peer name {re}"),
        );
        sh(None, &format!("ip link set {re} netns {r}"));
        sh(
            None,
            &format!("ip addr add {}/24 dev {root_r}", self.edge_agents_ip),
        );
        sh(None, &format!("ip link set {root_r} up"));
        sh(Some(r), &format!("ip addr add 198.20.{n}.2/24 dev {re}"));
        sh(Some(r), &format!("ip link set {re} up"));
        // router <-> inside
        sh(
            Some(r),
            &format!("ip link add {ri} type veth peer name {ir}"),
        );
        sh(Some(r), &format!("ip link set {ir} netns {i}"));
        sh(Some(r), &format!("ip addr add 10.95.{n}.1/24 dev {ri}"));
        sh(Some(r), &format!("ip link set {ri} up"));
        sh(
            Some(i),
            &format!("ip addr add {}/24 dev {ir}", self.inside_ip),
        );
        sh(Some(i), &format!("ip link set {ir} up"));
        sh(Some(i), &format!("ip route add default via 10.95.{n}.1"));
        // The router: the inside may connect out (masqueraded); nothing comes in.
        sh(Some(r), "sysctl -qw net.ipv4.ip_forward=1");
        sh(
            Some(r),
            &format!("iptables -t nat -A POSTROUTING -o {re} -j MASQUERADE"),
        );
        sh(
            Some(r),
            &format!(
                "iptables -A FORWARD -i {re} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
            ),
        );
        sh(Some(r), &format!("iptables -A FORWARD -i {re} -j DROP"));
        // The inside's own firewall: established connections and loopback only.
        sh(Some(i), "iptables -A INPUT -i lo -j ACCEPT");
        sh(
            Some(i),
            "iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        );
        sh(Some(i), "iptables -A INPUT -j DROP");
        // The edge has no route into the inside network.
        sh(
            None,
            &format!("ip route add unreachable {}", self.inside_net),
        );
    }

    /// Adds `ip` to the inside namespace (on its loopback): a second host address inside,
    /// for a test's stand-in of another machine there. Traffic between the two stays on
    /// loopback, which the inside's firewall lets through.
    pub fn add_inside_address(&self, ip: Ipv4Addr) {
        sh(
            Some(&self.inside_ns),
            &format!("ip addr add {ip}/32 dev lo"),
        );
    }

    /// Inbound connection attempts the inside's firewall dropped so far.
    pub fn inbound_drops(&self) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.inside_ns])
            .args(["iptables", "-L", "INPUT", "-v", "-x", "-n"])
            .output()
            .expect("iptables -L");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("DROP"))
            .map(|l| {
                l.split_whitespace()
                    .next()
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Runs `args` inside the client namespace (curl, lftp, python3).
    pub fn in_client(&self, args: &[&str]) -> Command {
        in_ns(&self.client_ns, args)
    }

    /// Runs `args` inside the inside namespace.
    pub fn in_inside(&self, args: &[&str]) -> Command {
        in_ns(&self.inside_ns, args)
    }

    fn teardown(&self) {
        let _ = Command::new("ip")
            .args(["route", "del", "unreachable", &self.inside_net])
            .output();
        remove(
            &[&self.client_ns, &self.inside_ns, &self.router_ns],
            &self.root_ifs[0],
        );
        let _ = Command::new("ip")
            .args(["link", "del", &self.root_ifs[1]])
            .output();
    }
}

impl Drop for AgentLab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// `args` run inside namespace `ns`.
pub fn in_ns(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    cmd
}

/// Deletes a lab's namespaces and its root-namespace link, whichever exist: deleting a
/// namespace removes its veths, whose peers and routes go with them.
fn remove(namespaces: &[&str], root_if: &str) {
    for ns in namespaces {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
    let _ = Command::new("ip").args(["link", "del", root_if]).output();
}
