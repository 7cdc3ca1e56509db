//! Every metric the proxy exports, named in one place, described once at start-up, and
//! recorded through the small helpers below so label sets stay consistent.
//!
//! The Prometheus recorder is installed only by the binary; without it (unit and
//! in-process tests) every call here is a cheap no-op.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{
    Counter, Gauge, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use crate::route::RouteLabel;
pub use fxprelay_core::rejection::Rejection;

pub const SESSIONS_ACTIVE: &str = "fxprelay_sessions_active";
pub const AGENT_UP: &str = "fxprelay_agent_up";
pub const AGENT_REFUSED_TOTAL: &str = "fxprelay_agent_refused_total";
pub const AGENT_LINK_UP: &str = "fxprelay_agent_link_up";
pub const AGENT_STREAMS: &str = "fxprelay_agent_streams";
pub const AGENT_BYTES_TOTAL: &str = "fxprelay_agent_bytes_total";
pub const AGENT_LISTENS: &str = "fxprelay_agent_listens";
pub const AGENT_PORT_THEFT_TOTAL: &str = "fxprelay_agent_port_theft_total";
pub const SESSIONS_TOTAL: &str = "fxprelay_sessions_total";
pub const ROUTE_SESSIONS_TOTAL: &str = "fxprelay_route_sessions_total";
pub const SESSION_SECONDS: &str = "fxprelay_session_duration_seconds";
pub const LOGINS_TOTAL: &str = "fxprelay_logins_total";
pub const COMMANDS_TOTAL: &str = "fxprelay_commands_total";
pub const REPLIES_TOTAL: &str = "fxprelay_replies_total";
pub const REWRITES_TOTAL: &str = "fxprelay_rewrites_total";
pub const UPSTREAM_CONNECT_SECONDS: &str = "fxprelay_upstream_connect_seconds";
pub const UPSTREAM_ERRORS_TOTAL: &str = "fxprelay_upstream_errors_total";
pub const REJECTED_TOTAL: &str = "fxprelay_rejected_total";
pub const DATA_PORTS_IN_USE: &str = "fxprelay_data_ports_in_use";
pub const DATA_PORT_EXHAUSTED_TOTAL: &str = "fxprelay_data_port_exhausted_total";
pub const DATA_CONNECTIONS_TOTAL: &str = "fxprelay_data_connections_total";
pub const DATA_BYTES_TOTAL: &str = "fxprelay_data_bytes_total";
pub const DATA_TRANSFERS_TOTAL: &str = "fxprelay_data_transfers_total";
pub const CONFIG_RELOADS_TOTAL: &str = "fxprelay_config_reloads_total";
pub const TLS_HANDSHAKES_TOTAL: &str = "fxprelay_tls_handshakes_total";
pub const TLS_HANDSHAKE_SECONDS: &str = "fxprelay_tls_handshake_seconds";
pub const TLS_RESUMPTIONS_TOTAL: &str = "fxprelay_tls_resumptions_total";
pub const TLS_SESSIONS_TOTAL: &str = "fxprelay_tls_sessions_total";
pub const CONFIG_LAST_RELOAD_SUCCESS: &str = "fxprelay_config_last_reload_success";
pub const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP: &str =
    "fxprelay_config_last_reload_success_timestamp_seconds";
pub const BUILD_INFO: &str = "fxprelay_build_info";
pub const DATA_PORTS_AVAILABLE: &str = "fxprelay_data_ports_available";
pub const SESSIONS_LIMIT: &str = "fxprelay_sessions_limit";
pub const UPSTREAM_UP: &str = "fxprelay_upstream_up";
pub const UPSTREAM_SESSIONS: &str = "fxprelay_upstream_sessions";
pub const UPSTREAM_CHECK_SECONDS: &str = "fxprelay_upstream_check_seconds";
pub const ADMIN_REJECTED_TOTAL: &str = "fxprelay_admin_rejected_total";
pub const TLS_CERTIFICATE_EXPIRY: &str = "fxprelay_tls_certificate_expiry_timestamp_seconds";
pub const BANS_ACTIVE: &str = "fxprelay_bans_active";
pub const BANS_TOTAL: &str = "fxprelay_bans_total";
pub const DEFENSE_EVENTS_TOTAL: &str = "fxprelay_defense_events_total";
pub const STATE_STORE_UP: &str = "fxprelay_state_store_up";

/// The version and commit this binary was built from (`build.rs` asks git; `unknown`
/// when built outside a checkout, e.g. from a crates.io package).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("FXPRELAY_COMMIT");

/// Connect latency on a LAN is sub-millisecond; across the internet tens to hundreds of
/// milliseconds; the last buckets catch timeouts.
const CONNECT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Sessions last from a single command to hours of transfers.
const SESSION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

/// A TLS handshake takes a round trip or two plus the key exchange: milliseconds on a LAN.
const TLS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the global Prometheus recorder and describes every metric.
///
/// Series are created at 0 only by [`listener_started`] and [`process_started`]: call
/// them before the first scrape, so dashboards and `rate()` alerts see every series
/// from the start instead of "no data" until the first event.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(UPSTREAM_CONNECT_SECONDS.into()),
            CONNECT_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Full(SESSION_SECONDS.into()), SESSION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(FXP_TRANSFER_SECONDS.into()), FXP_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(TLS_HANDSHAKE_SECONDS.into()), TLS_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(UPSTREAM_CHECK_SECONDS.into()),
            CONNECT_BUCKETS,
        )?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_gauge!(
        AGENT_UP,
        "Edge: 1 while at least one agent of this name has its link up, else 0."
    );
    describe_counter!(
        AGENT_REFUSED_TOTAL,
        "Edge: agent links refused, by reason (credential: unknown name or token; protocol)."
    );
    describe_gauge!(
        AGENT_STREAMS,
        "Edge: streams open through an agent now (control and data connections to its servers)."
    );
    describe_counter!(
        AGENT_BYTES_TOTAL,
        Unit::Bytes,
        "Edge: bytes carried through an agent, by direction (to_agent: toward its servers; from_agent)."
    );
    describe_gauge!(
        AGENT_LISTENS,
        "Edge: ports an agent holds open inside now for servers' active-mode data connections."
    );
    describe_counter!(
        AGENT_PORT_THEFT_TOTAL,
        "Edge: connections to an agent's active-mode port from someone other than its server, refused by the agent."
    );
    describe_gauge!(
        AGENT_LINK_UP,
        "Agent: 1 while this agent's link to the edge is up, else 0."
    );
    describe_gauge!(
        SESSIONS_ACTIVE,
        "Client sessions open now, per listener and route (`none`: no route chosen yet)."
    );
    describe_counter!(
        SESSIONS_TOTAL,
        "Client sessions accepted since start, per listener (before any route: fxprelay_route_sessions_total counts them by route)."
    );
    describe_counter!(
        ROUTE_SESSIONS_TOTAL,
        "Sessions that took each route of a listener with routes (`default`: the listener's own upstream), per listener and route."
    );
    describe_counter!(
        LOGINS_TOTAL,
        "Logins, by result (ok: the server's 230; failed: its 530 to USER, PASS or ACCT, or the proxy's own refusal), per listener and route."
    );
    describe_histogram!(
        SESSION_SECONDS,
        Unit::Seconds,
        "How long client sessions lasted, per listener and the route they took."
    );
    describe_counter!(
        COMMANDS_TOTAL,
        "Client commands seen, by verb (unknown verbs count as OTHER)."
    );
    describe_counter!(
        REPLIES_TOTAL,
        "Upstream replies relayed, by class (1xx..5xx), per listener and route."
    );
    describe_counter!(
        REWRITES_TOTAL,
        "Addresses rewritten, by kind (pasv, lpsv, port, eprt, lprt) and reason (always, private, foreign), per listener and route."
    );
    describe_histogram!(
        UPSTREAM_CONNECT_SECONDS,
        Unit::Seconds,
        "Time to resolve and connect to an upstream control port, per listener and route."
    );
    describe_counter!(
        UPSTREAM_ERRORS_TOTAL,
        "Failed upstream connections, by reason, per listener and route."
    );
    describe_gauge!(
        DATA_PORTS_IN_USE,
        "Relay data ports leased now (listening or carrying a transfer)."
    );
    describe_counter!(
        DATA_PORT_EXHAUSTED_TOTAL,
        "Data port leases refused because the data port list was used up."
    );
    describe_counter!(
        DATA_CONNECTIONS_TOTAL,
        "Relay data connections established, by side (client, upstream), per listener and route."
    );
    describe_counter!(
        DATA_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes relayed on data connections, by direction (upload: client to server, download: server to client), per listener and route."
    );
    describe_counter!(
        DATA_TRANSFERS_TOTAL,
        "Relayed transfers, by result (ok, failed, aborted), per listener and route."
    );
    describe_counter!(
        CONFIG_RELOADS_TOTAL,
        "Configuration reloads (SIGHUP), by result (ok, error)."
    );
    describe_counter!(
        REJECTED_TOTAL,
        "Client connections, commands or upstream replies refused by the proxy, by reason, per listener and route (`none`: before a route was chosen)."
    );
    describe_counter!(
        FXP_TRANSFERS_TOTAL,
        "FXP transfers (server to server) finished, by result (ok, failed, cancelled: stopped by DELETE on the API or ABOR during SITE FXP, interrupted: API transfers a shutdown stopped) and method (fxp, reverse_fxp, relay, none; between TLS servers fxp_sscn, fxp_cpsv, fxp_clear and their reverse_ forms)."
    );
    describe_counter!(
        FXP_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes copied by FXP transfers, by method (only relay moves them through the proxy)."
    );
    describe_histogram!(
        FXP_TRANSFER_SECONDS,
        Unit::Seconds,
        "How long FXP transfers took, retries included, by result."
    );
    describe_gauge!(FXP_ACTIVE, "FXP transfers running now.");
    describe_counter!(
        TLS_HANDSHAKES_TOTAL,
        "TLS handshakes, by side (client, upstream), channel (control, data) and result (ok, error)."
    );
    describe_histogram!(
        TLS_HANDSHAKE_SECONDS,
        Unit::Seconds,
        "How long TLS handshakes took, by side and channel."
    );
    describe_counter!(
        TLS_RESUMPTIONS_TOTAL,
        "TLS handshakes that resumed an earlier session, by side (data connections resume their control connection's)."
    );
    describe_gauge!(
        UPSTREAM_UP,
        "Whether a pool backend takes new sessions (1) or is down after failed health checks or connects (0), per listener, route and upstream."
    );
    describe_gauge!(
        UPSTREAM_SESSIONS,
        "Sessions open now on each pool backend, per listener, route and upstream."
    );
    describe_histogram!(
        UPSTREAM_CHECK_SECONDS,
        Unit::Seconds,
        "How long each health check of a pool backend took (connect, banner, optional login and NOOP), per listener, route and upstream."
    );
    describe_counter!(
        TLS_SESSIONS_TOTAL,
        "Control connections that turned to TLS, per listener, route and side: compare with fxprelay_sessions_total to see how much traffic is encrypted."
    );
    describe_gauge!(
        TLS_CERTIFICATE_EXPIRY,
        "When a certificate the proxy shows its clients expires, Unix time in seconds, per listener and route (`default`: the listener's own; a route's own certificate under its name)."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels say which version and commit runs."
    );
    describe_gauge!(
        DATA_PORTS_AVAILABLE,
        "Ports in the data port list (data.ports): the most relay data ports that can be leased at once."
    );
    describe_gauge!(
        SESSIONS_LIMIT,
        "Concurrent sessions a listener accepts (limits.max_sessions), per listener."
    );
    describe_counter!(
        ADMIN_REJECTED_TOTAL,
        "Connections and requests the admin endpoint refused or closed, by reason (idle_evicted: an idle connection closed to make room; max_connections, max_connections_per_ip: a connection refused, every slot busy with a request; cross_origin: an API request a web page sent)."
    );
    describe_gauge!(
        BANS_ACTIVE,
        "Client addresses (IPv6: networks) banned now, over every ban table."
    );
    describe_counter!(
        BANS_TOTAL,
        "Bans imposed since start: by the defense (a score that reached the threshold) or by an operator (POST /api/v1/bans)."
    );
    describe_counter!(
        DEFENSE_EVENTS_TOTAL,
        "What the edge defense scored, by event (login_failed, bait_user, bad_command, early_close, rate_limited)."
    );
    describe_gauge!(
        STATE_STORE_UP,
        "1 while the state store (state.url) answers, 0 while it does not (FTP goes on; new API transfers get 503)."
    );
    describe_gauge!(
        CONFIG_LAST_RELOAD_SUCCESS,
        "1 when the last configuration load (start or SIGHUP) succeeded, 0 when it failed."
    );
    describe_gauge!(
        CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP,
        Unit::Seconds,
        "When the configuration last loaded successfully (start or SIGHUP), Unix time."
    );
    process_collector().describe();
}

/// Which end of the proxy a TLS handshake was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSide {
    /// Toward the FTP client (the proxy is the TLS server).
    Client,
    /// Toward the FTP server (the proxy is the TLS client).
    Upstream,
}

impl TlsSide {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsSide::Client => "client",
            TlsSide::Upstream => "upstream",
        }
    }
}

/// One TLS handshake: `channel` is `control` or `data`; `resumed` when it resumed a
/// session.
pub fn tls_handshake(
    side: TlsSide,
    channel: &'static str,
    ok: bool,
    resumed: bool,
    took: Duration,
) {
    let side = side.as_str();
    let result = if ok { "ok" } else { "error" };
    counter!(TLS_HANDSHAKES_TOTAL, "side" => side, "channel" => channel, "result" => result)
        .increment(1);
    histogram!(TLS_HANDSHAKE_SECONDS, "side" => side, "channel" => channel)
        .record(took.as_secs_f64());
    if resumed {
        counter!(TLS_RESUMPTIONS_TOTAL, "side" => side).increment(1);
    }
}

/// Whose a session's series are: its listener, and the route it took (see
/// [`RouteLabel`]). Every series of a session or its upstream carries both labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    listener: Arc<str>,
    route: RouteLabel,
}

impl Scope {
    pub fn new(listener: &str, route: RouteLabel) -> Scope {
        Scope {
            listener: listener.into(),
            route,
        }
    }

    /// The same listener, another route.
    pub fn on(&self, route: RouteLabel) -> Scope {
        Scope {
            listener: self.listener.clone(),
            route,
        }
    }

    pub fn listener(&self) -> &str {
        &self.listener
    }

    pub fn route(&self) -> &RouteLabel {
        &self.route
    }

    fn l(&self) -> Arc<str> {
        self.listener.clone()
    }

    fn r(&self) -> Arc<str> {
        self.route.shared()
    }
}

/// A certificate of `scope` (the listener's own under `default`, a route's own under its
/// name) expires at `not_after` (Unix seconds); set at start and on every reload.
pub fn tls_certificate_expiry(scope: &Scope, not_after: i64) {
    gauge!(TLS_CERTIFICATE_EXPIRY, "listener" => scope.l(), "route" => scope.r())
        .set(not_after as f64);
}

/// A control connection of `scope` turned to TLS on `side`.
pub fn tls_session(scope: &Scope, side: TlsSide) {
    counter!(TLS_SESSIONS_TOTAL, "listener" => scope.l(), "route" => scope.r(), "side" => side.as_str())
        .increment(1);
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Refreshes the `process_*` series (CPU seconds, resident memory, open fds, start time:
/// the names Prometheus client libraries use). Called on every scrape.
pub fn collect_process() {
    process_collector().collect();
}

/// The process-wide series at their start values: build info, data port capacity, the
/// configuration's load state, FXP counters for every result and method.
pub fn process_started(data_ports: usize) {
    gauge!(BUILD_INFO, "version" => VERSION, "commit" => COMMIT).set(1.0);
    data_ports_available(data_ports);
    gauge!(DATA_PORTS_IN_USE).increment(0.0);
    counter!(DATA_PORT_EXHAUSTED_TOTAL).increment(0);
    for result in ["ok", "error"] {
        counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(0);
    }
    config_loaded(true);
    gauge!(FXP_ACTIVE).increment(0.0);
    for method in FXP_METHODS {
        counter!(FXP_BYTES_TOTAL, "method" => *method).increment(0);
        for result in FXP_RESULTS {
            // `none` means no method ran, which only a failure or a cancel can say.
            if *method != "none" || *result != "ok" {
                counter!(FXP_TRANSFERS_TOTAL, "result" => *result, "method" => *method)
                    .increment(0);
            }
        }
    }
    for result in FXP_RESULTS {
        let _ = histogram!(FXP_TRANSFER_SECONDS, "result" => *result);
    }
    for side in [TlsSide::Client, TlsSide::Upstream] {
        let side = side.as_str();
        for channel in ["control", "data"] {
            for result in ["ok", "error"] {
                counter!(TLS_HANDSHAKES_TOTAL, "side" => side, "channel" => channel, "result" => result)
                    .increment(0);
            }
            let _ = histogram!(TLS_HANDSHAKE_SECONDS, "side" => side, "channel" => channel);
        }
        counter!(TLS_RESUMPTIONS_TOTAL, "side" => side).increment(0);
    }
    for r in AdminRejection::ALL {
        counter!(ADMIN_REJECTED_TOTAL, "reason" => r.as_str()).increment(0);
    }
    gauge!(BANS_ACTIVE).increment(0.0);
    counter!(BANS_TOTAL).increment(0);
    // The store opened before anything was served.
    state_store_up(true);
    for event in DEFENSE_EVENTS {
        counter!(DEFENSE_EVENTS_TOTAL, "event" => *event).increment(0);
    }
    collect_process();
}

/// Why the admin endpoint refused or closed something: the `reason` label of
/// `fxprelay_admin_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRejection {
    /// An idle connection (no request being served) closed to make room for a new one.
    IdleEvicted,
    /// A new connection refused: `admin.max_connections` are open, each serving a request.
    MaxConnections,
    /// A new connection refused: its address holds `admin.max_connections_per_ip`, each
    /// serving a request.
    MaxConnectionsPerIp,
    /// An API request a web page sent (another site's `Origin`, `Sec-Fetch-Site`).
    CrossOrigin,
}

impl AdminRejection {
    pub const ALL: &[AdminRejection] = &[
        AdminRejection::IdleEvicted,
        AdminRejection::MaxConnections,
        AdminRejection::MaxConnectionsPerIp,
        AdminRejection::CrossOrigin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AdminRejection::IdleEvicted => "idle_evicted",
            AdminRejection::MaxConnections => "max_connections",
            AdminRejection::MaxConnectionsPerIp => "max_connections_per_ip",
            AdminRejection::CrossOrigin => "cross_origin",
        }
    }
}

pub fn admin_rejected(reason: AdminRejection) {
    counter!(ADMIN_REJECTED_TOTAL, "reason" => reason.as_str()).increment(1);
}

/// The series of one listener that carry no route, at 0; [`routes_started`] makes the
/// rest.
pub fn listener_started(listener: &str, max_sessions: usize) {
    let l = || listener.to_owned();
    gauge!(SESSIONS_LIMIT, "listener" => l()).set(max_sessions as f64);
    counter!(SESSIONS_TOTAL, "listener" => l()).increment(0);
    for verb in crate::proto::command::KNOWN_VERBS.iter().chain(&["OTHER"]) {
        counter!(COMMANDS_TOTAL, "listener" => l(), "verb" => *verb).increment(0);
    }
}

/// Every series of one listener's sessions, at 0, for each route label they can take
/// (`routes`: [`RouteLabel::Default`] alone for a listener without routes): at start,
/// and after a reload for routes the file added. Series that exist keep their values
/// (`increment(0)` only creates what is missing).
pub fn routes_started(listener: &str, routes: &[RouteLabel]) {
    // Only a listener with routes has sessions that take one (`none` is none taken).
    let routed = routes.contains(&RouteLabel::NotYet);
    for route in routes {
        let scope = Scope::new(listener, route.clone());
        route_started(&scope);
        if routed && *route != RouteLabel::NotYet {
            counter!(ROUTE_SESSIONS_TOTAL, "listener" => scope.l(), "route" => scope.r())
                .increment(0);
        }
    }
}

/// The series of one listener's route, at 0.
fn route_started(s: &Scope) {
    for side in [TlsSide::Client, TlsSide::Upstream] {
        counter!(TLS_SESSIONS_TOTAL, "listener" => s.l(), "route" => s.r(), "side" => side.as_str())
            .increment(0);
    }
    gauge!(SESSIONS_ACTIVE, "listener" => s.l(), "route" => s.r()).increment(0.0);
    let _ = histogram!(SESSION_SECONDS, "listener" => s.l(), "route" => s.r());
    for result in ["ok", "failed"] {
        counter!(LOGINS_TOTAL, "listener" => s.l(), "route" => s.r(), "result" => result)
            .increment(0);
    }
    let _ = histogram!(UPSTREAM_CONNECT_SECONDS, "listener" => s.l(), "route" => s.r());
    for class in REPLY_CLASSES {
        counter!(REPLIES_TOTAL, "listener" => s.l(), "route" => s.r(), "class" => *class)
            .increment(0);
    }
    for (kind, reason) in REWRITES {
        counter!(REWRITES_TOTAL, "listener" => s.l(), "route" => s.r(), "kind" => *kind, "reason" => *reason)
            .increment(0);
    }
    for reason in UPSTREAM_ERRORS {
        counter!(UPSTREAM_ERRORS_TOTAL, "listener" => s.l(), "route" => s.r(), "reason" => *reason)
            .increment(0);
    }
    for r in Rejection::ALL {
        counter!(REJECTED_TOTAL, "listener" => s.l(), "route" => s.r(), "reason" => r.as_str())
            .increment(0);
    }
    for side in ["client", "upstream"] {
        counter!(DATA_CONNECTIONS_TOTAL, "listener" => s.l(), "route" => s.r(), "side" => side)
            .increment(0);
    }
    for direction in ["upload", "download"] {
        counter!(DATA_BYTES_TOTAL, "listener" => s.l(), "route" => s.r(), "direction" => direction)
            .increment(0);
    }
    for result in TRANSFER_RESULTS {
        counter!(DATA_TRANSFERS_TOTAL, "listener" => s.l(), "route" => s.r(), "result" => *result)
            .increment(0);
    }
}

/// The label values each labelled series can take (beyond `listener`).
const REPLY_CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
/// `kind` and `reason` of `fxprelay_rewrites_total`: every kind by policy, and relay
/// mode's pinning of a foreign passive address in forward and transparent mode.
const REWRITES: &[(&str, &str)] = &[
    ("pasv", "always"),
    ("pasv", "private"),
    ("pasv", "foreign"),
    ("lpsv", "always"),
    ("lpsv", "private"),
    ("port", "always"),
    ("port", "private"),
    ("eprt", "always"),
    ("eprt", "private"),
    ("lprt", "always"),
    ("lprt", "private"),
];
/// The `reason` of `fxprelay_upstream_errors_total` (`upstream::ConnectError::reason`).
const UPSTREAM_ERRORS: &[&str] = &["resolve", "timeout", "refused", "io", "denied"];
const TRANSFER_RESULTS: &[&str] = &["ok", "failed", "aborted"];
const FXP_RESULTS: &[&str] = &["ok", "failed", "cancelled", "interrupted"];
const FXP_METHODS: &[&str] = &["fxp", "reverse_fxp", "relay", "none"];
/// The `event` of `fxprelay_defense_events_total` (`defense::DefenseEvent::as_str` of the
/// scored events).
const DEFENSE_EVENTS: &[&str] = &[
    "login_failed",
    "bait_user",
    "bad_command",
    "early_close",
    "rate_limited",
];

/// The edge defense heard of `event` (a `DEFENSE_EVENTS` label) from a client it judges.
pub fn defense_event(event: &'static str) {
    counter!(DEFENSE_EVENTS_TOTAL, "event" => event).increment(1);
}

/// A ban was imposed (a new one: a ban replacing one in force is not counted again).
pub fn ban_imposed() {
    counter!(BANS_TOTAL).increment(1);
    gauge!(BANS_ACTIVE).increment(1.0);
}

/// Whether the state store answers.
pub fn state_store_up(up: bool) {
    gauge!(STATE_STORE_UP).set(if up { 1.0 } else { 0.0 });
}

/// `n` bans ended, were lifted, or went with their table.
pub fn bans_ended(n: usize) {
    gauge!(BANS_ACTIVE).decrement(n as f64);
}

pub fn data_ports_available(ports: usize) {
    gauge!(DATA_PORTS_AVAILABLE).set(ports as f64);
}

/// A configuration load (at start or by SIGHUP) succeeded or failed.
pub fn config_loaded(ok: bool) {
    gauge!(CONFIG_LAST_RELOAD_SUCCESS).set(if ok { 1.0 } else { 0.0 });
    if ok {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        gauge!(CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP).set(now.as_secs_f64());
    }
}

/// One session's own series: counted in its listener's total and open under its route
/// label from [`SessionMeter::start`], moved to the route it takes, closed with its
/// duration when dropped (whichever way the session ends).
#[derive(Debug)]
pub struct SessionMeter {
    scope: Scope,
    started: Instant,
}

impl SessionMeter {
    pub fn start(scope: Scope) -> SessionMeter {
        counter!(SESSIONS_TOTAL, "listener" => scope.l()).increment(1);
        gauge!(SESSIONS_ACTIVE, "listener" => scope.l(), "route" => scope.r()).increment(1.0);
        SessionMeter {
            scope,
            started: Instant::now(),
        }
    }

    /// The session's listener and route now.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The session took `route`: it is open there now, and counted among the route's
    /// sessions (`fxprelay_route_sessions_total`).
    pub fn routed(&mut self, route: RouteLabel) {
        let to = self.scope.on(route);
        gauge!(SESSIONS_ACTIVE, "listener" => self.scope.l(), "route" => self.scope.r())
            .decrement(1.0);
        gauge!(SESSIONS_ACTIVE, "listener" => to.l(), "route" => to.r()).increment(1.0);
        counter!(ROUTE_SESSIONS_TOTAL, "listener" => to.l(), "route" => to.r()).increment(1);
        self.scope = to;
    }
}

impl Drop for SessionMeter {
    fn drop(&mut self) {
        let s = &self.scope;
        gauge!(SESSIONS_ACTIVE, "listener" => s.l(), "route" => s.r()).decrement(1.0);
        histogram!(SESSION_SECONDS, "listener" => s.l(), "route" => s.r())
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// Counts a client command. Verbs outside the known FTP set count as `OTHER`: a client
/// can send any eight letters, and each distinct label would be a new series forever.
pub fn command(listener: &str, verb: &crate::proto::Verb) {
    let label = if crate::proto::is_known_verb(verb) {
        verb.as_str()
    } else {
        "OTHER"
    };
    counter!(COMMANDS_TOTAL, "listener" => listener.to_owned(), "verb" => label.to_owned())
        .increment(1);
}

pub fn reply(s: &Scope, code: u16) {
    let class = match code / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    };
    counter!(REPLIES_TOTAL, "listener" => s.l(), "route" => s.r(), "class" => class).increment(1);
}

pub fn login(s: &Scope, ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    counter!(LOGINS_TOTAL, "listener" => s.l(), "route" => s.r(), "result" => result).increment(1);
}

pub fn rewrite(s: &Scope, kind: &'static str, reason: &'static str) {
    counter!(REWRITES_TOTAL, "listener" => s.l(), "route" => s.r(), "kind" => kind, "reason" => reason)
        .increment(1);
}

pub fn upstream_connected(s: &Scope, took: Duration) {
    histogram!(UPSTREAM_CONNECT_SECONDS, "listener" => s.l(), "route" => s.r())
        .record(took.as_secs_f64());
}

pub fn upstream_error(s: &Scope, reason: &'static str) {
    counter!(UPSTREAM_ERRORS_TOTAL, "listener" => s.l(), "route" => s.r(), "reason" => reason)
        .increment(1);
}

pub fn agent_up(agent: &str, up: bool) {
    gauge!(AGENT_UP, "agent" => agent.to_owned()).set(if up { 1.0 } else { 0.0 });
    // The agent's other series from its first link on, at 0.
    gauge!(AGENT_LISTENS, "agent" => agent.to_owned()).increment(0.0);
    counter!(AGENT_PORT_THEFT_TOTAL, "agent" => agent.to_owned()).increment(0);
}

pub fn agent_refused(reason: fxprelay_core::agent::Refused) {
    let reason = match reason {
        fxprelay_core::agent::Refused::Credential => "credential",
        fxprelay_core::agent::Refused::Protocol => "protocol",
    };
    counter!(AGENT_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// One stream through an agent: counted open until dropped, and by the bytes it carries
/// (handles taken once, so a read costs an atomic add).
pub struct AgentMeter {
    open: Gauge,
    to_agent: Counter,
    from_agent: Counter,
}

impl AgentMeter {
    pub fn open(agent: &str) -> AgentMeter {
        let open = gauge!(AGENT_STREAMS, "agent" => agent.to_owned());
        open.increment(1.0);
        AgentMeter {
            open,
            to_agent: counter!(AGENT_BYTES_TOTAL, "agent" => agent.to_owned(), "direction" => "to_agent"),
            from_agent: counter!(AGENT_BYTES_TOTAL, "agent" => agent.to_owned(), "direction" => "from_agent"),
        }
    }

    pub fn sent(&self, n: usize) {
        self.to_agent.increment(n as u64);
    }

    pub fn received(&self, n: usize) {
        self.from_agent.increment(n as u64);
    }
}

impl Drop for AgentMeter {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

/// An agent's listening port for one active-mode transfer, counted in
/// `fxprelay_agent_listens` until dropped.
pub struct AgentListen(Gauge);

impl AgentListen {
    pub fn open(agent: &str) -> AgentListen {
        let g = gauge!(AGENT_LISTENS, "agent" => agent.to_owned());
        g.increment(1.0);
        AgentListen(g)
    }
}

impl Drop for AgentListen {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

pub fn agent_port_theft(agent: &str) {
    counter!(AGENT_PORT_THEFT_TOTAL, "agent" => agent.to_owned()).increment(1);
}

pub fn agent_link(up: bool) {
    gauge!(AGENT_LINK_UP).set(if up { 1.0 } else { 0.0 });
}

pub fn config_reload(result: &'static str) {
    counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(1);
}

pub fn rejected(s: &Scope, reason: Rejection) {
    counter!(REJECTED_TOTAL, "listener" => s.l(), "route" => s.r(), "reason" => reason.as_str())
        .increment(1);
}

pub fn data_connection(s: &Scope, side: &'static str) {
    counter!(DATA_CONNECTIONS_TOTAL, "listener" => s.l(), "route" => s.r(), "side" => side)
        .increment(1);
}

pub fn data_bytes(s: &Scope, upload: u64, download: u64) {
    counter!(DATA_BYTES_TOTAL, "listener" => s.l(), "route" => s.r(), "direction" => "upload")
        .increment(upload);
    counter!(DATA_BYTES_TOTAL, "listener" => s.l(), "route" => s.r(), "direction" => "download")
        .increment(download);
}

pub fn data_transfer(s: &Scope, result: &'static str) {
    counter!(DATA_TRANSFERS_TOTAL, "listener" => s.l(), "route" => s.r(), "result" => result)
        .increment(1);
}

pub const FXP_TRANSFERS_TOTAL: &str = "fxprelay_fxp_transfers_total";
pub const FXP_BYTES_TOTAL: &str = "fxprelay_fxp_bytes_total";
pub const FXP_TRANSFER_SECONDS: &str = "fxprelay_fxp_transfer_seconds";
pub const FXP_ACTIVE: &str = "fxprelay_fxp_active";

/// A server-to-server copy takes from milliseconds (a small file on a LAN) to hours.
const FXP_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

/// One FXP transfer started (`+1`) or ended (`-1`).
pub fn fxp_active(delta: f64) {
    gauge!(FXP_ACTIVE).increment(delta);
}

/// One FXP transfer ended: `result` `ok`, `failed`, `cancelled` or `interrupted`, `method` one of
/// `fxp::Method::as_str` or `none` (failed before any method ran).
pub fn fxp_transfer(result: &'static str, method: &'static str, bytes: u64, took: Duration) {
    counter!(FXP_TRANSFERS_TOTAL, "result" => result, "method" => method).increment(1);
    counter!(FXP_BYTES_TOTAL, "method" => method).increment(bytes);
    histogram!(FXP_TRANSFER_SECONDS, "result" => result).record(took.as_secs_f64());
}

/// A pool backend's series at their starting values (up, no sessions): created before
/// the first scrape, like [`listener_started`]'s. `s` is the listener and route whose
/// pool it is (`default`: the listener's own).
pub fn upstream_started(s: &Scope, upstream: &str) {
    let u = || upstream.to_owned();
    gauge!(UPSTREAM_UP, "listener" => s.l(), "route" => s.r(), "upstream" => u()).set(1.0);
    gauge!(UPSTREAM_SESSIONS, "listener" => s.l(), "route" => s.r(), "upstream" => u())
        .increment(0.0);
    let _ = histogram!(UPSTREAM_CHECK_SECONDS, "listener" => s.l(), "route" => s.r(), "upstream" => u());
}

pub fn upstream_up(s: &Scope, upstream: &str, up: bool) {
    gauge!(UPSTREAM_UP, "listener" => s.l(), "route" => s.r(), "upstream" => upstream.to_owned())
        .set(if up { 1.0 } else { 0.0 });
}

pub fn upstream_sessions(s: &Scope, upstream: &str, delta: f64) {
    gauge!(UPSTREAM_SESSIONS, "listener" => s.l(), "route" => s.r(), "upstream" => upstream.to_owned())
        .increment(delta);
}

pub fn upstream_check(s: &Scope, upstream: &str, took: Duration) {
    histogram!(UPSTREAM_CHECK_SECONDS, "listener" => s.l(), "route" => s.r(), "upstream" => upstream.to_owned())
        .record(took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_admin_rejection_is_listed() {
        // No wildcard arm: a new variant does not compile until it has its place.
        let position = |r: AdminRejection| match r {
            AdminRejection::IdleEvicted => 0,
            AdminRejection::MaxConnections => 1,
            AdminRejection::MaxConnectionsPerIp => 2,
            AdminRejection::CrossOrigin => 3,
        };
        assert_eq!(AdminRejection::ALL.len(), 4);
        for (i, r) in AdminRejection::ALL.iter().enumerate() {
            assert_eq!(
                position(*r),
                i,
                "{r:?} is out of place in AdminRejection::ALL"
            );
        }
    }
}
