//! Line framing for the control channel.
//!
//! FTP lines end in `\r\n`, but plenty of peers send a bare `\n`, so both are accepted.
//! Lines are bytes: nothing here decodes or re-encodes them, and the terminator stays
//! part of the line so that forwarding a line is a plain copy.

use thiserror::Error;

/// A line (terminator included) would be longer than the configured limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("line longer than {max} bytes")]
pub struct LineTooLong {
    /// The limit that was exceeded, in bytes, terminator included.
    pub max: usize,
}

/// Finds the first complete line in `buf`.
///
/// Returns `Ok(Some(n))` where `n` is the length of the line including its terminating
/// `\n` (so `&buf[..n]` is the line, byte for byte), `Ok(None)` if no `\n` has arrived
/// yet and `buf` is still within `max_len`, and `Err(LineTooLong)` once the line,
/// terminator included, cannot fit in `max_len` bytes.
pub fn find_line(buf: &[u8], max_len: usize) -> Result<Option<usize>, LineTooLong> {
    // Only look at the first `max_len` bytes: a terminator beyond them would make the
    // line too long anyway, and this bounds the work per call on a hostile stream.
    let window = &buf[..buf.len().min(max_len)];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => Ok(Some(i + 1)),
        None if buf.len() <= max_len => Ok(None),
        None => Err(LineTooLong { max: max_len }),
    }
}

/// Strips one trailing `\r\n` or `\n`, and nothing else (a lone `\r` stays, as do
/// trailing spaces, which can be part of a path).
pub fn trim_eol(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
        .unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crlf_line() {
        assert_eq!(find_line(b"USER bob\r\nPASS x\r\n", 512), Ok(Some(10)));
    }

    #[test]
    fn bare_lf_line() {
        assert_eq!(find_line(b"USER bob\nPASS", 512), Ok(Some(9)));
    }

    #[test]
    fn incomplete_line_waits() {
        assert_eq!(find_line(b"USER bo", 512), Ok(None));
        assert_eq!(find_line(b"", 512), Ok(None));
        // A lone CR is not a terminator.
        assert_eq!(find_line(b"NOOP\r", 512), Ok(None));
    }

    #[test]
    fn limit_counts_the_terminator() {
        // 8 bytes with the terminator: fits in 8, not in 7.
        assert_eq!(find_line(b"NOOP 12\n", 8), Ok(Some(8)));
        assert_eq!(find_line(b"NOOP 12\n", 7), Err(LineTooLong { max: 7 }));
        assert_eq!(find_line(b"NOOP\r\n", 5), Err(LineTooLong { max: 5 }));
    }

    #[test]
    fn too_long_without_terminator() {
        assert_eq!(find_line(b"AAAAA", 5), Ok(None));
        assert_eq!(find_line(b"AAAAAA", 5), Err(LineTooLong { max: 5 }));
    }

    #[test]
    fn zero_limit() {
        assert_eq!(find_line(b"", 0), Ok(None));
        assert_eq!(find_line(b"\n", 0), Err(LineTooLong { max: 0 }));
    }

    #[test]
    fn first_line_short_even_if_buffer_long() {
        let mut buf = b"NOOP\r\n".to_vec();
        buf.extend(std::iter::repeat_n(b'A', 1000));
        assert_eq!(find_line(&buf, 10), Ok(Some(6)));
    }

    #[test]
    fn non_utf8_bytes_preserved() {
        let buf = b"RETR caf\xe9.txt\r\nNOOP\r\n";
        let n = find_line(buf, 512).unwrap().unwrap();
        assert_eq!(&buf[..n], b"RETR caf\xe9.txt\r\n");
        assert_eq!(trim_eol(&buf[..n]), b"RETR caf\xe9.txt");
    }

    #[test]
    fn trim_eol_only_strips_the_terminator() {
        assert_eq!(trim_eol(b"a\r\n"), b"a");
        assert_eq!(trim_eol(b"a\n"), b"a");
        assert_eq!(trim_eol(b"a\r"), b"a\r");
        assert_eq!(trim_eol(b"a \r\n"), b"a ");
        assert_eq!(trim_eol(b"a\r\n\r\n"), b"a\r\n");
        assert_eq!(trim_eol(b"\n\r"), b"\n\r");
        assert_eq!(trim_eol(b""), b"");
    }

    proptest! {
        #[test]
        fn find_line_never_panics_and_is_consistent(
            buf in proptest::collection::vec(any::<u8>(), 0..300),
            max in 0usize..320,
        ) {
            match find_line(&buf, max) {
                Ok(Some(n)) => {
                    prop_assert!(n >= 1 && n <= max && n <= buf.len());
                    prop_assert_eq!(buf[n - 1], b'\n');
                    prop_assert!(!buf[..n - 1].contains(&b'\n'));
                }
                Ok(None) => {
                    prop_assert!(buf.len() <= max);
                    prop_assert!(!buf.contains(&b'\n'));
                }
                Err(e) => {
                    prop_assert_eq!(e.max, max);
                    let first_lf = buf.iter().position(|&b| b == b'\n');
                    prop_assert!(first_lf.is_none_or(|i| i + 1 > max));
                }
            }
        }

        #[test]
        fn trim_eol_is_a_prefix(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            let t = trim_eol(&line);
            prop_assert!(line.starts_with(t));
            prop_assert!(line.len() - t.len() <= 2);
        }
    }
}
