//! Edge defense, sans I/O: scores what clients do per key and decides bans, with time
//! passed in. No socket, no lock, no clock, no tokio: the running proxy keeps each
//! [`Defender`] behind a mutex of its own (`crate::bans`) and asks it at accept time, on
//! data ports and when sessions report [`DefenseEvent`]s; every rule here is a unit test
//! that moves the clock by hand (`tests.rs`).
//!
//! - [`Key`]: a client's address, an IPv6 client's network (`ipv6_prefix`) as one key;
//! - [`Settings`]: window, threshold, ban lengths, scores, exempt networks, bait users;
//! - [`Defender`]: the table of keys: scores within the window, the connection rate, bans
//!   (doubled for repeats within `max_ban`), bounded in size;
//! - [`tarpit`]: how late a session answers its own repeated failed logins.
//!
//! It imports nothing from the crate: it is the pure core the accept loop, the session
//! machine and the admin API decide by.

mod key;
mod settings;
pub mod tarpit;
#[cfg(test)]
mod tests;

pub use key::Key;
pub use settings::{Rate, Scores, Settings};
pub use tarpit::Tarpit;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Keys a table holds at most (scores, rates and bans together): a spray from millions of
/// addresses costs at most this many entries. The oldest scores are evicted first; bans
/// are never evicted before they end.
pub const MAX_KEYS: usize = 100_000;

/// How often [`Defender::expire`] also forgets keys with nothing left to remember.
const FORGET_EVERY: Duration = Duration::from_secs(10);

/// What a client did that the defender hears of. The metric label and the log say
/// [`DefenseEvent::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DefenseEvent {
    /// The server's `530` to `USER`/`PASS`/`ACCT`, or the proxy's own refusal of a login.
    LoginFailed,
    /// A login as one of `bait_users`.
    BaitUser,
    /// An unparseable command, or one refused for want of a login, before logging in.
    BadCommand,
    /// A connection closed (or timed out) before login without a single command.
    EarlyClose,
    /// More new connections than `connect_rate` (the defender notices this itself).
    RateLimited,
    /// A successful login: scores nothing; clears the score with `clear_on_login`.
    LoggedIn,
}

impl DefenseEvent {
    /// The scored events, in the order [`Ban::events`] counts them.
    pub const SCORED: [DefenseEvent; 5] = [
        DefenseEvent::LoginFailed,
        DefenseEvent::BaitUser,
        DefenseEvent::BadCommand,
        DefenseEvent::EarlyClose,
        DefenseEvent::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DefenseEvent::LoginFailed => "login_failed",
            DefenseEvent::BaitUser => "bait_user",
            DefenseEvent::BadCommand => "bad_command",
            DefenseEvent::EarlyClose => "early_close",
            DefenseEvent::RateLimited => "rate_limited",
            DefenseEvent::LoggedIn => "logged_in",
        }
    }

    fn index(self) -> Option<usize> {
        DefenseEvent::SCORED.iter().position(|e| *e == self)
    }
}

/// Why a key is banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Its score reached the threshold: the score and, per [`DefenseEvent::SCORED`]
    /// event, how many of each made it.
    Score { score: u32, events: [u32; 5] },
    /// An operator banned it (the admin API).
    Operator,
}

/// A ban, as the log, the metrics and the admin API show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub key: Key,
    pub until: Instant,
    /// How long it was given (doubled from `ban` for repeats).
    pub length: Duration,
    pub cause: Cause,
}

impl Ban {
    /// `login_failed:8,bait_user:1`, the events that made a scored ban (`api` for an
    /// operator's).
    pub fn events(&self) -> String {
        match self.cause {
            Cause::Operator => "api".into(),
            Cause::Score { events, .. } => DefenseEvent::SCORED
                .iter()
                .zip(events)
                .filter(|(_, n)| *n > 0)
                .map(|(e, n)| format!("{}:{n}", e.as_str()))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// The score that made it (0 for an operator's).
    pub fn score(&self) -> u32 {
        match self.cause {
            Cause::Score { score, .. } => score,
            Cause::Operator => 0,
        }
    }
}

/// A new connection, as the defender judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Refuse it: the key is banned (`ban` says so if this very connection banned it).
    pub refuse: bool,
    /// It came faster than `connect_rate` allows and was scored `rate_limited`.
    pub rate_limited: bool,
    /// The ban this connection's score decided.
    pub ban: Option<Ban>,
}

/// Why an operator's ban was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address is in `exempt`.
    Exempt,
    /// The table is full of bans that have not ended.
    Full,
}

/// One entry of the table.
#[derive(Debug)]
struct Entry {
    /// Last scored, connected or banned: the oldest go first when the table is full.
    touched: Instant,
    /// The scores within the window, oldest first (the score reaches the threshold, and
    /// the marks are cleared, before they outnumber it).
    marks: Vec<Mark>,
    /// The connection rate (GCRA): when the next connection is due at the full rate.
    next_connect: Option<Instant>,
    /// The key's ban, current or last (kept to double the next within `max_ban`).
    ban: Option<BanState>,
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    score: u32,
    event: DefenseEvent,
}

#[derive(Debug, Clone, Copy)]
struct BanState {
    until: Instant,
    length: Duration,
    cause: Cause,
    /// [`Defender::expire`] has reported its end.
    ended: bool,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            touched: now,
            marks: Vec::new(),
            next_connect: None,
            ban: None,
        }
    }

    fn banned(&self, now: Instant) -> bool {
        self.ban.is_some_and(|b| b.until > now)
    }

    /// Whether the entry may go to make room: no ban that has not ended (an ended one is
    /// reported by [`Defender::expire`] first).
    fn evictable(&self) -> bool {
        self.ban.is_none_or(|b| b.ended)
    }

    /// Whether it still holds anything that matters at `now`.
    fn remembers(&self, now: Instant, s: &Settings) -> bool {
        let in_window = |t: Instant| now.saturating_duration_since(t) < s.window;
        self.marks.last().is_some_and(|m| in_window(m.at))
            || self.next_connect.is_some_and(|t| t > now)
            || self
                .ban
                .is_some_and(|b| !b.ended || now.saturating_duration_since(b.until) < s.max_ban)
    }
}

/// The table of one set of [`Settings`]: per key, the scores within the window, the
/// connection rate and the ban. At most `capacity` keys.
#[derive(Debug)]
pub struct Defender {
    settings: Settings,
    capacity: usize,
    entries: HashMap<Key, Entry>,
    /// Bans not yet reported ended, by end: what [`Defender::expire`] walks.
    bans: BTreeSet<(Instant, Key)>,
    forgot: Option<Instant>,
    /// Connections and events of new keys left unscored: the table was full of bans.
    untracked: u64,
}

impl Defender {
    /// A table of at most [`MAX_KEYS`] keys.
    pub fn new(settings: Settings) -> Defender {
        Defender::with_capacity(settings, MAX_KEYS)
    }

    /// A table of at most `capacity` keys (at least 1).
    pub fn with_capacity(settings: Settings, capacity: usize) -> Defender {
        Defender {
            settings,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            bans: BTreeSet::new(),
            forgot: None,
            untracked: 0,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// New settings for the keys held (a reload): scores and bans stay. Keys made with
    /// another `ipv6_prefix` keep their entries until they are forgotten.
    pub fn reconfigure(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Connections and events of new keys left unscored since the table was made,
    /// because it was full of bans that had not ended.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Bans that have not been reported ended (those [`Defender::bans`] lists, and those
    /// whose end [`Defender::expire`] will report next).
    pub fn active(&self) -> usize {
        self.bans.len()
    }

    /// The key of a client at `ip`.
    pub fn key(&self, ip: IpAddr) -> Key {
        Key::of(ip, self.settings.ipv6_prefix)
    }

    /// The end of `ip`'s ban, if it is banned at `now`.
    pub fn banned(&self, ip: IpAddr, now: Instant) -> Option<Instant> {
        let entry = self.entries.get(&self.key(ip))?;
        entry.ban.filter(|_| entry.banned(now)).map(|b| b.until)
    }

    /// A new connection from `ip` at `now`: refused while its key is banned; otherwise
    /// counted against `connect_rate`, and scored `rate_limited` beyond it (which may
    /// ban the key, and refuse this connection).
    pub fn on_connect(&mut self, ip: IpAddr, now: Instant) -> Connect {
        let mut verdict = Connect {
            refuse: false,
            rate_limited: false,
            ban: None,
        };
        if self.settings.exempts(ip) {
            return verdict;
        }
        let key = self.key(ip);
        if self.banned(ip, now).is_some() {
            verdict.refuse = true;
            return verdict;
        }
        let rate = self.settings.connect_rate;
        let Some(entry) = self.entry(key, now) else {
            return verdict;
        };
        // GCRA: each connection books `per / count` of time; a burst may book up to
        // `per` ahead of now, so `count` connections at once pass and the next does not.
        let booked = entry.next_connect.map_or(now, |t| t.max(now)) + rate.interval();
        if booked.saturating_duration_since(now) > rate.per {
            verdict.rate_limited = true;
            verdict.ban = self.score(key, DefenseEvent::RateLimited, now);
            verdict.refuse = verdict.ban.is_some();
        } else {
            entry.next_connect = Some(booked);
        }
        verdict
    }

    /// `event` from a client at `ip`, at `now`: scored (nothing for exempt networks or a
    /// key already banned); `Some` when it bans the key.
    pub fn record(&mut self, ip: IpAddr, event: DefenseEvent, now: Instant) -> Option<Ban> {
        if self.settings.exempts(ip) {
            return None;
        }
        let key = self.key(ip);
        if event == DefenseEvent::LoggedIn {
            if self.settings.clear_on_login
                && let Some(entry) = self.entries.get_mut(&key)
            {
                entry.marks.clear();
            }
            return None;
        }
        if self.banned(ip, now).is_some() {
            return None;
        }
        self.score(key, event, now)
    }

    /// Adds `event`'s score to `key`; bans it when its score within the window reaches
    /// the threshold.
    fn score(&mut self, key: Key, event: DefenseEvent, now: Instant) -> Option<Ban> {
        let s = &self.settings;
        let (points, window, threshold) = (s.scores.of(event), s.window, s.threshold);
        if points == 0 {
            return None;
        }
        let entry = self.entry(key, now)?;
        entry
            .marks
            .retain(|m| now.saturating_duration_since(m.at) < window);
        entry.marks.push(Mark {
            at: now,
            score: points,
            event,
        });
        let score: u32 = entry.marks.iter().map(|m| m.score).sum();
        if score < threshold {
            return None;
        }
        let mut events = [0; 5];
        for m in &entry.marks {
            if let Some(i) = m.event.index() {
                events[i] += 1;
            }
        }
        entry.marks.clear();
        let length = self.next_length(key, now);
        Some(self.impose(key, now, length, Cause::Score { score, events }))
    }

    /// The length of `key`'s next ban: `ban`, or twice the last one when that ended
    /// less than `max_ban` ago; never more than `max_ban`.
    fn next_length(&self, key: Key, now: Instant) -> Duration {
        let s = &self.settings;
        let last = self.entries.get(&key).and_then(|e| e.ban);
        let length = match last {
            Some(b) if now.saturating_duration_since(b.until) < s.max_ban => {
                b.length.saturating_mul(2)
            }
            _ => s.ban,
        };
        length.min(s.max_ban)
    }

    /// Bans `key` from `now` for `length` (the entry exists).
    fn impose(&mut self, key: Key, now: Instant, length: Duration, cause: Cause) -> Ban {
        let until = now + length;
        if let Some(entry) = self.entries.get_mut(&key) {
            if let Some(old) = entry.ban.filter(|b| !b.ended) {
                self.bans.remove(&(old.until, key));
            }
            entry.ban = Some(BanState {
                until,
                length,
                cause,
                ended: false,
            });
            entry.touched = now;
        }
        self.bans.insert((until, key));
        Ban {
            key,
            until,
            length,
            cause,
        }
    }

    /// An operator bans `ip` for `length` from `now` (replacing a ban it has). The
    /// second value says whether it was banned already.
    pub fn ban(
        &mut self,
        ip: IpAddr,
        length: Duration,
        now: Instant,
    ) -> Result<(Ban, bool), Refusal> {
        if self.settings.exempts(ip) {
            return Err(Refusal::Exempt);
        }
        let key = self.key(ip);
        let was = self.banned(ip, now).is_some();
        let entry = self.entry(key, now).ok_or(Refusal::Full)?;
        entry.marks.clear();
        Ok((self.impose(key, now, length, Cause::Operator), was))
    }

    /// An operator lets `ip` in again: its key is forgotten (score, rate, ban and the
    /// memory of it). The ban lifted, if it had one that had not been reported ended.
    pub fn unban(&mut self, ip: IpAddr) -> Option<Ban> {
        let key = self.key(ip);
        let entry = self.entries.remove(&key)?;
        let b = entry.ban.filter(|b| !b.ended)?;
        self.bans.remove(&(b.until, key));
        Some(Ban {
            key,
            until: b.until,
            length: b.length,
            cause: b.cause,
        })
    }

    /// The bans in force at `now`, those ending first first.
    pub fn bans(&self, now: Instant) -> Vec<Ban> {
        self.bans
            .iter()
            .filter(|(until, _)| *until > now)
            .filter_map(|(_, key)| {
                let b = self.entries.get(key)?.ban?;
                Some(Ban {
                    key: *key,
                    until: b.until,
                    length: b.length,
                    cause: b.cause,
                })
            })
            .collect()
    }

    /// The bans that ended by `now` and were not reported yet, each reported once; every
    /// few seconds, also forgets the keys with nothing left to remember.
    pub fn expire(&mut self, now: Instant) -> Vec<Ban> {
        let mut ended = Vec::new();
        while let Some(&(until, key)) = self.bans.first() {
            if until > now {
                break;
            }
            self.bans.pop_first();
            if let Some(b) = self.entries.get_mut(&key).and_then(|e| e.ban.as_mut()) {
                b.ended = true;
                ended.push(Ban {
                    key,
                    until: b.until,
                    length: b.length,
                    cause: b.cause,
                });
            }
        }
        if self
            .forgot
            .is_none_or(|t| now.saturating_duration_since(t) >= FORGET_EVERY)
        {
            self.forgot = Some(now);
            let s = &self.settings;
            self.entries.retain(|_, e| e.remembers(now, s));
        }
        ended
    }

    /// `key`'s entry, made if need be: `None` when the table is full of bans.
    fn entry(&mut self, key: Key, now: Instant) -> Option<&mut Entry> {
        if !self.entries.contains_key(&key) {
            if self.entries.len() >= self.capacity {
                self.evict();
            }
            if self.entries.len() >= self.capacity {
                self.untracked += 1;
                return None;
            }
            self.entries.insert(key, Entry::new(now));
        }
        let entry = self.entries.get_mut(&key)?;
        entry.touched = entry.touched.max(now);
        Some(entry)
    }

    /// Makes room: the oldest sixteenth of the evictable keys goes (at least one), so a
    /// spray that keeps the table full pays for one scan every `capacity / 16` new keys.
    fn evict(&mut self) {
        let mut oldest: Vec<(Instant, Key)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.evictable())
            .map(|(k, e)| (e.touched, *k))
            .collect();
        if oldest.is_empty() {
            return;
        }
        let n = (self.capacity / 16).clamp(1, oldest.len());
        if n < oldest.len() {
            oldest.select_nth_unstable(n - 1);
        }
        let doomed: HashSet<Key> = oldest[..n].iter().map(|(_, k)| *k).collect();
        // Rebuilt rather than removed from: the removed slots of an open-addressing map
        // stay tombstones, and a map kept full by a spray would double its buckets to
        // get rid of them (measured: 27 MiB full, 45 MiB after a spray of twice as many
        // addresses). Rebuilt, it stays at the size of its bound.
        let mut kept = HashMap::with_capacity(self.entries.len() - doomed.len());
        kept.extend(self.entries.drain().filter(|(k, _)| !doomed.contains(k)));
        self.entries = kept;
    }
}
