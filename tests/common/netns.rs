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
        // Deleting the namespaces removes their veths, whose peers and routes go with them.
        for ns in [&self.server_ns, &self.router_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.root_if])
            .output();
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        self.teardown();
    }
}
