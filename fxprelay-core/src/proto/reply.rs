//! Server replies, assembled incrementally from lines.
//!
//! A reply is `DDD text` on one line, or a multi-line reply that opens with `DDD-` and
//! runs until a line that starts with the same code followed by a space (RFC 959 4.2).
//! Lines in between are free text: they may themselves start with digits or even with
//! `DDD-`, and they are kept verbatim.

use thiserror::Error;

use super::line::trim_eol;

/// One complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code, 100..=599.
    pub code: u16,
    /// Every byte of the reply as received: all lines, with their terminators.
    pub raw: Vec<u8>,
}

impl Reply {
    /// The first digit of the code: 1 preliminary, 2 completion, 3 intermediate,
    /// 4 transient failure, 5 permanent failure.
    pub fn class(&self) -> u8 {
        (self.code / 100).min(9) as u8
    }

    /// Whether the reply was sent in the `DDD-` … `DDD ` form.
    pub fn is_multiline(&self) -> bool {
        self.raw.get(3) == Some(&b'-')
    }

    /// The text after the code and its separator up to the end of the reply, without the
    /// final line terminator. For a multi-line reply the inner lines (and their line
    /// ends) are part of it, including the closing line's `DDD ` prefix.
    pub fn text(&self) -> &[u8] {
        trim_eol(self.raw.get(4..).unwrap_or_default())
    }
}

/// Why upstream bytes are not a valid reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplyError {
    #[error("malformed reply line")]
    Malformed,
    #[error("reply larger than {max} bytes")]
    TooLarge { max: usize },
}

/// Builds [`Reply`]s from complete lines, one line at a time.
#[derive(Debug, Clone)]
pub struct ReplyAssembler {
    max_reply_bytes: usize,
    /// Code of the multi-line reply being assembled, if any.
    open: Option<[u8; 3]>,
    buf: Vec<u8>,
}

impl ReplyAssembler {
    /// An assembler that rejects any reply, all lines included, longer than
    /// `max_reply_bytes`.
    pub fn new(max_reply_bytes: usize) -> Self {
        ReplyAssembler {
            max_reply_bytes,
            open: None,
            buf: Vec::new(),
        }
    }

    /// Feeds one complete line, terminator included. Returns the reply it completes, if
    /// any. After an error the partial reply is discarded and the assembler is idle
    /// again, though a caller normally treats the upstream as broken.
    pub fn push_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        if self.buf.len().saturating_add(line.len()) > self.max_reply_bytes {
            self.reset();
            return Err(ReplyError::TooLarge {
                max: self.max_reply_bytes,
            });
        }
        match self.open {
            None => self.push_first(line),
            Some(code) => Ok(self.push_continuation(code, line)),
        }
    }

    fn push_first(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let text = trim_eol(line);
        let code = reply_code(text).ok_or(ReplyError::Malformed)?;
        match text.get(3) {
            None | Some(b' ') => Ok(Some(Reply {
                code: code_value(code),
                raw: line.to_vec(),
            })),
            Some(b'-') => {
                self.open = Some(code);
                self.buf.extend_from_slice(line);
                Ok(None)
            }
            Some(_) => Err(ReplyError::Malformed),
        }
    }

    fn push_continuation(&mut self, code: [u8; 3], line: &[u8]) -> Option<Reply> {
        self.buf.extend_from_slice(line);
        let text = trim_eol(line);
        let closes = text.starts_with(&code) && matches!(text.get(3), None | Some(b' '));
        if !closes {
            return None;
        }
        self.open = None;
        Some(Reply {
            code: code_value(code),
            raw: std::mem::take(&mut self.buf),
        })
    }

    /// True while a multi-line reply is partly assembled: an EOF now truncates it.
    pub fn in_progress(&self) -> bool {
        self.open.is_some()
    }

    /// Discards any partial reply.
    pub fn reset(&mut self) {
        self.open = None;
        self.buf.clear();
    }
}

/// The three code digits at the start of `text`, if they form a valid reply code
/// (first digit 1 to 5, RFC 959 4.2.1).
fn reply_code(text: &[u8]) -> Option<[u8; 3]> {
    match text {
        [a @ b'1'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => Some([*a, *b, *c]),
        _ => None,
    }
}

fn code_value(code: [u8; 3]) -> u16 {
    code.iter()
        .fold(0, |acc, d| acc * 10 + u16::from(d.wrapping_sub(b'0')))
}

/// Reply codes by their RFC 959 (4.2.2) meaning, for code that acts on a reply as a
/// client would.
pub mod code {
    /// `200 Command okay.`
    pub const COMMAND_OK: u16 = 200;
    /// `202 Command not implemented, superfluous at this site.` (a `PASS` the server
    /// did not need).
    pub const SUPERFLUOUS: u16 = 202;
    /// `211 System status`: also the reply carrying `FEAT`'s list (RFC 2389).
    pub const SYSTEM_STATUS: u16 = 211;
    /// `220 Service ready for new user.`: the greeting.
    pub const SERVICE_READY: u16 = 220;
    /// `230 User logged in, proceed.`
    pub const LOGGED_IN: u16 = 230;
    /// `234`: `AUTH TLS` accepted, the TLS handshake follows (RFC 4217).
    pub const AUTH_OK: u16 = 234;
    /// `331 User name okay, need password.`
    pub const NEED_PASSWORD: u16 = 331;
}

/// A single-line reply generated by the proxy itself: `CODE text\r\n`.
///
/// CR and LF in `text` become spaces, so text that echoes peer input can never end the
/// line early and smuggle in a second reply.
pub fn reply_line(code: u16, text: &str) -> Vec<u8> {
    let mut out = format!("{code:03} ").into_bytes();
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
    out
}

/// The path a `257` reply names (`PWD`, `MKD`): the first `"..."` of the reply's text,
/// with `""` read as `"` (RFC 959, appendix II). `None` without a closed quote.
pub fn quoted_path(text: &[u8]) -> Option<Vec<u8>> {
    let start = text.iter().position(|&b| b == b'"')? + 1;
    let mut out = vec![];
    let mut i = start;
    while i < text.len() {
        match (text[i], text.get(i + 1)) {
            (b'"', Some(b'"')) => {
                out.push(b'"');
                i += 2;
            }
            (b'"', _) => return Some(out),
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pwd_quotes() {
        assert_eq!(
            quoted_path(b"\"/home/x\" is the current directory"),
            Some(b"/home/x".to_vec())
        );
        assert_eq!(
            quoted_path(b"\"/a \"\"q\"\"\" ok"),
            Some(b"/a \"q\"".to_vec())
        );
        assert_eq!(quoted_path(b"no quotes"), None);
    }

    /// Feeds `raw` line by line, collecting every completed reply.
    fn assemble(max: usize, raw: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut asm = ReplyAssembler::new(max);
        let mut out = Vec::new();
        for line in raw.split_inclusive(|&b| b == b'\n') {
            if let Some(r) = asm.push_line(line)? {
                out.push(r);
            }
        }
        assert!(!asm.in_progress(), "reply left open");
        Ok(out)
    }

    #[test]
    fn single_line_reply() {
        let r = assemble(4096, b"220 (vsFTPd 3.0.5)\r\n").unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].code, 220);
        assert_eq!(r[0].class(), 2);
        assert!(!r[0].is_multiline());
        assert_eq!(r[0].text(), b"(vsFTPd 3.0.5)");
        assert_eq!(r[0].raw, b"220 (vsFTPd 3.0.5)\r\n");
    }

    #[test]
    fn code_without_text() {
        let r = assemble(4096, b"200\r\n").unwrap();
        assert_eq!(r[0].code, 200);
        assert_eq!(r[0].text(), b"");
    }

    #[test]
    fn feat_multiline() {
        let raw = b"211-Features:\r\n EPRT\r\n EPSV\r\n211 End\r\n";
        let r = assemble(4096, raw).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].code, 211);
        assert!(r[0].is_multiline());
        assert_eq!(r[0].raw, raw.to_vec());
        assert_eq!(r[0].text(), b"Features:\r\n EPRT\r\n EPSV\r\n211 End");
    }

    #[test]
    fn continuation_lines_that_look_like_codes() {
        // RFC 959 4.2: inner lines starting with digits, or even with the same code and
        // a hyphen, do not end the reply.
        let raw = b"211-Status:\r\n211-still going\r\n123 other digits\r\n2110 close?\r\n211\r\n";
        let r = assemble(4096, raw).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].raw, raw.to_vec());
    }

    #[test]
    fn multiline_with_bare_lf() {
        let raw = b"230-Welcome\n230-to the server\n230 Login successful.\n";
        let r = assemble(4096, raw).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].code, 230);
        assert_eq!(r[0].raw, raw.to_vec());
    }

    #[test]
    fn several_replies_in_a_row() {
        let raw = b"150 Opening\r\n226-Transfer\r\n done\r\n226 OK\r\n250 CWD ok\n";
        let codes: Vec<u16> = assemble(4096, raw)
            .unwrap()
            .iter()
            .map(|r| r.code)
            .collect();
        assert_eq!(codes, [150, 226, 250]);
    }

    #[test]
    fn in_progress_tracks_open_multiline() {
        let mut asm = ReplyAssembler::new(4096);
        assert!(!asm.in_progress());
        assert_eq!(asm.push_line(b"220-Hello\r\n"), Ok(None));
        assert!(asm.in_progress());
        assert_eq!(asm.push_line(b"more\r\n"), Ok(None));
        let r = asm.push_line(b"220 Ready\r\n").unwrap().unwrap();
        assert_eq!(r.raw, b"220-Hello\r\nmore\r\n220 Ready\r\n");
        assert!(!asm.in_progress());
    }

    #[test]
    fn malformed_lines() {
        for line in [
            &b"hello\r\n"[..],
            b"\r\n",
            b"",
            b"22 short\r\n",
            b"2200 four digits\r\n",
            b"220x\r\n",
            b"600 bad class\r\n",
            b"020 bad class\r\n",
            b" 220 leading space\r\n",
            b"2a0 x\r\n",
        ] {
            let mut asm = ReplyAssembler::new(4096);
            assert_eq!(asm.push_line(line), Err(ReplyError::Malformed), "{line:?}");
        }
    }

    #[test]
    fn too_large_single_and_multi() {
        let mut asm = ReplyAssembler::new(10);
        assert_eq!(
            asm.push_line(b"220 0123456\r\n"),
            Err(ReplyError::TooLarge { max: 10 })
        );

        let mut asm = ReplyAssembler::new(20);
        assert_eq!(asm.push_line(b"211-abc\r\n"), Ok(None));
        assert_eq!(asm.push_line(b" xxxxxx\r\n"), Ok(None));
        assert_eq!(
            asm.push_line(b" yyyyyy\r\n"),
            Err(ReplyError::TooLarge { max: 20 })
        );
        // The partial reply is dropped.
        assert!(!asm.in_progress());
        assert_eq!(asm.push_line(b"200 ok\r\n").unwrap().unwrap().code, 200);
    }

    #[test]
    fn exact_limit_fits() {
        let mut asm = ReplyAssembler::new(8);
        assert_eq!(asm.push_line(b"200 ok\r\n").unwrap().unwrap().raw.len(), 8);
    }

    #[test]
    fn non_utf8_reply_text_kept() {
        let raw = b"550 caf\xe9.txt: No such file\r\n";
        assert_eq!(assemble(4096, raw).unwrap()[0].raw, raw.to_vec());
    }

    #[test]
    fn text_and_class_of_handmade_replies() {
        let r = Reply {
            code: 200,
            raw: b"20".to_vec(),
        };
        assert_eq!(r.text(), b"");
        assert!(!r.is_multiline());
        let r = Reply {
            code: 65535,
            raw: vec![],
        };
        assert_eq!(r.class(), 9);
    }

    #[test]
    fn reply_line_format() {
        assert_eq!(
            reply_line(425, "Can't open data connection."),
            b"425 Can't open data connection.\r\n"
        );
        assert_eq!(reply_line(200, ""), b"200 \r\n");
        assert_eq!(reply_line(500, "a\r\n500 b"), b"500 a  500 b\r\n");
    }

    proptest! {
        #[test]
        fn never_panics(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..12), max in 0usize..200) {
            let mut asm = ReplyAssembler::new(max);
            for line in &lines {
                if let Ok(Some(r)) = asm.push_line(line) {
                    prop_assert!((100..600).contains(&r.code));
                    prop_assert!(r.raw.len() <= max);
                    let _ = (r.class(), r.is_multiline(), r.text());
                }
            }
        }

        #[test]
        fn multiline_round_trip(
            code in 100u16..600,
            body in proptest::collection::vec("[ -~]{0,30}", 0..6),
        ) {
            let mut raw = format!("{code}-start\r\n").into_bytes();
            for line in &body {
                // An inner line may not close the reply.
                let closes = line.starts_with(&code.to_string())
                    && matches!(line.as_bytes().get(3), None | Some(b' '));
                prop_assume!(!closes);
                raw.extend_from_slice(line.as_bytes());
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(format!("{code} end\r\n").as_bytes());
            let r = assemble(usize::MAX, &raw).unwrap();
            prop_assert_eq!(r.len(), 1);
            prop_assert_eq!(r[0].code, code);
            prop_assert_eq!(&r[0].raw, &raw);
        }
    }
}
