//! Checking a copy with a hash that both servers compute: pure, no I/O.
//!
//! Servers announce hash commands in `FEAT`:
//! - `HASH` (draft-bryan-ftpext-hash): `HASH CRC32;MD5;SHA-1*;SHA-256;SHA-512` lists the
//!   algorithms (`*` marks the one in force), `OPTS HASH SHA-256` selects one, and
//!   `HASH path` answers `213 SHA-256 0-12 <hex> path` (the range is the bytes hashed);
//! - the older one-algorithm commands `XSHA512`, `XSHA256`, `XSHA1` (or `XSHA`), `XMD5`
//!   and `XCRC`, each listed on its own, answering with the hex digest somewhere in the
//!   text (proftpd's `mod_digest`: `250 A948904F...`; other servers put the path before
//!   or after it, or answer `213`).
//!
//! [`Support`] reads what a server offers, [`choose`] picks the strongest algorithm both
//! servers of a copy compute (each by its own preferred command: `HASH` where offered),
//! [`parse_reply`] turns a reply into a [`Digest`], whatever bytes a server sends.
//! [`Check`] names what a finished copy was checked with; [`Verify`] and
//! [`OnMismatch`] are the operator's choices.

use std::fmt;

/// A hash algorithm, weakest first: the derived order is the order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Crc32,
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Crc32,
        Algorithm::Md5,
        Algorithm::Sha1,
        Algorithm::Sha256,
        Algorithm::Sha512,
    ];

    /// The name in `FEAT`, `OPTS HASH` and `HASH` replies (the IANA hash names).
    pub fn hash_name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Md5 => "MD5",
            Algorithm::Sha1 => "SHA-1",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512 => "SHA-512",
        }
    }

    /// The name in reports, JSON and the summary line (`sha-256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "crc32",
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha-1",
            Algorithm::Sha256 => "sha-256",
            Algorithm::Sha512 => "sha-512",
        }
    }

    /// A name as servers write it: `SHA-256`, `sha256`, `SHA256` (case-insensitive,
    /// with or without the dash).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        let squashed: String = name
            .chars()
            .filter(|c| *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        Some(match squashed.as_str() {
            "CRC32" => Algorithm::Crc32,
            "MD5" => Algorithm::Md5,
            "SHA1" => Algorithm::Sha1,
            "SHA256" => Algorithm::Sha256,
            "SHA512" => Algorithm::Sha512,
            _ => return None,
        })
    }

    /// Hex digits of a digest.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Crc32 => 8,
            Algorithm::Md5 => 32,
            Algorithm::Sha1 => 40,
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// The one-algorithm commands for it, the preferred first.
    fn legacy_verbs(self) -> &'static [&'static str] {
        match self {
            Algorithm::Crc32 => &["XCRC"],
            Algorithm::Md5 => &["XMD5"],
            Algorithm::Sha1 => &["XSHA1", "XSHA"],
            Algorithm::Sha256 => &["XSHA256"],
            Algorithm::Sha512 => &["XSHA512"],
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one server is asked for a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `OPTS HASH <alg>`, then `HASH path`.
    Hash,
    /// `XSHA256 path` and the like.
    Legacy(&'static str),
}

impl Command {
    /// The verb, for messages.
    pub fn verb(self) -> &'static str {
        match self {
            Command::Hash => "HASH",
            Command::Legacy(v) => v,
        }
    }

    /// The line asking for `path`'s digest.
    pub fn line(self, path: &[u8]) -> Vec<u8> {
        let mut v = self.verb().as_bytes().to_vec();
        v.push(b' ');
        v.extend_from_slice(path);
        v
    }
}

/// `OPTS HASH <alg>`: the algorithm the next `HASH` uses.
pub fn opts_line(alg: Algorithm) -> Vec<u8> {
    format!("OPTS HASH {}", alg.hash_name()).into_bytes()
}

/// The hash commands one server offers, from its `FEAT` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Support {
    /// Algorithms of `HASH`.
    hash: Vec<Algorithm>,
    /// One-algorithm commands offered.
    legacy: Vec<(Algorithm, &'static str)>,
}

impl Support {
    /// From `FEAT`'s feature lines (leading space trimmed or not, any case).
    pub fn from_features<'a>(lines: impl IntoIterator<Item = &'a str>) -> Support {
        let mut s = Support::default();
        for line in lines {
            let line = line.trim();
            let (name, args) = line.split_once(' ').unwrap_or((line, ""));
            if name.eq_ignore_ascii_case("HASH") {
                for alg in args
                    .split(';')
                    .filter_map(|a| Algorithm::from_name(a.trim().trim_end_matches('*')))
                {
                    if !s.hash.contains(&alg) {
                        s.hash.push(alg);
                    }
                }
                continue;
            }
            for alg in Algorithm::ALL {
                if let Some(verb) = alg
                    .legacy_verbs()
                    .iter()
                    .find(|v| v.eq_ignore_ascii_case(name))
                    && args.is_empty()
                    && !s.legacy.iter().any(|(_, v)| v == verb)
                {
                    s.legacy.push((alg, verb));
                }
            }
        }
        s
    }

    /// How to ask this server for `alg`: `HASH` when it offers `alg` there, else the
    /// preferred one-algorithm command it lists.
    pub fn command(&self, alg: Algorithm) -> Option<Command> {
        if self.hash.contains(&alg) {
            return Some(Command::Hash);
        }
        alg.legacy_verbs()
            .iter()
            .find(|v| self.legacy.iter().any(|(a, w)| *a == alg && w == *v))
            .map(|v| Command::Legacy(v))
    }

    /// Every algorithm this server can compute, strongest first.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut all: Vec<Algorithm> = Algorithm::ALL
            .into_iter()
            .filter(|a| self.command(*a).is_some())
            .collect();
        all.reverse();
        all
    }

    /// Offers no hash command at all.
    pub fn is_empty(&self) -> bool {
        self.hash.is_empty() && self.legacy.is_empty()
    }
}

/// The algorithm a copy is checked with, and how each server is asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub algorithm: Algorithm,
    pub src: Command,
    pub dst: Command,
}

/// The strongest algorithm both servers compute, each asked its own way; `None` when
/// they have none in common.
pub fn choose(src: &Support, dst: &Support) -> Option<Choice> {
    Algorithm::ALL.into_iter().rev().find_map(|algorithm| {
        Some(Choice {
            algorithm,
            src: src.command(algorithm)?,
            dst: dst.command(algorithm)?,
        })
    })
}

/// A file's digest as a server reported it (hex, lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// `hex` (any case) as a digest of `algorithm`, if it has the right length.
    pub fn new(algorithm: Algorithm, hex: &str) -> Option<Digest> {
        (hex.len() == algorithm.hex_len() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(
            || Digest {
                algorithm,
                hex: hex.to_ascii_lowercase(),
            },
        )
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm, self.hex)
    }
}

/// Why a reply carries no usable digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("not a reply line")]
    Malformed,
    #[error("refused with {0}")]
    Refused(u16),
    #[error("the server hashed with {got}, not {asked}")]
    WrongAlgorithm { asked: Algorithm, got: String },
    #[error("the server hashed bytes {start}-{end} only, not the whole file")]
    Partial { start: u64, end: u64 },
    #[error("no {0} digest in the reply")]
    NoDigest(Algorithm),
}

/// The digest in a server's reply `raw` (every line as received) to `cmd` for `path`,
/// asked for `alg`. `size`: the file's size when known, to check that a `HASH` reply
/// covers the whole file. Never panics, whatever the bytes.
pub fn parse_reply(
    cmd: Command,
    alg: Algorithm,
    path: &[u8],
    size: Option<u64>,
    raw: &[u8],
) -> Result<Digest, ReplyError> {
    let (code, text) = final_line(raw).ok_or(ReplyError::Malformed)?;
    if code / 100 != 2 {
        return Err(ReplyError::Refused(code));
    }
    let text = String::from_utf8_lossy(text);
    match cmd {
        Command::Hash => parse_hash(alg, size, &text),
        Command::Legacy(_) => parse_legacy(alg, path, &text),
    }
}

/// `<alg> <start>-<end> <hex> <path>` (draft-bryan-ftpext-hash, section 3.1).
fn parse_hash(alg: Algorithm, size: Option<u64>, text: &str) -> Result<Digest, ReplyError> {
    let mut fields = text.split(' ').filter(|f| !f.is_empty());
    let name = fields.next().ok_or(ReplyError::NoDigest(alg))?;
    if Algorithm::from_name(name) != Some(alg) {
        return Err(ReplyError::WrongAlgorithm {
            asked: alg,
            got: name.chars().take(32).collect(),
        });
    }
    let range = fields.next().ok_or(ReplyError::NoDigest(alg))?;
    let (start, end) = range
        .split_once('-')
        .and_then(|(s, e)| Some((s.parse::<u64>().ok()?, e.parse::<u64>().ok()?)))
        .ok_or(ReplyError::NoDigest(alg))?;
    // The draft's end is the last byte's position; proftpd writes the size (one past
    // it). Either covers the whole file.
    let whole = start == 0 && size.is_none_or(|n| end == n || end.checked_add(1) == Some(n));
    if !whole {
        return Err(ReplyError::Partial { start, end });
    }
    let hex = fields.next().ok_or(ReplyError::NoDigest(alg))?;
    Digest::new(alg, hex).ok_or(ReplyError::NoDigest(alg))
}

/// The one token of the text that is `alg`'s digest: hex of the right length (a
/// `0x` prefix allowed), and not the path itself (a file may be named in hex). CRC32
/// may come without its leading zeros, when no other token is hex.
fn parse_legacy(alg: Algorithm, path: &[u8], text: &str) -> Result<Digest, ReplyError> {
    let path = String::from_utf8_lossy(path);
    let tokens: Vec<&str> = text
        .split([' ', '\t'])
        .map(|t| t.strip_prefix("0x").or(t.strip_prefix("0X")).unwrap_or(t))
        .filter(|t| !t.is_empty() && *t != path && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    if let Some(d) = tokens.iter().find_map(|t| Digest::new(alg, t)) {
        return Ok(d);
    }
    match tokens.as_slice() {
        [short] if alg == Algorithm::Crc32 && short.len() < 8 => {
            Digest::new(alg, &format!("{short:0>8}")).ok_or(ReplyError::NoDigest(alg))
        }
        _ => Err(ReplyError::NoDigest(alg)),
    }
}

/// The code and text of the last line of a reply.
fn final_line(raw: &[u8]) -> Option<(u16, &[u8])> {
    let line = raw
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .rfind(|l| !l.is_empty())?;
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match line.get(3) {
        Some(b' ') => Some((code, &line[4..])),
        None => Some((code, &[])),
        Some(_) => None,
    }
}

/// What a finished copy was checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// Nothing: `--verify none`, or neither a common hash nor `SIZE` on both servers.
    None,
    /// `SIZE` on both ends agreed.
    Size,
    /// Both servers' digests agreed (and their sizes, where they tell).
    Hash(Algorithm),
}

impl Check {
    /// `sha-256`, `size`, `none`: the report's, JSON's and summary line's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::None => "none",
            Check::Size => "size",
            Check::Hash(a) => a.as_str(),
        }
    }

    /// Some check was made.
    pub fn is_verified(self) -> bool {
        self != Check::None
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Check {
    /// A check by its word ([`Check::as_str`]).
    pub fn from_word(word: &str) -> Option<Check> {
        match word {
            "none" => Some(Check::None),
            "size" => Some(Check::Size),
            _ => Algorithm::ALL
                .into_iter()
                .find(|a| a.as_str() == word)
                .map(Check::Hash),
        }
    }
}

impl serde::Serialize for Check {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Read back as written (a saved job state restored).
impl<'de> serde::Deserialize<'de> for Check {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Check, D::Error> {
        let word = String::deserialize(d)?;
        Check::from_word(&word)
            .ok_or_else(|| serde::de::Error::custom(format!("not a check: {word:?}")))
    }
}

/// How a copy is checked (`--verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// SIZE, then a hash both servers compute (HASH, XSHA512, XSHA256, XSHA1, XMD5, XCRC
    /// as their FEAT lists them; the strongest in common) when they have one.
    #[default]
    Auto,
    /// As auto, but a file fails without a hash (before anything is copied when the
    /// servers have none in common).
    Hash,
    /// SIZE on both ends only.
    Size,
    /// No check.
    None,
}

/// What happens to a copy whose hash differs from the source's (`--on-mismatch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum OnMismatch {
    /// Rename it to NAME.fxprelay-mismatch (RNFR/RNTO) for inspection.
    #[default]
    Keep,
    /// Delete it (DELE).
    Delete,
}

/// Suffix of a mismatching copy kept for inspection.
pub const MISMATCH_SUFFIX: &[u8] = b".fxprelay-mismatch";

/// Where a mismatching copy at `path` is kept.
pub fn mismatch_path(path: &[u8]) -> Vec<u8> {
    let mut p = path.to_vec();
    p.extend_from_slice(MISMATCH_SUFFIX);
    p
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn checks_read_back_as_written() {
        let all = [Check::None, Check::Size]
            .into_iter()
            .chain(Algorithm::ALL.map(Check::Hash));
        for c in all {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<Check>(&json).unwrap(), c);
        }
        assert!(serde_json::from_str::<Check>("\"sha-3\"").is_err());
    }

    /// proftpd 1.3.8 with mod_digest, as it answered `FEAT` here.
    const PROFTPD_FEAT: &[&str] = &[
        " CLNT",
        " EPRT",
        " HASH CRC32;MD5;SHA-1*;SHA-256;SHA-512;",
        " MD5",
        " MDTM",
        " MLST modify*;perm*;size*;type*;unique*;",
        " REST STREAM",
        " SIZE",
        " XCRC",
        " XMD5",
        " XSHA",
        " XSHA1",
        " XSHA256",
        " XSHA512",
    ];
    /// Upper-cased, as `client::Features` keeps them.
    const VSFTPD_FEAT: &[&str] = &["EPRT", "EPSV", "MDTM", "PASV", "REST STREAM", "SIZE"];
    const SHA256_A: &str = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";

    fn support(lines: &[&str]) -> Support {
        Support::from_features(lines.iter().copied())
    }

    #[test]
    fn reads_hash_and_legacy_features() {
        let p = support(PROFTPD_FEAT);
        assert_eq!(p.command(Algorithm::Sha512), Some(Command::Hash));
        assert_eq!(p.command(Algorithm::Crc32), Some(Command::Hash));
        assert_eq!(p.algorithms()[0], Algorithm::Sha512);
        let legacy = support(&[" XSHA", " XCRC", " XMD5 "]);
        assert_eq!(
            legacy.command(Algorithm::Sha1),
            Some(Command::Legacy("XSHA"))
        );
        assert_eq!(
            legacy.command(Algorithm::Crc32),
            Some(Command::Legacy("XCRC"))
        );
        assert_eq!(legacy.command(Algorithm::Sha256), None);
        // XSHA1 preferred over XSHA when both are listed.
        let both = support(&["XSHA", "XSHA1"]);
        assert_eq!(
            both.command(Algorithm::Sha1),
            Some(Command::Legacy("XSHA1"))
        );
        assert!(support(VSFTPD_FEAT).is_empty());
        // Unknown algorithms and odd spellings.
        let odd = support(&[" HASH sha256;BLAKE3;SHA-1*"]);
        assert_eq!(odd.algorithms(), [Algorithm::Sha256, Algorithm::Sha1]);
    }

    #[test]
    fn chooses_the_strongest_common_algorithm() {
        let p = support(PROFTPD_FEAT);
        let c = choose(&p, &p).unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha512);
        assert_eq!((c.src, c.dst), (Command::Hash, Command::Hash));
        // A server with HASH SHA-256 only and one with XSHA256/XMD5 only: SHA-256, each
        // asked its own way.
        let a = support(&["HASH SHA-256*;MD5"]);
        let b = support(&["XSHA256", "XMD5"]);
        let c = choose(&a, &b).unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert_eq!(c.src, Command::Hash);
        assert_eq!(c.dst, Command::Legacy("XSHA256"));
        assert_eq!(choose(&support(&["HASH MD5"]), &support(&["XCRC"])), None);
        assert_eq!(choose(&p, &support(VSFTPD_FEAT)), None);
    }

    /// Replies as proftpd 1.3.8's mod_digest sent them here.
    #[test]
    fn parses_proftpd_replies() {
        let hash = b"213-Computing SHA-256 digest\r\n213 SHA-256 0-12 \
            a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447 a.txt\r\n";
        let d = parse_reply(Command::Hash, Algorithm::Sha256, b"a.txt", Some(12), hash).unwrap();
        assert_eq!(d.hex(), SHA256_A);
        let legacy = b"250-Computing SHA256 digest\r\n250 \
            A948904F2F0F479B8F8197694B30184B0D2ED1C1CD2A1EC0FB85D299A192A447\r\n";
        let e = parse_reply(
            Command::Legacy("XSHA256"),
            Algorithm::Sha256,
            b"a.txt",
            None,
            legacy,
        )
        .unwrap();
        assert_eq!(d, e);
        let crc = b"250-Computing CRC32 digest\r\n250 AF083B2D\r\n";
        let c = parse_reply(Command::Legacy("XCRC"), Algorithm::Crc32, b"a", None, crc).unwrap();
        assert_eq!(c.hex(), "af083b2d");
        let missing = b"550 nothere: No such file or directory\r\n";
        assert_eq!(
            parse_reply(Command::Hash, Algorithm::Sha256, b"nothere", None, missing),
            Err(ReplyError::Refused(550))
        );
    }

    #[test]
    fn reads_other_legacy_layouts() {
        let md5 = "6f5902ac237024bdd0c176cb93063dc4";
        for reply in [
            format!("250 {md5}\r\n"),
            format!("213 {md5}\r\n"),
            format!("250 a.txt {md5}\r\n"),
            format!("250 {md5} a.txt\r\n"),
            format!("250 \"a.txt\" 0x{}\r\n", md5.to_uppercase()),
        ] {
            let d = parse_reply(
                Command::Legacy("XMD5"),
                Algorithm::Md5,
                b"a.txt",
                None,
                reply.as_bytes(),
            );
            assert_eq!(d.map(|d| d.hex().to_owned()), Ok(md5.to_owned()), "{reply}");
        }
        // A file named like a digest is not its own digest.
        let named = format!("250 {md5} {}\r\n", "0".repeat(32));
        let d = parse_reply(
            Command::Legacy("XMD5"),
            Algorithm::Md5,
            "0".repeat(32).as_bytes(),
            None,
            named.as_bytes(),
        );
        assert_eq!(d.unwrap().hex(), md5);
        // CRC32 without leading zeros.
        let d = parse_reply(
            Command::Legacy("XCRC"),
            Algorithm::Crc32,
            b"f",
            None,
            b"250 3a686\r\n",
        );
        assert_eq!(d.unwrap().hex(), "0003a686");
        assert_eq!(
            parse_reply(
                Command::Legacy("XMD5"),
                Algorithm::Md5,
                b"f",
                None,
                b"250 ok\r\n"
            ),
            Err(ReplyError::NoDigest(Algorithm::Md5))
        );
    }

    #[test]
    fn a_hash_reply_must_answer_what_was_asked() {
        let reply = |s: String| s.into_bytes();
        let r = reply(format!("213 SHA-1 0-12 {SHA256_A} a.txt\r\n"));
        assert!(matches!(
            parse_reply(Command::Hash, Algorithm::Sha256, b"a.txt", Some(12), &r),
            Err(ReplyError::WrongAlgorithm { .. })
        ));
        let r = reply(format!("213 SHA-256 0-6 {SHA256_A} a.txt\r\n"));
        assert_eq!(
            parse_reply(Command::Hash, Algorithm::Sha256, b"a.txt", Some(12), &r),
            Err(ReplyError::Partial { start: 0, end: 6 })
        );
        let r = reply(format!("213 SHA-256 6-12 {SHA256_A} a.txt\r\n"));
        assert!(parse_reply(Command::Hash, Algorithm::Sha256, b"a.txt", Some(12), &r).is_err());
        // The draft's inclusive end is accepted too, and any end when the size is unknown.
        let r = reply(format!("213 SHA-256 0-11 {SHA256_A} a.txt\r\n"));
        assert!(parse_reply(Command::Hash, Algorithm::Sha256, b"a.txt", Some(12), &r).is_ok());
        assert!(parse_reply(Command::Hash, Algorithm::Sha256, b"a.txt", None, &r).is_ok());
        let r = reply("213 SHA-256 0-12 abc a.txt\r\n".into());
        assert!(parse_reply(Command::Hash, Algorithm::Sha256, b"a.txt", None, &r).is_err());
    }

    #[test]
    fn names_are_stable() {
        assert_eq!(Check::Hash(Algorithm::Sha256).as_str(), "sha-256");
        assert_eq!(Check::Size.to_string(), "size");
        assert_eq!(serde_json::to_string(&Check::None).unwrap(), "\"none\"");
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.hash_name()), Some(a));
            assert_eq!(Algorithm::from_name(a.as_str()), Some(a));
        }
        assert_eq!(opts_line(Algorithm::Sha1), b"OPTS HASH SHA-1");
        assert_eq!(Command::Legacy("XCRC").line(b"a b"), b"XCRC a b");
        assert_eq!(mismatch_path(b"d/x.bin"), b"d/x.bin.fxprelay-mismatch");
    }

    proptest! {
        /// Whatever a server sends, parsing ends in a digest of the asked algorithm or
        /// an error, never a panic.
        #[test]
        fn any_reply_bytes_parse_without_panic(
            raw in proptest::collection::vec(any::<u8>(), 0..300),
            path in proptest::collection::vec(any::<u8>(), 0..20),
            size in proptest::option::of(any::<u64>()),
            alg in 0usize..5,
            legacy in any::<bool>(),
        ) {
            let alg = Algorithm::ALL[alg];
            let cmd = if legacy { Command::Legacy(alg.legacy_verbs()[0]) } else { Command::Hash };
            if let Ok(d) = parse_reply(cmd, alg, &path, size, &raw) {
                prop_assert_eq!(d.algorithm, alg);
                prop_assert_eq!(d.hex().len(), alg.hex_len());
            }
        }

        /// Replies shaped like real ones, with random fields: no panic either.
        #[test]
        fn reply_shaped_bytes_parse_without_panic(
            code in 100u16..700,
            name in "[A-Za-z0-9-]{0,10}",
            range in "[0-9-]{0,24}",
            hex in "[0-9a-fA-Fx]{0,130}",
            tail in "[ -~]{0,20}",
        ) {
            let raw = format!("{code} {name} {range} {hex} {tail}\r\n");
            for alg in Algorithm::ALL {
                let _ = parse_reply(Command::Hash, alg, b"f", Some(12), raw.as_bytes());
                let _ = parse_reply(Command::Legacy("X"), alg, b"f", None, raw.as_bytes());
            }
        }

        #[test]
        fn any_feature_lines_read_without_panic(lines in proptest::collection::vec("[ -~]{0,40}", 0..10)) {
            let s = Support::from_features(lines.iter().map(String::as_str));
            if let Some(c) = choose(&s, &s) {
                prop_assert_eq!(c.algorithm, s.algorithms()[0]);
            }
        }
    }
}
