//! A reverse listener's pool of upstreams (`upstream:` as a list, `balance`,
//! `health_check`) and the PROXY header toward servers (`upstream_proxy_protocol`): the
//! settings [`crate::pool`] runs, and the section's rules.

use std::time::Duration;

use serde::Serialize;

use super::schema::{Balance, CheckLogin, FileHealthCheck, FileUpstream};
use super::values;
use crate::net::HostPort;

/// How a pool checks its backends (`health_check:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    #[serde(serialize_with = "values::duration::serialize")]
    pub interval: Duration,
    /// For the whole check: connect, banner, login, `NOOP`.
    #[serde(serialize_with = "values::duration::serialize")]
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<CheckLogin>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            login: None,
        }
    }
}

/// One backend of a pool (an entry of `upstream:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendConfig {
    pub address: HostPort,
    pub weight: u32,
    pub backup: bool,
}

/// A reverse listener's pool. Written into the listener's keys: the backends are its
/// `upstream:` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolConfig {
    #[serde(rename = "upstream")]
    pub backends: Vec<BackendConfig>,
    pub balance: Balance,
    #[serde(rename = "health_check")]
    pub health: HealthCheck,
}

/// Why a listener's pool keys cannot be used. The listener's validator names the key
/// each is about ([`PoolError::key`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the list is empty: name at least one `host:port`")]
    Empty,
    #[error("{0} is listed twice")]
    Twice(HostPort),
    #[error(
        "every entry is `backup: true`: backups take sessions only while no other entry is up, so at least one must not be a backup"
    )]
    AllBackups,
    #[error("`rise` and `fall` must be at least 1")]
    ZeroRiseOrFall,
}

impl PoolError {
    /// The listener key the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            PoolError::Empty | PoolError::Twice(_) | PoolError::AllBackups => "upstream",
            PoolError::ZeroRiseOrFall => "health_check",
        }
    }
}

/// A pool from the listener's keys; `Ok(None)` when the listener has one upstream and no
/// pool keys (a plain reverse listener). A single `upstream` with `health_check` or
/// `balance` is a pool of one: checked, and `421` at once while it is down.
pub(super) fn pool(
    upstream: Option<&FileUpstream>,
    balance: Option<Balance>,
    health: Option<&FileHealthCheck>,
) -> Result<Option<PoolConfig>, PoolError> {
    let backends: Vec<BackendConfig> = match upstream {
        None => return Ok(None),
        Some(FileUpstream::One(_)) if balance.is_none() && health.is_none() => {
            return Ok(None);
        }
        Some(FileUpstream::One(a)) => vec![BackendConfig {
            address: a.clone(),
            weight: 1,
            backup: false,
        }],
        Some(FileUpstream::Many(list)) => list
            .iter()
            .map(|b| BackendConfig {
                address: b.address.clone(),
                weight: b.weight,
                backup: b.backup,
            })
            .collect(),
    };
    if backends.is_empty() {
        return Err(PoolError::Empty);
    }
    for (i, b) in backends.iter().enumerate() {
        if backends[..i].iter().any(|o| o.address == b.address) {
            return Err(PoolError::Twice(b.address.clone()));
        }
    }
    if backends.iter().all(|b| b.backup) {
        return Err(PoolError::AllBackups);
    }
    let health = match health {
        Some(h) => health_check(h)?,
        None => HealthCheck::default(),
    };
    Ok(Some(PoolConfig {
        backends,
        balance: balance.unwrap_or_default(),
        health,
    }))
}

/// `health_check:` with its defaults filled in.
fn health_check(file: &FileHealthCheck) -> Result<HealthCheck, PoolError> {
    let d = HealthCheck::default();
    let check = HealthCheck {
        interval: file.interval.unwrap_or(d.interval),
        timeout: file.timeout.unwrap_or(d.timeout),
        rise: file.rise.unwrap_or(d.rise),
        fall: file.fall.unwrap_or(d.fall),
        login: file.login.clone(),
    };
    if check.rise == 0 || check.fall == 0 {
        return Err(PoolError::ZeroRiseOrFall);
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ProxyVersion};

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!(
            "listeners:\n  - name: farm\n    bind: 127.0.0.1:2121\n{extra}"
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_issue_example_loads() {
        let c = parse(
            "    upstream: [10.0.0.11:21, 10.0.0.12:21, {address: 10.0.0.14:21, weight: 2, backup: true}]\n    balance: least_sessions\n    health_check:\n      interval: 5s\n      timeout: 2s\n      rise: 2\n      fall: 3\n      login: {user: monitor, password: secret}\n    upstream_proxy_protocol: v2\n",
        )
        .unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.upstream_proxy_protocol, Some(ProxyVersion::V2));
        let p = l.pool.as_ref().unwrap();
        assert_eq!(p.backends.len(), 3);
        assert_eq!((p.backends[2].weight, p.backends[2].backup), (2, true));
        assert_eq!(p.balance, Balance::LeastSessions);
        assert_eq!(p.health.login.as_ref().unwrap().user, "monitor");
        assert!(l.upstream.is_none());
        // What `fxprelay config` prints loads back to the same pool.
        let again = Config::parse(&c.effective_yaml()).unwrap();
        let p2 = again.listeners[0].pool.as_ref().unwrap();
        assert_eq!(p2.backends, p.backends);
        assert_eq!(p2.health.interval, p.health.interval);
    }

    #[test]
    fn one_upstream_stays_as_it_was() {
        let c = parse("    upstream: h:21\n").unwrap();
        assert!(c.listeners[0].pool.is_none());
        assert_eq!(
            c.listeners[0].upstream.as_ref().unwrap().to_string(),
            "h:21"
        );
        let c = parse("    upstream: h:21\n    health_check: {interval: 1s}\n").unwrap();
        let p = c.listeners[0].pool.as_ref().unwrap();
        assert_eq!((p.backends.len(), p.health.fall), (1, 3));
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("    upstream: []\n").unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = parse("    upstream: [a:21, a:21]\n").unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = parse("    upstream: [{address: a:21, weight: 0}]\n").unwrap_err();
        assert!(e.contains("weight"), "{e}");
        let e = parse("    upstream: [{address: a:21, colour: red}]\n").unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e = parse("    upstream: [a:21]\n    balance: random\n").unwrap_err();
        assert!(e.contains("random"), "{e}");
        let e = parse("    upstream: [\"2001:db8::1:21\"]\n").unwrap_err();
        assert!(e.contains("brackets"), "{e}");
        let e = parse("    upstream: [{address: a:21, backup: true}]\n").unwrap_err();
        assert!(e.contains("backup"), "{e}");
        let e = parse("    upstream: [a:21]\n    health_check: {rise: 0}\n").unwrap_err();
        assert!(e.contains("rise"), "{e}");
        let e = parse("    mode: forward\n    balance: user\n").unwrap_err();
        assert!(e.contains("balance"), "{e}");
    }

    /// Each mistake names the key it is about, on that key's own line.
    #[test]
    fn mistakes_name_their_key_and_line() {
        let e = parse("    upstream: [a:21, a:21]\n").unwrap_err();
        assert!(
            e.contains("`listeners[0].upstream`") && e.contains("line 4"),
            "{e}"
        );
        let e = parse("    upstream: [a:21]\n    health_check: {rise: 0}\n").unwrap_err();
        assert!(
            e.contains("`listeners[0].health_check`") && e.contains("line 5"),
            "{e}"
        );
        let e = parse("    mode: forward\n    health_check: {rise: 2}\n").unwrap_err();
        assert!(
            e.contains("`listeners[0].balance`") && e.contains("line 5"),
            "{e}"
        );
        assert_eq!(PoolError::AllBackups.key(), "upstream");
    }

    /// The check's password is a secret: printed as `***`, like `admin.token`.
    #[test]
    fn the_check_password_is_not_printed() {
        let c = parse(
            "    upstream: [a:21]\n    health_check: {login: {user: mon, password: s3cret}}\n",
        )
        .unwrap();
        let printed = c.effective_yaml();
        assert!(
            !printed.contains("s3cret") && printed.contains("user: mon"),
            "{printed}"
        );
    }
}
