//! An upstream byte stream, framed by `find_line` and assembled by `ReplyAssembler`,
//! the way the session reads a server.
//!
//! The stream is read three times, with realistic and with small limits, so the
//! too-long-line and too-large-reply paths are reached with short inputs. Properties:
//! every completed reply is exactly the bytes of the lines that made it (a contiguous
//! part of the input, from the opening line to the closing one), within the size limit,
//! with a valid code that its first line starts with; an error leaves the assembler idle.

#![no_main]

use fxprelay_core::proto::{LineTooLong, ReplyAssembler, ReplyError, find_line, trim_eol};
use libfuzzer_sys::fuzz_target;

/// (longest line, largest reply), in bytes.
const LIMITS: [(usize, usize); 3] = [(512, 4096), (64, 256), (16, 48)];

fuzz_target!(|data: &[u8]| {
    for (max_line, max_reply) in LIMITS {
        check_stream(data, max_line, max_reply);
    }
});

fn check_stream(data: &[u8], max_line: usize, max_reply: usize) {
    let mut asm = ReplyAssembler::new(max_reply);
    let mut pos = 0;
    // Where the reply being assembled started, while one is open.
    let mut reply_start = None;
    while pos < data.len() {
        let rest = &data[pos..];
        let len = match find_line(rest, max_line) {
            Ok(Some(n)) => n,
            Ok(None) => {
                assert!(rest.len() <= max_line && !rest.contains(&b'\n'));
                break;
            }
            Err(LineTooLong { max }) => {
                assert_eq!(max, max_line);
                assert!(!rest[..max_line.min(rest.len())].contains(&b'\n'));
                // The session gives up on the upstream here; resynchronise after the
                // next line end to keep exploring the rest of the input.
                asm.reset();
                assert!(!asm.in_progress());
                reply_start = None;
                match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => pos += i + 1,
                    None => break,
                }
                continue;
            }
        };
        assert!(len >= 1 && len <= max_line && len <= rest.len());
        let line = &rest[..len];
        assert_eq!(line.last(), Some(&b'\n'));
        assert!(!line[..len - 1].contains(&b'\n'));

        let start = *reply_start.get_or_insert(pos);
        pos += len;
        match asm.push_line(line) {
            Ok(Some(reply)) => {
                reply_start = None;
                assert!(!asm.in_progress());
                // Exactly the bytes it was built from, in order.
                assert_eq!(reply.raw, &data[start..pos]);
                assert!(reply.raw.len() <= max_reply);
                assert!((100..=599).contains(&reply.code), "{}", reply.code);
                assert_eq!(reply.raw[..3], *reply.code.to_string().as_bytes());
                assert_eq!(u16::from(reply.class()), reply.code / 100);
                assert_eq!(reply.is_multiline(), reply.raw[3..].starts_with(b"-"));
                if reply.is_multiline() {
                    // The closing line is the code and a space (or nothing).
                    let closing = trim_eol(line);
                    assert!(closing.starts_with(&reply.raw[..3]));
                    assert!(matches!(closing.get(3), None | Some(b' ')));
                } else {
                    assert_eq!(start + len, pos);
                }
                let text = reply.text();
                assert!(reply.raw.len() >= text.len() + 4 || text.is_empty());
                if !text.is_empty() {
                    assert_eq!(&reply.raw[4..4 + text.len()], text);
                }
            }
            Ok(None) => {
                assert!(asm.in_progress());
                assert!(pos - start <= max_reply);
            }
            Err(ReplyError::TooLarge { max }) => {
                assert_eq!(max, max_reply);
                assert!(pos - start > max_reply);
                assert!(!asm.in_progress());
                reply_start = None;
            }
            Err(ReplyError::Malformed) => {
                // Only a first line can be malformed: continuation lines are free text.
                assert_eq!(start + len, pos);
                assert!(!asm.in_progress());
                reply_start = None;
            }
        }
    }
}
