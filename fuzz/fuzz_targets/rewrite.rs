//! The NAT policy of `rewrite` on arbitrary replies and commands, with the policy, the
//! upstream address and the replacement candidates taken from the input (`arbitrary`).
//!
//! Properties of `rewrite_passive_reply`: `never` and codes other than 227/228 forward
//! untouched; a rewrite announces the upstream address with the server's port, is
//! exactly what `proto::addr` would produce, parses back, and happens only when the
//! policy says so; a malformed verdict carries the codec's own error. For active
//! commands: `rewrite_active` produces a command that parses back to the new address
//! with the client's port, and `pick_replacement` only picks a candidate PORT can carry.

#![no_main]

use std::net::{IpAddr, SocketAddr};

use arbitrary::{Arbitrary, Unstructured};
use fxprelay_core::proto::addr;
use fxprelay_core::proto::{Reply, parse_command};
use fxprelay_core::rewrite::{
    Kind, NatMode, NatPolicy, PrivateRanges, Reason, ReplyAction, active_needs_rewrite,
    active_target, pick_replacement, rewrite_active, rewrite_passive_reply, should_replace,
};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Mode {
    Never,
    Always,
    Auto,
}

impl From<&Mode> for NatMode {
    fn from(m: &Mode) -> NatMode {
        match m {
            Mode::Never => NatMode::Never,
            Mode::Always => NatMode::Always,
            Mode::Auto => NatMode::Auto,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Code {
    Pasv,
    Lpsv,
    /// Whatever the reply's first three bytes say, as the assembler would read them.
    FromText,
    Other(u16),
}

#[derive(Debug, Arbitrary)]
struct Input {
    passive: Mode,
    active: Mode,
    /// `None`: the default private ranges; otherwise these (address, prefix) pairs.
    private: Option<Vec<(IpAddr, u8)>>,
    upstream: IpAddr,
    code: Code,
    candidates: Vec<IpAddr>,
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(input) = Input::arbitrary(&mut u) else {
        return;
    };
    let raw = u.take_rest();

    let private = match &input.private {
        None => PrivateRanges::default(),
        Some(nets) => PrivateRanges::new(
            nets.iter()
                .filter_map(|&(ip, len)| IpNet::new(ip, len).ok())
                .collect(),
        ),
    };
    let policy = NatPolicy {
        passive: (&input.passive).into(),
        active: (&input.active).into(),
        client_address: None,
        private,
    };
    let code = match input.code {
        Code::Pasv => 227,
        Code::Lpsv => 228,
        Code::FromText => std::str::from_utf8(raw.get(..3).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(227),
        Code::Other(c) => c,
    };
    let reply = Reply {
        code,
        raw: raw.to_vec(),
    };
    passive(&reply, &policy, input.upstream);
    active(raw, &policy, input.upstream, &input.candidates);
});

fn passive(reply: &Reply, policy: &NatPolicy, upstream: IpAddr) {
    let action = rewrite_passive_reply(reply, policy, upstream);
    let upstream = upstream.to_canonical();
    if policy.passive == NatMode::Never || !matches!(reply.code, 227 | 228) {
        assert_eq!(action, ReplyAction::Forward);
        return;
    }
    // What the codecs say about this reply.
    let parsed: Result<SocketAddr, addr::AddrError> = if reply.code == 227 {
        addr::parse_pasv_reply(&reply.raw).map(|(a, _)| a.into())
    } else {
        addr::parse_lpsv_reply(&reply.raw).map(|(a, _)| a)
    };
    let kind = if reply.code == 227 {
        Kind::Pasv
    } else {
        Kind::Lpsv
    };
    match action {
        ReplyAction::Forward => {
            let old = parsed.expect("an unparsable reply is not forwarded");
            let wanted = should_replace(policy.passive, old.ip(), upstream, &policy.private);
            assert!(
                old.ip() == upstream
                    || wanted.is_none()
                    || (reply.code == 227 && upstream.is_ipv6()),
                "{old} forwarded, upstream {upstream}, {wanted:?}"
            );
        }
        ReplyAction::Rewrite {
            bytes,
            kind: k,
            reason,
            from,
            to,
        } => {
            assert_eq!(k, kind);
            assert_eq!(Ok(from), parsed);
            assert_ne!(from.ip(), upstream);
            assert_eq!(to, SocketAddr::new(upstream, from.port()));
            match policy.passive {
                NatMode::Always => assert_eq!(reason, Reason::Always),
                NatMode::Auto => {
                    assert_eq!(reason, Reason::Private);
                    assert!(policy.private.contains(from.ip()));
                    assert!(!policy.private.contains(upstream));
                }
                NatMode::Never => unreachable!(),
            }
            match to {
                SocketAddr::V4(to4) if kind == Kind::Pasv => {
                    assert_eq!(addr::rewrite_pasv_reply(&reply.raw, to4), Ok(bytes.clone()));
                    assert_eq!(addr::parse_pasv_reply(&bytes).map(|p| p.0), Ok(to4));
                }
                _ => {
                    assert_eq!(kind, Kind::Lpsv);
                    assert_eq!(addr::rewrite_lpsv_reply(&reply.raw, to), Ok(bytes.clone()));
                    assert_eq!(addr::parse_lpsv_reply(&bytes).map(|p| p.0), Ok(to));
                }
            }
        }
        ReplyAction::Malformed { kind: k, error } => {
            assert_eq!(k, kind);
            // The reply parsed as a whole never fails to rewrite, so the error is the parse's.
            assert_eq!(parsed, Err(error));
        }
    }
}

fn active(raw: &[u8], policy: &NatPolicy, upstream: IpAddr, candidates: &[IpAddr]) {
    let Ok(cmd) = parse_command(raw) else {
        return;
    };
    let Some(target) = active_target(&cmd) else {
        assert!(!matches!(cmd.verb.as_str(), "PORT" | "EPRT" | "LPRT"));
        return;
    };
    let Ok(target) = target else {
        return;
    };
    let _ = active_needs_rewrite(&target, policy, upstream);

    let kinds = [Kind::Port, Kind::Eprt, Kind::Lprt];
    let pick = pick_replacement(target.kind, target.addr.ip(), candidates);
    if let Some(ip) = pick {
        assert!(candidates.contains(&ip));
        if target.kind == Kind::Port {
            assert!(ip.is_ipv4());
        }
    } else if target.kind != Kind::Port {
        assert!(candidates.is_empty());
    }

    for ip in pick.into_iter().chain([upstream]) {
        let Some(line) = rewrite_active(&target, ip) else {
            let same = ip.to_canonical() == target.addr.ip().to_canonical();
            assert!(same || (target.kind == Kind::Port && ip.to_canonical().is_ipv6()));
            continue;
        };
        let cmd = parse_command(&line).expect("a rewritten command parses");
        let again = active_target(&cmd)
            .expect("still an active command")
            .expect("a rewritten address parses");
        assert!(kinds.contains(&again.kind));
        assert_eq!(again.kind, target.kind);
        let want = SocketAddr::new(ip.to_canonical(), target.addr.port());
        match (again.addr, want) {
            (SocketAddr::V4(got), SocketAddr::V4(w)) => assert_eq!(got, w),
            (got, w) => assert_eq!(got.ip().to_canonical(), w.ip(), "{got} vs {w}"),
        }
        assert_eq!(again.addr.port(), target.addr.port());
    }
}
