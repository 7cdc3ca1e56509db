//! The ban tables of the running proxy: each a pure [`Defender`] behind a mutex of its
//! own, shared by the accept loops that refuse banned clients, the session shells that
//! report what their machines saw, the relay data ports and the admin API. This is the
//! thin, impure side of the defense: the clock, the locks, the log lines and the metrics.
//!
//! Listeners that run with the top-level `defense:` settings share one table (a client
//! banned on one is banned on all of them); a listener with settings of its own has its
//! own. A reload keeps every table that still serves a listener, with its scores and
//! bans, under the new settings.
//!
//! With a durable state store ([`crate::state`]) the bans are shared ([`Bans::share`]):
//! every ban made here (by the defense or an operator) and every lifting is written to
//! the store, and every half second the bans other instances wrote are applied here, so
//! a client banned by one instance is refused by all within a second or two, and bans
//! survive restarts (the first look after a start applies every ban still in force).
//! Which stored rows to apply is [`to_apply`], pure. Without a durable store bans live
//! in memory, and a restart forgets them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, ListenerDefense, ProxyProtocol};
use crate::defense::{Ban, Cause, Defender, DefenseEvent, Refusal, Settings};
use crate::metrics;
use crate::state::{self, BanRow, Millis, StateStore};

/// How often ended bans are reported (logged, and taken off `fxprelay_bans_active`).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often the bans of the fleet are read from the store (and this instance's new
/// ones written): a ban reaches every instance within about this.
const SHARE_EVERY: Duration = Duration::from_millis(500);
/// How far back each look at the store reaches before the newest change seen: rows
/// written by an instance whose clock lags this one's are still read.
const SHARE_OVERLAP: Millis = 5_000;

/// Which table a listener uses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TableId {
    /// The top-level settings', shared by every listener that runs with them.
    Shared,
    /// A listener's own settings'.
    Listener(String),
}

impl TableId {
    /// The table's name in the store: `defense`, or `listener:NAME`.
    fn stored(&self) -> String {
        match self {
            TableId::Shared => "defense".into(),
            TableId::Listener(name) => format!("listener:{name}"),
        }
    }

    fn from_stored(s: &str) -> Option<TableId> {
        match s {
            "defense" => Some(TableId::Shared),
            _ => s
                .strip_prefix("listener:")
                .map(|n| TableId::Listener(n.to_owned())),
        }
    }
}

/// One ban table and the listeners it serves.
#[derive(Debug)]
pub struct Table {
    id: TableId,
    /// Where this table's new bans and liftings go for the fleet (`None`: not shared).
    outbox: Outbox,
    defender: Mutex<Defender>,
    listeners: Mutex<Vec<String>>,
    /// `Defender::untracked` when last looked at, to warn once per sweep that saw more.
    untracked_seen: Mutex<u64>,
    /// Keys banned here because another instance banned them (the API shows `fleet`).
    adopted: Mutex<std::collections::HashSet<String>>,
}

impl Table {
    fn new(id: TableId, outbox: Outbox, settings: Settings) -> Table {
        Table {
            id,
            outbox,
            defender: Mutex::new(Defender::new(settings)),
            listeners: Mutex::default(),
            untracked_seen: Mutex::default(),
            adopted: Mutex::default(),
        }
    }

    fn defender(&self) -> MutexGuard<'_, Defender> {
        self.defender.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn listeners(&self) -> Vec<String> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn adopted(&self) -> MutexGuard<'_, std::collections::HashSet<String>> {
        self.adopted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs a new ban and counts it (`was`: it replaced a ban in force, counted already).
    fn announce(&self, ban: &Ban, was: bool) {
        self.adopted().remove(&ban.key.to_string());
        let until = humantime::format_rfc3339_seconds(wall(ban.until));
        let length = humantime::format_duration(ban.length);
        let listeners = self.listeners().join(",");
        info!(client = %ban.key, %until, score = ban.score(), events = %ban.events(), %length, %listeners, "ban");
        if !was {
            metrics::ban_imposed();
        }
        self.outbox.push(&self.id, ban, false);
    }
}

/// Bans and liftings made here, waiting to be written to the store.
#[derive(Debug, Clone, Default)]
struct Outbox(Arc<Mutex<Option<Vec<Pending>>>>);

/// A ban (or its lifting) made here, for the store.
#[derive(Debug, Clone)]
struct Pending {
    table: String,
    key: String,
    until: Millis,
    reason: String,
    lifted: bool,
    changed: Millis,
}

impl Outbox {
    /// Queues `ban` of table `id` for the store, once sharing is on.
    fn push(&self, id: &TableId, ban: &Ban, lifted: bool) {
        let mut q = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(q) = q.as_mut() {
            q.push(Pending {
                table: id.stored(),
                key: ban.key.to_string(),
                until: state::to_millis(wall(ban.until)),
                reason: ban.events(),
                lifted,
                changed: state::now_millis(),
            });
        }
    }

    fn enable(&self) {
        let mut q = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        q.get_or_insert_with(Vec::new);
    }

    fn take(&self) -> Vec<Pending> {
        let mut q = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        q.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// What could not be written goes back to the front of the queue.
    fn put_back(&self, mut failed: Vec<Pending>) {
        let mut q = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(q) = q.as_mut() {
            failed.append(q);
            *q = failed;
        }
    }
}

/// What to do with a stored ban row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apply {
    /// Ban `key` in table `table` until `until` (Unix ms).
    Ban {
        table: String,
        key: String,
        until: Millis,
        by: String,
    },
    /// Lift the ban of `key` in table `table`.
    Lift { table: String, key: String },
}

/// The stored ban rows to apply here: those another instance wrote (all of them at the
/// first look after a start, this instance's own from before included), each change
/// once (`applied` remembers the last change applied per table and key), bans only
/// while they have not ended at `now`. Pure.
pub fn to_apply(
    rows: &[BanRow],
    me: &str,
    first: bool,
    applied: &mut HashMap<(String, String), Millis>,
    now: Millis,
) -> Vec<Apply> {
    let mut out = Vec::new();
    for r in rows {
        let id = (r.table.clone(), r.key.clone());
        if applied.get(&id).is_some_and(|&c| c >= r.changed) {
            continue;
        }
        applied.insert(id, r.changed);
        if r.by == me && !first {
            continue;
        }
        if r.lifted {
            out.push(Apply::Lift {
                table: r.table.clone(),
                key: r.key.clone(),
            });
        } else if r.until > now {
            out.push(Apply::Ban {
                table: r.table.clone(),
                key: r.key.clone(),
                until: r.until,
                by: r.by.clone(),
            });
        }
    }
    out
}

/// What a listener's sessions and accept loop use: its table, and the balancers whose own
/// address is never judged (their clients are, by the address in their PROXY header).
#[derive(Debug, Clone)]
pub struct Guard {
    table: Arc<Table>,
    balancers: Option<ProxyProtocol>,
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// The client is banned: close the connection, after a `421` unless `silent`.
    Refuse {
        silent: bool,
    },
}

impl Guard {
    /// A trusted balancer's own address (its health checks, a `LOCAL` header): never
    /// scored, never banned.
    fn exempt(&self, ip: IpAddr) -> bool {
        self.balancers.as_ref().is_some_and(|b| b.trusts(ip))
    }

    /// A new connection from `client` (its real address: the PROXY header's behind a
    /// balancer), before anything else is done for it.
    pub fn admit(&self, client: IpAddr) -> Admission {
        if self.exempt(client) {
            return Admission::Admit;
        }
        let (verdict, silent) = {
            let mut d = self.table.defender();
            (d.on_connect(client, Instant::now()), d.settings().silent)
        };
        if verdict.rate_limited {
            metrics::defense_event(DefenseEvent::RateLimited.as_str());
        }
        if let Some(ban) = &verdict.ban {
            self.table.announce(ban, false);
        }
        match verdict.refuse {
            true => Admission::Refuse { silent },
            false => Admission::Admit,
        }
    }

    /// A session of `client` reports `event`; true when the client is banned now (this
    /// event's score banned it, or another session's did meanwhile): the session ends.
    pub fn record(&self, client: IpAddr, event: DefenseEvent) -> bool {
        if self.exempt(client) {
            return false;
        }
        if event != DefenseEvent::LoggedIn {
            metrics::defense_event(event.as_str());
        }
        let now = Instant::now();
        let (ban, banned) = {
            let mut d = self.table.defender();
            let ban = d.record(client, event, now);
            (ban, d.banned(client, now).is_some())
        };
        if let Some(ban) = &ban {
            self.table.announce(ban, false);
        }
        banned && event != DefenseEvent::LoggedIn
    }

    /// Whether `ip` is banned now (asked of each connection to a relay data port).
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        !self.exempt(ip) && self.table.defender().banned(ip, Instant::now()).is_some()
    }
}

/// Every ban table of the proxy, by the listeners they serve. Cloned handles share them.
#[derive(Debug, Clone, Default)]
pub struct Bans {
    tables: Arc<Mutex<BTreeMap<TableId, Arc<Table>>>>,
    /// Shared by every table: what goes to the store.
    outbox: Outbox,
}

/// A ban as `GET /api/v1/bans` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BanView {
    /// The address, or an IPv6 client's network (`2001:db8:1:2::/64`).
    pub address: String,
    /// When it ends (RFC 3339, UTC).
    pub until: String,
    pub seconds_left: u64,
    /// How long it was given, in seconds (repeats double it).
    pub seconds: u64,
    /// `defense` (a score that reached the threshold), `api` (an operator), or `fleet`
    /// (another instance banned it; shared through the state store).
    pub source: &'static str,
    /// The score that made it (0 for an operator's).
    pub score: u32,
    /// How many of each event made the score.
    pub events: BTreeMap<&'static str, u32>,
    /// The listeners the table serves (a client banned there is refused on each).
    pub listeners: Vec<String>,
}

impl BanView {
    fn of(ban: &Ban, now: Instant, listeners: Vec<String>) -> BanView {
        let events = match ban.cause {
            Cause::Score { events, .. } => DefenseEvent::SCORED
                .iter()
                .zip(events)
                .filter(|(_, n)| *n > 0)
                .map(|(e, n)| (e.as_str(), n))
                .collect(),
            Cause::Operator => BTreeMap::new(),
        };
        BanView {
            address: ban.key.to_string(),
            until: humantime::format_rfc3339_millis(wall(ban.until)).to_string(),
            seconds_left: ban.until.saturating_duration_since(now).as_secs(),
            seconds: ban.length.as_secs(),
            source: match ban.cause {
                Cause::Score { .. } => "defense",
                Cause::Operator => "api",
            },
            score: ban.score(),
            events,
            listeners,
        }
    }
}

/// Why an operator's ban was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BanError {
    #[error("no listener runs the defense (defense.enabled is false and no listener turns it on)")]
    NoDefense,
    #[error("the address is in defense.exempt of every listener that runs the defense")]
    Exempt,
    #[error("the ban table is full of bans that have not ended; try again when some have")]
    Full,
}

impl Bans {
    fn registry(&self) -> MutexGuard<'_, BTreeMap<TableId, Arc<Table>>> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tables `config` needs, kept (with their scores and bans, under the new
    /// settings) where they exist already; tables no listener needs any more go. The
    /// guard of each listener of `config`, in its order (`None`: no defense there).
    pub fn apply(&self, config: &Config) -> Vec<Option<Guard>> {
        let mut tables = self.registry();
        let mut wanted: BTreeMap<TableId, (&Settings, Vec<String>)> = BTreeMap::new();
        let ids: Vec<Option<TableId>> = config
            .listeners
            .iter()
            .map(|l| {
                let id = match &l.defense {
                    ListenerDefense::Shared if config.defense.enabled => TableId::Shared,
                    ListenerDefense::Own(_) => TableId::Listener(l.name.clone()),
                    _ => return None,
                };
                let settings = config.defense_of(l)?;
                let entry = wanted.entry(id.clone()).or_insert((settings, Vec::new()));
                entry.1.push(l.name.clone());
                Some(id)
            })
            .collect();
        tables.retain(|id, table| {
            let keep = wanted.contains_key(id);
            if !keep {
                let active = table.defender().active();
                metrics::bans_ended(active);
                if active > 0 {
                    warn!(listeners = %table.listeners().join(","), active, "a reload left no listener on this ban table: its bans are lifted");
                }
            }
            keep
        });
        for (id, (settings, listeners)) in wanted {
            let outbox = self.outbox.clone();
            let table = tables
                .entry(id.clone())
                .or_insert_with(|| Arc::new(Table::new(id, outbox, settings.clone())));
            table.defender().reconfigure(settings.clone());
            *table
                .listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = listeners;
        }
        ids.into_iter()
            .zip(&config.listeners)
            .map(|(id, l)| {
                Some(Guard {
                    table: tables.get(&id?)?.clone(),
                    balancers: l.proxy_protocol.clone(),
                })
            })
            .collect()
    }

    fn all(&self) -> Vec<Arc<Table>> {
        self.registry().values().cloned().collect()
    }

    /// Reports the bans that ended (an INFO line each) and what full tables left out.
    pub fn sweep(&self) {
        let now = Instant::now();
        for table in self.all() {
            let (ended, untracked) = {
                let mut d = table.defender();
                (d.expire(now), d.untracked())
            };
            metrics::bans_ended(ended.len());
            for ban in &ended {
                info!(client = %ban.key, reason = "expired", "unban");
            }
            let mut seen = table
                .untracked_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if untracked > *seen {
                warn!(listeners = %table.listeners().join(","), left_out = untracked - *seen, "ban table full of bans: connections and events of new clients were not scored");
                *seen = untracked;
            }
        }
    }

    /// Sweeps every second until `stop`.
    pub async fn run_sweeps(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.sweep(),
            }
        }
    }

    /// Every ban in force, those ending first first within each table.
    pub fn list(&self) -> Vec<BanView> {
        let now = Instant::now();
        self.all()
            .iter()
            .flat_map(|table| {
                let listeners = table.listeners();
                let bans = table.defender().bans(now);
                let adopted = table.adopted().clone();
                bans.into_iter().map(move |b| {
                    let mut view = BanView::of(&b, now, listeners.clone());
                    if adopted.contains(&view.address) {
                        view.source = "fleet";
                    }
                    view
                })
            })
            .collect()
    }

    /// An operator bans `ip` in every table for `length` (each table's `ban` when
    /// `None`), except where it is exempt.
    pub fn ban(&self, ip: IpAddr, length: Option<Duration>) -> Result<Vec<BanView>, BanError> {
        let tables = self.all();
        if tables.is_empty() {
            return Err(BanError::NoDefense);
        }
        let now = Instant::now();
        let mut made = Vec::new();
        let mut full = false;
        for table in &tables {
            let result = {
                let mut d = table.defender();
                let length = length.unwrap_or(d.settings().ban);
                d.ban(ip, length, now)
            };
            match result {
                Ok((ban, was)) => {
                    table.announce(&ban, was);
                    made.push(BanView::of(&ban, now, table.listeners()));
                }
                Err(Refusal::Full) => full = true,
                Err(Refusal::Exempt) => {}
            }
        }
        match (made.is_empty(), full) {
            (false, _) => Ok(made),
            (true, true) => Err(BanError::Full),
            (true, false) => Err(BanError::Exempt),
        }
    }

    /// An operator lets `ip` in again, in every table: the bans lifted (empty: it had
    /// none). Its scores are forgotten too.
    pub fn unban(&self, ip: IpAddr) -> Vec<BanView> {
        let now = Instant::now();
        let mut lifted = Vec::new();
        for table in self.all() {
            let ban = table.defender().unban(ip);
            if let Some(ban) = ban {
                metrics::bans_ended(1);
                info!(client = %ban.key, reason = "api", "unban");
                table.outbox.push(&table.id, &ban, true);
                lifted.push(BanView::of(&ban, now, table.listeners()));
            }
        }
        lifted
    }

    /// Shares the bans through `store` until `stop`: this instance's new bans and
    /// liftings are written, the fleet's are applied here (see the module's comment).
    pub async fn share(self, store: StateStore, stop: CancellationToken) {
        self.outbox.enable();
        let me = store.instance.clone();
        let mut applied = HashMap::new();
        let mut first = true;
        let mut newest: Millis = 0;
        let mut down = false;
        let mut tick = tokio::time::interval(SHARE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let mut failed = Vec::new();
            let mut pending = self.outbox.take().into_iter();
            for p in pending.by_ref() {
                let row = BanRow {
                    table: p.table.clone(),
                    key: p.key.clone(),
                    until: p.until,
                    reason: p.reason.clone(),
                    lifted: p.lifted,
                    changed: p.changed,
                    by: me.to_string(),
                };
                let put = store.store.put_ban(&row).await;
                store.health.note(&put);
                if let Err(e) = put {
                    if !down {
                        warn!(error = %e, "cannot share bans through the state store; they hold here and are written once it answers");
                    }
                    down = true;
                    failed.push(p);
                    break;
                }
            }
            failed.extend(pending);
            if !failed.is_empty() {
                self.outbox.put_back(failed);
                continue;
            }
            let now = state::now_millis();
            let since = if first {
                0
            } else {
                newest.saturating_sub(SHARE_OVERLAP)
            };
            let rows = store.store.bans_since(since, now).await;
            store.health.note(&rows);
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => {
                    if !down {
                        warn!(error = %e, "cannot read the fleet's bans from the state store");
                    }
                    down = true;
                    continue;
                }
            };
            down = false;
            newest = rows
                .iter()
                .map(|r| r.changed)
                .max()
                .unwrap_or(newest)
                .max(newest);
            for action in to_apply(&rows, &me, first, &mut applied, now) {
                self.adopt(&action, now);
            }
            first = false;
        }
    }

    /// Applies a ban (or lifting) another instance made, or one from before a restart.
    fn adopt(&self, action: &Apply, now_ms: Millis) {
        let (Apply::Ban { table, key, .. } | Apply::Lift { table, key }) = action;
        let Some(id) = TableId::from_stored(table) else {
            return;
        };
        let Some(table) = self.registry().get(&id).cloned() else {
            return;
        };
        // The key's first address: the key again under the table's own prefix.
        let Some(ip) = key.split('/').next().and_then(|a| a.parse::<IpAddr>().ok()) else {
            return;
        };
        let now = Instant::now();
        match action {
            Apply::Ban { until, by, .. } => {
                let left = Duration::from_millis(until.saturating_sub(now_ms).max(0) as u64);
                let made = table.defender().ban(ip, left, now);
                if let Ok((ban, was)) = made {
                    table.adopted().insert(ban.key.to_string());
                    let until = humantime::format_rfc3339_seconds(wall(ban.until));
                    info!(client = %ban.key, %until, from = %by, listeners = %table.listeners().join(","), "ban (from the state store)");
                    if !was {
                        metrics::ban_imposed();
                    }
                }
            }
            Apply::Lift { .. } => {
                if let Some(ban) = table.defender().unban(ip) {
                    table.adopted().remove(&ban.key.to_string());
                    metrics::bans_ended(1);
                    info!(client = %ban.key, reason = "store", "unban");
                }
            }
        }
    }
}

/// The wall-clock time of `at` (for logs and the API).
fn wall(at: Instant) -> SystemTime {
    let now = Instant::now();
    match at.checked_duration_since(now) {
        Some(ahead) => SystemTime::now() + ahead,
        None => SystemTime::now() - now.saturating_duration_since(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, by: &str, until: Millis, lifted: bool, changed: Millis) -> BanRow {
        BanRow {
            table: "defense".into(),
            key: key.into(),
            until,
            reason: "api".into(),
            lifted,
            changed,
            by: by.into(),
        }
    }

    #[test]
    fn the_fleets_bans_are_applied_once_and_this_instances_own_only_after_a_restart() {
        let mut applied = HashMap::new();
        let rows = [
            row("192.0.2.1", "a", 5_000, false, 10),
            row("192.0.2.2", "b", 5_000, false, 11),
            row("192.0.2.3", "b", 900, false, 12),
        ];
        // The first look after a start: this instance's own from before count too; a
        // ban that has ended does not.
        let first = to_apply(&rows, "a", true, &mut applied, 1_000);
        assert_eq!(first.len(), 2, "{first:?}");
        // Looked at again (the overlap reads them again): nothing new.
        assert!(to_apply(&rows, "a", false, &mut applied, 1_000).is_empty());
        // A lifting by another instance, then a new ban of this one's own: only the first.
        let later = [
            row("192.0.2.2", "b", 5_000, true, 20),
            row("192.0.2.4", "a", 5_000, false, 21),
        ];
        assert_eq!(
            to_apply(&later, "a", false, &mut applied, 1_000),
            vec![Apply::Lift {
                table: "defense".into(),
                key: "192.0.2.2".into()
            }]
        );
    }

    #[test]
    fn table_names_in_the_store_read_back() {
        for id in [TableId::Shared, TableId::Listener("ftp-a".into())] {
            assert_eq!(TableId::from_stored(&id.stored()), Some(id));
        }
        assert_eq!(TableId::from_stored("nonsense"), None);
    }

    fn config(yaml: &str) -> Config {
        Config::parse(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    const TWO: &str = "defense:\n  threshold: 2\nlisteners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n    proxy_protocol: {trusted: [192.0.2.100]}\n  - name: b\n    bind: 127.0.0.1:2122\n    upstream: h:21\n";

    #[test]
    fn listeners_with_the_top_level_settings_share_one_table() {
        let bans = Bans::default();
        let guards = bans.apply(&config(TWO));
        let (a, b) = (guards[0].clone().unwrap(), guards[1].clone().unwrap());
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(!a.record(client, DefenseEvent::LoginFailed));
        assert!(
            b.record(client, DefenseEvent::LoginFailed),
            "the second ban"
        );
        assert_eq!(a.admit(client), Admission::Refuse { silent: false });
        assert!(b.is_banned(client));
        assert_eq!(bans.list().len(), 1);
        assert_eq!(bans.list()[0].listeners, ["a", "b"]);
        // A reload keeps the table and its bans.
        let guards = bans.apply(&config(TWO));
        assert!(guards[1].as_ref().unwrap().is_banned(client));
        // The operator lets it in.
        assert_eq!(bans.unban(client).len(), 1);
        assert_eq!(a.admit(client), Admission::Admit);
    }

    #[test]
    fn a_trusted_balancer_is_never_judged_and_off_means_no_table() {
        let bans = Bans::default();
        let guards = bans.apply(&config(TWO));
        let a = guards[0].clone().unwrap();
        let balancer: IpAddr = "192.0.2.100".parse().unwrap();
        for _ in 0..5 {
            assert!(!a.record(balancer, DefenseEvent::LoginFailed));
        }
        assert_eq!(a.admit(balancer), Admission::Admit);
        let off = config(&format!("{TWO}    defense: off\n"));
        let guards = bans.apply(&off);
        assert!(guards[1].is_none(), "`defense: off`: no guard");
        // Operators ban by address: refused where the defense runs.
        let client: IpAddr = "2001:db8:1:2::7".parse().unwrap();
        let made = bans.ban(client, Some(Duration::from_secs(60))).unwrap();
        assert_eq!(made[0].address, "2001:db8:1:2::/64");
        assert_eq!(made[0].source, "api");
        let neighbour: IpAddr = "2001:db8:1:2::8".parse().unwrap();
        assert!(guards[0].as_ref().unwrap().is_banned(neighbour));
        let none = Bans::default();
        none.apply(&config(&TWO.replace("threshold: 2", "enabled: false")));
        assert_eq!(none.ban(client, None).unwrap_err(), BanError::NoDefense);
    }
}
