//! `match: {user: ...}`: a regular expression on the login name, as the client sent it in
//! `USER` (bytes: a name need not be UTF-8). Capture group 1, when the pattern has one
//! and it took part in the match, is the name the server gets.

use std::fmt;

use regex::bytes::{Regex, RegexBuilder};
use serde::{Serialize, Serializer};

use super::RouteError;

/// How much memory one compiled pattern may take: a login name pattern is small, and a
/// pattern that needs more is a mistake (or an attack on the configuration's author).
const SIZE_LIMIT: usize = 1 << 20;

/// A compiled `match: {user: ...}` pattern.
#[derive(Debug, Clone)]
pub struct UserPattern {
    regex: Regex,
}

impl UserPattern {
    /// Compiles `written` (the `regex` crate's syntax; unanchored unless it says `^`/`$`).
    pub fn new(written: &str) -> Result<UserPattern, RouteError> {
        let regex = RegexBuilder::new(written)
            .size_limit(SIZE_LIMIT)
            .dfa_size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| RouteError::User {
                written: written.to_string(),
                why: e.to_string(),
            })?;
        Ok(UserPattern { regex })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }

    pub fn matches(&self, user: &[u8]) -> bool {
        self.regex.is_match(user)
    }

    /// What `{user}` stands for once `user` matched: capture group 1 when the pattern has
    /// one and it took part in the match, else the whole name. `None`: no match.
    pub fn name<'u>(&self, user: &'u [u8]) -> Option<&'u [u8]> {
        let caps = self.regex.captures(user)?;
        Some(caps.get(1).map_or(user, |m| m.as_bytes()))
    }
}

/// Two patterns are the same when they are written the same.
impl PartialEq for UserPattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for UserPattern {}

impl fmt::Display for UserPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As the file writes it.
impl Serialize for UserPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_one_is_the_upstream_name() {
        let p = UserPattern::new("^(.+)@beta$").unwrap();
        assert_eq!(p.name(b"alice@beta"), Some(&b"alice"[..]));
        // The last `@` decides: the capture is greedy.
        assert_eq!(p.name(b"a@b@beta"), Some(&b"a@b"[..]));
        assert_eq!(p.name(b"alice@gamma"), None);
        assert!(!p.matches(b"@beta"));
        // Without a group the whole name goes on; a group that did not take part too.
        let whole = UserPattern::new("^ops-").unwrap();
        assert_eq!(whole.name(b"ops-bob"), Some(&b"ops-bob"[..]));
        let optional = UserPattern::new("^(x)?bob$").unwrap();
        assert_eq!(optional.name(b"bob"), Some(&b"bob"[..]));
        assert_eq!(optional.name(b"xbob"), Some(&b"x"[..]));
    }

    #[test]
    fn names_are_bytes() {
        let p = UserPattern::new(r"^(?-u:(.+))@latin$").unwrap();
        assert_eq!(p.name(b"caf\xe9@latin"), Some(&b"caf\xe9"[..]));
    }

    #[test]
    fn bad_patterns_are_named() {
        let e = UserPattern::new("^(.+@beta$").unwrap_err().to_string();
        assert!(
            e.contains("^(.+@beta$") && e.contains("unclosed group"),
            "{e}"
        );
        // Far too large a program for a login name.
        let e = UserPattern::new(r"\w{1000}\w{1000}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("size limit"), "{e}");
    }
}
