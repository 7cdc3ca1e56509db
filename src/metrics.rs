//! Every metric the proxy exports, named in one place, described once at start-up, and
//! recorded through the small helpers below so label sets stay consistent.
//!
//! The Prometheus recorder is installed only by the binary; without it (unit and
//! in-process tests) every call here is a cheap no-op.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const SESSIONS_ACTIVE: &str = "fxprelay_sessions_active";
pub const SESSIONS_TOTAL: &str = "fxprelay_sessions_total";
pub const SESSION_SECONDS: &str = "fxprelay_session_duration_seconds";
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

/// Connect latency on a LAN is sub-millisecond; across the internet tens to hundreds of
/// milliseconds; the last buckets catch timeouts.
const CONNECT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Sessions last from a single command to hours of transfers.
const SESSION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

/// Installs the global Prometheus recorder and describes every metric.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(UPSTREAM_CONNECT_SECONDS.into()),
            CONNECT_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Full(SESSION_SECONDS.into()), SESSION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(FXP_TRANSFER_SECONDS.into()), FXP_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_gauge!(SESSIONS_ACTIVE, "Client sessions open now, per listener.");
    describe_counter!(
        SESSIONS_TOTAL,
        "Client sessions accepted since start, per listener."
    );
    describe_histogram!(
        SESSION_SECONDS,
        Unit::Seconds,
        "How long client sessions lasted."
    );
    describe_counter!(
        COMMANDS_TOTAL,
        "Client commands seen, by verb (unknown verbs count as OTHER)."
    );
    describe_counter!(
        REPLIES_TOTAL,
        "Upstream replies relayed, by class (1xx..5xx)."
    );
    describe_counter!(
        REWRITES_TOTAL,
        "Addresses rewritten, by kind (pasv, lpsv, port, eprt, lprt) and reason (always, private)."
    );
    describe_histogram!(
        UPSTREAM_CONNECT_SECONDS,
        Unit::Seconds,
        "Time to resolve and connect to an upstream control port."
    );
    describe_counter!(
        UPSTREAM_ERRORS_TOTAL,
        "Failed upstream connections, by reason."
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
        "Relay data connections established, by side (client, upstream)."
    );
    describe_counter!(
        DATA_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes relayed on data connections, by direction (upload: client to server, download: server to client)."
    );
    describe_counter!(
        DATA_TRANSFERS_TOTAL,
        "Relayed transfers, by result (ok, failed, aborted)."
    );
    describe_counter!(
        CONFIG_RELOADS_TOTAL,
        "Configuration reloads (SIGHUP), by result (ok, error)."
    );
    describe_counter!(
        REJECTED_TOTAL,
        "Client connections, commands or upstream replies refused by the proxy, by reason."
    );
    describe_counter!(
        FXP_TRANSFERS_TOTAL,
        "FXP transfers (server to server) finished, by result (ok, failed) and method (fxp, reverse_fxp, relay, none)."
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
}

pub fn session_started(listener: &str) {
    counter!(SESSIONS_TOTAL, "listener" => listener.to_owned()).increment(1);
    gauge!(SESSIONS_ACTIVE, "listener" => listener.to_owned()).increment(1.0);
}

pub fn session_ended(listener: &str, lasted: Duration) {
    gauge!(SESSIONS_ACTIVE, "listener" => listener.to_owned()).decrement(1.0);
    histogram!(SESSION_SECONDS, "listener" => listener.to_owned()).record(lasted.as_secs_f64());
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

pub fn reply(listener: &str, code: u16) {
    let class = match code / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    };
    counter!(REPLIES_TOTAL, "listener" => listener.to_owned(), "class" => class).increment(1);
}

pub fn rewrite(listener: &str, kind: &'static str, reason: &'static str) {
    counter!(REWRITES_TOTAL, "listener" => listener.to_owned(), "kind" => kind, "reason" => reason)
        .increment(1);
}

pub fn upstream_connected(listener: &str, took: Duration) {
    histogram!(UPSTREAM_CONNECT_SECONDS, "listener" => listener.to_owned())
        .record(took.as_secs_f64());
}

pub fn upstream_error(listener: &str, reason: &'static str) {
    counter!(UPSTREAM_ERRORS_TOTAL, "listener" => listener.to_owned(), "reason" => reason)
        .increment(1);
}

pub fn config_reload(result: &'static str) {
    counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(1);
}

/// Why the proxy refused something: the `reason` label of `fxprelay_rejected_total`.
/// The label values are part of the interface (dashboards and alerts select on them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The listener's session limit.
    MaxSessions,
    /// The per-address session limit.
    MaxSessionsPerIp,
    /// `limits.max_pre_login_sessions`: too many sessions waiting to log in.
    MaxPreLoginSessions,
    /// `limits.max_pre_login_sessions_per_ip`.
    MaxPreLoginSessionsPerIp,
    /// `limits.max_data_ports_per_ip`: one address holds too many data ports.
    MaxDataPortsPerIp,
    /// A trusted load balancer's connection without a valid PROXY header.
    ProxyHeader,
    /// A PROXY header from a peer that is not a trusted balancer.
    ProxyUntrusted,
    /// `AUTH` (TLS is not relayed).
    AuthTls,
    /// An unparseable command line.
    BadCommand,
    /// A command line over `limits.max_line_length`.
    LineTooLong,
    /// No login within `limits.login_timeout`.
    LoginTimeout,
    /// No command within `limits.idle_timeout`.
    IdleTimeout,
    /// A forward target outside the allow list (or the proxy itself).
    ForwardDenied,
    /// A transparent destination outside the allow list (or the proxy itself).
    TransparentDenied,
    /// A malformed `PORT`/`EPRT`/`LPRT` address.
    BadPort,
    /// A data address naming a third host or a privileged port (RFC 2577).
    Bounce,
    /// A data connection from someone other than the expected peer.
    PortTheft,
    /// A passive data port leased but never used within `limits.data_accept_timeout`.
    PassiveUnused,
    /// `nat.client_address` did not resolve.
    ClientAddressUnresolved,
    /// A server's `227`/`228` the proxy could not read.
    BadPassiveReply,
    /// A server line that is not an FTP reply.
    BadReply,
    /// A server reply over `limits.max_reply_bytes`.
    ReplyTooLarge,
    /// A server that closed in the middle of a multi-line reply.
    TruncatedReply,
    /// A server that did not answer the proxy's own command in time.
    ReplyTimeout,
    /// A server reply that answers no command (or cannot answer the one in flight, such
    /// as a `227` to `SYST`): dropped, and after a few the server is disconnected.
    UnsolicitedReply,
    /// A connection someone asked for that would reach this proxy itself: one of its
    /// listeners, its admin endpoint or its data ports (a forward or transparent target,
    /// a server's passive address, an FXP URL).
    SelfTarget,
}

impl Rejection {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        use Rejection as R;
        match self {
            R::MaxSessions => "max_sessions",
            R::MaxSessionsPerIp => "max_sessions_per_ip",
            R::MaxPreLoginSessions => "max_pre_login_sessions",
            R::MaxPreLoginSessionsPerIp => "max_pre_login_sessions_per_ip",
            R::MaxDataPortsPerIp => "max_data_ports_per_ip",
            R::ProxyHeader => "proxy_header",
            R::ProxyUntrusted => "proxy_untrusted",
            R::AuthTls => "auth_tls",
            R::BadCommand => "bad_command",
            R::LineTooLong => "line_too_long",
            R::LoginTimeout => "login_timeout",
            R::IdleTimeout => "idle_timeout",
            R::ForwardDenied => "forward_denied",
            R::TransparentDenied => "transparent_denied",
            R::BadPort => "bad_port",
            R::Bounce => "bounce",
            R::PortTheft => "port_theft",
            R::PassiveUnused => "passive_unused",
            R::ClientAddressUnresolved => "client_address_unresolved",
            R::BadPassiveReply => "bad_passive_reply",
            R::BadReply => "bad_reply",
            R::ReplyTooLarge => "reply_too_large",
            R::TruncatedReply => "truncated_reply",
            R::ReplyTimeout => "reply_timeout",
            R::UnsolicitedReply => "unsolicited_reply",
            R::SelfTarget => "self_target",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub fn rejected(listener: &str, reason: Rejection) {
    counter!(REJECTED_TOTAL, "listener" => listener.to_owned(), "reason" => reason.as_str())
        .increment(1);
}

pub fn data_connection(listener: &str, side: &'static str) {
    counter!(DATA_CONNECTIONS_TOTAL, "listener" => listener.to_owned(), "side" => side)
        .increment(1);
}

pub fn data_bytes(listener: &str, upload: u64, download: u64) {
    let l = listener.to_owned();
    counter!(DATA_BYTES_TOTAL, "listener" => l.clone(), "direction" => "upload").increment(upload);
    counter!(DATA_BYTES_TOTAL, "listener" => l, "direction" => "download").increment(download);
}

pub fn data_transfer(listener: &str, result: &'static str) {
    counter!(DATA_TRANSFERS_TOTAL, "listener" => listener.to_owned(), "result" => result)
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

/// One FXP transfer ended: `result` `ok` or `failed`, `method` `fxp`, `reverse_fxp`,
/// `relay` or `none` (failed before any method ran).
pub fn fxp_transfer(result: &'static str, method: &'static str, bytes: u64, took: Duration) {
    counter!(FXP_TRANSFERS_TOTAL, "result" => result, "method" => method).increment(1);
    counter!(FXP_BYTES_TOTAL, "method" => method).increment(bytes);
    histogram!(FXP_TRANSFER_SECONDS, "result" => result).record(took.as_secs_f64());
}
