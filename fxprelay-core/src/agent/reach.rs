//! What an agent agrees to connect to when the edge asks: only addresses inside its own
//! `allow` (the edge must not be able to use it to scan the inside network) and never one
//! of its own sockets (the ports it listens on for a server's active-mode connections).
//! The agent checks each address a target resolves to, as the proxy's forward mode does.
//! A server on the agent's own host is reached only when `allow` names it (`127.0.0.1`).

use std::net::SocketAddr;

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
    #[error("{0} is one of this agent's own sockets")]
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

    /// Whether `addr`, which `host` resolved to, may be reached. `own` are the sockets
    /// the agent listens on: refused even inside `allow`, so the edge cannot make the
    /// agent connect to itself; so is the unspecified address (it reaches this host).
    pub fn admits(&self, host: &str, addr: SocketAddr, own: &[SocketAddr]) -> Result<(), Refusal> {
        let ip = addr.ip().to_canonical();
        let mine = |o: &SocketAddr| {
            o.port() == addr.port() && (o.ip().is_unspecified() || o.ip().to_canonical() == ip)
        };
        if ip.is_unspecified() || own.iter().any(mine) {
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
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        // The agent listens on 10.0.0.9:40000 for a server's active-mode connection.
        let own = [at("10.0.0.9:40000")];
        assert!(r.admits("10.0.0.5", at("10.0.0.5:21"), &own).is_ok());
        assert!(
            r.admits("ftp.inside.example", at("192.168.7.7:21"), &own)
                .is_ok()
        );
        let outside = r.admits("10.0.1.5", at("10.0.1.5:21"), &own);
        assert!(matches!(&outside, Err(Refusal::Outside(_))), "{outside:?}");
        assert!(outside.unwrap_err().to_string().contains("agent.allow"));
        assert_eq!(
            r.admits("10.0.0.9", at("10.0.0.9:40000"), &own),
            Err(Refusal::Itself(at("10.0.0.9:40000")))
        );
        assert!(r.admits("10.0.0.9", at("10.0.0.9:21"), &own).is_ok());
        assert!(matches!(
            r.admits("0.0.0.0", at("0.0.0.0:21"), &own),
            Err(Refusal::Itself(_))
        ));
        // Its own host only when named.
        assert!(matches!(
            r.admits("localhost", at("127.0.0.1:21"), &own),
            Err(Refusal::Outside(_))
        ));
        assert!(
            reach(&["127.0.0.1"])
                .admits("localhost", at("127.0.0.1:21"), &own)
                .is_ok()
        );
        // An empty list reaches nothing.
        assert!(
            reach(&[])
                .admits("10.0.0.5", at("10.0.0.5:21"), &own)
                .is_err()
        );
    }
}
