//! What the defender decides by: the settings of one ban table, plain data, with the
//! defaults the configuration documents. Printed by `fxprelay config` in the file's own
//! keys (durations as `15m`, the connection rate as `20/10s`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

use super::DefenseEvent;

/// The settings of one ban table (`defense:`, or a listener's overrides of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// Scores older than this no longer count.
    #[serde(serialize_with = "duration")]
    pub window: Duration,
    /// A key whose score within `window` reaches this is banned.
    pub threshold: u32,
    /// The first ban's length; each repeat within `max_ban` of the last one's end doubles it.
    #[serde(serialize_with = "duration")]
    pub ban: Duration,
    /// The longest ban, and how long a key's last ban is remembered for the doubling.
    #[serde(serialize_with = "duration")]
    pub max_ban: Duration,
    /// IPv6 clients are keyed by their network of this many bits.
    pub ipv6_prefix: u8,
    /// New connections per key beyond this rate score `rate_limited`.
    pub connect_rate: Rate,
    /// User names only an attacker tries (`root`, `admin`); compared without case.
    pub bait_users: Vec<String>,
    /// Networks never scored, never banned.
    pub exempt: Vec<IpNet>,
    /// Banned clients' connections are closed without a word (else `421`).
    pub silent: bool,
    pub scores: Scores,
    /// A successful login clears the key's score (off: stuffing bots own some valid
    /// accounts, and would clear their score with one).
    pub clear_on_login: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            window: Duration::from_secs(10 * 60),
            threshold: 10,
            ban: Duration::from_secs(15 * 60),
            max_ban: Duration::from_secs(24 * 3600),
            ipv6_prefix: 64,
            connect_rate: Rate {
                count: 20,
                per: Duration::from_secs(10),
            },
            bait_users: Vec::new(),
            exempt: Vec::new(),
            silent: false,
            scores: Scores::default(),
            clear_on_login: false,
        }
    }
}

impl Settings {
    /// Whether `ip` is in an `exempt` network.
    pub fn exempts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.exempt.iter().any(|net| net.contains(&ip))
    }

    /// Whether `user` (a `USER` argument, the user part of `user@host` in forward mode)
    /// is one of `bait_users`.
    pub fn is_bait(&self, user: &str) -> bool {
        let user = user.trim();
        self.bait_users.iter().any(|b| b.eq_ignore_ascii_case(user))
    }
}

/// How much each event adds to its key's score (`scores:`); 0 leaves it unscored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Scores {
    pub login_failed: u32,
    pub bait_user: u32,
    pub bad_command: u32,
    pub early_close: u32,
    pub rate_limited: u32,
}

impl Default for Scores {
    fn default() -> Self {
        Scores {
            login_failed: 1,
            bait_user: 10,
            bad_command: 1,
            early_close: 1,
            rate_limited: 3,
        }
    }
}

impl Scores {
    /// What `event` scores (a successful login scores nothing).
    pub fn of(&self, event: DefenseEvent) -> u32 {
        match event {
            DefenseEvent::LoginFailed => self.login_failed,
            DefenseEvent::BaitUser => self.bait_user,
            DefenseEvent::BadCommand => self.bad_command,
            DefenseEvent::EarlyClose => self.early_close,
            DefenseEvent::RateLimited => self.rate_limited,
            DefenseEvent::LoggedIn => 0,
        }
    }
}

/// `count` events per `per` (`connect_rate: 20/10s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// The spacing that keeps to the rate: `per / count`.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.per))
    }
}

/// `20/10s`: a count of at least 1 and a duration above 0s.
impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        let expected = || format!("`{s}` is not a rate: write COUNT/DURATION, e.g. `20/10s`");
        let (count, per) = s.trim().split_once('/').ok_or_else(expected)?;
        let count: u32 = count.trim().parse().map_err(|_| expected())?;
        let per = humantime::parse_duration(per.trim()).map_err(|_| expected())?;
        if count == 0 || per.is_zero() {
            return Err(format!(
                "`{s}`: the count must be at least 1 and the duration longer than 0s"
            ));
        }
        Ok(Rate { count, per })
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}
