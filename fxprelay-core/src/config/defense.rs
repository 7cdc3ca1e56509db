//! `defense:`, the edge defense every listener has unless it says `defense: off` or
//! overrides keys of it, and the section's rules: each value checked as it is parsed
//! (durations above 0s, a threshold of at least 1, a prefix length from 1 to 128, a rate
//! `COUNT/DURATION`), then `ban` no longer than `max_ban`, checked on what a listener's
//! overrides make of the top level's settings.
//!
//! Listeners whose settings come out equal to the top level's share one ban table (a
//! client banned on one is banned on all of them); a listener with settings of its own
//! has a table of its own.

use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_saphyr::Spanned;

use super::error::ConfigError;
use super::origin::listener_key;
use super::schema::{FileDefense, FileListenerDefense, NonzeroDuration};

use crate::defense::Settings;

/// The top-level `defense:` block, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefenseConfig {
    /// Off: only listeners that override `enabled: true` defend themselves.
    pub enabled: bool,
    #[serde(flatten)]
    pub settings: Settings,
}

/// What a file without `defense:` gets: on, with the documented defaults.
impl Default for DefenseConfig {
    fn default() -> Self {
        DefenseConfig {
            enabled: true,
            settings: Settings::default(),
        }
    }
}

/// A listener's `defense:`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ListenerDefense {
    /// The top-level settings and their shared ban table (not written, or overrides that
    /// change nothing).
    #[default]
    Shared,
    /// `defense: off` (or `enabled: false`): no scores, no bans, no tarpit.
    Off,
    /// Settings of its own, and a ban table of its own.
    Own(Settings),
}

impl ListenerDefense {
    pub fn is_shared(&self) -> bool {
        *self == ListenerDefense::Shared
    }
}

/// Printed as the file writes it: `off`, or every key of its own settings (which load
/// back to the same settings; they differ from the top level's, or it would be shared).
impl Serialize for ListenerDefense {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ListenerDefense::Shared => s.serialize_none(),
            ListenerDefense::Off => s.serialize_str("off"),
            ListenerDefense::Own(settings) => DefenseConfig {
                enabled: true,
                settings: settings.clone(),
            }
            .serialize(s),
        }
    }
}

/// The top-level block: the defaults, with what the file wrote over them.
pub(super) fn validate(file: Option<&Spanned<FileDefense>>) -> Result<DefenseConfig, ConfigError> {
    let base = DefenseConfig::default();
    let Some(file) = file else {
        return Ok(base);
    };
    let settings = merge(&base.settings, &file.value);
    rules("defense", file.referenced.line(), &file.value, &settings)?;
    Ok(DefenseConfig {
        enabled: file.value.enabled.unwrap_or(base.enabled),
        settings,
    })
}

/// Listener `i`'s `defense:`, over the top level's `top`.
pub(super) fn validate_listener(
    i: usize,
    top: &DefenseConfig,
    file: Option<&Spanned<FileListenerDefense>>,
    warnings: &mut Vec<String>,
) -> Result<ListenerDefense, ConfigError> {
    let Some(spanned) = file else {
        return Ok(ListenerDefense::Shared);
    };
    let on = FileDefense {
        enabled: Some(true),
        ..FileDefense::default()
    };
    let overrides = match &spanned.value {
        FileListenerDefense::Off => return Ok(ListenerDefense::Off),
        FileListenerDefense::On if top.enabled => return Ok(ListenerDefense::Shared),
        FileListenerDefense::On => &on,
        FileListenerDefense::Override(f) => f,
    };
    let (key, line) = (listener_key(i, "defense"), spanned.referenced.line());
    let settings = merge(&top.settings, overrides);
    rules(&key, line, overrides, &settings)?;
    let enabled = overrides.enabled.unwrap_or(top.enabled);
    if !enabled {
        if overrides.enabled.is_none() {
            warnings.push(format!(
                "{key} (line {line}) overrides keys, but `defense.enabled` is false, so the listener does not defend itself: add `enabled: true` to turn it on here"
            ));
        }
        return Ok(ListenerDefense::Off);
    }
    if top.enabled && settings == top.settings {
        return Ok(ListenerDefense::Shared);
    }
    Ok(ListenerDefense::Own(settings))
}

/// `base` with every key `f` writes in its place.
fn merge(base: &Settings, f: &FileDefense) -> Settings {
    let mut s = base.clone();
    let set = |to: &mut Duration, from: &Option<Spanned<NonzeroDuration>>| {
        if let Some(d) = from {
            *to = d.value.0;
        }
    };
    if let Some(w) = f.window {
        s.window = w;
    }
    if let Some(t) = f.threshold {
        s.threshold = t;
    }
    set(&mut s.ban, &f.ban);
    set(&mut s.max_ban, &f.max_ban);
    if let Some(p) = f.ipv6_prefix {
        s.ipv6_prefix = p;
    }
    if let Some(r) = f.connect_rate {
        s.connect_rate = r;
    }
    if let Some(b) = &f.bait_users {
        s.bait_users = b.clone();
    }
    if let Some(e) = &f.exempt {
        s.exempt = e.clone();
    }
    if let Some(v) = f.silent {
        s.silent = v;
    }
    if let Some(v) = f.clear_on_login {
        s.clear_on_login = v;
    }
    if let Some(scores) = &f.scores {
        let sc = &mut s.scores;
        for (to, from) in [
            (&mut sc.login_failed, scores.login_failed),
            (&mut sc.bait_user, scores.bait_user),
            (&mut sc.bad_command, scores.bad_command),
            (&mut sc.early_close, scores.early_close),
            (&mut sc.rate_limited, scores.rate_limited),
        ] {
            if let Some(v) = from {
                *to = v;
            }
        }
    }
    s
}

/// The rules across keys, on the merged `settings` of the block `file` written at
/// `key` on `line`.
fn rules(key: &str, line: u64, file: &FileDefense, settings: &Settings) -> Result<(), ConfigError> {
    if settings.ban > settings.max_ban {
        // Name the key this block wrote (both: `ban`); the block's line otherwise.
        let (name, at) = match (&file.ban, &file.max_ban) {
            (Some(b), _) => ("ban", b.referenced.line()),
            (None, Some(m)) => ("max_ban", m.referenced.line()),
            (None, None) => ("ban", line),
        };
        return Err(ConfigError::invalid(
            format!("{key}.{name}"),
            at,
            format!(
                "`ban` ({}) is longer than `max_ban` ({}): the first ban would already be cut to max_ban",
                humantime::format_duration(settings.ban),
                humantime::format_duration(settings.max_ban)
            ),
        ));
    }
    Ok(())
}

/// A listener's `defense:` as written: `off`, or a map of keys overriding the top level's.
impl<'de> Deserialize<'de> for FileListenerDefense {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FileListenerDefense;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`off`, or a map of `defense:` keys that override the top level's (e.g. `{threshold: 5, exempt: [10.0.0.0/8]}`)")
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<Self::Value, E> {
                Ok(if on {
                    FileListenerDefense::On
                } else {
                    FileListenerDefense::Off
                })
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                match s.trim() {
                    "off" | "false" => Ok(FileListenerDefense::Off),
                    "on" | "true" => Ok(FileListenerDefense::On),
                    _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                FileDefense::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|f| FileListenerDefense::Override(Box::new(f)))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    const LISTENER: &str =
        "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n";

    fn parse(text: &str) -> Config {
        Config::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn without_a_defense_block_every_listener_defends_itself_with_the_defaults() {
        let c = parse(LISTENER);
        assert!(c.defense.enabled);
        assert_eq!(c.defense.settings, Settings::default());
        assert_eq!(c.listeners[0].defense, ListenerDefense::Shared);
        assert_eq!(c.defense_of(&c.listeners[0]), Some(&Settings::default()));
    }

    #[test]
    fn the_issue_block_loads_as_written() {
        let c = parse(&format!(
            "defense:
  enabled: true          # default true, with these defaults
  window: 10m
  threshold: 10
  ban: 15m               # first ban; repeats double it
  max_ban: 24h
  ipv6_prefix: 64
  connect_rate: 20/10s   # new connections per key; more scores `rate_limited`
  bait_users: []         # e.g. [root, admin, administrator, test]
  exempt: []             # CIDRs never banned
  silent: false
  scores: {{login_failed: 1, bait_user: 10, bad_command: 1, early_close: 1, rate_limited: 3}}
{LISTENER}"
        ));
        assert_eq!(c.defense, DefenseConfig::default());
        let c = parse(&format!(
            "defense:\n  threshold: 5\n  bait_users: [root, Admin]\n  exempt: [10.0.0.0/8, 192.0.2.7]\n  connect_rate: 5/1m\n  scores: {{early_close: 0}}\n  clear_on_login: true\n{LISTENER}"
        ));
        let s = &c.defense.settings;
        assert_eq!(s.threshold, 5);
        assert!(s.is_bait("admin") && s.is_bait("ROOT"));
        assert!(s.exempts("192.0.2.7".parse().unwrap()) && s.exempts("10.1.1.1".parse().unwrap()));
        assert_eq!(s.connect_rate.to_string(), "5/1m");
        assert_eq!((s.scores.early_close, s.scores.bait_user), (0, 10));
        assert!(s.clear_on_login);
    }

    #[test]
    fn a_listener_says_off_or_overrides_keys() {
        let two = "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n";
        let c = parse(&format!(
            "defense:\n  threshold: 5\n{two}    defense: off\n  - name: b\n    bind: 127.0.0.1:2122\n    upstream: h:21\n    defense: {{threshold: 3, ban: 1m}}\n  - name: c\n    bind: 127.0.0.1:2123\n    upstream: h:21\n    defense: {{threshold: 5}}\n  - name: d\n    bind: 127.0.0.1:2124\n    upstream: h:21\n    defense: on\n"
        ));
        let [a, b, cc, d] = &c.listeners[..] else {
            panic!()
        };
        assert_eq!(a.defense, ListenerDefense::Off);
        assert_eq!(c.defense_of(a), None);
        let ListenerDefense::Own(own) = &b.defense else {
            panic!("{:?}", b.defense)
        };
        assert_eq!((own.threshold, own.ban), (3, Duration::from_secs(60)));
        assert_eq!(
            own.window, c.defense.settings.window,
            "the rest as the top level"
        );
        assert_eq!(
            cc.defense,
            ListenerDefense::Shared,
            "overrides that change nothing"
        );
        assert_eq!(d.defense, ListenerDefense::Shared);
        // With the top level off, a listener turns it on for itself.
        let c = parse(&format!(
            "defense:\n  enabled: false\n{two}    defense: {{enabled: true}}\n  - name: b\n    bind: 127.0.0.1:2122\n    upstream: h:21\n"
        ));
        assert_eq!(
            c.listeners[0].defense,
            ListenerDefense::Own(Settings::default())
        );
        assert_eq!(c.defense_of(&c.listeners[1]), None);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // Overrides under a disabled top level without `enabled: true` do nothing: warned.
        let c = parse(&format!(
            "defense:\n  enabled: false\n{two}    defense: {{threshold: 3}}\n"
        ));
        assert_eq!(c.listeners[0].defense, ListenerDefense::Off);
        assert!(
            c.warnings[0].contains("listeners[0].defense")
                && c.warnings[0].contains("enabled: true"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn bad_values_name_their_key_and_line() {
        let e = err(&format!(
            "defense:\n  window: 10m\n  threshold: 0\n{LISTENER}"
        ));
        assert!(e.contains("line 3") && e.contains("at least 1"), "{e}");
        let e = err(&format!("defense:\n  ipv6_prefix: 129\n{LISTENER}"));
        assert!(e.contains("line 2") && e.contains("1 to 128"), "{e}");
        let e = err(&format!("defense:\n  connect_rate: 20\n{LISTENER}"));
        assert!(e.contains("line 2") && e.contains("COUNT/DURATION"), "{e}");
        let e = err(&format!("defense:\n  ban: 0s\n{LISTENER}"));
        assert!(e.contains("line 2") && e.contains("longer than 0s"), "{e}");
        let e = err(&format!("defense:\n  treshold: 5\n{LISTENER}"));
        assert!(e.contains("line 2") && e.contains("threshold"), "{e}");
        let e = err(&format!(
            "defense:\n  scores: {{login_fail: 2}}\n{LISTENER}"
        ));
        assert!(e.contains("line 2") && e.contains("login_failed"), "{e}");
        let e = err(&format!("defense:\n  exempt: [10.0.0.0/33]\n{LISTENER}"));
        assert!(e.contains("line 2"), "{e}");
        let e = err(&format!("defense:\n  bait_users: [root, '']\n{LISTENER}"));
        assert!(e.contains("line 2") && e.contains("empty"), "{e}");
        // Across keys: the key written, with its line.
        let e = err(&format!("defense:\n  window: 1m\n  ban: 48h\n{LISTENER}"));
        assert!(e.contains("line 3") && e.contains("`defense.ban`"), "{e}");
        let e = err(&format!("{LISTENER}    defense:\n      max_ban: 5m\n"));
        assert!(
            e.contains("line 6") && e.contains("`listeners[0].defense.max_ban`"),
            "{e}"
        );
        let e = err(&format!("{LISTENER}    defense: maybe\n"));
        assert!(e.contains("line 5") && e.contains("`off`"), "{e}");
        let e = err(&format!("{LISTENER}    defense: {{windw: 1m}}\n"));
        assert!(e.contains("line 5") && e.contains("window"), "{e}");
    }

    #[test]
    fn fxprelay_config_prints_it_and_it_loads_back_the_same() {
        let text = format!(
            "defense:\n  window: 5m\n  threshold: 7\n  ban: 2m\n  max_ban: 1h\n  ipv6_prefix: 56\n  connect_rate: 10/1s\n  bait_users: [root]\n  exempt: [10.0.0.0/8]\n  silent: true\n  scores: {{login_failed: 2, bait_user: 9, bad_command: 3, early_close: 0, rate_limited: 4}}\n  clear_on_login: true\n{LISTENER}    defense: off\n  - name: b\n    bind: 127.0.0.1:2122\n    upstream: h:21\n    defense: {{threshold: 3}}\n  - name: c\n    bind: 127.0.0.1:2123\n    upstream: h:21\n"
        );
        let c = parse(&text);
        let printed = c.effective_yaml();
        for line in [
            "defense:\n  enabled: true\n  window: 5m\n  threshold: 7\n  ban: 2m\n  max_ban: 1h\n  ipv6_prefix: 56\n  connect_rate: 10/1s\n",
            "\n  defense: \"off\"\n",
        ] {
            assert!(printed.contains(line), "{line}\nnot in\n{printed}");
        }
        let again = parse(&printed);
        assert_eq!(again.defense, c.defense);
        let defenses = |c: &Config| {
            c.listeners
                .iter()
                .map(|l| l.defense.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(defenses(&again), defenses(&c), "{printed}");
        assert_eq!(again.effective_yaml(), printed);
    }
}
