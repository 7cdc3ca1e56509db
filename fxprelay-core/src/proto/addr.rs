//! Codecs for the data-connection addresses FTP carries on the control channel.
//!
//! | message | form | RFC |
//! | --- | --- | --- |
//! | `227` reply | `h1,h2,h3,h4,p1,p2` somewhere in the text | 959, 1123 4.1.2.6 |
//! | `228` reply | `af,hal,h1..hn,pal,p1..pm` somewhere in the text | 1639 |
//! | `229` reply | `(<d><d><d>port<d>)` | 2428 |
//! | `PORT` | `h1,h2,h3,h4,p1,p2` | 959 |
//! | `LPRT` | `af,hal,h1..hn,pal,p1..pm` | 1639 |
//! | `EPRT` | `<d>af<d>addr<d>port<d>` | 2428 |
//!
//! Reply parsers take the whole raw reply (code and all lines included) and scan its final
//! line the tolerant way RFC 1123 asks for, because servers word these replies in many
//! ways. Only the final line: the lines before it are free text (RFC 959 4.2), so an
//! address there is whatever the server chose to write, not its answer (a `227-` line
//! naming a third host must never be taken for the data address). They return the byte
//! range ("span") of the address, as offsets into the whole reply, so a rewrite can
//! replace exactly that and keep every other byte. Command parsers take the arguments after the verb and are
//! strict. Nothing here panics, whatever the input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;

use thiserror::Error;

/// Why an address could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AddrError {
    #[error("no address found")]
    NotFound,
    #[error("address number out of range (greater than 255)")]
    OctetOutOfRange,
    #[error("port 0 is not a valid data port")]
    PortZero,
    #[error("port out of range (greater than 65535)")]
    PortOutOfRange,
    #[error("address cut short")]
    Truncated,
    #[error("unsupported or mismatched address family")]
    BadFamily,
    #[error("malformed address")]
    Syntax,
}

// ---------------------------------------------------------------------------------------
// Number lists: the shared tokenizer of 227, 228, PORT and LPRT.

/// A decimal number as written: its value (saturated, so absurdly long digit runs still
/// read as "too big") and where it sits in the input.
#[derive(Debug, Clone)]
struct Num {
    value: u32,
    span: Range<usize>,
}

/// A maximal run of comma-separated numbers, spaces and tabs allowed around the commas.
#[derive(Debug)]
struct NumList {
    nums: Vec<Num>,
    /// Offset just past the list: after the last digit, or after a dangling comma.
    end: usize,
    /// The list ended in a comma with no number after it.
    dangling: bool,
}

impl NumList {
    /// Reads the list that starts at `start`, which must be a digit.
    fn read(input: &[u8], start: usize) -> NumList {
        let mut nums = Vec::new();
        let mut pos = start;
        loop {
            let (num, after) = read_number(input, pos);
            nums.push(num);
            let comma = skip_blanks(input, after);
            if input.get(comma) != Some(&b',') {
                return NumList {
                    nums,
                    end: after,
                    dangling: false,
                };
            }
            let next = skip_blanks(input, comma + 1);
            if !input.get(next).is_some_and(u8::is_ascii_digit) {
                return NumList {
                    nums,
                    end: comma + 1,
                    dangling: true,
                };
            }
            pos = next;
        }
    }

    /// Whether the list looks like the beginning of an address the input stopped in the
    /// middle of: at least one comma, and nothing but whitespace after it.
    fn cut_short(&self, input: &[u8]) -> bool {
        (self.nums.len() > 1 || self.dangling) && rest_is_blank(input, self.end)
    }

    fn values(&self) -> impl Iterator<Item = u32> + '_ {
        self.nums.iter().map(|n| n.value)
    }
}

/// Reads the digit run at `pos` (possibly empty). Returns the number and the offset
/// after it.
fn read_number(input: &[u8], pos: usize) -> (Num, usize) {
    let digits: &[u8] = input.get(pos..).unwrap_or_default();
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    let value = digits[..len].iter().fold(0u32, |acc, d| {
        acc.saturating_mul(10).saturating_add(u32::from(d - b'0'))
    });
    let end = pos + len;
    (
        Num {
            value,
            span: pos..end,
        },
        end,
    )
}

fn skip_blanks(input: &[u8], mut pos: usize) -> usize {
    while matches!(input.get(pos), Some(b' ' | b'\t')) {
        pos += 1;
    }
    pos
}

fn rest_is_blank(input: &[u8], pos: usize) -> bool {
    input
        .get(pos..)
        .unwrap_or_default()
        .iter()
        .all(u8::is_ascii_whitespace)
}

/// Where the final line of a reply starts: a multi-line reply's closing `DDD text` line,
/// or 0 for a single line.
fn final_line_start(raw: &[u8]) -> usize {
    let body = raw.strip_suffix(b"\n").unwrap_or(raw);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// Every number list in a reply, in order, skipping the reply code at the start of each
/// line (`227 `, `227-`) so a code is never read as part of an address.
fn reply_number_lists(raw: &[u8]) -> impl Iterator<Item = NumList> + '_ {
    let mut pos = 0;
    let mut line_start = true;
    std::iter::from_fn(move || {
        while pos < raw.len() {
            if line_start {
                line_start = false;
                pos += reply_code_len(&raw[pos..]);
                continue;
            }
            let b = raw[pos];
            if b.is_ascii_digit() {
                let list = NumList::read(raw, pos);
                pos = list.end;
                return Some(list);
            }
            line_start = b == b'\n';
            pos += 1;
        }
        None
    })
}

/// 3 if `line` starts with a reply code (three digits then a space, a hyphen, the end of
/// the line or the end of input), else 0.
fn reply_code_len(line: &[u8]) -> usize {
    match line {
        [a, b, c, rest @ ..]
            if [a, b, c].iter().all(|d| d.is_ascii_digit())
                && matches!(rest.first(), None | Some(b' ' | b'-' | b'\r' | b'\n')) =>
        {
            3
        }
        _ => 0,
    }
}

/// Checks that every number is a byte and returns them as bytes.
fn octets<const N: usize>(nums: &[Num]) -> Result<[u8; N], AddrError> {
    let mut out = [0u8; N];
    if nums.len() != N {
        return Err(AddrError::Syntax);
    }
    for (dst, n) in out.iter_mut().zip(nums) {
        *dst = u8::try_from(n.value).map_err(|_| AddrError::OctetOutOfRange)?;
    }
    Ok(out)
}

/// A big-endian port from its bytes; must be 1..=65535.
fn port_from_bytes(bytes: impl IntoIterator<Item = u8>) -> Result<u16, AddrError> {
    let mut port = 0u32;
    for b in bytes {
        port = port * 256 + u32::from(b);
        if port > u32::from(u16::MAX) {
            return Err(AddrError::PortOutOfRange);
        }
    }
    match u16::try_from(port) {
        Ok(0) => Err(AddrError::PortZero),
        Ok(p) => Ok(p),
        Err(_) => Err(AddrError::PortOutOfRange),
    }
}

/// Replaces `span` of `raw` with `new`, keeping every other byte.
fn splice(raw: &[u8], span: Range<usize>, new: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() - span.len() + new.len());
    out.extend_from_slice(&raw[..span.start]);
    out.extend_from_slice(new);
    out.extend_from_slice(&raw[span.end..]);
    out
}

// ---------------------------------------------------------------------------------------
// PASV / 227 and PORT: h1,h2,h3,h4,p1,p2

/// Decodes six numbers as an IPv4 socket address.
fn addr_from_six(nums: &[Num]) -> Result<SocketAddrV4, AddrError> {
    let [h1, h2, h3, h4, p1, p2] = octets::<6>(nums)?;
    let port = port_from_bytes([p1, p2])?;
    Ok(SocketAddrV4::new(Ipv4Addr::new(h1, h2, h3, h4), port))
}

/// Finds the address of a `227` reply.
///
/// `raw` is the whole reply as received (code, text, line ends; multi-line is fine: only
/// its final line is read). The first run of at least six comma-separated numbers there
/// is the address, whatever
/// surrounds it: parentheses, `=`, nothing, trailing text (RFC 1123 4.1.2.6). Shorter
/// runs (`v2`, `1,2`) are skipped. When a longer run is found, its first six numbers
/// are used, as a client's `%d,%d,%d,%d,%d,%d` scan would. The returned span runs from
/// the first digit of h1 to the last digit of p2, as offsets into `raw`.
pub fn parse_pasv_reply(raw: &[u8]) -> Result<(SocketAddrV4, Range<usize>), AddrError> {
    let start = final_line_start(raw);
    let line = &raw[start..];
    let mut truncated = false;
    for list in reply_number_lists(line) {
        if list.nums.len() >= 6 {
            let nums = &list.nums[..6];
            let span = start + nums[0].span.start..start + nums[5].span.end;
            return Ok((addr_from_six(nums)?, span));
        }
        truncated |= list.cut_short(line);
    }
    Err(if truncated {
        AddrError::Truncated
    } else {
        AddrError::NotFound
    })
}

/// `h1,h2,h3,h4,p1,p2`: the address as `227` and `PORT` write it.
pub fn format_pasv_addr(addr: SocketAddrV4) -> String {
    let [h1, h2, h3, h4] = addr.ip().octets();
    let [p1, p2] = addr.port().to_be_bytes();
    format!("{h1},{h2},{h3},{h4},{p1},{p2}")
}

/// Replaces the address of a `227` reply with `new`, keeping every other byte.
pub fn rewrite_pasv_reply(raw: &[u8], new: SocketAddrV4) -> Result<Vec<u8>, AddrError> {
    let (_, span) = parse_pasv_reply(raw)?;
    Ok(splice(raw, span, format_pasv_addr(new).as_bytes()))
}

/// `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).\r\n`, for replies the proxy makes.
pub fn format_pasv_reply(addr: SocketAddrV4) -> Vec<u8> {
    format!(
        "227 Entering Passive Mode ({}).\r\n",
        format_pasv_addr(addr)
    )
    .into_bytes()
}

/// Parses the arguments of `PORT`: exactly six comma-separated numbers. Blanks around
/// the commas, before the first number and after the last (line end included) are
/// tolerated; anything else is a [`AddrError::Syntax`] error.
pub fn parse_port_args(args: &[u8]) -> Result<SocketAddrV4, AddrError> {
    addr_from_six(&strict_number_list(args)?.nums)
}

/// `PORT h1,h2,h3,h4,p1,p2\r\n`.
pub fn format_port_command(addr: SocketAddrV4) -> Vec<u8> {
    format!("PORT {}\r\n", format_pasv_addr(addr)).into_bytes()
}

/// The single number list that makes up all of `args`, blanks aside.
fn strict_number_list(args: &[u8]) -> Result<NumList, AddrError> {
    let start = skip_blanks(args, 0);
    if !args.get(start).is_some_and(u8::is_ascii_digit) {
        return Err(AddrError::Syntax);
    }
    let list = NumList::read(args, start);
    if list.dangling || !rest_is_blank(args, list.end) {
        return Err(AddrError::Syntax);
    }
    Ok(list)
}

// ---------------------------------------------------------------------------------------
// EPSV / 229: (|||port|)

/// Finds the port of a `229` reply: `<d><d><d>port<d>` with the same delimiter four
/// times, any printable ASCII but a digit (RFC 2428 recommends `|`). `raw` is the whole
/// reply (only its final line is read); the first well-formed group there wins, so `...`
/// in the text does no harm.
pub fn parse_epsv_reply(raw: &[u8]) -> Result<u16, AddrError> {
    epsv_port_span(raw).and_then(|span| port_from_decimal(&raw[span]))
}

/// Where the port digits of a `229` reply are.
fn epsv_port_span(raw: &[u8]) -> Result<Range<usize>, AddrError> {
    let mut truncated = false;
    for i in final_line_start(raw)..raw.len() {
        let d = raw[i];
        if !is_delimiter(d) || d.is_ascii_digit() || raw.get(i + 1..i + 3) != Some(&[d, d]) {
            continue;
        }
        let start = i + 3;
        let (num, end) = read_number(raw, start);
        if num.span.is_empty() {
            truncated |= rest_is_blank(raw, start);
            continue;
        }
        if raw.get(end) == Some(&d) {
            return Ok(start..end);
        }
        truncated |= rest_is_blank(raw, end);
    }
    Err(if truncated {
        AddrError::Truncated
    } else {
        AddrError::NotFound
    })
}

/// Replaces the port of a `229` reply, keeping every other byte.
pub fn rewrite_epsv_reply(raw: &[u8], port: u16) -> Result<Vec<u8>, AddrError> {
    let span = epsv_port_span(raw)?;
    // Refuse to rewrite a reply whose own port is unusable, as the other rewrites do.
    port_from_decimal(&raw[span.clone()])?;
    Ok(splice(raw, span, port.to_string().as_bytes()))
}

/// `229 Entering Extended Passive Mode (|||port|)\r\n`.
pub fn format_epsv_reply(port: u16) -> Vec<u8> {
    format!("229 Entering Extended Passive Mode (|||{port}|)\r\n").into_bytes()
}

/// RFC 2428: a delimiter is an ASCII character in 33..=126.
fn is_delimiter(b: u8) -> bool {
    (33..=126).contains(&b)
}

/// A decimal port, all digits, 1..=65535.
fn port_from_decimal(text: &[u8]) -> Result<u16, AddrError> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return Err(AddrError::Syntax);
    }
    let (num, _) = read_number(text, 0);
    match u16::try_from(num.value) {
        Ok(0) => Err(AddrError::PortZero),
        Ok(p) => Ok(p),
        Err(_) => Err(AddrError::PortOutOfRange),
    }
}

// ---------------------------------------------------------------------------------------
// EPRT: <d>af<d>addr<d>port<d>

/// Parses the arguments of `EPRT`: `<d>af<d>addr<d>port<d>` where `d` is the first byte
/// (33..=126), `af` is 1 (IPv4, dotted decimal) or 2 (IPv6, RFC 4291 text), and the port
/// is 1..=65535. Blanks before and after are tolerated.
pub fn parse_eprt_args(args: &[u8]) -> Result<SocketAddr, AddrError> {
    let args = args.trim_ascii();
    let (&d, body) = args.split_first().ok_or(AddrError::Syntax)?;
    if !is_delimiter(d) {
        return Err(AddrError::Syntax);
    }
    let mut fields = body.split(|&b| b == d);
    let (Some(af), Some(host), Some(port)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(AddrError::Truncated);
    };
    // A well-formed argument has exactly one more delimiter, closing it.
    match (fields.next(), fields.next()) {
        (None, _) => return Err(AddrError::Truncated),
        (Some(b""), None) => {}
        _ => return Err(AddrError::Syntax),
    }
    let ip = match af {
        b"1" => IpAddr::V4(parse_dotted_quad(host)?),
        b"2" => IpAddr::V6(parse_ipv6(host)?),
        _ if af.iter().all(u8::is_ascii_digit) && !af.is_empty() => {
            return Err(AddrError::BadFamily);
        }
        _ => return Err(AddrError::Syntax),
    };
    Ok(SocketAddr::new(ip, port_from_decimal(port)?))
}

/// Dotted decimal, leading zeros allowed (read as decimal). IPv6 text here is a family
/// mismatch.
fn parse_dotted_quad(text: &[u8]) -> Result<Ipv4Addr, AddrError> {
    if text.contains(&b':') {
        return Err(AddrError::BadFamily);
    }
    let mut parts = text.split(|&b| b == b'.');
    let mut out = [0u8; 4];
    for dst in &mut out {
        let part = parts.next().ok_or(AddrError::Syntax)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(AddrError::Syntax);
        }
        let (num, _) = read_number(part, 0);
        *dst = u8::try_from(num.value).map_err(|_| AddrError::OctetOutOfRange)?;
    }
    if parts.next().is_some() {
        return Err(AddrError::Syntax);
    }
    Ok(Ipv4Addr::from(out))
}

/// IPv6 text. A plain IPv4 address here is a family mismatch.
fn parse_ipv6(text: &[u8]) -> Result<Ipv6Addr, AddrError> {
    let text = std::str::from_utf8(text).map_err(|_| AddrError::Syntax)?;
    text.parse().map_err(|_| {
        if text.parse::<Ipv4Addr>().is_ok() {
            AddrError::BadFamily
        } else {
            AddrError::Syntax
        }
    })
}

/// `|1|1.2.3.4|5000|` or `|2|::1|5000|`: the arguments of `EPRT`.
pub fn format_eprt_args(addr: SocketAddr) -> String {
    let af = match addr {
        SocketAddr::V4(_) => 1,
        SocketAddr::V6(_) => 2,
    };
    format!("|{af}|{}|{}|", addr.ip(), addr.port())
}

/// `EPRT |1|1.2.3.4|5000|\r\n` or `EPRT |2|::1|5000|\r\n`.
pub fn format_eprt_command(addr: SocketAddr) -> Vec<u8> {
    format!("EPRT {}\r\n", format_eprt_args(addr)).into_bytes()
}

// ---------------------------------------------------------------------------------------
// LPRT / LPSV / 228: af,hal,h1..hn,pal,p1..pm

/// The shape of a long address list, judged from its first numbers.
enum LongShape {
    /// Not a long address: unknown family or host length.
    Foreign,
    /// A long address with an impossible port length.
    Invalid(AddrError),
    /// A long address, but the list stops before its end.
    Short,
    /// A complete long address: host length `hal`, in the first `len` numbers.
    Complete { hal: usize, len: usize },
}

fn long_shape(values: &[u32]) -> LongShape {
    let hal = match values {
        [4, 4, ..] => 4,
        [6, 16, ..] => 16,
        [] | [4 | 6] => return LongShape::Short,
        _ => return LongShape::Foreign,
    };
    let Some(&pal) = values.get(2 + hal) else {
        return LongShape::Short;
    };
    // A byte like every other number; bounding it also keeps the arithmetic small.
    let Ok(pal) = u8::try_from(pal) else {
        return LongShape::Invalid(AddrError::OctetOutOfRange);
    };
    let len = 3 + hal + usize::from(pal);
    if values.len() < len {
        LongShape::Short
    } else {
        LongShape::Complete { hal, len }
    }
}

/// Decodes a complete long address: `nums` holds exactly its numbers, as measured by
/// [`long_shape`], host length `hal`.
fn long_addr(nums: &[Num], hal: usize) -> Result<SocketAddr, AddrError> {
    let mut bytes = Vec::with_capacity(nums.len());
    for n in nums {
        bytes.push(u8::try_from(n.value).map_err(|_| AddrError::OctetOutOfRange)?);
    }
    let (host, rest) = bytes
        .get(2..)
        .and_then(|b| b.split_at_checked(hal))
        .ok_or(AddrError::Syntax)?;
    let ip = if let Ok(v4) = <[u8; 4]>::try_from(host) {
        IpAddr::from(v4)
    } else {
        IpAddr::from(<[u8; 16]>::try_from(host).map_err(|_| AddrError::Syntax)?)
    };
    // `rest` is `pal` then the port bytes; a port needs at least one byte.
    let port_bytes = rest.get(1..).unwrap_or_default();
    if port_bytes.is_empty() {
        return Err(AddrError::Syntax);
    }
    let port = port_from_bytes(port_bytes.iter().copied())?;
    Ok(SocketAddr::new(ip, port))
}

/// Parses the arguments of `LPRT` (RFC 1639): `4,4,h1..h4,pal,p..` or
/// `6,16,h1..h16,pal,p..`, blanks around commas tolerated. The port length `pal` may be
/// 1 or more as long as the port fits in 16 bits and is not 0.
pub fn parse_lprt_args(args: &[u8]) -> Result<SocketAddr, AddrError> {
    let list = strict_number_list(args)?;
    let values: Vec<u32> = list.values().collect();
    match long_shape(&values) {
        LongShape::Foreign => Err(AddrError::BadFamily),
        LongShape::Invalid(e) => Err(e),
        LongShape::Short => Err(AddrError::Truncated),
        LongShape::Complete { hal, len } if len == values.len() => long_addr(&list.nums, hal),
        LongShape::Complete { .. } => Err(AddrError::Syntax),
    }
}

/// Finds the address of a `228` reply: the first number list in the text that starts
/// with `4,4` or `6,16` and is long enough for its host and port lengths. `raw` is the
/// whole reply (only its final line is read); the span is the address as offsets into it.
pub fn parse_lpsv_reply(raw: &[u8]) -> Result<(SocketAddr, Range<usize>), AddrError> {
    let start = final_line_start(raw);
    let line = &raw[start..];
    let mut truncated = false;
    for list in reply_number_lists(line) {
        let values: Vec<u32> = list.values().collect();
        match long_shape(&values) {
            LongShape::Complete { hal, len } => {
                let nums = &list.nums[..len];
                let span = start + nums[0].span.start..start + nums[len - 1].span.end;
                return Ok((long_addr(nums, hal)?, span));
            }
            LongShape::Invalid(e) => return Err(e),
            LongShape::Short if values.len() >= 2 => truncated |= list.cut_short(line),
            _ => {}
        }
    }
    Err(if truncated {
        AddrError::Truncated
    } else {
        AddrError::NotFound
    })
}

/// `4,4,h1,h2,h3,h4,2,p1,p2` or `6,16,h1..h16,2,p1,p2`.
pub fn format_lprt_args(addr: SocketAddr) -> String {
    let mut nums: Vec<u8> = match addr.ip() {
        IpAddr::V4(ip) => [4, 4].into_iter().chain(ip.octets()).collect(),
        IpAddr::V6(ip) => [6, 16].into_iter().chain(ip.octets()).collect(),
    };
    nums.push(2);
    nums.extend(addr.port().to_be_bytes());
    let text: Vec<String> = nums.iter().map(u8::to_string).collect();
    text.join(",")
}

/// `LPRT <args>\r\n`.
pub fn format_lprt_command(addr: SocketAddr) -> Vec<u8> {
    format!("LPRT {}\r\n", format_lprt_args(addr)).into_bytes()
}

/// Replaces the address of a `228` reply, keeping every other byte. The family may
/// change (the list grows or shrinks).
pub fn rewrite_lpsv_reply(raw: &[u8], new: SocketAddr) -> Result<Vec<u8>, AddrError> {
    let (_, span) = parse_lpsv_reply(raw)?;
    Ok(splice(raw, span, format_lprt_args(new).as_bytes()))
}

/// `228 Entering Long Passive Mode (<args>)\r\n`.
pub fn format_lpsv_reply(addr: SocketAddr) -> Vec<u8> {
    format!(
        "228 Entering Long Passive Mode ({})\r\n",
        format_lprt_args(addr)
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Parses a 227 reply and also checks that the span holds exactly the group.
    fn pasv(raw: &[u8]) -> Result<SocketAddrV4, AddrError> {
        let (addr, span) = parse_pasv_reply(raw)?;
        assert_eq!(parse_port_args(&raw[span.clone()]), Ok(addr));
        assert!(raw[span.start].is_ascii_digit() && raw[span.end - 1].is_ascii_digit());
        Ok(addr)
    }

    // ----- 227 -----

    #[test]
    fn pasv_real_servers() {
        let cases: &[(&[u8], &str)] = &[
            // vsftpd
            (
                b"227 Entering Passive Mode (127,0,0,99,117,49).\r\n",
                "127.0.0.99:30001",
            ),
            // pure-ftpd
            (
                b"227 Entering Passive Mode (127,0,0,99,117,49)\r\n",
                "127.0.0.99:30001",
            ),
            // proftpd
            (
                b"227 Entering Passive Mode (127,0,0,99,156,64).\r\n",
                "127.0.0.99:40000",
            ),
            // pyftpdlib
            (
                b"227 Entering passive mode (127,0,0,99,156,64).\r\n",
                "127.0.0.99:40000",
            ),
            // IIS-like, blank after a comma
            (
                b"227 Entering Passive Mode (192,168,1,20, 195,80)\r\n",
                "192.168.1.20:50000",
            ),
            // no parentheses, `=`
            (b"227 =192,168,0,1,4,1\r\n", "192.168.0.1:1025"),
            (
                b"227 Entering Passive Mode 192,168,1,2,4,1.\r\n",
                "192.168.1.2:1025",
            ),
            // blanks and tabs on both sides of the commas, bare LF
            (b"227 Passive (10 , 0,\t0 ,1 ,4, 0)\n", "10.0.0.1:1024"),
            // leading zeros are decimal
            (
                b"227 Entering Passive Mode (010,000,000,001,004,001)\r\n",
                "10.0.0.1:1025",
            ),
            // no line end at all
            (b"227 (1,2,3,4,5,6)", "1.2.3.4:1286"),
        ];
        for (raw, want) in cases {
            assert_eq!(pasv(raw), Ok(v4(want)), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn pasv_span_is_exactly_the_group() {
        let raw = b"227 Entering Passive Mode (192,168,1,20, 195,80).\r\n";
        let (_, span) = parse_pasv_reply(raw).unwrap();
        assert_eq!(&raw[span], b"192,168,1,20, 195,80");
    }

    #[test]
    fn pasv_digits_before_the_group_are_skipped() {
        // A short number run is not the group: scanning goes on to the first run of six.
        for raw in [
            &b"227 Entering Passive Mode v2 (10,0,0,1,4,0)\r\n"[..],
            b"227 Mode 1, then 2,3 (10,0,0,1,4,0)\r\n",
            b"227 1,2,3,4,5 and then (10,0,0,1,4,0)\r\n",
            b"227 Entering Passive Mode, ok, (10,0,0,1,4,0)\r\n",
        ] {
            assert_eq!(
                pasv(raw),
                Ok(v4("10.0.0.1:1024")),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn pasv_code_is_never_part_of_the_address() {
        // Without skipping the code, `227 1,2,3,4,5` would be read as a group.
        assert_eq!(pasv(b"227 1,2,3,4,5,6\r\n"), Ok(v4("1.2.3.4:1286")));
        // Three digits followed by a comma are a number, not a code: text given without
        // its code still parses.
        assert_eq!(pasv(b"127,0,0,1,4,1"), Ok(v4("127.0.0.1:1025")));
        // The same for the code of a multi-line reply's final line.
        let raw = b"227-Entering Passive Mode\r\n227 (10,0,0,1,4,1)\r\n";
        assert_eq!(pasv(raw), Ok(v4("10.0.0.1:1025")));
        let raw = b"227-Entering\r\n227 227,1,2,3,4,5\r\n";
        assert_eq!(pasv(raw), Ok(v4("227.1.2.3:1029")));
    }

    #[test]
    fn only_the_final_line_of_a_multi_line_reply_carries_the_address() {
        // Lines before the last are free text: a third host there is never the answer.
        let raw = b"227-Note (6,6,6,6,4,1)\r\n227 Entering Passive Mode (10,0,0,1,4,2)\r\n";
        let (addr, span) = parse_pasv_reply(raw).unwrap();
        assert_eq!(addr, v4("10.0.0.1:1026"));
        assert_eq!(&raw[span], b"10,0,0,1,4,2");
        let rewritten = rewrite_pasv_reply(raw, v4("192.0.2.1:1026")).unwrap();
        assert_eq!(
            rewritten,
            b"227-Note (6,6,6,6,4,1)\r\n227 Entering Passive Mode (192,0,2,1,4,2)\r\n"
        );
        let raw = b"227-Entering Passive Mode (6,6,6,6,4,1)\r\n227 OK\r\n";
        assert_eq!(pasv(raw), Err(AddrError::NotFound));
        let raw = b"229-Note (|||4444|)\r\n229 Entering Extended Passive Mode (|||30001|)\r\n";
        assert_eq!(parse_epsv_reply(raw), Ok(30001));
        assert_eq!(
            parse_epsv_reply(b"229-(|||4444|)\r\n229 no port\r\n"),
            Err(AddrError::NotFound)
        );
        let raw = b"228-(4,4,6,6,6,6,2,4,1)\r\n228 Long (4,4,10,0,0,1,2,4,2)\r\n";
        assert_eq!(
            parse_lpsv_reply(raw).map(|p| p.0),
            Ok("10.0.0.1:1026".parse().unwrap())
        );
    }

    #[test]
    fn pasv_longer_run_uses_first_six() {
        let raw = b"227 (1,2,3,4,5,6,7)\r\n";
        let (addr, span) = parse_pasv_reply(raw).unwrap();
        assert_eq!(addr, v4("1.2.3.4:1286"));
        assert_eq!(&raw[span], b"1,2,3,4,5,6");
    }

    #[test]
    fn pasv_malformed() {
        let cases: &[(&[u8], AddrError)] = &[
            (
                b"227 Entering Passive Mode (256,0,0,1,4,1)\r\n",
                AddrError::OctetOutOfRange,
            ),
            (
                b"227 Entering Passive Mode (10,0,0,1,256,1)\r\n",
                AddrError::OctetOutOfRange,
            ),
            (
                b"227 Entering Passive Mode (10,0,0,1,4,999999999999999999999)\r\n",
                AddrError::OctetOutOfRange,
            ),
            (
                b"227 Entering Passive Mode (10,0,0,1,0,0)\r\n",
                AddrError::PortZero,
            ),
            (
                b"227 Entering Passive Mode (10,0,0,1,4\r\n",
                AddrError::Truncated,
            ),
            (
                b"227 Entering Passive Mode (10,0,0,1,4,\r\n",
                AddrError::Truncated,
            ),
            (
                b"227 Entering Passive Mode (10,0,0,1,4,",
                AddrError::Truncated,
            ),
            (
                b"227 Entering Passive Mode (10,0,0,1,4)\r\n",
                AddrError::NotFound,
            ),
            (b"227 Entering Passive Mode\r\n", AddrError::NotFound),
            (b"227\r\n", AddrError::NotFound),
            (b"227", AddrError::NotFound),
            (b"", AddrError::NotFound),
            (b"227 Entering Passive Mode 42\r\n", AddrError::NotFound),
        ];
        for (raw, err) in cases {
            assert_eq!(
                parse_pasv_reply(raw).map(|r| r.0),
                Err(*err),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn pasv_rewrite_keeps_everything_else() {
        let raw = b"227 Entering Passive Mode (192,168,1,20, 195,80) caf\xe9.\r\n";
        let out = rewrite_pasv_reply(raw, v4("203.0.113.7:50000")).unwrap();
        assert_eq!(
            out,
            b"227 Entering Passive Mode (203,0,113,7,195,80) caf\xe9.\r\n"
        );
        let raw = b"227 =192,168,0,1,4,1\r\n";
        assert_eq!(
            rewrite_pasv_reply(raw, v4("1.2.3.4:65535")).unwrap(),
            b"227 =1,2,3,4,255,255\r\n"
        );
        assert_eq!(
            rewrite_pasv_reply(b"227 nothing\r\n", v4("1.2.3.4:5")),
            Err(AddrError::NotFound)
        );
    }

    #[test]
    fn pasv_formats() {
        assert_eq!(
            format_pasv_addr(v4("127.0.0.99:30001")),
            "127,0,0,99,117,49"
        );
        assert_eq!(
            format_pasv_reply(v4("10.0.0.1:1025")),
            b"227 Entering Passive Mode (10,0,0,1,4,1).\r\n"
        );
    }

    // ----- PORT -----

    #[test]
    fn port_args() {
        assert_eq!(
            parse_port_args(b"132,235,1,2,24,131"),
            Ok(v4("132.235.1.2:6275"))
        );
        assert_eq!(
            parse_port_args(b"10, 0 ,0,\t1,4,1 \r\n"),
            Ok(v4("10.0.0.1:1025"))
        );
        assert_eq!(parse_port_args(b" 10,0,0,1,4,1"), Ok(v4("10.0.0.1:1025")));
        assert_eq!(
            parse_port_args(b"10,0,0,300,4,1"),
            Err(AddrError::OctetOutOfRange)
        );
        assert_eq!(parse_port_args(b"10,0,0,1,0,0"), Err(AddrError::PortZero));
        for bad in [
            &b""[..],
            b"\r\n",
            b"10,0,0,1,4",
            b"10,0,0,1,4,1,7",
            b"10,0,0,1,4,",
            b"(10,0,0,1,4,1)",
            b"10,0,0,1,4,1)",
            b"10.0.0.1,4,1",
            b"10,0,0,1,4,1 x",
            b"-1,0,0,1,4,1",
        ] {
            assert_eq!(
                parse_port_args(bad),
                Err(AddrError::Syntax),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn port_command_format() {
        assert_eq!(
            format_port_command(v4("132.235.1.2:6275")),
            b"PORT 132,235,1,2,24,131\r\n"
        );
    }

    // ----- 229 -----

    #[test]
    fn epsv_replies() {
        assert_eq!(
            parse_epsv_reply(b"229 Entering Extended Passive Mode (|||6446|)\r\n"),
            Ok(6446)
        );
        assert_eq!(
            parse_epsv_reply(b"229 Entering Extended Passive Mode (!!!6446!)\r\n"),
            Ok(6446)
        );
        assert_eq!(
            parse_epsv_reply(b"229 Entering extended passive mode (|||40000|).\r\n"),
            Ok(40000)
        );
        // An ellipsis before the group is not a delimiter triple with a port.
        assert_eq!(
            parse_epsv_reply(b"229 Extended Passive Mode... (|||1025|)\n"),
            Ok(1025)
        );
        assert_eq!(
            parse_epsv_reply(b"229 (|||0|)\r\n"),
            Err(AddrError::PortZero)
        );
        assert_eq!(
            parse_epsv_reply(b"229 (|||65536|)\r\n"),
            Err(AddrError::PortOutOfRange)
        );
        assert_eq!(
            parse_epsv_reply(b"229 (|||99999999999999999999|)\r\n"),
            Err(AddrError::PortOutOfRange)
        );
        assert_eq!(
            parse_epsv_reply(b"229 (|||6446\r\n"),
            Err(AddrError::Truncated)
        );
        assert_eq!(parse_epsv_reply(b"229 (|||\r\n"), Err(AddrError::Truncated));
        assert_eq!(
            parse_epsv_reply(b"229 (|!|6446|)\r\n"),
            Err(AddrError::NotFound)
        );
        assert_eq!(
            parse_epsv_reply(b"229 (|||6446!)\r\n"),
            Err(AddrError::NotFound)
        );
        assert_eq!(
            parse_epsv_reply(b"229 Entering Extended Passive Mode\r\n"),
            Err(AddrError::NotFound)
        );
        assert_eq!(parse_epsv_reply(b""), Err(AddrError::NotFound));
    }

    #[test]
    fn epsv_format_and_rewrite() {
        assert_eq!(
            format_epsv_reply(6446),
            b"229 Entering Extended Passive Mode (|||6446|)\r\n"
        );
        assert_eq!(
            rewrite_epsv_reply(
                b"229 Entering Extended Passive Mode (!!!6446!) ok\r\n",
                50000
            )
            .unwrap(),
            b"229 Entering Extended Passive Mode (!!!50000!) ok\r\n"
        );
        assert_eq!(
            rewrite_epsv_reply(b"229 (|||0|)\r\n", 5),
            Err(AddrError::PortZero)
        );
    }

    // ----- EPRT -----

    #[test]
    fn eprt_rfc2428_examples() {
        assert_eq!(
            parse_eprt_args(b"|1|132.235.1.2|6275|"),
            Ok(sa("132.235.1.2:6275"))
        );
        assert_eq!(
            parse_eprt_args(b"|2|1080::8:800:200C:417A|5282|"),
            Ok(sa("[1080::8:800:200c:417a]:5282"))
        );
    }

    #[test]
    fn eprt_variants() {
        assert_eq!(
            parse_eprt_args(b"!1!10.0.0.1!1025!\r\n"),
            Ok(sa("10.0.0.1:1025"))
        );
        assert_eq!(
            parse_eprt_args(b"|1|010.000.000.001|1025|"),
            Ok(sa("10.0.0.1:1025"))
        );
        assert_eq!(
            parse_eprt_args(b"|2|::ffff:10.0.0.1|1025|"),
            Ok(sa("[::ffff:10.0.0.1]:1025"))
        );
        assert_eq!(parse_eprt_args(b"|2|::1|65535|"), Ok(sa("[::1]:65535")));
    }

    #[test]
    fn eprt_errors() {
        let cases: &[(&[u8], AddrError)] = &[
            (b"|3|10.0.0.1|1025|", AddrError::BadFamily),
            (b"|1|::1|1025|", AddrError::BadFamily),
            (b"|2|10.0.0.1|1025|", AddrError::BadFamily),
            (b"|1|10.0.0.256|1025|", AddrError::OctetOutOfRange),
            (b"|1|10.0.0.1|0|", AddrError::PortZero),
            (b"|1|10.0.0.1|65536|", AddrError::PortOutOfRange),
            (b"|1|10.0.0.1|1025", AddrError::Truncated),
            (b"|1|10.0.0.1", AddrError::Truncated),
            (b"|1|", AddrError::Truncated),
            (b"", AddrError::Syntax),
            (b" |1|10.0.0.1|1025| x", AddrError::Syntax),
            (b"|1|10.0.0.1|1025|x", AddrError::Syntax),
            (b"|1|10.0.0.1|1025||", AddrError::Syntax),
            (b"|x|10.0.0.1|1025|", AddrError::Syntax),
            (b"||10.0.0.1|1025|", AddrError::Syntax),
            (b"|1|10.0.0|1025|", AddrError::Syntax),
            (b"|1|10.0.0.1.5|1025|", AddrError::Syntax),
            (b"|1|10..0.1|1025|", AddrError::Syntax),
            (b"|1|10.0.0.1|-5|", AddrError::Syntax),
            (b"|1|10.0.0.1||", AddrError::Syntax),
            (b"|2|fe80::1%eth0|1025|", AddrError::Syntax),
            (b"|2|\xff::1|1025|", AddrError::Syntax),
            (b"\x7f1\x7f10.0.0.1\x7f1025\x7f", AddrError::Syntax),
        ];
        for (args, err) in cases {
            assert_eq!(
                parse_eprt_args(args),
                Err(*err),
                "{}",
                String::from_utf8_lossy(args)
            );
        }
    }

    #[test]
    fn eprt_formats() {
        assert_eq!(
            format_eprt_command(sa("1.2.3.4:5000")),
            b"EPRT |1|1.2.3.4|5000|\r\n"
        );
        assert_eq!(
            format_eprt_command(sa("[::1]:5000")),
            b"EPRT |2|::1|5000|\r\n"
        );
        assert_eq!(
            format_eprt_args(sa("[1080::8:800:200c:417a]:5282")),
            "|2|1080::8:800:200c:417a|5282|"
        );
    }

    // ----- LPRT / 228 -----

    #[test]
    fn lprt_rfc1639_examples() {
        assert_eq!(
            parse_lprt_args(b"4,4,132,235,1,2,2,24,131"),
            Ok(sa("132.235.1.2:6275"))
        );
        assert_eq!(
            parse_lprt_args(b"6,16,16,128,0,0,0,0,0,0,0,8,8,0,32,12,65,122,2,20,162"),
            Ok(sa("[1080::8:800:200c:417a]:5282"))
        );
        // One port byte, blanks around commas, trailing line end.
        assert_eq!(
            parse_lprt_args(b"4, 4,10,0,0,1 ,1,80\r\n"),
            Ok(sa("10.0.0.1:80"))
        );
        // Three port bytes with a leading zero still fit in 16 bits.
        assert_eq!(
            parse_lprt_args(b"4,4,10,0,0,1,3,0,4,1"),
            Ok(sa("10.0.0.1:1025"))
        );
    }

    #[test]
    fn lprt_errors() {
        let cases: &[(&[u8], AddrError)] = &[
            (b"5,4,10,0,0,1,2,4,1", AddrError::BadFamily),
            (b"4,16,10,0,0,1,2,4,1", AddrError::BadFamily),
            (b"6,4,10,0,0,1,2,4,1", AddrError::BadFamily),
            (b"4,4,10,0,0,256,2,4,1", AddrError::OctetOutOfRange),
            (b"4,4,10,0,0,1,2,4,256", AddrError::OctetOutOfRange),
            (b"4,4,10,0,0,1,300,4,1", AddrError::OctetOutOfRange),
            (b"4,4,10,0,0,1,2,0,0", AddrError::PortZero),
            (b"4,4,10,0,0,1,3,1,0,0", AddrError::PortOutOfRange),
            (b"4,4,10,0,0,1,2,4", AddrError::Truncated),
            (b"4,4,10,0,0,1", AddrError::Truncated),
            (b"4", AddrError::Truncated),
            (b"6,16,1,2,3", AddrError::Truncated),
            (b"4,4,10,0,0,1,0", AddrError::Syntax),
            (b"4,4,10,0,0,1,2,4,1,9", AddrError::Syntax),
            (b"4,4,10,0,0,1,2,4,1 x", AddrError::Syntax),
            (b"", AddrError::Syntax),
            (b"4,4,10,0,0,1,2,4,", AddrError::Syntax),
        ];
        for (args, err) in cases {
            assert_eq!(
                parse_lprt_args(args),
                Err(*err),
                "{}",
                String::from_utf8_lossy(args)
            );
        }
    }

    #[test]
    fn lprt_formats() {
        assert_eq!(
            format_lprt_args(sa("132.235.1.2:6275")),
            "4,4,132,235,1,2,2,24,131"
        );
        assert_eq!(
            format_lprt_command(sa("[1080::8:800:200c:417a]:5282")),
            b"LPRT 6,16,16,128,0,0,0,0,0,0,0,8,8,0,32,12,65,122,2,20,162\r\n"
        );
        assert_eq!(
            format_lpsv_reply(sa("10.0.0.1:1025")),
            b"228 Entering Long Passive Mode (4,4,10,0,0,1,2,4,1)\r\n"
        );
    }

    #[test]
    fn lpsv_replies() {
        let raw = b"228 Entering Long Passive Mode (4,4,132,235,1,2,2,24,131)\r\n";
        let (addr, span) = parse_lpsv_reply(raw).unwrap();
        assert_eq!(addr, sa("132.235.1.2:6275"));
        assert_eq!(&raw[span], b"4,4,132,235,1,2,2,24,131");

        let raw = b"228 Entering Long Passive Mode (6,16,16,128,0,0,0,0,0,0,0,8,8,0,32,12,65,122,2,20,162)\r\n";
        assert_eq!(
            parse_lpsv_reply(raw).unwrap().0,
            sa("[1080::8:800:200c:417a]:5282")
        );

        // Other number runs before the group are skipped, the code too.
        let raw = b"228 Long Passive Mode v2, 1,2,3 = 4, 4,10,0,0,1,2,4,1\r\n";
        assert_eq!(parse_lpsv_reply(raw).unwrap().0, sa("10.0.0.1:1025"));
        let raw = b"228 (6,4,1,2) (4,4,10,0,0,1,2,4,1)\r\n";
        assert_eq!(parse_lpsv_reply(raw).unwrap().0, sa("10.0.0.1:1025"));
    }

    #[test]
    fn lpsv_errors() {
        let cases: &[(&[u8], AddrError)] = &[
            (
                b"228 Entering Long Passive Mode (4,4,10,0,0,1,2,4\r\n",
                AddrError::Truncated,
            ),
            (
                b"228 Entering Long Passive Mode (4,4,10,0,0,1,2,4,\r\n",
                AddrError::Truncated,
            ),
            (
                b"228 Entering Long Passive Mode (4,4,10,0,0,1,2,4)\r\n",
                AddrError::NotFound,
            ),
            (
                b"228 Entering Long Passive Mode (4,4,10,0,0,999,2,4,1)\r\n",
                AddrError::OctetOutOfRange,
            ),
            (
                b"228 Entering Long Passive Mode (4,4,10,0,0,1,2,0,0)\r\n",
                AddrError::PortZero,
            ),
            (
                b"228 Entering Long Passive Mode (4,4,10,0,0,1,0)\r\n",
                AddrError::Syntax,
            ),
            (
                b"228 Entering Long Passive Mode (4,4,10,0,0,1,300,4,1)\r\n",
                AddrError::OctetOutOfRange,
            ),
            (b"228 Entering Long Passive Mode\r\n", AddrError::NotFound),
            (b"228", AddrError::NotFound),
        ];
        for (raw, err) in cases {
            assert_eq!(
                parse_lpsv_reply(raw).map(|r| r.0),
                Err(*err),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn lpsv_rewrite_can_change_family() {
        let raw = b"228 Entering Long Passive Mode (4,4,10,0,0,1,2,4,1) now\r\n";
        assert_eq!(
            rewrite_lpsv_reply(raw, sa("[::1]:1025")).unwrap(),
            b"228 Entering Long Passive Mode (6,16,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,2,4,1) now\r\n"
        );
        assert_eq!(
            rewrite_lpsv_reply(raw, sa("203.0.113.7:50000")).unwrap(),
            b"228 Entering Long Passive Mode (4,4,203,0,113,7,2,195,80) now\r\n"
        );
    }

    #[test]
    fn errors_have_readable_messages() {
        assert_eq!(
            AddrError::OctetOutOfRange.to_string(),
            "address number out of range (greater than 255)"
        );
        assert_eq!(
            AddrError::PortZero.to_string(),
            "port 0 is not a valid data port"
        );
    }

    // ----- properties -----

    fn any_v4() -> impl Strategy<Value = SocketAddrV4> {
        (any::<u32>(), 1..=u16::MAX)
            .prop_map(|(ip, port)| SocketAddrV4::new(Ipv4Addr::from(ip), port))
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            any_v4().prop_map(SocketAddr::V4),
            (any::<u128>(), 1..=u16::MAX)
                .prop_map(|(ip, port)| SocketAddr::new(Ipv6Addr::from(ip).into(), port)),
        ]
    }

    /// Reply text that cannot contain a number, or a line break.
    const NO_DIGITS: &str = "[^0-9\r\n]{0,30}";

    proptest! {
        #[test]
        fn pasv_round_trip(addr in any_v4()) {
            let raw = format_pasv_reply(addr);
            let (got, span) = parse_pasv_reply(&raw).unwrap();
            prop_assert_eq!(got, addr);
            let group = format_pasv_addr(addr);
            prop_assert_eq!(&raw[span], group.as_bytes());
        }

        #[test]
        fn pasv_rewrite_keeps_other_bytes(
            old in any_v4(),
            new in any_v4(),
            prefix in NO_DIGITS,
            suffix in NO_DIGITS,
        ) {
            let raw = format!("227 {prefix}{}{suffix}\r\n", format_pasv_addr(old)).into_bytes();
            prop_assert_eq!(parse_pasv_reply(&raw).unwrap().0, old);
            let out = rewrite_pasv_reply(&raw, new).unwrap();
            let want = format!("227 {prefix}{}{suffix}\r\n", format_pasv_addr(new)).into_bytes();
            prop_assert_eq!(out, want);
        }

        #[test]
        fn port_round_trip(addr in any_v4()) {
            let line = format_port_command(addr);
            prop_assert_eq!(parse_port_args(&line[5..]), Ok(addr));
        }

        #[test]
        fn eprt_round_trip(addr in any_addr()) {
            let line = format_eprt_command(addr);
            prop_assert_eq!(parse_eprt_args(&line[5..]), Ok(addr));
        }

        #[test]
        fn lprt_round_trip(addr in any_addr()) {
            let line = format_lprt_command(addr);
            prop_assert_eq!(parse_lprt_args(&line[5..]), Ok(addr));
        }

        #[test]
        fn lpsv_round_trip(addr in any_addr()) {
            let raw = format_lpsv_reply(addr);
            let (got, span) = parse_lpsv_reply(&raw).unwrap();
            prop_assert_eq!(got, addr);
            let group = format_lprt_args(addr);
            prop_assert_eq!(&raw[span], group.as_bytes());
        }

        #[test]
        fn lpsv_rewrite_keeps_other_bytes(
            old in any_addr(),
            new in any_addr(),
            prefix in NO_DIGITS,
            suffix in NO_DIGITS,
        ) {
            let raw = format!("228 {prefix}{}{suffix}\r\n", format_lprt_args(old)).into_bytes();
            prop_assert_eq!(parse_lpsv_reply(&raw).unwrap().0, old);
            let out = rewrite_lpsv_reply(&raw, new).unwrap();
            let want = format!("228 {prefix}{}{suffix}\r\n", format_lprt_args(new)).into_bytes();
            prop_assert_eq!(out, want);
        }

        #[test]
        fn epsv_round_trip(port in 1..=u16::MAX, d in (33u8..=126).prop_filter("a digit is no delimiter here", |d| !d.is_ascii_digit())) {
            prop_assert_eq!(parse_epsv_reply(&format_epsv_reply(port)), Ok(port));
            let d = char::from(d);
            let raw = format!("229 Entering Extended Passive Mode ({d}{d}{d}{port}{d})\r\n");
            prop_assert_eq!(parse_epsv_reply(raw.as_bytes()), Ok(port));
        }

        #[test]
        fn epsv_rewrite_keeps_other_bytes(old in 1..=u16::MAX, new in 1..=u16::MAX, prefix in NO_DIGITS, suffix in NO_DIGITS) {
            // The prefix must not hold a delimiter triple of its own followed by digits,
            // which it cannot: it has no digits.
            let raw = format!("229 {prefix}(|||{old}|){suffix}\r\n").into_bytes();
            prop_assert_eq!(parse_epsv_reply(&raw), Ok(old));
            let want = format!("229 {prefix}(|||{new}|){suffix}\r\n").into_bytes();
            prop_assert_eq!(rewrite_epsv_reply(&raw, new).unwrap(), want);
        }

        #[test]
        fn continuation_lines_never_supply_the_address(
            decoy in any_v4(),
            real in any_v4(),
            port in 1..=u16::MAX,
            decoy_port in 1..=u16::MAX,
            text in NO_DIGITS,
        ) {
            // Whatever the lines before the last say, the final line decides, and a final
            // line without an address is no address at all.
            let inner = format!(
                "227-{text}({})\r\n ({})\r\n229-(|||{decoy_port}|)\r\n228-({})\r\n",
                format_pasv_addr(decoy), format_pasv_addr(decoy),
                format_lprt_args(SocketAddr::V4(decoy)),
            );
            let raw = format!("{inner}227 ({})\r\n", format_pasv_addr(real)).into_bytes();
            prop_assert_eq!(parse_pasv_reply(&raw).unwrap().0, real);
            let raw = format!("{inner}227 {text}\r\n").into_bytes();
            prop_assert!(parse_pasv_reply(&raw).is_err());
            let raw = format!("{inner}229 (|||{port}|)\r\n").into_bytes();
            prop_assert_eq!(parse_epsv_reply(&raw), Ok(port));
            let raw = format!("{inner}229 {text}\r\n").into_bytes();
            prop_assert!(parse_epsv_reply(&raw).is_err());
            let raw = format!("{inner}228 {text}\r\n").into_bytes();
            prop_assert!(parse_lpsv_reply(&raw).is_err());
        }

        #[test]
        fn parsers_never_panic_on_bytes(input in proptest::collection::vec(any::<u8>(), 0..80)) {
            check_all(&input);
        }

        #[test]
        fn parsers_never_panic_on_addressy_text(input in "[0-9]{0,4}[-0-9, ()|!.:\r\n\tx]{0,80}") {
            check_all(input.as_bytes());
        }
    }

    /// Runs every parser and checks the spans they return.
    fn check_all(input: &[u8]) {
        if let Ok((addr, span)) = parse_pasv_reply(input) {
            assert_eq!(parse_port_args(&input[span.clone()]), Ok(addr));
            let out = rewrite_pasv_reply(input, addr).unwrap();
            assert_eq!(
                out.len(),
                input.len() - span.len() + format_pasv_addr(addr).len()
            );
        }
        if let Ok((addr, span)) = parse_lpsv_reply(input) {
            assert_eq!(parse_lprt_args(&input[span]), Ok(addr));
            rewrite_lpsv_reply(input, addr).unwrap();
        }
        let _ = parse_epsv_reply(input);
        let _ = rewrite_epsv_reply(input, 1);
        let _ = parse_port_args(input);
        let _ = parse_eprt_args(input);
        let _ = parse_lprt_args(input);
    }
}
