//! The `tls:` block of a listener, as the operator writes it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `tls:` of one listener: the two legs are independent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The leg toward FTP clients.
    #[serde(default)]
    pub client: ClientTls,
    /// The leg toward the FTP server.
    #[serde(default)]
    pub upstream: UpstreamTls,
}

/// `tls.client`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    #[serde(default)]
    pub mode: ClientTlsMode,
    /// PEM certificate chain the proxy shows clients.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// How clients reach the proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    /// Plain FTP only; `AUTH TLS` is refused.
    #[default]
    Off,
    /// `AUTH TLS` offered; plain FTP allowed too.
    Explicit,
    /// `AUTH TLS` offered and required before `USER`/`PASS`.
    Required,
    /// TLS from the first byte (the port-990 convention).
    Implicit,
}

impl ClientTlsMode {
    /// As the file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientTlsMode::Off => "off",
            ClientTlsMode::Explicit => "explicit",
            ClientTlsMode::Required => "required",
            ClientTlsMode::Implicit => "implicit",
        }
    }
}

/// `tls.upstream`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    #[serde(default)]
    pub mode: UpstreamTlsMode,
    /// Check the server's certificate (chain, name, dates).
    #[serde(default = "yes")]
    pub verify: bool,
    /// Extra trust roots (PEM) besides the system's.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The name the certificate must carry; default: the upstream host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Protection of the proxy's data connections to the server.
    #[serde(default)]
    pub data: DataProtection,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls {
            mode: UpstreamTlsMode::default(),
            verify: true,
            ca: None,
            server_name: None,
            data: DataProtection::default(),
        }
    }
}

fn yes() -> bool {
    true
}

/// How the proxy reaches the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamTlsMode {
    /// Plain FTP.
    Off,
    /// `AUTH TLS` right after the server's greeting, before the login.
    Explicit,
    /// TLS from the first byte.
    Implicit,
    /// As the client did: `AUTH TLS` when the client sends it, implicit TLS behind an
    /// implicit listener, plain FTP for a plain client.
    #[default]
    Mirror,
}

impl UpstreamTlsMode {
    /// As the file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamTlsMode::Off => "off",
            UpstreamTlsMode::Explicit => "explicit",
            UpstreamTlsMode::Implicit => "implicit",
            UpstreamTlsMode::Mirror => "mirror",
        }
    }
}

/// `tls.upstream.data`: `PROT` toward the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataProtection {
    /// What the client chose with its own `PROT`; `P` for a client in clear (it cannot
    /// choose, and TLS toward the server was enabled to protect that leg).
    #[default]
    Mirror,
    /// Always `PROT P`.
    Private,
    /// Always `PROT C` (the data crosses the server's network in clear).
    Clear,
}

/// When the upstream leg turns to TLS, from both legs' modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamPlan {
    Plain,
    /// TLS handshake right after the TCP connect.
    Implicit,
    /// `AUTH TLS` after the server's greeting.
    AfterGreeting,
    /// `AUTH TLS` when (if) the client sends it.
    WithClient,
}

impl TlsSettings {
    /// When the upstream leg turns to TLS.
    pub fn upstream_plan(&self) -> UpstreamPlan {
        use ClientTlsMode as C;
        use UpstreamTlsMode as U;
        match (self.upstream.mode, self.client.mode) {
            (U::Off, _) | (U::Mirror, C::Off) => UpstreamPlan::Plain,
            (U::Implicit, _) | (U::Mirror, C::Implicit) => UpstreamPlan::Implicit,
            (U::Explicit, _) => UpstreamPlan::AfterGreeting,
            (U::Mirror, C::Explicit | C::Required) => UpstreamPlan::WithClient,
        }
    }

    /// Whether either leg uses TLS at all.
    pub fn enabled(&self) -> bool {
        self.client.mode != ClientTlsMode::Off || self.upstream_plan() != UpstreamPlan::Plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_follows_the_client() {
        let plan = |c, u| {
            TlsSettings {
                client: ClientTls {
                    mode: c,
                    ..ClientTls::default()
                },
                upstream: UpstreamTls {
                    mode: u,
                    ..UpstreamTls::default()
                },
            }
            .upstream_plan()
        };
        use ClientTlsMode as C;
        use UpstreamTlsMode as U;
        assert_eq!(plan(C::Off, U::Mirror), UpstreamPlan::Plain);
        assert_eq!(plan(C::Explicit, U::Mirror), UpstreamPlan::WithClient);
        assert_eq!(plan(C::Required, U::Mirror), UpstreamPlan::WithClient);
        assert_eq!(plan(C::Implicit, U::Mirror), UpstreamPlan::Implicit);
        assert_eq!(plan(C::Off, U::Explicit), UpstreamPlan::AfterGreeting);
        assert_eq!(plan(C::Required, U::Off), UpstreamPlan::Plain);
        assert!(!TlsSettings::default().enabled());
    }
}
