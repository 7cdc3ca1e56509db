//! Which backend a new session goes to: pure functions of the backends' state and what
//! the session knows (client address, user name), so every policy is a unit test.

use std::net::IpAddr;

use rendezvous_hash::{Capacity, DefaultNodeHasher, IdNode, RendezvousNodes, WeightedNode};

use crate::config::Balance;

/// One backend as selection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub up: bool,
    pub backup: bool,
    pub weight: u32,
    /// Sessions open on it now.
    pub sessions: usize,
}

/// What the session offers to choose by.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    Client(IpAddr),
    User(&'a [u8]),
}

/// Rendezvous (highest random weight) hashing over the backends, by address: a key keeps
/// its backend while that backend is up, and adding or removing one moves only the keys
/// that hash to it (about 1/N). Weighted by each backend's `weight`.
pub struct Ring {
    nodes: RendezvousNodes<WeightedNode<IdNode<String>>, DefaultNodeHasher>,
    /// Node id (address) → index in the pool.
    ids: Vec<String>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("ids", &self.ids).finish()
    }
}

impl Ring {
    /// `backends`: (address, weight) in pool order.
    pub fn new<'a>(backends: impl IntoIterator<Item = (&'a str, u32)>) -> Ring {
        let mut nodes = RendezvousNodes::default();
        let mut ids = Vec::new();
        for (address, weight) in backends {
            let capacity = Capacity::new(f64::from(weight.max(1))).expect("a positive weight");
            nodes.insert(WeightedNode::new(IdNode::new(address.to_owned()), capacity));
            ids.push(address.to_owned());
        }
        Ring { nodes, ids }
    }

    /// Every backend index, best first for `key`.
    pub fn order(&self, key: Key<'_>) -> Vec<usize> {
        let candidates: Vec<&str> = match key {
            Key::Client(ip) => self
                .nodes
                .calc_candidates(&ip.to_canonical())
                .map(|n| n.node.as_str())
                .collect(),
            Key::User(user) => self
                .nodes
                .calc_candidates(&user)
                .map(|n| n.node.as_str())
                .collect(),
        };
        candidates
            .into_iter()
            .filter_map(|id| self.ids.iter().position(|i| i == id))
            .collect()
    }
}

/// The backend for a new session, or `None` when no backend may take one.
///
/// Only backends that are up and not in `excluded` (those this session already failed to
/// reach) count; backups only when no primary does. `order` is the ring's order for the
/// session's key (used by the sticky policies); `turn` is a counter that advances per
/// choice (round robin, and the tie-break between equally loaded backends).
pub fn choose(
    balance: Balance,
    backends: &[Candidate],
    order: &[usize],
    turn: usize,
    excluded: &[usize],
) -> Option<usize> {
    let usable = |backup: bool| -> Vec<usize> {
        (0..backends.len())
            .filter(|i| {
                let b = &backends[*i];
                b.up && b.backup == backup && !excluded.contains(i)
            })
            .collect()
    };
    let mut eligible = usable(false);
    if eligible.is_empty() {
        eligible = usable(true);
    }
    if eligible.is_empty() {
        return None;
    }
    match balance {
        Balance::RoundRobin => {
            let total: u64 = eligible
                .iter()
                .map(|i| u64::from(backends[*i].weight))
                .sum();
            let mut at = turn as u64 % total.max(1);
            for i in &eligible {
                let w = u64::from(backends[*i].weight);
                if at < w {
                    return Some(*i);
                }
                at -= w;
            }
            eligible.first().copied()
        }
        Balance::LeastSessions => {
            // Fewest sessions per unit of weight; compared crosswise to stay in integers.
            let load = |i: usize| (backends[i].sessions as u64, u64::from(backends[i].weight));
            let lighter = |a: usize, b: usize| {
                let ((sa, wa), (sb, wb)) = (load(a), load(b));
                (sa * wb).cmp(&(sb * wa))
            };
            let best = eligible
                .iter()
                .copied()
                .min_by(|a, b| lighter(*a, *b))
                .expect("eligible is not empty");
            let tied: Vec<usize> = eligible
                .iter()
                .copied()
                .filter(|i| lighter(*i, best).is_eq())
                .collect();
            Some(tied[turn % tied.len()])
        }
        Balance::ClientAddress | Balance::User => {
            order.iter().copied().find(|i| eligible.contains(i))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(n: usize) -> Vec<Candidate> {
        vec![
            Candidate {
                up: true,
                backup: false,
                weight: 1,
                sessions: 0,
            };
            n
        ]
    }

    #[test]
    fn round_robin_cycles_and_weights() {
        let mut b = up(3);
        let picks: Vec<_> = (0..6)
            .map(|t| choose(Balance::RoundRobin, &b, &[], t, &[]).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        b[1].weight = 2;
        let picks: Vec<_> = (0..4)
            .map(|t| choose(Balance::RoundRobin, &b, &[], t, &[]).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 1, 2]);
    }

    #[test]
    fn down_and_excluded_backends_get_nothing() {
        let mut b = up(3);
        b[1].up = false;
        for t in 0..10 {
            let p = choose(Balance::RoundRobin, &b, &[], t, &[2]).unwrap();
            assert_eq!(p, 0);
        }
        b[0].up = false;
        assert_eq!(choose(Balance::LeastSessions, &b, &[], 0, &[2]), None);
    }

    #[test]
    fn least_sessions_by_weight_with_rotating_ties() {
        let mut b = up(3);
        b[0].sessions = 3;
        b[1].sessions = 1;
        b[2].sessions = 1;
        let picks: Vec<_> = (0..4)
            .map(|t| choose(Balance::LeastSessions, &b, &[], t, &[]).unwrap())
            .collect();
        assert_eq!(picks, [1, 2, 1, 2]);
        // 3 sessions on weight 4 is lighter than 1 on weight 1.
        b[0].weight = 4;
        assert_eq!(choose(Balance::LeastSessions, &b, &[], 0, &[]), Some(0));
    }

    #[test]
    fn backups_only_when_every_primary_is_down() {
        let mut b = up(3);
        b[2].backup = true;
        for t in 0..6 {
            assert_ne!(choose(Balance::RoundRobin, &b, &[], t, &[]), Some(2));
        }
        b[0].up = false;
        b[1].up = false;
        assert_eq!(choose(Balance::RoundRobin, &b, &[], 0, &[]), Some(2));
        assert_eq!(choose(Balance::User, &b, &[0, 1, 2], 0, &[]), Some(2));
    }

    fn ring(n: usize) -> Ring {
        let names: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}:21")).collect();
        Ring::new(names.iter().map(|s| (s.as_str(), 1)))
    }

    fn owner(r: &Ring, b: &[Candidate], user: &str) -> usize {
        let order = r.order(Key::User(user.as_bytes()));
        choose(Balance::User, b, &order, 0, &[]).unwrap()
    }

    #[test]
    fn sticky_keys_keep_their_backend_and_move_only_one_share() {
        let (three, four) = (ring(3), ring(4));
        let (b3, mut b4) = (up(3), up(4));
        let users: Vec<String> = (0..3000).map(|i| format!("user{i}")).collect();
        let before: Vec<usize> = users.iter().map(|u| owner(&three, &b3, u)).collect();
        // Same key, same backend, every time.
        assert!(
            users
                .iter()
                .zip(&before)
                .all(|(u, o)| owner(&three, &b3, u) == *o)
        );
        let after: Vec<usize> = users.iter().map(|u| owner(&four, &b4, u)).collect();
        let moved: Vec<usize> = (0..users.len())
            .filter(|i| before[*i] != after[*i])
            .collect();
        // Only keys that now belong to the new backend moved: about a quarter.
        assert!(moved.iter().all(|i| after[*i] == 3));
        let share = moved.len() as f64 / users.len() as f64;
        assert!((0.2..0.3).contains(&share), "{share}");
        // A backend going down moves only its own keys.
        b4[1].up = false;
        for (i, u) in users.iter().enumerate() {
            if after[i] != 1 {
                assert_eq!(owner(&four, &b4, u), after[i]);
            }
        }
        // Client addresses hash the same way.
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let o = four.order(Key::Client(ip));
        assert_eq!(
            o,
            four.order(Key::Client("::ffff:192.0.2.7".parse().unwrap()))
        );
        assert_eq!(o.len(), 4);
    }
}
