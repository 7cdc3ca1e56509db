//! Directory listings as servers send them over a data connection: RFC 3659 `MLSD`
//! facts ([`parse_mlsd`]) and Unix `ls -l` lines of `LIST` ([`parse_list`]), each entry a
//! [`Listed`]; and the `time-val` of `MLSD`'s `modify` fact and `MDTM`'s reply
//! ([`Timestamp`]).
//!
//! Like the rest of `proto`, bytes in and values out: names stay bytes (a Latin-1 name is
//! still the name to copy), a line that cannot be read is left out, and a name that
//! could climb out of the listed directory (`..`, one with a `/`) is never returned.

use super::line::{find_line, trim_eol};

/// A file or a directory (links and special files are never listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Dir,
}

/// A modification time in UTC, to the second: `YYYYMMDDHHMMSS` read as a number, which
/// orders like the time it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `MLSD`'s `modify` fact or `MDTM`'s `213` text (RFC 3659 `time-val`:
    /// `YYYYMMDDHHMMSS[.sss]`); fractions are dropped (servers differ in precision).
    pub fn parse(text: &[u8]) -> Option<Timestamp> {
        let text = text.trim_ascii();
        let whole = text.split(|&b| b == b'.').next()?;
        if whole.len() != 14 || !whole.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(whole).ok()?.parse().ok().map(Timestamp)
    }
}

/// One entry of a listing (links and special files are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: Vec<u8>,
    pub kind: Kind,
    pub size: Option<u64>,
    /// MLSD's `modify` fact (UTC); `LIST` times are too coarse to use.
    pub modified: Option<Timestamp>,
}

/// Splits a listing into lines (CRLF or LF), dropping empty ones.
pub fn listing_lines(raw: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let n = match find_line(rest, rest.len()) {
            Ok(Some(n)) => n,
            _ => rest.len(),
        };
        let line = trim_eol(&rest[..n]);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            out.push(line);
        }
        rest = &rest[n..];
    }
    out
}

/// A name that is safe to join into a path: not empty, `.`, `..`, and without `/`.
pub fn usable_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/')
}

/// RFC 3659 `MLSD` lines: `fact=value;fact=value; name`.
pub fn parse_mlsd(raw: &[u8]) -> Vec<Listed> {
    listing_lines(raw)
        .into_iter()
        .filter_map(|line| {
            let sp = line.iter().position(|&b| b == b' ')?;
            let (facts, name) = (&line[..sp], &line[sp + 1..]);
            let mut kind = None;
            let mut size = None;
            let mut modified = None;
            for fact in facts.split(|&b| b == b';') {
                let Some(eq) = fact.iter().position(|&b| b == b'=') else {
                    continue;
                };
                let key = String::from_utf8_lossy(&fact[..eq]).to_ascii_lowercase();
                let value = String::from_utf8_lossy(&fact[eq + 1..]).to_ascii_lowercase();
                match key.as_str() {
                    "type" => {
                        kind = match value.as_str() {
                            "file" => Some(Kind::File),
                            "dir" => Some(Kind::Dir),
                            _ => None,
                        }
                    }
                    "size" => size = value.parse().ok(),
                    "modify" => modified = Timestamp::parse(value.as_bytes()),
                    _ => {}
                }
            }
            let kind = kind?;
            usable_name(name).then(|| Listed {
                name: name.to_vec(),
                kind,
                size,
                modified,
            })
        })
        .collect()
}

/// Unix `ls -l` lines: `drwxr-xr-x 2 owner group 4096 Nov 24 16:00 name`. The name is
/// everything after the eighth field, spaces included. Links, devices and `total` lines
/// are skipped.
pub fn parse_list(raw: &[u8]) -> Vec<Listed> {
    listing_lines(raw)
        .into_iter()
        .filter_map(|line| {
            let kind = match line.first()? {
                b'-' => Kind::File,
                b'd' => Kind::Dir,
                _ => return None,
            };
            let mut fields = vec![];
            let mut i = 0;
            while fields.len() < 8 {
                while line.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
                    i += 1;
                }
                let start = i;
                while line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                    i += 1;
                }
                if start == i {
                    return None;
                }
                fields.push(&line[start..i]);
            }
            // Exactly one blank separates the time from the name; more belong to it.
            let name = line.get(i + 1..)?;
            let size = fields
                .get(4)
                .and_then(|f| std::str::from_utf8(f).ok())
                .and_then(|s| s.parse().ok());
            usable_name(name).then(|| Listed {
                name: name.to_vec(),
                kind,
                size,
                modified: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mlsd() {
        let raw = b"type=cdir;modify=20261124;perm=el; .\r\n\
type=pdir;modify=20261124; ..\r\n\
type=file;size=8388608;modify=20261124;perm=r; big.bin\r\n\
type=dir;modify=20261124160102.5;perm=el; sub dir\r\n\
type=OS.unix=slink:/x;size=1; link\r\n\
Type=File;Size=3; caf\xe9.txt\r\n";
        let e = parse_mlsd(raw);
        assert_eq!(
            e,
            vec![
                Listed {
                    name: b"big.bin".to_vec(),
                    kind: Kind::File,
                    size: Some(8388608),
                    modified: None,
                },
                Listed {
                    name: b"sub dir".to_vec(),
                    kind: Kind::Dir,
                    size: None,
                    modified: Some(Timestamp(20261124160102)),
                },
                Listed {
                    name: b"caf\xe9.txt".to_vec(),
                    kind: Kind::File,
                    size: Some(3),
                    modified: None,
                },
            ]
        );
    }

    #[test]
    fn ls_l() {
        let raw = b"total 8\r\n\
drwxr-xr-x    2 999      995          4096 Nov 24 16:00 a dir\r\n\
-rw-r--r--    1 999      995       8388608 Nov 24 16:00 big.bin\r\n\
-rw-r--r--    1 owner    group           5 Jan 01  2020  two spaces\r\n\
lrwxrwxrwx    1 999      995             7 Nov 24 16:00 l -> big.bin\r\n\
drwxr-xr-x    2 999      995          4096 Nov 24 16:00 ..\r\n\
-rw-r--r-- 1 short\r\n";
        let e = parse_list(raw);
        assert_eq!(
            e,
            vec![
                Listed {
                    name: b"a dir".to_vec(),
                    kind: Kind::Dir,
                    size: Some(4096),
                    modified: None,
                },
                Listed {
                    name: b"big.bin".to_vec(),
                    kind: Kind::File,
                    size: Some(8388608),
                    modified: None,
                },
                Listed {
                    name: b" two spaces".to_vec(),
                    kind: Kind::File,
                    size: Some(5),
                    modified: None,
                },
            ]
        );
    }

    #[test]
    fn names_that_would_escape_are_dropped() {
        assert!(parse_mlsd(b"type=file; a/../../x\r\n").is_empty());
        assert!(parse_list(b"-rw-r--r-- 1 o g 5 Jan 01 2020 ../x\r\n").is_empty());
    }

    #[test]
    fn listing_split() {
        assert_eq!(
            listing_lines(b"a\r\nb\n\nc"),
            vec![&b"a"[..], &b"b"[..], &b"c"[..]]
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            Timestamp::parse(b"20261124160000"),
            Some(Timestamp(20261124160000))
        );
        assert_eq!(
            Timestamp::parse(b" 20261124160000.123\r\n"),
            Some(Timestamp(20261124160000))
        );
        assert_eq!(Timestamp::parse(b"2026112416"), None);
        assert_eq!(Timestamp::parse(b"2026112416000x"), None);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
            for e in parse_mlsd(&raw).into_iter().chain(parse_list(&raw)) {
                prop_assert!(usable_name(&e.name));
            }
        }
    }
}
