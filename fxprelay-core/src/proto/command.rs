//! Client commands: `VERB[ args]\r\n`.
//!
//! The verb is normalised (uppercased, stored inline); the arguments stay a borrowed
//! slice of the original bytes, because paths are not UTF-8 and must reach the server
//! unchanged.

use std::fmt;

use thiserror::Error;

use super::line::trim_eol;

/// Longest verb accepted. RFC verbs are 3 or 4 letters; extensions such as `XSHA256`
/// are longer, and 8 bounds the metric label set without rejecting them.
pub const MAX_VERB_LEN: usize = 8;

/// Telnet "Interpret As Command".
const IAC: u8 = 0xFF;
/// Telnet Data Mark, sent (after IAC IP) before `ABOR`.
const DM: u8 = 0xF2;
/// Telnet WILL/WONT/DO/DONT carry one more option byte.
const OPTION_NEGOTIATION: std::ops::RangeInclusive<u8> = 0xFB..=0xFE;

/// A command verb: 1 to [`MAX_VERB_LEN`] ASCII alphanumerics starting with a letter,
/// stored uppercased. Comparisons with strings are therefore against uppercase text:
/// `verb == "RETR"`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verb {
    bytes: [u8; MAX_VERB_LEN],
    len: u8,
}

impl Verb {
    /// Builds a verb from its text (any case). `None` if it is empty, too long, does not
    /// start with a letter or contains anything but ASCII letters and digits.
    pub fn new(text: &[u8]) -> Option<Verb> {
        let (&first, _) = text.split_first()?;
        let valid = first.is_ascii_alphabetic()
            && text.len() <= MAX_VERB_LEN
            && text.iter().all(u8::is_ascii_alphanumeric);
        if !valid {
            return None;
        }
        let mut bytes = [0; MAX_VERB_LEN];
        for (dst, src) in bytes.iter_mut().zip(text) {
            *dst = src.to_ascii_uppercase();
        }
        Some(Verb {
            bytes,
            len: text.len() as u8,
        })
    }

    /// The verb, uppercase.
    pub fn as_str(&self) -> &str {
        let bytes = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        // Always ASCII by construction; the fallback only keeps this total.
        std::str::from_utf8(bytes).unwrap_or_default()
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verb({:?})", self.as_str())
    }
}

impl PartialEq<str> for Verb {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Verb {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Which way a transfer command moves a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `STOR`, `STOU`, `APPE`: client to server.
    Upload,
    /// `RETR`, `LIST`, `NLST`, `MLSD`: server to client.
    Download,
}

/// What a finished transfer moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Client to server bytes.
    pub upload: u64,
    /// Server to client bytes.
    pub download: u64,
}

/// What a verb does, as far as a proxy cares: the session dispatches on this instead of
/// comparing verb strings at every call site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerbClass {
    /// `USER`.
    User,
    /// `PASS`: its argument is a secret.
    Pass,
    /// `ACCT`: its argument is a secret too.
    Acct,
    /// `PORT`, `EPRT`, `LPRT`: the client names a data address.
    Active(ActiveVerb),
    /// `PASV`, `EPSV`, `LPSV`: the client asks for a data address.
    Passive(PassiveVerb),
    /// A command that opens a data connection.
    Transfer(Direction),
    /// `ABOR`.
    Abort,
    /// `REIN`: back to the logged-out state.
    Reinitialize,
    /// `AUTH`: start TLS.
    Auth,
    /// `PBSZ` (RFC 4217: always `0` with TLS).
    Pbsz,
    /// `PROT`: data connection protection.
    Prot,
    /// `CCC`: drop TLS from the control connection.
    Ccc,
    /// `SITE`: server-specific, and the proxy's own `SITE FXP`.
    Site,
    /// `STAT`.
    Status,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `FEAT`.
    Features,
    /// `HELP`.
    Help,
    /// `HOST` (RFC 7151): the name of the server the client wants, before it logs in.
    Host,
    /// `PROXY`: a PROXY-protocol v1 header arriving as if it were a command.
    ProxyHeader,
    /// Anything else: relayed as it is.
    Other,
}

/// The active-mode verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveVerb {
    Port,
    Eprt,
    Lprt,
}

/// The passive-mode verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassiveVerb {
    Pasv,
    Epsv,
    Lpsv,
}

impl ActiveVerb {
    pub fn as_str(self) -> &'static str {
        match self {
            ActiveVerb::Port => "PORT",
            ActiveVerb::Eprt => "EPRT",
            ActiveVerb::Lprt => "LPRT",
        }
    }
}

impl PassiveVerb {
    pub fn as_str(self) -> &'static str {
        match self {
            PassiveVerb::Pasv => "PASV",
            PassiveVerb::Epsv => "EPSV",
            PassiveVerb::Lpsv => "LPSV",
        }
    }
}

impl Verb {
    /// What the verb does (see [`VerbClass`]).
    pub fn class(&self) -> VerbClass {
        use VerbClass as C;
        match self.as_str() {
            "USER" => C::User,
            "PASS" => C::Pass,
            "ACCT" => C::Acct,
            "PORT" => C::Active(ActiveVerb::Port),
            "EPRT" => C::Active(ActiveVerb::Eprt),
            "LPRT" => C::Active(ActiveVerb::Lprt),
            "PASV" => C::Passive(PassiveVerb::Pasv),
            "EPSV" => C::Passive(PassiveVerb::Epsv),
            "LPSV" => C::Passive(PassiveVerb::Lpsv),
            "STOR" | "STOU" | "APPE" => C::Transfer(Direction::Upload),
            "RETR" | "LIST" | "NLST" | "MLSD" => C::Transfer(Direction::Download),
            "ABOR" => C::Abort,
            "REIN" => C::Reinitialize,
            "AUTH" => C::Auth,
            "PBSZ" => C::Pbsz,
            "PROT" => C::Prot,
            "CCC" => C::Ccc,
            "SITE" => C::Site,
            "STAT" => C::Status,
            "NOOP" => C::Noop,
            "QUIT" => C::Quit,
            "FEAT" => C::Features,
            "HELP" => C::Help,
            "HOST" => C::Host,
            "PROXY" => C::ProxyHeader,
            _ => C::Other,
        }
    }
}

/// One parsed client command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    pub verb: Verb,
    /// The bytes after the verb and its single separating space, without the line
    /// terminator. Empty when the command has no argument. Nothing else is trimmed.
    pub args: &'a [u8],
}

/// Why a line is not a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CommandError {
    #[error("empty command line")]
    Empty,
    #[error("invalid command verb")]
    BadVerb,
    /// A carriage return or NUL inside the arguments: servers that split on either would see
    /// a second command the proxy never checked (RFC 959 has neither inside a command).
    #[error("bare CR or NUL inside the command line")]
    ControlByte,
}

/// Parses one command line (terminator optional).
///
/// Leading Telnet sequences are skipped: clients send `IAC IP IAC DM` before `ABOR`,
/// and when the second IAC went out as TCP urgent data it is missing from the stream,
/// leaving a stray `DM`, so that is skipped too.
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, CommandError> {
    let line = skip_telnet(trim_eol(line));
    if line.is_empty() {
        return Err(CommandError::Empty);
    }
    let verb_len = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let (verb, rest) = line.split_at(verb_len);
    let verb = Verb::new(verb).ok_or(CommandError::BadVerb)?;
    // `rest` is empty or starts with the separating space, which is not an argument.
    let args = rest.get(1..).unwrap_or_default();
    if args.iter().any(|&b| b == b'\r' || b == 0) {
        return Err(CommandError::ControlByte);
    }
    Ok(Command { verb, args })
}

/// Drops leading Telnet command sequences.
fn skip_telnet(mut line: &[u8]) -> &[u8] {
    loop {
        line = match line {
            [IAC, op, _, rest @ ..] if OPTION_NEGOTIATION.contains(op) => rest,
            [IAC, _, rest @ ..] => rest,
            [IAC] => &[],
            [DM, rest @ ..] => rest,
            _ => return line,
        }
    }
}

/// Every verb of RFC 959, 2228, 2389, 2428, 2640, 3659, 1639, 4217, 7151 and the common
/// `X*` extensions. Anything else is counted as `OTHER` so metric labels stay bounded.
pub const KNOWN_VERBS: &[&str] = &[
    // RFC 959
    "USER", "PASS", "ACCT", "CWD", "CDUP", "SMNT", "QUIT", "REIN", "PORT", "PASV", "TYPE", "STRU",
    "MODE", "RETR", "STOR", "STOU", "APPE", "ALLO", "REST", "RNFR", "RNTO", "ABOR", "DELE", "RMD",
    "MKD", "PWD", "LIST", "NLST", "SITE", "SYST", "STAT", "HELP", "NOOP",
    // RFC 2228 / 4217 (security)
    "AUTH", "ADAT", "PBSZ", "PROT", "CCC", "MIC", "CONF", "ENC",
    // RFC 2389, 2640, 7151
    "FEAT", "OPTS", "LANG", "HOST", // RFC 2428, 1639
    "EPRT", "EPSV", "LPRT", "LPSV", // RFC 3659
    "MDTM", "SIZE", "MLSD", "MLST", // RFC 775 and common extensions
    "XCWD", "XCUP", "XMKD", "XPWD", "XRMD", "CLNT", "MFMT", "MFCT", "MFF", "XCRC", "XMD5", "XSHA",
    "XSHA1", "XSHA256", "XSHA512", "MD5", "MMD5", "HASH", "RANG", "AVBL", "CSID", "DSIZ", "SPSV",
];

/// Whether `v` is a standard or widely implemented verb (see [`KNOWN_VERBS`]).
pub fn is_known_verb(v: &Verb) -> bool {
    KNOWN_VERBS.contains(&v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cmd(line: &[u8]) -> (String, Vec<u8>) {
        let c = parse_command(line).unwrap();
        (c.verb.to_string(), c.args.to_vec())
    }

    #[test]
    fn bare_cr_and_nul_inside_a_line_are_refused() {
        for line in [
            &b"DELE a\rb\r\n"[..],
            b"RETR x\0y\r\n",
            b"USER u\r\r\n",
            b"NOOP \r",
        ] {
            assert_eq!(
                parse_command(line).err(),
                Some(CommandError::ControlByte),
                "{line:?}"
            );
        }
        // The terminator itself is fine, bare LF included.
        assert!(parse_command(b"NOOP\r\n").is_ok());
        assert!(parse_command(b"NOOP\n").is_ok());
    }

    #[test]
    fn simple_commands() {
        assert_eq!(
            cmd(b"USER anonymous\r\n"),
            ("USER".into(), b"anonymous".to_vec())
        );
        assert_eq!(cmd(b"PASV\r\n"), ("PASV".into(), vec![]));
        assert_eq!(cmd(b"NOOP"), ("NOOP".into(), vec![]));
        assert_eq!(cmd(b"TYPE I\n"), ("TYPE".into(), b"I".to_vec()));
    }

    #[test]
    fn verb_is_case_insensitive() {
        let c = parse_command(b"retr file\r\n").unwrap();
        assert_eq!(c.verb, "RETR");
        assert_eq!(c.verb.as_str(), "RETR");
        assert_eq!(format!("{:?}", c.verb), "Verb(\"RETR\")");
        assert_eq!(parse_command(b"Pasv").unwrap().verb, "PASV");
    }

    #[test]
    fn only_one_separator_space_is_removed() {
        assert_eq!(cmd(b"RETR  two spaces \r\n").1, b" two spaces ".to_vec());
        assert_eq!(cmd(b"CWD a  b\r\n").1, b"a  b".to_vec());
        assert_eq!(cmd(b"NOOP \r\n"), ("NOOP".into(), vec![]));
    }

    #[test]
    fn non_utf8_args_preserved() {
        assert_eq!(cmd(b"RETR caf\xe9.txt\r\n").1, b"caf\xe9.txt".to_vec());
        assert_eq!(cmd(b"STOR \xff\xfe\x01\r\n").1, b"\xff\xfe\x01".to_vec());
    }

    #[test]
    fn telnet_prefix_before_abor() {
        assert_eq!(cmd(b"\xff\xf4\xff\xf2ABOR\r\n").0, "ABOR");
        // The second IAC was consumed as urgent data.
        assert_eq!(cmd(b"\xff\xf4\xf2ABOR\r\n").0, "ABOR");
        // Option negotiation: IAC WONT option.
        assert_eq!(cmd(b"\xff\xfc\x01NOOP\r\n").0, "NOOP");
        assert_eq!(parse_command(b"\xff\xf4"), Err(CommandError::Empty));
        assert_eq!(parse_command(b"\xff"), Err(CommandError::Empty));
    }

    #[test]
    fn empty_lines() {
        assert_eq!(parse_command(b""), Err(CommandError::Empty));
        assert_eq!(parse_command(b"\r\n"), Err(CommandError::Empty));
        assert_eq!(parse_command(b"\n"), Err(CommandError::Empty));
    }

    #[test]
    fn bad_verbs() {
        for line in [
            &b" USER x\r\n"[..],
            b"1USER\r\n",
            b"US-ER\r\n",
            b"USER\tx\r\n",
            b"TOOLONGVERB\r\n",
            b"\xe9TOR\r\n",
            b"GET/ HTTP/1.1\r\n",
            b"NOOP\r",
            b"\r\r\n",
        ] {
            assert_eq!(parse_command(line), Err(CommandError::BadVerb), "{line:?}");
        }
    }

    #[test]
    fn longer_verbs_with_digits() {
        assert_eq!(cmd(b"XSHA256 f\r\n").0, "XSHA256");
        assert_eq!(cmd(b"ABCDEFGH\r\n").0, "ABCDEFGH");
        assert!(parse_command(b"ABCDEFGHI\r\n").is_err());
    }

    #[test]
    fn known_verbs() {
        for v in [
            "USER", "EPSV", "lprt", "XSHA1", "MLSD", "AUTH", "CCC", "MFF",
        ] {
            assert!(is_known_verb(&Verb::new(v.as_bytes()).unwrap()), "{v}");
        }
        for v in ["GET", "FOO", "XYZZY"] {
            assert!(!is_known_verb(&Verb::new(v.as_bytes()).unwrap()), "{v}");
        }
        // Every known verb is itself a valid verb.
        for v in KNOWN_VERBS {
            assert_eq!(Verb::new(v.as_bytes()).unwrap(), *v);
        }
    }

    #[test]
    fn verb_classes() {
        let class = |v: &str| Verb::new(v.as_bytes()).unwrap().class();
        assert_eq!(class("retr"), VerbClass::Transfer(Direction::Download));
        assert_eq!(class("APPE"), VerbClass::Transfer(Direction::Upload));
        assert_eq!(class("eprt"), VerbClass::Active(ActiveVerb::Eprt));
        assert_eq!(class("LPSV"), VerbClass::Passive(PassiveVerb::Lpsv));
        assert_eq!(class("PASS"), VerbClass::Pass);
        assert_eq!(class("PROXY"), VerbClass::ProxyHeader);
        assert_eq!(class("CWD"), VerbClass::Other);
    }

    #[test]
    fn verb_new_rejects() {
        assert!(Verb::new(b"").is_none());
        assert!(Verb::new(b"9A").is_none());
        assert!(Verb::new(b"A B").is_none());
    }

    proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_command(&line);
        }

        #[test]
        fn args_are_a_suffix_of_the_line(
            verb in "[A-Za-z][A-Za-z0-9]{0,7}",
            args in proptest::collection::vec(any::<u8>().prop_filter("no LF, CR or NUL", |b| !matches!(b, b'\n' | b'\r' | 0)), 0..40),
        ) {
            let mut line = verb.clone().into_bytes();
            line.push(b' ');
            line.extend_from_slice(&args);
            line.extend_from_slice(b"\r\n");
            let c = parse_command(&line).unwrap();
            prop_assert_eq!(c.verb.as_str(), verb.to_ascii_uppercase());
            // The line ends in exactly one CRLF, so only that is stripped.
            prop_assert_eq!(c.args, &args[..]);
        }
    }
}
