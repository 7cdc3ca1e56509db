//! `state:`, where what outlives the process is kept (FXP jobs, bans): the store's URL,
//! the key that seals the credentials in job URLs, this instance's name in leases, and
//! how long finished jobs are kept. The section's rules: a URL of a known kind, a key
//! file for PostgreSQL (every instance of a fleet must seal with the same key), an
//! instance name fit for a log line.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Serialize, Serializer};
use serde_saphyr::Spanned;

use super::error::ConfigError;
use super::schema::FileState;
use super::values;

/// Longest instance name (it is written in every lease and run record).
pub const MAX_INSTANCE: usize = 64;

/// Where the state store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite::memory:`: in memory, gone when the process ends (the default without a
    /// `state:` section, as before the store existed).
    Memory,
    /// `sqlite://PATH`: one file (`sqlite:///var/lib/...` is absolute, `sqlite://./x.db`
    /// relative to the working directory).
    Sqlite(PathBuf),
    /// `postgres://...` or `postgresql://...`, as written (the password in it, if any,
    /// is never printed or logged).
    Postgres(String),
}

impl StoreUrl {
    pub fn parse(s: &str) -> Result<StoreUrl, String> {
        if s == "sqlite::memory:" {
            return Ok(StoreUrl::Memory);
        }
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a file: sqlite:///var/lib/fxprelay/state.db, sqlite://./fxprelay-state.db, or sqlite::memory:".into());
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(s.to_owned()));
        }
        Err(format!(
            "`{}`: a store URL is sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB",
            StoreUrl::Postgres(s.to_owned())
        ))
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, StoreUrl::Postgres(_))
    }
}

/// The URL as it may be shown: a PostgreSQL password is `***`.
impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Memory => f.write_str("sqlite::memory:"),
            StoreUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            StoreUrl::Postgres(u) => f.write_str(&without_password(u)),
        }
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl Serialize for StoreUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The `state:` block, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateConfig {
    pub url: StoreUrl,
    /// The 32-byte key (hex) that seals the passwords of job URLs; made (mode 0600) on
    /// first start when missing. `None` only for `sqlite::memory:`, whose key lives and
    /// dies with the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// This instance's name in leases and in a job's runs.
    pub instance: String,
    /// Finished jobs kept at most (the newest).
    pub keep_finished: usize,
    /// Finished jobs older than this are forgotten.
    #[serde(serialize_with = "values::duration::serialize")]
    pub keep_for: Duration,
    /// How long a claim on a running job lasts unless its runner renews it (every
    /// second, or every `lease / 5` when shorter); past it another instance takes the
    /// job over.
    #[serde(serialize_with = "values::duration::serialize")]
    pub lease: Duration,
}

/// What a file without `state:` gets: in memory, as before the store existed.
impl Default for StateConfig {
    fn default() -> Self {
        let file = FileState::default();
        StateConfig {
            url: StoreUrl::Memory,
            key_file: None,
            instance: default_instance(),
            keep_finished: file.keep_finished,
            keep_for: file.keep_for,
            lease: file.lease,
        }
    }
}

/// The host's name (`/proc/sys/kernel/hostname`), else `fxprelay`.
pub fn default_instance() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.len() <= MAX_INSTANCE)
        .unwrap_or_else(|| "fxprelay".to_owned())
}

/// Shortest lease: a renewal every `lease / 5` (200 ms) must still fit several store
/// round trips.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

pub(super) fn validate(file: Option<Spanned<FileState>>) -> Result<StateConfig, ConfigError> {
    let Some(file) = file else {
        return Ok(StateConfig::default());
    };
    let line = file.referenced.line();
    let file = file.value;
    let url_line = file.url.referenced.line();
    let url = StoreUrl::parse(&file.url.value)
        .map_err(|why| ConfigError::invalid("state.url", url_line, why))?;
    let key_file = match (&url, file.key_file) {
        (_, Some(k)) => Some(k),
        (StoreUrl::Memory, None) => None,
        (StoreUrl::Sqlite(db), None) => {
            let mut name = db.clone().into_os_string();
            name.push(".key");
            Some(PathBuf::from(name))
        }
        (StoreUrl::Postgres(_), None) => {
            return Err(ConfigError::invalid(
                "state.key_file",
                line,
                "needed with a PostgreSQL url: every instance of the fleet seals the passwords of job URLs with the same key, so give them one file (made with mode 0600 on the first start when missing)",
            ));
        }
    };
    let instance = file.instance.unwrap_or_else(default_instance);
    if instance.is_empty()
        || instance.len() > MAX_INSTANCE
        || !instance
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
    {
        return Err(ConfigError::invalid(
            "state.instance",
            line,
            format!(
                "`{}`: 1 to {MAX_INSTANCE} letters, digits and -_.:@ (a host name fits)",
                instance.escape_debug()
            ),
        ));
    }
    if file.lease < MIN_LEASE {
        return Err(ConfigError::invalid(
            "state.lease",
            line,
            format!(
                "at least {} (renewed every fifth of it, or every second)",
                humantime::format_duration(MIN_LEASE)
            ),
        ));
    }
    Ok(StateConfig {
        url,
        key_file,
        instance,
        keep_finished: file.keep_finished,
        keep_for: file.keep_for,
        lease: file.lease,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_each_kind_parse_and_show_no_password() {
        assert_eq!(StoreUrl::parse("sqlite::memory:"), Ok(StoreUrl::Memory));
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/fxprelay/state.db"),
            Ok(StoreUrl::Sqlite("/var/lib/fxprelay/state.db".into()))
        );
        assert_eq!(
            StoreUrl::parse("sqlite://./fxprelay-state.db"),
            Ok(StoreUrl::Sqlite("./fxprelay-state.db".into()))
        );
        let pg = StoreUrl::parse("postgres://fx:s3cret@db.internal:5433/fxprelay").unwrap();
        assert!(pg.is_postgres());
        assert_eq!(
            pg.to_string(),
            "postgres://fx:***@db.internal:5433/fxprelay"
        );
        assert!(StoreUrl::parse("sqlite://").is_err());
        let e = StoreUrl::parse("mysql://u:pw@h/db").unwrap_err();
        assert!(!e.contains("pw@"), "{e}");
    }

    #[test]
    fn a_url_without_password_is_shown_as_written() {
        assert_eq!(without_password("postgres://fx@db/x"), "postgres://fx@db/x");
        assert_eq!(
            without_password("postgres://db/x?user=a"),
            "postgres://db/x?user=a"
        );
    }
}
