//! Forward mode, before there is an upstream: the proxy greets the client itself, reads
//! `USER user@host[:port]`, checks the host against the listener's `allow` list (after
//! DNS) and against the proxy's own addresses, and connects. The session proper starts
//! once the upstream is reached; the proxy then replays `USER user` to it.

use std::net::{IpAddr, SocketAddr};

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use super::writer::ClientWriter;
use tokio::time::{Instant, timeout_at};
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

use super::ListenerCtx;
use crate::codec::{LineCodec, LineError};
use crate::metrics;
use crate::net::HostPort;
use crate::proto::command::parse_command;
use crate::proto::line::trim_eol;
use crate::proto::reply::reply_line;
use crate::upstream::{self, ConnectError};

/// After this many refused `USER` attempts the client is disconnected.
const MAX_ATTEMPTS: u32 = 3;

/// How the pre-login dialogue ended.
pub(super) enum Login {
    /// Connected; send `user_line` to the upstream once it has greeted.
    Connected {
        upstream: TcpStream,
        user_line: Vec<u8>,
        target: HostPort,
    },
    /// The session is over (client left, gave up, timed out).
    End(&'static str),
    /// The proxy is shutting down before the login finished.
    Stopped,
}

/// Splits `user@host[:port]` at the last `@` (user names may contain `@`).
pub fn parse_target(arg: &[u8]) -> Option<(&[u8], HostPort)> {
    let at = arg.iter().rposition(|&b| b == b'@')?;
    let (user, host) = (&arg[..at], &arg[at + 1..]);
    if user.is_empty() {
        return None;
    }
    let host = std::str::from_utf8(host).ok()?.trim();
    let target = host
        .parse::<HostPort>()
        .or_else(|_| format!("{host}:21").parse::<HostPort>())
        .or_else(|_| format!("[{host}]:21").parse::<HostPort>())
        .ok()?;
    Some((user, target))
}

pub(super) async fn login(
    ctx: &ListenerCtx,
    client_local: IpAddr,
    client_w: &mut ClientWriter,
    client_lines: &mut FramedRead<OwnedReadHalf, LineCodec>,
) -> anyhow::Result<Login> {
    let name = ctx.cfg.name.as_str();
    let say = |code, text: &str| reply_line(code, text);
    client_w
        .write_all(&say(
            220,
            "fxprelay FTP proxy ready. Log in as user@host or user@host:port.",
        ))
        .await?;
    let deadline = Instant::now() + ctx.limits.login_timeout;
    let mut attempts = 0;
    loop {
        let line = match timeout_at(deadline, client_lines.next()).await {
            Err(_) => {
                metrics::rejected(name, "login_timeout");
                client_w
                    .write_all(&say(421, "Login timed out; closing the connection."))
                    .await?;
                return Ok(Login::End("login_timeout"));
            }
            Ok(None) => return Ok(Login::End("client closed")),
            Ok(Some(Err(LineError::TooLong(_)))) => {
                metrics::rejected(name, "line_too_long");
                client_w
                    .write_all(&say(500, "Command line too long; closing."))
                    .await?;
                return Ok(Login::End("line too long"));
            }
            Ok(Some(Err(LineError::Io(e)))) => return Err(e.into()),
            Ok(Some(Ok(line))) => line,
        };
        let Ok(cmd) = parse_command(&line) else {
            metrics::rejected(name, "bad_command");
            client_w
                .write_all(&say(500, "Syntax error, command unrecognized."))
                .await?;
            continue;
        };
        metrics::command(name, &cmd.verb);
        match cmd.verb.as_str() {
            "USER" => {}
            "QUIT" => {
                client_w.write_all(&say(221, "Goodbye.")).await?;
                return Ok(Login::End("client quit"));
            }
            "NOOP" => {
                client_w.write_all(&say(200, "NOOP ok.")).await?;
                continue;
            }
            "PROXY" => {
                metrics::rejected(name, "proxy_untrusted");
                let text = "PROXY headers are accepted only from trusted load balancers.";
                client_w.write_all(&say(500, text)).await?;
                return Ok(Login::End("untrusted PROXY header"));
            }
            "AUTH" => {
                metrics::rejected(name, "auth_tls");
                let text =
                    "Request denied for policy reasons: this proxy does not relay TLS sessions.";
                client_w.write_all(&say(534, text)).await?;
                continue;
            }
            _ => {
                client_w
                    .write_all(&say(530, "Please log in with USER user@host[:port] first."))
                    .await?;
                continue;
            }
        }
        let Some((user, target)) = parse_target(trim_eol(cmd.args)) else {
            client_w
                .write_all(&say(
                    530,
                    "Log in as user@host or user@host:port to name the FTP server.",
                ))
                .await?;
            continue;
        };
        let check = |addr: SocketAddr| permitted(ctx, &target.host, addr, client_local);
        match upstream::connect_checked(name, &target, ctx.limits.connect_timeout, None, check)
            .await
        {
            Ok(stream) => {
                info!(upstream = %target, "forward target connected");
                let mut user_line = b"USER ".to_vec();
                user_line.extend_from_slice(user);
                user_line.extend_from_slice(b"\r\n");
                return Ok(Login::Connected {
                    upstream: stream,
                    user_line,
                    target,
                });
            }
            Err(ConnectError::Denied(why)) => {
                metrics::rejected(name, "forward_denied");
                warn!(upstream = %target, why, "forward target refused");
                let text = format!("{} is not allowed through this proxy: {why}.", target.host);
                client_w.write_all(&say(530, &text)).await?;
            }
            Err(e) => {
                debug!(upstream = %target, error = %e, "forward target unreachable");
                let text = format!("Cannot reach {target}: {e}.");
                client_w.write_all(&say(421, &text)).await?;
                return Ok(Login::End("upstream unreachable"));
            }
        }
        attempts += 1;
        if attempts >= MAX_ATTEMPTS {
            client_w
                .write_all(&say(421, "Too many refused log-in attempts; closing."))
                .await?;
            return Ok(Login::End("too many refused targets"));
        }
    }
}

/// The allow list, checked on resolved addresses, and the loop guard: never connect to
/// one of this proxy's own listeners.
pub(super) fn permitted(
    ctx: &ListenerCtx,
    host: &str,
    addr: SocketAddr,
    client_local: IpAddr,
) -> Result<(), String> {
    let ip = addr.ip().to_canonical();
    let own = ctx.own_binds.iter().any(|b| {
        b.port() == addr.port()
            && (b.ip() == ip
                || (b.ip().is_unspecified() && (ip.is_loopback() || ip == client_local)))
    });
    if own {
        return Err("that is this proxy itself".into());
    }
    ctx.cfg.allow.admits(host, ip).map_err(|d| d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let (u, t) = parse_target(b"anonymous@ftp.example.org").unwrap();
        assert_eq!(
            (u, t.host.as_str(), t.port),
            (&b"anonymous"[..], "ftp.example.org", 21)
        );
        let (u, t) = parse_target(b"me@corp.com@127.0.0.1:2121").unwrap();
        assert_eq!(
            (u, t.host.as_str(), t.port),
            (&b"me@corp.com"[..], "127.0.0.1", 2121)
        );
        let (_, t) = parse_target(b"u@[::1]:21").unwrap();
        assert_eq!(t.host, "::1");
        let (_, t) = parse_target(b"u@::1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 21));
        assert!(parse_target(b"nobody").is_none());
        assert!(parse_target(b"@host").is_none());
        assert!(parse_target(b"u@bad host").is_none());
        assert!(parse_target(b"u@h:0").is_none());
    }
}
