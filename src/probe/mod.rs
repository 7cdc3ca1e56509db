//! `fxprelay check --probe`: connects to every reverse listener's servers the way its
//! sessions would (a PROXY header if it sends one, implicit TLS or `AUTH TLS` as its
//! `tls:` block says), asks `FEAT`, and reports what each server offers and what stands
//! between it and the listener's settings ([`advice`], pure). Forward and transparent
//! listeners have no server of their own to probe.

pub mod advice;

use std::fmt;
use std::time::Duration;

use futures_util::future::join_all;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::codec::ReplyReader;
use crate::config::{ListenerConfig, ProxyVersion};
use crate::net::HostPort;
use crate::proto::reply::{Reply, code};
use crate::tls::{ListenerTls, TlsConnector, UpstreamPlan, diagnose};
use advice::{Observed, Problem, TlsRefusal};

/// The most one server's probe may take, all steps together.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A greeting or a `FEAT` list is far smaller than this.
const MAX_REPLY: usize = 64 * 1024;

/// What the probe of one server of one listener found.
#[derive(Debug)]
pub struct Report {
    pub listener: String,
    pub target: HostPort,
    pub plan: UpstreamPlan,
    pub observed: Observed,
}

impl Report {
    pub fn problems(&self) -> Vec<Problem> {
        advice::problems(self.plan, &self.observed)
    }
}

/// `listener `edge` -> 10.0.0.10:21: 220 ...; FEAT: ...` and a line per problem.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summary = advice::summary(&self.observed);
        write!(
            f,
            "listener `{}` -> {}: {summary}",
            self.listener, self.target
        )?;
        for p in self.problems() {
            write!(f, "\n  problem: {p}")?;
        }
        Ok(())
    }
}

/// Probes every server of `listener` at once (none for forward and transparent ones).
/// `tls` is the listener's material, read: its upstream TLS client.
pub async fn listener(listener: &ListenerConfig, tls: Option<&ListenerTls>) -> Vec<Report> {
    let targets: Vec<HostPort> = match (&listener.upstream, &listener.pool) {
        (Some(one), _) => vec![one.clone()],
        (None, Some(pool)) => pool.backends.iter().map(|b| b.address.clone()).collect(),
        (None, None) => return Vec::new(),
    };
    let plan = listener
        .tls
        .as_ref()
        .map_or(UpstreamPlan::Plain, |t| t.upstream_plan());
    let connector = tls
        .and_then(|t| t.upstream.as_ref())
        .map(|u| u.for_session());
    let server_name = listener
        .tls
        .as_ref()
        .and_then(|t| t.upstream.server_name.clone());
    let probes = targets.into_iter().map(|target| {
        let how = Probe {
            plan,
            proxy: listener.upstream_proxy_protocol,
            connector: connector.clone(),
            name: server_name.clone().unwrap_or_else(|| target.host.clone()),
        };
        async move {
            let observed = timeout(PROBE_TIMEOUT, how.observe(&target))
                .await
                .unwrap_or_else(|_| Observed {
                    greeting: Some(Err(format!("no answer within {PROBE_TIMEOUT:?}"))),
                    ..Observed::default()
                });
            Report {
                listener: listener.name.clone(),
                target,
                plan,
                observed,
            }
        }
    });
    join_all(probes).await
}

/// How the listener's sessions reach a server.
struct Probe {
    plan: UpstreamPlan,
    proxy: Option<ProxyVersion>,
    connector: Option<TlsConnector>,
    /// The name the server's certificate must carry.
    name: String,
}

impl Probe {
    async fn observe(&self, target: &HostPort) -> Observed {
        let mut o = Observed::default();
        if self.plan == UpstreamPlan::Implicit {
            match self.connect(target).await {
                Ok(stream) => match self.handshake(stream).await {
                    Ok(tls) => {
                        o.implicit = Some(Ok(()));
                        (o.greeting, o.features, _) = converse(tls, false).await;
                        return o;
                    }
                    // The greeting in clear, and whether it offers AUTH TLS, say which
                    // setting fits instead.
                    Err(why) => o.implicit = Some(Err(why)),
                },
                Err(why) => {
                    o.greeting = Some(Err(why));
                    return o;
                }
            }
        }
        let explicit = matches!(
            self.plan,
            UpstreamPlan::AfterGreeting | UpstreamPlan::WithClient
        );
        let stream = match self.connect(target).await {
            Ok(s) => s,
            Err(why) => {
                o.greeting = Some(Err(why));
                return o;
            }
        };
        let (greeting, features, after) = converse(stream, explicit).await;
        (o.greeting, o.features) = (greeting, features);
        o.explicit = match after {
            After::Secure(stream) => Some(
                self.handshake(stream)
                    .await
                    .map(drop)
                    .map_err(TlsRefusal::Handshake),
            ),
            After::Refused(line) => Some(Err(TlsRefusal::Refused(line))),
            After::Done => None,
        };
        o
    }

    /// TCP, and the PROXY header the listener's sessions send first (LOCAL: the
    /// connection is the proxy's own, as the pool's health checks say).
    async fn connect(&self, target: &HostPort) -> Result<TcpStream, String> {
        let mut s = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if let Some(version) = self.proxy {
            let header = crate::proxy_protocol::encode(version, None);
            s.write_all(&header)
                .await
                .map_err(|e| format!("cannot write the PROXY header: {e}"))?;
        }
        Ok(s)
    }

    /// The listener's TLS client handshake: the secured stream, or why not (in
    /// `tls::diagnose`'s words).
    async fn handshake(
        &self,
        stream: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let Some(connector) = &self.connector else {
            return Err("the listener has no TLS client toward servers".into());
        };
        let name = ServerName::try_from(self.name.clone())
            .map_err(|_| format!("{} is not a valid TLS server name", self.name))?;
        connector
            .connect(name, stream)
            .await
            .map_err(|e| diagnose::server_handshake(&e))
    }
}

/// What follows the greeting and `FEAT` on a plain connection.
enum After<S> {
    /// Nothing asked: `QUIT` was sent.
    Done,
    /// `234` to `AUTH TLS`: the connection, ready for the handshake.
    Secure(S),
    /// Anything else to `AUTH TLS`: its first line.
    Refused(String),
}

type Greeting = Option<Result<String, String>>;

/// Reads the greeting, asks `FEAT`, then `AUTH TLS` when `auth` (else `QUIT`).
async fn converse<S>(stream: S, auth: bool) -> (Greeting, Vec<String>, After<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (r, mut w) = tokio::io::split(stream);
    let mut replies = ReplyReader::new(r, MAX_REPLY);
    let greeting = match replies.final_reply().await {
        Ok(reply) => first_line(&reply),
        Err(e) => return (Some(Err(e.to_string())), Vec::new(), After::Done),
    };
    let welcomed = greeting.starts_with("220");
    let mut features = Vec::new();
    if welcomed
        && w.write_all(b"FEAT\r\n").await.is_ok()
        && let Ok(reply) = replies.final_reply().await
        && reply.code == code::SYSTEM_STATUS
    {
        features = feature_lines(&reply);
    }
    let after = if welcomed && auth && w.write_all(b"AUTH TLS\r\n").await.is_ok() {
        match replies.final_reply().await {
            Ok(reply) if reply.code == code::AUTH_OK => {
                After::Secure(replies.into_inner().unsplit(w))
            }
            Ok(reply) => After::Refused(first_line(&reply)),
            Err(e) => After::Refused(e.to_string()),
        }
    } else {
        // Politeness only: the probe has its answers.
        let _ = w.write_all(b"QUIT\r\n").await;
        After::Done
    };
    (Some(Ok(greeting)), features, after)
}

fn first_line(reply: &Reply) -> String {
    let text = String::from_utf8_lossy(&reply.raw);
    text.lines().next().unwrap_or("").trim().to_owned()
}

/// A `211` FEAT reply's features: the lines between its first and last.
fn feature_lines(reply: &Reply) -> Vec<String> {
    let text = String::from_utf8_lossy(&reply.raw);
    let lines: Vec<&str> = text.lines().collect();
    match lines.len() {
        0..=2 => Vec::new(),
        n => lines[1..n - 1]
            .iter()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect(),
    }
}
