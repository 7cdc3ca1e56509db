//! Servers behind an outbound-only agent, both ends of it:
//!
//! - on the edge, the top-level `agents:` block (where agents dial in, the edge's
//!   certificate, each agent's token) and a reverse listener's `via:` (reach the
//!   upstream through that agent), with their rules: `via` needs relay-mode data (in
//!   either direction toward the server: the agent listens inside for active mode);
//! - beside the servers, the agent's own file (`fxprelay agent -c agent.yaml`), read by
//!   [`AgentConfig::load`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use serde_saphyr::Spanned;

use super::error::ConfigError;
use super::listener::ListenerConfig;
use super::origin::{Origin, listener_key};
use super::schema::{DataMode, FileAgents, Mode};
use super::values;
use crate::agent::is_name as is_agent_name;
use crate::net::{AllowList, HostPort};

/// The edge's `agents:` block, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentsConfig {
    /// Where agents dial in (TLS).
    pub bind: std::net::SocketAddr,
    /// The certificate agents verify, and its key (read with the TLS material).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Each agent's name and token; printed as `***`.
    #[serde(serialize_with = "redacted_tokens")]
    pub tokens: BTreeMap<String, String>,
}

fn redacted_tokens<S: Serializer>(t: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(t.keys().map(|k| (k, "***")))
}

/// The key whose line the errors of reading the agents' certificate name.
pub const AGENTS_TLS_KEY: &str = "agents";

/// Shortest token the edge accepts: a guessable one would let anyone on the internet
/// stand in for the agent.
const MIN_TOKEN: usize = 16;

pub(super) fn validate(
    file: Option<Spanned<FileAgents>>,
    origin: &mut Origin,
) -> Result<Option<AgentsConfig>, ConfigError> {
    let Some(file) = file else {
        return Ok(None);
    };
    let line = file.referenced.line();
    let a = file.value;
    let tokens_line = a.tokens.referenced.line();
    if a.tokens.value.is_empty() {
        return Err(ConfigError::invalid(
            "agents.tokens",
            tokens_line,
            "name at least one agent and its token (`site-a: ${SITE_A_TOKEN}`)",
        ));
    }
    for (name, token) in &a.tokens.value {
        if !is_agent_name(name) {
            return Err(ConfigError::invalid(
                "agents.tokens",
                tokens_line,
                format!("`{name}` is not an agent name: 1 to 64 letters, digits, `.`, `_` or `-`"),
            ));
        }
        if token.len() < MIN_TOKEN {
            return Err(ConfigError::invalid(
                "agents.tokens",
                tokens_line,
                format!(
                    "agent `{name}`'s token is shorter than {MIN_TOKEN} characters: make one with `openssl rand -hex 32`"
                ),
            ));
        }
    }
    origin.record(AGENTS_TLS_KEY.into(), line);
    Ok(Some(AgentsConfig {
        bind: a.bind.value.0,
        cert: a.cert,
        key: a.key,
        tokens: a.tokens.value,
    }))
}

/// Listener `i`'s `via:`, checked against the listener's other keys and `agents:`.
pub(super) fn validate_via(
    i: usize,
    via: Option<&Spanned<String>>,
    l: &mut ListenerConfig,
    agents: Option<&AgentsConfig>,
) -> Result<(), ConfigError> {
    let Some(via) = via else {
        return Ok(());
    };
    let (key, line) = (listener_key(i, "via"), via.referenced.line());
    let bad = |why: String| Err(ConfigError::invalid(key.clone(), line, why));
    let name = via.value.trim();
    if !agents.is_some_and(|a| a.tokens.contains_key(name)) {
        return bad(format!(
            "no agent `{name}` in `agents.tokens`: an agent must be named there (with its token) to be used"
        ));
    }
    if l.mode != Mode::Reverse {
        return bad(
            "`via` is for reverse listeners: the agent reaches the listener's `upstream`".into(),
        );
    }
    if l.data == DataMode::Passthrough {
        return bad("`via` needs `data: relay`: in passthrough the client would connect to the server's own data ports, which accept no inbound connection".into());
    }
    // Active mode toward the server works too: the agent listens on a port inside for
    // the server's data connection (`fxprelay_core::agent::listen`), so `upstream_data`
    // keeps its meaning (`auto`: passive, then active where the server refuses passive).
    l.via = Some(name.to_owned());
    Ok(())
}

/// The agent's own file: `agent:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAgentConfig {
    agent: Spanned<FileAgent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAgent {
    name: Spanned<String>,
    #[serde(deserialize_with = "edge_address")]
    edge: HostPort,
    #[serde(default)]
    ca: Option<PathBuf>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    token: Option<Spanned<String>>,
    allow: Spanned<AllowList>,
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "values::nonzero_duration::deserialize"
    )]
    connect_timeout: Duration,
}

fn edge_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HostPort, D::Error> {
    let s = String::deserialize(d)?;
    values::upstream_address(&s).map_err(serde::de::Error::custom)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Where the agent's token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `token_file:` (read at start; a trailing newline is not part of the token).
    File(PathBuf),
    /// `token:` (usually `${VAR}`).
    Inline(String),
}

/// `fxprelay agent`'s configuration, validated.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The name the edge knows this agent by (`agents.tokens` there, `via:` on its
    /// listeners); several agents may share one.
    pub name: String,
    /// The edge's agents listener.
    pub edge: HostPort,
    /// The CA that signed the edge's certificate; left out: the system's roots.
    pub ca: Option<PathBuf>,
    pub token: TokenSource,
    /// What the edge may ask this agent to reach.
    pub allow: AllowList,
    pub connect_timeout: Duration,
}

impl AgentConfig {
    /// Reads and validates an agent's file (`${VAR}` expanded).
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        AgentConfig::parse(&text).map_err(|e| e.in_file(path, &text))
    }

    pub fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        let expanded = super::env::expand_env(text, |name| std::env::var(name).ok())?;
        let file: FileAgentConfig =
            serde_saphyr::from_str(&expanded).map_err(super::yaml::yaml_error)?;
        let at = file.agent.referenced.line();
        let a = file.agent.value;
        let name = a.name.value;
        if !is_agent_name(&name) {
            let why =
                format!("`{name}` is not an agent name: 1 to 64 letters, digits, `.`, `_` or `-`");
            return Err(ConfigError::invalid(
                "agent.name",
                a.name.referenced.line(),
                why,
            ));
        }
        let token = match (a.token_file, a.token) {
            (Some(f), None) => TokenSource::File(f),
            (None, Some(t)) if t.value.len() >= MIN_TOKEN => TokenSource::Inline(t.value),
            (None, Some(t)) => {
                let why = format!(
                    "shorter than {MIN_TOKEN} characters: make one with `openssl rand -hex 32`"
                );
                return Err(ConfigError::invalid(
                    "agent.token",
                    t.referenced.line(),
                    why,
                ));
            }
            _ => {
                let why = "give the agent's credential as `token_file:` or `token:` (one of them)";
                return Err(ConfigError::invalid("agent", at, why));
            }
        };
        if a.allow.value.iter().next().is_none() {
            let why = "name the servers the edge may reach through this agent (`[10.0.0.5]`, `[10.0.0.0/24]`); an empty list reaches nothing";
            return Err(ConfigError::invalid(
                "agent.allow",
                a.allow.referenced.line(),
                why,
            ));
        }
        Ok(AgentConfig {
            name,
            edge: a.edge,
            ca: a.ca,
            token,
            allow: a.allow.value.named("agent.allow"),
            connect_timeout: a.connect_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, UpstreamData};

    const TOKEN: &str = "0123456789abcdef0123";

    fn edge(listener: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!(
            "agents:\n  bind: 127.0.0.1:8021\n  cert: /etc/e.crt\n  key: /etc/e.key\n  tokens: {{site-a: {TOKEN}}}\nlisteners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: 10.0.0.5:21\n{listener}"
        ))
    }

    #[test]
    fn via_names_a_known_agent_and_takes_relay_data_either_way() {
        let c = edge("    via: site-a\n").unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.via.as_deref(), Some("site-a"));
        // Passive first, active where the server refuses passive: the agent listens.
        assert_eq!(l.upstream_data, UpstreamData::Auto);
        for (text, mode) in [
            ("active", UpstreamData::Active),
            ("passive", UpstreamData::Passive),
        ] {
            let c = edge(&format!("    via: site-a\n    upstream_data: {text}\n")).unwrap();
            assert_eq!(c.listeners[0].upstream_data, mode);
        }
        assert_eq!(c.agents.as_ref().unwrap().tokens.len(), 1);
        // The token never appears in `fxprelay config`.
        assert!(!c.effective_yaml().contains(TOKEN));
        for (extra, why) in [
            ("    via: site-b\n", "no agent `site-b`"),
            ("    via: site-a\n    data: passthrough\n", "data: relay"),
        ] {
            let e = edge(extra).unwrap_err().to_string();
            assert!(e.contains(why), "{extra}: {e}");
        }
        let short = Config::parse(
            "agents:\n  bind: 127.0.0.1:8021\n  cert: c\n  key: k\n  tokens: {a: short}\nlisteners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n",
        );
        assert!(short.unwrap_err().to_string().contains("openssl rand"));
    }

    #[test]
    fn the_shipped_agent_file_loads() {
        let c = AgentConfig::parse(include_str!("../../../config/agent.yaml")).unwrap();
        assert_eq!((c.name.as_str(), c.edge.port), ("site-a", 8021));
        assert!(matches!(c.token, TokenSource::File(_)));
    }

    #[test]
    fn the_agents_file_needs_a_credential_and_an_allow_list() {
        let ok = AgentConfig::parse(&format!(
            "agent:\n  name: site-a\n  edge: edge.example.net:8021\n  token: {TOKEN}\n  allow: [10.0.0.0/24]\n"
        ))
        .unwrap();
        assert_eq!(ok.edge.port, 8021);
        assert_eq!(ok.token, TokenSource::Inline(TOKEN.into()));
        assert_eq!(ok.connect_timeout, Duration::from_secs(10));
        let no_token =
            AgentConfig::parse("agent:\n  name: a\n  edge: e:8021\n  allow: [10.0.0.5]\n");
        assert!(no_token.unwrap_err().to_string().contains("token_file"));
        let no_allow = AgentConfig::parse(&format!(
            "agent:\n  name: a\n  edge: e:8021\n  token: {TOKEN}\n  allow: []\n"
        ));
        assert!(
            no_allow
                .unwrap_err()
                .to_string()
                .contains("reaches nothing")
        );
    }
}
