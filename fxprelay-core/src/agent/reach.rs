//! What an agent agrees to connect to when the edge asks: only addresses inside its own
//! `allow` (the edge must not be able to use it to scan the inside network) and never one
//! of its own sockets. The agent checks each address a target resolves to, as the
//! proxy's forward mode does.

use std::net::{IpAddr, SocketAddr};

use crate::net::{AllowList, Denied};

/// The agent's rule.
#[derive(Debug, Clone)]
pub struct Reach {
    allow: AllowList,
}

/// Why the agent refused a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Outside(Denied),
    #[error("{0} is this agent's own address")]
    Itself(SocketAddr),
    #[error("`{0}` is not a host:port")]
    BadTarget(String),
}

impl Reach {
    /// `allow` is the agent's `agent.allow` list.
    pub fn new(allow: AllowList) -> Reach {
        Reach {
            allow: allow.named("agent.allow"),
        }
    }

    /// Whether `addr`, which `host` resolved to, may be reached. `own` are the agent's
    /// own addresses (its interfaces): a target there is refused even inside `allow`, so
    /// the edge cannot make the agent connect to itself.
    pub fn admits(&self, host: &str, addr: SocketAddr, own: &[IpAddr]) -> Result<(), Refusal> {
        let ip = addr.ip().to_canonical();
        if ip.is_loopback() || ip.is_unspecified() || own.contains(&ip) {
            return Err(Refusal::Itself(addr));
        }
        self.allow.admits(host, ip).map_err(Refusal::Outside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(entries: &[&str]) -> Reach {
        let list: AllowList = serde_json::from_value(serde_json::json!(entries)).unwrap();
        Reach::new(list)
    }

    #[test]
    fn only_what_allow_names_and_never_the_agent_itself() {
        let r = reach(&["10.0.0.0/24", "ftp.inside.example"]);
        let own = ["10.0.0.9".parse().unwrap()];
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(r.admits("10.0.0.5", at("10.0.0.5:21"), &own).is_ok());
        assert!(
            r.admits("ftp.inside.example", at("192.168.7.7:21"), &own)
                .is_ok()
        );
        let outside = r.admits("10.0.1.5", at("10.0.1.5:21"), &own);
        assert!(matches!(&outside, Err(Refusal::Outside(_))), "{outside:?}");
        assert!(outside.unwrap_err().to_string().contains("agent.allow"));
        assert_eq!(
            r.admits("10.0.0.9", at("10.0.0.9:22"), &own),
            Err(Refusal::Itself(at("10.0.0.9:22")))
        );
        assert!(matches!(
            r.admits("localhost", at("127.0.0.1:21"), &own),
            Err(Refusal::Itself(_))
        ));
        // An empty list reaches nothing.
        assert!(
            reach(&[])
                .admits("10.0.0.5", at("10.0.0.5:21"), &own)
                .is_err()
        );
    }
}
