//! The defender's rules with a clock moved by hand: no socket, no sleep.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// The defaults, threshold 3 to keep the tests short.
fn settings() -> Settings {
    Settings {
        threshold: 3,
        ..Settings::default()
    }
}

/// `n` failed logins from `who` at `now`; the ban the last one made, if any.
fn fail(d: &mut Defender, who: &str, n: usize, now: Instant) -> Option<Ban> {
    let mut ban = None;
    for _ in 0..n {
        ban = d.record(ip(who), DefenseEvent::LoginFailed, now);
    }
    ban
}

#[test]
fn the_threshold_within_the_window_bans_for_ban() {
    let mut d = Defender::new(settings());
    let t0 = Instant::now();
    assert_eq!(fail(&mut d, "198.51.100.7", 2, t0), None);
    let ban = fail(&mut d, "198.51.100.7", 1, t0 + MIN).expect("the third failure bans");
    assert_eq!(ban.key, Key::of(ip("198.51.100.7"), 64));
    assert_eq!(ban.length, 15 * MIN);
    assert_eq!(ban.until, t0 + MIN + 15 * MIN);
    assert_eq!(ban.score(), 3);
    assert_eq!(ban.events(), "login_failed:3");
    assert_eq!(d.banned(ip("198.51.100.7"), t0 + MIN), Some(ban.until));
    assert!(d.on_connect(ip("198.51.100.7"), t0 + 2 * MIN).refuse);
    // Another address is not touched.
    assert_eq!(d.banned(ip("198.51.100.8"), t0 + MIN), None);
    assert!(!d.on_connect(ip("198.51.100.8"), t0 + 2 * MIN).refuse);
}

#[test]
fn scores_older_than_the_window_no_longer_count() {
    let mut d = Defender::new(settings());
    let t0 = Instant::now();
    fail(&mut d, "198.51.100.7", 2, t0);
    // Ten minutes later the first two are gone: two more do not ban.
    assert_eq!(fail(&mut d, "198.51.100.7", 2, t0 + 10 * MIN), None);
    assert!(fail(&mut d, "198.51.100.7", 1, t0 + 11 * MIN).is_some());
}

#[test]
fn a_ban_expires_and_is_reported_once() {
    let mut d = Defender::new(settings());
    let t0 = Instant::now();
    let ban = fail(&mut d, "198.51.100.7", 3, t0).unwrap();
    assert_eq!(d.active(), 1);
    assert_eq!(d.bans(t0).len(), 1);
    assert!(
        d.expire(t0 + 15 * MIN - Duration::from_millis(1))
            .is_empty()
    );
    assert!(d.on_connect(ip("198.51.100.7"), t0 + 14 * MIN).refuse);
    // The end: in at once, even before expire() reports it.
    assert!(!d.on_connect(ip("198.51.100.7"), ban.until).refuse);
    assert_eq!(d.banned(ip("198.51.100.7"), ban.until), None);
    assert!(d.bans(ban.until).is_empty());
    let ended = d.expire(ban.until);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].key, ban.key);
    assert!(d.expire(ban.until + MIN).is_empty(), "reported once");
    assert_eq!(d.active(), 0);
}

#[test]
fn a_repeat_ban_within_max_ban_is_twice_as_long_up_to_max_ban() {
    let mut d = Defender::new(settings());
    let mut now = Instant::now();
    let mut lengths = Vec::new();
    for _ in 0..9 {
        let ban = fail(&mut d, "198.51.100.7", 3, now).unwrap();
        lengths.push(ban.length);
        d.expire(ban.until);
        // The next offence an hour after the ban ended: within max_ban (24 h).
        now = ban.until + HOUR;
    }
    let minutes: Vec<u64> = lengths.iter().map(|l| l.as_secs() / 60).collect();
    assert_eq!(minutes, [15, 30, 60, 120, 240, 480, 960, 1440, 1440]);
}

#[test]
fn a_ban_long_forgotten_starts_again_at_ban() {
    let mut d = Defender::new(settings());
    let t0 = Instant::now();
    let first = fail(&mut d, "198.51.100.7", 3, t0).unwrap();
    d.expire(first.until);
    // More than max_ban after the last ban ended: a first offence again.
    let later = first.until + 24 * HOUR;
    let again = fail(&mut d, "198.51.100.7", 3, later).unwrap();
    assert_eq!(again.length, 15 * MIN);
}

#[test]
fn max_ban_caps_the_first_ban_too() {
    let mut d = Defender::new(Settings {
        ban: 2 * HOUR,
        max_ban: HOUR,
        ..settings()
    });
    let ban = fail(&mut d, "198.51.100.7", 3, Instant::now()).unwrap();
    assert_eq!(ban.length, HOUR);
}

#[test]
fn exempt_networks_are_never_scored_or_banned() {
    let mut d = Defender::new(Settings {
        exempt: vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
        ..settings()
    });
    let t0 = Instant::now();
    assert_eq!(fail(&mut d, "10.1.2.3", 50, t0), None);
    assert_eq!(fail(&mut d, "::ffff:10.1.2.3", 50, t0), None, "IPv4-mapped");
    assert_eq!(fail(&mut d, "2001:db8::5", 50, t0), None);
    for _ in 0..100 {
        assert_eq!(
            d.on_connect(ip("10.1.2.3"), t0),
            Connect {
                refuse: false,
                rate_limited: false,
                ban: None
            }
        );
    }
    assert_eq!(
        d.ban(ip("10.9.9.9"), HOUR, t0),
        Err(Refusal::Exempt),
        "not even by hand"
    );
    assert!(d.is_empty(), "nothing is kept for them");
}

#[test]
fn an_ipv6_network_of_ipv6_prefix_bits_counts_as_one() {
    let mut d = Defender::new(settings());
    let t0 = Instant::now();
    d.record(ip("2001:db8:1:2::1"), DefenseEvent::LoginFailed, t0);
    d.record(ip("2001:db8:1:2:aaaa::9"), DefenseEvent::LoginFailed, t0);
    // Another /64: its own key.
    d.record(ip("2001:db8:1:3::1"), DefenseEvent::LoginFailed, t0);
    let ban = d
        .record(
            ip("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            DefenseEvent::LoginFailed,
            t0,
        )
        .expect("three addresses of one /64 are one key");
    assert_eq!(ban.key.to_string(), "2001:db8:1:2::/64");
    assert!(d.banned(ip("2001:db8:1:2:1234::1"), t0).is_some());
    assert!(d.banned(ip("2001:db8:1:3::1"), t0).is_none());

    // A /128 prefix: every address its own key.
    let mut d = Defender::new(Settings {
        ipv6_prefix: 128,
        ..settings()
    });
    d.record(ip("2001:db8::1"), DefenseEvent::LoginFailed, t0);
    d.record(ip("2001:db8::2"), DefenseEvent::LoginFailed, t0);
    assert_eq!(
        d.record(ip("2001:db8::3"), DefenseEvent::LoginFailed, t0),
        None
    );
    let ban = fail(&mut d, "2001:db8::1", 2, t0).unwrap();
    assert_eq!(ban.key.to_string(), "2001:db8::1");
}

#[test]
fn ipv4_mapped_addresses_are_their_ipv4_key() {
    let mut d = Defender::new(settings());
    let t0 = Instant::now();
    fail(&mut d, "198.51.100.7", 2, t0);
    assert!(fail(&mut d, "::ffff:198.51.100.7", 1, t0).is_some());
}

#[test]
fn scores_add_up_by_event() {
    let mut d = Defender::new(Settings {
        bait_users: vec!["root".into()],
        ..Settings::default()
    });
    let t0 = Instant::now();
    let who = ip("198.51.100.7");
    assert!(d.settings().is_bait("ROOT"));
    assert!(!d.settings().is_bait("rooted"));
    assert_eq!(d.record(who, DefenseEvent::BadCommand, t0), None);
    assert_eq!(d.record(who, DefenseEvent::EarlyClose, t0), None);
    assert_eq!(d.record(who, DefenseEvent::LoggedIn, t0), None);
    // Default threshold 10: bait user (10) on top of the 2 above.
    let ban = d.record(who, DefenseEvent::BaitUser, t0).unwrap();
    assert_eq!(ban.score(), 12);
    assert_eq!(ban.events(), "bait_user:1,bad_command:1,early_close:1");
    // While banned nothing more is scored.
    assert_eq!(d.record(who, DefenseEvent::BaitUser, t0), None);
}

#[test]
fn an_event_scored_zero_counts_nothing() {
    let mut d = Defender::new(Settings {
        scores: Scores {
            early_close: 0,
            ..Scores::default()
        },
        threshold: 1,
        ..Settings::default()
    });
    let t0 = Instant::now();
    assert_eq!(
        d.record(ip("198.51.100.7"), DefenseEvent::EarlyClose, t0),
        None
    );
    assert!(d.is_empty());
}

#[test]
fn a_login_clears_the_score_only_when_configured() {
    let t0 = Instant::now();
    for clear in [false, true] {
        let mut d = Defender::new(Settings {
            clear_on_login: clear,
            ..settings()
        });
        fail(&mut d, "198.51.100.7", 2, t0);
        d.record(ip("198.51.100.7"), DefenseEvent::LoggedIn, t0);
        let banned = fail(&mut d, "198.51.100.7", 1, t0).is_some();
        assert_eq!(banned, !clear, "clear_on_login: {clear}");
    }
}

#[test]
fn connections_beyond_connect_rate_score_rate_limited() {
    // 20/10s, rate_limited 3, threshold 10: 20 at once pass, the 21st to 23rd are
    // scored (9), the 24th bans (12) and is refused.
    let mut d = Defender::new(Settings::default());
    let t0 = Instant::now();
    let who = ip("198.51.100.7");
    for i in 0..20 {
        let c = d.on_connect(who, t0);
        assert!(!c.refuse && !c.rate_limited, "connection {i}");
    }
    for i in 20..23 {
        let c = d.on_connect(who, t0);
        assert!(
            !c.refuse && c.rate_limited && c.ban.is_none(),
            "connection {i}"
        );
    }
    let c = d.on_connect(who, t0);
    assert!(c.refuse && c.rate_limited);
    assert_eq!(c.ban.unwrap().events(), "rate_limited:4");
    assert!(d.on_connect(who, t0 + MIN).refuse);
}

#[test]
fn connections_at_the_rate_are_never_limited() {
    let mut d = Defender::new(Settings::default());
    let t0 = Instant::now();
    let who = ip("198.51.100.7");
    // One every half second (20 per 10 s) for ten minutes, after a first burst of 20.
    for _ in 0..20 {
        assert!(!d.on_connect(who, t0).rate_limited);
    }
    for i in 1..1200u32 {
        let c = d.on_connect(who, t0 + Duration::from_millis(500) * i);
        assert!(!c.rate_limited, "connection {i}");
    }
}

#[test]
fn an_operator_bans_and_lets_in() {
    let mut d = Defender::new(settings());
    let t0 = Instant::now();
    let (ban, was) = d.ban(ip("198.51.100.7"), HOUR, t0).unwrap();
    assert!(!was);
    assert_eq!((ban.cause, ban.until), (Cause::Operator, t0 + HOUR));
    assert_eq!(ban.events(), "api");
    assert!(d.on_connect(ip("198.51.100.7"), t0).refuse);
    // Banning again replaces the ban.
    let (ban, was) = d.ban(ip("198.51.100.7"), MIN, t0).unwrap();
    assert!(was);
    assert_eq!(ban.until, t0 + MIN);
    assert_eq!(d.bans(t0).len(), 1);
    assert_eq!(d.active(), 1);
    // Let in: at once, and forgotten (the next ban is a first one again).
    assert_eq!(d.unban(ip("198.51.100.7")).map(|b| b.key), Some(ban.key));
    assert!(!d.on_connect(ip("198.51.100.7"), t0).refuse);
    assert_eq!(d.active(), 0);
    assert!(
        d.expire(t0 + HOUR).is_empty(),
        "a lifted ban does not end again"
    );
    assert_eq!(d.unban(ip("198.51.100.7")), None, "nothing left to lift");
    let next = fail(&mut d, "198.51.100.7", 3, t0 + 2 * MIN).unwrap();
    assert_eq!(next.length, 15 * MIN);
}

#[test]
fn the_table_is_bounded_oldest_scores_first_bans_never() {
    let mut d = Defender::with_capacity(settings(), 4);
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    // Two banned keys, then scores of three more: the table holds four.
    fail(&mut d, "192.0.2.1", 3, t0).unwrap();
    fail(&mut d, "192.0.2.2", 3, t0 + s).unwrap();
    fail(&mut d, "192.0.2.3", 1, t0 + 2 * s);
    fail(&mut d, "192.0.2.4", 1, t0 + 3 * s);
    assert_eq!(d.len(), 4);
    fail(&mut d, "192.0.2.5", 1, t0 + 4 * s);
    assert_eq!(d.len(), 4);
    // The oldest score (192.0.2.3) went, not the older bans: its next two failures do
    // not ban (they start from nothing), and both bans stand.
    assert_eq!(fail(&mut d, "192.0.2.3", 2, t0 + 5 * s), None);
    assert!(d.banned(ip("192.0.2.1"), t0 + 5 * s).is_some());
    assert!(d.banned(ip("192.0.2.2"), t0 + 5 * s).is_some());
    // A table full of bans takes no new key (and scores nothing for it) ...
    let mut full = Defender::with_capacity(settings(), 2);
    let first = fail(&mut full, "192.0.2.1", 3, t0).unwrap();
    fail(&mut full, "192.0.2.2", 3, t0).unwrap();
    assert_eq!(fail(&mut full, "192.0.2.3", 3, t0), None);
    assert_eq!(full.ban(ip("192.0.2.3"), HOUR, t0), Err(Refusal::Full));
    assert_eq!(full.len(), 2);
    assert_eq!(full.untracked(), 4, "three failures and the operator's ban");
    // ... until a ban ends and is reported.
    assert_eq!(full.expire(first.until).len(), 2);
    assert!(fail(&mut full, "192.0.2.3", 3, first.until).is_some());
}

#[test]
fn a_spray_never_grows_the_table_beyond_its_bound() {
    let mut d = Defender::with_capacity(Settings::default(), 1000);
    let t0 = Instant::now();
    for i in 0..50_000u32 {
        let who = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let now = t0 + Duration::from_millis(u64::from(i));
        d.on_connect(who, now);
        d.record(who, DefenseEvent::LoginFailed, now);
        assert!(d.len() <= 1000);
    }
}

#[test]
fn expire_forgets_keys_with_nothing_left_to_remember() {
    let mut d = Defender::new(settings());
    let t0 = Instant::now();
    fail(&mut d, "198.51.100.7", 1, t0);
    d.on_connect(ip("198.51.100.8"), t0);
    let ban = fail(&mut d, "198.51.100.9", 3, t0).unwrap();
    d.expire(t0);
    assert_eq!(d.len(), 3);
    // After the window only the ban remains (remembered for max_ban after its end).
    d.expire(t0 + 10 * MIN);
    assert_eq!(d.len(), 1);
    d.expire(ban.until + 24 * HOUR);
    assert!(d.is_empty());
}

#[test]
fn the_tarpit_holds_the_fourth_and_later_failures_longer_and_longer() {
    use super::tarpit::{Tarpit, delay};
    let secs = |n| Duration::from_secs(n);
    assert_eq!(
        (1..=8).map(delay).collect::<Vec<_>>(),
        [
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            secs(1),
            secs(2),
            secs(4),
            secs(5),
            secs(5)
        ]
    );
    let window = 10 * MIN;
    let mut t = Tarpit::default();
    let t0 = Instant::now();
    let waits: Vec<_> = (0..6).map(|i| t.failed(t0 + secs(i), window)).collect();
    assert_eq!(waits[..3], [Duration::ZERO; 3]);
    assert_eq!(waits[3..], [secs(1), secs(2), secs(4)]);
    // Failures older than the window no longer count.
    assert_eq!(t.failed(t0 + 20 * MIN, window), Duration::ZERO);
    for i in 0..1000 {
        assert!(t.failed(t0 + 30 * MIN + secs(i), window) <= secs(5));
    }
}

#[test]
fn rates_read_and_print_as_written() {
    let r: Rate = "20/10s".parse().unwrap();
    assert_eq!((r.count, r.per), (20, Duration::from_secs(10)));
    assert_eq!(r.to_string(), "20/10s");
    assert_eq!(r.interval(), Duration::from_millis(500));
    assert_eq!(" 5 / 1m ".parse::<Rate>().unwrap().to_string(), "5/1m");
    for bad in ["20", "0/10s", "20/0s", "x/10s", "20/ten"] {
        assert!(bad.parse::<Rate>().is_err(), "{bad}");
    }
}
