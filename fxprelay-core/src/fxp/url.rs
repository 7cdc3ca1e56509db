//! `ftp://user:pass@host:port/path` URLs naming one end of a transfer; `ftpes://` is the
//! same over explicit TLS (`AUTH TLS` after the greeting, then `PBSZ 0`/`PROT P`) and
//! `ftps://` over implicit TLS (TLS from the first byte, default port 990).
//!
//! User, password and path are percent-decoded; the path stays bytes (FTP paths need not
//! be UTF-8). A path is relative to the login directory (`ftp://h/a/b` is `a/b`, as curl
//! reads it); `%2F` at its start makes it absolute. Decoded fields that would end a
//! control line (CR, LF, NUL) are refused: a URL must never smuggle in a second command.
//! `Display` never shows the password.
//!
//! `?via=AGENT` after the path (or the host) says the server accepts no inbound
//! connection and is reached through that agent of the edge (`agents.tokens`), the
//! host and port as the agent sees them: `ftp://alice@10.0.0.5/big.iso?via=site-a`. It is
//! the URL's only parameter; a literal `?` in a path is written `%3F`.

use std::fmt;

use percent_encoding::{
    AsciiSet, CONTROLS, percent_decode_str, percent_encode, utf8_percent_encode,
};

/// User and password sent when the URL names no user (RFC 1635).
pub const ANONYMOUS_USER: &str = "anonymous";
pub const ANONYMOUS_PASS: &str = "anonymous@";

/// Whether and how the control connection is encrypted: the URL's scheme.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Security {
    /// `ftp://`: plain FTP.
    #[default]
    Plain,
    /// `ftpes://`: `AUTH TLS` after the greeting; data protected with `PROT P`.
    Explicit,
    /// `ftps://`: TLS from the first byte (the port-990 convention); data protected.
    Implicit,
}

impl Security {
    pub fn scheme(self) -> &'static str {
        match self {
            Security::Plain => "ftp",
            Security::Explicit => "ftpes",
            Security::Implicit => "ftps",
        }
    }

    /// The port a URL of this scheme names when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Security::Implicit => 990,
            Security::Plain | Security::Explicit => 21,
        }
    }

    pub fn is_tls(self) -> bool {
        self != Security::Plain
    }
}

/// One end of a transfer.
#[derive(Clone, PartialEq, Eq)]
pub struct FtpUrl {
    /// The scheme: plain FTP, explicit or implicit TLS.
    pub security: Security,
    /// Login name, decoded; [`ANONYMOUS_USER`] when the URL has none.
    pub user: String,
    /// Password, decoded; `None` when the URL has none (anonymous gets [`ANONYMOUS_PASS`]).
    pub password: Option<String>,
    /// Host name or IP literal, without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
    /// Path after the host, decoded, without the leading `/`. Empty: the login directory.
    pub path: Vec<u8>,
    /// The agent the server is reached through (`?via=AGENT`); `None`: straight.
    pub via: Option<String>,
}

/// A server that serves several names at one address (RFC 7151 virtual hosts), and the
/// name to ask it for with `HOST` before logging in: what a routed session chose its
/// server with, for the `SITE FXP` engine's own login to that server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualHost {
    /// The server, as its URLs write it.
    pub host: String,
    pub port: u16,
    /// The name it is asked for.
    pub name: String,
}

impl VirtualHost {
    /// The name to ask `url`'s server for, when it is this server.
    pub fn name_for(&self, url: &FtpUrl) -> Option<&str> {
        (url.host == self.host && url.port == self.port).then_some(self.name.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not an ftp://, ftpes:// (explicit TLS) or ftps:// (implicit TLS) URL")]
    Scheme,
    #[error("the URL names no host")]
    NoHost,
    #[error("bad port {0:?}")]
    Port(String),
    #[error("unterminated IPv6 literal")]
    Bracket,
    #[error("the {0} is not valid UTF-8 once decoded")]
    Utf8(&'static str),
    #[error("the {0} contains a control character (CR, LF or NUL)")]
    Control(&'static str),
    #[error("`%` must be followed by two hex digits (write a literal % as %25)")]
    BadEscape,
    #[error(
        "unknown URL parameter `{0}`: the only one is via=AGENT (write a literal ? in a path as %3F)"
    )]
    Parameter(String),
    #[error("`{0}` is not an agent name: 1 to 64 letters, digits, `.`, `_` or `-`")]
    Agent(String),
}

impl FtpUrl {
    /// A URL as bytes, as an FTP command carries it: bytes outside ASCII (a Latin-1 path
    /// typed raw) are taken as they are, as if percent-encoded.
    pub fn parse_bytes(raw: &[u8]) -> Result<FtpUrl, UrlError> {
        FtpUrl::parse(&percent_encode(raw, CONTROLS).to_string())
    }

    pub fn parse(s: &str) -> Result<FtpUrl, UrlError> {
        // An invalid escape would be kept as it is and name another file than meant.
        let b = s.as_bytes();
        let bad_escape = b.iter().enumerate().any(|(i, &c)| {
            c == b'%'
                && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        });
        if bad_escape {
            return Err(UrlError::BadEscape);
        }
        let (scheme, rest) = s.split_once("://").ok_or(UrlError::Scheme)?;
        let security = [Security::Plain, Security::Explicit, Security::Implicit]
            .into_iter()
            .find(|sec| scheme.eq_ignore_ascii_case(sec.scheme()))
            .ok_or(UrlError::Scheme)?;
        // The query starts at the first `?` of the path, or of the host when there is no
        // path (`ftp://h?via=a`; a `?` in the user info, before the last `@`, is the
        // password's).
        let (authority, path, query) = match rest.find('/') {
            Some(i) => {
                let (path, query) = split_query(&rest[i + 1..]);
                (&rest[..i], path, query)
            }
            None => {
                let at = rest.rfind('@').map_or(0, |i| i + 1);
                match rest[at..].find('?') {
                    Some(q) => (&rest[..at + q], "", Some(&rest[at + q + 1..])),
                    None => (rest, "", None),
                }
            }
        };
        let via = query.map(parse_query).transpose()?.flatten();
        // The last `@` ends the user info, so an unencoded `@` in a password still works.
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport, security.default_port())?;
        let (user, password) = match userinfo {
            None => (ANONYMOUS_USER.to_owned(), None),
            Some(info) => {
                let (u, p) = match info.find(':') {
                    Some(i) => (&info[..i], Some(&info[i + 1..])),
                    None => (info, None),
                };
                let user = decode_text(u, "user")?;
                let password = p.map(|p| decode_text(p, "password")).transpose()?;
                if user.is_empty() {
                    (ANONYMOUS_USER.to_owned(), password)
                } else {
                    (user, password)
                }
            }
        };
        let path: Vec<u8> = percent_decode_str(path).collect();
        check_control(&path, "path")?;
        Ok(FtpUrl {
            security,
            user,
            password,
            host,
            port,
            path,
            via,
        })
    }

    /// The password to send: the URL's, or [`ANONYMOUS_PASS`] for an anonymous login.
    pub fn login_password(&self) -> &str {
        match &self.password {
            Some(p) => p,
            None if self.user == ANONYMOUS_USER || self.user == "ftp" => ANONYMOUS_PASS,
            None => "",
        }
    }

    /// The same server and login with another path.
    pub fn with_path(&self, path: Vec<u8>) -> FtpUrl {
        FtpUrl {
            path,
            ..self.clone()
        }
    }

    /// `path` joined with `name` (`a` + `b` = `a/b`; an empty path gives `b`).
    pub fn join(&self, name: &[u8]) -> FtpUrl {
        let mut path = self.path.clone();
        if !path.is_empty() && !path.ends_with(b"/") {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        self.with_path(path)
    }

    /// `host:port` for connecting (brackets around an IPv6 literal).
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The last path component (for naming a copy in a destination directory).
    pub fn file_name(&self) -> &[u8] {
        let p = self.path.strip_suffix(b"/").unwrap_or(&self.path);
        match p.iter().rposition(|&b| b == b'/') {
            Some(i) => &p[i + 1..],
            None => p,
        }
    }
}

fn split_query(path: &str) -> (&str, Option<&str>) {
    match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    }
}

/// The query's parameters: `via=AGENT` (the last one counts), nothing else.
fn parse_query(query: &str) -> Result<Option<String>, UrlError> {
    let mut via = None;
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        if key != "via" {
            let key: Vec<u8> = percent_decode_str(key).collect();
            return Err(UrlError::Parameter(
                String::from_utf8_lossy(&key).chars().take(64).collect(),
            ));
        }
        let name = decode_text(value, "agent name")?;
        if !crate::agent::is_name(&name) {
            return Err(UrlError::Agent(name.chars().take(64).collect()));
        }
        via = Some(name);
    }
    Ok(via)
}

fn split_host_port(hostport: &str, default_port: u16) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let end = v6.find(']').ok_or(UrlError::Bracket)?;
        let after = &v6[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(UrlError::Port(after.to_owned())),
        };
        (&v6[..end], port)
    } else {
        match hostport.find(':') {
            Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    let host = decode_text(host, "host")?;
    let port = match port {
        None | Some("") => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(UrlError::Port(p.to_owned())),
        },
    };
    Ok((host, port))
}

fn decode_text(s: &str, what: &'static str) -> Result<String, UrlError> {
    let bytes: Vec<u8> = percent_decode_str(s).collect();
    check_control(&bytes, what)?;
    String::from_utf8(bytes).map_err(|_| UrlError::Utf8(what))
}

fn check_control(bytes: &[u8], what: &'static str) -> Result<(), UrlError> {
    if bytes.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
        Err(UrlError::Control(what))
    } else {
        Ok(())
    }
}

/// What `Display` escapes in the user and path, so the shown URL parses back.
const SHOWN: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'@')
    .add(b':')
    .add(b'#')
    .add(b'?');

/// The path may show `:` and `@` as they are.
const PATH_SHOWN: &AsciiSet = &SHOWN.remove(b':').remove(b'@');

impl fmt::Display for FtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.security.scheme())?;
        if self.user != ANONYMOUS_USER || self.password.is_some() {
            write!(f, "{}", utf8_percent_encode(&self.user, SHOWN))?;
            if self.password.is_some() {
                write!(f, ":***")?;
            }
            write!(f, "@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        if self.port != self.security.default_port() {
            write!(f, ":{}", self.port)?;
        }
        write!(f, "/")?;
        // Bytes, escaped as they are: the shown URL names the same file.
        write!(f, "{}", percent_encode(&self.path, PATH_SHOWN))?;
        // An agent name needs no escaping (letters, digits, `.`, `_`, `-`).
        if let Some(via) = &self.via {
            write!(f, "?via={via}")?;
        }
        Ok(())
    }
}

// Debug goes through Display so a `{:?}` in a log line cannot leak the password either.
impl fmt::Debug for FtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FtpUrl({self})")
    }
}

impl std::str::FromStr for FtpUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, UrlError> {
        FtpUrl::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_url() {
        let u = FtpUrl::parse("ftp://bob:s%40cret@files.example:2121/dir/a%20b.bin").unwrap();
        assert_eq!(u.user, "bob");
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert_eq!(u.host, "files.example");
        assert_eq!(u.port, 2121);
        assert_eq!(u.path, b"dir/a b.bin");
        assert_eq!(u.file_name(), b"a b.bin");
        assert_eq!(
            u.to_string(),
            "ftp://bob:***@files.example:2121/dir/a%20b.bin"
        );
    }

    #[test]
    fn anonymous_and_defaults() {
        let u = FtpUrl::parse("FTP://host").unwrap();
        assert_eq!(u.user, ANONYMOUS_USER);
        assert_eq!(u.password, None);
        assert_eq!(u.login_password(), ANONYMOUS_PASS);
        assert_eq!(u.port, 21);
        assert_eq!(u.path, b"");
        assert_eq!(u.to_string(), "ftp://host/");
        let u = FtpUrl::parse("ftp://alice@host/x").unwrap();
        assert_eq!(u.user, "alice");
        assert_eq!(u.password, None);
        assert_eq!(u.login_password(), "");
    }

    #[test]
    fn ipv6_literal() {
        let u = FtpUrl::parse("ftp://u:p@[::1]:2100/f").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 2100);
        assert_eq!(u.host_port(), "[::1]:2100");
        assert_eq!(u.to_string(), "ftp://u:***@[::1]:2100/f");
        assert_eq!(FtpUrl::parse("ftp://[::1]/").unwrap().port, 21);
        assert_eq!(FtpUrl::parse("ftp://[::1/"), Err(UrlError::Bracket));
        assert!(matches!(
            FtpUrl::parse("ftp://[::1]x/"),
            Err(UrlError::Port(_))
        ));
    }

    #[test]
    fn absolute_and_latin1_paths() {
        let u = FtpUrl::parse("ftp://h/%2Fetc/caf%E9.txt").unwrap();
        assert_eq!(u.path, b"/etc/caf\xe9.txt");
    }

    #[test]
    fn tls_schemes() {
        let u = FtpUrl::parse("ftpes://bob:pw@files.example/a.bin").unwrap();
        assert_eq!(u.security, Security::Explicit);
        assert_eq!(u.port, 21);
        assert_eq!(u.to_string(), "ftpes://bob:***@files.example/a.bin");
        let u = FtpUrl::parse("FTPS://bob:pw@files.example/a.bin").unwrap();
        assert_eq!(u.security, Security::Implicit);
        assert_eq!(u.port, 990);
        assert_eq!(u.to_string(), "ftps://bob:***@files.example/a.bin");
        let u = FtpUrl::parse("ftps://h:21/").unwrap();
        assert_eq!((u.port, u.to_string().as_str()), (21, "ftps://h:21/"));
        let u = FtpUrl::parse("ftpes://[::1]:990/").unwrap();
        assert_eq!(u.to_string(), "ftpes://[::1]:990/");
        assert_eq!(FtpUrl::parse("ftp://h/").unwrap().security, Security::Plain);
        // A path, a user or a join keeps the scheme.
        assert_eq!(u.join(b"x").security, Security::Explicit);
        assert!(
            !FtpUrl::parse("ftpes://u:secret@h/")
                .unwrap()
                .to_string()
                .contains("secret")
        );
    }

    #[test]
    fn refused() {
        assert_eq!(FtpUrl::parse("sftp://h/"), Err(UrlError::Scheme));
        assert_eq!(FtpUrl::parse("ftpx://h/"), Err(UrlError::Scheme));
        assert_eq!(FtpUrl::parse("ftp:/h/"), Err(UrlError::Scheme));
        assert_eq!(FtpUrl::parse("http://h/"), Err(UrlError::Scheme));
        assert_eq!(FtpUrl::parse("ftp://"), Err(UrlError::NoHost));
        assert_eq!(FtpUrl::parse("ftp://u@/x"), Err(UrlError::NoHost));
        assert!(matches!(
            FtpUrl::parse("ftp://h:0/"),
            Err(UrlError::Port(_))
        ));
        assert!(matches!(
            FtpUrl::parse("ftp://h:70000/"),
            Err(UrlError::Port(_))
        ));
        assert!(matches!(
            FtpUrl::parse("ftp://h:+21/"),
            Err(UrlError::Port(_))
        ));
        assert_eq!(
            FtpUrl::parse("ftp://h/a%0D%0ADELE%20x"),
            Err(UrlError::Control("path"))
        );
        assert_eq!(
            FtpUrl::parse("ftp://u:p%0Ax@h/"),
            Err(UrlError::Control("password"))
        );
        assert_eq!(
            FtpUrl::parse("ftp://u:%FF@h/"),
            Err(UrlError::Utf8("password"))
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let u = FtpUrl::parse("ftp://u:topsecret@h/").unwrap();
        assert!(!format!("{u:?}").contains("topsecret"));
        assert!(!u.to_string().contains("topsecret"));
    }

    #[test]
    fn paths_stay_bytes_and_bad_escapes_are_refused() {
        let u = FtpUrl::parse_bytes(b"ftp://u:p@h/caf\xe9/\xff.bin").unwrap();
        assert_eq!(u.path, b"caf\xe9/\xff.bin");
        assert_eq!(u.to_string(), "ftp://u:***@h/caf%E9/%FF.bin");
        assert_eq!(FtpUrl::parse(&u.to_string().replace("***", "p")), Ok(u));
        for bad in [
            "ftp://h/%zz",
            "ftp://h/a%2",
            "ftp://h/a%",
            "ftp://u:p%g1@h/",
        ] {
            assert_eq!(FtpUrl::parse(bad), Err(UrlError::BadEscape), "{bad}");
        }
        assert_eq!(FtpUrl::parse("ftp://h/100%25").unwrap().path, b"100%");
    }

    #[test]
    fn via_names_the_agent_and_round_trips() {
        let u = FtpUrl::parse("ftp://alice:pw@10.0.0.5/dir/big.iso?via=site-a").unwrap();
        assert_eq!(u.via.as_deref(), Some("site-a"));
        assert_eq!(u.path, b"dir/big.iso");
        assert_eq!(u.host_port(), "10.0.0.5:21");
        assert_eq!(
            u.to_string(),
            "ftp://alice:***@10.0.0.5/dir/big.iso?via=site-a"
        );
        let back = FtpUrl::parse(&u.to_string().replace("***", "pw")).unwrap();
        assert_eq!(back, u);
        // Kept by a join and a new path: the files of a tree are on the same server.
        assert_eq!(u.join(b"x").via.as_deref(), Some("site-a"));
        assert_eq!(u.with_path(b"y".to_vec()).via.as_deref(), Some("site-a"));
        // Without a path; after a port; the last one counts; an empty query is none.
        let u = FtpUrl::parse("ftp://h:2121?via=b.c_d-1").unwrap();
        assert_eq!(
            (u.port, u.via.as_deref(), &u.path[..]),
            (2121, Some("b.c_d-1"), &b""[..])
        );
        assert_eq!(u.to_string(), "ftp://h:2121/?via=b.c_d-1");
        let u = FtpUrl::parse("ftp://h/f?via=a&via=b").unwrap();
        assert_eq!(u.via.as_deref(), Some("b"));
        let u = FtpUrl::parse("ftp://h/f?").unwrap();
        assert_eq!((u.via.as_deref(), &u.path[..]), (None, &b"f"[..]));
        // A `?` in the password (before the last `@`) is the password's.
        let u = FtpUrl::parse("ftp://u:p?w@h?via=a").unwrap();
        assert_eq!((u.password.as_deref(), u.host.as_str()), (Some("p?w"), "h"));
        assert_eq!(u.via.as_deref(), Some("a"));
        // A literal `?` in a path is `%3F`, and shown so.
        let u = FtpUrl::parse("ftp://h/what%3F.txt").unwrap();
        assert_eq!(
            (u.path.as_slice(), u.via.as_deref()),
            (&b"what?.txt"[..], None)
        );
        assert_eq!(u.to_string(), "ftp://h/what%3F.txt");
    }

    #[test]
    fn a_query_other_than_via_is_refused() {
        assert_eq!(
            FtpUrl::parse("ftp://h/f?what.txt"),
            Err(UrlError::Parameter("what.txt".into()))
        );
        assert_eq!(
            FtpUrl::parse("ftp://h/f?via=a&x=1"),
            Err(UrlError::Parameter("x".into()))
        );
        assert!(
            FtpUrl::parse("ftp://h/f?x")
                .unwrap_err()
                .to_string()
                .contains("%3F")
        );
        for bad in ["", "a b", "a/b", "a%0Ab", &"x".repeat(65)] {
            let u = format!("ftp://h/f?via={}", bad.replace(' ', "%20"));
            assert!(FtpUrl::parse(&u).is_err(), "{u}");
        }
    }

    #[test]
    fn join_paths() {
        let u = FtpUrl::parse("ftp://h/").unwrap();
        assert_eq!(u.join(b"a").path, b"a");
        assert_eq!(u.join(b"a").join(b"b").path, b"a/b");
        assert_eq!(FtpUrl::parse("ftp://h/d/").unwrap().join(b"x").path, b"d/x");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = FtpUrl::parse(&s);
            let _ = FtpUrl::parse(&format!("ftp://{s}"));
        }

        #[test]
        fn display_round_trips_without_password(
            scheme in prop::sample::select(vec!["ftp", "ftpes", "ftps"]),
            user in "[a-z%@: ]{1,8}",
            host in "[a-z][a-z0-9.]{0,10}",
            port in 1u16..,
            path in "[a-z/ %?#]{0,12}",
        ) {
            let enc = |s: &str| utf8_percent_encode(s, SHOWN).to_string();
            let url = format!("{scheme}://{}:pw@{host}:{port}/{}", enc(&user), enc(&path));
            let u = FtpUrl::parse(&url).unwrap();
            prop_assert_eq!(&u.user, &user);
            prop_assert_eq!(&u.path, path.as_bytes());
            let shown = u.to_string();
            prop_assert!(!shown.contains(":pw@"));
            let back = FtpUrl::parse(&shown).unwrap();
            prop_assert_eq!(back.security, u.security);
            prop_assert_eq!(back.user, user);
            prop_assert_eq!(back.host, host);
            prop_assert_eq!(back.port, port);
            prop_assert_eq!(back.path, path.into_bytes());
        }
    }
}
