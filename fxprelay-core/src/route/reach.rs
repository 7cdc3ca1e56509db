//! Which routes can never be chosen, and which share names: what `fxprelay check` refuses
//! and warns about. First match wins, so a route every name of which an earlier route
//! takes first is dead configuration, and two routes that both match a name send it to
//! the first one only.
//!
//! Host patterns are compared directly ([`HostPattern::covers`]). User patterns are
//! compared as automata: each is built as a DFA (the `regex` crate's own engine, with its
//! syntax and byte semantics), and the pair is explored together over every login name
//! (bytes other than NUL, CR and LF: a command line cannot carry them) looking for a name
//! one matches and the other does not. A pattern the DFA builder cannot take (a Unicode
//! word boundary, a pattern too large) is not compared: such a pair is neither refused
//! nor warned about.
//!
//! [`HostPattern::covers`]: super::HostPattern::covers

use std::collections::{HashSet, VecDeque};

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, MatchKind};

use super::{Match, UserPattern};

/// Memory for one pattern's DFA: login name patterns are small.
const DFA_LIMIT: usize = 1 << 20;
/// Pairs of states explored before giving up on a comparison.
const MAX_PAIRS: usize = 200_000;

/// Something about the route at `route` (an index into the list given to [`findings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Every name the route matches, the earlier route `by` matches first.
    Unreachable { route: usize, by: usize },
    /// Some names match both it and the earlier route `with`, which takes them.
    Overlap { route: usize, with: usize },
}

/// What is wrong or worth a warning in a list of route matches, in list order. A route
/// that is unreachable is not also reported as overlapping.
pub fn findings(matches: &[&Match]) -> Vec<Finding> {
    let dfas: Vec<Option<Dfa>> = matches
        .iter()
        .map(|m| match m {
            Match::User(p) => build(p),
            Match::Host(_) => None,
        })
        .collect();
    let mut out = Vec::new();
    for (j, later) in matches.iter().enumerate() {
        let mut overlap = None;
        for (i, earlier) in matches[..j].iter().enumerate() {
            let (covered, shared) = match (earlier, later) {
                (Match::Host(e), Match::Host(l)) => (e.covers(l), l.covers(e)),
                (Match::User(e), Match::User(l)) if e == l => (true, true),
                (Match::User(_), Match::User(_)) => match (&dfas[i], &dfas[j]) {
                    (Some(e), Some(l)) => (
                        exists(l, e, |l, e| l && !e) == Some(false),
                        exists(l, e, |l, e| l && e) == Some(true),
                    ),
                    _ => (false, false),
                },
                // A name and a login are said at different times: no route of one kind
                // hides one of the other.
                _ => (false, false),
            };
            if covered {
                out.push(Finding::Unreachable { route: j, by: i });
                overlap = None;
                break;
            }
            if shared && overlap.is_none() {
                overlap = Some(Finding::Overlap { route: j, with: i });
            }
        }
        out.extend(overlap);
    }
    out
}

type Dfa = dense::DFA<Vec<u32>>;

/// `pattern` as a DFA with the semantics of `regex::bytes::Regex::is_match` (an
/// unanchored search, Unicode on, able to match bytes that are not UTF-8); `None` when
/// the builder cannot take it.
fn build(pattern: &UserPattern) -> Option<Dfa> {
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .start_kind(StartKind::Unanchored)
                .match_kind(MatchKind::LeftmostFirst)
                .dfa_size_limit(Some(DFA_LIMIT))
                .determinize_size_limit(Some(DFA_LIMIT)),
        )
        .syntax(syntax::Config::new().utf8(false))
        .thompson(thompson::Config::new().utf8(false))
        .build(pattern.as_str())
        .ok()
}

/// One pattern's progress through a name: its state, or `None` once it has matched
/// (whatever follows, it matches).
type Progress = Option<StateID>;

/// Whether some non-empty login name makes `want(a matches, b matches)` true: `Some`
/// with the answer, `None` when the search gave up.
fn exists(a: &Dfa, b: &Dfa, want: impl Fn(bool, bool) -> bool) -> Option<bool> {
    let from_start = |dfa: &Dfa| {
        let s = dfa
            .start_state(&start::Config::new().anchored(Anchored::No))
            .ok()?;
        Some((!dfa.is_match_state(s)).then_some(s))
    };
    let first = (from_start(a)?, from_start(b)?);
    let mut seen: HashSet<(Progress, Progress)> = HashSet::from([first]);
    let mut queue = VecDeque::from([(first, false)]);
    while let Some(((pa, pb), nonempty)) = queue.pop_front() {
        if nonempty && want(ends_matched(a, pa), ends_matched(b, pb)) {
            return Some(true);
        }
        for byte in (0..=u8::MAX).filter(|b| !matches!(b, 0 | b'\r' | b'\n')) {
            let next = (step(a, pa, byte)?, step(b, pb, byte)?);
            if seen.insert(next) {
                if seen.len() > MAX_PAIRS {
                    return None;
                }
                queue.push_back((next, true));
            }
        }
    }
    Some(false)
}

/// Whether the name read so far matches, now that it ends.
fn ends_matched(dfa: &Dfa, p: Progress) -> bool {
    p.is_none_or(|s| dfa.is_match_state(dfa.next_eoi_state(s)))
}

/// One more byte; `None` when the DFA cannot say (a quit state).
fn step(dfa: &Dfa, p: Progress, byte: u8) -> Option<Progress> {
    let Some(s) = p else {
        return Some(None);
    };
    let next = dfa.next_state(s, byte);
    if dfa.is_quit_state(next) {
        return None;
    }
    Some((!dfa.is_match_state(next)).then_some(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::HostPattern;

    fn host(p: &str) -> Match {
        Match::Host(HostPattern::parse(p).unwrap())
    }

    fn user(p: &str) -> Match {
        Match::User(UserPattern::new(p).unwrap())
    }

    fn of(list: &[Match]) -> Vec<Finding> {
        findings(&list.iter().collect::<Vec<_>>())
    }

    use Finding::{Overlap, Unreachable};

    #[test]
    fn hosts() {
        assert_eq!(
            of(&[host("a.test"), host("A.test.")]),
            [Unreachable { route: 1, by: 0 }]
        );
        assert_eq!(
            of(&[host("*.x.test"), host("a.x.test")]),
            [Unreachable { route: 1, by: 0 }]
        );
        assert_eq!(
            of(&[host("a.x.test"), host("*.x.test")]),
            [Overlap { route: 1, with: 0 }]
        );
        assert!(of(&[host("a.x.test"), host("b.x.test"), host("*.y.x.test")]).is_empty());
    }

    #[test]
    fn identical_and_covering_user_patterns_are_unreachable() {
        let identical = of(&[user("^(.+)@beta$"), user("^(.+)@beta$")]);
        assert_eq!(identical, [Unreachable { route: 1, by: 0 }]);
        // Written differently, the same names.
        let same = of(&[user("^(.+)@beta$"), user(r"\A(.+)@beta\z")]);
        assert_eq!(same, [Unreachable { route: 1, by: 0 }]);
        // A catch-all first hides everything after it.
        let all = of(&[user("(.*)"), user("^admin$"), user("@beta$")]);
        assert_eq!(
            all,
            [
                Unreachable { route: 1, by: 0 },
                Unreachable { route: 2, by: 0 }
            ]
        );
        // Anchored to a whole non-empty name: every name there is.
        let any = of(&[user("^(.+)$"), user("^bob@[a-z]+$")]);
        assert_eq!(any, [Unreachable { route: 1, by: 0 }]);
        // A narrower first one leaves the rest reachable, and shares names with it.
        let narrow = of(&[user("^bob@beta$"), user("@beta$")]);
        assert_eq!(narrow, [Overlap { route: 1, with: 0 }]);
    }

    #[test]
    fn disjoint_user_patterns_are_fine() {
        assert_eq!(
            of(&[user("@beta$"), user("@gamma$"), user("^ops-")]),
            [Overlap { route: 2, with: 0 }]
        );
        assert!(of(&[user("^[a-z]+@beta$"), user("^[0-9]+@beta$")]).is_empty());
    }

    #[test]
    fn names_and_logins_do_not_hide_each_other() {
        assert!(of(&[host("a.test"), user("(.*)"), host("b.test")]).is_empty());
    }

    #[test]
    fn patterns_the_dfa_cannot_take_are_not_judged() {
        // A Unicode word boundary: no finding either way, never a wrong one.
        assert!(of(&[user(r"\bbob\b"), user(r"\bbob\b@x")]).is_empty());
        assert_eq!(
            of(&[user(r"\bbob\b"), user(r"\bbob\b")]),
            [Unreachable { route: 1, by: 0 }]
        );
    }
}
