//! A route's `user:` template: the name the server gets, from `{user}` (the client's
//! login name, or capture group 1 of a `match: {user: ...}` route) and `{host}` (the
//! name the client asked for with `HOST` or TLS SNI; empty when it gave none).

use std::fmt;

use serde::{Serialize, Serializer};

use super::RouteError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    User,
    Host,
}

/// A parsed `user:` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    written: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `written`: text with `{user}` and `{host}`; `{{` and `}}` are braces.
    pub fn parse(written: &str) -> Result<Template, RouteError> {
        let bad = |why: String| RouteError::Template {
            written: written.to_string(),
            why,
        };
        if written.chars().any(char::is_control) {
            return Err(bad("a login name cannot hold control characters".into()));
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = written;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("{{").or(rest.strip_prefix("}}")) {
                text.push(c);
                rest = after;
                continue;
            }
            match c {
                '{' => {
                    let end = rest.find('}').ok_or_else(|| {
                        bad(
                            "`{` opens a placeholder that is not closed (write `{{` for a brace)"
                                .into(),
                        )
                    })?;
                    let part = match &rest[1..end] {
                        "user" => Part::User,
                        "host" => Part::Host,
                        other => {
                            return Err(bad(format!(
                                "unknown placeholder `{{{other}}}`: use `{{user}}` or `{{host}}`"
                            )));
                        }
                    };
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(part);
                    rest = &rest[end + 1..];
                }
                '}' => return Err(bad("a lone `}` (write `}}` for a brace)".into())),
                _ => {
                    text.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if parts.is_empty() {
            return Err(bad("the template makes an empty name".into()));
        }
        Ok(Template {
            written: written.to_string(),
            parts,
        })
    }

    /// The name for the server: `user` for `{user}`, `host` (or nothing) for `{host}`.
    pub fn render(&self, user: &[u8], host: Option<&str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.written.len() + user.len());
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::User => out.extend_from_slice(user),
                Part::Host => out.extend_from_slice(host.unwrap_or_default().as_bytes()),
            }
        }
        out
    }

    /// Whether it says `{host}`.
    pub fn uses_host(&self) -> bool {
        self.parts.contains(&Part::Host)
    }

    /// Whether it says `{user}`.
    pub fn uses_user(&self) -> bool {
        self.parts.contains(&Part::User)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// As the file writes it.
impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_user_and_host() {
        let t = Template::parse("{user}@{host}").unwrap();
        assert_eq!(
            t.render(b"bob", Some("ftp.gamma.test")),
            b"bob@ftp.gamma.test"
        );
        assert_eq!(t.render(b"bob", None), b"bob@");
        assert!(t.uses_host() && t.uses_user());
        let t = Template::parse("web-{user}").unwrap();
        assert_eq!(t.render(b"caf\xe9", None), b"web-caf\xe9");
        assert!(!t.uses_host());
        let t = Template::parse("{{{user}}}").unwrap();
        assert_eq!(t.render(b"x", None), b"{x}");
        assert_eq!(t.to_string(), "{{{user}}}");
        let fixed = Template::parse("shared").unwrap();
        assert_eq!(fixed.render(b"anyone", None), b"shared");
        assert!(!fixed.uses_user());
    }

    #[test]
    fn mistakes_are_named() {
        for (bad, says) in [
            ("{usr}@x", "unknown placeholder `{usr}`"),
            ("{user", "not closed"),
            ("a}b", "lone `}`"),
            ("", "empty name"),
            ("a\r\nPASS x", "control characters"),
        ] {
            let e = Template::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
