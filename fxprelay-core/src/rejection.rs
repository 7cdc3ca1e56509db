//! Why the proxy refused something: one vocabulary for the session machine, the accept
//! loop and the data ports, which the binary counts as the `reason` label of
//! `fxprelay_rejected_total`.

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
    /// Commands a client sent in clear after `AUTH TLS`, before the handshake: discarded
    /// (the STARTTLS command-injection class).
    TlsPipelined,
    /// `USER`/`PASS` in clear on a listener that requires TLS.
    TlsRequired,
    /// A client whose TLS handshake failed.
    ClientTls,
    /// A server whose TLS handshake failed (an untrusted certificate, most often) or
    /// that refused the TLS the listener requires.
    UpstreamTls,
    /// A server reply that answers no command (or cannot answer the one in flight, such
    /// as a `227` to `SYST`): dropped, and after a few the server is disconnected.
    UnsolicitedReply,
    /// A connection someone asked for that would reach this proxy itself: one of its
    /// listeners, its admin endpoint or its data ports (a forward or transparent target,
    /// a server's passive address, an FXP URL).
    SelfTarget,
    /// A connection (control, or to a relay data port) from a client the edge defense
    /// has banned.
    Banned,
    /// A `HOST` naming no route of a routed listener (answered `504`).
    UnknownHost,
    /// A login no route of a routed listener takes, without a default route (`530`
    /// after `PASS`, no upstream connection).
    NoRoute,
}

impl Rejection {
    /// Every reason, so each series exists at 0 from the start. A new variant goes here
    /// too (the test `every_rejection_is_listed` checks).
    pub const ALL: &[Rejection] = &[
        Rejection::MaxSessions,
        Rejection::MaxSessionsPerIp,
        Rejection::ProxyHeader,
        Rejection::ProxyUntrusted,
        Rejection::AuthTls,
        Rejection::BadCommand,
        Rejection::LineTooLong,
        Rejection::LoginTimeout,
        Rejection::IdleTimeout,
        Rejection::ForwardDenied,
        Rejection::TransparentDenied,
        Rejection::BadPort,
        Rejection::Bounce,
        Rejection::PortTheft,
        Rejection::PassiveUnused,
        Rejection::ClientAddressUnresolved,
        Rejection::BadPassiveReply,
        Rejection::BadReply,
        Rejection::ReplyTooLarge,
        Rejection::TruncatedReply,
        Rejection::ReplyTimeout,
        Rejection::TlsPipelined,
        Rejection::TlsRequired,
        Rejection::ClientTls,
        Rejection::UpstreamTls,
        Rejection::MaxPreLoginSessions,
        Rejection::MaxPreLoginSessionsPerIp,
        Rejection::MaxDataPortsPerIp,
        Rejection::UnsolicitedReply,
        Rejection::SelfTarget,
        Rejection::Banned,
        Rejection::UnknownHost,
        Rejection::NoRoute,
    ];

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
            R::TlsPipelined => "tls_pipelined",
            R::TlsRequired => "tls_required",
            R::ClientTls => "client_tls",
            R::UpstreamTls => "upstream_tls",
            R::UnsolicitedReply => "unsolicited_reply",
            R::SelfTarget => "self_target",
            R::Banned => "banned",
            R::UnknownHost => "unknown_host",
            R::NoRoute => "no_route",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Its position in [`Rejection::ALL`]. No wildcard arm: a new variant does not
    /// compile until it gets the next number here, and the test then fails until
    /// `ALL` lists it there.
    fn position(r: Rejection) -> usize {
        use Rejection as R;
        match r {
            R::MaxSessions => 0,
            R::MaxSessionsPerIp => 1,
            R::ProxyHeader => 2,
            R::ProxyUntrusted => 3,
            R::AuthTls => 4,
            R::BadCommand => 5,
            R::LineTooLong => 6,
            R::LoginTimeout => 7,
            R::IdleTimeout => 8,
            R::ForwardDenied => 9,
            R::TransparentDenied => 10,
            R::BadPort => 11,
            R::Bounce => 12,
            R::PortTheft => 13,
            R::PassiveUnused => 14,
            R::ClientAddressUnresolved => 15,
            R::BadPassiveReply => 16,
            R::BadReply => 17,
            R::ReplyTooLarge => 18,
            R::TruncatedReply => 19,
            R::ReplyTimeout => 20,
            R::TlsPipelined => 21,
            R::TlsRequired => 22,
            R::ClientTls => 23,
            R::UpstreamTls => 24,
            R::MaxPreLoginSessions => 25,
            R::MaxPreLoginSessionsPerIp => 26,
            R::MaxDataPortsPerIp => 27,
            R::UnsolicitedReply => 28,
            R::SelfTarget => 29,
            R::Banned => 30,
            R::UnknownHost => 31,
            R::NoRoute => 32,
        }
    }

    #[test]
    fn every_rejection_is_listed() {
        let highest = Rejection::ALL.iter().map(|r| position(*r)).max().unwrap();
        assert_eq!(highest + 1, Rejection::ALL.len());
        for (i, r) in Rejection::ALL.iter().enumerate() {
            assert_eq!(position(*r), i, "{r} is out of place in Rejection::ALL");
        }
    }
}
