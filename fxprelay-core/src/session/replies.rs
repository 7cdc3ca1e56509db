//! Every reply the proxy writes in its own name, in one place: the code and the words an
//! operator or a user reads. Replies from servers are relayed as they came and are not
//! here. Text that echoes peer input goes through [`reply_line`], which keeps it on one
//! line.

use std::borrow::Cow;
use std::fmt::Display;

use crate::proto::reply::reply_line;

/// One of the proxy's own replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Say {
    // Session life cycle.
    ShuttingDown,
    EndedByOperator,
    TooManySessions,
    TooManySessionsFromYou,
    /// The edge defense has banned the client's address (or IPv6 network).
    Banned,
    TooManyPreLogin,
    TooManyPreLoginFromYou,
    UpstreamUnreachable,
    /// The listener reaches its server through agent `agent`, which has no link up.
    AgentDown {
        agent: String,
    },
    LoginTimedOut,
    IdleTimeout,
    LineTooLong {
        max: usize,
    },
    TooManyInvalidCommands,
    SyntaxError,
    ControlByte,
    UpstreamInvalid,
    UpstreamSilent {
        /// It never greeted (else: it left the proxy's own command unanswered).
        greeting: bool,
        after: std::time::Duration,
    },
    Goodbye,
    NoopOk,

    // Login: forward and transparent modes.
    ForwardGreeting,
    ProxyGreeting,
    ForwardLoginFirst,
    ForwardBadTarget,
    ForwardDenied {
        host: String,
        why: String,
    },
    ForwardUnreachable {
        target: String,
        error: String,
    },
    TooManyRefusedTargets,
    TransparentDenied {
        destination: String,
        why: String,
    },
    TransparentUnreachable,

    // Pools of upstreams.
    PoolDown,

    // Routes of a reverse listener (RFC 7151 `HOST`, the login name).
    HostAccepted {
        name: String,
    },
    HostUnknown {
        name: String,
    },
    HostTooLate,
    HostSyntax,
    /// `USER` that no route takes: asked for the password like any other, so that the
    /// reply does not tell which names exist.
    PasswordRequired,
    NoServerForLogin,

    // Commands the proxy refuses.
    ProxyUntrusted,
    AuthRefused,
    LoginFirst,

    // Data set-up.
    BadActiveArgs {
        verb: &'static str,
        error: String,
    },
    Bounce {
        verb: &'static str,
        why: &'static str,
    },
    SelfTarget {
        verb: &'static str,
        why: String,
    },
    BadPassiveAddress {
        error: String,
    },
    EpsvAllOk,
    OnlyEpsv,
    NoIpv4ForPasv,
    PortsExhausted,
    TooManyDataPorts {
        max: usize,
    },
    CannotListen,
    ActiveOk {
        verb: &'static str,
    },
    NoDataSetup,
    PassiveBeforeLogin,
    UpstreamDataFailed {
        why: String,
    },
    TransferAborted,
    TransferFailed {
        error: String,
    },

    // FTPS.
    TlsGo,
    TlsAlready,
    AuthUnsupported,
    TlsRequired,
    PbszOk,
    ProtNeedsTls,
    PbszFirst,
    ProtOk {
        private: bool,
    },
    ProtUnsupported,
    ProtUnknown,
    CccRefused,
    UpstreamRefusedTls {
        text: String,
    },
    UpstreamTlsRequired,
    UpstreamTlsFailed,
    /// The control connection with the server broke mid-session.
    UpstreamBroke {
        tls: bool,
    },

    // SITE FXP.
    FxpUsage,
    FxpDestinationSet {
        url: String,
    },
    FxpNotAnUrl {
        error: String,
    },
    FxpNoDestination,
    FxpLoginFirst,
    FxpCopying {
        src: String,
        dst: String,
    },
    FxpDone {
        text: String,
    },
    /// A `SITE FXP` failure, answered as `answer` says.
    FxpFailed {
        answer: FxpAnswer,
        text: String,
    },
    FxpBusy,
    FxpAborted,
    FxpCheckAborted,
    AbortOk,
}

/// How a `SITE FXP` failure is answered (`site::answer` decides which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FxpAnswer {
    /// `530`: the destination is outside `fxp.allow` or is the proxy itself.
    NotAllowed,
    /// `530`: the destination refused the login.
    LoginRefused,
    /// `550`: a permanent refusal; the same command would fail the same way.
    Permanent,
    /// `451`: unreachable, no answer, a `4xx`: trying again later may work.
    Temporary,
}

impl FxpAnswer {
    pub fn code(self) -> u16 {
        match self {
            FxpAnswer::NotAllowed | FxpAnswer::LoginRefused => 530,
            FxpAnswer::Permanent => 550,
            FxpAnswer::Temporary => 451,
        }
    }
}

/// The commands of `SITE FXP`, as `HELP` and the usage reply list them.
pub const SITE_FXP_USAGE: &str = "SITE FXP TO <ftp-url> | PUT [-r] <path> [<dest-path>] | GET [-r] <path> [<dest-path>] | STATUS";

impl Say {
    pub fn code(&self) -> u16 {
        use Say as S;
        match self {
            S::Goodbye => 221,
            S::NoopOk | S::EpsvAllOk | S::ActiveOk { .. } | S::FxpDestinationSet { .. } => 200,
            S::ForwardGreeting | S::ProxyGreeting | S::HostAccepted { .. } => 220,
            S::PasswordRequired => 331,
            S::HostUnknown { .. } => 504,
            S::HostTooLate => 503,
            S::HostSyntax => 501,
            S::NoServerForLogin => 530,
            S::FxpDone { .. } | S::AbortOk => 226,
            S::FxpCopying { .. } => 150,
            S::TlsGo => 234,
            S::PbszOk | S::ProtOk { .. } => 200,
            S::TlsAlready | S::ProtNeedsTls | S::PbszFirst => 503,
            S::AuthUnsupported | S::ProtUnknown => 504,
            S::TlsRequired => 530,
            S::ProtUnsupported => 536,
            S::CccRefused | S::UpstreamRefusedTls { .. } => 534,
            S::UpstreamTlsRequired | S::UpstreamTlsFailed | S::UpstreamBroke { .. } => 421,
            S::ShuttingDown
            | S::EndedByOperator
            | S::TooManySessions
            | S::TooManySessionsFromYou
            | S::Banned
            | S::TooManyPreLogin
            | S::TooManyPreLoginFromYou
            | S::UpstreamUnreachable
            | S::AgentDown { .. }
            | S::LoginTimedOut
            | S::IdleTimeout
            | S::TooManyInvalidCommands
            | S::UpstreamInvalid
            | S::UpstreamSilent { .. }
            | S::ForwardUnreachable { .. }
            | S::TooManyRefusedTargets
            | S::TransparentDenied { .. }
            | S::TransparentUnreachable
            | S::PoolDown => 421,
            S::BadPassiveAddress { .. }
            | S::NoIpv4ForPasv
            | S::PortsExhausted
            | S::TooManyDataPorts { .. }
            | S::CannotListen
            | S::NoDataSetup
            | S::UpstreamDataFailed { .. } => 425,
            S::PassiveBeforeLogin => 530,
            S::TransferAborted | S::TransferFailed { .. } | S::FxpAborted | S::FxpCheckAborted => {
                426
            }
            S::FxpFailed { answer, .. } => answer.code(),
            S::LineTooLong { .. } | S::SyntaxError | S::ProxyUntrusted => 500,
            S::ControlByte => 501,
            S::BadActiveArgs { .. } | S::OnlyEpsv | S::FxpUsage | S::FxpNotAnUrl { .. } => 501,
            S::FxpNoDestination | S::FxpBusy => 503,
            S::Bounce { .. } | S::SelfTarget { .. } => 504,
            S::ForwardLoginFirst
            | S::ForwardBadTarget
            | S::ForwardDenied { .. }
            | S::LoginFirst
            | S::FxpLoginFirst => 530,
            S::AuthRefused => 534,
        }
    }

    pub fn text(&self) -> Cow<'static, str> {
        use Say as S;
        let fixed = |s: &'static str| Cow::Borrowed(s);
        let owned = |s: String| Cow::Owned(s);
        match self {
            S::ShuttingDown => fixed("Service not available: the proxy is shutting down."),
            S::EndedByOperator => {
                fixed("Service not available: an operator of this proxy ended the session.")
            }
            S::TooManySessions => fixed("Too many connections to this proxy; try again later."),
            S::TooManySessionsFromYou => {
                fixed("Too many connections from your address; try again later.")
            }
            S::Banned => fixed("Too many failed logins from your address; try again later."),
            S::TooManyPreLogin => fixed("Too many connections waiting to log in; try again later."),
            S::TooManyPreLoginFromYou => fixed(
                "Too many connections from your address waiting to log in; log in or close some first.",
            ),
            S::UpstreamUnreachable => {
                fixed("Service not available: the FTP server behind this proxy cannot be reached.")
            }
            // The name is the configuration's (letters, digits, `.`, `_`, `-`).
            S::AgentDown { agent } => owned(format!(
                "Service not available (agent {agent} is not connected)."
            )),
            S::LoginTimedOut => fixed("Login timed out; closing the connection."),
            S::IdleTimeout => fixed("Idle timeout; closing the connection."),
            S::LineTooLong { max } => owned(format!(
                "Command line too long (limit {max} bytes); closing."
            )),
            S::TooManyInvalidCommands => {
                fixed("Too many invalid commands; closing the connection.")
            }
            S::SyntaxError => fixed("Syntax error, command unrecognized."),
            S::ControlByte => fixed(
                "Syntax error in parameters: a carriage return or NUL inside the command line.",
            ),
            S::UpstreamInvalid => {
                fixed("Service not available: the FTP server sent an invalid reply.")
            }
            S::UpstreamSilent { greeting, after } => owned(format!(
                "Service not available: the FTP server did not {} within {}.",
                if *greeting { "greet" } else { "answer" },
                humantime::format_duration(*after)
            )),
            S::Goodbye => fixed("Goodbye."),
            S::NoopOk => fixed("NOOP ok."),
            S::ForwardGreeting => {
                fixed("fxprelay FTP proxy ready. Log in as user@host or user@host:port.")
            }
            S::ProxyGreeting => fixed("fxprelay FTP proxy ready."),
            S::HostAccepted { name } => owned(format!("{name} ready.")),
            S::HostUnknown { name } => owned(format!("Unknown host {name}.")),
            S::HostTooLate => fixed("HOST must come before USER."),
            S::HostSyntax => fixed("HOST needs a host name."),
            S::PasswordRequired => fixed("Password required."),
            S::NoServerForLogin => fixed("No server for this login."),
            S::PoolDown => fixed(
                "Service not available: every FTP server behind this proxy is down; try again later.",
            ),
            S::ForwardLoginFirst => fixed("Please log in with USER user@host[:port] first."),
            S::ForwardBadTarget => {
                fixed("Log in as user@host or user@host:port to name the FTP server.")
            }
            S::ForwardDenied { host, why } => {
                owned(format!("{host} is not allowed through this proxy: {why}."))
            }
            S::ForwardUnreachable { target, error } => {
                owned(format!("Cannot reach {target}: {error}."))
            }
            S::TooManyRefusedTargets => fixed("Too many refused log-in attempts; closing."),
            S::TransparentDenied { destination, why } => owned(format!(
                "Service not available: {destination} is not allowed through this proxy ({why})."
            )),
            S::TransparentUnreachable => {
                fixed("Service not available: the FTP server cannot be reached.")
            }
            S::ProxyUntrusted => {
                fixed("PROXY headers are accepted only from trusted load balancers.")
            }
            // Once TLS starts the proxy could no longer read or fix the addresses;
            // refusing makes clients that merely prefer TLS fall back to plain FTP.
            S::AuthRefused => {
                fixed("Request denied for policy reasons: this proxy does not relay TLS sessions.")
            }
            S::LoginFirst => fixed("Please log in with USER and PASS first."),
            S::BadActiveArgs { verb, error } => {
                owned(format!("Syntax error in {verb} arguments: {error}."))
            }
            S::Bounce { verb, why } => owned(format!("{verb} refused: {why}.")),
            S::SelfTarget { verb, why } => owned(format!("{verb} refused: {why}.")),
            S::BadPassiveAddress { error } => owned(format!(
                "Can't open data connection: the server announced an invalid address ({error})."
            )),
            S::EpsvAllOk => fixed("EPSV ALL command successful."),
            S::OnlyEpsv => fixed("Only EPSV is allowed after EPSV ALL."),
            S::NoIpv4ForPasv => fixed(
                "Can't open passive connection: this proxy has no IPv4 address for you; use EPSV.",
            ),
            S::PortsExhausted => fixed(
                "Can't open data connection: every data port of this proxy is in use; try again later.",
            ),
            S::TooManyDataPorts { max } => owned(format!(
                "Can't open data connection: your address holds {max} data ports of this proxy already; finish or abort a transfer first."
            )),
            S::CannotListen => {
                fixed("Can't open data connection: the proxy cannot listen for data.")
            }
            S::ActiveOk { verb } => owned(format!("{verb} command successful.")),
            S::NoDataSetup => fixed("Use PORT, EPRT, PASV or EPSV first."),
            S::PassiveBeforeLogin => fixed(
                "Please log in with USER and PASS first: the proxy sets up data connections itself.",
            ),
            S::UpstreamDataFailed { why } => {
                owned(format!("Can't open data connection to the server: {why}"))
            }
            S::TransferAborted => fixed("Connection closed; transfer aborted."),
            S::TransferFailed { error } => {
                owned(format!("Connection closed; transfer aborted: {error}."))
            }
            S::TlsGo => fixed("AUTH TLS successful; go ahead with the TLS handshake."),
            S::TlsAlready => fixed("This connection is already protected by TLS."),
            S::AuthUnsupported => fixed("Only AUTH TLS (or AUTH SSL) is supported."),
            S::TlsRequired => fixed("This proxy requires TLS: send AUTH TLS first."),
            S::PbszOk => fixed("PBSZ=0"),
            S::ProtNeedsTls => fixed("PBSZ and PROT need AUTH TLS first."),
            S::PbszFirst => fixed("Send PBSZ 0 before PROT."),
            S::ProtOk { private: true } => fixed("Protection level set to Private."),
            S::ProtOk { private: false } => fixed("Protection level set to Clear."),
            S::ProtUnsupported => fixed("Only PROT C and PROT P are supported."),
            S::ProtUnknown => fixed("Unknown protection level; use PROT C or PROT P."),
            S::CccRefused => fixed("CCC refused: the control connection stays encrypted."),
            S::UpstreamRefusedTls { text } => owned(format!(
                "The FTP server behind this proxy refused TLS ({text}); the session stays unencrypted."
            )),
            S::UpstreamTlsRequired => fixed(
                "Service not available: the FTP server behind this proxy refused TLS, which this proxy requires.",
            ),
            S::UpstreamTlsFailed => fixed(
                "Service not available: TLS with the FTP server behind this proxy failed (its certificate may not be trusted).",
            ),
            S::UpstreamBroke { tls: true } => {
                fixed("Service not available: TLS with the FTP server behind this proxy broke.")
            }
            S::UpstreamBroke { tls: false } => {
                fixed("Service not available: the connection to the FTP server broke.")
            }
            S::FxpUsage => owned(format!("Usage: {SITE_FXP_USAGE}")),
            S::FxpDestinationSet { url } => {
                owned(format!("FXP destination set to {url} (login checked)."))
            }
            S::FxpNotAnUrl { error } => owned(format!("Not an FTP URL: {error}.")),
            S::FxpNoDestination => {
                fixed("Choose the other server first: SITE FXP TO ftp://user:pass@host/dir/")
            }
            S::FxpLoginFirst => fixed("Log in first."),
            S::FxpCopying { src, dst } => owned(format!("Copying {src} to {dst}.")),
            S::FxpDone { text } | S::FxpFailed { text, .. } => owned(text.clone()),
            S::FxpBusy => fixed(
                "A SITE FXP copy is running: wait for its reply, or send STAT for its progress or ABOR to cancel it.",
            ),
            S::FxpAborted => fixed("FXP copy aborted."),
            S::FxpCheckAborted => fixed("FXP destination check aborted; no destination chosen."),
            S::AbortOk => fixed("ABOR command successful."),
        }
    }

    /// The answer to a command line that does not parse.
    pub fn for_bad_command(e: crate::proto::CommandError) -> Say {
        match e {
            crate::proto::CommandError::ControlByte => Say::ControlByte,
            _ => Say::SyntaxError,
        }
    }

    /// The reply on the wire.
    pub fn bytes(&self) -> Vec<u8> {
        reply_line(self.code(), &self.text())
    }
}

/// A multi-line reply of the proxy's own: `CODE-first`, the lines indented, `CODE End`.
pub fn multi_line<L: Display>(
    code: u16,
    first: &str,
    lines: impl IntoIterator<Item = L>,
) -> Vec<u8> {
    let one_line = |s: String| s.replace(['\r', '\n'], " ");
    let mut out = format!("{code}-{}\r\n", one_line(first.to_string()));
    for line in lines {
        out.push_str(&format!(" {}\r\n", one_line(line.to_string())));
    }
    out.push_str(&format!("{code} End\r\n"));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_one_line_with_their_code() {
        let r = Say::ForwardDenied {
            host: "evil\r\n230 ok".into(),
            why: "no".into(),
        }
        .bytes();
        assert!(r.starts_with(b"530 evil  230 ok is not allowed"));
        assert_eq!(r.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(
            Say::FxpFailed {
                answer: FxpAnswer::Permanent,
                text: "x".into()
            }
            .code(),
            550
        );
        assert_eq!(
            Say::FxpFailed {
                answer: FxpAnswer::Temporary,
                text: "x".into()
            }
            .code(),
            451
        );
    }

    #[test]
    fn multi_line_replies_close_with_the_code() {
        assert_eq!(
            multi_line(211, "FXP status", ["a", "b\r\nc"]),
            b"211-FXP status\r\n a\r\n b  c\r\n211 End\r\n"
        );
    }
}
