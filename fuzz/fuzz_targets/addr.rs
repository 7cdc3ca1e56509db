//! Every address codec of `proto::addr` on the same arbitrary bytes, read as a reply
//! (`227`, `228`, `229`) and as command arguments (`PORT`, `EPRT`, `LPRT`).
//!
//! Properties, for every successful parse: the span is in bounds and holds exactly the
//! address; formatting the address and parsing it again gives it back; a rewrite keeps
//! every byte outside the span and the rewritten reply parses to the new address; a
//! reply that does not parse is not rewritten either. The replacement address is derived
//! from a hash of the input, so inputs explore it without an input format of their own.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;

use fxprelay_core::proto::addr::*;
use fxprelay_core::proto::{parse_command, trim_eol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let new = replacement(data);
    pasv(data, new);
    lpsv(data, new);
    epsv(data, new.port());
    port(data);
    eprt(data);
    lprt(data);
});

/// A replacement address from an FNV-1a hash of the input: IPv4 or IPv6, port 1..=65535.
fn replacement(data: &[u8]) -> SocketAddr {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let port = (h as u16).max(1);
    let ip = if h >> 63 == 0 {
        IpAddr::V4(Ipv4Addr::from((h >> 16) as u32))
    } else {
        let wide = u128::from(h) << 64 | u128::from(h.rotate_left(29));
        IpAddr::V6(Ipv6Addr::from(wide))
    };
    SocketAddr::new(ip, port)
}

fn v4_of(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(v6) => {
            let [.., a, b, c, d] = v6.ip().octets();
            SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), v6.port())
        }
    }
}

/// `rewritten` is `raw` with `span` replaced by `new_text`.
fn assert_spliced(raw: &[u8], span: &Range<usize>, new_text: &[u8], rewritten: &[u8]) {
    assert_eq!(rewritten.len(), raw.len() - span.len() + new_text.len());
    assert_eq!(&rewritten[..span.start], &raw[..span.start]);
    assert_eq!(
        &rewritten[span.start..span.start + new_text.len()],
        new_text
    );
    assert_eq!(&rewritten[span.start + new_text.len()..], &raw[span.end..]);
}

/// The codecs of one passive reply kind (`227` or `228`), checked alike by [`passive`].
struct Codec<A> {
    code: &'static str,
    parse_reply: fn(&[u8]) -> Result<(A, Range<usize>), AddrError>,
    rewrite_reply: fn(&[u8], A) -> Result<Vec<u8>, AddrError>,
    format_reply: fn(A) -> Vec<u8>,
    /// The address as the reply's span holds it, which is also the matching command's
    /// argument form (`PORT` for `227`, `LPRT` for `228`).
    format_args: fn(A) -> String,
    parse_args: fn(&[u8]) -> Result<A, AddrError>,
}

fn pasv(raw: &[u8], new: SocketAddr) {
    let codec = Codec {
        code: "227",
        parse_reply: parse_pasv_reply,
        rewrite_reply: rewrite_pasv_reply,
        format_reply: format_pasv_reply,
        format_args: format_pasv_addr,
        parse_args: parse_port_args,
    };
    passive(&codec, raw, v4_of(new));
}

fn lpsv(raw: &[u8], new: SocketAddr) {
    let codec = Codec {
        code: "228",
        parse_reply: parse_lpsv_reply,
        rewrite_reply: rewrite_lpsv_reply,
        format_reply: format_lpsv_reply,
        format_args: format_lprt_args,
        parse_args: parse_lprt_args,
    };
    passive(&codec, raw, new);
}

fn passive<A: Copy + PartialEq + std::fmt::Debug>(c: &Codec<A>, raw: &[u8], new: A) {
    let parsed = (c.parse_reply)(raw);
    let rewritten = (c.rewrite_reply)(raw, new);
    let (addr, span) = match parsed {
        Ok(ok) => ok,
        Err(e) => {
            assert_eq!(rewritten, Err(e));
            return;
        }
    };
    assert!(span.start < span.end && span.end <= raw.len(), "{span:?}");
    // The span is the address and nothing else: it reads as the command's arguments.
    assert_eq!((c.parse_args)(&raw[span.clone()]), Ok(addr));
    assert_eq!((c.parse_args)((c.format_args)(addr).as_bytes()), Ok(addr));
    assert_eq!(
        (c.parse_reply)(&(c.format_reply)(addr)).map(|p| p.0),
        Ok(addr)
    );

    let rewritten =
        rewritten.unwrap_or_else(|e| panic!("a parsed {} did not rewrite: {e}", c.code));
    let text = (c.format_args)(new);
    assert_spliced(raw, &span, text.as_bytes(), &rewritten);
    let again = (c.parse_reply)(&rewritten);
    assert_eq!(again, Ok((new, span.start..span.start + text.len())));
}

fn epsv(raw: &[u8], new_port: u16) {
    let parsed = parse_epsv_reply(raw);
    let rewritten = rewrite_epsv_reply(raw, new_port);
    let port = match parsed {
        Ok(port) => port,
        Err(e) => {
            assert_eq!(rewritten, Err(e));
            return;
        }
    };
    assert_ne!(port, 0);
    assert_eq!(parse_epsv_reply(&format_epsv_reply(port)), Ok(port));

    let rewritten = rewritten.expect("a parsed 229 rewrites");
    assert_eq!(parse_epsv_reply(&rewritten), Ok(new_port));
    // Only the port digits changed: what differs between the two is digits on both sides.
    let prefix = raw
        .iter()
        .zip(&rewritten)
        .take_while(|(a, b)| a == b)
        .count();
    let suffix = raw[prefix..]
        .iter()
        .rev()
        .zip(rewritten[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let old_mid = &raw[prefix..raw.len() - suffix];
    let new_mid = &rewritten[prefix..rewritten.len() - suffix];
    assert!(old_mid.iter().all(u8::is_ascii_digit), "{old_mid:?}");
    assert!(new_mid.iter().all(u8::is_ascii_digit), "{new_mid:?}");
}

fn port(args: &[u8]) {
    let Ok(addr) = parse_port_args(args) else {
        return;
    };
    assert_ne!(addr.port(), 0);
    assert_eq!(parse_port_args(format_pasv_addr(addr).as_bytes()), Ok(addr));
    let line = format_port_command(addr);
    let cmd = parse_command(&line).expect("PORT line parses");
    assert_eq!(cmd.verb, "PORT");
    assert_eq!(parse_port_args(cmd.args), Ok(addr));
    assert_eq!(trim_eol(&line).len() + 2, line.len());
}

fn eprt(args: &[u8]) {
    let Ok(addr) = parse_eprt_args(args) else {
        return;
    };
    assert_ne!(addr.port(), 0);
    assert_eq!(parse_eprt_args(format_eprt_args(addr).as_bytes()), Ok(addr));
    let line = format_eprt_command(addr);
    let cmd = parse_command(&line).expect("EPRT line parses");
    assert_eq!(cmd.verb, "EPRT");
    assert_eq!(parse_eprt_args(cmd.args), Ok(addr));
}

fn lprt(args: &[u8]) {
    let Ok(addr) = parse_lprt_args(args) else {
        return;
    };
    assert_ne!(addr.port(), 0);
    assert_eq!(parse_lprt_args(format_lprt_args(addr).as_bytes()), Ok(addr));
    let line = format_lprt_command(addr);
    let cmd = parse_command(&line).expect("LPRT line parses");
    assert_eq!(cmd.verb, "LPRT");
    assert_eq!(parse_lprt_args(cmd.args), Ok(addr));
}
