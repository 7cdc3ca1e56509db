//! Passwords off the command line, for `fxprelay fxp` (where a password in a URL is
//! seen by anyone running `ps`, and kept in the shell's history).
//!
//! For each URL, the first of these that applies gives the password:
//! 1. the password written in the URL (`ftp://user:pass@host/`);
//! 2. `FXPRELAY_SRC_PASSWORD` / `FXPRELAY_DST_PASSWORD`, when the URL names a user;
//! 3. the netrc file (`--netrc-file`, else `$NETRC`, else `~/.netrc`): the `machine` entry
//!    for the URL's host whose `login` is the URL's user (or that names no login), else
//!    the `default` entry; for a URL without a user, the entry's login and password
//!    replace the anonymous login;
//! 4. a prompt on the terminal, when the URL names a user and stdin is a terminal;
//! 5. none: an anonymous login; a named user without any of these is an error saying
//!    where a password can come from (an empty one is written `ftp://user:@host/`).
//!
//! The password itself is never printed, logged or put in JSON: [`Source`] tells only
//! where it came from.

use std::path::{Path, PathBuf};

use super::url::{ANONYMOUS_USER, FtpUrl};

/// Where a URL's password came from (never the password).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Url,
    Env,
    Netrc,
    Prompt,
    /// Nothing: anonymous, or an empty password.
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read the netrc file {path}: {reason}")]
    Netrc { path: PathBuf, reason: String },
    #[error("cannot read the password for {user}@{host}: {source}")]
    Prompt {
        user: String,
        host: String,
        source: std::io::Error,
    },
    #[error(
        "{user}@{host} needs a password and there is no terminal to ask for it: set {env}, add `machine {machine} login {user} password ...` to ~/.netrc (or --netrc-file), or write it in the URL (ftp://{user}:PASSWORD@{host}/; an empty one as ftp://{user}:@{host}/)"
    )]
    NoPassword {
        user: String,
        host: String,
        /// The host alone, as netrc names machines.
        machine: String,
        env: &'static str,
    },
}

/// A parsed netrc file.
pub struct Netrc(netrc::Netrc);

impl Netrc {
    /// `path` when given (it must be readable), else `$NETRC` or `~/.netrc` when such a
    /// file exists; `None` when there is none.
    pub fn load(path: Option<&Path>) -> Result<Option<Netrc>, CredentialError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => match netrc::Netrc::get_file() {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        netrc::Netrc::from_file(&path)
            .map(|n| Some(Netrc(n)))
            .map_err(|e| CredentialError::Netrc {
                path,
                reason: match e {
                    netrc::Error::Io(e) => e.to_string(),
                    // The parser's message names the token, never a whole line.
                    netrc::Error::Parsing { parser, .. } => parser.to_string(),
                },
            })
    }

    pub fn parse(text: &str) -> Option<Netrc> {
        text.parse().ok().map(Netrc)
    }

    /// The login and password for `host`, when the entry's login is `user` (or empty, or
    /// `user` is `None`).
    fn lookup(&self, host: &str, user: Option<&str>) -> Option<(String, String)> {
        let fits =
            |a: &netrc::Authenticator| user.is_none_or(|u| a.login.is_empty() || a.login == u);
        [
            host.to_owned(),
            host.to_ascii_lowercase(),
            "default".to_owned(),
        ]
        .iter()
        .filter_map(|h| self.0.hosts.get(h))
        .find(|a| fits(a))
        .map(|a| (a.login.clone(), a.password.clone()))
    }
}

/// Asks for a password, showing the prompt (on the terminal, not echoing the answer).
pub type Prompt<'a> = &'a dyn Fn(&str) -> std::io::Result<String>;

/// What [`fill`] may consult besides the URL.
pub struct Lookup<'a> {
    /// `FXPRELAY_SRC_PASSWORD` or `FXPRELAY_DST_PASSWORD`, as read.
    pub env: Option<String>,
    /// Which of the two it is, for the error that names it.
    pub env_name: &'static str,
    pub netrc: Option<&'a Netrc>,
    /// Asks for a password (a terminal prompt); `None` when there is no terminal.
    pub prompt: Option<Prompt<'a>>,
}

/// Gives `url` its password (and a netrc login for a URL without a user) in the order of
/// the module doc.
pub fn fill(url: &mut FtpUrl, with: &Lookup<'_>) -> Result<Source, CredentialError> {
    if url.password.is_some() {
        return Ok(Source::Url);
    }
    let anonymous = url.user == ANONYMOUS_USER;
    if anonymous {
        if let Some((login, password)) = with.netrc.and_then(|n| n.lookup(&url.host, None))
            && !login.is_empty()
        {
            url.user = login;
            url.password = Some(password);
            return Ok(Source::Netrc);
        }
        return Ok(Source::None);
    }
    if let Some(p) = &with.env {
        url.password = Some(p.clone());
        return Ok(Source::Env);
    }
    if let Some((_, password)) = with
        .netrc
        .and_then(|n| n.lookup(&url.host, Some(&url.user)))
    {
        url.password = Some(password);
        return Ok(Source::Netrc);
    }
    if let Some(ask) = with.prompt {
        let password =
            ask(&format!("Password for {}@{}: ", url.user, url.host_port())).map_err(|source| {
                CredentialError::Prompt {
                    user: url.user.clone(),
                    host: url.host_port(),
                    source,
                }
            })?;
        url.password = Some(password);
        return Ok(Source::Prompt);
    }
    Err(CredentialError::NoPassword {
        user: url.user.clone(),
        host: url.host_port(),
        machine: url.host.clone(),
        env: with.env_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETRC: &str = "machine files.example login alice password from-netrc\n\
                         machine other.example login bob password bobs\n\
                         default login guest password guests\n";

    fn url(s: &str) -> FtpUrl {
        FtpUrl::parse(s).unwrap()
    }

    fn none() -> Lookup<'static> {
        Lookup {
            env: None,
            env_name: "FXPRELAY_SRC_PASSWORD",
            netrc: None,
            prompt: None,
        }
    }

    #[test]
    fn the_url_wins_then_env_then_netrc_then_the_prompt() {
        let n = Netrc::parse(NETRC).unwrap();
        let ask = |_: &str| Ok("typed".to_owned());
        let all = Lookup {
            env: Some("from-env".into()),
            env_name: "FXPRELAY_SRC_PASSWORD",
            netrc: Some(&n),
            prompt: Some(&ask),
        };
        let mut u = url("ftp://alice:inline@files.example/");
        assert_eq!(fill(&mut u, &all).unwrap(), Source::Url);
        assert_eq!(u.password.as_deref(), Some("inline"));

        let mut u = url("ftp://alice@files.example/");
        assert_eq!(fill(&mut u, &all).unwrap(), Source::Env);
        assert_eq!(u.password.as_deref(), Some("from-env"));

        let no_env = Lookup { env: None, ..all };
        let mut u = url("ftp://alice@files.example/");
        assert_eq!(fill(&mut u, &no_env).unwrap(), Source::Netrc);
        assert_eq!(u.password.as_deref(), Some("from-netrc"));

        // Another login than the entry's: the entry does not apply, the prompt does.
        let mut u = url("ftp://carol@files.example/");
        assert_eq!(fill(&mut u, &no_env).unwrap(), Source::Prompt);
        assert_eq!(u.password.as_deref(), Some("typed"));

        // Nothing at all, and no terminal: an error that says where a password can come
        // from, never a silent empty one.
        let mut u = url("ftp://carol@files.example/");
        let e = fill(&mut u, &none()).unwrap_err().to_string();
        assert!(
            e.contains("carol@files.example")
                && e.contains("FXPRELAY_SRC_PASSWORD")
                && e.contains(".netrc")
                && e.contains("ftp://carol:PASSWORD@"),
            "{e}"
        );
        // An empty password written as such is taken.
        let mut u = url("ftp://carol:@files.example/");
        assert_eq!(fill(&mut u, &none()).unwrap(), Source::Url);
        assert_eq!(u.login_password(), "");
    }

    #[test]
    fn a_url_without_user_takes_the_netrc_login() {
        let n = Netrc::parse(NETRC).unwrap();
        let with = Lookup {
            netrc: Some(&n),
            ..none()
        };
        let mut u = url("ftp://Other.Example:2121/pub");
        assert_eq!(fill(&mut u, &with).unwrap(), Source::Netrc);
        assert_eq!(
            (u.user.as_str(), u.password.as_deref()),
            ("bob", Some("bobs"))
        );
        // Unknown host: the default entry.
        let mut u = url("ftp://unknown.example/");
        fill(&mut u, &with).unwrap();
        assert_eq!(u.user, "guest");
        // No netrc: anonymous, and the environment is not for anonymous logins.
        let mut u = url("ftp://unknown.example/");
        let env = Lookup {
            env: Some("x".into()),
            ..none()
        };
        assert_eq!(fill(&mut u, &env).unwrap(), Source::None);
        assert_eq!(u.login_password(), crate::fxp::url::ANONYMOUS_PASS);
    }

    #[test]
    fn a_netrc_file_is_read_and_a_missing_one_named_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("netrc");
        std::fs::write(&p, NETRC).unwrap();
        let n = Netrc::load(Some(&p)).unwrap().unwrap();
        assert_eq!(
            n.lookup("files.example", Some("alice")),
            Some(("alice".into(), "from-netrc".into()))
        );
        let e = Netrc::load(Some(&dir.path().join("missing")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }
}
